/* ct_pg: what the control plane asks PostgreSQL (and SQLite) directly,
 * over its own connections (DSNs from `sluice control --db-file`, never
 * from a manifest): the facts classification needs, the schema gate, the
 * aggregation audit, and logical replication (publication on the source,
 * subscription on the target, progress, lag, removal).
 *
 * Values travel as bound parameters; identifiers are quoted with
 * PQescapeIdentifier. Errors never carry a password: libpq's text is
 * scrubbed of the DSN's password before it reaches err.
 */
#ifndef CT_PGADMIN_H
#define CT_PGADMIN_H

#include <stddef.h>
#include <stdint.h>

#include "../base/sl.h"
#include "manifest.h"

typedef struct ct_db ct_db;

/* Opens dsn (postgresql://..., or a SQLite path / sqlite:// DSN as the
 * worker takes them). Unreachable or refused: NULL with err coded
 * SL_DATABASE or SL_AUTH. timeout_ms bounds connecting and every query. */
ct_db *ct_db_open(const char *dsn, int timeout_ms, sl_err *err);
void ct_db_free(ct_db *d);
int ct_db_is_pg(const ct_db *d);

/* Engine, major version, server identity, wal_level (ct_side_facts). */
int ct_db_facts(ct_db *d, ct_side_facts *out, sl_err *err);
/* The cheapest round trip (SELECT 1; nothing for SQLite): 0 when d answers. */
int ct_db_ping(ct_db *d, sl_err *err);

/* One column as the schema gate compares them. */
typedef struct ct_column {
    char *name, *type;    /* type: format_type() on PostgreSQL, declared type on SQLite */
    int not_null, in_key; /* in_key: part of the primary key */
} ct_column;

/* The columns of table in order; a missing table is SL_NOT_FOUND. */
int ct_db_columns(ct_db *d, const char *table, ct_column **out, size_t *n, sl_err *err);
void ct_columns_free(ct_column *c, size_t n);

/* Compares two column lists: 0 when compatible (same names, types, key);
 * else 1 with why set to one line naming the first column that differs
 * ("column total: numeric(12,2) on source, text on target"). */
int ct_columns_compare(const ct_column *a, size_t na, const ct_column *b, size_t nb, char *why,
                       size_t len);

/* The aggregation audit of one table: row count, and sum/min/max of every
 * numeric column (integer, numeric, real types), each as text exactly as
 * the database prints it (NULL for an empty table's sum/min/max), in one
 * statement and one snapshot. where (may be NULL) restricts it. */
typedef struct ct_aggregate {
    int64_t rows;
    char **names;  /* "sum(total)", "min(total)", ... */
    char **values; /* NULL for SQL NULL */
    size_t n;
} ct_aggregate;
int ct_db_aggregate(ct_db *d, const char *table, const char *where, ct_aggregate *out, sl_err *err);
void ct_aggregate_free(ct_aggregate *a);
/* 0 when equal; else 1 with why naming the first figure that differs. */
int ct_aggregate_compare(const ct_aggregate *a, const ct_aggregate *b, char *why, size_t len);

/* ---- logical replication (PostgreSQL both sides) ---------------------------- */

/* CREATE PUBLICATION name FOR TABLE ... on the source (an existing one of
 * that name is kept when it covers the same tables). */
int ct_pg_create_publication(ct_db *src, const char *name, const char *const *tables,
                             size_t ntables, sl_err *err);
/* CREATE SUBSCRIPTION name CONNECTION source_dsn PUBLICATION pub on the
 * target (copy_data = true; an existing one of that name is kept). */
int ct_pg_create_subscription(ct_db *dst, const char *name, const char *source_dsn,
                              const char *publication, sl_err *err);
/* The same with copy_data chosen: 0 for reverse replication (target ->
 * source after the write cutover), whose subscriber already holds every
 * row. An existing subscription of that name is kept as it is.
 *
 * PostgreSQL 15 has no `origin = none`: with A -> B and B -> A both
 * enabled, every change loops back to where it came from. The forward
 * subscription must be disabled (ct_pg_set_subscription_enabled, which
 * waits for its apply worker to stop) or dropped before the reverse one
 * is created, and never re-enabled while the reverse one exists: its slot
 * on the source has meanwhile kept the reverse stream's changes as the
 * source's own and would send them back (drop it and subscribe anew). */
int ct_pg_create_subscription_ex(ct_db *dst, const char *name, const char *source_dsn,
                                 const char *publication, int copy_data, sl_err *err);
/* ALTER SUBSCRIPTION name ENABLE or DISABLE on dst; a missing one is
 * SL_NOT_FOUND. Disabling returns once no apply or table-sync worker of
 * the subscription runs on dst (bounded by dst's timeout: SL_BUSY). */
int ct_pg_set_subscription_enabled(ct_db *dst, const char *name, int enabled, sl_err *err);
/* Drops both (each that exists; none existing is fine). */
int ct_pg_drop_replication(ct_db *src, ct_db *dst, const char *subscription,
                           const char *publication, sl_err *err);

