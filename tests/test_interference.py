"""mnistbench.interference: shares read from canned and live /proc, the verdict on a run's
epochs, a real CPU hog beside a real workload, the drift probe, nvidia-smi parsing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import psutil
import pytest

from mnistbench import interference as I

CPUS = sorted(os.sched_getaffinity(0))
TICKS = I.CLOCK_TICKS
QUIET = I.Thresholds(foreign=0.03, steal=0.02, spread=0.15)


def write_stat(proc, busy_ticks: int, steal_ticks: int = 0, idle_ticks: int = 10**6) -> None:
    """A /proc/stat whose usable CPUs share busy_ticks (as user and system) and steal_ticks;
    the all-CPU line holds their sum, other lines as the kernel writes them."""
    n = len(CPUS)
    rows = {f"cpu{c}": (busy_ticks // n, steal_ticks // n) for c in CPUS}
    lines = [f"cpu  {busy_ticks // 2} 0 {busy_ticks // 2} {idle_ticks} 7 0 0 {steal_ticks} 0 0"]
    lines += [
        f"{k} {b // 2} 0 {b - b // 2} {idle_ticks // n} 3 0 0 {s} 0 0" for k, (b, s) in rows.items()
    ]
    lines += ["intr 12345 0 0", "ctxt 99999", "btime 1700000000", "procs_running 1"]
    proc.mkdir(exist_ok=True)
    (proc / "stat").write_text("\n".join(lines) + "\n")


def canned_share(tmp_path, busy: float, steal: float = 0.0) -> I.Share:
    """The share between two reads of canned stat files `busy` and `steal` CPU-seconds apart,
    one second apart; own is this (idle) test process's own, read live."""
    n = len(CPUS)
    write_stat(tmp_path / "a", busy_ticks=1000 * n, steal_ticks=10 * n)
    write_stat(
        tmp_path / "b",
        busy_ticks=1000 * n + round(busy * TICKS),
        steal_ticks=10 * n + round(steal * TICKS),
    )
    a = I.read(proc=str(tmp_path / "a"))
    b = I.read(proc=str(tmp_path / "b"))
    return I.between(a, replace(b, wall_s=a.wall_s + 1.0))


def test_read_parses_the_usable_cpus_lines(tmp_path):
    write_stat(tmp_path, busy_ticks=400 * len(CPUS), steal_ticks=6 * len(CPUS))
    r = I.read(proc=str(tmp_path))
    assert r.cpus == len(CPUS)
    assert r.busy_s == pytest.approx(400 * len(CPUS) / TICKS)
    assert r.steal_s == pytest.approx(6 * len(CPUS) / TICKS)
    assert r.own_s > 0 and r.ctx_invol >= 0  # this process has run


def test_read_falls_back_to_the_all_cpu_line(tmp_path):
    (tmp_path / "stat").write_text("cpu  100 20 30 5000 9 1 2 40 100 0\nintr 1\n")
    r = I.read(proc=str(tmp_path))
    assert r.busy_s == pytest.approx((100 + 20 + 30 + 1 + 2) / TICKS)  # not idle, iowait, steal
    assert r.steal_s == pytest.approx(40 / TICKS)


def test_between_a_quiet_machine(tmp_path):
    s = canned_share(tmp_path, busy=0.01)
    assert s.wall_s == 1.0
    assert s.foreign < 0.01 and s.steal == 0


def test_between_a_hog(tmp_path):
    s = canned_share(tmp_path, busy=0.9 * len(CPUS))  # 90% of every CPU, none of it ours
    assert s.foreign == pytest.approx(0.9, abs=0.01)
    assert s.own < 0.01


def test_between_steal(tmp_path):
    s = canned_share(tmp_path, busy=0.0, steal=0.1 * len(CPUS))
    assert s.steal == pytest.approx(0.1, abs=0.01)
    assert s.foreign == 0


def test_between_needs_time_to_pass():
    r = I.read()
    with pytest.raises(ValueError, match="not after"):
        I.between(r, r)


SPIN = "import time\nt = time.process_time()\nwhile time.process_time() - t < {s}: pass\n"


