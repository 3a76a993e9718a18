/* ct_manifest: parse and validate a migration manifest (control/README.md,
 * "The manifest", is the contract this file keeps).
 *
 * The JSON is walked by hand so that every error can name the field path
 * it is about ("scope.tables[2].where"), what was found and what is
 * allowed. Values from the document are escaped and cut short before they
 * go into a message, so an error is always one printable line.
 */
#include "manifest.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define NAME_MAX_LEN 63
#define TABLE_MAX_LEN 127
#define WHERE_MAX_LEN 4096
#define DESCRIPTION_MAX_LEN 1024
#define TABLES_MAX 256
#define VERIFY_CHANGES_TABLES_MAX 16
#define WINDOWS_MAX 32
#define STEPS_MAX (sizeof(((ct_manifest *)0)->steps) / sizeof(int))
#define SOAK_MAX_S 86400
#define DURATION_MAX_S (7 * 86400)
#define TZ_MAX_MIN (14 * 60)

static const char *const phase_names[CT_PH_COUNT] = {"prepare",     "backfill", "dual_write",
                                                     "shadow_read", "cutover",  "cleanup"};
static const char *const strategy_names[] = {"auto", "cdc", "dual_write", "blue_green"};
static const char *const day_names[7] = {"mon", "tue", "wed", "thu", "fri", "sat", "sun"};
static const int default_steps[] = {1, 5, 25, 50, 100};

const char *ct_phase_name(ct_phase p)
{
    return (unsigned)p < CT_PH_COUNT ? phase_names[p] : NULL;
}

int ct_phase_parse(const char *s, ct_phase *out)
{
    for (int i = 0; s && i < CT_PH_COUNT; i++)
        if (!strcmp(s, phase_names[i])) {
            *out = (ct_phase)i;
            return 0;
        }
    return -1;
}

const char *ct_strategy_name(ct_strategy s)
{
    return (unsigned)s <= CT_STRAT_BLUE_GREEN ? strategy_names[s] : NULL;
}

int ct_strategy_parse(const char *s, ct_strategy *out)
{
    for (int i = 0; s && i <= CT_STRAT_BLUE_GREEN; i++)
        if (!strcmp(s, strategy_names[i])) {
            *out = (ct_strategy)i;
            return 0;
        }
    return -1;
}

const char *ct_class_name(ct_class c)
{
    switch (c) {
    case CT_CLASS_SCHEMA_ONLY:
        return "schema-only";
    case CT_CLASS_DATA_MOVE:
        return "data-move";
    case CT_CLASS_REPLATFORM:
        return "replatform";
    }
    return NULL;
}

/* ---- error helpers ---------------------------------------------------------- */

/* A value from the document made safe for a one-line message: control
 * characters, quotes and backslashes escaped, cut at 48 bytes with "...". */
typedef struct esc_buf {
    char s[208];
} esc_buf;

static const char *esc(esc_buf *b, const char *s)
{
    size_t o = 0, i = 0;
    for (; s[i] && o + 8 < sizeof b->s; i++) {
        unsigned char c = (unsigned char)s[i];
        if (i >= 48)
            break;
        if (c == '"' || c == '\\') {
            b->s[o++] = '\\';
            b->s[o++] = (char)c;
        } else if (c < 0x20 || c == 0x7f) {
            o += (size_t)snprintf(b->s + o, sizeof b->s - o, "\\x%02x", c);
        } else {
            b->s[o++] = (char)c;
        }
    }
    if (s[i]) {
        memcpy(b->s + o, "...", 3);
        o += 3;
    }
    b->s[o] = '\0';
    return b->s;
}

/* Sets err to "path: <message>" (code SL_INVALID) and returns -1. */
__attribute__((format(printf, 3, 4))) static int bad(sl_err *err, const char *path, const char *fmt,
                                                     ...)
{
    char msg[448];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return sl_err_setc(err, SL_INVALID, "%s: %s", path, msg);
}

static const char *type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
        return "an integer";
    case JSON_REAL:
        return "a number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    case JSON_NULL:
        return "null";
    }
    return "something else";
}

enum kind { K_INT, K_NUM, K_STR, K_BOOL, K_OBJ, K_ARR };

static int expect(const json_t *v, enum kind k, const char *path, sl_err *err)
{
    static const char *const what[] = {"an integer", "a number",  "a string",
                                       "a boolean",  "an object", "an array"};
    int fits = 0;
    switch (k) {
    case K_INT:
        fits = json_is_integer(v);
        break;
    case K_NUM:
        fits = json_is_number(v);
        break;
    case K_STR:
        fits = json_is_string(v);
        break;
    case K_BOOL:
        fits = json_is_boolean(v);
        break;
    case K_OBJ:
        fits = json_is_object(v);
        break;
    case K_ARR:
        fits = json_is_array(v);
        break;
    }
    return fits ? 0 : bad(err, path, "expected %s, got %s", what[k], type_name(v));
}

/* Refuses any key of obj not in allowed (NULL-terminated), naming it with
 * its full path and listing what is allowed at that level. */
static int check_keys(json_t *obj, const char *path, const char *const *allowed, sl_err *err)
{
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v)
    {
        size_t i = 0;
        while (allowed[i] && strcmp(allowed[i], key))
            i++;
        if (allowed[i])
            continue;
        char list[256] = "";
        for (size_t j = 0, o = 0; allowed[j] && o < sizeof list; j++)
            o += (size_t)snprintf(list + o, sizeof list - o, "%s%s", j ? ", " : "", allowed[j]);
        esc_buf e;
        return sl_err_setc(err, SL_INVALID, "unknown field \"%s%s%s\"; allowed: %s", path,
                           *path ? "." : "", esc(&e, key), list);
    }
    return 0;
}

