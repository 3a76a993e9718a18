/* dsn: passwords are scrubbed from messages as typed and as decoded,
 * redacted from names for logs, and URIs that libpq would split inside
 * the password are refused. */
#include <string.h>

#include "../base/dsn.h"
#include "tap.h"

static int scrubbed(const char *dsn, const char *msg, const char *secret)
{
    char m[512];
    snprintf(m, sizeof m, "%s", msg);
    dsn_scrub(m, sizeof m, dsn);
    return strstr(m, secret) == NULL && strstr(m, "***") != NULL;
}

int main(void)
{
    char m[512];
    snprintf(m, sizeof m, "host \"pw\" and pw again");
    dsn_scrub_secret(m, sizeof m, "pw");
    ok(!strcmp(m, "host \"***\" and *** again"), "every occurrence is replaced: %s", m);
    dsn_scrub_secret(m, sizeof m, "");
    ok(!strcmp(m, "host \"***\" and *** again"), "an empty secret changes nothing");

    ok(scrubbed("postgresql://app:S3cret%zz@h/db", "token: \"S3cret%zz\"", "S3cret"),
       "a URI password as typed");
    ok(scrubbed("postgresql://app:p%40ss@h/db", "could not use p@ss", "p@ss"),
       "a URI password as decoded");
    ok(scrubbed("postgresql://app:p%40ss@h/db", "could not use p%40ss", "p%40ss"),
       "a URI password with %%-escapes as typed");
    ok(scrubbed("host=h password='a b\\'c' dbname=x", "value a b'c here", "a b'c"),
       "a quoted conninfo password as decoded");
    ok(scrubbed("host=h password=hunter22 dbname=x", "hunter22", "hunter22"),
       "a plain conninfo password");
    ok(scrubbed("postgresql://h/db?password=qwerty9&sslmode=disable", "x qwerty9 y", "qwerty9"),
       "a URI query password");
    ok(scrubbed("postgresql://a:pw@[::1/db", "URI: \"postgresql://a:pw@[::1/db\"", "pw@"),
       "the whole DSN");

    snprintf(m, sizeof m, "database \"shop\" does not exist");
    dsn_scrub(m, sizeof m, "shop");
    ok(!strcmp(m, "database \"shop\" does not exist"), "a DSN without a password stays: %s", m);

    dsn_redact("postgresql://app:S3cret@db1:5432/shop?sslmode=require", m, sizeof m);
    ok(!strcmp(m, "postgresql://app:***@db1:5432/shop?sslmode=require"), "redact a URI: %s", m);
    dsn_redact("host=db1 password='x y' user=a", m, sizeof m);
    ok(!strcmp(m, "host=db1 password='***' user=a"), "redact conninfo: %s", m);
    dsn_redact("postgresql://app@db1/shop", m, sizeof m);
    ok(!strcmp(m, "postgresql://app@db1/shop"), "nothing to redact: %s", m);

    /* connectors/mysql.c: the same user:PASSWORD@ in mysql:// and mariadb:// */
    dsn_redact("mysql://app:S3cret@db1:3306/shop", m, sizeof m);
    ok(!strcmp(m, "mysql://app:***@db1:3306/shop"), "redact a mysql:// URI: %s", m);
    dsn_redact("mariadb://app:p@ss/w@db1/shop", m, sizeof m);
    ok(!strstr(m, "ss/w") && strstr(m, "@db1/shop"),
       "redact a mariadb:// URI whose password holds '@' and '/': %s", m);
    ok(scrubbed("mysql://app:p%40ss@h/db", "could not use p@ss", "p@ss"),
       "a mysql:// password as decoded");

    sl_err e = {0};
    ok(dsn_check_uri("postgresql://app:pq@xz@h/db", "source", &e) == -1 && strstr(e.msg, "%40") &&
           !strstr(e.msg, "xz"),
       "an unencoded '@' in the password is refused: %s", e.msg);
    ok(dsn_check_uri("postgresql://app:pa/ss@h/db", "source", &e) == -1,
       "an unencoded '/' in the password is refused");
    ok(dsn_check_uri("postgresql://app:p%40ss@h/db?user=x@y", "source", &e) == 0,
       "'@' encoded, or in the query, is fine");
    ok(dsn_check_uri("host=h password=p@ss", "source", &e) == 0, "conninfo is not a URI");

    ok(strstr(dsn_parse_hint("invalid percent-encoded token: \"x%zz\""), "%25") != NULL,
       "percent hint");
    ok(strstr(dsn_parse_hint("end of string reached when looking for matching \"]\" in IPv6 "
                             "host address in URI: \"postgresql://a:b@[::1\""),
              "IPv6") != NULL,
       "IPv6 hint");
    return done_testing();
}
