// The RESP command parser and reply encoders on their own: every split of
// a pipelined stream gives the same commands, malformed or oversized input
// fails as soon as it is certain and for good, and what the encoders write
// decodes to what went in.

#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "tact/protocols/resp.hpp"
#include "tact/runtime/errc.hpp"

using namespace tact;
using namespace std::string_literals;

namespace {

struct outcome {
  std::vector<resp::command> commands;
  caf::error error;
  size_t buffered = 0;
};

// Commands out of `stream` fed in the given chunk sizes (the rest in one),
// up to the first error.
outcome decode(const std::string& stream, const std::vector<size_t>& cuts,
               resp::limits l = {}) {
  resp::command_decoder dec{l};
  outcome out;
  auto drain = [&] {
    for (;;) {
      auto x = dec.next();
      if (!x) {
        out.error = x.error();
        return false;
      }
      if (!*x)
        return true;
      out.commands.push_back(std::move(**x));
    }
  };
  size_t pos = 0;
  for (auto n : cuts) {
    n = std::min(n, stream.size() - pos);
    dec.feed(std::string_view{stream}.substr(pos, n));
    pos += n;
    if (!drain())
      return out;
  }
  if (pos < stream.size()) {
    dec.feed(std::string_view{stream}.substr(pos));
    if (!drain())
      return out;
  }
  out.buffered = dec.buffered();
  return out;
}

std::vector<size_t> single_bytes(const std::string& stream) {
  return std::vector<size_t>(stream.size(), 1);
}

// A stream mixing both kinds of command with what is skipped between them.
const std::string pipeline
  = "*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$11\r\nhello world\r\n"
    "PING\r\n"
    "*0\r\n"
    "*2\r\n$3\r\nGET\r\n$0\r\n\r\n"
    "\r\n"
    "  ECHO \t a\tb  \n"
    "*-1\r\n"
    "*2\r\n$4\r\nBLOB\r\n$7\r\na\r\n\0b\r\n\r\n"s
    "\n"
    "*1\r\n$0\r\n\r\n"
    "QUIT\n";

const std::vector<resp::command> pipeline_commands{
  {"SET", "key", "hello world"},
  {"PING"},
  {"GET", ""},
  {"ECHO", "a", "b"},
  {"BLOB", "a\r\n\0b\r\n"s},
  {""},
  {"QUIT"}};

} // namespace

TEST_CASE("commands come out the same for every split of a pipelined "
          "stream") {
  for (size_t i = 0; i <= pipeline.size(); ++i) {
    auto two = decode(pipeline, {i});
    REQUIRE_FALSE(two.error);
    REQUIRE(two.commands == pipeline_commands);
    CHECK(two.buffered == 0);
    for (size_t j = 0; i + j <= pipeline.size(); ++j) {
      auto three = decode(pipeline, {i, j});
      REQUIRE_FALSE(three.error);
      REQUIRE(three.commands == pipeline_commands);
    }
  }
  auto bytes = decode(pipeline, single_bytes(pipeline));
  REQUIRE_FALSE(bytes.error);
  CHECK(bytes.commands == pipeline_commands);
  CHECK(bytes.buffered == 0);
}

TEST_CASE("many commands in one feed come out one at a time") {
  std::vector<resp::command> commands;
  std::string stream;
  for (int i = 0; i < 10000; ++i) {
    auto n = std::to_string(i);
    commands.push_back({"INCR", n});
    if (i % 2 == 0)
      resp::append_command(stream, commands.back());
    else
      stream += "INCR " + n + "\r\n";
  }
  resp::command_decoder dec;
  dec.feed(stream);
  auto first = dec.next();
  REQUIRE(first);
  REQUIRE(*first);
  CHECK(**first == commands[0]);
  // The reader may stop between any two commands: the rest stays held.
  std::string first_bytes;
  resp::append_command(first_bytes, commands[0]);
  CHECK(dec.buffered() == stream.size() - first_bytes.size());
  std::vector<resp::command> got{**first};
  for (;;) {
    auto x = dec.next();
    REQUIRE(x);
    if (!*x)
      break;
    got.push_back(std::move(**x));
  }
  CHECK(got == commands);
  CHECK(dec.buffered() == 0);
}

TEST_CASE("a partial command counts as buffered") {
  resp::command_decoder dec;
  std::string head = "*2\r\n$3\r\nGET\r\n$5\r\nab";
  dec.feed(head);
  auto x = dec.next();
  REQUIRE(x);
  CHECK_FALSE(*x);
  CHECK(dec.buffered() == head.size());
  dec.feed("cde\r\n");
  auto y = dec.next();
  REQUIRE(y);
  REQUIRE(*y);
  CHECK(**y == resp::command{"GET", "abcde"});
  CHECK(dec.buffered() == 0);
}

