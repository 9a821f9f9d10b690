/*
 * floor_server: the least a server can do, to show this machine's own
 * latency floor. One thread, epoll, answers "ping" with "pong" and "go" with
 * "Button released" at once (no read, no latency); anything else gets an
 * error. Not a peer to compare against: a reference for what the loopback,
 * the scheduler and the load generator add by themselves.
 *
 * Usage: floor_server PORT   (0: any free port; prints "Listening on ... (port N)")
 * Build: gcc -O2 -Wall -o floor_server floor_server.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUF 4096

struct conn {
    int fd;
    int len;
    char buf[BUF];
};

static void reply(int fd, const char *body) {
    char out[64];
    int n = snprintf(out, sizeof out, "%s", body) + 1; /* with the NUL */
    if (write(fd, out, n) != n) { /* a short write of a tiny reply: the peer is gone */
    }
}

int main(int argc, char **argv) {
    int port = argc > 1 ? atoi(argv[1]) : 0;
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) || listen(lfd, 1024)) {
        perror("listen");
        return 1;
    }
    socklen_t alen = sizeof addr;
    getsockname(lfd, (struct sockaddr *)&addr, &alen);
    printf("Listening on 127.0.0.1 (port %d)\n", ntohs(addr.sin_port));
    fflush(stdout);
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data = {.ptr = NULL}};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    struct epoll_event evs[256];
    for (;;) {
        int k = epoll_wait(ep, evs, 256, -1);
        for (int i = 0; i < k; i++) {
            struct conn *c = evs[i].data.ptr;
            if (c == NULL) {
                int fd;
                while ((fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    struct conn *nc = calloc(1, sizeof *nc);
                    nc->fd = fd;
                    struct epoll_event cev = {.events = EPOLLIN, .data = {.ptr = nc}};
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &cev);
                }
                continue;
            }
            for (;;) {
                ssize_t r = read(c->fd, c->buf + c->len, BUF - c->len);
                if (r <= 0) {
                    if (r < 0 && errno == EAGAIN) break;
                    close(c->fd);
                    free(c);
                    break;
                }
                c->len += (int)r;
                int start = 0;
                for (int j = 0; j < c->len; j++) {
                    if (c->buf[j] != '\0') continue;
                    const char *msg = c->buf + start;
                    if (!strcmp(msg, "ping")) reply(c->fd, "pong");
                    else if (!strcmp(msg, "go")) reply(c->fd, "Button released");
                    else if (*msg) reply(c->fd, "error: unknown command");
                    start = j + 1;
                }
                memmove(c->buf, c->buf + start, c->len - start);
                c->len -= start;
                if (c->len == BUF) { /* a message longer than we accept */
                    close(c->fd);
                    free(c);
                    break;
                }
            }
        }
    }
}
