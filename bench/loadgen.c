/*
 * loadgen: a small load generator for NUL-terminated request/reply servers.
 *
 * One thread, epoll, non-blocking sockets, IPv4 loopback only. A "request" is
 * a command (default "go") followed by one NUL byte; its reply is everything
 * up to the next NUL. Latency is taken with CLOCK_MONOTONIC from the moment
 * the request is written (or, for the prober, the moment it was due) to the
 * moment its NUL is read. Every reply is checked: "go" must get
 * "Button released" or "Button pressed", "ping" must get "pong", anything
 * else must not start with "error". One JSON object is printed on stdout.
 *
 * Every mode first opens its connections and checks each end to end with one
 * "ping" (at most --connect-batch opening or unchecked at a time, so a short
 * listen backlog is not overrun); that set-up is never part of a measurement.
 *
 * Modes:
 *   closed   N clients in a closed loop (send, wait for the reply, send
 *            again) for --duration seconds after --warmup seconds; optional
 *            prober (--prober-ms) on its own connection sending "ping" at a
 *            fixed rate. A ping held back because the previous reply came
 *            late is timed from when it was due (no coordinated omission).
 *   oneshot  every connection sends one command at once; reports the time
 *            until the last reply (or "complete": false at --timeout).
 *   idle     the connections are held without sending anything more;
 *            "READY n" is printed; after a line on stdin (or --hold seconds)
 *            --fresh new clients are opened one after another (20 ms apart),
 *            each sends one command, and their latencies are reported.
 *
 * Exit status: 0 ok (an incomplete one-shot is a result, not a failure),
 * 2 usage, 3 a wrong reply, a connection error or a set-up timeout.
 *
 * Build: gcc -O2 -Wall -o loadgen loadgen.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define RBUF 512
#define KIND_CLIENT 0
#define KIND_PROBER 1

enum { ST_CONNECTING, ST_VERIFYING, ST_IDLE, ST_WAITING, ST_DONE };

struct conn {
    int fd;
    int kind;
    int state;
    int rlen;
    int64_t sent_ns;     /* when the outstanding request was sent (or due) */
    char rbuf[RBUF];
};

struct samples {
    int64_t *v;
    size_t n, cap;
};

/* ---------- options ---------- */
static const char *mode = NULL;
static const char *host = "127.0.0.1";
static int port = 0;
static int nclients = 1;
static double duration = 2.0;
static double warmup = 0.5;
static const char *cmd = "go";
static double prober_ms = 0.0;
static double timeout_s = 10.0;
static int fresh = 20;
static double hold_s = -1.0; /* idle: <0 means wait for a line on stdin */
static int connect_batch = 32;
static int signal_pid = 0; /* closed/oneshot: SIGUSR2 to this pid when measuring starts and ends */
static double connect_timeout = 30.0;

/* ---------- state ---------- */
static int epfd;
static struct conn *conns;
static int nconns;
static struct samples lat_clients, lat_prober;
static long bad_replies = 0;
static char first_bad[128] = "";
static long conn_errors = 0;
static char first_error[160] = "";
static char cmd_frame[256];
static int cmd_len;
static const char ping_frame[] = "ping";

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static double cpu_seconds(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

/* Ask the server to print its counters (see bench/peers): marks the window. */
static void mark_window(void) {
    if (signal_pid > 0) kill(signal_pid, SIGUSR2);
}

static void die(const char *what) {
    perror(what);
    exit(3);
}

static void push(struct samples *s, int64_t x) {
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 4096;
        s->v = realloc(s->v, s->cap * sizeof *s->v);
        if (!s->v) die("realloc");
    }
    s->v[s->n++] = x;
}

static int cmp64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Nearest-rank percentile, in milliseconds; -1 when there are no samples. */
static double pct_ms(struct samples *s, double q) {
    if (s->n == 0) return -1.0;
    size_t rank = (size_t)(q * s->n + 0.999999999);
    if (rank < 1) rank = 1;
    if (rank > s->n) rank = s->n;
    return s->v[rank - 1] / 1e6;
}

static void sort_samples(struct samples *s) {
    if (s->n) qsort(s->v, s->n, sizeof *s->v, cmp64);
}

static void record_error(const char *what, int err) {
    conn_errors++;
    if (!first_error[0])
        snprintf(first_error, sizeof first_error, "%s: %s", what, strerror(err));
}

