/*
 * json.c - JSON validation and string literals (see json.h).
 *
 * The validator walks the bytes once with an explicit state and a stack
 * of open containers kept as one bit per level (array 0, object 1) in a
 * fixed array: GW_JSON_MAX_DEPTH / 8 bytes on the caller's stack, and no
 * recursion, whatever the input. States say what may come next:
 *
 *   VALUE          a value (top level, after ',' in an array, after ':')
 *   VALUE_OR_END   a value or ']' (just after '[')
 *   KEY_OR_END     a key or '}' (just after '{')
 *   KEY            a key (after ',' in an object)
 *   COLON          ':' after a key
 *   AFTER          after a value: ',' or the closing bracket of the
 *                  innermost container, or the end of input at depth 0
 *
 * Whitespace (space, tab, LF, CR) may come between any two tokens.
 * Strings, numbers and the three literals are scanned as whole tokens;
 * whatever follows a token is judged by the AFTER state, so "01", "1a"
 * and "truex" are refused there.
 */
#include "json.h"

#include <stdint.h>
#include <string.h>

enum state { VALUE, VALUE_OR_END, KEY_OR_END, KEY, COLON, AFTER };

static bool is_ws(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static bool is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static bool is_hex(unsigned char c)
{
    return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* n continuation bytes (10xxxxxx) at s[*j]; the first one within
 * [lo, hi] (narrower than 80..BF after E0, ED, F0 and F4). */
static bool utf8_tail(const unsigned char *s, size_t len, size_t *j, int n,
                      unsigned char lo, unsigned char hi)
{
    if (len - *j < (size_t)n)
        return false;
    if (s[*j] < lo || s[*j] > hi)
        return false;
    for (int k = 1; k < n; k++)
        if ((s[*j + (size_t)k] & 0xC0) != 0x80)
            return false;
    *j += (size_t)n;
    return true;
}

/* One UTF-8 sequence of 2-4 bytes starting with lead c at s[*j - 1]. */
static bool utf8_seq(const unsigned char *s, size_t len, size_t *j,
                     unsigned char c)
{
    if (c >= 0xC2 && c <= 0xDF)
        return utf8_tail(s, len, j, 1, 0x80, 0xBF);
    if (c == 0xE0)
        return utf8_tail(s, len, j, 2, 0xA0, 0xBF);
    if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF)
        return utf8_tail(s, len, j, 2, 0x80, 0xBF);
    if (c == 0xED) /* no UTF-16 surrogates */
        return utf8_tail(s, len, j, 2, 0x80, 0x9F);
    if (c == 0xF0)
        return utf8_tail(s, len, j, 3, 0x90, 0xBF);
    if (c >= 0xF1 && c <= 0xF3)
        return utf8_tail(s, len, j, 3, 0x80, 0xBF);
    if (c == 0xF4) /* up to U+10FFFF */
        return utf8_tail(s, len, j, 3, 0x80, 0x8F);
    return false;
}

/* A string token; s[*i] is the opening quote. */
static bool scan_string(const unsigned char *s, size_t len, size_t *i)
{
    size_t j = *i + 1;
    while (j < len) {
        unsigned char c = s[j++];
        if (c == '"') {
            *i = j;
            return true;
        }
        if (c == '\\') {
            if (j >= len)
                return false;
            c = s[j++];
            if (c == 'u') {
                if (len - j < 4 || !is_hex(s[j]) || !is_hex(s[j + 1]) ||
                    !is_hex(s[j + 2]) || !is_hex(s[j + 3]))
                    return false;
                j += 4;
            } else if (strchr("\"\\/bfnrt", c) == NULL || c == '\0') {
                return false;
            }
        } else if (c < 0x20) {
            return false;
        } else if (c >= 0x80 && !utf8_seq(s, len, &j, c)) {
            return false;
        }
    }
    return false; /* unterminated */
}

/* A number token; s[*i] is '-' or a digit. */
static bool scan_number(const unsigned char *s, size_t len, size_t *i)
{
    size_t j = *i;
    if (s[j] == '-')
        j++;
    if (j >= len)
        return false;
    if (s[j] == '0') {
        j++;
    } else if (s[j] >= '1' && s[j] <= '9') {
        while (j < len && is_digit(s[j]))
            j++;
    } else {
        return false;
    }
    if (j < len && s[j] == '.') {
        j++;
        if (j >= len || !is_digit(s[j]))
            return false;
        while (j < len && is_digit(s[j]))
            j++;
    }
    if (j < len && (s[j] == 'e' || s[j] == 'E')) {
        j++;
        if (j < len && (s[j] == '+' || s[j] == '-'))
            j++;
        if (j >= len || !is_digit(s[j]))
            return false;
        while (j < len && is_digit(s[j]))
            j++;
    }
    *i = j;
    return true;
}

static bool scan_literal(const unsigned char *s, size_t len, size_t *i)
{
    static const char *const lits[] = {"true", "false", "null"};
    for (size_t k = 0; k < sizeof lits / sizeof lits[0]; k++) {
        size_t n = strlen(lits[k]);
        if (len - *i >= n && memcmp(s + *i, lits[k], n) == 0) {
            *i += n;
            return true;
        }
    }
    return false;
}

bool gw_json_valid(const char *str, size_t len)
{
    const unsigned char *s = (const unsigned char *)str;
    unsigned char stack[GW_JSON_MAX_DEPTH / 8]; /* bit set: object */
    size_t depth = 0, i = 0;
    enum state st = VALUE;

    for (;;) {
        while (i < len && is_ws(s[i]))
            i++;
        if (i == len)
            return st == AFTER && depth == 0;
        unsigned char c = s[i];
        bool in_object =
            depth > 0 && (stack[(depth - 1) / 8] >> ((depth - 1) % 8)) & 1;
        switch (st) {
        case VALUE_OR_END:
            if (c == ']') {
                depth--;
                i++;
                st = AFTER;
                continue;
            }
            /* fall through */
        case VALUE:
            if (c == '{' || c == '[') {
                if (depth == GW_JSON_MAX_DEPTH)
                    return false;
                unsigned char bit = (unsigned char)(1u << (depth % 8));
                if (c == '{')
                    stack[depth / 8] |= bit;
                else
                    stack[depth / 8] &= (unsigned char)~bit;
                depth++;
                i++;
                st = c == '{' ? KEY_OR_END : VALUE_OR_END;
                continue;
            }
            if (c == '"') {
                if (!scan_string(s, len, &i))
                    return false;
            } else if (c == '-' || is_digit(c)) {
                if (!scan_number(s, len, &i))
                    return false;
            } else if (!scan_literal(s, len, &i)) {
                return false;
            }
            st = AFTER;
            continue;
        case KEY_OR_END:
            if (c == '}') {
                depth--;
                i++;
                st = AFTER;
                continue;
            }
            /* fall through */
        case KEY:
            if (c != '"' || !scan_string(s, len, &i))
                return false;
            st = COLON;
            continue;
        case COLON:
            if (c != ':')
                return false;
            i++;
            st = VALUE;
            continue;
        case AFTER:
            if (depth == 0)
                return false; /* something after the value */
            if (c == ',') {
                st = in_object ? KEY : VALUE;
            } else if (c == (in_object ? '}' : ']')) {
                depth--;
            } else {
                return false;
            }
            i++;
            continue;
        }
    }
}

size_t gw_json_quote(char *out, size_t cap, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    size_t n = 0;
#define PUT(ch)                                                                \
    do {                                                                       \
        if (n + 1 < cap)                                                       \
            out[n] = (ch);                                                     \
        n++;                                                                   \
    } while (0)
    PUT('"');
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            PUT('\\');
            PUT((char)c);
        } else if (c < 0x20) {
            PUT('\\');
            PUT('u');
            PUT('0');
            PUT('0');
            PUT(hex[c >> 4]);
            PUT(hex[c & 15]);
        } else {
            PUT((char)c);
        }
    }
    PUT('"');
#undef PUT
    if (cap > 0)
        out[n < cap ? n : cap - 1] = '\0';
    return n;
}
