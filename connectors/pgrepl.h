/* pgrepl: the keys a PostgreSQL database changes, as they commit, through
 * logical decoding with the built-in pgoutput plugin (no server extension).
 *
 * sluice owns one publication and one logical slot per stream, both named
 * `name` ([a-z0-9_], 1..63 characters): pr_setup creates them, pr_teardown
 * drops them, pr_orphaned finds slots a crashed process left behind.
 * pr_open starts the slot's stream; pr_next yields one changed key at a
 * time, never a row's other columns.
 *
 * Delivery: PostgreSQL decodes a transaction only once it has committed, and
 * sends it whole (BEGIN, its changes, COMMIT). pr_next returns its changes
 * as they arrive, each stamped with the transaction's commit LSN (known from
 * BEGIN), then one PR_COMMIT change. Nothing is buffered, so a transaction of
 * a million rows costs the memory of one. A consumer that has handled a
 * PR_COMMIT passes its end_lsn to pr_confirm: the slot may then free the WAL
 * before it, and a stream reopened later starts after that transaction.
 *
 * The key is the table's replica identity (its primary key by default; every
 * column under REPLICA IDENTITY FULL), as PostgreSQL's text output.
 *
 * Errors: -1 / NULL with err set (base/sl.h codes): SL_INVALID for a bad
 * name, SL_NOT_FOUND for a missing table or slot, SL_AUTH for refused
 * credentials, SL_DATABASE for a server or connection failure, SL_INTERNAL
 * for a malformed message. Messages are one line and never hold a password.
 */
#ifndef PGREPL_H
#define PGREPL_H

#include <stddef.h>
#include <stdint.h>

#include "../base/sl.h"

/* A WAL position; printed as PostgreSQL does with PR_LSN_FMT / PR_LSN_ARGS. */
typedef uint64_t pr_lsn;
#define PR_LSN_FMT "%X/%X"
#define PR_LSN_ARGS(l) (unsigned)((l) >> 32), (unsigned)(l)

typedef enum pr_kind {
    PR_INSERT = 1,
    PR_UPDATE,   /* key is the new key; old_key set when the key changed */
    PR_DELETE,   /* key is the deleted row's key */
    PR_TRUNCATE, /* the whole table; no key */
    PR_COMMIT    /* the end of the transaction whose changes came before */
} pr_kind;

/* One change. Every pointer is owned by the stream (or decoder) and valid
 * until the next pr_next / pr_decode on it. */
typedef struct pr_change {
    pr_kind kind;
    const char *schema, *table;   /* not for PR_COMMIT */
    size_t nkey;                  /* 0 for PR_TRUNCATE and PR_COMMIT */
    const char *const *key_names; /* nkey column names */
    const char *const *key;       /* nkey values as text; NULL for SQL NULL */
    /* PR_UPDATE whose key changed (one change carries both keys): the old
     * key's nkey values, else NULL */
    const char *const *old_key;
    pr_lsn commit_lsn; /* the transaction's commit record */
    pr_lsn end_lsn;    /* PR_COMMIT: the end of that record, what to confirm */
    uint32_t xid;
    int64_t commit_time_ms; /* the transaction's commit time, ms since 1970 */
} pr_change;

/* Creates publication `name` FOR TABLE tables[0..n) (each "table" or
 * "schema.table", case-sensitive as written, quoted) and logical slot
 * `name` (pgoutput) on dsn's database, in that order (the slot must see the
 * publication from its first change). *lsn (may be NULL) gets the slot's
 * consistent point: changes committed after it are streamed. On failure
 * nothing is left behind. The database needs wal_level = logical. */
int pr_setup(const char *dsn, const char *name, const char *const *tables, size_t n, pr_lsn *lsn,
             sl_err *err);

/* Drops slot and publication `name` if present (0 when neither is). A slot
 * still held by a stream (a dead process's, or a live one's) has its
 * backend terminated first. */
int pr_teardown(const char *dsn, const char *name, sl_err *err);

/* The inactive pgoutput slots of dsn's database whose names start with
 * prefix (taken literally): those a crashed process left. *names gets a
 * malloc'd array of *n malloc'd names (free with pr_names_free). */
int pr_orphaned(const char *dsn, const char *prefix, char ***names, size_t *n, sl_err *err);
void pr_names_free(char **names, size_t n);

typedef struct pr_stream pr_stream;

/* Starts streaming slot `slot` for publication `publication` (both names as
 * for pr_setup) on a replication=database connection. start_lsn 0 resumes
 * from the slot's confirmed position; a transaction is sent when its commit
 * LSN is at or past both. */
pr_stream *pr_open(const char *dsn, const char *slot, const char *publication, pr_lsn start_lsn,
                   sl_err *err);

/* Waits up to timeout_ms for the next change: 1 with *out filled, 0 when
 * none came in time, -1 on error (the stream is then unusable: free it).
 * Answers the server's keepalives and reports the confirmed position at
 * least every 10 s while called. */
int pr_next(pr_stream *s, int timeout_ms, pr_change *out, sl_err *err);

/* Marks everything up to lsn (a PR_COMMIT's end_lsn) as handled; sent as
 * the flushed position in the next status update (pr_next, pr_free). While
 * everything delivered is confirmed, idle keepalives advance it too, so the
 * slot does not hold WAL for changes to other tables. */
void pr_confirm(pr_stream *s, pr_lsn lsn);

/* The server's WAL end as it last reported it (keepalives and data; 0
 * before the first), and the position confirmed so far (pr_confirm, or
 * advanced by idle keepalives): their difference is the slot's lag. */
pr_lsn pr_server_lsn(const pr_stream *s);
pr_lsn pr_confirmed_lsn(const pr_stream *s);

/* The name shown in errors: postgresql://user@host:port/db. */
const char *pr_name(const pr_stream *s);

/* Reports the confirmed position, ends the stream (CopyDone) and closes.
 * NULL is fine. */
void pr_free(pr_stream *s);

#endif
