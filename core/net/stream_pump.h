// core/net/stream_pump.h — the one stream pump: socket <-> transport <-> session.
//
// A connection, in or out, is: socket (io::Net) -> StreamPump -> Transport -> StreamSession.
// The session is sans-I/O (bytes in, bytes out); the transport sits between the socket's bytes
// and the session's (PlainTransport passes them through; TLS decrypts and encrypts there, with
// buffers of its own, and may want to read or write while the session wants nothing, as in a
// handshake); the pump owns everything that touches the socket. It is the one correct version
// of what every connection needs: provided-buffer receives, one send at a time carrying all
// pending output, short sends continued, back-pressure, a deadline, and a close that is right
// with a receive and a send in flight.
//
// How an owner drives it (ingress, egress, the request server, relais-bench):
//   1. Construct it beside the session (usually as a member of the connection object) with the
//      socket: an accepted one, or a fresh one (io::Net::NewStreamSocket) and Connect().
//   2. Call Drive() to start, and again whenever the owner changed the session from outside
//      (a commit finished and the session has a reply to send, a hold was released).
//   3. OnPumpReady(pump) says a completion changed something (bytes fed to the session, a send
//      finished, end of input, an error): call Drive() now, or put the connection on a list
//      and Drive() it once at the end of the loop turn (that batches a turn's input into one
//      send, which is what ingress does). Handle the session's events before Drive().
//   4. OnPumpClosed(pump) runs exactly once, after the socket is closed and every operation
//      has completed. It is the last thing the pump does: the owner may destroy the pump (and
//      the session, and itself) inside it. end() and error() say why it closed.
//
// What Drive does, in order: nothing once closing; if no send is in flight, moves everything
// the transport has to send (the session's output, and the transport's own) into the pump's
// buffer and sends it (the session's buffer may grow while the send is in flight, so the bytes
// in flight live in the pump; a session whose output stays put, StableOutput, is sent from
// without a copy, and consumed as the send completes); closes when the session (or transport) wants
// to close, or the peer is gone, or its input ended, and nothing is left to send and no hold is
// set; otherwise arms one receive when the transport wants input, input has not ended, nothing
// pauses it (PauseInput, or sending_bytes_max bytes in flight) and none is armed.
//
// Guarantees: at most one receive and one send in flight; a short send is continued from where
// it stopped before anything else is sent; received bytes are fed to the transport during the
// completion only (the provided buffer goes back right after); -ENOBUFS (every provided buffer
// in use) is counted and the receive re-armed at the next Drive; end of input (the peer shut
// its sending side) reaches the session with EndOfInput and output still goes out (a client
// may send QUIT and shut down its side, then read its replies); a reset or any socket error
// stops all I/O and closes; Abort() cancels what is in flight, waits for every completion,
// then closes (after the owner's hold, if one is set): the pump never frees anything, and never
// names a socket after its close.
//
// Porting a hand-written connection (ingress Shard::Connection, egress connections): the socket
// is io::Socket::Registered(slot) for an AcceptDirect slot, Descriptor(fd) otherwise, and the
// Net is Engine::net(). recv_armed / send_in_flight / close_submitted / send_buffer go; the
// pipeline limit (send_buffer.size() < pipeline_bytes_max) is StreamPumpOptions::
// sending_bytes_max; commit_pending / auth_pending become Hold() / Release() (set the hold
// before the Drive that follows the event that starts the work); the recv_no_buffer counter
// moves to OnRecvNoBuffer; "the client does not read its final reply" (a send stuck at a
// timeout) is Abort(); peer_gone is peer_gone(); the Exim case (input ends, replies still go
// out after the commit) is the pump's own. A session whose output view stays put until it is
// consumed (smtp::ClientSession) returns true from StableOutput and is sent without a copy.
//
// Owned by one shard; not thread-safe. The session, transport, owner, net and timer wheel
// outlive the pump. Destroy the pump only after OnPumpClosed, or when the Net will deliver no
// more completions (the shard's engine is being torn down).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "core/io/net.h"
#include "core/timer/timer_wheel.h"

namespace relais::net {

// The sans-I/O side of a connection (smtp::ServerSession, smtp::ClientSession, a request
// parser), seen through a thin adapter (SessionAdapter below does it for any class with these
// members).
class StreamSession {
 public:
  // Bytes from the peer; valid only during the call.
  virtual void Feed(std::string_view bytes) = 0;
  // Bytes for the peer, in order; valid until ConsumeOutput or Feed.
  [[nodiscard]] virtual std::string_view PendingOutput() const = 0;
  virtual void ConsumeOutput(size_t bytes) = 0;
  [[nodiscard]] virtual bool WantsInput() const = 0;
  // Close once the pending output is sent.
  [[nodiscard]] virtual bool WantsClose() const = 0;
  // The peer shut its sending side: nothing more will be fed.
  virtual void EndOfInput() = 0;
  // True when the view PendingOutput() returns stays valid and unchanged until ConsumeOutput
  // covers it, even while more output is queued behind it (smtp::ClientSession's pieces): the
  // plain transport then sends straight from it, without a copy, and consumes what was sent
  // when the send completes. False (a buffer that may grow and move): the bytes are copied.
  [[nodiscard]] virtual bool StableOutput() const { return false; }

