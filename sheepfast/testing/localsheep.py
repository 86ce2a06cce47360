"""A throwaway Sheepdog cluster from the ``sheep`` and ``dog`` on PATH.

Used by the test suite when ``SHEEPFAST_TEST_SHEEP=1``: it starts N sheep
with the ``local`` cluster driver on free loopback ports, each with its own
zone and store directory under a temporary directory, formats the cluster
and tears everything down afterwards. Sheepdog itself is not part of this
project; this only runs binaries that are already installed.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

__all__ = ["LocalSheep", "LocalSheepError", "available"]


class LocalSheepError(RuntimeError):
    pass


class SheepExited(LocalSheepError):
    """A sheep process died while the cluster was starting."""


def available() -> bool:
    """True when both sheep and dog can be run."""
    return shutil.which("sheep") is not None and shutil.which("dog") is not None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalSheep:
    """``nodes`` sheep on 127.0.0.1, formatted with ``copies`` copies."""

    host = "127.0.0.1"

    def __init__(self, nodes: int = 3, copies: int = 2, *, start_timeout: float = 30.0):
        if not available():
            raise LocalSheepError("sheep and dog must be on PATH")
        self.nodes = nodes
        self.copies = copies
        self.start_timeout = start_timeout
        self.ports: list[int] = []
        self.base_dir = ""
        self._procs: list[subprocess.Popen | None] = []

    @property
    def address(self) -> str:
        return f"{self.host}:{self.ports[0]}"

    @property
    def addresses(self) -> list[str]:
        return [f"{self.host}:{p}" for p in self.ports]

    def dog(self, *args: str, node: int = 0, input: bytes | None = None,
            timeout: float = 60.0) -> subprocess.CompletedProcess:
        """Runs dog against one node; raises with dog's stderr on failure."""
        cmd = ["dog", *args, "-a", self.host, "-p", str(self.ports[node])]
        done = subprocess.run(cmd, input=input, capture_output=True, timeout=timeout)
        if done.returncode != 0:
            raise LocalSheepError(f"{' '.join(cmd)}: {done.stderr.decode(errors='replace').strip()}")
        return done

    def _spawn(self, i: int) -> None:
        node_dir = os.path.join(self.base_dir, str(i))
        os.makedirs(node_dir, exist_ok=True)
        cmd = [
            "sheep", "-f",            # foreground: we are its parent and reap it
            "-n",                     # no O_SYNC: a throwaway cluster
            "-b", self.host, "-y", self.host,
            "-p", str(self.ports[i]),
            "-z", str(i),             # one zone per node, or copies can't spread
            "-c", "local:" + os.path.join(self.base_dir, "shm"),  # own driver file
            node_dir,
        ]
        log = open(os.path.join(node_dir, "stdout.log"), "ab")
        with log:
            self._procs[i] = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)

    def _wait(self, what: str, ready) -> None:
        deadline = time.monotonic() + self.start_timeout
        while True:
            try:
                if ready():
                    return
            except SheepExited:
                raise
            except (LocalSheepError, subprocess.TimeoutExpired):
                pass  # dog could not answer yet
            if time.monotonic() > deadline:
                raise LocalSheepError(f"timed out waiting for {what} (logs in {self.base_dir})")
            time.sleep(0.1)

    def _listening(self, i: int) -> bool:
        proc = self._procs[i]
        if proc is not None and proc.poll() is not None:
            raise SheepExited(f"sheep {i} exited with status {proc.returncode}")
        try:
            socket.create_connection((self.host, self.ports[i]), timeout=1).close()
        except OSError:
            return False
        return True

    def _nodes_listed(self) -> int:
        out = self.dog("node", "list", "-r").stdout.decode()
        return sum(1 for line in out.splitlines() if line.strip())

    def start(self) -> "LocalSheep":
        self.base_dir = tempfile.mkdtemp(prefix="sheepfast-localsheep-")
        self.ports = [_free_port() for _ in range(self.nodes)]
        self._procs = [None] * self.nodes
        try:
            for i in range(self.nodes):
                # One at a time: sheep purges a fixed lock directory at start,
                # and two starting at once race on it and one gives up.
                self._spawn(i)
                self._wait(f"node {i} to listen", lambda: self._listening(i))
            self._wait("all nodes to join", lambda: self._nodes_listed() == self.nodes)
            self.dog("cluster", "format", "-c", str(self.copies))
            self._wait("the cluster to run", lambda: b"running" in
                       self.dog("cluster", "info").stdout.splitlines()[0])
        except LocalSheepError as exc:
            logs = self._log_tails()
            self.stop()
            raise LocalSheepError(f"{exc}\n{logs}") from None
        except BaseException:
            self.stop()
            raise
        return self

    def _log_tails(self, lines: int = 8) -> str:
        """The end of every node's logs, for an error message."""
        out = []
        for i in range(self.nodes):
            for log in ("sheep.log", "stdout.log"):
                path = os.path.join(self.base_dir, str(i), log)
                try:
                    with open(path, errors="replace") as f:
                        tail = f.readlines()[-lines:]
                except OSError:
                    continue
                out.append(f"--- node {i} {log}\n" + "".join(tail))
        return "\n".join(out)

    def stop_node(self, i: int, *, hard: bool = True) -> None:
        """Stops one sheep (SIGKILL by default), for fail-over tests."""
        proc = self._procs[i]
        if proc is None:
            return
        proc.send_signal(signal.SIGKILL if hard else signal.SIGTERM)
        proc.wait(timeout=30)
        self._procs[i] = None

    def start_node(self, i: int) -> None:
        """Restarts a stopped sheep; it rejoins with its data."""
        if self._procs[i] is None:
            self._spawn(i)

    def stop(self) -> None:
        if any(p is not None for p in self._procs):
            try:
                self.dog("cluster", "shutdown", timeout=15)
            except (LocalSheepError, subprocess.TimeoutExpired, OSError):
                pass
        for proc in self._procs:
            if proc is None:
                continue
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        self._procs = [None] * len(self._procs)
        if self.base_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)
            self.base_dir = ""

    def __enter__(self) -> "LocalSheep":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
