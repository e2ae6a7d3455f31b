"""Five-point alignment: templates, matrices, and real LFW faces with their landmarks."""
import cv2
import numpy as np
import pytest

from lightface.data.align import (
    align_face,
    estimate_transform,
    invert_affine,
    landmarks_at_border,
    template_base_size,
    template_points,
    transform_points,
)
from lightface.data.io import read_image
from lightface.data.sources import read_landmarks_file


def _midpoints(pts):
    return (pts[0] + pts[1]) / 2, (pts[3] + pts[4]) / 2


@pytest.mark.parametrize(
    "template,size,eye,mouth",
    [("lightcnn", 128, (64, 40), (64, 88)), ("lightcnn_train", 144, (72, 48), (72, 96)),
     ("lightcnn", 256, (128, 80), (128, 176)), ("lightcnn", 144, (72, 48), (72, 96))],
)
def test_lightcnn_template_midpoints(template, size, eye, mouth):
    pts = template_points(template, size)
    em, mm = _midpoints(pts)
    np.testing.assert_allclose(em, eye, atol=1e-9)
    np.testing.assert_allclose(mm, mouth, atol=1e-9)
    assert pts[0, 1] == pts[1, 1] and pts[3, 1] == pts[4, 1]  # eyes and mouth level
    assert pts[0, 0] < pts[2, 0] < pts[1, 0]  # viewer's left eye first, nose between


def test_train_template_center_crop_is_test_template():
    np.testing.assert_allclose(template_points("lightcnn_train") - 8, template_points("lightcnn"))


def test_ffhq_template_is_the_celeba_hq_framing(shared_data, shared_models):
    """"ffhq": the FFHQ / CelebA-HQ crop of the Light CNN face (0.74x as large, eyes lower);
    the main faces of the real CelebA-HQ photos, detected and scaled to 128, sit on it."""
    from lightface.data.detect import FaceDetector, main_face

    pts = template_points("ffhq")
    em, mm = _midpoints(pts)
    np.testing.assert_allclose(em, (64, 60.444), atol=1e-3)
    np.testing.assert_allclose(mm, (64, 96), atol=1e-9)
    np.testing.assert_allclose(template_points("ffhq", 1024), pts * 8)
    lc = template_points("lightcnn")
    assert (mm - em)[1] / (_midpoints(lc)[1] - _midpoints(lc)[0])[1] == pytest.approx(0.741, abs=1e-3)
    detector = FaceDetector(str(shared_models / "det_500m.onnx"))
    photos = sorted((shared_data / "celeba_hq").rglob("*.jpg"))
    assert len(photos) >= 5
    for path in photos:
        img = read_image(path, "bgr")
        marks = np.asarray(main_face(detector.detect(img), img.shape).landmarks).reshape(5, 2) * 128 / img.shape[0]
        em_i, mm_i = _midpoints(marks)
        assert np.abs(em_i - em).max() < 3 and np.abs(mm_i - mm).max() < 5, path.name


@pytest.mark.filterwarnings("ignore:`estimate` is deprecated:FutureWarning")
def test_arcface_template_is_insightface():
    from insightface.utils.face_align import arcface_dst, estimate_norm

    np.testing.assert_allclose(template_points("arcface"), arcface_dst, atol=1e-6)
    pts = np.asarray(arcface_dst, np.float64) * 1.7 + [30.0, 12.0]
    pts[2] += [1.5, -2.0]  # not an exact similarity: compare the least-squares fits
    for size in (112, 128, 224):
        np.testing.assert_allclose(estimate_transform(pts, "arcface", size),
                                   estimate_norm(pts.astype(np.float32), size), atol=1e-3)
    assert template_base_size("arcface") == 112


def test_exact_similarity_is_recovered_and_inverted():
    dst = template_points("lightcnn")
    angle, scale, t = 0.3, 1.9, np.array([40.0, 25.0])
    R = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    src = dst @ R.T + t  # template -> image
    M = estimate_transform(src, "lightcnn")
    np.testing.assert_allclose(transform_points(src, M), dst, atol=1e-6)
    np.testing.assert_allclose(transform_points(dst, invert_affine(M)), src, atol=1e-6)


