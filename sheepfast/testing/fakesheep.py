"""FakeSheep: an in-process, memory-backed Sheepdog 1.0 server on loopback.

It speaks the wire protocol of docs/PROTOCOL.md closely enough that a
client cannot tell it from a real sheep for everything a client uses, and it
has knobs to inject faults. It is a test double and the embedded default for
demos, not a storage engine.

Threads: one accept thread per node; per connection one reader thread
(framing, fault admission) and one writer thread (replies, delays); a small
shared worker pool executes requests. Replies therefore leave in completion
order, as on a real sheep, and a client that stops reading only stalls its
own writer thread.

Faithful to the notes: framing (payload only with FLAG_WRITE, reply = header
+ exactly data_length bytes, proto_ver 0, flags 0, cluster epoch, echoed id),
proto_ver rules, INVALID_PARMS for unknown opcodes and FLUSH_VDI, the data
lengths each op accepts, vid allocation (FNV-1a, first free slot, never
reused), the inode layout, snapshot/clone/COW, READONLY, reference counting
driven by index writes, zombie VDIs, hyper-volume deletion, EC zone checks.

FakeSheep choices, where a real sheep's behaviour is unknown:
  * writes past the object end: INVALID_PARMS (and a hazard);
  * NEW_VDI with an empty or unterminated name: INVALID_PARMS; a snapshot
    with base 0: INVALID_PARMS; an unreadable base: BASE_VDI_READ;
  * a snapshot whose base is not the working VDI ("rebase") freezes the old
    working VDI too, so each name keeps one working VDI;
  * a tag lookup matches any inode of that name with the tag (snapshots
    first); a name with only snapshots left gives NO_VDI;
  * DISCARD of a missing object: NO_OBJ; of a snapshot's object: READONLY;
    a COW create whose source is missing: NO_OBJ;
  * objects of vids without an inode use the cluster default block size;
  * CLUSTER_INFO with a short buffer: INVALID_PARMS; STAT_CLUSTER with
    nodes_nr > 0 appends node records (BUFFER_SMALL if they do not fit);
  * peer and admin ops: INVALID_PARMS; GET_OBJ_LIST lists every object on
    every node (one store stands for all of them);
  * an op that consumes data but came without FLAG_WRITE runs on zeros
    (a real sheep uses whatever its buffer held);
  * reference counts live in a side table (the gref area reads as written);
    locking is off, as on the captured cluster, unless use_lock=True (a
    cluster formatted with -l: locks as sheep keeps them, section 6.11);
  * set_delay delays the reply; the operation itself runs at once;
  * a stopped node executes nothing more, not even requests it had read
    (a dead sheep); a reset connection of a running node still executes
    what it had read (a sheep finishes a request whose client went away).
"""

from __future__ import annotations

import heapq
import select
import socket
import struct
import threading
import time
import traceback
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Set, Tuple, Union

from . import wire as w
from ._ops import NODE_SPACE, Handlers, Reply
from ._store import Store, VdiInfo, _now_ctime

# In reorder mode, requests that follow each other within this window are
# treated as "arrived together" and answered in reverse order.
REORDER_WINDOW = 0.005
REORDER_MAX_BATCH = 64


class RequestLogEntry(NamedTuple):
    node: int
    opcode: int
    flags: int
    id: int
    oid: int  # 0 for non-object ops
    offset: int  # 0 for non-object ops
    data_length: int


class _Fault(NamedTuple):
    kind: str  # one of _FAULT_KINDS
    n: int
    opcode: Optional[int]
    result: int


# What each fault does to the request it fires on, and which one wins when
# several fire on the same request (the most violent).
_FAULT_KINDS = {
    "stop": 4,  # the node stops before executing it
    "stop_after": 3,  # the node executes it, then stops (its reply is lost)
    "drop": 2,  # the connection is reset before executing it
    "drop_reply": 1,  # executed, then the connection is reset unanswered
    "fail_after": 0,  # executed, then answered `result` all the same
    "fail": 0,  # answered `result`, not executed
    "diverge": 0,  # answered SUCCESS, not executed, and the epoch moves on
}


