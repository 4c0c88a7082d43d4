"""The metrics contract: what `mnistbench train` writes and what compare and sweep read.

One place for
- the keys of a backend's record, with their types and ranges: NUMBERS (the results, and how
  quiet the machine was while they were timed), QUIET (the verdict and its causes), ENV (where
  they were measured) and PARAMS (the parameters they were made with). On disk a record is two
  files (mnistbench.records writes and reads them, mnistbench.layout places them):
  metrics.json, one run's main numbers (COMPARED; `dvc metrics` shows compare's headline/,
  the estimates over rounds, instead), and run.json,
  everything else (a DVC output, not a metric);
- the per-epoch curves, CURVES: train writes each as its own TSV, compare reads them all;
- the roofline stage's keys that compare reads, ROOFLINE.

`validate(record)` lists every way a record breaks the contract: a missing or unknown
key, a wrong type, NaN or infinity, a value out of range, numbers that contradict each other.
train validates before writing (so it cannot write a key this module lacks), compare before
reading (so it cannot read one). Cheap to import: no framework, no config.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mnistbench import mnist
from mnistbench.errors import UserError

if TYPE_CHECKING:
    from mnistbench.config import Config


class MetricsError(UserError, ValueError):
    """Metrics that break the contract; the message names the file or run, and the key."""


# ---------------------------------------------------------------- kinds of value


@dataclass(frozen=True)
class Kind:
    """What one value must be: `ok(value)` tells; `expected` says it in words for errors."""

    meaning: str
    expected: str
    ok: Callable[[Any], bool]

    def problem(self, key: str, value: Any) -> str | None:
        return None if self.ok(value) else f"{key} must be {self.expected}, got {value!r}"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def number(meaning: str, low: float = 0.0, high: float = math.inf, above: bool = False) -> Kind:
    """A finite number >= low (> low with `above`) and <= high. NaN and infinity never pass."""
    expected = f"a finite number {'>' if above else '>='} {low:g}"
    expected += f" and <= {high:g}" if high < math.inf else ""
    return Kind(
        meaning,
        expected,
        lambda v: (
            _is_number(v) and _is_finite(v) and (v > low if above else v >= low) and v <= high
        ),
    )


def _is_finite(value: int | float) -> bool:
    """math.isfinite, except that an int beyond float's range (JSON's 10**400) is not finite
    rather than an OverflowError."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def integer(meaning: str, low: int = 1) -> Kind:
    return Kind(meaning, f"an integer >= {low}", lambda v: _is_int(v) and v >= low)


def flag(meaning: str) -> Kind:
    """0 or 1: a yes/no that `dvc metrics` shows and diffs as a number."""
    return Kind(meaning, "0 or 1", lambda v: _is_int(v) and v in (0, 1))


def optional(kind: Kind) -> Kind:
    return Kind(kind.meaning, f"null or {kind.expected}", lambda v: v is None or kind.ok(v))


def text(meaning: str, choices: tuple[str, ...] | None = None) -> Kind:
    if choices:
        return Kind(meaning, f"one of {', '.join(choices)}", lambda v: v in choices)
    return Kind(meaning, "a string", lambda v: isinstance(v, str))


def texts(meaning: str) -> Kind:
    return Kind(
        meaning,
        "a list of strings",
        lambda v: isinstance(v, list) and all(isinstance(s, str) for s in v),
    )


def text_map(meaning: str) -> Kind:
    return Kind(
        meaning,
        "an object of strings",
        lambda v: (
            isinstance(v, dict)
            and all(isinstance(k, str) and isinstance(s, str) for k, s in v.items())
        ),
    )


def number_map(meaning: str) -> Kind:
    """An object of names to finite numbers > 0 (e.g. seconds per framework)."""
    return Kind(
        meaning,
        "an object of finite numbers > 0",
        lambda v: (
            isinstance(v, dict)
            and all(isinstance(k, str) and number("", above=True).ok(x) for k, x in v.items())
        ),
    )


def integers(meaning: str) -> Kind:
    return Kind(
        meaning,
        "a non-empty list of integers >= 1",
        lambda v: isinstance(v, list) and len(v) > 0 and all(_is_int(i) and i >= 1 for i in v),
    )


