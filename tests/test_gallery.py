"""FaceGallery: storage, search, identification, enrolment, crash safety, FAISS, CLIs.

Fast and deterministic: synthetic clustered embeddings, synthetic 128x128 "face" crops
embedded by a tiny random Light CNN (tests/lightcnn_tiny.py), and a few real LFW photos
(skipped when ../shared is absent).
"""
import json
import logging
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from lightcnn_tiny import ARCH as TINY  # tests/lightcnn_tiny.py (registers the tiny Light CNN)
from lightcnn_tiny import TinyLightCNN
from lightface.embed import FaceEmbedder
from lightface.gallery import (UNKNOWN, CorruptGalleryError, FaceGallery, GalleryError, GalleryModelError, ModelInfo,
                               collect_photos, model_info)
from lightface.gallery import exact as exact_mod
from lightface.gallery import faiss_backend
from lightface.gallery.exact import exact_search
from lightface.models.checkpoint import save_model_checkpoint

ROOT = Path(__file__).resolve().parents[1]
needs_faiss = pytest.mark.skipif(not faiss_backend.available(), reason="faiss-cpu not installed (lightface[search])")


# -- fixtures ------------------------------------------------------------------------------------
def clustered(n_people, per_person, dim=256, spread=0.5, seed=0):
    """Unit vectors around random identity centres: (embeddings, identities, centres)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_people, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = np.repeat(centres, per_person, 0) + spread * rng.standard_normal((n_people * per_person, dim)).astype(np.float32) / np.sqrt(dim)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    names = [f"person{p:03d}" for p in range(n_people) for _ in range(per_person)]
    return x, names, centres


def _tiny_checkpoint(path, seed, threshold=0.95):
    torch.manual_seed(seed)
    return save_model_checkpoint(path, TinyLightCNN(num_classes=0), TINY, verification_threshold=threshold)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return _tiny_checkpoint(tmp_path_factory.mktemp("w") / "tiny.pt", seed=0)


@pytest.fixture(scope="module")
def other_weights(tmp_path_factory):
    return _tiny_checkpoint(tmp_path_factory.mktemp("w2") / "tiny_other.pt", seed=1)


@pytest.fixture(scope="module")
def embedder(weights):
    return FaceEmbedder(weights, device="cpu")


def _write_people(root, people=4, photos=3, seed=0):
    """``root/<person>/<k>.png``: 128x128 gray crops, one smooth random pattern per person plus noise."""
    rng = np.random.default_rng(seed)
    for p in range(people):
        base = cv2.resize(rng.uniform(0, 255, (8, 8)).astype(np.float32), (128, 128), interpolation=cv2.INTER_CUBIC)
        (root / f"p{p}").mkdir(parents=True, exist_ok=True)
        for k in range(photos):
            img = np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)
            cv2.imwrite(str(root / f"p{p}" / f"{k}.png"), img)
    return root


@pytest.fixture
def people(tmp_path):
    return _write_people(tmp_path / "photos")


# -- exact search ----------------------------------------------------------------------------------
@pytest.mark.parametrize("nq", [1, 2, 7])
def test_exact_search_matches_numpy(monkeypatch, nq):
    monkeypatch.setattr(exact_mod, "_GEMV_BLOCK", 64)  # several blocks, both kernels
    monkeypatch.setattr(exact_mod, "_GEMM_BLOCK", 48)
    monkeypatch.setattr(exact_mod, "GEMV_MIN_ROWS", 100)
    x, _, _ = clustered(30, 10, spread=1.0)
    g16 = x.astype(np.float16)
    q, _, _ = clustered(nq, 1, seed=5)
    q[0] = g16[17].astype(np.float32) / np.linalg.norm(g16[17].astype(np.float32))
    scores, rows = exact_search(g16, q, k=6)
    ref = q @ g16.astype(np.float32).T
    order = np.argsort(-ref, axis=1)[:, :6]
    assert scores.shape == (nq, 6) and rows.dtype == np.int64
    np.testing.assert_array_equal(rows, order)
    np.testing.assert_allclose(scores, np.take_along_axis(ref, order, 1), atol=1e-5)
    assert rows[0, 0] == 17
    s32, r32 = exact_search(g16.astype(np.float32), q, k=6)  # a float32 copy (small galleries) gives the same
    np.testing.assert_array_equal(r32, rows)
    np.testing.assert_allclose(s32, scores, atol=1e-5)
    s_all, r_all = exact_search(g16, q, k=1000)  # k larger than the gallery
    assert s_all.shape == (nq, 300) and sorted(r_all[0]) == list(range(300))
    s0, r0 = exact_search(g16[:0], q, k=3)
    assert s0.shape == (nq, 0)


# -- add / search / identify -------------------------------------------------------------------------
def test_add_search_identify_round_trip(tmp_path):
    x, names, centres = clustered(20, 5)
    g = FaceGallery(tmp_path / "g")
    meta = [{"path": f"/photos/{n}/{i}.jpg", "box": [1, 2, 30, 40], "landmarks": np.arange(10).reshape(5, 2),
             "det_score": 0.9} for i, n in enumerate(names)]
    ids = g.add(torch.from_numpy(x), names, meta)
    assert len(g) == 100 and ids.tolist() == list(range(100)) and g.dim == 256
    assert g.identities() == sorted(set(names)) and g.counts()["person007"] == 5
    res = g.search(x[[3, 50]], k=5)
    assert res.scores.shape == (2, 5) and np.all(np.diff(res.scores, axis=1) <= 0)
    assert res.face_ids[0, 0] == 3 and res.face_ids[1, 0] == 50
    assert res.scores[0, 0] == pytest.approx(1.0, abs=2e-3)
    assert list(res.identities[0]) == ["person000"] * 5  # the whole cluster first
    assert res[1][0].path == "/photos/person010/50.jpg" and res[1][0].identity == "person010"
    assert res.to_records()[0] == {"query": 0, "rank": 1, "identity": "person000", "score": res.scores[0, 0],
                                   "path": "/photos/person000/3.jpg", "face_id": 3}
    rec = g.face(3)
    np.testing.assert_allclose(rec.box, [1, 2, 30, 40])
    assert rec.landmarks.shape == (5, 2) and rec.det_score == pytest.approx(0.9)
    # open set: queries near enrolled centres are known, fresh identities are unknown
    fresh, _, _ = clustered(5, 1, seed=99)
    queries = np.vstack([centres[:5], fresh])
    ans = g.identify(queries, threshold=0.5)
    assert ans.identities == [f"person{p:03d}" for p in range(5)] + [UNKNOWN] * 5
    assert ans.known.tolist() == [True] * 5 + [False] * 5 and ans.nearest[5] is not None
    assert g.search(x[0], k=500).scores.shape == (1, 100)  # k clipped to the gallery size
    with pytest.raises(ValueError, match="identify needs a threshold"):
        g.identify(queries)
    g.set_threshold(0.5)
    assert g.identify(queries).identities == ans.identities


def test_add_validates_inputs(tmp_path):
    g = FaceGallery(tmp_path / "g")
    x, names, _ = clustered(2, 2)
    with pytest.raises(ValueError, match="NaN"):
        g.add(np.full((1, 256), np.nan), "a")
    with pytest.raises(ValueError, match="2 identities for 4"):
        g.add(x, ["a", "b"])
    with pytest.raises(ValueError, match="reserved"):
        g.add(x[:1], UNKNOWN)
    with pytest.raises(ValueError, match="meta has 1 records"):
        g.add(x, names, [{}])
    g.add(x, names)
    with pytest.raises(ValueError, match="256-d"):
        g.add(np.ones((1, 128)), "a")
    with pytest.raises(ValueError, match="256-d"):
        g.search(np.ones((1, 128)))
    assert FaceGallery(tmp_path / "empty").search(x, k=3).scores.shape == (4, 0)
    assert FaceGallery(tmp_path / "empty").identify(x[:2], threshold=0.5).identities == [UNKNOWN, UNKNOWN]


def test_persistence_across_reopen(tmp_path):
    x, names, _ = clustered(10, 4)
    with FaceGallery(tmp_path / "g") as g:
        g.add(x[:20], names[:20], {"path": [f"f{i}.jpg" for i in range(20)]})
        g.add(x[20:], names[20:], {"path": [f"f{i}.jpg" for i in range(20, 40)]})
        before = g.search(x[::7], k=4)
    g2 = FaceGallery(tmp_path / "g", create=False)
    after = g2.search(x[::7], k=4)
    assert len(g2) == 40 and g2.identities() == sorted(set(names))
    np.testing.assert_array_equal(before.face_ids, after.face_ids)
    np.testing.assert_allclose(before.scores, after.scores)
    assert after.paths[1, 0] == "f7.jpg"
    assert isinstance(g2.embeddings, np.ndarray) and g2.embeddings.dtype == np.float16
    assert g2.verify()["faces"] == 40
    # a second handle sees commits made through the first one
    g2.add(x[:1], "late")
    assert len(FaceGallery(tmp_path / "g")) == 41 and "late" in g2.identities()


def test_open_handles_see_each_others_changes(tmp_path, monkeypatch):
    """A search answers from cached state (the row table) only while nothing was committed."""
    x, names, _ = clustered(5, 3)
    reader, writer = FaceGallery(tmp_path / "g"), FaceGallery(tmp_path / "g")
    writer.add(x, names, {"path": [f"{i}.jpg" for i in range(15)]})
    first = reader.search(x[0], k=1)
    assert first.identities[0, 0] == "person000" and first.paths[0, 0] == "0.jpg"
    writer.rename("person000", "alice")
    assert reader.search(x[0], k=1).identities[0, 0] == "alice"
    writer.remove("person001")
    res = reader.search(x[3:6], k=13)
    assert len(reader) == 12 and "person001" not in set(res.identities.ravel())
    # galleries above the row-table size read the same records from the database per search
    import lightface.gallery.storage as storage

    monkeypatch.setattr(storage, "ROW_TABLE_MAX", 0)
    big = reader.search(x[3:6], k=13)
    for field in ("face_ids", "identities", "paths"):
        np.testing.assert_array_equal(getattr(big, field), getattr(res, field))


def test_remove_and_rename(tmp_path):
    x, names, _ = clustered(6, 3)
    g = FaceGallery(tmp_path / "g")
    g.add(x, names, {"path": [f"{i}.jpg" for i in range(18)]})
    emb_before = np.array(g.embeddings)
    assert g.remove("person002") == 3
    assert len(g) == 15 and "person002" not in g.identities()
    res = g.search(x[6:9], k=15)
    assert "person002" not in set(res.identities.ravel())
    # face ids are stable; rows compacted; the surviving embeddings are untouched
    assert sorted(r.face_id for r in g.faces()) == [i for i in range(18) if i not in (6, 7, 8)]
    rec = g.face(12)
    np.testing.assert_array_equal(g.embeddings[rec.row], emb_before[12])
    assert g.search(x[12], k=1).face_ids[0, 0] == 12
    with pytest.raises(KeyError):
        g.remove("nobody")
    assert g.rename("person000", "alice") == 3
    assert "alice" in g.identities() and g.search(x[0], k=1).identities[0, 0] == "alice"
    with pytest.raises(ValueError, match="already exists"):
        g.rename("person001", "alice")
    assert g.rename("person001", "alice", merge=True) == 3
    assert g.counts()["alice"] == 6
    with pytest.raises(KeyError):
        g.rename("nobody", "x")
    with pytest.raises(ValueError):
        g.rename("alice", UNKNOWN)
    assert g.remove_faces([12, 13, 999]) == 2
    g2 = FaceGallery(tmp_path / "g")
    assert len(g2) == 13 and g2.verify()["identities"] == 4
    assert sorted(p.name for p in (tmp_path / "g").glob("embeddings-*")) == [g2._store.meta["embeddings_file"]]


# -- enrolment -----------------------------------------------------------------------------------------
def test_collect_photos(tmp_path, people):
    pairs = collect_photos(people)
    assert [(i, p.name) for i, p in pairs[:4]] == [("p0", "0.png"), ("p0", "1.png"), ("p0", "2.png"), ("p1", "0.png")]
    assert {i for i, _ in collect_photos(people / "p2")} == {"p2"}
    assert collect_photos([people / "p1" / "0.png"]) == [("p1", people / "p1" / "0.png")]
    assert {i for i, _ in collect_photos({"bob": [people / "p3"]})} == {"bob"}
    with pytest.raises(FileNotFoundError):
        collect_photos(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        collect_photos(tmp_path / "empty")


def test_a_stray_photo_beside_people_folders_is_refused_not_taken_as_one_person(tmp_path, people):
    shutil.copy(people / "p0" / "0.png", people / "group.png")
    with pytest.raises(ValueError, match=r"holds both images \(1, e.g. group.png\) and folders of images \(4"):
        collect_photos(people)
    # named explicitly, everything below is that one person's
    assert {i for i, _ in collect_photos({"everyone": people})} == {"everyone"}
    assert len(collect_photos({"everyone": people})) == 13


def test_one_persons_folder_is_walked_once(tmp_path, people, caplog, monkeypatch):
    """A one-person folder with a sub-folder of non-images (raw files, a link back up) is walked once: its
    sub-folders' problems are reported once, and their other files are counted as left out."""
    import lightface.data.folders as folders

    alice = people / "p0"
    (alice / "raw").mkdir()
    (alice / "raw" / "0.cr2").write_bytes(b"raw")
    os.symlink("..", alice / "raw" / "up")
    entered = []
    walk = folders.walk_folders

    def spy(root, *a, **k):
        for step in walk(root, *a, **k):
            entered.append(os.path.realpath(step[0]))
            yield step

    monkeypatch.setattr(folders, "walk_folders", spy)
    with caplog.at_level(logging.INFO):
        pairs = collect_photos(alice)
    assert [(i, p.name) for i, p in pairs] == [("p0", "0.png"), ("p0", "1.png"), ("p0", "2.png")]
    assert len(entered) == len(set(entered)), entered
    assert sum("not followed" in r.getMessage() for r in caplog.records) == 1, caplog.text
    assert "left out 1 file(s)" in caplog.text and "0.cr2" in caplog.text


