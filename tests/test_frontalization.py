"""Frontalization data, Frontalizer and the train/frontalize pipelines (tiny models)."""
import json
import logging
import shutil
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lightface.data import LMDBDataset, write_lmdb
from lightface.data.align import template_points
from lightface.data.pose_pairs import (
    PosePairDataset,
    cfp_five_points,
    facing,
    image_to_tensor,
    is_frontal,
    split_identities,
    write_cfp_landmarks,
    yaw_offset,
)
from lightface.models.tpgan import TPGANGenerator
from lightface.restore.frontalizer import Frontalizer

LEFT_PROFILE = np.array([[40, 40], [60, 40], [30, 64], [45, 88], [60, 88]], np.float32)  # nose left of the eyes


@pytest.fixture(scope="module")
def pose_lmdb(tmp_path_factory):
    """3 identities x (2 frontal + 2 profile) 128x128 BGR crops; identity k's images have value 40k+..."""
    rng = np.random.default_rng(0)
    samples = []
    for label in range(3):
        for pose, n in (("frontal", 2), ("profile", 2)):
            for j in range(n):
                img = np.full((128, 128, 3), 40 * label + 10 * j, np.uint8)
                img[:, :8] = rng.integers(0, 255, (128, 8, 3), dtype=np.uint8)  # left-edge stripe
                lm = template_points("lightcnn", 128).astype(np.float32)
                if pose == "profile":
                    lm = LEFT_PROFILE if j == 0 else LEFT_PROFILE * [-1, 1] + [128, 0]  # j=1 faces right
                samples.append({"image": img, "label": label, "landmarks": lm, "attributes": {"pose": pose}})
    out = tmp_path_factory.mktemp("pose") / "pose.lmdb"
    write_lmdb(out, samples, ["a", "b", "c"])
    return out


def test_is_frontal_and_facing():
    assert is_frontal("frontal") and is_frontal("Front") and not is_frontal("profile")
    assert is_frontal(10.0) and not is_frontal(-40)
    with pytest.raises(ValueError, match="pose tag"):
        is_frontal(None)
    assert facing(LEFT_PROFILE) == "left"
    assert facing(LEFT_PROFILE * [-1, 1] + [128, 0]) == "right"


def test_yaw_offset_of_template_and_profile_points():
    frontal = template_points("lightcnn", 128)
    assert yaw_offset(frontal) == pytest.approx(0.0, abs=1e-9)
    assert yaw_offset(LEFT_PROFILE) == pytest.approx((30 - 51.25) / 48)  # nose 21.25 px left, eye-mouth 48 px
    assert yaw_offset(LEFT_PROFILE * [-1, 1] + [128, 0]) == pytest.approx(-yaw_offset(LEFT_PROFILE))


def test_pose_check_tells_real_profiles_from_frontals_and_catches_a_pass_through(shared_data, shared_models, tmp_path):
    """det_500m's landmarks on aligned CFP crops put every frontal under FRONTAL_OFFSET and every profile over
    it (the shipped YuNet's nearly every frontal); the validation's pose check then shows a generator that passes profiles through for what it is."""
    from lightface.data.align import align_face
    from lightface.engine.frontal_trainer import evaluate_frontalization
    from lightface.eval.frontal_pose import FRONTAL_OFFSET, load_pose_detector, pose_report
    from lightface.models import get_model

    root, samples, faces = shared_data / "cfp", [], {}
    for pose in ("frontal", "profile"):
        for label, person in enumerate(("451", "460", "470")):
            for k in ("01", "02"):
                img = cv2.imread(str(root / "Images" / person / pose / f"{k}.jpg"))
                fid = np.loadtxt(root / "Fiducials" / person / pose / f"{k}.txt", delimiter=",")
                lm = cfp_five_points(fid, pose)
                crop, M = align_face(img, lm, template="lightcnn", size=128)
                samples.append({"image": crop, "label": label, "landmarks": (lm @ M[:, :2].T + M[:, 2]).astype(np.float32),
                                "attributes": {"pose": pose}})
    # det_500m; and the shipped YuNet (it travels to a lent GPU, ../shared does not): 5 of these 6 frontals
    # (34 of 35 held-out CFP gallery photos), no profile
    for spec, frontal_share, profile_offset in (("yunet", 5 / 6, 1.5 * FRONTAL_OFFSET),
                                                (shared_models / "det_500m.onnx", 1.0, 2 * FRONTAL_OFFSET)):
        detector = load_pose_detector(spec)
        for pose in ("frontal", "profile"):
            faces[pose] = pose_report(torch.stack([image_to_tensor(r["image"]) for r in samples
                                                   if r["attributes"]["pose"] == pose]), detector)
        assert faces["frontal"]["frontal_share"] >= frontal_share - 1e-9
        assert faces["frontal"]["mean_abs_offset"] < FRONTAL_OFFSET / 2
        assert faces["profile"]["frontal_share"] == 0.0 and faces["profile"]["mean_abs_offset"] > profile_offset
    write_lmdb(tmp_path / "cfp.lmdb", samples, ["451", "460", "470"])
    ds = PosePairDataset(tmp_path / "cfp.lmdb", mirror="left", fixed_target=True)
    judge = get_model("lightcnn9", num_classes=0).eval()
    passed = evaluate_frontalization(_Stand(False), judge, ds, torch.device("cpu"), detector=detector)
    assert passed["val_frontal_share_frontal"] == passed["val_frontal_share_raw"] == 0.0
    assert passed["val_yaw_frontal"] == pytest.approx(passed["val_yaw_raw"]) and passed["val_yaw_raw"] > 0.3
    assert passed["val_frontal_share_gallery"] == 1.0


def test_split_identities_reproducible():
    labels = [0, 0, 1, 2, 3, 3, 4]
    a = split_identities(labels, 3, seed=1)
    assert a == split_identities(labels, 3, seed=1)
    assert len(a[0]) == 3 and len(a[1]) == 2 and not set(a[0]) & set(a[1])
    assert sorted(a[0] + a[1]) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="num_train"):
        split_identities(labels, 5)


def test_image_to_tensor_colour_order():
    bgr = np.zeros((4, 4, 3), np.uint8)
    bgr[..., 2] = 255  # red in BGR
    t = image_to_tensor(bgr)
    assert t.shape == (3, 4, 4) and t.dtype == torch.float32
    assert t[0].min() == 1.0 and t[1:].max() == 0.0  # RGB: red first
    g = image_to_tensor(bgr, channels=1)
    assert g.shape == (1, 4, 4) and g[0, 0, 0].item() == pytest.approx(0.299, abs=2 / 255)


class _Stand(torch.nn.Module):
    """A stand-in generator: passes profiles through, or averages them with their mirror image."""

    def __init__(self, mirror_average: bool):
        super().__init__()
        self.mirror_average = mirror_average

    def frontalize(self, x):
        return (x + x.flip(-1)) / 2 if self.mirror_average else x


def test_evaluation_measures_asymmetry_and_exposes_a_pass_through(pose_lmdb):
    from lightface.engine.frontal_trainer import evaluate_frontalization
    from lightface.models import get_model

    ds = PosePairDataset(pose_lmdb, mirror="left", fixed_target=True)
    judge = get_model("lightcnn9", num_classes=0).eval()
    passed = evaluate_frontalization(_Stand(False), judge, ds, torch.device("cpu"))
    assert passed["val_asym_frontal"] == pytest.approx(passed["val_asym_raw"])  # nothing was frontalized
    assert passed["val_rank1_frontal"] == passed["val_rank1_raw"]
    assert passed["val_asym_raw"] > 0.02 and passed["val_asym_gallery"] > 0.02  # the random left-edge stripe
    symmetric = evaluate_frontalization(_Stand(True), judge, ds, torch.device("cpu"))
    assert symmetric["val_asym_frontal"] == pytest.approx(0, abs=1e-6)


class _Gray(torch.nn.Module):
    """A stand-in generator that draws the same flat gray face for every input."""

    def frontalize(self, x):
        return torch.full_like(x, 0.5)


