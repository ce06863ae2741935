// tools/relaisd/admin_service_test.cc — relaisctl's queries answered over a real spool (in a
// temporary directory, through PosixIo) and its scheduler, with a fake clock; no shard.
#include "tools/relaisd/admin_service.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "core/base/strings.h"
#include "queue/scheduler/queue_on_disk_testing.h"

namespace relais::relaisd {
namespace {

class AdminServiceTest : public scheduler::QueueOnDiskTest {
 protected:
  void SetUp() override {
    QueueOnDiskTest::SetUp();
    if (HasFatalFailure()) {
      return;
    }
    service_ = std::make_unique<AdminService>(2, *spool_, *scheduler_, clock_, [] {
      return ShardCounts{5, 40, 17};
    });
  }
  void TearDown() override {
    service_.reset();
    QueueOnDiskTest::TearDown();
  }

  std::unique_ptr<AdminAnswer> Ask(AdminOp op, std::optional<mail::MessageId> id = {},
                                   std::string domain = {}, std::string state = {}) {
    AdminQuery q;
    q.op = op;
    q.id = id;
    q.domain = std::move(domain);
    q.state = std::move(state);
    q.request = 9;
    return service_->Answer(q);
  }

  std::unique_ptr<AdminService> service_;
};

TEST_F(AdminServiceTest, ListsMessagesWithTheirRecipientsAndFilters) {
  const auto a = Add("a@one.example", {"x@dest.example", "y@other.example"});
  Add("b@two.example", {"z@other.example"});
  auto all = Ask(AdminOp::kList);
  EXPECT_EQ(all->request, 9u);
  ASSERT_EQ(all->messages.size(), 2u);
  auto by_domain = Ask(AdminOp::kList, {}, "dest.example");
  ASSERT_EQ(by_domain->messages.size(), 1u);
  const MessageView& v = by_domain->messages[0];
  EXPECT_EQ(v.id, a.ToString());
  EXPECT_EQ(v.sender, "a@one.example");
  EXPECT_EQ(v.state, "queued");
  ASSERT_EQ(v.recipients.size(), 2u);
  EXPECT_EQ(v.recipients[0].first, "x@dest.example");
  EXPECT_EQ(v.recipients[0].second, "pending");
  EXPECT_TRUE(Ask(AdminOp::kList, {}, {}, "held")->messages.empty());
}

TEST_F(AdminServiceTest, HoldAndReleaseChangeTheStateShown) {
  const auto id = Add("a@one.example", {"x@dest.example"});
  EXPECT_EQ(Ask(AdminOp::kHold, id)->affected, 1u);
  auto held = Ask(AdminOp::kList, {}, {}, "held");
  ASSERT_EQ(held->messages.size(), 1u);
  EXPECT_EQ(held->messages[0].id, id.ToString());
  EXPECT_FALSE(scheduler_->Next().has_value());  // A held message is not attempted.
  EXPECT_EQ(Ask(AdminOp::kRelease, id)->affected, 1u);
  EXPECT_EQ(Ask(AdminOp::kShow, id)->messages.at(0).state, "queued");
  EXPECT_TRUE(scheduler_->Next().has_value());
}

TEST_F(AdminServiceTest, ADeferredMessageShowsItsNextAttemptAndFlushMakesItReady) {
  const auto id = Add("a@one.example", {"x@dest.example"});
  auto attempt = scheduler_->Next();
  ASSERT_TRUE(attempt.has_value());
  EXPECT_EQ(Ask(AdminOp::kShow, id)->messages.at(0).state, "active");
  scheduler_->Finish(*attempt, {{scheduler::Outcome::kDeferred, 451, "4.3.0", "later"}});
  clock_.AdvanceMs(1000);
  const MessageView v = Ask(AdminOp::kShow, id)->messages.at(0);
  EXPECT_EQ(v.state, "deferred");
  EXPECT_EQ(v.attempts, 1u);
  EXPECT_EQ(v.last_reply, "451 4.3.0 later");
  EXPECT_EQ(v.next_attempt_in_ms, static_cast<int64_t>(scheduler_->BackoffMs(1) - 1000));
  EXPECT_EQ(Ask(AdminOp::kFlush, {}, "dest.example")->affected, 1u);
  EXPECT_TRUE(scheduler_->Next().has_value());
}

TEST_F(AdminServiceTest, DeleteFailsThePendingRecipientsWithoutABounce) {
  const auto id = Add("a@one.example", {"x@dest.example", "y@dest.example"});
  auto answer = Ask(AdminOp::kDelete, id);
  EXPECT_EQ(answer->affected, 1u);
  EXPECT_TRUE(answer->error.empty());
  Sync();
  EXPECT_EQ(spool_->Find(id), nullptr);  // Every recipient final: the message is retired.
  EXPECT_EQ(spool_->message_count(), 0u);
  EXPECT_FALSE(scheduler_->Next().has_value());
}

TEST_F(AdminServiceTest, DeleteWaitsWhileTheMessageIsBeingDelivered) {
  const auto id = Add("a@one.example", {"x@dest.example"});
  ASSERT_TRUE(scheduler_->Next().has_value());
  auto answer = Ask(AdminOp::kDelete, id);
  EXPECT_EQ(answer->affected, 0u);
  EXPECT_FALSE(answer->error.empty());
  EXPECT_NE(spool_->Find(id), nullptr);
}

TEST_F(AdminServiceTest, StatusCountsTheQueueAndTheShardsCounts) {
  const auto held = Add("a@one.example", {"x@dest.example"});
  Add("b@two.example", {"y@dest.example"});
  ASSERT_EQ(Ask(AdminOp::kHold, held)->affected, 1u);
  const ShardStatus st = Ask(AdminOp::kStatus)->status;
  EXPECT_EQ(st.shard, 2u);
  EXPECT_EQ(st.connections, 5u);
  EXPECT_EQ(st.accepted, 40u);
  EXPECT_EQ(st.delivery_attempts, 17u);
  EXPECT_EQ(st.messages, 2u);
  EXPECT_EQ(st.held, 1u);
  EXPECT_EQ(st.segments, spool_->segment_count());
  EXPECT_GT(st.spool_bytes, 0u);
}

TEST_F(AdminServiceTest, AnUnknownMessageIsNotFound) {
  const auto unknown = mail::MessageId::Make(2, 99, 99);
  EXPECT_TRUE(Ask(AdminOp::kShow, unknown)->messages.empty());
  EXPECT_EQ(Ask(AdminOp::kDelete, unknown)->affected, 0u);
  EXPECT_EQ(Ask(AdminOp::kHold, unknown)->affected, 0u);
}

// The MX-era views: a shard with destinations (delivery::Destinations, fake clock).
class AdminDestinationsTest : public AdminServiceTest {
 protected:
  void SetUp() override {
    AdminServiceTest::SetUp();
    if (HasFatalFailure()) {
      return;
    }
    destinations_ = std::make_unique<delivery::Destinations>(delivery::ShapingOptions{}, clock_);
    service_ = std::make_unique<AdminService>(
        2, *spool_, *scheduler_, clock_, [] { return ShardCounts{}; }, destinations_.get());
    a_ = destinations_->Intern("mx:mx1.a.example", "a.example", {}, "mx1.a.example");
    b_ = destinations_->Intern("mx:mx.b.example", "b.example", {}, "mx.b.example");
    ASSERT_NE(a_, 0u);
    ASSERT_NE(b_, 0u);
  }
  void TearDown() override {
    service_.reset();
    destinations_.reset();
    AdminServiceTest::TearDown();
  }
  std::unique_ptr<AdminAnswer> AskQuery(AdminQuery q) {
    q.request = 3;
    return service_->Answer(q);
  }
  std::unique_ptr<AdminAnswer> AskLine(std::string_view line) {
    auto q = ParseAdminRequest(line);
    EXPECT_TRUE(q.ok()) << line << ": " << q.status();
    return AskQuery(q.ok() ? *q : AdminQuery{});
  }
  std::vector<std::string> Ids(const AdminAnswer& answer) {
    std::vector<std::string> ids;
    for (const MessageView& m : answer.messages) {
      ids.push_back(m.id);
    }
    std::sort(ids.begin(), ids.end());
    return ids;
  }
  static std::vector<std::string> Sorted(std::vector<mail::MessageId> ids) {
    std::vector<std::string> out;
    for (const auto& id : ids) {
      out.push_back(id.ToString());
    }
    std::sort(out.begin(), out.end());
    return out;
  }

