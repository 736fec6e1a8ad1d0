// A line chat: each connection is a coroutine, the room is a behaviour
// (an actor that knows who is in and passes lines on).
//
//   chat_room tcp://127.0.0.1:7000 unix:///tmp/chat.sock
//
// A client's first line is its name; each later line goes to everyone
// else as `name: line`; joins and leaves are announced as `* name joined`
// and `* name left`. Prints one `listening on URL` line per listener;
// exits 0 on SIGINT or SIGTERM. A client that does not read is dropped
// once 1 MiB waits for it, so one slow reader never holds the room up.

#include <map>
#include <string>

#include <caf/event_based_actor.hpp>

#include "tact/runtime/runtime.hpp"

#include "serve.hpp"

namespace {

using join_atom = caf::atom_constant<caf::atom("chat_join")>;
using say_atom = caf::atom_constant<caf::atom("chat_say")>;

// The room: members by actor; a member that ends (its connection is gone)
// leaves. (A class: spawning a function instantiates CAF 0.17's
// init_fun_factory, which UBSan's null check trips over.)
class room final : public caf::event_based_actor {
public:
  using caf::event_based_actor::event_based_actor;

  caf::behavior make_behavior() override {
    set_down_handler([this](const caf::down_msg& msg) {
      auto i = members_.find(msg.source);
      if (i == members_.end())
        return;
      auto name = i->second;
      members_.erase(i);
      tell_all(msg.source, "* " + name + " left\n");
    });
    return {
      [this](join_atom, const caf::actor& who, const std::string& name) {
        monitor(who);
        members_.emplace(who.address(), name);
        tell_all(who.address(), "* " + name + " joined\n");
      },
      [this](say_atom, const caf::actor& who, const std::string& text) {
        auto i = members_.find(who.address());
        if (i != members_.end())
          tell_all(who.address(), i->second + ": " + text);
      },
    };
  }

private:
  void tell_all(const caf::actor_addr& from, const std::string& line) {
    for (auto& [member, name] : members_)
      if (member != from)
        send(caf::actor_cast<caf::actor>(member), line);
  }

  std::map<caf::actor_addr, std::string> members_;
};

tact::task<> member(caf::actor room, tact::stream s) {
  co_await s.write("name? ");
  auto name = co_await s.read_line();
  if (!name || name->size() < 2)
    co_return;
  // Lines from the room, between our reads.
  s.on_message([&s](caf::message& msg) {
    if (msg.match_elements<std::string>()) {
      if (s.get_transport().get_write_buffer_size() > (1 << 20))
        s.abort(); // too slow a reader
      else
        s.write(msg.get_as<std::string>(0));
    }
    return caf::message{};
  });
  caf::anon_send(room, join_atom::value, s.self(),
                 std::string(name->begin(), name->end() - 1));
  while (auto line = co_await s.read_line()) {
    if (line->empty())
      break; // EOF
    caf::anon_send(room, say_atom::value, s.self(),
                   std::string(line->begin(), line->end()));
  }
  // Returning closes the connection; the room sees this actor end.
}

} // namespace

int main(int argc, char** argv) {
  tact::runtime rt{tact::runtime_options{.handle_signals = true}};
  auto the_room = rt.system().spawn<room>();
  auto code = example::serve_urls(
    rt,
    [the_room](tact::stream s) { return member(the_room, std::move(s)); },
    argc, argv);
  // (Before the runtime goes: its actor system waits for every actor.)
  caf::anon_send_exit(the_room, caf::exit_reason::user_shutdown);
  return code;
}
