// The worker's part of a job (blocking.h) and the end of a job (report.h), over the simulated
// disk of tests/sim and a fake clock.
#include "queue/delivery/blocking.h"

#include <gtest/gtest.h>

#include "queue/delivery/planner.h"
#include "queue/delivery/report.h"
#include "tests/sim/sim_io.h"

namespace relais::delivery {
namespace {

struct Acks final : spool::AppendCompletion {
  int durable = 0;
  void OnAppendDone(spool::AppendOutcome outcome, const mail::MessageId&) override {
    durable += outcome == spool::AppendOutcome::kDurable;
  }
};

class BlockingTest : public testing::Test {
 protected:
  BlockingTest()
      : io_(7),
        router_({{"smart.example", config::RouteType::kSmarthost, "", {"h:25"}, ""},
                 {"local.example", config::RouteType::kMaildir, "/mail", {}, ""},
                 {"reject.example", config::RouteType::kReject, "", {}, ""}},
                "local.example"),
        deliverer_(io_) {}

  void SetUp() override {
    ASSERT_TRUE(io_.MakeDir(io::kWorkingDirectory, "/mail").ok());
    ASSERT_TRUE(io_.MakeDir(io::kWorkingDirectory, "/spool").ok());
    spool::SpoolOptions o;
    o.path = "/spool";
    o.body_memory_bytes_max = 0;  // Every body is read back from its segment.
    auto s = spool::Spool::Open(o, io_, clock_);
    ASSERT_TRUE(s.ok()) << s.status();
    spool_ = std::move(*s);
    ASSERT_TRUE(spool_->Recover().ok());
  }

  // A durable message to `recipients` and its job, planned as the shard does.
  std::unique_ptr<Job> Stored(std::vector<std::string> recipients, uint8_t notify = 0) {
    mail::Envelope e;
    e.sender = "alice@local.example";
    for (std::string& r : recipients) {
      e.recipients.push_back({std::move(r)});
      e.recipients.back().notify = notify;
    }
    const mail::MessageId id = spool_->NewMessageId();
    EXPECT_EQ(
        spool_->Append(id, std::move(e), "Received: sim\r\n", "Subject: s\r\n\r\nbody\r\n", acks_),
        spool::AppendStatus::kStaged);
    spool_->Flush();
    while (io_.RunCompletions() > 0) {
    }
    const spool::StoredMessage* m = spool_->Find(id);
    scheduler::Attempt a;
    a.id = id;
    for (uint32_t i = 0; i < m->envelope.recipients.size(); ++i) {
      a.recipients.push_back(i);
    }
    PlanOptions o;
    o.hostname = "mx.example.net";
    return Plan(a, *m, {spool_->BodyInMemory(*m), spool_->Locate(*m)}, false, router_, o, 1,
                clock_.UnixMicros());
  }

  std::unique_ptr<JobDone> Run(std::unique_ptr<Job> job) {
    return RunBlocking(
        std::move(job), deliverer_, io_, clock_, 0, [] { return "seed"; }, log_);
  }

