"""`mnistbench gather`: a cluster's runs as one cross-machine report (docs/cluster.md).

RUNS_DIR is the shared folder of scripts/slurm/: one folder per task of mnistbench.sbatch
(status.txt, run.log, and for a finished run machine.json and summary.json, read with
report.py's own functions), and jobs/*/job.json from submit.py (each task's target).

The report is `mnistbench report`'s, machines.md and machines.png, with one column per
machine kind: the runs with the same fingerprint and the same run settings (report.describe
names both). A kind run on several nodes is one column whose cell pools every clean round of
its nodes (the geometric mean with its 95% interval, speed-ups paired within each node's
rounds); runs made before rounds give the median over the nodes and their min-max. Below the
table: each node's own number per kind, min-max and spread (how reproducible the kind is),
every run (node, job, status, time), each failed run with its node and the last line of its
log, and each submitted task that left no run at all. Why a task
ended is asked of Slurm (mnistbench.slurmstate: sacct, else squeue, else slurmstepd's line in
the task's output): a time limit, scancel, a lost node, or still queued or running.

Every file here was written by another user or node: gather follows no symbolic link (a run
folder that is a link is listed, not read; a file that is one is not opened), opens regular
files only (a FIFO would wait forever), caps what it reads, and checks summary.json,
machine.json and job.json field by field before report.py formats them. A bad run is listed
as failed, saying which file and why; a bad job.json stops gather with one line naming it.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from mnistbench import outputs, report, slurmstate, stats
from mnistbench.errors import UserError
from mnistbench.layout import MACHINE_FILE, MACHINES_MD, MACHINES_PNG, SUMMARY_FILE

STATUS = "status.txt"  # written last by mnistbench.sbatch, one key=value per line
LOG = "run.log"
JOBS = "jobs"  # submit.py's records: jobs/<time>-<pid>/job.json
SLURM_LOGS = "logs"  # Slurm's output of each task: logs/<job>_<task>.out
DASH = report.DASH
MAX_BYTES = report.MAX_BYTES  # any record here is a few kB, as report's are


class GatherError(UserError, ValueError):
    """Nothing to gather, or a record that cannot be read; the message names the path."""


@dataclass(frozen=True)
class Run:
    folder: Path
    status: dict[str, str]
    machine: dict  # machine.json ({} when the run has none)
    column: report.Column | None  # its own numbers; None when it failed
    problem: str = ""  # why it failed, in words
    # per backend its steady s/epoch in each of the run's rounds (None: that round's run was
    # disturbed or missing), as summary.json's rounds_s: what a kind's runs pool
    rounds: dict[str, list[float | None]] = field(default_factory=dict)

    @property
    def node(self) -> str:
        return self.status.get("node") or self.folder.name

    @property
    def job(self) -> str:
        return self.status.get("job", "?")

    @property
    def slurm_id(self) -> str:
        """The task's id for Slurm: <array job>_<task> (a requeued run's .restartN left out)."""
        return self.job.split(".restart")[0]


@dataclass(frozen=True)
class Kind:
    """The runs of one machine kind, as one column."""

    column: report.Column
    runs: tuple[Run, ...]


@dataclass(frozen=True)
class Missing:
    """A task submit.py recorded that left no run folder."""

    job: str  # <array job>_<task>
    target: str
    slurm_log: Path
    slurm: slurmstate.SlurmState | None = None  # why it has no run, as Slurm says


@dataclass(frozen=True)
class Gathered:
    columns: list[report.Column]  # the article, the references, then the kinds
    kinds: list[Kind]
    runs: list[Run]
    missing: list[Missing]

    @property
    def failed(self) -> list[Run]:
        return [r for r in self.runs if r.column is None]

    @property
    def active(self) -> list[Missing]:
        """Submitted tasks Slurm says are still queued or running."""
        return [m for m in self.missing if m.slurm is not None and m.slurm.active]


# ---------------------------------------------------------------- reading, untrusted


def open_regular(path: Path) -> int:
    """report.open_regular (a regular file, no link followed, no FIFO waited on), GatherError."""
    return report.open_regular(path, GatherError)


def read_bytes(path: Path, limit: int = MAX_BYTES) -> bytes:
    """report.read_bytes: a regular file's bytes, refused over `limit`; GatherError."""
    return report.read_bytes(path, limit, GatherError)


def read_json(path: Path) -> dict:
    """report.read_json: a JSON object from a regular file; GatherError naming the file."""
    return report.read_json(path, GatherError)


