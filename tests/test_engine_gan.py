"""lightface.engine.gan: argparse wiring, config, per-objective losses, BEGAN state, clipping, freezing."""
import argparse

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lightface.engine.checkpoint import load_checkpoint, save_atomic
from lightface.engine.gan import ADVERSARIAL_CHOICES, GAN_DEFAULTS, GANObjective, frozen
from pipelines._cli import add_gan_arguments
from lightface.losses.gan_regularizers import cycle_consistency_loss, feature_matching_loss, pull_away_term
from lightface.models.autoencoder_discriminator import AutoencoderDiscriminator
from lightface.models.registry import get_model


class TinyD(nn.Module):
    """Discriminator following the contract: logits (N, 1); features [hidden (N, 8)]."""

    def __init__(self, minibatch_discrimination=False, minibatch_std=False):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(2 * 4 * 4, 8), nn.LeakyReLU(0.2))
        self.head = nn.Linear(8, 1)

    def forward(self, x, return_features=False):
        h = self.body(x)
        logits = self.head(h)
        return (logits, [h]) if return_features else logits


class NoFeaturesD(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(32, 1)

    def forward(self, x):
        return self.lin(x.flatten(1))


def parse(argv):
    parser = argparse.ArgumentParser()
    add_gan_arguments(parser)
    return parser.parse_args(argv)


def test_defaults_and_dests_match():
    args = parse([])
    assert {k: getattr(args, k) for k in GAN_DEFAULTS} == GAN_DEFAULTS
    obj = GANObjective.from_args(args)
    assert obj.adversarial == "nsgan" and not obj.needs_features and not obj.uses_autoencoder_discriminator
    assert obj.cycle_weight == 0.0
    assert obj.discriminator_kwargs == {"minibatch_discrimination": False, "minibatch_std": False}


def test_flags_parse_into_objective():
    args = parse(["--adversarial", "wgan-gp", "--feature-matching", "0.5", "--minibatch-discrimination",
                  "--pull-away", "0.1", "--cycle", "10", "--gp-weight", "5"])
    obj = GANObjective.from_args(args)
    assert obj.adversarial == "wgan-gp" and obj.gp_weight == 5.0
    assert obj.needs_features and obj.cycle_weight == 10.0
    assert obj.discriminator_kwargs["minibatch_discrimination"] is True
    obj = GANObjective.from_args(parse(["--began-gamma", "0.7", "--began-lambda-k", "0.01"]))
    assert obj.uses_autoencoder_discriminator and obj.began.gamma == 0.7 and obj.began.lambda_k == 0.01


def test_bad_flags_rejected():
    with pytest.raises(SystemExit):
        parse(["--adversarial", "bogus"])
    with pytest.raises(ValueError, match="label smoothing"):
        GANObjective(adversarial="hinge", label_smoothing=0.1)
    with pytest.raises(ValueError, match="weight >= 0"):
        GANObjective(pull_away=-1)
    with pytest.raises(ValueError, match="gamma"):
        GANObjective(began_gamma=1.5)


@pytest.mark.parametrize("settings, named", [
    ({"pull_away": float("nan")}, "--pull-away"),
    ({"feature_matching": float("inf")}, "--feature-matching"),
    ({"adversarial": "wgan-gp", "gp_weight": -1.0}, "--gp-weight"),
    ({"adversarial": "wgan-clip", "clip_value": float("nan")}, "--clip-value"),
    ({"began_gamma": 0.5, "began_lambda_k": -1.0}, "--began-lambda-k"),
    ({"label_smoothing": 1.5}, "--label-smoothing"),
])
def test_bad_values_are_refused_naming_their_flag(settings, named):
    """A NaN weight or clipping bound passed the checks (NaN < 0 is false) and trained NaN weights, reported as a
    divergence to cure with a lower --lr; the other messages named the Python field (gp_weight, lambda_k)."""
    with pytest.raises(ValueError, match=f"^{named} must be"):
        GANObjective(**settings)


def test_help_documents_defaults():
    parser = argparse.ArgumentParser()
    add_gan_arguments(parser)
    text = parser.format_help()
    for flag in ("--adversarial", "--feature-matching", "--minibatch-discrimination", "--pull-away",
                 "--began-gamma", "--cycle", "--gp-weight", "--clip-value", "--label-smoothing"):
        assert flag in text
    assert text.count("default") >= 11


def test_from_config_accepts_yaml_keys_and_ignores_others():
    obj = GANObjective.from_config({"adversarial": "hinge", "feature-matching": 2, "lr": 1e-4, "cycle": 3})
    assert obj.adversarial == "hinge" and obj.feature_matching == 2.0 and obj.cycle_weight == 3.0
    obj = GANObjective.from_config({"gan": {"adversarial": "lsgan", "pull_away": 0.2}})
    assert obj.adversarial == "lsgan" and obj.pull_away == 0.2
    again = GANObjective.from_config(obj.to_config())
    assert again.to_config() == obj.to_config()
    with pytest.raises(TypeError):
        GANObjective.from_config(["adversarial"])


@pytest.mark.parametrize("name", ADVERSARIAL_CHOICES)
def test_discriminator_loss_matches_objective(name):
    torch.manual_seed(0)
    D = TinyD()
    real, fake = torch.randn(4, 2, 4, 4), torch.randn(4, 2, 4, 4)
    obj = GANObjective(adversarial=name)
    loss, terms = obj.discriminator_loss(D, real, fake)
    rl, fl = D(real), D(fake)
    expected = {
        "nsgan": F.softplus(-rl).mean() + F.softplus(fl).mean(),
        "minimax": F.softplus(-rl).mean() + F.softplus(fl).mean(),
        "wgan-gp": fl.mean() - rl.mean(),
        "wgan-clip": fl.mean() - rl.mean(),
        "hinge": F.relu(1 - rl).mean() + F.relu(1 + fl).mean(),
        "lsgan": 0.5 * (rl - 1).pow(2).mean() + 0.5 * fl.pow(2).mean(),
    }[name]
    assert terms["d_adv"] == pytest.approx(expected.item(), rel=1e-5, abs=1e-6)
    assert terms["d_real"] == pytest.approx(rl.mean().item(), abs=1e-6)
    if name == "wgan-gp":
        assert "d_gp" in terms and loss.item() == pytest.approx(terms["d_adv"] + 10 * terms["d_gp"], rel=1e-5)
    else:
        assert loss.item() == pytest.approx(terms["d_adv"], rel=1e-6)
    loss.backward()
    assert all(p.grad is not None for p in D.parameters())


@pytest.mark.parametrize("name", ADVERSARIAL_CHOICES)
def test_generator_loss_decreases_when_d_is_fooled(name):
    """Shift D's output bias up (D calls the fakes 'more real'): every generator loss drops."""
    D = TinyD()
    fake = torch.randn(6, 2, 4, 4)
    obj = GANObjective(adversarial=name)
    before, _ = obj.generator_loss(D, None, fake)
    with torch.no_grad():
        D.head.bias += 0.5
    after, _ = obj.generator_loss(D, None, fake)
    assert after.item() < before.item()


def test_generator_loss_terms_and_frozen_discriminator():
    torch.manual_seed(1)
    D = TinyD()
    real = torch.randn(5, 2, 4, 4)
    fake = torch.randn(5, 2, 4, 4, requires_grad=True)
    obj = GANObjective(adversarial="nsgan", feature_matching=2.0, pull_away=0.5)
    loss, terms = obj.generator_loss(D, real, fake)
    fl, ff = D(fake, return_features=True)
    _, rf = D(real, return_features=True)
    assert terms["g_adv"] == pytest.approx(F.softplus(-fl).mean().item(), rel=1e-6)
    assert terms["g_feature_matching"] == pytest.approx(feature_matching_loss(rf[-1], ff[-1]).item(), rel=1e-6)
    assert terms["g_pull_away"] == pytest.approx(pull_away_term(ff[-1]).item(), rel=1e-6)
    expected = terms["g_adv"] + 2.0 * terms["g_feature_matching"] + 0.5 * terms["g_pull_away"]
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss.backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0
    assert all(p.grad is None for p in D.parameters())  # D frozen during the generator loss
    assert all(p.requires_grad for p in D.parameters())  # and restored afterwards
    with pytest.raises(ValueError, match="real batch"):
        obj.generator_loss(D, None, fake)


def test_features_required_error_is_clear():
    obj = GANObjective(pull_away=1.0)
    with pytest.raises(TypeError, match="return_features"):
        obj.generator_loss(NoFeaturesD(), None, torch.randn(3, 2, 4, 4))


@pytest.mark.parametrize("adversarial", ADVERSARIAL_CHOICES)
@pytest.mark.parametrize("layer", ["minibatch_discrimination", "minibatch_std"])
def test_every_objective_trains_with_every_batch_layer(adversarial, layer):
    """One discriminator and one generator step of each objective with each anti-collapse layer (wgan-gp's
    gradient penalty needs the layers to be twice differentiable)."""
    torch.manual_seed(0)
    D = get_model("image_discriminator", in_channels=2, channels=4, num_blocks=2, **{layer: True})
    real, fake = torch.rand(4, 2, 8, 8), torch.rand(4, 2, 8, 8, requires_grad=True)
    obj = GANObjective(adversarial=adversarial)
    d_loss, _ = obj.discriminator_loss(D, real, fake.detach())
    d_loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in D.parameters())
    g_loss, _ = obj.generator_loss(D, real, fake)
    g_loss.backward()
    assert fake.grad is not None and torch.isfinite(fake.grad).all()


