"""Stop a training run cleanly on SIGINT (Ctrl-C) or SIGTERM (a scheduler's preemption, ``timeout``).

The first signal only sets a flag: the engine finishes the step it is in, saves
``last.pt`` and ``model.pt`` and returns its summary with ``stopped="signal SIGTERM"``, so
``--resume`` loses nothing. The handlers are restored at that first signal, so a second
one acts as usual (Ctrl-C twice raises ``KeyboardInterrupt`` at once).

DataLoader workers ignore both signals (:func:`ignore_in_worker`): a terminal's Ctrl-C and
``timeout``'s SIGTERM reach the whole process group, and a worker killed by them would make
the main process fail with "DataLoader worker exited unexpectedly" before it could save.
The main process shuts its workers down when it stops, and each worker exits by itself
when the main process dies.

    with StopSignals() as stop:
        for batch in loader:
            ...
            if stop.received:
                break
"""
import signal
import threading
from types import FrameType
from typing import Any, Dict, Optional

__all__ = ["StopSignals", "ignore_in_worker", "STOP_SIGNALS"]

#: the signals that ask a run to stop after its current step
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
    """Context manager: while active (main thread only), the first SIGINT/SIGTERM sets :attr:`received`.

    Attributes:
        received: the name of the first stop signal (``"SIGTERM"``), or None.
    """

    def __init__(self) -> None:
        self.received: Optional[str] = None
        self._previous: Dict[int, Any] = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():  # signal.signal works only there
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._restore()

    def _handle(self, signum: int, frame: Optional[FrameType]) -> None:
        self.received = signal.Signals(signum).name
        self._restore()  # a second signal acts as it would without us

    def _restore(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()


def ignore_in_worker() -> None:
    """Make a DataLoader worker ignore the stop signals (its main process decides when it ends)."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
