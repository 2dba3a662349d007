"""Section checkpoints: what a run needs to go on after a crash.

After every section the engine hands over the section's latents and the generator state. The
folder store writes each section's latents once (append-only, so a long video costs one small file
per section, not a growing rewrite) and then atomically replaces a small state file; a crash
between the two leaves the previous state, which is still consistent.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch
from safetensors.torch import load_file, save_file


@dataclass
class ResumeState:
    fingerprint: str  # the request and model it belongs to
    sections_done: int
    rng_state: torch.Tensor
    latents: list[torch.Tensor] = field(default_factory=list)  # per section, generation order


class CheckpointStore(Protocol):
    def load(self) -> ResumeState | None: ...

    def save_section(self, fingerprint: str, index: int, latents: torch.Tensor, rng: torch.Tensor) -> None: ...


def fingerprint(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]


class FolderCheckpoint:
    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)

    def _state_path(self) -> Path:
        return self.folder / "state.json"

    def load(self) -> ResumeState | None:
        path = self._state_path()
        if not path.exists():
            return None
        state = json.loads(path.read_text())
        done = state["sections_done"]
        latents = [load_file(self.folder / f"section-{k:04d}.safetensors")["latents"] for k in range(done)]
        rng = torch.tensor(state["rng_state"], dtype=torch.uint8)
        return ResumeState(state["fingerprint"], done, rng, latents)

    def save_section(self, fingerprint: str, index: int, latents: torch.Tensor, rng: torch.Tensor) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        save_file({"latents": latents.detach().cpu().contiguous()}, self.folder / f"section-{index:04d}.safetensors")
        state = {"fingerprint": fingerprint, "sections_done": index + 1, "rng_state": rng.tolist()}
        tmp = self._state_path().with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self._state_path())
