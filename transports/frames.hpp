#pragma once

// The frame formats of tact's framing layers (tact/transports/framing.hpp),
// as a parser and an encoder that do no I/O.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include <caf/error.hpp>
#include <caf/expected.hpp>

#include "tact/export.hpp"
#include "tact/runtime/bytes.hpp"

namespace tact {

/// Lines ended by a delimiter (`"\n"`, `"\r\n"`, `"\0"`, ...). A frame is
/// the line without its delimiter; writing a frame appends the delimiter.
struct line_framing {
  /// What ends a line: at least one byte.
  std::string delimiter = "\n";
  /// The longest line read, without the delimiter; a longer one is
  /// `errc::frame_too_large`. Writes are not checked against it, but a
  /// line to write must not contain the delimiter.
  size_t max_length = 64 * 1024;
};

/// Frames behind a big-endian length header (the payload's size, header
/// not included).
struct length_prefix_framing {
  /// Bytes of the header: 1, 2, 4 or 8.
  unsigned header_size = 4;
  /// The largest payload read or written; more is
  /// `errc::frame_too_large`. What the header can express bounds it too.
  uint64_t max_frame_size = 16 * 1024 * 1024;
};

/// One of the frame formats.
using framing = std::variant<line_framing, length_prefix_framing>;

/// `errc::invalid_argument` for an empty delimiter, a maximum of zero
/// line length, or a header size other than 1, 2, 4 or 8.
[[nodiscard]] TACT_EXPORT caf::error check_framing(const framing& f);

/// Cuts a byte stream into frames. Bytes go in with `feed` in any chunks;
/// frames come out with `next`, one at a time, so a reader can stop
/// between any two. A chunk that holds exactly one frame (after a header
/// that came before it, or before its delimiter) becomes that frame without
/// a copy.
class TACT_EXPORT frame_decoder {
public:
  /// `f` must pass `check_framing`.
  explicit frame_decoder(framing f);

  /// Appends `chunk`.
  void feed(bytes chunk);

  /// The next whole frame; nothing while more bytes are needed. A frame
  /// over the maximum is `errc::frame_too_large`, reported as soon as it
  /// is certain (a header that announces it, a line that has grown past
  /// it); the decoder then stays failed.
  caf::expected<std::optional<bytes>> next();

  /// At the end of the stream, once `next` gave nothing: the bytes left,
  /// as a last line without its delimiter (line framing), or
  /// `errc::incomplete_frame` (length-prefix framing, inside a frame).
  /// Nothing when no byte is left.
  caf::expected<std::optional<bytes>> finish();

  /// Bytes held: frames not taken and the start of the next one.
  [[nodiscard]] size_t buffered() const noexcept;

  /// Everything held, unparsed (a header already read is put back), for a
  /// protocol that takes the stream over. The decoder is empty after.
  bytes take_rest();

private:
  caf::expected<std::optional<bytes>> next_line(const line_framing& f);
  caf::expected<std::optional<bytes>> next_prefixed(
    const length_prefix_framing& f);
  bytes cut(size_t begin, size_t end, size_t skip);
  caf::error fail(caf::error err);

  framing framing_;
  bytes buf_;
  // Where the unparsed bytes begin, and (lines) where the search for the
  // delimiter resumes.
  size_t pos_ = 0;
  size_t scan_ = 0;
  // Length-prefix: the size announced by a header already taken out.
  std::optional<uint64_t> pending_;
  caf::error failed_;
};

/// Turns one outgoing frame into the chunks to write, appended to `out`:
/// `payload` and the delimiter or header, with no copy of a large payload.
/// `errc::frame_too_large` for a payload over `max_frame_size` or what the
/// header can express (length-prefix framing); `errc::invalid_argument`
/// for a line that contains the delimiter.
TACT_EXPORT caf::error encode_frame(const framing& f, bytes payload,
                                    std::vector<bytes>& out);

} // namespace tact