def read_status(path: Path) -> dict[str, str]:
    """status.txt: `key=value` lines; the value is the rest of the line after the first `=`."""
    try:
        lines = read_bytes(path).decode().splitlines()
    except UnicodeDecodeError as e:
        raise GatherError(f"{path}: unreadable ({e})") from e
    return dict(line.split("=", 1) for line in lines if "=" in line)


def last_line(path: Path, tail_bytes: int = 4096) -> str:
    """The last non-empty line of a log (its last few kB only: logs can be long); a log that
    is a link, is in a linked folder (a run folder, logs/) or is not a regular file is not read."""
    if path.parent.is_symlink():
        return f"{DASH} (not read: {path.parent.name} is a symbolic link)"
    try:
        lines = tail_lines(path, tail_bytes)
    except GatherError as e:
        return f"{DASH} ({path.name}: {str(e).removeprefix(f'{path}: ')})"
    except OSError:
        return f"{DASH} (no {path.name})"
    return next((line.strip() for line in reversed(lines) if line.strip()), f"{DASH} (empty)")


def tail_lines(path: Path, tail_bytes: int) -> list[str]:
    """The lines of a regular file's last `tail_bytes` (open_regular: GatherError, OSError)."""
    with os.fdopen(open_regular(path), "rb") as f:
        f.seek(max(0, f.seek(0, 2) - tail_bytes))
        return f.read().decode(errors="replace").splitlines()


# ---------------------------------------------------------------- runs and jobs


def read_run(folder: Path) -> Run:
    """One task's folder; a run whose files cannot be read counts as failed, saying why."""
    try:
        status = read_status(folder / STATUS)
    except GatherError as e:
        return Run(folder, {}, {}, None, str(e))
    try:
        machine = read_json(folder / MACHINE_FILE)
    except GatherError:
        machine = {}
    if status.get("status") != "ok":
        step = status.get("failed_step") or "?"
        why = f"step `{step}` failed (exit {status.get('exit_code', '?')})"
        return Run(folder, status, machine, None, why)
    try:
        # checked here, then read again by report.machine_column from the same paths, with the
        # same reader (a file swapped for a link in between is refused there too)
        summary = read_json(folder / SUMMARY_FILE)
        report.check_summary(summary, folder / SUMMARY_FILE)
        report.check_machine(read_json(folder / MACHINE_FILE), folder / MACHINE_FILE)
        column = report.machine_column(folder.name, folder / SUMMARY_FILE, folder / MACHINE_FILE)
        rounds = read_rounds(summary, folder / SUMMARY_FILE)
    except (GatherError, report.ReportError) as e:
        return Run(folder, status, machine, None, f"status ok, but {e}")
    return Run(folder, status, machine, column, rounds=rounds)


def read_rounds(summary: dict, path: Path) -> dict[str, list[float | None]]:
    """summary.json's rounds_s per backend (a run made before rounds has none: {})."""
    out = {}
    for backend, row in summary["backends"].items():
        rounds = row.get("rounds_s")
        if rounds is None:
            continue
        if not isinstance(rounds, list) or not all(
            v is None or (type(v) in (int, float) and 0 < v < math.inf) for v in rounds
        ):
            raise GatherError(f"{path}: backends.{backend}.rounds_s must be a list of times > 0")
        out[backend] = rounds
    return out


def read_runs(runs_dir: Path) -> list[Run]:
    """Every run folder: a real folder (not hidden: those are runs still being copied) with a
    status.txt entry. A link to a folder is listed as failed, not read: it may lead anywhere,
    or to a run already counted."""
    runs = []
    for entry in sorted(runs_dir.iterdir()):
        if entry.name.startswith(".") or entry.name in (JOBS, SLURM_LOGS):
            continue
        if entry.is_symlink() and entry.is_dir():
            problem = f"{entry}: a symbolic link (to {os.readlink(entry)}): not followed"
            runs.append(Run(entry, {}, {}, None, problem))
        elif _is_real_dir(entry) and os.path.lexists(entry / STATUS):
            runs.append(read_run(entry))
    return runs


def _is_real_dir(path: Path) -> bool:
    return not path.is_symlink() and path.is_dir()


def missing_tasks(runs_dir: Path, runs: list[Run]) -> list[Missing]:
    """Tasks of every jobs/*/job.json with no run folder (a requeued task's counts)."""
    reported = {r.job.split(".restart")[0] for r in runs}
    missing = []
    for record_path in job_records(runs_dir):
        record = read_json(record_path)
        for task in check_tasks(record, record_path):
            job = f"{record.get('job')}_{task['task']}"
            if job not in reported:
                log = runs_dir / SLURM_LOGS / f"{job}.out"
                missing.append(Missing(job, str(task.get("target", "?")), log))
    return missing


