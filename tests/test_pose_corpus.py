"""The pose-tagged frontalization corpus: who is taken (validation people stay out), the look-alike check and the
LMDB that train_frontalization reads, on the real shared data."""
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from lightface.data.pose_pairs import yaw_offset

LFW_PEOPLE = ("Abdullah", "Ahmad_Masood")  # folds 3-10, each with a frontal and a turned photo
CELEBA_PEOPLE = ("7215",)
CFP_IDS = ("001", "002")
HELDOUT_CFP = ("451",)


def _rows(path: Path, keep) -> list:
    return [line for line in path.read_text().splitlines() if line and not line.startswith("#") and keep(line)]


@pytest.fixture(scope="module")
def mini_data(shared_data, tmp_path_factory) -> Path:
    """A copy of ../shared/data's layout holding a few real people, plus ``celeba_ids/9999``: LFW Abdullah's photos
    under a CelebA number (one celebrity under two labels)."""
    root = tmp_path_factory.mktemp("pose_data")
    lfw, celeba = root / "lfw_train", root / "celeba_ids"
    for person in LFW_PEOPLE:
        (lfw / "images").mkdir(parents=True, exist_ok=True)
        (lfw / "images" / person).symlink_to(shared_data / "lfw_train" / "images" / person)
    src_lfw = shared_data / "lfw_train"
    (lfw / "people_folds.txt").write_text("\n".join(_rows(src_lfw / "people_folds.txt",
                                                          lambda r: r.split("\t")[0] in LFW_PEOPLE)) + "\n")
    lfw_marks = _rows(src_lfw / "landmarks_5pt.txt", lambda r: r.split("/")[0] in LFW_PEOPLE)
    (lfw / "landmarks_5pt.txt").write_text("\n".join(lfw_marks) + "\n")
    (celeba / "images" / "9999").mkdir(parents=True)
    for person in CELEBA_PEOPLE:
        (celeba / "images" / person).symlink_to(shared_data / "celeba_ids" / "images" / person)
    marks = _rows(shared_data / "celeba_ids" / "landmarks_5pt.txt", lambda r: r.split("/")[0] in CELEBA_PEOPLE)
    for line in lfw_marks:
        if line.startswith("Abdullah/"):
            name = line.split()[0].split("/")[1]
            (celeba / "images" / "9999" / name).symlink_to(src_lfw / "images" / "Abdullah" / name)
            marks.append("9999/" + line.split("/", 1)[1])
    (celeba / "landmarks_5pt.txt").write_text("\n".join(marks) + "\n")
    for folder, ids in (("cfp_train", CFP_IDS), ("cfp", HELDOUT_CFP)):
        for part in ("Images", "Fiducials"):
            (root / folder / part).mkdir(parents=True)
            for i in ids:
                (root / folder / part / i).symlink_to(shared_data / "cfp_train" / part / i if folder == "cfp_train"
                                                      else shared_data / "cfp" / part / i)
    shutil.copy(shared_data / "cfp_train" / "names.txt", root / "cfp_train" / "names.txt")
    return root


def test_candidates_keep_validation_people_out_and_split_by_yaw(shared_data):
    from lightface.data.corpus import heldout_people
    from lightface.data.pose_corpus import pose_candidates

    people = pose_candidates(shared_data, ["lfw", "celeba"])
    names = {p.name for p in people}
    cfp_names = {r.split("\t")[1].strip().replace(" ", "_").lower()
                 for r in _rows(shared_data / "cfp_train" / "names.txt", lambda r: "\t" in r)}
    excluded = heldout_people(shared_data) | {r.split("\t")[0] for r in
                                              _rows(shared_data / "lfw_train" / "people_folds.txt", lambda r: True)
                                              if r.split("\t")[0].lower() in cfp_names}
    # the rule bites: some excluded LFW people have both poses, and none of them is taken
    turned = {r.split("/")[0] for r in _rows(shared_data / "lfw_train" / "landmarks_5pt.txt", lambda r: True)
              if abs(yaw_offset(np.asarray(r.split()[1:], float))) > 0.2}
    assert len(turned & excluded) > 20
    assert not {f"lfw_{p}" for p in excluded} & names
    assert len([n for n in names if n.startswith("lfw_")]) > 300
    assert len([n for n in names if n.startswith("celeba_")]) > 200
    for person in people:
        assert person.frontal and person.profile
        assert all(abs(yaw_offset(pts)) < 0.10 for _, pts in person.frontal)
        assert all(abs(yaw_offset(pts)) > 0.20 for _, pts in person.profile)


def test_candidates_reject_bad_options(shared_data):
    from lightface.data.pose_corpus import pose_candidates

    with pytest.raises(ValueError, match="unknown pose sources"):
        pose_candidates(shared_data, ["imdb"])
    with pytest.raises(ValueError, match="frontal_max < turned_min"):
        pose_candidates(shared_data, ["lfw"], frontal_max=0.3, turned_min=0.2)


