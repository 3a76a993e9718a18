/* fix: the statements that make a target table equal to its source —
 * `sluice diff --fix-sql FILE` and `sluice repair`.
 *
 * A diff's row divergences are collected (encoded key, kind, names of the
 * changed columns) in private temporary files, never in memory. Once the
 * diff is done, the fix opens both databases itself (the source read-only),
 * fetches the source's full rows for the keys missing in or changed on the
 * target, and builds DELETE (extra in target), UPDATE of only the changed
 * columns, and INSERT (missing) statements, keyed by the key columns, in
 * batches of one transaction each, deletes first. Literals are written for
 * the TARGET's dialect (PostgreSQL, SQLite, MySQL/MariaDB) from the values'
 * canonical forms (merkle/enc.h), so a SQLite source can repair a
 * PostgreSQL target and back; between two databases of one engine,
 * PostgreSQL text and SQLite's stored values are copied as they are.
 */
#ifndef FIX_H
#define FIX_H

#include <stdint.h>
#include <stdio.h>

#include "../coordinator/co.h"
#include "cli.h"

#define FIX_BATCH_DEFAULT 500      /* statements per transaction */
#define FIX_MAX_ROWS_DEFAULT 10000 /* sluice repair --max-rows */

typedef struct fix fix;

/* What the fix options of diff and repair say, taken off argv by
 * fix_take_args. */
typedef struct fix_args {
    const char *sql_file;    /* --fix-sql FILE */
    int apply;               /* repair --apply */
    int64_t max_rows;        /* repair --max-rows (default FIX_MAX_ROWS_DEFAULT) */
    int64_t rows_per_second; /* repair --rows-per-second: apply throttle (0: none) */
    long batch;              /* repair --batch: statements a transaction */
    int help;
} fix_args;

/* Removes the fix options from argv (compacting it; *argc shrinks): only
 * --fix-sql for diff (repair 0), all of them for repair. -1 to go on, else
 * 2 after a printed error. */
int fix_take_args(int *argc, char **argv, int repair, fix_args *fa);

/* A collector for one diff: fix_event takes its divergences. NULL when
 * memory or temporary files run out. */
fix *fix_new(sl_err *err);
void fix_free(fix *f);

/* Hands events on to next (report_add) with its ctx, and progress to
 * next_progress, after recording row divergences (transient ones are
 * skipped). */
typedef struct fix_tap {
    fix *f;
    int (*next)(void *ctx, const co_event *ev);
    void (*next_progress)(void *ctx, const co_progress *p);
    void *ctx;
} fix_tap;
int fix_tap_event(void *tap, const co_event *ev);
void fix_tap_progress(void *tap, const co_progress *p);

/* Whether recording a divergence failed (the job was stopped): 1 with *err
 * saying why, else 0. */
int fix_error(const fix *f, sl_err *err);

/* Rows the fix would insert, update and delete (divergences recorded). */
void fix_counts(const fix *f, uint64_t *ins, uint64_t *upd, uint64_t *del);

/* Opens SOURCE (read-only) and TARGET of a (read-write when writable),
 * describes both tables, fetches the source rows and builds the
 * statements in batches of batch (0: FIX_BATCH_DEFAULT). Rows gone from
 * the source since the diff are left out (counted). A key the diff saw on
 * one side only but which the other side has after all (outside a --where,
 * or written since) is updated whole: never deleted while the source has
 * it, never inserted while the target has it. 0, or -1 with err. */
int fix_build(fix *f, const diff_args *a, int writable, long batch, sl_err *err);

/* After fix_build: the statements as a SQL script (a header comment: source
 * and target without passwords, table, counts; then each batch inside a
 * transaction). fix_write_file writes it to path atomically (a temporary
 * file beside it, renamed): an error leaves no file behind. */
int fix_write(fix *f, FILE *out, sl_err *err);
int fix_write_file(fix *f, const char *path, sl_err *err);

/* What fix_build made and fix_apply did. */
typedef struct fix_result {
    uint64_t inserts, updates, deletes; /* statements built */
    uint64_t vanished;                  /* divergent keys no longer in the source */
    uint64_t batches;
    uint64_t applied;          /* statements committed by fix_apply */
    uint64_t checked, unequal; /* fix_recheck: keys looked at, still different */
} fix_result;
void fix_result_get(const fix *f, fix_result *r);

/* After fix_build(writable): runs the batches against the target, one
 * transaction each, at most rows_per_second statements a second (0: no
 * throttle). A failed batch is rolled back and ends the apply (-1 with
 * err naming the batch; the batches before it stay committed). */
int fix_apply(fix *f, int64_t rows_per_second, sl_err *err);

/* After fix_apply: fetches every divergent key from both sides and
 * compares their canonical encodings (the diff's columns and flags).
 * Prints up to 10 keys still unequal on stderr. 0, or -1 with err. */
int fix_recheck(fix *f, sl_err *err);

#endif
