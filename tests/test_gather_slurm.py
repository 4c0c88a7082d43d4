"""`mnistbench gather` asks Slurm why a task ended (mnistbench.slurmstate): sacct, else squeue,
else slurmstepd's line in the task's output; and fails, in one line, when no run succeeded.

Slurm here is canned: fake `sacct` and `squeue` on PATH print what Slurm 22.05 prints (rows of
`--parsable2` / `--format` fields as the local cluster of tests/test_slurm.py shows them:
"CANCELLED by 0", "None assigned", a pending array range `5_[3-4]`), and record how they were
called. No real Slurm is needed or asked.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_slurm import _env, _run_dir

from mnistbench import gather, slurmstate

TIME_LIMIT_LINE = (
    "slurmstepd-n1: error: *** JOB 12 ON n1 CANCELLED AT 2026-01-01T00:00:00 DUE TO TIME LIMIT ***"
)
CAT = shutil.which("cat")  # before a test's PATH holds only its fake commands
CANCEL_LINE = "slurmstepd-n2: error: *** JOB 13 ON n2 CANCELLED AT 2026-01-01T00:01:00 ***"


def _fake(bin_dir: Path, name: str, out: str = "", rc: int = 0, err: str = "") -> Path:
    """A fake Slurm command: prints `out` (and `err` on stderr), exits `rc`, and appends its
    arguments, one call a line, to bin_dir/<name>.calls."""
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / f"{name}.out").write_text(out)
    script = bin_dir / name
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> "{bin_dir / name}.calls"\n'
        f'{CAT} "{bin_dir / name}.out"\n' + (f"echo '{err}' >&2\n" if err else "") + f"exit {rc}\n"
    )
    script.chmod(0o755)
    return bin_dir / f"{name}.calls"


def _calls(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _failed_run(runs: Path, node: str, job: str, step: str, code: str) -> Path:
    d = runs / f"amd-epyc-2cpu.{'a' * 12}.{node}.{job}"
    d.mkdir(parents=True)
    (d / "status.txt").write_text(
        f"status=failed\nexit_code={code}\nfailed_step={step}\nnode={node}\njob={job}\n"
        "partition=cpu\nduration_s=70\n"
    )
    (d / "run.log").write_text(f"[mnistbench {job}] {step}\nstopped by SIGTERM\n")
    return d


def _job(runs: Path, job: str, tasks: range) -> None:
    d = runs / "jobs" / f"20260101-000000-{job}"
    d.mkdir(parents=True)
    record = {"job": job, "tasks": [{"task": i, "target": "-p cpu"} for i in tasks]}
    (d / "job.json").write_text(json.dumps(record))
    (runs / "logs").mkdir(exist_ok=True)


@pytest.fixture
def fake_bin(tmp_path, monkeypatch) -> Path:
    """A folder first on PATH, for fake Slurm commands; nothing else of Slurm on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))  # gather runs no other command
    return bin_dir


def test_sacct_says_why_each_task_ended_and_squeue_is_not_asked(tmp_path, fake_bin):
    runs = tmp_path / "runs"
    _run_dir(runs, "amd-epyc-2cpu", "n0", "5_0", {"jax-scan": (0.5, 0.97)}, "a" * 12)
    _failed_run(runs, "n1", "5_1", "train jax-scan (killed by SIGTERM)", "143")
    _failed_run(runs, "n2", "5_2", "params", "1")  # its own failure: Slurm says only FAILED
    _job(runs, "5", range(8))
    sacct = _fake(
        fake_bin,
        "sacct",
        "5_0|mnistbench|COMPLETED|0:0|n0|None\n"
        "5_1|mnistbench|TIMEOUT|0:0|n1|TimeLimit\n"
        "5_2|mnistbench|FAILED|1:0|n2|None\n"
        "5_3|mnistbench|CANCELLED by 0|0:0|None assigned|None\n"
        "5_4|mnistbench|NODE_FAIL|0:0|n4|None\n"
        "5_5|mnistbench|OUT_OF_MEMORY|0:125|n5|None\n"
        "5_[6-7]|mnistbench|PENDING|0:0|None assigned|Priority\n"
        "5_9|someone-else|TIMEOUT|0:0|n9|None\n",
    )
    squeue = _fake(fake_bin, "squeue", "", 1, "squeue: error: must not be asked")

    g = gather.write(runs, None, tmp_path / "out")

    assert _calls(squeue) == []  # sacct answered for every task
    (call,) = _calls(sacct)
    assert "--jobs=5" in call and "--parsable2" in call and "--allocations" in call
    problems = {r.node: r.problem for r in g.failed}
    assert problems["n1"] == (
        "stopped at its time limit (TIMEOUT, from sacct) in step `train jax-scan` (exit 143)"
    )
    assert problems["n2"] == "step `params` failed (exit 1)"  # its own words stand
    said = {m.job: m.slurm.words() for m in g.missing}
    assert said == {
        "5_3": "cancelled before it started (CANCELLED by 0, from sacct)",
        "5_4": "its node failed (NODE_FAIL, from sacct)",
        "5_5": "killed out of memory (OUT_OF_MEMORY, from sacct)",
        "5_6": "still queued (PENDING Priority, from sacct)",
        "5_7": "still queued (PENDING Priority, from sacct)",
    }
    assert [m.job for m in g.active] == ["5_6", "5_7"]
    text = (tmp_path / "out" / "machines.md").read_text()
    assert "- job 5_3 (`-p cpu`): cancelled before it started (CANCELLED by 0, from sacct);" in text
    assert "5 submitted tasks without a run (2 still queued or running)" in text
    assert "killed by SIGTERM" not in text


