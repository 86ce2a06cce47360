/*
 * Where Sheepdog keeps an object: the consistent-hashing ring of virtual
 * nodes that every sheep computes from the node list.
 *
 * Any sheep serves any request, but one that holds a copy of the object
 * reads it from its own disk and, on a write, stores one copy locally and
 * forwards only the others. Sending each request to a holder saves the
 * cluster a network hop per object; getting it wrong costs nothing but that
 * hop, because the sheep still forwards. So this is purely a routing hint.
 *
 * The facts (Sheepdog 1.0, plain "node" vnode mode):
 *   hash(bytes)  = f(h, h) with h = FNV-1a-64 of the bytes, f = fnv_64a_64
 *   node vnodes  : h0 = hash(addr[16] + port u16 LE), then h(i+1) = f(h(i), h(i)),
 *                  nr_vnodes of them per node (0 for gateway-only nodes)
 *   oid position : h = fnv_64a_64(oid, FNV init); f(h, h)
 *   copy 0       : the first vnode with hash >= the oid's, wrapping to the lowest
 *   copy i > 0   : the next vnodes along the ring whose zone differs from every
 *                  copy already chosen
 * Clusters formatted in disk mode place objects by disk instead; the caller
 * does not build a ring for them.
 */
#include <stdlib.h>
#include <string.h>

#include "sf_internal.h"

#define FNV1A_64_INIT 0xcbf29ce484222325ULL
#define FNV_64_PRIME 0x100000001b3ULL

/* FNV-1a over the 8 little-endian bytes of v, starting from hval. */
static uint64_t fnv_64a_u64(uint64_t v, uint64_t hval)
{
    for (int i = 0; i < 8; i++) {
        hval ^= (v >> (8 * i)) & 0xff;
        hval *= FNV_64_PRIME;
    }
    return hval;
}

static uint64_t fnv_64a_bytes(const uint8_t *p, size_t len, uint64_t hval)
{
    for (size_t i = 0; i < len; i++) {
        hval ^= p[i];
        hval *= FNV_64_PRIME;
    }
    return hval;
}

uint64_t sfi_fnv1a_64(const void *p, size_t len)
{
    return fnv_64a_bytes(p, len, FNV1A_64_INIT);
}

static uint64_t hash_next(uint64_t h)
{
    return fnv_64a_u64(h, h);
}

static uint64_t oid_hash(uint64_t oid)
{
    return hash_next(fnv_64a_u64(oid, FNV1A_64_INIT));
}

static uint64_t node_hash(const uint8_t rec[SF_NODE_RECORD_SIZE])
{
    /* addr[16] and port, as sheep lays out its node id in memory */
    return hash_next(fnv_64a_bytes(rec + 24, 18, FNV1A_64_INIT));
}

static int vnode_cmp(const void *a, const void *b)
{
    const sf_ring_vnode *x = a, *y = b;
    if (x->hash != y->hash)
        return x->hash < y->hash ? -1 : 1;
    return x->node < y->node ? -1 : (x->node > y->node);
}

sf_ring *sfi_ring_build(const uint8_t *records, uint32_t count, sf_error *err)
{
    uint64_t total = 0;
    for (uint32_t i = 0; i < count; i++)
        total += sfi_get_le16(records + (size_t)i * SF_NODE_RECORD_SIZE + 64);
    /* nr_vnodes comes from the network: a ring is a hint, not worth more
     * than this much memory (sheep's default is 128 per node) */
    if (total > SF_RING_MAX_VNODES) {
        sfi_fail(err, SF_E_PROTOCOL, "node list names %llu vnodes, more than the %u routed by",
                 (unsigned long long)total, SF_RING_MAX_VNODES);
        return NULL;
    }
    sf_ring *ring = calloc(1, sizeof(*ring));
    if (ring == NULL ||
        (count > 0 && (ring->nodes = calloc(count, sizeof(*ring->nodes))) == NULL) ||
        (total > 0 && (ring->vnodes = malloc((size_t)total * sizeof(*ring->vnodes))) == NULL)) {
        sfi_ring_free(ring);
        sfi_fail(err, SF_E_NOMEM, "out of memory");
        return NULL;
    }
    ring->nr_nodes = count;
    for (uint32_t i = 0; i < count; i++) {
        const uint8_t *rec = records + (size_t)i * SF_NODE_RECORD_SIZE;
        ring->nodes[i].zone = sfi_get_le32(rec + 68);
        ring->nodes[i].gateway = SF_RING_NO_GATEWAY;
        uint16_t nr_vnodes = sfi_get_le16(rec + 64);
        uint64_t h = node_hash(rec);
        for (uint16_t v = 0; v < nr_vnodes; v++) {
            h = hash_next(h);
            ring->vnodes[ring->nr_vnodes].hash = h;
            ring->vnodes[ring->nr_vnodes].node = i;
            ring->nr_vnodes++;
        }
    }
    if (ring->nr_vnodes > 0) /* vnodes is NULL otherwise, which qsort may not take */
        qsort(ring->vnodes, ring->nr_vnodes, sizeof(*ring->vnodes), vnode_cmp);
    return ring;
}

