/*
 * test_json.c - the backend-body check and JSON string literals: every
 * value kind, the grammar's edges, UTF-8 rules, the nesting cap, deep
 * input on a small stack, and quoting.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "json.h"

static bool valid(const char *s)
{
    return gw_json_valid(s, strlen(s));
}

static void test_values(void **state)
{
    (void)state;
    static const char *const good[] = {
        "{}",
        "[]",
        "0",
        "-0",
        "1.5",
        "-1.5e10",
        "1E+2",
        "2e-3",
        "\"\"",
        "\"a\"",
        "true",
        "false",
        "null",
        " {\"a\":1} ",
        "\n[1, 2 ,3]\r\n",
        "{\"a\":{\"b\":[true,false,null,{\"c\":\"d\"}]}}",
        "[[[[]]]]",
        "{\"id\":\"7\",\"in_stock\":true,\"quantity\":42}",
        "\"\\u00e9\"",
        "\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"",
        "[{}, [], \"\", 0]",
        "\"caf\xc3\xa9\"",
        "\"\xe2\x82\xac\"",
        "\"\xf0\x9f\x98\x80\"",
        "123456789012345678901234567890"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        if (!valid(good[i]))
            fail_msg("refused: %s", good[i]);
}

static void test_invalid(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",
        " ",
        "{",
        "}",
        "[",
        "]",
        "[1,]",
        "[,1]",
        "{\"a\"}",
        "{\"a\":}",
        "{\"a\":1,}",
        "{a:1}",
        "{'a':1}",
        "01",
        "1.",
        ".5",
        "-",
        "+1",
        "1e",
        "1e+",
        "0x10",
        "1a",
        "tru",
        "truex",
        "nul",
        "True",
        "NaN",
        "Infinity",
        "\"",
        "\"abc",
        "\"a\\x\"",
        "\"\\u12\"",
        "\"\\u12g4\"",
        "\"tab\there\"",
        "\"nl\nhere\"",
        "{} {}",
        "[] 1",
        "1 2",
        "[1 2]",
        "{\"a\":1 \"b\":2}",
        "[}",
        "{]",
        "{\"a\":1]",
        "<html>",
        "\"\xc0\xaf\"",         /* overlong '/' */
        "\"\xe0\x80\xaf\"",     /* overlong */
        "\"\xed\xa0\x80\"",     /* a surrogate, encoded */
        "\"\xf4\x90\x80\x80\"", /* above U+10FFFF */
        "\"\xc3\"",             /* truncated */
        "\"\x80\"",             /* a lone continuation byte */
        "\"\xff\""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (valid(bad[i]))
            fail_msg("accepted: %s", bad[i]);
    /* A NUL inside is not JSON (strings are UTF-8 text without controls;
     * outside strings NUL is no token). */
    assert_false(gw_json_valid("[1]\0", 4));
    assert_false(gw_json_valid("\"a\0b\"", 5));
}

static char *nested(size_t depth, char open, char close)
{
    char *s = malloc(2 * depth + 1);
    assert_non_null(s);
    memset(s, open, depth);
    memset(s + depth, close, depth);
    s[2 * depth] = '\0';
    return s;
}

/* Up to the cap is fine; beyond it is refused, and a million levels cost
 * nothing but time: no recursion. */
static void test_depth(void **state)
{
    (void)state;
    char *s = nested(GW_JSON_MAX_DEPTH, '[', ']');
    assert_true(valid(s));
    free(s);
    s = nested(GW_JSON_MAX_DEPTH + 1, '[', ']');
    assert_false(valid(s));
    free(s);
    s = nested(1000000, '[', ']');
    assert_false(valid(s));
    free(s);
    /* Mixed objects and arrays at the cap. */
    size_t d = GW_JSON_MAX_DEPTH;
    char *m = malloc(d * 6 + 2);
    assert_non_null(m);
    size_t n = 0;
    for (size_t i = 0; i < d; i++) {
        if (i % 2 == 0) {
            memcpy(m + n, "{\"k\":", 5);
            n += 5;
        } else {
            m[n++] = '[';
        }
    }
    m[n++] = '1';
    for (size_t i = d; i-- > 0;)
        m[n++] = i % 2 == 0 ? '}' : ']';
    assert_true(gw_json_valid(m, n));
    m[n - 1] = ']'; /* the wrong closer */
    assert_false(gw_json_valid(m, n));
    free(m);
}

static void test_quote(void **state)
{
    (void)state;
    char buf[64];
    assert_int_equal(gw_json_quote(buf, sizeof buf, "pricing", 7), 9);
    assert_string_equal(buf, "\"pricing\"");
    size_t n = gw_json_quote(buf, sizeof buf, "a\"b\\c\n\x01", 7);
    assert_string_equal(buf, "\"a\\\"b\\\\c\\u000a\\u0001\"");
    assert_int_equal(n, strlen(buf));
    assert_true(gw_json_valid(buf, n));
    /* Too small: truncated, NUL-terminated, the full length returned. */
    char small[4];
    assert_int_equal(gw_json_quote(small, sizeof small, "abcdef", 6), 8);
    assert_string_equal(small, "\"ab");
    assert_int_equal(gw_json_quote(NULL, 0, "x", 1), 3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_values),
        cmocka_unit_test(test_invalid),
        cmocka_unit_test(test_depth),
        cmocka_unit_test(test_quote),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
