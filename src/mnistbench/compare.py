"""Stage `compare`: this run's table beside the article's, ratios, where the time goes, plots.

Reads metrics/<backend>/metrics.json and its per-epoch curves (plots/metrics/*.tsv) for every
backend in params' `backends`, and optionally the roofline stage's metrics.json. Every input is
validated first; a missing or malformed one raises CompareError naming the file, and nothing is
written. Then four files are rendered in memory and each is renamed into place from a temporary
file: summary.json (numbers, for `dvc metrics diff`), summary.md (the report), epoch_time.png
(steady s/epoch with its spread, the article's ranges marked) and curves.png (per epoch).

Cheap to import (no matplotlib until a PNG is drawn): the CLI imports CompareError at start-up.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnistbench import outputs
from mnistbench.config import Config

BASELINE = "torch-dataloader"  # speed-ups are against this backend, as in the article's table
SPEEDUP_KEY = f"speedup_vs_{BASELINE}"
FULL_TRAIN, FULL_TEST = 60000, 10000  # MNIST's splits: the article's epoch
OUTPUTS = ("summary.json", "summary.md", "epoch_time.png", "curves.png")


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
    "torch-dataloader": ArticleRow("PyTorch", "PyTorch DataLoader (torchvision MNIST + ToTensor)",
                                   (14.3, 15.1), None),
    "torch-tfds": ArticleRow("PyTorch", "TFDS (tf.data: shuffle, batch, map, prefetch)",
                             (7.2, 10.9), 13.9),
    "jax-tfds": ArticleRow("JAX: Flax linen + Optax, jitted step", "TFDS", (3.8, 6.4), 13.8),
}

TIMES = ("epoch_time_median_s", "epoch_time_min_s", "epoch_time_max_s", "first_epoch_s",
         "train_time_median_s", "eval_time_median_s")  # seconds: finite, >= 0
NUMBERS = ("val_acc", "val_loss", "train_loss", "samples_per_s")  # any number (a loss may be nan)
COUNTS = ("epochs", "batch_size", "num_params", "train_examples", "test_examples")  # ints >= 1
SETTINGS = ("epochs", "batch_size", "train_examples", "test_examples")
ENV_STRINGS = ("backend", "framework", "loader", "device")
MACHINE_KEYS = ("cpu", "cpu_count", "cpus_usable", "gpus", "threads", "image", "image_version",
                "python", "packages")  # env keys shared by all backends of one run
CURVES = ("val_acc", "train_loss", "val_loss", "epoch_time_s")  # the TSVs curves.png draws
ROOFLINE_KEYS = ("matmul_gflops", "train_gflop_per_epoch", "eval_gflop_per_epoch",
                 "gflop_per_epoch", "roofline_epoch_s")
EVAL_RATIO_COMPUTE = 1 / 3  # forward-only arithmetic per example, relative to forward + backward
UNSTEADY_SPREAD = 0.3  # steady epochs spread over >= 30% of their median: the report says so


class CompareError(ValueError):
    """Inputs missing or malformed; the message names each file and what is wrong with it."""


@dataclass(frozen=True)
class BackendRun:
    name: str
    metrics: dict[str, Any]  # metrics.json, validated
    curves: dict[str, list[float]]  # CURVES key -> value per epoch (epochs 1..N)


# ---------------------------------------------------------------- loading and validation


def metrics_path(metrics_root: str | Path, name: str) -> Path:
    return Path(metrics_root) / name / "metrics.json"


def curve_path(metrics_root: str | Path, name: str, key: str) -> Path:
    return Path(metrics_root) / name / "plots" / "metrics" / f"{key}.tsv"


def load_runs(cfg: Config, metrics_root: str | Path = "metrics") -> dict[str, BackendRun]:
    """Every backend of cfg.backends, in params order; all problems reported at once."""
    runs, problems = {}, []
    for name in cfg.backends:
        try:
            runs[name] = load_run(cfg, metrics_root, name)
        except CompareError as e:
            problems.append(str(e))
    if problems:
        raise CompareError("compare: nothing written; fix or regenerate (`dvc repro`, or "
                           "`mnistbench train <backend>`):\n  " + "\n  ".join(problems))
    return runs


def load_run(cfg: Config, metrics_root: str | Path, name: str) -> BackendRun:
    path = metrics_path(metrics_root, name)
    metrics = _check_metrics(_read_json(path), path, name, cfg)
    curves = {key: _read_curve(curve_path(metrics_root, name, key), key, metrics["epochs"])
              for key in CURVES}
    return BackendRun(name, metrics, curves)


def load_roofline(path: str | Path) -> dict[str, float]:
    """The roofline stage's metrics.json: the keys compare uses, checked."""
    path = Path(path)
    raw = _read_json(path)
    for key in ROOFLINE_KEYS:
        _need(_is_number(raw.get(key)) and math.isfinite(raw[key]) and raw[key] >= 0, path,
              f"{key} must be a finite number >= 0, got {raw.get(key)!r}")
    _need(raw["roofline_epoch_s"] > 0, path, "roofline_epoch_s must be > 0")
    return {**{k: float(raw[k]) for k in ROOFLINE_KEYS}, "threads": raw.get("threads")}


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CompareError(f"{path}: missing")
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CompareError(f"{path}: not valid JSON ({e})") from e
    _need(isinstance(raw, dict), path, f"must hold a JSON object, got {type(raw).__name__}")
    return raw


