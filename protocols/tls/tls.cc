// protocols/tls/tls.cc — see tls.h.
//
// The SSL object reads and writes through a BIO of our own (not a socket, not a memory BIO):
// reads come from the bytes OnReceived is handing over during that call, writes go straight
// into the pump's output string during TakeOutput (or, between calls, into a small pending
// string). Nothing is buffered past a call but a partial record inside BoringSSL (whose
// record buffers are released whenever they are empty) and handshake bytes not yet taken.
#include "protocols/tls/tls.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <openssl/bio.h>
#include <openssl/bytestring.h>
#include <openssl/ec_key.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hkdf.h>
#include <openssl/hmac.h>
#include <openssl/mem.h>
#include <openssl/pem.h>
#include <openssl/pool.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <list>
#include <unordered_map>
#include <utility>

#include "core/base/check.h"
#include "core/base/strings.h"

namespace relais::tls {

namespace {

using bssl::UniquePtr;

// At most this much of the session's output is encrypted per TakeOutput (four full records):
// a 25 MB message goes out in steps, neither held twice nor encrypted in one loop turn.
constexpr size_t kEncryptStepBytes = 64 * 1024;

// A client session (serialized: the peer's chain, the ticket, the secrets) larger than this is
// not kept for resumption: usual chains of one or two certificates fit.
constexpr size_t kSessionBytesMax = 8 * 1024;

// TLS 1.2 suites: ECDHE key exchange and AEAD only (TLS 1.3's are all AEAD).
constexpr char kCipherList[] =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";
constexpr char kGroups[] = "X25519:P-256";

// The library's reason for the last error, and the queue cleared.
std::string TakeErrorReason() {
  const uint32_t error = ERR_get_error();
  ERR_clear_error();
  if (error == 0) {
    return "unknown error";
  }
  const char* reason = ERR_reason_error_string(error);
  const char* lib = ERR_lib_error_string(error);
  std::string out = lib != nullptr ? lib : "library";
  out += ": ";
  out += reason != nullptr ? reason : "unknown";
  return out;
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  FILE* file = std::fopen(path.c_str(), "rb");
  if (file == nullptr) {
    return absl::NotFoundError("tls: cannot read " + path + ": " + std::strerror(errno));
  }
  std::string data;
  char buffer[4096];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof buffer, file)) > 0) {
    data.append(buffer, n);
  }
  const bool failed = std::ferror(file) != 0;
  std::fclose(file);
  if (failed) {
    return absl::DataLossError("tls: cannot read " + path);
  }
  return data;
}

bool IsAddressLiteral(std::string_view name) {
  const std::string text(name);
  in6_addr address;
  return inet_pton(AF_INET, text.c_str(), &address) == 1 ||
         inet_pton(AF_INET6, text.c_str(), &address) == 1;
}

std::string Lower(std::string_view text) {
  std::string out(text);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') {
      c = static_cast<char>(c - 'A' + 'a');
    }
  }
  return out;
}

// One certificate chain as the server hands it out: DER buffers shared by every connection.
struct Chain {
  std::vector<UniquePtr<CRYPTO_BUFFER>> certs;
  std::vector<CRYPTO_BUFFER*> raw;  // certs, as SSL_set_chain_and_key takes them.
  UniquePtr<EVP_PKEY> key;
  bool ecdsa = false;
  std::vector<std::string> names;  // Lower-case DNS names of the leaf (SANs, else the CN).
};