 protected:
  ~StreamSession() = default;
};

// Any class with the six members, as a StreamSession; kStableOutput as StableOutput() says.
template <typename Session, bool kStableOutput = false>
class SessionAdapter final : public StreamSession {
 public:
  explicit SessionAdapter(Session& session) : session_(session) {}
  void Feed(std::string_view bytes) override { session_.Feed(bytes); }
  [[nodiscard]] std::string_view PendingOutput() const override { return session_.PendingOutput(); }
  void ConsumeOutput(size_t bytes) override { session_.ConsumeOutput(bytes); }
  [[nodiscard]] bool WantsInput() const override { return session_.WantsInput(); }
  [[nodiscard]] bool WantsClose() const override { return session_.WantsClose(); }
  void EndOfInput() override { session_.EndOfInput(); }
  [[nodiscard]] bool StableOutput() const override { return kStableOutput; }

 private:
  Session& session_;
};

// Between the socket's bytes and the session's. A transport may keep bytes of its own (a TLS
// record not complete yet, a handshake message to send) and want to read or write while the
// session wants nothing.
class Transport {
 public:
  // Bytes from the socket (valid only during the call): decode and feed the session.
  virtual void OnReceived(std::string_view bytes, StreamSession& session) = 0;
  // Appends to `out` everything to send now (the session's pending output, encoded, and the
  // transport's own) and consumes it from the session.
  virtual void TakeOutput(StreamSession& session, std::string& out) = 0;
  // Without a copy: bytes to send straight from the session (valid until ReturnOutput), or
  // empty when TakeOutput must be used. Only a transport that passes the session's bytes
  // through unchanged can lend them.
  [[nodiscard]] virtual std::string_view BorrowOutput(StreamSession& /*session*/) { return {}; }
  // `sent` bytes of what BorrowOutput lent have gone out.
  virtual void ReturnOutput(StreamSession& /*session*/, size_t /*sent*/) {}
  [[nodiscard]] virtual bool WantsInput(const StreamSession& session) const = 0;
  // True when the connection should close once TakeOutput yields nothing more.
  [[nodiscard]] virtual bool WantsClose(const StreamSession& session) const = 0;
  // The socket's input ended.
  virtual void OnEndOfInput(StreamSession& session) = 0;

 protected:
  ~Transport() = default;
};

// Bytes pass through unchanged. Stateless: one instance serves every pump.
class PlainTransport final : public Transport {
 public:
  [[nodiscard]] static PlainTransport& Instance();
  void OnReceived(std::string_view bytes, StreamSession& session) override { session.Feed(bytes); }
  void TakeOutput(StreamSession& session, std::string& out) override {
    const std::string_view pending = session.PendingOutput();
    if (!pending.empty()) {
      out.append(pending);
      session.ConsumeOutput(pending.size());
    }
  }
  [[nodiscard]] std::string_view BorrowOutput(StreamSession& session) override {
    return session.StableOutput() ? session.PendingOutput() : std::string_view();
  }
  void ReturnOutput(StreamSession& session, size_t sent) override { session.ConsumeOutput(sent); }
  [[nodiscard]] bool WantsInput(const StreamSession& session) const override {
    return session.WantsInput();
  }
  [[nodiscard]] bool WantsClose(const StreamSession& session) const override {
    return session.WantsClose();
  }
  void OnEndOfInput(StreamSession& session) override { session.EndOfInput(); }
};

// Why a pump closed.
enum class PumpEnd : uint8_t {
  kOpen,           // Not closed (yet).
  kSessionClosed,  // The session (or transport) wanted to close and its output was sent.
  kPeerClosed,     // The peer's input ended and nothing was left to send.
  kPeerReset,      // A receive failed (reset): error() has the errno.
  kSendFailed,     // A send failed (reset, broken pipe) or took nothing: error() has it.
  kConnectFailed,  // Connect() failed: error() has the errno.
  kTimedOut,       // The deadline passed and the owner's OnPumpTimeout did not handle it.
  kAborted,        // The owner called Abort().
};

class StreamPump;

class StreamPumpOwner {
 public:
  // A completion changed the connection: Drive() the pump now or later this turn.
  virtual void OnPumpReady(StreamPump& pump) = 0;
  // The socket is closed and nothing is in flight; runs once, last. The pump may be destroyed
  // here.
  virtual void OnPumpClosed(StreamPump& pump) = 0;
  // The deadline (SetDeadline) passed. The default closes: Abort(PumpEnd::kTimedOut).
  virtual void OnPumpTimeout(StreamPump& pump);
  // A receive found every provided buffer in use (it is retried at the next Drive).
  virtual void OnRecvNoBuffer(StreamPump& /*pump*/) {}

