// tools/relaisd/ingress.cc — see ingress.h.
#include "tools/relaisd/ingress.h"

#include <cerrno>
#include <cstring>
#include <utility>

#include "core/base/strings.h"
#include "core/log/log.h"
#include "protocols/authres/authres.h"
#include "tools/relaisd/ingress_connection.h"

namespace relais::relaisd {
namespace {

constexpr uint64_t kAcceptRetryMs = 1000;
constexpr uint64_t kFinalReplyGraceMs = 10'000;  // For a client to take its 421.

smtp::CommitOutcome ToCommitOutcome(spool::AppendOutcome outcome) {
  switch (outcome) {
    case spool::AppendOutcome::kDurable:
      return smtp::CommitOutcome::kDurable;
    case spool::AppendOutcome::kNoSpace:
      return smtp::CommitOutcome::kNoSpace;
    case spool::AppendOutcome::kFailed:
      break;
  }
  return smtp::CommitOutcome::kFailed;
}

}  // namespace

Ingress::Ingress(const IngressOptions& options, io::Net& net, timer::TimerWheel& timers,
                 const base::Clock& clock, spool::Spool& spool, scheduler::Scheduler& scheduler,
                 dns::Resolver* resolver, base::Random& random, ConnectionLimiter& limiter,
                 log::ShardLog& log, ShardMetrics& metrics)
    : options_(options),
      net_(net),
      timers_(timers),
      clock_(clock),
      spool_(spool),
      scheduler_(scheduler),
      limiter_(limiter),
      log_(log),
      metrics_(metrics),
      session_options_(options.session),
      checks_(options_.checks, resolver, clock, random, metrics, log, *this) {
  session_options_.replies_by_class = metrics_.replies_by_class.data();
  session_options_.spool_full = spool_.full_flag();
  receive_budget_.bytes_max = options.receive_bytes_max;
  session_options_.receive_budget = &receive_budget_;
  session_options_.auth_offered = options_.auth != nullptr;
  session_options_.require_sender_owned = options_.require_sender_owned;
  // Built once: every session keeps a reference to its listener's options.
  listener_session_options_.reserve(options_.listeners.size());
  for (const ListenerSecurity& l : options_.listeners) {
    smtp::SessionOptions o = session_options_;
    const bool tls = options_.tls != nullptr && l.tls != ListenerTls::kOff;
    // Implicit TLS is TLS already: STARTTLS is not offered again there (RFC 8314 3.3).
    o.starttls_offered = tls && l.tls != ListenerTls::kImplicit;
    o.tls_required = tls && l.tls == ListenerTls::kRequired;
    o.auth_in_clear = o.auth_offered && l.trusted;  // Local submission: AUTH without TLS.
    listener_session_options_.push_back(std::move(o));
  }
}

const smtp::SessionOptions& Ingress::SessionOptionsFor(uint32_t listener) const {
  return listener < listener_session_options_.size() ? listener_session_options_[listener]
                                                     : session_options_;
}

// The connections' pumps cancel their timers as they go; their sockets are the net's to drop
// (the shard's engine is torn down after the ingress).
Ingress::~Ingress() = default;

void Ingress::Start(const std::vector<int>& listen_fds) {
  for (uint32_t i = 0; i < listen_fds.size(); ++i) {
    acceptors_.push_back(std::make_unique<net::Acceptor>(
        net_, io::Socket::Descriptor(listen_fds[i]), i, static_cast<net::AcceptOwner&>(*this)));
    acceptors_.back()->Arm();
  }
}

void Ingress::RetryAccepts(uint64_t now_ms) {
  if (!stopping_ && accept_retry_ms_ != 0 && now_ms >= accept_retry_ms_) {
    accept_retry_ms_ = 0;
    for (auto& a : acceptors_) {
      a->Arm();
    }
  }
}

void Ingress::PumpDirty() {
  std::vector<Connection*> dirty;
  dirty.swap(dirty_);
  for (Connection* c : dirty) {
    c->dirty = false;
    Pump(*c);
  }
}

void Ingress::BeginStop() {
  stopping_ = true;
  for (auto& a : acceptors_) {
    a->Cancel();
  }
  for (auto& c : connections_) {
    if (c != nullptr && !c->pump.closing()) {
      c->session.BeginShutdown();
      MarkDirty(*c);
    }
  }
}

void Ingress::ForceStop() {
  for (auto& c : connections_) {
    if (c != nullptr && !c->pump.closing()) {
      c->session.ForceShutdown();
      MarkDirty(*c);
    }
  }
}

void Ingress::PublishMetrics() {
  metrics_.connections_active.Set(live_connections_);
  metrics_.receive_budget_refusals.Mirror(receive_budget_.refusals);
  metrics_.receive_bytes.Set(static_cast<int64_t>(receive_budget_.bytes_used));
}

bool Ingress::OnAccepted(io::Socket socket, std::optional<mail::IpAddress> peer,
                         uint32_t listener) {
  if (!peer || live_connections_ >= options_.connections_per_shard_hard_max) {
    net_.CloseUnused(socket);
    metrics_.refused_unserved.Add();
    return !stopping_;
  }
  uint32_t slot;
  if (!free_slots_.empty()) {
    slot = free_slots_.back();
    free_slots_.pop_back();
  } else {
    slot = static_cast<uint32_t>(connections_.size());
    connections_.emplace_back();
  }
  connections_[slot] = std::make_unique<Connection>(this, socket, slot, *peer, listener);
  Connection& c = *connections_[slot];
  c.opened_ms = clock_.MonotonicMs();
  const bool implicit_tls = options_.tls != nullptr && listener < options_.listeners.size() &&
                            options_.listeners[listener].tls == ListenerTls::kImplicit;
  ++live_connections_;
  metrics_.connections_accepted.Add();
  if (stopping_) {
    metrics_.refused_stopping.Add();
    c.session.Refuse(smtp::Reply::kShuttingDown);
  } else {
    switch (limiter_.Acquire(*peer)) {
      case ConnectionLimiter::Admission::kAdmitted:
        c.admitted = true;
        checks_.Admit(c, c.session, *peer, listener);
        if (implicit_tls) {
          c.start_after_handshake = true;  // The session learns of TLS before it greets.
        } else {
          c.session.Start();
        }
        break;
      case ConnectionLimiter::Admission::kTooMany:
        metrics_.refused_global.Add();
        c.session.Refuse(smtp::Reply::kTooManyConnections);
        break;
      case ConnectionLimiter::Admission::kTooManyFromClient:
        metrics_.refused_per_ip.Add();
        c.session.Refuse(smtp::Reply::kTooManyConnectionsFromClient);
        break;
    }
  }
  if (implicit_tls && c.admitted) {
    // RFC 8314 3.3: TLS from the first byte; the greeting goes out encrypted once the
    // handshake is done.
    StartTls(c);
  } else if (implicit_tls) {
    // Refused (caps, stopping): its 421 could only go out after a handshake, and a handshake
    // costs more than a connection being refused is worth (a flood of port 465 would buy
    // them): closed at once, counted above. Clients take a close before the greeting as a
    // temporary failure.
    c.pump.Abort();
  }
  ArmSessionTimer(c);
  MarkDirty(c);
  return !stopping_;
}

void Ingress::OnAcceptFailed(int32_t result) {
  std::string error = std::strerror(-result);
  if (result == -ENFILE) {
    metrics_.refused_unserved.Add();  // The kernel closed the connection.
    error =
        base::StrCat("the shard's session table is full (", options_.connections_per_shard_hard_max,
                     " sessions: limits.connections_max + 1024, or RLIMIT_NOFILE)");
  }
  // Accepting again at once could spin on an error that leaves the connection queued.
  if (accept_retry_ms_ == 0) {
    log::Emit(log::Level::kWarning, static_cast<int>(options_.shard), "accept_failed",
              {{"error", error}});
    accept_retry_ms_ = clock_.MonotonicMs() + kAcceptRetryMs;
  }
}

void Ingress::OnTimeout(Connection& c) {
  if (c.handshaking) {
    // tls.handshake_timeout: a client that stalls mid-handshake holds nothing longer.
    HandshakeFailed(c, /*timed_out=*/true, {});
    c.pump.Abort(net::PumpEnd::kTimedOut);
    MarkDirty(c);
    return;
  }
  if (c.pump.sending() || c.session.WantsClose()) {
    // The client is not reading (a send is stuck on a full socket buffer) or has not taken
    // its final reply in time: stop waiting for it (the close still waits for a commit or a
    // check in flight).
    c.pump.Abort(net::PumpEnd::kTimedOut);
  } else {
    const uint64_t now = clock_.MonotonicMs();
    switch (c.deadlines.Expired(now, Stressed())) {
      case SessionDeadlines::Expiry::kTimeout:
        c.session.OnTimeout();  // 421 4.4.2, then close once it is sent...
        break;
      case SessionDeadlines::Expiry::kTooSlow:
        // Below the minimum data rate, or past the message's deadline.
        metrics_.transfers_too_slow.Add();
        c.session.OnTooSlow();  // 421 4.4.2, then close once it is sent...
        break;
      case SessionDeadlines::Expiry::kNone:
        // The deadline moved (the load fell below the stress mark before any read of this
        // transfer saw it).
        c.pump.SetDeadline(c.deadlines.NextAt(Stressed()));
        return;
    }
    c.pump.SetDeadline(now + kFinalReplyGraceMs);  // ...or after this much.
  }
  MarkDirty(c);
}

bool Ingress::Stressed() const {
  // More than half of connections_max open (one relaxed load of the shared count), or more
  // than half of this shard's receive budget held (large messages from few connections).
  return limiter_.active() > options_.stress_connections ||
         receive_budget_.bytes_used > receive_budget_.bytes_max / 2;
}

void Ingress::ArmSessionTimer(Connection& c) {
  if (c.handshaking) {
    c.pump.SetDeadline(c.handshake_deadline_ms);  // The session's own wait starts after it.
    return;
  }
  // The transfer deadline is stricter under load, and checked at every read.
  c.pump.SetDeadline(c.deadlines.Update(clock_.MonotonicMs(), c.session.InMessageTransfer(),
                                        c.session.data_bytes_read(), c.session.TimeoutMs(),
                                        Stressed(), options_.transfer));
}

void Ingress::MarkDirty(Connection& c) {
  if (!c.dirty) {
    c.dirty = true;
    dirty_.push_back(&c);
  }
}

void Ingress::OnReceived(Connection& c, std::string_view bytes) {
  // The first plaintext after a handshake may come in the same read as its last message: the
  // session learns that TLS is on before it reads a byte of it.
  CheckHandshake(c);
  const uint64_t lines_before = c.session.command_lines();
  const bool data_before = c.session.ReceivingData();
  c.session.Feed(bytes);
  // RFC 5321 4.5.3.2: each block of message data restarts the data timeout; a command restarts
  // the command timeout only once its line is complete, so a client trickling one byte at a
  // time cannot hold the connection past command_timeout_ms per command.
  if (data_before || c.session.ReceivingData() || c.session.command_lines() != lines_before ||
      c.deadlines.in_transfer() != c.session.InMessageTransfer()) {
    ArmSessionTimer(c);
  }
}

void Ingress::Pump(Connection& c) {
  if (!c.pump.closing()) {
    CheckHandshake(c);
    if (c.session.TakeStartTls()) {
      // RFC 3207 4: the handshake starts after the 220. No byte more is read through the plain
      // transport: what the client sends next is its ClientHello (what it pipelined after
      // STARTTLS, the session has discarded).
      c.starttls_pending = true;
      c.pump.PauseInput();
    }
    if (c.starttls_pending && !c.pump.sending() && c.session.PendingOutput().empty()) {
      StartTls(c);
    }
    if (c.session.TakeAuthRequest()) {
      StartAuth(c);
    }
    if (c.session.TakeSenderCheck()) {
      if (c.session.authenticated_user().empty()) {
        checks_.StartSenderCheck(c, c.session, c.client);
      } else {
        // Submission: an authenticated user's address is not the sender's domain's to vouch
        // for (SPF would fail a roaming user); the credentials stand for it.
        c.session.CompleteSenderCheck(smtp::Reply::kSenderOk);
      }
    }
    StoreMessages(c);
  }
  // A commit or a check in flight names the connection: its close waits (a reply may still be
  // owed, and the slot must outlive the completion).
  if (c.commit_pending || c.pending) {
    c.pump.Hold();
  } else {
    c.pump.Release();
  }
  c.pump.Drive();  // May close the pump; OnClosed then frees `c` later, in a completion.
}

void Ingress::StartTls(Connection& c) {
  c.starttls_pending = false;
  if (options_.tls == nullptr) {
    c.pump.Abort();  // The session asked for TLS that was never offered (a bug): cut it.
    return;
  }
  c.tls = tls::TlsTransport::Server(*options_.tls);
  c.pump.SetTransport(*c.tls);
  c.pump.ResumeInput();
  c.handshaking = true;
  c.handshake_started_us = clock_.MonotonicMicros();
  c.handshake_deadline_ms = clock_.MonotonicMs() + options_.tls_handshake_timeout_ms;
  c.pump.SetDeadline(c.handshake_deadline_ms);
}

void Ingress::CheckHandshake(Connection& c) {
  if (!c.handshaking) {
    return;
  }
  if (c.tls->TakeHandshakeDone()) {
    c.handshaking = false;
    const tls::HandshakeInfo info = c.tls->info();
    c.tls_handshake = "ok";
    c.tls_version = info.version;
    c.tls_cipher = info.cipher;
    (info.resumed ? metrics_.tls_handshakes_resumed : metrics_.tls_handshakes_full).Add();
    metrics_.tls_handshake_seconds.ObserveMicros(clock_.MonotonicMicros() - c.handshake_started_us);
    // RFC 3207 4.2: the session forgets what it knew and waits for a fresh EHLO; Received:
    // says ESMTPS with the version and cipher. A session that closes meanwhile (a refusal,
    // a shutdown's 421) only has that reply left to send.
    if (!c.session.WantsClose()) {
      c.session.TlsStarted(info.version, info.cipher);
      if (c.start_after_handshake) {
        c.session.Start();
      } else if (c.admitted) {
        // STARTTLS reset the session: a client that authenticated in clear (a trusted
        // listener) is not authenticated any more, and is checked again as at connect.
        checks_.Admit(c, c.session, c.client, c.listener);
      }
    }
    c.start_after_handshake = false;
    ArmSessionTimer(c);  // The session's own timeouts again.
  } else if (c.tls->state() == tls::TlsState::kFailed) {
    HandshakeFailed(c, /*timed_out=*/false, c.tls->failure());
  }
}

void Ingress::HandshakeFailed(Connection& c, bool timed_out, std::string_view reason) {
  c.handshaking = false;
  (timed_out ? metrics_.tls_handshakes_timeout : metrics_.tls_handshakes_failed).Add();
  c.tls_handshake =
      timed_out ? std::string("timeout")
                : base::StrCat("failed:", reason.empty() ? std::string_view("closed") : reason);
  // The transport closes a failed connection (after its alert); a timed-out one is aborted.
}

void Ingress::OnClosed(Connection& c) {
  if (c.admitted) {
    limiter_.Release(c.client);
  }
  if (c.handshaking) {
    // The client went away (or reset) mid-handshake.
    HandshakeFailed(c, /*timed_out=*/false, c.tls->failure());
  }
  if (c.auth_pending) {
    options_.auth->Cancel(c);  // A hash already running still counts a failure.
    c.auth_pending = false;
  }
  const uint64_t duration_ms = clock_.MonotonicMs() - c.opened_ms;
  const std::string& user = c.session.authenticated_user();
  if (c.tls_handshake.empty() && user.empty()) {
    log_.Info("session_end", {{"client", c.client.ToString()},
                              {"helo", c.session.helo()},
                              {"messages", c.session.messages_accepted()},
                              {"errors", c.session.errors()},
                              {"duration_ms", duration_ms}});
  } else {
    // auth_user: only a name the credentials verified; tls_*: empty when TLS never started.
    log_.Info("session_end", {{"client", c.client.ToString()},
                              {"helo", c.session.helo()},
                              {"messages", c.session.messages_accepted()},
                              {"errors", c.session.errors()},
                              {"duration_ms", duration_ms},
                              {"tls_handshake", c.tls_handshake},
                              {"tls_version", c.tls_version},
                              {"tls_cipher", c.tls_cipher},
                              {"auth_user", user}});
  }
  const uint32_t slot = c.slot;
  // A connection may still sit in the dirty list of this turn; drop it from there.
  std::erase(dirty_, &c);
  connections_[slot].reset();  // Frees the pump too: it touches nothing after OnPumpClosed.
  free_slots_.push_back(slot);
  --live_connections_;
}

void Ingress::StoreMessages(Connection& c) {
  while (!c.commit_pending && !c.pending && c.session.TakeCommitRequest()) {
    // The header section's bounds, for every client (a loop comes back from a trusted one):
    // before anything else reads it.
    if (const smtp::Reply refusal = checks_.HeaderRefusal(c.session.transaction().body);
        refusal != smtp::Reply::kOk) {
      c.body_hashes.reset();
      c.session.RefuseMessage(refusal);
      continue;
    }
    const std::string& user = c.session.authenticated_user();
    if (!user.empty() && options_.require_sender_owned && !FromOwned(c)) {
      c.body_hashes.reset();
      c.session.RefuseMessage(smtp::Reply::kSenderNotOwned);
      continue;
    }
    if (!c.checked) {
      // Not checked by us (a trusted client, or checks off): a field claiming our identity
      // is a forgery all the same, and goes (RFC 8601 5), before any signing covers it.
      authres::RemoveForged(c.session.transaction().body, c.policy->authserv_id);
    }
    if (c.checked && c.gone()) {
      // Nobody will be told 250, and unchecked it must not be stored: the client sends it
      // again (as after a 451).
      c.session.RefuseMessage(smtp::Reply::kSpoolFailed);
    } else if (c.checked) {
      checks_.StartMessageCheck(c, c.session, c.client);  // OnMessageChecked commits or not.
    } else if (c.trusted || !user.empty()) {
      // A trusted or authenticated client's mail: signed with the keys that name its user, or
      // for its From domain when we hold a key for it (and, authenticated, the user owns it). The
      // signatures go into the header block stored above the body (no copy of the body).
      Commit(c, {},
             checks_.Signatures(c.session.transaction().body, user, c.session.owned_domains()));
    } else {
      Commit(c, {});
    }
  }
}

void Ingress::OnSenderChecked(CheckState& state) {
  Connection& c = static_cast<Connection&>(state);
  if (!c.pump.closing()) {
    ArmSessionTimer(c);
  }
  MarkDirty(c);
}

void Ingress::OnMessageChecked(CheckState& state, const authcheck::Judgement& judgement,
                               std::string header) {
  Connection& c = static_cast<Connection&>(state);
  if (c.gone()) {
    // Nobody is there to be told 250: storing it would only make a duplicate when the client
    // sends it again.
    c.session.RefuseMessage(smtp::Reply::kSpoolFailed);
  } else if (checks_.ApplyVerdict(c, c.session, c.client, judgement)) {
    Commit(c, header);
  }
  if (!c.pump.closing()) {
    ArmSessionTimer(c);
  }
  MarkDirty(c);
}

void Ingress::Commit(Connection& c, std::string_view auth_header, std::string_view signatures) {
  // A recipient named many times was answered 250 each time; it is delivered once, with the
  // first one's DSN parameters.
  metrics_.recipients_duplicate.Add(routing::DropDuplicateRecipients(
      *options_.router, c.session.transaction().envelope.recipients));
  const mail::MessageId id = spool_.NewMessageId();
  std::string trace = c.session.TraceHeader(id, Rfc5322Date());
  if (!auth_header.empty() || !signatures.empty()) {
    // Only then a second string: unsigned mail from trusted clients (the usual case) has none.
    trace = base::StrCat(auth_header, trace, signatures);
  }
  smtp::Transaction& tx = c.session.transaction();
  c.commit_bytes = tx.body.size();
  c.commit_started_us = clock_.MonotonicMicros();
  const spool::AppendStatus status =
      spool_.Append(id, std::move(tx.envelope), trace, std::move(tx.body), c);
  if (status == spool::AppendStatus::kStaged) {
    c.commit_pending = true;  // The 250 waits for this turn's group commit.
  } else {
    metrics_.commit_failures.Add();
    c.session.CompleteCommit(smtp::CommitOutcome::kNoSpace, id);
  }
}

void Ingress::OnAppendDone(Connection& c, spool::AppendOutcome outcome, const mail::MessageId& id) {
  c.commit_pending = false;
  if (outcome == spool::AppendOutcome::kDurable) {
    metrics_.messages_accepted.Add();
    metrics_.message_bytes_accepted.Add(c.commit_bytes);
    const uint64_t durable_us = clock_.MonotonicMicros() - c.commit_started_us;
    metrics_.time_to_durable.ObserveMicros(durable_us);
    if (const spool::StoredMessage* m = spool_.Find(id); m != nullptr) {
      const std::string& user = c.session.authenticated_user();
      if (user.empty()) {
        log_.Info("message_accepted", {{"id", id.ToString()},
                                       {"client", m->envelope.client_address},
                                       {"helo", m->envelope.helo},
                                       {"sender", m->envelope.sender},
                                       {"recipients", uint64_t{m->envelope.recipients.size()}},
                                       {"size", c.commit_bytes},
                                       {"durable_us", durable_us}});
      } else {
        log_.Info("message_accepted", {{"id", id.ToString()},
                                       {"client", m->envelope.client_address},
                                       {"helo", m->envelope.helo},
                                       {"sender", m->envelope.sender},
                                       {"recipients", uint64_t{m->envelope.recipients.size()}},
                                       {"size", c.commit_bytes},
                                       {"durable_us", durable_us},
                                       {"auth_user", user}});
      }
    }
    scheduler_.Enqueue(id);  // Only a durable message is ever delivered.
  } else {
    metrics_.commit_failures.Add();
  }
  c.session.CompleteCommit(ToCommitOutcome(outcome), id);
  if (!c.pump.closing()) {
    ArmSessionTimer(c);
  }
  MarkDirty(c);
}

void Ingress::StartAuth(Connection& c) {
  if (options_.auth == nullptr) {
    CompleteAuth(c, smtp::AuthOutcome::kTemporary);  // Not offered: cannot happen.
    return;
  }
  const smtp::AuthRequest& request = c.session.auth_request();
  switch (options_.auth->Submit(request.user, request.password, c.client, c)) {
    case AuthSubmit::kPending:
      c.auth_pending = true;  // The session waits; input stays unread meanwhile.
      break;
    case AuthSubmit::kLockedOut:
      CompleteAuth(c, smtp::AuthOutcome::kLockedOut);
      break;
    case AuthSubmit::kUnavailable:
      CompleteAuth(c, smtp::AuthOutcome::kTemporary);
      break;
  }
}

void Ingress::OnAuthDone(Connection& c, AuthOutcome outcome) {
  c.auth_pending = false;
  CompleteAuth(c,
               outcome == AuthOutcome::kOk ? smtp::AuthOutcome::kOk : smtp::AuthOutcome::kFailed);
  if (!c.pump.closing()) {
    ArmSessionTimer(c);
  }
  MarkDirty(c);
}

void Ingress::CompleteAuth(Connection& c, smtp::AuthOutcome outcome) {
  std::string_view result;
  switch (outcome) {
    case smtp::AuthOutcome::kOk:
      metrics_.smtp_auth_success.Add();
      result = "success";
      break;
    case smtp::AuthOutcome::kFailed:
      metrics_.smtp_auth_failure.Add();
      result = "failure";
      break;
    case smtp::AuthOutcome::kLockedOut:
      metrics_.smtp_auth_locked_out.Add();
      result = "locked_out";
      break;
    case smtp::AuthOutcome::kTemporary:
      metrics_.smtp_auth_error.Add();
      result = "error";
      break;
  }
  // The name the client tried is not logged unless it was verified (a typo'd password in the
  // user field must not end up in the logs).
  if (!c.session.awaiting_auth()) {
    return;  // The session was cut meanwhile (a timeout, a forced stop): nobody to answer.
  }
  if (outcome != smtp::AuthOutcome::kOk) {
    log_.Info("smtp_auth", {{"client", c.client.ToString()}, {"result", result}});
    c.session.CompleteAuth(outcome);
    return;
  }
  std::vector<std::string> owned;
  if (const sasl::Credentials* credentials = options_.auth->credentials(); credentials != nullptr) {
    const std::span<const std::string> domains =
        credentials->OwnedDomains(c.session.auth_request().user);
    owned.assign(domains.begin(), domains.end());
  }
  c.session.CompleteAuth(outcome, std::move(owned));
  log_.Info("smtp_auth", {{"client", c.client.ToString()},
                          {"result", result},
                          {"auth_user", c.session.authenticated_user()}});
  // Submission from now on: no SPF, DKIM or DMARC check of its mail, which is signed.
  c.checked = false;
  c.session.SetBodyObserver(nullptr);
}

bool Ingress::FromOwned(Connection& c) {
  const sasl::Credentials* credentials = options_.auth->credentials();
  const std::vector<std::string> domains = authcheck::FromDomains(c.session.transaction().body);
  if (credentials == nullptr || domains.empty()) {
    return false;  // Nothing to show that the user owns it.
  }
  const std::string& user = c.session.authenticated_user();
  for (const std::string& domain : domains) {
    if (!credentials->OwnsDomain(user, domain)) {
      return false;
    }
  }
  return true;
}

std::string_view Ingress::Rfc5322Date() {
  const uint64_t now_us = clock_.UnixMicros();
  if (now_us / 1'000'000 != date_second_ || date_.empty()) {
    date_second_ = now_us / 1'000'000;  // One formatting per second, not per message.
    date_ = base::Rfc5322Date(now_us);
  }
  return date_;
}

}  // namespace relais::relaisd