// Parses a PEM chain and its key; checks the key against the leaf. Errors name the file.
absl::StatusOr<Chain> LoadChain(const CertificateFiles& files) {
  ERR_clear_error();
  auto chain_pem = ReadFile(files.chain_path);
  if (!chain_pem.ok()) {
    return chain_pem.status();
  }
  auto key_pem = ReadFile(files.key_path);
  if (!key_pem.ok()) {
    return key_pem.status();
  }
  Chain chain;
  UniquePtr<X509> leaf;
  {
    UniquePtr<BIO> bio(BIO_new_mem_buf(chain_pem->data(), static_cast<int>(chain_pem->size())));
    for (;;) {
      UniquePtr<X509> cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
      if (cert == nullptr) {
        break;
      }
      uint8_t* der = nullptr;
      const int length = i2d_X509(cert.get(), &der);
      if (length <= 0) {
        return absl::InvalidArgumentError("tls: " + files.chain_path + ": bad certificate");
      }
      chain.certs.emplace_back(CRYPTO_BUFFER_new(der, static_cast<size_t>(length), nullptr));
      OPENSSL_free(der);
      if (leaf == nullptr) {
        leaf = std::move(cert);
      }
    }
    ERR_clear_error();  // The loop ends on "no start line".
  }
  if (leaf == nullptr) {
    return absl::InvalidArgumentError("tls: " + files.chain_path +
                                      ": no PEM certificate (the chain must start with the leaf)");
  }
  {
    UniquePtr<BIO> bio(BIO_new_mem_buf(key_pem->data(), static_cast<int>(key_pem->size())));
    chain.key.reset(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  }
  if (chain.key == nullptr) {
    return absl::InvalidArgumentError("tls: " + files.key_path + ": no PEM private key (" +
                                      TakeErrorReason() + ")");
  }
  const int type = EVP_PKEY_id(chain.key.get());
  if (type != EVP_PKEY_EC && type != EVP_PKEY_RSA) {
    return absl::InvalidArgumentError("tls: " + files.key_path + ": key is neither ECDSA nor RSA");
  }
  chain.ecdsa = type == EVP_PKEY_EC;
  if (X509_check_private_key(leaf.get(), chain.key.get()) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError("tls: " + files.key_path +
                                      ": key does not match the leaf certificate of " +
                                      files.chain_path);
  }
  UniquePtr<GENERAL_NAMES> names(static_cast<GENERAL_NAMES*>(
      X509_get_ext_d2i(leaf.get(), NID_subject_alt_name, nullptr, nullptr)));
  if (names != nullptr) {
    for (size_t i = 0; i < sk_GENERAL_NAME_num(names.get()); ++i) {
      const GENERAL_NAME* name = sk_GENERAL_NAME_value(names.get(), i);
      if (name->type == GEN_DNS) {
        const ASN1_STRING* dns = name->d.dNSName;
        chain.names.push_back(
            Lower(std::string_view(reinterpret_cast<const char*>(ASN1_STRING_get0_data(dns)),
                                   static_cast<size_t>(ASN1_STRING_length(dns)))));
      }
    }
  }
  if (chain.names.empty()) {
    char cn[256];
    const int length =
        X509_NAME_get_text_by_NID(X509_get_subject_name(leaf.get()), NID_commonName, cn, sizeof cn);
    if (length > 0) {
      chain.names.push_back(Lower(std::string_view(cn, static_cast<size_t>(length))));
    }
  }
  ERR_clear_error();
  for (const auto& cert : chain.certs) {
    chain.raw.push_back(cert.get());
  }
  return chain;
}

bool NameMatches(std::string_view pattern, std::string_view host) {
  if (pattern == host) {
    return true;
  }
  // "*.example.com" covers exactly one label: "a.example.com", not "example.com" or "a.b.ex...".
  if (pattern.size() > 2 && pattern.substr(0, 2) == "*.") {
    const size_t dot = host.find('.');
    return dot != std::string_view::npos && dot > 0 && host.substr(dot) == pattern.substr(1);
  }
  return false;
}

// The custom BIO: reads from the bytes being received, writes to the current output string.
struct BioState {
  std::string_view input;         // The rest of what OnReceived is handing over.
  std::string pending;            // Output produced outside TakeOutput.
  std::string* target = nullptr;  // TakeOutput's `out` while it runs.
};

int BioWrite(BIO* bio, const char* data, int length) {
  auto* state = static_cast<BioState*>(BIO_get_data(bio));
  BIO_clear_retry_flags(bio);
  std::string& out = state->target != nullptr ? *state->target : state->pending;
  out.append(data, static_cast<size_t>(length));
  return length;
}

int BioRead(BIO* bio, char* data, int length) {
  auto* state = static_cast<BioState*>(BIO_get_data(bio));
  BIO_clear_retry_flags(bio);
  if (state->input.empty()) {
    BIO_set_retry_read(bio);
    return -1;
  }
  const size_t n = std::min(state->input.size(), static_cast<size_t>(length));
  std::memcpy(data, state->input.data(), n);
  state->input.remove_prefix(n);
  return static_cast<int>(n);
}

long BioCtrl(BIO*, int command, long, void*) {  // NOLINT(google-runtime-int): BIO's signature.
  return command == BIO_CTRL_FLUSH ? 1 : 0;
}

const BIO_METHOD* Method() {
  static const BIO_METHOD* method = [] {
    BIO_METHOD* m = BIO_meth_new(BIO_TYPE_SOURCE_SINK, "relais-tls");
    BIO_meth_set_write(m, BioWrite);
    BIO_meth_set_read(m, BioRead);
    BIO_meth_set_ctrl(m, BioCtrl);
    return m;
  }();
  return method;
}

bool ConfigureCommon(SSL_CTX* ctx) {
  return SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) == 1 &&
         SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) == 1 &&
         SSL_CTX_set_strict_cipher_list(ctx, kCipherList) == 1 &&
         SSL_CTX_set1_curves_list(ctx, kGroups) == 1;
}

uint16_t ReadU16(const uint8_t* p) { return static_cast<uint16_t>((p[0] << 8) | p[1]); }

}  // namespace

// ---------------------------------------------------------------------------------------------
// Contexts.

struct ServerContext::Impl {
  struct TicketKey {
    uint64_t epoch = UINT64_MAX;
    uint8_t name[16];
    uint8_t aes[32];
    uint8_t hmac[32];
  };

  UniquePtr<SSL_CTX> ctx;
  std::vector<Chain> chains;
  std::string secret;
  uint32_t rotation_s = 3600;
  const base::Clock* clock = nullptr;
  base::SystemClock system_clock;
  std::array<TicketKey, 2> keys;  // The last two epochs asked for.

  uint64_t Epoch() const {
    const base::Clock& c = clock != nullptr ? *clock : system_clock;
    return c.UnixMicros() / 1'000'000 / rotation_s;
  }