def test_without_accounting_squeue_answers_and_a_task_it_does_not_list_is_not_queued(
    tmp_path, fake_bin
):
    runs = tmp_path / "runs"
    _failed_run(runs, "n1", "6_0", "download (killed by SIGTERM)", "143")
    _job(runs, "6", range(4))
    sacct = _fake(fake_bin, "sacct", "", 1, "Slurm accounting storage is disabled")
    squeue = _fake(
        fake_bin,
        "squeue",
        "6_1|mnistbench|CANCELLED|n2|None\n"
        "6_0|mnistbench|CANCELLED|n1|None\n"
        "6_2|mnistbench|RUNNING|n1|None\n"
        "7_0|mnistbench|PENDING||Resources\n",  # another job, not asked about
    )
    g = gather.gather(runs, None)
    assert len(_calls(sacct)) == 1
    (call,) = _calls(squeue)
    assert "--states=all" in call and "--array" in call and "--name=mnistbench" in call
    (run,) = g.failed
    assert (
        run.problem
        == "cancelled while running (CANCELLED, from squeue) in step `download` (exit 143)"
    )
    said = {m.job: m.slurm.words() for m in g.missing}
    assert said == {
        "6_1": "cancelled while running (CANCELLED, from squeue)",
        "6_2": "still running (RUNNING, from squeue)",
        "6_3": "not known to Slurm (squeue: not queued, not running)",
    }
    assert not any("still" in w for j, w in said.items() if j != "6_2")


def test_without_sacct_or_squeue_slurmstepds_line_in_the_output_says_why(tmp_path, fake_bin):
    runs = tmp_path / "runs"
    _failed_run(runs, "n1", "12_0", "train torch-tensor (killed by SIGTERM)", "143")
    _failed_run(runs, "n3", "12_2", "build-tfds (killed by SIGTERM)", "143")  # no output
    _job(runs, "12", range(3))
    (runs / "logs" / "12_0.out").write_text(f"[mnistbench 12_0 on n1] train\n{TIME_LIMIT_LINE}\n")
    (runs / "logs" / "12_1.out").write_text(f"[mnistbench 12_1 on n2] download\n{CANCEL_LINE}\n")
    g = gather.write(runs, None, tmp_path / "out")  # PATH: neither sacct nor squeue
    problems = {r.node: r.problem for r in g.failed}
    assert problems["n1"] == (
        "stopped at its time limit (TIMEOUT, from its output, logs/12_0.out) in step "
        "`train torch-tensor` (exit 143)"
    )
    assert problems["n3"].startswith("stopped by SIGTERM in step `build-tfds` (exit 143): scancel")
    (missing,) = g.missing
    assert (
        missing.slurm.words()
        == "cancelled while running (CANCELLED, from its output, logs/12_1.out)"
    )
    text = (tmp_path / "out" / "machines.md").read_text()
    assert f"`logs/12_1.out`: `{CANCEL_LINE}`" in text
    assert "| failed | 70 s | — |" in text  # a run that did not record its code


