/*
 * sheepfast: a client for the Sheepdog 1.0 wire protocol.
 *
 * Public API of the C core. C99, no Python. Licensed under Apache-2.0.
 *
 * Threading model: an sf_cluster and the sf_vdi handles opened from it may be
 * used from several threads at once. Each call borrows a connection from the
 * cluster's pool for its duration, so calls never share a socket. Because of
 * that, errors are reported through a caller-owned sf_error passed to every
 * call rather than stored on the (shared) context.
 */
#ifndef SHEEPFAST_H
#define SHEEPFAST_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The version has one home, pyproject.toml: setup.py and src_c/Makefile pass it. */
#ifndef SF_VERSION_STRING
#error "SF_VERSION_STRING is not defined: build with setup.py or src_c/Makefile"
#endif

/* The public API is exported from a shared library built with
 * -fvisibility=hidden. A build that links the core into something else
 * (the Python extension) may define SF_EXPORT empty to export nothing. */
#ifndef SF_EXPORT
#if defined(__GNUC__)
#define SF_EXPORT __attribute__((visibility("default")))
#else
#define SF_EXPORT
#endif
#endif

#define SF_OK 0
#define SF_ERR (-1)

/* What kind of failure an sf_error describes. */
typedef enum sf_errcat {
    SF_E_NONE = 0,
    SF_E_INVALID, /* the caller's arguments were refused before sending */
    SF_E_NOMEM,
    SF_E_RESOLVE,     /* an address could not be parsed or resolved */
    SF_E_CONNECT,     /* connecting failed (errno set) */
    SF_E_IO,          /* a socket error or EOF while a request was in flight */
    SF_E_TIMEOUT,     /* connect or I/O made no progress within its timeout */
    SF_E_PROTOCOL,    /* the peer sent something that breaks the protocol */
    SF_E_SERVER,      /* sheep answered with a non-zero result code */
    SF_E_UNSUPPORTED, /* a valid request this client does not implement */
    SF_E_RANGE,       /* offset/length outside the VDI */
} sf_errcat;

typedef struct sf_error {
    sf_errcat category;
    int sys_errno;     /* errno for SF_E_CONNECT / SF_E_IO, else 0 */
    uint32_t result;   /* Sheepdog result code for SF_E_SERVER, else 0 */
    char message[256]; /* human-readable: operation, VDI, range */
} sf_error;

/* Sheepdog result codes a caller is likely to branch on. */
#define SF_RES_SUCCESS 0x00
#define SF_RES_NO_OBJ 0x02
#define SF_RES_VDI_EXIST 0x04
#define SF_RES_INVALID_PARMS 0x05
#define SF_RES_SYSTEM_ERROR 0x06
#define SF_RES_VDI_LOCKED 0x07
#define SF_RES_NO_VDI 0x08
#define SF_RES_NO_TAG 0x0E
#define SF_RES_FULL_VDI 0x13
#define SF_RES_VER_MISMATCH 0x14
#define SF_RES_NO_SPACE 0x15
#define SF_RES_READONLY 0x1A
#define SF_RES_BUFFER_SMALL 0x88

/* Defaults and limits. This is their one home: the binding exports them
 * to Python, and the C core is what refuses values outside them. */
#define SF_DEFAULT_PORT 7000 /* sheep's own default */
#define SF_DEFAULT_CONNECT_TIMEOUT_MS 10000
#define SF_DEFAULT_IO_TIMEOUT_MS 60000
#define SF_DEFAULT_DEPTH 16u
#define SF_MAX_DEPTH 256u /* sizes the engine's per-connection tables */
/* sheep keeps the copy count in a byte but refuses more than this */
#define SF_MAX_COPIES 31
/* Objects are 1 << block_size_shift bytes: 4 MiB unless the cluster or the
 * VDI says otherwise; sheep accepts 1 MiB to 2 GiB. */
#define SF_DEFAULT_BLOCK_SIZE_SHIFT 22
#define SF_MIN_BLOCK_SIZE_SHIFT 20
#define SF_MAX_BLOCK_SIZE_SHIFT 31
/* Gateways one cluster handle knows: configured plus learned ones. */
#define SF_MAX_GATEWAYS 64u
/* One gateway as text, "[host]:port" with a 255-byte host and a NUL, and
 * a list of them as sf_cluster_nodes and sf_cluster_locate write it. */
