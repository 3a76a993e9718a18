/* co_plan: a job's first steps, on its fiber: describe both tables through
 * workers, reconcile their schemas into the compared columns, and split the
 * key space into ranges (or take a resumed job's). Also what every request
 * about the job's rows carries (co_pack_spec) and the checks of a split reply. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "co_impl.h"

void co_side_free(side_desc *d)
{
    for (size_t i = 0; i < d->n; i++) {
        free(d->name[i]);
        free(d->type[i]);
    }
    free(d->name);
    free(d->type);
    free(d->cls);
    for (size_t i = 0; i < d->nkey; i++)
        free(d->key[i]);
}

int co_describe(job *j, int side, side_desc *d, sl_err *err)
{
    co *c = j->c;
    int wi = co_pick_worker(c, j->db[side], err);
    if (wi < 0)
        return -1;
    uint64_t id;
    msg_writer *mw = co_request(c, MSG_DESCRIBE, &id);
    if (!mw)
        return sl_err_set(err, "out of memory");
    msg_put_cstr(mw, "db", j->db[side]);
    msg_put_cstr(mw, "table", j->table[side]);
    msg *m;
    int r = co_rpc(c, wi, mw, id, &m, err);
    if (r == CO_LOST && ++j->retries < CO_MAX_RETRIES)
        return co_describe(j, side, d, err);
    if (r)
        return -1;
    const msg_obj *cols, *keys;
    uint32_t nc, nk;
    const char *s;
    size_t l;
    int rc = -1, bad = 0;
    sl_err why = {0};
    if (msg_get_array(m, "columns", &cols, &nc, &why) ||
        msg_get_array(m, "key", &keys, &nk, &why)) {
        bad = 1;
        goto done;
    }
    if (msg_get_str(m, "source", &s, &l, NULL) == 0)
        snprintf(d->source, sizeof d->source, "%.*s", (int)l, s);
    int64_t loose = 0;
    if (msg_get(m, "loose"))
        msg_get_int(m, "loose", &loose, NULL);
    d->loose = loose != 0;
    if (nc > CO_MAX_TABLE_COLS || nk > ENC_MAX_KEY_COLS) {
        sl_err_setc(err, SL_INVALID, "table \"%s\" has too many columns (%u) or key columns (%u)",
                    j->table[side], nc, nk);
        goto done;
    }
    d->name = calloc(nc + 1, sizeof *d->name);
    d->type = calloc(nc + 1, sizeof *d->type);
    d->cls = calloc(nc + 1, sizeof *d->cls);
    if (!d->name || !d->type || !d->cls) {
        sl_err_set(err, "out of memory");
        goto done;
    }
    for (uint32_t i = 0; i < nc; i++) {
        const msg_obj *f;
        uint32_t nf;
        const char *ts;
        size_t tl;
        int64_t cls;
        if (msg_obj_array(msg_obj_at(cols, i), &f, &nf) || nf != 3 ||
            msg_obj_str(msg_obj_at(f, 0), &s, &l) || msg_obj_str(msg_obj_at(f, 1), &ts, &tl) ||
            msg_obj_int(msg_obj_at(f, 2), &cls) || cls <= 0 || cls >= ENC_CLASS_END) {
            sl_err_set(&why, "column %u is not [name, type, class]", i);
            bad = 1;
            goto done;
        }
        d->name[d->n] = strndup(s, l);
        d->type[d->n] = strndup(ts, tl);
        d->cls[d->n] = (int)cls;
        d->n++;
        if (!d->name[d->n - 1] || !d->type[d->n - 1]) {
            sl_err_set(err, "out of memory");
            goto done;
        }
    }
    for (uint32_t i = 0; i < nk; i++) {
        if (msg_obj_str(msg_obj_at(keys, i), &s, &l)) {
            sl_err_set(&why, "key column %u is not a name", i);
            bad = 1;
            goto done;
        }
        if (!(d->key[d->nkey] = strndup(s, l))) {
            sl_err_set(err, "out of memory");
            goto done;
        }
        d->nkey++;
    }
    rc = 0;
done:
    msg_free(m);
    if (bad) {
        co_side_free(d);
        memset(d, 0, sizeof *d);
        if (co_reject_worker(c, wi, err, "its describe reply is malformed: %s", why.msg) ==
                CO_LOST &&
            ++j->retries < CO_MAX_RETRIES)
            return co_describe(j, side, d, err);
    }
    return rc;
}

/* The index of column name in d, or -1. */
static int find_col(const side_desc *d, const char *name)
{
    for (size_t i = 0; i < d->n; i++)
        if (strcmp(d->name[i], name) == 0)
            return (int)i;
    return -1;
}

