#include "report.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../merkle/enc.h"

/* ---- collected report ---------------------------------------------------- */

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

int report_add(void *ctx, const co_event *ev)
{
    report *r = ctx;
    if (r->n == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 64;
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
    if (ev->kind == CO_SCHEMA) {
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
    d->key = malloc(ev->klen ? ev->klen : 1);
    d->key_vals = calloc(ev->nkey, sizeof *d->key_vals);
    d->cols = calloc(ev->ncols ? ev->ncols : 1, sizeof *d->cols);
    if (!d->key || !d->key_vals || !d->cols)
        return r->oom = 1;
    memcpy(d->key, ev->key, ev->klen);
    d->klen = ev->klen;
    d->nkey = ev->nkey;
    for (size_t k = 0; k < ev->nkey; k++)
        d->key_vals[k] = strdup(ev->key_vals[k]);
    for (size_t k = 0; k < ev->ncols; k++) {
        d->cols[k].column = strdup(ev->cols[k].column);
        d->cols[k].source = dup_or_null(ev->cols[k].source);
        d->cols[k].target = dup_or_null(ev->cols[k].target);
    }
    d->ncols = ev->ncols;
    return 0;
}

void report_progress(void *ctx, const co_progress *p)
{
    report *r = ctx;
    if (!r->progress)
        return;
    fprintf(stderr, "\rsluice: %zu/%zu ranges, %llu/%llu rows", p->ranges_done, p->ranges,
            (unsigned long long)p->rows_done, (unsigned long long)p->rows_expected);
    if (p->ranges_done == p->ranges)
        fprintf(stderr, "\r\033[K");
    fflush(stderr);
}

static int div_cmp(const void *a, const void *b)
{
    const div_rec *x = a, *y = b;
    if ((x->kind == CO_SCHEMA) != (y->kind == CO_SCHEMA))
        return x->kind == CO_SCHEMA ? -1 : 1;
    if (x->kind == CO_SCHEMA)
        return 0;
    if ((x->status == CO_TRANSIENT) != (y->status == CO_TRANSIENT))
        return x->status == CO_TRANSIENT ? 1 : -1; /* transient ones last */
    size_t m = x->klen < y->klen ? x->klen : y->klen;
    int c = memcmp(x->key, y->key, m);
    return c ? c : (x->klen < y->klen ? -1 : x->klen > y->klen);
}

void report_free(report *r)
{
    for (size_t i = 0; i < r->n; i++) {
        div_rec *d = &r->v[i];
        free(d->key);
        for (size_t k = 0; d->key_vals && k < d->nkey; k++)
            free(d->key_vals[k]);
        free(d->key_vals);
        for (size_t k = 0; d->cols && k < d->ncols; k++) {
            free(d->cols[k].column);
            free(d->cols[k].source);
            free(d->cols[k].target);
        }
        free(d->cols);
        free(d->column);
        free(d->detail);
        free(d->stype);
        free(d->ttype);
    }
    free(r->v);
    for (size_t k = 0; k < r->nkey; k++)
        free(r->key_cols[k]);
    free(r->key_cols);
}

/* SQL-literal style: 'text' with '' doubled, NULL bare. */
static void print_value(FILE *f, const char *v)
{
    if (!v) {
        fputs("NULL", f);
        return;
    }
    fputc('\'', f);
    for (const char *p = v; *p; p++) {
        if (*p == '\'')
            fputc('\'', f);
        fputc(*p, f);
    }
    fputc('\'', f);
}

static void print_key(FILE *f, const report *r, const div_rec *d)
{
    for (size_t k = 0; k < d->nkey; k++) {
        const char *v = d->key_vals[k];
        int numeric = *v != '\0';
        for (const char *p = v; *p; p++)
            if (!((*p >= '0' && *p <= '9') || (p == v && *p == '-')))
                numeric = 0;
        fprintf(f, "%s%s=", k ? " " : "", r->key_cols[k]);
        if (numeric)
            fputs(v, f);
        else
            print_value(f, v);
    }
}

void report_sort(report *r)
{
    if (r->n)
        qsort(r->v, r->n, sizeof *r->v, div_cmp);
}

int report_differs(const report *r)
{
    for (size_t i = 0; i < r->n; i++)
        if (r->v[i].status != CO_TRANSIENT)
            return 1;
    return 0;
}

void report_print_text(const report *r, const co_summary *s, const char *table, const char *ttable)
{
    for (size_t i = 0; i < r->n; i++) {
        const div_rec *d = &r->v[i];
        if (d->kind == CO_SCHEMA) {
            printf("schema             column \"%s\" %s", d->column, d->detail);
            if (d->stype && d->ttype)
                printf(" (source %s, target %s)", d->stype, d->ttype);
            else if (d->stype || d->ttype)
                printf(" (%s)", d->stype ? d->stype : d->ttype);
            printf("\n");
            continue;
        }
        if (d->status == CO_TRANSIENT)
            printf("transient ");
        printf("%-18s ", co_kind_name(d->kind));
        print_key(stdout, r, d);
        for (size_t k = 0; k < d->ncols; k++) {
            printf("%s%s: ", k ? "; " : "  ", d->cols[k].column);
            print_value(stdout, d->cols[k].source);
            printf(" -> ");
            print_value(stdout, d->cols[k].target);
        }
        printf("\n");
    }
    if (r->n)
        printf("--\n");
    printf("source %s table %s: %llu rows\n", s->source_name, table,
           (unsigned long long)s->source_rows);
    printf("target %s table %s: %llu rows\n", s->target_name, ttable,
           (unsigned long long)s->target_rows);
    double rate = s->elapsed > 0 ? (double)(s->source_rows + s->target_rows) / s->elapsed : 0;
    printf("compared in %zu ranges with %zu workers in %.2f s (%.0f rows/s)\n", s->ranges,
           s->workers, s->elapsed, rate);
    if (s->transient)
        printf("%llu transient: differed, then matched on a re-check (changes in flight)\n",
               (unsigned long long)s->transient);
    if (s->matched_on_fetch)
        printf("%llu rows hashed differently but matched when read again (changes in flight)\n",
               (unsigned long long)s->matched_on_fetch);
    if (!report_differs(r))
        printf("tables are identical\n");
    else
        printf("tables differ: %llu changed, %llu missing-in-target, %llu extra-in-target, "
               "%llu schema\n",
               (unsigned long long)s->changed, (unsigned long long)s->missing,
               (unsigned long long)s->extra, (unsigned long long)s->schema);
}

static json_t *jstr(const char *s)
{
    return s ? json_string(s) : json_null();
}

void report_print_json(const report *r, const co_summary *s, const char *table, const char *ttable)
{
    json_t *root = json_object(), *schema = json_array(), *divs = json_array();
    json_object_set_new(root, "format", json_string("sluice.diff"));
    json_object_set_new(root, "format_version", json_integer(1));
    json_object_set_new(root, "encoding_version", json_integer(ENC_VERSION));
    json_object_set_new(root, "source",
                        json_pack("{s:s, s:s, s:I}", "name", s->source_name, "table", table, "rows",
                                  (json_int_t)s->source_rows));
    json_object_set_new(root, "target",
                        json_pack("{s:s, s:s, s:I}", "name", s->target_name, "table", ttable,
                                  "rows", (json_int_t)s->target_rows));
    for (size_t i = 0; i < r->n; i++) {
        const div_rec *d = &r->v[i];
        if (d->kind == CO_SCHEMA) {
            json_array_append_new(schema, json_pack("{s:s, s:s, s:o, s:o}", "column", d->column,
                                                    "problem", d->detail, "source_type",
                                                    jstr(d->stype), "target_type", jstr(d->ttype)));
            continue;
        }
        json_t *key = json_object();
        for (size_t k = 0; k < d->nkey; k++)
            json_object_set_new(key, r->key_cols[k], json_string(d->key_vals[k]));
        json_t *o = json_pack("{s:s, s:o}", "kind", co_kind_name(d->kind), "key", key);
        if (d->status)
            json_object_set_new(o, "status",
                                json_string(d->status == CO_TRANSIENT ? "transient" : "confirmed"));
        if (d->kind == CO_CHANGED) {
            json_t *cols = json_array();
            for (size_t k = 0; k < d->ncols; k++)
                json_array_append_new(
                    cols, json_pack("{s:s, s:o, s:o}", "column", d->cols[k].column, "source",
                                    jstr(d->cols[k].source), "target", jstr(d->cols[k].target)));
            json_object_set_new(o, "columns", cols);
        }
        json_array_append_new(divs, o);
    }
    json_object_set_new(root, "schema", schema);
    json_object_set_new(root, "divergences", divs);
    json_object_set_new(root, "summary",
                        json_pack("{s:b, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:f}", "equal",
                                  !report_differs(r), "transient", (json_int_t)s->transient,
                                  "matched_on_fetch", (json_int_t)s->matched_on_fetch, "changed",
                                  (json_int_t)s->changed, "missing_in_target",
                                  (json_int_t)s->missing, "extra_in_target", (json_int_t)s->extra,
                                  "schema", (json_int_t)s->schema, "ranges", (json_int_t)s->ranges,
                                  "workers", (json_int_t)s->workers, "elapsed_seconds",
                                  s->elapsed));
    char *txt = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    if (txt)
        puts(txt);
    free(txt);
    json_decref(root);
}
