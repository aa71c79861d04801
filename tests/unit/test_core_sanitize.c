/* test_core_sanitize.c - guards core/sanitize.c: every untrusted tag value
 * becomes one safe path component (table of hostile inputs + a property check
 * over random byte strings). */
#include "sanitize.h"
#include "tap.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

typedef struct {
    const char *in;
    size_t len;           /* 0 = strlen(in) unless in is "" */
    size_t max;
    const char *fallback;
    const char *want;
} tcase;

#define S(lit) lit, sizeof(lit) - 1

static const tcase cases[] = {
    /* path syntax */
    { S("/"), 255, "unknown", "_" },
    { S(".."), 255, "unknown", "unknown" },
    { S("."), 255, "unknown", "unknown" },
    { S(""), 255, "unknown", "unknown" },
    { S("..."), 255, "unknown", "unknown" },
    { S("../../etc/passwd"), 255, "x", ".._.._etc_passwd" },
    { S("a/b"), 255, "x", "a_b" },
    { S("a\\b"), 255, "x", "a_b" },
    { S("/.."), 255, "x", "_" },
    { S(". ."), 255, "x", "x" },
    { S(".hidden"), 255, "x", ".hidden" },
    /* NUL and controls */
    { S("a\0b"), 255, "x", "a_b" },
    { S("\0"), 255, "x", "x" },
    { S("\0abc"), 255, "x", "_abc" },
    { S("tab\there"), 255, "x", "tab_here" },
    { S("line\nbreak\r"), 255, "x", "line_break_" },
    { S("esc\x1b[31m"), 255, "x", "esc_[31m" },
    { S("del\x7f"), 255, "x", "del_" },
    { S("c1\xc2\x85x"), 255, "x", "c1_x" },          /* U+0085 NEL */
    { S("\xc2\xa0nbsp"), 255, "x", "\xc2\xa0nbsp" }, /* U+00A0 is printable */
    /* Windows / SMB */
    { S("<>:\"|?*"), 255, "x", "_______" },
    { S("CT: head?"), 255, "x", "CT_ head_" },
    { S("a*b|c"), 255, "x", "a_b_c" },
    /* DICOM padding, spaces, dots */
    { S("DOE^JOHN  "), 255, "x", "DOE^JOHN" },
    { S("DOE^JOHN\0"), 255, "x", "DOE^JOHN" },
    { S("DOE^JOHN \0 \0"), 255, "x", "DOE^JOHN" },
    { S("   lead"), 255, "x", "lead" },
    { S("trail..."), 255, "x", "trail" },
    { S("trail. . ."), 255, "x", "trail" },
    { S("mid.dle"), 255, "x", "mid.dle" },
    { S("    "), 255, "unknown", "unknown" },
    { S("a  b"), 255, "x", "a  b" },
    /* .WORKING must never come from user data */
    { S("x.WORKING"), 255, "x", "x_WORKING" },
    { S(".WORKING"), 255, "x", "_WORKING" },
    { S("x.WORKING."), 255, "x", "x_WORKING" },
    { S("x.working"), 255, "x", "x.working" },
    { S("x.WORKING2"), 255, "x", "x.WORKING2" },
    { S("abcdefghij.WORKINGzzz"), 18, "x", "abcdefghij_WORKING" },
    /* invalid UTF-8 */
    { S("\xff"), 255, "x", "_" },
    { S("a\x80z"), 255, "x", "a_z" },
    { S("\xc0\xaf"), 255, "x", "__" },                 /* overlong '/' */
    { S("\xe0\x80\xaf"), 255, "x", "___" },            /* overlong '/' */
    { S("\xed\xa0\x80"), 255, "x", "___" },            /* surrogate D800 */
    { S("\xf4\x90\x80\x80"), 255, "x", "____" },       /* > U+10FFFF */
    { S("\xf5\x80\x80\x80"), 255, "x", "____" },
    { S("ab\xe3\x81"), 255, "x", "ab__" },             /* truncated sequence */
    { S("\xe3\x81z"), 255, "x", "__z" },
    /* non-Latin text kept */
    { S("\xe5\xb1\xb1\xe7\x94\xb0^\xe5\xa4\xaa\xe9\x83\x8e"), 255, "x",
      "\xe5\xb1\xb1\xe7\x94\xb0^\xe5\xa4\xaa\xe9\x83\x8e" },               /* 山田^太郎 */
    { S("\xce\x9a\xcf\x89\xce\xbd\xcf\x83\xcf\x84\xce\xb1\xce\xbd\xcf\x84\xce\xaf\xce\xbd\xce\xbf\xcf\x82"),
      255, "x",
      "\xce\x9a\xcf\x89\xce\xbd\xcf\x83\xcf\x84\xce\xb1\xce\xbd\xcf\x84\xce\xaf\xce\xbd\xce\xbf\xcf\x82" },
    { S("\xd9\x85\xd8\xad\xd9\x85\xd8\xaf"), 255, "x", "\xd9\x85\xd8\xad\xd9\x85\xd8\xaf" }, /* محمد */
    { S("\xf0\x9f\x98\x80 smile"), 255, "x", "\xf0\x9f\x98\x80 smile" },
    { S("\xef\xbb\xbf" "bom"), 255, "x", "\xef\xbb\xbf" "bom" },
    /* length limits, cut on a boundary */
    { S("abcdef"), 3, "x", "abc" },
    { S("ab\xe3\x81\x82"), 4, "x", "ab" },             /* 3-byte char does not fit */
    { S("ab\xe3\x81\x82"), 5, "x", "ab\xe3\x81\x82" },
    { S("\xf0\x9f\x98\x80\xf0\x9f\x98\x80"), 7, "x", "\xf0\x9f\x98\x80" },
    { S("ab cd"), 3, "x", "ab" },                     /* cut exposes a space */
    { S("ab.cd"), 3, "x", "ab" },                     /* cut exposes a dot */
    { S("abc"), 300, "x", "abc" },                    /* max is clamped to 255 */
    /* fallback itself is sanitised */
    { S(""), 255, "a/b", "a_b" },
    { S(""), 255, "..", "_" },
    { S(""), 255, NULL, "_" },
    { S("   "), 3, "unknown", "unk" },
};

