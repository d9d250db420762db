/* SPDX-License-Identifier: MIT */
/* Built by .ci/run against an installed nbuf through `pkg-config --static`,
 * with cc -static: the static library must link with what nbuf.pc lists. */
#include <nbuf.h>
#include <stdio.h>
#include <string.h>
int
main(void)
{
    struct nbuf *b = nbuf_alloc(NULL, 4000);
    if (!b || nbuf_write(b, "static", 6) != 0 || memcmp(nbuf_data(b), "static", 6) != 0)
        return 1;
    nbuf_release(b);
    puts("static link: ok");
    return 0;
}
