"""lightface.engine.logger: JSONL metrics, the progress line, PNG curves."""
import errno
import json
import logging
import math
import re
from pathlib import Path

import pytest
import torch

from lightface.engine.logger import MetricLogger, plot_metrics, read_metrics


def test_jsonl_records_and_log_line(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="lightface.engine.logger")
    with MetricLogger(tmp_path / "run", total_steps=10, batch_size=32, tensorboard=False) as logger:
        logger.log(1, epoch=0, loss=torch.tensor(2.5), l_ce=2.4, lr=0.01)
        logger.log(3, epoch=1, loss=1.5, l_ce=1.25, lr=0.005, top1=0.5)
        logger.log(3, val_acc=0.75)
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 3, 3]
    assert records[0]["loss"] == 2.5 and records[1]["l_ce"] == 1.25 and records[2]["val_acc"] == 0.75
    assert "images_per_s" not in records[0] and records[1]["images_per_s"] > 0
    line = caplog.records[1].getMessage()
    assert line.startswith("epoch 1 step 3/10 | ")
    assert "img/s" in line and "loss 1.5000 l_ce 1.2500" in line and "top1 0.5000" in line
    assert "lr 5.00e-03" in line and "eta 0:" in line


def test_disabled_logger_writes_nothing(tmp_path):
    logger = MetricLogger(tmp_path / "run", enabled=False)
    assert logger.log(1, loss=1.0) == {}
    logger.close()
    assert not (tmp_path / "run").exists()


def test_bad_metric_values(tmp_path):
    with MetricLogger(tmp_path, tensorboard=False) as logger:
        with pytest.raises(TypeError, match="'name'"):
            logger.log(1, name="abc")
        with pytest.raises(ValueError, match="scalar"):
            logger.log(1, loss=torch.ones(3))


def test_resume_truncates_the_interrupted_tail(tmp_path):
    with MetricLogger(tmp_path, tensorboard=False) as logger:
        for step in range(1, 6):
            logger.log(step, loss=float(step))
    with MetricLogger(tmp_path, tensorboard=False, truncate_after=3) as logger:
        logger.log(4, loss=40.0)
    assert [(r["step"], r["loss"]) for r in read_metrics(tmp_path / "metrics.jsonl")] == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 40.0)]


def test_nan_is_recorded(tmp_path):
    with MetricLogger(tmp_path, tensorboard=False) as logger:
        logger.log(1, loss=float("nan"))
    assert math.isnan(read_metrics(tmp_path / "metrics.jsonl")[0]["loss"])


def test_plot_metrics(tmp_path):
    with MetricLogger(tmp_path, tensorboard=False, batch_size=4) as logger:
        for step in range(1, 8):
            logger.log(step, loss=1.0 / step, lr=0.1 * 0.5**step, epoch=step // 3)
            if step % 3 == 0:
                logger.log(step, val_acc=step / 10)
    (tmp_path / "metrics.jsonl").open("a").write('{"step": 9, "loss"')  # torn last line is skipped
    out = plot_metrics(tmp_path / "metrics.jsonl", tmp_path / "plots" / "curves.png")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    with pytest.raises(ValueError, match="no metrics"):
        (tmp_path / "empty.jsonl").write_text(json.dumps({"step": 1}) + "\n")
        plot_metrics(tmp_path / "empty.jsonl", tmp_path / "x.png")


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (a device that is always full)")
def test_a_full_disk_names_the_metrics_file_and_close_does_not_fail_again(tmp_path):
    """flush()'s own ENOSPC names no file; the logger's error does, and close() (the engine's clean-up) does not
    raise the same error again in place of it."""
    (tmp_path / "metrics.jsonl").symlink_to("/dev/full")
    logger = MetricLogger(tmp_path, tensorboard=False)
    with pytest.raises(OSError, match=f"cannot write {re.escape(str(tmp_path / 'metrics.jsonl'))}: No space left") as err:
        logger.log(1, loss=0.5)
    assert err.value.errno == errno.ENOSPC
    logger.close()