/* Whether name is one of list[0..n). */
static int in_list(const char *const *list, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(list[i], name) == 0)
            return 1;
    return 0;
}

/* Reports a schema drift event and counts it: 0, or -1 when the caller stops the job. */
static int emit_schema(job *j, const char *column, const char *detail, const char *st,
                       const char *tt, sl_err *err)
{
    co_event ev = {.kind = CO_SCHEMA,
                   .column = column,
                   .detail = detail,
                   .source_type = st,
                   .target_type = tt};
    j->sum->schema++;
    if (j->cb->event && j->cb->event(j->cb->ctx, &ev))
        return sl_err_set(err, "stopped by the caller");
    return 0;
}

/* Each compared column's tolerance from the job's rules (j->tol stays NULL
 * when every column is exact). */
static int resolve_tolerances(job *j, sl_err *err)
{
    free(j->tol);
    j->tol = NULL;
    if (!j->o->ntolerances)
        return 0;
    if (!(j->tol = malloc(j->ncols * sizeof *j->tol)))
        return sl_err_set(err, "out of memory");
    int r = enc_tol_resolve(j->o->tolerances, j->o->ntolerances, j->cols, j->cls, j->nkey, j->ncols,
                            j->tol, err);
    if (r < 0 || !j->o->keys_only)
        goto out;
    /* keys only: a changed row is a row hash that differs, but two numbers
     * within an epsilon may lie in neighbouring cells of its grid and hash
     * apart: only their values could tell, and those are never read */
    for (size_t i = 0; r == 0 && i < j->ncols; i++)
        if (j->tol[i].num != ENC_TOL_EXACT) {
            sl_err_setc(err, SL_INVALID,
                        "--keys-only cannot apply --tolerance to column \"%s\": values within "
                        "an epsilon may hash apart and only their values tell; drop one of the two",
                        j->cols[i]);
            r = -1;
        }
out:
    if (r != 0) {
        free(j->tol);
        j->tol = NULL;
    }
    return r < 0 ? -1 : 0;
}

