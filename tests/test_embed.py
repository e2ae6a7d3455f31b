"""FaceEmbedder and similarity on real LFW faces.

No official Light CNN weights exist on this machine: the embedder loads random weights of
the original architecture saved in the official file layout (module. prefix, fc2).
"""
import json
import logging

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

import lightface
from benchmarks._baseline_lightcnn import build_baseline, official_checkpoint
from lightface.data.align import affine_scale, align_face
from lightface.data.detect import FaceDetector
from lightface.data.io import ImageReadError, read_image
from lightface.data.sources import read_landmarks_file
from lightface.embed import FaceEmbedder, NoFaceError, similarity


def assert_same_embedding(a, b, atol=1e-5):
    """``a`` and ``b`` are the same unit embedding up to float32 rounding.

    Float32 kernels (GEMM blocking per batch size, AVX2 vs AVX-512, thread count) change
    the result in the last bits: ~1e-7 relative per layer, observed <= 1e-7 absolute on
    these 256-d unit vectors. ``atol`` leaves two orders of magnitude for other CPUs,
    while a real defect (another face, a NaN, a row mixed with its neighbour) moves
    entries by 1e-3 or more.
    """
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    assert np.isfinite(a).all() and np.isfinite(b).all()
    cosine = a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
    assert cosine > 1 - 1e-6, f"cosine {cosine:.9f}"
    assert np.abs(a - b).max() < atol, f"max |a-b| = {np.abs(a - b).max():.3g}"


@pytest.fixture(scope="module")
def baseline():
    torch.manual_seed(3)
    return build_baseline("lightcnn9", num_classes=10).eval()


@pytest.fixture(scope="module")
def weights(tmp_path_factory, baseline):
    path = tmp_path_factory.mktemp("w") / "LightCNN_9Layers_checkpoint.pth.tar"
    torch.save(official_checkpoint(baseline), path)
    return path


@pytest.fixture(scope="module")
def embedder(weights):
    return FaceEmbedder(weights, device="cpu")


def _landmarks(shared_data):
    table = {}
    for line in (shared_data / "lfw_identities" / "landmarks_5pt.txt").read_text().splitlines():
        parts = line.split()
        if parts:
            table[parts[0]] = np.array(parts[1:], np.float32).reshape(5, 2)
    return table


@pytest.fixture(scope="module")
def lfw(shared_data):
    """Three real LFW photos (BGR) and their Light CNN crops from the given landmarks."""
    marks = _landmarks(shared_data)
    names = ["Gordon_Brown/Gordon_Brown_0001.jpg", "Gordon_Brown/Gordon_Brown_0002.jpg", "Tom_Ridge/Tom_Ridge_0001.jpg"]
    photos = [read_image(shared_data / "lfw_identities" / "images" / n) for n in names]
    crops = [align_face(p, marks[n], "lightcnn", 128)[0] for p, n in zip(photos, names)]
    return photos, crops


def test_module_of_the_original_code_is_refused_with_a_way_out(baseline, tmp_path):
    """The original code's networks return (logits, features); given as FaceEmbedder(module) they failed with
    "'tuple' object has no attribute 'float'". The error says what came back and how to use those weights."""
    x = torch.rand(2, 1, 128, 128)
    with pytest.raises(TypeError, match=r"FaceEmbedder: the model returned a tuple \(\(2, 10\), \(2, 256\)\).*'w.pth'"):
        FaceEmbedder(baseline, device="cpu").embed(x)
    torch.save(baseline.state_dict(), tmp_path / "w.pth")  # the way out the message gives
    with torch.no_grad():
        ref = torch.nn.functional.normalize(baseline(x)[1], dim=1).numpy()
    assert_same_embedding(FaceEmbedder(tmp_path / "w.pth", device="cpu").embed(x), ref)

def test_all_input_kinds_give_the_same_embedding(embedder, lfw, tmp_path, baseline):
    _, crops = lfw
    bgr = crops[0]
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    path = tmp_path / "crop.png"
    cv2.imwrite(str(path), bgr)
    pil = Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    tensor = torch.from_numpy(gray).float().div(255).view(1, 1, 128, 128)
    outs = [embedder.embed(x) for x in (bgr, gray, gray[:, :, None], str(path), path, pil, tensor, [bgr])]
    for out in outs:
        assert out.shape == (1, 256) and out.dtype == np.float32
        assert np.allclose(out, outs[0], atol=1e-5)
    assert np.allclose(np.linalg.norm(outs[0], axis=1), 1.0, atol=1e-5)
    # the same features as the original architecture (ITU-R 601 gray, /255)
    with torch.no_grad():
        ref = torch.nn.functional.normalize(baseline(tensor)[1], dim=1).numpy()
    assert np.abs(outs[0] - ref).max() < 1e-5
    # transparency: a half-transparent PNG embeds alike from its path, as a BGRA array and as a PIL RGBA
    # image (the colour composited onto black; the array and PIL forms used to drop the alpha instead)
    bgra = np.dstack([bgr, np.tile(np.linspace(40, 255, 128).astype(np.uint8), (128, 1))])
    cv2.imwrite(str(tmp_path / "alpha.png"), bgra)
    pil_rgba = Image.fromarray(cv2.cvtColor(bgra, cv2.COLOR_BGRA2RGBA))
    alpha_outs = [embedder.embed(x) for x in (tmp_path / "alpha.png", bgra, pil_rgba)]
    for out in alpha_outs[1:]:
        np.testing.assert_allclose(out, alpha_outs[0], atol=1e-5)
    assert similarity(alpha_outs[0][0], outs[0][0]) < 0.999  # the alpha was applied, not dropped


