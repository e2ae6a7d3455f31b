"""Face detection with 5 landmarks on real photos (InsightFace SCRFD ONNX and OpenCV YuNet)."""
import numpy as np
import pytest

from lightface.data.align import align_face, transform_points
from lightface.data.detect import DetectedFace, DetectorError, FaceDetector, main_face
from lightface.data.io import read_image, to_gray
from lightface.data.sources import read_landmarks_file

# ../shared/models/README.md: det_500m finds these counts on the 9 whole photos
WHOLE = ["codeformer_whole_imgs/00.jpg", "codeformer_whole_imgs/01.jpg", "codeformer_whole_imgs/02.png",
         "codeformer_whole_imgs/03.jpg", "codeformer_whole_imgs/04.jpg", "codeformer_whole_imgs/05.jpg",
         "codeformer_whole_imgs/06.png", "gfpgan_whole_imgs/10045.png", "gfpgan_whole_imgs/Blake_Lively.jpg"]
SCRFD_COUNTS = [4, 4, 4, 1, 1, 1, 2, 3, 2]


@pytest.fixture(scope="module")
def scrfd(shared_models):
    return FaceDetector(shared_models / "det_500m.onnx", device="cpu")


@pytest.fixture(scope="module")
def yunet(shared_models):
    return FaceDetector(shared_models / "face_detection_yunet_2023mar.onnx", device="cpu")


def _check_faces(faces, shape):
    areas = [f.area for f in faces]
    assert areas == sorted(areas, reverse=True)
    for f in faces:
        assert isinstance(f, DetectedFace)
        assert f.box.shape == (4,) and f.landmarks.shape == (5, 2) and f.landmarks.dtype == np.float32
        assert 0.0 <= f.score <= 1.0
        x1, y1, x2, y2 = f.box
        assert x2 > x1 and y2 > y1
        lm = f.landmarks
        # every landmark inside the (slightly grown) box, viewer's left eye first, mouth below eyes
        pad = 0.15 * (x2 - x1)
        assert (lm[:, 0] > x1 - pad).all() and (lm[:, 0] < x2 + pad).all()
        assert lm[0, 0] < lm[1, 0] and lm[3, 0] < lm[4, 0]
        assert lm[3:, 1].mean() > lm[:2, 1].mean()


def test_scrfd_counts_on_whole_photos(scrfd, shared_data):
    counts = []
    for rel in WHOLE:
        img = read_image(shared_data / "real_lq_faces" / rel)
        faces = scrfd.detect(img)
        _check_faces(faces, img.shape)
        counts.append(len(faces))
    assert counts == SCRFD_COUNTS


def test_yunet_agrees_with_scrfd(yunet, scrfd, shared_data):
    for rel, n in zip(WHOLE, SCRFD_COUNTS):
        img = read_image(shared_data / "real_lq_faces" / rel)
        faces = yunet.detect(img)
        _check_faces(faces, img.shape)
        assert n <= len(faces) <= n + 1, rel
        ref = scrfd.detect(img)[0]
        iod = np.linalg.norm(ref.landmarks[1] - ref.landmarks[0])
        assert np.abs(faces[0].landmarks - ref.landmarks).max() < 0.35 * iod, rel


def test_gray_input_max_faces_and_yunet_prefix(shared_models, shared_data, scrfd):
    img = read_image(shared_data / "real_lq_faces" / WHOLE[0])
    gray = scrfd.detect(to_gray(img))
    assert len(gray) == 4
    assert len(scrfd.detect(img, max_faces=2)) == 2
    det = FaceDetector(f"yunet:{shared_models / 'face_detection_yunet_2023mar.onnx'}", threshold=0.9)
    assert det.backend == "yunet" and all(f.score >= 0.9 for f in det.detect(img))


def test_detect_then_align_matches_lfw_landmarks(scrfd, shared_data):
    root = shared_data / "lfw_identities"
    diffs = []
    for line in (root / "landmarks_5pt.txt").read_text().splitlines()[:20]:
        name, *vals = line.split()
        ref = np.asarray(vals, np.float64).reshape(5, 2)
        img = read_image(root / "images" / name)
        faces = scrfd.detect(img)
        assert faces, name
        crop, M = align_face(img, faces[0].landmarks)
        w = transform_points(ref, M)
        diffs.append(np.abs((w[0] + w[1]) / 2 - (64, 40)).max())
    assert np.median(diffs) < 3.0


