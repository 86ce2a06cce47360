/*
 * VDIs by name: look up, create, stat, delete, list. Each call borrows one
 * connection from the cluster's pool.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sf_internal.h"

/* ------------------------------------------------------------- VDI by name */

const char *sfi_check_snap_ref(const sf_snap_ref *at)
{
    if (at == NULL)
        return NULL;
    if (at->tag_len > 0 && at->snap_id != 0)
        return "a snapshot is selected by its tag or by its id, not both";
    if (at->tag_len > 0 && at->tag == NULL)
        return "snapshot tag is NULL";
    if (at->tag_len > SF_TAG_MAX)
        return "snapshot tag is longer than 255 bytes";
    if (at->tag_len > 0 && memchr(at->tag, 0, at->tag_len) != NULL)
        return "snapshot tag contains a NUL byte";
    return NULL;
}

int sfi_snap_ref_is_working(const sf_snap_ref *at)
{
    return at == NULL || (at->tag_len == 0 && at->snap_id == 0);
}

void sfi_describe(char *out, size_t len, const char *name, size_t name_len, const sf_snap_ref *at)
{
    if (sfi_snap_ref_is_working(at))
        snprintf(out, len, "VDI '%.*s'", (int)name_len, name);
    else if (at->tag_len > 0)
        snprintf(out, len, "snapshot '%.*s' of VDI '%.*s'", (int)at->tag_len, at->tag,
                 (int)name_len, name);
    else
        snprintf(out, len, "snapshot %u of VDI '%.*s'", at->snap_id, (int)name_len, name);
}

void sfi_op_named_at(sf_op *op, uint8_t opcode, uint8_t payload[2 * SF_NAME_FIELD],
                     const char *name, size_t name_len, const sf_snap_ref *at)
{
    sfi_op_named(op, opcode, payload, 2 * SF_NAME_FIELD, name, name_len);
    if (at != NULL) {
        if (at->tag_len > 0)
            memcpy(payload + SF_NAME_FIELD, at->tag, at->tag_len);
        op->req.snapid = at->snap_id;
    }
}

int sfi_lookup_vid(sf_cluster *cl, sf_conn **conn, const char *name, size_t name_len,
                   const sf_snap_ref *at, uint32_t *vid, sf_error *err)
{
    uint8_t payload[2 * SF_NAME_FIELD]; /* name + tag, as dog sends it */
    char what[2 * SF_NAME_FIELD + 64];
    sf_op op;
    sfi_op_named_at(&op, SF_OP_GET_VDI_INFO, payload, name, name_len, at);
    op.retryable = 1;
    if (sfi_call(cl, conn, &op, err) != SF_OK) {
        sfi_describe(what, sizeof(what), name, name_len, at);
        if (err->result == SF_RES_NO_VDI)
            sfi_fail_result(err, SF_RES_NO_VDI, "VDI '%.*s' not found", (int)name_len, name);
        else if (err->result == SF_RES_NO_TAG)
            sfi_fail_result(err, SF_RES_NO_TAG, "%s not found", what);
        return SF_ERR;
    }
    if (op.rsp.vdi_id == 0 || op.rsp.vdi_id > SF_MAX_VID)
        return sfi_fail(err, SF_E_PROTOCOL, "GET_VDI_INFO returned vid 0x%x", op.rsp.vdi_id);
    *vid = op.rsp.vdi_id;
    return SF_OK;
}