  const TicketKey& Key(uint64_t epoch) {
    for (const TicketKey& key : keys) {
      if (key.epoch == epoch) {
        return key;
      }
    }
    // Replace an empty slot, else the older epoch.
    TicketKey& slot = keys[0].epoch == UINT64_MAX     ? keys[0]
                      : keys[1].epoch == UINT64_MAX   ? keys[1]
                      : keys[0].epoch < keys[1].epoch ? keys[0]
                                                      : keys[1];
    uint8_t info[8];
    for (int i = 0; i < 8; ++i) {
      info[i] = static_cast<uint8_t>(epoch >> (56 - 8 * i));
    }
    static constexpr char kSalt[] = "relais session ticket keys v1";
    uint8_t okm[80];
    RELAIS_CHECK(HKDF(okm, sizeof okm, EVP_sha256(),
                      reinterpret_cast<const uint8_t*>(secret.data()), secret.size(),
                      reinterpret_cast<const uint8_t*>(kSalt), sizeof kSalt - 1, info,
                      sizeof info) == 1);
    slot.epoch = epoch;
    std::memcpy(slot.name, okm, 16);
    std::memcpy(slot.aes, okm + 16, 32);
    std::memcpy(slot.hmac, okm + 48, 32);
    OPENSSL_cleanse(okm, sizeof okm);
    return slot;
  }

  const Chain& Select(std::string_view server_name, bool ecdsa_ok, bool rsa_ok) const {
    const std::string host = Lower(server_name);
    std::vector<const Chain*> candidates;
    if (!host.empty()) {
      for (const Chain& chain : chains) {  // Exact names first.
        if (std::find(chain.names.begin(), chain.names.end(), host) != chain.names.end()) {
          candidates.push_back(&chain);
        }
      }
      if (candidates.empty()) {
        for (const Chain& chain : chains) {
          for (const std::string& name : chain.names) {
            if (NameMatches(name, host)) {
              candidates.push_back(&chain);
              break;
            }
          }
        }
      }
    }
    if (candidates.empty()) {
      for (const Chain& chain : chains) {
        candidates.push_back(&chain);
      }
    }
    for (const Chain* chain : candidates) {
      if (chain->ecdsa ? ecdsa_ok : rsa_ok) {
        return *chain;
      }
    }
    return *candidates.front();
  }

  static Impl& Of(const SSL* ssl) {
    return *static_cast<Impl*>(SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl)));
  }

  // Picks the chain by SNI, then by the key types the client can verify.
  static ssl_select_cert_result_t SelectCertificate(const SSL_CLIENT_HELLO* hello) {
    SSL* ssl = hello->ssl;
    const Impl& impl = Of(ssl);
    bool offers_tls13 = false;
    const uint8_t* data;
    size_t length;
    if (SSL_early_callback_ctx_extension_get(hello, TLSEXT_TYPE_supported_versions, &data,
                                             &length) &&
        length >= 1) {
      const size_t list = std::min<size_t>(data[0], length - 1);
      for (size_t i = 0; i + 1 < list; i += 2) {
        if (ReadU16(data + 1 + i) == TLS1_3_VERSION) {
          offers_tls13 = true;
        }
      }
    }
    bool ecdsa_sigalg = false;
    bool rsa_sigalg = false;
    if (SSL_early_callback_ctx_extension_get(hello, TLSEXT_TYPE_signature_algorithms, &data,
                                             &length) &&
        length >= 2) {
      const size_t list = std::min<size_t>(ReadU16(data), length - 2);
      for (size_t i = 0; i + 1 < list; i += 2) {
        const uint16_t alg = ReadU16(data + 2 + i);
        if (alg == SSL_SIGN_ECDSA_SECP256R1_SHA256 ||
            (!offers_tls13 &&
             (alg == SSL_SIGN_ECDSA_SECP384R1_SHA384 || alg == SSL_SIGN_ECDSA_SECP521R1_SHA512))) {
          ecdsa_sigalg = true;
        }
        if (alg == SSL_SIGN_RSA_PSS_RSAE_SHA256 || alg == SSL_SIGN_RSA_PSS_RSAE_SHA384 ||
            alg == SSL_SIGN_RSA_PSS_RSAE_SHA512 || alg == SSL_SIGN_RSA_PKCS1_SHA256 ||
            alg == SSL_SIGN_RSA_PKCS1_SHA384 || alg == SSL_SIGN_RSA_PKCS1_SHA512) {
          rsa_sigalg = true;
        }
      }
    } else {
      rsa_sigalg = true;  // TLS 1.2 without the extension: SHA-1 defaults, RSA and ECDSA.
      ecdsa_sigalg = true;
    }
    bool ecdsa_suite = offers_tls13;
    bool rsa_suite = offers_tls13;
    for (size_t i = 0; i + 1 < hello->cipher_suites_len; i += 2) {
      const uint16_t suite = ReadU16(hello->cipher_suites + i);
      if (suite == 0xC02B || suite == 0xC02C || suite == 0xCCA9) {
        ecdsa_suite = true;
      } else if (suite == 0xC02F || suite == 0xC030 || suite == 0xCCA8) {
        rsa_suite = true;
      }
    }
    const char* sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    const Chain& chain = impl.Select(sni != nullptr ? sni : "", ecdsa_sigalg && ecdsa_suite,
                                     rsa_sigalg && rsa_suite);
    if (SSL_set_chain_and_key(ssl, chain.raw.data(), chain.raw.size(), chain.key.get(), nullptr) !=
        1) {
      return ssl_select_cert_error;
    }
    return ssl_select_cert_success;
  }

  // Stateless tickets: issued under the current epoch's key, accepted under it and the
  // previous one (then renewed).
  static int TicketKeyCallback(SSL* ssl, uint8_t* key_name, uint8_t* iv, EVP_CIPHER_CTX* cipher,
                               HMAC_CTX* hmac, int encrypt) {
    Impl& impl = Of(ssl);
    const uint64_t epoch = impl.Epoch();
    if (encrypt != 0) {
      const TicketKey& key = impl.Key(epoch);
      std::memcpy(key_name, key.name, 16);
      RAND_bytes(iv, 16);
      if (EVP_EncryptInit_ex(cipher, EVP_aes_256_cbc(), nullptr, key.aes, iv) != 1 ||
          HMAC_Init_ex(hmac, key.hmac, sizeof key.hmac, EVP_sha256(), nullptr) != 1) {
        return -1;
      }
      return 1;
    }
    for (uint64_t e : {epoch, epoch - 1}) {
      if (e == UINT64_MAX) {
        continue;
      }
      const TicketKey& key = impl.Key(e);
      if (std::memcmp(key_name, key.name, 16) == 0) {
        if (EVP_DecryptInit_ex(cipher, EVP_aes_256_cbc(), nullptr, key.aes, iv) != 1 ||
            HMAC_Init_ex(hmac, key.hmac, sizeof key.hmac, EVP_sha256(), nullptr) != 1) {
          return -1;
        }
        return e == epoch ? 1 : 2;  // 2: accepted, and a fresh ticket is issued.
      }
    }
    return 0;  // Unknown or expired key: a full handshake.
  }
};

