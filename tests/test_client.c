/* The client library: submit frames carry the spec as the coordinator
 * reads it (priority, max_tasks and share only when asked), events decode into
 * their structs, and garbage, truncated frames and fields of the wrong
 * type are errors naming what is wrong, never crashes. A fake coordinator
 * on loopback answers status, workers (5 and 6 elements), schedules and
 * errors; one that never answers is an error within the timeout.
 * SEED=n replays the random garbage. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#include "../client/sl_client.h"
#include "../coordinator/server.h"
#include "../proto/msg.h"
#include "tap.h"

static int frame_of(msg_writer *w, sl_buf *out)
{
    sl_err e;
    int rc = msg_writer_finish(w, out, &e);
    msg_writer_free(w);
    return rc;
}

static int str_is(const msg *m, const char *key, const char *want)
{
    const char *p;
    size_t n;
    if (!want)
        return msg_get(m, key) == NULL || msg_obj_is_nil(msg_get(m, key));
    return msg_get_str(m, key, &p, &n, NULL) == 0 && n == strlen(want) && !memcmp(p, want, n);
}

static int64_t int_of(const msg *m, const char *key)
{
    int64_t v = -999;
    msg_get_int(m, key, &v, NULL);
    return v;
}

static void test_spec_frame(void)
{
    const char *key[] = {"id"}, *cols[] = {"a", "b"};
    sl_job_spec s = {.source = "old",
                     .target = "new",
                     .table = "orders",
                     .key = key,
                     .nkey = 1,
                     .columns = cols,
                     .ncolumns = 2,
                     .where = "id > 5",
                     .strict = 1,
                     .ranges = 8,
                     .rechecks = 2,
                     .settle_ms = 1500,
                     .max_rows_per_second = 1000};
    sl_buf f = {0};
    sl_err e = {0};
    ok(sl_client_spec_frame(&s, &f, &e) == 0, "a spec makes a frame: %s", e.msg);
    msg *m = msg_decode(f.p, f.len, &e);
    ok(m && msg_type(m) == MSG_SUBMIT, "the frame is a submit message");
    if (m) {
        const msg_obj *items;
        uint32_t n = 0;
        ok(str_is(m, "source", "old") && str_is(m, "target", "new") &&
               str_is(m, "table", "orders") && str_is(m, "target_table", NULL) &&
               str_is(m, "where", "id > 5"),
           "names and where travel as given, target_table nil");
        ok(msg_get_array(m, "columns", &items, &n, NULL) == 0 && n == 2 &&
               msg_get_array(m, "exclude", &items, &n, NULL) == 0 && n == 0,
           "lists travel as lists (an empty one too)");
        ok(int_of(m, "strict") == 1 && int_of(m, "ranges") == 8 && int_of(m, "rechecks") == 2 &&
               int_of(m, "settle_ms") == 1500 && int_of(m, "max_rows_per_second") == 1000,
           "numbers travel as given");
        ok(!msg_get(m, "priority") && !msg_get(m, "max_tasks") && !msg_get(m, "share"),
           "a normal-priority job without a cap or share sends none of those fields (older "
           "coordinators)");
    }
    msg_free(m);

    s.priority = SL_PRIO_HIGH;
    s.max_tasks = 3;
    s.share = 20;
    ok(sl_client_spec_frame(&s, &f, &e) == 0, "a spec with priority, max_tasks, share: %s", e.msg);
    m = msg_decode(f.p, f.len, &e);
    ok(m && str_is(m, "priority", "high") && int_of(m, "max_tasks") == 3 &&
           int_of(m, "share") == 20,
       "priority \"high\", max_tasks 3 and share 20 are in the frame");
    msg_free(m);
    ok(co_server_check_spec(f.p, f.len, &e) == 0, "the coordinator takes share 20: %s", e.msg);
    msg_writer *bw = msg_writer_new(MSG_SUBMIT, 1);
    msg_put_cstr(bw, "source", "old");
    msg_put_cstr(bw, "target", "new");
    msg_put_cstr(bw, "table", "orders");
    msg_put_int(bw, "share", 101);
    sl_buf bf = {0};
    frame_of(bw, &bf);
    ok(co_server_check_spec(bf.p, bf.len, &e) == -1 && e.code == SL_INVALID &&
           strstr(e.msg, "\"share\" must be a percent from 1 to 100"),
       "the coordinator refuses share 101 as invalid (%s)", e.msg);
    sl_buf_free(&bf);
    s.share = 0;
    s.priority = SL_PRIO_LOW;
    sl_client_spec_frame(&s, &f, &e);
    m = msg_decode(f.p, f.len, &e);
    ok(m && str_is(m, "priority", "low"), "priority \"low\"");
    msg_free(m);

    sl_job_spec bad = s;
    bad.table = NULL;
    ok(sl_client_spec_frame(&bad, &f, &e) == -1 && strstr(e.msg, "table") && e.code == SL_INVALID,
       "no table: refused, naming it (%s)", e.msg);
    bad = s;
    bad.source = "";
    ok(sl_client_spec_frame(&bad, &f, &e) == -1 && strstr(e.msg, "source"),
       "an empty source: refused (%s)", e.msg);
    bad = s;
    bad.priority = (sl_priority)7;
    ok(sl_client_spec_frame(&bad, &f, &e) == -1 && strstr(e.msg, "priority"),
       "an unknown priority: refused (%s)", e.msg);
    bad = s;
    bad.max_tasks = -1;
    ok(sl_client_spec_frame(&bad, &f, &e) == -1 && strstr(e.msg, "max_tasks"),
       "a negative max_tasks: refused (%s)", e.msg);
    bad = s;
    bad.share = 101;
    ok(sl_client_spec_frame(&bad, &f, &e) == -1 && strstr(e.msg, "share"),
       "a share of 101: refused (%s)", e.msg);

    sl_priority p;
    ok(sl_priority_parse("high", &p) == 0 && p == SL_PRIO_HIGH &&
           sl_priority_parse("normal", &p) == 0 && p == SL_PRIO_NORMAL &&
           sl_priority_parse("urgent", &p) == -1 && sl_priority_parse("", &p) == -1,
       "priority names parse; others do not");
    sl_buf_free(&f);
}

/* An event frame as the coordinator's on_event writes it. cut: the
 * second column travels cut, with digests. */
