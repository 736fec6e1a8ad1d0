// The gateway node: a tact TCP server speaking the Redis protocol (RESP).
// One session actor per connection parses commands and keeps the answers
// in order; one router actor sends each command to the shards that hold
// its key, through remote actors, and turns the answers into RESP.

#include <algorithm>
#include <atomic>
#include <cctype>
#include <deque>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <tuple>

#include <unistd.h>

#include <caf/actor_system.hpp>
#include <caf/delegated.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/send.hpp>

#include "kv.hpp"
#include "tact/protocols/resp.hpp"
#include "tact/runtime/errc.hpp"
#include "tact/runtime/messages.hpp"

namespace kv {

namespace {

using namespace std::chrono_literals;

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return std::tolower(c); });
  return s;
}

std::string error_text(std::string_view text) {
  std::string out;
  tact::resp::append_error(out, text);
  return out;
}

// -- what all clients together may hold -------------------------------------------------

// The bounds across connections (each connection has its own as well,
// below): the bytes of commands read and not yet run, partly received ones
// included (Redis's query buffers), and the keys of the commands sent to
// the shards and not yet answered. Shared by the sessions, which may run
// on several threads.
// A command's keys among those in flight, with the command to the router.
struct key_token {
  std::shared_ptr<void> held;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, key_token&) {
  return f(caf::meta::type_name("kv.key_token"));
}

class shared_budget {
public:
  shared_budget(size_t max_query, size_t max_keys)
    : max_query_(max_query), max_keys_(max_keys) {
  }

  /// `who` holds `bytes` of commands not yet run. Past the limit, the
  /// session that holds the most (perhaps `who`), to be disconnected; its
  /// bytes no longer count.
  caf::actor_addr hold(const caf::actor_addr& who, size_t bytes) {
    std::lock_guard<std::mutex> guard{mx_};
    auto& mine = query_[who];
    query_total_ = query_total_ - mine + bytes;
    mine = bytes;
    if (max_query_ == 0 || query_total_ <= max_query_)
      return {};
    auto most = std::max_element(query_.begin(), query_.end(),
                                 [](auto& x, auto& y) {
                                   return x.second < y.second;
                                 });
    query_total_ -= most->second;
    most->second = 0;
    return most->first;
  }

  /// Whether the keys in flight leave room for another command; if not,
  /// `who` gets (retry_atom, true) once there is room again. A command
  /// started with room may pass the limit by its own keys (at most 65,537),
  /// once per thread running sessions.
  bool room(const caf::actor_addr& who) {
    std::lock_guard<std::mutex> guard{mx_};
    if (max_keys_ == 0 || keys_ < max_keys_)
      return true;
    waiting_.insert(who);
    return false;
  }

  /// Takes `n` keys for a command; they are given back when the last
  /// copy of the token goes, which is when the router is done with the
  /// command (also when its session ended before: the shards still work
  /// on it until then).
  std::shared_ptr<void> take_keys(const std::shared_ptr<shared_budget>& self,
                                  size_t n) {
    {
      std::lock_guard<std::mutex> guard{mx_};
      keys_ += n;
    }
    return std::shared_ptr<void>{nullptr,
                                 [self, n](void*) { self->give_keys(n); }};
  }

  /// A session that ends: its query bytes no longer count.
  void leave(const caf::actor_addr& who) {
    std::lock_guard<std::mutex> guard{mx_};
    if (auto i = query_.find(who); i != query_.end()) {
      query_total_ -= i->second;
      query_.erase(i);
    }
    waiting_.erase(who);
  }

  /// For INFO: bytes of commands not yet run, keys in flight.
  std::pair<size_t, size_t> held() {
    std::lock_guard<std::mutex> guard{mx_};
    return {query_total_, keys_};
  }

  [[nodiscard]] size_t max_query() const noexcept {
    return max_query_;
  }

private:
  // The waiting sessions are woken once there is room again (all of
  // them: each takes what it needs, and those that find none wait again).
  void give_keys(size_t n) {
    std::set<caf::actor_addr> wake;
    {
      std::lock_guard<std::mutex> guard{mx_};
      keys_ -= std::min(keys_, n);
      if (max_keys_ == 0 || keys_ < max_keys_)
        wake.swap(waiting_);
    }
    for (auto& who : wake)
      if (auto hdl = caf::actor_cast<caf::actor>(who))
        caf::anon_send(hdl, retry_atom::value, true);
  }

  const size_t max_query_;
  const size_t max_keys_;
  std::mutex mx_;
  std::map<caf::actor_addr, size_t> query_;
  size_t query_total_ = 0;
  size_t keys_ = 0;
  std::set<caf::actor_addr> waiting_;
};

// -- router: commands to shards -----------------------------------------------------

// Client connections open on this gateway (INFO's connected_clients).
std::atomic<size_t> clients{0};

class router : public caf::event_based_actor {
public:
  router(caf::actor_config& cfg, uint32_t shards, caf::actor dir,
         std::string join, std::chrono::milliseconds timeout)
    : caf::event_based_actor(cfg),
      shards_(shards),
      dir_(std::move(dir), std::move(join)),
      timeout_(timeout),
      links_(shards),
      outbox_(shards) {
  }

