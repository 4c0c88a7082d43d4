"""Where a run is: the stage's place in the pipeline, and a training run's time left.

Under `dvc repro` each stage's command gets DVC_STAGE (its name, e.g. train@jax-scan) and
DVC_ROOT; the stage's place comes from dvc.yaml there, in the order DVC runs the stages
(dependencies first, otherwise as written; `foreach` expanded). Outside DVC there is no stage
label.

On a terminal (stderr a TTY) training's progress is one line, rewritten in place, that log
lines print above; elsewhere (a log file, CI) it is one plain log line per epoch.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

import yaml

log = logging.getLogger(__name__)

_REF = re.compile(r"\$\{\s*([^}]+?)\s*\}")


# ---- the stage's place in the pipeline -------------------------------------------------------


def pipeline_stages(root: str | Path) -> list[str]:
    """The stages of root/dvc.yaml in the order `dvc repro` runs them (each one's dependencies
    first, as DVC's depth-first post-order does), `foreach` stages expanded as name@key."""
    root = Path(root)
    spec = yaml.safe_load((root / "dvc.yaml").read_text()) or {}
    params_path = root / "params.yaml"
    context = yaml.safe_load(params_path.read_text()) or {} if params_path.exists() else {}
    for entry in spec.get("vars") or []:
        if isinstance(entry, dict):
            context = {**context, **entry}
    stages: dict[str, tuple[list[str], list[str]]] = {}  # name: (deps, outs)
    for name, body in (spec.get("stages") or {}).items():
        if "foreach" in body:
            for key, item in _items(_resolve(body["foreach"], context)):
                local = {**context, "key": key, "item": item}
                stages[f"{name}@{key}"] = _paths(body.get("do") or {}, local)
        else:
            stages[name] = _paths(body, context)
    return _dependencies_first(stages)


def _items(values) -> list[tuple[str, object]]:
    if isinstance(values, dict):
        return [(str(k), v) for k, v in values.items()]
    return [(str(v) if isinstance(v, str | int) else str(i), v) for i, v in enumerate(values)]


def _lookup(ref: str, context: dict):
    value = context
    for part in ref.split("."):
        value = value[part]
    return value


def _resolve(value, context: dict):
    """A dvc.yaml value with its ${...} references filled in (a whole-value reference keeps its
    type: ${backends} is a dict)."""
    if not isinstance(value, str):
        return value
    whole = _REF.fullmatch(value.strip())
    if whole:
        return _lookup(whole.group(1), context)
    return _REF.sub(lambda m: str(_lookup(m.group(1), context)), value)


def _paths(body: dict, context: dict) -> tuple[list[str], list[str]]:
    """A stage's dependency paths and output paths (outs, metrics, plots)."""

    def names(entries) -> list[str]:
        found = []
        for entry in entries or []:
            path = next(iter(entry)) if isinstance(entry, dict) else entry
            found.append(str(_resolve(path, context)).rstrip("/"))
        return found

    outs = [p for key in ("outs", "metrics", "plots") for p in names(body.get(key))]
    return names(body.get("deps")), outs


def _dependencies_first(stages: dict[str, tuple[list[str], list[str]]]) -> list[str]:
    def overlaps(a: str, b: str) -> bool:
        return a == b or a.startswith(b + "/") or b.startswith(a + "/")

    def upstream(name: str) -> list[str]:
        deps = stages[name][0]
        return [
            other
            for other, (_, outs) in stages.items()
            if other != name and any(overlaps(d, o) for d in deps for o in outs)
        ]

    order: list[str] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        seen.add(name)
        for dep in upstream(name):
            if dep not in seen:
                visit(dep)
        order.append(name)

    for name in stages:
        if name not in seen:
            visit(name)
    return order


def stage_label(environ: dict[str, str] | None = None) -> str | None:
    """ "[stage 4/13 train@jax-scan]" under `dvc repro`; "[stage train@jax-scan]" when its place
    cannot be found (a dvc.yaml elsewhere, or unreadable); None outside DVC."""
    env = os.environ if environ is None else environ
    name = env.get("DVC_STAGE")
    if not name:
        return None
    name = name.rsplit(":", 1)[-1]  # "sub/dvc.yaml:train@x" for a dvc.yaml outside the root
    try:
        order = pipeline_stages(env.get("DVC_ROOT", "."))
        return f"[stage {order.index(name) + 1}/{len(order)} {name}]"
    except (OSError, ValueError, KeyError, TypeError, AttributeError, yaml.YAMLError):
        return f"[stage {name}]"  # its place is a nicety: never a reason to fail the stage


# ---- one status line on a terminal ------------------------------------------------------------


class Status:
    """A status line at the bottom of a terminal (rewritten with \\r), or plain log lines.

    `stream` None means sys.stderr at each write (tests and click swap it)."""

    def __init__(self, stream: IO[str] | None = None):
        self._stream = stream
        self.line = ""

    @property
    def stream(self) -> IO[str]:
        return self._stream if self._stream is not None else sys.stderr

    @property
    def tty(self) -> bool:
        isatty = getattr(self.stream, "isatty", None)
        return bool(isatty and isatty())

    def show(self, text: str) -> None:
        if not self.tty:
            log.info("%s", text)
            return
        self.stream.write("\r" + text + "\x1b[K")  # \x1b[K: clear what a longer line left
        self.stream.flush()
        self.line = text

    def hide(self) -> None:
        """Before a log line: the line is cleared, for restore() to draw again below it."""
        if self.line and self.tty:
            self.stream.write("\r\x1b[K")

    def restore(self) -> None:
        if self.line and self.tty:
            self.stream.write(self.line)
            self.stream.flush()

    def done(self) -> None:
        """Leave the last status on screen, and later output below it."""
        if self.line and self.tty:
            self.stream.write("\n")
            self.stream.flush()
        self.line = ""


STATUS = Status()


class LogHandler(logging.StreamHandler):
    """Logging to stderr that keeps STATUS's line below the log lines."""

    def __init__(self, status: Status = STATUS):
        super().__init__()
        self.status = status

    def emit(self, record: logging.LogRecord) -> None:
        self.setStream(self.status.stream)
        self.status.hide()
        super().emit(record)
        self.status.restore()


# ---- native libraries' start-up lines ---------------------------------------------------------

# What TensorFlow 2.21's C++ side writes to stderr when it loads, whatever TF_CPP_MIN_LOG_LEVEL
# says (the level is applied only after these): twice each, in every process that imports it.
NATIVE_NOISE = (
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    b"oneDNN custom operations are on.",
)


@contextlib.contextmanager
def native_noise_dropped(noise: tuple[bytes, ...] = NATIVE_NOISE):
    """For the block, file descriptor 2 (where C++ libraries write) goes to a temporary file;
    after it, every line but the known noise is written back, in order."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            rest = b"".join(line for line in held if not any(n in line for n in noise))
            while rest:
                rest = rest[os.write(2, rest) :]


# ---- training's time left ---------------------------------------------------------------------


class Epochs:
    """Time left in a training run, from the epochs done so far."""

    def __init__(
        self,
        total: int,
        label: str | None = None,
        status: Status = STATUS,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.total, self.status, self.clock = total, status, clock
        self.label = label if label is not None else stage_label() or ""
        self.durations: list[float] = []  # wall seconds of each epoch done
        self._mark = clock()

    def epoch_done(self, epoch: int, note: str = "") -> str:
        """Call at the end of each epoch (1-based); shows and returns the progress text, with
        `note` (the epoch's own numbers) after it."""
        now = self.clock()
        self.durations.append(now - self._mark)
        self._mark = now
        text = self.text(epoch) + (f"; {note}" if note else "")
        self.status.show(text)
        if epoch >= self.total:
            self.status.done()
        return text

    def seconds_per_epoch(self) -> float:
        """Epoch 1 holds compilation and warm-up: once others are done, only they count."""
        steady = self.durations[1:] or self.durations
        return statistics.median(steady)

    def text(self, epoch: int) -> str:
        per = self.seconds_per_epoch()
        left = max(self.total - epoch, 0) * per
        when = "done" if epoch >= self.total else f"~{_duration(left)} left"
        prefix = f"{self.label} " if self.label else ""
        return f"{prefix}epoch {epoch}/{self.total}, {per:.2f} s/epoch, {when}"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs:02d} s"


def start(total_epochs: int) -> Epochs:
    """Progress for a run of `total_epochs` epochs, timed from now (call just before the
    first epoch)."""
    return Epochs(total_epochs)