def test_frontal_inputs_check_keeps_a_pass_through_and_exposes_a_constant_face(pose_lmdb):
    """The probes are each person's second frontal, against the first: passed through they score the raw
    rank-1 exactly; one face drawn for everybody can be right for one person at most."""
    from lightface.engine.frontal_trainer import evaluate_frontal_inputs
    from lightface.models import get_model

    ds = PosePairDataset(pose_lmdb, mirror="left", fixed_target=True)
    judge = get_model("lightcnn9", num_classes=0).eval()
    passed = evaluate_frontal_inputs(_Stand(False), judge, ds, torch.device("cpu"))
    assert passed["probes"] == 3  # 3 people x their one non-gallery frontal
    assert passed["rank1_frontal"] == passed["rank1_raw"]
    assert passed["cos_frontal"] == pytest.approx(passed["cos_raw"])
    gray = evaluate_frontal_inputs(_Gray(), judge, ds, torch.device("cpu"))
    assert gray["rank1_frontal"] == pytest.approx(1 / 3)  # every probe goes to the same gallery face
    assert gray["rank1_raw"] == passed["rank1_raw"]
    assert evaluate_frontal_inputs(_Gray(), judge, ds, torch.device("cpu"), per_identity=0) == {"probes": 0.0}


def test_identity_bank_is_each_persons_mean_frontal_feature(pose_lmdb):
    """identity_bank row k: the normalised mean judge feature of identity k's frontals and their mirror images."""
    from lightface.engine.frontal_trainer import identity_bank
    from lightface.losses.identity import IdentityLoss
    from lightface.models import get_model

    ds = PosePairDataset(pose_lmdb, mirror="left")
    judge = IdentityLoss(get_model("lightcnn9", num_classes=0).eval())
    bank = identity_bank(judge, ds, [2, 0], torch.device("cpu"), per_identity=1)
    assert bank.shape == (2, 256)
    for row, label in enumerate((2, 0)):
        x = image_to_tensor(ds.load(ds.frontals[label][0])[0])[None]
        with torch.no_grad():
            feats = [F.normalize(judge.features(v)["fc"], dim=1) for v in (x, x.flip(-1))]
        torch.testing.assert_close(bank[row], F.normalize(feats[0] + feats[1], dim=1)[0], atol=1e-5, rtol=0)


def test_identity_banks_are_cached_per_judges_and_data(pose_lmdb, tmp_path, caplog):
    """The banks are written beside the run and read back on a restart; other judges, or a damaged file, recompute
    them (and nothing in the cache is executed: it is loaded with weights_only)."""
    from lightface.engine.frontal_trainer import identity_bank, identity_banks
    from lightface.losses.identity import IdentityLoss
    from lightface.models import get_model

    ds = PosePairDataset(pose_lmdb, mirror="left")
    torch.manual_seed(0)
    judges = [IdentityLoss(get_model("lightcnn9", num_classes=0).eval()) for _ in range(2)]
    cache = tmp_path / "identity_banks.pt"
    first = identity_banks(judges, ds, [2, 0, 1], torch.device("cpu"), cache=cache)
    assert cache.exists() and len(first) == 2
    torch.testing.assert_close(first[1], identity_bank(judges[1], ds, [2, 0, 1], torch.device("cpu")))
    with caplog.at_level(logging.INFO, logger="lightface.engine.frontal_trainer"):
        again = identity_banks(judges, ds, [2, 0, 1], torch.device("cpu"), cache=cache)
    assert "read from" in caplog.text
    for a, b in zip(first, again):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="lightface.engine.frontal_trainer"):
        swapped = identity_banks(judges[::-1], ds, [2, 0, 1], torch.device("cpu"), cache=cache)
    assert "other judges or data" in caplog.text
    torch.testing.assert_close(swapped[0], first[1], atol=0, rtol=0)
    torch.save([first[0]], cache)  # a torch file, but not a bank cache
    torch.testing.assert_close(identity_banks(judges, ds, [2, 0, 1], torch.device("cpu"), cache=cache)[0], first[0],
                               atol=0, rtol=0)
    cache.write_bytes(b"not a torch file")
    with caplog.at_level(logging.WARNING, logger="lightface.engine.frontal_trainer"):
        repaired = identity_banks(judges, ds, [2, 0, 1], torch.device("cpu"), cache=cache)
    assert "unreadable" in caplog.text
    torch.testing.assert_close(repaired[0], first[0], atol=0, rtol=0)


def test_pose_pairs_paired(pose_lmdb):
    ds = PosePairDataset(pose_lmdb, mirror=None)
    assert len(ds) == 6 and ds.identities() == [0, 1, 2]
    for i in range(len(ds)):
        item = ds[i]
        assert item["input"].shape == (3, 128, 128) and item["target"].shape == (3, 128, 128)
        assert item["label"] == item["target_label"]
        assert ds.data.attributes(item["index"])["pose"] == "profile"
        assert not item["flipped"]


def test_pose_pairs_input_transform_changes_inputs_only(pose_lmdb):
    """--augment camera: every input is a changed copy of the stored photo (same shape, same facing side); targets,
    a self pair's included, stay exactly as stored."""
    from lightface.data.transforms import frontal_input_transform

    plain = PosePairDataset(pose_lmdb, mirror="left", fixed_target=True, self_pairs=1.0)
    aug = PosePairDataset(pose_lmdb, mirror="left", fixed_target=True, self_pairs=1.0,
                          input_transform=frontal_input_transform())
    changed = 0
    for i in range(len(plain)):
        a, b = plain[i], aug[i]
        assert b["input"].shape == a["input"].shape and b["input"].dtype == torch.float32
        assert b["flipped"] == a["flipped"] and b["self_pair"] == a["self_pair"]
        torch.testing.assert_close(b["target"], a["target"], atol=0, rtol=0)
        changed += not torch.equal(a["input"], b["input"])
    # albumentations draws from its own generator (global seeds do not reach it): an input stays unchanged only when
    # all seven steps skip (p about 0.04), so half of the 12 unchanged is out of reach
    assert changed >= len(plain) // 2
    gray = frontal_input_transform()(image=np.full((128, 128), 100, np.uint8))["image"]
    assert gray.shape == (128, 128, 3) and gray.dtype == np.uint8


def test_pose_pairs_seeded_per_sample_and_epoch(pose_lmdb):
    """PosePairDataset(seed=): each pair's augmentation and random target come from (seed, epoch, index), so two
    datasets (two runs) give the same items, also through DataLoader workers; another epoch draws others."""
    from torch.utils.data import DataLoader

    from lightface.data.transforms import frontal_input_transform

    def make(seed=0):
        return PosePairDataset(pose_lmdb, paired=False, self_pairs=0.5, seed=seed,
                               input_transform=frontal_input_transform())

    def items(ds, workers=0):
        loader = DataLoader(ds, batch_size=None, shuffle=False, num_workers=workers)
        return [(b["input"], b["target_label"]) for b in loader]

    def same(a, b):
        return all(torch.equal(x[0], y[0]) and x[1] == y[1] for x, y in zip(a, b))

    first = items(make())
    assert same(first, items(make())) and same(first, items(make(), workers=2))
    other = make()
    other.set_epoch(1)
    assert not same(first, items(other))
    assert not same(first, items(make(seed=1)))


def test_train_with_augmented_inputs_repeats_under_the_same_seed(pose_lmdb, tmp_path):
    """train_frontalization --augment camera --seed 0 twice: the same losses step by step."""
    from lightface.engine.logger import read_metrics
    from pipelines import train_frontalization

    parser, losses = train_frontalization.get_args_parser(), []
    for run in ("a", "b"):
        train_frontalization.main(parser.parse_args(_tiny_train_argv(
            pose_lmdb, tmp_path / run, "--steps", "2", "--seed", "0", "--augment", "camera", "--val-every", "100",
            "--no-plots")))
        losses.append([r["l_g_total"] for r in read_metrics(tmp_path / run / "metrics.jsonl") if "l_g_total" in r])
    assert len(losses[0]) == 2 and losses[0] == losses[1]


def test_pose_pairs_mirror_and_identities(pose_lmdb):
    ds = PosePairDataset(pose_lmdb, mirror="left", identities=[1, 2], fixed_target=True)
    assert len(ds) == 4 and ds.identities() == [1, 2]
    raw = LMDBDataset(pose_lmdb)
    for i in range(len(ds)):
        item = ds[i]
        src = image_to_tensor(raw[item["index"]]["image"])
        right_facing = facing(raw[item["index"]]["landmarks"]) == "right"
        assert item["flipped"] == right_facing
        assert torch.equal(item["input"], src.flip(-1) if right_facing else src)
        # the target is the identity's first frontal, flipped with its input
        tgt = image_to_tensor(raw[ds.frontals[item["label"]][0]]["image"])
        assert torch.equal(item["target"], tgt.flip(-1) if right_facing else tgt)


