#include "report.h"

#include "../base/stats.h"

#include <errno.h>
#include <jansson.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../merkle/enc.h"

/* ---- collected report ---------------------------------------------------- */

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

static json_t *jstr(const char *s)
{
    return s ? json_string(s) : json_null();
}

/* ---- a row divergence, formatted as it comes ---------------------------- *
 * report_add writes each row divergence into the spill as the very text it
 * prints (a text line; a JSON object on one line), so the formatting runs
 * on the main thread during the job, beside the workers, and the end only
 * copies. What jansson would have refused (a NULL or a string not UTF-8: a
 * key value, a column) is left out as the report always left it out. The
 * text goes into r->body, reserved first for the worst case (every byte
 * escaped), then written with no check per piece. */

/* Whether s is valid UTF-8 as jansson checks it (json_string refuses other). */
static int utf8_ok(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        unsigned c = *p, n, v;
        if (c < 0x80) {
            p++;
            continue;
        }
        if (c < 0xC2 || c > 0xF4)
            return 0;
        n = c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
        v = c & (n == 2 ? 0x1F : n == 3 ? 0x0F : 0x07);
        for (unsigned i = 1; i < n; i++) {
            if ((p[i] & 0xC0) != 0x80)
                return 0;
            v = (v << 6) | (p[i] & 0x3F);
        }
        if ((n == 3 && v < 0x800) || (n == 4 && v < 0x10000) || v > 0x10FFFF ||
            (v >= 0xD800 && v <= 0xDFFF))
            return 0;
        p += n;
    }
    return 1;
}

static int col_ok(const co_coldiff *c)
{
    return c->column && utf8_ok(c->column) && (!c->source || utf8_ok(c->source)) &&
           (!c->target || utf8_ok(c->target)) && (!c->source_hash || utf8_ok(c->source_hash)) &&
           (!c->target_hash || utf8_ok(c->target_hash));
}

static inline void fb_put(sl_buf *b, const void *p, size_t n)
{
    memcpy(b->p + b->len, p, n);
    b->len += n;
}

static inline void fb_c(sl_buf *b, char c)
{
    b->p[b->len++] = (uint8_t)c;
}

static void fb_str(sl_buf *b, const char *s)
{
    fb_put(b, s, strlen(s));
}

/* a string literal, its length known at compile time */
#define FB_LIT(b, lit) fb_put((b), "" lit, sizeof(lit) - 1)

static size_t len0(const char *s)
{
    return s ? strlen(s) : 0;
}

/* The most bytes ev can format to: a string's bytes 6 times over (JSON's
 * \u00XX), room for the fixed text around each piece. */
static size_t row_bound(const report *r, const co_event *ev)
{
    size_t n = 256;
    for (size_t k = 0; k < ev->nkey; k++)
        n += 16 + 6 * (len0(ev->key_vals[k]) + (k < r->nkey ? len0(r->key_cols[k]) : 0));
    for (size_t k = 0; k < ev->ncols; k++) {
        const co_coldiff *c = &ev->cols[k];
        n += 256 + 6 * (len0(c->column) + len0(c->source) + len0(c->target) + len0(c->source_hash) +
                        len0(c->target_hash));
    }
    return n;
}

/* 'text' with '' doubled, the closing quote after end. */
static void fb_quoted(sl_buf *b, const char *v, size_t n, const char *end)
{
    fb_c(b, '\'');
    for (const char *p = v, *e = v + n; p < e;) {
        const char *q = memchr(p, '\'', (size_t)(e - p));
        size_t k = q ? (size_t)(q - p) + 1 : (size_t)(e - p);
        fb_put(b, p, k);
        if (q)
            fb_c(b, '\'');
        p += k;
    }
    fb_str(b, end);
    fb_c(b, '\'');
}

/* SQL-literal style: 'text' with '' doubled, NULL bare; a value cut short
 * (hash set) ends in an ellipsis and gives its full length and hash. */
static void fb_value(sl_buf *b, const char *v, const char *hash, uint64_t len)
{
    if (!v) {
        FB_LIT(b, "NULL");
        return;
    }
    if (!hash) {
        fb_quoted(b, v, strlen(v), "");
        return;
    }
    fb_quoted(b, v, strlen(v), "\u2026");
    char t[64];
    int n = snprintf(t, sizeof t, " (%lld bytes, xxh3 ", (long long)len);
    fb_put(b, t, (size_t)n);
    fb_str(b, hash);
    fb_c(b, ')');
}

