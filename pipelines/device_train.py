"""Train a Light CNN on a lent GPU from a device bundle in one call: unpack, probe, train, export.

    # there, in the repository's copy (docs/training.md, "Training on a lent GPU"):
    python3 -m pipelines.device_train --bundle .device/lightcnn --out $OUT --minutes 7
    # here, from the files it sent back:
    python -m pipelines.device_train --collect FILES_AT --checkpoint runs/gpu29/backbone.pt

A lent machine lives for minutes, so the run is sized by measurement, not by a guess:

0. the backbone's float16 parts must come back (:func:`check_returnable`: at most 8 files in
   all, 16 MiB each); a network too large for that is refused before the data is unpacked;
1. before that, the bundle's wheels (those ``bundle.json`` lists) are installed when ``lmdb``
   or ``albumentations`` is missing (``pip install --upgrade --target WORK/site``);
2. each source's RecordIO is rebuilt as a raw 144x144 gray LMDB (``build_lmdb``) and its
   teacher embeddings are stored beside it (a later call on the same machine keeps them when
   they were built from the same files, ``WORK/NAME.source.json``, and rebuilds them otherwise);
3. a probe measures the training throughput over one whole epoch, its end included (the
   DataLoader's workers restart and ``last.pt`` is written at every epoch end: on a fast GPU
   with a small corpus that is a sizeable share of an epoch); it times the second epoch,
   ``--probe-steps`` steps into it, since the first one's end also tunes cuDNN for the short
   last batch (on the H200 that made a probe of the first epoch read half the real rate);
   the probe is itself bounded by the minutes: when they run out during it (or fewer than
   :data:`MIN_RUN_SECONDS` are left after it) the probe's backbone is what comes back;
4. the run gets the epochs that fit the minutes left (the learning rate falls by
   ``--lr-gamma`` at 40% and 80% of them, so the schedule ends inside the lease), or
   ``--epochs`` (no probe), with the minutes left as the ``--max-minutes`` backstop;
5. the final backbone goes to ``--out`` as float16 parts under the 16 MiB a returned file may
   hold (``backbone.partK.pt``, plain tensors), beside ``summary.json``, ``metrics.jsonl``,
   ``config.yaml`` and ``curves.png``. A run that breaks (say, the NaN guard) still returns
   the backbone of its last checkpoint (``--save-every``) with the error in ``summary.json``,
   and the command fails; one that breaks before any checkpoint (or before training) still
   writes ``summary.json`` with the error and no parts. A SIGTERM (a time limit) stops
   training (the probe's too) after its current step; the backbone of that step is exported
   (``run.stopped`` in ``summary.json``) and the command exits with status 143.

``--collect`` joins the parts into one project checkpoint (``get_model`` / ``FaceEmbedder`` /
``evaluate_dev --weights`` / ``release_model --checkpoint`` load it). The same command runs on
a CPU (``--device cpu``; the tests do, with a few steps).
"""
import argparse
import hashlib
import importlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from pipelines._argtypes import fraction, non_negative_int, positive_float, positive_int
from pipelines._cli import DefaultsHelpFormatter, run_cli

#: the most bytes of one returned file (the device returns files of at most 16 MiB)
PART_BYTES = 15 << 20
#: what one call sends back: at most this many files from $OUT, of at most 64 MiB together
RETURN_FILES = 8
RETURN_BYTES = 64 << 20
#: room kept, per returned file beside the parts, within RETURN_BYTES
OTHER_FILE_BYTES = 1 << 20
#: files copied from the run folder to --out beside the parts
RUN_FILES = ("metrics.jsonl", "config.yaml", "curves.png")
#: the fewest seconds worth starting a training run for (building it alone takes seconds)
MIN_RUN_SECONDS = 10.0
#: what a diverged run's error advises (in place of the trainer's --clip-grad and --resume)
ADVICE = "Lower --lr or change --amp (bf16, none), then call again: a lent machine keeps nothing to resume from"


def wheel_conflicts(names: Iterable[str]) -> Dict[str, List[str]]:
    """The packages of which the wheel file names ``names`` hold more than one file: {package: [files]}
    (two versions of one package stop pip's whole install)."""
    files: Dict[str, List[str]] = {}
    for name in names:
        files.setdefault(re.sub(r"[-_.]+", "_", Path(name).name.split("-")[0]).lower(), []).append(Path(name).name)
    return {package: sorted(found) for package, found in files.items() if len(found) > 1}


