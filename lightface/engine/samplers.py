"""Epoch orders for the :class:`~lightface.engine.engine.Engine`: resumable, per rank, repeatable.

* :class:`ResumableSampler`: ``DistributedSampler``'s shuffled order, able to start an epoch
  after its first ``start`` samples (``--resume`` mid-epoch).
* :class:`IdentityGroupSampler`: the same contract, but the shuffled order keeps up to
  ``group_size`` samples of one identity next to each other, so that a batch of 64 holds
  about 64 / ``group_size`` people with several photos each ("P x K" batches of metric
  learning). Every sample still comes once per epoch; batch-level terms that compare faces
  within a batch (``train_lightcnn --distill-relation``) then see same-person pairs, not
  almost only different people.

Both deal a rank's share so that a global batch is the same stretch of the epoch's order whatever the
number of processes (``DistributedSampler`` interleaves single samples, :class:`IdentityGroupSampler`
batch-sized chunks): ``--resume`` mid-epoch under another number of processes (same ``--batch-size``)
continues the epoch with exactly the samples it had left.
"""
from typing import Iterator, List, Optional, Sequence

import numpy as np
from torch.utils.data import Dataset, DistributedSampler

__all__ = ["ResumableSampler", "IdentityGroupSampler"]


class ResumableSampler(DistributedSampler):
    """``DistributedSampler`` that can start an epoch after its first ``start`` samples."""

    start = 0

    def _indices(self) -> List[int]:
        """This rank's whole epoch, ``num_samples`` indices."""
        return list(super().__iter__())

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices()[self.start:])

    def __len__(self) -> int:
        return self.num_samples - self.start


class IdentityGroupSampler(ResumableSampler):
    """Shuffled epochs in runs of up to ``group_size`` samples of one identity.

    Per epoch (seeded by ``seed`` and the epoch): each identity's samples are shuffled and cut
    into runs of ``group_size`` (its last run may be shorter; a one-photo identity is a run of
    one), the runs are shuffled, and the concatenation is padded from its start to
    ``num_replicas * num_samples``. That order is cut into chunks of ``batch_size`` (the per-rank
    batch) and rank ``r`` takes chunks ``r, r + num_replicas, ...``; the epoch's tail, shorter
    than one chunk per rank, is split into ``num_replicas`` equal blocks. So global batch ``b``
    is positions ``b * batch_size * num_replicas ...`` of the order for any number of processes
    (a mid-epoch ``--resume`` under another number continues exactly), and runs stay whole inside
    a batch when ``group_size`` divides ``batch_size``.

    Args:
        dataset: the training set (only its length is used).
        groups: (len(dataset),) identity label of every sample.
        group_size: K, samples of one identity kept together (>= 2).
        num_replicas, rank, seed: as for ``DistributedSampler``.
        batch_size: the per-rank batch, the chunk each rank takes in turn; None: ``num_samples``
            (one contiguous block per rank).
    """

    def __init__(self, dataset: Dataset, groups: Sequence[int], group_size: int, num_replicas: int = 1,
                 rank: int = 0, seed: int = 0, batch_size: Optional[int] = None):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=False)
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        groups = np.asarray(groups)
        if groups.shape != (len(dataset),):
            raise ValueError(f"{groups.shape[0] if groups.ndim else 0} identity labels for {len(dataset)} samples")
        if group_size < 2:
            raise ValueError(f"group_size must be >= 2, got {group_size}")
        self.group_size = group_size
        order = np.argsort(groups, kind="stable")
        bounds = np.flatnonzero(np.diff(groups[order])) + 1
        self._members = np.split(order, bounds)  # the sample indices of each identity

    def _indices(self) -> List[int]:
        rng = np.random.default_rng([self.seed, self.epoch])
        k = self.group_size
        runs = []
        for members in self._members:
            shuffled = rng.permutation(members)
            runs.extend(shuffled[i:i + k] for i in range(0, len(shuffled), k))
        flat = np.concatenate([runs[i] for i in rng.permutation(len(runs))])
        if len(flat) < self.total_size:
            flat = np.resize(flat, self.total_size)  # repeats from the start, as DistributedSampler pads
        n, w = self.num_samples, self.num_replicas
        b = min(self.batch_size or n, n)
        full = n // b  # whole chunks per rank
        dealt = flat[:full * b * w].reshape(full, w, b)[:, self.rank].ravel()
        tail = n - full * b  # per rank, from the last, shorter round
        rest = flat[full * b * w:][self.rank * tail:(self.rank + 1) * tail]
        return [int(i) for i in np.concatenate([dealt, rest])]
