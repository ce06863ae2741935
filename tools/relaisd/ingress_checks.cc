#include "tools/relaisd/ingress_checks.h"

#include <algorithm>
#include <functional>
#include <utility>

#include "core/mail/domain.h"
#include "protocols/authcheck/authcheck.h"
#include "protocols/authres/authres.h"
#include "protocols/sasl/credentials.h"

namespace relais::relaisd {
namespace {

// Questions one check may ask: SPF needs at most a few dozen (its limits), DKIM one per
// evaluated signature (auth.dkim_signatures_max, at most 64), DMARC two. Past this an
// evaluation is broken (it asks for what it was given) and is given up rather than let it spin
// the shard: what it could not decide is then temperror (GiveUp), never "not checked".
constexpr uint32_t kCheckQuestionsMax = 256;

// The questions an evaluation waits for now: all of them at once where it can say (the
// message check's DKIM key lookups), else the one it needs.
template <typename Evaluation>
std::vector<dns::Question> Questions(const Evaluation& evaluation) {
  if constexpr (requires { evaluation.pending(); }) {
    if (!evaluation.pending().empty()) {
      return evaluation.pending();
    }
  }
  return {evaluation.needed()};
}

// Runs a sans-I/O evaluation (Run/needed/Provide: SPF, the message check) to its end on the
// shard's resolver: cached answers at once, the others when they arrive, every question of a
// round in flight together (so N key lookups cost one DNS round trip, not N, and at most one
// timeout). `done(true)` runs once, possibly before this returns; `done(false)` if the
// evaluation asked more than kCheckQuestionsMax questions. The evaluation must live until then.
template <typename Evaluation>
void Drive(Evaluation& evaluation, dns::Resolver& resolver, std::function<void(bool)> done,
           uint32_t asked = 0) {
  while (!evaluation.Run()) {
    const std::vector<dns::Question> questions = Questions(evaluation);
    if (asked + questions.size() > kCheckQuestionsMax) {
      done(false);
      return;
    }
    asked += static_cast<uint32_t>(questions.size());
    std::vector<dns::Question> missing;
    for (const dns::Question& question : questions) {
      if (std::optional<dns::Answer> cached = resolver.FromCache(question)) {
        evaluation.Provide(question, std::move(*cached));
      } else {
        missing.push_back(question);
      }
    }
    if (missing.empty()) {
      continue;
    }
    // Shared by the lookups of this round, on this shard only: the last answer to arrive
    // (whichever it is) runs the evaluation on and frees it.
    auto outstanding = std::make_shared<size_t>(missing.size());
    for (const dns::Question& question : missing) {
      resolver.Resolve(question, [&evaluation, &resolver, question, asked, outstanding,
                                  done](const dns::Answer& answer) mutable {
        evaluation.Provide(question, answer);
        if (--*outstanding == 0) {
          Drive(evaluation, resolver, std::move(done), asked);
        }
      });
    }
    return;
  }
  done(true);
}

bool InAny(const std::vector<mail::IpNetwork>& networks, const mail::IpAddress& address) {
  return std::any_of(networks.begin(), networks.end(),
                     [&](const mail::IpNetwork& n) { return n.Contains(address); });
}

}  // namespace

bool Checks(const authcheck::Policy& p) {
  return p.spf != authcheck::Mode::kOff || p.dkim != authcheck::Mode::kOff ||
         p.dmarc != authcheck::Mode::kOff;
}

bool AnyChecks(const std::vector<authcheck::Policy>& policies) {
  return std::any_of(policies.begin(), policies.end(),
                     [](const authcheck::Policy& p) { return Checks(p); });
}

IngressChecks::IngressChecks(const CheckOptions& options, dns::Resolver* resolver,
                             const base::Clock& clock, base::Random& random, ShardMetrics& metrics,
                             log::ShardLog& log, CheckListener& listener)
    : options_(options),
      resolver_(resolver),
      clock_(clock),
      random_(random),
      metrics_(metrics),
      log_(log),
      listener_(listener) {}

void IngressChecks::Admit(CheckState& state, smtp::ServerSession& session,
                          const mail::IpAddress& client, uint32_t listener) {
  state.policy = &options_.auth_by_listener[listener];
  state.trusted =
      InAny(options_.auth_skip_networks, client) || InAny(options_.relay_networks, client);
  if (Checks(*state.policy) && !state.trusted) {
    state.checked = true;
    if (state.policy->spf != authcheck::Mode::kOff) {
      session.RequireSenderCheck();
    }
    if (state.policy->dkim != authcheck::Mode::kOff ||
        state.policy->dmarc != authcheck::Mode::kOff) {
      session.SetBodyObserver(&state);
    }
  }
}

smtp::Reply IngressChecks::HeaderRefusal(std::string_view message) {
  switch (authcheck::CheckHeader(message, options_.header_limits)) {
    case authcheck::HeaderVerdict::kOk:
      return smtp::Reply::kOk;
    case authcheck::HeaderVerdict::kTooBig:
      metrics_.header_too_big.Add();
      return smtp::Reply::kHeaderTooBig;
    case authcheck::HeaderVerdict::kTooManyFields:
      metrics_.header_too_many_fields.Add();
      return smtp::Reply::kTooManyHeaderFields;
    case authcheck::HeaderVerdict::kTooManyHops:
      metrics_.header_too_many_hops.Add();
      return smtp::Reply::kTooManyHops;
  }
  return smtp::Reply::kOk;
}

std::string IngressChecks::Signatures(std::string_view message, std::string_view user,
                                      std::span<const std::string> owned_domains) {
  absl::StatusOr<std::string> signatures = std::string();
  bool by_user = false;
  if (!user.empty() && options_.user_signing_keys != nullptr) {
    // The user's own keys, whatever its From domain (a key per user or per customer).
    const std::string name = sasl::NormalizeUserName(user);
    for (const UserSigningKey& k : *options_.user_signing_keys) {
      if (std::none_of(k.users.begin(), k.users.end(),
                       [&](const std::string& u) { return sasl::NormalizeUserName(u) == name; })) {
        continue;
      }
      by_user = true;
      dkim::SignOptions sign = k.key.options;
      sign.timestamp = clock_.UnixMicros() / 1'000'000;
      absl::StatusOr<std::string> field = dkim::Sign(message, sign, k.key.key);
      if (!field.ok()) {
        signatures = field.status();
        break;
      }
      *signatures += *field;  // Each over the message without the others (as SignaturesFor).
    }
  }
  if (!by_user) {
    if (options_.signing_keys == nullptr || options_.signing_keys->empty()) {
      return {};
    }
    if (!user.empty()) {
      // Signed for its From domain only where the user owns it: else any submission user
      // could send mail that passes DMARC for every domain the relay signs.
      const std::vector<std::string> from = authcheck::FromDomains(message);
      const bool owned =
          !from.empty() && std::all_of(from.begin(), from.end(), [&](const std::string& d) {
            return std::any_of(owned_domains.begin(), owned_domains.end(),
                               [&](const std::string& o) { return mail::DomainMatches(o, d); });
          });
      if (!owned) {
        metrics_.dkim_sign_not_owned.Add();
        return {};
      }
    }
    signatures =
        authcheck::SignaturesFor(message, *options_.signing_keys, clock_.UnixMicros() / 1'000'000);
  }
  if (!signatures.ok()) {
    metrics_.dkim_sign_failures.Add();
    log_.Info("dkim_sign_failed", {{"error", std::string(signatures.status().message())}});
    return {};
  }
  if (!signatures->empty()) {
    metrics_.dkim_signed.Add();
  }
  return std::move(*signatures);
}

void IngressChecks::StartSenderCheck(CheckState& state, smtp::ServerSession& session,
                                     const mail::IpAddress& client) {
  spf::Request request;
  request.ip = client;
  request.sender = session.transaction().envelope.sender;
  request.helo = session.helo();
  request.receiver = options_.hostname;
  request.now_unix_seconds = clock_.UnixMicros() / 1'000'000;
  state.spf_outcome.reset();
  state.spf = std::make_unique<spf::Evaluation>(std::move(request));
  state.pending = true;
  Drive(*state.spf, *resolver_, [this, &state, &session, &client](bool complete) {
    FinishSenderCheck(state, session, client, complete);
  });
}

void IngressChecks::FinishSenderCheck(CheckState& state, smtp::ServerSession& session,
                                      const mail::IpAddress& client, bool complete) {
  state.pending = false;
  state.spf_outcome = std::make_unique<spf::Outcome>(state.spf->outcome());
  state.spf.reset();
  if (!complete) {
    state.spf_outcome->result = spf::Result::kTempError;
    state.spf_outcome->problem = "the SPF evaluation did not converge (a bug: please report it)";
    log_.Info("auth_check_abandoned", {{"check", "spf"}, {"client", client.ToString()}});
  }
  const spf::Outcome& o = *state.spf_outcome;
  metrics_.auth_spf[static_cast<size_t>(o.result)].Add();
  const authcheck::Judgement j = authcheck::JudgeSender(o, *state.policy);
  if (j.verdict == authcheck::Verdict::kAccept) {
    session.CompleteSenderCheck(smtp::Reply::kSenderOk);
  } else {
    const bool reject = j.verdict == authcheck::Verdict::kReject;
    (reject ? metrics_.auth_rejected_spf : metrics_.auth_deferred_spf).Add();
    log_.Info("sender_refused", {{"client", client.ToString()},
                                 {"helo", session.helo()},
                                 {"sender", session.transaction().envelope.sender},
                                 {"spf", spf::ResultName(o.result)},
                                 {"reason", j.text}});
    session.CompleteSenderCheck(reject ? smtp::Reply::kSpfFail : smtp::Reply::kSpfTempError,
                                j.text);
  }
  listener_.OnSenderChecked(state);
}

void IngressChecks::StartMessageCheck(CheckState& state, smtp::ServerSession& session,
                                      const mail::IpAddress& client) {
  smtp::Transaction& tx = session.transaction();
  authcheck::MessageRequest request;
  if (state.spf_outcome != nullptr) {
    request.spf = *state.spf_outcome;
  }
  request.sender = tx.envelope.sender;
  request.helo = session.helo();
  request.now_unix_seconds = clock_.UnixMicros() / 1'000'000;
  request.dmarc_sample = static_cast<uint8_t>(random_.Below(100));
  if (state.body_hashes != nullptr) {
    state.body_hashes->Finish();
  }
  state.message_check =
      std::make_unique<authcheck::MessageCheck>(*state.policy, std::move(request), tx.body);
  state.message_check->UseBodyHashes(state.body_hashes.get());
  state.message_check->UseKeyCache(&dkim_keys_);
  state.pending = true;
  state.started_us = clock_.MonotonicMicros();
  Drive(*state.message_check, *resolver_,
        [this, &state, &client](bool complete) { FinishMessageCheck(state, client, complete); });
}

void IngressChecks::FinishMessageCheck(CheckState& state, const mail::IpAddress& client,
                                       bool complete) {
  state.pending = false;
  if (!complete) {
    // Out of its budget: what it could not decide is temperror (never "not checked"), and the
    // verdict follows from that (auth.dmarc_temperror when a policy is at stake).
    state.message_check->GiveUp();
    metrics_.auth_checks_over_budget.Add();
    log_.Info("auth_check_over_budget", {{"check", "message"}, {"client", client.ToString()}});
  }
  metrics_.auth_check_seconds.ObserveMicros(clock_.MonotonicMicros() - state.started_us);
  const authcheck::MessageCheck& m = *state.message_check;
  if (state.policy->dkim != authcheck::Mode::kOff) {
    for (const dkim::SignatureResult& r : m.dkim_results()) {
      metrics_.auth_dkim[static_cast<size_t>(r.result)].Add();
    }
    if (m.dkim_results().empty()) {
      metrics_.auth_dkim.back().Add();
    }
  }
  if (state.policy->dmarc != authcheck::Mode::kOff) {
    metrics_
        .auth_dmarc[static_cast<size_t>(m.dmarc_outcome() != nullptr ? m.dmarc_outcome()->result
                                                                     : dmarc::Result::kPermError)]
        .Add();
  }
  metrics_.auth_dkim_skipped.Add(m.dkim_skipped());
  const authcheck::Judgement j = m.judgement();
  if (j.temperror) {
    metrics_.auth_temperror_actions[static_cast<size_t>(state.policy->dmarc_temperror)].Add();
  }
  std::string header = m.Header();
  state.message_check.reset();  // It reads the body, which changes now.
  state.body_hashes.reset();
  listener_.OnMessageChecked(state, j, std::move(header));
}

bool IngressChecks::ApplyVerdict(CheckState& state, smtp::ServerSession& session,
                                 const mail::IpAddress& client, const authcheck::Judgement& j) {
  if (j.verdict != authcheck::Verdict::kAccept) {
    const bool reject = j.verdict == authcheck::Verdict::kReject;
    (reject ? metrics_.auth_rejected_dmarc : metrics_.auth_deferred_dmarc).Add();
    log_.Info("message_refused", {{"client", client.ToString()},
                                  {"helo", session.helo()},
                                  {"sender", session.transaction().envelope.sender},
                                  {"reason", j.text}});
    session.RefuseMessage(reject        ? smtp::Reply::kPolicyRejected
                          : j.temperror ? smtp::Reply::kAuthTempError
                                        : smtp::Reply::kPolicyDeferred,
                          j.text);
    return false;
  }
  authres::RemoveForged(session.transaction().body, state.policy->authserv_id);
  return true;
}

}  // namespace relais::relaisd
