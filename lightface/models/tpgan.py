"""TP-GAN face frontalization (Huang, Zhang, Li, He, "Beyond Face Rotation", ICCV 2017).

The generator has two pathways:

* a **global** encoder-decoder over the 128x128 aligned face concatenated with its
  horizontal mirror (``2*C`` input channels). The encoder ends in a compact identity
  feature (an MFM fully-connected layer, as in the paper's maxout ``fc``), which is
  joined with Gaussian noise and decoded, with skip connections, into frontal images
  at 32, 64 and 128 pixels. With ``condition_network`` the decoder also receives the
  256-d feature (L2-normalised, unit RMS entries) of a frozen recogniser (a Light CNN)
  for the input, joined with the feature and as a FiLM scale and shift of the decoder
  stages at 8-64 px: the identity a pretrained face expert reads in the profile, which a
  small encoder trained on a few hundred people cannot learn (FNM, Qian et al. CVPR 2019,
  builds its encoder from such a network);
* four **local** pathways (left eye 40x40, right eye 40x40, nose 32x40, mouth 32x48,
  height x width) on patches centred on the landmarks of the frontal template. Their
  feature maps and patch images are placed on a 128x128 canvas at the same template
  positions and fused by element-wise max, then concatenated into the last stage of
  the global decoder.

Images are float tensors in ``[0, 1]``, (N, C, 128, 128), any channel order (the model
is agnostic; lightface's pipelines feed RGB). Inputs are expected aligned with
:func:`lightface.data.align.align_face` (``template="lightcnn"``, ``size=128``) so the
eyes, nose and mouth sit at the template positions the patches are cut at.

:class:`TPGANDiscriminator` returns a map of patch logits and follows the project's
discriminator contract: ``D(x)`` -> logits (N, 1, h, w); ``D(x, return_features=True)``
-> ``(logits, features)`` with the penultimate representation (N, F) last.
"""
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..nn import MFMLinear
from ..utils.templates import template_points
from .registry import register_model

__all__ = [
    "CONDITION_DIM",
    "PATCH_SIZES",
    "TPGANGenerator",
    "TPGANDiscriminator",
    "frontal_patch_centres",
    "patch_boxes",
    "tpgan",
    "tpgan_discriminator",
]

#: (height, width) of the four local patches, as in the paper.
PATCH_SIZES: Dict[str, Tuple[int, int]] = {
    "left_eye": (40, 40),
    "right_eye": (40, 40),
    "nose": (32, 40),
    "mouth": (32, 48),
}


#: size of the recogniser feature a conditioned generator receives (a Light CNN ``fc``).
CONDITION_DIM = 256


class _FrozenNetwork:
    """Holds the condition network outside the generator's modules: not in its state dict, not
    copied by ``copy.deepcopy`` (the EMA copy shares it), moved to the input's device on use."""

    def __init__(self, network: Optional[nn.Module] = None):
        self.network = network

    def __deepcopy__(self, memo) -> "_FrozenNetwork":
        return self


def frontal_patch_centres(size: int = 128, template: str = "lightcnn") -> Dict[str, Tuple[float, float]]:
    """Patch centres ``(x, y)`` in pixels on the frontal ``size`` x ``size`` canvas.

    Taken from the 5-point alignment template of :mod:`lightface.data.align`
    (:func:`lightface.utils.templates.template_points`): the two eyes, the nose tip and the
    midpoint of the mouth corners.
    """
    pts = template_points(template, size)  # (5, 2) float: l-eye, r-eye, nose, l-mouth, r-mouth
    pts = [(float(x), float(y)) for x, y in pts]
    mouth = ((pts[3][0] + pts[4][0]) / 2.0, (pts[3][1] + pts[4][1]) / 2.0)
    return {"left_eye": pts[0], "right_eye": pts[1], "nose": pts[2], "mouth": mouth}


def patch_boxes(
    centres: Mapping[str, Sequence[float]], size: int = 128
) -> Dict[str, Tuple[int, int, int, int]]:
    """Integer boxes ``(y0, x0, h, w)`` of the four patches, clamped inside the canvas."""
    boxes = {}
    for name, (h, w) in PATCH_SIZES.items():
        if name not in centres:
            raise ValueError(f"patch centre for {name!r} missing; got keys {sorted(centres)}")
        cx, cy = centres[name]
        x0 = int(round(cx - w / 2.0))
        y0 = int(round(cy - h / 2.0))
        boxes[name] = (min(max(y0, 0), size - h), min(max(x0, 0), size - w), h, w)
    return boxes


