/* pgrepl: changed keys from PostgreSQL's logical decoding (pgoutput,
 * protocol version 1) over libpq's replication protocol. The decoder
 * (pr_decode) is a pure function of one CopyData message; the stream around
 * it does the I/O: poll with a deadline, keepalives, status updates.
 * Protocol: PostgreSQL's "Streaming Replication Protocol" and "Logical
 * Replication Message Formats". */
#include <errno.h>
#include <libpq-fe.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../base/dsn.h"
#include "conn.h"
#include "pgrepl_impl.h"

/* µs between 1970-01-01 and PostgreSQL's epoch, 2000-01-01 */
#define PG_EPOCH_US 946684800000000LL
/* status updates at least this often: below any sane wal_sender_timeout */
#define PR_STATUS_EVERY_MS 10000

/* ---- the decoder ------------------------------------------------------ */

/* A relation as its 'R' message announced it: the key columns' positions
 * in its tuples (ascending) and names. names holds schema, table, then
 * each key column name, NUL-separated; the pointers point into it. */
typedef struct pr_rel {
    uint32_t id;
    uint16_t ncols;
    size_t nkey;
    uint16_t *keycol;
    const char **keyname;
    const char *schema, *table;
    char *names;
} pr_rel;

/* A value as it lies in the message being decoded. */
typedef struct pr_val {
    char kind; /* 'n', 'u', 't', 'b' */
    const uint8_t *p;
    uint32_t len;
} pr_val;

struct pr_decoder {
    /* the relations announced: a publication's tables, a handful, so a
     * linear search (last hit first) is enough */
    pr_rel *rels;
    size_t nrels, caprels, last;
    int in_txn;
    pr_lsn commit_lsn;
    uint32_t xid;
    int64_t commit_time_ms;
    /* the last message's changes and the memory they point into, reused */
    pr_change *out;
    size_t capout;
    pr_val *oldv, *newv; /* a tuple's key values, capkey each */
    const char **ptrs;   /* key then old key: 2 * capkey */
    size_t *offs;        /* where ptrs will point in text: 2 * capkey */
    size_t capkey;
    sl_buf text; /* the key values, NUL-terminated */
};

/* A bounds-checked reader over one message: every read past the end fails
 * once, sets err naming the message and the offset, and the reader stays
 * failed (later reads return zeroes), so a decoder checks once at the end
 * of a field group. */
typedef struct rd {
    const uint8_t *p;
    size_t n, off;
    const char *what;
    int failed;
    sl_err *err;
} rd;

