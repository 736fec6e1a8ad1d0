// A shard node: one store actor, published over BASP. It holds the keys
// whose primary it is and those of the shard before it (whose replica it
// is), copies every write it takes to the other holder, and on start
// fetches what it holds from both neighbours before it registers with the
// directory and gets commands. Every entry it keeps goes to its log
// (aof.hpp) first, so that a shard restarted after a crash, or with the
// whole cluster, replays what it had.

#include <charconv>
#include <limits>
#include <map>
#include <unordered_map>

#include <caf/actor_system.hpp>
#include <caf/delegated.hpp>
#include <caf/send.hpp>

#include "aof.hpp"
#include "identity.hpp"
#include "kv.hpp"
#include "tact/runtime/errc.hpp"

namespace kv {

namespace {

using namespace std::chrono_literals;

// How long a copy to the other holder may take before it is sent again
// (copies are idempotent: the newer version wins).
constexpr auto copy_timeout = 2s;

// How soon a failed connection to a registered neighbour is tried again.
constexpr auto relink_delay = 500ms;

class store : public caf::event_based_actor {
public:
  store(caf::actor_config& cfg, uint32_t id, uint32_t shards, caf::actor dir,
        std::string join, std::unique_ptr<write_log> log,
        std::vector<entry> replayed, std::unique_ptr<credentials> creds,
        std::unique_ptr<credential_check> check)
    : caf::event_based_actor(cfg),
      id_(id),
      shards_(shards),
      dir_(std::move(dir), std::move(join)),
      peers_(shards),
      // Until it has fetched from both neighbours, a shard whose log was
      // damaged misses what followed the damage: it does not serve.
      must_fetch_(log && log->damaged()),
      log_(std::move(log)),
      creds_(std::move(creds)),
      check_(std::move(check)) {
    for (auto& e : replayed)
      keep(std::move(e), false);
  }

  caf::behavior make_behavior() override {
    monitor(dir_.actor());
    set_down_handler([this](caf::down_msg& msg) { on_down(msg); });
    return {
      [this](start_atom, std::string& addr) {
        addr_ = std::move(addr);
        sync();
      },
      [this](retry_atom) { sync(); },
      [this](rejoin_atom) { dir_.rejoin(this); },
      [this](register_atom) { enrol(); },
      [this](retry_atom, uint32_t j) {
        peers_[j].retry_pending = false;
        link(j);
      },
      [this](update_atom, uint32_t id, std::string& addr) {
        on_update(id, addr);
      },
      [this](batch_atom,
             std::vector<op>& ops) -> caf::result<std::vector<reply>> {
        if (ops.empty())
          return std::vector<reply>{};
        // The answer goes once every op has its own (writes wait for
        // their copies).
        // Nor before the batch's writes are logged.
        struct batch {
          std::vector<reply> replies;
          size_t left;
          caf::typed_response_promise<std::vector<reply>> rp;
          void done_one() {
            if (--left == 0)
              rp.deliver(std::move(replies));
          }
        };
        auto b = std::make_shared<batch>(
          batch{std::vector<reply>(ops.size()), ops.size() + 1,
                make_response_promise<std::vector<reply>>()});
        for (size_t i = 0; i < ops.size(); ++i)
          run(ops[i], [b, i](reply r) {
            b->replies[i] = std::move(r);
            b->done_one();
          });
        commit();
        b->done_one();
        return caf::delegated<std::vector<reply>>{};
      },
      [this](flush_atom) { flush_copies(); },
      [this](repl_atom, std::vector<entry>& entries) -> reply {
        for (auto& e : entries)
          keep(std::move(e));
        commit();
        return {status::ok, 0, {}};
      },
      [this](challenge_atom) -> std::string {
        if (!check_ || !current_sender())
          return {};
        return check_->challenge(current_sender()->address());
      },
      [this](fetch_atom, uint32_t asker, const std::string& cert,
             const std::string& sig) -> caf::result<std::vector<entry>> {
        if (asker >= shards_ || asker == id_ || !current_sender())
          return caf::make_error(caf::sec::invalid_argument,
                                 "no shard " + std::to_string(asker)
                                   + " to fetch for");
        if (check_) {
          auto err = check_->verify(
            current_sender()->address(), asker,
            claim_text(asker, "fetch from shard-" + std::to_string(id_)),
            cert, sig);
          if (err) {
            say("shard %u: refused a fetch: %s", id_,
                tact::describe(err).c_str());
            return err;
          }
        }
        // From now on the requester gets the writes that follow: the
        // snapshot and the copies are both taken in this actor's order.
        set_peer(asker, caf::actor_cast<caf::actor>(current_sender()));
        std::vector<entry> out;
        for (auto& [key, e] : data_)
          if (holds(asker, primary_of(key, shards_), shards_))
            out.push_back(e);
        return out;
      },
    };
  }

private:
  // -- start: fetch, then register ---------------------------------------------

