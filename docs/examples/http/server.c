/* SPDX-License-Identifier: MIT */
/*
 * Listeners and event loops. Each worker thread has its own epoll set and
 * its own listening socket (SO_REUSEPORT when there are several, so the
 * kernel spreads connections) and owns the connections it accepted. The
 * connection count is shared (an atomic) and capped by --max-conns; a
 * reserve descriptor keeps EMFILE from spinning the loop. Shutdown: an
 * eventfd that becomes readable and stays so, seen by every loop.
 */
#include <errno.h>
#include <fcntl.h>
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

#include "http.h"

#define MAX_EVENTS 256
#define ACCEPT_BATCH 64

int64_t
http_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The Date header value for the current second, formatted once a second. */
const char *
http_worker_date(struct http_worker *w)
{
    time_t now = time(NULL);
    if (now != w->date_sec) {
        http_date_format(now, w->date);
        w->date_sec = now;
    }
    return w->date;
}

int
http_worker_watch(struct http_worker *w, int fd, void *ptr, uint32_t events, bool add)
{
    struct epoll_event ev = {.events = events, .data.ptr = ptr};
    if (epoll_ctl(w->epfd, add ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, fd, &ev) != 0)
        return -errno;
    return 0;
}

static int
listen_on(const struct http_config *cfg, unsigned port, bool reuseport, unsigned *bound)
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
        fprintf(stderr, "nbuf-http: bad --bind address '%s': %s\n", cfg->bind, gai_strerror(r));
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
    if (bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, 4096) != 0)
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

/* Out of descriptors: give up the reserve one to accept and drop the
 * connection, so the listener stops being readable (libev's trick). */
static void
shed_one(struct http_worker *w)
{
    int fd;

    if (w->spare_fd < 0)
        return;
    close(w->spare_fd);
    fd = accept4(w->lfd, NULL, NULL, SOCK_CLOEXEC);
    if (fd >= 0) {
        close(fd);
        w->n.refused++;
    }
    w->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
}

static void
accept_some(struct http_worker *w)
{
    static const char busy[] = "HTTP/1.1 503 Service Unavailable\r\n"
                               "Content-Length: 0\r\nConnection: close\r\n\r\n";
    struct http_server *srv = w->srv;

    for (int i = 0; i < ACCEPT_BATCH; i++) {
        int one = 1;
        int fd = accept4(w->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE)
                shed_one(w);
            return; /* EAGAIN */
        }
        w->n.accepted++;
        if (__atomic_fetch_add(&srv->nconns, 1, __ATOMIC_RELAXED) >= srv->cfg->max_conns) {
            /* Best effort: the 503 fits any fresh socket buffer. */
            if (send(fd, busy, sizeof(busy) - 1, MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
                /* dropped either way */
            }
            close(fd);
            __atomic_fetch_sub(&srv->nconns, 1, __ATOMIC_RELAXED);
            w->n.refused++;
            continue;
        }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        if (!http_conn_new(w, fd)) {
            close(fd);
            __atomic_fetch_sub(&srv->nconns, 1, __ATOMIC_RELAXED);
        }
    }
}

static void *
worker_main(void *arg)
{
    struct http_worker *w = arg;
    struct http_server *srv = w->srv;
    struct epoll_event evs[MAX_EVENTS];
    bool stop = false;

    w->now_ms = http_now_ms();
    while (!stop) {
        int n = epoll_wait(w->epfd, evs, MAX_EVENTS, http_conn_poll_timeout(w));
        if (n < 0 && errno != EINTR) {
            w->error = -errno;
            break;
        }
        w->now_ms = http_now_ms();
        for (int i = 0; i < n; i++) {
            void *ptr = evs[i].data.ptr;
            if (ptr == &w->lfd)
                accept_some(w);
            else if (ptr == &srv->stop_fd)
                stop = true;
            else
                http_conn_on_event(ptr, evs[i].events);
        }
        http_conn_run_again(w);
        http_conn_expire(w);
    }
    http_conn_free_all(w);
    return NULL;
}

static int
worker_init(struct http_server *srv, struct http_worker *w, unsigned id)
{
    struct epoll_event ev = {.events = EPOLLIN};
    unsigned bound = 0;

    w->srv = srv;
    w->id = id;
    w->header_timers.timeout_ms = srv->cfg->header_timeout_ms;
    w->idle_timers.timeout_ms = srv->cfg->idle_timeout_ms;
    w->linger_timers.timeout_ms = HTTP_LINGER_MS;
    w->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (http_fcache_init(&w->files, HTTP_FILE_CACHE_SIZE, srv->cfg->file_cache_ms) != 0)
        return -ENOMEM;
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
    return 0;
}

static void
worker_fini(struct http_worker *w)
{
    if (w->lfd >= 0)
        close(w->lfd);
    if (w->epfd >= 0)
        close(w->epfd);
    if (w->spare_fd >= 0)
        close(w->spare_fd);
    http_fcache_fini(&w->files);
    w->lfd = w->epfd = w->spare_fd = -1;
}

/*
 * Open the root, bind the listeners and start the workers.
 * @return 0; -errno (the root cannot be opened: see errno; or a listener
 *         or thread failed). Nothing is left running on failure.
 */
int
http_server_start(struct http_server *srv, const struct http_config *cfg, struct nbuf_pool *pool)
{
    unsigned i, started = 0;
    int r;

    memset(srv, 0, sizeof(*srv));
    srv->cfg = cfg;
    srv->pool = pool;
    srv->nworkers = cfg->threads;
    r = http_root_open(&srv->root, cfg->root, cfg->no_openat2);
    if (r) {
        fprintf(stderr, "nbuf-http: cannot open --root %s: %s\n", cfg->root, strerror(-r));
        return r;
    }
    srv->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (srv->stop_fd < 0) {
        r = -errno;
        goto out_root;
    }
    srv->workers = calloc(srv->nworkers, sizeof(*srv->workers));
    if (!srv->workers) {
        r = -ENOMEM;
        goto out_stopfd;
    }
    for (i = 0; i < srv->nworkers; i++)
        srv->workers[i].epfd = srv->workers[i].lfd = srv->workers[i].spare_fd = -1;
    for (i = 0; i < srv->nworkers; i++) {
        if ((r = worker_init(srv, &srv->workers[i], i))) {
            fprintf(stderr, "nbuf-http: cannot listen on %s:%u: %s\n", cfg->bind,
                    i ? srv->port : cfg->port, strerror(-r));
            goto out_workers;
        }
    }
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
out_root:
    http_root_close(&srv->root);
    return r;
}

/* Stop the loops (each closes its connections), sum their counters into
 * @p sum, and release the root. */
void
http_server_stop(struct http_server *srv, struct http_counters *sum)
{
    memset(sum, 0, sizeof(*sum));
    if (eventfd_write(srv->stop_fd, 1) != 0)
        perror("nbuf-http: eventfd_write");
    for (unsigned i = 0; i < srv->nworkers; i++) {
        struct http_worker *w = &srv->workers[i];
        pthread_join(w->thread, NULL);
        if (w->error)
            fprintf(stderr, "nbuf-http: worker %u: epoll_wait: %s\n", i, strerror(-w->error));
        sum->accepted += w->n.accepted;
        sum->refused += w->n.refused;
        sum->requests += w->n.requests;
        sum->timeouts += w->n.timeouts;
        for (int k = 0; k < 6; k++)
            sum->status[k] += w->n.status[k];
        worker_fini(w);
    }
    free(srv->workers);
    close(srv->stop_fd);
    http_root_close(&srv->root);
}
