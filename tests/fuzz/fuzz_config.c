/*
 * fuzz_config.c - libFuzzer target: configuration loading and validation
 * (gateway/config.c, config_syntax.c) and route compilation
 * (gw_router_new) of every configuration that passes.
 *
 * Input: the configuration's JSON text. Oracle, besides the sanitizers: a
 * refused configuration names at least one problem, each a non-empty
 * line; an accepted one compiles into a router.
 */
#include "config.h"
#include "route.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    gw_config *cfg = NULL;
    gw_config_errors errs = {0};
    int rc = gw_config_parse((const char *)data, size, "/", &cfg, &errs);
    if (rc == 0) {
        if (cfg == NULL || errs.n != 0)
            abort(); /* panic path: accepted without a config */
        gw_router *r = NULL;
        int rrc = gw_router_new(cfg, &r);
        if (rrc != 0 && rrc != -ENOMEM) {
            fprintf(stderr, "valid config, router refused: %d\n", rrc);
            abort(); /* panic path: the finding */
        }
        gw_router_free(r);
        gw_config_free(cfg);
    } else {
        if (cfg != NULL)
            abort(); /* panic path */
        if (rc == -EINVAL && errs.n == 0) {
            fprintf(stderr, "refused without a message\n");
            abort(); /* panic path: the finding */
        }
        for (size_t i = 0; i < errs.n; i++)
            if (errs.msgs[i] == NULL || errs.msgs[i][0] == '\0' ||
                strchr(errs.msgs[i], '\n') != NULL) {
                fprintf(stderr, "bad message %zu\n", i);
                abort(); /* panic path: the finding */
            }
    }
    gw_config_errors_free(&errs);
    return 0;
}
