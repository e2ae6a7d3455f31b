"""pipelines.relabel over several sources: duplicate identities merged, outliers dropped, reports written.

Real case from ORL: source ``a`` holds s1-s4 (images 1-4) plus one photo of s9 labelled
``a/s1`` (a mislabelled photo); source ``b`` holds s4 again (images 5-8) under another
label, ``b/x``, and s5, s6. The embeddings are dlib's (the teacher), computed once on these
very crops and stored in ``tests/data/orl_two_sources_dlib.npy`` so the test runs without
the optional teacher; ``test_dlib_teacher_reproduces_the_fixture`` recomputes them when dlib
is installed.
"""
import csv
import json
from pathlib import Path

import numpy as np
import pytest

from lightface.data import LMDBDataset

from lightcnn_tiny import ARCH as TINY  # tests/lightcnn_tiny.py

FIXTURE = Path(__file__).parent / "data" / "orl_two_sources_dlib.npy"
A_ROWS = [(i, j, f"a/s{i}") for i in (1, 2, 3, 4) for j in range(1, 5)] + [(9, 1, "a/s1")]  # the s9 photo: row 16
B_ROWS = [(4, j, "b/x") for j in range(5, 9)] + [(i, j, f"b/s{i}") for i in (5, 6) for j in range(5, 9)]


def _lmdb(shared_data, out: Path, rows):
    from lightface.data.build import build_lmdb

    lst = out.with_suffix(".txt")
    lst.write_text("\n".join(f"{shared_data / 'orl_faces' / f's{i}' / f'{j}.pgm'} {label}" for i, j, label in rows) + "\n")
    build_lmdb(lst, out, size=144, progress=False)
    return out


def _with_teacher(path: Path, emb: np.ndarray):
    """Teacher files laid out as pipelines.teacher_embeddings writes them."""
    from lightface.distill.teacher import embeddings_path

    np.save(embeddings_path(path), emb.astype(np.float32))
    embeddings_path(path).with_suffix(".json").write_text(
        json.dumps({"teacher": "dlib", "count": len(emb), "done": len(emb), "dim": emb.shape[1]}))


