#include "queue/scheduler/scheduler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <set>
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

// A gate that admits every destination but those in `refused`, and records what it was asked.
class FakeGate final : public Gate {
 public:
  bool Admit(uint32_t destination) override {
    asked.push_back(destination);
    return !refused.contains(destination);
  }
  std::set<uint32_t> refused;
  std::vector<uint32_t> asked;
};

class DestinationQueueTest : public SchedulerTest {
 protected:
  void SetUp() override {
    SchedulerTest::SetUp();
    scheduler_->SetGate(&gate_);
  }
  void OpenSpool() {
    SchedulerTest::OpenSpool();
    scheduler_->SetGate(&gate_);
  }
  // A message already routed to `destination` (as after its first planning).
  mail::MessageId AddFor(uint32_t destination) {
    const auto id = Add(1);
    scheduler_->SetDestination(id, destination);
    return id;
  }
  std::map<uint32_t, uint64_t> Waiting() const {
    std::map<uint32_t, uint64_t> out;
    scheduler_->ForEachDestination([&](uint32_t d, uint64_t n) { out[d] = n; });
    return out;
  }
  // Takes attempts until none is handed out, finishing each as deferred.
  std::vector<mail::MessageId> Drain() {
    std::vector<mail::MessageId> seen;
    while (auto a = scheduler_->Next()) {
      seen.push_back(a->id);
      scheduler_->Finish(*a, All(a->recipients.size(), R(Outcome::kDeferred)));
    }
    return seen;
  }
  FakeGate gate_;
};

TEST_F(DestinationQueueTest, DestinationsTakeTurnsAndEachKeepsItsOrder) {
  const auto a1 = AddFor(1);
  const auto a2 = AddFor(1);
  const auto a3 = AddFor(1);
  const auto b1 = AddFor(2);
  const auto b2 = AddFor(2);
  EXPECT_EQ(scheduler_->ready(), 5u);
  EXPECT_EQ(Drain(), (std::vector<mail::MessageId>{a1, b1, a2, b2, a3}));
  EXPECT_EQ(gate_.asked, (std::vector<uint32_t>{1, 2, 1, 2, 1}));
  EXPECT_EQ(scheduler_->ready(), 0u);
}

TEST_F(DestinationQueueTest, TheUnknownDestinationIsNotAskedOfTheGate) {
  const auto id = Add(1);
  auto attempt = scheduler_->Next();
  ASSERT_TRUE(attempt.has_value());
  EXPECT_EQ(attempt->id, id);
  EXPECT_EQ(attempt->destination, 0u);
  EXPECT_TRUE(gate_.asked.empty());
}

TEST_F(DestinationQueueTest, ARefusedDestinationIsParkedWithoutHoldingUpTheOthers) {
  gate_.refused = {1};
  AddFor(1);
  AddFor(1);
  const auto b1 = AddFor(2);
  const auto unrouted = Add(1);
  // No head-of-line block (destination 0 has had its turn since the first Add).
  EXPECT_EQ(Drain(), (std::vector<mail::MessageId>{unrouted, b1}));
  EXPECT_EQ(std::count(gate_.asked.begin(), gate_.asked.end(), 1u), 1);  // Asked once, parked.
  EXPECT_FALSE(scheduler_->Next().has_value());
  EXPECT_EQ(std::count(gate_.asked.begin(), gate_.asked.end(), 1u), 1);  // Not asked again.
  EXPECT_EQ(Waiting()[1], 2u);
}

TEST_F(DestinationQueueTest, WakeLetsAParkedDestinationGoOn) {
  gate_.refused = {1};
  const auto a1 = AddFor(1);
  const auto a2 = AddFor(1);
  EXPECT_FALSE(scheduler_->Next().has_value());
  gate_.refused.clear();
  EXPECT_FALSE(scheduler_->Next().has_value());  // Parked until woken, even if it would admit.
  scheduler_->Wake(1);
  scheduler_->Wake(99);  // Unknown: nothing happens.
  EXPECT_EQ(Drain(), (std::vector<mail::MessageId>{a1, a2}));
}

// A gate that refused and then never wakes the destination (a wake lost in its bookkeeping)
// must not strand the mail: the parked destination is asked again after parked_recheck_ms.
TEST_F(DestinationQueueTest, AParkedDestinationNobodyWakesIsAskedAgainAfterTheRecheckTime) {
  gate_.refused = {1};
  const auto a1 = AddFor(1);
  const auto a2 = AddFor(1);
  EXPECT_FALSE(scheduler_->Next().has_value());  // Parked.
  const uint64_t recheck = SchedulerOptions{}.parked_recheck_ms;
  ASSERT_GT(recheck, 0u);
  EXPECT_EQ(scheduler_->MsUntilNextDue(), static_cast<int64_t>(recheck));
  gate_.refused.clear();  // It would admit now, but nothing calls Wake.
  clock_.AdvanceMs(recheck - 1);
  EXPECT_FALSE(scheduler_->Next().has_value());
  clock_.AdvanceMs(1);
  EXPECT_EQ(Drain(), (std::vector<mail::MessageId>{a1, a2}));
  EXPECT_EQ(std::count(gate_.asked.begin(), gate_.asked.end(), 1u), 3);
}