/* "'x'" for a printable ASCII byte, "byte 0x07" for any other. */
static const char *byte_desc(char *buf, size_t n, unsigned char c)
{
    if (c > 0x20 && c < 0x7f)
        snprintf(buf, n, "'%c'", c);
    else if (c == ' ')
        snprintf(buf, n, "a space");
    else
        snprintf(buf, n, "byte 0x%02x", c);
    return buf;
}

static int is_name_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.' || c == '-';
}

/* A name of [A-Za-z0-9_.-], 1..63 bytes; what says what it names. */
static int check_name(const json_t *v, const char *path, const char *what, sl_err *err)
{
    if (expect(v, K_STR, path, err))
        return -1;
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    esc_buf e;
    char c[32];
    if (n == 0)
        return bad(err, path, "empty; %s is 1..%d characters of A-Z a-z 0-9 _ . -", what,
                   NAME_MAX_LEN);
    if (n > NAME_MAX_LEN)
        return bad(err, path, "\"%s\" is %zu characters; %s is at most %d", esc(&e, s), n, what,
                   NAME_MAX_LEN);
    for (size_t i = 0; i < n; i++)
        if (!is_name_char((unsigned char)s[i]))
            return bad(err, path, "\"%s\" has %s at position %zu; allowed: A-Z a-z 0-9 _ . -",
                       esc(&e, s), byte_desc(c, sizeof c, (unsigned char)s[i]), i + 1);
    return 0;
}

static char *dup_json_string(const json_t *v, sl_err *err)
{
    char *s = strdup(json_string_value(v));
    if (!s)
        sl_err_setc(err, SL_INTERNAL, "out of memory");
    return s;
}

/* ---- field parsers ------------------------------------------------------------ */

/* A duration: "N" + s|m|h, or an integer of seconds; 1 s .. 7 days. */
static int parse_duration(const json_t *v, const char *path, int64_t *out, sl_err *err)
{
    esc_buf e;
    int64_t s;
    if (json_is_integer(v)) {
        json_int_t i = json_integer_value(v);
        if (i < 1 || i > DURATION_MAX_S)
            return bad(err, path, "%lld seconds is out of range; allowed 1 s to 7 days (%d s)",
                       (long long)i, DURATION_MAX_S);
        *out = i;
        return 0;
    }
    if (!json_is_string(v))
        return bad(err, path,
                   "expected a duration (a string such as \"5m\" or an integer of seconds), got %s",
                   type_name(v));
    const char *t = json_string_value(v);
    size_t n = json_string_length(v);
    int ok = n >= 2 && n <= 10;
    s = 0;
    for (size_t i = 0; ok && i + 1 < n; i++) {
        if (t[i] < '0' || t[i] > '9')
            ok = 0;
        else
            s = s * 10 + (t[i] - '0');
    }
    char unit = ok ? t[n - 1] : 0;
    if (unit == 's')
        s *= 1;
    else if (unit == 'm')
        s *= 60;
    else if (unit == 'h')
        s *= 3600;
    else
        ok = 0;
    if (!ok)
        return bad(err, path, "\"%s\" is not a duration; use e.g. \"30s\", \"5m\", \"1h\"",
                   esc(&e, t));
    if (s < 1 || s > DURATION_MAX_S)
        return bad(err, path, "\"%s\" is out of range; allowed 1s to 7 days (\"168h\")", t);
    *out = s;
    return 0;
}

/* An integer field in [lo, hi]. */
static int parse_int(const json_t *v, const char *path, int64_t lo, int64_t hi, int64_t *out,
                     sl_err *err)
{
    if (expect(v, K_INT, path, err))
        return -1;
    json_int_t i = json_integer_value(v);
    if (i < lo)
        return bad(err, path, "%lld is below %lld", (long long)i, (long long)lo);
    if (i > hi)
        return bad(err, path, "%lld is above %lld", (long long)i, (long long)hi);
    *out = i;
    return 0;
}

static int parse_table_name(const json_t *v, const char *path, sl_err *err)
{
    if (expect(v, K_STR, path, err))
        return -1;
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    esc_buf e;
    char c[32];
    if (n == 0)
        return bad(err, path, "empty; a table name is 1..%d bytes", TABLE_MAX_LEN);
    if (n > TABLE_MAX_LEN)
        return bad(err, path, "\"%s\" is %zu bytes; a table name is at most %d", esc(&e, s), n,
                   TABLE_MAX_LEN);
    for (size_t i = 0; i < n; i++) {
        unsigned char u = (unsigned char)s[i];
        if (u < 0x20 || u == 0x7f || u == '"' || u == '\'')
            return bad(err, path,
                       "\"%s\" has %s at position %zu; a table name may not hold quotes or "
                       "control characters",
                       esc(&e, s), byte_desc(c, sizeof c, u), i + 1);
    }
    return 0;
}

