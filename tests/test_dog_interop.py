"""Bytes written by sheepfast read back by dog, and the reverse. Runs only
against a real cluster with dog on PATH (the dog fixture skips otherwise)."""

from __future__ import annotations

import os

import pytest

import sheepfast

MiB = 1 << 20


def test_dog_reads_what_sheepfast_wrote(cluster, new_name, dog):
    name = new_name()
    cluster.create(name, 12 * MiB)
    data = os.urandom(7 * MiB + 333)
    with cluster.open(name) as vdi:
        vdi.write(data, 2 * MiB + 1)
    got = dog("vdi", "read", name, str(2 * MiB + 1), str(len(data)))
    assert got == data
    # holes dog fills with zeros itself must agree too
    assert dog("vdi", "read", name, "0", str(2 * MiB + 1)) == bytes(2 * MiB + 1)


def test_sheepfast_reads_what_dog_wrote(cluster, new_name, dog):
    name = new_name()
    dog("vdi", "create", name, "16M")
    data = os.urandom(5 * MiB + 77)
    dog("vdi", "write", name, str(3 * MiB - 5), str(len(data)), input=data)
    with cluster.open(name) as vdi:
        assert vdi.size == 16 * MiB
        assert vdi.read(3 * MiB - 5, len(data)) == data
        assert vdi.read(0, 3 * MiB - 5) == bytes(3 * MiB - 5)


def test_dog_list_agrees_and_delete_leaves_no_trace(cluster, new_name, dog):
    name = new_name()
    cluster.create(name, 8 * MiB)
    with cluster.open(name) as vdi:
        vdi.write(os.urandom(8 * MiB), 0)
        vid = vdi.vid
    line = [
        row
        for row in dog("vdi", "list", "-r", name).decode().splitlines()
        if row.split(" ")[1] == name
    ][0].split(" ")
    assert (line[0], int(line[3]), int(line[4]), line[7]) == ("=", 8 * MiB, 8 * MiB, f"{vid:x}")
    cluster.delete(name)
    assert name not in dog("vdi", "list", "-r").decode()
    # no zombie: the name no longer resolves (a bare DEL_VDI would leave
    # it resolvable while hidden from the list)
    with sheepfast.connect(cluster.addresses) as c:
        assert not c.exists(name)


def test_sheepfast_reads_dog_snapshot_and_clone(cluster, new_name, dog):
    name, clone = new_name(), new_name()
    dog("vdi", "create", name, "8M")
    base = os.urandom(8 * MiB)
    dog("vdi", "write", name, input=base)
    dog("vdi", "snapshot", "-s", "snap1", name)
    dog("vdi", "clone", "-s", "snap1", name, clone)
    listed = {(i.name, i.snapshot) for i in cluster.list()}
    assert (name, True) in listed and (name, False) in listed and (clone, False) in listed
    with cluster.open(clone) as vdi:
        assert vdi.read(0, 8 * MiB) == base  # inherited objects read from the parent
        assert vdi.usage() == (0, 8 * MiB)
        vdi.write(b"CoW!", MiB)  # copy-on-write into the clone
        assert vdi.usage() == (4 * MiB, 4 * MiB)
        assert vdi.read(MiB - 2, 8) == base[MiB - 2 : MiB] + b"CoW!" + base[MiB + 4 : MiB + 6]
    assert dog("vdi", "read", name, str(MiB), "4") == base[MiB : MiB + 4]  # parent untouched
    assert dog("vdi", "read", clone, str(MiB), "4") == b"CoW!"
    cluster.delete(clone)
    dog("vdi", "delete", "-s", "snap1", name)


