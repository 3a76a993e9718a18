/* libFuzzer target: the coordinator's handling of a worker's reply. The
 * first byte picks the request it answers (split, tree, nodes, rows,
 * fetch, stream); the rest is the frame. A reply is accepted or rejected, and an
 * accepted one is handled, without a crash, a leak or undefined behaviour
 * (co_fuzz_reply aborts on a broken invariant). */
#include <stdlib.h>

#include "../../coordinator/co.h"
#include "../../proto/msg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const int types[] = {MSG_SPLIT, MSG_TREE, MSG_NODES, MSG_ROWS, MSG_FETCH, MSG_STREAM};
    if (size < 1)
        return 0;
    if (co_fuzz_reply(types[data[0] % 6], data + 1, size - 1) < 0)
        abort(); /* out of memory on a small input: a leak somewhere */
    return 0;
}
