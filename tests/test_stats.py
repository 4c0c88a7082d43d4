"""Intervals you can trust: the paired speed-up's 95% interval covers the truth on a drifting
machine, is tighter than comparing unpaired times, the rounds' order is drawn from the seed,
the repeats stage stops for the right reason, `mnistbench diff` tells noise from a change,
and DVC's metrics file is a handful of numbers per backend.

Simulated machines, never timed tests: each round multiplies every backend by the same
drifting factor (the idle VM measured 1.5 to 2.8 s an epoch for one backend within minutes),
each run adds its own noise.
"""

from __future__ import annotations

import json
import random

import pytest

from mnistbench import config, diff, repeat, stats
from mnistbench.compare import summary as summary_mod

TRUE_RATIO = 2.0  # the baseline takes twice as long as the other backend
DRIFT = 0.30  # log-sd of the machine's speed from round to round (1.35x typical swing)
NOISE = 0.05  # log-sd of one run around the machine's speed of the moment


def _rounds(rng: random.Random, n: int, base_s: float = 10.0, ratio: float = TRUE_RATIO):
    """n rounds of (baseline s/epoch, other s/epoch) on a machine whose speed drifts."""
    out = []
    for _ in range(n):
        machine = rng.lognormvariate(0, DRIFT)
        base = base_s * machine * rng.lognormvariate(0, NOISE)
        other = base_s / ratio * machine * rng.lognormvariate(0, NOISE)
        out.append((base, other))
    return out


@pytest.mark.parametrize("n", [3, 5, 8])
def test_the_paired_interval_covers_the_true_ratio_on_a_drifting_machine(n):
    rng = random.Random(n)
    hits, paired_width, unpaired_width = 0, [], []
    experiments = 400
    for _ in range(experiments):
        rounds = _rounds(rng, n)
        base, other = [b for b, _ in rounds], [o for _, o in rounds]
        e = stats.paired_ratio(base, other)
        hits += e.low <= TRUE_RATIO <= e.high
        paired_width.append(e.precision)
        # the same numbers compared as medians of unpaired times: the drift stays in
        unpaired = stats.welch_ratio(other, base)  # base over other, unpaired
        unpaired_width.append(unpaired.precision)
    assert hits / experiments >= 0.90, f"coverage {hits / experiments:.1%} with {n} rounds"
    assert sum(paired_width) < 0.5 * sum(unpaired_width)  # pairing cancels the drift


def test_an_estimate_without_two_values_has_no_interval():
    e = stats.geometric([2.0])
    assert e.value == 2.0 and e.low is None and e.precision is None
    assert stats.paired_ratio([4.0, None], [2.0, 1.0]).n == 1  # a round without a pair: left out
    with pytest.raises(ValueError):
        stats.paired_ratio([None], [1.0])


def _cfg(tmp_path, **bench):
    params = tmp_path / "params.yaml"
    names = ["torch-dataloader", "torch-tfds", "jax-tfds", "jax-scan", "torch-tensor"]
    params.write_text(
        json.dumps({"bench": bench, "backends": {n: {"data": "data/raw"} for n in names}})
    )
    return config.load(params)


def test_the_round_order_comes_from_the_seed_and_differs_between_rounds(tmp_path):
    cfg = _cfg(tmp_path, seed=7)
    assert repeat.round_order(cfg, 1) == list(cfg.backends)  # round 1: the train@ stages
    orders = [repeat.round_order(cfg, r) for r in range(2, 8)]
    assert orders == [repeat.round_order(cfg, r) for r in range(2, 8)]  # reproducible
    assert len({tuple(o) for o in orders}) > 1  # drawn per round
    assert all(sorted(o) == sorted(cfg.backends) for o in orders)  # every backend, once
    other = _cfg(tmp_path, seed=8)
    assert [repeat.round_order(other, r) for r in range(2, 8)] != orders


def _times(rounds: list[tuple[float, float]]) -> list[dict]:
    return [{"torch-dataloader": b, "jax-scan": o} for b, o in rounds]