  caf::behavior make_behavior() override {
    monitor(dir_.actor());
    set_down_handler([this](caf::down_msg& msg) { on_down(msg); });
    ask_table();
    return {
      [this](rejoin_atom) { dir_.rejoin(this); },
      [this](table_atom) { ask_table(); },
      [this](update_atom, uint32_t j, std::string& addr) {
        on_update(j, addr);
      },
      [this](retry_atom, uint32_t j) {
        links_[j].retry_pending = false;
        connect_link(j);
      },
      [this](flush_atom) { flush(); },
      [this](ready_atom) -> caf::result<bool> {
        if (all_up())
          return true;
        ready_.push_back(make_response_promise<bool>());
        return caf::delegated<bool>{};
      },
      [this](command_atom, std::vector<std::string>& cmd,
             key_token& keys) -> caf::result<std::string> {
        dispatch(cmd, promise{make_response_promise<std::string>(),
                              std::move(keys.held)});
        return caf::delegated<std::string>{};
      },
    };
  }

private:
  // A client's answer, and its command's keys among those in flight:
  // given back when the last copy of this goes, once the command is done.
  struct promise {
    caf::typed_response_promise<std::string> rp;
    std::shared_ptr<void> keys;
    void deliver(std::string answer) {
      rp.deliver(std::move(answer));
    }
  };
  using done_fn = std::function<void(caf::expected<reply>)>;

  struct link {
    caf::actor hdl;
    std::string addr;
    bool connecting = false;
    bool retry_pending = false;
    // Requests for this shard's keys in flight at the other holder, and
    // those held back until they are answered (see attempt).
    size_t detours = 0;
    std::vector<std::function<void()>> held;
  };

  // -- the shards' addresses ------------------------------------------------------

  bool all_up() const {
    return std::all_of(links_.begin(), links_.end(),
                       [](const link& l) { return static_cast<bool>(l.hdl); });
  }

  void on_update(uint32_t j, const std::string& addr) {
    if (j >= shards_)
      return;
    auto& l = links_[j];
    if (addr == l.addr && (l.hdl || l.connecting))
      return;
    l.addr = addr;
    // An empty address: gone from the directory; its down message
    // follows, or came.
    connect_link(j);
  }

  // Connects to shard `j` while the directory lists it, retrying.
  void connect_link(uint32_t j) {
    auto& l = links_[j];
    if (l.addr.empty() || l.hdl || l.connecting)
      return;
    l.connecting = true;
    auto addr = l.addr;
    connect_async(
      this, addr,
      [this, j, addr](caf::actor hdl) {
        auto& lj = links_[j];
        lj.connecting = false;
        if (lj.addr != addr) {
          connect_link(j); // a newer address came meanwhile
          return;
        }
        lj.hdl = std::move(hdl);
        monitor(lj.hdl);
        say("gateway: shard %u at %s", j, addr.c_str());
        if (all_up()) {
          for (auto& rp : ready_)
            rp.deliver(true);
          ready_.clear();
        }
      },
      [this, j, addr](const caf::error& err) {
        links_[j].connecting = false;
        say("gateway: cannot reach shard %u at %s: %s", j, addr.c_str(),
            tact::describe(err).c_str());
        relink_later(j);
      });
  }

  void relink_later(uint32_t j) {
    if (links_[j].retry_pending)
      return;
    links_[j].retry_pending = true;
    delayed_send(this, 500ms, retry_atom::value, j);
  }

  // The shards' addresses, and a subscription to their changes. A
  // directory that does not answer is asked again (a lost one is
  // rejoined).
  void ask_table() {
    if (!dir_.actor())
      return;
    request(dir_.actor(), 5s, table_atom::value)
      .then(
        [this](std::vector<std::string>& table) {
          for (uint32_t j = 0; j < table.size() && j < shards_; ++j)
            on_update(j, table[j]);
        },
        [this](caf::error& err) {
          say("gateway: the directory did not answer (%s); asking again",
              tact::describe(err).c_str());
          delayed_send(this, 1s, table_atom::value);
        });
  }

  void on_down(const caf::down_msg& msg) {
    if (dir_.lost(this, msg, "gateway", "serving through the links it has",
                  [this] { ask_table(); }))
      return;
    for (uint32_t j = 0; j < shards_; ++j) {
      if (!links_[j].hdl || links_[j].hdl.address() != msg.source)
        continue;
      links_[j].hdl = nullptr;
      say("gateway: shard %u is down", j);
      // Requests in flight to it fail now, not at their timeout.
      std::vector<uint64_t> lost;
      for (auto& [rid, p] : pending_)
        if (p.first == j)
          lost.push_back(rid);
      for (auto rid : lost)
        fail(rid, caf::make_error(caf::sec::request_receiver_down));
      // A link that broke while the directory still lists the shard is
      // made again.
      relink_later(j);
    }
  }

  // -- asking the holders of a key ------------------------------------------------

  void fail(uint64_t rid, caf::error err) {
    auto i = pending_.find(rid);
    if (i == pending_.end())
      return;
    auto fn = std::move(i->second.second);
    pending_.erase(i);
    fn(std::move(err));
  }

