// protocols/crypto/crypto.cc — see crypto.h.
#include "protocols/crypto/crypto.h"

#include <openssl/base64.h>
#include <openssl/bio.h>
#include <openssl/bytestring.h>
#include <openssl/evp.h>
#include <openssl/mem.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/sha.h>

#include <utility>

namespace relais::crypto {

namespace {

EVP_PKEY* Key(void* p) { return static_cast<EVP_PKEY*>(p); }

}  // namespace

Sha256Digest Sha256(std::string_view data) {
  Sha256Digest out;
  SHA256(reinterpret_cast<const uint8_t*>(data.data()), data.size(), out.data());
  return out;
}

struct Sha256Stream::State {
  SHA256_CTX ctx;
};

Sha256Stream::Sha256Stream() : state_(std::make_unique<State>()) { SHA256_Init(&state_->ctx); }
Sha256Stream::~Sha256Stream() = default;

void Sha256Stream::Update(std::string_view data) {
  SHA256_Update(&state_->ctx, data.data(), data.size());
}

void Sha256Stream::CopyFrom(const Sha256Stream& other) { state_->ctx = other.state_->ctx; }

Sha256Digest Sha256Stream::Finish() {
  Sha256Digest out;
  SHA256_Final(out.data(), &state_->ctx);
  return out;
}

std::string Base64Encode(std::string_view data) {
  size_t length = 0;
  EVP_EncodedLength(&length, data.size());
  std::string out(length, '\0');
  const size_t written =
      EVP_EncodeBlock(reinterpret_cast<uint8_t*>(out.data()),
                      reinterpret_cast<const uint8_t*>(data.data()), data.size());
  out.resize(written);
  return out;
}

std::optional<std::string> Base64Decode(std::string_view text) {
  std::string compact;
  for (char c : text) {
    if (c != ' ' && c != '\t' && c != '\r' && c != '\n') {
      compact.push_back(c);
    }
  }
  size_t max = 0;
  if (!EVP_DecodedLength(&max, compact.size())) {
    return std::nullopt;
  }
  std::string out(max, '\0');
  size_t length = 0;
  if (!EVP_DecodeBase64(reinterpret_cast<uint8_t*>(out.data()), &length, max,
                        reinterpret_cast<const uint8_t*>(compact.data()), compact.size())) {
    return std::nullopt;
  }
  out.resize(length);
  return out;
}

absl::StatusOr<PublicKey> PublicKey::Parse(KeyType type, std::string_view der) {
  PublicKey key;
  key.type_ = type;
  const auto* bytes = reinterpret_cast<const uint8_t*>(der.data());
  if (type == KeyType::kEd25519) {
    if (der.size() != 32) {
      return absl::InvalidArgumentError("an Ed25519 key is 32 bytes");
    }
    key.key_ = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, nullptr, bytes, der.size());
  } else {
    CBS cbs;
    CBS_init(&cbs, bytes, der.size());
    EVP_PKEY* pkey = EVP_parse_public_key(&cbs);
    if (pkey == nullptr || CBS_len(&cbs) != 0) {
      EVP_PKEY_free(pkey);
      pkey = nullptr;
      CBS_init(&cbs, bytes, der.size());
      RSA* rsa = RSA_parse_public_key(&cbs);  // A bare RSAPublicKey.
      if (rsa != nullptr && CBS_len(&cbs) == 0) {
        pkey = EVP_PKEY_new();
        EVP_PKEY_assign_RSA(pkey, rsa);
      } else {
        RSA_free(rsa);
      }
    }
    if (pkey != nullptr && EVP_PKEY_id(pkey) != EVP_PKEY_RSA) {
      EVP_PKEY_free(pkey);
      return absl::InvalidArgumentError("the key is not an RSA key");
    }
    key.key_ = pkey;
  }
  if (key.key_ == nullptr) {
    return absl::InvalidArgumentError("the key cannot be parsed");
  }
  return key;
}

PublicKey::~PublicKey() { EVP_PKEY_free(Key(key_)); }
PublicKey::PublicKey(PublicKey&& other) noexcept
    : type_(other.type_), key_(std::exchange(other.key_, nullptr)) {}
