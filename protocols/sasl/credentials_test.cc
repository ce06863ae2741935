#include "protocols/sasl/credentials.h"

#include <crypt.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <string>

#include "gtest/gtest.h"

namespace relais::sasl {
namespace {

// A real hash of `password` with a fresh salt of `prefix`'s method ("$y$", "$2b$", ...).
std::string Hash(const std::string& prefix, const std::string& password) {
  char setting[CRYPT_GENSALT_OUTPUT_SIZE];
  if (crypt_gensalt_rn(prefix.c_str(), prefix == "$2b$" || prefix == "$2y$" ? 5 : 0, nullptr, 0,
                       setting, sizeof(setting)) == nullptr) {
    ADD_FAILURE() << "crypt_gensalt_rn " << prefix;
    return "";
  }
  auto data = std::make_unique<crypt_data>();
  const char* out = crypt_rn(password.c_str(), setting, data.get(), sizeof(*data));
  EXPECT_NE(out, nullptr);
  return out == nullptr ? "" : out;
}

class TempDir {
 public:
  TempDir() {
    std::string pattern = ::testing::TempDir() + "/sasl-XXXXXX";
    path_ = mkdtemp(pattern.data());
  }
  ~TempDir() { std::system(("rm -rf '" + path_ + "'").c_str()); }
  std::string Write(const std::string& name, const std::string& text, mode_t mode) {
    const std::string file = path_ + "/" + name;
    const int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    EXPECT_GE(fd, 0);
    EXPECT_EQ(::write(fd, text.data(), text.size()), static_cast<ssize_t>(text.size()));
    ::fchmod(fd, mode);
    ::close(fd);
    return file;
  }

