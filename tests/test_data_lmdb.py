"""LMDB format, writer, builder (folders, list files, RecordIO, landmarks, detection, CFP poses)
and the multi-worker reader, on real faces from ../shared/data."""
import json
import re
import shutil
import struct
import sys
from pathlib import Path

import cv2
import lmdb
import numpy as np
import pytest
import torch

from kill_build_helper import kill_build_after  # tests/kill_build_helper.py
from lightface.data import LMDBDataset, build_lmdb, verify_lmdb, write_lmdb
from lightface.data.build import REPORT_NAME, partial_path
from lightface.data.lmdb_format import (
    FORMAT_VERSION,
    META_KEY,
    PROGRESS_KEY,
    LMDBFormatError,
    LMDBWriter,
    pack_record,
    read_metadata,
    release_readonly,
    sample_key,
    unpack_record,
)
from lightface.data.recordio import (
    RECORDIO_MAGIC,
    IRHeader,
    RecordIOReader,
    RecordIOWriter,
    pack_irecord,
    unpack_irecord,
)
from lightface.data.transforms import eval_transform, train_transform
from pipelines.build_lmdb import get_args_parser, main

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*argv):
    return main(get_args_parser().parse_args([str(a) for a in argv] + ["--no-progress"]))


def link_tree(dst: Path, src: Path, ids, per_id=None, pattern="*"):
    """A small identity tree of symlinks to real images (never copies shared data)."""
    for i in ids:
        (dst / i).mkdir(parents=True, exist_ok=True)
        files = sorted((src / i).glob(pattern))[:per_id]
        for f in files:
            (dst / i / f.name).symlink_to(f)
    return dst


def read_all(path):
    """Every key/value of an environment (for record-for-record comparisons)."""
    env = lmdb.open(str(path), readonly=True, lock=False, subdir=True)
    try:
        with env.begin() as txn:
            return {bytes(k): bytes(v) for k, v in txn.cursor()}
    finally:
        env.close()


def strip_build_time(meta):
    meta = json.loads(meta)
    meta["build"].pop("created")
    return meta


@pytest.fixture(scope="module")
def orl_small(shared_data, tmp_path_factory):
    return link_tree(tmp_path_factory.mktemp("orl"), shared_data / "orl_faces", ["s1", "s2", "s10", "s3"], per_id=4)


# ----------------------------------------------------------------------- format / writer
def test_record_roundtrip():
    rec = pack_record(b"\x89PNGdata", 7, [4, 5], np.arange(10).reshape(5, 2), {"pose": "profile"})
    header, payload = unpack_record(rec)
    assert payload == b"\x89PNGdata"
    assert header == {"label": 7, "shape": [4, 5], "landmarks": np.arange(10.0).reshape(5, 2).tolist(),
                      "attributes": {"pose": "profile"}}


def test_write_lmdb_and_reader(tmp_path):
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 256, (20, 24), dtype=np.uint8) for _ in range(7)]
    lms = [rng.random((5, 2)).astype(np.float32) * 20 for _ in range(7)]
    samples = [{"image": im, "label": i % 3, "landmarks": lm, "attributes": {"pose": "frontal" if i % 2 else "profile"}}
               for i, (im, lm) in enumerate(zip(imgs, lms))]
    out = tmp_path / "mem.lmdb"
    summary = write_lmdb(out, samples, ["a", "b", "c"], encoding="png", batch_size=3)
    assert summary["written"] == 7 and not partial_path(out).exists()
    ds = LMDBDataset(out)
    assert len(ds) == 7 and ds.classes == ["a", "b", "c"] and ds.num_classes == 3
    np.testing.assert_array_equal(ds.labels, np.arange(7) % 3)
    assert ds.labels.dtype == np.int64
    for i in range(7):
        s = ds[i]
        np.testing.assert_array_equal(s["image"], imgs[i])  # png is lossless
        np.testing.assert_allclose(s["landmarks"], lms[i])
        assert s["label"] == i % 3 and s["attributes"] == {"pose": "frontal" if i % 2 else "profile"}
    assert ds[-1]["label"] == 0
    with pytest.raises(IndexError):
        ds[7]
    meta = ds.metadata
    assert meta["version"] == FORMAT_VERSION and meta["image"]["shape"] == [20, 24] and meta["landmarks"]
    # copy records without re-encoding, relabelled
    with pytest.raises(ValueError, match="encoded as png"):
        write_lmdb(tmp_path / "raw_copy.lmdb", [ds.record(0)], ["a", "b", "c"], encoding="raw")
    copy = write_lmdb(tmp_path / "copy.lmdb", (dict(ds.record(i), label=0) for i in range(7)), ["all"],
                      encoding="png")
    assert copy["written"] == 7
    ds2 = LMDBDataset(tmp_path / "copy.lmdb")
    assert (ds2.labels == 0).all() and all((ds2[i]["image"] == imgs[i]).all() for i in range(7))
    assert verify_lmdb(out, progress=False)["ok"]
    with pytest.raises(FileExistsError, match="overwrite"):
        write_lmdb(out, samples, ["a", "b", "c"])
    with pytest.raises(ValueError, match="label 5 outside"):
        write_lmdb(tmp_path / "bad.lmdb", [{"image": imgs[0], "label": 5}], ["a"])


@pytest.mark.parametrize("encoding", ["png", "raw"])
def test_a_damaged_record_names_the_dataset_the_sample_and_the_check(tmp_path, encoding):
    """A truncated payload or header: the error says which dataset and sample, and to run build_lmdb --verify."""
    rng = np.random.default_rng(0)
    samples = [{"image": rng.integers(0, 256, (20, 24), dtype=np.uint8), "label": 0, "attributes": {"pose": "f"}}
               for _ in range(6)]
    out = tmp_path / "d.lmdb"
    write_lmdb(out, samples, ["a"], encoding=encoding)
    env = lmdb.open(str(out), map_size=1 << 24)
    with env.begin(write=True) as txn:
        raw = bytes(txn.get(sample_key(3)))
        (n,) = struct.unpack_from("<I", raw, 0)
        txn.put(sample_key(3), raw[: 4 + n + 5])  # truncated payload
        txn.put(sample_key(5), bytes(txn.get(sample_key(5)))[:10])  # truncated header
    env.close()
    release_readonly(out)
    ds = LMDBDataset(out)
    assert ds[2]["image"].shape == (20, 24)
    for index, read in ((3, lambda i: ds[i]), (5, lambda i: ds[i]), (5, ds.attributes), (5, ds.record),
                        (-1, lambda i: ds[i])):
        with pytest.raises(LMDBFormatError) as err:
            read(index)
        sample = index % len(ds)
        assert str(out) in str(err.value) and f"sample {sample}:" in str(err.value)
        assert "build_lmdb --verify" in str(err.value)


def test_writer_grows_the_map(tmp_path):
    w = LMDBWriter(tmp_path / "grow", map_size=1 << 16)
    start = w.map_size
    for b in range(8):
        w.put([(sample_key(b * 10 + i), bytes(4000)) for i in range(10)])
    assert w.map_size > start
    assert w.get(sample_key(79)) == bytes(4000) and len(w.keys_with_prefix(b"00000000")) == 80
    w.close()


def test_a_new_writer_closes_the_read_handles_of_deleted_datasets_first(tmp_path):
    # the writer's own lmdb.open meets py-lmdb's "already open" guard as a reader's does: a read handle of
    # a deleted dataset still claims its lock file's inode, which the new environment's files may reuse
    from lightface.data.lmdb_format import LMDBWriter, open_readonly

    gone = tmp_path / "gone.lmdb"
    write_lmdb(gone, [{"image": np.zeros((8, 8), np.uint8), "label": 0}], ["x"])
    old = open_readonly(gone)
    shutil.rmtree(gone)
    LMDBWriter(tmp_path / "new.lmdb").close()
    with pytest.raises(lmdb.Error):  # closed before the writer opened its environment
        old.begin()


