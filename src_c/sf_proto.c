/* Sheepdog wire format encode/decode. See sf_proto.h. */
#include "sf_proto.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "sheepfast.h"

enum sf_union_kind sfi_union_of(uint8_t opcode)
{
    switch (opcode) {
    case SF_OP_CREATE_AND_WRITE_OBJ:
    case SF_OP_READ_OBJ:
    case SF_OP_WRITE_OBJ:
    case SF_OP_REMOVE_OBJ:
    case SF_OP_DISCARD_OBJ:
        return SF_UNION_OBJ;
    case SF_OP_NEW_VDI:
    case SF_OP_LOCK_VDI:
    case SF_OP_RELEASE_VDI:
    case SF_OP_GET_VDI_INFO:
    case SF_OP_DEL_VDI:
    case SF_OP_GET_VDI_ATTR:
        return SF_UNION_VDI;
    case SF_OP_STAT_CLUSTER:
        return SF_UNION_CLUSTER;
    default:
        return SF_UNION_NONE;
    }
}

void sfi_req_init(sf_req *req, uint8_t opcode)
{
    memset(req, 0, sizeof(*req));
    req->opcode = opcode;
    /* sheep insists on exactly 0x0A for its "internal" opcode range */
    req->proto_ver = opcode >= 0x80 ? SF_PROTO_VER_INTERNAL : SF_PROTO_VER;
}

void sfi_req_encode(const sf_req *req, uint8_t out[SF_HEADER_SIZE])
{
    memset(out, 0, SF_HEADER_SIZE);
    out[0] = req->proto_ver;
    out[1] = req->opcode;
    sfi_put_le16(out + 2, req->flags);
    sfi_put_le32(out + 4, req->epoch);
    sfi_put_le32(out + 8, req->id);
    sfi_put_le32(out + 12, req->data_length);
    switch (sfi_union_of(req->opcode)) {
    case SF_UNION_OBJ:
        sfi_put_le64(out + 16, req->oid);
        sfi_put_le64(out + 24, req->cow_oid);
        out[32] = req->copies;
        out[33] = req->copy_policy;
        sfi_put_le32(out + 40, req->offset);
        break;
    case SF_UNION_VDI:
        sfi_put_le64(out + 16, req->vdi_size);
        sfi_put_le32(out + 24, req->base_vdi_id);
        out[28] = req->copies;
        out[29] = req->copy_policy;
        out[30] = req->store_policy;
        out[31] = req->block_size_shift;
        sfi_put_le32(out + 32, req->snapid);
        sfi_put_le32(out + 36, req->lock_type);
        break;
    case SF_UNION_CLUSTER:
        sfi_put_le32(out + 40, req->nodes_nr);
        break;
    case SF_UNION_NONE:
        break;
    }
}

void sfi_req_decode(const uint8_t in[SF_HEADER_SIZE], sf_req *req)
{
    memset(req, 0, sizeof(*req));
    req->proto_ver = in[0];
    req->opcode = in[1];
    req->flags = sfi_get_le16(in + 2);
    req->epoch = sfi_get_le32(in + 4);
    req->id = sfi_get_le32(in + 8);
    req->data_length = sfi_get_le32(in + 12);
    switch (sfi_union_of(req->opcode)) {
    case SF_UNION_OBJ:
        req->oid = sfi_get_le64(in + 16);
        req->cow_oid = sfi_get_le64(in + 24);
        req->copies = in[32];
        req->copy_policy = in[33];
        req->offset = sfi_get_le32(in + 40);
        break;
    case SF_UNION_VDI:
        req->vdi_size = sfi_get_le64(in + 16);
        req->base_vdi_id = sfi_get_le32(in + 24);
        req->copies = in[28];
        req->copy_policy = in[29];
        req->store_policy = in[30];
        req->block_size_shift = in[31];
        req->snapid = sfi_get_le32(in + 32);
        req->lock_type = sfi_get_le32(in + 36);
        break;
    case SF_UNION_CLUSTER:
        req->nodes_nr = sfi_get_le32(in + 40);
        break;
    case SF_UNION_NONE:
        break;
    }
}

