# cython: language_level=3, boundscheck=False, wraparound=False
"""Binding of the C core (src_c/) to Python.

The GIL pattern everywhere: turn arguments into C locals, release the GIL only
around the blocking C call, then raise from the sf_error it filled:

    with self._guard:           # refuses a closed handle; close() waits for it
        with nogil:
            rc = sf_...(self._c, ..., &err)
    _check(rc, &err)

Buffers cross with the buffer protocol, so bytes move between the socket and
the caller's memory with no copy here. Ranges (depth, copies, shifts, sizes)
are checked by the C core alone; the binding only refuses what does not fit
the C type.
"""

from cpython.buffer cimport (PyBUF_ANY_CONTIGUOUS, PyBUF_WRITABLE, PyBuffer_Release,
                             PyObject_GetBuffer)
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.limits cimport INT_MAX, UINT_MAX
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.string cimport memset

from cpython.object cimport PyObject
from cpython.ref cimport Py_REFCNT

from sheepfast.c_sheepfast cimport *

cdef extern from *:
    """
    /* A bytes object about to be refilled must forget the hash of its old
     * contents (ob_shash is deprecated as API, not as a field). */
    static inline void sf_bytes_forget_hash(PyObject *o)
    {
    #if defined(__GNUC__)
    #pragma GCC diagnostic push
    #pragma GCC diagnostic ignored "-Wdeprecated-declarations"
    #endif
        ((PyBytesObject *)o)->ob_shash = -1;
    #if defined(__GNUC__)
    #pragma GCC diagnostic pop
    #endif
    }
    """
    void sf_bytes_forget_hash(PyObject *o)

# bytes objects a recycling reader keeps for reuse
MAX_RECYCLED = 4

import operator
import threading

from sheepfast import errors as _errors
from sheepfast.types import ClusterDefaults, LockInfo, ParentInfo, VdiInfo

__all__ = ["Cluster", "Vdi", "version"]

# Defaults and limits, from their one home in sheepfast.h.
DEFAULT_PORT = SF_DEFAULT_PORT
#: seconds
DEFAULT_CONNECT_TIMEOUT = SF_DEFAULT_CONNECT_TIMEOUT_MS / 1000.0
#: seconds without progress before a call fails
DEFAULT_IO_TIMEOUT = SF_DEFAULT_IO_TIMEOUT_MS / 1000.0
#: object requests in flight per call
DEFAULT_DEPTH = SF_DEFAULT_DEPTH
MAX_DEPTH = SF_MAX_DEPTH
#: the longest VDI name in bytes
NAME_MAX = SF_NAME_MAX
MAX_COPIES = SF_MAX_COPIES
#: objects are 1 << block_size_shift bytes
DEFAULT_BLOCK_SIZE_SHIFT = SF_DEFAULT_BLOCK_SIZE_SHIFT
MIN_BLOCK_SIZE_SHIFT = SF_MIN_BLOCK_SIZE_SHIFT
MAX_BLOCK_SIZE_SHIFT = SF_MAX_BLOCK_SIZE_SHIFT
#: bytes per object request: below the 512 KiB where sheep 1.0's malloc maps
#: fresh memory for every buffer (see SF_DEFAULT_REQUEST_SIZE in sheepfast.h)
DEFAULT_REQUEST_SIZE = SF_DEFAULT_REQUEST_SIZE
#: VDI attributes (Vdi.metadata_*): the longest key in bytes (no NUL) and
#: the longest value, as sheep stores them (SF_ATTR_* in sheepfast.h)
ATTR_KEY_MAX = SF_ATTR_KEY_MAX
ATTR_VALUE_MAX = SF_ATTR_VALUE_MAX
#: the longest snapshot tag in bytes
TAG_MAX = SF_TAG_MAX
#: the most bytes Cluster.open(read_ahead=...) reads ahead: the smallest object
READ_AHEAD_MAX = SF_READ_AHEAD_MAX
#: lock kinds Cluster.open(lock=...) takes
LOCK_KINDS = ("exclusive", "shared")
#: what kind of failure a C call reported (sf_errcat in sheepfast.h), by
#: name; errors.from_status maps each to its class
ERROR_CATEGORIES = {
    "SF_E_INVALID": SF_E_INVALID,
    "SF_E_NOMEM": SF_E_NOMEM,
    "SF_E_RESOLVE": SF_E_RESOLVE,
    "SF_E_CONNECT": SF_E_CONNECT,
    "SF_E_IO": SF_E_IO,
    "SF_E_TIMEOUT": SF_E_TIMEOUT,
    "SF_E_PROTOCOL": SF_E_PROTOCOL,
    "SF_E_SERVER": SF_E_SERVER,
    "SF_E_UNSUPPORTED": SF_E_UNSUPPORTED,
    "SF_E_RANGE": SF_E_RANGE,
}


def version():
    """Version of the C core."""
    return sf_version().decode()


cdef object _raise(sf_error *err):
    raise _errors.from_status(<int>err.category, err.sys_errno, err.result,
                              err.message.decode("utf-8", "replace"))


cdef inline int _check(int rc, sf_error *err) except -1:
    """Raises what a failed C call reported."""
    if rc != SF_OK:
        _raise(err)
    return 0


