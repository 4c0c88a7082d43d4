"""How quiet the machine was while the epochs were timed: other processes, the hypervisor, the GPU.

An epoch time is only this backend's number if nothing else took the CPUs from it. On a
2-vCPU VM one busy process at nice 19 beside a run made the DataLoader row's epoch 3.7 times
as long (6.45 s to 23.8 s), and nothing in the output said so. This module reads, at the harness's clock
reads, what the machine did in between, as shares of the CPUs this process may use:

- own: the run's process tree (this process, its threads, its live descendants such as
  DataLoader workers, and the children already reaped);
- foreign: everything else that ran on those CPUs (the CPUs' busy time minus own);
- steal: time the hypervisor gave these virtual CPUs to other guests.

`verdict` turns the per-epoch shares and times into "quiet", "disturbed" (others or the
hypervisor took CPU in an epoch) or "unsteady" (the steady epochs vary while the machine was
free: the backend itself varies). `probe` is a fixed piece of work timed before and after a
run, so a slower machine (clock, neighbours) shows as a slower probe. `gpu_reading` adds the
GPU's side: its SM clock against its maximum, the throttle reasons, other processes on it.

Only the standard library and psutil: the harness imports this before any framework.
"""

from __future__ import annotations

import hashlib
import logging
import os
import resource
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

log = logging.getLogger(__name__)

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")  # /proc/stat counts in these (USER_HZ, 100 on Linux)
# /proc/stat's cpu line: user nice system idle iowait irq softirq steal guest guest_nice.
# Busy is what ran: user (which already holds guest), nice, system, irq, softirq. Not idle
# and iowait (nothing ran), not steal (counted apart: another guest ran, not a process here).
BUSY_FIELDS = (0, 1, 2, 5, 6)
STEAL_FIELD = 7


@dataclass(frozen=True)
class Reading:
    """Cumulative counters at one instant; `between` turns two of them into shares."""

    wall_s: float  # time.monotonic()
    busy_s: float  # CPU seconds the usable CPUs ran anything (BUSY_FIELDS)
    steal_s: float  # CPU seconds the hypervisor gave the usable CPUs to other guests
    own_s: float  # CPU seconds of the run's process tree (user + system, reaped children too)
    ctx_invol: int  # involuntary context switches of the run's threads (preempted, not waiting)
    cpus: int  # CPUs this process may use (its affinity): the shares' denominator
    waited_s: float = 0.0  # seconds the run's live threads were runnable but had no CPU


@dataclass(frozen=True)
class Share:
    """What happened between two readings, each as a share of wall_s * cpus."""

    wall_s: float
    own: float  # the run's process tree
    foreign: float  # every other process on these CPUs (busy - own, clipped at 0)
    steal: float  # the hypervisor ran other guests on these virtual CPUs
    ctx_invol_per_s: float  # the run's threads preempted per second
    waited: float = 0.0  # the run's threads runnable but without a CPU (more threads than CPUs too)


def _stat_lines(proc: str) -> dict[str, list[int]]:
    """The cpu lines of {proc}/stat: {"cpu": [...], "cpu0": [...], ...}, in clock ticks."""
    lines = {}
    for line in Path(proc, "stat").read_text().splitlines():
        if line.startswith("cpu"):
            name, *values = line.split()
            lines[name] = [int(v) for v in values]
    return lines


def _system(proc: str, cpus: set[int]) -> tuple[float, float]:
    """(busy, steal) CPU seconds of the usable CPUs. Their own lines where /proc/stat has them
    all (so a process pinned to some CPUs sees only those), else the all-CPU line."""
    lines = _stat_lines(proc)
    per_cpu = [lines.get(f"cpu{n}") for n in sorted(cpus)]
    rows = per_cpu if all(per_cpu) else [lines["cpu"]]
    busy = sum(row[i] for row in rows for i in BUSY_FIELDS if i < len(row))
    steal = sum(row[STEAL_FIELD] for row in rows if len(row) > STEAL_FIELD)
    return busy / CLOCK_TICKS, steal / CLOCK_TICKS


def _threads(pid: int) -> tuple[int, float]:
    """(involuntary switches, seconds runnable without a CPU) summed over a process's live
    threads: /proc/PID/status holds the main thread's switches alone, hence the per-thread
    files; schedstat's second field is the thread's run-queue wait in nanoseconds."""
    switches, waited = 0, 0
    try:
        tasks = list(Path("/proc", str(pid), "task").iterdir())
    except OSError:  # the process ended meanwhile
        tasks = []
    for task in tasks:
        try:
            for line in (task / "status").read_text().splitlines():
                if line.startswith("nonvoluntary_ctxt_switches:"):
                    switches += int(line.split()[1])
            waited += int((task / "schedstat").read_text().split()[1])
        except (OSError, IndexError, ValueError):  # the thread ended meanwhile; no schedstat
            pass
    return switches, waited / 1e9


