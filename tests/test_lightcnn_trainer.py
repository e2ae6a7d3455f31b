"""Light CNN training: recipe pieces, a tiny real run on ORL faces, exact resume, NaN stop,
fine-tuning, relabelling and (slow) a 2-process torchrun run on the CPU."""
import json
import re
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from lightface.engine.checkpoint import load_checkpoint
from pipelines._cli import parse_with_config
from lightface.engine.lightcnn_trainer import (
    NonFiniteLossError,
    TrainConfig,
    TrainingError,
    build_param_groups,
    init_weights,
    stratified_split,
)
from lightface.engine.logger import read_metrics
from lightface.models import get_model

from lightcnn_tiny import ARCH as TINY  # tests/lightcnn_tiny.py (pytest puts tests/ on sys.path)

ROOT = Path(__file__).resolve().parents[1]

# 3 ORL identities x 3 images, 144x144 gray PNG: 9 samples -> 5 steps of 2 per epoch
IDENTITIES, PER_ID, BATCH = 3, 3, 2


def _build(shared_data, out, ids, per_id, first=1):
    from lightface.data.build import build_lmdb

    lst = out.with_suffix(".txt")
    lines = [f"{shared_data / 'orl_faces' / f's{i}' / f'{j}.pgm'} {label}"
             for label, i in enumerate(ids) for j in range(first, first + per_id)]
    lst.write_text("\n".join(lines) + "\n")
    build_lmdb(lst, out, size=144, progress=False)
    return out


@pytest.fixture(scope="module")
def tiny_lmdb(shared_data, tmp_path_factory):
    return _build(shared_data, tmp_path_factory.mktemp("data") / "orl_tiny.lmdb", range(1, IDENTITIES + 1), PER_ID)


def _args(data, out, *extra):
    from pipelines.train_lightcnn import get_args_parser

    sources = [str(d) for d in data] if isinstance(data, (list, tuple)) else [str(data)]  # several: one per source
    argv = ["--data", *sources, "--out", str(out), "--batch-size", str(BATCH), "--workers", "0", "--epochs", "2",
            "--log-every", "1", "--no-tensorboard", *map(str, extra)]
    return parse_with_config(get_args_parser(), argv)


def _train(data, out, *extra):
    from pipelines.train_lightcnn import main

    return main(_args(data, out, *extra))


def _losses(run):
    return [(r["step"], r["loss"]) for r in read_metrics(Path(run) / "metrics.jsonl") if "loss" in r]


@pytest.fixture(scope="module")
def tiny_run(tiny_lmdb, shared_data, tmp_path_factory):
    """One short real LightCNN-9 run (1 epoch, held-out validation) shared by several tests."""
    out = tmp_path_factory.mktemp("runs") / "tiny"
    pairs = out.parent / "pairs.txt"  # held-out ORL images: 2 same + 2 different pairs per fold's worth
    pairs.write_text("1 s1/7.pgm s1/8.pgm\n1 s2/7.pgm s2/8.pgm\n1 s3/7.pgm s3/9.pgm\n"
                     "0 s1/7.pgm s2/8.pgm\n0 s2/7.pgm s3/8.pgm\n0 s3/7.pgm s1/9.pgm\n")
    summary = _train(tiny_lmdb, out, "--val-split", "0.34", "--lr", "0.001", "--epochs", "1", "--val-pairs", pairs,
                     "--val-pairs-root", shared_data / "orl_faces")
    return out, summary


# ---------------------------------------------------------------------------------------
def test_param_groups_follow_the_recipe():
    model = get_model("lightcnn9", num_classes=10)
    groups = {g["name"]: g for g in build_param_groups(model, lr=0.01, weight_decay=1e-4)}
    assert groups["backbone_weight"]["lr"] == pytest.approx(0.01) and groups["backbone_weight"]["weight_decay"] == 1e-4
    # the authors' train.py: every bias but fc2's at 2 x lr, no decay
    assert groups["backbone_bias"]["lr"] == pytest.approx(0.02) and groups["backbone_bias"]["weight_decay"] == 0.0
    assert groups["backbone_bias"]["lr_mult"] == 2.0
    assert groups["classifier_weight"]["lr"] == pytest.approx(0.1) and groups["classifier_weight"]["weight_decay"] == 1e-4
    assert groups["classifier_bias"]["lr"] == pytest.approx(0.2) and groups["classifier_bias"]["weight_decay"] == 0.0
    assert groups["classifier_weight"]["params"] == [model.classifier.weight]
    n = sum(len(g["params"]) for g in groups.values())
    assert n == len(list(model.parameters()))
    v2 = {g["name"] for g in build_param_groups(get_model("lightcnn29v2", num_classes=5), 0.01, 1e-4)}
    assert "classifier_bias" not in v2  # 29v2's classifier has no bias
    bias = {g["name"]: g for g in build_param_groups(model, 0.01, 1e-4, bias_lr_mult=1.0)}["backbone_bias"]
    assert bias["lr"] == pytest.approx(0.01) and bias["lr_mult"] == 1.0


def test_init_weights():
    torch.manual_seed(0)
    model = get_model("lightcnn9", num_classes=10)
    classifier = model.classifier.weight.detach().clone()
    assert init_weights(model, "default") is model and torch.equal(model.classifier.weight, classifier)
    init_weights(model, "kaiming")
    w = model.features[2].conv.filter.weight  # 3x3 conv, fan_in 48 * 9
    assert abs(w.std().item() * (48 * 9) ** 0.5 - 1.0) < 0.05
    assert float(model.fc1.filter.bias.detach().abs().sum()) == 0.0
    assert torch.equal(model.classifier.weight, classifier)  # the classifier keeps its default init
    with pytest.raises(ValueError, match="unknown init"):
        init_weights(model, "orthogonal")


