"""Turn a training checkpoint into shipped weights, and the manifest into the model card.

:func:`release_weights` writes a backbone-only, float16 project checkpoint into
``lightface/weights/`` (the name carries the first 8 hex digits of its sha256, like
torchvision's files), records it in ``manifest.json`` with its meta and, optionally,
makes it the default for an alias. :func:`render_model_card` renders
``docs/model_zoo.md`` from the manifest. ``python -m pipelines.release_model`` is the CLI.
"""
import json
import os
import re
from typing import Any, Dict, Optional, Sequence

import torch

from ..utils.atomic_write import write_text_atomic
from .checkpoint import checkpoint_align_method, read_model_checkpoint, save_model_checkpoint
from . import pretrained as _pt
from .pretrained import PretrainedError, PretrainedWeights, _read_manifest, sha256_of

__all__ = ["ReleaseRefused", "release_weights", "update_card_facts", "render_model_card", "MAX_SHIPPED_MB", "ALIAS_TASKS"]


class ReleaseRefused(ValueError):
    """A release that would ship outside ``lightface/weights/`` or break a default alias; nothing was
    written (``python -m pipelines.release_model`` exits 2 with the message)."""


#: the size limit of one shipped file
MAX_SHIPPED_MB = 25.0

#: the tasks a checkpoint is released for: every shipped task but detection (detectors ship as ONNX files as they are)
TASKS = tuple(t for t in _pt.TASKS if t != "detection")

#: the default aliases a release may point at its entry, with the task of the model each one loads
ALIAS_TASKS = {"recognition": "recognition", "sr4": "super_resolution", "sr8": "super_resolution",
               "frontalization": "frontalization"}

#: a shipped entry's name: it becomes a file name inside lightface/weights/ (no folders, no leading dot)
NAME_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def _write_manifest(data: Dict[str, Any]) -> None:
    # _pt.MANIFEST is looked up at call time: tests point it at a temporary folder
    write_text_atomic(_pt.MANIFEST, json.dumps(data, indent=2, sort_keys=False) + "\n")


