// tools/relaisd/ingress_checks.h — inline sender authentication for a shard's SMTP sessions.
//
// Decides which clients are checked and which trusted (Admit); runs SPF at MAIL FROM and DKIM
// and DMARC at the end of data on the shard's resolver; holds every message to the header
// limits; signs trusted clients' mail with DKIM. The evaluations themselves are sans-I/O
// (protocols/spf, protocols/authcheck): this drives them to their end (cached answers at once,
// the rest when they arrive) and turns their verdicts into the session's replies, counters and
// log lines. It owns no connection: the session's owner (Ingress) keeps a CheckState per
// session and hears through CheckListener when a check ends. Owned by one shard; not
// thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/base/clock.h"
#include "core/base/random.h"
#include "core/log/shard_log.h"
#include "core/mail/ip_network.h"
#include "protocols/authcheck/authcheck.h"
#include "protocols/dkim/dkim.h"
#include "protocols/dns/resolver.h"
#include "protocols/smtp/server_session.h"
#include "protocols/spf/spf.h"
#include "tools/relaisd/shard_metrics.h"

namespace relais::relaisd {

// A [[dkim_sign]] key with `users`: it signs the mail of those SMTP AUTH users.
struct UserSigningKey {
  std::vector<std::string> users;  // As written in the config.
  authcheck::SigningKey key;
};

struct CheckOptions {
  // One policy per listen address (in listen_fds order).
  std::vector<authcheck::Policy> auth_by_listener;
  // Clients not checked, and trusted: auth.skip_networks and relay.networks.
  std::vector<mail::IpNetwork> auth_skip_networks;
  std::vector<mail::IpNetwork> relay_networks;
  // The header section of every message, from any client, at the end of data.
  authcheck::HeaderLimits header_limits;
  // Sign trusted clients' mail; null or empty: nothing is signed. Must outlive the checks.
  const std::vector<authcheck::SigningKey>* signing_keys = nullptr;
  // Keys that sign the mail of the SMTP AUTH users they name; null or empty: none.
  const std::vector<UserSigningKey>* user_signing_keys = nullptr;
  std::string hostname;  // The SPF receiver (RFC 7208 7.3 %{r}).
};

// Whether a policy checks anything at all; whether any of them does (else no resolver is
// needed).
[[nodiscard]] bool Checks(const authcheck::Policy& policy);
[[nodiscard]] bool AnyChecks(const std::vector<authcheck::Policy>& policies);

// One session's check state, kept by its owner for the session's life. It is the session's
// body observer: a checked client's message bytes feed the DKIM body hashes as they arrive.
struct CheckState : smtp::BodyObserver {
  void OnBodyStart() override { body_hashes = std::make_unique<dkim::BodyHashes>(); }
  void OnBodyBytes(std::string_view bytes) override { body_hashes->Update(bytes); }

  const authcheck::Policy* policy = nullptr;  // Its listener's; set when admitted.
  // Inline sender authentication, for clients outside auth.skip_networks and relay networks.
  bool checked = false;
  // In auth.skip_networks or relay.networks: the only clients whose mail we sign. "Not
  // checked" is not "trusted": with the checks off, anyone else's mail stays unsigned, or our
  // key would sign whatever an outsider writes.
  bool trusted = false;
  bool pending = false;  // A check waits for DNS; the owner keeps the connection until it ends.
  uint64_t started_us = 0;
  std::unique_ptr<spf::Evaluation> spf;
  // Of this transaction's MAIL FROM; on the heap, so an idle connection does not carry it.
  std::unique_ptr<spf::Outcome> spf_outcome;
  std::unique_ptr<dkim::BodyHashes> body_hashes;
  std::unique_ptr<authcheck::MessageCheck> message_check;
};

class CheckListener {
 public:
  // The sender check of `state` ended; its session has its answer.
  virtual void OnSenderChecked(CheckState& state) = 0;
  // The message check of `state` ended (counted): `judgement` is its verdict and `header` the
  // Authentication-Results field for the stored message. The owner refuses the message (as
  // ApplyVerdict does) or commits it.
  virtual void OnMessageChecked(CheckState& state, const authcheck::Judgement& judgement,
                                std::string header) = 0;

 protected:
  ~CheckListener() = default;
};

class IngressChecks final {
 public:
  // `resolver` may be null only when no policy checks anything. All references must outlive
  // the checks.
  IngressChecks(const CheckOptions& options, dns::Resolver* resolver, const base::Clock& clock,
                base::Random& random, ShardMetrics& metrics, log::ShardLog& log,
                CheckListener& listener);

  // An admitted client on `listener` (index into auth_by_listener): sets its policy, whether
  // it is trusted and whether it is checked, and makes `session` ask for the checks its
  // policy wants (the sender check; the body observer for DKIM or DMARC).
  void Admit(CheckState& state, smtp::ServerSession& session, const mail::IpAddress& client,
             uint32_t listener);
  // The reply refusing a message whose header section is over a limit (counted); kOk if none.
  [[nodiscard]] smtp::Reply HeaderRefusal(std::string_view message);
  // The DKIM-Signature fields for a trusted or authenticated client's message: with the keys
  // that name `user` (an SMTP AUTH user; empty: none) when there are any, else with those for
  // its From domain; for an authenticated user only when it owns every From domain
  // (`owned_domains`, patterns as the credentials file gives them): a user is never signed
  // for a domain that is not its own. Empty when no key applies or signing failed (counted
  // and logged: the message goes unsigned).
  [[nodiscard]] std::string Signatures(std::string_view message, std::string_view user = {},
                                       std::span<const std::string> owned_domains = {});

  // SPF for the session's MAIL FROM; the session gets its answer and the listener hears
  // OnSenderChecked, possibly before this returns. `session` and `client` must live as long as
  // `state`.
  void StartSenderCheck(CheckState& state, smtp::ServerSession& session,
                        const mail::IpAddress& client);
  // DKIM and DMARC for the session's message; the listener hears OnMessageChecked, possibly
  // before this returns.
  void StartMessageCheck(CheckState& state, smtp::ServerSession& session,
                         const mail::IpAddress& client);
  // Applies a message check's verdict: a refusal is counted, logged and given to the session
  // (false); an accepted message loses forged Authentication-Results fields (true: commit it).
  [[nodiscard]] bool ApplyVerdict(CheckState& state, smtp::ServerSession& session,
                                  const mail::IpAddress& client,
                                  const authcheck::Judgement& judgement);

 private:
  void FinishSenderCheck(CheckState& state, smtp::ServerSession& session,
                         const mail::IpAddress& client, bool complete);
  void FinishMessageCheck(CheckState& state, const mail::IpAddress& client, bool complete);

  const CheckOptions& options_;
  dns::Resolver* const resolver_;
  const base::Clock& clock_;
  base::Random& random_;
  ShardMetrics& metrics_;
  log::ShardLog& log_;
  CheckListener& listener_;
  dkim::KeyCache dkim_keys_;  // Parsed DKIM public keys, by key record.
};

}  // namespace relais::relaisd
