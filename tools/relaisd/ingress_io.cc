// tools/relaisd/ingress_io.cc — the socket I/O of Ingress's connections (receive, send, close)
// and the pump that drives a session over them; everything else reaches a socket only through
// these. The shared stream pump (core/net) is meant to replace this file.
#include <cerrno>
#include <string_view>
#include <vector>

#include "tools/relaisd/ingress.h"
#include "tools/relaisd/ingress_connection.h"

namespace relais::relaisd {

void Ingress::OnRecvThunk(Connection& c, int32_t result, uint32_t flags) {
  OnRecv(c, result, flags);
}
void Ingress::OnSendThunk(Connection& c, int32_t result, uint32_t) { OnSend(c, result); }
void Ingress::OnClosedThunk(Connection& c, int32_t, uint32_t) { OnClosed(c); }

void Ingress::OnRecv(Connection& c, int32_t result, uint32_t flags) {
  c.recv_armed = false;
  if (result > 0 && uring::Engine::HasBuffer(flags)) {
    const uint16_t buffer = uring::Engine::BufferId(flags);
    if (!c.close_started) {
      const uint64_t lines_before = c.session.command_lines();
      const bool data_before = c.session.ReceivingData();
      c.session.Feed(engine_.Buffer(buffer, static_cast<uint32_t>(result)));
      // RFC 5321 4.5.3.2: each block of message data restarts the data timeout; a command
      // restarts the command timeout only once its line is complete, so a client trickling
      // one byte at a time cannot hold the connection past command_timeout_ms per command.
      if (data_before || c.session.ReceivingData() || c.session.command_lines() != lines_before ||
          c.deadlines.in_transfer() != c.session.InMessageTransfer()) {
        ArmSessionTimer(c);
      }
    }
    engine_.ReturnBuffer(buffer);
  } else if (result == -ENOBUFS) {
    metrics_.recv_no_buffer.Add();  // Every buffer is in use this turn; the next Pump retries.
  } else if (result == 0) {
    // The client closed or shut down its sending side (Exim does after `BDAT n LAST` +
    // `QUIT` in one write). It may still read: what it sent is processed and answered, the
    // 250 after the fdatasync included, before the session asks to close. Treating this as
    // a vanished peer lost those replies and made the client send the message again.
    c.session.EndOfInput();
  } else if (result != -ECANCELED) {
    c.peer_gone = true;  // A reset or another socket error.
  }
  MarkDirty(c);
}

void Ingress::OnSend(Connection& c, int32_t result) {
  if (result < 0) {
    c.peer_gone = true;
    c.send_in_flight = false;
    c.send_buffer.clear();
  } else {
    c.send_offset += static_cast<size_t>(result);
    if (c.send_offset < c.send_buffer.size() && result > 0) {
      engine_.Send(c.socket, std::string_view(c.send_buffer).substr(c.send_offset), c.send_op);
      return;
    }
    c.send_in_flight = false;
    c.send_buffer.clear();
    if (result == 0) {
      c.peer_gone = true;
    }
  }
  MarkDirty(c);
}

void Ingress::Pump(Connection& c) {
  if (c.close_started) {
    BeginClose(c);
    return;
  }
  if (c.session.TakeSenderCheck()) {
    checks_.StartSenderCheck(c, c.session, c.client);
  }
  StoreMessages(c);
  if (!c.send_in_flight && !c.peer_gone) {
    const std::string_view pending = c.session.PendingOutput();
    if (!pending.empty()) {
      // The session's buffer may grow while the send is in flight, so the bytes in flight
      // live in the connection's own buffer.
      c.send_buffer.assign(pending);
      c.session.ConsumeOutput(pending.size());
      c.send_offset = 0;
      c.send_in_flight = true;
      engine_.Send(c.socket, c.send_buffer, c.send_op);
    }
  }
  const bool quiet = !c.send_in_flight && !c.commit_pending && !c.pending;
  if ((c.peer_gone || c.session.WantsClose()) && quiet) {
    BeginClose(c);
    return;
  }
  if (!c.recv_armed && !c.peer_gone && !c.session.WantsClose() && c.session.WantsInput() &&
      c.send_buffer.size() < session_options_.pipeline_bytes_max) {
    c.recv_armed = true;
    engine_.Recv(c.socket, c.recv_op);
  }
}

void Ingress::BeginClose(Connection& c) {
  if (c.close_submitted) {
    return;
  }
  if (!c.close_started) {
    c.close_started = true;
    if (c.recv_armed) {
      engine_.Cancel(c.recv_op);  // Its completion marks the connection dirty again.
    }
  }
  if (c.recv_armed || c.send_in_flight || c.commit_pending || c.pending) {
    return;  // Each of these completes later and brings us back through Pump.
  }
  c.close_submitted = true;
  engine_.Close(c.socket, c.close_op);
}

void Ingress::OnClosed(Connection& c) {
  if (c.admitted) {
    limiter_.Release(c.client);
  }
  log_.Info("session_end", {{"client", c.client.ToString()},
                            {"helo", c.session.helo()},
                            {"messages", c.session.messages_accepted()},
                            {"errors", c.session.errors()},
                            {"duration_ms", clock_.MonotonicMs() - c.opened_ms}});
  const uint32_t slot = c.slot;
  // A connection may still sit in the dirty list of this turn; drop it from there.
  std::erase(dirty_, &c);
  connections_[slot].reset();
  free_slots_.push_back(slot);
  --live_connections_;
}

}  // namespace relais::relaisd
