/*
 * The request engine: pipelined requests over one or more connections.
 *
 * Sockets are non-blocking and driven by poll() so that one thread can keep
 * sending a large write while replies to earlier requests come back, and so
 * that every wait is bounded by a timeout. Request payloads go out with one
 * sendmsg() of header + caller memory; reply payloads are received straight
 * into the caller's buffer. Nothing on the data path is copied or allocated.
 */
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "sf_internal.h"

/* ------------------------------------------------------------------ engine */

/* One connection's share of a run: its requests in flight, the ones still
 * being written, and the reply being read. */
typedef struct lane {
    sf_conn *conn;
    sf_op *inflight[SF_MAX_DEPTH];
    unsigned nr_inflight;
    sf_op *sendq[SF_MAX_DEPTH]; /* FIFO of ops not yet fully written */
    unsigned send_head, send_count;
    uint8_t rhdr[SF_HEADER_SIZE];
    size_t rhdr_got;
    sf_op *rop; /* reply being received */
    size_t rpay_got;
    int reconnects;
} lane;

typedef struct engine {
    sf_cluster *cl;
    sf_source *src;
    unsigned depth; /* across all lanes */
    unsigned nr_inflight;
    lane lanes[SF_MAX_LANES];
    unsigned nr_lanes;
    sf_ring *ring;                    /* placement, or NULL: route by load only */
    uint32_t lane_node[SF_MAX_LANES]; /* ring node each lane's sheep is, or UINT32_MAX */
} engine;

/* Which ring node a lane's connection goes to. */
static void engine_map_lane(engine *e, unsigned i)
{
    e->lane_node[i] = UINT32_MAX;
    if (e->ring == NULL)
        return;
    for (uint32_t n = 0; n < e->ring->nr_nodes; n++)
        if (e->ring->nodes[n].gateway == e->lanes[i].conn->gateway)
            e->lane_node[i] = n;
}

static size_t op_wire_size(const sf_op *op)
{
    size_t n = SF_HEADER_SIZE;
    if (op->req.flags & SF_FLAG_WRITE)
        n += op->req.data_length;
    return n;
}

static void lane_enqueue(lane *l, sf_op *op)
{
    op->req.id = l->conn->next_id++;
    sfi_req_encode(&op->req, op->wire_header);
    op->sent = 0;
    l->inflight[l->nr_inflight++] = op;
    l->sendq[(l->send_head + l->send_count) % SF_MAX_DEPTH] = op;
    l->send_count++;
}

/* An object request goes to the least busy lane whose sheep holds the
 * object; anything else (or an object no lane holds) to the least busy lane,
 * which spreads a transfer over the gateways the lanes are connected to. */
static void engine_enqueue(engine *e, sf_op *op)
{
    lane *best = NULL;
    op->routed = 0;
    if (e->ring != NULL && op->route_copies > 0 && op->route_copies <= SF_MAX_COPIES) {
        unsigned holders[SF_MAX_COPIES];
        unsigned n = sfi_ring_locate(e->ring, op->req.oid, op->route_copies, holders);
        for (unsigned i = 0; i < e->nr_lanes; i++) {
            int holds = 0;
            for (unsigned h = 0; h < n && !holds; h++)
                holds = e->lane_node[i] == holders[h];
            if (holds && (best == NULL || e->lanes[i].nr_inflight < best->nr_inflight))
                best = &e->lanes[i];
        }
        op->routed = best != NULL;
    }
    if (best == NULL) {
        best = &e->lanes[0];
        for (unsigned i = 1; i < e->nr_lanes; i++)
            if (e->lanes[i].nr_inflight < best->nr_inflight)
                best = &e->lanes[i];
    }
    lane_enqueue(best, op);
    e->nr_inflight++;
}

/* iovecs one sendmsg() carries: two per request (header, payload), so a
 * burst of small requests goes out in one call; far below IOV_MAX. */
#define SF_SEND_IOVS 64

