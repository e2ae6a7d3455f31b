"""The one training engine (lightface.engine.engine) on a toy task: run folder, resume, NaN guard,
deadline, stop signals, EMA, batch sizes; flags generated from config dataclasses; one-line CLI errors."""
import argparse
import errno
import json
import logging
import os
import re
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pytest
import torch
import yaml
from torch import nn
from torch.utils.data import TensorDataset

from lightface.engine.checkpoint import load_checkpoint
from lightface.engine.config import ConfigError, config_from_dict, config_to_dict, option, save_config
from lightface.engine.engine import (Engine, NonFiniteLossError, RunConfig, RunFolderError, Task, TrainingError,
                                    TrainingInterrupted)
from lightface.engine.gan import GAN_DEFAULTS, GANConfig
from lightface.engine.logger import read_metrics
from pipelines._cli import add_options, options_from_args, parse_with_config, run_cli

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class ToyConfig(RunConfig):
    steps: int = option(6, help="steps")
    batch_size: int = option(4, help="global batch")
    lr: float = option(0.05, help="learning rate")
    workers: int = option(0, help="workers")
    log_every: int = option(1, help="log every N steps")
    save_every: int = option(0, help="save every N steps")
    val_every: int = option(2, help="validate every N steps")
    ema_decay: float = option(0.0, help="EMA decay (0: off)")
    noise: float = option(0.1, help="random term of the loss (draws from the global RNG)")
    poison_step: int = option(0, help="this step's loss and update are NaN (a diverging run)")
    signal_step: int = option(0, help="during this step the process raises `signals` in itself (real signals)")
    signals: str = option("SIGTERM", help="comma-separated signal names sent at signal_step")
    signal_rank: int = option(-1, help="only this rank raises the signals (-1: every rank)")
    group_size: int = option(0, help="order epochs in runs of this many samples of one 'identity' (0: plain shuffle)")
    rank0_start_delay: float = option(0.0, help="rank 0 sleeps this long at the end of build (after the DDP set-up), "
                                                "so its deadline clock starts after the other ranks'")
    broken_sample: int = option(-1, help="loading this training sample raises ValueError (a damaged record; -1: none)")
    val_error_step: int = option(0, help="validating at this step raises ValueError (0: never)")
    save_error_step: int = option(0, help="writing a checkpoint at this step fails as a full disk does (0: never)")
    step_error_step: int = option(0, help="this training step raises torch.OutOfMemoryError in the forward pass, as a "
                                          "CUDA OOM on one GPU does (0: never)")
    step_error_rank: int = option(-1, help="only this rank meets the step_error_step error (-1: every rank)")
    tensorboard: bool = option(False, help="tensorboard")
    plots: bool = option(False, help="plots")


class _Damaged(TensorDataset):
    """The toy samples, one of them (``broken``) unreadable as a damaged LMDB record is."""

    def __init__(self, broken, *tensors):
        super().__init__(*tensors)
        self.broken = broken

    def __getitem__(self, index):
        if index == self.broken:
            raise ValueError(f"sample {index} is damaged; rebuild the dataset")
        return super().__getitem__(index)


