"""Stage `report`: every machine side by side, one column each, beside the article.

Columns: the article (Google Colab CPU), each reference machine that comes with the repository
(results/<machine>/summary.json and machine.json), and this machine's run when it has one
(metrics/summary.json and metrics/machine.json). Rows: backends. A cell gives the steady
s/epoch, the speed-up over torch-dataloader on the same machine and val_acc; a backend a
machine did not run shows a dash. Two files: machines.md (the table, what each machine is,
and whether the article's ordering holds there) and machines.png (s/epoch per backend, one bar
per machine).

The reference machines' folders are written by `mnistbench keep` (mnistbench.keep), which
imports this module's ReportError and OUTPUTS (never the reverse).

results/ holds what other machines and users wrote: a machine's files are read as untrusted
(`read_json`: regular files only, no link followed, no FIFO waited on, a size cap) and checked
field by field (`check_summary`, `check_machine`) before a number is drawn; a bad one is one
ReportError naming the file. A hidden folder is no machine (`keep` stages its copy in one).
"""

from __future__ import annotations

import errno
import io
import json
import math
import os
import stat
import statistics
from dataclasses import dataclass
from pathlib import Path

from mnistbench import errors, outputs
from mnistbench.checkout import current_checkout
from mnistbench.compare.fmt import seconds_ci, speedup_ci
from mnistbench.compare.markdown import verdict_word
from mnistbench.compare.summary import ARTICLE as ARTICLE_ROWS
from mnistbench.compare.summary import BASELINE, SPEEDUP_KEY, full_size
from mnistbench.errors import UserError
from mnistbench.layout import (
    MACHINE_FILE,
    MACHINES_MD,
    MACHINES_PNG,
    REPEATS_DIR,
    ROUNDS_FILE,
    SUMMARY_FILE,
)

ARTICLE_ORDER = tuple(ARTICLE_ROWS)  # the article's rows, slowest first in its table
ARTICLE_VAL_ACC = 0.98  # the article: every row reached about 0.98
ARTICLE = "article (Colab CPU)"
LOCAL = "this machine"  # the column of the run in the workspace, when this checkout made it
COMMITTED = "committed reference"  # ... when it came with the clone (nothing measured here yet)
OUTPUTS = (MACHINES_MD, MACHINES_PNG)
DASH = "—"


class ReportError(UserError, ValueError):
    """A machine's files are missing or malformed; the message names the file."""


@dataclass(frozen=True)
class Cell:
    epoch_s: float  # steady s/epoch (the article: its range's midpoint)
    low_s: float  # steady epochs' fastest (the article: its range)
    high_s: float
    val_acc: float
    verdict: str = "quiet"  # compare's verdict word (VERDICT_MARKS); "unverified": not measured
    interval: bool = False  # low_s, high_s: the 95% interval over rounds (else a range)
    speedup: tuple[float, float | None, float | None] | None = None  # paired, with interval


# The mark each verdict puts after a cell's seconds, and what it means (machines.md's legend).
VERDICT_MARKS = {
    "quiet": ("", ""),
    "unsteady": ("*", "its steady epochs spread beyond the limit with the machine free"),
    "unstable": ("†", "its runs disagree (two modes) with the machine free"),
    "disturbed": (
        "‡",
        "other processes or the hypervisor took CPU time while it was timed: not this "
        "machine's number",
    ),
    "unverified": ("?", "measured before mnistbench recorded interference: quiet or not, unknown"),
}


@dataclass(frozen=True)
class Column:
    name: str  # the header: article, a reference machine's folder, or "this machine"
    about: str  # one line: what the machine is (CPU, GPU, image, versions, fingerprint id)
    cells: dict[str, Cell]  # backend -> its numbers on this machine
    full: bool = True  # the article's sizes (full MNIST, 10 epochs); False: a subset run

    def speedup(self, backend: str) -> float | None:
        """s/epoch of the baseline over the backend's, on this machine; None if either lacks."""
        if backend not in self.cells or BASELINE not in self.cells:
            return None
        return self.cells[BASELINE].epoch_s / self.cells[backend].epoch_s

    def article_order_holds(self) -> bool | None:
        """The article's rows slowest to fastest as in the article; None without all three."""
        if not all(b in self.cells for b in ARTICLE_ORDER):
            return None
        times = [self.cells[b].epoch_s for b in ARTICLE_ORDER]
        return times == sorted(times, reverse=True)


