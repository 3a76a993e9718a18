/* co: the coordinator. It binds a ROUTER socket for workers, and runs a diff
 * job across them: describe both tables (through workers: the coordinator
 * never opens a source or target database), reconcile their schemas, split
 * the key space into ranges, have each range's source and target trees built
 * in parallel, compare them, drill into differing spans down to rows and
 * columns, and report every divergence through a callback as it is found.
 */
#ifndef CO_H
#define CO_H

#include <stddef.h>
#include <stdint.h>

#include "../base/sl.h"

enum co_kind {
    CO_MISSING = 1, /* row in source, not in target */
    CO_EXTRA,       /* row in target, not in source */
    CO_CHANGED,     /* same key, different values */
    CO_SCHEMA,      /* column missing on one side, or incompatible types */
};

/* A column that differs: display text of each side, NULL for SQL NULL. */
typedef struct co_coldiff {
    const char *column;
    const char *source, *target;
} co_coldiff;

/* One divergence. Pointers are valid during the callback only. For rows:
 * key (encoded, memcmp-ordered) and key_vals (display text per key column);
 * for CO_CHANGED also cols. For CO_SCHEMA: column, detail ("missing in
 * target", ...) and the types on each side (NULL where absent). */
typedef struct co_event {
    int kind;
    const uint8_t *key;
    size_t klen;
    const char *const *key_cols;
    const char *const *key_vals;
    size_t nkey;
    const co_coldiff *cols;
    size_t ncols;
    const char *column, *detail, *source_type, *target_type;
} co_event;

typedef struct co_progress {
    size_t ranges_done, ranges;
    uint64_t rows_done, rows_expected;
} co_progress;

typedef struct co_callbacks {
    int (*event)(void *ctx, const co_event *ev); /* non-zero aborts the job */
    void (*progress)(void *ctx, const co_progress *p);
    void *ctx;
} co_callbacks;

typedef struct co_diff_opts {
    const char *source_db, *target_db; /* database names the workers announced */
    const char *table, *target_table;  /* target_table NULL: same as table */
    const char *const *key;            /* NULL: the source's primary key */
    size_t nkey;
    const char *const *columns; /* NULL: all common columns */
    size_t ncolumns;
    const char *const *exclude;
    size_t nexclude;
    const char *where;
    int strict;    /* keep type classes in the hash */
    size_t ranges; /* 0: chosen from worker count and table size */
} co_diff_opts;

typedef struct co_summary {
    uint64_t source_rows, target_rows;
    size_t ranges, workers;
    uint64_t missing, extra, changed, schema;
    double elapsed;
    char source_name[256], target_name[256];
} co_summary;

typedef struct co co;

/* Binds the worker socket at endpoint on zctx. NULL with err set. */
co *co_new(void *zctx, const char *endpoint, sl_err *err);
void co_free(co *c);

/* Waits until n workers have said hello, or fails after timeout_ms. */
int co_wait_workers(co *c, size_t n, int timeout_ms, sl_err *err);

/* Runs one diff job. 0: done (divergence or not; see summary); -1: the job
 * could not be run or finished, with err saying why. */
int co_diff(co *c, const co_diff_opts *o, const co_callbacks *cb, co_summary *sum, sl_err *err);

/* Tells every known worker to stop. */
void co_shutdown_workers(co *c);

#endif
