/* MySQL and MariaDB through MariaDB Connector/C. Every statement is a
 * prepared one (values bound, never spliced), its rows read unbuffered, one
 * at a time (no mysql_stmt_store_result: memory stays at one row), in the
 * binary protocol, so integers, doubles and dates arrive typed, without a
 * text round trip. Statements run through the non-blocking API, awaited
 * with poll() (my_wait): the read deadline is ours and the tick hook runs
 * while the server is silent.
 *
 * The session is pinned so that what comes out is what the encoder expects
 * whatever the server's defaults: time_zone +00:00 (TIMESTAMP values are
 * instants, read in UTC), NAMES utf8mb4 (text in UTF-8 whatever a column's
 * charset), and an sql_mode of ANSI_QUOTES, PIPES_AS_CONCAT and
 * NO_BACKSLASH_ESCAPES, so a --where means on MySQL what it means on
 * PostgreSQL ("x" an identifier, || a concatenation, '\' a backslash).
 * Identifiers are quoted with backticks, which every sql_mode reads as
 * identifiers. Text keys are ordered CONVERT(k USING utf8mb4) COLLATE
 * utf8mb4_nopad_bin (MariaDB) or utf8mb4_0900_bin (MySQL 8): code point
 * order, which is the UTF-8 byte order of the key encoding, and NO PAD, so
 * 'a\t' sorts before 'a' as it does bytewise (utf8mb4_bin pads with spaces
 * and would not). */
#include <ctype.h>
#include <errmsg.h>
#include <errno.h>
#include <iconv.h>
#include <math.h>
#include <mysql.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "../base/dsn.h"
#include "conn_impl.h"

typedef struct my_conn {
    conn base;
    MYSQL *my;
    char *password; /* as used, scrubbed from every message */
    int broken;     /* the session itself failed (server gone, lost) */
    int mariadb;    /* MariaDB, not MySQL */
    int read_timeout_ms;
    /* The server stayed silent past the read deadline: the session is
     * abandoned (nothing more is sent on it) but not broken, so that the
     * caller does not retry what waits on a lock on a new connection. */
    int timed_out;
    /* per column of a result, grown to a query's width and kept: */
    MYSQL_BIND *bind;
    sl_buf *colbuf; /* bytes of variable-length values */
    unsigned long *lens;
    my_bool *nulls, *errs;
    int64_t *ints;
    double *dbls;
    float *flts;
    MYSQL_TIME *times;
    enc_val *row;
    size_t ncap;
    sl_buf scratch; /* text made from typed values (dates, floats) */
} my_conn;

/* The sl_code of a server or client error number: refused credentials or
 * privileges SL_AUTH, a missing table or database SL_NOT_FOUND, what the
 * caller can fix in a --where or --key (a missing column, a syntax error, a
 * collation that does not apply) SL_INVALID, locks and full servers
 * SL_BUSY, the rest SL_DATABASE. */
static int my_code(unsigned e)
{
    switch (e) {
    case 1044: /* ER_DBACCESS_DENIED_ERROR */
    case 1045: /* ER_ACCESS_DENIED_ERROR */
    case 1142: /* ER_TABLEACCESS_DENIED_ERROR */
    case 1143: /* ER_COLUMNACCESS_DENIED_ERROR */
    case 1227: /* ER_SPECIFIC_ACCESS_DENIED_ERROR */
    case 1698: /* ER_ACCESS_DENIED_NO_PASSWORD_ERROR */
        return SL_AUTH;
    case 1049: /* ER_BAD_DB_ERROR */
    case 1146: /* ER_NO_SUCH_TABLE */
        return SL_NOT_FOUND;
    case 1054: /* ER_BAD_FIELD_ERROR */
    case 1064: /* ER_PARSE_ERROR */
    case 1253: /* ER_COLLATION_CHARSET_MISMATCH */
    case 1267: /* ER_CANT_AGGREGATE_2COLLATIONS */
    case 1305: /* ER_SP_DOES_NOT_EXIST: an unknown function in --where */
        return SL_INVALID;
    case 1040: /* ER_CON_COUNT_ERROR */
    case 1205: /* ER_LOCK_WAIT_TIMEOUT */
    case 1213: /* ER_LOCK_DEADLOCK */
        return SL_BUSY;
    default:
        return SL_DATABASE;
    }
}

static int is_session_lost(unsigned e)
{
    return e == CR_SERVER_GONE_ERROR || e == CR_SERVER_LOST || e == 2055 /* lost, extended */ ||
           e == 1927 /* ER_CONNECTION_KILLED: KILL CONNECTION, a server shutting down */;
}

/* An error of the session or of a statement (st may be NULL): its first
 * line, the password scrubbed, with the connection's name. */
static int my_error(my_conn *m, MYSQL_STMT *st, sl_err *err)
{
    unsigned e = st ? mysql_stmt_errno(st) : 0;
    const char *msg = st ? mysql_stmt_error(st) : NULL;
    if (!e) { /* an unbuffered fetch leaves its error on the session, not the statement */
        e = mysql_errno(m->my);
        msg = mysql_error(m->my);
    }
    char line[400];
    if (m->timed_out)
        return sl_err_setc(err, SL_DATABASE,
                           "%s: no data from the server for %d s (a lock? a stalled server?); "
                           "the session was dropped: find what blocks it, or raise "
                           "--read-timeout",
                           m->base.name, m->read_timeout_ms / 1000);
    if (is_session_lost(e))
        m->broken = 1;
    dsn_error_line(line, sizeof line, msg && msg[0] ? msg : "unknown error", m->password);
    return sl_err_setc(err, my_code(e), "%s: %s", m->base.name, line);
}

/* Waits for what a non-blocking Connector/C call asked for (status:
 * MYSQL_WAIT_READ, _WRITE, _EXCEPT; its own _TIMEOUT is ignored, the read
 * deadline is ours) and returns what is ready. Like pg.c's pg_await: with
 * a tick hook it waits in slices of 100 ms and calls the hook between
 * them, so a worker keeps its heartbeats while the server sorts a range or
 * sends one huge row. After read_timeout_ms of silence the socket is shut
 * down (m->timed_out set): the call then fails at once with a lost
 * connection, and whatever is left of a result is not waited for. */
static int my_wait(my_conn *m, int status)
{
    struct pollfd pf = {.fd = (int)mysql_get_socket(m->my)};
    if (status & MYSQL_WAIT_READ)
        pf.events |= POLLIN;
    if (status & MYSQL_WAIT_WRITE)
        pf.events |= POLLOUT;
    if (status & MYSQL_WAIT_EXCEPT)
        pf.events |= POLLPRI;
    if (m->timed_out || pf.fd < 0)
        return status & ~MYSQL_WAIT_TIMEOUT;
    int r, waited = 0;
    for (;;) {
        int slice = m->read_timeout_ms - waited;
        if (m->base.tick && slice > 100)
            slice = 100;
        while ((r = poll(&pf, 1, slice)) < 0 && errno == EINTR) {
        }
        if (m->base.tick)
            m->base.tick(m->base.tick_ctx);
        if (r != 0)
            break;
        waited += slice;
        if (waited >= m->read_timeout_ms) {
            m->timed_out = 1;
            shutdown(pf.fd, SHUT_RDWR);
            return status & ~MYSQL_WAIT_TIMEOUT;
        }
    }
    if (r < 0 || (pf.revents & (POLLERR | POLLHUP | POLLNVAL)))
        return status & ~MYSQL_WAIT_TIMEOUT; /* the call finds out what is wrong */
    return ((pf.revents & POLLIN) ? MYSQL_WAIT_READ : 0) |
           ((pf.revents & POLLOUT) ? MYSQL_WAIT_WRITE : 0) |
           ((pf.revents & POLLPRI) ? MYSQL_WAIT_EXCEPT : 0);
}