def job_records(runs_dir: Path) -> list[Path]:
    """jobs/<submission>/job.json of every real folder under a real jobs/ (no link followed)."""
    jobs = runs_dir / JOBS
    if jobs.is_symlink():  # refused, not skipped: its tasks would silently go unlisted
        raise GatherError(f"{jobs}: a symbolic link (to {os.readlink(jobs)}): not followed")
    if not jobs.is_dir():
        return []
    folders = (d for d in sorted(jobs.iterdir()) if _is_real_dir(d))
    return [d / "job.json" for d in folders if os.path.lexists(d / "job.json")]


def check_tasks(record: dict, path: Path) -> list[dict]:
    """job.json's tasks as submit.py writes them: a list of objects, each with an int `task`."""
    tasks = record.get("tasks", [])
    ok = isinstance(tasks, list) and all(
        isinstance(t, dict) and report.is_int(t.get("task")) for t in tasks
    )
    what = 'a list of {"task": <int>, "target": ...} (as submit.py writes)'
    report.need(ok, path, "tasks", what, tasks, GatherError)
    job = record.get("job", "")
    report.need(isinstance(job, (str, int)), path, "job", "a job id", job, GatherError)
    return tasks


# ---------------------------------------------------------------- what Slurm says


def slurm_states(runs_dir: Path, ids: list[str], ask: bool) -> dict[str, slurmstate.SlurmState]:
    """Why each task ended: sacct or squeue (when `ask`), else slurmstepd's line in the task's
    output, RESULTS/logs/<id>.out (in a real logs/ folder)."""
    states = slurmstate.ask(ids) if ask else {}
    logs = runs_dir / SLURM_LOGS
    if logs.is_symlink():
        return states
    for task in ids:
        if task in states and states[task].state:
            continue
        try:
            lines = tail_lines(logs / f"{task}.out", 65536)
        except (GatherError, OSError):
            continue
        found = slurmstate.from_output(lines, f"its output, {SLURM_LOGS}/{task}.out")
        if found is not None:
            states[task] = found
    return states


SIGNALLED = re.compile(r"(.*) \(killed by (SIG[A-Z]+)\)")  # the batch script's failed_step


def explain(run: Run, state: slurmstate.SlurmState | None) -> Run:
    """A failed run's problem in Slurm's words where Slurm stopped it (its time limit,
    scancel, a lost node, the OOM killer): the batch script only saw a signal."""
    if run.column is not None or not run.status:
        return run
    step = run.status.get("failed_step") or "?"
    signalled = SIGNALLED.fullmatch(step)
    step_name = signalled.group(1) if signalled else step
    code = run.status.get("exit_code", "?")
    if state is not None and state.stopped:
        problem = f"{state.words()} in step `{step_name}` (exit {code})"
    elif signalled:
        problem = (
            f"stopped by {signalled.group(2)} in step `{step_name}` (exit {code}): scancel or "
            "its time limit; neither sacct, squeue nor its Slurm output says which"
        )
    else:
        return run
    return dataclasses.replace(run, problem=problem)


# ---------------------------------------------------------------- kinds


