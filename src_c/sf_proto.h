/*
 * Sheepdog 1.0 wire format: constants, 48-byte headers, object ids.
 * Pure encode/decode: no I/O, no allocation, testable without a server.
 * Facts from docs/PROTOCOL.md; every integer is little-endian.
 */
#ifndef SF_PROTO_H
#define SF_PROTO_H

#include <stddef.h>
#include <stdint.h>

/* internal to the core, as everything in sf_internal.h (sfi_ functions) */
#if defined(__GNUC__)
#pragma GCC visibility push(hidden)
#endif

#define SF_HEADER_SIZE 48

#define SF_PROTO_VER 0x02          /* opcodes < 0x80 */
#define SF_PROTO_VER_INTERNAL 0x0A /* opcodes >= 0x80 */

enum sf_opcode {
    SF_OP_CREATE_AND_WRITE_OBJ = 0x01,
    SF_OP_READ_OBJ = 0x02,
    SF_OP_WRITE_OBJ = 0x03,
    SF_OP_REMOVE_OBJ = 0x04,
    SF_OP_DISCARD_OBJ = 0x05,
    SF_OP_NEW_VDI = 0x11,
    SF_OP_LOCK_VDI = 0x12,
    SF_OP_RELEASE_VDI = 0x13,
    SF_OP_GET_VDI_INFO = 0x14,
    SF_OP_READ_VDIS = 0x15,
    SF_OP_FLUSH_VDI = 0x16,
    SF_OP_DEL_VDI = 0x17,
    SF_OP_GET_CLUSTER_DEFAULT = 0x18,
    SF_OP_GET_NODE_LIST = 0x82,
    SF_OP_GET_OBJ_LIST = 0xA1,
    SF_OP_GET_VDI_COPIES = 0xAB,
    SF_OP_STAT_CLUSTER = 0x87,
    SF_OP_GET_VDI_ATTR = 0x89,
    SF_OP_CLUSTER_INFO = 0xBE,
    SF_OP_READ_DEL_VDIS = 0xC9,
};

#define SF_FLAG_WRITE 0x0001
#define SF_FLAG_COW 0x0002
#define SF_FLAG_DIRECT 0x0008
/* GET_VDI_ATTR only: write the attribute (create or replace it), fail with
 * VDI_EXIST if it exists, or blank it out */
#define SF_FLAG_ATTR_CREAT 0x0100
#define SF_FLAG_ATTR_EXCL 0x0200
#define SF_FLAG_ATTR_DEL 0x0400

/* Object ids (docs/PROTOCOL.md section 4.1) */
#define SF_VDI_BIT (UINT64_C(1) << 63)
#define SF_VDI_ATTR_BIT (UINT64_C(1) << 61)
#define SF_VID_SHIFT 32
#define SF_VID_MASK UINT32_C(0x00FFFFFF)
#define SF_MAX_VID SF_VID_MASK

static inline uint64_t sfi_data_oid(uint32_t vid, uint32_t idx)
{
    return ((uint64_t)(vid & SF_VID_MASK) << SF_VID_SHIFT) | idx;
}
static inline uint64_t sfi_inode_oid(uint32_t vid)
{
    return SF_VDI_BIT | ((uint64_t)(vid & SF_VID_MASK) << SF_VID_SHIFT);
}

/* An attribute object: name_hash is the vdi_id GET_VDI_ATTR answers (the
 * hash of the VDI's name, not its vid), attr_id its attr_id. */
static inline uint64_t sfi_attr_oid(uint32_t name_hash, uint32_t attr_id)
{
    return SF_VDI_ATTR_BIT | ((uint64_t)(name_hash & SF_VID_MASK) << SF_VID_SHIFT) | attr_id;
}

/* Inode layout (section 5) */
#define SF_INODE_SIZE 12587576u
#define SF_INODE_HEADER_SIZE 4664u
#define SF_INODE_NAME_OFF 0u
#define SF_INODE_TAG_OFF 256u
#define SF_INODE_CTIME_OFF 512u
#define SF_INODE_SNAP_CTIME_OFF 520u
#define SF_INODE_SIZE_OFF 536u
#define SF_INODE_COPY_POLICY_OFF 552u
#define SF_INODE_STORE_POLICY_OFF 553u
#define SF_INODE_COPIES_OFF 554u
#define SF_INODE_BSS_OFF 555u
#define SF_INODE_SNAP_ID_OFF 556u
#define SF_INODE_VDI_ID_OFF 560u
#define SF_INODE_PARENT_OFF 564u
#define SF_INODE_INDEX_OFF SF_INODE_HEADER_SIZE
#define SF_MAX_OBJECTS_FLAT (1u << 20)
#define SF_BTREE_MAGIC 0x6274

#define SF_NAME_FIELD 256u

/* The attribute record GET_VDI_ATTR carries and an attribute object holds
 * (sheep's struct sheepdog_vdi_attr): always sent and read whole. */