@pytest.mark.parametrize("rel", ["Charles_Schumer/Charles_Schumer_0002.jpg", "Rosalyn_Carter/Rosalyn_Carter_0001.jpg"])
def test_main_face_is_the_centred_subject_not_a_bigger_bystander(scrfd, shared_data, rel):
    # LFW fold-2 photos (pairs_dev.txt) where det_500m's largest face is someone else's:
    # the main face must be the one the given landmarks mark
    root = shared_data / "lfw_train"
    img = read_image(root / "images" / rel)
    subject = read_landmarks_file(root / "landmarks_5pt.txt")[rel].mean(0)
    faces = scrfd.detect(img)
    assert len(faces) >= 2
    assert np.linalg.norm(faces[0].landmarks.mean(0) - subject) > 20  # the largest is the bystander
    assert np.linalg.norm(main_face(faces, img.shape).landmarks.mean(0) - subject) < 10


@pytest.mark.parametrize("rel", ["cfp/Images/470/profile/01.jpg"])
def test_main_face_is_the_face_not_the_ear_and_hair_of_a_profile(yunet, shared_data, rel):
    # YuNet also scores the ear and hair of this profile as a face (0.76), a slightly bigger and more central
    # box than the face itself (0.89): the main face is the one the hand-annotated fiducials lie in
    img = read_image(shared_data / rel)
    points = np.loadtxt(shared_data / rel.replace("Images", "Fiducials").replace(".jpg", ".txt"), delimiter=",")
    faces = yunet.detect(img)
    assert len(faces) == 2
    inside = [float(np.mean((points[:, 0] >= f.box[0]) & (points[:, 0] <= f.box[2]) & (points[:, 1] >= f.box[1])
                            & (points[:, 1] <= f.box[3]))) for f in faces]
    face = faces[int(np.argmax(inside))]
    assert face.score > 0.85 and max(inside) > 0.8 and min(inside) < 0.2
    assert main_face(faces, img.shape) is face


def test_main_face_rule():
    def face(x1, y1, x2, y2):
        return DetectedFace(np.array([x1, y1, x2, y2], np.float32), 0.9, np.zeros((5, 2), np.float32))

    centred, border = face(80, 80, 120, 120), face(0, 0, 50, 50)  # areas 1,600 < 2,500
    assert main_face([border, centred], (200, 200, 3)) is centred
    assert main_face([border, centred], (50, 50)) is border  # near the centre of a small image, it wins
    assert main_face([], (200, 200)) is None
    # a less sure box a little bigger and nearer the centre does not beat a sure face (area times score)
    sure, unsure = face(20, 20, 100, 100), face(30, 30, 115, 115)
    sure = DetectedFace(sure.box, 0.89, sure.landmarks)
    unsure = DetectedFace(unsure.box, 0.6, unsure.landmarks)
    assert main_face([unsure, sure], (150, 150)) is sure


def test_model_folder_pack(tmp_path, shared_models, shared_data):
    (tmp_path / "det_500m.onnx").symlink_to(shared_models / "det_500m.onnx")
    det = FaceDetector(tmp_path, device="cpu")
    img = read_image(shared_data / "real_lq_faces" / WHOLE[3])
    assert len(det.detect(img)) == 1


def test_errors(tmp_path, scrfd):
    with pytest.raises(DetectorError, match="not found"):
        FaceDetector(tmp_path / "missing.onnx")
    with pytest.raises(TypeError, match="uint8"):
        scrfd.detect(np.zeros((64, 64, 3), np.float32))
    with pytest.raises(ValueError, match="shape"):
        scrfd.detect(np.zeros((2, 64, 64, 3), np.uint8))
    with pytest.raises(ValueError, match="threshold"):
        FaceDetector(tmp_path / "x.onnx", threshold=2)
    assert scrfd.detect(np.full((200, 200, 3), 127, np.uint8)) == []


