"""Finding and loading a model's components, from the hub cache or a local folder.

Real and tiny models go through the same path: every component is a folder in the published
layout, read with its class's ``from_pretrained``. Real weights come from the Hugging Face cache
(``HF_HOME`` is respected) or from ``--model-dir``, a folder with one sub-folder per repo
(``<model-dir>/<owner>/<name>``). Tiny models are built into such a folder under the cache.
"""

from __future__ import annotations

import importlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import ModelNotAvailableError
from .registry import Component, ModelSpec
from .tiny import ensure_tiny_model, repo_folder

log = logging.getLogger(__name__)


@dataclass
class Components:
    """The loaded parts of one model (diffusers' FramePack pipeline names them the same way)."""

    spec: ModelSpec
    transformer: Any
    vae: Any
    text_encoder: Any
    text_encoder_2: Any
    tokenizer: Any
    tokenizer_2: Any
    image_encoder: Any
    feature_extractor: Any

    def modules(self) -> dict[str, torch.nn.Module]:
        names = ("transformer", "vae", "text_encoder", "text_encoder_2", "image_encoder")
        return {name: getattr(self, name) for name in names}


def local_root(spec: ModelSpec, model_dir: Path | None, cache_dir: Path) -> Path | None:
    """The local folder holding the model's repos; None means the Hugging Face cache."""
    if model_dir is not None:
        return Path(model_dir)
    if spec.tiny_preset is not None:
        return Path(cache_dir) / "tiny-models"
    return None


def _patterns(spec: ModelSpec, repo: str) -> list[str]:
    return [f"{c.subfolder}/{p}" if c.subfolder else p for c in spec.components if c.repo == repo for p in c.files]


def _repo_path(spec: ModelSpec, repo: str, root: Path | None, download: bool) -> Path:
    if root is not None:
        folder = repo_folder(root, repo)
        if download and spec.tiny_preset is None:
            from huggingface_hub import snapshot_download

            snapshot_download(repo, allow_patterns=_patterns(spec, repo), local_dir=folder)
        return folder
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(repo, allow_patterns=_patterns(spec, repo), local_files_only=not download))


def _has_files(folder: Path, component: Component) -> bool:
    sub = folder / component.subfolder
    return sub.is_dir() and any(sub.glob("*.json"))


def missing_repos(spec: ModelSpec, model_dir: Path | None, cache_dir: Path) -> list[str]:
    """Repos of the model whose files are not on this machine."""
    root = local_root(spec, model_dir, cache_dir)
    missing = []
    for repo in spec.repos:
        try:
            folder = _repo_path(spec, repo, root, download=False)
        except Exception:  # huggingface_hub raises several kinds for a missing snapshot
            missing.append(repo)
            continue
        if not all(_has_files(folder, c) for c in spec.components if c.repo == repo):
            missing.append(repo)
    return missing


def download(spec: ModelSpec, model_dir: Path | None, cache_dir: Path) -> Path | None:
    """Fetch only the files the model needs (tiny models are built, not fetched)."""
    root = local_root(spec, model_dir, cache_dir)
    if spec.tiny_preset is not None:
        return ensure_tiny_model(spec, root)  # type: ignore[arg-type]
    for repo in spec.repos:
        log.info("downloading %s (%s)", repo, ", ".join(_patterns(spec, repo)))
        _repo_path(spec, repo, root, download=True)
    return root


def _not_available(spec: ModelSpec, missing: list[str], reason: str) -> ModelNotAvailableError:
    return ModelNotAvailableError(
        f"model {spec.name!r} is not on this machine ({reason}): missing {', '.join(missing)}. "
        f"Fetch it with `framepack download {spec.name}` (needs internet), "
        "or point --model-dir at a folder holding <owner>/<name> copies of these repos."
    )


def _resolve_folders(spec: ModelSpec, model_dir: Path | None, cache_dir: Path, download_ok: bool):
    root = local_root(spec, model_dir, cache_dir)
    if spec.tiny_preset is not None and model_dir is None:
        ensure_tiny_model(spec, root)  # type: ignore[arg-type]
    missing = missing_repos(spec, model_dir, cache_dir)
    if missing:
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
        if offline or not download_ok or spec.tiny_preset is not None:
            raise _not_available(spec, missing, "offline" if offline else "not downloaded")
        try:
            download(spec, model_dir, cache_dir)
        except Exception as exc:  # network errors come in many classes; the message says which
            raise _not_available(spec, missing, f"download failed: {exc}") from exc
    return {repo: _repo_path(spec, repo, root, download=False) for repo in spec.repos}


def component_dtype(component: Component, device: torch.device) -> torch.dtype | None:
    """The reference's dtypes on a GPU (bf16 transformer, fp16 encoders and VAE); fp32 on the CPU."""
    if not component.cuda_dtype:
        return None
    if device.type == "cpu":
        return torch.float32
    return getattr(torch, component.cuda_dtype)


def _load_component(component: Component, folder: Path, device: torch.device) -> Any:
    module = importlib.import_module(component.library)
    cls = getattr(module, component.class_name)
    kwargs: dict[str, Any] = {}
    if component.subfolder:
        kwargs["subfolder"] = component.subfolder
    dtype = component_dtype(component, device)
    if dtype is not None:
        kwargs["torch_dtype" if component.library == "diffusers" else "dtype"] = dtype
    obj = cls.from_pretrained(str(folder), **kwargs)
    if isinstance(obj, torch.nn.Module):
        obj.eval().requires_grad_(False)
    return obj


def load_components(
    spec: ModelSpec,
    *,
    model_dir: Path | None = None,
    cache_dir: Path,
    device: torch.device,
    download_ok: bool = True,
) -> Components:
    """Load every component on the CPU in its dtype; `memory.py` then places them on the device."""
    folders = _resolve_folders(spec, model_dir, cache_dir, download_ok)
    loaded = {c.name: _load_component(c, folders[c.repo], device) for c in spec.components}
    return Components(spec=spec, **loaded)