/* Decides the key and the compared columns, and reports schema drift. */
int co_reconcile(job *j, side_desc *s, side_desc *t, sl_err *err)
{
    const co_diff_opts *o = j->o;
    const char *key[ENC_MAX_KEY_COLS];
    size_t nkey;
    int flags = o->strict ? ENC_STRICT : 0;
    if (o->nkey) {
        if (o->nkey > ENC_MAX_KEY_COLS)
            return sl_err_setc(err, SL_INVALID, "--key names %zu columns; at most %d", o->nkey,
                               ENC_MAX_KEY_COLS);
        for (size_t i = 0; i < o->nkey; i++)
            key[i] = o->key[i];
        nkey = o->nkey;
    } else {
        if (s->nkey == 0)
            return sl_err_setc(err, SL_INVALID,
                               "table \"%s\" in source has no primary key; pass --key COLUMNS",
                               j->table[0]);
        if (t->nkey == 0)
            return sl_err_setc(err, SL_INVALID,
                               "table \"%s\" in target has no primary key; pass --key COLUMNS",
                               j->table[1]);
        int same = s->nkey == t->nkey;
        for (size_t i = 0; same && i < s->nkey; i++)
            same = strcmp(s->key[i], t->key[i]) == 0;
        if (!same) {
            char a[256] = "", b[256] = "";
            for (size_t i = 0; i < s->nkey; i++)
                snprintf(a + strlen(a), sizeof a - strlen(a), "%s%s", i ? ", " : "", s->key[i]);
            for (size_t i = 0; i < t->nkey; i++)
                snprintf(b + strlen(b), sizeof b - strlen(b), "%s%s", i ? ", " : "", t->key[i]);
            return sl_err_setc(err, SL_INVALID,
                               "key columns differ: source (%s), target (%s); pass --key "
                               "to choose one",
                               a, b);
        }
        for (size_t i = 0; i < s->nkey; i++)
            key[i] = s->key[i];
        nkey = s->nkey;
    }
    j->ncols = 0;
    for (size_t i = 0; i < nkey; i++) {
        int a = find_col(s, key[i]), b = find_col(t, key[i]);
        if (a < 0 || b < 0)
            return sl_err_setc(err, SL_INVALID,
                               "key column \"%s\" does not exist in %s table \"%s\"", key[i],
                               a < 0 ? "source" : "target", a < 0 ? j->table[0] : j->table[1]);
        int cls = enc_class_common(s->cls[a], t->cls[b], flags);
        if (!cls || !enc_key_is_supported(cls))
            return sl_err_setc(err, SL_INVALID,
                               "key column \"%s\" has type %s (source) and %s (target); "
                               "sluice orders keys of integer, text, uuid or bytea type only: "
                               "pass --key with such columns",
                               key[i], s->type[a], t->type[b]);
        /* Each side reads its ranges in its own column type's order: an
         * integer column numerically, a text column bytewise ('10' < '9').
         * Read as one class, such keys would be bounded and merged in an
         * order one side does not keep, so ranges would overlap or leak. */
        if ((s->cls[a] == ENC_INT && t->cls[b] == ENC_TEXT) ||
            (s->cls[a] == ENC_TEXT && t->cls[b] == ENC_INT))
            return sl_err_setc(err, SL_INVALID,
                               "key column \"%s\" is %s in source (%s) but %s in target (%s), "
                               "and the two order keys differently; make the key types agree, or "
                               "compare through a view that casts the key on one side (with --key)",
                               key[i], enc_class_name(s->cls[a]), s->type[a],
                               enc_class_name(t->cls[b]), t->type[b]);
        for (size_t k = 0; k < i; k++)
            if (strcmp(key[k], key[i]) == 0)
                return sl_err_setc(err, SL_INVALID, "--key names \"%s\" twice", key[i]);
        j->cols[j->ncols] = s->name[a];
        j->cls[j->ncols++] = cls;
    }
    j->nkey = nkey;
    for (size_t i = 0; i < o->ncolumns; i++) {
        if (find_col(s, o->columns[i]) < 0)
            return sl_err_setc(err, SL_INVALID,
                               "--columns: column \"%s\" does not exist in source table \"%s\"",
                               o->columns[i], j->table[0]);
        if (find_col(t, o->columns[i]) < 0)
            return sl_err_setc(err, SL_INVALID,
                               "--columns: column \"%s\" does not exist in target table \"%s\"",
                               o->columns[i], j->table[1]);
    }
    for (size_t i = 0; i < s->n; i++) {
        const char *name = s->name[i];
        if (in_list(j->cols, j->nkey, name) || in_list(o->exclude, o->nexclude, name))
            continue;
        if (o->ncolumns && !in_list(o->columns, o->ncolumns, name))
            continue;
        int b = find_col(t, name);
        if (b < 0) {
            if (emit_schema(j, name, "missing in target", s->type[i], NULL, err))
                return -1;
            continue;
        }
        int cls = enc_class_common(s->cls[i], t->cls[b], flags);
        if (!cls) {
            if (emit_schema(j, name, "incompatible types", s->type[i], t->type[b], err))
                return -1;
            continue;
        }
        /* between two strictly typed databases a changed type class is drift
         * worth reporting, even when the values still compare */
        if (s->cls[i] != t->cls[b] && !s->loose && !t->loose &&
            emit_schema(j, name, "type changed", s->type[i], t->type[b], err))
            return -1;
        if (j->ncols == CO_MAX_COLS)
            return sl_err_setc(err, SL_INVALID,
                               "table \"%s\" has more than %d columns to compare; pass --columns "
                               "or --exclude-columns to compare at most %d",
                               j->table[0], CO_MAX_COLS, CO_MAX_COLS);
        j->cols[j->ncols] = name;
        j->cls[j->ncols++] = cls;
    }
    for (size_t i = 0; i < t->n; i++) {
        const char *name = t->name[i];
        if (find_col(s, name) >= 0 || in_list(o->exclude, o->nexclude, name) ||
            (o->ncolumns && !in_list(o->columns, o->ncolumns, name)))
            continue;
        if (emit_schema(j, name, "extra in target", NULL, t->type[i], err))
            return -1;
    }
    return resolve_tolerances(j, err);
}

