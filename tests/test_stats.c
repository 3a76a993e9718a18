/* base/stats: the binomial CDF against a direct product-form sum, and the
 * sample bound against its definition and known values. */
#include <math.h>

#include "../base/stats.h"
#include "tap.h"

/* P(X <= k) by the recurrence t(i+1) = t(i) (n-i)/(i+1) p/q: small n only. */
static double cdf_direct(unsigned n, unsigned k, double p)
{
    double t = pow(1 - p, n), s = 0;
    for (unsigned i = 0; i <= k && i <= n; i++) {
        s += t;
        t = t * (double)(n - i) / (double)(i + 1) * p / (1 - p);
    }
    return s;
}

int main(void)
{
    int good = 1;
    for (unsigned n = 1; n <= 60; n += 7)
        for (unsigned k = 0; k < n; k += 3)
            for (double p = 0.01; p < 1; p += 0.07)
                good &= fabs(sl_binom_cdf(n, k, p) - cdf_direct(n, k, p)) < 1e-10;
    ok(good, "the CDF equals the direct sum for n up to 60");

    double u = sl_binom_upper(200000, 0, 0.95);
    ok(fabs(u - (1 - pow(0.05, 1.0 / 200000))) < 1e-15 && u < 0.000015 && u > 0.0000149,
       "no divergence in 200,000 rows: < 0.0015%% at 95%% (%.7f%%)", u * 100);
    ok(fabs(sl_binom_upper(1, 0, 0.95) - 0.95) < 1e-12, "one row, none divergent: 95%%");
    ok(fabs(sl_binom_upper(10, 1, 0.95) - 0.3942) < 1e-4, "1 of 10: 0.3942 (%.4f)",
       sl_binom_upper(10, 1, 0.95));
    ok(fabs(sl_binom_upper(100, 5, 0.95) - 0.1023) < 1e-3, "5 of 100: 0.102 (%.4f)",
       sl_binom_upper(100, 5, 0.95));
    good = 1;
    unsigned ns[] = {5, 37, 1000, 250000};
    unsigned ks[] = {1, 2, 10, 77};
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) {
            if (ks[j] >= ns[i])
                continue;
            double b = sl_binom_upper(ns[i], ks[j], 0.95);
            /* the definition: P(X <= k) at the bound is 5%, and above 5% just below it */
            good &= fabs(sl_binom_cdf(ns[i], ks[j], b) - 0.05) < 1e-9 &&
                    sl_binom_cdf(ns[i], ks[j], b * (1 - 1e-6)) > 0.05 && b > (double)ks[j] / ns[i];
        }
    ok(good, "every bound meets its definition: P(X <= k) = 5%% there, above it below");
    double w = sl_binom_upper(10000000, 50000, 0.95), exact_side = sl_binom_cdf(10000000, 50000, w);
    ok(w > 0.005 && w < 0.00515 && fabs(exact_side - 0.05) < 0.002,
       "past 20,000 divergent, Wilson's bound: P(X <= k) there %.4f (%.6f)", exact_side, w);
    ok(sl_binom_upper(0, 0, 0.95) == 1 && sl_binom_upper(5, 5, 0.95) == 1,
       "nothing sampled, or all divergent: nothing known (1)");
    ok(sl_binom_upper(1000, 3, 0.99) > sl_binom_upper(1000, 3, 0.95),
       "more confidence, a wider bound");
    return done_testing();
}
