#include "queue/delivery/planner.h"

#include <gtest/gtest.h>

#include "queue/delivery/outbound.h"

namespace relais::delivery {
namespace {

routing::Router TestRouter() {
  return routing::Router({{"smart.example", config::RouteType::kSmarthost, "", {"h:25"}, ""},
                          {"lmtp.example", config::RouteType::kLmtp, "", {}, "/run/lmtp"},
                          {"local.example", config::RouteType::kMaildir, "/mail", {}, ""},
                          {"reject.example", config::RouteType::kReject, "", {}, ""}},
                         "local.example");
}

spool::StoredMessage Message(std::vector<std::string> recipients) {
  spool::StoredMessage m;
  m.id = mail::MessageId::Make(1, 0, 2);
  m.received_us = 1'000'000;
  m.envelope.sender = "alice@sender.example";
  for (std::string& r : recipients) {
    m.envelope.recipients.push_back({std::move(r)});
  }
  m.trace = "Received: x\r\n";
  m.body = "Subject: hi\r\n\r\nbody\r\n";
  m.body_in_memory = true;
  return m;
}

scheduler::Attempt AttemptOf(const spool::StoredMessage& m) {
  scheduler::Attempt a;
  a.id = m.id;
  for (uint32_t i = 0; i < m.envelope.recipients.size(); ++i) {
    a.recipients.push_back(i);
  }
  return a;
}

PlanOptions Options() {
  PlanOptions o;
  o.shard = 3;
  o.pid = 77;
  o.hostname = "mx.example.net";
  return o;
}

TEST(PlannerTest, DecidesWhatNeedsNoTransportAndRoutesTheRest) {
  const routing::Router router = TestRouter();
  const spool::StoredMessage m = Message({"a@smart.example", "b@lmtp.example", "c@local.example",
                                          "d@reject.example", "e@nowhere.example"});
  const auto job = Plan(AttemptOf(m), m, {true, std::nullopt}, false, router, Options(), 9, 5);
  ASSERT_EQ(job->items.size(), 5u);
  EXPECT_TRUE(job->items[0].pending_network());
  EXPECT_EQ(job->items[0].route, Route::kSmarthost);
  EXPECT_EQ(job->items[0].destination, 0);
  EXPECT_TRUE(job->items[1].pending_network());
  EXPECT_EQ(job->items[1].route, Route::kLmtp);
  EXPECT_EQ(job->items[1].destination, 1);
  EXPECT_TRUE(job->items[2].pending_maildir());
  EXPECT_EQ(job->items[2].maildir.directory, "/mail/local.example/c");
  EXPECT_EQ(job->items[2].maildir.root, "/mail");
  EXPECT_EQ(job->items[2].maildir.unique_name,
            maildir::UniqueName(5, 77, (3ull << 40) | 9, "mx.example.net"));
  EXPECT_TRUE(job->items[3].decided);
  EXPECT_EQ(job->items[3].result.Text(), "550 5.7.1 recipient rejected by route");
  EXPECT_EQ(job->items[3].route, Route::kReject);
  EXPECT_TRUE(job->items[4].decided);
  EXPECT_EQ(job->items[4].result.Text(), "451 4.4.0 no route for the recipient domain");
  EXPECT_EQ(job->items[4].route, Route::kNone);
  EXPECT_EQ(job->content, "Received: x\r\nSubject: hi\r\n\r\nbody\r\n");
  EXPECT_EQ(job->sender, "alice@sender.example");
  EXPECT_EQ(job->reporting_mta, "mx.example.net");
  EXPECT_EQ(NextStep(*job), Step::kWorker);  // The Maildir recipient goes first.
}

TEST(PlannerTest, ExpiredAndReturnedAttemptsFailEveryRecipientWithTheLastReply) {
  const routing::Router router = TestRouter();
  const spool::StoredMessage m = Message({"a@smart.example"});
  scheduler::Attempt a = AttemptOf(m);
  a.give = scheduler::Attempt::Give::kExpired;
  a.last_reply = "451 4.4.1 busy";
  auto job = Plan(a, m, {true, std::nullopt}, false, router, Options(), 1, 5);
  EXPECT_EQ(job->items[0].result.Text(),
            "550 5.4.7 delivery time expired; last reply: 451 4.4.1 busy");
  EXPECT_EQ(job->items[0].result.outcome, Outcome::kFailed);
  EXPECT_EQ(NextStep(*job), Step::kFinish);  // Body in memory: nothing to read, nothing to send.
  a.give = scheduler::Attempt::Give::kReturned;
  a.last_reply.clear();
  job = Plan(a, m, {true, std::nullopt}, false, router, Options(), 1, 5);
  EXPECT_EQ(job->items[0].result.Text(), "550 5.0.0 returned to sender by the postmaster");
}

TEST(PlannerTest, ABodyOnDiskGoesToTheWorkerOnceAndAGoneSegmentDefers) {
  const routing::Router router = TestRouter();
  spool::StoredMessage m = Message({"a@smart.example"});
  m.body_in_memory = false;
  m.trace.clear();
  m.body.clear();
  spool::BodyLocation where;
  where.record_offset = 42;
  auto job = Plan(AttemptOf(m), m, {false, where}, false, router, Options(), 1, 5);
  EXPECT_TRUE(job->content.empty());
  ASSERT_TRUE(job->location.has_value());
  EXPECT_EQ(NextStep(*job), Step::kWorker);
  // Once the worker has read it, the network recipients go out from the shard.
  job->location.reset();
  job->content = "x";
  EXPECT_EQ(NextStep(*job), Step::kNetwork);

  job = Plan(AttemptOf(m), m, {false, std::nullopt}, false, router, Options(), 1, 5);
  EXPECT_EQ(job->items[0].result.Text(), "451 4.3.0 spool: the message's segment is gone");
  EXPECT_EQ(NextStep(*job), Step::kFinish);
}

TEST(PlannerTest, ASmarthostMessageInMemoryGoesStraightToTheNetwork) {
  const routing::Router router = TestRouter();
  const spool::StoredMessage m = Message({"a@smart.example", "b@smart.example"});
  const auto job = Plan(AttemptOf(m), m, {true, std::nullopt}, false, router, Options(), 1, 5);
  EXPECT_EQ(NextStep(*job), Step::kNetwork);
}

TEST(PlannerTest, DelayReportOnlyPastTheWarningAndOnlyOnce) {
  const routing::Router router = TestRouter();
  const spool::StoredMessage m = Message({"a@smart.example"});
  PlanOptions o = Options();
  o.delay_warning_ms = 1000;
  EXPECT_FALSE(Plan(AttemptOf(m), m, {true, {}}, false, router, o, 1, 1'999'999)->report_delay);
  EXPECT_TRUE(Plan(AttemptOf(m), m, {true, {}}, false, router, o, 1, 2'000'000)->report_delay);
  EXPECT_FALSE(Plan(AttemptOf(m), m, {true, {}}, true, router, o, 1, 2'000'000)->report_delay);
}

TEST(OutboundPartsTest, OneTaskPerDestinationAndPerRecipientsMax) {
  const routing::Router router = TestRouter();
  const spool::StoredMessage m = Message({"a@smart.example", "b@lmtp.example", "c@smart.example",
                                          "d@smart.example", "e@local.example"});
  auto job = Plan(AttemptOf(m), m, {true, std::nullopt}, false, router, Options(), 1, 5);
  const std::vector<Part> parts = SplitByDestination(*job, 2);
  ASSERT_EQ(parts.size(), 3u);
  EXPECT_EQ(parts[0].destination, 0);
  EXPECT_EQ(parts[0].items, (std::vector<uint32_t>{0, 2}));
  EXPECT_EQ(parts[1].destination, 1);
  EXPECT_EQ(parts[1].items, (std::vector<uint32_t>{1}));
  EXPECT_EQ(parts[2].items, (std::vector<uint32_t>{3}));
  const smtp::OutgoingMessage out = Outgoing(*job, parts[0]);
  EXPECT_EQ(out.sender, "alice@sender.example");
  ASSERT_EQ(out.recipients.size(), 2u);
  EXPECT_EQ(out.recipients[1].address, "c@smart.example");
  EXPECT_EQ(out.content.data(), job->content.data());  // A view, not a copy.

  smtp::RecipientReply ok;
  ok.status = smtp::RecipientStatus::kDelivered;
  ok.code = 250;
  ok.enhanced = "2.0.0";
  ok.reply = "250 2.0.0 queued (in reply to end of data at h:25)";
  ok.dsn_passed_on = true;
  ApplyReplies(*job, parts[0], {ok, ok}, "h:25", 12);
  EXPECT_TRUE(job->items[2].decided);
  EXPECT_EQ(job->items[2].result.detail, "queued (in reply to end of data at h:25)");
  EXPECT_EQ(job->items[2].next_hop, "h:25");
  EXPECT_EQ(job->items[2].duration_us, 12u);
  EXPECT_TRUE(job->items[2].dsn_passed_on);
  EXPECT_FALSE(job->items[3].decided);
}

TEST(PlannerTest, AnMxRouteIsANetworkRouteLikeASmarthost) {
  const routing::Router router({{"local.example", config::RouteType::kMaildir, "/mail", {}, ""},
                                {"*", config::RouteType::kMx, "", {}, ""}},
                               "local.example");
  spool::StoredMessage m = Message({"a@example.org", "b@local.example"});
  m.envelope.recipients[0].notify = mail::kNotifyFailure;
  const auto job = Plan(AttemptOf(m), m, {true, std::nullopt}, false, router, Options(), 1, 5);
  EXPECT_TRUE(job->items[0].pending_network());
  EXPECT_EQ(job->items[0].route, Route::kMx);
  EXPECT_EQ(job->items[0].destination, 1);
  EXPECT_EQ(job->items[0].dest, 0u);  // Resolved by the Delivery unit, not here.
  EXPECT_EQ(job->items[0].notify_text, "FAILURE");
  EXPECT_TRUE(job->items[1].pending_maildir());
}

TEST(OutboundPartsTest, GroupsByDestinationIdWithEachDestinationsLimit) {
  const routing::Router router({{"*", config::RouteType::kMx, "", {}, ""}}, "local.example");
  const spool::StoredMessage m = Message(
      {"a@one.example", "b@two.example", "c@one.example", "d@two.example", "e@one.example"});
  auto job = Plan(AttemptOf(m), m, {true, std::nullopt}, false, router, Options(), 1, 5);
  // one.example and two.example resolved to destinations 7 and 9 (one route, two MX sets).
  for (Item& item : job->items) {
    item.dest = item.address.ends_with("one.example") ? 7 : 9;
  }
  const std::vector<Part> parts =
      SplitByDestination(*job, [](uint32_t dest) { return dest == 7 ? 2u : 100u; });
  ASSERT_EQ(parts.size(), 3u);
  EXPECT_EQ(parts[0].dest, 7u);
  EXPECT_EQ(parts[0].items, (std::vector<uint32_t>{0, 2}));
  EXPECT_EQ(parts[1].dest, 9u);
  EXPECT_EQ(parts[1].items, (std::vector<uint32_t>{1, 3}));
  EXPECT_EQ(parts[2].dest, 7u);
  EXPECT_EQ(parts[2].items, (std::vector<uint32_t>{4}));
  EXPECT_EQ(parts[2].destination, 0);  // The route index stays with the part.
}

}  // namespace
}  // namespace relais::delivery