def test_pose_pairs_unpaired_and_errors(pose_lmdb, tmp_path):
    torch.manual_seed(0)
    ds = PosePairDataset(pose_lmdb, paired=False, identities=[0, 1, 2])
    seen = {ds[0]["target_label"] for _ in range(30)}
    assert len(seen) > 1  # targets drawn from every identity
    with pytest.raises(ValueError, match="mirror"):
        PosePairDataset(pose_lmdb, mirror="up")
    with pytest.raises(ValueError, match="non-frontal"):
        PosePairDataset(pose_lmdb, pose_key="yaw")
    big = [{"image": np.zeros((200, 150, 3), np.uint8), "label": 0, "attributes": {"pose": p}}
           for p in ("frontal", "profile")]
    write_lmdb(tmp_path / "big.lmdb", big, ["a"])
    with pytest.raises(ValueError, match="without landmarks"):
        PosePairDataset(tmp_path / "big.lmdb")[0]


def test_cfp_five_points(shared_data):
    root = shared_data / "cfp"
    fid = np.loadtxt(root / "Fiducials/451/frontal/01.txt", delimiter=",")
    pts = cfp_five_points(fid, "frontal")
    assert pts.shape == (5, 2)
    assert pts[0, 0] < pts[1, 0] and pts[3, 0] < pts[4, 0]
    mid = (pts[0, 0] + pts[1, 0]) / 2
    assert abs(mid - fid[18:23, 0].mean()) < 3  # the eyes straddle the annotated midline
    assert pts[0, 1] < pts[2, 1] < pts[3, 1]  # eyes above nose above mouth
    prof = cfp_five_points(np.loadtxt(root / "Fiducials/451/profile/01.txt", delimiter=","), "profile")
    assert prof[0, 1] < prof[2, 1] < prof[3, 1]
    with pytest.raises(ValueError, match="pose"):
        cfp_five_points(fid, "side")
    with pytest.raises(ValueError, match=r"\(30, 2\)"):
        cfp_five_points(fid[:5], "frontal")


def _tiny_gen():
    torch.manual_seed(0)
    return TPGANGenerator(width=8, noise_dim=4, feature_dim=8)


def test_frontalizer_aligned_and_mirroring():
    fr = Frontalizer(_tiny_gen(), device="cpu", mirror="left")
    crop = np.random.default_rng(0).integers(0, 255, (128, 128, 3), dtype=np.uint8)
    out = fr.frontalize_face(crop)
    assert out.shape == (128, 128, 3) and out.dtype == np.uint8
    # a right-facing crop is mirrored in and out
    flipped = fr.frontalize_face(crop, facing="right")
    assert np.array_equal(flipped, fr.frontalize_face(crop[:, ::-1].copy())[:, ::-1])
    assert np.array_equal(fr.frontalize_face(crop, facing="left"), out)
    # gray and other sizes are accepted
    assert fr.frontalize_face(cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)).shape == (128, 128, 3)
    assert fr.frontalize_face(cv2.resize(crop, (64, 64))).shape == (128, 128, 3)
    with pytest.raises(ValueError, match="detector"):
        fr.frontalize(crop)


def test_frontalizer_rejects_other_checkpoints(tmp_path):
    from lightface.models import get_model
    from lightface.models.checkpoint import save_model_checkpoint

    path = save_model_checkpoint(tmp_path / "l.pth", get_model("lightcnn9", num_classes=0), "lightcnn9", {"num_classes": 0})
    with pytest.raises(ValueError, match="not a tpgan checkpoint"):
        Frontalizer(path, device="cpu")


def _tiny_train_argv(data, out, *extra):
    return ["--data", str(data), "--out", str(out), "--width", "8", "--d-width", "8", "--noise-dim", "4",
            "--feature-dim", "8", "--batch-size", "2", "--workers", "0", "--log-every", "1", "--val-every", "2",
            "--num-samples", "2", "--device", "cpu", *map(str, extra)]


def test_train_tiny_resume_and_load(pose_lmdb, tmp_path):
    from lightface.engine.checkpoint import load_checkpoint
    from lightface.engine.logger import read_metrics
    from pipelines import train_frontalization

    parser, out = train_frontalization.get_args_parser(), tmp_path / "run"
    res = train_frontalization.main(parser.parse_args(_tiny_train_argv(pose_lmdb, out, "--steps", "2")))
    assert res["step"] == 2 and res["stopped"] == "completed" and (out / "samples" / "step_0000002.png").is_file()
    # resumed with FNM's recipe (no pixel target for the profiles: the batch's self_pair flags pick the weights),
    # a discriminator shown the real profiles as fakes, a jittered identity term and augmented inputs
    res = train_frontalization.main(parser.parse_args(_tiny_train_argv(pose_lmdb, out, "--steps", "3", "--resume",
                                                                       "--profile-pixel", "0", "--profiles-as-fake",
                                                                       "--ip-jitter", "0.05", "--augment", "camera")))
    assert res["step"] == 3
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl") if "l_g_total" in r] == [1, 2, 3]
    last = load_checkpoint(out / "last.pt")
    assert last["task"] == "frontalization" and set(last["networks"]) == {"D"} and "gan_state" in last
    fr = Frontalizer(out / "model.pt", device="cpu")
    assert fr.frontalize_face(np.zeros((128, 128, 3), np.uint8)).shape == (128, 128, 3)


def test_ema_decay_0_validates_and_saves_the_raw_generator(pose_lmdb, tmp_path):
    """--ema-decay 0 keeps no EMA: the samples and validation use the raw generator, model.pt holds it alone."""
    from lightface.engine.checkpoint import load_checkpoint
    from pipelines import train_frontalization

    out = tmp_path / "run"
    res = train_frontalization.main(train_frontalization.get_args_parser().parse_args(
        _tiny_train_argv(pose_lmdb, out, "--steps", "2", "--ema-decay", "0")))
    assert res["step"] == 2 and "val_cos_frontal" in res and (out / "samples" / "step_0000002.png").is_file()
    assert "ema_state_dict" not in load_checkpoint(out / "model.pt")
    assert Frontalizer(out / "model.pt", device="cpu").frontalize_face(np.zeros((128, 128, 3), np.uint8)).shape == \
        (128, 128, 3)


def test_cycle_with_began_gives_the_profile_critic_its_own_k_t(pose_lmdb, tmp_path):
    """--cycle with --began-gamma: D_p has its own GAN objective, so its BEGAN k_t is its own, logged as
    l_k_t_profile beside D's l_k_t, saved in last.pt (gan_state_profile) and restored by --resume; a checkpoint
    without it (both critics shared one k_t before) gives D_p D's k_t."""
    from lightface.engine.checkpoint import load_checkpoint
    from lightface.engine.logger import read_metrics
    from pipelines import train_frontalization

    parser, out = train_frontalization.get_args_parser(), tmp_path / "run"
    argv = _tiny_train_argv(pose_lmdb, out, "--cycle", "1", "--began-gamma", "0.5", "--began-lambda-k", "0",
                            "--identity-weights", "none", "--no-tensorboard", "--no-plots")  # lambda_k 0: k_t stays put

    def resume(steps: int, k_t: float, k_t_profile: "float | None") -> dict:
        last = load_checkpoint(out / "last.pt")
        last["gan_state"]["began"]["k_t"] = k_t
        if k_t_profile is None:
            del last["gan_state_profile"]
        else:
            last["gan_state_profile"]["began"]["k_t"] = k_t_profile
        torch.save(last, out / "last.pt")
        train_frontalization.main(parser.parse_args([*argv, "--steps", str(steps), "--resume"]))
        return [r for r in read_metrics(out / "metrics.jsonl") if "l_g_total" in r][-1]

    train_frontalization.main(parser.parse_args([*argv, "--steps", "1"]))
    assert load_checkpoint(out / "last.pt")["gan_state_profile"]["began"]["k_t"] == 0.0
    logged = resume(2, 0.75, 0.25)
    assert (logged["l_k_t"], logged["l_k_t_profile"]) == (0.75, 0.25)
    assert {"l_d_began_real_profile", "l_M_global_profile", "l_g_adv_profile", "l_g_cycle"} <= set(logged)
    logged = resume(3, 0.5, None)
    assert (logged["l_k_t"], logged["l_k_t_profile"]) == (0.5, 0.5)