def article_column() -> Column:
    cells = {b: Cell(row.mid_s, *row.epoch_s, ARTICLE_VAL_ACC) for b, row in ARTICLE_ROWS.items()}
    return Column(ARTICLE, "Google Colab CPU, the article's own table (val_acc about 0.98)", cells)


def machine_column(name: str, summary_path: Path, machine_path: Path) -> Column:
    """A column from compare's summary.json and the machine stage's machine.json."""
    summary = read_json(summary_path)
    check_summary(summary, summary_path)
    rows = summary.get("backends")
    if not isinstance(rows, dict) or not rows:
        raise ReportError(f"{summary_path}: no backends (write it with `mnistbench compare`)")
    cells = {}
    for backend, row in rows.items():
        if not isinstance(row, dict):
            raise ReportError(f"{summary_path}: backends.{backend} must be an object")
        keys = _cell_keys(row)
        try:
            values = [float(row[k]) for k in keys]
        except (KeyError, TypeError, ValueError) as e:
            raise ReportError(f"{summary_path}: backends.{backend} lacks a number ({e})") from e
        if not all(math.isfinite(v) for v in values) or values[0] <= 0:
            raise ReportError(f"{summary_path}: backends.{backend} has {values}: not finite > 0")
        cells[backend] = Cell(
            *values,
            verdict=_verdict(row),
            interval=keys[1] == "epoch_time_lo_s",
            speedup=_speedup(row),
        )
    machine = read_json(machine_path)
    check_machine(machine, machine_path)
    settings = summary.get("settings", {})
    return Column(name, describe(machine, settings), cells, full_size(settings))


# ---------------------------------------------------------------- checking what is read
# summary.json and machine.json come from other machines and users (results/, a cluster's
# runs): every field drawn is checked first, and a bad one is a ReportError naming it.

# every number of a row report.py may draw: seconds, and the paired speed-up (a ratio), > 0
TIMES = ("epoch_time_s", "epoch_time_median_s", "epoch_time_min_s", "epoch_time_max_s")
TIMES += ("run_min_s", "run_max_s", "epoch_time_lo_s", "epoch_time_hi_s")
TIMES += (SPEEDUP_KEY, "speedup_lo", "speedup_hi")
RANGES = (("epoch_time_min_s", "epoch_time_max_s"), ("run_min_s", "run_max_s"))
RANGES += (("epoch_time_lo_s", "epoch_time_hi_s"), ("speedup_lo", "speedup_hi"))
VERDICTS = ("disturbed", "unstable", "unsteady")  # compare.markdown.verdict_word reads all three


def check_summary(summary: dict, path: Path) -> None:
    """summary.json's fields machine_column reads, typed and in range; else
    ReportError naming the file and the field."""
    rows = summary.get("backends")
    need(isinstance(rows, dict), path, "backends", "an object", rows)
    settings = summary.get("settings", {})
    need(isinstance(settings, dict), path, "settings", "an object", settings)
    for backend, row in rows.items():
        need(isinstance(row, dict), path, f"backends.{backend}", "an object", row)
        runs = row.get("runs", 1)
        need(is_int(runs) and runs >= 1, path, f"backends.{backend}.runs", "an int >= 1", runs)
        for key in TIMES:
            value = row.get(key)  # null: absent (an interval compare could not draw)
            ok = value is None or (_is_finite(value) and value > 0)
            need(ok, path, f"backends.{backend}.{key}", "finite and > 0", value)
        for low, high in RANGES:
            ok = (row.get(low) or 0) <= (row.get(high) or math.inf)
            need(ok, path, f"backends.{backend}.{low}", f"<= {high}", row.get(low))
        acc = row.get("val_acc", 0.0)
        ok = _is_finite(acc) and 0 <= acc <= 1
        need(ok, path, f"backends.{backend}.val_acc", "a number in [0, 1]", acc)
        if "disturbed" in row:
            for key in VERDICTS:  # compare writes counts of runs (disturbed) and 0/1 flags
                flag = row.get(key)
                ok = isinstance(flag, int) and flag >= 0
                need(ok, path, f"backends.{backend}.{key}", "a count >= 0", flag)


