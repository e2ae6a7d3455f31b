"""lightface.engine.checkpoint: RNG state capture/restore through weights_only checkpoints."""
import random

import numpy as np
import torch

from lightface.engine.checkpoint import capture_rng_state, load_checkpoint, restore_rng_state, save_atomic


def _draw():
    return (torch.rand(3).tolist(), np.random.rand(3).tolist(), np.random.randn(1).tolist(), [random.random(), random.gauss(0, 1)])


def test_round_trip_through_a_weights_only_checkpoint(tmp_path):
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    np.random.randn()  # leaves a cached gaussian in numpy's state
    random.gauss(0, 1)  # and in Python's
    state = capture_rng_state()
    expected = _draw()
    path = save_atomic({"rng": state}, tmp_path / "ck.pt")
    torch.manual_seed(99)
    np.random.seed(99)
    random.seed(99)
    assert _draw() != expected
    restore_rng_state(load_checkpoint(path)["rng"])
    assert _draw() == expected


def test_partial_state_leaves_others_alone():
    random.seed(5)
    expected = random.random()
    random.seed(5)
    torch.manual_seed(0)
    state = {"torch": capture_rng_state()["torch"]}
    torch.rand(2)
    restore_rng_state(state)
    assert random.random() == expected
