// queue/delivery/mx.cc — see mx.h.
#include "queue/delivery/mx.h"

#include <sys/socket.h>

#include <algorithm>
#include <utility>

#include "core/base/check.h"

namespace relais::delivery {
namespace {

// The key an answer is filed under: "type name", the name in QuestionKey form.
std::string AnswerKey(const dns::Question& question) {
  return std::to_string(static_cast<uint16_t>(question.type)) + " " +
         dns::QuestionKey(question.name);
}

bool IsLabelChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

// `name` in QuestionKey form: letters, digits, '-', '_' in dot-separated labels of 1..63
// bytes, at most 253 bytes in all.
bool ValidHostName(std::string_view name) {
  if (name.empty() || name.size() > 253) {
    return false;
  }
  size_t label = 0;
  for (const char c : name) {
    if (c == '.') {
      if (label == 0) {
        return false;
      }
      label = 0;
      continue;
    }
    if (!IsLabelChar(c) || ++label > 63) {
      return false;
    }
  }
  return label != 0;
}

// "[192.0.2.1]", "[IPv6:2001:db8::1]" (the prefix in any case), or a bare address.
std::optional<mail::IpAddress> ParseLiteral(std::string_view text) {
  if (text.size() >= 2 && text.front() == '[' && text.back() == ']') {
    std::string_view inner = text.substr(1, text.size() - 2);
    constexpr std::string_view kTag = "ipv6:";
    bool tagged = inner.size() > kTag.size();
    for (size_t i = 0; tagged && i < kTag.size(); ++i) {
      const char c = inner[i];
      tagged = (c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c) == kTag[i];
    }
    if (tagged) {
      inner.remove_prefix(kTag.size());
    }
    std::optional<mail::IpAddress> address = mail::IpAddress::Parse(inner);
    if (!address || (tagged && address->family != AF_INET6 && inner.find(':') == inner.npos)) {
      return std::nullopt;
    }
    return address;
  }
  return mail::IpAddress::Parse(text);
}

bool FamilyAllowed(IpFamily family, uint8_t address_family) {
  switch (family) {
    case IpFamily::kIpv4:
      return address_family == AF_INET;
    case IpFamily::kIpv6:
      return address_family == AF_INET6;
    case IpFamily::kAny:
    case IpFamily::kPreferIpv6:
      return true;
  }
  return false;
}

// The record types to ask for a host, in the order its addresses are tried.
std::vector<dns::RecordType> TypesOf(IpFamily family) {
  switch (family) {
    case IpFamily::kIpv4:
      return {dns::RecordType::kA};
    case IpFamily::kIpv6:
      return {dns::RecordType::kAaaa};
    case IpFamily::kAny:
      return {dns::RecordType::kA, dns::RecordType::kAaaa};
    case IpFamily::kPreferIpv6:
      return {dns::RecordType::kAaaa, dns::RecordType::kA};
  }
  return {};
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// MxEvaluation

MxEvaluation::MxEvaluation(std::string_view domain, const MxOptions& options, base::Random& random)
    : MxEvaluation(domain, options, random, /*host_only=*/false) {}

MxEvaluation MxEvaluation::ForHost(std::string_view host, const MxOptions& options,
                                   base::Random& random) {
  return MxEvaluation(host, options, random, /*host_only=*/true);
}

MxEvaluation::MxEvaluation(std::string_view name, const MxOptions& options, base::Random& random,
                           bool host_only)
    : options_(&options), random_(&random), domain_(dns::QuestionKey(name)), host_only_(host_only) {
  if (std::optional<mail::IpAddress> literal = ParseLiteral(name)) {
    SetLiteral(*literal);
    return;
  }
  if (!ValidHostName(domain_)) {
    (void)Fail(host_only_ ? Reason::kHostUnresolved : Reason::kNoSuchDomain);
    return;
  }
  if (host_only_) {
    (void)FromHostsTable();
  }
}

bool MxEvaluation::FromHostsTable() {
  static const dns::HostsTable kDefault;  // Only localhost: for options without a table.
  const dns::HostsTable& table = options_->hosts ? *options_->hosts : kDefault;
  const std::vector<mail::IpAddress>* found = table.Find(domain_);
  if (found == nullptr) {
    return false;
  }
  // As a DNS answer's: the families in TypesOf's order, each in file order, bounded.
  MxHost host{domain_, 0, {}};
  const uint32_t taken_max = std::max<uint32_t>(options_->addresses_per_host_max, 1);
  for (const dns::RecordType type : TypesOf(options_->family)) {
    const uint8_t family = type == dns::RecordType::kA ? AF_INET : AF_INET6;
    uint32_t taken = 0;
    for (const mail::IpAddress& address : *found) {
      if (address.family == family && taken < taken_max) {
        host.addresses.push_back(address);
        ++taken;
      }
    }
  }
  if (host.addresses.empty()) {
    return false;  // Named only with another family: DNS may know better (as glibc's files).
  }
  (void)Succeed({std::move(host)});
  result_.ttl_seconds = options_->ttl_max_seconds;
  return true;
}

void MxEvaluation::SetLiteral(const mail::IpAddress& address) {
  // A literal has no name, and no TTL: it is what it is.
  domain_ = address.ToString();
  if (!FamilyAllowed(options_->family, address.family)) {
    (void)Fail(host_only_ ? Reason::kHostUnresolved : Reason::kNoMxAddress);
    return;
  }
  if (!host_only_ && IsSelfAddress(address)) {
    (void)Fail(Reason::kMxLoop);
    return;
  }
  result_.implicit = !host_only_;
  (void)Succeed({MxHost{domain_, 0, {address}}});
  result_.ttl_seconds = options_->ttl_max_seconds;
}

MxEvaluation::State MxEvaluation::Run() {
  switch (stage_) {
    case Stage::kStart:
      if (host_only_) {
        candidates_.push_back(MxHost{domain_, 0, {}});
        stage_ = Stage::kHosts;
        return RunHosts();
      }
      stage_ = Stage::kMx;
      [[fallthrough]];
    case Stage::kMx: {
      const dns::Question question{domain_, dns::RecordType::kMx};
      if (const dns::Answer* answer = Find(question)) {
        return OnMxAnswer(*answer);
      }
      return Need({question});
    }
    case Stage::kHosts:
      return RunHosts();
    case Stage::kDone:
      return State::kDone;
  }
  return State::kDone;
}

void MxEvaluation::Provide(const dns::Question& question, const dns::Answer& answer) {
  std::string key = AnswerKey(question);
  if (stage_ == Stage::kDone || !asked_.contains(key)) {
    return;  // Never asked (or too late): an answer cannot steer the evaluation.
  }
  answers_.insert_or_assign(std::move(key), answer);
}

const dns::Answer* MxEvaluation::Find(const dns::Question& question) const {
  const auto it = answers_.find(AnswerKey(question));
  return it == answers_.end() ? nullptr : &it->second;
}

MxEvaluation::State MxEvaluation::Need(std::vector<dns::Question> questions) {
  for (const dns::Question& question : questions) {
    if (asked_.insert(AnswerKey(question)).second) {
      ++questions_;
    }
  }
  needed_ = std::move(questions);
  return State::kNeedDns;
}

MxEvaluation::State MxEvaluation::OnMxAnswer(const dns::Answer& answer) {
  switch (answer.status) {
    case dns::AnswerStatus::kTemporary:
      return Fail(Reason::kDnsTemporary);
    case dns::AnswerStatus::kNxDomain:
      return Fail(Reason::kNoSuchDomain);
    case dns::AnswerStatus::kNoData:
    case dns::AnswerStatus::kOk:
      break;
  }
  if (answer.mx.empty()) {  // No MX (RFC 5321 5.1): the domain itself, preference 0.
    if (IsSelfName(domain_)) {
      return Fail(Reason::kMxLoop);
    }
    result_.implicit = true;
    candidates_.push_back(MxHost{domain_, 0, {}});
    stage_ = Stage::kHosts;
    return RunHosts();
  }
  if (answer.mx.size() == 1 && dns::QuestionKey(answer.mx.front().exchange).empty()) {
    return Fail(Reason::kNullMx);  // RFC 7505.
  }
  // Valid records in a random order, then (stable) by preference: equal preferences stay in
  // that random order.
  std::vector<MxHost> records;
  records.reserve(answer.mx.size());
  for (const dns::MxRecord& record : answer.mx) {
    std::string name = dns::QuestionKey(record.exchange);
    if (ValidHostName(name)) {  // A null MX among others (RFC 7505 3) is skipped here too.
      records.push_back(MxHost{std::move(name), record.preference, {}});
    }
  }
  for (size_t i = records.size(); i > 1; --i) {
    std::swap(records[i - 1], records[random_->Below(i)]);
  }
  std::stable_sort(records.begin(), records.end(),
                   [](const MxHost& a, const MxHost& b) { return a.preference < b.preference; });
  // An exchange named twice: its best record. The loop check by name (RFC 5321 5.1): drop
  // every record as good as or worse than the best naming this relay.
  std::optional<uint16_t> self;
  std::vector<MxHost> kept;
  for (MxHost& record : records) {
    if (self && record.preference >= *self) {
      break;
    }
    if (IsSelfName(record.name)) {
      self = record.preference;
      continue;
    }
    const bool seen = std::any_of(kept.begin(), kept.end(),
                                  [&](const MxHost& host) { return host.name == record.name; });
    if (!seen) {
      kept.push_back(std::move(record));
    }
  }
  while (!kept.empty() && self && kept.back().preference >= *self) {
    kept.pop_back();
  }
  if (kept.empty()) {
    return Fail(self ? Reason::kMxLoop : Reason::kNoMxAddress);
  }
  const size_t records_max = std::max<uint32_t>(options_->mx_records_max, 1);  // 0: as 1.
  if (kept.size() > records_max) {
    kept.resize(records_max);
  }
  candidates_ = std::move(kept);
  stage_ = Stage::kHosts;
  return RunHosts();
}

MxEvaluation::State MxEvaluation::RunHosts() {
  const std::vector<dns::RecordType> types = TypesOf(options_->family);
  std::vector<dns::Question> missing;
  for (const MxHost& host : candidates_) {
    for (const dns::RecordType type : types) {
      dns::Question question{host.name, type};
      if (Find(question) == nullptr) {
        missing.push_back(std::move(question));
      }
    }
  }
  if (!missing.empty()) {
    return Need(std::move(missing));
  }
  // Every answer is in: the addresses, then the loop check by address.
  bool temporary = false;
  std::optional<uint16_t> self;
  for (MxHost& host : candidates_) {
    for (const dns::RecordType type : types) {
      const dns::Answer& answer = *Find(dns::Question{host.name, type});
      if (answer.status == dns::AnswerStatus::kTemporary) {
        temporary = true;
        continue;
      }
      const uint8_t family = type == dns::RecordType::kA ? AF_INET : AF_INET6;
      const uint32_t taken_max = std::max<uint32_t>(options_->addresses_per_host_max, 1);
      uint32_t taken = 0;
      for (const mail::IpAddress& address : answer.addresses) {
        if (address.family != family || taken >= taken_max) {
          continue;
        }
        if (!host_only_ && IsSelfAddress(address) && (!self || host.preference < *self)) {
          self = host.preference;
        }
        host.addresses.push_back(address);
        ++taken;
      }
    }
  }
  if (self && candidates_.front().preference >= *self) {
    return Fail(Reason::kMxLoop);  // The best host is this relay (by address).
  }
  std::vector<MxHost> hosts;
  for (MxHost& host : candidates_) {
    if ((!self || host.preference < *self) && !host.addresses.empty()) {
      hosts.push_back(std::move(host));
    }
  }
  if (hosts.empty()) {
    if (host_only_) {
      return Fail(Reason::kHostUnresolved);
    }
    return Fail(temporary ? Reason::kDnsTemporary : Reason::kNoMxAddress);
  }
  return Succeed(std::move(hosts));
}

MxEvaluation::State MxEvaluation::Fail(Reason reason) {
  stage_ = Stage::kDone;
  needed_.clear();
  reason_ = reason;
  result_.hosts.clear();
  result_.failure = Make(reason, domain_);
  result_.key.clear();
  result_.ttl_seconds = reason == Reason::kDnsTemporary || reason == Reason::kHostUnresolved
                            ? 0
                            : std::min(TtlOfAnswers(), options_->ttl_max_seconds);
  return State::kDone;
}

MxEvaluation::State MxEvaluation::Succeed(std::vector<MxHost> hosts) {
  stage_ = Stage::kDone;
  needed_.clear();
  reason_.reset();
  result_.hosts = std::move(hosts);
  result_.failure = Status{};
  std::vector<std::string> names;
  names.reserve(result_.hosts.size());
  for (const MxHost& host : result_.hosts) {
    names.push_back(host.name);
  }
  std::sort(names.begin(), names.end());
  names.erase(std::unique(names.begin(), names.end()), names.end());
  result_.key.clear();
  for (const std::string& name : names) {
    if (!result_.key.empty()) {
      result_.key += ',';
    }
    result_.key += name;
  }
  result_.ttl_seconds = std::min(TtlOfAnswers(), options_->ttl_max_seconds);
  return State::kDone;
}

uint32_t MxEvaluation::TtlOfAnswers() const {
  std::optional<uint32_t> ttl;
  for (const auto& [key, answer] : answers_) {
    if (answer.status == dns::AnswerStatus::kTemporary ||
        (answer.void_lookup() && answer.ttl_seconds == 0)) {
      continue;
    }
    ttl = std::min(ttl.value_or(answer.ttl_seconds), answer.ttl_seconds);
  }
  return ttl.value_or(0);
}

bool MxEvaluation::IsSelfName(const std::string& name) const {
  return std::any_of(options_->self_names.begin(), options_->self_names.end(),
                     [&](const std::string& self) { return dns::QuestionKey(self) == name; });
}

bool MxEvaluation::IsSelfAddress(const mail::IpAddress& address) const {
  return std::find(options_->self_addresses.begin(), options_->self_addresses.end(), address) !=
         options_->self_addresses.end();
}

// ---------------------------------------------------------------------------------------------
// ResolverDns

std::optional<dns::Answer> ResolverDns::FromCache(const dns::Question& question) {
  return resolver_.FromCache(question);
}

void ResolverDns::Resolve(const dns::Question& question,
                          std::function<void(const dns::Answer&)> done) {
  resolver_.Resolve(question, std::move(done));
}

// ---------------------------------------------------------------------------------------------
// NextHopResolver

struct NextHopResolver::Running {
  Running(std::string key_in, uint64_t id_in, MxEvaluation evaluation_in)
      : key(std::move(key_in)), id(id_in), evaluation(std::move(evaluation_in)) {}
  std::string key;
  uint64_t id;
  MxEvaluation evaluation;
  std::vector<Callback> callbacks;
  std::vector<std::string> sent;  // AnswerKeys given to Dns::Resolve.
  bool driving = false;           // Inside Drive: an answer is only provided.
  bool answered_while_driving = false;
};

NextHopResolver::NextHopResolver(const MxOptions& options, Dns& dns, const base::Clock& clock,
                                 base::Random& random)
    : options_(options), dns_(dns), clock_(clock), random_(random) {}

NextHopResolver::~NextHopResolver() { *alive_ = false; }

std::optional<Resolution> NextHopResolver::ResolveMx(std::string_view domain, Callback done) {
  return Lookup("mx:" + dns::QuestionKey(domain), /*host=*/false, domain, std::move(done));
}

std::optional<Resolution> NextHopResolver::ResolveHost(std::string_view host, Callback done) {
  return Lookup("host:" + dns::QuestionKey(host), /*host=*/true, host, std::move(done));
}

std::optional<Resolution> NextHopResolver::Lookup(std::string key, bool host, std::string_view name,
                                                  Callback done) {
  ++stats_.lookups;
  if (const auto it = cache_.find(key); it != cache_.end()) {
    if (clock_.MonotonicMs() < it->second.expires_ms) {
      ++stats_.cache_hits;
      lru_.splice(lru_.begin(), lru_, it->second.lru);
      return it->second.resolution;
    }
    lru_.erase(it->second.lru);
    cache_.erase(it);
  }
  if (const auto it = running_.find(key); it != running_.end()) {
    it->second->callbacks.push_back(std::move(done));  // Joins the evaluation in flight.
    return std::nullopt;
  }
  ++stats_.evaluations;
  MxEvaluation evaluation =
      host ? MxEvaluation::ForHost(name, options_, random_) : MxEvaluation(name, options_, random_);
  const auto [it, fresh] =
      running_.emplace(key, std::make_unique<Running>(key, next_id_++, std::move(evaluation)));
  RELAIS_CHECK(fresh);
  Running& running = *it->second;
  if (Drive(running)) {
    Record(key, running.evaluation);
    Resolution resolution = running.evaluation.result();
    running_.erase(key);
    return resolution;
  }
  running.callbacks.push_back(std::move(done));
  return std::nullopt;
}

bool NextHopResolver::Drive(Running& running) {
  running.driving = true;
  bool done = false;
  for (;;) {
    running.answered_while_driving = false;
    if (running.evaluation.Run() == MxEvaluation::State::kDone) {
      done = true;
      break;
    }
    bool provided = false;
    const std::vector<dns::Question> needed = running.evaluation.needed();
    for (const dns::Question& question : needed) {
      std::string answer_key = AnswerKey(question);
      if (std::find(running.sent.begin(), running.sent.end(), answer_key) != running.sent.end()) {
        continue;
      }
      if (std::optional<dns::Answer> answer = dns_.FromCache(question)) {
        running.evaluation.Provide(question, *answer);
        provided = true;
        continue;
      }
      running.sent.push_back(std::move(answer_key));
      // The answer finds its evaluation again by key and id (it may have ended by then).
      dns_.Resolve(question, [alive = alive_, this, key = running.key, id = running.id,
                              question](const dns::Answer& answer) {
        if (*alive) {
          OnAnswer(key, id, question, answer);
        }
      });
    }
    if (!provided && !running.answered_while_driving) {
      break;
    }
  }
  running.driving = false;
  return done;
}

void NextHopResolver::OnAnswer(const std::string& key, uint64_t id, const dns::Question& question,
                               const dns::Answer& answer) {
  auto it = running_.find(key);
  if (it == running_.end() || it->second->id != id) {
    return;  // An evaluation that ended (or a later one of the same name).
  }
  Running& running = *it->second;
  running.evaluation.Provide(question, answer);
  if (running.driving) {
    running.answered_while_driving = true;  // Drive goes on with it.
    return;
  }
  if (!Drive(running)) {
    return;
  }
  it = running_.find(key);
  std::unique_ptr<Running> finished = std::move(it->second);
  running_.erase(it);
  Record(key, finished->evaluation);
  const Resolution& resolution = finished->evaluation.result();
  const std::shared_ptr<bool> alive = alive_;
  for (Callback& callback : finished->callbacks) {
    callback(resolution);
    if (!*alive) {
      return;  // A callback destroyed the resolver; `finished` is ours still.
    }
  }
}

void NextHopResolver::Record(const std::string& key, const MxEvaluation& evaluation) {
  const std::optional<Reason> reason = evaluation.failure_reason();
  if (reason) {
    switch (*reason) {
      case Reason::kNullMx:
        ++stats_.null_mx;
        break;
      case Reason::kNoSuchDomain:
        ++stats_.nxdomain;
        break;
      case Reason::kDnsTemporary:
      case Reason::kHostUnresolved:
        ++stats_.temporary;
        return;  // Never cached: the next request asks again.
      case Reason::kMxLoop:
        ++stats_.loops;
        break;
      case Reason::kNoMxAddress:
        ++stats_.no_address;
        break;
      default:
        break;
    }
  } else {
    ++stats_.ok;
  }
  const Resolution& resolution = evaluation.result();
  if (resolution.ttl_seconds == 0 || options_.cache_entries_max == 0) {
    return;
  }
  const uint64_t expires_ms = clock_.MonotonicMs() + uint64_t{resolution.ttl_seconds} * 1000;
  if (const auto it = cache_.find(key); it != cache_.end()) {
    it->second.resolution = resolution;
    it->second.expires_ms = expires_ms;
    lru_.splice(lru_.begin(), lru_, it->second.lru);
    return;
  }
  if (cache_.size() >= options_.cache_entries_max) {
    cache_.erase(lru_.back());  // The least recently used.
    lru_.pop_back();
  }
  lru_.push_front(key);
  cache_.emplace(key, Cached{resolution, expires_ms, lru_.begin()});
}

}  // namespace relais::delivery