/* Writes as much of the send queue as the socket takes. */
static int lane_send(engine *e, lane *l, sf_error *err)
{
    while (l->send_count > 0) {
        struct iovec iov[SF_SEND_IOVS];
        int niov = 0;
        for (unsigned i = 0; i < l->send_count && niov + 2 <= SF_SEND_IOVS; i++) {
            sf_op *op = l->sendq[(l->send_head + i) % SF_MAX_DEPTH];
            size_t off = op->sent;
            if (off < SF_HEADER_SIZE) {
                iov[niov].iov_base = op->wire_header + off;
                iov[niov].iov_len = SF_HEADER_SIZE - off;
                niov++;
                off = SF_HEADER_SIZE;
            }
            size_t total = op_wire_size(op);
            if (off < total) {
                /* sendmsg takes a non-const iov_base; the payload is only read */
                iov[niov].iov_base =
                    (void *)((const uint8_t *)op->payload + (off - SF_HEADER_SIZE));
                iov[niov].iov_len = total - off;
                niov++;
            }
        }
        struct msghdr msg;
        memset(&msg, 0, sizeof(msg));
        msg.msg_iov = iov;
        msg.msg_iovlen = (size_t)niov;
        ssize_t n = sendmsg(l->conn->fd, &msg, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return SF_OK;
            {
                int errnum = errno;
                char where[SF_ADDRESS_TEXT_MAX];
                sfi_conn_peer(e->cl, l->conn, where, sizeof(where));
                return sfi_fail_errno(err, SF_E_IO, errnum, "sending to %s failed", where);
            }
        }
        size_t left = (size_t)n;
        while (left > 0 && l->send_count > 0) {
            sf_op *op = l->sendq[l->send_head];
            size_t need = op_wire_size(op) - op->sent;
            size_t take = left < need ? left : need;
            op->sent += take;
            left -= take;
            if (op->sent == op_wire_size(op)) {
                l->send_head = (l->send_head + 1) % SF_MAX_DEPTH;
                l->send_count--;
            }
        }
    }
    return SF_OK;
}

/* The printable text a refused reply header starts with, if it starts with
 * at least SF_PEEK_MIN_TEXT such bytes (up to the first line end), or "". */
#define SF_PEEK_MIN_TEXT 4
static void reply_text(const uint8_t *hdr, char *out, size_t cap)
{
    size_t n = 0;
    while (n + 1 < cap && n < SF_HEADER_SIZE && hdr[n] >= 0x20 && hdr[n] < 0x7f) {
        out[n] = (char)hdr[n];
        n++;
    }
    out[n >= SF_PEEK_MIN_TEXT ? n : 0] = '\0';
}

/* Refuses a reply header, naming the peer. A connection that has never
 * carried a well-formed reply is most likely to some other service (an HTTP
 * server answers a Sheepdog header with text), and the message says so. */