  // A directory that does not answer (stopped, or gone: then its down
  // message comes too and the shard rejoins) is asked again.
  void sync() {
    if (!dir_.actor())
      return;
    request(dir_.actor(), 5s, table_atom::value)
      .then(
        [this](std::vector<std::string>& table) {
          table_ = std::move(table);
          fetch_all();
        },
        [this](caf::error& err) {
          say("shard %u: the directory did not answer (%s); asking again",
              id_, tact::describe(err).c_str());
          delayed_send(this, 1s, retry_atom::value);
        });
  }

  std::vector<uint32_t> neighbours() const {
    std::vector<uint32_t> out;
    for (auto j : {(id_ + shards_ - 1) % shards_, (id_ + 1) % shards_})
      if (j != id_ && (out.empty() || out.front() != j))
        out.push_back(j);
    return out;
  }

  void fetch_all() {
    fetching_ = 0;
    sync_failed_ = false;
    for (auto j : neighbours()) {
      if (j < table_.size() && !table_[j].empty()) {
        ++fetching_;
      } else if (must_fetch_) {
        say("shard %u: waiting for shard %u, which holds what the damaged "
            "log lost", id_, j);
        delayed_send(this, 1s, retry_atom::value);
        return;
      }
    }
    if (fetching_ == 0) {
      enrol();
      return;
    }
    for (auto j : neighbours()) {
      if (j >= table_.size() || table_[j].empty())
        continue;
      connect_async(
        this, table_[j],
        [this, j](caf::actor peer) {
          set_peer(j, peer);
          prove(
            this, peer, creds_.get(), id_,
            "fetch from shard-" + std::to_string(j),
            [this, j, peer](const std::string& cert, const std::string& sig) {
              fetch_from(j, peer, cert, sig);
            },
            [this, j](const caf::error& err) {
              say("shard %u: shard %u gave no challenge: %s", id_, j,
                  tact::describe(err).c_str());
              sync_failed_ = true;
              fetched_one();
            });
        },
        [this, j](const caf::error& err) {
          say("shard %u: cannot reach shard %u: %s", id_, j,
              tact::describe(err).c_str());
          sync_failed_ = true;
          fetched_one();
        });
    }
  }

  void fetch_from(uint32_t j, const caf::actor& peer, const std::string& cert,
                  const std::string& sig) {
    request(peer, 10s, fetch_atom::value, id_, cert, sig)
      .then(
        [this, j](std::vector<entry>& entries) {
          fetched_ += entries.size();
          for (auto& e : entries)
            keep(std::move(e));
          commit();
          say("shard %u: fetched %zu keys from shard %u", id_, entries.size(),
              j);
          fetched_one();
        },
        [this, j](caf::error& err) {
          say("shard %u: fetch from shard %u failed: %s", id_, j,
              tact::describe(err).c_str());
          sync_failed_ = true;
          fetched_one();
        });
  }

  void fetched_one() {
    if (--fetching_ > 0)
      return;
    if (sync_failed_) {
      // Serving without a neighbour's keys could answer stale values: ask
      // the directory again (the neighbour may be gone) and retry.
      delayed_send(this, 1s, retry_atom::value);
      return;
    }
    must_fetch_ = false;
    enrol();
  }

  void enrol() {
    if (!dir_.actor())
      return;
    prove(
      this, dir_.actor(), creds_.get(), id_, "register at " + addr_,
      [this](const std::string& cert, const std::string& sig) {
        register_with(cert, sig);
      },
      [this](const caf::error& err) {
        say("shard %u: the directory gave no challenge (%s); trying again",
            id_, tact::describe(err).c_str());
        delayed_send(this, 1s, register_atom::value);
      });
  }

  void register_with(const std::string& cert, const std::string& sig) {
    if (!dir_.actor())
      return;
    request(dir_.actor(), 5s, register_atom::value, id_, addr_, cert, sig)
      .then(
        [this](std::vector<std::string>& table) {
          table_ = std::move(table);
          size_t keys = 0;
          for (auto& [key, e] : data_)
            keys += e.present ? 1 : 0;
          if (serving_)
            say("shard %u registered again: %zu keys", id_, keys);
          else
            say("shard %u serving on %s: %zu keys (%zu fetched from peers)",
                id_, addr_.c_str(), keys, fetched_);
          serving_ = true;
          for (auto j : neighbours())
            if (j < table_.size())
              on_update(j, table_[j]);
        },
        [this](caf::error& err) {
          say("shard %u: registering failed (%s); trying again", id_,
              tact::describe(err).c_str());
          delayed_send(this, 1s, register_atom::value);
        });
  }

