"""Stage `download`: the four MNIST files into data/raw, from the first mirror that serves them.

Mirrors are tried in order ($MNIST_MIRRORS first, then params' data.mirrors). Each file is
streamed through gunzip into a temporary file beside its destination, verified by the SHA-256
of its decompressed bytes, and only then renamed into place: nothing partial or unverified is
ever visible under data/raw. Every download is bounded: one HTTP request (connect, headers,
body) gets data.timeout_s seconds in all, and no file is written past its known size (a
"gzip bomb" stops there). A mirror that cannot be reached, or keeps timing out, is skipped for
the remaining files; a flaky one is retried with exponential backoff; a wrong checksum or a
404 moves on to the next mirror. Each wait between two tries is capped (BACKOFF_MAX_S), and
the whole download has a deadline (`deadline_s`): however many retries and mirrors, it ends.
Before anything is fetched, the free space under data.raw_dir is checked against what the
missing files need.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import http.client
import logging
import os
import shutil
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from tqdm import tqdm

from mnistbench import errors, inputs
from mnistbench.config import DataConfig
from mnistbench.errors import UserError
from mnistbench.mnist import FILES, MnistFile

log = logging.getLogger(__name__)

ENV_MIRRORS = "MNIST_MIRRORS"  # extra mirrors, separated by whitespace or commas, tried first
BACKOFF_S = 0.5  # first retry delay in seconds; doubles on each retry...
BACKOFF_MAX_S = 8.0  # ...up to this many seconds: a mirror down for longer is not worth waiting for
CHUNK = 1 << 16  # bytes read per network/file read (at most)
INFLATE_MAX = 1 << 20  # bytes decompressed per step: bounds memory whatever the ratio
PARTIAL_PREFIX = ".partial-"  # temporary files in raw_dir; removed on failure and at start


class DownloadError(UserError, RuntimeError):
    """Every mirror failed for some file; the message lists each mirror and why."""


class _Retryable(Exception):
    """A failure worth retrying on the same mirror (timeout, 5xx, truncated body)."""


class _Permanent(Exception):
    """A failure of this file on this mirror that retrying will not fix (404, bad checksum)."""


class _Timeout(_Retryable):
    """The whole request took longer than data.timeout_s; retried, then the mirror is dead."""


class _Unreachable(Exception):
    """The mirror cannot be reached at all (DNS, refused, no connection in time, or every
    attempt timed out): skip it for every remaining file."""


def mirrors_from(cfg: DataConfig, environ: dict[str, str] | None = None) -> list[str]:
    """Mirrors in the order they are tried: $MNIST_MIRRORS first, then params."""
    env = (os.environ if environ is None else environ).get(ENV_MIRRORS, "")
    extra = [m for m in env.replace(",", " ").split() if m]
    return extra + list(cfg.mirrors)


def download_all(cfg: DataConfig, environ: dict[str, str] | None = None) -> dict[str, str]:
    """Fetch every file not already valid in cfg.raw_dir. Returns {file name: mirror used}."""
    raw = _raw_folder(cfg.raw_dir)
    for stale in raw.glob(PARTIAL_PREFIX + "*"):  # left by a killed run (SIGKILL skips cleanup)
        stale.unlink()
    mirrors = mirrors_from(cfg, environ)
    dead: dict[str, str] = {}  # mirror -> why it is unreachable, shared across files
    served = {}
    todo = []
    for spec in FILES:
        why = inputs.problem(raw / spec.name, spec)
        if why is None:
            log.info("%s: already present and verified", spec.name)
            served[spec.name] = "(already present)"
        elif why == "a folder, not a file":  # never removed by us: it may hold anything
            raise DownloadError(f"{raw / spec.name} is a folder, not a file: move it away")
        else:
            todo.append(spec)
    _check_space(raw, todo)
    deadline = time.monotonic() + deadline_s(cfg)
    for spec in todo:
        served[spec.name] = _fetch_one(spec, raw / spec.name, mirrors, cfg, dead, deadline)
    return {spec.name: served[spec.name] for spec in FILES}


def deadline_s(cfg: DataConfig) -> float:
    """Seconds the whole download may take: every file given every try (data.retries) on one
    mirror, each try its whole data.timeout_s and the longest wait after it (default 456 s)."""
    return len(FILES) * cfg.retries * (cfg.timeout_s + BACKOFF_MAX_S)


def _raw_folder(raw_dir: str) -> Path:
    """data.raw_dir, made if absent; a dangling symlink or a file there is an error."""
    raw = Path(raw_dir)
    if raw.is_symlink() and not raw.exists():
        raise DownloadError(
            f"params: data.raw_dir {raw} is a symlink to {os.readlink(raw)}, which does not "
            "exist: create that folder, or point data.raw_dir elsewhere"
        )
    if raw.exists() and not raw.is_dir():
        raise DownloadError(f"params: data.raw_dir {raw} is a file, not a folder: move it away")
    with _disk_errors(raw, None):
        raw.mkdir(parents=True, exist_ok=True)
    return raw


def _check_space(raw: Path, todo: list[MnistFile]) -> None:
    """The missing files' bytes must fit under raw_dir (the files written there whole)."""
    needed = sum(spec.size for spec in todo)
    free = shutil.disk_usage(raw).free
    if needed > free:
        raise errors.DiskFullError(
            f"not enough space in {raw} for MNIST: {errors.size_text(needed)} needed, "
            f"{errors.size_text(free)} free: free some space there, or point data.raw_dir "
            "elsewhere"
        )