void sfi_rsp_encode(const sf_rsp *rsp, uint8_t out[SF_HEADER_SIZE])
{
    memset(out, 0, SF_HEADER_SIZE);
    out[0] = rsp->proto_ver;
    out[1] = rsp->opcode;
    sfi_put_le16(out + 2, rsp->flags);
    sfi_put_le32(out + 4, rsp->epoch);
    sfi_put_le32(out + 8, rsp->id);
    sfi_put_le32(out + 12, rsp->data_length);
    sfi_put_le32(out + 16, rsp->result);
    if (sfi_union_of(rsp->opcode) == SF_UNION_VDI) {
        sfi_put_le32(out + 24, rsp->vdi_id);
        sfi_put_le32(out + 28, rsp->attr_id);
        out[32] = rsp->copies;
        out[33] = rsp->block_size_shift;
    } else if (rsp->opcode == SF_OP_GET_CLUSTER_DEFAULT) {
        out[20] = rsp->default_copies;
        out[21] = rsp->default_copy_policy;
        out[22] = rsp->default_bss;
    } else if (rsp->opcode == SF_OP_GET_NODE_LIST) {
        sfi_put_le32(out + 20, rsp->nr_nodes);
    }
}

void sfi_rsp_decode(const uint8_t in[SF_HEADER_SIZE], sf_rsp *rsp)
{
    memset(rsp, 0, sizeof(*rsp));
    rsp->proto_ver = in[0];
    rsp->opcode = in[1];
    rsp->flags = sfi_get_le16(in + 2);
    rsp->epoch = sfi_get_le32(in + 4);
    rsp->id = sfi_get_le32(in + 8);
    rsp->data_length = sfi_get_le32(in + 12);
    rsp->result = sfi_get_le32(in + 16);
    /* The union is decoded for every reply; callers only trust it when
     * result is SUCCESS (an error reply may carry garbage there). */
    rsp->vdi_id = sfi_get_le32(in + 24);
    rsp->attr_id = sfi_get_le32(in + 28);
    rsp->copies = in[32];
    rsp->block_size_shift = in[33];
    rsp->default_copies = in[20];
    rsp->default_copy_policy = in[21];
    rsp->default_bss = in[22];
    rsp->nr_nodes = sfi_get_le32(in + 20);
}

const char *sfi_opcode_name(uint8_t opcode)
{
    switch (opcode) {
    case SF_OP_CREATE_AND_WRITE_OBJ:
        return "CREATE_AND_WRITE_OBJ";
    case SF_OP_READ_OBJ:
        return "READ_OBJ";
    case SF_OP_WRITE_OBJ:
        return "WRITE_OBJ";
    case SF_OP_REMOVE_OBJ:
        return "REMOVE_OBJ";
    case SF_OP_DISCARD_OBJ:
        return "DISCARD_OBJ";
    case SF_OP_NEW_VDI:
        return "NEW_VDI";
    case SF_OP_LOCK_VDI:
        return "LOCK_VDI";
    case SF_OP_RELEASE_VDI:
        return "RELEASE_VDI";
    case SF_OP_GET_VDI_INFO:
        return "GET_VDI_INFO";
    case SF_OP_READ_VDIS:
        return "READ_VDIS";
    case SF_OP_FLUSH_VDI:
        return "FLUSH_VDI";
    case SF_OP_DEL_VDI:
        return "DEL_VDI";
    case SF_OP_GET_CLUSTER_DEFAULT:
        return "GET_CLUSTER_DEFAULT";
    case SF_OP_GET_NODE_LIST:
        return "GET_NODE_LIST";
    case SF_OP_GET_OBJ_LIST:
        return "GET_OBJ_LIST";
    case SF_OP_GET_VDI_COPIES:
        return "GET_VDI_COPIES";
    case SF_OP_STAT_CLUSTER:
        return "STAT_CLUSTER";
    case SF_OP_GET_VDI_ATTR:
        return "GET_VDI_ATTR";
    case SF_OP_CLUSTER_INFO:
        return "CLUSTER_INFO";
    case SF_OP_READ_DEL_VDIS:
        return "READ_DEL_VDIS";
    default:
        return "UNKNOWN_OP";
    }
}