static void divergence_frame(sl_buf *out, const char *kind, const char *status, int cut)
{
    msg_writer *w = msg_writer_new(MSG_EVENT, 0);
    msg_put_cstr(w, "event", "divergence");
    msg_put_int(w, "job", 12);
    msg_put_cstr(w, "kind", kind);
    msg_put_int(w, "at_ms", 1700000000123);
    msg_put_int(w, "read_at_ms", 1700000000100);
    msg_put_cstr(w, "status", status);
    msg_key(w, "k");
    msg_pack_bin(w, "\x01\x02\x03", 3);
    msg_key(w, "key");
    msg_pack_array(w, 2);
    msg_pack_array(w, 2);
    msg_pack_cstr(w, "id");
    msg_pack_cstr(w, "42");
    msg_pack_array(w, 2);
    msg_pack_cstr(w, "region");
    msg_pack_cstr(w, "eu");
    msg_key(w, "columns");
    msg_pack_array(w, 2);
    msg_pack_array(w, 3);
    msg_pack_cstr(w, "note");
    msg_pack_cstr(w, NULL);
    msg_pack_cstr(w, "");
    msg_pack_array(w, cut ? 5 : 3);
    msg_pack_cstr(w, "body");
    msg_pack_cstr(w, "aaaa");
    msg_pack_cstr(w, "bbbb");
    if (cut) {
        msg_pack_array(w, 2);
        msg_pack_uint(w, 209715200);
        msg_pack_cstr(w, "c251ec01c251ec01c251ec01c251ec01");
        msg_pack_nil(w);
    }
    frame_of(w, out);
}