  // Sends `o` to the holders of primary `p`'s keys: the primary if it is
  // up, else the replica. A holder that fails or is not serving yet passes
  // it on to the other, if `resend` allows it (INCR is not resent once
  // sent: it may have been applied).
  void ask(uint32_t p, bool resend, done_fn then, op o) {
    std::vector<uint32_t> order{p};
    if (replica_of(p, shards_) != p)
      order.push_back(replica_of(p, shards_));
    attempt(std::move(order), 0, resend, std::move(then),
            std::make_shared<const op>(std::move(o)));
  }

  // One shard at a time takes the writes to a key. While requests for
  // primary `p`'s keys are in flight at its replica (p was down), requests
  // that would go to p, back now, wait until those are answered: the
  // replica answers a write once p has its copy, so p then has them all.
  void attempt(std::vector<uint32_t> order, size_t i, bool resend,
               done_fn then, std::shared_ptr<const op> args) {
    while (i < order.size() && !links_[order[i]].hdl)
      ++i;
    if (i == order.size()) {
      std::string who;
      for (auto j : order)
        who += (who.empty() ? "" : " and ") + std::to_string(j);
      then(reply{status::error, 0,
                 "CLUSTERDOWN no holder of the key is reachable (shard "
                   + who + ")"});
      return;
    }
    auto p = order.front();
    auto c = order[i];
    if (c == p && links_[p].detours > 0) {
      links_[p].held.push_back([this, order, i, resend, then, args] {
        attempt(order, i, resend, then, args);
      });
      return;
    }
    if (c != p)
      ++links_[p].detours;
    // Once this request is answered or has failed.
    auto settle = [this, p, c] {
      if (c == p || --links_[p].detours > 0)
        return;
      auto held = std::move(links_[p].held);
      links_[p].held.clear();
      for (auto& fn : held)
        fn();
    };
    auto rid = next_rid_++;
    auto next = [this, order, i, resend, then, args, settle](caf::error err) {
      settle();
      if (resend)
        attempt(order, i + 1, resend, then, args);
      else
        then(std::move(err));
    };
    pending_.emplace(rid, std::make_pair(c, next));
    auto on_reply = [this, rid, order, i, resend, then, args,
                     settle](reply& r) {
      if (pending_.erase(rid) == 0)
        return;
      settle();
      if (r.code == status::unavailable)
        attempt(order, i + 1, resend, then, args);
      else
        then(std::move(r));
    };
    outbox_[c].push_back({*args, rid, std::move(on_reply)});
    if (!flush_pending_) {
      flush_pending_ = true;
      send(this, flush_atom::value);
    }
  }

  // Sends what was gathered for each shard while the mailbox was read, as
  // one batch: under load, one BASP message carries many commands.
  void flush() {
    flush_pending_ = false;
    auto boxes = std::move(outbox_);
    outbox_.assign(shards_, {});
    for (uint32_t c = 0; c < shards_; ++c) {
      auto& box = boxes[c];
      if (box.empty())
        continue;
      if (!links_[c].hdl) {
        // Down since: each goes on to the other holder.
        for (auto& item : box)
          fail(item.rid, caf::make_error(caf::sec::request_receiver_down));
        continue;
      }
      std::vector<op> ops;
      ops.reserve(box.size());
      std::vector<uint64_t> rids;
      rids.reserve(box.size());
      auto answers = std::make_shared<std::vector<outgoing>>();
      for (auto& item : box) {
        ops.push_back(std::move(item.o));
        rids.push_back(item.rid);
      }
      *answers = std::move(box);
      request(links_[c].hdl, timeout_, batch_atom::value, std::move(ops))
        .then(
          [this, answers](std::vector<reply>& replies) {
            auto& items = *answers;
            for (size_t k = 0; k < items.size(); ++k) {
              if (k < replies.size())
                items[k].on_reply(replies[k]);
              else
                fail(items[k].rid, caf::make_error(caf::sec::invalid_argument,
                                                   "short batch answer"));
            }
          },
          [this, rids](caf::error& err) {
            for (auto rid : rids)
              fail(rid, err);
          });
    }
  }

  // -- the commands --------------------------------------------------------------

  static bool arity(const std::vector<std::string>& cmd, size_t min,
                    size_t max, const promise& rp_in) {
    if (cmd.size() >= min && cmd.size() <= max)
      return true;
    auto rp = rp_in;
    rp.deliver(error_text("ERR wrong number of arguments for '"
                          + lower(cmd[0]) + "' command"));
    return false;
  }

  // The answer to a client whose command failed on the way: a shard went
  // down with it in flight (INCR only: other commands go to the other
  // holder then).
  static std::string failure(const caf::error& err) {
    return error_text("ERR the shard failed while running the command; it "
                      "may or may not have been applied ("
                      + tact::describe(err) + ")");
  }

  // An error from the shards (CLUSTERDOWN, a wrong type) as RESP, or
  // nothing.
  static bool failed(const caf::expected<reply>& r, std::string& out) {
    if (!r)
      out = failure(r.error());
    else if (r->code == status::error)
      tact::resp::append_error(out, r->value);
    else
      return false;
    return true;
  }