# ---------------------------------------------------------------- metrics.json

# The results, in the order train writes them. Seconds are wall clock with the device
# synchronised; "steady" means epochs 2..N (epoch 1 alone when N is 1). Shares are of the CPUs
# this process may use, over the wall time of one epoch (mnistbench.interference).
NUMBERS: dict[str, Kind] = {
    # metrics.json: one run's main numbers (compare summarises them over rounds)
    "val_acc": number("accuracy on the test split after the last epoch", high=1),
    "train_loss": number("mean cross-entropy over the last training pass"),
    "epoch_time_median_s": number("steady epoch (train + validation pass), median, s", above=True),
    "first_epoch_s": number("epoch 1, with JIT compile and warm-up, s"),
    "train_time_median_s": number("steady training pass, median, s", above=True),
    "eval_time_median_s": number("steady validation pass, median, s"),
    "disturbed": flag("1 when others or steal slowed the timing (the verdict), else 0"),
    "epochs": integer("epochs run"),
    "batch_size": integer("examples per batch, training and validation"),
    # run.json's `details`, beside the verdict, env and params
    "foreign_cpu_max": number("largest share of the CPUs others used in a steady epoch", high=1),
    "steal_max": number("largest share of the CPUs the hypervisor took in a steady epoch", high=1),
    "val_loss": number("mean cross-entropy on the test split after the last epoch"),
    "epoch_time_min_s": number("fastest steady epoch, s"),
    "epoch_time_max_s": number("slowest steady epoch, s"),
    "samples_per_s": number("training examples per second of the steady training pass", above=True),
    "own_cpu_mean": number("the run's process tree, share of the CPUs, steady epochs' mean"),
    "waited_max": number(
        "largest share of the CPUs' time the run's threads waited for one in a steady epoch "
        "(a nice-19 neighbour shows here first; reported, not judged)"
    ),
    "busy_before": number("share of the CPUs others used just before the stage started", high=1),
    "probe_start_s": number("the fixed-work drift probe before the stage, s", above=True),
    "probe_end_s": number("the same probe after the stage, s", above=True),
    "num_params": integer("trainable parameters"),
    "train_examples": integer(f"training examples per epoch (at most {mnist.TRAIN_EXAMPLES})"),
    "test_examples": integer(f"validation examples per pass (at most {mnist.TEST_EXAMPLES})"),
}
# metrics.json holds these, nine per run and backend
COMPARED = tuple(list(NUMBERS)[: list(NUMBERS).index("batch_size") + 1])
DETAILS = tuple(k for k in NUMBERS if k not in COMPARED)

VERDICTS = ("quiet", "unsteady", "disturbed")  # mnistbench.interference.Verdict.label
# How quiet the machine was (run.json's `quiet`): the verdict and why.
QUIET: dict[str, Kind] = {
    "verdict": text(
        "quiet, unsteady (the backend varied, the machine was free) or disturbed", VERDICTS
    ),
    "causes": texts("one line per cause, naming the epochs; [] when quiet"),
    "disturbed_epochs": Kind(
        "1-based epochs others or steal disturbed",
        "a list of integers >= 1",
        lambda v: isinstance(v, list) and all(_is_int(i) and i >= 1 for i in v),
    ),
    "thresholds": Kind(
        "the limits the verdict used (params' bench section)",
        "an object of finite numbers >= 0",
        lambda v: (
            isinstance(v, dict)
            and all(isinstance(k, str) and number("").ok(x) for k, x in v.items())
        ),
    ),
    "gpu": Kind(
        "the GPU's clocks, throttle reasons and other processes, or null on a CPU",
        "null or an object",
        lambda v: v is None or isinstance(v, dict),
    ),
}

