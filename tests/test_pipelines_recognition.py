"""extract_embeddings and evaluate CLIs end to end on real LFW identities.

Random Light CNN weights in the official file layout (no official weights on this machine):
the metrics are meaningless as numbers but every stage runs on real faces.
"""
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from benchmarks._baseline_lightcnn import build_baseline, official_checkpoint
from lightface.embed import FaceEmbedder
from pipelines import evaluate, extract_embeddings
from pipelines._cli import run_cli

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(5)
    path = tmp_path_factory.mktemp("w") / "LightCNN_9Layers_checkpoint.pth.tar"
    torch.save(official_checkpoint(build_baseline("lightcnn9", num_classes=10)), path)
    return path


@pytest.fixture(scope="module")
def lfw(shared_data):
    root = shared_data / "lfw_identities"
    names = sorted(p.name for p in (root / "images").iterdir() if p.is_dir())
    assert len(names) == 18
    return root, names


def _copy_identities(root, names, dst, numbers=(1, 2)):
    """Copy ``name_000k.jpg`` of the given LFW identities into ``dst/<name>/``."""
    for n in names:
        (dst / n).mkdir(parents=True)
        for k in numbers:
            src = root / "images" / n / f"{n}_{k:04d}.jpg"
            (dst / n / src.name).write_bytes(src.read_bytes())
    return dst


def _lfw_pairs_file(path, names):
    """LFW View-2 layout, 2 folds x 18 matched + 18 mismatched pairs over all 18 identities."""
    lines = ["2\t18"]
    for fold in range(2):
        lines += [f"{n}\t{1 + fold}\t{2 + fold}" for n in names]
        lines += [f"{n}\t{1 + fold}\t{names[(k + 1 + fold) % 18]}\t3" for k, n in enumerate(names)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_evaluate_cli_with_landmarks_on_lfw(tmp_path, weights, lfw):
    root, names = lfw
    pairs = _lfw_pairs_file(tmp_path / "pairs.txt", names)
    argv = ["--weights", str(weights), "--pairs", str(pairs), "--images", str(root / "images"),
            "--landmarks", str(root / "landmarks_5pt.txt"), "--out", str(tmp_path / "r" / "report.json"),
            "--plot", str(tmp_path / "roc.png"), "--device", "cpu"]
    report = evaluate.main(evaluate.get_args_parser().parse_args(argv))
    saved = json.loads((tmp_path / "r" / "report.json").read_text())
    assert saved["n_pairs"] == 72 and saved["n_same"] == 36 and saved["n_folds"] == 2
    assert saved["alignment"] == "landmarks" and saved["arch"] == "lightcnn9" and not saved["failed_images"]
    assert saved["align_method"] == "eyes"  # an official release: cropped by the official recipe (--align-method auto)
    args = evaluate.get_args_parser().parse_args(argv + ["--align-method", "similarity"])
    assert extract_embeddings.embedder_from_args(args).align_method == "similarity"
    assert 0.0 <= saved["accuracy_mean"] <= 1.0 and 0.0 <= saved["auc"] <= 1.0 and 0.0 <= saved["eer"] <= 1.0
    assert saved["tar_at_far"]["1e-01"] is not None and saved["tar_at_far"]["1e-02"] is None
    assert report["threshold"] == saved["threshold"]
    assert (tmp_path / "roc.png").stat().st_size > 10_000
    # the same release exported to ONNX: the report names its arch (from the file's card; it has no module)
    from lightface.export import export_onnx

    onnx = export_onnx(str(weights), tmp_path / "release.onnx")
    argv[argv.index("--weights") + 1] = str(onnx)
    exported = evaluate.main(evaluate.get_args_parser().parse_args(argv))
    assert exported["arch"] == "lightcnn9" and exported["align_method"] == "eyes"


def test_evaluate_cli_detector_and_bad_images(tmp_path, weights, lfw, shared_models):
    root, names = lfw
    images = _copy_identities(root, names[:4], tmp_path / "images")
    (images / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    lines = [f"1 {n}/{n}_0001.jpg {n}/{n}_0002.jpg" for n in names[:4]]
    lines += [f"0 {names[k]}/{names[k]}_0001.jpg {names[k + 1]}/{names[k + 1]}_0002.jpg" for k in range(3)]
    lines += [f"0 broken.jpg {names[0]}/{names[0]}_0001.jpg"]
    (tmp_path / "pairs.txt").write_text("\n".join(lines) + "\n")
    argv = ["--weights", str(weights), "--pairs", str(tmp_path / "pairs.txt"), "--images", str(images),
            "--detector", str(shared_models / "det_500m.onnx"), "--out", str(tmp_path / "report.json"),
            "--folds", "3", "--device", "cpu"]
    report = evaluate.main(evaluate.get_args_parser().parse_args(argv))
    assert report["alignment"] == "detector" and report["n_pairs"] == 7 and report["skipped_pairs"] == 1
    # the detector that aligned the faces (a pack that cannot load falls back to YuNet, said here)
    assert report["detector"] == str(shared_models / "det_500m.onnx") and report["detector_backend"] == "insightface"
    assert report["detector_fallback"] is None
    assert list(report["failed_images"]) == ["broken.jpg"]


def test_the_unaligned_photo_warning_names_what_the_cli_in_use_takes(tmp_path, weights, lfw, shared_models, caplog):
    """LFW's 150x150 photos taken for aligned crops (evaluate without --detector or --landmarks, extract_embeddings
    --aligned): the warning advised "use aligned=False", which evaluate has no flag for (it aligns with --detector or
    --landmarks) and extract_embeddings spells as leaving out --aligned. It names those now, and following them
    embeds the photos without the warning."""
    root, names = lfw
    images = _copy_identities(root, names[:4], tmp_path / "images")
    lines = [f"1 {n}/{n}_0001.jpg {n}/{n}_0002.jpg" for n in names[:4]]
    lines += [f"0 {names[k]}/{names[k]}_0001.jpg {names[k - 1]}/{names[k - 1]}_0002.jpg" for k in range(1, 4)]
    (tmp_path / "pairs.txt").write_text("\n".join(lines) + "\n")
    det = str(shared_models / "det_500m.onnx")
    argv = ["--weights", str(weights), "--pairs", str(tmp_path / "pairs.txt"), "--images", str(images),
            "--out", str(tmp_path / "report.json"), "--folds", "2", "--device", "cpu"]
    with caplog.at_level("WARNING", logger="lightface.embed"):
        assert run_cli(evaluate.main, evaluate.get_args_parser, argv) == 0
    assert "aligned input is 150x150" in caplog.text and "evaluate: --detector or --landmarks" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="lightface.embed"):
        assert run_cli(evaluate.main, evaluate.get_args_parser, [*argv, "--detector", det]) == 0
        assert run_cli(evaluate.main, evaluate.get_args_parser,
                       [*argv, "--landmarks", str(root / "landmarks_5pt.txt")]) == 0
    assert "aligned input is" not in caplog.text
    extract = ["--weights", str(weights), "-i", str(images / names[0]), "--device", "cpu", "--detector", det]
    with caplog.at_level("WARNING", logger="lightface.embed"):
        assert run_cli(extract_embeddings.main, extract_embeddings.get_args_parser,
                       [*extract, "--aligned", "-o", str(tmp_path / "a.npz")]) == 0
    assert "aligned input is 150x150" in caplog.text and "leave out --aligned" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="lightface.embed"):
        assert run_cli(extract_embeddings.main, extract_embeddings.get_args_parser,
                       [*extract, "-o", str(tmp_path / "b.npz")]) == 0
    assert "aligned input is" not in caplog.text