def _fetch_one(
    spec: MnistFile,
    dest: Path,
    mirrors: list[str],
    cfg: DataConfig,
    dead: dict[str, str],
    deadline: float,
) -> str:
    failures = []
    for mirror in mirrors:
        if mirror in dead:
            failures.append(f"  {mirror}: skipped, unreachable ({dead[mirror]})")
            continue
        try:
            _fetch_with_retries(spec, dest, mirror, cfg, deadline)
        except _Unreachable as e:
            dead[mirror] = str(e)
            failures.append(f"  {mirror}: unreachable ({e})")
            log.warning("%s: %s unreachable (%s); trying the next mirror", spec.name, mirror, e)
        except (_Permanent, _Retryable) as e:
            failures.append(f"  {mirror}: {e}")
            log.warning("%s: %s failed (%s); trying the next mirror", spec.name, mirror, e)
        else:
            log.info("%s: served by %s", spec.name, mirror)
            return mirror
    if len(failures) == 1:  # one mirror: one line
        raise DownloadError(f"could not get {spec.name} from any mirror:{failures[0][1:]}")
    raise DownloadError(f"could not get {spec.name} from any mirror:\n" + "\n".join(failures))


def _fetch_with_retries(
    spec: MnistFile, dest: Path, mirror: str, cfg: DataConfig, deadline: float
) -> None:
    for attempt in range(cfg.retries):
        _require_time(deadline, cfg)
        try:
            _fetch_verified(spec, dest, mirror, min(cfg.timeout_s, deadline - time.monotonic()))
            return
        except _Retryable as e:
            if attempt == cfg.retries - 1:
                message = f"{e} (after {cfg.retries} attempts)"
                # a mirror that never finishes in time would cost the same for every file
                raise (_Unreachable if isinstance(e, _Timeout) else _Retryable)(message) from e
            delay = backoff_s(attempt)
            log.warning("%s from %s: %s; retrying in %.1f s", spec.name, mirror, e, delay)
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))


def backoff_s(attempt: int) -> float:
    """Seconds to wait after failed try `attempt` (0-based): 0.5, 1, 2, 4, 8, 8, ..."""
    return min(BACKOFF_S * 2 ** min(attempt, 64), BACKOFF_MAX_S)  # min(..., 64): no huge ints


def _require_time(deadline: float, cfg: DataConfig) -> None:
    if time.monotonic() >= deadline:
        raise DownloadError(
            f"download stopped after {deadline_s(cfg):g} s, its deadline ({len(FILES)} files x "
            f"data.retries {cfg.retries} x (data.timeout_s {cfg.timeout_s:g} s + "
            f"{BACKOFF_MAX_S:g} s of wait)): the mirrors are too slow or failing; "
            "try again later or set $MNIST_MIRRORS"
        )


