/*
 * The cluster's gateways and its connections to them: parsing addresses,
 * connecting (with the gateways that failed lately tried last), and the
 * pool of idle connections calls borrow from. The engine (sf_conn.c) and
 * the cluster (sf_cluster.c) reach the gateway list only through here.
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

int sfi_parse_addresses(const char *text, sf_gateway *gw, unsigned max, sf_error *err)
{
    unsigned count = 0;
    const char *p = text;

    if (text == NULL)
        return sfi_fail(err, SF_E_RESOLVE, "no cluster address given"), -1;
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
                return sfi_fail(err, SF_E_RESOLVE, "more than %u cluster addresses", max), -1;
            if (parse_one(item, len, &gw[count]) < 0)
                return sfi_fail(err, SF_E_RESOLVE, "bad cluster address '%.*s' (want host:port)",
                                (int)(len > 200 ? 200 : len), item),
                       -1;
            count++;
        }
        if (end == NULL)
            break;
        p = end + 1;
    }
    if (count == 0)
        return sfi_fail(err, SF_E_RESOLVE, "no cluster address given"), -1;
    return (int)count;
}

void sfi_gateway_format(const sf_gateway *gw, char *out, size_t len)
{
    if (strchr(gw->host, ':') != NULL)
        snprintf(out, len, "[%s]:%s", gw->host, gw->port);
    else
        snprintf(out, len, "%s:%s", gw->host, gw->port);
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

void sfi_pool_mark_down(sf_cluster *cl, unsigned gw_index)
{
    pthread_mutex_lock(&cl->lock);
    cl->down_until_ms[gw_index] = sfi_now_ms() + SF_GATEWAY_DOWN_MS;
    pthread_mutex_unlock(&cl->lock);
}

sf_conn *sfi_connect_gateway(sf_cluster *cl, unsigned gw_index, sf_error *err)
{
    const sf_gateway *gw = &cl->gateways[gw_index];
    struct addrinfo hints, *res = NULL;
    int errnum = 0, fd = -1;

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(gw->host, gw->port, &hints, &res);
    if (rc != 0) {
        sfi_fail(err, SF_E_RESOLVE, "cannot resolve %s: %s", gw->host, gai_strerror(rc));
        return NULL;
    }
    int timeout_ms = cl->connect_timeout_ms;
    if (gw_index >= cl->nr_configured && timeout_ms > SF_LEARNED_CONNECT_MS)
        timeout_ms = SF_LEARNED_CONNECT_MS;
    int left = sfi_time_left_ms(cl);
    if (left < timeout_ms)
        timeout_ms = left;
    if (timeout_ms <= 0) {
        freeaddrinfo(res);
        char where[SF_ADDRESS_TEXT_MAX];
        sfi_gateway_format(gw, where, sizeof(where));
        sfi_fail_errno(err, SF_E_TIMEOUT, ETIMEDOUT,
                       "no time left to connect to sheep at %s (io_timeout %d ms)", where,
                       cl->io_timeout_ms);
        return NULL;
    }
    for (struct addrinfo *ai = res; ai != NULL && fd < 0; ai = ai->ai_next)
        fd = connect_addr(ai, timeout_ms, &errnum);
    freeaddrinfo(res);
    if (fd < 0) {
        sfi_pool_mark_down(cl, gw_index);
        char where[SF_ADDRESS_TEXT_MAX];
        sfi_gateway_format(gw, where, sizeof(where));
        sfi_fail_errno(err, errnum == ETIMEDOUT ? SF_E_TIMEOUT : SF_E_CONNECT, errnum,
                       "cannot connect to sheep at %s", where);
        return NULL;
    }
    sf_conn *conn = calloc(1, sizeof(*conn));
    if (conn == NULL) {
        close(fd);
        sfi_fail(err, SF_E_NOMEM, "out of memory");
        return NULL;
    }
    conn->fd = fd;
    conn->gateway = gw_index;
    conn->next_id = 1;
    return conn;
}

sf_conn *sfi_connect_any(sf_cluster *cl, unsigned first, sf_error *err)
{
    pthread_mutex_lock(&cl->lock);
    unsigned n = cl->nr_gateways;
    pthread_mutex_unlock(&cl->lock);
    /* gateways that recently refused or timed out are tried last */
    for (int pass = 0; pass < 2; pass++) {
        int64_t now = sfi_now_ms();
        for (unsigned i = 0; i < n; i++) {
            unsigned gw = (first + i) % n;
            pthread_mutex_lock(&cl->lock);
            int down = cl->down_until_ms[gw] > now;
            pthread_mutex_unlock(&cl->lock);
            if (down != pass)
                continue;
            sf_conn *conn = sfi_connect_gateway(cl, gw, err);
            if (conn != NULL)
                return conn;
            if (err->category == SF_E_TIMEOUT && sfi_time_left_ms(cl) == 0)
                return NULL;
        }
    }
    return NULL;
}

