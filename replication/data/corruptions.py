"""CIFAR-10-C-lite: five corruption families at five severities, generated locally and seeded.

Severity constants are CIFAR-scale choices from docs/hyper-hypo.md (pixel values in [0, 1]). Results on these
images are labelled "lite": they are not comparable with published CIFAR-10-C numbers.
"""
from __future__ import annotations

import io
import math

import numpy as np
import torch
import torch.nn.functional as F

SEVERITIES = {  # severity 1..5 (docs/hyper-hypo.md)
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),  # sigma
    "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1.0),  # sigma in pixels
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),  # factor toward the image mean
    "jpeg": (80, 65, 58, 50, 40),  # quality
    "pixelate": (0.95, 0.90, 0.85, 0.75, 0.65),  # resolution factor
}
FAMILIES = tuple(SEVERITIES)


def _gaussian_noise(x, sigma, g):
    return x + sigma * torch.randn(x.shape, generator=g)


def _gaussian_blur(x, sigma, g):
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-t ** 2 / (2 * sigma ** 2))
    k = (k / k.sum()).to(x)
    c = x.shape[1]
    x = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)  # separable: rows, then columns
    return F.conv2d(x, k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def _contrast(x, factor, g):
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * factor + mean


def _jpeg(x, quality, g):
    from PIL import Image

    out = []
    for img in (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy():
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=int(quality))
        buf.seek(0)
        out.append(torch.from_numpy(np.array(Image.open(buf))).permute(2, 0, 1))
    return torch.stack(out).float() / 255


def _pixelate(x, factor, g):
    size = x.shape[-1]
    small = max(1, int(size * factor))
    return F.interpolate(F.interpolate(x, size=small, mode="area"), size=size, mode="nearest")


_FUNCS = {"gaussian_noise": _gaussian_noise, "gaussian_blur": _gaussian_blur, "contrast": _contrast,
          "jpeg": _jpeg, "pixelate": _pixelate}


def corrupt(images_uint8: torch.Tensor, family: str, severity: int, seed: int = 0) -> torch.Tensor:
    """Corrupted copies of a uint8 batch as float images in [0, 1] (deterministic for a seed)."""
    if family not in _FUNCS:
        raise ValueError(f"unknown corruption {family!r}; valid: {', '.join(FAMILIES)}")
    if not 1 <= severity <= 5:
        raise ValueError("severity must be 1..5")
    g = torch.Generator().manual_seed(seed)
    x = images_uint8.float() / 255
    return _FUNCS[family](x, SEVERITIES[family][severity - 1], g).clamp(0, 1)


def to_uint8(images01: torch.Tensor) -> torch.Tensor:
    """Quantise back to uint8, as stored corrupted data sets are, so the normal pipeline reads them."""
    return (images01 * 255).round().to(torch.uint8)
