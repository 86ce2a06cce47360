/*
 * VDI handles: the data path.
 *
 * A byte range maps to object requests that the engine keeps `depth` deep.
 * The index (data_vdi_id[]) is cached per handle and fetched lazily, a page
 * at a time, only for the objects a call touches. Unallocated objects read
 * as zeros locally. New objects are created with CREATE_AND_WRITE and their
 * index entries are written afterwards in batches, one index write in flight
 * at a time so that two batches can never overwrite each other out of order.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sf_internal.h"

#define INDEX_BATCH 128u /* entries per index write */

int sfi_is_zero(const void *buf, size_t len)
{
    const uint8_t *p = buf;
    /* Check a short prefix, then compare the buffer with itself shifted by
     * that prefix: memcmp is vectorised, a byte loop is not. */
    size_t head = len < 16 ? len : 16;
    for (size_t i = 0; i < head; i++)
        if (p[i] != 0)
            return 0;
    return len <= 16 || memcmp(p, p + 16, len - 16) == 0;
}

/* ----------------------------------------------------------------- handle */

/* The most objects a handle keeps an index for (4 bytes each, in memory):
 * every flat VDI, and hyper volumes up to 64 TiB of 4 MiB objects. */
#define MAX_HANDLE_OBJECTS (1u << 24)

static uint64_t objects_for(uint64_t size, uint64_t objsize)
{
    return size / objsize + (size % objsize != 0);
}

static int check_object_count(const sf_vdi *vdi, uint64_t size, sf_error *err)
{
    uint64_t n = objects_for(size, vdi->object_size);
    if (n > MAX_HANDLE_OBJECTS)
        return sfi_fail(err, SF_E_UNSUPPORTED,
                        "VDI '%s' of %llu bytes has %llu objects; sheepfast handles at most %u",
                        vdi->info.name, (unsigned long long)size, (unsigned long long)n,
                        MAX_HANDLE_OBJECTS);
    return SF_OK;
}

static int index_reserve(sf_vdi *vdi, uint32_t nr, sf_error *err)
{
    if (nr <= vdi->index_capacity)
        return SF_OK;
    uint32_t pages_old = (vdi->index_capacity + SF_INDEX_PAGE - 1) / SF_INDEX_PAGE;
    uint32_t pages_new = (nr + SF_INDEX_PAGE - 1) / SF_INDEX_PAGE;
    uint32_t cap = pages_new * SF_INDEX_PAGE;
    uint32_t *index = realloc(vdi->index, (size_t)cap * sizeof(uint32_t));
    if (index == NULL)
        return sfi_fail(err, SF_E_NOMEM, "out of memory for the index of %u objects", nr);
    vdi->index = index;
    memset(index + vdi->index_capacity, 0, (size_t)(cap - vdi->index_capacity) * sizeof(uint32_t));
    uint8_t *loaded = realloc(vdi->page_loaded, pages_new);
    if (loaded == NULL)
        return sfi_fail(err, SF_E_NOMEM, "out of memory for the index of %u objects", nr);
    vdi->page_loaded = loaded;
    memset(loaded + pages_old, 0, pages_new - pages_old);
    vdi->index_capacity = cap;
    return SF_OK;
}

/* Hyper volumes keep their index in a B-tree (docs/PROTOCOL.md section 5.2). It is read
 * once, whole, at open; this client reads them but does not write them. */
static int load_btree_leaf_entries(sf_vdi *vdi, const uint8_t *entries, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        uint32_t idx = sfi_get_le32(entries + 8 * i), vid = sfi_get_le32(entries + 8 * i + 4);
        if (vid > SF_MAX_VID)
            return SF_ERR;
        if (idx < vdi->nr_objects)
            vdi->index[idx] = vid;
    }
    return SF_OK;
}

static int load_btree(sf_vdi *vdi, sf_conn **conn, sf_error *err)
{
    const uint32_t node_cap = ((4u << 20) - 8) / 8;
    uint8_t hdr[8];
    uint64_t inode = sfi_inode_oid(vdi->info.vid);
    if (sfi_read_exact(vdi->cl, conn, inode, SF_INODE_INDEX_OFF, hdr, 8, err) != SF_OK)
        return SF_ERR;
    uint16_t magic = sfi_get_le16(hdr), depth = sfi_get_le16(hdr + 2);
    uint32_t n = sfi_get_le32(hdr + 4);
    /* a depth-2 root holds 16-byte (index, leaf oid) pairs in the same space */
    if (magic != SF_BTREE_MAGIC || depth < 1 || depth > 2 || n > node_cap / (depth == 2 ? 2 : 1))
        return sfi_fail(err, SF_E_PROTOCOL,
                        "VDI 0x%x: bad B-tree root (magic 0x%x depth %u, %u entries)",
                        vdi->info.vid, magic, depth, n);
    if (n == 0) { /* nothing allocated: every entry is 0, and all of it is known */
        memset(vdi->page_loaded, 1, (vdi->index_capacity + SF_INDEX_PAGE - 1) / SF_INDEX_PAGE);
        return SF_OK;
    }
    size_t entry_size = depth == 1 ? 8 : 16;
    uint8_t *root = malloc(n * entry_size);
    uint8_t *leaf = depth == 2 ? malloc(4u << 20) : NULL;
    int rc = SF_OK;
    if (root == NULL || (depth == 2 && leaf == NULL)) {
        rc = sfi_fail(err, SF_E_NOMEM, "out of memory");
        goto out;
    }
    rc = sfi_read_exact(vdi->cl, conn, inode, SF_INODE_INDEX_OFF + 8, root,
                        (uint32_t)(n * entry_size), err);
    if (rc != SF_OK)
        goto out;
    if (depth == 1) {
        if (load_btree_leaf_entries(vdi, root, n) != SF_OK)
            rc = sfi_fail(err, SF_E_PROTOCOL, "VDI 0x%x: B-tree entry is not a vid", vdi->info.vid);
        goto out;
    }
    for (uint32_t i = 0; i < n && rc == SF_OK; i++) {
        uint64_t node = sfi_get_le64(root + 16 * i + 8);
        rc = sfi_read_exact(vdi->cl, conn, node, 0, leaf, 8, err);
        if (rc != SF_OK)
            break;
        uint32_t m = sfi_get_le32(leaf + 4);
        if (sfi_get_le16(leaf) != SF_BTREE_MAGIC || m > node_cap) {
            rc = sfi_fail(err, SF_E_PROTOCOL, "VDI 0x%x: bad B-tree leaf %016llx", vdi->info.vid,
                          (unsigned long long)node);
            break;
        }
        if (m > 0 && (rc = sfi_read_exact(vdi->cl, conn, node, 8, leaf, m * 8, err)) == SF_OK &&
            load_btree_leaf_entries(vdi, leaf, m) != SF_OK)
            rc = sfi_fail(err, SF_E_PROTOCOL, "VDI 0x%x: B-tree entry is not a vid", vdi->info.vid);
    }
out:
    free(root);
    free(leaf);
    if (rc == SF_OK)
        memset(vdi->page_loaded, 1, (vdi->index_capacity + SF_INDEX_PAGE - 1) / SF_INDEX_PAGE);
    return rc;
}

/* Caches count raw index entries read from the inode for page. */
static int index_page_store(sf_vdi *vdi, uint32_t page, const uint8_t *raw, uint32_t count,
                            sf_error *err)
{
    uint32_t start = page * SF_INDEX_PAGE;
    /* Entries name a vid: anything wider than 24 bits is not an index. */
    for (uint32_t i = 0; i < count; i++)
        if (sfi_get_le32(raw + 4 * i) > SF_MAX_VID)
            return sfi_fail(err, SF_E_PROTOCOL, "VDI '%s': index entry %u holds 0x%x, not a vid",
                            vdi->info.name, start + i, sfi_get_le32(raw + 4 * i));
    pthread_mutex_lock(&vdi->lock);
    if (!vdi->page_loaded[page]) {
        for (uint32_t i = 0; i < count; i++)
            vdi->index[start + i] = sfi_get_le32(raw + 4 * i);
        vdi->page_loaded[page] = 1;
    }
    pthread_mutex_unlock(&vdi->lock);
    return SF_OK;
}

static uint32_t index_page_entries(uint32_t nr_objects, uint32_t page)
{
    uint32_t start = page * SF_INDEX_PAGE;
    return nr_objects - start < SF_INDEX_PAGE ? nr_objects - start : SF_INDEX_PAGE;
}

