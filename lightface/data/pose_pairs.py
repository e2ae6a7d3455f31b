"""Frontalization training pairs from a pose-tagged LMDB.

The LMDB (built by ``python -m pipelines.build_lmdb`` with pose tags, e.g. from the CFP
layout) holds, per sample, an image, an identity label, optionally 5 landmarks and an
attribute dict with a pose tag. Pose tags are read with ``LMDBDataset.attributes(i)``
(no image decode), so indexing a large set is cheap.

:class:`PosePairDataset` yields, for every non-frontal sample, the sample as ``input``
and a frontal photo of the same identity as ``target`` (``paired=True``), or a frontal
photo of any identity drawn independently (``paired=False``, the unpaired mode used by
the ``--cycle`` objective). Faces are aligned to the 128x128 ``lightcnn`` template when
the record holds landmarks and is not already a 128x128 crop. With ``mirror="left"`` /
``"right"`` every input whose nose points the other way (judged from its landmarks) is
flipped horizontally, together with its target, so all inputs face one way.

**Self pairs** (``self_pairs > 0``): extra samples whose input *and* target are the same
frontal photo. On data such as CFP, where a profile's "target" is a different photo of
the person (other day, light, background, expression), the per-pixel loss cannot
reward anything the generator sees in its input: its minimiser for a generator that
does not yet recognise the person is one constant image, the per-pixel median frontal
(docs/frontalization.md measures it). A frontal that must come back as itself is an
exact, input-specific pixel target, so a constant output is costly and the skip and
local pathways learn to carry the input's appearance (the frontal-to-frontal
reconstruction of FNM, Qian et al., CVPR 2019).
"""
import logging
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

from ..utils.repeated_warnings import warn_on_main_rank
from ..utils.seeding import sample_seed
from .align import align_face
from .convert import image_to_tensor  # noqa: F401  (re-exported: uint8 BGR / gray -> float RGB / gray)

__all__ = [
    "PosePairDataset",
    "is_frontal",
    "facing",
    "yaw_offset",
    "image_to_tensor",
    "split_identities",
    "cfp_five_points",
    "read_cfp_fiducials",
    "cfp_landmarks",
    "write_cfp_landmarks",
]

log = logging.getLogger(__name__)

FRONTAL_TAGS = ("frontal", "front", "f")


def is_frontal(pose, frontal_max_yaw: float = 15.0) -> bool:
    """Whether a pose tag means frontal: a string in ``("frontal", "front", "f")`` (any case)
    or a yaw angle in degrees with ``|yaw| <= frontal_max_yaw``."""
    if isinstance(pose, str):
        return pose.strip().lower() in FRONTAL_TAGS
    if isinstance(pose, (int, float, np.integer, np.floating)):
        return abs(float(pose)) <= frontal_max_yaw
    raise ValueError(f"unsupported pose tag {pose!r}: expected a string like 'frontal'/'profile' or a yaw angle")


def facing(landmarks: np.ndarray) -> str:
    """``"left"`` when the nose tip lies left of the eye midpoint in the image, else ``"right"``.

    Args:
        landmarks: (5, 2) float ``(x, y)``: left eye, right eye, nose, left/right mouth corner.
    """
    lm = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    return "left" if lm[2, 0] < (lm[0, 0] + lm[1, 0]) / 2.0 else "right"


def yaw_offset(landmarks: np.ndarray) -> float:
    """Signed horizontal offset of the nose from the face's midline, in eye-to-mouth distances.

    The midline is the mean x of the two eyes and the two mouth corners; the scale is the vertical
    distance from the eye midpoint to the mouth midpoint. About 0 for a frontal face, growing
    with the yaw: ``det_500m`` on 300 aligned ``cfp_train`` crops gives |offset| 0.04 on average
    on frontals (95% under 0.09) and 0.36 on the near-90-degree profiles (95% over 0.30), whose
    hidden eye and mouth corner the detector places near the visible ones. Positive when the
    nose lies right of the midline in the image.

    Args:
        landmarks: (5, 2) float ``(x, y)``: left eye, right eye, nose, left/right mouth corner.
    """
    lm = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    midline = lm[[0, 1, 3, 4], 0].mean()
    scale = max(lm[3:, 1].mean() - lm[:2, 1].mean(), 1e-6)
    return float((lm[2, 0] - midline) / scale)


