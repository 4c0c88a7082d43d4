"""DVC's own views on a fresh clone: `dvc metrics show` and `dvc plots show` work (the
committed reference run is the workspace's), and `dvc params diff` names a changed param. A
real DVC in a real clone. (That a batch-size change's `dvc metrics diff` fits on a screen is
the branch workflow's test, tests/test_compare.py.)"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from conftest import clone_env

from mnistbench import config

HEADLINE_KEYS = (
    "epoch_s",
    "epoch_s_lo",
    "epoch_s_hi",
    "speedup",
    "speedup_lo",
    "speedup_hi",
    "val_acc",
    "rounds",
    "batch_size",
    "epochs",
)
SCREEN_COLUMNS = 200  # a wide terminal: `dvc metrics show` must fit it

ROOT = Path(__file__).resolve().parents[1]


def _dvc(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["dvc", *args], cwd=repo, env=clone_env(repo), capture_output=True, text=True
    )


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    repo = tmp_path_factory.mktemp("views") / "repo"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(repo)], check=True)
    return repo


def test_metrics_show_works_on_a_fresh_clone(clone):
    done = _dvc(clone, "metrics", "show", "--json")
    assert done.returncode == 0, done.stderr
    assert "failed to load" not in done.stderr + done.stdout
    shown = json.loads(done.stdout)
    files = next(iter(shown.values()))["data"]
    names = list(config.load(clone / "params.yaml").backends)
    # a file per backend, nothing else: no single run poses as the result
    assert sorted(files) == sorted(f"metrics/headline/{name}.json" for name in names)
    for name in names:
        row = files[f"metrics/headline/{name}.json"]["data"]
        assert {"epoch_s", "speedup", "val_acc", "rounds"} <= set(row) <= set(HEADLINE_KEYS), name
        assert all(isinstance(v, (int, float)) for v in row.values()), name
        if row["rounds"] > 1:  # the estimate inside its interval
            assert row["epoch_s_lo"] <= row["epoch_s"] <= row["epoch_s_hi"], name


def test_metrics_show_fits_a_terminal_a_row_per_backend(clone):
    done = _dvc(clone, "metrics", "show")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    names = list(config.load(clone / "params.yaml").backends)
    assert len(lines) == 1 + len(names), done.stdout
    assert max(map(len, lines)) <= SCREEN_COLUMNS, done.stdout


def test_plots_show_works_on_a_fresh_clone(clone, tmp_path):
    done = _dvc(clone, "plots", "show", "-o", str(tmp_path / "plots"))
    assert done.returncode == 0, done.stderr
    assert "failed to load" not in done.stderr + done.stdout
    html = (tmp_path / "plots" / "index.html").read_text()
    for title in ("validation accuracy per epoch", "share of the CPUs other processes used"):
        assert title in html


def test_params_diff_names_a_changed_param(clone):
    git = ["git", "-c", "commit.gpgsign=false"]
    env = clone_env(clone)
    subprocess.run([*git, "checkout", "-q", "-b", "bs64"], cwd=clone, env=env, check=True)
    params = clone / "params.yaml"
    params.write_text(params.read_text().replace("batch_size: 32", "batch_size: 64", 1))
    subprocess.run([*git, "commit", "-qam", "batch 64"], cwd=clone, env=env, check=True)
    done = _dvc(clone, "params", "diff", "HEAD~1", "HEAD", "--json")
    assert done.returncode == 0, done.stderr
    changed = json.loads(done.stdout)["params.yaml"]
    assert changed == {"train.batch_size": {"old": 32, "new": 64, "diff": 32}}
    subprocess.run([*git, "checkout", "-q", "-"], cwd=clone, env=env, check=True)


VIEWS = ("dvc metrics show", "dvc exp show", "mnistbench --help", "mnistbench backends")


def _readme_views() -> list[str]:
    """The README's commands that only read (DVC's views, the CLI's help), as typed there: in
    its sh blocks and its inline code."""
    text = (ROOT / "README.md").read_text()
    typed = re.findall(r"```sh\n(.*?)```", text, flags=re.S)
    lines = [line.split("  #")[0].strip() for block in typed for line in block.splitlines()]
    lines += re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S))
    # bare `dvc exp show` is named there as what is too wide to read, not as a command to type
    return sorted({line for line in lines if line.startswith(VIEWS) and line != "dvc exp show"})


def test_the_readme_names_its_views():
    assert {v for v in VIEWS if any(c.startswith(v) for c in _readme_views())} >= {
        "dvc metrics show",
        "dvc exp show",
        "mnistbench --help",
    }


@pytest.mark.parametrize("command", _readme_views())
def test_each_readme_view_runs_as_typed_and_fits_a_terminal(clone, command):
    env = {**clone_env(clone), "COLUMNS": str(SCREEN_COLUMNS)}  # the venv's commands on PATH
    done = subprocess.run(
        ["bash", "-c", command], cwd=clone, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, f"{command}: {done.stderr}"
    assert "failed to load" not in done.stderr + done.stdout, command
    lines = done.stdout.splitlines()
    assert lines and max(map(len, lines)) <= SCREEN_COLUMNS, f"{command}:\n{done.stdout}"
    assert "…" not in done.stdout, f"{command}: columns cut to fit:\n{done.stdout}"


def test_the_readmes_machine_branches_run_as_typed(tmp_path):
    """README, "Your machine against others": commit this machine's run on a branch, then
    `mnistbench diff` and `dvc metrics diff` against another machine's branch, as typed.
    The other machine's branch is the committed reference; this machine's run is that run
    with one backend's number moved (a stand-in: the commands, not the numbers, are tested)."""
    text = (ROOT / "README.md").read_text()
    block = next(b for b in re.findall(r"```sh\n(.*?)```", text, flags=re.S) if "git switch" in b)
    repo = tmp_path / "repo"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(repo)], check=True)
    env = {**clone_env(repo), "COLUMNS": str(SCREEN_COLUMNS)}
    other = re.search(r"mnistbench diff \S+ (\S+)", block).group(1)
    subprocess.run(["git", "branch", other], cwd=repo, env=env, check=True)
    moved = repo / "metrics" / "headline" / "jax-scan.json"
    row = json.loads(moved.read_text())
    moved.write_text(json.dumps({**row, "epoch_s": row["epoch_s"] * 1.5}, indent=2) + "\n")
    done = subprocess.run(["bash", "-ec", block], cwd=repo, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "jax-scan" in done.stdout and "no significant difference" in done.stdout, done.stdout
    assert "metrics/headline/jax-scan.json" in done.stdout, done.stdout  # dvc metrics diff
