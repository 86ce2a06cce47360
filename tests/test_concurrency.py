"""Readers and writers in threads share one Cluster and one Vdi."""

from __future__ import annotations

import os
import threading
import time

MiB = 1 << 20


def test_parallel_writers_and_readers_one_vdi(cluster, new_name):
    name = new_name()
    obj = MiB
    cluster.create(name, 32 * obj, block_size_shift=20)
    chunks = {i: os.urandom(2 * obj) for i in range(16)}
    errors: list[BaseException] = []
    with cluster.open(name) as vdi:

        def writer(i: int) -> None:
            try:
                # misaligned by 3 bytes so neighbours share objects
                vdi.write(chunks[i], i * 2 * obj + 3 if i < 15 else i * 2 * obj)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        def reader() -> None:
            try:
                for _ in range(20):
                    vdi.read(0, 32 * obj)
            except BaseException as exc:  # pragma: no cover
                errors.append(exc)

        threads = [threading.Thread(target=writer, args=(i,)) for i in range(16)]
        threads += [threading.Thread(target=reader) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        # each object was created once, never twice (a second CREATE would
        # have replaced a neighbour's bytes with zeros)
        assert vdi.stats["create_requests"] == 32
    with cluster.open(name) as vdi:
        whole = vdi.read(0, 32 * obj)
    # Neighbouring writes overlap by 3 bytes (the misalignment), and which
    # one lands last is up to the threads; every other byte is certain.
    for i in range(15):
        start = i * 2 * obj + 3
        assert whole[start : start + 2 * obj - 3] == chunks[i][:-3]
    assert whole[30 * obj + 3 : 32 * obj] == chunks[15][3:]


def test_many_threads_many_vdis(cluster, new_name):
    names = [new_name() for _ in range(6)]
    payloads = {n: os.urandom(3 * MiB + 11) for n in names}
    errors: list[BaseException] = []

    def work(n: str) -> None:
        try:
            cluster.create(n, 4 * MiB)
            with cluster.open(n) as vdi:
                vdi.write(payloads[n], 5)
                assert vdi.read(5, len(payloads[n])) == payloads[n]
        except BaseException as exc:  # pragma: no cover
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    listed = {i.name for i in cluster.list()}
    assert set(names) <= listed


def test_close_waits_for_io_in_another_thread(target, cluster, new_name):
    name = new_name()
    cluster.create(name, 8 * MiB)
    vdi = cluster.open(name)
    vdi.write(os.urandom(8 * MiB), 0)
    if target.is_fake:
        target.fake.set_delay(0.3)
    result: dict = {}

    def slow_read() -> None:
        result["data"] = vdi.read(0, 8 * MiB)

    t = threading.Thread(target=slow_read)
    t.start()
    time.sleep(0.05)
    vdi.close()  # must not free the handle under the running read
    t.join()
    assert len(result["data"]) == 8 * MiB
    assert vdi.closed


def test_gil_released_during_io(target, cluster, new_name):
    """While one thread waits on the network, Python code keeps running."""
    if not target.is_fake:
        return  # needs the fake's delay knob to make the wait measurable
    name = new_name()
    cluster.create(name, MiB)
    vdi = cluster.open(name)
    vdi.write(b"x", 0)
    target.fake.set_delay(0.5)
    ticks = 0
    done = threading.Event()

    def count() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            time.sleep(0.001)

    t = threading.Thread(target=count)
    t.start()
    vdi.read(0, 1)
    done.set()
    t.join()
    vdi.close()
    assert ticks > 50