PublicKey& PublicKey::operator=(PublicKey&& other) noexcept {
  std::swap(type_, other.type_);
  std::swap(key_, other.key_);
  return *this;
}

uint32_t PublicKey::bits() const { return static_cast<uint32_t>(EVP_PKEY_bits(Key(key_))); }

bool PublicKey::Verify(std::string_view data, std::string_view signature) const {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  const EVP_MD* md = type_ == KeyType::kRsa ? EVP_sha256() : nullptr;
  const bool ok =
      EVP_DigestVerifyInit(ctx, nullptr, md, nullptr, Key(key_)) == 1 &&
      EVP_DigestVerify(ctx, reinterpret_cast<const uint8_t*>(signature.data()), signature.size(),
                       reinterpret_cast<const uint8_t*>(data.data()), data.size()) == 1;
  EVP_MD_CTX_free(ctx);
  return ok;
}

absl::StatusOr<PrivateKey> PrivateKey::FromPem(std::string_view pem) {
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  EVP_PKEY* pkey = PEM_read_bio_PrivateKey(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  if (pkey == nullptr) {
    return absl::InvalidArgumentError("not a PEM private key (PKCS #8, unencrypted)");
  }
  PrivateKey key;
  key.key_ = pkey;
  switch (EVP_PKEY_id(pkey)) {
    case EVP_PKEY_RSA:
      key.type_ = KeyType::kRsa;
      break;
    case EVP_PKEY_ED25519:
      key.type_ = KeyType::kEd25519;
      break;
    default:
      return absl::InvalidArgumentError("the key is neither RSA nor Ed25519");
  }
  return key;
}

PrivateKey::~PrivateKey() { EVP_PKEY_free(Key(key_)); }
PrivateKey::PrivateKey(PrivateKey&& other) noexcept
    : type_(other.type_), key_(std::exchange(other.key_, nullptr)) {}
PrivateKey& PrivateKey::operator=(PrivateKey&& other) noexcept {
  std::swap(type_, other.type_);
  std::swap(key_, other.key_);
  return *this;
}

uint32_t PrivateKey::bits() const { return static_cast<uint32_t>(EVP_PKEY_bits(Key(key_))); }

std::string PrivateKey::PublicKeyBytes() const {
  if (type_ == KeyType::kEd25519) {
    std::string raw(32, '\0');
    size_t length = raw.size();
    EVP_PKEY_get_raw_public_key(Key(key_), reinterpret_cast<uint8_t*>(raw.data()), &length);
    raw.resize(length);
    return raw;
  }
  CBB cbb;
  uint8_t* der = nullptr;
  size_t length = 0;
  std::string out;
  if (CBB_init(&cbb, 0) && EVP_marshal_public_key(&cbb, Key(key_)) &&
      CBB_finish(&cbb, &der, &length)) {
    out.assign(reinterpret_cast<const char*>(der), length);
    OPENSSL_free(der);
  } else {
    CBB_cleanup(&cbb);
  }
  return out;
}

absl::StatusOr<std::string> PrivateKey::Sign(std::string_view data) const {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  const EVP_MD* md = type_ == KeyType::kRsa ? EVP_sha256() : nullptr;
  size_t length = 0;
  std::string signature;
  bool ok = EVP_DigestSignInit(ctx, nullptr, md, nullptr, Key(key_)) == 1 &&
            EVP_DigestSign(ctx, nullptr, &length, reinterpret_cast<const uint8_t*>(data.data()),
                           data.size()) == 1;
  if (ok) {
    signature.resize(length);
    ok = EVP_DigestSign(ctx, reinterpret_cast<uint8_t*>(signature.data()), &length,
                        reinterpret_cast<const uint8_t*>(data.data()), data.size()) == 1;
    signature.resize(length);
  }
  EVP_MD_CTX_free(ctx);
  if (!ok) {
    return absl::InternalError("signing failed");
  }
  return signature;
}

}  // namespace relais::crypto
