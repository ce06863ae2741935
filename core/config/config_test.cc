// The reading machinery on a small schema of its own; relaisd's schema is tested beside it
// (tools/relaisd/config_schema_test.cc).
#include "core/config/config.h"

#include <gtest/gtest.h>

namespace relais::config {
namespace {

enum class Color : uint8_t { kRed, kGreen };

struct Inner {
  uint32_t count = 7;
  std::vector<std::string> names = {"a"};
};

struct Options {
  Inner inner;
  uint64_t bytes = 1024;
  bool on = true;
  std::string label = "x";
  Color color = Color::kGreen;
  std::vector<mail::IpNetwork> networks;
  std::vector<std::string> domains;
  std::vector<std::string> pairs = {"k=v"};
};

constexpr Word<Color> kColors[] = {{"red", Color::kRed}, {"green", Color::kGreen}};

// [[pair]] tables: key and value, both required.
absl::Status AddPair(const Entry& e, Options& o) {
  if (auto s = e.OnlyKeys({"key", "value"}); !s.ok()) {
    return s;
  }
  std::string key, value;
  if (auto s = e.String("key", key, true); !s.ok()) {
    return s;
  }
  if (auto s = e.String("value", value, true); !s.ok()) {
    return s;
  }
  o.pairs.push_back(key + "=" + value);
  return absl::OkStatus();
}

const Key<Options> kKeys[] = {
    {"a", "count", &Field<&Options::inner, &Inner::count>, {1, 10}, "How many."},
    {"a", "names", &Field<&Options::inner, &Inner::names>, {0, 2}, "Names."},
    {"b", "bytes", &Field<&Options::bytes>, {0, 4096}, "Bytes."},
    {"b", "on", &Field<&Options::on>, {}, "Switch."},
    {"b", "label", &Field<&Options::label>, {1, 3}, "Label."},
    {"b", "color", &ChoiceField<kColors, &Options::color>, {}, "Color."},
    {"b", "networks", &Field<&Options::networks>, {0, 5}, "Networks."},
    {"b", "domains", &Field<&Options::domains>, {0, 5}, "Domains.", true},
};
const Array<Options> kArrays[] = {{"pair", [](Options& o) { o.pairs.clear(); }, AddPair}};
const Schema<Options> kSchema{kKeys, kArrays};

TEST(ConfigTest, EmptyTextGivesTheStructsDefaults) {
  auto o = Read(kSchema, "", "empty.toml");
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->inner.count, 7u);
  EXPECT_EQ(o->color, Color::kGreen);
  EXPECT_EQ(o->pairs, std::vector<std::string>{"k=v"});
}

TEST(ConfigTest, FillsTypedMembersAndEnums) {
  auto o = Read(kSchema, R"(
[a]
count = 3
names = ["Mixed", "b"]
[b]
bytes = 4096
on = false
label = "abc"
color = "red"
networks = ["10.0.0.0/8", "::1"]
domains = ["*.Example.com"]
[[pair]]
key = "x"
value = "y"
)",
                "t.toml");
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->inner.count, 3u);
  EXPECT_EQ(o->inner.names, (std::vector<std::string>{"mixed", "b"}));  // Lowercased.
  EXPECT_EQ(o->bytes, 4096u);
  EXPECT_FALSE(o->on);
  EXPECT_EQ(o->label, "abc");
  EXPECT_EQ(o->color, Color::kRed);
  ASSERT_EQ(o->networks.size(), 2u);
  EXPECT_EQ(o->networks[1].ToString(), "::1/128");
  EXPECT_EQ(o->domains, std::vector<std::string>{"*.example.com"});
  EXPECT_EQ(o->pairs, std::vector<std::string>{"x=y"});  // The file's tables replace defaults.
}

void ExpectError(std::string_view toml, std::string_view message) {
  auto o = Read(kSchema, toml, "bad.toml");
  ASSERT_FALSE(o.ok()) << toml;
  EXPECT_EQ(std::string(o.status().message()), message);
}

