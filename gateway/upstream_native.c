/* upstream_native.c — placeholder until the native client lands. */
#include "upstream_internal.h"

#include <errno.h>

int gw__upstream_native_new(const gw_upstream_opts *opts, gw_upstream **out)
{
    (void)opts;
    *out = NULL;
    return -EINVAL;
}