/* A statement call through the non-blocking API: start, then continue as
 * my_wait finds the socket ready. ret receives the call's own result. */
#define MY_ASYNC(m, ret, start_call, cont, obj)                                                    \
    do {                                                                                           \
        int status_ = (start_call);                                                                \
        while (status_)                                                                            \
            status_ = cont(&(ret), (obj), my_wait((m), status_));                                  \
    } while (0)

static void my_free(conn *c)
{
    my_conn *m = (my_conn *)c;
    if (m->my)
        mysql_close(m->my);
    if (m->password) {
        memset(m->password, 0, strlen(m->password));
        free(m->password);
    }
    for (size_t k = 0; k < m->ncap; k++)
        sl_buf_free(&m->colbuf[k]);
    free(m->bind);
    free(m->colbuf);
    free(m->lens);
    free(m->nulls);
    free(m->errs);
    free(m->ints);
    free(m->dbls);
    free(m->flts);
    free(m->times);
    free(m->row);
    sl_buf_free(&m->scratch);
    free(m);
}

/* `name`, a backtick inside doubled: MySQL's identifier quoting in every
 * sql_mode. A NUL cannot be quoted, and MySQL refuses it in a name. */
static int my_quote(conn *c, sl_buf *out, const char *ident)
{
    (void)c;
    if (sl_buf_putc(out, '`'))
        return -1;
    for (const char *p = ident; *p; p++)
        if ((*p == '`' && sl_buf_putc(out, '`')) || sl_buf_putc(out, (uint8_t)*p))
            return -1;
    return sl_buf_putc(out, '`');
}

/* Grows the per-column arrays to n columns (once a query, not per row). */
static int my_grow(my_conn *m, size_t n, sl_err *err)
{
    if (n <= m->ncap)
        return 0;
#define GROW(f)                                                                                    \
    do {                                                                                           \
        void *p_ = realloc(m->f, n * sizeof *m->f);                                                \
        if (!p_)                                                                                   \
            return sl_err_set(err, "out of memory");                                               \
        m->f = p_;                                                                                 \
    } while (0)
    GROW(bind);
    GROW(lens);
    GROW(nulls);
    GROW(errs);
    GROW(ints);
    GROW(dbls);
    GROW(flts);
    GROW(times);
    GROW(row);
    GROW(colbuf);
#undef GROW
    memset(m->colbuf + m->ncap, 0, (n - m->ncap) * sizeof *m->colbuf);
    m->ncap = n;
    return 0;
}

/* What sluice reads a result column as, from its protocol type: */
enum my_read {
    RD_INT,
    RD_FLOAT,
    RD_DOUBLE,
    RD_TEXT,
    RD_BYTES,
    RD_DATE,
    RD_DATETIME,
    RD_TIME,
    RD_NULL,
    /* text in the column's own bytes (character_set_results is NULL, so
     * the server never turns a byte it cannot map into '?'): */
    RD_TEXT_ASCII,  /* ascii: every byte checked below 0x80 */
    RD_TEXT_ICONV,  /* another single- or multi-byte set: to UTF-8 by iconv, strictly */
    RD_TEXT_LATIN1, /* MySQL's latin1: cp1252 with its five holes as C1 controls */
    RD_TEXT_SJIS    /* sjis: ASCII bytes as they are (glibc's SJIS makes 0x5C a yen sign) */
};

/* MySQL's latin1 for 0x80..0x9F (ctype-latin1.c): cp1252, and 0x81, 0x8D,
 * 0x8F, 0x90, 0x9D as the C1 controls; every other byte is ISO-8859-1.
 * The server converts keys with this table to order them, so the values
 * must come out the same here (iconv's LATIN1 makes 0x80 U+0080, not €). */
static const unsigned short latin1_c1[32] = {
    0x20AC, 0x0081, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160,
    0x2039, 0x0152, 0x008D, 0x017D, 0x008F, 0x0090, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022,
    0x2013, 0x2014, 0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0x009D, 0x017E, 0x0178};

/* The way to read field f, or -1 with err naming the column and its type
 * when sluice does not compare that type on MySQL yet: refused, never
 * hashed in a form that could call two different values equal. */
static int read_kind(my_conn *m, const MYSQL_FIELD *f, sl_err *err)
{
    const char *what = NULL;
    switch (f->type) {
    case MYSQL_TYPE_TINY:
    case MYSQL_TYPE_SHORT:
    case MYSQL_TYPE_INT24:
    case MYSQL_TYPE_LONG:
    case MYSQL_TYPE_LONGLONG:
    case MYSQL_TYPE_YEAR:
        return RD_INT;
    case MYSQL_TYPE_FLOAT:
        return RD_FLOAT;
    case MYSQL_TYPE_DOUBLE:
        return RD_DOUBLE;
    case MYSQL_TYPE_DECIMAL:
    case MYSQL_TYPE_NEWDECIMAL:
        return RD_TEXT; /* exact decimal text, like PostgreSQL's numeric */
    case MYSQL_TYPE_STRING:
    case MYSQL_TYPE_VAR_STRING:
    case MYSQL_TYPE_VARCHAR:
    case MYSQL_TYPE_TINY_BLOB:
    case MYSQL_TYPE_BLOB:
    case MYSQL_TYPE_MEDIUM_BLOB:
    case MYSQL_TYPE_LONG_BLOB:
        /* an ENUM is its value's text, a SET its members' as MySQL spells
         * it (comma-joined in definition order) */
        if (f->flags & (ENUM_FLAG | SET_FLAG))
            return RD_TEXT;
        return f->charsetnr == 63 ? RD_BYTES : RD_TEXT; /* 63: the binary charset */
    case MYSQL_TYPE_ENUM:
    case MYSQL_TYPE_SET:
    case MYSQL_TYPE_JSON: /* MySQL 8's JSON as text: the encoder canonicalises it */
        return RD_TEXT;
    case MYSQL_TYPE_DATE:
    case MYSQL_TYPE_NEWDATE:
        return RD_DATE;
    case MYSQL_TYPE_DATETIME:
    case MYSQL_TYPE_TIMESTAMP:
        return RD_DATETIME;
    case MYSQL_TYPE_NULL:
        return RD_NULL;
    case MYSQL_TYPE_TIME:
        return RD_TIME;
    case MYSQL_TYPE_BIT:
        what = "a BIT";
        break;
    case MYSQL_TYPE_GEOMETRY:
        what = "a spatial";
        break;
    default:
        what = "an unknown";
        break;
    }
    return sl_err_setc(err, SL_INVALID,
                       "%s: column \"%s\" is %s column (protocol type %d), which sluice does not "
                       "compare on MySQL yet; leave it out with --exclude-columns",
                       m->base.name, f->name, what, (int)f->type);
}