cdef unsigned _c_uint(object value, str what, bint zero=True) except? 0:
    """value as a C unsigned: the C core checks its range; this refuses only
    what the type cannot carry, and 0 where C would read it as "the
    default" (zero=False: Python spells that by leaving the argument out)."""
    value = operator.index(value)
    if value < 0:
        raise _errors.InvalidArgument(f"{what} must not be negative (got {value})")
    if value == 0 and not zero:
        raise _errors.InvalidArgument(f"{what} must be positive (got 0)")
    if value > UINT_MAX:
        raise _errors.InvalidArgument(f"{what} {value} is too large")
    return <unsigned>value


cdef int _timeout_ms(object seconds, str what) except -1:
    """A timeout in seconds as the C core's whole milliseconds (at least 1:
    0 would mean the default there)."""
    seconds = float(seconds)
    if not seconds > 0:  # NaN too
        raise _errors.InvalidArgument(f"{what} must be a positive number of seconds (got {seconds!r})")
    if seconds * 1000 > INT_MAX:
        raise _errors.InvalidArgument(f"{what} {seconds!r} s is too long")
    return max(1, <int>(seconds * 1000))


cdef bytes _name_bytes(object name):
    """A VDI name as the bytes sheep stores: str is UTF-8 (undecodable bytes
    round-trip through surrogateescape); bytes are taken as they are."""
    if isinstance(name, str):
        return (<str>name).encode("utf-8", "surrogateescape")
    if isinstance(name, (bytes, bytearray, memoryview)):
        return bytes(name)
    raise TypeError(f"VDI name must be str or bytes, not {type(name).__name__}")


cdef bytes _attr_bytes(object value, str what):
    """An attribute key or value as bytes: str is UTF-8, bytes-like as it is."""
    if isinstance(value, str):
        return (<str>value).encode("utf-8", "surrogateescape")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"attribute {what} must be str or bytes, not {type(value).__name__}")


cdef int _check_attr(int rc, sf_error *err) except -1:
    # NO_OBJ from an attribute call means the key is not there
    if rc != SF_OK and err.category == SF_E_SERVER and err.result == SF_RES_NO_OBJ:
        raise _errors.AttributeNotFound(err.message.decode("utf-8", "replace"), err.result)
    return _check(rc, err)


cdef str _name_str(const char *raw):
    return raw.decode("utf-8", "surrogateescape")


cdef uint64_t _uint64(object value, str what) except? 0:
    value = int(value)
    if value < 0:
        raise _errors.OutOfRange(f"{what} must not be negative (got {value})")
    if value >= 1 << 64:
        raise _errors.OutOfRange(f"{what} {value} does not fit in 64 bits")
    return <uint64_t>value


cdef object _info(const sf_vdi_info *i, object parent=None):
    return VdiInfo(
        name=_name_str(i.name),
        vid=i.vid,
        size=i.size,
        block_size_shift=i.block_size_shift,
        copies=i.copies,
        copy_policy=i.copy_policy,
        store_policy=i.store_policy,
        snap_id=i.snap_id,
        tag=_name_str(i.tag),
        parent_vid=i.parent_vid,
        create_time=(i.create_time >> 32) + (i.create_time & 0xFFFFFFFF) / 1e9,
        snapshot=i.snap_ctime != 0,
        parent=parent,
    )


cdef object _parent_of(object info):
    """ParentInfo of the VDI a listed or looked-up VdiInfo describes."""
    return ParentInfo(name=info.name, vid=info.vid, snap_id=info.snap_id, tag=info.tag)


cdef class _SnapRef:
    """A snapshot selector as the C core takes it: a tag (str or bytes), a
    snap_id (int >= 1), or None for the working VDI. Keeps the tag's bytes
    alive while the C call runs."""
    cdef sf_snap_ref ref
    cdef bytes _tag

    def __cinit__(self, object snapshot):
        memset(&self.ref, 0, sizeof(self.ref))
        if snapshot is None:
            return
        if isinstance(snapshot, bool):
            raise TypeError("a snapshot is a tag (str or bytes) or a snap_id (int), not a bool")
        if isinstance(snapshot, int):
            if snapshot < 1 or snapshot > 0xFFFFFFFF:
                raise _errors.InvalidArgument(f"snapshot id must be 1..{0xFFFFFFFF} (got {snapshot})")
            self.ref.snap_id = <uint32_t>snapshot
            return
        if isinstance(snapshot, str):
            self._tag = (<str>snapshot).encode("utf-8", "surrogateescape")
        elif isinstance(snapshot, (bytes, bytearray, memoryview)):
            self._tag = bytes(snapshot)
        else:
            raise TypeError(f"a snapshot is a tag (str or bytes) or a snap_id (int), "
                            f"not {type(snapshot).__name__}")
        if not self._tag:
            raise _errors.InvalidArgument("snapshot tag is empty (use None for the working VDI)")
        self.ref.tag = self._tag
        self.ref.tag_len = len(self._tag)


cdef uint32_t _read_ahead(object value) except? 0:
    value = operator.index(value)
    if not 0 <= value <= READ_AHEAD_MAX:
        raise _errors.InvalidArgument(
            f"read_ahead must be 0..{READ_AHEAD_MAX} bytes (got {value})")
    return <uint32_t>value


