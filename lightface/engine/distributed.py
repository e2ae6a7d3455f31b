"""torch.distributed set-up for ``torchrun``; a plain single-process path otherwise.

``torchrun`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; without them no process
group is created and everything runs in this process. The backend is NCCL on CUDA
and Gloo on the CPU. Under ``torchrun`` only rank 0 writes the project's info lines
(:func:`log_on_main_rank`); the other ranks write warnings and errors only.
"""
import logging
import os
from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch
import torch.distributed as dist

__all__ = ["DistInfo", "init_distributed", "cleanup_distributed", "resolve_device", "log_on_main_rank",
           "mean_over_processes", "max_over_processes", "first_failure", "first_recorded_failure",
           "PROJECT_LOGGERS"]

log = logging.getLogger(__name__)

#: the loggers whose info lines only rank 0 writes under torchrun
PROJECT_LOGGERS = ("lightface", "pipelines")


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: rank, world size, local rank and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(device: Optional[str] = "auto", local_rank: int = 0) -> torch.device:
    """``"auto"`` -> ``cuda:<local_rank>`` when CUDA is available, else ``cpu``; otherwise ``torch.device(device)``."""
    if device in (None, "auto"):
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available; pass --device cpu")
    return dev


def init_distributed(device: Optional[str] = "auto") -> DistInfo:
    """Join the process group when launched by ``torchrun``; return this process's :class:`DistInfo`.

    From then on, ranks other than 0 write warnings and errors only (:func:`log_on_main_rank`)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo(device=resolve_device(device))
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
        dev = torch.device(f"cuda:{local_rank}")
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    log.info("process group: rank %d/%d (local %d) on %s", rank, world_size, local_rank, dev)
    info = DistInfo(rank, world_size, local_rank, dev)
    log_on_main_rank(info)
    return info


def log_on_main_rank(info: DistInfo) -> None:
    """Leave the project's info lines (progress, "new best ... (saved best.pt)", "finished: ...") to rank 0:
    on any other rank the :data:`PROJECT_LOGGERS` pass warnings and errors only, for the rest of the process
    (every rank would otherwise repeat rank 0's lines, and claim to have saved what only rank 0 writes)."""
    if info.is_main:
        return
    for name in PROJECT_LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(max(logging.WARNING, logger.getEffectiveLevel()))


def mean_over_processes(values: torch.Tensor) -> torch.Tensor:
    """The mean of ``values`` (any shape, floating point) over the process group's ranks (a collective:
    every rank calls it with the same shape); ``values`` itself (detached) without a process group."""
    values = values.detach()
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        values = values.clone()
        dist.all_reduce(values)
        values /= dist.get_world_size()
    return values


def max_over_processes(values: torch.Tensor) -> torch.Tensor:
    """The elementwise maximum of ``values`` (any shape and dtype, on this process's device) over the process
    group's ranks (a collective: every rank calls it with the same shape), e.g. the union of per-rank flags;
    ``values`` itself (detached) without a process group."""
    values = values.detach()
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.MAX)
    return values


def first_failure(error: Optional[BaseException], device: torch.device) -> Optional[str]:
    """Under ``torchrun``: whether any process failed in a stretch of work that each ran on its own (its data
    share, rank 0's validation or writing) before the next collective; a collective: every rank calls it, passing
    the exception it caught there or None. Returns None when none failed, else the first failing process's message
    (``"process R of N: ..."``), the same on every rank, so that all of them stop with it instead of waiting in
    the next collective for a process that is gone (a hang, or gloo's "Connection closed by peer"). Without a
    process group: ``str(error)`` or None. ``device``: where this process's collectives run (NCCL: its GPU)."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return None if error is None else str(error)
    failed = max_over_processes(torch.tensor([0 if error is None else 1], dtype=torch.int32, device=device))
    if not int(failed.item()):
        return None
    messages: List[Optional[str]] = [None] * dist.get_world_size()
    dist.all_gather_object(messages, None if error is None else str(error) or type(error).__name__)
    rank = next(r for r, message in enumerate(messages) if message is not None)
    return f"process {rank} of {len(messages)}: {messages[rank]}"


def first_recorded_failure(rank: int, message: str) -> Optional[Tuple[int, str]]:
    """Under ``torchrun``: record in the process group's key-value store that process ``rank`` stops with
    ``message``, unless another process recorded its failure first; returns the first recorded ``(rank, message)``.
    Not a collective: a process calls it on its way out, whatever the others are doing.

    An error that one process alone meets in the middle of a step (a CUDA out-of-memory error, a bug, a write of
    rank 0's that fails) leaves the others blocked in that step's collectives; they learn of it only when its
    connections close (gloo's "Connection closed by peer") or torchrun stops them (SIGTERM). The failing process
    records its message before it leaves the group, so that each of the others, when its collective fails, finds
    the cause here and stops with it. The first record wins: the process that failed first, not those whose
    collectives failed because it left. None without a process group, or when the store cannot be reached (the
    process that held it is gone: launched without ``torchrun``'s agent store)."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return None
    # torchrun --max-restarts: a restarted group must not find the failure of the attempt before it
    key = f"lightface/first_failure/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"
    try:
        store = dist.distributed_c10d._get_default_store()
        first = store.compare_set(key, "", f"{rank}\n{message}").decode("utf-8", "replace")
        first_rank, first_message = first.split("\n", 1)
        return int(first_rank), first_message
    except Exception as err:  # noqa: BLE001 - the store is a courtesy: the caller raises its own error anyway
        log.debug("no failure record exchanged: %s", err)
        return None


def cleanup_distributed() -> None:
    """Leave the process group if one was created."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