int sfi_read_inode_header(sf_cluster *cl, sf_conn **conn, uint32_t vid, sf_vdi_info *info,
                          sf_inode_extra *extra, int read_head, sf_error *err)
{
    /* sheep writes an inode whole when it creates it, so the index always
     * follows the header: one read brings both. */
    uint32_t len = SF_INODE_HEADER_SIZE + (extra != NULL ? 4 * SF_INDEX_PAGE : 0);
    uint8_t *buf = malloc(len);
    if (buf == NULL)
        return sfi_fail(err, SF_E_NOMEM, "out of memory");
    sf_op ops[2]; /* the inode and, when extra asks, object 0 beside it */
    unsigned nr_ops = 1;
    sf_conn *lanes[2] = {*conn, NULL};
    unsigned nr_lanes = 1;
    sfi_op_read(&ops[0], sfi_inode_oid(vid), 0, buf, len);
    if (extra != NULL && read_head && extra->head_len > 0) {
        /* a guess: the caller keeps it only if the index says object 0 is
         * vid's; sent to a sheep holding it if the VDI has the cluster's
         * default copies, which the inode has not told yet */
        uint64_t oid = sfi_data_oid(vid, 0);
        sfi_op_read(&ops[1], oid, 0, extra->head, extra->head_len);
        ops[0].route_copies = ops[1].route_copies = cl->defaults.copies;
        nr_ops = 2;
        sf_error ignored; /* none: the one connection carries both */
        if ((lanes[1] = sfi_pool_get_holder(cl, oid, cl->defaults.copies, &ignored)) != NULL)
            nr_lanes = 2;
    }
    int rc = sfi_run_ops(cl, lanes, nr_lanes, ops, nr_ops, err);
    *conn = lanes[0];
    sfi_pool_put(cl, lanes[1]);
    if (rc == SF_OK && ops[0].rsp.result != SF_RES_SUCCESS)
        rc = sfi_fail_result(err, ops[0].rsp.result, "%s", sfi_opcode_name(ops[0].req.opcode));
    else if (rc == SF_OK && ops[0].rsp.data_length != len)
        rc = sfi_fail(err, SF_E_PROTOCOL, "read of inode 0x%x returned %u of %u bytes", vid,
                      ops[0].rsp.data_length, len);
    if (extra != NULL) {
        extra->head_read = nr_ops == 2 && rc == SF_OK && ops[1].rsp.result == SF_RES_SUCCESS &&
                           ops[1].rsp.data_length == extra->head_len;
        if (rc == SF_OK)
            memcpy(extra->index_head, buf + SF_INODE_HEADER_SIZE, 4 * SF_INDEX_PAGE);
    }
    if (rc == SF_OK) {
        sfi_inode_header_decode(buf, info);
        if (info->vid != vid)
            rc = sfi_fail(err, SF_E_PROTOCOL, "inode 0x%x names itself 0x%x", vid, info->vid);
        else if (info->block_size_shift < SF_MIN_BLOCK_SIZE_SHIFT ||
                 info->block_size_shift > SF_MAX_BLOCK_SIZE_SHIFT)
            rc = sfi_fail(err, SF_E_PROTOCOL, "inode 0x%x has block_size_shift %u", vid,
                          info->block_size_shift);
        else if (info->store_policy > 1)
            rc = sfi_fail(err, SF_E_UNSUPPORTED, "inode 0x%x has unknown store_policy %u", vid,
                          info->store_policy);
        else if (info->store_policy == 0 && info->size > sfi_max_flat_size(info->block_size_shift))
            rc = sfi_fail(err, SF_E_PROTOCOL, "inode 0x%x: size %llu exceeds the flat index", vid,
                          (unsigned long long)info->size);
    }
    free(buf);
    return rc;
}

