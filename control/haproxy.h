/* ct_haproxy: HAProxy driven over its runtime API (the "stats socket"),
 * never by a reload.
 *
 * Every call connects to the socket (a Unix path, or HOST:PORT for a TCP
 * stats socket), sends one command line, reads the answer to the end and
 * closes: HAProxy's non-interactive mode. A socket that accepts and never
 * answers is an error after timeout_ms. An answer HAProxy gives as an
 * error ("No such server.", "Unknown command") is an error carrying its
 * text.
 */
#ifndef CT_HAPROXY_H
#define CT_HAPROXY_H

#include "../base/sl.h"

typedef struct ct_haproxy ct_haproxy;

/* Copies socket; nothing is connected until the first call. */
ct_haproxy *ct_haproxy_new(const char *socket, int timeout_ms, sl_err *err);
void ct_haproxy_free(ct_haproxy *h);

/* set server BACKEND/SERVER weight W (0..256) */
int ct_haproxy_set_weight(ct_haproxy *h, const char *backend, const char *server, int weight,
                          sl_err *err);
/* get weight BACKEND/SERVER: the current weight into *weight */
int ct_haproxy_get_weight(ct_haproxy *h, const char *backend, const char *server, int *weight,
                          sl_err *err);
/* set server BACKEND/SERVER state ready|drain|maint */
int ct_haproxy_set_state(ct_haproxy *h, const char *backend, const char *server, const char *state,
                         sl_err *err);
/* The server's admin state as `show servers state` gives it: "ready",
 * "drain" or "maint" into state (at least 8 bytes). */
int ct_haproxy_get_state(ct_haproxy *h, const char *backend, const char *server, char *state,
                         size_t len, sl_err *err);
/* shutdown sessions server BACKEND/SERVER: closes its open connections */
int ct_haproxy_shutdown_sessions(ct_haproxy *h, const char *backend, const char *server,
                                 sl_err *err);
/* Current sessions on BACKEND/SERVER (scur of `show stat`). */
int ct_haproxy_sessions(ct_haproxy *h, const char *backend, const char *server, long *out,
                        sl_err *err);

/* Routes reads: target_percent (0..100) of new read connections to the
 * target server of read_backend, the rest to the source (weights
 * 100-p and p; a side at 0 also has its sessions shut when leaving it is
 * asked: shut_idle_side). Then reads the weights back: 0 only when HAProxy
 * reports exactly what was set. */
int ct_haproxy_route_reads(ct_haproxy *h, const char *backend, const char *source,
                           const char *target, int target_percent, int shut_idle_side, sl_err *err);
/* Sends writes to one server of write_backend (to_target 0: the source):
 * that one ready with weight 1, the other in maint with its sessions shut;
 * read back as above. */
int ct_haproxy_route_writes(ct_haproxy *h, const char *backend, const char *source,
                            const char *target, int to_target, sl_err *err);
/* Whether HAProxy still routes as route_reads(target_percent) and
 * route_writes(to_target) left it, as far as traffic goes: the weights,
 * and every server with weight above 0 ready (a side at weight 0 may be in
 * any state). 0 it does, 1 it does not (err says what differs: HAProxy
 * restarted or reloaded from its file, or changed by hand), -1 HAProxy
 * could not be asked. write_backend may be NULL (reads only). */
int ct_haproxy_check_route(ct_haproxy *h, const char *read_backend, const char *write_backend,
                           const char *source, const char *target, int target_percent,
                           int to_target, sl_err *err);

/* Write cutover: hold new connections at a frontend, wait for a server
 * to drain, release. */

/* Remembers FRONTEND's maxconn (slim of its FRONTEND row in `show stat`)
 * into *saved_maxconn, then `set maxconn frontend FRONTEND 0`: HAProxy
 * accepts nothing more on it, new connections wait in the kernel's accept
 * backlog (a slow connect, not a refusal); established sessions go on.
 * Read back: 0 only when slim reads 0. A frontend already at 0 is an
 * error (its saved value would be lost), *saved_maxconn 0.
 * HAProxy 2.6.12 (Debian 12) dies when the release raises maxconn while
 * a connection waits (haproxy issue #2726): see control/README.md. */
int ct_haproxy_hold_frontend(ct_haproxy *h, const char *frontend, long *saved_maxconn, sl_err *err);
/* set maxconn frontend FRONTEND MAXCONN (1..1000000000): the waiting
 * connections are accepted; read back as above. */
int ct_haproxy_release_frontend(ct_haproxy *h, const char *frontend, long maxconn, sl_err *err);
/* Polls BACKEND/SERVER's current sessions every 20 ms until none are left
 * or timeout_ms (>= 0) passes: 0 drained, 1 sessions remain (their count
 * in *left), -1 on error. */
int ct_haproxy_wait_drained(ct_haproxy *h, const char *backend, const char *server, int timeout_ms,
                            long *left, sl_err *err);

#endif
