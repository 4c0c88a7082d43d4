"""compare, step 2: the summary (summary.json's numbers) from the validated runs.

Per backend: steady and first epoch, train/eval split, speed-ups against the baseline and
against the article's row, efficiency against the roofline when given; plus the article's
rows and the environment, with every machine key that differs between backends.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from typing import Any

from mnistbench import metrics, mnist, stats
from mnistbench.compare.load import BackendRun

BASELINE = metrics.BASELINE
SPEEDUP_KEY = f"speedup_vs_{BASELINE}"
SETTINGS = ("epochs", "batch_size", "train_examples", "test_examples")


@dataclass(frozen=True)
class ArticleRow:
    """One row of the article's table (Google Colab CPU, 10 epochs, batch 32, full MNIST)."""

    implementation: str
    loader: str
    epoch_s: tuple[float, float]  # steady s/epoch, lowest and highest of epochs 2..10
    first_epoch_s: float | None  # epoch 1 when the article gives it apart, else None

    @property
    def mid_s(self) -> float:
        return sum(self.epoch_s) / 2


def full_size(settings: dict) -> bool:
    """A run on all of MNIST (60,000 / 10,000 images): only then do its seconds per epoch
    compare with the article's, or with a full-size reference machine's (a 2,000-image
    subset's epoch is 30 times shorter). A summary without settings counts as full, as every
    reference made before they were recorded was."""
    if not isinstance(settings, dict) or not settings:
        return True
    full = {"train_examples": mnist.TRAIN_EXAMPLES, "test_examples": mnist.TEST_EXAMPLES}
    return all(settings.get(k) == v for k, v in full.items())


ARTICLE_SETUP = "Google Colab CPU, 10 epochs, batch 32, full MNIST, val_acc 0.98 on every row"
ARTICLE = {  # keyed by backend name; backends beyond the article have no row
    "torch-dataloader": ArticleRow(
        "PyTorch", "PyTorch DataLoader (torchvision MNIST + ToTensor)", (14.3, 15.1), None
    ),
    "torch-tfds": ArticleRow(
        "PyTorch", "TFDS (tf.data: shuffle, batch, map, prefetch)", (7.2, 10.9), 13.9
    ),
    "jax-tfds": ArticleRow("JAX: Flax linen + Optax, jitted step", "TFDS", (3.8, 6.4), 13.8),
}


# Pairs the summary answers in one line each: JAX against PyTorch with the same loader, and
# the cost of the article's DataLoader against tf.data feeding the same step.
PAIRS = (
    ("jax-tfds", "torch-tfds", "JAX vs PyTorch, both fed by tf.data (the article's rows)"),
    ("jax-scan", "torch-tensor", "JAX vs PyTorch, data in memory, no loader"),
    ("torch-tfds", "torch-dataloader", "tf.data vs the DataLoader, the same PyTorch step"),
)