void sfi_conn_peer(sf_cluster *cl, const sf_conn *conn, char *out, size_t len)
{
    pthread_mutex_lock(&cl->lock);
    sfi_gateway_format(&cl->gateways[conn->gateway], out, len);
    pthread_mutex_unlock(&cl->lock);
}

void sfi_conn_close(sf_conn *conn)
{
    if (conn == NULL)
        return;
    if (conn->fd >= 0)
        close(conn->fd);
    free(conn);
}

/* ------------------------------------------------------------ idle pool */

/* An idle connection has nothing to say; if it is readable, the peer
 * closed it (or broke the protocol) while it sat in the pool. */
static int idle_conn_alive(const sf_conn *conn)
{
    struct pollfd pfd = {.fd = conn->fd, .events = POLLIN, .revents = 0};
    return poll(&pfd, 1, 0) == 0;
}

sf_conn *sfi_pool_get(sf_cluster *cl, sf_error *err)
{
    sf_conn *conn;
    pthread_mutex_lock(&cl->lock);
    int64_t now = sfi_now_ms();
    while ((conn = cl->idle) != NULL) {
        cl->idle = conn->next_idle;
        cl->nr_idle--;
        conn->next_idle = NULL;
        /* a gateway that just timed out may be stopped: its idle
         * connections look healthy but would hang the next call */
        if (idle_conn_alive(conn) && cl->down_until_ms[conn->gateway] <= now)
            break;
        sfi_conn_close(conn);
    }
    /* New connections go round the gateways so that parallel callers spread. */
    unsigned first = cl->next_gateway;
    cl->next_gateway = (cl->next_gateway + 1) % cl->nr_configured;
    pthread_mutex_unlock(&cl->lock);
    if (conn != NULL)
        return conn;
    return sfi_connect_any(cl, first, err);
}

/* An idle, healthy connection to gateway gw, or NULL. */
static sf_conn *take_idle_for(sf_cluster *cl, unsigned gw)
{
    pthread_mutex_lock(&cl->lock);
    sf_conn **link = &cl->idle, *found = NULL;
    while (*link != NULL) {
        sf_conn *c = *link;
        if (c->gateway != gw) {
            link = &c->next_idle;
            continue;
        }
        *link = c->next_idle;
        cl->nr_idle--;
        c->next_idle = NULL;
        if (idle_conn_alive(c)) {
            found = c;
            break;
        }
        sfi_conn_close(c);
    }
    pthread_mutex_unlock(&cl->lock);
    return found;
}

/* The gateways a transfer's lanes go to: with a known ring, every sheep in
 * the node list, so each read can go to one holding its object; otherwise
 * the configured gateways. Returns how many. */
static unsigned lane_gateways(sf_cluster *cl, unsigned *gws)
{
    unsigned nr = 0;
    pthread_mutex_lock(&cl->lock);
    if (cl->ring != NULL) {
        nr = cl->ring->nr_lane_gateways;
        memcpy(gws, cl->ring->lane_gateways, nr * sizeof(gws[0]));
    }
    if (nr < 2) { /* no ring, or nothing to spread over */
        nr = 0;
        for (unsigned i = 0; i < cl->nr_configured; i++)
            gws[nr++] = i;
    }
    pthread_mutex_unlock(&cl->lock);
    return nr;
}

/* A connection to gateway gw (idle, or new), or NULL when gw is marked down
 * or does not answer now. */