@pytest.mark.parametrize("extra", [(), ("--cycle", "1", "--d-every", "2")])
def test_d_steps_gives_each_critic_step_a_fresh_batch(pose_lmdb, tmp_path, monkeypatch, extra):
    """--d-steps 2: the second critic step sees the next batch's frontals and the updated generator's output for
    its inputs (before: the same batch and fakes twice), also D_p with --cycle; a step that trains the critic
    takes 2 batches (with --d-every 2, only every second step does)."""
    from lightface.engine import gan
    from lightface.engine.checkpoint import load_checkpoint
    from pipelines import train_frontalization

    seen = []
    loss = gan.GANObjective.discriminator_loss

    def spy(self, D, real, fake):
        seen.append((real.detach().clone(), fake.detach().clone()))
        return loss(self, D, real, fake)

    monkeypatch.setattr(gan.GANObjective, "discriminator_loss", spy)
    out = tmp_path / "run"
    steps = 2 if extra else 1
    train_frontalization.main(train_frontalization.get_args_parser().parse_args(_tiny_train_argv(
        pose_lmdb, out, "--steps", steps, "--d-steps", "2", "--identity-weights", "none", *extra)))
    critics = 2 if extra else 1
    assert len(seen) == 2 * critics
    first, second = seen[:critics], seen[critics:]
    for (_, fake_a), (_, fake_b) in zip(first, second):
        assert not torch.equal(fake_a, fake_b)
    last = load_checkpoint(out / "last.pt")
    # --cycle: the 6 profiles make 3 batches, step 1 (no critic step) took one, step 2 two: the epoch is done
    assert (last["epoch"], last["batch_in_epoch"]) == ((1, 0) if extra else (0, 2))


@pytest.mark.parametrize("extra", [(), ("--cycle", "1")])
def test_d_steps_with_began_updates_k_t_once_per_generator_step(pose_lmdb, tmp_path, monkeypatch, extra):
    """--began-gamma with --d-steps 3: one k_t update per generator step (per critic with --cycle), from the mean
    L(x), L(G(z)) of the step's 3 critic updates; it was updated after each, 3 times BEGAN's gain lambda_k."""
    from lightface.engine.checkpoint import load_checkpoint
    from lightface.losses import gan_regularizers
    from pipelines import train_frontalization

    updates = []
    update = gan_regularizers.BEGANController.update

    def spy(self, loss_real, loss_fake):
        updates.append((float(loss_real), float(loss_fake)))
        return update(self, loss_real, loss_fake)

    monkeypatch.setattr(gan_regularizers.BEGANController, "update", spy)
    out = tmp_path / "run"
    train_frontalization.main(train_frontalization.get_args_parser().parse_args(_tiny_train_argv(
        pose_lmdb, out, "--steps", "1", "--d-steps", "3", "--began-gamma", "1", "--began-lambda-k", "0.1",
        "--identity-weights", "none", "--no-tensorboard", "--no-plots", *extra)))
    critics = 2 if extra else 1
    assert len(updates) == critics
    k_t = load_checkpoint(out / "last.pt")["gan_state"]["began"]["k_t"]
    assert k_t == pytest.approx(min(max(0.1 * (updates[0][0] - updates[0][1]), 0.0), 1.0))


def test_a_d_steps_run_saved_before_fresh_critic_batches_resumes_at_its_data_position(pose_lmdb, tmp_path,
                                                                                        monkeypatch):
    """Before session 48 a --d-steps N step took one batch (its N critic updates reused it), so such a run's
    last.pt counts one batch per step in batch_in_epoch; a step now takes N. Resumed, it continues at the next
    batch the old run had not used (batch_in_epoch counts batches in both), not N times further on."""
    from lightface.engine import gan
    from lightface.engine.checkpoint import load_checkpoint
    from pipelines import train_frontalization

    reals = []
    loss = gan.GANObjective.discriminator_loss

    def spy(self, D, real, fake):
        reals.append(real.detach().clone())
        return loss(self, D, real, fake)

    monkeypatch.setattr(gan.GANObjective, "discriminator_loss", spy)
    parser = train_frontalization.get_args_parser()

    def run(out, *extra):
        train_frontalization.main(parser.parse_args(_tiny_train_argv(
            pose_lmdb, out, "--identity-weights", "none", "--no-tensorboard", "--no-plots", *extra)))

    run(tmp_path / "order", "--steps", "3")  # --d-steps 1: one batch per step, the epoch's order
    order = list(reals)
    assert not torch.equal(order[1], order[2])
    reals.clear()
    run(tmp_path / "run", "--steps", "1", "--d-steps", "2")
    last = load_checkpoint(tmp_path / "run" / "last.pt")
    assert (last["step"], last["epoch"], last["batch_in_epoch"]) == (1, 0, 2)
    last["batch_in_epoch"] = 1  # as saved by a version whose --d-steps step took one batch
    torch.save(last, tmp_path / "run" / "last.pt")
    reals.clear()
    run(tmp_path / "run", "--steps", "2", "--d-steps", "2", "--resume")
    assert len(reals) == 2 and torch.equal(reals[0], order[1]) and torch.equal(reals[1], order[2])
    assert load_checkpoint(tmp_path / "run" / "last.pt")["step"] == 2


def test_profiles_as_fake_needs_a_loss_that_takes_more_fakes_than_reals(pose_lmdb, tmp_path):
    from lightface.engine.engine import TrainingError
    from pipelines import train_frontalization

    argv = _tiny_train_argv(pose_lmdb, tmp_path / "run", "--steps", "1", "--profiles-as-fake", "--adversarial", "wgan-gp")
    with pytest.raises(TrainingError, match="--profiles-as-fake"):
        train_frontalization.main(train_frontalization.get_args_parser().parse_args(argv))


def test_profiles_as_fake_with_minibatch_std_is_refused_before_training(pose_lmdb, tmp_path, capsys):
    """The fakes plus the batch's real profiles are a batch of varying size (5 for 4 pairs with one profile):
    the run stopped at its first step inside MinibatchStdDev, advising a --batch-size multiple of 4 that it had."""
    from pipelines import train_frontalization
    from pipelines._cli import run_cli

    argv = _tiny_train_argv(pose_lmdb, tmp_path / "run", "--steps", "2", "--batch-size", "4", "--profiles-as-fake",
                            "--minibatch-std", "--identity-weights", "none")
    assert run_cli(train_frontalization.main, train_frontalization.get_args_parser, argv) == 2
    err = capsys.readouterr().err
    assert "--profiles-as-fake with --minibatch-std" in err and not (tmp_path / "run" / "last.pt").exists()


@pytest.mark.parametrize("flags, message", [
    (("--noise-dim", "-1"), "--noise-dim must be >= 0"),
    (("--train-identities", "3"), "--train-identities 3: .* holds 3 people; use 1..2"),
])
def test_bad_sizes_exit_2_naming_the_flag(pose_lmdb, tmp_path, capsys, flags, message):
    """A negative noise size (a shape error deep in the generator) and a training split that leaves nobody
    for validation are configuration errors naming the flag, exit 2."""
    import re

    from pipelines import train_frontalization
    from pipelines._cli import run_cli

    argv = _tiny_train_argv(pose_lmdb, tmp_path / "run", "--steps", "1", *flags)
    assert run_cli(train_frontalization.main, train_frontalization.get_args_parser, argv) == 2
    assert re.search(message, capsys.readouterr().err)


def test_profile_pixel_steps_keep_the_pixel_target_of_profiles_first(pose_lmdb, tmp_path, caplog):
    """--profile-pixel-steps N: profile pairs keep their pixel target for N steps, then --profile-pixel applies."""
    from lightface.engine.engine import TrainingError
    from lightface.engine.frontal_trainer import FrontalTrainConfig
    from pipelines import train_frontalization

    cfg = FrontalTrainConfig(data=str(pose_lmdb), profile_pixel=0.0, profile_pixel_steps=2)
    assert [cfg.profile_pixel_at(step) for step in (1, 2, 3, 10)] == [1.0, 1.0, 0.0, 0.0]
    assert FrontalTrainConfig(data=str(pose_lmdb), profile_pixel=0.3).profile_pixel_at(1) == 0.3
    parser = train_frontalization.get_args_parser()
    with caplog.at_level(logging.INFO, logger="lightface.engine.frontal_trainer"):
        train_frontalization.main(parser.parse_args(_tiny_train_argv(
            pose_lmdb, tmp_path / "run", "--steps", "3", "--profile-pixel", "0", "--profile-pixel-steps", "2")))
    assert "step 3: profile pairs now weigh 0 in the pixel terms" in caplog.text
    with pytest.raises(TrainingError, match="--profile-pixel-steps must be >= 0"):
        train_frontalization.main(parser.parse_args(_tiny_train_argv(
            pose_lmdb, tmp_path / "bad", "--steps", "1", "--profile-pixel-steps", "-1")))


