"""The multi-source corpus, several LMDBs in one run, strong augmentation, the time limit,
and embedding distillation from a teacher (dlib's, when the optional extra is installed)."""
import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from lightface.data import LMDBDataset
from lightface.data.multi_source import MultiSourceDataset
from lightface.distill import distill_loss, relation_loss
from lightface.engine.engine import TrainingError
from lightface.engine.checkpoint import load_checkpoint
from lightface.engine.logger import read_metrics

from lightcnn_tiny import ARCH as TINY  # tests/lightcnn_tiny.py


def _orl_lmdb(shared_data, out: Path, ids, per_id=2, color="gray"):
    from lightface.data.build import build_lmdb

    lst = out.with_suffix(".txt")
    lst.write_text("\n".join(f"{shared_data / 'orl_faces' / f's{i}' / f'{j}.pgm'} s{i}"
                             for i in ids for j in range(1, per_id + 1)) + "\n")
    build_lmdb(lst, out, size=144, color=color, progress=False)
    return out


@pytest.fixture(scope="module")
def two_sources(shared_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("sources")
    return _orl_lmdb(shared_data, root / "a.lmdb", [1, 2]), _orl_lmdb(shared_data, root / "b.lmdb", [3, 4, 5], color="rgb")


# -- corpus -----------------------------------------------------------------------------
def test_corpus_lists_hold_out_lfw_fold2_and_its_cfp_namesakes(shared_data, tmp_path):
    from lightface.data.corpus import corpus_sources, heldout_people

    held = heldout_people(shared_data)
    assert "Tony_Blair" in held and len(held) > 300
    made = corpus_sources(shared_data, tmp_path, ["lfw", "cfp"])
    lfw = made["lfw"].list_file.read_text().splitlines()
    assert lfw and all(line.rsplit(None, 1)[1].startswith("lfw/") for line in lfw)
    assert not {line.split("/")[0] for line in lfw} & held
    names = dict(line.split("\t")[:2] for line in (shared_data / "cfp_train" / "names.txt").read_text().splitlines()
                 if line and not line.startswith("#"))
    cfp_ids = {line.rsplit(None, 1)[1].split("/")[1] for line in made["cfp"].list_file.read_text().splitlines()}
    assert cfp_ids and not {names[i].replace(" ", "_") for i in cfp_ids} & held
    assert "031" not in cfp_ids  # Andre Agassi: an LFW fold-2 person
    assert made["cfp"].landmarks.is_file() and made["cfp"].images == len(made["cfp"].list_file.read_text().splitlines())


def test_corpus_lists_hold_out_fold2_people_under_the_spellings_of_names_txt(shared_data, tmp_path, caplog):
    """names.txt spells two fold-2 people otherwise (``Leonardo Dicaprio``, ``Diane Feinstein``): an exact match
    kept their CFP photos in training, beside their pairs in pairs_dev.txt."""
    from lightface.data.corpus import corpus_sources, heldout_people

    held = heldout_people(shared_data)
    assert {"Leonardo_DiCaprio", "Dianne_Feinstein"} <= held
    with caplog.at_level("INFO", logger="lightface.data.corpus"):
        made = corpus_sources(shared_data, tmp_path, ["cfp"])
    cfp_ids = {line.rsplit(None, 1)[1].split("/")[1] for line in made["cfp"].list_file.read_text().splitlines()}
    assert cfp_ids and not {"287", "131"} & cfp_ids  # Leonardo Dicaprio, Diane Feinstein
    assert "131 'Diane Feinstein' ~ Dianne_Feinstein" in caplog.text  # a near match is logged


def test_heldout_cfp_ids_match_names_without_case_accents_or_spaces_and_log_near_spellings(caplog):
    from lightface.data.corpus import heldout_cfp_ids

    held = {"Leonardo_DiCaprio", "Dianne_Feinstein", "Jose_Maria_Aznar", "Tony_Blair"}
    names = {"1": "Leonardo Dicaprio", "2": "Diane Feinstein", "3": "José María Aznar", "4": "Tony Blair",
             "5": "Tom Hanks", "6": "Tony Blare-Smithers"}
    with caplog.at_level("INFO", logger="lightface.data.corpus"):
        ids = heldout_cfp_ids(names, held)
    assert ids == {"1": "Leonardo_DiCaprio", "2": "Dianne_Feinstein", "3": "Jose_Maria_Aznar", "4": "Tony_Blair"}
    assert "2 'Diane Feinstein' ~ Dianne_Feinstein" in caplog.text and "Dicaprio" not in caplog.text


def test_corpus_lists_leave_out_an_image_whose_fiducial_file_is_malformed(cfp_with_a_bad_fiducial_file, tmp_path,
                                                                         caplog):
    """One CFP fiducial file with 29 points stopped the whole corpus with an error that did not name it."""
    from lightface.data.corpus import corpus_sources

    root, bad = cfp_with_a_bad_fiducial_file
    with caplog.at_level("WARNING", logger="lightface.data.pose_pairs"):
        made = corpus_sources(root, tmp_path / "lists", ["cfp"])
    listed = [line.split()[0] for line in made["cfp"].list_file.read_text().splitlines()]
    assert len(listed) == 13 and bad not in listed and "001/frontal/01.jpg" in listed
    assert f"{bad.replace('.jpg', '.txt')}: CFP fiducials must be (30, 2), got (29, 2)" in caplog.text


@pytest.mark.slow
def test_an_interrupted_corpus_build_resumes(shared_data, tmp_path):
    """pipelines.build_corpus killed in the middle of a source: the re-run continues its partial build (it used to
    delete it and start over)."""
    import sys

    from kill_build_helper import kill_build_after  # tests/kill_build_helper.py
    from lightface.data.build import partial_path
    from lightface.data.corpus import build_corpus

    out = tmp_path / "corpus"
    partial = partial_path(out / "cfp.lmdb")
    done = kill_build_after([sys.executable, "-m", "pipelines.build_corpus", "--data", shared_data, "--out", out,
                             "--sources", "cfp", "--no-progress"], partial, 512)
    assert done >= 512 and partial.exists()
    summary = build_corpus(shared_data, out, ["cfp"], progress=False)["cfp"]
    assert summary["ok"] and summary["resumed_from"] >= 512
    assert summary["written"] == LMDBDataset(out / "cfp.lmdb").metadata["count"]


def test_corpus_rejects_an_unknown_source(shared_data, tmp_path):
    from lightface.data.corpus import corpus_sources

    with pytest.raises(ValueError, match="unknown corpus sources"):
        corpus_sources(shared_data, tmp_path, ["imdb"])


# -- several sources as one ---------------------------------------------------------------
def test_multi_source_offsets_labels_and_keeps_the_source(two_sources):
    a, b = (LMDBDataset(p) for p in two_sources)
    both = MultiSourceDataset([a, b])
    assert len(both) == len(a) + len(b) == 10
    assert both.classes == ["s1", "s2", "s3", "s4", "s5"]  # unique names kept as they are
    assert both.labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    item = both[len(a)]
    assert item["label"] == 2 and item["source"] == "b" and both.source_of(0) == "a"
    assert item["image"].shape == (144, 144, 3) and both[0]["image"].shape == (144, 144)
    clash = MultiSourceDataset([a, a], names=["x", "y"])
    assert clash.classes == ["x:s1", "x:s2", "y:s1", "y:s2"]
    with pytest.raises(IndexError):
        both[10]


def test_strong_augmentation_gives_gray_tensors_and_is_seeded(two_sources):
    from lightface.engine.lightcnn_trainer import lightcnn_transforms

    image = LMDBDataset(two_sources[1])[0]["image"]  # BGR
    train, evaluate = lightcnn_transforms(augment="strong")
    outs = []
    for _ in range(2):
        train.set_random_seed(7)
        outs.append(train(image=image)["image"])
    assert outs[0].shape == (1, 128, 128) and outs[0].dtype == torch.float32
    assert 0.0 <= float(outs[0].min()) and float(outs[0].max()) <= 1.0
    assert torch.equal(outs[0], outs[1])
    assert evaluate(image=image)["image"].shape == (1, 128, 128)
    with pytest.raises(ValueError, match="augment"):
        lightcnn_transforms(augment="heavy")


# -- distillation -------------------------------------------------------------------------
def test_distill_loss_ignores_rows_without_a_teacher():
    s = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    t = torch.tensor([[2.0, 0.0], [0.0, -3.0], [float("nan"), 0.0]])
    assert float(distill_loss(s, t)) == pytest.approx((0.0 + 2.0) / 2)
    assert float(distill_loss(s, torch.full_like(t, float("nan")))) == 0.0
    with pytest.raises(ValueError, match="shape"):
        distill_loss(s, t[:, :1])


def test_relation_loss_compares_pairwise_cosines_across_dimensions():
    s = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 0.0]])  # student cosines: 0, 0.707, 0.707
    t = torch.tensor([[1.0, 0.0], [0.0, 5.0], [3.0, 3.0]])  # teacher (another width): the same cosines
    assert float(relation_loss(s, t)) == pytest.approx(0.0, abs=1e-6)
    t_far = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [float("nan"), 0.0]])  # one pair left, cosine -1 against 0
    assert float(relation_loss(s, t_far)) == pytest.approx(1.0)
    assert float(relation_loss(s, torch.full_like(t, float("nan")))) == 0.0
    with pytest.raises(ValueError, match="rows"):
        relation_loss(s, t[:2])


