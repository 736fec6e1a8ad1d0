// A program built against an installed tact: echo one message over TCP.

#include <cstdio>
#include <future>
#include <memory>

#include <tact/actors/protocol.hpp>
#include <tact/protocols/echo.hpp>
#include <tact/runtime/errc.hpp>
#include <tact/runtime/runtime.hpp>

namespace {

class once final : public tact::protocol {
public:
  explicit once(std::promise<std::string>& out) : out_(out) {}
  void connection_made(tact::transport& t) override { t.write("installed"); }
  void data_received(tact::bytes data) override {
    out_.set_value(tact::to_string(data));
  }

private:
  std::promise<std::string>& out_;
};

} // namespace

int main() {
  tact::runtime rt;
  auto srv = rt.create_server(
    [] { return std::make_unique<tact::echo_protocol>(); }, "127.0.0.1", 0);
  if (!srv) {
    std::fprintf(stderr, "%s\n", tact::describe(srv.error()).c_str());
    return 1;
  }
  std::promise<std::string> got;
  auto t = rt.create_connection([&] { return std::make_unique<once>(got); },
                                "127.0.0.1", srv->port());
  if (!t)
    return 1;
  auto text = got.get_future().get();
  t->close();
  std::printf("%s\n", text.c_str());
  return text == "installed" ? 0 : 1;
}
