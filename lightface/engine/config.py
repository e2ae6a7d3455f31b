"""Experiment configs: one dataclass per trainer is the single source of every setting.

Each field of a trainer's config dataclass is declared once, with :func:`option`: its
type (the annotation), default and help text (field metadata). The command-line flags
(``pipelines/_cli.py`` generates them from the fields: ``--lr-step`` for ``lr_step``),
the YAML keys of ``--config run.yaml`` (the field names, ``lr_step: 10``; the dashed
spelling is accepted too) and the ``config`` stored in checkpoints all come from it.
A field whose type is itself a config dataclass (the GAN objective of the GAN trainers)
is flattened: its fields are flags and YAML keys of their own.

This module holds the parts that need no command line (the library never parses argv)::

    cfg = config_from_dict(TrainConfig, {"data": "casia.lmdb", "out": "runs/x", "lr_step": 10})
    save_config(cfg, Path(cfg.out) / "config.yaml")   # flat YAML, reloadable with --config
    values = load_config("runs/x/config.yaml")        # {} for an empty file
"""
import dataclasses
import difflib
import os
import typing
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Type, TypeVar, Union

import yaml

from ..utils.atomic_write import write_text_atomic

__all__ = ["ConfigError", "option", "Option", "iter_options", "config_from_dict", "config_to_dict", "load_config",
           "save_config", "flag_name", "absolute_if_exists", "absolute_file", "with_absolute_paths"]

PathLike = Union[str, os.PathLike]
C = TypeVar("C")

#: keys that never come from / go to a config file
RESERVED = frozenset({"config", "help"})


class ConfigError(ValueError):
    """A configuration that cannot be used (unreadable YAML, not a mapping, unknown keys, bad values)."""


def option(default: Any = dataclasses.MISSING, *, help: str, default_factory: Any = dataclasses.MISSING,
           choices: Optional[Sequence[Any]] = None, metavar: Optional[str] = None, nargs: Optional[str] = None,
           const: Any = None, required: bool = False, group: Optional[str] = None, flag: Optional[str] = None,
           default_text: Optional[str] = None, path: Union[bool, Callable[[str], str]] = False) -> Any:
    """A config dataclass field with what its command-line flag needs.

    Args:
        default / default_factory: as for :func:`dataclasses.field`.
        help: the flag's help text (the default is appended by the flag generator).
        choices: allowed values (checked for flags, YAML and :func:`config_from_dict`).
        metavar, nargs, const: as for argparse (``nargs="?"`` with ``const`` makes the
            value optional: bare ``--resume`` means ``const``).
        required: the flag (or YAML key) must be given.
        group: the ``--help`` section.
        flag: the flag spelling when not ``--`` + the dashed name (booleans that default
            to True get ``--no-NAME`` automatically).
        default_text: how ``--help`` shows the default (e.g. ``"--lr"`` for a field
            whose None means "same as --lr").
        path: the value names a file or folder: ``config_to_dict(cfg, absolute_paths=True)`` (a
            run's ``OUT/config.yaml``) stores a relative one that exists as an absolute path, so the
            file reloads from any folder. A value that may also be a name (a shipped model, a
            teacher, ``yunet``) gives a function instead of True: text -> what to store, written
            with the rules of the code that reads the value (:func:`absolute_file` for a file or a
            shipped name), so that a file or folder of that name in the current folder does not
            turn the name into a path.
    """
    meta = {"help": help, "choices": tuple(choices) if choices is not None else None, "metavar": metavar,
            "nargs": nargs, "const": const, "required": required, "group": group, "flag": flag,
            "default_text": default_text, "path": path}
    return dataclasses.field(default=default, default_factory=default_factory, metadata={"lightface": meta})


@dataclasses.dataclass(frozen=True)
class Option:
    """One flag / YAML key of a config: ``path`` is the field path (nested configs: two names)."""

    name: str
    path: Tuple[str, ...]
    type: Any  # the element type: bool, int, float, str
    many: bool  # a list of values
    optional: bool  # None allowed
    default: Any
    meta: Mapping[str, Any]

    @property
    def help(self) -> str:
        return self.meta.get("help") or ""


def flag_name(name: str) -> str:
    """``lr_step`` -> ``--lr-step``."""
    return "--" + name.replace("_", "-")


