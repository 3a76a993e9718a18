/* sl_err codes: sl_err_set keeps a code already set (a message rewritten
 * around an inner error keeps its cause) and sets internal otherwise,
 * sl_err_setc sets one, sl_err_wrap keeps it, and names round-trip. */
#include <string.h>

#include "../base/sl.h"
#include "tap.h"

int main(void)
{
    sl_err e = {0};
    ok(e.code == SL_OK, "an sl_err initialised with {0} has no code");
    ok(sl_err_set(&e, "out of %s", "memory") == -1 && e.code == SL_INTERNAL &&
           !strcmp(e.msg, "out of memory"),
       "sl_err_set on an unset error: internal, %s", e.msg);

    sl_err d = {0};
    ok(sl_err_setc(&d, SL_DATABASE, "%s: connection lost", "db1") == -1 && d.code == SL_DATABASE &&
           !strcmp(d.msg, "db1: connection lost"),
       "sl_err_setc sets the code and message: %s", d.msg);
    sl_err_set(&d, "database \"old\" failed a query with --where");
    ok(d.code == SL_DATABASE, "sl_err_set keeps a code already set (%s)", sl_code_name(d.code));
    sl_err_setc(&d, SL_AUTH, "refused");
    ok(d.code == SL_AUTH, "sl_err_setc replaces a code already set");

    sl_err w = {0};
    sl_err_setc(&w, SL_NOT_FOUND, "table \"t\" does not exist");
    ok(sl_err_wrap(&w, "source %s", "db1") == -1 && w.code == SL_NOT_FOUND &&
           !strcmp(w.msg, "source db1: table \"t\" does not exist"),
       "sl_err_wrap keeps the code: %s", w.msg);

    sl_err r = {0};
    sl_err_setc(&r, 99, "odd");
    ok(r.code == SL_INTERNAL, "a code out of range is stored as internal");
    sl_err_setc(&r, SL_OK, "odd");
    ok(r.code == SL_INTERNAL, "an error is never stored with code ok");
    ok(sl_err_set(NULL, "x") == -1 && sl_err_setc(NULL, SL_BUSY, "x") == -1,
       "a NULL sl_err is fine");

    static const char *const names[] = {"ok",          "invalid",  "not_found", "busy",
                                        "lost_worker", "database", "auth",      "internal"};
    int all = 1;
    for (int c = SL_OK; c <= SL_INTERNAL; c++) {
        const char *n = sl_code_name(c);
        all &= !strcmp(n, names[c]) && sl_code_from_name(n, strlen(n)) == c;
    }
    ok(all, "every code's name is as documented and reads back as the code");
    ok(!strcmp(sl_code_name(-1), "internal") && !strcmp(sl_code_name(SL_INTERNAL + 1), "internal"),
       "a number out of range is named internal");
    ok(sl_code_from_name("teapot", 6) == SL_INTERNAL, "an unknown name reads as internal");
    ok(sl_code_from_name("auth_x", 4) == SL_AUTH && sl_code_from_name("auth", 3) == SL_INTERNAL,
       "names are read by their length, not up to a NUL");
    ok(sl_code_from_name(NULL, 0) == SL_INTERNAL, "no name reads as internal");
    ok(sizeof(sl_err) >= 512 + sizeof(int) && sizeof e.msg == 512, "msg keeps its 512 bytes");
    return done_testing();
}
