// protocols/tls/tls.h — TLS on the shards: BoringSSL contexts and a sans-I/O TLS transport that
// plugs into the stream pump's Transport seam (core/net/stream_pump.h).
//
// socket (io::Net) -> StreamPump -> TlsTransport -> StreamSession: the pump hands the
// transport ciphertext as it arrives and sends what TakeOutput gives it; the transport runs the
// handshake and the records through memory buffers (no socket, no blocking call, no thread hop)
// and feeds the session plaintext. TLS 1.2 and 1.3 only, AEAD ciphers with forward secrecy,
// groups X25519 first then P-256, no renegotiation, no compression.
//
// Contexts are per shard (thread-per-core: no lock is taken per connection). ServerContext
// holds one or more certificate chains (ECDSA and RSA side by side, chosen by SNI, then by
// what the client supports) and issues stateless session tickets whose keys come from a
// TicketKeys schedule that every shard computes alike from one secret (no state crosses
// cores). ClientContext verifies against a CA file (the system store by default) and caches
// one resumable session per destination, name and verification mode (a session made without
// verifying is never resumed where verification is asked for: a resumption checks no
// certificate).
//
// Per connection: a TlsTransport allocated when TLS starts (STARTTLS or implicit TLS). Its
// record buffers are released while idle, so an idle TLS session costs the SSL object only
// (about 3.1 KiB server side, 7 KiB client side with the peer's chain; tls_test's
// IdleConnectionMemory and relais_tls_bench's IdleMemory measure it).
//
// How an owner drives it (ingress, egress, relais-bench send and sink do this):
//   Implicit TLS: make the transport and pump.SetTransport() before the first Drive(); the
//     session's greeting waits in the session until the handshake is done.
//   STARTTLS, server: the session queues "220 ready to start TLS", drops whatever was
//     pipelined behind the command and wants no input (so the pump arms no receive in the
//     clear); once the 220 is sent (pump not sending(), session output empty), SetTransport
//     and reset the session for the new EHLO. Client: on the 220 (ClientSession::TakeStartTls),
//     once the pump is not sending, SetTransport; the next Drive sends the ClientHello.
//   After each OnPumpReady: TakeHandshakeDone() -> log/count info() (the client session's
//     TlsStarted()); state() == kFailed -> count, log failure(); the transport then wants the
//     connection closed (after any alert went out). A handshake deadline is the owner's
//     (StreamPump::SetDeadline); the transport reads no clock.
//   Destroy the transport after the pump has closed (it is the pump's Transport until then).
// Writing: TakeOutput encrypts at most 64 KiB of the session's output per call (the pump calls
// it again after each send), so a large message is neither held twice nor encrypted in one
// loop turn; close_notify follows the last byte once the session wants to close.
//
// Reading: every record a receive completes is decrypted and fed to the session at once (as the
// plain transport feeds what it received); the session's WantsInput decides whether the pump
// reads more. The peer's close_notify is the session's EndOfInput; replies it still makes go out
// and then close_notify. Input that ends without close_notify sets truncated().
//
// Not thread-safe: a context and its transports belong to one shard.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/base/clock.h"
#include "core/net/stream_pump.h"