def _unwrap_type(tp: Any) -> Tuple[Any, bool, bool]:
    """(element type, many, optional) of an annotation such as ``Optional[List[str]]``."""
    optional = many = False
    origin = typing.get_origin(tp)
    if origin is Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        optional = len(args) < len(typing.get_args(tp))
        lists = [a for a in args if typing.get_origin(a) in (list, List, tuple, Sequence)]
        if lists:  # Union[str, List[str]]: several values, one accepted as well
            tp, many = lists[0], True
        else:
            tp = args[0]
        origin = typing.get_origin(tp)
    if origin in (list, List, tuple, Sequence) or tp in (list, tuple):
        many = True
        tp = (typing.get_args(tp) or (str,))[0]
    return tp, many, optional


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None


def iter_options(cls: type, _prefix: Tuple[str, ...] = ()) -> Iterator[Option]:
    """Every flag-level option of a config dataclass, nested configs flattened, in declaration order
    (the class's own fields first, then those it inherits, so a shared base comes last in ``--help``)."""
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)
    own = set(cls.__dict__.get("__annotations__", {}))
    for f in sorted(fields, key=lambda f: f.name not in own):  # stable: own fields first
        if not f.init:
            continue
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            yield from iter_options(tp, _prefix + (f.name,))
            continue
        meta = f.metadata.get("lightface")
        if meta is None:
            raise TypeError(f"{cls.__name__}.{f.name} is not declared with lightface.engine.config.option()")
        elem, many, optional = _unwrap_type(tp)
        yield Option(f.name, _prefix + (f.name,), elem, many, optional, _default(f), meta)


def _coerce(opt: Option, value: Any, source: str) -> Any:
    """Check (and convert numbers between int and float for) one value of ``opt``."""
    if value is None:
        if opt.optional or opt.default is None:
            return None
        raise ConfigError(f"{source}: {opt.name} cannot be null (default: {opt.default!r})")
    if opt.many:
        items = list(value) if isinstance(value, (list, tuple)) else [value]
        return [_coerce_one(opt, v, source) for v in items]
    if isinstance(value, (list, tuple)):
        raise ConfigError(f"{source}: {opt.name} takes one value, found a list {list(value)!r}")
    return _coerce_one(opt, value, source)


def _coerce_one(opt: Option, value: Any, source: str) -> Any:
    tp = opt.type
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: {opt.name} is an on/off setting; write true or false, found {value!r}")
    elif tp in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            if isinstance(value, str):
                try:
                    value = tp(value)
                except ValueError:
                    raise ConfigError(f"{source}: {opt.name}: invalid value {value!r} (expects a number)") from None
            else:
                raise ConfigError(f"{source}: {opt.name} expects a number, found {value!r}")
        if tp is int and isinstance(value, float):
            if not value.is_integer():
                raise ConfigError(f"{source}: {opt.name} expects a whole number, found {value!r}")
            value = int(value)
        value = tp(value)
    elif tp is str:
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{source}: {opt.name} expects text, found {value!r}")
        value = str(value)
    choices = opt.meta.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(f"{source}: {opt.name}: {value!r} is not one of {', '.join(map(str, choices))}")
    return value


def unknown_key_error(unknown: Sequence[str], valid: Sequence[str], source: str) -> ConfigError:
    """The error for unknown keys, with the closest valid name for each."""
    hints = []
    for key in unknown:
        close = difflib.get_close_matches(str(key).replace("-", "_"), list(valid), n=1)
        hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return ConfigError(f"{source}: unknown setting(s) {', '.join(hints)}; valid names: {', '.join(sorted(valid))}")


def config_from_dict(cls: Type[C], values: Mapping[str, Any], source: str = "settings") -> C:
    """Build the config dataclass ``cls`` from flat ``{name: value}`` (nested configs' names too).

    Keys may use dashes (``lr-step``); ``config`` (the YAML path of the CLI) is ignored;
    missing keys keep their defaults. Values are checked against the field types and
    choices.

    Raises:
        ConfigError: unknown keys (naming the closest valid ones) or a bad value.
    """
    if not isinstance(values, Mapping):
        raise ConfigError(f"{source}: expected a mapping of setting names to values, found {type(values).__name__}")
    opts = {o.name: o for o in iter_options(cls)}
    flat: Dict[str, Any] = {}
    unknown = []
    for key, value in values.items():
        name = str(key).replace("-", "_")
        if name in RESERVED:
            continue
        if name not in opts:
            unknown.append(str(key))
            continue
        flat[name] = _coerce(opts[name], value, source)
    if unknown:
        raise unknown_key_error(unknown, list(opts), source)
    return _build(cls, flat)