ServerContext::ServerContext(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ServerContext::~ServerContext() = default;

absl::StatusOr<std::unique_ptr<ServerContext>> ServerContext::Create(const ServerOptions& options) {
  if (options.certificates.empty()) {
    return absl::InvalidArgumentError("tls: no certificate configured");
  }
  auto impl = std::make_unique<Impl>();
  for (const CertificateFiles& files : options.certificates) {
    auto chain = LoadChain(files);
    if (!chain.ok()) {
      return chain.status();
    }
    impl->chains.push_back(*std::move(chain));
  }
  impl->ctx.reset(SSL_CTX_new(TLS_method()));
  SSL_CTX* ctx = impl->ctx.get();
  if (ctx == nullptr || !ConfigureCommon(ctx)) {
    return absl::InternalError("tls: server context: " + TakeErrorReason());
  }
  SSL_CTX_set_app_data(ctx, impl.get());
  SSL_CTX_set_select_certificate_cb(ctx, &Impl::SelectCertificate);
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  const std::string& id = options.session_id_context;
  if (SSL_CTX_set_session_id_context(ctx, reinterpret_cast<const uint8_t*>(id.data()),
                                     std::min<size_t>(id.size(), SSL_MAX_SID_CTX_LENGTH)) != 1) {
    return absl::InternalError("tls: session id context: " + TakeErrorReason());
  }
  if (options.tickets.secret.empty()) {
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
  } else {
    if (options.tickets.secret.size() < 32) {
      return absl::InvalidArgumentError("tls: the ticket secret must have 32 bytes or more");
    }
    if (options.tickets.rotation_s == 0) {
      return absl::InvalidArgumentError("tls: ticket rotation must be positive");
    }
    impl->secret = options.tickets.secret;
    impl->rotation_s = options.tickets.rotation_s;
    impl->clock = options.tickets.clock;
    SSL_CTX_set_tlsext_ticket_key_cb(ctx, &Impl::TicketKeyCallback);
    // A ticket outlives its key by at most one period.
    SSL_CTX_set_timeout(ctx, 2 * options.tickets.rotation_s);
    SSL_CTX_set_session_psk_dhe_timeout(ctx, 2 * options.tickets.rotation_s);
    // One TLS 1.3 ticket per connection (BoringSSL sends two by default): an MTA client resumes
    // with one, and each costs a ticket encryption and a record.
    SSL_CTX_set_num_tickets(ctx, 1);
  }
  return std::unique_ptr<ServerContext>(new ServerContext(std::move(impl)));
}

struct ClientContext::Impl {
  UniquePtr<SSL_CTX> ctx;
  uint32_t cache_max = 4096;
  // Last session per destination, most recent first, kept serialized: a parsed session holds
  // the peer's chain as X509 objects too, several times its size. Next hops are chosen by
  // outsiders (a bounce to an address of theirs), so an entry is bounded as well as the count.
  std::list<std::string> order;
  struct Entry {
    std::string bytes;
    std::list<std::string>::iterator at;
  };
  std::unordered_map<std::string, Entry> cache;

  void Erase(const std::string& key) {
    auto it = cache.find(key);
    if (it != cache.end()) {
      OPENSSL_cleanse(it->second.bytes.data(), it->second.bytes.size());
      order.erase(it->second.at);
      cache.erase(it);
    }
  }

  void Store(const std::string& key, const SSL_SESSION* session) {
    uint8_t* data = nullptr;
    size_t length = 0;
    if (cache_max == 0 || SSL_SESSION_to_bytes(session, &data, &length) != 1 ||
        length > kSessionBytesMax) {
      OPENSSL_free(data);
      Erase(key);  // A session too big to keep: none rather than a stale one.
      return;
    }
    std::string bytes(reinterpret_cast<const char*>(data), length);
    OPENSSL_cleanse(data, length);
    OPENSSL_free(data);
    auto it = cache.find(key);
    if (it != cache.end()) {
      OPENSSL_cleanse(it->second.bytes.data(), it->second.bytes.size());
      it->second.bytes = std::move(bytes);
      order.splice(order.begin(), order, it->second.at);
      return;
    }
    while (cache.size() >= cache_max) {
      Erase(order.back());
    }
    order.push_front(key);
    cache.emplace(key, Entry{std::move(bytes), order.begin()});
  }

  UniquePtr<SSL_SESSION> Find(const std::string& key) {
    auto it = cache.find(key);
    if (it == cache.end()) {
      return nullptr;
    }
    const std::string& bytes = it->second.bytes;
    UniquePtr<SSL_SESSION> session(SSL_SESSION_from_bytes(
        reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), ctx.get()));
    if (session == nullptr) {
      ERR_clear_error();
      Erase(key);
    }
    return session;
  }

  static int NewSession(SSL* ssl, SSL_SESSION* session);
};

