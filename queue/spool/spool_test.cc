#include "queue/spool/spool.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <fstream>
#include <set>

#include "core/io/posix_io.h"

namespace relais::spool {
namespace {

namespace fs = std::filesystem;

// PosixIo with injected faults on the data plane. Completions are queued and delivered by
// Run(), as io_uring would deliver them on a later loop turn.
class FaultyIo : public io::PosixIo {
 public:
  int32_t fail_next_write = 0;  // -errno: half the data reaches the file, then this error.
  int32_t fail_next_sync = 0;   // -errno instead of syncing.
  int32_t fail_next_open = 0;   // -errno when creating a file.
  bool short_writes = false;    // Write at most half of each request.
  int writes = 0;
  int syncs = 0;

  absl::StatusOr<io::FileHandle> Open(const std::string& path, io::OpenMode mode) override {
    if (fail_next_open != 0 && mode == io::OpenMode::kCreateExclusive) {
      return io::ErrnoStatus(-std::exchange(fail_next_open, 0), path, "open");
    }
    return PosixIo::Open(path, mode);
  }
  void Write(io::FileHandle f, uint64_t off, std::string_view data, io::IoOp& op) override {
    ++writes;
    if (fail_next_write != 0) {
      (void)::pwrite(f.fd, data.data(), data.size() / 2, static_cast<off_t>(off));
      queue_.emplace_back(&op, std::exchange(fail_next_write, 0));
      return;
    }
    const size_t n = short_writes && data.size() > 1 ? data.size() / 2 : data.size();
    const ssize_t w = ::pwrite(f.fd, data.data(), n, static_cast<off_t>(off));
    queue_.emplace_back(&op, w < 0 ? -errno : static_cast<int32_t>(w));
  }
  void Fdatasync(io::FileHandle f, io::IoOp& op) override {
    ++syncs;
    if (fail_next_sync != 0) {
      queue_.emplace_back(&op, std::exchange(fail_next_sync, 0));
      return;
    }
    queue_.emplace_back(&op, ::fdatasync(f.fd) < 0 ? -errno : 0);
  }
  size_t Run() {
    size_t ran = 0;
    while (!queue_.empty()) {
      auto [op, result] = queue_.front();
      queue_.pop_front();
      op->OnIoComplete(result);
      ++ran;
    }
    return ran;
  }

 private:
  std::deque<std::pair<io::IoOp*, int32_t>> queue_;
};

class Recorder : public AppendCompletion {
 public:
  void OnAppendDone(AppendOutcome outcome, const mail::MessageId& id) override {
    outcomes.push_back(outcome);
    ids.push_back(id);
  }
  std::vector<AppendOutcome> outcomes;
  std::vector<mail::MessageId> ids;
};

class SpoolTest : public testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/relais-spool-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    options_.path = dir_;
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::unique_ptr<Spool> OpenSpool(io::Io& io, RecoveryReport* report = nullptr) {
    auto spool = Spool::Open(options_, io, clock_);
    EXPECT_TRUE(spool.ok()) << spool.status();
    auto r = (*spool)->Recover();
    EXPECT_TRUE(r.ok()) << r.status();
    if (report != nullptr && r.ok()) {
      *report = *r;
    }
    return std::move(*spool);
  }