@pytest.mark.slow
def test_pack_name_offline_falls_back_to_the_shipped_yunet(tmp_path, caplog):
    """A pack that cannot be downloaded here: the shipped YuNet runs instead, and the log says so."""
    with caplog.at_level("WARNING"):
        det = FaceDetector("buffalo_sc", root=tmp_path, device="cpu")
    if det.backend == "insightface":  # a connected machine downloads the pack
        return
    assert det.backend == "yunet"
    assert "YuNet" in caplog.text and "buffalo_sc" in caplog.text


def test_face_filling_crops_found_with_pad_retry(scrfd, shared_models, shared_data):
    """Aligned 512x512 crops: SCRFD misses most of them unpadded; the padded retry finds them."""
    crops = sorted((shared_data / "real_lq_faces" / "gfpgan_cropped_faces").glob("*.png"))
    assert crops
    plain = FaceDetector(shared_models / "det_500m.onnx", device="cpu", pad_retry=0)
    missed = 0
    for path in crops:
        img = read_image(path)
        missed += not plain.detect(img)
        faces = scrfd.detect(img)
        assert len(faces) == 1, path.name
        lm = faces[0].landmarks
        assert (lm >= 0).all() and (lm < 512).all()
        assert abs((lm[0, 0] + lm[1, 0]) / 2 - 256) < 60  # centred face in an aligned crop
    assert missed >= 1


OCCLUDED = "Alastair_Campbell/Alastair_Campbell_0002.jpg"  # lfw_train; occlusion seed 1 covers the mouth


def occluded_lfw_photo(shared_data):
    """(clean photo, the same photo with a hard_conditions occlusion that det_500m scores under 0.5)."""
    from lightface.eval.hard_conditions import occlusion

    img = read_image(shared_data / "lfw_train" / "images" / OCCLUDED)
    return img, occlusion(img, np.random.default_rng(1))


def test_a_lower_threshold_per_call_finds_an_occluded_face(scrfd, shared_data):
    """detect(threshold=) below the detector's own: the occluded face comes back with nearly
    its clean landmarks, and what the default threshold finds is unchanged by the lower floor."""
    from lightface.data.detect import MIN_THRESHOLD

    clean, occluded = occluded_lfw_photo(shared_data)
    assert scrfd.detect(occluded) == []
    low = scrfd.detect(occluded, threshold=0.25)
    best = max(low, key=lambda f: f.score)
    assert 0.25 <= best.score < scrfd.threshold
    ref = scrfd.detect(clean)[0]
    assert np.abs(best.landmarks - ref.landmarks).max() < 6  # px, in a 150 px photo
    for name in WHOLE[:3]:  # photos with faces: the same faces at the default threshold
        img = read_image(shared_data / "real_lq_faces" / name)
        assert [f.score for f in scrfd.detect(img)] == [f.score for f in scrfd.detect(img, threshold=0.5)]
        assert all(f.score >= 0.5 for f in scrfd.detect(img))
    with pytest.raises(ValueError, match="threshold must be in"):
        scrfd.detect(clean, threshold=MIN_THRESHOLD / 2)


def test_a_banner_too_elongated_for_the_detector_has_no_face_and_photos_still_do(scrfd, yunet, shared_data):
    """An 8 x 6000 banner: SCRFD would resize it to 640 x 0 px (an OpenCV error that stopped every CLI);
    it holds no face a detector could see, so both backends say so, and real photos are unaffected."""
    photo = read_image(shared_data / "real_lq_faces" / WHOLE[3])
    for banner in (np.full((8, 6000, 3), 200, np.uint8), np.full((6000, 8, 3), 200, np.uint8)):
        assert scrfd.detect(banner) == [] and yunet.detect(banner) == []
        assert scrfd.detect(banner, threshold=0.25) == []  # the embedder's rescue asks again, lower
    assert len(scrfd.detect(photo)) == SCRFD_COUNTS[3]
    strip = np.zeros((photo.shape[0], photo.shape[1] * 4, 3), np.uint8)  # 4:1 panorama, the face at one end
    strip[:, :photo.shape[1]] = photo
    assert len(scrfd.detect(strip)) == 1
    with pytest.raises(ValueError, match=r"too small for detection \(1x1 px"):
        scrfd.detect(np.zeros((1, 1, 3), np.uint8))


