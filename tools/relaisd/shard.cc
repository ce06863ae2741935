#include "tools/relaisd/shard.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <functional>

#include "core/base/check.h"
#include "core/base/strings.h"
#include "core/log/log.h"
#include "protocols/authres/authres.h"
#include "tools/relaisd/secure_random.h"
#include "tools/relaisd/transfer_deadline.h"

namespace relais::relaisd {
namespace {

constexpr uint32_t kTimerTickMs = 100;
constexpr uint64_t kHardStopExtraMs = 10'000;  // Past the grace period, stop regardless.
constexpr uint64_t kAcceptRetryMs = 1000;
constexpr uint64_t kFinalReplyGraceMs = 10'000;  // For a client to take its 421.

std::optional<mail::IpAddress> PeerAddress(const sockaddr_storage& ss) {
  mail::IpAddress a;
  if (ss.ss_family == AF_INET) {
    a.family = AF_INET;
    std::memcpy(a.bytes.data(), &reinterpret_cast<const sockaddr_in*>(&ss)->sin_addr, 4);
    return a;
  }
  if (ss.ss_family == AF_INET6) {
    const auto* sin6 = reinterpret_cast<const sockaddr_in6*>(&ss);
    a.family = AF_INET6;
    std::memcpy(a.bytes.data(), &sin6->sin6_addr, 16);
    a.Unmap();
    return a;
  }
  return std::nullopt;
}

// Questions one check may ask: SPF needs at most a few dozen (its limits), DKIM one per
// evaluated signature (auth.dkim_signatures_max, at most 64), DMARC two. Past this an
// evaluation is broken (it asks for what it was given) and is given up rather than let it spin
// the shard: what it could not decide is then temperror (GiveUp), never "not checked".
constexpr uint32_t kCheckQuestionsMax = 256;

// The questions an evaluation waits for now: all of them at once where it can say (the
// message check's DKIM key lookups), else the one it needs.
template <typename Evaluation>
std::vector<dns::Question> Questions(const Evaluation& evaluation) {
  if constexpr (requires { evaluation.pending(); }) {
    if (!evaluation.pending().empty()) {
      return evaluation.pending();
    }
  }
  return {evaluation.needed()};
}

// Runs a sans-I/O evaluation (Run/needed/Provide: SPF, the message check) to its end on the
// shard's resolver: cached answers at once, the others when they arrive, every question of a
// round in flight together (so N key lookups cost one DNS round trip, not N, and at most one
// timeout). `done(true)` runs once, possibly before this returns; `done(false)` if the
// evaluation asked more than kCheckQuestionsMax questions. The evaluation must live until then.
template <typename Evaluation>
void Drive(Evaluation& evaluation, dns::Resolver& resolver, std::function<void(bool)> done,
           uint32_t asked = 0) {
  while (!evaluation.Run()) {
    const std::vector<dns::Question> questions = Questions(evaluation);
    if (asked + questions.size() > kCheckQuestionsMax) {
      done(false);
      return;
    }
    asked += static_cast<uint32_t>(questions.size());
    std::vector<dns::Question> missing;
    for (const dns::Question& question : questions) {
      if (std::optional<dns::Answer> cached = resolver.FromCache(question)) {
        evaluation.Provide(question, std::move(*cached));
      } else {
        missing.push_back(question);
      }
    }
    if (missing.empty()) {
      continue;
    }
    // Shared by the lookups of this round, on this shard only: the last answer to arrive
    // (whichever it is) runs the evaluation on and frees it.
    auto outstanding = std::make_shared<size_t>(missing.size());
    for (const dns::Question& question : missing) {
      resolver.Resolve(question, [&evaluation, &resolver, question, asked, outstanding,
                                  done](const dns::Answer& answer) mutable {
        evaluation.Provide(question, answer);
        if (--*outstanding == 0) {
          Drive(evaluation, resolver, std::move(done), asked);
        }
      });
    }
    return;
  }
  done(true);
}

// Whether a policy checks anything at all.
bool Checks(const authcheck::Policy& p) {
  return p.spf != authcheck::Mode::kOff || p.dkim != authcheck::Mode::kOff ||
         p.dmarc != authcheck::Mode::kOff;
}

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

// One SMTP connection. Lives in a slot of its shard until its close completes; it is never
// freed while an operation or an append names it.
struct Shard::Connection final : timer::Timer, spool::AppendCompletion, smtp::BodyObserver {
  template <void (Shard::*Handler)(Connection&, int32_t, uint32_t)>
  struct Op final : uring::Completion {
    explicit Op(Connection* c) : connection(c) {}
    void OnCqe(int32_t result, uint32_t flags) override {
      (connection->shard->*Handler)(*connection, result, flags);
    }
    Connection* connection;
  };

  Connection(Shard* s, uring::FixedFile file, uint32_t index, const mail::IpAddress& peer)
      : shard(s), socket(file), slot(index), client(peer), session(s->session_options_, peer) {}

  void OnTimer() override { shard->OnTimeout(*this); }
  void OnAppendDone(spool::AppendOutcome outcome, const mail::MessageId& id) override {
    shard->OnAppendDone(*this, outcome, id);
  }
  // DKIM body hashes on the stream (only for checked clients).
  void OnBodyStart() override { body_hashes = std::make_unique<dkim::BodyHashes>(); }
  void OnBodyBytes(std::string_view bytes) override { body_hashes->Update(bytes); }

  Shard* shard;
  const uring::FixedFile socket;  // In the engine's registered-file table.
  const uint32_t slot;
  const mail::IpAddress client;
  smtp::ServerSession session;
  Op<&Shard::OnRecvThunk> recv_op{this};
  Op<&Shard::OnSendThunk> send_op{this};
  Op<&Shard::OnClosedThunk> close_op{this};
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
  // The message transfer under way, if any, and its deadline (transfer_deadline.h), credited
  // with the bytes read past transfer_bytes_seen at every read.
  bool in_transfer = false;
  uint64_t timeout_at_ms = 0;  // When the session's own timeout (command or data) expires.
  TransferDeadline transfer_deadline;
  uint64_t transfer_bytes_seen = 0;
  // Inline sender authentication, for clients outside auth.skip_networks and relay networks.
  bool checked = false;
  // In auth.skip_networks or relay.networks: the only clients whose mail we sign. "Not
  // checked" is not "trusted": with the checks off, anyone else's mail stays unsigned, or our
  // key would sign whatever an outsider writes.
  bool trusted = false;
  bool auth_pending = false;  // A check waits for DNS; the connection is kept until it ends.
  uint64_t check_started_us = 0;
  std::unique_ptr<spf::Evaluation> spf;
  // Of this transaction's MAIL FROM; on the heap, so an idle connection does not carry it.
  std::unique_ptr<spf::Outcome> spf_outcome;
  std::unique_ptr<dkim::BodyHashes> body_hashes;
  std::unique_ptr<authcheck::MessageCheck> message_check;
  const authcheck::Policy* policy = nullptr;  // Its listener's; set when admitted.
};

// Accepts on one listening socket straight into the shard's registered-file table: a session
// never holds a descriptor of the process, and its accept costs no syscall of its own (the
// kernel writes the peer's address; TCP_NODELAY is inherited from the listener). kInFlight
// single-shot accepts stay armed, each with its own address buffer (a multishot accept has one
// buffer for all its connections), and each re-arms as it completes.
class Shard::Acceptor final {
 public:
  static constexpr size_t kInFlight = 16;

