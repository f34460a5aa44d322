"""Flower's Deployment Engine on loopback: one SuperLink, N SuperNodes, ``flwr run``.

What a user does by hand on one machine (README, "Flower deployment"), as one call that
always tears down what it started:

1. ``flower-superlink --insecure --host 127.0.0.1 --port P`` (its HTTP API carries the Fleet,
   Control and ServerApp runtime traffic; ``--disable-runtime-dependency-installation``: the
   app runs in this environment, no ``uv sync``);
2. N × ``flower-supernode --insecure --superlink 127.0.0.1:P --port P_i --node-config
   "partition-id=i num-partitions=N"`` (node i is UE k = i; ``P_i`` is its own runtime API);
3. a federation entry ``[superlink.<name>]`` (address, ``insecure = true``) in
   ``$FLWR_HOME/config.toml``, with ``FLWR_HOME`` a fresh folder so nothing touches ``~/.flwr``;
4. ``flwr run <app> <name> --run-config <file> --stream``, the run config naming the fedopt
   config, its overrides (``K`` = N) and the folder the ServerApp writes its results to.

Ports are free ones picked by the OS. Every process starts in its own session and is ended
by its process group (SuperNodes start their SuperExec and ClientApp processes as children),
then by the ids of any descendants left.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import FedoptError

__all__ = ["DeploymentError", "LocalFederation", "free_ports", "run_app", "write_run_config"]

FEDERATION = "fedopt-local"
# SuperExec's task poll (Flower's default 1 s): a SuperNode's ClientApp starts this much sooner
POLL_ENV = {"FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "0.1", "FLWR_DISABLE_UPDATE_CHECK": "1"}


# what `flwr run --stream` prints when the ServerApp fails (it still exits with code 0)
FAILED = ("ServerApp raised an exception", "An unhandled exception occurred in the ServerApp")


class DeploymentError(FedoptError):
    """The loopback federation did not start or the run did not finish (logs named)."""


def free_ports(n: int) -> list[int]:
    """n distinct TCP ports on 127.0.0.1 that were free a moment ago (bound together, then
    released, so the OS never hands out one twice)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _bin(name: str) -> str:
    """A Flower console script: next to this interpreter first (a venv), else on PATH."""
    here = Path(sys.executable).parent / name
    if here.exists():
        return str(here)
    found = shutil.which(name)
    if found is None:
        raise DeploymentError(f"'{name}' not found; install the extra: pip install 'fedopt[flower]'")
    return found


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as res:  # noqa: S310 (loopback)
            return 200 <= res.status < 300
    except OSError:
        return False


def _descendants(pid: int) -> list[int]:
    """Ids of every live descendant of ``pid`` (Linux /proc; empty elsewhere)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _running(pid: int) -> bool:
    """Alive and not a zombie waiting for its reaper (Linux /proc)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _tail(path: Path, lines: int = 15) -> str:
    """The last non-empty lines of a log, joined on one line (errors are one line)."""
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return " | ".join([ln.strip() for ln in text if ln.strip()][-lines:])


def write_run_config(path: Path, values: Mapping[str, Any]) -> Path:
    """A TOML file for ``flwr run --run-config`` (values: str, int, float, bool)."""
    import tomli_w  # a Flower dependency

    path.write_text(tomli_w.dumps(dict(values)), encoding="utf-8")
    return path