def _process(p: psutil.Process) -> tuple[float, int, float]:
    """(CPU seconds, involuntary switches, run-queue wait seconds) of one process. CPU: all its
    threads, dead ones too, and the children it has reaped. Switches: for this process
    getrusage counts dead threads and reaped children as well; for another one only its live
    threads' can be read. Run-queue wait: live threads only."""
    t = p.cpu_times()
    cpu = t.user + t.system + t.children_user + t.children_system
    switches, waited = _threads(p.pid)
    if p.pid == os.getpid():
        me, reaped = (
            resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
        )
        switches = me.ru_nivcsw + reaped.ru_nivcsw
    return cpu, switches, waited


def tree(pid: int | None = None) -> tuple[float, int, float]:
    """(CPU seconds, involuntary switches, run-queue wait seconds) of process pid (default
    this one) and every live descendant. A DataLoader worker is such a descendant: its CPU
    is the run's own."""
    root = psutil.Process(pid)
    total = _process(root)
    for child in root.children(recursive=True):
        try:
            one = _process(child)
        except psutil.Error:  # ended meanwhile: its time moves to its parent's reaped children
            continue
        total = tuple(x + y for x, y in zip(total, one))
    return total


def read(pid: int | None = None, proc: str = "/proc") -> Reading:
    """The counters now, for the process tree of pid (default this process). `proc` is where
    the machine-wide stat file is read from (tests point it at canned files); the tree is
    always read from the live system."""
    cpus = os.sched_getaffinity(pid or 0)
    wall = time.monotonic()
    own, switches, waited = tree(pid)
    busy, steal = _system(proc, cpus)
    return Reading(wall, busy, steal, own, switches, len(cpus), waited)


def between(a: Reading, b: Reading) -> Share:
    """What happened from reading a to reading b."""
    wall = b.wall_s - a.wall_s
    if wall <= 0:
        raise ValueError(f"reading b ({b.wall_s}) is not after reading a ({a.wall_s})")
    capacity = wall * b.cpus  # CPU seconds the usable CPUs had
    # Counters tick in 1/CLOCK_TICKS s (10 ms): over a window of a few ticks a share can read
    # above 1. Clipped to [0, 1]; `resolution` says how far one window's shares can be off.
    own = min(1.0, max(0.0, b.own_s - a.own_s) / capacity)  # < 0: a grandchild was orphaned
    busy = min(1.0, max(0.0, b.busy_s - a.busy_s) / capacity)
    return Share(
        wall_s=wall,
        own=own,
        foreign=max(0.0, busy - own),  # tick sampling can put own a little over busy
        steal=min(1.0, max(0.0, b.steal_s - a.steal_s) / capacity),
        ctx_invol_per_s=max(0, b.ctx_invol - a.ctx_invol) / wall,
        waited=max(0.0, b.waited_s - a.waited_s) / capacity,  # < 0 when a thread ended
    )


def resolution(share: Share) -> float:
    """How far a share of one window can be off: the CPU counters and the process tree's
    each tick in 1/CLOCK_TICKS s per CPU, so up to two ticks per CPU either way (4% of a 0.5 s
    window, 0.4% of a 5 s one, more than everything for a 10 ms one)."""
    return 2.0 / CLOCK_TICKS / share.wall_s


def sample(seconds: float = 1.0) -> Share:
    """The machine right now: this process sleeps for `seconds`, so foreign is all the rest."""
    a = read()
    time.sleep(seconds)
    return between(a, read())


@dataclass(frozen=True)
class Thresholds:
    """How quiet counts as quiet (params.yaml's `quiet` section). Defaults from measurements on
    the project's 2-vCPU VM while other work shared it, so indicative (docs/interference.md
    has the table):

    - foreign 0.02: free epochs of a second read 0.0-1.7%; nice-19 busy loops that made
      2-thread eager-torch epochs 70-120% slower took 0.7-5.6% of the CPUs (a median 2% in an
      earlier run with +19%). The two overlap, so no limit catches every such neighbour; 2%
      is the lowest that no free epoch reached.
    - steal 0.02: no epoch read more than 1.3% steal here, even with both CPUs saturated; the
      uptime average was 0.16%.
    - spread 0.15: free epochs spread 4-8%; eager torch with 2 threads alternates 1.3 / 2.4 s
      epochs (~60%) on a free machine, which should read as unsteady.
    """

    foreign: float = 0.02  # largest foreign share allowed in any epoch
    steal: float = 0.02  # largest steal share allowed in any epoch
    spread: float = 0.15  # (max - min) / median of the steady epochs allowed


def _pct(x: float) -> str:
    return f"{x:.1%}" if x < 0.1 else f"{x:.0%}"


