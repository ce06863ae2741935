// tools/relaisd/ingress.h — a shard's inbound SMTP: its acceptors, its sessions' connections,
// their timers and transfer deadlines, the checks (through IngressChecks) and the commit of
// each message to the shard's spool.
//
// A connection (ingress_connection.h) lives in a slot until its close completes; it is never
// freed while an operation, an append or a check names it. Its socket I/O is the stream pump's
// (core/net/stream_pump.h) over io::Net: ingress names no io_uring, so it runs over
// io::FakeNet in the seeded simulation (tests/sim/ingress_sim_test.cc) as it does over the
// shard's engine. Accepts are net::Acceptor's (core/net/acceptor.h). A message is appended to
// the spool when its session asks for a commit, after the header limits and, for a checked
// client, DKIM and DMARC; its 250 waits for the group commit that makes it durable, and then it
// is enqueued for delivery. Ingress never runs the loop, flushes the spool or talks to other
// shards: the shard calls it once per turn (PumpDirty) and at stop, and flushes after.
// Owned by one shard; not thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/base/clock.h"
#include "core/base/random.h"
#include "core/io/net.h"
#include "core/log/shard_log.h"
#include "core/net/acceptor.h"
#include "core/timer/timer_wheel.h"
#include "protocols/dns/resolver.h"
#include "protocols/smtp/server_session.h"
#include "protocols/tls/tls.h"
#include "queue/routing/router.h"
#include "queue/scheduler/scheduler.h"
#include "queue/spool/spool.h"
#include "tools/relaisd/auth_verifier.h"
#include "tools/relaisd/connection_limiter.h"
#include "tools/relaisd/ingress_checks.h"
#include "tools/relaisd/shard_metrics.h"
#include "tools/relaisd/transfer_deadline.h"

namespace relais::relaisd {

// [[listener]] tls: what one listen address offers.
enum class ListenerTls : uint8_t {
  kOff,       // Plaintext only; STARTTLS not offered.
  kStartTls,  // STARTTLS offered (RFC 3207).
  kRequired,  // STARTTLS offered, and no mail transaction before it.
  kImplicit,  // TLS from the first byte (RFC 8314: submissions on 465).
};

// What one listen address offers: its TLS mode, and whether it is trusted (local submission:
// AUTH offered without TLS).
struct ListenerSecurity {
  ListenerTls tls = ListenerTls::kOff;
  bool trusted = false;
};

// Filled by the shard from its ShardOptions (see there for each field's meaning).
struct IngressOptions {
  uint32_t shard = 0;
  smtp::SessionOptions session;  // Ingress points it at its budget, metrics and spool.
  uint64_t receive_bytes_max = UINT64_MAX;
  TransferLimits transfer;
  uint32_t stress_connections = UINT32_MAX;
  uint32_t connections_per_shard_hard_max = 1024;
  const routing::Router* router = nullptr;  // Required: duplicate recipients go at commit.
  CheckOptions checks;
  // By listener index (the order of Start's descriptors); a listener past the end is plaintext
  // and untrusted.
  std::vector<ListenerSecurity> listeners;
  // The shard's TLS server context; null when no certificate is configured (then every
  // listener is plaintext whatever it says). Must outlive the ingress.
  tls::ServerContext* tls = nullptr;
  // A client still handshaking this long after the handshake began is counted and closed.
  uint32_t tls_handshake_timeout_ms = 10'000;
  // SMTP AUTH: the shard's verifier (password checks off the loop, the login limiter); null
  // when no credentials are configured (AUTH is not offered). Must outlive the ingress.
  AuthVerifier* auth = nullptr;
  // smtp_auth.require_sender_owned: MAIL FROM (the session) and every From: domain (at the end
  // of data, here) must be one the authenticated user owns, else 553 5.7.1.
  bool require_sender_owned = false;
};

class Ingress final : net::AcceptOwner, CheckListener {
 public:
  // `resolver` may be null only when no policy checks anything. Every reference must outlive
  // the ingress. `net` carries the sockets (the shard's engine.net()).
  Ingress(const IngressOptions& options, io::Net& net, timer::TimerWheel& timers,
          const base::Clock& clock, spool::Spool& spool, scheduler::Scheduler& scheduler,
          dns::Resolver* resolver, base::Random& random, ConnectionLimiter& limiter,
          log::ShardLog& log, ShardMetrics& metrics);
  ~Ingress();
  Ingress(const Ingress&) = delete;
  Ingress& operator=(const Ingress&) = delete;