def test_cli_enroll_identity_names_one_person(tmp_path, people, weights, capsys):
    from pipelines.enroll import get_args_parser, main

    main(get_args_parser().parse_args([str(tmp_path / "g"), str(people / "p0"), str(people / "p1" / "0.png"),
                                       "--identity", "Ada Lovelace", "--aligned", "--weights", str(weights),
                                       "--device", "cpu", "--no-progress"]))
    g = FaceGallery(tmp_path / "g")
    assert g.counts() == {"Ada Lovelace": 4}


def test_a_replaced_photo_is_enrolled_again_and_reported(tmp_path, people, embedder, caplog):
    g = FaceGallery(tmp_path / "g", embedder)
    g.enroll(people, aligned=True, duplicate_threshold=None)
    old_id = g.faces("p1")[0].face_id
    shutil.copy(people / "p2" / "0.png", people / "p1" / "0.png")  # the file at p1/0.png replaced
    with caplog.at_level(logging.WARNING, logger="lightface.gallery"):
        report = g.enroll(people, aligned=True, duplicate_threshold=None)
    path = str(people / "p1" / "0.png")
    # (the new content is byte-identical to p2/0.png: a file duplicate, not added; make it unique)
    assert report.added == 0 and report.changed == {}
    cv2.imwrite(path, np.full((128, 128), 77, np.uint8))
    with caplog.at_level(logging.WARNING, logger="lightface.gallery"):
        report = g.enroll(people, aligned=True, duplicate_threshold=None)
    assert report.added == 1 and report.changed == {path: [old_id]}
    assert "1 changed since enrolled" in report.summary() and "differs from the one enrolled" in caplog.text
    assert sorted(f.face_id for f in g.faces("p1") if f.path == path)[0] == old_id  # the old face is kept
    g.remove_faces(report.changed[path])
    assert [f.path for f in g.faces("p1")].count(path) == 1


def test_a_gallery_records_flip_fusion_and_warns_when_an_embedder_differs(tmp_path, people, weights, caplog):
    flipped = FaceEmbedder(weights, device="cpu", flip=True)
    g = FaceGallery(tmp_path / "g", flipped)
    g.enroll(people / "p0", aligned=True, duplicate_threshold=None)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lightface.gallery"):
        FaceGallery(tmp_path / "g", flipped)
        assert "flip fusion" not in caplog.text
        plain = FaceGallery(tmp_path / "g", FaceEmbedder(weights, device="cpu", flip=False))
        assert "embedded with flip fusion on, this embedder has it off" in caplog.text
        plain.enroll(people / "p1", aligned=True, duplicate_threshold=None)  # enrols, and the record stays
    assert plain._store.meta["flip"] == "1"


def test_an_emptied_gallery_forgets_the_model_and_settings_of_the_faces_it_no_longer_holds(tmp_path, people, weights,
                                                                                          other_weights, caplog):
    """Removing every person left the removed faces' flip fusion, detector settings and model recorded: enrolling
    anew with other settings warned against faces that were gone, the stale record stayed (later searches with
    the new faces' own settings were told to switch back), and another model was refused by an empty gallery."""
    flipped = FaceEmbedder(weights, device="cpu", flip=True)
    g = FaceGallery(tmp_path / "g", flipped)
    g.enroll(people, aligned=True, duplicate_threshold=None)
    g.set_threshold(0.5)
    for name in g.identities():
        g.remove(name)
    assert len(g) == 0 and g.model is None and g.settings is None
    assert FaceGallery(tmp_path / "g").threshold == 0.5  # set_threshold's stays
    plain = FaceEmbedder(weights, device="cpu", flip=False)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lightface.gallery"):
        FaceGallery(tmp_path / "g", plain).enroll(people / "p1", aligned=True, duplicate_threshold=None)
        assert FaceGallery(tmp_path / "g").settings["flip"] is False
        FaceGallery(tmp_path / "g", plain)
    assert "flip fusion" not in caplog.text
    FaceGallery(tmp_path / "g").remove_faces([r.face_id for r in FaceGallery(tmp_path / "g").faces()])
    other = FaceGallery(tmp_path / "g", FaceEmbedder(other_weights, device="cpu"))  # refused before
    other.enroll(people / "p2", aligned=True, duplicate_threshold=None)
    assert FaceGallery(tmp_path / "g").model.same_as(model_info(other.embedder)) and other.verify()["faces"] == 3