static void test_events(void)
{
    sl_buf f = {0};
    sl_err e = {0};
    sl_event ev;

    divergence_frame(&f, "changed", "confirmed", 1);
    int rc = sl_event_decode(f.p, f.len, &ev, &e);
    ok(rc == 0, "a changed-row divergence decodes: %s", e.msg);
    ok(ev.type == SL_EV_DIVERGENCE && ev.job == 12 && ev.kind == SL_DIV_CHANGED &&
           !strcmp(ev.kind_name, "changed") && ev.status == SL_DIV_CONFIRMED &&
           ev.at_ms == 1700000000123 && ev.read_at_ms == 1700000000100,
       "type, job, kind, status and times");
    ok(ev.klen == 3 && !memcmp(ev.k, "\x01\x02\x03", 3), "the encoded key bytes");
    ok(ev.nkey == 2 && !strcmp(ev.key[0].column, "id") && !strcmp(ev.key[0].value, "42") &&
           !strcmp(ev.key[1].column, "region") && !strcmp(ev.key[1].value, "eu"),
       "key columns and values in order");
    ok(ev.ncols == 2 && !strcmp(ev.cols[0].column, "note") && ev.cols[0].source == NULL &&
           !strcmp(ev.cols[0].target, "") && !ev.cols[0].source_hash,
       "a changed column: NULL against '' stays apart");
    ok(ev.ncols == 2 && !strcmp(ev.cols[1].source, "aaaa") && ev.cols[1].source_len == 209715200 &&
           ev.cols[1].source_hash &&
           !strcmp(ev.cols[1].source_hash, "c251ec01c251ec01c251ec01c251ec01") &&
           !ev.cols[1].target_hash,
       "a cut value brings its length and hash; the whole side has none");
    sl_event_free(&ev);

    divergence_frame(&f, "missing-in-target", NULL, 0);
    ok(sl_event_decode(f.p, f.len, &ev, &e) == 0 && ev.kind == SL_DIV_MISSING &&
           ev.status == SL_DIV_UNCHECKED,
       "missing-in-target without re-checks: status none");
    sl_event_free(&ev);
    divergence_frame(&f, "extra-in-target", "transient", 0);
    ok(sl_event_decode(f.p, f.len, &ev, &e) == 0 && ev.kind == SL_DIV_EXTRA &&
           ev.status == SL_DIV_TRANSIENT,
       "extra-in-target, transient");
    sl_event_free(&ev);

    msg_writer *w = msg_writer_new(MSG_EVENT, 0);
    msg_put_cstr(w, "event", "divergence");
    msg_put_int(w, "job", 3);
    msg_put_cstr(w, "kind", "schema");
    msg_put_int(w, "at_ms", 5);
    msg_put_int(w, "read_at_ms", 0);
    msg_put_cstr(w, "status", NULL);
    msg_put_cstr(w, "column", "note");
    msg_put_cstr(w, "problem", "missing in target");
    msg_key(w, "types");
    msg_pack_array(w, 2);
    msg_pack_cstr(w, "text");
    msg_pack_cstr(w, NULL);
    frame_of(w, &f);
    ok(sl_event_decode(f.p, f.len, &ev, &e) == 0 && ev.kind == SL_DIV_SCHEMA &&
           !strcmp(ev.column, "note") && !strcmp(ev.problem, "missing in target") &&
           !strcmp(ev.source_type, "text") && ev.target_type == NULL && ev.nkey == 0,
       "a schema divergence: column, problem, types");
    sl_event_free(&ev);

    w = msg_writer_new(MSG_EVENT, 0);
    msg_put_cstr(w, "event", "progress");
    msg_put_int(w, "job", 7);
    msg_put_uint(w, "ranges_done", 3);
    msg_put_uint(w, "ranges", 8);
    msg_put_uint(w, "rows_done", 30000);
    msg_put_int(w, "at_ms", 9);
    frame_of(w, &f);
    ok(sl_event_decode(f.p, f.len, &ev, &e) == 0 && ev.type == SL_EV_PROGRESS &&
           ev.ranges_done == 3 && ev.ranges == 8 && ev.rows_done == 30000,
       "a progress event");
    sl_event_free(&ev);

    const char *states[] = {"queued", "running", "resumed", "done", "failed", "cancelled", "odd"};
    const sl_job_state want[] = {SL_JOB_QUEUED, SL_JOB_RUNNING,   SL_JOB_RUNNING, SL_JOB_DONE,
                                 SL_JOB_FAILED, SL_JOB_CANCELLED, SL_JOB_UNKNOWN};
    int all = 1;
    for (int i = 0; i < 7; i++) {
        w = msg_writer_new(MSG_EVENT, 0);
        msg_put_cstr(w, "event", "job");
        msg_put_int(w, "job", 7);
        msg_put_cstr(w, "state", states[i]);
        msg_put_cstr(w, "error", i == 4 ? "table \"t\" does not exist" : NULL);
        msg_put_int(w, "at_ms", 9);
        frame_of(w, &f);
        all = all && sl_event_decode(f.p, f.len, &ev, &e) == 0 && ev.type == SL_EV_JOB &&
              ev.state == want[i] && !strcmp(ev.state_name, states[i]) &&
              (i == 4 ? ev.error && strstr(ev.error, "does not exist") : !ev.error);
        sl_event_free(&ev);
    }
    ok(all, "job events: each state to its enum (resumed is running), the error when failed");
    sl_buf_free(&f);
}

