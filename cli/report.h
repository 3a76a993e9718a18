/* report: the divergences of one job, collected, sorted by key and
 * printed as text or as the JSON document described in the README. */
#ifndef REPORT_H
#define REPORT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "../coordinator/co.h"
#include "cli.h"

/* A schema divergence. */
typedef struct div_rec {
    int kind;
    int status;
    char *column, *detail, *stype, *ttype;
} div_rec;

/* Schema divergences stay in memory (a few per table); row divergences go to
 * a private temporary file (in TMPDIR), already formatted as they print
 * (report.json, keys_only), and come back sorted by key (as they
 * came when they came in key order, run after run when they came in
 * disjoint ordered runs (co_event.run), else through a temporary SQLite
 * database), so a table that differs everywhere costs disk, not memory. Zero-initialise, then
 * report_free. */
typedef struct report {
    div_rec *v; /* schema divergences */
    size_t n, cap;
    char **key_cols;
    size_t nkey;
    FILE *spill;       /* row divergences, opened at the first */
    sl_buf body, last; /* a row's text; the last key not transient */
    int unsorted;      /* a key came below the one before: read back sorted */
    uint64_t ntransient;
    uint64_t nrows, ndiffer;
    int progress;
    int oom;
    /* issue 15: --summary-only (row divergences counted, never kept),
     * --keys-only (changed rows carry no columns), and the replica-lag pause
     * last told (a line on stderr when it starts and ends) */
    int summary_only, keys_only;
    char paused[320];
    /* The format asked (--format json, else text), set with keys_only
     * before the first report_add: each row divergence is formatted as it
     * comes, and report_finish must be asked for the same format. */
    int json;
    /* Ordered runs (co_event.run): each run's first and last key and the
     * stretches of the spill it wrote, so rows_each can read disjoint runs
     * back one after the other instead of sorting. Slots indexed by run id;
     * no_runs once a row had no run or the bookkeeping grew too large. */
    struct report_run *runs;
    size_t nruns;
    struct report_chunk *chunks;
    size_t nchunks, capchunks;
    uint64_t spilled; /* bytes written to the spill */
    int no_runs;
} report;

/* A co_callbacks.event: copies ev into the report (ctx is the report). */
int report_add(void *ctx, const co_event *ev);
/* A co_callbacks.progress: a progress line on stderr if r->progress. */
void report_progress(void *ctx, const co_progress *p);
/* The end of a job, for diff and submit --wait: refuses a report that could
 * not be kept and a job that compared no row (unless --allow-empty), then
 * prints the report as a->format asks. Returns the exit status, 0 (equal)
 * or 1 (different), or -1 with err set. */
int report_finish(report *r, const co_summary *s, const diff_args *a, sl_err *err);
void report_free(report *r);

#endif
