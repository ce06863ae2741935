// tools/relaisd/ingress_connection.h — one inbound SMTP connection of Ingress: its socket,
// its session, its timers and its checks. Private to the ingress*.cc files.
//
// Lives in a slot of its Ingress until its close completes; never freed while an operation, an
// append or a check names it.
#pragma once

#include <cstdint>
#include <string>

#include "tools/relaisd/ingress.h"

namespace relais::relaisd {

struct Ingress::Connection final : timer::Timer, spool::AppendCompletion, CheckState {
  template <void (Ingress::*Handler)(Connection&, int32_t, uint32_t)>
  struct Op final : uring::Completion {
    explicit Op(Connection* c) : connection(c) {}
    void OnCqe(int32_t result, uint32_t flags) override {
      (connection->ingress->*Handler)(*connection, result, flags);
    }
    Connection* connection;
  };

  Connection(Ingress* in, uring::FixedFile file, uint32_t index, const mail::IpAddress& peer)
      : ingress(in), socket(file), slot(index), client(peer), session(in->session_options_, peer) {}

  void OnTimer() override { ingress->OnTimeout(*this); }
  void OnAppendDone(spool::AppendOutcome outcome, const mail::MessageId& id) override {
    ingress->OnAppendDone(*this, outcome, id);
  }

  Ingress* ingress;
  const uring::FixedFile socket;  // In the engine's registered-file table.
  const uint32_t slot;
  const mail::IpAddress client;
  smtp::ServerSession session;
  Op<&Ingress::OnRecvThunk> recv_op{this};
  Op<&Ingress::OnSendThunk> send_op{this};
  Op<&Ingress::OnClosedThunk> close_op{this};
  std::string send_buffer;
  size_t send_offset = 0;
  bool admitted = false;  // Counted by the limiter; released on close.
  bool recv_armed = false;
  bool send_in_flight = false;
  bool commit_pending = false;
  bool peer_gone = false;
  bool close_started = false;    // No more input is read; closing once quiet.
  bool close_submitted = false;  // The close SQE is queued; the slot waits for its CQE.
  bool dirty = false;
  uint64_t commit_bytes = 0;       // Of the message in the spool's batch, for the metrics.
  uint64_t commit_started_us = 0;  // When it was handed to the spool (monotonic).
  uint64_t opened_ms = 0;          // Accepted at (monotonic).
  SessionDeadlines deadlines;      // The session's timeout and its transfer's deadline.
};

}  // namespace relais::relaisd