def test_batching_and_sizes(embedder, lfw, caplog):
    _, crops = lfw
    many = crops * 3
    one_by_one = embedder.embed(many, batch_size=1)
    batched = embedder.embed(np.stack(many), batch_size=4)
    assert batched.shape == (9, 256) and np.allclose(one_by_one, batched, atol=1e-5)
    # 144 training crop -> centre 128 crop, silently
    padded = cv2.copyMakeBorder(crops[0], 8, 8, 8, 8, cv2.BORDER_CONSTANT, value=0)
    with caplog.at_level(logging.WARNING, logger="lightface.embed"):
        assert np.allclose(embedder.embed(padded), one_by_one[:1], atol=1e-5)
    assert not caplog.records
    # any other size: resized with a warning naming the size
    with caplog.at_level(logging.WARNING, logger="lightface.embed"):
        out = embedder.embed(cv2.resize(crops[0], (256, 256)))
    assert "256x256" in caplog.text and out.shape == (1, 256)


def test_a_warning_repeated_for_every_input_is_said_three_times_then_counted(embedder, lfw, caplog):
    _, crops = lfw
    big = [cv2.resize(c, (256, 256)) for c in crops * 3]  # 9 crops, each resized with a warning
    with caplog.at_level(logging.WARNING, logger="lightface.embed"):
        out = embedder.embed(big)
    messages = [r.getMessage() for r in caplog.records]
    assert out.shape == (9, 256) and not np.isnan(out).any()
    assert [m.split(":")[0] for m in messages[:3]] == ["input 0 (ndarray)", "input 1 (ndarray)", "input 2 (ndarray)"]
    assert len(messages) == 4 and messages[3].startswith('6 more warnings like "input 0 (ndarray): aligned input is '
                                                          '256x256') and "(9 in this call)" in messages[3], messages
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lightface.embed"):  # the next call starts counting afresh
        embedder.embed(big[:1])
    assert len(caplog.records) == 1 and "256x256" in caplog.text


def test_flip_fusion(weights, lfw, embedder):
    _, crops = lfw
    fused = FaceEmbedder(weights, device="cpu", flip=True).embed(crops[0])
    gray = torch.from_numpy(cv2.cvtColor(crops[0], cv2.COLOR_BGR2GRAY)).float().div(255).view(1, 1, 128, 128)
    with torch.no_grad():
        f = embedder.model(gray) + embedder.model(gray.flip(-1))
    assert np.allclose(fused, torch.nn.functional.normalize(f, dim=1).numpy(), atol=1e-5)
    assert np.allclose(embedder.embed(crops[0], flip=True), fused, atol=1e-5)


def test_bad_inputs_are_clear_and_batches_keep_going(embedder, lfw, tmp_path):
    _, crops = lfw
    with pytest.raises(ValueError, match="3 channels"):
        embedder.embed(torch.rand(2, 3, 128, 128))
    with pytest.raises(TypeError, match="uint8"):
        embedder.embed(np.zeros((128, 128, 3), np.float32))
    with pytest.raises(ValueError, match="empty"):
        embedder.embed([])
    with pytest.raises(ValueError, match="shape"):
        embedder.embed(np.zeros((128, 128, 2), np.uint8))
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    with pytest.raises(ImageReadError, match="broken.jpg"):
        embedder.embed([crops[0], broken])
    result = embedder.try_embed([crops[0], broken, tmp_path / "missing.png", crops[1]])
    assert sorted(result.errors) == [1, 2] and "broken.jpg" in result.errors[1]
    assert list(result.valid) == [True, False, False, True]
    assert np.isnan(result.embeddings[1]).all() and np.isfinite(result.embeddings[[0, 3]]).all()
    nan_rows = embedder.embed([crops[0], broken], on_error="nan")
    assert np.isnan(nan_rows[1]).all()
    # The same face in batches of another composition (2 vs 4 rows) goes through GEMMs
    # blocked differently for each batch size, so it differs by float32 rounding (~1e-7
    # relative, more on a CPU with other SIMD kernels): compare as unit vectors with a
    # float32 tolerance. A bad row leaking into a good one (NaN, a shared statistic, a
    # shifted row) moves the embedding by far more than 1e-5.
    assert_same_embedding(nan_rows[0], result.embeddings[0])
    assert_same_embedding(nan_rows[0], embedder.embed(crops[0])[0])


