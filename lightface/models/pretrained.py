"""Trained weights that ship inside the package, as named, hash-checked objects.

Each released set of weights is a :class:`PretrainedWeights` entry of the manifest
``lightface/weights/manifest.json``: the file (in ``lightface/weights/``, its name
carrying the first 8 hex digits of its sha256), the full sha256 checked on every load,
the architecture and its builder kwargs, the preprocessing the model expects, the
training data and recipe, and measured results on named protocols. ``DEFAULT`` aliases
(``recognition``, ``sr4``, ``sr8``, ``frontalization``) point at the entry the
user-facing classes load when no weights are given, and can move to better weights
without breaking callers. ``docs/model_zoo.md`` is generated from the same manifest
(``python -m pipelines.release_model --card``), so the card cannot drift from the code.

Example::

    from lightface.models import get_model, list_pretrained
    list_pretrained()                                  # [{"name": ..., "arch": ..., "sha256": ...}, ...]
    model = get_model("lightcnn29v2", pretrained=True) # the default recogniser, sha256 checked
"""
import difflib
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from ..utils.templates import ALIGN_METHODS

__all__ = [
    "PretrainedWeights",
    "PretrainedError",
    "WeightsNotFoundError",
    "TASKS",
    "WEIGHTS_DIR",
    "MANIFEST",
    "list_pretrained",
    "get_pretrained",
    "sr_alias",
    "DEFAULT_SR_SCALE",
    "file_or_shipped",
    "resolve_weights",
    "default_weights",
    "require_default",
    "sha256_of",
]

#: where shipped weight files and their manifest live
WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
MANIFEST = WEIGHTS_DIR / "manifest.json"
#: the upscaling factor of the shipped super-resolver loaded when none is asked for (WaveletSRNet's own default)
DEFAULT_SR_SCALE = 4
#: what a shipped model does (its manifest ``task``): the values :func:`list_pretrained` filters by
TASKS = ("detection", "frontalization", "recognition", "super_resolution")
#: how to repair a damaged install. Never the bare ``pip install --force-reinstall lightface``: the
#: ``lightface`` on PyPI is another project (0.0.1), which that command installs in place of this one.
REINSTALL_HINT = ("reinstall lightface the way it was installed (a checkout: git checkout -- lightface/weights; "
                  "a wheel: pip install --force-reinstall --no-deps lightface-*.whl; not pip install lightface, "
                  "which gets an unrelated PyPI package of that name)")


class PretrainedError(ValueError):
    """A shipped model that cannot be used: unknown name, missing file, hash mismatch, wrong task."""


class WeightsNotFoundError(PretrainedError, FileNotFoundError):
    """A weights argument that is neither an existing file nor the name of a shipped model (both a
    :class:`PretrainedError` and a ``FileNotFoundError``, what a missing checkpoint raised before)."""


