"""Steps 4 and 5, the wheel server: `pip download` of the pinned runtime requirements on the
host (the wheelhouse), served over HTTP on the host address that containers reach."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import http.server
import ipaddress
import json
import socket
import struct
import threading
import urllib.request
from collections.abc import Callable
from pathlib import Path

from ci_steps.common import Settings, StepError, log, sh


def step_wheelhouse(s: Settings) -> Path:
    """Every pinned runtime wheel on the host: the builds then install with PIP_NO_INDEX=1."""
    wheels = s.cache / "wheelhouse"
    extra = ["jax[cuda13]"] if s.build_cuda else []  # Dockerfile.cuda's extra
    sh(
        [
            s.python,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
            s.root / "requirements.txt",
            "-c",
            s.root / "constraints.txt",
            *extra,
            "setuptools",
            "wheel",
            "-d",
            wheels,
        ],
        s.logs / "wheelhouse.log",
        1200,
        "pip download of the pinned requirements",
    )
    return wheels


def host_address(inspect_json: str, interface_ipv4: Callable[[str], str | None]) -> tuple[str, str]:
    """(address, source): the IPv4 address at which containers on Docker's default bridge reach
    this host. The bridge network's gateway from `docker network inspect bridge` (empty or
    missing with some daemon and client pairs), else the IPv4 address of the bridge's
    interface (docker0 unless the network names another)."""
    try:
        networks = json.loads(inspect_json) if inspect_json.strip() else []
    except json.JSONDecodeError:
        networks = []
    bridge = networks[0] if networks else {}
    for config in (bridge.get("IPAM") or {}).get("Config") or []:
        gateway = (config.get("Gateway") or "").split("/")[0]
        if gateway and ipaddress.ip_address(gateway).version == 4:
            return gateway, "the bridge network's gateway (docker network inspect bridge)"
    name = (bridge.get("Options") or {}).get("com.docker.network.bridge.name", "docker0")
    address = interface_ipv4(name)
    if address:
        return address, f"the {name} interface's address (the bridge network lists no gateway)"
    raise StepError(
        "no address for containers to reach this host: `docker network inspect bridge` lists "
        f"no IPv4 gateway, and the {name} interface has no IPv4 address",
        f"docker network inspect bridge; ip -4 addr show {name}",
    )


def interface_ipv4(name: str) -> str | None:
    """The interface's IPv4 address (the SIOCGIFADDR ioctl), None where it has none."""
    SIOCGIFADDR = 0x8915  # linux/sockios.h
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            ifreq = fcntl.ioctl(sock.fileno(), SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
        except OSError:  # no such interface, or no IPv4 address on it
            return None
    return socket.inet_ntoa(ifreq[20:24])  # struct ifreq: name[16], sockaddr_in (port, addr)


def step_serve(s: Settings, wheels: Path, stack: contextlib.ExitStack) -> str:
    """Serve wheels over HTTP on the host address; return the URL. A fixed port keeps the build
    args the same from run to run, so Docker's cache keeps the pip layers (~9 GB each)."""
    inspect = "" if s.host_from == "docker0" else sh(["docker", "network", "inspect", "bridge"])
    address, source = host_address(inspect, interface_ipv4)
    log(f"host address {address}: {source}")
    handler = functools.partial(_QuietHandler, directory=str(wheels), log_file=s.logs / "http.log")
    try:
        server = http.server.ThreadingHTTPServer((address, s.port), handler)
    except OSError:  # taken: any free port (the pip layers will not come from Docker's cache)
        server = http.server.ThreadingHTTPServer((address, 0), handler)
        log(f"port {s.port} is taken: serving on {server.server_address[1]}")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    stack.callback(server.server_close)
    stack.callback(server.shutdown)
    url = f"http://{address}:{server.server_address[1]}/"
    with urllib.request.urlopen(url, timeout=10):
        pass
    log(f"wheelhouse served at {url}")
    return url


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Requests go to the log file, not to the suite's output."""

    def __init__(self, *args, log_file: Path, **kwargs):
        self.log_file = log_file
        super().__init__(*args, **kwargs)

    def log_message(self, format: str, *args) -> None:
        with open(self.log_file, "a") as out:
            out.write(f"{self.address_string()} {format % args}\n")