// The recheck of an old park does not cut short a later one.
TEST_F(DestinationQueueTest, TheRecheckCountsFromTheLastPark) {
  gate_.refused = {1};
  AddFor(1);
  EXPECT_FALSE(scheduler_->Next().has_value());  // Parked at 0.
  const uint64_t recheck = SchedulerOptions{}.parked_recheck_ms;
  clock_.AdvanceMs(recheck / 2);
  scheduler_->Wake(1);
  EXPECT_FALSE(scheduler_->Next().has_value());  // Asked, refused: parked again at recheck / 2.
  clock_.AdvanceMs(recheck / 2);
  EXPECT_FALSE(scheduler_->Next().has_value());  // The first park's recheck: stale, not asked.
  EXPECT_EQ(std::count(gate_.asked.begin(), gate_.asked.end(), 1u), 2);
  clock_.AdvanceMs(recheck / 2);
  EXPECT_FALSE(scheduler_->Next().has_value());  // The second's: asked (and refused again).
  EXPECT_EQ(std::count(gate_.asked.begin(), gate_.asked.end(), 1u), 3);
}

TEST_F(DestinationQueueTest, RequeueGoesToTheFrontAndUndoesTheAttempt) {
  const auto c = AddFor(5);  // Already waiting for destination 5.
  gate_.refused = {5};
  EXPECT_FALSE(scheduler_->Next().has_value());  // 5 refuses: parked.
  const auto a = Add(1);
  const auto b = Add(1);
  auto attempt = scheduler_->Next();  // First attempt of `a`: destination not known yet.
  ASSERT_TRUE(attempt.has_value());
  ASSERT_EQ(attempt->id, a);
  EXPECT_EQ(scheduler_->in_flight(), 1u);
  scheduler_->SetDestination(a, 5);  // Planned: it goes to 5, which refuses it.
  scheduler_->Requeue(*attempt, 5);
  EXPECT_EQ(scheduler_->in_flight(), 0u);
  EXPECT_EQ(scheduler_->Entry(a)->attempts, 0u);
  EXPECT_FALSE(scheduler_->Entry(a)->in_flight);
  EXPECT_EQ(scheduler_->Entry(a)->destination, 5u);
  EXPECT_EQ(scheduler_->stats().attempts_started, 0u);
  EXPECT_EQ(scheduler_->ready(), 3u);
  EXPECT_EQ(Waiting(), (std::map<uint32_t, uint64_t>{{0, 1}, {5, 2}}));
  EXPECT_EQ(Drain(), std::vector<mail::MessageId>{b});  // 5 stays parked.
  gate_.refused.clear();
  scheduler_->Wake(5);
  EXPECT_EQ(Drain(), (std::vector<mail::MessageId>{a, c}));  // The requeued one first.
  EXPECT_EQ(scheduler_->Entry(a)->attempts, 1u);
}

TEST_F(DestinationQueueTest, ADeferredMessageComesBackToItsDestination) {
  const auto id = AddFor(3);
  auto attempt = scheduler_->Next();
  ASSERT_TRUE(attempt.has_value());
  EXPECT_EQ(attempt->destination, 3u);
  EXPECT_TRUE(Waiting().empty());  // In flight: not waiting.
  scheduler_->Finish(*attempt, All(1, R(Outcome::kDeferred, 451, "4.0.0")));
  EXPECT_EQ(Waiting(), (std::map<uint32_t, uint64_t>{{3, 1}}));  // Deferred counts.
  EXPECT_EQ(scheduler_->ready(), 0u);
  gate_.refused = {3};
  clock_.AdvanceMs(5 * kMinute);
  EXPECT_FALSE(scheduler_->Next().has_value());
  EXPECT_EQ(scheduler_->ready(), 1u);
  EXPECT_EQ(gate_.asked.back(), 3u);
  gate_.refused.clear();
  scheduler_->Wake(3);
  attempt = scheduler_->Next();
  ASSERT_TRUE(attempt.has_value());
  EXPECT_EQ(attempt->id, id);
  EXPECT_EQ(attempt->destination, 3u);
}

TEST_F(DestinationQueueTest, SetDestinationMovesADeferredMessage) {
  const auto id = AddFor(3);
  auto attempt = scheduler_->Next();
  scheduler_->Finish(*attempt, All(1, R(Outcome::kDeferred)));
  scheduler_->SetDestination(id, 4);
  EXPECT_EQ(Waiting(), (std::map<uint32_t, uint64_t>{{4, 1}}));
  clock_.AdvanceMs(5 * kMinute);
  attempt = scheduler_->Next();
  ASSERT_TRUE(attempt.has_value());
  EXPECT_EQ(attempt->destination, 4u);
}