static int rd_fail(rd *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int rd_fail(rd *r, const char *fmt, ...)
{
    if (!r->failed) {
        char m[300];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(m, sizeof m, fmt, ap);
        va_end(ap);
        sl_err_setc(r->err, SL_INTERNAL, "%s message of %zu bytes: %s", r->what, r->n, m);
    }
    r->failed = 1;
    return -1;
}

static const uint8_t *rd_take(rd *r, size_t k, const char *field)
{
    if (r->failed)
        return NULL;
    if (k > r->n - r->off) {
        rd_fail(r, "%s at byte %zu needs %zu bytes, past the end", field, r->off, k);
        return NULL;
    }
    const uint8_t *p = r->p + r->off;
    r->off += k;
    return p;
}

static uint64_t rd_be(rd *r, size_t k, const char *field)
{
    const uint8_t *p = rd_take(r, k, field);
    uint64_t v = 0;
    for (size_t i = 0; p && i < k; i++)
        v = v << 8 | p[i];
    return v;
}

/* A NUL-terminated string inside the message. */
static const char *rd_str(rd *r, const char *field)
{
    if (r->failed)
        return "";
    const uint8_t *nul = memchr(r->p + r->off, 0, r->n - r->off);
    if (!nul) {
        rd_fail(r, "%s at byte %zu has no terminating NUL", field, r->off);
        return "";
    }
    const char *s = (const char *)r->p + r->off;
    r->off = (size_t)(nul - r->p) + 1;
    return s;
}

static int rd_end(rd *r)
{
    if (!r->failed && r->off != r->n)
        rd_fail(r, "%zu bytes left over after byte %zu", r->n - r->off, r->off);
    return r->failed ? -1 : 0;
}

pr_decoder *pr_decoder_new(void)
{
    return calloc(1, sizeof(pr_decoder));
}

static void rel_clear(pr_rel *rel)
{
    free(rel->keycol);
    free(rel->keyname);
    free(rel->names);
}

void pr_decoder_free(pr_decoder *d)
{
    if (!d)
        return;
    for (size_t i = 0; i < d->nrels; i++)
        rel_clear(&d->rels[i]);
    free(d->rels);
    free(d->out);
    free(d->oldv);
    free(d->newv);
    free(d->ptrs);
    free(d->offs);
    sl_buf_free(&d->text);
    free(d);
}

const pr_change *pr_decoded(const pr_decoder *d, size_t i)
{
    return &d->out[i];
}

int pr_decoder_in_txn(const pr_decoder *d)
{
    return d->in_txn;
}

static pr_rel *find_rel(pr_decoder *d, uint32_t id)
{
    if (d->last < d->nrels && d->rels[d->last].id == id)
        return &d->rels[d->last];
    for (size_t i = 0; i < d->nrels; i++)
        if (d->rels[i].id == id)
            return &d->rels[d->last = i];
    return NULL;
}

/* The relation id of a change, which an 'R' message must have announced. */
static pr_rel *rd_rel(rd *r, pr_decoder *d)
{
    uint32_t id = (uint32_t)rd_be(r, 4, "relation id");
    if (r->failed)
        return NULL;
    pr_rel *rel = find_rel(d, id);
    if (!rel)
        rd_fail(r, "relation id %u was never announced (no Relation message)", (unsigned)id);
    return rel;
}

/* Room for n changes, and for key values of up to nkey columns. */
static int reserve(pr_decoder *d, size_t n, size_t nkey)
{
    if (n > d->capout) {
        pr_change *o = realloc(d->out, n * sizeof *o);
        if (!o)
            return -1;
        d->out = o, d->capout = n;
    }
    if (nkey > d->capkey) {
        pr_val *a = realloc(d->oldv, nkey * sizeof *a);
        if (a)
            d->oldv = a;
        pr_val *b = a ? realloc(d->newv, nkey * sizeof *b) : NULL;
        if (b)
            d->newv = b;
        const char **p = b ? realloc(d->ptrs, 2 * nkey * sizeof *p) : NULL;
        if (p)
            d->ptrs = p;
        size_t *o = p ? realloc(d->offs, 2 * nkey * sizeof *o) : NULL;
        if (!o)
            return -1;
        d->offs = o, d->capkey = nkey;
    }
    return 0;
}

/* 'R': replaces any relation of the same id (its schema changed). */
static int decode_relation(rd *r, pr_decoder *d)
{
    pr_rel rel = {.id = (uint32_t)rd_be(r, 4, "relation id")};
    const char *schema = rd_str(r, "namespace"), *table = rd_str(r, "relation name");
    rd_be(r, 1, "replica identity");
    size_t ncols = rd_be(r, 2, "column count");
    if (r->failed)
        return -1;
    if (ncols > PR_MAX_COLS)
        return rd_fail(r, "%zu columns, more than PostgreSQL's %d", ncols, PR_MAX_COLS);
    /* first pass: bounds and the key's size; the names stay in the message */
    size_t start = r->off, nkey = 0, bytes = strlen(schema) + strlen(table) + 2;
    for (size_t i = 0; i < ncols && !r->failed; i++) {
        int flags = (int)rd_be(r, 1, "column flags");
        const char *name = rd_str(r, "column name");
        rd_be(r, 8, "column type and modifier");
        if (flags & 1)
            nkey++, bytes += strlen(name) + 1;
    }
    if (rd_end(r))
        return -1;
    rel.ncols = (uint16_t)ncols;
    rel.nkey = nkey;
    rel.names = malloc(bytes);
    rel.keycol = malloc((nkey ? nkey : 1) * sizeof *rel.keycol);
    rel.keyname = malloc((nkey ? nkey : 1) * sizeof *rel.keyname);
    if (!rel.names || !rel.keycol || !rel.keyname || reserve(d, 1, nkey))
        goto oom;
    char *w = rel.names;
    rel.schema = strcpy(w, schema), w += strlen(schema) + 1;
    rel.table = strcpy(w, table), w += strlen(table) + 1;
    r->off = start;
    for (size_t i = 0, k = 0; i < ncols; i++) {
        int flags = (int)rd_be(r, 1, "column flags");
        const char *name = rd_str(r, "column name");
        rd_be(r, 8, "column type and modifier");
        if (flags & 1) {
            rel.keycol[k] = (uint16_t)i;
            rel.keyname[k++] = strcpy(w, name);
            w += strlen(name) + 1;
        }
    }
    pr_rel *old = find_rel(d, rel.id);
    if (old) {
        rel_clear(old);
        *old = rel;
        return 0;
    }
    if (d->nrels == d->caprels) {
        size_t cap = d->caprels ? 2 * d->caprels : 8;
        pr_rel *a = realloc(d->rels, cap * sizeof *a);
        if (!a)
            goto oom;
        d->rels = a, d->caprels = cap;
    }
    d->rels[d->nrels++] = rel;
    return 0;
oom:
    rel_clear(&rel);
    return sl_err_setc(r->err, SL_INTERNAL, "out of memory");
}

/* A TupleData: its key columns' values into v (rel->nkey of them), the
 * other columns only checked. */
static int decode_tuple(rd *r, const pr_rel *rel, pr_val *v)
{
    size_t ncols = rd_be(r, 2, "tuple column count"), k = 0;
    if (r->failed)
        return -1;
    if (ncols > rel->ncols)
        return rd_fail(r, "a tuple of %zu columns for a relation of %u", ncols,
                       (unsigned)rel->ncols);
    for (size_t i = 0; i < ncols && !r->failed; i++) {
        pr_val x = {.kind = (char)rd_be(r, 1, "column kind")};
        if (x.kind == 't' || x.kind == 'b') {
            x.len = (uint32_t)rd_be(r, 4, "value length");
            x.p = rd_take(r, x.len, "value");
        } else if (x.kind != 'n' && x.kind != 'u' && !r->failed) {
            return rd_fail(r, "column %zu has kind byte 0x%02x, not n, u, t or b", i + 1,
                           (unsigned)(uint8_t)x.kind);
        }
        if (k < rel->nkey && rel->keycol[k] == i)
            v[k++] = x;
    }
    if (!r->failed && k < rel->nkey)
        return rd_fail(r, "a tuple of %zu columns lacks key column %u", ncols,
                       (unsigned)rel->keycol[k] + 1);
    return r->failed ? -1 : 0;
}

/* Copies the key values v into d->text and points ptrs at them. Values may
 * not be binary or unchanged-TOAST (no text to give), nor hold a NUL. */
static int key_text(rd *r, pr_decoder *d, const pr_rel *rel, const pr_val *v, size_t *offs)
{
    for (size_t k = 0; k < rel->nkey; k++) {
        if (v[k].kind == 'b' || v[k].kind == 'u')
            return rd_fail(r, "key column \"%s\" is %s", rel->keyname[k],
                           v[k].kind == 'b' ? "binary, where text was asked for"
                                            : "an unchanged TOAST value, with no old key to take");
        offs[k] = SIZE_MAX;
        if (v[k].kind == 'n')
            continue;
        if (memchr(v[k].p, 0, v[k].len))
            return rd_fail(r, "key column \"%s\" holds a NUL byte", rel->keyname[k]);
        offs[k] = d->text.len;
        if (sl_buf_append(&d->text, v[k].p, v[k].len) || sl_buf_putc(&d->text, 0))
            return sl_err_setc(r->err, SL_INTERNAL, "out of memory");
    }
    return 0;
}

static int same_val(const pr_val *a, const pr_val *b)
{
    return a->kind == b->kind && a->len == b->len && (!a->len || !memcmp(a->p, b->p, a->len));
}

/* 'I', 'U', 'D': one change with the row's key (and an update's old key
 * when it changed). */
static int decode_row(rd *r, pr_decoder *d, char type)
{
    pr_rel *rel = rd_rel(r, d);
    if (!rel)
        return -1;
    if (reserve(d, 1, rel->nkey))
        return sl_err_setc(r->err, SL_INTERNAL, "out of memory");
    int has_old = 0;
    char sub = (char)rd_be(r, 1, "tuple type");
    if (type != 'I' && (sub == 'K' || sub == 'O')) {
        if (decode_tuple(r, rel, d->oldv))
            return -1;
        has_old = 1;
        if (type == 'U')
            sub = (char)rd_be(r, 1, "tuple type");
    }
    if (r->failed)
        return -1;
    if (type == 'D' && !has_old)
        return rd_fail(r, "a delete without its old key ('K' or 'O')");
    if (type != 'D') {
        if (sub != 'N')
            return rd_fail(r, "expected a new tuple 'N', found byte 0x%02x at %zu",
                           (unsigned)(uint8_t)sub, r->off - 1);
        if (decode_tuple(r, rel, d->newv))
            return -1;
    }
    if (rd_end(r))
        return -1;
    pr_val *key = type == 'D' ? d->oldv : d->newv;
    int key_changed = 0;
    if (type == 'U' && has_old)
        for (size_t k = 0; k < rel->nkey; k++) {
            /* an unchanged TOAST key is logged in the old key: take it */
            if (key[k].kind == 'u')
                key[k] = d->oldv[k];
            key_changed |= !same_val(&key[k], &d->oldv[k]);
        }
    size_t *offs = d->offs;
    sl_buf_reset(&d->text);
    if (key_text(r, d, rel, key, offs) ||
        (key_changed && key_text(r, d, rel, d->oldv, offs + rel->nkey)))
        return -1;
    for (size_t k = 0; k < (key_changed ? 2 : 1) * rel->nkey; k++)
        d->ptrs[k] = offs[k] == SIZE_MAX ? NULL : (const char *)d->text.p + offs[k];
    d->out[0] = (pr_change){
        .kind = type == 'I'   ? PR_INSERT
                : type == 'U' ? PR_UPDATE
                              : PR_DELETE,
        .schema = rel->schema,
        .table = rel->table,
        .nkey = rel->nkey,
        .key_names = rel->keyname,
        .key = d->ptrs,
        .old_key = key_changed ? d->ptrs + rel->nkey : NULL,
        .commit_lsn = d->commit_lsn,
        .xid = d->xid,
        .commit_time_ms = d->commit_time_ms,
    };
    return 1;
}

/* 'T': one change per table truncated. */
static int decode_truncate(rd *r, pr_decoder *d)
{
    size_t n = rd_be(r, 4, "relation count");
    rd_be(r, 1, "options");
    if (r->failed)
        return -1;
    if (n > (r->n - r->off) / 4)
        return rd_fail(r, "%zu relations in %zu bytes", n, r->n - r->off);
    if (reserve(d, n, 0))
        return sl_err_setc(r->err, SL_INTERNAL, "out of memory");
    for (size_t i = 0; i < n; i++) {
        pr_rel *rel = rd_rel(r, d);
        if (!rel)
            return -1;
        d->out[i] = (pr_change){.kind = PR_TRUNCATE,
                                .schema = rel->schema,
                                .table = rel->table,
                                .commit_lsn = d->commit_lsn,
                                .xid = d->xid,
                                .commit_time_ms = d->commit_time_ms};
    }
    return rd_end(r) ? -1 : (int)n;
}

static const char *msg_name(char t)
{
    switch (t) {
    case 'B':
        return "pgoutput begin";
    case 'C':
        return "pgoutput commit";
    case 'O':
        return "pgoutput origin";
    case 'R':
        return "pgoutput relation";
    case 'Y':
        return "pgoutput type";
    case 'I':
        return "pgoutput insert";
    case 'U':
        return "pgoutput update";
    case 'D':
        return "pgoutput delete";
    case 'T':
        return "pgoutput truncate";
    case 'M':
        return "pgoutput logical decoding";
    default:
        return "pgoutput unknown";
    }
}

/* One pgoutput message: the changes it yields (0 for the others). */
static int decode_pgoutput(pr_decoder *d, const uint8_t *p, size_t n, sl_err *err)
{
    char t = (char)p[0];
    rd r = {.p = p, .n = n, .off = 1, .what = msg_name(t), .err = err};
    int in_txn_only = t == 'I' || t == 'U' || t == 'D' || t == 'T' || t == 'C';
    if (in_txn_only && !d->in_txn)
        return rd_fail(&r, "outside a transaction (no Begin before it)");
    switch (t) {
    case 'B': {
        if (d->in_txn)
            return rd_fail(&r, "a Begin inside a transaction");
        pr_lsn lsn = rd_be(&r, 8, "final LSN");
        int64_t ts = (int64_t)rd_be(&r, 8, "commit time");
        uint32_t xid = (uint32_t)rd_be(&r, 4, "xid");
        if (rd_end(&r))
            return -1;
        d->in_txn = 1, d->commit_lsn = lsn, d->xid = xid;
        d->commit_time_ms = (ts + PG_EPOCH_US) / 1000;
        return 0;
    }
    case 'C': {
        rd_be(&r, 1, "flags");
        pr_lsn lsn = rd_be(&r, 8, "commit LSN"), end = rd_be(&r, 8, "end LSN");
        rd_be(&r, 8, "commit time");
        if (rd_end(&r))
            return -1;
        if (lsn != d->commit_lsn) {
            return rd_fail(&r, "commit LSN " PR_LSN_FMT " is not its Begin's " PR_LSN_FMT,
                           PR_LSN_ARGS(lsn), PR_LSN_ARGS(d->commit_lsn));
        }
        if (reserve(d, 1, 0))
            return sl_err_setc(err, SL_INTERNAL, "out of memory");
        d->in_txn = 0;
        d->out[0] = (pr_change){.kind = PR_COMMIT,
                                .commit_lsn = lsn,
                                .end_lsn = end,
                                .xid = d->xid,
                                .commit_time_ms = d->commit_time_ms};
        return 1;
    }
    case 'R':
        return decode_relation(&r, d);
    case 'I':
    case 'U':
    case 'D':
        return decode_row(&r, d, t);
    case 'T':
        return decode_truncate(&r, d);
    case 'O': /* a replicated transaction's origin: nothing for us */
        rd_be(&r, 8, "origin LSN");
        rd_str(&r, "origin name");
        return rd_end(&r);
    case 'Y': /* a type's name, for binary consumers: nothing for us */
        rd_be(&r, 4, "type id");
        rd_str(&r, "namespace");
        rd_str(&r, "type name");
        return rd_end(&r);
    case 'M': { /* pg_logical_emit_message (only with messages 'true') */
        rd_be(&r, 1, "flags");
        rd_be(&r, 8, "LSN");
        rd_str(&r, "prefix");
        size_t len = rd_be(&r, 4, "content length");
        rd_take(&r, len, "content");
        return rd_end(&r);
    }
    default:
        /* streaming and two-phase messages need options we never send */
        return sl_err_setc(err, SL_INTERNAL,
                           "pgoutput message of %zu bytes: unexpected type byte 0x%02x", n,
                           (unsigned)p[0]);
    }
}

int pr_decode(pr_decoder *d, const uint8_t *buf, size_t n, pr_frame *frame, sl_err *err)
{
    pr_frame f = {0};
    rd r = {.p = buf, .n = n, .what = "replication", .err = err};
    f.type = (char)rd_be(&r, 1, "message type");
    if (r.failed)
        return -1;
    if (f.type == 'k') {
        r.what = "keepalive";
        f.wal_end = rd_be(&r, 8, "WAL end");
        rd_be(&r, 8, "send time");
        f.reply = (int)rd_be(&r, 1, "reply flag");
        if (rd_end(&r))
            return -1;
        if (frame)
            *frame = f;
        return 0;
    }
    if (f.type != 'w')
        return sl_err_setc(err, SL_INTERNAL,
                           "replication message of %zu bytes: unexpected type byte 0x%02x", n,
                           (unsigned)buf[0]);
    r.what = "XLogData";
    f.wal_start = rd_be(&r, 8, "WAL start");
    f.wal_end = rd_be(&r, 8, "WAL end");
    rd_be(&r, 8, "send time");
    if (!r.failed && r.off == n)
        rd_fail(&r, "no pgoutput message after the %zu-byte header", r.off);
    if (r.failed)
        return -1;
    f.msg = (char)buf[r.off];
    if (frame)
        *frame = f;
    return decode_pgoutput(d, buf + r.off, n - r.off, err);
}

/* ---- connections -------------------------------------------------------- */

static void drop_notice(void *arg, const char *message)
{
    (void)arg, (void)message;
}

static void first_line(const char *msg, char *out, size_t cap)
{
    size_t n = strcspn(msg, "\n");
    if (n >= cap)
        n = cap - 1;
    memcpy(out, msg, n);
    out[n] = '\0';
}

/* Names are sluice's own: plain, so they need no quoting in the
 * replication grammar's string literals (which know no E'' escapes). */
static int check_name(const char *name, const char *what, sl_err *err)
{
    size_t n = name ? strlen(name) : 0;
    if (n < 1 || n > 63 || strspn(name, "abcdefghijklmnopqrstuvwxyz0123456789_") != n)
        return sl_err_setc(err, SL_INVALID,
                           "%s name \"%.80s\" must be 1 to 63 characters of a-z, 0-9 and _", what,
                           name ? name : "");
    return 0;
}

/* A connection to dsn (a replication=database one when replication), with
 * sluice's defaults under the DSN's own settings; name gets
 * postgresql://user@host:port/db. NULL with err set, one line, no password. */
static PGconn *connect_pg(const char *dsn, int replication, char *name, size_t cap, sl_err *err)
{
    char *perr = NULL, timeout[16] = "";
    if (dsn_check_uri(dsn, "invalid connection string", err))
        return NULL;
    PQconninfoOption *opts = PQconninfoParse(dsn, &perr);
    if (!opts) {
        sl_err_setc(err, SL_INVALID, "invalid connection string: %s",
                    perr ? dsn_parse_hint(perr) : "out of memory");
        PQfreemem(perr);
        return NULL;
    }
    for (PQconninfoOption *o = opts; o->keyword; o++)
        if (!strcmp(o->keyword, "connect_timeout") && o->val)
            snprintf(timeout, sizeof timeout, "%s", o->val);
    PQconninfoFree(opts);
    const char *keys[5] = {"fallback_application_name"}, *vals[5] = {"sluice"};
    int nk = 1;
    if (!timeout[0] && !getenv("PGCONNECT_TIMEOUT")) {
        snprintf(timeout, sizeof timeout, "%d", CONN_CONNECT_TIMEOUT_S);
        keys[nk] = "connect_timeout", vals[nk++] = timeout;
    }
    keys[nk] = "dbname", vals[nk++] = dsn;
    if (replication) /* after dbname: it overrides what the DSN says */
        keys[nk] = "replication", vals[nk++] = "database";
    keys[nk] = vals[nk] = NULL;
    PGconn *pg = PQconnectdbParams(keys, vals, 1);
    if (!pg || PQstatus(pg) != CONNECTION_OK) {
        char line[400];
        const char *m = pg ? PQerrorMessage(pg) : "out of memory";
        snprintf(line, sizeof line, "cannot connect to PostgreSQL: ");
        first_line(m, line + strlen(line), sizeof line - strlen(line));
        if (pg)
            dsn_scrub_secret(line, sizeof line, PQpass(pg));
        dsn_scrub(line, sizeof line, dsn);
        sl_err_setc(err,
                    !pg                   ? SL_INTERNAL
                    : dsn_auth_refused(m) ? SL_AUTH
                                          : SL_DATABASE,
                    "%s", line);
        PQfinish(pg);
        return NULL;
    }
    PQsetNoticeProcessor(pg, drop_notice, NULL);
    snprintf(name, cap, "postgresql://%s@%s:%s/%s", PQuser(pg), PQhost(pg), PQport(pg), PQdb(pg));
    dsn_scrub_secret(name, cap, PQpass(pg));
    return pg;
}

/* Waits up to ms for something to read: 1 when there is, 0 on timeout. */
static int wait_socket(PGconn *pg, int ms)
{
    struct pollfd pf = {.fd = PQsocket(pg), .events = POLLIN};
    if (pf.fd < 0)
        return 1; /* broken: libpq will say so */
    int r;
    while ((r = poll(&pf, 1, ms)) < 0 && errno == EINTR) {
    }
    return r != 0;
}

/* The sl_code of a failed statement, from its SQLSTATE (as connectors/pg.c
 * maps them; 42704 is a missing slot). */
static int state_code(PGconn *pg, const PGresult *res)
{
    const char *st = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    if (!st || strlen(st) != 5 || PQstatus(pg) != CONNECTION_OK)
        return SL_DATABASE;
    if (!strncmp(st, "28", 2) || !strcmp(st, "42501"))
        return SL_AUTH;
    if (!strcmp(st, "42P01") || !strcmp(st, "42704") || !strcmp(st, "3F000"))
        return SL_NOT_FOUND;
    if (!strncmp(st, "42", 2) || !strncmp(st, "22", 2))
        return SL_INVALID;
    if (!strcmp(st, "55006") || !strcmp(st, "53400") || !strncmp(st, "40", 2))
        return SL_BUSY;
    return SL_DATABASE;
}

static int query_error(PGconn *pg, const PGresult *res, const char *name, const char *doing,
                       sl_err *err)
{
    char line[400];
    first_line(res ? PQresultErrorMessage(res) : PQerrorMessage(pg), line, sizeof line);
    if (!line[0])
        first_line(PQerrorMessage(pg), line, sizeof line);
    if (!line[0])
        snprintf(line, sizeof line, "no answer within %d s", CONN_READ_TIMEOUT_MS / 1000);
    dsn_scrub_secret(line, sizeof line, PQpass(pg));
    return sl_err_setc(err, state_code(pg, res), "%s: %s: %s", name, doing, line);
}

/* Runs sql with text params (np < 0: as a simple query, the only kind a
 * walsender takes) and returns its last result (NULL when sending
 * failed or the server stayed silent for CONN_READ_TIMEOUT_MS). libpq has
 * no read timeout of its own. */
static PGresult *run(PGconn *pg, const char *sql, int np, const char *const *params)
{
    if (!(np < 0 ? PQsendQuery(pg, sql)
                 : PQsendQueryParams(pg, sql, np, NULL, params, NULL, NULL, 0)))
        return NULL;
    PGresult *last = NULL, *r;
    for (;;) {
        while (PQisBusy(pg) && PQstatus(pg) == CONNECTION_OK) {
            if (!wait_socket(pg, CONN_READ_TIMEOUT_MS)) {
                PQclear(last);
                return NULL;
            }
            PQconsumeInput(pg);
        }
        if (!(r = PQgetResult(pg)))
            return last;
        if (last && PQresultStatus(last) == PGRES_FATAL_ERROR) {
            PQclear(r);
            continue;
        }
        PQclear(last);
        last = r;
    }
}

/* run that expects success: 0, or -1 with err set. *out (may be NULL) gets
 * the result to PQclear. */
static int run_ok(PGconn *pg, const char *sql, int np, const char *const *params, const char *name,
                  const char *doing, PGresult **out, sl_err *err)
{
    PGresult *r = run(pg, sql, np, params);
    int st = PQresultStatus(r);
    if (!r || (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)) {
        query_error(pg, r, name, doing, err);
        PQclear(r);
        return -1;
    }
    if (out)
        *out = r;
    else
        PQclear(r);
    return 0;
}

static int parse_lsn(const char *s, pr_lsn *lsn)
{
    unsigned hi, lo;
    if (sscanf(s, "%X/%X", &hi, &lo) != 2)
        return -1;
    *lsn = (pr_lsn)hi << 32 | lo;
    return 0;
}

/* "schema.table" or "table" as quoted identifiers, appended to b. */
static int quote_table(PGconn *pg, sl_buf *b, const char *t)
{
    const char *dot = strchr(t, '.');
    size_t n = dot ? (size_t)(dot - t) : strlen(t);
    char *a = PQescapeIdentifier(pg, t, n);
    char *c = dot ? PQescapeIdentifier(pg, dot + 1, strlen(dot + 1)) : NULL;
    int r = -1;
    if (a && (!dot || c))
        r = sl_buf_printf(b, "%s%s%s", a, dot ? "." : "", dot ? c : "");
    PQfreemem(a);
    PQfreemem(c);
    return r;
}

int pr_setup(const char *dsn, const char *name, const char *const *tables, size_t n, pr_lsn *lsn,
             sl_err *err)
{
    if (check_name(name, "publication and slot", err))
        return -1;
    if (n == 0)
        return sl_err_setc(err, SL_INVALID, "publication \"%s\": no tables given", name);
    char cn[256];
    PGconn *pg = connect_pg(dsn, 0, cn, sizeof cn, err);
    if (!pg)
        return -1;
    sl_buf sql = {0};
    int rc = -1;
    char *pub = PQescapeIdentifier(pg, name, strlen(name));
    if (!pub || sl_buf_printf(&sql, "CREATE PUBLICATION %s FOR TABLE ", pub)) {
        sl_err_setc(err, SL_INTERNAL, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < n; i++)
        if ((i && sl_buf_append(&sql, ", ", 2)) || quote_table(pg, &sql, tables[i])) {
            sl_err_setc(err, SL_INTERNAL, "out of memory");
            goto done;
        }
    if (sl_buf_putc(&sql, 0) ||
        run_ok(pg, (char *)sql.p, 0, NULL, cn, "creating the publication", NULL, err))
        goto done;
    /* a separate statement: a slot cannot be created in a transaction
     * that wrote (the publication) */
    PGresult *r = NULL;
    const char *p[1] = {name};
    if (run_ok(pg, "SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')", 1, p,
               cn, "creating the replication slot", &r, err)) {
        sl_buf_reset(&sql);
        if (!sl_buf_printf(&sql, "DROP PUBLICATION IF EXISTS %s", pub))
            PQclear(run(pg, (char *)sql.p, 0, NULL));
        goto done;
    }
    pr_lsn at = 0;
    if (PQntuples(r) != 1 || parse_lsn(PQgetvalue(r, 0, 0), &at))
        sl_err_setc(err, SL_DATABASE, "%s: creating the replication slot: no LSN returned", cn);
    else
        rc = 0;
    PQclear(r);
    if (lsn)
        *lsn = at;
done:
    PQfreemem(pub);
    sl_buf_free(&sql);
    PQfinish(pg);
    return rc;
}

static void nap_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

int pr_teardown(const char *dsn, const char *name, sl_err *err)
{
    if (check_name(name, "publication and slot", err))
        return -1;
    char cn[256];
    PGconn *pg = connect_pg(dsn, 0, cn, sizeof cn, err);
    if (!pg)
        return -1;
    const char *p[1] = {name};
    int rc = -1;
    /* a terminated backend lets go of its slot a moment later, and a
     * client may reconnect to it meanwhile: retry for up to 10 s */
    for (int tries = 0;; tries++) {
        PGresult *r = NULL;
        if (run_ok(pg,
                   "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
                   "WHERE slot_name = $1 AND active_pid IS NOT NULL",
                   1, p, cn, "stopping the slot's stream", NULL, err) ||
            run_ok(pg, "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1", 1, p, cn,
                   "looking for the slot", &r, err))
            goto done;
        int exists = PQntuples(r) > 0;
        PQclear(r);
        if (!exists)
            break;
        r = run(pg, "SELECT pg_drop_replication_slot($1)", 1, p);
        int st = PQresultStatus(r);
        const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
        int busy = state && !strcmp(state, "55006"), gone = state && !strcmp(state, "42704");
        if (r && (st == PGRES_TUPLES_OK || gone)) {
            PQclear(r);
            break;
        }
        if (!busy || tries >= 100) {
            query_error(pg, r, cn, "dropping the replication slot", err);
            PQclear(r);
            goto done;
        }
        PQclear(r);
        nap_ms(100);
    }
    char *pub = PQescapeIdentifier(pg, name, strlen(name));
    sl_buf sql = {0};
    if (!pub || sl_buf_printf(&sql, "DROP PUBLICATION IF EXISTS %s", pub))
        sl_err_setc(err, SL_INTERNAL, "out of memory");
    else
        rc = run_ok(pg, (char *)sql.p, 0, NULL, cn, "dropping the publication", NULL, err);
    PQfreemem(pub);
    sl_buf_free(&sql);
done:
    PQfinish(pg);
    return rc;
}

int pr_orphaned(const char *dsn, const char *prefix, char ***names, size_t *n, sl_err *err)
{
    *names = NULL, *n = 0;
    char cn[256];
    PGconn *pg = connect_pg(dsn, 0, cn, sizeof cn, err);
    if (!pg)
        return -1;
    PGresult *r = NULL;
    const char *p[1] = {prefix ? prefix : ""};
    /* left() rather than LIKE: '_' in a prefix is no wildcard */
    int rc = run_ok(pg,
                    "SELECT slot_name FROM pg_replication_slots WHERE slot_type = 'logical' "
                    "AND plugin = 'pgoutput' AND NOT active AND database = current_database() "
                    "AND left(slot_name, length($1)) = $1 ORDER BY 1",
                    1, p, cn, "listing replication slots", &r, err);
    if (rc == 0) {
        size_t k = (size_t)PQntuples(r);
        *names = calloc(k ? k : 1, sizeof **names);
        for (size_t i = 0; *names && i < k; i++)
            if (!((*names)[i] = strdup(PQgetvalue(r, (int)i, 0)))) {
                pr_names_free(*names, i);
                *names = NULL;
            }
        if (!*names)
            rc = sl_err_setc(err, SL_INTERNAL, "out of memory");
        else
            *n = k;
    }
    PQclear(r);
    PQfinish(pg);
    return rc;
}

void pr_names_free(char **names, size_t n)
{
    for (size_t i = 0; names && i < n; i++)
        free(names[i]);
    free(names);
}

/* ---- the stream --------------------------------------------------------- */

struct pr_stream {
    PGconn *pg;
    pr_decoder *d;
    size_t nout, iout;   /* the last message's changes, and how many were returned */
    pr_lsn received;     /* the furthest WAL start of an XLogData */
    pr_lsn confirmed;    /* flushed, as reported to the server */
    pr_lsn delivered;    /* the end_lsn of the last PR_COMMIT returned */
    pr_lsn server_end;   /* the server's WAL end, as it last said */
    int64_t next_status; /* sl_now_ms() when a status update is due */
    char name[256];
};

const char *pr_name(const pr_stream *s)
{
    return s->name;
}

static int stream_error(pr_stream *s, const char *doing, sl_err *err)
{
    return query_error(s->pg, NULL, s->name, doing, err);
}

/* 'r' Standby Status Update: written, flushed and applied positions. */
static int send_status(pr_stream *s, sl_err *err)
{
    uint8_t m[34];
    pr_lsn v[4] = {s->received > s->confirmed ? s->received : s->confirmed, s->confirmed,
                   s->confirmed, (pr_lsn)(sl_wall_ms() * 1000 - PG_EPOCH_US)};
    m[0] = 'r';
    for (int i = 0; i < 4; i++)
        for (int b = 0; b < 8; b++)
            m[1 + 8 * i + b] = (uint8_t)(v[i] >> (56 - 8 * b));
    m[33] = 0;
    if (PQputCopyData(s->pg, (const char *)m, sizeof m) != 1 || PQflush(s->pg) != 0)
        return stream_error(s, "sending a status update", err);
    s->next_status = sl_now_ms() + PR_STATUS_EVERY_MS;
    return 0;
}

pr_stream *pr_open(const char *dsn, const char *slot, const char *publication, pr_lsn start_lsn,
                   sl_err *err)
{
    if (check_name(slot, "slot", err) || check_name(publication, "publication", err))
        return NULL;
    pr_stream *s = calloc(1, sizeof *s);
    if (!s || !(s->d = pr_decoder_new())) {
        free(s);
        return sl_err_setc(err, SL_INTERNAL, "out of memory"), NULL;
    }
    if (!(s->pg = connect_pg(dsn, 1, s->name, sizeof s->name, err)))
        goto fail;
    /* the slot's confirmed position: status updates must never report
     * less (PostgreSQL 15 would move the slot back). A walsender takes
     * simple queries only; the name is plain (check_name). */
    char sql[300];
    snprintf(sql, sizeof sql,
             "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '%s'", slot);
    PGresult *r = run(s->pg, sql, -1, NULL);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
        if (PQresultStatus(r) == PGRES_TUPLES_OK)
            sl_err_setc(err, SL_NOT_FOUND, "%s: replication slot \"%s\" does not exist", s->name,
                        slot);
        else
            query_error(s->pg, r, s->name, "reading the slot's position", err);
        PQclear(r);
        goto fail;
    }
    pr_lsn flushed = 0;
    if (!PQgetisnull(r, 0, 0))
        parse_lsn(PQgetvalue(r, 0, 0), &flushed);
    PQclear(r);
    snprintf(sql, sizeof sql,
             "START_REPLICATION SLOT \"%s\" LOGICAL " PR_LSN_FMT
             " (proto_version '1', publication_names '\"%s\"')",
             slot, PR_LSN_ARGS(start_lsn), publication);
    r = NULL;
    if (PQsendQuery(s->pg, sql)) {
        while (PQisBusy(s->pg) && PQstatus(s->pg) == CONNECTION_OK &&
               wait_socket(s->pg, CONN_READ_TIMEOUT_MS))
            PQconsumeInput(s->pg);
        r = PQisBusy(s->pg) ? NULL : PQgetResult(s->pg);
    }
    if (PQresultStatus(r) != PGRES_COPY_BOTH) {
        char doing[120];
        snprintf(doing, sizeof doing, "starting replication from slot \"%s\"", slot);
        query_error(s->pg, r, s->name, doing, err);
        PQclear(r);
        goto fail;
    }
    PQclear(r);
    s->received = s->confirmed = start_lsn > flushed ? start_lsn : flushed;
    s->next_status = sl_now_ms() + PR_STATUS_EVERY_MS;
    return s;
fail:
    PQfinish(s->pg);
    pr_decoder_free(s->d);
    free(s);
    return NULL;
}

pr_lsn pr_server_lsn(const pr_stream *s)
{
    return s->server_end;
}

pr_lsn pr_confirmed_lsn(const pr_stream *s)
{
    return s->confirmed;
}

void pr_confirm(pr_stream *s, pr_lsn lsn)
{
    if (lsn > s->confirmed) {
        s->confirmed = lsn;
        s->next_status = 0; /* report it at the next chance */
    }
}

/* One CopyData message from the server. */
static int on_message(pr_stream *s, const uint8_t *buf, size_t n, sl_err *err)
{
    pr_frame f;
    int k = pr_decode(s->d, buf, n, &f, err);
    if (k < 0)
        return sl_err_wrap(err, "%s", s->name);
    s->nout = (size_t)k, s->iout = 0;
    if (f.type == 'w' && f.wal_start > s->received)
        s->received = f.wal_start;
    if ((f.type == 'w' || f.type == 'k') && f.wal_end > s->server_end)
        s->server_end = f.wal_end;
    if (f.type == 'k') {
        /* idle, and everything delivered is handled: nothing before the
         * server's WAL end remains for us, so the slot may move on */
        if (!pr_decoder_in_txn(s->d) && s->confirmed >= s->delivered && f.wal_end > s->confirmed)
            s->confirmed = f.wal_end;
        if (f.reply)
            s->next_status = 0;
    }
    return 0;
}

int pr_next(pr_stream *s, int timeout_ms, pr_change *out, sl_err *err)
{
    int64_t deadline = sl_now_ms() + (timeout_ms > 0 ? timeout_ms : 0);
    for (;;) {
        if (s->iout < s->nout) {
            *out = *pr_decoded(s->d, s->iout++);
            if (out->kind == PR_COMMIT)
                s->delivered = out->end_lsn;
            return 1;
        }
        if (sl_now_ms() >= s->next_status && send_status(s, err))
            return -1;
        char *buf = NULL;
        int n = PQgetCopyData(s->pg, &buf, 1);
        if (n > 0) {
            int rc = on_message(s, (const uint8_t *)buf, (size_t)n, err);
            PQfreemem(buf);
            if (rc)
                return -1;
            continue;
        }
        if (n == -1) {
            /* the why (an ErrorResponse) may still be on its way: wait for
             * it a little, not for ever */
            while (PQisBusy(s->pg) && wait_socket(s->pg, 5000) && PQconsumeInput(s->pg)) {
            }
            PGresult *r = PQisBusy(s->pg) ? NULL : PQgetResult(s->pg);
            query_error(s->pg, r, s->name, "the server ended the replication stream", err);
            PQclear(r);
            return -1;
        }
        if (n < 0)
            return stream_error(s, "reading the replication stream", err);
        int64_t now = sl_now_ms();
        if (now >= deadline)
            return 0;
        int64_t wait = (s->next_status < deadline ? s->next_status : deadline) - now;
        if (wait > 0 && wait_socket(s->pg, (int)wait) && !PQconsumeInput(s->pg))
            return stream_error(s, "reading the replication stream", err);
    }
}

void pr_free(pr_stream *s)
{
    if (!s)
        return;
    sl_err e = {0};
    /* the last word is the confirmed position, then CopyDone; the server
     * answers with its own CopyDone and CommandComplete, awaited for at
     * most 5 s (a dead server only delays the close) */
    if (PQstatus(s->pg) == CONNECTION_OK && send_status(s, &e) == 0 &&
        PQputCopyEnd(s->pg, NULL) == 1 && PQflush(s->pg) == 0) {
        int64_t deadline = sl_now_ms() + 5000;
        for (;;) {
            char *buf;
            int n = PQgetCopyData(s->pg, &buf, 1);
            if (n > 0) {
                PQfreemem(buf);
                continue;
            }
            if (n == -1 && !PQisBusy(s->pg)) {
                PGresult *r = PQgetResult(s->pg);
                if (!r)
                    break;
                PQclear(r);
                continue;
            }
            int64_t left = deadline - sl_now_ms();
            if (n < -1 || left <= 0 || !wait_socket(s->pg, (int)left) || !PQconsumeInput(s->pg))
                break;
        }
    }
    PQfinish(s->pg);
    pr_decoder_free(s->d);
    free(s);
}
