"""Does a face look frontal? A pose check from a 5-point detector, for frontalizers.

A frontalizer that passes its profile input through keeps the profile's identity, so its
rank-1 looks good; the left-right asymmetry (:func:`lightface.ops.symmetry_loss`) does not
always catch it (a passed-through profile with the black alignment corners filled and its
mirror image ghosted over it scores like a real frontal). The detector's landmarks do: the
nose of a profile lies far from the midline of the eyes and mouth corners
(:func:`lightface.data.pose_pairs.yaw_offset`).
"""
import os
from typing import Dict, Optional, Union

import cv2
import numpy as np
from torch import Tensor

from ..data.convert import tensor_to_image
from ..data.detect import FaceDetector, main_face
from ..data.pose_pairs import yaw_offset

__all__ = ["FRONTAL_OFFSET", "PAD", "crop_landmarks", "load_pose_detector", "pose_report"]

#: |yaw_offset| below this reads as frontal (CFP via det_500m: 95% of frontals under 0.09, 95% of profiles over 0.30).
FRONTAL_OFFSET = 0.15
#: black border (px) added around each aligned crop before detection (face-filling crops are often missed).
PAD = 64


def load_pose_detector(path: Union[str, os.PathLike]) -> FaceDetector:
    """The detector of the pose check: ``path`` (e.g. ``det_500m.onnx``) on the CPU, sized for 128 px crops
    padded by :data:`PAD` (256 x 256)."""
    return FaceDetector(path, det_size=256, device="cpu")


def crop_landmarks(crop: np.ndarray, detector: FaceDetector) -> Optional[np.ndarray]:
    """The 5 landmarks a detector finds on an aligned face crop, or None when it finds no face.

    Args:
        crop: uint8 (H, W, 3) or (H, W) image of one aligned face (e.g. a 128 ``lightcnn`` crop); detected
            with a black border of :data:`PAD` pixels around it (face-filling crops are often missed).
        detector: a :class:`~lightface.data.detect.FaceDetector` (or any object with its ``detect``).
    Returns:
        float64 (5, 2) ``(x, y)`` in the crop's pixels (left eye, right eye, nose, left/right mouth corner)
        of the main face (:func:`~lightface.data.detect.main_face`), or None.
    """
    img = cv2.copyMakeBorder(np.ascontiguousarray(crop), PAD, PAD, PAD, PAD, cv2.BORDER_CONSTANT)
    found = main_face(detector.detect(img), img.shape)
    return None if found is None else np.asarray(found.landmarks, np.float64).reshape(5, 2) - PAD


def pose_report(faces: Tensor, detector: FaceDetector) -> Dict[str, float]:
    """Detect the 5 landmarks of aligned faces and summarise how frontal they look.

    Args:
        faces: (N, C, H, W) float [0, 1], RGB or gray (e.g. the 128 ``lightcnn`` crops).
        detector: a :class:`~lightface.data.detect.FaceDetector`, e.g. :func:`load_pose_detector`.
    Returns:
        ``detected`` (share of faces found), ``mean_abs_offset`` (mean |yaw_offset| of the faces
        found; NaN when none) and ``frontal_share`` (share of all faces found with |yaw_offset| <
        :data:`FRONTAL_OFFSET`; a missed face does not count as frontal).
    """
    offsets = []
    for face in faces:
        landmarks = crop_landmarks(tensor_to_image(face), detector)
        if landmarks is not None:
            offsets.append(abs(yaw_offset(landmarks)))
    values = np.asarray(offsets, np.float64)
    n = max(len(faces), 1)
    return {"detected": len(values) / n,
            "mean_abs_offset": float(values.mean()) if len(values) else float("nan"),
            "frontal_share": float((values < FRONTAL_OFFSET).sum() / n)}