ClientContext::ClientContext(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ClientContext::~ClientContext() = default;
size_t ClientContext::cached_sessions() const { return impl_->cache.size(); }

absl::StatusOr<std::unique_ptr<ClientContext>> ClientContext::Create(const ClientOptions& options) {
  auto impl = std::make_unique<Impl>();
  impl->cache_max = options.session_cache_max;
  impl->ctx.reset(SSL_CTX_new(TLS_method()));
  SSL_CTX* ctx = impl->ctx.get();
  if (ctx == nullptr || !ConfigureCommon(ctx)) {
    return absl::InternalError("tls: client context: " + TakeErrorReason());
  }
  SSL_CTX_set_app_data(ctx, impl.get());
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL);
  SSL_CTX_sess_set_new_cb(ctx, &Impl::NewSession);
  if (!options.ca_file.empty() &&
      SSL_CTX_load_verify_locations(ctx, options.ca_file.c_str(), nullptr) != 1) {
    return absl::InvalidArgumentError("tls: ca_file " + options.ca_file + ": " + TakeErrorReason());
  }
  const CertificateFiles& mine = options.client_certificate;
  if (!mine.chain_path.empty() || !mine.key_path.empty()) {
    auto chain = LoadChain(mine);
    if (!chain.ok()) {
      return chain.status();
    }
    if (SSL_CTX_set_chain_and_key(ctx, chain->raw.data(), chain->raw.size(), chain->key.get(),
                                  nullptr) != 1) {
      return absl::InvalidArgumentError("tls: client certificate " + mine.chain_path + ": " +
                                        TakeErrorReason());
    }
  }
  return std::unique_ptr<ClientContext>(new ClientContext(std::move(impl)));
}

// ---------------------------------------------------------------------------------------------
// The transport.

struct TlsTransport::Impl {
  UniquePtr<SSL> ssl;
  BioState bio;
  ClientContext::Impl* client = nullptr;
  std::string cache_key;
  std::string server_name;  // Client side: the name asked for.
  VerifyMode verify = VerifyMode::kNone;
  TlsState state = TlsState::kHandshaking;
  bool handshake_done = false;
  bool peer_closed = false;  // close_notify received.
  bool close_sent = false;
  bool input_ended = false;
  bool truncated = false;
  std::string failure;

  void Fail(int ret, std::string_view during) {
    const int error = SSL_get_error(ssl.get(), ret);
    std::string reason;
    if (error == SSL_ERROR_SSL) {
      reason = TakeErrorReason();
      const long verify_result = SSL_get_verify_result(ssl.get());  // NOLINT(google-runtime-int)
      if (verify == VerifyMode::kVerify && verify_result != X509_V_OK) {
        reason += std::string(" (") + X509_verify_cert_error_string(verify_result) + ")";
      }
    } else if (error == SSL_ERROR_SYSCALL) {
      reason = "transport error";
    } else {
      reason = "ssl error " + std::to_string(error);
    }
    ERR_clear_error();
    failure = std::string(during) + ": " + reason;
    state = TlsState::kFailed;
  }