def test_workers_start_with_the_shipped_pose_detector_loaded(pose_lmdb, tmp_path):
    """DataLoader workers forked after the YuNet pose check is loaded start and run OpenCV single-threaded
    (a worker that set OpenCV's thread count itself waited forever under OMP_NUM_THREADS=1)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}
    argv = _tiny_train_argv(pose_lmdb, tmp_path / "run", "--steps", "2", "--pose-detector", "yunet")
    argv[argv.index("--workers") + 1] = "1"
    done = subprocess.run([sys.executable, "-m", "pipelines.train_frontalization", *argv], env=env, timeout=180,
                          capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "run" / "model.pt").is_file()


def test_device_run_returns_the_generator_in_parts_that_collect_joins(pose_lmdb, tmp_path):
    """pipelines.device_frontalization as on a lent GPU (here on the CPU): --pack sends the pose LMDB as one
    archive and says what the call carries; there, the archive is unpacked in --work and is the trainer's
    --data, training happens in --work, --out gets float16 generator parts under a returned file's 16 MiB,
    the run's files and last sample grid; --collect joins the parts into a checkpoint Frontalizer loads."""
    from lightface.models.checkpoint import read_model_checkpoint
    from pipelines import device_frontalization as dev
    from pipelines._cli import parse_with_config
    from pipelines.device_bundle import tracked_bytes
    from pipelines.device_train import PART_BYTES

    archive, out, work = tmp_path / "call" / "pose.tgz", tmp_path / "OUT", tmp_path / "work"
    packed = dev.main(parse_with_config(dev.get_args_parser(), [
        "--pack", str(pose_lmdb), "--archive", str(archive), "--wheels", str(tmp_path / "no_wheels"), "--no-wheels"]))
    assert archive.is_file() and packed["lmdb"] == pose_lmdb.name and packed["wheels_mib"] == 0
    assert packed["carry_mib"] == round((archive.stat().st_size + tracked_bytes()) / 2**20, 2)
    argv = _tiny_train_argv(pose_lmdb, tmp_path / "overridden", "--steps", "2")
    argv = argv[2:]  # the archive brings the data
    result = dev.main(parse_with_config(dev.get_args_parser(), [
        "--data-archive", str(archive), "--out", str(out), "--work", str(work), "--device", "cpu", "--minutes", "5",
        "--", *argv]))
    assert result["error"] is None and result["run"]["step"] == 2 and not (tmp_path / "overridden").exists()
    config = (out / "config.yaml").read_text()
    assert f"data: {work / 'data' / pose_lmdb.name}" in config
    # a later call on the same machine reuses the unpacked LMDB
    (work / "data" / pose_lmdb.name / "kept").write_text("x")
    assert dev.unpack_archive(archive, work) == work / "data" / pose_lmdb.name
    assert (work / "data" / pose_lmdb.name / "kept").is_file()
    # the data comes once; an archive that holds no LMDB is refused
    with pytest.raises(ValueError, match="not both"):
        dev.main(parse_with_config(dev.get_args_parser(), [
            "--data-archive", str(archive), "--out", str(out), "--work", str(work), "--device", "cpu", "--",
            "--data", str(pose_lmdb), *argv]))
    bad = tmp_path / "bad.tgz"
    with tarfile.open(bad, "w:gz") as tar:
        tar.add(out / "config.yaml", arcname="config.yaml")
    with pytest.raises(ValueError, match="not one LMDB folder"):
        dev.unpack_archive(bad, tmp_path / "work_bad")
    names = {p.name for p in out.iterdir()}
    assert set(result["parts"]) | {"summary.json", "metrics.jsonl", "config.yaml", "samples_step_0000002.png"} <= names
    assert all((out / p).stat().st_size <= PART_BYTES + (64 << 10) for p in result["parts"])
    joined = dev.main(parse_with_config(dev.get_args_parser(), ["--collect", str(out), "--checkpoint",
                                                                  str(tmp_path / "joined.pt")]))
    trained = read_model_checkpoint(work / "run" / "model.pt")
    state = read_model_checkpoint(joined["checkpoint"]).state_dict
    ref = trained.ema_state_dict or trained.state_dict
    assert set(state) == set(ref)
    for k, v in ref.items():
        torch.testing.assert_close(state[k], v.half().float())
    face = np.random.default_rng(0).integers(0, 255, (128, 128, 3), dtype=np.uint8)
    assert Frontalizer(joined["checkpoint"], device="cpu").frontalize_face(face).shape == (128, 128, 3)
    # the joined checkpoint keeps the run's config: Frontalizer mirrors right-facing faces to the run's --mirror
    # (it used to record none, so every face was used as given), and release_model reads it
    kept = read_model_checkpoint(joined["checkpoint"]).extra["config"]
    assert kept["mirror"] == trained.extra["config"]["mirror"] == "left" and kept["width"] == 8
    assert Frontalizer(joined["checkpoint"], device="cpu").mirror == "left"


def test_finetune_starts_from_a_trained_generator(pose_lmdb, tmp_path):
    from lightface.engine.checkpoint import load_checkpoint
    from lightface.engine.engine import TrainingError
    from pipelines import train_frontalization

    parser, src, out = train_frontalization.get_args_parser(), tmp_path / "src", tmp_path / "ft"
    train_frontalization.main(parser.parse_args(_tiny_train_argv(pose_lmdb, src, "--steps", "2")))
    train_frontalization.main(parser.parse_args(_tiny_train_argv(pose_lmdb, out, "--steps", "1", "--lr", "1e-12",
                                                                 "--finetune", src / "model.pt")))
    start, tuned = load_checkpoint(src / "model.pt")["ema_state_dict"], load_checkpoint(out / "last.pt")["state_dict"]
    assert all(torch.allclose(start[k].float(), tuned[k].float(), atol=1e-6) for k in start)  # started from its EMA
    # other model flags are named, as is a missing file
    with pytest.raises(TrainingError, match="--width 8 \\(not 16\\)"):
        train_frontalization.main(parser.parse_args(_tiny_train_argv(pose_lmdb, tmp_path / "w", "--steps", "1",
                                                                     "--width", "16", "--finetune", src / "model.pt")))
    with pytest.raises(TrainingError, match="no such file, nor a shipped model"):
        train_frontalization.main(parser.parse_args(_tiny_train_argv(pose_lmdb, tmp_path / "m", "--steps", "1",
                                                                     "--finetune", tmp_path / "missing.pt")))


def test_identity_condition_fine_tunes_an_unconditioned_generator_and_names_its_recogniser(pose_lmdb, tmp_path):
    """--identity-condition: the generator starts exactly where the unconditioned one ended, the saved model
    records the judge's checkpoint, and Frontalizer loads that recogniser for the condition by itself."""
    from lightface.engine.checkpoint import load_checkpoint
    from lightface.engine.engine import TrainingError
    from lightface.models import get_model
    from lightface.models.checkpoint import save_model_checkpoint
    from pipelines import train_frontalization

    judge = save_model_checkpoint(tmp_path / "judge.pth", get_model("lightcnn9", num_classes=0), "lightcnn9",
                                  {"num_classes": 0})
    parser, src, out = train_frontalization.get_args_parser(), tmp_path / "src", tmp_path / "cond"
    train_frontalization.main(parser.parse_args(_tiny_train_argv(pose_lmdb, src, "--steps", "2")))
    argv = _tiny_train_argv(pose_lmdb, out, "--steps", "1", "--identity-weights", judge, "--identity-condition",
                            "--finetune", src / "model.pt", "--ip-extra-judges", judge, "--lambda-ip-rank", "1",
                            "--ip-reference", "both")  # the condition's judge pass also serves L_ip's input term
    train_frontalization.main(parser.parse_args([*argv, "--lr", "1e-12"]))
    face = torch.from_numpy(np.random.default_rng(0).random((1, 3, 128, 128), np.float32))
    plain, cond = Frontalizer(src / "model.pt", device="cpu"), Frontalizer(out / "model.pt", device="cpu")
    assert cond.model.condition_network == str(judge.resolve())
    assert load_checkpoint(out / "model.pt")["model_kwargs"]["condition_network"] == str(judge.resolve())
    torch.testing.assert_close(cond.model.frontalize(face), plain.model.frontalize(face), atol=1e-4, rtol=0)
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("l_g_ip_rank" in r for r in logged)  # the ranking term over the identity banks of both judges
    assert (out / "identity_banks.pt").exists()  # kept for --resume
    # unpaired (--cycle): the same judge pass gives the condition and the identity term against the input
    cycle = tmp_path / "cycle"
    train_frontalization.main(parser.parse_args(_tiny_train_argv(pose_lmdb, cycle, "--steps", "1", "--cycle", "1",
                                                                 "--identity-weights", judge, "--identity-condition",
                                                                 "--lambda-ip", "1")))
    assert any(r.get("l_g_ip", 0) > 0 for r in map(json.loads, (cycle / "metrics.jsonl").read_text().splitlines()))
    # an unconditioned generator cannot start from a conditioned one; the flag needs a recogniser
    with pytest.raises(TrainingError, match="--identity-condition"):
        train_frontalization.main(parser.parse_args(_tiny_train_argv(pose_lmdb, tmp_path / "back", "--steps", "1",
                                                                     "--finetune", out / "model.pt")))
    with pytest.raises(TrainingError, match="--identity-condition needs a recogniser"):
        train_frontalization.main(parser.parse_args(_tiny_train_argv(pose_lmdb, tmp_path / "off", "--steps", "1",
                                                                     "--identity-condition", "--identity-weights",
                                                                     "none")))
    with pytest.raises(TrainingError, match="--lambda-ip-rank needs the identity judge"):
        train_frontalization.main(parser.parse_args(_tiny_train_argv(pose_lmdb, tmp_path / "rank", "--steps", "1",
                                                                     "--lambda-ip-rank", "1", "--identity-weights",
                                                                     "none")))