static int sfi_vdi_create_in_call(sf_cluster *cl, const char *name, size_t name_len, uint64_t size,
                                  const sf_create_options *opt, uint32_t *vid_out, sf_error *err)
{
    static const sf_create_options no_options;
    const char *why;
    sfi_error_clear(err);
    if (opt == NULL)
        opt = &no_options;
    if ((why = sfi_check_name(name, name_len)) != NULL)
        return sfi_fail(err, SF_E_INVALID, "%s", why);
    if (opt->copies > SF_MAX_COPIES)
        return sfi_fail(err, SF_E_INVALID,
                        "copies must be 1..%d, or 0 for the cluster default (got %u)",
                        SF_MAX_COPIES, opt->copies);
    if (opt->copy_policy > UINT8_MAX)
        return sfi_fail(err, SF_E_INVALID, "copy_policy %u does not fit in a byte",
                        opt->copy_policy);
    if ((why = sfi_check_copy_policy((uint8_t)opt->copy_policy)) != NULL)
        return sfi_fail(err, SF_E_INVALID, "copy_policy 0x%02x: %s", opt->copy_policy, why);
    if (opt->block_size_shift != 0 && (opt->block_size_shift < SF_MIN_BLOCK_SIZE_SHIFT ||
                                       opt->block_size_shift > SF_MAX_BLOCK_SIZE_SHIFT))
        return sfi_fail(err, SF_E_INVALID,
                        "block_size_shift must be %d..%d, or 0 for the cluster default (got %u)",
                        SF_MIN_BLOCK_SIZE_SHIFT, SF_MAX_BLOCK_SIZE_SHIFT, opt->block_size_shift);
    uint8_t bss =
        opt->block_size_shift ? (uint8_t)opt->block_size_shift : cl->defaults.block_size_shift;
    /* sheep would accept a larger flat VDI and then be unable to index it */
    if (size > sfi_max_flat_size(bss))
        return sfi_fail(err, SF_E_INVALID,
                        "size %llu exceeds the %llu-byte limit for %u-byte objects",
                        (unsigned long long)size, (unsigned long long)sfi_max_flat_size(bss),
                        1u << (bss < 31 ? bss : 31));

    uint8_t payload[SF_NAME_FIELD]; /* exactly 256: 512 is refused */
    sf_op op;
    sfi_op_named(&op, SF_OP_NEW_VDI, payload, sizeof(payload), name, name_len);
    op.req.vdi_size = size;
    op.req.copies = (uint8_t)opt->copies; /* all three checked above */
    if (opt->copy_policy != 0) {
        /* sheep takes the cluster's redundancy, its policy included, for a
         * request without copies: an erasure code needs its strip count */
        unsigned strips = (opt->copy_policy >> 4) * 2 + (opt->copy_policy & 0x0F);
        if (opt->copies != 0 && opt->copies != strips)
            return sfi_fail(err, SF_E_INVALID,
                            "copies %u does not match copy_policy 0x%02x (%u data + parity strips)",
                            opt->copies, opt->copy_policy, strips);
        op.req.copies = (uint8_t)strips;
    }
    op.req.copy_policy = (uint8_t)opt->copy_policy;
    op.req.block_size_shift = (uint8_t)opt->block_size_shift;
    op.payload = payload;
    op.retryable = 0; /* a resend could answer VDI_EXIST for our own VDI */

    sf_conn *conn = sfi_pool_get(cl, err);
    if (conn == NULL)
        return SF_ERR;
    int rc = sfi_call(cl, &conn, &op, err);
    sfi_pool_put(cl, conn);
    if (rc != SF_OK) {
        if (err->category == SF_E_SERVER && err->result == SF_RES_VDI_EXIST)
            sfi_fail_result(err, SF_RES_VDI_EXIST, "VDI '%.*s' already exists", (int)name_len,
                            name);
        else if (err->category == SF_E_SERVER)
            sfi_fail_result(err, err->result, "creating VDI '%.*s'", (int)name_len, name);
        return SF_ERR;
    }
    if (vid_out != NULL)
        *vid_out = op.rsp.vdi_id;
    return SF_OK;
}

/* The vid remembered for the name that hashes to h (0: none), and whether
 * its object 0 was its own. */
static uint32_t vid_memo_get(sf_cluster *cl, uint64_t h, int *head_owned)
{
    pthread_mutex_lock(&cl->lock);
    const sf_vid_memo *m = &cl->vid_memo[h % SF_VID_MEMO_SLOTS];
    uint32_t vid = m->name_hash == h ? m->vid : 0;
    *head_owned = vid != 0 && m->head_owned;
    pthread_mutex_unlock(&cl->lock);
    return vid;
}

static void vid_memo_set(sf_cluster *cl, uint64_t h, uint32_t vid)
{
    pthread_mutex_lock(&cl->lock);
    sf_vid_memo *m = &cl->vid_memo[h % SF_VID_MEMO_SLOTS];
    if (vid != 0 || m->name_hash == h) {
        if (m->name_hash != h || m->vid != vid)
            m->head_owned = 0;
        m->name_hash = h;
        m->vid = vid;
    }
    pthread_mutex_unlock(&cl->lock);
}

void sfi_vid_memo_note_head(sf_cluster *cl, const char *name, size_t name_len, uint32_t vid,
                            int owned)
{
    uint64_t h = sfi_fnv1a_64(name, name_len);
    pthread_mutex_lock(&cl->lock);
    sf_vid_memo *m = &cl->vid_memo[h % SF_VID_MEMO_SLOTS];
    if (m->name_hash == h && m->vid == vid && vid != 0)
        m->head_owned = owned != 0;
    pthread_mutex_unlock(&cl->lock);
}

static int names_vdi(const sf_vdi_info *info, const char *name, size_t name_len)
{
    return strlen(info->name) == name_len && memcmp(info->name, name, name_len) == 0;
}

