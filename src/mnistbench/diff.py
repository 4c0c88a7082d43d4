"""`mnistbench diff A B`: did a change make a backend faster, with an interval that says
whether the difference is real.

A and B are each a git revision (its metrics/summary.json, read with `git show`), the
workspace (metrics/summary.json on disk), or a results folder (results/<machine>/, or any
folder holding summary.json). Per backend both sides give their rounds' s/epoch
(summary.json's rounds_s); B over A is the ratio of their geometric means with Welch's 95%
interval on the logs (mnistbench.stats): under 1, B is faster. The verdict is "faster" or
"slower" when the interval excludes 1, else "no significant difference".

The two sides were measured at different moments, so nothing pairs their rounds: the machine's
drift between the two runs is not cancelled, only the drift within each run is counted. That
is what `dvc metrics diff` cannot say at all: it subtracts two numbers.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnistbench import layout, stats
from mnistbench.errors import UserError

WORKSPACE = "workspace"  # B's default: the metrics/ on disk


class DiffError(UserError, ValueError):
    """A side that cannot be read; the message names it and why."""


@dataclass(frozen=True)
class Row:
    backend: str
    a_s: float | None  # each side's estimate (geometric mean over rounds), s/epoch
    b_s: float | None
    change: stats.Estimate | None  # B over A; None when a side has no rounds of it
    verdict: str


def read_side(side: str, repo: str | Path = ".") -> dict[str, Any]:
    """summary.json of a folder, the workspace, or a git revision (in that order of lookup)."""
    folder = Path(side)
    if side == WORKSPACE:
        return _read_file(Path(repo) / layout.METRICS_ROOT / layout.SUMMARY_FILE, side)
    if folder.is_dir():
        for candidate in (
            folder / layout.SUMMARY_FILE,
            folder / layout.METRICS_ROOT / layout.SUMMARY_FILE,
        ):
            if candidate.is_file():
                return _read_file(candidate, side)
        raise DiffError(
            f"{side}: a folder without {layout.SUMMARY_FILE} (nor metrics/{layout.SUMMARY_FILE})"
        )
    spec = f"{side}:{layout.METRICS_ROOT}/{layout.SUMMARY_FILE}"
    done = subprocess.run(
        ["git", "show", spec], cwd=repo, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        why = (done.stderr.strip().splitlines() or ["git failed"])[-1]
        raise DiffError(
            f"{side}: neither a folder nor a git revision with {spec.split(':', 1)[1]} ({why})"
        )
    return _parse(done.stdout, side)


def _read_file(path: Path, side: str) -> dict[str, Any]:
    if not path.is_file():
        raise DiffError(f"{side}: {path} missing (run `make repro` first)")
    try:
        return _parse(path.read_text(), side)
    except (OSError, UnicodeDecodeError) as e:
        raise DiffError(f"{side}: {path}: {e}") from e


def _parse(text: str, side: str) -> dict[str, Any]:
    try:
        raw = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise DiffError(f"{side}: summary.json is not valid JSON ({e})") from e
    if not isinstance(raw, dict) or not isinstance(raw.get("backends"), dict):
        raise DiffError(f"{side}: summary.json has no backends object")
    return raw


def rounds_of(summary: dict[str, Any], backend: str) -> list[float]:
    """The backend's clean rounds' s/epoch (an empty list from summaries without rounds)."""
    row = summary["backends"].get(backend)
    values = row.get("rounds_s") if isinstance(row, dict) else None
    if not isinstance(values, list):
        return []
    return [
        float(v) for v in values if isinstance(v, int | float) and not isinstance(v, bool) and v > 0
    ]


def compare_sides(a: dict[str, Any], b: dict[str, Any]) -> list[Row]:
    """Per backend both sides ran (A's order, then B's new ones), B over A."""
    names = [n for n in a["backends"] if n in b["backends"]]
    rows = []
    for name in names:
        ra, rb = rounds_of(a, name), rounds_of(b, name)
        if not ra or not rb:
            rows.append(Row(name, None, None, None, "no rounds recorded on one side"))
            continue
        change = stats.welch_ratio(ra, rb)
        rows.append(
            Row(name, stats.geometric(ra).value, stats.geometric(rb).value, change, verdict(change))
        )
    return rows


def verdict(change: stats.Estimate) -> str:
    if change.low is None:
        return "no interval (one round on a side)"
    if change.high < 1:
        return "faster"
    if change.low > 1:
        return "slower"
    return "no significant difference"


def render(a_name: str, b_name: str, rows: list[Row]) -> str:
    """The table and one line that answers the question."""
    from mnistbench.compare.fmt import seconds

    width = max([len(r.backend) for r in rows] + [7])
    out = [
        f"s/epoch, {b_name} (B) over {a_name} (A): ratio of geometric means over rounds, "
        "95% interval (Welch); under 1: B is faster",
        "",
    ]
    for r in rows:
        if r.change is None:
            out.append(f"{r.backend:<{width}}  {r.verdict}")
            continue
        c = r.change
        interval = f" ({c.low:.3f}-{c.high:.3f})" if c.low is not None else ""
        out.append(
            f"{r.backend:<{width}}  {seconds(r.a_s)} -> {seconds(r.b_s)} s  "
            f"{c.value:.3f}x{interval}  {r.verdict}"
        )
    real = [r for r in rows if r.verdict in ("faster", "slower")]
    compared = [r for r in rows if r.change is not None]
    if not compared:
        return "\n".join(
            [
                *out,
                "",
                "No backend has rounds on both sides: nothing to compare (a side made "
                "before rounds were recorded, or without common backends).",
            ]
        )
    out += [
        "",
        f"{len(real)} of {len(compared)} backends compared differ beyond the noise"
        + (": " + ", ".join(f"{r.backend} {r.verdict}" for r in real) if real else "")
        + ".",
    ]
    return "\n".join(out)