  // Runs the handshake on what arrived, then decrypts every complete record into the session.
  void Advance(net::StreamSession& session) {
    ERR_clear_error();
    if (state == TlsState::kHandshaking) {
      const int ret = SSL_do_handshake(ssl.get());
      if (ret != 1) {
        if (SSL_get_error(ssl.get(), ret) != SSL_ERROR_WANT_READ) {
          Fail(ret, "handshake");
        }
        return;
      }
      state = TlsState::kOpen;
      handshake_done = true;
    }
    if (peer_closed || state == TlsState::kFailed) {
      return;
    }
    char plain[16384];
    for (;;) {
      const int n = SSL_read(ssl.get(), plain, sizeof plain);
      if (n > 0) {
        session.Feed(std::string_view(plain, static_cast<size_t>(n)));
        // What was decrypted may be an AUTH line (a password): not left on the stack.
        OPENSSL_cleanse(plain, static_cast<size_t>(n));
        continue;
      }
      const int error = SSL_get_error(ssl.get(), n);
      if (error == SSL_ERROR_WANT_READ) {
        break;
      }
      if (error == SSL_ERROR_ZERO_RETURN) {
        peer_closed = true;
        if (!input_ended) {
          input_ended = true;
          session.EndOfInput();
        }
        break;
      }
      Fail(n, "record");
      break;
    }
  }

  void SendCloseNotify() {
    if (!close_sent && state == TlsState::kOpen) {
      close_sent = true;
      SSL_shutdown(ssl.get());
      ERR_clear_error();
      state = TlsState::kClosed;
    }
  }
};

int ClientContext::Impl::NewSession(SSL* ssl, SSL_SESSION* session) {
  auto* transport = static_cast<TlsTransport::Impl*>(SSL_get_app_data(ssl));
  if (transport == nullptr || transport->client == nullptr || transport->cache_key.empty() ||
      SSL_SESSION_is_resumable(session) == 0) {
    return 0;
  }
  transport->client->Store(transport->cache_key, session);
  return 0;  // Kept serialized; the library frees the object.
}

