// Serves the files under a directory over HTTP/1.0 GET and HEAD, with
// `sendfile`: over TCP and Unix sockets the kernel copies the file to the
// socket; over TLS the transport reads and encrypts it in chunks.
//
//   file_server ROOT tcp://127.0.0.1:8080
//   file_server ROOT 'tls://127.0.0.1:8443?cert=server.pem&key=server.key'
//
// Prints one `listening on URL` line per listener, answers one request per
// connection (`Connection: close`: the answer ends with EOF, or with
// close_notify over TLS), and exits 0 on SIGINT or SIGTERM. A connection
// idle for 30 s is closed.
// Only regular files under ROOT are served: a path with a `..` segment, a
// symbolic link out of ROOT, or a directory is refused (403), a missing
// file is 404, and a request head over 8 KiB is 431. A peer that stops
// reading pauses nothing but its own connection: the file waits in the
// kernel, not in memory.

#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <string>
#include <string_view>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

#include "tact/actors/protocol.hpp"
#include "tact/runtime/errc.hpp"
#include "tact/runtime/runtime.hpp"
#include "tact/runtime/url.hpp"

#include "serve.hpp"

namespace {

// What a request head may take, as most servers allow.
constexpr size_t max_head = 8 * 1024;

// What is read and dropped after the answer before closing regardless.
constexpr size_t max_discard = 1024 * 1024;

// A connection that moves no byte either way for this long is closed.
constexpr std::chrono::seconds idle_timeout{30};

int hex(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

// The %-decoded path of a request target, without its query; false for a
// malformed escape or a NUL byte.
bool decode_path(std::string_view target, std::string& out) {
  target = target.substr(0, target.find('?'));
  out.clear();
  for (size_t i = 0; i < target.size(); ++i) {
    auto c = target[i];
    if (c == '%') {
      if (i + 2 >= target.size())
        return false;
      auto hi = hex(target[i + 1]);
      auto lo = hex(target[i + 2]);
      if (hi < 0 || lo < 0)
        return false;
      c = static_cast<char>(hi * 16 + lo);
      i += 2;
    }
    if (c == '\0')
      return false;
    out.push_back(c);
  }
  return true;
}

// Whether `path` (absolute, decoded) has an empty, `.` or `..` segment
// past the first slash, other than a final empty one.
bool has_dot_segment(const std::string& path) {
  size_t start = 1;
  while (start <= path.size()) {
    auto end = path.find('/', start);
    if (end == std::string::npos)
      end = path.size();
    auto seg = std::string_view{path}.substr(start, end - start);
    if (seg == "." || seg == "..")
      return true;
    start = end + 1;
  }
  return false;
}

class file_protocol : public tact::protocol {
public:
  explicit file_protocol(const std::string* root) : root_(root) {
    // nop
  }

  void connection_made(tact::transport& t) override {
    t_ = t;
  }

  void data_received(tact::bytes data) override {
    if (answered_) {
      // Read and dropped while the answer goes out (what a peer sends
      // after its head), up to a bound: closing with unread bytes would
      // reset the connection and could destroy the answer on its way.
      discarded_ += data.size();
      if (discarded_ > max_discard)
        t_.close();
      return;
    }
    // The end of the head may straddle reads: look from three bytes back.
    auto from = head_.size() >= 3 ? head_.size() - 3 : 0;
    head_.append(data.data(), data.size());
    auto end = head_.find("\r\n\r\n", from);
    if (end == std::string::npos)
      end = head_.find("\n\n", from);
    if (end == std::string::npos) {
      if (head_.size() > max_head)
        answer(431, "Request Header Fields Too Large");
      return;
    }
    if (end > max_head) {
      answer(431, "Request Header Fields Too Large");
      return;
    }
    handle(head_.substr(0, head_.find('\n')));
  }

  bool eof_received() override {
    if (!answered_)
      answer(400, "Bad Request");
    return false;
  }

private:
  void handle(std::string line) {
    if (!line.empty() && line.back() == '\r')
      line.pop_back();
    auto sp1 = line.find(' ');
    auto sp2 = line.rfind(' ');
    if (sp1 == std::string::npos || sp2 == sp1
        || line.compare(sp2 + 1, 7, "HTTP/1.") != 0) {
      answer(400, "Bad Request");
      return;
    }
    auto method = line.substr(0, sp1);
    auto target = std::string_view{line}.substr(sp1 + 1, sp2 - sp1 - 1);
    if (method != "GET" && method != "HEAD") {
      answer(405, "Method Not Allowed", "Allow: GET, HEAD\r\n");
      return;
    }
    head_only_ = method == "HEAD";
    std::string path;
    if (target.empty() || target[0] != '/' || !decode_path(target, path)) {
      answer(400, "Bad Request");
      return;
    }
    if (has_dot_segment(path)) {
      answer(403, "Forbidden");
      return;
    }
    auto full = *root_ + path;
    // A symbolic link may still lead out: the real path must stay inside.
    char real[PATH_MAX];
    if (::realpath(full.c_str(), real) == nullptr) {
      answer(errno == EACCES ? 403 : 404,
             errno == EACCES ? "Forbidden" : "Not Found");
      return;
    }
    std::string_view resolved{real};
    if (resolved != *root_
        && (resolved.substr(0, root_->size()) != *root_
            || resolved[root_->size()] != '/')) {
      answer(403, "Forbidden");
      return;
    }
    auto fd = ::open(real, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
      answer(errno == ENOENT ? 404 : 403,
             errno == ENOENT ? "Not Found" : "Forbidden");
      return;
    }
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
      ::close(fd);
      answer(403, "Forbidden");
      return;
    }
    answered_ = true;
    auto size = static_cast<uint64_t>(st.st_size);
    t_.write("HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\n"
             "Content-Length: " + std::to_string(size)
             + "\r\nConnection: close\r\n\r\n");
    if (!head_only_ && size > 0) {
      // Queued after the head; close() below waits for all of it.
      if (auto err = t_.sendfile(fd, 0, size))
        std::fprintf(stderr, "file_server: %s: %s\n", path.c_str(),
                     tact::describe(err).c_str());
    }
    ::close(fd);
    finish();
  }

  // Ends the answer: EOF after it (the peer reads to the end, then closes,
  // and whatever it still sends is read and dropped), or close() where
  // there is no EOF to send (TLS).
  void finish() {
    if (t_.can_write_eof())
      t_.write_eof();
    else
      t_.close();
  }

  void answer(int status, const char* reason, const char* extra = "") {
    answered_ = true;
    auto body = std::to_string(status) + " " + reason + "\n";
    t_.write("HTTP/1.0 " + std::to_string(status) + " " + reason
             + "\r\nContent-Type: text/plain\r\nContent-Length: "
             + std::to_string(body.size()) + "\r\n" + extra
             + "Connection: close\r\n\r\n" + (head_only_ ? "" : body));
    finish();
  }

  const std::string* root_;
  tact::transport t_;
  std::string head_;
  size_t discarded_ = 0;
  bool answered_ = false;
  bool head_only_ = false;
};

int usage(const char* argv0) {
  std::fprintf(stderr,
               "usage: %s ROOT URL...  (tcp://HOST:PORT, unix://PATH, "
               "tls://HOST:PORT?cert=FILE&key=FILE)\n",
               argv0);
  return 2;
}

} // namespace