def _train(data, out, *extra):
    from pipelines.train_lightcnn import get_args_parser, main

    argv = ["--data", *map(str, data), "--out", str(out), "--arch", TINY, "--batch-size", "2", "--workers", "0",
            "--epochs", "2", "--log-every", "1", "--no-tensorboard", "--no-plots", *map(str, extra)]
    return main(get_args_parser().parse_args(argv))


def _write_teacher_files(sources) -> None:
    """16-d random teacher embeddings beside each LMDB, laid out as pipelines.teacher_embeddings writes them."""
    from lightface.distill.teacher import embeddings_path

    rng = np.random.default_rng(0)
    for p in sources:
        n = len(LMDBDataset(p))
        emb = rng.standard_normal((n, 16)).astype(np.float32)
        emb[0] = np.nan  # one sample the teacher could not read
        np.save(embeddings_path(p), emb)
        embeddings_path(p).with_suffix(".json").write_text(json.dumps({"teacher": "dlib", "count": n, "done": n}))


def test_two_lmdbs_with_teacher_embeddings_train_and_resume(two_sources, tmp_path):
    _write_teacher_files(two_sources)
    out = tmp_path / "run"
    summary = _train(two_sources, out, "--distill", "dlib", "--distill-weight", "2", "--augment", "strong",
                     "--max-steps", "3")
    assert summary["step"] == 3
    records = [r for r in read_metrics(out / "metrics.jsonl") if "distill_loss" in r]
    assert records and all(0.0 <= r["distill_loss"] <= 2.0 for r in records)
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["networks"]["distill_head"]["proj.weight"].shape == (16, 256)
    assert len(ckpt["classes"]) == 5
    resumed = _train(two_sources, out, "--distill", "dlib", "--distill-weight", "2", "--augment", "strong",
                     "--max-steps", "4", "--resume")
    assert resumed["step"] == 4