TlsTransport::TlsTransport(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
TlsTransport::~TlsTransport() = default;

namespace {

bool AttachBio(SSL* ssl, BioState* state) {
  BIO* bio = BIO_new(Method());
  if (bio == nullptr) {
    return false;
  }
  BIO_set_data(bio, state);
  BIO_set_init(bio, 1);
  SSL_set_bio(ssl, bio, bio);  // One reference, taken by the SSL.
  return true;
}

}  // namespace

std::unique_ptr<TlsTransport> TlsTransport::Server(ServerContext& context) {
  auto impl = std::make_unique<Impl>();
  impl->ssl.reset(SSL_new(context.impl_->ctx.get()));
  RELAIS_CHECK(impl->ssl != nullptr && AttachBio(impl->ssl.get(), &impl->bio));
  SSL_set_app_data(impl->ssl.get(), impl.get());
  SSL_set_accept_state(impl->ssl.get());
  SSL_set_shed_handshake_config(impl->ssl.get(), 1);  // Freed once the handshake is done.
  return std::unique_ptr<TlsTransport>(new TlsTransport(std::move(impl)));
}

std::unique_ptr<TlsTransport> TlsTransport::Client(ClientContext& context,
                                                   std::string_view server_name, VerifyMode verify,
                                                   std::string_view cache_key) {
  auto impl = std::make_unique<Impl>();
  impl->client = context.impl_.get();
  if (!cache_key.empty()) {
    // The session is kept per destination, per name and per verification: one made without
    // verifying (or for another name) must never be resumed where verification is asked for,
    // since a resumption checks no certificate.
    impl->cache_key = base::StrCat(
        cache_key, verify == VerifyMode::kVerify ? "\nverify\n" : "\nnone\n", server_name);
  }
  impl->server_name = std::string(server_name);
  impl->verify = verify;
  SSL* ssl = SSL_new(context.impl_->ctx.get());
  impl->ssl.reset(ssl);
  RELAIS_CHECK(ssl != nullptr && AttachBio(ssl, &impl->bio));
  SSL_set_app_data(ssl, impl.get());
  SSL_set_connect_state(ssl);
  SSL_set_shed_handshake_config(ssl, 1);  // No renegotiation: the config goes after the handshake.
  if (!server_name.empty() && !IsAddressLiteral(server_name)) {
    SSL_set_tlsext_host_name(ssl, impl->server_name.c_str());
  }
  if (verify == VerifyMode::kVerify) {
    SSL_set_verify(ssl, SSL_VERIFY_PEER, nullptr);
    X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
    if (IsAddressLiteral(server_name)) {
      X509_VERIFY_PARAM_set1_ip_asc(param, impl->server_name.c_str());
    } else {
      X509_VERIFY_PARAM_set1_host(param, impl->server_name.data(), impl->server_name.size());
    }
  } else {
    SSL_set_verify(ssl, SSL_VERIFY_NONE, nullptr);
  }
  if (!impl->cache_key.empty()) {
    if (UniquePtr<SSL_SESSION> session = impl->client->Find(impl->cache_key)) {
      SSL_set_session(ssl, session.get());  // Takes its own reference.
    }
  }
  ERR_clear_error();
  return std::unique_ptr<TlsTransport>(new TlsTransport(std::move(impl)));
}

void TlsTransport::OnReceived(std::string_view bytes, net::StreamSession& session) {
  Impl& t = *impl_;
  if (t.state == TlsState::kFailed || t.peer_closed) {
    return;  // Nothing more is read.
  }
  t.bio.input = bytes;
  t.Advance(session);
  t.bio.input = {};  // Anything left is past a close_notify or a failure: dropped.
}

void TlsTransport::TakeOutput(net::StreamSession& session, std::string& out) {
  Impl& t = *impl_;
  if (!t.bio.pending.empty()) {
    out.append(t.bio.pending);
    std::string().swap(t.bio.pending);  // Released: an idle connection holds no buffer.
  }
  t.bio.target = &out;
  if (t.state == TlsState::kHandshaking) {
    t.Advance(session);  // The client's first flight.
  }
  if (t.state == TlsState::kOpen && !t.close_sent) {
    const std::string_view pending = session.PendingOutput();
    if (!pending.empty()) {
      ERR_clear_error();
      const int n = SSL_write(t.ssl.get(), pending.data(),
                              static_cast<int>(std::min(pending.size(), kEncryptStepBytes)));
      if (n > 0) {
        session.ConsumeOutput(static_cast<size_t>(n));
      } else {
        t.Fail(n, "write");
      }
    }
    if (t.state == TlsState::kOpen && session.PendingOutput().empty() && session.WantsClose()) {
      t.SendCloseNotify();
    }
  }
  t.bio.target = nullptr;
}

bool TlsTransport::WantsInput(const net::StreamSession& session) const {
  const Impl& t = *impl_;
  switch (t.state) {
    case TlsState::kHandshaking:
      return true;
    case TlsState::kOpen:
      return !t.peer_closed && session.WantsInput();
    case TlsState::kClosed:
    case TlsState::kFailed:
      return false;
  }
  return false;
}

bool TlsTransport::WantsClose(const net::StreamSession& session) const {
  const Impl& t = *impl_;
  if (!t.bio.pending.empty()) {
    return false;
  }
  switch (t.state) {
    case TlsState::kHandshaking:
      return session.WantsClose();  // Nothing can be said before the handshake: just close.
    case TlsState::kOpen:
      // The peer closed its side: close once the session has nothing more to say (a hold on
      // the pump keeps it open for a reply still being made).
      return t.peer_closed && session.PendingOutput().empty();
    case TlsState::kClosed:
    case TlsState::kFailed:
      return true;
  }
  return true;
}

void TlsTransport::OnEndOfInput(net::StreamSession& session) {
  Impl& t = *impl_;
  if (t.state == TlsState::kHandshaking) {
    t.state = TlsState::kFailed;
    t.failure = "handshake: the peer closed the connection";
  } else if (!t.peer_closed && t.state != TlsState::kFailed) {
    t.truncated = true;
  }
  if (!t.input_ended) {
    t.input_ended = true;
    session.EndOfInput();
  }
}

TlsState TlsTransport::state() const { return impl_->state; }

bool TlsTransport::TakeHandshakeDone() { return std::exchange(impl_->handshake_done, false); }

HandshakeInfo TlsTransport::info() const {
  const Impl& t = *impl_;
  HandshakeInfo info;
  SSL* ssl = t.ssl.get();
  if (t.state == TlsState::kHandshaking || SSL_in_init(ssl)) {
    return info;
  }
  info.version = SSL_get_version(ssl);
  if (const SSL_CIPHER* cipher = SSL_get_current_cipher(ssl)) {
    info.cipher = SSL_CIPHER_standard_name(cipher);
  }
  if (const char* group = SSL_get_curve_name(SSL_get_curve_id(ssl))) {
    info.group = group;
  }
  if (t.client != nullptr) {
    info.server_name = t.server_name;
  } else if (const char* sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name)) {
    info.server_name = sni;
  }
  info.resumed = SSL_session_reused(ssl) != 0;
  info.verified = t.client != nullptr && t.verify == VerifyMode::kVerify &&
                  SSL_get_verify_result(ssl) == X509_V_OK;
  return info;
}

const std::string& TlsTransport::failure() const { return impl_->failure; }

bool TlsTransport::truncated() const { return impl_->truncated; }

// ---------------------------------------------------------------------------------------------
// Self-signed certificates.

namespace {

// Writes a new file beside `path` (O_EXCL, so nothing planted there is followed) and renames
// it over `path`: a symlink at `path` is replaced, never written through, and a reader never
// sees half a key.
absl::Status WriteFile(const std::string& path, std::string_view data, mode_t mode) {
  std::string temp = path + ".tmp.XXXXXX";
  const int fd = ::mkostemp(temp.data(), O_CLOEXEC);
  if (fd < 0) {
    return absl::PermissionDeniedError("tls: cannot write " + path + ": " + std::strerror(errno));
  }
  bool ok = ::fchmod(fd, mode) == 0;
  while (ok && !data.empty()) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0 && errno == EINTR) {
      continue;
    }
    ok = n > 0;
    if (ok) {
      data.remove_prefix(static_cast<size_t>(n));
    }
  }
  ok = ok && ::fsync(fd) == 0;
  ok = ::close(fd) == 0 && ok;
  ok = ok && ::rename(temp.c_str(), path.c_str()) == 0;
  if (!ok) {
    const int error = errno;
    ::unlink(temp.c_str());
    return absl::DataLossError("tls: cannot write " + path + ": " + std::strerror(error));
  }
  return absl::OkStatus();
}