def check_machine(machine: dict, path: Path) -> None:
    """machine.json's fields report.describe and kinds() read, typed; else ReportError."""
    for key in ("name", "id"):
        value = machine.get(key, "")
        need(isinstance(value, str), path, key, "a string", value)
    fp = machine.get("fingerprint", {})
    need(isinstance(fp, dict), path, "fingerprint", "an object", fp)
    for key in ("cpu_flags", "gpus"):
        value = fp.get(key, []) if key == "gpus" else fp.get(key) or []  # describe: flags or []
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        need(ok, path, f"fingerprint.{key}", "a list of strings", value)
    frameworks = fp.get("frameworks", {})
    need(isinstance(frameworks, dict), path, "fingerprint.frameworks", "an object", frameworks)


def need(
    ok: bool, path: Path, key: str, what: str, got: object, error: type[Exception] = ReportError
) -> None:
    """`error` naming the file, the key, what it must be and (shortened) what it holds."""
    if not ok:
        raise error(f"{path}: {key} must be {what}, got {_shown(got)}")


def _shown(value: object) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_finite(value: object) -> bool:
    """A JSON number that is a finite float: not a bool, NaN, infinity or an int like 10**400."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond float's range
        return False


def _speedup(row: dict) -> tuple[float, float | None, float | None] | None:
    """The paired speed-up and its interval, from summaries that have one."""
    values = [row.get(k) for k in (SPEEDUP_KEY, "speedup_lo", "speedup_hi")]
    ok = [isinstance(v, int | float) and math.isfinite(v) and v > 0 for v in values]
    if not ok[0]:
        return None
    return (float(values[0]), *(float(v) if good else None for v, good in zip(values[1:], ok[1:])))


def _cell_keys(row: dict) -> tuple[str, ...]:
    """summary.json's keys for a cell: the estimate and its 95% interval where compare made
    one; older summaries: the median over runs and their range, or one run's median and its
    epochs' range."""
    if row.get("epoch_time_lo_s") is not None:
        return ("epoch_time_s", "epoch_time_lo_s", "epoch_time_hi_s", "val_acc")
    if row.get("runs", 1) > 1:
        return ("epoch_time_s", "run_min_s", "run_max_s", "val_acc")
    head = "epoch_time_s" if "epoch_time_s" in row else "epoch_time_median_s"
    return (head, "epoch_time_min_s", "epoch_time_max_s", "val_acc")


def _verdict(row: dict) -> str:
    """The verdict word of a summary.json row (compare's rules); a row from before verdicts
    were recorded is "unverified"."""
    return verdict_word(row) if "disturbed" in row else "unverified"


def describe(machine: dict, settings: dict) -> str:
    """One line about a machine.json: CPU, GPUs, image, Python and frameworks, its id."""
    fp = machine.get("fingerprint", {})
    flags = [f for f in fp.get("cpu_flags") or [] if f in ("avx2", "avx512f", "amx_tile", "sve")]
    cpu = f"{fp.get('cpu', '?')}, {fp.get('cpus_usable', '?')} CPUs" + (
        f" ({', '.join(flags)})" if flags else ""
    )
    gpus = ", ".join(g.split(",")[0] for g in fp.get("gpus", [])) or "no GPU"
    image = fp.get("image", "?")
    if fp.get("image_version"):
        image += f" {fp['image_version']}"
    versions = ", ".join(
        f"{k} {v}"
        for k, v in fp.get("frameworks", {}).items()
        if k in ("torch", "jax", "tensorflow-cpu", "tensorflow")
    )
    run = ""
    if settings:
        run = (
            f"; run: {settings.get('train_examples')}/{settings.get('test_examples')} "
            f"images, {settings.get('epochs')} epochs, batch {settings.get('batch_size')}"
        )
    return (
        f"{cpu}, {fp.get('memory_gib', '?')} GiB; {gpus}; {image}; Python "
        f"{fp.get('python', '?')}, {versions}; fingerprint {machine.get('id', '?')}{run}"
    )


