// A shard's append-only log (see aof.hpp for the format).

#include "aof.hpp"

#include <cerrno>
#include <cstdio>
#include <cstring>

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

namespace kv {

namespace {

constexpr char magic[] = "kv_cluster aof 1\n";
constexpr size_t magic_len = sizeof(magic) - 1;
constexpr uint64_t rewrite_min = 1 << 20;
// A record larger than this is garbage, not a value (the gateway takes
// no bulk string over 512 MiB).
constexpr uint32_t record_max = (1u << 30);

void put32(std::string& out, uint32_t x) {
  for (int i = 0; i < 4; ++i)
    out.push_back(static_cast<char>((x >> (8 * i)) & 0xff));
}

void put64(std::string& out, uint64_t x) {
  for (int i = 0; i < 8; ++i)
    out.push_back(static_cast<char>((x >> (8 * i)) & 0xff));
}

uint64_t get(const char* p, int n) {
  uint64_t x = 0;
  for (int i = 0; i < n; ++i)
    x |= uint64_t{static_cast<unsigned char>(p[i])} << (8 * i);
  return x;
}

uint64_t fnv1a(const char* p, size_t n) {
  uint64_t h = 14695981039346656037ull;
  for (size_t i = 0; i < n; ++i) {
    h ^= static_cast<unsigned char>(p[i]);
    h *= 1099511628211ull;
  }
  return h;
}

void encode(std::string& out, const entry& e) {
  auto body_len = write_log::record_size(e) - 12;
  auto at = out.size();
  put32(out, static_cast<uint32_t>(body_len));
  put64(out, 0); // the checksum, once the body is there
  out.push_back(e.present ? 1 : 0);
  put64(out, e.version);
  put32(out, static_cast<uint32_t>(e.key.size()));
  out += e.key;
  put32(out, static_cast<uint32_t>(e.value.size()));
  out += e.value;
  auto sum = fnv1a(out.data() + at + 12, body_len);
  for (int i = 0; i < 8; ++i)
    out[at + 4 + i] = static_cast<char>((sum >> (8 * i)) & 0xff);
}

// One record's body; false if it does not parse.
bool decode(const char* p, size_t n, entry& e) {
  if (n < 17)
    return false;
  e.present = p[0] != 0;
  e.version = get(p + 1, 8);
  auto klen = get(p + 9, 4);
  if (13 + klen + 4 > n)
    return false;
  e.key.assign(p + 13, klen);
  auto vlen = get(p + 13 + klen, 4);
  if (17 + klen + vlen != n)
    return false;
  e.value.assign(p + 17 + klen, vlen);
  return true;
}

std::string errno_text(const char* what, const std::string& path) {
  return std::string{what} + " " + path + ": " + std::strerror(errno);
}

bool sync_dir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0)
    return false;
  bool ok = ::fsync(fd) == 0;
  ::close(fd);
  return ok;
}

} // namespace

bool parse_fsync(const std::string& text, fsync_policy& out) {
  if (text == "always")
    out = fsync_policy::always;
  else if (text == "everysec")
    out = fsync_policy::everysec;
  else if (text == "no")
    out = fsync_policy::no;
  else
    return false;
  return true;
}

write_log::write_log(std::string path, int fd, fsync_policy policy,
                     std::string header)
  : path_(std::move(path)), fd_(fd), policy_(policy),
    header_(std::move(header)) {
  if (policy_ == fsync_policy::everysec)
    syncer_ = std::thread{[this] { sync_every_second(); }};
}

write_log::~write_log() {
  if (syncer_.joinable()) {
    {
      std::lock_guard<std::mutex> guard{mx_};
      stopping_ = true;
    }
    cv_.notify_all();
    syncer_.join();
  }
  if (policy_ != fsync_policy::no)
    (void) ::fdatasync(fd_);
  ::close(fd_);
}

