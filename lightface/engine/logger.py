"""Training metrics: a JSONL file, TensorBoard when installed, a readable log line, PNG curves.

:class:`MetricLogger` is what every trainer uses::

    logger = MetricLogger(run_dir, enabled=dist_info.is_main, total_steps=max_steps, batch_size=global_batch)
    logger.log(step, epoch=epoch, loss=loss, l_ce=ce, lr=lr)   # one JSON line + one log line
    logger.log(step, val_acc=0.93)                               # validation metrics, same file
    logger.close()
    plot_metrics(run_dir / "metrics.jsonl", run_dir / "curves.png")

The log line (``logging.INFO`` on the ``lightface.engine.logger`` logger) reads::

    epoch 3 step 1200/8000 | 812.4 img/s | loss 2.3012 l_ce 2.2871 | lr 1.00e-02 | eta 0:41:07
"""
import json
import logging
import math
import os
import time
from datetime import timedelta
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Union

__all__ = ["MetricLogger", "read_metrics", "plot_metrics"]

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

#: keys the log line formats specially (everything else is printed as ``name value``)
_SPECIAL = {"epoch", "lr", "images_per_s"}


def _scalar(name: str, value: Any) -> Union[int, float]:
    """A plain Python number from an int/float/bool/0-d tensor/numpy scalar."""
    if hasattr(value, "item") and callable(value.item):
        try:
            value = value.item()
        except (ValueError, RuntimeError) as err:
            raise ValueError(f"metric {name!r} must be a scalar, got shape {tuple(getattr(value, 'shape', ()))}") from err
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)):
        return value
    raise TypeError(f"metric {name!r} must be a number, got {type(value).__name__}")


def _is_loss(name: str) -> bool:
    return "loss" in name or name.startswith("l_")


def _fmt(value: Union[int, float]) -> str:
    if isinstance(value, int):
        return str(value)
    if value != 0 and (abs(value) >= 1e4 or abs(value) < 1e-3):
        return f"{value:.3e}"
    return f"{value:.4f}"


def _open_tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        log.debug("tensorboard not installed; metrics go to metrics.jsonl only")
        return None
    return SummaryWriter(log_dir=str(run_dir / "tensorboard"))


