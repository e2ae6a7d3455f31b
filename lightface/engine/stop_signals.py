"""Stop a training run cleanly on SIGINT (Ctrl-C) or SIGTERM (a scheduler's preemption, ``timeout``).

The first signal only sets a flag: the engine finishes the step it is in, saves
``last.pt`` and ``model.pt``, and then raises :class:`TrainingInterrupted` (carrying the
run's summary, ``stopped="signal SIGTERM"``), so ``--resume`` loses nothing and whatever
called the trainer stops too (``make demo`` does not go on to its next stage). The
command-line entry points exit with status 128 + the signal number (130, 143), as a
process killed by it would. The handlers are restored at that first signal, so a second
one acts as usual (Ctrl-C twice raises ``KeyboardInterrupt`` at once).

DataLoader workers never act on either signal (:mod:`lightface.utils.worker_signals`): they
are started inside ``starting_workers()``, so they are born with both signals blocked, and
``ignore_in_worker()`` (from their ``worker_init_fn``) then ignores them. The main process
shuts its workers down when it stops, and each worker exits by itself when it dies.

    with StopSignals() as stop:
        with starting_workers():
            batches = iter(loader)
        for batch in batches:
            ...
            if stop.received:
                break
"""
import signal
import threading
from types import FrameType
from typing import Any, Dict, Optional

from ..utils.worker_signals import STOP_SIGNALS, ignore_in_worker, starting_workers

__all__ = ["StopSignals", "TrainingInterrupted", "ignore_in_worker", "starting_workers", "STOP_SIGNALS"]


class TrainingInterrupted(BaseException):
    """A run stopped by a signal after saving (a BaseException, like ``KeyboardInterrupt``: callers stop too).

    Attributes:
        signal_name: ``"SIGINT"`` or ``"SIGTERM"``.
        summary: the engine's summary of the run up to its last step (``last``, ``model``, ``step``, ...).
        exit_status: 128 + the signal number, the status of a process the signal killed.

    ``advice`` (what the user does next) replaces the trainers' "continue with --resume" in the message,
    for callers that return the run another way (``pipelines.device_train``).
    """

    def __init__(self, signal_name: str, summary: Dict[str, Any], advice: Optional[str] = None):
        self.signal_name, self.summary = signal_name, summary
        self.exit_status = 128 + int(signal.Signals[signal_name])
        advice = advice or f"{summary.get('last')} holds that step: continue with the same command and --resume"
        super().__init__(f"stopped by {signal_name} at step {summary.get('step')}; {advice}")


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
