"""The package as a user meets it: `mnistbench --version`, a requires-python the pinned
requirements can meet, and thread settings on systems without CPU affinity (macOS)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

from mnistbench import frameworks

ROOT = Path(__file__).resolve().parents[1]


def test_version_is_the_installed_distributions():
    done = subprocess.run(
        [sys.executable, "-m", "mnistbench", "--version"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"mnistbench {metadata.version('mnistbench')}\n"


def test_requires_python_is_what_every_pin_needs():
    """pyproject's lowest Python must satisfy each pinned package's own Requires-Python (as
    installed here): numpy 2.4 needs 3.11, so ">=3.10" would promise an install that fails."""
    specifiers = pytest.importorskip("packaging.specifiers")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lowest = re.fullmatch(r">=\s*(\d+\.\d+)", project["requires-python"].strip())
    assert lowest, f"requires-python {project['requires-python']!r}: expected '>=X.Y'"
    pins = {
        name
        for lock in ("requirements.txt", "constraints.txt")  # the lock: numpy too
        for name in re.findall(r"^([A-Za-z0-9_.-]+)==", (ROOT / lock).read_text(), re.M)
    }
    too_new = {}
    for name in sorted(pins):
        try:
            needs = metadata.metadata(name).get("Requires-Python")
        except metadata.PackageNotFoundError:
            continue  # not installed here (e.g. a Docker-only tool)
        if needs and not specifiers.SpecifierSet(needs).contains(f"{lowest[1]}.0"):
            too_new[name] = needs
    assert not too_new, f"requires-python >={lowest[1]} but these pins need more: {too_new}"
    assert sys.version_info >= tuple(map(int, lowest[1].split(".")))


@pytest.mark.parametrize("threads", [None, 2])
def test_threads_without_cpu_affinity(monkeypatch, threads):
    """macOS has no os.sched_getaffinity: nothing is pinned, cpus_usable is unknown (None)."""
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.delattr(os, "sched_setaffinity", raising=False)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "XLA_FLAGS"):
        monkeypatch.setenv(var, "unset by the test")  # restored afterwards
    applied = frameworks.configure_threads(threads)
    assert applied == {"threads": threads, "cpus_usable": None}
    if threads is not None:
        assert os.environ["OMP_NUM_THREADS"] == "2"
