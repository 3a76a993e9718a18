#include "report.h"

#include "../base/stats.h"

#include <jansson.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

/* A value that came cut short: [length, hash]; null for a whole one. */
static json_t *cut_json(const char *hash, uint64_t len)
{
    return hash ? json_pack("[I, s]", (json_int_t)len, hash) : json_null();
}

/* The spill file: "" makes SQLite a private temporary file, gone at close. */
static int rows_open(report *r)
{
    if (sqlite3_open("", &r->db) != SQLITE_OK ||
        sqlite3_exec(r->db,
                     "PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; "
                     "CREATE TABLE d (transient INTEGER, key BLOB, kind INTEGER, "
                     "status INTEGER, body TEXT); "
                     /* one transaction for every insert, never committed (a
                      * private file): not a write to the file per row */
                     "BEGIN",
                     NULL, NULL, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(r->db, "INSERT INTO d VALUES (?1, ?2, ?3, ?4, ?5)", -1, &r->ins, NULL) !=
            SQLITE_OK)
        return -1;
    return 0;
}

/* Calls fn with each row divergence: transient ones last, else in key order.
 * -1 with err set when the spill file cannot be read back. */
static int rows_each(const report *r,
                     void (*fn)(const report *r, int kind, int status, const json_t *body,
                                void *ctx),
                     void *ctx, sl_err *err)
{
    sqlite3_stmt *st;
    if (!r->db)
        return 0;
    if (sqlite3_prepare_v2(r->db, "SELECT kind, status, body FROM d ORDER BY transient, key, rowid",
                           -1, &st, NULL) != SQLITE_OK)
        goto fail;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        json_t *body = json_loads((const char *)sqlite3_column_text(st, 2), 0, NULL);
        if (!body) {
            sqlite3_finalize(st);
            return sl_err_set(err, "the report's temporary file holds an unreadable row");
        }
        fn(r, sqlite3_column_int(st, 0), sqlite3_column_int(st, 1), body, ctx);
        json_decref(body);
    }
    sqlite3_finalize(st);
    if (rc == SQLITE_DONE)
        return 0;
fail:
    return sl_err_set(err,
                      "could not read the report back from its temporary file: %s (check the "
                      "space in TMPDIR)",
                      sqlite3_errmsg(r->db));
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
    if (!r->db && rows_open(r))
        return r->oom = 1;
    /* body: [[key values], [[column, source, target, source cut, target cut], ...]],
     * a cut being null for a whole value, else [length, hash] */
    json_t *key = json_array(), *cols = json_array();
    for (size_t k = 0; k < ev->nkey; k++)
        json_array_append_new(key, json_string(ev->key_vals[k]));
    for (size_t k = 0; k < ev->ncols; k++) {
        const co_coldiff *c = &ev->cols[k];
        json_array_append_new(cols,
                              json_pack("[s, o, o, o, o]", c->column, jstr(c->source),
                                        jstr(c->target), cut_json(c->source_hash, c->source_len),
                                        cut_json(c->target_hash, c->target_len)));
    }
    json_t *body = json_pack("[o, o]", key, cols);
    char *txt = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (!txt)
        return r->oom = 1;
    sqlite3_reset(r->ins);
    sqlite3_bind_int(r->ins, 1, ev->status == CO_TRANSIENT);
    sqlite3_bind_blob(r->ins, 2, ev->key, (int)ev->klen, SQLITE_TRANSIENT);
    sqlite3_bind_int(r->ins, 3, ev->kind);
    sqlite3_bind_int(r->ins, 4, ev->status);
    sqlite3_bind_text(r->ins, 5, txt, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(r->ins);
    free(txt);
    if (rc != SQLITE_DONE)
        return r->oom = 1;
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
    sqlite3_finalize(r->ins);
    sqlite3_close(r->db);
}

/* 'text' with '' doubled, the closing quote after end. */
static void print_quoted(FILE *f, const char *v, const char *end)
{
    fputc('\'', f);
    for (const char *p = v; *p; p++) {
        if (*p == '\'')
            fputc('\'', f);
        fputc(*p, f);
    }
    fputs(end, f);
    fputc('\'', f);
}

/* SQL-literal style: 'text' with '' doubled, NULL bare. */
static void print_value(FILE *f, const char *v)
{
    if (v)
        print_quoted(f, v, "");
    else
        fputs("NULL", f);
}

/* A value as print_value shows it; one cut short (cut is [length, hash])
 * ends in an ellipsis and gives its full length and hash. */
static void print_cut_value(FILE *f, const char *v, const json_t *cut)
{
    if (!v || !json_is_array(cut)) {
        print_value(f, v);
        return;
    }
    print_quoted(f, v, "\u2026");
    fprintf(f, " (%" JSON_INTEGER_FORMAT " bytes, xxh3 %s)",
            json_integer_value(json_array_get(cut, 0)), json_string_value(json_array_get(cut, 1)));
}

static void print_key(FILE *f, const report *r, const json_t *vals)
{
    for (size_t k = 0; k < r->nkey && k < json_array_size(vals); k++) {
        const char *v = json_string_value(json_array_get(vals, k));
        int numeric = v && *v != '\0';
        for (const char *p = v; numeric && *p; p++)
            if (!((*p >= '0' && *p <= '9') || (p == v && *p == '-')))
                numeric = 0;
        fprintf(f, "%s%s=", k ? " " : "", r->key_cols[k]);
        if (numeric)
            fputs(v, f);
        else
            print_value(f, v);
    }
}

/* Whether any divergence is not transient (what exit status 1 means). */
static int report_differs(const report *r)
{
    return r->n > 0 || r->ndiffer > 0; /* schema drift, or a row not transient */
}

static void print_row_text(const report *r, int kind, int status, const json_t *body, void *ctx)
{
    (void)ctx;
    const json_t *cols = json_array_get(body, 1);
    if (status == CO_TRANSIENT)
        printf("transient ");
    printf("%-18s ", co_kind_name(kind));
    print_key(stdout, r, json_array_get(body, 0));
    for (size_t k = 0; k < json_array_size(cols); k++) {
        const json_t *c = json_array_get(cols, k);
        printf("%s%s: ", k ? "; " : "  ", json_string_value(json_array_get(c, 0)));
        print_cut_value(stdout, json_string_value(json_array_get(c, 1)), json_array_get(c, 3));
        printf(" -> ");
        print_cut_value(stdout, json_string_value(json_array_get(c, 2)), json_array_get(c, 4));
    }
    printf("\n");
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
    if (rows_each(r, print_row_text, NULL, err))
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

static void print_row_json(const report *r, int kind, int status, const json_t *body, void *ctx)
{
    size_t *n = ctx;
    const json_t *vals = json_array_get(body, 0), *cols = json_array_get(body, 1);
    json_t *key = json_object();
    for (size_t k = 0; k < r->nkey; k++)
        json_object_set_new(key, r->key_cols[k], json_incref(json_array_get(vals, k)));
    json_t *o = json_pack("{s:s, s:o}", "kind", co_kind_name(kind), "key", key);
    if (status)
        json_object_set_new(o, "status",
                            json_string(status == CO_TRANSIENT ? "transient" : "confirmed"));
    if (kind == CO_CHANGED && !r->keys_only) { /* --keys-only: no "columns" */
        json_t *list = json_array();
        for (size_t k = 0; k < json_array_size(cols); k++) {
            const json_t *c = json_array_get(cols, k);
            json_t *e = json_pack("{s:O, s:O, s:O}", "column", json_array_get(c, 0), "source",
                                  json_array_get(c, 1), "target", json_array_get(c, 2));
            /* a value cut short: its length and hash beside the first bytes */
            for (int s = 0; s < 2; s++) {
                const json_t *cut = json_array_get(c, 3 + (size_t)s);
                if (!json_is_array(cut))
                    continue;
                json_object_set(e, s ? "target_length" : "source_length", json_array_get(cut, 0));
                json_object_set(e, s ? "target_hash" : "source_hash", json_array_get(cut, 1));
            }
            json_array_append_new(list, e);
        }
        json_object_set_new(o, "columns", list);
    }
    printf("%s\n    ", (*n)++ ? "," : "");
    put_json(o, 4);
    json_decref(o);
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
        size_t n = 0;
        if (rows_each(r, print_row_json, &n, err))
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
    r->keys_only = a->o.keys_only;
    int rc = strcmp(a->format, "json") == 0 ? print_json(r, s, a->o.table, tt, a, err)
                                            : print_text(r, s, a->o.table, tt, a, err);
    return rc ? -1 : report_differs(r);
}
