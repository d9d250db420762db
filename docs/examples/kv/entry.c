/* SPDX-License-Identifier: MIT */
/*
 * A key's entry (struct kv_entry in kv.h): one allocation holding the links,
 * the expiry, the key, then the value inline or its buffer references. New
 * entries take the references of the value they are given; freeing one
 * releases them. The store (store.c) owns entries once they are linked.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "kv.h"

void
kv_entry_free(struct kv_entry *e)
{
    uint32_t n = kv_entry_nseg(e);
    struct nbuf **segs = kv_entry_segs(e);
    for (uint32_t i = 0; i < n; i++)
        nbuf_release(segs[i]);
    free(e);
}

/* A new entry; takes v's segment references (on success only). */
struct kv_entry *
kv_entry_new(uint32_t hash, const void *key, size_t klen, const struct kv_val *v)
{
    size_t size = sizeof(struct kv_entry);
    struct kv_entry *e;

    if (klen > UINT32_MAX || v->len > UINT32_MAX || v->nseg > KV_NSEG_MASK) {
        errno = E2BIG;
        return NULL;
    }
    if (v->nseg == 0)
        size += klen + v->len;
    else
        size += ((klen + 7) & ~(size_t)7) + (size_t)v->nseg * sizeof(struct nbuf *);
    e = malloc(size);
    if (!e)
        return NULL;
    e->next = NULL;
    e->expire_ms = 0;
    e->hash = hash;
    e->klen = (uint32_t)klen;
    e->vlen = (uint32_t)v->len;
    e->nseg = v->nseg;
    memcpy(e->data, key, klen);
    if (v->nseg == 0) {
        if (v->len)
            memcpy(e->data + klen, v->p, v->len);
    } else {
        /* The references move into the entry here. */
        memcpy(kv_entry_segs(e), v->segs, v->nseg * sizeof(struct nbuf *));
        if (v->tail_owned)
            e->nseg |= KV_TAIL_OWNED;
    }
    return e;
}

size_t
kv_entry_copy(struct kv_entry *e, size_t off, void *dst, size_t n)
{
    uint32_t nseg = kv_entry_nseg(e);
    unsigned char *d = dst;
    size_t done = 0;

    if (off >= e->vlen)
        return 0;
    if (n > e->vlen - off)
        n = e->vlen - off;
    if (nseg == 0) {
        memcpy(d, kv_entry_inline(e) + off, n);
        return n;
    }
    struct nbuf **segs = kv_entry_segs(e);
    for (uint32_t i = 0; i < nseg && done < n; i++) {
        size_t len = nbuf_readable(segs[i]);
        if (off >= len) {
            off -= len;
            continue;
        }
        size_t take = len - off < n - done ? len - off : n - done;
        memcpy(d + done, nbuf_data(segs[i]) + off, take);
        done += take;
        off = 0;
    }
    return done;
}
