/* sluice scrub: a rotating sampled diff. Each cycle is one job on the
 * coordinator whose ranges are visited in a random order of its own
 * (shuffle_seed) at the asked rate; the next cycle draws a fresh order.
 * Coverage is the cycle's ranges done; when a cycle ends, every row of
 * the table has been checked at least once since it began. */
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "cli.h"

static void nap_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void utc(int64_t ms, char *buf, size_t len)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, len, "%Y-%m-%d %H:%M:%S UTC", &tm);
}

/* One cycle: 0 done (*div set), 2 trouble (printed), 3 interrupted. */
static int cycle(sl_client *c, const diff_args *a, long n, uint64_t *div)
{
    sl_job_spec spec;
    diff_args_spec(a, &spec);
    spec.scrub = 1;
    if (getrandom(&spec.shuffle_seed, sizeof spec.shuffle_seed, 0) != sizeof spec.shuffle_seed)
        spec.shuffle_seed = (uint64_t)sl_wall_ms() * 2654435761u;
    sl_err err = {0};
    int64_t job;
    if (sl_client_submit(c, &spec, &job, &err))
        return cli_fail("%s", err.msg);
    int64_t t0 = sl_wall_ms();
    volatile sig_atomic_t *stop = cli_stop_flag();
    for (;;) {
        sl_job_status st;
        memset(&st, 0, sizeof st);
        if (sl_client_status(c, job, 0, &st, &err)) {
            sl_job_status_free(&st);
            return cli_fail("%s", err.msg);
        }
        if (*stop && !sl_job_state_is_final(st.state)) {
            sl_job_status_free(&st);
            sl_err ce = {0};
            sl_client_cancel(c, job, &ce);
            if (a->progress)
                fputc('\n', stderr);
            fprintf(stderr, "sluice: scrub interrupted: cycle %ld (job %lld) cancelled\n", n,
                    (long long)job);
            return 3;
        }
        double share = st.ranges ? (double)st.ranges_done / (double)st.ranges : 0;
        if (a->progress && !sl_job_state_is_final(st.state)) {
            int64_t el = sl_wall_ms() - t0;
            char eta[40] = "";
            if (share > 0.02)
                utc(t0 + (int64_t)((double)el / share), eta, sizeof eta);
            fprintf(stderr, "\rsluice: scrub cycle %ld (job %lld): %llu/%llu ranges, %.1f%%%s%s   ",
                    n, (long long)job, (unsigned long long)st.ranges_done,
                    (unsigned long long)st.ranges, share * 100, eta[0] ? ", every row by " : "",
                    eta);
        }
        if (sl_job_state_is_final(st.state)) {
            if (a->progress)
                fputc('\n', stderr);
            int rc = 0;
            if (st.state != SL_JOB_DONE)
                rc = cli_fail("scrub cycle %ld (job %lld) %s: %s", n, (long long)job, st.state_name,
                              st.error[0] ? st.error : "no reason given");
            else {
                char by[40];
                utc(st.finished_ms > 0 ? st.finished_ms : sl_wall_ms(), by, sizeof by);
                uint64_t d = st.changed + st.missing + st.extra;
                *div += d;
                printf("cycle %ld (job %lld): %llu rows in %llu ranges checked in %.1f s, %llu "
                       "divergent (%llu missing, %llu extra, %llu changed), %llu transient; every "
                       "row checked at least once by %s\n",
                       n, (long long)job, (unsigned long long)(st.source_rows + st.extra),
                       (unsigned long long)st.ranges, (double)st.elapsed_ms / 1000.0,
                       (unsigned long long)d, (unsigned long long)st.missing,
                       (unsigned long long)st.extra, (unsigned long long)st.changed,
                       (unsigned long long)st.transient, by);
                fflush(stdout);
            }
            sl_job_status_free(&st);
            return rc;
        }
        sl_job_status_free(&st);
        nap_ms(500);
    }
}

int cmd_scrub(int argc, char **argv)
{
    diff_args a;
    sl_client *c = NULL;
    int st = diff_args_client(argc, argv, DIFF_ARGS_SCRUB, NULL, &a, &c);
    if (st < 0) {
        cli_catch_signals();
        uint64_t div = 0;
        long n = 1;
        for (; st < 0 && (a.cycles == 0 || n <= a.cycles); n++) {
            int r = cycle(c, &a, n, &div);
            if (r)
                st = 2;
        }
        if (st < 0) {
            fprintf(stderr, "sluice: scrub: %ld cycles, %llu divergent rows found\n", n - 1,
                    (unsigned long long)div);
            st = div ? 1 : 0;
        }
    }
    sl_client_free(c);
    diff_args_free(&a);
    return st;
}
