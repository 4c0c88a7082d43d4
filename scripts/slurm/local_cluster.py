#!/usr/bin/env python3
"""A one-node Slurm cluster on this machine, everything under one folder: to try
scripts/slurm/ without a cluster, and for tests/test_slurm.py.

    sudo python3 scripts/slurm/local_cluster.py DIR     # until Ctrl-C; prints SLURM_CONF

Starts munged (a key of its own), slurmctld and slurmd (node `bench0`, this machine's CPUs, at
127.0.0.1 on two free ports), with partitions bench-a (the default) and bench-b over that one
node. Config, state, spool, sockets and logs all go under DIR; no system file is read or
written, so it runs beside a real Slurm. Processes are tracked with proctrack/linuxproc and
tasks have no binding (task/none): no cgroups needed. Stopping cancels the jobs, stops the
daemons and kills, by pid, any process left that carries this cluster's SLURM_CONF.

Needs root (slurmd starts each job as its user) and Debian's slurm-wlm and munge (Slurm 22.05
on Debian 12). `ensure_installed(allow_install=True)` apt-gets them: only CI sets that
(MNISTBENCH_CI_INSTALL_SLURM=1, in .ci/run), never a test run elsewhere.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

NODE = "bench0"
PARTITIONS = ("bench-a", "bench-b")
DAEMONS = ("munged", "mungekey", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scontrol", "scancel", "sinfo")
PACKAGES = ("slurm-wlm", "munge")
INSTALL_VAR = "MNISTBENCH_CI_INSTALL_SLURM"
SBIN = "/usr/sbin:/sbin"  # where Debian puts the daemons; not on every user's PATH


def which(tool: str) -> str | None:
    return shutil.which(tool) or shutil.which(tool, path=SBIN)


def missing_tools() -> list[str]:
    return [t for t in (*DAEMONS, *CLIENTS) if which(t) is None]


def ensure_installed(allow_install: bool) -> str | None:
    """None when a local cluster can start; else why not (a test's skip reason). Installs
    slurm-wlm and munge with apt-get only when allow_install (CI's disposable machines)."""
    if os.geteuid() != 0:
        return "a local Slurm needs root (slurmd starts each job as its user)"
    missing = missing_tools()
    if missing and not allow_install:
        return (
            f"Slurm is not installed ({', '.join(missing)} missing): `apt-get install "
            f"{' '.join(PACKAGES)}`, or {INSTALL_VAR}=1 on a disposable machine (.ci/run)"
        )
    if missing:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for cmd in (
            ["apt-get", "update", "-qq"],
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES],
        ):
            subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, timeout=900)
        if missing_tools():
            return f"apt-get install {' '.join(PACKAGES)} left {', '.join(missing_tools())} missing"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalCluster:
    """munged + slurmctld + slurmd under `root`; start(), then stop() (also on failure)."""

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        self.conf = self.root / "slurm.conf"
        self.procs: list[subprocess.Popen] = []

    @property
    def env(self) -> dict[str, str]:
        """The environment for Slurm's commands (and the jobs they submit) on this cluster."""
        return {**os.environ, "SLURM_CONF": str(self.conf), "PATH": f"{os.environ['PATH']}:{SBIN}"}

    def start(self, timeout_s: float = 60) -> None:
        for sub in ("state", "spool", "log", "run", "munge"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        (self.root / "munge").chmod(0o700)
        (self.root / "run").chmod(0o755)  # munged: the socket's folder must be open to all
        key = self.root / "munge" / "munge.key"
        if not key.exists():
            subprocess.run([which("mungekey"), "--create", f"--keyfile={key}"], check=True)
        self.conf.write_text(self.config())
        try:
            self._daemon(
                "munged",
                "-F",
                "--force",  # its checks refuse a socket under a private folder (pytest's 0700)
                f"--key-file={key}",
                f"--socket={self.root / 'run' / 'munge.sock'}",
                f"--pid-file={self.root / 'run' / 'munged.pid'}",
                f"--seed-file={self.root / 'munge' / 'seed'}",
                f"--log-file={self.root / 'log' / 'munged.log'}",
            )
            self._wait_for(lambda: (self.root / "run" / "munge.sock").exists(), 20, "munged")
            self._daemon("slurmctld", "-D", "-f", str(self.conf))
            self._daemon("slurmd", "-D", "-f", str(self.conf), "-N", NODE)
            self._wait_for(self._node_idle, timeout_s, f"node {NODE} idle")
        except BaseException:
            self.stop()
            raise

    def config(self) -> str:
        r = self.root
        lines = [
            "ClusterName=mnistbench-local",
            f"SlurmctldHost={socket.gethostname().split('.')[0]}(127.0.0.1)",
            f"SlurmctldPort={free_port()}",
            f"SlurmdPort={free_port()}",
            "SlurmUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={r / 'run' / 'munge.sock'}",
            f"StateSaveLocation={r / 'state'}",
            f"SlurmdSpoolDir={r / 'spool'}",
            f"SlurmctldPidFile={r / 'run' / 'slurmctld.pid'}",
            f"SlurmdPidFile={r / 'run' / 'slurmd.pid'}",
            f"SlurmctldLogFile={r / 'log' / 'slurmctld.log'}",
            f"SlurmdLogFile={r / 'log' / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc",  # no cgroups
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "MpiDefault=none",
            "SchedulerType=sched/backfill",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",
            "ReturnToService=2",
            "KillWait=10",  # s between a cancelled job's SIGTERM and SIGKILL
            f"NodeName={NODE} NodeAddr=127.0.0.1 CPUs={self.cpus()} State=UNKNOWN",
        ]
        for i, name in enumerate(PARTITIONS):
            default = "YES" if i == 0 else "NO"
            lines.append(f"PartitionName={name} Nodes={NODE} Default={default} State=UP")
        return "\n".join(lines) + "\n"

    @staticmethod
    def cpus() -> int:
        """The CPUs slurmd will find (`slurmd -C`): a node configured with more is drained."""
        out = subprocess.run([which("slurmd"), "-C"], capture_output=True, text=True).stdout
        found = re.search(r"\bCPUs=(\d+)", out)
        return int(found.group(1)) if found else os.cpu_count() or 1

    def _daemon(self, name: str, *args: str) -> None:
        log = open(self.root / "log" / f"{name}.out", "w")  # noqa: SIM115 (open while it runs)
        self.procs.append(
            subprocess.Popen(
                [which(name), *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,  # a Ctrl-C in the terminal goes to us, not to them
            )
        )
        log.close()

    def _node_idle(self) -> bool:
        proc = subprocess.run(
            ["sinfo", "-h", "-n", NODE, "-o", "%T"], env=self.env, capture_output=True, text=True
        )
        return proc.stdout.split()[:1] == ["idle"]

    def _wait_for(self, ready, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not ready():
            dead = [p for p in self.procs if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                logs = ", ".join(str(p) for p in sorted((self.root / "log").glob("*")))
                why = f"{Path(dead[0].args[0]).name} exited" if dead else f"{timeout_s:.0f} s"
                raise RuntimeError(f"local Slurm: no {what} ({why}); logs: {logs}")
            time.sleep(0.5)

    def stop(self) -> None:
        """Cancel every job, stop the daemons (last started first), then kill by pid what is
        left of this cluster: job steps and their processes carry its SLURM_CONF."""
        if any(p.poll() is None for p in self.procs) and self.conf.exists():
            subprocess.run(["scancel", "--user=root"], env=self.env, capture_output=True)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and self._jobs_left():
                time.sleep(1)
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.procs.clear()
        for pid in self.leftovers():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def _jobs_left(self) -> bool:
        proc = subprocess.run(["squeue", "-h"], env=self.env, capture_output=True, text=True)
        return proc.returncode == 0 and bool(proc.stdout.strip())

    def leftovers(self) -> list[int]:
        """This cluster's job steps (slurmstepd) and job processes (SLURM_JOB_ID set) still
        running: those whose environment names this cluster's SLURM_CONF. A shell that only
        exported SLURM_CONF is not one of them."""
        marker = f"SLURM_CONF={self.conf}".encode()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                env = (entry / "environ").read_bytes().split(b"\0")
                comm = (entry / "comm").read_text().strip()
            except OSError:  # gone, or not ours to read
                continue
            in_job = any(v.startswith(b"SLURM_JOB_ID=") for v in env)
            if marker in env and (in_job or comm == "slurmstepd"):
                found.append(int(entry.name))
        return found


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    reason = ensure_installed(allow_install=False)
    if reason:
        print(f"error: {reason}", file=sys.stderr)
        return 1
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):  # handlers, not a blocked mask: the daemons
        signal.signal(sig, lambda *_: stopping.set())  # would inherit the mask, deaf to SIGTERM
    cluster = LocalCluster(argv[0])
    try:
        cluster.start()
        print(
            f"export SLURM_CONF={cluster.conf}  # partitions {', '.join(PARTITIONS)}; Ctrl-C stops"
        )
        while not stopping.wait(0.5):
            pass
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