typedef struct ct_repl_state {
    int exists, enabled;         /* the subscription on the target */
    size_t tables, tables_ready; /* pg_subscription_rel: all, and in state r (ready) */
    uint64_t source_lsn;         /* pg_current_wal_lsn() on the source */
    uint64_t confirmed_lsn;      /* the slot's confirmed_flush_lsn on the source */
    int64_t lag_bytes;           /* source_lsn - confirmed_lsn, >= 0 */
} ct_repl_state;
/* Reads the state of subscription name (the slot has the same name). */
int ct_pg_repl_state(ct_db *src, ct_db *dst, const char *name, ct_repl_state *out, sl_err *err);

/* The end of d's WAL as a number: every commit made before the call lies
 * at or before it, synchronous or not (pg_current_wal_insert_lsn()). */
int ct_pg_current_lsn(ct_db *d, uint64_t *lsn, sl_err *err);
/* Waits until the subscriber of subscription (on dst; its slot, of the
 * same name, on src, the publisher) has applied src's WAL up to lsn, by
 * the measure of ct_pg_repl_state (the greater of the slot's
 * confirmed_flush_lsn and the walsender's replay_lsn), polling every
 * 10 ms. 0 when it has; 1 when timeout_ms passed first; -1 with err set
 * (SL_NOT_FOUND when the subscription or the slot is missing). dst may be
 * NULL: then only the slot is looked for. For reverse replication src is
 * the target and dst the source. */
int ct_pg_wait_applied(ct_db *src, ct_db *dst, const char *subscription, uint64_t lsn,
                       int timeout_ms, sl_err *err);

/* Sets sequences of dst past their namesakes on src, since logical
 * replication does not carry sequences: tables NULL, every sequence in
 * src's pg_sequences; else only those tables' own (owned by one of their
 * columns, serial or identity, or named in one of their defaults). For
 * each (schema-qualified, in name order), dst's is set with
 * setval(..., v, true) to v = src's last_value + margin * increment_by
 * (margin >= 0 steps beyond it, in the sequence's direction), unless dst's
 * is already at or past v: a sequence never moves backwards. A source
 * sequence never used (last_value NULL) is skipped: no value of it is in
 * any row. All sequences are checked first, so nothing is set when one is
 * missing on dst (SL_NOT_FOUND naming the first), unreadable on src
 * (SL_AUTH) or when v falls outside dst's bounds (SL_INVALID). *synced
 * (may be NULL) counts the sequences set. Meant for a moment writes are
 * held: values taken on src after its read are covered only by the
 * margin. */
/* A router cut a session's TCP connection, but its backend finishes the
 * statement it is in, and commits: every client backend of d's database
 * in a statement or a transaction (but this session and sluice's own:
 * application_name sluice, sluice-control) is terminated, and waited for
 * until gone (SL_BUSY after timeout_ms). *ended (may be NULL) counts them. */
int ct_pg_end_sessions(ct_db *d, int timeout_ms, size_t *ended, sl_err *err);
int ct_pg_sync_sequences(ct_db *src, ct_db *dst, const char *const *tables, size_t ntables,
                         int64_t margin, size_t *synced, sl_err *err);

/* Seconds of replication lag from LSN samples: the caller records
 * (wall_ms, source_lsn) pairs as it reads them; lag is now minus the time
 * of the newest sample whose LSN the subscriber has confirmed (0 when it
 * has confirmed the newest; the oldest sample's age when it has confirmed
 * none). 64 samples, no allocation: when full, the sample whose
 * neighbours are closest in time goes (never the oldest or the newest), so
 * a stuck subscriber's lag keeps growing and old samples thin out. */
typedef struct ct_lag_clock {
    int64_t at_ms[64];
    uint64_t lsn[64];
    size_t n, head; /* head: unused (kept zero) */
} ct_lag_clock;
void ct_lag_record(ct_lag_clock *c, int64_t wall_ms, uint64_t source_lsn);
double ct_lag_seconds(const ct_lag_clock *c, int64_t now_ms, uint64_t confirmed_lsn);

/* ---- heartbeat (replication lag in seconds, as pt-heartbeat measures it) ----
 * A one-row table public.<table> (id, at_ms) on both sides, in the
 * publication: the control plane writes its clock into the publisher's
 * row every pass and reads the subscriber's; the lag is now minus what the
 * subscriber has applied. Right when idle (an LSN-based figure waits for
 * the subscriber's next status report, up to wal_sender_timeout / 2) and
 * when apply is stuck behind a lock. Both times are the control plane's
 * own clock: no skew between servers. */
/* publisher: with its row; else an empty table for the copy to fill */
int ct_pg_heartbeat_setup(ct_db *d, const char *table, int publisher, sl_err *err);
int ct_pg_heartbeat_beat(ct_db *d, const char *table, int64_t now_ms, sl_err *err);
int ct_pg_heartbeat_read(ct_db *d, const char *table, int64_t *at_ms, sl_err *err);
int ct_pg_heartbeat_drop(ct_db *d, const char *table, sl_err *err);

#endif