namespace relais::tls {

// One certificate chain (PEM, leaf first) and its private key (PEM), as the config names them.
struct CertificateFiles {
  std::string chain_path;
  std::string key_path;
};

// Session-ticket keys on a schedule: the key of epoch e = floor(now_s / rotation_s) is derived
// from `secret` and e (HKDF-SHA256), so every shard (and every daemon sharing the secret) has
// the same keys without talking. A ticket is issued under the current epoch's key and accepted
// under the current and the previous one (a ticket lives at most two rotation periods).
struct TicketKeysOptions {
  std::string secret;          // 32+ random bytes; empty: tickets off.
  uint32_t rotation_s = 3600;  // Key lifetime for issuing.
  // The wall clock the epochs are read from (UnixMicros); null: the system clock. Tests inject
  // a base::FakeClock. Outlives the context.
  const base::Clock* clock = nullptr;
};

struct ServerOptions {
  std::vector<CertificateFiles> certificates;  // At least one.
  TicketKeysOptions tickets;
  // Opaque context id for tickets (several listeners with different certificates).
  std::string session_id_context = "relais";
};

enum class VerifyMode : uint8_t {
  kNone,    // Encrypt, accept any certificate (opportunistic: route tls = "may"/"encrypt").
  kVerify,  // The chain must verify against the CA file and name the host (route tls = "verify").
};

struct ClientOptions {
  // PEM bundle for kVerify, loaded at Create (an error names it); empty: nothing verifies.
  std::string ca_file = "/etc/ssl/certs/ca-certificates.crt";
  CertificateFiles client_certificate;  // Empty paths: no client certificate.
  uint32_t session_cache_max = 4096;    // Destinations whose last session is kept for resumption.
};

class ServerContext;
class ClientContext;
class TlsTransport;

// What a finished (or failed) handshake tells the owner: for Received:, logs and metrics.
struct HandshakeInfo {
  std::string_view version;  // "TLSv1.3", "TLSv1.2".
  std::string_view cipher;   // IANA/OpenSSL name, "TLS_AES_128_GCM_SHA256".
  std::string_view group;    // Key exchange group, "X25519".
  std::string server_name;   // SNI the client sent (server side), or the name sent (client side).
  bool resumed = false;
  bool verified = false;  // Client side, kVerify: chain and name verified.
};

enum class TlsState : uint8_t {
  kHandshaking,
  kOpen,    // Application data flows.
  kClosed,  // close_notify sent (once the session wanted to close); nothing more goes out.
  kFailed,  // Handshake or record error; failure() says why. The connection is to be closed.
};

// The transport of one connection. The session, pump and context outlive it; destroy it only
// after the pump has closed (or before it is ever set on one).
class TlsTransport final : public net::Transport {
 public:
  // Server side (STARTTLS after the 220 went out, or implicit TLS from the first byte).
  static std::unique_ptr<TlsTransport> Server(ServerContext& context);
  // Client side; `server_name` is sent as SNI (when it is a name, not an address) and is the name
  // verified under kVerify; `cache_key` names the destination whose session is resumed and
  // stored ("host:port"; empty: no resumption).
  static std::unique_ptr<TlsTransport> Client(ClientContext& context, std::string_view server_name,
                                              VerifyMode verify, std::string_view cache_key);
  ~TlsTransport();

  // net::Transport.
  void OnReceived(std::string_view bytes, net::StreamSession& session) override;
  void TakeOutput(net::StreamSession& session, std::string& out) override;
  [[nodiscard]] bool WantsInput(const net::StreamSession& session) const override;
  [[nodiscard]] bool WantsClose(const net::StreamSession& session) const override;
  void OnEndOfInput(net::StreamSession& session) override;

  [[nodiscard]] TlsState state() const;
  // True once, when the handshake has just completed (the owner then logs, counts, and tells the
  // session; Received: needs info()).
  [[nodiscard]] bool TakeHandshakeDone();
  [[nodiscard]] HandshakeInfo info() const;
  // Why the handshake or a record failed (library reason or alert), for logs; empty otherwise.
  [[nodiscard]] const std::string& failure() const;
  // The peer's input ended without close_notify (a truncation attack on protocols that rely on
  // it; SMTP does not, its own framing ends messages).
  [[nodiscard]] bool truncated() const;

  struct Impl;  // Opaque: defined in tls.cc.

 private:
  explicit TlsTransport(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

class ServerContext {
 public:
  // Loads every chain and key (checking each key matches its leaf); an error names the file.
  static absl::StatusOr<std::unique_ptr<ServerContext>> Create(const ServerOptions& options);
  ~ServerContext();

  struct Impl;  // Opaque: defined in tls.cc, used by TlsTransport.

 private:
  friend class TlsTransport;
  explicit ServerContext(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

class ClientContext {
 public:
  static absl::StatusOr<std::unique_ptr<ClientContext>> Create(const ClientOptions& options);
  ~ClientContext();
  // Destinations with a session kept for resumption.
  [[nodiscard]] size_t cached_sessions() const;

  struct Impl;  // Opaque: defined in tls.cc, used by TlsTransport.

 private:
  friend class TlsTransport;
  explicit ClientContext(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// A self-signed certificate for a quick start: key type "ecdsa" (P-256) or "rsa" (2048), the
// names as subjectAltName DNS entries (the first is also the CN), valid `days` from now. Writes
// the PEM chain and key (0600) to the two paths.
absl::Status MakeSelfSignedCertificate(std::string_view key_type,
                                       const std::vector<std::string>& names, uint32_t days,
                                       const std::string& chain_path, const std::string& key_path);

}  // namespace relais::tls