def _check_metrics(raw: dict, path: Path, name: str, cfg: Config) -> dict[str, Any]:
    missing = [k for k in (*TIMES, *NUMBERS, *COUNTS, "env") if k not in raw]
    _need(not missing, path, f"missing keys: {', '.join(missing)}")
    for key in TIMES:
        value = raw[key]
        _need(_is_number(value) and math.isfinite(value) and value >= 0, path,
              f"{key} must be a finite number of seconds >= 0, got {value!r}")
    for key in NUMBERS:
        _need(_is_number(raw[key]), path, f"{key} must be a number, got {raw[key]!r}")
    for key in COUNTS:
        value = raw[key]
        _need(isinstance(value, int) and not isinstance(value, bool) and value >= 1, path,
              f"{key} must be an integer >= 1, got {value!r}")
    env = raw["env"]
    _need(isinstance(env, dict), path, f"env must be an object, got {env!r}")
    for key in ENV_STRINGS:
        _need(isinstance(env.get(key), str), path,
              f"env.{key} must be a string, got {env.get(key)!r}")
    _need(env["backend"] == name, path, f"env.backend is {env['backend']!r}, not {name!r}")
    _need(raw["epoch_time_min_s"] <= raw["epoch_time_median_s"] <= raw["epoch_time_max_s"], path,
          "epoch_time_min_s <= epoch_time_median_s <= epoch_time_max_s does not hold")
    _need(raw["epoch_time_median_s"] > 0 and raw["train_time_median_s"] > 0, path,
          "epoch_time_median_s and train_time_median_s must be > 0")
    for key, want in (("epochs", cfg.train.epochs), ("batch_size", cfg.train.batch_size)):
        _need(raw[key] == want, path, f"{key} is {raw[key]} but params' train.{key} is {want} "
              "(stale: retrain this backend)")
    return raw


def _read_curve(path: Path, key: str, epochs: int) -> list[float]:
    """A DVCLive-layout TSV (columns step and KEY), one row per epoch 1..epochs."""
    if not path.is_file():
        raise CompareError(f"{path}: missing")
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise CompareError(f"{path}: unreadable ({e})") from e
    _need(bool(lines) and lines[0].split("\t") == ["step", key], path,
          f"header must be 'step<TAB>{key}', got {lines[0] if lines else ''!r}")
    values = []
    for number, line in enumerate(lines[1:], start=2):
        cells = line.split("\t")
        try:
            step, value = int(cells[0]), float(cells[1])
        except (ValueError, IndexError):
            cells = []
        _need(len(cells) == 2, path, f"line {number} is not '<step><TAB><number>': {line!r}")
        _need(step == len(values) + 1, path,
              f"line {number}: step {step}, expected {len(values) + 1}")
        values.append(value)
    _need(len(values) == epochs, path, f"{len(values)} rows but metrics.json says {epochs} epochs")
    return values


