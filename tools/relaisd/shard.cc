#include "tools/relaisd/shard.h"

#include <time.h>
#include <unistd.h>

#include <algorithm>

#include "core/base/check.h"
#include "core/base/strings.h"
#include "core/log/log.h"

namespace relais::relaisd {
namespace {

constexpr uint32_t kTimerTickMs = 100;
constexpr uint64_t kHardStopExtraMs = 10'000;  // Past the grace period, stop regardless.

// The ingress's options: ShardOptions' fields that concern inbound SMTP.
IngressOptions IngressOptionsOf(const ShardOptions& options) {
  IngressOptions o;
  o.shard = options.index;
  o.session = options.session;
  o.receive_bytes_max = options.receive_bytes_max;
  o.transfer = {options.data_deadline_ms, options.data_deadline_stress_ms, options.data_rate_min};
  o.stress_connections = options.stress_connections;
  o.connections_per_shard_hard_max = options.connections_per_shard_hard_max;
  o.router = options.router;
  o.checks.auth_by_listener = options.auth_by_listener;
  o.checks.auth_skip_networks = options.auth_skip_networks;
  o.checks.relay_networks = options.session.relay_networks;
  o.checks.header_limits = options.header_limits;
  o.checks.signing_keys = options.signing_keys;
  o.checks.hostname = options.session.hostname;
  return o;
}

}  // namespace

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

// Shard 0's signals, read from the signalfd through io_uring: SIGTERM and SIGINT stop every
// shard (a stop handoff to each of the others), SIGUSR1 reopens the log file.
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
      random_(clock_.UnixMicros() ^ (uint64_t{options.index} << 56)),
      metrics_(*options.metrics) {}

Shard::~Shard() = default;

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
  if (AnyChecks(options.auth_by_listener)) {
    auto resolver = ShardResolver::Create(*shard->engine_, options.dns, shard->clock_);
    if (!resolver.ok()) {
      return absl::InvalidArgumentError(base::StrCat("dns: ", resolver.status().message()));
    }
    shard->resolver_ = std::move(*resolver);
  }
  shard->ingress_ = std::make_unique<Ingress>(
      IngressOptionsOf(options), *shard->engine_, shard->timers_, shard->clock_, *shard->spool_,
      *shard->scheduler_, shard->resolver_ != nullptr ? &shard->resolver_->resolver() : nullptr,
      shard->random_, shard->limiter_, *shard->log_, shard->metrics_);
  shard->admin_service_ = std::make_unique<AdminService>(
      options.index, *shard->spool_, *shard->scheduler_, shard->clock_, [s = shard.get()] {
        return ShardCounts{s->ingress_->connections(), s->metrics_.messages_accepted.value(),
                           s->delivery_attempts_};
      });
  return shard;
}