cdef int _lock_type(object lock) except -1:
    if lock == "exclusive":
        return SF_LOCK_EXCLUSIVE
    if lock == "shared":
        return SF_LOCK_SHARED
    raise _errors.InvalidArgument(f"lock must be one of {', '.join(LOCK_KINDS)} (got {lock!r})")


cdef class _Guard:
    """Lets close() wait for calls running without the GIL in other threads
    instead of freeing memory under them."""
    cdef object _cond
    cdef int _active
    cdef bint closed
    cdef str _what

    def __cinit__(self, str what):
        self._cond = threading.Condition(threading.Lock())
        self._active = 0
        self.closed = False
        self._what = what

    cdef int enter(self) except -1:
        with self._cond:
            if self.closed:
                raise _errors.InvalidArgument(f"I/O operation on a closed {self._what}")
            self._active += 1
        return 0

    cdef void leave(self):
        with self._cond:
            self._active -= 1
            if self._active == 0:
                self._cond.notify_all()

    # `with guard:` around a C call; the call inside may release the GIL
    def __enter__(self):
        self.enter()

    def __exit__(self, *exc):
        self.leave()

    cdef bint close(self):
        """Marks closed and waits for running calls; False if already closed."""
        with self._cond:
            if self.closed:
                return False
            self.closed = True
            while self._active:
                self._cond.wait()
        return True


cdef class _Handle:
    """close()/closed/context manager, shared by Cluster and Vdi."""
    cdef _Guard _guard

    @property
    def closed(self):
        return self._guard is None or self._guard.closed

    def close(self):
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class deadline:
    """``with deadline(seconds):`` every call this thread makes inside the
    block ends by then, retries included (each call still ends within its
    cluster's io_timeout; nested blocks: the earliest end wins)."""

    def __init__(self, seconds):
        seconds = float(seconds)
        if not seconds > 0 or seconds != seconds or seconds == float("inf"):
            raise _errors.InvalidArgument(f"a deadline must be a positive number of seconds (got {seconds!r})")
        self.seconds = seconds
        self._saved = []

    def __enter__(self):
        self._saved.append(sf_deadline_begin(max(1, <int>min(self.seconds * 1000, INT_MAX))))
        return self

    def __exit__(self, *exc):
        sf_deadline_end(self._saved.pop())


