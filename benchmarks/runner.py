"""One case, one process: ``python -m benchmarks.runner SPEC.json``.

The parent (benchmarks.harness) writes the spec, starts this module in a
fresh interpreter and reads back the result file the spec names. Everything
outside the ``Meter`` block (imports, loading the image into its buffer,
creating the VDI where the case says so, checks) is untimed; CPU is this
process's user+sys plus that of the children it waited for (the dog
processes) over the timed block; peak RSS is VmHWM of the whole process
(exact), while the parent samples this process and the helper processes it
reports (dog) to find their peak together.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import subprocess
import sys
import time
from typing import Any

MiB = 1 << 20
CHUNK = 64 * MiB
PIDS_FD_ENV = "SHEEPFAST_BENCH_PIDS_FD"


def peak_rss_kib() -> int:
    """This process's peak RSS since its exec (VmHWM). Not ru_maxrss: Linux
    folds the parent's RSS at the fork into that."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # pragma: no cover


class Meter:
    """Wall time and CPU (self + waited-for children) of a with-block."""

    def __enter__(self) -> Meter:
        self._s0 = resource.getrusage(resource.RUSAGE_SELF)
        self.rss_before_kib = peak_rss_kib()  # imports, buffers: the floor
        self._c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._t0
        s1 = resource.getrusage(resource.RUSAGE_SELF)
        c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.cpu_self = (s1.ru_utime - self._s0.ru_utime) + (s1.ru_stime - self._s0.ru_stime)
        self.cpu_children = (c1.ru_utime - self._c0.ru_utime) + (c1.ru_stime - self._c0.ru_stime)
        self.cpu_user = (s1.ru_utime - self._s0.ru_utime) + (c1.ru_utime - self._c0.ru_utime)
        self.cpu_sys = (s1.ru_stime - self._s0.ru_stime) + (c1.ru_stime - self._c0.ru_stime)


def _host_port(address: str) -> tuple[str, int]:
    first = address.split(",")[0].strip()
    host, sep, port = first.rpartition(":")
    if not sep or "]" in port:
        return first.strip("[]"), 7000
    return host.strip("[]"), int(port)


# ------------------------------------------------------------ sheepfast raw


def raw_write(spec: dict) -> dict:
    import sheepfast
    from benchmarks.data import load

    buf = load(spec["path"], spec["size"])
    with sheepfast.connect(spec["address"]) as cluster:
        cluster.create(spec["name"], spec["size"])
        with Meter() as m:
            with cluster.open(spec["name"]) as vdi:
                vdi.write(buf, 0)
                stats = vdi.stats
    return {"meter": m, "stats": stats}


def raw_read(spec: dict) -> dict:
    import sheepfast

    size = spec["size"]
    buf = bytearray(size)  # preallocated, and touched, before the clock starts
    for off in range(0, size, 4096):
        buf[off] = 1
    with sheepfast.connect(spec["address"]) as cluster:
        with Meter() as m:
            with cluster.open(spec["name"]) as vdi:
                got = vdi.readinto(buf, 0)
                stats = vdi.stats
    if got != size:
        raise RuntimeError(f"readinto returned {got} of {size} bytes")
    _spot_check(spec["path"], buf)
    return {"meter": m, "stats": stats}


def _spot_check(path: str, buf) -> None:
    """Compares 64 scattered 4 KiB windows with the image file (untimed)."""
    size = len(buf)
    with open(path, "rb") as f:
        for i in range(64):
            off = (size - 4096) * i // 63 // 4096 * 4096
            f.seek(off)
            if f.read(4096) != bytes(buf[off : off + 4096]):
                raise RuntimeError(f"data read back differs from the image at {off}")


# ------------------------------------------------------------ glance_store