static int parse_tables(json_t *arr, ct_manifest *m, int dry_run, sl_err *err)
{
    static const char *const keys[] = {"name", "where", NULL};
    if (expect(arr, K_ARR, "scope.tables", err))
        return -1;
    size_t n = json_array_size(arr);
    if (n == 0)
        return bad(err, "scope.tables", "empty; name at least one table");
    if (n > TABLES_MAX)
        return bad(err, "scope.tables", "%zu tables; at most %d", n, TABLES_MAX);
    m->tables = calloc(n, sizeof *m->tables);
    if (!m->tables)
        return sl_err_setc(err, SL_INTERNAL, "out of memory");
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_array_get(arr, i), *name = v, *where = NULL;
        char path[64], sub[96];
        snprintf(path, sizeof path, "scope.tables[%zu]", i);
        if (json_is_object(v)) {
            if (check_keys(v, path, keys, err))
                return -1;
            name = json_object_get(v, "name");
            where = json_object_get(v, "where");
            snprintf(sub, sizeof sub, "%s.name", path);
            if (!name)
                return bad(err, sub, "missing; a table given as an object needs its \"name\"");
            if (parse_table_name(name, sub, err))
                return -1;
        } else if (json_is_string(v)) {
            if (parse_table_name(v, path, err))
                return -1;
        } else {
            return bad(err, path,
                       "expected a table name or {\"name\": ..., \"where\": ...}, got %s",
                       type_name(v));
        }
        const char *s = json_string_value(name);
        for (size_t j = 0; j < i; j++)
            if (!strcmp(m->tables[j].name, s)) {
                esc_buf e;
                return bad(err, path, "\"%s\" is listed twice (also scope.tables[%zu])", esc(&e, s),
                           j);
            }
        ct_table *t = &m->tables[m->ntables++];
        if (!(t->name = dup_json_string(name, err)))
            return -1;
        if (!where)
            continue;
        snprintf(sub, sizeof sub, "%s.where", path);
        if (expect(where, K_STR, sub, err))
            return -1;
        size_t wn = json_string_length(where);
        if (wn == 0)
            return bad(err, sub, "empty; leave \"where\" out for the whole table");
        if (wn > WHERE_MAX_LEN)
            return bad(err, sub, "%zu bytes; a where clause is at most %d", wn, WHERE_MAX_LEN);
        if (!dry_run)
            return bad(err, sub,
                       "a partial scope is only allowed in a dry run (\"dry_run\": true)");
        if (!(t->where = dup_json_string(where, err)))
            return -1;
    }
    return 0;
}

static int parse_scope(json_t *o, ct_manifest *m, int dry_run, sl_err *err)
{
    static const char *const keys[] = {"source", "target", "tables", NULL};
    if (expect(o, K_OBJ, "scope", err) || check_keys(o, "scope", keys, err))
        return -1;
    json_t *src = json_object_get(o, "source"), *dst = json_object_get(o, "target");
    json_t *tables = json_object_get(o, "tables");
    if (!src)
        return bad(err, "scope.source", "missing; name the source database");
    if (check_name(src, "scope.source", "a database name", err))
        return -1;
    if (!dst)
        return bad(err, "scope.target", "missing; name the target database");
    if (check_name(dst, "scope.target", "a database name", err))
        return -1;
    if (!strcmp(json_string_value(src), json_string_value(dst)))
        return bad(err, "scope.target", "\"%s\" is the source too; source and target must differ",
                   json_string_value(dst));
    if (!tables)
        return bad(err, "scope.tables", "missing; list the tables to migrate");
    if (!(m->source = dup_json_string(src, err)) || !(m->target = dup_json_string(dst, err)))
        return -1;
    return parse_tables(tables, m, dry_run, err);
}

static int parse_phases(json_t *arr, ct_manifest *m, sl_err *err)
{
    if (expect(arr, K_ARR, "phases", err))
        return -1;
    size_t n = json_array_size(arr);
    if (n == 0)
        return bad(err, "phases", "empty; leave \"phases\" out for all six");
    int at[CT_PH_COUNT];
    for (int p = 0; p < CT_PH_COUNT; p++)
        at[p] = -1;
    int last = -1;
    m->nphases = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_array_get(arr, i);
        char path[64];
        esc_buf e;
        ct_phase p;
        snprintf(path, sizeof path, "phases[%zu]", i);
        if (expect(v, K_STR, path, err))
            return -1;
        if (ct_phase_parse(json_string_value(v), &p))
            return bad(err, path,
                       "\"%s\" is not a phase; allowed: prepare, backfill, dual_write, "
                       "shadow_read, cutover, cleanup",
                       esc(&e, json_string_value(v)));
        if (at[p] >= 0)
            return bad(err, path, "\"%s\" repeats phases[%d]", phase_names[p], at[p]);
        if (last >= 0 && (int)p < last)
            return bad(err, path,
                       "\"%s\" comes after \"%s\"; phases run in the order prepare, backfill, "
                       "dual_write, shadow_read, cutover, cleanup",
                       phase_names[p], phase_names[last]);
        at[p] = (int)i;
        last = (int)p;
        m->phases[m->nphases++] = p;
    }
    if (at[CT_PH_CUTOVER] < 0)
        return bad(err, "phases", "no \"cutover\"; every migration has a cutover phase");
    return 0;
}

static int parse_steps(json_t *arr, ct_manifest *m, sl_err *err)
{
    if (expect(arr, K_ARR, "cutover.steps", err))
        return -1;
    size_t n = json_array_size(arr);
    if (m->strategy == CT_STRAT_BLUE_GREEN) {
        json_t *v0 = json_array_get(arr, 0);
        if (n != 1 || !json_is_integer(v0) || json_integer_value(v0) != 100)
            return bad(err, "cutover.steps", "blue_green moves all traffic in one step: [100]");
    }
    if (n == 0)
        return bad(err, "cutover.steps", "empty; the steps rise to 100, e.g. [1, 25, 100]");
    if (n > STEPS_MAX)
        return bad(err, "cutover.steps", "%zu steps; at most %zu", n, STEPS_MAX);
    m->nsteps = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_array_get(arr, i);
        char path[64];
        snprintf(path, sizeof path, "cutover.steps[%zu]", i);
        if (expect(v, K_INT, path, err))
            return -1;
        json_int_t s = json_integer_value(v);
        if (s < 1 || s > 100)
            return bad(err, path, "%lld is out of range; a step is a read percent, 1..100",
                       (long long)s);
        if (i > 0 && s < m->steps[i - 1])
            return bad(err, path, "%lld is below the step before it (%d); steps rise to 100",
                       (long long)s, m->steps[i - 1]);
        if (i > 0 && s == m->steps[i - 1])
            return bad(err, path, "%lld repeats the step before it; steps rise to 100",
                       (long long)s);
        m->steps[m->nsteps++] = (int)s;
    }
    if (m->steps[n - 1] != 100) {
        char path[64];
        snprintf(path, sizeof path, "cutover.steps[%zu]", n - 1);
        return bad(err, path, "the last step is %d; the last step must be 100", m->steps[n - 1]);
    }
    return 0;
}