static sf_conn *conn_if_up(sf_cluster *cl, unsigned gw, int64_t now)
{
    pthread_mutex_lock(&cl->lock);
    int down = cl->down_until_ms[gw] > now;
    pthread_mutex_unlock(&cl->lock);
    if (down)
        return NULL;
    sf_conn *c = take_idle_for(cl, gw);
    if (c == NULL) {
        sf_error ignored;
        c = sfi_connect_gateway(cl, gw, &ignored);
    }
    return c;
}

unsigned sfi_pool_get_lanes(sf_cluster *cl, sf_conn **conns, unsigned max, sf_error *err)
{
    unsigned gws[SF_MAX_GATEWAYS];
    unsigned nr = lane_gateways(cl, gws);
    pthread_mutex_lock(&cl->lock);
    unsigned first = cl->next_lane++ % nr;
    pthread_mutex_unlock(&cl->lock);
    if (max <= 1 || nr <= 1) {
        conns[0] = sfi_pool_get(cl, err);
        return conns[0] != NULL;
    }
    unsigned got = 0;
    int64_t now = sfi_now_ms();
    for (unsigned i = 0; i < nr && got < max; i++) {
        sf_conn *c = conn_if_up(cl, gws[(first + i) % nr], now); /* down: one lane fewer */
        if (c != NULL)
            conns[got++] = c;
    }
    if (got == 0 && (conns[0] = sfi_pool_get(cl, err)) != NULL)
        got = 1;
    return got;
}

sf_conn *sfi_pool_get_holder(sf_cluster *cl, uint64_t oid, unsigned copies, sf_error *err)
{
    sf_ring *ring = copies > 0 ? sfi_ring_get(cl) : NULL;
    sf_conn *c = NULL;
    if (ring != NULL) {
        unsigned nodes[SF_MAX_COPIES];
        unsigned n = sfi_ring_locate(ring, oid, copies, nodes);
        pthread_mutex_lock(&cl->lock);
        unsigned first = n > 0 ? cl->next_lane++ % n : 0; /* the copies share the reads */
        pthread_mutex_unlock(&cl->lock);
        int64_t now = sfi_now_ms();
        for (unsigned i = 0; i < n && c == NULL; i++) { /* a holder down: the next, then any */
            uint32_t gw = ring->nodes[nodes[(first + i) % n]].gateway;
            if (gw != SF_RING_NO_GATEWAY)
                c = conn_if_up(cl, gw, now);
        }
        sfi_ring_put(cl, ring);
    }
    return c != NULL ? c : sfi_pool_get(cl, err);
}

void sfi_pool_put(sf_cluster *cl, sf_conn *conn)
{
    if (conn == NULL)
        return;
    if (!conn->broken) {
        pthread_mutex_lock(&cl->lock);
        if (cl->nr_idle < SF_MAX_IDLE_CONNS) {
            conn->next_idle = cl->idle;
            cl->idle = conn;
            cl->nr_idle++;
            conn = NULL;
        }
        pthread_mutex_unlock(&cl->lock);
    }
    sfi_conn_close(conn);
}

/* Closes every idle connection; the cluster is going away. */
void sfi_pool_drain(sf_cluster *cl)
{
    pthread_mutex_lock(&cl->lock);
    while (cl->idle != NULL) {
        sf_conn *next = cl->idle->next_idle;
        sfi_conn_close(cl->idle);
        cl->idle = next;
    }
    cl->nr_idle = 0;
    pthread_mutex_unlock(&cl->lock);
}

uint32_t sfi_pool_learn_gateway(sf_cluster *cl, const sf_gateway *gw)
{
    uint32_t found = SF_RING_NO_GATEWAY;
    pthread_mutex_lock(&cl->lock);
    for (unsigned j = 0; j < cl->nr_gateways && found == SF_RING_NO_GATEWAY; j++)
        if (strcmp(cl->gateways[j].host, gw->host) == 0 &&
            strcmp(cl->gateways[j].port, gw->port) == 0)
            found = j;
    if (found == SF_RING_NO_GATEWAY && cl->nr_gateways < SF_MAX_GATEWAYS) {
        cl->gateways[cl->nr_gateways] = *gw;
        found = cl->nr_gateways++;
    }
    pthread_mutex_unlock(&cl->lock);
    return found;
}
