"""Plain-PyTorch TP-GAN generator, the reference column of ``python -m benchmarks.frontal``.

Written from the paper's description (Huang, Zhang, Li, He, "Beyond Face Rotation: Global and
Local Perception GAN for Photorealistic and Identity Preserving Frontal View Synthesis",
ICCV 2017): a global encoder-decoder over the face and its mirror image, ending in a maxout
(split + max) fully-connected identity feature joined with noise; four local pathways on the
eye, nose and mouth patches whose features and images are placed back on a full-size canvas
and fused by a max, then joined with the last stage of the global decoder; outputs at 32,
64 and 128 px. Everything is done the straightforward way: MFM as ``torch.split`` + ``torch.max``,
the patches fused by writing each into a canvas in turn with ``torch.maximum``, every layer a
standard ``nn.Conv2d`` / ``nn.ConvTranspose2d`` / ``nn.LeakyReLU``.

The layer shapes follow lightface's ``TPGANGenerator`` at a given width (unconditioned, no
classifier) and the parameter names match its state dict, so
``BaselineTPGAN(...).load_state_dict(generator.state_dict())`` runs the same weights and the
frontal images can be compared. Nothing here uses lightface.
"""
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BaselineTPGAN", "build_baseline_tpgan"]


def _conv(cin, cout, k=3, stride=1):
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2), nn.LeakyReLU(0.2))


def _up(cin, cout, factor=2):
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 2 * factor, factor, factor // 2), nn.LeakyReLU(0.2))


class _Res(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, 1, 1)
        self.conv2 = nn.Conv2d(c, c, 3, 1, 1)

    def forward(self, x):
        return F.leaky_relu(x + self.conv2(F.leaky_relu(self.conv1(x), 0.2)), 0.2)