static void vdi_free(sf_vdi *vdi)
{
    pthread_mutex_destroy(&vdi->lock);
    pthread_mutex_destroy(&vdi->alloc_lock);
    free(vdi->head);
    free(vdi->index);
    free(vdi->page_loaded);
    free(vdi);
}

/* Whether object 0 is the VDI's own, as far as the cached index knows
 * (-1: not known). */
static int head_owned(sf_vdi *vdi)
{
    pthread_mutex_lock(&vdi->lock);
    int owned = vdi->nr_objects == 0 || !vdi->page_loaded[0] ? -1 : vdi->index[0] == vdi->info.vid;
    pthread_mutex_unlock(&vdi->lock);
    return owned;
}

/* The bytes read ahead at open serve the first read only, and only if it
 * lies within them; whatever comes first drops them. */
static int take_head(sf_vdi *vdi, void *buf, uint64_t len, uint64_t offset)
{
    pthread_mutex_lock(&vdi->lock);
    uint8_t *head = vdi->head;
    int taken = head != NULL && offset <= vdi->head_len && len <= vdi->head_len - offset;
    if (taken && len > 0)
        memcpy(buf, head + offset, (size_t)len);
    vdi->head = NULL;
    pthread_mutex_unlock(&vdi->lock);
    free(head);
    return taken;
}

static void drop_head(sf_vdi *vdi)
{
    take_head(vdi, NULL, UINT64_MAX, 0);
}

uint32_t sf_vdi_read_ahead_held(sf_vdi *vdi)
{
    pthread_mutex_lock(&vdi->lock);
    uint32_t held = vdi->head != NULL ? vdi->head_len : 0;
    pthread_mutex_unlock(&vdi->lock);
    return held;
}

static sf_vdi *sfi_vdi_open_in_call(sf_cluster *cl, const char *name, size_t name_len,
                                    const sf_snap_ref *at, uint32_t read_ahead, sf_error *err)
{
    sfi_error_clear(err);
    if (read_ahead > SF_READ_AHEAD_MAX) {
        sfi_fail(err, SF_E_INVALID, "read_ahead must be at most %u bytes (got %u)",
                 SF_READ_AHEAD_MAX, read_ahead);
        return NULL;
    }
    sf_vdi *vdi = calloc(1, sizeof(*vdi));
    if (vdi == NULL) {
        sfi_fail(err, SF_E_NOMEM, "out of memory");
        return NULL;
    }
    vdi->cl = cl;
    vdi->thin = 1;
    pthread_mutex_init(&vdi->lock, NULL);
    pthread_mutex_init(&vdi->alloc_lock, NULL);
    sf_conn *conn = NULL;
    /* the first read is then one request, not two (or none, read ahead) */
    sf_inode_extra extra = {.head_len = read_ahead};
    if (read_ahead > 0 && (extra.head = malloc(read_ahead)) == NULL)
        extra.head_len = 0; /* a hint: no memory, no read ahead */
    int rc = sfi_stat_by_name(cl, &conn, name, name_len, at, &vdi->info, &extra, err);
    if (rc == SF_OK) {
        vdi->object_size = (uint64_t)1 << vdi->info.block_size_shift;
        rc = check_object_count(vdi, vdi->info.size, err);
    }
    if (rc == SF_OK) {
        vdi->nr_objects = (uint32_t)objects_for(vdi->info.size, vdi->object_size);
        rc = index_reserve(vdi, vdi->nr_objects, err);
    }
    if (rc == SF_OK && vdi->info.store_policy == 1)
        rc = load_btree(vdi, &conn, err);
    else if (rc == SF_OK && vdi->nr_objects > 0)
        rc =
            index_page_store(vdi, 0, extra.index_head, index_page_entries(vdi->nr_objects, 0), err);
    if (rc == SF_OK)
        sfi_cluster_maybe_refresh(cl, &conn); /* nodes come and go: keep routing true */
    sfi_pool_put(cl, conn);
    if (rc != SF_OK) {
        free(extra.head);
        vdi_free(vdi);
        return NULL;
    }
    int owned = head_owned(vdi);
    if (owned >= 0 && sfi_snap_ref_is_working(at))
        sfi_vid_memo_note_head(cl, name, name_len, vdi->info.vid, owned);
    if (extra.head_read && owned == 1) {
        vdi->head = extra.head;
        vdi->head_len = vdi->info.size < read_ahead ? (uint32_t)vdi->info.size : read_ahead;
        vdi->stats.read_requests++;
    } else {
        free(extra.head);
    }
    sfi_cluster_ref(cl);
    return vdi;
}

void sf_vdi_close(sf_vdi *vdi)
{
    if (vdi == NULL)
        return;
    sf_cluster *cl = vdi->cl;
    /* what this handle wrote decides the next open's read ahead */
    int owned = head_owned(vdi);
    if (owned >= 0 && vdi->info.snap_ctime == 0)
        sfi_vid_memo_note_head(cl, vdi->info.name, strlen(vdi->info.name), vdi->info.vid, owned);
    vdi_free(vdi);
    sfi_cluster_unref(cl); /* the cluster outlives its last open VDI */
}

const sf_vdi_info *sf_vdi_get_info(const sf_vdi *vdi)
{
    return &vdi->info;
}

void sf_vdi_set_thin(sf_vdi *vdi, int enabled)
{
    vdi->thin = enabled != 0;
}

void sf_vdi_get_stats(const sf_vdi *vdi, sf_vdi_stats *out)
{
    pthread_mutex_lock((pthread_mutex_t *)&vdi->lock);
    *out = vdi->stats;
    pthread_mutex_unlock((pthread_mutex_t *)&vdi->lock);
}

/* Fetches the index pages covering [first, last] that are not cached yet. */
static int ensure_index(sf_vdi *vdi, sf_conn **conn, uint32_t first, uint32_t last, sf_error *err)
{
    uint32_t page_first = first / SF_INDEX_PAGE, page_last = last / SF_INDEX_PAGE;
    uint8_t raw[SF_INDEX_PAGE * 4];

    for (uint32_t page = page_first; page <= page_last; page++) {
        pthread_mutex_lock(&vdi->lock);
        int loaded = vdi->page_loaded[page];
        uint32_t nr_objects = vdi->nr_objects;
        pthread_mutex_unlock(&vdi->lock);
        if (loaded)
            continue;
        uint32_t start = page * SF_INDEX_PAGE, count = index_page_entries(nr_objects, page);
        if (sfi_read_exact(vdi->cl, conn, sfi_inode_oid(vdi->info.vid),
                           SF_INODE_INDEX_OFF + 4 * start, raw, 4 * count, err) != SF_OK ||
            index_page_store(vdi, page, raw, count, err) != SF_OK)
            return SF_ERR;
    }
    return SF_OK;
}

uint64_t sf_vdi_size(sf_vdi *vdi)
{
    pthread_mutex_lock(&vdi->lock); /* resize() may be changing it */
    uint64_t size = vdi->info.size;
    pthread_mutex_unlock(&vdi->lock);
    return size;
}

static int sfi_vdi_usage_in_call(sf_vdi *vdi, uint64_t *used_bytes, uint64_t *shared_bytes,
                                 sf_error *err)
{
    sfi_error_clear(err);
    *used_bytes = *shared_bytes = 0;
    pthread_mutex_lock(&vdi->lock);
    uint32_t nr = vdi->nr_objects;
    pthread_mutex_unlock(&vdi->lock);
    if (nr == 0)
        return SF_OK;
    sf_conn *conn = sfi_pool_get(vdi->cl, err);
    int rc = conn ? ensure_index(vdi, &conn, 0, nr - 1, err) : SF_ERR;
    sfi_pool_put(vdi->cl, conn);
    if (rc != SF_OK)
        return rc;
    uint64_t own = 0, inherited = 0;
    pthread_mutex_lock(&vdi->lock);
    for (uint32_t i = 0; i < nr; i++) {
        if (vdi->index[i] == vdi->info.vid)
            own++;
        else if (vdi->index[i] != 0)
            inherited++;
    }
    pthread_mutex_unlock(&vdi->lock);
    /* what dog lists as "used" and "shared" */
    *used_bytes = own * vdi->object_size;
    *shared_bytes = inherited * vdi->object_size;
    return SF_OK;
}

static int check_range(sf_vdi *vdi, const char *what, uint64_t len, uint64_t offset, sf_error *err)
{
    uint64_t size = sf_vdi_size(vdi);
    if (offset > size || len > size - offset)
        return sfi_fail(err, SF_E_RANGE,
                        "%s of %llu bytes at offset %llu is past the end of VDI '%s' (%llu bytes)",
                        what, (unsigned long long)len, (unsigned long long)offset, vdi->info.name,
                        (unsigned long long)size);
    return SF_OK;
}