def _store(address: str):
    """The Store as Glance builds it: enabled_backends = sd:sheepdog through
    glance_store.multi_backend (the driver found by its entry point); falls
    back to constructing sheepfast.glance.Store directly when the entry point
    is not registered (an uninstalled checkout)."""
    import logging

    from glance_store import location, multi_backend
    from oslo_config import cfg

    logging.getLogger("glance_store").setLevel(logging.ERROR)
    logging.getLogger("stevedore").setLevel(logging.ERROR)
    host, port = _host_port(address)
    conf = cfg.CONF
    conf.register_opt(cfg.DictOpt("enabled_backends"))
    conf([], project="glance", default_config_files=[], default_config_dirs=[])
    conf.set_override("enabled_backends", {"sd": "sheepdog"})
    multi_backend.register_store_opts(conf)
    conf.set_override("default_backend", "sd", group="glance_store")
    how = "glance_store.multi_backend (entry point 'sheepdog')"
    try:
        conf.set_override("sheepdog_store_address", host, group="sd")
    except cfg.NoSuchOptError:
        from sheepfast.glance import Store

        conf.register_opts(Store.OPTIONS, group="sd")
        conf.set_override("sheepdog_store_address", host, group="sd")
        conf.set_override("sheepdog_store_port", port, group="sd")
        store = Store(conf, backend="sd")
        store.configure()
        location.register_scheme_backend_map(
            {
                scheme: {
                    "sd": {
                        "store": store,
                        "store_entry": "sheepdog",
                        "location_class": store.get_store_location_class(),
                    }
                }
                for scheme in store.get_schemes()
            }
        )
        return store, "sheepfast.glance.Store constructed directly (entry point not registered)"
    conf.set_override("sheepdog_store_port", port, group="sd")
    if not multi_backend.create_multi_stores(conf):
        raise RuntimeError("glance_store loaded no store for enabled_backends = sd:sheepdog")
    return multi_backend.get_store_from_store_identifier("sd"), how


class GlanceReader:
    """What Glance hands a store's add(): its request body wrapped in
    LimitingReader(CooperativeReader(...)), an object with read(n) only
    (no readinto), counting what passes against the size cap."""

    def __init__(self, fd, limit: int = 1 << 40):
        self._read = fd.read
        self.limit = limit
        self.bytes_read = 0

    def read(self, n: int = -1) -> bytes:
        data = self._read(n)
        self.bytes_read += len(data)
        if self.bytes_read > self.limit:
            raise RuntimeError("image size cap exceeded")
        return data


def _upload_source(spec: dict, f):
    return GlanceReader(f) if spec.get("add_source", "glance") == "glance" else f


def store_add(spec: dict) -> dict:
    store, how = _store(spec["address"])
    size = 0 if spec["unknown_size"] else spec["size"]
    with open(spec["path"], "rb") as f:
        source = _upload_source(spec, f)
        with Meter() as m:
            uri, written, checksum, multihash, meta = store.add(
                spec["name"], source, size, "sha512", context=None, verifier=None
            )
    if written != spec["size"] or checksum != spec["md5"]:
        raise RuntimeError(
            f"Store.add returned size {written}, md5 {checksum}; want {spec['size']}, {spec['md5']}"
        )
    return {"meter": m, "uri": uri, "store_loaded": how}


def store_get(spec: dict) -> dict:
    from glance_store import multi_backend

    _, how = _store(spec["address"])
    with Meter() as m:
        chunks, size = multi_backend.get(spec["uri"], "sd")
        total = 0
        for chunk in chunks:
            total += len(chunk)
    if total != spec["size"] or size != spec["size"]:
        raise RuntimeError(f"Store.get gave {total} bytes (said {size}); want {spec['size']}")
    return {"meter": m, "store_loaded": how}


# -------------------------------------------------------------- CLI backend


def cli_write(spec: dict) -> dict:
    from benchmarks.data import load
    from sheepfast.backends import open_backend

    buf = load(spec["path"], spec["size"])
    view = memoryview(buf)
    size = spec["size"]
    with open_backend(spec["address"], "cli", dog_command=spec["dog"]) as backend:
        backend.create(spec["name"], size)
        with Meter() as m:
            with backend.open(spec["name"]) as image:
                for off in range(0, size, CHUNK):
                    image.write(view[off : off + CHUNK], off)
    return {"meter": m}


def cli_read(spec: dict) -> dict:
    from sheepfast.backends import open_backend

    size = spec["size"]
    buf = bytearray(min(CHUNK, size))
    view = memoryview(buf)
    total = 0
    with open_backend(spec["address"], "cli", dog_command=spec["dog"]) as backend:
        with Meter() as m:
            with backend.open(spec["name"]) as image:
                for off in range(0, size, CHUNK):
                    total += image.readinto(view[: min(CHUNK, size - off)], off)
    if total != size:
        raise RuntimeError(f"DogBackend read {total} of {size} bytes")
    return {"meter": m}


# ------------------------------------------------------ the removed driver


def _old_image(spec: dict):
    from benchmarks.old_driver import OldImage

    host, port = _host_port(spec["address"])
    return OldImage(spec["dog"], host, port, spec["name"])