static int valid_utf8(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        unsigned c = p[i];
        size_t len, k;
        uint32_t cp;
        if (c < 0x80) { i++; continue; }
        if ((c & 0xE0) == 0xC0) { len = 2; cp = c & 0x1F; }
        else if ((c & 0xF0) == 0xE0) { len = 3; cp = c & 0x0F; }
        else if ((c & 0xF8) == 0xF0) { len = 4; cp = c & 0x07; }
        else return 0;
        if (i + len > n) return 0;
        for (k = 1; k < len; k++) {
            if ((p[i + k] & 0xC0) != 0x80) return 0;
            cp = (cp << 6) | (p[i + k] & 0x3F);
        }
        if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000))
            return 0;
        if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        i += len;
    }
    return 1;
}

/* Returns NULL when s satisfies every promise, else what is wrong. */
static const char *violation(const char *s, size_t n, size_t max)
{
    size_t i;
    if (n != strlen(s)) return "length mismatch / embedded NUL";
    if (n == 0) return "empty";
    if (n > max) return "too long";
    if (!strcmp(s, ".") || !strcmp(s, "..")) return "dot name";
    if (!valid_utf8(s, n)) return "invalid UTF-8";
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f || strchr("/\\<>:\"|?*", c))
            return "forbidden byte";
    }
    if (s[0] == ' ') return "leading space";
    if (s[n - 1] == ' ' || s[n - 1] == '.') return "trailing space or dot";
    if (n >= 8 && !memcmp(s + n - 8, ".WORKING", 8)) return ".WORKING suffix";
    return NULL;
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rnd(void)
{
    /* xorshift64*: deterministic so a failure can be reproduced */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ull;
}

static void test_table(void)
{
    size_t i;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const tcase *t = &cases[i];
        char out[AR_NAME_MAX + 1];
        size_t n = ar_sanitize_component(t->in, t->len, t->fallback, out, t->max);
        CHECK(n == strlen(t->want) && memcmp(out, t->want, n) == 0 && out[n] == '\0',
              "case %zu: got '%s' want '%s'", i, out, t->want);
    }
    CHECK(sizeof(cases) / sizeof(cases[0]) >= 40, "at least 40 cases");
}

