/*
 * Snapshots, rollback, clones and locks (docs/PROTOCOL.md sections 6.8,
 * 6.9, 6.11). All of them are NEW_VDI, LOCK_VDI or RELEASE_VDI requests
 * with the right base and snapid, plus the inode reads and writes dog does
 * around them.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sf_internal.h"

/* NEW_VDI of name with the layout of base: a snapshot of it (snapshot 1)
 * or a new VDI sharing its objects (0: a clone, or a rollback). */
static int new_vdi_from(sf_cluster *cl, sf_conn **conn, const char *name, size_t name_len,
                        uint64_t size, const sf_vdi_info *base, int snapshot, uint32_t *vid,
                        sf_error *err)
{
    uint8_t payload[SF_NAME_FIELD]; /* exactly 256: 512 is refused */
    sf_op op;
    sfi_op_named(&op, SF_OP_NEW_VDI, payload, sizeof(payload), name, name_len);
    op.req.vdi_size = size;
    op.req.base_vdi_id = base->vid;
    op.req.snapid = snapshot ? 1 : 0;
    op.req.copies = base->copies;
    op.req.copy_policy = base->copy_policy;
    op.req.store_policy = base->store_policy;
    op.req.block_size_shift = base->block_size_shift;
    op.retryable = 0; /* a resend could answer VDI_EXIST for our own VDI */
    if (sfi_call(cl, conn, &op, err) != SF_OK) {
        if (err->category == SF_E_SERVER && err->result == SF_RES_VDI_EXIST)
            sfi_fail_result(err, SF_RES_VDI_EXIST, "VDI '%.*s' already exists", (int)name_len,
                            name);
        return SF_ERR;
    }
    *vid = op.rsp.vdi_id;
    return SF_OK;
}

/* Writes the tag field of an inode (256 bytes, NUL-padded), as dog does
 * just before the NEW_VDI that turns the VDI into a snapshot. */
static int write_tag(sf_cluster *cl, sf_conn **conn, const sf_vdi_info *info, const char *tag,
                     size_t tag_len, sf_error *err)
{
    uint8_t field[SF_NAME_FIELD];
    memset(field, 0, sizeof(field));
    memcpy(field, tag, tag_len);
    sf_op op;
    memset(&op, 0, sizeof(op));
    sfi_req_init(&op.req, SF_OP_WRITE_OBJ);
    op.req.flags = SF_FLAG_WRITE;
    op.req.oid = sfi_inode_oid(info->vid);
    op.req.copies = info->copies;
    op.req.copy_policy = info->copy_policy;
    op.req.offset = SF_INODE_TAG_OFF;
    op.req.data_length = sizeof(field);
    op.payload = field;
    op.retryable = 1;
    return sfi_call(cl, conn, &op, err);
}