/* The working VDI of name is the one inode in use that bears the name and
 * is no snapshot: sheep's own lookup decides by the same inode fields. So
 * an inode read at a remembered vid that still shows them answers as the
 * lookup would have. Any other answer from sheep (deleted, snapshotted,
 * reused, no such object) forgets the vid: 0, look the name up. 1: info is
 * the VDI's. SF_ERR: the connection failed, as the lookup would have. */
static int stat_remembered(sf_cluster *cl, sf_conn **conn, uint64_t h, const char *name,
                           size_t name_len, sf_vdi_info *info, sf_inode_extra *extra, sf_error *err)
{
    int head_owned;
    uint32_t vid = vid_memo_get(cl, h, &head_owned);
    if (vid == 0)
        return 0;
    /* a hole or an inherited object 0 last time: not worth a request */
    int rc = sfi_read_inode_header(cl, conn, vid, info, extra, head_owned, err);
    if (rc == SF_OK) {
        if (names_vdi(info, name, name_len) && info->snap_ctime == 0)
            return 1;
    } else if ((*conn)->broken) {
        return SF_ERR;
    }
    sfi_error_clear(err);
    vid_memo_set(cl, h, 0);
    return 0;
}

int sfi_stat_by_name(sf_cluster *cl, sf_conn **conn, const char *name, size_t name_len,
                     const sf_snap_ref *at, sf_vdi_info *info, sf_inode_extra *extra, sf_error *err)
{
    const char *why;
    uint32_t vid = 0;
    if ((why = sfi_check_name(name, name_len)) != NULL)
        return sfi_fail(err, SF_E_INVALID, "%s", why);
    if ((why = sfi_check_snap_ref(at)) != NULL)
        return sfi_fail(err, SF_E_INVALID, "%s", why);
    if (*conn == NULL && (*conn = sfi_pool_get(cl, err)) == NULL)
        return SF_ERR;
    int working = sfi_snap_ref_is_working(at);
    uint64_t h = sfi_fnv1a_64(name, name_len); /* the memo slot */
    int known = working ? stat_remembered(cl, conn, h, name, name_len, info, extra, err) : 0;
    if (known != 0)
        return known == 1 ? SF_OK : SF_ERR;
    if (sfi_lookup_vid(cl, conn, name, name_len, at, &vid, err) != SF_OK)
        return SF_ERR;
    /* A delete can land between the lookup and the inode read. sheep then
     * leaves the inode with its name and size zeroed (or, where the object
     * is lost, none at all): either way this name no longer has that VDI,
     * which is NO_VDI, not a missing object or a zero-byte image. */
    int rc = sfi_read_inode_header(cl, conn, vid, info, extra, 0, err);
    if (rc != SF_OK && err->category == SF_E_SERVER && err->result == SF_RES_NO_OBJ)
        return sfi_fail_result(err, SF_RES_NO_VDI,
                               "VDI '%.*s' not found (vid 0x%x has no inode: deleted)",
                               (int)name_len, name, vid);
    if (rc == SF_OK && !names_vdi(info, name, name_len))
        return sfi_fail_result(err, SF_RES_NO_VDI, "VDI '%.*s' not found (vid 0x%x was deleted%s)",
                               (int)name_len, name, vid, info->name[0] ? " and reused" : "");
    if (rc == SF_OK && working && info->snap_ctime == 0)
        vid_memo_set(cl, h, vid);
    return rc;
}

static int sfi_vdi_stat_in_call(sf_cluster *cl, const char *name, size_t name_len,
                                const sf_snap_ref *at, sf_vdi_info *out, sf_error *err)
{
    sf_conn *conn = NULL;
    sfi_error_clear(err);
    int rc = sfi_stat_by_name(cl, &conn, name, name_len, at, out, NULL, err);
    sfi_pool_put(cl, conn);
    return rc;
}

