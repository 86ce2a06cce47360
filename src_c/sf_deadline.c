/*
 * Deadlines: the one clock every wait inside a public call shares, so that
 * a call ends within its io_timeout, retries and cleanup included.
 */
#include <time.h>

#include "sf_internal.h"

int64_t sfi_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* One deadline per call: every wait inside a public call (connecting, each
 * reply, a resend elsewhere, checking copies) shares what is left of it.
 * Scopes nest, and an inner one never extends an outer one. 0: none. */
static __thread int64_t call_deadline_ms;

int64_t sf_deadline_begin(int timeout_ms)
{
    int64_t saved = call_deadline_ms;
    int64_t mine = sfi_now_ms() + (timeout_ms > 0 ? timeout_ms : 0);
    if (saved == 0 || mine < saved)
        call_deadline_ms = mine;
    return saved;
}

void sf_deadline_end(int64_t saved)
{
    call_deadline_ms = saved;
}

int64_t sfi_grace_begin(const sf_cluster *cl)
{
    int64_t saved = call_deadline_ms;
    int ms = cl->io_timeout_ms < SF_GRACE_MS ? cl->io_timeout_ms : SF_GRACE_MS;
    call_deadline_ms = sfi_now_ms() + ms;
    return saved;
}

int64_t sfi_call_begin(const sf_cluster *cl)
{
    return sf_deadline_begin(cl->io_timeout_ms);
}

int sfi_time_left_ms(const sf_cluster *cl)
{
    if (call_deadline_ms == 0)
        return cl->io_timeout_ms;
    int64_t left = call_deadline_ms - sfi_now_ms();
    return left > 0 ? (int)left : 0;
}
