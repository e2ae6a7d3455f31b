"""argparse value types shared by the pipelines: bad numbers are refused on the command line
(``error: argument --batch-size: must be a positive integer, got 0``, exit status 2), before
any model or dataset is opened; so are flags that cannot apply together (:func:`refuse_flags`)."""
import argparse
import math
import os
from pathlib import Path
from typing import Callable, Optional, Sequence

__all__ = ["positive_int", "non_negative_int", "positive_float", "fraction", "unit_interval", "int_at_least", "device_name",
           "rescue_threshold", "image_file", "output_file", "json_file", "plot_file", "refuse_flags", "weights_spec",
           "shared_dir", "refuse_missing_path"]


def _number(convert: Callable[[str], float], what: str, ok: Callable[[float], bool]) -> Callable[[str], float]:
    """An argparse type: ``convert(text)``, refused with "must be WHAT" unless it converts and ``ok`` holds."""
    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"must be {what}, got {value}")
        return value

    return parse


#: An integer >= 1 (batch sizes, crop sizes, counts).
positive_int = _number(int, "a positive integer", lambda v: v >= 1)
#: An integer >= 0 (worker counts, where 0 means "in this process").
non_negative_int = _number(int, "a non-negative integer", lambda v: v >= 0)
#: A number > 0, ``inf`` included (ratios and limits; ``inf``: no limit).
positive_float = _number(float, "a positive number", lambda v: v > 0 and not math.isnan(v))
#: A number in (0, 1] (decay factors).
fraction = _number(float, "a number in (0, 1]", lambda v: 0 < v <= 1)
#: A number in [0, 1] (score thresholds).
unit_interval = _number(float, "a number in [0, 1]", lambda v: 0 <= v <= 1)


def int_at_least(low: int) -> Callable[[str], int]:
    """An argparse type for an integer >= ``low`` (``int_at_least(2)``: cross-validation folds)."""
    return _number(int, f"an integer >= {low}", lambda v: v >= low)


def rescue_threshold(text: str):
    """An argparse type for ``--rescue-threshold`` (``FaceEmbedder(rescue_threshold=...)``): ``none`` (None: no
    rescue) or a detector score from :data:`lightface.data.detect.MIN_THRESHOLD` to 1."""
    from lightface.data.detect import MIN_THRESHOLD

    if text.strip().lower() == "none":
        return None
    return _number(float, f"'none' or a number in [{MIN_THRESHOLD}, 1]", lambda v: MIN_THRESHOLD <= v <= 1)(text)


def device_name(text: str) -> str:
    """An argparse type for ``--device``: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``, refused on the
    command line when it names no device of this machine (``cuda`` on a CPU build of torch)."""
    from lightface.engine.distributed import resolve_device

    try:
        resolve_device(text)
    except RuntimeError:  # torch.device's own message lists two dozen backends
        raise argparse.ArgumentTypeError(f"{text!r} is not a device: use auto, cpu, cuda or cuda:N") from None
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def weights_spec(task: Optional[str] = None) -> Callable[[str], str]:
    """An argparse type for ``--weights``: a checkpoint file, or the name, alias or architecture of a shipped
    model of ``task`` (:func:`lightface.models.pretrained.resolve_weights`, the rule every entry point shares).
    A typo, a missing path, a shipped model of another task or a folder is refused on the command line (exit
    status 2) before any model or data loads, with the close shipped names; the value is kept as given."""
    def parse(text: str) -> str:
        from lightface.models.pretrained import PretrainedError, resolve_weights
        from lightface.utils.checkpoint_io import folder_message

        if os.path.isdir(text):
            raise argparse.ArgumentTypeError(folder_message(text))
        try:
            resolve_weights(text, task, what="")
        except PretrainedError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
        return text

    return parse


def shared_dir() -> Path:
    """The shared data and models folder: ``LIGHTFACE_SHARED``, else ``../shared`` beside the project (the
    default of the demo's and the benchmarks' data, detector and photo paths)."""
    return Path(os.environ.get("LIGHTFACE_SHARED") or Path(__file__).resolve().parents[1].parent / "shared")