def test_official_release_aligns_whole_photos_by_the_official_recipe(weights, lfw, shared_data, shared_models):
    """An official Light CNN release was trained on crops of the original recipe (eyes level, eye midpoint
    (64, 40), mouth midpoint 48 px below it): FaceEmbedder (align_method "auto") crops detected faces that way for
    it, where it used the least-squares fit (eye line tilted, midpoints off by pixels). The shipped recogniser keeps
    the least-squares crops it was trained on, bit for bit; an explicit align_method wins."""
    from lightface.data.align import estimate_transform, transform_points

    photos, crops = lfw
    marks = _landmarks(shared_data)["Gordon_Brown/Gordon_Brown_0001.jpg"]
    official = FaceEmbedder(weights, device="cpu", detector=str(shared_models / "det_500m.onnx"))
    assert official.align_method == "eyes" and official.settings(aligned=False)["detector"]["align_method"] == "eyes"
    crop, M = official.align(photos[0], marks)
    np.testing.assert_array_equal(M, estimate_transform(marks, "lightcnn", 128, method="eyes"))
    q = transform_points(marks, M)
    assert abs(q[1, 1] - q[0, 1]) < 1e-9 and np.allclose(q[:2].mean(0), (64, 40)) and np.isclose(q[3:, 1].mean(), 88)
    assert np.abs(crop.astype(int) - crops[0]).mean() > 1  # not the least-squares crop
    chosen = FaceEmbedder(weights, device="cpu", align_method="similarity")
    assert chosen.align_method == "similarity"
    np.testing.assert_array_equal(chosen.align(photos[0], marks)[0], crops[0])
    shipped = FaceEmbedder(device="cpu")
    assert shipped.align_method == "similarity"
    np.testing.assert_array_equal(shipped.align(photos[0], marks)[0], crops[0])
    with pytest.raises(ValueError, match="align_method must be 'auto' or one of"):
        FaceEmbedder(weights, device="cpu", align_method="official")


def test_detect_and_align_path(weights, lfw, shared_models, shared_data):
    photos, crops = lfw
    emb = FaceEmbedder(weights, device="cpu", detector=str(shared_models / "det_500m.onnx"))
    faces = emb.embed_faces(photos[0])
    assert faces and faces[0].embedding.shape == (256,) and faces[0].crop.shape == (128, 128)
    # the detector's landmarks give nearly the crop that the reference landmarks give
    ref = cv2.cvtColor(crops[0], cv2.COLOR_BGR2GRAY).astype(np.float32)
    assert np.abs(faces[0].crop.astype(np.float32) - ref).mean() < 20
    detected = emb.embed(photos, aligned=False)
    assert detected.shape == (3, 256) and np.allclose(detected[0], faces[0].embedding, atol=1e-5)
    group = sorted((shared_data / "real_lq_faces" / "gfpgan_whole_imgs").iterdir())
    counts = [len(emb.embed_faces(p)) for p in group]
    assert max(counts) >= 2
    blank = np.zeros((200, 200, 3), np.uint8)
    assert emb.embed_faces(blank) == []
    with pytest.raises(NoFaceError, match="no face"):
        emb.embed(blank, aligned=False)
    assert sorted(emb.try_embed([blank, photos[1]], aligned=False).errors) == [0]


def test_a_photo_stored_sideways_with_its_exif_orientation_embeds_as_upright(weights, lfw, shared_models, tmp_path):
    """A phone photo: the pixels lie on their side and EXIF says "turn 90 degrees clockwise"."""
    from PIL import Image

    photos, _ = lfw
    upright, sideways = tmp_path / "upright.png", tmp_path / "sideways.png"
    cv2.imwrite(str(upright), photos[0])
    exif = Image.Exif()
    exif[0x0112] = 6
    stored = cv2.rotate(photos[0], cv2.ROTATE_90_COUNTERCLOCKWISE)
    Image.fromarray(cv2.cvtColor(stored, cv2.COLOR_BGR2RGB)).save(sideways, exif=exif.tobytes())
    emb = FaceEmbedder(weights, device="cpu", detector=str(shared_models / "det_500m.onnx"))
    assert_same_embedding(emb.embed(sideways, aligned=False)[0], emb.embed(upright, aligned=False)[0])
    # the landmarks and boxes refer to the photo as the user sees it
    np.testing.assert_allclose(emb.embed_faces(sideways)[0].landmarks, emb.embed_faces(upright)[0].landmarks, atol=1e-3)


def test_whole_photo_embeds_the_subject_not_a_bigger_bystander(weights, shared_models, shared_data):
    # LFW fold 2: det_500m finds a bystander's face bigger than Charles Schumer's in this photo
    root, rel = shared_data / "lfw_train", "Charles_Schumer/Charles_Schumer_0002.jpg"
    marked = read_landmarks_file(root / "landmarks_5pt.txt")[rel].mean(0)  # where the subject is
    emb = FaceEmbedder(weights, device="cpu", detector=str(shared_models / "det_500m.onnx"))
    faces = emb.embed_faces(root / "images" / rel)  # largest first
    subject = min(faces, key=lambda f: np.linalg.norm(f.landmarks.mean(0) - marked))
    assert len(faces) >= 2 and subject is not faces[0]
    assert_same_embedding(emb.embed(root / "images" / rel, aligned=False)[0], subject.embedding)


