#!/usr/bin/env python3
"""A Slurm cluster on this machine, everything under one folder: to try scripts/slurm/
without a cluster, and for tests/test_slurm.py.

    sudo python3 scripts/slurm/local_cluster.py DIR              # one node; until Ctrl-C
    sudo python3 scripts/slurm/local_cluster.py --nodes 2 DIR    # two nodes, two machine kinds

Starts munged (a key of its own), slurmctld and slurmd, with partitions bench-a (the default)
and bench-b over every node. Config, state, spool, sockets, logs and each node's scratch
folder all go under DIR; no system file is read or written, so it runs beside a real Slurm.
Processes are tracked with proctrack/linuxproc and tasks have no binding (task/none): no
cgroups needed. Stopping cancels the jobs, stops the daemons and kills, by pid, any process
left that carries this cluster's SLURM_CONF.

One node (the default) changes nothing on the machine's network: node `bench0`, this
machine's CPUs, at 127.0.0.1; it needs only Slurm. Two nodes (`--nodes 2`) are two machines
as far as Slurm and mnistbench can tell: each slurmd runs in a network and hostname namespace
of its own (`unshare --net --uts`, entered with `nsenter`), with an address on a Linux bridge
made for it (a veth pair per node) on a private /24 no interface here uses, and slurmctld on
the bridge's address. The first node is pinned to one CPU (`taskset`), the last has them all,
so their runs fingerprint as two machine kinds. Stopping removes the bridge; the namespaces
end with their last process.

Either way each node has a scratch folder of its own, DIR/scratch/<node>, its SLURM_TMPDIR (a TaskProlog sets it, as
sites set node-local scratch), and scripts/slurm/epilog.sh runs as the Epilog after each job,
as a site would run it.

Needs root (slurmd starts each job as its user) and Debian's slurm-wlm and munge (Slurm 22.05
on Debian 12); two nodes also iproute2 (`ip`) and util-linux (unshare, nsenter, taskset).
`ensure_installed(allow_install=True)` apt-gets them: only CI sets that
(MNISTBENCH_CI_INSTALL_SLURM=1, in .ci/run), never a test run elsewhere.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

NODE = "bench0"  # the one node; with several: bench0, bench1, ...
PARTITIONS = ("bench-a", "bench-b")
DAEMONS = ("munged", "mungekey", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scontrol", "scancel", "sinfo")
NETWORK_TOOLS = ("ip", "unshare", "nsenter", "taskset")  # iproute2, util-linux: several nodes
PACKAGES = ("slurm-wlm", "munge")
NETWORK_PACKAGES = ("iproute2",)
INSTALL_VAR = "MNISTBENCH_CI_INSTALL_SLURM"
SBIN = "/usr/sbin:/sbin"  # where Debian puts the daemons; not on every user's PATH
EPILOG = Path(__file__).resolve().parent / "epilog.sh"  # the one docs/cluster.md offers sites


def which(tool: str) -> str | None:
    return shutil.which(tool) or shutil.which(tool, path=SBIN)


def missing_tools(nodes: int = 1) -> list[str]:
    tools = (*DAEMONS, *CLIENTS, *(NETWORK_TOOLS if nodes > 1 else ()))
    return [t for t in tools if which(t) is None]


def ensure_installed(allow_install: bool, nodes: int = 1) -> str | None:
    """None when a local cluster of `nodes` nodes can start; else why not (a test's skip
    reason). Installs slurm-wlm and munge (and iproute2 for several nodes) with apt-get only
    when allow_install (CI's disposable machines)."""
    if os.geteuid() != 0:
        return "a local Slurm needs root (slurmd starts each job as its user)"
    packages = (*PACKAGES, *(NETWORK_PACKAGES if nodes > 1 else ()))
    missing = missing_tools(nodes)
    if missing and not allow_install:
        return (
            f"Slurm is not installed ({', '.join(missing)} missing): `apt-get install "
            f"{' '.join(packages)}`, or {INSTALL_VAR}=1 on a disposable machine (.ci/run)"
        )
    if missing:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for cmd in (
            ["apt-get", "update", "-qq"],
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages],
        ):
            subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, timeout=900)
        if missing_tools(nodes):
            left = ", ".join(missing_tools(nodes))
            return f"apt-get install {' '.join(packages)} left {left} missing"
    if nodes > 1:
        return network_reason(nodes)
    return None