def test_wgan_clip_clips_after_step():
    D = TinyD()
    with torch.no_grad():
        for p in D.parameters():
            p.mul_(100)
    GANObjective(adversarial="wgan-clip", clip_value=0.05).after_discriminator_step(D)
    assert max(p.abs().max().item() for p in D.parameters()) <= 0.05 + 1e-7
    D2 = TinyD()
    before = [p.clone() for p in D2.parameters()]
    GANObjective(adversarial="hinge").after_discriminator_step(D2)
    assert all(torch.equal(a, b) for a, b in zip(before, D2.parameters()))


def test_began_objective_updates_k_and_resumes(tmp_path):
    torch.manual_seed(0)
    obj = GANObjective(began_gamma=0.5, began_lambda_k=0.1)
    D = AutoencoderDiscriminator(channels=1, size=8, hidden=4, latent_dim=4)
    real, fake = torch.rand(3, 1, 8, 8), torch.rand(3, 1, 8, 8) * 4
    loss, terms = obj.discriminator_loss(D, real, fake)
    lr = (real - D(real)).abs().mean().item()
    lf = (fake - D(fake)).abs().mean().item()
    assert terms["d_began_real"] == pytest.approx(lr, rel=1e-6)
    assert terms["d_began_fake"] == pytest.approx(lf, rel=1e-6)
    assert loss.item() == pytest.approx(lr, rel=1e-6)  # k_0 = 0
    assert terms["M_global"] == pytest.approx(lr + abs(0.5 * lr - lf), rel=1e-6)
    assert terms["k_t"] == pytest.approx(min(max(0.1 * (0.5 * lr - lf), 0), 1))
    obj.began.k = 0.25
    path = save_atomic({"gan": obj.state_dict()}, tmp_path / "ckpt.pt")
    resumed = GANObjective(began_gamma=0.5, began_lambda_k=0.1)
    resumed.load_state_dict(load_checkpoint(path)["gan"])
    assert resumed.began.k == 0.25
    g_loss, g_terms = obj.generator_loss(D, real, fake)
    assert g_terms["g_adv"] == pytest.approx(lf, rel=1e-5)
    with pytest.raises(KeyError):
        resumed.load_state_dict({"config": {}})