/* ------------------------------------------------------------- transfers */

/* One object's share of a transfer. It goes out as requests of at most
 * cl->request_size bytes; a write that creates the object sends its first
 * request as the CREATE and the rest once that succeeded. */
typedef struct piece {
    uint32_t idx;
    uint32_t offset; /* inside the object */
    uint32_t len;
    uint32_t entry;  /* index entry when planned */
    uint8_t *buf;    /* caller memory */
    uint32_t issued; /* bytes already sent in requests */
    uint8_t suspect; /* written across a membership change: its copies may differ */
    uint8_t differs; /* a copy was found not to hold what was written */
    /* flatten: no data; a zero-length CREATE with COW makes sheep copy the
     * inherited object into ours (checked on real sheep) */
    uint8_t copy;
    uint8_t copy_sent;
} piece;

typedef struct transfer {
    sf_vdi *vdi;
    int writing;
    piece *pieces;
    uint32_t nr_pieces, next_piece; /* next_piece: the first not started */
    /* pieces whose CREATE succeeded and that still have requests to send */
    uint32_t *ready;
    uint32_t ready_head, nr_ready;
    uint32_t request_size;
    sf_op *ops;           /* one slot per op in flight */
    uint32_t *slot_piece; /* which piece a data op in a slot belongs to */
    unsigned *free_slots, nr_free;
    uint64_t nr_reads, nr_writes, nr_creates;
    /* writes: objects created and not yet in the index */
    uint32_t *created;
    uint32_t nr_created;
    int index_write_busy;
    uint8_t *index_payload; /* INDEX_BATCH entries */
    uint32_t index_first, index_count;
    uint32_t batch[INDEX_BATCH]; /* created objects the index write in flight covers */
    uint32_t nr_batch;
    unsigned index_failures; /* index writes refused: each batch is tried twice */
    /* objects whose CREATE failed: a gateway may still have made some copies */
    uint32_t *uncertain;
    uint32_t nr_uncertain;
    int failed;
    sf_error err;
    uint64_t nr_routed;
    /* the membership epoch the transfer started in; a reply from another
     * one, or a resend, makes what it wrote suspect */
    uint32_t epoch;
    uint32_t nr_suspect;
    int index_suspect;
    int recovering; /* started soon after a membership change: overwrites are suspect */
    int thin;       /* skip all-zero writes to holes */
} transfer;

/* Replicated objects can go straight to a sheep holding them; erasure-coded
 * ones are striped over every node, so any gateway is as good. */
static uint8_t route_copies(const sf_vdi *vdi)
{
    return vdi->info.copy_policy == 0 ? vdi->info.copies : 0;
}

static void transfer_fail(transfer *t, const sf_op *op, const char *what)
{
    if (t->failed)
        return;
    t->failed = 1;
    uint64_t oid = op->req.oid;
    if (op->rsp.result == SF_RES_READONLY && t->vdi->info.snap_ctime == 0) {
        sfi_fail_result(&t->err, op->rsp.result,
                        "VDI '%s' was snapshotted after it was opened; open it again to write",
                        t->vdi->info.name);
        return;
    }
    sfi_fail_result(&t->err, op->rsp.result, "%s object %u of VDI '%s' (oid %016llx)", what,
                    (uint32_t)oid, t->vdi->info.name, (unsigned long long)oid);
}

