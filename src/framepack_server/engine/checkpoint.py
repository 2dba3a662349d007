"""Section checkpoints: what a run needs to go on after a crash.

After every section the engine hands over the section's latents and the generator state to a
`CheckpointStore`, and on start asks it for a state to resume from. The stores themselves (a local
folder, the deployment's storage) live in `jobs.checkpoints`: the engine knows no storage.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Protocol

import torch


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
