"""The demo's quick mode end to end: every step runs and the report links what it produced."""
import json
import re
from pathlib import Path

import pytest

from pipelines import demo
from tests.conftest import SHARED


def _run(tmp_path: Path, shared: Path):
    args = demo.get_args_parser().parse_args(["--quick", "--out", str(tmp_path / "out"), "--shared", str(shared)])
    return demo.main(args)


def _check_report(result):
    assert result["failures"] == {}
    report = Path(result["report"])
    text = report.read_text()
    for target in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text):  # every picture the report shows exists
        assert (report.parent / target).is_file(), target
    results = json.loads((report.parent / "results.json").read_text())
    assert results["dataset"]["samples"] > 0 and results["dataset"]["classes"] > 1
    assert results["embeddings"]["dim"] == 256
    assert 0.0 <= results["embeddings"]["rank1"] <= 1.0
    assert results["super_resolution"]["psnr_sr"] > 10.0
    assert Path(result["html"]).read_text().startswith("<!doctype html>")
    return results


@pytest.mark.slow
def test_demo_quick_on_shared_data(tmp_path, shared_data):
    results = _check_report(_run(tmp_path, SHARED))
    assert "LFW" in results["dataset"]["source"]
    assert results["frontalization"]["frontalized"] > 0
    from lightface.models import list_pretrained

    if list_pretrained("recognition"):  # the shipped recogniser, scored on held-out LFW people
        assert 0.5 <= results["shipped_recognition"]["lfw_dev"]["accuracy"] <= 1.0
        assert 0.0 <= results["shipped_recognition"]["whole_photo_rank1"] <= 1.0


@pytest.mark.slow
def test_demo_quick_without_any_data(tmp_path):
    """A fresh offline machine without ../shared: bundled faces, frontalization skipped with a reason."""
    results = _check_report(_run(tmp_path, tmp_path / "no-shared"))
    assert "bundled" in results["dataset"]["source"]
    assert "skipped" in results["frontalization"]