  void dispatch(std::vector<std::string>& cmd, promise rp) {
    auto name = lower(cmd[0]);
    if (name == "get") {
      if (!arity(cmd, 2, 2, rp))
        return;
      ask(primary_of(cmd[1], shards_), true,
          [rp](caf::expected<reply> r) mutable {
            std::string out;
            if (failed(r, out))
              ;
            else if (r->code == status::ok)
              tact::resp::append_bulk(out, r->value);
            else
              tact::resp::append_null(out);
            rp.deliver(std::move(out));
          },
          op{kind::get, cmd[1], {}, 0});
    } else if (name == "set") {
      if (cmd.size() > 3) {
        rp.deliver(error_text("ERR syntax error"));
        return;
      }
      if (!arity(cmd, 3, 3, rp))
        return;
      ask(primary_of(cmd[1], shards_), true,
          [rp](caf::expected<reply> r) mutable {
            std::string out;
            if (!failed(r, out))
              out = "+OK\r\n";
            rp.deliver(std::move(out));
          },
          op{kind::set, cmd[1], cmd[2], 0});
    } else if (name == "incr") {
      if (!arity(cmd, 2, 2, rp))
        return;
      ask(primary_of(cmd[1], shards_), false,
          [rp](caf::expected<reply> r) mutable {
            std::string out;
            if (!failed(r, out))
              tact::resp::append_integer(out, r->n);
            rp.deliver(std::move(out));
          },
          op{kind::incr, cmd[1], {}, 0});
    } else if (name == "del" || name == "exists") {
      if (!arity(cmd, 2, SIZE_MAX, rp))
        return;
      sum(cmd.size() - 1, rp, [&](size_t k, done_fn then) {
        auto& key = cmd[k + 1];
        if (name == "del")
          ask(primary_of(key, shards_), true, std::move(then),
              op{kind::del, key, {}, 0});
        else
          ask(primary_of(key, shards_), true, std::move(then),
              op{kind::exists, key, {}, 0});
      });
    } else if (name == "info") {
      info(rp);
    } else if (name == "dbsize") {
      if (!arity(cmd, 1, 1, rp))
        return;
      // Each shard counts the keys it is primary of; a replica counts for
      // a primary that is down.
      sum(shards_, rp, [&](size_t p, done_fn then) {
        auto pid = static_cast<uint32_t>(p);
        ask(pid, true, std::move(then), op{kind::count, {}, {}, pid});
      });
    } else {
      std::string args;
      for (size_t k = 1; k < cmd.size() && k < 4; ++k)
        args += "'" + cmd[k].substr(0, 128) + "' ";
      rp.deliver(error_text("ERR unknown command '" + cmd[0]
                            + "', with args beginning with: " + args));
    }
  }

  // INFO: the cluster as this gateway sees it, in Redis's format (a bulk
  // string of `# Section` headers and `name:value` lines).
  void info(promise rp) {
    struct state {
      size_t left;
      std::vector<std::string> keys;
      promise rp;
    };
    auto st = std::make_shared<state>(
      state{shards_, std::vector<std::string>(shards_, "?"), rp});
    auto finish = [this, st] {
      std::string text = "# Server\r\nserver:kv_cluster gateway\r\n"
                         "process_id:"
                         + std::to_string(::getpid())
                         + "\r\n\r\n# Clients\r\nconnected_clients:"
                         + std::to_string(clients.load()) + "\r\n\r\n"
                         + "# Cluster\r\nshards:" + std::to_string(shards_)
                         + "\r\nshards_linked:";
      size_t linked = 0;
      for (auto& l : links_)
        linked += l.hdl ? 1 : 0;
      text += std::to_string(linked) + "\r\n";
      int64_t total = 0;
      bool all = true;
      for (uint32_t j = 0; j < shards_; ++j) {
        text += "shard" + std::to_string(j) + ":link="
                + (links_[j].hdl ? "up" : "down") + ",address="
                + (links_[j].addr.empty() ? "?" : links_[j].addr)
                + ",keys=" + st->keys[j] + "\r\n";
        if (st->keys[j] == "?")
          all = false;
        else
          total += std::stoll(st->keys[j]);
      }
      text += "\r\n# Keyspace\r\n";
      if (all)
        text += "db0:keys=" + std::to_string(total) + "\r\n";
      std::string out;
      tact::resp::append_bulk(out, text);
      st->rp.deliver(std::move(out));
    };
    for (uint32_t j = 0; j < shards_; ++j)
      ask(j, true,
          [st, j, finish](caf::expected<reply> r) {
            if (r && r->code == status::ok)
              st->keys[j] = std::to_string(r->n);
            if (--st->left == 0)
              finish();
          },
          op{kind::count, {}, {}, j});
  }

  // Asks `n` questions through `each` and answers with the sum of their
  // `n`s, or with the first failure.
  template <class Each>
  void sum(size_t n, promise rp, Each each) {
    struct state {
      size_t left;
      int64_t total = 0;
      std::string failure; // the first, as RESP
      promise rp;
    };
    auto st = std::make_shared<state>(state{n, 0, {}, rp});
    for (size_t k = 0; k < n; ++k)
      each(k, [st](caf::expected<reply> r) {
        std::string out;
        if (failed(r, out)) {
          if (st->failure.empty())
            st->failure = std::move(out);
        } else {
          st->total += r->n;
        }
        if (--st->left > 0)
          return;
        if (st->failure.empty())
          tact::resp::append_integer(st->failure, st->total);
        st->rp.deliver(std::move(st->failure));
      });
  }

