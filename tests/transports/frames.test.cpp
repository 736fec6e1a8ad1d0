// The frame parser and encoder on their own: every split of a stream into
// chunks gives the same frames, limits are enforced as soon as they are
// certain, and whole-chunk frames are not copied.

#include <catch2/catch.hpp>

#include <random>
#include <string>
#include <vector>

#include "tact/transports/frames.hpp"
#include "tact/runtime/errc.hpp"

using namespace tact;

namespace {

// Frames out of `stream` fed in the given chunk sizes (the rest in one).
caf::expected<std::vector<std::string>>
decode(const framing& f, const std::string& stream,
       const std::vector<size_t>& cuts, bool at_eof = true) {
  frame_decoder dec{f};
  std::vector<std::string> frames;
  size_t pos = 0;
  auto drain = [&]() -> caf::error {
    for (;;) {
      auto x = dec.next();
      if (!x)
        return x.error();
      if (!*x)
        return caf::none;
      frames.emplace_back((*x)->begin(), (*x)->end());
    }
  };
  for (auto n : cuts) {
    n = std::min(n, stream.size() - pos);
    dec.feed(bytes(stream.begin() + pos, stream.begin() + pos + n));
    pos += n;
    if (auto err = drain())
      return err;
  }
  if (pos < stream.size()) {
    dec.feed(bytes(stream.begin() + pos, stream.end()));
    if (auto err = drain())
      return err;
  }
  if (at_eof) {
    auto last = dec.finish();
    if (!last)
      return last.error();
    if (*last)
      frames.emplace_back((*last)->begin(), (*last)->end());
  }
  return frames;
}

std::string encode(const framing& f, const std::vector<std::string>& frames) {
  std::string out;
  for (auto& s : frames) {
    std::vector<bytes> chunks;
    REQUIRE_FALSE(encode_frame(f, bytes(s.begin(), s.end()), chunks));
    for (auto& c : chunks)
      out.append(c.begin(), c.end());
  }
  return out;
}

std::string header(unsigned size, uint64_t len) {
  std::string h(size, '\0');
  for (unsigned i = 0; i < size; ++i)
    h[size - 1 - i] = static_cast<char>((len >> (8 * i)) & 0xff);
  return h;
}

} // namespace

TEST_CASE("frames come out the same for every split of the stream into two "
          "or three chunks") {
  std::vector<framing> formats{
    line_framing{}, line_framing{"\r\n", 100}, line_framing{"<END>", 100},
    length_prefix_framing{1, 255}, length_prefix_framing{2, 1000},
    length_prefix_framing{4, 1000}, length_prefix_framing{8, 1000}};
  std::vector<std::string> frames{"alpha", "", "b", "a longer frame with \r "
                                  "and < and END", "", "z"};
  for (auto& f : formats) {
    auto stream = encode(f, frames);
    for (size_t i = 0; i <= stream.size(); ++i) {
      auto one = decode(f, stream, {i});
      REQUIRE(one);
      REQUIRE(*one == frames);
      for (size_t j = 0; i + j <= stream.size(); j += 3) {
        auto two = decode(f, stream, {i, j});
        REQUIRE(two);
        REQUIRE(*two == frames);
      }
    }
    // One byte at a time, and everything in one chunk.
    REQUIRE(*decode(f, stream, std::vector<size_t>(stream.size(), 1))
            == frames);
    REQUIRE(*decode(f, stream, {stream.size()}) == frames);
  }
}

TEST_CASE("a multi-byte delimiter split at every chunk edge is found once") {
  line_framing f{"\r\n\r\n", 1000};
  std::string stream = "head\r\n\r\n\r\n\r\nx\r\n\r\r\n\r\n";
  std::vector<std::string> want{"head", "", "x\r\n\r"};
  for (size_t i = 0; i <= stream.size(); ++i)
    for (size_t j = 0; i + j <= stream.size(); ++j) {
      auto got = decode(f, stream, {i, j});
      REQUIRE(got);
      REQUIRE(*got == want);
    }
}

