/* SPDX-License-Identifier: MIT */
/*
 * The pool-wide memory budget: every byte taken from the backing (chunks and
 * huge buffers) is charged here against memory_limit. When a charge fails,
 * the taker may ask for idle memory back through the reclaim hook the pool
 * layer installs (its trim), then retry; so the chunk, arena and thread-cache
 * layers read the budget without calling the pool. Calls nothing above.
 */
#include "internal.h"

bool
nbuf_budget_charge_(struct nbuf_pool *p, size_t bytes)
{
    uint64_t now = atomic_fetch_add(&p->backing_bytes, bytes) + bytes;
    if (p->cfg.memory_limit && now > p->cfg.memory_limit) {
        atomic_fetch_sub(&p->backing_bytes, bytes);
        errno = EDQUOT;
        return false;
    }
    return true;
}

void
nbuf_budget_uncharge_(struct nbuf_pool *p, size_t bytes)
{
    atomic_fetch_sub(&p->backing_bytes, bytes);
}

void
nbuf_budget_reclaim_(struct nbuf_pool *p)
{
    if (p->reclaim)
        p->reclaim(p);
}
