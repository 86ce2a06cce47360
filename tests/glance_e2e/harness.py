"""Run the real Glance API in a subprocess, configured from examples/.

The server is ``glance.wsgi.api:application`` (Glance's own WSGI entry point)
served by cheroot on 127.0.0.1, in a child process so that Glance's global
oslo.config state never touches the test process. Glance reads
glance-api.conf and glance-api-paste.ini from the directory named by
OS_GLANCE_CONFIG_DIR; this module writes that directory from the operator
examples in examples/, changing only addresses and paths.

Which Python runs Glance: SHEEPFAST_GLANCE_PYTHON, else the test's own
interpreter. It needs glance, cheroot and sheepfast installed
(tests/glance_e2e/requirements.txt).
"""

from __future__ import annotations

import configparser
import http.client
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterable, Optional

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
REQUIREMENTS = Path(__file__).resolve().parent / "requirements.txt"

PYTHON_ENV = "SHEEPFAST_GLANCE_PYTHON"
REQUIRE_ENV = "SHEEPFAST_REQUIRE_GLANCE"

# What keystonemiddleware would have put on the request. The example paste
# pipeline without Keystone ("flavor =") takes the caller's identity from
# these headers (glance.api.middleware.context:ContextMiddleware).
PROJECT_ID = "5e2f1c0ab7d94c0c9d1c6f1a2b3c4d5e"
AUTH_HEADERS = {
    "X-Identity-Status": "Confirmed",
    "X-Project-Id": PROJECT_ID,
    "X-User-Id": "0b8e4f7c1d2a4e6f8a9b0c1d2e3f4a5b",
    "X-Roles": "member,reader",
}


def glance_python() -> str:
    return os.environ.get(PYTHON_ENV) or sys.executable


def probe(python: str, code: str) -> Optional[str]:
    """None if `code` runs under `python`, else the reason it does not."""
    try:
        done = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=120)
    except OSError as exc:
        return f"{python}: {exc}"
    if done.returncode == 0:
        return None
    lines = (done.stderr or done.stdout).strip().splitlines()
    return lines[-1] if lines else f"exit status {done.returncode}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _read_ini(path: Path) -> configparser.RawConfigParser:
    cp = configparser.RawConfigParser(interpolation=None, default_section="__no_default__")
    cp.optionxform = str  # keep option names as written
    with open(path) as f:
        cp.read_file(f)
    return cp


def write_config(
    conf_dir: Path,
    state_dir: Path,
    backend: str,
    sheep_address: Optional[str] = None,
    extra: Optional[dict] = None,
) -> Path:
    """Write glance-api.conf and glance-api-paste.ini into `conf_dir`.

    backend "sd": examples/glance-api.conf as it is, pointed at
    `sheep_address` ("host:port"); backend "file": the same with Glance's
    file store in place of Sheepdog (a control for the harness itself).
    `extra` is {section: {option: value}} applied last.
    """
    conf_dir.mkdir(parents=True, exist_ok=True)
    state_dir.mkdir(parents=True, exist_ok=True)
    conf = _read_ini(EXAMPLES / "glance-api.conf")
    paste = _read_ini(EXAMPLES / "glance-api-paste.ini")

    conf["database"]["connection"] = f"sqlite:///{state_dir / 'glance.sqlite'}"
    conf["paste_deploy"]["config_file"] = str(conf_dir / "glance-api-paste.ini")
    conf["os_glance_staging_store"]["filesystem_store_datadir"] = str(state_dir / "staging") + "/"
    conf["os_glance_tasks_store"]["filesystem_store_datadir"] = str(state_dir / "tasks") + "/"
    if not conf.has_section("oslo_concurrency"):
        conf.add_section("oslo_concurrency")
    conf["oslo_concurrency"]["lock_path"] = str(state_dir / "locks")

    if backend == "sd":
        assert sheep_address is not None
        host, _, port = sheep_address.rpartition(":")
        assert conf["DEFAULT"]["enabled_backends"] == "sd:sheepdog"
        conf["sd"]["sheepdog_store_address"] = host.strip("[]")
        conf["sd"]["sheepdog_store_port"] = port
    elif backend == "file":
        conf["DEFAULT"]["enabled_backends"] = "f:file"
        conf["glance_store"]["default_backend"] = "f"
        conf.remove_section("sd")
        conf.add_section("f")
        conf["f"]["filesystem_store_datadir"] = str(state_dir / "images") + "/"
    else:
        raise ValueError(backend)

    for section, options in (extra or {}).items():
        if section != "DEFAULT" and not conf.has_section(section):
            conf.add_section(section)
        for key, value in options.items():
            conf[section][key] = str(value)

    # Keep the health check independent of whatever the host has in /etc.
    paste["app:healthcheck"]["disable_by_file_path"] = str(state_dir / "healthcheck_disable")

    with open(conf_dir / "glance-api.conf", "w") as f:
        conf.write(f)
    with open(conf_dir / "glance-api-paste.ini", "w") as f:
        paste.write(f)
    return conf_dir / "glance-api.conf"