TEST_CASE("many frames in one read come out one by one") {
  length_prefix_framing f{2, 100};
  std::vector<std::string> frames;
  for (int i = 0; i < 10000; ++i)
    frames.push_back(std::to_string(i));
  auto stream = encode(f, frames);
  frame_decoder dec{f};
  dec.feed(bytes(stream.begin(), stream.end()));
  auto first = dec.next();
  REQUIRE(first);
  REQUIRE(to_string(**first) == "0");
  // The reader may stop between any two frames: the rest stays held.
  CHECK(dec.buffered() == stream.size() - 3);
  auto rest = decode(f, stream, {stream.size()});
  REQUIRE(rest);
  CHECK(*rest == frames);
}

TEST_CASE("a line over the limit is an error as soon as it is certain") {
  line_framing f{"\r\n", 10};
  // Exactly 10 bytes is fine, with the delimiter split.
  auto ok = decode(f, "0123456789\r\nab", {11});
  REQUIRE(ok);
  CHECK(*ok == std::vector<std::string>{"0123456789", "ab"});
  // Eleven bytes and a '\r' may still be a 11-byte line: too long, but the
  // decoder knows only once the twelfth byte before the delimiter arrives.
  frame_decoder dec{f};
  dec.feed(to_bytes("0123456789\r"));
  auto wait = dec.next();
  REQUIRE(wait);
  CHECK_FALSE(*wait);
  dec.feed(to_bytes("x"));
  auto err = dec.next();
  REQUIRE_FALSE(err);
  CHECK(code_of(err.error()) == errc::frame_too_large);
  // The decoder stays failed.
  dec.feed(to_bytes("\r\n"));
  CHECK_FALSE(dec.next());
  // A delimiter far behind the limit in one chunk.
  auto late = decode(f, std::string(50, 'a') + "\r\n", {52});
  REQUIRE_FALSE(late);
  CHECK(code_of(late.error()) == errc::frame_too_large);
  // A last line without a delimiter is held to the same limit.
  auto tail = decode(f, std::string(11, 'a'), {11});
  REQUIRE_FALSE(tail);
  CHECK(code_of(tail.error()) == errc::frame_too_large);
}

TEST_CASE("a header announcing an oversized frame is refused before the "
          "payload comes") {
  for (unsigned h : {1u, 2u, 4u, 8u}) {
    length_prefix_framing f{h, 200};
    frame_decoder dec{f};
    dec.feed(to_bytes(header(h, 201)));
    auto x = dec.next();
    REQUIRE_FALSE(x);
    CHECK(code_of(x.error()) == errc::frame_too_large);
    frame_decoder ok{f};
    ok.feed(to_bytes(header(h, 200)));
    auto y = ok.next();
    REQUIRE(y);
    CHECK_FALSE(*y);
  }
  // The largest 8-byte length does not overflow anything.
  frame_decoder dec{length_prefix_framing{8, UINT64_MAX}};
  dec.feed(to_bytes(header(8, UINT64_MAX)));
  auto x = dec.next();
  REQUIRE(x);
  CHECK_FALSE(*x);
}

TEST_CASE("the stream ending inside a length-prefixed frame is an error; "
          "a last line without its delimiter is a frame") {
  length_prefix_framing f{4, 100};
  auto cut_payload = decode(f, header(4, 5) + "abc", {});
  REQUIRE_FALSE(cut_payload);
  CHECK(code_of(cut_payload.error()) == errc::incomplete_frame);
  auto cut_header = decode(f, header(4, 5).substr(0, 2), {});
  REQUIRE_FALSE(cut_header);
  CHECK(code_of(cut_header.error()) == errc::incomplete_frame);
  auto clean = decode(f, header(4, 0), {});
  REQUIRE(clean);
  CHECK(*clean == std::vector<std::string>{""});
  auto lines = decode(line_framing{}, "a\nb", {});
  REQUIRE(lines);
  CHECK(*lines == std::vector<std::string>{"a", "b"});
}