static void raise_nofile(int need) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return;
    rlim_t want = (rlim_t)need + 64;
    if (rl.rlim_cur >= want) return;
    if (rl.rlim_max < want) {
        struct rlimit more = {want, want};
        if (setrlimit(RLIMIT_NOFILE, &more) == 0) return; /* root may raise the hard limit */
    }
    rl.rlim_cur = rl.rlim_max < want ? rl.rlim_max : want;
    setrlimit(RLIMIT_NOFILE, &rl);
}

/* ---------- sockets ---------- */
static struct sockaddr_in server_addr;

static int open_socket(void) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

static void ep_add(int fd, uint32_t events, int idx) {
    struct epoll_event ev = {.events = events, .data = {.u32 = (uint32_t)idx}};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) != 0) die("epoll_ctl add");
}

static void ep_mod(int fd, uint32_t events, int idx) {
    struct epoll_event ev = {.events = events, .data = {.u32 = (uint32_t)idx}};
    if (epoll_ctl(epfd, EPOLL_CTL_MOD, fd, &ev) != 0) die("epoll_ctl mod");
}

static int send_frame(struct conn *c, const char *body, int len);
typedef void (*reply_fn)(struct conn *c, int idx, const char *reply, int64_t t);
static int drain(struct conn *c, int idx, reply_fn on_reply);
static void check_reply(const char *sent, const char *reply);

static int verified = 0;

static void verify_on_reply(struct conn *c, int idx, const char *reply, int64_t t) {
    (void)idx;
    (void)t;
    check_reply("ping", reply);
    if (c->state == ST_VERIFYING) {
        c->state = ST_IDLE;
        verified++;
    }
}

/*
 * Open conns[0..n) and check each end to end with one "ping" (so each is known
 * to be accepted by the server and answered), with at most connect_batch
 * connections opening or unchecked at a time: a client's connect() completes
 * as soon as the kernel queues the connection, so without this window the
 * clients would overrun a server's short listen backlog (Twisted's is 50) and
 * wait out SYN retransmissions (1 s, 3 s, ...). Returns 0 when all are
 * connected and checked, -1 on error or timeout.
 */
static int connect_all(int n) {
    int started = 0;
    int64_t deadline = now_ns() + (int64_t)(connect_timeout * 1e9);
    struct epoll_event evs[256];
    verified = 0;
    while (verified < n) {
        while (started < n && started - verified < connect_batch) {
            struct conn *c = &conns[started];
            c->fd = open_socket();
            c->state = ST_CONNECTING;
            c->rlen = 0;
            int r = connect(c->fd, (struct sockaddr *)&server_addr, sizeof server_addr);
            if (r != 0 && errno != EINPROGRESS) {
                record_error("connect", errno);
                return -1;
            }
            ep_add(c->fd, EPOLLOUT, started);
            started++;
        }
        if (now_ns() > deadline) {
            record_error("connect timeout", ETIMEDOUT);
            return -1;
        }
        int k = epoll_wait(epfd, evs, 256, 100);
        if (k < 0 && errno != EINTR) die("epoll_wait");
        for (int i = 0; i < k; i++) {
            int idx = (int)evs[i].data.u32;
            struct conn *c = &conns[idx];
            if (c->state == ST_CONNECTING) {
                int err = 0;
                socklen_t len = sizeof err;
                getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
                if (err) {
                    record_error("connect", err);
                    return -1;
                }
                c->state = ST_VERIFYING;
                ep_mod(c->fd, EPOLLIN, idx);
                if (send_frame(c, "ping", 4) != 0) return -1;
            } else if (c->state == ST_VERIFYING) {
                if (drain(c, idx, verify_on_reply) != 0) return -1;
            }
        }
    }
    return 0;
}

/* Write a whole small frame (body + NUL); 0 ok, -1 error. */
static int send_frame(struct conn *c, const char *body, int len) {
    char buf[300];
    memcpy(buf, body, len);
    buf[len] = '\0';
    int off = 0;
    while (off < len + 1) {
        ssize_t w = write(c->fd, buf + off, len + 1 - off);
        if (w > 0) {
            off += w;
            continue;
        }
        if (w < 0 && errno == EINTR) continue;
        if (w < 0 && errno == EAGAIN) { /* cannot happen with an empty send buffer; wait */
            struct pollfd p = {.fd = c->fd, .events = POLLOUT};
            poll(&p, 1, 1000);
            continue;
        }
        record_error("write", w < 0 ? errno : EPIPE);
        return -1;
    }
    return 0;
}

