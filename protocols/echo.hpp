#pragma once

#include "tact/export.hpp"
#include "tact/actors/protocol.hpp"

namespace tact {

/// Writes back every byte it receives.
///
/// Flow control: while the transport's write buffer is over its high
/// watermark (the peer is not reading), it pauses reading, so memory stays
/// bounded. On the peer's EOF it keeps the connection half-open until
/// everything is written back, then closes.
class TACT_EXPORT echo_protocol : public protocol {
public:
  void connection_made(transport& t) override;
  void data_received(bytes data) override;
  bool eof_received() override;
  void pause_writing() override;
  void resume_writing() override;

private:
  transport transport_;
};

/// Sends every datagram back to its sender (datagrams from an unnamed Unix
/// socket have no sender to answer and are dropped).
///
/// Flow control: while the transport's queue is over its high watermark it
/// pauses reading; datagrams that arrive meanwhile wait in the kernel.
class TACT_EXPORT datagram_echo_protocol : public datagram_protocol {
public:
  void connection_made(transport& t) override;
  void datagram_received(bytes data, endpoint addr) override;
  void pause_writing() override;
  void resume_writing() override;

private:
  transport transport_;
};

} // namespace tact
