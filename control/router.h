/* ct_router: where a migration's traffic goes, behind one interface.
 *
 * A route is reads (source, shadow or target, with the percent of reads
 * on the target) and writes (source, both or target). Two implementations:
 * the routing endpoint (ctl_mig.c: a versioned document applications poll
 * or long-poll) and HAProxy (router.c, over its runtime API). apply returns
 * only once the router has confirmed the route: the endpoint when the new
 * version is published, HAProxy when its weights and states read back as
 * set. The control plane applies a route to every router of a migration
 * in turn and reports the time until the last confirmed.
 */
#ifndef CT_ROUTER_H
#define CT_ROUTER_H

#include "../base/sl.h"
#include "haproxy.h"
#include "manifest.h"

typedef struct ct_route {
    const char *reads;  /* "source", "shadow", "target" */
    int read_pct;       /* percent of reads on the target */
    const char *writes; /* "source", "both", "target" */
} ct_route;

typedef struct ct_router {
    const char *name;
    int (*apply)(void *self, const ct_route *r, sl_err *err); /* 0 once confirmed */
    void *self;
} ct_router;

/* The HAProxy router of cfg over h (both must outlive it): reads split
 * by weights in cfg's read backend (sessions on a side taken to 0 are
 * shut), writes to one server of its write backend ("both" keeps the
 * source: dual writes are the application's). */
typedef struct ct_haproxy_router {
    ct_haproxy *h;
    const ct_router_cfg *cfg;
} ct_haproxy_router;
ct_router ct_haproxy_router_make(ct_haproxy_router *state);

#endif