def _act() -> nn.Module:
    return nn.LeakyReLU(0.2, inplace=True)


def _conv(cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2), _act())


def _up(cin: int, cout: int, factor: int = 2) -> nn.Sequential:
    """Transposed-conv upsampling by ``factor`` (2 or 4)."""
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 2 * factor, factor, factor // 2), _act())


class ResBlock(nn.Module):
    """Two 3x3 convs with a LeakyReLU between and an identity shortcut: (N,C,H,W) -> (N,C,H,W)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, 1, 1)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1)
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(x + self.conv2(self.act(self.conv1(x))))


def _to_image(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, 1, 1)


def _squash(x: Tensor) -> Tensor:
    """Network output -> image in [0, 1]."""
    return torch.sigmoid(x)


class LocalPathway(nn.Module):
    """Small U-Net on one landmark patch: (N, C, h, w) -> features (N, width, h, w) and image (N, C, h, w).

    ``h`` and ``w`` must be divisible by 4.
    """

    def __init__(self, in_channels: int, width: int):
        super().__init__()
        self.enc0 = nn.Sequential(_conv(in_channels, width), ResBlock(width))
        self.enc1 = nn.Sequential(_conv(width, 2 * width, 3, 2), ResBlock(2 * width))
        self.enc2 = nn.Sequential(_conv(2 * width, 4 * width, 3, 2), ResBlock(4 * width))
        self.up1 = _up(4 * width, 2 * width)
        self.dec1 = nn.Sequential(_conv(4 * width, 2 * width), ResBlock(2 * width))
        self.up0 = _up(2 * width, width)
        self.dec0 = nn.Sequential(_conv(2 * width, width), ResBlock(width))
        self.to_img = _to_image(width, in_channels)

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        e0 = self.enc0(x)
        e1 = self.enc1(e0)
        e2 = self.enc2(e1)
        d1 = self.dec1(torch.cat([self.up1(e2), e1], 1))
        d0 = self.dec0(torch.cat([self.up0(d1), e0], 1))
        return d0, _squash(self.to_img(d0))


class TPGANGenerator(nn.Module):
    """Two-pathway frontalization generator.

    Args:
        in_channels: image channels C (3 for colour, 1 for gray).
        width: base channel width (the paper uses 64; tests use 8).
        local_width: channel width of each local pathway (default ``width // 2``).
        feature_dim: size of the compact identity feature (paper: 256).
        noise_dim: size of the Gaussian noise joined with the feature (paper: 100; 0 disables it).
        num_classes: when > 0, ``classifier`` maps the identity feature to logits for the
            optional identity cross-entropy term.
        size: canvas size (only 128 is supported: the patch sizes are the paper's).
        patch_centres: ``{"left_eye": (x, y), "right_eye": ..., "nose": ..., "mouth": ...}``
            on the frontal canvas; default: :func:`frontal_patch_centres` of the
            ``lightcnn`` alignment template.
        condition_network: a recogniser, as a shipped model's name (e.g.
            ``"lightcnn29v2_3src_rc13"``) or a Light CNN checkpoint path, whose (N, 256) feature
            of the input (L2-normalised, times 16: unit RMS entries) is joined with the encoder
            feature and the noise and scales and shifts the decoder stages at 8-64 px (FiLM).
            It is loaded (sha256-checked) on first use, frozen, and kept out of the state dict;
            :meth:`set_condition_network` shares an already loaded one. None: unconditioned.

    ``forward(x, noise=None, condition=None)`` takes (N, C, 128, 128) float in [0, 1] (and,
    for a conditioned generator, optionally the (N, 256) condition; computed from ``x`` when
    None) and returns a dict:
    ``"img128"``, ``"img64"``, ``"img32"`` (N, C, s, s) in [0, 1]; ``"local"`` the fused local
    patch images on the canvas (N, C, 128, 128); ``"patches"`` dict name -> (N, C, h, w) local
    patch images; ``"feature"`` (N, feature_dim); ``"logits"`` (N, num_classes) when a
    classifier exists. ``noise=None`` draws N(0, 1) in training mode and uses zeros in eval
    mode (deterministic inference).
    """

    def __init__(
        self,
        in_channels: int = 3,
        width: int = 64,
        local_width: Optional[int] = None,
        feature_dim: int = 256,
        noise_dim: int = 100,
        num_classes: int = 0,
        size: int = 128,
        patch_centres: Optional[Mapping[str, Sequence[float]]] = None,
        condition_network: Optional[str] = None,
    ):
        super().__init__()
        if size != 128:
            raise ValueError(f"TP-GAN works on 128x128 aligned faces (the paper's patch sizes); got size={size}")
        if width < 8 or width % 8:
            raise ValueError(f"width must be a positive multiple of 8, got {width}")
        C, w = in_channels, width
        lw = local_width or max(w // 2, 4)
        self.in_channels, self.size, self.noise_dim, self.feature_dim = C, size, noise_dim, feature_dim
        self.condition_network = None if condition_network is None else str(condition_network)
        self.condition_dim = CONDITION_DIM if self.condition_network is not None else 0
        self._condition = _FrozenNetwork()
        centres = dict(patch_centres) if patch_centres is not None else frontal_patch_centres(size)
        self.patch_centres = {k: (float(v[0]), float(v[1])) for k, v in centres.items()}
        self.boxes = patch_boxes(self.patch_centres, size)

        # Global encoder over [x, mirror(x)]: 128 -> 64 -> 32 -> 16 -> 8.
        self.conv0 = nn.Sequential(_conv(2 * C, w, 7), ResBlock(w))
        self.conv1 = nn.Sequential(_conv(w, w, 5, 2), ResBlock(w))
        self.conv2 = nn.Sequential(_conv(w, 2 * w, 3, 2), ResBlock(2 * w))
        self.conv3 = nn.Sequential(_conv(2 * w, 4 * w, 3, 2), ResBlock(4 * w))
        self.conv4 = nn.Sequential(_conv(4 * w, 8 * w, 3, 2), ResBlock(8 * w))
        self.fc = MFMLinear(8 * w * 8 * 8, feature_dim)
        self.classifier = nn.Linear(feature_dim, num_classes) if num_classes > 0 else None

        # Decoder seed from [feature, noise] and its direct upsamplings to 32/64/128.
        c8 = w
        self.fc_dec = nn.Linear(feature_dim + self.condition_dim + noise_dim, c8 * 8 * 8)
        c32, c64, c128 = max(w // 2, 4), max(w // 4, 4), max(w // 8, 4)
        self.seed32 = _up(c8, c32, 4)
        self.seed64 = _up(c32, c64)
        self.seed128 = _up(c64, c128)

        self.dec8 = nn.Sequential(ResBlock(c8 + 8 * w), _conv(c8 + 8 * w, 8 * w))
        self.up16 = _up(8 * w, 4 * w)
        self.dec16 = nn.Sequential(_conv(4 * w + 4 * w, 4 * w), ResBlock(4 * w))
        self.up32 = _up(4 * w, 2 * w)
        self.dec32 = nn.Sequential(_conv(2 * w + 2 * w + c32 + 2 * C, 2 * w), ResBlock(2 * w))
        self.out32 = _to_image(2 * w, C)
        self.up64 = _up(2 * w, w)
        self.dec64 = nn.Sequential(_conv(w + w + c64 + 2 * C + C, w), ResBlock(w))
        self.out64 = _to_image(w, C)
        self.up128 = _up(w, w)
        self.dec128 = nn.Sequential(_conv(w + w + c128 + 2 * C + C + lw + C, w), ResBlock(w), _conv(w, w // 2))
        self.out128 = _to_image(w // 2, C)

        self.local = nn.ModuleDict({name: LocalPathway(C, lw) for name in PATCH_SIZES})

        # Identity condition: FiLM scale and shift of the decoder stages 8-64 (zero-initialised: no effect at start)
        self.film = None
        if self.condition_dim:
            stages = {"d8": 8 * w, "d16": 4 * w, "d32": 2 * w, "d64": w}
            self.film = nn.ModuleDict({k: nn.Linear(self.condition_dim, 2 * c) for k, c in stages.items()})
            for lin in self.film.values():
                nn.init.zeros_(lin.weight)
                nn.init.zeros_(lin.bias)

    # -- helpers -----------------------------------------------------------------------
    def crop_patches(self, x: Tensor) -> Dict[str, Tensor]:
        """The four landmark patches of ``x`` (N, C, 128, 128): name -> (N, C, h, w)."""
        return {name: x[:, :, y0 : y0 + h, x0 : x0 + w] for name, (y0, x0, h, w) in self.boxes.items()}

    def fuse_on_canvas(self, patches: Mapping[str, Tensor]) -> Tensor:
        """Place per-patch maps (N, K, h, w) at their template boxes; element-wise max where they overlap, 0 outside."""
        first = next(iter(patches.values()))
        n, k = first.shape[:2]
        neg = torch.finfo(first.dtype).min
        canvases = []
        for name, p in patches.items():
            y0, x0, h, w = self.boxes[name]
            pad = (x0, self.size - x0 - w, y0, self.size - y0 - h)
            canvases.append(F.pad(p, pad, value=neg))
        fused = torch.stack(canvases, 0).amax(0)
        covered = fused > neg
        return fused.masked_fill(~covered, 0)  # no tensor made on a fixed device: traces device-free

    def _check(self, x: Tensor) -> None:
        if not isinstance(x, Tensor) or x.dim() != 4:
            raise ValueError(f"TP-GAN input must be a (N, C, H, W) tensor, got {getattr(x, 'shape', type(x))}")
        if x.shape[1] != self.in_channels or x.shape[2:] != (self.size, self.size):
            raise ValueError(
                f"TP-GAN input must be (N, {self.in_channels}, {self.size}, {self.size}) aligned faces in [0, 1], "
                f"got {tuple(x.shape)}; align with lightface.data.align.align_face(..., size={self.size})"
            )

    def _modulate(self, stage: str, h: Tensor, condition: Optional[Tensor]) -> Tensor:
        """FiLM of decoder features (N, K, H, W) by the condition: ``h * (1 + scale) + shift``."""
        if self.film is None:
            return h
        scale, shift = self.film[stage](condition)[:, :, None, None].chunk(2, 1)
        return h * (1 + scale) + shift

    # -- identity condition ------------------------------------------------------------
    def _require_condition(self) -> None:
        if self.condition_network is None:
            raise ValueError("this TP-GAN generator was built without condition_network; it takes no condition")

    def set_condition_network(self, network: nn.Module) -> None:
        """Use an already loaded, frozen recogniser (the one ``condition_network`` names) for the condition."""
        self._require_condition()
        self._condition.network = network

    def condition_recogniser(self) -> nn.Module:
        """The frozen recogniser ``condition_network`` names (loaded, sha256-checked, on first use; kept out of
        the generator's modules and state dict), whose feature :meth:`condition` computes."""
        from .identity import load_identity_network, resolve_identity_weights

        self._require_condition()
        if self._condition.network is None:
            self._condition.network = load_identity_network(
                resolve_identity_weights(self.condition_network, "the generator's condition"))
        return self._condition.network

    @torch.no_grad()
    def condition(self, x: Tensor) -> Tensor:
        """The recogniser's feature of ``x`` (N, C, 128, 128) in [0, 1], L2-normalised and scaled to unit RMS
        entries (norm 16, the scale of the encoder feature it joins): (N, 256) on x's device."""
        from .identity import identity_features

        net = self.condition_recogniser()
        if next(net.parameters()).device != x.device:
            net.to(x.device)
        return self.condition_from_fc(identity_features(net, x.float())["fc"]).to(x.dtype)

    def condition_from_fc(self, fc: Tensor) -> Tensor:
        """The condition from the condition network's ``fc`` feature (N, 256) of the input, when the caller
        has it already (a trainer whose identity judge is this network): what :meth:`condition` returns."""
        self._require_condition()
        if fc.dim() != 2 or fc.shape[1] != self.condition_dim:
            raise ValueError(f"condition network {self.condition_network} gives {tuple(fc.shape[1:])} features, "
                             f"the generator takes ({self.condition_dim},)")
        return F.normalize(fc.detach(), dim=1) * self.condition_dim ** 0.5

    def adapt_finetune_state(self, state: Mapping[str, Tensor], saved_kwargs: Mapping) -> Dict[str, Tensor]:
        """A saved generator's weights for this one: from an unconditioned generator, the decoder seed gets
        zero weights for the new condition inputs and the FiLM layers their zero initialisation, so
        fine-tuning starts from exactly the saved model.

        Raises:
            ValueError: the saved generator is conditioned and this one is not, or on another network
                (e.g. the shipped tpgan_w16_cfp_rc4 reads lightcnn29v2_3src_rc13, no longer the default).
        """
        saved = saved_kwargs.get("condition_network")
        if saved is not None and self.condition_network is None:
            raise ValueError(f"the saved generator is conditioned on {saved}; build this one with "
                             "condition_network (train_frontalization --identity-condition)")
        if saved is not None and saved != self.condition_network:  # its FiLM layers read that network's features
            raise ValueError(f"the saved generator is conditioned on {saved}, not {self.condition_network}; "
                             f"pass --identity-weights {saved} to keep its condition")
        state = dict(state)
        if saved is None and self.condition_network is not None:
            w = state["fc_dec.weight"]
            zeros = w.new_zeros(w.shape[0], self.condition_dim)
            state["fc_dec.weight"] = torch.cat([w[:, : self.feature_dim], zeros, w[:, self.feature_dim :]], 1)
            state.update({k: torch.zeros_like(v) for k, v in self.state_dict().items() if k.startswith("film.")})
        return state

    # -- forward -----------------------------------------------------------------------
    def forward(
        self, x: Tensor, noise: Optional[Tensor] = None, condition: Optional[Tensor] = None
    ) -> Dict[str, Union[Tensor, Dict[str, Tensor]]]:
        self._check(x)
        n = x.shape[0]
        xin = x * 2.0 - 1.0
        x2 = torch.cat([xin, xin.flip(-1)], 1)
        e0 = self.conv0(x2)
        e1 = self.conv1(e0)
        e2 = self.conv2(e1)
        e3 = self.conv3(e2)
        e4 = self.conv4(e3)
        feature = self.fc(e4.flatten(1))
        parts = [feature]
        if self.condition_dim:
            if condition is None:
                condition = self.condition(x)
            if tuple(condition.shape) != (n, self.condition_dim):
                raise ValueError(f"condition must be ({n}, {self.condition_dim}), got {tuple(condition.shape)}")
            parts.append(condition)
        if self.noise_dim > 0:
            if noise is None:
                noise = (torch.randn if self.training else torch.zeros)(n, self.noise_dim, device=x.device, dtype=x.dtype)
            parts.append(noise)
        z = torch.cat(parts, 1)
        s8 = F.leaky_relu(self.fc_dec(z), 0.2).view(n, -1, 8, 8)
        s32 = self.seed32(s8)
        s64 = self.seed64(s32)
        s128 = self.seed128(s64)

        patches_in = self.crop_patches(xin)
        local_feat, local_img = {}, {}
        for name, net in self.local.items():
            local_feat[name], local_img[name] = net(patches_in[name])
        local_feat_canvas = self.fuse_on_canvas(local_feat)
        local_img_canvas = self.fuse_on_canvas(local_img)

        d8 = self._modulate("d8", self.dec8(torch.cat([s8, e4], 1)), condition)
        d16 = self._modulate("d16", self.dec16(torch.cat([self.up16(d8), e3], 1)), condition)
        d32 = self._modulate("d32", self.dec32(torch.cat([self.up32(d16), e2, s32, F.avg_pool2d(x2, 4)], 1)), condition)
        img32 = _squash(self.out32(d32))
        up_img32 = F.interpolate(img32 * 2 - 1, scale_factor=2, mode="bilinear", align_corners=False)
        d64 = self._modulate("d64", self.dec64(torch.cat([self.up64(d32), e1, s64, F.avg_pool2d(x2, 2), up_img32], 1)),
                             condition)
        img64 = _squash(self.out64(d64))
        up_img64 = F.interpolate(img64 * 2 - 1, scale_factor=2, mode="bilinear", align_corners=False)
        d128 = self.dec128(
            torch.cat([self.up128(d64), e0, s128, x2, up_img64, local_feat_canvas, local_img_canvas * 2 - 1], 1)
        )
        img128 = _squash(self.out128(d128))
        out = {
            "img128": img128,
            "img64": img64,
            "img32": img32,
            "local": local_img_canvas,
            "patches": local_img,
            "feature": feature,
        }
        if self.classifier is not None:
            out["logits"] = self.classifier(feature)
        return out

    @torch.no_grad()
    def frontalize(self, x: Tensor, condition: Optional[Tensor] = None) -> Tensor:
        """Inference helper: (N, C, 128, 128) in [0, 1] -> frontal (N, C, 128, 128) in [0, 1], zero noise
        (N = 0: an empty batch). ``condition``: as for ``forward`` (a conditioned generator computes it from
        ``x`` when None)."""
        if x.shape[0] == 0:
            self._check(x)
            return x.new_zeros(x.shape)
        # new_zeros, not torch.zeros(device=x.device): a trace would pin that device (lightface.export)
        noise = x.new_zeros((x.shape[0], self.noise_dim)) if self.noise_dim else None
        return self(x, noise=noise, condition=condition)["img128"]


class TPGANDiscriminator(nn.Module):
    """Patch discriminator: (N, C, H, W) in [0, 1] -> a map of patch logits (N, 1, H/32, W/32).

    Five stride-2 4x4 convolutions (LeakyReLU, no normalisation, so WGAN-GP works) then a
    3x3 conv to one logit per patch. With ``return_features=True`` it returns
    ``(logits, features)``: the activation of every stage, then the global-average-pooled
    last stage (N, 8*width) as the penultimate representation used by feature matching
    and pull-away. ``minibatch_std`` appends a minibatch standard-deviation channel before
    the last stage; ``minibatch_discrimination`` adds a per-sample score from minibatch
    discrimination on the pooled feature to every patch logit.
    """

    def __init__(
        self,
        in_channels: int = 3,
        width: int = 64,
        num_layers: int = 5,
        minibatch_discrimination: bool = False,
        minibatch_std: bool = False,
    ):
        super().__init__()
        chans = [in_channels] + [width * min(2**i, 8) for i in range(num_layers)]
        self.stages = nn.ModuleList(
            nn.Sequential(nn.Conv2d(chans[i], chans[i + 1], 4, 2, 1), _act()) for i in range(num_layers)
        )
        last = chans[-1]
        self.mbstd = None
        if minibatch_std:
            from ..nn.gan_layers import MinibatchStdDev

            self.mbstd = MinibatchStdDev()
            last_in = last + 1
        else:
            last_in = last
        self.head = nn.Conv2d(last_in, 1, 3, 1, 1)
        self.mbd = None
        if minibatch_discrimination:
            from ..nn.gan_layers import MinibatchDiscrimination

            self.mbd = MinibatchDiscrimination(last, 32, 8)
            self.mbd_head = nn.Linear(last + 32, 1)

    def forward(self, x: Tensor, return_features: bool = False):
        feats: List[Tensor] = []
        h = x * 2.0 - 1.0
        for stage in self.stages:
            h = stage(h)
            feats.append(h)
        pooled = h.mean((2, 3))
        hh = self.mbstd(h) if self.mbstd is not None else h
        logits = self.head(hh)
        if self.mbd is not None:
            logits = logits + self.mbd_head(self.mbd(pooled)).view(-1, 1, 1, 1)
        if return_features:
            return logits, feats + [pooled]
        return logits


@register_model("tpgan", task="frontalization")
def tpgan(**kwargs) -> TPGANGenerator:
    """TP-GAN generator; keyword arguments as :class:`TPGANGenerator`."""
    return TPGANGenerator(**kwargs)


@register_model("tpgan_discriminator", task="discriminator")
def tpgan_discriminator(**kwargs) -> TPGANDiscriminator:
    """TP-GAN patch discriminator; keyword arguments as :class:`TPGANDiscriminator`."""
    return TPGANDiscriminator(**kwargs)