class GlanceServer:
    """glance-api under cheroot in a child process on 127.0.0.1."""

    def __init__(self, conf_dir: Path, log_path: Path, python: Optional[str] = None):
        self.conf_dir = conf_dir
        self.log_path = log_path
        self.python = python or glance_python()
        self.port = 0
        self.proc: Optional[subprocess.Popen] = None
        self.env = dict(os.environ, OS_GLANCE_CONFIG_DIR=str(conf_dir), PYTHONUNBUFFERED="1")

    # -- logs ------------------------------------------------------------
    def log(self, tail: int = 12000) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no server log)"
        return text[-tail:]

    # -- life cycle ------------------------------------------------------
    def db_sync(self) -> None:
        done = subprocess.run(
            [
                self.python,
                "-m",
                "glance.cmd.manage",
                "--config-file",
                str(self.conf_dir / "glance-api.conf"),
                "db_sync",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env=self.env,
        )
        assert done.returncode == 0, (
            f"glance-manage db_sync failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
        )

    def start(self, timeout: float = 60.0) -> GlanceServer:
        for _attempt in range(3):  # a free port can be taken before we bind it
            self.port = free_port()
            log = open(self.log_path, "ab")
            self.proc = subprocess.Popen(
                [
                    self.python,
                    "-m",
                    "cheroot",
                    "--bind",
                    f"127.0.0.1:{self.port}",
                    "--threads",
                    "4",
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
            if self._wait_ready(timeout):
                return self
            if "Address already in use" not in self.log():
                break
        self.stop()
        raise AssertionError(
            f"Glance did not come up on 127.0.0.1:{self.port} within {timeout:.0f} s; "
            f"server log:\n{self.log()}"
        )

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                status, _h, body = self.request("GET", "/healthcheck", auth=False, timeout=5)
                if status == 200:
                    return True
            except OSError:
                pass
            time.sleep(0.2)
        return False

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=15)

    def __enter__(self) -> GlanceServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- HTTP ------------------------------------------------------------
    def connection(self, timeout: float = 120.0) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(
        self,
        method: str,
        path: str,
        body=None,
        headers=None,
        auth: bool = True,
        timeout: float = 120.0,
    ):
        """One request on a fresh connection: (status, headers, body bytes)."""
        hdrs = dict(AUTH_HEADERS) if auth else {}
        hdrs.update(headers or {})
        conn = self.connection(timeout)
        try:
            conn.request(method, path, body=body, headers=hdrs)
            resp = conn.getresponse()
            return resp.status, resp.headers, resp.read()
        finally:
            conn.close()

    def json(self, method: str, path: str, payload=None, expect=(200,), headers=None):
        hdrs = dict(headers or {})
        body = None
        if payload is not None:
            body = json.dumps(payload).encode()
            hdrs.setdefault("Content-Type", "application/json")
        status, _h, raw = self.request(method, path, body=body, headers=hdrs)
        assert status in expect, (
            f"{method} {path}: HTTP {status}: {raw[:2000]!r}\nserver log:\n{self.log()}"
        )
        return json.loads(raw) if raw else None

    def create_image(self, name: str, **fields) -> dict:
        payload = {"name": name, "disk_format": "raw", "container_format": "bare"}
        payload.update(fields)
        return self.json("POST", "/v2/images", payload, expect=(201,))

    def upload_chunked(self, image_id: str, pieces: Iterable, headers=None):
        """PUT the image data with Transfer-Encoding: chunked and no
        Content-Length, as a client streaming data of unknown size does.
        Returns (status, body)."""
        hdrs = dict(AUTH_HEADERS)
        hdrs["Content-Type"] = "application/octet-stream"
        hdrs["Transfer-Encoding"] = "chunked"
        hdrs.update(headers or {})
        conn = self.connection()
        try:
            conn.request(
                "PUT",
                f"/v2/images/{image_id}/file",
                body=iter(pieces),
                headers=hdrs,
                encode_chunked=True,
            )
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def upload_aborted(self, image_id: str, pieces: Iterable) -> None:
        """Start a chunked upload, send `pieces`, then drop the connection
        without the final zero-length chunk (a client that died)."""
        conn = self.connection()
        try:
            conn.putrequest("PUT", f"/v2/images/{image_id}/file")
            hdrs = dict(AUTH_HEADERS)
            hdrs["Content-Type"] = "application/octet-stream"
            hdrs["Transfer-Encoding"] = "chunked"
            for k, v in hdrs.items():
                conn.putheader(k, v)
            conn.endheaders()
            for piece in pieces:
                conn.send(b"%x\r\n" % len(piece))
                conn.send(piece)
                conn.send(b"\r\n")
            # Reset rather than FIN, like a client killed mid-transfer.
            conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        finally:
            conn.close()

    def wait_status(self, image_id: str, wanted: str, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            image = self.json("GET", f"/v2/images/{image_id}")
            if image["status"] == wanted or time.monotonic() > deadline:
                return image
            time.sleep(0.2)