 private:
  std::string path_;
};

// One hash of each accepted method, made once for the whole file (each costs milliseconds).
const std::string& Yescrypt() {
  static const std::string h = Hash("$y$", "correct horse");
  return h;
}
const std::string& Bcrypt() {
  static const std::string h = Hash("$2b$", "battery staple");
  return h;
}

TEST(CredentialsTest, ParsesUsersCommentsBlankLinesAndDomains) {
  const std::string text = "# users\n\nalice:" + Yescrypt() +
                           "\n  \r\nbob@Example.COM:" + Bcrypt() +
                           ":Other.example, third.example\r\n# end\n";
  auto creds = Credentials::Parse(text, "/etc/relais/passwd");
  ASSERT_TRUE(creds.ok()) << creds.status();
  EXPECT_EQ(creds->size(), 2u);
  EXPECT_TRUE(creds->Contains("alice"));
  EXPECT_FALSE(creds->Contains("Alice"));           // Names are case-sensitive...
  EXPECT_TRUE(creds->Contains("bob@example.com"));  // ...but not their domain part.
  EXPECT_FALSE(creds->Contains("Bob@example.com"));
  EXPECT_TRUE(creds->OwnedDomains("alice").empty());
  const auto domains = creds->OwnedDomains("bob@EXAMPLE.com");
  ASSERT_EQ(domains.size(), 3u);
  EXPECT_EQ(domains[0], "example.com");
  EXPECT_EQ(domains[1], "other.example");
  EXPECT_EQ(domains[2], "third.example");
  EXPECT_TRUE(creds->OwnsDomain("bob@example.com", "OTHER.example"));
  EXPECT_FALSE(creds->OwnsDomain("bob@example.com", "evil.example"));
  EXPECT_TRUE(creds->OwnedDomains("nobody").empty());
}

TEST(CredentialsTest, RefusesEveryWeakOrUnknownHashNamingTheLine) {
  const struct {
    std::string hash, why;
  } kCases[] = {
      {"secret", "plaintext"},
      {"abJnggxhB/yWI", "DES"},
      {"_J9..abcdefghijklmnopq", "DES"},
      {"$1$abcdefgh$0123456789abcdefghijkl", "MD5"},
      {"$5$saltsalt$0123456789abcdefghijklmnopqrstuvwxyzABCDEFG", "SHA-256"},
      {"$6$saltsalt$0123456789abcdefghijklmnopqrstuvwxyzABCDEFG", "SHA-512"},
      {"$2a$05$abcdefghijklmnopqrstuu5s2v8.iXieOjg/.AySBTTZIIVFJeBui", "old bcrypt"},
      {"$7$CU..../....abcdefghij$abcdefghijklmnopqrstuvwxyz", "scrypt"},
      {"$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA", "unknown"},
      {"$y$j9T$short", "malformed"},
      {"", "empty"},
  };
  for (const auto& c : kCases) {
    const std::string text = "alice:" + Yescrypt() + "\n# two\nbob:" + c.hash + "\n";
    auto creds = Credentials::Parse(text, "/etc/relais/passwd");
    ASSERT_FALSE(creds.ok()) << c.hash;
    EXPECT_EQ(creds.status().code(), absl::StatusCode::kInvalidArgument);
    const std::string message(creds.status().message());
    EXPECT_NE(message.find("/etc/relais/passwd line 3"), std::string::npos) << message;
    EXPECT_NE(message.find(c.why), std::string::npos) << c.hash << ": " << message;
  }
}

TEST(CredentialsTest, AcceptsEveryAllowedMethod) {
  for (const std::string prefix : {"$y$", "$gy$", "$2b$", "$2y$"}) {
    const std::string hash = Hash(prefix, "pw");
    ASSERT_TRUE(hash.starts_with(prefix)) << hash;
    auto creds = Credentials::Parse("u:" + hash + "\n", "f");
    ASSERT_TRUE(creds.ok()) << prefix << ": " << creds.status();
    EXPECT_EQ(creds->Verify("u", "pw"), VerifyResult::kOk) << prefix;
    EXPECT_EQ(creds->Verify("u", "pW"), VerifyResult::kBadPassword) << prefix;
  }
}

TEST(CredentialsTest, RefusesBadLines) {
  const std::string h = Yescrypt();
  const std::string kBad[] = {
      "alice",                                            // No hash.
      "alice:" + h + ":a.example:extra",                  // Too many fields.
      ":" + h,                                            // Empty user.
      "al ice:" + h,                                      // Space in the name.
      "al:ice:" + h,                                      // Becomes a bad hash.
      std::string(256, 'a') + ":" + h,                    // Too long.
      "alice@:" + h,                                      // No domain after '@'.
      "alice@exa_mple.com:" + h,                          // Not a domain.
      "alice:" + h + ":bad..example",                     // Bad listed domain.
      "alice:" + h + ":",                                 // Empty domain list.
      "alice:" + h + "\nalice:" + h,                      // Twice.
      "Bob@example.com:" + h + "\nBob@EXAMPLE.com:" + h,  // Twice, by the domain's case.
  };
  for (const std::string& text : kBad) {
    auto creds = Credentials::Parse(text, "F");
    EXPECT_FALSE(creds.ok()) << text;
    EXPECT_NE(creds.status().message().find("credentials file F line "), std::string::npos)
        << creds.status();
  }
  EXPECT_TRUE(Credentials::Parse(std::string(255, 'a') + ":" + h, "F").ok());
  EXPECT_TRUE(Credentials::Parse("a.b_c%d+e-f@x-y.example:" + h, "F").ok());
}

TEST(CredentialsTest, VerifiesRightWrongAndUnknown) {
  auto creds = Credentials::Parse("alice:" + Yescrypt() + "\nbob:" + Bcrypt() + "\n", "f");
  ASSERT_TRUE(creds.ok()) << creds.status();
  EXPECT_EQ(creds->Verify("alice", "correct horse"), VerifyResult::kOk);
  EXPECT_EQ(creds->Verify("alice", "correct horse "), VerifyResult::kBadPassword);
  EXPECT_EQ(creds->Verify("alice", ""), VerifyResult::kBadPassword);
  EXPECT_EQ(creds->Verify("alice", std::string("correct horse\0x", 15)),
            VerifyResult::kBadPassword);
  EXPECT_EQ(creds->Verify("alice", "battery staple"), VerifyResult::kBadPassword);
  EXPECT_EQ(creds->Verify("bob", "battery staple"), VerifyResult::kOk);
  EXPECT_EQ(creds->Verify("bob", "Battery staple"), VerifyResult::kBadPassword);
  EXPECT_EQ(creds->Verify("carol", "correct horse"), VerifyResult::kUnknownUser);
  EXPECT_EQ(creds->Verify("Alice", "correct horse"), VerifyResult::kUnknownUser);
  EXPECT_EQ(creds->Verify(std::string(300, 'a'), "x"), VerifyResult::kUnknownUser);
  EXPECT_EQ(creds->Verify("bad name", "x"), VerifyResult::kUnknownUser);
  Credentials empty;
  EXPECT_EQ(empty.Verify("alice", "x"), VerifyResult::kUnknownUser);
}

TEST(CredentialsTest, UnknownUserPaysOneHash) {
  // Not a timing test of the comparison (noise would hide it); a check that an unknown user is
  // not answered for free: it takes at least a third of a real check's time.
  auto creds = Credentials::Parse("alice:" + Yescrypt() + "\n", "f");
  ASSERT_TRUE(creds.ok());
  auto time = [&](const char* user) {
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < 3; ++i) {
      (void)creds->Verify(user, "guess");
    }
    return std::chrono::steady_clock::now() - start;
  };
  const auto known = time("alice");
  const auto unknown = time("mallory");
  EXPECT_GT(unknown * 3, known);
}

// A bcrypt hash of a given cost (Hash() makes cost 5).
std::string BcryptCost(unsigned long cost, const std::string& password) {
  char setting[CRYPT_GENSALT_OUTPUT_SIZE];
  EXPECT_NE(crypt_gensalt_rn("$2b$", cost, nullptr, 0, setting, sizeof(setting)), nullptr);
  auto data = std::make_unique<crypt_data>();
  const char* out = crypt_rn(password.c_str(), setting, data.get(), sizeof(*data));
  EXPECT_NE(out, nullptr);
  return out == nullptr ? "" : out;
}

TEST(CredentialsTest, HashSettingsIsTheMethodAndCost) {
  EXPECT_EQ(HashSettings(Yescrypt()), "$y$j9T$");
  EXPECT_EQ(HashSettings(Bcrypt()), "$2b$05$");
  EXPECT_EQ(HashSettings("$gy$jBT$salt$hash"), "$gy$jBT$");
  EXPECT_EQ(HashSettings("nodollar"), "nodollar");
}

// The decoy for unknown users has the method and cost of most entries, not of the first.
TEST(CredentialsTest, DecoyFollowsTheMostCommonMethodAndCost) {
  const std::string b4 = BcryptCost(4, "x");
  auto mixed = Credentials::Parse(
      "first:" + Yescrypt() + "\na:" + b4 + "\nb:" + b4 + "\nc:" + Bcrypt() + "\n", "f");
  ASSERT_TRUE(mixed.ok()) << mixed.status();
  EXPECT_EQ(mixed->decoy_settings(), "$2b$04$");  // Two entries, against one and one.
  auto tie = Credentials::Parse("a:" + Bcrypt() + "\nb:" + Yescrypt() + "\n", "f");
  ASSERT_TRUE(tie.ok());
  EXPECT_EQ(tie->decoy_settings(), "$2b$05$");  // A tie: the first seen.
  auto most =
      Credentials::Parse("a:" + Bcrypt() + "\nb:" + Yescrypt() + "\nc:" + Yescrypt() + "\n", "f");
  ASSERT_TRUE(most.ok());
  EXPECT_EQ(most->decoy_settings(), "$y$j9T$");
  EXPECT_EQ(Credentials().decoy_settings(), "$y$j9T$");
}

// Measured, loosely (a loaded machine): in a file of one yescrypt entry first and three cheap
// bcrypt ones, an unknown user costs a bcrypt check, not a yescrypt one (the old decoy was the
// first entry's hash).
TEST(CredentialsTest, UnknownUserCostsWhatTheTypicalEntryCosts) {
  const std::string b4 = BcryptCost(4, "x");
  auto creds = Credentials::Parse(
      "slow:" + Yescrypt() + "\na:" + b4 + "\nb:" + b4 + "\nc:" + b4 + "\n", "f");
  ASSERT_TRUE(creds.ok()) << creds.status();
  auto time = [&](const char* user) {
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < 5; ++i) {
      (void)creds->Verify(user, "guess");
    }
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start) / 5;
  };
  const auto slow = time("slow");
  const auto typical = time("a");
  const auto unknown = time("mallory");
  std::printf("per check: yescrypt %.2f ms, bcrypt-4 %.2f ms, unknown user %.2f ms\n", slow.count(),
              typical.count(), unknown.count());
  EXPECT_LT(unknown, slow);
  EXPECT_GT(unknown * 3, typical);
}