  // -- peers -----------------------------------------------------------------------

  // The directory's news: shard `j` serves at `addr`, or ("") is gone.
  void on_update(uint32_t j, const std::string& addr) {
    if (j >= shards_ || j == id_)
      return;
    if (table_.size() < shards_)
      table_.resize(shards_);
    table_[j] = addr;
    if (addr.empty()) {
      // Gone for good: the writes waiting for its copy are here, and it
      // fetches them when it comes back. Unless the link to it stands:
      // then the directory lost it, not this shard (the directory's own
      // links went, say), and its copies still go there.
      if (!peers_[j].hdl)
        answer_copies(j);
      return;
    }
    if (is_neighbour(j))
      link(j);
  }

  bool is_neighbour(uint32_t j) const {
    auto ns = neighbours();
    return std::find(ns.begin(), ns.end(), j) != ns.end();
  }

  // Connects to neighbour `j` while the directory lists it, retrying.
  void link(uint32_t j) {
    auto& p = peers_[j];
    if (p.hdl || p.connecting || j >= table_.size() || table_[j].empty())
      return;
    p.connecting = true;
    connect_async(
      this, table_[j],
      [this, j](caf::actor hdl) {
        peers_[j].connecting = false;
        set_peer(j, std::move(hdl));
      },
      [this, j](const caf::error&) {
        peers_[j].connecting = false;
        if (!peers_[j].retry_pending) {
          peers_[j].retry_pending = true;
          delayed_send(this, relink_delay, retry_atom::value, j);
        }
      });
  }

  void set_peer(uint32_t j, caf::actor hdl) {
    if (!hdl || peers_[j].hdl == hdl)
      return;
    peers_[j].hdl = std::move(hdl);
    monitor(peers_[j].hdl);
    // Copies that waited for the link.
    schedule_flush();
  }

  void on_down(const caf::down_msg& msg) {
    // Meanwhile it serves what it holds, and copies its writes to its
    // neighbours over the links it has.
    if (dir_.lost(this, msg, "shard " + std::to_string(id_),
                  "serving what it holds", [this] {
                    if (serving_)
                      enrol();
                    else
                      sync();
                  }))
      return;
    for (uint32_t j = 0; j < shards_; ++j) {
      if (!peers_[j].hdl || peers_[j].hdl.address() != msg.source)
        continue;
      peers_[j].hdl = nullptr;
      for (auto& [cid, c] : copies_)
        if (c.peer == j)
          c.in_flight = false;
      // Only the directory says that a shard is gone; a link that broke
      // while the shard is still listed is made again, and its copies wait.
      if (j < table_.size() && !table_[j].empty())
        link(j);
      else
        answer_copies(j);
    }
  }

  // -- writes ----------------------------------------------------------------------

  using done_fn = std::function<void(reply)>;

  // One command of a batch; `answer` gets its answer, now or once the
  // write has its copy.
  void run(op& o, done_fn answer) {
    if (!serving_) {
      answer({status::unavailable, 0, "syncing"});
      return;
    }
    auto i = data_.find(o.key);
    bool present = i != data_.end() && i->second.present;
    switch (o.what) {
      case kind::get:
        if (present)
          answer({status::ok, 0, i->second.value});
        else
          answer({status::missing, 0, {}});
        return;
      case kind::exists:
        answer({status::ok, present ? 1 : 0, {}});
        return;
      case kind::count: {
        int64_t n = 0;
        for (auto& [key, e] : data_)
          if (e.present && primary_of(key, shards_) == o.arg)
            ++n;
        answer({status::ok, n, {}});
        return;
      }
      case kind::set:
        write(std::move(o.key), std::move(o.value), true, {}, std::move(answer));
        return;
      case kind::del:
        if (!present)
          answer({status::ok, 0, {}});
        else
          write(std::move(o.key), {}, false, {status::ok, 1, {}},
                std::move(answer));
        return;
      case kind::incr: {
        int64_t n = 0;
        if (present) {
          auto& text = i->second.value;
          auto [end, ec] = std::from_chars(text.data(),
                                           text.data() + text.size(), n);
          if (ec != std::errc{} || end != text.data() + text.size()
              || text.empty()) {
            answer({status::error, 0,
                  "ERR value is not an integer or out of range"});
            return;
          }
        }
        if (__builtin_add_overflow(n, 1, &n)) {
          answer({status::error, 0, "ERR increment or decrement would overflow"});
          return;
        }
        write(std::move(o.key), std::to_string(n), true, {status::ok, n, {}},
              std::move(answer));
        return;
      }
      default:
        answer({status::error, 0, "ERR unknown operation"});
    }
  }

