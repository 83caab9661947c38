/* pool.c: work sharing.  A call runs its workers on `threads` threads, the caller's
 * among them; workers claim items from a shared counter and keep a report each. */
#define _POSIX_C_SOURCE 200112L /* pthreads */
#include <pthread.h>
#include <stdlib.h>
#include "internal.h"

uint64_t tet_claim(uint64_t *counter, uint64_t n)
{
    uint64_t i = __atomic_fetch_add(counter, 1, __ATOMIC_RELAXED);
    return i < n ? i : n;
}

int tet_scratch_open(tet_scratch *s, tet_scratch_kind kind, uint64_t len, tet_report *rep,
                     int *stop)
{
    memset(s, 0, sizeof *s);
    if (kind == TET_SCRATCH_NONE)
        return 1;
    s->buf = malloc(len ? len : 1);
    int ok = s->buf != NULL;
    if (kind == TET_SCRATCH_DECODE)
        ok = (s->dctx = tet_dctx_new()) != NULL && ok;
    else if (kind == TET_SCRATCH_ENCODE)
        ok = (s->cctx = tet_cctx_new()) != NULL && ok;
    else
        ok = (s->ds = tet_dstream_new()) != NULL && ok;
    if (ok)
        return 1;
    tet_scratch_close(s);
    tet_report_fail(rep, TET_ERR_NOMEM, -1, len);
    __atomic_store_n(stop, 1, __ATOMIC_RELAXED);
    return 0;
}

void tet_scratch_close(tet_scratch *s)
{
    free(s->buf);
    tet_dctx_free(s->dctx);
    tet_cctx_free(s->cctx);
    tet_dstream_free(s->ds);
    memset(s, 0, sizeof *s);
}

void tet_report_merge(tet_report *into, const tet_report *from)
{
    if (from->status == TET_OK)
        return;
    if (into->status == TET_OK || (from->chunk >= 0 && from->chunk < into->chunk))
        *into = *from;
}

typedef struct {
    tet_worker_fn work;
    void *ctx;
    uint32_t index;
} thread_arg;

static void *thread_main(void *p)
{
    thread_arg *a = p;
    a->work(a->ctx, a->index);
    return NULL;
}

tet_status tet_parallel(tet_worker_fn work, void *ctx, uint32_t threads, int *stop,
                        tet_report *report)
{
    if (threads < 1)
        threads = 1;
    if (threads > TET_MAX_THREADS)
        threads = TET_MAX_THREADS;
    pthread_t ids[TET_MAX_THREADS];
    thread_arg args[TET_MAX_THREADS];
    uint32_t started = 0;
    int failed = 0;
    for (uint32_t t = 1; t < threads; t++) {
        args[t].work = work;
        args[t].ctx = ctx;
        args[t].index = t;
        failed = pthread_create(&ids[t], NULL, thread_main, &args[t]);
        if (failed != 0)
            break;
        started = t;
    }
    if (failed != 0) /* the workers already running stop at their next item */
        __atomic_store_n(stop, 1, __ATOMIC_RELAXED);
    else
        work(ctx, 0);
    for (uint32_t t = 1; t <= started; t++)
        pthread_join(ids[t], NULL);
    if (failed == 0)
        return TET_OK;
    tet_report_fail(report, TET_ERR_THREAD, -1, (uint64_t)failed);
    return TET_ERR_THREAD;
}
