"""DataLoader workers that a stop signal (SIGINT, SIGTERM) sent to the whole process group cannot kill.

A terminal's Ctrl-C and ``timeout``'s or a scheduler's SIGTERM reach every process of the group;
a worker killed by one (PyTorch's own worker handler exits on a SIGTERM from anyone but its
parent) makes the main process fail with "DataLoader worker exited unexpectedly" before it can
save or clean up. The main process decides when its workers end (see
:mod:`lightface.engine.stop_signals`, which stops a training run cleanly on these signals).

    loader = DataLoader(dataset, num_workers=2, worker_init_fn=lambda worker_id: ignore_in_worker())
    with starting_workers():
        batches = iter(loader)  # the workers start here
"""
import signal
from contextlib import contextmanager
from typing import Iterator

__all__ = ["STOP_SIGNALS", "starting_workers", "ignore_in_worker"]

#: the signals that ask a run to stop after its current step
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def starting_workers() -> Iterator[None]:
    """Block the stop signals in the calling thread while it starts DataLoader workers (``iter(loader)``).

    Workers inherit the blocked signals, so a SIGINT/SIGTERM sent to the process group while they
    start cannot kill them; this process receives a signal that came meanwhile when the block ends.
    A no-op where threads cannot block signals (Windows)."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def ignore_in_worker() -> None:
    """Make a DataLoader worker ignore the stop signals (its main process decides when it ends); a
    signal that reached it while it started inside :func:`starting_workers` is discarded."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
