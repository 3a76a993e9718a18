/* fiber: a job's own stack, so that the coordinator's one event loop can
 * suspend a job where it waits for workers and resume it when their replies
 * arrive. Only the loop resumes fibers, and a fiber only yields back to the
 * loop: at any moment exactly one of them runs, so nothing is shared across
 * threads. ucontext underneath; AddressSanitizer is told of every switch.
 */
#ifndef FIBER_H
#define FIBER_H

#include <stddef.h>

typedef struct fiber fiber;

/* A fiber that will run fn(arg) on a stack of stack_size bytes (rounded up
 * to pages, plus a guard page) at its first resume. NULL when memory or
 * mappings run out. */
fiber *fiber_new(void (*fn)(void *arg), void *arg, size_t stack_size);

/* Runs the fiber until it yields or fn returns. Returns 1 while it can be
 * resumed again, 0 once fn has returned. Never called from inside a fiber. */
int fiber_resume(fiber *f);

/* From inside f: back to whoever resumed it. */
void fiber_yield(fiber *f);

/* Frees a fiber that has finished or was never resumed. A fiber suspended
 * in the middle of fn must be run to its end first: its stack holds
 * allocations only fn knows of. */
void fiber_free(fiber *f);

#endif