@pytest.mark.parametrize("arch", ["lightcnn29", "lightcnn29v2"])
def test_kaiming_init_starts_residual_blocks_as_identity(arch, shared_data):
    """Without normalisation layers, unit-gain residual branches blew LightCNN-29v2's logits up
    to a standard deviation of ~1,100 at init; zeroed last convs keep them near LightCNN-9's."""
    import cv2

    from lightface.models.lightcnn import MFMResBlock

    torch.manual_seed(0)
    model = init_weights(get_model(arch, num_classes=500), "kaiming").eval()
    faces = sorted((shared_data / "orl_faces").glob("s*/1.pgm"))[:16]
    x = torch.stack([torch.from_numpy(cv2.resize(cv2.imread(str(f), cv2.IMREAD_GRAYSCALE), (128, 128)))
                     for f in faces]).unsqueeze(1).float().div(255)
    with torch.no_grad():
        logits, _ = model(x, return_logits=True)
    assert torch.isfinite(logits).all() and logits.std() < 20
    assert torch.nn.functional.cross_entropy(logits, torch.zeros(len(x), dtype=torch.long)) < 3 * np.log(500)
    blocks = [m for m in model.modules() if isinstance(m, MFMResBlock)]
    assert len(blocks) == 10 and all(torch.count_nonzero(b.conv2.filter.weight) == 0 for b in blocks)
    assert all(torch.count_nonzero(b.conv1.filter.weight) > 0 for b in blocks)  # only the last conv starts at zero


def test_stratified_split():
    labels = np.repeat(np.arange(5), [1, 2, 3, 10, 4])
    train, val = stratified_split(labels, 0.3, seed=1)
    assert len(np.intersect1d(train, val)) == 0 and len(train) + len(val) == len(labels)
    per_class_val = np.bincount(labels[val], minlength=5)
    assert per_class_val.sum() == 6  # 30% of 20
    assert per_class_val[0] == 0 and per_class_val[3] == 3  # a singleton stays in training; 10 give their 3
    assert all(np.bincount(labels[train], minlength=5) >= 1)  # every class keeps a photo for training
    assert np.array_equal(stratified_split(labels, 0.3, seed=1)[1], val)
    assert len(stratified_split(labels, 0.0)[1]) == 0
    three = np.repeat(np.arange(3), 3)  # a few large classes: each gives its rounded share
    assert np.bincount(three[stratified_split(three, 0.34)[1]]).tolist() == [1, 1, 1]


@pytest.mark.parametrize("fraction", [0.02, 0.1])
def test_validation_split_of_many_small_classes_holds_out_the_fraction_asked_for(shared_data, fraction):
    """LFW's training people (most with 2-4 photos): --val-split 0.02 held out one photo of every person
    with two or more, 1,493 of 6,845 photos (22%), and took them all from training."""
    counts = [int(line.split("\t")[1]) for line in (shared_data / "lfw_train" / "people_folds.txt").read_text().splitlines()
              if line and not line.startswith("#")]
    labels = np.repeat(np.arange(len(counts)), counts)
    train, val = stratified_split(labels, fraction, seed=0)
    assert len(val) == round(fraction * len(labels))
    share = fraction * np.bincount(labels)
    given = np.bincount(labels[val], minlength=len(counts))
    assert np.all((given >= np.floor(share)) & (given <= np.ceil(share)))  # each person its share, rounded
    assert np.all(np.bincount(labels[train], minlength=len(counts)) >= 1)
    assert not np.array_equal(val, stratified_split(labels, fraction, seed=1)[1])


def test_a_validation_split_that_holds_out_no_photo_is_refused_before_training(shared_data, tmp_path, capsys):
    """One photo per person (or a fraction under one photo): the run trained a whole epoch, then failed in its
    validation with 'the dataset is empty'."""
    from pipelines._cli import run_cli
    from pipelines.train_lightcnn import get_args_parser, main

    data = _build(shared_data, tmp_path / "singletons.lmdb", range(1, 5), 1)
    argv = ["--data", str(data), "--out", str(tmp_path / "run"), "--arch", TINY, "--val-split", "0.3", "--workers", "0",
            "--batch-size", "2", "--epochs", "1", "--no-tensorboard", "--no-plots"]
    assert run_cli(main, get_args_parser, argv) == 2
    err = capsys.readouterr().err
    assert "--val-split 0.3 holds out no photo of the 4" in err and "--val-data" in err
    assert not (tmp_path / "run" / "last.pt").exists()


def test_several_training_lmdbs_validate_on_one_validation_lmdb_each(shared_data, tmp_path, caplog):
    """Two sources (ORL people 1-3 and 4-6, photos 1-3) validated on their photos 4-5: --val-data took one LMDB,
    and no single LMDB could hold two sources' classes whose names repeat (named 'a:0', 'b:0' for training)."""
    data = [_build(shared_data, tmp_path / f"{name}.lmdb", ids, 3) for name, ids in (("a", (1, 2, 3)), ("b", (4, 5, 6)))]
    val = [_build(shared_data, tmp_path / f"{name}_val.lmdb", ids, 2, first=4)
           for name, ids in (("a", (1, 2, 3)), ("b", (4, 5, 6)))]
    argv = ["--data", *map(str, data), "--out", str(tmp_path / "run"), "--arch", TINY, "--batch-size", "3",
            "--workers", "0", "--epochs", "1", "--no-tensorboard", "--no-plots", "--val-data", *map(str, val)]
    from pipelines.train_lightcnn import get_args_parser, main

    with caplog.at_level("INFO"):
        summary = main(parse_with_config(get_args_parser(), argv))
    assert "val_acc" in summary and any("18 samples, 6 classes, 12 val samples" in r.getMessage() for r in caplog.records)
    saved = (tmp_path / "run" / "config.yaml").read_text()
    assert str(val[1]) in saved
    with pytest.raises(TrainingError, match=r"one validation LMDB per --data LMDB \(2, in the same order\), not 1"):
        main(parse_with_config(get_args_parser(), argv[:-1] + ["--overwrite"]))
    two = _build(shared_data, tmp_path / "b_two_val.lmdb", (4, 5), 2, first=4)
    with pytest.raises(TrainingError, match="validation LMDB 2 has 2 classes, training LMDB 2 3$"):
        main(parse_with_config(get_args_parser(), argv[:-1] + [str(two), "--overwrite"]))


