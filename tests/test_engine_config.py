"""lightface.engine.config (config dataclasses, YAML) and pipelines._cli (flags generated from them, --config)."""
import argparse

import pytest
import yaml

from lightface.engine.config import ConfigError, config_to_dict, load_config, save_config
from pipelines._cli import parse_with_config


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
    ],
)
def test_bad_values(tmp_path, data, match):
    cfg = _write(tmp_path, data)
    with pytest.raises(ConfigError, match=match):
        parse_with_config(_parser(), ["--config", str(cfg)])


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
