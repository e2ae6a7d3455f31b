"""Per-input warnings said a few times per call, then counted (a folder of 1,000 112-px crops
logged 1,000 identical "resizing" warnings); warnings every torchrun process would give alike, said by rank 0."""
import logging
import os
import threading
from collections import Counter
from contextlib import contextmanager
from typing import Dict, Iterator


class _RepeatFilter(logging.Filter):
    """Lets the first ``limit`` WARNING records of each message template through, counts the rest.
    Only records of the thread that installed it are limited (another thread's call is its own)."""

    def __init__(self, limit: int):
        super().__init__()
        self.limit = limit
        self.thread = threading.get_ident()
        self.counts: Counter = Counter()
        self.first: Dict[str, str] = {}  # template -> its first message, as logged

    def filter(self, record: logging.LogRecord) -> bool:
        if record.thread != self.thread or record.levelno != logging.WARNING:
            return True
        self.counts[record.msg] += 1
        self.first.setdefault(record.msg, record.getMessage())
        return self.counts[record.msg] <= self.limit


@contextmanager
def repeated_warnings_summarised(log: logging.Logger, limit: int = 3) -> Iterator[None]:
    """Within the block, each warning template of ``log`` is logged at most ``limit`` times;
    at the end one warning per template says how many were not shown."""
    flt = _RepeatFilter(limit)
    log.addFilter(flt)
    try:
        yield
    finally:
        log.removeFilter(flt)
        for template, n in flt.counts.items():
            if n > limit:
                first = flt.first[template]
                log.warning("%d more warnings like \"%s\" not shown (%d in this call)", n - limit,
                            first if len(first) <= 90 else first[:87] + "...", n)


def warn_on_main_rank(logger: logging.Logger, message: str, *args) -> None:
    """``logger.warning(message, *args)`` for what every process finds alike (a changed setting on ``--resume``,
    the settings or the data at start-up): under ``torchrun`` rank 0 alone writes it, rather than every rank
    once (:func:`lightface.engine.distributed.log_on_main_rank` leaves the other ranks their warnings: those of
    their own). Before the process group exists (the settings' checks), torchrun's ``RANK`` tells. Here, below
    every package that warns so (data, distill, engine)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        rank = dist.get_rank()
    else:
        rank = int(os.environ.get("RANK", "0") or 0)
    if rank != 0:
        return
    logger.warning(message, *args)
