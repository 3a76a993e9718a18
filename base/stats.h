/* stats: the confidence bound a sample gives.
 *
 * A sample of n rows drawn at random found k divergent: with confidence
 * conf (e.g. 0.95) the share of divergent rows in the whole table is at
 * most sl_binom_upper(n, k, conf) — the one-sided Clopper-Pearson bound,
 * exact for the binomial (for k = 0 it is 1 - (1 - conf)^(1/n), about 3/n
 * at 95%: "the rule of three"). */
#ifndef SL_STATS_H
#define SL_STATS_H

#include <stdint.h>

/* P(X <= k) for X ~ Binomial(n, p). */
double sl_binom_cdf(uint64_t n, uint64_t k, double p);

/* The smallest p with P(X <= k) <= 1 - conf: 0 < conf < 1; 1 when k >= n
 * or n is 0 (nothing sampled: nothing known). */
double sl_binom_upper(uint64_t n, uint64_t k, double conf);

#endif
