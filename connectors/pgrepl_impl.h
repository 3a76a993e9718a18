/* pgrepl's decoder, for pgrepl.c and its tests only: a pure function of
 * the bytes it is given (no I/O), so crafted and truncated messages can be
 * fed to it directly.
 *
 * It reads one CopyData message of a logical replication stream at a time:
 * 'k' primary keepalive, or 'w' XLogData whose payload is one pgoutput
 * message (protocol version 1, text values). It keeps the relations
 * announced so far and whether a transaction is open; a message that does
 * not fit (truncated, a length past the end, an unknown relation, a tuple
 * wider than its relation, a change outside a transaction) is refused.
 */
#ifndef PGREPL_IMPL_H
#define PGREPL_IMPL_H

#include "pgrepl.h"

/* MaxTupleAttributeNumber: no relation or tuple has more columns */
#define PR_MAX_COLS 1664

typedef struct pr_decoder pr_decoder;

pr_decoder *pr_decoder_new(void);
void pr_decoder_free(pr_decoder *d);

/* What the last pr_decode read besides changes. */
typedef struct pr_frame {
    char type;        /* 'w' or 'k' */
    pr_lsn wal_start; /* 'w': where the payload starts in the WAL */
    pr_lsn wal_end;   /* the server's WAL end at sending */
    int reply;        /* 'k': the server asks for a status update now */
    char msg;         /* 'w': the pgoutput message type */
} pr_frame;

/* Decodes one CopyData message buf[0..n). Returns how many changes it
 * yields (an insert 1, a truncate one a table, a begin 0), each read with
 * pr_decoded until the next call, or -1 with err set; a refused message
 * changes nothing (its relations, its transaction state) but the changes
 * of the call before. *frame (may be NULL) gets the framing. */
int pr_decode(pr_decoder *d, const uint8_t *buf, size_t n, pr_frame *frame, sl_err *err);

/* The i-th change of the last pr_decode (i below what it returned). */
const pr_change *pr_decoded(const pr_decoder *d, size_t i);

/* Whether a transaction's BEGIN came and its COMMIT has not. */
int pr_decoder_in_txn(const pr_decoder *d);

#endif
