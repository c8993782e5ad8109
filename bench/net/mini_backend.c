/*
 * mini_backend.c - a minimal single-threaded epoll HTTP/1.1 keep-alive
 * backend for bench_upstream: answers every request with the same 110-byte
 * JSON body, like the harness's nginx backends, at a cost small enough
 * that the client is what gets measured. Plain C, no runtime.
 *
 * Usage: mini_backend PORT   (runs until killed)
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

static const char body[] =
    "{\"id\":\"7\",\"sku\":\"SKU-7\",\"in_stock\":true,\"quantity\":42,"
    "\"warehouse\":\"ams-1\",\"updated_at\":\"2024-01-01T00:00:00Z\"}";

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: mini_backend PORT\n");
        return 2;
    }
    int one = 1;
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {
        .sin_family = AF_INET,
        .sin_port = htons((uint16_t)(int)strtol(argv[1], NULL, 10))};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(ls, (struct sockaddr *)&a, sizeof a) != 0 ||
        listen(ls, 1024) != 0) {
        perror("mini_backend: bind/listen");
        return 1;
    }
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = ls};
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
    char resp[512];
    int rl = snprintf(resp, sizeof resp,
                      "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                      "Content-Length: %zu\r\n\r\n%s",
                      strlen(body), body);
    char buf[16384];
    for (;;) {
        struct epoll_event evs[256];
        int n = epoll_wait(ep, evs, 256, -1);
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == ls) {
                int c;
                while ((c = accept4(ls, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    struct epoll_event e2 = {.events = EPOLLIN, .data.fd = c};
                    epoll_ctl(ep, EPOLL_CTL_ADD, c, &e2);
                }
                continue;
            }
            ssize_t r = read(fd, buf, sizeof buf);
            if (r <= 0) {
                close(fd);
                continue;
            }
            /* One answer per request head (bench requests have no body). */
            for (ssize_t k = 3; k < r; k++)
                if (memcmp(buf + k - 3, "\r\n\r\n", 4) == 0 &&
                    write(fd, resp, (size_t)rl) < 0)
                    break;
        }
    }
}