def test_similarity_and_lazy_exports(embedder, lfw):
    a = np.array([1.0, 0.0, 0.0])
    b = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [-3.0, 0.0, 0.0]])
    assert similarity(a, a) == pytest.approx(1.0)
    assert np.allclose(similarity(a, b), [1, 0, -1])
    assert similarity(b, b, pairwise=True).shape == (3, 3)
    assert np.allclose(lightface.similarity(torch.tensor(b), torch.tensor(b)), 1.0)
    with pytest.raises(ValueError, match="same number of rows"):
        similarity(b, b[:2])
    assert lightface.FaceEmbedder is FaceEmbedder
    assert set(lightface.__all__) <= set(dir(lightface))  # the lazy names show in dir() / tab completion
    _, crops = lfw
    assert embedder.verify(crops[0], crops[0])


def test_crops_of_other_templates_are_realigned(shared_data, lfw, caplog):
    """aligned=True crops framed by InsightFace (ArcFace 112x112: taken as such by default) or by the
    ffhq template (aligned_template="ffhq") embed like the Light CNN crops of the same photos,
    with the shipped recogniser; resizing the ArcFace crop instead (aligned_template="lightcnn",
    the old behaviour) gives a different face to the network."""
    from lightface.models import PretrainedError

    try:
        embedder = FaceEmbedder(device="cpu")
    except PretrainedError:
        pytest.skip("no recogniser ships in this install")
    photos, crops = lfw
    marks = _landmarks(shared_data)
    names = ["Gordon_Brown/Gordon_Brown_0001.jpg", "Gordon_Brown/Gordon_Brown_0002.jpg", "Tom_Ridge/Tom_Ridge_0001.jpg"]
    ref = embedder.embed(crops)
    arcface = [align_face(p, marks[n], "arcface", 112)[0] for p, n in zip(photos, names)]
    with caplog.at_level(logging.INFO, logger="lightface.embed"):
        auto = embedder.embed(arcface)
    assert "ArcFace" in caplog.text
    resized = FaceEmbedder(device="cpu", aligned_template="lightcnn").embed(arcface)
    # measured, rc13 with its flip fusion: re-aligned 0.95-0.96, resized 0.63-0.74 (rc12: 0.85-0.95 and 0.47-0.60)
    assert ((auto * ref).sum(1) > 0.8).all(), (auto * ref).sum(1)
    assert ((auto * ref).sum(1) > (resized * ref).sum(1) + 0.1).all(), ((auto * ref).sum(1), (resized * ref).sum(1))
    ffhq = [align_face(p, marks[n], "ffhq", 256)[0] for p, n in zip(photos, names)]
    realigned = FaceEmbedder(device="cpu", aligned_template="ffhq").embed(ffhq)
    assert ((realigned * ref).sum(1) > 0.99).all()
    with pytest.raises(ValueError, match="aligned_template"):
        FaceEmbedder(device="cpu", aligned_template="insightface")
    with pytest.raises(ValueError, match="square"):
        FaceEmbedder(device="cpu", aligned_template="arcface").embed(np.zeros((112, 96, 3), np.uint8))


@pytest.mark.slow
def test_framing_benchmark_re_alignment_recovers_verification_accuracy(shared_data):
    """``python -m benchmarks.framing``: on the LFW fold-2 pairs, ArcFace and FFHQ crops re-aligned
    by FaceEmbedder verify about as well as Light CNN crops, and far better than resized."""
    from benchmarks.framing import run
    from lightface.models import PretrainedError

    try:
        rows = {(r["framing"], r["aligned_template"]): r for r in run(shared_data, flip=False)}  # half the compute
    except PretrainedError:
        pytest.skip("no recogniser ships in this install")
    direct = rows[("lightcnn", "lightcnn")]["accuracy"]
    for framing in ("arcface", "ffhq"):
        realigned, resized = rows[(framing, framing)]["accuracy"], rows[(framing, "lightcnn")]["accuracy"]
        # measured +0.06 / +0.14 (rc13; rc12 +0.05 / +0.16, rc10 +0.09 / +0.15)
        assert realigned > resized + 0.03, (framing, realigned, resized)
        assert realigned > direct - 0.03, (framing, realigned, direct)  # measured -0.006 / 0.000 (rc13)


@pytest.mark.slow
def test_small_faces_benchmark_measures_the_enlargement_the_warning_reads(shared_data, tmp_path, capsys):
    """``python -m benchmarks.small_faces`` on 20 of the LFW fold-2 pairs: ordinary 150 px photos stay
    under SMALL_FACE_ENLARGEMENT (no warning), the same photos shrunk 4x are past it, and the table
    and JSON rows say so."""
    from benchmarks.small_faces import main
    from lightface.embed import SMALL_FACE_ENLARGEMENT
    from lightface.models import PretrainedError

    out = tmp_path / "rows.json"
    try:
        assert main(["--limit", "20", "--factors", "1", "4", "--no-flip", "--out", str(out)]) == 0
    except PretrainedError:
        pytest.skip("no recogniser ships in this install")
    full, small = json.loads(out.read_text())
    assert full["enlargement"][2] < SMALL_FACE_ENLARGEMENT < small["enlargement"][1], (full, small)  # p90 / p10
    assert "| 4 (37.5) |" in capsys.readouterr().out