class MetricLogger:
    """Write scalar metrics per step to ``run_dir/metrics.jsonl`` (+ TensorBoard) and log a progress line.

    Args:
        run_dir: the run folder (created when enabled).
        enabled: ``False`` makes every method a no-op (use ``dist_info.is_main`` so only
            rank 0 writes).
        total_steps: the run's last step, for the ``step i/N`` and ETA fields (optional).
        batch_size: images per step over all processes, for the images/s field (optional;
            a metric ``images_per_s`` passed to :meth:`log` takes precedence).
        tensorboard: also write TensorBoard events to ``run_dir/tensorboard`` when the
            ``tensorboard`` package is installed.
        truncate_after: when resuming at this step, drop records with a larger step from an
            existing ``metrics.jsonl`` (the interrupted run's tail) and append after it;
            ``None`` starts a fresh file.
        filename: the JSONL file name inside ``run_dir``.

    Each record is one JSON object per line: ``{"step": int, "time": seconds since the
    logger was created, **metrics}``; metric values are Python numbers (0-d tensors are
    converted with ``.item()``).
    """

    def __init__(
        self,
        run_dir: PathLike,
        enabled: bool = True,
        total_steps: Optional[int] = None,
        batch_size: Optional[int] = None,
        tensorboard: bool = True,
        truncate_after: Optional[int] = None,
        filename: str = "metrics.jsonl",
    ):
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self.total_steps = total_steps
        self.batch_size = batch_size
        self.path = self.run_dir / filename
        self._start = time.perf_counter()
        self._last_time: Optional[float] = None
        self._last_step: Optional[int] = None
        self._rate: Optional[float] = None  # smoothed seconds per step
        self._file = None
        self._writer = None
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if truncate_after is not None and self.path.is_file():
            kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= truncate_after]
            with open(self.path, "w", encoding="utf-8") as f:
                for record in kept:
                    f.write(json.dumps(record) + "\n")
            self._file = open(self.path, "a", encoding="utf-8")
        else:
            self._file = open(self.path, "w", encoding="utf-8")
        if tensorboard:
            self._writer = _open_tensorboard(self.run_dir)

    # -- logging ---------------------------------------------------------------------
    def log(self, step: int, **metrics: Any) -> Dict[str, Union[int, float]]:
        """Record ``metrics`` at ``step`` and emit one log line; returns the record written.

        Recognised names: ``epoch``, ``lr``, ``images_per_s``; names containing ``loss``
        or starting with ``l_`` are shown as loss terms; every other metric is shown as
        ``name value``. Speed and ETA come from the time between calls at increasing steps.
        """
        if not self.enabled:
            return {}
        values = {name: _scalar(name, v) for name, v in metrics.items()}
        now = time.perf_counter()
        if "images_per_s" not in values:
            speed = self._update_speed(int(step), now)
            if speed is not None and self.batch_size:
                values["images_per_s"] = self.batch_size / speed
        else:
            self._update_speed(int(step), now)
        record = {"step": int(step), "time": round(now - self._start, 4), **values}
        try:
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()
        except OSError as err:  # a full disk: name the file (flush's own error names none)
            self._drop_file()
            raise OSError(err.errno, f"cannot write {self.path}: {err.strerror or err}") from err
        if self._writer is not None:
            for name, value in values.items():
                if math.isfinite(value):
                    self._writer.add_scalar(name, value, int(step))
        log.info(self.format_line(int(step), values))
        return record

    def _drop_file(self) -> None:
        """Close the JSONL file after a failed write, dropping what it could not write (a later :meth:`close`
        would fail again on it, in place of the error that reported it)."""
        file, self._file = self._file, None
        try:
            file.close()
        except OSError:
            pass

    def _update_speed(self, step: int, now: float) -> Optional[float]:
        """Update the smoothed seconds-per-step estimate; returns it (None until known)."""
        if self._last_step is not None and step > self._last_step:
            per_step = (now - self._last_time) / (step - self._last_step)
            self._rate = per_step if self._rate is None else 0.7 * self._rate + 0.3 * per_step
        if self._last_step is None or step > self._last_step:
            self._last_step, self._last_time = step, now
        return self._rate

    def exclude_time(self, seconds: float) -> None:
        """Leave ``seconds`` (validation, checkpoint writing since the last record) out of the speed and ETA:
        the next record's images/s is that of the training steps alone."""
        if self._last_time is not None:
            self._last_time += float(seconds)

    def format_line(self, step: int, values: Dict[str, Union[int, float]]) -> str:
        """The human-readable line for one record (see the module docstring)."""
        parts: List[str] = []
        head = f"epoch {values['epoch']} " if "epoch" in values else ""
        head += f"step {step}" + (f"/{self.total_steps}" if self.total_steps else "")
        parts.append(head)
        if "images_per_s" in values:
            parts.append(f"{values['images_per_s']:.1f} img/s")
        losses = [f"{k} {_fmt(v)}" for k, v in values.items() if k not in _SPECIAL and _is_loss(k)]
        if losses:
            parts.append(" ".join(losses))
        others = [f"{k} {_fmt(v)}" for k, v in values.items() if k not in _SPECIAL and not _is_loss(k)]
        if others:
            parts.append(" ".join(others))
        if "lr" in values:
            parts.append(f"lr {values['lr']:.2e}")
        if self.total_steps and self._rate is not None and step <= self.total_steps:
            parts.append(f"eta {timedelta(seconds=round(self._rate * (self.total_steps - step)))}")
        return " | ".join(parts)

    # -- lifetime --------------------------------------------------------------------
    def close(self) -> None:
        """Flush and close the JSONL file and the TensorBoard writer."""
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> "MetricLogger":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_metrics(jsonl_path: PathLike) -> List[Dict[str, Any]]:
    """All records of a ``metrics.jsonl`` file, in order (a torn last line is ignored)."""
    jsonl_path = Path(jsonl_path)
    if not jsonl_path.is_file():
        raise FileNotFoundError(f"metrics file not found: {jsonl_path}")
    records = []
    with open(jsonl_path, "r", encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                log.warning("%s:%d is not valid JSON; skipped", jsonl_path, number)
    return records


def _groups(keys: Iterable[str]) -> Dict[str, List[str]]:
    """Panels of the plot: losses, accuracies, learning rate, everything else."""
    panels: Dict[str, List[str]] = {"loss": [], "accuracy": [], "learning rate": [], "other": []}
    for key in keys:
        if _is_loss(key):
            panels["loss"].append(key)
        elif "acc" in key or key.startswith(("tar", "auc")):
            panels["accuracy"].append(key)
        elif key == "lr":
            panels["learning rate"].append(key)
        else:
            panels["other"].append(key)
    return {name: keys for name, keys in panels.items() if keys}


def plot_metrics(
    jsonl_path: PathLike, out_png: PathLike, keys: Optional[Sequence[str]] = None, skip: Sequence[str] = ("time", "images_per_s", "epoch")
) -> Path:
    """Plot metric curves against ``step`` into a PNG (matplotlib's Agg canvas; no display needed).

    Args:
        jsonl_path: a ``metrics.jsonl`` written by :class:`MetricLogger`.
        out_png: the output image path (folders created).
        keys: the metrics to plot (default: every numeric metric except ``skip``).
        skip: metrics left out by default.

    One panel per group: losses, accuracies (names containing ``acc``, ``tar...``,
    ``auc...``), learning rate (log scale), other metrics.

    Raises:
        ValueError: the file holds no plottable metrics.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    records = read_metrics(jsonl_path)
    if keys is None:
        seen: Dict[str, None] = {}
        for r in records:
            for k, v in r.items():
                if k != "step" and k not in skip and isinstance(v, (int, float)):
                    seen[k] = None
        keys = list(seen)
    if not records or not keys:
        raise ValueError(f"no metrics to plot in {jsonl_path}")
    panels = _groups(keys)
    fig = Figure(figsize=(6.0 * len(panels), 4.0), dpi=100)
    FigureCanvasAgg(fig)
    for i, (title, names) in enumerate(panels.items(), 1):
        ax = fig.add_subplot(1, len(panels), i)
        for name in names:
            pts = [(r["step"], r[name]) for r in records if isinstance(r.get(name), (int, float)) and "step" in r]
            if not pts:
                continue
            xs, ys = zip(*pts)
            ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, markersize=3, label=name)
        if title == "learning rate":
            ax.set_yscale("log")
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png)
    return out_png
