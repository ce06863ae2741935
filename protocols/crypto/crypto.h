// protocols/crypto/crypto.h — the few primitives DKIM needs, over BoringSSL (which stays inside
// protocols/crypto and the TLS transport, protocols/tls): SHA-256, base64, RSA (PKCS #1 v1.5
// with SHA-256) and Ed25519 signatures, public keys as DKIM publishes them and private keys as
// PKCS #8 PEM. Crypto only: no TLS here.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace relais::crypto {

using Sha256Digest = std::array<uint8_t, 32>;

[[nodiscard]] Sha256Digest Sha256(std::string_view data);

// Incremental SHA-256, for hashing a body while it arrives.
class Sha256Stream {
 public:
  Sha256Stream();
  ~Sha256Stream();
  Sha256Stream(const Sha256Stream&) = delete;
  Sha256Stream& operator=(const Sha256Stream&) = delete;
  void Update(std::string_view data);
  [[nodiscard]] Sha256Digest Finish();
  // Takes `other`'s state: the digest of a prefix of a stream without hashing it twice
  // (DKIM's l= over one canonical body).
  void CopyFrom(const Sha256Stream& other);

 private:
  struct State;
  std::unique_ptr<State> state_;
};

[[nodiscard]] std::string Base64Encode(std::string_view data);
// Ignores whitespace (DKIM values may be folded); nullopt when not valid base64.
[[nodiscard]] std::optional<std::string> Base64Decode(std::string_view text);

enum class KeyType : uint8_t { kRsa, kEd25519 };

class PublicKey {
 public:
  // RSA: SubjectPublicKeyInfo DER (or a bare RSAPublicKey); Ed25519: the raw 32 bytes
  // (RFC 8463).
  [[nodiscard]] static absl::StatusOr<PublicKey> Parse(KeyType type, std::string_view der);
  ~PublicKey();
  PublicKey(PublicKey&&) noexcept;
  PublicKey& operator=(PublicKey&&) noexcept;
  [[nodiscard]] KeyType type() const { return type_; }
  [[nodiscard]] uint32_t bits() const;
  // RSA: PKCS #1 v1.5 over SHA-256(data). Ed25519: PureEdDSA over data.
  [[nodiscard]] bool Verify(std::string_view data, std::string_view signature) const;

 private:
  PublicKey() = default;
  KeyType type_ = KeyType::kRsa;
  void* key_ = nullptr;  // EVP_PKEY
};

class PrivateKey {
 public:
  // PKCS #8 PEM ("-----BEGIN PRIVATE KEY-----", as `openssl genpkey` writes), RSA or Ed25519.
  [[nodiscard]] static absl::StatusOr<PrivateKey> FromPem(std::string_view pem);
  ~PrivateKey();
  PrivateKey(PrivateKey&&) noexcept;
  PrivateKey& operator=(PrivateKey&&) noexcept;
  [[nodiscard]] KeyType type() const { return type_; }
  [[nodiscard]] uint32_t bits() const;
  // As PublicKey::Verify checks.
  [[nodiscard]] absl::StatusOr<std::string> Sign(std::string_view data) const;
  // The public half as DKIM publishes it in p= (before base64): SubjectPublicKeyInfo DER for
  // RSA, the raw 32 bytes for Ed25519.
  [[nodiscard]] std::string PublicKeyBytes() const;

 private:
  PrivateKey() = default;
  KeyType type_ = KeyType::kRsa;
  void* key_ = nullptr;  // EVP_PKEY
};

}  // namespace relais::crypto
