"""argparse value types shared by the pipelines: bad numbers are refused on the command line
(``error: argument --batch-size: must be a positive integer, got 0``, exit status 2), before
any model or dataset is opened."""
import argparse

__all__ = ["positive_int", "non_negative_int"]


def positive_int(text: str) -> int:
    """An integer >= 1 (batch sizes, crop sizes, counts)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """An integer >= 0 (worker counts, where 0 means "in this process")."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {value}")
    return value
