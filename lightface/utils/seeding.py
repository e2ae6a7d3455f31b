"""Per-sample seeds of the training datasets."""
import numpy as np

__all__ = ["sample_seed"]


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of sample ``index``'s random draws in ``epoch`` of a run seeded with ``seed``: the same in
    any process (so a run repeats, and a resumed run continues, exactly with any number of DataLoader
    workers), different across samples and epochs."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])
