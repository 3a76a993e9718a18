/* cli/report: divergences that arrive from several ordered runs (ranges
 * compared at once), interleaved, print exactly as the same divergences
 * given in key order, text and JSON; runs that overlap, a run out of order,
 * a divergence with no run and a transient one take the SQLite sort and
 * print the same too. The JSON document parses as the divergences given,
 * each on a line of its own. */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../cli/report.h"
#include "tap.h"

/* One divergence: key (a, b) encoded big-endian a then b's bytes, so
 * memcmp order is (a, b) order and a shorter b sorts first. */
typedef struct tev {
    int kind, status;
    long run;
    uint8_t key[40];
    size_t klen;
    char kv[2][32];
    int seq; /* arrival position, for the reference's stable sort */
} tev;

static const char *const key_cols[] = {"id", "part"};

static void tev_key(tev *t, uint32_t a, const char *b)
{
    t->key[0] = (uint8_t)(a >> 24);
    t->key[1] = (uint8_t)(a >> 16);
    t->key[2] = (uint8_t)(a >> 8);
    t->key[3] = (uint8_t)a;
    size_t n = strlen(b);
    memcpy(t->key + 4, b, n);
    t->klen = 4 + n;
    snprintf(t->kv[0], sizeof t->kv[0], "%u", a);
    snprintf(t->kv[1], sizeof t->kv[1], "%s", b);
}

static void feed(report *r, const tev *v, size_t n)
{
    char big[200];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = 0;
    for (size_t i = 0; i < n; i++) {
        const tev *t = &v[i];
        const char *vals[2] = {t->kv[0], t->kv[1]};
        char src[64];
        snprintf(src, sizeof src, "it's \"%d\"\t\\", t->seq);
        co_coldiff cols[3] = {
            {"amount", src, "12.5", NULL, NULL, 0, 0},
            {"note", NULL, "line\nbreak\x01", NULL, NULL, 0, 0},
            {"blob", big, "short", "0123456789abcdef0123456789abcdef", NULL, 123456, 0},
        };
        co_event ev = {.kind = t->kind,
                       .key = t->key,
                       .klen = t->klen,
                       .key_cols = key_cols,
                       .key_vals = vals,
                       .nkey = 2,
                       .cols = cols,
                       .ncols = t->kind == CO_CHANGED ? 3 : 0,
                       .status = t->status,
                       .run = t->run};
        report_add(r, &ev);
    }
}

/* What report_finish prints for r, as a malloc'd string. */
static char *printed(report *r, const char *format)
{
    co_summary s = {0};
    s.source_rows = s.target_rows = 1000;
    s.ranges = 5;
    s.workers = 2;
    s.elapsed = 1.5;
    snprintf(s.source_name, sizeof s.source_name, "src");
    snprintf(s.target_name, sizeof s.target_name, "dst");
    diff_args a = {0};
    a.format = format;
    a.o.table = "t";
    sl_err err = {0};
    fflush(stdout);
    FILE *tmp = tmpfile();
    int saved = dup(1);
    if (!tmp || saved < 0 || dup2(fileno(tmp), 1) < 0)
        return NULL;
    int rc = report_finish(r, &s, &a, &err);
    fflush(stdout);
    dup2(saved, 1);
    close(saved);
    char *out = NULL;
    long n = ftell(tmp);
    if (rc >= 0 && n >= 0 && (out = malloc((size_t)n + 1)) && fseek(tmp, 0, SEEK_SET) == 0 &&
        fread(out, 1, (size_t)n, tmp) == (size_t)n)
        out[n] = 0;
    else {
        free(out);
        out = NULL;
    }
    fclose(tmp);
    return out;
}

static char *printed_of(const tev *v, size_t n, const char *format, int *ran, int keys_only)
{
    report r = {0};
    r.json = strcmp(format, "json") == 0; /* the rows are formatted as they come */
    r.keys_only = keys_only;
    feed(&r, v, n);
    if (ran) /* the runs were kept: rows_each may read them back run by run */
        *ran = !r.no_runs && r.unsorted && r.nchunks > 1;
    char *out = printed(&r, format);
    report_free(&r);
    return out;
}

static int by_key(const void *a, const void *b)
{
    const tev *x = a, *y = b;
    size_t n = x->klen < y->klen ? x->klen : y->klen;
    int c = memcmp(x->key, y->key, n);
    if (!c)
        c = x->klen < y->klen ? -1 : x->klen > y->klen;
    return c ? c : (x->seq > y->seq) - (x->seq < y->seq);
}

