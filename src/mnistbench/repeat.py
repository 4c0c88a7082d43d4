"""Stage `repeats`: randomized, interleaved rounds of every backend, as many as the precision
needs.

The idle VM drifts by itself: the same backend timed minutes apart differs by up to 2x, and
so does a ratio of two medians taken at different moments. What survives is a ratio measured
within one round, and an interval over many rounds (mnistbench.stats). So:

- A round runs every backend once, each a fresh `mnistbench train` process (nothing of the last
  run carries over: threads, JIT caches, allocator state), in an order drawn at random for that
  round from bench.seed (train.seed when null) and the round's number: no backend always runs
  first, or always after the slowest one.
- The train@<backend> stages are round 1, in DVC's order (params' order, the same every run:
  the one round whose order is not drawn). Their records sit in <root>/train/; rounds 2.. go to
  <root>/repeats/<round>/train/<backend>/, each a metrics root of its own (mnistbench.layout).
- After each round from bench.rounds_min on, the stage stops once every speed-up over the
  baseline (every backend's s/epoch when the baseline is not run) has a 95% interval within
  +-bench.precision; else it goes on until bench.rounds_max, and starts no round it expects to
  end past bench.budget_s (the mean round so far). rounds.json says which rounds ran, in which
  order, why it stopped and the precision reached; compare reports it.
- A disturbed run (others or the hypervisor took CPU time over the limits) counts for nothing:
  its round has no number for that backend, and its ratios are left out of the intervals.

The rounds are written to a staging folder and swapped in whole at the end: an interrupted
or failed stage leaves the previous repeats as they were.
"""

from __future__ import annotations

import json
import logging
import random
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from mnistbench import layout, outputs, records, stats
from mnistbench.config import Config
from mnistbench.errors import UserError
from mnistbench.metrics import BASELINE

log = logging.getLogger(__name__)
ROUNDS_FILE = layout.ROUNDS_FILE


class RepeatError(UserError, RuntimeError):
    """A repeat's training process failed; the message names the backend and the round."""


def round_order(cfg: Config, round_: int) -> list[str]:
    """The backends in the order round `round_` runs them: params' order for round 1 (the
    train@ stages), a shuffle drawn from the seed and the round's number for the others."""
    names = list(cfg.backends)
    if round_ > 1:
        seed = cfg.bench.seed if cfg.bench.seed is not None else cfg.train.seed
        random.Random(f"{seed}/{round_}").shuffle(names)
    return names


def run(cfg: Config, params: str | Path, out_root: str | Path = layout.METRICS_ROOT) -> Path:
    """Rounds 2.. into <out_root>/repeats/ until the precision or a limit; returns the folder."""
    if not cfg.backends:
        raise RepeatError("params: backends lists no backend: nothing to repeat")
    final = layout.repeats_root(out_root)
    started, clock = _now(), time.monotonic()
    first = {name: _time(Path(out_root), name) for name in cfg.backends}  # round 1, if any
    rounds = [{"round": 1, "order": round_order(cfg, 1), "s": None}]  # train@, timed by DVC
    with outputs.replace_folder(final) as staging:
        stop = _stop(cfg, 1, [first], 0.0, 0.0)
        times = [first]
        while stop is None:
            round_ = len(rounds) + 1
            begun, order = time.monotonic(), round_order(cfg, round_)
            for i, name in enumerate(order, start=1):
                log.info(
                    "round %d/%d, %d/%d: %s",
                    round_,
                    cfg.bench.rounds_max,
                    i,
                    len(cfg.backends),
                    name,
                )
                _train(name, params, staging / str(round_), round_)
            times.append({name: _time(staging / str(round_), name) for name in cfg.backends})
            rounds.append({"round": round_, "order": order, "s": time.monotonic() - begun})
            stop = _stop(cfg, round_, times, time.monotonic() - clock, _mean_round(rounds))
            log.info("round %d done: %s", round_, stop["says"] if stop else _progress(cfg, times))
        listing = {
            "seed": cfg.bench.seed if cfg.bench.seed is not None else cfg.train.seed,
            "backends": list(cfg.backends),
            "rounds": rounds,
            "stop": stop,
            "started": started,
            "finished": _now(),
        }
        (staging / ROUNDS_FILE).write_text(json.dumps(listing, indent=2) + "\n")
    return final


