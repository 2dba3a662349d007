"""Errors that reach a user: each names the request field it concerns."""

from __future__ import annotations


class InputError(ValueError):
    """Bad user input. ``field`` is the request field (``image``, ``num_frames`` ...)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class ModelNotAvailableError(RuntimeError):
    """The weights of a model are not on this machine and cannot be fetched."""


class GenerationCancelled(RuntimeError):
    """The cancel flag was raised; the run stopped at a sampling step."""


class GenerationPaused(GenerationCancelled):
    """The run stopped on request after saving a section checkpoint (a worker shutting down); it
    resumes from that checkpoint, on this machine or another."""