def _fetch_verified(spec: MnistFile, dest: Path, mirror: str, timeout_s: float) -> None:
    """Stream <mirror>/<name>.gz through gunzip into a temp file, verify, rename into place."""
    tmp = dest.with_name(f"{PARTIAL_PREFIX}{spec.name}.{os.getpid()}")
    try:
        digest, size = hashlib.sha256(), 0
        with _disk_errors(dest.parent, spec.size), tmp.open("wb") as out:
            for block in _gunzip(_open_source(mirror, spec.name + ".gz", timeout_s), spec):
                digest.update(block)
                size += len(block)
                out.write(block)
        if size != spec.size or digest.hexdigest() != spec.sha256:
            raise _Permanent(
                f"checksum mismatch for {spec.name}.gz: got {size} bytes with "
                f"SHA-256 {digest.hexdigest()[:16]}..., expected {spec.size} bytes "
                f"with {spec.sha256[:16]}..."
            )
        os.replace(tmp, dest)  # atomic on one filesystem: dest is either old or verified
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def _disk_errors(folder: Path, needed: int | None) -> Iterator[None]:
    """A full or read-only raw_dir becomes one line naming it and the file's size (the
    partial file is removed by the caller)."""
    try:
        yield
    except OSError as e:
        better = errors.from_os_error(e, folder, needed)
        if better is None or better is e:
            raise
        raise better from e


def _gunzip(chunks: Iterator[bytes], spec: MnistFile) -> Iterator[bytes]:
    """Decompressed blocks of at most INFLATE_MAX bytes, never more than spec.size in all:
    a stream that expands further is refused there, before it can fill the disk."""
    inflater = zlib.decompressobj(wbits=31)  # 31 = gzip container
    produced = 0

    def bounded(block: bytes) -> bytes:
        nonlocal produced
        produced += len(block)
        if produced > spec.size:
            raise _Permanent(
                f"{spec.name}.gz expands beyond the {spec.size} bytes of the MNIST "
                "file: not that file (stopped there)"
            )
        return block

    try:
        for chunk in chunks:
            pending = chunk
            while pending and not inflater.eof:
                block = inflater.decompress(pending, INFLATE_MAX)
                pending = inflater.unconsumed_tail
                yield bounded(block)
            if inflater.eof:
                break  # one gzip member, as every mirror serves; anything after it is ignored
        yield bounded(inflater.flush())
    except zlib.error as e:
        raise _Permanent(f"not a valid gzip stream ({e})") from e
    finally:
        getattr(chunks, "close", lambda: None)()  # ends the request (and its deadline) now
    if not inflater.eof:
        raise _Retryable("truncated gzip stream (ended before its end marker)")


def _open_source(mirror: str, name: str, timeout_s: float) -> Iterator[bytes]:
    url = mirror if mirror.endswith("/") else mirror + "/"
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme in ("http", "https"):
        return _http_chunks(urllib.parse.urljoin(url, name), timeout_s)
    if scheme == "file":
        return _file_chunks(
            Path(urllib.request.url2pathname(urllib.parse.urlsplit(url).path)) / name
        )
    if scheme == "":
        return _file_chunks(Path(mirror) / name)
    raise _Unreachable(f"unsupported scheme {scheme!r} (use https://, http://, file:// or a path)")


def _file_chunks(path: Path) -> Iterator[bytes]:
    if not path.parent.is_dir():
        raise _Unreachable(f"no such folder {path.parent}")
    if not path.exists():
        raise _Permanent(f"missing file {path}")
    if not path.is_file():  # a FIFO would block, a device never end
        raise _Permanent(f"{path} is {errors.kind(path)}, not a regular file")
    with path.open("rb") as f, _progress(path.stat().st_size, path.name) as bar:
        yield from _read_chunks(f, bar)