void co_pack_spec(job *j, msg_writer *mw, int side)
{
    msg_put_cstr(mw, "db", j->db[side]);
    msg_put_cstr(mw, "table", j->table[side]);
    msg_key(mw, "cols");
    msg_pack_array(mw, (uint32_t)j->ncols);
    for (size_t i = 0; i < j->ncols; i++)
        msg_pack_cstr(mw, j->cols[i]);
    msg_key(mw, "cls");
    msg_pack_array(mw, (uint32_t)j->ncols);
    for (size_t i = 0; i < j->ncols; i++)
        msg_pack_int(mw, j->cls[i]);
    msg_put_uint(mw, "nkey", j->nkey);
    msg_put_cstr(mw, "where", j->o->where);
    msg_put_int(mw, "flags", j->o->strict ? ENC_STRICT : 0);
    if (j->tol) { /* the columns that are not exact */
        uint32_t n = 0;
        for (size_t i = 0; i < j->ncols; i++)
            n += !enc_tol_is_exact(&j->tol[i]);
        msg_key(mw, "tol");
        msg_pack_array(mw, n);
        for (size_t i = 0; i < j->ncols; i++) {
            const enc_tol *t = &j->tol[i];
            if (enc_tol_is_exact(t))
                continue;
            msg_pack_array(mw, 6);
            msg_pack_uint(mw, i);
            msg_pack_uint(mw, t->num);
            msg_pack_uint(mw, t->eps_m);
            msg_pack_int(mw, t->eps_e);
            msg_pack_uint(mw, t->text);
            msg_pack_uint(mw, t->ts_digits);
        }
    }
    /* the job's rate, shared by the streams that run at once (one per
     * worker slot) */
    size_t streams = co_alive_workers(j->c);
    msg_put_int(mw, "max_rps",
                j->o->max_rows_per_second > 0 ? (j->o->max_rows_per_second + (int64_t)streams - 1) /
                                                    (int64_t)(streams ? streams : 1)
                                              : 0);
}

void co_pack_bound(msg_writer *mw, const char *key, int kind, const uint8_t *p, size_t n)
{
    msg_key(mw, key);
    msg_pack_array(mw, 2);
    msg_pack_int(mw, kind);
    if (kind == MK_UNBOUNDED)
        msg_pack_nil(mw);
    else
        msg_pack_bin(mw, p, n);
}

/* Whether key is a key of this job (well-formed for its key classes). */
int co_is_job_key(const job *j, const uint8_t *key, size_t len, sl_err *why)
{
    return enc_key_check(key, len, j->cls, j->nkey, why) == 0;
}

/* A split reply: a row count, and at most nranges bounds that are keys of
 * the job in strictly rising order (ranges are built between them). 0, or
 * -1 with why saying what is wrong. */
int co_check_split(const job *j, const msg *m, size_t nranges, uint64_t *rows, sl_err *why)
{
    int64_t n;
    const msg_obj *b;
    uint32_t nb;
    if (msg_get_int(m, "rows", &n, why) || msg_get_array(m, "bounds", &b, &nb, why))
        return -1;
    if (n < 0)
        return sl_err_set(why, "claims %lld rows", (long long)n);
    if (nb > nranges)
        return sl_err_set(why, "has %u bounds for %zu ranges", nb, nranges);
    const uint8_t *prev = NULL, *k;
    size_t plen = 0, klen;
    for (uint32_t i = 0; i < nb; i++) {
        if (msg_obj_bin(msg_obj_at(b, i), &k, &klen))
            return sl_err_set(why, "has bound %u that is not binary", i);
        if (!co_is_job_key(j, k, klen, why))
            return sl_err_wrap(why, "bound %u", i);
        if (prev && mk_key_cmp(prev, plen, k, klen) >= 0)
            return sl_err_set(why, "has bound %u not above bound %u", i, i - 1);
        prev = k;
        plen = klen;
    }
    *rows = (uint64_t)n;
    return 0;
}

/* Asks one side for its row count and split keys. */
static int split(job *j, int side, size_t nranges, msg **reply, uint64_t *rows, sl_err *err)
{
    int wi = co_pick_worker(j->c, j->db[side], err);
    if (wi < 0)
        return -1;
    uint64_t id;
    msg_writer *mw = co_request(j->c, MSG_SPLIT, &id);
    if (!mw)
        return sl_err_set(err, "out of memory");
    co_pack_spec(j, mw, side);
    msg_put_uint(mw, "ranges", nranges);
    int r = co_rpc(j->c, wi, mw, id, reply, err);
    sl_err why;
    if (r == 0 && co_check_split(j, *reply, nranges, rows, &why)) {
        msg_free(*reply);
        *reply = NULL;
        r = co_reject_worker(j->c, wi, err, "its split reply %s", why.msg);
    }
    if (r == CO_LOST && ++j->retries < CO_MAX_RETRIES)
        return split(j, side, nranges, reply, rows, err);
    return r ? -1 : 0;
}

/* splitmix64: a small PRNG whose state is the caller's */
static uint64_t mix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* The ranges' visiting order: a Fisher-Yates permutation from seed. */
static int shuffle(job *j, uint64_t seed, sl_err *err)
{
    if (!(j->order = malloc(j->nr * sizeof *j->order)))
        return sl_err_set(err, "out of memory");
    for (size_t i = 0; i < j->nr; i++)
        j->order[i] = i;
    for (size_t i = j->nr; i > 1; i--) {
        size_t k = (size_t)(mix(&seed) % i), t = j->order[i - 1];
        j->order[i - 1] = j->order[k];
        j->order[k] = t;
    }
    return 0;
}

