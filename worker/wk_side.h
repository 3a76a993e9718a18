/* A range read on a thread of its own (the worker's merge: one side read
 * here while the worker's loop reads the other). Internal to worker/.
 *
 * The thread streams q's rows in lo..hi from c and copies each row (every
 * column's value, its bytes into a batch's arena) into a bounded queue:
 * batches of at most WK_SIDE_BATCH_ROWS rows or WK_SIDE_BATCH_BYTES bytes
 * (one row bigger than that gets a batch of its own), at most
 * WK_SIDE_QUEUE batches waiting, so memory stays flat whatever the range.
 * The thread never touches anything but c and the queue: the caller's
 * heartbeats stay the caller's. */
#ifndef WK_SIDE_H
#define WK_SIDE_H

#include "../connectors/conn.h"

#define WK_SIDE_BATCH_ROWS 256
#define WK_SIDE_BATCH_BYTES (1u << 20)
#define WK_SIDE_QUEUE 4

typedef struct wk_side wk_side;

/* Starts reading. c, q, lo and hi must stay valid (and c unused by anyone
 * else, its tick hook cleared) until wk_side_free. NULL with err set. */
wk_side *wk_side_start(conn *c, const conn_query *q, const mk_bound *lo, const mk_bound *hi,
                       sl_err *err);

/* The next row: 1 with *v (q->ncols values, valid until the next call), 0
 * at the end of the read, 2 when none came within wait_ms (ask again), -1
 * when the read failed (err holds its error, with its code). */
int wk_side_next(wk_side *s, int wait_ms, const enc_val **v, sl_err *err);

/* Rows handed out by wk_side_next so far. */
uint64_t wk_side_rows(const wk_side *s);

/* Stops the read if it still runs (the database is told to cancel it at
 * its next row; a query still waiting on the server, e.g. for a lock, ends
 * at the read timeout), joins the thread and frees s; c is left open.
 * While it waits for the thread, tick(ctx) is called every 20 ms (the
 * caller's heartbeats; NULL: none). Accepts NULL. */
void wk_side_free(wk_side *s, void (*tick)(void *ctx), void *ctx);

#endif