static int sfi_vdi_snapshot_in_call(sf_cluster *cl, const char *name, size_t name_len,
                                    const char *tag, size_t tag_len, sf_vdi_info *out,
                                    sf_error *err)
{
    sf_snap_ref by_tag = {tag, tag_len, 0};
    sf_vdi_info working;
    sf_conn *conn = NULL;
    const char *why;
    uint32_t vid = 0;
    sfi_error_clear(err);
    if ((why = sfi_check_name(name, name_len)) != NULL)
        return sfi_fail(err, SF_E_INVALID, "%s", why);
    if ((why = sfi_check_snap_ref(&by_tag)) != NULL)
        return sfi_fail(err, SF_E_INVALID, "%s", why);
    if ((conn = sfi_pool_get(cl, err)) == NULL)
        return SF_ERR;
    int rc = SF_OK;
    if (tag_len > 0) { /* the hoped-for answer is NO_TAG: nothing carries it yet */
        rc = sfi_lookup_vid(cl, &conn, name, name_len, &by_tag, &vid, err);
        if (rc == SF_OK)
            rc = sfi_fail_result(err, SF_RES_VDI_EXIST,
                                 "VDI '%.*s' already has a snapshot tagged '%.*s'", (int)name_len,
                                 name, (int)tag_len, tag);
        else if (err->category == SF_E_SERVER && err->result == SF_RES_NO_TAG)
            rc = SF_OK;
    }
    if (rc == SF_OK)
        rc = sfi_stat_by_name(cl, &conn, name, name_len, NULL, &working, NULL, err);
    if (rc == SF_OK && working.store_policy != 0)
        rc = sfi_fail(err, SF_E_UNSUPPORTED, "snapshots of hyper volume '%.*s' are not supported",
                      (int)name_len, name);
    if (rc == SF_OK)
        rc = write_tag(cl, &conn, &working, tag, tag_len, err);
    if (rc == SF_OK) {
        rc = new_vdi_from(cl, &conn, name, name_len, working.size, &working, 1, &vid, err);
        if (rc != SF_OK) {
            /* the tag must not stay on a VDI that did not become a snapshot:
             * lookups by tag would find the writable one */
            sf_error ignored;
            write_tag(cl, &conn, &working, "", 0, &ignored);
            if (err->category == SF_E_SERVER)
                sfi_fail_result(err, err->result, "snapshotting VDI '%.*s'", (int)name_len, name);
        }
    }
    if (rc == SF_OK) /* the old vid is the snapshot now, with its snap_ctime set */
        rc = sfi_read_inode_header(cl, &conn, working.vid, out, NULL, 0, err);
    sfi_pool_put(cl, conn);
    return rc;
}

/* The snapshot at selects, which must be one. */
static int stat_snapshot(sf_cluster *cl, sf_conn **conn, const char *name, size_t name_len,
                         const sf_snap_ref *at, const char *doing, sf_vdi_info *out, sf_error *err)
{
    if (sfi_snap_ref_is_working(at))
        return sfi_fail(err, SF_E_INVALID, "%s needs a snapshot of VDI '%.*s' (a tag or an id)",
                        doing, (int)name_len, name);
    if (sfi_stat_by_name(cl, conn, name, name_len, at, out, NULL, err) != SF_OK)
        return SF_ERR;
    if (out->snap_ctime == 0) /* a tag written by a snapshot that failed */
        return sfi_fail(err, SF_E_INVALID,
                        "%s: VDI '%.*s' (vid 0x%x) carries the tag but is not "
                        "a snapshot",
                        doing, (int)name_len, name, out->vid);
    if (out->store_policy != 0)
        return sfi_fail(err, SF_E_UNSUPPORTED, "%s of hyper volume '%.*s' is not supported", doing,
                        (int)name_len, name);
    return SF_OK;
}

static int sfi_vdi_rollback_in_call(sf_cluster *cl, const char *name, size_t name_len,
                                    const sf_snap_ref *at, sf_vdi_info *out, sf_error *err)
{
    sf_vdi_info snap;
    sf_conn *conn = NULL;
    uint32_t vid = 0;
    sfi_error_clear(err);
    int rc = stat_snapshot(cl, &conn, name, name_len, at, "rollback", &snap, err);
    if (rc == SF_OK) {
        /* sheep holds one working VDI per name: the current one goes first */
        rc = sfi_delete_on(cl, &conn, name, name_len, NULL, err);
        if (rc != SF_OK && err->category == SF_E_SERVER && err->result == SF_RES_NO_VDI)
            rc = SF_OK; /* an earlier rollback got this far */
    }
    if (rc == SF_OK)
        rc = new_vdi_from(cl, &conn, name, name_len, snap.size, &snap, 0, &vid, err);
    if (rc == SF_OK)
        rc = sfi_read_inode_header(cl, &conn, vid, out, NULL, 0, err);
    sfi_pool_put(cl, conn);
    return rc;
}