/* What feed gives for t, as a "divergences" element. */
static json_t *expected(const tev *t, int keys_only)
{
    json_t *d = json_pack("{s:s, s:{s:s, s:s}}", "kind", co_kind_name(t->kind), "key", "id",
                          t->kv[0], "part", t->kv[1]);
    if (t->status)
        json_object_set_new(d, "status",
                            json_string(t->status == CO_TRANSIENT ? "transient" : "confirmed"));
    if (t->kind == CO_CHANGED && !keys_only) {
        char big[200], src[64];
        memset(big, 'x', sizeof big - 1);
        big[sizeof big - 1] = 0;
        snprintf(src, sizeof src, "it's \"%d\"\t\\", t->seq);
        json_object_set_new(
            d, "columns",
            json_pack("[{s:s, s:s, s:s}, {s:s, s:n, s:s}, {s:s, s:s, s:s, s:I, s:s}]", "column",
                      "amount", "source", src, "target", "12.5", "column", "note", "source",
                      "target", "line\nbreak\x01", "column", "blob", "source", big, "target",
                      "short", "source_length", (json_int_t)123456, "source_hash",
                      "0123456789abcdef0123456789abcdef"));
    }
    return d;
}

/* Whether the JSON document doc has the divergences of s[0..n) (in that
 * order), each on a line of its own, 4 spaces deep, and the rest laid out
 * as before. */
static int json_as_given(const char *doc, const tev *s, size_t n, int keys_only)
{
    json_error_t e;
    json_t *got = json_loads(doc, 0, &e), *want = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(want, expected(&s[i], keys_only));
    int good = got && json_equal(json_object_get(got, "divergences"), want);
    if (!good)
        printf("#   the document does not parse as the divergences given%s%s\n", got ? "" : ": ",
               got ? "" : e.text);
    /* the lines between "divergences": [ and ], one object each */
    const char *p = strstr(doc, "\n  \"divergences\": [\n");
    size_t lines = 0;
    if (!p || !strstr(doc, "\n  \"schema\": [],\n  \"divergences\"") ||
        !strstr(doc, "{\n  \"format\": \"sluice.diff\",\n"))
        good = 0;
    for (p = p ? strchr(p + 1, '\n') + 1 : NULL; p && strncmp(p, "  ],\n", 5); lines++) {
        const char *nl = strchr(p, '\n');
        if (!nl || strncmp(p, "    {\"kind\": \"", 14) ||
            !(nl[-1] == '}' || (nl[-1] == ',' && nl[-2] == '}'))) {
            printf("#   not a divergence on a line: \"%.60s\"\n", p);
            good = 0;
            break;
        }
        p = nl + 1;
    }
    if (lines != n) {
        printf("#   %zu lines of divergences, %zu given\n", lines, n);
        good = 0;
    }
    json_decref(got);
    json_decref(want);
    return good;
}

/* Whether v (in arrival order) prints as its divergences in key order (equal
 * keys in arrival order, the transient ones last), text and JSON. */
static int same_as_sorted(const tev *v, size_t n, const char *what, int want_runs)
{
    tev *s = malloc(n * sizeof *s);
    size_t ns = 0;
    for (size_t i = 0; i < n; i++)
        if (v[i].status != CO_TRANSIENT)
            s[ns++] = v[i];
    qsort(s, ns, sizeof *s, by_key);
    for (size_t i = 0; i < n; i++)
        if (v[i].status == CO_TRANSIENT)
            s[ns++] = v[i];
    int good = 1;
    for (int f = 0; f < 2; f++) {
        const char *format = f ? "json" : "text";
        int ran = 0;
        char *got = printed_of(v, n, format, &ran, 0);
        char *want = printed_of(s, n, format, NULL, 0);
        int same = got && want && strcmp(got, want) == 0;
        ok(same && (!want_runs || ran), "%s: %s output as in key order (%zu bytes)", what, format,
           want ? strlen(want) : 0);
        if (!same && got && want)
            for (size_t i = 0; got[i] || want[i]; i++)
                if (got[i] != want[i]) {
                    printf("#   first difference at byte %zu: got \"%.60s\"\n#   want \"%.60s\"\n",
                           i, got + (i > 20 ? i - 20 : 0), want + (i > 20 ? i - 20 : 0));
                    break;
                }
        good &= same;
        if (f)
            ok(got && json_as_given(got, s, n, 0), "%s: json parses as given, a line each", what);
        free(got);
        free(want);
    }
    free(s);
    return good;
}

static uint32_t rnd_state = 12345;
static uint32_t rnd(uint32_t n)
{
    rnd_state = rnd_state * 1103515245u + 12345u;
    return (rnd_state >> 8) % n;
}

/* nruns runs (ids given by ids[]), run i's keys in [base[i], base[i] + 999],
 * each in key order with some keys twice, interleaved in stretches of 1..30
 * events. Returns how many events went into v. */