class _Maxout(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.filter = nn.Linear(cin, 2 * cout)

    def forward(self, x):
        a, b = torch.split(self.filter(x), self.filter.out_features // 2, 1)
        return torch.max(a, b)


class _Local(nn.Module):
    def __init__(self, c, w):
        super().__init__()
        self.enc0 = nn.Sequential(_conv(c, w), _Res(w))
        self.enc1 = nn.Sequential(_conv(w, 2 * w, 3, 2), _Res(2 * w))
        self.enc2 = nn.Sequential(_conv(2 * w, 4 * w, 3, 2), _Res(4 * w))
        self.up1 = _up(4 * w, 2 * w)
        self.dec1 = nn.Sequential(_conv(4 * w, 2 * w), _Res(2 * w))
        self.up0 = _up(2 * w, w)
        self.dec0 = nn.Sequential(_conv(2 * w, w), _Res(w))
        self.to_img = nn.Conv2d(w, c, 3, 1, 1)

    def forward(self, x):
        e0 = self.enc0(x)
        e1 = self.enc1(e0)
        d1 = self.dec1(torch.cat([self.up1(self.enc2(e1)), e1], 1))
        d0 = self.dec0(torch.cat([self.up0(d1), e0], 1))
        return d0, torch.sigmoid(self.to_img(d0))


class BaselineTPGAN(nn.Module):
    """(N, C, 128, 128) in [0, 1] -> frontal (N, C, 128, 128) in [0, 1] (``forward``: zero noise).

    ``boxes``: name -> (y0, x0, h, w) of the left_eye, right_eye, nose and mouth patches."""

    def __init__(self, boxes, in_channels=3, width=64, local_width=None, feature_dim=256, noise_dim=100):
        super().__init__()
        C, w = in_channels, width
        lw = local_width or max(w // 2, 4)
        self.boxes, self.noise_dim = dict(boxes), noise_dim
        self.conv0 = nn.Sequential(_conv(2 * C, w, 7), _Res(w))
        self.conv1 = nn.Sequential(_conv(w, w, 5, 2), _Res(w))
        self.conv2 = nn.Sequential(_conv(w, 2 * w, 3, 2), _Res(2 * w))
        self.conv3 = nn.Sequential(_conv(2 * w, 4 * w, 3, 2), _Res(4 * w))
        self.conv4 = nn.Sequential(_conv(4 * w, 8 * w, 3, 2), _Res(8 * w))
        self.fc = _Maxout(8 * w * 8 * 8, feature_dim)
        c32, c64, c128 = max(w // 2, 4), max(w // 4, 4), max(w // 8, 4)
        self.fc_dec = nn.Linear(feature_dim + noise_dim, w * 8 * 8)
        self.seed32, self.seed64, self.seed128 = _up(w, c32, 4), _up(c32, c64), _up(c64, c128)
        self.dec8 = nn.Sequential(_Res(9 * w), _conv(9 * w, 8 * w))
        self.up16 = _up(8 * w, 4 * w)
        self.dec16 = nn.Sequential(_conv(8 * w, 4 * w), _Res(4 * w))
        self.up32 = _up(4 * w, 2 * w)
        self.dec32 = nn.Sequential(_conv(4 * w + c32 + 2 * C, 2 * w), _Res(2 * w))
        self.out32 = nn.Conv2d(2 * w, C, 3, 1, 1)
        self.up64 = _up(2 * w, w)
        self.dec64 = nn.Sequential(_conv(2 * w + c64 + 3 * C, w), _Res(w))
        self.out64 = nn.Conv2d(w, C, 3, 1, 1)
        self.up128 = _up(w, w)
        self.dec128 = nn.Sequential(_conv(2 * w + c128 + 4 * C + lw, w), _Res(w), _conv(w, w // 2))
        self.out128 = nn.Conv2d(w // 2, C, 3, 1, 1)
        self.local = nn.ModuleDict({name: _Local(C, lw) for name in ("left_eye", "right_eye", "nose", "mouth")})

    def _fuse(self, maps, like):
        """Max of the patch maps where they overlap, each at its box; 0 where no patch lies."""
        n, k = like.shape[0], next(iter(maps.values())).shape[1]
        canvas = like.new_full((n, k, 128, 128), float("-inf"))
        for name, m in maps.items():
            y0, x0, h, w = self.boxes[name]
            canvas[:, :, y0:y0 + h, x0:x0 + w] = torch.maximum(canvas[:, :, y0:y0 + h, x0:x0 + w], m)
        return torch.where(torch.isinf(canvas), torch.zeros_like(canvas), canvas)

    def forward(self, x):
        n = x.shape[0]
        xin = x * 2 - 1
        x2 = torch.cat([xin, torch.flip(xin, [3])], 1)
        e0 = self.conv0(x2)
        e1 = self.conv1(e0)
        e2 = self.conv2(e1)
        e3 = self.conv3(e2)
        e4 = self.conv4(e3)
        z = torch.cat([self.fc(e4.reshape(n, -1)), x.new_zeros(n, self.noise_dim)], 1)
        s8 = F.leaky_relu(self.fc_dec(z), 0.2).reshape(n, -1, 8, 8)
        s32 = self.seed32(s8)
        s64 = self.seed64(s32)
        s128 = self.seed128(s64)
        feats, imgs = {}, {}
        for name, net in self.local.items():
            y0, x0, h, w = self.boxes[name]
            feats[name], imgs[name] = net(xin[:, :, y0:y0 + h, x0:x0 + w])
        local_feat, local_img = self._fuse(feats, x), self._fuse(imgs, x)
        d8 = self.dec8(torch.cat([s8, e4], 1))
        d16 = self.dec16(torch.cat([self.up16(d8), e3], 1))
        d32 = self.dec32(torch.cat([self.up32(d16), e2, s32, F.avg_pool2d(x2, 4)], 1))
        img32 = torch.sigmoid(self.out32(d32))
        up32 = F.interpolate(img32 * 2 - 1, scale_factor=2, mode="bilinear", align_corners=False)
        d64 = self.dec64(torch.cat([self.up64(d32), e1, s64, F.avg_pool2d(x2, 2), up32], 1))
        img64 = torch.sigmoid(self.out64(d64))
        up64 = F.interpolate(img64 * 2 - 1, scale_factor=2, mode="bilinear", align_corners=False)
        d128 = self.dec128(torch.cat([self.up128(d64), e0, s128, x2, up64, local_feat, local_img * 2 - 1], 1))
        return torch.sigmoid(self.out128(d128))


def build_baseline_tpgan(generator):
    """The baseline with ``generator``'s (a lightface ``TPGANGenerator``) shape, boxes and weights, on its
    device, eval mode. Unconditioned generators without a classifier only (what the benchmark times)."""
    if getattr(generator, "condition_dim", 0) or getattr(generator, "classifier", None) is not None:
        raise ValueError("the TP-GAN baseline covers unconditioned generators without a classifier")
    conv0 = generator.conv0[0][0]
    local = next(iter(generator.local.values()))
    ref = BaselineTPGAN(
        generator.boxes, in_channels=conv0.in_channels // 2, width=conv0.out_channels,
        local_width=local.enc0[0][0].out_channels, feature_dim=generator.feature_dim, noise_dim=generator.noise_dim,
    )
    ref.load_state_dict(generator.state_dict())
    return ref.to(next(generator.parameters()).device).eval()
