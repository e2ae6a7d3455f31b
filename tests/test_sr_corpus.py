"""The super-resolution HR corpus (pipelines.build_sr_corpus) and 8x (16 -> 128) training."""
import json
import os

import cv2
import numpy as np
import pytest
import torch

from lightface.data import LMDBDataset
from lightface.data.align import template_points
from lightface.data.sr_corpus import alignment_scale, sr_corpus_sources
from synthetic_faces import write_smooth_faces  # tests/synthetic_faces.py (pytest puts tests/ on sys.path)


def test_alignment_scale():
    pts = template_points("lightcnn", 128)
    assert alignment_scale(pts) == pytest.approx(1.0, abs=1e-6)
    assert alignment_scale(pts / 2 + 7) == pytest.approx(2.0, abs=1e-6)  # a face half the template's size
    assert alignment_scale(pts * 3) == pytest.approx(1 / 3, abs=1e-6)


@pytest.fixture(scope="module")
def mini_shared(tmp_path_factory, shared_data):
    """A ../shared/data look-alike with 2 ids of cfp/, 1 of cfp_train/ and 4 CelebA people (symlinks)."""
    root = tmp_path_factory.mktemp("shared") / "data"
    for sub, ids in (("cfp", ("484", "485")), ("cfp_train", ("001",))):
        for folder in ("Images", "Fiducials"):
            (root / sub / folder).mkdir(parents=True)
            for i in ids:
                os.symlink(shared_data / sub / folder / i, root / sub / folder / i)
    lines = (shared_data / "celeba_ids" / "landmarks_5pt.txt").read_text().splitlines()
    people = sorted({line.split("/")[0] for line in lines if line.strip()})[:4]
    (root / "celeba_ids" / "images").mkdir(parents=True)
    for person in people:
        os.symlink(shared_data / "celeba_ids" / "images" / person, root / "celeba_ids" / "images" / person)
    kept = [line for line in lines if line.split("/")[0] in people]
    (root / "celeba_ids" / "landmarks_5pt.txt").write_text("\n".join(kept) + "\n")
    return root, people, len(kept)


def test_sr_corpus_lists(mini_shared, tmp_path):
    root, people, n_celeba = mini_shared
    made = sr_corpus_sources(root, tmp_path, val_ids=1, max_upscale=None)
    cfp = (tmp_path / "cfp.txt").read_text().splitlines()
    val = (tmp_path / "val.txt").read_text().splitlines()
    # frontal photos only: 10 per CFP identity; the last id of cfp/ is held out
    assert all("/frontal/" in line for line in cfp + [v for v in val if v.startswith("cfp")])
    assert len(cfp) == 20 and {line.split()[1] for line in cfp} == {"cfp/484", "cfp/001"}
    assert sum(v.startswith("cfp/") for v in val) == 10 and all("485" in v for v in val if v.startswith("cfp/"))
    # one CelebA person held out, the others train; every line has its 5 points
    celeba = (tmp_path / "celeba.txt").read_text().splitlines()
    assert len(celeba) + sum(v.startswith("celeba_ids/") for v in val) == n_celeba
    assert len({line.split()[1] for line in celeba}) == len(people) - 1
    marks = (tmp_path / "celeba_5pt.txt").read_text().splitlines()
    assert [m.split()[0] for m in marks] == [c.split()[0] for c in celeba] and len(marks[0].split()) == 11
    assert made["val"].images == len(val) and made["cfp"].too_small == 0
    # the upscale limit leaves out small faces (CelebA crops are small) and counts them
    strict = sr_corpus_sources(root, tmp_path / "strict", val_ids=1, max_upscale=1.25)
    assert strict["celeba"].too_small > 0
    assert strict["celeba"].images + strict["celeba"].too_small + sum(
        v.startswith("celeba_ids/") for v in (tmp_path / "strict" / "val.txt").read_text().splitlines()) == n_celeba
    with pytest.raises(ValueError, match="unknown SR corpus sources"):
        sr_corpus_sources(root, tmp_path, sources=("lfw",))


def test_sr_corpus_leaves_out_an_image_whose_fiducial_file_is_malformed(cfp_with_a_bad_fiducial_file, tmp_path, caplog):
    """One CFP fiducial file with 29 points stopped the whole SR corpus with an error that did not name it."""
    root, bad = cfp_with_a_bad_fiducial_file
    with caplog.at_level("WARNING", logger="lightface.data.pose_pairs"):
        sr_corpus_sources(root, tmp_path / "lists", sources=["cfp"], val_ids=0, max_upscale=None)
    listed = [line.split()[0] for line in (tmp_path / "lists" / "cfp.txt").read_text().splitlines()]
    assert len(listed) == 19 and f"cfp_train/Images/{bad}" not in listed
    assert "cfp_train/Images/001/frontal/01.jpg" in listed
    assert f"{bad.replace('.jpg', '.txt')}: CFP fiducials must be (30, 2), got (29, 2)" in caplog.text