def test_handles_of_deleted_or_rebuilt_datasets_are_closed_by_the_next_open(tmp_path):
    # a process-wide read handle outliving its dataset's files: py-lmdb refuses a new environment
    # whose files reuse the inode of a still-open one's lock file (seen when pytest deleted a tmp folder)
    import shutil

    from lightface.data.lmdb_format import open_readonly

    sample = [{"image": np.zeros((8, 8), np.uint8), "label": 0}]
    gone, rebuilt, other = tmp_path / "gone.lmdb", tmp_path / "rebuilt.lmdb", tmp_path / "other.lmdb"
    for path in (gone, rebuilt):
        write_lmdb(path, sample, ["x"])
    old_gone, old_rebuilt = open_readonly(gone), open_readonly(rebuilt)
    shutil.rmtree(gone)
    shutil.rmtree(rebuilt)
    write_lmdb(rebuilt, sample * 2, ["x"])
    write_lmdb(other, sample, ["x"])
    assert open_readonly(other).stat()["entries"] > 0
    for old in (old_gone, old_rebuilt):
        with pytest.raises(lmdb.Error):
            old.begin()
    assert len(LMDBDataset(rebuilt)) == 2  # the new files, through a new handle


def test_reader_refuses_unknown_version_and_unfinished(tmp_path):
    out = tmp_path / "v.lmdb"
    write_lmdb(out, [{"image": np.zeros((8, 8), np.uint8), "label": 0}], ["x"])
    release_readonly(out)
    env = lmdb.open(str(out), subdir=True)
    with env.begin(write=True) as txn:
        meta = json.loads(txn.get(META_KEY))
        meta["version"] = FORMAT_VERSION + 1
        txn.put(META_KEY, json.dumps(meta).encode())
    env.close()
    with pytest.raises(LMDBFormatError, match=f"version {FORMAT_VERSION + 1}.*upgrade lightface"):
        LMDBDataset(out)
    unfinished = tmp_path / "u.lmdb"
    env = lmdb.open(str(unfinished), subdir=True)
    with env.begin(write=True) as txn:
        txn.put(PROGRESS_KEY, b"{}")
    env.close()
    with pytest.raises(LMDBFormatError, match="unfinished build.*--resume"):
        LMDBDataset(unfinished)
    with pytest.raises(FileNotFoundError, match="missing data.mdb"):
        LMDBDataset(tmp_path / "nothing")


# ----------------------------------------------------------------------- building
def test_build_orl_labels_without_decoding(orl_small, tmp_path, monkeypatch):
    out = tmp_path / "orl.lmdb"
    s = build_lmdb(orl_small, out, progress=False, batch_size=5)
    assert s["written"] == 16 and s["skipped"] == 0 and s["num_classes"] == 4
    ds = LMDBDataset(out)
    assert ds.classes == ["s1", "s2", "s3", "s10"]  # natural order
    np.testing.assert_array_equal(ds.labels, np.repeat(np.arange(4), 4))
    meta = ds.metadata
    assert meta["image"] == {"shape": [144, 144], "color": "gray", "channel_order": "gray", "encoding": "raw",
                             "quality": None}
    assert meta["alignment"]["method"] == "none" and meta["landmarks"] is False
    # labels, classes and attributes never decode an image
    import lightface.data.lmdb_dataset as mod

    monkeypatch.setattr(mod, "decode_payload", lambda *a, **k: pytest.fail("decoded an image"))
    ds = LMDBDataset(out)
    assert ds.attributes(5) == {"source": "s2/2.pgm"} and ds.labels.sum() == 4 * (0 + 1 + 2 + 3)


def test_orl_images_match_source(orl_small, tmp_path):
    out = tmp_path / "orl_none.lmdb"
    build_lmdb(orl_small, out, resize="none", encoding="png", progress=False)
    ds = LMDBDataset(out)
    assert ds.metadata["image"]["shape"] == [112, 92]
    src = cv2.imread(str(orl_small / "s3" / "1.pgm"), cv2.IMREAD_GRAYSCALE)
    i = [ds.attributes(k)["source"] for k in range(len(ds))].index("s3/1.pgm")
    np.testing.assert_array_equal(ds[i]["image"], src)


