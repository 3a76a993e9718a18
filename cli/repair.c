/* sluice repair: a diff, then the fix that makes the target equal to the
 * source (fix.h): shown by default, applied to the target with --apply,
 * each repaired key checked against the source afterwards. The source is
 * never written: it is opened read-only (SQLite) or in a read-only session
 * (PostgreSQL, MySQL). */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "fix.h"
#include "report.h"

static const char *usage_repair =
    "usage: sluice repair SOURCE TARGET --table T [diff options] [--apply]\n"
    "         [--max-rows N] [--batch N] [--rows-per-second N] [--fix-sql FILE]\n"
    "  compares the table as sluice diff does, then builds the statements that\n"
    "  make the target equal to the source: DELETE for rows extra in the target,\n"
    "  UPDATE of the changed columns, INSERT of rows missing in the target (the\n"
    "  source's current rows, fetched by key), with literals for the target's\n"
    "  dialect. The source is only read.\n"
    "  (default)            dry run: print the statements and what they would\n"
    "                       change; write nothing\n"
    "  --apply              run them against the target, one transaction per\n"
    "                       batch, then fetch every repaired key from both sides\n"
    "                       and compare\n"
    "  --max-rows N         refuse (exit 2, nothing written) when more than N rows\n"
    "                       would change (default 10000)\n"
    "  --batch N            statements per transaction (default 500)\n"
    "  --rows-per-second N  --apply: at most N statements a second\n"
    "  --fix-sql FILE       also save the statements to FILE (written whole or\n"
    "                       not at all)\n"
    "  diff options: those of sluice diff (sluice diff --help); there\n"
    "  --max-rows-per-second throttles the diff's reads.\n"
    "exit status: dry run 0 nothing to change, 1 changes to make; --apply 0 the\n"
    "  target now equals the source for every repaired key, 1 some still differ;\n"
    "  2 trouble or refused\n";

int cmd_repair(int argc, char **argv)
{
    fix_args fa;
    diff_args a;
    int st = fix_take_args(&argc, argv, 1, &fa);
    if (st >= 0)
        return st;
    if (fa.help) {
        fputs(usage_repair, stdout);
        return 0;
    }
    if ((st = diff_args_parse(argc, argv, DIFF_ARGS_DIFF, &a)) >= 0) {
        diff_args_free(&a);
        return st;
    }
    if (a.o.max_divergences) {
        /* a diff stopped part-way counts rows of the ranges it finished
         * only: the repair's checks would rest on a partial answer */
        diff_args_free(&a);
        return cli_fail("sluice repair compares whole tables: --max-divergences would stop the "
                        "diff part-way; --max-rows caps a repair");
    }
    a.o.source_db = "source";
    a.o.target_db = "target";
    int status = 2;
    sl_err err = {0};
    report rep = {.progress = a.progress};
    co_summary sum;
    fix *fx = fix_new(&err);
    fix_tap tap = {fx, NULL, report_progress, &rep};
    co_callbacks cb = {.event = fix_tap_event, .progress = fix_tap_progress, .ctx = &tap};
    if (!fx || cli_local_diff(&a, &cb, &sum, &err) || fix_error(fx, &err))
        goto out;
    if (rep.progress)
        fprintf(stderr, "\r\033[K");
    if (sum.source_rows == 0 && !a.allow_empty) {
        /* an empty source (a wrong table, a --where that matches nothing)
         * would have the repair delete every row of the target */
        sl_err_setc(&err, SL_INVALID,
                    "the source has no rows to compare: a repair would delete every target "
                    "row; pass --allow-empty if that is what you want");
        goto out;
    }
    if (sum.schema)
        fprintf(stderr,
                "sluice: %llu schema difference%s (sluice diff shows them): a repair writes "
                "only the columns both tables have\n",
                (unsigned long long)sum.schema, sum.schema == 1 ? "" : "s");
    uint64_t ins, upd, del;
    fix_counts(fx, &ins, &upd, &del);
    uint64_t total = ins + upd + del;
    if (total > (uint64_t)fa.max_rows) {
        sl_err_setc(&err, SL_INVALID,
                    "the repair would change %llu rows (%llu to insert, %llu to update, %llu to "
                    "delete), more than --max-rows %lld; nothing was written",
                    (unsigned long long)total, (unsigned long long)ins, (unsigned long long)upd,
                    (unsigned long long)del, (long long)fa.max_rows);
        goto out;
    }
    if (fix_build(fx, &a, fa.apply, fa.batch, &err))
        goto out;
    fix_result fr;
    fix_result_get(fx, &fr);
    if (fa.sql_file && fix_write_file(fx, fa.sql_file, &err))
        goto out;
    if (fr.vanished)
        fprintf(stderr, "sluice: %llu divergent key%s no longer in the source: left out\n",
                (unsigned long long)fr.vanished, fr.vanished == 1 ? " is" : "s are");
    uint64_t changes = fr.inserts + fr.updates + fr.deletes;
    const char *tt = a.o.target_table ? a.o.target_table : a.o.table;
    if (!fa.apply) {
        if (!fa.sql_file && fix_write(fx, stdout, &err))
            goto out;
        printf("-- dry run: %llu to insert, %llu to update, %llu to delete in target table %s "
               "(%llu rows compared); nothing written%s%s%s\n",
               (unsigned long long)fr.inserts, (unsigned long long)fr.updates,
               (unsigned long long)fr.deletes, tt, (unsigned long long)sum.source_rows,
               changes ? " (pass --apply to write)" : "", fa.sql_file ? "; fix SQL in " : "",
               fa.sql_file ? fa.sql_file : "");
        status = changes ? 1 : 0;
        goto out;
    }
    cli_catch_signals(); /* Ctrl-C stops between transactions, never inside one */
    if (fix_apply(fx, fa.rows_per_second, &err))
        goto out;
    if (fix_recheck(fx, &err)) {
        /* the writes are done: exit 2 must not read as "nothing happened" */
        fix_result_get(fx, &fr);
        sl_err_wrap(&err,
                    "the repair was applied (%llu inserted, %llu updated, %llu deleted in %llu "
                    "transaction%s) but re-checking it failed",
                    (unsigned long long)fr.inserts, (unsigned long long)fr.updates,
                    (unsigned long long)fr.deletes, (unsigned long long)fr.batches,
                    fr.batches == 1 ? "" : "s");
        goto out;
    }
    fix_result_get(fx, &fr);
    printf("repaired target table %s: %llu inserted, %llu updated, %llu deleted in %llu "
           "transaction%s; re-check: %llu of %llu keys equal the source\n",
           tt, (unsigned long long)fr.inserts, (unsigned long long)fr.updates,
           (unsigned long long)fr.deletes, (unsigned long long)fr.batches,
           fr.batches == 1 ? "" : "s", (unsigned long long)(fr.checked - fr.unequal),
           (unsigned long long)fr.checked);
    status = fr.unequal ? 1 : 0;
out:
    report_free(&rep);
    fix_free(fx);
    diff_args_free(&a);
    if (status == 2)
        cli_fail("%s", err.msg[0] ? err.msg : "failed");
    fflush(stdout);
    return status;
}
