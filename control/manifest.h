/* ct_manifest: a migration manifest, parsed and validated.
 *
 * The JSON document POST /migrations takes (control/README.md lists every
 * field, its default and what is allowed). Parsing refuses unknown fields
 * and names the field of every error ("cutover.steps[2]: 25 is below the
 * step before it (50); steps rise to 100"); fields left out get their
 * defaults, and ct_manifest_json writes the whole manifest back with them
 * filled in, which is the form the control database stores.
 */
#ifndef CT_MANIFEST_H
#define CT_MANIFEST_H

#include <stddef.h>
#include <stdint.h>

#include "../base/sl.h"

typedef enum ct_phase {
    CT_PH_PREPARE = 0,
    CT_PH_BACKFILL,
    CT_PH_DUAL_WRITE,
    CT_PH_SHADOW_READ,
    CT_PH_CUTOVER,
    CT_PH_CLEANUP,
    CT_PH_COUNT
} ct_phase;

typedef enum ct_strategy {
    CT_STRAT_AUTO = 0, /* omitted: classification picks one */
    CT_STRAT_CDC,
    CT_STRAT_DUAL_WRITE,
    CT_STRAT_BLUE_GREEN
} ct_strategy;

/* "prepare", ...; NULL out of range. parse: 0, or -1 for another name. */
const char *ct_phase_name(ct_phase p);
int ct_phase_parse(const char *s, ct_phase *out);
/* "auto", "cdc", "dual_write", "blue_green" */
const char *ct_strategy_name(ct_strategy s);
int ct_strategy_parse(const char *s, ct_strategy *out);

typedef struct ct_table {
    char *name;  /* as both sides call it */
    char *where; /* NULL: the whole table (a partial scope: dry runs) */
} ct_table;

/* A change window: days a bit set (bit 0 Monday .. bit 6 Sunday), minutes
 * after midnight in the window's zone; from > to wraps past midnight. */
typedef struct ct_window {
    unsigned days;
    int from_min, to_min;
    int utc_offset_min; /* "UTC" 0, "+02:00" 120 */
} ct_window;

/* The router the migration steers (control/README.md, "Routers"). */
typedef struct ct_router_cfg {
    int haproxy;                         /* 0: the routing endpoint only */
    char *read_backend, *write_backend;  /* haproxy: backend names */
    char *source_server, *target_server; /* haproxy: server names in both */
    char *write_frontend;                /* haproxy: where a write cutover holds new
                                            connections (default: write_backend's name) */
} ct_router_cfg;

typedef struct ct_manifest {
    char *id; /* [A-Za-z0-9_.-], 1..63 characters */
    char *source, *target;
    ct_table *tables;
    size_t ntables;
    ct_strategy strategy;
    ct_phase phases[CT_PH_COUNT]; /* in order, no repeats */
    size_t nphases;
    int steps[16]; /* read percent on the target per cutover step, rising, last 100 */
    size_t nsteps;
    int64_t soak_s;
    int64_t audit_every_s, sample_every_s;
    int verify_changes; /* each table's changes followed on both sides (a "changes" job) */
    int64_t max_divergent_rows;
    double max_lag_s;
    int64_t detection_latency_s;
    int64_t unreachable_s; /* the target or the router out of reach this long: abort */
    double max_shadow_ratio;
    ct_window *windows;
    size_t nwindows;
    unsigned approvals; /* bit (1u << phase) per phase that waits for an approver */
    int dry_run;
    ct_router_cfg router;
    char *description; /* NULL when absent; at most 1024 bytes */
} ct_manifest;

/* NULL with err (code SL_INVALID, the message naming the field) for a
 * manifest that is not valid JSON, has an unknown field, or a value out of
 * what is allowed. */
ct_manifest *ct_manifest_parse(const char *json, size_t len, sl_err *err);
void ct_manifest_free(ct_manifest *m);

/* The manifest as JSON with every default filled in (malloc'd; NULL when
 * memory runs out). ct_manifest_parse of it gives the same manifest. */
char *ct_manifest_json(const ct_manifest *m);

/* 1 when wall_ms (Unix ms) falls inside one of m's windows, or m has none. */
int ct_manifest_in_window(const ct_manifest *m, int64_t wall_ms);

/* ---- classification -------------------------------------------------------- */

typedef enum ct_class {
    CT_CLASS_SCHEMA_ONLY = 1,
    CT_CLASS_DATA_MOVE,
    CT_CLASS_REPLATFORM
} ct_class;

/* "schema-only", "data-move", "replatform" */
const char *ct_class_name(ct_class c);

/* What the control plane learnt of one side (control/pgadmin.h fills it). */
typedef struct ct_side_facts {
    char engine[16];     /* "postgresql", "sqlite" */
    int major;           /* server major version (15), 3 for SQLite */
    char server_id[128]; /* one server's identity: PostgreSQL's system identifier, a file's path */
    int logical;         /* PostgreSQL with wal_level = logical */
} ct_side_facts;

/* Classifies a scope: same server → schema-only; same engine and major
 * version → data-move; else replatform. reason gets one sentence saying
 * why, strategy the default (cdc where logical replication can run from
 * source to target, else dual_write). */
ct_class ct_classify(const ct_side_facts *src, const ct_side_facts *dst, ct_strategy *strategy,
                     char *reason, size_t reason_len);

#endif