  uint32_t shards_;
  directory_link dir_;
  std::chrono::milliseconds timeout_;
  std::vector<link> links_;
  std::vector<caf::typed_response_promise<bool>> ready_;
  std::map<uint64_t, std::pair<uint32_t, std::function<void(caf::error)>>>
    pending_;
  uint64_t next_rid_ = 0;
  // Commands gathered per shard until the next flush.
  struct outgoing {
    op o;
    uint64_t rid;
    std::function<void(reply&)> on_reply;
  };
  std::vector<std::vector<outgoing>> outbox_;
  bool flush_pending_ = false;
};

// -- session: one client connection ---------------------------------------------------

// Commands in flight per connection, and keys in them, before reading
// stops; the keys one command may name.
constexpr size_t max_in_flight = 1024;
constexpr size_t max_in_flight_args = 64 * 1024;
constexpr size_t max_command_keys = 64 * 1024;
// Until a connection's first answers show how large they are, this many
// commands at most are in flight (1,024 GETs of a 1 MiB value would be a
// GiB on its way before the first came back).
constexpr size_t first_in_flight = 32;
// The answers in flight per connection, estimated from the answers so
// far: the in-flight limit is this over their average size.
constexpr size_t in_flight_bytes = 16 * 1024 * 1024;
// What one command may hold (Redis's defaults are 512 MB for a bulk
// string and 1 GB for a client's query buffer).
constexpr tact::resp::limits command_limits{512 * 1024 * 1024, 1024 * 1024,
                                            64 * 1024};
constexpr size_t max_query = 1024 * 1024 * 1024;

// Redis's client-output-buffer-limit: past `hard` bytes of answers unread,
// or past `soft` for `soft_for`, the client is disconnected (0: no limit).
struct output_limits {
  size_t hard = 64 * 1024 * 1024;
  size_t soft = 16 * 1024 * 1024;
  std::chrono::milliseconds soft_for{10000};
};

class session : public caf::event_based_actor {
public:
  session(caf::actor_config& cfg, caf::actor router, output_limits limits,
          std::shared_ptr<const std::string> password,
          std::shared_ptr<shared_budget> budget, bool appendonly)
    : caf::event_based_actor(cfg), router_(std::move(router)),
      limits_(limits), password_(std::move(password)),
      authenticated_(!password_ || password_->empty()),
      budget_(std::move(budget)), appendonly_(appendonly) {
    ++clients;
  }

  ~session() override {
    --clients;
  }

  void on_exit() override {
    budget_->leave(address());
  }

  caf::behavior make_behavior() override {
    return {
      [this](tact::connection_made& msg) { t_ = msg.handle; },
      [this](tact::data_received& msg) {
        auto n = msg.data.size();
        decoder_.feed(std::string_view{msg.data.data(), n});
        t_.consumed(n);
        pump();
      },
      // Keys were given back: the command waiting for them may go.
      [this](retry_atom, bool) { pump(); },
      // Disconnected: over the query bytes all clients may hold, this one
      // holds the most.
      [this](evict_atom) { evict(); },
      [this](tact::eof_received) {
        // Answer what was asked, then close.
        eof_ = true;
        pump();
        return true;
      },
      [this](tact::pause_writing) {
        writing_paused_ = true;
        steer();
      },
      [this](tact::resume_writing) {
        writing_paused_ = false;
        pump();
      },
      [this](tact::connection_lost&) { quit(); },
      // The soft limit's time is up: still over it?
      [this](retry_atom) {
        soft_check_pending_ = false;
        over_output_limit();
      },
    };
  }

private:
  // Writes the answers that are ready, runs the commands that may run,
  // and decides about reading and closing.
  void pump() {
    flush();
    if (over_output_limit())
      return;
    while (!closing_ && !writing_paused_ && slots_.size() < in_flight_limit()
           && args_in_flight_ < max_in_flight_args) {
      // Parsed, a command costs more than its bytes: none is parsed while
      // the keys in flight across clients are at their limit.
      if (!budget_->room(address())) {
        waiting_ = true;
        break;
      }
      waiting_ = false;
      auto next = decoder_.next();
      if (!next) {
        // Redis's words: "Protocol error: invalid bulk length".
        auto text = tact::describe(next.error());
        auto open = text.find(" (");
        if (open != std::string::npos && text.back() == ')')
          text = text.substr(open + 2, text.size() - open - 3);
        answer_now("ERR Protocol error: " + text, true);
        closing_ = true;
        break;
      }
      if (!*next) {
        // A command still coming is read on, up to the query limit.
        if (decoder_.buffered() > max_query) {
          answer_now("ERR Protocol error: query buffer limit", true);
          closing_ = true;
        }
        break;
      }
      run(std::move(**next));
    }
    account();
    flush();
    steer();
    // After the peer's EOF, what is left unparsed is a command cut short
    // (unless it waits for room among the keys in flight).
    if (!t_.is_closing() && slots_.empty()
        && (closing_ || (eof_ && !writing_paused_ && !waiting_)))
      t_.close();
  }

