"""Clusters (scripts/slurm/, `mnistbench gather`, docs/cluster.md).

`make test`: the targets submit.py makes tasks of, the batch script run by hand on a node
that fails (published, listed; stale scratch folders removed), a venv the submitting user
cannot read, and the gathered report on canned runs (tests/test_gather_slurm.py: what Slurm
says). `make test-all` (or MNISTBENCH_TEST_ALL=1): a real two-node Slurm started here
(scripts/slurm/local_cluster.py: two machine kinds, each node in namespaces of its own), an
array over both nodes run through it and gathered, with a task timed out and one cancelled;
and a one-node Slurm whose Epilog cleans up after a task killed by SIGKILL. Skipped, saying
why, without root, Slurm or iproute2 (MNISTBENCH_CI_INSTALL_SLURM=1, set by .ci/run only,
lets it apt-get slurm-wlm, munge and iproute2).
"""

from __future__ import annotations

import importlib.util
import json
import os
import pwd
import re
import shutil
import signal
import statistics
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
    assert (
        "- job 5_8 (`-p cpu`): Slurm gave no answer; `logs/5_8.out`: "
        "`[mnistbench 5_8 on n6] train jax-scan`"
    ) in text
    assert "7 runs, 6 ok, 1 failed; 2 submitted tasks without a run" in text
    assert (tmp_path / "out" / "machines.png").read_bytes().startswith(b"\x89PNG")


def test_gather_pools_the_rounds_of_a_kinds_nodes_and_pairs_speedups_within_each_run(tmp_path):
    """Each task runs its rounds; a kind's column pools every clean round of its nodes (an
    interval, not a min-max), and the speed-up pairs rounds within each run, so a node that
    is 20% slower throughout moves the s/epoch, not the ratio."""
    runs = tmp_path / "runs"
    base_rounds = {"n1": [4.0, 4.4, None], "n2": [4.8, 5.0, 5.2]}  # None: a disturbed round
    for node, base in base_rounds.items():
        rows = {"torch-dataloader": (4.4, 0.97), "jax-scan": (0.55, 0.97)}
        d = _run_dir(runs, "amd-epyc-8cpu", node, f"5_{node[1]}", rows, "aaaaaaaaaaaa")
        summary = json.loads((d / "summary.json").read_text())
        summary["backends"]["torch-dataloader"]["rounds_s"] = base
        summary["backends"]["jax-scan"]["rounds_s"] = [t and t / 8 for t in base]
        (d / "summary.json").write_text(json.dumps(summary))

    g = gather.gather(runs, None, slurm=False)

    column = g.columns[1]
    base = column.cells["torch-dataloader"]
    clean = [t for times in base_rounds.values() for t in times if t]
    assert base.interval and base.low_s < base.epoch_s < base.high_s
    assert base.epoch_s == pytest.approx(statistics.geometric_mean(clean))
    ratio, low, high = column.cells["jax-scan"].speedup
    assert (ratio, low, high) == pytest.approx((8.0, 8.0, 8.0))  # paired: the slow node cancels


def test_gather_refuses_rounds_that_are_not_times(tmp_path):
    runs = tmp_path / "runs"
    d = _run_dir(runs, "amd-epyc-8cpu", "n1", "5_1", {"jax-scan": (0.5, 0.97)}, "a" * 12)
    summary = json.loads((d / "summary.json").read_text())
    summary["backends"]["jax-scan"]["rounds_s"] = [0.5, "fast"]
    (d / "summary.json").write_text(json.dumps(summary))
    g = gather.gather(runs, None, slurm=False)
    assert [r.node for r in g.failed] == ["n1"]
    assert "rounds_s must be a list of times > 0" in g.failed[0].problem


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


def _start_cluster(root: Path, nodes: int):
    """A local Slurm of `nodes` nodes under `root` (scripts/slurm/local_cluster.py), or a
    skip saying why not; the caller stops it."""
    allow = os.environ.get(local_cluster.INSTALL_VAR) == "1"
    reason = local_cluster.ensure_installed(allow_install=allow, nodes=nodes)
    if reason:
        pytest.skip(reason)
    c = local_cluster.LocalCluster(root, nodes=nodes)
    c.start()
    return c


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A two-node Slurm on this machine for this module's tests: bench0 pinned to one CPU,
    bench1 with all of them, each in network and hostname namespaces of its own on a bridge.
    Stopped, with every process, namespace and link it made, whatever happens."""
    c = _start_cluster(tmp_path_factory.mktemp("slurm"), nodes=2)
    try:
        yield c
    finally:
        c.stop()
        assert c.leftovers() == [] and c.links_left() == []


def _squeue(cluster, job: str | None = None) -> str:
    """squeue's lines for the job (every job without one); empty once it has ended."""
    cmd = ["squeue", "-h", "-r", "-o", "%i %T %N", *(["-j", job] if job else [])]
    return subprocess.run(cmd, env=cluster.env, capture_output=True, text=True).stdout.strip()