/* A divergence frame with one field replaced by a value of another type. */
static void mutated_frame(sl_buf *out, const char *field, int variant)
{
    static const char *const fields[] = {"event",  "job", "kind", "at_ms",  "read_at_ms",
                                         "status", "k",   "key",  "columns"};
    msg_writer *w = msg_writer_new(MSG_EVENT, 0);
    for (int i = 0; i < 9; i++) {
        msg_key(w, fields[i]);
        if (strcmp(fields[i], field)) {
            switch (i) {
            case 0:
                msg_pack_cstr(w, "divergence");
                break;
            case 1:
                msg_pack_int(w, 4);
                break;
            case 2:
                msg_pack_cstr(w, "changed");
                break;
            case 3:
            case 4:
                msg_pack_int(w, 1);
                break;
            case 5:
                msg_pack_nil(w);
                break;
            case 6:
                msg_pack_bin(w, "k", 1);
                break;
            case 7:
                msg_pack_array(w, 1);
                msg_pack_array(w, 2);
                msg_pack_cstr(w, "id");
                msg_pack_cstr(w, "1");
                break;
            default:
                msg_pack_array(w, 0);
            }
            continue;
        }
        switch (variant) { /* the wrong value */
        case 0:
            msg_pack_int(w, 77);
            break;
        case 1:
            msg_pack_cstr(w, "bogus");
            break;
        case 2:
            msg_pack_array(w, 1);
            msg_pack_int(w, 5);
            break;
        case 3:
            msg_pack_array(w, 1);
            msg_pack_array(w, 7);
            for (int k = 0; k < 7; k++)
                msg_pack_nil(w);
            break;
        default:
            msg_pack_bin(w, "xx", 2);
        }
    }
    frame_of(w, out);
}

static void test_garbage(unsigned seed)
{
    sl_buf f = {0};
    sl_err e;
    sl_event ev;

    /* every field of a divergence replaced by wrong values: never a crash,
     * and an error names something (or the value happens to be valid) */
    static const char *const fields[] = {"event",  "job", "kind", "at_ms",  "read_at_ms",
                                         "status", "k",   "key",  "columns"};
    int named = 1, refused = 0, tried = 0;
    for (int i = 0; i < 9; i++)
        for (int v = 0; v < 5; v++) {
            mutated_frame(&f, fields[i], v);
            e.msg[0] = '\0';
            int rc = sl_event_decode(f.p, f.len, &ev, &e);
            tried++;
            if (rc) {
                refused++;
                named = named && strstr(e.msg, "malformed") != NULL;
            }
            sl_event_free(&ev);
        }
    ok(sl_event_decode("\x00\xc1", 2, &ev, &e) == -1 && e.code == SL_INTERNAL,
       "a frame that does not decode is the peer's garbage: code internal");
    ok(named && refused >= 35, "%d of %d mutated events refused, each saying \"malformed\"",
       refused, tried);
    mutated_frame(&f, "kind", 1);
    ok(sl_event_decode(f.p, f.len, &ev, &e) == -1 && strstr(e.msg, "bogus"),
       "an unknown kind is named: %s", e.msg);
    mutated_frame(&f, "key", 3);
    ok(sl_event_decode(f.p, f.len, &ev, &e) == -1 && strstr(e.msg, "key entry 1"),
       "a bad key entry is named: %s", e.msg);
    mutated_frame(&f, "columns", 2);
    ok(sl_event_decode(f.p, f.len, &ev, &e) == -1 && strstr(e.msg, "column entry 1"),
       "a bad column entry is named: %s", e.msg);
    mutated_frame(&f, "job", 1);
    ok(sl_event_decode(f.p, f.len, &ev, &e) == -1 && strstr(e.msg, "\"job\""),
       "a job id that is a string: %s", e.msg);

    /* a well-formed message of another type, and one of an unknown event */
    msg_writer *w = msg_writer_new(MSG_REPLY, 1);
    msg_put_int(w, "job", 4);
    frame_of(w, &f);
    ok(sl_event_decode(f.p, f.len, &ev, &e) == -1 && strstr(e.msg, "reply"),
       "a reply is not an event: %s", e.msg);
    w = msg_writer_new(MSG_EVENT, 0);
    msg_put_cstr(w, "event", "party");
    msg_put_int(w, "job", 4);
    frame_of(w, &f);
    ok(sl_event_decode(f.p, f.len, &ev, &e) == -1 && strstr(e.msg, "party"),
       "an unknown event is named: %s", e.msg);

    /* truncations of a real event, and random bytes */
    sl_buf good = {0};
    divergence_frame(&good, "changed", "confirmed", 1);
    int all = 1;
    for (size_t n = 0; n < good.len; n++)
        all = all && sl_event_decode(good.p, n, &ev, &e) == -1;
    ok(all, "every truncation of a %zu-byte event is refused", good.len);
    srand(seed);
    int crashes_none = 1, accepted = 0;
    for (int i = 0; i < 20000; i++) {
        size_t n = (size_t)(rand() % 96);
        sl_buf_reset(&f);
        if (i % 3 == 0) { /* a real event with random bytes flipped */
            sl_buf_append(&f, good.p, good.len);
            for (int k = 0; k < 1 + rand() % 4; k++)
                f.p[rand() % f.len] = (uint8_t)rand();
        } else {
            sl_buf_putc(&f, (uint8_t)(i % 2 ? 0 : rand()));
            for (size_t k = 0; k < n; k++)
                sl_buf_putc(&f, (uint8_t)rand());
        }
        int rc = sl_event_decode(f.p, f.len, &ev, &e);
        accepted += rc == 0;
        crashes_none = crashes_none && (rc == 0 || rc == -1);
        sl_event_free(&ev);
    }
    ok(crashes_none, "20000 garbage frames: each decoded or refused (%d decoded)", accepted);
    sl_buf_free(&good);
    sl_buf_free(&f);
}

