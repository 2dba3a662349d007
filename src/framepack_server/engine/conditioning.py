"""Conditioning, computed once per job: text (Llama + CLIP), the images (VAE latents, SigLIP).

Text follows the reference: the HunyuanVideo prompt template, the Llama hidden state three layers
from the top, template prefix and padding cropped away; CLIP's pooled output. Images are resized
and centre-cropped to the video size, VAE-encoded (sampled from the latent distribution with the
job's generator, as diffusers' pipeline does, so a seed fixes everything) and embedded by SigLIP.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

# The prompt template of HunyuanVideo (diffusers.pipelines.hunyuan_video DEFAULT_PROMPT_TEMPLATE).
from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video import DEFAULT_PROMPT_TEMPLATE
from PIL import Image

PROMPT_TEMPLATE: str = DEFAULT_PROMPT_TEMPLATE["template"]
MAX_PROMPT_TOKENS = 256  # Llama tokens of the user prompt after the template prefix
CLIP_TOKENS = 77
LLAMA_SKIP_LAYERS = 2  # use hidden_states[-3]


@dataclass
class TextConditioning:
    embeds: torch.Tensor  # (1, L, D): real tokens only
    mask: torch.Tensor  # (1, L) all ones
    pooled: torch.Tensor  # (1, P)

    def to(self, device: torch.device, dtype: torch.dtype) -> TextConditioning:
        return TextConditioning(
            self.embeds.to(device, dtype), self.mask.to(device, dtype), self.pooled.to(device, dtype)
        )


def template_crop_start(tokenizer) -> int:
    """Tokens of the template before the prompt (95 for Llama-3's tokenizer), derived from the
    tokenizer so that any tokenizer crops exactly the template away."""
    prefix = PROMPT_TEMPLATE.split("{}")[0]
    return len(tokenizer(prefix)["input_ids"])


def device_of(module: torch.nn.Module) -> torch.device:
    """Where a module computes (offload hooks may keep its weights elsewhere)."""
    return getattr(module, "_framepack_execution_device", None) or next(module.parameters()).device


@torch.no_grad()
def encode_text(components, prompt: str) -> TextConditioning:
    tokenizer, llama = components.tokenizer, components.text_encoder
    crop = template_crop_start(tokenizer)
    tokens = tokenizer(
        PROMPT_TEMPLATE.format(prompt),
        max_length=MAX_PROMPT_TOKENS + crop,
        padding="max_length",
        truncation=True,
        return_tensors="pt",
    )
    device = device_of(llama)
    ids, mask = tokens.input_ids.to(device), tokens.attention_mask.to(device)
    hidden = llama(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    length = int(mask.sum())
    embeds = hidden[-(LLAMA_SKIP_LAYERS + 1)][:, crop:length]
    clip_ids = components.tokenizer_2(
        prompt, max_length=CLIP_TOKENS, padding="max_length", truncation=True, return_tensors="pt"
    ).input_ids
    clip = components.text_encoder_2
    pooled = clip(clip_ids.to(device_of(clip)), output_hidden_states=False).pooler_output
    ones = torch.ones(embeds.shape[:2], dtype=torch.int64, device=embeds.device)
    return TextConditioning(embeds=embeds, mask=ones, pooled=pooled)


def resize_and_center_crop(image: Image.Image, width: int, height: int) -> np.ndarray:
    """Scale to cover width x height (Lanczos), then crop the centre: (H, W, 3) uint8."""
    scale = max(width / image.width, height / image.height)
    resized = image.resize((round(image.width * scale), round(image.height * scale)), Image.LANCZOS)
    left, top = (resized.width - width) / 2, (resized.height - height) / 2
    return np.array(resized.crop((left, top, left + width, top + height)).convert("RGB"))


def to_pixels(array: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 3, 1, H, W) float in [-1, 1]."""
    return (torch.from_numpy(array).float() / 127.5 - 1).permute(2, 0, 1)[None, :, None]


@torch.no_grad()
def encode_latent(vae, pixels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """VAE latent of one frame (1, C, 1, H/8, W/8), sampled with the job's generator, in fp32."""
    device = device_of(vae)
    posterior = vae.encode(pixels.to(device, vae.dtype)).latent_dist
    return (posterior.sample(generator=generator) * vae.config.scaling_factor).float()


@torch.no_grad()
def encode_image_embeds(components, pixels: torch.Tensor) -> torch.Tensor:
    """SigLIP last hidden state of one image given as (1, 3, 1, H, W) in [-1, 1]."""
    encoder = components.image_encoder
    image = (pixels[:, :, 0] + 1) / 2
    inputs = components.feature_extractor(images=image, return_tensors="pt", do_rescale=False)
    return encoder(pixel_values=inputs.pixel_values.to(device_of(encoder), encoder.dtype)).last_hidden_state


@dataclass
class Conditioning:
    positive: TextConditioning
    negative: TextConditioning | None  # set only when true CFG is on
    image_embeds: torch.Tensor
    start_latent: torch.Tensor
    end_latent: torch.Tensor | None
