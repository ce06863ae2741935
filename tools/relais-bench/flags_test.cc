// tools/relais-bench/flags_test.cc — flag syntax and units.
#include "tools/relais-bench/flags.h"

#include <gtest/gtest.h>

#include "absl/flags/flag.h"
#include "tools/cli/args.h"

// The flags these tests use, declared as relais-bench's own are in flags.cc.
ABSL_FLAG(std::string, a, "", "test");
ABSL_FLAG(std::string, b, "", "test");
ABSL_FLAG(bool, on, false, "test");
ABSL_FLAG(relais::cli::Repeated, r, {}, "test");

namespace relais::bench {
namespace {

TEST(Flags, ValuesSwitchesRepeatsAndErrors) {
  absl::StatusOr<Flags> f = Flags::Parse({"--a", "1", "--b=2", "--on", "pos", "--r", "x", "--r=y"},
                                         {"on"}, {"a", "b"}, {"r"});
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->Get("a"), "1");
  EXPECT_EQ(f->Get("b"), "2");
  EXPECT_TRUE(f->Has("on"));
  EXPECT_FALSE(f->Has("off"));
  EXPECT_EQ(f->GetAll("r"), (std::vector<std::string>{"x", "y"}));
  EXPECT_EQ(f->positional(), std::vector<std::string>{"pos"});
  EXPECT_FALSE(Flags::Parse({"--nope"}, {}, {"a"}).ok());
  EXPECT_FALSE(Flags::Parse({"--a"}, {}, {"a"}).ok());
  EXPECT_FALSE(Flags::Parse({"--a", "1", "--a", "2"}, {}, {"a"}).ok());
  EXPECT_FALSE(Flags::Parse({"--on=1"}, {"on"}, {}).ok());
  // Messages name the flag; --help is a switch only where the command takes it.
  EXPECT_EQ(std::string(Flags::Parse({"--nope"}, {}, {"a"}).status().message()),
            "unknown flag --nope");
  EXPECT_EQ(std::string(Flags::Parse({"--a"}, {}, {"a"}).status().message()), "--a needs a value");
  EXPECT_EQ(std::string(Flags::Parse({"--on=1"}, {"on"}, {}).status().message()),
            "--on takes no value");
  EXPECT_TRUE(Flags::Parse({"--help"}, {"help"}, {})->Has("help"));
  EXPECT_FALSE(Flags::Parse({"--help"}, {}, {"a"}).ok());
  // A value that looks like a flag is taken as the value; "--" is a word; a switch twice is on.
  absl::StatusOr<Flags> g = Flags::Parse({"--a", "--b", "--", "--on", "--on"}, {"on"}, {"a", "b"});
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(g->Get("a"), "--b");
  EXPECT_FALSE(g->Has("b"));
  EXPECT_TRUE(g->Has("on"));
  EXPECT_EQ(g->positional(), std::vector<std::string>{"--"});
}

TEST(Flags, Units) {
  EXPECT_EQ(*ParseDurationMs("250ms"), 250u);
  EXPECT_EQ(*ParseDurationMs("10"), 10'000u);
  EXPECT_EQ(*ParseDurationMs("1.5s"), 1'500u);
  EXPECT_EQ(*ParseDurationMs("2m"), 120'000u);
  EXPECT_FALSE(ParseDurationMs("ten").ok());
  EXPECT_FALSE(ParseDurationMs("5 s").ok());
  EXPECT_EQ(*ParseBytes("2k"), 2048u);
  EXPECT_EQ(*ParseBytes("1MiB"), 1048576u);
  EXPECT_EQ(*ParseBytes("300"), 300u);
  EXPECT_FALSE(ParseBytes("2g").ok());
  EXPECT_FALSE(ParseBytes("-1").ok());
  EXPECT_EQ(*ParseCount("n", "42"), 42u);
  EXPECT_FALSE(ParseCount("n", "4x").ok());
  EXPECT_DOUBLE_EQ(*ParseFraction("p", "0.05"), 0.05);
  EXPECT_FALSE(ParseFraction("p", "1.5").ok());
}

}  // namespace
}  // namespace relais::bench