class ToyTask(Task):
    """Linear regression on 12 fixed samples; the loss draws from the global RNG (like dropout)."""

    name = "toy"
    best_metric = ("val_loss", "min")

    def __init__(self, cfg):
        super().__init__(cfg)
        self.after_signals = []  # (the engine's stop flag, the signal's handler) after each raised signal

    def build(self, engine):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(12, 3, generator=g)
        y = x @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.1
        self.net = nn.Linear(3, 1)
        self.view = engine.add_network("net", self.net, arch="toy_linear", kwargs={"features": 3}, primary=True,
                                       ema_decay=self.cfg.ema_decay)
        self.opt = torch.optim.SGD(self.net.parameters(), lr=self.cfg.lr)
        engine.add_optimizer("net", self.opt, self.cfg.lr)
        self.val = (x, y)
        if self.cfg.rank0_start_delay and engine.dist.rank == 0:
            time.sleep(self.cfg.rank0_start_delay)
        return _Damaged(self.cfg.broken_sample, x, y) if self.cfg.broken_sample >= 0 else TensorDataset(x, y)

    def plan(self, steps_per_epoch):
        return self.cfg.steps, "completed"

    def sample_groups(self):
        return ([i // self.cfg.group_size for i in range(12)], self.cfg.group_size) if self.cfg.group_size else None

    def train_step(self, batch):
        x, y = batch
        if self.engine.step + 1 == self.cfg.step_error_step and self.cfg.step_error_rank in (-1, self.engine.dist.rank):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
        loss = nn.functional.mse_loss(self.view(x), y) + self.cfg.noise * torch.rand(()).item()
        if self.engine.step + 1 == self.cfg.poison_step:
            loss = loss * float("nan")
        if self.engine.step + 1 == self.cfg.signal_step and self.cfg.signal_rank in (-1, self.engine.dist.rank):
            for name in self.cfg.signals.split(","):
                # raise_signal handles each signal before it returns; two os.kill calls to the whole
                # process can reach other threads and merge into one pending signal
                signal.raise_signal(signal.Signals[name])
                self.after_signals.append((self.engine._stop.received, signal.getsignal(signal.Signals[name])))
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return {"loss": loss.detach()}

    def current_lr(self):
        return self.opt.param_groups[0]["lr"]

    def extra_state(self):  # called where a checkpoint is written (rank 0)
        if self.engine.step == self.cfg.save_error_step:
            raise OSError(errno.ENOSPC, "No space left on device")
        return {}

    def can_validate(self):
        return True

    def validate(self):
        if self.engine.step == self.cfg.val_error_step:
            raise ValueError(f"validation data damaged at step {self.engine.step}")
        with torch.no_grad():
            return {"val_loss": float(nn.functional.mse_loss(self.net(self.val[0]), self.val[1]))}


def _run(out, **kw):
    return Engine(ToyTask(ToyConfig(out=str(out), **kw))).run()


def _losses(out):
    return [(r["step"], r["loss"]) for r in read_metrics(out / "metrics.jsonl") if "loss" in r]


def test_run_folder_layout_and_summary(tmp_path):
    out = tmp_path / "run"
    summary = _run(out, ema_decay=0.5)
    assert summary["stopped"] == "completed" and summary["step"] == 6 and summary["epoch"] == 2  # 12 samples / 4
    for name in ("config.yaml", "last.pt", "best.pt", "model.pt", "metrics.jsonl"):
        assert (out / name).is_file(), name
    last = load_checkpoint(out / "last.pt")
    assert last["format"] == "lightface" and last["arch"] == "toy_linear" and last["task"] == "toy"
    assert last["step"] == 6 and len(last["rng"]) == 1 and "ema_state_dict" in last
    assert set(last["optimizers"]) == {"net"} and last["base_lr"] == {"net": 0.05}
    final = load_checkpoint(out / "model.pt")
    assert "optimizers" not in final and "ema_state_dict" in final and final["step"] == 6
    assert summary["best_metric_name"] == "val_loss" and load_checkpoint(out / "best.pt")["best_metric"] == summary["best_metric"]
    assert [s for s, _ in _losses(out)] == [1, 2, 3, 4, 5, 6]
    assert "resume" in (out / "config.yaml").read_text()


def _toy_parser():
    return add_options(argparse.ArgumentParser(), ToyConfig)


def test_the_saved_config_resumes_the_run_from_another_folder(tmp_path, monkeypatch):
    """`--config OUT/config.yaml --resume` (docs/training.md) continues the run from any working folder: the saved
    paths are absolute; it started a new run under the current folder when --out runs/x was stored as typed."""
    (tmp_path / "other").mkdir()
    monkeypatch.chdir(tmp_path)
    Engine(ToyTask(options_from_args(ToyConfig, parse_with_config(_toy_parser(), ["--out", "runs/x", "--steps", "3"])))).run()
    saved = tmp_path / "runs" / "x" / "config.yaml"
    assert yaml.safe_load(saved.read_text())["out"] == str(tmp_path / "runs" / "x")
    monkeypatch.chdir(tmp_path / "other")
    args = parse_with_config(_toy_parser(), ["--config", "../runs/x/config.yaml", "--resume", "--steps", "6"])
    summary = Engine(ToyTask(options_from_args(ToyConfig, args))).run()
    assert summary["step"] == 6 and [s for s, _ in _losses(tmp_path / "runs" / "x")] == [1, 2, 3, 4, 5, 6]
    assert not (tmp_path / "other" / "runs").exists()
    # a config.yaml of an earlier version (out stored as typed) is refused rather than starting a new run here
    saved.write_text(saved.read_text().replace(f"out: {tmp_path / 'runs' / 'x'}", "out: runs/x"))
    with pytest.raises(ConfigError, match=r"--resume: the run of this file is in \.\./runs/x .*add --out \.\./runs/x"):
        parse_with_config(_toy_parser(), ["--config", "../runs/x/config.yaml", "--resume"])
    args = parse_with_config(_toy_parser(), ["--config", "../runs/x/config.yaml", "--resume", "--out", "../runs/x"])
    assert args.out == "../runs/x" and args.resume == "auto"  # an explicit --out is taken as given


def test_existing_run_folder_needs_resume_or_overwrite(tmp_path):
    """Issue 14, 5.4: never overwrite checkpoints or truncate metrics.jsonl by forgetting --resume."""
    out = tmp_path / "run"
    _run(out, steps=4)
    before = (out / "metrics.jsonl").read_text()
    with pytest.raises(RunFolderError, match="--resume.*--overwrite"):
        _run(out, steps=4)
    assert (out / "metrics.jsonl").read_text() == before and load_checkpoint(out / "last.pt")["step"] == 4
    summary = _run(out, steps=2, overwrite=True)  # start over: fresh metrics and checkpoints
    assert summary["step"] == 2 and [s for s, _ in _losses(out)] == [1, 2]
    assert _run(out, steps=5, resume="auto")["step"] == 5
    with pytest.raises(TrainingError, match="not both"):
        _run(out, steps=6, resume="auto", overwrite=True)


def test_bare_resume_of_a_run_without_last_pt_keeps_its_best_checkpoint(tmp_path):
    """A run folder whose last.pt is gone (deleted to save space, copied without it) but whose best.pt and model.pt
    are there: bare --resume said 'no last.pt yet; starting a new run' and replaced best.pt, model.pt and the
    metrics. It is refused, naming --resume OUT/best.pt, which continues the run."""
    out = tmp_path / "run"
    _run(out, steps=4)
    (out / "last.pt").unlink()
    best, metrics = (out / "best.pt").read_bytes(), (out / "metrics.jsonl").read_text()
    with pytest.raises(RunFolderError, match=re.escape(f"no last.pt to continue: continue from its best checkpoint "
                                                       f"with --resume {out / 'best.pt'}, pass --overwrite")):
        _run(out, steps=6, resume="auto")
    assert (out / "best.pt").read_bytes() == best and (out / "metrics.jsonl").read_text() == metrics
    summary = _run(out, steps=6, resume=str(out / "best.pt"))
    assert summary["step"] == 6 and load_checkpoint(out / "last.pt")["step"] == 6
    assert _run(tmp_path / "new", steps=2, resume="auto")["step"] == 2  # still: an empty folder starts a run


def test_out_must_be_a_run_folder_and_a_finished_run_resumed_is_not_validated_again(tmp_path):
    """--out naming a file, or an LMDB dataset (whose --overwrite rebuild would delete the run), is refused before
    anything is written; --resume of a finished run adds no second validation record; --resume naming the run's
    model.pt (weights only) says to use last.pt."""
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunFolderError, match="is a file"):
        _run(tmp_path / "file")
    dataset = tmp_path / "faces.lmdb"
    dataset.mkdir()
    (dataset / "data.mdb").write_bytes(b"")
    with pytest.raises(RunFolderError, match="is an LMDB dataset"):
        _run(dataset)
    assert sorted(p.name for p in dataset.iterdir()) == ["data.mdb"]
    out = tmp_path / "run"
    _run(out, steps=4)
    before = (out / "metrics.jsonl").read_text()
    assert _run(out, steps=4, resume="auto")["step"] == 4
    assert (out / "metrics.jsonl").read_text() == before
    with pytest.raises(TrainingError, match="final weights only.*last.pt"):
        _run(out, steps=6, resume=str(out / "model.pt"))


def test_resume_reproduces_the_uninterrupted_run(tmp_path):
    _run(tmp_path / "full", steps=6)
    part = tmp_path / "part"
    _run(part, steps=4)  # stops after the first batch of epoch 1
    assert load_checkpoint(part / "last.pt")["batch_in_epoch"] == 1 and load_checkpoint(part / "last.pt")["epoch"] == 1
    _run(part, steps=6, resume="auto")
    assert _losses(part) == _losses(tmp_path / "full")  # exact: data order and every RNG draw restored
    a, b = load_checkpoint(tmp_path / "full" / "last.pt"), load_checkpoint(part / "last.pt")
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    with pytest.raises(TrainingError, match="no such checkpoint"):
        _run(tmp_path / "other", resume=str(tmp_path / "missing.pt"))


def test_nan_guard_keeps_the_last_good_checkpoint_and_a_new_lr_applies(tmp_path, caplog):
    """Issue 14, 5.3 / 5.5: a diverged run stops, the kept checkpoint is finite, --resume with a lower lr works."""
    out = tmp_path / "run"
    with pytest.raises(NonFiniteLossError, match="last good checkpoint"):
        _run(out, steps=20, lr=0.5, save_every=1, ema_decay=0.5, poison_step=5)
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["step"] == len(_losses(out)) == 4  # the last step logged is the last good one
    for state in (ckpt["state_dict"], ckpt["ema_state_dict"]):
        assert all(torch.isfinite(v).all() for v in state.values())
    assert not (out / "model.pt").exists()
    with caplog.at_level(logging.WARNING, logger="lightface.engine.engine"):
        summary = _run(out, steps=8, lr=1e-3, resume="auto")
    assert summary["stopped"] == "completed" and summary["step"] == 8
    assert "learning rate changed from 0.5 to 0.001" in caplog.text
    resumed = load_checkpoint(out / "last.pt")
    assert resumed["base_lr"] == {"net": 1e-3} and resumed["optimizers"]["net"]["param_groups"][0]["lr"] == 1e-3
    assert [r["lr"] for r in read_metrics(out / "metrics.jsonl") if "loss" in r][-1] == 1e-3


def test_deadline_stops_saves_and_writes_the_final_weights(tmp_path):
    summary = _run(tmp_path / "run", steps=1000, max_minutes=1e-9)
    assert summary["stopped"].startswith("max_minutes") and summary["step"] == 1
    assert load_checkpoint(tmp_path / "run" / "last.pt")["step"] == 1 and (tmp_path / "run" / "model.pt").is_file()


@pytest.mark.parametrize("name", ["SIGTERM", "SIGINT"])
def test_a_stop_signal_finishes_the_step_saves_and_resume_loses_nothing(tmp_path, name):
    """Preemption (SIGTERM) or Ctrl-C (SIGINT) mid-run: the step completes, last.pt and model.pt hold it,
    TrainingInterrupted tells the caller, the previous handlers come back, and --resume continues exactly
    as if nothing had happened."""
    _run(tmp_path / "full", steps=8)
    part = tmp_path / "part"
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with pytest.raises(TrainingInterrupted, match=f"stopped by {name} at step 3.*--resume") as stop:
        _run(part, steps=8, signal_step=3, signals=name)  # raised after saving: callers stop too
    summary = stop.value.summary
    assert summary["stopped"] == f"signal {name}" and summary["step"] == 3
    assert stop.value.exit_status == 128 + int(getattr(signal, name))
    assert load_checkpoint(part / "last.pt")["step"] == 3 and load_checkpoint(part / "model.pt")["step"] == 3
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
    assert _run(part, steps=8, resume="auto")["stopped"] == "completed"
    assert _losses(part) == _losses(tmp_path / "full")


def test_a_second_ctrl_c_interrupts_at_once(tmp_path):
    """The first Ctrl-C is handled before raise_signal returns (the flag is set, Python's own handler is back),
    so the second raises KeyboardInterrupt in the middle of the step. A failure shows what each signal left."""
    task = ToyTask(ToyConfig(out=str(tmp_path / "run"), steps=8, signal_step=3, signals="SIGINT,SIGINT"))
    left = "(stop flag, handler) after each signal"
    try:
        Engine(task).run()
    except KeyboardInterrupt:
        pass
    except TrainingInterrupted:
        pytest.fail(f"the second SIGINT did not interrupt the run; {left}: {task.after_signals}")
    else:
        pytest.fail(f"no SIGINT stopped the run; {left}: {task.after_signals}")
    assert task.after_signals == [("SIGINT", signal.default_int_handler)]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def _toy_torchrun(tmp_path, **settings):
    """The toy task on 2 CPU processes (tests/engine_toy_run.py): {rank: its result line} and the worker logs."""
    from torchrun_helper import finish, start_torchrun

    cfg = {"out": str(tmp_path / "run"), **settings}  # another "out" resumes a run
    proc = start_torchrun([ROOT / "tests" / "engine_toy_run.py", json.dumps(cfg)], tmp_path)
    _, _, logs = finish(proc, tmp_path, timeout=150, ok_codes=range(0, 256))  # the ranks' statuses: their lines
    results = {int(rank): json.loads(line) for rank, line in re.findall(r"TOY rank=(\d+) (\{.*\})", logs)}
    assert sorted(results) == [0, 1], logs
    return results, logs


@pytest.mark.slow
def test_a_stop_signal_that_reaches_one_rank_stops_every_rank_after_the_same_step_and_saves_it(tmp_path):
    """A preemption notice forwarded to one node's ranks, or a `kill` of one worker: the ranks agree to stop
    after the same step, skip the final validation together (a rank-local decision sent one rank into the
    validation's broadcast and the other into the save's all_reduce: a hang), save that step and all exit 143."""
    results, logs = _toy_torchrun(tmp_path, steps=1000, signal_step=3, signal_rank=1, val_every=2)
    assert results[0] == results[1] == {"stopped": "signal SIGTERM", "step": 3, "exit": 143}, logs
    out = tmp_path / "run"
    assert load_checkpoint(out / "last.pt")["step"] == 3 == load_checkpoint(out / "model.pt")["step"]


@pytest.mark.slow
def test_the_deadline_under_torchrun_is_the_stop_reason_on_every_rank(tmp_path):
    """Rank 0 starts its --max-minutes clock seconds after rank 1 (here: a slow start made explicit), so only rank
    1's deadline has passed when they agree to stop: both report the deadline, not a signal nobody sent."""
    results, logs = _toy_torchrun(tmp_path, steps=10**7, max_minutes=0.02, rank0_start_delay=3.0, val_every=10**7,
                                  log_every=10**7)
    assert results[0] == results[1] and results[0]["stopped"] == "max_minutes=0.02" and results[0]["exit"] == 0, logs


@pytest.mark.slow
def test_a_batch_that_one_rank_cannot_load_stops_every_rank_with_its_message(tmp_path):
    """A damaged record in one rank's share of the data: that rank cannot load its batch while the other goes on
    into the step's DDP collectives. Every rank stops with the message of the rank that failed (it named the
    damaged sample), not one with the error and the other with gloo's "Connection closed by peer"."""
    results, logs = _toy_torchrun(tmp_path, steps=6, broken_sample=5, val_every=100)
    assert results[0] == results[1], logs
    assert "sample 5 is damaged" in results[0]["error"] and "loading the training batch" in results[0]["error"]
    assert results[0]["exit"] == 1 and "Connection closed" not in logs, logs


@pytest.mark.slow
def test_a_validation_error_on_rank_0_stops_every_rank_with_its_message(tmp_path):
    """Rank 0 validates alone while the others wait for the score: its error reaches them (the same message on
    every rank) instead of leaving them to die of a lost gloo connection."""
    results, logs = _toy_torchrun(tmp_path, steps=6, val_every=2, val_error_step=4)
    assert results[0] == results[1], logs
    assert "validation at step 4" in results[0]["error"] and "validation data damaged" in results[0]["error"], logs
    assert "Connection closed" not in logs, logs


@pytest.mark.slow
def test_a_checkpoint_rank_0_cannot_write_stops_every_rank_with_its_message(tmp_path):
    """Rank 0 alone writes last.pt while the others wait: a full disk there reaches every rank as rank 0's
    error (it is gone), instead of a gloo "Connection closed by peer" on the others."""
    results, logs = _toy_torchrun(tmp_path, steps=6, save_every=2, save_error_step=4, val_every=100)
    assert results[0] == results[1], logs
    assert "last.pt at step 4" in results[0]["error"] and "No space left" in results[0]["error"], logs
    assert "Connection closed" not in logs, logs


@pytest.mark.slow
def test_an_error_in_one_ranks_training_step_stops_every_rank_with_its_message(tmp_path):
    """A CUDA out-of-memory error in one rank's forward pass, while the other rank waits in the step's gradient
    all_reduce: every rank stops at once with the failing rank's message (exit 1), not the other one with gloo's
    "Connection closed by peer", nor with "terminated (SIGTERM): ... --resume to continue where it stopped" when
    torchrun's SIGTERM reaches rank 0 while it still plots the curves."""
    start = time.monotonic()
    results, logs = _toy_torchrun(tmp_path, steps=6, val_every=100, step_error_step=3, step_error_rank=1, plots=True)
    assert time.monotonic() - start < 120, logs
    assert results[1] == {"error": "CUDA out of memory. Tried to allocate 2.00 GiB (simulated)", "exit": 1}, logs
    assert results[0] == {"error": "step 3: process 1 of 2: CUDA out of memory. Tried to allocate 2.00 GiB "
                                   "(simulated); every process stopped", "exit": 1}, logs
    assert "Connection closed" not in results[0]["error"] and (tmp_path / "run" / "curves.png").is_file(), logs


@pytest.mark.slow
def test_a_metrics_file_rank_0_cannot_write_stops_every_rank_with_its_message(tmp_path):
    """A full disk under rank 0's metrics.jsonl (here /dev/full) while rank 1 goes on into the next step: both
    stop with rank 0's error, which names the file, not rank 1 with "Connection closed by peer"."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").symlink_to("/dev/full")
    results, logs = _toy_torchrun(tmp_path, steps=6, val_every=100, resume="auto")
    wanted = f"[Errno 28] cannot write {out / 'metrics.jsonl'}: No space left on device"
    assert results[0] == {"error": wanted, "exit": 1}, logs
    assert results[1] == {"error": f"step 1: process 0 of 2: {wanted}; every process stopped", "exit": 1}, logs


@pytest.mark.slow
def test_resume_warnings_under_torchrun_are_written_once(tmp_path):
    """What every rank finds alike on --resume (another number of processes, a changed --lr) is written by
    rank 0 alone, not once per rank."""
    out = tmp_path / "run"
    _run(out, steps=2, val_every=100)  # one process: one RNG state saved
    results, logs = _toy_torchrun(tmp_path / "ddp", out=str(out), resume="auto", steps=4, lr=0.1, val_every=100)
    assert results[0]["step"] == results[1]["step"] == 4, logs
    assert logs.count("the checkpoint holds the RNG states of 1 processes") == 1, logs
    assert logs.count("learning rate changed from 0.05 to 0.1") == 1, logs


@pytest.mark.slow
def test_identity_grouped_epochs_resume_exactly_under_another_number_of_processes(tmp_path):
    """Stopped mid-epoch in one process, resumed under torchrun with 2 (same global batch): every global batch
    holds the samples it held in the uninterrupted run. With no random term the loss of a global batch is the
    same on 1 or 2 processes (DDP averages the halves' gradients), so the logged losses show it step by step."""
    opts = dict(steps=6, noise=0.0, group_size=2, val_every=100)
    _run(tmp_path / "full", **opts)
    part = tmp_path / "part"
    _run(part, **dict(opts, steps=2))  # 2 of the epoch's 3 batches
    results, logs = _toy_torchrun(tmp_path / "ddp", **dict(opts, out=str(part), resume="auto"))
    assert results[0]["step"] == 6, logs
    full, resumed = _losses(tmp_path / "full"), _losses(part)
    assert [s for s, _ in resumed] == [s for s, _ in full] == [1, 2, 3, 4, 5, 6]
    assert [v for _, v in resumed] == pytest.approx([v for _, v in full], rel=1e-5, abs=1e-7)


class _WorkerPid(torch.utils.data.Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, i):
        return os.getpid()


def _blocked_stop_signals(pid):
    """The stop signals process ``pid`` holds blocked, read from its /proc status mask."""
    from lightface.utils.worker_signals import STOP_SIGNALS

    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("SigBlk:"):
                mask = int(line.split()[1], 16)
                return {sig for sig in STOP_SIGNALS if mask >> (int(sig) - 1) & 1}
    raise AssertionError(f"no SigBlk line for process {pid}")


@pytest.mark.skipif(not hasattr(signal, "pthread_sigmask") or not os.path.exists("/proc/self/status"),
                    reason="POSIX signal masks, read from Linux /proc")
def test_workers_started_inside_starting_workers_survive_a_sigterm():
    """PyTorch's own worker handler makes a worker die of a SIGTERM from anyone but its parent (here: a
    `timeout` or scheduler signalling the process group while a worker starts, before any worker_init_fn
    could ignore it). Started inside starting_workers, the workers hold the signal and the loader finishes.

    The control (workers started outside) is checked on their signal mask, not by killing them: a
    worker killed mid-send can leave the loader blocked for ever on its half-written batch."""
    from lightface.utils.worker_signals import STOP_SIGNALS, starting_workers

    loader = torch.utils.data.DataLoader(_WorkerPid(), batch_size=1, num_workers=2)
    batches = iter(loader)
    pids = {int(next(batches)), int(next(batches))}
    assert [_blocked_stop_signals(pid) for pid in pids] == [set(), set()]  # a SIGTERM would kill them
    assert len(list(batches)) == 6

    with starting_workers():
        batches = iter(loader)
    assert _blocked_stop_signals(os.getpid()) == set()  # the block ends with the workers' start
    pids = {int(next(batches)), int(next(batches))}
    assert os.getpid() not in pids and len(pids) == 2
    assert [_blocked_stop_signals(pid) for pid in pids] == [set(STOP_SIGNALS)] * 2
    for pid in pids:
        os.kill(pid, signal.SIGTERM)
    assert len(list(batches)) == 6  # no "DataLoader worker exited unexpectedly"


def test_under_torchrun_only_rank_0_writes_info_lines():
    """Other ranks keep warnings and errors: they would repeat rank 0's progress, "saved best.pt", "finished"."""
    from lightface.engine.distributed import PROJECT_LOGGERS, DistInfo, log_on_main_rank

    loggers = [logging.getLogger(name) for name in PROJECT_LOGGERS]
    levels = [logger.level for logger in loggers]
    try:
        for logger in loggers:
            logger.setLevel(logging.INFO)  # as run_cli configures them
        log_on_main_rank(DistInfo(rank=0, world_size=2))
        assert [logger.level for logger in loggers] == [logging.INFO] * len(loggers)
        log_on_main_rank(DistInfo(rank=1, world_size=2))
        for name in ("lightface.engine.engine", "pipelines.train_lightcnn"):
            assert not logging.getLogger(name).isEnabledFor(logging.INFO)
            assert logging.getLogger(name).isEnabledFor(logging.WARNING)
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


@pytest.mark.parametrize("value", [0, -4])
def test_batch_size_must_be_positive(tmp_path, value):
    with pytest.raises(TrainingError, match="--batch-size must be > 0"):
        _run(tmp_path / "run", batch_size=value)
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------------
# flags and configs
# ---------------------------------------------------------------------------------------
@dataclass
class _Inner:
    depth: int = option(2, help="depth", group="inner")


@dataclass
class _Cfg:
    name: str = option("x", help="a name", group="main")
    ratio: float = option(0.5, help="a ratio of 50%", group="main")
    files: list = option(default_factory=list, help="files")
    flip: bool = option(True, help="flip")
    fast: bool = option(False, help="fast")
    mode: str = option("a", choices=("a", "b"), help="mode")
    limit: Optional[int] = option(None, help="limit", default_text="unlimited")
    resume: Optional[str] = option(None, nargs="?", const="auto", help="resume")
    inner: _Inner = field(default_factory=_Inner)


def test_flags_are_generated_from_the_dataclass():
    parser = add_options(argparse.ArgumentParser(), _Cfg)
    text = parser.format_help()
    for flag in ("--name", "--ratio", "--files", "--no-flip", "--fast", "--mode", "--limit", "--resume", "--depth"):
        assert flag in text
    assert "(default: 0.5)" in text and "(default: unlimited)" in text and "(default: on)" in text
    assert "50%" in text
    args = parser.parse_args(["--no-flip", "--fast", "--files", "a", "b", "--depth", "5", "--resume"])
    cfg = options_from_args(_Cfg, args)
    assert cfg.flip is False and cfg.fast is True and cfg.files == ["a", "b"] and cfg.inner.depth == 5
    assert cfg.resume == "auto" and cfg.limit is None
    with pytest.raises(SystemExit):
        parser.parse_args(["--mode", "c"])
    flat = config_to_dict(cfg)
    assert flat["depth"] == 5 and "inner" not in flat
    assert config_from_dict(_Cfg, flat) == cfg
    with pytest.raises(ConfigError, match="did you mean 'ratio'"):
        config_from_dict(_Cfg, {"ration": 1.0})
    with pytest.raises(ConfigError, match="not one of"):
        config_from_dict(_Cfg, {"mode": "z"})


def test_trainer_flags_and_yaml_keys_are_the_dataclass_fields(tmp_path):
    from lightface.engine.frontal_trainer import FrontalTrainConfig
    from lightface.engine.lightcnn_trainer import TrainConfig
    from lightface.engine.sr_trainer import SRTrainConfig
    from pipelines import train_frontalization, train_lightcnn, train_super_resolution

    for module, cls in ((train_lightcnn, TrainConfig), (train_super_resolution, SRTrainConfig),
                        (train_frontalization, FrontalTrainConfig)):
        dests = {a.dest for a in module.get_args_parser()._actions} - {"help"}
        assert dests == set(config_to_dict(cls())), module.__name__
        for flag in ("--out", "--resume", "--overwrite", "--max-minutes", "--batch-size", "--seed", "--device"):
            assert flag in module.get_args_parser().format_help()
    sr_dests = {a.dest for a in train_super_resolution.get_args_parser()._actions}
    assert set(GAN_DEFAULTS) <= sr_dests and GAN_DEFAULTS == config_to_dict(GANConfig())
    # BEGAN is frontalization's only: the SR trainer does not offer its flags (but reads them back as null)
    assert "--began-gamma" not in train_super_resolution.get_args_parser().format_help()
    assert "--began-lambda-k" not in train_super_resolution.get_args_parser().format_help()
    assert "--began-gamma" in train_frontalization.get_args_parser().format_help()
    # a saved config reloads with --config under the same key names
    cfg = SRTrainConfig(data=["a", "b"], out="o", lr=1e-3, gan=GANConfig(adversarial="hinge"))
    path = save_config(cfg, tmp_path / "config.yaml")
    args = parse_with_config(train_super_resolution.get_args_parser(), ["--config", str(path)])
    assert options_from_args(SRTrainConfig, args) == cfg


def test_lightface_never_imports_argparse():
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "lightface"
    offenders = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(n.split(".")[0] == "argparse" for n in names):
                offenders.append(f"{path.relative_to(root.parent)}:{node.lineno}")
    assert not offenders, offenders


@pytest.mark.parametrize("pipeline", ["train_super_resolution", "train_frontalization", "train_lightcnn"])
def test_trainer_cli_errors_are_one_line(tmp_path, capsys, pipeline):
    """Issue 14, 5.9 / 5.10: a YAML typo, a bad batch size and a missing data set give one line, no traceback."""
    import importlib

    module = importlib.import_module(f"pipelines.{pipeline}")
    typo = tmp_path / "run.yaml"
    typo.write_text(json.dumps({"data": "x", "out": str(tmp_path / "o"), "batch_sise": 4}))
    assert run_cli(module.main, module.get_args_parser, ["--config", str(typo)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "did you mean 'batch_size'" in err and "Traceback" not in err
    rc = run_cli(module.main, module.get_args_parser,
                 ["--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o"), "--batch-size", "0"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "--batch-size must be > 0" in err  # a config error
    rc = run_cli(module.main, module.get_args_parser, ["--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and len(err.splitlines()) == 1 and "missing" in err and "Traceback" not in err


@pytest.mark.parametrize("pipeline, flags, message", [
    ("train_lightcnn", ["--samples-per-identity", "1"], "--samples-per-identity must be 0 (off) or >= 2"),
    ("train_lightcnn", ["--loss", "soft-bootstrap", "--beta", "1.5"], "--beta (bootstrapping) must be in [0, 1]"),
    ("train_super_resolution", ["--adversarial", "hinge", "--label-smoothing", "0.1"], "label smoothing (0.1)"),
    ("train_super_resolution", ["--began-gamma", "0.5"], "--began-gamma is not supported by train_super_resolution"),
    ("train_frontalization", ["--began-gamma", "2"], "--began-gamma must be in (0, 1]"),
    # options of another objective would never act: refused as --label-smoothing with hinge is
    ("train_super_resolution", ["--adversarial", "hinge", "--gp-weight", "5"],
     "--gp-weight 5 only applies to --adversarial wgan-gp, not to hinge"),
    ("train_frontalization", ["--adversarial", "wgan-gp", "--clip-value", "0.5"],
     "--clip-value 0.5 only applies to --adversarial wgan-clip, not to wgan-gp"),
    ("train_frontalization", ["--began-lambda-k", "0.5"], "--began-lambda-k 0.5 only applies with --began-gamma"),
    ("train_frontalization", ["--cycle", "1", "--lambda-ce", "1"], "--lambda-ce 1 (identity cross-entropy"),
    ("train_frontalization", ["--d-steps", "0"], "--d-steps must be >= 1, got 0"),
    # non-finite values passed (nan < 0 is False) and the NaN guard stopped the run after its folder was written
    ("train_lightcnn", ["--lr", "nan"], "--lr must be >= 0 and finite, got nan"),
    ("train_lightcnn", ["--weight-decay", "inf"], "--weight-decay must be >= 0 and finite, got inf"),
    ("train_lightcnn", ["--loss", "cosface", "--scale", "nan"], "--scale must be > 0 and finite, got nan"),
    # every Light CNN takes 128x128: another crop failed at the first step, after the folder was written
    ("train_lightcnn", ["--crop", "112"], "--crop must be 128, got 112: every --arch takes 128x128 crops"),
])
def test_invalid_training_settings_exit_with_status_2(tmp_path, capsys, pipeline, flags, message):
    """Settings that cannot work (the engine's, the trainer's, the GAN objective's) are config errors: status 2,
    as docs/training.md says, before any data is read; the errors of a run keep status 1 (above)."""
    import importlib

    module = importlib.import_module(f"pipelines.{pipeline}")
    argv = ["--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o"), *flags]
    assert run_cli(module.main, module.get_args_parser, argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and "invalid training settings" in err
    assert not (tmp_path / "o").exists()