TEST(CredentialsTest, LoadChecksTheFileMode) {
  TempDir dir;
  const std::string text = "alice:" + Yescrypt() + "\n";
  for (mode_t ok_mode : {0600, 0640, 0400, 0660}) {
    auto creds = Credentials::Load(dir.Write("ok", text, ok_mode));
    ASSERT_TRUE(creds.ok()) << std::oct << ok_mode << ": " << creds.status();
    EXPECT_EQ(creds->Verify("alice", "correct horse"), VerifyResult::kOk);
  }
  for (mode_t bad_mode : {0644, 0604, 0602, 0601}) {
    const std::string path = dir.Write("open", text, bad_mode);
    auto creds = Credentials::Load(path);
    ASSERT_FALSE(creds.ok()) << std::oct << bad_mode;
    EXPECT_EQ(creds.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_NE(creds.status().message().find(path), std::string::npos);
    EXPECT_NE(creds.status().message().find("chmod o-rwx"), std::string::npos);
  }
  auto missing = Credentials::Load(dir.Write("x", "", 0600) + ".none");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  auto bad = Credentials::Load(dir.Write("bad", text + "bob:plain\n", 0600));
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("/bad line 2"), std::string::npos) << bad.status();
}

TEST(CredentialsTest, RefusedHashReasonAcceptsOnlyYescryptAndBcrypt) {
  EXPECT_EQ(RefusedHashReason(Yescrypt()), "");
  EXPECT_EQ(RefusedHashReason(Bcrypt()), "");
  EXPECT_NE(RefusedHashReason(Yescrypt() + "!"), "");
}

}  // namespace
}  // namespace relais::sasl
