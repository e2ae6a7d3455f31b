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
    report = (tmp_path / "out" / "report.md").read_text()
    assert re.search(r"^\| frontalization \| [0-9.]+ \| skipped: no CFP", report, re.M), report[:600]


def test_a_folder_the_demo_did_not_write_is_refused_and_nothing_in_it_is_deleted(tmp_path):
    out = tmp_path / "results"
    out.mkdir()
    (out / "important.txt").write_text("precious")
    with pytest.raises(demo.OutputFolderError, match="--keep"):
        demo.prepare_output_folder(out, keep=False, data=None)
    assert (out / "important.txt").read_text() == "precious"
    demo.prepare_output_folder(out, keep=True, data=None)  # --keep writes beside the user's files
    assert (out / "important.txt").is_file() and (out / demo.OUTPUT_MARKER).is_file()


def test_an_earlier_demo_output_is_cleared(tmp_path):
    marked, legacy = tmp_path / "marked", tmp_path / "legacy"
    demo.prepare_output_folder(marked, keep=False, data=None)
    (marked / "old.png").write_bytes(b"x")
    legacy.mkdir()
    for name in ("report.md", "results.json", "old.png"):  # a finished demo from before the marker
        (legacy / name).write_text("{}")
    for out in (marked, legacy):
        demo.prepare_output_folder(out, keep=False, data=None)
        assert sorted(p.name for p in out.iterdir()) == [demo.OUTPUT_MARKER]


def test_data_inside_the_output_folder_is_refused(tmp_path):
    (tmp_path / "out" / "faces").mkdir(parents=True)
    with pytest.raises(demo.OutputFolderError, match="inside --out"):
        demo.prepare_output_folder(tmp_path / "out", keep=False, data=str(tmp_path / "out" / "faces"))
    assert (tmp_path / "out" / "faces").is_dir()