@pytest.fixture(scope="module")
def sources(shared_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("merge")
    a, b = _lmdb(shared_data, root / "a.lmdb", A_ROWS), _lmdb(shared_data, root / "b.lmdb", B_ROWS)
    emb = np.load(FIXTURE)
    _with_teacher(a, emb[: len(A_ROWS)])
    _with_teacher(b, emb[len(A_ROWS):])
    return a, b


def _run(*argv):
    from pipelines._cli import parse_with_config
    from pipelines.relabel import get_args_parser, main

    return main(parse_with_config(get_args_parser(), [str(x) for x in argv]))


def _csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_teacher_merges_the_duplicate_and_drops_the_mislabelled_photo(sources, tmp_path):
    a, b = sources
    out = tmp_path / "clean.lmdb"
    report = _run("--data", a, b, "--embeddings", "dlib", "--out", out)
    # the one person in both sources is merged, nobody else
    assert report["cleanup"]["merged"] == [["a/s4", "b/x"]]
    assert report["totals"] == {"samples": 29, "written": 28, "relabelled": 0, "dropped": 1, "dropped_by_prediction": 0,
                                "dropped_outliers": 1, "merge_groups": 1, "classes_before": 7, "classes_after": 6}
    assert report["counts"] == {"kept": 29, "relabelled": 0, "dropped": 0} and report["sources"] == ["a", "b"]
    # the written LMDB: merged class, s4's 8 photos under it, the s9 photo gone
    ds = LMDBDataset(out)
    assert list(ds.classes) == ["a/s1", "a/s2", "a/s3", "a/s4+b/x", "b/s5", "b/s6"]
    assert len(ds) == 28 and np.bincount(ds.labels).tolist() == [4, 4, 4, 8, 4, 4]
    assert ds.metadata["build"]["cleanup"]["merge_groups"] == 1
    # images copied unchanged: the first sample of b (s4/5.pgm) is the first one with the merged label from b
    src_b = LMDBDataset(b)
    assert ds.record(16)["encoded"] == src_b.record(0)["encoded"]
    # the reports
    saved = json.loads((out / "relabel_report.json").read_text())
    assert saved["totals"] == report["totals"] and saved["cleanup"]["merge_threshold"] == 0.8
    merged = _csv(out / "cleanup_merged.csv")
    assert len(merged) == 1 and merged[0]["classes"] == "a/s4 b/x" and merged[0]["sources"] == "a b"
    assert float(merged[0]["min_centroid_cosine"]) >= 0.8
    dropped = _csv(out / "cleanup_dropped.csv")
    assert len(dropped) == 1
    assert dropped[0]["source"] == "a" and dropped[0]["source_index"] == "16" and dropped[0]["class"] == "a/s1"
    assert float(dropped[0]["score"]) < 0.3
    assert not (out / "relabel_changes.csv").exists()  # no prediction step
    # the teacher embeddings of the kept samples come along, so the cleaned corpus trains with --distill dlib
    from lightface.distill.teacher import load_teacher_embeddings

    assert report["teachers_carried"] == ["dlib"]
    emb = np.load(FIXTURE)
    np.testing.assert_array_equal(load_teacher_embeddings(out), np.delete(emb, 16, axis=0))


def test_no_merge_no_drop_and_thresholds(sources, tmp_path):
    a, b = sources
    r = _run("--data", a, b, "--embeddings", "dlib", "--no-merge", "--out", tmp_path / "m")
    assert r["totals"]["merge_groups"] == 0 and r["totals"]["dropped_outliers"] == 1 and r["cleanup"]["merge_threshold"] is None
    assert len(LMDBDataset(tmp_path / "m").classes) == 7
    r = _run("--data", a, b, "--embeddings", "dlib", "--no-drop", "--out", tmp_path / "d")
    assert r["totals"]["merge_groups"] == 1 and r["totals"]["written"] == 29 and r["cleanup"]["outlier_threshold"] is None
    # a merge threshold above the duplicate's cosine keeps the two labels apart
    r = _run("--data", a, b, "--embeddings", "dlib", "--merge-threshold", "0.99", "--out", tmp_path / "t")
    assert r["totals"]["merge_groups"] == 0
    # embeddings from a file (one row per stacked sample) give the same plan as the teacher files
    r = _run("--data", a, b, "--embeddings", FIXTURE, "--out", tmp_path / "f")
    assert r["cleanup"]["merged"] == [["a/s4", "b/x"]] and r["totals"]["dropped_outliers"] == 1
    # one source alone: nothing to merge with, the outlier still goes
    r = _run("--data", a, "--embeddings", "dlib", "--out", tmp_path / "one")
    assert r["totals"]["merge_groups"] == 0 and r["totals"]["dropped_outliers"] == 1 and r["written"] == 16


@pytest.mark.parametrize("argv, match", [
    ([], "needs --weights"),
    (["--weights", "no_such_model", "--no-relabel", "--embeddings", "model"], "no such file, nor a shipped model"),
    (["--embeddings", "dlib", "--no-merge", "--no-drop"], "does nothing"),
    (["--embeddings", "nothing"], "--embeddings must be"),
])
def test_bad_settings(sources, tmp_path, argv, match):
    a, b = sources
    with pytest.raises(ValueError, match=match):
        _run("--data", a, b, "--out", tmp_path / "x", *argv)


def test_embeddings_of_the_wrong_length_are_refused(sources, tmp_path):
    a, b = sources
    np.save(tmp_path / "short.npy", np.zeros((3, 8), np.float32))
    with pytest.raises(ValueError, match="one row per sample"):
        _run("--data", a, b, "--embeddings", tmp_path / "short.npy", "--out", tmp_path / "x")


def test_prediction_step_and_cleanup_compose(sources, tmp_path):
    """One bootstrapping round: a (tiny) model trained on both sources relabels, then the clean-up runs
    on the relabelled labels, with the model's own features or the teacher's."""
    from pipelines.train_lightcnn import get_args_parser, main

    a, b = sources
    run = tmp_path / "run"
    main(get_args_parser().parse_args(["--data", str(a), str(b), "--out", str(run), "--arch", TINY, "--batch-size", "4",
                                       "--workers", "0", "--epochs", "1", "--no-tensorboard", "--no-plots"]))
    weights = run / "last.pt"
    for emb in ("model", "dlib"):
        out = tmp_path / f"r_{emb}"
        # (a 1-epoch model predicts almost one class for all: no sample would be near the rest of
        # that class, so outliers are kept here; the teacher's outlier decisions are tested above)
        r = _run("--data", a, b, "--weights", weights, "--threshold", "0.05", "--embeddings", emb, "--out", out,
                 "--device", "cpu", "--batch-size", "8", "--outlier-threshold", "-1")
        t = r["totals"]
        assert sum(r["counts"].values()) == 29 and t["relabelled"] == r["counts"]["relabelled"]
        assert t["written"] == 29 - r["counts"]["dropped"] - t["dropped_outliers"] == len(LMDBDataset(out))
        rows = _csv(out / "relabel_changes.csv")
        assert len(rows) == r["counts"]["relabelled"] + r["counts"]["dropped"]
        assert all(row["source"] in ("a", "b") for row in rows)
        assert all(row["photo"].endswith(".pgm") for row in rows)
        assert len(_csv(out / "cleanup_dropped.csv")) == t["dropped_outliers"]
    # the model only as an embedder: no prediction step
    r = _run("--data", a, b, "--weights", weights, "--no-relabel", "--embeddings", "model", "--out", tmp_path / "nr",
             "--device", "cpu")
    assert r["counts"] == {"kept": 29, "relabelled": 0, "dropped": 0} and r["threshold"] is None
    # ... which needs no classifier: the same model's backbone alone (as shipped) cleans up alike
    from lightface.models.checkpoint import build_from_checkpoint, save_model_checkpoint

    backbone = build_from_checkpoint(weights)
    backbone.reset_classifier(0)
    save_model_checkpoint(tmp_path / "backbone.pt", backbone, TINY, {"num_classes": 0})
    r2 = _run("--data", a, b, "--weights", tmp_path / "backbone.pt", "--no-relabel", "--embeddings", "model",
              "--out", tmp_path / "nr2", "--device", "cpu")
    assert r2["counts"] == r["counts"] and r2["totals"] == r["totals"]
    # a model of other classes is refused
    with pytest.raises(ValueError, match="other classes"):
        _run("--data", b, a, "--weights", weights, "--out", tmp_path / "w", "--device", "cpu")


def test_the_shipped_recogniser_embeds_without_weights_and_by_name(sources, tmp_path, caplog):
    """``--embeddings model`` with no ``--weights`` was refused ("relabel needs --weights"), and ``--weights``
    took no shipped name (``checkpoint not found: recognition``), so the shipped recogniser, which every
    other tool uses by default, could only be named by its hashed file inside the package."""
    from lightface.models.pretrained import default_weights

    a, b = sources
    shipped = default_weights("recognition")
    with caplog.at_level("INFO", logger="lightface.apps.relabel"):
        r = _run("--data", a, b, "--embeddings", "model", "--out", tmp_path / "default", "--device", "cpu")
    assert f"the shipped recogniser {shipped.name}" in caplog.text
    assert r["weights"] == str(shipped.path()) and r["counts"] == {"kept": 29, "relabelled": 0, "dropped": 0}
    assert r["threshold"] is None and r["cleanup"]["embeddings"] == "model" and len(LMDBDataset(tmp_path / "default")) == r["written"]
    by_name = _run("--data", a, b, "--weights", shipped.name, "--no-relabel", "--embeddings", "model",
                   "--out", tmp_path / "named", "--device", "cpu")
    assert by_name["weights"] == r["weights"] and by_name["totals"] == r["totals"]


def test_the_dropped_list_names_each_photo(sources, tmp_path):
    """cleanup_dropped.csv gave a dropped sample as source / index numbers only: checking whether a drop is
    really someone else meant opening the LMDB by hand. Each row now names the photo it was built from."""
    a, b = sources
    out = tmp_path / "clean.lmdb"
    _run("--data", a, b, "--embeddings", "dlib", "--out", out)
    (row,) = _csv(out / "cleanup_dropped.csv")
    assert Path(row["photo"]).parts[-2:] == ("s9", "1.pgm")  # the mislabelled s9 photo of A_ROWS
    assert row["photo"] == LMDBDataset(a).record(16)["attributes"]["source"]


def test_dlib_teacher_reproduces_the_fixture(sources, tmp_path):
    pytest.importorskip("dlib")
    import importlib.util

    if importlib.util.find_spec("face_recognition_models") is None:
        pytest.skip("face_recognition_models (the teacher's weights) not installed")
    import shutil

    from lightface.distill.teacher import load_teacher_embeddings, teacher_embeddings_for_lmdb

    a = shutil.copytree(sources[0], tmp_path / "a.lmdb", ignore=shutil.ignore_patterns("teacher_*"))
    teacher_embeddings_for_lmdb(a, progress=False)
    fresh = load_teacher_embeddings(a)
    assert np.allclose(fresh, np.load(FIXTURE)[: len(A_ROWS)], atol=1e-4)


def test_help_shows_the_defaults_of_values_but_not_of_switches():
    """``--no-merge`` is a store_false switch: ``(default: True)`` after it read as "skipped by default";
    value options keep their default (every pipeline's DefaultsHelpFormatter)."""
    from pipelines.relabel import get_args_parser

    text = " ".join(get_args_parser().format_help().split())
    assert "(default: True)" not in text and "(default: False)" not in text
    assert "--no-merge do not merge classes --no-drop do not drop outliers" in text
    assert "--no-relabel skip the prediction step (use --weights only for --embeddings model) --overwrite" in text
    assert "switch a disagreeing label (default: 0.7)" in text and "(default: 128)" in text


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    dst.parent.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copytree(src, dst))