def test_candidates_leave_out_a_cfp_photo_whose_fiducial_file_is_malformed(cfp_with_a_bad_fiducial_file, caplog):
    """One CFP fiducial file with 29 points stopped the whole pose corpus with an error that did not name it."""
    from lightface.data.pose_corpus import pose_candidates

    root, bad = cfp_with_a_bad_fiducial_file
    with caplog.at_level("WARNING", logger="lightface.data.pose_pairs"):
        (person,) = pose_candidates(root, ["cfp"])
    photos = [str(path.relative_to(root / "cfp_train" / "Images")) for path, _ in person.frontal + person.profile]
    assert len(photos) == 13 and bad not in photos and "001/frontal/01.jpg" in photos
    assert f"{bad.replace('.jpg', '.txt')}: CFP fiducials must be (30, 2), got (29, 2)" in caplog.text


@pytest.mark.slow
def test_build_pose_corpus_drops_a_relabelled_celebrity_and_trains_from_the_lmdb(mini_data, tmp_path, caplog):
    from lightface.data import LMDBDataset
    from lightface.data.pose_pairs import PosePairDataset
    from pipelines.build_pose_corpus import get_args_parser, main

    out = tmp_path / "pose"
    argv = ["--data", str(mini_data), "--out", str(out), "--no-progress"]
    summary = main(get_args_parser().parse_args(argv))
    assert summary["ok"] and summary["people"] == 5 and summary["dropped"] == 1 and summary["lookalike_check"]
    dropped = json.loads((out / "lookalikes.json").read_text())["dropped"]
    assert [(d["person"], d["nearest"]) for d in dropped] == [("celeba_9999", "lfw_Abdullah")]
    assert dropped[0]["cosine"] > 0.95
    data = LMDBDataset(out / "pose128")
    assert data.metadata["num_classes"] == 5 and len(data) == summary["photos"]
    poses = {data.attributes(i).get("pose") for i in range(len(data))}
    assert poses == {"frontal", "profile"}
    pairs = PosePairDataset(data, mirror="left")
    assert len(pairs.identities()) == 5 and pairs[0]["input"].shape == (3, 128, 128)

    again = main(get_args_parser().parse_args(argv))  # the look-alike check and the LMDB are kept
    assert again["nothing_to_do"] and again["out"] == str(out / "pose128") and again["dropped"] == 1
    tree = sorted(str(f.relative_to(out)) for f in (out / "tree").rglob("*"))
    with pytest.raises(FileExistsError, match="--overwrite"):
        main(get_args_parser().parse_args([*argv, "--no-lookalikes"]))
    # the refused run (6 people) leaves the tree of the kept LMDB (5 people) in place
    assert sorted(str(f.relative_to(out)) for f in (out / "tree").rglob("*")) == tree
    assert not (out / "tree.previous").exists()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pipelines.build_pose_corpus"):
        rebuilt = main(get_args_parser().parse_args([*argv, "--no-lookalikes", "--overwrite"]))
    assert rebuilt["written"] == rebuilt["photos"] and rebuilt["people"] == 6
    # without the check, held-out cfp/ people may be in the corpus: said, and recorded in the summary
    assert rebuilt["lookalike_check"] is False and "no longer held-out" in caplog.text


def test_the_lookalike_check_crops_faces_as_its_recogniser_needs(shared_data, tmp_path):
    """``build_pose_corpus --weights LightCNN_9Layers_checkpoint.pth.tar``: the look-alike check cropped the faces by
    the least-squares fit whatever the recogniser, so an official Light CNN release (FaceEmbedder align_method
    "eyes") compared people by embeddings of crops it was not trained on. The crops now follow the embedder."""
    import torch

    from benchmarks._baseline_lightcnn import build_baseline, official_checkpoint
    from lightface.data.align import align_face
    from lightface.data.io import read_image
    from lightface.data.pose_corpus import PosePerson, _mean_embeddings
    from lightface.data.sources import read_landmarks_file
    from lightface.embed import FaceEmbedder

    torch.manual_seed(3)
    weights = tmp_path / "LightCNN_9Layers_checkpoint.pth.tar"
    torch.save(official_checkpoint(build_baseline("lightcnn9", num_classes=10).eval()), weights)
    embedder = FaceEmbedder(weights, device="cpu")
    assert embedder.align_method == "eyes"
    root = shared_data / "lfw_identities"
    marks = read_landmarks_file(root / "landmarks_5pt.txt")
    names = ["Gordon_Brown/Gordon_Brown_0001.jpg", "Gordon_Brown/Gordon_Brown_0002.jpg"]
    person = PosePerson("lfw_Gordon_Brown", "lfw", [(root / "images" / n, marks[n]) for n in names])
    crops = [align_face(read_image(p), pts, "lightcnn", 128, method="eyes")[0] for p, pts in person.frontal]
    mean = embedder.embed(crops, aligned=True, flip=True).sum(0)
    np.testing.assert_allclose(_mean_embeddings(embedder, [person])[0], mean / np.linalg.norm(mean), atol=1e-5)
