// queue/scheduler/queue_on_disk_testing.h — for tests only: a gtest fixture holding a real spool
// in a temporary directory (through PosixIo, with a fake clock) and a scheduler over it, and
// the one way its tests add a durable, queued message. The scheduler's tests and the daemon's
// admin service tests derive from it. Not thread-safe.
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "core/base/clock.h"
#include "core/base/random.h"
#include "core/io/posix_io.h"
#include "queue/scheduler/scheduler.h"
#include "queue/spool/spool.h"

namespace relais::scheduler {

class QueueOnDiskTest : public testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/relais-queue-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    OpenSpool();
  }
  void TearDown() override {
    scheduler_.reset();
    spool_.reset();
    std::filesystem::remove_all(dir_);
  }

  // Opens (again: a restart) the spool in dir_, recovers it, and makes a scheduler with
  // options_ over it.
  void OpenSpool() {
    scheduler_.reset();
    spool_.reset();
    spool::SpoolOptions o;
    o.path = dir_;
    auto s = spool::Spool::Open(o, io_, clock_);
    ASSERT_TRUE(s.ok()) << s.status();
    spool_ = std::move(*s);
    ASSERT_TRUE(spool_->Recover().ok());
    scheduler_ = std::make_unique<Scheduler>(options_, *spool_, clock_, random_);
  }

  // A durable message from `sender` to `recipients`, queued.
  mail::MessageId Add(std::string sender, std::vector<std::string> recipients) {
    mail::Envelope e;
    e.sender = std::move(sender);
    for (std::string& r : recipients) {
      e.recipients.push_back({std::move(r)});
    }
    const mail::MessageId id = spool_->NewMessageId();
    EXPECT_EQ(spool_->Append(id, std::move(e), "", "Subject: x\r\n\r\nbody\r\n", done_),
              spool::AppendStatus::kStaged);
    Sync();
    scheduler_->Enqueue(id);
    return id;
  }

  // Writes what is staged and runs the completions: a group commit.
  void Sync() {
    spool_->Flush();
    while (io_.RunCompletions() > 0) {
    }
  }

  struct Durable final : spool::AppendCompletion {
    void OnAppendDone(spool::AppendOutcome outcome, const mail::MessageId&) override {
      EXPECT_EQ(outcome, spool::AppendOutcome::kDurable);
    }
  };

  std::string dir_;
  io::PosixIo io_;
  base::FakeClock clock_;
  base::Random random_{42};
  Durable done_;
  SchedulerOptions options_ = [] {
    SchedulerOptions o;
    o.jitter_percent = 0;  // Due times exact, unless a test says otherwise.
    return o;
  }();
  std::unique_ptr<spool::Spool> spool_;
  std::unique_ptr<Scheduler> scheduler_;
};

}  // namespace relais::scheduler