# The environment: first the machine (the same for every backend of one run; compare reports
# any that differ), then the backend.
ENV_MACHINE: dict[str, Kind] = {
    "python": text("Python version"),
    "implementation": text("Python implementation, e.g. cpython"),
    "platform": text("operating system and kernel (platform.platform())"),
    "packages": text_map("installed version of each package that matters"),
    "cpu": text("CPU model"),
    "cpu_count": optional(integer("CPUs of the machine (null when the OS cannot tell)")),
    "cpus_usable": optional(integer("CPUs this process may run on (null when the OS cannot tell)")),
    "thread_env": text_map("thread-count environment variables that were set"),
    "gpus": texts("each visible GPU as nvidia-smi names it; [] when none"),
    "image": text("Docker image, or 'none (host)'"),
    "image_version": text("the image's version ('' on the host)"),
}
ENV_BACKEND: dict[str, Kind] = {
    "backend": text("backend name, the folder's name"),
    "framework": text("the table's implementation column"),
    "loader": text("the table's data loader column"),
    "device": text("where it computed", choices=("cpu", "cuda")),
    "threads": optional(
        integer("intra-op threads applied to every framework; null = their defaults")
    ),
}
ENV = {**ENV_MACHINE, **ENV_BACKEND}

# The parameters a run was made with, named as in params.yaml: results made with different
# values of any of them are not comparable (compare refuses them, naming the key).
PARAMS: dict[str, Kind] = {
    "data.limit_train": optional(
        integer(f"first N training images; null = all {mnist.TRAIN_EXAMPLES}")
    ),
    "data.limit_test": optional(integer(f"first N test images; null = all {mnist.TEST_EXAMPLES}")),
    "model.hidden": integers("hidden layer widths"),
    "train.epochs": integer("epochs asked for"),
    "train.batch_size": integer("batch size asked for"),
    "train.lr": number("Adam's learning rate", above=True),
    "train.seed": integer("seed of every random generator", low=0),
    "train.threads": optional(integer("intra-op threads; null = framework defaults")),
    "train.device": text("device asked for", choices=("auto", "cpu", "cuda")),
}

SECTIONS = {"quiet": QUIET, "env": ENV, "params": PARAMS}
KEYS = (*NUMBERS, *SECTIONS)  # every key of a run's record (metrics.json + run.json), in order

# Per-epoch curves, one TSV each (columns step and <key>, one row per epoch 1..N), in the
# order train writes them; harness.Epoch.curves() has exactly these keys.
CURVES: dict[str, Kind] = {
    "train_loss": number("mean cross-entropy of the epoch's training pass"),
    "val_loss": number("mean cross-entropy of the epoch's validation pass"),
    "val_acc": number("accuracy of the epoch's validation pass", high=1),
    "epoch_time_s": number("the epoch: training + validation pass, s"),
    "train_time_s": number("the training pass, s"),
    "eval_time_s": number("the validation pass, s"),
    "foreign_share": number("share of the CPUs others used during the epoch", high=1),
    "steal_share": number("share of the CPUs the hypervisor took during the epoch", high=1),
    "own_share": number("share of the CPUs the run's process tree used during the epoch"),
}
LOSSES = ("train_loss", "val_loss")  # not finite: training diverged

# The roofline stage's metrics.json: the keys compare reads (it writes more).
ROOFLINE: dict[str, Kind] = {
    "matmul_gflops": number("measured float32 matmul peak, GFLOP/s"),
    "train_gflop_per_epoch": number("matmul GFLOP of one training pass"),
    "eval_gflop_per_epoch": number("matmul GFLOP of one validation pass"),
    "gflop_per_epoch": number("matmul GFLOP of one epoch"),
    "roofline_epoch_s": number("the epoch at the matmul peak, s", above=True),
    "threads": optional(integer("threads the peak was measured with")),
    # absent from files written before the verdict existed (older reference runs)
    "disturbed": optional(flag("1 when others or steal slowed the measurement, else 0")),
    "foreign_cpu_max": optional(number("share of the CPUs others used while it measured", high=1)),
    "probe_start_s": optional(number("the drift probe before the stage, s", above=True)),
    "probe_end_s": optional(number("the drift probe after the stage, s", above=True)),
    # absent from files written before the kernel bound existed (older reference runs)
    "kernel_bound_epoch_s": optional(
        number_map("per framework, the epoch's products and optimizer updates timed alone, s")
    ),
}


