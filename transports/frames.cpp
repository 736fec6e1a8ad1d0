#include "tact/transports/frames.hpp"

#include <algorithm>
#include <cstring>
#include <limits>

#include "tact/runtime/errc.hpp"

namespace tact {

namespace {

// Payloads up to this size are copied behind their header or in front of
// their delimiter, so the frame goes out as one chunk; larger ones keep
// their buffer and get a chunk of their own for the header or delimiter.
constexpr size_t copy_limit = 4096;

uint64_t header_limit(unsigned header_size) {
  return header_size >= 8 ? std::numeric_limits<uint64_t>::max()
                          : (uint64_t{1} << (8 * header_size)) - 1;
}

uint64_t max_payload(const length_prefix_framing& f) {
  return std::min(f.max_frame_size, header_limit(f.header_size));
}

} // namespace

caf::error check_framing(const framing& f) {
  if (auto* lines = std::get_if<line_framing>(&f)) {
    if (lines->delimiter.empty())
      return make_error(errc::invalid_argument, "the line delimiter is empty");
    if (lines->max_length == 0)
      return make_error(errc::invalid_argument, "max_length is zero");
    return caf::none;
  }
  auto& prefixed = std::get<length_prefix_framing>(f);
  auto h = prefixed.header_size;
  if (h != 1 && h != 2 && h != 4 && h != 8)
    return make_error(errc::invalid_argument,
                      "header_size must be 1, 2, 4 or 8, not "
                        + std::to_string(h));
  return caf::none;
}

frame_decoder::frame_decoder(framing f) : framing_(std::move(f)) {
  // nop
}

void frame_decoder::feed(bytes chunk) {
  if (chunk.empty() || failed_)
    return;
  if (pos_ == buf_.size()) {
    // Nothing held: the chunk becomes the buffer.
    buf_ = std::move(chunk);
    pos_ = 0;
    scan_ = 0;
    return;
  }
  // Drop what was parsed once it is half the buffer: amortized O(1) per
  // byte, and a frame that arrives in pieces gathers at the front.
  if (pos_ > 0 && pos_ >= buf_.size() / 2) {
    buf_.erase(buf_.begin(), buf_.begin() + static_cast<ptrdiff_t>(pos_));
    scan_ = scan_ > pos_ ? scan_ - pos_ : 0;
    pos_ = 0;
  }
  buf_.insert(buf_.end(), chunk.begin(), chunk.end());
}

size_t frame_decoder::buffered() const noexcept {
  return buf_.size() - pos_;
}

caf::error frame_decoder::fail(caf::error err) {
  failed_ = err;
  buf_.clear();
  pos_ = scan_ = 0;
  pending_.reset();
  return err;
}

// The bytes [begin, end) as a frame, then `skip` more bytes are parsed.
bytes frame_decoder::cut(size_t begin, size_t end, size_t skip) {
  bytes frame;
  if (begin == 0 && end + skip == buf_.size()) {
    frame = std::move(buf_);
    frame.resize(end);
    buf_.clear();
    pos_ = scan_ = 0;
    return frame;
  }
  frame.assign(buf_.begin() + static_cast<ptrdiff_t>(begin),
               buf_.begin() + static_cast<ptrdiff_t>(end));
  pos_ = scan_ = end + skip;
  if (pos_ == buf_.size()) {
    buf_.clear();
    pos_ = scan_ = 0;
  }
  return frame;
}

caf::expected<std::optional<bytes>> frame_decoder::next() {
  if (failed_)
    return failed_;
  if (auto* lines = std::get_if<line_framing>(&framing_))
    return next_line(*lines);
  return next_prefixed(std::get<length_prefix_framing>(framing_));
}

caf::expected<std::optional<bytes>>
frame_decoder::next_line(const line_framing& f) {
  auto& delim = f.delimiter;
  auto d = delim.size();
  auto first = buf_.begin() + static_cast<ptrdiff_t>(std::max(scan_, pos_));
  auto hit = d == 1 ? std::find(first, buf_.end(), delim[0])
                    : std::search(first, buf_.end(), delim.begin(),
                                  delim.end());
  if (hit == buf_.end()) {
    // A delimiter split across chunks starts in the last d - 1 bytes.
    scan_ = std::max(pos_, buf_.size() >= d - 1 ? buf_.size() - (d - 1) : 0);
    // The line already holds every byte before scan_.
    if (scan_ - pos_ > f.max_length)
      return fail(make_error(errc::frame_too_large,
                             "a line longer than "
                               + std::to_string(f.max_length) + " bytes"));
    return std::optional<bytes>{};
  }
  auto end = static_cast<size_t>(hit - buf_.begin());
  if (end - pos_ > f.max_length)
    return fail(make_error(errc::frame_too_large,
                           "a line of " + std::to_string(end - pos_)
                             + " bytes; the limit is "
                             + std::to_string(f.max_length)));
  return std::optional<bytes>{cut(pos_, end, d)};
}

caf::expected<std::optional<bytes>>
frame_decoder::next_prefixed(const length_prefix_framing& f) {
  if (!pending_) {
    auto h = f.header_size;
    if (buffered() < h)
      return std::optional<bytes>{};
    uint64_t len = 0;
    for (unsigned i = 0; i < h; ++i)
      len = (len << 8) | static_cast<uint8_t>(buf_[pos_ + i]);
    if (len > max_payload(f))
      return fail(make_error(errc::frame_too_large,
                             "a frame of " + std::to_string(len)
                               + " bytes; the limit is "
                               + std::to_string(max_payload(f))));
    pos_ += h;
    pending_ = len;
    if (pos_ == buf_.size()) {
      // The payload comes in later chunks: the first of them may become
      // the frame as it is.
      buf_.clear();
      pos_ = scan_ = 0;
    } else if (buffered() < len) {
      // Gather the payload at the front. The room grows with what comes:
      // a header alone must not make the decoder reserve its whole size.
      buf_.erase(buf_.begin(), buf_.begin() + static_cast<ptrdiff_t>(pos_));
      pos_ = scan_ = 0;
    }
  }
  auto len = static_cast<size_t>(*pending_);
  if (buffered() < len)
    return std::optional<bytes>{};
  pending_.reset();
  return std::optional<bytes>{cut(pos_, pos_ + len, 0)};
}

caf::expected<std::optional<bytes>> frame_decoder::finish() {
  if (failed_)
    return failed_;
  auto rest = buffered();
  if (std::holds_alternative<line_framing>(framing_)) {
    if (rest == 0)
      return std::optional<bytes>{};
    auto& f = std::get<line_framing>(framing_);
    if (rest > f.max_length)
      return fail(make_error(errc::frame_too_large,
                             "a last line of " + std::to_string(rest)
                               + " bytes; the limit is "
                               + std::to_string(f.max_length)));
    return std::optional<bytes>{cut(pos_, buf_.size(), 0)};
  }
  if (rest == 0 && !pending_)
    return std::optional<bytes>{};
  auto& f = std::get<length_prefix_framing>(framing_);
  auto what = pending_ ? std::to_string(rest) + " of a frame of "
                           + std::to_string(*pending_) + " bytes"
                       : std::to_string(rest) + " of a "
                           + std::to_string(f.header_size) + "-byte header";
  return fail(make_error(errc::incomplete_frame,
                         "the stream ended after " + what));
}

bytes frame_decoder::take_rest() {
  bytes rest;
  if (pending_) {
    auto h = std::get<length_prefix_framing>(framing_).header_size;
    for (unsigned i = h; i > 0; --i)
      rest.push_back(static_cast<char>((*pending_ >> (8 * (i - 1))) & 0xff));
    pending_.reset();
  }
  rest.insert(rest.end(), buf_.begin() + static_cast<ptrdiff_t>(pos_),
              buf_.end());
  buf_.clear();
  pos_ = scan_ = 0;
  return rest;
}

caf::error encode_frame(const framing& f, bytes payload,
                        std::vector<bytes>& out) {
  if (auto* lines = std::get_if<line_framing>(&f)) {
    auto& delim = lines->delimiter;
    // The peer would see more lines than were written.
    if (std::search(payload.begin(), payload.end(), delim.begin(), delim.end())
        != payload.end())
      return make_error(errc::invalid_argument,
                        "a line to write contains the delimiter");
    if (payload.size() <= copy_limit
        || payload.capacity() - payload.size() >= delim.size()) {
      payload.insert(payload.end(), delim.begin(), delim.end());
      out.push_back(std::move(payload));
    } else {
      out.push_back(std::move(payload));
      out.emplace_back(delim.begin(), delim.end());
    }
    return caf::none;
  }
  auto& prefixed = std::get<length_prefix_framing>(f);
  auto len = static_cast<uint64_t>(payload.size());
  if (len > max_payload(prefixed))
    return make_error(errc::frame_too_large,
                      "a frame of " + std::to_string(len)
                        + " bytes written; the limit is "
                        + std::to_string(max_payload(prefixed)));
  auto h = prefixed.header_size;
  bytes header(h);
  for (unsigned i = 0; i < h; ++i)
    header[h - 1 - i] = static_cast<char>((len >> (8 * i)) & 0xff);
  if (payload.size() <= copy_limit) {
    header.insert(header.end(), payload.begin(), payload.end());
    out.push_back(std::move(header));
  } else {
    out.push_back(std::move(header));
    out.push_back(std::move(payload));
  }
  return caf::none;
}

} // namespace tact
