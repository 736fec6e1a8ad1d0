#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace tact {

/// A chunk of bytes as it travels between transports and protocols.
///
/// Moving a `bytes` value into a message and out of it again never copies the
/// payload, so a protocol that forwards what it received (an echo, a relay)
/// hands the same buffer from the read to the write.
using bytes = std::vector<char>;

/// Copies `text` into a new `bytes` value.
[[nodiscard]] inline bytes to_bytes(std::string_view text) {
  return bytes(text.begin(), text.end());
}

/// Copies `data` into a new string.
[[nodiscard]] inline std::string to_string(const bytes& data) {
  return std::string(data.begin(), data.end());
}

} // namespace tact