std::unique_ptr<write_log>
write_log::open(const std::string& dir, uint32_t id, uint32_t shards,
                fsync_policy policy, std::vector<entry>& out,
                std::string& error, std::string& note) {
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    error = errno_text("cannot make", dir);
    return nullptr;
  }
  auto path = dir + "/shard-" + std::to_string(id) + ".aof";
  int fd = -1;
  // The lock must be on the file the path names: a shard rewriting the
  // log renames a new file over it, and the old one, which another
  // process may have opened just before, is then unlinked.
  for (int attempt = 0; fd < 0; ++attempt) {
    fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
      error = errno_text("cannot open", path);
      return nullptr;
    }
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
      error = errno == EWOULDBLOCK ? path + " is in use by another shard"
                                   : errno_text("cannot lock", path);
      ::close(fd);
      return nullptr;
    }
    struct stat mine {};
    struct stat named {};
    if (::fstat(fd, &mine) == 0 && ::stat(path.c_str(), &named) == 0
        && mine.st_dev == named.st_dev && mine.st_ino == named.st_ino)
      break;
    ::close(fd);
    fd = -1;
    if (attempt == 3) {
      error = path + " keeps being replaced";
      return nullptr;
    }
  }
  std::string header{magic, magic_len};
  put32(header, shards);
  put32(header, id);
  // The whole file: replaying reads every byte of it anyway.
  std::string text;
  {
    char buf[1 << 16];
    for (;;) {
      auto n = ::read(fd, buf, sizeof(buf));
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0) {
        error = errno_text("cannot read", path);
        ::close(fd);
        return nullptr;
      }
      if (n == 0)
        break;
      text.append(buf, static_cast<size_t>(n));
    }
  }
  size_t good = 0;
  // A whole record that does not check out (not one cut short at the end).
  bool damaged = false;
  if (text.size() >= header.size()) {
    if (text.compare(0, magic_len, magic) != 0) {
      error = path + " is not a kv_cluster log";
      ::close(fd);
      return nullptr;
    }
    if (text.compare(0, header.size(), header) != 0) {
      error = path + " is the log of shard " + std::to_string(get(text.data() + magic_len + 4, 4))
              + " of " + std::to_string(get(text.data() + magic_len, 4))
              + ", not of shard " + std::to_string(id) + " of "
              + std::to_string(shards);
      ::close(fd);
      return nullptr;
    }
    good = header.size();
    while (text.size() - good >= 12) {
      auto len = get(text.data() + good, 4);
      if (len <= record_max && text.size() - good - 12 < len)
        break; // cut short by a crash: a torn tail
      auto body = text.data() + good + 12;
      entry e;
      if (len > record_max || fnv1a(body, len) != get(text.data() + good + 4, 8)
          || !decode(body, len, e)) {
        damaged = true;
        break;
      }
      out.push_back(std::move(e));
      good += 12 + len;
    }
  } else if (!text.empty() && text.compare(0, text.size(), header, 0,
                                           text.size()) != 0) {
    error = path + " is not a kv_cluster log";
    ::close(fd);
    return nullptr;
  }
  std::unique_ptr<write_log> log{new write_log(path, fd, policy, header)};
  if (good < text.size()) {
    if (damaged) {
      // Kept as it was, for a look: the neighbours refill what follows.
      auto copy = path + ".damaged";
      int cfd = ::open(copy.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
                       0600);
      bool kept = cfd >= 0;
      for (size_t at = 0; kept && at < text.size();) {
        auto n = ::write(cfd, text.data() + at, text.size() - at);
        if (n < 0 && errno == EINTR)
          continue;
        kept = n > 0;
        at += kept ? static_cast<size_t>(n) : 0;
      }
      kept = kept && ::fsync(cfd) == 0;
      if (cfd >= 0)
        ::close(cfd);
      if (!kept) {
        error = path + " is damaged at byte " + std::to_string(good)
                + ", and it cannot be kept as " + copy;
        return nullptr;
      }
      log->damaged_ = true;
      note = "a damaged record at byte " + std::to_string(good) + " after "
             + std::to_string(out.size()) + " records: the log as it was is in "
             + copy + "; " + std::to_string(text.size() - good)
             + " bytes dropped";
    } else if (good > 0) {
      note = "cut a torn tail of " + std::to_string(text.size() - good)
             + " bytes after " + std::to_string(out.size()) + " records";
    }
    if (::ftruncate(fd, static_cast<off_t>(good)) != 0) {
      error = errno_text("cannot cut", path);
      return nullptr;
    }
  }
  if (good == 0) {
    // A new log (or one cut before its header was whole).
    if (::lseek(fd, 0, SEEK_SET) < 0) {
      error = errno_text("cannot seek", path);
      return nullptr;
    }
    log->write_all(fd, header.data(), header.size());
    if (::fsync(fd) != 0 || !sync_dir(dir)) {
      error = errno_text("cannot sync", path);
      return nullptr;
    }
    good = header.size();
  }
  if (::lseek(fd, 0, SEEK_END) < 0) {
    error = errno_text("cannot seek", path);
    return nullptr;
  }
  log->size_ = good;
  return log;
}

