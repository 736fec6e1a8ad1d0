// The tact half of the differential test: a server whose protocol records
// every callback and reacts as its options say; record_server.py is the
// same server written with asyncio. differential.py plays one peer against
// both and compares what they print.
//
//   record_server [--tls CERT KEY] [--greeting TEXT] [--keep-open]
//                 [--pause-first MS] [--write-on-data BYTES]
//                 [--then close|abort] [--write-eof TEXT] [--lines]
//
// Prints `listening on tcp://127.0.0.1:PORT`, then one line per connection
// when it is lost: its callbacks, consecutive data_received merged into
// one "data" event, and the bytes received as a count and a CRC-32:
//   made data eof lost:none n=12 h=...
// With --lines the recorder is behind tact's line framing: it receives and
// writes lines, and counts each line with its delimiter.

#include <array>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "tact/actors/protocol.hpp"
#include "tact/transports/framing.hpp"
#include "tact/runtime/errc.hpp"
#include "tact/runtime/runtime.hpp"

namespace {

struct options {
  std::string cert;
  std::string key;
  std::string greeting;
  bool keep_open = false;
  int pause_first_ms = -1;
  size_t write_on_data = 0;
  std::string then;
  std::string write_eof;
  bool has_write_eof = false;
  bool lines = false;
};

// zlib's CRC-32, continued from `crc` (0 to start), as Python's
// zlib.crc32 computes it.
uint32_t crc32(uint32_t crc, const tact::bytes& data) {
  static const auto table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k)
        c = (c & 1) ? 0xedb88320U ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  crc = ~crc;
  for (auto b : data)
    crc = table[(crc ^ static_cast<uint8_t>(b)) & 0xff] ^ (crc >> 8);
  return ~crc;
}

std::string reason_class(const caf::error& err) {
  if (!err)
    return "none";
  if (err.category() != tact::error_category)
    return "other";
  switch (static_cast<tact::errc>(err.code())) {
    case tact::errc::connection_reset: return "reset";
    case tact::errc::broken_pipe: return "pipe";
    default: return std::string{tact::to_string(static_cast<tact::errc>(err.code()))};
  }
}

class recorder final : public tact::protocol {
public:
  recorder(const options& opts, tact::runtime& rt) : opts_(opts), rt_(rt) {
    // nop
  }

  void connection_made(tact::transport& t) override {
    t_ = t;
    add("made");
    if (!opts_.greeting.empty())
      t_.write(opts_.greeting);
    if (opts_.has_write_eof) {
      t_.write(opts_.write_eof);
      t_.write_eof();
    }
  }

  void data_received(tact::bytes data) override {
    add("data");
    if (opts_.lines)
      data.push_back('\n');
    n_ += data.size();
    hash_ = crc32(hash_, data);
    if (first_) {
      first_ = false;
      if (opts_.pause_first_ms >= 0) {
        t_.pause_reading();
        auto t = t_;
        auto ms = opts_.pause_first_ms;
        rt_.run_in_executor([t, ms]() mutable {
          std::this_thread::sleep_for(std::chrono::milliseconds(ms));
          t.resume_reading();
        });
      }
      if (opts_.write_on_data > 0) {
        // In 16 KiB writes, as a protocol streaming a reply would.
        std::string chunk(16 * 1024, 'w');
        for (size_t done = 0; done < opts_.write_on_data; done += chunk.size())
          t_.write(chunk.substr(0, std::min(chunk.size(),
                                            opts_.write_on_data - done)));
        if (opts_.then == "close")
          t_.close();
        else if (opts_.then == "abort")
          t_.abort();
      }
    }
  }

  bool eof_received() override {
    add("eof");
    if (opts_.keep_open) {
      t_.write(opts_.lines ? "bye" : "bye\n");
      t_.close();
    }
    return opts_.keep_open;
  }

  void pause_writing() override {
    add("pause_writing");
  }

  void resume_writing() override {
    add("resume_writing");
  }

  void connection_lost(const caf::error& reason) override {
    add("lost:" + reason_class(reason));
    std::string line;
    for (auto& e : events_)
      line += e + " ";
    std::printf("%sn=%zu h=%08x\n", line.c_str(), n_,
                static_cast<unsigned>(hash_));
    std::fflush(stdout);
  }

private:
  void add(std::string event) {
    if (event == "data" && !events_.empty() && events_.back() == "data")
      return;
    events_.push_back(std::move(event));
  }

  const options& opts_;
  tact::runtime& rt_;
  tact::transport t_;
  std::vector<std::string> events_;
  size_t n_ = 0;
  uint32_t hash_ = 0;
  bool first_ = true;
};

int usage() {
  std::fprintf(stderr, "usage: record_server [--tls CERT KEY] [--greeting "
                       "TEXT] [--keep-open] [--pause-first MS] "
                       "[--write-on-data BYTES] [--then close|abort] "
                       "[--write-eof TEXT] [--lines]\n");
  return 2;
}

} // namespace

int main(int argc, char** argv) {
  options opts;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto more = [&](int n) { return i + n < argc; };
    if (arg == "--tls" && more(2)) {
      opts.cert = argv[++i];
      opts.key = argv[++i];
    } else if (arg == "--greeting" && more(1)) {
      opts.greeting = argv[++i];
    } else if (arg == "--keep-open") {
      opts.keep_open = true;
    } else if (arg == "--pause-first" && more(1)) {
      opts.pause_first_ms = std::atoi(argv[++i]);
    } else if (arg == "--write-on-data" && more(1)) {
      opts.write_on_data = std::strtoull(argv[++i], nullptr, 10);
    } else if (arg == "--then" && more(1)) {
      opts.then = argv[++i];
    } else if (arg == "--write-eof" && more(1)) {
      opts.write_eof = argv[++i];
      opts.has_write_eof = true;
    } else if (arg == "--lines") {
      opts.lines = true;
    } else {
      return usage();
    }
  }
  tact::runtime rt{tact::runtime_options{.handle_signals = true}};
  tact::server_options sopts;
  if (!opts.cert.empty()) {
    auto ctx = tact::tls_context::server({.cert_file = opts.cert,
                                          .key_file = opts.key});
    if (!ctx) {
      std::fprintf(stderr, "record_server: %s\n",
                   tact::describe(ctx.error()).c_str());
      return 2;
    }
    sopts.tls = *ctx;
  }
  tact::protocol_factory factory
    = [&] { return std::make_unique<recorder>(opts, rt); };
  if (opts.lines) {
    auto f = tact::framed(tact::line_framing{}, factory);
    if (!f) {
      std::fprintf(stderr, "record_server: %s\n",
                   tact::describe(f.error()).c_str());
      return 2;
    }
    factory = *f;
  }
  auto srv = rt.create_server(factory, "127.0.0.1", 0, sopts);
  if (!srv) {
    std::fprintf(stderr, "record_server: %s\n",
                 tact::describe(srv.error()).c_str());
    return 1;
  }
  std::printf("listening on tcp://127.0.0.1:%d\n", srv->port());
  std::fflush(stdout);
  rt.wait_for_signal();
  rt.shutdown(std::chrono::milliseconds{500});
  return 0;
}
