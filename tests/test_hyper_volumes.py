"""Hyper volumes (B-tree indexed VDIs, ``dog vdi create -y``) at their edges,
read through the native client on FakeSheep: an empty one, and one of the
largest size Sheepdog allows (2^32 objects). Found while looking for
lengths from the wire that the client trusts."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap

import pytest

import sheepfast
from sheepfast.testing import FakeSheep
from sheepfast.testing import wire as w

MiB = 1 << 20


def _raw_call(port: int, opcode: int, args=None, payload: bytes = b"", data_length=None):
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        req = w.make_request(
            opcode,
            args,
            flags=w.FLAG_WRITE if payload else 0,
            data_length=len(payload) if data_length is None else data_length,
            id=1,
        )
        s.sendall(req.pack() + payload)
        buf = b""
        while len(buf) < w.HEADER_SIZE:
            chunk = s.recv(w.HEADER_SIZE - len(buf))
            assert chunk, "FakeSheep closed the connection"
            buf += chunk
        return w.ResponseHeader.unpack(buf)


def make_hyper(sheep: FakeSheep, name: str, size: int, block_size_shift: int) -> int:
    """A hyper volume as dog makes one: an empty B-tree root in the inode."""
    rsp = _raw_call(
        sheep.port,
        w.OP_NEW_VDI,
        w.VdiArgs(
            vdi_size=size, store_policy=w.STORE_POLICY_HYPER, block_size_shift=block_size_shift
        ),
        w.pad_name(name),
    )
    assert rsp.result == w.RES_SUCCESS
    return rsp.vdi.vdi_id


def test_a_hyper_volume_opens_read_only():
    """What works today (test_dog_interop reads one with data on real sheep)."""
    with FakeSheep() as sheep:
        make_hyper(sheep, "hv-data", 64 * MiB, 22)
        with sheepfast.connect(sheep.address) as c, c.open("hv-data") as vdi:
            assert vdi.info.store_policy == 1
            with pytest.raises(sheepfast.Unsupported):
                vdi.write(b"x", 0)


def test_an_empty_hyper_volume_reads_as_zeros():
    with FakeSheep() as sheep:
        make_hyper(sheep, "hv-empty", 64 * MiB, 22)
        # what another VDI, vid 0x16274, might hold in its first object
        foreign = w.data_oid(w.BTREE_MAGIC | (1 << 16), 0)
        rsp = _raw_call(
            sheep.port, w.OP_CREATE_AND_WRITE_OBJ, w.ObjArgs(oid=foreign), b"someone else's data"
        )
        assert rsp.result == w.RES_SUCCESS
        with sheepfast.connect(sheep.address) as c, c.open("hv-empty") as vdi:
            assert vdi.read(0, 4096) == bytes(4096)


def test_the_largest_hyper_volume_opens_and_reads_without_crashing():
    """In a child process: today it crashes."""
    code = textwrap.dedent("""
        import sys
        sys.path[:0] = sys.argv[1:2]
        import sheepfast
        from sheepfast.testing import FakeSheep
        from test_hyper_volumes import make_hyper
        with FakeSheep() as sheep:
            make_hyper(sheep, "hv-max", 1 << 54, 22)
            with sheepfast.connect(sheep.address) as c:
                try:
                    with c.open("hv-max") as vdi:
                        assert vdi.read((1 << 54) - 4096, 4096) == bytes(4096)
                        assert vdi.read(0, 4096) == bytes(4096)
                except sheepfast.SheepfastError as exc:   # a clear refusal is fine
                    print("refused:", exc)
        print("ok")
    """)
    env = dict(os.environ, MALLOC_ARENA_MAX="2")
    # run from tests/: from the checkout's root, "-c" would import the
    # unbuilt source tree instead of the installed package
    here = os.path.dirname(os.path.abspath(__file__))
    done = subprocess.run(
        [sys.executable, "-c", code, here],
        cwd=here,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), (
        f"status {done.returncode}: {done.stderr[-2000:]}"
    )