static int sfi_vdi_clone_in_call(sf_cluster *cl, const char *name, size_t name_len,
                                 const sf_snap_ref *at, const char *new_name, size_t new_name_len,
                                 uint64_t new_size, sf_vdi_info *out, sf_error *err)
{
    sf_vdi_info snap;
    sf_conn *conn = NULL;
    const char *why;
    uint32_t vid = 0;
    sfi_error_clear(err);
    if ((why = sfi_check_name(new_name, new_name_len)) != NULL)
        return sfi_fail(err, SF_E_INVALID, "clone name: %s", why);
    /* sheep would clone a writable VDI too, and the clone would then see
     * the source's later writes: only snapshots are cloned */
    int rc = stat_snapshot(cl, &conn, name, name_len, at, "clone", &snap, err);
    uint64_t size = new_size ? new_size : snap.size;
    if (rc == SF_OK && size < snap.size)
        rc = sfi_fail(err, SF_E_INVALID,
                      "a clone of '%.*s' cannot be smaller than its snapshot (%llu < %llu bytes)",
                      (int)name_len, name, (unsigned long long)size, (unsigned long long)snap.size);
    if (rc == SF_OK && size > sfi_max_flat_size(snap.block_size_shift))
        rc = sfi_fail(
            err, SF_E_INVALID, "size %llu exceeds the %llu-byte limit for %u-byte objects",
            (unsigned long long)size, (unsigned long long)sfi_max_flat_size(snap.block_size_shift),
            1u << (snap.block_size_shift < 31 ? snap.block_size_shift : 31));
    if (rc == SF_OK)
        rc = new_vdi_from(cl, &conn, new_name, new_name_len, size, &snap, 0, &vid, err);
    if (rc == SF_OK)
        rc = sfi_read_inode_header(cl, &conn, vid, out, NULL, 0, err);
    sfi_pool_put(cl, conn);
    return rc;
}

/* ------------------------------------------------------------------ locks */

/* RELEASE_VDI of vid; sheep answers success whether it was locked or not. */
static int release_vid(sf_cluster *cl, sf_conn **conn, uint32_t vid, int type, sf_error *err)
{
    sf_op op;
    memset(&op, 0, sizeof(op));
    sfi_req_init(&op.req, SF_OP_RELEASE_VDI);
    op.req.base_vdi_id = vid;
    op.req.lock_type = (uint32_t)type;
    op.retryable = 1; /* releasing twice is releasing */
    return sfi_call(cl, conn, &op, err);
}

static int sfi_vdi_unlock_vid_in_call(sf_cluster *cl, uint32_t vid, int type, sf_error *err)
{
    sfi_error_clear(err);
    if (type != SF_LOCK_EXCLUSIVE && type != SF_LOCK_SHARED)
        return sfi_fail(err, SF_E_INVALID, "lock type must be exclusive (0) or shared (1), not %d",
                        type);
    if (vid == 0 || vid > SF_MAX_VID)
        return sfi_fail(err, SF_E_INVALID, "vid 0x%x is not 1..0x%x", vid, SF_MAX_VID);
    sf_conn *conn = sfi_pool_get(cl, err);
    if (conn == NULL)
        return SF_ERR;
    int rc = release_vid(cl, &conn, vid, type, err);
    if (rc != SF_OK && err->category == SF_E_SERVER)
        sfi_fail_result(err, err->result, "unlocking vid 0x%x", vid);
    sfi_pool_put(cl, conn);
    return rc;
}

