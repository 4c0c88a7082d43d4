"""scripts/install.sh (make install): PyTorch's CPU build where no NVIDIA GPU is seen, PyPI's
build when PyTorch's index cannot be reached, saying so in one line.

Real uv installs into a temporary environment, from two package indexes served over HTTP on
127.0.0.1 that stand in for PyPI and PyTorch's CPU index: a tiny `tinytorch` 1.0 on the first,
its `1.0+cpu` build on the second (as torch 2.14.1 and 2.14.1+cpu), and a dependency pinned at
a version only the first has (PyTorch's index holds older copies of numpy, pillow, ...).
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "install.sh"
UV = Path(sys.executable).parent / "uv"
FALLBACK = "cannot be reached"


def _wheel(folder: Path, name: str, version: str, build: str, requires: str = "") -> Path:
    """A pure-Python wheel whose module says which build it is (`BUILD`)."""
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": f"BUILD = {build!r}\n",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        + (f"Requires-Dist: {requires}\n" if requires else ""),
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{path},sha256={digest.decode()},{len(text.encode())}")
    files[f"{dist}/RECORD"] = "\n".join([*record, f"{dist}/RECORD,,"]) + "\n"
    path = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for member, text in files.items():
            z.writestr(member, text)
    return path


def _index(root: Path, wheels: dict[str, list[Path]]) -> None:
    """A PEP 503 simple index under root: <project>/index.html linking its wheels."""
    for project, paths in wheels.items():
        page = root / project
        page.mkdir(parents=True)
        links = "".join(
            f'<a href="{urllib.parse.quote(p.name)}">{p.name}</a>\n' for p in paths
        )  # '+' as %2B, as PyTorch's index writes it
        (page / "index.html").write_text(f"<html><body>\n{links}</body></html>\n")
        for p in paths:
            shutil.copy(p, page / p.name)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    hits: list[str]

    def log_message(self, format: str, *args) -> None:
        self.hits.append(self.path)


@pytest.fixture(scope="module")
def indexes(tmp_path_factory) -> Iterator[tuple[str, str, list[str]]]:
    """(PyPI's URL, the CPU index's URL, the paths requested so far), served on 127.0.0.1."""
    tmp = tmp_path_factory.mktemp("indexes")
    wheels = tmp / "wheels"
    wheels.mkdir()
    pypi = {
        "tinytorch": [_wheel(wheels, "tinytorch", "1.0", "pypi", "tinydep")],
        "tinydep": [_wheel(wheels, "tinydep", "2.0", "pypi")],
    }
    cpu = {
        "tinytorch": [_wheel(wheels, "tinytorch", "1.0+cpu", "cpu", "tinydep")],
        "tinydep": [_wheel(wheels, "tinydep", "1.0", "old copy")],
        "torch": [],  # the page scripts/install.sh asks for to see that the index answers
    }
    _index(tmp / "site" / "pypi", pypi)
    _index(tmp / "site" / "cpu", cpu)
    hits: list[str] = []
    handler = type("Handler", (_Quiet,), {"hits": hits})
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0),
        lambda *a: handler(*a, directory=str(tmp / "site")),
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    yield f"{base}/pypi", f"{base}/cpu", hits
    server.shutdown()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed once the with block ends: connections are refused


def _install(tmp: Path, pypi: str, env: dict[str, str]) -> tuple[subprocess.CompletedProcess, str]:
    """scripts/install.sh into a new environment; returns its run and tinytorch's version and
    build as installed ('1.0 pypi')."""
    venv = tmp / "venv"
    subprocess.run([str(UV), "venv", "-q", "--python", sys.executable, str(venv)], check=True)
    (tmp / "req.txt").write_text("tinytorch==1.0\n")
    (tmp / "constraints.txt").write_text("tinytorch==1.0\ntinydep==2.0\n")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("UV_", "TORCH_"))}
    run = subprocess.run(
        [SCRIPT, venv / "bin" / "python", "--index-url", pypi]
        + ["-r", tmp / "req.txt", "-c", tmp / "constraints.txt"],
        env={**clean, "UV": str(UV), "UV_CACHE_DIR": str(tmp / "cache"), "UV_NO_CONFIG": "1"} | env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    got = subprocess.run(
        [venv / "bin" / "python", "-c"]
        + [
            "import importlib.metadata as m, tinytorch; "
            "print(m.version('tinytorch'), tinytorch.BUILD, m.version('tinydep'))"
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return run, got.stdout.strip()


def test_cpu_build_from_the_cpu_index(indexes, tmp_path):
    """1.0+cpu satisfies the pin ==1.0 and wins over PyPI's 1.0; the dependency comes at its
    pinned version from PyPI, though the CPU index lists an older one."""
    pypi, cpu, _ = indexes
    run, got = _install(tmp_path, pypi, {"TORCH_BACKEND": "cpu", "TORCH_INDEX_URL": cpu})
    assert got == "1.0+cpu cpu 2.0", run.stdout + run.stderr
    assert run.stdout.splitlines() == [
        f"install: torch from PyTorch's CPU index ({cpu}; TORCH_BACKEND=cuda for PyPI's CUDA build)"
    ]


def test_unreachable_cpu_index_falls_back_to_pypi_in_one_line(indexes, tmp_path):
    pypi, _, _ = indexes
    dead = f"http://127.0.0.1:{_closed_port()}/cpu"
    run, got = _install(tmp_path, pypi, {"TORCH_BACKEND": "cpu", "TORCH_INDEX_URL": dead})
    assert got == "1.0 pypi 2.0", run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert len(lines) == 1, run.stdout
    assert dead in lines[0] and FALLBACK in lines[0] and "Connection refused" in lines[0]
    assert "a CUDA build, ~4.1 GB more" in lines[0]
    assert FALLBACK not in run.stderr


def test_silent_cpu_index_is_given_up_within_its_timeout(indexes, tmp_path):
    """A host that accepts the connection and never answers costs TORCH_INDEX_TIMEOUT_S, not
    uv's retries."""
    pypi, _, _ = indexes
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # the kernel completes the handshake; nobody ever reads or answers
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/cpu"
        t0 = time.monotonic()
        run, got = _install(
            tmp_path,
            pypi,
            {"TORCH_BACKEND": "cpu", "TORCH_INDEX_URL": url, "TORCH_INDEX_TIMEOUT_S": "1"},
        )
        took = time.monotonic() - t0
    assert got == "1.0 pypi 2.0"
    assert FALLBACK in run.stdout
    assert took < 30, f"{took:.0f} s"  # 1 s of probe, plus the install (well under a second)


