"""The glance_store driver for Sheepdog: Store, StoreLocation, ImageIterator.

A drop-in replacement for the driver glance_store removed in 2019, with its
option names, URI form and classes, registered through the
``glance_store.drivers`` entry point as ``sheepdog`` (and the old
``glance.store.sheepdog.Store``)::

    [DEFAULT]
    enabled_backends = sheep:sheepdog        # multi-store, or
    [glance_store]
    stores = sheepdog                        # single-store
    default_store = sheepdog
    sheepdog_store_address = 10.0.0.1
    sheepdog_store_port = 7000

Locations are ``sheepdog://addr:port:image`` (``sheepdog://[v6]:port:image``
for IPv6; the image name may itself contain ':'), and the legacy
``sheepdog://image``, which means the configured cluster.

Data moves through one shared backend per store (one connection pool), see
sheepfast.image.SheepdogImage.upload for how add() overlaps reading and
hashing with the writes. sheepfast errors become glance_store exceptions
(:func:`glance_error`), with the original as ``__cause__``; add() never
leaves a partial VDI behind.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
from typing import Any, Iterator, Optional, Tuple

# glance_store ships no type information: its names are Any here
import glance_store.driver  # type: ignore[import-untyped]
import glance_store.location  # type: ignore[import-untyped]
from glance_store import capabilities, exceptions
from glance_store.common import utils  # type: ignore[import-untyped]
from oslo_config import cfg
from oslo_utils import units

from sheepfast import defaults, errors
from sheepfast.address import (
    DEFAULT_PORT,
    EXAMPLE_LOCATION,
    LOCATION_PREFIX,
    SCHEME,
    check_host,
    check_name,
    check_port,
    format_address,
    format_addresses,
    format_location,
    gateway_key,
    parse_address,
    parse_location,
)
from sheepfast.backends import KINDS, Backend, Capability, open_backend, resolve_kind
from sheepfast.image import FIRST_PIECE, ChunkReader, SheepdogImage, check_size

__all__ = [
    "DEFAULT_ADDR",
    "DEFAULT_CHUNKSIZE",
    "DEFAULT_PORT",
    "EXAMPLE_URL",
    "ImageIterator",
    "OPTIONS",
    "SheepdogImage",
    "Store",
    "StoreLocation",
    "glance_error",
    "list_opts",
]

LOG = logging.getLogger(__name__)

DEFAULT_ADDR = defaults.DEFAULT_HOST
# MiB, as the option takes it. Existing configurations that set the removed
# driver's 64 keep working.
DEFAULT_CHUNKSIZE = defaults.DEFAULT_CHUNK_SIZE >> 20
PREFIX = LOCATION_PREFIX
EXAMPLE_URL = EXAMPLE_LOCATION
# MiB: 0 (the cluster's default), then every object size sheep allows
_OBJECT_SIZES = [0] + [
    1 << (shift - 20)
    for shift in range(defaults.MIN_BLOCK_SIZE_SHIFT, defaults.MAX_BLOCK_SIZE_SHIFT + 1)
]
_MAX_EXTERNAL_BACKENDS = 16

_SHEEPDOG_OPTS = [
    cfg.IntOpt(
        "sheepdog_store_chunk_size",
        min=1,
        default=DEFAULT_CHUNKSIZE,
        help=f"""
Chunk size for images stored in Sheepdog, in mebibytes (1048576 bytes).

Images are written to the Sheepdog cluster this many bytes at a time
(``add`` sends chunks of this size, rounded up to a whole number of
Sheepdog objects: 4 MiB unless ``sheepdog_store_object_size`` or the
cluster says otherwise), and read in pieces of at most this size and at
most {defaults.DOWNLOAD_PIECE_MAX >> 20} MiB (``get``: the first piece is small, so that the
first byte leaves early).