def refuse_wheel_conflicts(names: Iterable[str], where: str, remedy: str) -> None:
    """Raise a RuntimeError when the wheel files ``names`` (of ``where``) hold two versions of one package
    (:func:`wheel_conflicts`), which stops pip's whole install on the device; ``remedy`` says what to do."""
    conflicts = wheel_conflicts(names)
    if conflicts:
        listed = "; ".join(map(", ".join, conflicts.values()))
        raise RuntimeError(f"{where} holds two versions of one package ({listed}), which stops pip's whole "
                           f"install on the device: {remedy}")


def install_wheels(wheels: Sequence[Path], site: Path) -> List[str]:
    """``pip install --upgrade --no-deps --target site`` the wheel files ``wheels`` (replacing the versions an
    earlier call left in ``site``) and put ``site`` first on the path; returns their names.

    Raises:
        RuntimeError: two versions of one package among them, or pip failed (the end of its output is in
            the message).
    """
    refuse_wheel_conflicts(wheels, "the set of wheels to install",
                           "rebuild the bundle (python -m pipelines.device_bundle), which keeps one version of each")
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                           "--no-cache-dir", "--upgrade", "--target", str(site), *map(str, wheels)],
                          capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"pip could not install {len(wheels)} wheels into {site} (exit status {done.returncode}): "
                           f"{(done.stderr or done.stdout).strip()[-2000:]}")
    sys.path.insert(0, str(site))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    importlib.invalidate_caches()
    return [Path(w).name for w in wheels]


def ensure_packages(wheels: Path, site: Path, names: Optional[Sequence[str]] = None) -> List[str]:
    """Install the wheels ``names`` of the folder ``wheels`` (a bundle's ``wheels/``; default: every ``*.whl``
    there) into ``site`` (:func:`install_wheels`) when ``lmdb`` or ``albumentations`` cannot be imported;
    returns the wheels installed ([] when none were needed)."""
    try:
        import albumentations  # noqa: F401
        import lmdb  # noqa: F401
        return []
    except ImportError:
        pass
    found = [wheels / n for n in names] if names else sorted(wheels.glob("*.whl"))
    missing = [w.name for w in found if not w.is_file()]
    if not found or missing:
        raise RuntimeError(f"lmdb / albumentations are missing and {wheels} "
                           f"{'lacks ' + ', '.join(missing) if missing else 'holds no wheels'}; rebuild the device "
                           "bundle (python -m pipelines.device_bundle) without --no-wheels and carry it")
    return install_wheels(found, site)


def _digest(path: Path) -> str:
    """SHA-256 of the file ``path`` (hex)."""
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def unpack(bundle: Path, manifest: Dict[str, Any], work: Path, workers: int) -> List[str]:
    """Raw 144 gray LMDBs ``work/NAME.lmdb`` from the bundle's RecordIO files, teacher embeddings beside them.
    ``work/NAME.source.json`` records the digests of the files each was built from: one built from the same
    files (an earlier call on the same machine) is kept, any other (a re-made bundle) is rebuilt."""
    import numpy as np

    from lightface.data import build_lmdb
    from lightface.distill.teacher import has_teacher_embeddings, save_teacher_embeddings

    paths = []
    teacher = manifest.get("teacher")
    for src in manifest["sources"]:
        out, stamp_path = work / f"{src['name']}.lmdb", work / f"{src['name']}.source.json"
        stamp = {"rec": _digest(bundle / src["rec"]), "teacher": _digest(bundle / src["teacher"]) if teacher else None}
        same = stamp_path.is_file() and json.loads(stamp_path.read_text(encoding="utf-8")) == stamp
        stamp_path.unlink(missing_ok=True)
        build_lmdb(bundle / src["rec"], out, size=144, color="gray", encoding="raw", template="lightcnn_train",
                   source_template="lightcnn_train", workers=workers, resume=same, overwrite=not same,
                   progress=False)
        if teacher and (not same or not has_teacher_embeddings(out, teacher)):
            save_teacher_embeddings(out, np.load(bundle / src["teacher"]).astype(np.float32), teacher)
        stamp_path.write_text(json.dumps(stamp) + "\n", encoding="utf-8")
        paths.append(str(out))
    return paths