def test_a_validation_lmdb_among_the_training_lmdbs_is_refused(shared_data, tmp_path):
    """--val-data naming one of the --data LMDBs (itself, or through a symlink) validated on training photos, so
    val_acc and best.pt measured memorisation; it is refused before training, naming both flags."""
    data = [_build(shared_data, tmp_path / f"{name}.lmdb", ids, 3) for name, ids in (("a", (1, 2, 3)), ("b", (4, 5, 6)))]
    (tmp_path / "b_link.lmdb").symlink_to(data[1], target_is_directory=True)
    from pipelines.train_lightcnn import get_args_parser, main

    for val in ([data[0], data[1]], [data[0], tmp_path / "b_link.lmdb"]):
        argv = ["--data", *map(str, data), "--out", str(tmp_path / "run"), "--arch", TINY, "--batch-size", "3",
                "--workers", "0", "--epochs", "1", "--no-tensorboard", "--no-plots", "--overwrite",
                "--val-data", *map(str, val)]
        with pytest.raises(TrainingError, match=r"--val-data .* is also given as --data .*validation would measure "
                                                r"training images"):
            main(parse_with_config(get_args_parser(), argv))
    assert not (tmp_path / "run" / "last.pt").exists()


def test_a_resumed_run_keeps_the_photos_it_held_out(shared_data, tmp_path, caplog):
    """6 ORL people x 2 photos, --val-split 0.2: 2 photos held out (the earlier rule: 6, one per person). A run
    keeps its held-out photos on --resume, one saved before they were (by the earlier rule) too."""
    data = _build(shared_data, tmp_path / "pairs.lmdb", range(1, 7), 2)
    out = tmp_path / "run"

    def held_out(*extra):
        caplog.clear()
        with caplog.at_level("INFO"):
            _train(data, out, "--arch", TINY, "--val-split", "0.2", "--no-plots", "--batch-size", "2", *extra)
        return [int(m.group(1)) for r in caplog.records for m in [re.search(r"(\d+) val samples", r.getMessage())] if m]

    assert held_out("--max-steps", "1") == [2]
    first = load_checkpoint(out / "last.pt")["val_indices"].tolist()
    assert held_out("--max-steps", "2", "--resume") == [2]
    assert load_checkpoint(out / "last.pt")["val_indices"].tolist() == first
    ckpt = torch.load(out / "last.pt", weights_only=True)  # as a run saved before the held-out photos were
    del ckpt["val_indices"], ckpt["num_samples"]
    torch.save(ckpt, out / "last.pt")
    assert held_out("--max-steps", "3", "--resume") == [6]


def test_resuming_with_the_training_lmdbs_in_another_order_is_refused(shared_data, tmp_path):
    """--data b a on --resume of a run of --data a b: each classifier row trained on as another person, with
    nothing but the warning that the run would not reproduce."""
    a, b = (_build(shared_data, tmp_path / f"{name}.lmdb", ids, 2) for name, ids in (("a", (1, 2, 3)), ("b", (4, 5, 6))))
    from pipelines.train_lightcnn import get_args_parser, main

    def train(data, *extra):
        argv = ["--data", *map(str, data), "--out", str(tmp_path / "run"), "--arch", TINY, "--batch-size", "2",
                "--workers", "0", "--no-tensorboard", "--no-plots", *extra]
        return main(parse_with_config(get_args_parser(), argv))

    train([a, b], "--max-steps", "1")
    with pytest.raises(TrainingError, match=rf"same classes in another order .*; resume with --data {a} {b}"):
        train([b, a], "--max-steps", "2", "--resume")
    with pytest.raises(TrainingError, match="6 of its 6 classes are not in --data, which has 3"):
        train([a], "--max-steps", "2", "--resume")
    assert train([a, b], "--max-steps", "2", "--resume")["step"] == 2


def test_config_errors_name_the_flag(tmp_path):
    with pytest.raises(TrainingError, match="--batch-size must be > 0"):
        TrainConfig(data="x", out="y", batch_size=0).validate()
    with pytest.raises(TrainingError, match="--classifier-only-epochs needs --finetune"):
        TrainConfig(data="x", out="y", classifier_only_epochs=2).validate()
    with pytest.raises(TrainingError, match="unknown training settings"):
        TrainConfig.from_dict({"data": "x", "learning_rate": 1})
    with pytest.raises(TrainingError, match="LMDB not found"):
        _train(tmp_path / "missing.lmdb", tmp_path / "run")


