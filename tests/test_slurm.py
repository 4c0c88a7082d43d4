"""Clusters (scripts/slurm/, `mnistbench gather`, docs/cluster.md).

`make test`: the targets submit.py makes tasks of, the batch script run by hand on a node
that fails (published, listed), and the gathered report on canned runs. `make test-all` (or
MNISTBENCH_TEST_ALL=1): a real one-node Slurm started here (scripts/slurm/local_cluster.py),
an array of two tasks in two partitions run through it and gathered; skipped, saying why,
without root or without Slurm (MNISTBENCH_CI_INSTALL_SLURM=1, set by .ci/run only, lets it
apt-get slurm-wlm and munge).
"""

from __future__ import annotations

import importlib.util
import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from test_machines import _machine_dir  # the canned summary.json of the report's own tests

from mnistbench import gather, machine, report

ROOT = Path(__file__).resolve().parents[1]
SLURM = ROOT / "scripts" / "slurm"
BATCH = SLURM / "mnistbench.sbatch"
VENV = Path(sys.executable).parent.parent  # the venv running the tests


def _load(name: str):
    """A script of scripts/slurm/ as a module (registered: its dataclasses need that)."""
    spec = importlib.util.spec_from_file_location(f"slurm_{name}", SLURM / f"{name}.py")
    module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


submit = _load("submit")
local_cluster = _load("local_cluster")


def _env(**extra: str) -> dict[str, str]:
    """This checkout's code in every process the tests start (the venv's editable install
    may point at another clone)."""
    return {**os.environ, "PYTHONPATH": str(ROOT / "src"), "TF_CPP_MIN_LOG_LEVEL": "2", **extra}


# ---------------------------------------------------------------- targets


def test_each_target_is_a_task_and_a_node_list_one_task_per_node():
    expanded = {"node[01-02]": ["node01", "node02"]}
    tasks = submit.tasks_of(
        ["cpu", "-p gpu --gres=gpu:1", "--partition=cpu -w node[01-02] -C avx512"],
        expand=expanded.__getitem__,
    )
    assert [(t.partition, t.node, t.gres, t.features) for t in tasks] == [
        ("cpu", "", "", ""),
        ("gpu", "", "gpu:1", ""),
        ("cpu", "node01", "", "avx512"),
        ("cpu", "node02", "", "avx512"),
    ]
    # the array is submitted in the first task's partition; each other target by scontrol
    updates = [submit.update_command("7", i, t, "cpu") for i, t in enumerate(tasks)]
    assert updates[0] is None
    assert updates[1] == ["scontrol", "update", "JobId=7_1", "Partition=gpu", "Gres=gpu:1"]
    assert updates[3] == [
        "scontrol",
        "update",
        "JobId=7_3",
        "ReqNodeList=node02",
        "Features=avx512",
    ]


@pytest.mark.parametrize(
    "target, message",
    [
        ("--gres=gpu:1", "name its partition"),
        ("-p cpu --time=10", "'--time=10' is not a per-task option"),
        ("-p cpu -w", "-w needs a value"),
    ],
)
def test_a_bad_target_is_one_line_naming_it(target, message):
    with pytest.raises(submit.SubmitError, match=re.escape(message)):
        submit.tasks_of([target], expand=lambda nodes: [nodes])


def test_dry_run_prints_the_held_array_and_each_update(tmp_path, capsys):
    args = ["--results", str(tmp_path / "runs"), "--dry-run", "--no-roofline", "a", "-p b -C x"]
    assert submit.main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("sbatch --parsable --hold --array=0-1 ")
    assert "--partition=a" in lines[0] and "--exclusive" in lines[0]
    assert lines[0].endswith(f"{BATCH} {tmp_path / 'runs'} {(ROOT / 'params.yaml')}")
    assert lines[1:] == [
        "# task 0: as submitted",
        "scontrol update JobId=JOB_1 Partition=b Features=x",
        "scontrol release JOB",
    ]
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------- the batch script, by hand