def test_build_sr_corpus_pipeline(mini_shared, tmp_path, capsys):
    from pipelines._cli import run_cli
    from pipelines.build_sr_corpus import get_args_parser, main

    def cli(argv):
        return run_cli(main, get_args_parser, argv)

    root, _, _ = mini_shared
    assert cli(["--data", str(tmp_path / "no_data"), "--out", str(tmp_path / "x"), "--no-progress"]) == 1
    assert "CFP source" in capsys.readouterr().err
    out = tmp_path / "sr"
    assert cli(["--data", str(root), "--out", str(out), "--val-ids", "1", "--max-upscale", "1.5", "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert set(summary) == {"cfp", "celeba", "val"} and all(s["ok"] for s in summary.values())
    for name in ("cfp", "celeba", "val"):
        ds = LMDBDataset(str(out / f"{name}.lmdb"))
        assert len(ds) == summary[name]["kept_faces"] > 0
        img = ds[0]["image"]
        assert img.shape == (128, 128, 3) and img.dtype == np.uint8  # colour, 128 lightcnn crops
    # aligned to the Light CNN 128 template: the stored crop landmarks sit near the template points
    sample = LMDBDataset(str(out / "cfp.lmdb"))[0]
    assert sample["image"].std() > 10
    np.testing.assert_allclose(np.asarray(sample["landmarks"]).reshape(5, 2), template_points("lightcnn", 128),
                               atol=8.0)
    # a second run keeps the finished LMDBs; other options, or lists that changed, are refused, and --overwrite
    # rebuilds (the antialiased corpus was silently kept as the plain one before)
    argv = ["--data", str(root), "--out", str(out), "--val-ids", "1", "--max-upscale", "1.5", "--no-progress"]
    assert cli(argv) == 0
    assert all(s.get("nothing_to_do") for s in json.loads(capsys.readouterr().out).values())
    lists = {f.name: f.read_bytes() for f in (out / "lists").glob("*.txt")}
    for other in (["--antialias"], ["--max-upscale", "1.25"]):
        assert cli(argv + other) == 1
        assert "built from other images, labels, landmarks or options" in capsys.readouterr().err
        # the refused run's lists are taken back: the lists still describe the kept LMDBs
        assert {f.name: f.read_bytes() for f in (out / "lists").glob("*.txt")} == lists
    assert cli(argv + ["--antialias", "--overwrite"]) == 0
    rebuilt = json.loads(capsys.readouterr().out)
    assert all(s["written"] == s["kept_faces"] and not s.get("nothing_to_do") for s in rebuilt.values())
    assert LMDBDataset(str(out / "cfp.lmdb")).metadata["build"]["options"]["antialias"] is True
    # --template ffhq: the same photos in the wider FFHQ / CelebA-HQ framing (smaller faces, so fewer left out)
    wide = tmp_path / "sr_ffhq"
    assert cli(["--data", str(root), "--out", str(wide), "--val-ids", "1", "--max-upscale", "1.5", "--template", "ffhq",
                "--no-progress"]) == 0
    wide_summary = json.loads(capsys.readouterr().out)
    assert wide_summary["celeba"]["kept_faces"] >= summary["celeba"]["kept_faces"]
    sample = LMDBDataset(str(wide / "cfp.lmdb"))[0]
    np.testing.assert_allclose(np.asarray(sample["landmarks"]).reshape(5, 2), template_points("ffhq", 128), atol=8.0)


def test_scale8_forward_and_train_step():
    from lightface.losses.wavelet import WaveletSRLoss
    from lightface.models.discriminators import WaveletDiscriminator
    from lightface.models.wavelet_srnet import WaveletSRNet

    torch.manual_seed(0)
    G = WaveletSRNet(scale=8, output_size=128, channels=8, num_blocks=1, head_channels=8)
    assert G.input_size == 16 and G.levels == 3
    lr = torch.rand(2, 3, 16, 16)
    out = G(lr, return_all=True)
    assert out.sr.shape == (2, 3, 128, 128) and out.coeffs.shape == (2, 3 * 64, 16, 16)
    assert sorted(out.pyramid) == [1, 2, 4, 8] and out.pyramid[4].shape == (2, 3, 64, 64)
    hr = torch.rand(2, 3, 128, 128)
    loss, terms = WaveletSRLoss(G.levels)(out.coeffs, out.sr, hr)
    D = WaveletDiscriminator(channels=4, levels=2)
    loss = loss + 1e-3 * D(out.sr).mean()
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in G.parameters())
    opt = torch.optim.Adam(G.parameters(), 1e-3)
    before = G.heads[0][-1].weight.clone()
    opt.step()
    assert not torch.equal(before, G.heads[0][-1].weight)


def test_train_super_resolution_cli_scale8(tmp_path):
    """python -m pipelines.train_super_resolution --scale 8: 16 -> 128, then SuperResolver(scale=8) on it."""
    from lightface.restore.super_resolver import SuperResolver
    from pipelines._cli import run_cli
    from pipelines.train_super_resolution import get_args_parser, main

    data = write_smooth_faces(tmp_path / "hr", n=6, size=128)
    out = tmp_path / "run"
    argv = ["--data", str(data), "--out", str(out), "--scale", "8", "--hr-size", "128", "--channels", "8",
            "--num-blocks", "1", "--head-channels", "8", "--d-channels", "4", "--batch-size", "2", "--steps", "2",
            "--val-every", "2", "--save-every", "2", "--log-every", "1", "--workers", "0", "--val-count", "1",
            "--discriminator", "wavelet", "--identity-weights", "none", "--device", "cpu", "--no-tensorboard"]
    assert run_cli(main, get_args_parser, argv) == 0
    sr = SuperResolver(str(out / "model.pt"), device="cpu", scale=8)
    assert sr.scale == 8 and sr.input_size == 16
    face = sr.upscale_face(cv2.imread(str(data / "00.png"))[::8, ::8])
    assert face.shape == (128, 128, 3)


def test_build_sr_corpus_val_only_builds_the_heldout_lmdb_alone(mini_shared, tmp_path, capsys):
    """--val-only builds OUT/val.lmdb (what benchmarks.sr_quality / sr_robustness --heldout score) without the
    training LMDBs, from the same held-out faces as a full build, which then keeps it; a user who only wants to
    score a model had to build the whole corpus (no such flag)."""
    from pipelines._cli import run_cli
    from pipelines.build_sr_corpus import get_args_parser, main

    root, _, _ = mini_shared
    argv = ["--data", str(root), "--out", str(tmp_path / "sr"), "--val-ids", "1", "--max-upscale", "1.5",
            "--no-progress"]
    assert run_cli(main, get_args_parser, argv + ["--val-only"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert set(summary) == {"val"} and summary["val"]["ok"] and summary["val"]["kept_faces"] > 0
    assert sorted(p.name for p in (tmp_path / "sr").glob("*.lmdb")) == ["val.lmdb"]
    assert not any((tmp_path / "sr" / "lists" / f"{name}.txt").exists() for name in ("cfp", "celeba"))
    val = LMDBDataset(str(tmp_path / "sr" / "val.lmdb"))
    assert len(val) == summary["val"]["kept_faces"] and val[0]["image"].shape == (128, 128, 3)
    # the held-out faces a full build chooses: the full build keeps this val.lmdb and adds the training LMDBs
    assert run_cli(main, get_args_parser, argv) == 0
    full = json.loads(capsys.readouterr().out)
    assert full["val"].get("nothing_to_do") and full["cfp"]["ok"] and full["celeba"]["ok"]
    assert run_cli(main, get_args_parser, argv + ["--val-only", "--val-ids", "0"]) == 1
    assert "--val-ids" in capsys.readouterr().err


def test_build_sr_corpus_takes_the_quality_of_a_lossy_encoding(mini_shared, tmp_path, capsys):
    """--encoding jpeg / webp stored every face at quality 95 whatever the user wanted: build_corpus and
    build_pose_corpus take --quality, build_sr_corpus had no such flag."""
    from pipelines._cli import run_cli
    from pipelines.build_sr_corpus import get_args_parser, main

    root, _, _ = mini_shared
    assert run_cli(main, get_args_parser, ["--data", str(root), "--out", str(tmp_path / "sr"), "--val-ids", "1",
                                           "--val-only", "--encoding", "webp", "--quality", "60", "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["val"]["ok"]
    options = LMDBDataset(str(tmp_path / "sr" / "val.lmdb")).metadata["build"]["options"]
    assert options["encoding"] == "webp" and options["quality"] == 60