void sfi_ring_free(sf_ring *ring)
{
    if (ring == NULL)
        return;
    free(ring->nodes);
    free(ring->vnodes);
    free(ring);
}

unsigned sfi_ring_locate(const sf_ring *ring, uint64_t oid, unsigned copies, unsigned *nodes)
{
    if (ring->nr_vnodes == 0 || copies == 0)
        return 0;
    uint64_t h = oid_hash(oid);
    /* first vnode with hash >= h, or wrap to the first */
    unsigned lo = 0, hi = ring->nr_vnodes;
    while (lo < hi) {
        unsigned mid = lo + (hi - lo) / 2;
        if (ring->vnodes[mid].hash < h)
            lo = mid + 1;
        else
            hi = mid;
    }
    unsigned start = lo == ring->nr_vnodes ? 0 : lo;
    unsigned found = 0;
    for (unsigned step = 0; step < ring->nr_vnodes && found < copies; step++) {
        unsigned node = ring->vnodes[(start + step) % ring->nr_vnodes].node;
        int same_zone = 0;
        for (unsigned j = 0; j < found && !same_zone; j++)
            same_zone = ring->nodes[nodes[j]].zone == ring->nodes[node].zone;
        if (!same_zone)
            nodes[found++] = node;
    }
    /* fewer zones than copies: sheep itself refuses such a layout */
    return found;
}

/* ------------------------------------------------- the cluster's membership */

uint32_t sfi_cluster_saw_epoch(sf_cluster *cl, uint32_t epoch)
{
    uint32_t seen = __atomic_load_n(&cl->epoch, __ATOMIC_RELAXED);
    while (epoch > seen && !__atomic_compare_exchange_n(&cl->epoch, &seen, epoch, 0,
                                                        __ATOMIC_RELAXED, __ATOMIC_RELAXED))
        ;
    if (epoch > seen && seen != 0) /* the first reply only tells where we start */
        __atomic_store_n(&cl->epoch_changed_ms, sfi_now_ms(), __ATOMIC_RELAXED);
    return epoch > seen ? epoch : seen;
}

uint32_t sfi_cluster_epoch(sf_cluster *cl)
{
    return __atomic_load_n(&cl->epoch, __ATOMIC_RELAXED);
}

int sfi_cluster_recovering(sf_cluster *cl)
{
    int64_t changed = __atomic_load_n(&cl->epoch_changed_ms, __ATOMIC_RELAXED);
    return changed != 0 && sfi_now_ms() - changed < SF_RECOVERY_WINDOW_MS;
}

sf_ring *sfi_ring_get(sf_cluster *cl)
{
    pthread_mutex_lock(&cl->lock);
    sf_ring *ring = cl->ring;
    if (ring != NULL)
        ring->refs++;
    pthread_mutex_unlock(&cl->lock);
    return ring;
}

void sfi_ring_put(sf_cluster *cl, sf_ring *ring)
{
    if (ring == NULL)
        return;
    pthread_mutex_lock(&cl->lock);
    unsigned left = --ring->refs;
    pthread_mutex_unlock(&cl->lock);
    if (left == 0)
        sfi_ring_free(ring);
}
