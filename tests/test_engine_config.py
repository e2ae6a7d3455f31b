"""lightface.engine.config (config dataclasses, YAML) and pipelines._cli (flags generated from them, --config,
Ctrl-C)."""
import argparse
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lightface.engine.config import ConfigError, config_to_dict, load_config, save_config
from pipelines._cli import RERUN_HINT, RESUME_FLAG_HINT, parse_with_config, run_cli

ROOT = Path(__file__).resolve().parents[1]


def _parser():
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--epochs", type=int, default=80)
    p.add_argument("--loss", choices=["ce", "soft-bootstrap"], default="ce")
    p.add_argument("--amp", action="store_true")
    p.add_argument("--milestones", type=int, nargs="+", default=[10, 20])
    return p


def _write(tmp_path, data, name="run.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def test_without_config_is_plain_argparse():
    args = parse_with_config(_parser(), ["--data", "x", "--lr", "0.5"])
    assert args.data == "x" and args.lr == 0.5 and args.epochs == 80 and args.config is None


def test_yaml_sets_values_and_flags_override(tmp_path):
    cfg = _write(tmp_path, {"data": "from_yaml", "lr": 0.1, "epochs": 3, "amp": True, "milestones": [1, 2, 3]})
    args = parse_with_config(_parser(), ["--config", str(cfg), "--epochs", "7"])
    assert args.data == "from_yaml"  # required flag satisfied by the file
    assert args.lr == 0.1 and args.amp is True and args.milestones == [1, 2, 3]
    assert args.epochs == 7  # explicit flag wins
    assert args.config == str(cfg)


def test_dashed_keys_and_string_conversion(tmp_path):
    p = _parser()
    p.add_argument("--lr-gamma", type=float, default=0.5)
    cfg = _write(tmp_path, {"data": "d", "lr-gamma": "0.25"})
    args = parse_with_config(p, ["--config", str(cfg)])
    assert args.lr_gamma == 0.25


def test_parser_is_left_unchanged(tmp_path):
    p = _parser()
    cfg = _write(tmp_path, {"data": "d", "lr": 0.3})
    parse_with_config(p, ["--config", str(cfg)])
    args = parse_with_config(p, ["--data", "e"])
    assert args.lr == 0.01
    with pytest.raises(SystemExit):  # --data required again without the file
        parse_with_config(p, [])


def test_unknown_key_is_a_clear_error(tmp_path):
    cfg = _write(tmp_path, {"data": "d", "epoch": 3})
    with pytest.raises(ConfigError, match=r"unknown config key.*'epoch'.*did you mean 'epochs'"):
        parse_with_config(_parser(), ["--config", str(cfg)])


@pytest.mark.parametrize(
    "data, match",
    [
        ({"data": "d", "loss": "focal"}, "not one of"),
        ({"data": "d", "lr": "fast"}, "invalid value"),
        ({"data": "d", "epochs": [1, 2]}, "takes one value"),
        ({"data": "d", "config": "other.yaml"}, "cannot be set"),
        ({"data": "d", "epochs": 1.5}, "key 'epochs' expects a whole number, found 1.5"),
        ({"data": "d", "lr": True}, "key 'lr' expects a number, found True"),
        ({"data": "d", "milestones": [1, 2.5]}, "key 'milestones' expects a whole number, found 2.5"),
    ],
)
def test_bad_values(tmp_path, data, match):
    cfg = _write(tmp_path, data)
    with pytest.raises(ConfigError, match=match):
        parse_with_config(_parser(), ["--config", str(cfg)])


def test_a_yaml_value_of_a_trainer_flag_is_reported_against_the_file(tmp_path, capsys):
    """``epochs: 1.5`` in a --config file names that file (it said "command line"); 2.0 is 2; a bad flag names the flag."""
    from pipelines import train_lightcnn

    cfg = _write(tmp_path, {"data": "x", "out": str(tmp_path / "o"), "epochs": 1.5})
    assert run_cli(train_lightcnn.main, train_lightcnn.get_args_parser, ["--config", str(cfg)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"python -m pipelines.train_lightcnn: error: {cfg}: key 'epochs' expects a whole number, found 1.5"
    cfg = _write(tmp_path, {"data": "x", "out": "o", "epochs": 2.0})
    args = parse_with_config(train_lightcnn.get_args_parser(), ["--config", str(cfg)])
    assert args.epochs == 2 and isinstance(args.epochs, int)
    with pytest.raises(SystemExit):
        parse_with_config(train_lightcnn.get_args_parser(), ["--data", "x", "--out", "o", "--epochs", "1.5"])
    assert "argument --epochs: invalid int value: '1.5'" in capsys.readouterr().err


_CTRL_C_CHILD = """
import argparse, signal, sys, time
from pipelines._cli import run_cli
signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal (a background job starts ignoring SIGINT)
def get_args_parser():
    parser = argparse.ArgumentParser("pipe")
    if "--resume" in sys.argv:
        parser.add_argument("--resume", action="store_true")
    return parser
def main(args):
    print("working", flush=True)
    time.sleep(60)
hint = {"interrupted_hint": sys.argv[1]} if sys.argv[1] else {}
sys.exit(run_cli(main, get_args_parser, sys.argv[2:], **hint))
"""


@pytest.mark.parametrize("hint, argv, expected", [
    ("", [], "run the same command again to finish (a pipeline whose --help says it resumes skips the work done)"),
    ("", ["--resume"], RESUME_FLAG_HINT),
    (RERUN_HINT, [], RERUN_HINT),
])
def test_ctrl_c_in_a_pipeline_says_how_to_continue_without_a_traceback(hint, argv, expected):
    """A real SIGINT to a ``run_cli`` pipeline: one line on stderr saying how to continue, exit status 130."""
    env = {k: v for k, v in os.environ.items() if k != "LIGHTFACE_DEBUG"}  # it would log the traceback
    proc = subprocess.Popen([sys.executable, "-c", _CTRL_C_CHILD, hint, *argv], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "working\n", proc.communicate()[1]
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert (proc.returncode, err.strip()) == (130, f"pipe: interrupted: {expected}")


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(tmp_path / "list.yaml")
    (tmp_path / "broken.yaml").write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "broken.yaml")
    (tmp_path / "empty.yaml").write_text("")
    assert load_config(tmp_path / "empty.yaml") == {}


def test_save_config_round_trip(tmp_path):
    from pathlib import Path

    p = _parser()
    args = parse_with_config(p, ["--data", "d", "--lr", "0.2", "--amp", "--milestones", "4", "5"])
    args.data = Path("some/folder")  # paths are written as strings
    out = save_config(args, tmp_path / "run" / "config.yaml")
    saved = load_config(out)
    assert saved == {"data": "some/folder", "lr": 0.2, "epochs": 80, "loss": "ce", "amp": True, "milestones": [4, 5]}
    again = parse_with_config(_parser(), ["--config", str(out)])
    assert config_to_dict(again) == saved


@pytest.mark.parametrize("module, data, message", [
    ("search", {"gallery": "g", "queries": ["q.jpg"], "top": 0}, "key 'top': invalid value 0 (must be a positive integer, got 0)"),
    ("extract_embeddings", {"save_every": -1}, "key 'save_every': invalid value -1 (must be a positive integer, got -1)"),
    ("evaluate", {"pairs": "p.txt", "images": "i", "folds": 1}, "key 'folds': invalid value 1 (must be an integer >= 2"),
    ("enroll", {"duplicate_threshold": 1.5}, "key 'duplicate_threshold': invalid value 1.5"),
])
def test_a_yaml_number_gets_the_check_of_its_flag(tmp_path, module, data, message):
    """A value from --config gets the same check as the same value given as a flag (``--top 0`` is refused by
    argparse; ``top: 0`` in a file reached the search and failed there, ``save_every: -1`` ran)."""
    import importlib

    parser = importlib.import_module(f"pipelines.{module}").get_args_parser()
    cfg = _write(tmp_path, data)
    with pytest.raises(ConfigError, match=re.escape(f"{cfg}: {message}")):
        parse_with_config(parser, ["--config", str(cfg)])


def test_yaml_numbers_of_checked_flags_still_load(tmp_path):
    from pipelines import evaluate, search

    cfg = _write(tmp_path, {"gallery": "g", "queries": ["q.jpg"], "top": 3.0, "threshold": 1})
    args = parse_with_config(search.get_args_parser(), ["--config", str(cfg)])
    assert args.top == 3 and isinstance(args.top, int) and args.threshold == 1.0
    cfg = _write(tmp_path, {"pairs": "p.txt", "images": "i", "folds": 5})
    assert parse_with_config(evaluate.get_args_parser(), ["--config", str(cfg)]).folds == 5


def test_an_explicit_flag_replaces_the_files_value_of_an_exclusive_flag(tmp_path):
    """evaluate --landmarks | --detector exclude each other: an explicit --detector replaces the file's landmarks
    (the run used the landmarks and ignored the flag); a file giving both is refused, as argparse refuses both flags."""
    from pipelines import evaluate

    cfg = _write(tmp_path, {"pairs": "p.txt", "images": "i", "landmarks": "lm.txt"})
    args = parse_with_config(evaluate.get_args_parser(), ["--config", str(cfg), "--detector", "det.onnx"])
    assert (args.landmarks, args.detector) == (None, "det.onnx")
    args = parse_with_config(evaluate.get_args_parser(), ["--config", str(cfg)])
    assert (args.landmarks, args.detector) == ("lm.txt", None)
    both = _write(tmp_path, {"pairs": "p.txt", "images": "i", "landmarks": "lm.txt", "detector": "det.onnx"}, "both.yaml")
    with pytest.raises(ConfigError, match=re.escape(f"{both}: keys 'landmarks' and 'detector' cannot be set together")):
        parse_with_config(evaluate.get_args_parser(), ["--config", str(both)])


def test_yaml_null_and_resume_true_are_reported_against_the_file(tmp_path, capsys):
    """``lr: null`` was blamed on "command line"; ``resume: true`` (a bare --resume in YAML) was refused."""
    from pipelines import train_lightcnn

    cfg = _write(tmp_path, {"data": "x", "out": str(tmp_path / "o"), "lr": None})
    assert run_cli(train_lightcnn.main, train_lightcnn.get_args_parser, ["--config", str(cfg)]) == 2
    assert capsys.readouterr().err.strip().endswith(f"error: {cfg}: key 'lr' cannot be null (default: 0.01); leave "
                                                     "the key out for the default")
    cfg = _write(tmp_path, {"data": "x", "out": "o", "resume": True, "margin": None})
    args = parse_with_config(train_lightcnn.get_args_parser(), ["--config", str(cfg)])
    assert args.resume == "auto" and args.margin is None  # an Optional setting takes null
    cfg = _write(tmp_path, {"data": "x", "out": "o", "arch": True})
    with pytest.raises(ConfigError, match=re.escape(f"{cfg}: key 'arch' expects text, found True")):
        parse_with_config(train_lightcnn.get_args_parser(), ["--config", str(cfg)])


def test_saved_configs_name_every_input_file_absolutely(tmp_path, monkeypatch):
    """config.yaml of each trainer names its existing input files and folders absolutely, so that
    ``--config OUT/config.yaml --resume`` from another folder finds them; names that are not paths
    (shipped entries, 'yunet') stay as given."""
    from lightface.engine.frontal_trainer import FrontalTrainConfig

    monkeypatch.chdir(tmp_path)
    (tmp_path / "pose.lmdb").mkdir()
    (tmp_path / "judge.pt").write_bytes(b"weights")
    (tmp_path / "det.onnx").write_bytes(b"onnx")
    cfg = FrontalTrainConfig(data="pose.lmdb", out="runs/x", ip_extra_judges=["judge.pt", "recognition"],
                             pose_detector="det.onnx")
    saved = config_to_dict(cfg, absolute_paths=True)
    assert saved["data"] == str(tmp_path / "pose.lmdb")
    assert saved["ip_extra_judges"] == [str(tmp_path / "judge.pt"), "recognition"]
    assert saved["pose_detector"] == str(tmp_path / "det.onnx")
    cfg.pose_detector = "yunet"
    assert config_to_dict(cfg, absolute_paths=True)["pose_detector"] == "yunet"


def test_saved_configs_keep_names_that_a_same_named_file_would_turn_into_paths(tmp_path, monkeypatch):
    """A setting that is a name or a path is stored as the trainer reads it: with a file or folder named ``dlib``,
    ``none``, ``yunet``, ``sr4`` or ``lightcnn9`` in the current folder, config.yaml stored that path, and the run
    reloaded from it read another thing (``--distill dlib`` failed: 'no /abs/dlib teacher embeddings'; ``none``
    turned the identity network on); ``yunet:det.onnx`` kept its relative file, missing from any other folder."""
    from lightface.engine.frontal_trainer import FrontalTrainConfig
    from lightface.engine.lightcnn_trainer import TrainConfig
    from lightface.engine.sr_trainer import SRTrainConfig

    monkeypatch.chdir(tmp_path)
    for name in ("dlib", "none", "yunet", "emb.npy", "det.onnx", "judge.pt", "ckpt.pt"):
        (tmp_path / name).write_bytes(b"x")
    for name in ("lightcnn9", "sr4"):
        (tmp_path / name).mkdir()
    saved = config_to_dict(TrainConfig(data="d", out="o", distill="dlib", finetune="lightcnn9"), absolute_paths=True)
    assert (saved["distill"], saved["finetune"]) == ("dlib", "lightcnn9")
    saved = config_to_dict(TrainConfig(data="d", out="o", distill="emb.npy", finetune="ckpt.pt"), absolute_paths=True)
    assert (saved["distill"], saved["finetune"]) == (str(tmp_path / "emb.npy"), str(tmp_path / "ckpt.pt"))
    saved = config_to_dict(SRTrainConfig(data=["d"], out="o", finetune="sr4", identity_weights="none"),
                           absolute_paths=True)
    assert (saved["finetune"], saved["identity_weights"]) == ("sr4", "none")
    saved = config_to_dict(FrontalTrainConfig(data="d", out="o", identity_weights="judge.pt", pose_detector="yunet",
                                              ip_extra_judges=["off", "judge.pt"]), absolute_paths=True)
    assert saved["identity_weights"] == str(tmp_path / "judge.pt") and saved["pose_detector"] == "yunet"
    assert saved["ip_extra_judges"] == ["off", str(tmp_path / "judge.pt")]
    saved = config_to_dict(FrontalTrainConfig(data="d", out="o", pose_detector="yunet:det.onnx"), absolute_paths=True)
    assert saved["pose_detector"] == f"yunet:{tmp_path / 'det.onnx'}"


def test_another_trainers_config_is_refused_for_its_unknown_keys(tmp_path):
    """train_lightcnn's config.yaml given to train_super_resolution failed on ``scale: 30`` (the margin's logit
    scale there, the upscaling factor here: 'key scale: 30 is not one of 2, 4, 8, 16'), not on its keys that the
    trainer does not have."""
    from pipelines import train_super_resolution

    cfg = _write(tmp_path, {"data": "x.lmdb", "out": "o", "arch": "lightcnn9", "scale": 30.0, "lr_step": 10})
    with pytest.raises(ConfigError, match=re.escape(f"{cfg}: unknown config key(s) 'arch', 'lr_step'")):
        parse_with_config(train_super_resolution.get_args_parser(), ["--config", str(cfg)])