  // Stops reading while answers or unparsed bytes pile up.
  void steer() {
    // Whole commands wait unparsed only behind these; a command still
    // coming never stops reading, or it could never complete.
    bool pause = writing_paused_ || slots_.size() >= in_flight_limit()
                 || args_in_flight_ >= max_in_flight_args || closing_
                 || waiting_;
    if (pause && !paused_) {
      t_.pause_reading();
      paused_ = true;
    } else if (!pause && paused_) {
      t_.resume_reading();
      paused_ = false;
    }
  }

  void answer_now(std::string text, bool is_error) {
    std::string out;
    if (is_error)
      tact::resp::append_error(out, text);
    else
      out = std::move(text);
    slots_.emplace_back(std::move(out));
  }

  // Whether `given` is the password; the time taken does not depend on
  // how much of it matches.
  [[nodiscard]] bool password_is(const std::string& given) const {
    auto& want = *password_;
    unsigned char diff = given.size() == want.size() ? 0 : 1;
    for (size_t i = 0; i < given.size(); ++i)
      diff |= static_cast<unsigned char>(given[i])
              ^ static_cast<unsigned char>(want[i % want.size()]);
    return diff == 0;
  }

  // AUTH [default] PASSWORD, and HELLO's AUTH: Redis's answers.
  std::string authenticate(const std::string* user, const std::string& pass) {
    if (!password_ || password_->empty())
      return "-ERR AUTH <password> called without any password configured "
             "for the default user. Are you sure your configuration is "
             "correct?\r\n";
    if ((user != nullptr && *user != "default") || !password_is(pass)) {
      authenticated_ = false;
      return "-WRONGPASS invalid username-password pair or user is "
             "disabled.\r\n";
    }
    authenticated_ = true;
    return "+OK\r\n";
  }

  // Tells the budget what this connection holds unparsed; past the limit
  // across clients, the largest holder goes.
  void account() {
    auto victim = budget_->hold(address(), decoder_.buffered());
    if (!victim)
      return;
    if (victim == address())
      evict();
    else if (auto hdl = caf::actor_cast<caf::actor>(victim))
      caf::anon_send(hdl, evict_atom::value);
  }

  void evict() {
    if (closing_)
      return;
    auto peer = t_.get_extra_info("peername");
    say("gateway: client %s disconnected: %zu bytes of commands unread, the "
        "most of all clients, which hold more than %zu bytes together",
        peer ? caf::deep_to_string(*peer).c_str() : "?", decoder_.buffered(),
        budget_->max_query());
    decoder_ = tact::resp::command_decoder{command_limits};
    waiting_ = false;
    answer_now("ERR Protocol error: query buffer limit of all clients", true);
    closing_ = true;
    budget_->hold(address(), 0);
    pump();
  }

  void run(tact::resp::command cmd) {
    auto name = lower(cmd[0]);
    std::string out;
    if (name == "auth" && (cmd.size() == 2 || cmd.size() == 3)) {
      out = cmd.size() == 2 ? authenticate(nullptr, cmd[1])
                            : authenticate(&cmd[1], cmd[2]);
    } else if (name == "auth") {
      tact::resp::append_error(out, "ERR wrong number of arguments for 'auth' "
                                    "command");
    } else if (name == "hello") {
      // RESP2 only; HELLO 2 [AUTH user pass] [SETNAME name].
      if (cmd.size() >= 2 && cmd[1] != "2") {
        tact::resp::append_error(out, "NOPROTO unsupported protocol version");
      } else {
        for (size_t k = 2; k < cmd.size() && out.empty();) {
          auto option = lower(cmd[k]);
          if (option == "auth" && k + 2 < cmd.size()) {
            out = authenticate(&cmd[k + 1], cmd[k + 2]);
            if (out == "+OK\r\n")
              out.clear();
            k += 3;
          } else if (option == "setname" && k + 1 < cmd.size()) {
            k += 2;
          } else {
            tact::resp::append_error(out, "ERR Syntax error in HELLO option '"
                                            + cmd[k] + "'");
          }
        }
        if (out.empty()) {
          out.clear();
          if (!authenticated_) {
            out = "-NOAUTH HELLO must be called with the client already "
                  "authenticated, otherwise the HELLO <proto> AUTH <user> "
                  "<pass> option can be used to authenticate the client and "
                  "select the RESP protocol version at the same time\r\n";
          } else {
            tact::resp::append_array_header(out, 6);
            tact::resp::append_bulk(out, "server");
            tact::resp::append_bulk(out, "kv_cluster");
            tact::resp::append_bulk(out, "proto");
            tact::resp::append_integer(out, 2);
            tact::resp::append_bulk(out, "mode");
            tact::resp::append_bulk(out, "cluster-gateway");
          }
        }
      }
    } else if (!authenticated_ && name != "quit") {
      out = "-NOAUTH Authentication required.\r\n";
    } else if (name == "ping") {
      if (cmd.size() == 1)
        out = "+PONG\r\n";
      else if (cmd.size() == 2)
        tact::resp::append_bulk(out, cmd[1]);
      else
        tact::resp::append_error(
          out, "ERR wrong number of arguments for 'ping' command");
    } else if (name == "echo" && cmd.size() == 2) {
      tact::resp::append_bulk(out, cmd[1]);
    } else if (name == "quit") {
      out = "+OK\r\n";
      closing_ = true;
    } else if (name == "select" && cmd.size() == 2) {
      out = cmd[1] == "0" ? "+OK\r\n" : "-ERR DB index is out of range\r\n";
    } else if (name == "command") {
      // redis-cli asks for the command table to offer hints.
      tact::resp::append_array_header(out, 0);
    } else if (name == "config" && cmd.size() == 3 && lower(cmd[1]) == "get") {
      // redis-benchmark asks these two; the store is in memory only.
      auto param = lower(cmd[2]);
      // Shards keep no snapshots; each keeps a log unless
      // --appendonly no.
      if (param == "save" || param == "appendonly") {
        tact::resp::append_array_header(out, 2);
        tact::resp::append_bulk(out, param);
        tact::resp::append_bulk(out, param == "save"  ? ""
                                     : appendonly_    ? "yes"
                                                      : "no");
      } else {
        tact::resp::append_array_header(out, 0);
      }
    } else if (cmd.size() > max_command_keys + 1) {
      tact::resp::append_error(
        out, "ERR too many arguments for one command: "
               + std::to_string(cmd.size() - 1) + " (the gateway takes "
               + std::to_string(max_command_keys) + ")");
    } else {
      auto weight = cmd.size();
      key_token keys{budget_->take_keys(budget_, weight)};
      auto seq = next_seq_++;
      args_in_flight_ += weight;
      slots_.emplace_back(std::nullopt);
      request(router_, caf::infinite, command_atom::value, std::move(cmd),
              std::move(keys))
        .then(
          [this, seq, weight](std::string& answer) {
            args_in_flight_ -= weight;
            fill(seq, std::move(answer));
          },
          [this, seq, weight](caf::error& err) {
            args_in_flight_ -= weight;
            fill(seq, error_text("ERR " + tact::describe(err)));
          });
      return;
    }
    ++next_seq_;
    slots_.emplace_back(std::move(out));
  }