static int sfi_vdi_lock_in_call(sf_cluster *cl, const char *name, size_t name_len,
                                const sf_snap_ref *at, int type, int release, sf_error *err)
{
    char what[2 * SF_NAME_FIELD + 64];
    sf_conn *conn = NULL;
    const char *why;
    uint32_t vid = 0;
    sfi_error_clear(err);
    if (type != SF_LOCK_EXCLUSIVE && type != SF_LOCK_SHARED)
        return sfi_fail(err, SF_E_INVALID, "lock type must be exclusive (0) or shared (1), not %d",
                        type);
    if ((why = sfi_check_name(name, name_len)) != NULL || (why = sfi_check_snap_ref(at)) != NULL)
        return sfi_fail(err, SF_E_INVALID, "%s", why);
    if ((conn = sfi_pool_get(cl, err)) == NULL)
        return SF_ERR;
    uint8_t payload[2 * SF_NAME_FIELD];
    sf_op op;
    int rc;
    sfi_describe(what, sizeof(what), name, name_len, at);
    if (!release) {
        sfi_op_named_at(&op, SF_OP_LOCK_VDI, payload, name, name_len, at);
        op.req.lock_type = (uint32_t)type;
        /* a resend would find our own lock and answer VDI_LOCKED */
        op.retryable = 0;
        rc = sfi_call(cl, &conn, &op, err);
        if (rc != SF_OK && err->category == SF_E_SERVER) {
            if (err->result == SF_RES_VDI_LOCKED)
                sfi_fail_result(err, SF_RES_VDI_LOCKED, "%s is locked", what);
            else if (err->result == SF_RES_NO_VDI)
                sfi_fail_result(err, SF_RES_NO_VDI, "VDI '%.*s' not found", (int)name_len, name);
            else if (err->result == SF_RES_NO_TAG)
                sfi_fail_result(err, SF_RES_NO_TAG, "%s not found", what);
            else
                sfi_fail_result(err, err->result, "locking %s", what);
        }
    } else {
        rc = sfi_lookup_vid(cl, &conn, name, name_len, at, &vid, err);
        if (rc == SF_OK && release_vid(cl, &conn, vid, type, err) != SF_OK)
            rc = sfi_fail_result(err, err->result, "unlocking %s", what);
    }
    sfi_pool_put(cl, conn);
    return rc;
}

/* One vdi_state record: the lock it describes, if any. */
static int decode_lock(const uint8_t *rec, sf_lock_info *out)
{
    uint32_t state = sfi_get_le32(rec + SF_VDI_STATE_LOCK_STATE_OFF);
    memset(out, 0, sizeof(*out));
    out->vid = sfi_get_le32(rec);
    if (state == SF_LOCK_STATE_LOCKED) {
        out->type = SF_LOCK_EXCLUSIVE;
        if (sfi_node_id_address(rec + SF_VDI_STATE_OWNER_OFF, out->owners[0],
                                sizeof(out->owners[0])) == 0)
            out->nr_owners = 1;
        return 1;
    }
    if (state == SF_LOCK_STATE_SHARED) {
        uint32_t n = sfi_get_le32(rec + SF_VDI_STATE_NR_PARTICIPANTS_OFF);
        out->type = SF_LOCK_SHARED;
        for (uint32_t i = 0; i < n && i < SF_LOCK_OWNERS_MAX; i++) {
            const uint8_t *nid = rec + SF_VDI_STATE_PARTICIPANTS_OFF + i * SF_NODE_ID_SIZE;
            if (sfi_node_id_address(nid, out->owners[out->nr_owners], sizeof(out->owners[0])) == 0)
                out->nr_owners++;
        }
        return 1;
    }
    return 0;
}

/* The most vdi_state records one reply can carry (data_length is a u32). */
#define MAX_VDI_STATES ((uint64_t)UINT32_MAX / SF_VDI_STATE_SIZE)

