// tools/relaisd/ingress_connection.h — one inbound SMTP connection of Ingress: its session, the
// stream pump that carries it over its socket (core/net/stream_pump.h), its timer and its
// checks. Private to the ingress*.cc files.
//
// Lives in a slot of its Ingress until its pump has closed; never freed while an operation, an
// append or a check names it (a commit or a check in flight holds the pump's close).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "core/net/stream_pump.h"
#include "tools/relaisd/ingress.h"

namespace relais::relaisd {

struct Ingress::Connection final : net::StreamSession,
                                   net::StreamPumpOwner,
                                   spool::AppendCompletion,
                                   AuthCompletion,
                                   CheckState {
  Connection(Ingress* in, io::Socket socket, uint32_t index, const mail::IpAddress& peer,
             uint32_t listener_index)
      : ingress(in),
        slot(index),
        client(peer),
        listener(listener_index),
        session(in->SessionOptionsFor(listener_index), peer),
        pump(in->net_, socket, *this, *this, &in->timers_,
             net::StreamPumpOptions{.sending_bytes_max = in->session_options_.pipeline_bytes_max}) {
  }

  // StreamSession: the pump (through the TLS transport, if any) feeds the session through
  // these.
  void Feed(std::string_view bytes) override { ingress->OnReceived(*this, bytes); }
  [[nodiscard]] std::string_view PendingOutput() const override { return session.PendingOutput(); }
  void ConsumeOutput(size_t bytes) override { session.ConsumeOutput(bytes); }
  [[nodiscard]] bool WantsInput() const override { return session.WantsInput(); }
  [[nodiscard]] bool WantsClose() const override { return session.WantsClose(); }
  // The client closed or shut down its sending side (Exim does after `BDAT n LAST` + `QUIT` in
  // one write). It may still read: what it sent is processed and answered, the 250 after the
  // fdatasync included, before the session asks to close; the pump keeps sending meanwhile.
  // Treating this as a vanished peer lost those replies and made the client send the message
  // again.
  void EndOfInput() override { session.EndOfInput(); }

  // StreamPumpOwner.
  void OnPumpReady(net::StreamPump&) override { ingress->MarkDirty(*this); }
  void OnPumpClosed(net::StreamPump&) override { ingress->OnClosed(*this); }
  void OnPumpTimeout(net::StreamPump&) override { ingress->OnTimeout(*this); }
  void OnRecvNoBuffer(net::StreamPump&) override {
    ingress->metrics_.recv_no_buffer.Add();  // Every buffer is in use this turn; Drive retries.
  }

  void OnAppendDone(spool::AppendOutcome outcome, const mail::MessageId& id) override {
    ingress->OnAppendDone(*this, outcome, id);
  }
  // AuthCompletion: the verifier's answer (a pending one is cancelled when the pump closes).
  void OnAuthDone(AuthOutcome outcome) override { ingress->OnAuthDone(*this, outcome); }

  // Nobody will read a reply any more: the peer reset, or the connection is being abandoned
  // (timed out). A message not yet stored must not be, and a checked one is refused.
  [[nodiscard]] bool gone() const { return pump.peer_gone() || pump.closing(); }

  Ingress* ingress;
  const uint32_t slot;
  const mail::IpAddress client;
  const uint32_t listener;  // Index of the listen address it came in on.
  smtp::ServerSession session;
  // Set when TLS starts (STARTTLS or implicit); before the pump, so that it is destroyed after
  // the pump (which has closed by then: the connection is freed from OnPumpClosed).
  std::unique_ptr<tls::TlsTransport> tls;
  net::StreamPump pump;  // After the session: it names it.
  // TLS: STARTTLS was answered and the transport waits for that 220 to go out; a handshake is
  // under way (since handshake_started_us, monotonic); how it ended, for the session's log line
  // ("ok", "failed:<reason>", "timeout"; empty: no TLS), with the version and cipher.
  bool starttls_pending = false;
  bool handshaking = false;
  bool start_after_handshake = false;  // Implicit TLS: the greeting once TLS is up.
  uint64_t handshake_started_us = 0;
  uint64_t handshake_deadline_ms = 0;
  std::string tls_handshake;
  std::string tls_version;
  std::string tls_cipher;
  bool admitted = false;  // Counted by the limiter; released on close.
  bool commit_pending = false;
  bool auth_pending = false;  // The verifier holds an AUTH request of this session.
  bool dirty = false;
  uint64_t commit_bytes = 0;       // Of the message in the spool's batch, for the metrics.
  uint64_t commit_started_us = 0;  // When it was handed to the spool (monotonic).
  uint64_t opened_ms = 0;          // Accepted at (monotonic).
  SessionDeadlines deadlines;      // The session's timeout and its transfer's deadline.
};

}  // namespace relais::relaisd