def test_a_reaped_childs_cpu_is_the_runs_own():
    """A DataLoader worker is a child of the run: its CPU is own, never foreign, also once it
    has exited and been reaped."""
    a = I.read()
    subprocess.run([sys.executable, "-c", SPIN.format(s=0.3)], check=True)  # 0.3 CPU-s
    b = I.read()
    s = I.between(a, b)
    assert b.own_s - a.own_s >= 0.28
    assert s.own * s.wall_s * b.cpus == pytest.approx(b.own_s - a.own_s)


def test_a_live_grandchilds_cpu_is_the_runs_own():
    """Two levels down (python under a shell), read while it spins."""
    a = I.read()
    child = subprocess.Popen(
        ["sh", "-c", f"{sys.executable} -c '{SPIN.format(s=10)}'; :"], start_new_session=True
    )
    try:
        deadline = time.monotonic() + 10  # the CPUs may be busy with others' work
        while (b := I.read()).own_s - a.own_s < 0.3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(psutil.Process().children(recursive=True)) == 2  # sh and its python
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
    assert b.own_s - a.own_s >= 0.3


def test_threads_waiting_for_a_cpu_are_read():
    """Twice as many spinning children as CPUs: the run's threads wait for a CPU about half
    of the time (more if others' work competes too)."""
    spinners = [subprocess.Popen([sys.executable, "-c", SPIN.format(s=10)]) for _ in CPUS * 2]
    try:
        time.sleep(0.2)  # started
        a = I.read()
        time.sleep(0.5)
        b = I.read()
    finally:
        for p in spinners:
            p.kill()
            p.wait()
    s = I.between(a, b)
    assert b.waited_s - a.waited_s >= 0.2 * len(CPUS)  # ~0.5 s per CPU expected
    assert s.waited == pytest.approx((b.waited_s - a.waited_s) / (s.wall_s * b.cpus))


def test_verdict_quiet():
    shares = [I.Share(2.0, 0.5, 0.01, 0.0, 30.0)] * 4
    v = I.verdict([3.0, 1.50, 1.55, 1.52], shares, QUIET)
    assert v == I.Verdict("quiet", (), ())


def test_verdict_names_the_disturbed_epochs():
    quiet, busy = I.Share(2.0, 0.5, 0.01, 0.0, 30.0), I.Share(2.0, 0.4, 0.12, 0.0, 80.0)
    v = I.verdict(
        [3.0, 1.5, 2.0, 1.5, 1.9], [quiet, quiet, busy, quiet, replace(busy, foreign=0.08)], QUIET
    )
    assert v.label == "disturbed"
    assert v.disturbed_epochs == (3, 5)
    assert v.causes[0] == "epochs 3, 5: others used 12%, 8.0% of the CPUs (limit 3.0%)"
    assert v.causes[1].startswith("steady epochs spread 29% (limit 15%)")
    assert "machine free" not in v.causes[1]


def test_verdict_steal():
    quiet = I.Share(2.0, 0.5, 0.0, 0.0, 30.0)
    v = I.verdict([3.0, 1.5, 1.5], [quiet, replace(quiet, steal=0.04), quiet], QUIET)
    assert (v.label, v.disturbed_epochs) == ("disturbed", (2,))
    assert v.causes == ("epoch 2: the hypervisor took (steal) 4.0% of the CPUs (limit 2.0%)",)


def test_verdict_unsteady_backend_on_a_free_machine():
    quiet = I.Share(2.0, 0.9, 0.0, 0.0, 30.0)
    v = I.verdict([5.0, 1.3, 2.4, 1.3, 2.4], [quiet] * 5, QUIET)  # eager torch, 2 threads
    assert v == I.Verdict(
        "unsteady", ("steady epochs spread 59% (limit 15%) with the machine free",), ()
    )


