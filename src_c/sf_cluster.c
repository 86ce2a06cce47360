/*
 * Cluster handle: open and close, cluster defaults, the node list (which
 * teaches the pool new gateways and the ring where objects live). The
 * gateways and connections are in sf_pool.c, VDI operations by name in
 * sf_catalog.c.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sf_internal.h"

/* ------------------------------------------------------------ open / close */

/* The gateway a node record names, added to the list when new: its index,
 * or SF_RING_NO_GATEWAY (no usable address, or the list is full). */
static uint32_t learn_gateway(sf_cluster *cl, const uint8_t *record)
{
    char text[SF_ADDRESS_TEXT_MAX];
    sf_gateway gw;
    if (sfi_node_record_address(record, text, sizeof(text)) < 0 ||
        sfi_parse_addresses(text, &gw, 1, NULL) != 1)
        return SF_RING_NO_GATEWAY;
    return sfi_pool_learn_gateway(cl, &gw);
}

/* Takes in the node list just read (at epoch): learns each node's gateway
 * and builds the ring it describes when routing or when want_ring is set.
 * When routing, that ring replaces the cluster's. Returns it with a
 * reference when want_ring is set. */
static sf_ring *take_node_list(sf_cluster *cl, const uint8_t *records, uint32_t count,
                               uint32_t epoch, int want_ring)
{
    sf_error ignored;
    /* NULL when not wanted, or out of memory: then route by load */
    sf_ring *ring = (cl->route || want_ring) && !cl->disk_mode
                        ? sfi_ring_build(records, count, &ignored)
                        : NULL;
    for (uint32_t i = 0; i < count; i++) {
        uint32_t gw = learn_gateway(cl, records + (size_t)i * SF_NODE_RECORD_SIZE);
        if (ring == NULL)
            continue;
        ring->nodes[i].gateway = gw;
        int dup = 0; /* the gateways lanes go to: each once */
        for (unsigned j = 0; j < ring->nr_lane_gateways && !dup; j++)
            dup = ring->lane_gateways[j] == gw;
        if (gw != SF_RING_NO_GATEWAY && !dup)
            ring->lane_gateways[ring->nr_lane_gateways++] = gw;
    }
    if (ring == NULL)
        return NULL;
    ring->epoch = epoch;
    ring->refs = want_ring ? 1 : 0;
    if (!cl->route)
        return ring;
    ring->refs++;
    pthread_mutex_lock(&cl->lock);
    sf_ring *old = cl->ring;
    cl->ring = ring;
    cl->ring_time_ms = sfi_now_ms();
    pthread_mutex_unlock(&cl->lock);
    sfi_ring_put(cl, old);
    return want_ring ? ring : NULL;
}

/* GET_NODE_LIST: lets the client fail over to gateways it was not told of,
 * and tells it where objects live. */
static int refresh_nodes(sf_cluster *cl, sf_conn **conn, sf_ring **out, sf_error *err)
{
    /* sheep copies the list into our buffer without a bounds check, so the
     * buffer is always sized for the largest cluster. */
    uint8_t *buf = malloc(SF_NODE_LIST_BUF);
    if (buf == NULL)
        return sfi_fail(err, SF_E_NOMEM, "out of memory");
    sf_op op;
    memset(&op, 0, sizeof(op));
    sfi_req_init(&op.req, SF_OP_GET_NODE_LIST);
    op.req.data_length = SF_NODE_LIST_BUF;
    op.reply_buf = buf;
    op.reply_cap = SF_NODE_LIST_BUF;
    op.retryable = 1;
    int rc = sfi_call(cl, conn, &op, err);
    if (rc == SF_OK) {
        uint32_t n = op.rsp.nr_nodes;
        if (n > SF_MAX_NODES || (uint64_t)n * SF_NODE_RECORD_SIZE > op.rsp.data_length)
            rc = sfi_fail(err, SF_E_PROTOCOL, "GET_NODE_LIST: %u nodes in a %u-byte reply", n,
                          op.rsp.data_length);
        else {
            sf_ring *ring = take_node_list(cl, buf, n, op.rsp.epoch, out != NULL);
            if (out != NULL && (*out = ring) == NULL)
                rc = sfi_fail(err, cl->disk_mode ? SF_E_UNSUPPORTED : SF_E_NOMEM,
                              cl->disk_mode ? "object placement is not known on a disk-mode cluster"
                                            : "out of memory for the node ring");
        }
    }
    free(buf);
    return rc;
}

sf_ring *sfi_cluster_read_ring(sf_cluster *cl, sf_conn **conn, sf_error *err)
{
    sf_ring *ring = NULL;
    if (refresh_nodes(cl, conn, &ring, err) != SF_OK)
        return NULL;
    return ring;
}