  void fill(uint64_t seq, std::string answer) {
    auto at = seq - first_seq_;
    if (seq < first_seq_ || at >= slots_.size())
      return;
    ++answers_;
    answer_bytes_ += answer.size();
    held_ += answer.size();
    slots_[at] = std::move(answer);
    pump();
  }

  // Commands that may be in flight: few until answers have come, then as
  // many as fit in_flight_bytes at the average answer size so far.
  [[nodiscard]] size_t in_flight_limit() const {
    if (answers_ == 0)
      return first_in_flight;
    auto average = std::max<uint64_t>(answer_bytes_ / answers_, 1);
    return std::clamp<size_t>(in_flight_bytes / average, 1, max_in_flight);
  }

  // A client that does not read what it asked for: past the output limit
  // (answers queued in the transport, and ready ones behind an unanswered
  // command) it is disconnected, as Redis does with
  // client-output-buffer-limit.
  bool over_output_limit() {
    if (closing_)
      return false;
    auto pending = t_.get_write_buffer_size() + held_;
    auto now = std::chrono::steady_clock::now();
    const char* which = nullptr;
    if (limits_.hard > 0 && pending > limits_.hard) {
      which = "hard";
    } else if (limits_.soft > 0 && pending > limits_.soft) {
      if (!soft_since_)
        soft_since_ = now;
      if (now - *soft_since_ >= limits_.soft_for)
        which = "soft";
      else if (!soft_check_pending_) {
        soft_check_pending_ = true;
        delayed_send(this, limits_.soft_for, retry_atom::value);
      }
    } else {
      soft_since_.reset();
    }
    if (which == nullptr)
      return false;
    auto peer = t_.get_extra_info("peername");
    say("gateway: client %s disconnected: %zu bytes of answers unread, over "
        "the %s output limit (%zu bytes%s)",
        peer ? caf::deep_to_string(*peer).c_str() : "?", pending, which,
        which[0] == 'h' ? limits_.hard : limits_.soft,
        which[0] == 'h' ? ""
                        : (" for " + std::to_string(limits_.soft_for.count())
                           + " ms")
                            .c_str());
    closing_ = true;
    t_.abort();
    return true;
  }

  // Writes the answers that are ready, in order, in one write.
  void flush() {
    std::string out;
    while (!slots_.empty() && slots_.front()) {
      out += *slots_.front();
      slots_.pop_front();
      ++first_seq_;
    }
    held_ -= std::min(held_, out.size());
    if (!out.empty())
      t_.write(out);
  }

  caf::actor router_;
  // How many bytes of answers a client may leave unread, and how long.
  output_limits limits_;
  std::optional<std::chrono::steady_clock::time_point> soft_since_;
  bool soft_check_pending_ = false;
  // The password AUTH wants (none or empty: no AUTH).
  std::shared_ptr<const std::string> password_;
  bool authenticated_;
  tact::transport t_;
  tact::resp::command_decoder decoder_{command_limits};
  // Answers from the shards so far, their bytes, and the bytes of those
  // ready and not yet written (behind one still awaited).
  uint64_t answers_ = 0;
  uint64_t answer_bytes_ = 0;
  size_t held_ = 0;
  size_t args_in_flight_ = 0;
  // What all clients may hold together.
  std::shared_ptr<shared_budget> budget_;
  // Whether it waits for room among the keys in flight across clients.
  bool waiting_ = false;
  bool appendonly_;
  std::deque<std::optional<std::string>> slots_;
  uint64_t first_seq_ = 0;
  uint64_t next_seq_ = 0;
  bool writing_paused_ = false;
  bool paused_ = false;
  bool closing_ = false;
  bool eof_ = false;
};

} // namespace

