/*
 * Sockets and the request engine.
 *
 * Sockets are non-blocking and driven by poll() so that one thread can keep
 * sending a large write while replies to earlier requests come back, and so
 * that every wait is bounded by a timeout. Request payloads go out with one
 * sendmsg() of header + caller memory; reply payloads are received straight
 * into the caller's buffer. Nothing on the data path is copied or allocated.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "sf_internal.h"

/* ---------------------------------------------------------------- addresses */

static int parse_port(const char *text, size_t len, sf_gateway *gw)
{
    unsigned long value = 0;
    if (len == 0 || len > 5)
        return -1;
    for (size_t i = 0; i < len; i++) {
        if (text[i] < '0' || text[i] > '9')
            return -1;
        value = value * 10 + (unsigned long)(text[i] - '0');
    }
    if (value == 0 || value > 65535)
        return -1;
    snprintf(gw->port, sizeof(gw->port), "%lu", value);
    return 0;
}

static int parse_one(const char *text, size_t len, sf_gateway *gw)
{
    const char *host = text, *port = NULL;
    size_t host_len = len, port_len = 0;

    if (len > 0 && text[0] == '[') { /* [v6addr] or [v6addr]:port */
        const char *close = memchr(text, ']', len);
        if (close == NULL)
            return -1;
        host = text + 1;
        host_len = (size_t)(close - host);
        size_t rest = len - (size_t)(close + 1 - text);
        if (rest > 0) {
            if (close[1] != ':')
                return -1;
            port = close + 2;
            port_len = rest - 1;
        }
    } else {
        const char *colon = memchr(text, ':', len);
        /* exactly one colon: host:port; more than one: a bare IPv6 address */
        if (colon != NULL && memchr(colon + 1, ':', len - (size_t)(colon + 1 - text)) == NULL) {
            host_len = (size_t)(colon - text);
            port = colon + 1;
            port_len = len - host_len - 1;
        }
    }
    if (host_len == 0 || host_len >= sizeof(gw->host))
        return -1;
    memcpy(gw->host, host, host_len);
    gw->host[host_len] = '\0';
    if (port == NULL) {
        snprintf(gw->port, sizeof(gw->port), "%d", SF_DEFAULT_PORT);
        return 0;
    }
    return parse_port(port, port_len, gw);
}

int sf_parse_addresses(const char *text, sf_gateway *gw, unsigned max, sf_error *err)
{
    unsigned count = 0;
    const char *p = text;

    if (text == NULL)
        return sf_fail(err, SF_E_RESOLVE, "no cluster address given"), -1;
    while (*p != '\0') {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        const char *item = p;
        while (len > 0 && (*item == ' ' || *item == '\t'))
            item++, len--;
        while (len > 0 && (item[len - 1] == ' ' || item[len - 1] == '\t'))
            len--;
        if (len > 0) {
            if (count == max)
                return sf_fail(err, SF_E_RESOLVE, "more than %u cluster addresses", max), -1;
            if (parse_one(item, len, &gw[count]) < 0)
                return sf_fail(err, SF_E_RESOLVE, "bad cluster address '%.*s' (want host:port)",
                               (int)(len > 200 ? 200 : len), item),
                       -1;
            count++;
        }
        if (end == NULL)
            break;
        p = end + 1;
    }
    if (count == 0)
        return sf_fail(err, SF_E_RESOLVE, "no cluster address given"), -1;
    return (int)count;
}

void sf_gateway_format(const sf_gateway *gw, char *out, size_t len)
{
    if (strchr(gw->host, ':') != NULL)
        snprintf(out, len, "[%s]:%s", gw->host, gw->port);
    else
        snprintf(out, len, "%s:%s", gw->host, gw->port);
}

/* --------------------------------------------------------------- deadlines */

/* One deadline per call: every wait inside a public call (connecting, each
 * reply, a resend elsewhere, checking copies) shares what is left of it.
 * Scopes nest, and an inner one never extends an outer one. 0: none. */
static __thread int64_t call_deadline_ms;

int64_t sf_deadline_begin(int timeout_ms)
{
    int64_t saved = call_deadline_ms;
    int64_t mine = sf_now_ms() + (timeout_ms > 0 ? timeout_ms : 0);
    if (saved == 0 || mine < saved)
        call_deadline_ms = mine;
    return saved;
}

void sf_deadline_end(int64_t saved)
{
    call_deadline_ms = saved;
}

