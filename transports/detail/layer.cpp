#include "tact/runtime/detail/match.hpp"
#include "tact/transports/detail/layer.hpp"

#include <algorithm>
#include <cerrno>
#include <unistd.h>

#include <caf/atom.hpp>
#include <caf/sec.hpp>
#include <caf/system_messages.hpp>

#include "tact/runtime/detail/multiplexer.hpp"
#include "tact/runtime/errc.hpp"

namespace tact::detail {

namespace {

using file_pump_atom = caf::atom_constant<caf::atom("filepump")>;

// Bytes read from a file per turn: four TLS records.
constexpr size_t file_chunk = 64 * 1024;

} // namespace

layer::layer(caf::actor_config& cfg, multiplexer& mux, transport_kind kind,
             uint64_t read_credit, caf::actor app, transport lower)
  : transport_core(cfg, mux, kind, read_credit, std::move(app)),
    lower_(std::move(lower)) {
  if (lower_)
    state_.below = lower_.state();
}

void layer::on_start() {
  // Tracked like a transport, so that shutdown closes the topmost layer.
  mux().track(id(), handle(), false);
  if (!on_layer_start())
    return;
  if (protocol_)
    watch_protocol(true);
  if (lower_)
    begin();
}

void layer::on_message(caf::mailbox_element& x) {
  auto& msg = x.content();
  if (handle_protocol_message(x, msg))
    return;
  if (auto id = answer_to(x)) {
    if (id == made_request_) {
      if (made_ok(msg)) {
        read_started_ = true;
        on_app_ready();
      } else {
        abort_layer(make_error(errc::protocol_down));
      }
    } else if (is_eof_answer(id)) {
      // Anything but `true` (an error, no handler) closes.
      on_eof_answer(detail::is<bool>(msg) && msg.get_as<bool>(0));
    }
    return;
  }
  if (from_below(x, msg))
    return;
  if (detail::is<op::write>(msg)) {
    auto& w = msg.get_mutable_as<op::write>(0);
    auto n = w.data.size();
    write_in_order(w.data);
    // Uncounted once handed below (or queued), not before: a thread that
    // adds the layers up meanwhile sees too much for a moment, never too
    // little.
    if (w.counted)
      state_.in_flight -= n;
  } else if (detail::is<op::sendfile>(msg)) {
    on_sendfile(x, msg.get_mutable_as<op::sendfile>(0));
  } else if (detail::is<file_pump_atom>(msg)) {
    pump_files();
  } else if (detail::is<op::write_eof>(msg)) {
    on_write_eof();
  } else if (detail::is<op::close>(msg)) {
    if (!queue_.empty() && !lost_) {
      close_after_files_ = true;
      state_.closing = true;
    } else {
      on_close();
    }
  } else if (detail::is<op::abort>(msg)) {
    abort_layer(std::move(msg.get_mutable_as<op::abort>(0).reason));
  } else if (read_command(msg, user_paused_, closing_)) {
    on_read_change();
  } else if (limits_command(msg)) {
    on_limits();
  } else if (detail::is<op::get_write_buffer_size>(msg)) {
    reply(x, caf::make_message(static_cast<uint64_t>(buffer_size())));
  } else if (on_layer_message(msg)) {
    // the layer's own
  } else if (x.mid.is_request()) {
    reply(x, caf::make_message(caf::make_error(caf::sec::unexpected_message)));
  }
}

bool layer::from_below(caf::mailbox_element& x, caf::type_erased_tuple& msg) {
  if (detail::is<connection_made>(msg)) {
    // Made by a server or create_connection: the layer is the protocol.
    reply(x, caf::make_message());
    if (!lower_) {
      lower_ = msg.get_as<connection_made>(0).handle;
      state_.below = lower_.state();
      // The protocol above is not made yet: it reads with the credit of
      // the connection it is on.
      if (state_.below != nullptr)
        state_.read_credit = state_.below->read_credit;
      begin();
    }
  } else if (detail::is<data_received>(msg)) {
    auto& data = msg.get_mutable_as<data_received>(0).data;
    if (lower_)
      lower_.consumed(data.size());
    if (!lost_)
      on_lower_data(data);
  } else if (detail::is<eof_received>(msg)) {
    // The transport below stays half-open: the layer answers for the
    // protocol above once it has had everything, and closes it itself.
    reply(x, caf::make_message(true));
    on_lower_eof();
  } else if (detail::is<pause_writing>(msg)
             || detail::is<resume_writing>(msg)) {
    on_lower_pause(detail::is<pause_writing>(msg));
  } else if (detail::is<connection_lost>(msg)) {
    lower_gone_ = true;
    on_lower_lost(std::move(msg.get_mutable_as<connection_lost>(0).reason));
  } else if (detail::is<handover>(msg)) {
    reply(x, caf::make_message(on_lower_handover()));
  } else if (detail::is<caf::down_msg>(msg)) {
    auto& down = msg.get_as<caf::down_msg>(0);
    if (!lower_ || lower_gone_ || down.source != lower_.actor().address())
      return false;
    lower_gone_ = true;
    on_lower_lost(make_error(errc::transport_down));
  } else {
    return false;
  }
  return true;
}

void layer::on_exit(caf::error reason) {
  abort_layer(reason ? std::move(reason) : make_error(errc::transport_down));
}

void layer::on_protocol_down() {
  abort_layer(make_error(errc::protocol_down));
}

void layer::on_switched() {
  on_read_change();
}

std::optional<caf::config_value>
layer::extra_info(std::string_view name) const {
  if (state_.below == nullptr)
    return std::nullopt;
  return state_.below->core->extra_info(name);
}

std::vector<std::string_view> layer::extra_info_names() const {
  if (state_.below == nullptr)
    return {};
  return state_.below->core->extra_info_names();
}

bool layer::app_reading() const noexcept {
  return read_started_ && !user_paused_ && !closing_ && !switching()
         && !state_.reading_paused.load() && !state_.closing.load()
         && state_.unconsumed.load() < state_.read_credit;
}

bool layer::mark_lost() {
  if (lost_)
    return false;
  lost_ = true;
  closing_ = true;
  state_.closing = true;
  state_.lost = true;
  mux().untrack(id());
  while (!queue_.empty()) {
    auto& item = queue_.front();
    if (item.file.file)
      finish_file(make_error(errc::closed, "sendfile: the connection ended "
                                           "before the file was sent"));
    else {
      state_.in_flight -= item.data.size();
      queue_.pop_front();
    }
  }
  return true;
}

void layer::write_in_order(bytes& data) {
  if (queue_.empty() && !close_after_files_) {
    on_write(data);
    return;
  }
  if (lost_ || close_after_files_) {
    state_.count_dropped_write();
    return;
  }
  state_.in_flight += data.size();
  queue_.push_back(queued{std::move(data), {}, 0, {}});
}

void layer::on_sendfile(caf::mailbox_element& x, op::sendfile& req) {
  // A queued file's bytes count in `in_flight` until read and handed
  // below; a handle's request counted them already.
  auto counted = req.counted ? req.count : 0;
  if (!carries_files()) {
    state_.in_flight -= counted;
    reply(x, caf::make_message(make_error(
               errc::not_supported, "sendfile on a transport of frames")));
    return;
  }
  if (lost_ || closing_ || close_after_files_) {
    state_.in_flight -= counted;
    state_.count_dropped_write();
    reply(x, caf::make_message(make_error(
               errc::closed, "sendfile after the transport was closed")));
    return;
  }
  if (req.count == 0 || !req.file) {
    state_.in_flight -= counted;
    reply(x, caf::make_message(uint64_t{0}));
    return;
  }
  state_.in_flight += req.count - counted;
  queue_.push_back(queued{{}, std::move(req), 0, later(x)});
  schedule_pump();
}

void layer::schedule_pump() {
  if (pump_scheduled_ || (queue_.empty() && !close_after_files_))
    return;
  pump_scheduled_ = true;
  send_to(caf::actor_cast<caf::actor>(ctrl()),
          caf::make_message(file_pump_atom::value));
}

void layer::files_may_go_on() {
  schedule_pump();
}

void layer::pump_files() {
  pump_scheduled_ = false;
  // Writes queued behind a finished file go at once.
  while (!lost_ && !queue_.empty() && !queue_.front().file.file) {
    auto data = std::move(queue_.front().data);
    queue_.pop_front();
    auto n = data.size();
    on_write(data);
    state_.in_flight -= n;
  }
  if (lost_)
    return;
  if (queue_.empty()) {
    if (close_after_files_) {
      close_after_files_ = false;
      on_close();
    }
    return;
  }
  if (file_chunks_wait())
    return;
  auto& item = queue_.front();
  auto left = item.file.count - item.sent;
  bytes chunk(std::min<uint64_t>(left, file_chunk));
  auto n = ::pread(item.file.file->fd(), chunk.data(), chunk.size(),
                   static_cast<off_t>(item.file.offset + item.sent));
  if (n < 0) {
    if (errno != EINTR)
      finish_file(error_from_errno(errno, "sendfile: read"));
    schedule_pump();
    return;
  }
  if (n == 0) {
    // The file shrank under the range: the answer is what was sent.
    finish_file();
    schedule_pump();
    return;
  }
  chunk.resize(static_cast<size_t>(n));
  item.sent += static_cast<uint64_t>(n);
  auto complete = item.sent == item.file.count;
  on_write(chunk);
  // Uncounted once handed below (a loss meanwhile uncounts only what was
  // not sent).
  state_.in_flight -= static_cast<uint64_t>(n);
  if (lost_)
    return;
  if (complete)
    finish_file();
  schedule_pump();
}

void layer::finish_file(caf::error err) {
  auto item = std::move(queue_.front());
  queue_.pop_front();
  state_.in_flight -= item.file.count - item.sent;
  reply(item.asker, err ? caf::make_message(std::move(err))
                        : caf::make_message(item.sent));
}

} // namespace tact::detail
