/*
 * VDI attributes: Sheepdog's key/value pairs (GET_VDI_ATTR, docs/PROTOCOL.md
 * sections 2.2, 2.4, 4.1, 4.2).
 *
 * One GET_VDI_ATTR carries a whole attribute record (66,320 bytes: sheep
 * reads its fields at fixed offsets, so a shorter request would make it read
 * past the buffer). sheep looks the working VDI up by name, then finds the
 * attribute object by a hash of (name, tag, snap_id, key), probing onward on
 * a collision. Its reply names the object (name hash, attr_id); reading a
 * value is a READ_OBJ of that object. With CREAT the record is written (a new
 * object, or the old one replaced), with DEL the stored name is blanked so
 * the key no longer matches. CREAT without EXCL does not probe: it writes the
 * first slot, over another key whose hash collided (section 13.17).
 */
#include <stdlib.h>
#include <string.h>

#include "sf_internal.h"

/* The checks every call makes before anything is sent. */
static int check_key(const char *key, size_t key_len, sf_error *err)
{
    const char *why = sfi_check_attr_key(key, key_len);
    return why == NULL ? SF_OK : sfi_fail(err, SF_E_INVALID, "%s", why);
}

/* Rewrites a server error with the VDI and key it was about. */
static int attr_failed(sf_error *err, const char *doing, const char *name, size_t name_len,
                       const char *key, size_t key_len)
{
    if (err->category != SF_E_SERVER)
        return SF_ERR;
    if (err->result == SF_RES_NO_VDI)
        return sfi_fail_result(err, SF_RES_NO_VDI, "VDI '%.*s' not found", (int)name_len, name);
    if (err->result == SF_RES_NO_OBJ)
        return sfi_fail_result(err, SF_RES_NO_OBJ, "VDI '%.*s' has no attribute '%.*s'",
                               (int)name_len, name, (int)key_len, key);
    return sfi_fail_result(err, err->result, "%s attribute '%.*s' of VDI '%.*s'", doing,
                           (int)key_len, key, (int)name_len, name);
}

/* One GET_VDI_ATTR on *conn; *oid_out (when not NULL) gets the object. */
static int attr_request(sf_cluster *cl, sf_conn **conn, const char *name, size_t name_len,
                        const char *key, size_t key_len, const void *value, uint32_t value_len,
                        uint16_t flags, uint64_t *oid_out, sf_error *err)
{
    uint8_t *record = malloc(SF_ATTR_OBJ_SIZE);
    if (record == NULL)
        return sfi_fail(err, SF_E_NOMEM, "out of memory");
    sfi_attr_encode(record, name, name_len, key, key_len, value, value_len);
    sf_op op;
    memset(&op, 0, sizeof(op));
    sfi_req_init(&op.req, SF_OP_GET_VDI_ATTR);
    op.req.flags = SF_FLAG_WRITE | flags; /* the record is a payload */
    op.req.data_length = SF_ATTR_OBJ_SIZE;
    op.payload = record;
    /* A resent lookup or write does the same again; a resent delete would
     * find the key already gone and answer NO_OBJ for our own success. */
    op.retryable = !(flags & SF_FLAG_ATTR_DEL);
    int rc = sfi_call(cl, conn, &op, err);
    free(record);
    if (rc != SF_OK)
        return SF_ERR;
    if (op.rsp.vdi_id > SF_MAX_VID)
        return sfi_fail(err, SF_E_PROTOCOL, "GET_VDI_ATTR returned name hash 0x%x", op.rsp.vdi_id);
    if (oid_out != NULL)
        *oid_out = sfi_attr_oid(op.rsp.vdi_id, op.rsp.attr_id);
    return SF_OK;
}

