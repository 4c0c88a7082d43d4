"""Stage `repeats`: every timed training stage again, each in a fresh process, interleaved.

One run of a backend shows its spread across epochs, not across runs: eager PyTorch with two
threads on a 2-vCPU VM settles into a fast or a slow mode for a whole run (1.3 or 2.4 s an
epoch), and a noisy spell of the machine can slow one stage of the pipeline only. So params'
bench.repeats - 1 more rounds are run after the train@<backend> stages, each round every
backend in params' order (a slow spell of the machine then hits them all, not one), each a
fresh `mnistbench train` process, into <root>/repeats/<round>/train/<backend>/ (each round a
metrics root of its own, mnistbench.layout; round 2 onwards: the train@ stage's own result is
round 1). compare reads them and shows each backend's spread across runs beside its spread
across epochs, and calls a backend whose runs disagree unstable.

The rounds are written to a staging folder and swapped in whole at the end: an interrupted
or failed stage leaves the previous repeats as they were.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

from mnistbench import layout, outputs
from mnistbench.config import Config
from mnistbench.errors import UserError

log = logging.getLogger(__name__)
ROUNDS_FILE = "rounds.json"  # in <root>/repeats/: the rounds and backends of the last run


class RepeatError(UserError, RuntimeError):
    """A repeat's training process failed; the message names the backend and the round."""


def run(cfg: Config, params: str | Path, out_root: str | Path = layout.METRICS_ROOT) -> Path:
    """Rounds 2..bench.repeats of every backend into <out_root>/repeats/; returns that folder."""
    rounds = list(range(2, cfg.bench.repeats + 1))
    if rounds and not cfg.backends:
        raise RepeatError("params: backends lists no backend: nothing to repeat")
    final = layout.repeats_root(out_root)
    with outputs.replace_folder(final) as staging:
        for round_ in rounds:
            for name in cfg.backends:
                log.info("repeat %d/%d: %s", round_, cfg.bench.repeats, name)
                _train(name, params, staging / str(round_), round_)  # its train/<name>/
        # what ran, also when nothing did (bench.repeats 1): git keeps no empty folder, and
        # compare depends on this one
        listing = {"rounds": rounds, "backends": list(cfg.backends)}
        (staging / ROUNDS_FILE).write_text(json.dumps(listing, indent=2) + "\n")
    return final


def _train(name: str, params: str | Path, out: Path, round_: int) -> None:
    """`mnistbench train` in a fresh process: nothing of the last run (threads, JIT caches,
    allocator state) carries over, as between the train@ stages."""
    command = [sys.executable, "-m", "mnistbench", "train", name, "--params", str(params)]
    done = subprocess.run([*command, "--out", str(out)], check=False)
    if done.returncode != 0:
        raise RepeatError(
            f"repeat {round_} of {name} failed (exit {done.returncode}, its log above); "
            "the previous repeats are as they were"
        )
