#include "core/log/log.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <string>
#include <thread>
#include <vector>

namespace relais::log {
namespace {

TEST(LogTest, FormatsOneJsonLineWithFixedKeysFirst) {
  const std::string line =
      Format(1764000000123456, Level::kWarning, 2, "spool_recovered",
             {{"path", "/var/spool"}, {"messages", uint64_t{7}}, {"ok", true}, {"delta", -3}});
  EXPECT_EQ(line,
            "{\"ts\":\"2025-11-24T16:00:00.123456Z\",\"level\":\"warning\",\"shard\":2,"
            "\"event\":\"spool_recovered\",\"path\":\"/var/spool\",\"messages\":7,\"ok\":true,"
            "\"delta\":-3}\n");
}

TEST(LogTest, EscapesControlCharactersAndQuotes) {
  std::string out;
  AppendJsonEscaped(out, "a\"b\\c\r\n\x01\x7f\xC3\xA9");
  EXPECT_EQ(out, "a\\\"b\\\\c\\r\\n\\u0001\\u007f\xC3\xA9");
}

// Client bytes that are not UTF-8 become U+FFFD, one per byte: every line stays JSON.
TEST(LogTest, ReplacesInvalidUtf8) {
  const auto escaped = [](std::string_view in) {
    std::string out;
    AppendJsonEscaped(out, in);
    return out;
  };
  const std::string r = "\xEF\xBF\xBD";
  EXPECT_EQ(escaped("a\xFF"
                    "b"),
            "a" + r + "b");       // Never in UTF-8.
  EXPECT_EQ(escaped("\x80"), r);  // Stray continuation.
  EXPECT_EQ(escaped("\xC3"), r);  // Truncated at the end.
  EXPECT_EQ(escaped("\xC3"
                    "A"),
            r + "A");                                             // Truncated mid-text.
  EXPECT_EQ(escaped("\xC0\xAF"), r + r);                          // Overlong '/'.
  EXPECT_EQ(escaped("\xE0\x80\xAF"), r + r + r);                  // Overlong, 3 bytes.
  EXPECT_EQ(escaped("\xF0\x80\x80\xAF"), r + r + r + r);          // Overlong, 4 bytes.
  EXPECT_EQ(escaped("\xED\xA0\x80"), r + r + r);                  // Surrogate U+D800.
  EXPECT_EQ(escaped("\xF4\x90\x80\x80"), r + r + r + r);          // Past U+10FFFF.
  EXPECT_EQ(escaped("\xF8\x88\x80\x80\x80"), r + r + r + r + r);  // 5-byte form.
  EXPECT_EQ(escaped("\xC0\x22"), r + "\\\"");                     // Cannot hide a quote.
  EXPECT_EQ(escaped("\xC0\x5C"), r + "\\\\");                     // ... nor a backslash.
  // Valid ones pass: 2, 3 and 4 bytes, the edges of each range.
  EXPECT_EQ(escaped("\xC2\x80\xDF\xBF\xE0\xA0\x80\xED\x9F\xBF\xEE\x80\x80\xF0\x90\x80\x80"
                    "\xF4\x8F\xBF\xBF"),
            "\xC2\x80\xDF\xBF\xE0\xA0\x80\xED\x9F\xBF\xEE\x80\x80\xF0\x90\x80\x80"
            "\xF4\x8F\xBF\xBF");
  EXPECT_EQ(ValidUtf8("x\xE9y\xC3\xA9"), "x" + r + "y\xC3\xA9");
}

// Every byte value at every position: the result is always valid UTF-8 with no raw control
// character, so any JSON parser takes the line.
TEST(LogTest, EveryByteSequenceEscapesToValidUtf8) {
  for (int a = 0; a < 256; ++a) {
    for (int b = 0; b < 256; b += 7) {
      const char in[] = {static_cast<char>(a), static_cast<char>(b), '\xA0', 'z'};
      std::string out;
      AppendJsonEscaped(out, std::string_view(in, sizeof(in)));
      EXPECT_EQ(ValidUtf8(out), out);
      for (char c : out) {
        EXPECT_FALSE(static_cast<unsigned char>(c) < 0x20) << a << " " << b;
      }
    }
  }
}

TEST(LogTest, CutsLongValuesAndMarksTheRecord) {
  const std::string big(3 * kValueBytesMax, '"');  // Escaped: twice as long.
  const std::string line = Format(0, Level::kInfo, 1, "x", {{"v", big}, {"n", 1}});
  EXPECT_LT(line.size(), kValueBytesMax + 200);
  EXPECT_TRUE(line.ends_with(",\"n\":1,\"truncated\":true}\n")) << line.substr(line.size() - 60);
  // Not cut inside an escape or a character.
  const std::string accents(kValueBytesMax, '\xE9');
  const std::string cut = Format(0, Level::kInfo, 1, "x", {{"v", accents}});
  EXPECT_EQ(ValidUtf8(cut), cut);
  EXPECT_EQ(Format(0, Level::kInfo, 1, "x", {{"v", "short"}}).find("truncated"), std::string::npos);
}

std::string ReadAll(int fd) {
  std::string all;
  char buf[65536];
  for (ssize_t n; (n = read(fd, buf, sizeof(buf))) > 0;) {
    all.append(buf, static_cast<size_t>(n));
  }
  return all;
}

// Several producers, records far larger than PIPE_BUF, the output a pipe: every record comes
// out whole, none lost, none merged.
TEST(LogWriterTest, RecordsReachAPipeWholeFromManyThreads) {
  int fds[2];
  ASSERT_EQ(pipe2(fds, O_CLOEXEC), 0);
  const int old_fd = Fd();
  SetFd(fds[1]);
  std::string all;
  std::thread reader([&] { all = ReadAll(fds[0]); });
  StartWriter();
  constexpr int kThreads = 4;
  constexpr int kRecords = 300;
  std::vector<std::thread> producers;
  for (int t = 0; t < kThreads; ++t) {
    producers.emplace_back([t] {
      Channel* channel = OpenChannel(t, 8 << 20);
      std::string batch;
      for (int i = 0; i < kRecords; ++i) {
        // Three records per batch, two of them ~12 KiB (three values of 4000 bytes).
        const std::string pad(i % 3 == 0 ? 10 : 4000, 'p');
        AppendFormatted(batch, 0, Level::kInfo, t, "r",
                        {{"i", i}, {"a", pad}, {"b", pad}, {"c", pad}});
        if (i % 3 == 2) {
          EXPECT_TRUE(Append(channel, batch));
          batch.clear();
        }
      }
      EXPECT_TRUE(Append(channel, batch));
      Emit(Level::kInfo, t, "also_emitted", {{"pad", std::string(9000, 'e')}});
      Close(channel);
    });
  }
  for (auto& p : producers) {
    p.join();
  }
  StopWriter(10'000);
  SetFd(old_fd);
  close(fds[1]);
  reader.join();
  close(fds[0]);
  int counts[kThreads] = {};
  int emitted = 0;
  size_t lines = 0;
  for (size_t pos = 0; pos < all.size();) {
    const size_t end = all.find('\n', pos);
    ASSERT_NE(end, std::string::npos);
    const std::string_view line(all.data() + pos, end - pos);
    ++lines;
    ASSERT_TRUE(line.starts_with("{\"ts\":") && line.ends_with("}")) << line.substr(0, 80);
    ASSERT_EQ(line.find("{", 1), std::string::npos) << "merged: " << line.substr(0, 200);
    const size_t shard = line.find("\"shard\":");
    ASSERT_NE(shard, std::string::npos);
    const int t = line[shard + 8] - '0';
    if (line.find("also_emitted") != std::string::npos) {
      ++emitted;
    } else {
      const size_t i = line.find("\"i\":");
      EXPECT_EQ(std::stoi(std::string(line.substr(i + 4))), counts[t]) << "order or loss";
      ++counts[t];
    }
    pos = end + 1;
  }
  for (int t = 0; t < kThreads; ++t) {
    EXPECT_EQ(counts[t], kRecords);
  }
  EXPECT_EQ(emitted, kThreads);
  EXPECT_EQ(lines, size_t{kThreads * kRecords + kThreads});
}

TEST(LogTest, QuotesJsonStrings) { EXPECT_EQ(JsonString("a\"b"), "\"a\\\"b\""); }

TEST(LogTest, OmitsShardOutsideShards) {
  const std::string line = Format(0, Level::kInfo, -1, "start", {});
  EXPECT_EQ(line.find("shard"), std::string::npos);
}

}  // namespace
}  // namespace relais::log