int sfi_zero_index(sf_cluster *cl, sf_conn **conn, const sf_vdi_info *info, uint32_t first,
                   uint32_t end, sf_error *err)
{
    const uint32_t batch = 128; /* non-zero entries per write, as dog does */
    uint32_t nr = end;
    uint32_t chunk = 65536; /* entries read per inode read: 256 KiB */
    uint32_t *entries = malloc((size_t)chunk * 4);
    uint8_t *zeros = calloc(chunk, 4);
    uint8_t *raw = malloc((size_t)chunk * 4);
    int rc = SF_OK;

    if (entries == NULL || zeros == NULL || raw == NULL) {
        rc = sfi_fail(err, SF_E_NOMEM, "out of memory");
        goto out;
    }
    for (uint32_t base = first; base < nr && rc == SF_OK; base += chunk) {
        uint32_t count = nr - base < chunk ? nr - base : chunk;
        rc = sfi_read_exact(cl, conn, sfi_inode_oid(info->vid), SF_INODE_INDEX_OFF + 4 * base, raw,
                            4 * count, err);
        if (rc != SF_OK)
            break;
        sf_op op;
        for (uint32_t i = 0; i < count; i++)
            entries[i] = sfi_get_le32(raw + 4 * i);
        uint32_t i = 0;
        while (i < count && rc == SF_OK) {
            while (i < count && entries[i] == 0)
                i++;
            if (i == count)
                break;
            uint32_t start = i, nonzero = 0;
            while (i < count && nonzero < batch) {
                if (entries[i] != 0)
                    nonzero++;
                i++;
            }
            memset(&op, 0, sizeof(op));
            sfi_req_init(&op.req, SF_OP_WRITE_OBJ);
            op.req.flags = SF_FLAG_WRITE | SF_FLAG_DIRECT;
            op.req.oid = sfi_inode_oid(info->vid);
            op.req.copies = info->copies;
            op.req.copy_policy = info->copy_policy;
            op.req.offset = SF_INODE_INDEX_OFF + 4 * (base + start);
            op.req.data_length = 4 * (i - start);
            op.payload = zeros;
            op.retryable = 1;
            rc = sfi_call(cl, conn, &op, err);
        }
    }
out:
    free(entries);
    free(zeros);
    free(raw);
    return rc;
}

uint32_t sfi_index_entries(const sf_vdi_info *info)
{
    uint64_t objsize = (uint64_t)1 << info->block_size_shift;
    return (uint32_t)((info->size + objsize - 1) / objsize);
}

int sfi_delete_on(sf_cluster *cl, sf_conn **conn, const char *name, size_t name_len,
                  const sf_snap_ref *at, sf_error *err)
{
    sf_vdi_info info;
    char what[2 * SF_NAME_FIELD + 64];
    int rc = sfi_stat_by_name(cl, conn, name, name_len, at, &info, NULL, err);
    /* A hyper volume's index is a B-tree: DEL_VDI walks it itself, and a
     * flat zeroing pass over it would crash sheep. */
    if (rc == SF_OK && info.store_policy == 0)
        rc = sfi_zero_index(cl, conn, &info, 0, sfi_index_entries(&info), err);
    if (rc == SF_OK) {
        uint8_t payload[2 * SF_NAME_FIELD];
        sf_op op;
        sfi_op_named_at(&op, SF_OP_DEL_VDI, payload, name, name_len, at);
        op.retryable = 0;
        rc = sfi_call(cl, conn, &op, err);
        if (rc != SF_OK && err->category == SF_E_SERVER) {
            sfi_describe(what, sizeof(what), name, name_len, at);
            sfi_fail_result(err, err->result, "deleting %s", what);
        }
    }
    return rc;
}

static int sfi_vdi_delete_in_call(sf_cluster *cl, const char *name, size_t name_len,
                                  const sf_snap_ref *at, sf_error *err)
{
    sf_conn *conn = NULL;
    sfi_error_clear(err);
    int rc = sfi_delete_on(cl, &conn, name, name_len, at, err);
    sfi_pool_put(cl, conn);
    return rc;
}

/* ------------------------------------------------------------------- list */

#define LIST_HEADER_BYTES 572u /* the inode fields up to btree_counter */

typedef struct list_ctx {
    const uint8_t *in_use, *deleted;
    uint32_t next_vid;
    sf_op *ops;
    uint8_t *bufs;
    unsigned nr_slots;
    unsigned *free_slots, nr_free;
    sf_vdi_info *out;
    size_t count, cap;
    int failed;
    sf_error err;
} list_ctx;

static int bit_set(const uint8_t *map, uint32_t v)
{
    return (map[v >> 3] >> (v & 7)) & 1;
}