# CFP's 30 hand-annotated fiducials (1-based, as in Fiducials/<id>/<pose>/NN.txt):
# 1-9 jaw contour, 10-12 eyebrow, 13-18 eye contour (the visible / annotated eye),
# 19-22 nose bridge from the brow down to the nose tip, 23-25 nose base (23 on the
# midline, 24-25 towards the nostril), 26 mouth corner, 27-30 lip contour on the midline
# (27 top of the upper lip). Frontal images are annotated on one half plus the midline.
_CFP_EYE = slice(12, 18)
_CFP_MIDLINE = [18, 19, 20, 21, 22, 26, 27, 28, 29]
_CFP_NOSE_TIP, _CFP_MOUTH_CORNER, _CFP_LIP_TOP, _CFP_BRIDGE_TOP = 21, 25, 26, 18


def _reflect(points: np.ndarray, line_pts: np.ndarray) -> np.ndarray:
    """Reflect (K, 2) points across the line x = a*y + b fitted (least squares) to ``line_pts``."""
    a, b = np.polyfit(line_pts[:, 1], line_pts[:, 0], 1)
    # line direction (a, 1) normalised; reflect p about the point p0 = (b, 0) on the line
    d = np.array([a, 1.0]) / np.hypot(a, 1.0)
    p0 = np.array([b, 0.0])
    v = points - p0
    return p0 + 2.0 * (v @ d)[:, None] * d[None] - v


def cfp_five_points(fiducials: np.ndarray, pose: str) -> np.ndarray:
    """Map CFP's 30 fiducials to the 5 points (left eye, right eye, nose, left/right mouth corner).

    * frontal: the annotated eye is the mean of points 13-18; the other eye and mouth
      corner are the annotated eye and mouth corner (26) reflected across the facial
      midline (a line x = a*y + b fitted to points 19-23 and 27-30); nose = the nose tip (22).
    * profile (one eye visible): the conventions of 5-point detectors on profiles (both
      eyes and both mouth corners on the visible side): eyes = the visible eye (mean of
      13-18) and the top of the nose bridge (19); nose = the nose tip (22); mouth = the
      visible corner (26) and the top of the upper lip (27).
    Points are then ordered left/right by x, as seen in the image.

    Args:
        fiducials: (30, 2) float ``(x, y)`` in image pixels.
        pose: ``"frontal"`` or ``"profile"``.
    Returns:
        float64 (5, 2).
    """
    f = np.asarray(fiducials, dtype=np.float64)
    if f.shape != (30, 2):
        raise ValueError(f"CFP fiducials must be (30, 2), got {f.shape}")
    eye = f[_CFP_EYE].mean(0)
    corner = f[_CFP_MOUTH_CORNER]
    if pose == "frontal":
        eye2, corner2 = _reflect(np.stack([eye, corner]), f[_CFP_MIDLINE])
    elif pose == "profile":
        eye2, corner2 = f[_CFP_BRIDGE_TOP], f[_CFP_LIP_TOP]
    else:
        raise ValueError(f"pose must be 'frontal' or 'profile', got {pose!r}")
    eyes = sorted([eye, eye2], key=lambda p: p[0])
    mouth = sorted([corner, corner2], key=lambda p: p[0])
    return np.stack([eyes[0], eyes[1], f[_CFP_NOSE_TIP], mouth[0], mouth[1]])


def read_cfp_fiducials(path, pose: str) -> np.ndarray:
    """The 5 points (:func:`cfp_five_points`) of the CFP fiducial file ``path`` (30 ``x,y`` lines) of a
    ``pose`` (``"frontal"`` / ``"profile"``) image, float64 (5, 2).

    Raises:
        ValueError: the file cannot be read or is not 30 ``x,y`` lines; the message starts with its path.
    """
    try:
        return cfp_five_points(np.loadtxt(path, delimiter=",", ndmin=2), pose)
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: {err}") from None


def cfp_landmarks(cfp_root) -> Dict[str, np.ndarray]:
    """The 5 points (:func:`read_cfp_fiducials`) of every image of a CFP tree (``Images/``, ``Fiducials/``)
    -> ``{"<id>/<pose>/NN.jpg": float64 (5, 2)}`` in sorted order; images without a fiducial file, or
    with one that cannot be read or is malformed, are left out (logged with the file and the reason)."""
    from pathlib import Path

    root = Path(cfp_root)
    images = sorted((root / "Images").glob("*/*/*.jpg"))
    if not images:
        raise FileNotFoundError(f"no CFP images under {root / 'Images'} (expected Images/<id>/<pose>/NN.jpg)")
    table = {}
    for img in images:
        rel = img.relative_to(root / "Images")
        fid = root / "Fiducials" / rel.with_suffix(".txt")
        if not fid.is_file():
            log.warning("no fiducials for %s (%s missing)", rel, fid)
            continue
        try:
            table[rel.as_posix()] = read_cfp_fiducials(fid, rel.parts[1])
        except ValueError as err:
            log.warning("unusable fiducials for %s, left out: %s", rel, err)
    return table