static sf_op *take_slot(transfer *t)
{
    if (t->nr_free == 0)
        return NULL;
    unsigned slot = t->free_slots[--t->nr_free];
    sf_op *op = &t->ops[slot];
    memset(op, 0, sizeof(*op));
    op->tag = slot;
    op->owner = t;
    op->retryable = 1;
    return op;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* Builds the next index write: from the lowest created object, a run of up
 * to INDEX_BATCH entries. Gaps in the run may only hold entries that are 0 in
 * the cache (rewriting 0 with 0 changes nothing in sheep); an entry that
 * points at an object is never rewritten with its old value, since sheep
 * would treat that as a reference change. */
static sf_op *next_index_write(transfer *t, int flush_all)
{
    sf_vdi *vdi = t->vdi;
    if (t->index_write_busy || t->nr_created == 0 || t->index_failures > 1)
        return NULL;
    if (!flush_all && t->nr_created < INDEX_BATCH)
        return NULL;
    sf_op *op = take_slot(t);
    if (op == NULL)
        return NULL;
    qsort(t->created, t->nr_created, sizeof(uint32_t), cmp_u32);
    uint32_t first = t->created[0], taken = 1;
    pthread_mutex_lock(&vdi->lock);
    while (taken < t->nr_created && t->created[taken] - first < INDEX_BATCH) {
        int gap_is_empty = 1;
        for (uint32_t i = t->created[taken - 1] + 1; i < t->created[taken] && gap_is_empty; i++)
            gap_is_empty = vdi->index[i] == 0;
        if (!gap_is_empty)
            break;
        taken++;
    }
    uint32_t last = t->created[taken - 1];
    for (uint32_t i = first; i <= last; i++)
        sfi_put_le32(t->index_payload + 4 * (i - first), vdi->index[i]);
    pthread_mutex_unlock(&vdi->lock);
    for (uint32_t i = 0; i < taken; i++)
        sfi_put_le32(t->index_payload + 4 * (t->created[i] - first), vdi->info.vid);
    memcpy(t->batch, t->created, taken * sizeof(uint32_t));
    t->nr_batch = taken;
    memmove(t->created, t->created + taken, (t->nr_created - taken) * sizeof(uint32_t));
    t->nr_created -= taken;
    t->index_first = first;
    t->index_count = last - first + 1;
    t->index_write_busy = 1;
    sfi_req_init(&op->req, SF_OP_WRITE_OBJ);
    op->req.flags = SF_FLAG_WRITE;
    op->req.oid = sfi_inode_oid(vdi->info.vid);
    op->req.copies = vdi->info.copies;
    op->req.copy_policy = vdi->info.copy_policy;
    op->req.offset = SF_INODE_INDEX_OFF + 4 * first;
    op->req.data_length = 4 * t->index_count;
    op->payload = t->index_payload;
    return op;
}

/* The bytes of p the next request carries: up to the next multiple of the
 * request size inside the object, so that requests stay aligned however
 * the caller's range starts. */
static uint32_t next_request_len(const transfer *t, const piece *p)
{
    uint32_t at = p->offset + p->issued;
    uint32_t boundary = (at / t->request_size + 1) * t->request_size; /* <= object size */
    uint32_t end = p->offset + p->len;
    return (boundary < end ? boundary : end) - at;
}

/* The piece the next data request comes from: first those whose CREATE
 * is done (finishing objects before starting more keeps few of them half
 * written, should the call fail), then the next one not yet started. NULL
 * when everything left waits for a CREATE. */
static piece *next_data_piece(transfer *t)
{
    if (t->nr_ready > 0)
        return &t->pieces[t->ready[t->ready_head]];
    while (t->next_piece < t->nr_pieces) {
        piece *p = &t->pieces[t->next_piece];
        if (p->copy && !p->copy_sent)
            return p;
        if (p->issued < p->len && (p->issued == 0 || !t->writing || p->entry == t->vdi->info.vid))
            return p;
        t->next_piece++; /* all sent, or the rest waits for its CREATE */
    }
    return NULL;
}

static sf_op *transfer_next(void *ctx)
{
    transfer *t = ctx;
    sf_vdi *vdi = t->vdi;
    sf_op *op;
    piece *p;

    if (t->writing && (op = next_index_write(t, 0)) != NULL)
        return op;
    /* After a failure no new data goes out, but created objects still get
     * their index entries: an unindexed object is never reclaimed. */
    if (t->failed || (p = next_data_piece(t)) == NULL)
        return t->writing ? next_index_write(t, 1) : NULL;
    if ((op = take_slot(t)) == NULL)
        return NULL;
    uint32_t at = p->issued, len = next_request_len(t, p);
    int creating = t->writing && p->entry != vdi->info.vid && at == 0;
    p->issued += len;
    p->copy_sent = p->copy;
    t->slot_piece[op->tag] = (uint32_t)(p - t->pieces);
    if (t->nr_ready > 0 && &t->pieces[t->ready[t->ready_head]] == p && p->issued == p->len) {
        t->ready_head = (t->ready_head + 1) % t->nr_pieces;
        t->nr_ready--;
    }
    if (!t->writing) {
        /* entry names the owner: this VDI or the ancestor it inherits from */
        uint32_t slot = op->tag;
        sfi_op_read(op, sfi_data_oid(p->entry, p->idx), p->offset + at, p->buf + at, len);
        op->tag = slot; /* sfi_op_read starts from a clean op */
        op->owner = t;
        t->nr_reads++;
    } else if (!creating) {
        /* our object, or one whose CREATE this transfer already saw succeed */
        sfi_req_init(&op->req, SF_OP_WRITE_OBJ);
        op->req.oid = sfi_data_oid(vdi->info.vid, p->idx);
        t->nr_writes++;
    } else {
        sfi_req_init(&op->req, SF_OP_CREATE_AND_WRITE_OBJ);
        op->req.oid = sfi_data_oid(vdi->info.vid, p->idx);
        if (p->entry != 0) { /* inherited from an ancestor: copy-on-write */
            op->req.flags = SF_FLAG_COW;
            op->req.cow_oid = sfi_data_oid(p->entry, p->idx);
        }
        t->nr_creates++;
    }
    op->req.offset = p->offset + at;
    op->req.data_length = len;
    if (t->writing) {
        op->req.flags |= SF_FLAG_WRITE;
        op->req.copies = vdi->info.copies;
        op->req.copy_policy = vdi->info.copy_policy;
        op->payload = p->buf + at;
    }
    /* Only reads: a sheep reads its own copy from disk, but forwards
     * every write over a socket, even to itself (measured: no gain). */
    op->route_copies = t->writing ? 0 : route_copies(vdi);
    return op;
}

/* Sheep 1.0 can acknowledge a write that reached the gateway around a
 * membership change and still leave a copy without it (recovery of the
 * object on its new holder races with the write). What such a write
 * touched is checked copy by copy before the call returns. */
static int crossed_membership_change(transfer *t, const sf_op *op)
{
    if (t->epoch == 0)
        t->epoch = op->rsp.epoch;
    if (op->resent || op->rsp.epoch != t->epoch)
        return 1;
    /* While sheep may still be recovering, an object that existed before
     * this call can lose a write on its new copy; one this call created is
     * not in any recovery list. */
    if (!t->recovering)
        return 0;
    if (op->req.oid == sfi_inode_oid(t->vdi->info.vid))
        return 1; /* the inode always exists before the call */
    return t->pieces[t->slot_piece[op->tag]].entry == t->vdi->info.vid;
}

static void transfer_complete(void *ctx, sf_op *op)
{
    transfer *t = ctx;
    sf_vdi *vdi = t->vdi;
    t->free_slots[t->nr_free++] = op->tag;
    t->nr_routed += op->routed;

    if (t->writing && crossed_membership_change(t, op)) {
        if (op->req.oid == sfi_inode_oid(vdi->info.vid)) {
            t->index_suspect = 1;
        } else {
            piece *p = &t->pieces[t->slot_piece[op->tag]];
            t->nr_suspect += !p->suspect;
            p->suspect = 1;
        }
    }
    if (op->req.opcode == SF_OP_WRITE_OBJ && op->req.oid == sfi_inode_oid(vdi->info.vid)) {
        t->index_write_busy = 0;
        if (op->rsp.result != SF_RES_SUCCESS) {
            /* its objects exist: they go back to be indexed, or nothing
             * would ever reclaim them */
            memcpy(t->created + t->nr_created, t->batch, t->nr_batch * sizeof(uint32_t));
            t->nr_created += t->nr_batch;
            t->nr_batch = 0;
            t->index_failures++;
            transfer_fail(t, op, "updating the index for");
            return;
        }
        t->nr_batch = 0;
        /* the cache learns an entry only once the inode holds it */
        pthread_mutex_lock(&vdi->lock);
        for (uint32_t i = 0; i < t->index_count; i++)
            vdi->index[t->index_first + i] = sfi_get_le32(t->index_payload + 4 * i);
        vdi->stats.index_updates++;
        pthread_mutex_unlock(&vdi->lock);
        return;
    }
    if (op->rsp.result != SF_RES_SUCCESS) {
        if (op->req.opcode == SF_OP_CREATE_AND_WRITE_OBJ)
            t->uncertain[t->nr_uncertain++] = (uint32_t)op->req.oid;
        transfer_fail(t, op, t->writing ? "writing" : "reading");
        return;
    }
    if (!t->writing && op->rsp.data_length != op->req.data_length) {
        if (!t->failed) {
            t->failed = 1;
            sfi_fail(&t->err, SF_E_PROTOCOL, "read of object %u returned %u of %u bytes",
                     (uint32_t)op->req.oid, op->rsp.data_length, op->req.data_length);
        }
        return;
    }
    if (op->req.opcode == SF_OP_CREATE_AND_WRITE_OBJ) {
        t->created[t->nr_created++] = (uint32_t)op->req.oid;
        uint32_t i = t->slot_piece[op->tag];
        if (t->pieces[i].issued < t->pieces[i].len) { /* the rest may go now */
            t->ready[(t->ready_head + t->nr_ready) % t->nr_pieces] = i;
            t->nr_ready++;
        }
    }
}

/* The write failed. Objects already created must still reach the index, or
 * nothing will ever reclaim them: on a fresh connection, send only the index
 * writes (best effort; the caller gets the original error). A CREATE whose
 * reply was lost, or that failed (a gateway may have made some copies), may
 * or may not have happened: each such object is probed first and indexed
 * only if it exists. */
static void index_created_after_loss(transfer *t, sf_conn **lanes, unsigned nr_lanes)
{
    sf_cluster *cl = t->vdi->cl;
    sf_error ignored;
    uint8_t in_use[SF_MAX_DEPTH];

    memcpy(t->created + t->nr_created, t->batch, t->nr_batch * sizeof(uint32_t));
    t->nr_created += t->nr_batch;
    t->nr_batch = 0;
    memset(in_use, 1, sizeof(in_use));
    for (unsigned i = 0; i < t->nr_free; i++)
        in_use[t->free_slots[i]] = 0;
    for (unsigned i = 1; i < nr_lanes; i++) {
        sfi_pool_put(cl, lanes[i]); /* broken ones are closed */
        lanes[i] = NULL;
    }
    sf_conn **conn = &lanes[0];
    sfi_pool_put(cl, *conn);
    if ((*conn = sfi_pool_get(cl, &ignored)) == NULL)
        return;
    for (unsigned slot = 0; slot < cl->depth; slot++) {
        const sf_op *op = &t->ops[slot];
        uint8_t probe;
        if (!in_use[slot] || op->req.opcode != SF_OP_CREATE_AND_WRITE_OBJ)
            continue;
        if (sfi_read_exact(cl, conn, op->req.oid, 0, &probe, 1, &ignored) == SF_OK)
            t->created[t->nr_created++] = (uint32_t)op->req.oid;
        else if (ignored.category != SF_E_SERVER)
            return; /* this connection failed too: give up */
    }
    for (uint32_t i = 0; i < t->nr_uncertain; i++) {
        uint8_t probe;
        uint64_t oid = sfi_data_oid(t->vdi->info.vid, t->uncertain[i]);
        if (sfi_read_exact(cl, conn, oid, 0, &probe, 1, &ignored) == SF_OK)
            t->created[t->nr_created++] = t->uncertain[i];
        else if (ignored.category != SF_E_SERVER)
            return;
    }
    t->nr_uncertain = 0;
    if (t->nr_created == 0)
        return;
    t->index_failures = 0;
    t->failed = 1; /* no more data */
    t->next_piece = t->nr_pieces;
    t->nr_ready = 0;
    t->index_write_busy = 0;
    t->nr_free = 0;
    for (unsigned i = 0; i < cl->depth; i++)
        t->free_slots[t->nr_free++] = i;
    sf_source src = {t, transfer_next, transfer_complete};
    sfi_run(cl, conn, &src, 1, &ignored);
}

/* ------------------------------------------ settling after a membership change */

/* Check-and-rewrite passes before a write whose copies keep differing fails. */
#define SETTLE_ROUNDS 3
/* How long a check that could not reach a copy waits for the cluster to
 * agree on its members before looking again. */
#define SETTLE_PAUSE_MS 500

/* Reads back every suspect piece from one copy (the one on ring node
 * `node`; with no ring, whatever copy the gateway picks) and marks the
 * pieces that copy does not hold exactly. */
typedef struct copy_check {
    transfer *t;
    const sf_ring *ring; /* NULL: placement unknown (disk mode) or erasure coded */
    unsigned node;
    uint32_t next_piece, at;
    uint8_t *scratch; /* one request_size buffer per slot */
    sf_op *ops;
    uint32_t *slot_piece;
    unsigned *free_slots, nr_free;
    uint64_t nr_checked;
} copy_check;

static int ring_node_holds(const sf_ring *ring, unsigned node, uint64_t oid, unsigned copies)
{
    unsigned holders[SF_MAX_COPIES];
    unsigned n = sfi_ring_locate(ring, oid, copies, holders);
    for (unsigned i = 0; i < n; i++)
        if (holders[i] == node)
            return 1;
    return 0;
}

static sf_op *check_next(void *ctx)
{
    copy_check *c = ctx;
    transfer *t = c->t;
    sf_vdi *vdi = t->vdi;
    while (c->next_piece < t->nr_pieces) {
        piece *p = &t->pieces[c->next_piece];
        uint64_t oid = sfi_data_oid(vdi->info.vid, p->idx);
        if (!p->suspect || p->differs || c->at >= p->len ||
            (c->ring != NULL && !ring_node_holds(c->ring, c->node, oid, vdi->info.copies))) {
            c->next_piece++;
            c->at = 0;
            continue;
        }
        if (c->nr_free == 0)
            return NULL;
        unsigned slot = c->free_slots[--c->nr_free];
        uint32_t len = p->len - c->at < t->request_size ? p->len - c->at : t->request_size;
        sf_op *op = &c->ops[slot];
        sfi_op_read(op, oid, p->offset + c->at, c->scratch + (size_t)slot * t->request_size, len);
        /* never resent elsewhere: another sheep would answer from another copy */
        op->retryable = 0;
        op->tag = slot;
        c->slot_piece[slot] = c->next_piece;
        if (c->at == 0)
            c->nr_checked++;
        c->at += len;
        return op;
    }
    return NULL;
}

static void check_complete(void *ctx, sf_op *op)
{
    copy_check *c = ctx;
    piece *p = &c->t->pieces[c->slot_piece[op->tag]];
    uint32_t at = op->req.offset - p->offset;
    if (op->rsp.result != SF_RES_SUCCESS || op->rsp.data_length != op->req.data_length ||
        memcmp(op->reply_buf, p->buf + at, op->req.data_length) != 0)
        p->differs = 1;
    c->free_slots[c->nr_free++] = op->tag;
}

/* One pass of check_next over the copy on `node`, through that sheep. */
static int check_one_copy(copy_check *c, const sf_ring *ring, unsigned node, sf_error *err)
{
    sf_cluster *cl = c->t->vdi->cl;
    sf_conn *conn;
    c->ring = ring;
    c->node = node;
    c->next_piece = c->at = 0;
    if (ring == NULL) {
        conn = sfi_pool_get(cl, err);
    } else {
        uint32_t gw = ring->nodes[node].gateway;
        if (gw == SF_RING_NO_GATEWAY)
            return sfi_fail(
                err, SF_E_CONNECT,
                "cannot check a copy of VDI '%s': a sheep holding one has no usable address",
                c->t->vdi->info.name);
        conn = sfi_connect_gateway(cl, gw, err);
    }
    if (conn == NULL)
        return SF_ERR;
    sf_source src = {c, check_next, check_complete};
    int rc = sfi_run(cl, &conn, &src, cl->depth, err);
    sfi_pool_put(cl, conn);
    return rc;
}

/* Marks, on each suspect piece, whether some copy differs from what was
 * written. Replicated objects are read copy by copy from the sheep holding
 * each (a sheep reads its own copy); without a placement, or for erasure
 * coded objects, one read through a gateway is all there is. */
static int check_data_copies(transfer *t, const sf_ring *ring, uint64_t *nr_checked, sf_error *err)
{
    sf_cluster *cl = t->vdi->cl;
    copy_check c;
    memset(&c, 0, sizeof(c));
    c.t = t;
    c.scratch = malloc((size_t)cl->depth * t->request_size);
    c.ops = calloc(cl->depth, sizeof(sf_op));
    c.slot_piece = malloc(cl->depth * sizeof(uint32_t));
    c.free_slots = malloc(cl->depth * sizeof(unsigned));
    int rc = SF_OK;
    if (!c.scratch || !c.ops || !c.slot_piece || !c.free_slots) {
        rc = sfi_fail(err, SF_E_NOMEM, "out of memory for checking copies");
        goto out;
    }
    for (unsigned i = 0; i < cl->depth; i++)
        c.free_slots[c.nr_free++] = i;
    if (ring == NULL || t->vdi->info.copy_policy != 0) {
        rc = check_one_copy(&c, NULL, 0, err);
    } else {
        for (unsigned node = 0; node < ring->nr_nodes && rc == SF_OK; node++)
            rc = check_one_copy(&c, ring, node, err);
    }
    *nr_checked += c.nr_checked;
out:
    free(c.scratch);
    free(c.ops);
    free(c.slot_piece);
    free(c.free_slots);
    return rc;
}

/* The index entries of every piece, on every copy of the inode, must name
 * this VDI. A copy that lost one gets it written again: sheep changes no
 * reference count when an entry is rewritten with the value it holds. */
static int check_index_copies(transfer *t, const sf_ring *ring, int *rewrote, sf_error *err)
{
    sf_vdi *vdi = t->vdi;
    sf_cluster *cl = vdi->cl;
    uint64_t inode = sfi_inode_oid(vdi->info.vid);
    uint32_t lo = t->pieces[0].idx, hi = t->pieces[t->nr_pieces - 1].idx;
    uint32_t n = hi - lo + 1;
    uint8_t *raw = malloc((size_t)n * 4);
    uint8_t *missing = calloc(n, 1);
    int rc = SF_OK;
    *rewrote = 0;
    if (raw == NULL || missing == NULL) {
        rc = sfi_fail(err, SF_E_NOMEM, "out of memory for checking the index");
        goto out;
    }
    for (unsigned node = 0; ring != NULL && node < ring->nr_nodes && rc == SF_OK; node++) {
        if (!ring_node_holds(ring, node, inode, vdi->info.copies))
            continue;
        uint32_t gw = ring->nodes[node].gateway;
        sf_conn *conn = gw == SF_RING_NO_GATEWAY ? NULL : sfi_connect_gateway(cl, gw, err);
        if (conn == NULL) {
            rc = SF_ERR;
            break;
        }
        sf_op op;
        sfi_op_read(&op, inode, SF_INODE_INDEX_OFF + 4 * lo, raw, 4 * n);
        op.retryable = 0; /* this copy, not another */
        rc = sfi_call(cl, &conn, &op, err);
        if (rc == SF_OK && op.rsp.data_length != 4 * n)
            rc = sfi_fail(err, SF_E_PROTOCOL, "index read of VDI '%s' returned %u of %u bytes",
                          vdi->info.name, op.rsp.data_length, 4 * n);
        sfi_pool_put(cl, conn);
        for (uint32_t i = 0; i < t->nr_pieces && rc == SF_OK; i++)
            if (sfi_get_le32(raw + 4 * (t->pieces[i].idx - lo)) != vdi->info.vid)
                missing[t->pieces[i].idx - lo] = 1;
    }
    for (uint32_t i = 0; i < n && rc == SF_OK; i++) {
        if (!missing[i])
            continue;
        uint8_t entry[4];
        sfi_put_le32(entry, vdi->info.vid);
        sf_op op;
        memset(&op, 0, sizeof(op));
        sfi_req_init(&op.req, SF_OP_WRITE_OBJ);
        op.req.flags = SF_FLAG_WRITE;
        op.req.oid = inode;
        op.req.copies = vdi->info.copies;
        op.req.copy_policy = vdi->info.copy_policy;
        op.req.offset = SF_INODE_INDEX_OFF + 4 * (lo + i);
        op.req.data_length = 4;
        op.payload = entry;
        op.retryable = 1;
        sf_conn *conn = sfi_pool_get(cl, err);
        rc = conn ? sfi_call(cl, &conn, &op, err) : SF_ERR;
        sfi_pool_put(cl, conn);
        *rewrote = 1;
    }
out:
    free(raw);
    free(missing);
    return rc;
}

/* A write that crossed a membership change returns only once every copy
 * of what it wrote holds it: on the placement of the cluster's current
 * epoch, each suspect object is read back from every copy and rewritten
 * where one differs, until all agree or SETTLE_ROUNDS passes are spent. */
static int settle_writes(transfer *t, sf_conn **lanes, unsigned nr_lanes, sf_error *err)
{
    sf_vdi *vdi = t->vdi;
    sf_cluster *cl = vdi->cl;
    uint64_t nr_checked = 0, nr_rewritten = 0;
    int rc = SF_ERR;
    enum { SF_AGAIN = 1 }; /* rewritten, not yet checked */

    for (unsigned round = 0; round < SETTLE_ROUNDS; round++) {
        sf_conn *conn = sfi_pool_get(cl, err);
        if (conn == NULL)
            break;
        sf_error ring_err;
        sf_ring *ring = sfi_cluster_read_ring(cl, &conn, &ring_err);
        sfi_pool_put(cl, conn);
        if (ring == NULL && !cl->disk_mode) {
            *err = ring_err;
            break;
        }
        t->epoch = ring ? ring->epoch : sfi_cluster_epoch(cl);
        for (uint32_t i = 0; i < t->nr_pieces; i++)
            t->pieces[i].differs = 0;
        int index_rewrote = 0;
        rc = check_data_copies(t, ring, &nr_checked, err);
        if (rc == SF_OK && t->index_suspect && ring != NULL)
            rc = check_index_copies(t, ring, &index_rewrote, err);
        sfi_ring_put(cl, ring);
        if (rc != SF_OK) {
            /* a sheep went away meanwhile, or the node list still named
             * one that left: look again on the next epoch's placement */
            int left = sfi_time_left_ms(cl);
            if (left <= SETTLE_PAUSE_MS)
                break;
            struct timespec pause = {0, SETTLE_PAUSE_MS * 1000000L};
            nanosleep(&pause, NULL);
            continue;
        }
        uint32_t differing = 0;
        for (uint32_t i = 0; i < t->nr_pieces; i++) {
            piece *p = &t->pieces[i];
            p->suspect = p->differs;
            p->issued = p->differs ? 0 : p->len;
            if (p->differs)
                p->entry = vdi->info.vid; /* created and indexed by now */
            p->differs = 0;
            differing += p->suspect;
        }
        t->index_suspect = index_rewrote;
        if (differing == 0 && !index_rewrote)
            goto done;
        if (differing == 0) {
            rc = SF_AGAIN; /* the index was mended: check it once more */
            continue;
        }
        /* Write the differing objects again, whole, as this call wrote them. */
        nr_rewritten += differing;
        t->next_piece = 0;
        t->nr_ready = t->ready_head = 0;
        for (unsigned i = 0; i < nr_lanes; i++) {
            sfi_pool_put(cl, lanes[i]);
            lanes[i] = NULL;
        }
        unsigned got = sfi_pool_get_lanes(cl, lanes, SF_MAX_LANES, err);
        if (got == 0) {
            rc = SF_ERR;
            break;
        }
        sf_source src = {t, transfer_next, transfer_complete};
        rc = sfi_run_lanes(cl, lanes, got, &src, cl->depth, err);
        for (unsigned i = 0; i < got; i++) {
            sfi_pool_put(cl, lanes[i]);
            lanes[i] = NULL;
        }
        if (rc == SF_OK && t->failed) {
            *err = t->err;
            rc = SF_ERR;
            break;
        }
        if (rc != SF_OK)
            break;
        /* what was just rewritten stays suspect: the next round checks it */
        rc = SF_AGAIN;
    }
    if (rc == SF_AGAIN || rc == SF_OK)
        rc = sfi_fail(err, SF_E_IO,
                      "the copies of VDI '%s' still differ after %u rewrites (the cluster changed "
                      "membership during the write); the data is not safely stored",
                      vdi->info.name, SETTLE_ROUNDS);
    goto out;
done:
    rc = SF_OK;
out:
    pthread_mutex_lock(&vdi->lock);
    vdi->stats.objects_checked += nr_checked;
    vdi->stats.objects_rewritten += nr_rewritten;
    pthread_mutex_unlock(&vdi->lock);
    return rc;
}

/* Splits [offset, offset+len) at object boundaries and plans each piece. */
static uint32_t plan_pieces(sf_vdi *vdi, uint8_t *buf, uint64_t len, uint64_t offset, piece *out)
{
    uint32_t n = 0;
    while (len > 0) {
        uint32_t idx = (uint32_t)(offset >> vdi->info.block_size_shift);
        uint64_t in_obj = offset & (vdi->object_size - 1);
        uint64_t take = vdi->object_size - in_obj;
        if (take > len)
            take = len;
        out[n].idx = idx;
        out[n].offset = (uint32_t)in_obj;
        out[n].len = (uint32_t)take;
        out[n].buf = buf;
        out[n].issued = 0;
        out[n].suspect = out[n].differs = 0;
        out[n].copy = out[n].copy_sent = 0;
        n++;
        buf += take;
        offset += take;
        len -= take;
    }
    return n;
}

/* A copy piece per object in [first, first + count): no data, see piece.copy. */
static uint32_t plan_copies(uint32_t first, uint32_t count, piece *out)
{
    static uint8_t no_data; /* payload pointer of zero-length requests */
    for (uint32_t i = 0; i < count; i++) {
        memset(&out[i], 0, sizeof(out[i]));
        out[i].idx = first + i;
        out[i].buf = &no_data;
        out[i].copy = 1;
    }
    return count;
}

/* Allocates what a transfer of count objects with depth ops in flight needs. */
static int transfer_init(transfer *t, sf_vdi *vdi, int writing, uint32_t count, sf_error *err)
{
    sf_cluster *cl = vdi->cl;
    unsigned depth = cl->depth;
    memset(t, 0, sizeof(*t));
    t->vdi = vdi;
    t->writing = writing;
    t->epoch = sfi_cluster_epoch(cl);
    t->recovering = writing && sfi_cluster_recovering(cl);
    t->request_size =
        cl->request_size < vdi->object_size ? cl->request_size : (uint32_t)vdi->object_size;
    t->pieces = malloc((size_t)count * sizeof(piece));
    t->ops = calloc(depth, sizeof(sf_op));
    t->slot_piece = malloc(depth * sizeof(uint32_t));
    t->free_slots = malloc(depth * sizeof(unsigned));
    if (writing) {
        t->created = malloc((size_t)count * sizeof(uint32_t));
        t->uncertain = malloc((size_t)count * sizeof(uint32_t));
        t->ready = malloc((size_t)count * sizeof(uint32_t));
        t->index_payload = malloc(INDEX_BATCH * sizeof(uint32_t));
    }
    if (!t->pieces || !t->ops || !t->slot_piece || !t->free_slots ||
        (writing && (!t->created || !t->uncertain || !t->ready || !t->index_payload)))
        return sfi_fail(err, SF_E_NOMEM, "out of memory");
    for (unsigned i = 0; i < depth; i++)
        t->free_slots[t->nr_free++] = i;
    return SF_OK;
}

static void transfer_release(transfer *t)
{
    free(t->pieces);
    free(t->ops);
    free(t->slot_piece);
    free(t->free_slots);
    free(t->ready);
    free(t->created);
    free(t->uncertain);
    free(t->index_payload);
}

/* Copies each planned piece's index entry. Returns whether the write
 * allocates objects: then it holds vdi->alloc_lock (until
 * transfer_finish), and the entries are read again under it, since
 * another thread may have created some of these objects meanwhile. */
static int read_entries(transfer *t, uint32_t planned)
{
    sf_vdi *vdi = t->vdi;
    int allocating = 0;
    pthread_mutex_lock(&vdi->lock);
    for (uint32_t i = 0; i < planned; i++) {
        t->pieces[i].entry = vdi->index[t->pieces[i].idx];
        if (t->writing && t->pieces[i].entry != vdi->info.vid)
            allocating = 1;
    }
    pthread_mutex_unlock(&vdi->lock);
    if (!allocating)
        return 0;
    pthread_mutex_lock(&vdi->alloc_lock);
    pthread_mutex_lock(&vdi->lock);
    for (uint32_t i = 0; i < planned; i++)
        t->pieces[i].entry = vdi->index[t->pieces[i].idx];
    pthread_mutex_unlock(&vdi->lock);
    return 1;
}

/* Drops the pieces that need no request: holes on read (zero-filled here),
 * and on write all-zero data aimed at an unallocated object (thin). Returns
 * how many writes it skipped. */
static uint32_t drop_needless_pieces(transfer *t, uint32_t planned)
{
    uint32_t kept = 0, zero_skipped = 0;
    for (uint32_t i = 0; i < planned; i++) {
        piece *p = &t->pieces[i];
        if (p->copy && (p->entry == 0 || p->entry == t->vdi->info.vid))
            continue; /* nothing inherited to copy */
        if (p->entry == 0 && !t->writing) {
            memset(p->buf, 0, p->len);
            continue;
        }
        if (p->entry == 0 && t->writing && t->thin && sfi_is_zero(p->buf, p->len)) {
            zero_skipped++;
            continue;
        }
        t->pieces[kept++] = *p;
    }
    t->nr_pieces = kept;
    return zero_skipped;
}

/* After the run: a failed write still indexes what it created (in a grace
 * period of its own), a Sheepdog error becomes the call's, and writes that
 * crossed a membership change are checked copy by copy. */
static int transfer_finish(transfer *t, int rc, sf_conn **lanes, unsigned nr_lanes, sf_error *err)
{
    sf_cluster *cl = t->vdi->cl;
    if (t->writing && (rc != SF_OK || (t->failed && (t->nr_created > 0 || t->nr_uncertain > 0)))) {
        int64_t scope = sfi_grace_begin(cl);
        index_created_after_loss(t, lanes, nr_lanes);
        sf_deadline_end(scope);
    }
    if (rc == SF_OK && t->failed) {
        *err = t->err;
        rc = SF_ERR;
    }
    if (rc == SF_OK && t->writing && (t->nr_suspect > 0 || t->index_suspect))
        rc = settle_writes(t, lanes, nr_lanes, err);
    return rc;
}

static void count_requests(const transfer *t, uint32_t zero_skipped)
{
    sf_vdi *vdi = t->vdi;
    pthread_mutex_lock(&vdi->lock);
    vdi->stats.read_requests += t->nr_reads;
    vdi->stats.write_requests += t->nr_writes;
    vdi->stats.create_requests += t->nr_creates;
    vdi->stats.zero_objects_skipped += zero_skipped;
    vdi->stats.routed_requests += t->nr_routed;
    pthread_mutex_unlock(&vdi->lock);
}

/* The object a read of object idx alone asks for, when the cached index
 * tells (0: not known yet, or a hole, which needs no request). */
static uint64_t read_object_oid(sf_vdi *vdi, uint32_t idx)
{
    pthread_mutex_lock(&vdi->lock);
    uint32_t owner = vdi->page_loaded[idx / SF_INDEX_PAGE] ? vdi->index[idx] : 0;
    pthread_mutex_unlock(&vdi->lock);
    return owner != 0 ? sfi_data_oid(owner, idx) : 0;
}

/* One read or write of len bytes at offset: plan a piece per object, drop
 * those needing no request, run the rest over lanes to several gateways,
 * then settle what a failure or a membership change left open. */
static int run_pieces(sf_vdi *vdi, int writing, uint8_t *buf, uint64_t len, uint64_t offset,
                      int thin, int copy, sf_error *err);

static int run_transfer(sf_vdi *vdi, int writing, uint8_t *buf, uint64_t len, uint64_t offset,
                        int thin, sf_error *err)
{
    return run_pieces(vdi, writing, buf, len, offset, thin, 0, err);
}

/* flatten's transfer: every inherited object of the range copied by sheep. */
static int run_copies(sf_vdi *vdi, uint64_t len, uint64_t offset, sf_error *err)
{
    return run_pieces(vdi, 1, NULL, len, offset, 0, 1, err);
}

static int run_pieces(sf_vdi *vdi, int writing, uint8_t *buf, uint64_t len, uint64_t offset,
                      int thin, int copy, sf_error *err)
{
    sf_cluster *cl = vdi->cl;
    transfer t;
    sf_conn *lanes[SF_MAX_LANES] = {NULL};
    unsigned nr_lanes = 0;
    uint32_t first = (uint32_t)(offset >> vdi->info.block_size_shift);
    uint32_t last = (uint32_t)((offset + len - 1) >> vdi->info.block_size_shift);
    uint32_t count = last - first + 1;
    int rc = SF_ERR;

    if (transfer_init(&t, vdi, writing, count, err) != SF_OK)
        goto out;
    t.thin = thin < 0 ? vdi->thin : thin;
    /* several objects: spread them over the gateways; a read of one:
     * straight to a sheep holding it (see transfer_next), if the index says
     * which object that is */
    uint64_t oid = count == 1 && !writing && cl->route ? read_object_oid(vdi, first) : 0;
    if (count > 1)
        nr_lanes = sfi_pool_get_lanes(cl, lanes, SF_MAX_LANES, err);
    else if ((lanes[0] = oid != 0 ? sfi_pool_get_holder(cl, oid, route_copies(vdi), err)
                                  : sfi_pool_get(cl, err)) != NULL)
        nr_lanes = 1;
    if (nr_lanes == 0)
        goto out;
    if (ensure_index(vdi, &lanes[0], first, last, err) != SF_OK)
        goto out;

    uint32_t planned =
        copy ? plan_copies(first, count, t.pieces) : plan_pieces(vdi, buf, len, offset, t.pieces);
    int allocating = read_entries(&t, planned);
    uint32_t zero_skipped = drop_needless_pieces(&t, planned);
    sf_source src = {&t, transfer_next, transfer_complete};
    rc = sfi_run_lanes(cl, lanes, nr_lanes, &src, cl->depth, err);
    rc = transfer_finish(&t, rc, lanes, nr_lanes, err);
    if (allocating)
        pthread_mutex_unlock(&vdi->alloc_lock);
    count_requests(&t, zero_skipped);
out:
    for (unsigned i = 0; i < nr_lanes; i++)
        sfi_pool_put(cl, lanes[i]);
    transfer_release(&t);
    return rc;
}

static int sfi_vdi_read_in_call(sf_vdi *vdi, void *buf, uint64_t len, uint64_t offset,
                                sf_error *err)
{
    sfi_error_clear(err);
    if (check_range(vdi, "read", len, offset, err) != SF_OK)
        return SF_ERR;
    if (take_head(vdi, buf, len, offset))
        return SF_OK;
    if (len == 0)
        return SF_OK;
    return run_transfer(vdi, 0, buf, len, offset, -1, err);
}

static int sfi_vdi_write_in_call(sf_vdi *vdi, const void *buf, uint64_t len, uint64_t offset,
                                 sf_error *err)
{
    sfi_error_clear(err);
    if (check_range(vdi, "write", len, offset, err) != SF_OK)
        return SF_ERR;
    if (vdi->info.snap_ctime != 0)
        return sfi_fail_result(err, SF_RES_READONLY, "VDI '%s' is a snapshot", vdi->info.name);
    if (vdi->info.store_policy != 0)
        return sfi_fail(err, SF_E_UNSUPPORTED, "writing to hyper volume '%s' is not supported",
                        vdi->info.name);
    drop_head(vdi);
    if (len == 0)
        return SF_OK;
    /* The data is only ever read; the transfer code shares one buffer type. */
    return run_transfer(vdi, 1, (uint8_t *)(uintptr_t)buf, len, offset, -1, err);
}

static int sfi_vdi_resize_in_call(sf_vdi *vdi, uint64_t new_size, sf_error *err)
{
    sfi_error_clear(err);
    drop_head(vdi);
    if (new_size < vdi->info.size)
        return sfi_fail(
            err, SF_E_INVALID,
            "cannot shrink VDI '%s' from %llu to %llu bytes (sheep would leak the objects)",
            vdi->info.name, (unsigned long long)vdi->info.size, (unsigned long long)new_size);
    if (vdi->info.store_policy == 0 && new_size > sfi_max_flat_size(vdi->info.block_size_shift))
        return sfi_fail(err, SF_E_INVALID, "size %llu exceeds the %llu-byte limit of VDI '%s'",
                        (unsigned long long)new_size,
                        (unsigned long long)sfi_max_flat_size(vdi->info.block_size_shift),
                        vdi->info.name);
    if (vdi->info.snap_ctime != 0)
        return sfi_fail_result(err, SF_RES_READONLY, "VDI '%s' is a snapshot", vdi->info.name);
    if (new_size == vdi->info.size)
        return SF_OK;
    pthread_mutex_lock(&vdi->alloc_lock);
    if (check_object_count(vdi, new_size, err) != SF_OK) {
        pthread_mutex_unlock(&vdi->alloc_lock);
        return SF_ERR;
    }
    uint32_t nr = (uint32_t)objects_for(new_size, vdi->object_size);
    pthread_mutex_lock(&vdi->lock);
    int rc = index_reserve(vdi, nr, err);
    pthread_mutex_unlock(&vdi->lock);
    if (rc == SF_OK) {
        /* Only the 8-byte vdi_size field is written, so a concurrent header
         * change by someone else is not overwritten with stale bytes. */
        uint8_t field[8];
        sfi_put_le64(field, new_size);
        sf_op op;
        memset(&op, 0, sizeof(op));
        sfi_req_init(&op.req, SF_OP_WRITE_OBJ);
        op.req.flags = SF_FLAG_WRITE | SF_FLAG_DIRECT;
        op.req.oid = sfi_inode_oid(vdi->info.vid);
        op.req.copies = vdi->info.copies;
        op.req.copy_policy = vdi->info.copy_policy;
        op.req.offset = SF_INODE_SIZE_OFF;
        op.req.data_length = sizeof(field);
        op.payload = field;
        op.retryable = 1;
        sf_conn *conn = sfi_pool_get(vdi->cl, err);
        rc = conn ? sfi_call(vdi->cl, &conn, &op, err) : SF_ERR;
        sfi_pool_put(vdi->cl, conn);
    }
    if (rc == SF_OK) {
        pthread_mutex_lock(&vdi->lock);
        vdi->info.size = new_size;
        vdi->nr_objects = nr;
        pthread_mutex_unlock(&vdi->lock);
    }
    pthread_mutex_unlock(&vdi->alloc_lock);
    return rc;
}

/* ---------------------------------------------------- discard and flatten */

/* Refuses what cannot change: snapshots and hyper volumes. */
static int check_mutable(sf_vdi *vdi, const char *what, sf_error *err)
{
    if (vdi->info.snap_ctime != 0)
        return sfi_fail_result(err, SF_RES_READONLY, "%s: VDI '%s' is a snapshot", what,
                               vdi->info.name);
    if (vdi->info.store_policy != 0)
        return sfi_fail(err, SF_E_UNSUPPORTED, "%s of hyper volume '%s' is not supported", what,
                        vdi->info.name);
    return SF_OK;
}

/* Zeroes index entries [first, end) on the cluster and in the cache. The
 * caller holds alloc_lock, so no write allocates in the range meanwhile. */
static int release_objects(sf_vdi *vdi, sf_conn **conn, uint32_t first, uint32_t end, sf_error *err)
{
    if (first >= end)
        return SF_OK;
    if (sfi_zero_index(vdi->cl, conn, &vdi->info, first, end, err) != SF_OK)
        return SF_ERR;
    pthread_mutex_lock(&vdi->lock);
    for (uint32_t i = first; i < end; i++)
        vdi->index[i] = 0;
    /* entries read from the inode by now are what it holds: zeros */
    for (uint32_t page = first / SF_INDEX_PAGE; page <= (end - 1) / SF_INDEX_PAGE; page++) {
        uint32_t start = page * SF_INDEX_PAGE, stop = start + SF_INDEX_PAGE;
        if (start >= first && (stop <= end || end == vdi->nr_objects))
            vdi->page_loaded[page] = 1;
    }
    pthread_mutex_unlock(&vdi->lock);
    return SF_OK;
}

/* Writes zeros over [offset, offset+len) of one object, when it holds data
 * (a hole already reads as zeros). */
static int zero_partial(sf_vdi *vdi, uint64_t offset, uint64_t len, sf_error *err)
{
    uint8_t *zeros = calloc(1, (size_t)len);
    if (zeros == NULL)
        return sfi_fail(err, SF_E_NOMEM, "out of memory");
    /* thin skips the holes; an inherited object is copied on write */
    int rc = run_transfer(vdi, 1, zeros, len, offset, 1, err);
    free(zeros);
    return rc;
}

static int sfi_vdi_discard_in_call(sf_vdi *vdi, uint64_t len, uint64_t offset, sf_error *err)
{
    sfi_error_clear(err);
    drop_head(vdi);
    if (check_range(vdi, "discard", len, offset, err) != SF_OK ||
        check_mutable(vdi, "discard", err) != SF_OK)
        return SF_ERR;
    if (len == 0)
        return SF_OK;
    uint64_t objsize = vdi->object_size, end = offset + len;
    uint64_t whole_first = (offset + objsize - 1) / objsize;
    /* an object the VDI's end cuts short is whole when the range reaches the end */
    uint64_t whole_end = end == sf_vdi_size(vdi) ? (end + objsize - 1) / objsize : end / objsize;
    int rc = SF_OK;
    if (whole_first >= whole_end) { /* inside one object, or across one boundary */
        rc = zero_partial(vdi, offset, len, err);
    } else {
        if (offset < whole_first * objsize)
            rc = zero_partial(vdi, offset, whole_first * objsize - offset, err);
        if (rc == SF_OK && whole_end * objsize < end)
            rc = zero_partial(vdi, whole_end * objsize, end - whole_end * objsize, err);
        if (rc == SF_OK) {
            pthread_mutex_lock(&vdi->alloc_lock);
            sf_conn *conn = sfi_pool_get(vdi->cl, err);
            rc = conn ? release_objects(vdi, &conn, (uint32_t)whole_first, (uint32_t)whole_end, err)
                      : SF_ERR;
            sfi_pool_put(vdi->cl, conn);
            pthread_mutex_unlock(&vdi->alloc_lock);
        }
    }
    return rc;
}

/* Objects copied per step of a flatten: each step is one pipelined
 * transfer of zero-length copy-on-write CREATEs and their index updates. */
#define FLATTEN_STEP_OBJECTS 1024u

static int sfi_vdi_flatten_in_call(sf_vdi *vdi, sf_error *err)
{
    sfi_error_clear(err);
    drop_head(vdi);
    if (check_mutable(vdi, "flatten", err) != SF_OK)
        return SF_ERR;
    uint64_t size = sf_vdi_size(vdi);
    uint64_t step = (uint64_t)FLATTEN_STEP_OBJECTS * vdi->object_size;
    int rc = SF_OK;
    for (uint64_t off = 0; rc == SF_OK && off < size; off += step)
        rc = run_copies(vdi, size - off < step ? size - off : step, off, err);
    return rc;
}

/* ------------------------------------------------- public calls, each with one deadline */

sf_vdi *sf_vdi_open_read_ahead(sf_cluster *cl, const char *name, size_t name_len,
                               const sf_snap_ref *at, uint32_t read_ahead, sf_error *err)
{
    int64_t scope = sfi_call_begin(cl);
    sf_vdi *result = sfi_vdi_open_in_call(cl, name, name_len, at, read_ahead, err);
    sf_deadline_end(scope);
    return result;
}

sf_vdi *sf_vdi_open_at(sf_cluster *cl, const char *name, size_t name_len, const sf_snap_ref *at,
                       sf_error *err)
{
    return sf_vdi_open_read_ahead(cl, name, name_len, at, 0, err);
}

sf_vdi *sf_vdi_open(sf_cluster *cl, const char *name, size_t name_len, sf_error *err)
{
    return sf_vdi_open_at(cl, name, name_len, NULL, err);
}

int sf_vdi_read(sf_vdi *vdi, void *buf, uint64_t len, uint64_t offset, sf_error *err)
{
    int64_t scope = sfi_call_begin(vdi->cl);
    int result = sfi_vdi_read_in_call(vdi, buf, len, offset, err);
    sf_deadline_end(scope);
    return result;
}

int sf_vdi_write(sf_vdi *vdi, const void *buf, uint64_t len, uint64_t offset, sf_error *err)
{
    int64_t scope = sfi_call_begin(vdi->cl);
    int result = sfi_vdi_write_in_call(vdi, buf, len, offset, err);
    sf_deadline_end(scope);
    return result;
}

int sf_vdi_usage(sf_vdi *vdi, uint64_t *used_bytes, uint64_t *shared_bytes, sf_error *err)
{
    int64_t scope = sfi_call_begin(vdi->cl);
    int result = sfi_vdi_usage_in_call(vdi, used_bytes, shared_bytes, err);
    sf_deadline_end(scope);
    return result;
}

int sf_vdi_resize(sf_vdi *vdi, uint64_t new_size, sf_error *err)
{
    int64_t scope = sfi_call_begin(vdi->cl);
    int result = sfi_vdi_resize_in_call(vdi, new_size, err);
    sf_deadline_end(scope);
    return result;
}

int sf_vdi_discard(sf_vdi *vdi, uint64_t len, uint64_t offset, sf_error *err)
{
    int64_t scope = sfi_call_begin(vdi->cl);
    int result = sfi_vdi_discard_in_call(vdi, len, offset, err);
    sf_deadline_end(scope);
    return result;
}

int sf_vdi_flatten(sf_vdi *vdi, sf_error *err)
{
    /* one deadline per call would cut a large flatten short: each step's
     * transfers get the cluster's io_timeout, as separate calls would */
    return sfi_vdi_flatten_in_call(vdi, err);
}
