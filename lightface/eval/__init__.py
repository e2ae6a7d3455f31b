"""Evaluation: verification metrics, image quality, identity score, distribution divergences."""