  // Keeps `e` if it is newer than what is here, and logs it (unless it
  // comes from the log).
  void keep(entry e, bool log = true) {
    auto [i, added] = data_.try_emplace(e.key);
    if (!added && !newer(e, i->second))
      return;
    if (!added)
      live_bytes_ -= write_log::record_size(i->second);
    live_bytes_ += write_log::record_size(e);
    if (log && log_)
      log_->append(e);
    i->second = std::move(e);
  }

  // What was kept goes to the log (to the disk, with --fsync always)
  // before any answer that depends on it.
  void commit() {
    if (!log_)
      return;
    log_->commit();
    if (log_->due(live_bytes_)) {
      auto before = log_->size();
      auto t0 = std::chrono::steady_clock::now();
      auto failed = log_->rewrite(data_);
      auto ms = std::chrono::duration<double, std::milli>(
                  std::chrono::steady_clock::now() - t0)
                  .count();
      if (!failed.empty())
        say("shard %u: log rewrite failed (%s); the log goes on as it is",
            id_, failed.c_str());
      else
        say("shard %u: log rewritten from %llu to %llu bytes (%zu entries) "
            "in %.1f ms",
            id_, static_cast<unsigned long long>(before),
            static_cast<unsigned long long>(log_->size()), data_.size(), ms);
    }
  }

  // Applies a write and copies it to the other holder of the key; `then`
  // gets `answer` once the copy is acknowledged. Without a link to the
  // other holder the copy waits for one, unless the directory does not
  // list that holder: then it fetches the write when it comes back, and
  // the answer goes at once.
  void write(std::string key, std::string value, bool present, reply answer,
             done_fn then) {
    auto old = data_.find(key);
    if (old != data_.end()
        && old->second.version == std::numeric_limits<uint64_t>::max()) {
      then({status::error, 0, "ERR the key's version is exhausted"});
      return;
    }
    auto version = (old == data_.end() ? 0 : old->second.version) + 1;
    entry e{key, std::move(value), version, present};
    keep(e);
    auto primary = primary_of(key, shards_);
    auto other = primary == id_ ? replica_of(primary, shards_) : primary;
    bool listed = other < table_.size() && !table_[other].empty();
    if (other == id_ || (!peers_[other].hdl && !listed)) {
      then(std::move(answer));
      return;
    }
    copies_.emplace(next_copy_++, copy{std::move(then), std::move(answer),
                                       other, std::move(e), false});
    if (peers_[other].hdl)
      schedule_flush();
    else
      link(other);
  }

  // Copies go out once the mailbox has been read: one message per peer.
  void schedule_flush() {
    if (flush_pending_)
      return;
    flush_pending_ = true;
    send(this, flush_atom::value);
  }

  void flush_copies() {
    flush_pending_ = false;
    std::vector<std::vector<uint64_t>> ids(shards_);
    std::vector<std::vector<entry>> entries(shards_);
    for (auto& [cid, c] : copies_) {
      if (c.in_flight || !peers_[c.peer].hdl)
        continue;
      c.in_flight = true;
      ids[c.peer].push_back(cid);
      entries[c.peer].push_back(c.e);
    }
    for (uint32_t j = 0; j < shards_; ++j) {
      if (ids[j].empty())
        continue;
      request(peers_[j].hdl, copy_timeout, repl_atom::value,
              std::move(entries[j]))
        .then(
          [this, cids = ids[j]](reply&) {
            for (auto cid : cids) {
              auto i = copies_.find(cid);
              if (i == copies_.end())
                continue;
              auto c = std::move(i->second);
              copies_.erase(i);
              c.done(std::move(c.answer));
            }
          },
          [this, cids = ids[j], j](caf::error&) {
            // A timeout: the same copies again while the link stands (a
            // broken link resends on its own once it is back).
            for (auto cid : cids)
              if (auto i = copies_.find(cid); i != copies_.end())
                i->second.in_flight = false;
            if (peers_[j].hdl)
              schedule_flush();
          });
    }
  }

  // Answers every write waiting for a copy to shard `j`.
  void answer_copies(uint32_t j) {
    for (auto i = copies_.begin(); i != copies_.end();) {
      if (i->second.peer == j) {
        auto c = std::move(i->second);
        i = copies_.erase(i);
        c.done(std::move(c.answer));
      } else {
        ++i;
      }
    }
  }

