// queue/delivery/delivery.cc — see delivery.h.
#include "queue/delivery/delivery.h"

#include <algorithm>

#include "core/base/check.h"
#include "core/base/strings.h"
#include "protocols/dns/answer.h"
#include "queue/delivery/report.h"

namespace relais::delivery {
namespace {

// A report, spooled like any message; once durable it is queued for delivery. Deletes itself.
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

}  // namespace

Delivery::Delivery(DeliveryOptions options, scheduler::Scheduler& scheduler, spool::Spool& spool,
                   const routing::Router& router, const base::Clock& clock, BlockingWork& worker,
                   Outbound& outbound, const DeliveryMetrics& metrics)
    : options_(std::move(options)),
      scheduler_(scheduler),
      spool_(spool),
      router_(router),
      clock_(clock),
      worker_(worker),
      outbound_(outbound),
      metrics_(metrics) {
  RELAIS_CHECK(metrics_.attempts != nullptr && metrics_.bounces != nullptr &&
               metrics_.mailboxes_recreated != nullptr &&
               metrics_.directories_forgotten != nullptr && metrics_.time_to_delivered != nullptr &&
               options_.report_boundary);
  RELAIS_CHECK((options_.next_hops.resolver == nullptr) ==
               (options_.next_hops.destinations == nullptr))
      << "a resolver and its destinations, or neither";
  if (options_.log_channel) {
    log_channel_ = log::OpenChannel(static_cast<int>(options_.plan.shard));
  }
}

Delivery::~Delivery() {
  FlushLog();
  if (log_channel_ != nullptr) {
    log::Close(log_channel_);
  }
}

void Delivery::Tick() {
  if (stopping_) {
    return;  // Attempts in flight finish; new ones wait for the next start.
  }
  const uint64_t now_us = clock_.UnixMicros();
  while (auto attempt = scheduler_.Next()) {
    const spool::StoredMessage* message = spool_.Find(attempt->id);
    RELAIS_CHECK(message != nullptr) << "scheduler handed out a retired message";
    // The body goes along if it is in memory; otherwise the worker reads it from the segment,
    // so that the shard never waits on the disk.
    BodySource body;
    body.in_memory = spool_.BodyInMemory(*message);
    if (!body.in_memory) {
      body.location = spool_.Locate(*message);
    }
    std::unique_ptr<Job> job = Plan(*attempt, *message, body, scheduler_.DelayReported(attempt->id),
                                    router_, options_.plan, next_token_++, now_us);
    if (attempt->destination != 0) {
      shaped_[job->token].admitted = attempt->destination;  // The scheduler's gate admitted it.
    }
    attempts_.emplace(job->token, std::move(*attempt));
    ++attempts_started_;
    Resolve(std::move(job));
  }
}

void Delivery::Stop() {
  stopping_ = true;
  // Jobs waiting on the resolver go on now with their network recipients deferred (their
  // Maildir recipients and report as usual); the answers that come for them later find
  // nothing (OnResolved).
  std::vector<std::unique_ptr<Job>> waiting;
  for (auto& [token, entry] : resolving_) {
    waiting.push_back(std::move(entry.job));
  }
  resolving_.clear();
  for (std::unique_ptr<Job>& job : waiting) {
    for (Item& item : job->items) {
      if (item.pending_network()) {
        item.decided = true;
        item.result = Make(Reason::kStopping);
      }
    }
    Dispatch(std::move(job));
  }
}

const Destination& Delivery::Template(int32_t route, Route type) const {
  static const Destination* const kMxNone = new Destination{.route = Route::kMx};
  static const Destination* const kNone = new Destination();
  const auto* routes = options_.next_hops.routes;
  if (routes == nullptr || route < 0 || static_cast<size_t>(route) >= routes->size() ||
      !(*routes)[static_cast<size_t>(route)].has_value()) {
    return type == Route::kMx ? *kMxNone : *kNone;  // No TLS, no AUTH, no source pool.
  }
  return *(*routes)[static_cast<size_t>(route)];
}

void Delivery::Resolve(std::unique_ptr<Job> job) {
  NextHopResolver* resolver = options_.next_hops.resolver;
  if (resolver == nullptr || !job->any_pending_network()) {
    Dispatch(std::move(job));
    return;
  }
  const uint64_t token = job->token;
  Resolving& entry = resolving_[token];
  entry.job = std::move(job);
  auto add = [&entry](Lookup lookup) {
    for (const Lookup& l : entry.lookups) {
      if (l.mx == lookup.mx && l.name == lookup.name && l.route == lookup.route &&
          l.host == lookup.host) {
        return;
      }
    }
    entry.lookups.push_back(std::move(lookup));
  };
  for (const Item& item : entry.job->items) {
    if (!item.pending_network()) {
      continue;
    }
    if (item.route == Route::kMx) {
      std::string_view local, domain;
      router_.Split(item.address, local, domain);
      add(Lookup{true, dns::QuestionKey(domain), item.destination, 0, std::nullopt});
      continue;
    }
    const std::vector<HostPort>& names = Template(item.destination, item.route).names;
    for (uint32_t h = 0; h < names.size(); ++h) {
      if (names[h].path.empty()) {  // A unix socket needs no resolution.
        add(Lookup{false, names[h].host, item.destination, h, std::nullopt});
      }
    }
  }
  std::weak_ptr<int> alive = alive_;
  for (size_t k = 0; k < entry.lookups.size(); ++k) {
    Lookup& lookup = entry.lookups[k];
    NextHopResolver::Callback done = [this, alive, token, k](const Resolution& resolution) {
      if (!alive.expired()) {
        OnResolved(token, k, resolution);
      }
    };
    std::optional<Resolution> now = lookup.mx ? resolver->ResolveMx(lookup.name, std::move(done))
                                              : resolver->ResolveHost(lookup.name, std::move(done));
    if (now.has_value()) {
      lookup.answer = std::move(*now);
    } else {
      ++entry.outstanding;
    }
  }
  if (entry.outstanding == 0) {
    std::unique_ptr<Job> ready = std::move(entry.job);
    std::vector<Lookup> lookups = std::move(entry.lookups);
    resolving_.erase(token);
    Resolved(std::move(ready), lookups);
  }
}

void Delivery::OnResolved(uint64_t token, size_t lookup, const Resolution& resolution) {
  auto it = resolving_.find(token);
  if (it == resolving_.end()) {
    return;  // Finished meanwhile (Stop).
  }
  Resolving& entry = it->second;
  RELAIS_CHECK(lookup < entry.lookups.size() && !entry.lookups[lookup].answer.has_value() &&
               entry.outstanding > 0);
  entry.lookups[lookup].answer = resolution;
  if (--entry.outstanding == 0) {
    std::unique_ptr<Job> ready = std::move(entry.job);
    std::vector<Lookup> lookups = std::move(entry.lookups);
    resolving_.erase(it);
    Resolved(std::move(ready), lookups);
  }
}

void Delivery::Resolved(std::unique_ptr<Job> job, std::vector<Lookup>& lookups) {
  Destinations& destinations = *options_.next_hops.destinations;
  const uint32_t hosts_max = options_.next_hops.hosts_per_attempt_max;
  // One outcome per mx domain or route: its DestinationId, or the status that decides its
  // recipients.
  struct Next {
    uint32_t dest = 0;
    Status failure;
  };
  std::unordered_map<std::string, Next> decided;
  const uint64_t token = job->token;
  Shaped& shaped = shaped_[token];
  shaped.dests.assign(job->items.size(), 0);
  auto hold = [&](uint32_t id) {
    const Destination* d = book_.Find(id);
    RELAIS_CHECK(d != nullptr);
    for (const Destination* held : shaped.held) {
      if (held == d) {
        return;
      }
    }
    book_.Acquire(*d);
    shaped.held.push_back(d);
  };
  for (size_t i = 0; i < job->items.size(); ++i) {
    Item& item = job->items[i];
    if (!item.pending_network()) {
      continue;
    }
    std::string_view local, raw_domain;
    router_.Split(item.address, local, raw_domain);
    const std::string domain = dns::QuestionKey(raw_domain);
    const bool mx = item.route == Route::kMx;
    const std::string key =
        mx ? base::StrCat("mx:", domain) : base::StrCat("route:", item.destination);
    auto found = decided.find(key);
    if (found == decided.end()) {
      Next next;
      const Destination& route = Template(item.destination, item.route);
      if (mx) {
        const Resolution* resolution = nullptr;
        for (const Lookup& l : lookups) {
          if (l.mx && l.name == domain) {
            resolution = &*l.answer;
          }
        }
        RELAIS_CHECK(resolution != nullptr);
        if (!resolution->ok()) {
          next.failure = resolution->failure;
        } else {
          next.dest = destinations.Intern(resolution->key, domain, resolution->hosts,
                                          resolution->hosts.front().name);
          if (next.dest != 0) {
            book_.Update(next.dest, resolution->key, route,
                         MxEndpoints(*resolution, options_.next_hops.mx_port), hosts_max);
          }
        }
      } else {
        std::vector<Endpoint> endpoints;
        const Status* failure = nullptr;
        for (uint32_t h = 0; h < route.names.size(); ++h) {
          const Resolution* resolution = nullptr;
          for (const Lookup& l : lookups) {
            if (!l.mx && l.route == item.destination && l.host == h) {
              resolution = &*l.answer;
            }
          }
          if (resolution != nullptr && !resolution->ok() && failure == nullptr) {
            failure = &resolution->failure;
          }
          for (Endpoint& e : HostEndpoints(route.names[h], resolution, h)) {
            endpoints.push_back(std::move(e));
          }
        }
        if (endpoints.empty()) {
          next.failure = failure != nullptr
                             ? *failure
                             : Make(Reason::kHostUnresolved,
                                    base::StrCat("route ", item.destination, " names no host"));
        } else {
          const HostPort& first = route.names.front();
          next.dest =
              destinations.Intern(key, domain, {}, first.path.empty() ? first.host : first.path);
          if (next.dest != 0) {
            // Smarthost and lmtp hosts are all tried (hosts_per_attempt_max is the mx one).
            book_.Update(next.dest, key, route, std::move(endpoints), 0);
          }
        }
      }
      if (next.dest == 0 && next.failure.code == 0) {
        // The shard's destination table is full: the mail waits, as for a DNS failure.
        next.failure = Make(Reason::kDnsTemporary,
                            base::StrCat(domain, " (too many destinations on this shard now)"));
      }
      found = decided.emplace(key, std::move(next)).first;
    }
    if (found->second.dest == 0) {
      item.decided = true;
      item.result = found->second.failure;
      continue;
    }
    item.dest = found->second.dest;
    shaped.dests[i] = item.dest;
    hold(item.dest);
  }
  uint32_t first = 0;
  bool any_decided = false;
  for (const Item& item : job->items) {
    if (first == 0 && item.pending_network()) {
      first = item.dest;
    }
    any_decided = any_decided || item.decided;
  }
  auto attempt = attempts_.find(token);
  RELAIS_CHECK(attempt != attempts_.end());
  if (first != 0) {
    scheduler_.SetDestination(attempt->second.id, first);
    // A first attempt waited in the queue of the unknown destination: its gate is asked now.
    // Mail with a recipient decided or for Maildir goes on either way (riding along).
    if (attempt->second.destination == 0 && !any_decided && !job->any_pending_maildir()) {
      if (!destinations.Admit(first)) {
        scheduler_.Requeue(attempt->second, first);
        for (const Destination* d : shaped.held) {
          book_.Drop(*d);
        }
        shaped_.erase(token);
        attempts_.erase(attempt);
        --attempts_started_;
        return;  // No body read, no attempt counted, nothing logged.
      }
      shaped.admitted = first;
    }
  }
  Dispatch(std::move(job));
}

void Delivery::Ended(const JobDone& done) {
  auto it = shaped_.find(done.token);
  if (it == shaped_.end()) {
    return;
  }
  Shaped& shaped = it->second;
  Destinations* destinations = options_.next_hops.destinations;
  if (destinations != nullptr) {
    for (size_t i = 0; i < shaped.dests.size() && i < done.results.size(); ++i) {
      if (shaped.dests[i] != 0) {
        destinations->Count(shaped.dests[i], done.results[i].outcome, done.results[i].Text());
      }
    }
    if (shaped.admitted != 0) {
      destinations->Release(shaped.admitted);
    }
  }
  for (const Destination* d : shaped.held) {
    book_.Drop(*d);
  }
  shaped_.erase(it);
}

void Delivery::Upkeep(std::vector<DestinationId>* forgotten) {
  Destinations* destinations = options_.next_hops.destinations;
  if (destinations == nullptr) {
    return;
  }
  for (const DestinationId id : destinations->TakeWoken()) {
    scheduler_.Wake(id);
  }
  for (const DestinationId id : destinations->TakeBounced()) {
    scheduler_.ReturnDestination(id);
  }
  const uint64_t now_ms = clock_.MonotonicMs();
  if (now_ms < next_upkeep_ms_) {
    return;
  }
  next_upkeep_ms_ = now_ms + 1000;
  std::vector<uint32_t> seen;
  scheduler_.ForEachDestination([&](uint32_t id, uint64_t waiting) {
    if (id != 0 && destinations->Known(id)) {
      destinations->SetQueued(id, waiting);
      seen.push_back(id);
    }
  });
  std::sort(seen.begin(), seen.end());
  for (const uint32_t id : queued_set_) {
    if (!std::binary_search(seen.begin(), seen.end(), id) && destinations->Known(id)) {
      destinations->SetQueued(id, 0);
    }
  }
  queued_set_ = std::move(seen);
  destinations->Sweep(forgotten);
  // Forgotten destinations that were parked are woken (their mail asks again, admitted as
  // unknown, re-resolved and re-interned).
  for (const DestinationId id : destinations->TakeWoken()) {
    scheduler_.Wake(id);
  }
}

void Delivery::ForgetDestinations(const std::function<void(const Destination&)>& forget) {
  Destinations* destinations = options_.next_hops.destinations;
  const uint64_t now_ms = clock_.MonotonicMs();
  if (destinations == nullptr || now_ms < next_forget_ms_) {
    return;
  }
  next_forget_ms_ = now_ms + 1000;
  book_.Sweep([destinations](uint32_t id) { return destinations->Known(id); }, forget);
}

void Delivery::Dispatch(std::unique_ptr<Job> job) {
  switch (NextStep(*job)) {
    case Step::kWorker:
      worker_.Submit(std::move(job));
      return;
    case Step::kNetwork:
      SendToNetwork(std::move(job));
      return;
    case Step::kFinish:
      FinishHere(*job);
      return;
  }
}

void Delivery::SendToNetwork(std::unique_ptr<Job> job) {
  Destinations* destinations = options_.next_hops.destinations;
  std::vector<Part> parts = SplitByDestination(*job, [&](uint32_t dest) {
    return dest != 0 && destinations != nullptr
               ? destinations->limits(dest).recipients_per_transaction_max
               : options_.recipients_per_transaction_max;
  });
  RELAIS_CHECK(!parts.empty());
  const Shaped* shaped = nullptr;
  if (auto it = shaped_.find(job->token); it != shaped_.end()) {
    shaped = &it->second;
  }
  const uint64_t token = job->token;
  NetworkJob& entry = network_jobs_[token];
  entry.job = std::move(job);
  entry.parts_pending = static_cast<uint32_t>(parts.size());
  entry.started_us = clock_.UnixMicros();
  for (Part& part : parts) {
    const uint64_t id = next_task_++;
    smtp::OutgoingMessage message = Outgoing(*entry.job, part);
    // The object the job holds for its DestinationId; without a resolver, the route template.
    const Destination* destination = nullptr;
    if (part.dest != 0) {
      RELAIS_CHECK(shaped != nullptr);
      for (const Destination* d : shaped->held) {
        if (d->id == part.dest) {
          destination = d;
        }
      }
    } else {
      destination = &Template(part.destination, Route::kSmarthost);
    }
    RELAIS_CHECK(destination != nullptr) << "a network recipient without a destination";
    tasks_.emplace(id, Task{token, std::move(part)});
    outbound_.Submit(*destination, id, std::move(message));
  }
}

void Delivery::OnOutboundDone(uint64_t task_id, std::vector<smtp::RecipientReply>&& replies,
                              std::string_view next_hop) {
  auto task = tasks_.find(task_id);
  RELAIS_CHECK(task != tasks_.end()) << "unknown outbound task";
  auto entry = network_jobs_.find(task->second.token);
  RELAIS_CHECK(entry != network_jobs_.end());
  const uint64_t duration_us =
      std::max<uint64_t>(1, clock_.UnixMicros() - entry->second.started_us);
  ApplyReplies(*entry->second.job, task->second.part, replies, next_hop, duration_us);
  tasks_.erase(task);
  if (--entry->second.parts_pending == 0) {
    // Every recipient is decided: the report and the log lines are made here, on the shard.
    std::unique_ptr<Job> job = std::move(entry->second.job);
    network_jobs_.erase(entry);
    FinishHere(*job);
  }
}

void Delivery::OnWorkerDone(std::unique_ptr<JobDone> done) {
  metrics_.mailboxes_recreated->Add(done->mailboxes_recreated);
  metrics_.directories_forgotten->Add(done->directories_forgotten);
  if (done->unfinished != nullptr) {
    SendToNetwork(std::move(done->unfinished));  // Its body is in memory now.
    return;
  }
  Complete(*done);
  Ended(*done);
}

void Delivery::FinishHere(Job& job) {
  std::unique_ptr<JobDone> done =
      Finish(job, static_cast<int>(options_.plan.shard), clock_.UnixMicros(),
             options_.report_boundary, log_lines_, options_.classifier);
  Complete(*done);
  Ended(*done);
}

void Delivery::Complete(JobDone& done) {
  auto it = attempts_.find(done.token);
  RELAIS_CHECK(it != attempts_.end()) << "unknown delivery token";
  if (done.delay_reported) {
    scheduler_.MarkDelayReported(it->second.id);
  }
  if (!done.bounce.empty() && !QueueBounce(it->second.id, std::move(done.bounce))) {
    // Without a report a failure would go unreported: keep those recipients for later.
    for (Status& r : done.results) {
      if (r.outcome == Outcome::kFailed) {
        r = Make(Reason::kBounceNotQueued, r.Text());
      }
    }
  }
  const spool::StoredMessage* message = spool_.Find(it->second.id);
  const uint64_t now_us = clock_.UnixMicros();
  for (size_t i = 0; i < done.results.size(); ++i) {
    const auto outcome = static_cast<size_t>(done.results[i].outcome);
    (*metrics_.attempts)[static_cast<size_t>(done.routes[i])][outcome].Add();
    if (done.results[i].outcome == Outcome::kDelivered && message != nullptr &&
        now_us > message->received_us) {
      metrics_.time_to_delivered->ObserveMicros(now_us - message->received_us);
    }
  }
  if (metrics_.bounce_classes != nullptr) {
    for (const BounceClass c : done.classes) {  // Failed and deferred recipients.
      if (c != BounceClass::kNone) {
        (*metrics_.bounce_classes)[static_cast<size_t>(c)].Add();
      }
    }
  }
  scheduler_.Finish(it->second, done.results);
  attempts_.erase(it);
}

bool Delivery::QueueBounce(const mail::MessageId& original, std::string&& report) {
  const spool::StoredMessage* message = spool_.Find(original);
  RELAIS_CHECK(message != nullptr);
  const std::string& sender = message->envelope.sender;
  const int shard = static_cast<int>(options_.plan.shard);
  std::string_view local, domain;
  router_.Split(sender, local, domain);
  if (router_.Check(local, domain) != routing::Verdict::kAccept) {
    // Nowhere to deliver it (the sender's domain has no usable route): say so and go on,
    // rather than keep a failed message forever.
    log::Emit(log::Level::kWarning, shard, "bounce_undeliverable",
              {{"original", original.ToString()}, {"sender", sender}});
    return true;
  }
  mail::Envelope envelope;  // From <>, so that a report never bounces (RFC 5321 6.1).
  envelope.recipients.push_back({sender});
  envelope.helo = options_.plan.hostname;
  // The report returns the original's content and, for an SMTPUTF8 message, is UTF-8 itself
  // (RFC 6533): it travels as the original did.
  envelope.body_type = message->envelope.body_type;
  envelope.smtputf8 = message->envelope.smtputf8;
  auto* done = new BounceCompletion(scheduler_, options_.plan.shard, original.ToString());
  // Staged before the failed outcomes that Finish records next: both go in one group commit.
  if (spool_.Append(spool_.NewMessageId(), std::move(envelope), "", std::move(report), *done) !=
      spool::AppendStatus::kStaged) {
    delete done;
    return false;
  }
  metrics_.bounces->Add();
  return true;
}

void Delivery::FlushLog() {
  if (log_channel_ != nullptr && !log_lines_.empty()) {
    log::Append(log_channel_, log_lines_);
    log_lines_.clear();
  }
}

bool Delivery::idle() const {
  if (!attempts_.empty()) {
    return false;
  }
  return log_channel_ == nullptr || (log_lines_.empty() && log::Drained(log_channel_));
}

}  // namespace relais::delivery
