/* libFuzzer target: pgrepl's decoder (pr_decode) on a sequence of
 * replication messages, each prefixed by its length (2 bytes, big-endian),
 * fed to one decoder that already knows relation 16384 (public.t: a int
 * key, b text, c text key) and is inside a transaction. Each message is
 * copied to a buffer of exactly its size, so a read past it is caught; a
 * refusal must say why; every string of every change is read. */
#include <stdlib.h>
#include <string.h>

#include "../../connectors/pgrepl_impl.h"

static const uint8_t relation[] = {
    'w',  0,    0,    0,    0,    0,    0,    0,    0, 0,   0,   0,    0,    0,    0,
    0,    0,    0,    0,    0,    0,    0,    0,    0, 0,   'R', 0,    0,    0x40, 0,
    'p',  'u',  'b',  'l',  'i',  'c',  0,    't',  0, 'd', 0,   3,    1,    'a',  0,
    0,    0,    0,    23,   0xff, 0xff, 0xff, 0xff, 0, 'b', 0,   0,    0,    0,    25,
    0xff, 0xff, 0xff, 0xff, 1,    'c',  0,    0,    0, 0,   25,  0xff, 0xff, 0xff, 0xff};
static const uint8_t begin[] = {'w', 0, 0, 0, 0, 0, 0, 0, 0, 0,   0, 0, 0, 0, 0, 0,
                                0,   0, 0, 0, 0, 0, 0, 0, 0, 'B', 0, 0, 0, 0, 0, 0,
                                1,   0, 0, 0, 0, 0, 0, 0, 0, 0,   0, 0, 0, 7};

static void feed(pr_decoder *d, const uint8_t *p, size_t n)
{
    sl_err err = {0};
    uint8_t *copy = malloc(n ? n : 1);
    if (!copy)
        return;
    if (n)
        memcpy(copy, p, n);
    int r = pr_decode(d, copy, n, NULL, &err);
    free(copy);
    if (r < 0) {
        if (!err.msg[0] || err.code != SL_INTERNAL)
            abort(); /* a refusal must say why */
        return;
    }
    volatile size_t sum = 0;
    for (int i = 0; i < r; i++) {
        const pr_change *c = pr_decoded(d, (size_t)i);
        if (c->schema)
            sum += strlen(c->schema) + strlen(c->table);
        for (size_t k = 0; k < c->nkey; k++)
            sum += strlen(c->key_names[k]) + (c->key[k] ? strlen(c->key[k]) : 0) +
                   (c->old_key && c->old_key[k] ? strlen(c->old_key[k]) : 0);
    }
    (void)sum;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    pr_decoder *d = pr_decoder_new();
    if (!d)
        return 0;
    feed(d, relation, sizeof relation);
    feed(d, begin, sizeof begin);
    while (size >= 2) {
        size_t n = (size_t)data[0] << 8 | data[1];
        data += 2, size -= 2;
        if (n > size)
            n = size;
        feed(d, data, n);
        data += n, size -= n;
    }
    pr_decoder_free(d);
    return 0;
}
