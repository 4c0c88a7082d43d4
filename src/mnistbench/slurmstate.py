"""Why a Slurm task ended, as Slurm tells it: for `mnistbench gather` (docs/cluster.md).

A task that left no run, or one that published a run saying it was stopped by a signal, ended
for a reason only Slurm knows: its time limit (TIMEOUT), scancel (CANCELLED), a lost node
(NODE_FAIL), the out-of-memory killer (OUT_OF_MEMORY), or it has not ended (PENDING, RUNNING).
Asked in this order, the first that answers for a task wins:

1. `sacct` (Slurm's accounting: every job, long after it ended; absent where accounting is not
   configured, "Slurm accounting storage is disabled", and then skipped);
2. `squeue --states=all` (the controller's memory: queued and running tasks, and ended ones
   for MinJobAge, 300 s by default, after they end; a task it does not list is neither queued
   nor running);
3. the task's own Slurm output (RESULTS/logs/<job>_<task>.out), where slurmstepd writes
   `*** JOB <id> ON <node> CANCELLED AT <time> DUE TO TIME LIMIT ***` (or `... CANCELLED AT
   <time> ***` for scancel, `DUE TO PREEMPTION`, `DUE TO NODE FAILURE`) and `Detected <n>
   oom-kill event(s)`.

Only ids Slurm gives (`<array job>_<task>`, digits) are asked about, and only rows whose job
name is mnistbench's (scripts/slurm/ submit under that name) are believed: the same id on
another cluster is another job. Every command is given a time limit; one that is missing,
fails or times out answers nothing.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass

JOB_NAME = "mnistbench"  # scripts/slurm/: sbatch --job-name, and the batch script's #SBATCH
ID = re.compile(r"(\d+)_(\d+)")  # <array job>_<task>, as status.txt and job.json name them
TIMEOUT_S = 60
SACCT = ["sacct", "--allocations", "--parsable2", "--noheader"]
SACCT_FIELDS = "JobID,JobName,State,ExitCode,NodeList,Reason"
SQUEUE = ["squeue", "--noheader", "--array", "--states=all", f"--name={JOB_NAME}"]
SQUEUE_FORMAT = "%i|%j|%T|%N|%r"  # the same fields as SACCT_FIELDS, less ExitCode

# Slurm's state -> what it means for a task, in words
WORDS = {
    "PENDING": "still queued",
    "CONFIGURING": "still running (its node being set up)",
    "RUNNING": "still running",
    "COMPLETING": "still running (ending)",
    "SUSPENDED": "suspended",
    "REQUEUED": "requeued",
    "REQUEUE_HOLD": "requeued and held",
    "TIMEOUT": "stopped at its time limit",
    "NODE_FAIL": "its node failed",
    "OUT_OF_MEMORY": "killed out of memory",
    "PREEMPTED": "preempted",
    "BOOT_FAIL": "its node failed to start",
    "DEADLINE": "not run by its deadline",
    "FAILED": "failed",
    "COMPLETED": "ended",
}
ACTIVE = ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED")
# ended by something outside the task: its own words (a step that failed) say less than these
STOPPED = ("TIMEOUT", "CANCELLED", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL")

# slurmstepd's line in a task's output (slurmstepd's own format strings)
CANCELLED_LINE = re.compile(
    r"\*\*\* (?:JOB|STEP) \S+ ON \S+ CANCELLED AT \S+(?: DUE TO ([A-Z ]+?))?(?:,.*)? \*\*\*"
)
DUE_TO = {
    "TIME LIMIT": "TIMEOUT",
    "PREEMPTION": "PREEMPTED",
    "NODE FAILURE": "NODE_FAIL",
    "JOB REQUEUE": "REQUEUED",
}
OOM_LINE = re.compile(r"Detected \d+ oom-kill event\(s\)")


@dataclass(frozen=True)
class SlurmState:
    state: str  # Slurm's word: TIMEOUT, CANCELLED, PENDING, ... ("" when no one knows)
    source: str  # sacct, squeue, or the output file's name
    detail: str = ""  # "by 1000" (who cancelled), a pending reason, an exit code
    started: bool | None = None  # it was given a node; None: not known

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    @property
    def stopped(self) -> bool:
        """Ended by Slurm or a person, not by the task's own failure."""
        return self.state in STOPPED

    def words(self) -> str:
        """`stopped at its time limit (TIMEOUT, from sacct)`."""
        if not self.state:
            return f"not known to Slurm ({self.source})"
        what = WORDS.get(self.state, self.state.lower().replace("_", " "))
        if self.state == "CANCELLED":
            what = {True: "cancelled while running", False: "cancelled before it started"}.get(
                self.started, "cancelled"
            )
        said = " ".join(w for w in (self.state, self.detail) if w)
        return f"{what} ({said}, from {self.source})"