void write_log::append(const entry& e) {
  encode(pending_, e);
}

void write_log::commit() {
  if (pending_.empty())
    return;
  write_all(fd_, pending_.data(), pending_.size());
  size_ += pending_.size();
  pending_.clear();
  switch (policy_) {
    case fsync_policy::always:
      if (::fdatasync(fd_) != 0)
        fail("cannot sync");
      break;
    case fsync_policy::everysec:
      dirty_.store(true, std::memory_order_relaxed);
      break;
    case fsync_policy::no:
      break;
  }
}

bool write_log::due(uint64_t live) const noexcept {
  return size_ > rewrite_min && size_ > 2 * (live + header_.size())
         && size_ > retry_above_;
}

std::string write_log::rewrite(
  const std::unordered_map<std::string, entry>& data) {
  // The log is whole without its rewrite: a failure leaves it as it is,
  // growing, and the next try waits until it has doubled.
  auto tmp = path_ + ".rewrite";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  auto give_up = [&](const char* what) {
    auto why = errno_text(what, tmp);
    if (fd >= 0)
      ::close(fd);
    ::unlink(tmp.c_str());
    retry_above_ = 2 * size_;
    return why;
  };
  if (fd < 0)
    return give_up("cannot open");
  std::string buf = header_;
  uint64_t written = 0;
  auto put = [&] {
    for (size_t at = 0; at < buf.size();) {
      auto n = ::write(fd, buf.data() + at, buf.size() - at);
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0)
        return false;
      at += static_cast<size_t>(n);
    }
    written += buf.size();
    buf.clear();
    return true;
  };
  for (auto& [key, e] : data) {
    encode(buf, e);
    if (buf.size() >= (1 << 20) && !put())
      return give_up("cannot write");
  }
  if (!put())
    return give_up("cannot write");
  // Locked before it takes the name, so that no second shard can open it
  // in between.
  if (::fsync(fd) != 0 || ::flock(fd, LOCK_EX | LOCK_NB) != 0)
    return give_up("cannot sync");
  if (::rename(tmp.c_str(), path_.c_str()) != 0)
    return give_up("cannot rename");
  // What waited to be appended is in `data`, and so in the new file.
  pending_.clear();
  {
    std::lock_guard<std::mutex> guard{fd_mx_};
    ::close(fd_);
    fd_ = fd;
  }
  size_ = written;
  retry_above_ = 0;
  // The rename is the switch; should the directory not reach the disk, a
  // crash finds one of the two logs, both whole.
  auto slash = path_.rfind('/');
  (void) sync_dir(slash == std::string::npos ? "." : path_.substr(0, slash));
  return {};
}

void write_log::fail(const char* what) const {
  std::fprintf(stderr, "kv_cluster shard: %s %s: %s; exiting\n", what,
               path_.c_str(), std::strerror(errno));
  std::fflush(stderr);
  std::fflush(stdout);
  // No orderly shutdown: what is in memory must not be acknowledged, and
  // the launcher restarts the shard, which replays what was logged.
  ::_exit(1);
}

void write_log::write_all(int fd, const char* data, size_t len) const {
  while (len > 0) {
    auto n = ::write(fd, data, len);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      fail("cannot write");
    data += n;
    len -= static_cast<size_t>(n);
  }
}

void write_log::sync_every_second() {
  std::unique_lock<std::mutex> lock{mx_};
  while (!stopping_) {
    cv_.wait_for(lock, std::chrono::seconds{1});
    if (!dirty_.exchange(false, std::memory_order_relaxed))
      continue;
    lock.unlock();
    {
      std::lock_guard<std::mutex> guard{fd_mx_};
      if (::fdatasync(fd_) != 0)
        fail("cannot sync");
    }
    lock.lock();
  }
}

} // namespace kv
