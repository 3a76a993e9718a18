#include "dsn.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

typedef struct span {
    size_t off, len;
} span;

static const char *uri_rest(const char *dsn)
{
    if (strncmp(dsn, "postgresql://", 13) == 0)
        return dsn + 13;
    if (strncmp(dsn, "postgres://", 11) == 0)
        return dsn + 11;
    if (strncmp(dsn, "mysql://", 8) == 0) /* connectors/mysql.c: the same user:PASSWORD@ */
        return dsn + 8;
    if (strncmp(dsn, "mariadb://", 10) == 0)
        return dsn + 10;
    return NULL;
}

/* The password values as written in dsn, at most cap of them: in a URI,
 * from the userinfo's first ':' to the first '@' (where libpq ends it) and
 * to the last '@' (where a password holding '@' ends); in both forms, the
 * value of each password= keyword (quoted or not). */
static size_t secret_spans(const char *dsn, span *out, size_t cap)
{
    size_t n = 0;
    const char *rest = uri_rest(dsn);
    if (rest) {
        const char *first = strpbrk(rest, "@/");
        const char *last = strrchr(rest, '@');
        const char *colon = strchr(rest, ':');
        if (first && *first == '@' && colon && colon < first && n < cap)
            out[n++] = (span){(size_t)(colon + 1 - dsn), (size_t)(first - colon - 1)};
        if (last && last != first && colon && colon < last && n < cap)
            out[n++] = (span){(size_t)(colon + 1 - dsn), (size_t)(last - colon - 1)};
    }
    for (const char *p = strstr(dsn, "password"); p && n < cap; p = strstr(p + 1, "password")) {
        if (p > dsn && !strchr(" \t\n?&", p[-1]))
            continue;
        const char *v = p + 8;
        v += strspn(v, " \t\n");
        if (*v != '=')
            continue;
        v++;
        v += strspn(v, " \t\n");
        size_t len;
        if (!rest && *v == '\'') { /* conninfo quoting: '...' with \' and \\ */
            v++;
            for (len = 0; v[len] && v[len] != '\''; len++)
                if (v[len] == '\\' && v[len + 1])
                    len++;
        } else {
            len = strcspn(v, rest ? "&" : " \t\n");
        }
        out[n++] = (span){(size_t)(v - dsn), len};
    }
    return n;
}

void dsn_scrub_secret(char *msg, size_t cap, const char *secret)
{
    size_t sl = secret ? strlen(secret) : 0;
    if (!sl || !cap)
        return;
    char out[4096];
    size_t o = 0;
    for (const char *p = msg; *p && o + 1 < sizeof out;) {
        if (strncmp(p, secret, sl) == 0) {
            for (const char *s = "***"; *s && o + 1 < sizeof out; s++)
                out[o++] = *s;
            p += sl;
        } else {
            out[o++] = *p++;
        }
    }
    out[o] = '\0';
    snprintf(msg, cap, "%s", out);
}

/* Scrubs s[0..len) as typed and as libpq decodes it (%XX in a URI,
 * backslash escapes in a quoted conninfo value). */
static void scrub_span(char *msg, size_t cap, const char *s, size_t len, int uri)
{
    char raw[1024], dec[1024];
    if (len == 0 || len >= sizeof raw)
        return;
    memcpy(raw, s, len);
    raw[len] = '\0';
    size_t d = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned x;
        if (uri && raw[i] == '%' && isxdigit((unsigned char)raw[i + 1]) &&
            isxdigit((unsigned char)raw[i + 2]) && sscanf(raw + i + 1, "%2x", &x) == 1) {
            dec[d++] = (char)x;
            i += 2;
        } else if (!uri && raw[i] == '\\' && i + 1 < len) {
            dec[d++] = raw[++i];
        } else {
            dec[d++] = raw[i];
        }
    }
    dec[d] = '\0';
    dsn_scrub_secret(msg, cap, raw);
    dsn_scrub_secret(msg, cap, dec);
}

void dsn_scrub(char *msg, size_t cap, const char *dsn)
{
    span sp[8];
    size_t n = dsn ? secret_spans(dsn, sp, 8) : 0;
    if (n) /* a DSN without a password ("shop") may show, as libpq's names do */
        dsn_scrub_secret(msg, cap, dsn);
    for (size_t i = 0; i < n; i++)
        scrub_span(msg, cap, dsn + sp[i].off, sp[i].len, uri_rest(dsn) != NULL);
}

void dsn_redact(const char *dsn, char *out, size_t cap)
{
    span sp[8];
    size_t n = secret_spans(dsn, sp, 8), o = 0;
    if (!cap)
        return;
    for (size_t i = 0; dsn[i] && o + 1 < cap;) {
        size_t skip = 0;
        for (size_t k = 0; k < n; k++)
            if (sp[k].off == i && sp[k].len > skip)
                skip = sp[k].len;
        if (skip) {
            for (const char *s = "***"; *s && o + 1 < cap; s++)
                out[o++] = *s;
            i += skip;
        } else {
            out[o++] = dsn[i++];
        }
    }
    out[o] = '\0';
}

int dsn_check_uri(const char *dsn, const char *what, sl_err *err)
{
    const char *rest = uri_rest(dsn);
    if (!rest)
        return 0;
    const char *first = strpbrk(rest, "@/");
    const char *second = first ? strchr(first + 1, '@') : NULL;
    const char *end = first ? strpbrk(first + 1, *first == '@' ? "/?#" : "?#") : NULL;
    /* an '@' after the user info ("p@ss@host"), or one in what libpq takes
     * for the path ("pa/ss@host/db") */
    if (second && (!end || second < end))
        return sl_err_setc(err, SL_INVALID,
                           "%s: write '@' and '/' in its user name and password as %%40 and "
                           "%%2F",
                           what);
    return 0;
}

const char *dsn_parse_hint(const char *m)
{
    if (!m)
        return "check its quoting and %-escapes";
    if (strstr(m, "percent"))
        return "check its %-escapes (a '%' in a password is written %25)";
    if (strstr(m, "IPv6") || strstr(m, "]"))
        return "check the [brackets] around its IPv6 address";
    if (strstr(m, "quoted"))
        return "check its quoting (a conninfo value with spaces or quotes is written "
               "'...' with \\' and \\\\)";
    if (strstr(m, "missing \"=\""))
        return "check its NAME=VALUE pairs";
    if (strstr(m, "invalid connection option") || strstr(m, "invalid URI query parameter"))
        return "check its option names (see the libpq documentation)";
    return "check its quoting and %-escapes";
}

int dsn_auth_refused(const char *m)
{
    static const char *const says[] = {"authentication failed", "no password supplied",
                                       "pg_hba.conf", "is not permitted to log in"};
    for (size_t i = 0; i < sizeof says / sizeof says[0]; i++)
        if (strstr(m, says[i]))
            return 1;
    return strstr(m, "role \"") && strstr(m, "\" does not exist");
}

void dsn_error_line(char *out, size_t cap, const char *m, const char *password)
{
    snprintf(out, cap, "%.*s", (int)strcspn(m, "\n"), m);
    dsn_scrub_secret(out, cap, password);
}
