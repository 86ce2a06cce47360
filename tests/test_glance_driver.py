"""The glance_store driver, end to end through glance_store's own functions.

Every test in the second part runs on FakeSheep and, when one is given, on a
real cluster (the conftest ``target``), with the native and the command-line
backend (``kind``), and mostly in both single- and multi-store mode
(``glance``). The first part checks StoreLocation on its own.
"""

from __future__ import annotations

import hashlib
import io
import logging
import threading
import time

import pytest
from glance_store import capabilities, exceptions
from glance_store import location as glance_location
from glance_support import (  # noqa: F401  (fixtures)
    CHUNK_MIB,
    OBJECT_MIB,
    Boom,
    BufferWatchingSource,
    FailingSource,
    MiB,
    RecordingVerifier,
    WatchedSource,
    glance,
    image_bytes,
    kind,
    make_multi,
    make_single,
    make_source,
    multi,
    split_address,
)
from oslo_config import cfg

import sheepfast
from sheepfast import glance as driver
from sheepfast.image import FIRST_PIECE
from sheepfast.testing import wire

CHUNK = CHUNK_MIB * MiB
SIZE = 3 * CHUNK + 12345  # four chunks, the last one short


# ================================================================ StoreLocation


@pytest.fixture
def loc_conf():
    """[glance_store] with the driver's options, the cluster at 10.0.0.1:7000
    plus one extra gateway."""
    conf = cfg.ConfigOpts()
    conf(args=[])
    conf.register_opts(driver.OPTIONS, group="glance_store")
    conf.set_override("sheepdog_store_address", "10.0.0.1", group="glance_store")
    conf.set_override(
        "sheepdog_store_extra_addresses", ["[fd00::2]:7001", "sheep3.example"], group="glance_store"
    )
    return conf


def parse(conf, uri, backend_group=None):
    loc = driver.StoreLocation({}, conf, backend_group=backend_group)
    loc.parse_uri(uri)
    return loc


@pytest.mark.parametrize(
    "uri, addr, port, image",
    [
        (
            "sheepdog://10.0.0.1:7000:6bd59e6e-c410-11e5-ab67-0a73f1fda51b",
            "10.0.0.1",
            7000,
            "6bd59e6e-c410-11e5-ab67-0a73f1fda51b",
        ),
        ("sheepdog://10.0.0.1:7000:a:b::c:", "10.0.0.1", 7000, "a:b::c:"),
        ("sheepdog://[fd00::2]:7001:img", "fd00::2", 7001, "img"),
        ("sheepdog://[fd00::2]:7001:with:colons", "fd00::2", 7001, "with:colons"),
        ("sheepdog://sheep3.example:7000:img", "sheep3.example", 7000, "img"),
    ],
)
def test_location_round_trip(loc_conf, uri, addr, port, image):
    loc = parse(loc_conf, uri)
    assert (loc.addr, loc.port, loc.image) == (addr, port, image)
    assert loc.get_uri() == uri
    again = driver.StoreLocation({"addr": addr, "port": port, "image": image}, loc_conf)
    assert again.get_uri() == uri
    assert parse(loc_conf, again.get_uri()).image == image


def test_location_legacy_form_means_the_configured_cluster(loc_conf):
    loc = parse(loc_conf, "sheepdog://6bd59e6e-c410-11e5-ab67-0a73f1fda51b")
    assert (loc.addr, loc.port) == ("10.0.0.1", 7000)
    assert loc.image == "6bd59e6e-c410-11e5-ab67-0a73f1fda51b"
    assert loc.get_uri() == "sheepdog://10.0.0.1:7000:6bd59e6e-c410-11e5-ab67-0a73f1fda51b"


def test_location_ipv6_configured_address_is_bracketed():
    conf = cfg.ConfigOpts()
    conf(args=[])
    conf.register_opts(driver.OPTIONS, group="glance_store")
    conf.set_override("sheepdog_store_address", "::1", group="glance_store")
    loc = parse(conf, "sheepdog://img")
    assert loc.get_uri() == "sheepdog://[::1]:7000:img"
    assert parse(conf, loc.get_uri()).addr == "::1"