const char *sf_result_name(uint32_t result)
{
    switch (result) {
    case 0x00:
        return "SUCCESS";
    case 0x01:
        return "UNKNOWN";
    case 0x02:
        return "NO_OBJ";
    case 0x03:
        return "EIO";
    case 0x04:
        return "VDI_EXIST";
    case 0x05:
        return "INVALID_PARMS";
    case 0x06:
        return "SYSTEM_ERROR";
    case 0x07:
        return "VDI_LOCKED";
    case 0x08:
        return "NO_VDI";
    case 0x09:
        return "NO_BASE_VDI";
    case 0x0A:
        return "VDI_READ";
    case 0x0B:
        return "VDI_WRITE";
    case 0x0C:
        return "BASE_VDI_READ";
    case 0x0D:
        return "BASE_VDI_WRITE";
    case 0x0E:
        return "NO_TAG";
    case 0x0F:
        return "STARTUP";
    case 0x10:
        return "VDI_NOT_LOCKED";
    case 0x11:
        return "SHUTDOWN";
    case 0x12:
        return "NO_MEM";
    case 0x13:
        return "FULL_VDI";
    case 0x14:
        return "VER_MISMATCH";
    case 0x15:
        return "NO_SPACE";
    case 0x16:
        return "WAIT_FOR_FORMAT";
    case 0x17:
        return "WAIT_FOR_JOIN";
    case 0x18:
        return "JOIN_FAILED";
    case 0x19:
        return "HALT";
    case 0x1A:
        return "READONLY";
    case 0x1D:
        return "INODE_INVALIDATED";
    case 0x81:
        return "OLD_NODE_VER";
    case 0x82:
        return "NEW_NODE_VER";
    case 0x83:
        return "NOT_FORMATTED";
    case 0x84:
        return "INVALID_CTIME";
    case 0x85:
        return "INVALID_EPOCH";
    case 0x86:
        return "NETWORK_ERROR";
    case 0x88:
        return "BUFFER_SMALL";
    case 0x8B:
        return "NO_SUPPORT";
    case 0x8C:
        return "NODE_IN_RECOVERY";
    case 0x8D:
        return "KILLED";
    case 0x8F:
        return "AGAIN";
    case 0x91:
        return "CLUSTER_ERROR";
    case 0x95:
        return "COLLECTING_CINFO";
    default:
        return "UNKNOWN_RESULT";
    }
}

const char *sfi_check_name(const char *name, size_t len)
{
    if (name == NULL || len == 0)
        return "VDI name is empty";
    if (len > SF_NAME_MAX)
        return "VDI name is longer than 255 bytes";
    if (memchr(name, '\0', len) != NULL)
        return "VDI name contains a NUL byte";
    return NULL;
}

const char *sfi_check_attr_key(const char *key, size_t len)
{
    if (key == NULL || len == 0)
        return "attribute key is empty";
    if (len > SF_ATTR_KEY_MAX)
        return "attribute key is longer than 255 bytes";
    if (memchr(key, '\0', len) != NULL)
        return "attribute key contains a NUL byte";
    return NULL;
}

void sfi_attr_encode(uint8_t *out, const char *name, size_t name_len, const char *key,
                     size_t key_len, const void *value, uint32_t value_len)
{
    /* tag empty and snap_id 0: the working VDI; ctime is sheep's to fill */
    memset(out, 0, SF_ATTR_OBJ_SIZE);
    memcpy(out + SF_ATTR_NAME_OFF, name, name_len);
    memcpy(out + SF_ATTR_KEY_OFF, key, key_len);
    sfi_put_le32(out + SF_ATTR_VALUE_LEN_OFF, value_len);
    if (value_len > 0)
        memcpy(out + SF_ATTR_VALUE_OFF, value, value_len);
}

