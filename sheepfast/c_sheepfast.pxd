# Every declaration of the C core used by the binding, once (src_c/).
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t


cdef extern from "sheepfast.h" nogil:
    ctypedef enum sf_errcat:
        SF_E_NONE
        SF_E_INVALID
        SF_E_NOMEM
        SF_E_RESOLVE
        SF_E_CONNECT
        SF_E_IO
        SF_E_TIMEOUT
        SF_E_PROTOCOL
        SF_E_SERVER
        SF_E_UNSUPPORTED
        SF_E_RANGE

    ctypedef struct sf_error:
        sf_errcat category
        int sys_errno
        uint32_t result
        char message[256]

    ctypedef struct sf_options:
        const char *addresses
        int connect_timeout_ms
        int io_timeout_ms
        unsigned depth
        int no_routing
        uint32_t request_size
    int SF_DEFAULT_PORT
    int SF_DEFAULT_CONNECT_TIMEOUT_MS
    int SF_DEFAULT_IO_TIMEOUT_MS
    unsigned SF_DEFAULT_DEPTH
    unsigned SF_MAX_DEPTH
    int SF_NAME_MAX
    int SF_MAX_COPIES
    int SF_DEFAULT_BLOCK_SIZE_SHIFT
    int SF_MIN_BLOCK_SIZE_SHIFT
    int SF_MAX_BLOCK_SIZE_SHIFT
    unsigned SF_DEFAULT_REQUEST_SIZE
    enum: SF_ADDRESS_LIST_MAX
    unsigned SF_REQUEST_ALIGN
    unsigned SF_ATTR_KEY_MAX
    unsigned SF_ATTR_VALUE_MAX
    unsigned SF_RES_NO_OBJ

    ctypedef struct sf_cluster_defaults:
        uint8_t copies
        uint8_t copy_policy
        uint8_t block_size_shift

    ctypedef struct sf_vdi_info:
        char name[256]
        char tag[256]
        uint32_t vid
        uint32_t parent_vid
        uint32_t snap_id
        uint64_t size
        uint64_t create_time
        uint64_t snap_ctime
        uint8_t copies
        uint8_t copy_policy
        uint8_t store_policy
        uint8_t block_size_shift

    ctypedef struct sf_create_options:
        unsigned copies
        unsigned copy_policy
        unsigned block_size_shift

    ctypedef struct sf_vdi_stats:
        uint64_t read_requests
        uint64_t write_requests
        uint64_t create_requests
        uint64_t index_updates
        uint64_t zero_objects_skipped
        uint64_t routed_requests
        uint64_t objects_checked
        uint64_t objects_rewritten

    ctypedef struct sf_cluster:
        pass
    ctypedef struct sf_vdi:
        pass

    int SF_OK

    const char *sf_version()
    const char *sf_result_name(uint32_t result)
    int64_t sf_deadline_begin(int timeout_ms)
    void sf_deadline_end(int64_t saved)
    sf_cluster *sf_cluster_open(const sf_options *opt, sf_error *err)
    void sf_cluster_close(sf_cluster *cl)
    int sf_cluster_get_defaults(sf_cluster *cl, sf_cluster_defaults *out, sf_error *err)
    int sf_cluster_nodes(sf_cluster *cl, char *out, size_t out_len, sf_error *err)
    void sf_prepare_buffer(void *buf, size_t len)
    int sf_cluster_locate(sf_cluster *cl, uint64_t oid, unsigned copies, char *out, size_t out_len,
                          sf_error *err)
    int sf_vdi_create(sf_cluster *cl, const char *name, size_t name_len, uint64_t size,
                      const sf_create_options *opt, uint32_t *vid_out, sf_error *err)
    int sf_vdi_stat(sf_cluster *cl, const char *name, size_t name_len, sf_vdi_info *out,
                    sf_error *err)
    int sf_vdi_delete(sf_cluster *cl, const char *name, size_t name_len, sf_error *err)
    int sf_vdi_list(sf_cluster *cl, sf_vdi_info **out, size_t *count, sf_error *err)
    void sf_free(void *p)
    int sf_vdi_attr_set(sf_vdi *vdi, const char *key, size_t key_len, const void *value,
                        size_t value_len, sf_error *err)
    int sf_vdi_attr_get(sf_vdi *vdi, const char *key, size_t key_len, void *value,
                        size_t value_cap, size_t *value_len, sf_error *err)
    int sf_vdi_attr_delete(sf_vdi *vdi, const char *key, size_t key_len, sf_error *err)
    sf_vdi *sf_vdi_open(sf_cluster *cl, const char *name, size_t name_len, sf_error *err)
    ctypedef struct sf_snap_ref:
        const char *tag
        size_t tag_len
        uint32_t snap_id
    unsigned SF_CLUSTER_USE_LOCK
    unsigned sf_cluster_flags(const sf_cluster *cl)
    int sf_vdi_stat_vid(sf_cluster *cl, uint32_t vid, sf_vdi_info *out, sf_error *err)
    int sf_vdi_stat_at(sf_cluster *cl, const char *name, size_t name_len, const sf_snap_ref *at,
                       sf_vdi_info *out, sf_error *err)
    sf_vdi *sf_vdi_open_at(sf_cluster *cl, const char *name, size_t name_len,
                           const sf_snap_ref *at, sf_error *err)
    uint32_t SF_READ_AHEAD_MAX
    sf_vdi *sf_vdi_open_read_ahead(sf_cluster *cl, const char *name, size_t name_len,
                                   const sf_snap_ref *at, uint32_t read_ahead, sf_error *err)
    uint32_t sf_vdi_read_ahead_held(sf_vdi *vdi)
    int sf_vdi_delete_at(sf_cluster *cl, const char *name, size_t name_len, const sf_snap_ref *at,
                         sf_error *err)
    int sf_vdi_snapshot(sf_cluster *cl, const char *name, size_t name_len, const char *tag,
                        size_t tag_len, sf_vdi_info *snapshot_out, sf_error *err)
    int sf_vdi_rollback(sf_cluster *cl, const char *name, size_t name_len, const sf_snap_ref *at,
                        sf_vdi_info *out, sf_error *err)
    int sf_vdi_clone(sf_cluster *cl, const char *name, size_t name_len, const sf_snap_ref *at,
                     const char *new_name, size_t new_name_len, uint64_t new_size,
                     sf_vdi_info *out, sf_error *err)
    int sf_vdi_flatten(sf_vdi *vdi, sf_error *err)
    int sf_vdi_discard(sf_vdi *vdi, uint64_t len, uint64_t offset, sf_error *err)
    int SF_LOCK_EXCLUSIVE
    int SF_LOCK_SHARED
    int SF_LOCK_OWNERS_MAX
    int SF_TAG_MAX
    int sf_vdi_lock(sf_cluster *cl, const char *name, size_t name_len, const sf_snap_ref *at,
                    int type, sf_error *err)
    int sf_vdi_unlock(sf_cluster *cl, const char *name, size_t name_len, const sf_snap_ref *at,
                      int type, sf_error *err)
    int sf_vdi_unlock_vid(sf_cluster *cl, uint32_t vid, int type, sf_error *err)
    ctypedef struct sf_lock_info:
        uint32_t vid
        int type
        unsigned nr_owners
        char owners[31][264]  # SF_LOCK_OWNERS_MAX x SF_ADDRESS_TEXT_MAX in sheepfast.h
    int sf_cluster_locks(sf_cluster *cl, sf_lock_info **out, size_t *count, sf_error *err)
    int sf_vdi_attr_list(sf_vdi *vdi, char **keys, size_t *len, size_t *count, sf_error *err)
    void sf_vdi_close(sf_vdi *vdi)
    const sf_vdi_info *sf_vdi_get_info(const sf_vdi *vdi)
    uint64_t sf_vdi_size(sf_vdi *vdi)
    void sf_vdi_set_thin(sf_vdi *vdi, int enabled)
    int sf_vdi_read(sf_vdi *vdi, void *buf, uint64_t length, uint64_t offset, sf_error *err)
    int sf_vdi_write(sf_vdi *vdi, const void *buf, uint64_t length, uint64_t offset,
                     sf_error *err)
    int sf_vdi_resize(sf_vdi *vdi, uint64_t new_size, sf_error *err)
    int sf_vdi_usage(sf_vdi *vdi, uint64_t *used_bytes, uint64_t *shared_bytes, sf_error *err)
    void sf_vdi_get_stats(const sf_vdi *vdi, sf_vdi_stats *out)