def test_bad_files_are_skipped_and_reported(shared_data, tmp_path):
    src = link_tree(tmp_path / "src", shared_data / "lfw_identities" / "images", ["Ann_Veneman"], per_id=3)
    bad = src / "Bad_Person"
    bad.mkdir()
    jpg = (shared_data / "lfw_identities" / "images" / "Ann_Veneman" / "Ann_Veneman_0004.jpg").read_bytes()
    (bad / "truncated.jpg").write_bytes(jpg[: len(jpg) // 2])
    (bad / "empty.jpg").write_bytes(b"")
    (bad / "text.png").write_text("this is not an image\n")
    (bad / "notes.txt").write_text("ignored, not an image extension")
    out = tmp_path / "out.lmdb"
    assert run_cli(src, out, "--size", 64, "--batch-size", 2) == 0
    report = json.loads((out / REPORT_NAME).read_text())
    reasons = {Path(r["source"]).name: r["reason"] for r in report["skipped"]}
    assert set(reasons) == {"truncated.jpg", "empty.jpg", "text.png"}
    assert "truncated" in reasons["truncated.jpg"] and "empty" in reasons["empty.jpg"]
    assert "not a readable image" in reasons["text.png"]
    assert "b'this is '" in reasons["text.png"] and "BytesIO" not in reasons["text.png"]  # its first bytes, not PIL's buffer
    assert [r["source"] for r in report["ignored"]] == ["Bad_Person/notes.txt"]
    assert report["summary"]["written"] == 3 and report["summary"]["skipped"] == 3
    ds = LMDBDataset(out)
    assert len(ds) == 3 and ds.classes == ["Ann_Veneman", "Bad_Person"]
    # --strict turns skipped files into a failure; an existing dataset needs --overwrite
    assert run_cli(src, out, "--size", 64) == 1
    assert run_cli(src, out, "--size", 64, "--overwrite", "--strict") == 1
    assert len(LMDBDataset(out)) == 3
    # nothing writable -> exit 1, report still written
    only_bad = tmp_path / "only_bad"
    (only_bad / "x").mkdir(parents=True)
    (only_bad / "x" / "empty.png").write_bytes(b"")
    assert run_cli(only_bad, tmp_path / "none.lmdb") == 1
    assert json.loads((tmp_path / "none.lmdb" / REPORT_NAME).read_text())["summary"]["written"] == 0


def test_webp_encoding_is_smaller_than_jpeg_at_its_quality_and_decodes(orl_small, tmp_path):
    sizes = {}
    for enc in ("jpeg", "webp"):
        out = tmp_path / f"{enc}.lmdb"
        build_lmdb(orl_small, out, size=144, encoding=enc, quality=70, progress=False)
        ds = LMDBDataset(out)
        assert ds.metadata["image"]["encoding"] == enc and ds.metadata["image"]["quality"] == 70
        sizes[enc] = sum(len(ds.record(i)["encoded"]) for i in range(len(ds)))
        assert all(ds[i]["image"].shape == (144, 144) for i in range(len(ds)))
    build_lmdb(orl_small, tmp_path / "raw.lmdb", size=144, progress=False)
    raw, webp = LMDBDataset(tmp_path / "raw.lmdb"), LMDBDataset(tmp_path / "webp.lmdb")
    assert np.mean([np.abs(raw[i]["image"].astype(int) - webp[i]["image"]).mean() for i in range(len(raw))]) < 4
    assert sizes["webp"] < sizes["jpeg"]


def test_info_and_verify(orl_small, tmp_path, capsys):
    out = tmp_path / "iv.lmdb"
    build_lmdb(orl_small, out, size=32, encoding="jpeg", quality=80, progress=False)
    capsys.readouterr()
    assert run_cli("--info", out) == 0
    meta = json.loads(capsys.readouterr().out)
    assert meta["count"] == 16 and meta["image"]["encoding"] == "jpeg" and meta["image"]["quality"] == 80
    assert run_cli("--verify", out) == 0
    assert json.loads(capsys.readouterr().out)["checked"] == 16
    # corrupt one record's label -> verify fails
    release_readonly(out)
    env = lmdb.open(str(out), subdir=True)
    with env.begin(write=True) as txn:
        header, payload = unpack_record(txn.get(sample_key(3)))
        txn.put(sample_key(3), pack_record(payload, 99, header["shape"], None, header.get("attributes")))
    env.close()
    assert run_cli("--verify", out) == 1
    assert "label 99 outside" in capsys.readouterr().out
    assert run_cli("--info", tmp_path / "missing") == 1


def test_lfw_landmarks_alignment(shared_data, tmp_path):
    root = shared_data / "lfw_identities"
    src = link_tree(tmp_path / "lfw", root / "images", ["Ann_Veneman", "Gordon_Brown", "Hugo_Chavez"], per_id=4)
    (src / "Hugo_Chavez" / "unlisted.jpg").symlink_to(root / "images" / "Hugo_Chavez" / "Hugo_Chavez_0009.jpg")
    out = tmp_path / "lfw.lmdb"
    s = build_lmdb(src, out, landmarks=root / "landmarks_5pt.txt", color="rgb", progress=False)
    assert s["written"] == 12 and s["num_classes"] == 3 and s["skipped"] == 1
    assert "no landmarks" in json.loads((out / REPORT_NAME).read_text())["skipped"][0]["reason"]
    ds = LMDBDataset(out)
    assert ds.metadata["landmarks"] and ds.metadata["alignment"]["template"] == "lightcnn_train"
    lm = np.stack([ds[i]["landmarks"] for i in range(len(ds))])
    assert ds[0]["image"].shape == (144, 144, 3)
    eye, mouth = (lm[:, 0] + lm[:, 1]) / 2, (lm[:, 3] + lm[:, 4]) / 2
    assert np.abs(eye - (72, 48)).mean() < 2 and np.abs(mouth - (72, 96)).mean() < 2.5
    # the centred 128 crop of the stored 144 crop is the Light CNN test crop
    x = eval_transform()(image=ds[0]["image"])["image"]
    assert x.shape == (3, 128, 128) and x.dtype == torch.float32


def _landmark_line(name: str, points, sep: str = "\t") -> str:
    return sep.join([name] + [f"{v:.2f}" for v in np.asarray(points).reshape(-1)])


def test_landmarks_outside_the_image_skip_the_sample_with_the_reason(shared_data, tmp_path):
    """A landmarks file made for other images (here: points shifted 1000 px) stored all-black crops with exit 0;
    those samples are now skipped and reported, and --strict fails."""
    from lightface.data.sources import read_landmarks_file

    root = shared_data / "lfw_identities"
    src = link_tree(tmp_path / "lfw", root / "images", ["Ann_Veneman", "Gordon_Brown"], per_id=2)
    table = read_landmarks_file(root / "landmarks_5pt.txt")
    lines = [_landmark_line(rel, pts + (1000 if rel.startswith("Gordon") else 0)) for rel, pts in table.items()]
    (tmp_path / "5pt.txt").write_text("\n".join(lines) + "\n")
    out = tmp_path / "o.lmdb"
    assert run_cli(src, out, "--landmarks", tmp_path / "5pt.txt", "--strict") == 1
    report = json.loads((out / REPORT_NAME).read_text())
    assert report["summary"]["written"] == 2 and report["summary"]["skipped"] == 2
    assert {r["source"] for r in report["skipped"]} == {"Gordon_Brown/Gordon_Brown_0001.jpg",
                                                        "Gordon_Brown/Gordon_Brown_0002.jpg"}
    assert all(re.match(r"landmarks outside the \d+x\d+ image: 100% of the crop would be border", r["reason"])
               for r in report["skipped"])
    ds = LMDBDataset(out)
    assert all(ds[i]["image"].max() > 100 for i in range(len(ds)))  # real faces, not border


def test_tightly_framed_real_photos_are_kept_although_much_of_the_crop_lies_outside(shared_data, tmp_path):
    """The MAX_OUTSIDE bound keeps every real sample of the shared data: CFP profiles put the most of a crop outside
    the photo (027/profile/01.jpg: 79% of an ffhq crop, the widest framing)."""
    from lightface.data.align import crop_outside_fraction, estimate_transform
    from lightface.data.build import MAX_OUTSIDE
    from lightface.data.pose_pairs import read_cfp_fiducials

    cfp = shared_data / "cfp_train"
    img = cv2.imread(str(cfp / "Images/027/profile/01.jpg"))
    pts = read_cfp_fiducials(cfp / "Fiducials/027/profile/01.txt", "profile")
    outside = crop_outside_fraction(estimate_transform(pts, "ffhq", 128), img.shape, 128)
    assert 0.7 < outside < MAX_OUTSIDE
    s = build_lmdb(link_tree(tmp_path / "cfp", cfp / "Images", ["027"]), tmp_path / "o.lmdb", size=128,
                   template="ffhq", fiducials=cfp / "Fiducials", progress=False)
    assert s["written"] == 14 and s["skipped"] == 0


def test_landmarks_names_may_hold_spaces_and_commas(shared_data, tmp_path):
    """The name is everything before the last 10 numbers: such photos could not be aligned with a landmarks file."""
    from lightface.data.align import align_face
    from lightface.data.sources import read_landmarks_file

    root = shared_data / "lfw_identities"
    table = read_landmarks_file(root / "landmarks_5pt.txt")
    photos = {"John Smith/IMG 0001.jpg": "Ann_Veneman/Ann_Veneman_0001.jpg",
              "Doe, Jane/a,b.jpg": "Gordon_Brown/Gordon_Brown_0001.jpg"}
    for name, rel in photos.items():
        (tmp_path / "src" / name).parent.mkdir(parents=True)
        (tmp_path / "src" / name).symlink_to(root / "images" / rel)
    marks = tmp_path / "5pt.txt"
    marks.write_text(_landmark_line("John Smith/IMG 0001.jpg", table[photos["John Smith/IMG 0001.jpg"]]) + "\n"
                     + _landmark_line("Doe, Jane/a,b.jpg", table[photos["Doe, Jane/a,b.jpg"]], ", ") + "\n")
    assert run_cli(tmp_path / "src", tmp_path / "o.lmdb", "--landmarks", marks, "--color", "rgb", "--strict") == 0
    ds = LMDBDataset(tmp_path / "o.lmdb")
    for i in range(len(ds)):
        rel = photos[ds.attributes(i)["source"]]
        expected = align_face(cv2.imread(str(root / "images" / rel)), table[rel], "lightcnn_train", 144)[0]
        np.testing.assert_array_equal(ds[i]["image"], expected)
    marks.write_text("a.jpg 1 2 3 4 5 6 7 8 9 10 11\n")  # one number too many: said, not taken into the name
    with pytest.raises(ValueError, match=r"5pt\.txt:1: expected an image name and 10 numbers"):
        read_landmarks_file(marks)
    marks.write_text("a.jpg 1 2 3 4 5 6 7 8 9 10\n# again\na.jpg 1 2 3 4 5 6 7 8 9 11\n")
    with pytest.raises(ValueError, match=r"5pt\.txt:3: 'a.jpg' is listed again with other points \(first on line 1\)"):
        read_landmarks_file(marks)


def test_a_landmarks_name_matching_several_images_skips_them_as_ambiguous(shared_data, tmp_path):
    """``1.jpg`` matched both a/1.jpg and b/1.jpg and aligned two people with one person's points."""
    from lightface.data.sources import read_landmarks_file

    root = shared_data / "lfw_identities"
    src = tmp_path / "src"
    for folder, rel in (("a", "Ann_Veneman/Ann_Veneman_0001.jpg"), ("b", "Gray_Davis/Gray_Davis_0001.jpg"),
                        ("c", "Gordon_Brown/Gordon_Brown_0001.jpg")):
        (src / folder).mkdir(parents=True)
        (src / folder / "1.jpg").symlink_to(root / "images" / rel)
    table = read_landmarks_file(root / "landmarks_5pt.txt")
    (tmp_path / "5pt.txt").write_text(_landmark_line("1.jpg", table["Ann_Veneman/Ann_Veneman_0001.jpg"]) + "\n"
                                      + _landmark_line("c/1.jpg", table["Gordon_Brown/Gordon_Brown_0001.jpg"]) + "\n")
    s = build_lmdb(src, tmp_path / "o.lmdb", landmarks=tmp_path / "5pt.txt", progress=False)
    assert s["written"] == 1 and s["skipped"] == 2
    skipped = json.loads((tmp_path / "o.lmdb" / REPORT_NAME).read_text())["skipped"]
    assert [r["source"] for r in skipped] == ["a/1.jpg", "b/1.jpg"]
    assert all(r["reason"].startswith("ambiguous landmarks name '1.jpg': it matches 2 images (a/1.jpg, b/1.jpg)")
               for r in skipped)
    assert LMDBDataset(tmp_path / "o.lmdb").attributes(0)["source"] == "c/1.jpg"
    shutil.rmtree(src / "c")  # every image ambiguous: reported so, not as "no image matches a name"
    s = build_lmdb(src, tmp_path / "ab.lmdb", landmarks=tmp_path / "5pt.txt", progress=False)
    assert not s["ok"] and s["skipped"] == 2
    reasons = [r["reason"] for r in json.loads((tmp_path / "ab.lmdb" / REPORT_NAME).read_text())["skipped"]]
    assert all(r.startswith("ambiguous landmarks name '1.jpg'") for r in reasons)


def test_cfp_pose_tags(shared_data, tmp_path):
    src = link_tree(tmp_path / "cfp", shared_data / "cfp" / "Images", ["451", "452"])  # links frontal/, profile/
    out = tmp_path / "cfp.lmdb"
    s = build_lmdb(src, out, size=48, progress=False)
    assert s["written"] == 28 and s["num_classes"] == 2
    ds = LMDBDataset(out)
    assert ds.classes == ["451", "452"] and ds.metadata["attributes"] == ["pose", "source"]
    poses = [ds.attributes(i)["pose"] for i in range(len(ds))]
    assert poses.count("frontal") == 20 and poses.count("profile") == 8
    assert ds[27]["attributes"]["pose"] == "profile"


def test_attributes_without_decoding_have_every_key_like_the_samples(shared_data, tmp_path):
    """A plain identity beside a CFP-style one: ``ds.attributes(i)`` lacked ``pose`` (a KeyError) where ``ds[i]``
    gives ``""``."""
    src = tmp_path / "src"
    for rel, photo in (("451/frontal/01.jpg", shared_data / "cfp/Images/451/frontal/01.jpg"),
                       ("Ann_Veneman/Ann_Veneman_0001.jpg",
                        shared_data / "lfw_identities/images/Ann_Veneman/Ann_Veneman_0001.jpg")):
        (src / rel).parent.mkdir(parents=True)
        (src / rel).symlink_to(photo)
    build_lmdb(src, tmp_path / "o.lmdb", size=32, progress=False)
    ds = LMDBDataset(tmp_path / "o.lmdb")
    assert ds.classes == ["451", "Ann_Veneman"]
    for i in range(len(ds)):
        assert ds.attributes(i) == ds[i]["attributes"]
    assert ds.attributes(1) == {"pose": "", "source": "Ann_Veneman/Ann_Veneman_0001.jpg"}


def test_antialias_build_smooths_shrunk_faces_and_is_recorded(shared_data, tmp_path):
    """--antialias: CFP frontal faces shrunk into a 64 px crop (scale about 0.3) come out
    smoother than from the plain warp (less high-frequency energy), at the same alignment; the
    option is recorded in the dataset's build options, and a default build records none (so
    datasets built before the option existed still resume)."""
    src = link_tree(tmp_path / "cfp", shared_data / "cfp" / "Images", ["451"])
    fid = shared_data / "cfp" / "Fiducials"
    plain = build_lmdb(src, tmp_path / "plain.lmdb", size=64, fiducials=fid, color="rgb", progress=False)
    smooth = build_lmdb(src, tmp_path / "aa.lmdb", size=64, fiducials=fid, color="rgb", antialias=True, progress=False)
    assert plain["written"] == smooth["written"] == 14
    a, b = LMDBDataset(tmp_path / "plain.lmdb"), LMDBDataset(tmp_path / "aa.lmdb")

    def detail(ds, i):  # mean absolute Laplacian of the frontal face's centre
        img = np.asarray(ds[i]["image"], np.float32).squeeze()
        return float(np.abs(cv2.Laplacian(img[16:48, 16:48], cv2.CV_32F)).mean())

    frontal = [i for i in range(len(a)) if a.attributes(i)["pose"] == "frontal"]
    assert sum(detail(b, i) < detail(a, i) for i in frontal) >= 0.8 * len(frontal)
    assert b.metadata["build"]["options"]["antialias"] is True
    assert "antialias" not in a.metadata["build"]["options"]


def test_list_file_source(orl_small, tmp_path):
    lst = tmp_path / "train.txt"
    lst.write_text(f"# Light CNN list\ns1/1.pgm 0\ns2/1.pgm 3\n{orl_small}/s3/2.pgm 1\nmissing/x.pgm 2\n")
    out = tmp_path / "list.lmdb"
    s = build_lmdb(lst, out, list_root=orl_small, size=32, progress=False)
    assert s["written"] == 3 and s["skipped"] == 1 and s["num_classes"] == 4
    ds = LMDBDataset(out)
    np.testing.assert_array_equal(ds.labels, [0, 3, 1])
    assert ds.classes == ["0", "1", "2", "3"]
    report = json.loads((out / REPORT_NAME).read_text())
    assert report["skipped"][0]["source"] == "missing/x.pgm" and "cannot read" in report["skipped"][0]["reason"]


def test_image_given_as_list_file_says_what_to_give(orl_small, tmp_path):
    image = orl_small / "s1" / "1.pgm"
    with pytest.raises(ValueError, match=r"1\.pgm is an image file, not a text list file; give a list file of 'path "
                                         r"label' lines, a folder of identity folders"):
        build_lmdb(image, tmp_path / "out.lmdb", size=32, progress=False)
    assert not (tmp_path / "out.lmdb").exists()



def test_lmdb_dataset_given_as_source_says_it_is_a_dataset(orl_small, tmp_path, caplog):
    built = tmp_path / "built.lmdb"
    build_lmdb(orl_small, built, size=32, progress=False)
    assert run_cli(built, tmp_path / "again.lmdb") == 1
    assert "built.lmdb is an LMDB dataset, not a source of images" in caplog.text
    assert f"pipelines.build_lmdb --info {built}" in caplog.text
    assert not (tmp_path / "again.lmdb").exists()


def test_nothing_written_counts_the_ignored_files(tmp_path, caplog):
    (tmp_path / "src" / "a").mkdir(parents=True)
    (tmp_path / "src" / "a" / "notes.txt").write_text("not an image")
    assert run_cli(tmp_path / "src", tmp_path / "out.lmdb") == 1
    assert "0 items skipped, 1 ignored (see" in caplog.text
    report = json.loads((tmp_path / "out.lmdb" / REPORT_NAME).read_text())
    assert report["ignored"] == [{"source": "a/notes.txt", "reason": "not an image extension (.txt)"}]

def test_shuffle_is_seeded(orl_small, tmp_path):
    a = build_lmdb(orl_small, tmp_path / "a", size=16, shuffle=True, seed=3, progress=False)
    b = build_lmdb(orl_small, tmp_path / "b", size=16, shuffle=True, seed=3, progress=False)
    c = build_lmdb(orl_small, tmp_path / "c", size=16, shuffle=True, seed=4, progress=False)
    assert a["written"] == b["written"] == c["written"] == 16
    la, lb, lc = (LMDBDataset(tmp_path / n).labels for n in "abc")
    np.testing.assert_array_equal(la, lb)
    assert not np.array_equal(la, lc) and not np.array_equal(la, np.sort(la))
    np.testing.assert_array_equal(np.sort(la), np.repeat(np.arange(4), 4))


def test_detect_source(shared_data, shared_models, tmp_path):
    src = tmp_path / "det"
    (src / "crops").mkdir(parents=True)
    for f in sorted((shared_data / "real_lq_faces" / "gfpgan_cropped_faces").glob("*.png"))[:2]:
        (src / "crops" / f.name).symlink_to(f)
    cv2.imwrite(str(src / "crops" / "blank.png"), np.full((200, 200, 3), 128, np.uint8))
    out = tmp_path / "det.lmdb"
    s = build_lmdb(src, out, detect=str(shared_models / "det_500m.onnx"), size=128, template="lightcnn",
                   progress=False)
    assert s["written"] == 2 and s["skipped"] == 1
    report = json.loads((out / REPORT_NAME).read_text())
    assert report["skipped"] == [{"source": "crops/blank.png", "reason": "no face detected"}]
    ds = LMDBDataset(out)
    lm = ds[0]["landmarks"]
    assert np.abs((lm[0] + lm[1]) / 2 - (64, 40)).max() < 4
    assert ds.metadata["alignment"]["method"] == "detect"


# ----------------------------------------------------------------------- RecordIO
def test_recordio_framing_matches_mxnet_layout(tmp_path):
    """Hand-framed bytes (magic, lrec with cflag in the top 3 bits, 4-byte padding) read back."""
    magic = struct.pack("<I", RECORDIO_MAGIC)
    whole = pack_irecord(IRHeader(0, 3.0, 7, 0), b"abcde")
    part1, part2 = b"12345678", b"xyz"  # payload part1 + MAGIC + part2, split at the magic word
    raw = (magic + struct.pack("<I", len(whole)) + whole + b"\0" * (-len(whole) % 4)
           + magic + struct.pack("<I", (1 << 29) | len(part1)) + part1
           + magic + struct.pack("<I", (3 << 29) | len(part2)) + part2 + b"\0")
    rec = tmp_path / "hand.rec"
    rec.write_bytes(raw)
    reader = RecordIOReader(rec)
    got = list(reader.scan())
    assert [o for o, _ in got] == [0, 8 + 24 + 8]
    header, img = unpack_irecord(got[0][1])
    assert header == IRHeader(0, 3.0, 7, 0) and img == b"abcde"
    assert got[1][1] == part1 + magic + part2
    # our writer produces exactly these bytes
    with RecordIOWriter(tmp_path / "ours.rec") as w:
        w.write(whole)
        w.write(part1 + magic + part2)
    assert (tmp_path / "ours.rec").read_bytes() == raw
    vec = pack_irecord(IRHeader(2, np.array([5.0, 9.0], np.float32)), b"img")
    h, body = unpack_irecord(vec)
    assert h.flag == 2 and h.class_label == 5.0 and body == b"img"


def test_recordio_source(shared_data, tmp_path):
    """An InsightFace-style train.rec/.idx: header record 0, then JPEG records with labels."""
    files = []
    for lab, name in enumerate(["Ann_Veneman", "Gordon_Brown"]):
        files += [(f, lab) for f in sorted((shared_data / "lfw_identities" / "images" / name).glob("*.jpg"))[:3]]
    d = tmp_path / "ms1m"
    d.mkdir()
    with RecordIOWriter(d / "train.rec", d / "train.idx") as w:
        w.write(pack_irecord(IRHeader(2, np.array([len(files) + 1, len(files) + 3], np.float32)), b""), idx=0)
        for i, (f, lab) in enumerate(files, 1):
            img = cv2.resize(cv2.imread(str(f)), (112, 112))
            payload = cv2.imencode(".jpg", img)[1].tobytes()
            w.write(pack_irecord(IRHeader(0, float(lab), i, 0), payload), idx=i)
        w.write(pack_irecord(IRHeader(2, np.array([1, 4], np.float32)), b""), idx=len(files) + 1)  # identity record
    out = tmp_path / "rec.lmdb"
    s = build_lmdb(d / "train.rec", out, size=144, progress=False)
    assert s["source_kind"] == "recordio" and s["written"] == 6 and s["num_classes"] == 2
    ds = LMDBDataset(out)
    np.testing.assert_array_equal(ds.labels, [0, 0, 0, 1, 1, 1])
    assert ds.attributes(4)["source"] == "train.rec#5"
    assert ds.metadata["alignment"]["source_template"] == "arcface"
    lm = ds[0]["landmarks"]  # arcface template points re-aligned to the Light CNN training template
    np.testing.assert_allclose((lm[0] + lm[1]) / 2, (72, 48), atol=1.5)
    assert build_lmdb(d, tmp_path / "rec2.lmdb", size=32, progress=False)["written"] == 6


@pytest.mark.parametrize("aligned", [True, False])
def test_exported_recordio_reads_back_with_the_plain_build_command(shared_data, tmp_path, aligned):
    """lmdb_to_recordio records its crops' template beside the .rec, so ``build_lmdb X.rec OUT``
    with no --source-template reads them back as they are (it used to re-align them as ArcFace
    crops: 52/255 off per pixel); a lossless export comes back pixel for pixel."""
    from lightface.data.recordio import sidecar_path
    from lightface.data.to_recordio import lmdb_to_recordio

    root = shared_data / "lfw_identities"
    src = link_tree(tmp_path / "lfw", root / "images", ["Ann_Veneman", "Gordon_Brown"], per_id=2)
    lmdb_path = tmp_path / "a.lmdb"
    build_lmdb(src, lmdb_path, encoding="png", landmarks=root / "landmarks_5pt.txt" if aligned else None,
               progress=False)
    rec = Path(lmdb_to_recordio(lmdb_path, tmp_path / "x.rec", encoding="png")["rec"])
    template = "lightcnn_train" if aligned else None
    assert json.loads(sidecar_path(rec).read_text())["template"] == template
    assert run_cli(rec, tmp_path / "back.lmdb") == 0
    a, b = LMDBDataset(lmdb_path), LMDBDataset(tmp_path / "back.lmdb")
    assert b.metadata["alignment"]["source_template"] == template and len(a) == len(b) == 4
    for i in range(len(a)):
        np.testing.assert_array_equal(a[i]["image"], b[i]["image"])
    sidecar_path(rec).unlink()  # a pair from elsewhere: ArcFace crops, as before
    assert run_cli(rec, tmp_path / "arc.lmdb") == 0
    assert LMDBDataset(tmp_path / "arc.lmdb").metadata["alignment"]["source_template"] == "arcface"


def test_exported_recordio_keeps_the_class_names_and_classes_without_samples(shared_data, tmp_path):
    """The LMDB -> RecordIO -> LMDB trip kept pixels and labels but numbered the classes and dropped the last ones
    left without samples, which changed num_classes (a classifier head's size)."""
    from lightface.data.recordio import sidecar_path
    from lightface.data.sources import scan_recordio
    from lightface.data.to_recordio import lmdb_to_recordio

    src = link_tree(tmp_path / "src", shared_data / "lfw_identities" / "images", ["Ann_Veneman", "Gray_Davis"],
                    per_id=2)
    (src / "Zoe_Bad").mkdir()
    (src / "Zoe_Bad" / "broken.jpg").write_bytes(b"")  # the last class keeps no sample
    build_lmdb(src, tmp_path / "a.lmdb", size=64, progress=False)
    rec = Path(lmdb_to_recordio(tmp_path / "a.lmdb", tmp_path / "x.rec", encoding="png")["rec"])
    assert run_cli(rec, tmp_path / "b.lmdb") == 0
    a, b = LMDBDataset(tmp_path / "a.lmdb"), LMDBDataset(tmp_path / "b.lmdb")
    assert b.classes == a.classes == ["Ann_Veneman", "Gray_Davis", "Zoe_Bad"] and b.num_classes == 3
    np.testing.assert_array_equal(a.labels, b.labels)
    sidecar_path(rec).write_text('{"template": "lightcnn_train", "classes": ["Ann_Veneman"]}')
    with pytest.raises(ValueError, match=r"x\.lightface\.json: 'classes' must list a name for each of the 2 labels"):
        scan_recordio(rec)


def test_a_recordio_sidecar_naming_an_unknown_template_is_refused(tmp_path):
    from lightface.data.sources import scan_recordio
    from lightface.data.recordio import sidecar_path

    with RecordIOWriter(tmp_path / "x.rec", tmp_path / "x.idx") as w:
        w.write(pack_irecord(IRHeader(0, 0.0, 1, 0), b"img"), idx=1)
    sidecar_path(tmp_path / "x.rec").write_text('{"template": "mtcnn"}')
    with pytest.raises(ValueError, match=r"x\.lightface\.json: unknown template 'mtcnn'.*--source-template"):
        scan_recordio(tmp_path / "x.rec")
    sidecar_path(tmp_path / "x.rec").write_text("[1]")
    with pytest.raises(ValueError, match="expected a JSON object, got list"):
        scan_recordio(tmp_path / "x.rec")


# ----------------------------------------------------------------------- reader in workers
@pytest.mark.parametrize("ctx", ["fork", pytest.param("spawn", marks=pytest.mark.slow)])
def test_dataloader_workers(orl_small, tmp_path, ctx):
    out = tmp_path / f"dl_{ctx}.lmdb"
    build_lmdb(orl_small, out, progress=False)
    ds = LMDBDataset(out, transform=train_transform(blur=0.5, noise=0.5, jpeg=0.5, downscale=0.5))
    ds[0]  # the parent holds an open environment before the workers start
    dl = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2, shuffle=True,
                                     multiprocessing_context=ctx, persistent_workers=False)
    labels = []
    for batch in dl:
        x = batch["image"]
        assert x.shape[1:] == (1, 128, 128) and x.dtype == torch.float32
        assert 0 <= x.min() and x.max() <= 1
        labels.append(batch["label"])
    assert sorted(torch.cat(labels).tolist()) == sorted(ds.labels.tolist())


def test_transforms():
    img = np.tile(np.arange(144, dtype=np.uint8), (144, 1))
    x = eval_transform()(image=img)["image"]
    assert x.shape == (1, 128, 128)
    np.testing.assert_allclose(x[0, 0].numpy(), np.arange(8, 136) / 255.0, atol=1e-6)
    flipped = train_transform(flip=1.0, to_tensor=False)(image=img)["image"]
    assert flipped.shape == (128, 128) and (np.diff(flipped[0].astype(int)) == -1).all()
    small = eval_transform()(image=np.full((100, 100), 255, np.uint8))["image"]
    assert small.shape == (1, 128, 128) and small[0, 0, 0] == 0 and small[0, 64, 64] == 1
    rgb = eval_transform(rgb=True)(image=np.dstack([np.zeros((144, 144), np.uint8)] * 2
                                                   + [np.full((144, 144), 255, np.uint8)]))["image"]
    assert rgb.shape == (3, 128, 128) and rgb[0].min() == 1 and rgb[2].max() == 0  # BGR red -> RGB channel 0
    with pytest.raises(ValueError, match="probability"):
        train_transform(blur=2)


def test_landmarks_are_left_out_when_the_transform_moves_pixels(tmp_path):
    """A crop / flip transform: the stored landmarks no longer describe the returned image, so the sample has none;
    an image-only transform keeps them, and record() still gives the stored points."""
    import albumentations as A

    lm = np.array([[52, 48], [92, 48], [72, 70], [56, 92], [88, 92]], np.float32)
    out = tmp_path / "lm.lmdb"
    write_lmdb(out, [{"image": np.full((144, 144, 3), 90, np.uint8), "label": 0, "landmarks": lm}], ["a"])
    for moving in (train_transform(flip=1.0, to_tensor=False), eval_transform(), lambda img: img[8:136, 8:136]):
        sample = LMDBDataset(out, transform=moving)[0]
        assert "landmarks" not in sample and sample["label"] == 0
    kept = LMDBDataset(out, transform=A.Compose([A.GaussianBlur(p=1.0), A.ToFloat(max_value=255.0)]))[0]
    np.testing.assert_array_equal(kept["landmarks"], lm)
    np.testing.assert_array_equal(LMDBDataset(out, transform=eval_transform()).record(0)["landmarks"], lm)


def test_side_light_darkens_one_side_of_the_face_and_keeps_the_other():
    """SideLight (--augment hard): one half of a flat face falls to a fraction of its brightness, the other stays
    lit; both sides occur, gray and colour images keep their shape, and a seed repeats the light."""
    from lightface.data.transforms import ReseedingCompose, SideLight

    flat = np.full((128, 128, 3), 160, np.uint8)
    ratios = []
    for seed in range(24):
        out = ReseedingCompose([SideLight()], seed=seed)(image=flat)["image"]
        assert out.shape == flat.shape and out.dtype == np.uint8
        cheeks = out[40:90].astype(float)  # rows through the eyes and nose
        left, right = cheeks[:, 20:50].mean(), cheeks[:, 78:108].mean()
        dark, lit = min(left, right), max(left, right)
        assert dark < 0.6 * lit and lit > 0.6 * 160, (seed, left, right)
        ratios.append(left < right)
    assert 4 < sum(ratios) < 20  # light from both sides
    gray = ReseedingCompose([SideLight()], seed=1)(image=flat[..., 0])["image"]
    assert gray.shape == (128, 128)
    again = ReseedingCompose([SideLight()], seed=1)(image=flat[..., 0])["image"]
    np.testing.assert_array_equal(gray, again)


def test_hard_augmentation_lights_or_covers_each_face_it_picks():
    """strong_train_transform(hard=1.0) (HARD_SHARE of the faces under --augment hard): every face meets a
    hard side light or a large flat occluder after the strong pipeline, and hard=0 leaves the strong pipeline."""
    import albumentations as A

    from lightface.data.recognition import HARD_SHARE, lightcnn_transforms
    from lightface.data.transforms import ReseedingCompose, _hard_capture_steps, strong_train_transform

    assert 0 < HARD_SHARE < 1
    flat = np.full((128, 128, 3), 150, np.uint8)
    kinds = set()
    for seed in range(30):
        out = ReseedingCompose(_hard_capture_steps(128, 1.0), seed=seed)(image=flat)["image"]
        changed = (out != flat).any(axis=2)
        assert changed.mean() > 0.15, seed
        rows, cols = changed.all(axis=1).sum(), changed.all(axis=0).sum()
        kinds.add("band" if rows >= 0.18 * 128 and cols < 128 else "column" if cols >= 0.35 * 128 and rows < 128
                  else "light")
    assert kinds == {"band", "column", "light"}

    def names(pipe):
        return {type(t).__name__ for t in pipe.transforms} | {type(t).__name__ for t in pipe.transforms
                                                            if isinstance(t, A.OneOf) for t in t.transforms}

    assert "SideLight" not in names(strong_train_transform()) and "SideLight" in names(strong_train_transform(hard=0.4))
    train, _ = lightcnn_transforms(augment="hard")
    out = train(image=np.full((144, 144, 3), 150, np.uint8))["image"]
    assert out.shape == (1, 128, 128) and out.dtype == torch.float32
    with pytest.raises(ValueError, match="probability"):
        strong_train_transform(hard=1.5)


def test_face_occluders_sit_where_glasses_masks_and_hands_do():
    """FaceOccluder (--augment hard_face) on a 144 lightcnn_train crop (eyes at y=48, x=51 and 93; mouth at
    (72, 96)): glasses cover both eyes and not the mouth, a mask covers mouth and chin and not the eyes, a hand
    one side and not the other; all three occur, gray stays gray, and a seed repeats the drawing."""
    from lightface.data.transforms import FaceOccluder, ReseedingCompose

    flat = np.full((144, 144, 3), 150, np.uint8)
    occluder = FaceOccluder()

    def covered(out, x, y):  # the pixel differs from the face underneath
        return bool((out[y, x] != flat[y, x]).any())

    for seed in range(12):
        glasses = occluder.apply(flat, kind="glasses", seed=seed)
        assert covered(glasses, 51, 48) and covered(glasses, 93, 48) and not covered(glasses, 72, 96), seed
        mask = occluder.apply(flat, kind="mask", seed=seed)
        assert covered(mask, 72, 96) and covered(mask, 72, 125) and not covered(mask, 51, 48), seed
        hand = occluder.apply(flat, kind="hand", seed=seed)
        left, right = covered(hand, 20, 72), covered(hand, 124, 72)
        assert left != right and covered(hand, 72 - 40 if left else 72 + 40, 72), seed
    kinds = set()
    for seed in range(30):
        out = ReseedingCompose([FaceOccluder()], seed=seed)(image=flat)["image"]
        kinds.add("glasses" if covered(out, 51, 48) and not covered(out, 72, 96) else
                  "mask" if covered(out, 72, 96) and not covered(out, 51, 48) else "hand")
    assert kinds == {"glasses", "mask", "hand"}
    gray = ReseedingCompose([FaceOccluder()], seed=3)(image=flat[..., 0])["image"]
    assert gray.shape == (144, 144) and gray.dtype == np.uint8 and (gray != 150).any()
    np.testing.assert_array_equal(gray, ReseedingCompose([FaceOccluder()], seed=3)(image=flat[..., 0])["image"])


def test_hard_face_augmentation_draws_occluders_before_the_geometry():
    """--augment hard_face is hard plus FaceOccluder on WORN_SHARE of the faces, before the affine step (so the
    occluder moves with the face); strong and hard keep their pipelines (and random streams) unchanged."""
    from lightface.data.recognition import WORN_SHARE, lightcnn_transforms
    from lightface.data.transforms import strong_train_transform

    def names(pipe):
        return [type(t).__name__ for t in pipe.transforms]

    assert 0 < WORN_SHARE < 1
    assert "FaceOccluder" not in names(strong_train_transform(hard=0.4))
    steps = names(strong_train_transform(hard=0.4, worn=0.3))
    assert steps.index("FaceOccluder") < steps.index("Affine")
    train, _ = lightcnn_transforms(augment="hard_face")
    out = train(image=np.full((144, 144, 3), 150, np.uint8))["image"]
    assert out.shape == (1, 128, 128) and out.dtype == torch.float32
    with pytest.raises(ValueError, match="probability"):
        strong_train_transform(worn=-0.1)


class _OneImage(torch.utils.data.Dataset):
    """The same image eight times through a pipeline: what differs is the augmentation alone."""

    def __init__(self, transform):
        self.transform = transform
        self.image = (np.random.RandomState(0).rand(64, 64, 3) * 255).astype(np.uint8)

    def __len__(self):
        return 8

    def __getitem__(self, i):
        return torch.from_numpy(self.transform(image=self.image)["image"]).float().sum()


def test_seeded_pipeline_steps_draw_independently():
    """albumentations 2 seeds each step of a seeded Compose alike, so its steps fire together (two flips of p 0.5:
    both or neither); ReseedingCompose, the class of every lightface pipeline, shares one stream between them."""
    import albumentations as A
    from collections import Counter

    from lightface.data.transforms import ReseedingCompose

    img = np.arange(16, dtype=np.uint8).reshape(4, 4)
    pipe = ReseedingCompose([A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5)], seed=3)
    outs = [pipe(image=img)["image"] for _ in range(200)]
    seen = Counter((bool(o[0, 0] in (3, 15)), bool(o[0, 0] in (12, 15))) for o in outs)  # (h flip, v flip)
    assert len(seen) == 4 and min(seen.values()) > 25
    pipe.set_random_seed(5)
    first = [pipe(image=img)["image"].tobytes() for _ in range(6)]
    pipe.set_random_seed(5)
    assert [pipe(image=img)["image"].tobytes() for _ in range(6)] == first