const char *sfi_check_copy_policy(uint8_t policy)
{
    if (policy == 0)
        return NULL;
    unsigned half_d = policy >> 4, parity = policy & 0x0F;
    if (parity == 0)
        return "erasure code has no parity strips (sheep would panic)";
    if (half_d != 1 && half_d != 2 && half_d != 4 && half_d != 8)
        return "erasure code data strips must be 2, 4, 8 or 16";
    return NULL;
}

uint64_t sfi_max_flat_size(uint8_t block_size_shift)
{
    return (uint64_t)SF_MAX_OBJECTS_FLAT << block_size_shift;
}

static void copy_cstring(char *dst, size_t dst_len, const uint8_t *src, size_t src_len)
{
    size_t n = 0;
    while (n < src_len && n + 1 < dst_len && src[n] != 0)
        n++;
    memcpy(dst, src, n);
    dst[n] = '\0';
}

void sfi_inode_header_decode(const uint8_t *buf, struct sf_vdi_info *info)
{
    memset(info, 0, sizeof(*info));
    copy_cstring(info->name, sizeof(info->name), buf + SF_INODE_NAME_OFF, SF_NAME_FIELD);
    copy_cstring(info->tag, sizeof(info->tag), buf + SF_INODE_TAG_OFF, SF_NAME_FIELD);
    info->create_time = sfi_get_le64(buf + SF_INODE_CTIME_OFF);
    info->snap_ctime = sfi_get_le64(buf + SF_INODE_SNAP_CTIME_OFF);
    info->size = sfi_get_le64(buf + SF_INODE_SIZE_OFF);
    info->copy_policy = buf[SF_INODE_COPY_POLICY_OFF];
    info->store_policy = buf[SF_INODE_STORE_POLICY_OFF];
    info->copies = buf[SF_INODE_COPIES_OFF];
    info->block_size_shift = buf[SF_INODE_BSS_OFF];
    info->snap_id = sfi_get_le32(buf + SF_INODE_SNAP_ID_OFF);
    info->vid = sfi_get_le32(buf + SF_INODE_VDI_ID_OFF);
    info->parent_vid = sfi_get_le32(buf + SF_INODE_PARENT_OFF);
}

int sfi_node_record_address(const uint8_t rec[SF_NODE_RECORD_SIZE], char *out, size_t out_len)
{
    return sfi_node_id_address(rec + SF_NODE_RECORD_NID_OFF, out, out_len);
}

int sfi_node_id_address(const uint8_t *nid, char *out, size_t out_len)
{
    static const uint8_t zeros[12] = {0};
    const uint8_t *addr = nid;
    uint16_t port = sfi_get_le16(nid + 16);
    char host[INET6_ADDRSTRLEN];
    int n;

    if (port == 0)
        return -1;
    /* IPv4 is sent as 12 zero bytes + 4 address bytes, not ::ffff-mapped.
     * That makes ::1 look like 0.0.0.1; 0.0.0.0/8 is no host address, so
     * such records are read as the IPv6 address they must be. */
    if (memcmp(addr, zeros, sizeof(zeros)) == 0 && addr[12] != 0) {
        if (inet_ntop(AF_INET, addr + 12, host, sizeof(host)) == NULL)
            return -1;
        n = snprintf(out, out_len, "%s:%u", host, port);
    } else {
        if (inet_ntop(AF_INET6, addr, host, sizeof(host)) == NULL)
            return -1;
        n = snprintf(out, out_len, "[%s]:%u", host, port);
    }
    return (n > 0 && (size_t)n < out_len) ? 0 : -1;
}