cdef extern from "sf_proto.h" nogil:
    ctypedef struct sf_req:
        uint8_t proto_ver
        uint8_t opcode
        uint16_t flags
        uint32_t epoch
        uint32_t id
        uint32_t data_length
        uint64_t oid
        uint64_t cow_oid
        uint8_t copies
        uint8_t copy_policy
        uint32_t offset
        uint64_t vdi_size
        uint32_t base_vdi_id
        uint8_t store_policy
        uint8_t block_size_shift
        uint32_t snapid
        uint32_t lock_type
        uint32_t nodes_nr

    ctypedef struct sf_rsp:
        uint8_t proto_ver
        uint8_t opcode
        uint16_t flags
        uint32_t epoch
        uint32_t id
        uint32_t data_length
        uint32_t result
        uint32_t vdi_id
        uint32_t attr_id
        uint8_t copies
        uint8_t block_size_shift
        uint8_t default_copies
        uint8_t default_copy_policy
        uint8_t default_bss
        uint32_t nr_nodes

    void sfi_req_init(sf_req *req, uint8_t opcode)
    void sfi_req_encode(const sf_req *req, uint8_t *out)
    void sfi_req_decode(const uint8_t *data, sf_req *req)
    void sfi_rsp_encode(const sf_rsp *rsp, uint8_t *out)
    void sfi_rsp_decode(const uint8_t *data, sf_rsp *rsp)
    const char *sfi_check_name(const char *name, size_t length)
    const char *sfi_check_copy_policy(uint8_t policy)


cdef extern from "sf_internal.h" nogil:
    int sfi_is_zero(const void *buf, size_t length)