def test_sources_in_folders_of_the_same_name_still_merge(sources, tmp_path):
    """``x/a/train.lmdb x/b/train.lmdb``: both were the source "train", so every link was refused as
    "same source" and nothing merged, silently."""
    a, b = sources
    ta, tb = _copy(a, tmp_path / "a" / "train.lmdb"), _copy(b, tmp_path / "b" / "train.lmdb")
    report = _run("--data", ta, tb, "--embeddings", "dlib", "--out", tmp_path / "out")
    assert report["cleanup"]["merged"] == [["a/s4", "b/x"]] and report["sources"] == ["a/train", "b/train"]
    assert _csv(tmp_path / "out" / "cleanup_dropped.csv")[0]["source"] == "a/train"


def test_one_lmdb_given_twice_is_refused(sources, tmp_path):
    a, _ = sources
    with pytest.raises(ValueError, match="given twice"):
        _run("--data", a, Path(str(a) + "/"), "--embeddings", "dlib", "--out", tmp_path / "out")


def test_the_next_round_on_the_merged_lmdb_still_merges_across_sources(sources, tmp_path, caplog):
    """docs/noisy_labels.md: the next round relabels its own output, one LMDB. Its classes all had one
    source, so no merge could ever happen there."""
    a, b = sources
    r1 = tmp_path / "r1"
    _run("--data", a, b, "--embeddings", "dlib", "--merge-threshold", "0.99", "--no-drop", "--out", r1)
    ds = LMDBDataset(r1)
    assert ds.metadata["build"]["class_sources"] == ["a"] * 4 + ["b"] * 3
    assert ds.record(0)["attributes"]["origin"] == "a" and ds.record(len(ds) - 1)["attributes"]["origin"] == "b"
    r2 = _run("--data", r1, "--embeddings", "dlib", "--out", tmp_path / "r2")
    assert r2["cleanup"]["merged"] == [["a/s4", "b/x"]] and r2["totals"]["dropped_outliers"] == 1
    merged = LMDBDataset(tmp_path / "r2")
    assert merged.metadata["build"]["class_sources"][3] == ["a", "b"]
    assert merged.record(0)["attributes"]["origin"] == "a"  # the first round's origin is kept
    # a plain single LMDB has nothing to merge with: said, not silent
    with caplog.at_level("WARNING", logger="lightface.apps.relabel"):
        _run("--data", a, "--embeddings", "dlib", "--out", tmp_path / "one")
    assert "holds one source (a)" in caplog.text and "only drops outliers" in caplog.text


