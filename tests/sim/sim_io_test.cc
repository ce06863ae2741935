// tests/sim/sim_io_test.cc — the simulated disk keeps exactly what was synced.
#include "tests/sim/sim_io.h"

#include <gtest/gtest.h>

#include <array>

#include "core/io/durable_dirs.h"

namespace relais::sim {
namespace {

struct Result final : io::IoOp {
  void OnIoComplete(int32_t r) override { result = r; }
  int32_t result = 1;
};

std::string Read(SimIo& io, const std::string& path) {
  auto f = io.Open(path, io::OpenMode::kReadOnly);
  if (!f.ok()) {
    return "<missing>";
  }
  std::array<char, 256> buffer{};
  auto n = io.ReadAt(*f, 0, buffer);
  io.Close(*f);
  return std::string(buffer.data(), *n);
}

TEST(SimIo, SyncedDataAndNamesSurviveAPowerCutUnsyncedNamesDoNot) {
  for (uint64_t seed = 0; seed < 50; ++seed) {
    SimIo io(seed);
    ASSERT_TRUE(io::DurableDirs(io).Ensure("/d").ok());
    auto a = io.Open("/d/a", io::OpenMode::kCreateExclusive);
    ASSERT_TRUE(a.ok());
    ASSERT_TRUE(io.SyncDir("/d").ok());
    Result w, s, w2;
    io.Write(*a, 0, "durable", w);
    io.Fdatasync(*a, s);
    EXPECT_EQ(w.result, 1) << "no completion inside the call";
    io.RunCompletions();
    EXPECT_EQ(w.result, 7);
    EXPECT_EQ(s.result, 0);
    io.Write(*a, 7, "-maybe", w2);
    io.RunCompletions();
    auto b = io.Open("/d/b", io::OpenMode::kCreateExclusive);  // Its name is never synced.
    ASSERT_TRUE(b.ok());
    ASSERT_TRUE(io.WriteAndSync(*b, 0, "data").ok());
    EXPECT_EQ(Read(io, "/d/a"), "durable-maybe");
    io.PowerCut();
    io.Reboot();
    const std::string after = Read(io, "/d/a");
    EXPECT_TRUE(after.starts_with("durable")) << seed;
    EXPECT_TRUE(std::string("durable-maybe").starts_with(after)) << after;  // Maybe torn.
    EXPECT_EQ(Read(io, "/d/b"), "<missing>");
    EXPECT_TRUE(io.violations().empty());
  }
}

TEST(SimIo, FailedSyncPoisonsTheFile) {
  SimIo io(1);
  io.set_faults({0, 0, 1.0});
  ASSERT_TRUE(io::DurableDirs(io).Ensure("/d").ok());
  auto a = io.Open("/d/a", io::OpenMode::kCreateExclusive);
  Result w, s, w2;
  io.Write(*a, 0, "x", w);
  io.Fdatasync(*a, s);
  io.RunCompletions();
  EXPECT_TRUE(s.result == -EIO || s.result == -ENOSPC) << s.result;
  EXPECT_TRUE(io.violations().empty());
  io.Write(*a, 1, "y", w2);
  EXPECT_EQ(io.violations().size(), 1u);
}

}  // namespace
}  // namespace relais::sim