static int sfi_vdi_attr_set_in_call(sf_vdi *vdi, const char *key, size_t key_len, const void *value,
                                    size_t value_len, sf_error *err)
{
    sf_cluster *cl = vdi->cl;
    const char *name = vdi->info.name;
    size_t name_len = strlen(name);
    sfi_error_clear(err);
    if (check_key(key, key_len, err) != SF_OK)
        return SF_ERR;
    if (value_len > SF_ATTR_VALUE_MAX)
        return sfi_fail(err, SF_E_INVALID, "attribute value of %zu bytes is over the %u-byte limit",
                        value_len, (unsigned)SF_ATTR_VALUE_MAX);
    if (value_len > 0 && value == NULL)
        return sfi_fail(err, SF_E_INVALID, "attribute value is NULL");
    sf_conn *conn = sfi_pool_get(cl, err);
    if (conn == NULL)
        return SF_ERR;
    /* CREAT without EXCL: sheep creates the attribute or replaces it */
    int rc = attr_request(cl, &conn, name, name_len, key, key_len, value, (uint32_t)value_len,
                          SF_FLAG_ATTR_CREAT, NULL, err);
    sfi_pool_put(cl, conn);
    if (rc != SF_OK)
        return attr_failed(err, "setting", name, name_len, key, key_len);
    return SF_OK;
}

static int sfi_vdi_attr_get_in_call(sf_vdi *vdi, const char *key, size_t key_len, void *value,
                                    size_t value_cap, size_t *value_len, sf_error *err)
{
    sf_cluster *cl = vdi->cl;
    const char *name = vdi->info.name;
    size_t name_len = strlen(name);
    sfi_error_clear(err);
    if (check_key(key, key_len, err) != SF_OK)
        return SF_ERR;
    uint8_t *record = malloc(SF_ATTR_OBJ_SIZE);
    if (record == NULL)
        return sfi_fail(err, SF_E_NOMEM, "out of memory");
    uint64_t oid = 0;
    sf_conn *conn = sfi_pool_get(cl, err);
    int rc = conn == NULL ? SF_ERR : SF_OK;
    if (rc == SF_OK)
        rc = attr_request(cl, &conn, name, name_len, key, key_len, NULL, 0, 0, &oid, err);
    if (rc == SF_OK)
        rc = sfi_read_exact(cl, &conn, oid, 0, record, SF_ATTR_OBJ_SIZE, err);
    sfi_pool_put(cl, conn);
    if (rc != SF_OK) {
        rc = attr_failed(err, "reading", name, name_len, key, key_len);
        goto out;
    }
    /* What the object says must be the attribute that was asked for. */
    uint32_t stored_len = sfi_get_le32(record + SF_ATTR_VALUE_LEN_OFF);
    const uint8_t *stored_key = record + SF_ATTR_KEY_OFF;
    const uint8_t *stored_name = record + SF_ATTR_NAME_OFF;
    if (stored_len > SF_ATTR_VALUE_MAX) {
        rc = sfi_fail(err, SF_E_PROTOCOL, "attribute object %016llx has a %u-byte value",
                      (unsigned long long)oid, stored_len);
    } else if (memcmp(stored_key, key, key_len) != 0 || stored_key[key_len] != 0 ||
               memcmp(stored_name, name, name_len) != 0 || stored_name[name_len] != 0) {
        rc = sfi_fail(err, SF_E_PROTOCOL,
                      "attribute object %016llx does not hold attribute '%.*s' of VDI '%.*s'",
                      (unsigned long long)oid, (int)key_len, key, (int)name_len, name);
    } else if (stored_len > value_cap) {
        rc = sfi_fail(err, SF_E_INVALID, "attribute value of %u bytes does not fit in %zu",
                      stored_len, value_cap);
    } else {
        if (stored_len > 0)
            memcpy(value, record + SF_ATTR_VALUE_OFF, stored_len);
        *value_len = stored_len;
    }
out:
    free(record);
    return rc;
}

static int sfi_vdi_attr_delete_in_call(sf_vdi *vdi, const char *key, size_t key_len, sf_error *err)
{
    sf_cluster *cl = vdi->cl;
    const char *name = vdi->info.name;
    size_t name_len = strlen(name);
    sfi_error_clear(err);
    if (check_key(key, key_len, err) != SF_OK)
        return SF_ERR;
    sf_conn *conn = sfi_pool_get(cl, err);
    if (conn == NULL)
        return SF_ERR;
    int rc =
        attr_request(cl, &conn, name, name_len, key, key_len, NULL, 0, SF_FLAG_ATTR_DEL, NULL, err);
    sfi_pool_put(cl, conn);
    if (rc != SF_OK)
        return attr_failed(err, "deleting", name, name_len, key, key_len);
    return SF_OK;
}