def default_dropout(loss: str) -> float:
    """Dropout before the classifier: 0.5 for cross-entropy (the paper's), none before the cosine classifier of
    a margin loss, whose scored direction dropout would change (docs/training.md)."""
    return 0.5 if loss == "ce" else 0.0


def recipe(args: argparse.Namespace, data: List[str], teacher) -> Dict[str, Any]:
    """The TrainConfig fields shared by the probe and the run."""
    return dict(data=data, arch=args.arch, init="kaiming", augment=args.augment, batch_size=args.batch_size, lr=args.lr,
                lr_gamma=args.lr_gamma, clip_grad=5.0, amp=args.amp, device=args.device, workers=args.workers,
                loss=args.loss, margin=args.margin, dropout=default_dropout(args.loss) if args.dropout is None
                else args.dropout, distill=teacher, distill_weight=10.0 if teacher else 1.0,
                distill_relation=args.distill_relation if teacher else 0.0,
                samples_per_identity=args.samples_per_identity, seed=args.seed, log_every=10, save_every=args.save_every,
                tensorboard=False, finetune=args.finetune, classifier_only_epochs=1 if args.finetune else 0)


def epoch_rate(metrics: Path, batch_size: int, skip: int) -> float:
    """Images per second of a probe logged at every step, timed over one whole epoch from step
    ``skip`` into the second epoch to the same step of the third, the second epoch's end included."""
    times: Dict[int, float] = {}
    per_epoch = 0
    for record in map(json.loads, metrics.read_text().splitlines()):
        if "time" in record and "step" in record:
            times.setdefault(int(record["step"]), float(record["time"]))
            if record.get("epoch") == 0:
                per_epoch = max(per_epoch, int(record["step"]))
    start, end = per_epoch + skip, 2 * per_epoch + skip
    if not per_epoch or start not in times or end not in times or times[end] <= times[start]:
        raise RuntimeError(f"{metrics} does not time a whole epoch from step {start} (epoch length {per_epoch}, "
                           f"steps logged {min(times, default=None)}..{max(times, default=None)})")
    return per_epoch * batch_size / (times[end] - times[start])


def _nbytes(t: Any) -> int:
    return t.numel() * t.element_size()


