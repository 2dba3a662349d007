"""Progress as people read it: one line for logs, a bar for the terminal."""

from __future__ import annotations

import logging
import sys

from tqdm import tqdm

from .engine.generate import Progress

log = logging.getLogger("framepack_server.progress")


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def describe(p: Progress) -> str:
    if p.phase == "sampling":
        return (
            f"section {p.section}/{p.sections} step {p.step}/{p.steps} "
            f"elapsed {format_seconds(p.elapsed)} ETA {format_seconds(p.eta_seconds)}"
        )
    if p.phase == "decoding":
        return f"decoding window {p.step}/{p.steps} elapsed {format_seconds(p.elapsed)}"
    return f"{p.phase} elapsed {format_seconds(p.elapsed)}"


class ProgressBar:
    """A terminal bar over all sampling steps of a job; one log line per finished section."""

    def __init__(self, total_steps: int) -> None:
        self.bar = tqdm(total=total_steps, unit="step", file=sys.stderr, dynamic_ncols=True, leave=True)
        self._section = 0

    def update(self, p: Progress) -> None:
        if p.phase == "sampling":
            self.bar.n = (p.section - 1) * p.steps + p.step
            self.bar.set_description(f"section {p.section}/{p.sections}", refresh=False)
            self.bar.set_postfix_str(f"step {p.step}/{p.steps} ETA {format_seconds(p.eta_seconds)}")
            if p.step == p.steps:
                log.info(describe(p))
        elif p.phase == "decoding":
            self.bar.set_description("decoding", refresh=False)
            self.bar.set_postfix_str(f"window {p.step}/{p.steps}")
        else:
            self.bar.set_description(p.phase)

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.close()
