// The Delivery unit a shard composes, driven with a fake clock, the simulated disk, a fake
// worker (runs the blocking part when the test says so) and fake outbound pools.
#include "queue/delivery/delivery.h"

#include <gtest/gtest.h>

#include <deque>

#include "queue/delivery/blocking.h"
#include "tests/sim/sim_io.h"

namespace relais::delivery {
namespace {

struct Acks final : spool::AppendCompletion {
  void OnAppendDone(spool::AppendOutcome, const mail::MessageId&) override {}
};

class FakeWorker final : public BlockingWork {
 public:
  void Submit(std::unique_ptr<Job> job) override {
    ++submitted;
    jobs.push_back(std::move(job));
  }
  std::deque<std::unique_ptr<Job>> jobs;
  int submitted = 0;
};

class FakeOutbound final : public Outbound {
 public:
  struct Sent {
    int32_t destination;
    uint64_t id;
    std::string content;
    std::vector<std::string> recipients;
  };
  void Submit(int32_t destination, uint64_t task_id, smtp::OutgoingMessage message) override {
    Sent s{destination, task_id, std::string(message.content), {}};
    for (const auto& r : message.recipients) {
      s.recipients.emplace_back(r.address);
    }
    sent.push_back(std::move(s));
  }
  std::vector<Sent> sent;
};

smtp::RecipientReply Reply(smtp::RecipientStatus status, uint16_t code, std::string enhanced,
                           std::string text) {
  smtp::RecipientReply r;
  r.status = status;
  r.code = code;
  r.reply = base::StrCat(code, " ", enhanced, " ", text);
  r.enhanced = std::move(enhanced);
  return r;
}

class DeliveryTest : public testing::Test {
 protected:
  DeliveryTest()
      : io_(11),
        router_({{"smart.example", config::RouteType::kSmarthost, "", {"h:25"}, ""},
                 {"local.example", config::RouteType::kMaildir, "/mail", {}, ""}},
                "local.example"),
        deliverer_(io_) {}

  void Open(uint64_t body_memory_bytes_max) {
    ASSERT_TRUE(io_.MakeDir(io::kWorkingDirectory, "/mail").ok());
    ASSERT_TRUE(io_.MakeDir(io::kWorkingDirectory, "/spool").ok());
    spool::SpoolOptions o;
    o.path = "/spool";
    o.body_memory_bytes_max = body_memory_bytes_max;
    auto s = spool::Spool::Open(o, io_, clock_);
    ASSERT_TRUE(s.ok()) << s.status();
    spool_ = std::move(*s);
    ASSERT_TRUE(spool_->Recover().ok());
    scheduler::SchedulerOptions so;
    so.jitter_percent = 0;
    scheduler_ = std::make_unique<scheduler::Scheduler>(so, *spool_, clock_, random_);
    DeliveryOptions d;
    d.plan.hostname = "mx.example.net";
    d.report_boundary = [] { return std::string("0123456789abcdef"); };
    d.log_channel = false;
    d.classifier = classifier_.get();
    DeliveryMetrics m{&attempts_, &bounces_, &recreated_, &forgotten_, &time_to_delivered_};
    m.bounce_classes = &bounce_classes_;
    delivery_ =
        std::make_unique<Delivery>(d, *scheduler_, *spool_, router_, clock_, worker_, outbound_, m);
  }

  mail::MessageId Accept(std::vector<std::string> recipients) {
    mail::Envelope e;
    e.sender = "alice@local.example";
    for (std::string& r : recipients) {
      e.recipients.push_back({std::move(r)});
    }
    const mail::MessageId id = spool_->NewMessageId();
    EXPECT_EQ(
        spool_->Append(id, std::move(e), "Received: sim\r\n", "Subject: s\r\n\r\nbody\r\n", acks_),
        spool::AppendStatus::kStaged);
    Commit();
    scheduler_->Enqueue(id);
    return id;
  }

  void Commit() {
    spool_->Flush();
    while (io_.RunCompletions() > 0) {
    }
  }

  // The worker thread's turn: every job it holds, then the shard takes the results.
  void RunWorker() {
    while (!worker_.jobs.empty()) {
      std::unique_ptr<Job> job = std::move(worker_.jobs.front());
      worker_.jobs.pop_front();
      std::string lines;
      delivery_->OnWorkerDone(RunBlocking(
          std::move(job), deliverer_, io_, clock_, 0, [] { return "seed"; }, lines,
          classifier_.get()));
      worker_log_ += lines;
    }
  }

  uint64_t Attempts(Route route, Outcome outcome) {
    return attempts_[static_cast<size_t>(route)][static_cast<size_t>(outcome)].value();
  }