def network_reason(nodes: int) -> str | None:
    """Why `nodes` nodes cannot be told apart here (None when they can): network namespaces
    refused (a container without CAP_SYS_ADMIN), or too few CPUs for two machine kinds."""
    if len(os.sched_getaffinity(0)) < 2:
        return "two local nodes need 2 CPUs (one node is pinned to 1 CPU, the other has all)"
    probe = subprocess.run(
        [which("unshare"), "--net", "--uts", "true"], capture_output=True, text=True
    )
    if probe.returncode != 0:
        why = (probe.stderr.strip() or f"exit {probe.returncode}").splitlines()[-1]
        return f"no network namespaces here (`unshare --net --uts`: {why})"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_subnet() -> ipaddress.IPv4Network:
    """A /24 of 10.0.0.0/8 that overlaps no address or route of this machine."""
    out = (
        subprocess.run(
            [which("ip"), "-o", "-4", "route", "show", "table", "all"],
            capture_output=True,
            text=True,
        ).stdout
        + subprocess.run([which("ip"), "-o", "-4", "addr"], capture_output=True, text=True).stdout
    )
    used = []
    for word in re.findall(r"\b\d+\.\d+\.\d+\.\d+(?:/\d+)?\b", out):
        try:
            used.append(ipaddress.ip_network(word, strict=False))
        except ValueError:
            continue
    rng = random.Random(os.getpid() ^ time.time_ns())
    for _ in range(200):
        net = ipaddress.ip_network(f"10.{rng.randrange(64, 250)}.{rng.randrange(1, 255)}.0/24")
        if not any(net.overlaps(u) for u in used if u.prefixlen > 0):
            return net
    raise RuntimeError("local Slurm: no free /24 in 10.0.0.0/8 for the nodes' bridge")


@dataclass
class Node:
    name: str
    addr: str
    cpus: list[int]  # the CPUs its slurmd (and so its jobs) may run on
    pinned: bool  # started under `taskset -c`: fewer CPUs than the machine's
    holder: subprocess.Popen | None = None  # holds its namespaces (several nodes)

    def enter(self) -> list[str]:
        """The command prefix that runs a program as this node: its namespaces, its CPUs."""
        prefix = []
        if self.holder is not None:
            ns = f"/proc/{self.holder.pid}/ns"
            prefix = [which("nsenter"), f"--net={ns}/net", f"--uts={ns}/uts"]
        if self.pinned:
            prefix += [which("taskset"), "-c", ",".join(map(str, self.cpus))]
        return prefix


