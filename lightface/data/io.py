"""Image reading and colour conversion shared by datasets, embedders and restorers.

Colour order: arrays are BGR (as OpenCV reads them) unless a function says otherwise;
gray images are 2-D (H, W) uint8.
"""
import errno
import logging
import os
import stat
from pathlib import Path
from typing import Sequence, Union

import cv2
import numpy as np

from ..utils.atomic_write import atomic_file

__all__ = ["IMAGE_EXTENSIONS", "JPEG_EXTENSIONS", "ImageReadError", "NotARegularFileError", "read_file_bytes",
           "decode_unchanged", "composite_on_black", "is_pil_image", "pil_to_array", "has_image_extension",
           "log_left_out", "decode_image", "read_image", "write_image", "check_image_output", "opencv_error_text",
           "to_gray", "to_bgr", "exif_orientation", "apply_orientation", "image_size"]

#: the names of a JPEG file: ``.jfif``, ``.jpe`` and ``.jif`` are JPEGs as Windows and web browsers save them
JPEG_EXTENSIONS = (".jpg", ".jpeg", ".jpe", ".jfif", ".jif")
#: the file name extensions of images (lower case), the one list every folder walk of lightface filters on
IMAGE_EXTENSIONS = JPEG_EXTENSIONS + (".png", ".bmp", ".pgm", ".ppm", ".pbm", ".gif", ".webp", ".tif", ".tiff")


def has_image_extension(path: Union[str, os.PathLike]) -> bool:
    """Whether ``path``'s name ends with one of :data:`IMAGE_EXTENSIONS` (any case)."""
    return os.fspath(path).lower().endswith(IMAGE_EXTENSIONS)


def log_left_out(logger: logging.Logger, where: Union[str, os.PathLike], left_out: Sequence) -> None:
    """Say in one log line how many files a walk of the folder(s) ``where`` left out for their extension, with an
    example (nothing when ``left_out`` is empty), so that no photo is dropped silently."""
    if left_out:
        logger.info("%s: left out %d file(s) whose extension is not an image's (%s), e.g. %s", where, len(left_out),
                    " ".join(IMAGE_EXTENSIONS), left_out[0])


class ImageReadError(ValueError):
    """An image file that is missing, empty, truncated or not an image."""


class NotARegularFileError(OSError):
    """A path that is not a regular file (a FIFO, socket, device or directory): never read,
    because reading a FIFO or a device can block forever or never end."""


def _file_kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISDIR(mode):
        return "a directory"
    return "not a regular file"