@pytest.mark.slow
def test_train_cycle_under_torchrun(pose_lmdb, tmp_path):
    """Unpaired (--cycle) TP-GAN on 2 CPU processes: four DDP-wrapped networks, parameters unused by some
    losses (find_unused_parameters), global batch split over the ranks, every rank's RNG state saved."""
    from torchrun_helper import finish, run_torchrun, start_torchrun

    from lightface.engine.checkpoint import load_checkpoint

    out = tmp_path / "ddp"
    args = ["-m", "pipelines.train_frontalization", *_tiny_train_argv(pose_lmdb, out, "--steps", "2", "--cycle", "1",
                                                                        "--batch-size", "4")]
    run_torchrun(args, tmp_path / "even", timeout=1200)
    last = load_checkpoint(out / "last.pt")
    assert last["step"] == 2 and len(last["rng"]) == 2 and set(last["networks"]) == {"D", "P", "D_p"}
    odd = start_torchrun(args[:-2] + ["--batch-size", "3", "--overwrite"], tmp_path / "odd")
    _, _, logs = finish(odd, tmp_path / "odd", timeout=600, ok_codes=range(1, 256))
    assert "must be divisible by the 2 processes" in logs, logs


@pytest.mark.slow
def test_train_resume_frontalize_end_to_end(shared_data, shared_models, tmp_path, caplog):
    """CFP subset -> pose LMDB -> 2 steps (with the pose check and its pass-through warning) -> resume to 3 ->
    frontalize real photos (and a bad file)."""
    from lightface.data import build_lmdb
    from lightface.models import get_model
    from lightface.models.checkpoint import save_model_checkpoint
    from pipelines import frontalize, train_frontalization

    cfp = shared_data / "cfp"
    src = tmp_path / "cfp"
    for ident in ("451", "452", "453"):
        shutil.copytree(cfp / "Images" / ident, src / ident)
    lm = tmp_path / "cfp_5pt.txt"
    assert write_cfp_landmarks(cfp, lm) == 490
    summary = build_lmdb(src, tmp_path / "pose.lmdb", size=128, color="rgb", template="lightcnn", landmarks=lm,
                         progress=False)
    assert summary["written"] == 42
    ident = save_model_checkpoint(tmp_path / "id.pth", get_model("lightcnn9", num_classes=0), "lightcnn9",
                                  {"num_classes": 0})
    out = tmp_path / "run"
    argv = ["--data", str(tmp_path / "pose.lmdb"), "--identity-weights", str(ident), "--out", str(out),
            "--width", "8", "--d-width", "8", "--noise-dim", "4", "--batch-size", "2", "--workers", "0",
            "--train-identities", "2", "--log-every", "1", "--val-every", "2", "--save-every", "1",
            "--num-samples", "2"]
    parser = train_frontalization.get_args_parser()
    res = train_frontalization.main(parser.parse_args(argv + ["--steps", "2", "--pose-detector",
                                                               str(shared_models / "det_500m.onnx")]))
    assert res["step"] == 2 and 0 <= res["val_rank1_frontal"] <= 1 and res["val_gallery"] == 1
    # the same rank-1 on as many training people (here the first of two): their gap is overfitting
    assert res["fit_rank1_raw"] == 1.0 and 0 <= res["fit_rank1_frontal"] <= 1  # one gallery face: always right
    assert -1 <= res["fit_cos_frontal"] <= 1
    # the pose check: the held-out person's profiles read as profiles, the gallery frontal as frontal
    assert res["val_frontal_share_raw"] == 0.0 and res["val_frontal_share_gallery"] == 1.0
    assert 0 <= res["val_frontal_share_frontal"] <= 1
    # outputs that do not read as frontal are named for what they are
    warned = any("is not frontalizing" in r.getMessage() for r in caplog.records)
    assert warned == (res["val_frontal_share_frontal"] < 0.5)
    assert (out / "samples" / "step_0000002.png").is_file()
    res = train_frontalization.main(parser.parse_args(argv + ["--steps", "3", "--resume", "auto"]))
    assert res["step"] == 3
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and steps[-1] == 3 and 1 in steps
    # the resumed weights continue from the checkpoint: 3 steps total in the final file
    from lightface.engine.checkpoint import load_checkpoint

    final = load_checkpoint(out / "model.pt")
    assert final["arch"] == "tpgan" and final["step"] == 3 and "ema_state_dict" in final

    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(cfp / "Images/455/profile/01.jpg", inputs / "profile.jpg")
    (inputs / "broken.jpg").write_bytes(b"not an image")
    args = frontalize.get_args_parser().parse_args(
        ["-i", str(inputs), "-o", str(tmp_path / "fr"), "--weights", str(out / "model.pt"),
         "--detector", str(shared_models / "det_500m.onnx"), "--device", "cpu", "--paste"])
    summary = frontalize.main(args)
    assert [s["input"].endswith("broken.jpg") for s in summary["skipped"]] == [True]
    assert summary["processed"][0]["faces"] >= 1
    face = cv2.imread(str(tmp_path / "fr" / "restored_faces" / "profile_00.png"))
    assert face.shape == (128, 128, 3)
    assert cv2.imread(str(tmp_path / "fr" / "cmp" / "profile_00.png")).shape == (128, 256, 3)
    assert (tmp_path / "fr" / "restored_imgs" / "profile.jpg").is_file()


