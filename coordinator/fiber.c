#include "fiber.h"

#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#define FIBER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FIBER_ASAN 1
#endif
#endif

#ifdef FIBER_ASAN
/* AddressSanitizer keeps shadow state per stack: each switch says which
 * stack runs next, or it reports false errors on the other one. */
void __sanitizer_start_switch_fiber(void **fake_stack_save, const void *bottom, size_t size);
void __sanitizer_finish_switch_fiber(void *fake_stack_save, const void **bottom_old,
                                     size_t *size_old);
void __asan_unpoison_memory_region(const volatile void *addr, size_t size);
#endif

struct fiber {
    ucontext_t ctx, caller;
    void (*fn)(void *);
    void *arg;
    uint8_t *map; /* guard page, then the stack */
    size_t maplen;
    int started, done;
    void *fake;               /* ASan: the switched-from stack's fake frames */
    const void *caller_stack; /* ASan: the resumer's stack, to switch back to */
    size_t caller_size;
};

/* Tells ASan the stack about to run (no-op without ASan). */
static void start_switch(void **fake, const void *bottom, size_t size)
{
#ifdef FIBER_ASAN
    __sanitizer_start_switch_fiber(fake, bottom, size);
#else
    (void)fake, (void)bottom, (void)size;
#endif
}

/* Tells ASan the switch is done, learning the stack left (no-op without ASan). */
static void finish_switch(void *fake, const void **bottom_old, size_t *size_old)
{
#ifdef FIBER_ASAN
    __sanitizer_finish_switch_fiber(fake, bottom_old, size_old);
#else
    (void)fake, (void)bottom_old, (void)size_old;
#endif
}

/* swapcontext, as getcontext then setcontext: ASan's swapcontext
 * interceptor prints a warning on every program's stderr, and the switch
 * annotations above are what it needs anyway. */
static void swap(ucontext_t *from, const ucontext_t *to)
{
    volatile int back = 0;
    getcontext(from);
    if (!back) {
        back = 1;
        setcontext(to);
    }
}

/* makecontext passes ints: the pointer travels in two halves. */
static void trampoline(unsigned hi, unsigned lo)
{
    fiber *volatile f = (fiber *)(((uintptr_t)hi << 32) | (uintptr_t)lo);
    finish_switch(NULL, &f->caller_stack, &f->caller_size);
    f->fn(f->arg);
    f->done = 1;
    /* NULL: this stack is finished, ASan may forget its fake frames */
    start_switch(NULL, f->caller_stack, f->caller_size);
    swap(&f->ctx, &f->caller);
}

fiber *fiber_new(void (*fn)(void *arg), void *arg, size_t stack_size)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t len = (stack_size + page - 1) / page * page + page;
    fiber *volatile f = calloc(1, sizeof *f);
    if (!f)
        return NULL;
    f->map =
        mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (f->map == MAP_FAILED) {
        free(f);
        return NULL;
    }
    mprotect(f->map, page, PROT_NONE); /* an overflow faults instead of corrupting */
#ifdef FIBER_ASAN
    /* the mapping may reuse a finished fiber's addresses: forget its poison */
    __asan_unpoison_memory_region(f->map + page, len - page);
#endif
    f->maplen = len;
    f->fn = fn;
    f->arg = arg;
    if (getcontext(&f->ctx) != 0) {
        munmap(f->map, len);
        free(f);
        return NULL;
    }
    f->ctx.uc_stack.ss_sp = f->map + page;
    f->ctx.uc_stack.ss_size = len - page;
    f->ctx.uc_link = NULL;
    uintptr_t p = (uintptr_t)f;
    makecontext(&f->ctx, (void (*)(void))trampoline, 2, (unsigned)(p >> 32),
                (unsigned)(p & 0xffffffffu));
    return f;
}

int fiber_resume(fiber *f)
{
    if (f->done)
        return 0;
    f->started = 1;
    start_switch(&f->fake, f->ctx.uc_stack.ss_sp, f->ctx.uc_stack.ss_size);
    swap(&f->caller, &f->ctx);
    finish_switch(f->fake, NULL, NULL);
    return !f->done;
}

void fiber_yield(fiber *f)
{
    void *fake = NULL;
    start_switch(&fake, f->caller_stack, f->caller_size);
    swap(&f->ctx, &f->caller);
    finish_switch(fake, &f->caller_stack, &f->caller_size);
}

void fiber_free(fiber *f)
{
    if (!f)
        return;
    munmap(f->map, f->maplen);
    free(f);
}