def test_an_arch_that_ships_no_weights_names_the_weights_flag(tmp_path, weights, lfw, capsys):
    """--arch lightcnn9 without --weights (nothing of that architecture ships): the recognition CLIs failed with
    "Pass weights=", a keyword the command line has no way to give; the message names --weights (as the
    restorers' do), and following it runs."""
    root, names = lfw
    argv = ["-i", str(root / "images" / names[0]), "--arch", "lightcnn9", "--device", "cpu", "--detector",
            "yunet"]
    assert run_cli(extract_embeddings.main, extract_embeddings.get_args_parser,
                   [*argv, "-o", str(tmp_path / "a.npz")]) == 1
    err = capsys.readouterr().err
    assert "no 'lightcnn9' face recogniser ships" in err and "--weights" in err
    assert run_cli(extract_embeddings.main, extract_embeddings.get_args_parser,
                   [*argv, "-o", str(tmp_path / "a.npz"), "--weights", str(weights)]) == 0


def test_landmarks_the_eyes_recipe_cannot_align_name_the_align_method_flag(tmp_path, weights, lfw, capsys):
    """Upside-down photos (a scanned print turned over) with their landmarks: an official release crops by the eyes
    recipe (--align-method auto), which cannot align a mouth above the eyes, and every image failed with "use
    method='similarity'", a keyword the command line spells --align-method similarity; the message names the flag,
    and following it scores the pairs."""
    from lightface.data.sources import read_landmarks_file

    root, names = lfw
    table = read_landmarks_file(root / "landmarks_5pt.txt")
    marks = []
    for n in names[:4]:
        (tmp_path / "images" / n).mkdir(parents=True)
        for k in (1, 2):
            rel = f"{n}/{n}_{k:04d}.jpg"
            img = cv2.imread(str(root / "images" / rel))
            cv2.imwrite(str(tmp_path / "images" / rel), img[::-1, ::-1])
            h, w = img.shape[:2]
            pts = np.array([w - 1, h - 1]) - table[rel]  # turned by 180 degrees, then named as seen again
            marks.append(rel + " " + " ".join(f"{v:.2f}" for v in pts[[1, 0, 2, 4, 3]].ravel()))
    lines = [f"1 {n}/{n}_0001.jpg {n}/{n}_0002.jpg" for n in names[:4]]
    lines += [f"0 {names[k]}/{names[k]}_0001.jpg {names[k - 1]}/{names[k - 1]}_0002.jpg" for k in range(1, 4)]
    (tmp_path / "pairs.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "marks.txt").write_text("\n".join(marks) + "\n")
    argv = ["--weights", str(weights), "--pairs", str(tmp_path / "pairs.txt"), "--images", str(tmp_path / "images"),
            "--landmarks", str(tmp_path / "marks.txt"), "--out", str(tmp_path / "report.json"), "--folds", "2",
            "--device", "cpu"]
    assert run_cli(evaluate.main, evaluate.get_args_parser, argv) == 1
    err = capsys.readouterr().err
    assert "cannot align method='eyes'" in err and "--align-method similarity" in err
    assert run_cli(evaluate.main, evaluate.get_args_parser, [*argv, "--align-method", "similarity"]) == 0
    assert not json.loads((tmp_path / "report.json").read_text())["failed_images"]


@pytest.mark.parametrize("module", ["evaluate", "evaluate_dev", "compare_recognisers"])
def test_a_report_path_that_cannot_be_written_is_refused_before_any_work(tmp_path, capsys, module):
    """--out naming a folder (or under a file) failed with a raw OSError after every face was embedded (minutes)."""
    import importlib

    cli = importlib.import_module(f"pipelines.{module}")
    given = {"evaluate": ["--pairs", str(tmp_path / "p.txt"), "--images", str(tmp_path)],
             "evaluate_dev": ["--data", str(tmp_path / "no_data")], "compare_recognisers": ["shipped", "shipped"]}[module]
    (tmp_path / "a_file").write_text("")
    for out, message in ((tmp_path, f"argument --out: {tmp_path} is a folder; give a report file name"),
                         (tmp_path / "a_file" / "r.json", f"{tmp_path / 'a_file'} is a file, so the folder for it")):
        with pytest.raises(SystemExit) as exit_:  # argparse's exit, before main runs
            run_cli(cli.main, cli.get_args_parser, [*given, "--out", str(out)])
        assert exit_.value.code == 2 and message in capsys.readouterr().err
    if module == "evaluate":
        with pytest.raises(SystemExit) as exit_:
            run_cli(cli.main, cli.get_args_parser, [*given, "--plot", str(tmp_path / "roc.txt")])
        assert exit_.value.code == 2
        assert "argument --plot: " + str(tmp_path / "roc.txt") + ": '.txt' is not a plot format" in capsys.readouterr().err


def test_extract_embeddings_npz_and_feat(tmp_path, weights, lfw, shared_models):
    root, names = lfw
    src = _copy_identities(root, names[:2], tmp_path / "in")
    (src / names[0] / "empty.png").write_bytes(b"")
    common = ["--weights", str(weights), "-i", str(src), "--detector", str(shared_models / "det_500m.onnx"),
              "--device", "cpu", "--batch-size", "2"]
    out = extract_embeddings.main(extract_embeddings.get_args_parser().parse_args(common + ["-o", str(tmp_path / "e.npz")]))
    assert out["count"] == 4 and list(out["failed"]) == [f"{names[0]}/empty.png"]
    data = np.load(tmp_path / "e.npz")
    assert data["embeddings"].shape == (4, 256) and data["embeddings"].dtype == np.float32
    assert list(data["failed_paths"]) == [f"{names[0]}/empty.png"]
    expected = FaceEmbedder(weights, device="cpu", detector=str(shared_models / "det_500m.onnx")).embed(
        [src / p for p in data["paths"]], aligned=False)
    assert np.allclose(data["embeddings"], expected, atol=1e-5)
    extract_embeddings.main(extract_embeddings.get_args_parser().parse_args(
        common + ["-o", str(tmp_path / "feats"), "--format", "feat"]))
    feat = tmp_path / "feats" / data["paths"][0].replace(".jpg", ".feat")
    assert feat.stat().st_size == 256 * 4
    assert np.allclose(np.fromfile(feat, "<f4"), data["embeddings"][0], atol=1e-6)
    assert "empty.png" in (tmp_path / "feats" / "failures.tsv").read_text()
    # a list file of aligned crops (Light CNN list with labels) and --aligned
    (tmp_path / "list.txt").write_text(f"{data['paths'][0]} 0\n{data['paths'][1]} 1\n")
    res = extract_embeddings.main(extract_embeddings.get_args_parser().parse_args(
        ["--weights", str(weights), "-i", str(tmp_path / "list.txt"), "--root", str(src), "--aligned",
         "-o", str(tmp_path / "l.npz"), "--device", "cpu"]))
    assert res["count"] == 2


def test_extract_embeddings_takes_jpeg_aliases_and_counts_the_files_it_leaves_out(tmp_path, weights, lfw, caplog):
    """b.jfif and c.jpe (JPEGs as Windows and browsers save them) were left out of the walk without a word."""
    root, names = lfw
    photo = root / "images" / names[0] / f"{names[0]}_0001.jpg"
    (tmp_path / "in").mkdir()
    for name in ("a.jpg", "b.jfif", "c.jpe"):
        (tmp_path / "in" / name).write_bytes(photo.read_bytes())
    (tmp_path / "in" / "notes.txt").write_text("not a photo")
    argv = ["--weights", str(weights), "-i", str(tmp_path / "in"), "--aligned", "-o", str(tmp_path / "e.npz"),
            "--device", "cpu"]
    with caplog.at_level("INFO", logger="pipelines.extract_embeddings"):
        out = extract_embeddings.main(extract_embeddings.get_args_parser().parse_args(argv))
    assert out["count"] == 3 and list(np.load(tmp_path / "e.npz")["paths"]) == ["a.jpg", "b.jfif", "c.jpe"]
    assert "left out 1 file(s) whose extension is not an image's" in caplog.text and "notes.txt" in caplog.text


def test_extract_embeddings_feat_names_stay_in_out_and_are_unique(tmp_path, weights, lfw):
    root, names = lfw
    images = tmp_path / "in"
    images.mkdir()
    (images / "face.jpg").write_bytes((root / "images" / names[0] / f"{names[0]}_0001.jpg").read_bytes())
    cv2.imwrite(str(images / "face.png"), cv2.imread(str(root / "images" / names[1] / f"{names[1]}_0001.jpg")))
    (tmp_path / "lists").mkdir()
    listed = tmp_path / "lists" / "abs.txt"  # absolute paths outside the list file's folder
    listed.write_text(f"{images / 'face.jpg'}\n{images / 'face.png'}\n")

    def run(*argv):
        return extract_embeddings.main(extract_embeddings.get_args_parser().parse_args(
            ["--weights", str(weights), "--aligned", "--device", "cpu", *argv]))

    run("-i", str(listed), "-o", str(tmp_path / "e.npz"))
    run("-i", str(listed), "-o", str(tmp_path / "feats"), "--format", "feat")
    assert sorted(p.name for p in images.iterdir()) == ["face.jpg", "face.png"]  # nothing written next to the inputs
    assert sorted(p.name for p in (tmp_path / "feats").iterdir()) == ["face_jpg.feat", "face_png.feat", "manifest.json"]
    data = np.load(tmp_path / "e.npz")
    for i, name in enumerate(["face_jpg", "face_png"]):
        assert np.allclose(np.fromfile(tmp_path / "feats" / f"{name}.feat", "<f4"), data["embeddings"][i], atol=1e-6)
    one = run("-i", str(images / "face.jpg"), "-o", str(tmp_path / "one.npz"))  # one image as the input
    assert one["count"] == 1 and list(np.load(tmp_path / "one.npz")["paths"]) == ["face.jpg"]
    assert np.allclose(np.load(tmp_path / "one.npz")["embeddings"][0], data["embeddings"][0], atol=1e-6)
    (tmp_path / "list.bin").write_bytes(b"\xff\xd8\xff\xe0 not a list")
    with pytest.raises(ValueError, match=r"list\.bin is a binary file \(not UTF-8 text\), not a text list file; "
                                         r"give a folder of images, one image, or a list file"):
        run("-i", str(tmp_path / "list.bin"), "-o", str(tmp_path / "x.npz"))


_KILLED_CHILD = """
import os, signal, sys
from pipelines import extract_embeddings as ee
original = ee._save_progress
def save_then_die(*a, **k):
    original(*a, **k)
    os.kill(os.getpid(), signal.SIGKILL)  # a crash right after the first progress save
ee._save_progress = save_then_die
ee.main(ee.get_args_parser().parse_args(sys.argv[1:]))
"""


def test_extract_embeddings_killed_midway_continues_and_refuses_other_progress(tmp_path, weights, lfw, shared_models,
                                                                              caplog):
    import os
    import subprocess
    import sys

    root, names = lfw
    src = _copy_identities(root, names[:3], tmp_path / "in")  # 6 photos
    argv = ["--weights", str(weights), "-i", str(src), "--detector", str(shared_models / "det_500m.onnx"),
            "--device", "cpu", "--batch-size", "2", "--save-every", "2"]
    full = extract_embeddings.main(extract_embeddings.get_args_parser().parse_args(argv + ["-o", str(tmp_path / "full.npz")]))
    out = tmp_path / "e.npz"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_ALBUMENTATIONS_UPDATE": "1"}
    killed = subprocess.run([sys.executable, "-c", _KILLED_CHILD, *argv, "-o", str(out)], env=env, capture_output=True,
                            text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert not out.exists() and (tmp_path / "e.partial.npz").is_file()  # no half-written output, the progress kept
    with caplog.at_level("INFO", logger="pipelines.extract_embeddings"):
        again = extract_embeddings.main(extract_embeddings.get_args_parser().parse_args(argv + ["-o", str(out)]))
    assert "2 of 6 images already done" in caplog.text and again["count"] == full["count"] == 6
    a, b = np.load(out), np.load(tmp_path / "full.npz")
    assert list(a["paths"]) == list(b["paths"]) and np.allclose(a["embeddings"], b["embeddings"], atol=1e-6)
    assert not (tmp_path / "e.partial.npz").exists()
    # a progress file of another extraction (here: without flip fusion) is refused, not mixed in
    subprocess.run([sys.executable, "-c", _KILLED_CHILD, *argv, "-o", str(out)], env=env, timeout=300)
    with pytest.raises(ValueError, match="progress of another extraction"):
        extract_embeddings.main(extract_embeddings.get_args_parser().parse_args(argv + ["--flip", "-o", str(out)]))


def _aligned_crops(lfw, dst: Path, order=range(6)) -> Path:
    """``dst/00.png ..``: Light CNN 128 crops of real LFW photos (aligned with their landmarks), the k-th file holding
    photo ``order[k]`` of the first 3 people's first 2 photos."""
    from lightface.data.align import align_face
    from lightface.data.sources import read_landmarks_file

    root, names = lfw
    table = read_landmarks_file(root / "landmarks_5pt.txt")
    rels = [f"{n}/{n}_{k:04d}.jpg" for n in names[:3] for k in (1, 2)]
    dst.mkdir(parents=True, exist_ok=True)
    for k, i in enumerate(order):
        crop = align_face(cv2.imread(str(root / "images" / rels[i])), table[rels[i]], "lightcnn", 128)[0]
        cv2.imwrite(str(dst / f"{k:02d}.png"), crop)
    return dst


def _extract(*argv):
    return extract_embeddings.main(extract_embeddings.get_args_parser().parse_args([str(a) for a in argv]))


def _interrupted(monkeypatch, *argv, batches: int = 1) -> None:
    """Run extract_embeddings stopped by Ctrl-C (a KeyboardInterrupt) after ``batches`` batches."""
    original = FaceEmbedder.try_embed
    calls = []

    def try_embed(self, *a, **k):
        calls.append(1)
        if len(calls) > batches:
            raise KeyboardInterrupt
        return original(self, *a, **k)

    with monkeypatch.context() as m:
        m.setattr(FaceEmbedder, "try_embed", try_embed)
        with pytest.raises(KeyboardInterrupt):
            _extract(*argv)


def test_extract_embeddings_ctrl_c_keeps_the_progress_and_the_rerun_continues(tmp_path, weights, lfw, monkeypatch,
                                                                             caplog):
    """Ctrl-C kept nothing since the last --save-every save (default 2000 images) though it says to rerun."""
    src = _aligned_crops(lfw, tmp_path / "in")
    argv = ["--weights", weights, "-i", src, "--aligned", "--device", "cpu", "--batch-size", "2"]
    _extract(*argv, "-o", tmp_path / "full.npz")
    _interrupted(monkeypatch, *argv, "-o", tmp_path / "e.npz", batches=2)
    assert int(np.load(tmp_path / "e.partial.npz")["done"]) == 4 and not (tmp_path / "e.npz").exists()
    with caplog.at_level("INFO", logger="pipelines.extract_embeddings"):
        _extract(*argv, "-o", tmp_path / "e.npz")
    assert "4 of 6 images already done" in caplog.text and not (tmp_path / "e.partial.npz").exists()
    a, b = np.load(tmp_path / "e.npz"), np.load(tmp_path / "full.npz")
    assert list(a["paths"]) == list(b["paths"]) and np.allclose(a["embeddings"], b["embeddings"], atol=1e-6)


_SIGTERM_CHILD = """
import os, signal, sys
from lightface.embed import FaceEmbedder
from pipelines import extract_embeddings as ee
from pipelines._cli import RERUN_HINT, run_cli
original, calls = FaceEmbedder.try_embed, []
def try_embed(self, *a, **k):
    calls.append(1)
    if len(calls) == 3:  # a scheduler's time limit after two batches
        os.kill(os.getpid(), signal.SIGTERM)
    return original(self, *a, **k)
FaceEmbedder.try_embed = try_embed
sys.exit(run_cli(ee.main, ee.get_args_parser, sys.argv[1:], interrupted_hint=RERUN_HINT))
"""


def test_extract_embeddings_sigterm_keeps_the_progress_as_ctrl_c_does(tmp_path, weights, lfw):
    """A SIGTERM (a scheduler's time limit, `timeout`) killed extract_embeddings outright: everything embedded
    since the last --save-every save (default 2000 images) was lost."""
    import os
    import subprocess
    import sys

    src = _aligned_crops(lfw, tmp_path / "in")
    argv = ["--weights", str(weights), "-i", str(src), "--aligned", "--device", "cpu", "--batch-size", "2",
            "-o", str(tmp_path / "e.npz")]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_ALBUMENTATIONS_UPDATE": "1"}
    child = subprocess.run([sys.executable, "-c", _SIGTERM_CHILD, *argv], env=env, capture_output=True, text=True,
                           timeout=300)
    assert child.returncode == 143, child.stderr[-2000:]
    assert "terminated (SIGTERM): run the same command again" in child.stderr
    assert int(np.load(tmp_path / "e.partial.npz")["done"]) == 4 and not (tmp_path / "e.npz").exists()


def test_extract_embeddings_refuses_the_progress_of_another_folder_root_or_edited_images(tmp_path, weights, lfw,
                                                                                        monkeypatch):
    """Folders with the same file names but other faces: setB's run took setA's saved rows as its own."""
    set_a = _aligned_crops(lfw, tmp_path / "setA")
    set_b = _aligned_crops(lfw, tmp_path / "setB", order=[3, 4, 5, 0, 1, 2])
    argv = ["--weights", weights, "--aligned", "--device", "cpu", "--batch-size", "2"]
    _interrupted(monkeypatch, *argv, "-i", set_a, "-o", tmp_path / "e.npz")
    with pytest.raises(ValueError, match="progress of another extraction"):
        _extract(*argv, "-i", set_b, "-o", tmp_path / "e.npz")
    (set_a / "00.png").write_bytes((set_b / "00.png").read_bytes())  # an image edited since
    with pytest.raises(ValueError, match="progress of another extraction"):
        _extract(*argv, "-i", set_a, "-o", tmp_path / "e.npz")
    (tmp_path / "list.txt").write_text("".join(f"{k:02d}.png {k}\n" for k in range(6)))
    _interrupted(monkeypatch, *argv, "-i", tmp_path / "list.txt", "--root", set_a, "-o", tmp_path / "l.npz")
    with pytest.raises(ValueError, match="progress of another extraction"):
        _extract(*argv, "-i", tmp_path / "list.txt", "--root", set_b, "-o", tmp_path / "l.npz")


def test_extract_embeddings_feat_rerun_without_failures_removes_the_old_failures_list(tmp_path, weights, lfw):
    src = _aligned_crops(lfw, tmp_path / "crops")
    (tmp_path / "in" / "p").mkdir(parents=True)
    (tmp_path / "in" / "p" / "a.png").write_bytes((src / "00.png").read_bytes())
    (tmp_path / "in" / "p" / "b.png").write_bytes(b"")
    argv = ["--weights", weights, "-i", tmp_path / "in", "--aligned", "--device", "cpu", "-o", tmp_path / "feats",
            "--format", "feat"]
    _extract(*argv)
    assert (tmp_path / "feats" / "failures.tsv").read_text().startswith("p/b.png\t")
    (tmp_path / "in" / "p" / "b.png").write_bytes((src / "01.png").read_bytes())  # fixed, then run again
    assert _extract(*argv)["count"] == 2
    assert (tmp_path / "feats" / "p" / "b.feat").is_file() and not (tmp_path / "feats" / "failures.tsv").exists()


def test_extract_embeddings_feat_folder_of_other_weights_or_flags_is_refused_not_mixed(tmp_path, weights, lfw):
    """A rerun into a --format feat folder rewrote only the images it embedded: the .feat files of another model or
    flip setting stayed beside the new ones, and nothing in the folder said which model made which."""
    src = _aligned_crops(lfw, tmp_path / "crops", order=range(2))
    argv = ["--weights", weights, "-i", src, "--aligned", "--device", "cpu", "-o", tmp_path / "feats",
            "--format", "feat"]
    _extract(*argv, "--no-flip")
    manifest = json.loads((tmp_path / "feats" / "manifest.json").read_text())
    assert manifest["settings"]["flip"] is False and manifest["weights"]["name"] == weights.name
    assert len(manifest["weights"]["sha256"]) == 64
    before = {p.name: p.read_bytes() for p in (tmp_path / "feats").glob("*.feat")}
    with pytest.raises(ValueError, match=r"holds .feat files of another extraction \(settings.flip False there, True"):
        _extract(*argv, "--flip")
    assert {p.name: p.read_bytes() for p in (tmp_path / "feats").glob("*.feat")} == before  # refused before any work
    assert _extract(*argv, "--no-flip")["count"] == 2  # the same extraction again is fine
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "x.feat").write_bytes(np.zeros(256, "<f4").tobytes())  # features of an unknown model
    with pytest.raises(ValueError, match="holds .feat files but no manifest.json"):
        _extract(*argv[:-4], "-o", tmp_path / "old", "--format", "feat")


def test_extract_embeddings_same_detector_by_another_path_is_the_same_extraction(tmp_path, weights, lfw,
                                                                                 shared_models, monkeypatch):
    """The extraction recorded the detector as its path was typed: a rerun (or the rerun of a killed run) naming
    the same det_500m.onnx by another path was refused as "features of two models", though a gallery took them for
    one detector. Both now record FaceEmbedder.settings (the detector by name, with det_size, threshold and rescue);
    manifests and progress files of earlier versions still continue; another det_size is still refused."""
    root, names = lfw
    src = _copy_identities(root, names[:2], tmp_path / "in")  # 4 whole photos
    monkeypatch.chdir(shared_models.parent)
    relative, absolute = Path(shared_models.name) / "det_500m.onnx", (shared_models / "det_500m.onnx").resolve()
    argv = ["--weights", weights, "-i", src, "--device", "cpu", "--batch-size", "2"]
    feats = ["-o", tmp_path / "feats", "--format", "feat"]
    _extract(*argv, *feats, "--detector", relative)
    assert _extract(*argv, *feats, "--detector", absolute)["count"] == 4
    manifest = json.loads((tmp_path / "feats" / "manifest.json").read_text())
    assert manifest["settings"]["detector"] == {"model": "det_500m.onnx", "backend": "insightface", "det_size": 640,
                                                "threshold": 0.5, "rescue_threshold": 0.25, "antialias": True,
                                                "align_method": "eyes"}
    # a manifest written before (the detector's path as given, no rescue_threshold / antialias) still continues
    manifest["settings"]["detector"] = {"model": str(relative), "backend": "insightface", "det_size": 640,
                                        "threshold": 0.5}
    (tmp_path / "feats" / "manifest.json").write_text(json.dumps(manifest))
    assert _extract(*argv, *feats, "--detector", absolute)["count"] == 4
    assert json.loads((tmp_path / "feats" / "manifest.json").read_text())["settings"]["detector"]["antialias"] is True
    with pytest.raises(ValueError, match=r"another extraction \(settings.detector.det_size 640 there, 320 now\)"):
        _extract(*argv, *feats, "--detector", absolute, "--det-size", "320")
    # npz: a killed run continues under the other spelling; the npz names the settings as the manifest does
    _interrupted(monkeypatch, *argv, "-o", tmp_path / "e.npz", "--detector", relative)
    assert int(np.load(tmp_path / "e.partial.npz")["done"]) == 2
    _extract(*argv, "-o", tmp_path / "e.npz", "--detector", absolute)
    assert not (tmp_path / "e.partial.npz").exists()
    saved = np.load(tmp_path / "e.npz")
    current = json.loads((tmp_path / "feats" / "manifest.json").read_text())["settings"]
    assert len(saved["paths"]) == 4 and json.loads(str(saved["settings"])) == current
    # a progress file of an earlier version (its fingerprint over the flags as given) still continues
    args = extract_embeddings.get_args_parser().parse_args([str(a) for a in (*argv, "-o", tmp_path / "l.npz",
                                                                             "--detector", relative)])
    base, rels = extract_embeddings.collect_inputs(str(src))
    old = extract_embeddings._legacy_fingerprint(args, extract_embeddings._inputs(args, base, rels), manifest["weights"]["sha256"], False)
    extract_embeddings._save_progress(tmp_path / "l.partial.npz", old, saved["embeddings"][:2], 2, {})
    _extract(*argv, "-o", tmp_path / "l.npz", "--detector", relative)
    assert not (tmp_path / "l.partial.npz").exists()
    np.testing.assert_allclose(np.load(tmp_path / "l.npz")["embeddings"], saved["embeddings"], atol=1e-6)


def test_extract_embeddings_feat_rerun_removes_the_features_of_an_image_that_fails_now(tmp_path, weights, lfw):
    """An image embedded by a first run and unreadable in the second kept its first .feat file: listed as failed in
    failures.tsv, yet a reader of the folder found features for it (of an image that is no longer there)."""
    src = _aligned_crops(lfw, tmp_path / "crops", order=range(2))
    argv = ["--weights", weights, "-i", src, "--aligned", "--device", "cpu", "-o", tmp_path / "feats",
            "--format", "feat"]
    _extract(*argv)
    assert (tmp_path / "feats" / "01.feat").is_file()
    (src / "01.png").write_bytes(b"\x89PNG damaged")
    assert _extract(*argv)["count"] == 1
    assert (tmp_path / "feats" / "failures.tsv").read_text().startswith("01.png\t")
    assert not (tmp_path / "feats" / "01.feat").exists() and (tmp_path / "feats" / "00.feat").is_file()


def test_recognition_clis_take_the_detector_size_and_threshold(tmp_path, weights, lfw, shared_models, caplog):
    """extract_embeddings (and enroll, search, evaluate) ran their detector at a fixed det_size 640, at which a
    56-px face in a 4000-px photo is 9 px: missed, or at best a rescued 0.27 candidate; --det-size / --det-threshold
    (as build_lmdb has them) reach it."""
    root, names = lfw
    photo = cv2.imread(str(root / "images" / names[0] / f"{names[0]}_0001.jpg"))
    big = np.full((3000, 4000, 3), 90, np.uint8)
    big[1000:1150, 2000:2150] = photo
    (tmp_path / "in").mkdir()
    cv2.imwrite(str(tmp_path / "in" / "group.jpg"), big)
    det = shared_models / "det_500m.onnx"
    argv = ["--weights", weights, "-i", tmp_path / "in", "--detector", det, "--device", "cpu"]
    with caplog.at_level("WARNING"):
        assert _extract(*argv, "--det-size", "1280", "--det-threshold", "0.6", "-o", tmp_path / "b.npz")["count"] == 1
    assert "no face scored" not in caplog.text  # found at the detector's own threshold, not rescued
    expected = FaceEmbedder(weights, device="cpu", detector=str(det)).embed(photo, aligned=False)[0]
    assert float(np.load(tmp_path / "b.npz")["embeddings"][0] @ expected) > 0.9
    for cli in ("enroll", "search", "evaluate"):
        import importlib

        parser = importlib.import_module(f"pipelines.{cli}").get_args_parser()
        given = {"enroll": ["g", "p"], "search": ["g", "q"], "evaluate": ["--pairs", "p", "--images", "i"]}[cli]
        args = parser.parse_args([*given, "--det-size", "1280", "--det-threshold", "0.6"])
        assert extract_embeddings.detector_options(args) == {"det_size": 1280, "threshold": 0.6}


def test_extract_embeddings_follows_symlinked_folders_once(tmp_path, weights, lfw, caplog):
    """A symlinked identity folder was skipped without a word (build_lmdb follows them)."""
    crops = _aligned_crops(lfw, tmp_path / "crops")
    src = tmp_path / "in"
    (src / "real").mkdir(parents=True)
    (src / "real" / "00.png").write_bytes((crops / "00.png").read_bytes())
    (src / "linked").symlink_to(crops)
    (src / "linked_again").symlink_to(crops)  # a second link to the same folder
    (src / "real" / "loop").symlink_to(src)  # a symlink loop
    with caplog.at_level("WARNING"):
        out = _extract("--weights", weights, "-i", src, "--aligned", "--device", "cpu", "-o", tmp_path / "e.npz")
    paths = list(np.load(tmp_path / "e.npz")["paths"])
    assert out["count"] == 7 and paths == [f"linked/{k:02d}.png" for k in range(6)] + ["real/00.png"]
    assert "linked_again: folder already scanned as 'linked'" in caplog.text
    assert "real/loop: folder already scanned as '.'" in caplog.text


def test_extract_embeddings_list_keeps_a_hash_inside_a_path(tmp_path, weights, lfw):
    """``p/take#1.png`` was cut to ``p/take`` (a comment) and reported missing; build_lmdb reads it."""
    crops = _aligned_crops(lfw, tmp_path / "crops")
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "take#1.png").write_bytes((crops / "00.png").read_bytes())
    (tmp_path / "list.txt").write_text("# my takes\np/take#1.png 0\n")
    out = _extract("--weights", weights, "-i", tmp_path / "list.txt", "--aligned", "--device", "cpu",
                   "-o", tmp_path / "e.npz")
    assert out["count"] == 1 and not out["failed"]
    assert list(np.load(tmp_path / "e.npz")["paths"]) == ["p/take#1.png"]


