"""Stage `download`: the four MNIST files into data/raw, from the first mirror that serves them.

Mirrors are tried in order ($MNIST_MIRRORS first, then params' data.mirrors). Each file is
streamed through gunzip into a temporary file beside its destination, verified by the SHA-256
of its decompressed bytes, and only then renamed into place: nothing partial or unverified is
ever visible under data/raw. An unreachable host fails fast (no retries); a flaky one is
retried with exponential backoff; a wrong checksum or a 404 moves on to the next mirror.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import logging
import os
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

from tqdm import tqdm

from mnistbench.config import DataConfig

log = logging.getLogger(__name__)

ENV_MIRRORS = "MNIST_MIRRORS"  # extra mirrors, separated by whitespace or commas, tried first
BACKOFF_S = 0.5  # first retry delay in seconds; doubles on each retry
CHUNK = 1 << 16  # bytes read per network/file read
PARTIAL_PREFIX = ".partial-"  # temporary files in raw_dir; removed on failure and at start


@dataclass(frozen=True)
class MnistFile:
    name: str  # canonical name, served by mirrors as <name>.gz, stored decompressed
    size: int  # bytes, decompressed
    sha256: str  # of the decompressed bytes (identical on every correct mirror)


FILES = (
    MnistFile("train-images-idx3-ubyte", 47040016,
              "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
    MnistFile("train-labels-idx1-ubyte", 60008,
              "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
    MnistFile("t10k-images-idx3-ubyte", 7840016,
              "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
    MnistFile("t10k-labels-idx1-ubyte", 10008,
              "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
)


class DownloadError(RuntimeError):
    """Every mirror failed for some file; the message lists each mirror and why."""


class _Retryable(Exception):
    """A failure worth retrying on the same mirror (timeout, 5xx, truncated body)."""


class _Permanent(Exception):
    """A failure of this file on this mirror that retrying will not fix (404, bad checksum)."""


class _Unreachable(Exception):
    """The mirror's host cannot be reached at all (DNS, refused): skip it for every file."""


def mirrors_from(cfg: DataConfig, environ: dict[str, str] | None = None) -> list[str]:
    """Mirrors in the order they are tried: $MNIST_MIRRORS first, then params."""
    env = (os.environ if environ is None else environ).get(ENV_MIRRORS, "")
    extra = [m for m in env.replace(",", " ").split() if m]
    return extra + list(cfg.mirrors)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_valid(path: Path, spec: MnistFile) -> bool:
    return path.is_file() and path.stat().st_size == spec.size and file_sha256(path) == spec.sha256


def download_all(cfg: DataConfig, environ: dict[str, str] | None = None) -> dict[str, str]:
    """Fetch every file not already valid in cfg.raw_dir. Returns {file name: mirror used}."""
    raw = Path(cfg.raw_dir)
    raw.mkdir(parents=True, exist_ok=True)
    for stale in raw.glob(PARTIAL_PREFIX + "*"):  # left by a killed run (SIGKILL skips cleanup)
        stale.unlink()
    mirrors = mirrors_from(cfg, environ)
    dead: dict[str, str] = {}  # mirror -> why it is unreachable, shared across files
    served = {}
    for spec in FILES:
        dest = raw / spec.name
        if is_valid(dest, spec):
            log.info("%s: already present and verified", spec.name)
            served[spec.name] = "(already present)"
            continue
        served[spec.name] = _fetch_one(spec, dest, mirrors, cfg, dead)
    return served


def _fetch_one(spec: MnistFile, dest: Path, mirrors: list[str], cfg: DataConfig,
               dead: dict[str, str]) -> str:
    failures = []
    for mirror in mirrors:
        if mirror in dead:
            failures.append(f"  {mirror}: skipped, unreachable ({dead[mirror]})")
            continue
        try:
            _fetch_with_retries(spec, dest, mirror, cfg)
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
    raise DownloadError(f"could not get {spec.name} from any mirror:\n" + "\n".join(failures))


def _fetch_with_retries(spec: MnistFile, dest: Path, mirror: str, cfg: DataConfig) -> None:
    for attempt in range(cfg.retries):
        try:
            _fetch_verified(spec, dest, mirror, cfg.timeout_s)
            return
        except _Retryable as e:
            if attempt == cfg.retries - 1:
                raise _Retryable(f"{e} (after {cfg.retries} attempts)") from e
            delay = BACKOFF_S * 2**attempt
            log.warning("%s from %s: %s; retrying in %.1f s", spec.name, mirror, e, delay)
            time.sleep(delay)


