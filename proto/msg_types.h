/* msg_types: every message type, described once. Each X(NAME, number,
 * name, direction, fields, required) gives the enum (MSG_NAME = number), the
 * name msg_type_name() returns, the row of the type table in
 * proto/README.md (msg_types_markdown; tests/test_proto.c checks the README
 * against it: change a type here, then paste the table that test prints),
 * and what msg_check_fields() demands of a message of that type: each
 * "field:kind" must be there, kind s a string, i an integer, b bin, a an
 * array, * anything (nil included). Numbers are the wire's: never reused.
 */
#ifndef MSG_TYPES_H
#define MSG_TYPES_H

/* clang-format off */
#define MSG_TYPES(X) \
    X(HELLO, 1, "hello", "worker → coordinator", \
      "`dbs`: [names of databases this worker reaches], `enc`: its canonical " \
      "encoding version (absent: 1); a coordinator registers only workers of " \
      "its own version; `trees`: how many trees it holds; `stream`: 1 when it " \
      "serves stream requests (a coordinator streams dense ranges only " \
      "through such workers; an older one does not say so); `merge`: 1 when it " \
      "serves merge requests", \
      "") \
    X(DESCRIBE, 2, "describe", "coordinator → worker", \
      "`db`, `table` → reply `source` (display name), `columns`: [[name, type, " \
      "class]], `key`: [names], `loose`: 0/1", \
      "db:s table:s") \
    X(SPLIT, 3, "split", "c → w", \
      "spec, `ranges`, and optionally `lo`, `hi` (split that key range only: " \
      "--chunk-time; its split keys lie strictly inside) → reply `rows`, " \
      "`bounds`: [encoded key]", \
      "db:s table:s cols:a cls:a nkey:i ranges:i") \
    X(TREE, 4, "tree", "c → w", \
      "spec, `lo`, `hi`, `tree` (id to keep it under; never reused, a re-issued " \
      "task gets a new one) → reply `tree`, `rows`, `nodes`: [root] (empty for " \
      "no rows)", \
      "db:s table:s cols:a cls:a nkey:i lo:* hi:* tree:i") \
    X(NODES, 5, "nodes", "c → w", \
      "`tree`, `level`, `index` → reply `nodes`: children", \
      "tree:i level:i index:i") \
    X(ROWS, 6, "rows", "c → w", \
      "spec, `lo`, `hi` → reply `rows`: [[key, row hash]], and `more` (see " \
      "Sizes)", \
      "db:s table:s cols:a cls:a nkey:i lo:* hi:*") \
    X(FETCH, 7, "fetch", "c → w", \
      "spec, `keys`: [encoded key, in key order] → reply `rows`: [[key, [column " \
      "encodings], [display text or nil]]], and `done` (see Sizes)", \
      "db:s table:s cols:a cls:a nkey:i keys:a") \
    X(RELEASE, 8, "release", "c → w", \
      "`tree` (no reply). A tree being built stops being read (its task answers " \
      "with an error nobody waits for); a tree not built yet never will be", \
      "tree:i") \
    X(SHUTDOWN, 9, "shutdown", "c → w", \
      "—", \
      "") \
    X(REPLY, 10, "reply", "w → c, coordinator → client", \
      "per request", \
      "") \
    X(ERROR, 11, "error", "any", \
      "`error`: one-line message, `code`: what kind of failure (below)", \
      "") \
    X(HEARTBEAT, 12, "heartbeat", "worker → coordinator", \
      "like hello (`dbs`, `enc`, `trees`, `stream`), at least every `--heartbeat`; a " \
      "coordinator that restarted learns its workers from these", \
      "") \
    X(SUBMIT, 13, "submit", "client → coordinator", \
      "`source`, `target` (database names the workers announced), `table`, " \
      "`target_table`, `key`, `columns`, `exclude` (lists of names), `where`, " \
      "`strict` (0/1), `ranges`, `rechecks`, `settle_ms`, " \
      "`max_rows_per_second`, `priority` (`high`, `normal` (absent), `low`), " \
      "`max_tasks` (most range tasks at once; 0 or absent: no cap), `share` " \
      "(1 to 100: the percent of wall-clock time the job's range tasks may " \
      "keep busy, each task counted; 0 or absent: no share), `tolerances` " \
      "(list of rules `OPTION:VALUE`, merkle/README.md, \"Tolerances\"; absent: " \
      "exact), `keys_only` (1: " \
      "changed rows by key, no column read), `max_divergences` (stop once " \
      "this many are confirmed), `chunk_time_ms` (split pending ranges " \
      "longer to read than this), `replicas` (database names) and " \
      "`max_replica_lag_ms` (no range task starts while one lags more) → " \
      "reply `job`", \
      "source:s target:s table:s") \
    X(STATUS, 14, "status", "client → coordinator", \
      "`job`, `events` (0/1) → reply `state` (queued, running, done, failed, " \
      "cancelled), `error`, `table`, `target_table` (nil when the same), " \
      "`source`, `target`, `source_rows`, `target_rows`, `ranges`, " \
      "`ranges_done`, `workers`, `changed`, `missing`, `extra`, `schema`, " \
      "`transient`, `elapsed_ms`, `submitted_ms`, `finished_ms`, `keys_only`, " \
      "`max_divergences` (as submitted, when set), `paused` (why its range " \
      "reads wait for a replica; absent otherwise), and with " \
      "`events`: `events` (the stored event frames, as bin)", \
      "job:i") \
    X(CANCEL, 15, "cancel", "client → coordinator", \
      "`job` → empty reply", \
      "job:i") \
    X(WORKERS, 16, "workers", "client → coordinator", \
      "→ reply `workers`: [[index, alive, busy, ms since last heard, " \
      "[databases], trees held]] (older coordinators send the first 5)", \
      "") \
    X(EVENT, 17, "event", "coordinator PUB", \
      "see below", \
      "event:s") \
    X(SCHEDULE_ADD, 18, "schedule_add", "client → coordinator", \
      "`name` (1 to 255 bytes, no control characters), `interval_s` (1 to " \
      "31536000), `spec` (bin: a whole submit frame, checked as a submit is) → " \
      "empty reply; a schedule of that name is replaced (its last job kept)", \
      "name:s interval_s:i spec:b") \
    X(SCHEDULE_DEL, 19, "schedule_del", "client → coordinator", \
      "`name` → reply `removed`: 1, or 0 if there was no such schedule", \
      "name:s") \
    X(SCHEDULES, 20, "schedules", "client → coordinator", \
      "→ reply `schedules`: [[name, interval_s, table, last job id or nil]], by " \
      "name", \
      "") \
    X(FOLLOW, 21, "follow", "c → w", \
      "spec (its key columns are the ones followed), `slot` (slot and " \
      "publication name, `sluicecv_<job>_<side>`), `live` (optional: [int] the " \
      "changes jobs alive on the coordinator) → empty reply once the follow " \
      "started; on its own thread the worker drops inactive `sluicecv_` slots " \
      "of jobs not in `live` (none without it), then resumes the slot from " \
      "its confirmed position or creates it (a failure comes as the next keys " \
      "reply's `error`)", \
      "db:s table:s cols:a cls:a nkey:i slot:s") \
    X(KEYS, 22, "keys", "c → w", \
      "`slot`, `ack` (the `lsn` of the last reply taken; 0: none) → reply " \
      "`keys`: [encoded key] changed since (at most 10,000), `at`: [int] one per " \
      "key, the commit time of the transaction that changed it (wall-clock ms " \
      "since 1970; from pgoutput's Begin; an older worker sends none, a reply " \
      "whose `at` has another length than `keys` is rejected), `lsn` (end of the " \
      "last transaction whose keys are all sent; ack it next), `lag` (bytes of " \
      "WAL the slot holds), `error` (nil, or why the stream stopped)", \
      "slot:s ack:i") \
    X(UNFOLLOW, 23, "unfollow", "c → w", \
      "`db`, `slot`, `keep` (optional, 1: the coordinator is shutting down and " \
      "resumes the job later: close the stream, keep the slot) → empty reply " \
      "once the stream is closed and its slot and publication are dropped", \
      "db:s slot:s") \
    X(LAG, 24, "lag", "c → w", \
      "`db` → reply `name` (the server, no secret), `lag_ms`: the replication " \
      "lag of that PostgreSQL hot " \
      "standby (0 when it replayed all it received; -1: unknown, nothing " \
      "replayed yet); an error (invalid) when it is not a replica", \
      "db:s") \
    X(STREAM, 25, "stream", "c → w", \
      "spec, `lo`, `hi`, `limit` (most rows; absent or 0: no limit but the " \
      "size) → reply `rows`: [[key, [column encodings], [display text or " \
      "nil]]] (as fetch's), every row of the span in key order, and `more: 1` " \
      "when it stopped at `limit` rows or at the size (see Sizes): its last row " \
      "is where, and the coordinator asks again from after it. Dense divergence: " \
      "both sides' rows merged without a drill-down", \
      "db:s table:s cols:a cls:a nkey:i lo:* hi:*") \
    X(MERGE, 26, "merge", "c → w", \
      "spec (side A: the source), `db2`, `table2` (side B: the target; another " \
      "database than `db`), `lo`, `hi`, `limit` (most rows read a side) → reply " \
      "`a`, `b`: the divergent rows of each side in key order: a row on both " \
      "sides [key, [indexes of the differing columns, rising], [their " \
      "encodings (or digests)], [their display texts or nil]] (the same " \
      "columns in both lists), a row on one side only [key]; " \
      "`rows`: [rows of A merged, rows of B merged], `blocks` (32-row blocks " \
      "of merged rows holding a divergence), `through` (last key merged; absent " \
      "when none) and `more: 1` when rows may follow it. One worker reads both " \
      "sides and sends only what differs: dense divergence without shipping " \
      "equal rows", \
      "db:s table:s cols:a cls:a nkey:i db2:s table2:s lo:* hi:* limit:i")

/* clang-format on */

#endif
