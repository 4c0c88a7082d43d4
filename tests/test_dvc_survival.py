"""Results survive failed and interrupted `dvc repro` / `dvc exp run`: a real DVC, a real repo.

DVC deletes a stage's outputs before it runs the stage; with `cache: false` (the results live
in git) there is nothing to restore them from, so a run that fails or is stopped used to leave
no results at all. dvc.yaml marks them `persist: true`, and the stages replace them whole
themselves. Each test runs the repository's own dvc.yaml and src/ in a fresh git + DVC
repository holding a reference machine's results as its metrics/, breaks something as a user
would, and checks that every result is byte-for-byte what it was.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import repo_backends

from mnistbench import layout

ROOT = Path(__file__).resolve().parents[1]
BIN = str(Path(sys.executable).parent)  # dvc and mnistbench of this environment
BACKENDS = ("jax-scan", "torch-tensor")  # fast ones, on data/raw


def _copy_results(reference: Path, metrics: Path) -> None:
    """A kept run's metrics folder into `metrics`, laid out as the stages write them now
    (mnistbench.layout): a backend's folder under train/, a repeat round's under
    repeats/<round>/train/. A reference kept before train/ existed is moved there."""
    shutil.copytree(reference, metrics)
    rounds = [d for d in layout.repeats_root(metrics).glob("*") if d.name.isdigit()]
    for root in (metrics, *rounds):
        for folder in sorted(root.iterdir()):
            if folder.is_dir() and (folder / layout.METRICS_FILE).is_file():
                if folder.name == layout.ROOFLINE_DIR:
                    continue  # the roofline stage's, no backend
                layout.train_dir(root).mkdir(exist_ok=True)
                folder.rename(layout.backend_dir(root, folder.name))


def _results(repo: Path) -> dict[str, bytes]:
    """Every file under metrics/ (results, and anything a run left behind), by path."""
    return {
        str(p.relative_to(repo)): p.read_bytes()
        for p in sorted((repo / "metrics").rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """The project's dvc.yaml, src/ and params, in a new git + DVC repo, with a reference
    run's results (results/amd-epyc-2cpu/, every backend) as metrics/, laid out as the
    stages write them.
    params: the repository's, with two backends and the mirror in this checkout."""
    repo = tmp_path_factory.mktemp("dvc-repo")
    shutil.copytree(ROOT / "src", repo / "src", ignore=shutil.ignore_patterns("__pycache__"))
    reference = ROOT / "results" / "amd-epyc-2cpu"
    _copy_results(reference / "metrics", repo / "metrics")
    assert layout.metrics_path(repo / "metrics", "jax-scan").is_file()
    for name in ("summary.json", "summary.md", "epoch_time.png", "curves.png"):
        shutil.copyfile(reference / name, repo / "metrics" / name)
    shutil.copyfile(ROOT / "dvc.yaml", repo / "dvc.yaml")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"]["mirrors"] = [str(ROOT / "data" / "mirror")]
    params["backends"] = repo_backends(*BACKENDS)  # full entries: dvc.yaml's foreach needs them
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (repo / ".gitignore").write_text("__pycache__/\n")
    for cmd in (
        ["git", "init", "-q"],
        ["dvc", "init", "-q"],
        ["cp", "-r", str(ROOT / ".dvc" / "plots"), str(repo / ".dvc" / "plots")],  # dvc.yaml's
        ["dvc", "config", "core.analytics", "false"],
        ["dvc", "repro", "download"],  # up to date, as in a clone after `dvc pull`
        ["dvc", "repro", "machine"],  # this machine's fingerprint, as after a first run
        ["git", "add", "-A"],
        ["git", "commit", "-qm", "base"],
    ):
        subprocess.run(cmd, cwd=repo, env=_env(repo), check=True, capture_output=True)
    return repo


