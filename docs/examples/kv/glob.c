/* SPDX-License-Identifier: MIT */
/*
 * Glob patterns as Redis matches them (util.c's stringmatchlen, used by KEYS
 * and CONFIG GET): '*' any run, '?' any byte, '[...]' a set with '^'
 * negation, 'a-z' ranges (either order) and '\' escapes, '\' escaping any
 * byte outside a set. Binary-safe: lengths, not NUL ends. A run of stars
 * that finds no match for the rest of the pattern stops the whole search
 * (Redis's skipLongerMatches, so "*a*a*a...b" is not exponential).
 */
#include <stdbool.h>
#include <stddef.h>

#include "kv.h"

#define GLOB_NESTING_MAX 1000 /* star groups deeper than this do not match */

static inline int
lower(int c)
{
    return c >= 'A' && c <= 'Z' ? c | 0x20 : c;
}

static inline bool
same(unsigned char a, unsigned char b, bool nocase)
{
    return nocase ? lower(a) == lower(b) : a == b;
}

/* One "[...]" set at p (just past the '['), against byte c. Advances *pp
 * and *plenp to the closing ']' (or the pattern's last byte if unclosed). */
static bool
set_match(const unsigned char **pp, size_t *plenp, unsigned char c, bool nocase)
{
    const unsigned char *p = *pp;
    size_t plen = *plenp;
    bool neg = plen && p[0] == '^', match = false;

    if (neg) {
        p++;
        plen--;
    }
    for (;;) {
        if (plen >= 2 && p[0] == '\\') {
            p++;
            plen--;
            if (p[0] == c)
                match = true;
        } else if (plen == 0) {
            p--; /* unclosed: stop on the last byte, as Redis does */
            plen++;
            break;
        } else if (p[0] == ']') {
            break;
        } else if (plen >= 3 && p[1] == '-') {
            /* Redis compares plain (signed) chars here. */
            int start = (signed char)p[0], end = (signed char)p[2], x = (signed char)c;
            if (start > end) {
                int t = start;
                start = end;
                end = t;
            }
            if (nocase) {
                start = lower(start);
                end = lower(end);
                x = lower(x);
            }
            p += 2;
            plen -= 2;
            if (x >= start && x <= end)
                match = true;
        } else if (same(p[0], c, nocase)) {
            match = true;
        }
        p++;
        plen--;
    }
    *pp = p;
    *plenp = plen;
    return neg ? !match : match;
}

static bool
match(const unsigned char *p, size_t plen, const unsigned char *s, size_t slen, bool nocase,
      bool *skip_longer, unsigned nesting)
{
    if (nesting > GLOB_NESTING_MAX)
        return false;
    while (plen && slen) {
        switch (p[0]) {
        case '*':
            while (plen > 1 && p[1] == '*') {
                p++;
                plen--;
            }
            if (plen == 1)
                return true;
            for (; slen; s++, slen--) {
                if (match(p + 1, plen - 1, s, slen, nocase, skip_longer, nesting + 1))
                    return true;
                if (*skip_longer)
                    return false;
            }
            *skip_longer = true;
            return false;
        case '?':
            s++;
            slen--;
            break;
        case '[':
            p++;
            plen--;
            if (!set_match(&p, &plen, s[0], nocase))
                return false;
            s++;
            slen--;
            break;
        case '\\':
            if (plen >= 2) {
                p++;
                plen--;
            }
            /* fall through */
        default:
            if (!same(p[0], s[0], nocase))
                return false;
            s++;
            slen--;
            break;
        }
        p++;
        plen--;
        if (slen == 0) {
            while (plen && p[0] == '*') {
                p++;
                plen--;
            }
            break;
        }
    }
    return plen == 0 && slen == 0;
}

bool
kv_glob_match(const void *pattern, size_t plen, const void *str, size_t slen, bool nocase)
{
    bool skip_longer = false;
    return match(pattern, plen, str, slen, nocase, &skip_longer, 0);
}