def test_det_size_not_a_multiple_of_32_is_refused_for_insightface_and_taken_by_yunet(shared_models, shared_data):
    """det_size=600 used to be accepted for SCRFD, then every detection failed with a NumPy broadcast
    error (its anchor grid needs a multiple of the stride 32)."""
    from lightface.data.detect import check_detector_options

    scrfd_file = shared_models / "det_500m.onnx"
    with pytest.raises(ValueError, match="multiple of 32.*got 600: use 576 or 608"):
        FaceDetector(scrfd_file, det_size=600, device="cpu")
    with pytest.raises(ValueError, match="multiple of 32"):
        check_detector_options(scrfd_file, det_size=600)
    with pytest.raises(ValueError, match="multiple of 32"):
        check_detector_options("buffalo_l", det_size=600)  # a pack is an InsightFace detector: no model loaded
    img = read_image(shared_data / "real_lq_faces" / WHOLE[3])
    assert len(FaceDetector(scrfd_file, det_size=608, device="cpu").detect(img)) == 1
    yunet_file = shared_models / "face_detection_yunet_2023mar.onnx"
    check_detector_options(yunet_file, det_size=600)
    assert FaceDetector(yunet_file, det_size=600, device="cpu").detect(img)  # YuNet takes any size
    with pytest.raises(ValueError, match="threshold must be in"):
        check_detector_options(yunet_file, threshold=1.5)


def test_the_detector_kind_is_told_from_the_graph_not_the_file_name(tmp_path, shared_models, shared_data):
    """A YuNet file named without "yunet" loaded as SCRFD, then every detection raised an uncaught
    AttributeError; ``yunet:`` on an SCRFD file failed at the first detection with a raw cv2.error."""
    import onnx
    from onnx import TensorProto, helper

    yunet_file, scrfd_file = shared_models / "face_detection_yunet_2023mar.onnx", shared_models / "det_500m.onnx"
    (tmp_path / "face_det.onnx").symlink_to(yunet_file)
    (tmp_path / "yunet_v2.onnx").symlink_to(scrfd_file)
    img = read_image(shared_data / "real_lq_faces" / WHOLE[3])
    renamed_yunet = FaceDetector(tmp_path / "face_det.onnx", device="cpu")
    assert renamed_yunet.backend == "yunet" and len(renamed_yunet.detect(img)) == 1
    scrfd_called_yunet = FaceDetector(tmp_path / "yunet_v2.onnx", device="cpu")
    assert scrfd_called_yunet.backend == "insightface" and len(scrfd_called_yunet.detect(img)) == 1
    with pytest.raises(DetectorError, match="InsightFace detector, not a YuNet one: pass the path without"):
        FaceDetector(f"yunet:{scrfd_file}", device="cpu")
    # an ONNX graph that is no face detector (one output, like a recogniser)
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 64, 64])
    y = helper.make_tensor_value_info("features", TensorProto.FLOAT, [1, 3, 64, 64])
    graph = helper.make_graph([helper.make_node("Identity", ["input"], ["features"])], "g", [x], [y])
    onnx.save(helper.make_model(graph), tmp_path / "other.onnx")
    with pytest.raises(DetectorError, match=r"other.onnx: not a face detector lightface can run: its graph has 1 "
                                            r"outputs \(features\)"):
        FaceDetector(tmp_path / "other.onnx", device="cpu")
    (tmp_path / "garbage.onnx").write_bytes(b"not a model")
    with pytest.raises(DetectorError, match="garbage.onnx: not an ONNX model"):
        FaceDetector(tmp_path / "garbage.onnx", device="cpu")


def test_a_pil_image_is_detected_as_its_file_not_with_its_channels_swapped(scrfd, shared_data):
    """detect(Image.open(p)) used to run on RGB taken as BGR: other scores, landmarks up to 2 px off."""
    from PIL import Image

    path = shared_data / "real_lq_faces" / WHOLE[8]
    ref = scrfd.detect(read_image(path))
    for pil in (Image.open(path), Image.open(path).convert("RGBA")):
        got = scrfd.detect(pil)
        assert [f.score for f in got] == [f.score for f in ref]
        for a, b in zip(got, ref):
            np.testing.assert_array_equal(a.landmarks, b.landmarks)