static int bad_reply(engine *e, lane *l, sf_error *err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int bad_reply(engine *e, lane *l, sf_error *err, const char *fmt, ...)
{
    char why[160], where[300], text[40];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    sfi_conn_peer(e->cl, l->conn, where, sizeof(where));
    if (l->conn->answered)
        return sfi_fail(err, SF_E_PROTOCOL, "sheep at %s broke the protocol: %s", where, why);
    reply_text(l->rhdr, text, sizeof(text));
    if (text[0] != '\0')
        return sfi_fail(err, SF_E_PROTOCOL, "%s is not a Sheepdog server: it answered \"%s\" (%s)",
                        where, text, why);
    return sfi_fail(err, SF_E_PROTOCOL, "%s is not a Sheepdog server (%s)", where, why);
}

static int lane_reply_header(engine *e, lane *l, sf_error *err)
{
    sf_rsp rsp;
    sf_op *op = NULL;

    sfi_rsp_decode(l->rhdr, &rsp);
    for (unsigned i = 0; i < l->nr_inflight; i++) {
        if (l->inflight[i]->req.id == rsp.id) {
            op = l->inflight[i];
            break;
        }
    }
    if (op == NULL)
        return bad_reply(e, l, err, "reply id %u matches no request in flight", rsp.id);
    if (op->sent != op_wire_size(op))
        return bad_reply(e, l, err, "reply to %s id %u before the request was sent",
                         sfi_opcode_name(op->req.opcode), rsp.id);
    if (rsp.opcode != op->req.opcode)
        return bad_reply(e, l, err, "reply opcode 0x%02x to a %s request", rsp.opcode,
                         sfi_opcode_name(op->req.opcode));
    /* Every length from the network is checked before anything is received. */
    if (rsp.data_length > op->reply_cap)
        return bad_reply(e, l, err, "%s reply carries %u bytes, at most %u expected",
                         sfi_opcode_name(op->req.opcode), rsp.data_length, op->reply_cap);
    l->conn->answered = 1;
    op->rsp = rsp;
    sfi_cluster_saw_epoch(e->cl, rsp.epoch);
    l->rop = op;
    l->rpay_got = 0;
    return SF_OK;
}

static void engine_finish_reply(engine *e, lane *l)
{
    sf_op *op = l->rop;
    l->rop = NULL;
    l->rhdr_got = 0;
    for (unsigned i = 0; i < l->nr_inflight; i++) {
        if (l->inflight[i] == op) {
            l->inflight[i] = l->inflight[--l->nr_inflight];
            break;
        }
    }
    e->nr_inflight--;
    e->src->complete(e->src->ctx, op);
}

/* Receives what is available, stopping after each completed reply so the
 * caller can refill the pipeline at once. *completed says whether one did. */
static int lane_recv(engine *e, lane *l, int *completed, sf_error *err)
{
    *completed = 0;
    if (l->nr_inflight == 0)
        return SF_OK;
    for (;;) {
        ssize_t n;
        if (l->rop != NULL && l->rpay_got == l->rop->rsp.data_length) {
            engine_finish_reply(e, l);
            *completed = 1;
            return SF_OK;
        }
        if (l->rop == NULL)
            n = recv(l->conn->fd, l->rhdr + l->rhdr_got, SF_HEADER_SIZE - l->rhdr_got, 0);
        else
            n = recv(l->conn->fd, (uint8_t *)l->rop->reply_buf + l->rpay_got,
                     l->rop->rsp.data_length - l->rpay_got, 0);
        if (n == 0) {
            char where[SF_ADDRESS_TEXT_MAX];
            sfi_conn_peer(e->cl, l->conn, where, sizeof(where));
            return sfi_fail(err, SF_E_IO, "%s closed the connection with %u request(s) in flight",
                            where, l->nr_inflight);
        }
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return SF_OK;
            {
                int errnum = errno;
                char where[SF_ADDRESS_TEXT_MAX];
                sfi_conn_peer(e->cl, l->conn, where, sizeof(where));
                return sfi_fail_errno(err, SF_E_IO, errnum, "receiving from %s failed", where);
            }
        }
        if (l->rop == NULL) {
            l->rhdr_got += (size_t)n;
            if (l->rhdr_got == SF_HEADER_SIZE && lane_reply_header(e, l, err) != SF_OK)
                return SF_ERR;
        } else {
            l->rpay_got += (size_t)n;
        }
    }
}

/* After a connection loss: if every op in flight on the lane may be resent,
 * move them to a fresh connection (next gateway first) and start over. */