@pytest.mark.parametrize("settings, message", [
    ({"arch": "wavelet_srnet"}, "--arch wavelet_srnet is not a recogniser .*; use .*lightcnn9"),
    ({"arch": "image_discriminator"}, "--arch image_discriminator is not a recogniser"),
    ({"dropout": 1.5}, r"--dropout must be in \[0, 1\], got 1.5"),
    ({"lr_gamma": -1.0}, r"--lr-gamma \(step decay factor\) must be in \(0, 1\]"),
    ({"lr_gamma": 0.0}, "--lr-gamma"),
    ({"classifier_lr_mult": -5.0}, "--classifier-lr-mult must be >= 0"),
    ({"classifier_bias_lr_mult": -1.0}, "--classifier-bias-lr-mult must be >= 0"),
    ({"beta": 0.5}, "--beta is for --loss soft-bootstrap or hard-bootstrap, not 'ce'"),
    ({"beta": 0.5, "loss": "cosface"}, "--beta is for --loss"),
])
def test_settings_that_cannot_work_are_refused_naming_the_flag(settings, message):
    """A non-recogniser --arch, an out-of-range --dropout, a negative or zero lr factor (gradient ascent or a
    frozen run) and a --beta the loss ignores are refused before training, as --margin with --loss ce is."""
    with pytest.raises(TrainingError, match=message):
        TrainConfig(data="x", out="y", **settings).validate()
    TrainConfig(data="x", out="y", beta=0.5, loss="hard-bootstrap", lr_gamma=1.0, dropout=1.0).validate()


def test_a_non_recogniser_arch_exits_2_in_one_line_before_the_run_folder(tiny_lmdb, tmp_path, capsys):
    from pipelines._cli import run_cli
    from pipelines.train_lightcnn import get_args_parser, main

    argv = ["--data", str(tiny_lmdb), "--out", str(tmp_path / "run"), "--arch", "wavelet_srnet"]
    assert run_cli(main, get_args_parser, argv) == 2
    err = capsys.readouterr().err
    assert "--arch wavelet_srnet is not a recogniser" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_a_changed_validation_split_on_resume_is_a_warning(tiny_lmdb, tmp_path, caplog):
    """--val-split decides which images are trained on: changing it on resume warns like --data does."""
    out = tmp_path / "run"
    _train(tiny_lmdb, out, "--arch", TINY, "--val-split", "0.34", "--max-steps", "1", "--no-plots")
    with caplog.at_level("INFO"):
        _train(tiny_lmdb, out, "--arch", TINY, "--val-split", "0", "--epochs", "1", "--no-plots", "--resume")
    warned = [r for r in caplog.records if "val_split" in r.getMessage()]
    assert warned and warned[0].levelname == "WARNING" and "will not reproduce" in warned[0].getMessage()


def test_resuming_with_the_saved_config_from_another_folder_changes_no_setting(tiny_lmdb, tmp_path, monkeypatch,
                                                                               caplog):
    """docs/training.md's `--config OUT/config.yaml --resume` of a run started with relative paths warned 'data is
    [/abs/x.lmdb] now, [x.lmdb] in the interrupted run; the run will not reproduce the uninterrupted one' (and logged
    out as changed): config.yaml holds the paths absolute, the checkpoint held them as typed."""
    from pipelines.train_lightcnn import get_args_parser, main

    (tmp_path / "other").mkdir()
    monkeypatch.chdir(tiny_lmdb.parent)
    _train(tiny_lmdb.name, tmp_path / "run", "--arch", TINY, "--max-steps", "1", "--no-plots")
    monkeypatch.chdir(tmp_path / "other")
    args = parse_with_config(get_args_parser(), ["--config", "../run/config.yaml", "--resume", "--max-steps", "2"])
    with caplog.at_level("INFO"):
        assert main(args)["step"] == 2
    changed = [r.getMessage() for r in caplog.records if "in the interrupted run" in r.getMessage()]
    assert changed == ["--resume: max_steps is 2 now, 1 in the interrupted run"]


def test_tiny_run_outputs(tiny_run, tiny_lmdb):
    out, summary = tiny_run
    assert summary["stopped"] == "completed" and summary["step"] == 3  # 6 training samples / batch 2
    for name in ("config.yaml", "last.pt", "best.pt", "model.pt", "metrics.jsonl", "curves.png"):
        assert (out / name).is_file(), name
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["format"] == "lightface" and ckpt["arch"] == "lightcnn9"
    assert ckpt["model_kwargs"]["num_classes"] == IDENTITIES and ckpt["epoch"] == 1 and ckpt["step"] == 3
    for key in ("optimizers", "schedulers", "scaler", "config", "rng", "classes"):
        assert key in ckpt, key
    assert ckpt["config"]["batch_size"] == BATCH and ckpt["config"]["loss"] == "ce"
    records = read_metrics(out / "metrics.jsonl")
    assert {"loss", "lr", "epoch", "train_acc"} <= set(records[0])
    val = [r for r in records if "val_acc" in r][-1]
    assert 0 <= val["val_acc"] <= 1 and 0 <= val["val_verification_acc"] <= 1 and "val_auc" in val
    assert summary["best_metric_name"] == "val_verification_acc" and summary["best_metric"] == val["val_verification_acc"]
    # loadable by get_model(weights=) and FaceEmbedder
    model = get_model("lightcnn9", weights=str(out / "best.pt")).eval()
    assert model.classifier.out_features == IDENTITIES
    from lightface import FaceEmbedder

    emb = FaceEmbedder(str(out / "last.pt"), device="cpu").embed(torch.rand(2, 1, 128, 128))
    assert emb.shape == (2, 256) and np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)


