/* The binomial's CDF and the Clopper-Pearson upper bound (stats.h). */
#include "stats.h"

#include <math.h>

double sl_binom_cdf(uint64_t n, uint64_t k, double p)
{
    if (k >= n || p <= 0)
        return 1;
    if (p >= 1)
        return 0;
    /* terms in log space: n may be millions, each term underflows alone */
    double lp = log(p), lq = log1p(-p), ln1 = lgamma((double)n + 1), sum = 0, top = -INFINITY;
    /* the largest term first, so the sum is scaled by it */
    for (uint64_t i = 0; i <= k; i++) {
        double t = ln1 - lgamma((double)i + 1) - lgamma((double)(n - i) + 1) + (double)i * lp +
                   (double)(n - i) * lq;
        if (t > top)
            top = t;
    }
    for (uint64_t i = 0; i <= k; i++)
        sum += exp(ln1 - lgamma((double)i + 1) - lgamma((double)(n - i) + 1) + (double)i * lp +
                   (double)(n - i) * lq - top);
    double v = exp(top + log(sum));
    return v > 1 ? 1 : v;
}

/* x with erfc(x) = a, by bisection: plenty for a bound printed to a few
 * digits (the normal's z with P(Z > z) = a/2 is sqrt(2) x). */
static double erfc_inv_approx(double a)
{
    double lo = 0, hi = 10;
    for (int i = 0; i < 80; i++) {
        double mid = (lo + hi) / 2;
        if (erfc(mid) > a)
            lo = mid;
        else
            hi = mid;
    }
    return (lo + hi) / 2;
}

double sl_binom_upper(uint64_t n, uint64_t k, double conf)
{
    if (n == 0 || k >= n)
        return 1;
    double alpha = 1 - conf;
    if (k == 0) /* closed form: (1 - p)^n = alpha */
        return -expm1(log(alpha) / (double)n);
    if (k > 20000) {
        /* the exact sum would cost k terms a step: Wilson's score bound,
         * within a hair of it at such counts */
        double z = sqrt(2) * erfc_inv_approx(2 * alpha), ph = (double)k / (double)n,
               d = 1 + z * z / (double)n, c = ph + z * z / (2 * (double)n),
               r = z * sqrt(ph * (1 - ph) / (double)n + z * z / (4 * (double)n * (double)n));
        double w = (c + r) / d;
        return w > 1 ? 1 : w;
    }
    /* the CDF falls as p rises: bisection between k/n and 1 */
    double lo = (double)k / (double)n, hi = 1;
    for (int i = 0; i < 100 && hi - lo > 1e-15; i++) {
        double mid = (lo + hi) / 2;
        if (sl_binom_cdf(n, k, mid) > alpha)
            lo = mid;
        else
            hi = mid;
    }
    return hi;
}
