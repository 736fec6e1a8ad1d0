#pragma once

// A shard's append-only log of the entries it applied (Redis's AOF idea):
// replayed when the shard starts, rewritten from the live entries when it
// has grown past twice their size.
//
// The file, `DIR/shard-ID.aof`, is a header (magic, shard count, shard id)
// and then records: body length (u32), FNV-1a 64 of the body (u64), body
// (present u8, version u64, key length u32, key, value length u32, value),
// all little-endian. A record cut short by a crash, or one whose checksum
// does not match, ends the replay: the file is cut back to the last whole
// record and the shard says how many bytes it dropped. A damaged record
// with more after it (not a crash's torn tail) is cut the same way, after
// the whole file is kept as `shard-ID.aof.damaged`.

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "kv.hpp"

namespace kv {

/// When appended records reach the disk (Redis's appendfsync).
enum class fsync_policy {
  always,   // before the write is acknowledged (one fdatasync per batch)
  everysec, // by a thread of the log, once a second
  no,       // when the kernel writes them back
};

/// "always", "everysec" or "no"; false for anything else.
bool parse_fsync(const std::string& text, fsync_policy& out);

class write_log {
public:
  write_log(const write_log&) = delete;
  write_log& operator=(const write_log&) = delete;
  ~write_log();

  /// Opens `dir`/shard-`id`.aof (making both if missing), locks it
  /// against a second shard and replays it into `out`. None on failure,
  /// and `error` says why: the file is locked, belongs to another shard or
  /// shard count, or cannot be read or written. `note` tells of a torn tail
  /// that was cut.
  static std::unique_ptr<write_log>
  open(const std::string& dir, uint32_t id, uint32_t shards,
       fsync_policy policy, std::vector<entry>& out, std::string& error,
       std::string& note);

  /// The bytes `e` takes in the log.
  static size_t record_size(const entry& e) noexcept {
    return 4 + 8 + 1 + 8 + 4 + e.key.size() + 4 + e.value.size();
  }

  /// Adds `e` to what the next `commit` writes.
  void append(const entry& e);

  /// Writes what was appended; with `fsync_policy::always` it is on the
  /// disk when this returns. A log that cannot be written ends the process
  /// (exit status 1, after saying why), as Redis does: acknowledging a write
  /// that is not logged would break what the log promises.
  void commit();

  /// Whether the log has grown past twice `live` bytes (and past 1 MiB).
  [[nodiscard]] bool due(uint64_t live) const noexcept;

  /// Replaces the log with one record per entry of `data`, atomically
  /// (a new file, synced, renamed over the old one). On failure (a full
  /// disk, say) the old log stays and keeps growing, and why is returned;
  /// the next try waits until the log has doubled.
  std::string rewrite(const std::unordered_map<std::string, entry>& data);

  [[nodiscard]] uint64_t size() const noexcept {
    return size_;
  }

  [[nodiscard]] const std::string& path() const noexcept {
    return path_;
  }

  /// Whether the replay stopped at a damaged record: what followed it is
  /// to be had from the neighbours only.
  [[nodiscard]] bool damaged() const noexcept {
    return damaged_;
  }

private:
  write_log(std::string path, int fd, fsync_policy policy, std::string header);

  [[noreturn]] void fail(const char* what) const;
  void write_all(int fd, const char* data, size_t len) const;
  void sync_every_second();

  std::string path_;
  int fd_;
  fsync_policy policy_;
  std::string header_;
  std::string pending_;
  uint64_t size_ = 0;
  // After a failed rewrite: none before the log is past this.
  uint64_t retry_above_ = 0;
  bool damaged_ = false;

  // `everysec`: the thread that syncs, and what it shares with the shard.
  std::thread syncer_;
  std::mutex mx_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::atomic<bool> dirty_{false};
  // Held while syncing and while `fd_` changes (a rewrite).
  std::mutex fd_mx_;
};

} // namespace kv
