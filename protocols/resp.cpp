#include "tact/protocols/resp.hpp"

#include <algorithm>
#include <charconv>
#include <cstdio>

#include "tact/runtime/errc.hpp"

namespace tact::resp {

namespace {

// A bulk string's buffer is reserved up to what has arrived of it, never
// up to what its header claims; an array's up to this many elements.
constexpr size_t reserve_elements = 64;

// Capacity the buffer may keep once it has been emptied.
constexpr size_t retained_buffer = 1024 * 1024;

// The length in a header line after its type byte: "0" or digits without
// a leading zero, then "\r\n"; "-1" too where `allow_null`.
struct length_line {
  enum { more, bad, too_big, ok } status = more;
  size_t value = 0;
  bool null = false;
  // Bytes of the line, "\r\n" included.
  size_t size = 0;
};

// Decides as soon as the bytes at hand allow it, so the outcome does not
// depend on where the stream was cut: a prefix that is bad stays bad.
length_line read_length(std::string_view s, size_t limit, bool allow_null) {
  length_line r;
  size_t i = 0;
  if (s.empty())
    return r;
  if (s[0] == '-') {
    if (!allow_null || (s.size() > 1 && s[1] != '1')) {
      r.status = length_line::bad;
      return r;
    }
    if (s.size() < 2)
      return r;
    r.null = true;
    i = 2;
  } else {
    for (; i < s.size() && s[i] >= '0' && s[i] <= '9'; ++i) {
      if (i == 1 && s[0] == '0') {
        r.status = length_line::bad;
        return r;
      }
      auto d = static_cast<size_t>(s[i] - '0');
      // value * 10 + d > limit, without overflow.
      if (d > limit || r.value > (limit - d) / 10) {
        r.status = length_line::too_big;
        return r;
      }
      r.value = r.value * 10 + d;
    }
    if (i == 0) {
      // A sign, a space, the line end: anything but a digit.
      r.status = length_line::bad;
      return r;
    }
  }
  if (i == s.size())
    return r;
  if (s[i] != '\r' || (i + 1 < s.size() && s[i + 1] != '\n')) {
    r.status = length_line::bad;
    return r;
  }
  if (i + 1 == s.size())
    return r;
  r.status = length_line::ok;
  r.size = i + 2;
  return r;
}

// A byte for an error message: itself if printable, else its hex code.
std::string show(char c) {
  auto u = static_cast<unsigned char>(c);
  if (u >= 0x20 && u < 0x7f && c != '\'')
    return std::string{'\'', c, '\''};
  char hex[8];
  std::snprintf(hex, sizeof hex, "'\\x%02x'", u);
  return hex;
}

command split_inline(std::string_view line) {
  command cmd;
  size_t i = 0;
  for (;;) {
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t'))
      ++i;
    if (i == line.size())
      return cmd;
    auto end = line.find_first_of(" \t", i);
    if (end == std::string_view::npos)
      end = line.size();
    cmd.emplace_back(line.substr(i, end - i));
    i = end;
  }
}

template <class Integer>
void append_number(std::string& out, char type, Integer x) {
  char digits[24];
  auto end = std::to_chars(digits, digits + sizeof digits, x).ptr;
  out += type;
  out.append(digits, end);
  out += "\r\n";
}

void append_line(std::string& out, char type, std::string_view text) {
  out += type;
  auto from = out.size();
  out += text;
  // The line must not end early: the peer would read a second reply.
  std::replace_if(out.begin() + static_cast<ptrdiff_t>(from), out.end(),
                  [](char c) { return c == '\r' || c == '\n'; }, ' ');
  out += "\r\n";
}

} // namespace

command_decoder::command_decoder(limits l) : limits_(l) {
  // nop
}

void command_decoder::feed(std::string_view chunk) {
  if (chunk.empty() || failed_)
    return;
  if (pos_ == buf_.size()) {
    // An idle connection keeps no large buffer from a burst.
    if (buf_.capacity() > retained_buffer)
      std::string{}.swap(buf_);
    buf_.clear();
    pos_ = scan_ = 0;
    // Inside a bulk string with nothing pending: the chunk goes straight
    // into the argument, not through the buffer.
    if (state_ == state::bulk) {
      auto n = take_bulk(chunk.data(), chunk.size());
      partial_ += n;
      chunk.remove_prefix(n);
    }
    buf_.append(chunk);
    return;
  }
  // Drop what was parsed once it is half the buffer: amortized O(1) per
  // byte.
  if (pos_ > 0 && pos_ >= buf_.size() / 2) {
    buf_.erase(0, pos_);
    scan_ = scan_ > pos_ ? scan_ - pos_ : 0;
    pos_ = 0;
  }
  buf_.append(chunk);
}

size_t command_decoder::buffered() const noexcept {
  return buf_.size() - pos_ + partial_;
}

caf::error command_decoder::fail(std::string what) {
  failed_ = make_error(errc::malformed_input, std::move(what));
  buf_.clear();
  buf_.shrink_to_fit();
  pos_ = scan_ = 0;
  state_ = state::start;
  cmd_.clear();
  missing_ = bulk_left_ = partial_ = 0;
  return failed_;
}

size_t command_decoder::take_bulk(const char* data, size_t size) {
  auto n = std::min(size, bulk_left_);
  cmd_.back().append(data, n);
  bulk_left_ -= n;
  return n;
}

// Bytes of the array being read, parsed.
void command_decoder::consume(size_t n) {
  pos_ += n;
  partial_ += n;
}

caf::expected<std::optional<command>> command_decoder::next() {
  if (failed_)
    return failed_;
  for (;;) {
    auto rest = std::string_view{buf_}.substr(pos_);
    switch (state_) {
      case state::start: {
        if (rest.empty())
          return std::optional<command>{};
        if (rest[0] != '*') {
          auto r = next_inline();
          // An empty line is skipped.
          if (!r || !*r || !(*r)->empty())
            return r;
          continue;
        }
        auto line = read_length(rest.substr(1), limits_.max_elements, true);
        if (line.status == length_line::more)
          return std::optional<command>{};
        if (line.status == length_line::bad)
          return fail("invalid multibulk length");
        if (line.status == length_line::too_big)
          return fail("invalid multibulk length: more than "
                      + std::to_string(limits_.max_elements) + " elements");
        pos_ += 1 + line.size;
        // Empty and null arrays are no command, as for Redis.
        if (line.null || line.value == 0)
          continue;
        partial_ = 1 + line.size;
        missing_ = line.value;
        cmd_.reserve(std::min(missing_, reserve_elements));
        state_ = state::element;
        continue;
      }
      case state::element: {
        if (rest.empty())
          return std::optional<command>{};
        if (rest[0] != '$')
          return fail("expected '$', got " + show(rest[0]));
        auto line = read_length(rest.substr(1), limits_.max_bulk, false);
        if (line.status == length_line::more)
          return std::optional<command>{};
        if (line.status == length_line::bad)
          return fail("invalid bulk length");
        if (line.status == length_line::too_big)
          return fail("invalid bulk length: more than "
                      + std::to_string(limits_.max_bulk) + " bytes");
        consume(1 + line.size);
        bulk_left_ = line.value;
        cmd_.emplace_back();
        cmd_.back().reserve(std::min(bulk_left_, buf_.size() - pos_));
        state_ = state::bulk;
        continue;
      }
      case state::bulk: {
        consume(take_bulk(rest.data(), rest.size()));
        if (bulk_left_ > 0)
          return std::optional<command>{};
        state_ = state::bulk_end;
        continue;
      }
      case state::bulk_end: {
        if (rest.empty())
          return std::optional<command>{};
        if (rest[0] != '\r' || (rest.size() > 1 && rest[1] != '\n'))
          return fail("expected CRLF after a bulk string, got "
                      + show(rest[0] != '\r' ? rest[0] : rest[1]));
        if (rest.size() < 2)
          return std::optional<command>{};
        consume(2);
        if (--missing_ > 0) {
          state_ = state::element;
          continue;
        }
        state_ = state::start;
        partial_ = 0;
        auto cmd = std::move(cmd_);
        cmd_ = command{};
        return std::optional<command>{std::move(cmd)};
      }
    }
  }
}

// A command on one line. An empty line gives an empty command.
caf::expected<std::optional<command>> command_decoder::next_inline() {
  auto nl = buf_.find('\n', std::max(scan_, pos_));
  if (nl == std::string::npos) {
    scan_ = buf_.size();
    // One byte more than the limit may still be the '\r' before the '\n'.
    if (buf_.size() - pos_ - 1 > limits_.max_inline)
      return fail("too big inline request");
    return std::optional<command>{};
  }
  auto end = nl > pos_ && buf_[nl - 1] == '\r' ? nl - 1 : nl;
  if (end - pos_ > limits_.max_inline)
    return fail("too big inline request");
  auto cmd = split_inline(std::string_view{buf_}.substr(pos_, end - pos_));
  pos_ = scan_ = nl + 1;
  return std::optional<command>{std::move(cmd)};
}

void append_simple(std::string& out, std::string_view text) {
  append_line(out, '+', text);
}

void append_error(std::string& out, std::string_view text) {
  append_line(out, '-', text);
}

void append_integer(std::string& out, int64_t x) {
  append_number(out, ':', x);
}

void append_bulk(std::string& out, std::string_view data) {
  append_number(out, '$', data.size());
  out += data;
  out += "\r\n";
}

void append_null(std::string& out) {
  out += "$-1\r\n";
}

void append_array_header(std::string& out, size_t n) {
  append_number(out, '*', n);
}

void append_command(std::string& out, const command& cmd) {
  append_array_header(out, cmd.size());
  for (auto& arg : cmd)
    append_bulk(out, arg);
}

} // namespace tact::resp
