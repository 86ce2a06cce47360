/* Private structures and functions shared by the C core's units. Not
 * installed. Internal functions are named sfi_ (the public API in
 * sheepfast.h is sf_), so a call site shows whether it crosses the public
 * line, and they are never exported, whatever the build's flags. */
#ifndef SF_INTERNAL_H
#define SF_INTERNAL_H

#include <pthread.h>
#include <stdarg.h>

#include "sf_proto.h"
#include "sheepfast.h"

#if defined(__GNUC__)
#pragma GCC visibility push(hidden)
#endif

#define SF_MAX_IDLE_CONNS 16u
/* Connections one transfer spreads over, one per configured gateway. */
#define SF_MAX_LANES 8u
/* Reconnects (to the next gateway) allowed per call before giving up. */
#define SF_MAX_RECONNECTS 2
/* Gateways learned from the node list may sit on a network the client
 * cannot reach; a transfer does not wait longer than this for one. */
#define SF_LEARNED_CONNECT_MS 2000
/* How long a node ring is trusted before the node list is read again. */
#define SF_RING_REFRESH_MS 30000

/* ---- errors (sf_error.c) ---- */
int sfi_fail(sf_error *err, sf_errcat cat, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int sfi_fail_errno(sf_error *err, sf_errcat cat, int errnum, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
int sfi_fail_result(sf_error *err, uint32_t result, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void sfi_error_clear(sf_error *err);

/* ---- deadlines (sf_deadline.c) ---- */
int64_t sfi_now_ms(void); /* monotonic */
/* Opens the scope of one public call: its io_timeout, or less when an
 * enclosing scope ends sooner. Returns what sf_deadline_end restores. */
int64_t sfi_call_begin(const struct sf_cluster *cl);
/* A call that failed still owes the index its created objects, or nothing
 * would reclaim them; that bookkeeping gets this long of its own (at most
 * io_timeout), even when the call's deadline is spent. */
#define SF_GRACE_MS 2000
int64_t sfi_grace_begin(const struct sf_cluster *cl);
/* What is left of the current call's deadline (io_timeout outside one). */
int sfi_time_left_ms(const struct sf_cluster *cl);

/* ---- gateways, connecting and the idle pool (sf_pool.c) ---- */
typedef struct sf_gateway {
    char host[256];
    char port[8];
} sf_gateway;

/* Parses "host:port[,host:port...]" into gw[]; returns the count or -1. */
int sfi_parse_addresses(const char *text, sf_gateway *gw, unsigned max, sf_error *err);
void sfi_gateway_format(const sf_gateway *gw, char *out, size_t len);

typedef struct sf_conn {
    int fd;
    int broken;       /* an I/O or protocol error: never reuse */
    int answered;     /* has carried a well-formed reply: the peer speaks Sheepdog */
    unsigned gateway; /* index into the cluster's gateway list */
    uint32_t next_id;
    struct sf_conn *next_idle;
} sf_conn;

struct sf_cluster;
/* A connection from the pool (idle and healthy, or new to the next gateway
 * in turn); sfi_pool_put gives it back, or closes it when broken. */
sf_conn *sfi_pool_get(struct sf_cluster *cl, sf_error *err);
/* A connection to a sheep that holds one of the copies of oid, so that a
 * request for it need not be forwarded, when the ring names one that is up;
 * otherwise any connection, as sfi_pool_get. */
sf_conn *sfi_pool_get_holder(struct sf_cluster *cl, uint64_t oid, unsigned copies, sf_error *err);
void sfi_pool_put(struct sf_cluster *cl, sf_conn *conn);
/* Up to max connections, each to a different gateway (idle ones first),
 * for a transfer to spread over; at least one, or 0 with err set. */
unsigned sfi_pool_get_lanes(struct sf_cluster *cl, sf_conn **conns, unsigned max, sf_error *err);
/* Opens a connection to the next gateway in turn from first, trying each
 * once (those that failed lately last). */
sf_conn *sfi_connect_any(struct sf_cluster *cl, unsigned first, sf_error *err);
sf_conn *sfi_connect_gateway(struct sf_cluster *cl, unsigned gw_index, sf_error *err);
void sfi_conn_close(sf_conn *conn);
/* The "host:port" conn goes to, for messages. */
void sfi_conn_peer(struct sf_cluster *cl, const sf_conn *conn, char *out, size_t len);
/* A gateway that refused or timed out is tried last, and left out of
 * transfers, for this long. */
#define SF_GATEWAY_DOWN_MS 30000
void sfi_pool_mark_down(struct sf_cluster *cl, unsigned gw_index);
/* The index of gw in the gateway list, added when new; SF_RING_NO_GATEWAY
 * when the list is full. */
uint32_t sfi_pool_learn_gateway(struct sf_cluster *cl, const sf_gateway *gw);
/* Closes the idle connections of a cluster being freed. */
void sfi_pool_drain(struct sf_cluster *cl);

/* One request and where its reply goes. The engine owns the bookkeeping
 * fields while the op is in flight. */
typedef struct sf_op {
    sf_req req;
    const void *payload;  /* req.data_length bytes, sent when FLAG_WRITE */
    void *reply_buf;      /* reply payload lands here ... */
    uint32_t reply_cap;   /* ... up to this many bytes */
    int retryable;        /* safe to resend after a connection loss */
    uint8_t route_copies; /* replicated object with this many copies: send it
                             to a sheep holding one (0: any lane) */
    uint8_t routed;       /* set by the engine: it went to a holder */
    uint8_t resent;       /* set by the engine: sent again after a connection loss */
    sf_rsp rsp;           /* filled when the reply arrives */
    /* engine */
    uint8_t wire_header[SF_HEADER_SIZE];
    size_t sent;
    /* for the op's producer */
    uint32_t tag;
    void *owner;
} sf_op;

/* Where the engine gets its requests from. next() returns the next op ready
 * to send or NULL when none is ready right now; the engine stops when next()
 * returns NULL with nothing in flight. complete() is told about every reply
 * (success or Sheepdog error); it may make more ops ready. */
typedef struct sf_source {
    void *ctx;
    sf_op *(*next)(void *ctx);
    void (*complete)(void *ctx, sf_op *op);
} sf_source;

/* ---- the request engine (sf_conn.c) ---- */
/* Runs src over *conn keeping up to depth ops in flight. On a connection
 * loss with only retryable ops in flight it reconnects (possibly to another
 * gateway, replacing *conn) and resends them. Returns SF_ERR only for
 * transport or protocol failures; Sheepdog result codes go to complete(). */
int sfi_run(struct sf_cluster *cl, sf_conn **conn, sf_source *src, unsigned depth, sf_error *err);
/* The same over several connections ("lanes", usually to different
 * gateways): each op goes to the least busy lane; depth is the total. */
int sfi_run_lanes(struct sf_cluster *cl, sf_conn **conns, unsigned nr_conns, sf_source *src,
                  unsigned depth, sf_error *err);
/* ops[0..nr_ops) all in flight at once over conns; each op's own result
 * is left in its rsp for the caller to check. */
int sfi_run_ops(struct sf_cluster *cl, sf_conn **conns, unsigned nr_conns, sf_op *ops,
                unsigned nr_ops, sf_error *err);
/* One op, synchronously; a non-zero result becomes SF_E_SERVER. */
int sfi_call(struct sf_cluster *cl, sf_conn **conn, sf_op *op, sf_error *err);

/* Request builders for the ops several modules send. */
void sfi_op_read(sf_op *op, uint64_t oid, uint32_t offset, void *buf, uint32_t len);
/* name NUL-padded into payload (payload_len bytes: 256, or 512 with an empty tag) */
void sfi_op_named(sf_op *op, uint8_t opcode, uint8_t *payload, uint32_t payload_len,
                  const char *name, size_t name_len);
/* READ_OBJ that must return exactly len bytes. */
int sfi_read_exact(struct sf_cluster *cl, sf_conn **conn, uint64_t oid, uint32_t offset, void *buf,
                   uint32_t len, sf_error *err);

/* ---- object placement (sf_ring.c) ---- */
#define SF_RING_NO_GATEWAY UINT32_MAX
#define SF_RING_MAX_VNODES (1u << 22)
typedef struct sf_ring_vnode {
    uint64_t hash;
    uint32_t node; /* index into nodes[] */
} sf_ring_vnode;
typedef struct sf_ring_node {
    uint32_t zone;
    uint32_t gateway; /* index into the cluster's gateways, or SF_RING_NO_GATEWAY */
} sf_ring_node;
/* Immutable once built; shared by reference count under the cluster lock. */
typedef struct sf_ring {
    unsigned refs;
    uint32_t epoch; /* of the node list it was built from */
    uint32_t nr_nodes;
    sf_ring_node *nodes;
    uint32_t nr_vnodes;
    sf_ring_vnode *vnodes; /* sorted by hash */
    /* the nodes' gateways, each once: where a transfer's lanes go */
    unsigned lane_gateways[SF_MAX_GATEWAYS];
    unsigned nr_lane_gateways;
} sf_ring;

/* From count GET_NODE_LIST records; gateways are left unset. */
sf_ring *sfi_ring_build(const uint8_t *records, uint32_t count, sf_error *err);
void sfi_ring_free(sf_ring *ring);
/* Up to copies node indexes holding oid, in copy order; returns how many. */
unsigned sfi_ring_locate(const sf_ring *ring, uint64_t oid, unsigned copies, unsigned *nodes);
/* FNV-1a-64 of len bytes, as sheep hashes names (attribute oids, the vid memo). */
uint64_t sfi_fnv1a_64(const void *p, size_t len);

/* ---- cluster (sf_cluster.c) ---- */
/* The vid a working VDI's name had when this client last looked it up,
 * slot by a hash of the name. It only ever saves the lookup's round trip:
 * every use is checked against the inode it names (sf_catalog.c). */
#define SF_VID_MEMO_SLOTS 256u
typedef struct sf_vid_memo {
    uint64_t name_hash;
    uint32_t vid;       /* 0: empty */
    uint8_t head_owned; /* object 0 was the VDI's own when last seen: worth reading ahead */
} sf_vid_memo;

struct sf_cluster {
    pthread_mutex_t lock; /* guards gateways, idle, refs, vid_memo */
    sf_gateway gateways[SF_MAX_GATEWAYS];
    unsigned nr_configured; /* the caller's list comes first ... */
    unsigned nr_gateways;   /* ... then gateways learned from GET_NODE_LIST */
    unsigned next_gateway;  /* where the next new connection goes */
    unsigned next_lane;     /* where the next transfer's lanes start */
    /* a gateway that refused or timed out is left out of transfers for a while */
    int64_t down_until_ms[SF_MAX_GATEWAYS];
    sf_conn *idle;
    unsigned nr_idle;
    unsigned refs; /* the caller's + one per open sf_vdi */
    int connect_timeout_ms;
    int io_timeout_ms;
    unsigned depth;
    sf_cluster_defaults defaults;
    uint32_t request_size;    /* most bytes per object request */
    int route;                /* send object requests to sheep holding the object */
    int disk_mode;            /* objects are placed by disk: the node list cannot say where */
    uint16_t flags;           /* the cluster's format flags (STAT_CLUSTER), read at open */
    sf_ring *ring;            /* the cluster's placement, or NULL when unknown */
    int64_t ring_time_ms;     /* when it was read */
    uint32_t epoch;           /* the newest membership epoch any reply carried (atomic) */
    int64_t epoch_changed_ms; /* when a reply first carried it (0: no change seen) */
    sf_vid_memo vid_memo[SF_VID_MEMO_SLOTS]; /* guarded by lock (sf_catalog.c) */
};

/* Sheep recovers the objects a membership change moved for a while after
 * it, and a write to an object being recovered can be lost on its new copy.
 * For this long after a change, overwrites are checked copy by copy too. */
#define SF_RECOVERY_WINDOW_MS 60000

/* ---- the cluster's membership: epoch and ring (sf_ring.c) ---- */
/* Records the epoch a reply carried; returns the newest one seen. */
uint32_t sfi_cluster_saw_epoch(sf_cluster *cl, uint32_t epoch);
uint32_t sfi_cluster_epoch(sf_cluster *cl);
/* Whether a membership change was seen less than SF_RECOVERY_WINDOW_MS ago. */
int sfi_cluster_recovering(sf_cluster *cl);
/* The current ring with a reference (NULL when routing is off or the
 * placement is unknown); sfi_ring_put drops it. */
sf_ring *sfi_ring_get(sf_cluster *cl);
void sfi_ring_put(sf_cluster *cl, sf_ring *ring);

/* ---- node list (sf_cluster.c) ---- */
/* Reads the node list again when the ring is older than SF_RING_REFRESH_MS,
 * or older than the newest epoch a reply carried. */
void sfi_cluster_maybe_refresh(sf_cluster *cl, sf_conn **conn);
/* Reads the node list now and returns the placement it gives, with a
 * reference, whether or not routing is on (NULL with err set on a disk-mode
 * cluster or a failure). Installs it as the routing ring when routing. */
sf_ring *sfi_cluster_read_ring(sf_cluster *cl, sf_conn **conn, sf_error *err);

/* An open sf_vdi holds a reference: the cluster outlives its last VDI. */
void sfi_cluster_ref(sf_cluster *cl);
void sfi_cluster_unref(sf_cluster *cl);

/* ---- VDIs by name (sf_catalog.c) ---- */
/* Why a selector is refused, or NULL; whether it selects the working VDI. */
const char *sfi_check_snap_ref(const sf_snap_ref *at);
int sfi_snap_ref_is_working(const sf_snap_ref *at);
/* "VDI 'x'", "snapshot 't' of VDI 'x'" or "snapshot 3 of VDI 'x'", for messages. */
void sfi_describe(char *out, size_t len, const char *name, size_t name_len, const sf_snap_ref *at);
/* A request naming a VDI with a 512-byte payload (name, tag) and snapid. */
void sfi_op_named_at(sf_op *op, uint8_t opcode, uint8_t payload[2 * SF_NAME_FIELD],
                     const char *name, size_t name_len, const sf_snap_ref *at);
/* GET_VDI_INFO for the VDI of name that at selects (NULL: the working one). */
int sfi_lookup_vid(sf_cluster *cl, sf_conn **conn, const char *name, size_t name_len,
                   const sf_snap_ref *at, uint32_t *vid, sf_error *err);

#define SF_INDEX_PAGE 1024u /* entries fetched per inode read: 4 KiB */

/* What an open reads in the same round trip as the inode header. */
typedef struct sf_inode_extra {
    uint8_t index_head[4 * SF_INDEX_PAGE]; /* out: the first SF_INDEX_PAGE index entries, raw */
    uint8_t *head;                         /* in: room for the first head_len bytes of object */
    uint32_t head_len;                     /*     0, read alongside when that is likely to pay */
    int head_read;                         /* out: head holds them, as object 0 of the vid */
} sf_inode_extra;

/* Name and selector checks, GET_VDI_INFO and inode header on *conn (taken
 * from the pool when NULL; the caller puts it back). extra, when not NULL,
 * is filled as sf_inode_extra says; object 0 is only read ahead for a name
 * the cluster remembers whose object 0 was its own, and head_read says
 * whether it was (the caller still checks the index: it may not be now). */
int sfi_stat_by_name(struct sf_cluster *cl, sf_conn **conn, const char *name, size_t name_len,
                     const sf_snap_ref *at, sf_vdi_info *info, sf_inode_extra *extra,
                     sf_error *err);
/* Records whether the working VDI vid of name had object 0 of its own, for
 * the next open's read-ahead (a no-op unless the cluster remembers vid). */
void sfi_vid_memo_note_head(sf_cluster *cl, const char *name, size_t name_len, uint32_t vid,
                            int owned);
/* Index entries of a flat VDI of info's size. */
uint32_t sfi_index_entries(const sf_vdi_info *info);
/* Writes zeros over the non-zero index entries in [first, end), in
 * batches, so that sheep drops its references and reclaims the objects
 * (DEL_VDI alone would leave them behind forever). Flat VDIs only. */
int sfi_zero_index(sf_cluster *cl, sf_conn **conn, const sf_vdi_info *info, uint32_t first,
                   uint32_t end, sf_error *err);
/* Zeroes the index and removes the VDI at selects, on *conn. */
int sfi_delete_on(sf_cluster *cl, sf_conn **conn, const char *name, size_t name_len,
                  const sf_snap_ref *at, sf_error *err);
/* Reads and decodes an inode header; checks what the client relies on.
 * extra as for sfi_stat_by_name, except that object 0 is read alongside
 * whenever read_head is set (and extra->head_len is not 0). */
int sfi_read_inode_header(sf_cluster *cl, sf_conn **conn, uint32_t vid, sf_vdi_info *info,
                          sf_inode_extra *extra, int read_head, sf_error *err);

/* ---- VDI handles (sf_vdi.c) ---- */
struct sf_vdi {
    sf_cluster *cl;
    sf_vdi_info info;
    uint64_t object_size;
    uint32_t nr_objects;
    pthread_mutex_t lock;       /* index cache and stats */
    pthread_mutex_t alloc_lock; /* one allocating write at a time: never two CREATEs per object */
    uint32_t *index;            /* data_vdi_id[], cached */
    uint8_t *page_loaded;       /* per SF_INDEX_PAGE entries: fetched from the inode yet? */
    uint32_t index_capacity;
    int thin;
    sf_vdi_stats stats;
    uint8_t *head;     /* the first head_len bytes, read at open; the first read */
    uint32_t head_len; /* within them takes them, any change drops them (lock) */
};

/* Buffers below this are left alone by sf_prepare_buffer. */
#define SF_PREPARE_MIN ((size_t)4 << 20)

int sfi_is_zero(const void *buf, size_t len);

#if defined(__GNUC__)
#pragma GCC visibility pop
#endif

#endif
