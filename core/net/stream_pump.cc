// core/net/stream_pump.cc — see stream_pump.h.
#include "core/net/stream_pump.h"

#include <cerrno>

#include "core/base/check.h"

namespace relais::net {

PlainTransport& PlainTransport::Instance() {
  static PlainTransport transport;
  return transport;
}

void StreamPumpOwner::OnPumpTimeout(StreamPump& pump) { pump.Abort(PumpEnd::kTimedOut); }

StreamPump::StreamPump(io::Net& net, io::Socket socket, StreamSession& session,
                       StreamPumpOwner& owner, timer::TimerWheel* timers, StreamPumpOptions options)
    : net_(net),
      socket_(socket),
      session_(session),
      owner_(owner),
      timers_(timers),
      options_(options),
      transport_(&PlainTransport::Instance()) {}

void StreamPump::Connect(const sockaddr* address, socklen_t length) {
  RELAIS_CHECK(!connecting_ && !closing_);
  connecting_ = true;
  net_.Connect(socket_, address, length, connect_op_);
}

void StreamPump::OnConnected(const io::SocketResult& done) {
  connecting_ = false;
  if (closing_) {
    ContinueClose();
    return;
  }
  if (done.result < 0) {
    PeerGone(PumpEnd::kConnectFailed, done.result);
  }
  owner_.OnPumpReady(*this);
}

void StreamPump::Drive() {
  if (closing_) {
    ContinueClose();
    return;
  }
  if (connecting_) {
    return;
  }
  if (!send_in_flight_ && !peer_gone_) {
    out_.clear();
    out_offset_ = 0;
    const std::string_view lent = transport_->BorrowOutput(session_);
    if (!lent.empty()) {
      borrowed_ = true;
      send_in_flight_ = true;
      net_.Send(socket_, lent, send_op_);
    } else {
      transport_->TakeOutput(session_, out_);
      if (!out_.empty()) {
        send_in_flight_ = true;
        net_.Send(socket_, out_, send_op_);
      }
    }
  }
  if (peer_gone_) {
    if (!held_) {
      BeginClose(end_);  // A hold waits for the owner's work; it calls Drive again.
    }
    return;
  }
  const bool wants_close = transport_->WantsClose(session_);
  if (wants_close || input_ended_) {
    // No more input is read. Output still goes out after the peer's input ended (it may read
    // while it no longer writes); the close waits for it, and for the owner's hold.
    if (!send_in_flight_ && !held_) {
      BeginClose(wants_close ? PumpEnd::kSessionClosed : PumpEnd::kPeerClosed);
    }
    return;
  }
  const bool too_much_sending =
      options_.sending_bytes_max != 0 && out_.size() >= options_.sending_bytes_max;
  if (!recv_armed_ && !input_paused_ && !too_much_sending && transport_->WantsInput(session_)) {
    recv_armed_ = true;
    net_.Recv(socket_, recv_op_);
  }
}

void StreamPump::OnReceived(const io::SocketResult& done) {
  recv_armed_ = false;
  if (closing_) {
    ContinueClose();  // Bytes after the close began are dropped.
    return;
  }
  if (done.result > 0) {
    bytes_received_ += static_cast<uint64_t>(done.result);
    transport_->OnReceived(done.received, session_);
  } else if (done.result == 0) {
    input_ended_ = true;
    transport_->OnEndOfInput(session_);
  } else if (done.result == -ENOBUFS) {
    owner_.OnRecvNoBuffer(*this);  // Every buffer is in use this turn; Drive retries.
  } else if (done.result != -ECANCELED) {
    PeerGone(PumpEnd::kPeerReset, done.result);
  }
  owner_.OnPumpReady(*this);
}

void StreamPump::OnSent(const io::SocketResult& done) {
  if (done.result > 0) {
    bytes_sent_ += static_cast<uint64_t>(done.result);
    if (borrowed_) {
      // The session consumes what went out; the rest (of a short send) stays at the front of
      // its output and goes first at the next Drive.
      transport_->ReturnOutput(session_, static_cast<size_t>(done.result));
    }
    out_offset_ += static_cast<size_t>(done.result);
    if (!borrowed_ && out_offset_ < out_.size() && !closing_ && !peer_gone_) {
      // A short send: the rest goes out before anything else.
      net_.Send(socket_, std::string_view(out_).substr(out_offset_), send_op_);
      return;
    }
  }
  send_in_flight_ = false;
  borrowed_ = false;
  out_.clear();
  out_offset_ = 0;
  if (done.result <= 0 && !closing_) {
    // 0 bytes accepted, or an error (-EPIPE, -ECONNRESET, -ECANCELED): nothing more is sent.
    PeerGone(PumpEnd::kSendFailed, done.result == 0 ? -EPIPE : done.result);
  }
  if (closing_) {
    ContinueClose();
    return;
  }
  owner_.OnPumpReady(*this);
}

void StreamPump::PeerGone(PumpEnd reason, int32_t error) {
  if (!peer_gone_) {
    peer_gone_ = true;
    end_ = reason;
    error_ = error;
  }
  // Whatever is in flight completes (with an error, or -ECANCELED); the close waits for it.
  if (recv_armed_) {
    net_.Cancel(recv_op_);
  }
  if (send_in_flight_) {
    net_.Cancel(send_op_);
  }
}

void StreamPump::Abort(PumpEnd reason) {
  if (closing_) {
    return;
  }
  if (send_in_flight_) {
    net_.Cancel(send_op_);  // A send to a peer that does not read may never finish.
  }
  BeginClose(reason);
}

void StreamPump::BeginClose(PumpEnd reason) {
  if (closing_) {
    return;
  }
  closing_ = true;
  end_ = reason;
  if (timers_ != nullptr) {
    timers_->Cancel(timer_);
  }
  if (recv_armed_) {
    net_.Cancel(recv_op_);
  }
  if (connecting_) {
    net_.Cancel(connect_op_);
  }
  ContinueClose();
}

void StreamPump::ContinueClose() {
  if (close_submitted_ || recv_armed_ || send_in_flight_ || connecting_ || held_) {
    return;  // Each pending completion comes back here; Release is followed by a Drive.
  }
  close_submitted_ = true;
  net_.Close(socket_, close_op_);
}

void StreamPump::OnClosed(const io::SocketResult&) {
  owner_.OnPumpClosed(*this);  // May destroy this: nothing after.
}

void StreamPump::SetDeadline(uint64_t deadline_ms) {
  RELAIS_CHECK(timers_ != nullptr);
  if (!closing_) {
    timers_->Arm(timer_, deadline_ms);
  }
}

void StreamPump::ClearDeadline() {
  if (timers_ != nullptr) {
    timers_->Cancel(timer_);
  }
}

void StreamPump::SetTransport(Transport& transport) {
  RELAIS_CHECK(!send_in_flight_);
  transport_ = &transport;
}

}  // namespace relais::net