static int reply_ok(const char *sent, const char *reply) {
    if (strcmp(sent, "go") == 0)
        return strcmp(reply, "Button released") == 0 || strcmp(reply, "Button pressed") == 0;
    if (strcmp(sent, "ping") == 0) return strcmp(reply, "pong") == 0;
    return strncmp(reply, "error", 5) != 0;
}

/*
 * Read what is available on c; for each complete reply call on_reply.
 * Returns -1 when the connection failed or closed.
 */
static int drain(struct conn *c, int idx, reply_fn on_reply) {
    for (;;) {
        ssize_t want = RBUF - 1 - c->rlen;
        ssize_t r = read(c->fd, c->rbuf + c->rlen, want);
        if (r > 0) {
            int64_t t = now_ns();
            c->rlen += (int)r;
            int start = 0;
            for (int i = 0; i < c->rlen; i++) {
                if (c->rbuf[i] == '\0') {
                    on_reply(c, idx, c->rbuf + start, t);
                    start = i + 1;
                }
            }
            if (start > 0) {
                memmove(c->rbuf, c->rbuf + start, c->rlen - start);
                c->rlen -= start;
            }
            if (c->rlen >= RBUF - 1) { /* a reply longer than we accept */
                record_error("reply too long", EMSGSIZE);
                return -1;
            }
            /* A short read emptied the socket: epoll is level-triggered and will
             * report more, so skip the read that would only say EAGAIN. */
            if (r < want) return 0;
            continue;
        }
        if (r == 0) {
            record_error("server closed the connection", ECONNRESET);
            return -1;
        }
        if (errno == EAGAIN) return 0;
        if (errno == EINTR) continue;
        record_error("read", errno);
        return -1;
    }
}

static void check_reply(const char *sent, const char *reply) {
    if (!reply_ok(sent, reply)) {
        bad_replies++;
        if (!first_bad[0]) snprintf(first_bad, sizeof first_bad, "%s", reply);
    }
}

static void json_str(const char *key, const char *s) {
    printf("\"%s\": \"", key);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') printf("\\%c", ch);
        else if (ch < 0x20) printf("\\u%04x", ch);
        else putchar(ch);
    }
    printf("\"");
}

static void print_common(double wall, double cpu) {
    printf("\"mode\": \"%s\", \"port\": %d, \"clients\": %d, \"cmd\": \"%s\", ", mode, port,
           nclients, cmd);
    printf("\"wall_s\": %.6f, \"cpu_s\": %.6f, \"cpu_total_s\": %.6f, ", wall, cpu,
           cpu_seconds());
    printf("\"bad_replies\": %ld, \"errors\": %ld, ", bad_replies, conn_errors);
    json_str("first_bad_reply", first_bad);
    printf(", ");
    json_str("first_error", first_error);
}

/* ---------- closed loop ---------- */
static int64_t win_start, win_end;
static long completed_in_window = 0;
static int prober_idx = -1;
static int prober_busy = 0;
static int64_t prober_next_due;
static int64_t prober_interval_ns;
static long prober_sent = 0;
static int64_t prober_free_at = 0; /* when the last ping's reply arrived */

static void closed_on_reply(struct conn *c, int idx, const char *reply, int64_t t) {
    if (c->state != ST_WAITING) {
        bad_replies++;
        if (!first_bad[0]) snprintf(first_bad, sizeof first_bad, "unrequested: %s", reply);
        return;
    }
    if (c->kind == KIND_PROBER) {
        check_reply("ping", reply);
        if (t >= win_start && t <= win_end) push(&lat_prober, t - c->sent_ns);
        prober_busy = 0;
        prober_free_at = t;
        c->state = ST_IDLE;
        return;
    }
    check_reply(cmd, reply);
    if (t >= win_start && t <= win_end) {
        push(&lat_clients, t - c->sent_ns);
        completed_in_window++;
    }
    c->state = ST_IDLE;
    if (t < win_end) {
        c->sent_ns = now_ns();
        c->state = ST_WAITING;
        if (send_frame(c, cmd, cmd_len) != 0) c->state = ST_DONE;
    }
    (void)idx;
}