#define SF_ADDRESS_TEXT_MAX 264u
#define SF_ADDRESS_LIST_MAX (SF_MAX_GATEWAYS * SF_ADDRESS_TEXT_MAX)

typedef struct sf_options {
    /* "host:port[,host:port...]"; IPv6 as "[addr]:port"; port defaults to
     * SF_DEFAULT_PORT */
    const char *addresses;
    int connect_timeout_ms; /* 0: SF_DEFAULT_CONNECT_TIMEOUT_MS; < 0 refused */
    /* no progress for this long fails the call; 0: SF_DEFAULT_IO_TIMEOUT_MS; < 0 refused */
    int io_timeout_ms;
    /* object requests in flight per call, 1..SF_MAX_DEPTH; 0: SF_DEFAULT_DEPTH */
    unsigned depth;
    /* Non-zero: send object requests to any gateway instead of to a sheep
     * holding the object (which saves the cluster one hop per object). */
    int no_routing;
    /* The most bytes one object request carries; 0: SF_DEFAULT_REQUEST_SIZE.
     * A multiple of 4 KiB; values of the object size or more send whole
     * objects. */
    uint32_t request_size;
} sf_options;

/* Sheepdog 1.0 sets malloc's mmap threshold to 512 KiB, so every request
 * buffer of that size or more is a fresh mapping that the kernel zeroes
 * and faults in page by page, on the gateway and on every replica. Requests
 * below it reuse heap memory: measured on a 3-sheep cluster, 28 % less sheep
 * CPU per byte and ~30 % more throughput than whole 4 MiB objects. */
#define SF_DEFAULT_REQUEST_SIZE (448u * 1024u)
/* request_size is a whole number of pages: requests are cut at its
 * multiples inside an object, so they stay page-aligned there. */
#define SF_REQUEST_ALIGN 4096u

typedef struct sf_cluster_defaults {
    uint8_t copies;
    uint8_t copy_policy;
    uint8_t block_size_shift;
} sf_cluster_defaults;

#define SF_NAME_MAX 255
#define SF_TAG_MAX 255
/* VDI attributes: a key is a C string in a 256-byte field, a value at most
 * 64 KiB of any bytes (sheep's SD_MAX_VDI_ATTR_KEY_LEN / VALUE_LEN). */
#define SF_ATTR_KEY_MAX 255
#define SF_ATTR_VALUE_MAX 65536

typedef struct sf_vdi_info {
    char name[SF_NAME_MAX + 1];
    char tag[SF_TAG_MAX + 1];
    uint32_t vid;
    uint32_t parent_vid;
    uint32_t snap_id;
    uint64_t size;
    uint64_t create_time; /* (seconds << 32) | nanoseconds, as sheep stores it */
    uint64_t snap_ctime;  /* non-zero: this VDI is a snapshot */
    uint8_t copies;
    uint8_t copy_policy;
    uint8_t store_policy; /* 0 flat index, 1 B-tree ("hyper volume") */
    uint8_t block_size_shift;
} sf_vdi_info;

/* Wider than the bytes sheep stores them in, so that a value out of range
 * reaches sf_vdi_create and is refused there rather than truncated. */
typedef struct sf_create_options {
    unsigned copies;           /* 0: cluster default; else 1..SF_MAX_COPIES */
    unsigned copy_policy;      /* 0: replication; else erasure code ((d/2)<<4)|p */
    unsigned block_size_shift; /* 0: cluster default; else SF_MIN/MAX_BLOCK_SIZE_SHIFT */
} sf_create_options;

typedef struct sf_cluster sf_cluster;
typedef struct sf_vdi sf_vdi;

SF_EXPORT const char *sf_version(void);
SF_EXPORT const char *sf_result_name(uint32_t result);

/* Every call that talks to the cluster ends within its cluster's io_timeout,
 * retries and cleanup included. A scope shortens that for all the calls the
 * calling thread makes inside it (nesting: the earliest deadline wins).
 * begin returns what end must be given back. */
SF_EXPORT int64_t sf_deadline_begin(int timeout_ms);
SF_EXPORT void sf_deadline_end(int64_t saved);