def _wait(cluster, what, ready, timeout_s: float = 900) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} after {timeout_s:.0f} s: {_squeue(cluster)}")
        time.sleep(1)


def _hanging_venv(root: Path) -> Path:
    """A venv whose python hangs in `mnistbench machine` (the first step) and is the real
    one otherwise (submit.py's params check): a task of it runs until its time limit."""
    python = root / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(
        "#!/bin/sh\n"
        'case " $* " in *" machine "*) exec sleep 600 ;; esac\n'
        f'exec {sys.executable} "$@"\n'
    )
    python.chmod(0o755)
    return root


@pytest.mark.long("two tiny pipelines on a two-node Slurm, one task timed out (~3 min on 2 cores)")
def test_an_array_over_two_nodes_gives_two_machine_kinds_and_says_why_tasks_ended(
    cluster, tmp_path
):
    """One array over both nodes (a task on each, and one cancelled while it waits), and
    before it a task that hangs until its time limit on bench1: gather shows two columns,
    one per node's machine kind, the timed-out run in Slurm's words, and the cancelled task
    as cancelled, not as still queued."""
    runs, params = tmp_path / "runs", tmp_path / "small.yaml"
    env = _env(**{k: v for k, v in cluster.env.items() if k in ("SLURM_CONF", "PATH")})
    subprocess.run(
        [sys.executable, "-m", "mnistbench", "params", str(params)]
        + ["--set", "data.limit_train=1000", "--set", "data.limit_test=200"]
        + ["--set", "train.epochs=1", "--set", "bench.rounds_min=1", "--set", "bench.rounds_max=1"],
        env=env,
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    backends = "jax-tfds torch-tensor"  # one reads the TFDS build (built on the node), one not

    def submit_(*targets: str, venv: Path = VENV, limit: str = "00:20:00") -> str:
        proc = subprocess.run(
            [sys.executable, str(SLURM / "submit.py"), "--results", str(runs)]
            + ["--params", str(params), "--venv", str(venv), "--time", limit]
            + ["--backends", backends, "--no-roofline", *targets],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr
        return re.search(r"submitted job (\d+)", proc.stdout).group(1)

    # a target Slurm refuses cancels the whole array, and leaves no record
    refused = subprocess.run(
        [sys.executable, str(SLURM / "submit.py"), "--results", str(runs), "--params"]
        + [str(params), "--venv", str(VENV), "bench-a", "-p no-such-partition"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert refused.returncode == 1
    assert "Invalid partition name specified" in refused.stderr, refused.stderr
    assert not _squeue(cluster) and list((runs / "jobs").iterdir()) == []

    t0 = time.monotonic()
    hung = submit_("-p bench-b -w bench1", venv=_hanging_venv(tmp_path / "venv"), limit="00:01:00")
    _wait(cluster, "the hanging task not running", lambda: "RUNNING" in _squeue(cluster, hung))
    job = submit_("-p bench-a -w bench0", "-p bench-b -w bench1", "-p bench-b -w bench1")
    assert f"{job}_2 PENDING" in _squeue(cluster, job)  # bench1 is busy: it waits
    subprocess.run(["scancel", f"{job}_2"], env=cluster.env, check=True)
    _wait(cluster, "tasks still queued", lambda: not _squeue(cluster))
    print(f"the arrays took {time.monotonic() - t0:.0f} s")

    folders = sorted(p for p in runs.iterdir() if (p / "status.txt").exists())
    status = {gather.read_status(p / "status.txt")["job"]: p for p in folders}
    logs = {j: gather.last_line(p / "run.log") for j, p in status.items()}
    assert sorted(status) == sorted([f"{hung}_0", f"{job}_0", f"{job}_1"]), logs
    ok = {j: gather.read_status(status[j] / "status.txt") for j in (f"{job}_0", f"{job}_1")}
    assert [s["status"] for s in ok.values()] == ["ok", "ok"], logs
    for s, node in zip(ok.values(), ("bench0", "bench1")):
        assert (s["node"], s["host"], s["image"]) == (node, node, "venv")  # its own hostname
        assert re.fullmatch(r"[0-9a-f]{40}(\+modified)?", s["revision"]), s["revision"]
    # each node's scratch folder (its TaskProlog's SLURM_TMPDIR): used, and left empty
    for node in ("bench0", "bench1"):
        scratch = cluster.root / "scratch" / node
        assert (
            f"scratch: {scratch}/mnistbench-"
            in (status[f"{job}_{node[-1]}"] / "run.log").read_text()
        )
    assert [list((cluster.root / "scratch" / n).iterdir()) for n in ("bench0", "bench1")] == [
        [],
        [],
    ]
    # two machine kinds: bench0 may use 1 CPU, bench1 all of them
    prints = [json.loads((status[j] / "machine.json").read_text()) for j in ok]
    usable = [m["fingerprint"]["cpus_usable"] for m in prints]
    assert usable == [1, len(cluster.nodes[1].cpus)] and usable[0] < usable[1]
    assert prints[0]["id"] != prints[1]["id"]
    timed_out = gather.read_status(status[f"{hung}_0"] / "status.txt")
    assert (timed_out["status"], timed_out["failed_step"]) == (
        "failed",
        "machine (killed by SIGTERM)",
    )

    out = subprocess.run(
        [sys.executable, "-m", "mnistbench", "gather", str(runs), "--no-references"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0 and out.stderr == "", out.stderr
    assert "2 machine kinds from 3 runs (1 failed), 1 submitted tasks without a run" in out.stdout
    text = (runs / "machines.md").read_text()
    for i, node in enumerate(("bench0", "bench1")):
        partition = ("bench-a", "bench-b")[i]
        assert f"| {node} | {job}_{i} | {partition} | ok |" in text
    # Slurm's words, from squeue (no accounting here): the time limit, and a task that never ran
    assert (
        f"**bench1** (job {hung}_0, partition bench-b): stopped at its time limit (TIMEOUT, "
        "from squeue) in step `machine` (exit 143)"
    ) in text
    assert (
        f"- job {job}_2 (`-p bench-b -w bench1`): cancelled before it started (CANCELLED, " in text
    )
    assert "killed by SIGTERM" not in text and "still queued" not in text

    # away from Slurm (--no-slurm): slurmstepd's line in the task's output says the same
    g = gather.gather(runs, None, slurm=False)
    assert len(g.kinds) == 2 and all(len(k.runs) == 1 for k in g.kinds)
    assert sorted(k.runs[0].node for k in g.kinds) == ["bench0", "bench1"]
    for kind in g.kinds:
        assert sorted(kind.column.cells) == sorted(backends.split())
        assert all(c.verdict in gather.VERDICT_RANK for c in kind.column.cells.values())
    (failed,) = g.failed
    assert failed.problem == (
        f"stopped at its time limit (TIMEOUT, from its output, logs/{hung}_0.out) in step "
        "`machine` (exit 143)"
    )
    (cancelled,) = g.missing
    assert cancelled.job == f"{job}_2" and cancelled.slurm is None  # no output: it never ran


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


@pytest.mark.long("a one-node Slurm, one task killed by SIGKILL (~20 s)")
def test_a_task_killed_outright_leaves_no_scratch_folder_behind(tmp_path_factory, tmp_path):
    """local_cluster.py's default (one node at 127.0.0.1, no namespaces), with
    scripts/slurm/epilog.sh as its Epilog: a task killed by SIGKILL runs no exit trap, so it
    publishes nothing and leaves its scratch folder; the Epilog removes that folder when the
    job ends, and no other."""
    c = _start_cluster(tmp_path_factory.mktemp("slurm1"), nodes=1)
    try:
        scratch = c.root / "scratch" / local_cluster.NODE
        other = scratch / "mnistbench-99_0.keep"  # another job's folder: left alone
        other.mkdir()
        (other / ".owner").write_text("bench0 1 1 99\n")
        runs = tmp_path / "runs"
        env = _env(
            SLURM_CONF=c.env["SLURM_CONF"],
            PATH=c.env["PATH"],
            MNISTBENCH_VENV=str(_hanging_venv(tmp_path / "venv")),
        )
        job = subprocess.run(
            ["sbatch", "--parsable", "--array=0", "--output", str(tmp_path / "%A_%a.out")]
            + [str(BATCH), str(runs), str(ROOT / "params.yaml")],
            env=env,
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()

        def its_folder() -> list[Path]:
            return [d for d in scratch.glob(f"mnistbench-{job}_0.*") if (d / ".owner").exists()]

        _wait(c, "no scratch folder of the task", its_folder, timeout_s=120)
        (folder,) = its_folder()
        # SIGKILL, as the OOM killer or `kill -9` sends it (scancel --signal=KILL is a cancel:
        # SIGTERM first): to every process of the job, the batch script's shell first
        shells = [pid for pid in c.leftovers() if _comm(pid) == "bash"]
        assert shells, [(pid, _comm(pid)) for pid in c.leftovers()]
        for pid in [*shells, *(p for p in c.leftovers() if _comm(p) != "slurmstepd")]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        _wait(c, "the killed task still listed", lambda: not _squeue(c), timeout_s=120)
        _wait(c, "its scratch folder still there", lambda: not folder.exists(), timeout_s=30)
        assert [p.name for p in scratch.iterdir()] == [other.name]
        assert not runs.exists() or not any(runs.glob("*/status.txt"))  # no trap: no run
    finally:
        c.stop()
    assert c.leftovers() == [] and c.links_left() == []


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
    two = local_cluster.ensure_installed(allow_install=False, nodes=2)  # the network tools too
    assert "sinfo, ip, unshare, nsenter, taskset missing" in two
    assert "apt-get install slurm-wlm munge iproute2" in two and ran == []
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