/* ------------------------------------------------------------------ list */

/* The vid field of the name's attribute objects: FNV-1a-64 of the name,
 * cut to 24 bits (section 4.4). */
static uint32_t name_hash(const char *name, size_t len)
{
    return (uint32_t)(sfi_fnv1a_64(name, len) & SF_VID_MASK);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* The most object ids one GET_OBJ_LIST reply can carry (data_length is a u32). */
#define MAX_LISTED_OIDS ((uint64_t)UINT32_MAX / 8)

/* Appends the attribute oids of name hash `hash` that one sheep holds. */
static int node_attr_oids(sf_cluster *cl, unsigned gw, uint32_t hash, uint64_t **oids, size_t *nr,
                          size_t *cap, sf_error *err)
{
    sf_conn *conn = sfi_connect_gateway(cl, gw, err);
    if (conn == NULL)
        return SF_ERR;
    uint64_t want = 1u << 17; /* oids; doubled while sheep answers BUFFER_SMALL */
    uint8_t *buf = NULL;
    sf_op op;
    int rc;
    for (;;) {
        free(buf);
        if ((buf = malloc((size_t)(want * 8))) == NULL) {
            rc = sfi_fail(err, SF_E_NOMEM, "out of memory");
            goto out;
        }
        memset(&op, 0, sizeof(op));
        sfi_req_init(&op.req, SF_OP_GET_OBJ_LIST);
        op.req.data_length = (uint32_t)(want * 8);
        op.req.epoch = sfi_cluster_epoch(cl);
        op.reply_buf = buf;
        op.reply_cap = op.req.data_length;
        op.retryable = 0; /* this sheep's list, not another's */
        if ((rc = sfi_call(cl, &conn, &op, err)) == SF_OK)
            break;
        if (err->category != SF_E_SERVER || err->result != SF_RES_BUFFER_SMALL ||
            want * 2 > MAX_LISTED_OIDS)
            goto out;
        want *= 2;
    }
    if (op.rsp.data_length % 8 != 0 || op.rsp.data_length > op.reply_cap) {
        rc = sfi_fail(err, SF_E_PROTOCOL, "GET_OBJ_LIST returned %u bytes", op.rsp.data_length);
        goto out;
    }
    for (uint32_t i = 0; i < op.rsp.data_length / 8; i++) {
        uint64_t oid = sfi_get_le64(buf + 8 * i);
        if ((oid & SF_VDI_BIT) || !(oid & SF_VDI_ATTR_BIT) ||
            ((oid >> SF_VID_SHIFT) & SF_VID_MASK) != hash)
            continue;
        if (*nr == *cap) {
            size_t grown_cap = *cap ? *cap * 2 : 64;
            uint64_t *grown = realloc(*oids, grown_cap * sizeof(*grown));
            if (grown == NULL) {
                rc = sfi_fail(err, SF_E_NOMEM, "out of memory");
                goto out;
            }
            *oids = grown;
            *cap = grown_cap;
        }
        (*oids)[(*nr)++] = oid;
    }
out:
    free(buf);
    sfi_pool_put(cl, conn);
    return rc;
}

static int sfi_vdi_attr_list_in_call(sf_vdi *vdi, char **keys, size_t *len, size_t *count,
                                     sf_error *err)
{
    sf_cluster *cl = vdi->cl;
    const char *name = vdi->info.name;
    size_t name_len = strlen(name);
    uint64_t *oids = NULL;
    size_t nr = 0, cap = 0, used = 0, found = 0;
    char *out = NULL;
    uint8_t head[SF_ATTR_VALUE_OFF]; /* the record up to the value */
    sfi_error_clear(err);
    *keys = NULL;
    *len = *count = 0;
    sf_conn *conn = sfi_pool_get(cl, err);
    if (conn == NULL)
        return SF_ERR;
    /* every copy of every object is on some sheep: ask each of them */
    sf_ring *ring = sfi_cluster_read_ring(cl, &conn, err);
    int rc = ring ? SF_OK : SF_ERR;
    if (rc != SF_OK && err->category == SF_E_UNSUPPORTED)
        sfi_fail(err, SF_E_UNSUPPORTED, "listing attributes needs the node list: %s", err->message);
    for (uint32_t n = 0; rc == SF_OK && n < ring->nr_nodes; n++) {
        if (ring->nodes[n].gateway == SF_RING_NO_GATEWAY)
            rc = sfi_fail(err, SF_E_CONNECT, "listing attributes: a sheep is not reachable");
        else
            rc = node_attr_oids(cl, ring->nodes[n].gateway, name_hash(name, name_len), &oids, &nr,
                                &cap, err);
    }
    if (ring != NULL)
        sfi_ring_put(cl, ring);
    if (rc == SF_OK && nr > 1)
        qsort(oids, nr, sizeof(*oids), cmp_u64);
    for (size_t i = 0; rc == SF_OK && i < nr; i++) {
        if (i > 0 && oids[i] == oids[i - 1]) /* another copy */
            continue;
        rc = sfi_read_exact(cl, &conn, oids[i], 0, head, sizeof(head), err);
        if (rc != SF_OK && err->category == SF_E_SERVER && err->result == SF_RES_NO_OBJ) {
            rc = SF_OK; /* deleted since the list was read */
            continue;
        }
        /* the working VDI's attributes (empty tag, snap_id 0) of this very
         * name; a deleted one has its name blanked */
        const uint8_t *stored_key = head + SF_ATTR_KEY_OFF;
        size_t key_len = strnlen((const char *)stored_key, SF_ATTR_KEY_FIELD);
        if (rc != SF_OK || memcmp(head + SF_ATTR_NAME_OFF, name, name_len) != 0 ||
            head[SF_ATTR_NAME_OFF + name_len] != 0 || head[SF_ATTR_TAG_OFF] != 0 ||
            sfi_get_le32(head + SF_ATTR_SNAP_ID_OFF) != 0 || key_len == 0 ||
            key_len == SF_ATTR_KEY_FIELD)
            continue;
        char *grown = realloc(out, used + key_len + 1);
        if (grown == NULL) {
            rc = sfi_fail(err, SF_E_NOMEM, "out of memory");
            break;
        }
        out = grown;
        memcpy(out + used, stored_key, key_len);
        out[used + key_len] = 0;
        used += key_len + 1;
        found++;
    }
    sfi_pool_put(cl, conn);
    free(oids);
    if (rc != SF_OK) {
        free(out);
        return rc;
    }
    *keys = out;
    *len = used;
    *count = found;
    return SF_OK;
}

/* ------------------------------------------------- public calls, each with one deadline */

int sf_vdi_attr_set(sf_vdi *vdi, const char *key, size_t key_len, const void *value,
                    size_t value_len, sf_error *err)
{
    int64_t scope = sfi_call_begin(vdi->cl);
    int result = sfi_vdi_attr_set_in_call(vdi, key, key_len, value, value_len, err);
    sf_deadline_end(scope);
    return result;
}

int sf_vdi_attr_get(sf_vdi *vdi, const char *key, size_t key_len, void *value, size_t value_cap,
                    size_t *value_len, sf_error *err)
{
    int64_t scope = sfi_call_begin(vdi->cl);
    int result = sfi_vdi_attr_get_in_call(vdi, key, key_len, value, value_cap, value_len, err);
    sf_deadline_end(scope);
    return result;
}

int sf_vdi_attr_delete(sf_vdi *vdi, const char *key, size_t key_len, sf_error *err)
{
    int64_t scope = sfi_call_begin(vdi->cl);
    int result = sfi_vdi_attr_delete_in_call(vdi, key, key_len, err);
    sf_deadline_end(scope);
    return result;
}

int sf_vdi_attr_list(sf_vdi *vdi, char **keys, size_t *len, size_t *count, sf_error *err)
{
    int64_t scope = sfi_call_begin(vdi->cl);
    int result = sfi_vdi_attr_list_in_call(vdi, keys, len, count, err);
    sf_deadline_end(scope);
    return result;
}