TEST_CASE("each malformed stream is a protocol error in Redis's words, for "
          "every split") {
  struct bad_case {
    std::string stream;
    std::string message;
  };
  std::vector<bad_case> cases{
    {"*2\r\n$3\r\nGET\r\n:1\r\n", "expected '$', got ':'"},
    {"*1\r\nx", "expected '$', got 'x'"},
    {"*1\r\n\0"s, "expected '$', got '\\x00'"},
    {"*x\r\n", "invalid multibulk length"},
    {"*\r\n", "invalid multibulk length"},
    {"*+1\r\n", "invalid multibulk length"},
    {"* 1\r\n", "invalid multibulk length"},
    {"*-2\r\n", "invalid multibulk length"},
    {"*-0\r\n", "invalid multibulk length"},
    {"*-1x\r\n", "invalid multibulk length"},
    {"*01\r\n", "invalid multibulk length"},
    {"*1\n", "invalid multibulk length"},
    {"*1\r\r\n", "invalid multibulk length"},
    {"*1 \r\n", "invalid multibulk length"},
    {"*99999999999999999999999\r\n",
     "invalid multibulk length: more than 1048576 elements"},
    {"*1\r\n$-1\r\n", "invalid bulk length"},
    {"*1\r\n$+3\r\nabc\r\n", "invalid bulk length"},
    {"*1\r\n$03\r\nabc\r\n", "invalid bulk length"},
    {"*1\r\n$3x\r\nabc\r\n", "invalid bulk length"},
    {"*1\r\n$\r\n", "invalid bulk length"},
    {"*1\r\n$18446744073709551616\r\n",
     "invalid bulk length: more than 536870912 bytes"},
    {"*1\r\n$3\r\nabcd\r\n", "expected CRLF after a bulk string, got 'd'"},
    {"*1\r\n$3\r\nabc\rX", "expected CRLF after a bulk string, got 'X'"},
    {"*1\r\n$3\r\nabc\n\r", "expected CRLF after a bulk string, got '\\x0a'"},
  };
  for (auto& c : cases) {
    INFO(c.stream);
    // A good command first: it comes out whatever the split.
    auto stream = "PING\r\n" + c.stream;
    for (size_t i = 0; i <= stream.size(); ++i) {
      auto got = decode(stream, {i});
      REQUIRE(got.commands == std::vector<resp::command>{{"PING"}});
      REQUIRE(code_of(got.error) == errc::malformed_input);
      REQUIRE(describe(got.error) == "malformed_input (" + c.message + ")");
    }
    auto bytes = decode(stream, single_bytes(stream));
    CHECK(code_of(bytes.error) == errc::malformed_input);
  }
}

TEST_CASE("the limits hold exactly") {
  resp::limits l{8, 3, 10};
  auto ok = "*3\r\n$8\r\n12345678\r\n$0\r\n\r\n$1\r\nx\r\n"
            "abcde fghi\r\n"
            "abcde fghi\n"s;
  auto fine = decode(ok, single_bytes(ok), l);
  REQUIRE_FALSE(fine.error);
  CHECK(fine.commands
        == std::vector<resp::command>{{"12345678", "", "x"},
                                      {"abcde", "fghi"},
                                      {"abcde", "fghi"}});
  struct over {
    std::string stream;
    std::string message;
  };
  std::vector<over> cases{
    {"*4\r\n", "invalid multibulk length: more than 3 elements"},
    {"*1\r\n$9\r\n", "invalid bulk length: more than 8 bytes"},
    {"abcde fghij\r\n", "too big inline request"},
    {"abcde fghij\n", "too big inline request"},
  };
  for (auto& c : cases) {
    INFO(c.stream);
    for (size_t i = 0; i <= c.stream.size(); ++i) {
      auto got = decode(c.stream, {i}, l);
      REQUIRE(got.commands.empty());
      REQUIRE(describe(got.error) == "malformed_input (" + c.message + ")");
    }
  }
}

TEST_CASE("an oversized header fails before its data arrives") {
  resp::limits l{8, 3, 10};
  resp::command_decoder bulk{l};
  bulk.feed("*1\r\n$9\r\n");
  auto x = bulk.next();
  REQUIRE_FALSE(x);
  CHECK(code_of(x.error()) == errc::malformed_input);
  // Digits that already exceed the limit need no line end.
  resp::command_decoder digits;
  digits.feed("*1\r\n$1000000000");
  CHECK_FALSE(digits.next());
  resp::command_decoder count{l};
  count.feed("*12");
  CHECK_FALSE(count.next());
  // An inline line fails once it is longer than the limit and a '\r'.
  resp::command_decoder line{l};
  line.feed("abcdefghij\r");
  auto wait = line.next();
  REQUIRE(wait);
  CHECK_FALSE(*wait);
  line.feed("k");
  CHECK_FALSE(line.next());
}