  std::unique_ptr<delivery::Destinations> destinations_;
  delivery::DestinationId a_ = 0;
  delivery::DestinationId b_ = 0;
};

TEST_F(AdminDestinationsTest, SummaryNamesTheDestinationsAndBucketsByAge) {
  const auto old = Add("s@x.example", {"r@a.example"});
  clock_.AdvanceMs(30 * 60'000);
  const auto a1 = Add("s@x.example", {"r@a.example"});
  const auto b1 = Add("s@x.example", {"r@b.example"});
  Add("s@x.example", {"r@c.example"});  // Not routed yet.
  scheduler_->SetDestination(old, a_);
  scheduler_->SetDestination(a1, a_);
  scheduler_->SetDestination(b1, b_);
  clock_.AdvanceMs(2 * 60'000);  // Ages: 32, 2, 2, 2 minutes.
  auto answer = AskLine("queue summary");
  ASSERT_EQ(answer->summary.size(), 3u);
  const SummaryRow& a = answer->summary[0];
  EXPECT_EQ(a.key, "mx:mx1.a.example");
  EXPECT_EQ(a.name, "mx1.a.example");
  EXPECT_EQ(a.total, 2u);
  ASSERT_EQ(a.buckets.size(), SummaryBucketBoundsMs().size() + 1);
  EXPECT_EQ(a.buckets[0], 1u);  // Under 5 minutes.
  EXPECT_EQ(a.buckets[3], 1u);  // 20 to 40 minutes.
  bool unrouted = false;
  for (const SummaryRow& r : answer->summary) {
    unrouted |= r.key.empty() && r.name == "(not yet routed)" && r.total == 1;
  }
  EXPECT_TRUE(unrouted);
  // Formatted as relaisctl prints it (one shard here).
  AdminQuery q;
  q.op = AdminOp::kSummary;
  std::vector<AdminAnswer> answers;
  answers.push_back(std::move(*answer));
  EXPECT_NE(FormatAdminResponse(q, answers).find("mx1.a.example"), std::string::npos);
}

TEST_F(AdminDestinationsTest, ListFiltersByDestinationAgeSenderAndState) {
  const auto old = Add("s@x.example", {"r@a.example"});
  clock_.AdvanceMs(3 * 3'600'000);
  const auto a1 = Add("t@y.example", {"r@a.example"});
  const auto b1 = Add("t@y.example", {"r@b.example"});
  const auto unrouted = Add("t@y.example", {"r@c.example"});
  scheduler_->SetDestination(old, a_);
  scheduler_->SetDestination(a1, a_);
  scheduler_->SetDestination(b1, b_);
  EXPECT_EQ(Ids(*AskLine("queue ls destination=mx1.a.example")), Sorted({old, a1}));
  EXPECT_EQ(Ids(*AskLine("queue ls destination=mx:mx.b.example")), Sorted({b1}));
  EXPECT_EQ(Ids(*AskLine("queue ls destination=unrouted")), Sorted({unrouted}));
  EXPECT_TRUE(AskLine("queue ls destination=nowhere.example")->messages.empty());
  EXPECT_EQ(Ids(*AskLine("queue ls older-than=2h")), Sorted({old}));
  EXPECT_EQ(Ids(*AskLine("queue ls older-than=2h sender=t@y.example")), Sorted({}));
  EXPECT_EQ(Ids(*AskLine("queue ls sender=T@Y.example domain=a.example")), Sorted({a1}));
  // States: everything is ready; one attempt in flight, then deferred.
  EXPECT_EQ(AskLine("queue ls state=ready")->messages.size(), 4u);
  auto attempt = scheduler_->Next();
  ASSERT_TRUE(attempt.has_value());
  EXPECT_EQ(Ids(*AskLine("queue ls state=in-flight")), Sorted({attempt->id}));
  scheduler_->Finish(*attempt, {{scheduler::Outcome::kDeferred, 451, "4.4.1", "no answer"}});
  auto deferred = AskLine("queue ls state=deferred");
  ASSERT_EQ(deferred->messages.size(), 1u);
  EXPECT_EQ(deferred->messages[0].id, attempt->id.ToString());
  auto shown = AskLine("queue ls destination=mx.b.example json");
  ASSERT_EQ(shown->messages.size(), 1u);
  EXPECT_EQ(shown->messages[0].destination, "mx.b.example");
}

TEST_F(AdminDestinationsTest, DestCommandsListShowSuspendAndResume) {
  scheduler_->SetDestination(Add("s@x.example", {"r@a.example"}), a_);
  scheduler_->SetDestination(Add("s@x.example", {"r@a.example"}), a_);
  auto ls = AskLine("dest ls");
  ASSERT_EQ(ls->destinations.size(), 2u);
  for (const delivery::DestinationView& d : ls->destinations) {
    EXPECT_EQ(d.queued, d.id == a_ ? 2u : 0u) << d.key;  // The scheduler's count.
  }
  auto show = AskLine("dest show mx1.a.example");
  ASSERT_EQ(show->destinations.size(), 1u);
  EXPECT_EQ(show->destinations[0].key, "mx:mx1.a.example");
  EXPECT_TRUE(AskLine("dest show nowhere")->destinations.empty());

  auto suspend = AskLine("dest suspend mx:mx1.a.example for=30m reason=their maintenance");
  EXPECT_EQ(suspend->affected, 1u);
  auto view = destinations_->View(a_);
  ASSERT_TRUE(view.has_value());
  EXPECT_EQ(view->state, delivery::DestinationState::kSuspended);
  EXPECT_EQ(view->reason, "relaisctl: their maintenance");
  EXPECT_EQ(view->suspended_until_ms, clock_.MonotonicMs() + 30 * 60'000);
  EXPECT_FALSE(destinations_->Admit(a_));  // The gate holds its mail now.
  EXPECT_EQ(AskLine("dest suspend nowhere")->affected, 0u);

  EXPECT_EQ(AskLine("dest resume mx1.a.example")->affected, 1u);
  EXPECT_EQ(destinations_->View(a_)->state, delivery::DestinationState::kActive);
  EXPECT_TRUE(destinations_->Admit(a_));

  AdminQuery q;
  q.op = AdminOp::kDestList;
  q.json = true;
  std::vector<AdminAnswer> answers;
  answers.push_back(std::move(*AskLine("dest ls json")));
  EXPECT_NE(FormatAdminResponse(q, answers).find("\"queued\":2"), std::string::npos);
}

TEST_F(AdminServiceTest, WithoutDestinationsTheDestCommandsSaySo) {
  auto q = ParseAdminRequest("dest ls");
  ASSERT_TRUE(q.ok());
  std::vector<AdminAnswer> answers;
  answers.push_back(std::move(*service_->Answer(*q)));
  EXPECT_TRUE(answers[0].no_destinations);
  EXPECT_TRUE(FormatAdminResponse(*q, answers).starts_with("ERROR "));
  q = ParseAdminRequest("dest suspend x");
  ASSERT_TRUE(q.ok());
  EXPECT_TRUE(service_->Answer(*q)->no_destinations);
  // queue summary still works: everything is "not yet routed".
  Add("a@one.example", {"x@dest.example"});
  q = ParseAdminRequest("queue summary");
  ASSERT_TRUE(q.ok());
  auto summary = service_->Answer(*q);
  ASSERT_EQ(summary->summary.size(), 1u);
  EXPECT_EQ(summary->summary[0].name, "(not yet routed)");
}

}  // namespace
}  // namespace relais::relaisd