int main(int argc, char** argv) {
  if (argc < 3)
    return usage(argv[0]);
  char real[PATH_MAX];
  if (::realpath(argv[1], real) == nullptr) {
    std::fprintf(stderr, "file_server: %s: %s\n", argv[1],
                 std::strerror(errno));
    return 2;
  }
  // Served paths are compared with this, which ends without a slash
  // (except for "/" itself, which then serves everything).
  std::string root = real;
  if (root == "/")
    root.clear();
  std::vector<tact::url> urls;
  for (int i = 2; i < argc; ++i) {
    auto u = tact::parse_url(argv[i]);
    if (!u || (u->scheme != "tcp" && u->scheme != "unix"
               && u->scheme != "tls")) {
      std::fprintf(stderr, "file_server: bad URL %s\n", argv[i]);
      return usage(argv[0]);
    }
    urls.push_back(std::move(*u));
  }
  tact::runtime rt{tact::runtime_options{.handle_signals = true}};
  auto factory = [&root] { return std::make_unique<file_protocol>(&root); };
  tact::server_options opts;
  opts.idle_timeout = idle_timeout;
  std::vector<tact::server> servers;
  if (auto code = example::listen_urls(rt, factory, urls, "file_server",
                                       servers, opts))
    return code;
  example::serve_until_signal(rt);
  return 0;
}
