/* wk_follow: one table's changed keys, followed on a thread of its own
 * (connectors/pgrepl.h) beside the worker's loop, for change-driven
 * verification (follow / keys / unfollow, proto/README.md). Worker-internal:
 * only worker/wk.c includes it.
 *
 * The thread reads the slot's stream and turns each change's key (text, as
 * pgoutput sends it) into the job's key encoding (enc_key); a transaction's
 * keys join the shared queue at its commit. The loop takes them
 * (wk_follow_take) under the lock: ZeroMQ sockets stay on the loop's thread.
 * A position is confirmed to the slot only once the coordinator acked the
 * batch that completed it, so a follow restarted anywhere resumes where the
 * coordinator's knowledge ends: nothing is missed, a few keys may come
 * twice. */
#ifndef WK_FOLLOW_H
#define WK_FOLLOW_H

#include <stddef.h>
#include <stdint.h>

#include "../base/sl.h"

typedef struct wk_follow wk_follow;

/* Follows table's changes through slot `slot` (publication of the same
 * name) on dsn: an existing slot is resumed from its confirmed position,
 * else slot and publication are created. Inactive slots named sluicecv_*
 * other than this one (a crashed follow's) are dropped first, each logged.
 * keycols[0..nkey) are the job's key columns, cls their classes. Returns
 * at once: the slot is set up on the follow's thread (creating one waits
 * for the transactions running then), and a failure there comes from the
 * next wk_follow_take. A slot another process holds (a follow its
 * coordinator gave up on) is waited for; a follow nobody takes from for
 * 20 s lets its slot go, and takes it again at the next take. Orphans
 * are dropped only with has_live, and only those of jobs not in
 * live[0..nlive) (the jobs alive on the coordinator: one whose follower is
 * being replaced has an idle slot too). NULL with err when the thread
 * cannot start. */
wk_follow *wk_follow_start(const char *dsn, const char *slot, const char *table,
                           const char *const *keycols, const int *cls, size_t nkey,
                           const int64_t *live, size_t nlive, int has_live,
                           void (*log)(void *ctx, const char *line), void *log_ctx, sl_err *err);

/* The name it follows under (its slot). */
const char *wk_follow_slot(const wk_follow *f);

/* Acks everything up to ack (an lsn an earlier take returned), then takes
 * up to max queued keys: appended to keys as [u32 len][key]..., *n of them,
 * and their transactions' commit times (int64 ms since 1970, host order,
 * one per key) to at.
 * *lsn: the end of the last transaction all of whose keys have now been
 * taken (0: none new), to be acked by the next take. *lag: bytes of WAL
 * between the server's end and the slot's confirmed position. Returns 0,
 * or -1 with err when the stream stopped (its reason; keys taken before it
 * stopped still come). */
int wk_follow_take(wk_follow *f, uint64_t ack, size_t max, sl_buf *keys, sl_buf *at, size_t *n,
                   uint64_t *lsn, uint64_t *lag, sl_err *err);

/* Stops the thread and closes the stream; drop: also drops the slot and
 * publication (0, or -1 with err when that failed). NULL is fine. */
int wk_follow_stop(wk_follow *f, int drop, sl_err *err);

/* Drops slot and publication `slot` (a sluicecv_ name only: a coordinator
 * may not drop other slots) that no follow of this process holds. */
int wk_follow_drop(const char *dsn, const char *slot, sl_err *err);

#endif
