"""One training engine for every lightface trainer (BasicSR's single loop + model classes).

A trainer is a :class:`Task`: it builds its networks, optimisers and training data,
runs one step (``train_step(batch) -> named loss terms``) and validates. The
:class:`Engine` owns everything else, the same way for the Light CNN recogniser and the
two GANs:

* **distributed set-up and teardown**: ``torchrun`` -> one process per device, a
  ``DistributedDataParallel`` wrapper on each trained network (NCCL on GPUs, Gloo on the
  CPU); without ``torchrun`` a single process with no process group; an error that one
  process alone meets (a batch of its share it cannot load, rank 0's validation or checkpoint
  writing; in the middle of a step: an out-of-memory error, rank 0's metrics write) stops every
  process with its message (a :class:`TrainingError`), none is left waiting for the one that is gone;
* **batches**: ``--batch-size`` is the global batch, divided over the processes (not
  divisible: an error); a per-rank epoch order (:mod:`.samplers`: a seeded shuffle, or runs
  of one identity when the task asks for them) that can start mid-epoch, so ``--resume``
  continues with exactly the batches the interrupted run would have seen;
* **seeding**: the same seed on every rank while the task builds (same initial weights),
  then a per-rank seed; every rank's RNG state is saved and restored by *that* rank;
* **checkpoints**, one layout (see :data:`RUN_FILES`): ``OUT/last.pt`` (every
  ``--save-every`` steps, at epoch ends for epoch-based tasks, and at the end),
  ``OUT/best.pt`` (best validation score), ``OUT/model.pt`` (the final weights, no
  training state), ``OUT/config.yaml``, ``OUT/metrics.jsonl``;
* **resume**: ``--resume`` continues ``OUT/last.pt`` (or a given checkpoint); a changed
  ``--lr`` or schedule (``--lr-step``, ``--lr-gamma``) takes effect and is logged; a run
  folder that already holds a run is never overwritten without ``--resume`` or ``--overwrite``;
* a **deadline** (``--max-minutes``) checked on every rank and agreed with one
  ``all_reduce`` per step, so all ranks stop after the same step; a SIGINT (Ctrl-C) or
  SIGTERM (preemption, ``timeout``) stops the run the same way (:mod:`.stop_signals`): the
  step finishes, ``last.pt`` and ``model.pt`` are saved, then :class:`TrainingInterrupted`
  is raised (on every rank, also when the signal reached only some of them), and ``--resume``
  loses nothing;
* **logging**: loss terms averaged over ranks and over the ``--log-every`` window;
* a **NaN guard**: a non-finite loss term or weight stops the run with
  :class:`NonFiniteLossError`; checkpoints are never written with non-finite weights, so
  ``last.pt`` is the last good state (lower ``--lr`` and ``--resume``);
* **EMA** copies of the networks a task asks for, updated after every step and saved
  beside the raw weights (``ema_state_dict``).

Example (what ``train(cfg)`` of each trainer does)::

    summary = Engine(LightCNNTask(cfg)).run()
"""
import contextlib
import dataclasses
import itertools
import logging
import math
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from ..data.lmdb_format import is_lmdb_dir
from ..models.checkpoint import save_model_checkpoint
from ..utils.opencv_threads import single_threaded_opencv
from .checkpoint import capture_rng_state, load_checkpoint, restore_rng_state
from .config import ConfigError, config_to_dict, flag_name, option, save_config, with_absolute_paths
from ..utils.repeated_warnings import warn_on_main_rank
from .distributed import DistInfo, cleanup_distributed, first_failure, first_recorded_failure, init_distributed
from .ema import ModelEMA
from .logger import MetricLogger, plot_metrics
from .samplers import IdentityGroupSampler, ResumableSampler
from .stop_signals import STOP_SIGNALS, StopSignals, TrainingInterrupted, ignore_in_worker, starting_workers

__all__ = ["Engine", "Task", "RunConfig", "seed_everything", "check_run_config", "TrainingError", "SettingsError",
           "NonFiniteLossError", "RunFolderError", "TrainingInterrupted", "RUN_FILES", "saved_setting"]

log = logging.getLogger(__name__)

#: what a run folder holds (``OUT/``), written by rank 0
RUN_FILES = {
    "config.yaml": "the resolved settings, paths absolute (reload with --config from any folder; resume and overwrite "
                   "are written unset)",
    "last.pt": "the full training state: weights (+ EMA), other networks, optimisers, schedulers, step, "
               "every rank's RNG state, config; loadable for inference too",
    "best.pt": "the same at the best validation score",
    "model.pt": "the final weights (+ EMA) for inference, no training state",
    "metrics.jsonl": "one JSON record per log / validation step (plus tensorboard/ and curves.png)",
}
#: files of run folders written by earlier lightface versions (never resumed, never overwritten silently)
_OLD_RUN_FILES = ("checkpoints/latest.pth", "checkpoints/last.pth", "checkpoints/final.pth", "model.pth")
_OWNED = ("last.pt", "best.pt", "model.pt", "metrics.jsonl", "curves.png", "tensorboard", "samples")


class TrainingError(RuntimeError):
    """A training run that cannot start or continue (bad data, bad options, unusable checkpoint)."""


class SettingsError(TrainingError, ConfigError):
    """Training settings that cannot work (each problem naming its flag), found before training starts.

    A :class:`~lightface.engine.config.ConfigError` too, so that the pipelines exit with status 2 for it,
    as for a bad flag or YAML file, and 1 for the errors of a run (:class:`NonFiniteLossError` ...)."""


class NonFiniteLossError(TrainingError):
    """A loss term or weight became NaN or infinite; the last good checkpoint was kept.

    ``diagnosis``: the message without its advice (what broke, at which step, which checkpoint was
    kept), for a caller whose flags differ from the trainer's (``pipelines.device_train``)."""

    def __init__(self, message: str, diagnosis: str = ""):
        super().__init__(message)
        self.diagnosis = diagnosis


class RunFolderError(TrainingError):
    """``--out`` already holds a run and neither ``--resume`` nor ``--overwrite`` was given."""


_RUN = "run control"


