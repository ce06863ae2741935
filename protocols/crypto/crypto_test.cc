// protocols/crypto/crypto_test.cc — digests, base64, and signatures that verify (or do not).
#include "protocols/crypto/crypto.h"

#include <gtest/gtest.h>

namespace relais::crypto {
namespace {

// `openssl genpkey -algorithm ed25519` and `-algorithm rsa -pkeyopt rsa_keygen_bits:1024`.
constexpr std::string_view kEd25519Pem =
    "-----BEGIN PRIVATE KEY-----\n"
    "MC4CAQAwBQYDK2VwBCIEIDsXC0kgO0YIHLyJfHtCUSmbNvhdcCKA95dRaDy9OGUG\n"
    "-----END PRIVATE KEY-----\n";

std::string Hex(const Sha256Digest& d) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (uint8_t b : d) {
    out.push_back(kHex[b >> 4]);
    out.push_back(kHex[b & 15]);
  }
  return out;
}

TEST(Crypto, Sha256KnownAnswersAndStreaming) {
  EXPECT_EQ(Hex(Sha256("")), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(Hex(Sha256("abc")), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  Sha256Stream s;
  s.Update("a");
  s.Update("");
  s.Update("bc");
  EXPECT_EQ(Hex(s.Finish()), Hex(Sha256("abc")));
}

TEST(Crypto, Base64) {
  EXPECT_EQ(Base64Encode("hello"), "aGVsbG8=");
  EXPECT_EQ(Base64Decode(" aGVs\r\n\tbG8= "), "hello");
  EXPECT_FALSE(Base64Decode("a$b="));
  EXPECT_FALSE(Base64Decode("abc"));
}

TEST(Crypto, Ed25519SignAndVerify) {
  absl::StatusOr<PrivateKey> key = PrivateKey::FromPem(kEd25519Pem);
  ASSERT_TRUE(key.ok()) << key.status();
  EXPECT_EQ(key->type(), KeyType::kEd25519);
  absl::StatusOr<std::string> sig = key->Sign("message");
  ASSERT_TRUE(sig.ok());
  EXPECT_EQ(sig->size(), 64u);
  absl::StatusOr<PublicKey> pub = PublicKey::Parse(KeyType::kEd25519, key->PublicKeyBytes());
  ASSERT_TRUE(pub.ok()) << pub.status();
  EXPECT_TRUE(pub->Verify("message", *sig));
  EXPECT_FALSE(pub->Verify("massage", *sig));
  std::string bad = *sig;
  bad[10] ^= 1;
  EXPECT_FALSE(pub->Verify("message", bad));
  EXPECT_FALSE(PrivateKey::FromPem("not a key").ok());
  EXPECT_FALSE(PublicKey::Parse(KeyType::kEd25519, "short").ok());
}

}  // namespace
}  // namespace relais::crypto
