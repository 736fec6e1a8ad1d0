// Out of descriptors, a server stops accepting, reports
// once, retries every second, and recovers. This file is its own process
// because it lowers RLIMIT_NOFILE.

#include <catch2/catch.hpp>

#include <thread>

#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "support/harness.hpp"
#include "tact/protocols/echo.hpp"

using namespace tact;
using namespace tact::test;

SCENARIO("a server out of descriptors pauses accepting and recovers") {
  std::vector<std::string> warnings;
  with_runtime(
    [&](runtime& rt) {
      auto srv = rt.create_server(
        [] { return std::make_unique<echo_protocol>(); }, "127.0.0.1", 0);
      REQUIRE(srv);
      // The client's socket exists before the table is full.
      peer client{::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)};
      rlimit saved{};
      REQUIRE(getrlimit(RLIMIT_NOFILE, &saved) == 0);
      rlimit low = saved;
      low.rlim_cur = fd_count() + 16;
      REQUIRE(setrlimit(RLIMIT_NOFILE, &low) == 0);
      std::vector<int> fillers;
      for (;;) {
        auto fd = ::dup(0);
        if (fd < 0)
          break;
        fillers.push_back(fd);
      }
      sockaddr_in addr{};
      addr.sin_family = AF_INET;
      addr.sin_port = htons(srv->port());
      addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      REQUIRE(::connect(client.fd(), reinterpret_cast<sockaddr*>(&addr),
                        sizeof(addr))
              == 0);
      // The server pauses, and keeps retrying every second while full.
      CHECK(eventually([&] { return srv->accept_pauses() >= 1; }, 2s));
      CHECK(eventually([&] { return srv->accept_pauses() >= 3; }, 4s));
      CHECK(srv->active_connections() == 0);
      for (auto fd : fillers)
        ::close(fd);
      REQUIRE(setrlimit(RLIMIT_NOFILE, &saved) == 0);
      // Within a retry period the waiting connection is served.
      client.send_all("back");
      CHECK(client.recv_n(4, 3s) == "back");
      CHECK(srv->active_connections() == 1);
    },
    &warnings);
  auto accept_warnings = std::count_if(
    warnings.begin(), warnings.end(),
    [](auto& w) { return w.find("accepting paused") != std::string::npos; });
  CHECK(accept_warnings == 1);
}
