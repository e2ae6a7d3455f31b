"""Experiment configs: argparse flags that may also come from a YAML file.

One config per experiment: every flag of a pipeline can be written in a YAML file
whose keys are the flags' argparse ``dest`` names (``lr_step: 10`` for ``--lr-step``;
the dashed spelling ``lr-step`` is accepted too). Explicit command-line flags override
the file, the file overrides the parser's defaults, and the resolved configuration is
saved next to the run's outputs with :func:`save_config` so the run can be repeated
with ``--config run_dir/config.yaml``.

Example::

    parser = get_args_parser()              # a plain argparse.ArgumentParser
    args = parse_with_config(parser)        # adds --config, reads YAML, applies flags
    save_config(args, Path(args.out) / "config.yaml")
"""
import argparse
import difflib
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import yaml

__all__ = ["ConfigError", "add_config_argument", "load_config", "parse_with_config", "save_config", "config_to_dict"]

PathLike = Union[str, os.PathLike]

#: dests that never come from / go to a config file
_RESERVED = {"config", "help"}


class ConfigError(ValueError):
    """A YAML config file that cannot be used (unreadable, not a mapping, unknown keys, bad values)."""


def add_config_argument(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``--config PATH`` to ``parser`` unless it already has a ``config`` dest. Returns ``parser``."""
    if not any(action.dest == "config" for action in parser._actions):
        shows_defaults = isinstance(parser.formatter_class, type) and issubclass(
            parser.formatter_class, argparse.ArgumentDefaultsHelpFormatter)
        parser.add_argument(
            "--config",
            default=None,
            metavar="YAML",
            help="YAML file of flag values (keys = flag names with underscores, e.g. lr_step: 10); "
            "flags given on the command line override it" + ("" if shows_defaults else " (default: None)"),
        )
    return parser


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
        raise ConfigError(f"config file {path} is not valid YAML: {err}") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of flag names to values, found {type(data).__name__}")
    return data


def _actions_by_dest(parser: argparse.ArgumentParser) -> Dict[str, argparse.Action]:
    return {a.dest: a for a in parser._actions if a.dest not in _RESERVED and a.dest is not argparse.SUPPRESS}


def _check_value(action: argparse.Action, key: str, value: Any, source: Path) -> Any:
    """Validate (and for strings, type-convert) one YAML value the way argparse treats a flag."""
    if value is None:
        return None
    many = action.nargs in ("*", "+", argparse.REMAINDER) or (isinstance(action.nargs, int) and action.nargs > 0)
    if action.nargs == 0 and isinstance(action.const, bool) and not isinstance(value, bool):
        raise ConfigError(f"{source}: key {key!r} is an on/off flag; write true or false, found {value!r}")
    items = value if isinstance(value, (list, tuple)) else [value]
    if isinstance(value, (list, tuple)) and not many:
        raise ConfigError(f"{source}: key {key!r} takes one value, found a list {value!r}")
    converted = []
    for item in items:
        if isinstance(item, str) and callable(action.type):
            try:
                item = action.type(item)
            except (TypeError, ValueError, argparse.ArgumentTypeError) as err:
                raise ConfigError(f"{source}: key {key!r}: invalid value {item!r} ({err})") from err
        elif callable(action.type) and action.type in (int, float) and not isinstance(item, (int, float)):
            raise ConfigError(f"{source}: key {key!r} expects a number, found {item!r}")
        if action.choices is not None and item not in action.choices:
            choices = ", ".join(map(str, action.choices))
            raise ConfigError(f"{source}: key {key!r}: {item!r} is not one of {choices}")
        converted.append(item)
    if many:
        return converted
    return converted[0]


def parse_with_config(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parse ``argv`` (default ``sys.argv[1:]``) with ``--config run.yaml`` support.

    Precedence: explicit flags > YAML values > parser defaults. YAML keys are argparse
    ``dest`` names (dashes are accepted and mapped to underscores); a flag marked
    ``required=True`` may be given by the YAML file instead. ``--config`` is added to
    ``parser`` if it lacks one.

    Args:
        parser: the pipeline's parser (it is not modified apart from gaining ``--config``).
        argv: the argument list; ``None`` means ``sys.argv[1:]``.

    Returns:
        The resolved ``argparse.Namespace`` (``args.config`` holds the YAML path or None).

    Raises:
        ConfigError: unreadable YAML, unknown keys (with the closest flag names), or a
            value that fails the flag's type / choices.
    """
    add_config_argument(parser)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    known, _ = pre.parse_known_args(argv)
    if known.config is None:
        return parser.parse_args(argv)

    source = Path(known.config)
    raw = load_config(source)
    actions = _actions_by_dest(parser)
    values: Dict[str, Any] = {}
    unknown: List[str] = []
    for key, value in raw.items():
        dest = str(key).replace("-", "_")
        if dest in _RESERVED:
            raise ConfigError(f"{source}: key {key!r} cannot be set from a config file")
        if dest not in actions:
            unknown.append(str(key))
            continue
        values[dest] = _check_value(actions[dest], str(key), value, source)
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key.replace("-", "_"), list(actions), n=1)
            hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ConfigError(
            f"{source}: unknown config key(s) {', '.join(hints)}; valid keys are the flag names "
            f"with underscores: {', '.join(sorted(actions))}"
        )

    # YAML values become the defaults; explicit flags still override them.
    saved_defaults = {dest: actions[dest].default for dest in values}
    saved_required = {dest: actions[dest].required for dest in values}
    try:
        for dest, value in values.items():
            actions[dest].default = value
            actions[dest].required = False
        return parser.parse_args(argv)
    finally:
        for dest, value in saved_defaults.items():
            actions[dest].default = value
            actions[dest].required = saved_required[dest]


def _plain(value: Any) -> Any:
    """A YAML-safe version of ``value`` (paths -> str, tuples -> lists, others -> str)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)


def config_to_dict(args: Union[argparse.Namespace, Dict[str, Any]]) -> Dict[str, Any]:
    """``vars(args)`` as plain YAML/JSON-safe values, without ``config`` (what :func:`save_config` writes).

    The result is also safe to store in a ``weights_only=True`` checkpoint.
    """
    items = vars(args) if isinstance(args, argparse.Namespace) else dict(args)
    return {k: _plain(v) for k, v in items.items() if k not in _RESERVED}


def save_config(args: Union[argparse.Namespace, Dict[str, Any]], path: PathLike) -> Path:
    """Write the resolved configuration as YAML to ``path`` (folders created); returns the path.

    The file reloads with ``--config path`` as long as ``args`` holds only the parser's
    dests (attributes added to ``args`` after parsing would be unknown keys there).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(config_to_dict(args), sort_keys=False, default_flow_style=False)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path