def _need(ok: bool, path: Path, message: str) -> None:
    if not ok:
        raise CompareError(f"{path}: {message}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# ---------------------------------------------------------------- the summary


def build_summary(runs: dict[str, BackendRun], roofline: dict[str, float] | None = None) -> dict:
    """summary.json: per backend numbers, plus the article's rows and the environment."""
    baseline = runs.get(BASELINE)
    base_s = baseline.metrics["epoch_time_median_s"] if baseline else None
    backends = {}
    for name, run in runs.items():
        m = run.metrics
        median = m["epoch_time_median_s"]
        train_s, eval_s = m["train_time_median_s"], m["eval_time_median_s"]
        row = ARTICLE.get(name)
        entry = {
            "framework": m["env"]["framework"],
            "loader": m["env"]["loader"],
            "device": m["env"]["device"],
            "epoch_time_median_s": median,  # steady: median of epochs 2..N
            "epoch_time_min_s": m["epoch_time_min_s"],
            "epoch_time_max_s": m["epoch_time_max_s"],
            # (max - min) / median of the steady epochs: 0.1 = they spread over 10% of the median
            "epoch_time_spread": (m["epoch_time_max_s"] - m["epoch_time_min_s"]) / median,
            "first_epoch_s": m["first_epoch_s"],
            "first_epoch_extra_s": m["first_epoch_s"] - median,  # compile, warm-up, caches
            "train_time_median_s": train_s,
            "eval_time_median_s": eval_s,
            "train_share": train_s / (train_s + eval_s),
            "eval_cost_ratio": _eval_cost_ratio(m),
            "samples_per_s": m["samples_per_s"],
            "val_acc": m["val_acc"],
            SPEEDUP_KEY: base_s / median if base_s else None,
            "speedup_vs_article": row.mid_s / median if row else None,  # > 1: faster than Colab
            "article": _article_entry(row),
        }
        if roofline is not None:
            entry["roofline_epoch_s"] = roofline["roofline_epoch_s"]
            entry["efficiency"] = roofline["roofline_epoch_s"] / median  # 1 = at the matmul peak
        backends[name] = entry
    first = next(iter(runs.values())).metrics
    summary = {
        "baseline": BASELINE,
        "settings": {k: first[k] for k in SETTINGS},
        "backends": backends,
        "env": {k: first["env"].get(k) for k in MACHINE_KEYS},
        "env_differs": _env_differences(runs),
    }
    if roofline is not None:
        summary["roofline"] = roofline
    return summary


def _eval_cost_ratio(m: dict) -> float:
    """Validation time per example over training time per example (steady medians)."""
    eval_per_example = m["eval_time_median_s"] / m["test_examples"]
    return eval_per_example / (m["train_time_median_s"] / m["train_examples"])


def _article_entry(row: ArticleRow | None) -> dict | None:
    if row is None:
        return None
    base = ARTICLE[BASELINE].mid_s
    return {"epoch_s_min": row.epoch_s[0], "epoch_s_max": row.epoch_s[1],
            "first_epoch_s": row.first_epoch_s, SPEEDUP_KEY: base / row.mid_s}


def _env_differences(runs: dict[str, BackendRun]) -> dict[str, dict[str, Any]]:
    """Machine keys (packages: each package) whose value differs between backends, e.g.
    metrics recorded on different hosts or before and after an upgrade."""
    envs = {name: run.metrics["env"] for name, run in runs.items()}
    values = {key: {n: env.get(key) for n, env in envs.items()}
              for key in MACHINE_KEYS if key != "packages"}
    packages = {n: env.get("packages") or {} for n, env in envs.items()}
    for pkg in sorted({p for versions in packages.values() for p in versions}):
        values[f"packages.{pkg}"] = {n: versions.get(pkg) for n, versions in packages.items()}
    return {key: by_backend for key, by_backend in values.items()
            if len({json.dumps(v, sort_keys=True) for v in by_backend.values()}) > 1}


def where_time_goes(name: str, summary: dict) -> str:
    """One sentence: train/eval split, loader vs compute, roofline if known, first epoch."""
    rows = summary["backends"]
    row = rows[name]
    parts = [f"of a {_s(row['epoch_time_median_s'])} s epoch, {row['train_share']:.0%} is the "
             f"training pass and {1 - row['train_share']:.0%} the validation pass"]
    ratio = row["eval_cost_ratio"]
    if ratio >= 0.6:
        hint = "so most of it is overhead (data loader, Python, dispatch), not arithmetic"
    elif ratio >= 0.2:
        hint = "close to what arithmetic alone predicts"
    else:
        hint = "far below it, so validation runs in fewer, larger steps than training"
    parts.append(f"a validation example costs {_x(ratio)} a training one (arithmetic alone: "
                 f"about {EVAL_RATIO_COMPUTE:.2f}x), {hint}")
    if row["epoch_time_spread"] >= UNSTEADY_SPREAD:
        parts.append(f"its steady epochs range from {_s(row['epoch_time_min_s'])} to "
                     f"{_s(row['epoch_time_max_s'])} s, so its median depends on how many "
                     "epochs fall at each end: read it beside the range")
    peers = [(p, r) for p, r in rows.items()
             if p != name and r["framework"] == row["framework"] and r["loader"] != row["loader"]]
    if peers:
        peer, other = min(peers, key=lambda pr: pr[1]["epoch_time_median_s"])
        delta = row["epoch_time_median_s"] - other["epoch_time_median_s"]
        effect = f"costs {_s(delta)} s more" if delta > 0 else f"saves {_s(-delta)} s"
        parts.append(f"{peer}, {row['framework']} fed by {other['loader']}, takes "
                     f"{_s(other['epoch_time_median_s'])} s, so this loader {effect} per epoch")
    if "efficiency" in row:
        eff = row["efficiency"]
        parts.append(f"at the measured matmul peak the arithmetic would take "
                     f"{_s(row['roofline_epoch_s'])} s, {_pct(eff)} of the epoch" + (
                         f", so {_pct(1 - eff)} goes to the loader, Python, dispatch and products "
                         "running below the peak" if eff < 0.5 else ""))
    extra = row["first_epoch_extra_s"]
    parts.append(f"the first epoch takes {_s(row['first_epoch_s'])} s, " + (
        f"{_s(extra)} s over a steady one (compile, warm-up, caches)" if extra > 0
        else "no more than a steady one (no compile or warm-up cost shows)"))
    text = "; ".join(parts)
    return text[0].upper() + text[1:] + "."


# ---------------------------------------------------------------- the report


def render_markdown(summary: dict) -> str:
    rows, settings, env = summary["backends"], summary["settings"], summary["env"]
    has_roofline = "roofline" in summary
    out = ["# mnistbench: this run beside the article", ""]
    out.append("An epoch is one training pass plus one validation pass (the article's epoch). "
               f"Steady s/epoch: {_steady_epochs(settings['epochs'])}, min-max across the steady "
               f"epochs in brackets. This run: {settings['epochs']} epochs, batch "
               f"{settings['batch_size']}, {settings['train_examples']} training / "
               f"{settings['test_examples']} test examples. "
               f"The article: {ARTICLE_SETUP}.")
    if (settings["train_examples"], settings["test_examples"]) != (FULL_TRAIN, FULL_TEST):
        out += ["", f"**A subset of MNIST** ({settings['train_examples']} of {FULL_TRAIN} training "
                f"images): this run's s/epoch, and so \"this run vs article\", is not "
                "comparable with the article's; the ratios between backends are."]
    out += ["", "| backend | implementation | data loader | s/epoch, article | s/epoch, this run "
            "| first epoch, article | first epoch, this run | train + eval, this run | val_acc |",
            "|---|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        a = r["article"]
        article_s = f"{a['epoch_s_min']:g}-{a['epoch_s_max']:g}" if a else "—"
        article_first = f"{a['first_epoch_s']:g}" if a and a["first_epoch_s"] is not None else "—"
        out.append(f"| {name} | {r['framework']} | {r['loader']} | {article_s} "
                   f"| {_s(r['epoch_time_median_s'])} ({_s(r['epoch_time_min_s'])}-"
                   f"{_s(r['epoch_time_max_s'])}) | {article_first} | {_s(r['first_epoch_s'])} "
                   f"| {_s(r['train_time_median_s'])} + {_s(r['eval_time_median_s'])} "
                   f"| {r['val_acc']:.4f} |")

    out += ["", "## Ratios", ""]
    head = (f"| backend | speed-up vs {BASELINE}, article | speed-up vs {BASELINE}, this run "
            "| this run vs article |")
    rule = "|---|---|---|---|"
    if has_roofline:
        head += " roofline s/epoch | efficiency |"
        rule += "---|---|"
    out += [head, rule]
    for name, r in rows.items():
        a = r["article"]
        line = (f"| {name} | {_x(a[SPEEDUP_KEY]) if a else '—'} | {_x(r[SPEEDUP_KEY])} "
                f"| {_x(r['speedup_vs_article'])} |")
        if has_roofline:
            line += f" {_s(r['roofline_epoch_s'])} | {_pct(r['efficiency'])} |"
        out.append(line)
    out += ["", "Speed-ups divide s/epoch: the article's range midpoints, this run's medians. "
            "\"This run vs article\" is the article's s/epoch over this run's (above 1: faster "
            "here)." + (" Efficiency is the roofline epoch (the epoch's FLOPs at the measured "
                        "float32 matmul rate) over the steady epoch." if has_roofline else "")]
    if BASELINE not in rows:
        out += ["", f"{BASELINE} is not among this run's backends: no speed-ups for this run."]

    out += ["", "## Where the time goes", ""]
    out += [f"- **{name}**: {where_time_goes(name, summary)}" for name in rows]
    out += ["", "A validation example needs only the forward pass, about a third of a training "
            "example's arithmetic; when it costs as much as a training example, the time goes "
            "to fetching and dispatching batches rather than to computing."]

    out += ["", "## Environment", "", "| | |", "|---|---|"]
    out.append(f"| CPU | {env['cpu']} ({env['cpus_usable']} of {env['cpu_count']} CPUs usable) |")
    out.append(f"| GPU | {', '.join(env['gpus']) if env['gpus'] else 'none'} |")
    out.append("| device | " + ", ".join(f"{n}: {r['device']}" for n, r in rows.items()) + " |")
    threads = env["threads"] if env["threads"] is not None else "framework default"
    out.append(f"| threads | {threads} |")
    image = f"{env['image']} {env['image_version'] or ''}".strip()
    out.append(f"| image | {image} |")
    out.append(f"| Python | {env['python']} |")
    packages = env["packages"] or {}
    out.append("| packages | " + ", ".join(f"{k} {v}" for k, v in packages.items()) + " |")
    if has_roofline:
        rf = summary["roofline"]
        threads = f", {rf['threads']} threads" if rf["threads"] is not None else ""
        out.append(f"| roofline | {rf['matmul_gflops']:.1f} GFLOP/s float32 matmul{threads}, "
                   f"{rf['gflop_per_epoch']:.1f} GFLOP per epoch |")
    if summary["env_differs"]:
        out += ["", "**The backends' metrics were recorded in different environments** "
                "(check before comparing their times):", ""]
        out += [f"- {key}: " + ", ".join(f"{n} {'absent' if v is None else v}"
                                         for n, v in values.items())
                for key, values in summary["env_differs"].items()]

    out += ["", "## Plots", "", "![steady epoch time per backend](epoch_time.png)", "",
            "![val_acc, loss and epoch time per epoch](curves.png)", ""]
    return "\n".join(out)


def _steady_epochs(epochs: int) -> str:
    if epochs == 1:
        return "epoch 1 alone (the only one, so compile and warm-up included)"
    return "epoch 2" if epochs == 2 else f"median over epochs 2..{epochs}"


def _s(seconds: float) -> str:
    """Seconds with about three significant digits."""
    a = abs(seconds)
    return f"{seconds:.1f}" if a >= 10 else f"{seconds:.2f}" if a >= 1 else f"{seconds:#.3g}"


def _pct(share: float) -> str:
    """A share as a percentage, with two significant digits when under 0.1% (GPU rows'
    efficiency is a few thousandths of a percent; "0.0%" would hide it)."""
    if share < 0.001:
        return f"{share * 100:#.2g}%"
    return f"{share:.2%}" if 0.999 < share < 1 else f"{share:.1%}"


def _x(ratio: float | None) -> str:
    """A ratio: two decimals, or two significant digits under 0.1 ("0.0019x", not "0.00x")."""
    if ratio is None:
        return "—"
    return f"{ratio:.2f}x" if abs(ratio) >= 0.1 else f"{ratio:#.2g}x"


# ---------------------------------------------------------------- the pictures


def _figure(width: float, height: float, ncols: int = 1):
    from matplotlib.figure import Figure  # no pyplot: no global state, no display needed

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    return fig, fig.subplots(1, ncols)


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})  # no version: stable bytes
    return buf.getvalue()