@pytest.mark.filterwarnings("ignore:`estimate` is deprecated:FutureWarning")
def test_fit_works_with_and_without_skimage_from_estimate(monkeypatch):
    """pyproject allows scikit-image>=0.21, whose releases before 0.26 have no
    ``SimilarityTransform.from_estimate``, only the in-place ``estimate`` (0.26 deprecates it):
    the alignment fits on both and the matrices agree."""
    from skimage.transform import SimilarityTransform

    pts = template_points("arcface") * 1.7 + [30.0, 12.0]
    pts[2] += [1.5, -2.0]  # not an exact similarity
    new_api = estimate_transform(pts, "lightcnn")
    with monkeypatch.context() as m:  # a scikit-image before 0.26: the classmethod does not exist there
        for cls in SimilarityTransform.__mro__:
            if "from_estimate" in vars(cls):
                m.delattr(cls, "from_estimate")
        assert not hasattr(SimilarityTransform, "from_estimate")
        old_api = estimate_transform(pts, "lightcnn")
        crop, _ = align_face(np.zeros((150, 150), np.uint8), pts)
        assert crop.shape == (128, 128)
        from lightface.data.align import _fit_similarity

        assert _fit_similarity(np.zeros((5, 2)), template_points("lightcnn")) is None  # a failed fit
    np.testing.assert_allclose(old_api, new_api, atol=1e-9)
    assert _fit_similarity(np.zeros((5, 2)), template_points("lightcnn")) is None


def test_align_keeps_dtype_and_channels():
    rng = np.random.default_rng(0)
    pts = template_points("lightcnn", 128) * 2 + 10
    for img in (rng.integers(0, 255, (300, 280, 3), dtype=np.uint8),
                rng.integers(0, 255, (300, 280), dtype=np.uint8),
                rng.random((300, 280, 1)).astype(np.float32)):
        crop, M = align_face(img, pts)
        assert crop.dtype == img.dtype and crop.shape == (128, 128) + img.shape[2:]
        assert M.shape == (2, 3) and M.dtype == np.float64
    crop, _ = align_face(img, pts, "lightcnn_train")
    assert crop.shape == (144, 144, 1)
    crop, _ = align_face(img, pts.reshape(-1), "arcface")
    assert crop.shape == (112, 112, 1)
    crop, _ = align_face(img, pts, "lightcnn_train", size=72)
    assert crop.shape == (72, 72, 1)


def test_align_pixels_match_warp():
    """A gray ramp warped by a pure scale keeps its values where the template says."""
    img = np.tile(np.arange(256, dtype=np.float32), (256, 1))
    pts = template_points("lightcnn") * 2.0  # image = crop scaled by 2
    crop, M = align_face(img, pts, "lightcnn")
    np.testing.assert_allclose(M, [[0.5, 0, 0], [0, 0.5, 0]], atol=1e-9)
    np.testing.assert_allclose(crop[10, :100], 2.0 * np.arange(100), atol=1e-3)


def test_antialias_averages_what_the_crop_shrinks_and_leaves_enlarged_faces_alone():
    """A face 4x larger than the crop: the plain warp samples 1-px stripes at the crop's pixel
    centres (all white: aliasing), antialias=True gives their average; where the crop enlarges
    the face, antialias changes nothing. M maps the original image either way."""
    stripes = np.zeros((700, 700), np.uint8)
    stripes[:, ::2] = 255
    pts = template_points("lightcnn") * 4 + [100, 50]
    plain, M = align_face(stripes, pts)
    smooth, M_aa = align_face(stripes, pts, antialias=True)
    np.testing.assert_array_equal(M, M_aa)
    assert plain[20:100, 20:100].min() == 255
    assert abs(float(smooth[20:100, 20:100].mean()) - 127.5) < 3 and smooth[20:100, 20:100].std() < 3
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (300, 280, 3), dtype=np.uint8)
    small = template_points("lightcnn") * 0.8 + 20
    np.testing.assert_array_equal(align_face(img, small)[0], align_face(img, small, antialias=True)[0])


def test_interpolation_choices():
    """bicubic / lanczos warp the same points (same M), differ from bilinear in the pixels;
    an unknown name is refused, naming the choices."""
    rng = np.random.default_rng(1)
    img = rng.integers(0, 255, (200, 200), dtype=np.uint8)
    pts = template_points("lightcnn") * 0.7 + 30  # enlarged 1.4x
    bilinear, M = align_face(img, pts)
    for name in ("bicubic", "lanczos"):
        crop, M_i = align_face(img, pts, interpolation=name)
        np.testing.assert_array_equal(M, M_i)
        assert crop.shape == bilinear.shape and np.abs(crop.astype(int) - bilinear).mean() > 1
    with pytest.raises(ValueError, match="interpolation must be one of.*bicubic"):
        align_face(img, pts, interpolation="cubic")


