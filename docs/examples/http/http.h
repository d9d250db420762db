/* SPDX-License-Identifier: MIT */
/*
 * nbuf-http: a static-file HTTP/1.1 server built on nbuf composites.
 *
 * Shared types and prototypes, by file: options (main.c), listeners and
 * event loops (server.c), connections (conn.c), the request parser
 * (request.c), responses (response.c), conditional requests (cond.c), root
 * confinement (path.c), the open-file cache (cache.c), content types
 * (mime.c) and HTTP dates (date.c).
 */
#ifndef NBUF_HTTP_H
#define NBUF_HTTP_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>

#include <nbuf.h>

#define HTTP_HEADER_MAX_DEFAULT (8u * 1024) /* request line + headers, else 431 */
#define HTTP_HEADER_TIMEOUT_MS 10000        /* a request's header must arrive in this */
#define HTTP_IDLE_TIMEOUT_MS 60000          /* keep-alive wait and write stall limit */
#define HTTP_LINGER_MS                                                                             \
    2000 /* lingering close: discard input until                                                   \
            the peer's FIN, at most this long */
#define HTTP_MAX_CONNS_DEFAULT 10000
#define HTTP_READ_AHEAD (64u * 1024) /* unserved input beyond one header */
#define HTTP_PIPELINE_BATCH 32       /* responses queued before a flush */
#define HTTP_EVENT_BUDGET 256        /* requests per connection per wakeup */
#define HTTP_HEAD_MAX 1024           /* room for one response header block */
#define HTTP_MAX_HEADERS 64          /* header fields per request, else 431 */
#define HTTP_INM_FIELDS 4            /* If-None-Match fields looked at */
#define HTTP_FILE_CACHE_MS 1000      /* an open file is reused this long */
#define HTTP_FILE_CACHE_SIZE 256     /* open files cached per worker */

/* Command-line configuration, filled by main.c and read-only afterwards. */
struct http_config {
    const char *root;
    const char *bind;
    unsigned port;
    unsigned threads;
    unsigned max_conns;
    size_t header_max; /* request line + header fields, bytes */
    int64_t header_timeout_ms;
    int64_t idle_timeout_ms;
    bool no_openat2;       /* confine with realpath() even where openat2 works */
    int64_t file_cache_ms; /* keep open files this long; 0 = no cache */
    bool stats;
};

/* ---- date.c ------------------------------------------------------------- */

#define HTTP_DATE_LEN 29 /* "Sun, 06 Nov 1994 08:49:37 GMT" */

void http_date_format(time_t t, char out[HTTP_DATE_LEN + 1]);
int http_date_parse(const char *s, size_t n, time_t *out);

/* ---- mime.c ------------------------------------------------------------- */

const char *http_mime_type(const char *name, size_t n);

/* ---- path.c ------------------------------------------------------------- */

/* The document root, opened once and shared read-only by every worker. */
struct http_root {
    int fd;     /* O_PATH directory */
    char *real; /* canonical path (realpath), for the fallback */
    size_t real_len;
    bool use_openat2;
};

/* A file opened for a request: a regular file and its attributes. */
struct http_file {
    int fd;      /* the caller's to close unless cached */
    bool cached; /* fd belongs to the worker's file cache */
    off_t size;
    time_t mtime;    /* Last-Modified */
    long mtime_nsec; /* with mtime and size: the entity tag */
    const char *mime;
};

/* ---- cache.c ------------------------------------------------------------ */

struct http_fcache_entry;

/* A worker's open-file cache. Synchronization: its worker thread alone. */
struct http_fcache {
    struct http_fcache_entry **buckets;
    size_t mask;
    struct http_fcache_entry *lru_head, *lru_tail;
    unsigned count, capacity;
    int64_t valid_ms;
};

int http_fcache_init(struct http_fcache *fc, unsigned capacity, int64_t valid_ms);
void http_fcache_fini(struct http_fcache *fc);
bool http_fcache_get(struct http_fcache *fc, const char *key, size_t klen, int64_t now_ms,
                     struct http_file *f);
void http_fcache_put(struct http_fcache *fc, const char *key, size_t klen, int64_t now_ms,
                     struct http_file *f);

/* Outcomes of http_path_open besides 0: HTTP status codes (400, 403,
 * 404, 414, 500) or HTTP_PATH_REDIRECT (a directory named without its
 * trailing slash: answer 301 to the same path with a '/'). */
#define HTTP_PATH_REDIRECT 301

int http_root_open(struct http_root *r, const char *dir, bool no_openat2);
void http_root_close(struct http_root *r);
int http_path_normalize(const char *target, size_t n, char *out, size_t cap, bool *dir);
int http_path_open(const struct http_root *r, struct http_fcache *fc, int64_t now_ms,
                   const char *target, size_t n, struct http_file *f);

/* ---- request.c ---------------------------------------------------------- */