def test_frontalize_tensor_refuses_what_is_not_a_float_image_in_0_1():
    fr = Frontalizer(_tiny_gen(), device="cpu")
    with pytest.raises(TypeError, match="frontalize_tensor input must be a float tensor.*uint8"):
        fr.frontalize_tensor(torch.full((1, 3, 128, 128), 200, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"frontalize_tensor input must be in \[0, 1\].*divide 0..255 images by 255"):
        fr.frontalize_tensor(torch.full((1, 3, 128, 128), 200.0))
    assert fr.frontalize_tensor(torch.rand(1, 3, 128, 128)).shape == (1, 3, 128, 128)


@pytest.mark.parametrize("flags,named", [
    (["--aligned", "--paste", "--only-center-face", "--detector", "no_such_detector.onnx"],
     "--paste --only-center-face --detector"),
    (["--facing", "right"], "--facing"),
])
def test_frontalize_refuses_flags_that_cannot_apply_before_anything_loads(tmp_path, capsys, flags, named):
    """--aligned --paste exited 0 with no restored_imgs/ and no word why; --facing without --aligned did nothing."""
    from pipelines._cli import run_cli
    from pipelines.frontalize import get_args_parser, main

    cv2.imwrite(str(tmp_path / "crop.png"), np.zeros((128, 128, 3), np.uint8))
    argv = ["-i", str(tmp_path / "crop.png"), "-o", str(tmp_path / "out"), "--weights", str(tmp_path / "none.pt"),
            "--device", "cpu", *flags]
    assert run_cli(main, get_args_parser, argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"frontalize: error: {named}: ") and "; drop " in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


def test_frontalize_aligned_facing_auto_mirrors_each_crop_by_its_own_direction(shared_data, tmp_path):
    """A folder of aligned CFP profile crops looking both ways took one --facing for all of them: half were fed
    to the model the way it was never trained (shipped rc4, 20 CFP people: identity cosine with the person's
    frontal 0.29 for the right-facing ones unmirrored, 0.42 mirrored). --facing auto reads each crop's direction
    from the landmarks the detector finds on it (the shipped YuNet here), and mirrors those that need it."""
    from lightface.data.align import align_face
    from lightface.data.pose_pairs import read_cfp_fiducials
    from pipelines._cli import run_cli
    from pipelines.frontalize import get_args_parser, main

    cfp, crops, truth = shared_data / "cfp", tmp_path / "crops", {}
    crops.mkdir()
    for pid in ("451", "452"):
        for n in ("01", "02", "03", "04"):
            landmarks = read_cfp_fiducials(cfp / "Fiducials" / pid / "profile" / f"{n}.txt", "profile")
            crop, _ = align_face(cv2.imread(str(cfp / "Images" / pid / "profile" / f"{n}.jpg")), landmarks)
            cv2.imwrite(str(crops / f"{pid}_{n}.png"), crop)
            truth[f"{pid}_{n}"] = facing(landmarks)
    assert set(truth.values()) == {"left", "right"}
    common = ["-i", str(crops), "--aligned", "--device", "cpu"]
    summary = main(get_args_parser().parse_args([*common, "-o", str(tmp_path / "auto"), "--facing", "auto",
                                                 "--detector", "yunet"]))
    fr = Frontalizer(device="cpu")
    assert fr.mirror == "left"
    notes = {p["name"]: p["notes"] for p in summary["processed"]}
    assert notes == {name: ["looks right: mirrored to the model's direction"] if way == "right" else []
                     for name, way in truth.items()}
    for name, way in truth.items():  # each crop as it looks, told one by one
        out = cv2.imread(str(tmp_path / "auto" / "restored_faces" / f"{name}_00.png"))
        crop = cv2.imread(str(crops / f"{name}.png"))
        np.testing.assert_array_equal(out, fr.frontalize_face(crop, way))
    with pytest.raises(ValueError, match="needs a face detector"):  # the library says what to pass
        fr.frontalize_face(crop, "auto")
    argv = [*common, "-o", str(tmp_path / "x"), "--detector", "yunet"]  # --detector alone still cannot apply
    assert run_cli(main, get_args_parser, argv) == 2


def test_frontalize_takes_a_folders_sub_folders_unless_told_not_to(tmp_path, caplog):
    """frontalize -i DIR left out every image in DIR's sub-folders and said nothing about them."""
    from lightface.models.checkpoint import save_model_checkpoint
    from pipelines.frontalize import get_args_parser, main

    kwargs = dict(width=8, noise_dim=4, feature_dim=8)
    weights = save_model_checkpoint(tmp_path / "fr.pth", TPGANGenerator(**kwargs), "tpgan", kwargs)
    for rel in ("in/top.png", "in/sub/a.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(tmp_path / rel), np.full((128, 128, 3), 90, np.uint8))
    common = ["-i", str(tmp_path / "in"), "--weights", str(weights), "--aligned", "--device", "cpu"]
    summary = main(get_args_parser().parse_args([*common, "-o", str(tmp_path / "all")]))
    assert sorted(p["name"] for p in summary["processed"]) == ["sub/a", "top"]
    assert (tmp_path / "all" / "restored_faces" / "sub" / "a_00.png").is_file()
    with caplog.at_level("WARNING", logger="lightface.restore.folder"):
        summary = main(get_args_parser().parse_args([*common, "-o", str(tmp_path / "top"), "--no-recursive"]))
    assert [p["name"] for p in summary["processed"]] == ["top"]
    assert "left out 1 sub-folder(s), e.g. " in caplog.text and "sub" in caplog.text


# ---- session 47: the data the trainer accepts, scores in the photo's direction, refusals, empty inputs ----------


def _write_pose(path, alignment, landmarks=True):
    """2 people x (1 frontal + 2 profiles, one looking each way) 128x128 crops, with the given recorded alignment."""
    samples = []
    for label in range(2):
        for pose, lm in (("frontal", template_points("lightcnn", 128)), ("profile", LEFT_PROFILE),
                         ("profile", LEFT_PROFILE * [-1, 1] + [128, 0])):
            img = np.full((128, 128, 3), 60 + 80 * label, np.uint8)
            samples.append({"image": img, "label": label, "attributes": {"pose": pose},
                            **({"landmarks": np.asarray(lm, np.float32)} if landmarks else {})})
    write_lmdb(path, samples, ["a", "b"], alignment=alignment)
    return path


@pytest.mark.parametrize("alignment, landmarks, flags, message", [
    ({"template": "ffhq", "size": 128, "method": "cfp_fiducials"}, True, (), "aligned to the 'ffhq' template"),
    ({"template": None, "size": 128, "method": "none", "resize": "crop"}, False, ("--mirror", "none"),
     "not aligned \\(plainly resized\\)"),
    ({"template": "lightcnn", "size": 128, "method": "detect"}, False, (), "--mirror left: .* holds no landmarks"),
])
def test_train_refuses_pose_data_the_patch_boxes_or_the_mirror_cannot_use(tmp_path, capsys, alignment, landmarks,
                                                                           flags, message):
    """TP-GAN's patch boxes sit on the lightcnn template, and --mirror needs landmarks: an LMDB built otherwise
    (as build_lmdb records it) is refused, exit 2, with the build_lmdb command to rebuild it."""
    import re

    from pipelines import train_frontalization
    from pipelines._cli import run_cli

    data = _write_pose(tmp_path / "pose.lmdb", alignment, landmarks)
    argv = _tiny_train_argv(data, tmp_path / "run", "--steps", "1", "--identity-weights", "none", *flags)
    assert run_cli(train_frontalization.main, train_frontalization.get_args_parser, argv) == 2
    err = capsys.readouterr().err
    assert re.search(message, err) and "--template lightcnn" in err
    assert not (tmp_path / "run" / "model.pt").exists()


def test_pose_data_check_takes_lightcnn_crops_and_unrecorded_alignment(tmp_path):
    from lightface.engine.frontal_trainer import pose_data_problems

    aligned = _write_pose(tmp_path / "a.lmdb", {"template": "lightcnn", "size": 128, "method": "cfp_fiducials"})
    assert pose_data_problems(LMDBDataset(aligned), "left") == []
    unrecorded = _write_pose(tmp_path / "u.lmdb", None, landmarks=False)  # write_lmdb without alignment=
    assert pose_data_problems(LMDBDataset(unrecorded), "none") == []
    assert "holds no landmarks" in pose_data_problems(LMDBDataset(unrecorded), "left")[0]


class _Judge(torch.nn.Module):
    """A stand-in recogniser that reads which side of the face is brighter (not mirror-invariant)."""

    def forward(self, x):
        half = x.shape[-1] // 2
        left, right = x[..., :half].mean((1, 2, 3)), x[..., half:].mean((1, 2, 3))
        return torch.stack([left, right, x.mean((1, 2, 3))], 1)


def test_identity_scores_are_taken_in_the_photos_own_direction(tmp_path):
    """The generator sees probes mirrored to its direction, but the recogniser must compare what Frontalizer
    returns (mirrored back) with the unmirrored gallery: a pass-through scores exactly the unmirrored run."""
    from lightface.engine.frontal_trainer import evaluate_frontalization

    samples = []
    rng = np.random.default_rng(1)
    for label in range(3):
        for pose, lm in (("frontal", template_points("lightcnn", 128)), ("profile", LEFT_PROFILE),
                         ("profile", LEFT_PROFILE * [-1, 1] + [128, 0])):
            img = rng.integers(0, 255, (128, 128, 3), dtype=np.uint8)
            img[:, :64] //= 1 + 2 * label  # each person has their own brightness on the image's left
            samples.append({"image": img, "label": label, "landmarks": np.asarray(lm, np.float32),
                            "attributes": {"pose": pose}})
    write_lmdb(tmp_path / "p.lmdb", samples, ["a", "b", "c"])
    mirrored = PosePairDataset(tmp_path / "p.lmdb", mirror="left", fixed_target=True)
    as_taken = PosePairDataset(tmp_path / "p.lmdb", mirror=None, fixed_target=True)
    assert sum(mirrored[i]["flipped"] for i in range(len(mirrored))) == 3
    judge, cpu = _Judge(), torch.device("cpu")
    got, want = (evaluate_frontalization(_Stand(False), judge, ds, cpu) for ds in (mirrored, as_taken))
    for key in ("val_cos_raw", "val_cos_frontal", "val_rank1_raw", "val_rank1_frontal"):
        assert got[key] == pytest.approx(want[key]), key


def test_pose_check_runs_without_an_identity_judge(pose_lmdb, tmp_path):
    """--pose-detector with --identity-weights none: the pose check (and the asymmetry) is still logged."""
    from lightface.engine.logger import read_metrics
    from pipelines import train_frontalization

    out = tmp_path / "run"
    argv = _tiny_train_argv(pose_lmdb, out, "--steps", "2", "--identity-weights", "none", "--pose-detector", "yunet")
    train_frontalization.main(train_frontalization.get_args_parser().parse_args(argv))
    val = [r for r in read_metrics(out / "metrics.jsonl") if "val_frontal_share_frontal" in r]
    assert val and {"val_yaw_raw", "val_asym_frontal"} <= set(val[-1]) and "val_rank1_raw" not in val[-1]


@pytest.mark.parametrize("flags, named", [
    (("--profiles-as-fake",), "--profiles-as-fake"),
    (("--lambda-patch", "5"), "--lambda-patch 5"),
    (("--profile-pixel-steps", "100"), "--profile-pixel-steps 100"),
])
def test_cycle_refuses_the_paired_only_options(pose_lmdb, tmp_path, capsys, flags, named):
    from pipelines import train_frontalization
    from pipelines._cli import run_cli

    argv = _tiny_train_argv(pose_lmdb, tmp_path / "run", "--steps", "1", "--cycle", "1", *flags)
    assert run_cli(train_frontalization.main, train_frontalization.get_args_parser, argv) == 2
    err = capsys.readouterr().err
    assert named in err and "paired training only" in err


@pytest.mark.parametrize("lambda_ce", ["0", "1"])
def test_finetune_reads_the_start_checkpoint_once(pose_lmdb, tmp_path, monkeypatch, lambda_ce):
    """--finetune read the start file twice (once for its classifier size, once for its weights), also
    with --lambda-ce's fresh classifier."""
    from pipelines import train_frontalization

    parser, src = train_frontalization.get_args_parser(), tmp_path / "src"
    train_frontalization.main(parser.parse_args(_tiny_train_argv(pose_lmdb, src, "--steps", "1",
                                                                 "--identity-weights", "none")))
    reads, load = [], torch.load

    def spy(f, *args, **kwargs):
        reads.append(str(f))
        return load(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    train_frontalization.main(parser.parse_args(_tiny_train_argv(pose_lmdb, tmp_path / "ft", "--steps", "1",
                                                                 "--identity-weights", "none", "--lambda-ce",
                                                                 lambda_ce, "--finetune", src / "model.pt")))
    assert reads.count(str(src / "model.pt")) == 1


def test_finetune_with_lambda_ce_gives_the_start_a_fresh_identity_classifier(pose_lmdb, tmp_path):
    from lightface.engine.checkpoint import load_checkpoint
    from pipelines import train_frontalization

    parser, src, out = train_frontalization.get_args_parser(), tmp_path / "src", tmp_path / "ce"
    train_frontalization.main(parser.parse_args(_tiny_train_argv(pose_lmdb, src, "--steps", "1",
                                                                 "--identity-weights", "none")))
    train_frontalization.main(parser.parse_args(_tiny_train_argv(pose_lmdb, out, "--steps", "1", "--lr", "1e-12",
                                                                 "--identity-weights", "none", "--lambda-ce", "1",
                                                                 "--finetune", src / "model.pt")))
    start, tuned = load_checkpoint(src / "model.pt")["ema_state_dict"], load_checkpoint(out / "last.pt")
    assert tuned["model_kwargs"]["num_classes"] == 3 and "classifier.weight" in tuned["state_dict"]
    assert all(torch.allclose(start[k].float(), tuned["state_dict"][k].float(), atol=1e-6) for k in start)
    # and back: a start with a classifier fine-tunes without --lambda-ce (its classifier is left behind)
    train_frontalization.main(parser.parse_args(_tiny_train_argv(pose_lmdb, tmp_path / "plain", "--steps", "1",
                                                                 "--identity-weights", "none",
                                                                 "--finetune", out / "model.pt")))
    assert "classifier.weight" not in load_checkpoint(tmp_path / "plain" / "last.pt")["state_dict"]


def test_frontalizer_empty_inputs():
    fr = Frontalizer(_tiny_gen(), device="cpu", mirror="left")
    assert fr.frontalize_tensor(torch.rand(0, 3, 128, 128)).shape == (0, 3, 128, 128)
    with pytest.raises(ValueError, match="empty crop"):
        fr.frontalize_face(np.zeros((0, 0, 3), np.uint8))


def test_cfp_landmarks_file_is_replaced_whole(shared_data, tmp_path):
    """write_cfp_landmarks writes a new file and renames it over the old one (a killed run leaves the old file,
    never a truncated one): a second name linked to the old file keeps the old content."""
    import os

    cfp = tmp_path / "cfp"
    for part in ("Images", "Fiducials"):
        (cfp / part).mkdir(parents=True)
        (cfp / part / "451").symlink_to(shared_data / "cfp" / part / "451")
    out = tmp_path / "5pt.txt"
    out.write_text("old\n")
    os.link(out, tmp_path / "old_link.txt")
    assert write_cfp_landmarks(cfp, out) > 0
    assert (tmp_path / "old_link.txt").read_text() == "old\n" and out.read_text().startswith("451/")


@pytest.mark.parametrize("backend,channels", [("onnx", 3), ("torchscript", 3), ("onnx", 1)])
def test_an_exported_frontalizer_frontalizes_photos_and_crops_as_the_pytorch_model(shared_data, shared_models,
                                                                                   tmp_path, backend, channels):
    """Frontalizer("frontal.onnx") / the .pt of export_torchscript / frontalize --weights FILE failed with "cannot
    load checkpoint": an exported frontalizer had no face pipeline to run in. It runs under the same detection,
    alignment, mirroring (its card's training direction) and colour conversion: within a grey level of PyTorch."""
    from lightface.export import export_onnx, export_torchscript
    from pipelines import frontalize

    torch.manual_seed(0)
    gen = TPGANGenerator(in_channels=channels, width=8, noise_dim=4, feature_dim=8)
    export = export_onnx if backend == "onnx" else export_torchscript
    det = str(shared_models / "det_500m.onnx")
    ref = Frontalizer(gen, device="cpu", detector=det, mirror="left")
    path = export(ref, tmp_path / ("fr.onnx" if backend == "onnx" else "fr_ts.pt"))
    fr = Frontalizer(path, device="cpu", detector=det)
    assert (fr.mirror, fr.channels, fr.model) == ("left", channels, None)
    assert fr.backend == ("onnxruntime" if backend == "onnx" else "torchscript")
    profiles = sorted((shared_data / "cfp" / "Images" / "451" / "profile").glob("*.jpg"))[:2]  # one looks each way
    flipped = []
    for p in profiles:
        photo = cv2.imread(str(p))
        want, got = ref.frontalize(photo), fr.frontalize(photo)
        assert len(got) == len(want) >= 1
        flipped += [f.flipped for f in got]
        assert [f.flipped for f in got] == [f.flipped for f in want]
        for w, g in zip(want, got):
            assert np.abs(g.frontal.astype(int) - w.frontal).max() <= 1
    assert True in flipped and False in flipped  # both ways: the card's direction mirrors the right-facing ones
    crops = [f.crop for f in ref.frontalize(cv2.imread(str(profiles[0])))] * 3
    facings = ["right", "left", None]
    for w, g in zip(ref.frontalize_faces(crops, facings), fr.frontalize_faces(crops, facings)):
        assert np.abs(g.astype(int) - w).max() <= 1
    x = torch.rand(2, channels, 128, 128)
    assert (fr.frontalize_tensor(x) - ref.frontalize_tensor(x)).abs().max() < 1e-5

    args = frontalize.get_args_parser().parse_args(["-i", str(profiles[0]), "-o", str(tmp_path / "out"),
                                                    "--weights", str(path), "--detector", det, "--device", "cpu"])
    assert frontalize.main(args)["processed"][0]["faces"] >= 1
    got = cv2.imread(str(tmp_path / "out" / "restored_faces" / f"{profiles[0].stem}_00.png"))
    assert np.abs(got.astype(int) - ref.frontalize(cv2.imread(str(profiles[0])))[0].frontal).max() <= 1
