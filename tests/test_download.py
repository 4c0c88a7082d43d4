"""Stage `download` against real mirrors: a local HTTP server, file:// URLs and folders.

The HTTP server (http.server in a thread on 127.0.0.1) serves the repository's verified copy
(data/mirror/*.gz) under one URL prefix per behaviour, e.g. http://127.0.0.1:<port>/missing/
answers 404 and /good/ serves the real files. Nothing here mocks the network.
"""

from __future__ import annotations

import collections
import http.server
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import zlib
from pathlib import Path

import pytest

from mnistbench import config, download, inputs
from mnistbench.download import DownloadError
from mnistbench.mnist import FILES

ROOT = Path(__file__).resolve().parents[1]
MIRROR = ROOT / "data" / "mirror"
GZ = {f.name: (MIRROR / f"{f.name}.gz").read_bytes() for f in FILES}
SPEC = {f.name: f for f in FILES}
MNISTBENCH = str(Path(sys.executable).parent / "mnistbench")


def _corrupt(body: bytes) -> bytes:
    """The same length with 64 bytes flipped mid-stream: gunzip fails (data or CRC check)."""
    b = bytearray(body)
    mid = len(b) // 2
    for i in range(mid, mid + 64):
        b[i] ^= 0xFF
    return bytes(b)


def _other(name: str) -> bytes:
    """A valid gzip of another MNIST file: decompresses fine, fails the checksum."""
    names = [f.name for f in FILES]
    return GZ[names[(names.index(name) + 1) % len(names)]]