@dataclass
class LocalFederation:
    """A SuperLink and ``nodes`` SuperNodes on 127.0.0.1, as a context manager.

    ``home``: the ``FLWR_HOME`` (a temporary folder if None, removed at exit unless
    ``keep``); logs go to ``home/logs``. ``node_config(i)`` gives node i's extra
    ``--node-config`` entries (``partition-id`` and ``num-partitions`` are always set).
    ``startup_timeout`` bounds the wait for the SuperLink and for every node to register.
    """

    nodes: int
    home: Path | None = None
    keep: bool = False
    startup_timeout: float = 60.0
    isolation: str = "subprocess"
    env: dict[str, str] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen] = field(default_factory=dict, init=False)
    port: int = field(default=0, init=False)
    node_ports: list[int] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        if self.nodes < 1:
            raise DeploymentError(f"nodes: at least 1, got {self.nodes}")
        self._own_home = self.home is None
        self.home = Path(tempfile.mkdtemp(prefix="fedopt-flwr-")) if self.home is None else Path(self.home)
        self.logs = self.home / "logs"

    # --- processes --------------------------------------------------------------------------

    def environ(self) -> dict[str, str]:
        """The processes' environment: FLWR_HOME, the poll interval, and PATH led by the folder
        of Flower's scripts (SuperLink and SuperNodes start ``flower-superexec`` by name)."""
        scripts = str(Path(_bin("flwr")).parent)
        path = os.pathsep.join([scripts, os.environ.get("PATH", "")])
        return {**os.environ, **POLL_ENV, **self.env, "FLWR_HOME": str(self.home), "PATH": path}

    def _start(self, name: str, cmd: list[str]) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 (closed with the process)
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=self.environ(), start_new_session=True)
        log.close()  # the child holds its own descriptor
        self.procs[name] = proc
        return proc

    def _wait(self, what: str, ready, procs: list[str]) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while not ready():
            for name in procs:
                if self.procs[name].poll() is not None:
                    raise DeploymentError(f"{name} exited with code {self.procs[name].returncode} "
                                          f"while starting:\n{_tail(self.logs / f'{name}.log')}")
            if time.monotonic() > deadline:
                raise DeploymentError(f"{what} not ready after {self.startup_timeout:g} s "
                                      f"(logs in {self.logs})")
            time.sleep(0.1)

    def _registered(self, i: int) -> bool:
        try:
            return "SuperNode ID:" in (self.logs / f"supernode-{i}.log").read_text(errors="replace")
        except OSError:
            return False

    def start(self) -> LocalFederation:
        self.logs.mkdir(parents=True, exist_ok=True)
        self.port, *self.node_ports = free_ports(self.nodes + 1)
        address = f"127.0.0.1:{self.port}"
        self._start("superlink", [_bin("flower-superlink"), "--insecure",
                                  "--disable-runtime-dependency-installation",
                                  "--host", "127.0.0.1", "--port", str(self.port)])
        self._wait("the SuperLink", lambda: _http_ok(f"http://{address}/health"), ["superlink"])
        for i, port in enumerate(self.node_ports):
            cfg = f"partition-id={i} num-partitions={self.nodes}"
            self._start(f"supernode-{i}", [
                _bin("flower-supernode"), "--insecure", "--superlink", address,
                "--host", "127.0.0.1", "--port", str(port), "--isolation", self.isolation,
                "--node-config", cfg])
        names = [f"supernode-{i}" for i in range(self.nodes)]
        self._wait(f"{self.nodes} SuperNodes", lambda: all(self._registered(i) for i in range(self.nodes)),
                   ["superlink", *names])
        self.write_federation()
        return self

    def write_federation(self) -> Path:
        """``$FLWR_HOME/config.toml`` with this federation as the default connection."""
        path = self.home / "config.toml"
        path.write_text(f'[superlink]\ndefault = "{FEDERATION}"\n\n[superlink.{FEDERATION}]\n'
                        f'address = "127.0.0.1:{self.port}"\ninsecure = true\n', encoding="utf-8")
        return path

    def stop_node(self, i: int, sig: int = signal.SIGKILL) -> None:
        """End SuperNode i and its ClientApp processes (a node that leaves)."""
        self._end(self.procs[f"supernode-{i}"], sig)

    def restart_node(self, i: int) -> None:
        """Start SuperNode i again (same partition id, a new node id)."""
        log = self.logs / f"supernode-{i}.log"
        log.rename(log.with_suffix(f".{time.time_ns()}.log"))
        self._start(f"supernode-{i}", [
            _bin("flower-supernode"), "--insecure", "--superlink", f"127.0.0.1:{self.port}",
            "--host", "127.0.0.1", "--port", str(free_ports(1)[0]), "--isolation", self.isolation,
            "--node-config", f"partition-id={i} num-partitions={self.nodes}"])
        self._wait(f"SuperNode {i}", lambda: self._registered(i), [f"supernode-{i}"])

    @staticmethod
    def _end(proc: subprocess.Popen, sig: int = signal.SIGTERM, grace: float = 5.0) -> None:
        if proc.poll() is not None:
            return
        family = _descendants(proc.pid)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)  # its own session: the group is the process and its children
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=grace)
        for pid in family:  # detached grandchildren (the SuperLink's SuperExec, ServerApp)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + grace
        while any(map(_running, family)) and time.monotonic() < deadline:
            time.sleep(0.05)

    def stop(self) -> None:
        for name in reversed(list(self.procs)):  # nodes first, then the SuperLink
            self._end(self.procs[name])
        if self._own_home and not self.keep:
            shutil.rmtree(self.home, ignore_errors=True)

    def __enter__(self) -> LocalFederation:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- a run -------------------------------------------------------------------------------

    def run(self, app: str | Path, run_config: Mapping[str, Any], *, timeout: float = 900.0,
            stream_to: Path | None = None) -> subprocess.CompletedProcess:
        """``flwr run app <federation> --run-config <toml> --stream``; its output goes to
        ``stream_to`` (default ``logs/flwr-run.log``). Raises :class:`DeploymentError` if it
        fails or exceeds ``timeout`` seconds."""
        return run_app(app, run_config, home=self.home, timeout=timeout,
                       log=stream_to or self.logs / "flwr-run.log", env=self.environ())


def run_app(app: str | Path, run_config: Mapping[str, Any], *, home: Path, timeout: float,
            log: Path, env: Mapping[str, str]) -> subprocess.CompletedProcess:
    """``flwr run`` against the default federation of ``home/config.toml``."""
    app = Path(app).resolve()
    if not (app / "pyproject.toml").is_file():
        raise DeploymentError(f"app: '{app}' is not a Flower App (no pyproject.toml)")
    cfg = write_run_config(Path(home) / "run-config.toml", run_config)
    cmd = [_bin("flwr"), "run", str(app), FEDERATION, "--run-config", str(cfg), "--stream"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=dict(env), cwd=str(app), start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            LocalFederation._end(proc, signal.SIGKILL)
            raise DeploymentError(f"flwr run did not finish in {timeout:g} s (log: {log})") from None
        except BaseException:  # Ctrl-C: never leave it running
            LocalFederation._end(proc, signal.SIGKILL)
            raise
    text = log.read_text(errors="replace")
    if rc != 0 or any(m in text for m in FAILED):  # flwr run exits 0 when the ServerApp fails
        raise DeploymentError(f"the run failed (flwr run exit code {rc}; log: {log}): "
                              f"{_tail(log, 3)}")
    return subprocess.CompletedProcess(cmd, rc)
