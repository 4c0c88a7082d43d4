"""How a timed stage records the machine's quiet: params' bench section to the verdict's
limits, and a verdict to the record's `quiet` section (mnistbench.metrics.QUIET). The
measuring itself is mnistbench.interference's."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

from mnistbench import interference
from mnistbench.config import Config

log = logging.getLogger(__name__)


def thresholds(cfg: Config) -> interference.Thresholds:
    """The verdict's limits, from params' bench section."""
    b = cfg.bench
    return interference.Thresholds(foreign=b.max_foreign, steal=b.max_steal, spread=b.max_spread)


# NVML's throttle reasons that mean the GPU ran slower than it could for a reason outside
# the run: hardware slowdown (0x8), software thermal (0x20), hardware thermal (0x40) and
# power-brake (0x80) slowdowns. A power cap (0x4) under full load is the GPU's own limit.
GPU_SLOWDOWN = 0x8 | 0x20 | 0x40 | 0x80


def judge(
    times: Sequence[float],
    loads: Sequence[interference.Share],
    limits: interference.Thresholds,
    gpu: dict | None,
) -> interference.Verdict:
    """The verdict on a run's epochs (their times and loads); on a GPU, other processes on it
    or a thermal or hardware slowdown make it disturbed too."""
    verdict = interference.verdict(times, loads, limits)
    causes = []
    if gpu and gpu.get("gpu_other_processes_max"):
        causes.append(f"{gpu['gpu_other_processes_max']} other processes ran on the GPU")
    if gpu and gpu.get("gpu_throttle_reasons", 0) & GPU_SLOWDOWN:
        causes.append(
            f"the GPU slowed down (NVML throttle reasons {gpu['gpu_throttle_reasons']:#x})"
        )
    if not causes:
        return verdict
    return dataclasses.replace(verdict, label="disturbed", causes=(*verdict.causes, *causes))


def section(
    verdict: interference.Verdict, limits: interference.Thresholds, gpu: dict | None
) -> dict:
    """The record's `quiet` section."""
    return {
        "verdict": verdict.label,
        "causes": list(verdict.causes),
        "disturbed_epochs": list(verdict.disturbed_epochs),
        "thresholds": {k: float(v) for k, v in dataclasses.asdict(limits).items()},
        "gpu": gpu,
    }


def log_verdict(stage: str, verdict: interference.Verdict) -> None:
    if verdict.label == "quiet":
        log.info("%s: quiet (nothing else used the machine beyond the limits)", stage)
    else:
        log.warning("%s: %s: %s", stage, verdict.label.upper(), "; ".join(verdict.causes))
