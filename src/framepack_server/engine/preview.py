"""Cheap previews: a linear map from latent channels to RGB instead of a VAE decode.

The reference uses fixed latent-RGB factors published for HunyuanVideo's VAE. We fit the map from
the loaded VAE itself (least squares on a few encoded colour fields), so it holds for any VAE,
including the tiny test models, and costs one small encode at load time.
"""

from __future__ import annotations

import numpy as np
import torch

from .conditioning import device_of


@torch.no_grad()
def fit_latent_rgb(vae, samples: int = 24, size: int = 64, seed: int = 0) -> torch.Tensor:
    """A (C + 1, 3) matrix W with rgb ~= [latent, 1] @ W (rgb in [-1, 1])."""
    gen = torch.Generator().manual_seed(seed)
    # Smooth random colour fields: a colour per 16x16 block, upsampled.
    blocks = torch.rand(samples, 3, size // 16, size // 16, generator=gen) * 2 - 1
    pixels = torch.nn.functional.interpolate(blocks, size=(size, size), mode="bilinear", align_corners=False)
    pixels = pixels[:, :, None].to(device_of(vae), vae.dtype)
    latents = vae.encode(pixels).latent_dist.mode().float().cpu()  # (N, C, 1, h, w)
    factor = size // latents.shape[-1]
    target = torch.nn.functional.avg_pool2d(pixels[:, :, 0].float().cpu(), factor)  # (N, 3, h, w)
    x = latents[:, :, 0].permute(0, 2, 3, 1).reshape(-1, latents.shape[1])
    x = torch.cat([x, torch.ones(len(x), 1)], dim=1)
    y = target.permute(0, 2, 3, 1).reshape(-1, 3)
    return torch.linalg.lstsq(x.double(), y.double()).solution.float()


def latent_preview(latents: torch.Tensor, latent_rgb: torch.Tensor, scaling_factor: float) -> np.ndarray:
    """(1, C, T, h, w) latents of a section -> (h, T*w, 3) uint8 strip of its frames."""
    x = (latents[0].float().cpu() / scaling_factor).permute(1, 2, 3, 0)  # (T, h, w, C)
    rgb = torch.cat([x, torch.ones(*x.shape[:-1], 1)], dim=-1) @ latent_rgb
    strip = rgb.clamp(-1, 1).add(1).mul(127.5).to(torch.uint8)  # (T, h, w, 3)
    return strip.permute(1, 0, 2, 3).reshape(strip.shape[1], -1, 3).numpy()