def release_weights(checkpoint, name: str, task: str, meta: Optional[Dict[str, Any]] = None,
                    preprocessing: Optional[Dict[str, Any]] = None, default_for: Sequence[str] = (),
                    ema: bool = False) -> PretrainedWeights:
    """Ship ``checkpoint`` as ``name``: float16, backbone only, sha256 in the file name and the manifest.

    Args:
        checkpoint: a project checkpoint (``train_*`` output) or an official Light CNN file.
        name: the entry's name (a new release under an existing name replaces it and its file).
        task: one of ``recognition``, ``super_resolution``, ``frontalization``.
        meta: data, recipe, command, metrics, threshold, ... (JSON-safe).
        preprocessing: what the model expects (size, colour, range, template). A recogniser's gets
            ``align_method``, the crops it was trained on
            (:func:`~lightface.models.checkpoint.checkpoint_align_method`), also stored in the file.
        default_for: aliases to point at this entry (``recognition``, ``sr4``, ``sr8``, ``frontalization``).
        ema: ship the EMA weights of the checkpoint instead of the raw ones.
    Returns:
        the new :class:`PretrainedWeights`.
    Raises:
        ReleaseRefused: a name that is not a plain file name, a checkpoint whose architecture does another
            task, a ``default_for`` alias that is unknown or loads another task (or another SR scale), or a
            ``preprocessing`` ``align_method`` other than the one the recogniser was trained on.
        ValueError: unknown task, no EMA weights, non-finite weights, a file over :data:`MAX_SHIPPED_MB`, or a
            generator conditioned on a recogniser that does not ship.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    ckpt = read_model_checkpoint(checkpoint)
    if ckpt.arch is None:
        raise ValueError(f"{checkpoint}: cannot tell the architecture of this checkpoint")
    _check_release(checkpoint, name, task, ckpt.arch, ckpt.model_kwargs, default_for)
    state = ckpt.ema_state_dict if ema else ckpt.state_dict
    if state is None:
        raise ValueError(f"{checkpoint}: holds no EMA weights; release without --ema")
    kwargs = dict(ckpt.model_kwargs)
    condition = kwargs.get("condition_network")
    if condition is not None:  # a conditioned generator loads this recogniser at inference: it must ship too
        try:
            _pt.get_pretrained(condition)
        except PretrainedError as err:
            raise ValueError(f"{checkpoint}: the generator is conditioned on {condition}, which does not ship "
                             f"({err}); train it with a shipped recogniser (--identity-weights unset or a shipped "
                             "name) so that the released model works on a fresh install") from err
    preprocessing = dict(preprocessing or {})
    trained_on = {}
    if task == "recognition":  # backbone only: the classifier is specific to the training classes
        state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
        kwargs["num_classes"] = 0
        # how its training faces were cropped, kept in the file (FaceEmbedder's align_method="auto") and on the card
        method = checkpoint_align_method(ckpt)
        given = preprocessing.get("align_method")
        if given is not None and given != method:
            raise ReleaseRefused(f"--meta preprocessing says \"align_method\": {given!r}, but {checkpoint} was trained "
                                 f"on {method!r} crops (its training LMDBs' --align-method); a released recogniser "
                                 "must crop faces as in training: fix the meta")
        preprocessing["align_method"] = trained_on["align_method"] = method
    half = {}
    for k, v in state.items():
        if not torch.isfinite(v.float()).all():
            raise ValueError(f"{checkpoint}: weight {k} holds NaN/inf; refusing to ship it")
        half[k] = v.half() if v.is_floating_point() else v
    from .registry import get_model

    model = get_model(ckpt.arch, **kwargs)
    model.load_state_dict(half)  # all or nothing: the shipped state rebuilds the architecture exactly
    params = sum(p.numel() for p in model.parameters())
    weights_dir = _pt.WEIGHTS_DIR
    weights_dir.mkdir(parents=True, exist_ok=True)
    tmp = weights_dir / f".{name}.pt.tmp"
    save_model_checkpoint(tmp, model.half(), ckpt.arch, kwargs, pretrained_name=name,
                          verification_threshold=(meta or {}).get("threshold"), **trained_on)
    size_mb = tmp.stat().st_size / 2**20
    if size_mb > MAX_SHIPPED_MB:
        tmp.unlink()
        raise ValueError(f"{name}: {size_mb:.1f} MB is over the {MAX_SHIPPED_MB:g} MB limit of a shipped model")
    digest = sha256_of(tmp)
    final = weights_dir / f"{name}-{digest[:8]}.pt"
    os.replace(tmp, final)
    entry = PretrainedWeights(name=name, arch=ckpt.arch, task=task, file=final.name, sha256=digest,
                              model_kwargs=kwargs, preprocessing=preprocessing,
                              meta={"params": params, **(meta or {})})
    data = _read_manifest()
    old = [w for w in data["weights"] if w["name"] == name]
    _put_entry(data, entry.__dict__)
    for alias in default_for:
        data["defaults"][alias] = name
    _write_manifest(data)
    for w in old:
        if w["file"] != final.name and (weights_dir / w["file"]).is_file():
            (weights_dir / w["file"]).unlink()
    return entry


def _check_release(checkpoint, name: str, task: str, arch: str, kwargs: Dict[str, Any],
                   default_for: Sequence[str]) -> None:
    """Refuse (:class:`ReleaseRefused`) a release that would ship outside ``lightface/weights/`` or break a
    default: ``name`` must match :data:`NAME_PATTERN`, ``arch`` must be registered for ``task``, and every
    alias of ``default_for`` must load this task (``sr4``/``sr8``: the model's own scale)."""
    from .registry import MODEL_TASKS, list_models

    if not NAME_PATTERN.fullmatch(name):
        raise ReleaseRefused(f"--name {name!r}: a shipped name becomes a file name in lightface/weights/; use letters, "
                          "digits, '_', '-' and '.' only (no '/', no leading '.')")
    if MODEL_TASKS.get(arch) != task:
        raise ReleaseRefused(f"{checkpoint}: a {arch} checkpoint ({MODEL_TASKS.get(arch) or 'unknown'} task), not a "
                          f"{task} model; --task {task} ships {', '.join(list_models(task))}")
    for alias in default_for:
        if alias not in ALIAS_TASKS:
            raise ReleaseRefused(f"--default {alias}: not a default alias; use one of {', '.join(ALIAS_TASKS)}")
        if ALIAS_TASKS[alias] != task:
            raise ReleaseRefused(f"--default {alias}: that alias loads a {ALIAS_TASKS[alias]} model, not {task}")
        if task == "super_resolution" and alias != _pt.sr_alias(kwargs.get("scale")):
            raise ReleaseRefused(f"--default {alias}: the model upscales {kwargs.get('scale', _pt.DEFAULT_SR_SCALE)}x; "
                              f"its alias is {_pt.sr_alias(kwargs.get('scale'))}")


def _put_entry(data: Dict[str, Any], entry: Dict[str, Any]) -> None:
    """Replace the manifest entry of ``entry["name"]`` where it stands (the card keeps its order), else append."""
    names = [w["name"] for w in data["weights"]]
    if entry["name"] in names:
        data["weights"][names.index(entry["name"])] = entry
    else:
        data["weights"].append(entry)


def update_card_facts(name: str, meta: Dict[str, Any], preprocessing: Optional[Dict[str, Any]] = None) -> PretrainedWeights:
    """Replace the model-card facts of the shipped entry ``name`` without re-releasing its weights.

    The release meta (``release/<name>.json``) is where card facts are edited; this copies
    them into ``manifest.json`` so the two never drift apart. The weights file, its sha256,
    its measured parameter count and the verification threshold stored inside the file stay
    as released: a changed ``threshold`` needs a new release.

    Args:
        name: a shipped entry's name.
        meta: the new facts (summary, data, terms, recipe, commands, metrics, notes, ...).
        preprocessing: the new input description; None keeps the entry's.
    Returns:
        the updated :class:`PretrainedWeights`.
    Raises:
        KeyError: no entry of that name.
        ValueError: the meta changes the threshold or the ``align_method`` stored in the weights file.
    """
    data = _read_manifest()
    found = [w for w in data["weights"] if w["name"] == name]
    if not found:
        raise KeyError(f"no shipped model named {name!r} in {_pt.MANIFEST}; known: "
                       f"{[w['name'] for w in data['weights']]} (release it with --checkpoint first)")
    old = PretrainedWeights(**found[0])
    if meta.get("threshold") != old.meta.get("threshold"):
        raise ValueError(f"{name}: the meta changes the verification threshold ({old.meta.get('threshold')} -> "
                         f"{meta.get('threshold')}), which is stored inside {old.file}; release the checkpoint again "
                         "(--checkpoint) to change it")
    pre = dict(old.preprocessing if preprocessing is None else preprocessing)
    if pre.get("align_method", old.align_method) != old.align_method:  # the crops the weights were trained on
        raise ValueError(f"{name}: the preprocessing changes align_method ({old.align_method!r} -> "
                         f"{pre['align_method']!r}), the crops the weights in {old.file} were trained on; train "
                         "and release another model to change it")
    if "align_method" in old.preprocessing:  # written by release_weights (and into the file): kept
        pre["align_method"] = old.align_method
    measured = {"params": old.meta["params"]} if "params" in old.meta else {}
    entry = PretrainedWeights(**{**old.__dict__, "meta": {**measured, **meta}, "preprocessing": pre})
    _put_entry(data, entry.__dict__)
    _write_manifest(data)
    return entry


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def render_model_card(intro: str = "") -> str:
    """``docs/model_zoo.md`` from the manifest: a summary table, then one section per shipped model."""
    data = _read_manifest()
    lines = ["# Model zoo", "",
             "Generated by `python -m pipelines.release_model --card` from `lightface/weights/manifest.json`; "
             "do not edit by hand (edit the release meta instead).", ""]
    if intro:
        lines += [intro.strip(), ""]
    lines += ["| name | arch | task | default for | size (MB) | params | sha256 |", "|---|---|---|---|---|---|---|"]
    entries = [PretrainedWeights(**w) for w in data["weights"]]
    for w in entries:
        s = w.summary()
        params = f"{s['params']:,}" if isinstance(s["params"], int) else "-"
        lines.append(f"| `{w.name}` | {w.arch} | {w.task} | {', '.join(s['default_for']) or '-'} | {s['size_mb']} | "
                     f"{params} | `{w.sha256[:16]}...` |")
    for w in entries:
        m = w.meta
        lines += ["", f"## `{w.name}`", ""]
        if m.get("summary"):
            lines += [m["summary"], ""]
        lines += [f"- architecture: `{w.arch}` {json.dumps(w.model_kwargs)}; file `lightface/weights/{w.file}`",
                  f"- input: {json.dumps(w.preprocessing)}"]
        if w.threshold is not None:
            lines.append(f"- verification threshold (cosine): {w.threshold:.4f}")
        if w.identification_threshold is not None:
            lines.append(f"- open-set identification threshold (cosine, FaceGallery.identify's default): "
                         f"{w.identification_threshold:.4f}")
        for key in ("data", "terms", "recipe"):
            if m.get(key):
                lines.append(f"- {key}: {m[key]}")
        if m.get("commands"):
            lines += ["", "Commands:", "", "```bash", *m["commands"], "```"]
        if m.get("metrics"):
            lines += ["", "| protocol | metric | value |", "|---|---|---|"]
            for protocol, values in m["metrics"].items():
                for metric, value in values.items():
                    lines.append(f"| {protocol} | {metric} | {_fmt(value)} |")
        if m.get("reference"):
            lines += ["", "For comparison (published or measured elsewhere, not this model):", "",
                      "| model | protocol | value |", "|---|---|---|"]
            for row in m["reference"]:
                lines.append(f"| {row['model']} | {row['protocol']} | {row['value']} |")
        if m.get("curves"):
            lines += ["", f"![training curves]({m['curves']})"]
        if m.get("notes"):
            lines += ["", *[f"- {n}" for n in m["notes"]]]
    return "\n".join(lines) + "\n"