static void prober_maybe_send(int64_t t) {
    if (prober_idx < 0 || prober_busy || t >= win_end) return;
    if (prober_next_due > t) return;
    struct conn *p = &conns[prober_idx];
    /* A ping held back because the previous reply came after this one was due
     * is counted from when it was due (no coordinated omission); otherwise from
     * now, so the load generator's own timer slack is not counted. */
    p->sent_ns = prober_free_at > prober_next_due ? prober_next_due : t;
    p->state = ST_WAITING;
    prober_busy = 1;
    prober_next_due += prober_interval_ns;
    prober_sent++;
    if (send_frame(p, ping_frame, 4) != 0) p->state = ST_DONE;
}

static int run_closed(void) {
    int with_prober = prober_ms > 0;
    nconns = nclients + (with_prober ? 1 : 0);
    conns = calloc(nconns, sizeof *conns);
    for (int i = 0; i < nconns; i++) conns[i].kind = KIND_CLIENT;
    if (with_prober) {
        prober_idx = nconns - 1;
        conns[prober_idx].kind = KIND_PROBER;
        prober_interval_ns = (int64_t)(prober_ms * 1e6);
    }
    if (connect_all(nconns) != 0) return -1;

    int64_t t0 = now_ns();
    win_start = t0 + (int64_t)(warmup * 1e9);
    win_end = win_start + (int64_t)(duration * 1e9);
    prober_next_due = t0;
    double cpu_at_start = -1, cpu_at_end = -1;
    for (int i = 0; i < nclients; i++) {
        conns[i].sent_ns = now_ns();
        conns[i].state = ST_WAITING;
        if (send_frame(&conns[i], cmd, cmd_len) != 0) return -1;
    }
    struct epoll_event evs[512];
    for (;;) {
        int64_t t = now_ns();
        if (cpu_at_start < 0 && t >= win_start) {
            cpu_at_start = cpu_seconds();
            mark_window();
        }
        if (t >= win_end) {
            mark_window();
            break;
        }
        prober_maybe_send(t);
        int64_t until = win_end;
        if (cpu_at_start < 0 && win_start < until) until = win_start;
        if (prober_idx >= 0 && !prober_busy && prober_next_due < until) until = prober_next_due;
        int64_t wait_ns = until - t;
        int timeout_ms = wait_ns <= 0 ? 0 : (int)((wait_ns + 999999) / 1000000);
        int k = epoll_wait(epfd, evs, 512, timeout_ms);
        if (k < 0 && errno != EINTR) die("epoll_wait");
        for (int i = 0; i < k; i++) {
            int idx = (int)evs[i].data.u32;
            struct conn *c = &conns[idx];
            if (c->state == ST_DONE) continue;
            if (drain(c, idx, closed_on_reply) != 0) {
                epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
                c->state = ST_DONE;
                if (c->kind == KIND_PROBER) prober_busy = 1; /* stop probing */
            }
        }
    }
    cpu_at_end = cpu_seconds();
    double wall = (win_end - win_start) / 1e9;
    sort_samples(&lat_clients);
    sort_samples(&lat_prober);
    printf("{");
    print_common(wall, cpu_at_end - cpu_at_start);
    printf(", \"warmup_s\": %.3f, \"requests\": %ld, \"rps\": %.1f, ", warmup,
           completed_in_window, completed_in_window / wall);
    printf("\"p50_ms\": %.4f, \"p99_ms\": %.4f, \"max_ms\": %.4f", pct_ms(&lat_clients, 0.5),
           pct_ms(&lat_clients, 0.99), pct_ms(&lat_clients, 1.0));
    if (with_prober) {
        printf(", \"prober\": {\"interval_ms\": %.3f, \"sent\": %ld, \"n\": %zu, "
               "\"p50_ms\": %.4f, \"p99_ms\": %.4f, \"max_ms\": %.4f}",
               prober_ms, prober_sent, lat_prober.n, pct_ms(&lat_prober, 0.5),
               pct_ms(&lat_prober, 0.99), pct_ms(&lat_prober, 1.0));
    }
    printf("}\n");
    return 0;
}

/* ---------- one shot ---------- */
static long oneshot_pending = 0;
static int64_t oneshot_last = 0;

static void oneshot_on_reply(struct conn *c, int idx, const char *reply, int64_t t) {
    (void)idx;
    if (c->state != ST_WAITING) {
        bad_replies++;
        if (!first_bad[0]) snprintf(first_bad, sizeof first_bad, "unrequested: %s", reply);
        return;
    }
    check_reply(cmd, reply);
    push(&lat_clients, t - c->sent_ns);
    if (t > oneshot_last) oneshot_last = t;
    c->state = ST_IDLE;
    oneshot_pending--;
}

