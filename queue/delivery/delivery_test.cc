// The Delivery unit a shard composes, driven with a fake clock, the simulated disk, a fake
// worker (runs the blocking part when the test says so), fake outbound pools, and a fake DNS
// under the real NextHopResolver and Destinations.
#include "queue/delivery/delivery.h"

#include <gtest/gtest.h>

#include <deque>
#include <map>

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
    const Destination* destination;
    uint64_t id;
    std::string content;
    std::vector<std::string> recipients;
  };
  void Submit(const Destination& destination, uint64_t task_id,
              smtp::OutgoingMessage message) override {
    Sent s{&destination, task_id, std::string(message.content), {}};
    for (const auto& r : message.recipients) {
      s.recipients.emplace_back(r.address);
    }
    sent.push_back(std::move(s));
  }
  std::vector<Sent> sent;
};

// Answers from `zone` (kTemporary for a question not in it): at once from its "cache" when
// `cached`, else when the test calls Answer().
class FakeDns final : public Dns {
 public:
  std::optional<dns::Answer> FromCache(const dns::Question& question) override {
    if (!cached) {
      return std::nullopt;
    }
    ++asked;
    return Lookup(question);
  }
  void Resolve(const dns::Question& question,
               std::function<void(const dns::Answer&)> done) override {
    ++asked;
    pending.emplace_back(question, std::move(done));
  }
  // Answers what is pending, and what those answers make the resolver ask next.
  void Answer() {
    while (!pending.empty()) {
      auto [question, done] = std::move(pending.front());
      pending.pop_front();
      done(Lookup(question));
    }
  }
  dns::Answer Lookup(const dns::Question& question) const {
    auto it = zone.find({dns::QuestionKey(question.name), question.type});
    if (it != zone.end()) {
      return it->second;
    }
    dns::Answer none;
    none.status = default_status;
    return none;
  }
  void Mx(const std::string& domain, std::vector<dns::MxRecord> records) {
    dns::Answer a;
    a.status = dns::AnswerStatus::kOk;
    a.ttl_seconds = 300;
    a.mx = std::move(records);
    zone[{domain, dns::RecordType::kMx}] = a;
  }
  void A(const std::string& host, const std::string& address) {
    dns::Answer a;
    a.status = dns::AnswerStatus::kOk;
    a.ttl_seconds = 300;
    a.addresses.push_back(*mail::IpAddress::Parse(address));
    zone[{host, dns::RecordType::kA}] = a;
  }
  void Status(const std::string& name, dns::RecordType type, dns::AnswerStatus status) {
    dns::Answer a;
    a.status = status;
    zone[{name, type}] = a;
  }

  bool cached = true;
  dns::AnswerStatus default_status = dns::AnswerStatus::kNoData;
  std::map<std::pair<std::string, dns::RecordType>, dns::Answer> zone;
  std::deque<std::pair<dns::Question, std::function<void(const dns::Answer&)>>> pending;
  int asked = 0;
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
        router_({{"smart.example", config::RouteType::kSmarthost, "", {"smart.relay:25"}, ""},
                 {"local.example", config::RouteType::kMaildir, "/mail", {}, ""},
                 {"*", config::RouteType::kMx, "", {}, ""}},
                "local.example"),
        deliverer_(io_) {
    Destination smarthost;
    smarthost.route = Route::kSmarthost;
    smarthost.names = {{"smart.relay", 25, ""}};
    smarthost.tls.auth_user = "relay-user";
    routes_.emplace_back(std::move(smarthost));
    routes_.emplace_back(std::nullopt);
    Destination mx;
    mx.route = Route::kMx;
    mx.tls.policy = config::RouteTls::kMay;
    routes_.emplace_back(std::move(mx));
    dns_.A("smart.relay", "192.0.2.1");
    dns_.Mx("example.org", {{20, "mx2.example.org"}, {10, "mx1.example.org"}});
    dns_.Mx("example.com", {{10, "mx1.example.org"}, {20, "mx2.example.org"}});
    dns_.A("mx1.example.org", "192.0.2.11");
    dns_.A("mx2.example.org", "192.0.2.12");
    dns_.Mx("null.example", {{0, "."}});
    dns_.Status("nx.example", dns::RecordType::kMx, dns::AnswerStatus::kNxDomain);
    dns_.Status("down.example", dns::RecordType::kMx, dns::AnswerStatus::kTemporary);
  }

