"""Command-line pipelines: python -m pipelines.<name> --help."""