static void fmt_row_text(const report *r, const co_event *ev, sl_buf *b)
{
    static const char pad[] = "                   ";
    if (ev->status == CO_TRANSIENT)
        FB_LIT(b, "transient ");
    const char *kind = co_kind_name(ev->kind);
    size_t kl = strlen(kind);
    fb_put(b, kind, kl);
    if (kl < 19) /* "%-18s " */
        fb_put(b, pad, 19 - kl);
    /* the values kept, paired with the key's columns in order */
    for (size_t k = 0, j = 0; k < ev->nkey && j < r->nkey; k++) {
        const char *v = ev->key_vals[k];
        if (!v || !utf8_ok(v))
            continue;
        size_t n = strlen(v);
        int numeric = n > 0;
        for (size_t i = 0; numeric && i < n; i++)
            if (!((v[i] >= '0' && v[i] <= '9') || (i == 0 && v[i] == '-')))
                numeric = 0;
        if (j)
            fb_c(b, ' ');
        fb_str(b, r->key_cols[j++]);
        fb_c(b, '=');
        if (numeric)
            fb_put(b, v, n);
        else
            fb_quoted(b, v, n, "");
    }
    for (size_t k = 0, j = 0; k < ev->ncols; k++) {
        const co_coldiff *c = &ev->cols[k];
        if (!col_ok(c))
            continue;
        if (j++)
            FB_LIT(b, "; ");
        else
            FB_LIT(b, "  ");
        fb_str(b, c->column);
        FB_LIT(b, ": ");
        fb_value(b, c->source, c->source_hash, c->source_len);
        FB_LIT(b, " -> ");
        fb_value(b, c->target, c->target_hash, c->target_len);
    }
    fb_c(b, '\n');
}

/* The bytes fb_jstr must escape: controls, '"' and '\\'. */
// clang-format off
static const uint8_t json_esc[256] = {
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    ['"'] = 1, ['\\'] = 1};
// clang-format on

/* A JSON string as jansson writes it (json_dumps without JSON_ENSURE_ASCII
 * or JSON_ESCAPE_SLASH): the report's bytes stay those it always printed;
 * NULL as null. */
static void fb_jstr(sl_buf *b, const char *s)
{
    if (!s) {
        FB_LIT(b, "null");
        return;
    }
    fb_c(b, '"');
    const unsigned char *u = (const unsigned char *)s;
    for (;;) {
        const unsigned char *run = u;
        while (*u && !json_esc[*u])
            u++;
        fb_put(b, run, (size_t)(u - run));
        if (!*u)
            break;
        char t[8];
        switch (*u) {
        case '"':
            FB_LIT(b, "\\\"");
            break;
        case '\\':
            FB_LIT(b, "\\\\");
            break;
        case '\b':
            FB_LIT(b, "\\b");
            break;
        case '\f':
            FB_LIT(b, "\\f");
            break;
        case '\n':
            FB_LIT(b, "\\n");
            break;
        case '\r':
            FB_LIT(b, "\\r");
            break;
        case '\t':
            FB_LIT(b, "\\t");
            break;
        default:
            snprintf(t, sizeof t, "\\u%04X", *u);
            fb_put(b, t, 6);
        }
        u++;
    }
    fb_c(b, '"');
}

/* One divergence as one line of the "divergences" array, 4 spaces deep,
 * spaced as Python's json.dumps spaces it: written directly, since ten
 * million of them would build and free ten million jansson objects. */
static void fmt_row_json(const report *r, const co_event *ev, sl_buf *b)
{
    static const char *const side[2][2] = {{"source_length", "source_hash"},
                                           {"target_length", "target_hash"}};
    FB_LIT(b, "    {\"kind\": ");
    fb_jstr(b, co_kind_name(ev->kind));
    FB_LIT(b, ", \"key\": {");
    for (size_t k = 0, j = 0; k < ev->nkey && j < r->nkey; k++) {
        const char *v = ev->key_vals[k];
        if (!v || !utf8_ok(v))
            continue;
        if (j)
            FB_LIT(b, ", ");
        fb_jstr(b, r->key_cols[j++]);
        FB_LIT(b, ": ");
        fb_jstr(b, v);
    }
    fb_c(b, '}');
    if ((uint8_t)ev->status) {
        FB_LIT(b, ", \"status\": ");
        fb_jstr(b, ev->status == CO_TRANSIENT ? "transient" : "confirmed");
    }
    if (ev->kind == CO_CHANGED && !r->keys_only) { /* --keys-only: no "columns" */
        FB_LIT(b, ", \"columns\": [");
        for (size_t k = 0, j = 0; k < ev->ncols; k++) {
            const co_coldiff *c = &ev->cols[k];
            if (!col_ok(c))
                continue;
            if (j++)
                FB_LIT(b, ", ");
            FB_LIT(b, "{\"column\": ");
            fb_jstr(b, c->column);
            FB_LIT(b, ", \"source\": ");
            fb_jstr(b, c->source);
            FB_LIT(b, ", \"target\": ");
            fb_jstr(b, c->target);
            /* a value cut short: its length and hash beside the first bytes */
            const char *hash[2] = {c->source_hash, c->target_hash};
            uint64_t len[2] = {c->source_len, c->target_len};
            for (int s = 0; s < 2; s++) {
                if (!hash[s])
                    continue;
                char t[96];
                int n = snprintf(t, sizeof t, ", \"%s\": %lld, \"%s\": ", side[s][0],
                                 (long long)len[s], side[s][1]);
                fb_put(b, t, (size_t)n);
                fb_jstr(b, hash[s]);
            }
            fb_c(b, '}');
        }
        fb_c(b, ']');
    }
    fb_c(b, '}');
}

/* ev as r prints it, into r->body. */
static int row_format(report *r, const co_event *ev)
{
    sl_buf_reset(&r->body);
    if (sl_buf_reserve(&r->body, row_bound(r, ev)))
        return -1;
    if (r->json)
        fmt_row_json(r, ev, &r->body);
    else
        fmt_row_text(r, ev, &r->body);
    return 0;
}