void sfi_cluster_maybe_refresh(sf_cluster *cl, sf_conn **conn)
{
    pthread_mutex_lock(&cl->lock);
    int stale = cl->route && (sfi_now_ms() - cl->ring_time_ms >= SF_RING_REFRESH_MS ||
                              (cl->ring != NULL && cl->ring->epoch < sfi_cluster_epoch(cl)));
    if (stale)
        cl->ring_time_ms = sfi_now_ms(); /* one refresher at a time */
    pthread_mutex_unlock(&cl->lock);
    sf_error ignored;
    if (stale)
        refresh_nodes(cl, conn, NULL, &ignored); /* a failure keeps the old ring */
}

/* STAT_CLUSTER: the cluster flags. A disk-mode cluster places objects by
 * disk, which the node list does not describe: no routing there. */
static int check_placement_mode(sf_cluster *cl, sf_conn **conn, sf_error *err)
{
    uint8_t record[SF_STAT_CLUSTER_RECORD];
    sf_op op;
    memset(&op, 0, sizeof(op));
    sfi_req_init(&op.req, SF_OP_STAT_CLUSTER);
    op.req.data_length = sizeof(record);
    op.req.nodes_nr = 0;
    op.reply_buf = record;
    op.reply_cap = sizeof(record);
    op.retryable = 1;
    if (sfi_call(cl, conn, &op, err) != SF_OK)
        return SF_ERR;
    if (op.rsp.data_length < sizeof(record))
        return sfi_fail(err, SF_E_PROTOCOL, "STAT_CLUSTER returned %u of %zu bytes",
                        op.rsp.data_length, sizeof(record));
    cl->flags = sfi_get_le16(record + SF_STAT_CLUSTER_FLAGS_OFF);
    if (cl->flags & SF_CLUSTER_FLAG_DISKMODE) {
        cl->disk_mode = 1;
        cl->route = 0;
    }
    return SF_OK;
}

static int fetch_defaults(sf_cluster *cl, sf_conn **conn, sf_error *err)
{
    sf_op op;
    memset(&op, 0, sizeof(op));
    sfi_req_init(&op.req, SF_OP_GET_CLUSTER_DEFAULT);
    op.retryable = 1;
    if (sfi_call(cl, conn, &op, err) != SF_OK)
        return SF_ERR;
    cl->defaults.copies = op.rsp.default_copies;
    cl->defaults.copy_policy = op.rsp.default_copy_policy;
    cl->defaults.block_size_shift = op.rsp.default_bss;
    if (cl->defaults.block_size_shift < SF_MIN_BLOCK_SIZE_SHIFT ||
        cl->defaults.block_size_shift > SF_MAX_BLOCK_SIZE_SHIFT)
        return sfi_fail(err, SF_E_PROTOCOL, "cluster default block_size_shift %u is out of range",
                        cl->defaults.block_size_shift);
    return SF_OK;
}

/* Every option is checked here, once: nothing is clamped or wrapped. */
static int check_options(const sf_options *opt, sf_error *err)
{
    if (opt->connect_timeout_ms < 0 || opt->io_timeout_ms < 0)
        return sfi_fail(err, SF_E_INVALID,
                        "timeouts must be positive (got connect %d ms, io %d ms)",
                        opt->connect_timeout_ms, opt->io_timeout_ms);
    if (opt->depth > SF_MAX_DEPTH)
        return sfi_fail(err, SF_E_INVALID, "depth must be 1..%u, or 0 for %u (got %u)",
                        SF_MAX_DEPTH, SF_DEFAULT_DEPTH, opt->depth);
    if (opt->request_size % SF_REQUEST_ALIGN != 0)
        return sfi_fail(err, SF_E_INVALID, "request_size must be a multiple of %u (got %u)",
                        SF_REQUEST_ALIGN, opt->request_size);
    return SF_OK;
}

