"""compare, step 4: the two PNGs, epoch_time.png from the summary and curves.png from the
runs' per-epoch curves. matplotlib is imported only here, when a figure is drawn."""

from __future__ import annotations

import io

from mnistbench.compare.fmt import seconds as _s
from mnistbench.compare.load import BackendRun
from mnistbench.compare.summary import full_size


def _figure(width: float, height: float, ncols: int = 1):
    from matplotlib.figure import Figure  # no pyplot: no global state, no display needed

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    return fig, fig.subplots(1, ncols)


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})  # no version: stable bytes
    return buf.getvalue()


def _colors(names: list[str]) -> dict[str, str]:
    from mnistbench import colors

    return {name: colors.color(name) for name in names}


def epoch_time_png(summary: dict) -> bytes:
    """Bars: this run's steady s/epoch (the headline), whiskers its 95% interval (the runs'
    range with a single round); hatched: the article's range beside
    it, where the article has the backend; triangles: first epochs. Log scale: a subset run
    and the article differ by orders of magnitude."""
    rows = summary["backends"]
    full = full_size(summary["settings"])
    colors = _colors(list(rows))
    fig, ax = _figure(max(6.0, 1.3 * len(rows) + 2), 5.0)
    width = 0.38
    labelled: set[str] = set()

    def label(text: str) -> str | None:  # each legend entry once
        return None if text in labelled or labelled.add(text) else text

    for i, (name, r) in enumerate(rows.items()):
        a = r["article"] if full else None  # a subset's seconds never beside the article's
        x = i - width / 2 if a else i  # alone and centred without an article bar
        median = r["epoch_time_s"]  # the headline: every view shows the same number
        low = r["epoch_time_lo_s"] if r["epoch_time_lo_s"] is not None else r["run_min_s"]
        high = r["epoch_time_hi_s"] if r["epoch_time_hi_s"] is not None else r["run_max_s"]
        err = [[max(0.0, median - low)], [max(0.0, high - median)]]
        ax.bar(
            x,
            median,
            width,
            yerr=err,
            capsize=4,
            color=colors[name],
            label=label("this run: steady s/epoch over rounds, 95% interval"),
        )
        ax.annotate(
            _s(median),
            (x, high),
            ha="center",
            va="bottom",
            fontsize=8,
            xytext=(0, 2),
            textcoords="offset points",
        )
        ax.plot(
            x - width / 2 - 0.04,
            r["first_epoch_s"],
            marker=">",
            color="black",
            linestyle="none",
            label=label("this run: first epoch"),
        )
        if a:
            low, high = a["epoch_s_min"], a["epoch_s_max"]
            ax.bar(
                i + width / 2,
                high - low,
                width,
                bottom=low,
                color="0.8",
                hatch="//",
                edgecolor="0.4",
                label=label("article (Colab CPU, full MNIST): range"),
            )
            ax.annotate(
                f"{low:g}-{high:g}",
                (i + width / 2, high),
                ha="center",
                va="bottom",
                fontsize=8,
                xytext=(0, 2),
                textcoords="offset points",
                color="0.3",
            )
            if a["first_epoch_s"] is not None:
                ax.plot(
                    i + width + 0.04,
                    a["first_epoch_s"],
                    marker="<",
                    color="0.3",
                    markerfacecolor="none",
                    linestyle="none",
                    label=label("article: first epoch"),
                )
    ax.set_yscale("log")
    ax.set_xticks(range(len(rows)), list(rows), rotation=15)
    ax.set_ylabel("seconds per epoch (log)")
    s = summary["settings"]
    ax.set_title(
        f"Steady epoch time (train + validation pass)\n{s['train_examples']} train + "
        f"{s['test_examples']} test examples, batch {s['batch_size']}, "
        f"{s['epochs']} epochs" + ("" if full else " (a subset: the article's ranges left out)"),
        fontsize=10,
    )
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
        loss.plot(
            steps, run.curves["train_loss"], marker="o", color=colors[name], label=f"{name} train"
        )
        loss.plot(
            steps,
            run.curves["val_loss"],
            marker="s",
            linestyle="--",
            color=colors[name],
            label=f"{name} val",
        )
        time_ax.plot(steps, run.curves["epoch_time_s"], marker="o", color=colors[name], label=name)
    for ax, title, ylabel in (
        (acc, "validation accuracy", "val_acc"),
        (loss, "loss (solid: train, dashed: validation)", "cross-entropy"),
        (time_ax, "epoch time (epoch 1: compile, warm-up)", "seconds (log)"),
    ):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend(fontsize=7)
    time_ax.set_yscale("log")
    return _png(fig)