@pytest.mark.parametrize(
    "uri",
    [
        "sheepdog://",
        "sheepdog:/img",
        "rbd://img",
        "sheepdog://10.0.0.1:7000:",  # no image
        "sheepdog://10.0.0.1:7000",  # no image, no ':'
        "sheepdog://10.0.0.1:img",  # no port
        "sheepdog://10.0.0.1:port:img",
        "sheepdog://10.0.0.1:+7000:img",
        "sheepdog://10.0.0.1:0:img",
        "sheepdog://10.0.0.1:65536:img",
        "sheepdog://:7000:img",  # no host
        "sheepdog://::1:7000:img",  # IPv6 without brackets
        "sheepdog://[::1:7000:img",  # unclosed bracket
        "sheepdog://[::1]7000:img",
        "sheepdog://[10.0.0.1]:7000:img",  # brackets hold only IPv6
        "sheepdog://[not-v6]:7000:img",
        "sheepdog://-oProxyCommand=x:7000:img",  # not a host name
        "sheepdog://bad host:7000:img",
        "sheepdog://10.0.0.1:7000:-rf",  # would be an option to dog
        "sheepdog://10.0.0.1:7000:two words",
        "sheepdog://10.0.0.1:7000:line\nbreak",
        "sheepdog://10.0.0.1:7000:nul\x00",
        "sheepdog://10.0.0.1:7000:" + "x" * 256,  # longer than sheep allows
        "sheepdog://-img",
        "sheepdog://[img]",
    ],
)
def test_malformed_locations_are_bad_store_uris(loc_conf, uri):
    with pytest.raises(exceptions.BadStoreUri):
        parse(loc_conf, uri)


@pytest.mark.parametrize(
    "uri",
    [
        "sheepdog://10.9.9.9:7000:img",  # another host
        "sheepdog://10.0.0.1:7001:img",  # the configured host, another port
        "sheepdog://[fd00::3]:7001:img",
        "sheepdog://localhost:7000:img",  # no DNS: not 10.0.0.1
    ],
)
def test_locations_outside_the_cluster_are_refused(loc_conf, uri):
    with pytest.raises(exceptions.BadStoreUri, match="outside the configured cluster"):
        parse(loc_conf, uri)
    loc_conf.set_override("sheepdog_store_allow_external_locations", True, group="glance_store")
    assert parse(loc_conf, uri).get_uri() == uri


def test_extra_gateways_belong_to_the_cluster(loc_conf):
    assert parse(loc_conf, "sheepdog://[FD00:0::2]:7001:img").addr == "FD00:0::2"
    assert parse(loc_conf, "sheepdog://SHEEP3.example:7000:img").port == 7000


def test_location_in_multi_store_mode_reads_backend_defaults(tmp_path):
    conf_file = tmp_path / "g.conf"
    conf_file.write_text(
        "[DEFAULT]\nenabled_backends = sd:sheepdog\n"
        "[backend_defaults]\nsheepdog_store_address = 10.1.1.1\n"
        "[sd]\nsheepdog_store_port = 7100\n"
    )
    conf = cfg.ConfigOpts()
    conf.register_opt(cfg.DictOpt("enabled_backends"))
    conf(args=["--config-file", str(conf_file)])
    from glance_store import multi_backend

    multi_backend.register_store_opts(conf)
    driver.Store(conf, backend="sd")  # as create_multi_stores does
    loc = parse(conf, "sheepdog://img", backend_group="sd")
    assert loc.get_uri() == "sheepdog://10.1.1.1:7100:img"
    with pytest.raises(exceptions.BadStoreUri):
        parse(conf, "sheepdog://10.1.1.1:7000:img", backend_group="sd")


# ================================================================ the driver