def test_extract_embeddings_checks_the_output_before_embedding(tmp_path, monkeypatch):
    """``--format feat -o FILE`` embedded every image, then failed; ``-o feats/`` (npz) wrote feats.npz."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "0.png").write_bytes(b"not read")
    (tmp_path / "afile").write_text("keep me")
    (tmp_path / "dir.npz").mkdir()

    def no_model(*a, **k):
        raise AssertionError("the model was loaded before -o was checked")

    monkeypatch.setattr(extract_embeddings, "embedder_from_args", no_model)
    with pytest.raises(NotADirectoryError, match=r"afile is a file; --format feat writes one \.feat file per image"):
        _extract("-i", tmp_path / "in", "-o", tmp_path / "afile", "--format", "feat")
    for out in (f"{tmp_path / 'feats'}/", tmp_path / "dir.npz"):
        with pytest.raises(IsADirectoryError, match="names a folder; --format npz writes one file"):
            _extract("-i", tmp_path / "in", "-o", out)
    assert (tmp_path / "afile").read_text() == "keep me" and not (tmp_path / "feats").exists()


def test_extract_embeddings_in_bfloat16_matches_float32_and_is_another_extraction(tmp_path, lfw, shared_models):
    """``--precision bfloat16`` (the shipped recogniser): the same faces within cosine 0.999 of float32, and a progress
    file of one precision is not continued by the other."""
    root, names = lfw
    src = _copy_identities(root, names[:2], tmp_path / "in")
    argv = ["-i", str(src), "--detector", str(shared_models / "det_500m.onnx"), "--device", "cpu"]
    runs = {}
    for precision in ("float32", "bfloat16"):
        out = tmp_path / f"{precision}.npz"
        extract_embeddings.main(extract_embeddings.get_args_parser().parse_args(
            argv + ["--precision", precision, "-o", str(out)]))
        runs[precision] = np.load(out)
    assert list(runs["float32"]["paths"]) == list(runs["bfloat16"]["paths"]) and len(runs["float32"]["paths"]) == 4
    cosines = (runs["float32"]["embeddings"] * runs["bfloat16"]["embeddings"]).sum(1)
    assert cosines.min() > 0.999
    fingerprints = {}
    for precision in ("float32", "bfloat16"):
        args = extract_embeddings.get_args_parser().parse_args(argv + ["--precision", precision, "-o", "x.npz"])
        made_by = extract_embeddings._made_by(args, extract_embeddings.embedder_from_args(args, args.detector))
        assert made_by["settings"]["precision"] == precision
        fingerprints[precision] = extract_embeddings._fingerprint(extract_embeddings._inputs(args, src, ["a.jpg"]), made_by)
    assert fingerprints["float32"] != fingerprints["bfloat16"]


def test_bfloat16_on_a_cpu_without_native_bf16_warns_that_it_is_slow(monkeypatch, caplog):
    """The warning turns on the CPU's bf16 support, which is read from torch (set here both ways)."""
    for native in (False, True):
        for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
            monkeypatch.setattr(torch.cpu, name, lambda native=native: native)
        caplog.clear()
        with caplog.at_level("WARNING", logger="lightface.embed"):
            FaceEmbedder(device="cpu", precision="bfloat16")
        assert ("20 times slower" in caplog.text) is not native
    with pytest.raises(ValueError, match="precision must be one of"):
        FaceEmbedder(device="cpu", precision="float16")


def test_help_documents_defaults():
    from pipelines import enroll, search

    for mod in (evaluate, extract_embeddings, enroll, search):
        text = mod.get_args_parser().format_help()
        assert "default" in text and "--weights" in text and "--precision {float32,bfloat16}" in text