def _colors(names: list[str]) -> dict[str, str]:
    from mnistbench import backends

    return {name: backends.color(name) for name in names}


def epoch_time_png(summary: dict) -> bytes:
    """Bars: this run's steady s/epoch, whiskers min-max; hatched: the article's range beside
    it, where the article has the backend; triangles: first epochs. Log scale: a subset run
    and the article differ by orders of magnitude."""
    rows = summary["backends"]
    colors = _colors(list(rows))
    fig, ax = _figure(max(6.0, 1.3 * len(rows) + 2), 5.0)
    width = 0.38
    labelled: set[str] = set()

    def label(text: str) -> str | None:  # each legend entry once
        return None if text in labelled or labelled.add(text) else text

    for i, (name, r) in enumerate(rows.items()):
        a = r["article"]
        x = i - width / 2 if a else i  # alone and centred without an article bar
        median = r["epoch_time_median_s"]
        err = [[median - r["epoch_time_min_s"]], [r["epoch_time_max_s"] - median]]
        ax.bar(x, median, width, yerr=err, capsize=4, color=colors[name],
               label=label("this run: steady median, min-max"))
        ax.annotate(_s(median), (x, r["epoch_time_max_s"]), ha="center", va="bottom",
                    fontsize=8, xytext=(0, 2), textcoords="offset points")
        ax.plot(x - width / 2 - 0.04, r["first_epoch_s"], marker=">", color="black",
                linestyle="none", label=label("this run: first epoch"))
        if a:
            low, high = a["epoch_s_min"], a["epoch_s_max"]
            ax.bar(i + width / 2, high - low, width, bottom=low, color="0.8", hatch="//",
                   edgecolor="0.4", label=label("article (Colab CPU, full MNIST): range"))
            ax.annotate(f"{low:g}-{high:g}", (i + width / 2, high), ha="center", va="bottom",
                        fontsize=8, xytext=(0, 2), textcoords="offset points", color="0.3")
            if a["first_epoch_s"] is not None:
                ax.plot(i + width + 0.04, a["first_epoch_s"], marker="<", color="0.3",
                        markerfacecolor="none", linestyle="none",
                        label=label("article: first epoch"))
    ax.set_yscale("log")
    ax.set_xticks(range(len(rows)), list(rows), rotation=15)
    ax.set_ylabel("seconds per epoch (log)")
    s = summary["settings"]
    ax.set_title(f"Steady epoch time (train + validation pass)\n{s['train_examples']} train + "
                 f"{s['test_examples']} test examples, batch {s['batch_size']}, "
                 f"{s['epochs']} epochs", fontsize=10)
    fig.legend(fontsize=8, loc="outside lower center", ncols=4)
    ax.grid(axis="y", which="both", alpha=0.3)
    return _png(fig)