def _fetch_verified(spec: MnistFile, dest: Path, mirror: str, timeout_s: float) -> None:
    """Stream <mirror>/<name>.gz through gunzip into a temp file, verify, rename into place."""
    tmp = dest.with_name(f"{PARTIAL_PREFIX}{spec.name}.{os.getpid()}")
    try:
        digest, size = hashlib.sha256(), 0
        with tmp.open("wb") as out:
            for block in _gunzip(_open_source(mirror, spec.name + ".gz", timeout_s)):
                digest.update(block)
                size += len(block)
                out.write(block)
        if size != spec.size or digest.hexdigest() != spec.sha256:
            raise _Permanent(f"checksum mismatch for {spec.name}.gz: got {size} bytes with "
                             f"SHA-256 {digest.hexdigest()[:16]}..., expected {spec.size} bytes "
                             f"with {spec.sha256[:16]}...")
        os.replace(tmp, dest)  # atomic on one filesystem: dest is either old or verified
    finally:
        tmp.unlink(missing_ok=True)


def _gunzip(chunks: Iterator[bytes]) -> Iterator[bytes]:
    inflater = zlib.decompressobj(wbits=31)  # 31 = gzip container
    try:
        for chunk in chunks:
            yield inflater.decompress(chunk)
        yield inflater.flush()
    except zlib.error as e:
        raise _Permanent(f"not a valid gzip stream ({e})") from e
    if not inflater.eof:
        raise _Retryable("truncated gzip stream (ended before its end marker)")


def _open_source(mirror: str, name: str, timeout_s: float) -> Iterator[bytes]:
    url = mirror if mirror.endswith("/") else mirror + "/"
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme in ("http", "https"):
        return _http_chunks(urllib.parse.urljoin(url, name), timeout_s)
    if scheme == "file":
        return _file_chunks(Path(urllib.request.url2pathname(urllib.parse.urlsplit(url).path)) / name)
    if scheme == "":
        return _file_chunks(Path(mirror) / name)
    raise _Unreachable(f"unsupported scheme {scheme!r} (use https://, http://, file:// or a path)")


def _file_chunks(path: Path) -> Iterator[bytes]:
    if not path.parent.is_dir():
        raise _Unreachable(f"no such folder {path.parent}")
    if not path.is_file():
        raise _Permanent(f"missing file {path}")
    with path.open("rb") as f, _progress(path.stat().st_size, path.name) as bar:
        yield from _read_chunks(f, bar)


def _http_chunks(url: str, timeout_s: float) -> Iterator[bytes]:
    try:
        response = urllib.request.urlopen(url, timeout=timeout_s)  # noqa: S310 (http/https only)
    except urllib.error.HTTPError as e:
        err = _Retryable if e.code >= 500 or e.code == 429 else _Permanent
        raise err(f"HTTP {e.code} {e.reason} for {url}") from e
    except urllib.error.URLError as e:
        raise _classify(e.reason, url) from e
    except (TimeoutError, socket.timeout) as e:
        raise _Retryable(f"timeout after {timeout_s:g} s connecting to {url}") from e
    except (http.client.HTTPException, OSError) as e:  # e.g. closed without answering
        raise _Retryable(f"no valid response from {url} ({type(e).__name__}: {e})") from e
    with response:
        length = response.headers.get("Content-Length")
        expected = int(length) if length and length.isdigit() else None
        received = 0
        with _progress(expected, url.rsplit("/", 1)[-1]) as bar:
            try:
                for chunk in _read_chunks(response, bar):
                    received += len(chunk)
                    yield chunk
            except (TimeoutError, socket.timeout) as e:
                raise _Retryable(f"timeout after {timeout_s:g} s reading {url}") from e
            except (http.client.HTTPException, OSError) as e:  # reset, IncompleteRead, ...
                raise _Retryable(f"connection broke after {received} bytes of {url} ({e})") from e
        if expected is not None and received < expected:
            raise _Retryable(f"truncated response: {received} of {expected} bytes from {url}")


def _classify(reason: object, url: str) -> Exception:
    """Map a URLError's reason: no DNS or refused -> unreachable (fail fast), else retryable."""
    if isinstance(reason, socket.gaierror):
        return _Unreachable(f"cannot resolve host of {url}: {reason}")
    if isinstance(reason, ConnectionRefusedError):
        return _Unreachable(f"connection refused by {url}")
    if isinstance(reason, OSError) and reason.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
        return _Unreachable(f"network unreachable for {url}: {reason}")
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return _Retryable(f"timeout connecting to {url}")
    return _Retryable(f"{reason} for {url}")


def _read_chunks(f: BinaryIO, bar: tqdm) -> Iterator[bytes]:
    for chunk in iter(lambda: f.read(CHUNK), b""):
        bar.update(len(chunk))
        yield chunk


def _progress(total: int | None, name: str) -> tqdm:
    # Bars only for files big enough to take a while; small label files stay quiet.
    quiet = total is not None and total < (1 << 20)
    return tqdm(total=total, desc=name, unit="B", unit_scale=True, leave=False,
                mininterval=1.0, disable=quiet)