/* The spill: a private temporary file of records [u32 length][u8
 * transient][u8 kind][u8 status][u32 key length][key][text], in arrival
 * order, text being the row as it prints. Read back as it is when it is already in report order
 * (rows_each); otherwise sorted by SQLite, in a private temporary database ("": gone at close), so
 * neither way holds the divergences in memory. */
static int rows_open(report *r)
{
    const char *dir = getenv("TMPDIR");
    char path[4096];
    snprintf(path, sizeof path, "%s/sluice-report-XXXXXX", dir && *dir ? dir : "/tmp");
    int fd = mkstemp(path);
    if (fd < 0)
        return -1;
    unlink(path); /* private: gone when closed, whatever happens */
    if (!(r->spill = fdopen(fd, "w+"))) {
        close(fd);
        return -1;
    }
    setvbuf(r->spill, NULL, _IOFBF, 1 << 16);
    return 0;
}

static int spill_put(report *r, const co_event *ev, int transient)
{
    uint8_t h[7] = {(uint8_t)transient, (uint8_t)ev->kind, (uint8_t)ev->status};
    uint32_t klen = (uint32_t)ev->klen, len = 7 + klen + (uint32_t)r->body.len;
    memcpy(h + 3, &klen, 4);
    return fwrite_unlocked(&len, 4, 1, r->spill) != 1 || fwrite_unlocked(h, 7, 1, r->spill) != 1 ||
                   fwrite_unlocked(ev->key, 1, klen, r->spill) != klen ||
                   fwrite_unlocked(r->body.p, 1, r->body.len, r->spill) != r->body.len
               ? -1
               : 0;
}

/* The spill read back through its descriptor in blocks of a MiB, not
 * stdio's 4 KiB: the records are handed out where they lie in the block. */
typedef struct spill_rd {
    int fd;
    uint8_t *buf;
    size_t at, n, cap; /* the next record at buf + at, n bytes read */
} spill_rd;

#define SPILL_RD_BLOCK (1 << 20)

/* At least need bytes at rd->buf + rd->at, reading more: 0, or -1 at the
 * end of the file or on an error (*none: not a byte left). */
static int rd_fill(spill_rd *rd, size_t need, int *none)
{
    *none = 0;
    if (rd->n - rd->at >= need)
        return 0;
    if (rd->at) {
        memmove(rd->buf, rd->buf + rd->at, rd->n - rd->at);
        rd->n -= rd->at;
        rd->at = 0;
    }
    if (need > rd->cap) {
        size_t cap = need > SPILL_RD_BLOCK ? need : SPILL_RD_BLOCK;
        uint8_t *p = realloc(rd->buf, cap);
        if (!p)
            return -1;
        rd->buf = p;
        rd->cap = cap;
    }
    while (rd->n < need) {
        ssize_t got = read(rd->fd, rd->buf + rd->n, rd->cap - rd->n);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0) {
            *none = got == 0 && rd->n == 0;
            return -1;
        }
        rd->n += (size_t)got;
    }
    return 0;
}

/* Reads from off on. */
static int rd_seek(spill_rd *rd, uint64_t off)
{
    rd->at = rd->n = 0;
    return lseek(rd->fd, (off_t)off, SEEK_SET) == (off_t)off ? 0 : -1;
}

/* The next record (its length, 7 header bytes, key and text) at *rec, *len
 * bytes: 1, 0 at the end, -1 on a short read. */
static int spill_next(spill_rd *rd, const uint8_t **rec, uint32_t *len)
{
    int none;
    if (rd_fill(rd, 4, &none))
        return none ? 0 : -1;
    memcpy(len, rd->buf + rd->at, 4);
    if (*len < 7 || rd_fill(rd, 4 + (size_t)*len, &none))
        return -1;
    *rec = rd->buf + rd->at + 4;
    rd->at += 4 + (size_t)*len;
    return 1;
}

/* SQLite's order of two BLOBs: bytewise, then the shorter first. */
static int blob_cmp(const void *a, size_t na, const void *b, size_t nb)
{
    int c = memcmp(a, b, na < nb ? na : nb);
    return c ? c : na < nb ? -1 : na > nb;
}

/* ---- ordered runs ------------------------------------------------------ *
 * Divergences of one job come from several ranges at once, interleaved:
 * each range's in key order (co_event.run), the ranges disjoint. Noting
 * each run's first and last key and the stretches of the spill it wrote
 * (chunks: a new one at each switch between runs) lets rows_each read the
 * runs back one after the other, in the order of their first keys, with no
 * sort. Memory: a slot per run (ranges: thousands at most) and a chunk per
 * switch, bounded by RUNS_MAX_CHUNKS; past that, or at a row with no run,
 * the runs are dropped and the SQLite sort does it. */

#define RUNS_MAX_ID 1000000L
#define RUNS_MAX_CHUNKS 1000000

typedef struct report_run {
    sl_buf first, last;
    int seen, unordered; /* unordered: a key came below the one before */
} report_run;