def test_dog_sees_and_reads_a_clone_sheepfast_made(cluster, new_name, dog):
    name, clone = new_name(), new_name("sf-clone")
    cluster.create(name, 8 * MiB)
    base = os.urandom(8 * MiB)
    with cluster.open(name) as vdi:
        vdi.write(base, 0)
    snap = cluster.snapshot(name, "gold")
    info = cluster.clone(name, "gold", clone, size=12 * MiB)
    with cluster.open(clone) as vdi:
        vdi.write(b"mine", 5 * MiB)
    rows = {
        (row.split(" ")[0], row.split(" ")[1]): row.split(" ")
        for row in dog("vdi", "list", "-r").decode().splitlines()
    }
    assert rows[("c", clone)][7] == f"{info.vid:x}"  # dog lists it as a clone
    assert rows[("s", name)][7] == f"{snap.vid:x}" and rows[("s", name)][9] == "gold"
    graph = dog("vdi", "graph").decode()
    assert f'"{snap.vid:x}" -> "{info.vid:x}";' in graph  # its parent is the snapshot
    assert clone in dog("vdi", "tree").decode()
    got = dog("vdi", "read", clone, "0", str(8 * MiB))
    assert got[: 5 * MiB] == base[: 5 * MiB] and got[5 * MiB : 5 * MiB + 4] == b"mine"
    assert dog("vdi", "read", "-s", "gold", name) == base  # the image is unchanged
    cluster.delete(clone)
    cluster.delete(name, snapshot="gold")


def test_sheepfast_rollback_and_snapshot_delete_agree_with_dog(cluster, new_name, dog):
    name = new_name()
    dog("vdi", "create", name, "8M")
    dog("vdi", "write", name, "0", "5", input=b"first")
    dog("vdi", "snapshot", "-s", "s1", name)
    dog("vdi", "write", name, "0", "5", input=b"later")
    working = cluster.rollback(name, "s1")
    assert dog("vdi", "read", name, "0", "5") == b"first"
    row = [r for r in dog("vdi", "list", "-r", name).decode().splitlines() if r[0] == "="][0]
    assert row.split(" ")[7] == f"{working.vid:x}"  # one working VDI, ours
    cluster.delete(name, snapshot="s1")
    assert [r[0] for r in dog("vdi", "list", "-r", name).decode().splitlines()] == ["="]


def test_sheepfast_reads_hyper_volume(cluster, new_name, dog):
    """A B-tree indexed ("hyper") volume made by dog reads correctly; writing
    one is refused rather than corrupting its index."""
    name = new_name()
    dog("vdi", "create", "-y", name, "64M")
    chunks = {0: os.urandom(MiB), 2 * 4 * MiB + 7: os.urandom(3000), 10 * 4 * MiB: os.urandom(MiB)}
    for offset, data in chunks.items():
        dog("vdi", "write", name, str(offset), str(len(data)), input=data)
    with cluster.open(name) as vdi:
        assert vdi.info.store_policy == 1
        image = vdi.read(0, 64 * MiB)
        with pytest.raises(sheepfast.Unsupported):
            vdi.write(b"x", 0)
    expected = bytearray(64 * MiB)
    for offset, data in chunks.items():
        expected[offset : offset + len(data)] = data
    assert image == bytes(expected)
    cluster.delete(name)  # DEL_VDI alone: no flat zeroing pass over a B-tree
    assert not cluster.exists(name)


def test_snapshot_under_an_open_handle(cluster, new_name, dog):
    """dog snapshots a VDI we hold open: our next write to an object that now
    belongs to the snapshot is refused clearly, and a fresh handle writes by
    copy-on-write, leaving the snapshot intact."""
    name = new_name()
    cluster.create(name, 8 * MiB)
    vdi = cluster.open(name)
    vdi.write(b"before", 0)
    dog("vdi", "snapshot", "-s", "s1", name)
    with pytest.raises(sheepfast.ReadOnly, match="snapshotted"):
        vdi.write(b"after!", 0)
    vdi.close()
    with cluster.open(name) as fresh:
        fresh.write(b"after!", 0)
        assert fresh.read(0, 6) == b"after!"
    assert dog("vdi", "read", "-s", "s1", name, "0", "6") == b"before"
    cluster.delete(name)
    dog("vdi", "delete", "-s", "s1", name)