@dataclasses.dataclass
class RunConfig:
    """Settings every trainer shares (its config dataclass derives from this one).

    A trainer's config also defines ``batch_size`` (global), ``workers``, ``log_every``,
    ``save_every`` and ``val_every`` with its own defaults.
    """

    out: str = option("", required=True, group=_RUN, path=True,
                      help="run folder: config.yaml, last.pt, best.pt, model.pt, metrics.jsonl (docs/training.md)")
    resume: Optional[str] = option(None, nargs="?", const="auto", metavar="CKPT", group=_RUN,
                                   help="continue a run: bare --resume continues OUT/last.pt (a new run starts when "
                                        "there is none yet), or give a checkpoint; a changed --lr takes effect")
    overwrite: bool = option(False, group=_RUN,
                             help="start over in an --out folder that already holds a run (its checkpoints and "
                                  "metrics are replaced); without it such a folder needs --resume")
    seed: int = option(0, group=_RUN, help="seed of initialisation, sample order and augmentation")
    device: str = option("auto", group=_RUN,
                         help="auto (cuda:LOCAL_RANK when available, else cpu), cpu, cuda, cuda:1")
    max_minutes: Optional[float] = option(0.0, group=_RUN,
                                          help="stop after this many minutes of training: every process stops after "
                                               "the same step, validates and saves; continue with --resume (0: no limit)")
    tensorboard: bool = option(True, group=_RUN,
                               help="write TensorBoard events to OUT/tensorboard (when tensorboard is installed)")
    plots: bool = option(True, group=_RUN, help="write OUT/curves.png at the end")


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), NumPy's global generator and Python's ``random``."""
    import random

    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def check_run_config(cfg: Any) -> List[str]:
    """Problems with the settings the engine uses (batch size, intervals, deadline), naming the flags."""
    problems = []
    if not getattr(cfg, "out", ""):
        problems.append("--out (run folder) is required")
    for name in ("batch_size", "log_every", "val_every"):
        value = getattr(cfg, name, 1)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            problems.append(f"{flag_name(name)} must be > 0 (a whole number), got {value!r}")
    for name in ("save_every", "workers"):
        value = getattr(cfg, name, 0)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            problems.append(f"{flag_name(name)} must be >= 0 (a whole number), got {value!r}")
    minutes = getattr(cfg, "max_minutes", None)
    if minutes is not None and not (isinstance(minutes, (int, float)) and minutes >= 0 and math.isfinite(minutes)):
        problems.append(f"--max-minutes must be >= 0 (0: no limit), got {minutes!r}")
    if getattr(cfg, "resume", None) and getattr(cfg, "overwrite", False):
        problems.append("give --resume (continue the run) or --overwrite (start over), not both")
    return problems


class Task:
    """A trainer as the :class:`Engine` runs it (BasicSR's model class).

    Subclasses set the class attributes and implement :meth:`build`, :meth:`plan` and
    :meth:`train_step`; the rest is optional.

    Attributes:
        name: written into checkpoints (``task``); ``--resume`` only accepts its own.
        val_unit: ``"epoch"`` or ``"step"``: what ``cfg.val_every`` counts.
        save_at_epoch_end: also write ``last.pt`` after every epoch.
        drop_last: drop the last incomplete batch of an epoch (when the epoch has a full one).
        best_metric: ``(validation metric, "max" | "min")`` that ``best.pt`` tracks, or None.
        divergence_hint: what the NaN-guard message advises besides a lower ``--lr``.
    """

    name = "task"
    val_unit = "step"
    save_at_epoch_end = False
    drop_last = False
    best_metric: Optional[Tuple[str, str]] = None
    divergence_hint = ""
    #: settings whose change on --resume means the run will not repeat the uninterrupted one
    reproducibility_keys: Tuple[str, ...] = ("batch_size", "seed", "data")

    def __init__(self, cfg: Any):
        self.cfg = cfg
        self.engine: Optional["Engine"] = None  # both set by the engine before build()
        self.device = torch.device("cpu")

    # -- required --------------------------------------------------------------------
    def check(self) -> List[str]:
        """Problems with the settings (each naming its flag); [] when usable. Default: the
        config's ``problems()`` when it has one."""
        problems = getattr(self.cfg, "problems", None)
        return list(problems()) if callable(problems) else []

    def build(self, engine: "Engine") -> Dataset:
        """Build data, networks (``engine.add_network``) and optimisers (``engine.add_optimizer``);
        return the training dataset. Runs with the same seed on every rank, after ``self.engine``
        and ``self.device`` are set; a ``FileNotFoundError`` / ``ValueError`` becomes a
        :class:`TrainingError`."""
        raise NotImplementedError

    def plan(self, steps_per_epoch: int) -> Tuple[int, str]:
        """``(steps to run in total, stop reason when that is short of the full schedule or "completed")``."""
        raise NotImplementedError

    def train_step(self, batch: Any) -> Mapping[str, Union[Tensor, float]]:
        """One optimisation step on ``batch`` (already on the device); returns named loss terms
        (the same names on every rank at a given step). A step that takes more than one batch
        (:meth:`batches_per_step`) is called as ``train_step(batch, extra_batches=[...])``: the
        step's further batches, the next ones of the epoch's order, each on the device."""
        raise NotImplementedError

    # -- optional --------------------------------------------------------------------
    def batches_per_step(self, step: int) -> int:
        """How many batches the step after ``step`` done steps takes (default 1), e.g. a GAN's critic
        steps on fresh batches. It must depend only on ``step`` and the settings (the same on every rank
        and on ``--resume``): epochs count batches, an epoch ends when the next step's batches do not fit
        in it (the rest of its order is left out, as ``drop_last`` leaves out a short batch)."""
        return 1

    def on_epoch_start(self, epoch: int) -> None:
        """Called before the first step of every epoch (also a resumed, partly done one)."""

    def on_epoch_end(self, epoch: int) -> None:
        """Called after the last step of ``epoch`` (e.g. a learning-rate schedule step)."""

    def sample_groups(self) -> Optional[Tuple[Sequence[int], int]]:
        """``(identity label of every training sample, K)`` to order epochs in runs of K samples
        of one identity (:class:`~lightface.engine.samplers.IdentityGroupSampler`); None
        (default): a plain shuffle. Called once, after :meth:`build`."""
        return None

    def can_validate(self) -> bool:
        return False

    def validate(self) -> Dict[str, float]:
        """Validation metrics (runs on rank 0 only; other ranks wait)."""
        return {}

    def current_lr(self) -> Optional[float]:
        """The base learning rate now, for the log."""
        return None

    def extra_state(self) -> Dict[str, Any]:
        """More top-level checkpoint entries (weights_only-safe), restored by :meth:`load_extra_state`."""
        return {}

    def load_extra_state(self, ckpt: Mapping[str, Any]) -> None:
        """Restore what :meth:`extra_state` saved."""

    def summary(self) -> Dict[str, Any]:
        """More entries of the summary :meth:`Engine.run` returns."""
        return {}


@dataclasses.dataclass
class _Net:
    module: nn.Module
    arch: Optional[str]
    kwargs: Dict[str, Any]
    primary: bool
    find_unused: bool
    extra: Dict[str, Any]
    ema: Optional[ModelEMA]
    view: nn.Module


#: a scheduler's state that is its position in the run; the rest of its state is its settings
_SCHEDULE_POSITION = frozenset({"last_epoch", "_step_count", "_last_lr", "base_lrs", "_get_lr_called_within_step",
                                "_is_initial"})


def _seed_worker(worker_id: int) -> None:
    """DataLoader workers: NumPy and ``random`` seeded from the worker's torch seed (itself from the loader's
    generator); the stop signals are left to the main process."""
    import random

    ignore_in_worker()
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


class Engine:
    """Runs a :class:`Task` (see the module docstring for what the engine owns).

    Attributes available to the task during :meth:`Task.build` and after:
        cfg, dist (:class:`~lightface.engine.distributed.DistInfo`), device, out (Path),
        local_batch (the per-process batch), resuming (bool), step, epoch, batch_in_epoch
        (batches of ``epoch`` already used: steps, unless :meth:`Task.batches_per_step` takes more).
    """

    def __init__(self, task: Task):
        self.task = task
        self.cfg = task.cfg
        self.out = Path(self.cfg.out)
        self.dist = DistInfo()
        self.device = self.dist.device
        self.local_batch = 0
        self.step = 0  # optimiser steps done
        self.epoch = 0  # next epoch to run
        self.batch_in_epoch = 0  # batches of `epoch` already used (one per step unless Task.batches_per_step)
        self.best: Optional[float] = None
        self.best_name = ""
        self.resuming = False
        self.resume_path: Optional[Path] = None
        self._nets: Dict[str, _Net] = {}
        self._opts: Dict[str, Tuple[torch.optim.Optimizer, float, Any]] = {}
        self._saved_step: Optional[int] = None
        self._validated_step: Optional[int] = None
        self._logger: Optional[MetricLogger] = None
        self._resume_rng: Optional[Dict[str, Any]] = None
        self._resume_ckpt: Optional[Dict[str, Any]] = None
        self._given: Dict[str, Any] = {}  # settings filled in by setting_default: their value as given
        self._stop = StopSignals()
        # the stop signal some rank had received at the last _sync (the same on every rank)
        self._agreed_signal: Optional[str] = None
        # where the run is, for the message the other processes stop with when this one fails alone
        self._phase = "start-up"
        self._paused = 0.0  # seconds of the loop spent validating and writing checkpoints (not training)
        self._pausing = False

    # ---------------------------------------------------------------- task API
    def add_network(self, name: str, module: nn.Module, *, arch: Optional[str] = None,
                    kwargs: Optional[Mapping[str, Any]] = None, primary: bool = False, ema_decay: float = 0.0,
                    find_unused: bool = False, extra: Optional[Mapping[str, Any]] = None) -> nn.Module:
        """Register a trained network; returns the module to call in training steps.

        Under ``torchrun`` that is a ``DistributedDataParallel`` wrapper (gradients averaged
        over processes; ``find_unused=True`` when some parameters may get no gradient in a
        step), else ``module`` itself. The ``primary`` network is what the checkpoints
        expose for inference (``arch``, ``model_kwargs``, ``state_dict``, plus ``extra``
        entries such as ``classes``); others are saved under ``networks``. ``ema_decay > 0``
        keeps an EMA copy (:meth:`ema`), updated after every step.
        """
        if name in self._nets:
            raise ValueError(f"network {name!r} registered twice")
        if primary and any(n.primary for n in self._nets.values()):
            raise ValueError("only one primary network")
        module = module.to(self.device)
        ema = ModelEMA(module, ema_decay) if ema_decay > 0 else None
        net = _Net(module, arch, dict(kwargs or {}), primary, find_unused, dict(extra or {}), ema, module)
        self._nets[name] = net
        self.rewrap(name)
        return net.view

    def rewrap(self, name: str) -> nn.Module:
        """(Re)build the DDP wrapper of network ``name`` (after changing which parameters train)."""
        net = self._nets[name]
        net.view = net.module
        if self.dist.distributed and any(p.requires_grad for p in net.module.parameters()):
            ids = [self.device.index] if self.device.type == "cuda" else None
            net.view = nn.parallel.DistributedDataParallel(net.module, device_ids=ids,
                                                           find_unused_parameters=net.find_unused)
        return net.view

    def train_view(self, name: str) -> nn.Module:
        """The module to call in training steps (DDP-wrapped under torchrun)."""
        return self._nets[name].view

    def network(self, name: str) -> nn.Module:
        """The plain network ``name``."""
        return self._nets[name].module

    def ema(self, name: str) -> ModelEMA:
        """The EMA copy of network ``name`` (registered with ``ema_decay > 0``)."""
        ema = self._nets[name].ema
        if ema is None:
            raise KeyError(f"network {name!r} has no EMA (register it with ema_decay > 0)")
        return ema

    def eval_network(self, name: str) -> nn.Module:
        """The network ``name`` as validation and ``model.pt`` see it: its EMA copy when it keeps one,
        else the plain network (``ema_decay`` 0: the raw weights)."""
        net = self._nets[name]
        return net.ema.module if net.ema is not None else net.module

    def add_optimizer(self, name: str, optimizer: torch.optim.Optimizer, lr: float, scheduler: Any = None) -> None:
        """Register an optimiser (and its lr scheduler, stepped by the task); ``lr`` is the base
        learning rate the config set, so that a changed ``--lr`` applies on resume."""
        self._opts[name] = (optimizer, float(lr), scheduler)

    def setting_default(self, name: str, default: Any) -> Any:
        """Fill in ``cfg.<name>`` with ``default`` when unset (None), for a setting added after older runs
        existed whose unset flag means: ``default`` for a new run (or a ``--finetune`` start's), what the run
        trained with on ``--resume`` (:meth:`resumed_setting`, from the task's ``load_extra_state``). Call it
        in :meth:`Task.build`; returns the value now set."""
        self._given[name] = getattr(self.cfg, name)
        if self._given[name] is None:
            setattr(self.cfg, name, default)
        return getattr(self.cfg, name)

    def resumed_setting(self, ckpt: Mapping[str, Any], name: str, legacy: Any) -> Any:
        """The value of a :meth:`setting_default` setting in the run ``ckpt`` resumes: its saved setting, or
        ``legacy`` (what runs saved before the setting existed did) when its settings lack it; set in
        ``cfg.<name>`` and returned, so that the resumed run trains as it started.

        Raises:
            SettingsError: the flag was given with another value (naming the flag, the run and both values).
        """
        saved = saved_setting(ckpt.get("config"), name, legacy)
        given, flag = self._given.get(name), flag_name(name)
        text = (lambda v: f"{v:g}" if isinstance(v, float) else str(v))
        if given is not None and given != saved:
            raise SettingsError(f"{flag} {text(given)}: the run being resumed ({self.resume_path}) trained with "
                                f"{flag} {text(saved)}; resume without {flag} (or with {text(saved)}), or start a new "
                                "run with --overwrite or another --out")
        if saved != getattr(self.cfg, name):
            log.info("--resume: %s %s, as the run trained (new runs: %s)", flag, text(saved),
                     text(getattr(self.cfg, name)))
        setattr(self.cfg, name, saved)
        return saved

    @property
    def resume_state(self) -> Optional[Mapping[str, Any]]:
        """The checkpoint being resumed (loaded before :meth:`Task.build`, e.g. for the data split it trained
        on), None for a new run; after set-up (the state restored) None again."""
        return self._resume_ckpt

    @property
    def is_main(self) -> bool:
        return self.dist.is_main

    def log(self, **metrics: Any) -> None:
        """Record extra metrics at the current step (rank 0 writes)."""
        if self._logger is not None:
            self._logger.log(self.step, **metrics)

    # ---------------------------------------------------------------- run
    def run(self) -> Dict[str, Any]:
        """Set up (distributed, data, networks, resume), train, and return a summary:

        ``{"stopped", "step", "epoch", "best_metric", "best_metric_name", "last", "best",
        "model", "out", "seconds", "train_seconds", "images_per_s", **last validation metrics, **task summary}``:
        ``seconds`` is the loop's wall time, ``train_seconds`` that less validation and checkpoint writing, and
        ``images_per_s`` the images trained on (by all processes) per ``train_seconds``.

        Raises:
            SettingsError: settings that cannot work (a :class:`TrainingError`).
            TrainingError: bad data, an unusable checkpoint, a run folder that needs
                ``--resume`` / ``--overwrite``; :class:`NonFiniteLossError` when the run diverged.
        """
        problems = check_run_config(self.cfg)
        problems += [p for p in self.task.check() if p not in problems]
        if problems:
            raise SettingsError("invalid training settings: " + "; ".join(problems))
        self.dist = init_distributed(self.cfg.device)
        self.device = self.dist.device
        failed = True
        try:
            summary = self._run()
            failed = False
            return summary
        except Exception as err:
            self._stop_with_first_failure(err)
            raise
        finally:
            # stopping anyway: torchrun's SIGTERM to the other processes, once one has failed, must not replace
            # the error being raised by "terminated" while rank 0 still closes its files and plots
            with StopSignals() if failed else contextlib.nullcontext():
                if self._logger is not None:
                    self._logger.close()
                self._plot()
                cleanup_distributed()

    def _stop_with_first_failure(self, error: Exception) -> None:
        """Under ``torchrun``, on the way out with ``error``: raise :class:`TrainingError` with the error of the
        process that failed first, when another one did (:func:`first_recorded_failure`); ``error`` is then what
        that failure did to this process (a collective cut short: gloo's "Connection closed by peer"). Returns
        when this process failed first, or all failed alike (the errors agreed on every process)."""
        if not self.dist.distributed:
            return
        message = str(error) or type(error).__name__
        first = first_recorded_failure(self.dist.rank, f"{self._phase}: {message}")
        if first is None or first[0] == self.dist.rank:
            return
        rank, (phase, _, cause) = first[0], first[1].partition(": ")
        if cause == message:  # an error every process raised alike (the NaN guard, a first_failure agreement)
            return
        raise TrainingError(f"{phase}: process {rank} of {self.dist.world_size}: {cause}; every process "
                            "stopped") from error

    def _run(self) -> Dict[str, Any]:
        cfg, task = self.cfg, self.task
        if cfg.batch_size % self.dist.world_size:
            raise SettingsError(f"--batch-size {cfg.batch_size} is the global batch and must be divisible by the "
                                f"{self.dist.world_size} processes; use a multiple of {self.dist.world_size}")
        self.local_batch = cfg.batch_size // self.dist.world_size
        self._prepare_run_folder()
        task.engine, task.device = self, self.device
        seed_everything(cfg.seed)  # the same on every rank: the same initial weights
        try:
            train_set = task.build(self)
        except SettingsError:  # a flag that does not fit the data: a configuration error as it is (exit 2)
            raise
        except (FileNotFoundError, ValueError) as err:  # missing data, unusable checkpoints, bad values
            raise TrainingError(str(err)) from err
        if not self._nets:
            raise TrainingError(f"{type(task).__name__}.build registered no network")
        self._train_set = train_set
        grouping = task.sample_groups()
        if grouping is None:
            self.sampler = ResumableSampler(train_set, num_replicas=self.dist.world_size, rank=self.dist.rank,
                                            shuffle=True, seed=cfg.seed, drop_last=False)
        else:
            groups, group_size = grouping
            self.sampler = IdentityGroupSampler(train_set, groups, group_size, num_replicas=self.dist.world_size,
                                                rank=self.dist.rank, seed=cfg.seed, batch_size=self.local_batch)
        per_rank = len(self.sampler)
        if per_rank == 0:
            raise TrainingError("the training set is empty")
        self.drop_last = task.drop_last and per_rank >= self.local_batch
        # batches per epoch and process; the steps when every step takes one batch (Task.batches_per_step)
        self.steps_per_epoch = per_rank // self.local_batch if self.drop_last else math.ceil(per_rank / self.local_batch)
        self.planned, short = task.plan(self.steps_per_epoch)
        if self._resume_ckpt is not None:
            self._load_resume(self._resume_ckpt)
            self._resume_ckpt = None
        seed_everything(cfg.seed + 7919 * self.dist.rank + 1)  # per rank (dropout, noise), repeatable per run
        if self._resume_rng:
            restore_rng_state(self._resume_rng)
        if self.is_main:
            # without --resume / --overwrite, so that `--config OUT/config.yaml` repeats the run elsewhere; its
            # paths absolute, so that it reloads (and --resume finds this folder) from any working folder
            save_config({**config_to_dict(cfg, absolute_paths=True), "resume": None, "overwrite": False},
                        self.out / "config.yaml")
        self._logger = MetricLogger(self.out, enabled=self.is_main, total_steps=self.planned,
                                    batch_size=cfg.batch_size, tensorboard=cfg.tensorboard,
                                    truncate_after=self.step if self.resuming else None)
        log.info("%s: %d training samples, %d batches/epoch, steps %d..%d, world size %d, device %s",
                 task.name, len(train_set), self.steps_per_epoch, self.step, self.planned, self.dist.world_size,
                 self.device)
        with self._stop:
            summary = self._loop(short)
        # every rank raises for a signal any rank received (the same exit status on all of them); a signal
        # that came after the last step's agreement still stops this process's caller
        signal_name = self._agreed_signal or self._stop.received
        if signal_name:
            raise TrainingInterrupted(signal_name, summary)
        return summary

    # ---------------------------------------------------------------- run folder
    def _prepare_run_folder(self) -> None:
        """Refuse to overwrite a run without --resume / --overwrite; resolve --resume; clear on --overwrite."""
        cfg, out = self.cfg, self.out
        if out.exists() and not out.is_dir():
            raise RunFolderError(f"--out {out} is a file; give a folder for the run (it is created if missing)")
        if is_lmdb_dir(out):
            raise RunFolderError(f"--out {out} is an LMDB dataset, not a run folder; give another --out (rebuilding "
                                 "the dataset with --overwrite would delete the run's files)")
        present = [name for name in ("last.pt", "best.pt", "model.pt", "metrics.jsonl") if (out / name).exists()]
        old = [name for name in _OLD_RUN_FILES if (out / name).exists()]
        if cfg.resume:
            path = out / "last.pt" if cfg.resume == "auto" else Path(cfg.resume)
            if path.is_file():
                self.resume_path = path
                try:
                    self._resume_ckpt = load_checkpoint(path, map_location="cpu")
                except (FileNotFoundError, ValueError) as err:
                    raise TrainingError(f"--resume: {err}") from err
                self.resuming = True
            elif cfg.resume != "auto":
                raise TrainingError(f"--resume {cfg.resume}: no such checkpoint (bare --resume continues "
                                    f"{out / 'last.pt'})")
            elif old:
                raise RunFolderError(f"{out} holds a run of an earlier lightface version ({', '.join(old)}) that "
                                     "cannot be resumed; its weights still load for inference and --finetune. "
                                     "Use another --out, or --overwrite to start over there")
            elif "best.pt" in present or "model.pt" in present:
                # a new run here would replace the run's best.pt / model.pt and its metrics
                best = (f"continue from its best checkpoint with --resume {out / 'best.pt'}, " if "best.pt" in present
                        else "")
                raise RunFolderError(f"{out} holds a run ({', '.join(present)}) but no last.pt to continue: {best}"
                                     "pass --overwrite to start over there (its checkpoints and metrics are replaced), "
                                     "or give another --out")
            else:
                log.info("--resume: %s has no last.pt yet; starting a new run", out)
        elif present or old:
            if not cfg.overwrite:
                raise RunFolderError(
                    f"{out} already holds a run ({', '.join(present + old)}); pass --resume to continue it, "
                    "--overwrite to start over (its checkpoints and metrics are replaced), or another --out")
        if self.dist.distributed:
            dist.barrier()  # every rank has looked at the folder before rank 0 changes it
        if cfg.overwrite and not cfg.resume and self.is_main:
            for name in _OWNED:
                path = out / name
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                elif path.exists() or path.is_symlink():
                    path.unlink()
            if present:
                log.info("--overwrite: removed the earlier run's %s from %s", ", ".join(present), out)
        if self.is_main:
            out.mkdir(parents=True, exist_ok=True)
        if self.dist.distributed:
            dist.barrier()

    # ---------------------------------------------------------------- loop
    def _loader(self, epoch: int) -> DataLoader:
        self.sampler.set_epoch(epoch)
        self.sampler.start = self.batch_in_epoch * self.local_batch if epoch == self.epoch else 0
        if hasattr(self._train_set, "set_epoch"):
            self._train_set.set_epoch(epoch)
        # worker seeds come from this generator (never from the global RNG, which resume restores)
        g = torch.Generator().manual_seed((self.cfg.seed * 100003 + epoch) * 1009 + self.dist.rank)
        if self.cfg.workers > 0:
            single_threaded_opencv()  # before the fork: see lightface.utils.opencv_threads
        return DataLoader(self._train_set, batch_size=self.local_batch, sampler=self.sampler,
                          num_workers=self.cfg.workers, pin_memory=self.device.type == "cuda", generator=g,
                          drop_last=self.drop_last, worker_init_fn=_seed_worker, persistent_workers=False)

    @contextlib.contextmanager
    def _epoch_batches(self, epoch: int) -> Iterator[Iterator[Any]]:
        """The epoch's batch iterator; its DataLoader workers are shut down when the block ends, however it
        ends. They ignore the stop signals (the main process decides when they end), so a worker left to the
        interpreter's exit, as one is while a kept exception's traceback holds this iterator, would ignore
        multiprocessing's SIGTERM there too and the exit would wait for it forever."""
        with starting_workers():
            batches = iter(self._loader(epoch))
        try:
            yield batches
        finally:
            shutdown = getattr(batches, "_shutdown_workers", None)  # multi-process loaders only
            if shutdown is not None:
                shutdown()

    def _loop(self, short_reason: str) -> Dict[str, Any]:
        cfg, task = self.cfg, self.task
        deadline = time.monotonic() + 60.0 * cfg.max_minutes if cfg.max_minutes else None
        window: Dict[str, List[float]] = {}
        self._logged_step = None
        last_val: Dict[str, float] = {}
        stopped: Optional[str] = None
        start_time, used_images = time.perf_counter(), 0
        self._paused = 0.0
        step_epoch = self.epoch
        while stopped is None and self.step < self.planned:
            epoch = step_epoch = self.epoch
            task.on_epoch_start(epoch)
            with self._epoch_batches(epoch) as batches:
                while not self._epoch_done():
                    self._phase = f"step {self.step + 1}"
                    count = self._step_batches()
                    group = self._next_batches(batches, count)
                    if len(group) < count:  # the loader's epoch is shorter than counted (cannot happen)
                        break
                    if count == 1:
                        terms = task.train_step(group[0])
                    else:
                        terms = task.train_step(group[0], extra_batches=group[1:])
                    for net in self._nets.values():
                        if net.ema is not None:
                            net.ema.update(net.module)
                    self.step += 1
                    self.batch_in_epoch += count
                    used_images += sum(_batch_length(b) for b in group) * self.dist.world_size
                    values, stop_now = self._sync(terms, deadline)
                    for name, value in values.items():
                        window.setdefault(name, []).append(value)
                    epoch_done = self._epoch_done()
                    if self.step % cfg.log_every == 0 or epoch_done or self.step >= self.planned:
                        self._log_window(window, epoch)
                    if not epoch_done:
                        if task.val_unit == "step" and self.step % cfg.val_every == 0:
                            last_val = self._validate(epoch) or last_val
                        if cfg.save_every and self.step % cfg.save_every == 0:
                            self._save("last.pt")
                    if self.step >= self.planned:
                        break
                    if stop_now:
                        stopped = self._stop_reason()
                        by = " (received by another process)" if self._agreed_signal and not self._stop.received else ""
                        log.info("%s%s at step %d: stopping (all processes)", stopped, by, self.step)
                        break
            if self._epoch_done():  # epoch complete
                self.epoch, self.batch_in_epoch = epoch + 1, 0
                task.on_epoch_end(epoch)
                if (self.epoch if task.val_unit == "epoch" else self.step) % cfg.val_every == 0:
                    last_val = self._validate(epoch) or last_val
                if task.save_at_epoch_end or (cfg.save_every and self.step % cfg.save_every == 0):
                    self._save("last.pt")
        self._phase = f"the end of the run (step {self.step})"
        stopped = stopped or short_reason  # the loop ends at the planned step unless a deadline or signal stopped it
        if window:
            self._log_window(window, step_epoch)
        # a signal asks for a prompt exit; the agreed flag, the same on every rank (a rank-local one would
        # send one rank into the validation's broadcast and another into the save's all_reduce: a hang)
        if self._validated_step != self.step and not self._agreed_signal:
            last_val = self._validate(step_epoch) or last_val
        if self._saved_step != self.step:
            self._save("last.pt")
        model_path = self._save_final()
        elapsed = time.perf_counter() - start_time
        training = elapsed - self._paused  # images/s of the steps, not of validation and checkpoint writing
        summary = {"stopped": stopped, "step": self.step, "epoch": self.epoch, "best_metric": self.best,
                   "best_metric_name": self.best_name, "last": str(self.out / "last.pt"),
                   "best": str(self.out / "best.pt") if self.best is not None else None,
                   "model": str(model_path), "out": str(self.out), "seconds": elapsed, "train_seconds": training,
                   "images_per_s": used_images / training if training > 0 else None}
        summary.update(last_val)
        summary.update(task.summary())
        log.info("%s stopped (%s) at step %d: %s", task.name, stopped, self.step, self.out)
        return summary

    def _next_batches(self, batches: Iterator[Any], count: int) -> List[Any]:
        """The step's ``count`` batches, on the device. Under ``torchrun`` a batch that this process cannot load
        (a damaged record of its share of the data) stops every process with its message (:func:`first_failure`:
        one small all_reduce per step); the others would otherwise wait for it in the step's DDP collectives and
        die of a lost connection."""
        error: Optional[Exception] = None
        group: List[Any] = []
        try:
            group = [_to_device(b, self.device) for b in itertools.islice(batches, count)]
        except Exception as err:  # noqa: BLE001 - every rank must learn of it; re-raised below
            error = err
        if self.dist.distributed:
            failure = first_failure(error, self.device)
            if failure is not None:
                raise TrainingError(f"loading the training batch of step {self.step + 1}: {failure}; every process "
                                    "stopped") from error
        if error is not None:
            raise error
        return group

    def _step_batches(self) -> int:
        """The batches the next step takes (:meth:`Task.batches_per_step`), checked against the epoch's."""
        count = self.task.batches_per_step(self.step)
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"{type(self.task).__name__}.batches_per_step({self.step}) must be a whole number >= 1, "
                             f"got {count!r}")
        if count > self.steps_per_epoch:
            raise TrainingError(
                f"step {self.step + 1} takes {count} batches of {self.local_batch} samples per process (e.g. one per "
                f"critic step of --d-steps), but an epoch of the {len(self._train_set)} training samples holds "
                f"{self.steps_per_epoch}; lower --d-steps or --batch-size, or train on more data")
        return count

    def _epoch_done(self) -> bool:
        """Whether the epoch's order has no room left for the next step's batches."""
        return self.batch_in_epoch + self._step_batches() > self.steps_per_epoch

    def _stop_reason(self) -> str:
        """Why the ranks agreed to stop early (the same on every rank): a stop signal any of them received
        (``signal SIGTERM``), else the deadline any of them reached (``max_minutes=M``)."""
        if self._agreed_signal:
            return f"signal {self._agreed_signal}"
        return f"max_minutes={self.cfg.max_minutes:g}"

    def _sync(self, terms: Mapping[str, Union[Tensor, float]], deadline: Optional[float]) -> Tuple[Dict[str, float], bool]:
        """Average the step's terms over ranks and agree (one all_reduce) on finiteness and on stopping: which
        stop signal some rank received (one count per signal, kept in ``_agreed_signal``, the same on every
        rank), whether some rank reached the deadline."""
        names = sorted(terms)
        vals = [torch.as_tensor(terms[n]).detach().to(self.device, torch.float32).reshape(()) for n in names]
        flags = [1.0 if self._stop.received == sig.name else 0.0 for sig in STOP_SIGNALS]
        flags.append(1.0 if deadline is not None and time.monotonic() >= deadline else 0.0)
        flags.append(0.0 if self._weights_finite() else 1.0)
        stats = torch.stack(vals + [torch.tensor(f, device=self.device) for f in flags])
        if self.dist.distributed:
            dist.all_reduce(stats)
            stats[: len(names)] /= self.dist.world_size
        out = stats.double().cpu().tolist()
        values = dict(zip(names, out[: len(names)]))
        *signalled, deadline_passed, bad_weights = out[len(names):]
        bad = [n for n, v in values.items() if not math.isfinite(v)]
        if bad or bad_weights > 0:
            self._diverged(bad, values, weights=bad_weights > 0)
        self._agreed_signal = next((sig.name for sig, n in zip(STOP_SIGNALS, signalled) if n > 0), None)
        return values, bool(self._agreed_signal) or deadline_passed > 0

    def _weights_finite(self) -> bool:
        """Whether every trained weight is finite (max |w| via one norm over all tensors)."""
        params = [p.detach() for net in self._nets.values() for p in net.module.parameters() if p.requires_grad]
        if not params:
            return True
        return bool(torch.isfinite(torch.nn.utils.get_total_norm(params, norm_type=math.inf)))

    def _diverged(self, bad: Sequence[str], values: Mapping[str, float], weights: bool) -> None:
        what = (f"the loss term(s) {', '.join(f'{n}={values[n]}' for n in bad)}" if bad else "")
        if weights:
            what = (what + " and " if what else "") + "the weights"
        last = self.out / "last.pt"
        kept = (f"The last good checkpoint ({last}, step {self._saved_step}) was kept"
                if self._saved_step is not None else
                (f"The last good checkpoint ({last}, from before this run) was kept" if last.is_file() else
                 "No checkpoint had been written yet"))
        hint = f", {self.task.divergence_hint}" if self.task.divergence_hint else ""
        diagnosis = f"{what} became NaN or infinite at step {self.step} (epoch {self.epoch}); stopping. {kept}."
        raise NonFiniteLossError(f"{diagnosis} Lower --lr{hint}, then --resume (a changed --lr takes effect) or "
                                 "restart", diagnosis)

    def _log_window(self, window: Dict[str, List[float]], epoch: int) -> None:
        if not window or self._logged_step == self.step:
            return
        metrics: Dict[str, Any] = {"epoch": epoch}
        metrics.update({name: sum(v) / len(v) for name, v in window.items()})
        lr = self.task.current_lr()
        if lr is not None:
            metrics["lr"] = lr
        if self._logger is not None:
            self._logger.log(self.step, **metrics)
        window.clear()
        self._logged_step = self.step

    @contextlib.contextmanager
    def _pause(self) -> Iterator[None]:
        """Time that is not training (validation, checkpoint writing): left out of the images/s of the log
        lines (and their ETA) and of the summary."""
        if self._pausing:  # a checkpoint written by a validation: counted once
            yield
            return
        start, self._pausing = time.perf_counter(), True
        try:
            yield
        finally:
            spent, self._pausing = time.perf_counter() - start, False
            self._paused += spent
            if self._logger is not None:
                self._logger.exclude_time(spent)

    def _validate(self, epoch: int) -> Dict[str, float]:
        """Rank 0 validates; every rank learns the score ``best.pt`` tracks and saves it together."""
        with self._pause():
            return self._validate_now(epoch)

    def _validate_now(self, epoch: int) -> Dict[str, float]:
        self._validated_step = self.step
        if not self.task.can_validate():
            return {}
        metrics: Dict[str, float] = self._on_rank_0("validation", self.task.validate) or {}
        if metrics and self._logger is not None:
            self._logger.log(self.step, epoch=epoch, **metrics)
        if self.task.best_metric is None:
            return metrics
        name, mode = self.task.best_metric
        score = torch.tensor([float(metrics.get(name, float("nan")))], dtype=torch.float64, device=self.device)
        if self.dist.distributed:
            dist.broadcast(score, 0)
        value = float(score.cpu())
        better = self.best is None or (value > self.best if mode == "max" else value < self.best)
        if math.isfinite(value) and better:
            self.best, self.best_name = value, name
            self._save("best.pt")
            log.info("new best %s %.4f at step %d (saved best.pt)", name, value, self.step)
        return metrics

    # ---------------------------------------------------------------- checkpoints
    def _primary(self) -> Tuple[str, _Net]:
        for name, net in self._nets.items():
            if net.primary:
                return name, net
        name = next(iter(self._nets))
        return name, self._nets[name]

    def _check_finite_before_save(self) -> None:
        bad = torch.tensor([0.0 if self._weights_finite() else 1.0], device=self.device)
        if self.dist.distributed:
            dist.all_reduce(bad)
        if float(bad) > 0:
            self._diverged([], {}, weights=True)

    def _save(self, filename: str) -> None:
        """Write ``OUT/filename`` on rank 0 (every rank's RNG state included); all ranks wait for it.
        Never with non-finite weights (the NaN guard stops the run instead)."""
        with self._pause():
            self._save_now(filename)

    def _save_now(self, filename: str) -> None:
        self._check_finite_before_save()
        rng = capture_rng_state()
        if self.dist.distributed:
            states: List[Any] = [None] * self.dist.world_size
            dist.all_gather_object(states, rng)
        else:
            states = [rng]
        self._on_rank_0(f"writing {self.out / filename}", lambda: self._write_checkpoint(filename, states))
        if filename == "last.pt":
            self._saved_step = self.step

    def _write_checkpoint(self, filename: str, states: List[Any]) -> None:
        """Rank 0's part of :meth:`_save`: ``OUT/filename`` with every rank's RNG state ``states``."""
        pname, primary = self._primary()
        extra: Dict[str, Any] = dict(primary.extra)
        if primary.ema is not None:
            extra["ema_state_dict"] = primary.ema.state_dict()
        others = {n: net for n, net in self._nets.items() if n != pname}
        task_state = self.task.extra_state()
        clash = set(task_state) & {"networks", "optimizers", "schedulers", "rng", "config", "step", "task",
                                   "validated_step"}
        if clash:
            raise ValueError(f"{type(self.task).__name__}.extra_state uses reserved keys {sorted(clash)}")
        save_model_checkpoint(
            self.out / filename, primary.module, primary.arch, primary.kwargs, **extra,
            task=self.task.name, primary=pname,
            networks={n: _cpu_state(net.module) for n, net in others.items()},
            network_archs={n: [net.arch, net.kwargs] for n, net in others.items() if net.arch},
            ema_networks={n: net.ema.state_dict() for n, net in others.items() if net.ema is not None},
            optimizers={n: o.state_dict() for n, (o, _, _) in self._opts.items()},
            schedulers={n: s.state_dict() for n, (_, _, s) in self._opts.items() if s is not None},
            base_lr={n: lr for n, (_, lr, _) in self._opts.items()},
            step=self.step, epoch=self.epoch, batch_in_epoch=self.batch_in_epoch,
            best_metric=self.best, best_metric_name=self.best_name, validated_step=self._validated_step,
            config=config_to_dict(self.cfg, absolute_paths=True), rng=states, world_size=self.dist.world_size,
            **task_state,
        )

    def _save_final(self) -> Path:
        """``OUT/model.pt``: the primary network's final weights (+ EMA) and its inference entries."""
        path = self.out / "model.pt"

        def write() -> None:
            _, primary = self._primary()
            extra: Dict[str, Any] = dict(primary.extra)
            if primary.ema is not None:
                extra["ema_state_dict"] = primary.ema.state_dict()
            save_model_checkpoint(path, primary.module, primary.arch, primary.kwargs, **extra, task=self.task.name,
                                  step=self.step, epoch=self.epoch, config=config_to_dict(self.cfg))

        with self._pause():
            self._on_rank_0(f"writing {path}", write)
        return path

    def _on_rank_0(self, what: str, work: Callable[[], Any]) -> Any:
        """``work()`` on rank 0 alone (validation, writing the run folder); its result there, None elsewhere.

        Under ``torchrun`` every rank then learns whether it failed (:func:`first_failure`, a collective that keeps
        them together as a barrier did): the others would wait for rank 0 in their next collective and die of a
        lost connection. Raises :class:`TrainingError` on every rank with rank 0's message (``what`` says where);
        without a process group, rank 0's error as it is."""
        result, error = None, None
        if self.is_main:
            try:
                result = work()
            except Exception as err:  # noqa: BLE001 - every rank must learn of it; re-raised below
                error = err
        if self.dist.distributed:
            failure = first_failure(error, self.device)
            if failure is not None:
                raise TrainingError(f"{what} at step {self.step}: {failure}; every process stopped") from error
        if error is not None:
            raise error
        return result

    def _load_resume(self, ckpt: Any) -> None:
        path, task = self.resume_path, self.task
        if not isinstance(ckpt, dict) or ckpt.get("task") != task.name or "optimizers" not in ckpt:
            found = ckpt.get("task") if isinstance(ckpt, dict) else None
            if found == task.name:  # this trainer's model.pt: weights without the optimiser state
                why = (f"it holds this trainer's final weights only, no optimiser state; resume from "
                       f"{Path(path).parent / 'last.pt'}, or start a new run from it with --finetune")
            elif found:
                why = f"it was written by the {found} trainer"
            else:
                why = ("it holds no training state of this lightface version (released weights, or a run folder "
                       "of an earlier version: load those for inference or with --finetune)")
            raise TrainingError(f"--resume {path}: not a {task.name} training checkpoint; {why}")
        pname, primary = self._primary()
        if ckpt.get("arch") != primary.arch or dict(ckpt.get("model_kwargs") or {}) != primary.kwargs:
            raise TrainingError(
                f"--resume {path}: the checkpoint's model {ckpt.get('arch')} {ckpt.get('model_kwargs')} differs from "
                f"this run's {primary.arch} {primary.kwargs}; resume with the model flags the run started with")
        saved_nets = dict(ckpt.get("networks") or {})
        expected = set(self._nets) - {pname}
        if set(saved_nets) != expected:
            raise TrainingError(
                f"--resume {path}: the run trained the networks {sorted(saved_nets) or 'none'} besides {pname!r}, this "
                f"one trains {sorted(expected) or 'none'}; resume with the flags the run started with")
        try:
            for name, net in self._nets.items():
                net.module.load_state_dict(ckpt["state_dict"] if name == pname else saved_nets[name])
                if net.ema is not None:  # its update count is the step (EMA warm-up resumes exactly)
                    ema_state = ckpt.get("ema_state_dict") if name == pname else (ckpt.get("ema_networks") or {}).get(name)
                    net.ema.load_state_dict(ema_state if ema_state is not None else net.module.state_dict(),
                                            updates=int(ckpt["step"]))
            for name, (opt, _, sched) in self._opts.items():
                opt.load_state_dict(ckpt["optimizers"][name])
                if sched is not None:
                    settings = sched.state_dict()
                    sched.load_state_dict(ckpt["schedulers"][name])
                    self._apply_changed_schedule(name, opt, sched, settings)
        except (KeyError, RuntimeError, ValueError) as err:
            raise TrainingError(f"--resume {path}: its state does not fit this run ({err}); resume with the flags "
                                "the run started with") from err
        task.load_extra_state(ckpt)
        self._apply_changed_lr(ckpt.get("base_lr") or {})
        self._report_changed_settings(ckpt.get("config") or {})
        self.step, self.epoch = int(ckpt["step"]), int(ckpt["epoch"])
        self.batch_in_epoch = int(ckpt.get("batch_in_epoch", 0))
        if self._epoch_done():  # the epoch length changed (other data / batch size / --d-steps)
            self.epoch, self.batch_in_epoch = self.epoch + 1, 0
        self.best, self.best_name = ckpt.get("best_metric"), ckpt.get("best_metric_name", "")
        self._saved_step = self.step
        self._validated_step = ckpt.get("validated_step")  # a finished run resumed is not validated again
        states = ckpt.get("rng") or []
        if len(states) == self.dist.world_size:
            self._resume_rng = states[self.dist.rank]  # each rank continues its own random draws
        else:
            warn_on_main_rank(log, "--resume: the checkpoint holds the RNG states of %d processes, this run has %d; "
                              "random draws will differ from the uninterrupted run", len(states), self.dist.world_size)
        log.info("resumed from %s at epoch %d, batch %d, step %d", path, self.epoch, self.batch_in_epoch, self.step)

    def _apply_changed_schedule(self, name: str, opt: torch.optim.Optimizer, sched: Any,
                                settings: Mapping[str, Any]) -> None:
        """Schedule settings that differ from the checkpoint's (``--lr-step``, ``--lr-gamma``) take effect:
        the position in the run is kept and the learning rate becomes the new schedule's at that position."""
        saved = sched.state_dict()
        changed = {k: v for k, v in settings.items() if k not in _SCHEDULE_POSITION and saved.get(k) != v}
        if not changed:
            return
        sched.load_state_dict({**saved, **changed})
        if hasattr(sched, "_get_closed_form_lr"):  # StepLR and the other closed-form schedules
            for group, lr in zip(opt.param_groups, sched._get_closed_form_lr()):
                group["lr"] = lr
            sched._last_lr = [g["lr"] for g in opt.param_groups]
        warn_on_main_rank(log, "--resume: the %s schedule changed (%s); applied from epoch %d (lr now %g)", name,
                          ", ".join(f"{k} {saved.get(k)!r} -> {v!r}" for k, v in sorted(changed.items())),
                          sched.last_epoch, opt.param_groups[0]["lr"])

    def _apply_changed_lr(self, saved: Mapping[str, float]) -> None:
        """A base learning rate that differs from the checkpoint's takes effect (schedule position kept)."""
        for name, (opt, lr, sched) in self._opts.items():
            old = saved.get(name)
            if old is None or float(old) == lr:
                continue
            factor = lr / float(old) if old else None
            for group in opt.param_groups:
                if factor is not None:
                    group["lr"] *= factor
                    if "initial_lr" in group:
                        group["initial_lr"] *= factor
                else:
                    group["lr"] = lr * group.get("lr_mult", 1.0)
                    group["initial_lr"] = group["lr"]
            if sched is not None and hasattr(sched, "base_lrs"):
                sched.base_lrs = [g.get("initial_lr", g["lr"]) for g in opt.param_groups]
                if hasattr(sched, "_last_lr"):
                    sched._last_lr = [g["lr"] for g in opt.param_groups]
            warn_on_main_rank(log, "--resume: the %s learning rate changed from %g to %g; applied (now %g, the "
                              "schedule keeps its position)", name, float(old), lr, opt.param_groups[0]["lr"])

    def _report_changed_settings(self, saved: Mapping[str, Any]) -> None:
        # paths compared absolute: `--config OUT/config.yaml --resume` gives the run's relative paths absolute
        now = config_to_dict(self.cfg, absolute_paths=True)
        if dataclasses.is_dataclass(self.cfg):
            saved = with_absolute_paths(type(self.cfg), saved)
        changed = sorted(k for k in now if k in saved and saved[k] != now[k] and k not in ("resume", "overwrite"))
        for key in changed:
            if key in self.task.reproducibility_keys:
                warn_on_main_rank(log, "--resume: %s is %r now, %r in the interrupted run; the run will not "
                                  "reproduce the uninterrupted one", key, now[key], saved[key])
            else:
                log.info("--resume: %s is %r now, %r in the interrupted run", key, now[key], saved[key])

    def _plot(self) -> None:
        if self.is_main and getattr(self.cfg, "plots", False) and (self.out / "metrics.jsonl").is_file():
            try:
                plot_metrics(self.out / "metrics.jsonl", self.out / "curves.png")
            except ValueError as err:  # nothing logged yet
                log.warning("no curves plotted: %s", err)


def saved_setting(saved: Optional[Mapping[str, Any]], name: str, legacy: Any) -> Any:
    """The value of setting ``name`` in a run's saved settings (a checkpoint's ``config`` or its ``config.yaml``;
    None for a file that holds none, as the shipped models), or ``legacy`` (what runs saved before the setting
    existed did) when they lack it: the rule of :meth:`Engine.resumed_setting`, for a ``--finetune`` start too."""
    value = (saved or {}).get(name)
    return legacy if value is None else value


def _batch_length(batch: Any) -> int:
    """The number of samples in a batch: the first dimension of its first tensor (tuples, lists, dicts)."""
    if isinstance(batch, Tensor):
        return int(batch.shape[0]) if batch.dim() else 1
    values = batch.values() if isinstance(batch, Mapping) else batch if isinstance(batch, (list, tuple)) else ()
    for value in values:
        n = _batch_length(value)
        if n:
            return n
    return 0


def _cpu_state(module: nn.Module) -> Dict[str, Tensor]:
    return {k: v.detach().cpu() for k, v in module.state_dict().items()}