typedef struct report_chunk {
    long run;
    uint64_t off, len; /* where in the spill, bytes */
} report_chunk;

static void runs_drop(report *r)
{
    for (size_t i = 0; i < r->nruns; i++) {
        sl_buf_free(&r->runs[i].first);
        sl_buf_free(&r->runs[i].last);
    }
    free(r->runs);
    free(r->chunks);
    r->runs = NULL;
    r->chunks = NULL;
    r->nruns = r->nchunks = r->capchunks = 0;
    r->no_runs = 1;
}

/* Notes a record of len bytes about to be spilled at r->spilled for ev. */
static void runs_note(report *r, const co_event *ev, uint64_t len)
{
    if (r->no_runs)
        return;
    if (ev->run < 0 || ev->run >= RUNS_MAX_ID || ev->status == CO_TRANSIENT) {
        runs_drop(r);
        return;
    }
    size_t id = (size_t)ev->run;
    if (id >= r->nruns) {
        size_t n = id + 1 > 2 * r->nruns ? id + 1 : 2 * r->nruns;
        report_run *v = realloc(r->runs, n * sizeof *v);
        if (!v) {
            runs_drop(r);
            return;
        }
        memset(v + r->nruns, 0, (n - r->nruns) * sizeof *v);
        r->runs = v;
        r->nruns = n;
    }
    report_run *u = &r->runs[id];
    if (!u->seen) {
        u->seen = 1;
        if (sl_buf_append(&u->first, ev->key, ev->klen)) {
            runs_drop(r);
            return;
        }
    } else if (blob_cmp(u->last.p, u->last.len, ev->key, ev->klen) > 0)
        u->unordered = 1;
    sl_buf_reset(&u->last);
    if (sl_buf_append(&u->last, ev->key, ev->klen)) {
        runs_drop(r);
        return;
    }
    if (r->nchunks && r->chunks[r->nchunks - 1].run == ev->run) {
        r->chunks[r->nchunks - 1].len += len;
        return;
    }
    if (r->nchunks == r->capchunks) {
        size_t cap = r->capchunks ? 2 * r->capchunks : 64;
        report_chunk *c =
            r->nchunks >= RUNS_MAX_CHUNKS ? NULL : realloc(r->chunks, cap * sizeof *c);
        if (!c) {
            runs_drop(r);
            return;
        }
        r->chunks = c;
        r->capchunks = cap;
    }
    r->chunks[r->nchunks++] = (report_chunk){ev->run, r->spilled, len};
}

static int run_first_cmp(const void *a, const void *b)
{
    const report_run *x = *(report_run *const *)a, *y = *(report_run *const *)b;
    return blob_cmp(x->first.p, x->first.len, y->first.p, y->first.len);
}

/* The chunks in report order into *order (malloc'd, nchunks indices) when
 * the runs allow it: each in key order, and disjoint once sorted by first
 * key (the last key of one below the first of the next, so no key is in
 * two runs and equal keys keep their arrival order). 1 then, else 0. */
static int runs_order(const report *r, size_t **order)
{
    *order = NULL;
    if (r->no_runs || r->ntransient || !r->nchunks)
        return 0;
    size_t n = 0, *rank = NULL, *at = NULL;
    report_run **by = malloc(r->nruns * sizeof *by);
    int ok = 0;
    if (!by)
        return 0;
    for (size_t i = 0; i < r->nruns; i++)
        if (r->runs[i].seen)
            by[n++] = &r->runs[i];
    qsort(by, n, sizeof *by, run_first_cmp);
    for (size_t i = 0; i < n; i++)
        if (by[i]->unordered ||
            (i + 1 < n && blob_cmp(by[i]->last.p, by[i]->last.len, by[i + 1]->first.p,
                                   by[i + 1]->first.len) >= 0))
            goto done;
    /* a counting sort of the chunks by their run's rank: stable, so each
     * run's chunks stay in file order */
    if (!(rank = calloc(r->nruns, sizeof *rank)) || !(at = calloc(n + 1, sizeof *at)) ||
        !(*order = malloc(r->nchunks * sizeof **order)))
        goto done;
    for (size_t i = 0; i < n; i++)
        rank[by[i] - r->runs] = i;
    for (size_t c = 0; c < r->nchunks; c++)
        at[rank[r->chunks[c].run] + 1]++;
    for (size_t i = 0; i < n; i++)
        at[i + 1] += at[i];
    for (size_t c = 0; c < r->nchunks; c++)
        (*order)[at[rank[r->chunks[c].run]]++] = c;
    ok = 1;
done:
    if (!ok) {
        free(*order);
        *order = NULL;
    }
    free(by);
    free(rank);
    free(at);
    return ok;
}

/* The spill into a SQLite table, sorted there: *st steps through it in
 * report order (transient ones last, else by key, equal keys in arrival
 * order). */