def test_images_per_second_count_training_not_validation(tiny_lmdb, tmp_path, monkeypatch):
    """A slow validation (2,043 held-out photos of the real corpus took 4 of a run's 5 minutes) made the summary
    report 0.43 images/s for steps that ran at 4, and the first log line after each validation far too few; the
    short last batch of an epoch counted as a whole one."""
    from lightface.engine.lightcnn_trainer import LightCNNTask

    validate = LightCNNTask.validate

    def slow_validation(self):
        time.sleep(3.0)
        return validate(self)

    monkeypatch.setattr(LightCNNTask, "validate", slow_validation)
    out = tmp_path / "run"  # 6 training photos in batches of 4 and 2: 2 steps an epoch
    summary = _train(tiny_lmdb, out, "--arch", TINY, "--val-split", "0.34", "--batch-size", "4", "--no-plots")
    assert summary["train_seconds"] <= summary["seconds"] - 6.0  # two validations
    assert summary["images_per_s"] * summary["train_seconds"] == pytest.approx(12)  # 2 epochs x 6 photos
    speed = {r["step"]: r.get("images_per_s") for r in read_metrics(out / "metrics.jsonl") if "loss" in r}
    assert speed[3] > 0.2 * speed[2]  # step 3 comes after epoch 0's validation (3 s: under 1.5 images/s)


def test_config_file_reproduces_the_run(tiny_run):
    out, _ = tiny_run
    from pipelines.train_lightcnn import get_args_parser

    args = parse_with_config(get_args_parser(), ["--config", str(out / "config.yaml"), "--epochs", "5"])
    assert args.val_split == 0.34 and args.lr == 0.001 and args.epochs == 5 and args.resume is None


def test_resume_reproduces_the_uninterrupted_losses(tiny_lmdb, tmp_path):
    # 9 samples, batch 3: 3 steps per epoch; interrupted mid-epoch 2, resumed
    opts = ("--arch", TINY, "--loss", "soft-bootstrap", "--lr-step", "1", "--batch-size", "3")
    full = tmp_path / "full"
    _train(tiny_lmdb, full, *opts)
    part = tmp_path / "part"
    first = _train(tiny_lmdb, part, *opts, "--max-steps", "4")
    assert first["stopped"] == "max_steps=4" and load_checkpoint(part / "last.pt")["batch_in_epoch"] == 1
    _train(tiny_lmdb, part, *opts, "--resume")
    expected = _losses(full)
    assert len(expected) == 6
    assert _losses(part) == expected  # exact float equality, step by step
    a, b = load_checkpoint(full / "last.pt"), load_checkpoint(part / "last.pt")
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])


def test_a_run_from_before_bias_lr_mult_resumes_with_the_multiplier_it_trained_with(tiny_lmdb, tmp_path):
    """--bias-lr-mult (the authors' 2 x lr on the backbone biases) is 2 for new runs; a run saved before the flag
    existed (its biases at 1 x lr, no bias_lr_mult in its settings) resumes exactly as it trained, its settings
    say so, and asking for another multiplier on --resume is refused."""
    opts = ("--arch", TINY, "--lr-step", "1", "--batch-size", "3", "--no-plots")
    full = tmp_path / "full"
    _train(tiny_lmdb, full, *opts, "--bias-lr-mult", "1")
    old = tmp_path / "old"
    _train(tiny_lmdb, old, *opts, "--bias-lr-mult", "1", "--max-steps", "4")
    ckpt = load_checkpoint(old / "last.pt")  # as an earlier version saved it: no bias_lr_mult setting
    del ckpt["config"]["bias_lr_mult"]
    torch.save(ckpt, old / "last.pt")
    _train(tiny_lmdb, old, *opts, "--resume")
    assert _losses(old) == _losses(full)  # the biases kept 1 x lr, step by step
    saved = load_checkpoint(old / "last.pt")
    assert saved["config"]["bias_lr_mult"] == 1.0
    assert {g["name"]: g["lr_mult"] for g in saved["optimizers"]["model"]["param_groups"]}["backbone_bias"] == 1.0
    with pytest.raises(TrainingError, match="resume without --bias-lr-mult"):
        _train(tiny_lmdb, old, *opts, "--epochs", "3", "--bias-lr-mult", "2", "--resume")
    # a new run: the recipe's 2
    _train(tiny_lmdb, tmp_path / "new", *opts, "--max-steps", "1")
    fresh = load_checkpoint(tmp_path / "new" / "last.pt")
    assert fresh["config"]["bias_lr_mult"] == 2.0
    assert {g["name"]: g["lr_mult"] for g in fresh["optimizers"]["model"]["param_groups"]}["backbone_bias"] == 2.0


def test_a_changed_schedule_takes_effect_on_resume(tiny_lmdb, tmp_path):
    # 5 steps per epoch; halved every epoch until step 7, then --lr-step 2: the lr is the new schedule's
    # at the position reached (epoch 1: no drop yet, epoch 2: one drop), not the old one continued
    opts = ("--arch", TINY, "--lr", "0.01", "--lr-gamma", "0.5", "--epochs", "3", "--no-plots")
    out = tmp_path / "run"
    _train(tiny_lmdb, out, *opts, "--lr-step", "1", "--max-steps", "7")
    _train(tiny_lmdb, out, *opts, "--lr-step", "2", "--resume")
    lrs = {r["step"]: r["lr"] for r in read_metrics(out / "metrics.jsonl") if "loss" in r}
    assert [lrs[s] for s in (5, 6, 7, 8, 10, 11, 15)] == pytest.approx([0.01, 0.005, 0.005, 0.01, 0.01, 0.005, 0.005])
    assert load_checkpoint(out / "last.pt")["schedulers"]["model"]["step_size"] == 2