static int lane_reconnect(engine *e, lane *l, sf_error *err)
{
    if (l->reconnects >= SF_MAX_RECONNECTS || sfi_time_left_ms(e->cl) == 0)
        return SF_ERR;
    for (unsigned i = 0; i < l->nr_inflight; i++)
        if (!l->inflight[i]->retryable)
            return SF_ERR;
    sf_error cerr;
    sf_conn *fresh = sfi_connect_any(e->cl, l->conn->gateway + 1, &cerr);
    if (fresh == NULL)
        return SF_ERR;
    l->reconnects++;
    sfi_conn_close(l->conn);
    l->conn = fresh;
    engine_map_lane(e, (unsigned)(l - e->lanes));
    sf_op *pending[SF_MAX_DEPTH];
    unsigned n = l->nr_inflight;
    memcpy(pending, l->inflight, n * sizeof(pending[0]));
    l->nr_inflight = 0;
    l->send_head = l->send_count = 0;
    l->rop = NULL;
    l->rhdr_got = 0;
    for (unsigned i = 0; i < n; i++) {
        pending[i]->resent = 1;
        lane_enqueue(l, pending[i]);
    }
    sfi_error_clear(err);
    return SF_OK;
}

/* Moves every lane as far as it goes without blocking. Returns SF_OK with
 * *progress set when anything moved, SF_ERR on a failure it cannot mend. */
static int engine_step(engine *e, int *progress, sf_error *err)
{
    *progress = 0;
    for (unsigned i = 0; i < e->nr_lanes; i++) {
        lane *l = &e->lanes[i];
        int completed = 0;
        unsigned unsent = l->send_count;
        if ((l->send_count > 0 && lane_send(e, l, err) != SF_OK) ||
            lane_recv(e, l, &completed, err) != SF_OK) {
            if (err->category == SF_E_IO && lane_reconnect(e, l, err) == SF_OK) {
                *progress = 1;
                continue;
            }
            l->conn->broken = 1;
            return SF_ERR;
        }
        if (completed || l->send_count < unsent)
            *progress = 1;
    }
    return SF_OK;
}

static int engine_wait(engine *e, sf_error *err)
{
    struct pollfd pfd[SF_MAX_LANES];
    for (unsigned i = 0; i < e->nr_lanes; i++) {
        pfd[i].fd = e->lanes[i].nr_inflight ? e->lanes[i].conn->fd : -1; /* -1: ignored */
        pfd[i].events = (short)(POLLIN | (e->lanes[i].send_count > 0 ? POLLOUT : 0));
        pfd[i].revents = 0;
    }
    for (;;) {
        int r = poll(pfd, e->nr_lanes, sfi_time_left_ms(e->cl));
        if (r > 0)
            return SF_OK;
        if (r < 0 && errno == EINTR)
            continue;
        char where[SF_ADDRESS_TEXT_MAX] = "";
        for (unsigned i = 0; i < e->nr_lanes; i++) {
            lane *l = &e->lanes[i];
            if (!l->nr_inflight)
                continue;
            l->conn->broken = 1; /* replies may still come: never reuse */
            if (r == 0) {
                /* the next attempt (a cleanup, a retry) goes elsewhere first */
                sfi_pool_mark_down(e->cl, l->conn->gateway);
                if (where[0] == '\0')
                    sfi_conn_peer(e->cl, l->conn, where, sizeof(where));
            }
        }
        if (r < 0)
            return sfi_fail_errno(err, SF_E_IO, errno, "poll failed");
        return sfi_fail(
            err, SF_E_TIMEOUT,
            "no reply from sheep at %s within the %d ms io_timeout (%u request(s) in flight)",
            where, e->cl->io_timeout_ms, e->nr_inflight);
    }
}

