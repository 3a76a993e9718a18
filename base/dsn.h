/* dsn: keeping a database password out of every message and log line.
 *
 * Text only, no libpq: the modules that talk to PostgreSQL
 * (connectors/pg.c, coordinator/store.c, control/) parse DSNs with libpq, and use
 * these to word their errors. libpq's own parse errors quote the DSN
 * ("invalid percent-encoded token: "S3cret%zz""), and its connect errors
 * name hosts and values that a mistyped DSN may have filled with part of a
 * password, so no libpq text reaches a message unscrubbed.
 */
#ifndef DSN_H
#define DSN_H

#include <stddef.h>

#include "sl.h"

/* Replaces every occurrence of secret (when not NULL or empty) in msg
 * (a NUL-terminated string in a buffer of cap bytes) with "***". */
void dsn_scrub_secret(char *msg, size_t cap, const char *secret);

/* Scrubs from msg what dsn's own text could leak: each password as written
 * in it (a URI's user:PASSWORD@, a password=VALUE of a conninfo string or a
 * URI query; as typed, and as libpq decodes it), and the whole DSN when it
 * holds one. */
void dsn_scrub(char *msg, size_t cap, const char *dsn);

/* Copies dsn into out (cap bytes) with each password replaced by "***":
 * a name for logs. */
void dsn_redact(const char *dsn, char *out, size_t cap);

/* Refuses, before libpq reads it, a postgresql:// URI whose user name or
 * password holds an unencoded '@' or '/': libpq would split it elsewhere
 * and show the rest of the password as a host or port. 0, or -1 with err
 * set (what names the DSN, e.g. "--state"). */
int dsn_check_uri(const char *dsn, const char *what, sl_err *err);

/* What to check, for a DSN libpq could not parse, from libpq's message:
 * our own words, never a fragment of the DSN. */
const char *dsn_parse_hint(const char *libpq_msg);

/* Whether libpq's message for a failed connection says the server refused
 * the credentials (SQLSTATE 28P01/28000 reach a client only as text):
 * libpq's own words, and the server's for a bad password (any method's
 * "... authentication failed"), a role that may not log in or that does
 * not exist, or no pg_hba.conf entry. */
int dsn_auth_refused(const char *libpq_msg);

/* The first line of libpq_msg into out, with password (may be NULL)
 * scrubbed from it: how a failed query's error reaches an sl_err. */
void dsn_error_line(char *out, size_t cap, const char *libpq_msg, const char *password);

#endif