def test_enroll_resumable_with_bad_and_duplicate_photos(tmp_path, people, embedder):
    (people / "p1" / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    shutil.copy(people / "p0" / "0.png", people / "p3" / "copy_of_p0.png")  # same file under another person
    (people / UNKNOWN).mkdir()
    cv2.imwrite(str(people / UNKNOWN / "x.png"), np.full((128, 128), 50, np.uint8))  # a reserved name
    g = FaceGallery(tmp_path / "g", embedder)
    report = g.enroll(people, aligned=True, batch_size=4, duplicate_threshold=None)
    assert report.photos == 15 and report.added == 12 and report.skipped == 0
    assert sorted(report.failed) == [str(people / "p1" / "broken.jpg"), str(people / UNKNOWN / "x.png")]
    assert "reserved" in report.failed[str(people / UNKNOWN / "x.png")]
    shutil.rmtree(people / UNKNOWN)
    assert len(report.duplicates) == 1
    dup = report.duplicates[0]
    assert dup.kind == "file" and dup.conflict and dup.of_identity == "p0" and dup.identity == "p3"
    assert report.identities == ["p0", "p1", "p2", "p3"] and "12 faces added" in report.summary()
    assert g.model == model_info(embedder) and g.threshold == pytest.approx(0.95)
    rec = g.faces("p2")[0]
    assert rec.path == str(people / "p2" / "0.png") and rec.file_sha256 and rec.box is None
    # running again resumes: nothing new
    again = g.enroll(people, aligned=True, batch_size=4, duplicate_threshold=None)
    assert again.added == 0 and again.skipped == 12 and len(again.failed) == 1 and len(g) == 12
    # a new photo is the only one added
    cv2.imwrite(str(people / "p4.png"), np.full((128, 128), 100, np.uint8))
    (people / "p4").mkdir()
    shutil.move(str(people / "p4.png"), str(people / "p4" / "0.png"))
    third = g.enroll(people, aligned=True, duplicate_threshold=None)
    assert third.added == 1 and third.skipped == 12 and len(g) == 13
    # identification with the model card threshold of the embedder (0.95 in its checkpoint)
    probe = embedder.embed([cv2.imread(str(people / "p2" / "1.png"), cv2.IMREAD_GRAYSCALE)])
    assert g.identify(probe).identities == ["p2"]


def test_enroll_flags_near_duplicates(tmp_path, embedder):
    photos = _write_people(tmp_path / "photos", people=3, photos=1)
    img = cv2.imread(str(photos / "p1" / "0.png"), cv2.IMREAD_GRAYSCALE)
    img[0, 0] ^= 1  # one pixel: another file, the same face
    cv2.imwrite(str(photos / "p1" / "1.png"), img)
    cv2.imwrite(str(photos / "p2" / "p1_again.png"), img[:, ::-1][:, ::-1])
    g = FaceGallery(tmp_path / "g", embedder)
    report = g.enroll(photos, aligned=True, duplicate_threshold=0.995)
    assert report.added == 4  # the near-duplicate is added (flagged); the byte-identical file is not
    kinds = {(d.path.split(os.sep)[-2], d.kind, d.conflict) for d in report.duplicates}
    assert kinds == {("p1", "embedding", False), ("p2", "file", True)}
    # the summary counts the conflict with the kind it belongs to
    assert "1 exact duplicate files skipped (1 under another identity), 1 near-duplicates flagged, " in report.summary()
    flagged = [r for r in g.faces() if r.duplicate_of is not None]
    assert flagged and all(g.face(r.duplicate_of).identity == "p1" for r in flagged)
    # each names the enrolled face it duplicates, also a file whose original was committed in the same batch
    # (the face to remove when the two identities conflict)
    assert all(d.of_face_id is not None and g.face(d.of_face_id).path == d.of_path for d in report.duplicates)


_CHILD = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    import lightcnn_tiny  # registers the tiny arch
    from lightface.embed import FaceEmbedder
    from lightface.gallery import FaceGallery, storage
    mode, kill_at = sys.argv[1], int(sys.argv[2])
    calls = [0]
    def die_at_nth(original):
        def wrapped(*a, **k):
            calls[0] += 1
            if calls[0] == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            return original(*a, **k)
        return wrapped
    if mode == "before_commit":   # rows written and fsynced, SQLite rows inserted, COMMIT not reached
        storage.GalleryStore.set_meta = die_at_nth(storage.GalleryStore.set_meta)
    else:                         # while writing the embedding rows
        storage.os.fsync = die_at_nth(storage.os.fsync)
    g = FaceGallery({gallery!r}, FaceEmbedder({weights!r}, device="cpu"))
    g.enroll({photos!r}, aligned=True, batch_size=2, duplicate_threshold=None)
    print("finished")
""")


# set_meta runs once for the embedder's settings (threshold, flip fusion), then once per batch: the 4th call is batch 3's commit;
# os.fsync runs once per batch: the 3rd call is batch 3's embedding rows
@pytest.mark.slow  # a child process (imports torch: ~10 s on a busy 2-core machine)
@pytest.mark.parametrize("mode,kill_at", [("before_commit", 4), ("during_write", 3)])
def test_enrolment_survives_sigkill_and_resumes(tmp_path, people, weights, embedder, mode, kill_at):
    gallery = tmp_path / "g"
    FaceGallery(gallery)  # created before the child runs, so its own creation fsyncs are not counted
    script = tmp_path / "child.py"
    script.write_text(_CHILD.format(tests=str(ROOT / "tests"), gallery=str(gallery), weights=str(weights),
                                    photos=str(people)))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_ALBUMENTATIONS_UPDATE": "1"}
    proc = subprocess.run([sys.executable, str(script), mode, str(kill_at)], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    g = FaceGallery(gallery, embedder)
    committed = len(g)
    assert committed == 4  # two batches of two made it; the third was in flight
    assert g.verify()["faces"] == 4
    report = g.enroll(people, aligned=True, batch_size=2, duplicate_threshold=None)
    assert report.skipped == 4 and report.added == 8 and len(g) == 12
    g.verify()
    assert sorted(g.counts().values()) == [3, 3, 3, 3]


@pytest.mark.slow
def test_sigkill_at_a_random_moment_leaves_a_consistent_gallery(tmp_path):
    gallery = tmp_path / "g"
    FaceGallery(gallery)
    script = tmp_path / "adder.py"
    script.write_text(textwrap.dedent(f"""
        import numpy as np
        from lightface.gallery import FaceGallery
        g = FaceGallery({str(gallery)!r})
        rng = np.random.default_rng(0)
        while True:
            g.add(rng.standard_normal((50, 64)).astype(np.float32), [f"p{{i}}" for i in range(50)])
    """))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, str(script)], env=env)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            time.sleep(0.2)
            try:
                if len(FaceGallery(gallery)) >= 200:
                    break
            except GalleryError:
                pass
        time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    g = FaceGallery(gallery)
    assert len(g) >= 200 and len(g) % 50 == 0
    assert g.verify()["faces"] == len(g)
    g.add(np.ones((1, 64)), "after")  # writable again; an uncommitted tail is overwritten
    assert g.verify()["faces"] % 50 == 1


# -- corruption and model checks ------------------------------------------------------------------
def test_corrupt_gallery_gives_clear_errors(tmp_path):
    x, names, _ = clustered(3, 3)
    for case in ("db_garbage", "not_a_gallery", "emb_truncated", "emb_missing", "nan_rows"):
        root = tmp_path / case
        FaceGallery(root).add(x, names)
        if case == "db_garbage":
            for extra in root.glob("gallery.db-*"):
                extra.unlink()
            (root / "gallery.db").write_bytes(b"this is not sqlite" * 100)
        elif case == "not_a_gallery":
            (root / "gallery.db").unlink()
            for extra in root.glob("gallery.db-*"):
                extra.unlink()
            sqlite3.connect(str(root / "gallery.db")).execute("CREATE TABLE other (x)").connection.commit()
        elif case == "emb_truncated":
            f = next(root.glob("embeddings-*.f16"))
            f.write_bytes(f.read_bytes()[:1000])
        elif case == "emb_missing":
            next(root.glob("embeddings-*.f16")).unlink()
        else:
            f = next(root.glob("embeddings-*.f16"))
            arr = np.fromfile(f, np.float16)
            arr[256:512] = np.nan
            arr.tofile(f)
        if case == "nan_rows":
            with pytest.raises(CorruptGalleryError, match="not finite unit vectors"):
                FaceGallery(root).verify()
            continue
        with pytest.raises(CorruptGalleryError) as err:
            FaceGallery(root).search(x, k=1)
        assert str(root) in str(err.value)
    with pytest.raises(GalleryError, match="no face gallery here"):
        FaceGallery(tmp_path / "nothing", create=False)



def test_a_gallery_is_created_only_in_a_missing_or_empty_folder(tmp_path):
    other = tmp_path / "dataset.lmdb"
    other.mkdir()
    (other / "data.mdb").write_bytes(b"\0" * 64)
    for create in (True, False):
        with pytest.raises(CorruptGalleryError, match=r"dataset\.lmdb: not a face gallery \(no gallery\.db\) and "
                                                      r"not empty \(holds data\.mdb\); give the folder of an existing"):
            FaceGallery(other, create=create)
    assert [p.name for p in other.iterdir()] == ["data.mdb"]  # nothing written into it
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / ".DS_Store").write_bytes(b"\0")  # hidden files do not make a folder non-empty
    FaceGallery(tmp_path / "empty").add(np.ones((1, 8)), "a")
    assert len(FaceGallery(tmp_path / "empty", create=False)) == 1

def test_other_model_gallery_refused(tmp_path, people, weights, other_weights, embedder):
    g = FaceGallery(tmp_path / "g", embedder)
    g.enroll(people, aligned=True, duplicate_threshold=None)
    other = FaceEmbedder(other_weights, device="cpu")
    with pytest.raises(GalleryModelError, match="built with tiny.pt"):
        FaceGallery(tmp_path / "g", other)
    with pytest.raises(GalleryModelError):
        g.enroll(people, other, aligned=True)
    with pytest.raises(GalleryModelError):
        g.add(np.ones((1, 256)), "x", model=other)
    copy = tmp_path / "renamed_copy.pt"  # the same weights under another name: the same model
    shutil.copy(weights, copy)
    assert len(FaceGallery(tmp_path / "g", FaceEmbedder(copy, device="cpu"))) == 12
    assert model_info(ModelInfo("m", "abc")).sha256 == "abc"
    assert model_info(TinyLightCNN(num_classes=0)).arch == TINY


# -- FAISS ---------------------------------------------------------------------------------------------
@needs_faiss
@pytest.mark.parametrize("kind", ["hnsw", "IVF8,Flat"])
def test_exact_and_faiss_agree(tmp_path, kind):
    x, names, centres = clustered(100, 10, seed=3)
    g = FaceGallery(tmp_path / "g")
    g.add(x, names)
    queries, _, _ = clustered(100, 1, seed=3)  # the same centres
    params = {"nprobe": 8} if kind.startswith("IVF") else {}
    info = g.build_index(kind, params)
    assert info["rows"] == 1000 and info["factory"] in ("HNSW32", "IVF8,Flat")
    exact = g.search(queries, k=5, backend="exact")
    approx = g.search(queries, k=5, backend="faiss")
    np.testing.assert_array_equal(approx.face_ids[:, 0], exact.face_ids[:, 0])
    np.testing.assert_allclose(approx.scores, exact.scores, atol=2e-3)
    overlap = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(approx.face_ids, exact.face_ids)])
    assert overlap >= 0.98
    assert g.identify(queries, threshold=0.5).identities == g.identify(queries, 0.5, backend="exact").identities
    # the index persists with its factory string and parameters
    g2 = FaceGallery(tmp_path / "g")
    assert g2.index_info["factory"] == info["factory"] and g2.index_info["params"] == info["params"]
    np.testing.assert_array_equal(g2.search(queries, k=5).face_ids, approx.face_ids)
    # faces added later are searched exactly until the index is updated
    new = np.roll(centres[0], 1)[None]
    g2.add(new, "newcomer")
    assert g2.search(new, k=1).identities[0, 0] == "newcomer"
    assert g2.update_index()["rows"] == 1001
    assert g2.search(new, k=1, backend="faiss").identities[0, 0] == "newcomer"
    g2.remove("newcomer")  # removal drops the (now stale) index
    assert g2.index_info is None and len(list((tmp_path / "g").glob("index-*"))) == 0


@needs_faiss
def test_build_index_takes_flat_and_explains_a_factory_string_faiss_cannot_parse(tmp_path):
    """enroll --index / gallery index take "flat" beside auto, hnsw and ivf (build_index("flat") failed with FAISS's
    C++ "could not parse index string flat ... index_factory.cpp:1228"); a string FAISS cannot parse is a ValueError
    naming the kinds and the case of factory strings, and the gallery keeps searching exactly."""
    x, names, _ = clustered(4, 5, dim=32)
    g = FaceGallery(tmp_path / "g")
    g.add(x, names)
    assert g.build_index("flat")["factory"] == "Flat" and g.build_index("HNSW")["factory"] == "HNSW32"
    assert g.search(x[:3], k=1, backend="faiss").identities[:, 0].tolist() == names[:3]
    g.drop_index()
    with pytest.raises(ValueError, match="'bogus' is not an index kind: use auto, hnsw, ivf, flat, or a FAISS"):
        g.build_index("bogus")
    assert g.index_info is None and g.search(x[:1], k=1).identities[0, 0] == names[0]


def test_choose_index_by_size():
    assert faiss_backend.choose_index(10_000)[0] == "HNSW32"
    assert faiss_backend.choose_index(1_000_000)[0] == "HNSW32"
    factory, params = faiss_backend.choose_index(4_000_000)
    assert factory == "IVF8192,SQfp16" and params["nprobe"] == 512


def test_faiss_backend_requested_without_index(tmp_path):
    g = FaceGallery(tmp_path / "g")
    g.add(np.ones((2, 8)), ["a", "b"])
    with pytest.raises(GalleryError, match="no FAISS index"):
        g.search(np.ones(8), backend="faiss")


# -- CLIs ----------------------------------------------------------------------------------------------
def test_cli_enroll_and_search(tmp_path, people, weights, capsys):
    from pipelines import enroll, search

    (people / "p1" / "broken.png").write_bytes(b"nope")
    argv = [str(tmp_path / "g"), str(people), "--weights", str(weights), "--aligned", "--device", "cpu",
            "--no-duplicate-check", "--no-progress", "--json", str(tmp_path / "enroll.json")]
    out = enroll.main(enroll.get_args_parser().parse_args(argv))
    assert out["added"] == 12 and out["faces"] == 12 and len(out["failed"]) == 1
    printed = capsys.readouterr().out
    assert "12 faces added for 4 identities" in printed and "failed:" in printed
    assert json.loads((tmp_path / "enroll.json").read_text())["people"] == 4
    index = ["--index", "hnsw"] if faiss_backend.available() else []
    again = enroll.main(enroll.get_args_parser().parse_args(argv + index))
    assert again["added"] == 0 and again["skipped"] == 12
    assert (again["index"] or {}).get("factory") == ("HNSW32" if index else None)
    with pytest.raises(RuntimeError, match="--strict"):
        enroll.main(enroll.get_args_parser().parse_args(argv + ["--strict"]))
    queries = [str(people / "p3" / "1.png"), str(people / "p0" / "2.png")]
    sheet = tmp_path / "sheet.jpg"
    argv = [str(tmp_path / "g"), *queries, "--weights", str(weights), "--aligned", "--device", "cpu", "--top", "3",
            "--sheet", str(sheet), "--json", str(tmp_path / "search.json")]
    result = search.main(search.get_args_parser().parse_args(argv))
    assert [f["identity"] for f in result["faces"]] == ["p3", "p0"]
    assert [f["matches"][0]["identity"] for f in result["faces"]] == ["p3", "p0"]
    table = capsys.readouterr().out
    assert "-> p3" in table and "contact sheet" in table
    img = cv2.imread(str(sheet))
    assert img is not None and img.shape[0] > 2 * 128 and img.shape[1] > 4 * 128
    # failures: a missing query is reported, others still answered, exit status 1
    argv_bad = [str(tmp_path / "g"), str(tmp_path / "missing.jpg"), queries[0], "--weights", str(weights), "--aligned",
                "--device", "cpu", "--sheet", ""]
    with pytest.raises(RuntimeError, match="1 of 2 query photos"):
        search.main(search.get_args_parser().parse_args(argv_bad))
    from pipelines._cli import run_cli

    assert run_cli(search.main, search.get_args_parser, argv_bad) == 1
    assert run_cli(search.main, search.get_args_parser, [str(tmp_path / "nothing"), queries[0]]) == 1
    assert "no face gallery here" in capsys.readouterr().err


@pytest.mark.slow
def test_enroll_takes_an_occluded_face_as_the_embedder_does(tmp_path, shared_data, shared_models, weights):
    """A photo whose masked face the detector scores under its threshold is enrolled through the
    embedder's rescue (as embed(aligned=False) takes it), with its detection recorded; with
    rescue_threshold=None it is reported failed, and nothing stops the run."""
    from test_data_detect import occluded_lfw_photo

    _, occluded = occluded_lfw_photo(shared_data)
    (tmp_path / "photos" / "masked").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "photos" / "masked" / "1.png"), occluded)
    det = str(shared_models / "det_500m.onnx")
    report = FaceGallery(tmp_path / "g").enroll(tmp_path / "photos", FaceEmbedder(weights, device="cpu", detector=det),
                                                duplicate_threshold=None)
    assert report.added == 1 and not report.failed
    rec = FaceGallery(tmp_path / "g").faces()[0]
    assert rec.identity == "masked" and 0.25 <= rec.det_score < 0.5
    strict = FaceEmbedder(weights, device="cpu", detector=det, rescue_threshold=None)
    report = FaceGallery(tmp_path / "g2").enroll(tmp_path / "photos", strict, duplicate_threshold=None)
    assert report.added == 0 and "no face" in next(iter(report.failed.values()))


def test_cli_search_group_photo_on_real_faces(tmp_path, shared_data, shared_models, weights, caplog):
    """Whole photos through the detector: every face of a group photo is searched; the gallery
    records the enrolment detector and warns when faces are searched with another one."""
    from pipelines import enroll, search

    src = shared_data / "lfw_identities" / "images"
    names = sorted(p.name for p in src.iterdir())[:3]
    photos = tmp_path / "photos"
    for n in names:
        (photos / n).mkdir(parents=True)
        for k in (1, 2):
            shutil.copy(src / n / f"{n}_{k:04d}.jpg", photos / n)
    det = str(shared_models / "det_500m.onnx")
    out = enroll.main(enroll.get_args_parser().parse_args(
        [str(tmp_path / "g"), str(photos), "--weights", str(weights), "--detector", det, "--device", "cpu",
         "--no-progress"]))
    assert out["added"] == 6 and not out["failed"]
    rec = FaceGallery(tmp_path / "g").faces()[0]
    assert rec.box is not None and rec.landmarks.shape == (5, 2) and rec.det_score > 0.5
    # a "group photo": three enrolled faces side by side
    tiles = [cv2.imread(str(photos / n / f"{n}_0001.jpg")) for n in names]
    group = tmp_path / "group.jpg"
    cv2.imwrite(str(group), np.hstack(tiles))
    result = search.main(search.get_args_parser().parse_args(
        [str(tmp_path / "g"), str(group), "--weights", str(weights), "--detector", det, "--device", "cpu",
         "--sheet", str(tmp_path / "sheet.jpg"), "--threshold", "0.999"]))
    assert len(result["faces"]) == 3
    found = {f["matches"][0]["identity"] for f in result["faces"]}
    assert found == set(names)  # the same photos were enrolled: each face finds its own person
    # the Python API names faces as identify() does: at the card's identification threshold, not at the
    # one-pair verification threshold (which, lower, accepted strangers)
    emb = FaceEmbedder(weights, device="cpu", detector=det)
    emb.threshold, emb.identification_threshold = 0.0, 1.01
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lightface.gallery"):
        faces = FaceGallery(tmp_path / "g", emb).search_faces(str(group))
    assert len(faces) == 3 and {f.identity for f in faces} == {UNKNOWN}
    assert FaceGallery(tmp_path / "g").detector == "det_500m.onnx" and "detected and aligned by" not in caplog.text
    with caplog.at_level(logging.WARNING, logger="lightface.gallery"):
        yunet = FaceEmbedder(weights, device="cpu", detector="yunet")
        assert len(FaceGallery(tmp_path / "g", yunet).search_faces(str(group))) == 3
    assert "faces were detected and aligned by det_500m.onnx, this embedder's detector is yunet" in caplog.text


def test_gallery_records_and_checks_the_detector_options(tmp_path, shared_data, shared_models, weights, caplog):
    """The detector's det_size / threshold decide which faces of a photo are found: the gallery records
    them with the first faces (enroll --det-size / --det-threshold) and warns when photos are enrolled or
    searched with other ones, as it does for another detector; the same options give no warning."""
    src = shared_data / "lfw_identities" / "images"
    name = sorted(p.name for p in src.iterdir())[0]
    photo = src / name / f"{name}_0001.jpg"
    det = str(shared_models / "det_500m.onnx")
    enrolled = FaceEmbedder(weights, device="cpu", detector=det, detector_options={"det_size": 320, "threshold": 0.6})
    FaceGallery(tmp_path / "g", enrolled).enroll({name: [photo]})
    assert FaceGallery(tmp_path / "g").detector_options == {"det_size": 320, "threshold": 0.6}
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lightface.gallery"):
        same = FaceEmbedder(weights, device="cpu", detector=det, detector_options={"det_size": 320, "threshold": 0.6})
        assert FaceGallery(tmp_path / "g", same).search_faces(str(photo))[0].matches[0].identity == name
    assert "det_size" not in caplog.text
    with caplog.at_level(logging.WARNING, logger="lightface.gallery"):
        default = FaceEmbedder(weights, device="cpu", detector=det)  # det_size 640, threshold 0.5
        assert FaceGallery(tmp_path / "g", default).search_faces(str(photo))
    assert "detected with det_size 320, threshold 0.6, this embedder's detector runs with det_size 640, " \
           "threshold 0.5" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lightface.gallery"):
        FaceGallery(tmp_path / "g", default).enroll({name: [src / name / f"{name}_0002.jpg"]})
    assert "--det-size 320 --det-threshold 0.6" in caplog.text


def test_cli_search_finds_an_occluded_face_that_enroll_takes(tmp_path, shared_data, shared_models, weights, caplog):
    """A masked face the detector scores under its threshold: enroll took it through the embedder's rescue, but
    search (search_faces, python -m pipelines.search) kept the detector's threshold and answered "no face
    detected" for the very photo enrolled. Both take it now, with the warning; rescue_threshold=None still fails."""
    from pipelines import enroll, search
    from test_data_detect import occluded_lfw_photo

    _, occluded = occluded_lfw_photo(shared_data)
    (tmp_path / "photos" / "masked").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "photos" / "masked" / "1.png"), occluded)
    cv2.imwrite(str(tmp_path / "query.png"), occluded)
    det = str(shared_models / "det_500m.onnx")
    common = ["--weights", str(weights), "--detector", det, "--device", "cpu"]
    assert enroll.main(enroll.get_args_parser().parse_args(
        [str(tmp_path / "g"), str(tmp_path / "photos"), *common, "--no-progress"]))["added"] == 1
    with caplog.at_level(logging.WARNING, logger="lightface.embed"):
        found = search.main(search.get_args_parser().parse_args(
            [str(tmp_path / "g"), str(tmp_path / "query.png"), *common, "--sheet", ""]))
    assert not found["failed"] and len(found["faces"]) == 1
    assert found["faces"][0]["matches"][0]["identity"] == "masked" and 0.25 <= found["faces"][0]["det_score"] < 0.5
    assert "using its best candidate" in caplog.text
    strict = FaceEmbedder(weights, device="cpu", detector=det, rescue_threshold=None)
    assert FaceGallery(tmp_path / "g", strict).search_faces(str(tmp_path / "query.png")) == []