def no_vdi(target, name) -> bool:
    with sheepfast.connect(target.address) as c:
        return not c.exists(name)


def vdi_size(target, name) -> int:
    with sheepfast.connect(target.address) as c:
        return c.stat(name).size


def vdi_bytes(target, name) -> bytes:
    """The VDI's contents, read natively (quicker than dog for checks)."""
    with sheepfast.connect(target.address) as c, c.open(name) as vdi:
        return vdi.read(0, vdi.size)


def only_once_with_cli(kind, param, first):
    """Image-source handling does not depend on the backend: with the
    (slow, a process per call) cli backend one variant is enough."""
    if kind == "cli" and param != first:
        pytest.skip("backend-independent variant, run with the native backend")


@pytest.mark.parametrize("source", ["readinto", "read", "iter"])
@pytest.mark.parametrize("known", [True, False], ids=["known-size", "unknown-size"])
def test_round_trip(glance, new_name, source, known):
    only_once_with_cli(glance.kind, source, "readinto")
    data = image_bytes(SIZE)
    image_id = glance.new_id(new_name)
    uri, size, md5, multihash, meta = glance.add(
        image_id, make_source(source, data), SIZE if known else 0
    )
    host, port = split_address(glance.target.address)
    assert uri == f"sheepdog://{host}:{port}:{image_id}"
    assert size == SIZE
    assert md5 == hashlib.md5(data).hexdigest()
    assert multihash == hashlib.sha512(data).hexdigest()
    assert meta == ({"store": "sheep"} if glance.mode == "multi" else {})
    # the VDI is exactly as long as the data, also when the size was unknown
    assert vdi_size(glance.target, image_id) == SIZE
    assert glance.get_size(uri) == SIZE
    assert glance.read_all(uri) == data
    glance.delete(uri)
    assert no_vdi(glance.target, image_id)
    with pytest.raises(exceptions.NotFound):
        glance.get_size(uri)
    with pytest.raises(exceptions.NotFound):
        glance.get(uri)
    with pytest.raises(exceptions.NotFound):
        glance.delete(uri)


def test_empty_image(glance, new_name):
    image_id = glance.new_id(new_name)
    uri, size, md5, multihash, _ = glance.add(image_id, io.BytesIO(b""), 0)
    assert (size, md5) == (0, hashlib.md5(b"").hexdigest())
    assert vdi_size(glance.target, image_id) == 0
    assert glance.read_all(uri) == b""
    glance.delete(uri)


def test_single_store_functions_and_back_compat_add(monkeypatch, target, kind, new_name):
    """The pre-multihash entry points: store_add_to_backend gives a 4-tuple,
    Store.add with a hashing_algo a 5-tuple."""
    from glance_store import backend

    g = make_single(monkeypatch, target, kind)
    data = image_bytes(CHUNK + 7)
    store = backend.get_store_from_scheme("sheepdog")
    assert isinstance(store, driver.Store)
    first = g.new_id(new_name)
    uri, size, md5, meta = backend.store_add_to_backend(first, io.BytesIO(data), len(data), store)
    assert (size, md5, meta) == (len(data), hashlib.md5(data).hexdigest(), {})
    second = g.new_id(new_name)
    uri2, size2, md5_2, meta2 = backend.add_to_backend(
        g.conf, second, io.BytesIO(data), len(data), scheme="sheepdog"
    )
    assert md5_2 == md5
    result = store.add(g.new_id(new_name), io.BytesIO(data), len(data), "sha256")
    assert len(result) == 5 and result[3] == hashlib.sha256(data).hexdigest()
    assert backend.get_size_from_backend(uri) == len(data)
    it, n = backend.get_from_backend(uri2)
    assert b"".join(it) == data
    target.names.extend(g.names)


RANGES = [
    (0, None),
    (1, None),
    (CHUNK - 1, 2),
    (CHUNK, CHUNK),
    (5, 2 * CHUNK + 3),
    (SIZE - 1, None),
    (SIZE - 1, 100),
    (SIZE, None),
    (SIZE + 10, 5),
    (0, 1),
]