SF_EXPORT sf_cluster *sf_cluster_open(const sf_options *opt, sf_error *err);
SF_EXPORT void sf_cluster_close(sf_cluster *cl);
SF_EXPORT int sf_cluster_get_defaults(sf_cluster *cl, sf_cluster_defaults *out, sf_error *err);
/* How the cluster was formatted (`dog cluster format`), read at open. */
#define SF_CLUSTER_USE_LOCK 0x0008u /* -l: sheep keeps VDI locks */
SF_EXPORT unsigned sf_cluster_flags(const sf_cluster *cl);
/* Gateways known to the client, as "host:port" strings joined by ','
 * (SF_ADDRESS_LIST_MAX bytes always suffice, for sf_cluster_locate too). */
SF_EXPORT int sf_cluster_nodes(sf_cluster *cl, char *out, size_t out_len, sf_error *err);
/* The sheep holding object oid of a VDI with `copies` replicas, as the
 * cluster places it: "host:port" strings in copy order joined by ','.
 * SF_E_UNSUPPORTED when the placement is not known to the client (disk-mode
 * clusters, or no node list). */
SF_EXPORT int sf_cluster_locate(sf_cluster *cl, uint64_t oid, unsigned copies, char *out,
                                size_t out_len, sf_error *err);

/* Names are byte strings of 1..255 bytes with no NUL. */
SF_EXPORT int sf_vdi_create(sf_cluster *cl, const char *name, size_t name_len, uint64_t size,
                            const sf_create_options *opt, uint32_t *vid_out, sf_error *err);
/* The working VDI called name: one GET_VDI_INFO and one inode-header read. */
SF_EXPORT int sf_vdi_stat(sf_cluster *cl, const char *name, size_t name_len, sf_vdi_info *out,
                          sf_error *err);
/* The VDI (working or snapshot) with vid: one inode-header read. A vid
 * never used or since deleted is SF_RES_NO_VDI. */
SF_EXPORT int sf_vdi_stat_vid(sf_cluster *cl, uint32_t vid, sf_vdi_info *out, sf_error *err);
/* Zeroes the index (so sheep reclaims the objects), then removes the VDI. */
SF_EXPORT int sf_vdi_delete(sf_cluster *cl, const char *name, size_t name_len, sf_error *err);
/* Every live VDI, snapshots included; free the array with sf_free(). */
SF_EXPORT int sf_vdi_list(sf_cluster *cl, sf_vdi_info **out, size_t *count, sf_error *err);
SF_EXPORT void sf_free(void *p);

SF_EXPORT sf_vdi *sf_vdi_open(sf_cluster *cl, const char *name, size_t name_len, sf_error *err);
SF_EXPORT void sf_vdi_close(sf_vdi *vdi);
/* Fixed at open; only size changes (resize), so read it with sf_vdi_size(). */
SF_EXPORT const sf_vdi_info *sf_vdi_get_info(const sf_vdi *vdi);
SF_EXPORT uint64_t sf_vdi_size(sf_vdi *vdi);
/* Thin provisioning: all-zero data aimed at an unallocated object is not
 * written (it reads back as zeros anyway). On by default. */
SF_EXPORT void sf_vdi_set_thin(sf_vdi *vdi, int enabled);

/* Both return SF_OK only when all len bytes moved; offset+len must lie
 * inside the VDI (SF_E_RANGE otherwise). */
SF_EXPORT int sf_vdi_read(sf_vdi *vdi, void *buf, uint64_t len, uint64_t offset, sf_error *err);
SF_EXPORT int sf_vdi_write(sf_vdi *vdi, const void *buf, uint64_t len, uint64_t offset,
                           sf_error *err);
/* Bytes in objects this VDI owns, and in objects it inherits from an
 * ancestor (dog's "used" and "shared"); reads the index once. */
SF_EXPORT int sf_vdi_usage(sf_vdi *vdi, uint64_t *used_bytes, uint64_t *shared_bytes,
                           sf_error *err);
/* Grow only: shrinking leaks objects in sheep 1.0 and is refused. */
SF_EXPORT int sf_vdi_resize(sf_vdi *vdi, uint64_t new_size, sf_error *err);