def _http_chunks(url: str, timeout_s: float) -> Iterator[bytes]:
    with _Deadline(timeout_s) as deadline:
        try:
            response = deadline.opener().open(url, timeout=timeout_s)
        except urllib.error.HTTPError as e:
            err = _Retryable if e.code >= 500 or e.code == 429 else _Permanent
            raise err(f"HTTP {e.code} {e.reason} for {url}") from e
        except urllib.error.URLError as e:
            raise _classify(e.reason, url, timeout_s, deadline.expired) from e
        except (http.client.HTTPException, OSError) as e:  # timeout, closed without answering
            raise deadline.failure(e, f"no valid response from {url}") from e
        with response:
            length = response.headers.get("Content-Length")
            expected = int(length) if length and length.isdigit() else None
            received = 0
            with _progress(expected, url.rsplit("/", 1)[-1]) as bar:
                while True:
                    try:
                        chunk = response.read1(CHUNK)  # what has arrived: read() would wait for all
                    except (http.client.HTTPException, OSError) as e:  # reset, timeout, ...
                        raise deadline.failure(
                            e, f"connection broke after {received} bytes of {url}"
                        ) from e
                    if deadline.expired:
                        raise deadline.failure(None, f"{received} bytes of {url} received")
                    if not chunk:
                        break
                    received += len(chunk)
                    bar.update(len(chunk))
                    yield chunk
            if expected is not None and received < expected:
                raise _Retryable(f"truncated response: {received} of {expected} bytes from {url}")


class _Deadline:
    """One whole request, from connecting to its last byte, within `seconds`.

    Socket timeouts bound each read, not the request: a server sending one byte a second
    never trips them. At the deadline a timer shuts the request's sockets down, which ends a
    blocked connect or read at once; the caller then sees `expired` and reports a timeout.
    """

    def __init__(self, seconds: float):
        self.seconds, self.expired = seconds, False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()

    def failure(self, error: BaseException | None, what: str) -> _Retryable:
        """The exception to raise for `error` (None: no error but time is up)."""
        if self.expired or isinstance(error, (TimeoutError, socket.timeout)):
            return _Timeout(
                f"timeout: {what}, not done within {self.seconds:g} s "
                "(data.timeout_s, for the whole request)"
            )
        return _Retryable(f"{what} ({type(error).__name__}: {error})")

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                _shutdown(sock)

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            if self.expired:
                _shutdown(sock)

    def opener(self) -> urllib.request.OpenerDirector:
        """urllib's opener (redirects, proxies, HTTPS) whose connections report their socket."""
        track = self._track

        class HTTP(http.client.HTTPConnection):
            def connect(self) -> None:
                super().connect()
                track(self.sock)

        class HTTPS(http.client.HTTPSConnection):
            def connect(self) -> None:
                super().connect()
                track(self.sock)

        class HTTPHandler(urllib.request.HTTPHandler):
            def http_open(self, req):
                return self.do_open(HTTP, req)

        class HTTPSHandler(urllib.request.HTTPSHandler):
            def https_open(self, req):
                return self.do_open(HTTPS, req, context=self._context)

        return urllib.request.build_opener(HTTPHandler, HTTPSHandler)


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed


def _classify(reason: object, url: str, timeout_s: float, expired: bool) -> Exception:
    """Map a URLError's reason (raised while connecting or sending): no DNS, refused or no
    connection in time -> unreachable (skip the mirror for every file), else retryable."""
    if isinstance(reason, socket.gaierror):
        return _Unreachable(f"cannot resolve host of {url}: {reason}")
    if isinstance(reason, ConnectionRefusedError):
        return _Unreachable(f"connection refused by {url}")
    if isinstance(reason, OSError) and reason.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
        return _Unreachable(f"network unreachable for {url}: {reason}")
    if expired or isinstance(reason, (TimeoutError, socket.timeout)):
        return _Unreachable(f"no connection to {url} within {timeout_s:g} s")
    return _Retryable(f"{reason} for {url}")


def _read_chunks(f: BinaryIO, bar: tqdm) -> Iterator[bytes]:
    for chunk in iter(lambda: f.read(CHUNK), b""):
        bar.update(len(chunk))
        yield chunk


def _progress(total: int | None, name: str) -> tqdm:
    # Bars only for files big enough to take a while; small label files stay quiet.
    quiet = total is not None and total < (1 << 20)
    return tqdm(
        total=total,
        desc=name,
        unit="B",
        unit_scale=True,
        leave=False,
        mininterval=1.0,
        disable=True if quiet else None,  # None: no bar where stderr is not a terminal (logs)
    )
