/* Filling a caller's sf_error. Every failure path goes through here so the
 * message always names what failed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sf_internal.h"

static void fill(sf_error *err, sf_errcat cat, int errnum, uint32_t result, const char *fmt,
                 va_list ap)
{
    if (err == NULL)
        return;
    err->category = cat;
    err->sys_errno = errnum;
    err->result = result;
    vsnprintf(err->message, sizeof(err->message), fmt, ap);
}

int sfi_fail(sf_error *err, sf_errcat cat, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fill(err, cat, 0, 0, fmt, ap);
    va_end(ap);
    return SF_ERR;
}

int sfi_fail_errno(sf_error *err, sf_errcat cat, int errnum, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fill(err, cat, errnum, 0, fmt, ap);
    va_end(ap);
    if (err != NULL && errnum != 0) {
        size_t used = strlen(err->message);
        snprintf(err->message + used, sizeof(err->message) - used, ": %s", strerror(errnum));
    }
    return SF_ERR;
}

int sfi_fail_result(sf_error *err, uint32_t result, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fill(err, SF_E_SERVER, 0, result, fmt, ap);
    va_end(ap);
    if (err != NULL) {
        size_t used = strlen(err->message);
        snprintf(err->message + used, sizeof(err->message) - used, ": %s (0x%02x)",
                 sf_result_name(result), (unsigned)result);
    }
    return SF_ERR;
}

void sfi_error_clear(sf_error *err)
{
    if (err != NULL)
        memset(err, 0, sizeof(*err));
}

const char *sf_version(void)
{
    return SF_VERSION_STRING;
}

void sf_free(void *p)
{
    free(p);
}