/* How a text column's bytes become UTF-8, from its character set (the
 * session reads every value in its column's own set: a server converting
 * to utf8mb4 turns each byte it cannot map into '?', and two different
 * values would then compare equal). UTF-8 sets and DECIMAL's digits pass as
 * they are; ascii is checked; any other set is converted by iconv, which
 * refuses a byte the set does not define rather than guess. *cv is opened
 * for RD_TEXT_ICONV. */
static int text_mode(my_conn *m, const MYSQL_FIELD *f, int kind, iconv_t *cv, sl_err *err)
{
    if (kind != RD_TEXT || f->type == MYSQL_TYPE_DECIMAL || f->type == MYSQL_TYPE_NEWDECIMAL ||
        f->charsetnr == 63)
        return kind;
    const MARIADB_CHARSET_INFO *cs = mariadb_get_charset_by_nr(f->charsetnr);
    if (!cs)
        return sl_err_setc(err, SL_INVALID,
                           "%s: column \"%s\" is in character set number %u, which this client "
                           "library does not know; leave it out with --exclude-columns",
                           m->base.name, f->name, f->charsetnr);
    if (!strcmp(cs->csname, "utf8mb4") || !strcmp(cs->csname, "utf8mb3") ||
        !strcmp(cs->csname, "utf8"))
        return RD_TEXT;
    if (!strcmp(cs->csname, "ascii"))
        return RD_TEXT_ASCII;
    if (!strcmp(cs->csname, "latin1"))
        return RD_TEXT_LATIN1;
    /* sets whose every character glibc's iconv converts as the server
     * does (compared byte by byte, and every double byte, against the
     * server's CONVERT ... USING utf8mb4, which also orders the keys); in
     * another (big5, ujis, euckr, greek, cp866, ...) some characters come
     * out differently, which would be a false difference and a key order
     * the server does not have */
    static const char *const exact[] = {"cp1250", "cp1251", "cp1257", "cp850", "cp852",   "cp932",
                                        "gb2312", "gbk",    "hp8",    "koi8r", "latin2",  "latin5",
                                        "latin7", "sjis",   "ucs2",   "utf16", "utf16le", "utf32"};
    size_t e = 0;
    while (e < sizeof exact / sizeof *exact && strcmp(cs->csname, exact[e]))
        e++;
    if (e == sizeof exact / sizeof *exact)
        return sl_err_setc(err, SL_INVALID,
                           "%s: column \"%s\" is in character set %s, which sluice cannot turn "
                           "into UTF-8 exactly as the server does; convert the column or leave "
                           "it out with --exclude-columns",
                           m->base.name, f->name, cs->csname);
    /* the library names UTF16/UTF32, which iconv reads with a byte order
     * mark: a value starting with U+FEFF would lose it; MySQL's are BE */
    const char *enc = !strcmp(cs->csname, "utf16")   ? "UTF-16BE"
                      : !strcmp(cs->csname, "utf32") ? "UTF-32BE"
                                                     : cs->encoding;
    if (!enc || (*cv = iconv_open("UTF-8", enc)) == (iconv_t)-1) {
        *cv = (iconv_t)-1;
        return sl_err_setc(err, SL_INVALID,
                           "%s: column \"%s\" is in character set %s, which sluice cannot turn "
                           "into UTF-8 here; convert the column or leave it out with "
                           "--exclude-columns",
                           m->base.name, f->name, cs->csname);
    }
    return strcmp(cs->csname, "sjis") ? RD_TEXT_ICONV : RD_TEXT_SJIS;
}

/* n bytes at p through cv, appended to m->scratch; 0, or -1 with *bad the
 * offset in p of the first byte cv refused (or n when out of memory). */
static int iconv_append(my_conn *m, iconv_t cv, const char *p, size_t n, size_t *bad)
{
    size_t off = m->scratch.len;
    *bad = n;
    if (sl_buf_reserve(&m->scratch, 4 * n + 4))
        return -1;
    char *in = (char *)p, *out = (char *)m->scratch.p + off;
    size_t inleft = n, outleft = 4 * n + 4;
    iconv(cv, NULL, NULL, NULL, NULL);
    if (iconv(cv, &in, &inleft, &out, &outleft) == (size_t)-1 ||
        iconv(cv, NULL, NULL, &out, &outleft) == (size_t)-1) {
        *bad = n - inleft;
        return -1;
    }
    m->scratch.len = (size_t)(out - (char *)m->scratch.p);
    return 0;
}

/* The text of column k (n bytes at p, in its set) as UTF-8 in m->scratch
 * at *soff, or an error naming the first byte the set does not define. */
static int text_to_utf8(my_conn *m, const MYSQL_FIELD *f, int kind, iconv_t cv, const char *p,
                        size_t n, enc_val *v, size_t *soff, sl_err *err)
{
    size_t bad = n;
    if (kind == RD_TEXT_ASCII) {
        for (size_t i = 0; i < n && bad == n; i++)
            if ((unsigned char)p[i] >= 0x80)
                bad = i;
        if (bad == n) {
            *v = (enc_val){.kind = ENC_V_TEXT, .p = p, .len = n};
            return 0;
        }
    } else {
        size_t off = m->scratch.len;
        int rc = 0;
        if (kind == RD_TEXT_LATIN1) {
            if (sl_buf_reserve(&m->scratch, 3 * n))
                return sl_err_set(err, "out of memory");
            unsigned char *o = (unsigned char *)m->scratch.p + off;
            for (size_t i = 0; i < n; i++) {
                unsigned c = (unsigned char)p[i];
                if (c >= 0x80 && c < 0xA0)
                    c = latin1_c1[c - 0x80];
                if (c < 0x80)
                    *o++ = (unsigned char)c;
                else if (c < 0x800) {
                    *o++ = (unsigned char)(0xC0 | c >> 6);
                    *o++ = (unsigned char)(0x80 | (c & 0x3F));
                } else {
                    *o++ = (unsigned char)(0xE0 | c >> 12);
                    *o++ = (unsigned char)(0x80 | (c >> 6 & 0x3F));
                    *o++ = (unsigned char)(0x80 | (c & 0x3F));
                }
            }
            m->scratch.len = (size_t)(o - (unsigned char *)m->scratch.p);
        } else if (kind == RD_TEXT_SJIS) {
            /* runs of non-ASCII characters through iconv (a lead byte takes
             * the next byte with it, which may be 0x5C); ASCII copied, and
             * 0x815F the server's reverse solidus (glibc's is fullwidth) */
#define SJIS_815F(q) ((unsigned char)(q)[0] == 0x81 && (unsigned char)(q)[1] == 0x5F)
            for (size_t i = 0; i < n && !rc;) {
                unsigned c = (unsigned char)p[i];
                if (c < 0x80 || (i + 1 < n && SJIS_815F(p + i))) {
                    rc = sl_buf_putc(&m->scratch, c < 0x80 ? (uint8_t)c : '\\');
                    i += c < 0x80 ? 1 : 2;
                    continue;
                }
                size_t j = i;
                while (j < n && (unsigned char)p[j] >= 0x80 && !(j + 1 < n && SJIS_815F(p + j))) {
                    c = (unsigned char)p[j];
                    j +=
                        ((c >= 0x81 && c <= 0x9F) || (c >= 0xE0 && c <= 0xFC)) && j + 1 < n ? 2 : 1;
                }
                if (iconv_append(m, cv, p + i, j - i, &bad)) {
                    bad = bad < j - i ? i + bad : n;
                    rc = -1;
                }
                i = j;
            }
#undef SJIS_815F
        } else if (iconv_append(m, cv, p, n, &bad))
            rc = -1;
        if (!rc) {
            *soff = off;
            *v = (enc_val){.kind = ENC_V_TEXT, .len = m->scratch.len - off};
            return 0;
        }
        if (bad == n)
            return sl_err_set(err, "out of memory");
    }
    return sl_err_setc(err, SL_INVALID,
                       "%s: column \"%s\" holds byte 0x%02x (at %zu) that its character set "
                       "does not define: it has no character to compare; fix the value, or "
                       "leave the column out with --exclude-columns",
                       m->base.name, f->name, bad < n ? (unsigned char)p[bad] : 0, bad);
}

