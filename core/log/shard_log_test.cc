// core/log/shard_log_test.cc — per-shard log lines through the log writer: written in
// whole lines, and when nobody reads them, dropped and counted instead of blocking the loop.
#include "core/log/shard_log.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <string>

namespace relais::log {
namespace {

TEST(ShardLog, WritesWholeLines) {
  base::SystemClock clock;
  int fds[2];
  ASSERT_EQ(pipe2(fds, O_CLOEXEC), 0);
  const int old_fd = log::Fd();
  log::SetFd(fds[1]);
  log::StartWriter();
  {
    ShardLog log(clock, 3);
    for (int i = 0; i < 100; ++i) {
      log.Info("message_accepted", {{"n", i}, {"padding", std::string(80, 'x')}});
    }
    log.Flush();
  }
  log::StopWriter();
  log::SetFd(old_fd);
  close(fds[1]);
  std::string all;
  char buf[4096];
  for (ssize_t n; (n = read(fds[0], buf, sizeof(buf))) > 0;) {
    all.append(buf, static_cast<size_t>(n));
  }
  close(fds[0]);
  size_t lines = 0;
  for (size_t pos = 0; (pos = all.find('\n', pos)) != std::string::npos; ++pos) {
    ++lines;
  }
  EXPECT_EQ(lines, 100u);
  EXPECT_NE(all.find("{\"ts\":"), std::string::npos);
  EXPECT_NE(all.find("\"shard\":3,\"event\":\"message_accepted\",\"n\":99,"), std::string::npos);
  EXPECT_EQ(log::DroppedRecords(3), 0u);
}

TEST(ShardLog, AReaderThatStopsCostsLinesNotTime) {
  base::SystemClock clock;
  int fds[2];
  ASSERT_EQ(pipe2(fds, O_CLOEXEC), 0);  // Nobody reads fds[0]: the pipe fills up.
  signal(SIGPIPE, SIG_IGN);             // As relaisd does: a gone reader is EPIPE, not death.
  const int old_fd = log::Fd();
  log::SetFd(fds[1]);
  log::StartWriter();
  const uint64_t start = clock.MonotonicMs();
  {
    ShardLog log(clock, 5, /*buffer_bytes_max=*/64 << 10);
    for (int i = 0; i < 5000; ++i) {
      log.Info("message_accepted", {{"n", i}, {"padding", std::string(100, 'x')}});
      log.Flush();  // The loop keeps turning: nothing here may wait for the reader.
    }
    EXPECT_LT(clock.MonotonicMs() - start, 5000u);
    EXPECT_GT(log.dropped(), 0u);  // 5000 lines of ~180 bytes > 64 KiB pipe + 64 KiB channel.
    EXPECT_FALSE(log.idle());
  }
  close(fds[0]);  // The reader goes away: the write in progress fails, the rest is dropped.
  log::StopWriter();
  log::SetFd(old_fd);
  close(fds[1]);
}

}  // namespace
}  // namespace relais::log
