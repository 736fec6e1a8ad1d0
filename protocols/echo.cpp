#include "tact/protocols/echo.hpp"

namespace tact {

void echo_protocol::connection_made(transport& t) {
  transport_ = t;
}

void echo_protocol::data_received(bytes data) {
  transport_.write(std::move(data));
}

bool echo_protocol::eof_received() {
  // close() flushes first: everything received is written back.
  transport_.close();
  return true;
}

void echo_protocol::pause_writing() {
  transport_.pause_reading();
}

void echo_protocol::resume_writing() {
  transport_.resume_reading();
}

void datagram_echo_protocol::connection_made(transport& t) {
  transport_ = t;
}

void datagram_echo_protocol::datagram_received(bytes data, endpoint addr) {
  if (!addr.empty())
    transport_.sendto(std::move(data), std::move(addr));
}

void datagram_echo_protocol::pause_writing() {
  transport_.pause_reading();
}

void datagram_echo_protocol::resume_writing() {
  transport_.resume_reading();
}

} // namespace tact
