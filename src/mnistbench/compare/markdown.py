"""compare, step 3: summary.md, the report, rendered from the summary alone."""

from __future__ import annotations

import statistics

from mnistbench import mnist
from mnistbench.compare.fmt import pct as _pct
from mnistbench.compare.fmt import ratio as _x
from mnistbench.compare.fmt import seconds as _s
from mnistbench.compare.fmt import seconds_ci, speedup_ci
from mnistbench.compare.summary import ARTICLE_SETUP, BASELINE, SPEEDUP_KEY, disturbed_headline

# "Where the time goes" reads each backend against these thresholds. A validation example
# costs, per example, this share of a training example's arithmetic: forward only, against
# forward + backward (about twice the forward's FLOPs).
EVAL_RATIO_COMPUTE = 1 / 3
# A validation example costing at least this share of a training one is "overhead-bound": far
# above what arithmetic predicts, so fetching and dispatching batches sets the pace.
EVAL_RATIO_OVERHEAD = 0.6
# Under this share, validation runs in fewer, larger steps than training (the whole split at
# once): far below what arithmetic predicts per batch of batch_size.
EVAL_RATIO_BATCHED = 0.2
# Steady epochs spread over at least this share of their median are "unsteady": the median
# depends on how many epochs fall at each end, so read it beside the range.
UNSTEADY_SPREAD = 0.3
# The drift probe (the same work at the start and end of every timed stage) slower than this
# times its fastest: the machine's speed changed during the run (a neighbour, throttling).
DRIFT_LIMIT = 1.1


def eval_reading(eval_cost_ratio: float) -> str:
    """What a validation example's cost, relative to a training example's, says."""
    if eval_cost_ratio >= EVAL_RATIO_OVERHEAD:
        return "overhead-bound"
    if eval_cost_ratio < EVAL_RATIO_BATCHED:
        return "fewer, larger steps"
    return "roughly arithmetic"