def test_the_rescue_and_antialias_remedies_are_flags_of_the_recognition_clis(tmp_path, shared_data, shared_models,
                                                                             weights, caplog, capsys):
    """The rescue warning advised FaceEmbedder(rescue_threshold=...), and the gallery's settings warning
    FaceEmbedder(rescue_threshold=None) / FaceEmbedder(antialias=False): keywords that extract_embeddings, enroll,
    search and evaluate had no flag for. --rescue-threshold (none: off) and --antialias / --no-antialias are
    those flags now, the warnings name them, and following them does what the warnings say."""
    from pipelines import enroll, evaluate, extract_embeddings, search
    from pipelines._cli import parse_with_config, run_cli
    from test_data_detect import occluded_lfw_photo

    _, occluded = occluded_lfw_photo(shared_data)
    (tmp_path / "masked").mkdir()
    cv2.imwrite(str(tmp_path / "masked" / "1.png"), occluded)
    common = ["--weights", str(weights), "--detector", str(shared_models / "det_500m.onnx"), "--device", "cpu"]
    extract = ["-i", str(tmp_path / "masked"), *common]
    with caplog.at_level(logging.WARNING, logger="lightface.embed"):
        assert run_cli(extract_embeddings.main, extract_embeddings.get_args_parser,
                       [*extract, "-o", str(tmp_path / "a.npz")]) == 0
    assert "using its best candidate" in caplog.text and "--rescue-threshold none" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lightface.embed"):  # followed: no rescue, the photo has no face
        assert run_cli(extract_embeddings.main, extract_embeddings.get_args_parser,
                       [*extract, "-o", str(tmp_path / "b.npz"), "--rescue-threshold", "none"]) == 1
    assert "best candidate" not in caplog.text and "no face" in capsys.readouterr().err
    (tmp_path / "run.yaml").write_text("rescue_threshold: null\nantialias: false\n")  # the same from a --config file
    args = parse_with_config(extract_embeddings.get_args_parser(),
                             [*extract, "-o", "c.npz", "--config", str(tmp_path / "run.yaml")])
    assert args.rescue_threshold is None and args.antialias is False
    for cli, given in ((enroll, ["g", "p"]), (search, ["g", "q"]), (evaluate, ["--pairs", "p", "--images", "i"])):
        parsed = cli.get_args_parser().parse_args([*given, "--rescue-threshold", "0.3", "--no-antialias"])
        assert (parsed.rescue_threshold, parsed.antialias) == (0.3, False)
    # a gallery enrolled without rescue and antialiasing: searching with the defaults names the flags to pass
    src = shared_data / "lfw_identities" / "images"
    name = sorted(p.name for p in src.iterdir())[0]
    (tmp_path / "people" / name).mkdir(parents=True)
    shutil.copy(src / name / f"{name}_0001.jpg", tmp_path / "people" / name)
    photo = str(tmp_path / "people" / name / f"{name}_0001.jpg")
    strict = ["--rescue-threshold", "none", "--no-antialias"]
    assert enroll.main(enroll.get_args_parser().parse_args(
        [str(tmp_path / "g"), str(tmp_path / "people"), *common, *strict, "--no-progress"]))["added"] == 1
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lightface.gallery"):
        search.main(search.get_args_parser().parse_args([str(tmp_path / "g"), photo, *common, "--sheet", ""]))
    assert "(--rescue-threshold none --no-antialias) to detect as the enrolment did" in caplog.text
    # the rescue finds other faces; antialiasing crops the same face differently: the warning says both
    assert "other faces are found" in caplog.text and "the same face is cropped differently" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lightface.gallery"):
        found = search.main(search.get_args_parser().parse_args([str(tmp_path / "g"), photo, *common, *strict,
                                                                 "--sheet", ""]))
    assert "detected with" not in caplog.text and found["faces"][0]["matches"][0]["identity"] == name


