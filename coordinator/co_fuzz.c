/* co_fuzz: co_fuzz_reply (co.h), a worker's reply run through a job's
 * checks and handling with no socket and no worker (tests/fuzz). */
#include <stdlib.h>
#include <string.h>

#include "co_impl.h"

/* Counts events (ctx: a size_t). */
static int fuzz_event(void *ctx, const co_event *ev)
{
    (void)ev;
    ++*(size_t *)ctx;
    return 0;
}

/* The key (int, text) of fuzz_job's table. */
static void fuzz_key(sl_buf *out, int64_t id, const char *name)
{
    enc_val a = {.kind = ENC_V_INT, .i = id},
            b = {.kind = ENC_V_TEXT, .p = name, .len = strlen(name)};
    enc_key(out, ENC_INT, &a, NULL);
    enc_key(out, ENC_TEXT, &b, NULL);
}

int co_fuzz_reply(int type, const uint8_t *frame, size_t len)
{
    static const char *const cols[] = {"id", "name", "v"};
    co_diff_opts o = {.source_db = "s", .target_db = "t", .table = "x"};
    size_t events = 0;
    co_callbacks cb = {.event = fuzz_event, .ctx = &events};
    co_summary sum = {0};
    range r = {.has_lo = 1, .has_hi = 1, .worker = {-1, -1}};
    job j = {.o = &o, .cb = &cb, .sum = &sum, .r = &r, .nr = 1, .ncols = 3, .nkey = 2};
    drill d = {.j = &j, .r = &r};
    for (size_t i = 0; i < 3; i++)
        j.cols[i] = cols[i];
    j.cls[0] = ENC_INT;
    j.cls[1] = j.cls[2] = ENC_TEXT;
    fuzz_key(&r.lo, 1, "a");
    fuzz_key(&r.hi, 9, "z");
    sl_buf asked = {0}; /* keys a fetch asked for: (1, "b") .. (8, "b") */
    keyref refs[8];
    for (int k = 0; k < 8; k++)
        fuzz_key(&asked, k + 1, "b");
    for (size_t k = 0, each = asked.len / 8; k < 8; k++)
        refs[k] = (keyref){asked.p + k * each, (uint32_t)each};
    mk_nodelist out = {0};
    sl_err why, err;
    int rc = 1;
    msg *m = msg_decode(frame, len, &why);
    if (!m || msg_type(m) != MSG_REPLY)
        goto done;
    const msg_obj *rows;
    uint32_t n;
    uint64_t count;
    int64_t claimed;
    mk_bound lo = range_lo(&r), hi = range_hi(&r);
    switch (type) {
    case MSG_SPLIT:
        rc = co_check_split(&j, m, 8, &count, &why) ? 1 : 0;
        break;
    case MSG_TREE:
        if (msg_get_int(m, "rows", &claimed, &why) == 0 && claimed >= 0)
            rc = co_read_nodes(&j, &r, m, NULL, (uint64_t)claimed, &out, &why);
        break;
    case MSG_NODES: {
        mk_node parent = {.level = 2, .index = 3, .rows = 100};
        rc = co_read_nodes(&j, &r, m, &parent, parent.rows, &out, &why);
        break;
    }
    case MSG_ROWS:
    case MSG_FETCH:
    case MSG_STREAM:
        if (msg_get_array(m, "rows", &rows, &n, &why))
            break;
        if (type == MSG_ROWS     ? co_check_rows(&j, rows, n, &lo, &hi, &why)
            : type == MSG_STREAM ? co_check_stream(&j, rows, n, &lo, &hi, &why)
                                 : co_check_fetch(&j, rows, n, refs, 8, &why))
            break;
        /* accepted: merged against itself (all equal) and against nothing
         * (every row reported) */
        merge_fn fn = type == MSG_ROWS     ? co_span_row
                      : type == MSG_STREAM ? co_streamed_row
                                           : co_fetched_row;
        uint32_t width = type == MSG_ROWS ? 2 : 3;
        rc = co_merge_rows(&d, rows, n, rows, n, width, fn, &err) ||
                     co_merge_rows(&d, rows, n, NULL, 0, width, fn, &err)
                 ? -1
                 : 0;
        if (rc == 0 && events != n)
            abort(); /* a broken invariant: each row once */
        break;
    }
done:
    msg_free(m);
    mk_nodelist_free(&out);
    sl_buf_free(&asked);
    sl_buf_free(&r.lo);
    sl_buf_free(&r.hi);
    sl_buf_free(&r.emitted);
    sl_buf_free(&j.scratch);
    sl_buf_free(&j.changed);
    return rc;
}