def write_cfp_landmarks(cfp_root, out_path) -> int:
    """Write a 5-point landmarks file (``<id>/<pose>/NN.jpg x1 y1 ... x5 y5`` per line, the format
    of ``python -m pipelines.build_lmdb --landmarks``) for a CFP tree (``Images/``, ``Fiducials/``).

    Returns the number of images written; images without a usable fiducial file are left out (logged).
    """
    from pathlib import Path

    from ..utils.atomic_write import write_text_atomic

    lines = [rel + " " + " ".join(f"{v:.2f}" for v in pts.reshape(-1)) for rel, pts in cfp_landmarks(cfp_root).items()]
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out, "\n".join(lines) + "\n")  # a killed run leaves no truncated file for build_lmdb
    return len(lines)


def split_identities(labels: Sequence[int], num_train: int, seed: int = 0) -> Tuple[List[int], List[int]]:
    """Split the distinct identity labels into ``(train, held_out)`` lists, ``num_train`` in the first.

    The split is a seeded permutation of the sorted labels, so it is reproducible.
    """
    ids = sorted({int(l) for l in labels})
    if not 0 < num_train < len(ids):
        raise ValueError(f"num_train must be in 1..{len(ids) - 1} for {len(ids)} identities, got {num_train}")
    perm = np.random.default_rng(seed).permutation(len(ids))
    train = sorted(ids[i] for i in perm[:num_train])
    held = sorted(ids[i] for i in perm[num_train:])
    return train, held