def _proc_start(pid: int) -> str:
    """A process's start time as the batch script's proc_start reads it (/proc/PID/stat)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()[19]


def test_a_failed_node_is_published_with_its_step_and_listed_by_gather(tmp_path):
    """The script outside Slurm (its SLURM_* variables set by hand), on params that fail in
    the params step: the run still lands in the results folder, whole, and says why. Before it
    starts, it removes the scratch folders of this user's tasks that were killed outright on
    this host (their .owner's pid is gone, or is another process now), and no other."""
    runs, scratch = tmp_path / "runs", tmp_path / "scratch"
    scratch.mkdir()
    host = subprocess.run(["hostname", "-s"], capture_output=True, text=True).stdout.strip()
    dead = subprocess.Popen(["true"])
    dead.wait()
    owners = {
        "stale": f"{host} {dead.pid} 1",  # its task's shell is gone
        "reused": f"{host} {os.getpid()} 1",  # that pid runs, but started at another time
        "running": f"{host} {os.getpid()} {_proc_start(os.getpid())}",
        "other-host": f"elsewhere {dead.pid} 1",
    }
    for name, owner in owners.items():
        (scratch / f"mnistbench-9_{name}.x").mkdir()
        (scratch / f"mnistbench-9_{name}.x" / ".owner").write_text(owner + "\n")
    (scratch / "mnistbench-9_kept.x").mkdir()  # no .owner: a run kept on purpose
    kept_before = sorted(f"mnistbench-9_{n}.x" for n in ("running", "other-host", "kept"))
    env = _env(
        MNISTBENCH_VENV=str(VENV),
        MNISTBENCH_BACKENDS="no-such-backend",
        SLURM_ARRAY_JOB_ID="41",
        SLURM_ARRAY_TASK_ID="3",
        SLURMD_NODENAME="node07",
        SLURM_JOB_PARTITION="gpu",
        TMPDIR=str(scratch),
    )
    env.pop("SLURM_TMPDIR", None)

    def task() -> subprocess.CompletedProcess:  # the batch script, as one array task runs it
        return subprocess.run(
            [str(BATCH), str(runs), "params.yaml"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    proc = task()
    assert proc.returncode == 1, proc.stdout + proc.stderr
    rec = machine.record()
    (run,) = runs.iterdir()  # nothing else: no staging folder left behind
    assert run.name == f"{rec['name']}.{rec['id']}.node07.41_3"
    status = gather.read_status(run / gather.STATUS)
    assert status["status"] == "failed" and status["failed_step"] == "params"
    assert status["exit_code"] == "1" and status["partition"] == "gpu"
    assert gather.last_line(run / gather.LOG).startswith("error: unknown backend(s) no-such")
    assert sorted(p.name for p in scratch.iterdir()) == kept_before  # its own one removed too
    assert proc.stdout.count("removed the scratch folder of a task that ended without") == 2
    assert "params failed (exit 1)" in proc.stdout  # Slurm's output says it too
    # what ran: the venv, and this checkout's commit (+modified: tracked files changed)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    assert status["image"] == "venv"
    assert status["revision"] in (head.stdout.strip(), head.stdout.strip() + "+modified")

    # the same task again (its name taken): refused, the first run untouched, the new one kept
    again = task()
    assert again.returncode == 1 and f"could not write {run}; the run is left in" in again.stdout
    assert [p.name for p in runs.iterdir()] == [run.name]
    assert gather.read_status(run / gather.STATUS) == status
    (kept,) = set(scratch.iterdir()) - {scratch / name for name in kept_before}
    assert (kept / "run" / "status.txt").is_file()
    assert not (kept / ".owner").exists()  # kept on purpose: no later task removes it

    g = gather.write(runs, None)
    assert g.kinds == [] and [r.node for r in g.failed] == ["node07"]
    text = (runs / "machines.md").read_text()
    assert re.search(
        r"\*\*node07\*\* \(job 41_3, partition gpu\): step `params` failed \(exit 1\); "
        r"the log's last line: `error: unknown backend\(s\) no-such-backend",
        text,
    ), text


def test_a_cancelled_node_publishes_what_it_has_and_the_step_it_stopped(tmp_path):
    """scancel and the time limit send SIGTERM to every process of the task, as here to the
    script's process group once it has started a step that runs a while."""
    runs, scratch, out = tmp_path / "runs", tmp_path / "scratch", tmp_path / "slurm.out"
    scratch.mkdir()
    env = _env(MNISTBENCH_VENV=str(VENV), MNISTBENCH_BACKENDS="torch-tensor", TMPDIR=str(scratch))
    with open(out, "w") as f:
        proc = subprocess.Popen(
            [str(BATCH), str(runs), "params.yaml"],
            cwd=ROOT,
            env=env,
            stdout=f,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 120
        while "] download" not in out.read_text() and proc.poll() is None:
            assert time.monotonic() < deadline, out.read_text()
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=60) == 143, out.read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    (run,) = runs.iterdir()
    status = gather.read_status(run / gather.STATUS)
    assert status["status"] == "failed" and status["exit_code"] == "143"
    assert re.fullmatch(
        r"(download|train torch-tensor) \(killed by SIGTERM\)", status["failed_step"]
    )
    assert gather.last_line(run / gather.LOG).endswith("stopped by SIGTERM")
    assert out.read_text().splitlines()[-1].endswith(f"status=failed: {run}")
    assert list(scratch.iterdir()) == []


def test_a_venv_the_submitting_user_cannot_read_is_one_error_line(tmp_path):
    """submit.py checks the venv as the user who submits (every task runs it as that user):
    one line saying so, no traceback. As root, run as nobody (root reads everything)."""
    base = Path(tempfile.mkdtemp(prefix="mnistbench-venv-"))  # reachable by nobody
    try:
        base.chmod(0o755)
        venv = base / "venv"
        (venv / "bin").mkdir(parents=True)
        (venv / "bin" / "python").symlink_to(sys.executable)
        results = base / "runs"
        results.mkdir(mode=0o777)
        results.chmod(0o777)
        params = base / "params.yaml"
        params.write_text((ROOT / "params.yaml").read_text())
        params.chmod(0o644)
        if os.geteuid() == 0:
            venv.chmod(0o700)  # root's: closed to nobody
            as_user = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
            user = pwd.getpwuid(65534).pw_name
        else:
            venv.chmod(0o000)
            as_user, user = [], pwd.getpwuid(os.geteuid()).pw_name
        proc = subprocess.run(
            [*as_user, sys.executable, str(SLURM / "submit.py"), "--results", str(results)]
            + ["--params", str(params), "--venv", str(venv), "cpu"],
            env=_env(HOME=str(base)),
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        (base / "venv").chmod(0o700)
        shutil.rmtree(base)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.startswith(
        f"error: --venv {venv}: cannot be read (Permission denied): every task runs it as {user};"
    ), proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


# ---------------------------------------------------------------- gather, on canned runs


def _run_dir(runs: Path, name: str, node: str, job: str, rows: dict, fingerprint: str) -> Path:
    """A finished task's folder: the report's canned summary.json, a machine.json of the
    given name and fingerprint id, and status.txt."""
    d = _machine_dir(runs, f"{name}.{fingerprint}.{node}.{job}", rows)
    (d / "machine.json").write_text(json.dumps({"name": name, "id": fingerprint}))
    (d / "status.txt").write_text(
        f"status=ok\nexit_code=0\nfailed_step=\nnode={node}\njob={job}\npartition=cpu\n"
        "duration_s=60\n"
    )
    (d / "run.log").write_text("compare: done\n")
    return d


def test_gather_one_column_per_kind_with_the_spread_across_its_nodes(tmp_path):
    runs = tmp_path / "runs"
    for node, scale in (("n1", 1.0), ("n2", 1.2), ("n3", 1.1)):
        rows = {"torch-dataloader": (4.0 * scale, 0.97), "jax-scan": (0.5 * scale, 0.97)}
        _run_dir(runs, "amd-epyc-8cpu", node, f"5_{node[1]}", rows, "aaaaaaaaaaaa")
    _run_dir(runs, "nvidia-h100", "g1", "5_4", {"jax-scan": (0.05, 0.98)}, "bbbbbbbbbbbb")
    # the same machine name with another fingerprint (another image): a kind of its own
    _run_dir(runs, "nvidia-h100", "g2", "5_5", {"jax-scan": (0.07, 0.98)}, "cccccccccccc")
    # and one node of that CPU run in another image: a kind of one node
    _run_dir(runs, "amd-epyc-8cpu", "n9", "6_0", {"jax-scan": (0.6, 0.97)}, "dddddddddddd")
    ok_without_summary = _run_dir(runs, "amd-epyc-8cpu", "n4", "5_6", {}, "aaaaaaaaaaaa")
    (ok_without_summary / "summary.json").unlink()
    partial = runs / ".partial.5_7.n5.123"  # a run still being copied: not read
    partial.mkdir()
    (partial / "status.txt").write_text("status=ok\n")
    job = runs / "jobs" / "20260101-000000-1"
    job.mkdir(parents=True)
    tasks = [{"task": i, "target": "-p cpu"} for i in range(1, 9)]
    (job / "job.json").write_text(json.dumps({"job": "5", "tasks": tasks}))
    (runs / "logs").mkdir()
    (runs / "logs" / "5_8.out").write_text("[mnistbench 5_8 on n6] train jax-scan\n")

    g = gather.write(runs, None, tmp_path / "out")

    assert [c.name for c in g.columns] == [
        report.ARTICLE,
        "amd-epyc-8cpu [aaaaaaaaaaaa] (3 runs on 3 nodes)",
        "amd-epyc-8cpu [dddddddddddd]",
        "nvidia-h100 [bbbbbbbbbbbb]",
        "nvidia-h100 [cccccccccccc]",
    ]
    cpu = g.columns[1].cells["torch-dataloader"]
    assert (cpu.epoch_s, cpu.low_s, cpu.high_s) == pytest.approx((4.4, 4.0, 4.8))
    assert g.columns[1].speedup("jax-scan") == pytest.approx(8.0)
    assert "3 runs on n1, n2, n3" in g.columns[1].about
    assert [r.node for r in g.failed] == ["n4"]
    assert (
        "status ok, but" in g.failed[0].problem and "summary.json: missing" in g.failed[0].problem
    )
    assert [m.job for m in g.missing] == ["5_7", "5_8"]

    text = (tmp_path / "out" / "machines.md").read_text()
    assert "| `torch-dataloader` | 4-4.8 s · 18% · 3 runs |" in text
    assert "- job 5_8 (`-p cpu`): `logs/5_8.out`: `[mnistbench 5_8 on n6] train jax-scan`" in text
    assert "7 runs, 6 ok, 1 failed; 2 submitted tasks without a run" in text
    assert (tmp_path / "out" / "machines.png").read_bytes().startswith(b"\x89PNG")


def test_gather_of_a_folder_without_runs_is_a_one_line_error(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "mnistbench", "gather", str(tmp_path)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"error: {tmp_path}: no runs (folders with status.txt)")
    assert proc.stderr.count("\n") == 1


# ---------------------------------------------------------------- a real Slurm


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A one-node Slurm on this machine for this module's tests; stopped, with every process
    it started, whatever happens."""
    allow = os.environ.get(local_cluster.INSTALL_VAR) == "1"
    reason = local_cluster.ensure_installed(allow_install=allow)
    if reason:
        pytest.skip(reason)
    c = local_cluster.LocalCluster(tmp_path_factory.mktemp("slurm"))
    c.start()
    try:
        yield c
    finally:
        c.stop()
        assert c.leftovers() == []


def _squeue(cluster, job: str | None = None) -> str:
    """squeue's lines for the job (every job without one); empty once it has ended."""
    cmd = ["squeue", "-h", *(["-j", job] if job else [])]
    return subprocess.run(cmd, env=cluster.env, capture_output=True, text=True).stdout.strip()


@pytest.mark.long("two tiny pipelines through a real Slurm (~3 min on 2 cores)")
def test_an_array_over_two_partitions_runs_each_task_and_gathers_them(cluster, tmp_path):
    runs, params = tmp_path / "runs", tmp_path / "small.yaml"
    env = _env(**{k: v for k, v in cluster.env.items() if k in ("SLURM_CONF", "PATH")})
    subprocess.run(
        [sys.executable, "-m", "mnistbench", "params", str(params)]
        + ["--set", "data.limit_train=2000", "--set", "data.limit_test=500"]
        + ["--set", "train.epochs=2"],
        env=env,
        cwd=ROOT,
        check=True,
        capture_output=True,
    )

    def submit_(*targets: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, str(SLURM / "submit.py"), "--results", str(runs)]
            + ["--params", str(params), "--venv", str(VENV), "--time", "00:20:00"]
            + ["--backends", "torch-tensor jax-scan", "--no-roofline", *targets],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )

    # a target Slurm refuses cancels the whole array, and leaves no record
    refused = submit_("bench-a", "-p no-such-partition")
    assert refused.returncode == 1
    assert "Invalid partition name specified" in refused.stderr, refused.stderr
    assert not _squeue(cluster) and list((runs / "jobs").iterdir()) == []

    t0 = time.monotonic()
    proc = submit_("bench-a", "-p bench-b")
    assert proc.returncode == 0, proc.stderr
    job = re.search(r"submitted job (\d+): 2 tasks", proc.stdout).group(1)
    while _squeue(cluster, job):
        if time.monotonic() - t0 > 900:
            pytest.fail(f"job {job} still queued after 900 s: {_squeue(cluster, job)}")
        time.sleep(2)
    print(f"the array took {time.monotonic() - t0:.0f} s")

    folders = sorted(p for p in runs.iterdir() if (p / "status.txt").exists())
    statuses = [gather.read_status(p / "status.txt") for p in folders]
    logs = {p.name: gather.last_line(p / "run.log") for p in folders}
    assert [s["status"] for s in statuses] == ["ok", "ok"], logs
    assert [(s["job"], s["partition"], s["node"]) for s in statuses] == [
        (f"{job}_0", "bench-a", local_cluster.NODE),
        (f"{job}_1", "bench-b", local_cluster.NODE),
    ]
    rec = machine.record()
    assert [p.name for p in folders] == [
        f"{rec['name']}.{rec['id']}.{local_cluster.NODE}.{job}_{i}" for i in (0, 1)
    ]

    out = subprocess.run(
        [sys.executable, "-m", "mnistbench", "gather", str(runs), "--no-references"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert "1 machine kinds from 2 runs (0 failed), 0 submitted tasks without a run" in out.stdout
    text = (runs / "machines.md").read_text()
    assert f"| {rec['name']} (2 runs on 1 node) |" in text  # the header: runs, not nodes
    for i, partition in enumerate(("bench-a", "bench-b")):
        assert f"| {local_cluster.NODE} | {job}_{i} | {partition} | ok |" in text
    for backend in ("torch-tensor", "jax-scan"):
        assert re.search(rf"\| `{backend}` \| [0-9.]+-[0-9.]+ s · \d+% · 2 runs \|", text)


def test_slurm_is_installed_only_where_ci_allows_it(monkeypatch):
    """Without MNISTBENCH_CI_INSTALL_SLURM=1 a missing Slurm is a skip reason, never apt-get;
    .ci/run (CI's disposable machines) is what sets it, not make."""
    ran = []
    monkeypatch.setattr(local_cluster, "which", lambda tool: None)
    monkeypatch.setattr(local_cluster.os, "geteuid", lambda: 0)
    monkeypatch.setattr(local_cluster.subprocess, "run", lambda *a, **k: ran.append(a))
    reason = local_cluster.ensure_installed(allow_install=False)
    assert reason.startswith("Slurm is not installed (munged, mungekey, slurmctld")
    assert "MNISTBENCH_CI_INSTALL_SLURM=1" in reason and ran == []
    monkeypatch.setattr(local_cluster.os, "geteuid", lambda: 1000)
    assert "needs root" in local_cluster.ensure_installed(allow_install=True) and ran == []
    assert "export MNISTBENCH_CI_INSTALL_SLURM=1" in (ROOT / ".ci" / "run").read_text()
    assert "MNISTBENCH_CI_INSTALL_SLURM" not in (ROOT / "Makefile").read_text()


def test_a_combined_column_keeps_the_verdict_and_counts_nodes_not_runs(tmp_path):
    """Two runs on one node, both disturbed: the combined cell is marked disturbed, and the
    header says 2 runs on 1 node (a spread on one node is no reproduction across nodes)."""
    runs = tmp_path / "runs"
    for job, scale in (("7_0", 1.0), ("7_1", 1.4)):
        d = _run_dir(
            runs, "amd-epyc-2cpu", "bench0", job, {"jax-scan": (0.5 * scale, 0.97)}, "a" * 12
        )
        summary = json.loads((d / "summary.json").read_text())
        summary["backends"]["jax-scan"] |= {"disturbed": 1, "unsteady": 0, "unstable": 0}
        (d / "summary.json").write_text(json.dumps(summary))
    g = gather.write(runs, None, tmp_path / "out")
    kind = g.columns[-1]
    assert kind.name == "amd-epyc-2cpu (2 runs on 1 node)"
    assert kind.cells["jax-scan"].verdict == "disturbed"
    assert "‡" in (tmp_path / "out" / "machines.md").read_text().split("| `jax-scan` |")[1]