# ---------------------------------------------------------------- reading, untrusted

MAX_BYTES = 1_000_000  # a summary.json or machine.json is a few kB: a bigger one is not ours


def open_regular(path: Path, error: type[Exception] = ReportError) -> int:
    """A file descriptor of `path` when it is a regular file, not a symbolic link; else
    `error`. lstat first, so that no device is ever opened; O_NOFOLLOW and O_NONBLOCK in
    case it was swapped since (a FIFO then opens at once instead of waiting for a writer)."""
    try:
        mode = path.lstat().st_mode
        if stat.S_ISLNK(mode):
            raise error(f"{path}: a symbolic link (to {os.readlink(path)}): not followed")
        if not stat.S_ISREG(mode):
            raise error(f"{path}: {errors.kind(path)}, not a regular file: not read")
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError as e:
        raise error(f"{path}: missing") from e
    except OSError as e:
        why = "a symbolic link: not followed" if e.errno == errno.ELOOP else e.strerror
        raise error(f"{path}: unreadable ({why})") from e
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise error(f"{path}: not a regular file: not read")
    return fd


def read_bytes(path: Path, limit: int = MAX_BYTES, error: type[Exception] = ReportError) -> bytes:
    """A regular file's bytes (open_regular), refused when over `limit`."""
    with os.fdopen(open_regular(path, error), "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise error(f"{path}: over {errors.size_text(limit)}: not what mnistbench writes")
    return data


def read_json(path: Path, error: type[Exception] = ReportError) -> dict:
    """A JSON object from a regular file (read_bytes), or `error` naming the file."""
    data = read_bytes(path, error=error)  # outside: `error` may be a ValueError too
    try:
        raw = json.loads(data)
    except (ValueError, RecursionError) as e:  # bad UTF-8 or JSON, an int of 5000 digits
        raise error(f"{path}: not valid JSON ({str(e).split(';')[0]})") from e
    if not isinstance(raw, dict):
        raise error(f"{path}: must hold a JSON object, got {type(raw).__name__}")
    return raw


def reference_columns(results_dir: str | Path) -> list[Column]:
    """Every results/<machine>/ holding summary.json and machine.json, sorted by name. A
    hidden folder is no machine (`keep` stages its copy in one); a machine folder that is a
    symbolic link is refused, not followed (it may lead anywhere)."""
    results_dir = Path(results_dir)
    found = []
    for folder in sorted(results_dir.iterdir()) if results_dir.is_dir() else []:
        summary, machine = folder / SUMMARY_FILE, folder / MACHINE_FILE
        if folder.name.startswith(".") or not folder.is_dir():
            continue
        if not (os.path.lexists(summary) and os.path.lexists(machine)):
            continue  # not a machine: a sweep's folder, notes, a half-made copy
        if folder.is_symlink():
            raise ReportError(
                f"{folder}: a symbolic link (to {os.readlink(folder)}): report reads no "
                "machine through a link; copy its folder in (`mnistbench keep`) or remove it"
            )
        found.append(machine_column(folder.name, summary, machine))
    return found


def columns(results_dir: str | Path, metrics_dir: str | Path | None) -> list[Column]:
    """The article, the references, and this machine's run if metrics_dir holds one."""
    cols = [article_column(), *reference_columns(results_dir)]
    if metrics_dir is not None:
        metrics_dir = Path(metrics_dir)
        summary, machine = metrics_dir / SUMMARY_FILE, metrics_dir / MACHINE_FILE
        if summary.is_file():
            local = machine_column(LOCAL, summary, machine)
            name = local_name(summary, machine)
            if not local.full:  # never posing as a full run beside full ones
                name += " [SUBSET: not comparable]"
            cols.append(Column(name, local.about, local.cells, local.full))
    return cols


def local_name(summary_path: Path, machine_path: Path) -> str:
    """The last column's header: "this machine (<name>)" when this checkout measured the run
    in metrics/, else the committed reference it holds, with its machine kind and date (a
    fresh clone before its first run)."""
    machine = read_json(machine_path)
    name = machine.get("name", "?")
    if machine.get("checkout") and machine.get("checkout") == current_checkout():
        return f"{LOCAL} ({name})"
    rounds = summary_path.parent / REPEATS_DIR / ROUNDS_FILE  # when its rounds finished
    finished = read_json(rounds).get("finished") if os.path.lexists(rounds) else None
    when = finished[:10] if isinstance(finished, str) else "date unknown"
    return f"{COMMITTED} ({name}, {when}; not measured in this checkout)"


def backend_order(cols: list[Column]) -> list[str]:
    """The article's rows first, then every other backend any machine ran, by name."""
    seen = {b for c in cols for b in c.cells}
    return [b for b in ARTICLE_ORDER if b in seen] + sorted(seen - set(ARTICLE_ORDER))


# ---------------------------------------------------------------- Markdown


def cell_text(col: Column, backend: str) -> str:
    cell = col.cells.get(backend)
    if cell is None:
        return DASH
    speedup = col.speedup(backend)
    ratio = DASH if speedup is None else f"{speedup:.1f}x" if speedup < 10 else f"{speedup:.0f}x"
    if cell.speedup is not None and BASELINE in col.cells:
        ratio = speedup_ci(*cell.speedup)
    seconds = (
        f"{cell.low_s:g}-{cell.high_s:g} s"
        if col.name == ARTICLE
        else seconds_ci(cell.epoch_s, cell.low_s, cell.high_s)
        if cell.interval
        else f"{_s(cell.epoch_s)} s"
    )
    return f"{seconds}{VERDICT_MARKS[cell.verdict][0]} · {ratio} · {cell.val_acc:.3f}"


def markdown(cols: list[Column]) -> str:
    rows = backend_order(cols)
    out = [
        "# Every machine side by side",
        "",
        "Each cell: steady seconds per epoch (train + validation pass) · speed-up over "
        f"`{BASELINE}` on the same machine · val_acc after the last epoch. Brackets: the 95% "
        "confidence interval over randomized rounds (s/epoch: geometric mean; speed-up: "
        "paired within each round); machines measured before rounds were randomized have "
        f"none. {DASH}: the machine did not run that backend.",
        *_legend(cols),
        "",
        "| backend | " + " | ".join(c.name for c in cols) + " |",
        "|---|" + "---|" * len(cols),
    ]
    for backend in rows:
        out.append(f"| `{backend}` | " + " | ".join(cell_text(c, backend) for c in cols) + " |")
    out += [
        "",
        "## Does the article's ordering hold?",
        "",
        "The article's rows, slowest to fastest: "
        + " > ".join(f"`{b}`" for b in ARTICLE_ORDER)
        + ".",
    ]
    for col in cols[1:]:
        holds = col.article_order_holds()
        verdict = {True: "yes", False: "no", None: f"{DASH} (not all three rows ran)"}[holds]
        out.append(f"- {col.name}: {verdict}")
    local = cols[-1]
    if local.name.startswith((LOCAL, COMMITTED)) and len(cols) > 2:
        out += [
            "",
            "## How far this machine is from the others",
            "",
            "Median, over the backends both ran, of the reference's s/epoch over this "
            "machine's: above 1, this machine is faster.",
            "",
        ]
        out += _distance_lines(cols)
    out += ["", "## The machines", ""]
    out += [f"- **{c.name}**: {c.about}" for c in cols]
    out += ["", "![steady s/epoch per backend and machine](machines.png)", ""]
    return "\n".join(out)


def _legend(cols: list[Column]) -> list[str]:
    """What each verdict mark present in the table means."""
    present = {cell.verdict for col in cols[1:] for cell in col.cells.values()}
    lines = [
        f"- {mark} {word}: {meaning}."
        for word, (mark, meaning) in VERDICT_MARKS.items()
        if word in present and mark
    ]
    return ["", *lines] if lines else []


def _distance_lines(cols: list[Column]) -> list[str]:
    """This machine (the last column) against each reference machine."""
    last, others = cols[-1], cols[1:-1]
    lines = []
    for other in others:
        if last.full != other.full:
            lines.append(
                f"- {last.name} vs {other.name}: {DASH} (different run sizes: see "
                '"The machines"; only the speed-ups within each column compare)'
            )
            continue
        shared = [b for b in last.cells if b in other.cells]
        if not shared:
            lines.append(f"- {last.name} vs {other.name}: {DASH} (no backend in common)")
            continue
        ratio = statistics.median(other.cells[b].epoch_s / last.cells[b].epoch_s for b in shared)
        lines.append(f"- {last.name} vs {other.name}: {ratio:.2f}x over {len(shared)} backends")
    return lines


def _s(seconds: float) -> str:
    """About three significant digits."""
    return (
        f"{seconds:.1f}"
        if seconds >= 10
        else f"{seconds:.2f}"
        if seconds >= 1
        else (f"{seconds:#.3g}")
    )


# ---------------------------------------------------------------- the plot


def png(cols: list[Column]) -> bytes:
    """Grouped bars, log scale: per backend one bar per machine (the article: its range);
    a machine without the backend gets a dash at the axis, not a zero-height bar."""
    from matplotlib.figure import Figure  # no pyplot: no global state, no display

    rows = backend_order(cols)
    fig = Figure(figsize=(max(7.0, 1.4 * len(rows) + 2), 5.0), dpi=100, layout="constrained")
    ax = fig.subplots()
    width = 0.8 / len(cols)
    floor = min(c.low_s for col in cols for c in col.cells.values()) / 2
    for j, col in enumerate(cols):
        xs = [i - 0.4 + width * (j + 0.5) for i in range(len(rows))]
        color = "0.75" if col.name == ARTICLE else f"C{j}"
        for x, backend in zip(xs, rows):
            cell = col.cells.get(backend)
            if cell is None:
                ax.annotate(
                    DASH,
                    (x, floor),
                    ha="center",
                    va="bottom",
                    color=color,
                    fontsize=16,
                    fontweight="bold",
                )
                continue
            # max(0, ...): an estimate at the end of its range may pass it by a rounding error
            err = [[max(0.0, cell.epoch_s - cell.low_s)], [max(0.0, cell.high_s - cell.epoch_s)]]
            ax.bar(
                x,
                cell.epoch_s - floor,
                width,
                bottom=floor,
                yerr=err,
                capsize=2,
                color=color,
                hatch="//" if col.name == ARTICLE else None,
                edgecolor="0.4",
                alpha=0.45 if cell.verdict in ("disturbed", "unverified") else 1.0,
            )
            mark = VERDICT_MARKS[cell.verdict][0]
            if mark:  # the verdict above the whisker, as in machines.md
                ax.annotate(mark, (x, cell.high_s), ha="center", va="bottom", fontsize=9)
        ax.bar(0, 0, 0, color=color, label=col.name)  # one legend entry per machine
    ax.set_yscale("log")
    ax.set_ylim(bottom=floor)
    ax.set_xticks(range(len(rows)), rows, rotation=15)
    ax.set_ylabel("steady s/epoch (log; whiskers: 95% interval, or min-max)")
    ax.set_title(
        "Steady epoch time per backend, one bar per machine\n"
        + "; ".join(f"{m} {w}" for w, (m, _) in VERDICT_MARKS.items() if m)
        + " (pale: not a clean number)"
    )
    ax.grid(axis="y", which="both", alpha=0.3)
    fig.legend(fontsize=8, loc="outside lower center", ncols=min(len(cols), 4))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})  # no version: stable bytes
    return buf.getvalue()


def write(
    results_dir: str | Path, metrics_dir: str | Path | None, out_dir: str | Path
) -> list[Column]:
    """Read every machine first, then write machines.md and machines.png together."""
    cols = columns(results_dir, metrics_dir)
    outputs.write_files(
        Path(out_dir), {MACHINES_MD: markdown(cols).encode(), MACHINES_PNG: png(cols)}
    )
    return cols