 protected:
  ~StreamPumpOwner() = default;
};

struct StreamPumpOptions {
  // Input is not read while this many bytes (or more) are being sent: a client that pipelines
  // commands without reading the replies stops being read (0: no limit).
  uint32_t sending_bytes_max = 0;
};

class StreamPump final {
 public:
  // `timers` may be null when SetDeadline is never used.
  StreamPump(io::Net& net, io::Socket socket, StreamSession& session, StreamPumpOwner& owner,
             timer::TimerWheel* timers, StreamPumpOptions options = {});
  StreamPump(const StreamPump&) = delete;
  StreamPump& operator=(const StreamPump&) = delete;

  // Outbound: connects the socket; OnPumpReady follows (closing with kConnectFailed on error).
  // `address` stays valid until then. Drive() does nothing until it has completed.
  void Connect(const sockaddr* address, socklen_t length);
  void Drive();
  // Closes now: stops reading, cancels what is in flight (a send that may never finish
  // included), waits for every completion and for the owner's hold, closes the socket, then
  // OnPumpClosed.
  void Abort(PumpEnd reason = PumpEnd::kAborted);

  // Back-pressure: no receive is armed while paused (one already armed completes normally).
  void PauseInput() { input_paused_ = true; }
  void ResumeInput() { input_paused_ = false; }
  // While held, the socket is not closed and OnPumpClosed does not run: the owner has work in
  // flight that names the connection (a spool commit, a sender check) and must complete first.
  // Nothing is sent or read after an Abort or a reset all the same. Drive() after Release().
  void Hold() { held_ = true; }
  void Release() { held_ = false; }
  // Calls owner.OnPumpTimeout once `deadline_ms` (monotonic) has passed; re-arming moves it.
  void SetDeadline(uint64_t deadline_ms);
  void ClearDeadline();
  // Replaces the transport (STARTTLS): only when nothing is being sent. `transport` outlives
  // the pump.
  void SetTransport(Transport& transport);

  [[nodiscard]] io::Socket socket() const { return socket_; }
  [[nodiscard]] bool closing() const { return closing_; }
  // The close of the socket is submitted (the socket is no longer the owner's to close).
  [[nodiscard]] bool close_submitted() const { return close_submitted_; }
  [[nodiscard]] bool sending() const { return send_in_flight_; }
  [[nodiscard]] bool receiving() const { return recv_armed_; }
  [[nodiscard]] bool input_ended() const { return input_ended_; }
  // The peer reset, or a send or receive failed: nothing more is sent or read.
  [[nodiscard]] bool peer_gone() const { return peer_gone_; }
  // Bytes of the send in flight (copied ones; a borrowed send counts 0).
  [[nodiscard]] size_t sending_bytes() const { return out_.size(); }
  [[nodiscard]] PumpEnd end() const { return end_; }
  [[nodiscard]] int32_t error() const { return error_; }
  [[nodiscard]] uint64_t bytes_received() const { return bytes_received_; }
  [[nodiscard]] uint64_t bytes_sent() const { return bytes_sent_; }

 private:
  template <void (StreamPump::*Handler)(const io::SocketResult&)>
  struct Op final : io::SocketOp {
    explicit Op(StreamPump* p) : pump(p) {}
    void OnSocketDone(const io::SocketResult& done) override { (pump->*Handler)(done); }
    StreamPump* pump;
  };
  struct DeadlineTimer final : timer::Timer {
    explicit DeadlineTimer(StreamPump* p) : pump(p) {}
    void OnTimer() override { pump->owner_.OnPumpTimeout(*pump); }
    StreamPump* pump;
  };

  void OnConnected(const io::SocketResult& done);
  void OnReceived(const io::SocketResult& done);
  void OnSent(const io::SocketResult& done);
  void OnClosed(const io::SocketResult& done);
  void PeerGone(PumpEnd reason, int32_t error);
  void BeginClose(PumpEnd reason);
  // Submits the close once nothing is in flight.
  void ContinueClose();

  io::Net& net_;
  const io::Socket socket_;
  StreamSession& session_;
  StreamPumpOwner& owner_;
  timer::TimerWheel* const timers_;
  const StreamPumpOptions options_;
  Transport* transport_;
  std::string out_;  // The bytes of the send in flight; out_offset_ of them are sent.
  size_t out_offset_ = 0;
  bool borrowed_ = false;  // The send in flight reads the session's own (stable) output.
  bool connecting_ = false;
  bool recv_armed_ = false;
  bool send_in_flight_ = false;
  bool input_ended_ = false;
  bool peer_gone_ = false;
  bool input_paused_ = false;
  bool held_ = false;
  bool closing_ = false;
  bool close_submitted_ = false;
  PumpEnd end_ = PumpEnd::kOpen;
  int32_t error_ = 0;
  uint64_t bytes_received_ = 0;
  uint64_t bytes_sent_ = 0;
  Op<&StreamPump::OnConnected> connect_op_{this};
  Op<&StreamPump::OnReceived> recv_op_{this};
  Op<&StreamPump::OnSent> send_op_{this};
  Op<&StreamPump::OnClosed> close_op_{this};
  DeadlineTimer timer_{this};
};

}  // namespace relais::net
