/* tol: tolerant comparison of columns (--tolerance, --timestamp-precision,
 * --trim-trailing-spaces, --case-fold). A tolerance never makes two values
 * that differ beyond it look equal: exact transforms (timestamp precision,
 * trimming, case folding) change the canonical value before it is hashed
 * and before it is compared; a numeric epsilon hashes the value's cell on a
 * grid no wider than the epsilon (same cell: within it) and the drill-down
 * compares values of neighbouring cells exactly, in decimal. The rules are
 * in merkle/README.md, "Tolerances".
 */
#ifndef TOL_H
#define TOL_H

#include <stddef.h>
#include <stdint.h>

#include "../base/sl.h"
#include "enc.h"

enum { ENC_TOL_EXACT = 0, ENC_TOL_ABS = 1, ENC_TOL_REL = 2 };
enum { ENC_TOL_TRIM = 1, ENC_TOL_FOLD = 2 };

/* Most significant digits an epsilon may have, and the range of its
 * decimal exponent: eps = eps_m * 10^eps_e. */
#define ENC_TOL_EPS_DIGITS 17
#define ENC_TOL_EPS_EXP 100000

/* One column's tolerance; all zero but ts_digits = 6 is exact (enc_tol_exact). */
typedef struct enc_tol {
    uint8_t num;       /* ENC_TOL_EXACT, _ABS (|a-b| <= eps), _REL (|a-b| <= eps*max(|a|,|b|)) */
    uint8_t text;      /* ENC_TOL_TRIM | ENC_TOL_FOLD */
    uint8_t ts_digits; /* fractional second digits a timestamp keeps: 0 (s), 3 (ms), 6 (exact) */
    uint64_t eps_m;    /* 1 .. 10^17 - 1 */
    int32_t eps_e;
} enc_tol;

/* The exact tolerance (what a column without a rule gets). */
enc_tol enc_tol_exact(void);

/* Whether t changes nothing. */
int enc_tol_is_exact(const enc_tol *t);

/* Checks t for a column of class cls (a tolerance from another process):
 * every field in range, and each setting one the class can take. 0, or -1
 * with err saying what is wrong. */
int enc_tol_check(const enc_tol *t, int cls, sl_err *err);

/* A rule as a user wrote it: "OPTION:VALUE", OPTION one of tolerance,
 * timestamp-precision, trim-trailing-spaces, case-fold:
 *   tolerance:COL=EPS           |a-b| <= EPS (EPS a decimal, 0 or more)
 *   tolerance:COL=EPSr          |a-b| <= EPS * max(|a|,|b|)
 *   timestamp-precision:P       P s, ms or us, every timestamp column
 *   timestamp-precision:COL=P
 *   trim-trailing-spaces:       every text column ("" after the colon)
 *   trim-trailing-spaces:COL
 *   case-fold:  case-fold:COL
 * COL is a column name or a class name (integer/int, numeric, float for
 * tolerance; timestamp, timestamptz for timestamp-precision; text for the
 * text options): every compared column of that class. A column of that
 * name wins over the class. */
typedef struct enc_tol_rule {
    int opt;          /* ENC_TOL_OPT_* */
    const char *name; /* the column or class (points into the rule text); "" for all */
    size_t name_len;
    enc_tol t; /* the setting the rule gives (only its option's part) */
} enc_tol_rule;

enum {
    ENC_TOL_OPT_TOLERANCE = 1,
    ENC_TOL_OPT_TS_PRECISION,
    ENC_TOL_OPT_TRIM,
    ENC_TOL_OPT_FOLD,
};

/* Parses one rule (NUL-terminated s; r points into it). 0, or -1 with err
 * a one-line message naming the option, e.g. "--tolerance amount: no
 * epsilon; write COL=EPS (0.005) or COL=EPSr (1e-9r)". */
int enc_tol_rule_parse(const char *s, enc_tol_rule *r, sl_err *err);

/* Resolves rules against the compared columns cols[0..ncols) (key columns
 * the first nkey) of comparison classes cls[]: out[i] is column i's
 * tolerance. Fails on a rule naming no column and no class, on a setting
 * the column's class cannot take (a tolerance on text) and on a key
 * column. 0, or -1 with err. Returns 1 when every column stays exact. */
int enc_tol_resolve(const char *const *rules, size_t nrules, const char *const *cols,
                    const int *cls, size_t nkey, size_t ncols, enc_tol *out, sl_err *err);

/* Appends to out the grid cell of a canonical decimal (the payload of a
 * number's encoding, "[-]DIGITSEexp" or "0") under t (ENC_TOL_ABS or _REL):
 * a token that two values share only when they are within t. Returns 0, 1
 * when the value is too large against the grid to take a cell (the caller
 * hashes it exactly), -1 when dec is not canonical or memory runs out. */
int enc_tol_cell(sl_buf *out, const char *dec, size_t n, const enc_tol *t);

/* Whether two encoded values (as enc_value writes them, with flags) are
 * within t: equal bytes, or two numbers within its epsilon, decided
 * exactly in decimal. 1 within, 0 not, -1 out of memory. */
int enc_tol_within(const uint8_t *a, size_t na, const uint8_t *b, size_t nb, int flags,
                   const enc_tol *t);

#endif
