#include "queue/scheduler/scheduler.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "core/base/strings.h"
#include "queue/scheduler/queue_on_disk_testing.h"

namespace relais::scheduler {
namespace {

constexpr uint64_t kMinute = 60 * 1000;

class SchedulerTest : public QueueOnDiskTest {
 protected:
  mail::MessageId Add(int recipients) {
    std::vector<std::string> to;
    for (int i = 0; i < recipients; ++i) {
      to.push_back(base::StrCat("r", i, "@example.com"));
    }
    return QueueOnDiskTest::Add("a@sender.example", std::move(to));
  }
  // A typed result; the scheduler keeps its Text() ("451 4.3.0 try later") as the last reply.
  static RecipientResult R(Outcome o, uint16_t code = 0, std::string enhanced = "",
                           std::string detail = "") {
    return RecipientResult{o, code, std::move(enhanced), std::move(detail)};
  }
  static std::vector<RecipientResult> All(size_t n, RecipientResult r) {
    return std::vector<RecipientResult>(n, r);
  }
};

TEST_F(SchedulerTest, NewMessageIsReadyAndDeliveryRetiresIt) {
  const auto id = Add(2);
  auto attempt = scheduler_->Next();
  ASSERT_TRUE(attempt.has_value());
  EXPECT_EQ(attempt->id, id);
  EXPECT_EQ(attempt->recipients, (std::vector<uint32_t>{0, 1}));
  EXPECT_FALSE(scheduler_->Next().has_value());  // Nothing else, and this one is in flight.
  scheduler_->Finish(*attempt, All(2, R(Outcome::kDelivered)));
  Sync();
  EXPECT_EQ(spool_->Find(id), nullptr);
  EXPECT_EQ(scheduler_->Entry(id), nullptr);
  EXPECT_EQ(scheduler_->stats().delivered, 2u);
}

TEST_F(SchedulerTest, BackoffDoublesUpToTheCap) {
  EXPECT_EQ(scheduler_->BackoffMs(1), 5 * kMinute);
  EXPECT_EQ(scheduler_->BackoffMs(2), 10 * kMinute);
  EXPECT_EQ(scheduler_->BackoffMs(4), 40 * kMinute);
  EXPECT_EQ(scheduler_->BackoffMs(5), 60 * kMinute);
  EXPECT_EQ(scheduler_->BackoffMs(50), 60 * kMinute);
}

TEST_F(SchedulerTest, DeferredMessageWaitsForItsRetryTime) {
  const auto id = Add(1);
  auto attempt = scheduler_->Next();
  scheduler_->Finish(*attempt, All(1, R(Outcome::kDeferred, 451, "4.3.0", "try later")));
  EXPECT_EQ(scheduler_->deferred(), 1u);
  EXPECT_EQ(scheduler_->Entry(id)->last_reply, "451 4.3.0 try later");
  EXPECT_EQ(scheduler_->MsUntilNextDue(), static_cast<int64_t>(5 * kMinute));
  clock_.AdvanceMs(5 * kMinute - 1);
  EXPECT_FALSE(scheduler_->Next().has_value());
  clock_.AdvanceMs(1);
  attempt = scheduler_->Next();
  ASSERT_TRUE(attempt.has_value());
  scheduler_->Finish(*attempt, All(1, R(Outcome::kDeferred, 451, "4.0.0", "again")));
  EXPECT_EQ(scheduler_->MsUntilNextDue(), static_cast<int64_t>(10 * kMinute));
  EXPECT_EQ(scheduler_->Entry(id)->attempts, 2u);
}

TEST_F(SchedulerTest, OnlyPendingRecipientsAreRetried) {
  const auto id = Add(3);
  auto attempt = scheduler_->Next();
  scheduler_->Finish(*attempt,
                     {R(Outcome::kDelivered, 250, "2.0.0"), R(Outcome::kDeferred, 451, "4.0.0"),
                      R(Outcome::kFailed, 550, "5.0.0")});
  Sync();
  ASSERT_NE(spool_->Find(id), nullptr);
  clock_.AdvanceMs(5 * kMinute);
  attempt = scheduler_->Next();
  ASSERT_TRUE(attempt.has_value());
  EXPECT_EQ(attempt->recipients, std::vector<uint32_t>{1});
  scheduler_->Finish(*attempt, All(1, R(Outcome::kDelivered)));
  Sync();
  EXPECT_EQ(spool_->Find(id), nullptr);
}

TEST_F(SchedulerTest, InFlightCapHoldsBackTheRest) {
  options_.attempts_in_flight_max = 2;
  OpenSpool();
  for (int i = 0; i < 5; ++i) {
    Add(1);
  }
  auto a = scheduler_->Next();
  auto b = scheduler_->Next();
  ASSERT_TRUE(a && b);
  EXPECT_FALSE(scheduler_->Next().has_value());
  scheduler_->Finish(*a, All(1, R(Outcome::kDelivered)));
  EXPECT_TRUE(scheduler_->Next().has_value());
  EXPECT_EQ(scheduler_->in_flight(), 2u);
}

TEST_F(SchedulerTest, LifetimeExpiryFailsWhatIsPending) {
  const auto id = Add(2);
  auto attempt = scheduler_->Next();
  scheduler_->Finish(*attempt, All(2, R(Outcome::kDeferred, 451, "4.0.0")));
  clock_.AdvanceMs(options_.lifetime_ms + 1);
  attempt = scheduler_->Next();
  ASSERT_TRUE(attempt.has_value());
  EXPECT_EQ(attempt->give, Attempt::Give::kExpired);
  EXPECT_EQ(attempt->recipients, (std::vector<uint32_t>{0, 1}));
  EXPECT_EQ(attempt->last_reply, "451 4.0.0");
  scheduler_->Finish(*attempt, All(2, R(Outcome::kFailed, 550, "5.4.7", "expired")));
  Sync();
  EXPECT_EQ(spool_->Find(id), nullptr);
  EXPECT_EQ(scheduler_->stats().expired, 1u);
}

TEST_F(SchedulerTest, RestartResumesTheRetryScheduleForPendingRecipientsOnly) {
  const auto id = Add(2);
  auto attempt = scheduler_->Next();
  scheduler_->Finish(*attempt, {R(Outcome::kDelivered, 250, "2.0.0"),
                                R(Outcome::kDeferred, 451, "4.0.0", "busy")});
  Sync();
  clock_.AdvanceMs(2 * kMinute);
  OpenSpool();  // Restart: a new spool recovers, a new scheduler loads it.
  scheduler_->LoadFromSpool();
  const QueueEntry* entry = scheduler_->Entry(id);
  ASSERT_NE(entry, nullptr);
  EXPECT_EQ(entry->attempts, 1u);
  EXPECT_EQ(entry->last_reply, "451 4.0.0 busy");
  EXPECT_EQ(scheduler_->MsUntilNextDue(), static_cast<int64_t>(3 * kMinute));  // 5 - 2.
  EXPECT_FALSE(scheduler_->Next().has_value());
  clock_.AdvanceMs(3 * kMinute);
  attempt = scheduler_->Next();
  ASSERT_TRUE(attempt.has_value());
  EXPECT_EQ(attempt->id, id);
  EXPECT_EQ(attempt->recipients, std::vector<uint32_t>{1});
  scheduler_->Finish(*attempt, All(1, R(Outcome::kDeferred, 451, "4.0.0", "still busy")));
  EXPECT_EQ(scheduler_->MsUntilNextDue(), static_cast<int64_t>(10 * kMinute));  // Second retry.
}

TEST_F(SchedulerTest, DelayReportSurvivesARestart) {
  const auto id = Add(1);
  EXPECT_FALSE(scheduler_->DelayReported(id));
  auto attempt = scheduler_->Next();
  scheduler_->MarkDelayReported(id);  // The shard does this before Finish, in the same turn.
  scheduler_->Finish(*attempt, All(1, R(Outcome::kDeferred, 451, "4.0.0")));
  Sync();
  OpenSpool();
  scheduler_->LoadFromSpool();
  EXPECT_TRUE(scheduler_->DelayReported(id));
}

TEST_F(SchedulerTest, OverdueDeferralIsReadyAfterRestart) {
  Add(1);
  auto attempt = scheduler_->Next();
  scheduler_->Finish(*attempt, All(1, R(Outcome::kDeferred, 451, "4.0.0")));
  Sync();
  clock_.AdvanceMs(60 * kMinute);  // Down for an hour.
  OpenSpool();
  scheduler_->LoadFromSpool();
  EXPECT_TRUE(scheduler_->Next().has_value());
}

TEST_F(SchedulerTest, FlushMakesDeferredReadyNow) {
  Add(1);
  auto attempt = scheduler_->Next();
  scheduler_->Finish(*attempt, All(1, R(Outcome::kDeferred)));
  EXPECT_FALSE(scheduler_->Next().has_value());
  scheduler_->FlushAll();
  EXPECT_TRUE(scheduler_->Next().has_value());
}

TEST_F(SchedulerTest, HoldReleaseFlushAndForget) {
  const auto held = Add(1);
  const auto other = Add(1);
  EXPECT_TRUE(scheduler_->Hold(held));
  auto attempt = scheduler_->Next();
  ASSERT_TRUE(attempt.has_value());
  EXPECT_EQ(attempt->id, other);  // The held one is skipped.
  EXPECT_FALSE(scheduler_->Next().has_value());
  scheduler_->Finish(*attempt, All(1, R(Outcome::kDeferred)));
  EXPECT_TRUE(scheduler_->Flush(other));
  EXPECT_TRUE(scheduler_->Release(held));
  std::vector<mail::MessageId> seen;
  while (auto a = scheduler_->Next()) {
    seen.push_back(a->id);
    scheduler_->Finish(*a, All(1, R(Outcome::kDeferred)));
  }
  EXPECT_EQ(seen.size(), 2u);
  EXPECT_FALSE(scheduler_->Forget(mail::MessageId::Make(9, 9, 9)));
  EXPECT_TRUE(scheduler_->Forget(held));
  EXPECT_EQ(scheduler_->Entry(held), nullptr);
  EXPECT_EQ(scheduler_->deferred(), 1u);
}

TEST_F(SchedulerTest, ReturnGivesTheMessageUpAtOnce) {
  const auto id = Add(1);
  auto attempt = scheduler_->Next();
  scheduler_->Finish(*attempt, All(1, R(Outcome::kDeferred, 451, "4.0.0", "later")));
  EXPECT_TRUE(scheduler_->Return(id));
  attempt = scheduler_->Next();
  ASSERT_TRUE(attempt.has_value());
  EXPECT_EQ(attempt->give, Attempt::Give::kReturned);
  EXPECT_EQ(attempt->last_reply, "451 4.0.0 later");
}

TEST_F(SchedulerTest, JitterStaysWithinItsBand) {
  options_.jitter_percent = 10;
  OpenSpool();
  for (int i = 0; i < 50; ++i) {
    Add(1);
    auto attempt = scheduler_->Next();
    scheduler_->Finish(*attempt, All(1, R(Outcome::kDeferred)));
  }
  // All 50 are deferred by 5 min +- 10%.
  EXPECT_GE(scheduler_->MsUntilNextDue(), static_cast<int64_t>(5 * kMinute * 9 / 10));
  clock_.AdvanceMs(5 * kMinute * 11 / 10);
  int ready = 0;
  while (auto a = scheduler_->Next()) {
    ++ready;
    scheduler_->Finish(*a, All(1, R(Outcome::kDelivered)));
  }
  EXPECT_EQ(ready, 50);
}

}  // namespace
}  // namespace relais::scheduler