static int parse_cutover(json_t *o, ct_manifest *m, sl_err *err)
{
    static const char *const keys[] = {"steps", "soak_seconds", NULL};
    if (expect(o, K_OBJ, "cutover", err) || check_keys(o, "cutover", keys, err))
        return -1;
    json_t *v;
    if ((v = json_object_get(o, "steps")) && parse_steps(v, m, err))
        return -1;
    if ((v = json_object_get(o, "soak_seconds")) &&
        parse_int(v, "cutover.soak_seconds", 0, SOAK_MAX_S, &m->soak_s, err))
        return -1;
    return 0;
}

static int parse_metrics(json_t *o, ct_manifest *m, sl_err *err)
{
    static const char *const keys[] = {"audit_every", "sample_every", "verify_changes", NULL};
    if (expect(o, K_OBJ, "metrics", err) || check_keys(o, "metrics", keys, err))
        return -1;
    json_t *v;
    if ((v = json_object_get(o, "verify_changes"))) {
        if (expect(v, K_BOOL, "metrics.verify_changes", err))
            return -1;
        m->verify_changes = json_is_true(v);
    }
    if ((v = json_object_get(o, "audit_every")) &&
        parse_duration(v, "metrics.audit_every", &m->audit_every_s, err))
        return -1;
    if ((v = json_object_get(o, "sample_every")) &&
        parse_duration(v, "metrics.sample_every", &m->sample_every_s, err))
        return -1;
    return 0;
}

static int parse_thresholds(json_t *o, ct_manifest *m, sl_err *err)
{
    static const char *const keys[] = {
        "divergent_rows",        "replication_lag_seconds", "detection_latency_seconds",
        "shadow_mismatch_ratio", "unreachable_seconds",     NULL};
    const char *p = "abort_thresholds";
    if (expect(o, K_OBJ, p, err) || check_keys(o, p, keys, err))
        return -1;
    json_t *v;
    if ((v = json_object_get(o, "divergent_rows")) &&
        parse_int(v, "abort_thresholds.divergent_rows", 0, INT64_MAX, &m->max_divergent_rows, err))
        return -1;
    if ((v = json_object_get(o, "detection_latency_seconds")) &&
        parse_int(v, "abort_thresholds.detection_latency_seconds", 1, INT64_MAX,
                  &m->detection_latency_s, err))
        return -1;
    if ((v = json_object_get(o, "unreachable_seconds")) &&
        parse_int(v, "abort_thresholds.unreachable_seconds", 1, 86400, &m->unreachable_s, err))
        return -1;
    if ((v = json_object_get(o, "replication_lag_seconds"))) {
        p = "abort_thresholds.replication_lag_seconds";
        if (expect(v, K_NUM, p, err))
            return -1;
        double d = json_number_value(v);
        if (!(d > 0))
            return bad(err, p, "%g is not above 0; allowed: a number of seconds > 0", d);
        m->max_lag_s = d;
    }
    if ((v = json_object_get(o, "shadow_mismatch_ratio"))) {
        p = "abort_thresholds.shadow_mismatch_ratio";
        if (expect(v, K_NUM, p, err))
            return -1;
        double d = json_number_value(v);
        if (!(d >= 0 && d <= 1))
            return bad(err, p, "%g is out of range; allowed: 0..1", d);
        m->max_shadow_ratio = d;
    }
    return 0;
}

static int day_index(const char *s, size_t n)
{
    if (n != 3)
        return -1;
    for (int d = 0; d < 7; d++)
        if (!strncasecmp(s, day_names[d], 3))
            return d;
    return -1;
}

/* "mon-fri", "sat,sun", "mon,wed-fri", "fri-mon" (wraps), "daily" → a bit
 * set (bit 0 Monday); 0 for anything else. */
static unsigned parse_days(const char *s)
{
    unsigned days = 0;
    while (*s) {
        const char *end = strchr(s, ',');
        size_t n = end ? (size_t)(end - s) : strlen(s);
        while (n && *s == ' ')
            s++, n--;
        while (n && s[n - 1] == ' ')
            n--;
        const char *dash = memchr(s, '-', n);
        if (n == 5 && !strncasecmp(s, "daily", 5)) {
            days |= 0x7f;
        } else if (dash) {
            int a = day_index(s, (size_t)(dash - s)),
                b = day_index(dash + 1, n - (size_t)(dash - s) - 1);
            if (a < 0 || b < 0 || a == b)
                return 0;
            for (int d = a;; d = (d + 1) % 7) {
                days |= 1u << d;
                if (d == b)
                    break;
            }
        } else {
            int d = day_index(s, n);
            if (d < 0)
                return 0;
            days |= 1u << d;
        }
        if (!end)
            break;
        s = end + 1;
        if (!*s)
            return 0; /* a trailing comma */
    }
    return days;
}

/* "HH:MM" → minutes after midnight, or -1. */
static int parse_hhmm(const char *s)
{
    if (strlen(s) != 5 || s[2] != ':')
        return -1;
    for (int i = 0; i < 5; i++)
        if (i != 2 && (s[i] < '0' || s[i] > '9'))
            return -1;
    int h = (s[0] - '0') * 10 + (s[1] - '0'), mi = (s[3] - '0') * 10 + (s[4] - '0');
    return h > 23 || mi > 59 ? -1 : h * 60 + mi;
}