def test_small_faces_bicubic_control_is_sr_quality_bicubic(shared_data):
    """benchmarks.small_faces --super-resolve made its bicubic control with OpenCV's INTER_CUBIC, a sharper kernel
    than the Pillow bicubic every SR benchmark and card calls bicubic (benchmarks.sr_quality / sr_robustness), so
    its 'bicubic from 32 / 16' columns were another baseline than the cards' gains over bicubic. Real LFW faces
    aligned at each shipped super-resolver's input size: the control is Pillow's bicubic at its output size."""
    from benchmarks.small_faces import upscaled_crops
    from lightface import SuperResolver
    from lightface.data.degradation import resize
    from lightface.models import pretrained as pt
    from lightface.restore.paste import antialiased_align

    marks = read_landmarks_file(shared_data / "lfw_identities" / "landmarks_5pt.txt")
    rels = sorted(marks)[:3]
    photos = [cv2.imread(str(shared_data / "lfw_identities" / "images" / r)) for r in rels]
    scales = sorted({w["model_kwargs"]["scale"] for w in pt.list_pretrained("super_resolution")})
    if not scales:
        pytest.skip("no super-resolution model ships in this install")
    for s in scales:
        sr = SuperResolver(scale=s, device="cpu")
        lows = [antialiased_align(p, marks[r], "lightcnn", size=sr.input_size)[0] for p, r in zip(photos, rels)]
        up = upscaled_crops(sr, lows)
        assert sorted(up) == [f"bicubic{s}", f"sr{s}"]
        for low, bic, srf in zip(lows, up[f"bicubic{s}"], up[f"sr{s}"]):
            assert bic.shape == srf.shape == (sr.output_size, sr.output_size, 3)
            np.testing.assert_array_equal(bic, resize(low, (sr.output_size,) * 2, "bicubic"))
            assert not np.array_equal(bic, cv2.resize(low, (sr.output_size,) * 2, interpolation=cv2.INTER_CUBIC))


def test_an_occluded_face_under_the_detector_threshold_is_rescued(weights, shared_models, shared_data, caplog):
    """aligned=False: a face the detector scores under its threshold (a mask over the mouth) is
    embedded from the best low-score candidate, with a warning; rescue_threshold=None fails as before."""
    from test_data_detect import occluded_lfw_photo

    clean, occluded = occluded_lfw_photo(shared_data)
    det = str(shared_models / "det_500m.onnx")
    emb = FaceEmbedder(weights, device="cpu", detector=det)
    with caplog.at_level(logging.WARNING, logger="lightface.embed"):
        rescued = emb.embed(occluded, aligned=False)[0]
    assert "best candidate" in caplog.text
    assert emb.embed_faces(occluded) == []  # all faces of a photo: only those above the threshold
    # ... unless asked to take the photo's best candidate as embed() does (a gallery search of a query photo)
    (face,) = emb.embed_faces(occluded, rescue=True)
    assert 0.25 <= face.score < 0.5 and float(face.embedding @ rescued) > 0.999
    # the rescued crop is aligned like the clean face (the occlusion aside): the same person to the network
    assert similarity(rescued, emb.embed(clean, aligned=False)[0]) > 0.5
    strict = FaceEmbedder(weights, device="cpu", detector=det, rescue_threshold=None)
    with pytest.raises(NoFaceError, match="no face"):
        strict.embed(occluded, aligned=False)
    with pytest.raises(ValueError, match="rescue_threshold"):
        FaceEmbedder(weights, device="cpu", rescue_threshold=0.05)
    # random noise: det_500m offers a 2-4 px candidate at 0.34-0.44; it is not a face and is not rescued
    noise = np.random.default_rng(0).integers(0, 256, (300, 300, 3), dtype=np.uint8)
    assert any(f.score >= 0.25 for f in FaceDetector(det, device="cpu").detect(noise, threshold=0.25))
    with pytest.raises(NoFaceError, match="no face"):
        emb.embed(noise, aligned=False)


