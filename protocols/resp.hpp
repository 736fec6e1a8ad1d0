#pragma once

// RESP, the Redis serialization protocol: a parser for the commands that
// clients send and encoders for the replies, doing no I/O.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <caf/error.hpp>
#include <caf/expected.hpp>

#include "tact/export.hpp"

namespace tact::resp {

/// A command and its arguments, e.g. `{"SET", "key", "value"}`. Arguments
/// are binary: they may hold any byte.
using command = std::vector<std::string>;

/// What a command may hold; more is a protocol error.
struct limits {
  /// The longest bulk string, in bytes.
  size_t max_bulk = 512 * 1024 * 1024;
  /// The most elements in an array.
  size_t max_elements = 1024 * 1024;
  /// The longest inline command, in bytes, without its line end.
  size_t max_inline = 64 * 1024;
};

/// Cuts what a client sends into commands. Bytes go in with `feed` in any
/// chunks; commands come out with `next`, one at a time, so a reader can
/// stop between any two (pipelining). A command is either an array of bulk
/// strings (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`) or an inline line
/// (`GET k\r\n`: split on spaces and tabs, ended by `\n` with an optional
/// `\r` before it). Empty arrays (`*0`, `*-1`) and empty lines are skipped.
/// Not thread-safe: one decoder per connection.
class TACT_EXPORT command_decoder {
public:
  explicit command_decoder(limits l = {});

  /// Appends `chunk`. Nothing happens once the decoder has failed.
  void feed(std::string_view chunk);

  /// The next whole command; nothing while more bytes are needed. A
  /// malformed stream or one over the limits is `errc::malformed_input`
  /// with Redis's wording (e.g. `"invalid bulk length"`), reported as soon
  /// as it is certain (a header that announces too much fails before its
  /// data comes); the decoder then stays failed.
  caf::expected<std::optional<command>> next();

  /// Bytes fed and not yet given out: commands not taken and the part of
  /// the next one received so far.
  [[nodiscard]] size_t buffered() const noexcept;

private:
  enum class state { start, element, bulk, bulk_end };

  caf::expected<std::optional<command>> next_inline();
  size_t take_bulk(const char* data, size_t size);
  void consume(size_t n);
  caf::error fail(std::string what);

  limits limits_;
  std::string buf_;
  // Where the unparsed bytes begin, and (inline) where the search for the
  // line end resumes.
  size_t pos_ = 0;
  size_t scan_ = 0;
  // The array being read: its elements so far, how many are missing, the
  // bytes of the current bulk string still to come, and how many bytes of
  // the stream it took.
  state state_ = state::start;
  command cmd_;
  size_t missing_ = 0;
  size_t bulk_left_ = 0;
  size_t partial_ = 0;
  caf::error failed_;
};

/// Appends a simple string, `+text\r\n`. A `\r` or `\n` in `text` becomes
/// a space.
TACT_EXPORT void append_simple(std::string& out, std::string_view text);

/// Appends an error, `-text\r\n`; `text` is the whole message, its prefix
/// included (`"ERR unknown command"`). A `\r` or `\n` becomes a space.
TACT_EXPORT void append_error(std::string& out, std::string_view text);

/// Appends an integer, `:42\r\n`.
TACT_EXPORT void append_integer(std::string& out, int64_t x);

/// Appends a bulk string, `$5\r\nhello\r\n`.
TACT_EXPORT void append_bulk(std::string& out, std::string_view data);

/// Appends the null bulk string, `$-1\r\n`.
TACT_EXPORT void append_null(std::string& out);

/// Appends the header of an array of `n` elements, `*n\r\n`; the elements
/// follow it.
TACT_EXPORT void append_array_header(std::string& out, size_t n);

/// Appends `cmd` as a client sends it: an array of bulk strings.
TACT_EXPORT void append_command(std::string& out, const command& cmd);

} // namespace tact::resp
