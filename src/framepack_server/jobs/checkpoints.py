"""Section checkpoint stores: what a job needs to go on after a crash, on any machine.

The store writes each section's latents once (append-only, so a long video costs one small object
per section, not a growing rewrite) and then replaces a small state object; every write is atomic
in every storage backend, and a crash between the two leaves the previous state, which is still
whole. Kept in the deployment's storage (S3 in a scale-out set-up), a job whose worker died resumes
on another machine from its last finished section.
"""

from __future__ import annotations

import json
import os
from typing import Protocol

import torch
from safetensors.torch import load, save

from ..engine.checkpoint import ResumeState
from ..storage.local import LocalStorage


class Blobs(Protocol):
    """Where checkpoint files go: any storage backend (a local folder, an S3 bucket)."""

    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> None: ...

    def get_bytes(self, key: str) -> bytes: ...

    def delete(self, key: str) -> None: ...


class BlobCheckpoint:
    """Checkpoints as objects ``<prefix>section-NNNN.safetensors`` and ``<prefix>state.json`` in a
    storage backend. With the shared storage of a scale-out set-up (S3), a job whose worker died
    resumes on any other machine."""

    def __init__(self, blobs: Blobs, prefix: str = "") -> None:
        self.blobs, self.prefix = blobs, prefix

    def _section_key(self, index: int) -> str:
        return f"{self.prefix}section-{index:04d}.safetensors"

    def _read_state(self) -> dict | None:
        try:
            return json.loads(self.blobs.get_bytes(self.prefix + "state.json"))
        except FileNotFoundError:
            return None

    def load(self) -> ResumeState | None:
        state = self._read_state()
        if state is None:
            return None
        done = state["sections_done"]
        latents = [load(self.blobs.get_bytes(self._section_key(k)))["latents"] for k in range(done)]
        rng = torch.tensor(state["rng_state"], dtype=torch.uint8)
        return ResumeState(state["fingerprint"], done, rng, latents)

    def save_section(self, fingerprint: str, index: int, latents: torch.Tensor, rng: torch.Tensor) -> None:
        # The section first, then the state that points at it: a crash in between leaves the
        # previous state, which is still whole (each write is atomic in every backend).
        data = save({"latents": latents.detach().cpu().contiguous()})
        self.blobs.put_bytes(self._section_key(index), data, "application/octet-stream")
        state = {"fingerprint": fingerprint, "sections_done": index + 1, "rng_state": rng.tolist()}
        self.blobs.put_bytes(self.prefix + "state.json", json.dumps(state).encode(), "application/json")

    def clear(self) -> None:
        """Delete the checkpoint (the state first, so a half-deleted one is never resumed from)."""
        state = self._read_state()
        self.blobs.delete(self.prefix + "state.json")
        for k in range(state["sections_done"] if state else 0):
            self.blobs.delete(self._section_key(k))


class FolderCheckpoint(BlobCheckpoint):
    """Checkpoints in a local folder (``framepack generate --checkpoint-dir``)."""

    def __init__(self, folder: str | os.PathLike) -> None:
        super().__init__(LocalStorage(folder))