def test_gallery_records_the_embedders_settings_and_checks_the_rescue_threshold(tmp_path, shared_data, shared_models,
                                                                              weights, caplog):
    """The gallery records FaceEmbedder.settings (the description extract_embeddings writes too), rescue threshold
    included: a gallery enrolled without rescue (rescue_threshold=None) and searched with it finds faces the
    enrolment skipped, as another --det-threshold does, and now says so as it does for the threshold. A gallery
    of an earlier lightface (flip, detector, detector_options only) still opens and is checked on what it holds."""
    src = shared_data / "lfw_identities" / "images"
    name = sorted(p.name for p in src.iterdir())[0]
    photo = src / name / f"{name}_0001.jpg"
    det = str(shared_models / "det_500m.onnx")
    strict = FaceEmbedder(weights, device="cpu", detector=det, rescue_threshold=None)
    FaceGallery(tmp_path / "g", strict).enroll({name: [photo]})
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lightface.gallery"):
        assert FaceGallery(tmp_path / "g", strict).search_faces(str(photo))
        assert "detected with" not in caplog.text
        default = FaceEmbedder(weights, device="cpu", detector=det)  # rescue_threshold 0.25
        assert FaceGallery(tmp_path / "g", default).search_faces(str(photo))
    assert "detected with rescue_threshold None, this embedder's detector runs with rescue_threshold 0.25" in caplog.text
    assert "FaceEmbedder(rescue_threshold=None)" in caplog.text
    g = FaceGallery(tmp_path / "g")
    assert g.settings == strict.settings(False) and g.settings["detector"]["rescue_threshold"] is None
    assert g.detector == "det_500m.onnx" and g.detector_options == {"det_size": 640, "threshold": 0.5}
    # the same gallery as an earlier lightface wrote it: no "settings" record
    with sqlite3.connect(tmp_path / "g" / "gallery.db") as conn:
        conn.execute("DELETE FROM meta WHERE key='settings'")
    legacy = FaceGallery(tmp_path / "g")
    assert legacy.settings == {"flip": False, "detector": {"model": "det_500m.onnx", "det_size": 640, "threshold": 0.5}}
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lightface.gallery"):
        assert FaceGallery(tmp_path / "g", default).search_faces(str(photo))  # rescue: not recorded, not compared
        assert "detected with" not in caplog.text and "flip fusion" not in caplog.text
        other = FaceEmbedder(weights, device="cpu", detector=det, detector_options={"det_size": 320})
        assert FaceGallery(tmp_path / "g", other).search_faces(str(photo))
    assert "detected with det_size 640, this embedder's detector runs with det_size 320" in caplog.text


def test_a_gallery_started_from_aligned_crops_records_the_detector_of_its_first_whole_photos(
        tmp_path, shared_data, shared_models, weights, caplog):
    """A gallery whose first faces were aligned crops recorded no detector, and whole photos enrolled later never
    recorded theirs: photos searched with another det_size or detector were not checked. The detector of the first
    whole-photo faces is recorded now (not replaced by later ones), and searches are checked against it."""
    from lightface.data.align import align_face

    root = shared_data / "lfw_identities"
    landmarks = {ln.split()[0]: np.array(ln.split()[1:], float).reshape(5, 2)
                 for ln in (root / "landmarks_5pt.txt").read_text().splitlines() if ln.strip()}
    names = sorted(p.name for p in (root / "images").iterdir())[:2]
    for n in names:
        key = f"{n}/{n}_0001.jpg"
        (tmp_path / "crops" / n).mkdir(parents=True)
        crop, _ = align_face(cv2.imread(str(root / "images" / key)), landmarks[key], template="lightcnn", size=128)
        cv2.imwrite(str(tmp_path / "crops" / n / "1.png"), crop)
    det = str(shared_models / "det_500m.onnx")
    small = FaceEmbedder(weights, device="cpu", detector=det, detector_options={"det_size": 320})
    assert FaceGallery(tmp_path / "g", small).enroll(tmp_path / "crops", aligned=True).added == 2
    assert FaceGallery(tmp_path / "g").detector is None
    photos = {n: [root / "images" / n / f"{n}_0002.jpg"] for n in names}
    assert FaceGallery(tmp_path / "g", small).enroll(photos).added == 2
    g = FaceGallery(tmp_path / "g")
    assert g.detector == "det_500m.onnx" and g.detector_options == {"det_size": 320, "threshold": 0.5}
    assert g.settings["detector"] == small.settings(False)["detector"] and g.settings["flip"] == small.flip
    default = FaceEmbedder(weights, device="cpu", detector=det)  # det_size 640
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lightface.gallery"):
        FaceGallery(tmp_path / "g", default).enroll({names[0]: [root / "images" / names[0] / f"{names[0]}_0003.jpg"]})
        assert "--det-size 320" in caplog.text
        caplog.clear()
        query = root / "images" / names[1] / f"{names[1]}_0004.jpg"
        assert FaceGallery(tmp_path / "g", default).search_faces(str(query))
    assert "detected with det_size 320, this embedder's detector runs with det_size 640" in caplog.text
    assert FaceGallery(tmp_path / "g").detector_options["det_size"] == 320  # the first whole photos' setting stays


