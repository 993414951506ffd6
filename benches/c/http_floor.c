/* The loopback floor for benches/serve_bench.py: an HTTP/1.1 server that does no work.
 * One thread, poll(), keep-alive; each complete request (headers, then Content-Length
 * bytes of body) is answered "200 OK" with an empty body. Whatever a real server does on
 * top of this (parsing, scoring, threads) can only make it slower, so its requests/s in
 * the same harness is the most any server can reach there.
 *
 *     cc -O2 -o http_floor benches/c/http_floor.c && ./http_floor PORT
 */
#define _GNU_SOURCE /* memmem */
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_CONN 256
#define BUF (1 << 22)

static const char RESPONSE[] = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";

struct conn {
    char *buf;
    size_t len;
};

/* Bytes of the first complete request in c->buf, or 0 if it is not complete yet. */
static size_t complete(const struct conn *c) {
    char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
    if (!end) return 0;
    size_t head = (size_t)(end - c->buf) + 4, body = 0;
    for (char *p = c->buf; p < end; p++) {
        if ((p == c->buf || p[-1] == '\n') && strncasecmp(p, "content-length:", 15) == 0) {
            body = strtoul(p + 15, NULL, 10);
            break;
        }
    }
    return c->len >= head + body ? head + body : 0;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s PORT\n", argv[0]);
        return 2;
    }
    int one = 1, ls = socket(AF_INET, SOCK_STREAM, 0);
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1])),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(ls, (struct sockaddr *)&a, sizeof a) || listen(ls, 128)) {
        perror("listen");
        return 1;
    }
    struct pollfd fds[MAX_CONN + 1] = {{.fd = ls, .events = POLLIN}};
    struct conn conns[MAX_CONN + 1] = {{0}};
    int n = 1;
    for (;;) {
        if (poll(fds, n, -1) < 0) continue;
        if ((fds[0].revents & POLLIN) && n <= MAX_CONN) {
            int c = accept(ls, NULL, NULL);
            if (c >= 0) {
                setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                fds[n] = (struct pollfd){.fd = c, .events = POLLIN};
                conns[n] = (struct conn){.buf = malloc(BUF), .len = 0};
                n++;
            }
        }
        for (int i = 1; i < n; i++) {
            if (!(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
            struct conn *c = &conns[i];
            ssize_t r = c->len < BUF ? read(fds[i].fd, c->buf + c->len, BUF - c->len) : -1;
            if (r <= 0) {
                close(fds[i].fd);
                free(c->buf);
                fds[i] = fds[n - 1];
                conns[i] = conns[n - 1];
                n--;
                i--;
                continue;
            }
            c->len += (size_t)r;
            size_t used;
            while ((used = complete(c)) > 0) {
                if (write(fds[i].fd, RESPONSE, sizeof RESPONSE - 1) < 0) break;
                memmove(c->buf, c->buf + used, c->len - used);
                c->len -= used;
            }
        }
    }
}