# one admitted request waiting to run: header, payload (None without
# FLAG_WRITE) and the fault that fired on it
_Admitted = Tuple[w.RequestHeader, Optional[bytearray], Optional[_Fault]]


class _Faults:
    """Thread-safe fault-injection state shared by every connection."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._delays: Dict[Optional[int], float] = {}
        self._armed: List[List[Any]] = []  # [fault, matching requests seen so far]
        self._actions: List[List[Any]] = []  # [n, opcode, action, matching requests executed]
        self.reorder = False

    def set_delay(self, seconds: float, opcode: Optional[int]) -> None:
        with self._lock:
            if seconds > 0:
                self._delays[opcode] = seconds
            else:
                self._delays.pop(opcode, None)

    def delay_for(self, opcode: int) -> float:
        with self._lock:
            if not self._delays:
                return 0.0
            return self._delays.get(opcode, self._delays.get(None, 0.0))

    def arm(self, fault: _Fault) -> None:
        if fault.n < 1:
            raise ValueError("n counts from 1")
        with self._lock:
            self._armed.append([fault, 0])

    def admit(self, opcode: int) -> Optional[_Fault]:
        """Count this request against every armed fault; return one that fires.

        When several fire on the same request the most violent wins
        (_FAULT_KINDS).
        """
        fired: Optional[_Fault] = None
        with self._lock:
            for slot in list(self._armed):
                fault: _Fault = slot[0]
                if fault.opcode is not None and fault.opcode != opcode:
                    continue
                slot[1] += 1
                if slot[1] == fault.n:
                    self._armed.remove(slot)
                    if fired is None or _FAULT_KINDS[fault.kind] > _FAULT_KINDS[fired.kind]:
                        fired = fault
        return fired

    def armed(self) -> int:
        with self._lock:
            return len(self._armed)

    def arm_action(self, n: int, opcode: Optional[int], action: Callable[[], None]) -> None:
        if n < 1:
            raise ValueError("n counts from 1")
        with self._lock:
            self._actions.append([n, opcode, action, 0])

    def actions_after(self, opcode: int) -> List[Callable[[], None]]:
        """Count this executed request against every armed action; return
        those it fires."""
        fired: List[Callable[[], None]] = []
        with self._lock:
            for slot in list(self._actions):
                n, wanted, action, _seen = slot
                if wanted is not None and wanted != opcode:
                    continue
                slot[3] += 1
                if slot[3] == n:
                    self._actions.remove(slot)
                    fired.append(action)
        return fired

    def clear(self) -> None:
        with self._lock:
            self._delays.clear()
            self._armed.clear()
            self._actions.clear()
            self.reorder = False


def _recv_exact(sock: socket.socket, view: memoryview) -> bool:
    """Fill view from sock; False on EOF."""
    got, size = 0, len(view)
    while got < size:
        n = sock.recv_into(view[got:])
        if n == 0:
            return False
        got += n
    return True


def _send_all(sock: socket.socket, buffers: List[w.Buffer]) -> None:
    """Gathered send of header + payload parts without joining them."""
    views = [memoryview(b).cast("B") for b in buffers if len(b)]
    while views:
        sent = sock.sendmsg(views)
        while sent:
            if sent >= len(views[0]):
                sent -= len(views.pop(0))
            else:
                views[0] = views[0][sent:]
                sent = 0


class _Connection:
    def __init__(self, sheep: FakeSheep, node: _Node, sock: socket.socket):
        self.sheep = sheep
        self.node = node
        self.sock = sock
        self._cond = threading.Condition()
        self._replies: List[Tuple[float, int, List[w.Buffer]]] = []  # heap
        self._seq = 0
        self._pending = 0  # admitted requests not yet answered
        self._eof = False
        self._closed = False
        self.node_stopped = False  # set when its node stops: execute nothing more
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def start(self) -> None:
        for target, role in ((self._read_loop, "reader"), (self._write_loop, "writer")):
            threading.Thread(
                target=target, daemon=True, name=f"fakesheep-{self.node.index}-{role}"
            ).start()

    # ---------------------------------------------------------------- reading

    def _read_request(self) -> Optional[Tuple[w.RequestHeader, Optional[bytearray]]]:
        header = bytearray(w.HEADER_SIZE)
        if not _recv_exact(self.sock, memoryview(header)):
            return None
        req = w.RequestHeader.unpack(header)
        payload: Optional[bytearray] = None
        if req.flags & w.FLAG_WRITE:  # never read a payload without WRITE
            payload = bytearray(req.data_length)
            if not _recv_exact(self.sock, memoryview(payload)):
                return None
        return req, payload

    def _more_waiting(self) -> bool:
        readable, _, _ = select.select([self.sock], [], [], REORDER_WINDOW)
        return bool(readable)

    def _read_loop(self) -> None:
        try:
            while True:
                batch: List[_Admitted] = []
                while True:
                    item = self._read_request()
                    if item is None:
                        return
                    req, payload = item
                    fault = self.sheep._admit(self.node.index, req)
                    if fault is not None and fault.kind == "drop":
                        self.abort()
                        return
                    if fault is not None and fault.kind == "stop":
                        self.sheep.stop_node(self.node.index)
                        return
                    batch.append((req, payload, fault))
                    if (
                        not self.sheep._faults.reorder
                        or len(batch) >= REORDER_MAX_BATCH
                        or not self._more_waiting()
                    ):
                        break
                with self._cond:
                    self._pending += len(batch)
                self.sheep._submit(self, batch)
        except (OSError, ValueError):
            self.abort()
        finally:
            with self._cond:
                self._eof = True
                self._cond.notify_all()

    # ---------------------------------------------------------------- writing

    def queue_reply(self, buffers: List[w.Buffer], delay: float) -> None:
        with self._cond:
            if self._closed:
                return
            due = time.monotonic() + delay
            heapq.heappush(self._replies, (due, self._seq, buffers))
            self._seq += 1
            self._cond.notify_all()

    def _next_reply(self) -> Optional[List[w.Buffer]]:
        with self._cond:
            while not self._closed:
                if self._replies:
                    wait = self._replies[0][0] - time.monotonic()
                    if wait <= 0:
                        return heapq.heappop(self._replies)[2]
                    self._cond.wait(wait)
                elif self._eof and self._pending == 0:
                    return None
                else:
                    self._cond.wait()
            return None

    def _write_loop(self) -> None:
        while True:
            buffers = self._next_reply()
            if buffers is None:
                break
            try:
                _send_all(self.sock, buffers)
            except (OSError, ValueError):
                break
            with self._cond:
                self._pending -= 1
        self.close()

    # ---------------------------------------------------------------- closing

    def abort(self) -> None:
        """Close abruptly (RST), dropping every reply still queued."""
        self._shut(abortive=True)

    def close(self) -> None:
        self._shut(abortive=False)

    def _shut(self, abortive: bool) -> None:
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._replies.clear()
            self._cond.notify_all()
        try:
            if abortive:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            # shutdown wakes our own reader/writer if they are blocked
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self.sheep._forget(self)


class _Node:
    def __init__(self, index: int, port: int):
        self.index = index
        self.port = port
        self.listener: Optional[socket.socket] = None
        self.running = False
        self.connections: Set[_Connection] = set()


class FakeSheep:
    """An embedded Sheepdog 1.0 cluster of `nodes` gateways sharing one store."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        nodes: int = 1,
        copies: int = 2,
        copy_policy: int = 0,
        block_size_shift: int = w.DEFAULT_BLOCK_SIZE_SHIFT,
        epoch: int = 1,
        workers: int = 4,
        use_lock: bool = False,
    ):
        if nodes < 1:
            raise ValueError("a cluster needs at least one node")
        self.host = host
        self.epoch = epoch
        #: formatted with `dog cluster format -l`: LOCK_VDI locks (section 6.11)
        self.use_lock = use_lock
        self.ctime = _now_ctime()
        self.store = Store(
            copies=copies, copy_policy=copy_policy, block_size_shift=block_size_shift
        )
        self.hazards: List[str] = []
        self.internal_errors: List[str] = []  # handler crashes (FakeSheep bugs)
        self._handlers = Handlers(self.store, self)
        self._faults = _Faults()
        self._lock = threading.Lock()
        self._counts: Counter[int] = Counter()
        self._log: Optional[List[RequestLogEntry]] = None
        self._nodes = [_Node(i, port + i if port else 0) for i in range(nodes)]
        self._workers = workers
        self._pool: Optional[ThreadPoolExecutor] = None

    def __repr__(self) -> str:
        state = "running" if self._pool is not None else "stopped"
        return f"<FakeSheep {state} {' '.join(self.addresses)} epoch={self.epoch}>"

    # ------------------------------------------------------------ lifecycle

    def start(self) -> FakeSheep:
        if self._pool is not None:
            return self
        self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="fakesheep-worker")
        try:
            for node in self._nodes:
                self._open(node)
        except BaseException:
            self.stop()
            raise
        self._update_zones()
        return self

    def stop(self) -> None:
        for node in self._nodes:
            self._close(node)
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> FakeSheep:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop_node(self, i: int) -> None:
        """Take node i out: close its listener and connections, bump the epoch."""
        node = self._nodes[i]
        if node.running:
            self._close(node)
            self._membership_changed()

    def start_node(self, i: int) -> None:
        """Bring node i back on its previous port and bump the epoch."""
        node = self._nodes[i]
        if not node.running and self._pool is not None:
            self._open(node)
            self._membership_changed()

    def _membership_changed(self) -> None:
        with self._lock:
            self.epoch += 1
        self._update_zones()

    def _update_zones(self) -> None:
        # every node is its own zone; EC writes need at least d of them
        self.store.zones = sum(1 for n in self._nodes if n.running)

    def _open(self, node: _Node) -> None:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, node.port))
        listener.listen(128)
        node.port = listener.getsockname()[1]
        node.listener = listener
        node.running = True
        threading.Thread(
            target=self._accept_loop,
            args=(node, listener),
            daemon=True,
            name=f"fakesheep-{node.index}-accept",
        ).start()

    def _close(self, node: _Node) -> None:
        node.running = False
        listener, node.listener = node.listener, None
        if listener is not None:
            try:
                listener.shutdown(socket.SHUT_RDWR)  # wakes accept() on Linux
            except OSError:
                pass
            listener.close()
        with self._lock:
            connections = list(node.connections)
        for conn in connections:
            conn.node_stopped = True
            conn.abort()

    def _accept_loop(self, node: _Node, listener: socket.socket) -> None:
        while True:
            try:
                sock, _peer = listener.accept()
            except OSError:
                return
            if not node.running or node.listener is not listener:
                sock.close()
                return
            sock.setblocking(True)
            conn = _Connection(self, node, sock)
            with self._lock:
                node.connections.add(conn)
            conn.start()

    def _forget(self, conn: _Connection) -> None:
        with self._lock:
            conn.node.connections.discard(conn)

    # ------------------------------------------------------------ addresses

    def _format(self, port: int) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{port}"

    @property
    def port(self) -> int:
        return self._nodes[0].port

    @property
    def address(self) -> str:
        """host:port of node 0."""
        return self._format(self._nodes[0].port)

    @property
    def addresses(self) -> List[str]:
        return [self._format(n.port) for n in self._nodes]

    def node_id(self, node: int) -> bytes:
        """The node id sheep records for a lock taken through node."""
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        n = self._nodes[node]
        return w.node_id(w.NodeRecord(host, n.port, 128, n.index, NODE_SPACE))

    def node_records(self) -> List[w.NodeRecord]:
        """GET_NODE_LIST's view: the running nodes, one zone each."""
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        return [
            w.NodeRecord(host, n.port, 128, n.index, NODE_SPACE) for n in self._nodes if n.running
        ]

    # ------------------------------------------------------------ requests

    def _admit(self, node: int, req: w.RequestHeader) -> Optional[_Fault]:
        with self._lock:
            self._counts[req.opcode] += 1
            if self._log is not None:
                oid = offset = 0
                if req.opcode in w.OBJ_OPCODES:
                    oid, offset = req.obj.oid, req.obj.offset
                self._log.append(
                    RequestLogEntry(
                        node, req.opcode, req.flags, req.id, oid, offset, req.data_length
                    )
                )
        return self._faults.admit(req.opcode)

    def _submit(self, conn: _Connection, batch: List[_Admitted]) -> None:
        pool = self._pool
        if pool is None:
            conn.abort()
            return
        try:
            if len(batch) == 1:
                pool.submit(self._run_one, conn, *batch[0])
            else:
                pool.submit(self._run_batch, conn, batch)
        except RuntimeError:  # pool shut down while stopping
            conn.abort()

    def _run_one(
        self,
        conn: _Connection,
        req: w.RequestHeader,
        payload: Optional[bytearray],
        fault: Optional[_Fault],
    ) -> None:
        self._run_batch(conn, [(req, payload, fault)])

    def _run_batch(self, conn: _Connection, batch: List[_Admitted]) -> None:
        # executed in arrival order, answered in reverse (set_reorder)
        replies: List[Tuple[List[w.Buffer], int]] = []
        for req, payload, fault in batch:
            if conn.node_stopped:
                return  # a dead sheep executes nothing more
            buffers = self._execute(req, payload, fault, conn.node.index)
            if fault is not None and fault.kind == "drop_reply":
                conn.abort()  # executed, and the client never hears of it
                return
            if fault is not None and fault.kind == "stop_after":
                self.stop_node(conn.node.index)
                return
            replies.append((buffers, req.opcode))
        for buffers, opcode in reversed(replies):
            conn.queue_reply(buffers, self._faults.delay_for(opcode))

    def _execute(
        self,
        req: w.RequestHeader,
        payload: Optional[bytearray],
        fault: Optional[_Fault],
        node: int = 0,
    ) -> List[w.Buffer]:
        if fault is not None and fault.kind == "diverge":
            with self._lock:
                self.epoch += 1
            reply = Reply(w.RES_SUCCESS)
        elif fault is not None and fault.kind == "fail":
            reply = Reply(fault.result)
        else:
            try:
                reply = self._handlers.handle(req, payload, node)
            except Exception:
                self.internal_errors.append(traceback.format_exc())
                reply = Reply(w.RES_SYSTEM_ERROR)
            if fault is not None and fault.kind == "fail_after":
                reply = Reply(fault.result)
            for action in self._faults.actions_after(req.opcode):
                try:
                    action()
                except Exception:
                    self.internal_errors.append(traceback.format_exc())
        header = w.pack_response(
            req.opcode,
            reply.result,
            epoch=self.epoch,
            id=req.id,
            data_length=reply.data_length,
            args=reply.args,
        )
        return [header, *reply.data]

    def record_hazard(self, description: str) -> None:
        with self._lock:
            self.hazards.append(description)

    # ------------------------------------------------------------ fault knobs

    def set_delay(self, seconds: float, opcode: Optional[int] = None) -> None:
        """Delay every reply (or those of `opcode`); the op itself runs at once."""
        self._faults.set_delay(seconds, opcode)

    def fail_nth(
        self, n: int, result: int, opcode: Optional[int] = None, *, applied: bool = False
    ) -> None:
        """The n-th matching request from now is answered `result`, not
        executed; applied=True executes it first and answers `result` all the
        same (a gateway whose write reached some copies and failed on others)."""
        self._faults.arm(_Fault("fail_after" if applied else "fail", n, opcode, result))

    def drop_nth(self, n: int, opcode: Optional[int] = None) -> None:
        """On the n-th matching request from now, reset its connection unanswered."""
        self._faults.arm(_Fault("drop", n, opcode, 0))

    def after_nth(self, n: int, action: Callable[[], None], opcode: Optional[int] = None) -> None:
        """Once the n-th matching request from now has been executed, and
        before its reply is sent, call action() (on a server thread): what
        another client did between two of this one's requests, e.g.
        delete_vdi() between a lookup and the inode read that follows it."""
        self._faults.arm_action(n, opcode, action)

    def delete_vdi(self, name: Union[str, bytes]) -> None:
        """Deletes the working VDI called name as a client would: index
        zeroed, then DEL_VDI (the inode keeps its vid, name and size zeroed)."""
        raw = name.encode() if isinstance(name, str) else bytes(name)
        result = self.store.delete_working(raw)
        if result != w.RES_SUCCESS:
            raise LookupError(f"FakeSheep: cannot delete VDI {raw!r}: result 0x{result:02x}")

    def diverge_nth(self, n: int, opcode: Optional[int] = None) -> None:
        """The n-th matching request from now is answered SUCCESS but not
        executed, and the cluster epoch moves on: what sheep 1.0 can do to
        a write that crosses a membership change (a copy misses it)."""
        self._faults.arm(_Fault("diverge", n, opcode, 0))

    def drop_reply_nth(self, n: int, opcode: Optional[int] = None) -> None:
        """The n-th matching request from now is executed, then its connection
        is reset without the reply: the client cannot tell whether it happened."""
        self._faults.arm(_Fault("drop_reply", n, opcode, 0))

    def stop_node_nth(self, n: int, opcode: Optional[int] = None, *, applied: bool = False) -> None:
        """On the n-th matching request from now, the node that received it
        stops (as stop_node: listener and connections closed, epoch bumped).
        applied=True executes that request first, so its effect stays and its
        reply is lost; otherwise it never happens. Requests the node had read
        but not executed are lost either way."""
        self._faults.arm(_Fault("stop_after" if applied else "stop", n, opcode, 0))

    def set_reorder(self, enabled: bool) -> None:
        """Answer requests that arrive together in reverse order."""
        self._faults.reorder = bool(enabled)

    def clear_faults(self) -> None:
        self._faults.clear()

    def armed_faults(self) -> int:
        """How many *_nth faults have not fired yet."""
        return self._faults.armed()

    # ------------------------------------------------------------ introspection

    def request_counts(self) -> Dict[int, int]:
        with self._lock:
            return dict(self._counts)

    def reset_request_counts(self) -> None:
        with self._lock:
            self._counts.clear()

    def enable_request_log(self, enabled: bool = True) -> None:
        with self._lock:
            self._log = [] if enabled else None

    def request_log(self) -> List[RequestLogEntry]:
        with self._lock:
            return list(self._log or ())

    def clear_request_log(self) -> None:
        with self._lock:
            if self._log is not None:
                self._log.clear()

    def object_ids(self) -> Set[int]:
        """oids of the data objects that exist."""
        return self.store.data_object_ids()

    def all_object_ids(self) -> Set[int]:
        """Every stored object, inodes and B-tree nodes included."""
        return self.store.all_object_ids()

    def object_data(self, oid: int) -> Optional[bytes]:
        """Full contents of an object (zero-filled to its size), or None."""
        return self.store.object_bytes(oid)

    def refcount(self, oid: int) -> int:
        """Live index entries that point at a data object."""
        return self.store.refcount(oid)

    def vdi(
        self, name: Union[str, bytes], tag: Union[str, bytes] = b"", snapid: int = 0
    ) -> Optional[VdiInfo]:
        """Look a VDI up the way GET_VDI_INFO does; None if it does not resolve."""
        raw_name = name.encode() if isinstance(name, str) else bytes(name)
        raw_tag = tag.encode() if isinstance(tag, str) else bytes(tag)
        result, hdr = self.store.lookup(raw_name, raw_tag, snapid)
        if result != w.RES_SUCCESS:
            return None
        assert hdr is not None  # success always names the inode
        return self.store.vdi_info(hdr.vdi_id)

    def vdi_by_id(self, vid: int) -> Optional[VdiInfo]:
        return self.store.vdi_info(vid)

    def connection_count(self) -> int:
        with self._lock:
            return sum(len(n.connections) for n in self._nodes)