def test_add_npz_brings_the_model_and_the_settings_of_an_extraction(tmp_path, shared_data, shared_models, weights,
                                                                    other_weights, caplog):
    """Embeddings of python -m pipelines.extract_embeddings added with add(..., model=embedder) recorded no settings
    and were checked against none, though the npz records them: features extracted at --det-size 320 added to a
    gallery searched at 640 gave no warning. add_npz (and add(settings=...)) records and checks them as enroll
    does, takes the people from the folders and refuses an npz of another model."""
    from pipelines import enroll, extract_embeddings

    src = shared_data / "lfw_identities" / "images"
    names = sorted(p.name for p in src.iterdir())[:2]
    for n in names:
        (tmp_path / "photos" / n).mkdir(parents=True)
        shutil.copy(src / n / f"{n}_0001.jpg", tmp_path / "photos" / n)
    det = str(shared_models / "det_500m.onnx")
    npz = tmp_path / "e.npz"
    extract_embeddings.main(extract_embeddings.get_args_parser().parse_args(
        ["-i", str(tmp_path / "photos"), "-o", str(npz), "--weights", str(weights), "--detector", det,
         "--det-size", "320", "--no-flip", "--device", "cpu"]))
    default = FaceEmbedder(weights, device="cpu", detector=det, flip=False)  # det_size 640
    g = FaceGallery(tmp_path / "g", default)
    assert len(g.add_npz(npz)) == 2 and g.identities() == names
    assert g.detector_options == {"det_size": 320, "threshold": 0.5} and g.settings["flip"] is False
    assert {r.path for r in g.faces()} == {str(tmp_path / "photos" / n / f"{n}_0001.jpg") for n in names}
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lightface.gallery"):
        assert g.search_faces(str(src / names[0] / f"{names[0]}_0002.jpg"))[0].matches[0].identity == names[0]
    assert "detected with det_size 320, this embedder's detector runs with det_size 640" in caplog.text
    # a gallery enrolled at 640 with flip fusion on: the npz's features differ in both
    FaceGallery(tmp_path / "g2", FaceEmbedder(weights, device="cpu", detector=det, flip=True)).enroll(
        {names[0]: [src / names[0] / f"{names[0]}_0003.jpg"]})
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lightface.gallery"):
        FaceGallery(tmp_path / "g2").add_npz(npz)
    assert "embedded with flip fusion on, these embeddings have it off" in caplog.text
    assert "detected with det_size 640, these embeddings' detector runs with det_size 320" in caplog.text
    # add(settings=...) with the npz's JSON text does the same as add_npz
    z = np.load(npz)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lightface.gallery"):
        FaceGallery(tmp_path / "g2").add(z["embeddings"], "x", settings=str(z["settings"]))
    assert "these embeddings' detector runs with det_size 320" in caplog.text
    FaceGallery(tmp_path / "g3", FaceEmbedder(other_weights, device="cpu", detector=det)).enroll(
        {names[0]: [src / names[0] / f"{names[0]}_0001.jpg"]})
    with pytest.raises(GalleryModelError, match="this gallery was built with"):
        FaceGallery(tmp_path / "g3").add_npz(npz)
    with pytest.raises(ValueError, match="pass identities="):
        FaceGallery(tmp_path / "g4").add_npz(_flat_npz(npz, tmp_path / "flat.npz"))
    # python -m pipelines.enroll takes the npz too
    out = enroll.main(enroll.get_args_parser().parse_args(
        [str(tmp_path / "g5"), str(npz), "--weights", str(weights), "--detector", det, "--device", "cpu",
         "--no-progress"]))
    assert out["from_npz"] == 2 and out["faces"] == 2 and out["people"] == 2
    again = enroll.main(enroll.get_args_parser().parse_args(  # a rerun adds nothing, as for photos
        [str(tmp_path / "g5"), str(npz), "--weights", str(weights), "--detector", det, "--device", "cpu",
         "--no-progress"]))
    assert again["from_npz"] == 0 and again["faces"] == 2
    assert FaceGallery(tmp_path / "g5").detector_options == {"det_size": 320, "threshold": 0.5}


def test_enroll_of_an_npz_without_folders_names_the_identity_flag(tmp_path, shared_data, shared_models, weights,
                                                                  capsys):
    """An npz extracted from a flat folder (one person's photos, no sub-folder) holds paths with no folder to
    name a person: `python -m pipelines.enroll GALLERY e.npz` failed with "pass identities=", a keyword the
    command line has no way to give; it names --identity, and following it enrols the faces."""
    from pipelines import enroll, extract_embeddings
    from pipelines._cli import run_cli

    src = shared_data / "lfw_identities" / "images"
    name = sorted(p.name for p in src.iterdir())[0]
    (tmp_path / "flat").mkdir()
    for k in (1, 2):
        shutil.copy(src / name / f"{name}_000{k}.jpg", tmp_path / "flat")
    common = ["--weights", str(weights), "--detector", str(shared_models / "det_500m.onnx"), "--device", "cpu"]
    npz = tmp_path / "e.npz"
    assert run_cli(extract_embeddings.main, extract_embeddings.get_args_parser,
                   ["-i", str(tmp_path / "flat"), "-o", str(npz), *common]) == 0
    argv = [str(tmp_path / "g"), str(npz), *common, "--no-progress"]
    capsys.readouterr()
    assert run_cli(enroll.main, enroll.get_args_parser, argv) == 1
    err = capsys.readouterr().err
    assert "no folder to name their person" in err and "--identity" in err
    assert run_cli(enroll.main, enroll.get_args_parser, [*argv, "--identity", name]) == 0
    assert FaceGallery(tmp_path / "g").identities() == [name] and len(FaceGallery(tmp_path / "g")) == 2


@needs_faiss
def test_a_gallery_without_a_usable_index_names_the_search_and_enroll_flags(tmp_path, shared_data, shared_models,
                                                                           weights, capsys):
    """python -m pipelines.search --backend faiss on a gallery with no index, or any search of one whose index file
    is gone: the errors said "build one with build_index()" / "rebuild it with build_index() or drop it with
    drop_index()", which the command line has no way to call. They name enroll --index auto and search --backend
    exact now, and following them searches."""
    from pipelines import enroll, search
    from pipelines._cli import run_cli

    src = shared_data / "lfw_identities" / "images"
    name = sorted(p.name for p in src.iterdir())[0]
    (tmp_path / "people" / name).mkdir(parents=True)
    for k in (1, 2):
        shutil.copy(src / name / f"{name}_000{k}.jpg", tmp_path / "people" / name)
    common = ["--weights", str(weights), "--detector", str(shared_models / "det_500m.onnx"), "--device", "cpu"]
    add = [str(tmp_path / "g"), str(tmp_path / "people"), *common, "--no-progress"]
    find = [str(tmp_path / "g"), str(tmp_path / "people" / name / f"{name}_0001.jpg"), *common, "--sheet", ""]
    assert run_cli(enroll.main, enroll.get_args_parser, add) == 0
    capsys.readouterr()
    assert run_cli(search.main, search.get_args_parser, [*find, "--backend", "faiss"]) == 1
    err = capsys.readouterr().err
    assert "no FAISS index" in err and "--backend exact" in err
    assert f"python -m pipelines.gallery {tmp_path / 'g'} index auto" in err
    assert run_cli(enroll.main, enroll.get_args_parser, [*add, "--index", "auto"]) == 0  # followed
    assert FaceGallery(tmp_path / "g").index_info is not None
    assert run_cli(search.main, search.get_args_parser, [*find, "--backend", "faiss"]) == 0
    (tmp_path / "g" / FaceGallery(tmp_path / "g").index_info["file"]).unlink()
    capsys.readouterr()
    assert run_cli(search.main, search.get_args_parser, find) == 1
    err = capsys.readouterr().err
    assert "the FAISS index named by the gallery is missing" in err and "--backend exact" in err
    assert f"python -m pipelines.gallery {tmp_path / 'g'} index none drops it" in err
    assert run_cli(search.main, search.get_args_parser, [*find, "--backend", "exact"]) == 0


def test_cli_gallery_lists_removes_and_indexes_a_gallery_of_real_people(tmp_path, shared_data, shared_models, weights,
                                                                          capsys):
    """From the command line a gallery could only grow: enroll told a user whose photo changed that
    "FaceGallery.remove_faces drops the old" (Python only), and nothing listed, removed or (re)indexed.
    python -m pipelines.gallery GALLERY info | list | remove | rename | index does, through the library (describe,
    select_faces, remove_faces, rename, build_index, drop_index), and enroll's message names it."""
    from pipelines import enroll
    from pipelines import gallery as gallery_cli
    from pipelines._cli import run_cli

    def cli(*argv):
        code = run_cli(gallery_cli.main, gallery_cli.get_args_parser, [str(g), *argv])
        out = capsys.readouterr()
        return code, out.out, out.err

    src = shared_data / "lfw_identities" / "images"
    names = sorted(p.name for p in src.iterdir())[:3]
    photos, g = tmp_path / "photos", tmp_path / "g"
    for n in names:
        (photos / n).mkdir(parents=True)
        for k in (1, 2):
            shutil.copy(src / n / f"{n}_{k:04d}.jpg", photos / n)
    add = [str(g), str(photos), "--weights", str(weights), "--detector", str(shared_models / "det_500m.onnx"),
           "--device", "cpu", "--no-progress", "--no-duplicate-check"]
    assert run_cli(enroll.main, enroll.get_args_parser, add) == 0
    code, out, _ = cli("info", "--verify", "--json", str(tmp_path / "info.json"))
    assert code == 0 and "faces:     6 of 3 people, 256-d" in out and "index:     none (exact search)" in out
    assert "det_500m.onnx" in out and "verify:    ok" in out
    info = json.loads((tmp_path / "info.json").read_text())
    assert info["faces"] == 6 and info["model"]["sha256"] == FaceGallery(g).model.sha256 and info["index"] is None
    code, out, _ = cli("list")
    faces = FaceGallery(g).faces()
    assert code == 0 and "6 faces of 3 people" in out
    assert all(f"face {r.face_id:>6}  {r.path}" in out for r in faces) and f"{names[0]}: 2 faces" in out
    # a photo replaced since it was enrolled: enroll names the command that drops its old face, which works
    old = FaceGallery(g).select_faces(paths=[str(photos / names[1] / f"{names[1]}_0001.jpg")])
    shutil.copy(src / names[1] / f"{names[1]}_0003.jpg", photos / names[1] / f"{names[1]}_0001.jpg")
    assert run_cli(enroll.main, enroll.get_args_parser, add) == 0
    told = capsys.readouterr().out
    command = f"python -m pipelines.gallery {g} remove --face-id {old[0].face_id}"
    assert command in told
    code, out, _ = cli(*command.split()[4:])
    assert code == 0 and f"removed face {old[0].face_id} of {names[1]}" in out
    assert old[0].face_id not in [r.face_id for r in FaceGallery(g).faces()] and len(FaceGallery(g)) == 6
    # a name, id or photo not in the gallery: exit status 1, nothing removed
    code, _, err = cli("remove", names[0], "Nobody", "--face-id", "999")
    assert code == 1 and "identity 'Nobody', face id 999" in err and "nothing was removed" in err
    assert len(FaceGallery(g)) == 6
    # a person and a photo (relative to the current folder, as a user types it) in one atomic removal
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(photos)
        code, out, _ = cli("remove", names[0], "--photo", f"{names[2]}/{names[2]}_0002.jpg", "--json",
                           str(tmp_path / "removed.json"))
    assert code == 0 and f"removed 3 faces of 2 people ({names[0]} no longer enrolled); 3 faces of 2 people left" in out
    assert FaceGallery(g).counts() == {names[1]: 2, names[2]: 1}
    assert len(json.loads((tmp_path / "removed.json").read_text())["removed"]) == 3
    assert FaceGallery(g).verify()["faces"] == 3
    # rename: a new name, then into an enrolled person only with --merge
    assert cli("rename", names[1], "Someone Else")[0] == 0
    code, _, err = cli("rename", names[2], "Someone Else")
    assert code == 1 and "pass --merge" in err and FaceGallery(g).counts() == {"Someone Else": 2, names[2]: 1}
    code, out, _ = cli("rename", names[2], "Someone Else", "--merge")
    assert code == 0 and "'Someone Else' has 3 faces" in out and FaceGallery(g).counts() == {"Someone Else": 3}
    # usage errors: exit status 2, before the gallery is opened
    assert cli("remove")[0] == 2 and cli("index")[0] == 2 and cli("list", "--face-id", "1")[0] == 2
    assert cli("info", "--verify")[0] == 0 and cli("list", "--verify")[0] == 2 and cli("rename", "x")[0] == 2
    code = run_cli(gallery_cli.main, gallery_cli.get_args_parser, [str(tmp_path / "nothing"), "info"])
    assert code == 1 and "no face gallery here" in capsys.readouterr().err and not (tmp_path / "nothing").exists()
    if not faiss_backend.available():
        return
    code, out, _ = cli("index", "auto", "--no-progress")
    assert code == 0 and "built FAISS HNSW32 over 3 faces" in out and FaceGallery(g).index_info["rows"] == 3
    assert "index:     FAISS HNSW32 over 3 faces" in cli("info")[1]
    code, out, _ = cli("remove", "--face-id", str(FaceGallery(g).faces()[0].face_id))
    assert code == 0 and f"python -m pipelines.gallery {g} index auto builds it again" in out
    assert FaceGallery(g).index_info is None and len(FaceGallery(g)) == 2
    assert cli("index", "flat", "--no-progress")[0] == 0 and FaceGallery(g).index_info["factory"] == "Flat"
    code, out, _ = cli("index", "none")
    assert code == 0 and "dropped the FAISS index Flat" in out and FaceGallery(g).index_info is None
    assert not list(g.glob("index-*.faiss"))


