"""Your machine, your numbers: the fingerprint, the cross-machine report, and a real `dvc repro`
on two "machines" kept on two branches and compared with `dvc metrics diff`."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mnistbench import envinfo, keep, machine, metrics, records, report
from mnistbench.checkout import checkout_id

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


# ---------------------------------------------------------------- the fingerprint


def test_the_fingerprint_is_the_same_on_every_call():
    assert machine.record() == machine.record()


def test_the_fingerprint_holds_nothing_that_changes_between_runs():
    fp = machine.fingerprint()
    text = json.dumps(fp)
    assert os.uname().nodename not in text or os.uname().nodename in fp["cpu"]
    assert not {"time", "date", "load", "hostname", "free_memory"} & set(fp)
    assert {
        "cpu",
        "cpu_flags",
        "cpus_usable",
        "memory_gib",
        "gpus",
        "image",
        "image_version",
        "python",
        "frameworks",
        "thread_env",
    } <= set(fp)


@pytest.mark.parametrize(
    "var, value",
    [
        ("MNISTBENCH_IMAGE", "mnistbench:cpu"),
        ("MNISTBENCH_IMAGE_VERSION", "v2"),
        ("OMP_NUM_THREADS", "1"),
    ],
)
def test_another_image_or_thread_setting_is_another_fingerprint(monkeypatch, var, value):
    before = machine.record()["id"]
    monkeypatch.setenv(var, value)
    assert machine.record()["id"] != before


def test_another_framework_version_is_another_fingerprint(monkeypatch):
    before = machine.record()["id"]
    real = machine.envinfo.versions
    monkeypatch.setattr(machine.envinfo, "versions", lambda: {**real(), "jax": "0.0.1"})
    assert machine.record()["id"] != before


def _snapshot_of(committed: dict, **extra) -> envinfo.Snapshot:
    """The environment a committed fingerprint was taken in, with dvc and click installed too."""
    fp = committed["fingerprint"]
    snap = envinfo.Snapshot(
        python=fp["python"],
        implementation="cpython",
        platform="Linux-6.8.0-x86_64-with-glibc2.39",
        arch=fp["arch"],
        packages={**fp["frameworks"], "dvc": "3.66.1", "click": "8.3.1"},
        cpu=fp["cpu"],
        cpu_flags=fp["cpu_flags"],
        cpu_count=64,
        cpus_usable=fp["cpus_usable"],
        cpu_quota=fp["cpu_quota"],
        memory_gib=fp["memory_gib"],
        gpus=fp["gpus"],
        thread_env=fp["thread_env"],
        image=fp["image"],
        image_version=fp["image_version"],
    )
    return dataclasses.replace(snap, **extra)


@pytest.mark.parametrize("name", ["intel-xeon-2cpu", "nvidia-h200", "amd-epyc-2cpu"])
def test_a_committed_environment_gives_its_committed_fingerprint_and_id(name):
    committed = json.loads((ROOT / "results" / name / "machine.json").read_text())
    fp = machine.fingerprint(_snapshot_of(committed))
    assert fp == committed["fingerprint"]  # dvc and click are no part of it
    assert machine.fingerprint_id(fp) == committed["id"]
    assert machine.machine_name(fp) == committed["name"]


def test_the_fingerprint_of_a_canned_environment_is_byte_for_byte_unchanged():
    """metrics/machine.json's bytes are every timing stage's input: the same environment must
    keep writing the same bytes, key order included, or DVC reruns every stage."""
    committed = json.loads((ROOT / "results" / "amd-epyc-2cpu" / "machine.json").read_text())
    snap = _snapshot_of(committed)
    snap = dataclasses.replace(
        snap,
        packages={"numpy": "2.4.6", "jax-cuda12-plugin": "0.10.2", "torch": "2.14.1", "dvc": "3"},
    )
    text = json.dumps(machine.record(machine.fingerprint(snap)), indent=2)
    assert (
        hashlib.sha256(text.encode()).hexdigest()[:12] == "359ee48ec20e"
    )  # amd-epyc-2cpu's environment, as written since machine.json holds the checkout


def test_the_run_env_and_the_fingerprint_read_one_snapshot():
    committed = json.loads((ROOT / "results" / "nvidia-h200" / "machine.json").read_text())
    snap = _snapshot_of(committed, thread_env={"OMP_NUM_THREADS": "4"})
    env, fp = envinfo.collect(snap), machine.fingerprint(snap)
    assert set(env) == set(metrics.ENV_MACHINE) - {"threads"}  # threads: frameworks applies it
    for key in ("cpu", "cpus_usable", "gpus", "image", "image_version", "python", "thread_env"):
        assert env[key] == fp[key], key
    assert env["packages"] == {**fp["frameworks"], "dvc": "3.66.1", "click": "8.3.1"}
    assert env["cpu_count"] == 64


def test_without_an_affinity_api_every_cpu_is_usable():
    committed = json.loads((ROOT / "results" / "intel-xeon-2cpu" / "machine.json").read_text())
    fp = machine.fingerprint(_snapshot_of(committed, cpus_usable=None))
    assert fp["cpus_usable"] == 64


@pytest.mark.parametrize(
    "cpu, cpus, gpus, name",
    [
        ("Intel(R) Xeon(R) Processor", 2, [], "intel-xeon-2cpu"),
        ("AMD EPYC 7B13 64-Core Processor", 16, [], "amd-epyc-7b13-16cpu"),
        ("Intel(R) Xeon(R) Processor", 16, ["NVIDIA H200, 143771 MiB, 580.159.04"], "nvidia-h200"),
    ],
)
def test_machine_names(cpu, cpus, gpus, name):
    fp = {**machine.fingerprint(), "cpu": cpu, "cpus_usable": cpus, "gpus": gpus}
    assert machine.machine_name(fp) == name


def test_write_gives_the_same_bytes_twice(tmp_path):
    machine.write(tmp_path / "a.json")
    machine.write(tmp_path / "b.json")
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()


# ---------------------------------------------------------------- the cross-machine report


def _machine_dir(root: Path, name: str, rows: dict[str, tuple[float, float]]) -> Path:
    """A results/<name>/ with summary.json (backend -> (s/epoch, val_acc)) and machine.json."""
    d = root / name
    d.mkdir(parents=True)
    backends = {
        b: {
            "epoch_time_median_s": s,
            "epoch_time_min_s": s * 0.9,
            "epoch_time_max_s": s * 1.1,
            "val_acc": acc,
        }
        for b, (s, acc) in rows.items()
    }
    (d / "summary.json").write_text(json.dumps({"backends": backends, "settings": {}}))
    (d / "machine.json").write_text(json.dumps(machine.record()))
    return d


def test_report_one_column_per_machine_and_a_dash_for_a_missing_backend(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # this checkout's identity goes to tmp_path/.mnistbench/
    results = tmp_path / "results"
    _machine_dir(
        results,
        "cpu-box",
        {
            "torch-dataloader": (4.0, 0.97),
            "torch-tfds": (3.0, 0.97),
            "jax-tfds": (2.0, 0.98),
            "jax-scan": (0.5, 0.97),
        },
    )
    _machine_dir(results, "gpu-box", {"torch-dataloader": (8.0, 0.97), "jax-scan": (0.05, 0.97)})
    local = _machine_dir(
        tmp_path,
        "metrics",
        {
            "torch-dataloader": (2.0, 0.97),
            "torch-tfds": (2.5, 0.97),
            "jax-tfds": (1.0, 0.98),
            "jax-scan": (0.25, 0.97),
        },
    )
    # made by another checkout (the committed reference of a fresh clone): said so
    name = machine.record()["name"]
    cols = report.write(results, local, tmp_path / "out")
    assert (
        cols[-1].name == f"{report.COMMITTED} ({name}, date unknown; not measured in this checkout)"
    )
    # made by this one
    (local / "machine.json").write_text(json.dumps(machine.record(checkout=checkout_id())))
    cols = report.write(results, local, tmp_path / "out")
    assert [c.name for c in cols] == [
        report.ARTICLE,
        "cpu-box",
        "gpu-box",
        f"{report.LOCAL} ({machine.record()['name']})",
    ]
    md = (tmp_path / "out" / "machines.md").read_text()
    table = [line for line in md.splitlines() if line.startswith("| `")]
    tfds_row = next(line for line in table if line.startswith("| `torch-tfds`"))
    assert tfds_row.split(" | ")[3] == report.DASH  # gpu-box did not run it: a dash, not 0
    scan_row = next(line for line in table if line.startswith("| `jax-scan`"))
    assert "160x" in scan_row and "8.0x" in scan_row  # speed-ups on each machine's own baseline
    assert "- cpu-box: yes" in md and "no" in md.split("- this machine")[1].splitlines()[0]
    assert "vs cpu-box: 2.00x over 4 backends" in md  # this machine is twice as fast as cpu-box
    assert (tmp_path / "out" / "machines.png").read_bytes()[:4] == b"\x89PNG"


def test_report_without_a_local_run_shows_the_references(tmp_path):
    _machine_dir(tmp_path / "results", "cpu-box", {"torch-dataloader": (4.0, 0.97)})
    cols = report.columns(tmp_path / "results", tmp_path / "no-run-here")
    assert [c.name for c in cols] == [report.ARTICLE, "cpu-box"]


def test_report_names_a_malformed_summary(tmp_path):
    d = _machine_dir(tmp_path / "results", "cpu-box", {"jax-scan": (0.5, 0.97)})
    (d / "summary.json").write_text('{"backends": {"jax-scan": {"val_acc": 0.9}}}')
    with pytest.raises(report.ReportError, match=r"cpu-box/summary.json: backends.jax-scan"):
        report.columns(tmp_path / "results", None)


def test_the_committed_references_each_have_a_fingerprint():
    refs = report.reference_columns(ROOT / "results")
    assert len(refs) >= 2
    for col in refs:
        assert "fingerprint" in col.about


# ---------------------------------------------------------------- a real pipeline, two machines


def _tree_hash(path: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(path)).encode() + p.read_bytes())
    return h.hexdigest()


def _run(cmd: list[str], repo: Path, env: dict, stdout_only: bool = False) -> str:
    proc = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{' '.join(cmd)}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout if stdout_only else proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A git + DVC repository with this project's pipeline, code and reference results, and
    small params (2,000 / 500 images, 2 epochs)."""
    repo = tmp_path_factory.mktemp("clone")
    for name in ("dvc.yaml", ".dvcignore", ".gitignore"):
        shutil.copy(ROOT / name, repo / name)
    (repo / ".dvc").mkdir()
    shutil.copy(ROOT / ".dvc" / "config", repo / ".dvc" / "config")
    shutil.copytree(ROOT / "src", repo / "src", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "results", repo / "results")
    env = _env(repo, "host")
    _run(
        [
            str(BIN / "mnistbench"),
            "params",
            "params.yaml",
            "--params",
            str(ROOT / "params.yaml"),
            "--set",
            "data.limit_train=2000",
            "--set",
            "data.limit_test=500",
            "--set",
            "train.epochs=2",
            "--set",
            f"data.mirrors=['{ROOT / 'data' / 'mirror'}/']",
        ],
        repo,
        env,
    )
    for cmd in (
        ["git", "init", "-q", "-b", "main"],
        ["git", "add", "-A"],
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "clone"],
    ):
        _run(cmd, repo, env)
    return repo