def test_warp_crop_is_align_faces_warp_for_any_matrix():
    """warp_crop with align_face's own matrix gives its crop (plain and antialiased); a matrix of
    one's own, the same destination at twice the scale, gives the crop at twice the size."""
    from lightface.data.align import warp_crop
    from lightface.restore.paste import rescale_affine

    rng = np.random.default_rng(2)
    img = cv2.GaussianBlur(rng.integers(0, 255, (300, 300, 3), dtype=np.uint8), (0, 0), 1.0)
    pts = template_points("lightcnn") * 1.8 + 20  # a face larger than the crop: antialias acts
    for antialias in (False, True):
        crop, M = align_face(img, pts, antialias=antialias)
        np.testing.assert_array_equal(warp_crop(img, M, 128, antialias=antialias), crop)
    big = warp_crop(img, rescale_affine(M, dst_scale=2), 256, antialias=True)
    assert big.shape == (256, 256, 3)
    half = cv2.resize(big, (128, 128), interpolation=cv2.INTER_AREA)
    assert np.abs(half.astype(int) - crop).mean() < 6


@pytest.mark.parametrize(
    "landmarks,msg",
    [(np.zeros((4, 2)), "5 \\(x, y\\) points"), (np.full((5, 2), np.nan), "NaN"),
     (np.ones((5, 2)), "degenerate")],
)
def test_bad_landmarks(landmarks, msg):
    with pytest.raises(ValueError, match=msg):
        align_face(np.zeros((64, 64), np.uint8), landmarks)


def test_bad_image_and_template():
    pts = template_points("lightcnn")
    with pytest.raises(ValueError, match="image must be"):
        align_face(np.zeros((4, 64, 64, 3), np.uint8), pts)
    with pytest.raises(ValueError, match="unknown alignment template"):
        align_face(np.zeros((64, 64), np.uint8), pts, template="dlib")
    with pytest.raises(ValueError, match="singular"):
        invert_affine(np.zeros((2, 3)))


def test_landmarks_at_border_counts_the_points_on_or_beyond_the_image_edge():
    """A face cut by the border: its detector puts the lost points on the edge (det_500m: x = -0.5 .. 1.5)."""
    pts = np.array([[30, 40], [70, 40], [50, 60], [30, 80], [70, 80]], np.float32)
    assert landmarks_at_border(pts, (100, 100, 3)) == 0
    assert landmarks_at_border(pts - [40, 0], (100, 100)) == 2  # the left eye and mouth corner beyond x = 0
    assert landmarks_at_border(pts - [28.6, 0], (100, 100)) == 2  # at x = 1.4: on the edge, as det_500m puts them
    assert landmarks_at_border(pts - [28.4, 0], (100, 100)) == 0  # x = 1.6: inside the 2-px margin
    assert landmarks_at_border(pts, (81, 100)) == 2  # the mouth corners on the last row
    assert landmarks_at_border(pts, (100, 100), margin=0) == 0
    assert landmarks_at_border(pts - [30.6, 0], (100, 100), margin=0) == 2


def test_lfw_landmarks_land_on_template(shared_data):
    root = shared_data / "lfw_identities"
    errs, level = [], []
    lines = (root / "landmarks_5pt.txt").read_text().splitlines()
    for line in lines:
        name, *vals = line.split()
        pts = np.asarray(vals, np.float64).reshape(5, 2)
        img = read_image(root / "images" / name)
        crop, M = align_face(img, pts)
        assert crop.shape == (128, 128, 3)
        w = transform_points(pts, M)
        em, mm = _midpoints(w)
        errs.append(np.r_[np.abs(em - (64, 40)), np.abs(mm - (64, 88))])
        level.append(abs(w[1, 1] - w[0, 1]))
    errs = np.array(errs)
    assert len(errs) == 180
    # least-squares over 5 points: near-frontal faces land within a pixel or two
    assert (errs.mean(0) < 2.0).all(), errs.mean(0)
    assert np.median(errs, 0).max() < 1.5
    assert (errs.max(1) < 3.0).mean() > 0.7  # the rest are turned or tilted faces (max ~7 px)
    assert np.median(level) < 2.0


