"""The sheepfast command's snapshot, clone, rollback, tree, flatten, lock and
attr subcommands, as an operator runs them: a subprocess per command, on
FakeSheep and on a real cluster when one is configured, with either backend.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from conftest import dog_command
from test_command import COMMAND, ENV

MiB = 1 << 20


@pytest.fixture(params=["native", "cli"])
def sf(request, target):
    """Runs `sheepfast --backend KIND --cluster ADDR ARGS...`."""
    env = dict(ENV)
    if request.param == "cli":
        dog = dog_command(target)
        env["PATH"] = os.path.dirname(dog) + os.pathsep + env.get("PATH", "")

    def run(*args, input=None, check=True):
        done = subprocess.run(
            [*COMMAND, "--backend", request.param, "--cluster", target.address, *args],
            input=input,
            capture_output=True,
            timeout=120,
            cwd="/",
            env=env,
        )
        if check:
            assert done.returncode == 0, done.stderr.decode(errors="replace")
        return done

    run.kind = request.param
    return run


def test_snapshot_clone_tree_rollback_rm(sf, new_name, tmp_path):
    name, clone = new_name(), new_name("sf-clone")
    image = tmp_path / "img"
    data = os.urandom(8 * MiB)
    image.write_bytes(data)
    sf("put", str(image), name, "-q")
    assert sf("snapshot", name, "-s", "gold").stdout.decode().startswith(f"{name}: snapshot gold")
    again = sf("snapshot", name, "-s", "gold", check=False)
    assert again.returncode == 1
    assert f"VDI '{name}' already has a snapshot tagged 'gold'" in again.stderr.decode()
    assert "--force" not in again.stderr.decode()
    sf("clone", name, "gold", clone, "--size", "16M")

    listed = {(v["name"], v["type"]): v for v in json.loads(sf("ls", "--json").stdout)}
    assert listed[(name, "snapshot")]["tag"] == "gold"
    assert listed[(clone, "clone")]["parent"]["name"] == name
    assert listed[(clone, "clone")]["parent"]["tag"] == "gold"
    assert listed[(clone, "clone")]["size"] == 16 * MiB
    if sf.kind == "native":  # dog's backend cannot tell used from shared
        assert (listed[(clone, "clone")]["used"], listed[(clone, "clone")]["shared"]) == (
            0,
            8 * MiB,
        )

    tree = sf("tree", name).stdout.decode().splitlines()
    assert tree[0].startswith(f"{name}@gold [snapshot 1")
    assert any(line.endswith("16.0 MiB]") and clone in line for line in tree[1:])
    assert any(f"{name} [working" in line for line in tree[1:])

    info = json.loads(sf("info", name, "--json").stdout)
    assert [s["tag"] for s in info["snapshots"]] == ["gold"]
    assert json.loads(sf("info", name, "-s", "gold", "--json").stdout)["snapshot"] is True

    sf("put", "-", name, "--force", "-q", input=b"changed")
    sf("rollback", name, "gold")
    assert sf("get", name, "-").stdout == data
    assert sf("get", clone, "-").stdout[: 8 * MiB] == data

    sf("rm", "-s", "gold", name)
    listed = json.loads(sf("ls", "--json").stdout)
    assert not [v for v in listed if v["name"] == name and v["type"] == "snapshot"]
    missing = sf("rm", "-s", "gold", name, check=False)
    assert missing.returncode == 1 and "not found" in missing.stderr.decode()
    assert sf("get", clone, "-").stdout[: 8 * MiB] == data  # the clone lives on


def test_flatten_and_what_dog_cannot_do(sf, new_name):
    name, clone = new_name(), new_name("sf-clone")
    sf("put", "-", name, "-q", input=os.urandom(4 * MiB))
    sf("snapshot", name, "-s", "s")
    sf("clone", name, "s", clone)
    done = sf("flatten", clone, check=False)
    if sf.kind == "cli":
        assert done.returncode == 1
        assert "lacks Capability.FLATTEN" in done.stderr.decode()
        return
    assert done.returncode == 0, done.stderr
    assert json.loads(sf("info", clone, "--json").stdout)["shared"] == 0


def test_attr_subcommands(sf, new_name):
    name = new_name()
    sf("put", "-", name, "-q", input=b"x")
    sf("attr", "set", name, "owner", "glance")
    assert sf("attr", "get", name, "owner").stdout == b"glance"
    listing = sf("attr", "ls", name, check=False)
    if sf.kind == "cli":
        assert listing.returncode == 1 and "ATTRIBUTE_LIST" in listing.stderr.decode()
    else:
        assert listing.stdout.decode() == "owner\tglance\n"
    sf("attr", "rm", name, "owner")
    gone = sf("attr", "get", name, "owner", check=False)
    assert gone.returncode == 1
    usage = sf("attr", "set", name, "only-a-key", check=False)
    assert usage.returncode == 2 and "attr set takes NAME KEY VALUE" in usage.stderr.decode()


def test_lock_subcommands(sf, target, new_name):
    name = new_name()
    sf("put", "-", name, "-q", input=b"x")
    listing = sf("lock", "list")
    assert listing.stdout.decode().splitlines()[0].split() == [
        "NAME",
        "TAG",
        "VID",
        "STATE",
        "OWNERS",
    ]
    assert name not in listing.stdout.decode()
    done = sf("lock", "unlock", name, check=False)
    assert done.returncode == 1 and "is not locked" in done.stderr.decode()
    usage = sf("lock", "unlock", check=False)
    assert usage.returncode == 2