/* "UTC", "Z", "+HH:MM", "-HH:MM" → offset in minutes; 0 ok, -1 not. */
static int parse_tz(const char *s, int *off)
{
    if (!strcmp(s, "UTC") || !strcmp(s, "Z")) {
        *off = 0;
        return 0;
    }
    if ((s[0] != '+' && s[0] != '-') || parse_hhmm(s + 1) < 0)
        return -1;
    int m = parse_hhmm(s + 1);
    if (m > TZ_MAX_MIN)
        return -1;
    *off = s[0] == '-' ? -m : m;
    return 0;
}

static int parse_window(json_t *o, const char *path, ct_window *w, sl_err *err)
{
    static const char *const keys[] = {"days", "from", "to", "tz", NULL};
    if (expect(o, K_OBJ, path, err) || check_keys(o, path, keys, err))
        return -1;
    char sub[96];
    esc_buf e;
    json_t *v;
    snprintf(sub, sizeof sub, "%s.days", path);
    if (!(v = json_object_get(o, "days")))
        return bad(err, sub, "missing; e.g. \"mon-fri\", \"sat,sun\" or \"daily\"");
    if (expect(v, K_STR, sub, err))
        return -1;
    if (!(w->days = parse_days(json_string_value(v))))
        return bad(err, sub,
                   "\"%s\" is not a list of days; use e.g. \"mon-fri\", \"sat,sun\", "
                   "\"mon,wed-fri\" or \"daily\" (mon tue wed thu fri sat sun)",
                   esc(&e, json_string_value(v)));
    static const char *const ends[] = {"from", "to"};
    int *mins[] = {&w->from_min, &w->to_min};
    for (int i = 0; i < 2; i++) {
        snprintf(sub, sizeof sub, "%s.%s", path, ends[i]);
        if (!(v = json_object_get(o, ends[i])))
            return bad(err, sub, "missing; a time \"HH:MM\" such as \"02:00\"");
        if (expect(v, K_STR, sub, err))
            return -1;
        if ((*mins[i] = parse_hhmm(json_string_value(v))) < 0)
            return bad(err, sub, "\"%s\" is not a time; use \"HH:MM\", 00:00..23:59",
                       esc(&e, json_string_value(v)));
    }
    if (w->from_min == w->to_min)
        return bad(err, sub,
                   "\"%s\" equals from; a window needs from != to (from > to wraps past "
                   "midnight)",
                   json_string_value(v));
    w->utc_offset_min = 0;
    snprintf(sub, sizeof sub, "%s.tz", path);
    if ((v = json_object_get(o, "tz"))) {
        if (expect(v, K_STR, sub, err))
            return -1;
        if (parse_tz(json_string_value(v), &w->utc_offset_min))
            return bad(err, sub,
                       "\"%s\" is not supported; only \"UTC\" or a fixed offset such as "
                       "\"+01:00\" (up to +/-14:00) is, no zone names",
                       esc(&e, json_string_value(v)));
    }
    return 0;
}

static int parse_windows(json_t *arr, ct_manifest *m, sl_err *err)
{
    if (expect(arr, K_ARR, "windows", err))
        return -1;
    size_t n = json_array_size(arr);
    if (n > WINDOWS_MAX)
        return bad(err, "windows", "%zu windows; at most %d", n, WINDOWS_MAX);
    if (n == 0)
        return 0;
    if (!(m->windows = calloc(n, sizeof *m->windows)))
        return sl_err_setc(err, SL_INTERNAL, "out of memory");
    for (size_t i = 0; i < n; i++) {
        char path[64];
        snprintf(path, sizeof path, "windows[%zu]", i);
        if (parse_window(json_array_get(arr, i), path, &m->windows[i], err))
            return -1;
        m->nwindows++;
    }
    return 0;
}

static int parse_approvals(json_t *arr, ct_manifest *m, sl_err *err)
{
    if (expect(arr, K_ARR, "approvals", err))
        return -1;
    unsigned in_phases = 0;
    for (size_t i = 0; i < m->nphases; i++)
        in_phases |= 1u << m->phases[i];
    for (size_t i = 0; i < json_array_size(arr); i++) {
        json_t *v = json_array_get(arr, i);
        char path[64];
        esc_buf e;
        ct_phase p;
        snprintf(path, sizeof path, "approvals[%zu]", i);
        if (expect(v, K_STR, path, err))
            return -1;
        if (ct_phase_parse(json_string_value(v), &p))
            return bad(err, path,
                       "\"%s\" is not a phase; allowed: prepare, backfill, dual_write, "
                       "shadow_read, cutover, cleanup",
                       esc(&e, json_string_value(v)));
        if (!(in_phases & (1u << p)))
            return bad(err, path, "\"%s\" is not one of this manifest's phases", phase_names[p]);
        if (m->approvals & (1u << p))
            return bad(err, path, "\"%s\" is listed twice", phase_names[p]);
        m->approvals |= 1u << p;
    }
    return 0;
}