/* Binds params to st: integers as BIGINT, doubles as DOUBLE, text as
 * strings in the session's utf8mb4, blobs as binary strings. */
static int bind_params(my_conn *m, MYSQL_STMT *st, const enc_val *params, size_t n, sl_err *err)
{
    static my_bool yes = 1; /* never written: is_null wants a pointer that outlives us */
    if (mysql_stmt_param_count(st) != n)
        return sl_err_set(err, "%s: statement has %lu parameters, %zu given", m->base.name,
                          mysql_stmt_param_count(st), n);
    if (!n)
        return 0;
    MYSQL_BIND *b = calloc(n, sizeof *b);
    int rc = 0;
    if (!b)
        return sl_err_set(err, "out of memory");
    for (size_t i = 0; i < n; i++) {
        const enc_val *v = &params[i];
        switch (v->kind) {
        case ENC_V_INT:
            b[i].buffer_type = MYSQL_TYPE_LONGLONG;
            b[i].buffer = (void *)&v->i;
            break;
        case ENC_V_FLOAT:
            b[i].buffer_type = MYSQL_TYPE_DOUBLE;
            b[i].buffer = (void *)&v->d;
            break;
        case ENC_V_TEXT:
        case ENC_V_BLOB:
        case ENC_V_DEC:
            b[i].buffer_type = v->kind == ENC_V_BLOB ? MYSQL_TYPE_BLOB : MYSQL_TYPE_STRING;
            b[i].buffer = (void *)(v->p ? v->p : "");
            /* no length pointer: the length is buffer_length, copied
             * into the statement with the bind */
            b[i].buffer_length = (unsigned long)v->len;
            break;
        default:
            b[i].buffer_type = MYSQL_TYPE_NULL;
            b[i].is_null = &yes;
            break;
        }
    }
    /* the binds are copied into the statement; the values they point to
     * (the caller's params) are read at execute, while they still live */
    if (mysql_stmt_bind_param(st, b))
        rc = my_error(m, st, err);
    free(b);
    return rc;
}

/* Prepares the result binds of a query of n columns from its metadata. */
static int bind_results(my_conn *m, MYSQL_STMT *st, MYSQL_RES *meta, size_t n, int *kinds,
                        sl_err *err)
{
    MYSQL_FIELD *f = mysql_fetch_fields(meta);
    memset(m->bind, 0, n * sizeof *m->bind);
    for (size_t k = 0; k < n; k++) {
        MYSQL_BIND *b = &m->bind[k];
        int kind = read_kind(m, &f[k], err);
        if (kind < 0)
            return -1;
        kinds[k] = kind;
        b->is_null = &m->nulls[k];
        b->length = &m->lens[k];
        b->error = &m->errs[k];
        switch (kind) {
        case RD_INT:
            b->buffer_type = MYSQL_TYPE_LONGLONG;
            b->buffer = &m->ints[k];
            b->is_unsigned = (f[k].flags & UNSIGNED_FLAG) != 0;
            break;
        case RD_FLOAT:
            b->buffer_type = MYSQL_TYPE_FLOAT;
            b->buffer = &m->flts[k];
            break;
        case RD_DOUBLE:
            b->buffer_type = MYSQL_TYPE_DOUBLE;
            b->buffer = &m->dbls[k];
            break;
        case RD_DATE:
        case RD_DATETIME:
            b->buffer_type = MYSQL_TYPE_DATETIME;
            b->buffer = &m->times[k];
            break;
        case RD_TIME:
            b->buffer_type = MYSQL_TYPE_TIME;
            b->buffer = &m->times[k];
            break;
        case RD_NULL:
            b->buffer_type = MYSQL_TYPE_NULL;
            break;
        default: /* text and bytes: a buffer that grows to the longest value seen */
            if (sl_buf_reserve(&m->colbuf[k], 256))
                return sl_err_set(err, "out of memory");
            b->buffer_type = MYSQL_TYPE_BLOB;
            b->buffer = m->colbuf[k].p;
            b->buffer_length = (unsigned long)m->colbuf[k].cap;
            break;
        }
    }
    if (mysql_stmt_bind_result(st, m->bind))
        return my_error(m, st, err);
    return 0;
}

/* A DATE or DATETIME as ISO text (the encoder's input, as PostgreSQL
 * prints it), or -1 for MySQL's zero dates (0000-00-00, 2020-00-15), which
 * name no day and have no counterpart elsewhere. */
static int time_text(const MYSQL_TIME *t, int with_time, char *out, size_t cap)
{
    if (t->month == 0 || t->day == 0)
        return -1;
    if (!with_time)
        snprintf(out, cap, "%04u-%02u-%02u", t->year, t->month, t->day);
    else
        snprintf(out, cap, "%04u-%02u-%02u %02u:%02u:%02u.%06lu", t->year, t->month, t->day,
                 t->hour, t->minute, t->second, (unsigned long)t->second_part);
    return 0;
}

/* Turns the fetched row's column k into m->row[k]. Text made here (dates,
 * floats) goes to m->scratch, reset per row by the caller; its place is
 * returned as *soff (else -1) and pointed to once the row is complete, as
 * scratch may move while it grows. *grew: a buffer was grown, to be bound
 * again before the next fetch. */