class PosePairDataset(Dataset):
    """(non-frontal input, frontal target) pairs from a pose-tagged :class:`lightface.data.LMDBDataset`.

    Args:
        source: an LMDB path or an opened ``LMDBDataset``.
        identities: restrict to these labels (e.g. the training half of :func:`split_identities`).
        paired: ``True``: target = a frontal of the same identity; ``False``: a frontal of any
            identity, drawn independently (unpaired mode).
        mirror: ``None``, ``"left"`` or ``"right"``: flip inputs (and their targets) so every
            input faces that way (needs landmarks).
        channels: 3 (RGB) or 1 (gray) in the returned tensors.
        pose_key: the attribute holding the pose tag.
        frontal_max_yaw: for numeric pose tags, the largest |yaw| counted as frontal.
        fixed_target: use the first frontal of the identity instead of a random one
            (deterministic validation).
        size: output side (128 for TP-GAN).
        self_pairs: add ``round(self_pairs * number of non-frontal inputs)`` self pairs
            (input = target = one frontal photo), after the non-frontal inputs; the frontals
            are spread evenly over all frontals of the chosen identities (deterministic).
            0 (default) = none; e.g. 0.5 = one self pair per two profiles.
        input_transform: applied to each input image (uint8 BGR or gray, (S, S[, 3])) before it
            becomes a tensor, e.g. :func:`lightface.data.transforms.frontal_input_transform`;
            targets (a self pair's too) stay as stored. ``None``: inputs as stored.
        seed: base seed of each pair's random draws (the random target and, when the transform
            has ``set_random_seed``, its augmentation): pair ``i`` draws from ``(seed, epoch, i)``
            (:meth:`set_epoch`), so a training run repeats, and a resumed run continues, exactly
            with any number of DataLoader workers. ``None``: targets follow torch's global
            generator and the transform its own stream (seed those yourself).

    ``dataset[i]`` -> dict ``input`` (C, size, size) float32 [0, 1], ``target`` (same),
    ``label`` int (the input's identity), ``target_label`` int, ``index`` int (LMDB index of
    the input), ``flipped`` bool, ``self_pair`` bool. Indices ``0 .. len(inputs) - 1`` are the
    non-frontal inputs, the rest the self pairs.
    """

    def __init__(
        self,
        source,
        identities: Optional[Iterable[int]] = None,
        paired: bool = True,
        mirror: Optional[str] = None,
        channels: int = 3,
        pose_key: str = "pose",
        frontal_max_yaw: float = 15.0,
        fixed_target: bool = False,
        size: int = 128,
        self_pairs: float = 0.0,
        input_transform: Optional[Callable[..., Dict[str, np.ndarray]]] = None,
        seed: Optional[int] = None,
    ):
        from .lmdb_dataset import LMDBDataset

        if mirror not in (None, "left", "right"):
            raise ValueError(f"mirror must be None, 'left' or 'right', got {mirror!r}")
        if not self_pairs >= 0:
            raise ValueError(f"self_pairs must be >= 0 (self pairs per non-frontal input), got {self_pairs}")
        self.data = LMDBDataset(source) if not isinstance(source, LMDBDataset) else source
        self.paired, self.mirror, self.channels, self.size = paired, mirror, channels, size
        self.fixed_target, self.input_transform = fixed_target, input_transform
        self.seed = None if seed is None else int(seed)
        self.epoch = 0
        keep = None if identities is None else {int(i) for i in identities}
        labels = np.asarray(self.data.labels)
        self.inputs: List[int] = []
        self.frontals: Dict[int, List[int]] = {}
        missing = 0
        for i in range(len(self.data)):
            label = int(labels[i])
            if keep is not None and label not in keep:
                continue
            attrs = self.data.attributes(i) or {}
            if pose_key not in attrs:
                missing += 1
                continue
            if is_frontal(attrs[pose_key], frontal_max_yaw):
                self.frontals.setdefault(label, []).append(i)
            else:
                self.inputs.append(i)
        if missing:
            warn_on_main_rank(log, "%d samples of %s have no %r attribute and were left out", missing, source, pose_key)
        if paired:
            dropped = [i for i in self.inputs if int(labels[i]) not in self.frontals]
            if dropped:
                warn_on_main_rank(log, "%d non-frontal samples have no frontal of their identity and were left out",
                                  len(dropped))
                self.inputs = [i for i in self.inputs if int(labels[i]) in self.frontals]
        self._all_frontals = [i for idx in self.frontals.values() for i in idx]
        if not self.inputs or not self._all_frontals:
            raise ValueError(
                f"{source}: found {len(self.inputs)} non-frontal and {len(self._all_frontals)} frontal samples "
                f"(pose attribute {pose_key!r}); frontalization needs both. Build the LMDB with pose tags."
            )
        self._labels = labels
        n_self = int(round(float(self_pairs) * len(self.inputs)))
        picks = np.linspace(0, len(self._all_frontals) - 1, n_self).round().astype(int) if n_self else []
        self.self_inputs: List[int] = [self._all_frontals[k] for k in picks]

    def __len__(self) -> int:
        return len(self.inputs) + len(self.self_inputs)

    def set_epoch(self, epoch: int) -> None:
        """Draw other targets and augmentations in each epoch (the engine calls this)."""
        self.epoch = int(epoch)

    def identities(self) -> List[int]:
        """Labels that have at least one frontal sample (the gallery identities)."""
        return sorted(self.frontals)

    def load(self, index: int) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        """LMDB sample ``index`` aligned to ``size`` x ``size``: (uint8 image BGR/gray, landmarks in the crop or None)."""
        sample = self.data[index]
        image, lm = sample["image"], sample.get("landmarks")
        if image.shape[0] == self.size and image.shape[1] == self.size:
            return image, lm
        if lm is None:
            raise ValueError(
                f"LMDB sample {index} is {image.shape[1]}x{image.shape[0]} without landmarks; "
                f"store aligned {self.size}x{self.size} crops or 5-point landmarks"
            )
        crop, M = align_face(image, lm, template="lightcnn", size=self.size)
        lm_crop = np.asarray(lm, np.float64) @ M[:, :2].T + M[:, 2]
        return crop, lm_crop

    def faces(self, indices: Iterable[int]) -> torch.Tensor:
        """LMDB samples ``indices`` aligned as :meth:`load` gives them (not mirrored): (N, C, size, size)
        float32 in [0, 1], RGB or gray as ``channels``."""
        return torch.stack([image_to_tensor(self.load(i)[0], self.channels) for i in indices])

    def _target_index(self, label: int, rng: Optional[np.random.Generator] = None) -> int:
        pool = self.frontals[label] if self.paired else self._all_frontals
        if self.fixed_target:
            return pool[0]
        if rng is not None:
            return pool[int(rng.integers(len(pool)))]
        return pool[int(torch.randint(len(pool), ()).item())]

    def __getitem__(self, i: int) -> Dict:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} pairs")
        i = i % len(self)
        own = i >= len(self.inputs)
        index = self.self_inputs[i - len(self.inputs)] if own else self.inputs[i]
        label = int(self._labels[index])
        image, lm = self.load(index)
        rng = None
        if self.seed is not None:
            seed = sample_seed(self.seed, self.epoch, i)
            rng = np.random.default_rng(seed)
            if hasattr(self.input_transform, "set_random_seed"):
                self.input_transform.set_random_seed(seed)
        tindex = index if own else self._target_index(label, rng)
        target = image if own else self.load(tindex)[0]
        flip = self.mirror is not None and lm is not None and facing(lm) != self.mirror
        x = image_to_tensor(self.input_transform(image=image)["image"] if self.input_transform else image,
                            self.channels)
        y = image_to_tensor(target, self.channels)
        if flip:
            x = x.flip(-1)
            y = y.flip(-1)
        return {
            "input": x,
            "target": y,
            "label": label,
            "target_label": int(self._labels[tindex]),
            "index": index,
            "flipped": bool(flip),
            "self_pair": own,
        }