static int rows_sorted(spill_rd *rd, sqlite3 **db, sqlite3_stmt **st)
{
    sqlite3_stmt *ins = NULL;
    const uint8_t *rec;
    uint32_t len;
    int rc = -1, n;
    if (sqlite3_open("", db) != SQLITE_OK ||
        sqlite3_exec(*db,
                     "PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; "
                     "CREATE TABLE d (transient INTEGER, key BLOB, body BLOB); "
                     /* one transaction for every insert, never committed (a
                      * private file): not a write to the file per row */
                     "BEGIN",
                     NULL, NULL, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(*db, "INSERT INTO d VALUES (?1, ?2, ?3)", -1, &ins, NULL) != SQLITE_OK)
        goto done;
    while ((n = spill_next(rd, &rec, &len)) == 1) {
        uint32_t klen;
        memcpy(&klen, rec + 3, 4);
        if (klen > len - 7)
            goto done;
        sqlite3_reset(ins);
        sqlite3_bind_int(ins, 1, rec[0]);
        sqlite3_bind_blob(ins, 2, rec + 7, (int)klen, SQLITE_STATIC);
        sqlite3_bind_blob(ins, 3, rec + 7 + klen, (int)(len - 7 - klen), SQLITE_STATIC);
        if (sqlite3_step(ins) != SQLITE_DONE)
            goto done;
    }
    if (n == 0 && sqlite3_prepare_v2(*db,
                                     "SELECT body FROM d ORDER BY transient, key, "
                                     "rowid",
                                     -1, st, NULL) == SQLITE_OK)
        rc = 0;
done:
    sqlite3_finalize(ins);
    return rc;
}

/* Takes a row's text, as it prints. */
typedef void row_fn(const uint8_t *text, size_t n, void *ctx);

/* Reads the spill's records from where it stands, up to len bytes
 * (UINT64_MAX: to its end), and calls fn with each one's text: 0, or -1 on
 * a bad or short record. */
static int rows_read(spill_rd *rd, uint64_t len, row_fn *fn, void *ctx)
{
    const uint8_t *rec;
    uint32_t n_rec;
    int n = 0;
    while (len && (n = spill_next(rd, &rec, &n_rec)) == 1) {
        uint32_t klen;
        memcpy(&klen, rec + 3, 4);
        if (klen > n_rec - 7 || (len != UINT64_MAX && len < 4 + (uint64_t)n_rec))
            return -1;
        if (len != UINT64_MAX)
            len -= 4 + (uint64_t)n_rec;
        fn(rec + 7 + klen, n_rec - 7 - klen, ctx);
    }
    return len == 0 || (len == UINT64_MAX && n == 0) ? 0 : -1;
}

/* Calls fn with each row divergence's text: transient ones last, else in key order
 * (equal keys in arrival order). Divergences mostly arrive in key order (a
 * range's in order, ranges mostly in order): when every one did and none is
 * transient, the spill is read back as it is, with no sort; when they came
 * in disjoint ordered runs, run after run (runs_order); else through SQLite.
 * -1 with err set when the spill cannot be read back. */
static int rows_each(const report *r, row_fn *fn, void *ctx, sl_err *err)
{
    if (!r->spill)
        return 0;
    spill_rd rd = {fileno(r->spill), NULL, 0, 0, 0};
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    size_t *order = NULL;
    int rc = -1, n;
    if (fflush(r->spill) || rd_seek(&rd, 0))
        goto done;
    if (!r->unsorted && !r->ntransient) {
        rc = rows_read(&rd, UINT64_MAX, fn, ctx);
        goto done;
    }
    if (runs_order(r, &order)) {
        rc = 0;
        for (size_t i = 0; i < r->nchunks && rc == 0; i++) {
            const report_chunk *c = &r->chunks[order[i]];
            rc = rd_seek(&rd, c->off) ? -1 : rows_read(&rd, c->len, fn, ctx);
        }
        goto done;
    }
    if (rows_sorted(&rd, &db, &st))
        goto done;
    while ((n = sqlite3_step(st)) == SQLITE_ROW)
        fn(sqlite3_column_blob(st, 0), (size_t)sqlite3_column_bytes(st, 0), ctx);
    rc = n == SQLITE_DONE ? 0 : -1;
done:
    free(order);
    sqlite3_finalize(st);
    sqlite3_close(db);
    free(rd.buf);
    if (rc)
        sl_err_set(err,
                   "could not read the report back from its temporary file (check the space in "
                   "TMPDIR)");
    return rc;
}

int report_add(void *ctx, const co_event *ev)
{
    report *r = ctx;
    if (ev->kind == CO_SCHEMA) { /* a few per table: kept in memory */
        if (r->n == r->cap) {
            size_t cap = r->cap ? r->cap * 2 : 16;
            div_rec *v = realloc(r->v, cap * sizeof *v);
            if (!v)
                return r->oom = 1;
            r->v = v;
            r->cap = cap;
        }
        div_rec *d = &r->v[r->n++];
        memset(d, 0, sizeof *d);
        d->kind = ev->kind;
        d->status = ev->status;
        d->column = dup_or_null(ev->column);
        d->detail = dup_or_null(ev->detail);
        d->stype = dup_or_null(ev->source_type);
        d->ttype = dup_or_null(ev->target_type);
        return 0;
    }
    if (!r->key_cols) {
        r->key_cols = calloc(ev->nkey, sizeof *r->key_cols);
        if (!r->key_cols)
            return r->oom = 1;
        for (size_t k = 0; k < ev->nkey; k++)
            r->key_cols[k] = strdup(ev->key_cols[k]);
        r->nkey = ev->nkey;
    }
    if (r->summary_only) { /* counted, never kept: memory stays flat */
        r->nrows++;
        r->ndiffer += ev->status != CO_TRANSIENT;
        return 0;
    }
    if (!r->spill && rows_open(r))
        return r->oom = 1;
    if (row_format(r, ev))
        return r->oom = 1;
    int transient = ev->status == CO_TRANSIENT;
    if (!transient) { /* still in key order? (rows_each) */
        if (r->last.len && blob_cmp(r->last.p, r->last.len, ev->key, ev->klen) > 0)
            r->unsorted = 1;
        sl_buf_reset(&r->last);
        if (sl_buf_append(&r->last, ev->key, ev->klen))
            return r->oom = 1;
    }
    r->ntransient += transient;
    uint64_t len = 4 + 7 + (uint64_t)ev->klen + r->body.len;
    runs_note(r, ev, len);
    if (spill_put(r, ev, transient))
        return r->oom = 1;
    r->spilled += len;
    r->nrows++;
    r->ndiffer += ev->status != CO_TRANSIENT;
    return 0;
}

void report_progress(void *ctx, const co_progress *p)
{
    report *r = ctx;
    /* a pause for replica lag starts, and ends: a line each, tty or not */
    const char *why = p->paused ? p->paused : "";
    if (!*why != !r->paused[0])
        fprintf(stderr, "%ssluice: %s%s (%zu/%zu ranges done)\n", r->progress ? "\r\033[K" : "",
                *why ? "paused: " : "resumed", why, p->ranges_done, p->ranges);
    snprintf(r->paused, sizeof r->paused, "%s", why);
    if (!r->progress)
        return;
    fprintf(stderr, "\rsluice: %zu/%zu ranges, %llu/%llu rows", p->ranges_done, p->ranges,
            (unsigned long long)p->rows_done, (unsigned long long)p->rows_expected);
    if (*why)
        fprintf(stderr, ", paused: %s", why);
    if (p->ranges_done == p->ranges)
        fprintf(stderr, "\r\033[K");
    fflush(stderr);
}

void report_free(report *r)
{
    for (size_t i = 0; i < r->n; i++) {
        div_rec *d = &r->v[i];
        free(d->column);
        free(d->detail);
        free(d->stype);
        free(d->ttype);
    }
    free(r->v);
    for (size_t k = 0; k < r->nkey; k++)
        free(r->key_cols[k]);
    free(r->key_cols);
    sl_buf_free(&r->body);
    sl_buf_free(&r->last);
    runs_drop(r);
    if (r->spill)
        fclose(r->spill);
}

/* ---- the rows' output ---------------------------------------------------- *
 * Ten million rows' texts, formatted already (report_add): gathered here
 * and handed to stdio 64 KiB at a time, not a stdio call each. */
typedef struct out {
    int fd;      /* stdout's, written past stdio (flushed first): its 4 KiB
                  * writes cost more than the copy */
    int bad;     /* a write failed: the rest is dropped, as stdio would */
    size_t n;    /* bytes in buf */
    size_t rows; /* rows written (JSON: a comma before all but the first) */
    char buf[1 << 20];
} out;

static void out_write(out *o, const void *p, size_t n)
{
    for (size_t at = 0; at < n && !o->bad;) {
        ssize_t w = write(o->fd, (const char *)p + at, n - at);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            o->bad = 1;
        else
            at += (size_t)w;
    }
}

static void out_flush(out *o)
{
    out_write(o, o->buf, o->n);
    o->n = 0;
}

static inline void out_put(out *o, const void *p, size_t n)
{
    if (n > sizeof o->buf - o->n) {
        out_flush(o);
        if (n > sizeof o->buf) {
            out_write(o, p, n);
            return;
        }
    }
    memcpy(o->buf + o->n, p, n);
    o->n += n;
}

/* An out on stdout, NULL when memory runs out. */
static out *out_new(void)
{
    out *o = malloc(sizeof *o);
    if (!o)
        return NULL;
    fflush(stdout); /* what printf wrote goes first */
    o->fd = fileno(stdout);
    o->bad = 0;
    o->n = o->rows = 0;
    return o;
}

/* Whether any divergence is not transient (what exit status 1 means). */
static int report_differs(const report *r)
{
    return r->n > 0 || r->ndiffer > 0; /* schema drift, or a row not transient */
}

/* A text row: its line as it is. */
static void copy_row_text(const uint8_t *text, size_t n, void *ctx)
{
    out_put(ctx, text, n);
}

/* A JSON row: a comma before all but the first, each on its own line. */
static void copy_row_json(const uint8_t *text, size_t n, void *ctx)
{
    out *o = ctx;
    if (o->rows++)
        out_put(o, ",\n", 2);
    else
        out_put(o, "\n", 1);
    out_put(o, text, n);
}

/* A sample's figures: the ranges compared, the rows and divergences in
 * them, and the bound they give on the whole table's divergent share. */
typedef struct sample_fig {
    size_t kept, of;
    double percent;
    uint64_t rows, divergent;
    double upper; /* 95% one-sided Clopper-Pearson */
} sample_fig;

static int sample_of(const co_summary *s, const diff_args *a, sample_fig *f)
{
    if (!a || a->o.sample_bp <= 0)
        return 0;
    f->of = s->ranges;
    f->kept =
        s->sampled_ranges ? s->sampled_ranges : (s->ranges * (size_t)a->o.sample_bp + 9999) / 10000;
    f->percent = a->o.sample_bp / 100.0;
    f->rows = s->source_rows + s->extra;
    f->divergent = s->changed + s->missing + s->extra;
    f->upper = sl_binom_upper(f->rows, f->divergent, 0.95);
    return 1;
}

static int print_text(const report *r, const co_summary *s, const char *table, const char *ttable,
                      const diff_args *a, sl_err *err)
{
    for (size_t i = 0; i < r->n && !r->summary_only; i++) {
        const div_rec *d = &r->v[i];
        printf("schema             column \"%s\" %s", d->column, d->detail);
        if (d->stype && d->ttype)
            printf(" (source %s, target %s)", d->stype, d->ttype);
        else if (d->stype || d->ttype)
            printf(" (%s)", d->stype ? d->stype : d->ttype);
        printf("\n");
    }
    out *o = out_new();
    if (!o)
        return sl_err_set(err, "out of memory");
    int rc = rows_each(r, copy_row_text, o, err);
    out_flush(o);
    free(o);
    if (rc)
        return -1;
    if ((r->n || r->nrows) && !r->summary_only)
        printf("--\n");
    printf("source %s table %s: %llu rows\n", s->source_name, table,
           (unsigned long long)s->source_rows);
    printf("target %s table %s: %llu rows\n", s->target_name, ttable,
           (unsigned long long)s->target_rows);
    double rate = s->elapsed > 0 ? (double)(s->source_rows + s->target_rows) / s->elapsed : 0;
    printf("compared in %zu ranges with %zu workers in %.2f s (%.0f rows/s)\n", s->ranges,
           s->workers, s->elapsed, rate);
    if (s->planned_ranges && s->ranges > s->planned_ranges)
        printf("%zu ranges planned, split by --chunk-time into %zu; the longest read took %.2f "
               "s\n",
               s->planned_ranges, s->ranges, s->longest_read_s);
    if (s->paused_s > 0)
        printf("range reads paused %.1f s for replica lag (--max-replica-lag)\n", s->paused_s);
    if (s->transient)
        printf("%llu transient: differed, then matched on a re-check (changes in flight)\n",
               (unsigned long long)s->transient);
    if (s->matched_on_fetch)
        printf("%llu rows hashed differently but matched when read again (changes in flight)\n",
               (unsigned long long)s->matched_on_fetch);
    if (s->within_tolerance)
        printf("%llu rows differed only within the tolerances (equal)\n",
               (unsigned long long)s->within_tolerance);
    sample_fig f;
    int sampled = sample_of(s, a, &f);
    if (sampled)
        printf("sample: %zu of %zu ranges (%.2f%% of the key space) picked at random, %llu rows "
               "compared, %llu divergent: at 95%% confidence under %.4g%% of all rows differ\n",
               f.kept, f.of, f.percent, (unsigned long long)f.rows, (unsigned long long)f.divergent,
               f.upper * 100);
    if (s->limit_reached)
        printf("stopped after %llu divergences (--max-divergences): not a full comparison\n",
               (unsigned long long)(s->changed + s->missing + s->extra));
    if (!report_differs(r))
        printf(sampled ? "no divergence in the sample (not a full comparison)\n"
                       : "tables are identical\n");
    else
        printf("tables differ: %llu changed, %llu missing-in-target, %llu extra-in-target, "
               "%llu schema\n",
               (unsigned long long)s->changed, (unsigned long long)s->missing,
               (unsigned long long)s->extra, (unsigned long long)s->schema);
    return 0;
}

/* Prints v as a JSON value nested `indent` spaces deep, so the document
 * can be written piece by piece: the divergences are never all in memory. */
static void put_json(const json_t *v, int indent)
{
    static const char pad[] = "                ";
    char *txt = json_dumps(v, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY);
    /* a line at a time, not a character (a million divergences print) */
    for (const char *p = txt; p && *p;) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) + 1 : strlen(p);
        fwrite(p, 1, n, stdout);
        p += n;
        if (nl)
            fwrite(pad, 1, (size_t)indent < sizeof pad - 1 ? (size_t)indent : sizeof pad - 1,
                   stdout);
    }
    free(txt);
}