static int take_value(my_conn *m, MYSQL_STMT *st, const MYSQL_FIELD *f, size_t k, int kind, int cls,
                      iconv_t cv, size_t *soff, int *grew, sl_err *err)
{
    enc_val *v = &m->row[k];
    *soff = (size_t)-1;
    if (m->nulls[k] || kind == RD_NULL) {
        *v = (enc_val){.kind = ENC_V_NULL};
        return 0;
    }
    switch (kind) {
    case RD_INT:
        if (m->bind[k].is_unsigned && (uint64_t)m->ints[k] > INT64_MAX) {
            /* an unsigned BIGINT above 2^63-1: the canonical decimal, as
             * PostgreSQL's numeric(20,0) gives it; an int key cannot hold it */
            char t[48];
            if (cls == ENC_INT)
                return sl_err_setc(err, SL_INVALID,
                                   "%s: key column \"%s\" holds %llu, above 2^63-1: unsigned "
                                   "BIGINT keys that large are not compared yet",
                                   m->base.name, f->name, (unsigned long long)(uint64_t)m->ints[k]);
            *soff = m->scratch.len;
            *v =
                (enc_val){.kind = ENC_V_DEC, .len = enc_decimal_u64(t, 0, (uint64_t)m->ints[k], 0)};
            return sl_buf_append(&m->scratch, t, v->len) ? sl_err_set(err, "out of memory") : 0;
        }
        *v = (enc_val){.kind = ENC_V_INT, .i = m->ints[k]};
        return 0;
    case RD_DOUBLE:
        *v = (enc_val){.kind = ENC_V_FLOAT, .d = m->dbls[k]};
        return 0;
    case RD_FLOAT: {
        /* as PostgreSQL prints a float4: the shortest digits that read back
         * as the same float, so 1.1 is 1.1 and not 1.10000002384 */
        float fl = m->flts[k];
        if (isnan(fl) || isinf(fl)) {
            *v = (enc_val){.kind = ENC_V_FLOAT, .d = fl};
            return 0;
        }
        char t[32];
        for (int prec = 0; prec < 9; prec++) {
            snprintf(t, sizeof t, "%.*e", prec, (double)fl);
            if (strtof(t, NULL) == fl)
                break;
        }
        *soff = m->scratch.len;
        *v = (enc_val){.kind = ENC_V_TEXT, .len = strlen(t)};
        return sl_buf_append(&m->scratch, t, v->len) ? sl_err_set(err, "out of memory") : 0;
    }
    case RD_DATE:
    case RD_DATETIME: {
        char t[64];
        if (time_text(&m->times[k], kind == RD_DATETIME, t, sizeof t))
            return sl_err_setc(err, SL_INVALID,
                               "%s: column \"%s\" holds a zero date (%04u-%02u-%02u), which "
                               "names no day; zero dates are not compared yet (--where can "
                               "leave those rows out)",
                               m->base.name, f->name, m->times[k].year, m->times[k].month,
                               m->times[k].day);
        *soff = m->scratch.len;
        *v = (enc_val){.kind = ENC_V_TEXT, .len = strlen(t)};
        return sl_buf_append(&m->scratch, t, v->len) ? sl_err_set(err, "out of memory") : 0;
    }
    case RD_TIME: {
        /* as PostgreSQL prints a time: HH:MM:SS, then the fraction without
         * its trailing zeros; a TIME outside a day has no counterpart */
        const MYSQL_TIME *tm = &m->times[k];
        char t[48];
        if (tm->neg || tm->hour > 23 || tm->day)
            return sl_err_setc(
                err, SL_INVALID,
                "%s: column \"%s\" holds the TIME %s%02u:%02u:%02u, outside 00:00:00 "
                "to 23:59:59.999999: only a time of day compares (--where can "
                "leave those rows out)",
                m->base.name, f->name, tm->neg ? "-" : "", tm->day * 24 + tm->hour, tm->minute,
                tm->second);
        int n = snprintf(t, sizeof t, "%02u:%02u:%02u", tm->hour, tm->minute, tm->second);
        if (tm->second_part) {
            n += snprintf(t + n, sizeof t - (size_t)n, ".%06lu", (unsigned long)tm->second_part);
            while (t[n - 1] == '0')
                n--;
        }
        *soff = m->scratch.len;
        *v = (enc_val){.kind = ENC_V_TEXT, .len = (size_t)n};
        return sl_buf_append(&m->scratch, t, v->len) ? sl_err_set(err, "out of memory") : 0;
    }
    default: {
        /* the buffer was too small: grow it to the value and read the value
         * again, then bind the bigger buffer for the rows that follow */
        sl_buf *b = &m->colbuf[k];
        if (m->lens[k] > m->bind[k].buffer_length) {
            if (sl_buf_reserve(b, m->lens[k]))
                return sl_err_set(err, "out of memory");
            m->bind[k].buffer = b->p;
            m->bind[k].buffer_length = (unsigned long)b->cap;
            if (mysql_stmt_fetch_column(st, &m->bind[k], (unsigned)k, 0))
                return my_error(m, st, err);
            *grew = 1; /* bind the bigger buffer before the next fetch */
        }
        const char *p = b->p ? (const char *)b->p : "";
        if (kind >= RD_TEXT_ASCII)
            return text_to_utf8(m, f, kind, cv, p, m->lens[k], v, soff, err);
        *v = (enc_val){
            .kind = kind == RD_BYTES ? ENC_V_BLOB : ENC_V_TEXT, .p = p, .len = m->lens[k]};
        return 0;
    }
    }
}

