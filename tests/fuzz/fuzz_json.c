/*
 * fuzz_json.c - libFuzzer target: the JSON check that decides whether a
 * backend's body is spliced into the merged answer (gw_json_valid), and
 * the string quoting the answers use (gw_json_quote).
 *
 * Input: a backend body. Oracles, besides the sanitizers, against jansson
 * (a full parser): what jansson accepts (nesting within
 * GW_JSON_MAX_DEPTH) gw_json_valid must accept; what gw_json_valid
 * accepts, spliced as the merge does ({"part":<body>}), jansson must
 * accept, except for what jansson refuses beyond RFC 8259 (integers or
 * reals it cannot hold, escaped lone surrogates, an escaped NUL). And
 * gw_json_quote's output, when valid, decodes back to the bytes quoted.
 */
#include "json.h"

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Deepest nesting of [ and { outside strings. */
static size_t depth_of(const char *s, size_t n)
{
    size_t d = 0, max = 0;
    bool str = false, esc = false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (str) {
            if (esc)
                esc = false;
            else if (c == '\\')
                esc = true;
            else if (c == '"')
                str = false;
        } else if (c == '"') {
            str = true;
        } else if (c == '[' || c == '{') {
            if (++d > max)
                max = d;
        } else if ((c == ']' || c == '}') && d > 0) {
            d--;
        }
    }
    return max;
}

static bool jansson_beyond_rfc(const json_error_t *e)
{
    return strstr(e->text, "too big") != NULL ||
           strstr(e->text, "overflow") != NULL ||
           strstr(e->text, "nicode") != NULL ||
           strstr(e->text, "\\u0000") != NULL || strstr(e->text, "NUL") != NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    bool ours = gw_json_valid(s, size);
    json_error_t err;
    json_t *j = json_loadb(s, size, JSON_DECODE_ANY, &err);
    if (j != NULL && !ours && depth_of(s, size) <= GW_JSON_MAX_DEPTH &&
        memchr(s, '\0', size) == NULL) {
        fprintf(stderr, "jansson accepts, gw_json_valid refuses\n");
        abort(); /* panic path: the finding */
    }
    json_decref(j);

    if (ours) {
        /* The merge splices the body as a member value. */
        size_t n = size + 8;
        char *doc = malloc(n);
        memcpy(doc, "{\"p\":", 5);
        memcpy(doc + 5, s, size);
        doc[5 + size] = '}';
        j = json_loadb(doc, size + 6, 0, &err);
        if (j == NULL && !jansson_beyond_rfc(&err) &&
            depth_of(s, size) + 1 < 2048) {
            fprintf(stderr, "spliced body refused by jansson: %s\n", err.text);
            abort(); /* panic path: the finding */
        }
        json_decref(j);
        if (!gw_json_valid(doc, size + 6))
            abort(); /* panic path: valid value, invalid member */
        free(doc);
    }

    /* Quoting: the length contract, and validity for UTF-8 input. */
    size_t need = gw_json_quote(NULL, 0, s, size);
    char *q = malloc(need + 1);
    size_t got = gw_json_quote(q, need + 1, s, size);
    if (got != need || strlen(q) != need || need < 2 || q[0] != '"' ||
        q[need - 1] != '"')
        abort(); /* panic path: the finding */
    /* A valid quoted string decodes back to the very bytes quoted. */
    if (gw_json_valid(q, need)) {
        json_t *v = json_loadb(q, need, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
        if (v == NULL) {
            if (!jansson_beyond_rfc(&err)) {
                fprintf(stderr, "quoted string refused: %s\n", err.text);
                abort(); /* panic path: the finding */
            }
        } else {
            if (!json_is_string(v) || json_string_length(v) != size ||
                memcmp(json_string_value(v), s, size) != 0) {
                fprintf(stderr, "quoting changed the bytes\n");
                abort(); /* panic path: the finding */
            }
            json_decref(v);
        }
    }
    free(q);
    return 0;
}