def test_a_stale_teacher_file_does_not_stop_a_finished_relabel(sources, tmp_path, caplog):
    """The carried teacher rows were loaded after OUT was published: a stale teacher_dlib.npy in one
    source (not even used, --embeddings is a .npy) left OUT without its report and CSVs, and the rerun
    was refused as "already complete"."""
    a, b = sources
    stale = _copy(b, tmp_path / "b.lmdb")
    _with_teacher(stale, np.load(FIXTURE)[:5])  # 5 rows for 12 samples
    out = tmp_path / "out.lmdb"
    with caplog.at_level("WARNING", logger="lightface.apps.relabel"):
        report = _run("--data", a, stale, "--embeddings", FIXTURE, "--out", out)
    assert report["teachers_carried"] == [] and "teacher embeddings are not carried over" in caplog.text
    saved = json.loads((out / "relabel_report.json").read_text())
    assert saved["totals"] == report["totals"] and saved["lmdb"]["written"] == 28
    assert (out / "cleanup_merged.csv").is_file() and (out / "cleanup_dropped.csv").is_file()
    assert not Path(str(out) + ".partial").exists()


def test_gray_and_colour_sources_are_relabelled_together(shared_data, sources, tmp_path):
    """train_lightcnn takes a gray and a colour LMDB together; relabel copied the data, then failed on the
    mix and left OUT.partial behind."""
    a, _ = sources
    b_rgb = tmp_path / "b_rgb.lmdb"
    from lightface.data.build import build_lmdb

    lst = tmp_path / "b.txt"
    lst.write_text("\n".join(f"{shared_data / 'orl_faces' / f's{i}' / f'{j}.pgm'} {label}" for i, j, label in B_ROWS) + "\n")
    build_lmdb(lst, b_rgb, size=144, color="rgb", progress=False)
    out = tmp_path / "mix.lmdb"
    report = _run("--data", a, b_rgb, "--embeddings", FIXTURE, "--out", out)
    assert report["cleanup"]["merged"] == [["a/s4", "b/x"]]
    ds = LMDBDataset(out)
    assert ds.metadata["image"]["color"] == "gray" and len(ds) == 28
    assert ds[len(ds) - 1]["image"].shape == (144, 144)
    assert not Path(str(out) + ".partial").exists()


