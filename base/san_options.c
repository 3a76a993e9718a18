/* Linked into the sanitizer build only (Makefile: build/asan/...): exit
 * codes of its own for each sanitizer, so no run of build/asan/sluice —
 * test, cluster process or user — can read a sanitizer report as exit 1
 * ("tables differ") or 2 ("trouble"). The *_OPTIONS environment variables
 * still override these defaults.
 *
 * ASan, UBSan and LSan share one "exitcode" setting, and the defaults are
 * parsed in turn, so the last one would win for all three; a death callback
 * gives an ASan report its own code (86). A UBSan report exits 87, leaks 88. */
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#include <unistd.h>

const char *__asan_default_options(void);
const char *__ubsan_default_options(void);
const char *__lsan_default_options(void);

const char *__asan_default_options(void)
{
    return "exitcode=86:detect_leaks=1:abort_on_error=0";
}

const char *__ubsan_default_options(void)
{
    return "halt_on_error=1:exitcode=87:print_stacktrace=1";
}

const char *__lsan_default_options(void)
{
    return "exitcode=88";
}

static void on_death(void)
{
    if (__asan_report_present())
        _exit(86);
}

__attribute__((constructor)) static void san_init(void)
{
    __sanitizer_set_death_callback(on_death);
}