def test_an_npz_and_the_photos_it_was_extracted_from_are_enrolled_once(tmp_path, shared_data, shared_models, weights,
                                                                        monkeypatch, caplog):
    """A rerun adds nothing, whether photos come as files or as the npz of python -m pipelines.extract_embeddings.
    The npz stored its paths relative to the extracted folder and no file hash, enroll stored absolute paths and
    sha256s, so neither recognised the other: an npz enrolled after its photos (or the photos after the npz) added
    every face a second time. The npz records its root and file hashes now; the faces are stored as enroll stores
    them, and either way round the second enrolment adds nothing, also for an npz extracted with a relative -i
    from another folder. A file under two names in the npz is added once, as enroll adds it."""
    from pipelines import enroll, extract_embeddings
    from pipelines._cli import run_cli

    src = shared_data / "lfw_identities" / "images"
    names = sorted(p.name for p in src.iterdir())[:2]
    photos = tmp_path / "photos"
    for n in names:
        (photos / n).mkdir(parents=True)
        for k in (1, 2):
            shutil.copy(src / n / f"{n}_{k:04d}.jpg", photos / n)
    common = ["--weights", str(weights), "--detector", str(shared_models / "det_500m.onnx"), "--device", "cpu"]
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert run_cli(extract_embeddings.main, extract_embeddings.get_args_parser,
                   ["-i", "../photos", "-o", "e.npz", *common]) == 0
    npz = tmp_path / "elsewhere" / "e.npz"
    monkeypatch.chdir(tmp_path)

    def run(gallery, what):
        return enroll.main(enroll.get_args_parser().parse_args([str(tmp_path / gallery), str(what), *common,
                                                                "--no-progress"]))

    assert run("g", photos)["added"] == 4
    assert run("g", npz)["from_npz"] == 0 and len(FaceGallery(tmp_path / "g")) == 4  # was 8
    assert run("g2", npz)["from_npz"] == 4
    again = run("g2", photos)
    assert again["added"] == 0 and again["skipped"] == 4 and not again["changed"] and not again["duplicates"]
    assert sorted(r.path for r in FaceGallery(tmp_path / "g2").faces()) == \
        sorted(str(p) for p in photos.glob("*/*.jpg"))
    # the same file twice in one npz (a copy under another name): added once, and said
    shutil.copy(photos / names[0] / f"{names[0]}_0001.jpg", photos / names[0] / "copy.jpg")
    assert run_cli(extract_embeddings.main, extract_embeddings.get_args_parser,
                   ["-i", str(photos), "-o", str(tmp_path / "e2.npz"), *common]) == 0
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lightface.gallery"):
        assert len(FaceGallery(tmp_path / "g3").add_npz(tmp_path / "e2.npz")) == 4
    assert "copy.jpg" in caplog.text and "same file as" in caplog.text
    # a gallery that took an npz of an earlier lightface (relative paths, no hashes) takes its new extraction as
    # the same faces
    with np.load(npz) as z:
        np.savez(tmp_path / "old.npz", **{k: z[k] for k in z.files if k not in ("root", "file_sha256")})
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lightface.gallery"):
        assert len(FaceGallery(tmp_path / "g4").add_npz(tmp_path / "old.npz")) == 4
    assert "records no root folder" in caplog.text
    assert len(FaceGallery(tmp_path / "g4").add_npz(npz)) == 0 and len(FaceGallery(tmp_path / "g4")) == 4


def test_photos_enrolled_again_through_a_symlink_are_already_enrolled(tmp_path, shared_data, shared_models, weights):
    """A folder enrolled through a symlink (a mounted or linked photo library), then enrolled again by its real
    path, is a rerun: it adds nothing. It was reported as every photo being an exact duplicate of itself ("4 exact
    duplicate files skipped", one "duplicate: ... same file as" line each), which reads as a labelling problem.
    A true copy under another name is still reported."""
    from pipelines import enroll

    src = shared_data / "lfw_identities" / "images"
    names = sorted(p.name for p in src.iterdir())[:2]
    photos = tmp_path / "photos"
    for n in names:
        (photos / n).mkdir(parents=True)
        for k in (1, 2):
            shutil.copy(src / n / f"{n}_{k:04d}.jpg", photos / n)
    (tmp_path / "library").symlink_to(photos)
    common = ["--weights", str(weights), "--detector", str(shared_models / "det_500m.onnx"), "--device", "cpu",
              "--no-progress"]

    def run(what):
        return enroll.main(enroll.get_args_parser().parse_args([str(tmp_path / "g"), str(what), *common]))

    assert run(tmp_path / "library")["added"] == 4
    again = run(photos)
    assert again["added"] == 0 and again["skipped"] == 4 and not again["duplicates"]
    shutil.copy(photos / names[0] / f"{names[0]}_0001.jpg", photos / names[0] / "copy.jpg")
    third = run(photos)
    assert third["skipped"] == 4 and [d["path"] for d in third["duplicates"]] == [str(photos / names[0] / "copy.jpg")]
    assert len(FaceGallery(tmp_path / "g")) == 4


def test_enroll_checks_its_index_faiss_and_json_before_enrolling(tmp_path, shared_data, shared_models, weights,
                                                                   monkeypatch, capsys, caplog):
    """enroll --index BOGUS enrolled every photo and only then said that BOGUS is no index kind, --index auto
    without faiss enrolled everything and ended in an ImportError traceback, --json naming a folder failed
    after the enrolment ("Is a directory"), the report lost, and --identity unknown (the reserved name) or an
    empty one listed every photo as failed, telling the user to "rename the folder", and exited 0 with an empty
    gallery. All are refused (one line) before the gallery is created; enroll({"unknown": ...}) raises. --index
    on a run that enrolled no face failed with "the gallery is empty; nothing to index", losing the list of failed
    photos and the --json report: they are printed and written, and no index is built. --index None is none, as
    for python -m pipelines.gallery. A gallery with an index enrols without faiss (the new faces searched
    exactly), saying once that they are not indexed."""
    from pipelines import enroll
    from pipelines._cli import run_cli

    src = shared_data / "lfw_identities" / "images"
    name = sorted(p.name for p in src.iterdir())[0]
    photos = tmp_path / "photos"
    (photos / name).mkdir(parents=True)
    for k in (1, 2, 3):
        shutil.copy(src / name / f"{name}_{k:04d}.jpg", photos / name)
    g = tmp_path / "g"
    argv = [str(g), str(photos / name / f"{name}_0001.jpg"), "--weights", str(weights), "--detector",
            str(shared_models / "det_500m.onnx"), "--device", "cpu", "--no-progress", "--batch-size", "1"]
    for flag, value in (("--json", str(photos)), ("--identity", "unknown"), ("--identity", " ")):
        capsys.readouterr()
        with pytest.raises(SystemExit) as stop:  # argparse: before a model loads
            run_cli(enroll.main, enroll.get_args_parser, [*argv, flag, value])
        assert stop.value.code == 2 and f"argument {flag}" in capsys.readouterr().err and not g.exists()
    with pytest.raises(ValueError, match="reserved"):
        FaceGallery(tmp_path / "g0").enroll({UNKNOWN: [photos]}, FaceEmbedder(weights, device="cpu"))
    if faiss_backend.available():
        capsys.readouterr()
        assert run_cli(enroll.main, enroll.get_args_parser, [*argv, "--index", "BOGUS"]) == 1
        err = capsys.readouterr().err
        assert "'BOGUS' is not an index kind" in err and "Traceback" not in err and not g.exists()
        # no face enrolled (a photo without one): the failure is reported and kept in --json, nothing indexed
        cv2.imwrite(str(tmp_path / "blank.jpg"), np.full((200, 200, 3), 128, np.uint8))
        blank = [str(tmp_path / "g1"), str(tmp_path / "blank.jpg"), *argv[2:]]
        capsys.readouterr()
        assert run_cli(enroll.main, enroll.get_args_parser,
                       [*blank, "--index", "auto", "--identity", name, "--json", str(tmp_path / "r.json")]) == 0
        assert "failed: " in capsys.readouterr().out and FaceGallery(tmp_path / "g1").index_info is None
        assert list(json.loads((tmp_path / "r.json").read_text())["failed"]) == [str(tmp_path / "blank.jpg")]
        assert run_cli(enroll.main, enroll.get_args_parser, [*argv, "--index", "flat"]) == 0
        assert FaceGallery(g).index_info["factory"] == "Flat"
    with monkeypatch.context() as mp:
        mp.setitem(sys.modules, "faiss", None)  # import faiss raises ImportError, as when it is not installed
        capsys.readouterr()
        assert run_cli(enroll.main, enroll.get_args_parser, [str(tmp_path / "g2"), *argv[1:], "--index", "auto"]) == 1
        err = capsys.readouterr().err
        assert "FAISS is not installed" in err and "Traceback" not in err and not (tmp_path / "g2").exists()
        assert run_cli(enroll.main, enroll.get_args_parser, [str(tmp_path / "g2"), *argv[1:], "--index", "None"]) == 0
        assert FaceGallery(tmp_path / "g2").index_info is None
        if not g.exists():
            return
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            assert run_cli(enroll.main, enroll.get_args_parser, [str(g), str(photos), *argv[2:]]) == 0
        assert "the new faces are not added to it" in caplog.text
        assert caplog.text.count("has a FAISS index but faiss is not installed; searching exactly") == 1
    assert len(FaceGallery(g)) == 3 and FaceGallery(g).index_info["rows"] == 1


