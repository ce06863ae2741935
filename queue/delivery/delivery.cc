// queue/delivery/delivery.cc — see delivery.h.
#include "queue/delivery/delivery.h"

#include <algorithm>

#include "core/base/check.h"
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
    attempts_.emplace(job->token, std::move(*attempt));
    ++attempts_started_;
    Dispatch(std::move(job));
  }
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
  std::vector<Part> parts = SplitByDestination(*job, options_.recipients_per_transaction_max);
  RELAIS_CHECK(!parts.empty());
  const uint64_t token = job->token;
  NetworkJob& entry = network_jobs_[token];
  entry.job = std::move(job);
  entry.parts_pending = static_cast<uint32_t>(parts.size());
  entry.started_us = clock_.UnixMicros();
  for (Part& part : parts) {
    const uint64_t id = next_task_++;
    smtp::OutgoingMessage message = Outgoing(*entry.job, part);
    const int32_t destination = part.destination;
    tasks_.emplace(id, Task{token, std::move(part)});
    outbound_.Submit(destination, id, std::move(message));
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
}

void Delivery::FinishHere(Job& job) {
  std::unique_ptr<JobDone> done =
      Finish(job, static_cast<int>(options_.plan.shard), clock_.UnixMicros(),
             options_.report_boundary, log_lines_, options_.classifier);
  Complete(*done);
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
