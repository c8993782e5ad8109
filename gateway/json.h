/*
 * json.h - the little JSON the request path needs, without a parser
 * tree: checking that a backend's body is one JSON value before it is
 * spliced into the merged answer, and writing string literals.
 *
 * gw_json_valid() is an iterative state machine (no recursion, so a
 * hostile body cannot run a goroutine's stack out) with a nesting cap:
 * deeper than GW_JSON_MAX_DEPTH is "invalid json". It checks RFC 8259's
 * grammar and that strings are well-formed UTF-8 (RFC 3629: no overlong
 * forms, no surrogates encoded directly, nothing above U+10FFFF), so the
 * merged answer is valid JSON whatever a backend sends.
 */
#ifndef GW_JSON_H
#define GW_JSON_H

#include <stdbool.h>
#include <stddef.h>

/* Arrays and objects nested deeper than this are refused. */
#define GW_JSON_MAX_DEPTH 512

/* Is s[0, len) exactly one JSON value, with optional whitespace around
 * it? An empty or all-whitespace buffer is not. */
bool gw_json_valid(const char *s, size_t len);

/*
 * Write s[0, len) as a JSON string literal (with the quotes) into out,
 * which has room for cap bytes; like snprintf, returns the length the
 * whole literal needs and writes as much as fits, NUL-terminated when cap
 * > 0. Escapes '"', '\\' and every byte below 0x20; other bytes are
 * copied (the caller passes UTF-8: names from the configuration, fixed
 * reason strings).
 */
size_t gw_json_quote(char *out, size_t cap, const char *s, size_t len);

#endif /* GW_JSON_H */