def test_settings_describe_what_decides_the_embedding(weights, shared_models):
    """One description of an embedder's settings (FaceEmbedder.settings), which extractions and galleries record:
    the detector by the name of the one that runs, its options, the rescue floor that applies, the alignment."""
    from lightface.embed import settings_changes

    det = shared_models / "det_500m.onnx"
    emb = FaceEmbedder(weights, device="cpu", detector=str(det), flip=True, detector_options={"det_size": 320})
    assert emb.settings(True) == {"aligned": True, "aligned_template": "auto", "flip": True, "precision": "float32",
                                  "detector": None}
    whole = emb.settings(False)
    assert whole["detector"] == {"model": "det_500m.onnx", "backend": "insightface", "det_size": 320, "threshold": 0.5,
                                 "rescue_threshold": 0.25, "antialias": True, "align_method": "eyes"}
    assert json.loads(json.dumps(whole)) == whole  # JSON-safe: it is written to manifests and galleries
    # a rescue floor at or above the detector's threshold never applies: no rescue
    high = FaceEmbedder(weights, device="cpu", detector=str(det), detector_options={"threshold": 0.2})
    assert high.settings(False)["detector"]["rescue_threshold"] is None
    strict = FaceEmbedder(weights, device="cpu", detector=str(det), rescue_threshold=None, antialias=False)
    assert settings_changes(whole, strict.settings(False)) == [
        ("detector.antialias", True, False), ("detector.det_size", 320, 640), ("detector.rescue_threshold", 0.25, None),
        ("flip", True, False)]
    # a record of an earlier lightface: fewer keys (those it lacks are not compared), the detector's path as given
    legacy = {"flip": True, "detector": {"model": "../shared/models/det_500m.onnx", "det_size": 320, "threshold": 0.5}}
    assert settings_changes(legacy, whole) == []
    assert settings_changes(legacy, strict.settings(False)) == [("detector.det_size", 320, 640), ("flip", True, False)]


def test_a_large_face_embeds_as_it_does_from_a_smaller_photo(shared_models, shared_data):
    """aligned=False, the shipped recogniser: a 1024 px CelebA-HQ photo (its face shrunk about 4x
    into the crop) and the same photo shrunk 4x give nearly the same embedding with the default
    antialias=True; the bilinear warp alone (antialias=False) aliases the large face and drifts
    further. The crop is FaceEmbedder.align's, which gallery enrolment shares."""
    photos = [read_image(p) for p in sorted((shared_data / "celeba_hq").rglob("*.jpg"))]
    smaller = [cv2.resize(p, None, fx=0.25, fy=0.25, interpolation=cv2.INTER_AREA) for p in photos]
    detector = FaceDetector(str(shared_models / "det_500m.onnx"), device="cpu")
    agreement = {}
    for antialias in (True, False):
        emb = FaceEmbedder(device="cpu", detector=detector, antialias=antialias)
        e = emb.embed(photos + smaller, aligned=False)
        agreement[antialias] = (e[:len(photos)] * e[len(photos):]).sum(1)
    assert (agreement[True] > agreement[False]).sum() >= 8, agreement  # measured: all 10
    assert agreement[True].min() > 0.99, agreement  # measured 0.995 (antialias=False: 0.987)
    face = detector.detect(photos[0])[0]
    crop, M = FaceEmbedder(device="cpu", detector=detector).align(photos[0], face.landmarks)
    assert crop.shape == (128, 128, 3) and affine_scale(M) < 0.3
    np.testing.assert_array_equal(crop, align_face(photos[0], face.landmarks, antialias=True)[0])


def test_a_small_face_is_embedded_with_a_warning(weights, shared_models, shared_data, caplog):
    """aligned=False: a photo whose face the crop must enlarge more than SMALL_FACE_ENLARGEMENT
    times (an LFW photo shrunk 4x: eyes about 6 px apart) still gives its embedding, with a warning
    that names the photo and the enlargement; the photo at its own size gives none."""
    from lightface.embed import SMALL_FACE_ENLARGEMENT

    photo = read_image(shared_data / "lfw_identities" / "images" / "Gordon_Brown" / "Gordon_Brown_0001.jpg")
    small = cv2.resize(photo, None, fx=0.25, fy=0.25, interpolation=cv2.INTER_AREA)
    emb = FaceEmbedder(weights, device="cpu", detector=str(shared_models / "det_500m.onnx"))
    with caplog.at_level(logging.WARNING, logger="lightface.embed"):
        full = emb.embed(photo, aligned=False)[0]
    assert "small face" not in caplog.text
    with caplog.at_level(logging.WARNING, logger="lightface.embed"):
        shrunk = emb.embed(small, aligned=False)[0]
    warning = next(r.getMessage() for r in caplog.records if "small face" in r.getMessage())
    enlargement = float(warning.split("enlarges it ")[1].split("x")[0])
    assert SMALL_FACE_ENLARGEMENT < enlargement < 12, warning  # about 4 x the full photo's 1.7
    assert warning.startswith("input 0 (ndarray): small face"), warning
    assert np.isfinite(shrunk).all() and similarity(full, shrunk) > 0.3


