/* The floor for serving a file: a blocking HTTP/1.0 server in C that reads
 * one request head, answers with the whole file named at start by
 * sendfile(2) in a loop, and closes. One connection at a time, no parsing
 * beyond the end of the head.
 *
 *   sendfile_server FILE tcp://127.0.0.1:PORT     (port 0: any free one)
 *
 * Prints `listening on tcp://127.0.0.1:PORT`; exits on SIGTERM. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

static int read_head(int fd) {
  char buf[8192];
  size_t used = 0;
  while (used < sizeof(buf)) {
    ssize_t n = read(fd, buf + used, sizeof(buf) - used);
    if (n <= 0)
      return -1;
    used += (size_t) n;
    for (size_t i = 3; i < used; ++i)
      if (memcmp(buf + i - 3, "\r\n\r\n", 4) == 0)
        return 0;
  }
  return -1;
}

int main(int argc, char** argv) {
  if (argc != 3 || strncmp(argv[2], "tcp://127.0.0.1:", 16) != 0) {
    fprintf(stderr, "usage: %s FILE tcp://127.0.0.1:PORT\n", argv[0]);
    return 2;
  }
  int file = open(argv[1], O_RDONLY | O_CLOEXEC);
  struct stat st;
  if (file < 0 || fstat(file, &st) != 0) {
    perror(argv[1]);
    return 1;
  }
  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  struct sockaddr_in addr = {0};
  addr.sin_family = AF_INET;
  addr.sin_port = htons((unsigned short) atoi(argv[2] + 16));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (bind(lfd, (struct sockaddr*) &addr, sizeof(addr)) != 0
      || listen(lfd, 128) != 0
      || getsockname(lfd, (struct sockaddr*) &addr, &len) != 0) {
    perror("listen");
    return 1;
  }
  printf("listening on tcp://127.0.0.1:%d\n", ntohs(addr.sin_port));
  fflush(stdout);
  for (;;) {
    int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0)
      continue;
    if (read_head(fd) == 0) {
      char head[256];
      int n = snprintf(head, sizeof(head),
                       "HTTP/1.0 200 OK\r\nContent-Type: "
                       "application/octet-stream\r\nContent-Length: %lld\r\n"
                       "Connection: close\r\n\r\n",
                       (long long) st.st_size);
      if (write(fd, head, (size_t) n) == n) {
        off_t off = 0;
        while (off < st.st_size)
          if (sendfile(fd, file, &off, (size_t) (st.st_size - off)) <= 0)
            break;
      }
    }
    close(fd);
  }
}
