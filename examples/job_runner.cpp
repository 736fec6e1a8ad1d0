// A job runner written as a coroutine: each line a client sends is a shell
// command; its output (stdout and stderr) streams back as it comes, then
// `exit N`. The same service with callbacks is job_runner_callbacks.cpp.
//
//   job_runner tcp://127.0.0.1:7000 unix:///tmp/jobs.sock
//
// Prints one `listening on URL` line per listener; exits 0 on SIGINT or
// SIGTERM. A line over 64 KiB gets `error: line too long` and the
// connection ends; a client that leaves while its job writes has the job
// killed.

#include <string>

#include "tact/runtime/errc.hpp"
#include "tact/runtime/runtime.hpp"

#include "serve.hpp"

namespace {

tact::task<> serve(tact::runtime& rt, tact::stream s) {
  tact::subprocess_options opts;
  opts.std_in = tact::subprocess_stdio::devnull;
  opts.std_err = tact::subprocess_stdio::stdout_merge;
  for (;;) {
    auto line = co_await s.read_line();
    if (!line) {
      if (tact::code_of(line.error()) == tact::errc::frame_too_large)
        co_await s.write("error: line too long\n");
      co_return;
    }
    if (line->empty())
      co_return; // the client's EOF
    std::string command(line->begin(), line->end() - 1);
    auto child = co_await rt.create_subprocess_shell(command, opts);
    if (!child) {
      co_await s.write("error: " + tact::describe(child.error()) + "\n");
      continue;
    }
    // Flow control both ways: a client that does not read stops our
    // reading of the child, and the child then blocks on its next write.
    while (auto out = co_await child->out().read()) {
      if (out->empty())
        break;
      if (co_await s.write(std::move(*out))) {
        child->get_transport().kill();
        co_return;
      }
    }
    co_await child->wait();
    co_await s.write("exit " + std::to_string(*child->returncode()) + "\n");
  }
}

} // namespace

int main(int argc, char** argv) {
  tact::runtime rt{tact::runtime_options{.handle_signals = true}};
  return example::serve_urls(
    rt, [&rt](tact::stream s) { return serve(rt, std::move(s)); }, argc, argv);
}