def kinds(runs: list[Run]) -> list[Kind]:
    """The finished runs grouped by fingerprint and run settings, one column each. Kinds that
    share a machine name (another image, other versions, other params) get the fingerprint id
    in their header, and a number when that is shared too."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        if run.column is not None:
            groups.setdefault(run.column.about, []).append(run)
    found = sorted(groups.items(), key=lambda item: (_machine_name(item[1]), item[0]))
    names = [_machine_name(group) for _, group in found]
    out: list[Kind] = []
    for name, (about, group) in zip(names, found):
        if names.count(name) > 1:
            name = f"{name} [{group[0].machine.get('id', '?')}]"
            taken = sum(1 for k in out if k.column.name.startswith(name))
            name += f" #{taken + 1}" if taken else ""
        if len(group) > 1:
            nodes = len({r.node for r in group})  # runs of one node are not reproductions
            name += f" ({len(group)} runs on {nodes} node{'s' if nodes > 1 else ''})"
        out.append(Kind(combine(name, about, group), tuple(group)))
    return out


def _machine_name(group: list[Run]) -> str:
    return str(group[0].machine.get("name", "?"))


def combine(name: str, about: str, group: list[Run]) -> report.Column:
    """One column from one kind's runs. One run: its own cells. Several: per backend, every
    clean round of every run pooled, as one run's rounds are (mnistbench.stats): the geometric
    mean with its 95% interval, the speed-up paired within each run's rounds; val_acc the
    median. Runs made before rounds: the median over the runs, the range their min-max."""
    nodes = ", ".join(r.node for r in group)
    about = f"{about}; {len(group)} run{'s' if len(group) > 1 else ''} on {nodes}"
    if len(group) == 1:
        return report.Column(name, about, group[0].column.cells)
    cells = {}
    for backend in sorted({b for r in group for b in r.column.cells}):
        ran = [r for r in group if backend in r.column.cells]
        got = [r.column.cells[backend] for r in ran]
        clean = [c for c in got if c.verdict != "disturbed"] or got  # as compare does: a
        median_acc = statistics.median(c.val_acc for c in clean)  # disturbed run counts
        verdict = max((c.verdict for c in clean), key=VERDICT_RANK.index)  # only when all were
        pooled = _pooled(ran, backend)
        if pooled is not None:
            est, speedup = pooled
            cells[backend] = report.Cell(
                est.value,
                est.low if est.low is not None else est.value,
                est.high if est.high is not None else est.value,
                median_acc,
                verdict=verdict,
                interval=est.low is not None,
                speedup=speedup,
            )
            continue
        times = [c.epoch_s for c in clean]
        cells[backend] = report.Cell(
            statistics.median(times), min(times), max(times), median_acc, verdict=verdict
        )
    return report.Column(name, about, cells)


def _pooled(
    ran: list[Run], backend: str
) -> tuple[stats.Estimate, tuple[float, float | None, float | None] | None] | None:
    """backend's rounds over every run that has them, and its speed-up over the baseline
    paired within each run's rounds; None when a run lacks rounds (made before them)."""
    if not all(backend in r.rounds for r in ran):
        return None
    times = [t for r in ran for t in r.rounds[backend] if t]
    if not times:
        return None
    estimate = stats.geometric(times)
    base = [r for r in ran if report.BASELINE in r.rounds]  # each run's rounds pair in it
    try:
        ratio = stats.paired_ratio(
            [t for r in base for t in r.rounds[report.BASELINE]],
            [t for r in base for t in r.rounds[backend]],
        )
    except ValueError:  # no round with clean runs of both
        return estimate, None
    return estimate, (ratio.value, ratio.low, ratio.high)


# a combined cell carries the worst verdict of the runs it combines, in this order
VERDICT_RANK = ("quiet", "unsteady", "unstable", "unverified", "disturbed")


# ---------------------------------------------------------------- the report


def none_succeeded(g: Gathered, written: Path) -> str | None:
    """The line to say when no run succeeded (the report is written all the same): how many
    failed, left no run, or are still queued or running. None when some run succeeded."""
    if g.kinds:
        return None
    parts = [f"{len(g.failed)} failed"] if g.failed else []
    ended = len(g.missing) - len(g.active)
    if ended:
        parts.append(f"{ended} submitted task{'s' if ended > 1 else ''} left no run")
    if g.active:
        n = len(g.active)
        parts.append(f"{n} still queued or running (gather again once squeue lists nothing)")
    return f"no run succeeded: {', '.join(parts)}; {written / MACHINES_MD} says why"