def test_augmentations_differ_between_dataloader_workers_and_repeat_with_the_seed():
    from lightface.data.transforms import frontal_input_transform

    def run(workers):
        gen = torch.Generator().manual_seed(5)
        return [float(x) for x in torch.utils.data.DataLoader(_OneImage(frontal_input_transform()), batch_size=1,
                                                              num_workers=workers, generator=gen)]

    two = run(2)
    assert len(set(two)) >= 7  # not the same draws in each worker (before: 4 values, in equal pairs)
    assert run(2) == two


# ----------------------------------------------------------------------- kill and resume
@pytest.mark.slow
def test_sigkill_then_resume_equals_uninterrupted(shared_data, tmp_path):
    root = shared_data / "lfw_identities"
    out = tmp_path / "killed.lmdb"
    args = [sys.executable, "-m", "pipelines.build_lmdb", root / "images", out, "--landmarks",
            root / "landmarks_5pt.txt", "--batch-size", "8", "--shuffle", "--seed", "1", "--no-progress"]
    args = [str(a) for a in args]
    partial = partial_path(out)
    done = kill_build_after(args, partial, 24, timeout=120)
    assert 24 <= done < 180 and partial.exists() and not out.exists()
    with pytest.raises(LMDBFormatError, match="resume"):
        read_metadata(partial)
    assert run_cli(*args[3:5], "--landmarks", root / "landmarks_5pt.txt", "--batch-size", 8, "--shuffle",
                   "--seed", 1, "--resume") == 0
    assert json.loads((out / REPORT_NAME).read_text())["summary"]["resumed_from"] >= 24
    ref = tmp_path / "ref.lmdb"
    assert run_cli(root / "images", ref, "--landmarks", root / "landmarks_5pt.txt", "--batch-size", 64,
                   "--shuffle", "--seed", 1, "--workers", 2) == 0
    a, b = read_all(out), read_all(ref)
    assert a.keys() == b.keys() and len(a) == 180 + 2
    meta_a, meta_b = strip_build_time(a.pop(META_KEY)), strip_build_time(b.pop(META_KEY))
    assert meta_a == meta_b
    assert a == b  # every record and the label array, byte for byte
    # resuming with different options is refused
    out2 = tmp_path / "other.lmdb"
    build_lmdb(root / "images", out2, landmarks=root / "landmarks_5pt.txt", progress=False)
    assert run_cli(root / "images", out2, "--resume") == 1  # complete dataset, no --overwrite