def test_identity_grouped_batches_resume_exactly(tiny_lmdb, tmp_path):
    # --samples-per-identity 3 with batch 3 and 3 photos per person: every batch is one person;
    # the grouped order is used, saved in the config and replayed exactly on --resume
    opts = ("--arch", TINY, "--lr-step", "1", "--batch-size", "3", "--samples-per-identity", "3", "--no-plots")
    full = tmp_path / "full"
    _train(tiny_lmdb, full, *opts)
    assert load_checkpoint(full / "last.pt")["config"]["samples_per_identity"] == 3
    _train(tiny_lmdb, tmp_path / "plain", *opts[:-3], "--no-plots")
    assert _losses(tmp_path / "plain") != _losses(full)  # the grouped order is in use
    part = tmp_path / "part"
    _train(tiny_lmdb, part, *opts, "--max-steps", "4")
    _train(tiny_lmdb, part, *opts, "--resume")
    assert _losses(part) == _losses(full)
    with pytest.raises(TrainingError, match="--samples-per-identity must be 0"):
        TrainConfig(data="x", out="y", samples_per_identity=1).validate()


def test_workers_do_not_change_the_losses(tiny_lmdb, tmp_path):
    opts = ("--arch", TINY, "--batch-size", "3", "--no-plots")
    _train(tiny_lmdb, tmp_path / "w0", *opts, "--workers", "0")
    _train(tiny_lmdb, tmp_path / "w2", *opts, "--workers", "2")  # per-sample seeded augmentation in worker processes
    assert _losses(tmp_path / "w0") == _losses(tmp_path / "w2")


def test_sigterm_to_the_process_group_saves_and_the_run_resumes(tiny_lmdb, tmp_path):
    """What a scheduler's preemption or `timeout` does: SIGTERM to the trainer and its DataLoader workers.
    The workers must not die under the main process: it finishes the step, saves, and exits 143 (128 + 15)."""
    from stop_signal_helper import sigterm_after

    out = tmp_path / "run"
    rc, log = sigterm_after([ROOT / "tests" / "lightcnn_tiny.py", "--arch", TINY, "--data", tiny_lmdb, "--out", out,
                             "--batch-size", BATCH, "--workers", 2, "--epochs", 10000, "--log-every", 1,
                             "--no-tensorboard", "--no-plots", "--device", "cpu"], out / "metrics.jsonl", 3)
    assert rc == 143, log
    assert "stopped by SIGTERM at step" in log and "--resume" in log and "exited unexpectedly" not in log, log
    step = load_checkpoint(out / "last.pt")["step"]
    assert step == _losses(out)[-1][0] >= 3 and load_checkpoint(out / "model.pt")["step"] == step
    _train(tiny_lmdb, out, "--arch", TINY, "--epochs", "10000", "--max-steps", step + 2, "--resume")
    assert [s for s, _ in _losses(out)] == list(range(1, step + 3))


KEEP_ERROR = """
import sys
sys.path.insert(0, {tests!r})
import lightcnn_tiny  # registers the tiny network
from pipelines._cli import parse_with_config
from pipelines.train_lightcnn import get_args_parser, main
from lightface.engine.engine import NonFiniteLossError
try:
    main(parse_with_config(get_args_parser(), {argv!r}))
except NonFiniteLossError as err:
    kept = err  # kept until exit: its traceback holds the training loop's frame
print("caught", type(kept).__name__)
"""


def test_a_run_that_breaks_with_loader_workers_exits_even_if_the_error_is_kept(tiny_lmdb, tmp_path):
    """A script that catches the trainer's error and keeps it (its traceback holds the epoch's batch
    iterator) must still exit: the loader's workers, which ignore the stop signals, are shut down when
    the loop ends, not left for the interpreter's exit to terminate (they would ignore that SIGTERM too,
    and the exit would wait for them forever)."""
    import subprocess
    import sys

    argv = ["--data", str(tiny_lmdb), "--out", str(tmp_path / "run"), "--arch", TINY, "--batch-size", str(BATCH),
            "--workers", "1", "--epochs", "5", "--lr", "1e12", "--momentum", "0", "--no-tensorboard"]
    script = KEEP_ERROR.format(tests=str(Path(__file__).parent), argv=argv)
    try:
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        pytest.fail("the process did not exit after the trainer's error (its loader worker was left running)")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "caught NonFiniteLossError" in done.stdout


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tiny_lmdb, tmp_path):
    with pytest.raises(NonFiniteLossError, match="last good checkpoint"):
        _train(tiny_lmdb, tmp_path / "nan", "--arch", TINY, "--lr", "1e12", "--momentum", "0", "--save-every", "1", "--epochs", "5")
    ckpt = load_checkpoint(tmp_path / "nan" / "last.pt")
    bad_step = len(_losses(tmp_path / "nan")) + 1
    assert ckpt["step"] == bad_step - 1
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())


def test_finetune_classifier_only_then_all(tiny_lmdb, shared_data, tmp_path):
    src = tmp_path / "src"
    _train(tiny_lmdb, src, "--arch", TINY, "--epochs", "1")
    other = _build(shared_data, tmp_path / "other.lmdb", [11, 12], 2)  # 2 other identities
    out = tmp_path / "ft"
    _train(other, out, "--arch", TINY, "--finetune", src / "last.pt", "--classifier-only-epochs", "1", "--epochs", "1")
    before, after = load_checkpoint(src / "last.pt")["state_dict"], load_checkpoint(out / "last.pt")["state_dict"]
    assert after["classifier.weight"].shape == (2, 256)
    backbone = [k for k in after if not k.startswith("classifier.")]
    assert all(torch.equal(before[k], after[k]) for k in backbone)  # frozen during the classifier-only stage
    _train(other, out, "--arch", TINY, "--finetune", src / "last.pt", "--classifier-only-epochs", "1", "--epochs", "2",
           "--resume")
    again = load_checkpoint(out / "last.pt")["state_dict"]
    assert not all(torch.equal(before[k], again[k]) for k in backbone)  # then everything trains