def wait_for_quiet(
    thresholds: Thresholds,
    max_wait_s: float,
    say: Callable[[str], None] | None = None,
    seconds: float = 1.0,
) -> Share:
    """Sample the machine every `seconds` until others and steal are within the thresholds or
    max_wait_s has passed (at least one sample either way); returns the last sample. A busy
    machine is said at once, as a warning (`say` replaces the module's logger)."""
    start = time.monotonic()
    while True:
        s = sample(seconds)
        quiet = s.foreign <= thresholds.foreign and s.steal <= thresholds.steal
        waited = time.monotonic() - start
        seen = (
            f"others use {_pct(s.foreign)} of the CPUs, steal {_pct(s.steal)} "
            f"(limits {_pct(thresholds.foreign)}, {_pct(thresholds.steal)})"
        )
        if quiet:
            (say or log.info)(f"machine quiet: {seen}")
            return s
        if waited < max_wait_s:
            (say or log.warning)(f"machine busy: {seen}; waiting for quiet")
            continue
        (say or log.warning)(
            f"machine busy: {seen}; timing anyway, and the verdict will say what it cost"
            + (f" (waited {waited:.0f} s)" if max_wait_s > 0 else "")
        )
        return s


# probe: a chain of SHA-256 over 64 bytes. Pure single-threaded CPU work that holds the GIL
# (hashlib releases it only for inputs over 2 KiB) and needs no memory bandwidth: a slower
# probe means a slower or shared CPU, not another framework or library version.
PROBE_WORK = 40_000  # hashes per repeat: 15 ms on the 2-vCPU AMD EPYC VM, so ~0.1 s a probe
PROBE_REPEATS = 7


def probe(work: int = PROBE_WORK, repeats: int = PROBE_REPEATS) -> float:
    """Seconds the same fixed work takes now: the median of `repeats` timings of `work`
    chained hashes (the median shrugs off one preempted repeat)."""
    times = []
    for _ in range(repeats):
        digest = b"mnistbench".ljust(64, b".")
        t0 = time.perf_counter()
        for _ in range(work):
            digest = hashlib.sha256(digest).digest() * 2  # 64 bytes in, 32 out, doubled
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


@dataclass(frozen=True)
class Verdict:
    label: str  # "quiet" | "disturbed" | "unsteady"
    causes: tuple[str, ...]  # one readable line each, naming the epochs
    disturbed_epochs: tuple[int, ...]  # 1-based


def _epochs(numbers: Sequence[int]) -> str:
    return ("epoch " if len(numbers) == 1 else "epochs ") + ", ".join(map(str, numbers))


def _over(name: str, values: dict[int, float], limit: float) -> str:
    """'epochs 3, 5: others used 12%, 8% of the CPUs (limit 3.0%)'."""
    shares = ", ".join(_pct(v) for v in values.values())
    return f"{_epochs(list(values))}: {name} {shares} of the CPUs (limit {_pct(limit)})"


def steady(n: int, first: int = 2) -> range:
    """The 1-based numbers of the steady epochs of n: first..n, or all of them when n < first."""
    return range(first, n + 1) if n >= first else range(1, n + 1)


def verdict(
    epoch_times: Sequence[float], shares: Sequence[Share], t: Thresholds, first: int = 2
) -> Verdict:
    """Judge a run's epochs. Every epoch, epoch 1 too (its time is reported as first_epoch_s),
    is disturbed when others or steal took more than their limit of the CPUs. The spread is
    judged over the steady epochs only: epoch 1 holds compilation and warm-up. A spread over
    its limit with no steady epoch disturbed is the backend's own: "unsteady"."""
    if len(epoch_times) != len(shares) or not shares:
        raise ValueError(f"{len(epoch_times)} epoch times but {len(shares)} shares")
    numbered = dict(enumerate(shares, start=1))
    # over the limit by more than the window can tell (`resolution`): a 30 ms epoch's reading
    # of 20% may be one tick of someone else's, a 5 s epoch's cannot
    foreign = {n: s.foreign for n, s in numbered.items() if s.foreign > t.foreign + resolution(s)}
    steal = {n: s.steal for n, s in numbered.items() if s.steal > t.steal + resolution(s)}
    causes = []
    if foreign:
        causes.append(_over("others used", foreign, t.foreign))
    if steal:
        causes.append(_over("the hypervisor took (steal)", steal, t.steal))
    disturbed = tuple(sorted(set(foreign) | set(steal)))
    times = [epoch_times[n - 1] for n in steady(len(epoch_times), first)]
    spread = (max(times) - min(times)) / statistics.median(times)
    steady_disturbed = set(disturbed) & set(steady(len(epoch_times), first))
    if spread > t.spread:
        free = "" if steady_disturbed else " with the machine free"
        causes.append(f"steady epochs spread {_pct(spread)} (limit {_pct(t.spread)}){free}")
    if disturbed:
        label = "disturbed"
    elif spread > t.spread:
        label = "unsteady"
    else:
        label = "quiet"
    return Verdict(label, tuple(causes), disturbed)