def test_every_run_shows_the_code_it_ran_and_the_image(tmp_path, fake_bin):
    runs = tmp_path / "runs"
    commit = "0123456789abcdef0123456789abcdef01234567"
    for job, extra in (
        ("9_0", f"revision={commit}+modified\nimage=venv\n"),
        ("9_1", f"revision={commit}\nimage=mnistbench:cpu\n"),
        ("9_2", "revision=unknown (no git on n3)\nimage=venv\n"),
    ):
        d = _failed_run(runs, f"n{job[-1]}", job, "params", "1")
        (d / "status.txt").write_text((d / "status.txt").read_text() + extra)
    text = gather.markdown(gather.gather(runs, None, slurm=False), runs)
    assert "| failed | 70 s | `0123456789ab`+modified |" in text
    assert "| failed | 70 s | `0123456789ab` (mnistbench:cpu) |" in text
    assert "| failed | 70 s | unknown (no git on n3) |" in text


@pytest.mark.parametrize(
    "line, state",
    [
        (TIME_LIMIT_LINE, "TIMEOUT"),
        (CANCEL_LINE, "CANCELLED"),
        (
            "slurmstepd: error: *** JOB 3 ON n CANCELLED AT 2026-01-01T00:00:00 DUE TO PREEMPTION ***",
            "PREEMPTED",
        ),
        (
            "slurmstepd: error: *** JOB 3 ON n CANCELLED AT 2026-01-01T00:00:00 DUE TO NODE "
            "FAILURE, SEE SLURMCTLD LOG FOR DETAILS ***",
            "NODE_FAIL",
        ),
        (
            "slurmstepd: error: Detected 1 oom-kill event(s) in StepId=3.batch. Some of your "
            "processes may have been killed by the cgroup out-of-memory handler.",
            "OUT_OF_MEMORY",
        ),
    ],
)
def test_slurmstepds_lines_are_read_as_slurms_states(line, state):
    found = slurmstate.from_output(["[mnistbench 3_0 on n] train", line, "done"], "x.out")
    assert found is not None and found.state == state
    assert slurmstate.from_output(["[mnistbench 3_0 on n] train", "error: no"], "x.out") is None


@pytest.mark.parametrize(
    "job_id, tasks",
    [
        ("5_3", ["5_3"]),
        ("5", ["5_0"]),  # no array: the batch script names it <job>_0
        ("5_[2-4,7%2]", ["5_2", "5_3", "5_4", "5_7"]),
        ("5.batch", []),
    ],
)
def test_array_ids_as_sacct_and_squeue_write_them(job_id, tasks):
    assert slurmstate._tasks_of(job_id) == tasks


def test_only_slurm_ids_are_asked_about(fake_bin):
    """Runs made outside Slurm (MNISTBENCH_JOB=local) are never asked about."""
    sacct = _fake(fake_bin, "sacct", "")
    assert slurmstate.ask(["local_0", "20260101T1200_0"]) == {}
    assert _calls(sacct) == []


def _gather_cli(*args: str, path: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mnistbench", "gather", *args],
        env=_env(PATH=path),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_gather_says_in_one_line_when_no_run_succeeded_and_writes_the_report(tmp_path, fake_bin):
    runs = tmp_path / "runs"
    _failed_run(runs, "n1", "8_0", "params", "1")
    _job(runs, "8", range(3))
    sacct = _fake(fake_bin, "sacct", "8_2|mnistbench|PENDING|0:0|None assigned|Priority\n")
    path = f"{fake_bin}:{os.environ.get('PATH', '')}"
    proc = _gather_cli(str(runs), "--no-references", path=path)
    assert proc.stderr == (
        "error: no run succeeded: 1 failed, 1 submitted task left no run, 1 still queued or "
        f"running (gather again once squeue lists nothing); {runs / 'machines.md'} says why\n"
    )
    assert (runs / "machines.md").is_file()
    assert len(_calls(sacct)) == 1

    # --no-slurm: sacct is not asked; the task is then of unknown state, not "still queued"
    proc = _gather_cli(str(runs), "--no-references", "--no-slurm", path=path)
    assert len(_calls(sacct)) == 1
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: no run succeeded: 1 failed, 2 submitted tasks left")
    assert proc.stderr.count("\n") == 1

    # one run ok: nothing to warn of
    _run_dir(runs, "amd-epyc-2cpu", "n0", "8_1", {"jax-scan": (0.5, 0.97)}, "a" * 12)
    proc = _gather_cli(str(runs), "--no-references", "--no-slurm", path=path)
    assert proc.returncode == 0 and proc.stderr == ""
