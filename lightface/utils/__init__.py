"""The bottom layer: helpers every other lightface package may use; it imports no other lightface package.

* :mod:`.checkpoint_io`: atomic checkpoint writes and ``weights_only`` loads;
* :mod:`.atomic_write`: atomic text-file writes (JSON reports);
* :mod:`.worker_signals`: DataLoader workers that a Ctrl-C or SIGTERM to the process group cannot kill;
* :mod:`.state_hash`: the sha256 of a module's state (model identity of in-memory models);
* :mod:`.templates`: the 5-point face alignment templates (pure NumPy), shared by
  :mod:`lightface.data.align` and the TP-GAN patch layout in :mod:`lightface.models.tpgan`.

Layer order (``tests/test_layering.py`` enforces it; nothing imports upward):
``utils, ops < nn < models < losses, eval, data, distill < engine < apps, restore, gallery,
embed, export`` (and ``pipelines`` on top).
"""
