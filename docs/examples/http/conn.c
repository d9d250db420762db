/* SPDX-License-Identifier: MIT */
/*
 * One connection. Requests are read with nbuf_composite_read_fd into the
 * input composite; a request's end is found by http_request_frame (the
 * empty line may span read buffers) and its header block taken out with
 * nbuf_composite_read_slice (a view when it lies in one buffer). Responses
 * accumulate in the output composite and go out with nbuf_composite_writev;
 * while it holds bytes the socket is not read (backpressure), and -EAGAIN
 * or a partial write waits for EPOLLOUT. Also owns the timers: every
 * connection sits in exactly one of its worker's three timer lists.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <unistd.h>

#include "http.h"

#define LINGER_READ 65536 /* scratch for bytes discarded while lingering */

enum conn_state {
    CONN_OPEN,   /* reading requests, writing responses */
    CONN_LINGER, /* all sent, write side shut: discard input until FIN */
};

/*
 * Synchronization: owned by its worker thread alone.
 * Invariants: tl is one of the worker's three lists and the connection is
 * linked in it; the socket is not read while out holds bytes; in holds at
 * most header_max bytes of an incomplete request plus one read.
 */
struct http_conn {
    struct http_worker *w;
    int fd;
    enum conn_state state;
    uint32_t events;       /* what epoll watches now */
    bool peer_eof;         /* read returned 0: serve what is complete, then close */
    bool close_after;      /* close once the queued responses are out */
    bool on_again;         /* linked in the worker's again list */
    bool corked;           /* TCP_CORK is set */
    unsigned queued;       /* responses queued since out was last empty */
    uint64_t served;       /* responses queued, ever */
    uint64_t timer_served; /* served when the header timer was started */
    struct http_scan scan; /* where the search for the header's end resumes */
    int64_t deadline_ms;
    struct http_timer_list *tl;
    struct http_conn *tprev, *tnext;
    struct http_conn *again_next;
    struct nbuf_composite *in, *out;
};

/* ---- timers -------------------------------------------------------------- */

static void
timer_unlink(struct http_conn *c)
{
    struct http_timer_list *tl = c->tl;

    if (!tl)
        return;
    if (c->tprev)
        c->tprev->tnext = c->tnext;
    else
        tl->head = c->tnext;
    if (c->tnext)
        c->tnext->tprev = c->tprev;
    else
        tl->tail = c->tprev;
    c->tprev = c->tnext = NULL;
    c->tl = NULL;
}

/* (Re)start @p c's timer in @p tl: the deadline is now + the list's timeout,
 * so appending keeps the list sorted. */
static void
timer_start(struct http_conn *c, struct http_timer_list *tl)
{
    timer_unlink(c);
    c->deadline_ms = c->w->now_ms + tl->timeout_ms;
    c->tl = tl;
    c->tprev = tl->tail;
    if (tl->tail)
        tl->tail->tnext = c;
    else
        tl->head = c;
    tl->tail = c;
}

/*
 * Pick the timer for the state the connection is left in:
 * - bytes queued to write: the idle timeout, restarted at each wakeup (a
 *   reader that takes nothing for that long is dropped);
 * - a request begun, or none yet on a fresh connection: the header timeout,
 *   counted from its start and not restarted by more bytes (slowloris);
 * - between requests: the idle (keep-alive) timeout.
 */
static void
timer_arm(struct http_conn *c)
{
    struct http_worker *w = c->w;

    if (nbuf_composite_readable(c->out)) {
        timer_start(c, &w->idle_timers);
    } else if (nbuf_composite_readable(c->in) || c->served == 0) {
        if (c->tl != &w->header_timers || c->timer_served != c->served) {
            timer_start(c, &w->header_timers);
            c->timer_served = c->served;
        }
    } else {
        timer_start(c, &w->idle_timers);
    }
}

/* ---- life cycle ---------------------------------------------------------- */