  sim::SimIo io_;
  base::FakeClock clock_;
  base::Random random_{1};
  routing::Router router_;
  maildir::Deliverer deliverer_;
  std::unique_ptr<spool::Spool> spool_;
  std::unique_ptr<scheduler::Scheduler> scheduler_;
  FakeWorker worker_;
  FakeOutbound outbound_;
  std::array<std::array<metrics::Counter, kOutcomeNames.size()>, kRouteNames.size()> attempts_;
  metrics::Counter bounces_, recreated_, forgotten_;
  metrics::Histogram time_to_delivered_{metrics::kDelayBoundsUs};
  std::array<metrics::Counter, kBounceClassNames.size()> bounce_classes_;
  std::unique_ptr<BounceClassifier> classifier_ = *BounceClassifier::Create("");
  std::unique_ptr<Delivery> delivery_;
  Acks acks_;
  std::string worker_log_;
};

TEST_F(DeliveryTest, ASmarthostMessageInMemoryNeverLeavesTheShard) {
  Open(1 << 20);
  const auto id = Accept({"a@smart.example", "b@smart.example"});
  delivery_->Tick();
  EXPECT_EQ(worker_.submitted, 0);
  ASSERT_EQ(outbound_.sent.size(), 1u);
  EXPECT_EQ(outbound_.sent[0].destination, 0);
  EXPECT_EQ(outbound_.sent[0].recipients,
            (std::vector<std::string>{"a@smart.example", "b@smart.example"}));
  EXPECT_FALSE(delivery_->idle());
  clock_.AdvanceMs(3);
  delivery_->OnOutboundDone(outbound_.sent[0].id,
                            {Reply(smtp::RecipientStatus::kDelivered, 250, "2.0.0", "ok"),
                             Reply(smtp::RecipientStatus::kDeferred, 451, "4.7.1", "greylisted")},
                            "192.0.2.1:25");
  EXPECT_EQ(worker_.submitted, 0);  // Finished here: report policy and log lines on the shard.
  EXPECT_TRUE(delivery_->idle());
  EXPECT_EQ(Attempts(Route::kSmarthost, Outcome::kDelivered), 1u);
  EXPECT_EQ(Attempts(Route::kSmarthost, Outcome::kDeferred), 1u);
  const std::string log = delivery_->TakeLog();
  EXPECT_NE(log.find("\"reply\":\"451 4.7.1 greylisted\""), std::string::npos) << log;
  EXPECT_NE(log.find("\"next_hop\":\"192.0.2.1:25\""), std::string::npos);
  EXPECT_NE(log.find("\"duration_us\":3000"), std::string::npos) << log;
  Commit();
  const scheduler::QueueEntry* entry = scheduler_->Entry(id);
  ASSERT_NE(entry, nullptr);
  EXPECT_EQ(entry->last_reply, "451 4.7.1 greylisted");
  EXPECT_EQ(delivery_->attempts_started(), 1u);
}

TEST_F(DeliveryTest, ABodyOnDiskCrossesToTheWorkerOnceThenGoesOutFromTheShard) {
  Open(0);  // No body in memory.
  Accept({"a@smart.example", "bob@local.example"});
  clock_.AdvanceMs(1);  // Reception to delivery: 1 ms.
  delivery_->Tick();
  EXPECT_EQ(worker_.submitted, 1);
  EXPECT_TRUE(outbound_.sent.empty());
  RunWorker();  // Reads the body, delivers bob's copy, hands the job back.
  ASSERT_EQ(outbound_.sent.size(), 1u);
  EXPECT_EQ(outbound_.sent[0].content, "Received: sim\r\nSubject: s\r\n\r\nbody\r\n");
  delivery_->OnOutboundDone(outbound_.sent[0].id,
                            {Reply(smtp::RecipientStatus::kDelivered, 250, "2.0.0", "ok")}, "h");
  EXPECT_EQ(worker_.submitted, 1);  // Never back to the worker.
  EXPECT_TRUE(delivery_->idle());
  EXPECT_EQ(Attempts(Route::kMaildir, Outcome::kDelivered), 1u);
  EXPECT_EQ(Attempts(Route::kSmarthost, Outcome::kDelivered), 1u);
  EXPECT_EQ(time_to_delivered_.count(), 2u);
  Commit();
  EXPECT_EQ(spool_->message_count(), 0u);  // Every recipient final: retired.
}

TEST_F(DeliveryTest, APermanentFailureSpoolsAReportFromTheNullSender) {
  Open(1 << 20);
  const auto id = Accept({"a@smart.example"});
  delivery_->Tick();
  ASSERT_EQ(outbound_.sent.size(), 1u);
  delivery_->OnOutboundDone(outbound_.sent[0].id,
                            {Reply(smtp::RecipientStatus::kFailed, 550, "5.1.1", "no such user")},
                            "h");
  EXPECT_EQ(bounces_.value(), 1u);
  Commit();
  EXPECT_EQ(spool_->Find(id), nullptr);  // The failure is final.
  ASSERT_EQ(spool_->message_count(), 1u);
  spool_->ForEach([&](const spool::StoredMessage& m) {
    EXPECT_EQ(m.envelope.sender, "");
    ASSERT_EQ(m.envelope.recipients.size(), 1u);
    EXPECT_EQ(m.envelope.recipients[0].address, "alice@local.example");
    auto body = spool_->ReadBody(m);
    ASSERT_TRUE(body.ok());
    EXPECT_NE(body->find("Status: 5.1.1\r\nDiagnostic-Code: smtp; 550 5.1.1 no such user"),
              std::string::npos);
  });
}

// Every recipient not delivered is classified once, where the job ends: its log line, the
// relais_delivery_bounces_total{class} counters and its report say the same class.
TEST_F(DeliveryTest, BounceClassesGoToTheLogTheCountersAndTheReport) {
  Open(1 << 20);
  Accept({"a@smart.example", "b@smart.example", "c@smart.example"});
  delivery_->Tick();
  ASSERT_EQ(outbound_.sent.size(), 1u);
  delivery_->OnOutboundDone(outbound_.sent[0].id,
                            {Reply(smtp::RecipientStatus::kDelivered, 250, "2.0.0", "ok"),
                             Reply(smtp::RecipientStatus::kFailed, 550, "5.1.1",
                                   "The email account that you tried to reach does not exist."),
                             Reply(smtp::RecipientStatus::kDeferred, 421, "4.7.0",
                                   "Client host [192.0.2.1] blocked using zen.spamhaus.org")},
                            "h");
  const auto count = [&](BounceClass c) { return bounce_classes_[static_cast<size_t>(c)].value(); };
  EXPECT_EQ(count(BounceClass::kBadMailbox), 1u);
  EXPECT_EQ(count(BounceClass::kSpamRelated), 1u);
  EXPECT_EQ(count(BounceClass::kNone), 0u);  // Deliveries are not bounces.
  EXPECT_EQ(count(BounceClass::kOther), 0u);
  const std::string log = delivery_->TakeLog();
  EXPECT_NE(
      log.find("\"recipient\":\"a@smart.example\",\"route\":\"smarthost\",\"next_hop\":\"h\","
               "\"outcome\":\"delivered\",\"reply\":\"250 2.0.0 ok\",\"bounce_class\":\"none\""),
      std::string::npos)
      << log;
  EXPECT_NE(log.find("\"outcome\":\"failed\""), std::string::npos);
  EXPECT_NE(log.find("\"bounce_class\":\"bad-mailbox\""), std::string::npos) << log;
  EXPECT_NE(log.find("\"bounce_class\":\"spam-related\""), std::string::npos) << log;
  EXPECT_EQ(bounces_.value(), 1u);
  Commit();
  spool_->ForEach([&](const spool::StoredMessage& m) {
    if (!m.envelope.sender.empty()) {
      return;  // The original (c is deferred).
    }
    auto body = spool_->ReadBody(m);
    ASSERT_TRUE(body.ok());
    EXPECT_NE(body->find("Final-Recipient: rfc822; b@smart.example\r\n"), std::string::npos);
    EXPECT_NE(body->find("X-Relais-Bounce-Class: bad-mailbox\r\n"), std::string::npos) << *body;
    EXPECT_EQ(body->find("spam-related"), std::string::npos);  // No delay report was due.
  });
}

TEST_F(DeliveryTest, AnExpiredMessageFailsWithTheTableTextWithoutATransport) {
  Open(1 << 20);
  Accept({"a@smart.example"});
  clock_.AdvanceMs(6ull * 24 * 3600 * 1000);  // Past the 5-day lifetime.
  delivery_->Tick();
  EXPECT_TRUE(outbound_.sent.empty());
  EXPECT_EQ(worker_.submitted, 0);
  EXPECT_EQ(Attempts(Route::kSmarthost, Outcome::kFailed), 1u);
  EXPECT_EQ(bounces_.value(), 1u);
  const std::string log = delivery_->TakeLog();
  EXPECT_NE(log.find("550 5.4.7 delivery time expired"), std::string::npos);
  EXPECT_NE(log.find("\"bounce_class\":\"message-expired\""), std::string::npos) << log;
  EXPECT_EQ(bounce_classes_[static_cast<size_t>(BounceClass::kMessageExpired)].value(), 1u);
  Commit();  // The report's batch completes (its completion frees itself).
  EXPECT_EQ(spool_->message_count(), 1u);  // Only the report is left.
}

TEST_F(DeliveryTest, StoppedStartsNothingButFinishesWhatIsInFlight) {
  Open(1 << 20);
  Accept({"a@smart.example"});
  delivery_->Tick();
  Accept({"b@smart.example"});
  delivery_->Stop();
  delivery_->Tick();
  ASSERT_EQ(outbound_.sent.size(), 1u);
  EXPECT_FALSE(delivery_->idle());
  delivery_->OnOutboundDone(outbound_.sent[0].id, {ToReply(Make(Reason::kStopping))}, "");
  EXPECT_TRUE(delivery_->idle());
  EXPECT_EQ(Attempts(Route::kSmarthost, Outcome::kDeferred), 1u);
}

}  // namespace
}  // namespace relais::delivery
