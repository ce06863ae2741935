#include "tools/cli/args.h"

#include <gtest/gtest.h>

#include <cstdint>

#include "absl/flags/flag.h"

ABSL_FLAG(std::string, config_file, "", "test: a string");
ABSL_FLAG(int32_t, count, 3, "test: an integer");
ABSL_FLAG(bool, dry_run, false, "test: a switch");
ABSL_FLAG(relais::cli::Repeated, reply, {}, "test: may be repeated");

namespace relais::cli {
namespace {

constexpr std::string_view kFlags[] = {"config-file", "count", "dry-run", "reply"};

absl::StatusOr<Args> ParseAll(std::vector<std::string> words) {
  absl::SetFlag(&FLAGS_config_file, "");
  absl::SetFlag(&FLAGS_count, 3);
  absl::SetFlag(&FLAGS_dry_run, false);
  absl::SetFlag(&FLAGS_reply, Repeated{});
  std::vector<char*> argv;
  for (std::string& w : words) {
    argv.push_back(w.data());
  }
  return Parse(argv, kFlags);
}

TEST(ArgsTest, ValuesSwitchesPositionalsAndRepeats) {
  absl::StatusOr<Args> a = ParseAll({"--config-file", "x.toml", "pos", "--count=7", "--dry-run",
                                     "--reply", "A:1", "-", "--reply=B,2", "--", "--count"});
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(absl::GetFlag(FLAGS_config_file), "x.toml");
  EXPECT_EQ(absl::GetFlag(FLAGS_count), 7);
  EXPECT_TRUE(absl::GetFlag(FLAGS_dry_run));
  EXPECT_EQ(absl::GetFlag(FLAGS_reply).values, (std::vector<std::string>{"A:1", "B,2"}));
  EXPECT_EQ(a->positional, (std::vector<std::string>{"pos", "-", "--count"}));
  EXPECT_EQ(a->given, (std::set<std::string>{"config-file", "count", "dry-run", "reply"}));
  EXPECT_FALSE(a->help);
  EXPECT_TRUE(ParseAll({"pos", "--help"})->help);
  EXPECT_TRUE(ParseAll({"--dry-run", "--dry-run"}).ok());  // A switch twice is still on.
  // Untouched flags keep their ABSL_FLAG defaults.
  ASSERT_TRUE(ParseAll({}).ok());
  EXPECT_EQ(absl::GetFlag(FLAGS_count), 3);
}

void ExpectError(std::vector<std::string> words, absl::StatusCode code, std::string_view text) {
  absl::StatusOr<Args> a = ParseAll(std::move(words));
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.status().code(), code);
  EXPECT_EQ(std::string(a.status().message()), text);
}

TEST(ArgsTest, ErrorsNameTheFlag) {
  ExpectError({"--nope"}, absl::StatusCode::kNotFound, "unknown flag --nope");
  ExpectError({"--nope=1"}, absl::StatusCode::kNotFound, "unknown flag --nope");
  // Declared, but not one this command takes: underscores are not the spelling.
  ExpectError({"--config_file", "x"}, absl::StatusCode::kNotFound, "unknown flag --config_file");
  ExpectError({"--count"}, absl::StatusCode::kInvalidArgument, "--count needs a value");
  ExpectError({"--count", "1", "--count", "2"}, absl::StatusCode::kInvalidArgument,
              "--count given twice");
  absl::StatusOr<Args> bad = ParseAll({"--count", "many"});
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_TRUE(std::string(bad.status().message()).starts_with("--count: ")) << bad.status();
  EXPECT_FALSE(ParseAll({"--dry-run=maybe"}).ok());
}

}  // namespace
}  // namespace relais::cli
