"""Image decoding (lightface.data.io): EXIF orientation, as phone photos store it.

A phone stores the sensor's pixels and says in EXIF how to turn them upright; photo viewers
and ``cv2.imread`` apply it. Every lightface reader must too, or the detector sees a face
lying on its side and the restore pipelines write sideways results.
"""
import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from lightface.data.io import exif_orientation, read_image, write_image
from lightface.restore.folder import load_image_with_alpha

PHOTO = "lfw_identities/images/Gordon_Brown/Gordon_Brown_0001.jpg"


def _with_orientation(src: np.ndarray, path, orientation: int, fmt: str) -> None:
    im = Image.fromarray(cv2.cvtColor(src, cv2.COLOR_BGR2RGB))
    exif = Image.Exif()
    exif[0x0112] = orientation
    im.save(path, format=fmt, exif=exif.tobytes(), **({"quality": 95} if fmt == "JPEG" else {}))


@pytest.fixture(scope="module")
def photo(shared_data):
    return read_image(shared_data / PHOTO)[:, 10:130]  # 150x120: a turned photo changes its shape


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_as_imread_and_viewers_do(photo, tmp_path, orientation):
    path = tmp_path / f"o{orientation}.jpg"
    _with_orientation(photo, path, orientation, "JPEG")
    assert exif_orientation(path.read_bytes()) == orientation
    ours = read_image(path)
    np.testing.assert_array_equal(ours, cv2.imread(str(path), cv2.IMREAD_COLOR))  # same decoder, same turn
    with Image.open(path) as im:
        viewer = cv2.cvtColor(np.asarray(ImageOps.exif_transpose(im).convert("RGB")), cv2.COLOR_RGB2BGR)
    assert ours.shape == viewer.shape and np.abs(ours.astype(int) - viewer).mean() < 2  # decoders differ in rounding
    assert read_image(path, "gray").shape == ours.shape[:2]
    restored_input, alpha, gray = load_image_with_alpha(path)  # what super_resolve / frontalize read
    np.testing.assert_array_equal(restored_input, ours)


def test_png_orientation_turns_colour_and_alpha_together(photo, tmp_path):
    rgba = np.dstack([photo, np.tile(np.arange(120, dtype=np.uint8) * 2, (150, 1))])
    path = tmp_path / "o6.png"
    im = Image.fromarray(cv2.cvtColor(rgba, cv2.COLOR_BGRA2RGBA))
    exif = Image.Exif()
    exif[0x0112] = 6
    im.save(path, exif=exif.tobytes())
    bgr, alpha, _ = load_image_with_alpha(path)
    np.testing.assert_array_equal(bgr, cv2.rotate(photo, cv2.ROTATE_90_CLOCKWISE))  # lossless: exact
    np.testing.assert_array_equal(alpha, cv2.rotate(rgba[:, :, 3], cv2.ROTATE_90_CLOCKWISE))


def test_images_without_exif_are_read_as_stored(photo, tmp_path):
    cv2.imwrite(str(tmp_path / "plain.png"), photo)
    assert exif_orientation((tmp_path / "plain.png").read_bytes()) == 1
    np.testing.assert_array_equal(read_image(tmp_path / "plain.png"), photo)
    cv2.imwrite(str(tmp_path / "plain.jpg"), photo)
    assert exif_orientation((tmp_path / "plain.jpg").read_bytes()) == 1


def test_write_image_round_trips_and_leaves_nothing_half_written(tmp_path):
    img = np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    out = write_image(tmp_path / "new" / "face.png", img)  # missing folders are created
    assert np.array_equal(read_image(out), img)
    with pytest.raises(OSError, match="unknown image extension '.xyz'"):
        write_image(tmp_path / "new" / "face.xyz", img)
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == ["face.png"]  # no temporary file left


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_a_pil_image_just_opened_is_turned_upright_as_its_file_is(photo, tmp_path, orientation):
    """``Image.open(phone_photo)`` still carries the EXIF orientation: pil_to_array turns it as read_image does."""
    from lightface.data.io import pil_to_array

    path = tmp_path / f"o{orientation}.png"  # lossless: PIL and OpenCV decode the same pixels
    _with_orientation(photo, path, orientation, "PNG")
    with Image.open(path) as im:
        np.testing.assert_array_equal(pil_to_array(im), read_image(path))
    # an image without the tag (made in memory, or already turned) is taken as it is
    stored = Image.fromarray(cv2.cvtColor(photo, cv2.COLOR_BGR2RGB))
    np.testing.assert_array_equal(pil_to_array(stored), photo)
    with Image.open(path) as im:
        np.testing.assert_array_equal(pil_to_array(ImageOps.exif_transpose(im)), read_image(path))


def test_16_bit_pil_images_are_scaled_as_their_file_and_ambiguous_modes_refused(photo, tmp_path):
    """A 16-bit gray PIL image (Image.open of a 16-bit PNG) is the 8-bit image its file gives, not a white one."""
    from lightface.data.io import pil_to_array
    from lightface.restore.paste import as_bgr

    gray16 = cv2.cvtColor(photo, cv2.COLOR_BGR2GRAY).astype(np.uint16) * 257 + 100
    path = tmp_path / "gray16.png"
    cv2.imwrite(str(path), gray16)
    with Image.open(path) as im:
        assert im.mode.startswith("I;16")
        np.testing.assert_array_equal(pil_to_array(im), read_image(path, "gray"))
        np.testing.assert_array_equal(as_bgr(im), read_image(path))  # what SuperResolver / Frontalizer read
    for mode, values in (("I", gray16.astype(np.int32)), ("F", gray16.astype(np.float32) / 65535)):
        with pytest.raises(TypeError, match=f"mode '{mode}'.*no fixed range.*8-bit"):
            pil_to_array(Image.fromarray(values, mode))
