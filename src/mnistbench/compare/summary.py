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

from mnistbench import metrics
from mnistbench.compare.load import BackendRun

BASELINE = "torch-dataloader"  # speed-ups are against this backend, as in the article's table
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


def build_summary(runs: dict[str, BackendRun], roofline: dict[str, Any] | None = None) -> dict:
    """The summary: per backend numbers and verdicts, plus the article's rows and the
    environment. summary.json holds its numbers only (`compact`)."""
    entries = {name: _runs_entry(run) for name, run in runs.items()}
    base_s = entries[BASELINE]["epoch_time_s"] if BASELINE in entries else None
    backends = {}
    for name, run in runs.items():
        m, entry = run.metrics, entries[name]
        headline = entry["epoch_time_s"]
        train_s, eval_s = m["train_time_median_s"], m["eval_time_median_s"]
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
            SPEEDUP_KEY: base_s / headline if base_s else None,
            "speedup_vs_article": row.mid_s / headline if row else None,  # > 1: faster than Colab
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
    first = next(iter(runs.values())).metrics
    summary = {
        "baseline": BASELINE,
        "settings": {k: first[k] for k in SETTINGS},
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


def _runs_entry(run: BackendRun) -> dict[str, Any]:
    """The backend over all its runs (the train@ stage's and the repeats'): the headline
    s/epoch is the median of the undisturbed runs' steady medians (of all runs when every one
    was disturbed); `unstable` when those runs fall in two or more modes, each more than
    bench.max_spread above the last."""
    records = run.records
    clean = [r for r in records if not r["disturbed"]]
    medians = sorted(r["epoch_time_median_s"] for r in clean or records)
    headline = statistics.median(medians)
    limit = run.metrics["quiet"]["thresholds"].get("spread", 1.0)
    spread = (medians[-1] - medians[0]) / headline
    # only clean runs can show the backend's modes: two or more, a gap over the limit between
    groups = modes(medians, limit) if len(clean) > 1 else [medians]
    unstable = len(groups) > 1
    verdicts = [r["quiet"]["verdict"] for r in records]
    causes = [
        f"run {i}: {cause}" if len(records) > 1 else cause
        for i, r in enumerate(records, start=1)
        for cause in r["quiet"]["causes"]
    ]
    return {
        "name": run.name,
        "epoch_time_s": headline,
        "runs": len(records),
        "runs_s": [r["epoch_time_median_s"] for r in records],  # in run order
        "run_min_s": medians[0],
        "run_max_s": medians[-1],
        "run_spread": spread,
        "disturbed": sum(v == "disturbed" for v in verdicts),  # runs; 0 = every run clean
        "unsteady": sum(v == "unsteady" for v in verdicts),
        "unstable": int(unstable),
        "modes": groups if unstable else [],
        "foreign_cpu_max": max(r["foreign_cpu_max"] for r in records),
        "steal_max": max(r["steal_max"] for r in records),
        "verdicts": verdicts,
        "causes": causes,
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
