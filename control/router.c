/* The HAProxy implementation of ct_router (router.h). */
#include <string.h>

#include "router.h"

static int haproxy_apply(void *self, const ct_route *r, sl_err *err)
{
    const ct_haproxy_router *s = self;
    const ct_router_cfg *c = s->cfg;
    int target_pct = strcmp(r->reads, "target") == 0 ? r->read_pct : 0;
    if (ct_haproxy_route_reads(s->h, c->read_backend, c->source_server, c->target_server,
                               target_pct, 1, err) != 0)
        return -1;
    return ct_haproxy_route_writes(s->h, c->write_backend, c->source_server, c->target_server,
                                   strcmp(r->writes, "target") == 0, err);
}

ct_router ct_haproxy_router_make(ct_haproxy_router *state)
{
    ct_router r = {"haproxy", haproxy_apply, state};
    return r;
}