#define SF_ATTR_OBJ_SIZE 66320u
#define SF_ATTR_NAME_OFF 0u
#define SF_ATTR_TAG_OFF 256u
#define SF_ATTR_CTIME_OFF 512u
#define SF_ATTR_SNAP_ID_OFF 520u
#define SF_ATTR_VALUE_LEN_OFF 524u
#define SF_ATTR_KEY_OFF 528u
#define SF_ATTR_KEY_FIELD 256u
#define SF_ATTR_VALUE_OFF 784u
#define SF_NODE_RECORD_SIZE 80u
/* A node's id as sheep sends it: a 16-byte address and a u16 port. */
#define SF_NODE_ID_SIZE 40u
#define SF_NODE_RECORD_NID_OFF 24u
/* GET_VDI_COPIES answers one vdi_state record per VDI sheep knows. */
#define SF_VDI_STATE_SIZE 1428u
#define SF_VDI_STATE_LOCK_STATE_OFF 16u
#define SF_VDI_STATE_OWNER_OFF 20u
#define SF_VDI_STATE_NR_PARTICIPANTS_OFF 60u
#define SF_VDI_STATE_PARTICIPANTS_OFF 188u
#define SF_LOCK_STATE_UNLOCKED 1u
#define SF_LOCK_STATE_LOCKED 2u
#define SF_LOCK_STATE_SHARED 3u
#define SF_STAT_CLUSTER_RECORD 48u /* one epoch-log record */
#define SF_STAT_CLUSTER_FLAGS_OFF 30u
#define SF_CLUSTER_FLAG_DISKMODE 0x02u
#define SF_MAX_NODES 6144u
#define SF_NODE_LIST_BUF (SF_MAX_NODES * SF_NODE_RECORD_SIZE) /* sheep does no bounds check */
#define SF_VDI_BITMAP_SIZE (1u << 21)                         /* 2^24 bits */

/* A request header in host form. One struct for every union variant: the
 * encoder picks which fields go on the wire from the opcode. */
typedef struct sf_req {
    uint8_t proto_ver;
    uint8_t opcode;
    uint16_t flags;
    uint32_t epoch;
    uint32_t id;
    uint32_t data_length;
    /* obj variant */
    uint64_t oid;
    uint64_t cow_oid;
    uint8_t copies;
    uint8_t copy_policy;
    uint32_t offset;
    /* vdi variant */
    uint64_t vdi_size;
    uint32_t base_vdi_id;
    uint8_t store_policy;
    uint8_t block_size_shift;
    uint32_t snapid;
    uint32_t lock_type;
    /* cluster variant */
    uint32_t nodes_nr;
} sf_req;

typedef struct sf_rsp {
    uint8_t proto_ver;
    uint8_t opcode;
    uint16_t flags;
    uint32_t epoch;
    uint32_t id;
    uint32_t data_length;
    uint32_t result;
    /* vdi replies */
    uint32_t vdi_id;
    uint32_t attr_id;
    uint8_t copies;
    uint8_t block_size_shift;
    /* GET_CLUSTER_DEFAULT */
    uint8_t default_copies;
    uint8_t default_copy_policy;
    uint8_t default_bss;
    /* GET_NODE_LIST */
    uint32_t nr_nodes;
} sf_rsp;

enum sf_union_kind { SF_UNION_NONE, SF_UNION_OBJ, SF_UNION_VDI, SF_UNION_CLUSTER };

enum sf_union_kind sfi_union_of(uint8_t opcode);
/* Fills proto_ver for the opcode (2 or 0x0A). */
void sfi_req_init(sf_req *req, uint8_t opcode);
void sfi_req_encode(const sf_req *req, uint8_t out[SF_HEADER_SIZE]);
void sfi_req_decode(const uint8_t in[SF_HEADER_SIZE], sf_req *req);  /* tests, fakes */
void sfi_rsp_encode(const sf_rsp *rsp, uint8_t out[SF_HEADER_SIZE]); /* tests, fakes */
void sfi_rsp_decode(const uint8_t in[SF_HEADER_SIZE], sf_rsp *rsp);

const char *sfi_opcode_name(uint8_t opcode);

/* 1..255 bytes, no NUL. Returns NULL when valid, else why not. */
const char *sfi_check_name(const char *name, size_t len);
/* 0 (replication) or ((d/2)<<4)|p with d in {2,4,8,16}, p in 1..15. A
 * non-zero policy with p == 0 makes sheep panic, so it must never leave. */
const char *sfi_check_copy_policy(uint8_t policy);
/* The largest flat VDI for an object size: 2^20 objects. */
uint64_t sfi_max_flat_size(uint8_t block_size_shift);

/* 1..SF_ATTR_KEY_MAX bytes, no NUL (sheep compares keys as C strings).
 * Returns NULL when valid, else why not. */
const char *sfi_check_attr_key(const char *key, size_t len);
/* Fills out[SF_ATTR_OBJ_SIZE] with the record for the working VDI's (name,
 * key) and value; name and key must have passed their checks and value_len
 * be at most SF_ATTR_VALUE_MAX. */
void sfi_attr_encode(uint8_t *out, const char *name, size_t name_len, const char *key,
                     size_t key_len, const void *value, uint32_t value_len);

/* Little-endian field access, used for inode and node records too. */
static inline uint16_t sfi_get_le16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}
static inline uint32_t sfi_get_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static inline uint64_t sfi_get_le64(const uint8_t *p)
{
    return (uint64_t)sfi_get_le32(p) | ((uint64_t)sfi_get_le32(p + 4) << 32);
}
static inline void sfi_put_le16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}
static inline void sfi_put_le32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}
static inline void sfi_put_le64(uint8_t *p, uint64_t v)
{
    sfi_put_le32(p, (uint32_t)v);
    sfi_put_le32(p + 4, (uint32_t)(v >> 32));
}

/* Decodes the fixed part of an inode (at least SF_INODE_HEADER_SIZE bytes,
 * only the first 572 are looked at). */
struct sf_vdi_info;
void sfi_inode_header_decode(const uint8_t *buf, struct sf_vdi_info *info);

/* Node record (80 bytes) -> "host:port" text. Returns 0, or -1 if the
 * record is not an address this client can use. */
int sfi_node_record_address(const uint8_t rec[SF_NODE_RECORD_SIZE], char *out, size_t out_len);
/* The same for a bare node id (SF_NODE_ID_SIZE bytes). */
int sfi_node_id_address(const uint8_t *nid, char *out, size_t out_len);

#if defined(__GNUC__)
#pragma GCC visibility pop
#endif

#endif