static int my_query(conn *c, const char *sql, const enc_val *params, size_t nparams, size_t ncols,
                    const int *cls, conn_row_fn fn, void *ctx, sl_err *err)
{
    my_conn *m = (my_conn *)c;
    MYSQL_RES *meta = NULL;
    int *kinds = NULL;
    iconv_t *cvs = NULL;
    int rc = -1;
    if (ncols > CONN_MAX_COLS)
        return sl_err_setc(err, SL_INVALID, "too many columns (limit %d)", CONN_MAX_COLS);
    if (m->broken || m->timed_out)
        return sl_err_setc(err, SL_DATABASE, "%s: the session was %s", c->name,
                           m->broken ? "lost" : "dropped after a read timeout");
    MYSQL_STMT *st = mysql_stmt_init(m->my);
    if (!st)
        return my_error(m, NULL, err);
    int r = 0;
    MY_ASYNC(m, r, mysql_stmt_prepare_start(&r, st, sql, strlen(sql)), mysql_stmt_prepare_cont, st);
    if (r) {
        my_error(m, st, err);
        goto done;
    }
    if (bind_params(m, st, params, nparams, err))
        goto done;
    if (mysql_stmt_field_count(st) != ncols) {
        sl_err_set(err, "%s: query returned %u columns, expected %zu", c->name,
                   mysql_stmt_field_count(st), ncols);
        goto done;
    }
    if (ncols == 0) { /* a statement without a result (conn_exec) */
        MY_ASYNC(m, r, mysql_stmt_execute_start(&r, st), mysql_stmt_execute_cont, st);
        if (r)
            my_error(m, st, err);
        else
            rc = 0;
        goto done;
    }
    if (my_grow(m, ncols ? ncols : 1, err) || !(kinds = calloc(ncols + 1, sizeof *kinds))) {
        if (!kinds)
            sl_err_set(err, "out of memory");
        goto done;
    }
    if (!(meta = mysql_stmt_result_metadata(st))) {
        my_error(m, st, err);
        goto done;
    }
    if (bind_results(m, st, meta, ncols, kinds, err))
        goto done;
    MYSQL_FIELD *f = mysql_fetch_fields(meta);
    if (!(cvs = malloc((ncols + 1) * sizeof *cvs))) {
        sl_err_set(err, "out of memory");
        goto done;
    }
    for (size_t k = 0; k <= ncols; k++)
        cvs[k] = (iconv_t)-1;
    for (size_t k = 0; k < ncols; k++)
        if ((kinds[k] = text_mode(m, &f[k], kinds[k], &cvs[k], err)) < 0)
            goto done;
    /* no mysql_stmt_store_result: rows are read from the socket as fetched */
    MY_ASYNC(m, r, mysql_stmt_execute_start(&r, st), mysql_stmt_execute_cont, st);
    if (r) {
        my_error(m, st, err);
        goto done;
    }
    size_t *soff = malloc((ncols + 1) * sizeof *soff);
    if (!soff) {
        sl_err_set(err, "out of memory");
        goto done;
    }
    for (;;) {
        MY_ASYNC(m, r, mysql_stmt_fetch_start(&r, st), mysql_stmt_fetch_cont, st);
        if (r == MYSQL_NO_DATA) {
            rc = 0;
            break;
        }
        if (r == 1) {
            my_error(m, st, err);
            break;
        }
        /* MYSQL_DATA_TRUNCATED: a text or blob value longer than its
         * buffer, read again by take_value */
        sl_buf_reset(&m->scratch);
        int rebind = 0, bad = 0;
        for (size_t k = 0; k < ncols && !bad; k++) {
            if (take_value(m, st, &f[k], k, kinds[k], cls ? cls[k] : 0, cvs[k], &soff[k], &rebind,
                           err))
                bad = 1;
        }
        if (bad)
            break;
        for (size_t k = 0; k < ncols; k++)
            if (soff[k] != (size_t)-1)
                m->row[k].p = (const char *)m->scratch.p + soff[k];
        if (rebind && mysql_stmt_bind_result(st, m->bind)) {
            my_error(m, st, err);
            break;
        }
        if (fn(ctx, m->row, ncols, err))
            break;
    }
    free(soff);
done:
    if (meta)
        mysql_free_result(meta);
    /* closing reads what is left of an unfinished result off the socket
     * (waiting as any read does) */
    my_bool closed;
    MY_ASYNC(m, closed, mysql_stmt_close_start(&closed, st), mysql_stmt_close_cont, st);
    free(kinds);
    for (size_t k = 0; cvs && k < ncols; k++)
        if (cvs[k] != (iconv_t)-1)
            iconv_close(cvs[k]);
    free(cvs);
    return rc;
}

/* information_schema's DATA_TYPE -> class. Types not listed are ENC_OTHER
 * and refused when read (read_kind), so a table holding one can still be
 * compared on its other columns. */
static int classify(const char *t)
{
    static const struct {
        const char *name;
        int cls;
    } map[] = {
        {"tinyint", ENC_INT},     {"smallint", ENC_INT},       {"mediumint", ENC_INT},
        {"int", ENC_INT},         {"bigint", ENC_INT},         {"year", ENC_INT},
        {"decimal", ENC_NUMERIC}, {"float", ENC_FLOAT},        {"double", ENC_FLOAT},
        {"char", ENC_TEXT},       {"varchar", ENC_TEXT},       {"tinytext", ENC_TEXT},
        {"text", ENC_TEXT},       {"mediumtext", ENC_TEXT},    {"longtext", ENC_TEXT},
        {"binary", ENC_BYTEA},    {"varbinary", ENC_BYTEA},    {"tinyblob", ENC_BYTEA},
        {"blob", ENC_BYTEA},      {"mediumblob", ENC_BYTEA},   {"longblob", ENC_BYTEA},
        {"date", ENC_DATE},       {"datetime", ENC_TIMESTAMP}, {"timestamp", ENC_TIMESTAMPTZ},
        {"enum", ENC_TEXT},       {"set", ENC_TEXT},           {"json", ENC_JSON},
        {"time", ENC_OTHER}, /* PostgreSQL's time is "other" too: its text, as it prints it */
    };
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (strcasecmp(map[i].name, t) == 0)
            return map[i].cls;
    return ENC_OTHER;
}

typedef struct desc_ctx {
    conn_table *t;
    size_t cap;
    const char *name; /* the table's name exactly as asked */
    int keys;
} desc_ctx;

/* One row of the column (or key) query: TABLE_NAME first. information_schema
 * compares names as its collation does (case-insensitively on some
 * servers), so a row of another table ("Orders" for "orders") is skipped. */
static int take_col(void *ctx, const enc_val *v, size_t n, sl_err *err)
{
    desc_ctx *d = ctx;
    conn_table *t = d->t;
    (void)n;
    if (v[0].kind == ENC_V_NULL || v[0].len != strlen(d->name) ||
        memcmp(v[0].p, d->name, v[0].len) != 0)
        return 0;
        /* NULL names and types read as "" */
#define TXT(x) (x).kind == ENC_V_NULL ? "" : (x).p, (x).kind == ENC_V_NULL ? 0 : (x).len
    if (d->keys)
        return conn_table_add_key(t, TXT(v[1]), err);
    char dt[64];
    snprintf(dt, sizeof dt, "%.*s", (int)(v[3].len < 63 ? v[3].len : 63),
             v[3].kind == ENC_V_NULL ? "" : v[3].p);
    conn_col *c = conn_table_add_col(t, &d->cap, TXT(v[1]), TXT(v[2]), classify(dt), err);
#undef TXT
    if (!c)
        return -1;
    /* tinyint(1) is MySQL's BOOLEAN (and what migrations turn into a
     * PostgreSQL boolean): read as bool, its 0 and 1 are false and true,
     * and any other value stays itself (the encoder's fallback), so no two
     * values meet */
    if (strncasecmp(c->type, "tinyint(1)", 10) == 0)
        c->cls = ENC_BOOL;
    /* an unsigned BIGINT reaches 2^64-1, which only a numeric holds (what
     * it migrates to faithfully: numeric(20,0)); a key column stays int
     * (my_describe), numeric keys being refused */
    if (strncasecmp(c->type, "bigint", 6) == 0 && strstr(c->type, "unsigned"))
        c->cls = ENC_NUMERIC;
    return 0;
}

/* One CHECK of the table (TABLE_NAME, CHECK_CLAUSE): MariaDB's JSON is a
 * longtext with CHECK (json_valid(`col`)), and such a column is read as
 * json, as PostgreSQL's json and jsonb are (the encoder canonicalises). */