def old_add(spec: dict) -> dict:
    from benchmarks import old_driver

    image = _old_image(spec)
    size = 0 if spec["unknown_size"] else spec["size"]
    with open(spec["path"], "rb") as f:
        source = _upload_source(spec, f)
        with Meter() as m:
            written, checksum, _ = old_driver.add(image, source, size, "sha512")
    if written != spec["size"] or checksum != spec["md5"]:
        raise RuntimeError(f"old add wrote {written}, md5 {checksum}")
    return {"meter": m}


def old_get(spec: dict) -> dict:
    from benchmarks import old_driver

    image = _old_image(spec)
    with Meter() as m:
        chunks, size = old_driver.get(image)
        total = 0
        for chunk in chunks:
            total += len(chunk)
    if total != spec["size"]:
        raise RuntimeError(f"old get gave {total} of {spec['size']} bytes")
    return {"meter": m}


# ---------------------------------------------------------------------- dog


def _dog(spec: dict, *args: str, **kwargs: Any) -> subprocess.CompletedProcess:
    host, port = _host_port(spec["address"])
    done = subprocess.run(
        [spec["dog"], "vdi", *args, "-a", host, "-p", str(port)], stderr=subprocess.PIPE, **kwargs
    )
    if done.returncode:
        raise RuntimeError(
            f"dog vdi {' '.join(args)}: exit {done.returncode}: "
            f"{done.stderr.decode(errors='replace').strip()}"
        )
    return done


def dog_write(spec: dict) -> dict:
    _dog(spec, "create", spec["name"], str(spec["size"]), stdout=subprocess.DEVNULL)
    with open(spec["path"], "rb") as f:
        with Meter() as m:
            _dog(spec, "write", spec["name"], stdin=f, stdout=subprocess.DEVNULL)
    return {"meter": m}


def dog_read(spec: dict) -> dict:
    with Meter() as m:
        _dog(spec, "read", spec["name"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    return {"meter": m}


# ------------------------------------------------------------------ hashes


def hashes(spec: dict) -> dict:
    from benchmarks.data import load

    buf = load(spec["path"], spec["size"])
    view = memoryview(buf)
    with Meter() as m:
        md5, sha = hashlib.md5(), hashlib.sha512()
        for off in range(0, len(buf), CHUNK):
            md5.update(view[off : off + CHUNK])
            sha.update(view[off : off + CHUNK])
    if md5.hexdigest() != spec["md5"]:
        raise RuntimeError("md5 of the loaded image differs from the file's")
    return {"meter": m}


RUN = {
    "raw-write": raw_write,
    "raw-read": raw_read,
    "store-add": store_add,
    "store-add-unknown": store_add,
    "store-get": store_get,
    "cli-write": cli_write,
    "cli-read": cli_read,
    "old-add": old_add,
    "old-add-unknown": old_add,
    "old-get": old_get,
    "dog-write": dog_write,
    "dog-read": dog_read,
    "hashes": hashes,
}


def _report_helper_pids() -> None:
    """Tells the parent the pid of every process this one starts (dog), once
    it has exec'd, so the parent can sample their memory. (ru_maxrss of
    reaped children is useless here: Linux charges a child with its parent's
    RSS at the fork.)"""
    fd = int(os.environ.get(PIDS_FD_ENV, "-1"))
    if fd < 0:
        return
    spawn = subprocess.Popen._execute_child  # type: ignore[attr-defined]

    def reporting(self, *args, **kwargs):
        spawn(self, *args, **kwargs)  # returns once the exec has succeeded
        os.write(fd, b"%d\n" % self.pid)

    subprocess.Popen._execute_child = reporting  # type: ignore[attr-defined]


def main(argv: list[str]) -> int:
    with open(argv[0]) as f:
        spec = json.load(f)
    _report_helper_pids()
    out = RUN[spec["case"]](spec)
    m: Meter = out.pop("meter")
    result = {
        "seconds": m.seconds,
        "cpu_s": m.cpu_self + m.cpu_children,
        "cpu_self_s": m.cpu_self,
        "cpu_children_s": m.cpu_children,
        "cpu_user_s": m.cpu_user,
        "cpu_sys_s": m.cpu_sys,
        "rss_before_kib": m.rss_before_kib,
        "rss_self_kib": peak_rss_kib(),
        **out,
    }
    tmp = spec["result"] + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f)
    os.replace(tmp, spec["result"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
