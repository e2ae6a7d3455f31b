"""OpenCV single-threaded in a process that forks data workers.

Many workers each starting a thread per core would oversubscribe the processor, so the
workers run OpenCV single-threaded. OpenCV's thread pool is not fork-safe: a forked worker
that calls ``cv2.setNumThreads`` itself can wait forever (seen with the YuNet detector loaded
in the parent under ``OMP_NUM_THREADS=1``). So the parent sets the count before it forks and
its children inherit it::

    single_threaded_opencv()
    loader = DataLoader(dataset, num_workers=4)  # forked workers: already single-threaded
"""
import sys

__all__ = ["single_threaded_opencv"]


def single_threaded_opencv() -> None:
    """Run OpenCV single-threaded in this process and the processes it forks from now on; a no-op when
    OpenCV is not imported or already single-threaded (so a forked child that inherited the setting
    never calls ``cv2.setNumThreads``)."""
    cv2 = sys.modules.get("cv2")
    if cv2 is not None and cv2.getNumThreads() != 1:
        cv2.setNumThreads(1)