  static mail::Envelope Env(int n) {
    mail::Envelope e;
    e.sender = "sender" + std::to_string(n) + "@example.org";
    e.recipients = {{"rcpt" + std::to_string(n) + "@example.com"}, {"other@example.com"}};
    e.helo = "client.example";
    e.client_address = "127.0.0.1";
    return e;
  }
  static std::string Body(int n, size_t size = 100) {
    std::string b = "Subject: message " + std::to_string(n) + "\r\n\r\n";
    while (b.size() < size) {
      b += "line of text " + std::to_string(n) + "\r\n";
    }
    return b;
  }
  // Appends n messages (numbered from `first`) in one batch; returns their outcomes.
  Recorder AppendBatch(Spool& spool, FaultyIo& io, int first, int n, size_t size = 100) {
    Recorder rec;
    for (int i = first; i < first + n; ++i) {
      EXPECT_EQ(
          spool.Append(spool.NewMessageId(), Env(i), "Received: test\r\n", Body(i, size), rec),
          AppendStatus::kStaged);
    }
    spool.Flush();
    for (AppendOutcome o : rec.outcomes) {
      EXPECT_NE(o, AppendOutcome::kDurable) << "acknowledged before the batch completed";
    }
    while (io.Run() > 0) {
    }
    return rec;
  }
  std::vector<std::string> SegmentFiles() {
    std::vector<std::string> files;
    for (const auto& shard : fs::directory_iterator(dir_)) {
      for (const auto& f : fs::directory_iterator(shard.path())) {
        files.push_back(f.path());
      }
    }
    std::sort(files.begin(), files.end());
    return files;
  }