cdef class Cluster(_Handle):
    """A connection pool to one Sheepdog cluster; safe to share between threads."""
    cdef sf_cluster *_c
    cdef readonly str addresses
    cdef readonly unsigned depth
    cdef readonly bint routing
    cdef readonly unsigned request_size
    cdef readonly double io_timeout

    def __cinit__(self, addresses, *, connect_timeout=DEFAULT_CONNECT_TIMEOUT,
                  io_timeout=DEFAULT_IO_TIMEOUT, depth=DEFAULT_DEPTH, routing=True,
                  request_size=DEFAULT_REQUEST_SIZE):
        cdef sf_options opt
        cdef sf_error err
        cdef bytes addr
        self._guard = _Guard("cluster")
        if isinstance(addresses, (list, tuple)):
            addresses = ",".join(str(a) for a in addresses)
        if not isinstance(addresses, str):
            raise _errors.InvalidArgument("cluster address must be 'host:port[,host:port...]'")
        addr = addresses.encode()
        memset(&opt, 0, sizeof(opt))
        opt.addresses = addr
        opt.connect_timeout_ms = _timeout_ms(connect_timeout, "connect_timeout")
        opt.io_timeout_ms = _timeout_ms(io_timeout, "io_timeout")
        opt.depth = _c_uint(depth, "depth", zero=False)
        opt.no_routing = not routing
        opt.request_size = _c_uint(request_size, "request_size", zero=False)
        with nogil:
            self._c = sf_cluster_open(&opt, &err)
        if self._c == NULL:
            _raise(&err)
        self.addresses = addresses
        self.depth = opt.depth
        self.request_size = opt.request_size
        self.io_timeout = opt.io_timeout_ms / 1000.0
        self.routing = bool(routing)

    def __dealloc__(self):
        if self._c != NULL:
            sf_cluster_close(self._c)
            self._c = NULL

    def close(self):
        """Releases the pool. VDIs opened from this cluster stay usable
        until they are closed themselves."""
        if self._guard.close():
            sf_cluster_close(self._c)
            self._c = NULL

    def __repr__(self):
        state = "closed" if self.closed else "open"
        return f"<sheepfast.Cluster {self.addresses!r} {state}>"

    @property
    def defaults(self):
        """Copies, copy policy and object size a VDI gets by default."""
        cdef sf_cluster_defaults d
        cdef sf_error err
        cdef int rc
        with self._guard:
            rc = sf_cluster_get_defaults(self._c, &d, &err)
        _check(rc, &err)
        return ClusterDefaults(d.copies, d.copy_policy, d.block_size_shift)

    @property
    def locking(self):
        """Whether sheep keeps VDI locks: a cluster formatted with
        ``dog cluster format -l``. Elsewhere every lock succeeds and
        locks() is always empty."""
        with self._guard:
            return bool(sf_cluster_flags(self._c) & SF_CLUSTER_USE_LOCK)

    @property
    def nodes(self):
        """Gateways known to the client: configured ones first, then those
        the cluster's node list named."""
        cdef char buf[SF_ADDRESS_LIST_MAX]
        cdef sf_error err
        cdef int rc
        with self._guard:
            rc = sf_cluster_nodes(self._c, buf, sizeof(buf), &err)
        _check(rc, &err)
        return buf.decode().split(",")

    def locate(self, oid, copies):
        """The sheep holding object oid when a VDI keeps `copies` replicas, in
        copy order, as the cluster places it ("host:port" strings). Object
        requests go to one of them. Raises Unsupported when the placement is
        not known (routing=False, or a disk-mode cluster)."""
        cdef uint64_t c_oid = _uint64(oid, "oid")
        cdef unsigned c_copies = _c_uint(copies, "copies")
        cdef char buf[SF_ADDRESS_LIST_MAX]
        cdef sf_error err
        cdef int rc
        with self._guard:
            rc = sf_cluster_locate(self._c, c_oid, c_copies, buf, sizeof(buf), &err)
        _check(rc, &err)
        return buf.decode().split(",")

    def create(self, name, size, *, copies=0, block_size_shift=0, copy_policy=0):
        """Creates a VDI of size bytes; returns its vid. Raises VdiExists
        (atomically: sheep checks and creates in one step)."""
        cdef bytes raw = _name_bytes(name)
        cdef const char *c_name = raw
        cdef size_t name_len = len(raw)
        cdef uint64_t c_size = _uint64(size, "size")
        cdef sf_create_options opt
        cdef sf_error err
        cdef uint32_t vid = 0
        cdef int rc
        opt.copies = _c_uint(copies, "copies")
        opt.copy_policy = _c_uint(copy_policy, "copy_policy")
        opt.block_size_shift = _c_uint(block_size_shift, "block_size_shift")
        with self._guard:
            with nogil:
                rc = sf_vdi_create(self._c, c_name, name_len, c_size, &opt, &vid, &err)
        _check(rc, &err)
        return vid

    def stat(self, name, *, snapshot=None):
        """VdiInfo of the working VDI called name, or of the snapshot of it
        that snapshot selects (a tag or a snap_id); O(1): no cluster scan.
        .parent names the snapshot it shares objects with, if any."""
        cdef bytes raw = _name_bytes(name)
        cdef const char *c_name = raw
        cdef size_t name_len = len(raw)
        cdef _SnapRef at = _SnapRef(snapshot)
        cdef sf_vdi_info info
        cdef sf_error err
        cdef int rc
        with self._guard:
            with nogil:
                rc = sf_vdi_stat_at(self._c, c_name, name_len, &at.ref, &info, &err)
        _check(rc, &err)
        return _info(&info, self._parent(info.parent_vid))

    cdef object _parent(self, uint32_t vid):
        """ParentInfo of vid, or None when there is none or it is gone."""
        cdef sf_vdi_info info
        cdef sf_error err
        cdef int rc
        if vid == 0:
            return None
        with self._guard:
            with nogil:
                rc = sf_vdi_stat_vid(self._c, vid, &info, &err)
        if rc != SF_OK and err.category == SF_E_SERVER:
            return None  # deleted: clones keep reading its objects all the same
        _check(rc, &err)
        return _parent_of(_info(&info))

    def exists(self, name, *, snapshot=None):
        try:
            self.stat(name, snapshot=snapshot)
        except _errors.VdiNotFound:  # SnapshotNotFound too
            return False
        return True

    def list(self):
        """Every live VDI (snapshots included, marked .snapshot), by name
        then snap_id; each with .parent when its parent is live."""
        cdef sf_vdi_info *infos = NULL
        cdef size_t count = 0, i
        cdef sf_error err
        cdef int rc
        with self._guard:
            with nogil:
                rc = sf_vdi_list(self._c, &infos, &count, &err)
        _check(rc, &err)
        try:
            plain = [_info(&infos[i]) for i in range(count)]
            by_vid = {v.vid: v for v in plain}
            return [_info(&infos[i], _parent_of(by_vid[infos[i].parent_vid])
                          if infos[i].parent_vid in by_vid else None)
                    for i in range(count)]
        finally:
            sf_free(infos)

    def delete(self, name, *, snapshot=None):
        """Removes the working VDI called name, or the snapshot of it that
        snapshot selects, and lets sheep reclaim the objects nothing else
        shares (the index is zeroed first: no zombie VDI is left). Clones of
        a deleted snapshot keep their data."""
        cdef bytes raw = _name_bytes(name)
        cdef const char *c_name = raw
        cdef size_t name_len = len(raw)
        cdef _SnapRef at = _SnapRef(snapshot)
        cdef sf_error err
        cdef int rc
        with self._guard:
            with nogil:
                rc = sf_vdi_delete_at(self._c, c_name, name_len, &at.ref, &err)
        _check(rc, &err)

    def open(self, name, *, snapshot=None, lock=None, read_ahead=0):
        """A Vdi handle: one GET_VDI_INFO and one inode-header read (only the
        inode read when this Cluster has looked the name up before).

        snapshot: a tag or snap_id opens that snapshot, read-only.
        lock: "exclusive" or "shared" takes sheep's lock first (VdiLocked
        when another holds it); close() or unlock() releases it. Sheep only
        keeps locks on a cluster formatted with ``dog cluster format -l``.
        read_ahead: a hint for a reader about to stream the VDI from its
        start: up to that many first bytes (at most READ_AHEAD_MAX) travel
        with the inode read when this Cluster saw the VDI's first object
        before, and the handle's first read, if it lies within them, takes
        them from memory (as they were at open) instead of asking sheep.
        """
        cdef int lock_type = -1 if lock is None else _lock_type(lock)
        cdef uint32_t ahead = _read_ahead(read_ahead)
        cdef Vdi vdi
        if lock_type >= 0:
            self._lock(name, snapshot, lock_type, False)
        try:
            vdi = Vdi._open(self, _name_bytes(name), _SnapRef(snapshot), ahead)
        except BaseException:
            if lock_type >= 0:
                self._lock(name, snapshot, lock_type, True)
            raise
        vdi._lock_type = lock_type
        return vdi

    cdef _lock(self, object name, object snapshot, int lock_type, bint release):
        cdef bytes raw = _name_bytes(name)
        cdef const char *c_name = raw
        cdef size_t name_len = len(raw)
        cdef _SnapRef at = _SnapRef(snapshot)
        cdef sf_error err
        cdef int rc
        with self._guard:
            with nogil:
                if release:
                    rc = sf_vdi_unlock(self._c, c_name, name_len, &at.ref, lock_type, &err)
                else:
                    rc = sf_vdi_lock(self._c, c_name, name_len, &at.ref, lock_type, &err)
        _check(rc, &err)

    # ------------------------------------------------- snapshots and clones

    def snapshot(self, name, tag=None):
        """Snapshots the working VDI called name; returns the snapshot's
        VdiInfo. Its vid is the one the working VDI had: handles opened
        before keep reading, and their writes fail with ReadOnly. A tag
        already taken is VdiExists."""
        cdef bytes raw = _name_bytes(name)
        cdef const char *c_name = raw
        cdef size_t name_len = len(raw)
        cdef bytes c_tag = b"" if tag is None else _attr_bytes(tag, "tag")
        cdef const char *t = c_tag
        cdef size_t tag_len = len(c_tag)
        cdef sf_vdi_info info
        cdef sf_error err
        cdef int rc
        with self._guard:
            with nogil:
                rc = sf_vdi_snapshot(self._c, c_name, name_len, t, tag_len, &info, &err)
        _check(rc, &err)
        return _info(&info, self._parent(info.parent_vid))

    def snapshots(self, name):
        """The snapshots of name, oldest first (a scan of the cluster's VDIs)."""
        wanted = _name_str(_name_bytes(name))
        return [i for i in self.list() if i.snapshot and i.name == wanted]

    def rollback(self, name, snapshot):
        """Makes the working VDI of name what snapshot (a tag or snap_id)
        held; returns the new working VDI. As `dog vdi rollback`: the current
        working VDI is deleted first, so after a failure run it again."""
        cdef bytes raw = _name_bytes(name)
        cdef const char *c_name = raw
        cdef size_t name_len = len(raw)
        cdef _SnapRef at = _snapshot_required(snapshot, "rollback")
        cdef sf_vdi_info info
        cdef sf_error err
        cdef int rc
        with self._guard:
            with nogil:
                rc = sf_vdi_rollback(self._c, c_name, name_len, &at.ref, &info, &err)
        _check(rc, &err)
        return _info(&info, self._parent(info.parent_vid))

    def clone(self, name, snapshot, new_name, *, size=None):
        """A new VDI new_name sharing the objects of name's snapshot (a tag
        or snap_id) until they are written: copy on write, in constant time.
        size: larger than the snapshot, or None for the same."""
        cdef bytes raw = _name_bytes(name)
        cdef const char *c_name = raw
        cdef size_t name_len = len(raw)
        cdef bytes raw_new = _name_bytes(new_name)
        cdef const char *c_new = raw_new
        cdef size_t new_len = len(raw_new)
        cdef _SnapRef at = _snapshot_required(snapshot, "clone")
        cdef uint64_t c_size = 0 if size is None else _uint64(size, "size")
        cdef sf_vdi_info info
        cdef sf_error err
        cdef int rc
        if size is not None and c_size == 0:
            raise _errors.InvalidArgument("a clone's size must be positive (or None for the snapshot's)")
        with self._guard:
            with nogil:
                rc = sf_vdi_clone(self._c, c_name, name_len, &at.ref, c_new, new_len, c_size,
                                  &info, &err)
        _check(rc, &err)
        return _info(&info, self._parent(info.parent_vid))

    def children(self, name, *, snapshot=None):
        """The clones of name's snapshot (or of the VDI snapshot=None
        selects): other VDIs whose parent it is (a scan)."""
        target = self.stat(name, snapshot=snapshot)
        return [i for i in self.list() if i.parent_vid == target.vid and i.name != target.name]

    # ------------------------------------------------------------------ locks

    def locks(self):
        """Every lock sheep holds, as LockInfo (none unless the cluster was
        formatted with -l)."""
        cdef sf_lock_info *infos = NULL
        cdef size_t count = 0, i
        cdef sf_error err
        cdef int rc
        with self._guard:
            with nogil:
                rc = sf_cluster_locks(self._c, &infos, &count, &err)
        _check(rc, &err)
        try:
            raw = [(infos[i].vid, infos[i].type,
                    tuple(infos[i].owners[k].decode() for k in range(infos[i].nr_owners)))
                   for i in range(count)]
        finally:
            sf_free(infos)
        if not raw:
            return []
        by_vid = {v.vid: v for v in self.list()}
        out = []
        for vid, kind, owners in raw:
            v = by_vid.get(vid)
            out.append(LockInfo(name=v.name if v else "", vid=vid, tag=v.tag if v else "",
                                snap_id=v.snap_id if v else 0,
                                state="shared" if kind == SF_LOCK_SHARED else "exclusive",
                                owners=owners))
        return out

    def break_lock(self, name, *, snapshot=None):
        """Force-releases the lock on the VDI, whoever holds it (as `dog vdi
        lock unlock`); for a shared lock, the participation of the sheep
        this request reaches."""
        target = self.stat(name, snapshot=snapshot)
        kind = SF_LOCK_EXCLUSIVE
        for held in self.locks():
            if held.vid == target.vid:
                kind = SF_LOCK_SHARED if held.state == "shared" else SF_LOCK_EXCLUSIVE
                break
        else:
            raise _errors.InvalidArgument(f"VDI {target.name!r} is not locked")
        self._lock(name, snapshot, kind, True)