static int parse_router(json_t *o, ct_manifest *m, sl_err *err)
{
    static const char *const keys[] = {
        "type", "read_backend", "write_backend", "source_server", "target_server", "write_frontend",
        NULL};
    if (expect(o, K_OBJ, "router", err) || check_keys(o, "router", keys, err))
        return -1;
    json_t *type = json_object_get(o, "type");
    if (type) {
        esc_buf e;
        if (expect(type, K_STR, "router.type", err))
            return -1;
        const char *t = json_string_value(type);
        if (!strcmp(t, "haproxy"))
            m->router.haproxy = 1;
        else if (strcmp(t, "endpoint"))
            return bad(err, "router.type", "\"%s\" is not a router; allowed: endpoint, haproxy",
                       esc(&e, t));
    }
    char **dst[] = {&m->router.read_backend, &m->router.write_backend, &m->router.source_server,
                    &m->router.target_server};
    for (int i = 0; i < 4; i++) {
        const char *key = keys[i + 1];
        char path[64];
        json_t *v = json_object_get(o, key);
        snprintf(path, sizeof path, "router.%s", key);
        if (!m->router.haproxy) {
            if (v)
                return bad(err, path,
                           "only for \"type\": \"haproxy\"; the endpoint router takes no "
                           "backends or servers");
            continue;
        }
        if (!v)
            return bad(err, path,
                       "missing; \"type\": \"haproxy\" needs read_backend, write_backend, "
                       "source_server and target_server");
        if (check_name(v, path, "an HAProxy name", err))
            return -1;
        if (!(*dst[i] = dup_json_string(v, err)))
            return -1;
    }
    /* write_frontend: where a write cutover holds new connections;
     * optional, the write backend's name by default */
    json_t *wf = json_object_get(o, "write_frontend");
    if (wf && !m->router.haproxy)
        return bad(err, "router.write_frontend",
                   "only for \"type\": \"haproxy\"; the endpoint router takes no frontends");
    if (m->router.haproxy) {
        if (wf && check_name(wf, "router.write_frontend", "an HAProxy name", err))
            return -1;
        m->router.write_frontend = wf ? dup_json_string(wf, err) : strdup(m->router.write_backend);
        if (!m->router.write_frontend)
            return -1;
    }
    if (m->router.haproxy && !strcmp(m->router.source_server, m->router.target_server))
        return bad(err, "router.target_server",
                   "\"%s\" is source_server too; the two servers must differ",
                   m->router.target_server);
    return 0;
}

static int parse_root(json_t *root, ct_manifest *m, sl_err *err)
{
    static const char *const keys[] = {"migration_id",
                                       "scope",
                                       "strategy",
                                       "phases",
                                       "cutover",
                                       "metrics",
                                       "abort_thresholds",
                                       "windows",
                                       "approvals",
                                       "dry_run",
                                       "router",
                                       "description",
                                       NULL};
    if (!json_is_object(root))
        return sl_err_setc(err, SL_INVALID, "manifest: expected a JSON object, got %s",
                           type_name(root));
    if (check_keys(root, "", keys, err))
        return -1;
    json_t *v = json_object_get(root, "migration_id");
    if (!v)
        return bad(err, "migration_id", "missing; name the migration, e.g. \"orders-to-pg16\"");
    if (check_name(v, "migration_id", "a migration id", err))
        return -1;
    const char *id = json_string_value(v);
    if (id[0] == '.' || id[0] == '-')
        return bad(err, "migration_id", "\"%s\" starts with '%c'; start with A-Z a-z 0-9 or _", id,
                   id[0]);
    if (!(m->id = dup_json_string(v, err)))
        return -1;

    if ((v = json_object_get(root, "dry_run"))) {
        if (expect(v, K_BOOL, "dry_run", err))
            return -1;
        m->dry_run = json_is_true(v);
    }
    if ((v = json_object_get(root, "strategy"))) {
        esc_buf e;
        if (expect(v, K_STR, "strategy", err))
            return -1;
        if (ct_strategy_parse(json_string_value(v), &m->strategy))
            return bad(err, "strategy",
                       "\"%s\" is not a strategy; allowed: cdc, dual_write, blue_green, auto",
                       esc(&e, json_string_value(v)));
    }
    if (m->strategy == CT_STRAT_BLUE_GREEN) {
        m->steps[0] = 100;
        m->nsteps = 1;
    }
    if (!(v = json_object_get(root, "scope")))
        return bad(err, "scope", "missing; {\"source\": ..., \"target\": ..., \"tables\": [...]}");
    if (parse_scope(v, m, m->dry_run, err))
        return -1;
    if ((v = json_object_get(root, "phases")) && parse_phases(v, m, err))
        return -1;
    if ((v = json_object_get(root, "cutover")) && parse_cutover(v, m, err))
        return -1;
    if ((v = json_object_get(root, "metrics")) && parse_metrics(v, m, err))
        return -1;
    /* two logical replication slots a table (one on each side) */
    if (m->verify_changes && m->ntables > VERIFY_CHANGES_TABLES_MAX)
        return bad(err, "metrics.verify_changes",
                   "follows %zu tables; at most %d (each takes a replication slot on both "
                   "sides): split the scope into several migrations",
                   m->ntables, VERIFY_CHANGES_TABLES_MAX);
    if ((v = json_object_get(root, "abort_thresholds")) && parse_thresholds(v, m, err))
        return -1;
    if ((v = json_object_get(root, "windows")) && parse_windows(v, m, err))
        return -1;
    if ((v = json_object_get(root, "approvals")) && parse_approvals(v, m, err))
        return -1;
    if ((v = json_object_get(root, "router")) && parse_router(v, m, err))
        return -1;
    if ((v = json_object_get(root, "description"))) {
        if (expect(v, K_STR, "description", err))
            return -1;
        if (json_string_length(v) > DESCRIPTION_MAX_LEN)
            return bad(err, "description", "%zu bytes; at most %d", json_string_length(v),
                       DESCRIPTION_MAX_LEN);
        if (!(m->description = dup_json_string(v, err)))
            return -1;
    }
    return 0;
}

/* jansson's message, made one printable line. */
static void clean_line(char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            *s = '?';
}