static void put_member(const char *name, json_t *v, int last)
{
    printf("  \"%s\": ", name);
    put_json(v, 2);
    printf("%s\n", last ? "" : ",");
    json_decref(v);
}

static int print_json(const report *r, const co_summary *s, const char *table, const char *ttable,
                      const diff_args *a, sl_err *err)
{
    json_t *schema = json_array();
    for (size_t i = 0; i < r->n; i++) {
        const div_rec *d = &r->v[i];
        json_array_append_new(schema, json_pack("{s:s, s:s, s:o, s:o}", "column", d->column,
                                                "problem", d->detail, "source_type", jstr(d->stype),
                                                "target_type", jstr(d->ttype)));
    }
    printf("{\n");
    put_member("format", json_string("sluice.diff"), 0);
    put_member("format_version", json_integer(1), 0);
    put_member("encoding_version", json_integer(ENC_VERSION), 0);
    put_member("source",
               json_pack("{s:s, s:s, s:I}", "name", s->source_name, "table", table, "rows",
                         (json_int_t)s->source_rows),
               0);
    put_member("target",
               json_pack("{s:s, s:s, s:I}", "name", s->target_name, "table", ttable, "rows",
                         (json_int_t)s->target_rows),
               0);
    put_member("schema", schema, 0);
    if (a->ntol) { /* hashes of a tolerant job match only those of the same rules */
        json_t *tol = json_array();
        for (size_t i = 0; i < a->ntol; i++)
            json_array_append_new(tol, json_string(a->tol[i]));
        put_member("tolerances", tol, 0);
    }
    sample_fig f;
    if (sample_of(s, a, &f))
        put_member("sample",
                   json_pack("{s:I, s:I, s:f, s:I, s:I, s:f, s:s}", "ranges", (json_int_t)f.kept,
                             "of_ranges", (json_int_t)f.of, "percent", f.percent, "rows",
                             (json_int_t)f.rows, "divergent", (json_int_t)f.divergent,
                             "upper_bound_95", f.upper, "method",
                             "one-sided Clopper-Pearson over the rows of ranges picked at random"),
                   0);
    if (!r->summary_only) { /* --summary-only: no "divergences" member at all */
        printf("  \"divergences\": [");
        out *o = out_new();
        if (!o)
            return sl_err_set(err, "out of memory");
        int rc = rows_each(r, copy_row_json, o, err);
        out_flush(o);
        size_t n = o->rows;
        free(o);
        if (rc)
            return -1;
        printf("%s],\n", n ? "\n  " : "");
    }
    json_t *summary = json_pack(
        "{s:b, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:f}", "equal", !report_differs(r),
        "transient", (json_int_t)s->transient, "matched_on_fetch", (json_int_t)s->matched_on_fetch,
        "changed", (json_int_t)s->changed, "missing_in_target", (json_int_t)s->missing,
        "extra_in_target", (json_int_t)s->extra, "schema", (json_int_t)s->schema, "ranges",
        (json_int_t)s->ranges, "workers", (json_int_t)s->workers, "elapsed_seconds", s->elapsed);
    if (a->ntol && !a->wait) /* sluice diff: a cluster's status does not carry it */
        json_object_set_new(summary, "within_tolerance",
                            json_integer((json_int_t)s->within_tolerance));
    /* issue 15: stopped at --max-divergences (the counts are then a lower
     * bound), ranges split by --chunk-time, time paused for replica lag */
    json_object_set_new(summary, "stopped_early", json_boolean(s->limit_reached));
    if (s->limit_reached)
        json_object_set_new(summary, "limit_reached",
                            json_integer((json_int_t)a->o.max_divergences));
    if (s->planned_ranges && s->ranges > s->planned_ranges) {
        json_object_set_new(summary, "planned_ranges", json_integer((json_int_t)s->planned_ranges));
        json_object_set_new(summary, "longest_read_seconds", json_real(s->longest_read_s));
    }
    if (a->o.nreplicas)
        json_object_set_new(summary, "paused_seconds", json_real(s->paused_s));
    /* dense divergence: ranges whose rest was streamed, not drilled */
    json_object_set_new(summary, "streamed_ranges", json_integer((json_int_t)s->streamed_ranges));
    json_object_set_new(summary, "streamed_rows", json_integer((json_int_t)s->streamed_rows));
    /* ranges streamed whole once most were dense: two tree reads not made a range */
    json_object_set_new(summary, "trees_skipped", json_integer((json_int_t)s->trees_skipped));
    /* ... of which one worker merged both sides, sending only what differs */
    json_object_set_new(summary, "merged_ranges", json_integer((json_int_t)s->merged_ranges));
    json_object_set_new(summary, "rows_from_memory", json_integer((json_int_t)s->rows_from_memory));
    put_member("summary", summary, 1);
    printf("}\n");
    return 0;
}

int report_finish(report *r, const co_summary *s, const diff_args *a, sl_err *err)
{
    if (r->oom)
        return sl_err_set(err, "could not keep the report (out of memory, or no space left in "
                               "TMPDIR for its temporary file)");
    if (s->source_rows == 0 && s->target_rows == 0 && !a->allow_empty && !s->limit_reached)
        return sl_err_setc(err, SL_INVALID,
                           "both tables are empty (0 rows compared), so nothing was verified; "
                           "check --table and --where, or pass --allow-empty");
    const char *tt = a->o.target_table ? a->o.target_table : a->o.table;
    int json = strcmp(a->format, "json") == 0;
    if (r->nrows && !r->summary_only && json != r->json) /* formatted as they came */
        return sl_err_setc(err, SL_INTERNAL, "the report's rows were formatted as %s, not %s",
                           r->json ? "json" : "text", a->format);
    int rc =
        json ? print_json(r, s, a->o.table, tt, a, err) : print_text(r, s, a->o.table, tt, a, err);
    return rc ? -1 : report_differs(r);
}