@pytest.mark.parametrize(
    "template,size,eye,mouth_y",
    [("lightcnn", 128, (64, 40), 88), ("lightcnn_train", 144, (72, 48), 96), ("lightcnn", 144, (72, 48), 96),
     ("lightcnn", 256, (128, 80), 176)],
)
def test_eyes_method_keeps_the_design_contract_on_real_faces(shared_data, template, size, eye, mouth_y):
    """DESIGN.md "Alignment" and the original Light CNN recipe: eyes level, eye midpoint on (64, 40),
    mouth midpoint 48 px below it (y = 88) in the 128 crop ((72, 48) / y = 96 in the 144 training crop), exactly,
    on every real LFW face with its given landmarks; the mouth's x follows the face. The least-squares default
    (what the shipped models use) misses that by degrees and pixels on the same faces."""
    root = shared_data / "lfw_identities"
    table = read_landmarks_file(root / "landmarks_5pt.txt")
    assert len(table) == 180
    default_tilt, mouth_dx = [], []
    for rel, pts in table.items():
        M = estimate_transform(pts, template, size, method="eyes")
        q = transform_points(pts, M)
        em, mm = _midpoints(q)
        assert q[0, 0] < q[1, 0] and abs(q[1, 1] - q[0, 1]) < 1e-9, rel  # eyes level, viewer's left eye first
        np.testing.assert_allclose(em, eye, atol=1e-9, err_msg=rel)
        assert mm[1] == pytest.approx(mouth_y, abs=1e-9), rel
        mouth_dx.append(mm[0] - eye[0])
        d = transform_points(pts, estimate_transform(pts, template, size))
        default_tilt.append(np.degrees(abs(np.arctan2(d[1, 1] - d[0, 1], d[1, 0] - d[0, 0]))))
    assert np.abs(mouth_dx).max() > 2  # the mouth is not forced onto the mid-line: turned faces keep theirs
    assert max(default_tilt) > 5  # what "eyes" is for: the least-squares fit tilts the eye line
    rel = "Gordon_Brown/Gordon_Brown_0001.jpg"
    img = read_image(root / "images" / rel)
    crop, M = align_face(img, table[rel], template, size, method="eyes")
    np.testing.assert_array_equal(M, estimate_transform(table[rel], template, size, method="eyes"))
    np.testing.assert_array_equal(crop, cv2.warpAffine(img, M, (size, size), flags=cv2.INTER_LINEAR))


@pytest.mark.filterwarnings("ignore:`estimate` is deprecated:FutureWarning")
def test_default_alignment_stays_the_least_squares_fit_of_the_shipped_models(shared_data):
    """The shipped recognisers were trained and calibrated on least-squares crops: align_face's default (the
    DESIGN signature align_face(image, landmarks, template="lightcnn", size=128)) is still that fit, bit for bit,
    and is what method="similarity" names."""
    from skimage.transform import SimilarityTransform

    root = shared_data / "lfw_identities"
    table = read_landmarks_file(root / "landmarks_5pt.txt")
    for rel in sorted(table)[::9]:
        img = read_image(root / "images" / rel)
        tform = SimilarityTransform()
        assert tform.estimate(np.asarray(table[rel], np.float64), template_points("lightcnn", 128))
        expected = cv2.warpAffine(img, tform.params[:2], (128, 128), flags=cv2.INTER_LINEAR)
        crop, M = align_face(img, table[rel], template="lightcnn", size=128)
        np.testing.assert_allclose(M, tform.params[:2], rtol=0, atol=1e-9)
        np.testing.assert_array_equal(crop, expected)
        named, M_named = align_face(img, table[rel], template="lightcnn", size=128, method="similarity")
        np.testing.assert_array_equal(M_named, M)
        np.testing.assert_array_equal(named, crop)


def test_unknown_method_and_mouth_above_the_eyes_are_refused():
    pts = template_points("lightcnn")
    with pytest.raises(ValueError, match="method must be one of.*similarity.*eyes"):
        align_face(np.zeros((64, 64), np.uint8), pts, method="official")
    upside_down = pts.copy()
    upside_down[3:, 1] = 10.0  # mouth corners above the eye line: landmarks in the wrong order
    with pytest.raises(ValueError, match="mouth midpoint is not below.*method='similarity'"):
        align_face(np.zeros((64, 64), np.uint8), upside_down, method="eyes")
    # the symmetric template is mapped exactly by both methods
    np.testing.assert_allclose(estimate_transform(pts, method="eyes"), estimate_transform(pts), atol=1e-9)