def test_a_teacher_name_resumes_from_its_config_yaml_beside_a_file_of_that_name(two_sources, tmp_path,
                                                                              monkeypatch):
    """``--distill dlib`` run from a folder holding a file named ``dlib``: config.yaml stored /that/folder/dlib, and
    ``--config OUT/config.yaml --resume`` failed ('no /that/folder/dlib teacher embeddings ... teacher_/that/...')."""
    from pipelines._cli import parse_with_config
    from pipelines.train_lightcnn import get_args_parser, main

    _write_teacher_files(two_sources)
    (tmp_path / "dlib").write_text("notes\n")
    (tmp_path / "other").mkdir()
    monkeypatch.chdir(tmp_path)
    _train(two_sources, "runs/x", "--distill", "dlib", "--max-steps", "1")
    monkeypatch.chdir(tmp_path / "other")
    args = parse_with_config(get_args_parser(), ["--config", "../runs/x/config.yaml", "--resume", "--max-steps", "2"])
    assert args.distill == "dlib"
    assert main(args)["step"] == 2


@pytest.mark.parametrize("write, found", [
    (lambda p, e: np.save(p, e[:, 0]), r"shape \(\d+,\)"),
    (lambda p, e: np.save(p, e.reshape(len(e), 4, 4)), r"shape \(\d+, 4, 4\)"),
    (lambda p, e: np.save(p, np.array(["a"] * len(e))), "<U1 values, not numbers"),
    (lambda p, e: (np.savez(p.with_suffix(".npz"), emb=e), p.with_suffix(".npz").rename(p)), "an .npz archive"),
], ids=["1-d", "3-d", "text", "npz"])
def test_a_distill_file_that_is_not_n_by_d_numbers_is_named(two_sources, tmp_path, write, found):
    """``--distill FILE.npy`` holding a 1-D / 3-D array, text or an .npz archive failed with numpy's words ('axis 1
    is out of bounds', 'could not convert string to float', or 'student and teacher embeddings differ in shape'
    mid-training)."""
    path = tmp_path / "emb.npy"
    write(path, np.random.default_rng(0).standard_normal((len(LMDBDataset(two_sources[0])), 16)).astype(np.float32))
    with pytest.raises(TrainingError, match=rf"--distill {re.escape(str(path))}: .*{found}.*float \(N, D\) array"):
        _train(two_sources[:1], tmp_path / "run", "--distill", path, "--max-steps", "1")


def test_relation_term_trains_on_the_features_and_needs_a_teacher(two_sources, tmp_path):
    _write_teacher_files(two_sources)
    out = tmp_path / "run"
    _train(two_sources, out, "--distill", "dlib", "--distill-relation", "3", "--max-steps", "2")
    records = [r for r in read_metrics(out / "metrics.jsonl") if "relation_loss" in r]
    assert records and all(0.0 <= r["relation_loss"] <= 4.0 for r in records)
    with pytest.raises(TrainingError, match="--distill-relation needs --distill"):
        _train(two_sources, tmp_path / "bad", "--distill-relation", "3", "--max-steps", "1")


def test_distill_weight_without_a_teacher_is_refused(two_sources, tmp_path):
    # --distill-weight 10 without --distill trained with no distillation at all, and said nothing
    with pytest.raises(TrainingError, match="--distill-weight needs --distill"):
        _train(two_sources, tmp_path / "bad", "--distill-weight", "10", "--max-steps", "1")
    assert not (tmp_path / "bad" / "last.pt").exists()


