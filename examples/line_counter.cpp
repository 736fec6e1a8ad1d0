// A line server written as a class protocol that uses its loop's services,
// as an asyncio protocol uses its loop's:
//
//   line_counter [--idle SECONDS] tcp://127.0.0.1:0 [unix:///tmp/lines.sock]
//
// Each line a client sends is answered with `N: LINE`, where N counts the
// lines of every client together: a counter actor keeps it, and each
// connection asks it (`request`, answered on the connection's loop). A
// connection that sends no line for `--idle` seconds (default 10) is told
// `idle for S s, bye` and closed: a `call_later` timer, pushed back by each
// line, and cancelled when the connection ends first. Prints one
// `listening on URL` line per listener; exits 0 on SIGINT or SIGTERM.

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include <caf/event_based_actor.hpp>
#include <caf/exit_reason.hpp>
#include <caf/send.hpp>

#include "tact/runtime/errc.hpp"
#include "tact/runtime/runtime.hpp"
#include "tact/runtime/url.hpp"

#include "serve.hpp"

namespace {

using namespace std::chrono_literals;

// Counts lines for every connection. (A class: spawning a function
// instantiates CAF 0.17's init_fun_factory, which UBSan's null check
// rejects.)
class counter final : public caf::event_based_actor {
public:
  using caf::event_based_actor::event_based_actor;

  caf::behavior make_behavior() override {
    return {[this](int64_t lines) { return n_ += lines; }};
  }

private:
  int64_t n_ = 0;
};

class line_counter final : public tact::protocol {
public:
  line_counter(caf::actor counter, std::chrono::milliseconds idle)
    : counter_(std::move(counter)), idle_(idle) {
  }

  void connection_made(tact::transport& t) override {
    t_ = t;
    arm();
  }

  void data_received(tact::bytes data) override {
    buffer_.append(data.data(), data.size());
    size_t start = 0;
    for (auto nl = buffer_.find('\n'); nl != std::string::npos;
         nl = buffer_.find('\n', start)) {
      count(buffer_.substr(start, nl - start));
      start = nl + 1;
    }
    buffer_.erase(0, start);
    // A line longer than 64 KiB is no line.
    if (buffer_.size() > 64 * 1024) {
      t_.write("line too long, bye\n");
      t_.close();
    }
  }

  void connection_lost(const caf::error&) override {
    // The loop drops pending timers anyway; this is what asyncio code does.
    idle_timer_.cancel();
  }

private:
  // The idle timer starts again with every line.
  void arm() {
    idle_timer_.cancel();
    idle_timer_ = call_later(idle_, [this] {
      char text[64];
      std::snprintf(text, sizeof(text), "idle for %g s, bye\n",
                    static_cast<double>(idle_.count()) / 1000);
      t_.write(std::string{text});
      t_.close();
    });
  }

  void count(std::string line) {
    if (!line.empty() && line.back() == '\r')
      line.pop_back();
    arm();
    // Answers come in the order asked: the counter answers in order, and
    // so does this connection's loop.
    request(
      counter_, 5s, caf::make_message(int64_t{1}),
      [this, line](caf::message& answer) {
        t_.write(std::to_string(answer.get_as<int64_t>(0)) + ": " + line
                 + "\n");
      },
      [this](const caf::error& err) {
        t_.write("counter failed: " + tact::describe(err) + "\n");
        t_.close();
      });
  }

  caf::actor counter_;
  std::chrono::milliseconds idle_;
  tact::transport t_;
  tact::timer_handle idle_timer_;
  std::string buffer_;
};

} // namespace

int main(int argc, char** argv) {
  std::vector<tact::url> urls;
  std::chrono::milliseconds idle{10000};
  for (int i = 1; i < argc; ++i) {
    if (std::string{argv[i]} == "--idle" && i + 1 < argc) {
      auto seconds = std::atof(argv[++i]);
      if (!(seconds >= 0.001 && seconds <= 86400)) {
        std::fprintf(stderr, "line_counter: --idle wants seconds from 0.001 "
                             "to 86400\n");
        return 2;
      }
      idle = std::chrono::milliseconds{static_cast<int64_t>(seconds * 1000)};
      continue;
    }
    auto u = tact::parse_url(argv[i]);
    if (!u || (u->scheme != "tcp" && u->scheme != "unix")) {
      std::fprintf(stderr, "line_counter: '%s' is no tcp:// or unix:// URL\n",
                   argv[i]);
      return 2;
    }
    urls.push_back(std::move(*u));
  }
  if (urls.empty()) {
    std::fprintf(stderr, "usage: %s [--idle SECONDS] URL...\n", argv[0]);
    return 2;
  }
  tact::runtime rt{tact::runtime_options{.handle_signals = true}};
  auto lines = rt.system().spawn<counter>();
  auto factory = [lines, idle] {
    return std::make_unique<line_counter>(lines, idle);
  };
  std::vector<tact::server> servers;
  if (auto code = example::listen_urls(rt, factory, urls, "line_counter",
                                       servers))
    return code;
  example::serve_until_signal(rt);
  caf::anon_send_exit(lines, caf::exit_reason::user_shutdown);
  return 0;
}