static sf_op *list_next(void *ctx)
{
    list_ctx *l = ctx;
    if (l->failed || l->nr_free == 0)
        return NULL;
    while (l->next_vid <= SF_MAX_VID) {
        uint32_t v = l->next_vid++;
        /* skip empty bitmap bytes quickly */
        if ((v & 7) == 0 && l->in_use[v >> 3] == 0) {
            l->next_vid = v + 8;
            continue;
        }
        if (!bit_set(l->in_use, v) || bit_set(l->deleted, v))
            continue;
        unsigned slot = l->free_slots[--l->nr_free];
        sf_op *op = &l->ops[slot];
        sfi_op_read(op, sfi_inode_oid(v), 0, l->bufs + (size_t)slot * LIST_HEADER_BYTES,
                    LIST_HEADER_BYTES);
        op->tag = slot;
        return op;
    }
    return NULL;
}

static void list_complete(void *ctx, sf_op *op)
{
    list_ctx *l = ctx;
    l->free_slots[l->nr_free++] = op->tag;
    if (l->failed)
        return;
    /* A vid can vanish between the bitmap read and the inode read. */
    if (op->rsp.result == SF_RES_NO_OBJ)
        return;
    if (op->rsp.result != SF_RES_SUCCESS) {
        l->failed = 1;
        sfi_fail_result(&l->err, op->rsp.result, "reading inode of vid 0x%llx",
                        (unsigned long long)((op->req.oid >> 32) & SF_VID_MASK));
        return;
    }
    if (op->rsp.data_length != LIST_HEADER_BYTES) {
        l->failed = 1;
        sfi_fail(&l->err, SF_E_PROTOCOL, "inode header read returned %u bytes",
                 op->rsp.data_length);
        return;
    }
    const uint8_t *buf = op->reply_buf;
    if (buf[0] == 0) /* deleted: the name is zeroed */
        return;
    if (l->count == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        sf_vdi_info *grown = realloc(l->out, cap * sizeof(*grown));
        if (grown == NULL) {
            l->failed = 1;
            sfi_fail(&l->err, SF_E_NOMEM, "out of memory");
            return;
        }
        l->out = grown;
        l->cap = cap;
    }
    sfi_inode_header_decode(buf, &l->out[l->count++]);
}

static int read_bitmap(sf_cluster *cl, sf_conn **conn, uint8_t opcode, uint8_t *map, sf_error *err)
{
    sf_op op;
    memset(&op, 0, sizeof(op));
    sfi_req_init(&op.req, opcode);
    op.req.data_length = SF_VDI_BITMAP_SIZE; /* anything else is refused */
    op.reply_buf = map;
    op.reply_cap = SF_VDI_BITMAP_SIZE;
    op.retryable = 1;
    if (sfi_call(cl, conn, &op, err) != SF_OK)
        return SF_ERR;
    if (op.rsp.data_length != SF_VDI_BITMAP_SIZE)
        return sfi_fail(err, SF_E_PROTOCOL, "%s returned %u bytes", sfi_opcode_name(opcode),
                        op.rsp.data_length);
    return SF_OK;
}

static int by_name_then_snap(const void *a, const void *b)
{
    const sf_vdi_info *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    if (c != 0)
        return c;
    return x->snap_id < y->snap_id ? -1 : x->snap_id > y->snap_id;
}

static int sfi_vdi_list_in_call(sf_cluster *cl, sf_vdi_info **out, size_t *count, sf_error *err)
{
    list_ctx l;
    memset(&l, 0, sizeof(l));
    sfi_error_clear(err);
    *out = NULL;
    *count = 0;
    uint8_t *in_use = malloc(SF_VDI_BITMAP_SIZE), *deleted = malloc(SF_VDI_BITMAP_SIZE);
    l.nr_slots = cl->depth;
    l.ops = calloc(l.nr_slots, sizeof(sf_op));
    l.bufs = malloc((size_t)l.nr_slots * LIST_HEADER_BYTES);
    l.free_slots = malloc(l.nr_slots * sizeof(unsigned));
    int rc = SF_ERR;
    sf_conn *conn = NULL;
    if (!in_use || !deleted || !l.ops || !l.bufs || !l.free_slots) {
        sfi_fail(err, SF_E_NOMEM, "out of memory");
        goto out;
    }
    for (unsigned i = 0; i < l.nr_slots; i++)
        l.free_slots[l.nr_free++] = i;
    if ((conn = sfi_pool_get(cl, err)) == NULL)
        goto out;
    if (read_bitmap(cl, &conn, SF_OP_READ_VDIS, in_use, err) != SF_OK ||
        read_bitmap(cl, &conn, SF_OP_READ_DEL_VDIS, deleted, err) != SF_OK)
        goto out;
    l.in_use = in_use;
    l.deleted = deleted;
    l.next_vid = 1;
    sf_source src = {&l, list_next, list_complete};
    if (sfi_run(cl, &conn, &src, l.nr_slots, err) != SF_OK)
        goto out;
    if (l.failed) {
        *err = l.err;
        goto out;
    }
    if (l.count > 1) /* qsort(NULL, 0, ...) is undefined */
        qsort(l.out, l.count, sizeof(*l.out), by_name_then_snap);
    *out = l.out;
    *count = l.count;
    l.out = NULL;
    rc = SF_OK;
out:
    sfi_pool_put(cl, conn);
    free(l.out);
    free(l.ops);
    free(l.bufs);
    free(l.free_slots);
    free(in_use);
    free(deleted);
    return rc;
}