TEST_CASE("a header claiming a huge length allocates nothing up front") {
  resp::limits l;
  l.max_bulk = SIZE_MAX;
  l.max_elements = SIZE_MAX;
  resp::command_decoder dec{l};
  std::string head = "*4611686018427387904\r\n$4611686018427387904\r\nabc";
  dec.feed(head);
  auto x = dec.next();
  REQUIRE(x);
  CHECK_FALSE(*x);
  CHECK(dec.buffered() == head.size());
  // The largest length that fits does not overflow.
  resp::command_decoder top{l};
  top.feed("*1\r\n$18446744073709551615\r\n");
  auto y = top.next();
  REQUIRE(y);
  CHECK_FALSE(*y);
  resp::command_decoder over{l};
  over.feed("*1\r\n$18446744073709551616\r\n");
  CHECK_FALSE(over.next());
}

TEST_CASE("a failed decoder stays failed") {
  resp::command_decoder dec;
  dec.feed("*1\r\n?");
  auto x = dec.next();
  REQUIRE_FALSE(x);
  dec.feed("PING\r\n");
  auto y = dec.next();
  REQUIRE_FALSE(y);
  CHECK(y.error() == x.error());
  CHECK(dec.buffered() == 0);
}

TEST_CASE("a large bulk string fed in small chunks comes out whole") {
  std::string data(4 * 1024 * 1024, '\0');
  std::mt19937 rng{1};
  for (auto& c : data)
    c = static_cast<char>(rng());
  std::string stream;
  resp::append_command(stream, {"SET", "k", data});
  resp::command_decoder dec;
  std::optional<resp::command> got;
  for (size_t pos = 0; pos < stream.size(); pos += 1000) {
    dec.feed(std::string_view{stream}.substr(pos, 1000));
    auto x = dec.next();
    REQUIRE(x);
    if (*x) {
      REQUIRE_FALSE(got);
      got = std::move(*x);
    } else {
      CHECK(dec.buffered() == std::min(pos + 1000, stream.size()));
    }
  }
  REQUIRE(got);
  CHECK(*got == resp::command{"SET", "k", data});
  CHECK(dec.buffered() == 0);
}

TEST_CASE("the encoders write the exact bytes") {
  std::string out;
  resp::append_simple(out, "OK");
  CHECK(out == "+OK\r\n");
  out.clear();
  resp::append_simple(out, "two\r\nlines\n");
  CHECK(out == "+two  lines \r\n");
  out.clear();
  resp::append_error(out, "ERR unknown command 'x\r\n'");
  CHECK(out == "-ERR unknown command 'x  '\r\n");
  out.clear();
  resp::append_integer(out, 0);
  resp::append_integer(out, 42);
  resp::append_integer(out, -7);
  resp::append_integer(out, INT64_MIN);
  CHECK(out == ":0\r\n:42\r\n:-7\r\n:-9223372036854775808\r\n");
  out.clear();
  resp::append_bulk(out, "hello");
  resp::append_bulk(out, "");
  resp::append_bulk(out, "a\r\n\0"s);
  CHECK(out == "$5\r\nhello\r\n$0\r\n\r\n$4\r\na\r\n\0\r\n"s);
  out.clear();
  resp::append_null(out);
  resp::append_array_header(out, 0);
  resp::append_array_header(out, 3);
  CHECK(out == "$-1\r\n*0\r\n*3\r\n");
  out.clear();
  resp::append_command(out, {"SET", "k", ""});
  CHECK(out == "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n");
  // Appending keeps what was there.
  resp::append_simple(out, "PONG");
  CHECK(out == "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n+PONG\r\n");
}

TEST_CASE("random commands decode to what was encoded") {
  std::mt19937 rng{42};
  for (int round = 0; round < 200; ++round) {
    std::vector<resp::command> commands;
    std::string stream;
    for (int i = 0; i < 20; ++i) {
      resp::command cmd(1 + rng() % 6);
      // Some commands inline: arguments without blanks or line ends.
      bool inline_cmd = rng() % 3 == 0;
      for (auto& arg : cmd) {
        arg.resize(inline_cmd ? 1 + rng() % 20 : rng() % 300);
        for (auto& c : arg)
          c = inline_cmd ? static_cast<char>('a' + rng() % 26)
                         : static_cast<char>(rng());
      }
      if (inline_cmd) {
        for (auto& arg : cmd)
          stream += arg + (rng() % 2 ? " " : "\t");
        stream += rng() % 2 ? "\r\n" : "\n";
      } else {
        resp::append_command(stream, cmd);
      }
      commands.push_back(std::move(cmd));
    }
    std::vector<size_t> cuts;
    for (size_t n = 0; n < stream.size();) {
      cuts.push_back(rng() % 400);
      n += cuts.back();
    }
    auto got = decode(stream, cuts);
    REQUIRE_FALSE(got.error);
    REQUIRE(got.commands == commands);
    CHECK(got.buffered == 0);
  }
}