/* VDI attributes (Sheepdog's key/value pairs, `dog vdi setattr/getattr`)
 * of the VDI's name. sheep keeps them by name, not by vid: they outlive a
 * delete of the VDI and a new VDI of the same name sees them again. Keys
 * are 1..SF_ATTR_KEY_MAX bytes with no NUL; values any bytes, at most
 * SF_ATTR_VALUE_MAX. A missing key is SF_E_SERVER with result
 * SF_RES_NO_OBJ; a VDI gone since open, SF_RES_NO_VDI. */
/* Creates the attribute, or replaces its value. */
SF_EXPORT int sf_vdi_attr_set(sf_vdi *vdi, const char *key, size_t key_len, const void *value,
                              size_t value_len, sf_error *err);
/* Copies the value into value (value_cap bytes; SF_ATTR_VALUE_MAX always
 * suffice) and its length into *value_len. */
SF_EXPORT int sf_vdi_attr_get(sf_vdi *vdi, const char *key, size_t key_len, void *value,
                              size_t value_cap, size_t *value_len, sf_error *err);
SF_EXPORT int sf_vdi_attr_delete(sf_vdi *vdi, const char *key, size_t key_len, sf_error *err);

/* ------------------------------------------------ snapshots and clones
 *
 * A name has one working VDI and any number of snapshots. A snapshot is
 * selected by its tag or by its snap_id; an sf_snap_ref with neither (or a
 * NULL one) selects the working VDI. Snapshots are read-only. */
typedef struct sf_snap_ref {
    const char *tag; /* 1..SF_TAG_MAX bytes without NUL; NULL or tag_len 0: not by tag */
    size_t tag_len;
    uint32_t snap_id; /* 0: not by id; tag and snap_id together are refused */
} sf_snap_ref;

/* sf_vdi_stat, sf_vdi_open and sf_vdi_delete of the VDI at selects. A
 * missing snapshot is SF_E_SERVER with SF_RES_NO_TAG. */
SF_EXPORT int sf_vdi_stat_at(sf_cluster *cl, const char *name, size_t name_len,
                             const sf_snap_ref *at, sf_vdi_info *out, sf_error *err);
SF_EXPORT sf_vdi *sf_vdi_open_at(sf_cluster *cl, const char *name, size_t name_len,
                                 const sf_snap_ref *at, sf_error *err);
/* sf_vdi_open_at, with a hint: the VDI's first read_ahead bytes (at most
 * SF_READ_AHEAD_MAX) are read in the same round trip as its inode when the
 * cluster handle saw the VDI's object 0 as its own before (an earlier open
 * or close of it). The handle's first sf_vdi_read then takes them from
 * memory, as they were at open, if it lies within them; any other first
 * call drops them. For a reader about to stream the VDI from its start. */
#define SF_READ_AHEAD_MAX (UINT32_C(1) << SF_MIN_BLOCK_SIZE_SHIFT)
SF_EXPORT sf_vdi *sf_vdi_open_read_ahead(sf_cluster *cl, const char *name, size_t name_len,
                                         const sf_snap_ref *at, uint32_t read_ahead, sf_error *err);
/* The bytes read ahead at open that the handle's first read may still take
 * (0: none, or taken or dropped since). */
SF_EXPORT uint32_t sf_vdi_read_ahead_held(sf_vdi *vdi);
SF_EXPORT int sf_vdi_delete_at(sf_cluster *cl, const char *name, size_t name_len,
                               const sf_snap_ref *at, sf_error *err);
/* Snapshots the working VDI (tag may be empty). The working VDI's vid
 * becomes the snapshot's, and the name gets a new working VDI sharing every
 * object with it; *snapshot_out describes the snapshot. A tag already taken
 * is SF_RES_VDI_EXIST. Handles opened before keep reading; their writes
 * fail with SF_RES_READONLY (they never land in the snapshot). */
SF_EXPORT int sf_vdi_snapshot(sf_cluster *cl, const char *name, size_t name_len, const char *tag,
                              size_t tag_len, sf_vdi_info *snapshot_out, sf_error *err);
/* Replaces the working VDI by a new one sharing the snapshot's objects, as
 * `dog vdi rollback` does: the current working VDI is deleted first (sheep
 * cannot hold two of a name), so a failure after that leaves the name with
 * its snapshots only, and running the rollback again completes it. */
SF_EXPORT int sf_vdi_rollback(sf_cluster *cl, const char *name, size_t name_len,
                              const sf_snap_ref *at, sf_vdi_info *out, sf_error *err);
