#!/usr/bin/env python3
"""Boot-from-image as Cinder's clone_image and Nova's image backend do it,
on sheepfast: a volume that is a copy-on-write clone of a Glance image.

Given the location and metadata `Store.add` returned for an image stored
with ``sheepdog_store_snapshot_images = True``, this

1. checks the location is cloneable from this cluster (a ``sheepdog://``
   location naming one of our gateways, with the snapshot in its metadata,
   or at least on the image),
2. clones the snapshot into a volume VDI (constant time, whatever the size),
3. grows the volume to the size asked for,
4. writes into it (copy on write: only the objects written are copied),
5. shows that the Glance image reads exactly as before.

Run it on its own (an embedded FakeSheep and a real glance_store Store, when
glance_store is installed) or against a cluster:

    python examples/clone_from_glance.py [--cluster HOST:PORT] [--size-mib 64]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import sys
import uuid
from typing import Mapping, Optional

import sheepfast
from sheepfast.address import gateway_key, parse_addresses, parse_location
from sheepfast.defaults import GLANCE_SNAPSHOT_KEY, GLANCE_SNAPSHOT_TAG

MiB = 1 << 20


def cloneable_snapshot(
    cluster: sheepfast.Cluster, location: str, metadata: Mapping[str, str]
) -> Optional[tuple[str, str]]:
    """(image, snapshot tag) when location can be cloned here, else None:
    what Cinder's _is_cloneable checks (the scheme, this cluster, the image
    being there) plus the snapshot to clone."""
    try:
        where = parse_location(location)
    except sheepfast.InvalidArgument:
        return None  # another store's location, or a malformed one
    image = where.image
    if where.host is not None and where.port is not None:  # else: the configured cluster
        ours = {gateway_key(host, p) for host, p in parse_addresses(cluster.nodes)}
        if gateway_key(where.host, where.port) not in ours:
            return None  # another cluster: a copy, not a clone
    tag = metadata.get(GLANCE_SNAPSHOT_KEY, GLANCE_SNAPSHOT_TAG)
    if not cluster.exists(image, snapshot=tag):
        return None  # stored without a snapshot: the consumer would copy
    return image, tag


def clone_volume(
    cluster: sheepfast.Cluster,
    location: str,
    metadata: Mapping[str, str],
    volume: str,
    size: int,
) -> sheepfast.VdiInfo:
    """The volume VDI, a clone of the image's snapshot grown to size."""
    found = cloneable_snapshot(cluster, location, metadata)
    if found is None:
        raise sheepfast.InvalidArgument(f"{location} cannot be cloned from this cluster")
    image, tag = found
    return cluster.clone(image, tag, volume, size=size)


def digest(cluster: sheepfast.Cluster, name: str) -> str:
    h = hashlib.sha256()
    with cluster.open(name) as vdi:
        for offset in range(0, vdi.size, 16 * MiB):
            h.update(vdi.read(offset, min(16 * MiB, vdi.size - offset)))
    return h.hexdigest()


def main(argv: Optional[list[str]] = None) -> int:
    from glance_store import multi_backend

    from sheepfast.demo import glance_store

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cluster", help="host:port (default: an embedded FakeSheep)")
    p.add_argument("--size-mib", type=int, default=64, help="the image's size")
    args = p.parse_args(argv)
    data = os.urandom(args.size_mib * MiB // 2) + bytes(args.size_mib * MiB // 2)

    def run(address: str) -> int:
        # the real glance_store driver, configured as glance-api.conf would
        # (store "sd"), with sheepdog_store_snapshot_images on
        with (
            glance_store(address, sheepdog_store_snapshot_images=True) as conf,
            sheepfast.connect(address) as cluster,
        ):
            location, _size, _md5, _hash, metadata = multi_backend.add_with_multihash(
                conf, str(uuid.uuid4()), io.BytesIO(data), len(data), "sd", "sha256"
            )
            print(f"image stored: {location} {metadata}")
            image = parse_location(location).image
            before = digest(cluster, image)
            volume = f"volume-{uuid.uuid4()}"
            info = clone_volume(cluster, location, metadata, volume, size=4 * len(data))
            print(f"volume {info.name}: clone of {info.parent}, {info.size} bytes")
            with cluster.open(volume) as vdi:
                vdi.write(b"written by the VM", 0)
                vdi.write(b"past the image's end", len(data) + MiB)
                used, shared = vdi.usage()
                print(f"volume owns {used} bytes, shares {shared} with the image")
                assert vdi.read(0, 17) == b"written by the VM"
                assert vdi.read(17, 100) == data[17:117]  # the rest came from the image
            after = digest(cluster, image)
            print(f"image unchanged: {before == after}")
            # Glance deletes the image: the volume keeps its data
            multi_backend.delete(location, "sd")
            gone = not cluster.exists(image)
            gone = gone and not cluster.exists(image, snapshot=GLANCE_SNAPSHOT_TAG)
            with cluster.open(volume) as vdi:
                still = vdi.read(17, 100) == data[17:117]
            print(f"image deleted: {gone}; volume still reads the image's bytes: {still}")
            cluster.delete(volume)  # the last reference: sheep frees the shared objects
            return 0 if before == after and gone and still else 1

    if args.cluster:
        return run(args.cluster)
    from sheepfast.testing import FakeSheep

    with FakeSheep() as sheep:
        return run(sheep.address)


if __name__ == "__main__":
    sys.exit(main())