  void Open(uint64_t body_memory_bytes_max, ShapingOptions shaping = {}) {
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
    destinations_ = std::make_unique<Destinations>(std::move(shaping), clock_);
    scheduler_->SetGate(destinations_.get());
    resolver_ = std::make_unique<NextHopResolver>(MxOptions{}, dns_, clock_, random_);
    DeliveryOptions d;
    d.next_hops.resolver = resolver_.get();
    d.next_hops.destinations = destinations_.get();
    d.next_hops.routes = &routes_;
    d.next_hops.hosts_per_attempt_max = 3;
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

  // Wakes in the scheduler what Destinations says may take an attempt again.
  void Wake() {
    for (DestinationId id : destinations_->TakeWoken()) {
      scheduler_->Wake(id);
    }
  }

  sim::SimIo io_;
  base::FakeClock clock_;
  base::Random random_{1};
  FakeDns dns_;
  std::vector<std::optional<Destination>> routes_;
  std::unique_ptr<Destinations> destinations_;
  std::unique_ptr<NextHopResolver> resolver_;
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
  EXPECT_EQ(outbound_.sent[0].destination->route, Route::kSmarthost);
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

TEST_F(DeliveryTest, SmarthostNamesAreResolvedOnTheShardIntoOneRouteDestination) {
  Open(1 << 20);
  Accept({"a@smart.example"});
  delivery_->Tick();
  ASSERT_EQ(outbound_.sent.size(), 1u);
  const Destination& d = *outbound_.sent[0].destination;
  ASSERT_EQ(d.endpoints.size(), 1u);
  EXPECT_EQ(d.endpoints[0].name, "192.0.2.1:25");
  EXPECT_EQ(d.endpoints[0].host, "smart.relay");  // As written: SNI and the verified name.
  EXPECT_EQ(d.endpoints[0].hop, "smart.relay:25");
  EXPECT_EQ(d.tls.auth_user, "relay-user");  // From the route template.
  const auto view = destinations_->Find("route:0");
  ASSERT_TRUE(view.has_value());
  EXPECT_EQ(d.id, view->id);
}

TEST_F(DeliveryTest, AnMxRecipientGoesToItsMxHostsInPreferenceOrder) {
  Open(1 << 20);
  Accept({"bob@Example.ORG"});
  delivery_->Tick();
  EXPECT_EQ(worker_.submitted, 0);
  ASSERT_EQ(outbound_.sent.size(), 1u);
  const Destination& d = *outbound_.sent[0].destination;
  EXPECT_EQ(d.route, Route::kMx);
  EXPECT_EQ(d.tls.policy, config::RouteTls::kMay);
  EXPECT_EQ(d.hosts_per_attempt_max, 3u);
  ASSERT_EQ(d.endpoints.size(), 2u);
  EXPECT_EQ(d.endpoints[0].name, "192.0.2.11:25");
  EXPECT_EQ(d.endpoints[0].host, "mx1.example.org");
  EXPECT_EQ(d.endpoints[0].hop, "mx1.example.org:25");
  EXPECT_EQ(d.endpoints[0].host_index, 0u);
  EXPECT_EQ(d.endpoints[1].name, "192.0.2.12:25");
  EXPECT_EQ(d.endpoints[1].host_index, 1u);
  EXPECT_NE(d.id, 0u);
  EXPECT_EQ(delivery_->book().Find(d.id), &d);
  delivery_->OnOutboundDone(outbound_.sent[0].id,
                            {Reply(smtp::RecipientStatus::kDelivered, 250, "2.0.0", "ok")},
                            "192.0.2.11:25");
  EXPECT_TRUE(delivery_->idle());
  EXPECT_EQ(Attempts(Route::kMx, Outcome::kDelivered), 1u);
  EXPECT_EQ(destinations_->View(d.id)->delivered, 1u);
}

TEST_F(DeliveryTest, ANullMxFailsAtOnceWithAReport) {
  Open(0);  // Body on disk: the worker reads it only for the report.
  Accept({"a@null.example"});
  delivery_->Tick();
  EXPECT_TRUE(outbound_.sent.empty());
  RunWorker();
  EXPECT_TRUE(outbound_.sent.empty());
  EXPECT_EQ(Attempts(Route::kMx, Outcome::kFailed), 1u);
  EXPECT_EQ(bounces_.value(), 1u);
  EXPECT_NE((delivery_->TakeLog() + worker_log_).find("556 5.1.10"), std::string::npos);
  EXPECT_TRUE(delivery_->idle());
  Commit();  // The report's batch completes (its completion frees itself).
  EXPECT_EQ(spool_->message_count(), 1u);  // Only the report is left.
}

TEST_F(DeliveryTest, NxdomainFailsAndATemporaryDnsFailureDefers) {
  Open(1 << 20);
  const auto nx = Accept({"a@nx.example"});
  const auto down = Accept({"b@down.example"});
  delivery_->Tick();
  EXPECT_TRUE(outbound_.sent.empty());
  EXPECT_EQ(Attempts(Route::kMx, Outcome::kFailed), 1u);
  EXPECT_EQ(Attempts(Route::kMx, Outcome::kDeferred), 1u);
  EXPECT_EQ(bounces_.value(), 1u);  // Only for the NXDOMAIN.
  Commit();
  EXPECT_EQ(spool_->Find(nx), nullptr);
  const scheduler::QueueEntry* entry = scheduler_->Entry(down);
  ASSERT_NE(entry, nullptr);
  EXPECT_TRUE(entry->last_reply.starts_with("451 4.4.3")) << entry->last_reply;
  EXPECT_NE(delivery_->TakeLog().find("550 5.1.2"), std::string::npos);
  EXPECT_TRUE(delivery_->idle());
}

TEST_F(DeliveryTest, AJobWaitingOnDnsGoesOnOnceTheAnswerComes) {
  dns_.cached = false;
  Open(1 << 20);
  Accept({"bob@example.org"});
  delivery_->Tick();
  EXPECT_TRUE(outbound_.sent.empty());
  EXPECT_EQ(delivery_->resolving(), 1u);
  EXPECT_FALSE(delivery_->idle());
  dns_.Answer();
  EXPECT_EQ(delivery_->resolving(), 0u);
  ASSERT_EQ(outbound_.sent.size(), 1u);
  EXPECT_EQ(outbound_.sent[0].destination->endpoints.size(), 2u);
  delivery_->OnOutboundDone(outbound_.sent[0].id,
                            {Reply(smtp::RecipientStatus::kDelivered, 250, "2.0.0", "ok")}, "h");
  EXPECT_TRUE(delivery_->idle());
}

TEST_F(DeliveryTest, StopDefersAJobWaitingOnDnsAndItsLateAnswerIsDropped) {
  dns_.cached = false;
  Open(1 << 20);
  const auto id = Accept({"bob@example.org"});
  delivery_->Tick();
  EXPECT_EQ(delivery_->resolving(), 1u);
  delivery_->Stop();
  EXPECT_EQ(delivery_->resolving(), 0u);
  EXPECT_TRUE(delivery_->idle());
  EXPECT_EQ(Attempts(Route::kMx, Outcome::kDeferred), 1u);
  dns_.Answer();  // Finished already: nothing happens twice.
  EXPECT_TRUE(outbound_.sent.empty());
  EXPECT_EQ(Attempts(Route::kMx, Outcome::kDeferred), 1u);
  Commit();
  ASSERT_NE(scheduler_->Entry(id), nullptr);
  EXPECT_TRUE(scheduler_->Entry(id)->last_reply.starts_with("451 4.3.2"));
}

TEST_F(DeliveryTest, TwoDomainsWithTheSameMxHostsShareOneDestination) {
  Open(1 << 20);
  Accept({"a@example.org", "b@example.com"});
  delivery_->Tick();
  ASSERT_EQ(outbound_.sent.size(), 1u);  // One transaction for both.
  EXPECT_EQ(outbound_.sent[0].recipients.size(), 2u);
  EXPECT_EQ(destinations_->size(), 1u);
}

TEST_F(DeliveryTest, RecipientsPerTransactionComeFromTheDestinationsLimits) {
  ShapingOptions shaping;
  ShapingRule rule;
  rule.mx_suffix = ".example.org";
  rule.recipients_per_transaction_max = 1;
  shaping.rules.push_back(rule);
  Open(1 << 20, shaping);
  Accept({"a@example.org", "b@example.org", "c@smart.example", "d@smart.example"});
  delivery_->Tick();
  ASSERT_EQ(outbound_.sent.size(), 3u);  // Two for the MX destination, one for the smarthost.
  EXPECT_EQ(outbound_.sent[0].recipients, std::vector<std::string>{"a@example.org"});
  EXPECT_EQ(outbound_.sent[1].recipients, std::vector<std::string>{"b@example.org"});
  EXPECT_EQ(outbound_.sent[2].recipients,
            (std::vector<std::string>{"c@smart.example", "d@smart.example"}));
}

TEST_F(DeliveryTest, AClosedGateSendsAFirstAttemptBackWithoutReadingTheBody) {
  Open(0);  // A body on disk: reading it would be the worker's job.
  ASSERT_NE(destinations_->Intern("mx1.example.org,mx2.example.org", "example.org", {}, "mx1"), 0u);
  ASSERT_TRUE(destinations_->Suspend("mx1.example.org,mx2.example.org", 60'000, "test"));
  const auto id = Accept({"bob@example.org"});
  delivery_->Tick();
  EXPECT_EQ(worker_.submitted, 0);
  EXPECT_TRUE(outbound_.sent.empty());
  EXPECT_EQ(delivery_->attempts_started(), 0u);
  EXPECT_TRUE(delivery_->idle());
  EXPECT_TRUE(delivery_->TakeLog().empty());
  const scheduler::QueueEntry* entry = scheduler_->Entry(id);
  ASSERT_NE(entry, nullptr);
  EXPECT_EQ(entry->attempts, 0u);
  EXPECT_NE(entry->destination, 0u);
  EXPECT_FALSE(entry->in_flight);
  // The gate opens: the message goes, admitted by the scheduler this time.
  ASSERT_TRUE(destinations_->Resume("mx1.example.org,mx2.example.org"));
  Wake();
  delivery_->Tick();
  EXPECT_EQ(worker_.submitted, 1);
}

TEST_F(DeliveryTest, AnAdmittedAttemptIsReleasedExactlyOnce) {
  Open(1 << 20);
  Accept({"bob@example.org"});
  delivery_->Tick();
  ASSERT_EQ(outbound_.sent.size(), 1u);
  const DestinationId dest = outbound_.sent[0].destination->id;
  EXPECT_EQ(destinations_->View(dest)->in_flight, 1u);  // Admitted here (first attempt).
  delivery_->OnOutboundDone(outbound_.sent[0].id,
                            {Reply(smtp::RecipientStatus::kDeferred, 451, "4.7.1", "later")}, "h");
  EXPECT_EQ(destinations_->View(dest)->in_flight, 0u);
  EXPECT_EQ(destinations_->View(dest)->deferred, 1u);
  Commit();
  clock_.AdvanceMs(3'600'000);  // The retry is due: queued for its destination now.
  Wake();
  delivery_->Tick();
  ASSERT_EQ(outbound_.sent.size(), 2u);
  EXPECT_EQ(destinations_->View(dest)->in_flight, 1u);  // Admitted by the scheduler's gate.
  delivery_->OnOutboundDone(outbound_.sent[1].id,
                            {Reply(smtp::RecipientStatus::kDelivered, 250, "2.0.0", "ok")}, "h");
  EXPECT_EQ(destinations_->View(dest)->in_flight, 0u);
  EXPECT_EQ(destinations_->View(dest)->delivered, 1u);
  EXPECT_TRUE(delivery_->idle());
}

TEST_F(DeliveryTest, ForgottenDestinationsAreHandedToThePoolsOnceNoTaskHoldsThem) {
  ShapingOptions shaping;
  shaping.idle_forget_ms = 1000;
  Open(1 << 20, shaping);
  Accept({"bob@example.org"});
  delivery_->Tick();
  ASSERT_EQ(outbound_.sent.size(), 1u);
  std::vector<const Destination*> forgotten;
  auto forget = [&](const Destination& d) { forgotten.push_back(&d); };
  clock_.AdvanceMs(700'000);
  destinations_->Sweep();
  delivery_->ForgetDestinations(forget);
  EXPECT_TRUE(forgotten.empty());  // In flight.
  delivery_->OnOutboundDone(outbound_.sent[0].id,
                            {Reply(smtp::RecipientStatus::kDelivered, 250, "2.0.0", "ok")}, "h");
  for (int i = 0; i < 20 && forgotten.empty(); ++i) {
    clock_.AdvanceMs(700'000);
    destinations_->Sweep();
    delivery_->ForgetDestinations(forget);
  }
  ASSERT_EQ(forgotten.size(), 1u);
  EXPECT_EQ(forgotten[0], outbound_.sent[0].destination);
  EXPECT_EQ(delivery_->book().size(), 0u);
}

}  // namespace
}  // namespace relais::delivery
