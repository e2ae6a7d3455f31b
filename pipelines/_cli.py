"""Command-line plumbing shared by the pipelines: flags generated from config dataclasses,
``--config YAML`` files, one-line error messages, and the ``--help`` formatter
(:class:`DefaultsHelpFormatter`).

The library never parses argv: a trainer's config dataclass
(:mod:`lightface.engine.config`) declares every setting once, and :func:`add_options`
turns its fields into argparse flags here::

    parser = argparse.ArgumentParser(...)
    add_options(parser, TrainConfig)                  # --lr, --lr-step, --no-flip, ...
    args = parse_with_config(parser, argv)            # + --config run.yaml
    cfg = options_from_args(TrainConfig, args)        # the dataclass again

``python -m pipelines.NAME`` entry points end with ``sys.exit(run_cli(main, get_args_parser))``,
which prints ``NAME: error: <what went wrong>`` instead of a traceback for the errors a
user can fix (bad flags or YAML, missing files, unusable checkpoints, a refused run
folder), a Ctrl-C as one line saying how to continue, and returns the exit status.
"""
import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Type, TypeVar

from lightface.engine.config import RESERVED, ConfigError, Option, config_from_dict, flag_name, iter_options, load_config
from lightface.engine.config import unknown_key_error
from lightface.engine.stop_signals import TrainingInterrupted

__all__ = ["add_options", "options_from_args", "add_gan_arguments", "trainer_parser", "add_config_argument", "parse_with_config", "run_cli", "USER_ERRORS",
           "DefaultsHelpFormatter", "NULLABLE", "RERUN_HINT", "RESUME_FLAG_HINT", "interrupted", "Terminated",
           "sigterm_as_interrupt"]

log = logging.getLogger("pipelines")
C = TypeVar("C")
#: attribute :func:`add_options` sets on a flag whose field takes None (``Optional[...]``): YAML ``null`` allowed
#: (a pipeline sets it on a flag of its own whose type takes ``none``: ``--rescue-threshold``)
NULLABLE = "lightface_nullable"
_NOT_GIVEN = object()

#: exceptions :func:`run_cli` reports as one line (everything else keeps its traceback)
USER_ERRORS = (ConfigError, ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, PermissionError,
               RuntimeError, OSError)

