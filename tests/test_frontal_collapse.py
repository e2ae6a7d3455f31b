"""TP-GAN collapse regression: a short training on real CFP pose pairs must not give constant outputs.

What collapsed (docs/frontalization.md, "Why training collapsed"): the EMA generator of a
short run stayed at its random initialisation (flat gray: sigmoid of ~0), and the pixel
loss against a different photo of the person pulled the raw generator to one mean face.
The fixes are checked here: the EMA warm-up and the frontal self pairs of
``PosePairDataset``.
"""
import numpy as np
import pytest
import torch

from lightface.data import write_lmdb
from lightface.data.align import align_face
from lightface.data.pose_pairs import PosePairDataset, cfp_five_points
from lightface.engine.ema import ModelEMA
from lightface.engine.gan import GANObjective
from lightface.losses.frontal import FrontalLoss
from lightface.models import get_model

IDS = ("001", "002", "003")


def test_ema_warmup_follows_early_training():
    net = torch.nn.Linear(4, 4)
    ema = ModelEMA(net, 0.999)
    plain = ModelEMA(net, 0.999, warmup=False)
    with torch.no_grad():
        net.weight.add_(1.0)
    for _ in range(3):
        ema.update(net)
        plain.update(net)
    assert ema.updates == 3 and ema.current_decay() == pytest.approx(5 / 14)
    # warm-up: decays 2/11, 3/12, 4/13 -> the initialisation keeps only their product
    init_share = (2 / 11) * (3 / 12) * (4 / 13)
    torch.testing.assert_close(ema.module.weight, net.weight - init_share)
    torch.testing.assert_close(plain.module.weight, net.weight - 0.999 ** 3)  # ~the initialisation
    ema.load_state_dict(ema.state_dict())
    assert ema.current_decay() == 0.999  # loaded without a count: treated as warmed up
    ema.load_state_dict(ema.state_dict(), updates=3)
    assert ema.current_decay() == pytest.approx(5 / 14)


@pytest.fixture(scope="module")
def cfp_pairs(tmp_path_factory, shared_data):
    """3 CFP identities x (4 frontal + 2 profile), aligned 128 RGB crops in a pose-tagged LMDB."""
    import cv2

    root = shared_data / "cfp_train"
    samples = []
    for label, ident in enumerate(IDS):
        for pose, n in (("frontal", 4), ("profile", 2)):
            for k in range(1, n + 1):
                img = cv2.imread(str(root / "Images" / ident / pose / f"{k:02d}.jpg"))
                fid = np.loadtxt(root / "Fiducials" / ident / pose / f"{k:02d}.txt", delimiter=",")
                lm = cfp_five_points(fid, pose)
                crop, M = align_face(img, lm, "lightcnn", size=128)
                lm_crop = (lm @ M[:, :2].T + M[:, 2]).astype(np.float32)
                samples.append({"image": crop, "label": label, "landmarks": lm_crop, "attributes": {"pose": pose}})
    out = tmp_path_factory.mktemp("cfp") / "pairs.lmdb"
    write_lmdb(out, samples, list(IDS))
    return out


def test_self_pairs(cfp_pairs):
    ds = PosePairDataset(cfp_pairs, mirror="left", self_pairs=1.0)
    assert len(ds.inputs) == 6 and len(ds.self_inputs) == 6 and len(ds) == 12
    for i in range(6, 12):
        item = ds[i]
        assert item["self_pair"] and torch.equal(item["input"], item["target"])
    assert not ds[0]["self_pair"] and not torch.equal(ds[0]["input"], ds[0]["target"])
    assert len(PosePairDataset(cfp_pairs, self_pairs=0.5)) == 9 and len(PosePairDataset(cfp_pairs)) == 6
    with pytest.raises(ValueError, match="self_pairs"):
        PosePairDataset(cfp_pairs, self_pairs=-1)
    with pytest.raises(IndexError):
        ds[12]


@pytest.mark.slow
def test_short_training_gives_input_dependent_frontals(cfp_pairs):
    """20 steps of the trainer's G/D step on real pairs: the EMA generator (what Frontalizer loads)
    must leave the flat-gray initialisation and give different images for different inputs."""
    torch.manual_seed(0)
    data = PosePairDataset(cfp_pairs, mirror="left", self_pairs=1.0)
    G = get_model("tpgan", width=8, feature_dim=16, noise_dim=4)
    D = get_model("tpgan_discriminator", width=8)
    objective = GANObjective()
    criterion = FrontalLoss(None, objective)  # the paper's weights
    opt_g = torch.optim.Adam(G.parameters(), lr=1e-3, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=1e-3, betas=(0.5, 0.999))
    ema = ModelEMA(G, 0.999)  # the trainers' default decay
    probes = torch.stack([data[i]["input"] for i in range(len(data))])
    targets = torch.stack([data[i]["target"] for i in range(len(data))])

    def score(net):
        with torch.no_grad():
            out = net.eval().frontalize(probes)
        return out.flatten(1).std(1).mean().item(), out.std(0).mean().item(), (out - targets).abs().mean().item()

    init_std, init_cross, init_l1 = score(ema.module)
    assert init_std < 0.03  # the initial generator is (nearly) flat gray
    g = torch.Generator().manual_seed(0)
    G.train()
    for _ in range(20):
        idx = torch.randperm(len(data), generator=g)[:4].tolist()
        x = torch.stack([data[i]["input"] for i in idx])
        y = torch.stack([data[i]["target"] for i in idx])
        out = G(x)
        loss, terms = criterion(out, y, D, patch_boxes=G.boxes)
        opt_g.zero_grad()
        loss.backward()
        opt_g.step()
        ema.update(G)
        d_loss, _ = objective.discriminator_loss(D, y, out["img128"])
        opt_d.zero_grad()
        d_loss.backward()
        opt_d.step()
    std, cross, l1 = score(ema.module)
    assert std > 3 * init_std, (std, init_std)  # not a flat image
    assert cross > 3 * init_cross, (cross, init_cross)  # not one image for every input
    assert l1 < init_l1 - 0.02, (l1, init_l1)  # closer to the targets than the flat start
