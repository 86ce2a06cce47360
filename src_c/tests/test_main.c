/*
 * Unit tests for the sheepfast C core. No Sheepdog cluster is needed:
 *
 *   - the header codec is checked against the captured wire vectors
 *     (the .txt files in tests/vectors, format in docs/PROTOCOL.md section 14);
 *   - the pure helpers (oids, name and policy checks, addresses, node
 *     records, inode headers, sfi_is_zero) are checked directly;
 *   - the request engine (sfi_run / sfi_call) is driven against a small fake
 *     sheep running in a thread on a loopback socket.
 *
 * Usage: test_main VECTORS_DIR
 * The last line printed is "N passed, N failed"; the exit status is 1 when
 * anything failed.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "../sf_internal.h"

/* ------------------------------------------------------------ test macros */

static int tests_passed, tests_failed;
static const char *current_test;
static int current_failures;

static void test_finish(void)
{
    if (current_test == NULL)
        return;
    if (current_failures == 0) {
        tests_passed++;
        printf("ok      %s\n", current_test);
    } else {
        tests_failed++;
        printf("FAILED  %s\n", current_test);
    }
    fflush(stdout);
    current_test = NULL;
}

/* Starts a test; the previous one is reported when the next one starts. */
#define test(name) (test_finish(), current_test = (name), current_failures = 0)

