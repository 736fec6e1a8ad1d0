// The job runner of job_runner.cpp written with class protocols and
// callbacks, as tact programs were before coroutines: the same service
// (each line a shell command, its output streamed back, then `exit N`),
// the same command line and output. It keeps its own line buffer, starts
// each child with an asynchronous loop operation, and passes flow control
// between the connection and the child's pipe by hand.
//
//   job_runner_callbacks tcp://127.0.0.1:7000 unix:///tmp/jobs.sock

#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "tact/runtime/errc.hpp"
#include "tact/runtime/runtime.hpp"

#include "serve.hpp"

namespace {

constexpr size_t max_line = 64 * 1024;

class connection;

// The child's protocol: its output goes to the client; its end is passed
// on to the connection's actor, where the connection's state lives.
class job final : public tact::subprocess_protocol {
public:
  job(tact::transport client, caf::actor owner,
      std::shared_ptr<connection*> conn)
    : client_(std::move(client)), owner_(std::move(owner)),
      conn_(std::move(conn)) {
    // nop
  }

  void connection_made(tact::transport& t) override;

  void pipe_data_received(int, tact::bytes data) override {
    client_.write(std::move(data));
  }

  void connection_lost(const caf::error&) override;

private:
  tact::transport child_;
  tact::transport client_;
  caf::actor owner_;
  // The connection, while it lives (cleared by its connection_lost).
  std::shared_ptr<connection*> conn_;
};

class connection final : public tact::protocol {
public:
  explicit connection(tact::runtime& rt) : rt_(rt) {
    // nop
  }

  void connection_made(tact::transport& t) override {
    t_ = t;
    self_ = std::make_shared<connection*>(this);
  }

  void data_received(tact::bytes data) override {
    pending_.insert(pending_.end(), data.begin(), data.end());
    if (running_) {
      // One job at a time: lines wait, within a bound.
      if (pending_.size() > max_line)
        t_.pause_reading();
      return;
    }
    next();
  }

  bool eof_received() override {
    eof_ = true;
    if (!running_)
      next();
    return true;
  }

  // The client does not read: neither do we, from the child.
  void pause_writing() override {
    if (child_out_)
      child_out_.pause_reading();
    paused_ = true;
  }

  void resume_writing() override {
    if (child_out_)
      child_out_.resume_reading();
    paused_ = false;
  }

  void connection_lost(const caf::error&) override {
    *self_ = nullptr;
    if (child_)
      child_.kill();
  }

  // From the job, on this actor: the child started.
  void started(tact::transport child) {
    child_ = child;
    child_out_ = child.get_pipe_transport(1);
    if (paused_ && child_out_)
      child_out_.pause_reading();
  }

  // From the job, on this actor: the child ended, its output all written.
  void finished(std::optional<int> code) {
    t_.write("exit " + std::to_string(code.value_or(-1)) + "\n");
    child_ = {};
    child_out_ = {};
    running_ = false;
    next();
  }

private:
  // Starts the next buffered line's command, or ends at EOF.
  void next() {
    auto nl = std::find(pending_.begin(), pending_.end(), '\n');
    if (nl == pending_.end()) {
      if (pending_.size() > max_line) {
        t_.write("error: line too long\n");
        t_.close();
      } else if (eof_) {
        t_.close();
      } else {
        t_.resume_reading();
      }
      return;
    }
    std::string command(pending_.begin(), nl);
    pending_.erase(pending_.begin(), nl + 1);
    if (command.size() > max_line) {
      t_.write("error: line too long\n");
      t_.close();
      return;
    }
    running_ = true;
    tact::subprocess_options opts;
    opts.std_in = tact::subprocess_stdio::devnull;
    opts.std_err = tact::subprocess_stdio::stdout_merge;
    auto owner = self();
    auto conn = self_;
    auto factory = [client = t_, owner, conn] {
      return std::make_unique<job>(client, owner, conn);
    };
    // The answer comes on the loop, in another actor: back to ours.
    rt_.spawn_process(factory, {"/bin/sh", "-c", command}, opts,
                      [owner, conn](caf::expected<tact::transport> t) {
                        if (t)
                          return;
                        auto text = "error: " + tact::describe(t.error()) + "\n";
                        tact::call_soon_threadsafe(owner, [conn, text] {
                          if (auto* c = *conn)
                            c->failed(text);
                        });
                      });
  }

public:
  void failed(const std::string& text) {
    t_.write(text);
    running_ = false;
    next();
  }

private:
  tact::runtime& rt_;
  tact::transport t_;
  tact::transport child_;
  tact::transport child_out_;
  std::shared_ptr<connection*> self_;
  std::vector<char> pending_;
  bool running_ = false;
  bool eof_ = false;
  bool paused_ = false;
};

void job::connection_made(tact::transport& t) {
  child_ = t;
  tact::call_soon_threadsafe(owner_, [conn = conn_, t] {
    if (auto* c = *conn)
      c->started(t);
  });
}

void job::connection_lost(const caf::error&) {
  auto code = child_.get_returncode();
  tact::call_soon_threadsafe(owner_, [conn = conn_, code] {
    if (auto* c = *conn)
      c->finished(code);
  });
}

} // namespace

int main(int argc, char** argv) {
  tact::runtime rt{tact::runtime_options{.handle_signals = true}};
  return example::serve_urls(
    rt, [&rt] { return std::make_unique<connection>(rt); }, argc, argv);
}