  Acceptor(Shard* shard, int fd, uint32_t listener) : shard_(shard), fd_(fd), listener_(listener) {
    for (Pending& p : pending_) {
      p.acceptor = this;
    }
  }
  // Arms every accept that is not armed.
  void Arm() {
    for (Pending& p : pending_) {
      if (!p.armed) {
        ArmOne(p);
      }
    }
  }
  void Cancel() {
    for (Pending& p : pending_) {
      if (p.armed) {
        shard_->engine_->Cancel(p);
      }
    }
  }

 private:
  struct Pending final : uring::Completion {
    void OnCqe(int32_t result, uint32_t) override { acceptor->OnAccepted(*this, result); }
    Acceptor* acceptor = nullptr;
    sockaddr_storage address{};
    socklen_t length = 0;
    bool armed = false;
  };

  void ArmOne(Pending& p) {
    p.armed = true;
    p.length = sizeof(p.address);
    shard_->engine_->AcceptDirect(fd_, reinterpret_cast<sockaddr*>(&p.address), &p.length, p);
  }

  void OnAccepted(Pending& p, int32_t result) {
    p.armed = false;
    if (result >= 0) {
      shard_->OnAccept(uring::FixedFile{static_cast<uint32_t>(result)}, PeerAddress(p.address),
                       listener_);
      if (!shard_->stopping_) {
        ArmOne(p);
      }
      return;
    }
    if (result == -ECANCELED) {
      return;
    }
    std::string error = std::strerror(-result);
    if (result == -ENFILE) {
      shard_->metrics_.refused_unserved.Add();  // The kernel closed the connection.
      error = base::StrCat("the shard's session table is full (",
                           shard_->options_.connections_per_shard_hard_max,
                           " sessions: limits.connections_max + 1024, or RLIMIT_NOFILE)");
    }
    // Accepting again at once could spin on an error that leaves the connection queued.
    if (shard_->accept_retry_ms_ == 0) {
      log::Emit(log::Level::kWarning, static_cast<int>(shard_->options_.index), "accept_failed",
                {{"error", error}});
      shard_->accept_retry_ms_ = shard_->clock_.MonotonicMs() + kAcceptRetryMs;
    }
  }

  Shard* shard_;
  int fd_;
  uint32_t listener_;  // Index of its server.listen address.
  std::array<Pending, kInFlight> pending_;
};

// Reads the delivery worker's eventfd through io_uring: each completion means results wait.
class Shard::DeliveryReader final : public uring::Completion {
 public:
  explicit DeliveryReader(Shard* shard) : shard_(shard) {}
  void Arm() { shard_->engine_->Read(shard_->worker_->done_fd(), &count_, sizeof(count_), *this); }
  void OnCqe(int32_t /*result*/, uint32_t /*flags*/) override {
    shard_->OnDeliveriesDone();
    Arm();
  }

