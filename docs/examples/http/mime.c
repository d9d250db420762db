/* SPDX-License-Identifier: MIT */
/*
 * Content-Type by file name extension: a small table of the types a static
 * site serves, matched without regard to case; anything else is
 * application/octet-stream. Text types declare UTF-8.
 */
#include <string.h>
#include <strings.h>

#include "http.h"

static const struct {
    const char *ext;
    const char *type;
} mime_table[] = {
    {"html", "text/html; charset=utf-8"},
    {"htm", "text/html; charset=utf-8"},
    {"css", "text/css; charset=utf-8"},
    {"js", "text/javascript; charset=utf-8"},
    {"mjs", "text/javascript; charset=utf-8"},
    {"json", "application/json"},
    {"txt", "text/plain; charset=utf-8"},
    {"md", "text/markdown; charset=utf-8"},
    {"csv", "text/csv; charset=utf-8"},
    {"xml", "application/xml"},
    {"svg", "image/svg+xml"},
    {"png", "image/png"},
    {"jpg", "image/jpeg"},
    {"jpeg", "image/jpeg"},
    {"gif", "image/gif"},
    {"webp", "image/webp"},
    {"avif", "image/avif"},
    {"ico", "image/x-icon"},
    {"pdf", "application/pdf"},
    {"wasm", "application/wasm"},
    {"woff", "font/woff"},
    {"woff2", "font/woff2"},
    {"ttf", "font/ttf"},
    {"otf", "font/otf"},
    {"mp3", "audio/mpeg"},
    {"ogg", "audio/ogg"},
    {"wav", "audio/wav"},
    {"mp4", "video/mp4"},
    {"webm", "video/webm"},
    {"zip", "application/zip"},
    {"gz", "application/gzip"},
    {"tar", "application/x-tar"},
};

/*
 * The Content-Type of the file named @p name (@p n bytes, a path whose
 * last '/'-separated segment is the file name). Never NULL.
 */
const char *
http_mime_type(const char *name, size_t n)
{
    size_t i = n;

    while (i > 0 && name[i - 1] != '.' && name[i - 1] != '/')
        i--;
    if (i == 0 || name[i - 1] != '.' || n - i > 8)
        return "application/octet-stream";
    for (size_t k = 0; k < sizeof(mime_table) / sizeof(mime_table[0]); k++) {
        const char *e = mime_table[k].ext;
        if (strlen(e) == n - i && strncasecmp(e, name + i, n - i) == 0)
            return mime_table[k].type;
    }
    return "application/octet-stream";
}