def curves_png(runs: dict[str, BackendRun]) -> bytes:
    """Per epoch and backend: val_acc; train (solid) and val (dashed) loss; epoch time."""
    colors = _colors(list(runs))
    fig, (acc, loss, time_ax) = _figure(15, 4.5, ncols=3)
    for name, run in runs.items():
        steps = range(1, len(run.curves["val_acc"]) + 1)
        acc.plot(steps, run.curves["val_acc"], marker="o", color=colors[name], label=name)
        loss.plot(steps, run.curves["train_loss"], marker="o", color=colors[name],
                  label=f"{name} train")
        loss.plot(steps, run.curves["val_loss"], marker="s", linestyle="--", color=colors[name],
                  label=f"{name} val")
        time_ax.plot(steps, run.curves["epoch_time_s"], marker="o", color=colors[name], label=name)
    for ax, title, ylabel in ((acc, "validation accuracy", "val_acc"),
                              (loss, "loss (solid: train, dashed: validation)", "cross-entropy"),
                              (time_ax, "epoch time (epoch 1: compile, warm-up)", "seconds (log)")):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend(fontsize=7)
    time_ax.set_yscale("log")
    return _png(fig)


# ---------------------------------------------------------------- the stage


def compare(cfg: Config, metrics_root: str | Path = "metrics", out_dir: str | Path | None = None,
            roofline_path: str | Path | None = None) -> dict:
    """Validate every input, render the four outputs in memory, then write them all.

    Returns the summary (summary.json's content)."""
    runs = load_runs(cfg, metrics_root)
    roofline = load_roofline(roofline_path) if roofline_path is not None else None
    summary = build_summary(runs, roofline)
    files = {
        "summary.json": (json.dumps(summary, indent=2, allow_nan=True) + "\n").encode(),
        "summary.md": render_markdown(summary).encode(),
        "epoch_time.png": epoch_time_png(summary),
        "curves.png": curves_png(runs),
    }
    outputs.write_files(Path(out_dir if out_dir is not None else metrics_root), files)
    return summary