def _env(repo: Path, image: str) -> dict:
    return {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(repo / "src"),
        "MNISTBENCH_IMAGE": image,
        "DVC_NO_ANALYTICS": "1",
        "MNIST_MIRRORS": "",
    }


TARGETS = ["train@torch-tensor", "train@jax-scan"]  # two fast backends stand for all


def _commit_branch(repo: Path, branch: str, env: dict) -> None:
    for cmd in (
        ["git", "switch", "-q", "-c", branch],
        ["git", "add", "-A"],
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", branch],
        ["git", "switch", "-q", "main"],
    ):
        _run(cmd, repo, env)


@pytest.mark.long("two real pipelines, on two machines, compared (~100 CPU-s)")
def test_each_machine_measures_itself_and_machines_compare_across_branches(repo):
    references = _tree_hash(repo / "results")
    dvc = str(BIN / "dvc")
    out = _run([dvc, "repro", *TARGETS], repo, _env(repo, "machine-a"))
    assert "Running stage 'machine'" in out and "Running stage 'train@jax-scan'" in out
    first = records.read_record(repo / "metrics", "jax-scan")

    again = _run([dvc, "repro", *TARGETS], repo, _env(repo, "machine-a"))
    assert "Running stage 'train@" not in again, again  # same machine, same params: nothing

    _commit_branch(repo, "machine-a", _env(repo, "machine-a"))  # keeps metrics/ and dvc.lock
    # A dry run runs no stage, so the fingerprint is refreshed first (docs/machines.md).
    _run([str(BIN / "mnistbench"), "machine"], repo, _env(repo, "machine-b"))
    dry = _run([dvc, "repro", "--dry", *TARGETS, "roofline"], repo, _env(repo, "machine-b"))
    for stage in [*TARGETS, "roofline"]:  # measured on machine-a: rerun for machine-b
        assert f"Running stage '{stage}'" in dry, dry
    out = _run([dvc, "repro", *TARGETS], repo, _env(repo, "machine-b"))
    for target in TARGETS:
        assert f"Running stage '{target}'" in out, out  # another machine: every timing reruns
    second = records.read_record(repo / "metrics", "jax-scan")
    assert second["env"]["image"] == "machine-b" and first["env"]["image"] == "machine-a"
    _commit_branch(repo, "machine-b", _env(repo, "machine-b"))

    diff = json.loads(
        _run(
            [
                dvc,
                "metrics",
                "diff",
                "machine-a",
                "machine-b",
                "--json",
                "--targets",
                "metrics/train/jax-scan/metrics.json",
            ],
            repo,
            _env(repo, "machine-b"),
            stdout_only=True,
        )
    )
    # the train stages alone write no headline/ (compare does): DVC reads any metrics
    # file it is pointed at, here one run's
    timed = diff["metrics/train/jax-scan/metrics.json"]["epoch_time_median_s"]
    assert timed["old"] == first["epoch_time_median_s"]
    assert timed["new"] == second["epoch_time_median_s"]
    assert _tree_hash(repo / "results") == references  # the reference runs are untouched