  // Starts accepting on `listen_fds` (listening descriptors, io::Socket::Descriptor of the
  // net; in the order of auth_by_listener).
  void Start(const std::vector<int>& listen_fds);
  // Once per loop turn, after the timers: accepts failed with EMFILE and the like are armed
  // again once their retry time has come.
  void RetryAccepts(uint64_t now_ms);
  // Once per loop turn: pumps every connection that changed (checks and commits started,
  // replies sent, receives re-armed, closes begun).
  void PumpDirty();
  // Connections changed since the last PumpDirty: the loop must not sleep.
  [[nodiscard]] bool busy() const { return !dirty_.empty(); }
  // Stops accepting and tells every session the server is shutting down (an idle one gets
  // 421 now, one in a transaction may finish it first).
  void BeginStop();
  // The grace period is over: every session that is not closing gets 421 and closes as soon
  // as no commit is in flight.
  void ForceStop();
  [[nodiscard]] uint32_t connections() const { return live_connections_; }
  // Gauges and mirrored totals of this unit, once per loop turn.
  void PublishMetrics();

 private:
  struct Connection;

  bool OnAccepted(io::Socket socket, std::optional<mail::IpAddress> peer,
                  uint32_t listener) override;
  void OnAcceptFailed(int32_t error) override;
  void OnSenderChecked(CheckState& state) override;
  void OnMessageChecked(CheckState& state, const authcheck::Judgement& judgement,
                        std::string header) override;

  // Bytes from the client, fed to its session (the pump calls it through the connection).
  void OnReceived(Connection& c, std::string_view bytes);
  // The session options of listener `listener` (its TLS and AUTH offers).
  [[nodiscard]] const smtp::SessionOptions& SessionOptionsFor(uint32_t listener) const;
  // Puts a TLS transport between the connection's socket and its session and arms the
  // handshake deadline: at accept on an implicit-TLS listener, or once the 220 to STARTTLS has
  // gone out (nothing in flight, nothing pending).
  void StartTls(Connection& c);
  // While handshaking: a finished handshake tells the session (and restores its deadlines), a
  // failed one is counted and logged (the transport then closes the connection).
  void CheckHandshake(Connection& c);
  // The handshake ended without completing: counted by `result`, logged with `reason`.
  void HandshakeFailed(Connection& c, bool timed_out, std::string_view reason);
  // The session decoded an AUTH exchange: the verifier checks it (the answer comes back in
  // OnAuthDone), or refuses it at once (locked out, unavailable).
  void StartAuth(Connection& c);
  void OnAuthDone(Connection& c, AuthOutcome outcome);
  // Answers the session's AUTH request, counts and logs it; a success makes the client
  // trusted: not checked, its mail signed.
  void CompleteAuth(Connection& c, smtp::AuthOutcome outcome);
  // require_sender_owned: every From: domain of the message is one the user owns.
  [[nodiscard]] bool FromOwned(Connection& c);
  // Its pump has closed: the session's end is logged, the limiter released, the slot freed.
  void OnClosed(Connection& c);
  // Starts the checks and commits the session asks for, holds the close while one is in
  // flight, and drives the pump (send the replies, re-arm the receive, close when done).
  void Pump(Connection& c);
  void OnTimeout(Connection& c);
  // Starts or ends the per-message deadline as the session enters or leaves a message transfer,
  // then arms the connection's timer for the session's timeout, never past that deadline.
  void ArmSessionTimer(Connection& c);
  [[nodiscard]] bool Stressed() const;
  void MarkDirty(Connection& c);
  void StoreMessages(Connection& c);
  // Appends the session's message to the spool with `auth_header`, the trace header and
  // `signatures` (DKIM-Signature fields) on top, each possibly empty; the 250 waits for the
  // group commit.
  void Commit(Connection& c, std::string_view auth_header, std::string_view signatures = {});
  void OnAppendDone(Connection& c, spool::AppendOutcome outcome, const mail::MessageId& id);
  std::string_view Rfc5322Date();

  const IngressOptions options_;
  io::Net& net_;
  timer::TimerWheel& timers_;
  const base::Clock& clock_;
  spool::Spool& spool_;
  scheduler::Scheduler& scheduler_;
  ConnectionLimiter& limiter_;
  log::ShardLog& log_;
  ShardMetrics& metrics_;
  smtp::ReceiveBudget receive_budget_;
  smtp::SessionOptions session_options_;
  // Per listener: session_options_ with the listener's STARTTLS and AUTH offers.
  std::vector<smtp::SessionOptions> listener_session_options_;
  IngressChecks checks_;

  std::vector<std::unique_ptr<net::Acceptor>> acceptors_;
  std::vector<std::unique_ptr<Connection>> connections_;  // Slots; null when free.
  std::vector<uint32_t> free_slots_;
  uint32_t live_connections_ = 0;
  std::vector<Connection*> dirty_;
  bool stopping_ = false;
  uint64_t accept_retry_ms_ = 0;  // After EMFILE and the like, re-arm accepts at this time.
  uint64_t date_second_ = 0;
  std::string date_;
};

}  // namespace relais::relaisd
