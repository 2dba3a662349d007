"""Random-weight FramePack models with tiny configs, for tests and offline use.

The published weights (over 30 GB) cannot be fetched on machines without internet. These models use
the same classes as the real ones with tiny configs, are built deterministically (same weights on
every machine), and are saved in the published repos' folder layout so that `loading.py` reads them
exactly as it reads the real repos. Like the real models they have 16 latent channels and
right-padding tokenizers; the tokenizers are built offline from an in-memory character vocabulary.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from .registry import Component, ModelSpec

log = logging.getLogger(__name__)

BUILD_VERSION = 2  # bump when a config below changes, so old folders are rebuilt

PRESETS: dict[str, dict] = {
    # The VAE and encoders are the smallest that work; "small" makes the transformer dominate.
    "tiny": {"heads": 2, "head_dim": 10, "rope": (2, 4, 4), "layers": 1, "single_layers": 1},
    "small": {"heads": 6, "head_dim": 128, "rope": (16, 56, 56), "layers": 2, "single_layers": 8},
}
TEXT_DIM, POOLED_DIM, IMAGE_DIM = 16, 8, 32
SPECIAL_TOKENS = ["<pad>", "<unk>", "<|begin_of_text|>", "<|end_of_text|>"]
HEADER_TOKENS = ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]


def _vocabulary() -> list[str]:
    return [chr(i) for i in range(33, 127)] + ["\n", "\u2581"]  # printable ASCII, newline, metaspace


def _llama_tokenizer():
    from transformers import LlamaTokenizer

    tokens = SPECIAL_TOKENS + HEADER_TOKENS + _vocabulary()
    tok = LlamaTokenizer(
        vocab={t: i for i, t in enumerate(tokens)},
        merges=[],
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<|begin_of_text|>",
        eos_token="<|end_of_text|>",
        padding_side="right",
    )
    tok.add_special_tokens({"additional_special_tokens": HEADER_TOKENS})
    return tok


def _clip_tokenizer():
    from transformers import CLIPTokenizer

    chars = _vocabulary()[:-2]
    tokens = ["<|startoftext|>", "<|endoftext|>"] + chars + [c + "</w>" for c in chars]
    return CLIPTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=[], padding_side="right")


def _build(component: Component, preset: dict, seed: int):
    """Build one component with random weights drawn from a fixed seed."""
    from diffusers import AutoencoderKLHunyuanVideo, FlowMatchEulerDiscreteScheduler
    from diffusers import HunyuanVideoFramepackTransformer3DModel as Transformer
    from transformers import (
        CLIPTextConfig,
        CLIPTextModel,
        LlamaConfig,
        LlamaModel,
        SiglipImageProcessor,
        SiglipVisionConfig,
        SiglipVisionModel,
    )

    torch.manual_seed(seed)
    name = component.name
    if name == "transformer":
        return Transformer(
            in_channels=16,
            out_channels=16,
            num_attention_heads=preset["heads"],
            attention_head_dim=preset["head_dim"],
            num_layers=preset["layers"],
            num_single_layers=preset["single_layers"],
            num_refiner_layers=1,
            patch_size=2,
            patch_size_t=1,
            guidance_embeds=True,
            text_embed_dim=TEXT_DIM,
            pooled_projection_dim=POOLED_DIM,
            rope_axes_dim=preset["rope"],
            has_image_proj=True,
            image_proj_dim=IMAGE_DIM,
            has_clean_x_embedder=True,
        )
    if name == "vae":
        return AutoencoderKLHunyuanVideo(
            latent_channels=16,
            block_out_channels=(4, 4, 4, 4),  # 4x cheaper to decode than (8, 8, 8, 8) on a CPU
            layers_per_block=1,
            norm_num_groups=2,
            spatial_compression_ratio=8,
            temporal_compression_ratio=4,
        )
    if name == "text_encoder":
        cfg = LlamaConfig(
            hidden_size=TEXT_DIM, intermediate_size=37, num_attention_heads=4, num_key_value_heads=4,
            num_hidden_layers=3, vocab_size=128, bos_token_id=2, eos_token_id=3, pad_token_id=0,
        )  # fmt: skip
        return LlamaModel(cfg)
    if name == "text_encoder_2":
        cfg = CLIPTextConfig(
            hidden_size=POOLED_DIM, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
            vocab_size=256, projection_dim=POOLED_DIM, max_position_embeddings=77, eos_token_id=1,
            bos_token_id=0, pad_token_id=1,
        )  # fmt: skip
        return CLIPTextModel(cfg)
    if name == "image_encoder":
        cfg = SiglipVisionConfig(
            hidden_size=IMAGE_DIM, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
            image_size=32, patch_size=8,
        )  # fmt: skip
        return SiglipVisionModel(cfg)
    if name == "feature_extractor":
        return SiglipImageProcessor(size={"height": 32, "width": 32})
    if name == "tokenizer":
        return _llama_tokenizer()
    if name == "tokenizer_2":
        return _clip_tokenizer()
    if name == "scheduler":
        return FlowMatchEulerDiscreteScheduler(shift=7.0)
    raise ValueError(f"no tiny builder for component {name!r}")


def repo_folder(root: Path, repo: str) -> Path:
    """Where a repo lives inside a local model folder: <root>/<owner>/<name>."""
    return root / repo


def ensure_tiny_model(spec: ModelSpec, root: Path) -> Path:
    """Build the tiny model's repos under ``root`` unless they are already there; returns ``root``."""
    assert spec.tiny_preset is not None, f"{spec.name} is not a tiny model"
    preset = PRESETS[spec.tiny_preset]
    for index, component in enumerate(spec.components):
        folder = repo_folder(root, component.repo) / component.subfolder
        marker = folder / ".framepack-tiny.json"
        # The stamp holds the preset's config: changing a preset rebuilds the folders that use it.
        stamp = json.dumps({"version": BUILD_VERSION, "component": component.name, "preset": preset})
        if marker.exists() and marker.read_text() == stamp:
            continue
        log.info("building tiny component %s/%s", component.repo, component.subfolder or ".")
        # The seed depends on the component and the transformer's repo, not on the process.
        seed = 1000 * (index + 1) + sum(map(ord, component.repo))
        folder.mkdir(parents=True, exist_ok=True)
        _build(component, preset, seed).save_pretrained(folder)
        marker.write_text(stamp)
    _write_model_index(root, spec)
    return root


def _write_model_index(root: Path, spec: ModelSpec) -> None:
    """The HunyuanVideo repo carries a model_index.json and a scheduler folder; so do ours."""
    hunyuan = repo_folder(root, spec.component("vae").repo)
    scheduler = hunyuan / "scheduler"
    if not (scheduler / "scheduler_config.json").exists():
        _build(Component("scheduler", "", "", "", "", "", ()), {}, 0).save_pretrained(scheduler)
    index = {"_class_name": "HunyuanVideoPipeline", "_diffusers_version": "0.42.1"}
    for c in spec.components:
        if c.repo == spec.component("vae").repo:
            index[c.subfolder] = [c.library, c.class_name.replace("AutoTokenizer", "LlamaTokenizerFast")]
    index["scheduler"] = ["diffusers", "FlowMatchEulerDiscreteScheduler"]
    (hunyuan / "model_index.json").write_text(json.dumps(index, indent=2))
