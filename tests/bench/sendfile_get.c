/* The client of the sendfile benchmark, and the maker of its file.
 *
 *   sendfile_get --make FILE SIZE    writes SIZE bytes: 8-byte words, each
 *                                     its own offset (little-endian)
 *   sendfile_get HOST PORT PATH      GETs PATH over HTTP/1.0 and checks
 *                                     every word of the body
 *
 * Prints `bytes=N seconds=S ok=1` (ok=0 on a short or wrong body). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

static int make(const char* path, unsigned long long size) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    perror(path);
    return 1;
  }
  static uint64_t block[1 << 17];
  for (unsigned long long off = 0; off < size; off += sizeof(block)) {
    for (size_t i = 0; i < sizeof(block) / 8; ++i)
      block[i] = off + i * 8;
    size_t n = size - off < sizeof(block) ? (size_t) (size - off)
                                          : sizeof(block);
    if (write(fd, block, n) != (ssize_t) n) {
      perror("write");
      return 1;
    }
  }
  return close(fd) == 0 ? 0 : 1;
}

int main(int argc, char** argv) {
  if (argc == 4 && strcmp(argv[1], "--make") == 0)
    return make(argv[2], strtoull(argv[3], NULL, 10));
  if (argc != 4) {
    fprintf(stderr, "usage: %s HOST PORT PATH | --make FILE SIZE\n", argv[0]);
    return 2;
  }
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in addr = {0};
  addr.sin_family = AF_INET;
  addr.sin_port = htons((unsigned short) atoi(argv[2]));
  inet_pton(AF_INET, argv[1], &addr.sin_addr);
  double t0 = now();
  if (connect(fd, (struct sockaddr*) &addr, sizeof(addr)) != 0) {
    perror("connect");
    return 1;
  }
  char req[512];
  int n = snprintf(req, sizeof(req), "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n",
                   argv[3], argv[1]);
  if (write(fd, req, (size_t) n) != n)
    return 1;
  static char buf[1 << 20];
  size_t used = 0;
  char* body = NULL;
  while (body == NULL) {
    ssize_t r = read(fd, buf + used, sizeof(buf) - used - 1);
    if (r <= 0) {
      fprintf(stderr, "no response head\n");
      return 1;
    }
    used += (size_t) r;
    buf[used] = 0;
    body = strstr(buf, "\r\n\r\n");
  }
  body += 4;
  const char* cl = strcasestr(buf, "Content-Length:");
  unsigned long long want = cl ? strtoull(cl + 15, NULL, 10) : 0;
  /* The body is checked word by word at its offset. */
  unsigned long long got = 0;
  int ok = 1;
  uint64_t word = 0;
  unsigned have = 0;
  size_t start = (size_t) (body - buf);
  for (;;) {
    size_t i = start;
    while (i < used) {
      if (have == 0 && used - i >= 8) {
        /* Whole words: the common case, at memory speed. */
        uint64_t w;
        memcpy(&w, buf + i, 8);
        if (w != got + i - start)
          ok = 0;
        i += 8;
        continue;
      }
      word |= (uint64_t) (unsigned char) buf[i] << (8 * have);
      if (++have == 8) {
        if (word != got + i - start - 7)
          ok = 0;
        word = 0;
        have = 0;
      }
      ++i;
    }
    got += used - start;
    start = 0;
    ssize_t r = read(fd, buf, sizeof(buf));
    if (r <= 0)
      break;
    used = (size_t) r;
  }
  double secs = now() - t0;
  if (got != want)
    ok = 0;
  printf("bytes=%llu seconds=%.6f ok=%d\n", got, secs, ok);
  close(fd);
  return ok ? 0 : 1;
}