def test_a_failed_write_leaves_no_partial_build(tmp_path):
    from lightface.data.build import partial_path, write_lmdb

    samples = [{"image": np.zeros((8, 8), np.uint8), "label": 0}, {"image": np.zeros((8, 8, 3), np.uint8), "label": 0}]
    with pytest.raises(ValueError, match="sample 1 is colour"):
        write_lmdb(tmp_path / "x.lmdb", samples, ["a"])
    assert not partial_path(tmp_path / "x.lmdb").exists() and not (tmp_path / "x.lmdb").exists()


@pytest.mark.parametrize("argv", [["--threshold", "1.5"], ["--merge-threshold", "5"], ["--outlier-threshold", "-3"]])
def test_thresholds_out_of_range_are_refused_on_the_command_line(sources, tmp_path, argv, capsys):
    from pipelines._cli import run_cli
    from pipelines.relabel import get_args_parser, main

    a, b = sources
    with pytest.raises(SystemExit) as stop:
        run_cli(main, get_args_parser, ["--data", str(a), str(b), "--embeddings", "dlib", "--out", str(tmp_path / "x"),
                                        *argv])
    assert stop.value.code == 2 and f"argument {argv[0]}: must be" in capsys.readouterr().err


def test_a_bad_threshold_is_refused_before_the_model_is_loaded(sources, tmp_path):
    from lightface.apps.relabel import relabel_lmdb

    a, b = sources
    with pytest.raises(ValueError, match=r"--threshold must be in \(0, 1\]"):
        relabel_lmdb([a, b], tmp_path / "not_loaded_yet.pt", tmp_path / "x", threshold=1.5, progress=False)


def test_embeddings_without_any_finite_row_are_refused(sources, tmp_path):
    a, b = sources
    np.save(tmp_path / "nan.npy", np.full((29, 8), np.nan, np.float32))
    with pytest.raises(ValueError, match="no sample has a usable"):
        _run("--data", a, b, "--embeddings", tmp_path / "nan.npy", "--out", tmp_path / "x")


def test_weights_unused_by_a_teacher_cleanup_are_not_loaded(sources, tmp_path, caplog):
    """--weights with --no-relabel and --embeddings dlib ran a whole forward pass for nothing, and the report
    named the model as if it had been used."""
    a, b = sources
    with caplog.at_level("WARNING", logger="lightface.apps.relabel"):
        r = _run("--data", a, b, "--weights", tmp_path / "never_read.pt", "--no-relabel", "--embeddings", "dlib",
                 "--out", tmp_path / "x")
    assert r["weights"] is None and r["cleanup"]["merged"] == [["a/s4", "b/x"]]
    assert "is not used" in caplog.text


def test_an_embedding_only_checkpoint_says_how_to_use_it(sources, tmp_path):
    from lightcnn_tiny import TinyLightCNN
    from lightface.models.checkpoint import save_model_checkpoint

    a, b = sources
    save_model_checkpoint(tmp_path / "backbone.pt", TinyLightCNN(num_classes=0), TINY, {"num_classes": 0})
    with pytest.raises(ValueError, match="has no classifier .* --no-relabel --embeddings model"):
        _run("--data", a, b, "--weights", tmp_path / "backbone.pt", "--out", tmp_path / "x", "--device", "cpu")