def test_an_unknown_teacher_name_is_refused_naming_the_teachers(two_sources, tmp_path):
    # --distill Dlib used to send the user to compute "teacher_Dlib.npy" with a command that
    # pipelines.teacher_embeddings refuses (invalid choice), beside the dlib embeddings already there
    # (or a typo, 'dlb', or emb.npz): refused before any work, with advice that works
    _write_teacher_files(two_sources)
    for name in ("Dlib", "dlb", "emb.npz"):
        with pytest.raises(TrainingError, match=rf"--distill '{re.escape(name)}' is not a teacher lightface computes "
                                                r"\(dlib\).*save_teacher_embeddings.*--distill FILE\.npy") as err:
            _train(two_sources, tmp_path / "bad", "--distill", name, "--max-steps", "1")
        assert "pipelines.teacher_embeddings" not in str(err.value)
    assert not (tmp_path / "bad" / "last.pt").exists()


def test_clip_grad_bounds_the_distillation_head_step_too(two_sources, tmp_path):
    """--clip-grad clips one norm over everything the optimiser steps: the head's update used to
    be left unclipped (0.08 on real faces where --clip-grad allowed 1e-6)."""
    _write_teacher_files(two_sources)
    flags = ("--distill", "dlib", "--distill-weight", "10", "--max-steps", "1", "--weight-decay", "0",
             "--momentum", "0", "--clip-grad", "1e-4")
    _train(two_sources, tmp_path / "start", *flags, "--lr", "0")  # the same initial weights, unchanged
    _train(two_sources, tmp_path / "step", *flags, "--lr", "0.01")
    before, after = load_checkpoint(tmp_path / "start" / "last.pt"), load_checkpoint(tmp_path / "step" / "last.pt")
    head = before["networks"]["distill_head"]
    moved = sum(float(((after["networks"]["distill_head"][k] - head[k]) ** 2).sum()) for k in head) ** 0.5
    assert 0.0 < moved <= 0.01 * 1e-4 * 1.001  # the head's lr x the clipped norm


def test_finetune_on_the_same_classes_keeps_classifier_and_distill_head(two_sources, tmp_path, caplog):
    """A warm restart (--finetune from a run on the same data) starts from the run's classifier and
    distillation head, not new random ones: with --lr 0 nothing moves from the source's values.
    The same --seed as the source run is warned about (its augmented views would repeat)."""
    _write_teacher_files(two_sources)
    src = tmp_path / "src"
    _train(two_sources, src, "--distill", "dlib", "--max-steps", "2")
    out = tmp_path / "restart"
    with caplog.at_level("WARNING"):
        _train(two_sources, out, "--distill", "dlib", "--max-steps", "1", "--lr", "0", "--finetune", src / "last.pt")
    assert "pass another --seed" in caplog.text
    before, after = load_checkpoint(src / "last.pt"), load_checkpoint(out / "last.pt")
    assert torch.equal(before["state_dict"]["classifier.weight"], after["state_dict"]["classifier.weight"])
    head_before, head_after = before["networks"]["distill_head"], after["networks"]["distill_head"]
    assert all(torch.equal(head_before[k], head_after[k]) for k in head_before)


def test_classifier_only_stage_trains_the_distillation_head_with_the_classifier(two_sources, tmp_path):
    """--classifier-only-epochs freezes the backbone but trains both heads on its features, so a
    new distillation projection is no longer random when the backbone unfreezes."""
    _write_teacher_files(two_sources)
    src = tmp_path / "src"
    _train(two_sources, src, "--distill", "dlib", "--max-steps", "2")
    out = tmp_path / "heads"
    _train(two_sources, out, "--distill", "dlib", "--max-steps", "2", "--seed", "1", "--finetune", src / "last.pt",
           "--classifier-only-epochs", "1", "--epochs", "2")
    before, after = load_checkpoint(src / "last.pt"), load_checkpoint(out / "last.pt")
    backbone = [k for k in before["state_dict"] if not k.startswith("classifier.")]
    assert backbone and all(torch.equal(before["state_dict"][k], after["state_dict"][k]) for k in backbone)
    assert not torch.equal(before["state_dict"]["classifier.weight"], after["state_dict"]["classifier.weight"])
    head_before, head_after = before["networks"]["distill_head"], after["networks"]["distill_head"]
    assert not all(torch.equal(head_before[k], head_after[k]) for k in head_before)


class _JumpingClock:
    """The ``time`` module, except that ``monotonic()`` moves 1 s per reading: every training
    step ends past a sub-second deadline however fast the machine is."""

    def __init__(self):
        self.now = 0.0

    def monotonic(self) -> float:
        self.now += 1.0
        return self.now

    def __getattr__(self, name):
        return getattr(time, name)


def _shard_writes_its_row(path, row, barrier):
    from lightface.distill.teacher import _create_nan_rows

    barrier.wait()  # every shard starts on a missing file at once
    _create_nan_rows(path, (4, 3))
    arr = np.load(path, mmap_mode="r+")
    arr[row] = row
    arr.flush()