/* Builds the ranges from n bounds (keys[i], lens[i]); range i is
 * [bound i-1, bound i). */
static int make_ranges(job *j, size_t n, const uint8_t *const *keys, const size_t *lens,
                       sl_err *err)
{
    j->r = calloc(n + 1, sizeof *j->r);
    if (!j->r)
        return sl_err_set(err, "out of memory");
    j->nr = n + 1;
    for (size_t i = 0; i < j->nr; i++) {
        range *r = &j->r[i];
        if (i > 0 && sl_buf_append(&r->lo, keys[i - 1], lens[i - 1]))
            return sl_err_set(err, "out of memory");
        if (i < n && sl_buf_append(&r->hi, keys[i], lens[i]))
            return sl_err_set(err, "out of memory");
        r->has_lo = i > 0;
        r->has_hi = i < n;
        r->worker[0] = r->worker[1] = -1;
        r->planned = i;
        r->unfinished = 1;
    }
    if (!j->o->shuffle_seed) /* a scrub: the whole key space, in an order of its own */
        return 0;
    if (shuffle(j, j->o->shuffle_seed, err))
        return -1;
    if (j->o->sample_bp > 0 && j->o->sample_bp < 10000 && !j->o->resume_done) {
        /* a sample: the first ranges of the random order; the others are
         * left out as done, with no rows */
        size_t keep = (j->nr * (size_t)j->o->sample_bp + 9999) / 10000;
        for (size_t i = keep; i < j->nr; i++) {
            range *r = &j->r[j->order[i]];
            r->state[0] = r->state[1] = RS_COMPARED;
            j->ranges_done++;
        }
        j->sampled = keep;
        j->rows_expected = j->rows_expected * keep / j->nr;
    }
    return 0;
}

int co_plan(job *j, sl_err *err)
{
    const co_diff_opts *o = j->o;
    if (o->resume_done) { /* a restarted job keeps its ranges */
        if (make_ranges(j, o->resume_nbounds, o->resume_bounds, o->resume_lens, err))
            return -1;
        for (size_t i = 0; i < j->nr; i++)
            if (o->resume_done[i]) {
                j->r[i].state[0] = j->r[i].state[1] = RS_COMPARED;
                j->ranges_done++;
            }
        j->sum->source_rows = o->resume_rows[0];
        j->sum->target_rows = o->resume_rows[1];
        j->rows_done = j->rows_expected = o->resume_rows[0] + o->resume_rows[1];
        return 0;
    }
    size_t want = j->o->ranges ? j->o->ranges : 4 * co_alive_workers(j->c);
    if (!j->o->ranges && j->o->sample_bp) /* small ranges: a sample of many of them */
        want = 1000;
    msg *rep[2] = {NULL, NULL};
    uint64_t rows[2];
    int rc = -1;
    for (int s = 0; s < 2; s++)
        if (split(j, s, want, &rep[s], &rows[s], err))
            goto done;
    /* split on the larger side, with enough ranges to keep each small */
    int big = rows[1] > rows[0];
    uint64_t most = rows[big];
    j->rows_expected = rows[0] + rows[1];
    if (!j->o->ranges && most / want > CO_ROWS_PER_RANGE) {
        /* the count is the worker's word: capped as the workers cap it */
        want =
            most / CO_ROWS_PER_RANGE < 1000000 ? (size_t)(most / CO_ROWS_PER_RANGE + 1) : 1000000;
        msg_free(rep[big]);
        rep[big] = NULL;
        if (split(j, big, want, &rep[big], &rows[big], err))
            goto done;
    }
    const msg_obj *b;
    uint32_t nb;
    if (msg_get_array(rep[big], "bounds", &b, &nb, err))
        goto done;
    const uint8_t **keys = calloc((size_t)nb + 1, sizeof *keys);
    size_t *lens = calloc((size_t)nb + 1, sizeof *lens);
    int bad = 0;
    for (uint32_t i = 0; keys && lens && i < nb; i++)
        bad |= msg_obj_bin(msg_obj_at(b, i), &keys[i], &lens[i]);
    if (!keys || !lens)
        sl_err_set(err, "out of memory");
    else if (bad)
        sl_err_set(err, "malformed split reply from a worker");
    else if (make_ranges(j, nb, keys, lens, err) == 0 &&
             (!j->cb->planned || j->cb->planned(j->cb->ctx, nb, keys, lens) == 0))
        rc = 0;
    else if (j->cb->planned)
        sl_err_set(err, "could not record the job's plan");
    free(keys);
    free(lens);
done:
    msg_free(rep[0]);
    msg_free(rep[1]);
    return rc;
}
