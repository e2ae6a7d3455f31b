"""Every folder walk of lightface lists the same images: symlinked folders followed once, hidden files left out."""
import os
from pathlib import Path

from lightface.data.folders import image_files
from lightface.engine.sr_trainer import _ImageFolder
from lightface.gallery.photos import collect_photos
from lightface.restore.folder import list_images
from pipelines.extract_embeddings import collect_inputs


def _tree(tmp_path: Path) -> Path:
    """people/alice/{1.jpg, 2.PNG, ._1.jpg, notes.txt}, people/bob -> ../elsewhere/bob (a symlinked folder holding
    b.jpg and a loop back to people/), people/.cache/x.jpg."""
    root = tmp_path / "people"
    (root / "alice").mkdir(parents=True)
    for name in ("1.jpg", "2.PNG", "._1.jpg", "notes.txt"):
        (root / "alice" / name).write_bytes(b"x")
    bob = tmp_path / "elsewhere" / "bob"
    bob.mkdir(parents=True)
    (bob / "b.jpg").write_bytes(b"x")
    os.symlink(root, bob / "loop")
    os.symlink(bob, root / "bob")
    (root / ".cache").mkdir()
    (root / ".cache" / "x.jpg").write_bytes(b"x")
    return root


def test_every_folder_walk_lists_the_same_images(tmp_path, caplog):
    root = _tree(tmp_path)
    expected = [root / "alice" / "1.jpg", root / "alice" / "2.PNG", root / "bob" / "b.jpg"]
    left_out = []
    assert image_files(root, left_out) == expected
    assert left_out == [root / "alice" / "notes.txt"]
    assert "not followed" in caplog.text  # the loop back to people/ is reported, not walked again

    assert sorted(p for _, p in collect_photos(root)) == expected
    assert dict((p.name, who) for who, p in collect_photos(root)) == {"1.jpg": "alice", "2.PNG": "alice",
                                                                      "b.jpg": "bob"}
    assert list_images(root, recursive=True) == expected
    assert _ImageFolder(root).paths == expected
    assert collect_inputs(str(root)) == (root, ["alice/1.jpg", "alice/2.PNG", "bob/b.jpg"])


def test_a_walk_without_recursion_counts_what_it_left_in_sub_folders(tmp_path):
    root = _tree(tmp_path)
    (root / "top.jpg").write_bytes(b"x")
    assert list_images(root) == [root / "top.jpg"]
    (root / "top.jpg").unlink()
    try:
        list_images(root)
    except FileNotFoundError as err:
        assert "3 image(s) lie in sub-folders" in str(err)
    else:
        raise AssertionError("a folder with no image of its own was accepted without recursion")


def test_a_walk_without_recursion_lists_the_folder_once_and_never_enters_its_sub_folders(tmp_path, monkeypatch):
    """recursive=False (the CLIs' --no-recursive) walked the whole tree below the folder only to count the images
    it left out: minutes on a large tree the user asked not to walk. Now one listing; sub-folders are named, not
    walked (except to explain an error: nothing found at the top)."""
    import lightface.restore.folder as folder

    root = _tree(tmp_path)
    (root / "top.jpg").write_bytes(b"x")
    (root / "notes.md").write_text("x")
    walked = []
    monkeypatch.setattr(folder, "image_files", lambda *a, **k: walked.append(a) or [])
    assert list_images(root) == [root / "top.jpg"]
    assert walked == []
    found = folder._collect(root, recursive=False)
    assert found.other_files == [root / "notes.md"]
    assert [p.name for p in found.subfolders] == sorted(p.name for p in root.iterdir()
                                                         if p.is_dir() and not p.name.startswith("."))


def test_a_fifo_named_like_an_image_is_reported_not_dropped_and_never_blocks(tmp_path):
    """A FIFO named *.jpg: the walk lists it, and restoring the folder skips it with its reason, without a read that
    would wait for a writer forever."""
    import cv2
    import numpy as np

    from lightface.restore.folder import RestoreResult, restore_paths

    src = tmp_path / "in"
    src.mkdir()
    cv2.imwrite(str(src / "a.png"), np.full((20, 20, 3), 128, np.uint8))
    os.mkfifo(src / "pipe.jpg")
    assert image_files(src) == [src / "a.png", src / "pipe.jpg"]
    summary = restore_paths(src, tmp_path / "out", lambda bgr: RestoreResult(image=bgr, crops=[bgr], faces=[bgr]),
                            show_progress=False)
    assert [item["input"] for item in summary["processed"]] == [str(src / "a.png")]
    assert [item["input"] for item in summary["skipped"]] == [str(src / "pipe.jpg")]
    assert "FIFO" in summary["skipped"][0]["reason"]