ct_manifest *ct_manifest_parse(const char *json, size_t len, sl_err *err)
{
    json_error_t je;
    json_t *root =
        json ? json_loadb(json, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &je) : NULL;
    if (!root) {
        if (!json) {
            snprintf(je.text, sizeof je.text, "no input");
            je.line = 1;
            je.column = 0;
        }
        clean_line(je.text);
        sl_err_setc(err, SL_INVALID, "manifest is not valid JSON: %s at line %d column %d", je.text,
                    je.line, je.column);
        return NULL;
    }
    ct_manifest *m = calloc(1, sizeof *m);
    if (!m) {
        json_decref(root);
        sl_err_setc(err, SL_INTERNAL, "out of memory");
        return NULL;
    }
    m->strategy = CT_STRAT_AUTO;
    for (int p = 0; p < CT_PH_COUNT; p++)
        m->phases[p] = (ct_phase)p;
    m->nphases = CT_PH_COUNT;
    memcpy(m->steps, default_steps, sizeof default_steps);
    m->nsteps = sizeof default_steps / sizeof default_steps[0];
    m->soak_s = 60;
    m->audit_every_s = 300;
    m->sample_every_s = 10;
    m->max_divergent_rows = 0;
    m->max_lag_s = 30;
    m->detection_latency_s = 60;
    m->unreachable_s = 10;
    m->max_shadow_ratio = 0.0;
    int rc = parse_root(root, m, err);
    json_decref(root);
    if (rc) {
        ct_manifest_free(m);
        return NULL;
    }
    return m;
}

void ct_manifest_free(ct_manifest *m)
{
    if (!m)
        return;
    free(m->id);
    free(m->source);
    free(m->target);
    for (size_t i = 0; i < m->ntables; i++) {
        free(m->tables[i].name);
        free(m->tables[i].where);
    }
    free(m->tables);
    free(m->windows);
    free(m->router.read_backend);
    free(m->router.write_backend);
    free(m->router.write_frontend);
    free(m->router.source_server);
    free(m->router.target_server);
    free(m->description);
    free(m);
}

/* ---- writing back ---------------------------------------------------------- */

/* Sets key on obj; a NULL value (a failed allocation) or a failed set
 * counts in *bad, so one check at the end covers every allocation. */
static void put(json_t *obj, const char *key, json_t *v, int *bad_count)
{
    if (!obj || !v || json_object_set_new(obj, key, v))
        (*bad_count)++;
}

static void push(json_t *arr, json_t *v, int *bad_count)
{
    if (!arr || !v || json_array_append_new(arr, v))
        (*bad_count)++;
}

/* The canonical spelling of a day set: "daily", or runs of three or more
 * days as ranges ("mon-fri"), others listed ("sat,sun"). */
static void days_text(unsigned days, char *out, size_t n)
{
    if ((days & 0x7f) == 0x7f) {
        snprintf(out, n, "daily");
        return;
    }
    size_t o = 0;
    out[0] = '\0';
    for (int d = 0; d < 7;) {
        if (!(days & (1u << d))) {
            d++;
            continue;
        }
        int e = d;
        while (e + 1 < 7 && (days & (1u << (e + 1))))
            e++;
        const char *sep = o ? "," : "";
        if (e - d >= 2)
            o += (size_t)snprintf(out + o, n - o, "%s%s-%s", sep, day_names[d], day_names[e]);
        else
            for (int k = d; k <= e; k++, sep = ",")
                o += (size_t)snprintf(out + o, n - o, "%s%s", sep, day_names[k]);
        d = e + 1;
    }
}

static json_t *hhmm(int min)
{
    char b[16];
    snprintf(b, sizeof b, "%02d:%02d", min / 60 % 24, min % 60);
    return json_string(b);
}

char *ct_manifest_json(const ct_manifest *m)
{
    int nbad = 0;
    json_t *root = json_object(), *scope = json_object(), *tables = json_array();
    put(root, "migration_id", json_string(m->id), &nbad);
    for (size_t i = 0; i < m->ntables; i++) {
        const ct_table *t = &m->tables[i];
        if (!t->where) {
            push(tables, json_string(t->name), &nbad);
            continue;
        }
        json_t *o = json_object();
        put(o, "name", json_string(t->name), &nbad);
        put(o, "where", json_string(t->where), &nbad);
        push(tables, o, &nbad);
    }
    put(scope, "source", json_string(m->source), &nbad);
    put(scope, "target", json_string(m->target), &nbad);
    put(scope, "tables", tables, &nbad);
    put(root, "scope", scope, &nbad);
    put(root, "strategy", json_string(ct_strategy_name(m->strategy)), &nbad);

    json_t *phases = json_array(), *approvals = json_array();
    for (size_t i = 0; i < m->nphases; i++)
        push(phases, json_string(phase_names[m->phases[i]]), &nbad);
    for (int p = 0; p < CT_PH_COUNT; p++)
        if (m->approvals & (1u << p))
            push(approvals, json_string(phase_names[p]), &nbad);
    put(root, "phases", phases, &nbad);
    put(root, "approvals", approvals, &nbad);

    json_t *cut = json_object(), *steps = json_array();
    for (size_t i = 0; i < m->nsteps; i++)
        push(steps, json_integer(m->steps[i]), &nbad);
    put(cut, "steps", steps, &nbad);
    put(cut, "soak_seconds", json_integer(m->soak_s), &nbad);
    put(root, "cutover", cut, &nbad);

    json_t *met = json_object();
    put(met, "audit_every", json_integer(m->audit_every_s), &nbad);
    put(met, "sample_every", json_integer(m->sample_every_s), &nbad);
    put(met, "verify_changes", json_boolean(m->verify_changes), &nbad);
    put(root, "metrics", met, &nbad);

    json_t *ab = json_object();
    put(ab, "divergent_rows", json_integer(m->max_divergent_rows), &nbad);
    put(ab, "replication_lag_seconds", json_real(m->max_lag_s), &nbad);
    put(ab, "detection_latency_seconds", json_integer(m->detection_latency_s), &nbad);
    put(ab, "shadow_mismatch_ratio", json_real(m->max_shadow_ratio), &nbad);
    put(ab, "unreachable_seconds", json_integer(m->unreachable_s), &nbad);
    put(root, "abort_thresholds", ab, &nbad);

    json_t *wins = json_array();
    for (size_t i = 0; i < m->nwindows; i++) {
        const ct_window *w = &m->windows[i];
        json_t *o = json_object();
        char days[64], tz[16];
        days_text(w->days, days, sizeof days);
        int off = w->utc_offset_min < 0 ? -w->utc_offset_min : w->utc_offset_min;
        if (w->utc_offset_min == 0)
            snprintf(tz, sizeof tz, "UTC");
        else
            snprintf(tz, sizeof tz, "%c%02d:%02d", w->utc_offset_min < 0 ? '-' : '+', off / 60,
                     off % 60);
        put(o, "days", json_string(days), &nbad);
        put(o, "from", hhmm(w->from_min), &nbad);
        put(o, "to", hhmm(w->to_min), &nbad);
        put(o, "tz", json_string(tz), &nbad);
        push(wins, o, &nbad);
    }
    put(root, "windows", wins, &nbad);
    put(root, "dry_run", json_boolean(m->dry_run), &nbad);

    json_t *router = json_object();
    put(router, "type", json_string(m->router.haproxy ? "haproxy" : "endpoint"), &nbad);
    if (m->router.haproxy) {
        put(router, "read_backend", json_string(m->router.read_backend), &nbad);
        put(router, "write_backend", json_string(m->router.write_backend), &nbad);
        put(router, "write_frontend", json_string(m->router.write_frontend), &nbad);
        put(router, "source_server", json_string(m->router.source_server), &nbad);
        put(router, "target_server", json_string(m->router.target_server), &nbad);
    }
    put(root, "router", router, &nbad);
    if (m->description)
        put(root, "description", json_string(m->description), &nbad);

    char *out = nbad ? NULL : json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(root);
    return out;
}