static int
set_events(struct http_conn *c, uint32_t events)
{
    if (c->events == events)
        return 0;
    int r = http_worker_watch(c->w, c->fd, c, events, false);
    if (r == 0)
        c->events = events;
    return r;
}

/*
 * A connection for the accepted socket @p fd, watched for input, with the
 * header timer running. On failure (NULL) the caller closes @p fd.
 */
struct http_conn *
http_conn_new(struct http_worker *w, int fd)
{
    struct http_conn *c = calloc(1, sizeof(*c));

    if (!c)
        return NULL;
    c->w = w;
    c->fd = fd;
    c->in = nbuf_composite_new(w->srv->pool);
    c->out = nbuf_composite_new(w->srv->pool);
    if (!c->in || !c->out)
        goto out_free;
    if (http_worker_watch(w, fd, c, EPOLLIN, true) != 0)
        goto out_free;
    c->events = EPOLLIN;
    timer_start(c, &w->header_timers);
    return c;

out_free:
    nbuf_composite_free(c->in);
    nbuf_composite_free(c->out);
    free(c);
    return NULL;
}

static void
again_unlink(struct http_conn *c)
{
    struct http_worker *w = c->w;
    struct http_conn **pp = &w->again_head, *prev = NULL;

    if (!c->on_again)
        return;
    while (*pp != c) {
        prev = *pp;
        pp = &(*pp)->again_next;
    }
    *pp = c->again_next;
    if (w->again_tail == c)
        w->again_tail = prev;
    c->again_next = NULL;
    c->on_again = false;
    w->nagain--;
}

/* Close the socket and release everything, including queued responses. */
void
http_conn_free(struct http_conn *c)
{
    struct http_worker *w = c->w;

    timer_unlink(c);
    again_unlink(c);
    close(c->fd); /* also leaves the epoll set */
    nbuf_composite_free(c->in);
    nbuf_composite_free(c->out);
    free(c);
    __atomic_fetch_sub(&w->srv->nconns, 1, __ATOMIC_RELAXED);
}

/* ---- lingering close ----------------------------------------------------- */

/*
 * Everything is sent: shut the write side and wait a little for the peer's
 * FIN, discarding what it still sends. Closing at once with unread input
 * would make the kernel answer with a reset, which can destroy the
 * response before the client reads it (nginx's lingering_close).
 */
static void
linger_start(struct http_conn *c)
{
    shutdown(c->fd, SHUT_WR);
    if (c->peer_eof || set_events(c, EPOLLIN) != 0) {
        http_conn_free(c);
        return;
    }
    c->state = CONN_LINGER;
    nbuf_composite_skip(c->in, nbuf_composite_readable(c->in));
    again_unlink(c);
    timer_start(c, &c->w->linger_timers);
}

static void
linger_read(struct http_conn *c)
{
    char buf[LINGER_READ];

    for (int i = 0; i < 4; i++) {
        ssize_t r = recv(c->fd, buf, sizeof(buf), 0);
        if (r > 0 || (r < 0 && errno == EINTR))
            continue;
        if (r < 0 && errno == EAGAIN)
            return;
        http_conn_free(c); /* the FIN, or an error */
        return;
    }
    /* still streaming: go on at the next wakeup, until the linger timer */
}

/* ---- requests ------------------------------------------------------------ */

static void
count_status(struct http_worker *w, int status)
{
    w->n.requests++;
    if (status >= 100 && status < 600)
        w->n.status[status / 100]++;
}

/* Answer a request that cannot be parsed and close after it. */
static int
refuse(struct http_conn *c, int status)
{
    int r = http_respond_error(c->w, c->out, status, false, false);
    if (r < 0)
        return r;
    count_status(c->w, status);
    c->close_after = true;
    c->served++;
    c->queued++;
    return 1;
}

/*
 * Serve the next request in the input if it is complete.
 * @return 1 (a response was queued), 0 (incomplete: need more bytes), or
 *         -errno (close the connection).
 */