def test_get_with_offset_and_chunk_size(glance, new_name):
    """get(offset=, chunk_size=) reads that range (chunk_size is the length,
    as in the filesystem and cinder drivers); the size returned is what the
    iterator yields, in pieces of at most the chunk size."""
    data = image_bytes(SIZE)
    uri = glance.add(glance.new_id(new_name), io.BytesIO(data), SIZE)[0]
    assert glance.store.is_capable(capabilities.BitMasks.READ_RANDOM)
    for offset, length in RANGES:
        it, size = glance.get(uri, offset=offset, chunk_size=length)
        pieces = list(it)
        want = data[offset : offset + length] if length else data[offset:]
        assert b"".join(pieces) == want, (offset, length)
        assert size == len(want), (offset, length)
        assert all(0 < len(p) <= CHUNK for p in pieces), (offset, length)


def test_get_yields_a_short_first_piece_then_pieces_of_at_most_the_download_cap(
    monkeypatch, tmp_path, target, kind, new_name
):
    """The first byte leaves after one short read (native backend); later
    pieces double up to the chunk size or DOWNLOAD_PIECE_MAX, whichever is
    smaller, and never cross a multiple of it; an upload still sends whole
    chunks."""
    from sheepfast import defaults

    cap = defaults.DOWNLOAD_PIECE_MAX
    g = make_multi(monkeypatch, tmp_path, target, kind, sheepdog_store_chunk_size=2 * cap // MiB)
    try:
        assert g.store.WRITE_CHUNKSIZE == 2 * cap and g.store.READ_CHUNKSIZE == cap
        size = 2 * cap + 4097
        data = image_bytes(size)
        uri = g.add(g.new_id(new_name), io.BytesIO(data), size)[0]
        it, got = g.get(uri)
        pieces = list(it)
        assert got == size and b"".join(pieces) == data
        if kind == "cli":  # a read is a dog process: no short pieces
            assert [len(b) for b in pieces] == [cap, cap, 4097]
        else:
            assert len(pieces[0]) == FIRST_PIECE
            assert [len(b) for b in pieces[1:3]] == [2 * FIRST_PIECE, 4 * FIRST_PIECE]
        assert max(len(p) for p in pieces) == cap
        ends = [sum(len(p) for p in pieces[: i + 1]) for i in range(len(pieces))]
        crossing = [e for e, p in zip(ends, pieces) if (e - 1) // cap != (e - len(p)) // cap]
        assert crossing == [], crossing
    finally:
        target.names.extend(g.names)


def test_get_sends_the_first_read_before_the_first_next_and_close_stops_it(fake_multi, new_name):
    """The first piece travels while Glance builds its response; an
    iterator closed unread leaves no reader behind."""
    fake = fake_multi.target.fake
    data = image_bytes(SIZE)
    uri = fake_multi.add(fake_multi.new_id(new_name), io.BytesIO(data), SIZE)[0]
    fake.enable_request_log()
    try:
        it, size = fake_multi.get(uri)

        def data_reads() -> int:  # READ_OBJ of a data object, not of the inode
            log = fake.request_log()
            return sum(e.opcode == wire.OP_READ_OBJ and not e.oid & wire.VDI_BIT for e in log)

        deadline = time.monotonic() + 10
        while not data_reads():
            assert time.monotonic() < deadline, "no data read before the first next()"
            time.sleep(0.005)
    finally:
        fake.enable_request_log(False)
    assert size == SIZE and b"".join(it) == data
    before = threading.active_count()
    unread, _ = fake_multi.get(uri)
    unread.close()
    assert threading.active_count() == before


def test_a_get_from_the_start_has_its_first_piece_by_the_time_it_returns(fake_multi, new_name):
    """An image this store wrote (or read) before: get() opens it with one
    round trip that also brings the first piece, which the first next()
    then takes with no request of its own."""
    if fake_multi.kind == "cli":
        pytest.skip("dog reads nothing ahead: each read is a process of its own")
    fake = fake_multi.target.fake
    data = image_bytes(SIZE)
    uri = fake_multi.add(fake_multi.new_id(new_name), io.BytesIO(data), SIZE)[0]
    fake.reset_request_counts()
    fake.enable_request_log()
    try:
        it, size = fake_multi.get(uri)
        assert fake.request_counts() == {wire.OP_READ_OBJ: 2}  # the inode and the first piece
        pieces = iter(it)
        first = next(pieces)
        assert len(first) == FIRST_PIECE and first == data[:FIRST_PIECE]
        assert b"".join([first, *pieces]) == data
        log = fake.request_log()
    finally:
        fake.enable_request_log(False)
    starts = [e for e in log if e.opcode == wire.OP_READ_OBJ and e.oid & 0xFFFFFFFF == 0]
    starts = [e for e in starts if not e.oid & wire.VDI_BIT and e.offset == 0]
    assert len(starts) == 1  # the bytes read ahead were not asked for again
    it, _ = fake_multi.get(uri, offset=5)  # a range: nothing read ahead
    assert b"".join(it) == data[5:]


def test_legacy_location_reads_the_configured_cluster(glance, new_name):
    data = image_bytes(1000)
    image_id = glance.new_id(new_name)
    glance.add(image_id, io.BytesIO(data), len(data))
    legacy = f"sheepdog://{image_id}"
    assert glance.get_size(legacy) == len(data)
    assert glance.read_all(legacy) == data
    glance.delete(legacy)
    assert no_vdi(glance.target, image_id)


@pytest.mark.parametrize(
    "declared",
    [SIZE - 1, SIZE - CHUNK, 1, SIZE + 1, SIZE + 5 * CHUNK],
    ids=["1-short", "chunk-short", "1-byte", "1-over", "chunks-over"],
)
def test_declared_size_mismatch_is_invalid_and_leaves_no_vdi(multi, new_name, declared):
    """Data longer or shorter than declared: the image is deleted and
    glance_store's Invalid raised, as the filesystem and rbd drivers do."""
    data = image_bytes(SIZE)
    image_id = multi.new_id(new_name)
    with pytest.raises(exceptions.Invalid, match="declared") as info:
        multi.add(image_id, io.BytesIO(data), declared)
    assert isinstance(info.value.__cause__, sheepfast.OutOfRange)
    assert no_vdi(multi.target, image_id)


@pytest.mark.parametrize("good", [0, 10, CHUNK, 2 * CHUNK + 1])
def test_reader_raising_mid_stream_leaves_no_vdi(multi, new_name, good):
    image_id = multi.new_id(new_name)
    data = image_bytes(SIZE)
    with pytest.raises(Boom):  # the reader's own error, untranslated
        multi.add(image_id, FailingSource(data, good), SIZE)
    assert no_vdi(multi.target, image_id)
    with pytest.raises(Boom):
        multi.add(image_id, FailingSource(data, good), 0)
    assert no_vdi(multi.target, image_id)


def test_duplicate(glance, new_name):
    data = image_bytes(CHUNK + 1)
    image_id = glance.new_id(new_name)
    uri = glance.add(image_id, io.BytesIO(data), len(data))[0]
    with pytest.raises(exceptions.Duplicate):
        glance.add(image_id, io.BytesIO(b"other" * 1000), 5000)
    with pytest.raises(exceptions.Duplicate):
        glance.add(image_id, io.BytesIO(b"other"), 0)
    assert glance.read_all(uri) == data  # the first image is untouched


def test_concurrent_adds_of_one_id_make_one_image(multi, new_name, monkeypatch):
    """The create is atomic: of two racing uploads one gets Duplicate, and
    its failure does not delete the winner's image."""
    image_id = multi.new_id(new_name)
    payloads = [image_bytes(2 * CHUNK, seed=s) for s in (1, 2)]
    gate = threading.Barrier(2)
    results: list = [None, None]
    create = driver.SheepdogImage.create

    def gated_create(self, *args, **kwargs):
        gate.wait(timeout=30)  # both uploads got this far before either created
        return create(self, *args, **kwargs)

    monkeypatch.setattr(driver.SheepdogImage, "create", gated_create)

    def upload(i):
        try:
            results[i] = multi.add(image_id, io.BytesIO(payloads[i]), 2 * CHUNK)
        except Exception as exc:  # noqa: BLE001 - recorded for the assertions
            results[i] = exc

    threads = [threading.Thread(target=upload, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    kinds = sorted(type(r).__name__ for r in results)
    assert kinds == ["Duplicate", "tuple"], results
    winner = 0 if isinstance(results[0], tuple) else 1
    assert vdi_bytes(multi.target, image_id) == payloads[winner]


def test_not_found(glance, new_name):
    host, port = split_address(glance.target.address)
    uri = f"sheepdog://{host}:{port}:{new_name('sf-missing')}"
    for op in (glance.get, glance.get_size, glance.delete):
        with pytest.raises(exceptions.NotFound):
            op(uri)


@pytest.mark.parametrize("thin", [True, False])
def test_thin_provisioning_writes_only_non_zero_objects(
    monkeypatch, tmp_path, target, kind, new_name, thin
):
    g = make_multi(monkeypatch, tmp_path, target, kind, sheepdog_thin_provisioning=thin)
    objects = 6
    zero = {1, 2, 5}
    data = image_bytes(objects * OBJECT_MIB * MiB, zero_objects=zero)
    image_id = g.new_id(new_name)
    target.names.append(image_id)
    uri, size, md5, _, _ = g.add(image_id, io.BytesIO(data), 0 if thin else len(data))
    assert md5 == hashlib.md5(data).hexdigest()  # zeros are hashed all the same
    with sheepfast.connect(target.address) as c, c.open(image_id) as vdi:
        used, _ = vdi.usage()
        vid = vdi.vid
    written = objects - len(zero) if thin else objects
    assert used == written * OBJECT_MIB * MiB
    if target.is_fake:
        indexes = {oid & 0xFFFFFFFF for oid in target.fake.object_ids() if oid >> 32 == vid}
        assert indexes == (set(range(objects)) - zero if thin else set(range(objects)))
    assert vdi_bytes(target, image_id) == data


@pytest.mark.parametrize("algo", ["sha512", "sha256", "md5"])
def test_checksums_and_verifier_per_chunk(multi, new_name, algo):
    data = image_bytes(SIZE)
    verifier = RecordingVerifier()
    _, _, md5, multihash, _ = multi.add(
        multi.new_id(new_name), io.BytesIO(data), SIZE, hashing_algo=algo, verifier=verifier
    )
    assert md5 == hashlib.md5(data).hexdigest()
    assert multihash == hashlib.new(algo, data).hexdigest()
    assert [len(c) for c in verifier.chunks] == [CHUNK, CHUNK, CHUNK, 12345]
    assert b"".join(verifier.chunks) == data


def test_verifier_failure_leaves_no_vdi(multi, new_name):
    class Refusing:
        calls = 0

        def update(self, data):
            Refusing.calls += 1
            if Refusing.calls == 2:
                raise ValueError("signature does not match")

    image_id = multi.new_id(new_name)
    with pytest.raises(ValueError, match="signature"):
        multi.add(image_id, io.BytesIO(image_bytes(SIZE)), SIZE, verifier=Refusing())
    assert no_vdi(multi.target, image_id)


@pytest.mark.parametrize("known", [True, False], ids=["known-size", "unknown-size"])
def test_memory_is_bounded_for_read_only_sources(multi, new_name, known):
    """A read()-only source (Glance's readers): whole-chunk pieces are
    written as they are, and no more than two are held at once."""
    chunks = 6
    source = WatchedSource(chunks * CHUNK, CHUNK)
    multi.add(multi.new_id(new_name), source, chunks * CHUNK if known else 0)
    assert source.pieces == chunks
    assert source.max_alive <= 3  # two in the pipeline, one just read


def test_readinto_fills_two_reused_buffers(multi, new_name):
    data = image_bytes(5 * CHUNK)
    source = BufferWatchingSource(data)
    image_id = multi.new_id(new_name)
    multi.add(image_id, source, len(data))
    assert len(source.buffers) == 2
    assert vdi_bytes(multi.target, image_id) == data


def test_failing_cleanup_does_not_mask_the_error(multi, new_name, monkeypatch, caplog):
    image_id = multi.new_id(new_name)

    def broken_delete(self):
        raise sheepfast.ConnectionError("gateway went away during cleanup")

    monkeypatch.setattr(driver.SheepdogImage, "discard", broken_delete)
    with caplog.at_level(logging.ERROR, logger="sheepfast.glance"):
        with pytest.raises(exceptions.Invalid, match="declared"):
            multi.add(image_id, io.BytesIO(image_bytes(SIZE)), SIZE + 1)
        with pytest.raises(Boom):
            multi.add(multi.new_id(new_name), FailingSource(image_bytes(SIZE), CHUNK), SIZE)
    messages = [r.getMessage() for r in caplog.records]
    assert sum("Could not delete the partial Sheepdog image" in m for m in messages) == 2
    assert any(r.exc_info and "gateway went away" in str(r.exc_info[1]) for r in caplog.records)


def test_bad_image_size_is_forbidden(multi, new_name):
    image_id = multi.new_id(new_name)
    for bad in ("test", -1, 1.5):
        with pytest.raises(exceptions.Forbidden):
            multi.store.add(image_id, io.BytesIO(b"xx"), bad, "sha256")
    assert no_vdi(multi.target, image_id)


@pytest.mark.parametrize("image_id", ["-rf", "two words", "x" * 256, ""])
def test_invalid_image_ids_are_refused(multi, image_id):
    with pytest.raises(exceptions.Invalid):
        multi.store.add(image_id, io.BytesIO(b"xx"), 2, "sha256")


def test_foreign_locations_are_refused_without_connecting(multi):
    started = time.monotonic()
    for uri in ("sheepdog://192.0.2.1:7000:img", "sheepdog://[2001:db8::1]:7000:img"):
        for op in (multi.get, multi.get_size, multi.delete):
            with pytest.raises(exceptions.BadStoreUri):
                op(uri)
    store = multi.store
    loc = glance_location.Location(
        "sheepdog",
        driver.StoreLocation,
        multi.conf,
        store_specs={"addr": "192.0.2.1", "port": 7000, "image": "img"},
        backend=multi.backend,
    )
    with pytest.raises(exceptions.BadStoreUri):
        store.get_size(loc)  # built from specs: the store checks too
    assert time.monotonic() - started < 5


def test_allowed_external_location_reaches_that_cluster(monkeypatch, tmp_path, target, kind):
    g = make_multi(
        monkeypatch, tmp_path, target, kind, sheepdog_store_allow_external_locations=True
    )
    with pytest.raises(exceptions.BackendException):
        g.get_size("sheepdog://127.0.0.1:1:img")  # nothing listens there


def test_extra_gateway_locations_use_the_shared_backend(
    monkeypatch, tmp_path, target, kind, new_name
):
    host, port = split_address(target.address)
    if host not in ("127.0.0.1", "localhost"):
        pytest.skip("needs a loopback cluster to name it twice")
    other = "localhost" if host == "127.0.0.1" else "127.0.0.1"
    g = make_multi(
        monkeypatch, tmp_path, target, kind, sheepdog_store_extra_addresses=[f"{other}:{port}"]
    )
    data = image_bytes(1000)
    image_id = g.new_id(new_name)
    target.names.append(image_id)
    g.add(image_id, io.BytesIO(data), len(data))
    assert g.read_all(f"sheepdog://{other}:{port}:{image_id}") == data


def test_url_prefix_and_schemes(multi):
    host, port = split_address(multi.target.address)
    assert multi.store.url_prefix == f"sheepdog://{host}:{port}:"
    assert multi.store.get_schemes() == ("sheepdog",)
    assert multi.store.EXAMPLE_URL == "sheepdog://addr:port:image"


# ---------------------------------------------------------------- FakeSheep only


@pytest.fixture
def fake_multi(multi):
    if not multi.target.is_fake:
        pytest.skip("fault injection needs FakeSheep")
    return multi


@pytest.mark.parametrize(
    "result, error",
    [
        (0x15, exceptions.StorageFull),  # NO_SPACE
        (0x03, exceptions.BackendException),  # EIO
    ],
)
def test_server_error_mid_upload(fake_multi, new_name, result, error):
    image_id = fake_multi.new_id(new_name)
    fake = fake_multi.target.fake
    fake.fail_nth(3, result, opcode=wire.OP_CREATE_AND_WRITE_OBJ)
    with pytest.raises(error) as info:
        fake_multi.add(image_id, io.BytesIO(image_bytes(SIZE)), SIZE)
    fake.clear_faults()
    assert isinstance(info.value.__cause__, sheepfast.ServerError)
    assert no_vdi(fake_multi.target, image_id)


def test_cleanup_failing_on_the_server_keeps_the_original_error(fake_multi, new_name, caplog):
    image_id = fake_multi.new_id(new_name)
    fake = fake_multi.target.fake
    fake.fail_nth(3, 0x15, opcode=wire.OP_CREATE_AND_WRITE_OBJ)
    fake.fail_nth(1, 0x03, opcode=wire.OP_DEL_VDI)
    with caplog.at_level(logging.ERROR, logger="sheepfast.glance"):
        with pytest.raises(exceptions.StorageFull):
            fake_multi.add(image_id, io.BytesIO(image_bytes(SIZE)), SIZE)
    fake.clear_faults()
    assert any(
        "Could not delete the partial Sheepdog image" in r.getMessage() for r in caplog.records
    )
    assert not no_vdi(fake_multi.target, image_id)  # left behind, and said so


def test_lookups_never_scan_the_cluster(fake_multi, new_name):
    """get, get_size, delete and add address the VDI by name: no READ_VDIS
    (the bitmap of every VDI) and no inode reads of other VDIs."""
    if fake_multi.kind != "native":
        pytest.skip("dog itself lists every VDI to find one")
    fake = fake_multi.target.fake
    data = image_bytes(CHUNK)
    image_id = fake_multi.new_id(new_name)
    fake.reset_request_counts()
    uri = fake_multi.add(image_id, io.BytesIO(data), 0)[0]
    fake_multi.get_size(uri)
    assert fake_multi.read_all(uri) == data
    fake_multi.delete(uri)
    counts = fake.request_counts()
    assert counts.get(wire.OP_READ_VDIS, 0) == 0
    assert counts.get(wire.OP_GET_VDI_INFO, 0) <= 5


def test_ipv6_cluster(monkeypatch, tmp_path, target, kind, new_name):
    from conftest import Target

    from sheepfast.testing import FakeSheep

    if not target.is_fake:
        pytest.skip("runs its own FakeSheep on ::1")

    try:
        sheep = FakeSheep(host="::1").start()
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback: {exc}")
    with sheep:
        target = Target("fake", sheep.address, fake=sheep)
        g = make_multi(monkeypatch, tmp_path, target, kind)
        data = image_bytes(CHUNK + 1)
        image_id = new_name("sf-v6")
        uri = g.add(image_id, io.BytesIO(data), 0)[0]
        assert uri.startswith("sheepdog://[::1]:")
        assert g.read_all(uri) == data
        assert g.read_all(f"sheepdog://{image_id}") == data
        g.delete(uri)