def test_cuda_backend_asks_no_cpu_index(indexes, tmp_path):
    pypi, cpu, hits = indexes
    before = len(hits)
    run, got = _install(tmp_path, pypi, {"TORCH_BACKEND": "cuda", "TORCH_INDEX_URL": cpu})
    assert got == "1.0 pypi 2.0"
    assert run.stdout == ""
    assert not [h for h in hits[before:] if h.startswith("/cpu")]


def test_auto_with_a_gpu_takes_pypis_build(indexes, tmp_path):
    """A working nvidia-smi means a GPU: PyPI's (CUDA) build, the CPU index never asked."""
    pypi, cpu, hits = indexes
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "nvidia-smi").write_text("#!/bin/sh\necho 'GPU 0: fake'\n")
    (fake / "nvidia-smi").chmod(0o755)
    before = len(hits)
    run, got = _install(
        tmp_path,
        pypi,
        {"TORCH_BACKEND": "auto", "TORCH_INDEX_URL": cpu, "PATH": f"{fake}:{os.environ['PATH']}"},
    )
    assert got == "1.0 pypi 2.0"
    assert not [h for h in hits[before:] if h.startswith("/cpu")]


@pytest.mark.skipif(
    sys.platform != "linux" or Path("/dev/nvidia0").exists() or shutil.which("nvidia-smi"),
    reason="this machine has an NVIDIA GPU (or is not Linux): auto picks PyPI's build here",
)
def test_auto_without_a_gpu_takes_the_cpu_build(indexes, tmp_path):
    pypi, cpu, _ = indexes
    run, got = _install(tmp_path, pypi, {"TORCH_INDEX_URL": cpu})  # TORCH_BACKEND unset: auto
    assert got == "1.0+cpu cpu 2.0", run.stdout + run.stderr


def test_unknown_backend_is_a_one_line_error(tmp_path):
    run = subprocess.run(
        [SCRIPT, sys.executable, "six"],
        env={**os.environ, "TORCH_BACKEND": "rocm"},
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2
    assert run.stderr == "error: TORCH_BACKEND is 'rocm': use auto, cpu or cuda\n"


def test_make_install_uses_the_script(tmp_path):
    """make install runs the requirements through scripts/install.sh (dry run: nothing made)."""
    out = subprocess.run(
        ["make", "-n", "-B", "install", f"VENV={tmp_path / 'venv'}", "TORCH_BACKEND=cpu"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    line = next(x for x in out.splitlines() if "scripts/install.sh" in x and "-r " in x)
    assert "TORCH_BACKEND=cpu" in line and "-r requirements-dev.txt -c constraints.txt" in line


def test_make_install_checks_torch_backend_before_it_installs_anything(tmp_path):
    """A wrong TORCH_BACKEND is the script's one line, before the venv is made and pip and uv
    are upgraded (it came only after those)."""
    venv = tmp_path / "venv"
    run = subprocess.run(
        ["make", "-B", "install", f"VENV={venv}", "TORCH_BACKEND=rocm"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert run.returncode != 0
    assert "error: TORCH_BACKEND is 'rocm': use auto, cpu or cuda\n" in run.stderr
    assert not venv.exists()
    ok = subprocess.run([SCRIPT, "--check"], env={**os.environ, "TORCH_BACKEND": "cpu"})
    assert ok.returncode == 0