def _lfw_lmdb(shared_data, out, align_method, people=3):
    """The first ``people`` LFW identities (10 photos each), cropped from their landmarks by ``align_method``."""
    from lightface.data.build import build_lmdb

    root = shared_data / "lfw_identities"
    names = sorted(p.name for p in (root / "images").iterdir() if p.is_dir())[:people]
    lst = out.with_suffix(".txt")
    lst.write_text("".join(f"{f} {label}\n" for label, n in enumerate(names) for f in sorted((root / "images" / n).glob("*.jpg"))))
    build_lmdb(lst, out, size=144, landmarks=root / "landmarks_5pt.txt", align_method=align_method, progress=False)
    return out


def test_a_model_trained_on_eyes_crops_is_embedded_with_eyes_crops(shared_data, tiny_lmdb, tmp_path, caplog):
    """A corpus built with ``build_lmdb --align-method eyes`` (the original Light CNN crops) gives a checkpoint that
    records it, so FaceEmbedder(align_method="auto") crops whole photos as the model was trained, and an ONNX
    export carries it; least-squares corpora record "similarity", unaligned ones (ORL, resized) nothing, and
    LMDBs cropped by different methods are refused before the run, naming each one's method."""
    from lightface import FaceEmbedder
    from lightface.export import OnnxRecognizer, export_onnx

    eyes = _lfw_lmdb(shared_data, tmp_path / "eyes.lmdb", "eyes")
    out = tmp_path / "run"
    _train(eyes, out, "--arch", TINY, "--epochs", "1")
    for name in ("last.pt", "model.pt"):
        assert load_checkpoint(out / name)["align_method"] == "eyes", name
        assert FaceEmbedder(str(out / name), device="cpu").align_method == "eyes", name
    assert FaceEmbedder(str(out / "last.pt"), device="cpu", align_method="similarity").align_method == "similarity"
    onnx = export_onnx(str(out / "model.pt"), tmp_path / "run.onnx")
    assert OnnxRecognizer(onnx).card["align_method"] == "eyes"

    similarity = _lfw_lmdb(shared_data, tmp_path / "similarity.lmdb", "similarity")
    _train(similarity, tmp_path / "sim", "--arch", TINY, "--epochs", "1", "--max-steps", "1")
    assert load_checkpoint(tmp_path / "sim" / "last.pt")["align_method"] == "similarity"
    _train(tiny_lmdb, tmp_path / "orl", "--arch", TINY, "--epochs", "1", "--max-steps", "1")
    assert "align_method" not in load_checkpoint(tmp_path / "orl" / "last.pt")  # not aligned by lightface
    assert FaceEmbedder(str(tmp_path / "orl" / "last.pt"), device="cpu").align_method == "similarity"
    _train([eyes, tiny_lmdb], tmp_path / "eyes_orl", "--arch", TINY, "--epochs", "1", "--max-steps", "1")
    assert load_checkpoint(tmp_path / "eyes_orl" / "last.pt")["align_method"] == "eyes"

    with pytest.raises(TrainingError, match=r"different alignment methods.*eyes\.lmdb: eyes.*similarity\.lmdb: similarity"
                                            r".*--align-method"):
        _train([eyes, similarity], tmp_path / "mixed", "--arch", TINY, "--epochs", "1")
    assert not (tmp_path / "mixed" / "last.pt").exists()
    with caplog.at_level("WARNING"):
        _train(eyes, tmp_path / "val", "--arch", TINY, "--epochs", "1", "--max-steps", "1", "--val-data", similarity)
    assert "--val-data" in caplog.text and "'similarity'" in caplog.text and "--align-method eyes" in caplog.text


def test_finetune_of_another_arch_names_the_arch_flag(tiny_lmdb, tmp_path):
    """--finetune of a checkpoint of another architecture than --arch (an official 29v2 release with the default
    --arch lightcnn9) is refused before training, naming the --arch to pass, not library calls."""
    from lightface.models.checkpoint import save_model_checkpoint

    src = save_model_checkpoint(tmp_path / "src.pt", get_model(TINY, num_classes=0), TINY, {"num_classes": 0})
    with pytest.raises(TrainingError, match=f"holds a '{TINY}' model but --arch is 'lightcnn9'.*--arch {TINY}"):
        _train(tiny_lmdb, tmp_path / "ft", "--finetune", src, "--epochs", "1")
    assert not (tmp_path / "ft" / "last.pt").exists()