# gpu_reading: nvidia-smi's answers, bounded so a hung driver cannot hang a run.
NVIDIA_SMI_TIMEOUT_S = 5.0
GPU_QUERY = "clocks.sm,clocks.max.sm,{reasons},utilization.gpu"
# The throttle-reason field was renamed (clocks_event_reasons) in newer drivers; old name first.
GPU_REASONS = ("clocks_throttle_reasons.active", "clocks_event_reasons.active")
GPU_IDLE = 0x1  # a reason bit that only says no kernel ran at that instant (NVML GpuIdle)


def _smi(*args: str) -> str | None:
    try:
        done = subprocess.run(
            ["nvidia-smi", *args], capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT_S
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def _number(text: str) -> float | None:
    """nvidia-smi's value as a number; None for [N/A], [Not Supported] and the like."""
    try:
        return float(int(text, 16)) if text.lower().startswith("0x") else float(text)
    except ValueError:
        return None


def gpu_reading(device_index: int = 0) -> dict | None:
    """The GPU now: {"sm_clock_mhz", "sm_clock_max_mhz", "throttle_reasons" (NVML bitmask),
    "utilization" (%), "other_pids" (compute processes on it outside this process tree)}; a
    value nvidia-smi cannot give is None. None when there is no working nvidia-smi. Never
    raises. In a container with its own PID namespace nvidia-smi may list host PIDs, which
    then cannot be told from this run's."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        return _gpu_reading(device_index)
    except Exception as e:  # a driver's odd answer must never stop a run
        log.warning("nvidia-smi gave an answer that could not be read: %s", e)
        return None


def _gpu_reading(device_index: int) -> dict | None:
    device = f"--id={device_index}"
    for reasons in GPU_REASONS:
        out = _smi(
            device,
            f"--query-gpu={GPU_QUERY.format(reasons=reasons)}",
            "--format=csv,noheader,nounits",
        )
        if out and out.strip():
            break
    else:
        return None
    fields = [f.strip() for f in out.strip().splitlines()[0].split(",")]
    if len(fields) != 4:
        return None
    clock, clock_max, throttle, utilization = (_number(f) for f in fields)
    apps = _smi(device, "--query-compute-apps=pid", "--format=csv,noheader") or ""
    me = psutil.Process()
    ours = {me.pid, *(c.pid for c in me.children(recursive=True))}
    pids = [int(w) for w in apps.split() if w.isdigit()]
    return {
        "sm_clock_mhz": clock,
        "sm_clock_max_mhz": clock_max,
        "throttle_reasons": None if throttle is None else int(throttle),
        "utilization": utilization,
        "other_pids": sorted(p for p in pids if p not in ours),
    }


def summarize(
    shares: Sequence[Share], gpu_readings: Sequence[dict | None] = (), first: int = 2
) -> dict[str, float | int]:
    """The numbers metrics.json keeps, over the steady epochs (see `steady`): the largest
    foreign and steal shares, the mean own share, the most preemptions per second and the
    largest share the run's threads waited for a CPU (reported, not judged: a run with more
    threads than CPUs waits on itself too); with GPU
    readings, the lowest SM clock against its maximum, every throttle-reason bit seen (GPU idle
    left out) and the most other processes on the GPU. GPU keys are absent without readings."""
    kept = [shares[n - 1] for n in steady(len(shares), first)]
    if not kept:
        raise ValueError("no shares to summarize")
    out: dict[str, float | int] = {
        "foreign_max": max(s.foreign for s in kept),
        "steal_max": max(s.steal for s in kept),
        "own_mean": statistics.fmean(s.own for s in kept),
        "ctx_invol_per_s_max": max(s.ctx_invol_per_s for s in kept),
        "waited_max": max(s.waited for s in kept),
    }
    gpu = [g for g in gpu_readings if g]
    ratios = [
        g["sm_clock_mhz"] / g["sm_clock_max_mhz"]
        for g in gpu
        if g["sm_clock_mhz"] is not None and g["sm_clock_max_mhz"]
    ]
    if ratios:
        out["gpu_sm_clock_ratio_min"] = min(ratios)
    reasons = [g["throttle_reasons"] for g in gpu if g["throttle_reasons"] is not None]
    if reasons:
        bits = 0
        for r in reasons:
            bits |= r
        out["gpu_throttle_reasons"] = bits & ~GPU_IDLE
    if gpu:
        out["gpu_other_processes_max"] = max(len(g["other_pids"]) for g in gpu)
    return out
