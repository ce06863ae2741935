#include "core/timer/timer_wheel.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <memory>
#include <vector>

namespace relais::timer {
namespace {

class RecordingTimer : public Timer {
 public:
  RecordingTimer(std::vector<int>* log, int id) : log_(log), id_(id) {}
  std::function<void()> on_fire;

 protected:
  void OnTimer() override {
    log_->push_back(id_);
    if (on_fire) {
      on_fire();
    }
  }

 private:
  std::vector<int>* log_;
  int id_;
};

TEST(TimerWheelTest, FiresNeverEarlyAndAtMostOneTickLate) {
  TimerWheel wheel(1000, 10);
  std::vector<int> log;
  RecordingTimer t(&log, 1);
  wheel.Arm(t, 1055);
  EXPECT_EQ(wheel.Advance(1054), 0u);
  EXPECT_TRUE(log.empty());
  EXPECT_EQ(wheel.Advance(1065), 1u);
  EXPECT_EQ(log, std::vector<int>{1});
  EXPECT_FALSE(t.armed());
}

TEST(TimerWheelTest, DeadlinesBeyondOneRevolutionWaitTheirTurn) {
  TimerWheel wheel(0, 1);
  std::vector<int> log;
  RecordingTimer far(&log, 1);
  wheel.Arm(far, 3 * TimerWheel::kSlots + 5);
  for (uint64_t now = 0; now < 3 * TimerWheel::kSlots + 5; now += 7) {
    wheel.Advance(now);
  }
  EXPECT_TRUE(log.empty());
  wheel.Advance(3 * TimerWheel::kSlots + 5);
  EXPECT_EQ(log, std::vector<int>{1});
}

TEST(TimerWheelTest, CancelAndRearmFromCallback) {
  TimerWheel wheel(0, 5);
  std::vector<int> log;
  RecordingTimer a(&log, 1), b(&log, 2), c(&log, 3);
  wheel.Arm(a, 20);
  wheel.Arm(b, 20);
  wheel.Arm(c, 20);
  // When the first fires it cancels another and re-arms itself later.
  a.on_fire = [&] {
    wheel.Cancel(b);
    wheel.Arm(a, 100);
    a.on_fire = nullptr;
  };
  b.on_fire = [&] { wheel.Cancel(c); };
  c.on_fire = [&] { wheel.Cancel(b); };
  wheel.Advance(20);
  // Exactly one of b and c may have fired before a cancelled b, never both.
  EXPECT_EQ(std::count(log.begin(), log.end(), 1), 1);
  EXPECT_LE(std::count(log.begin(), log.end(), 2) + std::count(log.begin(), log.end(), 3), 1);
  EXPECT_TRUE(a.armed());
  wheel.Advance(100);
  EXPECT_EQ(std::count(log.begin(), log.end(), 1), 2);
  EXPECT_EQ(wheel.armed_count(), 0u);
}

TEST(TimerWheelTest, RearmingForADueDeadlineWaitsForTheNextPass) {
  TimerWheel wheel(0, 1);
  std::vector<int> log;
  RecordingTimer t(&log, 1);
  t.on_fire = [&] { wheel.Arm(t, 0); };
  wheel.Arm(t, 5);
  EXPECT_EQ(wheel.Advance(10), 1u);
  EXPECT_EQ(wheel.Advance(11), 1u);
  EXPECT_EQ(log.size(), 2u);
  wheel.Cancel(t);
}

TEST(TimerWheelTest, LongSleepFiresEverythingDue) {
  TimerWheel wheel(0, 1);
  std::vector<int> log;
  std::vector<std::unique_ptr<RecordingTimer>> timers;
  for (int i = 0; i < 5000; ++i) {
    timers.push_back(std::make_unique<RecordingTimer>(&log, i));
    wheel.Arm(*timers.back(), static_cast<uint64_t>(i) * 3);
  }
  EXPECT_EQ(wheel.Advance(100'000), 5000u);
  EXPECT_EQ(wheel.armed_count(), 0u);
  EXPECT_EQ(wheel.MsUntilNextTick(100'000), -1);
}

TEST(TimerWheelTest, DestructorCancels) {
  TimerWheel wheel(0, 1);
  std::vector<int> log;
  {
    RecordingTimer t(&log, 1);
    wheel.Arm(t, 10);
    EXPECT_EQ(wheel.armed_count(), 1u);
  }
  EXPECT_EQ(wheel.armed_count(), 0u);
  wheel.Advance(20);
  EXPECT_TRUE(log.empty());
}

}  // namespace
}  // namespace relais::timer