def build_summary(runs: dict[str, BackendRun], roofline: dict[str, Any] | None = None) -> dict:
    """The summary: per backend numbers and verdicts, plus the article's rows and the
    environment. summary.json holds its numbers only (`compact`)."""
    last = max(r for run in runs.values() for r in run.rounds)
    full = full_size(_settings(runs))
    entries = {name: _runs_entry(run, last) for name, run in runs.items()}
    backends = {}
    for name, run in runs.items():
        m, entry = run.metrics, entries[name]
        headline = entry["epoch_time_s"]
        train_s, eval_s = m["train_time_median_s"], m["eval_time_median_s"]
        speedup = _paired(entries, BASELINE, name)
        row = ARTICLE.get(name)
        entry |= {
            "framework": m["env"]["framework"],
            "loader": m["env"]["loader"],
            "device": m["env"]["device"],
            "threads": m["env"]["threads"],
            "epoch_time_median_s": m["epoch_time_median_s"],  # the train@ run: epochs 2..N
            "epoch_time_min_s": m["epoch_time_min_s"],
            "epoch_time_max_s": m["epoch_time_max_s"],
            # (max - min) / median of the steady epochs: 0.1 = they spread over 10% of the median
            "epoch_time_spread": (m["epoch_time_max_s"] - m["epoch_time_min_s"])
            / m["epoch_time_median_s"],
            "first_epoch_s": m["first_epoch_s"],
            "first_epoch_extra_s": first_epoch_extra_s(
                m["first_epoch_s"], m["epoch_time_median_s"]
            ),
            "train_time_median_s": train_s,
            "eval_time_median_s": eval_s,
            "train_share": train_s / (train_s + eval_s),
            "eval_cost_ratio": _eval_cost_ratio(m),
            "samples_per_s": m["samples_per_s"],
            "val_acc": m["val_acc"],
            SPEEDUP_KEY: speedup.value if speedup else None,
            "speedup_lo": speedup.low if speedup else None,
            "speedup_hi": speedup.high if speedup else None,
            # > 1: faster than Colab; None for a subset run, whose seconds do not compare
            "speedup_vs_article": row.mid_s / headline if row and full else None,
            "article": _article_entry(row),
        }
        if roofline is not None:
            entry["roofline_epoch_s"] = roofline["roofline_epoch_s"]
            entry["efficiency"] = roofline["roofline_epoch_s"] / headline  # 1 = at the peak
            bound = kernel_bound(roofline, name)
            if bound is not None:
                entry["kernel_bound_epoch_s"] = bound
                entry["kernel_efficiency"] = bound / headline  # 1 = nothing but those kernels
        backends[name] = entry
    pairs = [
        {"a": a, "b": b, "what": what, **_estimate(ratio)}
        for a, b, what in PAIRS
        if a in entries and b in entries and (ratio := _paired(entries, b, a))
    ]
    first = next(iter(runs.values())).metrics
    summary = {
        "baseline": BASELINE,
        "rounds": last,
        "pairs": pairs,
        "settings": _settings(runs),
        "backends": backends,
        "drift": _drift(runs, roofline),
        "env": {k: first["env"][k] for k in metrics.ENV_MACHINE},
        "env_differs": _env_differences(runs),
    }
    if roofline is not None:
        summary["roofline"] = roofline
    return summary


# summary.json: per backend, the numbers the cross-machine report reads (no strings: those
# are in summary.md); `dvc metrics` reads the backends' metrics.json, not this file.
COMPACT = (
    "epoch_time_s",
    "epoch_time_lo_s",
    "epoch_time_hi_s",
    "speedup_lo",
    "speedup_hi",
    "rounds_s",
    "epoch_time_median_s",
    "epoch_time_min_s",
    "epoch_time_max_s",
    "first_epoch_s",
    "val_acc",
    SPEEDUP_KEY,
    "runs",
    "run_min_s",
    "run_max_s",
    "disturbed",
    "unsteady",
    "unstable",
    "foreign_cpu_max",
)


def compact(summary: dict) -> dict:
    """summary.json's content: settings, each backend's COMPACT numbers, the drift probe's."""
    out = {
        "settings": summary["settings"],
        "rounds": summary["rounds"],
        "backends": {
            name: {k: row[k] for k in COMPACT} for name, row in summary["backends"].items()
        },
        "drift": {k: v for k, v in summary["drift"].items() if k != "disturbed_stages"},
    }

    if "roofline" in summary:
        out["roofline"] = {
            k: summary["roofline"][k] for k in ("roofline_epoch_s", "matmul_gflops", "disturbed")
        }
    return out


# A backend's runs fall into two speeds ("unstable") only when each speed holds at least
# MODE_RUNS runs; a run alone at either end is an outlier, shown as such. With fewer runs the
# interval says how far they disagree, and no label does.
MODE_RUNS = 2


def _settings(runs: dict[str, BackendRun]) -> dict[str, int]:
    """The run's sizes, whatever the backends' order: epochs and batch from any backend (all
    ran the params' values), the split sizes the largest any backend saw (jax-scan drops the
    last partial batch: 1984 of 2000 images; the others see all 2000)."""
    records = [run.metrics for run in runs.values()]
    return {
        k: max(r[k] for r in records) if k.endswith("_examples") else records[0][k]
        for k in SETTINGS
    }


