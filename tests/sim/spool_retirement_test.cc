// tests/sim/spool_retirement_test.cc — a segment is deleted only once the outcomes that
// finished its messages are durable.
//
// A failed recipient's bounce is staged in the same batch as the failure outcome. If the
// original's segment were deleted when the outcome is staged (before that batch is written
// and synced), a crash or a failed batch in between would lose both the original and its
// bounce: the sender never hears of it. The rule: the unlink of a segment follows the durable
// outcome records that emptied it.
#include <gtest/gtest.h>

#include <functional>
#include <memory>
#include <string>

#include "core/base/clock.h"
#include "queue/spool/spool.h"
#include "tests/sim/sim_io.h"

namespace relais::sim {
namespace {

struct Acks final : spool::AppendCompletion {
  int durable = 0;
  int failed = 0;
  void OnAppendDone(spool::AppendOutcome outcome, const mail::MessageId&) override {
    (outcome == spool::AppendOutcome::kDurable ? durable : failed)++;
  }
};

spool::SpoolOptions Options() {
  spool::SpoolOptions options;
  options.path = "/spool";
  options.segment_bytes_max = 4096;  // Each 3 KB message gets a segment of its own.
  options.no_space_backoff_ms = 0;   // A failed batch (ENOSPC) does not refuse the next.
  return options;
}

mail::MessageId Stage(spool::Spool& s, Acks& acks, const std::string& sender) {
  mail::Envelope env;
  env.sender = sender;
  env.recipients.push_back({"r@example.com"});
  env.client_address = "192.0.2.1";
  const mail::MessageId id = s.NewMessageId();
  EXPECT_EQ(s.Append(id, std::move(env), "Received: sim\r\n",
                     "Subject: x\r\n\r\n" + std::string(3000, 'a') + "\r\n", acks),
            spool::AppendStatus::kStaged);
  return id;
}

void Commit(SimIo& io, spool::Spool& s) {
  s.Flush();
  while (io.RunCompletions() > 0) {
  }
}

// The original m1 sits alone in an older segment; its failure and its bounce are staged.
// `after_staging` then happens, then the crash; on the next start m1 or its bounce must be
// there (both is fine: at least once), and the bounce if its batch was durable.
void RunCase(const std::string& what, uint64_t seed,
             const std::function<void(SimIo&, spool::Spool&)>& after_staging, SimIo::Crash crash,
             bool batch_durable) {
  SimIo io(seed);
  base::FakeClock clock;
  auto opened = spool::Spool::Open(Options(), io, clock);
  ASSERT_TRUE(opened.ok()) << opened.status();
  std::unique_ptr<spool::Spool> s = std::move(*opened);
  ASSERT_TRUE(s->Recover().ok());
  Acks acks;
  const mail::MessageId m1 = Stage(*s, acks, "a@example.org");
  Commit(io, *s);
  const mail::MessageId m2 = Stage(*s, acks, "b@example.org");
  Commit(io, *s);
  ASSERT_EQ(acks.durable, 2) << what;
  ASSERT_GE(s->segment_count(), 2u) << what;
  // The delivery failed for good: the bounce first, then the failure, one group commit.
  Acks bounce;
  const mail::MessageId report = Stage(*s, bounce, "");
  s->RecordOutcome(m1, 0, spool::RecipientState::kFailed);
  after_staging(io, *s);
  if (crash == SimIo::Crash::kPowerCut) {
    io.PowerCut();
  } else {
    io.Kill();
  }
  while (io.RunCompletions() > 0) {
  }
  s.reset();
  io.Reboot();
  auto again = spool::Spool::Open(Options(), io, clock);
  ASSERT_TRUE(again.ok());
  ASSERT_TRUE((*again)->Recover().ok());
  EXPECT_NE((*again)->Find(m2), nullptr) << what;
  EXPECT_TRUE((*again)->Find(m1) != nullptr || (*again)->Find(report) != nullptr)
      << what << " (seed " << seed << "): the original is gone and its bounce was never stored";
  if (batch_durable) {
    EXPECT_EQ(bounce.durable, 1) << what;
    EXPECT_NE((*again)->Find(report), nullptr) << what << ": the bounce";
  }
}

TEST(SpoolRetirement, SegmentOutlivesTheUnsyncedOutcomeThatEmptiedIt) {
  RunCase(
      "killed before the batch", 1, [](SimIo&, spool::Spool&) {}, SimIo::Crash::kKill, false);
  // The batch's fdatasync fails (its bytes in limbo); the next batch goes to a new segment,
  // whose creation syncs the directory; then the power goes.
  for (uint64_t seed = 0; seed < 32; ++seed) {
    RunCase(
        "the batch's fdatasync failed, then a power cut", seed,
        [](SimIo& io, spool::Spool& s) {
          io.set_faults({0, 0, 1.0});
          Commit(io, s);
          io.set_faults({});
          Acks later;
          (void)Stage(s, later, "c@example.org");
          Commit(io, s);
          EXPECT_EQ(later.durable, 1);
        },
        SimIo::Crash::kPowerCut, false);
  }
  RunCase(
      "the batch was durable", 1, [](SimIo& io, spool::Spool& s) { Commit(io, s); },
      SimIo::Crash::kPowerCut, true);
}

}  // namespace
}  // namespace relais::sim