def _kill_the_worker_of_one_photo(images, monkeypatch) -> None:
    """Make the --workers process that reads one photo below ``images`` (the 131st by name) die as the system's
    out-of-memory killer ends a process: ``os._exit(137)`` in the forked worker; ``monkeypatch.undo()`` heals it."""
    import os

    from lightface.data import build as build_module

    victim = sorted(p.relative_to(images).as_posix() for p in images.rglob("*.jpg"))[130]
    process_item = build_module.process_item

    def dies_on_the_victim(item, options):  # runs in the forked workers
        if item.name == victim:
            os._exit(137)
        return process_item(item, options)

    monkeypatch.setattr(build_module, "process_item", dies_on_the_victim)


@pytest.mark.slow
def test_a_dead_worker_stops_the_build_with_an_error_and_resume_completes_it(shared_data, tmp_path, monkeypatch):
    """A --workers process killed mid-build (the system's out-of-memory killer, a native crash) stops the
    build with one error naming --resume, instead of waiting for ever on the dead worker's task (what a
    multiprocessing.Pool does); the resumed build equals an uninterrupted one record for record."""
    from lightface.data.build import WorkerDiedError

    root = shared_data / "lfw_identities"
    opts = dict(landmarks=root / "landmarks_5pt.txt", batch_size=8, progress=False)
    _kill_the_worker_of_one_photo(root / "images", monkeypatch)
    out = tmp_path / "built.lmdb"
    with pytest.raises(WorkerDiedError, match="--resume"):
        build_lmdb(root / "images", out, workers=2, **opts)
    assert partial_path(out).exists() and not out.exists()
    monkeypatch.undo()
    assert build_lmdb(root / "images", out, workers=2, resume=True, **opts)["written"] == 180
    build_lmdb(root / "images", tmp_path / "ref.lmdb", **opts)
    a, b = read_all(out), read_all(tmp_path / "ref.lmdb")
    assert strip_build_time(a.pop(META_KEY)) == strip_build_time(b.pop(META_KEY))
    assert a == b