int run_gateway(const args& a) {
  auto shards = a.number("shards", 0);
  auto host = a.get("host", "127.0.0.1");
  auto port = a.number("port", 6380);
  if (shards < 1 || !a.has("join") || port < 0 || port > 65535) {
    std::fprintf(stderr, "kv_cluster gateway: needs --shards N --join "
                         "HOST:PORT --port PORT\n");
    return 2;
  }
  die_with_parent(a);
  tact::runtime rt{node_options(a)};
  auto dir = join_directory(rt, a, "gateway");
  if (!dir)
    return 1;
  auto timeout = std::chrono::milliseconds{a.number("timeout-ms", 3000)};
  auto rtr = rt.system().spawn<router>(static_cast<uint32_t>(shards), dir,
                                       a.get("join"), timeout);
  // Serve once every shard is known.
  {
    caf::scoped_actor self{rt.system()};
    bool ready = false;
    self->request(rtr, 60s, ready_atom::value)
      .receive([&](bool) { ready = true; },
               [&](caf::error& err) {
                 std::fprintf(stderr,
                              "kv_cluster gateway: shards not ready: %s\n",
                              tact::describe(err).c_str());
               });
    if (!ready) {
      caf::anon_send_exit(rtr, caf::exit_reason::user_shutdown);
      return 1;
    }
  }
  auto& sys = rt.system();
  // --client-output-limit HARD,SOFT,SECONDS (bytes, bytes, seconds).
  output_limits output_limit;
  if (a.has("client-output-limit")) {
    unsigned long long hard = 0;
    unsigned long long soft = 0;
    double secs = 0;
    if (std::sscanf(a.get("client-output-limit").c_str(), "%llu,%llu,%lf",
                    &hard, &soft, &secs)
          != 3
        || secs < 0 || secs > 86400) {
      std::fprintf(stderr, "kv_cluster gateway: --client-output-limit wants "
                           "HARD,SOFT,SECONDS\n");
      caf::anon_send_exit(rtr, caf::exit_reason::user_shutdown);
      return 2;
    }
    output_limit = output_limits{
      static_cast<size_t>(hard), static_cast<size_t>(soft),
      std::chrono::milliseconds{static_cast<int64_t>(secs * 1000)}};
  }
  // --requirepass-file: its first line is the password (a file, so that
  // it shows in no process listing).
  std::shared_ptr<const std::string> password;
  if (a.has("requirepass-file")) {
    std::ifstream in{a.get("requirepass-file")};
    std::string line;
    if (!in || !std::getline(in, line) || line.empty()) {
      std::fprintf(stderr, "kv_cluster gateway: no password in %s\n",
                   a.get("requirepass-file").c_str());
      caf::anon_send_exit(rtr, caf::exit_reason::user_shutdown);
      return 2;
    }
    password = std::make_shared<const std::string>(std::move(line));
  }
  // Across clients: the bytes of commands read and not yet run, and the
  // keys of commands in flight to the shards (0: no limit).
  auto max_query_bytes = a.number("max-query-bytes", 256L * 1024 * 1024);
  auto max_keys = a.number("max-keys-in-flight", 128L * 1024);
  // A command starts whenever fewer keys than the bound are in flight, so
  // one larger than the bound still runs (alone).
  if (max_query_bytes < 0 || max_keys < 0) {
    std::fprintf(stderr, "kv_cluster gateway: --max-query-bytes N >= 0 and "
                         "--max-keys-in-flight N >= 0\n");
    caf::anon_send_exit(rtr, caf::exit_reason::user_shutdown);
    return 2;
  }
  auto budget = std::make_shared<shared_budget>(
    static_cast<size_t>(max_query_bytes), static_cast<size_t>(max_keys));
  bool appendonly = a.get("appendonly", "yes") == "yes";
  auto srv = rt.create_server(
    [&sys, rtr, output_limit, password, budget, appendonly] {
      return caf::actor{sys.spawn<session>(rtr, output_limit, password,
                                           budget, appendonly)};
    },
    host, static_cast<uint16_t>(port));
  if (!srv) {
    std::fprintf(stderr, "kv_cluster gateway: cannot listen on %s:%ld: %s\n",
                 host.c_str(), port, tact::describe(srv.error()).c_str());
    caf::anon_send_exit(rtr, caf::exit_reason::user_shutdown);
    return 1;
  }
  for (auto& url : srv->urls())
    say("listening on %s", url.c_str());
  rt.wait_for_signal();
  rt.shutdown(std::chrono::milliseconds{500});
  caf::anon_send_exit(rtr, caf::exit_reason::user_shutdown);
  return 0;
}

} // namespace kv