def _build(cls: type, flat: Mapping[str, Any]) -> Any:
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if dataclasses.is_dataclass(hints[f.name]):
            kwargs[f.name] = _build(hints[f.name], flat)
        elif f.name in flat:
            kwargs[f.name] = flat[f.name]
    return cls(**kwargs)


def _plain(value: Any) -> Any:
    """A YAML/JSON- and ``weights_only``-safe version of ``value`` (paths -> str, tuples -> lists)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)


def absolute_if_exists(text: str) -> str:
    """``text`` made absolute when it is a relative path of an existing file or folder, else as it is."""
    if text and not os.path.isabs(text) and os.path.exists(text):
        return os.path.abspath(text)
    return text


def absolute_file(text: str) -> str:
    """``text`` made absolute when it is a relative path of an existing file, else as it is: the
    ``path=`` rule of a setting that is a file or else a shipped model's name (``--finetune``,
    read by :func:`lightface.models.pretrained.file_or_shipped`, which takes only files as paths)."""
    return absolute_if_exists(text) if os.path.isfile(text) else text


def _absolute(value: Any, how: Union[bool, Callable[[str], str]] = True) -> Any:
    """``value`` (a path, or a list of them) as ``config.yaml`` stores it: each relative path that
    exists made absolute (``how=True``), or each item as ``how(text)`` gives it; other values (a file
    not there yet, None) as they are."""
    if isinstance(value, (list, tuple)):
        return [_absolute(v, how) for v in value]
    if isinstance(value, (str, os.PathLike)) and os.fspath(value):
        text = os.fspath(value)
        return how(text) if callable(how) else absolute_if_exists(text)
    return value


def config_to_dict(cfg: Any, absolute_paths: bool = False) -> Dict[str, Any]:
    """A config dataclass (nested configs flattened) or a mapping / namespace as flat plain values.

    ``config`` and ``help`` are left out. The result reloads with :func:`config_from_dict`
    and ``--config``, and is safe to store in a ``weights_only=True`` checkpoint. With
    ``absolute_paths`` (a config dataclass only), the relative paths of the fields declared
    ``option(path=...)`` that name an existing file or folder are written absolute (resolved
    against the current folder; names such as ``dlib`` or a shipped model's as given, see
    :func:`option`), so that the result means the same from any other folder.
    """
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        items: Dict[str, Any] = {}
        for o in iter_options(type(cfg)):
            value = cfg
            for part in o.path:
                value = getattr(value, part)
            items[o.name] = value
        if absolute_paths:
            items = with_absolute_paths(type(cfg), items)
    elif isinstance(cfg, Mapping):
        items = dict(cfg)
    elif hasattr(cfg, "__dict__"):  # an argparse.Namespace (duck-typed: the library does not import argparse)
        items = dict(vars(cfg))
    else:
        raise TypeError(f"config_to_dict expects a config dataclass, a mapping or a namespace, got {type(cfg).__name__}")
    return {str(k): _plain(v) for k, v in items.items() if k not in RESERVED}


def with_absolute_paths(cls: type, values: Mapping[str, Any]) -> Dict[str, Any]:
    """Flat settings of the config dataclass ``cls`` (``{name: value}``, e.g. a checkpoint's ``config``) with
    the relative paths of its ``option(path=...)`` fields made absolute as :func:`config_to_dict` with
    ``absolute_paths`` writes them; other keys as they are. Two runs' settings compare equal this way
    whether a path was stored as typed or absolute (resolved against the current folder)."""
    rules = {o.name: o.meta.get("path") for o in iter_options(cls)}
    return {k: _absolute(v, rules[k]) if rules.get(k) else v for k, v in values.items()}


def load_config(path: PathLike) -> Dict[str, Any]:
    """Read a YAML config file into a flat dict (``{}`` for an empty file).

    Raises:
        ConfigError: the file is missing, is not valid YAML, or is not a mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        with open(path, "r", encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as err:
        reason = " ".join(str(err).split())
        raise ConfigError(f"config file {path} is not valid YAML: {reason}") from err
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"config file {path} cannot be read: {err}") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of flag names to values, found {type(data).__name__}")
    return data


def save_config(cfg: Any, path: PathLike) -> Path:
    """Write a configuration (see :func:`config_to_dict`) as YAML to ``path`` (folders created,
    atomically); returns the path. The file reloads with ``--config path``."""
    return write_text_atomic(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False, default_flow_style=False))