@pytest.mark.slow
def test_a_dead_worker_of_a_resuming_build_says_to_run_the_same_command_again(shared_data, tmp_path, monkeypatch):
    """The corpus builders (python -m pipelines.build_corpus, build_sr_corpus, build_pose_corpus) always resume
    (build_lmdb(resume=True)) and have no --resume flag: a dead --workers process told their user to "run the same
    command with --resume", which argparse refuses. A build that resumes already says to run it again, and the
    same call again completes it."""
    from lightface.data.build import WorkerDiedError
    from pipelines import build_corpus, build_pose_corpus, build_sr_corpus

    for cli in (build_corpus, build_pose_corpus, build_sr_corpus):  # the flag the message must not name
        assert not any("--resume" in a.option_strings for a in cli.get_args_parser()._actions)
    root = shared_data / "lfw_identities"
    opts = dict(landmarks=root / "landmarks_5pt.txt", batch_size=8, progress=False, workers=2, resume=True)
    _kill_the_worker_of_one_photo(root / "images", monkeypatch)
    out = tmp_path / "built.lmdb"
    with pytest.raises(WorkerDiedError, match="run the same command again to continue") as err:
        build_lmdb(root / "images", out, **opts)
    assert "--resume" not in str(err.value)
    monkeypatch.undo()
    assert build_lmdb(root / "images", out, **opts)["written"] == 180