std::string BioText(BIO* bio) {
  const uint8_t* data;
  size_t length;
  BIO_mem_contents(bio, &data, &length);
  return std::string(reinterpret_cast<const char*>(data), length);
}

}  // namespace

absl::Status MakeSelfSignedCertificate(std::string_view key_type,
                                       const std::vector<std::string>& names, uint32_t days,
                                       const std::string& chain_path, const std::string& key_path) {
  if (names.empty()) {
    return absl::InvalidArgumentError("tls: a certificate needs at least one name");
  }
  if (days == 0) {
    return absl::InvalidArgumentError("tls: a certificate must be valid for a day or more");
  }
  ERR_clear_error();
  UniquePtr<EVP_PKEY> key(EVP_PKEY_new());
  if (key_type == "ecdsa") {
    UniquePtr<EC_KEY> ec(EC_KEY_new_by_curve_name(NID_X9_62_prime256v1));
    if (ec == nullptr || EC_KEY_generate_key(ec.get()) != 1 ||
        EVP_PKEY_assign_EC_KEY(key.get(), ec.release()) != 1) {
      return absl::InternalError("tls: ECDSA key: " + TakeErrorReason());
    }
  } else if (key_type == "rsa") {
    UniquePtr<RSA> rsa(RSA_new());
    UniquePtr<BIGNUM> exponent(BN_new());
    if (rsa == nullptr || exponent == nullptr || BN_set_word(exponent.get(), RSA_F4) != 1 ||
        RSA_generate_key_ex(rsa.get(), 2048, exponent.get(), nullptr) != 1 ||
        EVP_PKEY_assign_RSA(key.get(), rsa.release()) != 1) {
      return absl::InternalError("tls: RSA key: " + TakeErrorReason());
    }
  } else {
    return absl::InvalidArgumentError("tls: key type must be ecdsa or rsa, not " +
                                      std::string(key_type));
  }
  UniquePtr<X509> cert(X509_new());
  uint8_t serial_bytes[16];
  RAND_bytes(serial_bytes, sizeof serial_bytes);
  serial_bytes[0] &= 0x7f;  // Positive.
  UniquePtr<BIGNUM> serial(BN_bin2bn(serial_bytes, sizeof serial_bytes, nullptr));
  UniquePtr<X509_NAME> subject(X509_NAME_new());
  UniquePtr<GENERAL_NAMES> alt(sk_GENERAL_NAME_new_null());
  bool ok = cert != nullptr && serial != nullptr && subject != nullptr && alt != nullptr &&
            X509_set_version(cert.get(), X509_VERSION_3) == 1 &&
            BN_to_ASN1_INTEGER(serial.get(), X509_get_serialNumber(cert.get())) != nullptr &&
            X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600) != nullptr &&
            X509_gmtime_adj(X509_getm_notAfter(cert.get()), int64_t{days} * 86400) != nullptr &&
            X509_NAME_add_entry_by_NID(subject.get(), NID_commonName, MBSTRING_UTF8,
                                       reinterpret_cast<const uint8_t*>(names[0].data()),
                                       static_cast<int>(names[0].size()), -1, 0) == 1 &&
            X509_set_subject_name(cert.get(), subject.get()) == 1 &&
            X509_set_issuer_name(cert.get(), subject.get()) == 1 &&
            X509_set_pubkey(cert.get(), key.get()) == 1;
  for (size_t i = 0; ok && i < names.size(); ++i) {
    GENERAL_NAME* name = GENERAL_NAME_new();
    ASN1_IA5STRING* text = ASN1_IA5STRING_new();
    ok = name != nullptr && text != nullptr &&
         ASN1_STRING_set(text, names[i].data(), static_cast<int>(names[i].size())) == 1;
    if (ok) {
      GENERAL_NAME_set0_value(name, GEN_DNS, text);
      text = nullptr;
      ok = sk_GENERAL_NAME_push(alt.get(), name) != 0;
      if (ok) {
        name = nullptr;
      }
    }
    ASN1_IA5STRING_free(text);
    GENERAL_NAME_free(name);
  }
  ok = ok && X509_add1_ext_i2d(cert.get(), NID_subject_alt_name, alt.get(), 0, 0) == 1 &&
       X509_sign(cert.get(), key.get(), EVP_sha256()) > 0;
  if (!ok) {
    return absl::InternalError("tls: certificate: " + TakeErrorReason());
  }
  UniquePtr<BIO> chain_pem(BIO_new(BIO_s_mem()));
  UniquePtr<BIO> key_pem(BIO_new(BIO_s_mem()));
  if (PEM_write_bio_X509(chain_pem.get(), cert.get()) != 1 ||
      PEM_write_bio_PrivateKey(key_pem.get(), key.get(), nullptr, nullptr, 0, nullptr, nullptr) !=
          1) {
    return absl::InternalError("tls: PEM: " + TakeErrorReason());
  }
  std::string key_text = BioText(key_pem.get());
  absl::Status status = WriteFile(key_path, key_text, 0600);
  OPENSSL_cleanse(key_text.data(), key_text.size());
  if (!status.ok()) {
    return status;
  }
  return WriteFile(chain_path, BioText(chain_pem.get()), 0644);
}

}  // namespace relais::tls