int64_t sf_grace_begin(const sf_cluster *cl)
{
    int64_t saved = call_deadline_ms;
    int ms = cl->io_timeout_ms < SF_GRACE_MS ? cl->io_timeout_ms : SF_GRACE_MS;
    call_deadline_ms = sf_now_ms() + ms;
    return saved;
}

int64_t sf_call_begin(const sf_cluster *cl)
{
    return sf_deadline_begin(cl->io_timeout_ms);
}

int sf_time_left_ms(const sf_cluster *cl)
{
    if (call_deadline_ms == 0)
        return cl->io_timeout_ms;
    int64_t left = call_deadline_ms - sf_now_ms();
    return left > 0 ? (int)left : 0;
}

/* -------------------------------------------------------------- connecting */

static int wait_fd(int fd, short events, int timeout_ms)
{
    struct pollfd pfd = {.fd = fd, .events = events, .revents = 0};
    for (;;) {
        int r = poll(&pfd, 1, timeout_ms);
        if (r >= 0)
            return r;
        if (errno != EINTR)
            return -1;
    }
}

static int connect_addr(const struct addrinfo *ai, int timeout_ms, int *errnum)
{
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) {
        *errnum = errno;
        return -1;
    }
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
        if (errno != EINPROGRESS) {
            *errnum = errno;
            close(fd);
            return -1;
        }
        int r = wait_fd(fd, POLLOUT, timeout_ms);
        if (r <= 0) {
            *errnum = r == 0 ? ETIMEDOUT : errno;
            close(fd);
            return -1;
        }
        int soerr = 0;
        socklen_t sl = sizeof(soerr);
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0 || soerr != 0) {
            *errnum = soerr ? soerr : errno;
            close(fd);
            return -1;
        }
    }
    /* Requests are small headers followed by payloads we already batch. */
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}

int64_t sf_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

sf_conn *sf_connect_gateway(sf_cluster *cl, unsigned gw_index, sf_error *err)
{
    const sf_gateway *gw = &cl->gateways[gw_index];
    struct addrinfo hints, *res = NULL;
    int errnum = 0, fd = -1;

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(gw->host, gw->port, &hints, &res);
    if (rc != 0) {
        sf_fail(err, SF_E_RESOLVE, "cannot resolve %s: %s", gw->host, gai_strerror(rc));
        return NULL;
    }
    int timeout_ms = cl->connect_timeout_ms;
    if (gw_index >= cl->nr_configured && timeout_ms > SF_LEARNED_CONNECT_MS)
        timeout_ms = SF_LEARNED_CONNECT_MS;
    int left = sf_time_left_ms(cl);
    if (left < timeout_ms)
        timeout_ms = left;
    if (timeout_ms <= 0) {
        freeaddrinfo(res);
        char where[300];
        sf_gateway_format(gw, where, sizeof(where));
        sf_fail_errno(err, SF_E_TIMEOUT, ETIMEDOUT,
                      "no time left to connect to sheep at %s (io_timeout %d ms)", where,
                      cl->io_timeout_ms);
        return NULL;
    }
    for (struct addrinfo *ai = res; ai != NULL && fd < 0; ai = ai->ai_next)
        fd = connect_addr(ai, timeout_ms, &errnum);
    freeaddrinfo(res);
    if (fd < 0) {
        pthread_mutex_lock(&cl->lock);
        cl->down_until_ms[gw_index] = sf_now_ms() + SF_GATEWAY_DOWN_MS;
        pthread_mutex_unlock(&cl->lock);
        char where[300];
        sf_gateway_format(gw, where, sizeof(where));
        sf_fail_errno(err, errnum == ETIMEDOUT ? SF_E_TIMEOUT : SF_E_CONNECT, errnum,
                      "cannot connect to sheep at %s", where);
        return NULL;
    }
    sf_conn *conn = calloc(1, sizeof(*conn));
    if (conn == NULL) {
        close(fd);
        sf_fail(err, SF_E_NOMEM, "out of memory");
        return NULL;
    }
    conn->fd = fd;
    conn->gateway = gw_index;
    conn->next_id = 1;
    return conn;
}

sf_conn *sf_connect_any(sf_cluster *cl, unsigned first, sf_error *err)
{
    pthread_mutex_lock(&cl->lock);
    unsigned n = cl->nr_gateways;
    pthread_mutex_unlock(&cl->lock);
    /* gateways that recently refused or timed out are tried last */
    for (int pass = 0; pass < 2; pass++) {
        int64_t now = sf_now_ms();
        for (unsigned i = 0; i < n; i++) {
            unsigned gw = (first + i) % n;
            pthread_mutex_lock(&cl->lock);
            int down = cl->down_until_ms[gw] > now;
            pthread_mutex_unlock(&cl->lock);
            if (down != pass)
                continue;
            sf_conn *conn = sf_connect_gateway(cl, gw, err);
            if (conn != NULL)
                return conn;
            if (err->category == SF_E_TIMEOUT && sf_time_left_ms(cl) == 0)
                return NULL;
        }
    }
    return NULL;
}