def _runs_entry(run: BackendRun, last_round: int) -> dict[str, Any]:
    """The backend over all its runs (round 1 the train@ stage's, then the repeats'): the
    headline s/epoch is the geometric mean of the undisturbed runs with its 95% interval
    (mnistbench.stats), of every run when each one was disturbed. `rounds_s` holds each
    round's number, null where that run was disturbed or did not run: the speed-ups pair them."""
    records = run.records
    clean = [r for r in records if not r["disturbed"]]
    medians = sorted(r["epoch_time_median_s"] for r in clean or records)
    estimate = stats.geometric(medians)
    by_round = dict(zip(run.rounds, records, strict=True))
    rounds_s = [
        None
        if i not in by_round or (clean and by_round[i]["disturbed"])
        else by_round[i]["epoch_time_median_s"]
        for i in range(1, last_round + 1)
    ]
    limit = run.metrics["quiet"]["thresholds"].get("spread", 1.0)
    groups = modes(medians, limit)
    big = [g for g in groups if len(g) >= MODE_RUNS]
    verdicts = [r["quiet"]["verdict"] for r in records]
    causes = [
        f"run {i}: {cause}" if len(records) > 1 else cause
        for i, r in zip(run.rounds, records, strict=True)
        for cause in r["quiet"]["causes"]
    ]
    return {
        "name": run.name,
        "epoch_time_s": estimate.value,
        "epoch_time_lo_s": estimate.low,
        "epoch_time_hi_s": estimate.high,
        "runs": len(records),
        "runs_s": [r["epoch_time_median_s"] for r in records],  # in round order
        "rounds_s": rounds_s,
        "run_min_s": medians[0],
        "run_max_s": medians[-1],
        "run_spread": (medians[-1] - medians[0]) / statistics.median(medians),
        "disturbed": sum(v == "disturbed" for v in verdicts),  # runs; 0 = every run clean
        # unsteady: most runs' steady epochs spread beyond the limit (one such run is noise)
        "unsteady": int(sum(v == "unsteady" for v in verdicts) * 2 > len(verdicts)),
        "unstable": int(len(big) >= 2),
        "modes": groups if len(big) >= 2 else [],
        "outliers": [g[0] for g in groups if len(g) == 1] if big else [],
        "foreign_cpu_max": max(r["foreign_cpu_max"] for r in records),
        "steal_max": max(r["steal_max"] for r in records),
        "verdicts": verdicts,
        "causes": causes,
    }


def disturbed_headline(row: dict) -> bool:
    """True when a backend's headline rests on disturbed runs: every one of its runs was (a
    disturbed run among clean ones is left out of the headline and its interval, and named
    in the report's causes, but does not make the number disturbed)."""
    disturbed = row.get("disturbed") or 0
    return bool(disturbed) and disturbed >= (row.get("runs") or 1)


def _paired(entries: dict[str, dict], base: str, name: str) -> stats.Estimate | None:
    """base's s/epoch over name's, paired by round (> 1: name is faster); None without a
    round holding clean runs of both."""
    if base not in entries:
        return None
    try:
        return stats.paired_ratio(entries[base]["rounds_s"], entries[name]["rounds_s"])
    except ValueError:
        return None


def _estimate(e: stats.Estimate) -> dict[str, float | int | None]:
    return {"ratio": e.value, "ratio_lo": e.low, "ratio_hi": e.high, "rounds": e.n}


def headline(summary: dict) -> dict[str, dict]:
    """What `dvc metrics show` and `dvc metrics diff` read (metrics/headline/<backend>.json),
    per backend: the estimate and 95% interval of s/epoch and of the speed-up, and val_acc;
    numbers only, and no bound where there is no interval (a single round); beside them the
    rounds, batch size and epochs."""
    keys = {
        "epoch_s": "epoch_time_s",
        "epoch_s_lo": "epoch_time_lo_s",
        "epoch_s_hi": "epoch_time_hi_s",
        "speedup": SPEEDUP_KEY,
        "speedup_lo": "speedup_lo",
        "speedup_hi": "speedup_hi",
        "val_acc": "val_acc",
    }
    made = {
        "rounds": summary["rounds"],
        # what the run was made with: a sweep's experiment that did not rerun compare shows
        # the baseline's headline, and these tell it apart (mnistbench.sweep)
        "batch_size": summary["settings"]["batch_size"],
        "epochs": summary["settings"]["epochs"],
    }
    return {
        name: {**{k: row[src] for k, src in keys.items() if row.get(src) is not None}, **made}
        for name, row in summary["backends"].items()
    }


