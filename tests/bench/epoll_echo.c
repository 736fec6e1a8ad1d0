/* The reference: a plain single-threaded epoll echo server in C, the
 * physical limit of one core on this machine. One read and one write per
 * request; write interest only while something is left to send.
 *
 *   epoll_echo tcp://127.0.0.1:0 | unix://PATH
 *
 * Prints `listening on URL`, echoes until SIGINT/SIGTERM. */

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

struct conn {
  int fd;
  char* pending; /* bytes the kernel did not take yet */
  size_t len;
  size_t cap;
};

static volatile sig_atomic_t stop_flag = 0;

static void on_signal(int sig) {
  (void) sig;
  stop_flag = 1;
}

static int listen_on(const char* url, char* shown, size_t shown_len) {
  int fd;
  if (strncmp(url, "unix://", 7) == 0) {
    struct sockaddr_un un;
    memset(&un, 0, sizeof(un));
    un.sun_family = AF_UNIX;
    strncpy(un.sun_path, url + 7, sizeof(un.sun_path) - 1);
    unlink(un.sun_path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (bind(fd, (struct sockaddr*) &un, sizeof(un)) != 0)
      return -1;
    snprintf(shown, shown_len, "%s", url);
  } else if (strncmp(url, "tcp://", 6) == 0) {
    char host[64];
    const char* colon = strrchr(url + 6, ':');
    if (colon == NULL || (size_t) (colon - url - 6) >= sizeof(host))
      return -1;
    memcpy(host, url + 6, (size_t) (colon - url - 6));
    host[colon - url - 6] = '\0';
    struct sockaddr_in in;
    memset(&in, 0, sizeof(in));
    in.sin_family = AF_INET;
    in.sin_port = htons((uint16_t) atoi(colon + 1));
    if (inet_pton(AF_INET, host, &in.sin_addr) != 1)
      return -1;
    fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (struct sockaddr*) &in, sizeof(in)) != 0)
      return -1;
    socklen_t len = sizeof(in);
    getsockname(fd, (struct sockaddr*) &in, &len);
    snprintf(shown, shown_len, "tcp://%s:%u", host, ntohs(in.sin_port));
  } else {
    return -1;
  }
  if (listen(fd, 1024) != 0)
    return -1;
  return fd;
}

static void drop(int ep, struct conn* c) {
  epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
  close(c->fd);
  free(c->pending);
  free(c);
}

int main(int argc, char** argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s tcp://HOST:PORT | unix://PATH\n", argv[0]);
    return 2;
  }
  char shown[256];
  int lfd = listen_on(argv[1], shown, sizeof(shown));
  if (lfd < 0) {
    fprintf(stderr, "epoll_echo: cannot listen on %s: %s\n", argv[1],
            strerror(errno));
    return 1;
  }
  signal(SIGINT, on_signal);
  signal(SIGTERM, on_signal);
  signal(SIGPIPE, SIG_IGN);
  printf("listening on %s\n", shown);
  fflush(stdout);
  int ep = epoll_create1(0);
  struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
  epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
  static char buf[256 * 1024];
  struct epoll_event events[256];
  while (!stop_flag) {
    int n = epoll_wait(ep, events, 256, -1);
    for (int i = 0; i < n; ++i) {
      struct conn* c = events[i].data.ptr;
      if (c == NULL) {
        for (;;) {
          int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK);
          if (fd < 0)
            break;
          int one = 1;
          setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
          struct conn* nc = calloc(1, sizeof(*nc));
          nc->fd = fd;
          struct epoll_event cev = {.events = EPOLLIN, .data.ptr = nc};
          epoll_ctl(ep, EPOLL_CTL_ADD, fd, &cev);
        }
        continue;
      }
      if (c->len > 0) {
        /* Writable again: flush, and read again once empty. */
        ssize_t w = send(c->fd, c->pending, c->len, MSG_NOSIGNAL);
        if (w < 0 && errno != EAGAIN) {
          drop(ep, c);
          continue;
        }
        if (w > 0) {
          memmove(c->pending, c->pending + w, c->len - (size_t) w);
          c->len -= (size_t) w;
        }
        if (c->len == 0) {
          struct epoll_event cev = {.events = EPOLLIN, .data.ptr = c};
          epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &cev);
        }
        continue;
      }
      ssize_t r = recv(c->fd, buf, sizeof(buf), 0);
      if (r <= 0) {
        if (r < 0 && errno == EAGAIN)
          continue;
        drop(ep, c);
        continue;
      }
      ssize_t w = send(c->fd, buf, (size_t) r, MSG_NOSIGNAL);
      if (w < 0) {
        if (errno != EAGAIN) {
          drop(ep, c);
          continue;
        }
        w = 0;
      }
      if (w < r) {
        /* Stop reading until the rest is out: flow control. */
        size_t left = (size_t) (r - w);
        if (c->cap < left) {
          c->pending = realloc(c->pending, left);
          c->cap = left;
        }
        memcpy(c->pending, buf + w, left);
        c->len = left;
        struct epoll_event cev = {.events = EPOLLOUT, .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &cev);
      }
    }
  }
  return 0;
}
