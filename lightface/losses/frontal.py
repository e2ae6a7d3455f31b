"""TP-GAN synthesis loss (Huang et al., ICCV 2017, eq. 7).

``L_syn = L_pixel + l1 * L_sym + l2 * L_adv + l3 * L_ip + l4 * L_tv (+ l_ce * L_ce)``

with the paper's weights ``l1 = 0.3, l2 = 1e-3, l3 = 3e-3, l4 = 1e-4`` as defaults.
Every image is float in [0, 1], (N, C, H, W); the normalisation of each term:

* ``l_g_pix`` — multi-scale L1: for each generator output ``img128``, ``img64`` and
  ``img32`` the mean absolute error against the ground-truth frontal resized to that
  scale (area interpolation), i.e. divided by ``N*C*H*W`` of that scale; the scales are
  averaged. With ``pixel_weight`` (N,) each sample's mean error is scaled by its weight
  before the batch mean (FNM, Qian et al. CVPR 2019, keeps a pixel target only for frontal
  self pairs: weight 0 on profiles whose target is another photo).
* ``l_g_patch`` — the same mean L1 for each of the four local-pathway patch images
  against the ground-truth patch cut at the same template box, averaged over patches;
  added to ``L_pixel`` with weight ``lambda_patch`` (default 1).
* ``l_g_sym`` — :func:`lightface.ops.symmetry_loss` (the fused op) with
  ``reduction="mean"``, i.e. the sum of ``|I(x, y) - I(W-1-x, y)|`` over the left half
  divided by ``N*C*H*floor(W/2)``; averaged over the three scales.
* ``l_g_adv`` — the generator side of the GAN objective
  (:class:`lightface.engine.gan.GANObjective`, whatever ``--adversarial`` chose) on
  ``img128``; the objective's feature-matching / pull-away additions (weighted by their
  own flags) are included and logged as ``l_g_feature_matching`` / ``l_g_pull_away``.
  For the non-saturating loss ``l_g_adv`` is the mean over the patch-logit map.
* ``l_g_ip`` — identity preserving: distance between frozen Light CNN features of the
  synthesised face and a reference, summed over the last pooling layer (flattened) and
  the 256-d ``fc`` feature (:meth:`lightface.losses.identity.IdentityLoss.features`).
  ``ip_distance="l1"`` (the paper): mean absolute difference; ``"cosine"``: mean of
  ``1 - cosine``. ``ip_reference="target"`` (the paper): the ground-truth frontal;
  ``"input"``: the generator's own input (the only photo of the same sitting when the
  target is another photo, as in CFP); ``"both"``: the mean of the two. With ``ip_jitter``
  ``j`` > 0 the synthesised face is randomly shifted (up to ``j`` of its size) and scaled
  (by ``1 +- j``), per sample, before the judge sees it (an expectation over small
  transformations, as in Athalye et al. 2018): identity written as pixel-exact
  high-frequency patterns the judge alone reads no longer pays, identity in the face's
  shapes still does.
* ``l_g_ip_rank`` — identity ranking (with ``lambda_ip_rank`` > 0 and identity banks): the
  cross-entropy, over every training identity, of the judge's cosine similarities between the
  synthesised face's (jittered) ``fc`` feature and each identity's mean frontal feature, divided
  by ``ip_temperature``; the mean over the judges. ``L_ip`` pulls a face towards its own
  reference, and a face that is merely generic can score high there: cosine to its own gallery
  photo rises while rank-1 falls. This term rewards what rank-1 measures, being nearer to one's
  own identity than to everybody else's (the recognisers' own softmax training signal, on the
  frozen judges' features).
* ``l_g_tv`` — :func:`lightface.ops.total_variation` (fused op) of ``img128`` with
  ``reduction="mean"``: the anisotropic L1 sum divided by ``N*C*H*W``.
* ``l_g_ce`` — optional cross-entropy of the generator's identity logits (on the
  encoder feature) against the identity labels.
"""
from typing import Dict, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import ops

