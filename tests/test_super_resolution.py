"""Super-resolution training loop, SuperResolver, paste-back, folder driver and pipelines."""
import json
import os

import cv2
import numpy as np
import pytest
import torch

from lightface.data.align import align_face, template_points
from lightface.models.checkpoint import save_model_checkpoint
from lightface.models.wavelet_srnet import WaveletSRNet
from lightface.restore.folder import RestoreResult, list_images, load_image_with_alpha, restore_paths
from lightface.restore.paste import antialiased_align, feather_mask, paste_face, rescale_affine
from lightface.restore.super_resolver import SuperResolver
from synthetic_faces import write_smooth_faces  # tests/synthetic_faces.py (pytest puts tests/ on sys.path)

TINY = dict(scale=4, output_size=32, channels=8, num_blocks=1, head_channels=8)


def _faces(tmp_path, n=12, size=32):
    """Smooth synthetic colour 'faces' written as PNG files (BGR) in tmp_path/hr."""
    return write_smooth_faces(tmp_path / "hr", n, size)


@pytest.fixture
def tiny_weights(tmp_path):
    model = WaveletSRNet(**TINY)
    return save_model_checkpoint(tmp_path / "sr.pth", model, "wavelet_srnet", TINY,
                                 ema_state_dict=model.state_dict())


def test_rescale_affine_maps_pixel_centres():
    M = np.array([[0.5, 0.0, 3.0], [0.0, 0.5, -2.0]])
    M2 = rescale_affine(M, src_scale=4, dst_scale=4)
    # src pixel x maps to dst M x; after scaling both by 4 (pixel centres) the map stays consistent
    x = np.array([10.0, 7.0])
    y = M[:, :2] @ x + M[:, 2]
    x4, y4 = 4 * (x + 0.5) - 0.5, 4 * (y + 0.5) - 0.5
    np.testing.assert_allclose(M2[:, :2] @ x4 + M2[:, 2], y4)
    np.testing.assert_allclose(rescale_affine(M), M)


