"""Epoch orders of the training engine: identity-grouped ("P x K") batches that still give
every sample once per epoch, split across ranks, repeatable and resumable mid-epoch."""
import numpy as np
import pytest

from lightface.engine.samplers import IdentityGroupSampler, ResumableSampler

# 40 people with 1-12 photos each (a one-photo person included), shuffled in the dataset
_RNG = np.random.default_rng(0)
LABELS = _RNG.permutation(np.repeat(np.arange(40), _RNG.integers(1, 13, size=40)))
DATA = list(range(len(LABELS)))


def _epoch(sampler, epoch):
    sampler.set_epoch(epoch)
    return list(sampler)


def test_every_sample_once_per_epoch_in_runs_of_one_identity():
    k = 4
    order = _epoch(IdentityGroupSampler(DATA, LABELS, k, seed=1), 0)
    assert sorted(order) == DATA
    same_as_next = int((LABELS[order[:-1]] == LABELS[order[1:]]).sum())
    counts = np.bincount(LABELS)
    # each person's photos come in ceil(n / k) runs, each run with (length - 1) same-person neighbours
    assert same_as_next >= int((counts - np.ceil(counts / k)).sum())
    plain = _epoch(ResumableSampler(DATA, num_replicas=1, rank=0, shuffle=True, seed=1), 0)
    assert int((LABELS[plain[:-1]] == LABELS[plain[1:]]).sum()) < same_as_next / 4


def test_ranks_split_the_epoch_and_orders_repeat_per_seed_and_epoch():
    ranks = [IdentityGroupSampler(DATA, LABELS, 4, num_replicas=3, rank=r, seed=2) for r in range(3)]
    parts = [_epoch(s, 5) for s in ranks]
    assert all(len(p) == len(ranks[0]) == ranks[0].num_samples for p in parts)
    assert set().union(*parts) == set(DATA)  # padded from the start to an equal share per rank
    assert sum(map(len, parts)) - len(DATA) < 3
    again = IdentityGroupSampler(DATA, LABELS, 4, num_replicas=3, rank=1, seed=2)
    assert _epoch(again, 5) == parts[1]
    assert _epoch(again, 6) != parts[1]
    assert _epoch(IdentityGroupSampler(DATA, LABELS, 4, num_replicas=3, rank=1, seed=3), 5) != parts[1]


def test_resume_starts_mid_epoch():
    sampler = IdentityGroupSampler(DATA, LABELS, 3, seed=4)
    full = _epoch(sampler, 2)
    sampler.start = 17
    assert len(sampler) == len(full) - 17 and _epoch(sampler, 2) == full[17:]


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="group_size must be >= 2"):
        IdentityGroupSampler(DATA, LABELS, 1)
    with pytest.raises(ValueError, match="identity labels for"):
        IdentityGroupSampler(DATA, LABELS[:-1], 4)



@pytest.mark.parametrize("before, after", [(1, 2), (2, 1), (2, 3), (4, 2)])
def test_a_mid_epoch_resume_under_another_number_of_processes_sees_the_rest_of_the_epoch_once(before, after):
    """The engine resumes each rank at ``batch_in_epoch x per-rank batch`` of its own share; with the same global
    batch, the ranks of the resumed run then take exactly the samples the interrupted run had not seen (one
    contiguous block per rank skipped some and repeated others): a global batch is the same stretch of the
    epoch's order for any number of processes."""
    k, batch, done = 3, 12, 5  # global batch 12; 5 global batches done before the interruption

    def ranks(world):
        return [IdentityGroupSampler(DATA, LABELS, k, num_replicas=world, rank=r, seed=6, batch_size=batch // world)
                for r in range(world)]

    order = _epoch(ranks(1)[0], 3)
    for world in (2, 3, 4):
        parts = [_epoch(s, 3) for s in ranks(world)]
        per = batch // world
        for b in range(len(DATA) // batch):
            batch_b = sorted(i for p in parts for i in p[b * per:(b + 1) * per])
            assert batch_b == sorted(order[b * batch:(b + 1) * batch])
    seen = [i for s in ranks(before) for i in _epoch(s, 3)[:done * batch // before]]
    rest = []
    for sampler in ranks(after):
        sampler.start = done * batch // after  # what the engine sets on --resume
        rest += _epoch(sampler, 3)
    assert sorted(seen) == sorted(order[:done * batch])
    pad = len(rest) - (len(DATA) - done * batch)  # an equal share per rank, padded from the order's start
    assert 0 <= pad < after and sorted(rest) == sorted(order[done * batch:] + order[:pad])