def test_placement_agrees_with_dog(cluster, new_name, dog):
    """The ring the client routes reads by puts every object where sheep
    itself says it belongs (`dog vdi object location`, "According to
    sheepdog algorithm ...")."""
    import re

    name = new_name("sf-ring")
    cluster.create(name, 64 * MiB)
    info = cluster.stat(name)
    with cluster.open(name) as vdi:  # dog locates allocated objects only
        vdi.write(os.urandom(64 * MiB), 0)
        assert vdi.stats["routed_requests"] == 0  # writes are not routed
        vdi.read(0, 64 * MiB)
        assert vdi.stats["routed_requests"] == vdi.stats["read_requests"] > 0
    inode_oid = (1 << 63) | (info.vid << 32)
    for idx in [None, *range(64 * MiB // info.object_size)]:
        args = (
            ["vdi", "object", "location", name]
            if idx is None
            else ["vdi", "object", "location", "-i", str(idx), name]
        )
        out = dog(*args).decode()
        tail = out.split("According to sheepdog algorithm", 1)[1]
        expected = re.findall(r"\S+:\d+", tail)
        oid = inode_oid if idx is None else (info.vid << 32) | idx
        assert cluster.locate(oid, info.copies) == expected, (idx, out)


# ------------------------------------------------------------- attributes


def _dog_status(target, *args):
    """(exit status, stdout, stderr) of dog, for runs expected to fail."""
    import subprocess

    done = subprocess.run(["dog", *args, *target.dog_args()], capture_output=True, timeout=120)
    return done.returncode, done.stdout, done.stderr.decode(errors="replace")


def test_attributes_set_by_one_are_read_by_the_other(cluster, target, new_name, dog):
    name = new_name("sf-attr")
    cluster.create(name, MiB)
    with cluster.open(name) as vdi:
        vdi.metadata_set("from-sheepfast", "sheepfast value")
        vdi.metadata_set("binary", b"\x01\xff\x7f")
        assert dog("vdi", "getattr", name, "from-sheepfast") == b"sheepfast value"
        assert dog("vdi", "getattr", name, "binary") == b"\x01\xff\x7f"
        dog("vdi", "setattr", name, "from-dog", "dog value")
        assert vdi.metadata_get("from-dog") == b"dog value"
        dog("vdi", "setattr", name, "from-sheepfast", "replaced by dog")
        assert vdi.metadata_get("from-sheepfast") == b"replaced by dog"
        dog("vdi", "setattr", "-d", name, "from-dog")
        with pytest.raises(sheepfast.AttributeNotFound):
            vdi.metadata_get("from-dog")
        vdi.metadata_remove("binary")
        status, _, err = _dog_status(target, "vdi", "getattr", name, "binary")
        assert status == 5 and "Attribute 'binary' not found" in err
        # EXCL (dog setattr -x) sees what sheepfast set
        status, _, err = _dog_status(target, "vdi", "setattr", "-x", name, "from-sheepfast", "x")
        assert status == 3 and "already exists" in err


def test_attributes_survive_a_delete_of_the_vdi(cluster, target, new_name, dog):
    """sheep keeps attributes by name: once the VDI is deleted none can be
    reached, and a new VDI of that name, made by dog, has the old ones."""
    name = new_name("sf-attr")
    cluster.create(name, MiB)
    with cluster.open(name) as vdi:
        vdi.metadata_set("k", "from the first VDI")
    cluster.delete(name)
    status, _, err = _dog_status(target, "vdi", "getattr", name, "k")
    assert status == 5 and "VDI not found" in err
    dog("vdi", "create", name, "1M")
    assert dog("vdi", "getattr", name, "k") == b"from the first VDI"
    with cluster.open(name) as vdi:
        assert vdi.metadata_get("k") == b"from the first VDI"


def test_dog_sees_the_upload_mark(cluster, target, new_name, dog):
    """The mark of an upload under way is a plain attribute dog can read."""
    import json as json_module

    from sheepfast.image import SheepdogImage, parse_address
    from sheepfast.incomplete import MARK_KEY

    name = new_name("sf-mark")
    size = 9 * MiB
    cluster.create(name, size)
    seen = []

    def pieces():
        yield os.urandom(4 * MiB)
        seen.append(json_module.loads(dog("vdi", "getattr", name, MARK_KEY)))
        yield os.urandom(size - 4 * MiB)

    host, port = parse_address(cluster.addresses.split(",")[0])
    with SheepdogImage(host, port, name, 4 * MiB) as image:
        assert image.upload(pieces(), size) == size
    assert seen[0]["pid"] == os.getpid() and seen[0]["vid"] == cluster.stat(name).vid
    status, _, err = _dog_status(target, "vdi", "getattr", name, MARK_KEY)
    assert status == 5 and "not found" in err  # complete: the mark is gone