class _Handler(http.server.BaseHTTPRequestHandler):
    """GET /<behaviour>/<name>.gz. Behaviours:

    good: the file; missing: 404; error: 503; hangup: closes without answering;
    corrupt: bytes flipped; wrong: another file's gzip; truncated: Content-Length of the whole
    file, half of it sent, then the connection closed; flaky: truncated on the first request
    of each file, good afterwards; slow: waits server.slow_s before answering; stall: sends
    half, sets server.half_sent, then waits (until the test ends) without closing; drip: the
    headers, then one byte a second; bomb: gzip of zeros, without end, that a client would
    decompress until its disk is full.
    """

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        srv = self.server
        parts = self.path.strip("/").split("/")
        mode, name = (parts[0], parts[1].removesuffix(".gz")) if len(parts) == 2 else ("", "")
        with srv.lock:
            srv.requests.append((mode, name))
            nth = srv.requests.count((mode, name))
        if name not in GZ or mode == "missing":
            self.send_error(404, "Not Found")
            return
        if mode == "error":
            self.send_error(503, "Service Unavailable")
            return
        if mode == "hangup":
            self.close_connection = True
            return
        if mode == "slow":
            srv.release.wait(srv.slow_s)
        if mode in ("drip", "bomb"):
            self._stream(mode, srv)
            return
        if mode == "corrupt":
            body = _corrupt(GZ[name])
        elif mode == "wrong":
            body = _other(name)
        else:
            body = GZ[name]
        self.send_response(200)
        self.send_header("Content-Type", "application/gzip")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if mode == "truncated" or (mode == "flaky" and nth == 1):
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        if mode == "stall":
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            srv.half_sent.set()
            srv.release.wait(120)
            return
        self.wfile.write(body)

    def _stream(self, mode: str, srv) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/gzip")
        if mode == "drip":
            self.send_header("Content-Length", str(len(GZ["train-labels-idx1-ubyte"])))
        self.end_headers()
        body, gzip = iter(GZ["train-labels-idx1-ubyte"]), zlib.compressobj(9, wbits=31)
        expanded = 0
        while not srv.release.is_set() and expanded < (4 << 30):  # 4 GiB: a safety net
            if mode == "drip":
                data = bytes([next(body)])
                srv.release.wait(1.0)
            else:
                data = gzip.compress(bytes(1 << 20)) + gzip.flush(zlib.Z_SYNC_FLUSH)
                expanded += 1 << 20
            try:
                self.wfile.write(data)
                self.wfile.flush()
            except OSError:
                return  # the client gave up: what it should do
            with srv.lock:
                srv.sent[mode] = srv.sent.get(mode, 0) + (1 << 20 if mode == "bomb" else 1)  # bytes

    def log_message(self, *args) -> None:
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        pass  # clients that give up mid-body (bad gzip, timeouts) break pipes: expected

    def url(self, mode: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/{mode}/"

    def count(self, mode: str | None = None) -> collections.Counter:
        with self.lock:
            return collections.Counter(r for r in self.requests if mode in (None, r[0]))


@pytest.fixture
def server():
    srv = _Server(("127.0.0.1", 0), _Handler)
    srv.lock, srv.requests, srv.sent = threading.Lock(), [], {}
    srv.release, srv.half_sent, srv.slow_s = threading.Event(), threading.Event(), 2.0
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.release.set()
    srv.shutdown()
    srv.server_close()


@pytest.fixture(autouse=True)
def _fast_backoff(monkeypatch):
    monkeypatch.setattr(download, "BACKOFF_S", 0.01)
    monkeypatch.delenv(download.ENV_MIRRORS, raising=False)


@pytest.fixture
def closed_port() -> int:
    """A local port nobody listens on: connecting is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cfg(raw: Path, *mirrors: str, retries: int = 3, timeout_s: float = 10.0) -> config.DataConfig:
    return config.DataConfig(
        raw_dir=str(raw), mirrors=tuple(mirrors), retries=retries, timeout_s=timeout_s
    )


def _prefill(raw: Path, source: Path, *names: str) -> None:
    """Copy verified files (from the session's raw_dir) so that only the others are fetched."""
    raw.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copyfile(source / name, raw / name)


def _all_but(*names: str) -> list[str]:
    return [f.name for f in FILES if f.name not in names]


def _count_attempts(monkeypatch) -> collections.Counter:
    """Spy (not a mock): counts real fetch attempts per mirror."""
    attempts: collections.Counter = collections.Counter()
    real = download._fetch_verified

    def spy(spec, dest, mirror, timeout_s):
        attempts[mirror] += 1
        return real(spec, dest, mirror, timeout_s)

    monkeypatch.setattr(download, "_fetch_verified", spy)
    return attempts


def test_falls_through_404_and_corrupt_to_the_good_mirror(server, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="mnistbench.download")
    raw = tmp_path / "raw"
    missing, corrupt, good = server.url("missing"), server.url("corrupt"), server.url("good")

    served = download.download_all(_cfg(raw, missing, corrupt, good), environ={})

    assert served == {f.name: good for f in FILES}
    assert sorted(os.listdir(raw)) == sorted(f.name for f in FILES)
    assert all(inputs.is_valid(raw / f.name, f) for f in FILES)
    # a 404 and a bad gzip are permanent: one request each, no retries
    assert server.count() == collections.Counter(
        {(m, f.name): 1 for m in ("missing", "corrupt", "good") for f in FILES}
    )
    for f in FILES:
        assert f"{f.name}: served by {good}" in caplog.text
    assert "HTTP 404" in caplog.text
    assert "not a valid gzip stream" in caplog.text


def test_checksum_mismatch_moves_on(server, tmp_path, raw_dir, caplog):
    caplog.set_level(logging.INFO, logger="mnistbench.download")
    raw = tmp_path / "raw"
    _prefill(raw, raw_dir, *_all_but("t10k-images-idx3-ubyte"))  # "wrong" serves the labels
    served = download.download_all(_cfg(raw, server.url("wrong"), server.url("good")), environ={})
    assert served["t10k-images-idx3-ubyte"] == server.url("good")
    assert "checksum mismatch for t10k-images-idx3-ubyte.gz" in caplog.text
    assert server.count("wrong") == {("wrong", "t10k-images-idx3-ubyte"): 1}


def test_truncated_response_is_retried_then_reported(server, tmp_path, raw_dir):
    raw = tmp_path / "raw"
    _prefill(raw, raw_dir, *_all_but("train-labels-idx1-ubyte"))
    before = sorted(os.listdir(raw))
    with pytest.raises(DownloadError) as e:
        download.download_all(_cfg(raw, server.url("truncated"), retries=3), environ={})
    message = str(e.value)
    assert server.url("truncated") in message
    assert "truncated response" in message and "after 3 attempts" in message
    assert server.count() == {("truncated", "train-labels-idx1-ubyte"): 3}
    assert sorted(os.listdir(raw)) == before  # no partial file left behind


def test_flaky_mirror_succeeds_on_retry(server, tmp_path, raw_dir):
    raw = tmp_path / "raw"
    _prefill(raw, raw_dir, *_all_but("train-labels-idx1-ubyte", "t10k-labels-idx1-ubyte"))
    served = download.download_all(_cfg(raw, server.url("flaky"), retries=2), environ={})
    assert (
        served["train-labels-idx1-ubyte"] == served["t10k-labels-idx1-ubyte"] == server.url("flaky")
    )
    assert server.count() == {
        ("flaky", "train-labels-idx1-ubyte"): 2,
        ("flaky", "t10k-labels-idx1-ubyte"): 2,
    }


def test_server_errors_and_hangups_are_retried_then_skipped(server, tmp_path, raw_dir):
    raw = tmp_path / "raw"
    _prefill(raw, raw_dir, *_all_but("train-labels-idx1-ubyte"))
    mirrors = server.url("hangup"), server.url("error"), server.url("good")
    served = download.download_all(_cfg(raw, *mirrors, retries=2), environ={})
    assert served["train-labels-idx1-ubyte"] == server.url("good")
    assert server.count() == {
        ("hangup", "train-labels-idx1-ubyte"): 2,
        ("error", "train-labels-idx1-ubyte"): 2,
        ("good", "train-labels-idx1-ubyte"): 1,
    }


def test_silent_mirror_times_out_once_and_is_skipped_for_the_other_files(
    server, tmp_path, raw_dir, caplog
):
    """A mirror that accepts connections and never answers costs `retries` timeouts for the
    first file, and nothing for the others (it used to cost that much for each file)."""
    caplog.set_level(logging.INFO, logger="mnistbench.download")
    raw = tmp_path / "raw"
    _prefill(raw, raw_dir, *_all_but("train-labels-idx1-ubyte", "t10k-labels-idx1-ubyte"))
    server.slow_s = 60  # answers only once the test is over; 1 s is the client's limit
    cfg = _cfg(raw, server.url("slow"), server.url("good"), retries=2, timeout_s=1.0)
    start = time.monotonic()
    served = download.download_all(cfg, environ={})
    assert time.monotonic() - start < 6  # two 1 s attempts, not four
    assert set(served.values()) == {"(already present)", server.url("good")}
    assert server.count("slow") == {("slow", "train-labels-idx1-ubyte"): 2}
    assert "not done within 1 s" in caplog.text


def test_dripping_mirror_is_cut_at_the_deadline(server, tmp_path, raw_dir, caplog):
    """Headers, then one byte a second: each read is quick, so only a deadline for the whole
    request ends it (data.timeout_s), and the mirror is then skipped like a silent one."""
    caplog.set_level(logging.INFO, logger="mnistbench.download")
    raw = tmp_path / "raw"
    _prefill(raw, raw_dir, *_all_but("train-labels-idx1-ubyte", "t10k-labels-idx1-ubyte"))
    cfg = _cfg(raw, server.url("drip"), server.url("good"), retries=2, timeout_s=2.0)
    start = time.monotonic()
    served = download.download_all(cfg, environ={})
    assert time.monotonic() - start < 9  # two 2 s attempts, then the good mirror
    assert (
        served["train-labels-idx1-ubyte"] == served["t10k-labels-idx1-ubyte"] == server.url("good")
    )
    assert server.count("drip") == {("drip", "train-labels-idx1-ubyte"): 2}
    assert 1 <= server.sent["drip"] <= 8  # bytes dripped: it was cut, not served
    assert "not done within 2 s (data.timeout_s, for the whole request)" in caplog.text


def test_gzip_bomb_stops_at_the_known_size(server, tmp_path, raw_dir, caplog):
    """A mirror serving gzip that expands without end (1.5 GB seen in the wild) is cut at the
    file's known size (47 MB for the training images), long before any time limit."""
    caplog.set_level(logging.INFO, logger="mnistbench.download")
    raw = tmp_path / "raw"
    _prefill(raw, raw_dir, *_all_but("train-images-idx3-ubyte"))
    cfg = _cfg(raw, server.url("bomb"), server.url("good"), retries=3, timeout_s=120)
    start = time.monotonic()
    served = download.download_all(cfg, environ={})
    assert time.monotonic() - start < 60
    assert served["train-images-idx3-ubyte"] == server.url("good")
    assert "expands beyond the 47040016 bytes" in caplog.text
    assert server.count("bomb") == {("bomb", "train-images-idx3-ubyte"): 1}  # no retry
    # bytes expanded: 45 MiB read, the rest in socket buffers, more when the machine is busy
    # and the server thread runs ahead (114 MiB seen beside the other tests): bounded
    assert server.sent["bomb"] < 256 << 20
    assert sorted(os.listdir(raw)) == sorted(f.name for f in FILES)


@pytest.mark.parametrize("kind", ["refused", "dns"])
def test_unreachable_host_fails_fast(kind, closed_port, tmp_path, monkeypatch):
    """No retries, no backoff: with a 5 s backoff, a single retry would show in the clock."""
    monkeypatch.setattr(download, "BACKOFF_S", 5.0)
    attempts = _count_attempts(monkeypatch)
    dead = (
        f"http://127.0.0.1:{closed_port}/" if kind == "refused" else "http://mnist-mirror.invalid/"
    )
    raw = tmp_path / "raw"
    start = time.monotonic()
    with pytest.raises(DownloadError) as e:
        download.download_all(_cfg(raw, dead, retries=3, timeout_s=30), environ={})
    elapsed = time.monotonic() - start
    assert attempts == {dead: 1}
    assert elapsed < 4.0
    assert f"{dead}: unreachable" in str(e.value)
    assert ("connection refused" if kind == "refused" else "cannot resolve host") in str(e.value)
    assert os.listdir(raw) == []


def test_unreachable_mirror_is_skipped_for_every_file(server, closed_port, tmp_path, monkeypatch):
    monkeypatch.setattr(download, "BACKOFF_S", 5.0)
    attempts = _count_attempts(monkeypatch)
    refused, dns = f"http://127.0.0.1:{closed_port}/", "http://mnist-mirror.invalid/"
    served = download.download_all(
        _cfg(tmp_path / "raw", refused, dns, server.url("good")), environ={}
    )
    assert set(served.values()) == {server.url("good")}
    assert attempts == {refused: 1, dns: 1, server.url("good"): len(FILES)}


def test_only_bad_mirrors_cli_names_every_mirror_and_why(server, closed_port, tmp_path):
    raw = tmp_path / "raw"
    empty = tmp_path / "empty-mirror"
    empty.mkdir()
    mirrors = {
        server.url("missing"): "HTTP 404",
        server.url("wrong"): "checksum mismatch",
        server.url("corrupt"): "not a valid gzip stream",
        server.url("truncated"): "truncated response",
        str(empty): "missing file",
        f"http://127.0.0.1:{closed_port}/": "connection refused",
        "http://mnist-mirror.invalid/": "cannot resolve host",
        (tmp_path / "no-such-folder").as_uri(): "no such folder",
    }
    params = tmp_path / "params.yaml"
    params.write_text(
        textwrap.dedent(f"""\
        data:
          raw_dir: {raw}
          retries: 2
          timeout_s: 10
          mirrors:
        """)
        + "".join(f"    - {m}\n" for m in mirrors)
    )
    env = {k: v for k, v in os.environ.items() if k != download.ENV_MIRRORS}
    proc = subprocess.run(
        [MNISTBENCH, "download", "--params", str(params)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: could not get train-images-idx3-ubyte from any mirror:"]
    message = proc.stderr[proc.stderr.index("error:") :]
    for mirror, why in mirrors.items():
        lines = [line for line in message.splitlines() if line.strip().startswith(f"{mirror}:")]
        assert len(lines) == 1 and why in lines[0], (mirror, why, message)
    assert "after 2 attempts" in message
    assert os.listdir(raw) == []


class _InterruptingBar(download.tqdm):
    """A progress bar whose update raises KeyboardInterrupt, as Ctrl-C mid-download would."""

    def update(self, n=1):
        raise KeyboardInterrupt


def test_interrupted_download_leaves_raw_dir_as_it_was(server, tmp_path, raw_dir, monkeypatch):
    raw = tmp_path / "raw"
    _prefill(raw, raw_dir, "t10k-labels-idx1-ubyte")  # valid from an earlier run
    stale = b"an older, invalid train-images file"
    (raw / "train-images-idx3-ubyte").write_bytes(stale)
    before = {p.name: p.read_bytes() for p in raw.iterdir()}
    monkeypatch.setattr(download, "tqdm", _InterruptingBar)

    with pytest.raises(KeyboardInterrupt):
        download.download_all(_cfg(raw, server.url("good")), environ={})

    assert server.count() == {("good", "train-images-idx3-ubyte"): 1}  # it was mid-download
    assert {p.name: p.read_bytes() for p in raw.iterdir()} == before


def test_killed_download_keeps_old_files_and_next_run_cleans_up(server, tmp_path, raw_dir):
    """SIGKILL skips every cleanup: only a hidden .partial- file may remain, never a bad
    file under its real name, and the next run removes it."""
    raw = tmp_path / "raw"
    _prefill(raw, raw_dir, "t10k-labels-idx1-ubyte")
    stale = b"an older, invalid train-images file"
    (raw / "train-images-idx3-ubyte").write_bytes(stale)
    before = {p.name: p.read_bytes() for p in raw.iterdir()}
    code = (
        "import sys; from mnistbench import config, download; download.download_all("
        "config.DataConfig(raw_dir=sys.argv[1], mirrors=(sys.argv[2],), timeout_s=120), "
        "environ={})"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(raw), server.url("stall")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert server.half_sent.wait(60), "the download never started"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # wait until the half is on disk
            partial = list(raw.glob(download.PARTIAL_PREFIX + "*"))
            if partial and partial[0].stat().st_size > (1 << 20):
                break
            time.sleep(0.05)
        else:
            pytest.fail("no partial file appeared")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)

    after = {
        p.name: p.read_bytes()
        for p in raw.iterdir()
        if not p.name.startswith(download.PARTIAL_PREFIX)
    }
    assert after == before

    served = download.download_all(_cfg(raw, server.url("good")), environ={})
    assert served["t10k-labels-idx1-ubyte"] == "(already present)"
    assert sorted(os.listdir(raw)) == sorted(f.name for f in FILES)
    assert all(inputs.is_valid(raw / f.name, f) for f in FILES)


def test_env_mirrors_are_tried_first(server, tmp_path, monkeypatch):
    """$MNIST_MIRRORS (file://, a folder, http://; commas, spaces, newlines) before params."""
    file_dir, folder = tmp_path / "file-mirror", tmp_path / "folder-mirror"
    file_dir.mkdir()
    folder.mkdir()
    shutil.copyfile(MIRROR / "t10k-images-idx3-ubyte.gz", file_dir / "t10k-images-idx3-ubyte.gz")
    for name in ("train-labels-idx1-ubyte", "t10k-labels-idx1-ubyte"):
        shutil.copyfile(MIRROR / f"{name}.gz", folder / f"{name}.gz")
    file_url, good = file_dir.as_uri(), server.url("good")
    monkeypatch.setenv(download.ENV_MIRRORS, f" {file_url} ,{folder}\n{good}")

    served = download.download_all(_cfg(tmp_path / "raw", str(MIRROR)))  # environ: os.environ

    assert served == {
        "train-images-idx3-ubyte": good,
        "train-labels-idx1-ubyte": str(folder),
        "t10k-images-idx3-ubyte": file_url,
        "t10k-labels-idx1-ubyte": str(folder),
    }
    assert server.count() == {("good", "train-images-idx3-ubyte"): 1}
    assert all(inputs.is_valid(tmp_path / "raw" / f.name, f) for f in FILES)


def test_mirrors_from_order():
    cfg = config.DataConfig(mirrors=("a/", "b/"))
    assert download.mirrors_from(cfg, {}) == ["a/", "b/"]
    assert download.mirrors_from(cfg, {"MNIST_MIRRORS": ""}) == ["a/", "b/"]
    assert download.mirrors_from(cfg, {"MNIST_MIRRORS": "x/, y/ z/"}) == [
        "x/",
        "y/",
        "z/",
        "a/",
        "b/",
    ]


def test_valid_files_are_not_downloaded_again(server, tmp_path, raw_dir):
    raw = tmp_path / "raw"
    _prefill(raw, raw_dir, *(f.name for f in FILES))
    mtimes = {p.name: p.stat().st_mtime_ns for p in raw.iterdir()}

    served = download.download_all(_cfg(raw, server.url("good")), environ={})

    assert served == {f.name: "(already present)" for f in FILES}
    assert server.count() == {}
    assert {p.name: p.stat().st_mtime_ns for p in raw.iterdir()} == mtimes

    # one file damaged in place (same size): only that one is fetched again
    labels = raw / "train-labels-idx1-ubyte"
    data = bytearray(labels.read_bytes())
    data[-1] ^= 0xFF
    labels.write_bytes(bytes(data))
    served = download.download_all(_cfg(raw, server.url("good")), environ={})
    assert served["train-labels-idx1-ubyte"] == server.url("good")
    assert [v for v in served.values() if v != "(already present)"] == [server.url("good")]
    assert inputs.is_valid(labels, SPEC["train-labels-idx1-ubyte"])


def test_repository_mirror_copy_is_verified(raw_dir):
    """The conftest fixture downloads from data/mirror/: every file verified."""
    assert all(inputs.is_valid(raw_dir / f.name, f) for f in FILES)


def test_two_downloads_at_once_the_second_is_refused(server, tmp_path, raw_dir):
    """Two real `mnistbench download` on one raw_dir: the first runs to the end; the second,
    started while the first waits for a slow mirror, fails at once naming the first (it used
    to remove the first's temporary file, which then crashed in os.replace)."""
    raw = tmp_path / "raw"
    _prefill(raw, raw_dir, *_all_but("train-labels-idx1-ubyte"))
    server.slow_s = 3  # the first download waits this long for its answer
    params = tmp_path / "params.yaml"
    params.write_text(f"data:\n  raw_dir: {raw}\n  mirrors: ['{server.url('slow')}']\n")
    env = {k: v for k, v in os.environ.items() if k != download.ENV_MIRRORS}
    first = subprocess.Popen(
        [MNISTBENCH, "download", "--params", str(params)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not server.count("slow") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.count("slow"), "the first download never asked the mirror"
        second = subprocess.run(
            [MNISTBENCH, "download", "--params", str(params)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        out, err = first.communicate(timeout=120)
    assert second.returncode == 1 and "Traceback" not in second.stderr
    assert second.stderr.strip() == (
        f"error: {raw} is being written by another command "
        f"(pid {first.pid}, mnistbench download); wait until it "
        "ends, or write elsewhere (--out, data.*_dir)"
    )
    assert first.returncode == 0, err
    assert server.count() == {("slow", "train-labels-idx1-ubyte"): 1}
    assert all(inputs.is_valid(raw / f.name, f) for f in FILES)
    assert sorted(os.listdir(raw)) == sorted(f.name for f in FILES)


def test_a_linked_raw_dir_keeps_its_link_and_gets_the_files_where_it_points(tmp_path):
    """data/raw a link to another disk: the files are written through it, the link stays."""
    elsewhere, project = tmp_path / "disk2" / "raw", tmp_path / "project"
    elsewhere.mkdir(parents=True)
    project.mkdir()
    (project / "raw").symlink_to(elsewhere, target_is_directory=True)
    download.download_all(_cfg(project / "raw", str(MIRROR)), environ={})
    assert os.readlink(project / "raw") == str(elsewhere)
    assert sorted(os.listdir(elsewhere)) == sorted(f.name for f in FILES)
    assert sorted(os.listdir(project)) == ["raw"]