def split_parts(state: Mapping[str, Any], drop: Tuple[str, ...] = (), limit: int = PART_BYTES) -> List[Dict[str, Any]]:
    """The tensors of ``state`` (keys starting with ``drop`` left out), floating ones as float16, packed in order
    into dicts of at most ``limit`` bytes. A tensor larger than a part is cut along its first dimension into
    ``KEY#0``, ``KEY#1``, ... (consecutive rows, filling the room each part has left; :func:`join_parts` joins
    them). Meta tensors give the sizes alone (:func:`check_returnable`).

    Raises:
        ValueError: one row of a tensor is larger than a part.
    """
    import torch

    parts: List[Dict[str, Any]] = [{}]
    size = 0
    for key, t in state.items():
        if key.startswith(drop):
            continue
        t = t.to(torch.float16) if t.is_floating_point() else t
        nbytes = _nbytes(t)
        if size + nbytes > limit and (nbytes <= limit or not t.dim()):  # whole, in a part of its own
            if nbytes > limit:
                raise ValueError(f"{key}: {nbytes / 2**20:.1f} MiB in one value, over the {limit / 2**20:g} MiB "
                                 "of a returned part")
            parts.append({})
            size = 0
        if size + nbytes <= limit:
            parts[-1][key] = t
            size += nbytes
            continue
        row = nbytes // t.shape[0]
        if row > limit:
            raise ValueError(f"{key}: one row of its {tuple(t.shape)} holds {row / 2**20:.1f} MiB, over the "
                             f"{limit / 2**20:g} MiB of a returned part")
        start, k = 0, 0
        while start < t.shape[0]:
            take = min(t.shape[0] - start, (limit - size) // row)
            if not take:
                parts.append({})
                size = 0
                continue
            parts[-1][f"{key}#{k}"] = t[start:start + take]
            start, k, size = start + take, k + 1, size + take * row
    return parts


def check_returnable(network: Any, others: int, remedy: str, drop: Tuple[str, ...] = ()) -> List[int]:
    """Refuse, before training, a network (an ``nn.Module``, on the meta device or not) whose float16 parts
    (:func:`split_parts`), with ``others`` other returned files, would not come back from a call: more than
    :data:`RETURN_FILES` files, or more than :data:`RETURN_BYTES` with :data:`OTHER_FILE_BYTES` kept per other
    file. Returns the parts' sizes in bytes.

    Raises:
        ValueError: it would not come back (``remedy`` says what to change).
    """
    state = network.state_dict()
    sizes = [sum(map(_nbytes, part.values())) for part in split_parts(state, drop)]
    if len(sizes) + others > RETURN_FILES or sum(sizes) + others * OTHER_FILE_BYTES > RETURN_BYTES:
        raise ValueError(
            f"the trained network would not come back: its float16 weights ({sum(sizes) / 2**20:.1f} MiB) make "
            f"{len(sizes)} parts of at most {PART_BYTES >> 20} MiB, and with the run's {others} other files that "
            f"is over the {RETURN_FILES} files ({RETURN_BYTES >> 20} MiB together) a call sends back; {remedy}")
    return sizes


def export_parts(model: Any, out: Path, name: str = "backbone", drop: Tuple[str, ...] = ("classifier.",)) -> List[str]:
    """The network of ``model`` (a checkpoint path, or a ``ModelCheckpoint`` already read; its EMA weights
    when it has them; keys starting with ``drop`` left out) as float16 parts ``out/NAME.partK.pt`` of at
    most :data:`PART_BYTES` each (:func:`split_parts`); returns their names."""
    from lightface.models.checkpoint import read_model_checkpoint
    from lightface.utils.checkpoint_io import save_atomic

    ckpt = read_model_checkpoint(model)
    names = []
    for k, part in enumerate(split_parts(ckpt.ema_state_dict or ckpt.state_dict, drop)):
        names.append(f"{name}.part{k}.pt")
        save_atomic({key: t.clone() for key, t in part.items()}, out / names[-1])  # a slice saves its rows alone
    return names


def join_parts(folder: Path, names: List[str]) -> Dict[str, Any]:
    """The state dict of the parts ``names`` in ``folder`` (from :func:`export_parts`, the rows ``KEY#K`` of a
    tensor cut across parts joined), in float32."""
    import torch

    from lightface.utils.checkpoint_io import load_checkpoint

    state: Dict[str, Any] = {}
    rows: Dict[str, Dict[int, Any]] = {}
    for name in names:
        for key, t in load_checkpoint(folder / name).items():
            base, cut, k = key.rpartition("#")
            if cut and k.isdigit():
                rows.setdefault(base, {})[int(k)] = t
            else:
                state[key] = t
    state.update({key: torch.cat([chunks[k] for k in sorted(chunks)]) for key, chunks in rows.items()})
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def check_budget(args: argparse.Namespace, t0: float, done: str) -> float:
    """The seconds of ``--minutes`` left since ``t0`` (less ``--reserve-seconds``) once ``done`` is done.

    Raises:
        RuntimeError: fewer than :data:`MIN_RUN_SECONDS` are left: nothing would train.
    """
    left = args.minutes * 60 - (time.monotonic() - t0) - args.reserve_seconds
    if left < MIN_RUN_SECONDS:
        raise RuntimeError(f"{done} left {left:.0f} s of --minutes {args.minutes:g} (after --reserve-seconds "
                           f"{args.reserve_seconds:g}): nothing trained; give more --minutes")
    return left


def train_on_device(args: argparse.Namespace) -> Dict[str, Any]:
    """Steps 1-5 of the module docstring; returns (and writes to ``--out``) the summary."""
    t0 = time.monotonic()
    bundle, out, work = Path(args.bundle), Path(args.out), Path(args.work)
    if not (bundle / "bundle.json").is_file():
        raise FileNotFoundError(f"--bundle {bundle}: no bundle.json there; build one with python -m "
                                "pipelines.device_bundle and send it along (docs/training.md, 'Training on a lent GPU')")
    manifest = json.loads((bundle / "bundle.json").read_text())
    out.mkdir(parents=True, exist_ok=True)
    installed = ensure_packages(bundle / "wheels", work / "site", manifest.get("wheels"))
    import torch

    from lightface.engine.lightcnn_trainer import TrainConfig, train
    from lightface.models import get_model

    with torch.device("meta"):
        check_returnable(get_model(args.arch, num_classes=0), 1 + len(RUN_FILES), "train a smaller --arch")

    data = unpack(bundle, manifest, work, args.workers)
    teacher = manifest.get("teacher")
    samples = sum(s["count"] for s in manifest["sources"])

    def seconds_left() -> float:
        return args.minutes * 60 - (time.monotonic() - t0) - args.reserve_seconds

    result = {"arch": args.arch, "samples": samples, "probe_images_per_s": None, "probe_seconds": 0.0,
              "epochs": args.epochs, "wheels_installed": installed, "device": args.device}
    budget = check_budget(args, t0, "unpacking the bundle")
    if not args.epochs:
        # the probe times whole steps (a classifier-only first epoch would time a frozen backbone), logging each
        # one, through the second epoch's end (an epoch is at most ceil(samples / batch) steps, and at least one);
        # it is a run of its own, bounded by the budget and returned like the run when the budget ends in it
        # (or leaves less than MIN_RUN_SECONDS for one)
        probe_dir = work / "probe"
        probe_cfg = {**recipe(args, data, teacher), "log_every": 1, "classifier_only_epochs": 0}
        result = train_and_return(
            lambda: train(TrainConfig(**probe_cfg, out=str(probe_dir), overwrite=True, epochs=args.probe_steps + 3,
                                      max_steps=args.probe_steps + 2 * math.ceil(samples / args.batch_size),
                                      max_minutes=budget / 60, plots=False)),
            probe_dir, out, {**result, "stage": "probe"}, t0, "backbone", advice=ADVICE)
        result["probe_seconds"] = result["run"]["seconds"]
        if str(result["run"]["stopped"]).startswith("max_minutes") or seconds_left() < MIN_RUN_SECONDS:
            print(f"python -m pipelines.device_train: --minutes {args.minutes:g} ran out in the throughput probe; "
                  f"{out} holds the probe's backbone (summary.json: stage probe); give more --minutes, or --epochs N to skip the probe",
                  file=sys.stderr)
            return result
        result["probe_images_per_s"] = epoch_rate(probe_dir / "metrics.jsonl", args.batch_size, args.probe_steps)
    left = seconds_left()
    epochs = args.epochs or max(1, int(result["probe_images_per_s"] * left * 0.92 / samples))
    run_dir = work / "run"
    return train_and_return(
        lambda: train(TrainConfig(**recipe(args, data, teacher), out=str(run_dir), overwrite=True, epochs=epochs,
                                  lr_step=max(1, math.ceil(0.4 * epochs)), max_minutes=left / 60)),
        run_dir, out, {**result, "stage": "run", "epochs": epochs}, t0, "backbone", advice=ADVICE)


def write_summary(out: Path, result: Dict[str, Any]) -> None:
    """``out/summary.json``: ``result`` as indented JSON, written atomically."""
    from lightface.utils.atomic_write import write_text_atomic

    write_text_atomic(out / "summary.json", json.dumps(result, indent=2) + "\n")


def train_and_return(train: Callable[[], Dict[str, Any]], run_dir: Path, out: Path, result: Dict[str, Any],
                     t0: float, name: str, drop: Tuple[str, ...] = ("classifier.",),
                     last_of: Tuple[str, ...] = (), advice: str = ADVICE) -> Dict[str, Any]:
    """Run ``train()`` (a trainer writing to ``run_dir``) and send its network back through ``out``: float16
    parts ``NAME.partK.pt`` (:func:`export_parts`), the run's files, the last file matching each glob of
    ``last_of`` (``samples/*.png`` is sent as ``samples_NAME.png``) and ``summary.json`` (``result`` plus the
    parts, the trained network's architecture and constructor arguments, the seconds since ``t0``, the error
    and the run's summary, or the step of the checkpoint returned). A SIGTERM's ``TrainingInterrupted``
    exports the step it saved and is raised again; any other error exports ``run_dir/last.pt`` and raises
    ``RuntimeError``, or, with no checkpoint to return, writes ``summary.json`` with no parts and raises it
    again. A diverged run's error gives ``advice`` (this command's flags) instead of the trainer's. The
    checkpoint is read once. Returns the summary."""
    from lightface.engine.engine import NonFiniteLossError
    from lightface.engine.stop_signals import TrainingInterrupted

    error, interrupted = None, None
    try:
        summary = train()
        model_path = Path(summary["model"])
    except TrainingInterrupted as stop:  # the time limit's SIGTERM: the step reached was saved, send it back
        interrupted, summary, model_path = stop, stop.summary, Path(stop.summary["model"])
    except Exception as err:  # a lease is not repeatable: return the last good checkpoint and say what broke
        diverged = isinstance(err, NonFiniteLossError) and err.diagnosis
        error, summary, model_path = (f"{type(err).__name__}: {f'{err.diagnosis} {advice}' if diverged else err}",
                                      {}, run_dir / "last.pt")
        if not model_path.is_file():
            write_summary(out, {**result, "parts": [], "seconds": round(time.monotonic() - t0, 1), "error": error})
            if diverged:
                raise NonFiniteLossError(f"{err.diagnosis} {advice}; {out} holds summary.json (no {name})",
                                         err.diagnosis) from None
            raise
    from lightface.models.checkpoint import read_model_checkpoint

    trained = read_model_checkpoint(model_path)
    if not summary:  # the run broke: the step of the checkpoint returned
        summary = {"step": trained.extra.get("step"), "epoch": trained.extra.get("epoch")}
    result = {**result, "parts": export_parts(trained, out, name, drop),
              "network": {"arch": trained.arch, "model_kwargs": trained.model_kwargs, "dropped": list(drop)}}
    for file in RUN_FILES:
        if (run_dir / file).is_file():
            shutil.copy(run_dir / file, out / file)
    for pattern in last_of:
        for last in sorted(run_dir.glob(pattern))[-1:]:
            shutil.copy(last, out / "_".join(last.relative_to(run_dir).parts))
    result.update(seconds=round(time.monotonic() - t0, 1), error=error, exported=model_path.name,
                  run={k: v for k, v in summary.items() if isinstance(v, (int, float, str, type(None)))})
    write_summary(out, result)
    if interrupted is not None:
        raise TrainingInterrupted(interrupted.signal_name, interrupted.summary,
                                  f"{out} holds the {name} of that step and summary.json (nothing to resume)")
    if error:
        raise RuntimeError(f"the run stopped early ({error}); {out} holds the {name} of its last checkpoint "
                           f"({model_path}) and summary.json")
    return result


def read_summary(src: Path) -> Dict[str, Any]:
    """The ``summary.json`` of the returned files in ``src`` (``--collect``).

    Raises:
        FileNotFoundError: no summary.json there.
        ValueError: the run returned no network (its error is in the message).
    """
    if not (src / "summary.json").is_file():
        raise FileNotFoundError(f"--collect {src}: no summary.json there; pass the folder the device run's files "
                                "came back to (the run tool's files_at)")
    info = json.loads((src / "summary.json").read_text())
    if not info.get("parts"):
        raise ValueError(f"--collect {src}: the device run returned no network ({info.get('error')}); "
                         "nothing to join")
    return info


def collect(args: argparse.Namespace) -> Dict[str, Any]:
    """Join the returned parts of ``--collect`` into the project checkpoint ``--checkpoint``."""
    from lightface.models import get_model
    from lightface.models.checkpoint import save_model_checkpoint

    src = Path(args.collect)
    info = read_summary(src)
    model = get_model(info["arch"], num_classes=0)
    model.load_state_dict(join_parts(src, info["parts"]))
    path = save_model_checkpoint(args.checkpoint, model, info["arch"], {"num_classes": 0}, device_run=info)
    return {"checkpoint": str(path), "arch": info["arch"], "epochs": info["epochs"]}


def add_call_arguments(p: argparse.ArgumentParser, work: str) -> argparse.ArgumentParser:
    """The flags every one-call device pipeline has: --out, --work (``work`` says what goes there),
    --minutes, --reserve-seconds, --device, --collect, --checkpoint."""
    p.add_argument("--out", default=None, help="where the results go (the device's $OUT)")
    p.add_argument("--work", default="/tmp/lightface_device", help=f"scratch folder for {work}")
    p.add_argument("--minutes", type=positive_float, default=7.0,
                   help="wall-clock budget of the whole command, the throughput probe included")
    p.add_argument("--reserve-seconds", type=float, default=40.0, help="kept back for the export and the return")
    p.add_argument("--device", default="cuda", help="cuda (a lent GPU) or cpu (a smoke test)")
    p.add_argument("--collect", default=None, metavar="DIR", help="join the parts found in DIR instead of training")
    p.add_argument("--checkpoint", default=None, help="with --collect: the checkpoint to write")
    return p


def run_or_collect(args: argparse.Namespace, train_on_device: Callable[[argparse.Namespace], Dict[str, Any]],
                   collect: Callable[[argparse.Namespace], Dict[str, Any]]) -> Dict[str, Any]:
    """``--collect DIR --checkpoint PATH`` joins returned parts (here); otherwise trains (there, ``--out`` needed;
    an error before ``train_on_device`` wrote ``summary.json`` writes one with the error and no parts, unless
    ``--out`` holds one already: the device's ``$OUT`` starts empty, and an earlier run's here is kept).
    Prints and returns the result."""
    if args.collect:
        if not args.checkpoint:
            raise ValueError("--collect needs --checkpoint PATH (the joined checkpoint to write)")
        result = collect(args)
    else:
        if not args.out:
            raise ValueError("--out is required (on the device: --out $OUT)")
        t0, summary = time.monotonic(), Path(args.out) / "summary.json"
        try:
            result = train_on_device(args)
        except Exception as err:
            if not summary.is_file():
                summary.parent.mkdir(parents=True, exist_ok=True)
                write_summary(summary.parent, {"parts": [], "device": args.device, "error": f"{type(err).__name__}: "
                                               f"{err}", "seconds": round(time.monotonic() - t0, 1)})
            raise
    print(json.dumps(result, indent=2))
    return result


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipelines.device_train", description=__doc__.split("\n\n")[0],
                                formatter_class=DefaultsHelpFormatter)
    add_call_arguments(p, "LMDBs, wheels and runs")
    p.add_argument("--bundle", default=".device/lightcnn", help="the bundle of pipelines.device_bundle")
    p.add_argument("--probe-steps", type=non_negative_int, default=10,
                   help="the throughput probe times one epoch from this step of its second epoch")
    p.add_argument("--epochs", type=positive_int, default=None,
                   help="train this many epochs instead of those the probe fits into --minutes (no probe)")
    p.add_argument("--arch", default="lightcnn29v2", help="lightcnn9, lightcnn29, lightcnn29v2")
    p.add_argument("--finetune", default=None, metavar="CKPT",
                   help="start from this checkpoint of --arch (e.g. the shipped lightface/weights/lightcnn29v2_3src_rc13-"
                        "*.pt) with new heads, one classifier-only epoch first; default: from scratch (kaiming)")
    p.add_argument("--batch-size", type=positive_int, default=256, help="global batch size")
    p.add_argument("--lr", type=float, default=0.01, help="SGD base learning rate")
    p.add_argument("--lr-gamma", type=fraction, default=0.2, help="learning-rate factor at 40%% and 80%% of the epochs")
    p.add_argument("--loss", default="ce", choices=("ce", "cosface", "arcface"),
                   help="classification loss: cross-entropy, or a margin loss (CosFace / ArcFace) on a cosine "
                        "classifier, which pays most when the backbone learns under it from the start "
                        "(docs/training.md)")
    p.add_argument("--margin", type=float, default=None,
                   help="margin of --loss cosface (cosine) / arcface (radians); default: the trainer's (0.35 / 0.5)")
    p.add_argument("--dropout", type=float, default=None,
                   help="dropout before the classifier; default: 0.5 with --loss ce, 0 with a margin loss")
    p.add_argument("--distill-relation", type=float, default=30.0, help="similarity-preserving distillation weight")
    p.add_argument("--samples-per-identity", type=int, default=4, help="photos of one person in a row (0: shuffle)")
    p.add_argument("--augment", default="strong",
                   help="train_lightcnn's --augment: basic, strong, hard (strong, and 40%% of the faces also under a "
                        "hard side light or a large occluder) or hard_face (hard, and 30%% of the faces also wear "
                        "glasses or a face mask or are covered by a hand); the trainer checks the name")
    p.add_argument("--amp", default="bf16", choices=("none", "bf16", "fp16"), help="mixed precision")
    p.add_argument("--workers", type=non_negative_int, default=max(1, min(14, (os.cpu_count() or 2) - 2)),
                   help="data-loading processes")
    p.add_argument("--save-every", type=positive_int, default=500,
                   help="steps between checkpoints (a run that breaks returns its last one)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the weights and the sample order")
    return p


def main(args: argparse.Namespace) -> Dict[str, Any]:
    return run_or_collect(args, train_on_device, collect)


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser))