def test_antialiased_align_blurs_only_what_the_crop_shrinks(shared_data, shared_models):
    """A 16 px crop of a 1024 px CelebA-HQ face: the photo blurred to the crop's resolution before
    a bicubic warp (the face's region only, the same crop as blurring it all), the same transform
    as align_face; a crop that does not shrink the face is not blurred."""
    from lightface.data.detect import FaceDetector
    from lightface.data.align import antialias_sigma

    photo = cv2.imread(str(sorted((shared_data / "celeba_hq" / "female").glob("*.jpg"))[0]))
    det = FaceDetector(shared_models / "det_500m.onnx", device="cpu")
    lm = det.detect(photo)[0].landmarks
    plain, M = align_face(photo, lm, "lightcnn", size=16)
    crop, M_aa = antialiased_align(photo, lm, "lightcnn", size=16)
    np.testing.assert_array_equal(M, M_aa)
    scale = np.sqrt(abs(np.linalg.det(M[:, :2])))
    assert scale < 0.1 and antialias_sigma(scale) > 3  # a 1024 px photo's face into 16 px
    blurred = cv2.GaussianBlur(photo, (0, 0), antialias_sigma(scale))
    whole = cv2.warpAffine(blurred, M, (16, 16), flags=cv2.INTER_CUBIC)
    assert np.abs(crop.astype(int) - whole.astype(int)).max() <= 1
    laplacian = lambda im: cv2.Laplacian(cv2.cvtColor(im, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var()
    assert laplacian(crop) < 0.7 * laplacian(plain)  # the aliasing of the point-sampled warp is gone
    small = cv2.resize(photo, (200, 200), interpolation=cv2.INTER_AREA)  # the face smaller than a 256 crop
    lm_small = (lm + 0.5) * (200 / photo.shape[1]) - 0.5
    enlarged, M_up = antialiased_align(small, lm_small, "lightcnn", size=256)  # not blurred: a bicubic warp
    np.testing.assert_array_equal(enlarged, cv2.warpAffine(small, M_up, (256, 256), flags=cv2.INTER_CUBIC))


def test_paste_face_round_trip_and_feather():
    rng = np.random.default_rng(1)
    canvas = rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)
    pts = template_points("lightcnn", 128) * 0.4 + 20
    crop, M = align_face(canvas, pts, "lightcnn", size=32)
    out = paste_face(canvas, crop, M)
    assert out.shape == canvas.shape and out.dtype == np.uint8
    # pasting the crop it came from changes little inside (resampling only) and nothing far away
    assert np.abs(out[:5, :5].astype(int) - canvas[:5, :5]).max() == 0
    white = paste_face(np.zeros((96, 96, 3), np.uint8), np.full((32, 32, 3), 255, np.uint8), M)
    centre = tuple(np.round(pts.mean(0)).astype(int))[::-1]
    assert white[centre].min() > 240 and white[0, 0].max() == 0
    m = feather_mask((64, 64))
    assert m[32, 32] == pytest.approx(1.0, abs=1e-3) and m[0, 0] == 0 and 0 < m[32, 3] < 1


def test_paste_face_blends_only_the_face_region_exactly_as_a_whole_canvas_warp():
    """paste_face warps and blends the face's bounding box only (a face in a 4x-upscaled 12 MP photo
    took three whole-canvas float32 arrays): the result is the whole-canvas blend, bit for bit,
    for faces inside, across the edges of and outside the canvas."""
    from lightface.data.align import invert_affine

    rng = np.random.default_rng(3)
    face = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    for t in range(40):
        canvas = rng.integers(0, 256, (int(rng.integers(40, 160)), int(rng.integers(40, 160)), 3), dtype=np.uint8)
        s, a = rng.uniform(0.2, 3.0), rng.uniform(-1, 1)
        M = np.array([[s * np.cos(a), -s * np.sin(a), rng.uniform(-120, 60)],
                      [s * np.sin(a), s * np.cos(a), rng.uniform(-120, 60)]])
        inv, (H, W) = invert_affine(M), canvas.shape[:2]
        warped = cv2.warpAffine(face, inv, (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        alpha = cv2.warpAffine(feather_mask((32, 32)), inv, (W, H), flags=cv2.INTER_LINEAR)[..., None]
        whole = np.clip(alpha * warped + (1 - alpha) * canvas.astype(np.float32) + 0.5, 0, 255).astype(np.uint8)
        np.testing.assert_array_equal(paste_face(canvas, face, M), whole)


def test_superresolver_untrained_equals_bicubic(tiny_weights):
    sr = SuperResolver(tiny_weights, device="cpu")
    assert (sr.scale, sr.input_size, sr.output_size) == (4, 8, 32)
    x = torch.rand(2, 3, 8, 8)
    bic = torch.nn.functional.interpolate(x, scale_factor=4, mode="bicubic", align_corners=False).clamp(0, 1)
    torch.testing.assert_close(sr.upscale_tensor(x), bic, atol=1e-5, rtol=0)
    out = sr.upscale_face(np.zeros((4, 4), np.uint8))  # gray, smaller than the input crop: converted and enlarged
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    with pytest.raises(ValueError, match="detector"):
        sr.restore(np.zeros((40, 40, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        sr.upscale_face(np.zeros((8, 8, 3), np.float32))


def _perturbed_tiny_model():
    """A tiny WaveletSRNet whose output is not bicubic (hence not mirror-symmetric)."""
    torch.manual_seed(0)
    net = WaveletSRNet(**TINY)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return net


def test_aligned_crops_come_out_scale_times_their_size_never_shrunk_api_and_cli_alike(tmp_path, shared_data, caplog):
    """--aligned shrank every crop to the model's input (16 px here, 32 px for the shipped 4x model) and wrote a face
    of the output size: a 512 px GFPGAN crop came back 4x smaller, its detail thrown away, without a word. A crop
    at least the input crop is read at its own size (the model is fully convolutional) and comes out ``scale``
    times larger; a smaller one is enlarged to the input crop; one past max_face_shrink times the input crop keeps
    its bicubic upscale, with a warning and a note. upscale_faces and the CLI give the same faces."""
    from lightface.data.convert import image_to_tensor, tensor_to_image
    from pipelines.super_resolve import get_args_parser, main

    torch.manual_seed(0)
    cfg = dict(TINY, output_size=64)  # input crop 16 px, limit 128 px
    net = WaveletSRNet(**cfg)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    weights = save_model_checkpoint(tmp_path / "sr.pth", net, "wavelet_srnet", cfg)
    sr = SuperResolver(weights, device="cpu", flip_ensemble=False)
    face = cv2.imread(str(shared_data / "real_lq_faces" / "gfpgan_cropped_faces" / "Adele_crop.png"))  # 512 px
    crops = {f"s{n:03d}": cv2.resize(face, (n, n), interpolation=cv2.INTER_AREA) for n in (8, 12, 16, 24, 40, 100, 128, 200)}
    crops["s512"] = face
    crops["wide"] = cv2.resize(face, (14, 10), interpolation=cv2.INTER_AREA)  # enlarged to 22x16, aspect kept
    crops["tall"] = cv2.resize(face, (30, 40), interpolation=cv2.INTER_AREA)  # read as it is
    crops["gray"] = cv2.cvtColor(crops["s040"], cv2.COLOR_BGR2GRAY)
    expected = {"s008": 64, "s012": 64, "s016": 64, "s024": 96, "s040": 160, "s100": 400, "s128": 512, "s200": 800,
                "s512": 2048, "gray": 160}
    with caplog.at_level("WARNING", logger="lightface.restore.super_resolver"):
        outs = dict(zip(crops, sr.upscale_faces(list(crops.values()), batch_size=2)))
    for name, side in expected.items():
        assert outs[name].shape == (side, side, 3), name
    assert outs["wide"].shape == (64, 88, 3) and outs["tall"].shape == (160, 120, 3)
    # read at their own size: the model run on the crop itself
    own = tensor_to_image(sr.upscale_tensor(image_to_tensor([crops["s100"]])))[0]
    assert np.abs(own.astype(int) - outs["s100"]).max() <= 1
    for name in ("s200", "s512"):  # past 8x the input crop: the bicubic upscale, counted in a warning
        bicubic = cv2.resize(crops[name], None, fx=4, fy=4, interpolation=cv2.INTER_CUBIC)
        np.testing.assert_array_equal(outs[name], bicubic)
    (msg,) = [r.getMessage() for r in caplog.records if "not super-resolved" in r.getMessage()]
    assert msg.startswith("upscale_faces: 2 of 12 aligned crop(s) not super-resolved") and "max_face_shrink 8" in msg
    assert sr.aligned_shrink(face) == 32 and sr.aligned_shrink((12, 12)) == 1

    src = tmp_path / "crops"
    src.mkdir()
    for name, crop in crops.items():
        cv2.imwrite(str(src / f"{name}.png"), crop)
    out = tmp_path / "out"
    summary = main(get_args_parser().parse_args(["-i", str(src), "-o", str(out), "--weights", str(weights), "--aligned",
                                                 "--device", "cpu", "--no-flip-ensemble"]))["summary"]
    for name, api in outs.items():
        written = cv2.imread(str(out / "restored_faces" / f"{name}_00.png"))
        assert written.shape == api.shape and np.abs(written.astype(int) - api).max() <= 1, name
    notes = {e["name"]: e["notes"] for e in summary["processed"]}
    assert notes["s512"][0].startswith("not super-resolved, kept its bicubic upscale: the crop is 32.0x the model's "
                                       "16 px input crop (--max-face-shrink 8)")
    assert notes["s200"] and not notes["s128"] and not notes["s008"]
    # --max-face-shrink applies to --aligned crops: inf super-resolves the 200 px crop too
    main(get_args_parser().parse_args(["-i", str(src / "s200.png"), "-o", str(tmp_path / "inf"), "--weights",
                                       str(weights), "--aligned", "--device", "cpu", "--no-flip-ensemble",
                                       "--max-face-shrink", "inf"]))
    written = cv2.imread(str(tmp_path / "inf" / "restored_faces" / "s200_00.png"))
    own = tensor_to_image(sr.upscale_tensor(image_to_tensor([crops["s200"]])))[0]
    assert written.shape == (800, 800, 3) and np.abs(written.astype(int) - own).max() <= 1


def test_flip_ensemble_mirrors_with_the_input_and_can_be_switched_off(tmp_path):
    """The default flip ensemble: a mirrored face gives the mirrored result; --no-flip-ensemble: one pass."""
    from pipelines.super_resolve import get_args_parser, main

    net = _perturbed_tiny_model()
    x = torch.rand(2, 3, 8, 8)
    one_pass = SuperResolver(net, device="cpu", flip_ensemble=False)
    with torch.no_grad():
        torch.testing.assert_close(one_pass.upscale_tensor(x), net(x).clamp(0, 1))
    assert (one_pass.upscale_tensor(x.flip(-1)) - one_pass.upscale_tensor(x).flip(-1)).abs().max() > 1e-3
    ensemble = SuperResolver(net, device="cpu")
    assert ensemble.flip_ensemble
    torch.testing.assert_close(ensemble.upscale_tensor(x.flip(-1)), ensemble.upscale_tensor(x).flip(-1),
                               atol=1e-6, rtol=0)

    weights = save_model_checkpoint(tmp_path / "sr.pth", net, "wavelet_srnet", TINY)
    crops = _faces(tmp_path, n=1, size=8)
    crop = cv2.imread(str(crops / "00.png"))
    for flag, resolver in (([], ensemble), (["--no-flip-ensemble"], one_pass)):
        out = tmp_path / f"out{len(flag)}"
        main(get_args_parser().parse_args(["-i", str(crops), "-o", str(out), "--weights", str(weights), "--aligned",
                                           "--device", "cpu", *flag]))
        written = cv2.imread(str(out / "restored_faces" / "00_00.png"))
        assert np.abs(written.astype(int) - resolver.upscale_face(crop)).max() <= 1


def test_restore_paths_skips_bad_files_and_keeps_alpha(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    cv2.imwrite(str(src / "a.png"), np.full((20, 20, 4), 200, np.uint8))  # BGRA
    cv2.imwrite(str(src / "b.jpg"), np.full((20, 20), 90, np.uint8))  # gray
    (src / "broken.jpg").write_bytes(b"not an image")
    cv2.imwrite(str(src / "tiny.png"), np.zeros((3, 3, 3), np.uint8))
    img, alpha, gray = load_image_with_alpha(src / "a.png")
    assert img.shape == (20, 20, 3) and alpha.shape == (20, 20) and not gray

    def restore(bgr):
        big = cv2.resize(bgr, (40, 40))
        return RestoreResult(image=big, crops=[bgr[:8, :8]], faces=[big[:16, :16]])

    summary = restore_paths(src, tmp_path / "out", restore, suffix="sr", show_progress=False)
    assert {p["input"].split("/")[-1] for p in summary["processed"]} == {"a.png", "b.jpg"}
    assert {s["input"].split("/")[-1] for s in summary["skipped"]} == {"broken.jpg", "tiny.png"}
    whole = cv2.imread(str(tmp_path / "out" / "restored_imgs" / "a_sr.png"), cv2.IMREAD_UNCHANGED)
    assert whole.shape == (40, 40, 4)
    assert (tmp_path / "out" / "restored_imgs" / "b_sr.jpg").is_file()
    assert (tmp_path / "out" / "restored_faces" / "b_00_sr.png").is_file()
    assert cv2.imread(str(tmp_path / "out" / "cmp" / "b_00_sr.png")).shape == (16, 32, 3)
    with pytest.raises(FileNotFoundError):
        list_images(tmp_path / "missing")
    # a second pass over the results into the same folder would write restored_imgs/b.jpg over its input
    again = tmp_path / "out" / "restored_imgs" / "b.jpg"
    again.write_bytes((src / "b.jpg").read_bytes())
    before = {p: p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()}
    with pytest.raises(ValueError, match="output folders of .* choose an output folder"):
        restore_paths(tmp_path / "out" / "restored_imgs", tmp_path / "out", restore, show_progress=False)
    assert {p: p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()} == before  # nothing written
    assert restore_paths(again, tmp_path / "out2", restore, show_progress=False)["processed"]  # elsewhere: fine


def test_an_interrupted_journalled_run_redoes_only_inputs_that_changed(tmp_path):
    """``run_key``: a run stopped after two inputs continues with the rest; an input replaced since it was
    journalled is restored again, an unchanged one is not."""
    src = tmp_path / "in"
    src.mkdir()
    for i, name in enumerate("abcd"):
        cv2.imwrite(str(src / f"{name}.png"), np.full((20, 20, 3), 40 * i, np.uint8))
    seen = []

    def restore(bgr, stop_after=None):
        seen.append(int(bgr[0, 0, 0]))
        if stop_after is not None and len(seen) > stop_after:
            raise KeyboardInterrupt  # Ctrl-C while the third input is restored
        return RestoreResult(image=cv2.resize(bgr, (40, 40)))

    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        restore_paths(src, out, lambda bgr: restore(bgr, stop_after=2), show_progress=False, run_key="k")
    assert seen == [0, 40, 80] and (out / ".progress.jsonl").is_file()
    cv2.imwrite(str(src / "b.png"), np.full((20, 20, 3), 250, np.uint8))  # replaced after it was restored
    seen.clear()
    summary = restore_paths(src, out, restore, show_progress=False, run_key="k")
    assert sorted(seen) == [80, 120, 250]  # b again (new content), c and d; a is not redone
    assert len(summary["processed"]) == 4 and not (out / ".progress.jsonl").exists()
    assert int(cv2.imread(str(out / "restored_imgs" / "b.png"))[0, 0, 0]) == 250


def _train_argv(data, out, **over):
    argv = ["--data", str(data), "--out", str(out), "--scale", "4", "--hr-size", "32", "--channels", "8",
            "--num-blocks", "1", "--head-channels", "8", "--d-channels", "4", "--batch-size", "4", "--steps", "4",
            "--val-every", "2", "--save-every", "2", "--log-every", "1", "--workers", "0", "--val-count", "2",
            "--discriminator", "wavelet", "--cycle", "0.5"]
    for k, v in over.items():
        argv += [f"--{k.replace('_', '-')}", str(v)]
    return argv


def _train_args(tmp_path, data, out, **over):
    from pipelines.train_super_resolution import get_args_parser

    return get_args_parser().parse_args(_train_argv(data, out, **over))


def test_gan_terms_are_logged_unweighted_under_the_frontalization_trainers_names(tmp_path):
    """The GAN objective's terms mean what they mean in train_frontalization (docs/gan_toolkit.md): l_g_cycle and
    l_g_adv unweighted (the same at step 1 whatever --cycle and --adv-weight), l_d_* for the discriminator's."""
    from lightface.engine.logger import read_metrics
    from pipelines.train_super_resolution import main

    data, first = _faces(tmp_path), {}
    for weight in (0.5, 2.0):
        out = tmp_path / str(weight)
        main(_train_args(tmp_path, data, out, cycle=weight, adv_weight=weight / 100, steps=1, identity_weights="none"))
        first[weight] = read_metrics(out / "metrics.jsonl")[0]
    assert first[0.5]["l_g_cycle"] == first[2.0]["l_g_cycle"] and first[0.5]["l_g_adv"] == first[2.0]["l_g_adv"]
    assert {"l_d", "l_d_adv", "l_d_real", "l_d_fake", "l_g_total"} <= set(first[2.0])
    assert not {"d_adv", "d_real", "g_cycle"} & set(first[2.0])


def test_d_steps_trains_the_critic_that_many_times_per_generator_step(tmp_path):
    """WGAN's n_critic: --adversarial wgan-gp could train the critic only once per generator step."""
    from lightface.engine.checkpoint import load_checkpoint
    from pipelines.train_super_resolution import main

    main(_train_args(tmp_path, _faces(tmp_path), tmp_path / "out", adversarial="wgan-gp", adv_weight=0.01, d_steps=3,
                     steps=1, batch_size=2, identity_weights="none"))
    optimizers = load_checkpoint(tmp_path / "out" / "last.pt")["optimizers"]
    adam_steps = {name: {float(v["step"]) for v in opt["state"].values()} for name, opt in optimizers.items()}
    assert adam_steps == {"G": {1.0}, "D": {3.0}}


def test_d_steps_gives_each_critic_step_a_fresh_batch_and_resumes_exactly(tmp_path, monkeypatch):
    """--d-steps N as WGAN's n_critic: each critic step after the first sees the next batch's HR and the updated
    generator's SR of its LR (the same batch and fakes N times before); a step takes N batches, an epoch ends
    when the next step's do not fit, and a resumed run logs what the uninterrupted one logged."""
    from lightface.engine import gan
    from lightface.engine.checkpoint import load_checkpoint
    from lightface.engine.logger import read_metrics
    from pipelines.train_super_resolution import main

    data, seen = _faces(tmp_path), []
    flags = dict(adversarial="wgan-gp", adv_weight=0.01, d_steps=2, batch_size=2, identity_weights="none")
    loss = gan.GANObjective.discriminator_loss

    def spy(self, D, real, fake):
        seen.append((real.detach().clone(), fake.detach().clone()))
        return loss(self, D, real, fake)

    monkeypatch.setattr(gan.GANObjective, "discriminator_loss", spy)
    main(_train_args(tmp_path, data, tmp_path / "one", **{**flags, "d_steps": 3, "steps": 1}))
    assert len(seen) == 3
    for (real_a, fake_a), (real_b, fake_b) in zip(seen, seen[1:]):
        assert not torch.equal(real_a, real_b) and not torch.equal(fake_a, fake_b)
    last = load_checkpoint(tmp_path / "one" / "last.pt")  # 10 training faces: 5 batches, no room for 3 more
    assert (last["epoch"], last["batch_in_epoch"]) == (1, 0)

    def losses(out):
        return [(r["step"], r["epoch"], r["l_g_pix"], r["l_d"]) for r in read_metrics(out / "metrics.jsonl")
                if "l_g_pix" in r]

    # 10 training faces: 5 batches of 2, two steps of 2 batches per epoch
    main(_train_args(tmp_path, data, tmp_path / "full", **flags))
    assert [r[:2] for r in losses(tmp_path / "full")] == [(1, 0), (2, 0), (3, 1), (4, 1)]
    main(_train_args(tmp_path, data, tmp_path / "part", **{**flags, "steps": 3}))
    main(_train_args(tmp_path, data, tmp_path / "part", resume="auto", **flags))
    assert losses(tmp_path / "part") == losses(tmp_path / "full")


def test_train_resume_and_checkpoint_format(tmp_path):
    from lightface.engine.checkpoint import load_checkpoint
    from lightface.engine.engine import TrainingError
    from lightface.engine.logger import read_metrics
    from pipelines.train_super_resolution import main

    data = _faces(tmp_path)
    out = tmp_path / "run"
    res = main(_train_args(tmp_path, data, out))
    assert res["step"] == 4 and res["stopped"] == "completed" and "val_psnr" in res and "val_psnr_bicubic" in res
    ckpt = load_checkpoint(out / "model.pt")
    assert ckpt["format"] == "lightface" and ckpt["arch"] == "wavelet_srnet"
    assert ckpt["model_kwargs"]["scale"] == 4 and "ema_state_dict" in ckpt and ckpt["step"] == 4
    records = read_metrics(out / "metrics.jsonl")
    names = set().union(*records)
    assert {"l_g_wavelet", "l_g_texture", "l_g_pix", "l_g_adv", "l_g_cycle", "l_d"} <= names
    assert (out / "samples" / "step_0000004.png").is_file()
    grid = cv2.imread(str(out / "samples" / "step_0000004.png"))
    assert grid.shape == (2 * 32, 4 * 32, 3)
    # resume continues from the saved step to the new end
    res2 = main(_train_args(tmp_path, data, out, steps=6, resume="auto"))
    assert res2["step"] == 6
    steps = [r["step"] for r in read_metrics(out / "metrics.jsonl") if "l_g_total" in r]
    assert steps == [1, 2, 3, 4, 5, 6]
    sr = SuperResolver(out / "model.pt", device="cpu")
    assert sr.upscale_face(np.zeros((8, 8, 3), np.uint8)).shape == (32, 32, 3)
    # resuming with different model flags is refused before any training
    with pytest.raises(TrainingError, match="differs"):
        main(_train_args(tmp_path, data, out, steps=8, channels=16, resume="auto"))


def test_ema_decay_0_validates_and_saves_the_raw_generator(tmp_path):
    """--ema-decay 0 (accepted: [0, 1)) keeps no EMA: validation scores the raw generator and model.pt holds it
    alone, loadable as usual (it crashed at the first validation, nothing saved)."""
    from lightface.engine.checkpoint import load_checkpoint
    from pipelines.train_super_resolution import main

    out = tmp_path / "run"
    res = main(_train_args(tmp_path, _faces(tmp_path), out, steps=2, ema_decay=0, identity_weights="none"))
    assert res["step"] == 2 and "val_psnr" in res and (out / "samples" / "step_0000002.png").is_file()
    final = load_checkpoint(out / "model.pt")
    assert "ema_state_dict" not in final and final["step"] == 2
    sr = SuperResolver(out / "model.pt", device="cpu")
    assert sr.upscale_face(np.zeros((8, 8, 3), np.uint8)).shape == (32, 32, 3)


def test_finetune_starts_from_a_trained_generator(tmp_path):
    from lightface.engine.checkpoint import load_checkpoint
    from lightface.engine.engine import TrainingError
    from pipelines.train_super_resolution import main

    data = _faces(tmp_path)
    src = tmp_path / "src"
    main(_train_args(tmp_path, data, src, steps=2))
    out = tmp_path / "ft"
    main(_train_args(tmp_path, data, out, steps=1, lr=1e-12, finetune=src / "model.pt"))
    start, tuned = load_checkpoint(src / "model.pt")["ema_state_dict"], load_checkpoint(out / "last.pt")["state_dict"]
    assert all(torch.allclose(start[k].float(), tuned[k].float(), atol=1e-6) for k in start)  # started from its EMA
    # the shipped 4x model by its alias: its flags are named when ours differ (128 px faces: --hr-size 128 leaves
    # smaller ones out)
    with pytest.raises(TrainingError, match="--channels 48"):
        main(_train_args(tmp_path, write_smooth_faces(tmp_path / "hr128", 6, 128), tmp_path / "ship", steps=1,
                         hr_size=128, finetune="sr4"))
    with pytest.raises(TrainingError, match="no such file, nor a shipped model"):
        main(_train_args(tmp_path, data, tmp_path / "none", steps=1, finetune=tmp_path / "missing.pt"))


def test_train_diverging_stops_with_the_last_good_checkpoint(tmp_path, capsys):
    """Issue 14, 5.3: --lr 1e6 must not exit 0 after overwriting the checkpoints with NaN weights."""
    from lightface.engine.checkpoint import load_checkpoint
    from lightface.engine.logger import read_metrics
    from pipelines._cli import run_cli
    from pipelines.train_super_resolution import get_args_parser, main

    out = tmp_path / "run"
    argv = _train_argv(_faces(tmp_path), out, lr=1e6, steps=6, save_every=1)
    assert run_cli(main, get_args_parser, argv) == 1
    err = capsys.readouterr().err
    assert "last good checkpoint" in err and "Traceback" not in err
    ckpt = load_checkpoint(out / "last.pt")
    for state in (ckpt["state_dict"], ckpt["ema_state_dict"]):
        assert all(torch.isfinite(v).all() for v in state.values())
    assert not (out / "model.pt").exists()
    assert ckpt["step"] == [r["step"] for r in read_metrics(out / "metrics.jsonl") if "l_g_total" in r][-1]


def test_super_resolve_aligned_and_evaluate_aligned(tmp_path, tiny_weights):
    from pipelines.super_resolve import get_args_parser, main

    crops = _faces(tmp_path, n=3, size=32)
    out = tmp_path / "out"
    args = get_args_parser().parse_args(["-i", str(crops), "-o", str(out), "--weights", str(tiny_weights),
                                         "--aligned", "--device", "cpu", "--evaluate", str(crops), "--suffix", "x4"])
    report = main(args)
    assert len(report["summary"]["processed"]) == 3 and not report["summary"]["skipped"]
    assert cv2.imread(str(out / "restored_faces" / "00_00_x4.png")).shape == (128, 128, 3)  # 4x its 32 px
    ev = json.loads((out / "evaluation.json").read_text())
    # an untrained model is bicubic (PyTorch's kernel vs Pillow's for the baseline): close scores
    assert ev["count"] == 3 and abs(ev["mean"]["psnr_sr"] - ev["mean"]["psnr_bicubic"]) < 3
    sheet = cv2.imread(str(out / "contact_sheet.png"))
    assert sheet.shape[1] == 4 * 32 and sheet.shape[0] > 3 * 32


def test_evaluate_aligned_keeps_the_aspect_ratio_of_non_square_hr_crops(tmp_path, tiny_weights, shared_data):
    """--evaluate --aligned squashed every HR crop into an output_size square: a 320x256 template crop of a CelebA-HQ
    face (the face plus some photo either side) was scored as a narrowed face (shipped 4x model: +2.89 dB over
    bicubic on four such faces, +3.09 on the undistorted ones), and the contact sheet showed it so. The crop keeps
    its aspect ratio (shorter side to the output size), as upscale_faces keeps it; a square crop is as before, and
    the identity judge reads each face's centred square."""
    from lightface.data.degradation import downscale, resize
    from lightface.eval.image_quality import psnr
    from lightface.models import get_model
    from lightface.restore.super_resolver import evaluate_super_resolution

    hr_dir = tmp_path / "hr"
    hr_dir.mkdir()
    photos = sorted((shared_data / "celeba_hq").rglob("*.jpg"))[:2]
    sizes = [(80, 64), (64, 64)]  # width x height: a wide crop (kept 40x32 at the tiny model's 32 px output), a square
    paths, expected = [], []
    for k, (path, (w, h)) in enumerate(zip(photos, sizes)):
        img = cv2.imread(str(path))
        cut = img[:, :round(img.shape[0] * w / h)] if w > h else img  # the photo's own pixels, not stretched
        paths.append(hr_dir / f"{k}.png")
        cv2.imwrite(str(paths[-1]), cv2.resize(cut, (w, h), interpolation=cv2.INTER_AREA))
        hr = cv2.resize(cv2.imread(str(paths[-1])), (w * 32 // h, 32), interpolation=cv2.INTER_AREA)
        expected.append(psnr(resize(downscale(hr, 4, "bicubic"), hr.shape[1::-1], "bicubic"), hr))
    judge = get_model("lightcnn9", num_classes=0).eval()
    sheet = tmp_path / "sheet.png"
    ev = evaluate_super_resolution(SuperResolver(str(tiny_weights), device="cpu"), paths, aligned=True,
                                   identity_weights=judge, sheet_path=sheet)
    assert ev["count"] == 2 and not ev["skipped"]
    np.testing.assert_allclose([r["psnr_bicubic"] for r in ev["images"]], expected, atol=1e-6)
    assert all(-1 <= r["id_cos_sr"] <= 1 for r in ev["images"])
    rows = cv2.imread(str(sheet))
    assert rows.shape[1] == 4 * 40  # LR | bicubic | SR | HR of the wide crop, each 40 px wide; the square row padded


def test_super_resolve_identity_weights_takes_a_shipped_name_as_the_trainers_do(tmp_path):
    from lightface.models import PretrainedError, default_weights
    from pipelines.super_resolve import _identity_judge

    assert _identity_judge(None) is None  # unset: no identity cosine
    (tmp_path / "w.pt").write_bytes(b"x")
    assert _identity_judge(str(tmp_path / "w.pt")) == str(tmp_path / "w.pt")
    try:
        entry = default_weights("recognition")
    except PretrainedError:
        pytest.skip("no recogniser ships in this install")
    assert os.path.samefile(_identity_judge(entry.name), entry.path())


def test_train_with_identity_loss(tmp_path):
    from lightface.models import get_model
    from pipelines.train_super_resolution import main

    data = _faces(tmp_path, n=6)
    lcnn = tmp_path / "lightcnn.pth"
    save_model_checkpoint(lcnn, get_model("lightcnn9", num_classes=0), "lightcnn9", {"num_classes": 0})
    res = main(_train_args(tmp_path, data, tmp_path / "run", identity_weights=lcnn, steps=1, adv_weight=0,
                           val_every=1, identity_weight=0.5))
    assert "val_id_cos" in res and "val_id_cos_bicubic" in res
    assert -1.0 <= res["val_id_cos"] <= 1.0


@pytest.mark.slow
def test_super_resolve_real_photos_and_evaluate(tmp_path, shared_data, shared_models):
    from pipelines.super_resolve import get_args_parser, main

    data = _faces(tmp_path, n=8, size=64)
    train_out = tmp_path / "run"
    from pipelines.train_super_resolution import main as train_main

    train_main(_train_args(tmp_path, data, train_out, hr_size=64, steps=2, adv_weight=0))
    whole = sorted((shared_data / "real_lq_faces").glob("*whole_imgs"))[0]
    photos = sorted(whole.iterdir())[:2]
    (tmp_path / "bad.jpg").write_bytes(b"\x00\x01")
    out = tmp_path / "res"
    args = get_args_parser().parse_args(
        ["-i", *map(str, photos), str(tmp_path / "bad.jpg"), "-o", str(out), "--weights", str(train_out / "model.pt"),
         "--detector", str(shared_models / "det_500m.onnx"), "--device", "cpu",
         "--evaluate", str(shared_data / "celeba_hq" / "male")])
    report = main(args)
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["processed"]) == 2 and summary["skipped"][0]["input"].endswith("bad.jpg")
    assert all(p["faces"] >= 1 for p in summary["processed"])
    img = cv2.imread(str(photos[0]))
    # outputs keep the inputs' paths relative to their common folder (issue 14, 5.6)
    restored = cv2.imread(str(next((out / "restored_imgs").rglob(photos[0].name))))
    assert restored.shape[:2] == (img.shape[0] * 4, img.shape[1] * 4)
    ev = report["evaluation"]
    assert ev["count"] == 5 and {"psnr_sr", "psnr_bicubic", "ssim_sr", "ssim_bicubic"} <= set(ev["mean"])
    assert (out / "contact_sheet.png").is_file()


@pytest.mark.slow
def test_torchrun_two_cpu_processes(tmp_path):
    from torchrun_helper import run_torchrun

    data = _faces(tmp_path, n=8)
    out = tmp_path / "ddp"
    # --standalone (free port, own run id), clean environment, worker logs on failure:
    # see torchrun_helper for why a fixed --master_port and the inherited env are not used.
    run_torchrun(["-m", "pipelines.train_super_resolution", "--data", data, "--out", out, "--scale", "4",
                  "--hr-size", "32", "--channels", "8", "--num-blocks", "1", "--head-channels", "8",
                  "--d-channels", "4", "--batch-size", "4", "--steps", "2", "--val-every", "2", "--workers", "0",
                  "--val-count", "2", "--discriminator", "wavelet", "--device", "cpu"], tmp_path)
    from lightface.engine.checkpoint import load_checkpoint

    assert load_checkpoint(out / "model.pt")["step"] == 2


@pytest.mark.slow
def test_torchrun_reports_the_unreadable_hr_files_of_every_process_once(tmp_path, shared_data):
    """Under torchrun each process draws its own share of an HR folder: the truncated JPEGs found when drawn were
    counted per process, rank 0's summary named only its own (and every rank printed its own summary, with another
    count), and one rank refused a damaged folder on its own count while the other died of a lost gloo connection.
    Every process now knows them all: one report (rank 0's) of the whole run's, the same refusal on every rank; the
    images left out at start-up, which every process finds, are counted once too (every rank printed the count)."""
    import re

    from torchrun_helper import finish, log_dir, start_torchrun

    def folder(name, cut):
        """10 real faces (CelebA-HQ, 64 px HR), those at the sorted positions ``cut`` cut short (their headers
        read: found only when drawn; the first, the held-out face, stays whole)."""
        data = tmp_path / name
        data.mkdir()
        for path in sorted((shared_data / "celeba_hq").rglob("*.jpg"))[:10]:
            cv2.imwrite(str(data / f"{path.stem}.jpg"), cv2.resize(cv2.imread(str(path)), (64, 64),
                                                                   interpolation=cv2.INTER_AREA))
        for k, path in enumerate(sorted(data.glob("*.jpg"))):
            if k in cut:
                path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        return data

    def train(data, steps, ok):
        logs = log_dir(tmp_path / data.name)
        finish(start_torchrun(["-m", "pipelines.train_super_resolution", *_train_argv(
            data, tmp_path / f"run_{data.name}", steps=steps, val_every=steps, save_every=steps, val_count=1,
            identity_weights="none", device="cpu"), "--no-tensorboard"], tmp_path / data.name), tmp_path / data.name,
            ok_codes=(ok,))
        return {int(p.parent.name): p.read_text() for p in logs.rglob("stderr.log")}

    data = folder("hr", (2, 4, 6, 8))
    cv2.imwrite(str(data / "small.jpg"), np.full((16, 16, 3), 128, np.uint8))  # left out at start-up
    logs = train(data, 2, 0)
    found = {name for text in logs.values() for name in re.findall(r"hr/(\d+\.jpg): not a readable image", text)}
    reports = {rank: re.findall(r"(\d+) HR file\(s\) could not be read when drawn", text) for rank, text in logs.items()}
    assert len(found) >= 2 and reports == {0: [str(len(found))], 1: []}, (found, reports)
    assert [logs[r].count("left out 1 of 11 image(s) smaller than --hr-size 32") for r in (0, 1)] == [1, 0]

    logs = train(folder("damaged", (1, 2, 4, 5, 7, 8)), 8, 1)
    refusals = [re.findall(r"error: --data .*: (\d+) of its 10 image file\(s\) are unreadable", logs[r]) for r in (0, 1)]
    assert refusals[0] == refusals[1] and len(refusals[0]) == 1, refusals


def test_sr_face_size_benchmark_shows_the_aliased_crop(shared_data, shared_models, tmp_path):
    """benchmarks.sr_face_size on two CelebA-HQ photos with the shipped 4x model: a face 3x the crop
    super-resolves far better from the antialiased crop than from the plain warp, and so does a face at 1x."""
    from benchmarks.sr_face_size import get_args_parser, main
    from lightface.models import pretrained as pt

    if not any(w["model_kwargs"].get("scale") == 4 for w in pt.list_pretrained("super_resolution")):
        pytest.skip("no 4x super-resolution model ships in this install")
    out = tmp_path / "size.json"
    table = main(get_args_parser().parse_args([
        "--photos", str(shared_data / "celeba_hq"), "--scale", "4", "--sizes", "1", "3", "--max-photos", "2",
        "--detector", str(shared_models / "det_500m.onnx"), "--out", str(out)]))["x4"]
    assert json.loads(out.read_text())["photos"] == 2
    assert table["1"]["antialiased"][0] > table["1"]["bilinear warp"][0]  # the bicubic warp keeps more detail
    assert table["3"]["antialiased"][0] > table["3"]["bilinear warp"][0] + 1.0  # dB
    assert table["3"]["antialiased"][0] > table["3"]["antialiased"][1]  # and above bicubic


def test_sr_face_size_bicubic_baseline_is_sr_quality_bicubic(shared_data, shared_models):
    """benchmarks.sr_face_size made its bicubic baseline with OpenCV's INTER_CUBIC (a = -0.75), 0.15-0.22 dB above
    the Pillow bicubic of benchmarks.sr_quality / sr_robustness on the same 4x CelebA-HQ crops, so its SR gains read
    lower than the cards'. It now scores Pillow's bicubic (lightface.data.degradation.resize)."""
    from benchmarks.sr_face_size import _shrunk, hr_face_on_output_grid, main_faces, run
    from lightface.data.align import estimate_transform
    from lightface.data.degradation import resize
    from lightface.data.detect import FaceDetector
    from lightface.eval.image_quality import psnr
    from lightface.models import pretrained as pt

    names = [w["name"] for w in pt.list_pretrained("super_resolution") if w["model_kwargs"].get("scale") == 4]
    if not names:
        pytest.skip("no 4x super-resolution model ships in this install")
    detector = FaceDetector(shared_models / "det_500m.onnx", device="cpu")
    photos = main_faces(sorted((shared_data / "celeba_hq").rglob("*.jpg"))[:1], detector)
    _, hr, lm = photos[0]
    lr, lm_lr = _shrunk(hr, lm, 32, 3.0)
    ref = hr_face_on_output_grid(hr, estimate_transform(lm, "lightcnn", 32), 4, 128)
    crop, _ = antialiased_align(lr, lm_lr, "lightcnn", size=32)
    pillow = psnr(resize(crop, (128, 128), "bicubic"), ref)
    opencv = psnr(cv2.resize(crop, (128, 128), interpolation=cv2.INTER_CUBIC), ref)
    assert abs(opencv - pillow) > 0.05  # the two kernels are told apart on this face
    assert run(names[0], 4, photos, [3.0])["3"]["antialiased"][1] == pytest.approx(pillow, abs=1e-6)


@pytest.mark.parametrize("argv", [["--sizes", "0"], ["--sizes", "1", "-2"], ["--max-photos", "0"]])
def test_sr_face_size_refuses_bad_values_on_the_command_line(argv, capsys):
    """--sizes 0 / -2 printed rows of meaningless PSNR (a 1-pixel photo) and --max-photos 0 an empty table."""
    from benchmarks.sr_face_size import get_args_parser

    with pytest.raises(SystemExit) as exc:
        get_args_parser().parse_args(argv)
    assert exc.value.code == 2 and argv[0] in capsys.readouterr().err


def test_sr_face_size_measures_the_factor_of_the_given_weights(shared_data, shared_models):
    """--weights of an 8x model without --scale measures it at 8x (it failed with a traceback: --scale defaulted
    to 4 and 8); a --scale it was not trained for is refused with what to pass."""
    from benchmarks.sr_face_size import get_args_parser, main
    from lightface.models import pretrained as pt

    names = [w["name"] for w in pt.list_pretrained("super_resolution") if w["model_kwargs"].get("scale") == 8]
    if not names:
        pytest.skip("no 8x super-resolution model ships in this install")
    common = ["--photos", str(shared_data / "celeba_hq"), "--sizes", "1", "--max-photos", "1",
              "--detector", str(shared_models / "det_500m.onnx"), "--weights", names[0]]
    table = main(get_args_parser().parse_args(common))
    assert list(table) == ["x8"] and table["x8"]["1"]["antialiased"][0] > 15
    with pytest.raises(SystemExit, match="pass --scale 8"):
        main(get_args_parser().parse_args(common + ["--scale", "4"]))


def test_sr_face_size_whole_photo_restore_beats_the_squeezed_crop_and_bicubic(shared_data, shared_models):
    """benchmarks.sr_face_size --whole-photo on two CelebA-HQ photos with the shipped 4x model: a face 3x the
    input crop, squeezed into it, loses to the photo's bicubic upscale; restore() reads it at its own size and
    beats both."""
    from benchmarks.sr_face_size import get_args_parser, main
    from lightface.models import pretrained as pt

    if not any(w["model_kwargs"].get("scale") == 4 for w in pt.list_pretrained("super_resolution")):
        pytest.skip("no 4x super-resolution model ships in this install")
    row = main(get_args_parser().parse_args([
        "--photos", str(shared_data / "celeba_hq"), "--scale", "4", "--sizes", "3", "--max-photos", "2",
        "--detector", str(shared_models / "det_500m.onnx"), "--whole-photo"]))["x4"]["3"]
    assert 2.5 < row["shrink"] < 3.5
    assert row["squeezed crop"] < row["bicubic photo"] - 1.0 < row["restore"] - 1.0  # dB


@pytest.mark.parametrize("workers", [0, 1])
def test_sr_training_repeats_and_a_resumed_run_equals_the_uninterrupted_one(tmp_path, workers):
    """The degradations (blur, kernel, noise, JPEG) and flips are drawn per sample from (--seed, epoch, index):
    two runs with the same flags log the same losses, and a run of 2 steps resumed to 4 logs, step by step,
    what the uninterrupted run logged (before, the draws came from a per-process stream: fresh runs differed from
    step 1 with --workers 0, and a resumed one from its first step with --workers 1)."""
    from lightface.engine.logger import read_metrics
    from pipelines.train_super_resolution import main

    data = _faces(tmp_path)
    flags = dict(workers=workers, blur_prob=1, noise_prob=1, jpeg_prob=1)

    def losses(out):
        return [(r["step"], r["l_g_pix"], r["l_d"]) for r in read_metrics(out / "metrics.jsonl") if "l_g_pix" in r]

    main(_train_args(tmp_path, data, tmp_path / "a", **flags))
    main(_train_args(tmp_path, data, tmp_path / "b", **flags))
    assert len(losses(tmp_path / "a")) == 4 and losses(tmp_path / "a") == losses(tmp_path / "b")
    assert main(_train_args(tmp_path, data, tmp_path / "c", **{**flags, "steps": 2}))["step"] == 2
    main(_train_args(tmp_path, data, tmp_path / "c", resume="auto", **flags))
    assert losses(tmp_path / "c") == losses(tmp_path / "a")


def test_wavelet_normalization_is_the_papers_for_new_runs_and_kept_for_runs_saved_before_it(tmp_path):
    """--wavelet-normalization: paper (the weights' meaning in Wavelet-SRNet) unless set; a run saved before the
    setting existed (per-band, no key in its settings) keeps per-band on --resume (exactly as it trained) and on
    --finetune of its model; a run's own setting carries over the same way."""
    import yaml

    from lightface.engine.checkpoint import load_checkpoint
    from lightface.engine.logger import read_metrics
    from pipelines.train_super_resolution import main

    def setting(out):
        return load_checkpoint(out / "last.pt")["config"]["wavelet_normalization"]

    def losses(out):
        return [(r["step"], r["l_g_wavelet"], r["l_g_total"]) for r in read_metrics(out / "metrics.jsonl")
                if "l_g_wavelet" in r]

    data = _faces(tmp_path)
    flags = dict(identity_weights="none", blur_prob=1, noise_prob=1, jpeg_prob=1)
    main(_train_args(tmp_path, data, tmp_path / "new", steps=1, **flags))
    assert setting(tmp_path / "new") == "paper"
    assert yaml.safe_load((tmp_path / "new" / "config.yaml").read_text())["wavelet_normalization"] == "paper"
    main(_train_args(tmp_path, data, tmp_path / "full", wavelet_normalization="per-band", **flags))
    old = tmp_path / "old"  # a run of an earlier version: per-band, and no such key in what it saved
    main(_train_args(tmp_path, data, old, steps=2, wavelet_normalization="per-band", **flags))
    for name in ("last.pt", "model.pt"):
        ckpt = load_checkpoint(old / name)
        del ckpt["config"]["wavelet_normalization"]
        torch.save(ckpt, old / name)
    main(_train_args(tmp_path, data, tmp_path / "ft_old", steps=1, finetune=old / "model.pt", **flags))
    assert setting(tmp_path / "ft_old") == "per-band"
    main(_train_args(tmp_path, data, tmp_path / "ft_new", steps=1, finetune=tmp_path / "new" / "model.pt", **flags))
    assert setting(tmp_path / "ft_new") == "paper"
    main(_train_args(tmp_path, data, old, resume="auto", **flags))
    assert setting(old) == "per-band" and losses(old) == losses(tmp_path / "full")  # step by step
    # a flag still wins over what a --finetune model trained with
    main(_train_args(tmp_path, data, tmp_path / "ft_set", steps=1, finetune=old / "model.pt",
                     wavelet_normalization="paper", **flags))
    assert setting(tmp_path / "ft_set") == "paper"


def test_finetune_reads_the_start_checkpoint_once(tmp_path, monkeypatch):
    """--finetune read the start file twice: for the weights, then for the --wavelet-normalization it trained
    with."""
    from lightface.engine.checkpoint import load_checkpoint
    from pipelines.train_super_resolution import main

    data, src = _faces(tmp_path), tmp_path / "src"
    main(_train_args(tmp_path, data, src, steps=1, identity_weights="none", wavelet_normalization="per-band"))
    reads, load = [], torch.load

    def spy(f, *args, **kwargs):
        reads.append(str(f))
        return load(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    main(_train_args(tmp_path, data, tmp_path / "ft", steps=1, identity_weights="none", finetune=src / "model.pt"))
    assert reads.count(str(src / "model.pt")) == 1
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "ft" / "last.pt")["config"]["wavelet_normalization"] == "per-band"


def test_resume_refuses_another_wavelet_normalization_than_the_run_trained_with(tmp_path, capsys):
    """An explicit --wavelet-normalization that differs from the resumed run's was taken with a warning (the
    loss changed its balance mid-run); it is refused (exit 2) as train_lightcnn refuses another --bias-lr-mult,
    also for a run saved before the setting existed (per-band), and the run is left as it was."""
    from lightface.engine.checkpoint import load_checkpoint
    from pipelines.train_super_resolution import get_args_parser, main
    from pipelines._cli import run_cli

    data, out = _faces(tmp_path), tmp_path / "run"
    flags = dict(identity_weights="none", steps=1)
    main(_train_args(tmp_path, data, out, wavelet_normalization="per-band", **flags))
    argv = _train_argv(data, out, identity_weights="none", steps=2, wavelet_normalization="paper") + ["--resume"]
    assert run_cli(main, get_args_parser, argv) == 2
    err = capsys.readouterr().err
    assert "--wavelet-normalization paper" in err and "trained with --wavelet-normalization per-band" in err
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["step"] == 1
    del ckpt["config"]["wavelet_normalization"]  # as a run of an earlier version saved it: per-band
    torch.save(ckpt, out / "last.pt")
    assert run_cli(main, get_args_parser, argv) == 2
    assert "trained with --wavelet-normalization per-band" in capsys.readouterr().err
    main(_train_args(tmp_path, data, out, identity_weights="none", steps=2, wavelet_normalization="per-band",
                     resume="auto"))
    assert load_checkpoint(out / "last.pt")["config"]["wavelet_normalization"] == "per-band"


def test_upscale_tensor_refuses_what_is_not_a_float_image_in_0_1(tiny_weights):
    """A uint8 or 0..255 tensor came back as an all-white image, without a word."""
    sr = SuperResolver(tiny_weights, device="cpu")
    with pytest.raises(TypeError, match="upscale_tensor input must be a float tensor.*uint8.*divide"):
        sr.upscale_tensor(torch.full((1, 3, 8, 8), 200, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"upscale_tensor input must be in \[0, 1\].* to 200: divide 0..255"):
        sr.upscale_tensor(torch.full((1, 3, 8, 8), 200.0))
    assert sr.upscale_tensor(torch.full((1, 3, 8, 8), 200 / 255)).shape == (1, 3, 32, 32)


def test_scale_given_as_text_is_the_number_and_other_values_are_refused_plainly(tiny_weights):
    """SuperResolver(scale="4") (a YAML or environment value) said "scale=4: the weights are a 4x model"."""
    assert SuperResolver(tiny_weights, device="cpu", scale="4").scale == 4
    assert SuperResolver(tiny_weights, device="cpu", scale=4.0).scale == 4
    for bad in ("4x", 4.5, True, 0):
        with pytest.raises(ValueError, match=r"scale=.*must be a whole number such as 4 or 8"):
            SuperResolver(tiny_weights, device="cpu", scale=bad)
    with pytest.raises(ValueError, match=r"scale=8\): the weights are a 4x model"):
        SuperResolver(tiny_weights, device="cpu", scale="8")


def _tree(root):
    """root/top.png, root/c.jfif (a JPEG as browsers save it), root/notes.txt, root/sub/a.png,
    root/sub/deeper/b.png: distinct uniform images."""
    for k, rel in enumerate(["top.png", "sub/a.png", "sub/deeper/b.png"]):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / rel), np.full((20, 20, 3), 40 + 50 * k, np.uint8))
    ok, buf = cv2.imencode(".jpg", np.full((20, 20, 3), 220, np.uint8))
    (root / "c.jfif").write_bytes(buf.tobytes())
    (root / "notes.txt").write_text("not a photo")
    return root


def _upscale(bgr):
    return RestoreResult(image=cv2.resize(bgr, (40, 40)), crops=[bgr], faces=[cv2.resize(bgr, (40, 40))])


def test_restore_paths_walks_sub_folders_keeping_their_paths_and_says_what_it_leaves_out(tmp_path, caplog):
    """super_resolve / frontalize -i DIR restored only DIR's own images, without a word about its sub-folders."""
    src = _tree(tmp_path / "in")
    with caplog.at_level("INFO", logger="lightface.restore.folder"):
        summary = restore_paths(src, tmp_path / "out", _upscale, show_progress=False)
    assert sorted(p["name"] for p in summary["processed"]) == ["c", "sub/a", "sub/deeper/b", "top"]
    restored = tmp_path / "out" / "restored_imgs"
    assert int(cv2.imread(str(restored / "sub" / "deeper" / "b.png"))[5, 5, 0]) == 140
    assert (restored / "c.jpg").is_file()  # a .jfif JPEG is written as .jpg (OpenCV writes no .jfif)
    assert "left out 1 file(s) whose extension is not an image's" in caplog.text and "notes.txt" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="lightface.restore.folder"):
        flat = restore_paths(src, tmp_path / "flat", _upscale, show_progress=False, recursive=False)
    assert sorted(p["name"] for p in flat["processed"]) == ["c", "top"]
    assert "left out 1 sub-folder(s), e.g. " in caplog.text and "unwalked" in caplog.text
    nested_only = src / "sub" / "deeper"
    (nested_only / "d").mkdir()
    (nested_only / "b.png").rename(nested_only / "d" / "b.png")
    with pytest.raises(FileNotFoundError, match=r"1 image\(s\) lie in sub-folders, e.g. .*d/b.png"):
        list_images(nested_only)


def test_restore_paths_into_an_output_folder_inside_the_input_leaves_earlier_results_alone(tmp_path):
    """-i photos -o photos/out, run again (or continued after a kill): the walk does not restore the results."""
    src = _tree(tmp_path / "in")
    first = restore_paths(src, src / "out", _upscale, show_progress=False, run_key="k")
    again = restore_paths(src, src / "out", _upscale, show_progress=False, run_key="k")
    assert len(first["processed"]) == len(again["processed"]) == 4
    assert not (src / "out" / "restored_imgs" / "out").exists()


def test_an_image_opencv_fails_on_is_skipped_and_the_folder_goes_on(tmp_path):
    """An OpenCV error in the restorer (SCRFD's resize of a banner raised one) stopped the whole folder, and the
    same command stopped again at the same file."""
    src = _tree(tmp_path / "in")

    def restore(bgr):
        if int(bgr[5, 5, 0]) == 90:  # sub/a.png
            cv2.resize(bgr, (640, 0))
        return _upscale(bgr)

    summary = restore_paths(src, tmp_path / "out", restore, show_progress=False, run_key="k")
    assert len(summary["processed"]) == 3
    (skipped,) = summary["skipped"]
    assert skipped["input"].endswith("sub/a.png") and skipped["reason"].startswith("OpenCV resize(): ")


@pytest.mark.parametrize("flags,named", [
    (["--aligned", "--only-center-face"], "--only-center-face"),
    (["--aligned", "--max-face-shrink", "4", "--detector", "det.onnx"], "--detector"),
    (["--aligned", "--ext", "png"], "--ext"),
    (["--identity-weights", "lightcnn.pth"], "--identity-weights"),
])
def test_super_resolve_refuses_flags_that_cannot_apply_before_anything_loads(tmp_path, capsys, flags, named):
    """--aligned ignored --only-center-face, --max-face-shrink and --detector without a word."""
    from pipelines._cli import run_cli
    from pipelines.super_resolve import get_args_parser, main

    argv = ["-i", str(_faces(tmp_path, n=1)), "-o", str(tmp_path / "out"), "--weights", str(tmp_path / "none.pt"),
            "--device", "cpu", *flags]
    assert run_cli(main, get_args_parser, argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"super_resolve: error: {named}: ") and "; drop " in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


def test_a_full_disk_while_evaluation_json_is_written_keeps_the_earlier_report(tmp_path, tiny_weights,
                                                                               disk_full_at_sync):
    """evaluation.json was written in place: a full disk or a kill then left a truncated report."""
    from pipelines.super_resolve import get_args_parser, main

    out = tmp_path / "out"
    argv = ["-o", str(out), "--weights", str(tiny_weights), "--aligned", "--device", "cpu",
            "--evaluate", str(_faces(tmp_path, n=2))]
    main(get_args_parser().parse_args(argv))
    before = (out / "evaluation.json").read_text()
    disk_full_at_sync("evaluation.json")
    with pytest.raises(OSError, match="No space left"):
        main(get_args_parser().parse_args(argv))
    assert (out / "evaluation.json").read_text() == before and json.loads(before)["count"] == 2
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]


def test_hr_images_smaller_than_hr_size_are_left_out_and_reported_never_upsampled(tmp_path, caplog):
    """An image folder given to --data with photos smaller than --hr-size (150 px LFW crops for --hr-size 256)
    made blurry upsampled "HR" targets without a word, and a non-image file stopped the training when drawn: both
    are left out and counted; a folder with nothing large enough and an LMDB of smaller faces are refused."""
    import logging

    from lightface.data.build import write_lmdb
    from lightface.data.degradation import Degradation, SRPairDataset
    from lightface.engine.sr_trainer import open_hr_source
    from pipelines.train_super_resolution import main

    data = write_smooth_faces(tmp_path / "hr", 6, 48)
    write_smooth_faces(tmp_path / "hr" / "small", 3, 24)
    (tmp_path / "hr" / "notes.png").write_bytes(b"not an image")
    with caplog.at_level(logging.WARNING, logger="lightface.engine.sr_trainer"):
        source = open_hr_source([str(data)], min_size=32)
    assert len(source) == 6 and all(min(source[i].shape[:2]) >= 32 for i in range(len(source)))
    assert "left out 3 of 10 image(s) smaller than --hr-size 32" in caplog.text
    assert "left out 1 unreadable file(s)" in caplog.text and "notes.png" in caplog.text
    pairs = SRPairDataset(source, 32, Degradation(4, methods=("bicubic",), blur_prob=0, noise_prob=0, jpeg_prob=0))
    assert len(pairs) == 6

    caplog.clear()
    with caplog.at_level(logging.INFO):
        res = main(_train_args(tmp_path, data, tmp_path / "run", steps=1, val_count=1, identity_weights="none"))
    assert res["step"] == 1 and "on 5 faces (1 held out)" in caplog.text

    with pytest.raises(ValueError, match=r"none of its 3 image file\(s\).*3 smaller than 32 px"):
        open_hr_source(str(tmp_path / "hr" / "small"), min_size=32)
    lmdb = tmp_path / "small.lmdb"
    write_lmdb(lmdb, [{"image": np.full((24, 24, 3), 128, np.uint8), "label": 0}] * 3, ["a"])
    with pytest.raises(ValueError, match=r"--val-data .*24x24, smaller than --hr-size 32"):
        open_hr_source(str(lmdb), min_size=32, flag="--val-data")
    assert len(open_hr_source(str(lmdb))) == 3  # no min_size: as it is


def test_a_face_cut_by_the_photos_edge_gets_no_dark_and_bright_line_along_that_edge(shared_data, shared_models):
    """A real photo cut through a face (the left half of Blake Lively's face gone): the crop the model read was
    black where it passed the photo's edge, and its ringing came back pasted along that edge, the edge column 31
    grey levels darker than the bicubic upscale and the next three 10-18 brighter. The crop now mirrors the photo
    there, and the edge columns differ from the bicubic upscale no more than the face's inner columns do."""
    photo = cv2.imread(str(shared_data / "real_lq_faces" / "gfpgan_whole_imgs" / "Blake_Lively.jpg"))
    sr = SuperResolver(scale=4, detector=str(shared_models / "det_500m.onnx"), device="cpu")
    x1, _, x2, _ = sr.restore(photo)[1][0].box
    part = np.ascontiguousarray(photo[:, int((x1 + x2) / 2) - 10:])
    out, faces = sr.restore(part)
    face = min(faces, key=lambda f: f.box[0])
    assert face.box[0] < 5  # the face the edge cuts was found
    y1, y2 = int(face.box[1] * 4), int(face.box[3] * 4)
    bicubic = cv2.resize(part, (part.shape[1] * 4, part.shape[0] * 4), interpolation=cv2.INTER_CUBIC)
    diff = np.abs(out[y1:y2].astype(np.float32) - bicubic[y1:y2]).mean(axis=(0, 2))  # per column
    assert diff[:4].max() < 3 * max(diff[40:80].mean(), 1.0), diff[:8]
    assert 0.1 < np.abs(out[y1:y2, 40:80].astype(np.float32) - bicubic[y1:y2, 40:80]).mean()  # restored there


def test_a_truncated_jpeg_in_an_hr_folder_is_replaced_and_reported_not_the_end_of_the_run(tmp_path, shared_data,
                                                                                           caplog):
    """A JPEG cut short (its header sound, its data not) in a --data folder stopped the training with "image file
    is truncated" when that sample was drawn, hours in. The sample is now the next readable one (the same in every
    DataLoader worker), the file is named in a warning and in the run's summary, an LMDB's damaged record still
    stops the run with its own error, and a folder found mostly unreadable is refused."""
    import logging

    from lightface.data.build import write_lmdb
    from lightface.data.degradation import Degradation, SRPairDataset
    from lightface.data.lmdb_format import LMDBFormatError, sample_key
    from lightface.engine.sr_trainer import open_hr_source
    from pipelines.train_super_resolution import main

    photos = sorted((shared_data / "celeba_hq").rglob("*.jpg"))[:6]
    data = tmp_path / "hr"
    data.mkdir()
    for path in photos:  # 1024 px CelebA-HQ photos, resized to 64 px HR faces
        cv2.imwrite(str(data / f"{path.stem}.jpg"), cv2.resize(cv2.imread(str(path)), (64, 64),
                                                              interpolation=cv2.INTER_AREA))
    whole = (data / f"{photos[0].stem}.jpg").read_bytes()
    cut = data / f"{photos[0].stem}_cut.jpg"
    cut.write_bytes(whole[: len(whole) // 2])
    clean = Degradation(4, methods=("bicubic",), blur_prob=0, noise_prob=0, jpeg_prob=0)
    source = open_hr_source(str(data), min_size=32)
    assert len(source) == 7  # the header reads: not left out at start-up, nothing decoded there
    i = source.paths.index(cut)
    pairs = SRPairDataset(source, 32, clean, seed=0)
    with caplog.at_level(logging.WARNING, logger="lightface.engine.sr_trainer"):
        lr, hr = pairs[i]  # the cut file: replaced by the next one
    torch.testing.assert_close(hr, pairs[(i + 1) % 7][1])
    assert f"{cut.name}: not a readable image" in caplog.text and "another image is drawn" in caplog.text
    assert source.found_unreadable() == [cut]

    caplog.clear()
    with caplog.at_level(logging.WARNING):
        res = main(_train_args(tmp_path, data, tmp_path / "run", steps=6, batch_size=2, val_count=1, workers=2,
                               identity_weights="none"))
    assert res["step"] == 6 and res["unreadable_hr_files"] == [str(cut)]
    assert "1 HR file(s) could not be read when drawn" in caplog.text

    # most files cut short: refused with the count, a one-line error (not a DataLoader worker's traceback)
    for path in [p for p in source.paths[1:] if p != cut][:3]:  # the held-out face (the first) stays whole
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert len(open_hr_source(str(data), min_size=32)) == 7  # their headers read: found only when drawn
    with pytest.raises(ValueError, match=r"^--data .*: [45] of its 7 image file\(s\) are unreadable .*more than 50%"):
        main(_train_args(tmp_path, data, tmp_path / "run2", steps=8, batch_size=2, val_count=1, workers=2,
                         identity_weights="none"))

    # an LMDB's damaged record keeps its own error
    import lmdb
    lmdb_path = tmp_path / "hr.lmdb"
    write_lmdb(lmdb_path, [{"image": np.full((32, 32, 3), 128, np.uint8), "label": 0}] * 3, ["a"])
    env = lmdb.open(str(lmdb_path), map_size=1 << 24)
    with env.begin(write=True) as txn:
        txn.put(sample_key(1), bytes(txn.get(sample_key(1)))[:40])
    env.close()
    with pytest.raises(LMDBFormatError, match="build_lmdb --verify"):
        SRPairDataset(open_hr_source(str(lmdb_path), min_size=32), 32, clean)[1]


def test_evaluate_aligned_skips_hr_crops_smaller_than_the_output_never_scoring_against_an_upsampling(
        tmp_path, tiny_weights, shared_data, caplog):
    """--evaluate --aligned enlarged an HR crop smaller than the model's output (bicubic) and scored the model against
    that blurry ground truth without a word: the shipped 4x model gained +3.97 dB over bicubic on CelebA-HQ faces
    aligned at 96 px against +3.32 dB on the same faces at 128. Such crops are skipped, listed and counted."""
    import logging

    from pipelines.super_resolve import get_args_parser, main

    hr = tmp_path / "hr"
    hr.mkdir()
    photos = sorted((shared_data / "celeba_hq").rglob("*.jpg"))[:4]
    for k, path in enumerate(photos):  # the photos resized whole: 2 HR crops of 48 px, 2 of 24 (output: 32)
        side = 48 if k % 2 == 0 else 24
        cv2.imwrite(str(hr / f"{path.stem}.png"), cv2.resize(cv2.imread(str(path)), (side, side),
                                                             interpolation=cv2.INTER_AREA))
    with caplog.at_level(logging.WARNING, logger="lightface.restore.super_resolver"):
        ev = main(get_args_parser().parse_args(["-o", str(tmp_path / "out"), "--weights", str(tiny_weights),
                                                "--aligned", "--device", "cpu", "--evaluate", str(hr)]))["evaluation"]
    assert ev["count"] == 2 and {r["input"] for r in ev["images"]} == {str(hr / f"{p.stem}.png") for p in photos[::2]}
    assert sorted(s["input"] for s in ev["skipped"]) == sorted(str(hr / f"{p.stem}.png") for p in photos[1::2])
    assert all("HR crop 24x24 smaller than the output size 32" in s["reason"] for s in ev["skipped"])
    assert "skipped 2 of 4 HR image(s)" in caplog.text


def _exported_sr(tmp_path, backend, flip_ensemble=True):
    """(a 4x 32 -> 128 WaveletSRNet whose output is not bicubic, its file of lightface.export for ``backend``)."""
    from lightface.export import export_onnx, export_torchscript

    torch.manual_seed(0)
    net = WaveletSRNet(scale=4, output_size=128, channels=8, num_blocks=1, head_channels=8)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    export = export_onnx if backend == "onnx" else export_torchscript
    path = export(SuperResolver(net, device="cpu", flip_ensemble=flip_ensemble),
                  tmp_path / ("sr4.onnx" if backend == "onnx" else "sr4_ts.pt"))
    return net, path


@pytest.mark.parametrize("backend", ["onnx", "torchscript"])
def test_an_exported_super_resolver_restores_photos_and_crops_as_the_pytorch_model(tmp_path, shared_data,
                                                                                    shared_models, backend):
    """SuperResolver("sr4.onnx") / the .pt of export_torchscript / super_resolve --weights FILE failed with "cannot
    load checkpoint ...: an .onnx export serves inference only (FaceEmbedder, --weights)": the exported super-resolver
    had no face pipeline (detect, align, restore, paste back) to run in. The file now runs under the same pre- and
    post-processing, its scale and flip ensemble read from its card: photos, crops and the CLI within a grey level."""
    from pipelines.super_resolve import get_args_parser, main

    net, path = _exported_sr(tmp_path, backend)
    det = str(shared_models / "det_500m.onnx")
    ref = SuperResolver(net, device="cpu", detector=det)
    sr = SuperResolver(path, device="cpu", detector=det)
    assert sr.backend == ("onnxruntime" if backend == "onnx" else "torchscript") and sr.model is None
    assert (sr.scale, sr.input_size, sr.output_size, sr.flip_ensemble) == (4, 32, 128, True)
    photos = sorted((shared_data / "celeba_hq").glob("*/*.jpg"))[:2]
    imgs = [cv2.resize(cv2.imread(str(p)), (144, 144), interpolation=cv2.INTER_AREA) for p in photos]
    for img in imgs:
        (want, want_faces), (got, got_faces) = ref.restore(img), sr.restore(img)
        assert len(got_faces) == len(want_faces) == 1 and got_faces[0].super_resolved
        assert got.shape == want.shape == (576, 576, 3) and np.abs(got.astype(int) - want).max() <= 1
    crops = [cv2.resize(img, (32, 32), interpolation=cv2.INTER_AREA) for img in imgs] + [cv2.resize(imgs[0], (44, 36))]
    for want, got in zip(ref.upscale_faces(crops), sr.upscale_faces(crops)):
        assert got.shape == want.shape and np.abs(got.astype(int) - want).max() <= 1
    x = torch.from_numpy(np.stack([c[:, :, ::-1] for c in crops[:2]]).transpose(0, 3, 1, 2).copy()).float() / 255
    assert (sr.upscale_tensor(x) - ref.upscale_tensor(x)).abs().max() < 1e-5
    bicubic = torch.nn.functional.interpolate(x, scale_factor=4, mode="bicubic")
    assert (ref.upscale_tensor(x) - bicubic).abs().max() > 1e-2  # the model is not bicubic: a real comparison

    src = tmp_path / "crops"
    src.mkdir()
    for i, c in enumerate(crops[:2]):
        cv2.imwrite(str(src / f"{i}.png"), c)
    summary = main(get_args_parser().parse_args(["-i", str(src), "-o", str(tmp_path / "out"), "--weights", str(path),
                                                 "--aligned", "--device", "cpu"]))
    assert len(summary["summary"]["processed"]) == 2
    for i, want in enumerate(ref.upscale_faces(crops[:2])):
        got = cv2.imread(str(tmp_path / "out" / "restored_faces" / f"{i}_00.png"))
        assert np.abs(got.astype(int) - want).max() <= 1


def test_an_exported_super_resolver_keeps_its_flip_ensemble_and_refuses_what_it_cannot_run(tmp_path, shared_data):
    """The flip ensemble is inside an exported graph: a file exported without it runs without it (the CLI's default
    used to pass flip_ensemble=True), and settings the file cannot honour (--no-flip-ensemble on a file with the
    ensemble, --no-ema, another --scale) are refused saying what to do, never silently ignored."""
    from pipelines.super_resolve import get_args_parser, main

    net, path = _exported_sr(tmp_path, "onnx", flip_ensemble=False)
    sr = SuperResolver(path, device="cpu")
    assert sr.flip_ensemble is False
    crop = cv2.resize(cv2.imread(str(sorted((shared_data / "celeba_hq").glob("*/*.jpg"))[0])), (32, 32),
                      interpolation=cv2.INTER_AREA)
    want = SuperResolver(net, device="cpu", flip_ensemble=False).upscale_face(crop)
    assert np.abs(sr.upscale_face(crop).astype(int) - want).max() <= 1
    src = tmp_path / "crops"
    src.mkdir()
    cv2.imwrite(str(src / "a.png"), crop)
    main(get_args_parser().parse_args(["-i", str(src), "-o", str(tmp_path / "out"), "--weights", str(path),
                                       "--aligned", "--device", "cpu"]))
    assert np.abs(cv2.imread(str(tmp_path / "out" / "restored_faces" / "a_00.png")).astype(int) - want).max() <= 1
    with pytest.raises(ValueError, match=r"exported with the flip ensemble off.*export_onnx\(SuperResolver\(weights, "
                                         r"flip_ensemble=True\), path\)"):
        SuperResolver(path, device="cpu", flip_ensemble=True)
    with pytest.raises(ValueError, match="exported with the flip ensemble off"):
        sr.upscale_tensor(torch.rand(1, 3, 32, 32), flip_ensemble=True)
    with pytest.raises(ValueError, match=r"ema=False \(--no-ema\).*holds only the weights it was exported with"):
        SuperResolver(path, device="cpu", ema=False)
    with pytest.raises(ValueError, match="scale=8, but the file is a 4x model"):
        SuperResolver(path, device="cpu", scale=8)


def test_the_same_hr_source_twice_or_validation_inside_the_training_data_is_refused(tmp_path, shared_data, capsys):
    """``--data X X`` (or a folder and a folder inside it) trained on every face twice and held out every k-th face
    of the concatenation for validation while its twin stayed in training; ``--val-data`` inside ``--data``
    validated on training faces: val_psnr and best.pt measured memorisation, silently."""
    from pipelines._cli import run_cli
    from pipelines.train_super_resolution import get_args_parser, main

    hq, out = shared_data / "celeba_hq", tmp_path / "run"
    female = hq / "female"
    argv = _train_argv(female, out, identity_weights="none", steps=1)
    cases = [(argv + ["--data", str(female), f"{female}/"], f"--data {female}/ is given twice (also as {female})"),
             (argv + ["--data", str(hq), str(female)], f"--data {female} is inside --data {hq}"),
             (argv + ["--data", str(hq), "--val-data", str(female)], f"--val-data {female} is inside --data {hq}"),
             (argv + ["--val-data", str(female)], f"--val-data {female} is also given as --data {female}")]
    for command, said in cases:
        assert run_cli(main, get_args_parser, command) == 1, command
        err = capsys.readouterr().err
        assert said in err and "Traceback" not in err, err
    assert "validation would measure training images" in err
    assert not (out / "last.pt").exists()
