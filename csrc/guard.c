/* guard.c: a file truncated while it is mapped must not kill the reader.
 *
 * `tet` reads a .tet file through a read-only shared mapping.  If another process
 * truncates the file (or truncates and rewrites it in place), touching a mapped page
 * that now lies past the end of the file raises SIGBUS, whose default action ends the
 * process: inside the kernels, inside NumPy, inside Python's own struct/bytes code
 * while the catalog is parsed.  Layout v1 does not support reading a file while it is
 * rewritten, but a reader must report that as an error, never crash.
 *
 * So the reader registers each mapping here (`tet_guard_add`).  A SIGBUS handler checks
 * whether the faulting address lies in a registered mapping; if so it maps anonymous
 * zero pages over the rest of that mapping (from the faulting page to its end, with
 * MAP_FIXED, so one fault covers the whole truncated tail), raises the mapping's "hit"
 * flag and returns: the faulting access is retried and reads zeros.  After every
 * operation that touched the mapping the reader checks the flag (`tet_guard_hit`, one
 * load) and, when it is set, discards what it read and raises FileChangedError.  The
 * flag stays set: a file once seen changing is not read again through that mapping.
 *
 * A fault anywhere else is not ours: it goes to the handler installed before this one
 * (Python's faulthandler, a sanitizer's, or the default action, which ends the process
 * with SIGBUS as it would without tet).  That handler is called directly, so this one
 * stays in charge and can tell when it comes straight back: the same fault again (the
 * previous handler did not fix it; faulthandler after `disable()` returns at once) or
 * a SIGBUS sent by raise/kill after a fault was passed on (faulthandler re-raises after
 * restoring its own predecessor, which may be this handler) ends the process with the
 * default action instead of looping.  Each registration reinstalls the handler when
 * something replaced it (faulthandler enabled after tet was imported), keeping the
 * replaced one as the handler to pass foreign faults to.
 *
 * Under AddressSanitizer (`make asan` preloads its runtime, which installs a SIGBUS
 * handler at start-up and lets programs install their own), ASan's handler is the one
 * foreign faults are passed to: it reports them and aborts, as without tet.
 *
 * The handler is async-signal-safe in spirit: it takes no locks, allocates nothing,
 * and calls only mmap, sigaction and raise.  The table is a fixed array whose slots
 * are claimed and released with atomic operations.  Where POSIX signals are missing
 * (Windows), every function is a no-op that reports "not guarded".
 */
#if defined(__APPLE__)
#define _DARWIN_C_SOURCE 1      /* MAP_ANON, SA_ONSTACK */
#else
#define _DEFAULT_SOURCE 1       /* MAP_ANONYMOUS, sigaction, siginfo_t under -std=c99 */
#define _POSIX_C_SOURCE 200809L
#endif
#include <stdint.h>
#include "tet.h"

#if defined(__unix__) || defined(__APPLE__)
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#if !defined(MAP_ANONYMOUS) && defined(MAP_ANON)
#define MAP_ANONYMOUS MAP_ANON
#endif

/* Slot states: a slot is matched by the handler only while LIVE. */
#define SLOT_FREE 0u
#define SLOT_BUSY 1u            /* being filled in or emptied */
#define SLOT_LIVE 2u

typedef struct {
    uint32_t state;
    uint32_t hit;
    uintptr_t base;             /* page-aligned start of the mapping */
    uintptr_t end;              /* base + length rounded up to whole pages */
} guard_slot;

static guard_slot slots[TET_GUARD_SLOTS];
static uint32_t slots_used;     /* high-water mark: the handler scans [0, slots_used) */
static uint64_t absorbed;       /* faults turned into zero pages (a test hook) */
static uintptr_t page_size;

static struct sigaction previous;   /* what was installed before us */
static volatile sig_atomic_t passed;    /* a foreign signal was passed to `previous` */
static volatile uintptr_t passed_addr;   /* ... at this address (0: sent, not a fault) */

static void guard_handler(int sig, siginfo_t *info, void *context);

static int handler_is_ours(const struct sigaction *sa)
{
    return (sa->sa_flags & SA_SIGINFO) && sa->sa_sigaction == guard_handler;
}

static void die_by_default(int sig, const siginfo_t *info)
{
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    sigaction(sig, &dfl, NULL);
    /* A fault re-executes on return and now takes the default action; a signal sent
     * by raise or kill would not come again, so it is sent once more (it is blocked
     * while this handler runs and arrives as it returns). */
    if (info == NULL || info->si_code <= 0)
        raise(sig);
}

/* Hand a signal that is not ours to whoever had it before. */
static void pass_on(int sig, siginfo_t *info, void *context)
{
    struct sigaction prev = previous;
    int fault = info != NULL && info->si_code > 0;
    uintptr_t addr = fault ? (uintptr_t)info->si_addr : 0;
    if (passed && (!fault || addr == passed_addr)) {
        die_by_default(sig, info);  /* it came back: the previous handler gave up */
        return;
    }
    passed = 1;
    passed_addr = addr;
    if (prev.sa_flags & SA_SIGINFO) {
        if (prev.sa_sigaction == NULL || prev.sa_sigaction == guard_handler) {
            die_by_default(sig, info);
            return;
        }
        prev.sa_sigaction(sig, info, context);
    } else if (prev.sa_handler == SIG_DFL || prev.sa_handler == SIG_IGN) {
        die_by_default(sig, info);  /* a fault cannot be ignored: the default it is */
    } else {
        prev.sa_handler(sig);
    }
    /* The previous handler returned: a fault is retried (and comes back here if it
     * was not fixed); `passed` stays set so a re-sent signal is not passed on again. */
}