  sim::SimIo io_;
  base::FakeClock clock_;
  routing::Router router_;
  maildir::Deliverer deliverer_;
  std::unique_ptr<spool::Spool> spool_;
  Acks acks_;
  std::string log_;
};

TEST_F(BlockingTest, ReadsTheBodyDeliversToMaildirAndFinishesHere) {
  auto job = Stored({"bob@local.example", "x@reject.example"});
  ASSERT_TRUE(job->location.has_value());
  const auto done = Run(std::move(job));
  ASSERT_EQ(done->unfinished, nullptr);
  ASSERT_EQ(done->results.size(), 2u);
  EXPECT_EQ(done->results[0].outcome, Outcome::kDelivered);
  EXPECT_TRUE(done->results[0].Text().starts_with("250 2.0.0 delivered to maildir as "));
  EXPECT_EQ(done->routes[0], Route::kMaildir);
  EXPECT_EQ(done->routes[1], Route::kReject);
  auto files = io_.ListDir("/mail/local.example/bob/new");
  ASSERT_TRUE(files.ok());
  EXPECT_EQ(files->size(), 1u);
  // One delivery_attempt line per recipient, and a report for the rejected one.
  EXPECT_NE(log_.find("\"event\":\"delivery_attempt\""), std::string::npos);
  EXPECT_NE(log_.find("\"route\":\"reject\""), std::string::npos);
  EXPECT_NE(done->bounce.find("Status: 5.7.1\r\n"), std::string::npos);
  EXPECT_NE(done->bounce.find("Subject: s\r\n"), std::string::npos);  // The body was read.
}

TEST_F(BlockingTest, NetworkRecipientsComeBackWithTheBodyInMemory) {
  auto job = Stored({"a@smart.example", "bob@local.example"});
  const auto done = Run(std::move(job));
  ASSERT_NE(done->unfinished, nullptr);
  const Job& back = *done->unfinished;
  EXPECT_FALSE(back.location.has_value());
  EXPECT_EQ(back.content, "Received: sim\r\nSubject: s\r\n\r\nbody\r\n");
  EXPECT_TRUE(back.items[0].pending_network());
  EXPECT_EQ(back.items[1].result.outcome, Outcome::kDelivered);  // Maildir went first.
  EXPECT_GT(back.items[1].duration_us, 0u);
  EXPECT_EQ(NextStep(back), Step::kNetwork);
  EXPECT_EQ(log_.find("delivery_attempt"), std::string::npos);  // Logged when it finishes.
}

TEST_F(BlockingTest, AnUnreadableBodyDefersEverythingAndReportsNothing) {
  auto job = Stored({"a@smart.example", "x@reject.example"});
  job->location->record_offset += 1;  // The record's checksum no longer matches.
  const auto done = Run(std::move(job));
  ASSERT_EQ(done->unfinished, nullptr);
  EXPECT_EQ(done->results[0].outcome, Outcome::kDeferred);
  EXPECT_TRUE(done->results[0].Text().starts_with("451 4.3.0 spool: ")) << done->results[0].Text();
  // The rejected recipient's failure would need a report returning the message: it waits.
  EXPECT_EQ(done->results[1].outcome, Outcome::kDeferred);
  EXPECT_NE(done->results[1].Text().find("; was: 550 5.7.1 recipient rejected by route"),
            std::string::npos);
  EXPECT_TRUE(done->bounce.empty());
}

TEST_F(BlockingTest, AMaildirErrorKeepsItsPathsOutOfTheReply) {
  // A file where the domain's directory should be: temporary, an operator can fix it.
  auto file = io_.Open("/mail/local.example", io::OpenMode::kCreateExclusive);
  ASSERT_TRUE(file.ok());
  io_.Close(*file);
  const auto done = Run(Stored({"bob@local.example"}));
  EXPECT_EQ(done->results[0].Text(), "451 4.3.0 maildir: the mailbox cannot be written now");
  EXPECT_NE(log_.find("\"event\":\"maildir_error\""), std::string::npos);
  EXPECT_NE(log_.find("local.example"), std::string::npos);
  EXPECT_EQ(done->results[0].Text().find("/mail"), std::string::npos);
  EXPECT_TRUE(done->bounce.empty());  // A deferral is not reported (no NOTIFY=DELAY).
}

// RFC 3461: successes only when asked, "relayed" past a smarthost without DSN, none when the
// next hop took the duty over; delays once the warning is due.
TEST(ReportTest, NotifyDecidesWhatIsReported) {
  Job job;
  job.token = 4;
  job.message_id = "M1";
  job.sender = "alice@sender.example";
  job.reporting_mta = "mx.example.net";
  job.content = "Subject: s\r\n\r\nbody\r\n";
  auto item = [](std::string address, Route route, Status status, uint8_t notify) {
    Item i;
    i.decided = true;
    i.address = std::move(address);
    i.route = route;
    i.result = std::move(status);
    i.notify = notify;
    return i;
  };
  const Status ok{Outcome::kDelivered, 250, "2.0.0", "ok"};
  job.items = {
      item("a@x", Route::kSmarthost, ok, mail::kNotifySuccess),
      item("b@x", Route::kLmtp, ok, mail::kNotifySuccess), item("c@x", Route::kSmarthost, ok, 0),
      item("d@x", Route::kSmarthost, Make(Reason::kNoNextHop, "smarthost"), mail::kNotifyDelay)};
  job.items[2].dsn_passed_on = true;
  std::string log;
  auto done = Finish(
      job, 0, 1'000'000, [] { return "seed"; }, log);
  EXPECT_NE(done->bounce.find("Final-Recipient: rfc822; a@x\r\nAction: relayed\r\n"),
            std::string::npos);
  EXPECT_NE(done->bounce.find("Final-Recipient: rfc822; b@x\r\nAction: delivered\r\n"),
            std::string::npos);
  EXPECT_EQ(done->bounce.find("c@x"), std::string::npos);
  EXPECT_EQ(done->bounce.find("d@x"), std::string::npos);  // No delay report yet.
  EXPECT_FALSE(done->delay_reported);
  job.report_delay = true;
  done = Finish(
      job, 0, 1'000'000, [] { return "seed"; }, log);
  EXPECT_NE(done->bounce.find("Action: delayed\r\nStatus: 4.4.1\r\n"), std::string::npos);
  EXPECT_TRUE(done->delay_reported);
  job.sender.clear();  // RFC 5321 6.1: nothing to <>.
  EXPECT_TRUE(Finish(
                  job, 0, 1'000'000, [] { return "seed"; }, log)
                  ->bounce.empty());
}

// Finish is the one place that classifies: the items, JobDone::classes and the log lines
// agree; without a classifier what is not delivered is "other".
TEST(ReportTest, FinishClassifiesWhatIsNotDelivered) {
  Job job;
  job.message_id = "M2";
  job.content = "Subject: s\r\n\r\nbody\r\n";
  const auto item = [](std::string address, Status status) {
    Item i;
    i.decided = true;
    i.address = std::move(address);
    i.route = Route::kMx;
    i.result = std::move(status);
    return i;
  };
  job.items = {item("a@x", Status{Outcome::kDelivered, 250, "2.0.0", "ok"}),
               item("b@x", Status{Outcome::kFailed, 552, "5.2.2", "Mailbox full"}),
               item("c@x", Make(Reason::kNullMx, "x"))};
  auto classifier = BounceClassifier::Create("");
  ASSERT_TRUE(classifier.ok());
  std::string log;
  auto done = Finish(
      job, 0, 1'000'000, [] { return "seed"; }, log, classifier->get());
  EXPECT_EQ(done->classes, (std::vector<BounceClass>{BounceClass::kNone, BounceClass::kQuotaIssues,
                                                     BounceClass::kBadDomain}));
  EXPECT_EQ(job.items[1].bounce_class, BounceClass::kQuotaIssues);
  EXPECT_EQ(job.items[2].bounce_class, BounceClass::kBadDomain);
  EXPECT_NE(log.find("\"bounce_class\":\"quota-issues\""), std::string::npos) << log;
  EXPECT_NE(log.find("\"bounce_class\":\"bad-domain\""), std::string::npos) << log;
  EXPECT_NE(log.find("\"bounce_class\":\"none\""), std::string::npos) << log;
  log.clear();
  done = Finish(
      job, 0, 1'000'000, [] { return "seed"; }, log);
  EXPECT_EQ(done->classes, (std::vector<BounceClass>{BounceClass::kNone, BounceClass::kOther,
                                                     BounceClass::kOther}));
}

}  // namespace
}  // namespace relais::delivery
