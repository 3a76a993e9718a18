/* Private to connectors/: PostgreSQL's binary wire format read into enc_val,
 * for the range stream (the hot path). Every value decodes to what the
 * encoder makes of the same value's text form under the session settings
 * pg.c pins (UTC, ISO dates, hex bytea, shortest floats), so a range read
 * in binary hashes exactly as one read as text. */
#ifndef PG_BIN_H
#define PG_BIN_H

#include <stddef.h>

#include "../base/sl.h"
#include "../merkle/enc.h"

/* The class a value of this type OID decodes to, or 0 when the type has no
 * binary decoder here (domains, extension types: read those as text). */
int pg_bin_class(unsigned oid);

/* Decodes one binary value of type oid into v. Any bytes v must point to
 * besides p (numerics, rare text forms) go to scratch, which is reset first
 * and must outlive v. Returns 0, or -1 with err set when the bytes are not
 * a well-formed value of that type. */
int pg_bin_decode(unsigned oid, const char *p, size_t len, sl_buf *scratch, enc_val *v,
                  sl_err *err);

#endif