static void guard_handler(int sig, siginfo_t *info, void *context)
{
    int saved = errno;
    uint32_t i, n;
    int ours = 0;
    if (info != NULL && info->si_code > 0 && page_size != 0) {
        uintptr_t addr = (uintptr_t)info->si_addr;
        n = __atomic_load_n(&slots_used, __ATOMIC_ACQUIRE);
        for (i = 0; i < n; i++) {
            guard_slot *s = &slots[i];
            uintptr_t page, base, end;
            void *got;
            if (__atomic_load_n(&s->state, __ATOMIC_ACQUIRE) != SLOT_LIVE)
                continue;
            base = s->base;
            end = s->end;
            if (addr < base || addr >= end)
                continue;
            page = addr & ~(page_size - 1);
            got = mmap((void *)page, (size_t)(end - page), PROT_READ,
                       MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (got == MAP_FAILED)
                continue;   /* nothing replaced: the fault cannot be absorbed */
            /* Every live slot covering the address is told (there is normally one:
             * a slot is released before its mapping is unmapped). */
            __atomic_store_n(&s->hit, 1u, __ATOMIC_RELEASE);
            ours = 1;
        }
    }
    if (ours) {
        __atomic_fetch_add(&absorbed, 1, __ATOMIC_RELAXED);
        errno = saved;
        return;
    }
    pass_on(sig, info, context);
    errno = saved;
}

int32_t tet_guard_install(void)
{
    struct sigaction now, ours, before;
    if (page_size == 0) {
        long p = sysconf(_SC_PAGESIZE);
        if (p <= 0 || (p & (p - 1)) != 0)
            return -1;
        page_size = (uintptr_t)p;
    }
    if (sigaction(SIGBUS, NULL, &now) != 0)
        return -1;
    if (handler_is_ours(&now))
        return 0;
    memset(&ours, 0, sizeof ours);
    ours.sa_sigaction = guard_handler;
    ours.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&ours.sa_mask);
    if (sigaction(SIGBUS, &ours, &before) != 0)
        return -1;
    if (!handler_is_ours(&before))
        previous = before;
    passed = 0;
    return 0;
}

int64_t tet_guard_add(const uint8_t *base, uint64_t len)
{
    uintptr_t b = (uintptr_t)base, end;
    uint32_t i, n, expect;
    if (base == NULL || len == 0 || tet_guard_install() != 0)
        return -1;
    if ((b & (page_size - 1)) != 0 || len > UINTPTR_MAX - b - page_size)
        return -1;
    end = (b + (uintptr_t)len + page_size - 1) & ~(page_size - 1);
    for (i = 0; i < TET_GUARD_SLOTS; i++) {
        expect = SLOT_FREE;
        if (!__atomic_compare_exchange_n(&slots[i].state, &expect, SLOT_BUSY, 0,
                                         __ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
            continue;
        slots[i].base = b;
        slots[i].end = end;
        __atomic_store_n(&slots[i].hit, 0u, __ATOMIC_RELAXED);
        __atomic_store_n(&slots[i].state, SLOT_LIVE, __ATOMIC_RELEASE);
        n = __atomic_load_n(&slots_used, __ATOMIC_RELAXED);
        while (n < i + 1 && !__atomic_compare_exchange_n(&slots_used, &n, i + 1, 1,
                                                         __ATOMIC_ACQ_REL,
                                                         __ATOMIC_RELAXED)) {
        }
        return (int64_t)i;
    }
    return -1;  /* table full: the mapping is read unguarded */
}

uint32_t tet_guard_hit(int64_t slot)
{
    if (slot < 0 || slot >= TET_GUARD_SLOTS)
        return 0;
    return __atomic_load_n(&slots[slot].hit, __ATOMIC_ACQUIRE);
}

void tet_guard_remove(int64_t slot)
{
    guard_slot *s;
    if (slot < 0 || slot >= TET_GUARD_SLOTS)
        return;
    s = &slots[slot];
    __atomic_store_n(&s->state, SLOT_BUSY, __ATOMIC_RELEASE);
    s->base = 0;
    s->end = 0;
    __atomic_store_n(&s->state, SLOT_FREE, __ATOMIC_RELEASE);
}

uint64_t tet_guard_absorbed(void)
{
    return __atomic_load_n(&absorbed, __ATOMIC_RELAXED);
}

int32_t tet_guard_supported(void)
{
    return 1;
}

#else /* no POSIX signals: nothing is guarded */

int32_t tet_guard_install(void) { return 1; }
int64_t tet_guard_add(const uint8_t *base, uint64_t len) { (void)base; (void)len; return -1; }
uint32_t tet_guard_hit(int64_t slot) { (void)slot; return 0; }
void tet_guard_remove(int64_t slot) { (void)slot; }
uint64_t tet_guard_absorbed(void) { return 0; }
int32_t tet_guard_supported(void) { return 0; }

#endif