__all__ = ["FrontalLoss", "SCALES", "IP_DISTANCES", "IP_REFERENCES", "prefix_terms"]

#: generator output keys and their side length.
SCALES: Tuple[Tuple[str, int], ...] = (("img128", 128), ("img64", 64), ("img32", 32))
#: feature distances and references of the identity-preserving term.
IP_DISTANCES: Tuple[str, ...] = ("l1", "cosine")
IP_REFERENCES: Tuple[str, ...] = ("target", "input", "both")


def prefix_terms(terms: Mapping[str, float]) -> Dict[str, float]:
    """GAN-toolkit term names (``g_adv``, ``g_feature_matching`` ...) -> ``l_g_adv`` ...; ``d_*`` -> ``l_d_*``."""
    return {(k if k.startswith("l_") else f"l_{k}"): float(v) for k, v in terms.items()}


def _jitter(img: Tensor, amount: float) -> Tensor:
    """Each image of (N, C, H, W) shifted by up to ``amount`` of its size and scaled by ``1 +- amount`` (bilinear,
    border pixels repeated), differentiably."""
    n = img.shape[0]
    u = torch.rand(n, 3, device=img.device, dtype=img.dtype) * 2 - 1
    theta = torch.zeros(n, 2, 3, device=img.device, dtype=img.dtype)
    theta[:, 0, 0] = theta[:, 1, 1] = 1 + amount * u[:, 0]
    theta[:, :, 2] = 2 * amount * u[:, 1:]  # affine_grid's coordinates span 2 per image side
    grid = F.affine_grid(theta, list(img.shape), align_corners=False)
    return F.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _weighted_l1(x: Tensor, y: Tensor, weight: Optional[Tensor]) -> Tensor:
    """Mean absolute error of (N, ...) tensors; with ``weight`` (N,) each sample's mean error is scaled by its weight
    before the batch mean (all ones = plain ``F.l1_loss``)."""
    if weight is None:
        return F.l1_loss(x, y)
    return (weight.to(x.dtype) * (x - y).abs().flatten(1).mean(1)).mean()


def _resize_like(target: Tensor, size: int) -> Tensor:
    if target.shape[-1] == size and target.shape[-2] == size:
        return target
    return F.interpolate(target, size=(size, size), mode="area")