def test_overwrite_of_an_unfinished_build_names_the_remedy_of_the_corpus_builders(shared_data, tmp_path, monkeypatch,
                                                                                  caplog):
    """python -m pipelines.build_corpus / build_sr_corpus / build_pose_corpus --overwrite (build_lmdb(resume=False,
    overwrite=True)) over an interrupted build warned "removing an unfinished build ... (pass --resume to continue it
    instead)", a flag those CLIs refuse: their way to continue is to drop --overwrite. The warning says so (and
    names build_lmdb's --resume); without --overwrite, build_lmdb's --resume is still named."""
    import logging

    from lightface.data import build as build_module

    root = shared_data / "lfw_identities"
    opts = dict(landmarks=root / "landmarks_5pt.txt", batch_size=8, progress=False)
    process_item, calls = build_module.process_item, []

    def stops_at_the_20th(item, options):  # a Ctrl-C in the middle of the build: its committed part is kept
        calls.append(item.name)
        if len(calls) == 20:
            raise KeyboardInterrupt
        return process_item(item, options)

    out = tmp_path / "built.lmdb"
    for overwrite in (True, False):
        monkeypatch.setattr(build_module, "process_item", stops_at_the_20th)
        calls.clear()
        with pytest.raises(KeyboardInterrupt):
            build_lmdb(root / "images", out, resume=True, **opts)
        assert partial_path(out).exists()
        monkeypatch.undo()
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="lightface.data.build"):
            build_lmdb(root / "images", out, resume=False, overwrite=overwrite, **opts)
        warning = next(r.getMessage() for r in caplog.records if "removing an unfinished build" in r.getMessage())
        if overwrite:  # what the corpus builders call with --overwrite
            assert "without --overwrite" in warning and "build_lmdb with --resume" in warning
            assert "pass --resume" not in warning
        else:
            assert "pass --resume" in warning
        shutil.rmtree(out)