def test_the_stage_stops_at_the_precision_at_rounds_max_or_before_the_budget(tmp_path):
    steady = _times([(10.0, 5.0), (10.2, 5.08), (9.9, 4.96)])  # ratio ~2.0 within 1%
    cfg = _cfg(tmp_path, rounds_min=2, rounds_max=8, precision=0.05, budget_s=1000)
    assert repeat._stop(cfg, 1, steady[:1], 0, 0) is None  # one round: no interval yet
    stop = repeat._stop(cfg, 3, steady, 200, 100)
    assert stop["reason"] == "precision" and stop["precision"] < 0.05
    assert stop["says"].startswith("precision +-")

    noisy = _times([(10.0, 5.0), (10.0, 8.0), (10.0, 3.0)])
    assert repeat._stop(cfg, 3, noisy, 200, 100) is None  # not precise yet: another round
    stop = repeat._stop(cfg, 3, noisy, 950, 100)  # the next round would end past 1000 s
    assert stop["reason"] == "budget" and stop["worst"] == "jax-scan"
    capped = _cfg(tmp_path, rounds_min=2, rounds_max=3, precision=0.05, budget_s=1000)
    assert repeat._stop(capped, 3, noisy, 200, 100)["reason"] == "rounds_max"
    patient = _cfg(tmp_path, rounds_min=4, rounds_max=8, precision=0.05, budget_s=1000)
    assert repeat._stop(patient, 3, steady, 200, 100) is None  # precise, but rounds_min is 4


def test_a_disturbed_run_counts_for_nothing_in_the_precision():
    rounds = _times([(10.0, 5.0), (10.1, 5.05), (10.0, 5.0)])
    rounds[1]["jax-scan"] = None  # disturbed: no pair that round
    worst, precision = repeat.worst_precision(rounds)
    assert worst == "jax-scan" and precision == pytest.approx(0.0, abs=1e-9)


def _summary(rng: random.Random, n: int, factor: float = 1.0) -> dict:
    return {
        "backends": {
            "jax-scan": {
                "rounds_s": [0.6 * factor * rng.lognormvariate(0, 0.08) for _ in range(n)]
            },
            "torch-tensor": {"rounds_s": [1.5 * rng.lognormvariate(0, 0.08) for _ in range(n)]},
        }
    }


def test_diff_says_no_significant_difference_for_one_distribution_and_faster_for_20_percent():
    rng = random.Random(3)
    same = diff.compare_sides(_summary(rng, 6), _summary(rng, 6))
    assert [r.verdict for r in same] == ["no significant difference"] * 2
    faster = diff.compare_sides(_summary(rng, 6), _summary(rng, 6, factor=0.8))
    assert faster[0].verdict == "faster" and faster[0].change.value == pytest.approx(0.8, rel=0.1)
    assert faster[1].verdict == "no significant difference"  # torch-tensor did not change
    text = diff.render("main", "branch", faster)
    assert (
        text.splitlines()[-1]
        == "1 of 2 backends compared differ beyond the noise: jax-scan faster."
    )
    old = {"backends": {"jax-scan": {"epoch_time_s": 0.6}}}  # made before rounds were recorded
    rows = diff.compare_sides(old, _summary(rng, 3))
    assert rows[0].verdict == "no rounds recorded on one side"
    assert diff.render("old", "new", rows).splitlines()[-1].startswith("No backend has rounds")


def test_diff_reads_folders_and_says_which_side_it_cannot_read(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "summary.json").write_text(json.dumps(_summary(random.Random(1), 3)))
    assert diff.read_side(str(tmp_path / "a"))["backends"]["jax-scan"]["rounds_s"]
    (tmp_path / "b").mkdir()
    with pytest.raises(diff.DiffError, match="without summary.json"):
        diff.read_side(str(tmp_path / "b"))
    with pytest.raises(diff.DiffError, match="no-such-rev: neither a folder nor a git revision"):
        diff.read_side("no-such-rev", repo=tmp_path)


def test_dvc_metrics_hold_numbers_only_and_a_branch_diff_fits_a_screen():
    names = [
        "torch-dataloader",
        "torch-tfds",
        "jax-tfds",
        "jax-scan",
        "torch-tensor",
        "jax-grain",
        "torch-graph",
    ]
    row = {
        "epoch_time_s": 1.0,
        "epoch_time_lo_s": 0.9,
        "epoch_time_hi_s": 1.1,
        summary_mod.SPEEDUP_KEY: 2.0,
        "speedup_lo": 1.9,
        "speedup_hi": 2.1,
        "val_acc": 0.98,
        "runs": 5,  # not a headline number: stays out
    }
    settings = {"batch_size": 32, "epochs": 10}
    head = summary_mod.headline(
        {"rounds": 5, "settings": settings, "backends": {n: dict(row) for n in names}}
    )
    assert list(head) == names  # a file per backend
    flat = [(k, v) for n in names for k, v in head[n].items()]
    assert all(isinstance(v, int | float) and not isinstance(v, bool) for _, v in flat)
    assert all(head[n]["rounds"] == 5 and head[n]["batch_size"] == 32 for n in names)
    # `dvc metrics diff` of two runs with the same params: a row per number that differs
    # (batch size and epochs do not), and a header
    assert len([k for k, _ in flat if k not in settings]) + 1 <= 60
