"""The servers a Glance deployment under load runs on: PostgreSQL started
from the distribution's binaries in a temporary directory, and the Glance
API under gunicorn with several gthread workers.

sqlite, as tests/test_glance_e2e.py uses it, fails concurrent requests with
"database is locked"; a load test needs a database server.

PostgreSQL refuses to run as root ("cannot be run as root"), so when this
process is root, initdb and the server run as the unprivileged user named by
SHEEPFAST_PG_USER (default "nobody") through runuser, in a directory owned
by that user.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Optional

from glance_e2e import harness

PG_USER_ENV = "SHEEPFAST_PG_USER"


def pg_bindir() -> Optional[str]:
    """The directory holding initdb, pg_ctl and createdb, or None."""
    # Debian keeps them out of PATH, one directory per major version.
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    found = shutil.which("initdb")
    if found:
        dirs.append(os.path.dirname(os.path.realpath(found)))
    for d in dirs:
        if all(os.access(os.path.join(d, t), os.X_OK) for t in ("initdb", "pg_ctl", "createdb")):
            return d
    return None


class PostgreSQL:
    """A throwaway PostgreSQL server on 127.0.0.1 with database "glance"."""

    def __init__(self, base: Path, bindir: Optional[str] = None):
        self.bindir = bindir or pg_bindir()
        if self.bindir is None:
            raise FileNotFoundError(
                "PostgreSQL's initdb, pg_ctl and createdb were not found in one directory "
                "(/usr/lib/postgresql/*/bin, PATH)"
            )
        self.base = base
        self.data = base / "pgdata"
        self.log_path = base / "postgresql.log"
        self.port = 0
        self.prefix: list[str] = []
        self.started = False

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://glance@127.0.0.1:{self.port}/glance"

    def _run(self, *cmd: str, timeout: float = 120) -> None:
        done = subprocess.run([*self.prefix, *cmd], capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(
                f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
                f"\n{self.log()}"
            )

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return "(no PostgreSQL log)"

    def start(self) -> PostgreSQL:
        self.base.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            user = os.environ.get(PG_USER_ENV, "nobody")
            pw = pwd.getpwnam(user)
            self.prefix = ["runuser", "-u", user, "--"]
            # The user must reach the directory and own what it writes in.
            p = self.base
            while p != p.parent:
                if p.exists() and not os.stat(p).st_mode & 0o001:
                    os.chmod(p, os.stat(p).st_mode | 0o711)
                p = p.parent
            os.chown(self.base, pw.pw_uid, pw.pw_gid)
        b = self.bindir
        self._run(f"{b}/initdb", "-D", str(self.data), "-A", "trust", "-U", "glance", "-E", "UTF8")
        for _attempt in range(3):  # a free port can be taken before we bind it
            self.port = harness.free_port()
            try:
                self._run(
                    f"{b}/pg_ctl",
                    "-D",
                    str(self.data),
                    "-l",
                    str(self.log_path),
                    "-w",
                    "-o",
                    f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.base} "
                    "-c fsync=off -c max_connections=200",
                    "start",
                )
                break
            except RuntimeError:
                if "already in use" not in self.log():
                    raise
        self.started = True
        try:
            self._run(
                f"{b}/createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "glance", "glance"
            )
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.started:
            self.started = False
            self._run(f"{self.bindir}/pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def __enter__(self) -> PostgreSQL:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class GunicornGlance(harness.GlanceServer):
    """glance-api under gunicorn as examples/gunicorn.conf.py configures it,
    with `workers` processes of `threads` threads."""

    def __init__(
        self,
        conf_dir: Path,
        log_path: Path,
        python: Optional[str] = None,
        workers: int = 2,
        threads: int = 4,
        pythonpath: Optional[list[str]] = None,
    ):
        super().__init__(conf_dir, log_path, python)
        self.workers = workers
        self.threads = threads
        if pythonpath:
            old = self.env.get("PYTHONPATH")
            self.env["PYTHONPATH"] = os.pathsep.join([*pythonpath, *([old] if old else [])])

    def start(self, timeout: float = 90.0) -> GunicornGlance:
        for _attempt in range(3):
            self.port = harness.free_port()
            log = open(self.log_path, "ab")
            self.proc = subprocess.Popen(
                [
                    self.python,
                    "-m",
                    "gunicorn",
                    "--config",
                    str(harness.EXAMPLES / "gunicorn.conf.py"),  # what examples/ recommends
                    "--bind",
                    f"127.0.0.1:{self.port}",
                    "--workers",
                    str(self.workers),
                    "--threads",
                    str(self.threads),
                    "glance.wsgi.api:application",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=str(self.log_path.parent),
                start_new_session=True,
            )
            log.close()
            if self._wait_ready(timeout) and self._wait_workers(timeout):
                return self
            if "Address already in use" not in self.log():
                break
        self.stop()
        raise AssertionError(
            f"Glance (gunicorn) did not come up on 127.0.0.1:{self.port}; log:\n{self.log()}"
        )

    def worker_pids(self) -> list[int]:
        """The gunicorn workers: the master's children."""
        assert self.proc is not None
        try:
            with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as f:
                return [int(p) for p in f.read().split()]
        except OSError:
            return []

    def _wait_workers(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.worker_pids()) >= self.workers:
                return True
            time.sleep(0.1)
        return False

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)  # gunicorn stops its workers
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=15)