/* ---- windows ----------------------------------------------------------------- */

static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

int ct_manifest_in_window(const ct_manifest *m, int64_t wall_ms)
{
    if (!m->nwindows)
        return 1;
    for (size_t i = 0; i < m->nwindows; i++) {
        const ct_window *w = &m->windows[i];
        int64_t local_min = floor_div(wall_ms, 60000) + w->utc_offset_min;
        int64_t day = floor_div(local_min, 1440);
        int min = (int)(local_min - day * 1440);
        int dow = (int)((day % 7 + 7 + 3) % 7); /* 1970-01-01 was a Thursday (3) */
        int yesterday = (dow + 6) % 7;
        if (w->from_min < w->to_min) {
            if ((w->days & (1u << dow)) && min >= w->from_min && min < w->to_min)
                return 1;
        } else { /* wraps: the day named is the day the window starts */
            if ((w->days & (1u << dow)) && min >= w->from_min)
                return 1;
            if ((w->days & (1u << yesterday)) && min < w->to_min)
                return 1;
        }
    }
    return 0;
}

/* ---- classification -------------------------------------------------------- */

/* A fixed-size field from the facts, as a printable NUL-terminated string. */
static const char *fact(char *out, size_t n, const char *field, size_t field_size)
{
    size_t len = strnlen(field, field_size);
    if (len >= n)
        len = n - 1;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)field[i];
        out[i] = c < 0x20 || c == 0x7f ? '?' : (char)c;
    }
    out[len] = '\0';
    return out;
}

ct_class ct_classify(const ct_side_facts *src, const ct_side_facts *dst, ct_strategy *strategy,
                     char *reason, size_t reason_len)
{
    char se[sizeof src->engine], de[sizeof dst->engine], sid[sizeof src->server_id];
    char did[sizeof dst->server_id], why[320], how[160];
    fact(se, sizeof se, src->engine, sizeof src->engine);
    fact(de, sizeof de, dst->engine, sizeof dst->engine);
    fact(sid, sizeof sid, src->server_id, sizeof src->server_id);
    fact(did, sizeof did, dst->server_id, sizeof dst->server_id);
    int same_engine = !strcmp(se, de);
    int same_server = sid[0] && !strcmp(sid, did) && same_engine;
    ct_class c;
    if (same_server) {
        c = CT_CLASS_SCHEMA_ONLY;
        snprintf(why, sizeof why,
                 "source and target are on the same server (%s %d, %s); only the schema changes",
                 se, src->major, sid);
    } else if (same_engine && src->major == dst->major) {
        c = CT_CLASS_DATA_MOVE;
        snprintf(why, sizeof why,
                 "%s %d to %s %d on another server: the data moves, the engine stays", se,
                 src->major, de, dst->major);
    } else {
        c = CT_CLASS_REPLATFORM;
        snprintf(why, sizeof why, "%s %d to %s %d: %s", se, src->major, de, dst->major,
                 same_engine ? "another major version" : "another engine");
    }
    ct_strategy s = CT_STRAT_DUAL_WRITE;
    if (strcmp(se, "postgresql") || strcmp(de, "postgresql"))
        snprintf(how, sizeof how,
                 "dual_write, not cdc, because logical replication needs postgresql on both sides");
    else if (same_server)
        snprintf(how, sizeof how,
                 "dual_write, not cdc, because source and target are the same server");
    else if (!src->logical)
        snprintf(how, sizeof how,
                 "dual_write, not cdc, because the source wal_level is not logical");
    else {
        s = CT_STRAT_CDC;
        snprintf(how, sizeof how, "cdc, as logical replication can run from source to target");
    }
    if (strategy)
        *strategy = s;
    if (reason && reason_len)
        snprintf(reason, reason_len, "%s; strategy %s", why, how);
    return c;
}