  struct peer_link {
    caf::actor hdl;
    bool connecting = false;
    bool retry_pending = false;
  };

  // A write's copy to the other holder, and the answer that waits for it.
  struct copy {
    done_fn done;
    reply answer;
    uint32_t peer;
    entry e;
    bool in_flight;
  };

  uint32_t id_;
  uint32_t shards_;
  directory_link dir_;
  std::string addr_;
  std::vector<std::string> table_;
  std::vector<peer_link> peers_;
  bool must_fetch_;
  std::unordered_map<std::string, entry> data_;
  // What `data_` takes in the log.
  uint64_t live_bytes_ = 0;
  // None with --appendonly no.
  std::unique_ptr<write_log> log_;
  // What proves this shard's id, and checks another's (none with
  // --insecure).
  std::unique_ptr<credentials> creds_;
  std::unique_ptr<credential_check> check_;
  bool serving_ = false;
  size_t fetching_ = 0;
  size_t fetched_ = 0;
  bool sync_failed_ = false;
  std::map<uint64_t, copy> copies_;
  uint64_t next_copy_ = 0;
  bool flush_pending_ = false;
};

} // namespace

int run_shard(const args& a) {
  auto id = a.number("id", -1);
  auto shards = a.number("shards", 0);
  auto host = a.get("host", "127.0.0.1");
  if (shards < 1 || id < 0 || id >= shards || !a.has("join")) {
    std::fprintf(stderr, "kv_cluster shard: needs --id I --shards N "
                         "--join HOST:PORT (0 <= I < N)\n");
    return 2;
  }
  die_with_parent(a);
  // The log first: a shard whose log cannot be kept does not serve.
  std::unique_ptr<write_log> log;
  std::vector<entry> replayed;
  auto appendonly = a.get("appendonly", "yes");
  fsync_policy policy = fsync_policy::everysec;
  if ((appendonly != "yes" && appendonly != "no")
      || !parse_fsync(a.get("fsync", "everysec"), policy)) {
    std::fprintf(stderr, "kv_cluster shard: --appendonly yes|no and "
                         "--fsync always|everysec|no\n");
    return 2;
  }
  if (appendonly == "yes") {
    std::string error;
    std::string note;
    auto t0 = std::chrono::steady_clock::now();
    log = write_log::open(a.get("data-dir", "kv_cluster-data"),
                          static_cast<uint32_t>(id),
                          static_cast<uint32_t>(shards), policy, replayed,
                          error, note);
    if (!log) {
      std::fprintf(stderr, "kv_cluster shard: %s\n", error.c_str());
      return 1;
    }
    auto ms = std::chrono::duration<double, std::milli>(
                std::chrono::steady_clock::now() - t0)
                .count();
    if (!note.empty())
      say("shard %ld: log %s: %s", id, log->path().c_str(), note.c_str());
    say("shard %ld: replayed %zu records (%llu bytes) from %s in %.1f ms "
        "(fsync %s)",
        id, replayed.size(), static_cast<unsigned long long>(log->size()),
        log->path().c_str(), ms, a.get("fsync", "everysec").c_str());
  }
  std::unique_ptr<credentials> creds;
  std::unique_ptr<credential_check> check;
  if (!a.has("insecure")) {
    std::string error;
    creds = credentials::load(a.get("cert"), a.get("key"), error);
    if (creds)
      check = credential_check::load(a.get("ca"), error);
    if (!check) {
      std::fprintf(stderr, "kv_cluster shard: %s\n", error.c_str());
      return 1;
    }
  }
  tact::runtime rt{node_options(a)};
  auto dir = join_directory(rt, a, "shard");
  if (!dir)
    return 1;
  auto st = rt.system().spawn<store>(
    static_cast<uint32_t>(id), static_cast<uint32_t>(shards), dir,
    a.get("join"), std::move(log), std::move(replayed), std::move(creds),
    std::move(check));
  auto port = rt.publish(st, static_cast<uint16_t>(a.number("node-port", 0)),
                         host);
  if (!port) {
    std::fprintf(stderr, "kv_cluster shard: cannot publish on %s: %s\n",
                 host.c_str(), tact::describe(port.error()).c_str());
    caf::anon_send_exit(st, caf::exit_reason::user_shutdown);
    return 1;
  }
  auto addr = join_address(host, *port);
  say("shard %ld published on %s", id, addr.c_str());
  caf::anon_send(st, start_atom::value, addr);
  rt.wait_for_signal();
  caf::anon_send_exit(st, caf::exit_reason::user_shutdown);
  rt.shutdown(std::chrono::milliseconds{200});
  return 0;
}

} // namespace kv