cdef _SnapRef _snapshot_required(object snapshot, str doing):
    if snapshot is None:
        raise _errors.InvalidArgument(f"{doing} needs a snapshot: a tag or a snap_id")
    return _SnapRef(snapshot)


cdef class Vdi(_Handle):
    """An open VDI. Thread-safe: reads and writes may run concurrently."""
    cdef sf_vdi *_c
    cdef readonly Cluster cluster
    cdef readonly object info
    cdef bint _thin
    cdef int _lock_type  # -1: no lock taken by this handle

    def __cinit__(self):
        self._thin = True
        self._lock_type = -1

    def __init__(self, *args, **kwargs):
        raise TypeError("use Cluster.open() to open a VDI")

    @staticmethod
    cdef Vdi _open(Cluster cluster, bytes raw, _SnapRef at, uint32_t read_ahead):
        cdef Vdi self = Vdi.__new__(Vdi)
        cdef sf_error err
        cdef const char *c_name = raw
        cdef size_t name_len = len(raw)
        self._guard = _Guard("VDI")
        self.cluster = cluster
        with cluster._guard:
            with nogil:
                self._c = sf_vdi_open_read_ahead(cluster._c, c_name, name_len, &at.ref,
                                                 read_ahead, &err)
        if self._c == NULL:
            _raise(&err)
        self.info = _info(sf_vdi_get_info(self._c))
        return self

    def __dealloc__(self):
        if self._c != NULL:
            sf_vdi_close(self._c)
            self._c = NULL

    def close(self):
        """Waits for calls running in other threads, releases the lock this
        handle took, then frees the handle."""
        if self._guard is not None and self._guard.close():
            sf_vdi_close(self._c)
            self._c = NULL
            self._release()

    cdef _release(self):
        """Releases the lock this handle took, on the vid it took it on (a
        snapshot taken since gave the name a new working vid)."""
        cdef int kind = self._lock_type
        cdef uint32_t vid = self.info.vid
        cdef Cluster cluster = self.cluster
        cdef sf_error err
        cdef int rc
        self._lock_type = -1
        if kind < 0 or cluster.closed:
            return
        with cluster._guard:
            with nogil:
                rc = sf_vdi_unlock_vid(cluster._c, vid, kind, &err)
        _check(rc, &err)

    def unlock(self):
        """Releases the lock open(lock=...) took (InvalidArgument if none)."""
        if self._lock_type < 0:
            raise _errors.InvalidArgument(f"VDI {self.info.name!r} was not opened with a lock")
        self._release()

    @property
    def locked(self):
        """The lock this handle holds: "exclusive", "shared" or None."""
        return None if self._lock_type < 0 else LOCK_KINDS[self._lock_type]

    def __repr__(self):
        return f"<sheepfast.Vdi {self.info.name!r} vid={self.info.vid:#x} size={self.size}>"

    @property
    def name(self):
        return self.info.name

    @property
    def vid(self):
        return self.info.vid

    @property
    def size(self):
        # resize() changes it, so it is read from the handle each time
        with self._guard:
            return sf_vdi_size(self._c)

    @property
    def object_size(self):
        return 1 << self.info.block_size_shift

    @property
    def read_ahead_held(self):
        """Bytes from the start that open(read_ahead=...) brought along and
        the first read may still take from memory (0: none, or no longer)."""
        with self._guard:
            return sf_vdi_read_ahead_held(self._c)

    @property
    def thin(self):
        """Skip writing all-zero data to unallocated objects (default True)."""
        return self._thin

    @thin.setter
    def thin(self, value):
        with self._guard:
            sf_vdi_set_thin(self._c, 1 if value else 0)
        self._thin = bool(value)

    @property
    def stats(self):
        """Requests sent since open: reads, writes, creates, index updates,
        all-zero objects skipped, and object requests that went straight to
        a sheep holding the object."""
        cdef sf_vdi_stats s
        with self._guard:
            sf_vdi_get_stats(self._c, &s)
        return {
            "read_requests": s.read_requests,
            "write_requests": s.write_requests,
            "create_requests": s.create_requests,
            "index_updates": s.index_updates,
            "zero_objects_skipped": s.zero_objects_skipped,
            "routed_requests": s.routed_requests,
            "objects_checked": s.objects_checked,
            "objects_rewritten": s.objects_rewritten,
        }

    def read(self, offset, length, *, list recycle=None):
        """length bytes from offset, as bytes allocated once and filled in place.

        recycle: a list the caller keeps across reads of one size. A bytes
        object in it that nothing else references any more (the consumer
        dropped it) is filled again instead of allocating a new one, whose
        pages the kernel would have to zero and fault in; new objects join
        the list (at most MAX_RECYCLED). Nobody can see the reuse: an object
        is only refilled when the list holds its last reference.
        """
        cdef uint64_t c_off = _uint64(offset, "offset")
        cdef uint64_t c_len = _uint64(length, "length")
        cdef sf_error err
        cdef int rc
        cdef bytes out = None
        cdef object candidate
        cdef char *dst
        if c_len > <uint64_t>0x7FFFFFFFFFFFFFFF:
            raise _errors.OutOfRange(f"length {length} is too large")
        with self._guard:
            # checked before allocating, so a huge length fails cleanly
            size = sf_vdi_size(self._c)
            if c_off > size or c_len > size - c_off:
                raise _errors.OutOfRange(
                    f"read of {length} bytes at offset {offset} is past the end of VDI "
                    f"{self.info.name!r} ({size} bytes)")
            if recycle is not None:
                for candidate in recycle:
                    # two references: the list's and this loop's
                    if (type(candidate) is bytes and Py_REFCNT(candidate) == 2
                            and len(<bytes>candidate) == <Py_ssize_t>c_len):
                        out = <bytes>candidate
                        sf_bytes_forget_hash(<PyObject *>out)
                        break
                candidate = None
            if out is None:
                out = PyBytes_FromStringAndSize(NULL, <Py_ssize_t>c_len)
                dst = PyBytes_AS_STRING(out)
                with nogil:
                    sf_prepare_buffer(dst, c_len)  # huge pages: far fewer faults while filling
                if recycle is not None and c_len > 0 and len(recycle) < MAX_RECYCLED:
                    recycle.append(out)
            dst = PyBytes_AS_STRING(out)
            with nogil:
                rc = sf_vdi_read(self._c, dst, c_len, c_off, &err)
        _check(rc, &err)
        return out

    def readinto(self, buffer, offset):
        """Fills any writable contiguous buffer from offset; returns its length."""
        return self._buffer_io(buffer, offset, True)

    def write(self, data, offset):
        """Writes any contiguous buffer at offset; returns the bytes written."""
        return self._buffer_io(data, offset, False)

    cdef Py_ssize_t _buffer_io(self, object buffer, object offset, bint into) except -1:
        cdef uint64_t c_off = _uint64(offset, "offset")
        cdef Py_buffer view
        cdef sf_error err
        cdef int rc
        PyObject_GetBuffer(buffer, &view, PyBUF_ANY_CONTIGUOUS | (PyBUF_WRITABLE if into else 0))
        try:
            with self._guard:
                with nogil:
                    if into:
                        rc = sf_vdi_read(self._c, view.buf, <uint64_t>view.len, c_off, &err)
                    else:
                        rc = sf_vdi_write(self._c, view.buf, <uint64_t>view.len, c_off, &err)
            _check(rc, &err)
            return view.len
        finally:
            PyBuffer_Release(&view)

    def usage(self):
        """(used, shared): bytes in objects this VDI owns, and in objects it
        inherits from a snapshot or clone source, as dog lists them."""
        cdef uint64_t used = 0, shared = 0
        cdef sf_error err
        cdef int rc
        with self._guard:
            with nogil:
                rc = sf_vdi_usage(self._c, &used, &shared, &err)
        _check(rc, &err)
        return used, shared

    # ------------------------------------------------------------ attributes
    # Sheepdog's key/value pairs of this VDI's name (dog vdi setattr/getattr)

    def metadata_get(self, key):
        """The value (bytes) of attribute key; AttributeNotFound if unset."""
        cdef bytes c_key = _attr_bytes(key, "key")
        cdef const char *k = c_key
        cdef size_t key_len = len(c_key)
        cdef bytes out = PyBytes_FromStringAndSize(NULL, SF_ATTR_VALUE_MAX)
        cdef char *dst = PyBytes_AS_STRING(out)
        cdef size_t length = 0
        cdef sf_error err
        cdef int rc
        with self._guard:
            with nogil:
                rc = sf_vdi_attr_get(self._c, k, key_len, dst, SF_ATTR_VALUE_MAX, &length, &err)
        _check_attr(rc, &err)
        return out[:length]

    def metadata_set(self, key, value):
        """Creates attribute key, or replaces its value (a str is stored as
        UTF-8). Keys are 1..ATTR_KEY_MAX bytes without NUL, values at most
        ATTR_VALUE_MAX bytes: InvalidArgument otherwise."""
        cdef bytes c_key = _attr_bytes(key, "key")
        cdef bytes c_value = _attr_bytes(value, "value")
        cdef const char *k = c_key
        cdef size_t key_len = len(c_key)
        cdef const char *v = c_value
        cdef size_t value_len = len(c_value)
        cdef sf_error err
        cdef int rc
        with self._guard:
            with nogil:
                rc = sf_vdi_attr_set(self._c, k, key_len, v, value_len, &err)
        _check_attr(rc, &err)

    def metadata_remove(self, key):
        """Removes attribute key; AttributeNotFound if it was not set."""
        cdef bytes c_key = _attr_bytes(key, "key")
        cdef const char *k = c_key
        cdef size_t key_len = len(c_key)
        cdef sf_error err
        cdef int rc
        with self._guard:
            with nogil:
                rc = sf_vdi_attr_delete(self._c, k, key_len, &err)
        _check_attr(rc, &err)

    def metadata_list(self):
        """Every attribute of this VDI's name, as (key, value) pairs sorted
        by key. sheep has no listing request: this reads every sheep's object
        list, a scan of the cluster's object ids."""
        cdef char *keys = NULL
        cdef size_t length = 0, count = 0
        cdef sf_error err
        cdef int rc
        with self._guard:
            with nogil:
                rc = sf_vdi_attr_list(self._c, &keys, &length, &count, &err)
        _check(rc, &err)
        try:
            names = [k.decode("utf-8", "surrogateescape")
                     for k in (<bytes>keys[:length]).split(b"\0")[:count]]
        finally:
            sf_free(keys)
        out = []
        for key in sorted(names):
            try:
                out.append((key, self.metadata_get(key)))
            except _errors.AttributeNotFound:
                pass  # removed since the scan
        return out

    def discard(self, offset, length):
        """Gives the objects wholly inside [offset, offset+length) back to
        the cluster and zeroes the partial ones at the edges: the range reads
        as zeros, and sheep reclaims what nothing else shares."""
        cdef uint64_t c_off = _uint64(offset, "offset")
        cdef uint64_t c_len = _uint64(length, "length")
        cdef sf_error err
        cdef int rc
        with self._guard:
            with nogil:
                rc = sf_vdi_discard(self._c, c_len, c_off, &err)
        _check(rc, &err)

    def flatten(self):
        """Makes every object this VDI inherits from its parent its own:
        sheep copies each one itself (no data crosses to the client), many
        at a time. Afterwards it shares nothing, usage() shows no shared
        bytes, and deleting the parent snapshot frees the parent's objects."""
        cdef sf_error err
        cdef int rc
        with self._guard:
            with nogil:
                rc = sf_vdi_flatten(self._c, &err)
        _check(rc, &err)

    def resize(self, new_size):
        """Grows the VDI (shrinking is refused: sheep 1.0 would leak objects)."""
        cdef uint64_t c_size = _uint64(new_size, "new_size")
        cdef sf_error err
        cdef int rc
        with self._guard:
            with nogil:
                rc = sf_vdi_resize(self._c, c_size, &err)
        _check(rc, &err)