static int take_check(void *ctx, const enc_val *v, size_t n, sl_err *err)
{
    desc_ctx *d = ctx;
    (void)n;
    (void)err;
    if (v[0].kind == ENC_V_NULL || v[1].kind == ENC_V_NULL || v[0].len != strlen(d->name) ||
        memcmp(v[0].p, d->name, v[0].len) != 0)
        return 0;
    /* the name quoted as the session's sql_mode prints it (ANSI_QUOTES or
     * backticks), the quote character doubled within it */
    const char *q = v[1].p, *end = v[1].p + v[1].len;
    if (v[1].len < 14 || memcmp(q, "json_valid(", 11) != 0 || (q[11] != '"' && q[11] != '`'))
        return 0;
    for (size_t i = 0; i < d->t->ncols; i++) {
        conn_col *c = &d->t->cols[i];
        const char *p = q + 12;
        for (const char *s = c->name; *s && p < end; s++, p++)
            if (*p != *s || (*s == q[11] && (++p >= end || *p != q[11]))) {
                p = end;
                break;
            }
        if (c->cls == ENC_TEXT && p + 2 == end && p[0] == q[11] && p[1] == ')')
            c->cls = ENC_JSON;
    }
    return 0;
}

static int my_describe(conn *c, const char *table, conn_table **out, sl_err *err)
{
    conn_table *t = calloc(1, sizeof *t);
    const char *dot = strchr(table, '.');
    char *schema = dot ? strndup(table, (size_t)(dot - table)) : NULL;
    int cls[4] = {ENC_TEXT, ENC_TEXT, ENC_TEXT, ENC_TEXT};
    int rc = -1;
    if (!t || (dot && !schema)) {
        sl_err_set(err, "out of memory");
        goto done;
    }
    /* "db.table" names a table of another database; a bare name is the
     * DSN's database */
    enc_val p[2] = {
        schema ? (enc_val){.kind = ENC_V_TEXT, .p = schema, .len = strlen(schema)}
               : (enc_val){.kind = ENC_V_NULL},
        {.kind = ENC_V_TEXT, .p = dot ? dot + 1 : table, .len = strlen(dot ? dot + 1 : table)},
    };
    desc_ctx d = {t, 0, dot ? dot + 1 : table, 0};
    if (my_query(c,
                 "SELECT TABLE_NAME, COLUMN_NAME, COLUMN_TYPE, DATA_TYPE "
                 "FROM information_schema.COLUMNS "
                 "WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ? "
                 "ORDER BY ORDINAL_POSITION",
                 p, 2, 4, cls, take_col, &d, err))
        goto done;
    if (t->ncols == 0) {
        sl_err_setc(err, SL_NOT_FOUND,
                    "%s: table \"%s\" does not exist (names are case-sensitive; use "
                    "database.table)",
                    c->name, table);
        goto done;
    }
    if (((my_conn *)c)->mariadb) {
        /* MariaDB before 10.3.10 has no CHECK_CONSTRAINTS: its JSON then
         * stays text */
        sl_err ignored = {0};
        my_query(c,
                 "SELECT TABLE_NAME, CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS "
                 "WHERE CONSTRAINT_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ?",
                 p, 2, 2, cls, take_check, &d, &ignored);
    }
    d.keys = 1;
    if (my_query(c,
                 "SELECT TABLE_NAME, COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE "
                 "WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ? "
                 "AND CONSTRAINT_NAME = 'PRIMARY' ORDER BY ORDINAL_POSITION",
                 p, 2, 2, cls, take_col, &d, err))
        goto done;
    for (size_t k = 0; k < t->nkey; k++)
        for (size_t i = 0; i < t->ncols; i++)
            if (t->cols[i].cls == ENC_NUMERIC && strcmp(t->cols[i].name, t->key[k]) == 0)
                t->cols[i].cls = ENC_INT; /* an unsigned BIGINT key */
    *out = t;
    t = NULL;
    rc = 0;
done:
    free(schema);
    conn_table_free(t);
    return rc;
}

static int my_is_broken(const conn *c)
{
    return ((const my_conn *)c)->broken;
}

/* MariaDB: utf8mb4_nopad_bin; MySQL 8: utf8mb4_0900_bin (both NO PAD,
 * code point order). The ops differ only in that. A text key of another
 * charset (latin1, utf8mb3) is converted first, which the collation needs
 * and which changes nothing for utf8mb4: its values come out in utf8mb4
 * anyway (NAMES utf8mb4), so the order is that of the bytes read. No
 * TABLESAMPLE: a big table's split keys come from a row sample, RAND with a
 * fixed seed keeping the same rows for the count and the read (one pass
 * over the table, not one OFFSET walk per split key). */
#define MY_OPS(collation)                                                                          \
    {                                                                                              \
        .free = my_free, .is_broken = my_is_broken, .describe = my_describe, .query = my_query,    \
        .quote = my_quote, .text_key_prefix = "CONVERT(",                                          \
        .text_key_collate = " USING utf8mb4) COLLATE " collation, .bare_question = 1,              \
        .sample_where = "RAND(0) * 100 < ?",                                                       \
    }
static const conn_ops mariadb_ops = MY_OPS("utf8mb4_nopad_bin");
static const conn_ops mysql8_ops = MY_OPS("utf8mb4_0900_bin");

/* ---- DSN --------------------------------------------------------------- */

typedef struct my_dsn {
    char user[256], password[256], host[256], db[256];
    unsigned port;
    int has_password;
} my_dsn;

/* s[0..n) with %XX decoded into out (cap bytes); -1 when it does not fit
 * or decodes to a NUL. */
static int pct_decode(const char *s, size_t n, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned x;
        char c = s[i];
        if (c == '%' && i + 2 < n && isxdigit((unsigned char)s[i + 1]) &&
            isxdigit((unsigned char)s[i + 2]) && sscanf(s + i + 1, "%2x", &x) == 1) {
            c = (char)x;
            i += 2;
        }
        if (c == '\0' || o + 1 >= cap)
            return -1;
        out[o++] = c;
    }
    out[o] = '\0';
    return 0;
}

/* mysql://[USER[:PASSWORD]@]HOST[:PORT][/DB], or mariadb://. The user info
 * ends at the last '@' (a password may hold '@' and '/' unencoded), the
 * password at the user's first ':'; %XX is decoded in user, password and
 * database. No password in the DSN: MYSQL_PWD, if set. Errors never quote
 * the DSN. */
