/* SPDX-License-Identifier: MIT */
/*
 * HTTP dates (RFC 7231 section 7.1.1.1): IMF-fixdate out, and in the three
 * formats a recipient must accept (IMF-fixdate, RFC 850, asctime). Pure
 * arithmetic on the proleptic Gregorian calendar in UTC: no locale, no time
 * zone, no lock.
 */
#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include <strings.h>

#include "http.h"

static const char wdays[7][4] = {"Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"}; /* from 1970 */
static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                   "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

/* Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm). */
static int64_t
days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static void
civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

static void
put2(char *p, unsigned v)
{
    p[0] = (char)('0' + v / 10 % 10);
    p[1] = (char)('0' + v % 10);
}

/* Format @p t as an IMF-fixdate; years outside 0..9999 are clamped. */
void
http_date_format(time_t t, char out[HTTP_DATE_LEN + 1])
{
    int64_t days = (int64_t)t / 86400, secs = (int64_t)t % 86400, y;
    unsigned m, d;

    if (secs < 0) {
        secs += 86400;
        days--;
    }
    civil_from_days(days, &y, &m, &d);
    if (y < 0 || y > 9999) {
        memcpy(out, y < 0 ? "Thu, 01 Jan 1970 00:00:00 GMT" : "Fri, 31 Dec 9999 23:59:59 GMT",
               HTTP_DATE_LEN + 1);
        return;
    }
    memcpy(out, wdays[((days % 7) + 7) % 7], 3);
    memcpy(out + 3, ", ", 2);
    put2(out + 5, d);
    out[7] = ' ';
    memcpy(out + 8, months[m - 1], 3);
    out[11] = ' ';
    put2(out + 12, (unsigned)(y / 100));
    put2(out + 14, (unsigned)(y % 100));
    out[16] = ' ';
    put2(out + 17, (unsigned)(secs / 3600));
    out[19] = ':';
    put2(out + 20, (unsigned)(secs / 60 % 60));
    out[22] = ':';
    put2(out + 23, (unsigned)(secs % 60));
    memcpy(out + 25, " GMT", 5);
}

/* A cursor over the field value. */
struct scan {
    const char *p, *end;
};

static bool
take_lit(struct scan *s, const char *lit)
{
    size_t n = strlen(lit);
    if ((size_t)(s->end - s->p) < n || strncasecmp(s->p, lit, n) != 0)
        return false;
    s->p += n;
    return true;
}

static bool
take_num(struct scan *s, unsigned min_digits, unsigned max_digits, unsigned *out)
{
    unsigned v = 0, k = 0;
    while (s->p < s->end && k < max_digits && *s->p >= '0' && *s->p <= '9') {
        v = v * 10 + (unsigned)(*s->p++ - '0');
        k++;
    }
    *out = v;
    return k >= min_digits;
}

static bool
take_month(struct scan *s, unsigned *m)
{
    for (unsigned i = 0; i < 12; i++) {
        if (take_lit(s, months[i])) {
            *m = i + 1;
            return true;
        }
    }
    return false;
}

static bool
take_time(struct scan *s, unsigned *hh, unsigned *mm, unsigned *ss)
{
    return take_num(s, 2, 2, hh) && take_lit(s, ":") && take_num(s, 2, 2, mm) && take_lit(s, ":") &&
           take_num(s, 2, 2, ss) && *hh < 24 && *mm < 60 && *ss < 61;
}

/* Skip the day name: letters up to a comma (IMF-fixdate, RFC 850) or a
 * space (asctime). Returns the separator or 0. */
static char
skip_wday(struct scan *s)
{
    while (s->p < s->end && ((*s->p >= 'a' && *s->p <= 'z') || (*s->p >= 'A' && *s->p <= 'Z')))
        s->p++;
    if (s->p == s->end || (*s->p != ',' && *s->p != ' '))
        return 0;
    return *s->p++;
}

/*
 * Parse an HTTP date in any of the three formats.
 * @return 0 with *out set; -EINVAL if @p s is not a valid date.
 */
int
http_date_parse(const char *s, size_t n, time_t *out)
{
    struct scan sc = {s, s + n};
    unsigned d, m, y, hh, mm, ss;
    char sep = skip_wday(&sc);

    if (sep == ',') {
        if (!take_lit(&sc, " ") || !take_num(&sc, 2, 2, &d))
            return -EINVAL;
        if (take_lit(&sc, " ")) { /* IMF-fixdate: 06 Nov 1994 08:49:37 GMT */
            if (!take_month(&sc, &m) || !take_lit(&sc, " ") || !take_num(&sc, 4, 4, &y))
                return -EINVAL;
        } else { /* RFC 850: 06-Nov-94 08:49:37 GMT */
            if (!take_lit(&sc, "-") || !take_month(&sc, &m) || !take_lit(&sc, "-") ||
                !take_num(&sc, 2, 2, &y))
                return -EINVAL;
            y += y < 70 ? 2000 : 1900; /* RFC 7231: 50 years ahead rule, simplified */
        }
        if (!take_lit(&sc, " ") || !take_time(&sc, &hh, &mm, &ss) || !take_lit(&sc, " GMT"))
            return -EINVAL;
    } else if (sep == ' ') { /* asctime: Nov  6 08:49:37 1994 */
        if (!take_month(&sc, &m) || !take_lit(&sc, " "))
            return -EINVAL;
        take_lit(&sc, " ");
        if (!take_num(&sc, 1, 2, &d) || !take_lit(&sc, " ") || !take_time(&sc, &hh, &mm, &ss) ||
            !take_lit(&sc, " ") || !take_num(&sc, 4, 4, &y))
            return -EINVAL;
    } else {
        return -EINVAL;
    }
    if (sc.p != sc.end || d < 1 || d > 31)
        return -EINVAL;
    *out = (time_t)(days_from_civil(y, m, d) * 86400 + hh * 3600 + mm * 60 + ss);
    return 0;
}
