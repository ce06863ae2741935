// tools/relaisd/admin_service_test.cc — relaisctl's queries answered over a real spool (in a
// temporary directory, through PosixIo) and its scheduler, with a fake clock; no shard.
#include "tools/relaisd/admin_service.h"

#include <gtest/gtest.h>

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

}  // namespace
}  // namespace relais::relaisd