/* A new working VDI new_name sharing the snapshot's objects (copy on
 * write). new_size 0 keeps the snapshot's size; a smaller one is refused. */
SF_EXPORT int sf_vdi_clone(sf_cluster *cl, const char *name, size_t name_len, const sf_snap_ref *at,
                           const char *new_name, size_t new_name_len, uint64_t new_size,
                           sf_vdi_info *out, sf_error *err);
/* Gives the VDI an object of its own for every object it inherits, so
 * that it no longer shares data with its parent. Sheep copies each one
 * itself (a zero-length copy-on-write CREATE): no data crosses the
 * client, and the requests are pipelined. */
SF_EXPORT int sf_vdi_flatten(sf_vdi *vdi, sf_error *err);
/* Gives the objects wholly inside the range back to the cluster and writes
 * zeros over the partial ones at its edges: the range reads as zeros. */
SF_EXPORT int sf_vdi_discard(sf_vdi *vdi, uint64_t len, uint64_t offset, sf_error *err);

/* ------------------------------------------------------------------ locks
 *
 * sheep keeps locks only on a cluster formatted with `dog cluster format -l`
 * (elsewhere LOCK_VDI is a lookup and always succeeds). The owner sheep
 * records is the sheep that received the request, not the client. */
#define SF_LOCK_EXCLUSIVE 0 /* sheep's LOCK_TYPE_NORMAL */
#define SF_LOCK_SHARED 1    /* LOCK_TYPE_SHARED: one participant per sheep */
/* A held lock is SF_E_SERVER with SF_RES_VDI_LOCKED. */
SF_EXPORT int sf_vdi_lock(sf_cluster *cl, const char *name, size_t name_len, const sf_snap_ref *at,
                          int type, sf_error *err);
/* Releases an exclusive lock whoever holds it, or the participation of the
 * sheep the request reaches in a shared one (sheep answers success either way). */
SF_EXPORT int sf_vdi_unlock(sf_cluster *cl, const char *name, size_t name_len,
                            const sf_snap_ref *at, int type, sf_error *err);
/* The same for the VDI with vid: a lock belongs to a vid, and a snapshot
 * taken since the lock gave the name another one. */
SF_EXPORT int sf_vdi_unlock_vid(sf_cluster *cl, uint32_t vid, int type, sf_error *err);

#define SF_LOCK_OWNERS_MAX SF_MAX_COPIES
typedef struct sf_lock_info {
    uint32_t vid;
    int type; /* SF_LOCK_EXCLUSIVE or SF_LOCK_SHARED */
    unsigned nr_owners;
    char owners[SF_LOCK_OWNERS_MAX][SF_ADDRESS_TEXT_MAX]; /* "host:port" of each sheep */
} sf_lock_info;
/* Every locked VDI; free the array with sf_free(). */
SF_EXPORT int sf_cluster_locks(sf_cluster *cl, sf_lock_info **out, size_t *count, sf_error *err);

/* The keys of every attribute of the VDI's name (as sf_vdi_attr_get finds
 * them), NUL-terminated one after another in one buffer of *len bytes;
 * *count keys. Sheep has no listing request: this reads every sheep's
 * object list, so it costs a scan of the cluster's object ids. Free *keys
 * with sf_free(). */
SF_EXPORT int sf_vdi_attr_list(sf_vdi *vdi, char **keys, size_t *len, size_t *count, sf_error *err);

/* Counters since the handle was opened; for tests and benchmarks. */
typedef struct sf_vdi_stats {
    uint64_t read_requests;
    uint64_t write_requests;
    uint64_t create_requests;
    uint64_t index_updates;
    uint64_t zero_objects_skipped;
    uint64_t routed_requests; /* object requests sent to a sheep holding the object */
    /* writes that crossed a membership change: objects read back copy by
     * copy, and objects written again because a copy differed */
    uint64_t objects_checked;
    uint64_t objects_rewritten;
} sf_vdi_stats;
SF_EXPORT void sf_vdi_get_stats(const sf_vdi *vdi, sf_vdi_stats *out);

/* Readies a freshly allocated buffer of len bytes that a read is about to
 * fill (large ones get transparent huge pages where the system offers them);
 * a hint that never fails. */
SF_EXPORT void sf_prepare_buffer(void *buf, size_t len);

#ifdef __cplusplus
}
#endif
#endif