sf_cluster *sf_cluster_open(const sf_options *opt, sf_error *err)
{
    sfi_error_clear(err);
    sf_cluster *cl = calloc(1, sizeof(*cl));
    if (cl == NULL) {
        sfi_fail(err, SF_E_NOMEM, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&cl->lock, NULL);
    cl->refs = 1;
    if (check_options(opt, err) != SF_OK)
        goto fail;
    cl->connect_timeout_ms =
        opt->connect_timeout_ms ? opt->connect_timeout_ms : SF_DEFAULT_CONNECT_TIMEOUT_MS;
    cl->io_timeout_ms = opt->io_timeout_ms ? opt->io_timeout_ms : SF_DEFAULT_IO_TIMEOUT_MS;
    cl->depth = opt->depth ? opt->depth : SF_DEFAULT_DEPTH;
    cl->request_size = opt->request_size ? opt->request_size : SF_DEFAULT_REQUEST_SIZE;
    int n = sfi_parse_addresses(opt->addresses, cl->gateways, SF_MAX_GATEWAYS, err);
    if (n < 0)
        goto fail;
    cl->nr_configured = cl->nr_gateways = (unsigned)n;
    cl->route = !opt->no_routing;

    int64_t scope = sfi_call_begin(cl);
    sf_conn *conn = sfi_connect_any(cl, 0, err);
    if (conn == NULL) {
        sf_deadline_end(scope);
        goto fail;
    }
    /* The defaults double as the "is this a formatted sheep?" check. */
    if (fetch_defaults(cl, &conn, err) != SF_OK || check_placement_mode(cl, &conn, err) != SF_OK ||
        refresh_nodes(cl, &conn, NULL, err) != SF_OK) {
        sfi_conn_close(conn);
        sf_deadline_end(scope);
        goto fail;
    }
    sf_deadline_end(scope);
    sfi_pool_put(cl, conn);
    return cl;
fail:
    sfi_ring_free(cl->ring);
    pthread_mutex_destroy(&cl->lock);
    free(cl);
    return NULL;
}

void sfi_cluster_ref(sf_cluster *cl)
{
    pthread_mutex_lock(&cl->lock);
    cl->refs++;
    pthread_mutex_unlock(&cl->lock);
}

void sfi_cluster_unref(sf_cluster *cl)
{
    pthread_mutex_lock(&cl->lock);
    unsigned left = --cl->refs;
    pthread_mutex_unlock(&cl->lock);
    if (left > 0)
        return;
    sfi_ring_free(cl->ring); /* no run holds it any more */
    sfi_pool_drain(cl);
    pthread_mutex_destroy(&cl->lock);
    free(cl);
}

void sf_cluster_close(sf_cluster *cl)
{
    if (cl != NULL)
        sfi_cluster_unref(cl);
}

int sf_cluster_get_defaults(sf_cluster *cl, sf_cluster_defaults *out, sf_error *err)
{
    sfi_error_clear(err);
    *out = cl->defaults;
    return SF_OK;
}

unsigned sf_cluster_flags(const sf_cluster *cl)
{
    return cl->flags;
}

int sf_cluster_nodes(sf_cluster *cl, char *out, size_t out_len, sf_error *err)
{
    size_t used = 0;
    sfi_error_clear(err);
    if (out_len == 0)
        return sfi_fail(err, SF_E_INVALID, "empty output buffer");
    out[0] = '\0';
    pthread_mutex_lock(&cl->lock);
    for (unsigned i = 0; i < cl->nr_gateways; i++) {
        char text[SF_ADDRESS_TEXT_MAX];
        sfi_gateway_format(&cl->gateways[i], text, sizeof(text));
        int n = snprintf(out + used, out_len - used, "%s%s", i ? "," : "", text);
        if (n < 0 || (size_t)n >= out_len - used) {
            pthread_mutex_unlock(&cl->lock);
            return sfi_fail(err, SF_E_INVALID, "output buffer too small for the node list");
        }
        used += (size_t)n;
    }
    pthread_mutex_unlock(&cl->lock);
    return SF_OK;
}

int sf_cluster_locate(sf_cluster *cl, uint64_t oid, unsigned copies, char *out, size_t out_len,
                      sf_error *err)
{
    sfi_error_clear(err);
    if (out_len == 0)
        return sfi_fail(err, SF_E_INVALID, "empty output buffer");
    if (copies == 0 || copies > SF_MAX_COPIES)
        return sfi_fail(err, SF_E_INVALID, "copies must be 1..%u (got %u)", SF_MAX_COPIES, copies);
    out[0] = '\0';
    sf_ring *ring = sfi_ring_get(cl);
    if (ring == NULL)
        return sfi_fail(err, SF_E_UNSUPPORTED,
                        "object placement is not known (routing off, or a disk-mode cluster)");
    unsigned nodes[SF_MAX_COPIES];
    unsigned n = sfi_ring_locate(ring, oid, copies, nodes);
    size_t used = 0;
    int rc = SF_OK;
    for (unsigned i = 0; i < n && rc == SF_OK; i++) {
        char text[SF_ADDRESS_TEXT_MAX] = "?";
        uint32_t gw = ring->nodes[nodes[i]].gateway;
        if (gw != SF_RING_NO_GATEWAY)
            sfi_gateway_format(&cl->gateways[gw], text, sizeof(text));
        int w = snprintf(out + used, out_len - used, "%s%s", i ? "," : "", text);
        if (w < 0 || (size_t)w >= out_len - used)
            rc = sfi_fail(err, SF_E_INVALID, "output buffer too small for the locations");
        else
            used += (size_t)w;
    }
    sfi_ring_put(cl, ring);
    return rc;
}