def _began_batches():
    """A real batch whose two halves differ (what two ranks see), fakes, and the BEGAN discriminator (seeded)."""
    g = torch.Generator().manual_seed(1)
    real, fake = torch.rand(4, 1, 8, 8, generator=g), torch.rand(4, 1, 8, 8, generator=g) * 0.2
    real[2:] *= 3
    torch.manual_seed(0)
    return real, fake, AutoencoderDiscriminator(channels=1, size=8, hidden=4, latent_dim=4)


def _began_k(real, fake, D, calls=3):
    obj = GANObjective(began_gamma=1.0, began_lambda_k=0.05)
    return [obj.discriminator_loss(D, real, fake)[1]["k_t"] for _ in range(calls)]


def _began_k_on_rank(rank, store, out):
    """One of 2 gloo processes: BEGAN's k_t after each discriminator_loss call on this rank's half batch."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        real, fake, D = _began_batches()
        half = slice(2 * rank, 2 * rank + 2)
        torch.save(_began_k(real[half], fake[half], D), f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_began_k_t_is_the_global_batchs_and_the_same_on_every_rank(tmp_path):
    """Under torchrun each rank sees half the batch; the discriminator is one DDP-averaged network, so its k_t
    must be one value too: the update from the global batch's L(x), L(G(z)) (each rank's own drifted apart, the
    log showed their mean and last.pt rank 0's, so a resumed run differed from the uninterrupted one)."""
    import torch.multiprocessing as mp

    real, fake, D = _began_batches()
    whole = _began_k(real, fake, D)
    halves = [_began_k(real[:2], fake[:2], D), _began_k(real[2:], fake[2:], D)]
    assert halves[0] != pytest.approx(halves[1]) and all(0 < k < 1 for k in whole)  # the halves disagree
    mp.spawn(_began_k_on_rank, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert ranks[0] == ranks[1] == pytest.approx(whole, rel=1e-5)


def test_began_round_of_d_steps_updates_k_t_once_from_the_rounds_mean_losses():
    """--d-steps N: BEGAN's k_t is updated once per generator step (Berthelot et al.: once per training step),
    from the mean L(x), L(G(z)) of the step's N critic updates, each of which takes the round's starting k_t;
    before, each critic update moved k_t, an N times larger gain lambda_k."""
    real, fake, D = _began_batches()
    obj = GANObjective(began_gamma=1.0, began_lambda_k=0.05)
    obj.began.k = 0.5
    with obj.discriminator_round(3):
        calls = [obj.discriminator_loss(D, real[:2] * s, fake[:2]) for s in (1.0, 2.0, 3.0)]
    losses = [t for _, t in calls]
    assert [t["k_t"] for t in losses[:2]] == [0.5, 0.5]
    lr = sum(t["d_began_real"] for t in losses) / 3
    lf = sum(t["d_began_fake"] for t in losses) / 3
    assert losses[2]["k_t"] == obj.began.k == pytest.approx(0.5 + 0.05 * (lr - lf), rel=1e-6)
    assert calls[2][0].item() == pytest.approx(losses[2]["d_began_real"] - 0.5 * losses[2]["d_began_fake"], rel=1e-5)
    single = GANObjective(began_gamma=1.0, began_lambda_k=0.05)  # a round of one is the plain call
    with single.discriminator_round(1):
        assert single.discriminator_loss(D, real, fake)[1]["k_t"] == _began_k(real, fake, D, calls=1)[0]


def test_wgan_gp_with_a_batch_coupling_layer_warns(caplog):
    """The gradient penalty differentiates the summed critic output over the whole interpolate batch: with a
    layer that mixes the samples it is no longer the per-sample penalty of WGAN-GP (docs/gan_toolkit.md)."""
    for flag in ("minibatch_discrimination", "minibatch_std"):
        caplog.clear()
        with caplog.at_level("WARNING", logger="lightface.engine.gan"):
            GANObjective(adversarial="wgan-gp", **{flag: True})
        assert "not the per-sample penalty" in caplog.text and f"--{flag.replace('_', '-')}" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="lightface.engine.gan"):
        GANObjective(adversarial="hinge", minibatch_discrimination=True, minibatch_std=True)
        GANObjective(adversarial="wgan-gp")
    assert not caplog.text


