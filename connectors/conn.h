/* conn: one interface to a database.
 *
 * A DSN is "sqlite:PATH" for a SQLite file (opened read-only),
 * "mysql://USER:PASSWORD@HOST:PORT/DB" (or mariadb://; MYSQL_PWD honoured)
 * for MySQL and MariaDB, or anything libpq accepts (postgresql:// URIs,
 * "host=... dbname=..." conninfo; PGHOST, PGPASSWORD, .pgpass honoured as
 * libpq does).
 *
 * Rows come out in key order as enc_val arrays (first the key columns in key
 * order, then the rest of the query's columns), never as SQL text: every
 * value sent to the database is a bound parameter and every identifier is
 * quoted by the driver's own function. Text keys are ordered bytewise
 * (PostgreSQL COLLATE "C", SQLite BINARY, MySQL a NO PAD binary collation)
 * to match the key encoding.
 */
#ifndef CONN_H
#define CONN_H

#include <stddef.h>
#include <stdint.h>

#include "../base/sl.h"
#include "../merkle/enc.h"
#include "../merkle/mk_diff.h"

typedef struct conn conn;

/* Most columns a query may read (ENC_MAX_COLS). Only the compared columns
 * count; a described table may have more (SQLite). */
#define CONN_MAX_COLS ENC_MAX_COLS

typedef struct conn_col {
    char *name;
    char *type; /* the database's own spelling, e.g. "numeric(12,2)" */
    int cls;    /* enc_class */
} conn_col;

/* A described table. key[] names the primary key columns in key order
 * (nkey 0 when there is none). */
typedef struct conn_table {
    conn_col *cols;
    size_t ncols;
    char **key;
    size_t nkey;
    int is_loosely_typed; /* SQLite: declared types are hints, not rules */
} conn_table;

/* What to read: cols[0..nkey) are the key, cls[] the class each column is
 * read as, where an optional SQL filter (the user's own, like
 * pt-table-checksum's --where). */
typedef struct conn_query {
    const char *table;
    const char *const *cols;
    const int *cls;
    size_t ncols, nkey;
    const char *where;
    uint64_t limit; /* a range read: at most this many rows (0: all) */
} conn_query;

/* Receives one row; a non-zero return stops the read with that error. */
typedef int (*conn_row_fn)(void *ctx, const enc_val *vals, size_t n, sl_err *err);

/* A PostgreSQL connection attempt gives up after this many seconds unless
 * the DSN sets connect_timeout or PGCONNECT_TIMEOUT is set (MySQL: always). */
#define CONN_CONNECT_TIMEOUT_S 10
/* The default read-inactivity deadline: a query whose server sends nothing
 * for this long (a lock, a stalled host) fails and its session is
 * dropped. */
#define CONN_READ_TIMEOUT_MS 300000

/* Opens a connection; NULL with err set (never containing a password).
 * read_timeout_ms: the PostgreSQL and MySQL read-inactivity deadline, 0 for
 * CONN_READ_TIMEOUT_MS (SQLite waits up to that long for a lock). */
conn *conn_open(const char *dsn, int read_timeout_ms, sl_err *err);
void conn_free(conn *c);

/* ---- the write path (sluice repair) -------------------------------------
 * The only way sluice writes to a database: a repair applying its fix to a
 * target. Everything else reads. */

/* As conn_open, but a SQLite file opens read-write (still never created: a
 * wrong path is an error). PostgreSQL and MySQL sessions are the same as
 * conn_open's. */
conn *conn_open_rw(const char *dsn, int read_timeout_ms, sl_err *err);

/* Runs one SQL statement that returns no rows (a SET, BEGIN, COMMIT,
 * ROLLBACK, INSERT, UPDATE or DELETE), with no parameters: the caller
 * has built its literals. 0, or -1 with err set. */
int conn_exec(conn *c, const char *sql, sl_err *err);

/* Runs a query without parameters whose ncols (at most 8) columns are read
 * as text, calling fn per row. 0, or -1 with err set. */
int conn_query_text(conn *c, const char *sql, size_t ncols, conn_row_fn fn, void *ctx, sl_err *err);

/* Has fn(ctx) called about every 100 ms while a read waits on the
 * database (PostgreSQL, MySQL): one row of hundreds of megabytes can take seconds
 * to arrive, and a worker must keep sending heartbeats meanwhile. fn must
 * not use c. NULL fn: no calls. */
void conn_set_tick(conn *c, void (*fn)(void *ctx), void *ctx);

/* Whether the connection itself failed (server gone, backend terminated),
 * as opposed to a query error: the caller may reconnect and retry. */
int conn_is_broken(const conn *c);

/* A name for messages: driver, host, port, database — no secrets. */
const char *conn_name(const conn *c);

/* Describes table ("name" or "schema.name", taken literally). The caller
 * frees *out with conn_table_free. Missing table: error. */
int conn_describe(conn *c, const char *table, conn_table **out, sl_err *err);
void conn_table_free(conn_table *t);

/* Counts the rows of q and picks up to nranges - 1 split keys so that the
 * ranges between them hold about equal numbers of rows; calls fn with the
 * nkey key values of each, in increasing order. *rows is for planning: on a
 * big PostgreSQL table it is the planner's estimate, not count(*). */
int conn_split_keys(conn *c, const conn_query *q, size_t nranges, uint64_t *rows, conn_row_fn fn,
                    void *ctx, sl_err *err);

/* Like conn_split_keys, for the rows of q whose key lies within lo..hi
 * only (--chunk-time splitting a pending range): *rows is their count, and
 * the split keys lie strictly inside the bounds. An integer key is split
 * evenly between its min and max there; another is walked in key order
 * (the keys only), every rows/nranges-th kept. */
int conn_split_range(conn *c, const conn_query *q, const mk_bound *lo, const mk_bound *hi,
                     size_t nranges, uint64_t *rows, conn_row_fn fn, void *ctx, sl_err *err);

/* A PostgreSQL hot standby's replication lag in seconds into *lag_s: 0
 * when it replayed all it received (an idle primary sends nothing), else
 * the age of the last transaction it replayed; -1 when unknown (nothing
 * replayed yet). A server that is not a replica, or another database, is
 * an SL_INVALID error. */
int conn_replica_lag(conn *c, double *lag_s, sl_err *err);

/* Streams the rows of q whose encoded key lies within lo..hi, in key order. */
int conn_stream_range(conn *c, const conn_query *q, const mk_bound *lo, const mk_bound *hi,
                      conn_row_fn fn, void *ctx, sl_err *err);

/* Reads the rows with the given encoded keys (absent keys are skipped). */
int conn_fetch_keys(conn *c, const conn_query *q, const uint8_t *const *keys, const size_t *lens,
                    size_t nkeys, conn_row_fn fn, void *ctx, sl_err *err);

#endif