static void failure(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void failure(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    current_failures++;
    printf("  [%s] %s:%d: ", current_test ? current_test : "?", file, line);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
}

#define check(cond) ((cond) ? 1 : (failure(__FILE__, __LINE__, "check failed: %s", #cond), 0))

#define check_eq(a, b)                                                                             \
    check_eq_at((unsigned long long)(a), (unsigned long long)(b), #a, #b, __FILE__, __LINE__)
static int check_eq_at(unsigned long long a, unsigned long long b, const char *as, const char *bs,
                       const char *file, int line)
{
    if (a == b)
        return 1;
    failure(file, line, "%s == %s: 0x%llx (%llu) != 0x%llx (%llu)", as, bs, a, a, b, b);
    return 0;
}

#define check_str(a, b) check_str_at((a), (b), #a, __FILE__, __LINE__)
static int check_str_at(const char *a, const char *b, const char *as, const char *file, int line)
{
    if (a != NULL && b != NULL && strcmp(a, b) == 0)
        return 1;
    failure(file, line, "%s: \"%s\" != \"%s\"", as, a ? a : "(null)", b ? b : "(null)");
    return 0;
}

static const char *vectors_dir;

/* ------------------------------------------------------------------ hex */

static int hex_nibble(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Decodes exactly n bytes from 2n hex characters; -1 on anything else. */
static int hex_decode(const char *hex, uint8_t *out, size_t n)
{
    if (strlen(hex) != 2 * n)
        return -1;
    for (size_t i = 0; i < n; i++) {
        int hi = hex_nibble(hex[2 * i]), lo = hex_nibble(hex[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

static void hex_encode(const uint8_t *in, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", in[i]);
}

/* ------------------------------------------------------------- vectors */

typedef struct vmsg {
    int from_client; /* C>S */
    uint8_t hdr[SF_HEADER_SIZE];
    unsigned long payload_len;
    char *payload; /* as in the file: hex, "-" or "sha256:..." */
    char *comment; /* the decoded "#   ..." line before it, or NULL */
    unsigned line;
} vmsg;

typedef struct vector {
    char name[128];
    vmsg *msgs;
    size_t count;
} vector;

static void vector_free(vector *v)
{
    for (size_t i = 0; i < v->count; i++) {
        free(v->msgs[i].payload);
        free(v->msgs[i].comment);
    }
    free(v->msgs);
    memset(v, 0, sizeof(*v));
}

/* Loads vectors_dir/name. Format errors are test failures. */
static int vector_load(const char *name, vector *v)
{
    char path[4096];
    char *line = NULL, *comment = NULL;
    size_t line_cap = 0, cap = 0;
    unsigned lineno = 0;
    int rc = 0;

    memset(v, 0, sizeof(*v));
    snprintf(v->name, sizeof(v->name), "%s", name);
    snprintf(path, sizeof(path), "%s/%s", vectors_dir, name);
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        failure(__FILE__, __LINE__, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    while (getline(&line, &line_cap, f) >= 0) {
        lineno++;
        line[strcspn(line, "\r\n")] = '\0';
        if (line[0] == '#') {
            if (strncmp(line, "#   ", 4) == 0) {
                free(comment);
                comment = strdup(line);
            }
            continue;
        }
        if (line[0] == '\0')
            continue;
        char *save = NULL;
        char *dir = strtok_r(line, " ", &save);
        char *hdr = strtok_r(NULL, " ", &save);
        char *plen = strtok_r(NULL, " ", &save);
        char *payload = strtok_r(NULL, " ", &save);
        if (v->count == cap) {
            cap = cap ? cap * 2 : 32;
            vmsg *grown = realloc(v->msgs, cap * sizeof(*grown));
            if (grown == NULL)
                abort();
            v->msgs = grown;
        }
        vmsg *m = &v->msgs[v->count];
        memset(m, 0, sizeof(*m));
        m->line = lineno;
        char *end = NULL;
        if (dir == NULL || hdr == NULL || plen == NULL || payload == NULL ||
            strtok_r(NULL, " ", &save) != NULL ||
            (strcmp(dir, "C>S") != 0 && strcmp(dir, "S>C") != 0) ||
            hex_decode(hdr, m->hdr, SF_HEADER_SIZE) < 0 ||
            (m->payload_len = strtoul(plen, &end, 10), *end != '\0')) {
            failure(__FILE__, __LINE__, "%s:%u: not a message line", name, lineno);
            rc = -1;
            continue;
        }
        m->from_client = strcmp(dir, "C>S") == 0;
        m->payload = strdup(payload);
        m->comment = comment;
        comment = NULL;
        v->count++;
    }
    free(comment);
    free(line);
    fclose(f);
    return rc;
}

/* Failure located in a vector file. */
#define vfail(v, m, ...) vfail_at(__LINE__, (v), (m), __VA_ARGS__)
static void vfail_at(int line, const vector *v, const vmsg *m, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void vfail_at(int line, const vector *v, const vmsg *m, const char *fmt, ...)
{
    char what[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    failure(__FILE__, line, "%s:%u: %s", v->name, m->line, what);
}

/* The payload bytes when the file has them in hex (payloads < 1 KiB). */
static int vmsg_payload(const vmsg *m, uint8_t *out, size_t cap)
{
    if (m->payload_len == 0 || m->payload_len > cap)
        return -1;
    return hex_decode(m->payload, out, m->payload_len);
}

static int parse_number(const char *text, int hex, unsigned long long *out)
{
    char *end = NULL;
    if (*text == '\0')
        return -1;
    errno = 0;
    *out = strtoull(text, &end, hex ? 16 : 0);
    return (errno != 0 || *end != '\0') ? -1 : 0;
}

/* Compares one key=value of a decoded comment with what the codec decoded. */
static void check_comment_field(const vector *v, const vmsg *m, const sf_req *req,
                                const sf_rsp *rsp, const char *key, const char *value)
{
    static const char *hex_keys[] = {"oid", "cow_oid", "vdi_id", "attr_id", "base_vid"};
    int hex = 0;
    for (size_t i = 0; i < sizeof(hex_keys) / sizeof(hex_keys[0]); i++)
        hex |= strcmp(key, hex_keys[i]) == 0;

    if (strcmp(key, "name") == 0 || strcmp(key, "tag") == 0) {
        uint8_t payload[1024];
        size_t off = key[0] == 'n' ? 0 : SF_NAME_FIELD;
        if (!m->from_client || vmsg_payload(m, payload, sizeof(payload)) < 0) {
            vfail(v, m, "%s= on a message without a hex payload", key);
            return;
        }
        const char *got = "";
        char text[SF_NAME_FIELD + 1];
        if (m->payload_len >= off + SF_NAME_FIELD) {
            memcpy(text, payload + off, SF_NAME_FIELD);
            text[SF_NAME_FIELD] = '\0';
            got = text;
        }
        if (strcmp(got, value) != 0)
            vfail(v, m, "%s: comment says '%s', payload holds '%s'", key, value, got);
        return;
    }
    if (strcmp(key, "u") == 0) {
        uint8_t u[28];
        if (m->from_client || hex_decode(value, u, sizeof(u)) < 0) {
            vfail(v, m, "bad u=%s", value);
            return;
        }
        if (memcmp(u, m->hdr + 20, sizeof(u)) != 0)
            vfail(v, m, "u= differs from header bytes 20..47");
        if (rsp->opcode == SF_OP_GET_CLUSTER_DEFAULT &&
            (rsp->default_copies != u[0] || rsp->default_copy_policy != u[1] ||
             rsp->default_bss != u[2]))
            vfail(v, m, "cluster defaults decoded as %u/%u/%u", rsp->default_copies,
                  rsp->default_copy_policy, rsp->default_bss);
        if (rsp->opcode == SF_OP_GET_NODE_LIST && rsp->nr_nodes != sfi_get_le32(u))
            vfail(v, m, "nr_nodes decoded as %u", rsp->nr_nodes);
        return;
    }

    unsigned long long want, got;
    if (parse_number(value, hex, &want) < 0) {
        vfail(v, m, "unparseable %s=%s", key, value);
        return;
    }
    if (strcmp(key, "pv") == 0)
        got = m->from_client ? req->proto_ver : rsp->proto_ver;
    else if (strcmp(key, "flags") == 0)
        got = m->from_client ? req->flags : rsp->flags;
    else if (strcmp(key, "epoch") == 0)
        got = m->from_client ? req->epoch : rsp->epoch;
    else if (strcmp(key, "id") == 0)
        got = m->from_client ? req->id : rsp->id;
    else if (strcmp(key, "dlen") == 0)
        got = m->from_client ? req->data_length : rsp->data_length;
    else if (strcmp(key, "copies") == 0)
        got = m->from_client ? req->copies : rsp->copies;
    else if (strcmp(key, "bss") == 0)
        got = m->from_client ? req->block_size_shift : rsp->block_size_shift;
    else if (m->from_client && strcmp(key, "oid") == 0)
        got = req->oid;
    else if (m->from_client && strcmp(key, "cow_oid") == 0)
        got = req->cow_oid;
    else if (m->from_client && strcmp(key, "copy_policy") == 0)
        got = req->copy_policy;
    else if (m->from_client && strcmp(key, "offset") == 0)
        got = req->offset;
    else if (m->from_client && strcmp(key, "vdi_size") == 0)
        got = req->vdi_size;
    else if (m->from_client && strcmp(key, "base_vid") == 0)
        got = req->base_vdi_id;
    else if (m->from_client && strcmp(key, "store_policy") == 0)
        got = req->store_policy;
    else if (m->from_client && strcmp(key, "snapid") == 0)
        got = req->snapid;
    else if (m->from_client && strcmp(key, "type") == 0)
        got = req->lock_type;
    else if (!m->from_client && strcmp(key, "result") == 0)
        got = rsp->result;
    else if (!m->from_client && strcmp(key, "vdi_id") == 0)
        got = rsp->vdi_id;
    else if (!m->from_client && strcmp(key, "attr_id") == 0)
        got = rsp->attr_id;
    else {
        vfail(v, m, "comment field %s= is not checked by this test", key);
        return;
    }
    if (got != want)
        vfail(v, m, "%s: comment says %s, codec decoded 0x%llx", key, value, got);
}

/* Checks every field a "#   OPNAME k=v ..." comment states. Returns how
 * many fields were compared. */
static unsigned check_comment(const vector *v, const vmsg *m, const sf_req *req, const sf_rsp *rsp)
{
    char *copy = strdup(m->comment + 1);
    char *p = copy;
    unsigned fields = 0;
    uint8_t opcode = m->hdr[1];

    while (*p == ' ')
        p++;
    char *op = p;
    p += strcspn(p, " ");
    if (*p)
        *p++ = '\0';
    if (strncmp(op, "0x", 2) == 0) {
        unsigned long long n;
        if (parse_number(op, 0, &n) < 0 || n != opcode ||
            strcmp(sfi_opcode_name(opcode), "UNKNOWN_OP") != 0)
            vfail(v, m, "opcode %s in the comment, 0x%02x (%s) decoded", op, opcode,
                  sfi_opcode_name(opcode));
    } else if (strcmp(op, sfi_opcode_name(opcode)) != 0) {
        vfail(v, m, "opcode %s in the comment, %s decoded", op, sfi_opcode_name(opcode));
    }
    for (;;) {
        while (*p == ' ')
            p++;
        if (*p == '\0' || *p == '[') /* "[payload ...]" describes the payload */
            break;
        char *key = p, *eq = strchr(p, '=');
        if (eq == NULL) {
            vfail(v, m, "unparseable comment near '%s'", p);
            break;
        }
        *eq = '\0';
        char *value = eq + 1;
        if (*value == '\'') {
            value++;
            char *close = strchr(value, '\'');
            if (close == NULL) {
                vfail(v, m, "unterminated quote in comment");
                break;
            }
            *close = '\0';
            p = close + 1;
        } else {
            p = value + strcspn(value, " ");
            if (*p)
                *p++ = '\0';
        }
        check_comment_field(v, m, req, rsp, key, value);
        fields++;
    }
    free(copy);
    return fields;
}

/* Every header of one vector file: decode, re-encode, compare bytes; check
 * the payload length against the flags and the decoded comment. */
static void test_vector_file(const char *name)
{
    static char test_name[256];
    vector v;
    unsigned headers = 0, fields = 0;

    test_finish(); /* the previous test's name may live in test_name */
    snprintf(test_name, sizeof(test_name), "vector %s: decode/encode round trip", name);
    test(test_name);
    if (vector_load(name, &v) < 0) {
        vector_free(&v);
        return;
    }
    for (size_t i = 0; i < v.count; i++) {
        const vmsg *m = &v.msgs[i];
        uint8_t again[SF_HEADER_SIZE];
        sf_req req;
        sf_rsp rsp;
        memset(&req, 0, sizeof(req));
        memset(&rsp, 0, sizeof(rsp));
        if (m->from_client) {
            sfi_req_decode(m->hdr, &req);
            sfi_req_encode(&req, again);
            /* with WRITE the payload follows; without it data_length is only a size */
            unsigned long want = (req.flags & SF_FLAG_WRITE) ? req.data_length : 0;
            if (m->payload_len != want)
                vfail(&v, m, "%lu payload bytes on the wire, flags 0x%x dlen %u", m->payload_len,
                      req.flags, req.data_length);
        } else {
            sfi_rsp_decode(m->hdr, &rsp);
            sfi_rsp_encode(&rsp, again);
            if (m->payload_len != rsp.data_length)
                vfail(&v, m, "%lu payload bytes on the wire, dlen %u", m->payload_len,
                      rsp.data_length);
        }
        if (memcmp(again, m->hdr, SF_HEADER_SIZE) != 0) {
            char a[2 * SF_HEADER_SIZE + 1], b[2 * SF_HEADER_SIZE + 1];
            hex_encode(m->hdr, SF_HEADER_SIZE, a);
            hex_encode(again, SF_HEADER_SIZE, b);
            vfail(&v, m, "re-encoded header differs\n      wire %s\n      ours %s", a, b);
        }
        if (strcmp(m->payload, "-") == 0) {
            if (m->payload_len != 0)
                vfail(&v, m, "'-' payload with length %lu", m->payload_len);
        } else if (strncmp(m->payload, "sha256:", 7) == 0) {
            if (m->payload_len < 1024 || strlen(m->payload) != 7 + 64)
                vfail(&v, m, "bad digest payload");
        } else if (strlen(m->payload) != 2 * m->payload_len) {
            vfail(&v, m, "%zu hex digits for %lu payload bytes", strlen(m->payload),
                  m->payload_len);
        }
        if (m->comment != NULL)
            fields += check_comment(&v, m, &req, &rsp);
        headers++;
    }
    check(headers > 0);
    check(fields > 0);
    vector_free(&v);
}

static int is_txt(const struct dirent *d)
{
    size_t n = strlen(d->d_name);
    return n > 4 && strcmp(d->d_name + n - 4, ".txt") == 0 &&
           strcmp(d->d_name, "README.txt") != 0 &&
           strcmp(d->d_name, "dog_list_raw_outputs.txt") != 0;
}

static void test_all_vectors(void)
{
    struct dirent **names = NULL;
    int n = scandir(vectors_dir, &names, is_txt, alphasort);
    test("vectors: directory holds the captured header vectors");
    if (!check(n >= 30)) {
        printf("  (vectors directory %s: %s)\n", vectors_dir,
               n < 0 ? strerror(errno) : "too few files");
    }
    for (int i = 0; i < n; i++) {
        test_vector_file(names[i]->d_name);
        free(names[i]);
    }
    free(names);
}

/* Finds the next message in direction from_client starting at *pos. */
static const vmsg *next_msg(const vector *v, size_t *pos, int from_client)
{
    while (*pos < v->count) {
        const vmsg *m = &v->msgs[(*pos)++];
        if (m->from_client == from_client)
            return m;
    }
    return NULL;
}

static void test_vector_write_fresh_small(void)
{
    vector v;
    size_t pos = 0;
    const vmsg *m;
    sf_req req, built;
    sf_rsp rsp;
    uint8_t wire[SF_HEADER_SIZE];
    const uint32_t vid = 0x7f588f;

    test("vector write_fresh_small.txt: decoded values and encoding from fields");
    if (vector_load("write_fresh_small.txt", &v) < 0 || !check_eq(v.count, 8)) {
        vector_free(&v);
        return;
    }
    /* GET_VDI_INFO with the name payload */
    m = next_msg(&v, &pos, 1);
    sfi_req_decode(m->hdr, &req);
    check_eq(req.proto_ver, SF_PROTO_VER);
    check_eq(req.opcode, SF_OP_GET_VDI_INFO);
    check_eq(req.flags, SF_FLAG_WRITE);
    check_eq(req.data_length, 2 * SF_NAME_FIELD);
    check_eq(req.id, 0);
    sfi_req_init(&built, SF_OP_GET_VDI_INFO);
    built.flags = SF_FLAG_WRITE;
    built.data_length = 2 * SF_NAME_FIELD;
    sfi_req_encode(&built, wire);
    check(memcmp(wire, m->hdr, SF_HEADER_SIZE) == 0);

    m = next_msg(&v, &pos, 0);
    sfi_rsp_decode(m->hdr, &rsp);
    check_eq(rsp.opcode, SF_OP_GET_VDI_INFO);
    check_eq(rsp.result, SF_RES_SUCCESS);
    check_eq(rsp.vdi_id, vid);
    check_eq(rsp.copies, 2);
    check_eq(rsp.block_size_shift, 22);
    check_eq(rsp.epoch, 1);
    check_eq(rsp.data_length, 0);
    sf_rsp built_rsp;
    memset(&built_rsp, 0, sizeof(built_rsp));
    built_rsp.opcode = SF_OP_GET_VDI_INFO;
    built_rsp.epoch = 1;
    built_rsp.vdi_id = vid;
    built_rsp.copies = 2;
    built_rsp.block_size_shift = 22;
    sfi_rsp_encode(&built_rsp, wire);
    check(memcmp(wire, m->hdr, SF_HEADER_SIZE) == 0);

    /* the whole inode, DIRECT */
    m = next_msg(&v, &pos, 1);
    sfi_req_decode(m->hdr, &req);
    check_eq(req.opcode, SF_OP_READ_OBJ);
    check_eq(req.flags, SF_FLAG_DIRECT);
    check_eq(req.data_length, SF_INODE_SIZE);
    check_eq(req.oid, sfi_inode_oid(vid));
    check_eq(req.oid, UINT64_C(0x807f588f00000000));
    m = next_msg(&v, &pos, 0);
    sfi_rsp_decode(m->hdr, &rsp);
    check_eq(rsp.data_length, SF_INODE_SIZE);
    check_eq(m->payload_len, SF_INODE_SIZE);

    /* the data object does not exist yet: CREATE_AND_WRITE */
    m = next_msg(&v, &pos, 1);
    sfi_req_decode(m->hdr, &req);
    check_eq(req.opcode, SF_OP_CREATE_AND_WRITE_OBJ);
    check_eq(req.flags, SF_FLAG_WRITE);
    check_eq(req.oid, sfi_data_oid(vid, 0));
    check_eq(req.cow_oid, 0);
    check_eq(req.copies, 2);
    check_eq(req.copy_policy, 0);
    check_eq(req.offset, 1048576);
    check_eq(req.data_length, 512);
    check_eq(m->payload_len, 512);
    sfi_req_init(&built, SF_OP_CREATE_AND_WRITE_OBJ);
    built.flags = SF_FLAG_WRITE;
    built.oid = sfi_data_oid(vid, 0);
    built.copies = 2;
    built.offset = 1048576;
    built.data_length = 512;
    sfi_req_encode(&built, wire);
    check(memcmp(wire, m->hdr, SF_HEADER_SIZE) == 0);
    m = next_msg(&v, &pos, 0);
    sfi_rsp_decode(m->hdr, &rsp);
    check_eq(rsp.opcode, SF_OP_CREATE_AND_WRITE_OBJ);
    check_eq(rsp.result, SF_RES_SUCCESS);

    /* then the 4-byte index entry for object 0 */
    m = next_msg(&v, &pos, 1);
    sfi_req_decode(m->hdr, &req);
    check_eq(req.opcode, SF_OP_WRITE_OBJ);
    check_eq(req.flags, SF_FLAG_WRITE);
    check_eq(req.oid, sfi_inode_oid(vid));
    check_eq(req.offset, SF_INODE_INDEX_OFF + 4 * 0);
    check_eq(req.data_length, 4);
    uint8_t entry[4];
    if (check(vmsg_payload(m, entry, sizeof(entry)) == 0))
        check_eq(sfi_get_le32(entry), vid);
    sfi_req_init(&built, SF_OP_WRITE_OBJ);
    built.flags = SF_FLAG_WRITE;
    built.oid = sfi_inode_oid(vid);
    built.copies = 2;
    built.offset = SF_INODE_INDEX_OFF;
    built.data_length = 4;
    sfi_req_encode(&built, wire);
    check(memcmp(wire, m->hdr, SF_HEADER_SIZE) == 0);
    vector_free(&v);
}

static void test_vector_direct_errors(void)
{
    static const struct {
        uint8_t opcode;
        uint8_t proto_ver;
        uint32_t result;
    } want[] = {
        {SF_OP_READ_OBJ, 2, SF_RES_NO_OBJ},
        {SF_OP_GET_CLUSTER_DEFAULT, 3, SF_RES_VER_MISMATCH}, /* pv > 2 refused */
        {SF_OP_GET_NODE_LIST, 2, SF_RES_VER_MISMATCH},       /* internal op needs 0x0A */
        {0x30, 2, SF_RES_INVALID_PARMS},                     /* unknown opcode */
        {SF_OP_GET_VDI_INFO, 2, SF_RES_NO_VDI},
        {SF_OP_GET_VDI_INFO, 2, SF_RES_NO_TAG},
        {SF_OP_NEW_VDI, 2, SF_RES_VDI_EXIST},
        {SF_OP_FLUSH_VDI, 2, SF_RES_INVALID_PARMS},
    };
    vector v;
    test("vector direct_errors.txt: error replies decode to the stated results");
    if (vector_load("direct_errors.txt", &v) < 0 || !check_eq(v.count, 16)) {
        vector_free(&v);
        return;
    }
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        sf_req req;
        sf_rsp rsp;
        sfi_req_decode(v.msgs[2 * i].hdr, &req);
        sfi_rsp_decode(v.msgs[2 * i + 1].hdr, &rsp);
        check(v.msgs[2 * i].from_client && !v.msgs[2 * i + 1].from_client);
        check_eq(req.opcode, want[i].opcode);
        check_eq(req.proto_ver, want[i].proto_ver);
        check_eq(req.id, i + 1);
        check_eq(rsp.id, i + 1);
        check_eq(rsp.opcode, want[i].opcode);
        check_eq(rsp.result, want[i].result);
        check_eq(rsp.data_length, 0); /* errors carry no payload */
        check_eq(rsp.proto_ver, 0);
    }
    /* what sfi_req_init would have sent instead of the refused versions */
    sf_req ok;
    sfi_req_init(&ok, SF_OP_GET_CLUSTER_DEFAULT);
    check_eq(ok.proto_ver, SF_PROTO_VER);
    sfi_req_init(&ok, SF_OP_GET_NODE_LIST);
    check_eq(ok.proto_ver, SF_PROTO_VER_INTERNAL);
    /* VDI_EXIST comes with a garbage vdi_id (0x7f34): decoded, not trusted */
    sf_rsp exist;
    sfi_rsp_decode(v.msgs[13].hdr, &exist);
    check_eq(exist.result, SF_RES_VDI_EXIST);
    check_eq(exist.vdi_id, 0x7f34);
    sf_req new_vdi;
    sfi_req_decode(v.msgs[12].hdr, &new_vdi);
    check_eq(new_vdi.vdi_size, 1048576);
    check_eq(new_vdi.data_length, SF_NAME_FIELD);
    check_eq(new_vdi.flags, SF_FLAG_WRITE);
    check_str(sf_result_name(want[5].result), "NO_TAG");
    check_str(sf_result_name(want[6].result), "VDI_EXIST");
    vector_free(&v);
}

static void test_vector_pipeline_and_discovery(void)
{
    vector v;
    test("vector direct_pipeline.txt: replies come back as ids 3,4,2,1,5");
    if (vector_load("direct_pipeline.txt", &v) == 0) {
        static const uint32_t order[] = {3, 4, 2, 1, 5};
        size_t pos = 0, k = 0;
        const vmsg *m;
        while ((m = next_msg(&v, &pos, 0)) != NULL && k < 5) {
            sf_rsp rsp;
            sfi_rsp_decode(m->hdr, &rsp);
            check_eq(rsp.id, order[k]);
            k++;
        }
        check_eq(k, 5);
        pos = 0;
        m = next_msg(&v, &pos, 1);
        sf_req req;
        sfi_req_decode(m->hdr, &req);
        check_eq(req.oid, sfi_data_oid(0x54c278, 0x14));
        check_eq(req.data_length, 4u << 20);
    }
    vector_free(&v);

    test("vector direct_discovery.txt: defaults and node records");
    if (vector_load("direct_discovery.txt", &v) == 0 && check_eq(v.count, 6)) {
        sf_rsp rsp;
        sfi_rsp_decode(v.msgs[1].hdr, &rsp);
        check_eq(rsp.default_copies, 2);
        check_eq(rsp.default_copy_policy, 0);
        check_eq(rsp.default_bss, 22);
        sf_req req;
        sfi_req_decode(v.msgs[2].hdr, &req);
        check_eq(req.proto_ver, SF_PROTO_VER_INTERNAL);
        sfi_rsp_decode(v.msgs[3].hdr, &rsp);
        check_eq(rsp.nr_nodes, 3);
        check_eq(rsp.data_length, 3 * SF_NODE_RECORD_SIZE);
        uint8_t records[3 * SF_NODE_RECORD_SIZE];
        if (check(vmsg_payload(&v.msgs[3], records, sizeof(records)) == 0)) {
            static const char *want[] = {"127.0.0.1:7000", "127.0.0.1:7001", "127.0.0.1:7002"};
            for (unsigned i = 0; i < 3; i++) {
                char text[64] = "";
                check_eq(
                    sfi_node_record_address(records + i * SF_NODE_RECORD_SIZE, text, sizeof(text)),
                    0);
                check_str(text, want[i]);
            }
        }
        /* STAT_CLUSTER: nodes_nr in the cluster union, 48-byte reply */
        sfi_req_decode(v.msgs[4].hdr, &req);
        check_eq(sfi_union_of(req.opcode), SF_UNION_CLUSTER);
        check_eq(req.data_length, 48);
        check_eq(req.nodes_nr, 0);
    }
    vector_free(&v);

    test("vector write_clone_cow.txt: COW create carries cow_oid");
    if (vector_load("write_clone_cow.txt", &v) == 0) {
        unsigned cows = 0;
        for (size_t i = 0; i < v.count; i++) {
            sf_req req;
            if (!v.msgs[i].from_client)
                continue;
            sfi_req_decode(v.msgs[i].hdr, &req);
            if (req.opcode != SF_OP_CREATE_AND_WRITE_OBJ)
                continue;
            cows++;
            check_eq(req.flags, SF_FLAG_WRITE | SF_FLAG_COW);
            check_eq(req.oid, sfi_data_oid(0x7f5bf5, 0));
            check_eq(req.cow_oid, sfi_data_oid(0x7f588f, 0));
        }
        check_eq(cows, 1);
    }
    vector_free(&v);
}

/* --------------------------------------------------------------- codec */

static void test_codec_unused_bytes_zero(void)
{
    test("codec: bytes outside the opcode's union variant are always zero");
    for (unsigned opcode = 0; opcode < 256; opcode++) {
        sf_req req;
        uint8_t wire[SF_HEADER_SIZE];
        memset(&req, 0xA5, sizeof(req)); /* every field non-zero */
        req.opcode = (uint8_t)opcode;
        sfi_req_encode(&req, wire);
        uint8_t used[SF_HEADER_SIZE] = {0};
        memset(used, 1, 16);
        switch (sfi_union_of((uint8_t)opcode)) {
        case SF_UNION_OBJ:
            memset(used + 16, 1, 18); /* oid, cow_oid, copies, copy_policy */
            memset(used + 40, 1, 4);  /* offset */
            break;
        case SF_UNION_VDI:
            memset(used + 16, 1, 24);
            break;
        case SF_UNION_CLUSTER:
            memset(used + 40, 1, 4);
            break;
        case SF_UNION_NONE:
            break;
        }
        for (unsigned i = 0; i < SF_HEADER_SIZE; i++)
            if (!used[i] && wire[i] != 0) {
                failure(__FILE__, __LINE__, "opcode 0x%02x: byte %u is 0x%02x", opcode, i, wire[i]);
                break;
            }
    }

    test("codec: union variant and proto_ver by opcode");
    check_eq(sfi_union_of(SF_OP_READ_OBJ), SF_UNION_OBJ);
    check_eq(sfi_union_of(SF_OP_DISCARD_OBJ), SF_UNION_OBJ);
    check_eq(sfi_union_of(SF_OP_NEW_VDI), SF_UNION_VDI);
    check_eq(sfi_union_of(SF_OP_DEL_VDI), SF_UNION_VDI);
    check_eq(sfi_union_of(SF_OP_READ_VDIS), SF_UNION_NONE);
    check_eq(sfi_union_of(SF_OP_GET_CLUSTER_DEFAULT), SF_UNION_NONE);
    check_eq(sfi_union_of(SF_OP_GET_NODE_LIST), SF_UNION_NONE);
    check_eq(sfi_union_of(SF_OP_STAT_CLUSTER), SF_UNION_CLUSTER);
    static const uint8_t ops[] = {
        SF_OP_READ_OBJ,      SF_OP_NEW_VDI,      SF_OP_FLUSH_VDI,    SF_OP_GET_CLUSTER_DEFAULT,
        SF_OP_GET_NODE_LIST, SF_OP_STAT_CLUSTER, SF_OP_CLUSTER_INFO, SF_OP_READ_DEL_VDIS};
    for (size_t i = 0; i < sizeof(ops); i++) {
        sf_req req;
        memset(&req, 0xFF, sizeof(req));
        sfi_req_init(&req, ops[i]);
        check_eq(req.opcode, ops[i]);
        check_eq(req.proto_ver, ops[i] >= 0x80 ? SF_PROTO_VER_INTERNAL : SF_PROTO_VER);
        check_eq(req.flags | req.id | req.data_length | req.oid | req.offset, 0);
    }

    test("codec: full-range field values survive encode/decode");
    sf_req a, b;
    uint8_t wire[SF_HEADER_SIZE];
    sfi_req_init(&a, SF_OP_WRITE_OBJ);
    a.flags = 0xFFFF;
    a.epoch = 0xFFFFFFFF;
    a.id = 0x89ABCDEF;
    a.data_length = 0xFEDCBA98;
    a.oid = UINT64_C(0x8123456789ABCDEF);
    a.cow_oid = UINT64_C(0xFFFFFFFFFFFFFFFF);
    a.copies = 0xFE;
    a.copy_policy = 0x8F;
    a.offset = 0xFFFFFFFF;
    sfi_req_encode(&a, wire);
    check_eq(wire[8], 0xEF); /* little-endian on the wire */
    check_eq(wire[11], 0x89);
    sfi_req_decode(wire, &b);
    check(memcmp(&a, &b, sizeof(a)) == 0);
    sfi_req_init(&a, SF_OP_NEW_VDI);
    a.vdi_size = UINT64_C(0xFFFFFFFFFFFFFFFF);
    a.base_vdi_id = 0xFFFFFF;
    a.copies = 6;
    a.copy_policy = 0x22;
    a.store_policy = 1;
    a.block_size_shift = 31;
    a.snapid = 1;
    a.lock_type = 1;
    sfi_req_encode(&a, wire);
    sfi_req_decode(wire, &b);
    check(memcmp(&a, &b, sizeof(a)) == 0);

    sf_rsp r, s;
    memset(&r, 0, sizeof(r));
    r.opcode = SF_OP_GET_NODE_LIST;
    r.id = 0xFFFFFFFF;
    r.data_length = 6144 * 80;
    r.result = 0x91;
    r.nr_nodes = 6144;
    sfi_rsp_encode(&r, wire);
    sfi_rsp_decode(wire, &s);
    check_eq(s.id, r.id);
    check_eq(s.data_length, r.data_length);
    check_eq(s.result, r.result);
    check_eq(s.nr_nodes, 6144);

    test("codec: names of opcodes and results");
    check_str(sfi_opcode_name(SF_OP_CREATE_AND_WRITE_OBJ), "CREATE_AND_WRITE_OBJ");
    check_str(sfi_opcode_name(SF_OP_READ_DEL_VDIS), "READ_DEL_VDIS");
    check_str(sfi_opcode_name(0x30), "UNKNOWN_OP");
    check_str(sf_result_name(SF_RES_SUCCESS), "SUCCESS");
    check_str(sf_result_name(SF_RES_READONLY), "READONLY");
    check_str(sf_result_name(0x95), "COLLECTING_CINFO");
    check_str(sf_result_name(0x12345), "UNKNOWN_RESULT");
    check_str(sf_version(), SF_VERSION_STRING);
}

/* ------------------------------------------------------------- helpers */

static void test_oids(void)
{
    test("oids: data and inode object ids");
    check_eq(sfi_data_oid(0x7f588f, 0), UINT64_C(0x007f588f00000000));
    check_eq(sfi_data_oid(0x7f588f, 1), UINT64_C(0x007f588f00000001));
    check_eq(sfi_data_oid(0x54c278, 0x14), UINT64_C(0x0054c27800000014));
    check_eq(sfi_data_oid(SF_MAX_VID, 0xFFFFFFFF), UINT64_C(0x00FFFFFFFFFFFFFF));
    check_eq(sfi_inode_oid(0x7f588f), UINT64_C(0x807f588f00000000));
    check_eq(sfi_inode_oid(SF_MAX_VID), UINT64_C(0x80FFFFFF00000000));
    check_eq(sfi_inode_oid(1), SF_VDI_BIT | (UINT64_C(1) << 32));
    /* vids are 24 bits: anything above never leaks into the flag bits */
    check_eq(sfi_data_oid(0xFF7f588f, 5), UINT64_C(0x007f588f00000005));
    check_eq(sfi_inode_oid(0xFF000001), UINT64_C(0x8000000100000000));
    check_eq(SF_MAX_VID, 0xFFFFFF);
    check_eq(SF_INODE_INDEX_OFF, 4664);
    check_eq(SF_NODE_LIST_BUF, 491520);
}

static void test_check_name(void)
{
    char name[SF_NAME_MAX + 2];
    memset(name, 'n', sizeof(name));
    test("sfi_check_name: 1..255 bytes, no NUL");
    check(sfi_check_name(NULL, 0) != NULL);
    check(sfi_check_name("", 0) != NULL);
    check(sfi_check_name("x", 0) != NULL);
    check(sfi_check_name("a", 1) == NULL);
    check(sfi_check_name(name, 255) == NULL);
    check(sfi_check_name(name, 256) != NULL);
    check(sfi_check_name(name, sizeof(name)) != NULL);
    check(sfi_check_name("a\0b", 3) != NULL);
    check(sfi_check_name("ab\0", 3) != NULL);
    check(sfi_check_name("\0", 1) != NULL);
    check(sfi_check_name("with space:colon\\back", 21) == NULL); /* sheep allows any bytes */
    check(sfi_check_name("\xff\x01-", 3) == NULL);
    const char *why = sfi_check_name(name, 256);
    check(why != NULL && strstr(why, "255") != NULL);
    why = sfi_check_name("a\0b", 3);
    check(why != NULL && strstr(why, "NUL") != NULL);
}

static void test_attr_key_and_record(void)
{
    char key[SF_ATTR_KEY_MAX + 2];
    memset(key, 'k', sizeof(key));
    test("sfi_check_attr_key: 1..255 bytes, no NUL");
    check(sfi_check_attr_key(NULL, 0) != NULL);
    check(sfi_check_attr_key("", 0) != NULL);
    check(sfi_check_attr_key("a", 1) == NULL);
    check(sfi_check_attr_key(key, SF_ATTR_KEY_MAX) == NULL);
    const char *why = sfi_check_attr_key(key, SF_ATTR_KEY_MAX + 1);
    check(why != NULL && strstr(why, "255") != NULL);
    why = sfi_check_attr_key("a\0b", 3);
    check(why != NULL && strstr(why, "NUL") != NULL);

    test("sfi_attr_encode: sheep's attribute record, working VDI");
    check_eq(SF_ATTR_OBJ_SIZE, SF_ATTR_VALUE_OFF + SF_ATTR_VALUE_MAX);
    check_eq(SF_ATTR_KEY_OFF + SF_ATTR_KEY_FIELD, SF_ATTR_VALUE_OFF);
    check_eq(sfi_attr_oid(0x7f588f, 3), UINT64_C(0x207f588f00000003));
    uint8_t *rec = malloc(SF_ATTR_OBJ_SIZE);
    if (!check(rec != NULL))
        return;
    memset(rec, 0xAA, SF_ATTR_OBJ_SIZE); /* every byte must be set */
    sfi_attr_encode(rec, "img", 3, "k1", 2, "v\0z", 3);
    check(memcmp(rec, "img", 4) == 0);
    check(memcmp(rec + SF_ATTR_KEY_OFF, "k1", 3) == 0);
    check_eq(sfi_get_le32(rec + SF_ATTR_VALUE_LEN_OFF), 3);
    check(memcmp(rec + SF_ATTR_VALUE_OFF, "v\0z", 3) == 0);
    size_t nonzero = 0;
    for (size_t i = 0; i < SF_ATTR_OBJ_SIZE; i++)
        nonzero += rec[i] != 0;
    check_eq(nonzero, 3 + 2 + 1 + 2); /* name, key, value_len, value ("v", "z") */
    free(rec);
}

static void test_check_copy_policy(void)
{
    test("sfi_check_copy_policy: 0 or ((d/2)<<4)|p, d in 2,4,8,16, p in 1..15");
    check(sfi_check_copy_policy(0x00) == NULL);
    check(sfi_check_copy_policy(0x11) == NULL); /* 2:1 */
    check(sfi_check_copy_policy(0x22) == NULL); /* 4:2 */
    check(sfi_check_copy_policy(0x42) == NULL); /* 8:2 */
    check(sfi_check_copy_policy(0x8F) == NULL); /* 16:15 */
    check(sfi_check_copy_policy(0x10) != NULL); /* p == 0: sheep panics */
    check(sfi_check_copy_policy(0x20) != NULL);
    check(sfi_check_copy_policy(0x80) != NULL);
    check(sfi_check_copy_policy(0x30) != NULL); /* d == 6 */
    check(sfi_check_copy_policy(0x31) != NULL);
    check(sfi_check_copy_policy(0x01) != NULL); /* d == 0 */
    check(sfi_check_copy_policy(0x0F) != NULL);
    check(sfi_check_copy_policy(0x91) != NULL); /* d == 18 */
    check(sfi_check_copy_policy(0xF1) != NULL);
    const char *why = sfi_check_copy_policy(0x10);
    check(why != NULL && strstr(why, "parity") != NULL);
    unsigned accepted = 0;
    for (unsigned v = 0; v < 256; v++) {
        unsigned half_d = v >> 4, p = v & 15;
        int valid =
            v == 0 || (p >= 1 && (half_d == 1 || half_d == 2 || half_d == 4 || half_d == 8));
        int ok = sfi_check_copy_policy((uint8_t)v) == NULL;
        accepted += (unsigned)ok;
        if (ok != valid)
            failure(__FILE__, __LINE__, "policy 0x%02x %s", v, ok ? "accepted" : "refused");
    }
    check_eq(accepted, 1 + 4 * 15);
}

static void test_max_flat_size(void)
{
    test("sfi_max_flat_size: 2^20 objects");
    check_eq(sfi_max_flat_size(20), UINT64_C(1) << 40); /* 1 TiB */
    check_eq(sfi_max_flat_size(22), UINT64_C(4) << 40); /* 4 TiB */
    check_eq(sfi_max_flat_size(23), UINT64_C(8) << 40);
    check_eq(sfi_max_flat_size(31), UINT64_C(2) << 50); /* 2 PiB */
    check_eq(sfi_max_flat_size(22) >> 22, SF_MAX_OBJECTS_FLAT);
}

static void test_is_zero(void)
{
    test("sfi_is_zero: every length 0..100, a non-zero byte at every position");
    for (size_t len = 0; len <= 100; len++) {
        /* exact-size allocations so that an overread shows under ASan/valgrind */
        uint8_t *buf = calloc(1, len ? len : 1);
        for (size_t shift = 0; shift < 2; shift++) {
            const uint8_t *p = buf + shift;
            size_t n = len >= shift ? len - shift : 0;
            if (!sfi_is_zero(p, n))
                failure(__FILE__, __LINE__, "len %zu: zeros reported non-zero", n);
        }
        for (size_t pos = 0; pos < len; pos++) {
            static const uint8_t values[] = {1, 0x80, 0xFF};
            for (size_t k = 0; k < sizeof(values); k++) {
                buf[pos] = values[k];
                if (sfi_is_zero(buf, len))
                    failure(__FILE__, __LINE__, "len %zu: byte %zu = 0x%02x missed", len, pos,
                            values[k]);
            }
            buf[pos] = 0;
        }
        free(buf);
    }
    check(sfi_is_zero(NULL, 0));

    test("sfi_is_zero: large buffers");
    size_t big = (size_t)4 << 20;
    uint8_t *buf = calloc(1, big);
    check(sfi_is_zero(buf, big));
    static const size_t spots[] = {0,
                                   15,
                                   16,
                                   17,
                                   31,
                                   32,
                                   4095,
                                   4096,
                                   2u << 20,
                                   (4u << 20) - 17,
                                   (4u << 20) - 16,
                                   (4u << 20) - 1};
    for (size_t i = 0; i < sizeof(spots) / sizeof(spots[0]); i++) {
        buf[spots[i]] = 0x01;
        if (sfi_is_zero(buf, big))
            failure(__FILE__, __LINE__, "non-zero byte at %zu of 4 MiB missed", spots[i]);
        check(sfi_is_zero(buf + spots[i] + 1, big - spots[i] - 1));
        buf[spots[i]] = 0;
    }
    /* periodic data: the shifted compare must not mistake repetition for zeros */
    memset(buf, 0x5A, big);
    check(!sfi_is_zero(buf, big));
    memset(buf, 0, 16);
    check(!sfi_is_zero(buf, big));
    free(buf);
}

static void test_parse_addresses(void)
{
    sf_gateway gw[SF_MAX_GATEWAYS + 1];
    sf_error err;
    char text[300];

    test("sfi_parse_addresses: single addresses");
    memset(&err, 0, sizeof(err));
    check_eq(sfi_parse_addresses("127.0.0.1:7001", gw, 4, &err), 1);
    check_str(gw[0].host, "127.0.0.1");
    check_str(gw[0].port, "7001");
    check_eq(sfi_parse_addresses("sheep1", gw, 4, &err), 1);
    check_str(gw[0].host, "sheep1");
    check_str(gw[0].port, "7000");
    check_eq(sfi_parse_addresses("[::1]:7002", gw, 4, &err), 1);
    check_str(gw[0].host, "::1");
    check_str(gw[0].port, "7002");
    check_eq(sfi_parse_addresses("[::1]", gw, 4, &err), 1);
    check_str(gw[0].host, "::1");
    check_str(gw[0].port, "7000");
    check_eq(sfi_parse_addresses("::1", gw, 4, &err), 1); /* bare IPv6: no port */
    check_str(gw[0].host, "::1");
    check_str(gw[0].port, "7000");
    check_eq(sfi_parse_addresses("fe80::1:7001", gw, 4, &err), 1);
    check_str(gw[0].host, "fe80::1:7001");
    check_str(gw[0].port, "7000");
    check_eq(sfi_parse_addresses("h:1", gw, 4, &err), 1);
    check_str(gw[0].port, "1");
    check_eq(sfi_parse_addresses("h:65535", gw, 4, &err), 1);
    check_str(gw[0].port, "65535");
    check_eq(sfi_parse_addresses("h:08080", gw, 4, &err), 1);
    check_str(gw[0].port, "8080");

    test("sfi_parse_addresses: comma-separated lists with spaces");
    check_eq(sfi_parse_addresses(" a:7001 ,b,\t[::1]:7003 , 10.0.0.4:7004\t", gw, 8, &err), 4);
    check_str(gw[0].host, "a");
    check_str(gw[0].port, "7001");
    check_str(gw[1].host, "b");
    check_str(gw[1].port, "7000");
    check_str(gw[2].host, "::1");
    check_str(gw[2].port, "7003");
    check_str(gw[3].host, "10.0.0.4");
    check_str(gw[3].port, "7004");
    check_eq(sfi_parse_addresses("a:1,", gw, 8, &err), 1);
    check_eq(sfi_parse_addresses("a:1,,b:2", gw, 8, &err), 2);
    check_str(gw[1].host, "b");

    test("sfi_parse_addresses: malformed addresses are refused");
    static const char *bad[] = {
        "h:0",       "h:70000", "h:65536", "h:abc",   "h:",       "h:123456",
        "h:-1",      "h:+80",   "h:80x",   "h: 80",   ":7000",    "[::1",
        "[::1]7000", "[::1]:",  "[]:7000", "[::1]:0", "ok:1,h:0",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        memset(&err, 0, sizeof(err));
        int n = sfi_parse_addresses(bad[i], gw, 8, &err);
        if (n != -1 || err.category != SF_E_RESOLVE || err.message[0] == '\0')
            failure(__FILE__, __LINE__, "'%s' gave %d (category %d)", bad[i], n, err.category);
    }
    memset(&err, 0, sizeof(err));
    check_eq(sfi_parse_addresses("h:70000", gw, 8, &err), (unsigned long long)-1);
    check(strstr(err.message, "h:70000") != NULL);

    test("sfi_parse_addresses: empty input and too many addresses");
    static const char *empty[] = {"", " ", ",", " , \t,"};
    for (size_t i = 0; i < sizeof(empty) / sizeof(empty[0]); i++) {
        memset(&err, 0, sizeof(err));
        check_eq(sfi_parse_addresses(empty[i], gw, 8, &err), (unsigned long long)-1);
        check_eq(err.category, SF_E_RESOLVE);
    }
    memset(&err, 0, sizeof(err));
    check_eq(sfi_parse_addresses(NULL, gw, 8, &err), (unsigned long long)-1);
    check_eq(err.category, SF_E_RESOLVE);
    check_eq(sfi_parse_addresses("a,b,c", gw, 3, &err), 3);
    memset(&err, 0, sizeof(err));
    check_eq(sfi_parse_addresses("a,b,c,d", gw, 3, &err), (unsigned long long)-1);
    check_eq(err.category, SF_E_RESOLVE);
    check(strstr(err.message, "more than 3") != NULL);
    char many[SF_MAX_GATEWAYS * 8 + 16];
    size_t used = 0;
    for (unsigned i = 0; i <= SF_MAX_GATEWAYS; i++)
        used += (size_t)snprintf(many + used, sizeof(many) - used, "%sh%u", i ? "," : "", i);
    check_eq(sfi_parse_addresses(many, gw, SF_MAX_GATEWAYS, &err), (unsigned long long)-1);
    *strrchr(many, ',') = '\0';
    check_eq(sfi_parse_addresses(many, gw, SF_MAX_GATEWAYS, &err), SF_MAX_GATEWAYS);
    check_str(gw[SF_MAX_GATEWAYS - 1].host, "h63");

    test("sfi_parse_addresses: host names up to 255 bytes");
    char host[300];
    memset(host, 'h', 255);
    strcpy(host + 255, ":7000");
    check_eq(sfi_parse_addresses(host, gw, 1, &err), 1);
    check_eq(strlen(gw[0].host), 255);
    memset(host, 'h', 256);
    strcpy(host + 256, ":7000");
    check_eq(sfi_parse_addresses(host, gw, 1, &err), (unsigned long long)-1);

    test("sfi_gateway_format: brackets IPv6 hosts");
    sfi_parse_addresses("[2001:db8::1]:7005,host:7006", gw, 2, &err);
    sfi_gateway_format(&gw[0], text, sizeof(text));
    check_str(text, "[2001:db8::1]:7005");
    sfi_gateway_format(&gw[1], text, sizeof(text));
    check_str(text, "host:7006");
}

static void make_record(uint8_t rec[SF_NODE_RECORD_SIZE], const uint8_t addr[16], uint16_t port)
{
    memset(rec, 0xAA, SF_NODE_RECORD_SIZE); /* tree pointers and the rest: garbage */
    memcpy(rec + 24, addr, 16);
    sfi_put_le16(rec + 40, port);
}

static void test_node_record_address(void)
{
    uint8_t rec[SF_NODE_RECORD_SIZE], addr[16];
    char text[80];
    sf_gateway gw;

    test("sfi_node_record_address: IPv4 as 12 zero bytes + 4");
    memset(addr, 0, sizeof(addr));
    addr[12] = 10, addr[13] = 1, addr[14] = 2, addr[15] = 3;
    make_record(rec, addr, 7000);
    check_eq(sfi_node_record_address(rec, text, sizeof(text)), 0);
    check_str(text, "10.1.2.3:7000");
    check_eq(sfi_parse_addresses(text, &gw, 1, NULL), 1);
    check_str(gw.host, "10.1.2.3");
    check_str(gw.port, "7000");
    /* the output buffer must hold all of it */
    check_eq(sfi_node_record_address(rec, text, strlen("10.1.2.3:7000") + 1), 0);
    check_eq(sfi_node_record_address(rec, text, strlen("10.1.2.3:7000")), (unsigned long long)-1);

    test("sfi_node_record_address: IPv6");
    static const uint8_t v6[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5};
    make_record(rec, v6, 65535);
    check_eq(sfi_node_record_address(rec, text, sizeof(text)), 0);
    check_str(text, "[2001:db8::5]:65535");
    check_eq(sfi_parse_addresses(text, &gw, 1, NULL), 1);
    check_str(gw.host, "2001:db8::5");
    check_str(gw.port, "65535");
    static const uint8_t mapped[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 1};
    make_record(rec, mapped, 7001);
    check_eq(sfi_node_record_address(rec, text, sizeof(text)), 0);
    check_str(text, "[::ffff:127.0.0.1]:7001");
    /* ::1 is 15 zero bytes and a 1: not the IPv4 form (0.0.0.0/8 is no host) */
    static const uint8_t loopback6[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
    make_record(rec, loopback6, 7002);
    check_eq(sfi_node_record_address(rec, text, sizeof(text)), 0);
    check_str(text, "[::1]:7002");

    test("sfi_node_record_address: port 0 is refused");
    make_record(rec, addr, 0);
    strcpy(text, "untouched");
    check_eq(sfi_node_record_address(rec, text, sizeof(text)), (unsigned long long)-1);
    make_record(rec, v6, 0);
    check_eq(sfi_node_record_address(rec, text, sizeof(text)), (unsigned long long)-1);
}

/* Three sheep on 127.0.0.1:7000-7002, 128 vnodes each, zones 0-2: where a
 * real 1.0 cluster said (dog vdi object location) the objects of VDI
 * 0x95f9e1 with 2 copies live, in its copy order. */
static void ring_records(uint8_t *recs, unsigned n, const uint16_t *vnodes, const uint32_t *zones)
{
    uint8_t addr[16] = {0};
    addr[12] = 127, addr[15] = 1;
    for (unsigned i = 0; i < n; i++) {
        uint8_t *rec = recs + i * SF_NODE_RECORD_SIZE;
        make_record(rec, addr, (uint16_t)(7000 + i));
        memset(rec + 42, 0, 22); /* io_addr, io_port, pad: zero as sheep sends them */
        sfi_put_le16(rec + 64, vnodes[i]);
        memset(rec + 66, 0, 2);
        sfi_put_le32(rec + 68, zones[i]);
    }
}

static void test_ring(void)
{
    uint8_t recs[4 * SF_NODE_RECORD_SIZE];
    unsigned nodes[SF_MAX_COPIES];
    sf_error err;

    test("sf_ring: placement agrees with a real cluster");
    static const uint16_t vn128[] = {128, 128, 128, 128};
    static const uint32_t zones[] = {0, 1, 2, 3};
    ring_records(recs, 3, vn128, zones);
    sf_ring *ring = sfi_ring_build(recs, 3, &err);
    check(ring != NULL);
    if (ring != NULL) {
        check_eq(ring->nr_vnodes, 384);
        for (unsigned i = 1; i < ring->nr_vnodes; i++)
            check(ring->vnodes[i - 1].hash <= ring->vnodes[i].hash);
        static const struct {
            uint64_t oid;
            unsigned first, second; /* node index = port - 7000 */
        } seen[] = {
            {0x0095f9e100000000ULL, 0, 1}, {0x0095f9e100000001ULL, 2, 0},
            {0x0095f9e100000002ULL, 2, 1}, {0x0095f9e100000003ULL, 0, 2},
            {0x0095f9e100000004ULL, 1, 0}, {0x0095f9e100000005ULL, 1, 2},
            {0x0095f9e100000009ULL, 2, 1}, {0x0095f9e100000015ULL, 1, 0},
            {0x8095f9e100000000ULL, 2, 1}, /* the inode */
        };
        for (size_t i = 0; i < sizeof(seen) / sizeof(seen[0]); i++) {
            check_eq(sfi_ring_locate(ring, seen[i].oid, 2, nodes), 2);
            check_eq(nodes[0], seen[i].first);
            check_eq(nodes[1], seen[i].second);
        }
        /* one copy is the first holder; three copies cover every zone */
        check_eq(sfi_ring_locate(ring, 0x0095f9e100000001ULL, 1, nodes), 1);
        check_eq(nodes[0], 2);
        check_eq(sfi_ring_locate(ring, 0x0095f9e100000001ULL, 3, nodes), 3);
        check(nodes[0] != nodes[1] && nodes[1] != nodes[2] && nodes[0] != nodes[2]);
        /* more copies than zones: only as many as there are (sheep refuses such a layout) */
        check_eq(sfi_ring_locate(ring, 42, 5, nodes), 3);
        check_eq(sfi_ring_locate(ring, 42, 0, nodes), 0);
        sfi_ring_free(ring);
    }

    test("sf_ring: gateway-only nodes hold nothing, one zone holds one copy");
    static const uint16_t vn_mixed[] = {128, 0, 64, 64};
    static const uint32_t zones_shared[] = {0, 1, 2, 2};
    ring_records(recs, 4, vn_mixed, zones_shared);
    ring = sfi_ring_build(recs, 4, &err);
    check(ring != NULL);
    if (ring != NULL) {
        check_eq(ring->nr_vnodes, 256);
        for (uint64_t oid = 0; oid < 2000; oid++) {
            unsigned n = sfi_ring_locate(ring, oid * 0x9e3779b97f4a7c15ULL, 3, nodes);
            check_eq(n, 2); /* zones 0 and 2 only: node 1 has no vnodes */
            for (unsigned i = 0; i < n; i++)
                check(nodes[i] != 1);
            check(ring->nodes[nodes[0]].zone != ring->nodes[nodes[1]].zone);
        }
        sfi_ring_free(ring);
    }

    test("sf_ring: an absurd vnode count from the network builds no ring");
    static const uint16_t vn_max[] = {65535, 65535};
    uint8_t *many = calloc(SF_MAX_NODES, SF_NODE_RECORD_SIZE);
    check(many != NULL);
    if (many != NULL) {
        for (unsigned i = 0; i < SF_MAX_NODES; i++)
            ring_records(many + i * SF_NODE_RECORD_SIZE, 1, vn_max, zones);
        check(sfi_ring_build(many, SF_MAX_NODES, &err) == NULL);
        check_eq(err.category, SF_E_PROTOCOL);
        free(many);
    }

    test("sf_ring: no vnodes at all locates nothing");
    static const uint16_t vn0[] = {0, 0};
    ring_records(recs, 2, vn0, zones);
    ring = sfi_ring_build(recs, 2, &err);
    check(ring != NULL);
    if (ring != NULL) {
        check_eq(sfi_ring_locate(ring, 1, 2, nodes), 0);
        sfi_ring_free(ring);
    }
}

static void test_inode_header_decode(void)
{
    uint8_t *buf = malloc(SF_INODE_HEADER_SIZE);
    sf_vdi_info info;

    test("sfi_inode_header_decode: synthetic header");
    memset(buf, 0xEE, SF_INODE_HEADER_SIZE); /* fields not decoded hold garbage */
    memset(buf, 0, 2 * SF_NAME_FIELD);
    memcpy(buf + SF_INODE_NAME_OFF, "vol-1", 5);
    memcpy(buf + SF_INODE_TAG_OFF, "snap\0junk", 9);
    sfi_put_le64(buf + SF_INODE_CTIME_OFF, UINT64_C(0x5F5E100012345678));
    sfi_put_le64(buf + SF_INODE_SNAP_CTIME_OFF, UINT64_C(0x5F5E200000000001));
    sfi_put_le64(buf + SF_INODE_SIZE_OFF, UINT64_C(4) << 40);
    buf[SF_INODE_COPY_POLICY_OFF] = 0x22;
    buf[SF_INODE_STORE_POLICY_OFF] = 1;
    buf[SF_INODE_COPIES_OFF] = 6;
    buf[SF_INODE_BSS_OFF] = 22;
    sfi_put_le32(buf + SF_INODE_SNAP_ID_OFF, 7);
    sfi_put_le32(buf + SF_INODE_VDI_ID_OFF, 0x7f588f);
    sfi_put_le32(buf + SF_INODE_PARENT_OFF, 0x7f4944);
    memset(&info, 0x55, sizeof(info));
    sfi_inode_header_decode(buf, &info);
    check_str(info.name, "vol-1");
    check_str(info.tag, "snap");
    check_eq(info.create_time, UINT64_C(0x5F5E100012345678));
    check_eq(info.snap_ctime, UINT64_C(0x5F5E200000000001));
    check_eq(info.size, UINT64_C(4) << 40);
    check_eq(info.copy_policy, 0x22);
    check_eq(info.store_policy, 1);
    check_eq(info.copies, 6);
    check_eq(info.block_size_shift, 22);
    check_eq(info.snap_id, 7);
    check_eq(info.vid, 0x7f588f);
    check_eq(info.parent_vid, 0x7f4944);

    test("sfi_inode_header_decode: a 256-byte name without NUL stays terminated");
    memset(buf, 'n', SF_NAME_FIELD);
    memset(buf + SF_INODE_TAG_OFF, 't', SF_NAME_FIELD);
    sfi_inode_header_decode(buf, &info);
    check_eq(strlen(info.name), SF_NAME_MAX);
    check_eq(strlen(info.tag), SF_TAG_MAX);
    check_eq(info.vid, 0x7f588f);
    free(buf);
}

static void test_errors(void)
{
    sf_error err;
    char longname[600];

    test("sf_error: categories, codes and messages");
    memset(&err, 0x77, sizeof(err));
    check_eq(sfi_fail(&err, SF_E_INVALID, "bad %s", "thing"), (unsigned long long)SF_ERR);
    check_eq(err.category, SF_E_INVALID);
    check_eq(err.sys_errno, 0);
    check_eq(err.result, 0);
    check_str(err.message, "bad thing");
    sfi_fail_errno(&err, SF_E_CONNECT, ECONNREFUSED, "cannot connect to %s", "h:1");
    check_eq(err.category, SF_E_CONNECT);
    check_eq(err.sys_errno, ECONNREFUSED);
    char want[300];
    snprintf(want, sizeof(want), "cannot connect to h:1: %s", strerror(ECONNREFUSED));
    check_str(err.message, want);
    sfi_fail_result(&err, SF_RES_NO_VDI, "VDI '%s' not found", "x");
    check_eq(err.category, SF_E_SERVER);
    check_eq(err.result, SF_RES_NO_VDI);
    check_str(err.message, "VDI 'x' not found: NO_VDI (0x08)");
    memset(longname, 'x', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    sfi_fail_result(&err, SF_RES_NO_VDI, "%s", longname);
    check_eq(strlen(err.message), sizeof(err.message) - 1);
    sfi_fail_errno(&err, SF_E_IO, EPIPE, "%s", longname);
    check_eq(strlen(err.message), sizeof(err.message) - 1);
    check_eq(sfi_fail(NULL, SF_E_IO, "nobody listens"), (unsigned long long)SF_ERR);
    sfi_fail_errno(NULL, SF_E_IO, EPIPE, "nobody");
    sfi_fail_result(NULL, 1, "nobody");
    sfi_error_clear(&err);
    check_eq(err.category, SF_E_NONE);
    check_eq(err.message[0], 0);
}

/* ---------------------------------------------------------- fake sheep */

/* A loopback listener served by one thread running a script. The script
 * plays sheep's side of one scenario; it never calls check() (not thread
 * safe) but records problems in errors/error for the main thread. */
typedef struct fake_sheep {
    int listen_fd;
    unsigned short port;
    pthread_t thread;
    void (*script)(struct fake_sheep *f);
    unsigned connections;
    int errors;
    char error[256];
} fake_sheep;

#define FAKE_WAIT_MS 5000 /* no wait in a script may hang the suite */

static void srv_fail(fake_sheep *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void srv_fail(fake_sheep *f, const char *fmt, ...)
{
    va_list ap;
    if (f->errors++ > 0)
        return;
    va_start(ap, fmt);
    vsnprintf(f->error, sizeof(f->error), fmt, ap);
    va_end(ap);
}

static int srv_wait(int fd, short events, int ms)
{
    struct pollfd pfd = {.fd = fd, .events = events, .revents = 0};
    int r;
    while ((r = poll(&pfd, 1, ms)) < 0 && errno == EINTR)
        ;
    return r;
}

static int srv_accept(fake_sheep *f)
{
    if (srv_wait(f->listen_fd, POLLIN, FAKE_WAIT_MS) <= 0) {
        srv_fail(f, "no connection came");
        return -1;
    }
    int fd = accept(f->listen_fd, NULL, NULL);
    if (fd < 0)
        srv_fail(f, "accept: %s", strerror(errno));
    else
        f->connections++;
    return fd;
}

/* Reads exactly n bytes; 0, or -1 on EOF, error or timeout. */
static int srv_read(fake_sheep *f, int fd, void *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        if (srv_wait(fd, POLLIN, FAKE_WAIT_MS) <= 0) {
            srv_fail(f, "timed out reading from the client");
            return -1;
        }
        ssize_t r = read(fd, (uint8_t *)buf + got, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            srv_fail(f, "client went away after %zu of %zu bytes", got, n);
            return -1;
        }
        got += (size_t)r;
    }
    return 0;
}

static void srv_write(fake_sheep *f, int fd, const void *buf, size_t n)
{
    size_t done = 0;
    while (done < n) {
        ssize_t r = send(fd, (const uint8_t *)buf + done, n - done, MSG_NOSIGNAL);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            srv_fail(f, "send: %s", strerror(errno));
            return;
        }
        done += (size_t)r;
    }
}

/* One request; its payload (WRITE only) in *payload, to be freed. */
static int srv_read_request(fake_sheep *f, int fd, sf_req *req, uint8_t **payload)
{
    uint8_t hdr[SF_HEADER_SIZE];
    if (payload)
        *payload = NULL;
    if (srv_read(f, fd, hdr, sizeof(hdr)) < 0)
        return -1;
    sfi_req_decode(hdr, req);
    if (req->flags & SF_FLAG_WRITE) {
        uint8_t *data = malloc(req->data_length ? req->data_length : 1);
        if (srv_read(f, fd, data, req->data_length) < 0) {
            free(data);
            return -1;
        }
        if (payload)
            *payload = data;
        else
            free(data);
    }
    return 0;
}

/* Appends a reply (header + payload) to out; returns the new length. */
static size_t srv_put_reply(uint8_t *out, size_t used, const sf_req *req, uint32_t id,
                            uint32_t result, const void *payload, uint32_t len)
{
    sf_rsp rsp;
    memset(&rsp, 0, sizeof(rsp));
    rsp.opcode = req->opcode;
    rsp.epoch = 1;
    rsp.id = id;
    rsp.data_length = len;
    rsp.result = result;
    sfi_rsp_encode(&rsp, out + used);
    if (len)
        memcpy(out + used + SF_HEADER_SIZE, payload, len);
    return used + SF_HEADER_SIZE + len;
}

static void srv_reply(fake_sheep *f, int fd, const sf_req *req, uint32_t result,
                      const void *payload, uint32_t len)
{
    uint8_t *out = malloc(SF_HEADER_SIZE + len);
    size_t n = srv_put_reply(out, 0, req, req->id, result, payload, len);
    srv_write(f, fd, out, n);
    free(out);
}

/* Waits for the client to hang up, so it never sees an EOF it did not cause. */
static void srv_wait_close(fake_sheep *f, int fd)
{
    uint8_t sink[4096];
    for (;;) {
        if (srv_wait(fd, POLLIN, FAKE_WAIT_MS) <= 0) {
            srv_fail(f, "client did not close the connection");
            break;
        }
        ssize_t r = read(fd, sink, sizeof(sink));
        if (r == 0 || (r < 0 && errno != EINTR))
            break;
    }
    close(fd);
}

static void *fake_main(void *arg)
{
    fake_sheep *f = arg;
    f->script(f);
    return NULL;
}

static int fake_start(fake_sheep *f, void (*script)(fake_sheep *))
{
    struct sockaddr_in sa;
    socklen_t len = sizeof(sa);
    memset(f, 0, sizeof(*f));
    f->script = script;
    f->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (f->listen_fd < 0 || bind(f->listen_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
        listen(f->listen_fd, 8) < 0 ||
        getsockname(f->listen_fd, (struct sockaddr *)&sa, &len) < 0) {
        failure(__FILE__, __LINE__, "cannot listen on loopback: %s", strerror(errno));
        return -1;
    }
    f->port = ntohs(sa.sin_port);
    if (pthread_create(&f->thread, NULL, fake_main, f) != 0) {
        failure(__FILE__, __LINE__, "pthread_create failed");
        return -1;
    }
    return 0;
}

/* Joins the script and reports what it found wrong. */
static void fake_stop(fake_sheep *f)
{
    pthread_join(f->thread, NULL);
    if (f->listen_fd >= 0)
        close(f->listen_fd);
    if (f->errors)
        failure(__FILE__, __LINE__, "fake sheep: %s (%d problem(s))", f->error, f->errors);
}

/* A cluster as sf_cluster_open leaves it, minus the handshake: one gateway
 * (the fake), no pool. */
static sf_cluster *fake_cluster(unsigned short port, int io_timeout_ms)
{
    char addr[64];
    sf_error err;
    sf_cluster *cl = calloc(1, sizeof(*cl));
    pthread_mutex_init(&cl->lock, NULL);
    cl->refs = 1;
    cl->connect_timeout_ms = 2000;
    cl->io_timeout_ms = io_timeout_ms;
    cl->depth = SF_DEFAULT_DEPTH;
    snprintf(addr, sizeof(addr), "127.0.0.1:%u", port);
    int n = sfi_parse_addresses(addr, cl->gateways, SF_MAX_GATEWAYS, &err);
    check_eq(n, 1);
    cl->nr_configured = cl->nr_gateways = (unsigned)n;
    return cl;
}

/* A list of ops handed out in order; records completions. */
#define MAX_SCRIPT_OPS 64
typedef struct op_list {
    sf_op *ops;
    unsigned nr, next;
    unsigned outstanding, max_outstanding;
    unsigned times_completed[MAX_SCRIPT_OPS];
    unsigned order[MAX_SCRIPT_OPS];
    unsigned nr_done;
} op_list;

static sf_op *op_list_next(void *ctx)
{
    op_list *l = ctx;
    if (l->next == l->nr)
        return NULL;
    sf_op *op = &l->ops[l->next];
    op->tag = l->next++;
    if (++l->outstanding > l->max_outstanding)
        l->max_outstanding = l->outstanding;
    return op;
}

static void op_list_complete(void *ctx, sf_op *op)
{
    op_list *l = ctx;
    l->outstanding--;
    l->times_completed[op->tag]++;
    if (l->nr_done < MAX_SCRIPT_OPS)
        l->order[l->nr_done++] = op->tag;
}

static int op_list_run(sf_cluster *cl, sf_conn **conn, sf_op *ops, unsigned nr, unsigned depth,
                       op_list *l, sf_error *err)
{
    memset(l, 0, sizeof(*l));
    l->ops = ops;
    l->nr = nr;
    sf_source src = {l, op_list_next, op_list_complete};
    memset(err, 0, sizeof(*err));
    return sfi_run(cl, conn, &src, depth, err);
}

static uint8_t pattern(uint32_t idx, uint32_t j)
{
    return (uint8_t)(idx * 31u + j * 7u + (j >> 8) + 1u);
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* --- out-of-order replies, matched by id */

#define OOO_OPS 5
#define OOO_VID 0x54c278u
static size_t ooo_chunk; /* 0: all replies in one write; else this many bytes at a time */

static void script_out_of_order(fake_sheep *f)
{
    static const unsigned reply_order[OOO_OPS] = {2, 3, 1, 0, 4}; /* ids 3,4,2,1,5 */
    sf_req reqs[OOO_OPS];
    int fd = srv_accept(f);
    if (fd < 0)
        return;
    for (unsigned i = 0; i < OOO_OPS; i++) {
        if (srv_read_request(f, fd, &reqs[i], NULL) < 0)
            goto out;
        if (reqs[i].opcode != SF_OP_READ_OBJ || reqs[i].proto_ver != SF_PROTO_VER ||
            reqs[i].oid != sfi_data_oid(OOO_VID, i))
            srv_fail(f, "request %u: opcode 0x%x pv %u oid %llx", i, reqs[i].opcode,
                     reqs[i].proto_ver, (unsigned long long)reqs[i].oid);
        for (unsigned j = 0; j < i; j++)
            if (reqs[j].id == reqs[i].id)
                srv_fail(f, "requests %u and %u share id %u", j, i, reqs[i].id);
    }
    /* every reply in one buffer, in completion order, not request order */
    uint8_t *out = malloc(OOO_OPS * (SF_HEADER_SIZE + 256));
    size_t used = 0;
    for (unsigned k = 0; k < OOO_OPS; k++) {
        const sf_req *req = &reqs[reply_order[k]];
        uint32_t idx = (uint32_t)req->oid;
        uint8_t payload[256];
        for (uint32_t j = 0; j < req->data_length && j < sizeof(payload); j++)
            payload[j] = pattern(idx, j + req->offset);
        if (idx == 2)
            used = srv_put_reply(out, used, req, req->id, SF_RES_NO_OBJ, NULL, 0);
        else
            used =
                srv_put_reply(out, used, req, req->id, SF_RES_SUCCESS, payload, req->data_length);
    }
    if (ooo_chunk == 0) {
        srv_write(f, fd, out, used);
    } else {
        for (size_t off = 0; off < used; off += ooo_chunk) {
            srv_write(f, fd, out + off, used - off < ooo_chunk ? used - off : ooo_chunk);
            usleep(300);
        }
    }
    free(out);
    /* the stream is still in step: one more request on the same connection */
    sf_req req;
    if (srv_read_request(f, fd, &req, NULL) < 0)
        goto out;
    if (req.opcode != SF_OP_GET_CLUSTER_DEFAULT || req.id <= reqs[OOO_OPS - 1].id)
        srv_fail(f, "follow-up request: opcode 0x%x id %u", req.opcode, req.id);
    uint8_t hdr[SF_HEADER_SIZE];
    sf_rsp rsp;
    memset(&rsp, 0, sizeof(rsp));
    rsp.opcode = SF_OP_GET_CLUSTER_DEFAULT;
    rsp.id = req.id;
    rsp.default_copies = 3;
    rsp.default_copy_policy = 0x11;
    rsp.default_bss = 23;
    sfi_rsp_encode(&rsp, hdr);
    srv_write(f, fd, hdr, sizeof(hdr));
out:
    srv_wait_close(f, fd);
}

static void test_engine_out_of_order(size_t chunk, const char *name)
{
    fake_sheep f;
    sf_error err;
    sf_op ops[OOO_OPS];
    uint8_t *bufs[OOO_OPS];
    op_list l;

    test(name);
    ooo_chunk = chunk;
    if (fake_start(&f, script_out_of_order) < 0)
        return;
    sf_cluster *cl = fake_cluster(f.port, 5000);
    sf_conn *conn = sfi_connect_any(cl, 0, &err);
    if (!check(conn != NULL)) {
        printf("  connect: %s\n", err.message);
        fake_stop(&f);
        sfi_cluster_unref(cl);
        return;
    }
    memset(ops, 0, sizeof(ops));
    for (unsigned i = 0; i < OOO_OPS; i++) {
        uint32_t len = 100 + i;
        bufs[i] = malloc(len); /* exact size: an overrun shows under ASan */
        memset(bufs[i], 0xCC, len);
        sfi_req_init(&ops[i].req, SF_OP_READ_OBJ);
        ops[i].req.oid = sfi_data_oid(OOO_VID, i);
        ops[i].req.offset = 10 * i;
        ops[i].req.data_length = len;
        ops[i].reply_buf = bufs[i];
        ops[i].reply_cap = len;
        ops[i].retryable = 1;
    }
    int rc = op_list_run(cl, &conn, ops, OOO_OPS, 16, &l, &err);
    if (!check_eq(rc, SF_OK))
        printf("  sfi_run: %s\n", err.message);
    check_eq(l.nr_done, OOO_OPS);
    check_eq(l.max_outstanding, OOO_OPS);
    static const unsigned want_order[OOO_OPS] = {2, 3, 1, 0, 4};
    for (unsigned k = 0; k < OOO_OPS && k < l.nr_done; k++)
        check_eq(l.order[k], want_order[k]);
    for (unsigned i = 0; i < OOO_OPS; i++) {
        check_eq(l.times_completed[i], 1);
        check_eq(ops[i].rsp.id, ops[i].req.id);
        check_eq(ops[i].rsp.opcode, SF_OP_READ_OBJ);
        if (i == 2) {
            check_eq(ops[i].rsp.result, SF_RES_NO_OBJ);
            check_eq(ops[i].rsp.data_length, 0);
            check_eq(bufs[i][0], 0xCC);
            continue;
        }
        check_eq(ops[i].rsp.result, SF_RES_SUCCESS);
        check_eq(ops[i].rsp.data_length, 100 + i);
        unsigned bad = 0;
        for (uint32_t j = 0; j < 100 + i; j++)
            bad += bufs[i][j] != pattern(i, j + 10 * i);
        if (bad)
            failure(__FILE__, __LINE__, "op %u: %u payload bytes are not its own", i, bad);
    }
    check(conn != NULL && !conn->broken);

    /* the connection stays usable: the next call gets its own reply */
    sf_op op;
    memset(&op, 0, sizeof(op));
    sfi_req_init(&op.req, SF_OP_GET_CLUSTER_DEFAULT);
    op.retryable = 1;
    memset(&err, 0, sizeof(err));
    if (!check_eq(sfi_call(cl, &conn, &op, &err), SF_OK))
        printf("  sfi_call: %s\n", err.message);
    check_eq(op.rsp.default_copies, 3);
    check_eq(op.rsp.default_copy_policy, 0x11);
    check_eq(op.rsp.default_bss, 23);

    sfi_conn_close(conn);
    fake_stop(&f);
    sfi_cluster_unref(cl);
    for (unsigned i = 0; i < OOO_OPS; i++)
        free(bufs[i]);
}

/* --- a window of depth requests, answered newest first */

#define WINDOW_OPS 40
#define WINDOW_DEPTH 4

static void script_window(fake_sheep *f)
{
    int fd = srv_accept(f);
    if (fd < 0)
        return;
    for (unsigned batch = 0; batch < WINDOW_OPS / WINDOW_DEPTH; batch++) {
        sf_req reqs[WINDOW_DEPTH];
        for (unsigned i = 0; i < WINDOW_DEPTH; i++)
            if (srv_read_request(f, fd, &reqs[i], NULL) < 0)
                goto out;
        for (unsigned i = WINDOW_DEPTH; i-- > 0;) {
            uint8_t payload[8];
            sfi_put_le64(payload, reqs[i].oid);
            srv_reply(f, fd, &reqs[i], SF_RES_SUCCESS, payload, sizeof(payload));
        }
    }
out:
    srv_wait_close(f, fd);
}

static void test_engine_window(void)
{
    fake_sheep f;
    sf_error err;
    sf_op ops[WINDOW_OPS];
    uint8_t bufs[WINDOW_OPS][8];
    op_list l;

    test("engine: keeps exactly depth requests in flight and refills as replies come");
    if (fake_start(&f, script_window) < 0)
        return;
    sf_cluster *cl = fake_cluster(f.port, 5000);
    sf_conn *conn = sfi_connect_any(cl, 0, &err);
    check(conn != NULL);
    memset(ops, 0, sizeof(ops));
    for (unsigned i = 0; i < WINDOW_OPS; i++) {
        sfi_req_init(&ops[i].req, SF_OP_READ_OBJ);
        ops[i].req.oid = sfi_data_oid(7, i);
        ops[i].req.data_length = 8;
        ops[i].reply_buf = bufs[i];
        ops[i].reply_cap = 8;
    }
    int rc = conn ? op_list_run(cl, &conn, ops, WINDOW_OPS, WINDOW_DEPTH, &l, &err) : SF_ERR;
    if (!check_eq(rc, SF_OK))
        printf("  sfi_run: %s\n", err.message);
    check_eq(l.max_outstanding, WINDOW_DEPTH);
    check_eq(l.nr_done, WINDOW_OPS);
    for (unsigned i = 0; i < WINDOW_OPS; i++) {
        check_eq(l.times_completed[i], 1);
        check_eq(sfi_get_le64(bufs[i]), sfi_data_oid(7, i));
    }
    /* ids on one connection are never reused */
    for (unsigned i = 1; i < WINDOW_OPS; i++)
        check(ops[i].req.id > ops[i - 1].req.id);
    sfi_conn_close(conn);
    fake_stop(&f);
    sfi_cluster_unref(cl);
}

/* --- large write payloads: partial sends while replies arrive */

#define WRITE_OPS 6
#define WRITE_LEN (768u * 1024u)

static void script_big_writes(fake_sheep *f)
{
    sf_req held[WRITE_OPS];
    unsigned nr_held = 0;
    int fd = srv_accept(f);
    if (fd < 0)
        return;
    usleep(20000); /* let the client fill the socket and hit EAGAIN */
    for (unsigned i = 0; i < WRITE_OPS; i++) {
        sf_req req;
        uint8_t *payload;
        if (srv_read_request(f, fd, &req, &payload) < 0)
            goto out;
        uint32_t idx = (uint32_t)req.oid;
        if (req.opcode != SF_OP_WRITE_OBJ || req.data_length != WRITE_LEN || payload == NULL) {
            srv_fail(f, "request %u: opcode 0x%x dlen %u", i, req.opcode, req.data_length);
        } else {
            for (uint32_t j = 0; j < WRITE_LEN; j++)
                if (payload[j] != pattern(idx, j)) {
                    srv_fail(f, "payload of object %u differs at byte %u", idx, j);
                    break;
                }
        }
        free(payload);
        if (idx % 2)
            srv_reply(f, fd, &req, SF_RES_SUCCESS, NULL, 0);
        else
            held[nr_held++] = req;
    }
    while (nr_held > 0)
        srv_reply(f, fd, &held[--nr_held], SF_RES_SUCCESS, NULL, 0);
out:
    srv_wait_close(f, fd);
}

static void test_engine_big_writes(void)
{
    fake_sheep f;
    sf_error err;
    sf_op ops[WRITE_OPS];
    uint8_t *payloads[WRITE_OPS];
    op_list l;

    test("engine: large write payloads go out whole across partial sends");
    if (fake_start(&f, script_big_writes) < 0)
        return;
    sf_cluster *cl = fake_cluster(f.port, 5000);
    sf_conn *conn = sfi_connect_any(cl, 0, &err);
    check(conn != NULL);
    memset(ops, 0, sizeof(ops));
    for (unsigned i = 0; i < WRITE_OPS; i++) {
        payloads[i] = malloc(WRITE_LEN);
        for (uint32_t j = 0; j < WRITE_LEN; j++)
            payloads[i][j] = pattern(i, j);
        sfi_req_init(&ops[i].req, SF_OP_WRITE_OBJ);
        ops[i].req.flags = SF_FLAG_WRITE;
        ops[i].req.oid = sfi_data_oid(9, i);
        ops[i].req.data_length = WRITE_LEN;
        ops[i].payload = payloads[i];
    }
    int rc = conn ? op_list_run(cl, &conn, ops, WRITE_OPS, 16, &l, &err) : SF_ERR;
    if (!check_eq(rc, SF_OK))
        printf("  sfi_run: %s\n", err.message);
    check_eq(l.nr_done, WRITE_OPS);
    for (unsigned i = 0; i < WRITE_OPS; i++) {
        check_eq(l.times_completed[i], 1);
        check_eq(ops[i].rsp.result, SF_RES_SUCCESS);
        check_eq(ops[i].sent, SF_HEADER_SIZE + WRITE_LEN);
    }
    sfi_conn_close(conn);
    fake_stop(&f);
    sfi_cluster_unref(cl);
    for (unsigned i = 0; i < WRITE_OPS; i++)
        free(payloads[i]);
}

/* --- replies that break the protocol */

enum bad_reply { BAD_TOO_LONG, BAD_UNKNOWN_ID, BAD_OPCODE };
static enum bad_reply bad_kind;

static void script_bad_reply(fake_sheep *f)
{
    sf_req req;
    uint8_t payload[64];
    int fd = srv_accept(f);
    if (fd < 0)
        return;
    if (srv_read_request(f, fd, &req, NULL) < 0)
        goto out;
    memset(payload, 0xEE, sizeof(payload));
    uint8_t out[SF_HEADER_SIZE + sizeof(payload)];
    size_t n = 0;
    switch (bad_kind) {
    case BAD_TOO_LONG: /* one byte more than the client asked for */
        n = srv_put_reply(out, 0, &req, req.id, SF_RES_SUCCESS, payload, req.data_length + 1);
        break;
    case BAD_UNKNOWN_ID:
        n = srv_put_reply(out, 0, &req, req.id + 1000, SF_RES_SUCCESS, payload, req.data_length);
        break;
    case BAD_OPCODE: {
        sf_req other = req;
        other.opcode = SF_OP_WRITE_OBJ;
        n = srv_put_reply(out, 0, &other, req.id, SF_RES_SUCCESS, NULL, 0);
        break;
    }
    }
    srv_write(f, fd, out, n);
out:
    srv_wait_close(f, fd);
}

static void test_engine_bad_reply(enum bad_reply kind, const char *name, const char *in_message)
{
    fake_sheep f;
    sf_error err;
    sf_op op;
    uint8_t buf[32];
    op_list l;

    test(name);
    bad_kind = kind;
    if (fake_start(&f, script_bad_reply) < 0)
        return;
    sf_cluster *cl = fake_cluster(f.port, 5000);
    sf_conn *conn = sfi_connect_any(cl, 0, &err);
    check(conn != NULL);
    memset(buf, 0x11, sizeof(buf));
    memset(&op, 0, sizeof(op));
    sfi_req_init(&op.req, SF_OP_READ_OBJ);
    op.req.oid = sfi_data_oid(3, 3);
    op.req.data_length = 16;
    op.reply_buf = buf;
    op.reply_cap = 16;
    op.retryable = 1;
    int rc = conn ? op_list_run(cl, &conn, &op, 1, 4, &l, &err) : SF_OK;
    check_eq(rc, SF_ERR);
    check_eq(err.category, SF_E_PROTOCOL);
    if (!check(strstr(err.message, in_message) != NULL))
        printf("  message: %s\n", err.message);
    check(conn != NULL && conn->broken); /* never reused */
    check_eq(l.nr_done, 0);
    unsigned touched = 0;
    for (size_t i = 0; i < sizeof(buf); i++)
        touched += buf[i] != 0x11;
    check_eq(touched, 0); /* nothing was received into the caller's buffer */
    sfi_conn_close(conn);
    fake_stop(&f);
    sfi_cluster_unref(cl);
}

/* --- silence */

static void script_silent(fake_sheep *f)
{
    sf_req req;
    int fd = srv_accept(f);
    if (fd < 0)
        return;
    srv_read_request(f, fd, &req, NULL);
    srv_wait_close(f, fd);
}

static void test_engine_timeout(void)
{
    fake_sheep f;
    sf_error err;
    sf_op op;
    uint8_t buf[16];
    op_list l;

    test("engine: a silent sheep fails the call with SF_E_TIMEOUT");
    if (fake_start(&f, script_silent) < 0)
        return;
    sf_cluster *cl = fake_cluster(f.port, 200);
    sf_conn *conn = sfi_connect_any(cl, 0, &err);
    check(conn != NULL);
    memset(&op, 0, sizeof(op));
    sfi_req_init(&op.req, SF_OP_READ_OBJ);
    op.req.data_length = sizeof(buf);
    op.reply_buf = buf;
    op.reply_cap = sizeof(buf);
    op.retryable = 1;
    double start = now_ms();
    int rc = conn ? op_list_run(cl, &conn, &op, 1, 4, &l, &err) : SF_OK;
    double elapsed = now_ms() - start;
    check_eq(rc, SF_ERR);
    check_eq(err.category, SF_E_TIMEOUT);
    check(strstr(err.message, "200 ms") != NULL);
    if (!check(elapsed >= 190 && elapsed < 4000))
        printf("  took %.0f ms for a 200 ms timeout\n", elapsed);
    check(conn != NULL && conn->broken);
    check_eq(l.nr_done, 0);
    sfi_conn_close(conn);
    fake_stop(&f);
    sfi_cluster_unref(cl);
}

/* --- sfi_call maps a result code to SF_E_SERVER */

static void script_errors(fake_sheep *f)
{
    sf_req req;
    uint8_t *payload;
    int fd = srv_accept(f);
    if (fd < 0)
        return;
    if (srv_read_request(f, fd, &req, &payload) < 0)
        goto out;
    if (payload == NULL || req.data_length != 2 * SF_NAME_FIELD ||
        strcmp((char *)payload, "nope") != 0)
        srv_fail(f, "GET_VDI_INFO payload missing or wrong");
    free(payload);
    srv_reply(f, fd, &req, SF_RES_NO_VDI, NULL, 0);
    if (srv_read_request(f, fd, &req, &payload) < 0)
        goto out;
    free(payload);
    sf_rsp rsp;
    uint8_t hdr[SF_HEADER_SIZE];
    memset(&rsp, 0, sizeof(rsp));
    rsp.opcode = req.opcode;
    rsp.id = req.id;
    rsp.vdi_id = 0x7f588f;
    sfi_rsp_encode(&rsp, hdr);
    srv_write(f, fd, hdr, sizeof(hdr));
out:
    srv_wait_close(f, fd);
}

static void test_engine_call_errors(void)
{
    fake_sheep f;
    sf_error err;
    uint32_t vid = 0;

    test("sfi_call/sfi_lookup_vid: a result code becomes SF_E_SERVER, the connection survives");
    if (fake_start(&f, script_errors) < 0)
        return;
    sf_cluster *cl = fake_cluster(f.port, 5000);
    sf_conn *conn = sfi_connect_any(cl, 0, &err);
    check(conn != NULL);
    memset(&err, 0, sizeof(err));
    int rc = conn ? sfi_lookup_vid(cl, &conn, "nope", 4, NULL, &vid, &err) : SF_OK;
    check_eq(rc, SF_ERR);
    check_eq(err.category, SF_E_SERVER);
    check_eq(err.result, SF_RES_NO_VDI);
    if (!check(strstr(err.message, "'nope'") != NULL && strstr(err.message, "NO_VDI") != NULL))
        printf("  message: %s\n", err.message);
    check(conn != NULL && !conn->broken);
    memset(&err, 0, sizeof(err));
    rc = conn ? sfi_lookup_vid(cl, &conn, "yes", 3, NULL, &vid, &err) : SF_ERR;
    if (!check_eq(rc, SF_OK))
        printf("  sfi_lookup_vid: %s\n", err.message);
    check_eq(vid, 0x7f588f);
    sfi_conn_close(conn);
    fake_stop(&f);
    sfi_cluster_unref(cl);
}

/* --- connection loss */

static void script_drop_then_answer(fake_sheep *f)
{
    sf_req first, again;
    uint8_t *p1 = NULL, *p2 = NULL;
    int fd = srv_accept(f);
    if (fd < 0)
        return;
    int ok = srv_read_request(f, fd, &first, &p1) == 0;
    close(fd); /* lost with the request in flight */
    if (!ok)
        return;
    if ((fd = srv_accept(f)) < 0)
        goto out;
    if (srv_read_request(f, fd, &again, &p2) == 0) {
        if (again.opcode != first.opcode || again.oid != first.oid ||
            again.offset != first.offset || again.data_length != first.data_length || p2 == NULL ||
            memcmp(p1, p2, first.data_length) != 0)
            srv_fail(f, "the resent request differs from the first");
        srv_reply(f, fd, &again, SF_RES_SUCCESS, NULL, 0);
    }
    srv_wait_close(f, fd);
out:
    free(p1);
    free(p2);
}

static void script_drop_only(fake_sheep *f)
{
    sf_req req;
    int fd = srv_accept(f);
    if (fd < 0)
        return;
    srv_read_request(f, fd, &req, NULL);
    close(fd);
    /* a non-retryable op must not come back on a new connection */
    if (srv_wait(f->listen_fd, POLLIN, 300) > 0) {
        int again = accept(f->listen_fd, NULL, NULL);
        f->connections++;
        if (again >= 0)
            close(again);
    }
}

static void test_engine_reconnect(int retryable)
{
    fake_sheep f;
    sf_error err;
    sf_op op;
    uint8_t payload[100];
    op_list l;

    test(retryable ? "engine: a retryable op is resent on a new connection after a drop"
                   : "engine: a non-retryable op fails with SF_E_IO after a drop, no resend");
    if (fake_start(&f, retryable ? script_drop_then_answer : script_drop_only) < 0)
        return;
    sf_cluster *cl = fake_cluster(f.port, 5000);
    sf_conn *conn = sfi_connect_any(cl, 0, &err);
    check(conn != NULL);
    int first_fd = conn ? conn->fd : -1;
    for (unsigned i = 0; i < sizeof(payload); i++)
        payload[i] = pattern(5, i);
    memset(&op, 0, sizeof(op));
    sfi_req_init(&op.req, SF_OP_WRITE_OBJ);
    op.req.flags = SF_FLAG_WRITE;
    op.req.oid = sfi_data_oid(5, 5);
    op.req.offset = 4096;
    op.req.data_length = sizeof(payload);
    op.payload = payload;
    op.retryable = retryable;
    int rc = conn ? op_list_run(cl, &conn, &op, 1, 4, &l, &err) : SF_ERR;
    if (retryable) {
        if (!check_eq(rc, SF_OK))
            printf("  sfi_run: %s\n", err.message);
        check_eq(l.nr_done, 1);
        check_eq(op.rsp.result, SF_RES_SUCCESS);
        check(conn != NULL && !conn->broken);
        check(conn != NULL && conn->fd != first_fd); /* *conn was replaced */
    } else {
        check_eq(rc, SF_ERR);
        check_eq(err.category, SF_E_IO);
        check_eq(l.nr_done, 0);
        check(conn != NULL && conn->broken);
    }
    sfi_conn_close(conn);
    fake_stop(&f);
    check_eq(f.connections, retryable ? 2 : 1);
    sfi_cluster_unref(cl);
}

/* --- the last reply, then EOF */

static int eof_reply_has_payload;

static void script_reply_then_eof(fake_sheep *f)
{
    sf_req req;
    uint8_t payload[16];
    int fd = srv_accept(f);
    if (fd < 0)
        return;
    if (srv_read_request(f, fd, &req, NULL) == 0) {
        /* nowhere to reconnect to: any EOF handling shows up as a failure */
        close(f->listen_fd);
        f->listen_fd = -1;
        /* corked: the reply and the FIN leave in one segment, so the client
         * always finds EOF right behind the reply */
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_CORK, &one, sizeof(one));
        memset(payload, 0x42, sizeof(payload));
        srv_reply(f, fd, &req, SF_RES_SUCCESS, payload,
                  eof_reply_has_payload ? sizeof(payload) : 0);
    }
    close(fd);
}

static void test_engine_reply_then_eof(int with_payload)
{
    fake_sheep f;
    sf_error err;
    sf_op op;
    uint8_t buf[16];
    op_list l;

    test(with_payload ? "engine: a complete reply with payload followed by EOF succeeds"
                      : "engine: a complete reply without payload followed by EOF succeeds");
    eof_reply_has_payload = with_payload;
    if (fake_start(&f, script_reply_then_eof) < 0)
        return;
    sf_cluster *cl = fake_cluster(f.port, 5000);
    sf_conn *conn = sfi_connect_any(cl, 0, &err);
    check(conn != NULL);
    memset(&op, 0, sizeof(op));
    sfi_req_init(&op.req, with_payload ? SF_OP_READ_OBJ : SF_OP_WRITE_OBJ);
    op.req.oid = sfi_data_oid(6, 6);
    op.req.data_length = sizeof(buf);
    if (!with_payload) {
        op.req.flags = SF_FLAG_WRITE;
        op.payload = buf;
    } else {
        op.reply_buf = buf;
        op.reply_cap = sizeof(buf);
    }
    memset(buf, 0, sizeof(buf));
    op.retryable = 1;
    int rc = conn ? op_list_run(cl, &conn, &op, 1, 4, &l, &err) : SF_ERR;
    check_eq(l.nr_done, 1);
    if (!check_eq(rc, SF_OK))
        printf("  sfi_run after all replies arrived: %s\n", err.message);
    sfi_conn_close(conn);
    fake_stop(&f);
    sfi_cluster_unref(cl);
}

/* --- sf_vdi_list: bitmaps, pipelined inode reads, filtering, order */

#define LIST_BYTES 572u /* inode fields up to btree_counter: what a listing reads */

static const struct list_vdi {
    uint32_t vid;
    const char *name; /* NULL: the inode read answers NO_OBJ; "": name zeroed */
    uint32_t snap_id;
    uint64_t snap_ctime;
} list_vdis[] = {
    {0x10, "beta", 1, 0},
    {0x12, NULL, 0, 0},         /* vanished between bitmap and inode read */
    {0x13, "", 3, 0},           /* deleted: name zeroed */
    {0x14, "alpha", 2, 0},      /* the working VDI ... */
    {0x7f588f, "alpha", 1, 77}, /* ... and its snapshot */
    {SF_MAX_VID, "gamma", 1, 0},
};
#define LIST_VDIS (sizeof(list_vdis) / sizeof(list_vdis[0]))
#define LIST_DELETED_VID 0x11u /* in both bitmaps: never read */
static int list_empty;         /* the cluster has no VDI at all */

static void set_bit(uint8_t *map, uint32_t v)
{
    map[v >> 3] |= (uint8_t)(1u << (v & 7));
}

static void script_list(fake_sheep *f)
{
    sf_req req, reads[LIST_VDIS];
    int fd = srv_accept(f);
    if (fd < 0)
        return;
    uint8_t *in_use = calloc(1, SF_VDI_BITMAP_SIZE), *deleted = calloc(1, SF_VDI_BITMAP_SIZE);
    if (!list_empty) {
        for (size_t i = 0; i < LIST_VDIS; i++)
            set_bit(in_use, list_vdis[i].vid);
        set_bit(in_use, LIST_DELETED_VID);
        set_bit(deleted, LIST_DELETED_VID);
    }
    static const uint8_t bitmap_ops[2][2] = {{SF_OP_READ_VDIS, SF_PROTO_VER},
                                             {SF_OP_READ_DEL_VDIS, SF_PROTO_VER_INTERNAL}};
    for (int k = 0; k < 2; k++) {
        if (srv_read_request(f, fd, &req, NULL) < 0)
            goto out;
        if (req.opcode != bitmap_ops[k][0] || req.proto_ver != bitmap_ops[k][1] ||
            req.data_length != SF_VDI_BITMAP_SIZE || req.flags != 0)
            srv_fail(f, "bitmap request %d: opcode 0x%x pv %u dlen %u flags 0x%x", k, req.opcode,
                     req.proto_ver, req.data_length, req.flags);
        srv_reply(f, fd, &req, SF_RES_SUCCESS, k ? deleted : in_use, SF_VDI_BITMAP_SIZE);
    }
    if (list_empty)
        goto out;
    /* every live vid's inode header, pipelined; answered newest first */
    for (size_t i = 0; i < LIST_VDIS; i++) {
        if (srv_read_request(f, fd, &reads[i], NULL) < 0)
            goto out;
        uint32_t vid = (uint32_t)(reads[i].oid >> 32) & SF_VID_MASK;
        if (reads[i].opcode != SF_OP_READ_OBJ || reads[i].oid != sfi_inode_oid(vid) ||
            reads[i].offset != 0 || reads[i].data_length != LIST_BYTES || vid == LIST_DELETED_VID)
            srv_fail(f, "inode read %zu: opcode 0x%x oid %016llx dlen %u", i, reads[i].opcode,
                     (unsigned long long)reads[i].oid, reads[i].data_length);
    }
    for (size_t i = LIST_VDIS; i-- > 0;) {
        uint32_t vid = (uint32_t)(reads[i].oid >> 32) & SF_VID_MASK;
        const struct list_vdi *d = NULL;
        for (size_t j = 0; j < LIST_VDIS; j++)
            if (list_vdis[j].vid == vid)
                d = &list_vdis[j];
        if (d == NULL || d->name == NULL) {
            srv_reply(f, fd, &reads[i], SF_RES_NO_OBJ, NULL, 0);
            continue;
        }
        uint8_t inode[LIST_BYTES];
        memset(inode, 0, sizeof(inode));
        memcpy(inode + SF_INODE_NAME_OFF, d->name, strlen(d->name));
        sfi_put_le64(inode + SF_INODE_SNAP_CTIME_OFF, d->snap_ctime);
        sfi_put_le64(inode + SF_INODE_SIZE_OFF, UINT64_C(1) << 30);
        inode[SF_INODE_COPIES_OFF] = 2;
        inode[SF_INODE_BSS_OFF] = 22;
        sfi_put_le32(inode + SF_INODE_SNAP_ID_OFF, d->snap_id);
        sfi_put_le32(inode + SF_INODE_VDI_ID_OFF, vid);
        srv_reply(f, fd, &reads[i], SF_RES_SUCCESS, inode, sizeof(inode));
    }
out:
    free(in_use);
    free(deleted);
    srv_wait_close(f, fd);
}

static void test_vdi_list(int empty)
{
    fake_sheep f;
    sf_error err;
    sf_vdi_info *out = NULL;
    size_t count = 99;

    test(empty ? "sf_vdi_list: a cluster without VDIs lists none"
               : "sf_vdi_list: skips deleted and vanished vids, sorts by name then snap_id");
    list_empty = empty;
    if (fake_start(&f, script_list) < 0)
        return;
    sf_cluster *cl = fake_cluster(f.port, 5000);
    memset(&err, 0, sizeof(err));
    int rc = sf_vdi_list(cl, &out, &count, &err);
    if (!check_eq(rc, SF_OK))
        printf("  sf_vdi_list: %s\n", err.message);
    if (empty) {
        check_eq(count, 0);
    } else if (check_eq(count, 4) && out != NULL) {
        static const struct {
            const char *name;
            uint32_t vid, snap_id;
        } want[] = {{"alpha", 0x7f588f, 1},
                    {"alpha", 0x14, 2},
                    {"beta", 0x10, 1},
                    {"gamma", SF_MAX_VID, 1}};
        for (size_t i = 0; i < 4; i++) {
            check_str(out[i].name, want[i].name);
            check_eq(out[i].vid, want[i].vid);
            check_eq(out[i].snap_id, want[i].snap_id);
            check_eq(out[i].size, UINT64_C(1) << 30);
        }
        check_eq(out[0].snap_ctime, 77);
        check_eq(out[1].snap_ctime, 0);
    }
    sf_free(out);
    sfi_cluster_unref(cl); /* closes the pooled connection: the script ends */
    fake_stop(&f);
}

/* ------------------------------------------------------------------ main */

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s VECTORS_DIR\n", argv[0]);
        return 2;
    }
    vectors_dir = argv[1];
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0);

    test_all_vectors();
    test_vector_write_fresh_small();
    test_vector_direct_errors();
    test_vector_pipeline_and_discovery();
    test_codec_unused_bytes_zero();

    test_oids();
    test_check_name();
    test_attr_key_and_record();
    test_check_copy_policy();
    test_max_flat_size();
    test_is_zero();
    test_parse_addresses();
    test_node_record_address();
    test_ring();
    test_inode_header_decode();
    test_errors();

    test_engine_out_of_order(0, "engine: out-of-order replies in one burst are matched by id");
    test_engine_out_of_order(7,
                             "engine: out-of-order replies in 7-byte fragments are matched by id");
    test_engine_window();
    test_engine_big_writes();
    test_engine_bad_reply(BAD_TOO_LONG, "engine: a reply longer than reply_cap is SF_E_PROTOCOL",
                          "17 bytes, at most 16");
    test_engine_bad_reply(BAD_UNKNOWN_ID, "engine: a reply with an unknown id is SF_E_PROTOCOL",
                          "matches no request");
    test_engine_bad_reply(BAD_OPCODE, "engine: a reply with another opcode is SF_E_PROTOCOL",
                          "reply opcode 0x03");
    test_engine_timeout();
    test_engine_call_errors();
    test_engine_reconnect(1);
    test_engine_reconnect(0);
    test_engine_reply_then_eof(1);
    test_engine_reply_then_eof(0);
    test_vdi_list(0);
    test_vdi_list(1);

    test_finish();
    printf("%d passed, %d failed\n", tests_passed, tests_failed);
    return tests_failed ? 1 : 0;
}