static void test_long_utf8(void)
{
    /* 300 bytes of 3-byte characters: 100 x U+3042 */
    char in[301], out[AR_NAME_MAX + 1];
    size_t i, n;
    for (i = 0; i < 100; i++)
        memcpy(in + 3 * i, "\xe3\x81\x82", 3);
    in[300] = '\0';
    n = ar_sanitize_component(in, 300, "x", out, AR_NAME_MAX);
    CHECK_INT(n, 255);                  /* 85 whole characters */
    CHECK(valid_utf8(out, n), "long Japanese name cut on a boundary");

    /* 300 bytes of 2-byte characters: 255 is odd, so 254 bytes */
    for (i = 0; i < 150; i++)
        memcpy(in + 2 * i, "\xce\xb1", 2);
    n = ar_sanitize_component(in, 300, "x", out, AR_NAME_MAX);
    CHECK_INT(n, 254);
    CHECK(valid_utf8(out, n), "long Greek name cut on a boundary");

    /* 300 ASCII bytes -> 255 */
    memset(in, 'a', 300);
    n = ar_sanitize_component(in, 300, "x", out, AR_NAME_MAX);
    CHECK_INT(n, 255);
    n = ar_sanitize_component(in, 300, "x", out, 20);
    CHECK_INT(n, 20);
}

static void test_edges(void)
{
    char out[AR_NAME_MAX + 1];
    size_t n;
    n = ar_sanitize_component(NULL, 5, "fb", out, 255);
    CHECK_STR(out, "fb");
    CHECK_INT(n, 2);
    out[0] = 'z';
    n = ar_sanitize_component("abc", 3, "fb", out, 0);
    CHECK_INT(n, 0);
    CHECK_STR(out, "");
    CHECK_INT(ar_sanitize_component("abc", 3, "fb", NULL, 10), 0);
    n = ar_sanitize_component("abc", 3, "fb", out, 1);
    CHECK_STR(out, "a");
    n = ar_sanitize_component("\xe3\x81\x82", 3, "fb", out, 2);
    CHECK_STR(out, "fb");               /* nothing fits: fallback */
}

static void test_random(void)
{
    int iter, bad = 0, nondet = 0, nonidem = 0;
    for (iter = 0; iter < 200000; iter++) {
        unsigned char in[320];
        char out[AR_NAME_MAX + 1], out2[AR_NAME_MAX + 1], out3[AR_NAME_MAX + 1];
        size_t len = (size_t)(rnd() % 320), i, n, max;
        const char *why;
        int mode = (int)(rnd() % 4);
        for (i = 0; i < len; i++) {
            uint64_t r = rnd();
            switch (mode) {
            case 0: in[i] = (unsigned char)r; break;                          /* any byte */
            case 1: in[i] = (unsigned char)(0x80 + r % 0x80); break;          /* high bytes */
            case 2: in[i] = (unsigned char)" ./\\\0.\xe3\x81\x82\xf0\x9f\xed"[r % 13]; break;
            default: in[i] = r % 3 ? (unsigned char)('a' + r % 26) : (unsigned char)" .\x80\xc3\xa9"[r % 5]; break;
            }
        }
        max = (iter % 7 == 0) ? 1 + (size_t)(rnd() % AR_NAME_MAX) : AR_NAME_MAX;
        n = ar_sanitize_component((const char *)in, len, "unknown", out, max);
        why = violation(out, n, max);
        if (why) {
            if (bad++ < 5)
                CHECK(0, "random input %d (len %zu, max %zu): %s", iter, len, max, why);
        }
        ar_sanitize_component((const char *)in, len, "unknown", out2, max);
        if (strcmp(out, out2) != 0)
            nondet++;
        ar_sanitize_component(out, n, "unknown", out3, max);
        if (strcmp(out, out3) != 0 && nonidem++ < 3)
            CHECK(0, "not idempotent: '%s' -> '%s'", out, out3);
    }
    CHECK_INT(bad, 0);
    CHECK_INT(nondet, 0);
    CHECK_INT(nonidem, 0);
}

int main(void)
{
    test_table();
    test_long_utf8();
    test_edges();
    test_random();
    return tap_done();
}