static int
serve_one(struct http_conn *c)
{
    const size_t max = c->w->srv->cfg->header_max;
    struct http_request req;
    size_t len;
    int status;

    status = http_request_frame(c->in, &c->scan, &len);
    if (status < 0)
        return status;
    if (status)
        return refuse(c, status); /* a bare CR */
    if (len == 0)
        return nbuf_composite_readable(c->in) > max ? refuse(c, 431) : 0;
    if (len > max)
        return refuse(c, 431);

    /* The header block as one buffer: a view of the read buffer, or a
     * pooled copy when the read boundary cut it. The request points into
     * it until the response is composed. */
    struct nbuf *blk = nbuf_composite_read_slice(c->in, len);
    if (!blk)
        return -errno;
    c->scan = (struct http_scan){0};
    status = http_request_parse((const char *)nbuf_data(blk), len, &req);
    if (status) {
        nbuf_release(blk);
        return refuse(c, status);
    }
    bool keep = req.keep_alive;
    status = http_respond(c->w, c->out, &req, &keep);
    nbuf_release(blk);
    if (status < 0)
        return status;
    count_status(c->w, status);
    if (!keep)
        c->close_after = true;
    c->served++;
    c->queued++;
    return 1;
}

static void
set_cork(struct http_conn *c, int on)
{
    if (setsockopt(c->fd, IPPROTO_TCP, TCP_CORK, &on, sizeof(on)) == 0)
        c->corked = on;
}

/*
 * Flush the output. 0 when all of it is out, 1 when the socket is full,
 * -errno when the connection is dead.
 *
 * A header followed by a file region goes out as two writes (sendmsg,
 * sendfile); with TCP_NODELAY each would be its own segment. When more
 * than one component is queued the socket is corked for the flush so
 * they share segments, and uncorked once all is out (nginx's tcp_nopush).
 */
static int
flush(struct http_conn *c)
{
    if (!c->corked && nbuf_composite_count(c->out) > 1)
        set_cork(c, 1);
    ssize_t r = nbuf_composite_writev(c->out, c->fd);

    if (r < 0 && r != -EAGAIN)
        return (int)r;
    if (nbuf_composite_readable(c->out))
        return 1;
    if (c->corked)
        set_cork(c, 0);
    c->queued = 0;
    return 0;
}

static void
again_push(struct http_conn *c)
{
    struct http_worker *w = c->w;

    if (c->on_again)
        return;
    c->on_again = true;
    c->again_next = NULL;
    if (w->again_tail)
        w->again_tail->again_next = c;
    else
        w->again_head = c;
    w->again_tail = c;
    w->nagain++;
}

/*
 * Make all the progress possible without blocking: flush, serve complete
 * requests (a batch at a time, so a deep pipeline does not hold many open
 * files), flush again... then wait for the right event.
 */
static void
conn_run(struct http_conn *c)
{
    unsigned budget = HTTP_EVENT_BUDGET;
    int r;

    for (;;) {
        if (nbuf_composite_readable(c->out)) {
            r = flush(c);
            if (r < 0)
                goto out_free;
            if (r > 0) {
                if (set_events(c, EPOLLOUT) != 0)
                    goto out_free;
                timer_arm(c);
                return;
            }
        }
        if (c->close_after) {
            linger_start(c);
            return;
        }
        if (!budget) {
            again_push(c); /* the rest of a deep pipeline after the others */
            goto out_wait;
        }
        r = 0;
        while (c->queued < HTTP_PIPELINE_BATCH && budget && !c->close_after) {
            int one = serve_one(c);
            if (one < 0)
                goto out_free;
            if (one == 0)
                break;
            r++;
            budget--;
        }
        if (r == 0)
            break;
    }
    if (c->peer_eof)
        goto out_free; /* nothing queued, nothing complete left: done */
out_wait:
    if (set_events(c, EPOLLIN) != 0)
        goto out_free;
    timer_arm(c);
    return;

out_free:
    http_conn_free(c);
}

