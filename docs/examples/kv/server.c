/* SPDX-License-Identifier: MIT */
/*
 * Listeners and event loops. Each worker thread has its own epoll set and
 * its own listening socket (SO_REUSEPORT when there are several, so the
 * kernel spreads connections), owns the clients it accepted, and sweeps
 * expired keys in its share of the store's shards every 100 ms. Shutdown:
 * an eventfd that becomes readable and stays so, seen by every loop. With
 * --io-uring the connections go through a ring instead (uring.c); accept,
 * shutdown and the sweep stay here.
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "kv.h"

#define MAX_EVENTS 256
#define TICK_MS 100        /* epoll timeout and sweep period */
#define SWEEP_BUCKETS 1024 /* buckets scanned per shard per sweep */
#define ACCEPT_BATCH 64

int64_t
kv_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int
kv_worker_watch(struct kv_worker *w, int fd, struct kv_client *cl, uint32_t events, bool add)
{
    struct epoll_event ev = {.events = events, .data.ptr = cl};
    if (epoll_ctl(w->epfd, add ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, fd, &ev) != 0)
        return -errno;
    return 0;
}

static int
listen_on(const struct kv_config *cfg, unsigned port, bool reuseport, unsigned *bound)
{
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC,
        .ai_socktype = SOCK_STREAM,
        .ai_flags = AI_PASSIVE | AI_NUMERICHOST | AI_NUMERICSERV,
    };
    struct addrinfo *res;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    char ps[16];
    int fd, one = 1, r;

    snprintf(ps, sizeof(ps), "%u", port);
    if ((r = getaddrinfo(cfg->bind, ps, &hints, &res)) != 0) {
        fprintf(stderr, "nbuf-kv: bad --bind address '%s': %s\n", cfg->bind, gai_strerror(r));
        return -EINVAL;
    }
    fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        r = -errno;
        goto out_free;
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0)
        goto out_errno;
    if (bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, 511) != 0)
        goto out_errno;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0)
        goto out_errno;
    *bound = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                            : ((struct sockaddr_in *)&ss)->sin_port);
    freeaddrinfo(res);
    return fd;

out_errno:
    r = -errno;
    close(fd);
out_free:
    freeaddrinfo(res);
    return r;
}

static void
accept_some(struct kv_worker *w)
{
    struct kv_server *srv = w->srv;

    for (int i = 0; i < ACCEPT_BATCH; i++) {
        int one = 1;
        int fd = accept4(w->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            return; /* EAGAIN; EMFILE and the like retry at the next wakeup */
        }
        if (__atomic_fetch_add(&srv->nclients, 1, __ATOMIC_RELAXED) >= srv->cfg->max_clients) {
            static const char msg[] = "-ERR max number of clients reached\r\n";
            if (write(fd, msg, sizeof(msg) - 1) < 0) {
                /* nothing to do: the connection is dropped either way */
            }
            close(fd);
            __atomic_fetch_sub(&srv->nclients, 1, __ATOMIC_RELAXED);
            continue;
        }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        if (!kv_client_new(w, fd)) {
            close(fd);
            __atomic_fetch_sub(&srv->nclients, 1, __ATOMIC_RELAXED);
        }
    }
}

static void
sweep(struct kv_worker *w)
{
    struct kv_server *srv = w->srv;
    for (unsigned s = w->id; s < KV_SHARDS; s += srv->nworkers)
        kv_store_sweep(srv->store, s, w->now_ms, SWEEP_BUCKETS);
    w->next_sweep_ms = w->now_ms + TICK_MS;
}