TEST_F(DestinationQueueTest, ReturnDestinationGivesUpEverythingWaitingForIt) {
  const auto deferred = AddFor(4);
  auto attempt = scheduler_->Next();
  scheduler_->Finish(*attempt, All(1, R(Outcome::kDeferred)));
  const auto ready = AddFor(4);
  const auto other = AddFor(5);
  EXPECT_EQ(scheduler_->ReturnDestination(4), 2u);
  EXPECT_EQ(scheduler_->ReturnDestination(77), 0u);
  std::map<mail::MessageId, Attempt::Give> gives;
  while (auto a = scheduler_->Next()) {
    gives[a->id] = a->give;
    scheduler_->Finish(*a, All(1, R(Outcome::kFailed)));
  }
  EXPECT_EQ(gives, (std::map<mail::MessageId, Attempt::Give>{{deferred, Attempt::Give::kReturned},
                                                             {ready, Attempt::Give::kReturned},
                                                             {other, Attempt::Give::kDeliver}}));
}

TEST_F(DestinationQueueTest, HoldAndForgetTakeAMessageOutOfItsQueue) {
  const auto a = AddFor(1);
  const auto b = AddFor(1);
  const auto c = AddFor(1);
  EXPECT_TRUE(scheduler_->Hold(b));
  EXPECT_TRUE(scheduler_->Forget(c));
  EXPECT_EQ(scheduler_->ready(), 1u);
  EXPECT_EQ(Waiting(), (std::map<uint32_t, uint64_t>{{1, 1}}));
  EXPECT_EQ(Drain(), std::vector<mail::MessageId>{a});
  EXPECT_TRUE(scheduler_->Release(b));
  clock_.AdvanceMs(5 * kMinute);
  EXPECT_EQ(Drain(), (std::vector<mail::MessageId>{b, a}));
}

TEST_F(DestinationQueueTest, TheInFlightCapStillHolds) {
  options_.attempts_in_flight_max = 2;
  OpenSpool();
  for (uint32_t d = 1; d <= 3; ++d) {
    AddFor(d);
    AddFor(d);
  }
  auto x = scheduler_->Next();
  auto y = scheduler_->Next();
  ASSERT_TRUE(x && y);
  EXPECT_NE(x->destination, y->destination);
  EXPECT_FALSE(scheduler_->Next().has_value());
  EXPECT_EQ(gate_.asked.size(), 2u);  // At the cap the gate is not even asked.
  scheduler_->Finish(*x, All(1, R(Outcome::kDelivered)));
  auto z = scheduler_->Next();
  ASSERT_TRUE(z.has_value());
  EXPECT_EQ(z->destination, 3u);
  EXPECT_EQ(scheduler_->in_flight(), 2u);
}

TEST_F(DestinationQueueTest, SummaryCountsByDestinationAndAge) {
  const auto old = Add(1);  // Received at t0.
  clock_.AdvanceMs(8 * kMinute);
  AddFor(7);  // t0 + 8 min.
  clock_.AdvanceMs(3 * kMinute);
  AddFor(7);  // t0 + 11 min.
  scheduler_->SetDestination(old, 0);
  clock_.AdvanceMs(60 * kMinute);     // Ages: 71, 63 and 60 minutes.
  auto attempt = scheduler_->Next();  // In flight or not, it is in the summary.
  ASSERT_TRUE(attempt.has_value());
  const QueueSummary s = scheduler_->Summary({5 * kMinute, 61 * kMinute, 70 * kMinute});
  ASSERT_EQ(s.rows.size(), 2u);
  EXPECT_EQ(s.rows[0].destination, 7u);  // Largest first.
  EXPECT_EQ(s.rows[0].total, 2u);
  EXPECT_EQ(s.rows[0].buckets, (std::vector<uint64_t>{0, 1, 1, 0}));
  EXPECT_EQ(s.rows[1].destination, 0u);
  EXPECT_EQ(s.rows[1].buckets, (std::vector<uint64_t>{0, 0, 0, 1}));  // Open-ended last.
  EXPECT_EQ(s.bucket_bounds_ms.size(), 3u);
}

TEST_F(DestinationQueueTest, RestartPutsEveryMessageBackAtTheUnknownDestination) {
  AddFor(3);
  AddFor(4);
  OpenSpool();
  scheduler_->LoadFromSpool();
  EXPECT_EQ(Waiting(), (std::map<uint32_t, uint64_t>{{0, 2}}));
  EXPECT_EQ(Drain().size(), 2u);
  EXPECT_TRUE(gate_.asked.empty());
}

TEST_F(DestinationQueueTest, SummaryTakesAnyDestinationId) {
  AddFor(4'000'000'000u);  // Far past the dense index: counted all the same.
  AddFor(4'000'000'000u);
  AddFor(2);
  const QueueSummary s = scheduler_->Summary({5 * kMinute});
  ASSERT_EQ(s.rows.size(), 2u);
  EXPECT_EQ(s.rows[0].destination, 4'000'000'000u);
  EXPECT_EQ(s.rows[0].buckets, (std::vector<uint64_t>{2, 0}));
  EXPECT_EQ(s.rows[1].destination, 2u);
}

}  // namespace
}  // namespace relais::scheduler
