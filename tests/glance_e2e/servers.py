"""The servers a Glance deployment under load runs on: PostgreSQL started
from the distribution's binaries in a temporary directory, and the Glance
API under gunicorn (gthread workers, examples/gunicorn.conf.py) or uWSGI
(examples/uwsgi.ini), several processes of several threads.

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
        # PostgreSQL is not ours to check: a sanitizer runtime preloaded into
        # this process (tools/sanitize) would slow initdb past its timeout.
        env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
        done = subprocess.run(
            [*self.prefix, *cmd], capture_output=True, text=True, timeout=timeout, env=env
        )
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


class _ServedGlance(harness.GlanceServer):
    """glance-api under a pre-forking WSGI server started from its file in
    examples/: `workers` processes of `threads` threads each, the children of
    one master. A subclass gives the command line (argv) for an address."""

    #: the server's name in logs, errors and the benchmark's header
    name = ""

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

    def argv(self, address: str) -> list[str]:
        raise NotImplementedError

    def describe(self) -> str:
        """What serves Glance, for a report's header."""
        raise NotImplementedError

    def start(self, timeout: float = 90.0) -> _ServedGlance:
        for _attempt in range(3):
            self.port = harness.free_port()
            log = open(self.log_path, "ab")
            self.proc = subprocess.Popen(
                self.argv(f"127.0.0.1:{self.port}"),
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
            f"Glance ({self.name}) did not come up on 127.0.0.1:{self.port}; log:\n{self.log()}"
        )

    def worker_pids(self) -> list[int]:
        """The workers: the master's children."""
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
        self.proc.send_signal(signal.SIGTERM)  # the master stops its workers
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=15)


class GunicornGlance(_ServedGlance):
    """glance-api under gunicorn as examples/gunicorn.conf.py configures it,
    with `workers` gthread processes of `threads` threads."""

    name = "gunicorn gthread"

    def argv(self, address: str) -> list[str]:
        return [
            self.python,
            "-m",
            "gunicorn",
            "--config",
            str(harness.EXAMPLES / "gunicorn.conf.py"),  # what examples/ recommends
            "--bind",
            address,
            "--workers",
            str(self.workers),
            "--threads",
            str(self.threads),
            "glance.wsgi.api:application",
        ]

    def describe(self) -> str:
        return f"gunicorn {self.workers} gthread workers x {self.threads} threads"


class UwsgiGlance(_ServedGlance):
    """glance-api under uWSGI as examples/uwsgi.ini configures it, with
    `processes` workers of `threads` threads. The uwsgi program is the one
    beside `python` (pip install uwsgi puts it there), run in that Python's
    environment (--virtualenv: its sys.prefix)."""

    name = "uwsgi"
    INI = harness.EXAMPLES / "uwsgi.ini"

    @staticmethod
    def program(python: str) -> str:
        return os.path.join(os.path.dirname(python), "uwsgi")

    @classmethod
    def missing(cls, python: str) -> Optional[str]:
        """None if uwsgi is installed for `python`, else why not."""
        uwsgi = cls.program(python)
        if not os.access(uwsgi, os.X_OK):
            return f"{uwsgi} is not there (pip install uwsgi, for {python})"
        return None

    def argv(self, address: str) -> list[str]:
        prefix = subprocess.run(
            [self.python, "-c", "import sys; print(sys.prefix)"],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout.strip()
        return [
            self.program(self.python),
            "--ini",
            str(self.INI),  # what examples/ recommends
            "--http-socket",
            address,
            "--processes",
            str(self.workers),
            "--threads",
            str(self.threads),
            # the environment of `python`, and sys.executable a Python (Glance
            # starts `python_interpreter`, default sys.executable, for imports)
            "--virtualenv",
            prefix,
            "--py-sys-executable",
            self.python,
        ]

    def describe(self) -> str:
        return f"uwsgi {self.workers} processes x {self.threads} threads"


#: the servers `python -m benchmarks glance --server` chooses from
SERVERS: dict[str, type[_ServedGlance]] = {"gunicorn": GunicornGlance, "uwsgi": UwsgiGlance}