def _flat_npz(npz, out):
    """``npz`` with its paths stripped of their folders."""
    with np.load(npz) as z:
        data = {k: z[k] for k in z.files}
    data["paths"] = np.array([Path(str(p)).name for p in data["paths"]])
    np.savez(out, **data)
    return out


def test_cli_search_says_how_to_find_a_face_small_in_a_large_photo(tmp_path, shared_data, shared_models, weights):
    """A query photo where the detector finds no face at its det_size names the setting and the flag that finds
    a small face (a 47-px face in a 4000x3000 photo is missed at 640 and found at 1280)."""
    from pipelines import search

    name = "Ann_Veneman"
    photo = shared_data / "lfw_identities" / "images" / name / f"{name}_0001.jpg"
    det = str(shared_models / "det_500m.onnx")
    FaceGallery(tmp_path / "g", FaceEmbedder(weights, device="cpu", detector=det)).enroll({name: [photo]})
    canvas = np.full((3000, 4000, 3), 120, np.uint8)
    canvas[1500:1590, 2000:2090] = cv2.resize(cv2.imread(str(photo)), (90, 90), interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(tmp_path / "big.jpg"), canvas)
    argv = [str(tmp_path / "g"), str(tmp_path / "big.jpg"), "--weights", str(weights), "--detector", det,
            "--device", "cpu", "--sheet", ""]
    with pytest.raises(RuntimeError, match=r"no face detected \(detector det_500m.onnx, det_size 640, threshold 0.5\); "
                                           r"a face that is small in a large photo is found with a larger --det-size "
                                           r"\(e.g. 1280\)"):
        search.main(search.get_args_parser().parse_args(argv))
    found = search.main(search.get_args_parser().parse_args(argv + ["--det-size", "1280"]))
    assert len(found["faces"]) == 1 and found["faces"][0]["matches"][0]["identity"] == name


def test_identify_defaults_to_the_identification_threshold():
    """An embedder whose model card has an open-set identification threshold (higher than its
    one-pair verification threshold) gives that one to identify(); otherwise the verification one."""
    from types import SimpleNamespace

    from lightface.gallery.gallery import embedder_identification_threshold

    assert embedder_identification_threshold(SimpleNamespace(threshold=0.4, identification_threshold=0.8)) == 0.8
    assert embedder_identification_threshold(SimpleNamespace(threshold=0.4, identification_threshold=None)) == 0.4
    assert embedder_identification_threshold(SimpleNamespace()) is None
    assert embedder_identification_threshold(None) is None


def test_enroll_reports_a_banner_and_a_tiny_image_and_goes_on(tmp_path, shared_data, shared_models, weights):
    """An 8 x 6000 banner in a person's folder stopped pipelines.enroll with an OpenCV traceback naming no file;
    now it fails alone, by its path, as a 1 x 1 image does, and the real photo beside them is enrolled."""
    from pipelines import enroll

    person = tmp_path / "photos" / "ada"
    person.mkdir(parents=True)
    shutil.copy(shared_data / "lfw_identities" / "images" / "Gordon_Brown" / "Gordon_Brown_0001.jpg", person)
    cv2.imwrite(str(person / "banner.png"), np.full((8, 6000, 3), 200, np.uint8))
    cv2.imwrite(str(person / "tiny.png"), np.full((1, 1, 3), 128, np.uint8))
    out = enroll.main(enroll.get_args_parser().parse_args(
        [str(tmp_path / "g"), str(person), "--weights", str(weights), "--device", "cpu", "--no-progress",
         "--detector", str(shared_models / "det_500m.onnx")]))
    assert out["added"] == 1
    failed = out["failed"]
    assert failed[str(person / "banner.png")].startswith(f"{person / 'banner.png'}: no face detected")
    assert failed[str(person / "tiny.png")].startswith(f"{person / 'tiny.png'}: image too small for detection")


def test_jpeg_aliases_are_enrolled_and_other_files_counted(tmp_path, people, caplog):
    """.jfif / .jpe files (JPEGs as browsers save them) were left out of every folder walk without a word."""
    for ext in (".jfif", ".jpe"):
        shutil.copy(people / "p0" / "0.png", people / "p0" / f"web{ext}")  # content, not name, decides the decoder
    (people / "p0" / "notes.txt").write_text("not a photo")
    (people / "readme.md").write_text("not a person")
    with caplog.at_level(logging.INFO, logger="lightface.gallery"):
        pairs = collect_photos(people)
    assert {p.name for i, p in pairs if i == "p0"} == {"0.png", "1.png", "2.png", "web.jfif", "web.jpe"}
    assert "left out 2 file(s) whose extension is not an image's" in caplog.text


def test_cli_search_refuses_a_sheet_it_cannot_write_before_any_model_loads(tmp_path, capsys):
    """--sheet out.xyz (or a folder) failed only after every query was searched, and lost --json with it."""
    from pipelines import search
    from pipelines._cli import run_cli

    (tmp_path / "adir").mkdir()
    for sheet, says in ((tmp_path / "sheet.xyz", "'.xyz' is not an image format OpenCV writes"),
                        (tmp_path / "adir", "is a folder; give an image file name")):
        with pytest.raises(SystemExit) as stop:  # argparse: before the gallery or a model is opened
            run_cli(search.main, search.get_args_parser, [str(tmp_path / "no_gallery"), "q.jpg", "--sheet", str(sheet)])
        assert stop.value.code == 2
        err = capsys.readouterr().err
        assert "argument --sheet" in err and says in err, err


def test_cli_search_keeps_its_json_when_the_sheet_fails_and_writes_reports_atomically(tmp_path, people, weights,
                                                                                       monkeypatch,
                                                                                       disk_full_at_sync):
    """--json was written after the sheet (a failing sheet lost every match) and, like enroll's, in place (a full
    disk or a kill left a truncated report instead of the earlier one)."""
    from pipelines import enroll, search

    common = ["--weights", str(weights), "--aligned", "--device", "cpu"]
    enroll_argv = [str(tmp_path / "g"), str(people), *common, "--no-progress", "--json", str(tmp_path / "e.json")]
    enroll.main(enroll.get_args_parser().parse_args(enroll_argv))
    search_argv = [str(tmp_path / "g"), str(people / "p3" / "1.png"), *common, "--top", "1",
                   "--sheet", str(tmp_path / "sheet.png"), "--json", str(tmp_path / "hits.json")]

    def full_disk(path, img):
        raise OSError(f"could not write {path}")

    monkeypatch.setattr("lightface.data.io.write_image", full_disk)
    with pytest.raises(OSError, match="sheet.png"):
        search.main(search.get_args_parser().parse_args(search_argv))
    hits = json.loads((tmp_path / "hits.json").read_text())
    assert hits["faces"][0]["matches"][0]["identity"] == "p3"
    monkeypatch.undo()
    before = {name: (tmp_path / name).read_text() for name in ("e.json", "hits.json")}
    for name, module, argv in (("e.json", enroll, enroll_argv), ("hits.json", search, search_argv)):
        disk_full_at_sync(name)
        with pytest.raises(OSError, match="No space left"):
            module.main(module.get_args_parser().parse_args(argv))
        assert (tmp_path / name).read_text() == before[name]  # the earlier report, whole
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_a_search_with_another_align_method_than_the_enrolment_is_reported(tmp_path, shared_data, shared_models,
                                                                          weights, caplog):
    """A gallery enrolled from whole photos cropped by one method (align_method "eyes", as an official Light CNN
    release crops) and searched with the other ("similarity") compared embeddings of differently cropped faces
    without a word, although the gallery records the method (FaceEmbedder.settings) and extract_embeddings refuses
    such a mix in a .feat folder. It now warns, as for another detector, and says how to crop as the enrolment did."""
    src = shared_data / "lfw_identities" / "images"
    name = sorted(p.name for p in src.iterdir())[0]
    photos = sorted((src / name).glob("*.jpg"))
    det = str(shared_models / "det_500m.onnx")
    eyes = FaceEmbedder(weights, device="cpu", detector=det, align_method="eyes")
    FaceGallery(tmp_path / "g", eyes).enroll({name: [photos[0]]})
    assert FaceGallery(tmp_path / "g").settings["detector"]["align_method"] == "eyes"
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lightface.gallery"):
        assert FaceGallery(tmp_path / "g", eyes).search_faces(str(photos[1]))
        assert "align_method" not in caplog.text
        least = FaceEmbedder(weights, device="cpu", detector=det)  # a lightface checkpoint: "similarity"
        assert FaceGallery(tmp_path / "g", least).search_faces(str(photos[1]))
    assert ("the gallery's faces were cropped from their landmarks with align_method 'eyes', this embedder's "
            "detector with 'similarity'") in caplog.text
    assert "FaceEmbedder(align_method='eyes') (--align-method eyes)" in caplog.text