@pytest.mark.parametrize("trainer, settings, off", [
    ("sr", {"adv_weight": 0.0}, "--adv-weight 0"),
    ("sr", {"adv_start": 10, "steps": 10}, "--adv-start 10 (--steps 10)"),
    ("frontal", {"lambda_adv": 0.0}, "--lambda-adv 0"),
])
def test_gan_options_of_a_run_without_the_adversarial_term_are_named_in_a_warning(caplog, trainer, settings, off):
    """The discriminator would be built with them, saved and resumed, but never trained nor used."""
    from lightface.engine.frontal_trainer import FrontalizationTask, FrontalTrainConfig
    from lightface.engine.gan import GANConfig
    from lightface.engine.sr_trainer import SRTrainConfig, SuperResolutionTask

    task_cls, cfg_cls, data = ((SuperResolutionTask, SRTrainConfig, ["x"]) if trainer == "sr" else
                               (FrontalizationTask, FrontalTrainConfig, "x"))
    gan = GANConfig(adversarial="wgan-gp", feature_matching=1.0, minibatch_discrimination=True, cycle=0.5)
    with caplog.at_level("WARNING", logger="lightface.engine.gan"):
        assert task_cls(cfg_cls(data=data, out="o", gan=gan, d_steps=5, **settings)).check() == []
    assert f"{off}: the adversarial term is off" in caplog.text
    assert "--adversarial, --feature-matching, --minibatch-discrimination, --d-steps take no effect" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="lightface.engine.gan"):
        task_cls(cfg_cls(data=data, out="o", **settings)).check()  # nothing given: nothing to say
        task_cls(cfg_cls(data=data, out="o", gan=gan)).check()
    assert "adversarial term is off" not in caplog.text