def test_teacher_shards_starting_together_share_one_embedding_file(tmp_path):
    # pipelines.teacher_embeddings --shard S --shards N runs N processes on one .npy: none may
    # replace (losing rows) or truncate (SIGBUS) the file another already writes to
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    path = tmp_path / "teacher_dlib.npy"
    barrier = ctx.Barrier(4)
    procs = [ctx.Process(target=_shard_writes_its_row, args=(path, r, barrier)) for r in range(4)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
    assert [proc.exitcode for proc in procs] == [0] * 4
    assert np.array_equal(np.load(path), np.repeat(np.arange(4, dtype=np.float32)[:, None], 3, 1))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["teacher_dlib.npy"]  # no temporary file left


def test_a_shard_recording_late_cannot_undo_a_finished_computation(tmp_path):
    # shard 0 counts the chunk markers while shard 1 still computes chunk 1, and writes its
    # "incomplete" record after shard 1 wrote "complete": the markers decide
    from lightface.distill.teacher import _chunks_dir, _write_state, embeddings_path, has_teacher_embeddings

    lmdb = tmp_path / "x.lmdb"
    lmdb.mkdir()
    np.save(embeddings_path(lmdb), np.zeros((5, 3), np.float32))
    chunks = _chunks_dir(lmdb, "dlib", 2)  # 5 rows in chunks of 2: chunks 0, 1, 2
    chunks.mkdir()
    for c in (0, 2):
        (chunks / str(c)).touch()
    _write_state(lmdb, "dlib", count=5, done=4, dim=3, chunk=2)
    assert not has_teacher_embeddings(lmdb)  # chunk 1 is really missing
    (chunks / "1").touch()  # shard 1 finishes; shard 0's stale record stays
    assert has_teacher_embeddings(lmdb)
    _write_state(lmdb, "dlib", count=5, done=4, dim=3, chunk=3)  # markers of another chunk size do not count
    assert not has_teacher_embeddings(lmdb)


def test_max_minutes_stops_after_a_step_and_saves(two_sources, tmp_path, monkeypatch):
    import lightface.engine.engine as engine_module

    monkeypatch.setattr(engine_module, "time", _JumpingClock())
    out = tmp_path / "run"
    summary = _train(two_sources, out, "--max-minutes", "0.0001")
    assert summary["stopped"].startswith("max_minutes") and summary["step"] == 1
    assert load_checkpoint(out / "last.pt")["step"] == 1


def test_distill_without_teacher_files_says_how_to_make_them(two_sources, tmp_path):
    from lightface.engine.lightcnn_trainer import TrainingError

    data = tmp_path / "c.lmdb"
    import shutil

    shutil.copytree(two_sources[0], data, ignore=shutil.ignore_patterns("teacher_*"))
    with pytest.raises(TrainingError, match="pipelines.teacher_embeddings"):
        _train([data], tmp_path / "run", "--distill", "dlib", "--max-steps", "1")


def test_distill_with_no_teacher_row_at_all_is_refused_with_the_resume_command(shared_data, tmp_path,
                                                                            counting_teacher):
    """Shard 1 of 2 over a corpus of one chunk computes nothing: training on its all-NaN file ran with
    both distillation terms 0 throughout, after a warning."""
    from lightface.distill.teacher import teacher_embeddings_for_lmdb

    data = _orl_lmdb(shared_data, tmp_path / "x.lmdb", [1, 2])
    assert teacher_embeddings_for_lmdb(data, chunk=256, shard=1, shards=2, progress=False)["done"] == 0
    with pytest.raises(TrainingError, match=r"none of the 4 training samples has a teacher embedding.*\(0 of 4 "
                                            r"done\); resume with: python -m pipelines.teacher_embeddings --data "):
        _train([data], tmp_path / "run", "--distill", "dlib", "--max-steps", "1")
    assert not (tmp_path / "run" / "last.pt").exists()
    teacher_embeddings_for_lmdb(data, chunk=256, shard=0, shards=2, progress=False)  # the missing shard: it trains
    assert _train([data], tmp_path / "run", "--distill", "dlib", "--max-steps", "1", "--overwrite")["step"] == 1


def test_dlib_teacher_separates_people(shared_data):
    pytest.importorskip("dlib")
    from lightface.data.align import align_face
    from lightface.distill.teacher import DlibTeacher
    import cv2

    teacher = DlibTeacher()
    table = {}
    for line in (shared_data / "lfw_identities" / "landmarks_5pt.txt").read_text().splitlines():
        parts = line.split()
        table[parts[0]] = np.asarray(parts[1:], np.float64).reshape(5, 2)
    names = sorted({k.split("/")[0] for k in table})[:2]

    def emb(name, i):
        key = f"{name}/{name}_{i:04d}.jpg"
        img = cv2.imread(str(shared_data / "lfw_identities" / "images" / key))
        return teacher.embed(align_face(img, table[key], template="lightcnn_train", size=144)[0])

    same = np.linalg.norm(emb(names[0], 1) - emb(names[0], 2))
    different = np.linalg.norm(emb(names[0], 1) - emb(names[1], 1))
    assert same < 0.6 < different  # dlib's own same-person distance threshold


def test_dlib_teacher_embeddings_in_two_shards_finish_and_load(shared_data, tmp_path):
    pytest.importorskip("dlib")
    from lightface.distill.teacher import has_teacher_embeddings, load_teacher_embeddings, teacher_embeddings_for_lmdb

    data = _orl_lmdb(shared_data, tmp_path / "x.lmdb", [1, 2, 3])  # 6 faces: chunks of 2 -> 0, 1, 2
    first = teacher_embeddings_for_lmdb(data, chunk=2, shard=1, shards=2, progress=False)
    assert first["done"] == 2 and not has_teacher_embeddings(data)  # shard 0's chunks are still missing
    second = teacher_embeddings_for_lmdb(data, chunk=2, shard=0, shards=2, progress=False)
    assert second["done"] == 6 and has_teacher_embeddings(data)
    emb = load_teacher_embeddings(data)
    assert emb.shape == (6, 128) and np.isfinite(emb).all()
    assert sorted(p.name for p in data.iterdir() if p.name.startswith("teacher_")) == [
        "teacher_dlib.chunks2", "teacher_dlib.json", "teacher_dlib.npy"]  # no temporary file left


def test_complete_teacher_embeddings_are_not_computed_again(shared_data, tmp_path):
    """Embeddings carried over by pipelines.relabel (no chunk markers), or finished with another --chunk, were
    recomputed row by row (minutes to hours of dlib on a corpus) and their file rewritten."""
    from lightface.distill.teacher import load_teacher_embeddings, save_teacher_embeddings, teacher_embeddings_for_lmdb

    data = _orl_lmdb(shared_data, tmp_path / "x.lmdb", [1, 2, 3])
    rows = np.arange(6 * 4, dtype=np.float32).reshape(6, 4)
    rows[2] = np.nan  # a face the teacher could not read
    save_teacher_embeddings(data, rows)
    for chunk in (256, 2):
        assert teacher_embeddings_for_lmdb(data, chunk=chunk, progress=False) == {"count": 6, "done": 6, "failed": 1}
    np.testing.assert_array_equal(load_teacher_embeddings(data), rows)


class _CountingTeacher:
    """A stand-in for dlib (the bookkeeping does not need its network): a crop's mean as a
    3-d embedding; raises KeyboardInterrupt (a kill) on call ``stop_at`` when set."""

    dim = 3
    stop_at = None
    calls = 0

    def embed(self, crop):
        type(self).calls += 1
        if type(self).calls == self.stop_at:
            raise KeyboardInterrupt
        return np.full(3, crop.mean(), np.float32)


@pytest.fixture
def counting_teacher(monkeypatch):
    import lightface.distill.teacher as teacher_module

    monkeypatch.setitem(teacher_module.TEACHERS, "dlib", _CountingTeacher)
    monkeypatch.setattr(_CountingTeacher, "calls", 0)
    monkeypatch.setattr(_CountingTeacher, "stop_at", None)  # restored after a test that sets it
    return _CountingTeacher


def test_a_shard_reports_the_rows_of_a_short_last_chunk_as_they_are(shared_data, tmp_path, counting_teacher):
    # 6 faces in chunks of 4: shard 1 computes chunk 1, rows 4-5, and used to report 4 done
    from lightface.distill.teacher import teacher_embeddings_for_lmdb

    data = _orl_lmdb(shared_data, tmp_path / "x.lmdb", [1, 2, 3])
    assert teacher_embeddings_for_lmdb(data, chunk=4, shard=1, shards=2, progress=False)["done"] == 2
    assert json.loads((data / "teacher_dlib.json").read_text())["done"] == 2
    assert teacher_embeddings_for_lmdb(data, chunk=4, shard=0, shards=2, progress=False)["done"] == 6


@pytest.mark.parametrize("killed_at, done", [(2, 0), (6, 4)])
def test_a_run_killed_before_its_record_says_what_is_done_and_how_to_resume(shared_data, tmp_path, counting_teacher,
                                                                          killed_at, done):
    # killed inside chunk 0 (nothing finished) or chunk 1 (chunk 0's 4 rows finished): no
    # teacher_dlib.json yet; the error used to read "(? of ? done)" and run two hints together
    from lightface.distill.teacher import load_teacher_embeddings, teacher_embeddings_for_lmdb

    data = _orl_lmdb(shared_data, tmp_path / "x.lmdb", [1, 2, 3])
    counting_teacher.stop_at = killed_at
    with pytest.raises(KeyboardInterrupt):
        teacher_embeddings_for_lmdb(data, chunk=4, progress=False)
    assert not (data / "teacher_dlib.json").exists()
    with pytest.raises(ValueError) as err:
        load_teacher_embeddings(data)
    assert str(err.value).endswith(f"are incomplete ({done} of 6 done); resume with: python -m "
                                   f"pipelines.teacher_embeddings --data {data} --teacher dlib --chunk 4 "
                                   "(run every --shard again if it ran in --shards)")
    assert str(err.value).count("python -m") == 1


def test_teacher_embeddings_checks_every_data_path_before_computing(shared_data, tmp_path, counting_teacher):
    from lightface.distill.teacher import embeddings_path
    from pipelines.teacher_embeddings import get_args_parser, main

    data = _orl_lmdb(shared_data, tmp_path / "a.lmdb", [1])
    missing = tmp_path / "nonexist.lmdb"
    with pytest.raises(FileNotFoundError, match=r"nonexist\.lmdb: no LMDB dataset here"):
        main(get_args_parser().parse_args(["--data", str(data), str(missing), "--no-progress"]))
    assert counting_teacher.calls == 0 and not embeddings_path(data).exists()  # a.lmdb was not computed first


def test_teacher_embeddings_refuses_a_read_only_lmdb_before_any_work(shared_data, tmp_path, counting_teacher,
                                                                    monkeypatch):
    """The embeddings are stored beside the LMDB: a read-only folder failed with a bare 'Read-only file
    system' OSError on its temporary file, after the LMDBs before it had been computed (minutes each)."""
    import os

    from lightface.distill.teacher import embeddings_path, save_teacher_embeddings
    from pipelines.teacher_embeddings import get_args_parser, main

    first = _orl_lmdb(shared_data, tmp_path / "a.lmdb", [1])
    read_only = _orl_lmdb(shared_data, tmp_path / "ro.lmdb", [2])
    real_access = os.access

    def access(path, mode, *args, **kwargs):  # as on a read-only mount (chmod does not stop root)
        return False if Path(path) == read_only and mode & os.W_OK else real_access(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "access", access)
    argv = ["--data", str(first), str(read_only), "--no-progress"]
    with pytest.raises(PermissionError, match=r"ro\.lmdb is not writable.*copy the LMDB folder to a writable place"):
        main(get_args_parser().parse_args(argv))
    assert counting_teacher.calls == 0 and not embeddings_path(first).exists()
    # finished embeddings in a read-only folder need no writing: nothing to do, no refusal
    save_teacher_embeddings(read_only, np.zeros((2, 3), np.float32))  # (made before the folder "became" read-only)
    assert main(get_args_parser().parse_args(argv))[str(read_only)] == {"count": 2, "done": 2, "failed": 0}


@pytest.fixture
def teacher_failing_on_sample_2(shared_data, tmp_path, counting_teacher, monkeypatch):
    """An ORL LMDB of 6 faces and a stand-in teacher that raises dlib's RuntimeError on its sample 2."""
    data = _orl_lmdb(shared_data, tmp_path / "x.lmdb", [1, 2, 3])
    unreadable = LMDBDataset(data)[2]["image"]
    count_call = counting_teacher.embed

    def embed(self, crop):
        out = count_call(self, crop)
        if np.array_equal(crop, unreadable):
            raise RuntimeError("dlib could not read this crop")
        return out

    monkeypatch.setattr(counting_teacher, "embed", embed)
    return data


def test_teacher_counts_of_the_shard_that_finishes_are_the_whole_lmdbs(teacher_failing_on_sample_2):
    """The summary's `failed` was the calling process's own: shard 0, finishing the LMDB after shard 1 met
    the unreadable sample, reported 6 done and 0 failed; a re-run then said 1."""
    from lightface.distill.teacher import teacher_embeddings_for_lmdb

    data = teacher_failing_on_sample_2  # chunks of 2: shard 1 computes chunk 1 (rows 2-3), shard 0 chunks 0 and 2
    assert teacher_embeddings_for_lmdb(data, chunk=2, shard=1, shards=2, progress=False) == {
        "count": 6, "done": 2, "failed": 1}
    assert teacher_embeddings_for_lmdb(data, chunk=2, shard=0, shards=2, progress=False) == {
        "count": 6, "done": 6, "failed": 1}
    assert teacher_embeddings_for_lmdb(data, chunk=2, progress=False) == {"count": 6, "done": 6, "failed": 1}


def test_a_resumed_teacher_run_counts_the_failures_of_the_run_it_resumes(teacher_failing_on_sample_2,
                                                                        counting_teacher):
    from lightface.distill.teacher import teacher_embeddings_for_lmdb

    data = teacher_failing_on_sample_2
    counting_teacher.stop_at = 5  # killed on row 4: chunks 0 and 1 (rows 0-3, the unreadable 2 among them) finished
    with pytest.raises(KeyboardInterrupt):
        teacher_embeddings_for_lmdb(data, chunk=2, progress=False)
    counting_teacher.stop_at = None
    assert teacher_embeddings_for_lmdb(data, chunk=2, progress=False) == {"count": 6, "done": 6, "failed": 1}
    assert counting_teacher.calls == 5 + 2  # the resumed run computed chunk 2 alone


def _replace_lmdb(data: Path, other: Path) -> None:
    """Put the LMDB ``other`` in ``data``'s folder in place of its own, leaving the teacher files (as a user
    copying a rebuilt LMDB's data.mdb over the old one does)."""
    import os

    from lightface.data.lmdb_format import release_readonly

    release_readonly()
    os.replace(other / "data.mdb", data / "data.mdb")


@pytest.mark.parametrize("killed", [False, True])
def test_teacher_files_of_an_lmdb_replaced_by_another_of_its_size_are_refused(shared_data, tmp_path,
                                                                             counting_teacher, killed):
    """They were taken for the new LMDB's: 'already complete, nothing to do', and training distilled every
    sample towards another sample's embedding; a run killed before its record resumed over the old rows."""
    from lightface.distill.teacher import has_teacher_embeddings, load_teacher_embeddings, teacher_embeddings_for_lmdb

    data = _orl_lmdb(shared_data, tmp_path / "x.lmdb", [1, 2, 3])
    counting_teacher.stop_at = 5 if killed else None  # killed: chunks 0 and 1 of 2 rows finished, no record yet
    try:
        teacher_embeddings_for_lmdb(data, chunk=2, progress=False)
    except KeyboardInterrupt:
        assert killed and not (data / "teacher_dlib.json").exists()
    counting_teacher.stop_at = None
    _replace_lmdb(data, _orl_lmdb(shared_data, tmp_path / "other.lmdb", [4, 5, 6]))  # 6 other faces
    refused = (r"the dlib teacher embeddings beside .*x\.lmdb .* were computed for another LMDB than the one there "
               r"now \(they were written for another build of it.*\); remove them \(rm -r .*teacher_dlib\.\*\) and "
               r"compute them again with: python -m pipelines\.teacher_embeddings --data ")
    calls = counting_teacher.calls
    with pytest.raises(ValueError, match=refused):
        teacher_embeddings_for_lmdb(data, chunk=2, progress=False)
    assert counting_teacher.calls == calls  # nothing computed over the old rows
    with pytest.raises(ValueError, match=refused):
        load_teacher_embeddings(data, allow_partial=True)
    assert not has_teacher_embeddings(data)


def test_teacher_files_of_an_lmdb_of_another_size_are_refused(shared_data, tmp_path, counting_teacher):
    """Files written before they named their LMDB: a smaller LMDB was reported complete and then refused by
    training with the same command as the fix (a loop); a larger one crashed with a bare IndexError."""
    import shutil

    from lightface.distill.teacher import load_teacher_embeddings, teacher_embeddings_for_lmdb

    small = _orl_lmdb(shared_data, tmp_path / "small.lmdb", [1, 2])  # 4 faces
    teacher_embeddings_for_lmdb(small, chunk=2, progress=False)
    record = json.loads((small / "teacher_dlib.json").read_text())
    record.pop("lmdb", None)  # as written before this change
    (small / "teacher_dlib.json").write_text(json.dumps(record))
    (small / "teacher_dlib.chunks2" / "lmdb_id").unlink(missing_ok=True)
    big = tmp_path / "big.lmdb"
    shutil.copytree(small, big)
    _replace_lmdb(big, _orl_lmdb(shared_data, tmp_path / "other6.lmdb", [3, 4, 5]))  # 6 faces
    _replace_lmdb(small, _orl_lmdb(shared_data, tmp_path / "other2.lmdb", [6]))  # 2 faces
    for data, reason in ((big, r"they are for 4 samples, it holds 6"), (small, r"they are for 4 samples, it holds 2")):
        with pytest.raises(ValueError, match=rf"computed for another LMDB than the one there now \({reason}\); "
                                             r"remove them"):
            teacher_embeddings_for_lmdb(data, chunk=2, progress=False)
        with pytest.raises(ValueError, match=reason):
            load_teacher_embeddings(data)


def test_an_unfinished_computation_counts_the_chunks_of_shards_killed_after_the_record(shared_data, tmp_path,
                                                                                      counting_teacher):
    """Shard 1 finished and wrote its record (2 of 6 rows); shard 0 then finished chunk 0 and was killed: the
    refusal said 2 of 6 were done where the chunk markers hold 4."""
    from lightface.distill.teacher import load_teacher_embeddings, teacher_embeddings_for_lmdb

    data = _orl_lmdb(shared_data, tmp_path / "x.lmdb", [1, 2, 3])  # chunks of 2: shard 0 has 0 and 2, shard 1 has 1
    assert teacher_embeddings_for_lmdb(data, chunk=2, shard=1, shards=2, progress=False)["done"] == 2
    counting_teacher.stop_at = 2 + 3  # shard 0 killed on its first row of chunk 2
    with pytest.raises(KeyboardInterrupt):
        teacher_embeddings_for_lmdb(data, chunk=2, shard=0, shards=2, progress=False)
    with pytest.raises(ValueError, match=r"are incomplete \(4 of 6 done\); resume with: .* --chunk 2 "):
        load_teacher_embeddings(data)