def test_a_face_cut_by_the_image_border_is_embedded_with_a_warning_and_flagged(weights, shared_models, shared_data,
                                                                                caplog):
    """A photo whose face the border cuts in half (an LFW photo without its left 45%: the detector puts the lost eye
    and mouth corner on the image's edge) was embedded from a crop half black fill without a word, although its
    embedding is far from the whole face's (mean cosine 0.84 on 18 LFW people with the shipped recogniser, 0.69 with
    half the width gone). It is still embedded, as InsightFace does, with a warning naming the photo; embed_faces
    says how many landmarks lie on the border; the whole photo gives no warning."""
    photo = read_image(shared_data / "lfw_identities" / "images" / "Gordon_Brown" / "Gordon_Brown_0001.jpg")
    cut = np.ascontiguousarray(photo[:, int(0.45 * photo.shape[1]):])
    emb = FaceEmbedder(weights, device="cpu", detector=str(shared_models / "det_500m.onnx"))
    with caplog.at_level(logging.WARNING, logger="lightface.embed"):
        emb.embed(photo, aligned=False)
    assert "cut by the image border" not in caplog.text
    assert emb.embed_faces(photo)[0].landmarks_at_border == 0
    with caplog.at_level(logging.WARNING, logger="lightface.embed"):
        out = emb.embed(cut, aligned=False)
    assert np.isfinite(out).all()
    warning = next(r.getMessage() for r in caplog.records if "cut by the image border" in r.getMessage())
    assert warning.startswith("input 0 (ndarray): face cut by the image border (") and "landmarks on the border of " \
        f"the {cut.shape[1]}x{cut.shape[0]} photo" in warning, warning
    face = emb.embed_faces(cut)[0]
    assert face.landmarks_at_border >= 1 and (face.landmarks[:, 0] < 1.5).any()


def _small_face_in_a_large_photo(shared_data):
    """A 4000 x 3000 photo holding one LFW photo at 150 px: a face 56 px wide, 9 px once shrunk to 640."""
    photo = read_image(shared_data / "lfw_identities" / "images" / "Gordon_Brown" / "Gordon_Brown_0001.jpg")
    big = np.full((3000, 4000, 3), 90, np.uint8)
    big[1000:1150, 2000:2150] = photo
    return photo, big


def test_detector_options_find_a_small_face_in_a_large_photo(weights, shared_models, shared_data):
    """A face of 56 px in a 4000-px group photo was out of reach: the detector made from a name or path always ran
    at det_size 640 (9 px there, missed), and FaceEmbedder had no way to say otherwise short of building the
    FaceDetector itself (the CLIs none at all; build_lmdb had --det-size). detector_options reaches it."""
    photo, big = _small_face_in_a_large_photo(shared_data)
    det = str(shared_models / "det_500m.onnx")
    with pytest.raises(NoFaceError):
        FaceEmbedder(weights, device="cpu", detector=det).embed(big, aligned=False)
    emb = FaceEmbedder(weights, device="cpu", detector=det, detector_options={"det_size": 1280, "threshold": 0.6})
    assert (emb.detector.det_size, emb.detector.threshold) == (1280, 0.6)
    found = emb.embed(big, aligned=False)[0]
    assert similarity(found, emb.embed(photo, aligned=False)[0]) > 0.9
    with pytest.raises(ValueError, match="det_size must be a multiple of 32"):  # refused when made, not at first use
        FaceEmbedder(weights, device="cpu", detector=det, detector_options={"det_size": 1000})
    with pytest.raises(TypeError, match=r"unknown FaceDetector keyword\(s\) \['det_thresh'\]"):
        FaceEmbedder(weights, device="cpu", detector=det, detector_options={"det_thresh": 0.3})
    with pytest.raises(ValueError, match="detector_options apply to a detector given by name or path"):
        FaceEmbedder(weights, device="cpu", detector=FaceDetector(det), detector_options={"det_size": 1280})


def test_one_bad_photo_of_a_folder_is_its_own_failure_named_by_its_path(weights, lfw, shared_models, tmp_path,
                                                                       monkeypatch):
    """try_embed never stops at a bad image: an 8 x 6000 banner (SCRFD raised an OpenCV error), a 1 x 1 image
    and an image OpenCV fails on are each that input's failure, with its path; embed raises naming it."""
    photos, _ = lfw
    good, banner, tiny = tmp_path / "good.jpg", tmp_path / "banner.png", tmp_path / "tiny.png"
    cv2.imwrite(str(good), photos[0])
    cv2.imwrite(str(banner), np.full((8, 6000, 3), 200, np.uint8))
    cv2.imwrite(str(tiny), np.full((1, 1, 3), 128, np.uint8))
    emb = FaceEmbedder(weights, device="cpu", detector=str(shared_models / "det_500m.onnx"))
    result = emb.try_embed([good, banner, tiny], aligned=False)
    assert sorted(result.errors) == [1, 2] and np.isfinite(result.embeddings[0]).all()
    assert result.errors[1].startswith(f"{banner}: no face detected")
    assert result.errors[2] == f"{tiny}: image too small for detection (1x1 px; at least 2x2)"
    with pytest.raises(ValueError, match=f"^{tiny}: image too small"):
        emb.embed([good, tiny], aligned=False)

    def opencv_fails(bgr):  # an OpenCV error on one image, as SCRFD's resize raised on the banner
        return cv2.resize(bgr, (640, 0))

    monkeypatch.setattr(emb.detector, "_detect_raw", opencv_fails)
    result = emb.try_embed([good, photos[1]], aligned=False)
    assert sorted(result.errors) == [0, 1]
    assert result.errors[0].startswith(f"{good}: OpenCV resize(): ") and "input 1 (ndarray): OpenCV" in result.errors[1]


