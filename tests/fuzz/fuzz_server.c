/*
 * fuzz_server.c - libFuzzer target (a): the server end to end. The input
 * is what one client sends on one connection (pipelined requests, any
 * bytes); it goes to the real gateway in this process (harness.c) over a
 * loopback connection, through accept, the connection goroutine, the
 * parser, routing, the fan-out to mock backends that answer a fixed JSON
 * body, the merge and the answer.
 *
 * Oracle, besides ASan and UBSan: the gateway answers with well-formed
 * HTTP/1.1 and closes the connection once the client has closed its side
 * (no hang), and keeps accepting connections (no crash, no lost thread).
 */
#include "harness.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ffz_start(FFZ_BACKEND_FIXED);
    ffz_exchange(data, size);
    return 0;
}