#: what :func:`run_cli` says after a Ctrl-C in a pipeline with a ``--resume`` flag (the trainers)
RESUME_FLAG_HINT = "run the same command with --resume to continue where it stopped"
#: the ``interrupted_hint`` of a pipeline that journals its progress: the same command skips the work done
RERUN_HINT = "run the same command again to continue where it stopped"
#: the hint of every other pipeline: some resume (their --help says so), others start over
_GENERIC_HINT = "run the same command again to finish (a pipeline whose --help says it resumes skips the work done)"


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` with each value option's default appended, but not a switch's: the stored value of
    ``--no-merge`` (``store_false``) shows as ``(default: True)``, which reads as "skipped by default",
    and ``store_true`` flags would all say ``(default: False)``. The pipelines' ``formatter_class``."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.nargs == 0:  # a switch: store_true / store_false / store_const, no value to show
            return action.help or ""
        return super()._get_help_string(action)


# ---------------------------------------------------------------------------------------
# flags from dataclass fields
# ---------------------------------------------------------------------------------------
def _shown_default(opt: Option) -> str:
    text = opt.meta.get("default_text")
    if text is not None:
        return text
    if opt.meta.get("required"):
        return "required"
    if opt.type is bool and not opt.many:
        return "on" if opt.default else "off"
    if isinstance(opt.default, (list, tuple)):
        return " ".join(map(str, opt.default)) or "none"
    return str(opt.default)


def add_options(parser: argparse.ArgumentParser, cls: type, hidden: Sequence[str] = ()) -> argparse.ArgumentParser:
    """Add one flag per field of the config dataclass ``cls`` (nested configs flattened).

    ``--name-with-dashes`` for ``name_with_dashes`` (the dest is the field name, so YAML
    keys are the field names); booleans are switches (``--x`` for a False default,
    ``--no-x`` for a True one); lists take several values; the field's help text gets its
    default appended; ``group`` metadata makes ``--help`` sections. The fields named in
    ``hidden`` get flags that ``--help`` leaves out (settings a trainer does not offer but
    keeps readable, so that its ``OUT/config.yaml``, which lists every field, reloads).
    Returns ``parser``.
    """
    unknown = set(hidden) - {opt.name for opt in iter_options(cls)}
    if unknown:
        raise ValueError(f"hidden options {sorted(unknown)} are not fields of {cls.__name__}")
    groups: Dict[str, Any] = {}
    for opt in iter_options(cls):
        meta = opt.meta
        group = meta.get("group")
        target = parser if not group else groups.setdefault(group, parser.add_argument_group(group))
        help_text = (argparse.SUPPRESS if opt.name in hidden else
                     f"{opt.help} (default: {_shown_default(opt)})".replace("%", "%%"))
        kwargs: Dict[str, Any] = {"dest": opt.name, "help": help_text, "default": opt.default}
        if opt.type is bool and not opt.many:
            flag = meta.get("flag") or ("--no-" + opt.name.replace("_", "-") if opt.default else flag_name(opt.name))
            kwargs["action"] = "store_false" if opt.default else "store_true"
        else:
            flag = meta.get("flag") or flag_name(opt.name)
            kwargs["type"] = opt.type
            for key in ("choices", "metavar", "const"):
                if meta.get(key) is not None:
                    kwargs[key] = list(meta[key]) if key == "choices" else meta[key]
            nargs = meta.get("nargs") or ("+" if opt.many else None)
            if nargs:
                kwargs["nargs"] = nargs
            if meta.get("required"):
                kwargs["required"] = True
        action = target.add_argument(flag, **kwargs)
        setattr(action, NULLABLE, opt.optional)
    return parser


def add_gan_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The GAN objective flags (:class:`lightface.engine.gan.GANConfig`: ``--adversarial``, ``--cycle`` ...)."""
    from lightface.engine.gan import GANConfig

    return add_options(parser, GANConfig)


def trainer_parser(prog: str, description: str, cls: type, hidden: Sequence[str] = ()) -> argparse.ArgumentParser:
    """A trainer's parser: ``description`` (the pipeline's docstring) as written, one flag per field of ``cls``
    (those named in ``hidden`` left out of ``--help``: see :func:`add_options`)."""
    parser = argparse.ArgumentParser(prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    return add_options(parser, cls, hidden)


def options_from_args(cls: Type[C], args: Any) -> C:
    """The config dataclass ``cls`` from a namespace parsed with :func:`add_options` flags."""
    values = {o.name: getattr(args, o.name) for o in iter_options(cls) if hasattr(args, o.name)}
    return config_from_dict(cls, values, source="command line")


# ---------------------------------------------------------------------------------------
# --config YAML
# ---------------------------------------------------------------------------------------
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


def _actions_by_dest(parser: argparse.ArgumentParser) -> Dict[str, argparse.Action]:
    return {a.dest: a for a in parser._actions if a.dest not in RESERVED and a.dest is not argparse.SUPPRESS}


def _check_value(action: argparse.Action, key: str, value: Any, source: Path) -> Any:
    """Validate (and type-convert) one YAML value the way argparse treats the same value given as a flag:
    through the flag's type (``positive_int`` refuses ``0`` from a file as on the command line) and choices."""
    if value is None:
        if action.default is None or getattr(action, NULLABLE, False):
            return None
        raise ConfigError(f"{source}: key {key!r} cannot be null (default: {action.default!r}); leave the key out "
                          "for the default")
    if action.nargs == "?" and action.const is not None and isinstance(value, bool):
        return action.const if value else action.default  # `resume: true` is a bare --resume
    many = action.nargs in ("*", "+", argparse.REMAINDER) or (isinstance(action.nargs, int) and action.nargs > 0)
    if action.nargs == 0 and isinstance(action.const, bool) and not isinstance(value, bool):
        raise ConfigError(f"{source}: key {key!r} is an on/off flag; write true or false, found {value!r}")
    items = value if isinstance(value, (list, tuple)) else [value]
    if isinstance(value, (list, tuple)) and not many:
        raise ConfigError(f"{source}: key {key!r} takes one value, found a list {value!r}")
    converted = []
    for item in items:
        if action.nargs != 0 and action.type in (None, str) and action.choices is None and isinstance(item, bool):
            raise ConfigError(f"{source}: key {key!r} expects text, found {item!r}")
        if callable(action.type) and action.type in (int, float) and not isinstance(item, str):
            item = _yaml_number(action.type, key, item, source)
        elif callable(action.type) and action.nargs != 0:
            # a YAML number goes through the flag's own type as its text would (positive_int, unit_interval ...)
            text = item if isinstance(item, str) else (
                str(int(item)) if isinstance(item, float) and item.is_integer() else str(item))
            try:
                item = action.type(text)
            except (TypeError, ValueError, argparse.ArgumentTypeError) as err:
                raise ConfigError(f"{source}: key {key!r}: invalid value {item!r} ({err})") from err
        if action.choices is not None and item not in action.choices:
            choices = ", ".join(map(str, action.choices))
            raise ConfigError(f"{source}: key {key!r}: {item!r} is not one of {choices}")
        converted.append(item)
    if many:
        return converted
    return converted[0]


def _yaml_number(tp: type, key: str, value: Any, source: Path) -> Any:
    """A YAML value of an ``int`` / ``float`` flag as ``tp`` (``2.0`` for an int flag is 2); an error names ``source``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{source}: key {key!r} expects a number, found {value!r}")
    if tp is int and not float(value).is_integer():
        raise ConfigError(f"{source}: key {key!r} expects a whole number, found {value!r}")
    return tp(value)


def parse_with_config(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parse ``argv`` (default ``sys.argv[1:]``) with ``--config run.yaml`` support.

    Precedence: explicit flags > YAML values > parser defaults. YAML keys are argparse
    ``dest`` names (dashes are accepted and mapped to underscores); a flag marked
    ``required=True`` may be given by the YAML file instead. ``--config`` is added to
    ``parser`` if it lacks one.

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
    unknown: List[str] = []
    checked = []
    for key, value in raw.items():
        dest = str(key).replace("-", "_")
        if dest in RESERVED:
            raise ConfigError(f"{source}: key {key!r} cannot be set from a config file")
        if dest not in actions:
            unknown.append(str(key))
        else:
            checked.append((dest, str(key), value))
    if unknown:  # before the values: another trainer's file fails on its own keys, not on a key both share
        err = unknown_key_error(unknown, list(actions), str(source))
        raise ConfigError(str(err).replace("unknown setting(s)", "unknown config key(s)", 1)
                          .replace("valid names:", "valid keys are the flag names with underscores:", 1))
    values: Dict[str, Any] = {dest: _check_value(actions[dest], key, value, source) for dest, key, value in checked}

    # YAML values become the defaults; explicit flags still override them.
    saved_defaults = {dest: actions[dest].default for dest in values}
    saved_required = {dest: actions[dest].required for dest in values}
    try:
        for dest, value in values.items():
            actions[dest].default = value
            actions[dest].required = False
        args = parser.parse_args(argv)
    finally:
        for dest, value in saved_defaults.items():
            actions[dest].default = value
            actions[dest].required = saved_required[dest]
    given = _given_on_command_line(parser, argv)
    _settle_exclusive_groups(parser, args, {d: v for d, v in values.items() if v != saved_defaults[d]}, given, source)
    _check_resume_folder(args, values, given, source)
    return args


def _given_on_command_line(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]]) -> set:
    """The dests of the optional flags ``argv`` gives (``argv`` already parsed without error by ``parser``)."""
    actions = list(_actions_by_dest(parser).values())
    saved = [(a, a.default, a.required) for a in actions]
    groups = [(g, g.required) for g in parser._mutually_exclusive_groups]
    try:
        for a in actions:
            a.required = False
            if a.option_strings:
                a.default = _NOT_GIVEN
        for g, _ in groups:
            g.required = False
        seen, _ = parser.parse_known_args(argv)
    finally:
        for a, default, required in saved:
            a.default, a.required = default, required
        for g, required in groups:
            g.required = required
    return {a.dest for a in actions if a.option_strings and getattr(seen, a.dest, _NOT_GIVEN) is not _NOT_GIVEN}


def _settle_exclusive_groups(parser: argparse.ArgumentParser, args: argparse.Namespace, from_file: Dict[str, Any],
                             given: set, source: Path) -> None:
    """Mutually exclusive flags (``evaluate --landmarks | --detector``) with a YAML file: a flag given on the
    command line replaces the file's value of the others (they go back to their defaults); a file that sets
    more than one of them is refused, as argparse refuses them together on the command line."""
    for group in parser._mutually_exclusive_groups:
        members = [a for a in group._group_actions if a.dest in from_file or a.dest in given]
        if any(a.dest in given for a in members):
            for a in members:
                if a.dest not in given:
                    default = a.default
                    if isinstance(default, str) and callable(a.type):
                        default = a.type(default)
                    setattr(args, a.dest, default)
                    log.info("%s given: the value of %r in %s is not used", " / ".join(
                        b.option_strings[-1] for b in members if b.dest in given), a.dest, source)
        elif len(members) > 1:
            flags = " and ".join(a.option_strings[-1] for a in members)
            raise ConfigError(f"{source}: keys {' and '.join(repr(a.dest) for a in members)} cannot be set together "
                              f"({flags} exclude each other); keep one")


def _check_resume_folder(args: argparse.Namespace, values: Dict[str, Any], given: set, source: Path) -> None:
    """Refuse a bare ``--resume`` that would start a new run elsewhere: the file's folder holds a run's
    ``last.pt`` (``--config OUT/config.yaml``), but its relative ``out`` names another folder from here (a
    config.yaml of an earlier version, which stored paths as typed)."""
    if getattr(args, "resume", None) != "auto" or "out" not in values or "out" in given or not args.out:
        return
    folder, out = source.parent, Path(args.out)
    if (folder / "last.pt").is_file() and not (out / "last.pt").is_file() and out.resolve() != folder.resolve():
        raise ConfigError(f"{source}: --resume: the run of this file is in {folder} (it holds last.pt), but its "
                          f"'out: {args.out}' is {out.resolve()} from the current folder, which holds none; run the "
                          f"command from the folder the run started in, or add --out {folder}")


# ---------------------------------------------------------------------------------------
# entry points
# ---------------------------------------------------------------------------------------
def _interrupted_hint(parser: argparse.ArgumentParser) -> str:
    """How to continue after a Ctrl-C: with ``--resume`` where the pipeline has that flag."""
    if any("--resume" in action.option_strings for action in parser._actions):
        return RESUME_FLAG_HINT
    return _GENERIC_HINT


class Terminated(KeyboardInterrupt):
    """A SIGTERM (a scheduler's time limit, ``kill``, ``timeout``) raised where Ctrl-C raises ``KeyboardInterrupt``,
    so that what a pipeline does on Ctrl-C (save its progress, say how to continue) it does on SIGTERM too."""


@contextlib.contextmanager
def sigterm_as_interrupt():
    """While active (main thread only), SIGTERM raises :class:`Terminated` in this process. A process forked
    meanwhile (a worker pool) dies of it as it would have. A trainer's own handling (``StopSignals``: finish the
    step, save, ``TrainingInterrupted``) takes precedence while it runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    owner = os.getpid()

    def handler(signum, frame):
        if os.getpid() != owner:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_cli(main: Callable[[argparse.Namespace], Any], get_args_parser: Callable[[], argparse.ArgumentParser],
            argv: Optional[Sequence[str]] = None, interrupted_hint: Optional[str] = None) -> int:
    """Parse ``argv`` (with ``--config``), run ``main(args)``; returns the exit status.

    The errors a user can fix (:data:`USER_ERRORS`: bad flags or YAML, missing files,
    unusable checkpoints, a run folder that needs ``--resume`` / ``--overwrite``, a
    diverged run) are printed as ``PROG: error: message`` on stderr with status 1 (2 for
    config errors, like argparse's own); the traceback goes to the debug log
    (``LIGHTFACE_DEBUG=1`` shows it). A training run stopped by SIGINT / SIGTERM after
    saving says so in one line and returns 128 + the signal number. Any other Ctrl-C
    (``KeyboardInterrupt``) prints ``PROG: interrupted: HINT`` and returns 130, as a shell
    does: ``interrupted_hint`` says how to continue (:data:`RERUN_HINT` for a pipeline that
    resumes by itself); by default :data:`RESUME_FLAG_HINT` where the parser has ``--resume``,
    else a hint true of every pipeline.
    """
    logging.basicConfig(level=logging.DEBUG if os.environ.get("LIGHTFACE_DEBUG") else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = get_args_parser()
    try:
        with sigterm_as_interrupt():
            main(parse_with_config(parser, argv))
    except ConfigError as err:
        log.debug("traceback", exc_info=True)
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 2
    except USER_ERRORS as err:
        log.debug("traceback", exc_info=True)
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 1
    except TrainingInterrupted as err:  # saved; the status of a process the signal killed
        print(f"{parser.prog}: {err}", file=sys.stderr)
        return err.exit_status
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM outside a trainer's own handling (or a second one)
        return interrupted(parser.prog, interrupted_hint or _interrupted_hint(parser))
    return 0


def interrupted(prog: str, hint: str) -> int:
    """After a Ctrl-C (``KeyboardInterrupt``) or a SIGTERM (:class:`Terminated`): ``PROG: interrupted: HINT``
    (``PROG: terminated (SIGTERM): HINT``) on stderr, the traceback only in the debug log; returns 130 (143), the
    status a shell gives a process that signal stopped."""
    log.debug("traceback", exc_info=True)
    if isinstance(sys.exc_info()[1], Terminated):
        print(f"{prog}: terminated (SIGTERM): {hint}", file=sys.stderr)
        return 128 + signal.SIGTERM
    print(f"{prog}: interrupted: {hint}", file=sys.stderr)
    return 128 + signal.SIGINT