def test_verdict_leaves_epoch_1_out_of_the_spread_but_not_out_of_the_load():
    quiet = I.Share(2.0, 0.9, 0.0, 0.0, 30.0)
    assert I.verdict([9.0, 1.5, 1.5], [quiet] * 3, QUIET).label == "quiet"  # compile time
    v = I.verdict([9.0, 1.5, 1.5], [replace(quiet, foreign=0.2)] + [quiet] * 2, QUIET)
    assert (v.label, v.disturbed_epochs) == ("disturbed", (1,))
    assert I.verdict([9.0], [quiet], QUIET).label == "quiet"  # one epoch: its own steady


def test_verdict_needs_a_share_per_epoch():
    with pytest.raises(ValueError, match="3 epoch times but 2 shares"):
        I.verdict([1.0, 1.0, 1.0], [I.Share(1.0, 0.5, 0.0, 0.0, 0.0)] * 2, QUIET)


def test_summarize_takes_the_steady_epochs_and_the_gpu():
    shares = [
        I.Share(9.0, 0.9, 0.50, 0.10, 99.0),  # epoch 1: left out
        I.Share(1.0, 0.8, 0.02, 0.00, 30.0),
        I.Share(1.0, 0.6, 0.04, 0.01, 40.0),
    ]
    gpu = [
        {
            "sm_clock_mhz": 1980.0,
            "sm_clock_max_mhz": 1980.0,
            "throttle_reasons": 0x1,
            "utilization": 5.0,
            "other_pids": [],
        },
        None,  # a reading that failed
        {
            "sm_clock_mhz": 1485.0,
            "sm_clock_max_mhz": 1980.0,
            "throttle_reasons": 0x4,
            "utilization": 90.0,
            "other_pids": [7, 8],
        },
    ]
    assert I.summarize(shares, gpu) == {
        "foreign_max": 0.04,
        "steal_max": 0.01,
        "own_mean": pytest.approx(0.7),
        "ctx_invol_per_s_max": 40.0,
        "waited_max": 0.0,
        "gpu_sm_clock_ratio_min": 0.75,
        "gpu_throttle_reasons": 0x4,  # GPU idle (0x1) is no throttle
        "gpu_other_processes_max": 2,
    }
    assert set(I.summarize(shares)) == {
        "foreign_max",
        "steal_max",
        "own_mean",
        "ctx_invol_per_s_max",
        "waited_max",
    }


# A workload in its own process, so the hogs (this test's children) are not in its tree: a
# few "epochs" of pure-Python work, each timed and read with between(); prints JSON.
WORKLOAD = """
import json, time
from dataclasses import asdict
from mnistbench import interference as I
out = []
for _ in range(3):  # epochs of 0.4 s: the counters' ticks then blur a share by 5% at most
    a = I.read(); t0 = time.perf_counter()
    while time.perf_counter() - t0 < 0.4:
        sum(i * i for i in range(20_000))
    out.append((time.perf_counter() - t0, asdict(I.between(a, I.read()))))
print(json.dumps(out))
"""


def workload() -> tuple[list[float], list[I.Share]]:
    env = {**os.environ, "PYTHONPATH": str(Path(I.__file__).parents[1])}  # this mnistbench
    done = subprocess.run(
        [sys.executable, "-c", WORKLOAD], capture_output=True, text=True, check=True, env=env
    )
    rows = json.loads(done.stdout)
    return [t for t, _ in rows], [I.Share(**share) for _, share in rows]


# A busy loop that dies with its parent (prctl PR_SET_PDEATHSIG = 1, SIGKILL = 9), should the
# test's process be killed before its finally runs.
HOG = "import ctypes\nctypes.CDLL(None).prctl(1, 9)\nwhile True: pass"


def test_a_real_hog_beside_a_real_workload_is_named():
    """Busy loops on every usable CPU beside the workload: every epoch is disturbed, and
    others' share is higher than in the run without them (other work on this machine may
    disturb that one too, so it is not required to come out quiet)."""
    free_times, free = workload()
    hogs = [subprocess.Popen([sys.executable, "-c", HOG]) for _ in CPUS]
    try:
        times, busy = workload()
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    v = I.verdict(times, busy, QUIET)
    assert v.label == "disturbed", (times, busy)
    assert v.disturbed_epochs == (1, 2, 3), (times, busy)
    assert v.causes[0].startswith("epochs 1, 2, 3: others used")
    mean = lambda shares: sum(s.foreign for s in shares) / len(shares)  # noqa: E731
    if I.verdict(free_times, free, QUIET).label != "disturbed":  # a machine free before (CI)
        assert mean(busy) > mean(free), (busy, free)