/* ------------------------------------------------- public calls, each with one deadline */

int sf_vdi_create(sf_cluster *cl, const char *name, size_t name_len, uint64_t size,
                  const sf_create_options *opt, uint32_t *vid_out, sf_error *err)
{
    int64_t scope = sfi_call_begin(cl);
    int result = sfi_vdi_create_in_call(cl, name, name_len, size, opt, vid_out, err);
    sf_deadline_end(scope);
    return result;
}

int sf_vdi_stat_at(sf_cluster *cl, const char *name, size_t name_len, const sf_snap_ref *at,
                   sf_vdi_info *out, sf_error *err)
{
    int64_t scope = sfi_call_begin(cl);
    int result = sfi_vdi_stat_in_call(cl, name, name_len, at, out, err);
    sf_deadline_end(scope);
    return result;
}

static int sfi_vdi_stat_vid_in_call(sf_cluster *cl, uint32_t vid, sf_vdi_info *out, sf_error *err)
{
    sfi_error_clear(err);
    if (vid == 0 || vid > SF_MAX_VID)
        return sfi_fail(err, SF_E_INVALID, "vid 0x%x is not 1..0x%x", vid, SF_MAX_VID);
    sf_conn *conn = sfi_pool_get(cl, err);
    if (conn == NULL)
        return SF_ERR;
    int rc = sfi_read_inode_header(cl, &conn, vid, out, NULL, 0, err);
    sfi_pool_put(cl, conn);
    if (rc != SF_OK && err->category == SF_E_SERVER && err->result == SF_RES_NO_OBJ)
        return sfi_fail_result(err, SF_RES_NO_VDI, "no VDI has vid 0x%x", vid);
    if (rc == SF_OK && out->name[0] == 0)
        return sfi_fail_result(err, SF_RES_NO_VDI, "vid 0x%x was deleted", vid);
    return rc;
}

int sf_vdi_stat_vid(sf_cluster *cl, uint32_t vid, sf_vdi_info *out, sf_error *err)
{
    int64_t scope = sfi_call_begin(cl);
    int result = sfi_vdi_stat_vid_in_call(cl, vid, out, err);
    sf_deadline_end(scope);
    return result;
}

int sf_vdi_stat(sf_cluster *cl, const char *name, size_t name_len, sf_vdi_info *out, sf_error *err)
{
    return sf_vdi_stat_at(cl, name, name_len, NULL, out, err);
}

int sf_vdi_delete_at(sf_cluster *cl, const char *name, size_t name_len, const sf_snap_ref *at,
                     sf_error *err)
{
    int64_t scope = sfi_call_begin(cl);
    int result = sfi_vdi_delete_in_call(cl, name, name_len, at, err);
    sf_deadline_end(scope);
    return result;
}

int sf_vdi_delete(sf_cluster *cl, const char *name, size_t name_len, sf_error *err)
{
    return sf_vdi_delete_at(cl, name, name_len, NULL, err);
}

int sf_vdi_list(sf_cluster *cl, sf_vdi_info **out, size_t *count, sf_error *err)
{
    int64_t scope = sfi_call_begin(cl);
    int result = sfi_vdi_list_in_call(cl, out, count, err);
    sf_deadline_end(scope);
    return result;
}