static void *
worker_main(void *arg)
{
    struct kv_worker *w = arg;
    struct kv_server *srv = w->srv;
    struct epoll_event evs[MAX_EVENTS];
    bool stop = false;

    while (!stop) {
        int n = epoll_wait(w->epfd, evs, MAX_EVENTS, TICK_MS);
        if (n < 0 && errno != EINTR) {
            w->error = -errno;
            break;
        }
        w->now_ms = kv_now_ms();
        for (int i = 0; i < n; i++) {
            void *ptr = evs[i].data.ptr;
            if (ptr == &w->lfd) {
                accept_some(w);
            } else if (ptr == &srv->stop_fd) {
                stop = true;
            } else if (ptr == &w->ring) {
                /* completions: kv_uring_poll below */
            } else if (kv_client_on_event(ptr, evs[i].events) < 0) {
                kv_client_free(ptr);
            }
        }
#if KV_HAVE_IO_URING
        if (w->ring)
            kv_uring_poll(w);
#endif
        if (w->now_ms >= w->next_sweep_ms)
            sweep(w);
    }
#if KV_HAVE_IO_URING
    if (w->ring)
        kv_uring_shutdown(w);
#endif
    kv_client_free_all(w);
    return NULL;
}

static int
worker_init(struct kv_server *srv, struct kv_worker *w, unsigned id)
{
    struct epoll_event ev = {.events = EPOLLIN};
    unsigned bound = 0;

    w->srv = srv;
    w->id = id;
    w->lfd = -1;
    w->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (w->epfd < 0)
        return -errno;
    /* Every listener after the first binds the port the first one got. */
    w->lfd = listen_on(srv->cfg, id ? srv->port : srv->cfg->port, srv->nworkers > 1, &bound);
    if (w->lfd < 0)
        return w->lfd;
    if (id == 0)
        srv->port = bound;
    ev.data.ptr = &w->lfd;
    if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->lfd, &ev) != 0)
        return -errno;
    ev.data.ptr = &srv->stop_fd;
    if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, srv->stop_fd, &ev) != 0)
        return -errno;
#if KV_HAVE_IO_URING
    if (srv->cfg->io_uring)
        return kv_uring_init(w);
#endif
    return 0;
}

static void
worker_fini(struct kv_worker *w)
{
#if KV_HAVE_IO_URING
    kv_uring_fini(w);
#endif
    if (w->lfd >= 0)
        close(w->lfd);
    if (w->epfd >= 0)
        close(w->epfd);
}

int
kv_server_start(struct kv_server *srv, const struct kv_config *cfg, struct nbuf_pool *pool)
{
    unsigned i, started = 0;
    int r;

    memset(srv, 0, sizeof(*srv));
    srv->cfg = cfg;
    srv->pool = pool;
    srv->nworkers = cfg->threads;
    kv_commands_init();
    srv->store = kv_store_new(cfg->threads > 1);
    if (!srv->store)
        return -ENOMEM;
    srv->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (srv->stop_fd < 0) {
        r = -errno;
        goto out_store;
    }
    srv->workers = calloc(srv->nworkers, sizeof(*srv->workers));
    if (!srv->workers) {
        r = -ENOMEM;
        goto out_stopfd;
    }
    for (i = 0; i < srv->nworkers; i++)
        srv->workers[i].epfd = srv->workers[i].lfd = -1;
    for (i = 0; i < srv->nworkers; i++)
        if ((r = worker_init(srv, &srv->workers[i], i)))
            goto out_workers;
    for (started = 0; started < srv->nworkers; started++) {
        r = -pthread_create(&srv->workers[started].thread, NULL, worker_main,
                            &srv->workers[started]);
        if (r)
            goto out_threads;
    }
    return 0;

out_threads:
    if (eventfd_write(srv->stop_fd, 1) != 0) {
        /* cannot happen for a fresh eventfd */
    }
    for (i = 0; i < started; i++)
        pthread_join(srv->workers[i].thread, NULL);
out_workers:
    for (i = 0; i < srv->nworkers; i++)
        worker_fini(&srv->workers[i]);
    free(srv->workers);
out_stopfd:
    close(srv->stop_fd);
out_store:
    kv_store_free(srv->store);
    return r;
}

/* Stop the loops (each frees its clients), then free the store. */
void
kv_server_stop(struct kv_server *srv)
{
    if (eventfd_write(srv->stop_fd, 1) != 0)
        perror("nbuf-kv: eventfd_write");
    for (unsigned i = 0; i < srv->nworkers; i++) {
        pthread_join(srv->workers[i].thread, NULL);
        worker_fini(&srv->workers[i]);
    }
    free(srv->workers);
    close(srv->stop_fd);
    kv_store_free(srv->store);
    srv->store = NULL;
}