BASELINE = "torch-dataloader"  # every speed-up is against this backend, as in the article's table


def framework_of(backend: str) -> str:
    """The framework whose kernels a backend runs, as kernel_bound_epoch_s names it: the first
    word of the backend's name (torch-tensor -> torch, jax-scan -> jax)."""
    return backend.split("-", 1)[0]


# ---------------------------------------------------------------- validation


def params_of(cfg: Config) -> dict[str, Any]:
    """PARAMS' values in `cfg`, as metrics.json holds them (lists, not tuples)."""
    values = {}
    for key in PARAMS:
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        values[key] = list(value) if isinstance(value, tuple) else value
    return values


def validate(record: Any, backend: str | None = None) -> list[str]:
    """Every way `record` (a parsed metrics.json) breaks the contract; [] when it keeps it.
    With `backend`, env.backend must be that name."""
    if not isinstance(record, dict):
        return [f"must hold a JSON object, got {type(record).__name__}"]
    problems = _keys(record, KEYS, "") + value_problems(record, NUMBERS)
    for section, kinds in SECTIONS.items():
        values = record.get(section)
        if section not in record:
            continue
        if not isinstance(values, dict):
            problems.append(f"{section} must be an object, got {values!r}")
            continue
        problems += _keys(values, kinds, f"{section}.")
        problems += value_problems(values, kinds, f"{section}.")
    if not problems:
        problems = _consistency(record, backend)
    return problems


def check(record: Any, where: str | Path, backend: str | None = None) -> dict[str, Any]:
    """`record` if it keeps the contract, else MetricsError naming `where` and every problem."""
    problems = validate(record, backend)
    if problems:
        raise MetricsError(f"{where}: {'; '.join(problems)}")
    return record


def curve_problems(values: dict[str, float]) -> list[str]:
    """What is wrong with one epoch's curve values (harness.Epoch.curves())."""
    return _keys(values, CURVES, "") + value_problems(values, CURVES)


def value_problems(values: dict[str, Any], kinds: dict[str, Kind], prefix: str = "") -> list[str]:
    """Each value of `values` that `kinds` names, checked against its kind (absent: skipped)."""
    return [
        p
        for key, kind in kinds.items()
        if key in values
        for p in [kind.problem(f"{prefix}{key}", values[key])]
        if p
    ]


def _keys(values: dict, known, prefix: str) -> list[str]:
    missing = [f"{prefix}{k}" for k in known if k not in values]
    unknown = [f"{prefix}{k}" for k in values if k not in known]
    return ([f"missing keys: {', '.join(missing)}"] if missing else []) + (
        [f"unknown keys: {', '.join(unknown)} (not in the metrics contract, mnistbench.metrics)"]
        if unknown
        else []
    )


def _consistency(record: dict, backend: str | None) -> list[str]:
    """Relations between valid values: each one a contradiction some writer could make."""
    params, env = record["params"], record["env"]
    problems = []
    if backend is not None and env["backend"] != backend:
        problems.append(f"env.backend is {env['backend']!r}, not {backend!r}")
    if record["disturbed"] != (record["quiet"]["verdict"] == "disturbed"):
        problems.append(
            f"disturbed is {record['disturbed']} but quiet.verdict is {record['quiet']['verdict']!r}"
        )
    low, median, high = (record[f"epoch_time_{k}_s"] for k in ("min", "median", "max"))
    if not low <= median <= high:
        problems.append("epoch_time_min_s <= epoch_time_median_s <= epoch_time_max_s does not hold")
    for key in ("epochs", "batch_size"):
        if record[key] != params[f"train.{key}"]:
            problems.append(
                f"{key} is {record[key]} but params train.{key} is {params[f'train.{key}']}"
            )
    for key, split, limit in (
        ("train_examples", mnist.TRAIN_EXAMPLES, "data.limit_train"),
        ("test_examples", mnist.TEST_EXAMPLES, "data.limit_test"),
    ):
        most = min(split, params[limit] or split)
        if record[key] > most:
            problems.append(
                f"{key} is {record[key]}, more than {most} ({limit} is "
                f"{params[limit]}, MNIST has {split})"
            )
    return problems