def modes(medians: list[float], limit: float) -> list[list[float]]:
    """Sorted run medians split where one is more than `limit` (relative) above the last:
    [[1.31, 1.33], [2.38]] for a backend with a fast and a slow mode."""
    groups = [[medians[0]]]
    for value in medians[1:]:
        if value > groups[-1][-1] * (1 + limit):
            groups.append([])
        groups[-1].append(value)
    return groups


def _drift(runs: dict[str, BackendRun], roofline: dict[str, Any] | None) -> dict[str, Any]:
    """The fixed-work probe timed at the start and end of every timed stage: slowest over
    fastest (1.0: the machine kept its speed through the run)."""
    probes = [
        r[k] for run in runs.values() for r in run.records for k in ("probe_start_s", "probe_end_s")
    ]
    if roofline is not None and roofline.get("probe_start_s"):
        probes += [roofline["probe_start_s"], roofline["probe_end_s"]]
    disturbed = [n for n, run in runs.items() if any(r["disturbed"] for r in run.records)]
    return {
        "probe_min_s": min(probes),
        "probe_max_s": max(probes),
        "probe_ratio": max(probes) / min(probes),
        "disturbed_stages": disturbed
        + (["roofline"] if roofline and roofline.get("disturbed") else []),
    }


def first_epoch_extra_s(first_s: float, steady_s: float) -> float:
    """What epoch 1 costs beyond a steady epoch (compile, warm-up, caches), in seconds; 0 when
    it was as fast or faster: nothing extra to pay, not a negative cost (a first epoch can
    beat the median by noise, or by a machine that sped up later in the run)."""
    return max(0.0, first_s - steady_s)


def kernel_bound(roofline: dict[str, Any], backend: str) -> float | None:
    """The backend's framework's kernel bound (the step's products and optimizer update, each
    timed alone, per epoch), or None: a roofline file from before the bound, or a framework
    that could not run on the device."""
    return (roofline.get("kernel_bound_epoch_s") or {}).get(metrics.framework_of(backend))


def _eval_cost_ratio(m: dict) -> float:
    """Validation time per example over training time per example (steady medians)."""
    eval_per_example = m["eval_time_median_s"] / m["test_examples"]
    return eval_per_example / (m["train_time_median_s"] / m["train_examples"])


def _article_entry(row: ArticleRow | None) -> dict | None:
    if row is None:
        return None
    base = ARTICLE[BASELINE].mid_s
    return {
        "epoch_s_min": row.epoch_s[0],
        "epoch_s_max": row.epoch_s[1],
        "first_epoch_s": row.first_epoch_s,
        SPEEDUP_KEY: base / row.mid_s,
    }


def _env_differences(runs: dict[str, BackendRun]) -> dict[str, dict[str, Any]]:
    """Machine keys (packages: each package) whose value differs between backends, e.g.
    metrics recorded on different hosts or before and after an upgrade."""
    envs = {name: run.metrics["env"] for name, run in runs.items()}
    values = {
        key: {n: env[key] for n, env in envs.items()}
        for key in metrics.ENV_MACHINE
        if key != "packages"
    }
    packages = {n: env["packages"] for n, env in envs.items()}
    for pkg in sorted({p for versions in packages.values() for p in versions}):
        values[f"packages.{pkg}"] = {n: versions.get(pkg) for n, versions in packages.items()}
    return {
        key: by_backend
        for key, by_backend in values.items()
        if len({json.dumps(v, sort_keys=True) for v in by_backend.values()}) > 1
    }