int sfi_run_lanes(sf_cluster *cl, sf_conn **conns, unsigned nr_conns, sf_source *src,
                  unsigned depth, sf_error *err)
{
    engine e;
    memset(&e, 0, sizeof(e));
    e.cl = cl;
    e.src = src;
    e.depth = depth == 0 ? 1 : (depth > SF_MAX_DEPTH ? SF_MAX_DEPTH : depth);
    e.nr_lanes = nr_conns < SF_MAX_LANES ? nr_conns : SF_MAX_LANES;
    /* with one lane there is nothing to choose, but whether it holds an
     * object is still what the routed count reports */
    e.ring = sfi_ring_get(cl);
    for (unsigned i = 0; i < e.nr_lanes; i++) {
        e.lanes[i].conn = conns[i];
        engine_map_lane(&e, i);
    }
    int rc = SF_OK;

    for (;;) {
        while (e.nr_inflight < e.depth) {
            sf_op *op = src->next(src->ctx);
            if (op == NULL)
                break;
            engine_enqueue(&e, op);
        }
        if (e.nr_inflight == 0)
            break;
        /* Both directions are non-blocking: try them first and sleep in
         * poll() only when nothing can move. Replies free slots, so a
         * completed one goes straight back to refilling. */
        int progress = 0;
        if ((rc = engine_step(&e, &progress, err)) != SF_OK)
            break;
        if (!progress && (rc = engine_wait(&e, err)) != SF_OK)
            break;
    }
    for (unsigned i = 0; i < e.nr_lanes; i++) {
        conns[i] = e.lanes[i].conn; /* a lane may have reconnected */
        if (rc != SF_OK && e.lanes[i].nr_inflight > 0)
            conns[i]->broken = 1; /* its late replies would confuse the next user */
    }
    sfi_ring_put(cl, e.ring);
    return rc;
}

int sfi_run(sf_cluster *cl, sf_conn **conn, sf_source *src, unsigned depth, sf_error *err)
{
    return sfi_run_lanes(cl, conn, 1, src, depth, err);
}

typedef struct op_array {
    sf_op *ops;
    unsigned nr, next;
} op_array;

static sf_op *op_array_next(void *ctx)
{
    op_array *a = ctx;
    return a->next < a->nr ? &a->ops[a->next++] : NULL;
}

static void op_array_complete(void *ctx, sf_op *op)
{
    (void)ctx;
    (void)op;
}

int sfi_run_ops(sf_cluster *cl, sf_conn **conns, unsigned nr_conns, sf_op *ops, unsigned nr_ops,
                sf_error *err)
{
    op_array a = {ops, nr_ops, 0};
    sf_source src = {&a, op_array_next, op_array_complete};
    return sfi_run_lanes(cl, conns, nr_conns, &src, nr_ops, err);
}

int sfi_call(sf_cluster *cl, sf_conn **conn, sf_op *op, sf_error *err)
{
    if (sfi_run_ops(cl, conn, 1, op, 1, err) != SF_OK)
        return SF_ERR;
    if (op->rsp.result != SF_RES_SUCCESS)
        return sfi_fail_result(err, op->rsp.result, "%s", sfi_opcode_name(op->req.opcode));
    return SF_OK;
}

void sfi_op_read(sf_op *op, uint64_t oid, uint32_t offset, void *buf, uint32_t len)
{
    memset(op, 0, sizeof(*op));
    sfi_req_init(&op->req, SF_OP_READ_OBJ);
    op->req.oid = oid;
    op->req.offset = offset;
    op->req.data_length = len;
    op->reply_buf = buf;
    op->reply_cap = len;
    op->retryable = 1;
}

void sfi_op_named(sf_op *op, uint8_t opcode, uint8_t *payload, uint32_t payload_len,
                  const char *name, size_t name_len)
{
    memset(payload, 0, payload_len);
    memcpy(payload, name, name_len);
    memset(op, 0, sizeof(*op));
    sfi_req_init(&op->req, opcode);
    op->req.flags = SF_FLAG_WRITE; /* without it sheep would not read the name */
    op->req.data_length = payload_len;
    op->payload = payload;
}

int sfi_read_exact(sf_cluster *cl, sf_conn **conn, uint64_t oid, uint32_t offset, void *buf,
                   uint32_t len, sf_error *err)
{
    sf_op op;
    sfi_op_read(&op, oid, offset, buf, len);
    if (sfi_call(cl, conn, &op, err) != SF_OK)
        return SF_ERR;
    if (op.rsp.data_length != len)
        return sfi_fail(err, SF_E_PROTOCOL, "read of object %016llx returned %u of %u bytes",
                        (unsigned long long)oid, op.rsp.data_length, len);
    return SF_OK;
}