static int sfi_cluster_locks_in_call(sf_cluster *cl, sf_lock_info **out, size_t *count,
                                     sf_error *err)
{
    uint64_t cap = 512; /* records; doubled while sheep answers BUFFER_SMALL */
    uint8_t *buf = NULL;
    sf_conn *conn = NULL;
    sf_op op;
    int rc = SF_ERR;
    sfi_error_clear(err);
    *out = NULL;
    *count = 0;
    if ((conn = sfi_pool_get(cl, err)) == NULL)
        return SF_ERR;
    for (;;) {
        free(buf);
        if ((buf = malloc((size_t)(cap * SF_VDI_STATE_SIZE))) == NULL) {
            sfi_fail(err, SF_E_NOMEM, "out of memory");
            goto done;
        }
        memset(&op, 0, sizeof(op));
        sfi_req_init(&op.req, SF_OP_GET_VDI_COPIES);
        op.req.data_length = (uint32_t)(cap * SF_VDI_STATE_SIZE);
        op.reply_buf = buf;
        op.reply_cap = op.req.data_length;
        op.retryable = 1;
        if (sfi_call(cl, &conn, &op, err) == SF_OK)
            break;
        if (err->category != SF_E_SERVER || err->result != SF_RES_BUFFER_SMALL ||
            cap * 2 > MAX_VDI_STATES)
            goto done;
        cap *= 2;
    }
    if (op.rsp.data_length % SF_VDI_STATE_SIZE != 0 || op.rsp.data_length > op.reply_cap) {
        sfi_fail(err, SF_E_PROTOCOL, "GET_VDI_COPIES returned %u bytes, not whole %u-byte records",
                 op.rsp.data_length, SF_VDI_STATE_SIZE);
        goto done;
    }
    size_t nr = op.rsp.data_length / SF_VDI_STATE_SIZE, found = 0;
    sf_lock_info *locks = calloc(nr ? nr : 1, sizeof(*locks));
    if (locks == NULL) {
        sfi_fail(err, SF_E_NOMEM, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < nr; i++)
        found += (size_t)decode_lock(buf + i * SF_VDI_STATE_SIZE, &locks[found]);
    *out = locks;
    *count = found;
    rc = SF_OK;
done:
    free(buf);
    sfi_pool_put(cl, conn);
    return rc;
}

/* ------------------------------------------------- public calls, each with one deadline */

int sf_vdi_snapshot(sf_cluster *cl, const char *name, size_t name_len, const char *tag,
                    size_t tag_len, sf_vdi_info *snapshot_out, sf_error *err)
{
    int64_t scope = sfi_call_begin(cl);
    int result = sfi_vdi_snapshot_in_call(cl, name, name_len, tag, tag_len, snapshot_out, err);
    sf_deadline_end(scope);
    return result;
}

int sf_vdi_rollback(sf_cluster *cl, const char *name, size_t name_len, const sf_snap_ref *at,
                    sf_vdi_info *out, sf_error *err)
{
    int64_t scope = sfi_call_begin(cl);
    int result = sfi_vdi_rollback_in_call(cl, name, name_len, at, out, err);
    sf_deadline_end(scope);
    return result;
}

int sf_vdi_clone(sf_cluster *cl, const char *name, size_t name_len, const sf_snap_ref *at,
                 const char *new_name, size_t new_name_len, uint64_t new_size, sf_vdi_info *out,
                 sf_error *err)
{
    int64_t scope = sfi_call_begin(cl);
    int result =
        sfi_vdi_clone_in_call(cl, name, name_len, at, new_name, new_name_len, new_size, out, err);
    sf_deadline_end(scope);
    return result;
}

int sf_vdi_lock(sf_cluster *cl, const char *name, size_t name_len, const sf_snap_ref *at, int type,
                sf_error *err)
{
    int64_t scope = sfi_call_begin(cl);
    int result = sfi_vdi_lock_in_call(cl, name, name_len, at, type, 0, err);
    sf_deadline_end(scope);
    return result;
}

int sf_vdi_unlock(sf_cluster *cl, const char *name, size_t name_len, const sf_snap_ref *at,
                  int type, sf_error *err)
{
    int64_t scope = sfi_call_begin(cl);
    int result = sfi_vdi_lock_in_call(cl, name, name_len, at, type, 1, err);
    sf_deadline_end(scope);
    return result;
}

int sf_vdi_unlock_vid(sf_cluster *cl, uint32_t vid, int type, sf_error *err)
{
    int64_t scope = sfi_call_begin(cl);
    int result = sfi_vdi_unlock_vid_in_call(cl, vid, type, err);
    sf_deadline_end(scope);
    return result;
}

int sf_cluster_locks(sf_cluster *cl, sf_lock_info **out, size_t *count, sf_error *err)
{
    int64_t scope = sfi_call_begin(cl);
    int result = sfi_cluster_locks_in_call(cl, out, count, err);
    sf_deadline_end(scope);
    return result;
}
