/* ctl_new / ctl_free: options copied, the control database opened, its
 * migrations loaded, the HAProxy and webhook clients made. */
#include <stdlib.h>
#include <string.h>

#include "ctl_impl.h"

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

ctl *ctl_new(const ctl_opts *o, sl_err *err)
{
    ctl *c = calloc(1, sizeof *c);
    if (!c) {
        sl_err_setc(err, SL_INTERNAL, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->routing_cv, NULL);
    c->tick_ms = o->tick_ms > 0 ? o->tick_ms : 500;
    snprintf(c->crash_at, sizeof c->crash_at, "%s", o->crash_at ? o->crash_at : "");
    c->log = o->log;
    c->log_ctx = o->log_ctx;
    c->started_ms = sl_wall_ms();
    c->dbs = calloc(o->ndbs + 1, sizeof *c->dbs);
    c->tokens = calloc(o->ntokens + 1, sizeof *c->tokens);
    int oom = !c->dbs || !c->tokens;
    for (size_t i = 0; !oom && i < o->ndbs; i++) {
        c->dbs[i].name = strdup(o->dbs[i].name);
        c->dbs[i].dsn = strdup(o->dbs[i].dsn);
        c->ndbs++;
        oom = !c->dbs[i].name || !c->dbs[i].dsn;
    }
    for (size_t i = 0; !oom && i < o->ntokens; i++) {
        c->tokens[i].role = strdup(o->tokens[i].role);
        c->tokens[i].token = strdup(o->tokens[i].token);
        c->ntokens++;
        oom = !c->tokens[i].role || !c->tokens[i].token;
    }
    c->copts = o->coordinator;
    /* the runner asks under the lock the HTTP API also takes: a silent
     * coordinator must not hold it for long */
    if (c->copts.timeout_ms <= 0)
        c->copts.timeout_ms = 2000;
    c->copts.clients_endpoint = dup_or_null(o->coordinator.clients_endpoint);
    c->copts.events_endpoint = dup_or_null(o->coordinator.events_endpoint);
    c->copts.curve_server_key = dup_or_null(o->coordinator.curve_server_key);
    c->copts.curve_public_key = dup_or_null(o->coordinator.curve_public_key);
    c->copts.curve_secret_key = dup_or_null(o->coordinator.curve_secret_key);
    c->dashboard_dir = dup_or_null(o->dashboard_dir);
    if (oom) {
        sl_err_setc(err, SL_INTERNAL, "out of memory");
        ctl_free(c);
        return NULL;
    }
    if (o->haproxy_socket && !(c->haproxy = ct_haproxy_new(o->haproxy_socket, 2000, err))) {
        ctl_free(c);
        return NULL;
    }
    if (o->webhook_url) {
        ct_webhook_opts wo = {.url = o->webhook_url, .log = o->log, .log_ctx = o->log_ctx};
        if (!(c->webhook = ct_webhook_new(&wo, err))) {
            ctl_free(c);
            return NULL;
        }
    }
    if (ctl_store_open(c, o->store_path, err) != 0 || ctl_store_load(c, err) != 0) {
        ctl_free(c);
        return NULL;
    }
    return c;
}

void ctl_free(ctl *c)
{
    if (!c)
        return;
    ctl_http_stop(c);
    for (size_t i = 0; i < c->nmigs; i++) {
        ct_db_free(c->migs[i]->src);
        ct_db_free(c->migs[i]->dst);
        mig_free(c->migs[i]);
    }
    free(c->migs);
    for (size_t i = 0; i < c->ndbs; i++) {
        free((char *)c->dbs[i].name);
        free((char *)c->dbs[i].dsn);
    }
    for (size_t i = 0; i < c->ntokens; i++) {
        free((char *)c->tokens[i].role);
        free((char *)c->tokens[i].token);
    }
    free(c->dbs);
    free(c->tokens);
    free((char *)c->copts.clients_endpoint);
    free((char *)c->copts.events_endpoint);
    free((char *)c->copts.curve_server_key);
    free((char *)c->copts.curve_public_key);
    free((char *)c->copts.curve_secret_key);
    free(c->dashboard_dir);
    sl_client_free(c->client);
    ct_haproxy_free(c->haproxy);
    ct_webhook_free(c->webhook);
    ctl_store_close(c);
    pthread_cond_destroy(&c->routing_cv);
    pthread_mutex_destroy(&c->mu);
    free(c);
}