def image_file(text: str) -> str:
    """An argparse type for an image to write (a contact sheet): refused on the command line when it names a
    folder or an extension OpenCV cannot encode, before the run's work; ``''`` (none) passes."""
    from lightface.data.io import check_image_output

    if text:
        try:
            check_image_output(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
    return text


def output_file(suffixes: Sequence[str] = (), what: str = "file") -> Callable[[str], str]:
    """An argparse type for a file a run writes at its end (a JSON report, a plot), refused on the command
    line, before the run's work: a folder, a path whose folder cannot be created (a file is in its way, or
    the nearest existing folder is not writable), or, with ``suffixes`` (``(".png", ".pdf")``), another
    extension. Nothing is created; ``''`` (none) passes."""
    def parse(text: str) -> str:
        if not text:
            return text
        path = Path(text)
        if path.is_dir() or text.endswith(("/", os.sep)):
            raise argparse.ArgumentTypeError(f"{text} is a folder; give a {what} name such as "
                                             f"{path / ('report' + (suffixes[0] if suffixes else '.json'))}")
        if suffixes and path.suffix.lower() not in suffixes:
            raise argparse.ArgumentTypeError(f"{text}: {path.suffix or 'no extension'!r} is not a {what} format; "
                                             f"use {', '.join(suffixes)}")
        parent = path.absolute().parent
        while not parent.exists():
            parent = parent.parent
        if not parent.is_dir():
            raise argparse.ArgumentTypeError(f"{text}: {parent} is a file, so the folder for it cannot be created")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise argparse.ArgumentTypeError(f"{text}: the folder {parent} is not writable")
        return text

    return parse


#: A JSON report to write (``--out``): see :func:`output_file`.
json_file = output_file(what="report file")
#: A plot to write (``--plot``): the extensions matplotlib saves (``.png``, ``.pdf``, ``.svg`` ...).
plot_file = output_file((".png", ".pdf", ".svg", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".eps", ".ps"),
                        what="plot")


def refuse_flags(args: argparse.Namespace, parser: argparse.ArgumentParser, dests: Sequence[str], why: str) -> None:
    """Refuse the flags among ``dests`` that ``args`` sets (away from ``parser``'s default) when they cannot
    apply, rather than ignore them without a word: a :class:`~lightface.engine.config.ConfigError`, which
    ``run_cli`` prints as one line with exit status 2 (argparse's own for a bad command line).

    ``why`` completes the message ``--paste --detector: WHY``: say why they cannot apply and what to drop.
    """
    from lightface.engine.config import ConfigError

    options = {a.dest: "/".join(a.option_strings) if isinstance(a, argparse.BooleanOptionalAction)  # --flip/--no-flip
               else a.option_strings[-1] for a in parser._actions if a.option_strings}
    given = [options[d] for d in dests if getattr(args, d) != parser.get_default(d)]
    if given:
        raise ConfigError(f"{' '.join(given)}: {why}")


def refuse_missing_path(parser: argparse.ArgumentParser, args: argparse.Namespace, dest: str, what: str,
                        exists: Callable[[Path], bool] = Path.exists, none_ok: bool = False) -> None:
    """A usage error (``parser.error``: exit status 2) naming the flag of ``dest`` when its value was given
    (differs from the default, which may point at absent shared data and then skips its part), and names
    nothing (``exists`` false): a typo otherwise left that part of a benchmark out without a word. ``what``
    ends the message (``"no such folder (HR photos)"``); ``none_ok``: ``none`` (any case) or ``''`` is
    accepted, and stored as ``''``, to leave that part out."""
    value = getattr(args, dest)
    if none_ok and (value or "").strip().lower() in ("", "none"):
        setattr(args, dest, "")
        return
    if value is None or value == parser.get_default(dest) or exists(Path(value)):
        return
    flag = next((a.option_strings[-1] for a in parser._actions if a.dest == dest and a.option_strings), dest)
    parser.error(f"{flag} {value}: {what}")
