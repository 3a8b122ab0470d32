"""Hosts as Linux network namespaces, for the multi-host rehearsal (tests/system/test_rehearsal.py).

One server host holds a bridge with the address ``<subnet>.1``; worker host i is joined to it by a
veth pair and has ``<subnet>.1<i>``. The hosts share the file system but not the network: a
process in a worker reaches the servers only over its veth, at their bridge address. Every
process starts in its own session through ``ip netns exec``; ``close()`` kills whatever still
runs in any namespace (``ip netns pids``) and deletes the namespaces, so use it in a ``finally``.
Needs root (``ip netns add``).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

SUBNET = "10.213.0"


def netns_available() -> str | None:
    """None when network namespaces can be made here, else why not (a skip reason)."""
    if os.geteuid() != 0:
        return "needs root for ip netns"
    if shutil.which("ip") is None:
        return "needs iproute2 (ip)"
    probe = f"fcdd-probe-{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], check=False)
    return None


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


class Hosts:
    """``server`` and ``worker-1`` .. ``worker-N`` as namespaces named ``<prefix>-<host>``."""

    def __init__(self, prefix: str, workers: int):
        self.prefix = prefix
        self.names = ["server", *(f"worker-{i}" for i in range(1, workers + 1))]
        self.made: list[str] = []
        self.procs: list[subprocess.Popen] = []

    def ns(self, host: str) -> str:
        return f"{self.prefix}-{host}"

    def addr(self, host: str) -> str:
        return f"{SUBNET}.1" if host == "server" else f"{SUBNET}.1{host.rsplit('-', 1)[1]}"

    def up(self) -> Hosts:
        for host in self.names:
            _ip("netns", "add", self.ns(host))
            self.made.append(host)
            _ip("-n", self.ns(host), "link", "set", "lo", "up")
        server = self.ns("server")
        _ip("-n", server, "link", "add", "br0", "type", "bridge")
        _ip("-n", server, "addr", "add", f"{self.addr('server')}/24", "dev", "br0")
        _ip("-n", server, "link", "set", "br0", "up")
        for i, host in enumerate(self.names[1:], start=1):
            # Created straight inside the namespaces: no name in the root namespace can clash.
            _ip("link", "add", f"v{i}", "netns", server, "type", "veth", "peer", "name", "eth0",
                "netns", self.ns(host))  # fmt: skip
            _ip("-n", server, "link", "set", f"v{i}", "master", "br0", "up")
            _ip("-n", self.ns(host), "addr", "add", f"{self.addr(host)}/24", "dev", "eth0")
            _ip("-n", self.ns(host), "link", "set", "eth0", "up")
        return self

    def start(
        self, host: str, args: list[str], log: Path, env: dict, cwd: Path, user: str | None = None
    ) -> subprocess.Popen:
        """A background process in ``host``, its own session, output to ``log``."""
        prefix = ["ip", "netns", "exec", self.ns(host)] + (["runuser", "-u", user, "--"] if user else [])
        proc = subprocess.Popen(
            [*prefix, *args], cwd=cwd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        self.procs.append(proc)
        return proc

    def run(self, host: str, args: list[str], timeout: float = 300, **kwargs) -> str:
        """A command in ``host``, waited for; its stdout. Fails with its output on a non-zero exit."""
        done = subprocess.run(
            ["ip", "netns", "exec", self.ns(host), *args],
            capture_output=True, text=True, timeout=timeout, check=False, **kwargs,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(
                f"{host}: {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
            )
        return done.stdout

    def pids(self, host: str) -> list[int]:
        done = subprocess.run(["ip", "netns", "pids", self.ns(host)], capture_output=True, text=True)
        return [int(p) for p in done.stdout.split()]

    def kill_host(self, host: str) -> list[int]:
        """SIGKILL every process of ``host`` at once: the host is lost, nothing shuts down cleanly."""
        pids = self.pids(host)
        for pid in pids:
            _signal(pid, signal.SIGKILL)
        return pids

    def close(self) -> list[str]:
        """Stop every process (TERM, then KILL after 10 s), delete the namespaces; what is left over."""
        for host in reversed(self.made):
            for pid in self.pids(host):
                _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(self.pids(h) for h in self.made):
            time.sleep(0.25)
        for host in self.made:
            for pid in self.pids(host):
                _signal(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10  # killed processes still count until they are reaped
        while time.monotonic() < deadline and any(self.pids(h) for h in self.made):
            time.sleep(0.25)
        for proc in self.procs:  # the `ip netns exec` parents: reap them
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        left = [f"{h}: pids {self.pids(h)}" for h in self.made if self.pids(h)]
        for host in self.made:
            subprocess.run(["ip", "netns", "del", self.ns(host)], check=False, capture_output=True)
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        left += [line for line in listed.splitlines() if line.startswith(f"{self.prefix}-")]
        self.made = []
        return left


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def flow_run_pid(pids: list[int], flow_run_id: str) -> int | None:
    """The engine process among ``pids`` that executes this flow run: the worker starts it with
    PREFECT__FLOW_RUN_ID (its own children, e.g. a pull step's shell, inherit that, hence the
    ``prefect`` in the command line)."""
    wanted = f"PREFECT__FLOW_RUN_ID={flow_run_id}".encode()
    for pid in sorted(pids):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if wanted in environ and b"prefect" in cmdline:
            return pid
    return None