An upload holds at most two chunks in memory (one being written while the
next is read and hashed), a download three pieces (at most 24 MiB), so the
memory used per concurrent upload is about twice this value. Larger chunks
keep more object requests in flight per call; 16 or more is enough to
reach full speed. (The removed driver's default was 64.)

Possible values:
    * Positive integer value representing size in mebibytes.

Related Options:
    * sheepdog_store_io_depth
    * sheepdog_store_object_size
""",
    ),
    cfg.PortOpt(
        "sheepdog_store_port",
        default=DEFAULT_PORT,
        help=f"""
Port number of the Sheepdog gateway (the ``sheep`` daemon) to connect to.

Images are stored through the sheep listening on this port at
``sheepdog_store_address``. The default port is {DEFAULT_PORT}.

Possible values:
    * A valid port number (0 to 65535)

Related Options:
    * sheepdog_store_address
    * sheepdog_store_extra_addresses
""",
    ),
    cfg.HostAddressOpt(
        "sheepdog_store_address",
        default=DEFAULT_ADDR,
        help="""
Address of the Sheepdog gateway (the ``sheep`` daemon) to connect to.

Images are stored through the sheep at this address, listening on
``sheepdog_store_port``. New image locations name this address, and the
legacy form ``sheepdog://image`` refers to it.

Possible values:
    * A valid IPv4 address
    * A valid IPv6 address
    * A valid hostname

Related Options:
    * sheepdog_store_port
    * sheepdog_store_extra_addresses
    * sheepdog_store_allow_external_locations
""",
    ),
    cfg.ListOpt(
        "sheepdog_store_extra_addresses",
        default=[],
        help=f"""
More gateways of the same Sheepdog cluster, as ``host:port`` (IPv6 as
``[addr]:port``; the port defaults to {DEFAULT_PORT}).

With the native backend, I/O is spread over these gateways and the
driver fails over to them when ``sheepdog_store_address`` is unreachable.
Image locations naming any of them are accepted as the configured cluster.

Possible values:
    * A comma-separated list of host:port

Related Options:
    * sheepdog_store_address
    * sheepdog_store_allow_external_locations
""",
    ),
    cfg.StrOpt(
        "sheepdog_store_backend",
        default="auto",
        choices=KINDS,
        help="""
How the driver reaches the Sheepdog cluster.

``native`` uses sheepfast's C client, which speaks the Sheepdog protocol
itself (fast: many requests in flight, no extra copies). ``cli`` runs
the ``dog`` (or older ``collie``) command once per operation, as the
removed driver did; use it only where the extension cannot be built.
``auto`` picks ``native`` when the extension is available, else ``cli``.

Possible values:
    * auto
    * native
    * cli

Related Options:
    * sheepdog_store_dog_command
""",
    ),
    cfg.StrOpt(
        "sheepdog_store_dog_command",
        default="dog",
        help="""
The Sheepdog command-line tool the ``cli`` backend runs: ``dog``, or
``collie`` on Sheepdog releases before 0.9, as a name looked up on PATH
or as an absolute path. The driver refuses to enable ``add`` when the
command cannot be found.

Possible values:
    * A command name or path

Related Options:
    * sheepdog_store_backend
""",
    ),
    cfg.FloatOpt(
        "sheepdog_store_connect_timeout",
        default=defaults.DEFAULT_CONNECT_TIMEOUT,
        min=0.001,
        help="""
Seconds to wait for a connection to a Sheepdog gateway.

When no gateway answers within this time, the operation fails (and
the native backend tries the next gateway, if there is one).

Possible values:
    * A positive number of seconds

Related Options:
    * sheepdog_store_io_timeout
""",
    ),
    cfg.FloatOpt(
        "sheepdog_store_io_timeout",
        default=defaults.DEFAULT_IO_TIMEOUT,
        min=0.001,
        help="""
Seconds an I/O request may make no progress before it fails.

Applies to every request to the cluster (and, with the ``cli``
backend, to each run of the command). A request that times out fails
the operation; an ``add`` that fails this way deletes the partial image.

Possible values:
    * A positive number of seconds

Related Options:
    * sheepdog_store_connect_timeout
""",
    ),
    cfg.IntOpt(
        "sheepdog_store_io_depth",
        default=defaults.DEFAULT_DEPTH,
        min=1,
        max=defaults.MAX_DEPTH,
        help=f"""
Object requests the native backend keeps in flight per read or write.

More requests in flight hide network and disk latency, up to what the
cluster can serve. Each request carries at most
{defaults.DEFAULT_REQUEST_SIZE >> 10} KiB of an object; the default of
{defaults.DEFAULT_DEPTH} was the fastest measured on a 3-node cluster.
The ``cli`` backend runs one request at a time.

Possible values:
    * An integer from 1 to {defaults.MAX_DEPTH}

Related Options:
    * sheepdog_store_chunk_size
""",
    ),
    cfg.BoolOpt(
        "sheepdog_thin_provisioning",
        default=True,
        help="""
Do not write all-zero data when storing images.

Sheepdog reads objects that were never written as zeros, so leaving them
out stores the same image while saving space, network traffic and time
(OS images are often mostly zeros). Checksums are computed over the
full data either way.

Possible values:
    * True
    * False

Related Options:
    * None
""",
    ),
    cfg.BoolOpt(
        "sheepdog_store_snapshot_images",
        default=False,
        help=f"""
Snapshot each image once it is stored, so that a consumer can clone it.

With this on, ``add`` takes a snapshot tagged ``{defaults.GLANCE_SNAPSHOT_TAG}`` of the image
it stored (like the RBD store's snapshot of every image) and names it in
the location's metadata (``{defaults.GLANCE_SNAPSHOT_KEY}``). The location itself stays
``sheepdog://addr:port:image``, which every existing parser reads. Nova,
Cinder or any driver built on sheepfast can then make a copy-on-write
clone of the snapshot, in constant time, instead of copying the image.
When the snapshot cannot be taken, the upload fails and nothing is left.

Deleting an image deletes its snapshot too; clones made from it keep
their data (sheep counts the references), and the last clone to go frees
it.

Possible values:
    * True
    * False

Related Options:
    * None
""",
    ),
    cfg.IntOpt(
        "sheepdog_store_copies",
        default=0,
        min=0,
        max=defaults.MAX_COPIES,
        help=f"""
Number of copies kept of each new image's data.

0 uses the cluster's default (set by ``dog cluster format --copies``).
Existing images keep the redundancy they were created with.

Possible values:
    * 0, or a number of copies from 1 to {defaults.MAX_COPIES}

Related Options:
    * sheepdog_store_object_size
""",
    ),
    cfg.IntOpt(
        "sheepdog_store_object_size",
        default=0,
        choices=_OBJECT_SIZES,
        help=f"""
Object size of new images, in mebibytes.

A Sheepdog VDI is stored as objects of this size. 0 uses the cluster's
default ({1 << (defaults.DEFAULT_BLOCK_SIZE_SHIFT - 20)} MiB unless the
cluster was formatted otherwise). Larger objects mean fewer requests;
smaller ones less wasted space per partially used object.

Possible values:
    * 0, or a power of two from {_OBJECT_SIZES[1]} to {_OBJECT_SIZES[-1]}

Related Options:
    * sheepdog_store_chunk_size
    * sheepdog_store_copies
""",
    ),
    cfg.BoolOpt(
        "sheepdog_store_allow_external_locations",
        default=False,
        help="""
Accept image locations that name a Sheepdog gateway other than the ones
configured.

By default a location must name ``sheepdog_store_address``:
``sheepdog_store_port`` or one of ``sheepdog_store_extra_addresses``
(the legacy form ``sheepdog://image`` always does); others are refused
as bad locations, so that a location set through the API cannot make
Glance connect to an arbitrary host. Enable only when images live in
several Sheepdog clusters that all trust this Glance. Host names are
compared as written, without DNS lookups.

Possible values:
    * True
    * False

Related Options:
    * sheepdog_store_address
    * sheepdog_store_extra_addresses
""",
    ),
]

#: The driver's options (the removed driver's three first).
OPTIONS = _SHEEPDOG_OPTS


def list_opts() -> list[tuple[str, list[Any]]]:
    """oslo.config.opts hook: [(group, options)] for the sample config."""
    return [("glance_store", list(_SHEEPDOG_OPTS))]


# ---------------------------------------------------------------- errors


def glance_error(exc: BaseException, what: str) -> Any:
    """The glance_store exception for a sheepfast error about image `what`."""
    if isinstance(exc, errors.VdiNotFound):
        return exceptions.NotFound(message=f"Sheepdog image {what} does not exist")
    if isinstance(exc, errors.VdiExists):
        return exceptions.Duplicate(message=f"Sheepdog image {what} already exists")
    if isinstance(exc, (errors.NoSpace, errors.VdiSpaceFull)):
        return exceptions.StorageFull(
            message=f"Sheepdog cluster has no space for image {what}: {exc}"
        )
    if isinstance(exc, errors.OutOfRange):
        return exceptions.Invalid(message=f"Sheepdog image {what}: {exc}")
    if isinstance(exc, errors.VdiLocked):
        return exceptions.InUseByStore()
    return exceptions.BackendException(f"Sheepdog image {what}: {exc}")


@contextlib.contextmanager
def _translated(what: str) -> Iterator[None]:
    try:
        yield
    except errors.SheepfastError as exc:
        raise glance_error(exc, what) from exc


# ---------------------------------------------------------------- locations


class _StoreOptions:
    """Reads the driver's options for a store: its group, falling back to
    [backend_defaults] in multi-store mode, or [glance_store]."""

    def __init__(self, conf: Any, backend_group: Optional[str]):
        self.conf = conf
        self.backend_group = backend_group

    def __getattr__(self, name: str) -> Any:
        conf = object.__getattribute__(self, "conf")
        group = object.__getattribute__(self, "backend_group")
        if not group:
            return getattr(conf.glance_store, name)
        value = getattr(getattr(conf, group), name)
        if value is None:
            value = getattr(getattr(conf, glance_store.driver.SHARED_CONF_GROUP), name)
        return value


def _cluster_keys(opts: Any) -> set[tuple[str, int]]:
    """The gateways of the configured cluster, as gateway_key()s."""
    keys = {gateway_key(opts.sheepdog_store_address, opts.sheepdog_store_port)}
    for text in opts.sheepdog_store_extra_addresses or ():
        keys.add(gateway_key(*parse_address(text)))
    return keys


def _bad_uri(uri: object, reason: str) -> Any:
    LOG.info("Invalid Sheepdog location %r: %s", uri, reason)
    return exceptions.BadStoreUri(message=f"Invalid Sheepdog location {uri!r}: {reason}")


class StoreLocation(glance_store.location.StoreLocation):  # type: ignore[misc]
    """A Sheepdog location: ``sheepdog://addr:port:image``, or the legacy
    ``sheepdog://image`` (the configured address and port).

    The host and port are taken from the left (an IPv6 address in
    brackets); everything after the second ':' is the image name, which may
    contain ':'. A legacy name cannot contain ':' or start with '['.
    """

    image: Any = None
    addr: Any = None
    port: Any = None

    def process_specs(self) -> None:
        """Takes image, addr and port from the specs (absent ones stay None,
        for parse_uri to fill); BadStoreUri if one is not what a location
        can hold."""
        image, addr, port = (self.specs.get(k) for k in ("image", "addr", "port"))
        try:
            self.image = None if image is None else check_name(image)
            self.addr = None if addr is None else check_host(addr)
            self.port = None if port is None else check_port(port)
        except errors.InvalidArgument as exc:
            raise _bad_uri(f"{PREFIX}{addr}:{port}:{image}", str(exc)) from exc

    def get_uri(self) -> str:
        return format_location(self.addr, self.port, self.image)

    def _options(self) -> _StoreOptions:
        return _StoreOptions(self.conf, self.backend_group)

    def parse_uri(self, uri: object) -> None:
        if not isinstance(uri, str):
            raise _bad_uri(uri, f"a location is a str, not {type(uri).__name__}")
        self.validate_schemas(uri, valid_schemas=(PREFIX,))
        try:
            location = parse_location(uri)
        except errors.InvalidArgument as exc:
            raise _bad_uri(uri, str(exc)) from exc
        self.image = location.image
        if location.host is None:
            # The legacy form: just the image, on the configured cluster.
            opts = self._options()
            self.addr = opts.sheepdog_store_address
            self.port = int(opts.sheepdog_store_port)
            return
        self.addr, self.port = location.host, location.port
        self._check_cluster(uri)

    def _check_cluster(self, uri: str) -> None:
        """Refuses a location outside the configured cluster (unless allowed),
        when the options are there to tell; the Store checks again."""
        try:
            opts = self._options()
            if opts.sheepdog_store_allow_external_locations:
                return
            allowed = _cluster_keys(opts)
        except (cfg.NoSuchOptError, cfg.NoSuchGroupError, AttributeError, errors.InvalidArgument):
            return
        if gateway_key(self.addr, self.port) not in allowed:
            raise _bad_uri(
                uri,
                "it names a Sheepdog gateway outside the configured "
                "cluster (see sheepdog_store_allow_external_locations)",
            )


# ---------------------------------------------------------------- reading


class ImageIterator:
    """Reads a Sheepdog image one chunk at a time.

    ImageIterator(image) yields the whole image in image.chunk_size pieces,
    as the removed driver's did, after a short first few (ChunkReader).
    offset, length and chunk_size select a range and the piece size. It
    stops with an error, never loops, when the image turns out shorter than
    expected. close=True closes the image when the iteration ends or
    close() is called. start=True sends the first read at once, before the
    first next() (length must then be given).
    """

    def __init__(
        self,
        image: SheepdogImage,
        offset: int = 0,
        length: Optional[int] = None,
        chunk_size: Optional[int] = None,
        *,
        close: bool = False,
        start: bool = False,
    ):
        self.image = image
        self.offset = offset
        self.length = length
        self.chunk_size = chunk_size or image.chunk_size
        self._close = close
        self._reader: Optional[ChunkReader] = None
        if start:
            with _translated(image.name):
                self._reader = ChunkReader(image, offset, length, self.chunk_size)

    def __iter__(self) -> Iterator[bytes]:
        image = self.image
        try:
            with _translated(image.name):
                if self._reader is None:
                    self._reader = ChunkReader(image, self.offset, self.length, self.chunk_size)
                yield from self._reader
        finally:
            self.close()

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
        if self._close:
            self.image.close()


# ---------------------------------------------------------------- the store


class Store(glance_store.driver.Store):  # type: ignore[misc]
    """Sheepdog backend adapter."""

    _CAPABILITIES = (
        capabilities.BitMasks.READ_RANDOM
        | capabilities.BitMasks.WRITE_ACCESS
        | capabilities.BitMasks.DRIVER_REUSABLE
    )
    OPTIONS = _SHEEPDOG_OPTS
    EXAMPLE_URL = EXAMPLE_URL

    def __init__(self, conf: Any, backend: Optional[str] = None) -> None:
        super().__init__(conf, backend=backend)
        if self.backend_group:
            # Sets the group's defaults to None so [backend_defaults] shows
            # through, as the other drivers do.
            glance_store.driver.BackendGroupConfiguration(
                self.OPTIONS, self.backend_group, conf=self.conf
            )
        self.store_conf = _StoreOptions(self.conf, self.backend_group)
        self._lock = threading.Lock()
        self._backend: Optional[Backend] = None
        self._external: collections.OrderedDict[Tuple[str, int], Backend] = (
            collections.OrderedDict()
        )
        self._set_defaults()

    def _set_chunk_size(self, chunk_size: int) -> None:
        self.chunk_size = self.WRITE_CHUNKSIZE = chunk_size
        self.READ_CHUNKSIZE = min(chunk_size, defaults.DOWNLOAD_PIECE_MAX)

    def _set_defaults(self) -> None:
        self.addr = DEFAULT_ADDR
        self.port = DEFAULT_PORT
        self._set_chunk_size(DEFAULT_CHUNKSIZE * units.Mi)
        self.backend_kind = "auto"
        self.dog_command = "dog"
        self.extra_addresses: list[Tuple[str, int]] = []
        self.connect_timeout = defaults.DEFAULT_CONNECT_TIMEOUT
        self.io_timeout = defaults.DEFAULT_IO_TIMEOUT
        self.io_depth = defaults.DEFAULT_DEPTH
        self.thin_provisioning = True
        self.snapshot_images = False
        self.copies = 0
        self.block_size_shift = 0
        self.allow_external = False
        self._cluster = {gateway_key(self.addr, self.port)}
        # Until configure_add succeeds, nothing is sent anywhere (not to the
        # default address either).
        self._config_error: Optional[str] = "the store is not configured"

    def get_schemes(self) -> tuple[str, ...]:
        return (SCHEME,)

    def _set_url_prefix(self) -> None:
        self._url_prefix = f"{PREFIX}{format_address(self.addr, self.port)}:"

    def configure_add(self) -> None:
        """Reads the options; BadStoreConfiguration (which disables add) if
        they are wrong or the chosen backend cannot run here. Does not
        connect: a cluster that is down at start-up is found out, and
        reported, by the first request."""
        opts = self.store_conf
        self._config_error = "the store configuration is being read"
        try:
            chunk_size = opts.sheepdog_store_chunk_size * units.Mi
            addr = check_host(opts.sheepdog_store_address)
            port = check_port(opts.sheepdog_store_port)
            extra = [parse_address(a) for a in opts.sheepdog_store_extra_addresses or ()]
            kind = (opts.sheepdog_store_backend or "auto").lower()
            dog_command = opts.sheepdog_store_dog_command or "dog"
            connect_timeout = float(opts.sheepdog_store_connect_timeout)
            io_timeout = float(opts.sheepdog_store_io_timeout)
            io_depth = int(opts.sheepdog_store_io_depth)
            thin = bool(opts.sheepdog_thin_provisioning)
            snapshot_images = bool(opts.sheepdog_store_snapshot_images)
            copies = int(opts.sheepdog_store_copies or 0)
            object_mib = int(opts.sheepdog_store_object_size or 0)
            allow_external = bool(opts.sheepdog_store_allow_external_locations)
        except (cfg.ConfigFileValueError, ValueError, errors.InvalidArgument) as e:
            raise self._bad_config(f"Error in store configuration: {e}") from e
        if kind not in KINDS:
            raise self._bad_config(f"sheepdog_store_backend must be one of {KINDS}")
        try:
            kind = resolve_kind(kind, dog_command)
        except errors.InvalidArgument as e:
            raise self._bad_config(f"sheepdog_store_backend = {kind}: {e}") from e

        self._close_backends()
        self._set_chunk_size(chunk_size)
        self.addr, self.port = addr, port
        self.extra_addresses = extra
        self.backend_kind = kind
        self.dog_command = dog_command
        self.connect_timeout, self.io_timeout, self.io_depth = connect_timeout, io_timeout, io_depth
        self.thin_provisioning = thin
        self.snapshot_images = snapshot_images
        self.copies = copies
        self.block_size_shift = object_mib.bit_length() - 1 + 20 if object_mib else 0
        self.allow_external = allow_external
        self._cluster = {gateway_key(addr, port)} | {gateway_key(h, p) for h, p in extra}
        self._set_url_prefix()
        self._config_error = None

    def _bad_config(self, reason: str) -> Any:
        LOG.error(reason)
        self._config_error = reason
        return exceptions.BadStoreConfiguration(
            store_name=self.backend_group or SCHEME, reason=reason
        )

    # ------------------------------------------------------------ backends

    def _check_configured(self) -> None:
        if self._config_error is not None:
            raise exceptions.BackendException(
                f"Sheepdog store {self.backend_group or SCHEME}: {self._config_error}"
            )

    def _open_backend(self, addresses: str) -> Backend:
        self._check_configured()
        return open_backend(
            addresses,
            self.backend_kind,
            connect_timeout=self.connect_timeout,
            io_timeout=self.io_timeout,
            depth=self.io_depth,
            dog_command=self.dog_command,
        )

    def _shared_backend(self) -> Backend:
        """The configured cluster's backend, opened on first use and shared
        by every request (thread-safe: one connection pool)."""
        with self._lock:
            if self._backend is None:
                gateways = [(self.addr, self.port)] + list(self.extra_addresses)
                with _translated(f"store {format_address(self.addr, self.port)}"):
                    self._backend = self._open_backend(format_addresses(gateways))
            return self._backend

    def _backend_for(self, addr: str, port: int, uri: str) -> Backend:
        self._check_configured()
        key = gateway_key(addr, port)
        if key in self._cluster:
            return self._shared_backend()
        if not self.allow_external:
            raise _bad_uri(
                uri,
                "it names a Sheepdog gateway outside the configured "
                "cluster (see sheepdog_store_allow_external_locations)",
            )
        with self._lock:
            backend = self._external.get(key)
            if backend is not None:
                self._external.move_to_end(key)
                return backend
        with _translated(f"location {uri}"):
            backend = self._open_backend(format_address(addr, port))
        with self._lock:
            self._external[key] = backend
            # Dropped, not closed: a request may still be using it; the
            # connections go when the last reference does.
            while len(self._external) > _MAX_EXTERNAL_BACKENDS:
                self._external.popitem(last=False)
        return backend

    def _close_backends(self) -> None:
        with self._lock:
            backends = [self._backend] + list(self._external.values())
            self._backend = None
            self._external.clear()
        for backend in backends:
            if backend is not None:
                try:
                    backend.close()
                except Exception:  # closing must not stop reconfiguration
                    LOG.debug("closing a Sheepdog backend failed", exc_info=True)

    def _image(self, location: Any) -> SheepdogImage:
        """The SheepdogImage a location names, after checking it."""
        loc = location.store_location
        uri = f"{PREFIX}{getattr(loc, 'addr', None)}:{getattr(loc, 'image', None)}"
        try:
            name = check_name(loc.image)
            addr = check_host(loc.addr)
            port = check_port(loc.port)
        except errors.InvalidArgument as exc:
            raise _bad_uri(uri, str(exc)) from exc
        uri = format_location(addr, port, name)
        backend = self._backend_for(addr, port, uri)
        return SheepdogImage(
            addr, port, name, self.READ_CHUNKSIZE, backend=backend, thin=self.thin_provisioning
        )

    # ------------------------------------------------------------ operations

    @capabilities.check  # type: ignore[untyped-decorator]
    def get(
        self,
        location: Any,
        offset: int = 0,
        chunk_size: Optional[int] = None,
        context: Any = None,
    ) -> tuple[ImageIterator, int]:
        """
        Takes a `glance_store.location.Location` object that indicates
        where to find the image file, and returns a tuple of generator
        (for reading the image file) and the number of bytes it yields.

        :param location: `glance_store.location.Location` object, supplied
                        from glance_store.location.get_location_from_uri()
        :param offset: where to start reading
        :param chunk_size: how many bytes to read (None: to the end)
        :raises: `glance_store.exceptions.NotFound` if image does not exist
        """
        image = self._image(location)
        try:
            with _translated(image.name):
                # its inode, after a lookup by name unless the name is known;
                # from the start, the first piece may travel with the inode
                size = image.open(read_ahead=0 if offset else FIRST_PIECE).size
        except BaseException:
            image.close()
            raise
        try:
            start = min(check_size(offset or 0, "offset"), size)
            length = size - start
            if chunk_size:
                length = min(check_size(chunk_size, "chunk_size"), length)
            iterator = ImageIterator(
                image,
                offset=start,
                length=length,
                chunk_size=self.READ_CHUNKSIZE,
                close=True,
                start=True,  # the first piece travels while Glance builds its response
            )
        except errors.InvalidArgument as exc:
            image.close()
            raise exceptions.Invalid(message=f"Sheepdog image {image.name}: {exc}") from exc
        except BaseException:
            image.close()
            raise
        return iterator, length

    def get_size(self, location: Any, context: Any = None) -> int:
        """
        Takes a `glance_store.location.Location` object that indicates
        where to find the image file and returns the image size

        :param location: `glance_store.location.Location` object, supplied
                        from glance_store.location.get_location_from_uri()
        :raises: `glance_store.exceptions.NotFound` if image does not exist
        :rtype: int
        """
        image = self._image(location)
        try:
            with _translated(image.name):
                return image.get_size()
        finally:
            image.close()

    @glance_store.driver.back_compat_add  # type: ignore[untyped-decorator]
    @capabilities.check  # type: ignore[untyped-decorator]
    def add(
        self,
        image_id: str,
        image_file: Any,
        image_size: Optional[int],
        hashing_algo: str,
        context: Any = None,
        verifier: Any = None,
    ) -> tuple[str, int, str, str, dict[str, str]]:
        """
        Stores an image file with supplied identifier to the backend
        storage system and returns a tuple containing information
        about the stored image.

        :param image_id: The opaque image identifier
        :param image_file: The image data to write, as a file-like object
        :param image_size: The size of the image data to write, in bytes
                           (0: not known in advance)
        :param hashing_algo: A hashlib algorithm identifier (string)
        :param context: A context object
        :param verifier: An object used to verify signatures for images

        :returns: tuple of: (1) URL in backing store, (2) bytes written,
                  (3) checksum, (4) multihash value, and (5) a dictionary
                  with storage system specific information
        :raises: `glance_store.exceptions.Duplicate` if the image already
                 exists
        :raises: `glance_store.exceptions.Invalid` if the data is longer
                 or shorter than image_size
        """
        name = str(image_id)
        try:
            check_name(name)
        except errors.InvalidArgument as exc:
            raise exceptions.Invalid(message=f"image id {name!r}: {exc}") from exc
        try:
            image_size = check_size(0 if image_size is None else image_size, "image_size")
        except errors.InvalidArgument as exc:
            # Forbidden, as the removed driver answered a size it could not use
            raise exceptions.Forbidden(f"Size is not a number of bytes: {exc}") from exc

        os_hash_value = utils.get_hasher(hashing_algo, False)
        checksum = utils.get_hasher("md5", False)

        image = SheepdogImage(
            self.addr,
            self.port,
            name,
            self.WRITE_CHUNKSIZE,
            backend=self._shared_backend(),
            thin=self.thin_provisioning,
        )
        try:
            with _translated(name):
                image.create(image_size, copies=self.copies, block_size_shift=self.block_size_shift)
        except BaseException:
            image.close()
            raise
        LOG.debug("Storing image %s (%s bytes) in Sheepdog", name, image_size or "unknown")

        # Each on a thread of its own, while this one reads and another
        # writes: hashlib releases the GIL, so they run in parallel.
        consumers = [checksum.update, os_hash_value.update]
        if verifier:
            consumers.append(verifier.update)
        try:
            bytes_written = image.upload(image_file, image_size, consumers=consumers)
            if self.snapshot_images:
                # as the RBD store: an image that cannot be snapshotted is
                # not stored
                image.backend.snapshot(name, defaults.GLANCE_SNAPSHOT_TAG)
        except BaseException as exc:
            self._discard(image)
            if isinstance(exc, errors.SheepfastError):
                raise glance_error(exc, name) from exc
            raise
        finally:
            image.close()

        location = StoreLocation(
            {"image": name, "addr": self.addr, "port": self.port},
            self.conf,
            backend_group=self.backend_group,
        )
        metadata = {}
        if self.backend_group:
            metadata["store"] = str(self.backend_group)
        if self.snapshot_images:
            metadata[defaults.GLANCE_SNAPSHOT_KEY] = defaults.GLANCE_SNAPSHOT_TAG
        return (
            location.get_uri(),
            bytes_written,
            checksum.hexdigest(),
            os_hash_value.hexdigest(),
            metadata,
        )

    @staticmethod
    def _discard(image: SheepdogImage) -> None:
        """Deletes a partial image; a failure is logged, never raised (the
        error that made the upload fail is the one that matters)."""
        try:
            gone = image.discard()
        except Exception:
            LOG.exception(
                "Could not delete the partial Sheepdog image %s; it keeps "
                "its upload mark, for 'sheepfast reclaim' to find",
                image.name,
            )
            return
        if not gone:
            LOG.error(
                "Could not delete the partial Sheepdog image %s now; it keeps "
                "its upload mark, for 'sheepfast reclaim' to find",
                image.name,
            )

    @capabilities.check  # type: ignore[untyped-decorator]
    def delete(self, location: Any, context: Any = None) -> None:
        """
        Takes a `glance_store.location.Location` object that indicates
        where to find the image file to delete

        :param location: `glance_store.location.Location` object, supplied
                  from glance_store.location.get_location_from_uri()

        :raises: NotFound if image does not exist
        """
        image = self._image(location)
        try:
            with _translated(image.name):
                self._delete_image(image)
        finally:
            image.close()

    @staticmethod
    def _delete_image(image: SheepdogImage) -> None:
        """The snapshot add() took of the image (whether or not
        sheepdog_store_snapshot_images is on now), then the image: a
        failure between the two leaves the image whole, and deleting again
        finishes. Clones of the snapshot keep their data; sheep frees the
        shared objects with the last of them. VdiNotFound only when neither
        was there."""
        found = False
        backend = image.backend
        if Capability.SNAPSHOTS in backend.capabilities:
            try:
                backend.delete(image.name, snapshot=defaults.GLANCE_SNAPSHOT_TAG)
                found = True
            except errors.VdiNotFound:
                pass
        try:
            image.delete()
            found = True
        except errors.VdiNotFound:
            pass  # an earlier delete may have stopped after the snapshot
        if not found:
            raise errors.VdiNotFound(f"VDI {image.name!r} not found", 0x08)