# ---------------------------------------------------------------- test hooks
# The wire codec, exposed so the tests can replay captured headers through
# the same C code the client uses.

def _encode_request(int opcode, **fields):
    """48 header bytes for a request, built by the client's encoder."""
    cdef sf_req req
    cdef uint8_t out[48]
    sfi_req_init(&req, opcode)
    req.proto_ver = fields.pop("proto_ver", req.proto_ver)
    req.flags = fields.pop("flags", 0)
    req.epoch = fields.pop("epoch", 0)
    req.id = fields.pop("id", 0)
    req.data_length = fields.pop("data_length", 0)
    req.oid = fields.pop("oid", 0)
    req.cow_oid = fields.pop("cow_oid", 0)
    req.copies = fields.pop("copies", 0)
    req.copy_policy = fields.pop("copy_policy", 0)
    req.offset = fields.pop("offset", 0)
    req.vdi_size = fields.pop("vdi_size", 0)
    req.base_vdi_id = fields.pop("base_vdi_id", 0)
    req.store_policy = fields.pop("store_policy", 0)
    req.block_size_shift = fields.pop("block_size_shift", 0)
    req.snapid = fields.pop("snapid", 0)
    req.lock_type = fields.pop("lock_type", 0)
    req.nodes_nr = fields.pop("nodes_nr", 0)
    if fields:
        raise TypeError(f"unknown request fields {sorted(fields)}")
    sfi_req_encode(&req, out)
    return bytes(out[:48])


def _decode_request(const uint8_t[:] header not None):
    """The request fields the client's decoder finds in 48 header bytes."""
    cdef sf_req req
    if header.shape[0] != 48:
        raise ValueError("a header is 48 bytes")
    sfi_req_decode(&header[0], &req)
    return req


def _decode_response(const uint8_t[:] header not None):
    """The reply fields the client's decoder finds in 48 header bytes."""
    cdef sf_rsp rsp
    if header.shape[0] != 48:
        raise ValueError("a header is 48 bytes")
    sfi_rsp_decode(&header[0], &rsp)
    return rsp


def _check_name(name):
    raw = _name_bytes(name)
    why = sfi_check_name(raw, len(raw))
    return None if why == NULL else why.decode()


def _check_copy_policy(int policy):
    why = sfi_check_copy_policy(<uint8_t>policy)
    return None if why == NULL else why.decode()


def _is_zero(const uint8_t[:] data not None):
    if data.shape[0] == 0:
        return True
    return bool(sfi_is_zero(&data[0], data.shape[0]))