static int wait_pending(int64_t deadline) {
    struct epoll_event evs[512];
    while (oneshot_pending > 0) {
        int64_t t = now_ns();
        if (t >= deadline) return -1;
        int timeout_ms = (int)((deadline - t + 999999) / 1000000);
        int k = epoll_wait(epfd, evs, 512, timeout_ms);
        if (k < 0 && errno != EINTR) die("epoll_wait");
        for (int i = 0; i < k; i++) {
            int idx = (int)evs[i].data.u32;
            struct conn *c = &conns[idx];
            if (c->state == ST_DONE) continue;
            int was_waiting = c->state == ST_WAITING;
            if (drain(c, idx, oneshot_on_reply) != 0) {
                epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
                if (c->state == ST_WAITING && was_waiting) oneshot_pending--;
                c->state = ST_DONE;
            }
        }
    }
    return 0;
}

static int run_oneshot(void) {
    nconns = nclients;
    conns = calloc(nconns, sizeof *conns);
    if (connect_all(nconns) != 0) return -1;
    usleep(50000); /* let the server settle after the pings */

    mark_window();
    double cpu0 = cpu_seconds();
    int64_t t0 = now_ns();
    oneshot_pending = nconns;
    for (int i = 0; i < nconns; i++) {
        conns[i].sent_ns = now_ns();
        conns[i].state = ST_WAITING;
        if (send_frame(&conns[i], cmd, cmd_len) != 0) return -1;
    }
    int64_t t_sent = now_ns();
    int complete = wait_pending(t0 + (int64_t)(timeout_s * 1e9)) == 0;
    int64_t t_end = now_ns();
    mark_window();
    double cpu = cpu_seconds() - cpu0;
    sort_samples(&lat_clients);
    printf("{");
    print_common((t_end - t0) / 1e9, cpu);
    printf(", \"answered\": %zu, \"complete\": %s, \"timeout_s\": %.3f, ", lat_clients.n,
           complete ? "true" : "false", timeout_s);
    printf("\"send_all_ms\": %.4f, \"all_answered_ms\": %.4f, \"last_reply_ms\": %.4f, ",
           (t_sent - t0) / 1e6, complete ? (oneshot_last - t0) / 1e6 : -1.0,
           oneshot_last ? (oneshot_last - t0) / 1e6 : -1.0);
    printf("\"p50_ms\": %.4f, \"p99_ms\": %.4f, \"max_ms\": %.4f}\n", pct_ms(&lat_clients, 0.5),
           pct_ms(&lat_clients, 0.99), pct_ms(&lat_clients, 1.0));
    return 0; /* an incomplete shot is a result ("complete": false), not a failure */
}

/* ---------- idle ---------- */
static int run_idle(void) {
    nconns = nclients;
    conns = calloc(nconns + 1, sizeof *conns);
    int64_t c0 = now_ns();
    if (connect_all(nconns) != 0) return -1;
    double connect_s = (now_ns() - c0) / 1e9;
    printf("READY %d\n", nconns);
    fflush(stdout);
    if (hold_s >= 0) {
        usleep((useconds_t)(hold_s * 1e6));
    } else {
        char line[64];
        if (!fgets(line, sizeof line, stdin)) { /* EOF: measure anyway */
        }
    }
    /* Fresh clients, one after another, while the idle ones are held. */
    struct samples connect_lat = {0};
    struct samples total_lat = {0};
    int idx = nconns;
    double cpu0 = cpu_seconds();
    int64_t w0 = now_ns();
    for (int i = 0; i < fresh; i++) {
        struct conn *c = &conns[idx];
        memset(c, 0, sizeof *c);
        int64_t t_conn = now_ns();
        c->fd = open_socket();
        int r = connect(c->fd, (struct sockaddr *)&server_addr, sizeof server_addr);
        if (r != 0 && errno != EINPROGRESS) {
            record_error("fresh connect", errno);
            return -1;
        }
        struct pollfd p = {.fd = c->fd, .events = POLLOUT};
        if (poll(&p, 1, 10000) != 1) {
            record_error("fresh connect timeout", ETIMEDOUT);
            return -1;
        }
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
            record_error("fresh connect", err);
            return -1;
        }
        int64_t t_send = now_ns();
        push(&connect_lat, t_send - t_conn);
        c->state = ST_WAITING;
        c->sent_ns = t_send;
        if (send_frame(c, cmd, cmd_len) != 0) return -1;
        ep_add(c->fd, EPOLLIN, idx);
        oneshot_pending = 1;
        size_t before = lat_clients.n;
        if (wait_pending(now_ns() + (int64_t)(timeout_s * 1e9)) != 0) {
            record_error("fresh client timed out", ETIMEDOUT);
            return -1;
        }
        if (lat_clients.n > before) push(&total_lat, lat_clients.v[lat_clients.n - 1] + (t_send - t_conn));
        epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        usleep(20000); /* fresh clients are spread out, not a burst */
    }
    double wall = (now_ns() - w0) / 1e9;
    double cpu = cpu_seconds() - cpu0;
    sort_samples(&lat_clients);
    sort_samples(&connect_lat);
    sort_samples(&total_lat);
    printf("{");
    print_common(wall, cpu);
    printf(", \"held\": %d, \"connect_all_s\": %.4f, \"fresh\": %zu, ", nconns, connect_s,
           lat_clients.n);
    printf("\"p50_ms\": %.4f, \"p99_ms\": %.4f, \"max_ms\": %.4f, ", pct_ms(&lat_clients, 0.5),
           pct_ms(&lat_clients, 0.99), pct_ms(&lat_clients, 1.0));
    printf("\"connect_p50_ms\": %.4f, \"with_connect_p50_ms\": %.4f, "
           "\"with_connect_max_ms\": %.4f}\n",
           pct_ms(&connect_lat, 0.5), pct_ms(&total_lat, 0.5), pct_ms(&total_lat, 1.0));
    fflush(stdout);
    return 0;
}