def sha256_of(path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _number(value: Any) -> Optional[float]:
    """A model card's number as a float (None when the card has none)."""
    return float(value) if isinstance(value, (int, float)) else None


@dataclass(frozen=True)
class PretrainedWeights:
    """One shipped set of weights (an entry of ``lightface/weights/manifest.json``).

    Attributes:
        name: unique name, e.g. ``"lightcnn9_lf3src"``.
        arch: the :func:`lightface.models.get_model` name it builds.
        task: one of :data:`TASKS` (``"recognition"``, ``"super_resolution"``, ``"frontalization"``,
            ``"detection"``).
        file: file name inside :data:`WEIGHTS_DIR`.
        sha256: the file's full hex sha256 (checked by :meth:`path`).
        model_kwargs: builder kwargs (e.g. ``{"num_classes": 0}`` or ``{"scale": 4}``).
        preprocessing: what the model expects (size, colour, range, alignment template).
        meta: parameter count, training data and terms, recipe and command, metrics on
            named protocols, ``threshold`` (recognition: cosine threshold calibrated on
            the development pairs), notes.
    """

    name: str
    arch: str
    task: str
    file: str
    sha256: str
    model_kwargs: Dict[str, Any] = field(default_factory=dict)
    preprocessing: Dict[str, Any] = field(default_factory=dict)
    meta: Dict[str, Any] = field(default_factory=dict)

    @property
    def threshold(self) -> Optional[float]:
        """Recognition models: the cosine-similarity threshold of the model card (same person above)."""
        return _number(self.meta.get("threshold"))

    @property
    def identification_threshold(self) -> Optional[float]:
        """Recognition models: the open-set identification threshold of the model card (the
        best gallery match must reach it), calibrated at a stated false-accept rate; None when
        the card has none."""
        return _number(self.meta.get("identification_threshold"))

    @property
    def flip_fusion(self) -> bool:
        """Recognition models: whether the card embeds with flip fusion (the face and its mirror image
        averaged): :class:`lightface.FaceEmbedder`'s default for these weights, and what its thresholds
        were fitted to."""
        return bool(self.meta.get("flip_fusion", False))

    @property
    def align_method(self) -> str:
        """Recognition models: how whole photos are cropped for it, as it was trained
        (:func:`lightface.data.align.align_face`'s ``method``): the ``preprocessing``'s ``align_method``,
        which a release takes from the checkpoint (:func:`lightface.models.checkpoint.checkpoint_align_method`),
        ``"similarity"`` for entries released before it."""
        method = self.preprocessing.get("align_method")
        return method if method in ALIGN_METHODS else "similarity"

    def thresholds(self, flip: bool) -> Tuple[Optional[float], Optional[float]]:
        """Recognition models: the card's ``(verification, identification)`` thresholds for embeddings made
        with flip fusion on or off: its own ones, or those of its ``without_flip`` entry when the card
        flips and ``flip`` is False (None where the card has none)."""
        other = self.meta.get("without_flip") if self.flip_fusion and not flip else None
        source = other if isinstance(other, dict) else self.meta
        return _number(source.get("threshold")), _number(source.get("identification_threshold"))

    def path(self, verify: bool = True) -> Path:
        """The weight file, after checking that it exists and (``verify``) matches its sha256.

        Raises:
            PretrainedError: the file is missing or its hash differs (a damaged install).
        """
        path = WEIGHTS_DIR / self.file
        if not path.is_file():
            raise PretrainedError(f"shipped weights {self.name!r}: {path} is missing; {REINSTALL_HINT}, "
                                  "or pass weights= explicitly")
        if verify:
            digest = sha256_of(path)
            if digest != self.sha256:
                raise PretrainedError(f"shipped weights {self.name!r}: {path} has sha256 {digest}, expected "
                                      f"{self.sha256}; the file is damaged: {REINSTALL_HINT}")
        return path

    def transforms(self) -> Dict[str, Any]:
        """The preprocessing the model expects (a dict: size, colour order, value range, alignment)."""
        return dict(self.preprocessing)

    def summary(self) -> Dict[str, Any]:
        """One row of :func:`list_pretrained`: name, arch and its builder kwargs (a super-resolver's
        ``scale``), task, size, sha256, data and results."""
        path = WEIGHTS_DIR / self.file
        return {
            "name": self.name, "arch": self.arch, "model_kwargs": dict(self.model_kwargs), "task": self.task,
            "file": self.file,
            "size_mb": round(path.stat().st_size / 2**20, 2) if path.is_file() else None,
            "sha256": self.sha256, "params": self.meta.get("params"), "data": self.meta.get("data"),
            "metrics": self.meta.get("metrics", {}), "threshold": self.threshold,
            "default_for": [alias for alias, name in _aliases().items() if name == self.name],
        }


def _read_manifest() -> Dict[str, Any]:
    if not MANIFEST.is_file():
        return {"weights": [], "defaults": {}}
    try:
        data = json.loads(MANIFEST.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise PretrainedError(f"{MANIFEST} is not valid JSON ({err}); {REINSTALL_HINT}") from err
    data.setdefault("weights", [])
    data.setdefault("defaults", {})
    return data


def _entries() -> Dict[str, PretrainedWeights]:
    return {w["name"]: PretrainedWeights(**w) for w in _read_manifest()["weights"]}


def _aliases() -> Dict[str, str]:
    return dict(_read_manifest()["defaults"])


def _choices(names) -> str:
    """``names`` sorted and comma-separated (``"none"`` when empty), for the messages that list what exists."""
    return ", ".join(sorted(names)) or "none"


def list_pretrained(task: Optional[str] = None) -> List[Dict[str, Any]]:
    """Every shipped model (optionally of one ``task``) as summary dicts (see :meth:`PretrainedWeights.summary`).

    Raises:
        PretrainedError: ``task`` is not one of :data:`TASKS` (a typo would otherwise list nothing).
    """
    if task is not None and task not in TASKS:
        raise PretrainedError(f"unknown task {task!r} (tasks: {_choices(TASKS)}); pass one of them, or none to list "
                              "every shipped model")
    return [w.summary() for w in _entries().values() if task is None or w.task == task]


def sr_alias(scale: Optional[int] = None) -> str:
    """The default alias of the shipped ``scale``x super-resolver: ``"sr4"``, ``"sr8"``
    (None: :data:`DEFAULT_SR_SCALE`)."""
    return f"sr{scale or DEFAULT_SR_SCALE}"


def _has_scale(entry: PretrainedWeights, scale: Optional[int]) -> bool:
    """Whether ``entry`` upscales by ``scale`` (always for None, and for a model without a ``scale``)."""
    return scale is None or entry.model_kwargs.get("scale", scale) == scale


def _arch_default(arch: str, entries: List[PretrainedWeights], aliases: Dict[str, str],
                  scale: Optional[int]) -> PretrainedWeights:
    """The entry an architecture name means: among its ``entries`` that upscale by ``scale``, the
    :func:`sr_alias` default, else another default, else the first."""
    fits = [w for w in entries if _has_scale(w, scale)]
    if not fits:
        shipped = ", ".join(map(str, sorted({w.model_kwargs["scale"] for w in entries})))
        raise PretrainedError(f"no {arch} weights ship for scale={scale} (shipped scales: {shipped}); train one with "
                              f"python -m pipelines.train_super_resolution --scale {scale} and pass weights=PATH")
    defaults = [w for w in fits if w.name in aliases.values()]
    return next((w for w in defaults if w.name == aliases.get(sr_alias(scale))), (defaults or fits)[0])


def get_pretrained(name: str, scale: Optional[int] = None) -> PretrainedWeights:
    """A shipped entry by its name, by a default alias (``recognition``, ``sr4``, ``sr8``,
    ``frontalization``) or by architecture (its default entry, e.g. ``lightcnn29v2``).

    Args:
        scale: the upscaling factor wanted of a super-resolver. With an architecture it picks that
            factor's default (:func:`sr_alias`: ``get_pretrained("wavelet_srnet")`` is the 4x
            default, ``scale=8`` the 8x one, as for :class:`lightface.SuperResolver`); with a name
            or an alias it must be the entry's own. Ignored for models without a ``scale``.

    Raises:
        PretrainedError: nothing ships under that name (or for that ``scale``), with what does (for an
            architecture lightface builds but ships no weights for, such as ``lightcnn9``: how to load its own).
    """
    entries, aliases = _entries(), _aliases()
    entry = entries.get(name) or entries.get(aliases.get(name, ""))
    if entry is not None:
        if not _has_scale(entry, scale):
            raise PretrainedError(f"shipped weights {entry.name!r} are a {entry.model_kwargs['scale']}x model, not "
                                  f"scale={scale}; get_model({entry.arch!r}, pretrained=True, scale={scale}) loads "
                                  f"the shipped {scale}x default")
        return entry
    by_arch = [w for w in entries.values() if w.arch == name]
    if by_arch:
        return _arch_default(name, by_arch, aliases, scale)
    available = sorted(entries) + sorted(aliases)
    from .registry import MODEL_BUILDERS

    if name in MODEL_BUILDERS:  # an architecture lightface builds but ships no weights for
        shipped = sorted({w.arch for w in entries.values() if w.arch in MODEL_BUILDERS})
        raise PretrainedError(
            f"no weights ship for the architecture {name!r} (shipped architectures: {', '.join(shipped) or 'none'}; "
            f"names: {', '.join(available)}); load a checkpoint of your own or an official one with "
            f"get_model({name!r}, weights=PATH) or FaceEmbedder(weights=PATH, arch={name!r})")
    raise PretrainedError(f"no shipped weights named {name!r}; available: {', '.join(available) or 'none'}")


def _shipped_names(task: Optional[str]) -> Tuple[List[str], List[str]]:
    """``(names, aliases)`` of the shipped models of ``task`` (every task for None), sorted."""
    entries, aliases = _entries(), _aliases()
    names = sorted(n for n, w in entries.items() if task is None or w.task == task)
    return names, sorted(a for a, n in aliases.items() if n in names)


def _given(what: str, spec: str) -> str:
    """``"WHAT SPEC"`` (``SPEC`` alone for no ``what``): how the messages of :func:`resolve_weights` start."""
    return f"{what} {spec}" if what else str(spec)


def _unknown_weights(spec: str, task: Optional[str], what: str) -> WeightsNotFoundError:
    """The error for ``spec`` naming neither a file nor a shipped model: what was given, the close shipped
    names (difflib) and the shipped names of ``task``."""
    names, aliases = _shipped_names(task)
    every = _entries()
    known = sorted(every) + sorted(_aliases()) + sorted({w.arch for w in every.values()})  # a typo of any task
    base = os.path.basename(spec.rstrip("/\\")) or spec
    close = difflib.get_close_matches(base, known, n=3, cutoff=0.6)
    kind = f"{task} model" if task else "model"
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return WeightsNotFoundError(
        f"{_given(what, spec)}: no such file, nor a shipped {kind}{hint} (shipped {kind}s: {_choices(names)}; aliases: "
        f"{_choices(aliases)}); pass a checkpoint file or one of these shipped names "
        "(lightface.models.list_pretrained())")


def resolve_weights(weights: Any, task: Optional[str] = None, what: str = "weights",
                    scale: Optional[int] = None) -> Optional[PretrainedWeights]:
    """How every API and CLI reads a weights argument (``weights=``, ``--weights``, ``--finetune``,
    ``--identity-weights``): the shipped entry it means, or None for weights the caller loads itself.

    * an existing file: the shipped entry whose file it is (so that it gets its model card), else None;
    * an existing folder, an ``nn.Module``, a dict, None: None (the loader takes or refuses them);
    * any other string: the shipped model of that name, default alias (``recognition``, ``sr4`` ...)
      or architecture (:func:`get_pretrained`, ``scale`` as there).

    Args:
        task: the task the model must have (one of :data:`TASKS`; None: any).
        what: the argument, for messages (``"--weights"``, ``"SuperResolver(): weights"``; ``""``: none).
    Raises:
        WeightsNotFoundError: a string (or path) that is no file and no shipped name; the message lists
            the close shipped names and those of ``task``.
        PretrainedError: a shipped model (by name or by its file's path) of another task, or an
            architecture that ships no weights.
    """
    if weights is None or not isinstance(weights, (str, os.PathLike)):
        return None
    text = os.fspath(weights)
    if os.path.exists(text):
        if not os.path.isfile(text):
            return None
        entry = manifest_entry_for_path(text)
        if entry is None:
            return None
    elif not isinstance(weights, str):
        raise _unknown_weights(text, task, what)
    else:
        from .registry import MODEL_BUILDERS

        try:
            entry = get_pretrained(text, scale=scale)
        except PretrainedError as err:
            if text in _entries() or text in _aliases() or text.lower() in MODEL_BUILDERS:
                # a known name that cannot be used as asked (an architecture that ships nothing, another scale)
                raise PretrainedError(f"{_given(what, text)}: {err}") from None
            raise _unknown_weights(text, task, what) from None
    if task is not None and entry.task != task:
        names, _ = _shipped_names(task)
        raise PretrainedError(f"{_given(what, text)}: the shipped {entry.name!r} is a {entry.task} model, not {task}; "
                              f"shipped {task} models: {_choices(names)} (lightface.models.list_pretrained({task!r}))")
    return entry


def file_or_shipped(spec: str, flag: str = "--finetune", task: Optional[str] = None) -> str:
    """``spec`` itself when it is a file, else the path of the shipped entry it names (:func:`resolve_weights`:
    name, alias or architecture; sha256-checked): what a trainer's ``--finetune`` starts from.

    Raises:
        PretrainedError: neither a file nor a shipped name (:class:`WeightsNotFoundError`: the message lists
            the close shipped names and what ships), or a shipped model of another ``task``.
    """
    if Path(spec).is_file():
        return str(spec)
    entry = resolve_weights(spec, task, flag)
    if entry is None:  # an existing folder (a training run's OUT)
        from ..utils.checkpoint_io import folder_message

        raise PretrainedError(f"{flag} {spec}: {folder_message(spec)}")
    return str(entry.path())


def default_weights(alias: str) -> PretrainedWeights:
    """The entry a user-facing class loads with no weights: ``recognition``, ``sr4``, ``sr8``, ``frontalization``."""
    aliases = _aliases()
    if alias not in aliases:
        raise PretrainedError(f"no default shipped model for {alias!r} in this install (defaults: "
                              f"{_choices(aliases)}); pass weights= explicitly")
    return get_pretrained(aliases[alias])


def require_default(alias: str, task: str, what: str, hint: str) -> PretrainedWeights:
    """The shipped default for ``alias`` (sha256 not checked yet: :meth:`PretrainedWeights.path` does),
    or a :class:`PretrainedError` that says nothing ships and what to pass instead.

    Args:
        alias: ``sr4``, ``sr8``, ``frontalization``, ``recognition``.
        task: the task the entry must have (a wrong manifest is refused, not loaded).
        what: the caller and the model it wanted, for the message (``"SuperResolver(scale=8)"``).
        hint: what to pass instead (``"weights= a model.pth from python -m pipelines.train_super_resolution"``).
    """
    try:
        entry = default_weights(alias)
    except PretrainedError:
        shipped = [w["name"] for w in list_pretrained(task)]
        raise PretrainedError(
            f"{what}: no default {alias!r} model ships with this lightface install ({MANIFEST.name} lists "
            f"{', '.join(shipped) or 'no ' + task + ' model'}); pass {hint}") from None
    if entry.task != task:
        raise PretrainedError(f"{what}: the shipped default {alias!r} is {entry.name!r}, a {entry.task} model, "
                              f"not {task}; reinstall lightface or pass {hint}")
    return entry


def manifest_entry_for_path(path: os.PathLike) -> Optional[PretrainedWeights]:
    """The shipped entry whose file is ``path`` (or None)."""
    path = Path(path).resolve()
    for w in _entries().values():
        if (WEIGHTS_DIR / w.file).resolve() == path:
            return w
    return None
