// tact::errc: errno is mapped in one place and errors render by name.

#include <catch2/catch.hpp>

#include <cerrno>

#include "tact/runtime/errc.hpp"

using namespace tact;

SCENARIO("errno values map to tact's error codes") {
  CHECK(from_errno(0) == errc::none);
  CHECK(from_errno(ECONNRESET) == errc::connection_reset);
  CHECK(from_errno(EPIPE) == errc::broken_pipe);
  CHECK(from_errno(ECONNREFUSED) == errc::connection_refused);
  CHECK(from_errno(EADDRINUSE) == errc::address_in_use);
  CHECK(from_errno(EMFILE) == errc::too_many_open_files);
  CHECK(from_errno(ENFILE) == errc::too_many_open_files);
  CHECK(from_errno(ENOBUFS) == errc::out_of_resources);
  CHECK(from_errno(ENOENT) == errc::no_such_file);
  CHECK(from_errno(EHOSTUNREACH) == errc::unreachable);
  CHECK(from_errno(ETIMEDOUT) == errc::timed_out);
  CHECK(from_errno(EXDEV) == errc::os_error);
}

SCENARIO("errors carry their category, code and context") {
  auto err = error_from_errno(ECONNREFUSED, "connect 127.0.0.1:1");
  CHECK(err.category() == error_category);
  CHECK(code_of(err) == errc::connection_refused);
  CHECK(describe(err) == "connection_refused (connect 127.0.0.1:1)");
  caf::error converted = errc::broken_pipe;
  CHECK(code_of(converted) == errc::broken_pipe);
  CHECK(converted == errc::broken_pipe);
  CHECK(code_of(caf::error{}) == errc::none);
  // An errno without a code of its own keeps the OS's words.
  CHECK(describe(error_from_errno(EXDEV, "rename")).find("rename: ")
        != std::string::npos);
}

SCENARIO("every code has a name") {
  for (int i = 0; i <= static_cast<int>(errc::os_error); ++i)
    CHECK(to_string(static_cast<errc>(i)) != "unknown");
}