/* ---- a fake coordinator ----------------------------------------------------- */

typedef struct fake {
    void *zctx, *sock;
    char ep[64];
    int workers_fields; /* 5 or 6 */
    int requests;
    pthread_t t;
} fake;

static void answer(fake *f, zmq_msg_t *id, msg_writer *w)
{
    sl_buf b = {0};
    frame_of(w, &b);
    zmq_send(f->sock, zmq_msg_data(id), zmq_msg_size(id), ZMQ_SNDMORE);
    zmq_send(f->sock, b.p, b.len, 0);
    sl_buf_free(&b);
}

static void *fake_main(void *arg)
{
    fake *f = arg;
    for (;;) {
        zmq_msg_t id, body;
        zmq_msg_init(&id);
        zmq_msg_init(&body);
        if (zmq_msg_recv(&id, f->sock, 0) < 0 || zmq_msg_recv(&body, f->sock, 0) < 0) {
            zmq_msg_close(&id);
            zmq_msg_close(&body);
            return NULL;
        }
        f->requests++;
        msg *m = msg_decode(zmq_msg_data(&body), zmq_msg_size(&body), NULL);
        uint64_t rid = m ? msg_id(m) : 0;
        int64_t job = m ? int_of(m, "job") : 0;
        msg_writer *w = NULL;
        switch (m ? msg_type(m) : 0) {
        case MSG_STATUS:
            if (job == 404) {
                w = msg_writer_new(MSG_ERROR, rid);
                msg_put_cstr(w, "error", "no such job; sluice submit prints the job id");
                msg_put_cstr(w, "code", "not_found");
            } else if (job == 666) { /* a reply with a field of the wrong type */
                w = msg_writer_new(MSG_REPLY, rid);
                msg_put_cstr(w, "state", "done");
                msg_put_cstr(w, "changed", "three");
            } else if (job == 0) {
                break; /* never answers */
            } else {
                int ev = int_of(m, "events") == 1;
                w = msg_writer_new(MSG_REPLY, rid);
                msg_put_int(w, "job", job);
                msg_put_cstr(w, "state", job == 2 ? "done" : "running");
                msg_put_cstr(w, "error", NULL);
                msg_put_cstr(w, "table", "orders");
                msg_put_cstr(w, "target_table", NULL);
                msg_put_uint(w, "changed", 3);
                msg_put_cstr(w, "priority", "high");
                if (ev) {
                    sl_buf d = {0};
                    divergence_frame(&d, "changed", NULL, 0);
                    msg_key(w, "events");
                    msg_pack_array(w, job == 3 ? 2 : 1);
                    msg_pack_bin(w, d.p, d.len);
                    if (job == 3)
                        msg_pack_bin(w, d.p, d.len - 1); /* a stored event cut short */
                    sl_buf_free(&d);
                }
            }
            break;
        case MSG_WORKERS:
            w = msg_writer_new(MSG_REPLY, rid);
            msg_key(w, "workers");
            msg_pack_array(w, 1);
            msg_pack_array(w, (uint32_t)f->workers_fields);
            msg_pack_uint(w, 0);
            msg_pack_int(w, 1);
            msg_pack_int(w, 0);
            msg_pack_int(w, 1500);
            msg_pack_array(w, 2);
            msg_pack_cstr(w, "old");
            msg_pack_cstr(w, "new");
            if (f->workers_fields == 6)
                msg_pack_int(w, 4);
            else if (f->workers_fields == 7) {
                msg_pack_int(w, 4);
                msg_pack_int(w, 4);
            }
            break;
        case MSG_SCHEDULES:
            w = msg_writer_new(MSG_REPLY, rid);
            msg_key(w, "schedules");
            msg_pack_array(w, 2);
            msg_pack_array(w, 4);
            msg_pack_cstr(w, "hourly");
            msg_pack_int(w, 3600);
            msg_pack_cstr(w, "orders");
            msg_pack_int(w, 17);
            msg_pack_array(w, 4);
            msg_pack_cstr(w, "nightly");
            msg_pack_int(w, 86400);
            msg_pack_cstr(w, "items");
            msg_pack_nil(w);
            break;
        case MSG_SCHEDULE_ADD: {
            const uint8_t *p;
            size_t n;
            msg *spec = msg_get_bin(m, "spec", &p, &n, NULL) == 0 ? msg_decode(p, n, NULL) : NULL;
            if (spec && msg_type(spec) == MSG_SUBMIT && str_is(m, "name", "hourly") &&
                int_of(m, "interval_s") == 3600 && str_is(spec, "table", "orders")) {
                w = msg_writer_new(MSG_REPLY, rid);
            } else {
                w = msg_writer_new(MSG_ERROR, rid);
                msg_put_cstr(w, "error", "schedule_add: not what the test sent");
            }
            msg_free(spec);
            break;
        }
        case MSG_SCHEDULE_DEL:
            w = msg_writer_new(MSG_REPLY, rid);
            msg_put_int(w, "removed", str_is(m, "name", "hourly"));
            break;
        case MSG_SUBMIT:
            w = msg_writer_new(MSG_REPLY, rid + 1); /* a reply to another request */
            msg_put_int(w, "job", 1);
            answer(f, &id, w);
            w = msg_writer_new(MSG_REPLY, rid);
            msg_put_int(w, "job", 99);
            break;
        default:
            break;
        }
        if (w)
            answer(f, &id, w);
        msg_free(m);
        zmq_msg_close(&id);
        zmq_msg_close(&body);
    }
}