TEST_CASE("a chunk that is exactly one frame becomes that frame without a "
          "copy") {
  frame_decoder lines{line_framing{}};
  auto chunk = to_bytes("a whole line\n");
  auto* where = chunk.data();
  lines.feed(std::move(chunk));
  auto x = lines.next();
  REQUIRE(x);
  REQUIRE(*x);
  CHECK(static_cast<const void*>((*x)->data())
        == static_cast<const void*>(where));
  CHECK(to_string(**x) == "a whole line");

  // The header is taken before the payload comes, as the layer does.
  frame_decoder prefixed{length_prefix_framing{}};
  prefixed.feed(to_bytes(header(4, 100000)));
  auto none = prefixed.next();
  REQUIRE(none);
  CHECK_FALSE(*none);
  bytes payload(100000, 'p');
  auto* at = payload.data();
  prefixed.feed(std::move(payload));
  auto y = prefixed.next();
  REQUIRE(y);
  REQUIRE(*y);
  CHECK(static_cast<const void*>((*y)->data())
        == static_cast<const void*>(at));
  CHECK((*y)->size() == 100000);
}

TEST_CASE("take_rest gives back the unparsed stream, a header included") {
  frame_decoder dec{length_prefix_framing{2, 100}};
  auto stream = header(2, 3) + "abc" + header(2, 4) + "de";
  dec.feed(to_bytes(stream));
  auto x = dec.next();
  REQUIRE(x);
  REQUIRE(*x);
  CHECK(to_string(**x) == "abc");
  auto y = dec.next();
  REQUIRE(y);
  CHECK_FALSE(*y);
  CHECK(to_string(dec.take_rest()) == header(2, 4) + "de");
  CHECK(dec.buffered() == 0);
}

TEST_CASE("random streams decode to what was encoded") {
  std::mt19937 rng{42};
  for (int round = 0; round < 200; ++round) {
    framing f = round % 2 == 0 ? framing{line_framing{"\r\n", 5000}}
                               : framing{length_prefix_framing{
                                   1u << (round / 2 % 4), 5000}};
    auto max_len = round % 8 == 1 ? 255u : 3000u;
    std::vector<std::string> frames;
    for (int i = 0; i < 50; ++i) {
      std::string s(rng() % max_len, '\0');
      for (auto& c : s)
        c = static_cast<char>('a' + rng() % 26);
      frames.push_back(std::move(s));
    }
    auto stream = encode(f, frames);
    std::vector<size_t> cuts;
    for (size_t n = 0; n < stream.size();) {
      cuts.push_back(1 + rng() % 7000);
      n += cuts.back();
    }
    auto got = decode(f, stream, cuts);
    REQUIRE(got);
    REQUIRE(*got == frames);
  }
}

TEST_CASE("encoding refuses what the header cannot carry or the limit "
          "forbids, and checks its options") {
  std::vector<bytes> out;
  CHECK(code_of(encode_frame(length_prefix_framing{1, 1000}, bytes(256), out)) == errc::frame_too_large);
  CHECK(code_of(encode_frame(length_prefix_framing{4, 10}, bytes(11), out)) == errc::frame_too_large);
  CHECK(out.empty());
  CHECK_FALSE(encode_frame(length_prefix_framing{1, 1000}, bytes(255), out));
  CHECK(code_of(encode_frame(line_framing{"\r\n"}, to_bytes("a\r\nb"), out))
        == errc::invalid_argument);
  CHECK(code_of(check_framing(line_framing{"", 10})) == errc::invalid_argument);
  CHECK(code_of(check_framing(line_framing{"\n", 0})) == errc::invalid_argument);
  CHECK(code_of(check_framing(length_prefix_framing{3, 10})) == errc::invalid_argument);
  CHECK_FALSE(check_framing(length_prefix_framing{8, 10}));
  // A large payload keeps its buffer.
  bytes payload(100000, 'x');
  auto* at = payload.data();
  out.clear();
  REQUIRE_FALSE(encode_frame(length_prefix_framing{}, std::move(payload), out));
  REQUIRE(out.size() == 2);
  CHECK(static_cast<const void*>(out[1].data())
        == static_cast<const void*>(at));
}
