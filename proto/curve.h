/* curve: optional CurveZMQ security for sluice's sockets. Keys are Z85
 * text (40 characters), as zmq_curve_keypair makes them. The only part of
 * proto/ that touches libzmq: it sets socket options, nothing else.
 *
 * Server sockets (the coordinator's) use the coordinator's secret key;
 * clients (workers, submit, watch) must know the coordinator's public key
 * and use their own key pair (an ephemeral one if none is given). With an
 * allowlist of client public keys, the coordinator's ZAP handler refuses
 * every other client.
 */
#ifndef CURVE_H
#define CURVE_H

#include "../base/sl.h"

/* Reads the first Z85 key in a file (40 characters; '#' lines skipped) or,
 * if arg is not a file, takes arg itself as the key. */
int curve_read_key(const char *arg, char out[41], sl_err *err);

/* Makes sock a CURVE server with secret key `secret` (Z85). */
int curve_server(void *sock, const char *secret, sl_err *err);

/* Makes sock a CURVE client of the server with public key server_public;
 * secret NULL: an ephemeral key pair. */
int curve_client(void *sock, const char *server_public, const char *secret, sl_err *err);

/* A ZAP handler (RFC 27) on zctx that admits CURVE clients whose public
 * keys are in keys[0..n) and refuses all others. Runs in its own thread
 * until the context is terminated. */
typedef struct curve_zap curve_zap;
curve_zap *curve_zap_start(void *zctx, const char *const *keys, size_t n, sl_err *err);
void curve_zap_stop(curve_zap *z); /* after zmq_ctx_shutdown/term has begun */

#endif