def test_a_pil_image_of_a_phone_photo_embeds_as_its_file(weights, lfw, shared_models, tmp_path):
    """Image.open of a photo stored sideways (EXIF orientation 6) gives the embedding and boxes of its path."""
    photos, _ = lfw
    sideways = tmp_path / "sideways.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    stored = cv2.rotate(photos[0], cv2.ROTATE_90_COUNTERCLOCKWISE)
    Image.fromarray(cv2.cvtColor(stored, cv2.COLOR_BGR2RGB)).save(sideways, exif=exif.tobytes(), quality=95)
    emb = FaceEmbedder(weights, device="cpu", detector=str(shared_models / "det_500m.onnx"))
    with Image.open(sideways) as im:
        assert similarity(emb.embed(im, aligned=False)[0], emb.embed(sideways, aligned=False)[0]) > 0.99
        np.testing.assert_allclose(emb.embed_faces(im)[0].box, emb.embed_faces(sideways)[0].box, atol=2)


def test_tensors_outside_0_1_are_refused_not_embedded(embedder, lfw):
    """A 0..255 float tensor (``/ 255`` forgotten) embedded silently, far from its face's embedding."""
    _, crops = lfw
    x = torch.from_numpy(cv2.cvtColor(crops[0], cv2.COLOR_BGR2GRAY)).float().view(1, 1, 128, 128)
    with pytest.raises(ValueError, match=r"in \[0, 1\], got values from .* to 2\d\d: divide 0..255 images by 255"):
        embedder.embed(x)
    with pytest.raises(ValueError, match="divide"):
        embedder.embed_tensor(x * 2 / 255 - 1)  # [-1, 1]
    with pytest.raises(TypeError, match="float tensor.*uint8"):
        embedder.embed_tensor(x.to(torch.uint8))
    assert_same_embedding(embedder.embed(x / 255)[0], embedder.embed(crops[0])[0])


def test_a_detector_argument_of_another_kind_is_refused_when_the_embedder_is_made(weights, shared_models, lfw):
    """InsightFace's SCRFD object was accepted (it has ``detect``), then every photo failed with an uncaught
    AttributeError; OpenCV's FaceDetectorYN failed on every photo; ``detector=5`` was taken as a pack name."""
    from insightface.model_zoo import get_model

    scrfd_file = shared_models / "det_500m.onnx"
    scrfd = get_model(str(scrfd_file), providers=["CPUExecutionProvider"])
    with pytest.raises(TypeError, match=f"object of insightface.*SCRFD, .*pass detector='{scrfd_file}' instead"):
        FaceEmbedder(weights, device="cpu", detector=scrfd)
    yn = cv2.FaceDetectorYN.create(str(shared_models / "face_detection_yunet_2023mar.onnx"), "", (320, 320))
    with pytest.raises(TypeError, match="object of cv2.FaceDetectorYN, .*the detector's .onnx path"):
        FaceEmbedder(weights, device="cpu", detector=yn)
    with pytest.raises(TypeError, match="detector must be None, a FaceDetector.*got int 5"):
        FaceEmbedder(weights, device="cpu", detector=5)
    with pytest.raises(TypeError, match="detector must be"):
        lightface.SuperResolver(device="cpu", detector=5)

    class Mine:  # a detector of one's own: its detect() gives DetectedFace records
        def __init__(self):
            self.inner = FaceDetector(scrfd_file, device="cpu")

        def detect(self, image):
            return self.inner.detect(image)

    photos, _ = lfw
    ref = FaceEmbedder(weights, device="cpu", detector=scrfd_file).embed(photos[0], aligned=False)
    assert_same_embedding(FaceEmbedder(weights, device="cpu", detector=Mine()).embed(photos[0], aligned=False), ref)


def test_tensor_errors_show_the_shape_given_and_a_list_of_tensors_is_told_to_stack(embedder):
    """A (128, 128) tensor was reported as (64, 128) (cut by batch_size first); a list of (1, 128, 128) tensors
    was told to pass "a float tensor (N, 1, 128, 128)", which it did."""
    with pytest.raises(ValueError, match=r"got \(128, 128\) \(one crop: add its channel and batch axes"):
        embedder.embed(torch.rand(128, 128))
    with pytest.raises(ValueError, match=r"got \(70, 3, 128, 128\) \(3 channels"):
        embedder.embed(torch.rand(70, 3, 128, 128))
    crops = [torch.rand(1, 128, 128), torch.rand(1, 128, 128)]
    with pytest.raises(TypeError, match=r"input 0 \(Tensor\): a tensor of shape \(1, 128, 128\) where an image was "
                                        r"expected.*torch.stack"):
        embedder.embed(crops)
    assert_same_embedding(embedder.embed(torch.stack(crops))[1], embedder.embed(crops[1])[0])