def _env(repo: Path) -> dict[str, str]:
    """DVC's stages run `mnistbench` from this environment, with the repo's copy of src/."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DVC_", "GIT_"))}
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        PYTHONPATH=str(repo / "src"),
        TF_CPP_MIN_LOG_LEVEL="2",
        DVC_NO_ANALYTICS="1",
        JAX_PLATFORMS="cpu",
        GIT_AUTHOR_NAME="test",
        GIT_AUTHOR_EMAIL="test@example.com",
        GIT_COMMITTER_NAME="test",
        GIT_COMMITTER_EMAIL="test@example.com",
    )
    return env


def _dvc(repo: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["dvc", *args], cwd=repo, env=_env(repo), capture_output=True, text=True, timeout=timeout
    )


def _set(repo: Path, **train: object) -> None:
    """Edit params.yaml as a user would (restored by `git checkout` after each test)."""
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for key, value in train.items():
        section, name = key.split("__")
        params[section][name] = value
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture
def restore(repo):
    yield
    subprocess.run(["git", "checkout", "-q", "--", "params.yaml", "metrics"], cwd=repo, check=True)


def test_failing_train_stage_keeps_its_results(repo, restore):
    """`lr: -1`, then `dvc repro train@jax-scan`: the stage fails; its results stay."""
    before = _results(repo)
    _set(repo, train__lr=-1)
    proc = _dvc(repo, "repro", "train@jax-scan")
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "Running stage 'train@jax-scan'" in output  # download is up to date: not the culprit
    assert "error: params: train.lr must be > 0" in output
    assert _results(repo) == before


def test_failing_compare_keeps_the_previous_summary(repo, restore):
    """A truncated metrics.json, then `dvc repro -s compare`: compare refuses it, and
    summary.json, summary.md and both PNGs stay as they were."""
    path = layout.metrics_path(repo / "metrics", "torch-tensor")
    path.write_bytes(path.read_bytes()[:100])
    before = _results(repo)
    proc = _dvc(repo, "repro", "-s", "compare")
    assert proc.returncode != 0
    assert "metrics/train/torch-tensor/metrics.json" in proc.stdout + proc.stderr
    assert _results(repo) == before
    assert {
        "metrics/summary.json",
        "metrics/summary.md",
        "metrics/epoch_time.png",
        "metrics/curves.png",
    } <= set(before)


def test_exp_run_with_a_typo_keeps_results_and_says_how_to_restore_params(repo, restore):
    """`dvc exp run -S +train.bach_size=64`: DVC writes the typo into params.yaml and leaves it
    there when the stage fails (its own behaviour); the error names the key and the command
    that restores params.yaml, and no result is lost."""
    before = _results(repo)
    proc = _dvc(repo, "exp", "run", "-S", "+train.bach_size=64", "train@torch-tensor")
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "Running stage 'train@torch-tensor'" in output
    assert "unknown key train.bach_size" in output
    assert "`git checkout params.yaml` undoes them" in output
    assert "bach_size" in (repo / "params.yaml").read_text()  # DVC's doing, as the error says
    assert _results(repo) == before


def test_interrupted_training_keeps_the_previous_results(repo, restore):
    """Ctrl-C (SIGINT to the whole process group, as a terminal sends it) during a long
    `dvc repro train@jax-scan`: the previous results stay, and nothing half-written."""
    before = _results(repo)
    # epochs: far more than can finish before the SIGKILL below, even if SIGINT were lost
    _set(repo, data__limit_train=2000, data__limit_test=500, train__epochs=100000)
    proc = subprocess.Popen(
        ["dvc", "repro", "train@jax-scan"],
        cwd=repo,
        env=_env(repo),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        # Ctrl-C as in a terminal: SIGINT at its default, even if the test runner's process
        # ignores it (an ignored signal stays ignored across exec, down to the stage)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    seen = []
    try:
        deadline = time.monotonic() + 240
        for line in proc.stdout:  # training logs each epoch
            seen.append(line)
            if "epoch 2/100000" in line or time.monotonic() > deadline:
                break
        assert any("epoch 2/100000" in line for line in seen), "".join(seen[-30:])
        os.killpg(proc.pid, signal.SIGINT)
        proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode != 0
    assert _results(repo) == before
    for folder in (repo / "metrics", layout.train_dir(repo / "metrics")):
        leftovers = [p.name for p in folder.iterdir() if p.name.startswith(".")]
        assert leftovers == [], folder  # no staging folder, no lock file