/* ---------- main ---------- */
static void usage(void) {
    fprintf(stderr,
            "usage: loadgen closed|oneshot|idle --port P [--host 127.0.0.1] [--clients N]\n"
            "  closed:  [--duration S] [--warmup S] [--cmd go] [--prober-ms MS]\n"
            "  oneshot: [--cmd go] [--timeout S]\n"
            "  idle:    [--fresh K] [--hold S (default: wait for a line on stdin)] [--cmd go]\n"
            "  all:     [--connect-batch B] [--connect-timeout S]\n"
            "           [--signal-pid PID (closed, oneshot: SIGUSR2 to PID when the\n"
            "            measured window starts and when it ends)]\n");
    exit(2);
}

int main(int argc, char **argv) {
    if (argc < 2) usage();
    mode = argv[1];
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (i + 1 >= argc) usage();
        const char *v = argv[++i];
        if (!strcmp(a, "--port")) port = atoi(v);
        else if (!strcmp(a, "--host")) host = v;
        else if (!strcmp(a, "--clients")) nclients = atoi(v);
        else if (!strcmp(a, "--duration")) duration = atof(v);
        else if (!strcmp(a, "--warmup")) warmup = atof(v);
        else if (!strcmp(a, "--cmd")) cmd = v;
        else if (!strcmp(a, "--prober-ms")) prober_ms = atof(v);
        else if (!strcmp(a, "--timeout")) timeout_s = atof(v);
        else if (!strcmp(a, "--fresh")) fresh = atoi(v);
        else if (!strcmp(a, "--hold")) hold_s = atof(v);
        else if (!strcmp(a, "--connect-batch")) connect_batch = atoi(v);
        else if (!strcmp(a, "--connect-timeout")) connect_timeout = atof(v);
        else if (!strcmp(a, "--signal-pid")) signal_pid = atoi(v);
        else usage();
    }
    if (port <= 0 || nclients < 0 || strlen(cmd) == 0 || strlen(cmd) > 200 ||
        connect_batch < 1)
        usage();
    cmd_len = (int)strlen(cmd);
    memcpy(cmd_frame, cmd, cmd_len);
    memset(&server_addr, 0, sizeof server_addr);
    server_addr.sin_family = AF_INET;
    server_addr.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &server_addr.sin_addr) != 1) usage();
    raise_nofile(nclients + 16);
    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0) die("epoll_create1");

    int rc;
    if (!strcmp(mode, "closed")) rc = run_closed();
    else if (!strcmp(mode, "oneshot")) rc = run_oneshot();
    else if (!strcmp(mode, "idle")) rc = run_idle();
    else usage();

    if (rc < 0) {
        printf("{");
        print_common(0, 0);
        printf(", \"failed\": true}\n");
        return 3;
    }
    if (bad_replies || conn_errors) return 3;
    return rc == 0 ? 0 : 3;
}