def test_keep_copies_a_run_into_its_own_folder_and_never_over_one(tmp_path):
    run = _machine_dir(tmp_path, "metrics", {"jax-scan": (0.5, 0.97)})
    (run / "jax-scan").mkdir()
    (run / "jax-scan" / "metrics.json").write_text("{}")
    dest = keep.keep(run, tmp_path / "results", extra=())
    assert dest.name == machine.record()["name"]
    assert (dest / "summary.json").is_file() and (
        dest / "metrics" / "jax-scan" / "metrics.json"
    ).is_file()
    assert [c.name for c in report.reference_columns(tmp_path / "results")] == [dest.name]
    with pytest.raises(report.ReportError, match="exists"):
        keep.keep(run, tmp_path / "results", extra=())


def test_the_workspace_run_committed_is_a_kept_reference():
    """metrics/ and dvc.lock are committed so that DVC's views (`dvc metrics show`, `dvc plots
    show`, `dvc metrics diff`) work on a fresh clone; what is there must be a reference run
    kept in results/<machine>/, byte for byte, so the two can never tell different stories.
    (Any `dvc repro` on another machine replaces them with its own.)"""
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    tracked = subprocess.run(
        ["git", "ls-files", "metrics", "dvc.lock"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    if not tracked:
        pytest.skip("no workspace run committed on this branch")
    name = json.loads((ROOT / "metrics" / "machine.json").read_text())["name"]
    kept = ROOT / "results" / name
    for path in map(Path, tracked):
        parts = path.parts[1:]
        if path.name in report.OUTPUTS:  # the cross-machine report: redrawn, never kept
            continue
        if path.name == "dvc.lock":
            twin = kept / "dvc.lock"
        elif len(parts) == 1:
            twin = kept / parts[0]
        else:
            twin = kept / "metrics" / Path(*parts)
        assert twin.is_file(), f"{path} is not in {kept} (keep the run with `mnistbench keep`)"
        if path.name == "dvc.lock":  # the report stage depends on results/, the copy included
            ours, theirs = (yaml.safe_load(p.read_text())["stages"] for p in (ROOT / path, twin))
            ours.pop("report", None), theirs.pop("report", None)
            assert ours == theirs, f"{path}'s stages differ from {twin}'s"
            continue
        assert (ROOT / path).read_bytes() == twin.read_bytes(), f"{path} differs from {twin}"


@pytest.mark.parametrize(
    "files, quota",
    [
        ({"cpu.max": "150000 100000\n"}, 1.5),  # cgroup v2
        ({"cpu.max": "max 100000\n"}, None),
        ({"cpu/cpu.cfs_quota_us": "100000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 1.0),  # v1
        (
            {
                "cpu,cpuacct/cpu.cfs_quota_us": "50000\n",
                "cpu,cpuacct/cpu.cfs_period_us": "100000\n",
            },
            0.5,
        ),
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
        ({}, None),
    ],
)
def test_a_cpu_limit_is_read_under_cgroup_v1_and_v2(tmp_path, files, quota):
    """A node with a 1-CPU quota must not fingerprint as an unlimited one, whichever cgroup
    version its kernel mounts."""
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert envinfo.cpu_quota(tmp_path) == quota


def _table(markdown: str) -> dict[tuple[str, str], str]:
    """A Markdown table whose first column is `backend` as {(backend, column): cell}, with
    Markdown's escapes (\\*) read as what they print."""
    lines = [line for line in markdown.splitlines() if line.startswith("| ")]
    head = next(i for i, line in enumerate(lines) if line.split("|")[1].strip() in ("", "backend"))
    names = [c.strip() for c in lines[head].strip("|").split("|")][1:]
    cells = {}
    for line in lines[head + 1 :]:
        row = [c.strip().replace("\\*", "*") for c in line.strip("|").split("|")]
        if len(row) != len(names) + 1 or not row[0].startswith("`"):
            break
        cells.update({(row[0], name): cell for name, cell in zip(names, row[1:], strict=True)})
    return cells


def test_the_readmes_results_table_is_the_reports():
    """The README's table is results/machines.md's (what `mnistbench report` draws from
    results/), cell for cell, whatever order the columns come in: never hand-copied numbers."""
    readme = _table((ROOT / "README.md").read_text().split("## Results", 1)[1])
    drawn = _table((ROOT / "results" / "machines.md").read_text())
    assert readme, "no results table in the README"
    assert readme == drawn