Runner = Callable[..., subprocess.CompletedProcess]


def ask(ids: Iterable[str], run: Runner = subprocess.run) -> dict[str, SlurmState]:
    """What sacct, else squeue, says of each task id (`<job>_<task>`); ids neither answers
    for are left out. A task squeue does not list while squeue answers is neither queued nor
    running: it gets state "" (not known), source squeue."""
    wanted = sorted({i for i in ids if ID.fullmatch(i)})
    if not wanted:
        return {}
    jobs = sorted({i.split("_")[0] for i in wanted}, key=int)
    found: dict[str, SlurmState] = {}
    rows = _command([*SACCT, f"--jobs={','.join(jobs)}", f"--format={SACCT_FIELDS}"], run)
    for row in rows or []:
        _take(row, "sacct", wanted, found)
    left = [i for i in wanted if i not in found]
    if not left:
        return found
    rows = _command([*SQUEUE, f"--format={SQUEUE_FORMAT}"], run)
    if rows is None:
        return found
    for row in rows:
        _take([*row[:3], "", *row[3:]], "squeue", left, found)  # no ExitCode column
    for i in left:
        found.setdefault(i, SlurmState("", "squeue: not queued, not running"))
    return found


def _command(cmd: list[str], run: Runner) -> list[list[str]] | None:
    """The rows of a Slurm command's `|`-separated output; None when it did not answer."""
    try:
        proc = run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S)
    except (OSError, subprocess.SubprocessError):  # not installed here, timed out
        return None
    if proc.returncode != 0:  # no accounting, no controller, no configuration
        return None
    return [line.split("|") for line in proc.stdout.splitlines() if line.strip()]


def _take(row: list[str], source: str, wanted: list[str], found: dict[str, SlurmState]) -> None:
    """One row (JobID, JobName, State, ExitCode, NodeList, Reason) into `found` for each
    wanted task it covers: a task's own row, an array's pending range (`5_[2-4,7%2]`), or a
    job that is no array at all (`5` for `5_0`, as the batch script names such a job)."""
    if len(row) < 5 or row[1] != JOB_NAME:
        return
    job_id, _, state_text, exit_code, nodes = row[:5]
    reason = row[5] if len(row) > 5 else ""
    for task in _tasks_of(job_id):
        if task not in wanted or task in found:
            continue
        state, _, by = state_text.partition(" ")  # "CANCELLED by 1000"
        state = state.rstrip("+")  # sacct marks a truncated field with "+"
        detail = by.strip()
        if state == "PENDING" and reason and reason != "None":
            detail = reason
        elif state == "FAILED" and exit_code:
            detail = f"exit {exit_code}"
        started = bool(nodes) and nodes not in ("None assigned", "(null)")
        found[task] = SlurmState(state, source, detail, started)


def _tasks_of(job_id: str) -> list[str]:
    """`5_3` -> [5_3]; `5_[2-4,7%2]` -> [5_2, 5_3, 5_4, 5_7]; `5` -> [5_0]."""
    if ID.fullmatch(job_id):
        return [job_id]
    if job_id.isdigit():
        return [f"{job_id}_0"]
    ranged = re.fullmatch(r"(\d+)_\[([\d,\-]+)(?:%\d+)?\]", job_id)
    if not ranged:
        return []
    tasks = []
    for part in ranged.group(2).split(","):
        low, _, high = part.partition("-")
        if low.isdigit() and (not high or high.isdigit()):
            tasks += [f"{ranged.group(1)}_{t}" for t in range(int(low), int(high or low) + 1)]
    return tasks


def from_output(lines: list[str], name: str) -> SlurmState | None:
    """What slurmstepd wrote into a task's output about its end, if anything: the last
    `*** ... CANCELLED AT ... ***` line, or an oom-kill event."""
    for line in reversed(lines):
        cancelled = CANCELLED_LINE.search(line)
        if cancelled:
            due = cancelled.group(1)
            state = DUE_TO.get(due.strip(), "CANCELLED") if due else "CANCELLED"
            return SlurmState(state, name, started=True)
        if OOM_LINE.search(line):
            return SlurmState("OUT_OF_MEMORY", name, started=True)
    return None