TEST(ConfigTest, ErrorsNameFileLineAndKey) {
  ExpectError("[a]\n\ncount = 11\n", "bad.toml:3: a.count: 11 is out of range [1, 10]");
  ExpectError("[a]\ncount = -1\n", "bad.toml:2: a.count: -1 is out of range [1, 10]");
  ExpectError("[a]\ncount = \"x\"\n", "bad.toml:2: a.count: expected an integer");
  ExpectError("[a]\ncounts = 1\n", "bad.toml:2: a.counts: unknown key");
  ExpectError("[c]\nx = 1\n", "bad.toml:1: c: unknown table");
  ExpectError("a = 1\n", "bad.toml:1: a: expected a table");
  ExpectError("[a]\nnames = [\"x\", \"y\", \"z\"]\n",
              "bad.toml:2: a.names: must have between 0 and 2 entries");
  ExpectError("[a]\nnames = [1]\n", "bad.toml:2: a.names: expected an array of strings");
  ExpectError("[b]\non = 1\n", "bad.toml:2: b.on: expected true or false");
  ExpectError("[b]\nlabel = \"abcd\"\n", "bad.toml:2: b.label: length must be in [1, 3]");
  ExpectError("[b]\ncolor = \"blue\"\n", "bad.toml:2: b.color: 'blue' is not one of red,green");
  ExpectError("[b]\ncolor = 1\n", "bad.toml:2: b.color: expected a string");
  ExpectError("[b]\nnetworks = [\"10.0.0.0/33\"]\n",
              "bad.toml:2: b.networks: '10.0.0.0/33' is not a CIDR network");
  ExpectError("[b]\ndomains = [\"a b\"]\n",
              "bad.toml:2: b.domains: 'a b' is not a domain, *.domain or *");
  ExpectError("pair = 1\n", "bad.toml:1: pair: expected [[pair]] tables");
  ExpectError("[[pair]]\nkey = \"x\"\n", "bad.toml:1: pair.value: is required");
  ExpectError("[[pair]]\nkey = \"\"\nvalue = \"y\"\n",
              "bad.toml:2: pair.key: expected a non-empty string");
  ExpectError("[[pair]]\nkey = \"x\"\nvalue = \"y\"\nmore = 1\n",
              "bad.toml:4: pair.more: unknown key");
  ExpectError("[a\n", "bad.toml:1:3: Error while parsing table header: expected ']', saw '\\n'");
}

TEST(ConfigTest, PrintsEveryKeyWithItsValue) {
  Options values;
  values.networks = {*mail::IpNetwork::Parse("10.0.0.0/8")};
  EXPECT_EQ(Print(kSchema, values),
            "\n[a]\n# How many.\ncount = 7\n# Names.\nnames = [\"a\"]\n"
            "\n[b]\n# Bytes.\nbytes = 1024\n# Switch.\non = true\n# Label.\nlabel = \"x\"\n"
            "# Color.\ncolor = \"green\"\n# Networks.\nnetworks = [\"10.0.0.0/8\"]\n"
            "# Domains.\ndomains = []\n");
  // What is printed reads back to the same values.
  auto o = Read(kSchema, Print(kSchema, values), "printed.toml");
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->networks.size(), 1u);
  EXPECT_EQ(o->color, Color::kGreen);
}

TEST(ConfigTest, ValidDomainPattern) {
  EXPECT_TRUE(ValidDomainPattern("*"));
  EXPECT_TRUE(ValidDomainPattern("*.example.com"));
  EXPECT_TRUE(ValidDomainPattern("xn--bcher-kva.example"));
  EXPECT_FALSE(ValidDomainPattern("a..b"));
  EXPECT_FALSE(ValidDomainPattern("*."));
  EXPECT_FALSE(ValidDomainPattern("a_b.com"));
}

TEST(ConfigTest, ReadFileNamesAMissingFile) {
  auto text = ReadFile("/nonexistent/relais.toml");
  ASSERT_FALSE(text.ok());
  EXPECT_EQ(std::string(text.status().message()),
            "/nonexistent/relais.toml: cannot open config file");
}

}  // namespace
}  // namespace relais::config