class LocalCluster:
    """munged + slurmctld + one slurmd per node under `root`; start(), then stop() (also on
    failure). nodes=1: one node at 127.0.0.1; nodes>1: each in namespaces of its own on a
    bridge (the module's docstring)."""

    def __init__(self, root: str | Path, nodes: int = 1):
        self.root = Path(root).resolve()
        self.conf = self.root / "slurm.conf"
        self.procs: list[subprocess.Popen] = []
        self.tag = secrets.token_hex(3)  # in the bridge's and veths' names: this cluster's
        self.bridge = f"mnb{self.tag}br"
        self.links: list[str] = []  # network links made here, removed by name in stop()
        self.subnet: ipaddress.IPv4Network | None = None
        self.nodes = self._plan(nodes)

    def _plan(self, count: int) -> list[Node]:
        allowed = sorted(os.sched_getaffinity(0))
        if count == 1:
            return [Node(NODE, "127.0.0.1", allowed, pinned=False)]
        self.subnet = free_subnet()
        hosts = list(self.subnet.hosts())  # .1 the bridge, then one each
        nodes = []
        for i in range(count):
            share = allowed[: max(1, len(allowed) * (i + 1) // count)]
            nodes.append(Node(f"bench{i}", str(hosts[i + 1]), share, len(share) < len(allowed)))
        return nodes

    @property
    def controller_addr(self) -> str:
        return "127.0.0.1" if self.subnet is None else str(next(self.subnet.hosts()))

    @property
    def node_names(self) -> list[str]:
        return [n.name for n in self.nodes]

    @property
    def env(self) -> dict[str, str]:
        """The environment for Slurm's commands (and the jobs they submit) on this cluster."""
        return {**os.environ, "SLURM_CONF": str(self.conf), "PATH": f"{os.environ['PATH']}:{SBIN}"}

    def start(self, timeout_s: float = 60) -> None:
        for sub in ("state", "spool", "log", "run", "munge", "scratch"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        (self.root / "munge").chmod(0o700)
        (self.root / "run").chmod(0o755)  # munged: the socket's folder must be open to all
        for node in self.nodes:
            (self.root / "spool" / node.name).mkdir(exist_ok=True)
            (self.root / "scratch" / node.name).mkdir(exist_ok=True)
            (self.root / "scratch" / node.name).chmod(0o1777)  # as /tmp: every user's jobs
        prolog = self.root / "task_prolog.sh"
        prolog.write_text(
            "#!/bin/sh\n# each node's scratch folder, as a site's node-local one\n"
            f'echo "export SLURM_TMPDIR={self.root / "scratch"}/$SLURMD_NODENAME"\n'
        )
        prolog.chmod(0o755)
        epilog = self.root / "epilog.sh"
        epilog.write_text(
            "#!/bin/sh\n# the site Epilog of scripts/slurm/, on this node's scratch folder\n"
            f"MNISTBENCH_SCRATCH={self.root / 'scratch'}/$SLURMD_NODENAME exec {EPILOG}\n"
        )
        epilog.chmod(0o755)
        key = self.root / "munge" / "munge.key"
        if not key.exists():
            subprocess.run([which("mungekey"), "--create", f"--keyfile={key}"], check=True)
        try:
            if self.subnet is not None:
                self._network()
            self.conf.write_text(self.config())
            self._daemon(
                "munged",
                [],
                "-F",
                "--force",  # its checks refuse a socket under a private folder (pytest's 0700)
                f"--key-file={key}",
                f"--socket={self.root / 'run' / 'munge.sock'}",
                f"--pid-file={self.root / 'run' / 'munged.pid'}",
                f"--seed-file={self.root / 'munge' / 'seed'}",
                f"--log-file={self.root / 'log' / 'munged.log'}",
            )
            self._wait_for(lambda: (self.root / "run" / "munge.sock").exists(), 20, "munged")
            self._daemon("slurmctld", [], "-D", "-f", str(self.conf))
            for node in self.nodes:
                self._daemon("slurmd", node.enter(), "-D", "-f", str(self.conf), "-N", node.name)
            self._wait_for(self._nodes_idle, timeout_s, f"node(s) {','.join(self.node_names)} idle")
        except BaseException:
            self.stop()
            raise

    def _ip(self, *args: str) -> None:
        proc = subprocess.run([which("ip"), *args], capture_output=True, text=True, timeout=30)
        if proc.returncode != 0:
            raise RuntimeError(f"local Slurm: `ip {' '.join(args)}`: {proc.stderr.strip()}")

    def _network(self) -> None:
        """The bridge at the subnet's first address, and per node a holder process in new
        network and hostname namespaces, joined to the bridge by a veth pair."""
        prefix = self.subnet.prefixlen
        self._ip("link", "add", self.bridge, "type", "bridge")
        self.links.append(self.bridge)
        self._ip("addr", "add", f"{self.controller_addr}/{prefix}", "dev", self.bridge)
        self._ip("link", "set", self.bridge, "up")
        for i, node in enumerate(self.nodes):
            node.holder = subprocess.Popen(  # sets the hostname, then execs sleep: one pid
                [
                    which("unshare"),
                    "--net",
                    "--uts",
                    "sh",
                    "-c",
                    'hostname "$0"; exec sleep infinity',
                    node.name,
                ],
                start_new_session=True,
            )
            self._wait_for(lambda n=node: self._in_namespace(n), 10, f"{node.name}'s namespaces")
            host_end, node_end = f"mnb{self.tag}h{i}", f"mnb{self.tag}n{i}"
            self._ip(
                "link",
                "add",
                host_end,
                "type",
                "veth",
                "peer",
                "name",
                node_end,
                "netns",
                str(node.holder.pid),
            )
            self.links.append(host_end)
            self._ip("link", "set", host_end, "master", self.bridge, "up")
            ns = [which("nsenter"), f"--net=/proc/{node.holder.pid}/ns/net", which("ip")]
            for args in (
                ["addr", "add", f"{node.addr}/{prefix}", "dev", node_end],
                ["link", "set", node_end, "up"],
                ["link", "set", "lo", "up"],
            ):
                proc = subprocess.run([*ns, *args], capture_output=True, text=True, timeout=30)
                if proc.returncode != 0:
                    raise RuntimeError(
                        f"local Slurm: {node.name}: `ip {' '.join(args)}`: {proc.stderr.strip()}"
                    )

    @staticmethod
    def _in_namespace(node: Node) -> bool:
        """The holder has entered its namespaces and set its hostname (it runs sleep)."""
        try:
            return Path(f"/proc/{node.holder.pid}/comm").read_text().strip() == "sleep"
        except OSError:
            return False

    def config(self) -> str:
        r = self.root
        lines = [
            "ClusterName=mnistbench-local",
            f"SlurmctldHost={socket.gethostname().split('.')[0]}({self.controller_addr})",
            f"SlurmctldPort={free_port()}",
            f"SlurmdPort={free_port()}",
            "SlurmUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={r / 'run' / 'munge.sock'}",
            f"StateSaveLocation={r / 'state'}",
            f"SlurmdSpoolDir={r / 'spool'}/%n",  # %n: the node's name, one folder each
            f"SlurmctldPidFile={r / 'run' / 'slurmctld.pid'}",
            f"SlurmdPidFile={r / 'run' / 'slurmd-%n.pid'}",
            f"SlurmctldLogFile={r / 'log' / 'slurmctld.log'}",
            f"SlurmdLogFile={r / 'log' / 'slurmd-%n.log'}",
            f"TaskProlog={r / 'task_prolog.sh'}",
            f"Epilog={r / 'epilog.sh'}",
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
            "MinJobAge=900",  # s an ended job stays in squeue --states=all (gather reads it)
        ]
        for node in self.nodes:
            lines.append(
                f"NodeName={node.name} NodeAddr={node.addr} CPUs={self.cpus(node)} State=UNKNOWN"
            )
        names = ",".join(self.node_names)
        for i, name in enumerate(PARTITIONS):
            default = "YES" if i == 0 else "NO"
            lines.append(f"PartitionName={name} Nodes={names} Default={default} State=UP")
        return "\n".join(lines) + "\n"

    @staticmethod
    def cpus(node: Node) -> int:
        """The CPUs the node's slurmd will use: `slurmd -C` under its taskset (a node
        configured with more than slurmd finds is drained); never more than it is pinned to."""
        cmd = [*Node(node.name, node.addr, node.cpus, node.pinned).enter(), which("slurmd"), "-C"]
        out = subprocess.run(cmd, capture_output=True, text=True).stdout
        found = re.search(r"\bCPUs=(\d+)", out)
        cpus = int(found.group(1)) if found else len(node.cpus)
        return min(cpus, len(node.cpus))

    def _daemon(self, name: str, prefix: list[str], *args: str) -> None:
        log_name = f"{name}-{args[-1]}" if name == "slurmd" else name
        log = open(self.root / "log" / f"{log_name}.out", "w")  # noqa: SIM115 (open while it runs)
        self.procs.append(
            subprocess.Popen(
                [*prefix, which(name), *args],  # nsenter and taskset exec it: the same pid
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,  # a Ctrl-C in the terminal goes to us, not to them
            )
        )
        log.close()

    def _nodes_idle(self) -> bool:
        proc = subprocess.run(
            ["sinfo", "-h", "-N", "-o", "%N %T"], env=self.env, capture_output=True, text=True
        )
        states = dict(
            line.split()[:2] for line in proc.stdout.splitlines() if len(line.split()) > 1
        )
        return all(states.get(name) == "idle" for name in self.node_names)

    def _wait_for(self, ready, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not ready():
            dead = [p for p in self.procs if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                logs = ", ".join(str(p) for p in sorted((self.root / "log").glob("*")))
                why = f"{Path(dead[0].args[0]).name} exited" if dead else f"{timeout_s:.0f} s"
                raise RuntimeError(f"local Slurm: no {what} ({why}); logs: {logs}")
            time.sleep(0.2)

    def stop(self) -> None:
        """Cancel every job, stop the daemons (last started first), kill by pid what is left
        of this cluster (job steps and their processes carry its SLURM_CONF), then end the
        nodes' namespaces (their holders, by pid) and remove the links made here, by name."""
        if any(p.poll() is None for p in self.procs) and self.conf.exists():
            subprocess.run(["scancel", "--user=root"], env=self.env, capture_output=True)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and self._jobs_left():
                time.sleep(1)
        for proc in reversed(self.procs):
            _end(proc)
        self.procs.clear()
        for pid in self.leftovers():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for node in self.nodes:
            if node.holder is not None:
                _end(node.holder)
                node.holder = None
        for link in reversed(self.links):  # a veth went with its namespace; the bridge stays
            if Path("/sys/class/net", link).exists():
                subprocess.run([which("ip"), "link", "del", link], capture_output=True, timeout=30)
        self.links.clear()

    def links_left(self) -> list[str]:
        """This cluster's network links still there (none once stopped)."""
        net = Path("/sys/class/net")
        return sorted(p.name for p in net.iterdir() if p.name.startswith(f"mnb{self.tag}"))

    def _jobs_left(self) -> bool:
        proc = subprocess.run(["squeue", "-h"], env=self.env, capture_output=True, text=True)
        return proc.returncode == 0 and bool(proc.stdout.strip())

    def leftovers(self) -> list[int]:
        """This cluster's processes still running: job steps (slurmstepd) and job processes
        (SLURM_JOB_ID set) whose environment names this cluster's SLURM_CONF (a shell that
        only exported SLURM_CONF is not one of them), and the nodes' namespace holders."""
        marker = f"SLURM_CONF={self.conf}".encode()
        found = [n.holder.pid for n in self.nodes if n.holder and n.holder.poll() is None]
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


def _end(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL after 20 s: one process we started, by its pid."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("dir", type=Path, help="the folder for everything the cluster writes")
    p.add_argument("--nodes", type=int, default=1, choices=(1, 2), help="[%(default)s]")
    args = p.parse_args(argv)
    reason = ensure_installed(allow_install=False, nodes=args.nodes)
    if reason:
        print(f"error: {reason}", file=sys.stderr)
        return 1
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):  # handlers, not a blocked mask: the daemons
        signal.signal(sig, lambda *_: stopping.set())  # would inherit the mask, deaf to SIGTERM
    cluster = LocalCluster(args.dir, nodes=args.nodes)
    try:
        cluster.start()
        print(
            f"export SLURM_CONF={cluster.conf}  # nodes {', '.join(cluster.node_names)}; "
            f"partitions {', '.join(PARTITIONS)}; Ctrl-C stops"
        )
        while not stopping.wait(0.5):
            pass
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