void sf_conn_peer(sf_cluster *cl, const sf_conn *conn, char *out, size_t len)
{
    pthread_mutex_lock(&cl->lock);
    sf_gateway_format(&cl->gateways[conn->gateway], out, len);
    pthread_mutex_unlock(&cl->lock);
}

void sf_conn_close(sf_conn *conn)
{
    if (conn == NULL)
        return;
    if (conn->fd >= 0)
        close(conn->fd);
    free(conn);
}

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
    sf_ring *ring;                     /* placement, or NULL: route by load only */
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
    sf_req_encode(&op->req, op->wire_header);
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
        unsigned n = sf_ring_locate(e->ring, op->req.oid, op->route_copies, holders);
        for (unsigned i = 0; i < e->nr_lanes; i++) {
            int holds = 0;
            for (unsigned h = 0; h < n && !holds; h++)
                holds = e->lane_node[i] == holders[h];
            if (holds &&
                (best == NULL || e->lanes[i].nr_inflight < best->nr_inflight))
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

/* Writes as much of the send queue as the socket takes. */
static int lane_send(engine *e, lane *l, sf_error *err)
{
    while (l->send_count > 0) {
        struct iovec iov[64];
        int niov = 0;
        for (unsigned i = 0; i < l->send_count && niov + 2 <= 64; i++) {
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
                iov[niov].iov_base = (void *)((const uint8_t *)op->payload + (off - SF_HEADER_SIZE));
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
            char where[300];
            sf_conn_peer(e->cl, l->conn, where, sizeof(where));
            return sf_fail_errno(err, SF_E_IO, errnum, "sending to %s failed", where);
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
    sf_conn_peer(e->cl, l->conn, where, sizeof(where));
    if (l->conn->answered)
        return sf_fail(err, SF_E_PROTOCOL, "sheep at %s broke the protocol: %s", where, why);
    reply_text(l->rhdr, text, sizeof(text));
    if (text[0] != '\0')
        return sf_fail(err, SF_E_PROTOCOL,
                       "%s is not a Sheepdog server: it answered \"%s\" (%s)", where, text, why);
    return sf_fail(err, SF_E_PROTOCOL, "%s is not a Sheepdog server (%s)", where, why);
}

static int lane_reply_header(engine *e, lane *l, sf_error *err)
{
    sf_rsp rsp;
    sf_op *op = NULL;

    sf_rsp_decode(l->rhdr, &rsp);
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
                         sf_opcode_name(op->req.opcode), rsp.id);
    if (rsp.opcode != op->req.opcode)
        return bad_reply(e, l, err, "reply opcode 0x%02x to a %s request", rsp.opcode,
                         sf_opcode_name(op->req.opcode));
    /* Every length from the network is checked before anything is received. */
    if (rsp.data_length > op->reply_cap)
        return bad_reply(e, l, err, "%s reply carries %u bytes, at most %u expected",
                         sf_opcode_name(op->req.opcode), rsp.data_length, op->reply_cap);
    l->conn->answered = 1;
    op->rsp = rsp;
    sf_cluster_saw_epoch(e->cl, rsp.epoch);
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
            char where[300];
            sf_conn_peer(e->cl, l->conn, where, sizeof(where));
            return sf_fail(err, SF_E_IO, "%s closed the connection with %u request(s) in flight",
                           where, l->nr_inflight);
        }
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return SF_OK;
        {
            int errnum = errno;
            char where[300];
            sf_conn_peer(e->cl, l->conn, where, sizeof(where));
            return sf_fail_errno(err, SF_E_IO, errnum, "receiving from %s failed", where);
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
    if (l->reconnects >= SF_MAX_RECONNECTS || sf_time_left_ms(e->cl) == 0)
        return SF_ERR;
    for (unsigned i = 0; i < l->nr_inflight; i++)
        if (!l->inflight[i]->retryable)
            return SF_ERR;
    sf_error cerr;
    sf_conn *fresh = sf_connect_any(e->cl, l->conn->gateway + 1, &cerr);
    if (fresh == NULL)
        return SF_ERR;
    l->reconnects++;
    sf_conn_close(l->conn);
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
    sf_error_clear(err);
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
        int r = poll(pfd, e->nr_lanes, sf_time_left_ms(e->cl));
        if (r > 0)
            return SF_OK;
        if (r < 0 && errno == EINTR)
            continue;
        char where[300] = "";
        int64_t down_until = sf_now_ms() + SF_GATEWAY_DOWN_MS;
        for (unsigned i = 0; i < e->nr_lanes; i++) {
            lane *l = &e->lanes[i];
            if (!l->nr_inflight)
                continue;
            l->conn->broken = 1; /* replies may still come: never reuse */
            if (r == 0) {
                /* the next attempt (a cleanup, a retry) goes elsewhere first */
                pthread_mutex_lock(&e->cl->lock);
                e->cl->down_until_ms[l->conn->gateway] = down_until;
                pthread_mutex_unlock(&e->cl->lock);
                if (where[0] == '\0')
                    sf_gateway_format(&e->cl->gateways[l->conn->gateway], where, sizeof(where));
            }
        }
        if (r < 0)
            return sf_fail_errno(err, SF_E_IO, errno, "poll failed");
        return sf_fail(err, SF_E_TIMEOUT,
                       "no reply from sheep at %s within the %d ms io_timeout (%u request(s) in flight)",
                       where, e->cl->io_timeout_ms, e->nr_inflight);
    }
}

int sf_run_lanes(sf_cluster *cl, sf_conn **conns, unsigned nr_conns, sf_source *src,
                 unsigned depth, sf_error *err)
{
    engine e;
    memset(&e, 0, sizeof(e));
    e.cl = cl;
    e.src = src;
    e.depth = depth == 0 ? 1 : (depth > SF_MAX_DEPTH ? SF_MAX_DEPTH : depth);
    e.nr_lanes = nr_conns < SF_MAX_LANES ? nr_conns : SF_MAX_LANES;
    /* one lane has nothing to choose between */
    e.ring = e.nr_lanes > 1 ? sf_ring_get(cl) : NULL;
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
    sf_ring_put(cl, e.ring);
    return rc;
}

int sf_run(sf_cluster *cl, sf_conn **conn, sf_source *src, unsigned depth, sf_error *err)
{
    return sf_run_lanes(cl, conn, 1, src, depth, err);
}

typedef struct single {
    sf_op *op;
    int taken;
} single;

static sf_op *single_next(void *ctx)
{
    single *s = ctx;
    if (s->taken)
        return NULL;
    s->taken = 1;
    return s->op;
}

static void single_complete(void *ctx, sf_op *op)
{
    (void)ctx;
    (void)op;
}

int sf_call(sf_cluster *cl, sf_conn **conn, sf_op *op, sf_error *err)
{
    single s = {op, 0};
    sf_source src = {&s, single_next, single_complete};
    if (sf_run(cl, conn, &src, 1, err) != SF_OK)
        return SF_ERR;
    if (op->rsp.result != SF_RES_SUCCESS)
        return sf_fail_result(err, op->rsp.result, "%s", sf_opcode_name(op->req.opcode));
    return SF_OK;
}

void sf_op_read(sf_op *op, uint64_t oid, uint32_t offset, void *buf, uint32_t len)
{
    memset(op, 0, sizeof(*op));
    sf_req_init(&op->req, SF_OP_READ_OBJ);
    op->req.oid = oid;
    op->req.offset = offset;
    op->req.data_length = len;
    op->reply_buf = buf;
    op->reply_cap = len;
    op->retryable = 1;
}

void sf_op_named(sf_op *op, uint8_t opcode, uint8_t *payload, uint32_t payload_len,
                 const char *name, size_t name_len)
{
    memset(payload, 0, payload_len);
    memcpy(payload, name, name_len);
    memset(op, 0, sizeof(*op));
    sf_req_init(&op->req, opcode);
    op->req.flags = SF_FLAG_WRITE; /* without it sheep would not read the name */
    op->req.data_length = payload_len;
    op->payload = payload;
}

int sf_read_exact(sf_cluster *cl, sf_conn **conn, uint64_t oid, uint32_t offset, void *buf,
                  uint32_t len, sf_error *err)
{
    sf_op op;
    sf_op_read(&op, oid, offset, buf, len);
    if (sf_call(cl, conn, &op, err) != SF_OK)
        return SF_ERR;
    if (op.rsp.data_length != len)
        return sf_fail(err, SF_E_PROTOCOL, "read of object %016llx returned %u of %u bytes",
                       (unsigned long long)oid, op.rsp.data_length, len);
    return SF_OK;
}