void Shard::Run() {
  ingress_->Start(listen_fds_);
  if (signal_fd_ >= 0) {
    signal_reader_ = std::make_unique<SignalReader>(this, signal_fd_);
    signal_reader_->Arm();
  }
  delivery_reader_ = std::make_unique<DeliveryReader>(this);
  delivery_reader_->Arm();
  if (admin_fd_ >= 0) {
    admin_ = std::make_unique<AdminServer>(
        *engine_, timers_, clock_, admin_fd_, options_.index, options_.count, *admin_service_,
        [this](uint32_t to, std::unique_ptr<AdminQuery> query) {
          uring::Handoff h;
          h.kind = static_cast<uint16_t>(HandoffKind::kAdminQuery);
          h.payload = std::move(query);
          SendToShard(to, std::move(h));
        });
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
    if (ingress_->busy() || stopping_ || egress_->busy()) {
      timeout_ms = !ingress_->busy() && !egress_->busy() ? std::min<int64_t>(timeout_ms, 50) : 0;
    }
    engine_->Run(timeout_ms);
    port_.Drain();  // Handoffs that raced with a wake-up already consumed.
    while (!outbox_.empty() &&
           port_.Send(outbox_.front().first, std::move(outbox_.front().second))) {
      outbox_.pop_front();
    }
    const uint64_t now = clock_.MonotonicMs();
    timers_.Advance(now);
    ingress_->RetryAccepts(now);
    ingress_->PumpDirty();
    StartDeliveries();
    egress_->Pump();
    worker_->Kick();
    PublishMetrics();
    // Everything appended this turn (messages and delivery outcomes) shares one write and one
    // fdatasync.
    spool_->Flush();
    log_->Flush();
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
void Shard::OnHandoff(uint32_t /*from*/, uring::Handoff&& handoff) {
  switch (static_cast<HandoffKind>(handoff.kind)) {
    case HandoffKind::kStop:
      BeginStop();
      return;
    case HandoffKind::kAdminQuery: {
      RELAIS_CHECK(handoff.payload != nullptr);
      uring::Handoff reply;
      reply.kind = static_cast<uint16_t>(HandoffKind::kAdminAnswer);
      reply.payload = admin_service_->Answer(static_cast<const AdminQuery&>(*handoff.payload));
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

void Shard::BeginStop() {
  if (stopping_) {
    return;
  }
  stopping_ = true;
  stop_deadline_ms_ = clock_.MonotonicMs() + options_.shutdown_grace_ms;
  ingress_->BeginStop();  // No more accepts; every session is told 421 when it may be.
  if (admin_ != nullptr) {
    admin_->Stop();
  }
  egress_->Stop();
  log::Emit(log::Level::kInfo, static_cast<int>(options_.index), "stopping",
            {{"connections", ingress_->connections()}, {"grace_ms", options_.shutdown_grace_ms}});
}

bool Shard::StopComplete() {
  const uint64_t now = clock_.MonotonicMs();
  if (!forced_ && now >= stop_deadline_ms_) {
    forced_ = true;
    ingress_->ForceStop();
  }
  // Shard 0 answers relaisctl and Prometheus while the others drain, so it goes last.
  const bool others_done =
      options_.index != 0 || options_.shards_running->load(std::memory_order_acquire) == 1;
  if (ingress_->connections() == 0 && attempts_.empty() && egress_->idle() && spool_->idle() &&
      log_->idle() && others_done) {
    return true;
  }
  if (now >= stop_deadline_ms_ + kHardStopExtraMs) {
    // Peers that will not read their 421 must not hold the process. Nothing unacknowledged is
    // lost by leaving: a message is only ever acknowledged after its batch is durable.
    log::Emit(log::Level::kWarning, static_cast<int>(options_.index), "stop_forced",
              {{"connections", ingress_->connections()}, {"spool_idle", spool_->idle()}});
    return spool_->idle();
  }
  return false;
}

void Shard::StartDeliveries() {
  if (stopping_) {
    return;  // Attempts in flight finish; new ones wait for the next start.
  }
  const uint64_t now_us = clock_.UnixMicros();
  const routing::Router& router = *options_.router;
  while (auto attempt = scheduler_->Next()) {
    const spool::StoredMessage* message = spool_->Find(attempt->id);
    RELAIS_CHECK(message != nullptr) << "scheduler handed out a retired message";
    auto job = std::make_unique<DeliveryJob>();
    job->token = next_token_++;
    job->message_id = attempt->id.ToString();
    // The body goes along if it is in memory; otherwise the worker reads it from the segment,
    // so that the shard never waits on the disk.
    const bool in_memory = spool_->BodyInMemory(*message);
    const std::optional<spool::BodyLocation> location =
        in_memory ? std::nullopt : spool_->Locate(*message);
    const std::string last = attempt->last_reply.empty()
                                 ? std::string()
                                 : base::StrCat("; last reply: ", attempt->last_reply);
    bool network = false;  // Some recipient goes over SMTP or LMTP.
    for (uint32_t index : attempt->recipients) {
      DeliveryJob::Item item;
      const mail::Recipient& recipient = message->envelope.recipients[index];
      const std::string& address = recipient.address;
      item.address = address;
      item.notify = recipient.notify;
      item.orcpt = recipient.orcpt;
      std::string_view local, domain;
      router.Split(address, local, domain);
      const config::Route* route = router.Find(domain);
      item.resolved = true;
      item.result.outcome = scheduler::Outcome::kDeferred;
      item.route = route == nullptr                               ? "none"
                   : route->type == config::RouteType::kMaildir   ? "maildir"
                   : route->type == config::RouteType::kReject    ? "reject"
                   : route->type == config::RouteType::kSmarthost ? "smarthost"
                                                                  : "lmtp";
      if (attempt->give == scheduler::Attempt::Give::kExpired) {
        item.result.outcome = scheduler::Outcome::kFailed;
        item.result.reply = base::StrCat("550 5.4.7 delivery time expired", last);
      } else if (attempt->give == scheduler::Attempt::Give::kReturned) {
        item.result.outcome = scheduler::Outcome::kFailed;
        item.result.reply = base::StrCat("550 5.0.0 returned to sender by the postmaster", last);
      } else if (!in_memory && !location) {
        item.result.reply = "451 4.3.0 spool: the message's segment is gone";
      } else if (route == nullptr) {
        // The configuration changed since the message was accepted; it may change back.
        item.result.reply = "451 4.4.0 no route for the recipient domain";
      } else if (route->type == config::RouteType::kReject) {
        item.result.outcome = scheduler::Outcome::kFailed;
        item.result.reply = "550 5.7.1 recipient rejected by route";
      } else if (route->type == config::RouteType::kSmarthost ||
                 route->type == config::RouteType::kLmtp) {
        item.resolved = false;
        item.destination = static_cast<int32_t>(router.IndexOf(*route));
        item.notify_text = mail::NotifyText(recipient.notify);  // Passed on to the next hop.
        network = true;
      } else if (routing::MaildirPath maildir = router.MaildirFor(*route, local, domain);
                 maildir.verdict != routing::Verdict::kAccept) {
        // Refused at RCPT already; this covers mail spooled before that check existed.
        item.result.outcome = scheduler::Outcome::kFailed;
        item.result.reply = maildir.verdict == routing::Verdict::kUnsafeDomain
                                ? "550 5.1.2 domain not allowed in a mailbox path"
                                : "550 5.1.3 mailbox name not allowed";
      } else {
        item.resolved = false;
        item.maildir.directory = std::move(maildir.directory);
        item.maildir.root = maildir::RouteRoot(route->path);  // Delivery never leaves it.
        item.maildir.return_path = message->envelope.sender;
        item.maildir.delivered_to = address;
        // Unique across shards (shard in the sequence) and restarts (time and pid).
        item.maildir.unique_name = maildir::UniqueName(
            now_us, static_cast<uint32_t>(getpid()), (uint64_t{options_.index} << 40) | job->token,
            options_.session.hostname);
      }
      job->items.push_back(std::move(item));
    }
    if (in_memory) {
      // The worker runs on another thread: it gets its own copy.
      job->content = base::StrCat(message->trace, message->body);
    } else {
      job->location = location;
    }
    job->sender = message->envelope.sender;
    job->reporting_mta = options_.session.hostname;
    job->received_us = message->received_us;
    job->body_type = message->envelope.body_type;
    job->smtputf8 = message->envelope.smtputf8;
    job->dsn_return = message->envelope.dsn_return;
    job->envid = message->envelope.envid;
    job->report_delay = options_.delay_warning_ms != 0 &&
                        now_us >= message->received_us + options_.delay_warning_ms * 1000 &&
                        !scheduler_->DelayReported(attempt->id);
    attempts_.emplace(job->token, std::move(*attempt));
    ++delivery_attempts_;
    if (network && !in_memory) {
      job->load_only = true;  // The worker reads the body; StartEgress follows.
      SubmitToWorker(std::move(job));
    } else if (network) {
      StartEgress(std::move(job));
    } else {
      SubmitToWorker(std::move(job));
    }
  }
  worker_->Kick();
}

void Shard::SubmitToWorker(std::unique_ptr<DeliveryJob> job) {
  // The rings hold more jobs than attempts_in_flight_max allows (at most 512).
  RELAIS_CHECK(worker_->Submit(job)) << "delivery ring full";
}

void Shard::StartEgress(std::unique_ptr<DeliveryJob> job) {
  // One task per destination and per recipients_per_transaction_max recipients.
  std::vector<std::pair<int32_t, std::vector<uint32_t>>> parts;
  for (uint32_t i = 0; i < job->items.size(); ++i) {
    const DeliveryJob::Item& item = job->items[i];
    if (item.resolved || item.destination < 0) {
      continue;
    }
    auto it = std::find_if(parts.begin(), parts.end(), [&](const auto& p) {
      return p.first == item.destination &&
             p.second.size() < options_.recipients_per_transaction_max;
    });
    if (it == parts.end()) {
      parts.push_back({item.destination, {}});
      it = parts.end() - 1;
    }
    it->second.push_back(i);
  }
  if (parts.empty()) {
    SubmitToWorker(std::move(job));  // The body could not be read: all resolved already.
    return;
  }
  DeliveryJob& j = *job;
  const uint64_t token = j.token;
  EgressJob& entry = egress_jobs_[token];
  entry.job = std::move(job);
  entry.parts_pending = static_cast<uint32_t>(parts.size());
  entry.started_us = clock_.UnixMicros();
  for (auto& [destination, items] : parts) {
    EgressTask task;
    task.id = next_part_++;
    smtp::OutgoingMessage& m = task.message;
    m.sender = j.sender;
    m.content = j.content;
    m.body_type = j.body_type;
    m.smtputf8 = j.smtputf8;
    m.envid = j.envid;  // RFC 3461 parameters go on to a next hop that offers DSN.
    m.ret = j.dsn_return == mail::DsnReturn::kFull      ? "FULL"
            : j.dsn_return == mail::DsnReturn::kHeaders ? "HDRS"
                                                        : "";
    for (uint32_t i : items) {
      m.recipients.push_back({j.items[i].address, j.items[i].notify_text, j.items[i].orcpt});
    }
    egress_parts_.emplace(task.id, EgressPart{token, std::move(items)});
    const std::optional<Destination>& d =
        (*options_.destinations)[static_cast<size_t>(destination)];
    RELAIS_CHECK(d.has_value()) << "a network route without a destination";
    egress_->Submit(*d, std::move(task));
  }
}

void Shard::OnEgressDone(uint64_t id, std::vector<smtp::RecipientReply>&& results,
                         std::string_view next_hop) {
  auto part = egress_parts_.find(id);
  RELAIS_CHECK(part != egress_parts_.end()) << "unknown egress task";
  auto entry = egress_jobs_.find(part->second.token);
  RELAIS_CHECK(entry != egress_jobs_.end());
  DeliveryJob& job = *entry->second.job;
  const uint64_t duration_us =
      std::max<uint64_t>(1, clock_.UnixMicros() - entry->second.started_us);
  RELAIS_CHECK(results.size() == part->second.items.size());
  for (size_t k = 0; k < results.size(); ++k) {
    DeliveryJob::Item& item = job.items[part->second.items[k]];
    item.resolved = true;
    item.result.outcome =
        results[k].status == smtp::RecipientStatus::kDelivered ? scheduler::Outcome::kDelivered
        : results[k].status == smtp::RecipientStatus::kFailed  ? scheduler::Outcome::kFailed
                                                               : scheduler::Outcome::kDeferred;
    item.result.reply = std::move(results[k].reply);
    item.next_hop = next_hop;
    item.duration_us = duration_us;
    item.dsn_passed_on = results[k].dsn_passed_on;
  }
  egress_parts_.erase(part);
  if (--entry->second.parts_pending == 0) {
    // On to the worker: Maildir recipients, the bounce and the log lines.
    SubmitToWorker(std::move(entry->second.job));
    egress_jobs_.erase(entry);
  }
}

// A bounce, spooled like any message; once durable it is queued for delivery. Deletes itself.
class BounceCompletion final : public spool::AppendCompletion {
 public:
  BounceCompletion(scheduler::Scheduler& scheduler, uint32_t shard, std::string original)
      : scheduler_(scheduler), shard_(shard), original_(std::move(original)) {}
  void OnAppendDone(spool::AppendOutcome outcome, const mail::MessageId& id) override {
    if (outcome == spool::AppendOutcome::kDurable) {
      scheduler_.Enqueue(id);
      log::Emit(log::Level::kInfo, static_cast<int>(shard_), "bounce_queued",
                {{"id", id.ToString()}, {"original", original_}});
    } else {
      // The failed outcomes went in the same batch and are lost with it: after a restart the
      // message is tried again, fails again and bounces then.
      log::Emit(log::Level::kError, static_cast<int>(shard_), "bounce_not_stored",
                {{"original", original_}});
    }
    delete this;
  }

 private:
  scheduler::Scheduler& scheduler_;
  const uint32_t shard_;
  const std::string original_;
};

void Shard::OnDeliveriesDone() {
  while (auto done = worker_->TakeDone()) {
    if (done->loaded != nullptr) {
      StartEgress(std::move(done->loaded));  // Its body is in memory now.
      continue;
    }
    auto it = attempts_.find(done->token);
    RELAIS_CHECK(it != attempts_.end()) << "unknown delivery token";
    if (done->delay_reported) {
      scheduler_->MarkDelayReported(it->second.id);
    }
    metrics_.maildir_mailboxes_recreated.Add(done->mailboxes_recreated);
    metrics_.maildir_directories_forgotten.Add(done->directories_forgotten);
    if (!done->bounce.empty() && !QueueBounce(it->second.id, std::move(done->bounce))) {
      // Without a bounce a failure would go unreported: keep those recipients for later.
      for (scheduler::RecipientResult& r : done->results) {
        if (r.outcome == scheduler::Outcome::kFailed) {
          r.outcome = scheduler::Outcome::kDeferred;
          r.reply = base::StrCat("451 4.3.1 bounce could not be queued; was: ", r.reply);
        }
      }
    }
    const spool::StoredMessage* message = spool_->Find(it->second.id);
    const uint64_t now_us = clock_.UnixMicros();
    for (size_t i = 0; i < done->results.size(); ++i) {
      const auto outcome = static_cast<size_t>(done->results[i].outcome);
      metrics_.attempts[RouteIndex(done->routes[i])][outcome].Add();
      if (done->results[i].outcome == scheduler::Outcome::kDelivered && message != nullptr &&
          now_us > message->received_us) {
        metrics_.time_to_delivered.ObserveMicros(now_us - message->received_us);
      }
    }
    scheduler_->Finish(it->second, done->results);
    attempts_.erase(it);
  }
}

bool Shard::QueueBounce(const mail::MessageId& original, std::string&& report) {
  const spool::StoredMessage* message = spool_->Find(original);
  RELAIS_CHECK(message != nullptr);
  const std::string& sender = message->envelope.sender;
  std::string_view local, domain;
  options_.router->Split(sender, local, domain);
  if (options_.router->Check(local, domain) != routing::Verdict::kAccept) {
    // Nowhere to deliver it (the sender's domain has no usable route): say so and go on,
    // rather than keep a failed message forever.
    log::Emit(log::Level::kWarning, static_cast<int>(options_.index), "bounce_undeliverable",
              {{"original", original.ToString()}, {"sender", sender}});
    return true;
  }
  mail::Envelope envelope;  // From <>, so that a bounce never bounces (RFC 5321 6.1).
  envelope.recipients.push_back({sender});
  envelope.helo = options_.session.hostname;
  // The report returns the original's content and, for an SMTPUTF8 message, is UTF-8 itself
  // (RFC 6533): it travels as the original did.
  envelope.body_type = message->envelope.body_type;
  envelope.smtputf8 = message->envelope.smtputf8;
  auto* done = new BounceCompletion(*scheduler_, options_.index, original.ToString());
  // Staged before the failed outcomes that Finish records next: both go in one group commit.
  if (spool_->Append(spool_->NewMessageId(), std::move(envelope), "", std::move(report), *done) !=
      spool::AppendStatus::kStaged) {
    delete done;
    return false;
  }
  metrics_.bounces.Add();
  return true;
}

void Shard::PublishMetrics() {
  ingress_->PublishMetrics();
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

}  // namespace relais::relaisd