def _lfw_lmdb(shared_data, out: Path, align_method: str, people, **options) -> Path:
    """LFW identities ``people`` (3 photos each) cropped from their landmarks by ``align_method``."""
    from lightface.data.build import build_lmdb

    root = shared_data / "lfw_identities"
    lst = out.with_suffix(".txt")
    lst.write_text("".join(f"{f} {n}\n" for n in people for f in sorted((root / "images" / n).glob("*.jpg"))[:3]))
    build_lmdb(lst, out, landmarks=root / "landmarks_5pt.txt", align_method=align_method, progress=False,
               **{"size": 144, **options})
    return out


def test_sources_cropped_differently_are_refused_before_anything_is_computed(shared_data, sources, tmp_path):
    """An eyes + similarity relabel only warned and wrote the first source's alignment record: the merged LMDB
    claimed one crop for both, and train_lightcnn (which refuses the two LMDBs together) trained on the mix and
    recorded that one method in its checkpoints."""
    from lightface.data.relabel import copy_with_labels
    from lightface.data.multi_source import MultiSourceDataset

    sim = _lfw_lmdb(shared_data, tmp_path / "sim.lmdb", "similarity", ["Gordon_Brown", "Hugo_Chavez"])
    eyes = _lfw_lmdb(shared_data, tmp_path / "eyes.lmdb", "eyes", ["Jacques_Rogge", "Tom_Ridge"])
    small = _lfw_lmdb(shared_data, tmp_path / "small.lmdb", "similarity", ["Jacques_Rogge"], size=128,
                      template="lightcnn")
    emb = tmp_path / "emb.npy"
    np.save(emb, np.random.default_rng(0).normal(size=(12, 8)).astype(np.float32))
    out = tmp_path / "out.lmdb"
    with pytest.raises(ValueError, match="differently cropped") as err:
        _run("--data", sim, eyes, "--embeddings", emb, "--no-drop", "--out", out)
    assert f"{sim}: template lightcnn_train, size 144, align method similarity" in str(err.value)
    assert f"{eyes}: template lightcnn_train, size 144, align method eyes" in str(err.value)
    assert "--align-method" in str(err.value) and not out.exists() and not Path(str(out) + ".partial").exists()
    with pytest.raises(ValueError, match="template lightcnn, size 128"):  # another template and size
        copy_with_labels(MultiSourceDataset([LMDBDataset(sim), LMDBDataset(small)]), out, [0, 6], [0, 1])
    with pytest.raises(ValueError, match="not aligned"):  # aligned crops and whole images resized (ORL)
        copy_with_labels(MultiSourceDataset([LMDBDataset(sim), LMDBDataset(sources[0])]), out, [0, 6], [0, 1])
    assert not out.exists()
    # the same crop from two LMDBs still merges, its record kept
    twin = _lfw_lmdb(shared_data, tmp_path / "twin.lmdb", "similarity", ["Jacques_Rogge", "Tom_Ridge"])
    _run("--data", sim, twin, "--embeddings", emb, "--no-drop", "--out", out)
    assert LMDBDataset(out).metadata["alignment"] == LMDBDataset(sim).metadata["alignment"]


def test_merged_alignment_keeps_what_only_says_how_landmarks_were_found():
    """Landmarks from a file in one source, from a detector in another: the faces sit the same in their crops,
    so the sources merge; the record keeps the template and says null where the sources disagree."""
    from types import SimpleNamespace

    from lightface.data.relabel import merged_alignment

    base = {"template": "lightcnn_train", "size": 144, "method": "landmarks", "detector": None, "source_template": None,
            "resize": None}
    a = SimpleNamespace(metadata={"alignment": base}, path="a.lmdb")
    b = SimpleNamespace(metadata={"alignment": {**base, "method": "detect", "detector": "det_500m.onnx",
                                                "align_method": "similarity"}}, path="b.lmdb")
    assert merged_alignment([a, b]) == {**base, "method": None, "detector": None}
    assert merged_alignment([a, a]) == base
    eyes = SimpleNamespace(metadata={"alignment": {**base, "align_method": "eyes"}}, path="eyes.lmdb")
    with pytest.raises(ValueError, match="a.lmdb: .*similarity; eyes.lmdb: .*align method eyes"):
        merged_alignment([a, eyes])
