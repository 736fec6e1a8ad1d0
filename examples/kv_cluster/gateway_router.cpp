// The gateway's router: one actor that sends each command to the shards
// that hold its keys, through remote actors, and turns their answers into
// RESP for the sessions (gateway.cpp).

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

#include "gateway.hpp"
#include "kv.hpp"
#include "tact/protocols/resp.hpp"
#include "tact/runtime/errc.hpp"
#include "tact/runtime/messages.hpp"

namespace kv::gateway {

std::atomic<size_t> clients{0};

namespace {

using namespace std::chrono_literals;

// -- router: commands to shards -----------------------------------------------------


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

} // namespace

caf::actor spawn_router(caf::actor_system& sys, uint32_t shards,
                        caf::actor dir, std::string join,
                        std::chrono::milliseconds timeout) {
  return sys.spawn<router>(shards, std::move(dir), std::move(join), timeout);
}

} // namespace kv::gateway
