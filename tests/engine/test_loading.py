"""Loading: tiny models in the published layout, the real models' code paths, clear errors."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from framepack_server.engine.loading import load_components, missing_repos
from framepack_server.engine.registry import MODELS, get_spec
from framepack_server.engine.tiny import ensure_tiny_model

CPU = torch.device("cpu")


def _real_layout_from_tiny(tiny_root: Path, dest: Path, model: str = "framepack") -> None:
    """Copy the tiny repos under the published repos' names, as `framepack download` lays them out."""
    tiny, real = get_spec("tiny" if model == "framepack" else "tiny-f1"), get_spec(model)
    ensure_tiny_model(tiny, tiny_root)
    for mine, theirs in zip(tiny.components, real.components, strict=True):
        src = tiny_root / mine.repo / mine.subfolder
        dst = dest / theirs.repo / theirs.subfolder
        shutil.copytree(src, dst, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".framepack-tiny.json"))


def test_tiny_model_is_saved_in_the_published_layout(settings):
    root = ensure_tiny_model(get_spec("tiny"), settings.cache_dir / "tiny-models")
    hunyuan = root / "framepack-tiny/tiny-HunyuanVideo"
    for sub in ("text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "vae", "scheduler"):
        assert (hunyuan / sub).is_dir(), sub
    assert (hunyuan / "model_index.json").exists()
    assert (hunyuan / "vae/diffusion_pytorch_model.safetensors").exists()
    assert (hunyuan / "text_encoder/model.safetensors").exists()
    assert (root / "framepack-tiny/tiny-flux_redux_bfl/image_encoder/model.safetensors").exists()
    assert (root / "framepack-tiny/tiny-flux_redux_bfl/feature_extractor/preprocessor_config.json").exists()
    assert (root / "framepack-tiny/tiny-transformer/config.json").exists()


def test_tiny_models_are_deterministic(tmp_path, settings):
    a = ensure_tiny_model(get_spec("tiny"), tmp_path / "a")
    ref = settings.cache_dir / "tiny-models"
    ensure_tiny_model(get_spec("tiny"), ref)
    for name in ("framepack-tiny/tiny-transformer/diffusion_pytorch_model.safetensors",
                 "framepack-tiny/tiny-HunyuanVideo/vae/diffusion_pytorch_model.safetensors"):  # fmt: skip
        assert (a / name).read_bytes() == (ref / name).read_bytes()


def test_tiny_model_loads_offline(settings, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    c = load_components(get_spec("tiny"), cache_dir=settings.cache_dir, device=CPU, download_ok=False)
    assert type(c.transformer).__name__ == "HunyuanVideoFramepackTransformer3DModel"
    assert type(c.vae).__name__ == "AutoencoderKLHunyuanVideo"
    assert c.transformer.config.in_channels == 16 and c.vae.config.latent_channels == 16
    assert c.tokenizer.padding_side == "right" and c.tokenizer_2.padding_side == "right"
    assert c.transformer.dtype == torch.float32  # fp32 on the CPU


def test_real_model_loads_from_a_model_dir(settings, tmp_path):
    """`--model-dir` with <owner>/<name> folders: the published repos' code path, tiny weights."""
    _real_layout_from_tiny(settings.cache_dir / "tiny-models", tmp_path)
    spec = get_spec("framepack")
    assert missing_repos(spec, tmp_path, settings.cache_dir) == []
    c = load_components(spec, model_dir=tmp_path, cache_dir=settings.cache_dir, device=CPU, download_ok=False)
    assert c.spec.name == "framepack" and c.transformer.config.num_layers == 1


HUB_SCRIPT = """
import sys, torch
from framepack_server.engine.loading import load_components
from framepack_server.engine.registry import get_spec
c = load_components(get_spec(sys.argv[1]), cache_dir=sys.argv[2], device=torch.device("cpu"), download_ok=False)
print("loaded", type(c.transformer).__name__, c.spec.name)
"""


def _fake_hub_cache(hf_home: Path, layout: Path) -> None:
    """The Hugging Face cache layout (models--owner--name/snapshots/<rev> + refs/main)."""
    revision = "0123456789abcdef0123456789abcdef01234567"
    for owner in layout.iterdir():
        for repo in owner.iterdir():
            base = hf_home / "hub" / f"models--{owner.name}--{repo.name}"
            shutil.copytree(repo, base / "snapshots" / revision)
            (base / "refs").mkdir(parents=True)
            (base / "refs" / "main").write_text(revision)


@pytest.mark.parametrize("model", ["framepack", "framepack-f1"])
def test_real_model_loads_from_the_hub_cache_under_hf_home(settings, tmp_path, model):
    _real_layout_from_tiny(settings.cache_dir / "tiny-models", tmp_path / "layout", model)
    _fake_hub_cache(tmp_path / "hf", tmp_path / "layout")
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run(
        [sys.executable, "-c", HUB_SCRIPT, model, str(settings.cache_dir)],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert f"loaded HunyuanVideoFramepackTransformer3DModel {model}" in out.stdout


def test_missing_model_offline_gives_one_clear_error(tmp_path):
    env = {**os.environ, "HF_HOME": str(tmp_path / "empty"), "HF_HUB_OFFLINE": "1"}
    image = tmp_path / "in.png"
    from PIL import Image

    Image.new("RGB", (64, 64), "red").save(image)
    out = subprocess.run(
        [sys.executable, "-m", "framepack_server.cli", "generate", "--model", "framepack", "--image", str(image),
         "--prompt", "x", "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "o.mp4")],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 3, out.stderr
    message = out.stderr.strip().splitlines()[-1]
    for repo in get_spec("framepack").repos:
        assert repo in message
    assert "framepack download framepack" in message
    assert "Traceback" not in out.stderr


def test_models_command_lists_every_model(settings, tmp_path):
    env = {**os.environ, "HF_HOME": str(tmp_path / "empty"), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "framepack_server.cli", "models", "--cache-dir", str(settings.cache_dir)],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    lines = {line.split()[0]: line for line in out.stdout.splitlines()}
    assert set(lines) == set(MODELS)
    assert "present" in lines["tiny"]
    assert "missing: hunyuanvideo-community/HunyuanVideo" in lines["framepack"]
