"""The one training engine and its tasks.

* :mod:`.engine`: :class:`~lightface.engine.engine.Engine` (distributed set-up, seeding and
  RNG resume, samplers, run folder and checkpoints, ``--resume``, deadline, averaged
  logging, NaN guard, EMA) and the :class:`~lightface.engine.engine.Task` a trainer
  implements; :class:`~lightface.engine.engine.RunConfig`, the settings every trainer shares;
* tasks: :mod:`.lightcnn_trainer` (Light CNN), :mod:`.sr_trainer` (wavelet SR GAN),
  :mod:`.frontal_trainer` (TP-GAN), with :mod:`.gan` (the GAN objective and what the GAN
  tasks share);
* pieces: :mod:`.config` (config dataclasses, YAML), :mod:`.distributed`, :mod:`.checkpoint`
  (RNG state), :mod:`.ema`, :mod:`.logger`.

See docs/training.md.
"""