 private:
  Shard* shard_;
  uint64_t count_ = 0;
};

// relaisctl's way in: one request line per connection, answered once every shard it names has
// answered over the mesh.
class Shard::AdminServer final : public RequestHandler {
 public:
  AdminServer(Shard* shard, int listen_fd)
      : shard_(shard),
        server_(*shard->engine_, shard->timers_, shard->clock_, listen_fd,
                RequestServerOptions{64, 4096, 30'000, /*same_user_only=*/true}, *this) {}

  void Arm() { server_.Arm(); }
  void Stop() { server_.Stop(); }
  void OnAnswer(std::unique_ptr<AdminAnswer> answer) {
    auto it = pending_.find(answer->request);
    if (it == pending_.end()) {
      return;
    }
    it->second.answers.push_back(std::move(*answer));
    MaybeRespond(it);
  }

  size_t RequestEnd(std::string_view input) override {
    const size_t newline = input.find('\n');
    return newline == std::string_view::npos ? kNeedMore : newline + 1;
  }
  std::string TooLarge() override { return "ERROR request line too long\n"; }

  void OnRequest(RequestServer& server, uint64_t client, std::string_view line) override {
    line.remove_suffix(1);  // The '\n'.
    if (!line.empty() && line.back() == '\r') {
      line.remove_suffix(1);
    }
    auto query = ParseAdminRequest(line);
    if (!query.ok()) {
      server.Respond(client, base::StrCat("ERROR ", query.status().message(), "\n"));
      return;
    }
    query->request = next_id_++;
    const std::vector<uint32_t> targets = AdminTargets(*query, shard_->options_.count);
    auto [it, inserted] =
        pending_.emplace(query->request, Pending{client, *query, targets.size(), {}});
    log::Emit(log::Level::kInfo, static_cast<int>(shard_->options_.index), "admin_request",
              {{"request", line}});
    for (uint32_t target : targets) {
      if (target == shard_->options_.index) {
        it->second.answers.push_back(std::move(*shard_->AnswerAdmin(*query)));
        continue;
      }
      uring::Handoff h;
      h.kind = static_cast<uint16_t>(HandoffKind::kAdminQuery);
      h.payload = std::make_unique<AdminQuery>(*query);
      shard_->SendToShard(target, std::move(h));
    }
    MaybeRespond(it);
  }

 private:
  struct Pending {
    uint64_t client;
    AdminQuery query;
    size_t expected;
    std::vector<AdminAnswer> answers;
  };

  void MaybeRespond(std::unordered_map<uint64_t, Pending>::iterator it) {
    if (it->second.answers.size() < it->second.expected) {
      return;
    }
    server_.Respond(it->second.client, FormatAdminResponse(it->second.query, it->second.answers));
    pending_.erase(it);
  }

  Shard* shard_;
  RequestServer server_;
  uint64_t next_id_ = 1;
  std::unordered_map<uint64_t, Pending> pending_;
};

class Shard::SignalReader final : public uring::Completion {
 public:
  SignalReader(Shard* shard, int fd) : shard_(shard), fd_(fd) {}
  void Arm() { shard_->engine_->Read(fd_, &info_, sizeof(info_), *this); }
  void OnCqe(int32_t result, uint32_t /*flags*/) override {
    if (result == static_cast<int32_t>(sizeof(info_)) && info_.ssi_signo == SIGUSR1) {
      // logrotate moved the file: open the path again. One open(2) on this core, on an
      // operator's signal, is cheaper than a hop to a helper thread and back.
      const std::string& path = shard_->options_.log_file;
      const std::string error = path.empty() ? "" : log::OpenFile(path);
      log::Emit(error.empty() ? log::Level::kInfo : log::Level::kError,
                static_cast<int>(shard_->options_.index), "log_reopened",
                {{"file", path}, {"error", error}});
      Arm();
      return;
    }
    if (result == static_cast<int32_t>(sizeof(info_)) &&
        (info_.ssi_signo == SIGTERM || info_.ssi_signo == SIGINT)) {
      log::Emit(log::Level::kInfo, static_cast<int>(shard_->options_.index), "stop_requested",
                {{"signal", info_.ssi_signo == SIGTERM ? "SIGTERM" : "SIGINT"}});
      for (uint32_t s = 0; s < shard_->options_.count; ++s) {
        if (s == shard_->options_.index) {
          continue;
        }
        uring::Handoff stop;
        stop.kind = static_cast<uint16_t>(HandoffKind::kStop);
        // A stop is sent once per shard at most; a full ring here means a shard is wedged,
        // and its hard deadline is the remedy.
        if (!shard_->port_.Send(s, std::move(stop))) {
          log::Emit(log::Level::kError, static_cast<int>(shard_->options_.index),
                    "stop_not_delivered", {{"to_shard", s}});
        }
      }
      shard_->BeginStop();
      return;
    }
    if (!shard_->stopping_) {
      Arm();
    }
  }

 private:
  Shard* shard_;
  int fd_;
  signalfd_siginfo info_{};
};

Shard::Shard(const ShardOptions& options, std::vector<int> listen_fds, ConnectionLimiter& limiter,
             uring::Mesh& mesh, std::unique_ptr<uring::Engine> engine)
    : options_(options),
      listen_fds_(std::move(listen_fds)),
      limiter_(limiter),
      engine_(std::move(engine)),
      timers_(clock_.MonotonicMs(), kTimerTickMs),
      port_(mesh, options.index, *engine_,
            [this](uint32_t from, uring::Handoff&& h) { OnHandoff(from, std::move(h)); }),
      session_options_(options.session),
      random_(clock_.UnixMicros() ^ (uint64_t{options.index} << 56)),
      metrics_(*options.metrics) {
  session_options_.replies_by_class = metrics_.replies_by_class.data();
}

Shard::~Shard() {
  for (auto& c : connections_) {
    if (c != nullptr) {
      timers_.Cancel(*c);
    }
  }
}

absl::StatusOr<std::unique_ptr<Shard>> Shard::Create(const ShardOptions& options,
                                                     std::vector<int> listen_fds,
                                                     ConnectionLimiter& limiter,
                                                     uring::Mesh& mesh) {
  RELAIS_CHECK(options.router != nullptr && options.destinations != nullptr &&
               options.shards_running != nullptr && options.metrics != nullptr);
  uring::EngineOptions engine_options = options.engine;
  engine_options.fixed_files = options.connections_per_shard_hard_max;
  auto engine = uring::Engine::Create(engine_options);
  if (!engine.ok()) {
    return engine.status();
  }
  std::unique_ptr<Shard> shard(
      new Shard(options, std::move(listen_fds), limiter, mesh, std::move(*engine)));
  shard->log_ = std::make_unique<ShardLog>(shard->clock_, static_cast<int>(options.index));
  spool::SpoolOptions spool_options = options.spool;
  spool_options.batch_seconds = &options.metrics->spool_batch_seconds;
  auto spool = spool::Spool::Open(spool_options, shard->engine_->io(), shard->clock_);
  if (!spool.ok()) {
    return spool.status();
  }
  shard->spool_ = std::move(*spool);
  auto report = shard->spool_->Recover();
  if (!report.ok()) {
    return report.status();
  }
  const int index = static_cast<int>(options.index);
  log::Emit(log::Level::kInfo, index, "spool_recovered",
            {{"path", options.spool.path},
             {"segments", report->segments},
             {"messages", report->messages_live},
             {"torn_tails", report->torn_tails},
             {"corrupt_records", report->corrupt_records},
             {"unreadable_segments", report->unreadable_segments}});
  for (const std::string& problem : report->problems) {
    log::Emit(log::Level::kWarning, index, "spool_problem", {{"detail", problem}});
  }
  shard->session_options_.spool_full = shard->spool_->full_flag();
  shard->scheduler_ = std::make_unique<scheduler::Scheduler>(options.scheduler, *shard->spool_,
                                                             shard->clock_, shard->random_);
  shard->scheduler_->LoadFromSpool();
  // 1024 slots each way: more than attempts_in_flight_max allows (at most 512).
  shard->worker_ =
      std::make_unique<DeliveryWorker>(options.index, 10, options.maildir_directories_known_max);
  EgressOptions egress = options.egress;
  egress.shard = options.index;
  egress.helo_name = options.session.hostname;
  shard->egress_ =
      std::make_unique<Egress>(*shard->engine_, shard->timers_, shard->clock_, std::move(egress),
                               static_cast<EgressListener&>(*shard));
  shard->outbound_ = std::make_unique<EgressOutbound>(*shard->egress_, *options.destinations);
  delivery::DeliveryOptions delivery_options;
  delivery_options.plan.shard = options.index;
  delivery_options.plan.pid = static_cast<uint32_t>(getpid());
  delivery_options.plan.hostname = options.session.hostname;
  delivery_options.plan.delay_warning_ms = options.delay_warning_ms;
  delivery_options.recipients_per_transaction_max = options.recipients_per_transaction_max;
  // 128 bits: a sender cannot predict a report's MIME boundary.
  delivery_options.report_boundary = [] { return SecureRandomHex(16); };
  ShardMetrics& m = *options.metrics;
  shard->delivery_ = std::make_unique<delivery::Delivery>(
      std::move(delivery_options), *shard->scheduler_, *shard->spool_, *options.router,
      shard->clock_, *shard->worker_, *shard->outbound_,
      delivery::DeliveryMetrics{&m.attempts, &m.bounces, &m.maildir_mailboxes_recreated,
                                &m.maildir_directories_forgotten, &m.time_to_delivered});
  if (shard->AuthEnabled()) {
    auto resolver = ShardResolver::Create(*shard->engine_, options.dns, shard->clock_);
    if (!resolver.ok()) {
      return absl::InvalidArgumentError(base::StrCat("dns: ", resolver.status().message()));
    }
    shard->resolver_ = std::move(*resolver);
  }
  shard->receive_budget_.bytes_max = options.receive_bytes_max;
  shard->session_options_.receive_budget = &shard->receive_budget_;
  return shard;
}

void Shard::Run() {
  for (uint32_t i = 0; i < listen_fds_.size(); ++i) {
    acceptors_.push_back(std::make_unique<Acceptor>(this, listen_fds_[i], i));
    acceptors_.back()->Arm();
  }
  if (signal_fd_ >= 0) {
    signal_reader_ = std::make_unique<SignalReader>(this, signal_fd_);
    signal_reader_->Arm();
  }
  delivery_reader_ = std::make_unique<DeliveryReader>(this);
  delivery_reader_->Arm();
  if (admin_fd_ >= 0) {
    admin_ = std::make_unique<AdminServer>(this, admin_fd_);
    admin_->Arm();
  }
  if (metrics_fd_ >= 0) {
    RELAIS_CHECK(options_.all_metrics != nullptr);
    metrics_endpoint_ = std::make_unique<MetricsEndpoint>(*options_.all_metrics, stopping_);
    metrics_server_ = std::make_unique<RequestServer>(
        *engine_, timers_, clock_, metrics_fd_,
        RequestServerOptions{64, 8192, metrics_request_timeout_ms_}, *metrics_endpoint_);
    metrics_server_->Arm();
  }
  while (true) {
    int64_t timeout_ms = 1000;
    const int64_t next_tick = timers_.MsUntilNextTick(clock_.MonotonicMs());
    if (next_tick >= 0 && next_tick < timeout_ms) {
      timeout_ms = next_tick;
    }
    if (resolver_ != nullptr) {
      const int64_t dns = resolver_->Tick();  // c-ares timeouts that are due run here.
      if (dns >= 0 && dns < timeout_ms) {
        timeout_ms = dns;
      }
    }
    const int64_t next_retry = scheduler_->MsUntilNextDue();
    if (next_retry >= 0 && next_retry < timeout_ms) {
      timeout_ms = next_retry;
    }
    if (!dirty_.empty() || stopping_ || egress_->busy()) {
      timeout_ms = dirty_.empty() && !egress_->busy() ? std::min<int64_t>(timeout_ms, 50) : 0;
    }
    engine_->Run(timeout_ms);
    port_.Drain();  // Handoffs that raced with a wake-up already consumed.
    while (!outbox_.empty() &&
           port_.Send(outbox_.front().first, std::move(outbox_.front().second))) {
      outbox_.pop_front();
    }
    const uint64_t now = clock_.MonotonicMs();
    timers_.Advance(now);
    if (!stopping_ && accept_retry_ms_ != 0 && now >= accept_retry_ms_) {
      accept_retry_ms_ = 0;
      for (auto& a : acceptors_) {
        a->Arm();
      }
    }
    std::vector<Connection*> dirty;
    dirty.swap(dirty_);
    for (Connection* c : dirty) {
      c->dirty = false;
      Pump(*c);
    }
    delivery_->Tick();
    egress_->Pump();
    worker_->Kick();
    PublishMetrics();
    // Everything appended this turn (messages and delivery outcomes) shares one write and one
    // fdatasync.
    spool_->Flush();
    log_->Flush();
    delivery_->FlushLog();
    if (stopping_ && StopComplete()) {
      break;
    }
  }
  // Submit what the last turn queued (the stop handoffs' MSG_RING wake-ups among them).
  engine_->Run(0);
  options_.shards_running->fetch_sub(1, std::memory_order_release);
  log::Emit(log::Level::kInfo, static_cast<int>(options_.index), "shard_stopped",
            {{"messages_accepted", metrics_.messages_accepted.value()},
             {"connections_accepted", metrics_.connections_accepted.value()},
             {"spool_batches", spool_->stats().batches}});
}

void Shard::OnAccept(uring::FixedFile socket, std::optional<mail::IpAddress> peer,
                     uint32_t listener) {
  if (!peer || live_connections_ >= options_.connections_per_shard_hard_max) {
    engine_->Close(socket);
    metrics_.refused_unserved.Add();
    return;
  }
  uint32_t slot;
  if (!free_slots_.empty()) {
    slot = free_slots_.back();
    free_slots_.pop_back();
  } else {
    slot = static_cast<uint32_t>(connections_.size());
    connections_.emplace_back();
  }
  connections_[slot] = std::make_unique<Connection>(this, socket, slot, *peer);
  Connection& c = *connections_[slot];
  c.opened_ms = clock_.MonotonicMs();
  ++live_connections_;
  metrics_.connections_accepted.Add();
  if (stopping_) {
    metrics_.refused_stopping.Add();
    c.session.Refuse(smtp::Reply::kShuttingDown);
  } else {
    switch (limiter_.Acquire(*peer)) {
      case ConnectionLimiter::Admission::kAdmitted:
        c.admitted = true;
        c.policy = &options_.auth_by_listener[listener];
        c.trusted =
            std::any_of(options_.auth_skip_networks.begin(), options_.auth_skip_networks.end(),
                        [&](const mail::IpNetwork& n) { return n.Contains(*peer); }) ||
            std::any_of(session_options_.relay_networks.begin(),
                        session_options_.relay_networks.end(),
                        [&](const mail::IpNetwork& n) { return n.Contains(*peer); });
        if (Checks(*c.policy) && !c.trusted) {
          c.checked = true;
          if (c.policy->spf != authcheck::Mode::kOff) {
            c.session.RequireSenderCheck();
          }
          if (c.policy->dkim != authcheck::Mode::kOff || c.policy->dmarc != authcheck::Mode::kOff) {
            c.session.SetBodyObserver(&c);
          }
        }
        c.session.Start();
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
  ArmSessionTimer(c);
  MarkDirty(c);
}

void Shard::OnRecvThunk(Connection& c, int32_t result, uint32_t flags) { OnRecv(c, result, flags); }
void Shard::OnSendThunk(Connection& c, int32_t result, uint32_t) { OnSend(c, result); }
void Shard::OnClosedThunk(Connection& c, int32_t, uint32_t) { OnClosed(c); }

void Shard::OnRecv(Connection& c, int32_t result, uint32_t flags) {
  c.recv_armed = false;
  if (result > 0 && uring::Engine::HasBuffer(flags)) {
    const uint16_t buffer = uring::Engine::BufferId(flags);
    if (!c.close_started) {
      const uint64_t lines_before = c.session.command_lines();
      const bool data_before = c.session.ReceivingData();
      c.session.Feed(engine_->Buffer(buffer, static_cast<uint32_t>(result)));
      // RFC 5321 4.5.3.2: each block of message data restarts the data timeout; a command
      // restarts the command timeout only once its line is complete, so a client trickling
      // one byte at a time cannot hold the connection past command_timeout_ms per command.
      if (data_before || c.session.ReceivingData() || c.session.command_lines() != lines_before ||
          c.in_transfer != c.session.InMessageTransfer()) {
        ArmSessionTimer(c);
      }
    }
    engine_->ReturnBuffer(buffer);
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

void Shard::OnSend(Connection& c, int32_t result) {
  if (result < 0) {
    c.peer_gone = true;
    c.send_in_flight = false;
    c.send_buffer.clear();
  } else {
    c.send_offset += static_cast<size_t>(result);
    if (c.send_offset < c.send_buffer.size() && result > 0) {
      engine_->Send(c.socket, std::string_view(c.send_buffer).substr(c.send_offset), c.send_op);
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

void Shard::OnTimeout(Connection& c) {
  if (c.send_in_flight || c.session.WantsClose()) {
    // The client is not reading (a send is stuck on a full socket buffer) or has not taken
    // its final reply in time: stop waiting for it.
    c.peer_gone = true;
    if (c.send_in_flight) {
      engine_->Cancel(c.send_op);
    }
  } else {
    const uint64_t now = clock_.MonotonicMs();
    if (now >= c.timeout_at_ms) {
      c.session.OnTimeout();  // 421 4.4.2, then close once it is sent...
    } else if (c.in_transfer && TransferDeadlineMs(c) <= now) {
      // Below the minimum data rate, or past the message's deadline.
      metrics_.transfers_too_slow.Add();
      c.session.OnTooSlow();  // 421 4.4.2, then close once it is sent...
    } else {
      // The deadline moved (the load fell below the stress mark before any read of this
      // transfer saw it).
      timers_.Arm(
          c, c.in_transfer ? std::min(c.timeout_at_ms, TransferDeadlineMs(c)) : c.timeout_at_ms);
      return;
    }
    timers_.Arm(c, now + kFinalReplyGraceMs);  // ...or after this much.
  }
  MarkDirty(c);
}

bool Shard::Stressed() const {
  // More than half of connections_max open (one relaxed load of the shared count), or more
  // than half of this shard's receive budget held (large messages from few connections).
  return limiter_.active() > options_.stress_connections ||
         receive_budget_.bytes_used > receive_budget_.bytes_max / 2;
}

uint64_t Shard::TransferDeadlineMs(const Connection& c) const {
  return c.transfer_deadline.At(Stressed());  // Stricter under load, checked at every read.
}

void Shard::ArmSessionTimer(Connection& c) {
  const uint64_t now = clock_.MonotonicMs();
  const bool transfer = c.session.InMessageTransfer();
  const uint64_t bytes_read = c.session.data_bytes_read();
  if (transfer && !c.in_transfer) {
    c.transfer_deadline =
        TransferDeadline::Start(now, options_.data_deadline_ms, options_.data_deadline_stress_ms);
  } else if (transfer) {
    c.transfer_deadline.OnRead(now, bytes_read - c.transfer_bytes_seen, options_.data_rate_min,
                               options_.data_deadline_ms, options_.data_deadline_stress_ms);
  }
  if (transfer && Stressed()) {
    c.transfer_deadline.OnStress();
  }
  c.transfer_bytes_seen = bytes_read;
  c.in_transfer = transfer;
  c.timeout_at_ms = now + c.session.TimeoutMs();
  uint64_t at = c.timeout_at_ms;
  if (transfer) {
    at = std::min(at, TransferDeadlineMs(c));
  }
  timers_.Arm(c, at);
}

void Shard::OnAppendDone(Connection& c, spool::AppendOutcome outcome, const mail::MessageId& id) {
  c.commit_pending = false;
  if (outcome == spool::AppendOutcome::kDurable) {
    metrics_.messages_accepted.Add();
    metrics_.message_bytes_accepted.Add(c.commit_bytes);
    const uint64_t durable_us = clock_.MonotonicMicros() - c.commit_started_us;
    metrics_.time_to_durable.ObserveMicros(durable_us);
    if (const spool::StoredMessage* m = spool_->Find(id); m != nullptr) {
      log_->Info("message_accepted", {{"id", id.ToString()},
                                      {"client", m->envelope.client_address},
                                      {"helo", m->envelope.helo},
                                      {"sender", m->envelope.sender},
                                      {"recipients", uint64_t{m->envelope.recipients.size()}},
                                      {"size", c.commit_bytes},
                                      {"durable_us", durable_us}});
    }
    scheduler_->Enqueue(id);  // Only a durable message is ever delivered.
  } else {
    metrics_.commit_failures.Add();
  }
  c.session.CompleteCommit(ToCommitOutcome(outcome), id);
  if (!c.close_started) {
    ArmSessionTimer(c);
  }
  MarkDirty(c);
}

void Shard::MarkDirty(Connection& c) {
  if (!c.dirty) {
    c.dirty = true;
    dirty_.push_back(&c);
  }
}

void Shard::StoreMessages(Connection& c) {
  while (!c.commit_pending && !c.auth_pending && c.session.TakeCommitRequest()) {
    // The header section's bounds, for every client (a loop comes back from a trusted one):
    // before anything else reads it.
    if (const smtp::Reply refusal = HeaderRefusal(c.session.transaction().body);
        refusal != smtp::Reply::kOk) {
      c.body_hashes.reset();
      c.session.RefuseMessage(refusal);
      continue;
    }
    if (!c.checked) {
      // Not checked by us (a trusted client, or checks off): a field claiming our identity
      // is a forgery all the same, and goes (RFC 8601 5), before any signing covers it.
      authres::RemoveForged(c.session.transaction().body, c.policy->authserv_id);
    }
    if (c.checked && c.peer_gone) {
      // Nobody will be told 250, and unchecked it must not be stored: the client sends it
      // again (as after a 451).
      c.session.RefuseMessage(smtp::Reply::kSpoolFailed);
    } else if (c.checked) {
      StartMessageCheck(c);  // Commits (or refuses) when the check ends.
    } else if (c.trusted && options_.signing_keys != nullptr && !options_.signing_keys->empty()) {
      // A trusted client's mail: signed for its From domain when we hold a key for it. The
      // signatures go into the header block stored above the body (no copy of the body).
      absl::StatusOr<std::string> signatures = authcheck::SignaturesFor(
          c.session.transaction().body, *options_.signing_keys, clock_.UnixMicros() / 1'000'000);
      if (!signatures.ok()) {
        metrics_.dkim_sign_failures.Add();
        log_->Info("dkim_sign_failed", {{"error", std::string(signatures.status().message())}});
      } else if (!signatures->empty()) {
        metrics_.dkim_signed.Add();
      }
      Commit(c, {}, signatures.ok() ? *signatures : std::string());
    } else {
      Commit(c, {});
    }
  }
}

smtp::Reply Shard::HeaderRefusal(std::string_view message) {
  switch (authcheck::CheckHeader(message, options_.header_limits)) {
    case authcheck::HeaderVerdict::kOk:
      return smtp::Reply::kOk;
    case authcheck::HeaderVerdict::kTooBig:
      metrics_.header_too_big.Add();
      return smtp::Reply::kHeaderTooBig;
    case authcheck::HeaderVerdict::kTooManyFields:
      metrics_.header_too_many_fields.Add();
      return smtp::Reply::kTooManyHeaderFields;
    case authcheck::HeaderVerdict::kTooManyHops:
      metrics_.header_too_many_hops.Add();
      return smtp::Reply::kTooManyHops;
  }
  return smtp::Reply::kOk;
}

void Shard::Commit(Connection& c, std::string_view auth_header, std::string_view signatures) {
  // A recipient named many times was answered 250 each time; it is delivered once, with the
  // first one's DSN parameters.
  metrics_.recipients_duplicate.Add(routing::DropDuplicateRecipients(
      *options_.router, c.session.transaction().envelope.recipients));
  const mail::MessageId id = spool_->NewMessageId();
  std::string trace = c.session.TraceHeader(id, Rfc5322Date());
  if (!auth_header.empty() || !signatures.empty()) {
    // Only then a second string: unsigned mail from trusted clients (the usual case) has none.
    trace = base::StrCat(auth_header, trace, signatures);
  }
  smtp::Transaction& tx = c.session.transaction();
  c.commit_bytes = tx.body.size();
  c.commit_started_us = clock_.MonotonicMicros();
  const spool::AppendStatus status =
      spool_->Append(id, std::move(tx.envelope), trace, std::move(tx.body), c);
  if (status == spool::AppendStatus::kStaged) {
    c.commit_pending = true;  // The 250 waits for this turn's group commit.
  } else {
    metrics_.commit_failures.Add();
    c.session.CompleteCommit(smtp::CommitOutcome::kNoSpace, id);
  }
}

bool Shard::AuthEnabled() const {
  return std::any_of(options_.auth_by_listener.begin(), options_.auth_by_listener.end(),
                     [](const authcheck::Policy& p) { return Checks(p); });
}

void Shard::StartSenderCheck(Connection& c) {
  spf::Request request;
  request.ip = c.client;
  request.sender = c.session.transaction().envelope.sender;
  request.helo = c.session.helo();
  request.receiver = options_.session.hostname;
  request.now_unix_seconds = clock_.UnixMicros() / 1'000'000;
  c.spf_outcome.reset();
  c.spf = std::make_unique<spf::Evaluation>(std::move(request));
  c.auth_pending = true;
  Drive(*c.spf, resolver_->resolver(),
        [this, &c](bool complete) { FinishSenderCheck(c, complete); });
}

void Shard::FinishSenderCheck(Connection& c, bool complete) {
  c.auth_pending = false;
  c.spf_outcome = std::make_unique<spf::Outcome>(c.spf->outcome());
  c.spf.reset();
  if (!complete) {
    c.spf_outcome->result = spf::Result::kTempError;
    c.spf_outcome->problem = "the SPF evaluation did not converge (a bug: please report it)";
    log_->Info("auth_check_abandoned", {{"check", "spf"}, {"client", c.client.ToString()}});
  }
  const spf::Outcome& o = *c.spf_outcome;
  metrics_.auth_spf[static_cast<size_t>(o.result)].Add();
  const authcheck::Judgement j = authcheck::JudgeSender(o, *c.policy);
  if (j.verdict == authcheck::Verdict::kAccept) {
    c.session.CompleteSenderCheck(smtp::Reply::kSenderOk);
  } else {
    const bool reject = j.verdict == authcheck::Verdict::kReject;
    (reject ? metrics_.auth_rejected_spf : metrics_.auth_deferred_spf).Add();
    log_->Info("sender_refused", {{"client", c.client.ToString()},
                                  {"helo", c.session.helo()},
                                  {"sender", c.session.transaction().envelope.sender},
                                  {"spf", spf::ResultName(o.result)},
                                  {"reason", j.text}});
    c.session.CompleteSenderCheck(reject ? smtp::Reply::kSpfFail : smtp::Reply::kSpfTempError,
                                  j.text);
  }
  if (!c.close_started) {
    ArmSessionTimer(c);
  }
  MarkDirty(c);
}

void Shard::StartMessageCheck(Connection& c) {
  smtp::Transaction& tx = c.session.transaction();
  authcheck::MessageRequest request;
  if (c.spf_outcome != nullptr) {
    request.spf = *c.spf_outcome;
  }
  request.sender = tx.envelope.sender;
  request.helo = c.session.helo();
  request.now_unix_seconds = clock_.UnixMicros() / 1'000'000;
  request.dmarc_sample = static_cast<uint8_t>(random_.Below(100));
  if (c.body_hashes != nullptr) {
    c.body_hashes->Finish();
  }
  c.message_check =
      std::make_unique<authcheck::MessageCheck>(*c.policy, std::move(request), tx.body);
  c.message_check->UseBodyHashes(c.body_hashes.get());
  c.message_check->UseKeyCache(&dkim_keys_);
  c.auth_pending = true;
  c.check_started_us = clock_.MonotonicMicros();
  Drive(*c.message_check, resolver_->resolver(),
        [this, &c](bool complete) { FinishMessageCheck(c, complete); });
}

void Shard::FinishMessageCheck(Connection& c, bool complete) {
  c.auth_pending = false;
  if (!complete) {
    // Out of its budget: what it could not decide is temperror (never "not checked"), and the
    // verdict follows from that (auth.dmarc_temperror when a policy is at stake).
    c.message_check->GiveUp();
    metrics_.auth_checks_over_budget.Add();
    log_->Info("auth_check_over_budget", {{"check", "message"}, {"client", c.client.ToString()}});
  }
  metrics_.auth_check_seconds.ObserveMicros(clock_.MonotonicMicros() - c.check_started_us);
  const authcheck::MessageCheck& m = *c.message_check;
  if (c.policy->dkim != authcheck::Mode::kOff) {
    for (const dkim::SignatureResult& r : m.dkim_results()) {
      metrics_.auth_dkim[static_cast<size_t>(r.result)].Add();
    }
    if (m.dkim_results().empty()) {
      metrics_.auth_dkim.back().Add();
    }
  }
  if (c.policy->dmarc != authcheck::Mode::kOff) {
    metrics_
        .auth_dmarc[static_cast<size_t>(m.dmarc_outcome() != nullptr ? m.dmarc_outcome()->result
                                                                     : dmarc::Result::kPermError)]
        .Add();
  }
  metrics_.auth_dkim_skipped.Add(m.dkim_skipped());
  const authcheck::Judgement j = m.judgement();
  if (j.temperror) {
    metrics_.auth_temperror_actions[static_cast<size_t>(c.policy->dmarc_temperror)].Add();
  }
  std::string header = m.Header();
  c.message_check.reset();  // It reads the body, which changes now.
  c.body_hashes.reset();
  if (c.peer_gone) {
    // Nobody is there to be told 250: storing it would only make a duplicate when the client
    // sends it again.
    c.session.RefuseMessage(smtp::Reply::kSpoolFailed);
  } else if (j.verdict != authcheck::Verdict::kAccept) {
    const bool reject = j.verdict == authcheck::Verdict::kReject;
    (reject ? metrics_.auth_rejected_dmarc : metrics_.auth_deferred_dmarc).Add();
    log_->Info("message_refused", {{"client", c.client.ToString()},
                                   {"helo", c.session.helo()},
                                   {"sender", c.session.transaction().envelope.sender},
                                   {"reason", j.text}});
    c.session.RefuseMessage(reject        ? smtp::Reply::kPolicyRejected
                            : j.temperror ? smtp::Reply::kAuthTempError
                                          : smtp::Reply::kPolicyDeferred,
                            j.text);
  } else {
    authres::RemoveForged(c.session.transaction().body, c.policy->authserv_id);
    Commit(c, header);
  }
  if (!c.close_started) {
    ArmSessionTimer(c);
  }
  MarkDirty(c);
}

void Shard::Pump(Connection& c) {
  if (c.close_started) {
    BeginClose(c);
    return;
  }
  if (c.session.TakeSenderCheck()) {
    StartSenderCheck(c);
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
      engine_->Send(c.socket, c.send_buffer, c.send_op);
    }
  }
  const bool quiet = !c.send_in_flight && !c.commit_pending && !c.auth_pending;
  if ((c.peer_gone || c.session.WantsClose()) && quiet) {
    BeginClose(c);
    return;
  }
  if (!c.recv_armed && !c.peer_gone && !c.session.WantsClose() && c.session.WantsInput() &&
      c.send_buffer.size() < session_options_.pipeline_bytes_max) {
    c.recv_armed = true;
    engine_->Recv(c.socket, c.recv_op);
  }
}

void Shard::BeginClose(Connection& c) {
  if (c.close_submitted) {
    return;
  }
  if (!c.close_started) {
    c.close_started = true;
    if (c.recv_armed) {
      engine_->Cancel(c.recv_op);  // Its completion marks the connection dirty again.
    }
  }
  if (c.recv_armed || c.send_in_flight || c.commit_pending || c.auth_pending) {
    return;  // Each of these completes later and brings us back through Pump.
  }
  c.close_submitted = true;
  engine_->Close(c.socket, c.close_op);
}

void Shard::OnClosed(Connection& c) {
  if (c.admitted) {
    limiter_.Release(c.client);
  }
  log_->Info("session_end", {{"client", c.client.ToString()},
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

void Shard::OnHandoff(uint32_t /*from*/, uring::Handoff&& handoff) {
  switch (static_cast<HandoffKind>(handoff.kind)) {
    case HandoffKind::kStop:
      BeginStop();
      return;
    case HandoffKind::kAdminQuery: {
      RELAIS_CHECK(handoff.payload != nullptr);
      uring::Handoff reply;
      reply.kind = static_cast<uint16_t>(HandoffKind::kAdminAnswer);
      reply.payload = AnswerAdmin(static_cast<const AdminQuery&>(*handoff.payload));
      SendToShard(0, std::move(reply));
      return;
    }
    case HandoffKind::kAdminAnswer:
      RELAIS_CHECK(handoff.payload != nullptr && admin_ != nullptr);
      admin_->OnAnswer(
          std::unique_ptr<AdminAnswer>(static_cast<AdminAnswer*>(handoff.payload.release())));
      return;
  }
  RELAIS_CHECK(false) << "unknown handoff kind " << handoff.kind;
}

void Shard::SendToShard(uint32_t to, uring::Handoff&& handoff) {
  if (!outbox_.empty() || !port_.Send(to, std::move(handoff))) {
    outbox_.emplace_back(to, std::move(handoff));  // Keeps order; retried every turn.
  }
}

MessageView Shard::View(const spool::StoredMessage& m) const {
  MessageView v;
  v.id = m.id.ToString();
  v.sender = m.envelope.sender;
  v.size = m.body_size;
  v.received_us = m.received_us;
  for (size_t i = 0; i < m.envelope.recipients.size(); ++i) {
    v.recipients.emplace_back(m.envelope.recipients[i].address,
                              spool::RecipientStateName(m.states[i]));
  }
  v.state = "queued";
  if (const scheduler::QueueEntry* e = scheduler_->Entry(m.id)) {
    v.attempts = e->attempts;
    v.last_reply = e->last_reply;
    const uint64_t now = clock_.MonotonicMs();
    if (e->in_flight) {
      v.state = "active";
    } else if (e->held) {
      v.state = "held";
    } else if (e->next_attempt_ms != 0) {
      v.state = "deferred";
      v.next_attempt_in_ms =
          e->next_attempt_ms > now ? static_cast<int64_t>(e->next_attempt_ms - now) : 0;
    }
  }
  return v;
}

std::unique_ptr<AdminAnswer> Shard::AnswerAdmin(const AdminQuery& q) {
  auto answer = std::make_unique<AdminAnswer>();
  answer->request = q.request;
  const int shard = static_cast<int>(options_.index);
  auto has_domain = [&](const spool::StoredMessage& m, std::string_view domain) {
    for (size_t i = 0; i < m.envelope.recipients.size(); ++i) {
      const std::string& a = m.envelope.recipients[i].address;
      const size_t at = a.rfind('@');
      if (m.states[i] == spool::RecipientState::kPending && at != std::string::npos &&
          base::EqualsIgnoreCase(std::string_view(a).substr(at + 1), domain)) {
        return true;
      }
    }
    return false;
  };
  const spool::StoredMessage* one = q.id ? spool_->Find(*q.id) : nullptr;
  switch (q.op) {
    case AdminOp::kList:
      spool_->ForEach([&](const spool::StoredMessage& m) {
        MessageView v = View(m);
        if ((q.state.empty() || v.state == q.state) &&
            (q.sender.empty() || base::EqualsIgnoreCase(q.sender, v.sender)) &&
            (q.domain.empty() || has_domain(m, q.domain))) {
          answer->messages.push_back(std::move(v));
        }
      });
      break;
    case AdminOp::kShow:
      if (one != nullptr) {
        answer->messages.push_back(View(*one));
      }
      break;
    case AdminOp::kFlush:
      if (q.id) {
        answer->affected = scheduler_->Flush(*q.id) ? 1 : 0;
      } else {
        spool_->ForEach([&](const spool::StoredMessage& m) {
          if ((q.domain.empty() || has_domain(m, q.domain)) && scheduler_->Flush(m.id)) {
            ++answer->affected;
          }
        });
      }
      break;
    case AdminOp::kDelete: {
      if (one == nullptr) {
        break;
      }
      const mail::MessageId id = one->id;
      if (!scheduler_->Forget(id)) {
        answer->error = "the message is being delivered right now; try again";
        break;
      }
      std::vector<uint32_t> pending;
      for (uint32_t i = 0; i < one->states.size(); ++i) {
        if (one->states[i] == spool::RecipientState::kPending) {
          pending.push_back(i);
        }
      }
      // Recorded as failed without a bounce: the operator chose to drop it.
      for (uint32_t i : pending) {
        spool_->RecordOutcome(id, i, spool::RecipientState::kFailed);
      }
      log::Emit(log::Level::kInfo, shard, "message_deleted",
                {{"id", id.ToString()}, {"recipients", static_cast<uint64_t>(pending.size())}});
      answer->affected = 1;
      break;
    }
    case AdminOp::kBounce:
      answer->affected = q.id && scheduler_->Return(*q.id) ? 1 : 0;
      break;
    case AdminOp::kHold:
      answer->affected = q.id && scheduler_->Hold(*q.id) ? 1 : 0;
      break;
    case AdminOp::kRelease:
      answer->affected = q.id && scheduler_->Release(*q.id) ? 1 : 0;
      break;
    case AdminOp::kStatus: {
      ShardStatus& st = answer->status;
      st.shard = options_.index;
      st.connections = live_connections_;
      st.messages = spool_->message_count();
      st.deferred = scheduler_->deferred();
      scheduler_->ForEachEntry([&](const scheduler::QueueEntry& e) { st.held += e.held; });
      st.in_flight = scheduler_->in_flight();
      st.spool_bytes = spool_->live_bytes();
      st.segments = spool_->segment_count();
      st.accepted = metrics_.messages_accepted.value();
      st.delivery_attempts = delivery_->attempts_started();
      break;
    }
  }
  return answer;
}

void Shard::BeginStop() {
  if (stopping_) {
    return;
  }
  stopping_ = true;
  stop_deadline_ms_ = clock_.MonotonicMs() + options_.shutdown_grace_ms;
  for (auto& a : acceptors_) {
    a->Cancel();
  }
  if (admin_ != nullptr) {
    admin_->Stop();
  }
  delivery_->Stop();
  egress_->Stop();
  for (auto& c : connections_) {
    if (c != nullptr && !c->close_started) {
      c->session.BeginShutdown();
      MarkDirty(*c);
    }
  }
  log::Emit(log::Level::kInfo, static_cast<int>(options_.index), "stopping",
            {{"connections", live_connections_}, {"grace_ms", options_.shutdown_grace_ms}});
}

bool Shard::StopComplete() {
  const uint64_t now = clock_.MonotonicMs();
  if (!forced_ && now >= stop_deadline_ms_) {
    forced_ = true;
    for (auto& c : connections_) {
      if (c != nullptr && !c->close_started) {
        c->session.ForceShutdown();
        MarkDirty(*c);
      }
    }
  }
  // Shard 0 answers relaisctl and Prometheus while the others drain, so it goes last.
  const bool others_done =
      options_.index != 0 || options_.shards_running->load(std::memory_order_acquire) == 1;
  if (live_connections_ == 0 && delivery_->idle() && egress_->idle() && spool_->idle() &&
      log_->idle() && others_done) {
    return true;
  }
  if (now >= stop_deadline_ms_ + kHardStopExtraMs) {
    // Peers that will not read their 421 must not hold the process. Nothing unacknowledged is
    // lost by leaving: a message is only ever acknowledged after its batch is durable.
    log::Emit(log::Level::kWarning, static_cast<int>(options_.index), "stop_forced",
              {{"connections", live_connections_}, {"spool_idle", spool_->idle()}});
    return spool_->idle();
  }
  return false;
}

void Shard::OnDeliveriesDone() {
  while (auto done = worker_->TakeDone()) {
    delivery_->OnWorkerDone(std::move(done));
  }
}

void Shard::OnEgressDone(uint64_t id, std::vector<smtp::RecipientReply>&& results,
                         std::string_view next_hop) {
  delivery_->OnOutboundDone(id, std::move(results), next_hop);
}

void Shard::PublishMetrics() {
  metrics_.connections_active.Set(live_connections_);
  metrics_.receive_budget_refusals.Mirror(receive_budget_.refusals);
  metrics_.receive_bytes.Set(static_cast<int64_t>(receive_budget_.bytes_used));
  const spool::SpoolStats& st = spool_->stats();
  metrics_.spool_appends.Mirror(st.appends);
  metrics_.spool_batches.Mirror(st.batches);
  metrics_.spool_batch_failures.Mirror(st.batch_failures);
  metrics_.spool_bytes_written.Mirror(st.bytes_written);
  metrics_.spool_bytes.Set(static_cast<int64_t>(spool_->live_bytes()));
  metrics_.spool_segments.Set(static_cast<int64_t>(spool_->segment_count()));
  metrics_.queue_messages.Set(static_cast<int64_t>(spool_->message_count()));
  metrics_.queue_ready.Set(static_cast<int64_t>(scheduler_->ready()));
  metrics_.queue_deferred.Set(static_cast<int64_t>(scheduler_->deferred()));
  metrics_.queue_in_flight.Set(scheduler_->in_flight());
  const EgressCounters& e = egress_->counters();
  metrics_.egress_connections_opened.Mirror(e.connections_opened);
  metrics_.egress_connect_failures.Mirror(e.connect_failures);
  metrics_.egress_tasks_retried.Mirror(e.tasks_retried);
  metrics_.egress_connections.Set(egress_->connections());
  metrics_.egress_connections_unused.Mirror(e.connections_unused);
  metrics_.egress_converted_7bit.Mirror(e.converted_7bit);
  metrics_.egress_not_convertible.Mirror(e.not_convertible);
  metrics_.egress_smtputf8_not_needed.Mirror(e.smtputf8_not_needed);
  metrics_.log_lines_dropped.Mirror(log_->dropped());
  if (resolver_ != nullptr) {
    const dns::ResolverStats& d = resolver_->resolver().stats();
    metrics_.dns_lookups.Mirror(d.lookups);
    metrics_.dns_cache_hits.Mirror(d.cache_hits);
    metrics_.dns_queries.Mirror(d.queries_sent);
    metrics_.dns_temporary_failures.Mirror(d.temporary_failures);
    metrics_.dns_cache_entries.Set(static_cast<int64_t>(resolver_->resolver().cache_entries()));
  }
}

std::string_view Shard::Rfc5322Date() {
  const uint64_t now_us = clock_.UnixMicros();
  if (now_us / 1'000'000 != date_second_ || date_.empty()) {
    date_second_ = now_us / 1'000'000;  // One formatting per second, not per message.
    date_ = base::Rfc5322Date(now_us);
  }
  return date_;
}

}  // namespace relais::relaisd