def test_check_complete_jpeg_and_png():
    from lightface.data.build import check_complete
    from lightface.data.io import ImageReadError

    img = np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)
    jpg = cv2.imencode(".jpg", img)[1].tobytes()
    png = cv2.imencode(".png", img)[1].tobytes()
    check_complete(jpg, "a.jpg")
    check_complete(jpg + b"\0" * 5000 + b"trailing video", "motion.jpg")  # data after EOI is fine
    check_complete(png, "a.png")
    # an APP1 segment holding a thumbnail's end marker must not hide a truncated scan
    app1 = b"\xff\xe1" + (2 + 6).to_bytes(2, "big") + b"\xff\xd8\xff\xd9\0\0"
    with_thumb = jpg[:2] + app1 + jpg[2:]
    check_complete(with_thumb, "thumb.jpg")
    for bad, name in ((jpg[: len(jpg) // 2], "cut.jpg"), (with_thumb[:-40], "cut_thumb.jpg"),
                      (png[:-6], "cut.png")):
        with pytest.raises(ImageReadError, match="truncated"):
            check_complete(bad, name)


def test_bad_detector_options_are_refused_before_any_work(shared_data, shared_models, tmp_path, capsys):
    """--det-threshold 1.5 / --det-size 16 / 600 (SCRFD) used to fail on the first image (a traceback naming it,
    exit 1, OUT.partial left behind) or skip every image; now: a usage error, exit 2, nothing written."""
    src = link_tree(tmp_path / "src", shared_data / "lfw_identities" / "images", ["Gray_Davis"], per_id=2)
    out = tmp_path / "o.lmdb"
    det = shared_models / "det_500m.onnx"
    for flags, msg in ((["--det-threshold", "1.5"], "--det-threshold: must be a number in [0, 1], got 1.5"),
                       (["--det-size", "16"], "--det-size: must be an integer >= 32, got 16")):
        with pytest.raises(SystemExit) as exc:
            run_cli(src, out, "--detect", det, *flags)
        assert exc.value.code == 2 and msg in capsys.readouterr().err
    assert run_cli(src, out, "--detect", det, "--det-size", 600) == 2
    assert run_cli(src, out, "--detect", tmp_path / "missing.onnx") == 2
    with pytest.raises(ValueError, match="multiple of 32"):
        build_lmdb(src, out, detect=str(det), det_size=600, progress=False)
    assert not out.exists() and not partial_path(out).exists()
    s = build_lmdb(src, out, detect=str(shared_models / "face_detection_yunet_2023mar.onnx"), det_size=600,
                   progress=False)  # YuNet takes any size
    assert s["written"] == 2


def test_images_with_an_alpha_channel_come_out_with_the_documented_channels():
    """A BGRA face (a PNG with transparency, as OpenCV reads it unchanged) is composited onto black before the
    augmentation, as an image file is when read: gray pipelines give 1 channel, colour ones 3 in the order
    asked for (rgb=True: a blue pixel is blue), and the CLAHE of the frontalizer's inputs does not fail."""
    from lightface.data.recognition import lightcnn_transforms
    from lightface.data.transforms import frontal_input_transform

    bgra = np.zeros((144, 144, 4), np.uint8)
    bgra[..., 0] = 255  # pure blue
    bgra[..., 3] = 255  # opaque
    bgra[:, :72, 3] = 0  # left half transparent: black once composited
    for pipeline in lightcnn_transforms(augment="basic") + lightcnn_transforms(augment="hard"):
        assert pipeline(image=bgra)["image"].shape == (1, 128, 128)
    rgb = eval_transform(rgb=True)(image=bgra)["image"]
    assert rgb.shape == (3, 128, 128)
    assert rgb[:, 64, 120].tolist() == [0.0, 0.0, 1.0] and rgb[:, 64, 2].tolist() == [0.0, 0.0, 0.0]
    assert frontal_input_transform()(image=bgra[:128, :128])["image"].shape[-1] == 3


def test_align_method_eyes_builds_official_recipe_crops_and_is_recorded(shared_data, tmp_path):
    """build_lmdb --align-method eyes: the crops of an official Light CNN release's recipe (eyes level, eye midpoint
    (72, 48), mouth midpoint 48 px below it in the 144 training crop), exactly, on real LFW faces; recorded in the
    metadata. The default build is the least-squares fit as before, and records no method (so it still resumes,
    and merges with datasets built earlier)."""
    root = shared_data / "lfw_identities"
    src = link_tree(tmp_path / "lfw", root / "images", ["Gordon_Brown", "Hugo_Chavez"], per_id=3)
    assert run_cli(src, tmp_path / "eyes.lmdb", "--landmarks", root / "landmarks_5pt.txt", "--align-method", "eyes") == 0
    build_lmdb(src, tmp_path / "plain.lmdb", landmarks=root / "landmarks_5pt.txt", progress=False)
    eyes, plain = LMDBDataset(tmp_path / "eyes.lmdb"), LMDBDataset(tmp_path / "plain.lmdb")
    assert len(eyes) == len(plain) == 6
    lm = np.stack([eyes[i]["landmarks"] for i in range(len(eyes))]).astype(np.float64)
    np.testing.assert_allclose(lm[:, 0, 1], lm[:, 1, 1], atol=0.02)  # eyes level (landmarks stored as float32)
    np.testing.assert_allclose((lm[:, 0] + lm[:, 1]) / 2, np.tile([72.0, 48.0], (6, 1)), atol=0.02)
    np.testing.assert_allclose((lm[:, 3, 1] + lm[:, 4, 1]) / 2, 96.0, atol=0.02)
    assert eyes.metadata["alignment"]["align_method"] == "eyes"
    assert eyes.metadata["build"]["options"]["align_method"] == "eyes"
    assert "align_method" not in plain.metadata["alignment"] and "align_method" not in plain.metadata["build"]["options"]
    assert np.abs(np.asarray(eyes[0]["image"], np.float32) - np.asarray(plain[0]["image"], np.float32)).mean() > 1


def test_a_truncated_or_corrupt_data_mdb_is_an_error_naming_the_dataset(shared_data, tmp_path):
    """A data.mdb cut short (an interrupted copy, a full disk) is mapped as it is: reading a record past its end
    killed the process with SIGBUS, no message at all (build_lmdb --verify, train_lightcnn, relabel ...). A file
    of other bytes raised lmdb.InvalidError, which the CLIs showed as a traceback."""
    import subprocess

    src = link_tree(tmp_path / "orl", shared_data / "orl_faces", ["s1", "s2"], per_id=4)
    build_lmdb(src, tmp_path / "good.lmdb", progress=False)
    cut = Path(shutil.copytree(tmp_path / "good.lmdb", tmp_path / "cut.lmdb"))
    with open(cut / "data.mdb", "r+b") as f:
        f.truncate((cut / "data.mdb").stat().st_size // 2)
    proc = subprocess.run([sys.executable, "-m", "pipelines.build_lmdb", "--verify", str(cut), "--no-progress"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert f"{cut.resolve()}: data.mdb is truncated" in proc.stderr and "copy the dataset again" in proc.stderr
    with pytest.raises(LMDBFormatError, match="truncated"):
        LMDBDataset(cut)
    bad = tmp_path / "bad.lmdb"
    bad.mkdir()
    (bad / "data.mdb").write_bytes(np.random.default_rng(0).bytes(1 << 16))
    with pytest.raises(LMDBFormatError, match=r"bad.lmdb: data.mdb is not a readable LMDB file \(MDB_INVALID"):
        LMDBDataset(bad)
    assert len(LMDBDataset(tmp_path / "good.lmdb")) == 8
    with pytest.raises(FileNotFoundError, match="orl: no LMDB dataset here .*python -m pipelines.build_lmdb SRC OUT"):
        LMDBDataset(src)  # the image folder itself
    other = tmp_path / "basicsr.lmdb"  # another tool's LMDB: says what to build instead
    env = lmdb.open(str(other), map_size=1 << 20)
    with env.begin(write=True) as txn:
        txn.put(b"000001_s001", b"\x00" * 16)
    env.close()
    with pytest.raises(LMDBFormatError, match="without lightface metadata .*build one from the images with "
                                              "python -m pipelines.build_lmdb"):
        LMDBDataset(other)