enum http_method { HTTP_M_GET, HTTP_M_HEAD, HTTP_M_OTHER };

/* A parsed request. Pointers point into the header block the parser was
 * given, which must outlive them. */
struct http_request {
    enum http_method method;
    unsigned version;   /* 10 or 11 */
    const char *target; /* request-target, as sent */
    size_t target_len;
    const char *range; /* Range value or NULL */
    size_t range_len;
    const char *if_range;
    size_t if_range_len;
    const char *ims; /* If-Modified-Since value or NULL */
    size_t ims_len;
    struct {
        const char *v;
        size_t n;
    } inm[HTTP_INM_FIELDS]; /* the first If-None-Match values */
    unsigned inm_count;     /* If-None-Match fields, all of them */
    bool keep_alive;        /* after version default and Connection */
    bool has_body;          /* Content-Length > 0 or Transfer-Encoding */
};

/* Where the search for the end of a header block resumes (conn.c keeps one
 * per connection): no empty line starts before lf_from, and every CR
 * before cr_from is followed by an LF. All zero for a new block. */
struct http_scan {
    size_t lf_from;
    size_t cr_from;
};

int http_request_frame(struct nbuf_composite *in, struct http_scan *s, size_t *len);
int http_request_parse(const char *p, size_t n, struct http_request *req);

/* ---- cond.c ------------------------------------------------------------- */

#define HTTP_ETAG_MAX 40 /* a tag with its quotes, and a NUL */

size_t http_etag_format(const struct http_file *f, char out[HTTP_ETAG_MAX]);
bool http_cond_not_modified(const struct http_request *req, const struct http_file *f,
                            const char *etag, size_t etl);
bool http_cond_range_applies(const struct http_request *req, const struct http_file *f,
                             const char *etag, size_t etl);

/* ---- response.c --------------------------------------------------------- */

struct http_worker;

/* The status text of @p status ("Not Found"). */
const char *http_status_text(int status);
int http_respond_error(struct http_worker *w, struct nbuf_composite *out, int status, bool head,
                       bool keep_alive);
int http_respond(struct http_worker *w, struct nbuf_composite *out, const struct http_request *req,
                 bool *keep_alive);

/* ---- conn.c ------------------------------------------------------------- */

struct http_conn;

/* A FIFO of connections sharing one timeout length, so it is sorted by
 * deadline: the head expires first. */
struct http_timer_list {
    struct http_conn *head, *tail;
    int64_t timeout_ms;
};

struct http_conn *http_conn_new(struct http_worker *w, int fd);
void http_conn_free(struct http_conn *c);
void http_conn_on_event(struct http_conn *c, uint32_t events);
int http_conn_poll_timeout(struct http_worker *w);
void http_conn_run_again(struct http_worker *w);
void http_conn_expire(struct http_worker *w);
void http_conn_free_all(struct http_worker *w);

/* ---- server.c ----------------------------------------------------------- */

/* Counters of one worker, summed at exit (--stats). */
struct http_counters {
    uint64_t accepted;
    uint64_t refused; /* over --max-conns */
    uint64_t requests;
    uint64_t status[6]; /* by class: [2] = 2xx ... [5] = 5xx */
    uint64_t timeouts;
};

/*
 * One event loop thread. Owns its epoll fd, its listener (SO_REUSEPORT when
 * there are several) and its connections; nothing here is touched by other
 * threads except srv's atomic counters.
 */
struct http_worker {
    struct http_server *srv;
    unsigned id;
    int epfd;
    int lfd;
    int spare_fd; /* reserve descriptor, given up on EMFILE */
    pthread_t thread;
    /* Every connection is in exactly one of these. */
    struct http_timer_list header_timers;
    struct http_timer_list idle_timers;
    struct http_timer_list linger_timers;
    struct http_conn *again_head, *again_tail; /* work left over (budget) */
    unsigned nagain;
    int64_t now_ms;  /* CLOCK_MONOTONIC snapshot of this iteration */
    time_t date_sec; /* second of date[] */
    char date[HTTP_DATE_LEN + 1];
    struct http_fcache files;
    struct http_counters n;
    int error;
};

struct http_server {
    const struct http_config *cfg;
    struct nbuf_pool *pool;
    struct http_root root;
    struct http_worker *workers;
    unsigned nworkers;
    int stop_fd;     /* eventfd: readable once shutdown begins */
    unsigned nconns; /* atomically updated */
    unsigned port;   /* bound port */
};

int http_server_start(struct http_server *srv, const struct http_config *cfg,
                      struct nbuf_pool *pool);
void http_server_stop(struct http_server *srv, struct http_counters *sum);
int http_worker_watch(struct http_worker *w, int fd, void *ptr, uint32_t events, bool add);
const char *http_worker_date(struct http_worker *w);
int64_t http_now_ms(void);

#endif /* NBUF_HTTP_H */