static int fake_start(fake *f)
{
    memset(f, 0, sizeof *f);
    f->workers_fields = 5;
    f->zctx = zmq_ctx_new();
    f->sock = zmq_socket(f->zctx, ZMQ_ROUTER);
    int linger = 0;
    zmq_setsockopt(f->sock, ZMQ_LINGER, &linger, sizeof linger);
    size_t n = sizeof f->ep;
    if (zmq_bind(f->sock, "tcp://127.0.0.1:*") ||
        zmq_getsockopt(f->sock, ZMQ_LAST_ENDPOINT, f->ep, &n))
        return -1;
    return pthread_create(&f->t, NULL, fake_main, f);
}

static void fake_stop(fake *f)
{
    zmq_ctx_shutdown(f->zctx);
    pthread_join(f->t, NULL);
    zmq_close(f->sock);
    zmq_ctx_term(f->zctx);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void test_requests(void)
{
    fake f;
    if (fake_start(&f)) {
        ok(0, "a fake coordinator on loopback");
        return;
    }
    sl_err e = {0};
    sl_client_opts o = {.clients_endpoint = f.ep, .timeout_ms = 400};
    sl_client *c = sl_client_new(&o, &e);
    ok(c != NULL, "a client of %s", f.ep);

    sl_job_status st;
    ok(sl_client_status(c, 1, 0, &st, &e) == 0 && st.state == SL_JOB_RUNNING &&
           !strcmp(st.state_name, "running") && !strcmp(st.table, "orders") &&
           st.target_table[0] == '\0' && st.changed == 3 && st.priority == SL_PRIO_HIGH &&
           st.nevents == 0,
       "status: state, table, counts, priority (%s)", e.msg);
    sl_job_status_free(&st);
    ok(sl_client_status(c, 2, 1, &st, &e) == 0 && st.state == SL_JOB_DONE && st.nevents == 1 &&
           st.events[0].kind == SL_DIV_CHANGED && st.events[0].nkey == 2,
       "status with events: the stored divergence, typed (%s)", e.msg);
    sl_job_status_free(&st);
    ok(sl_client_status(c, 3, 1, &st, &e) == -1 && strstr(e.msg, "stored event 2"),
       "a stored event that does not decode fails the status, named: %s", e.msg);
    sl_job_status_free(&st);
    ok(sl_client_status(c, 404, 0, &st, &e) == -1 && !strcmp(e.msg, "no such job; sluice submit "
                                                                    "prints the job id"),
       "an error reply's message: %s", e.msg);
    ok(e.code == SL_NOT_FOUND, "... and its code, not_found (%s)", sl_code_name(e.code));
    ok(sl_client_status(c, 666, 0, &st, &e) == -1 && strstr(e.msg, "\"changed\""),
       "a field of the wrong type is named: %s", e.msg);
    double t0 = now_s();
    ok(sl_client_status(c, 0, 0, &st, &e) == -1 && strstr(e.msg, "did not answer within 0.4 s") &&
           strstr(e.msg, f.ep) && now_s() - t0 < 3,
       "a request never answered: an error after the timeout (%s)", e.msg);
    ok(e.code == SL_BUSY, "... of code busy (%s)", sl_code_name(e.code));
    ok(sl_client_status(c, 1, 0, &st, &e) == 0, "the client works again after a timeout (%s)",
       e.msg);
    ok(sl_client_cancel(c, 404, &e) == -1 && strstr(e.msg, "job 404") &&
           strstr(e.msg, "no such job"),
       "cancel of an unknown job: %s", e.msg);
    ok(e.code == SL_NOT_FOUND, "... keeps the reply's code, not_found (%s)", sl_code_name(e.code));
    ok(sl_client_cancel(c, 2, &e) == -1 &&
           !strcmp(e.msg, "job 2 already finished (done); nothing to cancel"),
       "cancel of a finished job: %s", e.msg);
    ok(e.code == SL_INVALID, "... of code invalid (%s)", sl_code_name(e.code));

    const char *key[] = {"id"};
    sl_job_spec spec = {.source = "old", .target = "new", .table = "orders", .key = key, .nkey = 1};
    int64_t job = 0;
    ok(sl_client_submit(c, &spec, &job, &e) == 0 && job == 99,
       "submit: the job id of its own reply, a reply to another request skipped (%s)", e.msg);
    sl_buf frame = {0};
    sl_client_spec_frame(&spec, &frame, &e);
    job = 0;
    ok(sl_client_submit_frame(c, frame.p, frame.len, &job, &e) == 0 && job == 99,
       "submit of a prebuilt frame (%s)", e.msg);
    ok(sl_client_submit_frame(c, "\x00\x90", 2, &job, &e) == -1,
       "a prebuilt frame that is not a submit is refused: %s", e.msg);
    sl_buf_free(&frame);

    sl_worker_info *w;
    size_t n;
    ok(sl_client_workers(c, &w, &n, &e) == 0 && n == 1 && w[0].alive && !w[0].busy &&
           w[0].idle_ms == 1500 && w[0].ndbs == 2 && !strcmp(w[0].dbs[1], "new") &&
           w[0].trees == -1,
       "workers of 5 elements: trees unknown (%s)", e.msg);
    sl_worker_info_free(w, n);
    f.workers_fields = 6;
    ok(sl_client_workers(c, &w, &n, &e) == 0 && n == 1 && w[0].trees == 4,
       "workers of 6 elements: the trees each holds (%s)", e.msg);
    sl_worker_info_free(w, n);
    f.workers_fields = 7;
    ok(sl_client_workers(c, &w, &n, &e) == -1 && strstr(e.msg, "worker 1"),
       "a worker of 7 elements is malformed: %s", e.msg);

    sl_schedule_info *s;
    ok(sl_client_schedules(c, &s, &n, &e) == 0 && n == 2 && !strcmp(s[0].name, "hourly") &&
           s[0].interval_s == 3600 && !strcmp(s[0].table, "orders") && s[0].last_job == 17 &&
           s[1].last_job == 0,
       "schedules: name, interval, table, last job (nil: 0) (%s)", e.msg);
    sl_schedule_info_free(s, n);
    ok(sl_client_schedule_add(c, "hourly", 3600, &spec, &e) == 0,
       "schedule add: name, interval and a submit frame as spec (%s)", e.msg);
    int removed = -1;
    ok(sl_client_schedule_del(c, "hourly", &removed, &e) == 0 && removed == 1,
       "schedule del: removed 1");
    ok(sl_client_schedule_del(c, "other", &removed, &e) == 0 && removed == 0,
       "schedule del of an unknown name: removed 0");

    ok(sl_client_watch(c, 0, &e) == -1 && strstr(e.msg, "events"),
       "watch without an events endpoint: %s", e.msg);
    sl_client_free(c);

    sl_client_opts bad = {.clients_endpoint = f.ep, .curve_server_key = "short"};
    ok(!sl_client_new(&bad, &e) && strstr(e.msg, "40"), "a malformed CURVE key: %s", e.msg);
    char pub[41], sec[41], other[41], sec2[41];
    zmq_curve_keypair(pub, sec);
    zmq_curve_keypair(other, sec2);
    sl_client_opts pair = {.clients_endpoint = f.ep,
                           .curve_server_key = pub,
                           .curve_public_key = pub,
                           .curve_secret_key = sec};
    c = sl_client_new(&pair, &e);
    ok(c != NULL, "a CURVE client with its key pair (%s)", e.msg);
    sl_client_free(c);
    pair.curve_public_key = other;
    ok(!sl_client_new(&pair, &e) && strstr(e.msg, "public key"),
       "a public key that is not the secret's: %s", e.msg);
    fake_stop(&f);
}

/* Events over a real PUB socket: the job filter, and garbage skipped
 * with an error while the stream goes on. */
static void test_watch(void)
{
    void *zctx = zmq_ctx_new(), *pub = zmq_socket(zctx, ZMQ_XPUB);
    char ep[64];
    size_t n = sizeof ep;
    int linger = 0;
    zmq_setsockopt(pub, ZMQ_LINGER, &linger, sizeof linger);
    zmq_bind(pub, "tcp://127.0.0.1:*");
    zmq_getsockopt(pub, ZMQ_LAST_ENDPOINT, ep, &n);
    sl_err e = {0};
    sl_client_opts o = {.clients_endpoint = ep, .events_endpoint = ep};
    sl_client *c = sl_client_new(&o, &e);
    ok(c && sl_client_watch(c, 12, &e) == 0, "watching job 12 (%s)", e.msg);
    /* an XPUB hears the subscription: nothing is sent before it arrives */
    char sub[64];
    int timeout = 5000;
    zmq_setsockopt(pub, ZMQ_RCVTIMEO, &timeout, sizeof timeout);
    ok(zmq_recv(pub, sub, sizeof sub, 0) == 7 && !memcmp(sub, "\x01job.12", 7),
       "the client subscribed to job.12");
    sl_buf f = {0};
    sl_event ev;
    divergence_frame(&f, "changed", NULL, 0); /* job 12 */
    zmq_send(pub, "job.123", 7, ZMQ_SNDMORE); /* prefix-matched, another job */
    msg_writer *w = msg_writer_new(MSG_EVENT, 0);
    msg_put_cstr(w, "event", "progress");
    msg_put_int(w, "job", 123);
    sl_buf other = {0};
    frame_of(w, &other);
    zmq_send(pub, other.p, other.len, 0);
    zmq_send(pub, "job.12", 6, ZMQ_SNDMORE);
    zmq_send(pub, "\x00\xc1garbage", 9, 0);
    zmq_send(pub, "job.12", 6, 0); /* a topic alone */
    zmq_send(pub, "job.12", 6, ZMQ_SNDMORE);
    zmq_send(pub, f.p, f.len, 0);
    int r = sl_client_next_event(c, 2000, &ev, &e);
    ok(r == -1 && strstr(e.msg, "malformed"), "garbage after a topic: an error (%s)", e.msg);
    r = sl_client_next_event(c, 2000, &ev, &e);
    ok(r == -1 && strstr(e.msg, "1 frames"), "a topic without a message: an error (%s)", e.msg);
    r = sl_client_next_event(c, 2000, &ev, &e);
    ok(r == 1 && ev.job == 12 && ev.type == SL_EV_DIVERGENCE,
       "then job 12's event; job 123's was skipped (%s)", e.msg);
    sl_event_free(&ev);
    double t0 = now_s();
    r = sl_client_next_event(c, 300, &ev, &e);
    ok(r == 0 && now_s() - t0 < 2, "nothing more: 0 after the timeout");
    sl_buf_free(&f);
    sl_buf_free(&other);
    sl_client_free(c);
    zmq_close(pub);
    zmq_ctx_term(zctx);
}

int main(void)
{
    unsigned seed =
        getenv("SEED") ? (unsigned)strtoul(getenv("SEED"), NULL, 10) : (unsigned)time(NULL);
    printf("# seed %u (SEED=%u replays)\n", seed, seed);
    test_spec_frame();
    test_events();
    test_garbage(seed);
    test_requests();
    test_watch();
    return done_testing();
}
