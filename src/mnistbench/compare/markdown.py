"""compare, step 3: summary.md, the report, rendered from the summary alone."""

from __future__ import annotations

from mnistbench import metrics
from mnistbench.compare.fmt import pct as _pct
from mnistbench.compare.fmt import ratio as _x
from mnistbench.compare.fmt import seconds as _s
from mnistbench.compare.summary import ARTICLE_SETUP, BASELINE, SPEEDUP_KEY

EVAL_RATIO_COMPUTE = 1 / 3  # forward-only arithmetic per example, relative to forward + backward
UNSTEADY_SPREAD = 0.3  # steady epochs spread over >= 30% of their median: the report says so


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
    full = (metrics.MNIST_TRAIN, metrics.MNIST_TEST)
    if (settings["train_examples"], settings["test_examples"]) != full:
        out += ["", f"**A subset of MNIST** ({settings['train_examples']} of {full[0]} training "
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


