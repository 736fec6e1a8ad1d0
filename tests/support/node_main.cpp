// A second node for the distribution tests: publishes a maker of
// upper-casing protocol actors on 127.0.0.1, prints `published on PORT`,
// and runs until its stdin closes.
//
//   tact_test_node [CA CERT KEY]    (with a cluster's trust settings)

#include <cctype>
#include <csignal>
#include <cstdio>
#include <memory>

#include <sys/prctl.h>
#include <unistd.h>

#include <caf/event_based_actor.hpp>
#include <caf/send.hpp>

#include "support/node.hpp"
#include "tact/runtime/errc.hpp"
#include "tact/runtime/messages.hpp"
#include "tact/runtime/runtime.hpp"

namespace {

// Writes back every byte upper-cased; closes on EOF. It watches its
// transport, which lives on another node: if that node goes, no
// connection_lost can come, and the down message stands for it.
caf::behavior upper(caf::event_based_actor* self) {
  auto t = std::make_shared<tact::transport>();
  self->set_down_handler([self](caf::down_msg&) { self->quit(); });
  return {
    [=](tact::connection_made& msg) {
      *t = msg.handle;
      self->monitor(t->actor());
    },
    [=](tact::data_received& msg) {
      t->consumed(msg.data.size());
      for (auto& c : msg.data)
        c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
      t->write(std::move(msg.data));
    },
    [=](tact::eof_received) { return false; },
    [=](tact::connection_lost&) { self->quit(); },
  };
}

} // namespace

int main(int argc, char** argv) {
  // Dies with the test process, whatever happens to it.
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() == 1)
    return 1;
  tact::runtime_options opts;
  opts.distributed = true;
  if (argc == 4)
    opts.cluster_tls = tact::cluster_tls_options{argv[1], argv[2], argv[3], {}};
  tact::runtime rt{opts};
  auto maker = rt.system().spawn([](caf::event_based_actor* self)
                                   -> caf::behavior {
    return {
      [self](tact::test::make_atom) { return self->spawn(upper); },
    };
  });
  auto port = rt.publish(maker, 0, "127.0.0.1");
  if (!port) {
    std::fprintf(stderr, "publish: %s\n", tact::describe(port.error()).c_str());
    return 1;
  }
  std::printf("published on %u\n", static_cast<unsigned>(*port));
  std::fflush(stdout);
  char c;
  while (::read(0, &c, 1) > 0) {
    // until stdin closes
  }
  caf::anon_send_exit(maker, caf::exit_reason::user_shutdown);
  return 0;
}