def test_margin_loss_trains_a_cosine_classifier_and_finetunes_from_softmax(tiny_lmdb, tmp_path):
    """--loss cosface: the model gets a CosineClassifier (kept in the checkpoint's model_kwargs, so
    --resume and FaceEmbedder rebuild it); --finetune from a softmax run keeps the backbone and
    starts a new cosine classifier, since a linear one cannot be reused."""
    from lightface import FaceEmbedder
    from lightface.models.lightcnn import CosineClassifier

    src = tmp_path / "src"
    _train(tiny_lmdb, src, "--arch", TINY, "--epochs", "1")
    out = tmp_path / "cos"
    summary = _train(tiny_lmdb, out, "--arch", TINY, "--finetune", src / "last.pt", "--loss", "cosface",
                     "--margin", "0.2", "--scale", "16", "--dropout", "0", "--epochs", "1")
    assert summary["stopped"] == "completed"
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["model_kwargs"]["cosine_classifier"] is True
    assert set(k for k in ckpt["state_dict"] if k.startswith("classifier.")) == {"classifier.weight"}
    losses = [loss for _, loss in _losses(out)]
    assert all(np.isfinite(losses)) and losses[0] > 0
    before = load_checkpoint(src / "last.pt")["state_dict"]
    assert not torch.equal(before["classifier.weight"], ckpt["state_dict"]["classifier.weight"])
    model = get_model(TINY, **ckpt["model_kwargs"])
    model.load_state_dict(ckpt["state_dict"])
    assert isinstance(model.classifier, CosineClassifier)
    logits, _ = model.eval()(torch.rand(2, 1, 128, 128), return_logits=True)
    assert logits.abs().max() <= 1 + 1e-5  # cosines
    emb = FaceEmbedder(out / "model.pt", device="cpu").embed_tensor(torch.rand(2, 1, 128, 128))
    assert emb.shape == (2, 256)
    _train(tiny_lmdb, out, "--arch", TINY, "--finetune", src / "last.pt", "--loss", "cosface", "--margin", "0.2",
           "--scale", "16", "--dropout", "0", "--epochs", "2", "--resume")  # the cosine classifier resumes
    assert load_checkpoint(out / "last.pt")["step"] > ckpt["step"]
    with pytest.raises(TrainingError, match="--margin is for --loss cosface or arcface"):
        TrainConfig(data="x", out="y", margin=0.3).validate()


def test_relabel_end_to_end(tiny_run, tiny_lmdb, tmp_path):
    from lightface.data import LMDBDataset
    from pipelines.relabel import get_args_parser, main

    src, _ = tiny_run
    out = tmp_path / "relabelled.lmdb"
    args = get_args_parser().parse_args(["--data", str(tiny_lmdb), "--weights", str(src / "last.pt"), "--out", str(out),
                                         "--threshold", "0.3", "--device", "cpu"])
    report = main(args)
    counts = report["counts"]
    assert sum(counts.values()) == IDENTITIES * PER_ID and report["written"] == counts["kept"] + counts["relabelled"]
    new = LMDBDataset(out)
    assert len(new) == report["written"] and new.classes == LMDBDataset(tiny_lmdb).classes
    saved = json.loads((out / "relabel_report.json").read_text())
    assert saved["counts"] == counts
    rows = (out / "relabel_changes.csv").read_text().strip().splitlines()
    assert len(rows) - 1 == counts["relabelled"] + counts["dropped"]
    with pytest.raises(FileExistsError):
        main(args)


@pytest.mark.slow
def test_torchrun_two_cpu_processes(tiny_lmdb, tmp_path):
    """Two CPU ranks: both RNG states saved, rank 0 alone writes the metrics and the info lines (rank 1 does
    not repeat "saved best.pt" or "finished", which it did not do)."""
    from torchrun_helper import log_dir, run_torchrun

    out = tmp_path / "ddp"
    run_torchrun([ROOT / "tests" / "lightcnn_tiny.py", "--arch", TINY, "--data", tiny_lmdb, "--out", out,
                  "--batch-size", "4", "--epochs", "1", "--workers", "0", "--log-every", "1", "--no-tensorboard",
                  "--device", "cpu", "--val-split", "0.34"], tmp_path)
    logs = "".join(path.read_text(errors="replace") for path in log_dir(tmp_path).rglob("*.log"))
    assert logs.count("(saved best.pt)") == 1 and logs.count("finished: {") == 1, logs
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["step"] == 2 and len(ckpt["rng"]) == 2  # 6 samples / global batch 4 (2 per rank); both RNGs saved
    records = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in records if "loss" in r] == [1, 2]  # rank 0 only writes
    assert any("val_acc" in r for r in records)
    get_model(TINY, weights=str(out / "last.pt"))


@pytest.mark.slow
def test_sigterm_to_torchrun_stops_every_rank_after_one_step_and_the_run_resumes(tiny_lmdb, tmp_path):
    """A scheduler's SIGTERM to the launcher: torchrun forwards it to both ranks, they agree on the
    step to stop after, save it (both RNG states) and exit; the same command with --resume goes on."""
    from stop_signal_helper import logged_steps
    from torchrun_helper import finish, run_torchrun, start_torchrun

    out = tmp_path / "ddp"
    cmd = [ROOT / "tests" / "lightcnn_tiny.py", "--arch", TINY, "--data", tiny_lmdb, "--out", out, "--batch-size", "4",
           "--epochs", "10000", "--workers", "0", "--log-every", "1", "--no-tensorboard", "--no-plots", "--device", "cpu"]
    proc = start_torchrun(cmd, tmp_path)
    deadline = time.monotonic() + 300
    while logged_steps(out / "metrics.jsonl") < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, _, logs = finish(proc, tmp_path, timeout=180, ok_codes=range(-64, 256))  # its own status: the logs tell
    stops = re.findall(r"stopped by SIGTERM at step (\d+)", logs)
    assert len(stops) >= 1 and len(set(stops)) == 1, logs  # rank 0 says so; every rank stopped at that step
    step = int(stops[0])
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["step"] == step == _losses(out)[-1][0] >= 3 and len(ckpt["rng"]) == 2, logs
    (tmp_path / "resumed").mkdir()
    run_torchrun(cmd + ["--resume", "--max-steps", step + 2], tmp_path / "resumed")
    assert [s for s, _ in _losses(out)] == list(range(1, step + 3))
