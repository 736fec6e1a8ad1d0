/* The reference: a plain epoll echo server in C, the physical limit of a
 * core on this machine. One read and one write per request; write interest
 * only while something is left to send.
 *
 *   epoll_echo [--threads N] tcp://127.0.0.1:0 | unix://PATH
 *
 * With --threads N (default 1), N threads each run their own epoll: on TCP
 * each has its own listening socket on the one port (SO_REUSEPORT, the
 * kernel spreads connections by their addresses); on a Unix socket they
 * share the listener (EPOLLEXCLUSIVE). Prints `listening on URL`, echoes
 * until SIGINT/SIGTERM. */

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
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

/* With `port` > 0, that port instead of the URL's (the other threads'
 * listeners); `reuse_port`: SO_REUSEPORT before bind. */
static int listen_on(const char* url, char* shown, size_t shown_len,
                     int reuse_port, int port) {
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
    in.sin_port = htons((uint16_t) (port > 0 ? port : atoi(colon + 1)));
    if (inet_pton(AF_INET, host, &in.sin_addr) != 1)
      return -1;
    fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (reuse_port)
      setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
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

/* One thread's loop: its epoll, the listener `lfd` (shared: `exclusive`)
 * and the connections it accepted. */
struct worker {
  int lfd;
  int exclusive;
  pthread_t thread;
};

static void* serve(void* arg) {
  struct worker* w = arg;
  int lfd = w->lfd;
  int ep = epoll_create1(0);
  struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
  if (w->exclusive)
    ev.events |= EPOLLEXCLUSIVE;
  epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
  static __thread char buf[256 * 1024];
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
  return NULL;
}

int main(int argc, char** argv) {
  int threads = 1;
  const char* url = NULL;
  for (int i = 1; i < argc; ++i) {
    if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc)
      threads = atoi(argv[++i]);
    else if (url == NULL)
      url = argv[i];
    else
      url = "";
  }
  if (url == NULL || *url == '\0' || threads < 1 || threads > 1024) {
    fprintf(stderr, "usage: %s [--threads N] tcp://HOST:PORT | unix://PATH\n",
            argv[0]);
    return 2;
  }
  int tcp = strncmp(url, "tcp://", 6) == 0;
  char shown[256];
  int lfd = listen_on(url, shown, sizeof(shown), tcp && threads > 1, 0);
  if (lfd < 0) {
    fprintf(stderr, "epoll_echo: cannot listen on %s: %s\n", url,
            strerror(errno));
    return 1;
  }
  signal(SIGPIPE, SIG_IGN);
  /* The other threads take no signal: SIGINT and SIGTERM stop the first
   * one's wait, and main's return ends the process. */
  sigset_t stop_set, old;
  sigemptyset(&stop_set);
  sigaddset(&stop_set, SIGINT);
  sigaddset(&stop_set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_set, &old);
  struct worker* workers = calloc((size_t) threads, sizeof(*workers));
  struct sockaddr_in bound;
  socklen_t bound_len = sizeof(bound);
  getsockname(lfd, (struct sockaddr*) &bound, &bound_len);
  for (int t = 0; t < threads; ++t) {
    workers[t].lfd = lfd;
    workers[t].exclusive = !tcp && threads > 1;
    if (t > 0 && tcp) {
      char ignored[256];
      workers[t].lfd = listen_on(url, ignored, sizeof(ignored), 1,
                                 ntohs(bound.sin_port));
      if (workers[t].lfd < 0) {
        fprintf(stderr, "epoll_echo: cannot listen again on %s: %s\n", url,
                strerror(errno));
        return 1;
      }
    }
  }
  for (int t = 1; t < threads; ++t)
    pthread_create(&workers[t].thread, NULL, serve, &workers[t]);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  struct sigaction sa;
  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = on_signal; /* no SA_RESTART: epoll_wait returns */
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  printf("listening on %s\n", shown);
  fflush(stdout);
  serve(&workers[0]);
  return 0;
}