class FrontalLoss(nn.Module):
    """The TP-GAN generator loss with named terms.

    Args:
        identity: a frozen identity network exposing ``features(x) -> {"pool", "fc"}``
            (:class:`lightface.losses.identity.IdentityLoss`), or ``None`` to skip ``L_ip``.
        objective: a GAN objective with ``generator_loss(D, real, fake) -> (loss, terms)``
            (:class:`lightface.engine.gan.GANObjective`), or ``None`` to skip ``L_adv``.
        lambda_sym, lambda_adv, lambda_ip, lambda_tv: the paper's l1..l4.
        lambda_patch: weight of the local-patch L1 inside ``L_pixel``.
        lambda_ce: weight of the identity cross-entropy on the encoder feature (0 = off).
        ip_distance: ``"l1"`` or ``"cosine"``, the feature distance of ``L_ip``.
        ip_reference: ``"target"``, ``"input"`` or ``"both"``, what ``L_ip`` compares the
            synthesised face with.
        ip_jitter: random shift / scale of the synthesised face before the judge sees it, as a
            fraction of its size (``[0, 0.5)``; 0: none).
        extra_identity: more frozen judges (:class:`lightface.losses.identity.IdentityLoss`);
            ``L_ip`` is then the mean of every judge's distance, so that what the synthesised
            face must carry is identity several recognisers read, not one network's patterns.
        lambda_ip_rank: weight of the identity ranking term ``l_g_ip_rank`` (0 = off).
        identity_banks: for the ranking term, one (K, 256) tensor per judge (``identity`` first,
            then ``extra_identity``): row k the L2-normalised mean ``fc`` feature of training
            identity k's frontal photos
            (:func:`lightface.engine.frontal_trainer.identity_bank`); ``labels`` are then rows.
        ip_temperature: the ranking term's softmax temperature on cosine similarities.

    ``forward(out, target, discriminator=None, labels=None, patch_boxes=None, source=None)`` takes the
    generator's output dict (see :class:`lightface.models.tpgan.TPGANGenerator`), the
    ground-truth frontal (N, C, 128, 128) in [0, 1], the discriminator (needed when
    ``objective`` is set), identity labels (N,) int64 (needed when ``lambda_ce > 0`` or
    ``lambda_ip_rank > 0``: classifier outputs and bank rows) and
    the patch boxes ``{name: (y0, x0, h, w)}`` (needed for ``l_g_patch``) and the
    generator's input (N, C, 128, 128) (needed when ``ip_reference`` is not ``"target"``) and
    ``pixel_weight`` (N,), a per-sample weight of ``l_g_pix`` and ``l_g_patch`` (e.g. 1 for
    frontal self pairs, less for profiles whose target is another photo; ``None`` = all 1) and
    ``source_features``, the main judge's ``{"pool", "fc"}`` features of ``source`` when the caller
    computed them already (a generator conditioned on that judge), read instead of a second pass. Returns
    ``(loss, terms)``: a scalar tensor and ``{name: float}`` of the unweighted terms plus
    ``l_g_total``.
    """

    def __init__(
        self,
        identity: Optional[nn.Module] = None,
        objective=None,
        lambda_sym: float = 0.3,
        lambda_adv: float = 1e-3,
        lambda_ip: float = 3e-3,
        lambda_tv: float = 1e-4,
        lambda_patch: float = 1.0,
        lambda_ce: float = 0.0,
        ip_distance: str = "l1",
        ip_reference: str = "target",
        ip_jitter: float = 0.0,
        extra_identity: Sequence[nn.Module] = (),
        lambda_ip_rank: float = 0.0,
        identity_banks: Optional[Sequence[Tensor]] = None,
        ip_temperature: float = 0.1,
    ):
        super().__init__()
        if not 0 <= ip_jitter < 0.5:
            raise ValueError(f"ip_jitter must be in [0, 0.5), a fraction of the image size, got {ip_jitter}")
        self.ip_jitter = ip_jitter
        if ip_distance not in IP_DISTANCES:
            raise ValueError(f"ip_distance must be one of {IP_DISTANCES}, got {ip_distance!r}")
        if ip_reference not in IP_REFERENCES:
            raise ValueError(f"ip_reference must be one of {IP_REFERENCES}, got {ip_reference!r}")
        self.ip_distance, self.ip_reference = ip_distance, ip_reference
        for name, value in dict(
            lambda_sym=lambda_sym, lambda_adv=lambda_adv, lambda_ip=lambda_ip, lambda_tv=lambda_tv,
            lambda_patch=lambda_patch, lambda_ce=lambda_ce, lambda_ip_rank=lambda_ip_rank,
        ).items():
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        self.identity = identity
        self.extra_identity = nn.ModuleList(extra_identity)
        if len(self.extra_identity) and identity is None:
            raise ValueError("extra_identity judges need the main identity judge")
        judges = 0 if identity is None else 1 + len(self.extra_identity)
        if lambda_ip_rank > 0:
            if not judges:
                raise ValueError("lambda_ip_rank > 0 needs an identity judge")
            if identity_banks is None or len(identity_banks) != judges:
                raise ValueError(f"lambda_ip_rank > 0 needs identity_banks, one (K, 256) bank per judge ({judges}), "
                                 f"got {0 if identity_banks is None else len(identity_banks)}")
            if not ip_temperature > 0:
                raise ValueError(f"ip_temperature must be > 0, got {ip_temperature}")
        self.lambda_ip_rank, self.ip_temperature = lambda_ip_rank, ip_temperature
        self.identity_banks = [b.detach() for b in identity_banks] if lambda_ip_rank > 0 else []
        self.objective = objective
        self.lambda_sym, self.lambda_adv, self.lambda_ip, self.lambda_tv = lambda_sym, lambda_adv, lambda_ip, lambda_tv
        self.lambda_patch, self.lambda_ce = lambda_patch, lambda_ce

    # Each term is its own method so benchmarks can time them separately.
    def pixel(self, out: Mapping[str, Tensor], target: Tensor, weight: Optional[Tensor] = None) -> Tensor:
        """Multi-scale mean L1 (averaged over 128/64/32); ``weight`` (N,) scales each sample's share."""
        return sum(_weighted_l1(out[k], _resize_like(target, s), weight) for k, s in SCALES) / len(SCALES)

    def patch(self, patches: Mapping[str, Tensor], target: Tensor, boxes: Mapping[str, Tuple[int, int, int, int]],
              weight: Optional[Tensor] = None) -> Tensor:
        """Mean L1 of each local patch image against the target cut at its box, averaged over patches;
        ``weight`` (N,) scales each sample's share."""
        losses = []
        for name, p in patches.items():
            y0, x0, h, w = boxes[name]
            losses.append(_weighted_l1(p, target[:, :, y0 : y0 + h, x0 : x0 + w], weight))
        return sum(losses) / len(losses)

    def symmetry(self, out: Mapping[str, Tensor]) -> Tensor:
        """Fused symmetry loss (mean reduction) averaged over the three scales."""
        return sum(ops.symmetry_loss(out[k], "mean") for k, _ in SCALES) / len(SCALES)

    def total_variation(self, img: Tensor) -> Tensor:
        """Fused anisotropic TV, mean reduction."""
        return ops.total_variation(img, "mean")

    def identity_preserving(self, fake: Tensor, real: Tensor,
                            real_features: Optional[Mapping[str, Tensor]] = None) -> Tensor:
        """``ip_distance`` between frozen Light CNN ``pool`` and ``fc`` features of fake and real, summed;
        with ``extra_identity`` judges, the mean of every judge's distance. ``real_features``: the main
        judge's features of ``real`` when the caller has them already."""
        return self.identity_terms(fake, (real,), known=(real_features,))[0]

    def identity_terms(self, fake: Tensor, refs: Sequence[Tensor], labels: Optional[Tensor] = None,
                       known: Optional[Sequence[Optional[Mapping[str, Tensor]]]] = None,
                       ) -> Tuple[Tensor, Optional[Tensor]]:
        """``(L_ip, l_g_ip_rank)`` from one judge pass over the (jittered) synthesised face: ``L_ip`` the
        distance to each reference (N, C, H, W) averaged over references and judges; the ranking term
        (None unless ``labels`` (N,) bank rows are given and ``lambda_ip_rank > 0``) averaged over judges.
        ``known``: per reference, the first judge's features of it where the caller has them already
        (None elsewhere), so that the judge does not read that reference again."""
        seen = _jitter(fake, self.ip_jitter) if self.ip_jitter > 0 else fake
        judges = [self.identity, *self.extra_identity]
        rank = labels is not None and self.lambda_ip_rank > 0
        ip, ranking = fake.new_zeros(()), fake.new_zeros(())
        for j, judge in enumerate(judges):
            ff = judge.features(seen)
            for r, real in enumerate(refs):
                fr = known[r] if j == 0 and known else None
                if fr is None:
                    with torch.no_grad():
                        fr = judge.features(real)
                ip = ip + self._feature_distance(ff, fr) / len(refs)
            if rank:
                bank = self.identity_banks[j].to(ff["fc"])
                logits = F.normalize(ff["fc"], dim=1) @ bank.T / self.ip_temperature
                ranking = ranking + F.cross_entropy(logits, labels)
        return ip / len(judges), (ranking / len(judges) if rank else None)

    def _feature_distance(self, ff: Mapping[str, Tensor], fr: Mapping[str, Tensor]) -> Tensor:
        if self.ip_distance == "cosine":
            return sum((1.0 - F.cosine_similarity(ff[k], fr[k], dim=1)).mean() for k in ("pool", "fc"))
        return F.l1_loss(ff["pool"], fr["pool"]) + F.l1_loss(ff["fc"], fr["fc"])

    def _ip_references(self, target: Tensor, source: Optional[Tensor]) -> Tuple[Tensor, ...]:
        if self.ip_reference == "target":
            return (target,)
        if source is None:
            raise ValueError(f"ip_reference={self.ip_reference!r} needs the generator's input: pass source=")
        return (source,) if self.ip_reference == "input" else (target, source)

    def forward(
        self,
        out: Mapping,
        target: Tensor,
        discriminator: Optional[nn.Module] = None,
        labels: Optional[Tensor] = None,
        patch_boxes: Optional[Mapping[str, Tuple[int, int, int, int]]] = None,
        source: Optional[Tensor] = None,
        pixel_weight: Optional[Tensor] = None,
        source_features: Optional[Mapping[str, Tensor]] = None,
    ) -> Tuple[Tensor, Dict[str, float]]:
        fake = out["img128"]
        if target.shape != fake.shape:
            raise ValueError(f"target must match the synthesised image {tuple(fake.shape)}, got {tuple(target.shape)}")
        if pixel_weight is not None and tuple(pixel_weight.shape) != (fake.shape[0],):
            raise ValueError(f"pixel_weight must have shape ({fake.shape[0]},), one weight per sample, "
                             f"got {tuple(pixel_weight.shape)}")
        terms: Dict[str, float] = {}
        l_pix = self.pixel(out, target, pixel_weight)
        terms["l_g_pix"] = l_pix.item()
        loss = l_pix
        if self.lambda_patch > 0 and out.get("patches") and patch_boxes is not None:
            l_patch = self.patch(out["patches"], target, patch_boxes, pixel_weight)
            terms["l_g_patch"] = l_patch.item()
            loss = loss + self.lambda_patch * l_patch
        if self.lambda_sym > 0:
            l_sym = self.symmetry(out)
            terms["l_g_sym"] = l_sym.item()
            loss = loss + self.lambda_sym * l_sym
        if self.lambda_adv > 0 and self.objective is not None:
            if discriminator is None:
                raise ValueError("FrontalLoss: a discriminator is needed for the adversarial term (or set lambda_adv=0)")
            l_adv, adv_terms = self.objective.generator_loss(discriminator, target, fake)
            terms.update(prefix_terms(adv_terms))
            loss = loss + self.lambda_adv * l_adv
        if (self.lambda_ip > 0 or self.lambda_ip_rank > 0) and self.identity is not None:
            if self.lambda_ip_rank > 0 and labels is None:
                raise ValueError("lambda_ip_rank > 0 needs labels: each sample's row of the identity banks")
            refs = self._ip_references(target, source)
            known = [source_features if ref is source else None for ref in refs] if source_features else None
            l_ip, l_rank = self.identity_terms(fake, refs, labels, known)
            terms["l_g_ip"] = l_ip.item()
            loss = loss + self.lambda_ip * l_ip
            if l_rank is not None:
                terms["l_g_ip_rank"] = l_rank.item()
                loss = loss + self.lambda_ip_rank * l_rank
        if self.lambda_tv > 0:
            l_tv = self.total_variation(fake)
            terms["l_g_tv"] = l_tv.item()
            loss = loss + self.lambda_tv * l_tv
        if self.lambda_ce > 0:
            if "logits" not in out or labels is None:
                raise ValueError("lambda_ce > 0 needs a generator built with num_classes > 0 and identity labels")
            l_ce = F.cross_entropy(out["logits"], labels)
            terms["l_g_ce"] = l_ce.item()
            loss = loss + self.lambda_ce * l_ce
        terms["l_g_total"] = loss.item()
        return loss, terms