def where_time_goes(summary: dict) -> list[str]:
    """The table: per backend, the steady epoch's split, what validation's cost says, and the
    first epoch's extra cost; the thresholds are explained below it."""
    out = [
        "| backend | steady epoch | training pass | validation pass | validation example "
        "/ training example | validation is | first epoch, extra |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in summary["backends"].items():
        steady = f"{_s(r['epoch_time_s'])} s"
        if r["epoch_time_spread"] >= UNSTEADY_SPREAD:
            steady += f", unsteady ({_s(r['epoch_time_min_s'])}-{_s(r['epoch_time_max_s'])})"
        extra = r["first_epoch_extra_s"]
        out.append(
            f"| {name} | {steady} | {r['train_share']:.0%} | {1 - r['train_share']:.0%} "
            f"| {_x(r['eval_cost_ratio'])} | {eval_reading(r['eval_cost_ratio'])} "
            f"| {f'{_s(extra)} s' if extra > 0 else 'none'} |"
        )
    out += [
        "",
        f"A validation example needs only the forward pass, about "
        f"{_x(EVAL_RATIO_COMPUTE)} a training example's arithmetic. Costing "
        f"{_x(EVAL_RATIO_OVERHEAD)} or more, validation is *overhead-bound*: fetching and "
        f"dispatching batches, not computing, sets the pace. Under {_x(EVAL_RATIO_BATCHED)}, "
        "it runs in *fewer, larger steps* than training; in between, its cost is *roughly "
        f"arithmetic*. *Unsteady*: the steady epochs spread over {UNSTEADY_SPREAD:.0%} or "
        "more of their median, so read it beside the range. The first epoch's extra is "
        "compile, warm-up and caches.",
    ]
    if "roofline" in summary:
        out[-1] += (
            " Efficiency (above) is the share of the steady epoch that the arithmetic "
            "would take at the measured matmul peak; the rest goes to the loader, "
            "Python, dispatch and products running below the peak."
        )
    return out


def verdict_word(r: dict) -> str:
    """One word for a backend over its runs: disturbed (its headline rests on disturbed runs:
    every run was), unstable (its clean runs fall into two speeds), unsteady (most runs'
    steady epochs spread with the machine free), or quiet."""
    if disturbed_headline(r):
        return "disturbed"
    return "unstable" if r["unstable"] else "unsteady" if r["unsteady"] else "quiet"


MARKS = {"disturbed": " ‡", "unstable": " †", "unsteady": " *", "quiet": ""}


def headline(r: dict) -> str:
    """The steady s/epoch cell: the estimate, its 95% interval, and the verdict's mark."""
    text = seconds_ci(r["epoch_time_s"], r["epoch_time_lo_s"], r["epoch_time_hi_s"])
    return text + MARKS[verdict_word(r)]


def speedup_cell(r: dict) -> str:
    return speedup_ci(r[SPEEDUP_KEY], r["speedup_lo"], r["speedup_hi"])


def answers(summary: dict) -> list[str]:
    """One line per question the run answers, each a paired ratio with its interval."""
    out = []
    for p in summary["pairs"]:
        verdict = (
            "no significant difference"
            if p["ratio_lo"] is not None and p["ratio_lo"] <= 1 <= p["ratio_hi"]
            else "faster"
            if p["ratio"] > 1
            else "slower"
        )
        out.append(
            f"- **{p['what']}**: `{p['a']}` ran {speedup_ci(p['ratio'], p['ratio_lo'], p['ratio_hi'])} "
            f"as fast as `{p['b']}` ({verdict}; paired over {p['rounds']} round{'s' if p['rounds'] > 1 else ''})."
        )
    return out


def rounds_line(summary: dict) -> str:
    """How many rounds, and why the repeats stage stopped."""
    stop = (summary.get("measured") or {}).get("stop")
    said = f": {stop['says']}" if stop else ""
    return (
        f"{summary['rounds']} rounds (every backend once per round, a fresh process each, "
        f"in an order drawn at random per round){said}."
    )


def legend(rows: dict) -> list[str]:
    """What the marks in the table mean, for the marks present."""
    present = {verdict_word(r) for r in rows.values()}
    lines = {
        "disturbed": "‡ disturbed: other processes or the hypervisor took CPU time while it "
        "was timed (see below); the number is not this machine's.",
        "unstable": "† unstable: its runs fall into two speeds (each held by at least two "
        "runs), with the machine free; both are listed below.",
        "unsteady": "* unsteady: in most of its runs the steady epochs spread beyond the limit "
        "with the machine free.",
    }
    return [lines[k] for k in lines if k in present] or [
        "Every backend was timed on a quiet machine (nothing else beyond the limits below)."
    ]


def quiet_table(summary: dict) -> list[str]:
    """Per backend: the verdict, others' and the hypervisor's largest CPU share, the spread
    across epochs and across runs, and the causes; then the drift probe."""
    out = [
        "| backend | verdict | others, max | steal, max | spread across epochs "
        "| runs | spread across runs |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in summary["backends"].items():
        runs = ", ".join(_s(x) for x in r["runs_s"])
        word = verdict_word(r)
        if r["modes"]:
            word += ": " + " and ".join(
                f"{_s(statistics.median(m))} s ({len(m)})" for m in r["modes"]
            )
        if r["outliers"]:
            word += ", outlier " + ", ".join(f"{_s(x)} s" for x in r["outliers"])
        if 0 < r["disturbed"] < r["runs"]:  # the headline rests on the others
            word += f", {r['disturbed']} of {r['runs']} runs disturbed (left out)"
        # over the clean runs (every run when all were disturbed); one run has no spread
        kept = r["runs"] - r["disturbed"] if r["disturbed"] < r["runs"] else r["runs"]
        across = _pct(r["run_spread"]) if kept > 1 else "1 run" if r["runs"] == 1 else "1 clean run"
        out.append(
            f"| {name} | {word} | {_pct(r['foreign_cpu_max'])} | {_pct(r['steal_max'])} "
            f"| {_pct(r['epoch_time_spread'])} | {r['runs']}: {runs} s | {across} |"
        )
    causes = [f"- {name}: {c}" for name, r in summary["backends"].items() for c in r["causes"]]
    if causes:
        out += ["", *causes]
    drift = summary["drift"]
    out += [
        "",
        "Others: the largest share of the CPUs that other processes used in any steady epoch; "
        "steal: the share the hypervisor gave to other guests. Spreads are (slowest - "
        "fastest) / median. Drift: a fixed piece of work timed at the start and end of every "
        f"timed stage took {_s(drift['probe_min_s'])} to {_s(drift['probe_max_s'])} s, "
        f"{_x(drift['probe_ratio'])} slowest over fastest"
        + (
            " (the machine kept its speed)."
            if drift["probe_ratio"] < DRIFT_LIMIT
            else ": **the machine changed speed during the run**."
        ),
    ]
    if "roofline" in drift["disturbed_stages"]:
        out.append("The roofline stage was disturbed too: its peak and kernel bounds are low.")
    return out


def render_markdown(summary: dict) -> str:
    rows, settings, env = summary["backends"], summary["settings"], summary["env"]
    has_roofline = "roofline" in summary
    out = ["# mnistbench: this run beside the article", ""]
    out.append(
        "An epoch is one training pass plus one validation pass (the article's epoch). "
        f"Steady s/epoch: a run's {_steady_epochs(settings['epochs'])}; over the runs, the "
        "geometric mean with its 95% confidence interval in brackets. Speed-ups are paired: "
        "the two backends' runs of one round divided, then summarised over rounds. "
        f"{rounds_line(summary)} This run: {settings['epochs']} epochs, batch "
        f"{settings['batch_size']}, {settings['train_examples']} training / "
        f"{settings['test_examples']} test examples. "
        f"The article: {ARTICLE_SETUP}."
    )
    full = (mnist.TRAIN_EXAMPLES, mnist.TEST_EXAMPLES)
    if (settings["train_examples"], settings["test_examples"]) != full:
        out += [
            "",
            f"**A subset of MNIST** ({settings['train_examples']} of {full[0]} training "
            f'images): this run\'s s/epoch, and so "this run vs article", is not '
            "comparable with the article's; the ratios between backends are.",
        ]
    out += [
        "",
        "| backend | implementation | data loader | s/epoch, article | s/epoch, this run "
        "| first epoch, article | first epoch, this run | train / eval share, this run | val_acc |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        a = r["article"]
        article_s = f"{a['epoch_s_min']:g}-{a['epoch_s_max']:g}" if a else "—"
        article_first = f"{a['first_epoch_s']:g}" if a and a["first_epoch_s"] is not None else "—"
        out.append(
            f"| {name} | {r['framework']} | {r['loader']} | {article_s} "
            f"| {headline(r)} | {article_first} | {_s(r['first_epoch_s'])} "
            f"| {r['train_share']:.0%} / {1 - r['train_share']:.0%} "
            f"| {r['val_acc']:.4f} |"
        )

    out += ["", *legend(rows)]
    if summary["pairs"]:
        out += ["", "## The answer", "", *answers(summary)]
    out += ["", "## Ratios", ""]
    head = (
        f"| backend | speed-up vs {BASELINE}, article | speed-up vs {BASELINE}, this run "
        "| this run vs article |"
    )
    rule = "|---|---|---|---|"
    has_kernels = any("kernel_efficiency" in r for r in rows.values())
    if has_roofline:
        head += " roofline s/epoch | efficiency |"
        rule += "---|---|"
    if has_kernels:
        head += " kernel bound s/epoch | vs kernel bound |"
        rule += "---|---|"
    out += [head, rule]
    for name, r in rows.items():
        a = r["article"]
        line = (
            f"| {name} | {_x(a[SPEEDUP_KEY]) if a else '—'} | {speedup_cell(r)} "
            f"| {_x(r['speedup_vs_article'])} |"
        )
        if has_roofline:
            line += f" {_s(r['roofline_epoch_s'])} | {_pct(r['efficiency'])} |"
        if has_kernels:
            bound = r.get("kernel_bound_epoch_s")
            line += f" {_s(bound)} | {_pct(r['kernel_efficiency'])} |" if bound else " — | — |"
        out.append(line)
    out += [
        "",
        "Speed-ups divide s/epoch: the article's range midpoints; this run's runs of one "
        "round, paired, over every round without a disturbed run (95% interval in brackets). "
        "\"This run vs article\" is the article's s/epoch over this run's (above 1: faster "
        "here)."
        + (
            " Efficiency is the roofline epoch (the epoch's FLOPs at the measured "
            "float32 matmul rate) over the steady epoch."
            if has_roofline
            else ""
        )
        + (
            " The kernel bound is the epoch's products and Adam updates, each timed alone "
            "with the backend's framework at the model's shapes in the same run: \"vs kernel "
            'bound" says how much of the steady epoch those kernels are.'
            if has_kernels
            else ""
        ),
    ]
    if BASELINE not in rows:
        out += ["", f"{BASELINE} is not among this run's backends: no speed-ups for this run."]

    out += ["", "## Where the time goes", ""]
    out += where_time_goes(summary)

    out += ["", "## How quiet the machine was", ""]
    out += quiet_table(summary)

    out += ["", "## Environment", "", "| | |", "|---|---|"]
    if "machine" in summary:
        m = summary["machine"]
        out.append(f"| machine | {m['name']}, fingerprint {m['id']} (machine.json) |")
        measured = summary.get("measured") or {}
        out.append(
            f"| measured | checkout {measured.get('checkout') or '?'}, rounds finished "
            f"{measured.get('finished') or '?'} |"
        )
    out.append(f"| CPU | {env['cpu']} ({env['cpus_usable']} of {env['cpu_count']} CPUs usable) |")
    out.append(f"| GPU | {', '.join(env['gpus']) if env['gpus'] else 'none'} |")
    out.append("| device | " + ", ".join(f"{n}: {r['device']}" for n, r in rows.items()) + " |")
    out.append(
        "| threads | "
        + ", ".join(
            f"{n}: {r['threads'] if r['threads'] is not None else 'framework default'}"
            for n, r in rows.items()
        )
        + " |"
    )
    image = f"{env['image']} {env['image_version'] or ''}".strip()
    out.append(f"| image | {image} |")
    out.append(f"| Python | {env['python']} |")
    packages = env["packages"] or {}
    out.append("| packages | " + ", ".join(f"{k} {v}" for k, v in packages.items()) + " |")
    if has_roofline:
        rf = summary["roofline"]
        threads = f", {rf['threads']} threads" if rf["threads"] is not None else ""
        out.append(
            f"| roofline | {rf['matmul_gflops']:.1f} GFLOP/s float32 matmul{threads}, "
            f"{rf['gflop_per_epoch']:.1f} GFLOP per epoch |"
        )
    if summary["env_differs"]:
        out += [
            "",
            "**The backends' metrics were recorded in different environments** "
            "(check before comparing their times):",
            "",
        ]
        out += [
            f"- {key}: "
            + ", ".join(f"{n} {'absent' if v is None else v}" for n, v in values.items())
            for key, values in summary["env_differs"].items()
        ]

    out += [
        "",
        "## Plots",
        "",
        "![steady epoch time per backend](epoch_time.png)",
        "",
        "![val_acc, loss and epoch time per epoch](curves.png)",
        "",
    ]
    return "\n".join(out)


def _steady_epochs(epochs: int) -> str:
    if epochs == 1:
        return "epoch 1 alone (the only one, so compile and warm-up included)"
    return "epoch 2" if epochs == 2 else f"median over epochs 2..{epochs}"