def read_file_bytes(path: Union[str, os.PathLike]) -> bytes:
    """The bytes of a regular file; FIFOs, sockets, devices and directories are refused.

    The file is opened non-blocking and checked with ``fstat`` before any read, so a FIFO
    named ``*.jpg`` (whose ``open`` would wait for a writer forever) or ``/dev/zero``
    (which never ends) cannot hang the caller.

    Raises:
        NotARegularFileError: ``path`` is not a regular file (an ``OSError``).
        OSError: the file cannot be opened or read (missing, permissions, symlink loop ...).
    """
    fd = os.open(os.fspath(path), os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotARegularFileError(errno.EINVAL, f"{_file_kind(mode)}, not a regular file", os.fspath(path))
        with os.fdopen(fd, "rb", closefd=False) as fh:
            return fh.read()
    finally:
        os.close(fd)


def _from_pil(data: bytes) -> np.ndarray:
    from io import BytesIO

    from PIL import Image

    with Image.open(BytesIO(data)) as im:
        im.load()
        return cv2.cvtColor(np.asarray(im.convert("RGB")), cv2.COLOR_RGB2BGR)


def _unreadable_reason(data: bytes, err: Exception) -> str:
    """Why neither OpenCV nor PIL decoded ``data``, for an error message a user can act on."""
    from PIL import UnidentifiedImageError

    if isinstance(err, UnidentifiedImageError):  # PIL's own text names an anonymous in-memory buffer
        return (f"no image format known to OpenCV or PIL; its {len(data)} bytes begin {bytes(data[:8])!r}: "
                "a file of another kind, or one damaged in transfer")
    return f"{type(err).__name__}: {err}"


#: bytes near the start of a file that announce EXIF data (JPEG APP1, PNG eXIf, WebP EXIF) or a TIFF header
_EXIF_MARKS = (b"Exif", b"eXIf", b"EXIF")
_TIFF_HEADERS = (b"II*\x00", b"MM\x00*")


def _pil_orientation(im) -> int:
    """The EXIF orientation (1-8) a PIL image carries; 1 when it has none or it cannot be read."""
    try:
        value = im.getexif().get(0x0112, 1)
    except Exception:  # unreadable metadata: the pixels as stored
        return 1
    return int(value) if value in range(1, 9) else 1


def exif_orientation(data: bytes) -> int:
    """The EXIF orientation (1-8; 1 = stored upright) of encoded image bytes; 1 when there is none."""
    head = bytes(data[:65536])
    if not (head[:4] in _TIFF_HEADERS or any(mark in head for mark in _EXIF_MARKS)):
        return 1
    from io import BytesIO

    from PIL import Image

    try:
        with Image.open(BytesIO(bytes(data))) as im:
            return _pil_orientation(im)
    except Exception:  # not an image PIL reads: the pixels as stored
        return 1


def apply_orientation(img: np.ndarray, orientation: int) -> np.ndarray:
    """Turn pixels stored with EXIF ``orientation`` upright, as a photo viewer (and ``cv2.imread``) shows them.

    ``img`` is (H, W) or (H, W, C); orientations 5-8 swap H and W.
    """
    if orientation == 2:
        return cv2.flip(img, 1)
    if orientation == 3:
        return cv2.rotate(img, cv2.ROTATE_180)
    if orientation == 4:
        return cv2.flip(img, 0)
    if orientation == 5:  # transpose: mirror across the main diagonal
        return np.ascontiguousarray(img.swapaxes(0, 1))
    if orientation == 6:
        return cv2.rotate(img, cv2.ROTATE_90_CLOCKWISE)
    if orientation == 7:  # transverse: mirror across the anti-diagonal
        return np.ascontiguousarray(img.swapaxes(0, 1)[::-1, ::-1])
    if orientation == 8:
        return cv2.rotate(img, cv2.ROTATE_90_COUNTERCLOCKWISE)
    return img


def _scale_16bit(img: np.ndarray) -> np.ndarray:
    """16-bit pixels (0..65535) -> uint8 (0..255), rounded: how files and PIL images of 16 bits become 8."""
    return (img / 257.0).round().astype(np.uint8)


def decode_unchanged(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Decode encoded image bytes to uint8 with their channels as stored, upright.

    Returns (H, W) gray, (H, W, 3) BGR or (H, W, 4) BGRA. An EXIF orientation (a phone photo
    stored sideways) is applied, as photo viewers and ``cv2.imread`` do; 16-bit images are
    scaled to 8 bits; formats this OpenCV build cannot decode (GIF ...) go through PIL (BGR).
    Raises:
        ImageReadError: empty, truncated or undecodable data, or an unsupported pixel type.
    """
    if not len(data):
        raise ImageReadError(f"{source}: empty file")
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None:
        try:  # GIF and a few others that this OpenCV build cannot decode
            img = _from_pil(bytes(data))
        except Exception as err:
            raise ImageReadError(f"{source}: not a readable image ({_unreadable_reason(data, err)})") from err
    if img.dtype == np.uint16:
        img = _scale_16bit(img)
    elif img.dtype != np.uint8:
        raise ImageReadError(f"{source}: unsupported pixel type {img.dtype}")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    return apply_orientation(img, exif_orientation(data))


def composite_on_black(img: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 4) with alpha last (BGRA or RGBA) -> (H, W, 3), the colour composited onto black (scaled
    by alpha), in the same channel order; any other image is returned as it is. Files, numpy arrays and PIL
    images with transparency all become this before a face is detected or embedded."""
    if img.ndim != 3 or img.shape[2] != 4:
        return img
    alpha = img[:, :, 3:4].astype(np.float32) / 255.0
    return (img[:, :, :3].astype(np.float32) * alpha).round().astype(np.uint8)


def is_pil_image(item) -> bool:
    """Whether ``item`` is a PIL image (without importing PIL)."""
    return type(item).__module__.startswith("PIL.")


def pil_to_array(img) -> np.ndarray:
    """A PIL image -> uint8 gray (H, W) for gray modes, else BGR (H, W, 3), as its file is read
    (:func:`read_image`): upright (an EXIF orientation the image still carries, as one just opened
    from a phone photo does, is applied), 16-bit gray scaled to 8 bits, transparency composited onto
    black (:func:`composite_on_black`).

    Raises:
        TypeError: a 32-bit integer (mode ``"I"``) or float (``"F"``) image: its range is not known
            (as float numpy images are refused); convert it to 8 bits first.
    """
    mode = img.mode
    if mode == "F" or mode.startswith("I"):
        arr = np.asarray(img)
        if arr.dtype.kind != "u" or arr.dtype.itemsize != 2:
            raise TypeError(f"a PIL image of mode {mode!r} ({arr.dtype} pixels) has no fixed range (as float numpy "
                            "images have none); convert it to an 8-bit image (mode 'L' or 'RGB') with the scaling its "
                            "values need")
        arr = _scale_16bit(arr)
    elif mode in ("L", "1"):
        arr = np.asarray(img.convert("L"))
    elif mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in img.info:
        arr = cv2.cvtColor(composite_on_black(np.asarray(img.convert("RGBA"))), cv2.COLOR_RGB2BGR)
    else:
        arr = cv2.cvtColor(np.asarray(img.convert("RGB")), cv2.COLOR_RGB2BGR)
    return apply_orientation(arr, _pil_orientation(img))


def decode_image(data: bytes, color: str = "bgr", source: str = "<bytes>") -> np.ndarray:
    """Decode encoded image bytes to uint8, upright (see :func:`decode_unchanged`).

    Args:
        data: the encoded file (JPEG, PNG, PGM, BMP, WebP, GIF, TIFF ...).
        color: ``"bgr"`` (H,W,3), ``"rgb"`` (H,W,3) or ``"gray"`` (H,W; ITU-R 601 luma).
        source: a name for error messages.
    An EXIF orientation (a phone photo stored sideways) is applied, as photo viewers and
    ``cv2.imread`` do, so detectors see the face upright and landmarks refer to the upright
    image. Alpha is composited onto black; 16-bit images are scaled to 8 bits.
    Raises:
        ImageReadError: empty, truncated or undecodable data.
    """
    if color not in ("bgr", "rgb", "gray"):
        raise ValueError(f"color must be 'bgr', 'rgb' or 'gray', got {color!r}")
    img = composite_on_black(decode_unchanged(data, source))
    if color == "gray":
        return to_gray(img)
    bgr = to_bgr(img)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB) if color == "rgb" else bgr


def read_image(path: Union[str, os.PathLike], color: str = "bgr") -> np.ndarray:
    """Read an image file as uint8 (see :func:`decode_image` for ``color``).

    Only regular files are read (see :func:`read_file_bytes`).

    Raises:
        ImageReadError: the file is missing, empty, truncated, not an image, or not a
            regular file (FIFO, device ...).
    """
    path = Path(path)
    try:
        data = read_file_bytes(path)
    except OSError as err:
        raise ImageReadError(f"{path}: cannot read ({err.strerror or err})") from err
    return decode_image(data, color, str(path))


def image_size(path: Union[str, os.PathLike]) -> tuple:
    """``(width, height)`` of an image file as :func:`read_image` returns it (upright: an EXIF orientation of 5-8
    swaps the two), from its header where PIL reads one (no pixels decoded), else by decoding it.

    Only regular files are opened (a FIFO named ``*.jpg`` never blocks: :func:`read_file_bytes`).

    Raises:
        ImageReadError: the file is missing, not a regular file, or not an image.
    """
    path = Path(path)
    try:
        st = os.stat(path)
    except OSError as err:
        raise ImageReadError(f"{path}: cannot read ({err.strerror or err})") from err
    if not stat.S_ISREG(st.st_mode):
        raise ImageReadError(f"{path}: cannot read ({_file_kind(st.st_mode)}, not a regular file)")
    from PIL import Image

    try:
        with Image.open(path) as im:
            w, h = im.size
            orientation = _pil_orientation(im)
    except Exception:  # a format only OpenCV reads, or no image at all: decode it (ImageReadError if unreadable)
        h, w = read_image(path).shape[:2]
        return w, h
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def check_image_output(path: Union[str, os.PathLike]) -> Path:
    """``path`` when :func:`write_image` can write an image there (its extension names a format
    OpenCV encodes), so that a run can refuse a bad output name before its work, not after.

    Raises:
        ValueError: ``path`` is a folder, or its extension is not an image format OpenCV writes.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder; give an image file name such as {path / 'sheet.jpg'}")
    if not cv2.haveImageWriter(f"x{path.suffix}"):
        raise ValueError(f"{path}: {path.suffix or 'no extension'!r} is not an image format OpenCV writes; "
                         "use .jpg, .png or .webp")
    return path


def opencv_error_text(err: Exception) -> str:
    """One line for a ``cv2.error``: the failed OpenCV function and condition, without the source-file prefix."""
    func, cond = getattr(err, "func", ""), getattr(err, "err", "")
    return f"OpenCV {func}(): {cond}" if func and cond else " ".join(str(err).split())


def write_image(path: Union[str, os.PathLike], img: np.ndarray) -> Path:
    """Write a BGR (H,W,3), BGRA (H,W,4) or gray (H,W) uint8 image, encoded by ``path``'s extension,
    atomically: a reader (or a run killed mid-write) never sees a truncated file; missing parent
    folders are created. Returns the path.

    Raises:
        OSError: OpenCV cannot encode that extension or the file cannot be written.
    """
    path = Path(path)
    try:
        ok, buf = cv2.imencode(path.suffix, img)
    except cv2.error:
        ok = False
    if not ok:
        raise OSError(f"could not encode {path} (unknown image extension {path.suffix!r}?)")
    with atomic_file(path) as f:
        f.write(buf.tobytes())
    return path


def to_gray(img: np.ndarray) -> np.ndarray:
    """BGR (H,W,3) or gray (H,W) uint8 -> gray (H,W) with ITU-R 601 weights (0.299 R + 0.587 G + 0.114 B)."""
    if img.ndim == 2:
        return img
    if img.ndim == 3 and img.shape[2] == 3:
        return cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    raise ValueError(f"expected a gray (H,W) or BGR (H,W,3) image, got shape {img.shape}")


def to_bgr(img: np.ndarray) -> np.ndarray:
    """Gray (H,W) or BGR (H,W,3) uint8 -> BGR (H,W,3)."""
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if img.ndim == 3 and img.shape[2] == 3:
        return img
    raise ValueError(f"expected a gray (H,W) or BGR (H,W,3) image, got shape {img.shape}")
