"""lightface.data.convert: the one image <-> tensor pair (colour order, gray, rounding, batches)."""
import cv2
import numpy as np
import pytest
import torch

from lightface.data.convert import image_to_tensor, tensor_to_image


def _bgr(seed=0, shape=(5, 7, 3)):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def test_colour_order_and_values():
    bgr = np.zeros((4, 4, 3), np.uint8)
    bgr[..., 2] = 255  # red in OpenCV order
    t = image_to_tensor(bgr)
    assert t.shape == (3, 4, 4) and t.dtype == torch.float32
    assert t[0].min() == 1.0 and t[1:].max() == 0.0  # RGB: red first
    assert torch.equal(image_to_tensor(bgr[..., ::-1], color="rgb"), t)
    img = _bgr()
    assert torch.equal(image_to_tensor(img), torch.from_numpy(img[..., ::-1].transpose(2, 0, 1).copy()).float() / 255)


def test_gray_is_opencv_luma_and_replication():
    img = _bgr(1)
    gray = image_to_tensor(img, channels=1)
    assert gray.shape == (1, 5, 7)
    assert torch.equal(gray[0], torch.from_numpy(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)).float() / 255)
    g = img[..., 0]
    assert image_to_tensor(g).shape == (1, 5, 7)  # gray stays gray
    three = image_to_tensor(g, channels=3)
    assert three.shape == (3, 5, 7) and torch.equal(three[0], three[2])
    bgra = np.dstack([img, np.full(img.shape[:2], 7, np.uint8)])
    assert torch.equal(image_to_tensor(bgra), image_to_tensor(img))  # alpha dropped


def test_round_trip_is_exact_and_rounding_is_to_nearest():
    img, g = _bgr(2), _bgr(3)[..., 0]
    assert np.array_equal(tensor_to_image(image_to_tensor(img)), img)
    assert np.array_equal(tensor_to_image(image_to_tensor(g)), g)
    assert np.array_equal(tensor_to_image(image_to_tensor(img), color="rgb"), img[..., ::-1])
    x = torch.tensor([0.0, 0.499 / 255, 0.501 / 255, 254.6 / 255, 1.0, -0.5, 2.0]).view(1, 1, 7)
    assert tensor_to_image(x).tolist() == [[0, 0, 1, 255, 255, 0, 255]]  # nearest, clamped, never truncated
    assert tensor_to_image(torch.full((3, 2, 2), 0.5, dtype=torch.float16)).dtype == np.uint8


def test_batches():
    imgs = [_bgr(i) for i in range(3)]
    batch = image_to_tensor(imgs)
    assert batch.shape == (3, 3, 5, 7) and torch.equal(batch[1], image_to_tensor(imgs[1]))
    assert torch.equal(image_to_tensor(np.stack(imgs)), batch)
    assert image_to_tensor(np.stack(imgs), channels=1).shape == (3, 1, 5, 7)
    grays = np.stack([i[..., 0] for i in imgs])
    assert image_to_tensor(grays, batch=True).shape == (3, 1, 5, 7)
    assert image_to_tensor([i[..., 0] for i in imgs]).shape == (3, 1, 5, 7)
    out = tensor_to_image(batch)
    assert out.shape == (3, 5, 7, 3) and np.array_equal(out[2], imgs[2])


def test_bad_inputs():
    with pytest.raises(TypeError, match="uint8"):
        image_to_tensor(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ValueError, match="shape"):
        image_to_tensor(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(ValueError, match="channels"):
        image_to_tensor(_bgr(), channels=2)
    with pytest.raises(ValueError, match="color"):
        image_to_tensor(_bgr(), color="hsv")
    with pytest.raises(ValueError, match="1 \\(gray\\) or 3"):
        tensor_to_image(torch.zeros(2, 4, 4))
    with pytest.raises(ValueError, match="float"):
        tensor_to_image(torch.zeros(3, 4, 4, dtype=torch.uint8))
