"""Logging set-up shared by the command line and the server."""

from __future__ import annotations

import logging
import warnings


def quiet_libraries() -> None:
    """Keep the libraries' own progress bars and chatter out of our output."""
    try:
        import diffusers
        import transformers
    except ImportError:  # pragma: no cover - both are dependencies
        return
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    diffusers.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    # transformers falls back to a PIL image processor when torchvision is missing; that is fine.
    warnings.filterwarnings("ignore", message=".*requires torchvision.*")
    for noisy in ("httpx", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