static size_t make_runs(tev *v, size_t nruns, const long *ids, const uint32_t *base, size_t per)
{
    static tev runs[8][400];
    size_t cnt[8] = {0}, at[8] = {0}, n = 0;
    const char *parts[] = {"", "a", "ab", "b"};
    for (size_t i = 0; i < nruns; i++)
        for (uint32_t a = base[i]; cnt[i] < per; a += 1 + rnd(2)) {
            tev *t = &runs[i][cnt[i]++];
            memset(t, 0, sizeof *t);
            if (cnt[i] > 1 && rnd(6) == 0) /* an equal key, another kind */
                *t = runs[i][cnt[i] - 2];
            else
                tev_key(t, a, parts[rnd(4)]);
            t->run = ids[i];
            t->kind = CO_MISSING + (int)rnd(3);
        }
    for (int left = 1; left;) {
        left = 0;
        size_t i = rnd((uint32_t)nruns);
        for (size_t k = 1 + rnd(30); k-- && at[i] < cnt[i];)
            v[n++] = runs[i][at[i]++];
        for (size_t j = 0; j < nruns; j++)
            left |= at[j] < cnt[j];
    }
    for (size_t i = 0; i < n; i++)
        v[i].seq = (int)i;
    return n;
}

int main(void)
{
    static tev v[3000];
    const long ids[] = {3, 0, 7, 1, 2};
    const uint32_t base[] = {5000, 1000, 3000, 9000, 7000};

    size_t n = make_runs(v, 5, ids, base, 300);
    ok(n == 1500, "five runs of 300 divergences interleaved");
    same_as_sorted(v, n, "5 disjoint runs, read run by run", 1);

    n = make_runs(v, 3, ids, base, 50);
    same_as_sorted(v, n, "3 disjoint runs, read run by run", 1);

    /* one event per run: a chunk each */
    n = make_runs(v, 4, ids, base, 1);
    same_as_sorted(v, n, "4 runs of one divergence each", 0);

    /* everything in key order already: the plain read */
    n = make_runs(v, 1, ids, base, 300);
    same_as_sorted(v, n, "one run, in order", 0);

    /* runs that overlap: the SQLite sort */
    const uint32_t near[] = {1000, 1100, 3000};
    n = make_runs(v, 3, ids, near, 200);
    same_as_sorted(v, n, "overlapping runs (SQLite)", 0);

    /* two runs that share a key at their border: SQLite keeps arrival order */
    n = make_runs(v, 3, ids, base, 100);
    {
        size_t last = 0, first = n;
        for (size_t i = 0; i < n; i++) {
            if (v[i].run == ids[1]) /* based at 1000 */
                last = i;
            if (v[i].run == ids[2] && first == n) /* based at 3000 */
                first = i;
        }
        tev_key(&v[first], 0, "");
        memcpy(v[first].key, v[last].key, v[last].klen);
        v[first].klen = v[last].klen;
        memcpy(v[first].kv, v[last].kv, sizeof v[first].kv);
    }
    same_as_sorted(v, n, "runs sharing a key at their border (SQLite)", 0);

    /* a run out of order */
    n = make_runs(v, 4, ids, base, 100);
    for (size_t i = n / 2; i < n; i++)
        if (v[i].run == ids[0]) {
            tev_key(&v[i], base[0] + 1, "zz");
            break;
        }
    same_as_sorted(v, n, "a run out of key order (SQLite)", 0);

    /* a divergence with no run */
    n = make_runs(v, 4, ids, base, 100);
    v[n / 3].run = -1;
    same_as_sorted(v, n, "a divergence with no run (SQLite)", 0);

    /* a transient one */
    n = make_runs(v, 4, ids, base, 100);
    v[n / 2].status = CO_TRANSIENT;
    same_as_sorted(v, n, "a transient divergence (SQLite, last)", 0);

    /* --keys-only: no "columns" */
    n = make_runs(v, 4, ids, base, 50);
    {
        tev *s = malloc(n * sizeof *s);
        memcpy(s, v, n * sizeof *s);
        qsort(s, n, sizeof *s, by_key);
        char *got = printed_of(v, n, "json", NULL, 1);
        ok(got && json_as_given(got, s, n, 1), "--keys-only json: no columns, a line each");
        free(got);
        free(s);
    }

    /* no divergence: "divergences": [] as before */
    {
        char *got = printed_of(v, 0, "json", NULL, 0);
        ok(got && strstr(got, "\n  \"divergences\": [],\n  \"summary\": {\n"),
           "no divergence: an empty array");
        free(got);
    }

    return done_testing();
}
