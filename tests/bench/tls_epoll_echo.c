/* The floor for the TLS benchmarks: a TLS echo server written directly on
 * epoll and OpenSSL (non-blocking, the socket as OpenSSL's BIO, one thread),
 * with nothing between the two. Session tickets are OpenSSL's defaults, as
 * for the servers it is measured beside.
 *
 *   tls_epoll_echo tcp://HOST:PORT CERT KEY
 */
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
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

struct conn {
  int fd;
  SSL* ssl;
  int handshaken;
  /* Read but not yet written back. */
  char* pending;
  int pending_len;
  int pending_off;
};

static char buf[256 * 1024];

static void drop(int ep, struct conn* c) {
  epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
  close(c->fd);
  SSL_free(c->ssl);
  free(c->pending);
  free(c);
}

static void want(int ep, struct conn* c, int err) {
  struct epoll_event ev;
  ev.events = err == SSL_ERROR_WANT_WRITE ? EPOLLOUT : EPOLLIN;
  ev.data.ptr = c;
  epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

/* Moves the connection as far as it goes; 0 once it has ended. */
static int step(int ep, struct conn* c) {
  for (;;) {
    int rc;
    if (!c->handshaken) {
      rc = SSL_do_handshake(c->ssl);
      if (rc != 1) {
        int err = SSL_get_error(c->ssl, rc);
        if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
          want(ep, c, err);
          return 1;
        }
        return 0;
      }
      c->handshaken = 1;
    }
    if (c->pending_len > c->pending_off) {
      rc = SSL_write(c->ssl, c->pending + c->pending_off,
                     c->pending_len - c->pending_off);
      if (rc <= 0) {
        int err = SSL_get_error(c->ssl, rc);
        if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
          want(ep, c, err);
          return 1;
        }
        return 0;
      }
      c->pending_off += rc;
      continue;
    }
    rc = SSL_read(c->ssl, buf, sizeof(buf));
    if (rc <= 0) {
      int err = SSL_get_error(c->ssl, rc);
      if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
        want(ep, c, err);
        return 1;
      }
      if (err == SSL_ERROR_ZERO_RETURN)
        SSL_shutdown(c->ssl); /* close_notify back */
      return 0;
    }
    /* Echo at once; what the socket does not take waits in `pending`. */
    int w = SSL_write(c->ssl, buf, rc);
    if (w == rc)
      continue;
    int err = w <= 0 ? SSL_get_error(c->ssl, w) : 0;
    if (w <= 0 && err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE)
      return 0;
    /* SSL_write without partial writes: all of `rc` again later. */
    free(c->pending);
    c->pending = malloc((size_t)rc);
    memcpy(c->pending, buf, (size_t)rc);
    c->pending_len = rc;
    c->pending_off = 0;
    want(ep, c, w <= 0 ? err : SSL_ERROR_WANT_WRITE);
    return 1;
  }
}

int main(int argc, char** argv) {
  if (argc != 4 || strncmp(argv[1], "tcp://", 6) != 0) {
    fprintf(stderr, "usage: %s tcp://HOST:PORT CERT KEY\n", argv[0]);
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  char host[256];
  snprintf(host, sizeof(host), "%s", argv[1] + 6);
  char* colon = strrchr(host, ':');
  if (colon == NULL)
    return 2;
  *colon = '\0';
  struct sockaddr_in addr;
  memset(&addr, 0, sizeof(addr));
  addr.sin_family = AF_INET;
  addr.sin_port = htons((uint16_t)atoi(colon + 1));
  if (inet_pton(AF_INET, host, &addr.sin_addr) != 1)
    return 2;
  SSL_CTX* ctx = SSL_CTX_new(TLS_server_method());
  if (ctx == NULL || SSL_CTX_use_certificate_chain_file(ctx, argv[2]) != 1
      || SSL_CTX_use_PrivateKey_file(ctx, argv[3], SSL_FILETYPE_PEM) != 1) {
    ERR_print_errors_fp(stderr);
    return 1;
  }
  /* The record may move while SSL_write waits (the echo copies it). */
  SSL_CTX_set_mode(ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  int one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (bind(lfd, (struct sockaddr*)&addr, sizeof(addr)) != 0
      || listen(lfd, 1024) != 0) {
    perror("bind");
    return 1;
  }
  int ep = epoll_create1(0);
  struct epoll_event ev;
  ev.events = EPOLLIN;
  ev.data.ptr = NULL;
  epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
  struct epoll_event events[256];
  for (;;) {
    int n = epoll_wait(ep, events, 256, -1);
    for (int i = 0; i < n; ++i) {
      struct conn* c = events[i].data.ptr;
      if (c == NULL) {
        for (;;) {
          int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK);
          if (fd < 0)
            break;
          setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
          c = calloc(1, sizeof(*c));
          c->fd = fd;
          c->ssl = SSL_new(ctx);
          SSL_set_fd(c->ssl, fd);
          SSL_set_accept_state(c->ssl);
          struct epoll_event cev;
          cev.events = EPOLLIN;
          cev.data.ptr = c;
          epoll_ctl(ep, EPOLL_CTL_ADD, fd, &cev);
          if (!step(ep, c))
            drop(ep, c);
        }
        continue;
      }
      if (!step(ep, c))
        drop(ep, c);
    }
  }
}
