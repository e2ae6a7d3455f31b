"""Applications: library entry points that combine every layer below them (models, data, eval, engine).

* :mod:`.relabel`: semantic bootstrapping of a noisy LMDB with a trained Light CNN
  (``python -m pipelines.relabel``).

Like :mod:`lightface.embed`, :mod:`lightface.restore` and :mod:`lightface.gallery`, nothing
below this layer imports it (``tests/test_layering.py``).
"""