def test_wait_for_quiet_returns_once_quiet_or_out_of_time():
    lines = []
    s = I.wait_for_quiet(I.Thresholds(foreign=2.0, steal=2.0), 10, say=lines.append, seconds=0.1)
    assert 0.09 < s.wall_s < 1 and len(lines) == 1 and "waiting" not in lines[0]
    never = I.Thresholds(foreign=-1.0, steal=1.0)
    t0 = time.monotonic()
    I.wait_for_quiet(never, 0.25, say=lines.append, seconds=0.1)
    assert time.monotonic() - t0 < 1.5
    assert "waiting for quiet" in lines[1] and lines[-1].startswith("machine busy: ")
    assert "timing anyway" in lines[-1] and "(waited " in lines[-1]
    lines.clear()
    I.wait_for_quiet(never, 0, say=lines.append, seconds=0.1)  # no wait asked: said at once
    assert len(lines) == 1 and "timing anyway" in lines[0] and "waiting" not in lines[0]


def test_probe_is_short_and_repeatable():
    """The same work each call: the same CPU time, well under a second. Its wall time is
    what it measures, so other work on this machine moves it; only a loose bound on that."""
    times, cpu = [], []
    for _ in range(2):
        cpu0 = time.thread_time()
        times.append(I.probe())
        cpu.append(time.thread_time() - cpu0)
    assert max(cpu) < 0.6 and max(cpu) / min(cpu) < 1.5, cpu
    assert 0.001 < min(times) and max(times) < 0.5 and max(times) / min(times) < 3, times


def fake_smi(tmp_path, monkeypatch, body: str) -> None:
    path = tmp_path / "nvidia-smi"
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")


def test_gpu_reading_without_nvidia_smi(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert I.gpu_reading() is None


def test_gpu_reading_parses_nvidia_smi(tmp_path, monkeypatch):
    me = os.getpid()
    fake_smi(
        tmp_path,
        monkeypatch,
        f"""echo "$@" >> {tmp_path}/calls
case "$*" in
  *--id=1*--query-gpu=clocks.sm,clocks.max.sm,clocks_throttle_reasons.active,utilization.gpu*)
    echo "1410, 1980, 0x0000000000000004, 87";;
  *--id=1*--query-compute-apps=pid*) printf '{me}\\n4242\\n';;
  *) exit 6;;
esac""",
    )
    assert I.gpu_reading(1) == {
        "sm_clock_mhz": 1410.0,
        "sm_clock_max_mhz": 1980.0,
        "throttle_reasons": 4,
        "utilization": 87.0,
        "other_pids": [4242],  # not this process
    }
    assert I.gpu_reading(0) is None  # the fake knows GPU 1 only: exit 6


def test_gpu_reading_newer_field_name_and_missing_values(tmp_path, monkeypatch):
    fake_smi(
        tmp_path,
        monkeypatch,
        """case "$*" in
  *clocks_throttle_reasons*) echo 'Field "clocks_throttle_reasons.active" is not a valid field'; exit 2;;
  *clocks_event_reasons.active*) echo "[N/A], [N/A], [Not Supported], 0";;
  *--query-compute-apps*) ;;
esac""",
    )
    assert I.gpu_reading() == {
        "sm_clock_mhz": None,
        "sm_clock_max_mhz": None,
        "throttle_reasons": None,
        "utilization": 0.0,
        "other_pids": [],
    }


def test_gpu_reading_is_bounded_in_time(tmp_path, monkeypatch):
    fake_smi(tmp_path, monkeypatch, "sleep 10")
    monkeypatch.setattr(I, "NVIDIA_SMI_TIMEOUT_S", 0.3)
    t0 = time.monotonic()
    assert I.gpu_reading() is None
    assert time.monotonic() - t0 < 2.0