  std::string dir_;
  SpoolOptions options_;
  base::FakeClock clock_;
};

TEST_F(SpoolTest, AppendedMessagesSurviveReopen) {
  FaultyIo io;
  std::vector<mail::MessageId> ids;
  {
    auto spool = OpenSpool(io);
    Recorder rec = AppendBatch(*spool, io, 0, 3);
    ASSERT_EQ(rec.outcomes, std::vector<AppendOutcome>(3, AppendOutcome::kDurable));
    ids = rec.ids;
    EXPECT_EQ(spool->message_count(), 3u);
  }
  options_.body_memory_bytes_max = 0;  // Force bodies to be read back from disk.
  RecoveryReport report;
  auto spool = OpenSpool(io, &report);
  EXPECT_EQ(report.messages_live, 3u);
  EXPECT_EQ(report.torn_tails, 0u);
  for (int i = 0; i < 3; ++i) {
    const StoredMessage* m = spool->Find(ids[i]);
    ASSERT_NE(m, nullptr);
    EXPECT_EQ(m->envelope.sender, Env(i).sender);
    EXPECT_EQ(m->envelope.recipients.size(), 2u);
    auto body = spool->ReadBody(*m);
    ASSERT_TRUE(body.ok()) << body.status();
    EXPECT_EQ(*body, "Received: test\r\n" + Body(i));
  }
}

TEST_F(SpoolTest, GroupCommitUsesOneWriteAndOneSyncPerBatch) {
  FaultyIo io;
  auto spool = OpenSpool(io);
  const int writes = io.writes, syncs = io.syncs;
  Recorder rec = AppendBatch(*spool, io, 0, 100);
  EXPECT_EQ(rec.outcomes, std::vector<AppendOutcome>(100, AppendOutcome::kDurable));
  EXPECT_EQ(io.writes - writes, 1);
  EXPECT_EQ(io.syncs - syncs, 1);
  EXPECT_EQ(spool->stats().batches, 1u);
}

TEST_F(SpoolTest, AppendsDuringAFlightGoInTheNextBatch) {
  FaultyIo io;
  auto spool = OpenSpool(io);
  Recorder first, second;
  ASSERT_EQ(spool->Append(spool->NewMessageId(), Env(1), "", Body(1), first),
            AppendStatus::kStaged);
  spool->Flush();
  ASSERT_EQ(spool->Append(spool->NewMessageId(), Env(2), "", Body(2), second),
            AppendStatus::kStaged);
  spool->Flush();  // No-op: a batch is in flight.
  while (io.Run() > 0) {
  }
  EXPECT_EQ(first.outcomes, std::vector<AppendOutcome>{AppendOutcome::kDurable});
  EXPECT_EQ(second.outcomes, std::vector<AppendOutcome>{AppendOutcome::kDurable});
  EXPECT_EQ(spool->stats().batches, 2u);
  EXPECT_TRUE(spool->idle());
}

TEST_F(SpoolTest, ShortWritesStillCommitWholeBatches) {
  FaultyIo io;
  io.short_writes = true;
  {
    auto spool = OpenSpool(io);
    Recorder rec = AppendBatch(*spool, io, 0, 10, 5000);
    EXPECT_EQ(rec.outcomes, std::vector<AppendOutcome>(10, AppendOutcome::kDurable));
  }
  RecoveryReport report;
  OpenSpool(io, &report);
  EXPECT_EQ(report.messages_live, 10u);
  EXPECT_EQ(report.torn_tails + report.corrupt_records, 0u);
}

TEST_F(SpoolTest, TornTailIsDroppedAndTruncated) {
  FaultyIo io;
  {
    auto spool = OpenSpool(io);
    AppendBatch(*spool, io, 0, 5);
  }
  const std::string seg = SegmentFiles().back();
  const auto clean_size = fs::file_size(seg);
  // A batch that died halfway: the start of a record, no end.
  std::string partial;
  MessageRecord r{mail::MessageId::Make(1, 0, 99), 0, Env(99), {}};
  EncodeMessage(r, "", Body(99), partial);
  {
    std::ofstream out(seg, std::ios::app | std::ios::binary);
    out << partial.substr(0, partial.size() / 2);
  }
  RecoveryReport report;
  auto spool = OpenSpool(io, &report);
  EXPECT_EQ(report.messages_live, 5u);
  EXPECT_EQ(report.torn_tails, 1u);
  EXPECT_EQ(fs::file_size(seg), clean_size);
}

TEST_F(SpoolTest, FlippedBitSkipsOnlyThatRecord) {
  FaultyIo io;
  std::vector<mail::MessageId> ids;
  {
    auto spool = OpenSpool(io);
    ids = AppendBatch(*spool, io, 0, 3, 500).ids;
  }
  const std::string seg = SegmentFiles().back();
  std::string bytes;
  {
    std::ifstream in(seg, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  // Flip one bit in the middle of the second record's body.
  const size_t record_size = (bytes.size() - kSegmentHeaderBytes) / 3;
  bytes[kSegmentHeaderBytes + record_size + record_size / 2] ^= 0x04;
  {
    std::ofstream out(seg, std::ios::binary | std::ios::trunc);
    out << bytes;
  }
  RecoveryReport report;
  auto spool = OpenSpool(io, &report);
  EXPECT_EQ(report.corrupt_records, 1u);
  EXPECT_EQ(report.messages_live, 2u);
  EXPECT_NE(spool->Find(ids[0]), nullptr);
  EXPECT_EQ(spool->Find(ids[1]), nullptr);
  EXPECT_NE(spool->Find(ids[2]), nullptr);
  ASSERT_FALSE(report.problems.empty());
  EXPECT_NE(report.problems[0].find("corrupt record"), std::string::npos);
}

TEST_F(SpoolTest, EnospcOnWriteRefusesThenRecoversInANewSegment) {
  FaultyIo io;
  std::vector<mail::MessageId> good;
  {
    auto spool = OpenSpool(io);
    good = AppendBatch(*spool, io, 0, 2).ids;
    io.fail_next_write = -ENOSPC;
    Recorder failed = AppendBatch(*spool, io, 2, 3);
    EXPECT_EQ(failed.outcomes, std::vector<AppendOutcome>(3, AppendOutcome::kNoSpace));
    EXPECT_TRUE(spool->full());
    Recorder refused;
    EXPECT_EQ(spool->Append(spool->NewMessageId(), Env(9), "", Body(9), refused),
              AppendStatus::kOverBudget);
    clock_.AdvanceMs(options_.no_space_backoff_ms + 1);
    const size_t segments = spool->segment_count();
    Recorder later = AppendBatch(*spool, io, 5, 1);
    EXPECT_EQ(later.outcomes, std::vector<AppendOutcome>{AppendOutcome::kDurable});
    EXPECT_FALSE(spool->full());
    EXPECT_EQ(spool->segment_count(), segments + 1);  // The failed segment is not reused.
    good.push_back(later.ids[0]);
  }
  RecoveryReport report;
  auto spool = OpenSpool(io, &report);
  for (const auto& id : good) {
    EXPECT_NE(spool->Find(id), nullptr) << "acknowledged message lost";
  }
}

TEST_F(SpoolTest, FailedFdatasyncIsNeverAcknowledged) {
  FaultyIo io;
  auto spool = OpenSpool(io);
  io.fail_next_sync = -EIO;
  Recorder failed = AppendBatch(*spool, io, 0, 4);
  EXPECT_EQ(failed.outcomes, std::vector<AppendOutcome>(4, AppendOutcome::kFailed));
  EXPECT_EQ(spool->message_count(), 0u);
  EXPECT_FALSE(spool->full());
  Recorder ok = AppendBatch(*spool, io, 4, 1);
  EXPECT_EQ(ok.outcomes, std::vector<AppendOutcome>{AppendOutcome::kDurable});
}

TEST_F(SpoolTest, SegmentCreationFailureFailsTheBatch) {
  FaultyIo io;
  auto spool = OpenSpool(io);
  io.fail_next_sync = -EIO;
  AppendBatch(*spool, io, 0, 1);  // Untrusts the current segment.
  io.fail_next_open = -ENOSPC;
  Recorder rec = AppendBatch(*spool, io, 1, 2);
  EXPECT_EQ(rec.outcomes, std::vector<AppendOutcome>(2, AppendOutcome::kNoSpace));
  EXPECT_TRUE(spool->full());
}

TEST_F(SpoolTest, ManySegmentsRecoverWithUniqueIds) {
  options_.segment_bytes_max = 1 << 16;
  FaultyIo io;
  std::set<mail::MessageId> ids;
  {
    auto spool = OpenSpool(io);
    for (int batch = 0; batch < 40; ++batch) {
      for (const auto& id : AppendBatch(*spool, io, batch * 10, 10, 2048).ids) {
        ids.insert(id);
      }
    }
    EXPECT_GT(spool->segment_count(), 10u);
  }
  EXPECT_EQ(ids.size(), 400u);
  RecoveryReport report;
  auto spool = OpenSpool(io, &report);
  EXPECT_EQ(report.messages_live, 400u);
  Recorder more = AppendBatch(*spool, io, 1000, 5);
  for (const auto& id : more.ids) {
    EXPECT_FALSE(ids.contains(id)) << "ID reused after restart";
  }
}

TEST_F(SpoolTest, SegmentsWhoseMessagesAreDoneAreDeleted) {
  options_.segment_bytes_max = 1 << 16;
  FaultyIo io;
  std::vector<mail::MessageId> first;
  {
    auto spool = OpenSpool(io);
    first = AppendBatch(*spool, io, 0, 20, 2048).ids;  // Fills the first segment.
    AppendBatch(*spool, io, 20, 20, 2048);             // Forces a rotation.
    AppendBatch(*spool, io, 40, 20, 2048);
    const size_t before = SegmentFiles().size();
    ASSERT_GE(before, 2u);
    for (const auto& id : first) {
      spool->RecordOutcome(id, 0, RecipientState::kDelivered);
      spool->RecordOutcome(id, 1, RecipientState::kFailed);
    }
    spool->Flush();
    while (io.Run() > 0) {
    }
    EXPECT_LT(SegmentFiles().size(), before);
    EXPECT_EQ(spool->message_count(), 40u);
  }
  RecoveryReport report;
  auto spool = OpenSpool(io, &report);
  EXPECT_EQ(report.messages_live, 40u);
  for (const auto& id : first) {
    EXPECT_EQ(spool->Find(id), nullptr);
  }
}

TEST_F(SpoolTest, OutcomesSurviveRestart) {
  FaultyIo io;
  mail::MessageId id;
  {
    auto spool = OpenSpool(io);
    id = AppendBatch(*spool, io, 0, 1).ids[0];
    spool->RecordOutcome(id, 0, RecipientState::kDelivered);
    spool->Flush();
    while (io.Run() > 0) {
    }
  }
  auto spool = OpenSpool(io);
  const StoredMessage* m = spool->Find(id);
  ASSERT_NE(m, nullptr);
  EXPECT_EQ(m->states[0], RecipientState::kDelivered);
  EXPECT_EQ(m->states[1], RecipientState::kPending);
}

TEST_F(SpoolTest, CapRefusesNewMail) {
  options_.spool_bytes_max = 8 * 1024;
  FaultyIo io;
  auto spool = OpenSpool(io);
  Recorder rec;
  int staged = 0;
  while (spool->Append(spool->NewMessageId(), Env(staged), "", Body(staged, 1000), rec) ==
         AppendStatus::kStaged) {
    ++staged;
    ASSERT_LT(staged, 100);
  }
  EXPECT_GT(staged, 3);
  spool->Flush();
  while (io.Run() > 0) {
  }
  EXPECT_EQ(rec.outcomes, std::vector<AppendOutcome>(staged, AppendOutcome::kDurable));
  EXPECT_TRUE(spool->full());
}

TEST_F(SpoolTest, ReadOnlyRecoveryChangesNothing) {
  FaultyIo io;
  {
    auto spool = OpenSpool(io);
    AppendBatch(*spool, io, 0, 2);
  }
  const std::string seg = SegmentFiles().back();
  {
    std::ofstream out(seg, std::ios::app | std::ios::binary);
    out << "garbage";
  }
  const auto size = fs::file_size(seg);
  const size_t files = SegmentFiles().size();
  options_.read_only = true;
  RecoveryReport report;
  auto spool = OpenSpool(io, &report);
  EXPECT_EQ(report.messages_live, 2u);
  EXPECT_EQ(report.torn_tails, 1u);
  EXPECT_EQ(fs::file_size(seg), size);
  EXPECT_EQ(SegmentFiles().size(), files);
}

// relaisctl reads next to a live daemon, which may delete a segment between our directory
// listing and our open: that segment's messages were all done, so it is simply not there.
TEST_F(SpoolTest, ReadOnlyRecoverySkipsASegmentDeletedUnderIt) {
  class VanishingIo : public FaultyIo {
   public:
    absl::StatusOr<io::FileHandle> Open(const std::string& path, io::OpenMode mode) override {
      if (mode == io::OpenMode::kReadOnly && path.ends_with("seg-0000000000000001.rls")) {
        return io::ErrnoStatus(ENOENT, path, "open");
      }
      return FaultyIo::Open(path, mode);
    }
  };
  FaultyIo io;
  {
    options_.segment_bytes_max = 1 << 16;
    auto spool = OpenSpool(io);
    AppendBatch(*spool, io, 0, 20, 2048);   // Segment 1.
    AppendBatch(*spool, io, 20, 20, 2048);  // Does not fit: segment 2.
  }
  VanishingIo vanishing;
  options_.read_only = true;
  RecoveryReport report;
  auto spool = OpenSpool(vanishing, &report);
  EXPECT_EQ(report.messages_live, 20u);  // Segment 2's, and no error for segment 1.
}

TEST_F(SpoolTest, AdoptsDirectoriesOfRemovedShards) {
  FaultyIo io;
  options_.shard_count = 3;
  options_.shard = 2;
  {
    auto spool = OpenSpool(io);
    AppendBatch(*spool, io, 0, 3);
  }
  options_.shard_count = 2;
  options_.shard = 0;  // 2 mod 2 == 0: shard 0 adopts shard-2/.
  RecoveryReport report;
  auto spool = OpenSpool(io, &report);
  EXPECT_EQ(report.messages_live, 3u);
}

}  // namespace
}  // namespace relais::spool