def _stop(
    cfg: Config, round_: int, times: list[dict], elapsed: float, mean_round: float
) -> dict | None:
    """Why to stop after `round_` rounds, or None to run another: precision reached (from
    bench.rounds_min on), bench.rounds_max reached, or the next round expected past the budget."""
    worst, precision = worst_precision(times)
    reached = precision is not None and precision <= cfg.bench.precision
    if round_ >= cfg.bench.rounds_min and reached:
        reason = "precision"
    elif round_ >= cfg.bench.rounds_max:
        reason = "rounds_max"
    elif round_ > 1 and elapsed + mean_round > cfg.bench.budget_s:
        reason = "budget"
    else:
        return None
    shown = "no interval yet" if precision is None else f"+-{precision:.1%} ({worst})"
    says = {
        "precision": f"precision {shown} after {round_} rounds",
        "rounds_max": f"stopped at bench.rounds_max, {round_} rounds: {shown}",
        "budget": f"stopped by bench.budget_s ({cfg.bench.budget_s:g} s) after {round_} rounds: {shown}",
    }[reason]
    return {
        "reason": reason,
        "rounds": round_,
        "precision": precision,
        "worst": worst,
        "says": says,
    }


def worst_precision(times: list[dict[str, float | None]]) -> tuple[str | None, float | None]:
    """The widest interval among the speed-ups over the baseline (among the backends' s/epoch
    when the baseline did not run): (its name, its relative half-width), None without one."""
    names = list(times[0])
    per = {n: [t[n] for t in times] for n in names}
    if BASELINE in per:
        estimates = {
            n: _try(stats.paired_ratio, per[BASELINE], per[n]) for n in names if n != BASELINE
        }
    else:
        estimates = {n: _try(stats.geometric, [v for v in per[n] if v]) for n in names}
    widths = {n: e.precision if e else None for n, e in estimates.items()}
    if not widths or any(w is None for w in widths.values()):
        return (None, None)
    worst = max(widths, key=widths.get)
    return worst, widths[worst]


def _try(estimator, *args) -> stats.Estimate | None:
    try:
        return estimator(*args)
    except ValueError:  # no round with clean runs of both
        return None


def _progress(cfg: Config, times: list[dict]) -> str:
    worst, precision = worst_precision(times)
    if precision is None:
        return f"no interval yet; target +-{cfg.bench.precision:.0%}"
    return f"precision +-{precision:.1%} ({worst}); target +-{cfg.bench.precision:.0%}"


def _time(root: Path, name: str) -> float | None:
    """A run's steady s/epoch, None when it is missing or was disturbed (it counts for nothing)."""
    try:
        record = records.read_record(root, name)
    except UserError:
        return None
    value = record.get("epoch_time_median_s")
    if record.get("disturbed") or not isinstance(value, int | float) or value <= 0:
        return None
    return float(value)


def _mean_round(rounds: list[dict]) -> float:
    timed = [r["s"] for r in rounds if r["s"] is not None]
    return sum(timed) / len(timed) if timed else 0.0


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _train(name: str, params: str | Path, out: Path, round_: int) -> None:
    """`mnistbench train` in a fresh process: nothing of the last run (threads, JIT caches,
    allocator state) carries over, as between the train@ stages."""
    command = [sys.executable, "-m", "mnistbench", "train", name, "--params", str(params)]
    done = subprocess.run([*command, "--out", str(out)], check=False)
    if done.returncode != 0:
        raise RepeatError(
            f"round {round_} of {name} failed (exit {done.returncode}, its log above); "
            "the previous repeats are as they were"
        )
