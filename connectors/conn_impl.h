/* Private to connectors/: what a driver implements, and the SQL builder the
 * drivers share. */
#ifndef CONN_IMPL_H
#define CONN_IMPL_H

#include "conn.h"

typedef struct conn_ops {
    void (*free)(conn *c);
    int (*describe)(conn *c, const char *table, conn_table **out, sl_err *err);
    /* Runs sql with params; calls fn per row. */
    int (*query)(conn *c, const char *sql, const enc_val *params, size_t nparams, size_t ncols,
                 const int *cls, conn_row_fn fn, void *ctx, sl_err *err);
    /* A fetch by key: optional, query's equal for a driver that can do
     * better with a statement that is run again and again. */
    int (*fetch)(conn *c, const char *sql, const enc_val *params, size_t nparams, size_t ncols,
                 const int *cls, conn_row_fn fn, void *ctx, sl_err *err);
    /* A whole key range (params are the decoded bounds, lo's first):
     * optional, for a driver with a cheaper way than query's one row at a
     * time; it shapes the SQL itself (conn_range_sql). */
    int (*stream_range)(conn *c, const conn_query *q, int lo_kind, int hi_kind,
                        const enc_val *params, size_t nparams, conn_row_fn fn, void *ctx,
                        sl_err *err);
    /* The database's own estimate of the rows sql returns, without running
     * it: optional. Used instead of count(*) from CONN_ESTIMATE_MIN rows. */
    int (*estimate)(conn *c, const char *sql, uint64_t *rows, sl_err *err);
    int (*is_broken)(const conn *c);
    /* Appends a quoted identifier. */
    int (*quote)(conn *c, sl_buf *out, const char *ident);
    const char *text_key_collate; /* appended to text key columns */
    const char *text_key_prefix;  /* put before them (optional) */
    /* appended to the table to read a sample of its pages, percentage as
     * parameter $1 (optional) */
    const char *tablesample;
    /* else a condition keeping about that percentage of the rows, the
     * same ones each time it is run (ANDed to the WHERE; optional) */
    const char *sample_where;
    int numbered_dollar; /* $1 (PostgreSQL) rather than ?1 (SQLite) */
    int bare_question;   /* ? (MySQL), parameter n being the n-th to appear */
    /* Values come out in their storage class, which the database orders by
     * before the value (SQLite: integers < text < blobs) and which a bound
     * parameter must share to match: key values are checked against it. */
    int has_storage_classes;
    /* One row: whether the server replays another's WAL ('true'/'false' as
     * text) and its replication lag in seconds as text (NULL: unknown);
     * optional (PostgreSQL). */
    const char *replica_lag_sql;
} conn_ops;

#define CONN_ESTIMATE_MIN 1000000
#define CONN_SAMPLE_MIN 100000 /* rows from which split keys come from a sample */

struct conn {
    const conn_ops *ops;
    char name[256];
    void (*tick)(void *ctx); /* conn_set_tick: called while a read waits */
    void *tick_ctx;
};

/* Describing: appends a key column's name (len bytes) to t; appends a
 * column (name and type as the database spells them, of class cls) to t,
 * whose cols hold *cap slots (grown by doubling). 0, or -1 with err. */
int conn_table_add_key(conn_table *t, const char *name, size_t len, sl_err *err);
conn_col *conn_table_add_col(conn_table *t, size_t *cap, const char *name, size_t nlen,
                             const char *type, size_t tlen, int cls, sl_err *err);

/* The SELECT of a key range (bounds of kind MK_*), its parameters written
 * as ptext[n - 1] when ptext is given, else as the driver's placeholders.
 * NUL-terminated. -1 when memory runs out. */
int conn_range_sql(conn *c, const conn_query *q, int lo_kind, int hi_kind, const char *const *ptext,
                   sl_buf *sql);

conn *conn_pg_open(const char *dsn, int read_timeout_ms, sl_err *err);
conn *conn_sqlite_open(const char *path, int read_timeout_ms, int writable, sl_err *err);
conn *conn_mysql_open(const char *dsn, int read_timeout_ms, sl_err *err);

#endif
