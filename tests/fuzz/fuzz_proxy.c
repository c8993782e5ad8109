/*
 * fuzz_proxy.c - libFuzzer target (e) and (f): the whole gateway with
 * hostile backends, after nginx's OSS-Fuzz harness. One input is split
 * into the client's request and the three backends' replies; the request
 * goes to the real gateway in this process (harness.c), which fans out to
 * the backends; each writes its part of the input as its answer, whatever
 * it is, and closes. Profile is called through libcurl, inventory and
 * pricing through the native client, so both upstream clients parse the
 * replies, and the merge and the JSON check see what they produce.
 *
 * Input layout: sections separated by the line "\n--FFZ--\n": request,
 * then the profile, inventory and pricing replies. A missing section is
 * empty; a missing request is a fixed GET of the fan-out route.
 *
 * Oracle, besides ASan and UBSan: a well-formed answer and a close (no
 * hang), as in fuzz_server.c.
 */
#include "harness.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char sep[] = "\n--FFZ--\n";
static const char default_request[] =
    "GET /api/products/7?user=ann HTTP/1.1\r\nHost: fuzz\r\n\r\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ffz_start(FFZ_BACKEND_SCRIPTED);
    const uint8_t *part[4] = {0};
    size_t len[4] = {0};
    const uint8_t *p = data, *end = data + size;
    for (int i = 0; i < 4 && p <= end; i++) {
        const uint8_t *s = memmem(p, (size_t)(end - p), sep, sizeof sep - 1);
        part[i] = p;
        len[i] = (size_t)((s ? s : end) - p);
        if (s == NULL) {
            p = end + 1;
            break;
        }
        p = s + sizeof sep - 1;
    }
    for (int i = 0; i < 3; i++)
        ffz_set_reply(i, part[i + 1], len[i + 1]);
    if (part[0] == NULL || len[0] == 0)
        ffz_exchange((const uint8_t *)default_request,
                     sizeof default_request - 1);
    else
        ffz_exchange(part[0], len[0]);
    return 0;
}