static int parse_dsn(const char *dsn, my_dsn *d, sl_err *err)
{
    const char *rest = dsn + (strncmp(dsn, "mysql://", 8) == 0 ? 8 : 10);
    memset(d, 0, sizeof *d);
    const char *q = strchr(rest, '?');
    if (q)
        return sl_err_setc(err, SL_INVALID,
                           "invalid MySQL DSN: options after '?' are not supported yet (write "
                           "mysql://USER:PASSWORD@HOST:PORT/DB)");
    const char *at = strrchr(rest, '@');
    const char *hp = rest;
    if (at) {
        const char *colon = memchr(rest, ':', (size_t)(at - rest));
        size_t ul = colon ? (size_t)(colon - rest) : (size_t)(at - rest);
        if (pct_decode(rest, ul, d->user, sizeof d->user) ||
            (colon &&
             pct_decode(colon + 1, (size_t)(at - colon - 1), d->password, sizeof d->password)))
            return sl_err_setc(err, SL_INVALID,
                               "invalid MySQL DSN: the user name or password is too long or "
                               "holds %%00");
        d->has_password = colon != NULL;
        hp = at + 1;
    }
    const char *slash = strchr(hp, '/');
    size_t hl = slash ? (size_t)(slash - hp) : strlen(hp);
    const char *hend = hp + hl, *pc = NULL;
    if (hl && hp[0] == '[') { /* [IPv6]:port */
        const char *rb = memchr(hp, ']', hl);
        if (!rb)
            return sl_err_setc(err, SL_INVALID, "invalid MySQL DSN: '[' without ']' in the host");
        if (rb + 1 < hend && rb[1] == ':')
            pc = rb + 1;
        snprintf(d->host, sizeof d->host, "%.*s", (int)(rb - hp - 1), hp + 1);
    } else {
        pc = memchr(hp, ':', hl);
        size_t n = pc ? (size_t)(pc - hp) : hl;
        if (n >= sizeof d->host)
            return sl_err_setc(err, SL_INVALID, "invalid MySQL DSN: the host name is too long");
        snprintf(d->host, sizeof d->host, "%.*s", (int)n, hp);
    }
    d->port = 3306;
    if (pc) {
        char *end;
        unsigned long port = strtoul(pc + 1, &end, 10);
        if (end != hend || pc + 1 == hend || port == 0 || port > 65535)
            return sl_err_setc(err, SL_INVALID,
                               "invalid MySQL DSN: the port is not a number from 1 to 65535");
        d->port = (unsigned)port;
    }
    if (!d->host[0])
        snprintf(d->host, sizeof d->host, "localhost");
    if (slash && pct_decode(slash + 1, strlen(slash + 1), d->db, sizeof d->db))
        return sl_err_setc(err, SL_INVALID, "invalid MySQL DSN: the database name is too long");
    if (!d->db[0])
        return sl_err_setc(err, SL_INVALID,
                           "invalid MySQL DSN: no database (write mysql://USER@HOST:PORT/DB)");
    const char *env = getenv("MYSQL_PWD");
    if (!d->has_password && env) {
        snprintf(d->password, sizeof d->password, "%s", env);
        d->has_password = 1;
    }
    return 0;
}

/* The password an option file gave, once connected with it, kept to be
 * scrubbed from every later message as one from the DSN is. Connector/C
 * does not give it back before (mysql_get_optionv has no password), and
 * no connect error quotes it (the server says "using password: YES"). */
static int keep_file_password(my_conn *m)
{
    const char *pw = m->my->passwd;
    if (!pw || !pw[0])
        return 0;
    char *copy = strdup(pw);
    if (!copy)
        return -1;
    free(m->password);
    m->password = copy;
    return 0;
}

conn *conn_mysql_open(const char *dsn, int read_timeout_ms, sl_err *err)
{
    my_dsn d;
    if (parse_dsn(dsn, &d, err))
        return NULL;
    my_conn *m = calloc(1, sizeof *m);
    if (!m || !(m->password = strdup(d.password)) || !(m->my = mysql_init(NULL))) {
        if (m)
            my_free(&m->base);
        return sl_err_set(err, "out of memory"), NULL;
    }
    m->base.ops = &mariadb_ops;
    m->read_timeout_ms = read_timeout_ms > 0 ? read_timeout_ms : CONN_READ_TIMEOUT_MS;
    snprintf(m->base.name, sizeof m->base.name, "mysql://%.60s@%.100s:%u/%.60s", d.user, d.host,
             d.port, d.db);
    dsn_scrub_secret(m->base.name, sizeof m->base.name, m->password);
    unsigned ct = CONN_CONNECT_TIMEOUT_S, rts = (unsigned)(m->read_timeout_ms + 999) / 1000;
    /* the option files' [client] group (~/.my.cnf, /etc/mysql/my.cnf), as
     * the mysql client reads it: a password, or a user, the DSN leaves out */
    mysql_optionsv(m->my, MYSQL_READ_DEFAULT_GROUP, "client");
    mysql_options(m->my, MYSQL_OPT_CONNECT_TIMEOUT, &ct);
    /* statements run through the non-blocking API (my_wait: heartbeats
     * and our own deadline); the read timeout guards the blocking set-up */
    mysql_options(m->my, MYSQL_OPT_NONBLOCK, 0);
    mysql_options(m->my, MYSQL_OPT_READ_TIMEOUT, &rts);
    mysql_options(m->my, MYSQL_SET_CHARSET_NAME, "utf8mb4");
    mysql_optionsv(m->my, MYSQL_OPT_CONNECT_ATTR_ADD, "program_name", "sluice");
    int ok = mysql_real_connect(m->my, d.host, d.user[0] ? d.user : NULL,
                                d.has_password ? d.password : NULL, d.db, d.port, NULL, 0) != NULL;
    if (ok && !d.has_password && keep_file_password(m)) {
        my_free(&m->base);
        return sl_err_set(err, "out of memory"), NULL;
    }
    if (!ok) {
        char line[400];
        unsigned e = mysql_errno(m->my);
        dsn_error_line(line, sizeof line, mysql_error(m->my), m->password);
        dsn_scrub(line, sizeof line, dsn);
        sl_err_setc(err, my_code(e), "cannot connect to MySQL at %s:%u: %s", d.host, d.port, line);
        my_free(&m->base);
        return NULL;
    }
    const char *ver = mysql_get_server_info(m->my);
    m->mariadb = strstr(ver, "MariaDB") != NULL;
    if (!m->mariadb) {
        if (mysql_get_server_version(m->my) < 80000) {
            sl_err_setc(err, SL_INVALID,
                        "%s: MySQL %s is older than 8.0, which has no NO PAD binary collation "
                        "to order text keys bytewise; sluice reads MySQL 8.0 and MariaDB 10.2 "
                        "on",
                        m->base.name, ver);
            my_free(&m->base);
            return NULL;
        }
        m->base.ops = &mysql8_ops;
    }
    /* net_write_timeout: how long the server waits for us to take the next
     * rows of an unbuffered result before it gives up (60 s by default);
     * a slow consumer is bounded by our read deadline instead */
    char set[256];
    snprintf(set, sizeof set,
             "SET time_zone = '+00:00', character_set_results = NULL, "
             "sql_mode = 'ANSI_QUOTES,PIPES_AS_CONCAT,NO_BACKSLASH_ESCAPES', "
             "net_write_timeout = %u",
             rts < 60 ? 60 : rts);
    if (mysql_set_character_set(m->my, "utf8mb4") || mysql_query(m->my, set)) {
        my_error(m, NULL, err);
        my_free(&m->base);
        return NULL;
    }
    return &m->base;
}