def test_cycle_loss_weighted_and_logged():
    obj = GANObjective(cycle=10.0)
    x, xr = torch.zeros(2, 1, 2, 2), torch.full((2, 1, 2, 2), 0.5)
    y, yr = torch.ones(2, 1, 2, 2), torch.ones(2, 1, 2, 2)
    loss, terms = obj.cycle_loss(x, xr, y, yr)
    assert terms == {"g_cycle": pytest.approx(0.5)}
    assert loss.item() == pytest.approx(5.0)
    assert cycle_consistency_loss(x, xr).item() == pytest.approx(0.5)


def test_frozen_restores_flags_on_error():
    D = TinyD()
    D.head.bias.requires_grad_(False)
    with pytest.raises(RuntimeError):
        with frozen(D):
            assert not any(p.requires_grad for p in D.parameters())
            raise RuntimeError("boom")
    assert D.head.weight.requires_grad and not D.head.bias.requires_grad


@pytest.mark.slow
def test_gan_mixture_benchmark_runs(tmp_path, capsys):
    """The 8-Gaussian benchmark end to end on a tiny budget: table, JSON and scatter PNG."""
    import json

    from benchmarks import gan_mixture

    args = gan_mixture.get_args_parser().parse_args([
        "--variants", "nsgan", "nsgan+minibatch-discrimination", "--steps", "5", "--seeds", "0",
        "--samples", "200", "--batch-size", "32", "--png", str(tmp_path / "mix.png"), "--json", str(tmp_path / "m.json"),
    ])
    results = gan_mixture.main(args)
    assert set(results) == {"nsgan", "nsgan+minibatch-discrimination"}
    table = capsys.readouterr().out
    assert "| target (independent sample) | 8.0 |" in table and "| nsgan |" in table
    assert (tmp_path / "mix.png").stat().st_size > 1000
    saved = json.loads((tmp_path / "m.json").read_text())
    assert 0.0 <= saved["nsgan"][0]["js"] <= 1.0 and saved["target"][0]["modes"] == 8.0


def test_gan_mixture_draws_no_figure_unless_asked(tmp_path, monkeypatch):
    """Without --png (make bench runs it so, from the repository) nothing is written: the default once
    overwrote docs/gan_mixture.png, and --quick wrote a file named '.png'."""
    from benchmarks import gan_mixture

    monkeypatch.chdir(tmp_path)
    for extra in ([], ["--quick"]):
        gan_mixture.main(gan_mixture.get_args_parser().parse_args(
            ["--variants", "nsgan", "--steps", "2", "--seeds", "0", "--samples", "100", "--batch-size", "16"] + extra))
    assert list(tmp_path.rglob("*")) == []


def test_benchmarks_without_their_data_are_skipped_with_how_to_get_it(capsys):
    """make bench runs every benchmark without arguments: those that need a corpus say so and succeed."""
    from benchmarks import relabel_merge, sr_robustness

    assert relabel_merge.main([]) == []
    assert sr_robustness.main(sr_robustness.get_args_parser().parse_args([])) == {}
    out = capsys.readouterr().out
    assert "relabel_merge: skipped: no --corpus (python -m pipelines.build_corpus" in out
    assert "sr_robustness: skipped: no --heldout faces" in out and "build_sr_corpus" in out
