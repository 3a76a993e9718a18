/* report: the divergences of one job, collected, sorted by key and
 * printed as text or as the JSON document described in the README. */
#ifndef REPORT_H
#define REPORT_H

#include <stddef.h>
#include <stdint.h>

#include "../coordinator/co.h"

typedef struct col_rec {
    char *column, *source, *target;
} col_rec;

typedef struct div_rec {
    int kind;
    int status; /* CO_CONFIRMED, CO_TRANSIENT, or 0 without re-checks */
    uint8_t *key;
    size_t klen;
    char **key_vals;
    size_t nkey;
    col_rec *cols;
    size_t ncols;
    char *column, *detail, *stype, *ttype;
} div_rec;

typedef struct report {
    div_rec *v;
    size_t n, cap;
    char **key_cols;
    size_t nkey;
    int progress;
    int oom;
} report;

/* A co_callbacks.event: copies ev into the report (ctx is the report). */
int report_add(void *ctx, const co_event *ev);
/* A co_callbacks.progress: a progress line on stderr if r->progress. */
void report_progress(void *ctx, const co_progress *p);
void report_sort(report *r);
/* Whether any divergence is not transient (what exit status 1 means). */
int report_differs(const report *r);
void report_print_text(const report *r, const co_summary *s, const char *table, const char *ttable);
void report_print_json(const report *r, const co_summary *s, const char *table, const char *ttable);
void report_free(report *r);

#endif