def gather(runs_dir: str | Path, results_dir: str | Path | None, slurm: bool = True) -> Gathered:
    """Read every run and job record; the columns: the article, the references, the kinds.
    slurm: ask sacct and squeue why tasks ended (else only their Slurm output is read)."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise GatherError(f"{runs_dir}: no such folder")
    runs = read_runs(runs_dir)
    missing = missing_tasks(runs_dir, runs)
    if not runs and not missing:
        raise GatherError(
            f"{runs_dir}: no runs (folders with {STATUS}) and no jobs/*/job.json: submit with "
            "scripts/slurm/submit.py, and gather once the tasks have ended"
        )
    failed_ids = [r.slurm_id for r in runs if r.column is None and r.status]
    states = slurm_states(runs_dir, [*failed_ids, *(m.job for m in missing)], slurm)
    runs = [explain(r, states.get(r.slurm_id)) if r.column is None else r for r in runs]
    missing = [Missing(m.job, m.target, m.slurm_log, states.get(m.job)) for m in missing]
    found = kinds(runs)
    base = (
        report.columns(results_dir, None) if results_dir is not None else [report.article_column()]
    )
    return Gathered([*base, *(k.column for k in found)], found, runs, missing)


def markdown(g: Gathered, runs_dir: Path) -> str:
    ok = len(g.runs) - len(g.failed)
    out = [
        report.markdown(g.columns).rstrip("\n"),
        "",
        "## The cluster's runs",
        "",
        f"Gathered from `{runs_dir}`: {len(g.runs)} runs, {ok} ok, {len(g.failed)} failed; "
        f"{len(g.missing)} submitted tasks without a run"
        + (f" ({len(g.active)} still queued or running)" if g.active else "")
        + ". One column per machine kind (the "
        "same fingerprint and run settings); with several nodes, a cell pools the rounds of "
        "every node (95% interval in brackets).",
    ]
    out += _spread(g.kinds)
    out += ["", "### Every run", "", "| run | node | job | partition | status | time | code |"]
    out.append("|---|---|---|---|---|---|---|")
    for r in g.runs:
        s = r.status
        out.append(
            f"| `{r.folder.name}` | {r.node} | {r.job} | {s.get('partition') or DASH} | "
            f"{'ok' if r.column else 'failed'} | {s.get('duration_s', '?')} s | "
            f"{_code(s)} |"
        )
    if g.failed:
        out += ["", "### Failed runs", ""]
        for r in g.failed:
            out.append(
                f"- **{r.node}** (job {r.job}, partition {r.status.get('partition') or DASH}): "
                f"{r.problem}; the log's last line: `{last_line(r.folder / LOG)}` "
                f"(`{r.folder.name}/{LOG}`)"
            )
    if g.missing:
        out += ["", "### Submitted tasks without a run", ""]
        out.append(
            "Each with what Slurm says of it (sacct, else squeue, else slurmstepd's line in "
            "its output), then the last line of its Slurm output."
        )
        out.append("")
        for m in g.missing:
            said = m.slurm.words() if m.slurm is not None else "Slurm gave no answer"
            out.append(
                f"- job {m.job} (`{m.target}`): {said}; `{SLURM_LOGS}/{m.slurm_log.name}`: "
                f"`{last_line(m.slurm_log)}`"
            )
    return "\n".join(out) + "\n"


def _code(status: dict[str, str]) -> str:
    """The run's code revision (status.txt's revision: a commit, +modified) as 12 hex digits,
    and what ran it when not the venv (an image); a dash when the run did not say."""
    revision = status.get("revision") or DASH
    commit = re.fullmatch(r"([0-9a-f]{12})[0-9a-f]{28}(\+modified)?", revision)
    if commit:
        revision = f"`{commit.group(1)}`{commit.group(2) or ''}"
    image = status.get("image", "")
    return revision if image in ("", "venv") else f"{revision} ({image})"


def _spread(found: list[Kind]) -> list[str]:
    """Per backend and kind of several nodes: min-max over the nodes, and (max-min)/median."""
    several = [k for k in found if len(k.runs) > 1]
    if not several:
        return []
    rows = report.backend_order([k.column for k in several])
    out = [
        "",
        "### Spread across runs",
        "",
        "Each node's steady s/epoch, min-max over the nodes of one kind, and that range over "
        "their median: how reproducible the kind's number is.",
        "",
        "| backend | " + " | ".join(k.column.name for k in several) + " |",
        "|---|" + "---|" * len(several),
    ]
    for backend in rows:
        cells = []
        for k in several:
            times = [r.column.cells[backend].epoch_s for r in k.runs if backend in r.column.cells]
            cells.append(_spread_cell(times))
        out.append(f"| `{backend}` | " + " | ".join(cells) + " |")
    return out


def _spread_cell(times: list[float]) -> str:
    """Each node's steady s/epoch: min-max, that range over their median, how many."""
    if not times:
        return DASH
    if len(times) == 1:
        return f"{times[0]:.3g} s · 1 run"  # one sample: no spread
    low, high = min(times), max(times)
    spread = (high - low) / statistics.median(times)
    return f"{low:.3g}-{high:.3g} s · {spread:.0%} · {len(times)} runs"


def write(
    runs_dir: str | Path,
    results_dir: str | Path | None,
    out_dir: str | Path | None = None,
    slurm: bool = True,
) -> Gathered:
    """Gather, then write machines.md and machines.png together (default: into runs_dir)."""
    g = gather(runs_dir, results_dir, slurm)
    outputs.write_files(
        Path(out_dir if out_dir is not None else runs_dir),
        {
            MACHINES_MD: markdown(g, Path(runs_dir)).encode(),
            MACHINES_PNG: report.png(g.columns),
        },
    )
    return g