/* Read once (level-triggered epoll tells again if there is more). 0, or
 * -errno when the connection is dead. */
static int
conn_read(struct http_conn *c)
{
    ssize_t r = nbuf_composite_read_fd(c->in, c->fd, 0);

    if (r == 0)
        c->peer_eof = true;
    else if (r < 0 && r != -EAGAIN)
        return (int)r;
    return 0;
}

void
http_conn_on_event(struct http_conn *c, uint32_t events)
{
    if (c->state == CONN_LINGER) {
        linger_read(c);
        return;
    }
    /* While responses are queued only EPOLLOUT is watched; EPOLLERR and
     * EPOLLHUP come regardless and make the flush fail. Otherwise read,
     * unless a deep pipeline is already waiting to be served: a client
     * that sends faster than it is served then meets TCP flow control. */
    if (!nbuf_composite_readable(c->out) && !c->peer_eof &&
        (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) &&
        nbuf_composite_readable(c->in) < c->w->srv->cfg->header_max + HTTP_READ_AHEAD) {
        if (conn_read(c) < 0) {
            http_conn_free(c);
            return;
        }
    }
    conn_run(c);
}

/* ---- the worker's lists -------------------------------------------------- */

/* The epoll_wait timeout: 0 with leftover work, else until the earliest
 * deadline (-1: none). */
int
http_conn_poll_timeout(struct http_worker *w)
{
    struct http_timer_list *lists[] = {&w->header_timers, &w->idle_timers, &w->linger_timers};
    int64_t first = INT64_MAX;

    if (w->again_head)
        return 0;
    for (size_t i = 0; i < 3; i++)
        if (lists[i]->head && lists[i]->head->deadline_ms < first)
            first = lists[i]->head->deadline_ms;
    if (first == INT64_MAX)
        return -1;
    if (first <= w->now_ms)
        return 0;
    return first - w->now_ms > 60000 ? 60000 : (int)(first - w->now_ms) + 1;
}

/* Give the connections whose budget ran out their next turn. */
void
http_conn_run_again(struct http_worker *w)
{
    /* Only those queued now: a connection that queues itself again waits
     * for the next round, after the others' events. */
    for (unsigned n = w->nagain; n > 0 && w->again_head; n--) {
        struct http_conn *c = w->again_head;
        w->again_head = c->again_next;
        if (!w->again_head)
            w->again_tail = NULL;
        c->again_next = NULL;
        c->on_again = false;
        w->nagain--;
        conn_run(c);
    }
}

/* Expired header timer: a best-effort 408, then close. */
static void
expire_header(struct http_conn *c)
{
    if (!nbuf_composite_readable(c->out) && nbuf_composite_readable(c->in) &&
        http_respond_error(c->w, c->out, 408, false, false) > 0) {
        count_status(c->w, 408);
        (void)nbuf_composite_writev(c->out, c->fd);
    }
    http_conn_free(c);
}

/* Close the connections whose deadline passed. */
void
http_conn_expire(struct http_worker *w)
{
    struct http_timer_list *lists[] = {&w->header_timers, &w->idle_timers, &w->linger_timers};

    for (size_t i = 0; i < 3; i++) {
        struct http_conn *c;
        while ((c = lists[i]->head) && c->deadline_ms <= w->now_ms) {
            if (lists[i] != &w->linger_timers)
                w->n.timeouts++;
            if (lists[i] == &w->header_timers)
                expire_header(c);
            else
                http_conn_free(c);
        }
    }
}

/* Shutdown: close every connection of @p w. */
void
http_conn_free_all(struct http_worker *w)
{
    struct http_timer_list *lists[] = {&w->header_timers, &w->idle_timers, &w->linger_timers};

    for (size_t i = 0; i < 3; i++)
        while (lists[i]->head)
            http_conn_free(lists[i]->head);
}
