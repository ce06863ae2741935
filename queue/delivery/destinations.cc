// queue/delivery/destinations.cc — see destinations.h.
#include "queue/delivery/destinations.h"

#include <algorithm>
#include <charconv>
#include <functional>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "re2/re2.h"

namespace relais::delivery {
namespace {

constexpr uint64_t kSecondMs = 1000;
constexpr uint64_t kMinuteMs = 60'000;
constexpr uint64_t kHourMs = 3'600'000;
// Adaptive rates are kept per hour: fine enough to halve 1/s many times, and 100/s still fits.
constexpr uint64_t kAdaptivePerMs = kHourMs;
// The window over which recent deliveries are counted (to derive a rate for a destination
// without one when it first asks us to slow down).
constexpr uint64_t kDeliveryWindowMs = kMinuteMs;
// Reasons and last replies are for people; a hostile next hop does not get to grow them.
constexpr size_t kTextBytesMax = 200;
constexpr uint64_t kForever = std::numeric_limits<uint64_t>::max();
constexpr size_t kStandingMax = 256;      // Suspensions of destinations not known yet.
constexpr size_t kStandingKeyMax = 1024;  // Bytes of one such key or name.

// What receivers say when they want us to slow down (matched case-insensitively in the text
// of a temporary reply). Kept in one place; [[shaping.reply]] rules extend it per site.
constexpr std::array<std::string_view, 14> kThrottleTexts = {"rate limit",
                                                             "ratelimit",
                                                             "rate-limit",
                                                             "too many connections",
                                                             "too many messages",
                                                             "too many concurrent",
                                                             "try again later",
                                                             "try later",
                                                             "throttl",
                                                             "deferred due to",
                                                             "temporarily deferred",
                                                             "slow down",
                                                             "sending rate",
                                                             "too fast"};

char Lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) {
    return false;
  }
  for (size_t i = 0; i < a.size(); ++i) {
    if (Lower(a[i]) != Lower(b[i])) {
      return false;
    }
  }
  return true;
}

bool EndsWithIgnoreCase(std::string_view text, std::string_view suffix) {
  return text.size() >= suffix.size() &&
         EqualsIgnoreCase(text.substr(text.size() - suffix.size()), suffix);
}

// `needle` is lower case.
bool ContainsIgnoreCase(std::string_view text, std::string_view needle) {
  if (needle.size() > text.size()) {
    return false;
  }
  for (size_t i = 0; i + needle.size() <= text.size(); ++i) {
    size_t j = 0;
    while (j < needle.size() && Lower(text[i + j]) == needle[j]) {
      ++j;
    }
    if (j == needle.size()) {
      return true;
    }
  }
  return false;
}

std::string_view StripDot(std::string_view name) {
  if (!name.empty() && name.back() == '.') {
    name.remove_suffix(1);
  }
  return name;
}

// "example.com" exactly, or "*.example.com": any name below it (not the name itself).
bool DomainMatches(std::string_view pattern, std::string_view domain) {
  if (pattern.empty()) {
    return true;
  }
  pattern = StripDot(pattern);
  domain = StripDot(domain);
  if (pattern.size() > 2 && pattern.substr(0, 2) == "*.") {
    const std::string_view suffix = pattern.substr(1);  // ".example.com"
    return domain.size() > suffix.size() && EndsWithIgnoreCase(domain, suffix);
  }
  return EqualsIgnoreCase(pattern, domain);
}

// ".google.com": any name ending so; "google.com" (no dot): that name or any below it.
bool HostMatches(std::string_view suffix, std::string_view host) {
  host = StripDot(host);
  suffix = StripDot(suffix);
  if (suffix.empty()) {
    return false;
  }
  if (suffix.front() == '.') {
    return EndsWithIgnoreCase(host, suffix);
  }
  if (EqualsIgnoreCase(host, suffix)) {
    return true;
  }
  return host.size() > suffix.size() && EndsWithIgnoreCase(host, suffix) &&
         host[host.size() - suffix.size() - 1] == '.';
}

std::string Capped(std::string_view text) {
  return std::string(text.substr(0, std::min(text.size(), kTextBytesMax)));
}

// Messages per hour of `rate` (saturating), 0 when none.
uint64_t PerHour(const Rate& rate) {
  if (rate.count == 0 || rate.per_ms == 0) {
    return 0;
  }
  return std::max<uint64_t>(1, static_cast<uint64_t>(rate.count) * kHourMs / rate.per_ms);
}

// The token bucket counts in exact integer credit: one token is `per_ms` credit, and every
// millisecond adds `count` (so 2/s and 120/min pace alike, without rounding drift). Its depth
// is one second's worth of tokens, at least 1.
uint64_t DepthCredit(const Rate& rate) {
  if (rate.count == 0 || rate.per_ms == 0) {
    return 0;
  }
  const uint64_t tokens =
      std::max<uint64_t>(1, static_cast<uint64_t>(rate.count) * kSecondMs / rate.per_ms);
  return tokens * rate.per_ms;
}

Rate Readable(Rate rate) {
  if (rate.per_ms == kHourMs && rate.count != 0) {
    if (rate.count % 3600 == 0) {
      return Rate{rate.count / 3600, kSecondMs};
    }
    if (rate.count % 60 == 0) {
      return Rate{rate.count / 60, kMinuteMs};
    }
  }
  return rate;
}

std::unique_ptr<RE2> Compile(const std::string& pattern) {
  RE2::Options options;
  options.set_log_errors(false);
  auto re = std::make_unique<RE2>(pattern, options);
  return re;
}

}  // namespace

std::optional<Rate> Rate::Parse(std::string_view text) {
  const size_t slash = text.find('/');
  const std::string_view number = text.substr(0, slash);
  uint32_t count = 0;
  if (number.empty()) {
    return std::nullopt;
  }
  const auto [end, error] = std::from_chars(number.data(), number.data() + number.size(), count);
  if (error != std::errc() || end != number.data() + number.size()) {
    return std::nullopt;
  }
  if (slash == std::string_view::npos) {
    if (count != 0) {
      return std::nullopt;  // "100": per what?
    }
    return Rate{};
  }
  const std::string_view unit = text.substr(slash + 1);
  uint64_t per_ms = 0;
  if (unit == "s" || unit == "sec" || unit == "second") {
    per_ms = kSecondMs;
  } else if (unit == "min" || unit == "minute") {
    per_ms = kMinuteMs;
  } else if (unit == "h" || unit == "hour") {
    per_ms = kHourMs;
  } else {
    return std::nullopt;
  }
  return Rate{count, count == 0 ? kSecondMs : per_ms};
}

std::string Rate::ToString() const {
  if (count == 0) {
    return "0";
  }
  switch (per_ms) {
    case kSecondMs:
      return absl::StrCat(count, "/s");
    case kMinuteMs:
      return absl::StrCat(count, "/min");
    case kHourMs:
      return absl::StrCat(count, "/h");
    default:
      return absl::StrCat(count, "/", per_ms, "ms");
  }
}

bool RuleMatches(std::string_view rule_domain, std::string_view rule_mx_suffix,
                 std::string_view domain, const std::vector<MxHost>& hosts) {
  if (!DomainMatches(rule_domain, domain)) {
    return false;
  }
  if (rule_mx_suffix.empty()) {
    return true;
  }
  return std::any_of(hosts.begin(), hosts.end(),
                     [&](const MxHost& host) { return HostMatches(rule_mx_suffix, host.name); });
}

// One destination's record. Keep it small: there may be a million (destinations.h).
struct Destinations::Entry {
  std::string key;
  std::string name;
  std::string domain;
  std::string reason;      // Of the suspension, else of the backoff.
  std::string last_reply;  // Capped at kTextBytesMax.
  uint64_t credit = 0;     // The rate's bucket (DepthCredit).
  // The rate allowed now, as two words (a Rate pads to 16 bytes); per_ms is at most an hour.
  uint32_t rate_count = 0;
  uint32_t rate_per_ms = 1000;
  uint64_t refilled_ms = 0;
  uint64_t quiet_until_ms = 0;      // No halving before (the adaptive quiet period).
  uint64_t suspended_until_ms = 0;  // 0: not suspended; kForever: until resumed.
  uint64_t used_ms = 0;             // Last touched (idle forgetting).
  uint64_t wake_ms = 0;             // Parked on time until then; 0: on a release.
  uint64_t window_ms = 0;           // Start of the current delivery window.
  uint64_t queued = 0;
  uint64_t delivered = 0, deferred = 0, failed = 0, backoffs = 0;
  uint32_t profile = 0;
  uint32_t connections_allowed = 0;
  uint32_t in_flight = 0;
  uint32_t connections = 0;
  uint32_t streak = 0;  // Deliveries since the quiet period ended without a throttle reply.
  uint32_t window_count = 0, previous_window_count = 0;
  uint32_t rate_reference_per_hour = 0;  // What recovery steps towards (derived rates).
  bool parked = false;
  bool backing_off = false;
  bool bounce_pending = false;

  [[nodiscard]] Rate rate() const { return Rate{rate_count, rate_per_ms}; }
  void SetRateFields(const Rate& rate) {
    rate_count = rate.count;
    rate_per_ms = static_cast<uint32_t>(std::min<uint64_t>(rate.per_ms, kHourMs));
  }
};

struct Destinations::Compiled {
  std::vector<std::unique_ptr<RE2>> replies;  // By rule index; never null, maybe !ok().
};

size_t Destinations::EntryBytes() { return sizeof(Entry); }

absl::Status Destinations::Validate(const ShapingOptions& options) {
  for (size_t i = 0; i < options.replies.size(); ++i) {
    const ReplyRule& rule = options.replies[i];
    if (rule.pattern.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("[[shaping.reply]] #", i + 1, ": pattern is empty"));
    }
    const auto re = Compile(rule.pattern);
    if (!re->ok()) {
      return absl::InvalidArgumentError(absl::StrCat("[[shaping.reply]] #", i + 1, ": pattern \"",
                                                     rule.pattern,
                                                     "\" is not a valid RE2: ", re->error()));
    }
  }
  const auto bad_domain = [](std::string_view domain) {
    return domain.find('*') != std::string_view::npos &&
           (domain.size() < 3 || domain.substr(0, 2) != "*." ||
            domain.substr(2).find('*') != std::string_view::npos);
  };
  for (size_t i = 0; i < options.rules.size(); ++i) {
    if (bad_domain(options.rules[i].domain)) {
      return absl::InvalidArgumentError(absl::StrCat("[[shaping.rule]] #", i + 1, ": domain \"",
                                                     options.rules[i].domain,
                                                     "\": expected \"example.com\" or "
                                                     "\"*.example.com\""));
    }
  }
  for (size_t i = 0; i < options.replies.size(); ++i) {
    if (bad_domain(options.replies[i].domain)) {
      return absl::InvalidArgumentError(absl::StrCat("[[shaping.reply]] #", i + 1, ": domain \"",
                                                     options.replies[i].domain,
                                                     "\": expected \"example.com\" or "
                                                     "\"*.example.com\""));
    }
  }
  return absl::OkStatus();
}

Destinations::Destinations(ShapingOptions options, const base::Clock& clock)
    : options_(std::move(options)), clock_(clock), compiled_(std::make_unique<Compiled>()) {
  compiled_->replies.reserve(options_.replies.size());
  for (const ReplyRule& rule : options_.replies) {
    compiled_->replies.push_back(Compile(rule.pattern));
  }
}

Destinations::~Destinations() = default;

Destinations::Entry* Destinations::Get(DestinationId id) const {
  if (id == 0 || id > entries_.size()) {
    return nullptr;
  }
  return entries_[id - 1].get();
}

Destinations::Entry* Destinations::Lookup(std::string_view key_or_name) const {
  if (const auto it = by_key_.find(key_or_name); it != by_key_.end()) {
    return Get(it->second);
  }
  for (const auto& entry : entries_) {
    if (entry != nullptr && EqualsIgnoreCase(entry->name, key_or_name)) {
      return entry.get();
    }
  }
  return nullptr;
}

uint32_t Destinations::ProfileFor(std::string_view domain, const std::vector<MxHost>& hosts) {
  std::string matched;  // Rule indices, then '|', then reply rule indices.
  for (size_t i = 0; i < options_.rules.size(); ++i) {
    const ShapingRule& rule = options_.rules[i];
    if (RuleMatches(rule.domain, rule.mx_suffix, domain, hosts)) {
      absl::StrAppend(&matched, i, ",");
    }
  }
  matched += '|';
  for (size_t i = 0; i < options_.replies.size(); ++i) {
    const ReplyRule& rule = options_.replies[i];
    if (RuleMatches(rule.domain, rule.mx_suffix, domain, hosts)) {
      absl::StrAppend(&matched, i, ",");
    }
  }
  if (const auto it = profile_by_rules_.find(matched); it != profile_by_rules_.end()) {
    return it->second;
  }
  Profile profile;
  profile.limits = options_.defaults;
  profile.adaptive = options_.adaptive;
  for (const ShapingRule& rule : options_.rules) {
    if (!RuleMatches(rule.domain, rule.mx_suffix, domain, hosts)) {
      continue;
    }
    if (rule.connections_max) {
      profile.limits.connections_max = *rule.connections_max;
    }
    if (rule.messages_per_connection_max) {
      profile.limits.messages_per_connection_max = *rule.messages_per_connection_max;
    }
    if (rule.recipients_per_transaction_max) {
      profile.limits.recipients_per_transaction_max = *rule.recipients_per_transaction_max;
    }
    if (rule.rate) {
      profile.limits.rate = *rule.rate;
    }
    if (rule.source_pool) {
      profile.limits.source_pool = *rule.source_pool;
    }
    if (rule.adaptive) {
      profile.adaptive = *rule.adaptive;
    }
  }
  for (size_t i = 0; i < options_.replies.size(); ++i) {
    const ReplyRule& rule = options_.replies[i];
    if (RuleMatches(rule.domain, rule.mx_suffix, domain, hosts)) {
      profile.replies.push_back(static_cast<uint16_t>(i));
    }
  }
  const auto index = static_cast<uint32_t>(profiles_.size());
  profiles_.push_back(std::move(profile));
  profile_by_rules_.emplace(std::move(matched), index);
  return index;
}

DestinationId Destinations::Intern(std::string_view key, std::string_view domain,
                                   const std::vector<MxHost>& hosts, std::string_view name) {
  const uint64_t now = clock_.MonotonicMs();
  if (const auto it = by_key_.find(key); it != by_key_.end()) {
    entries_[it->second - 1]->used_ms = now;
    return it->second;
  }
  if (live_ >= options_.destinations_max) {
    Sweep(&forgotten_);  // Handed on by the next Sweep(&forgotten).
    if (live_ >= options_.destinations_max) {
      return 0;
    }
  }
  auto entry = std::make_unique<Entry>();
  entry->key = std::string(key);
  entry->name = std::string(name.empty() ? key : name);
  entry->domain = std::string(domain);
  entry->profile = ProfileFor(domain, hosts);
  const Limits& limits = profiles_[entry->profile].limits;
  entry->connections_allowed = std::max<uint32_t>(1, limits.connections_max);
  entry->SetRateFields(limits.rate);
  entry->credit = DepthCredit(limits.rate);
  entry->refilled_ms = now;
  entry->used_ms = now;
  entry->window_ms = now;
  DestinationId id = 0;
  if (!free_ids_.empty()) {
    id = free_ids_.back();
    free_ids_.pop_back();
  } else {
    entries_.emplace_back();
    id = static_cast<DestinationId>(entries_.size());
  }
  for (const Standing& s : standing_) {
    if (s.until_ms > now &&
        (s.key_or_name == entry->key || EqualsIgnoreCase(s.key_or_name, entry->name))) {
      entry->suspended_until_ms = s.until_ms;
      entry->reason = s.reason;
      break;
    }
  }
  const std::string_view view = entry->key;
  entries_[id - 1] = std::move(entry);
  by_key_.emplace(view, id);
  ++live_;
  return id;
}

bool Destinations::Known(DestinationId id) const { return Get(id) != nullptr; }

void Destinations::Refill(Entry& entry, uint64_t now_ms) const {
  if (entry.rate_count == 0) {
    entry.refilled_ms = now_ms;
    return;
  }
  if (now_ms > entry.refilled_ms) {
    const uint64_t depth = DepthCredit(entry.rate());
    const uint64_t elapsed = now_ms - entry.refilled_ms;
    entry.credit = elapsed > depth / entry.rate_count
                       ? depth
                       : std::min(depth, entry.credit + elapsed * entry.rate_count);
  }
  entry.refilled_ms = now_ms;
}

void Destinations::Park(DestinationId id, Entry& entry, uint64_t at_ms) {
  if (entry.parked && entry.wake_ms == at_ms) {
    return;
  }
  entry.parked = true;
  entry.wake_ms = at_ms;
  if (at_ms != 0 && at_ms != kForever) {
    wakes_.push_back(Wake{at_ms, id});
    std::push_heap(wakes_.begin(), wakes_.end(), std::greater<>());
  }
}

void Destinations::WakeNow(DestinationId id, Entry& entry) {
  if (entry.parked) {
    entry.parked = false;
    entry.wake_ms = 0;
    woken_.push_back(id);
  }
}

bool Destinations::Admit(uint32_t id) {
  Entry* entry = Get(id);
  if (entry == nullptr) {
    return true;  // Never made, or forgotten: nothing to shape it by.
  }
  const uint64_t now = clock_.MonotonicMs();
  entry->used_ms = now;
  if (entry->suspended_until_ms != 0) {
    if (now < entry->suspended_until_ms) {
      Park(id, *entry, entry->suspended_until_ms);
      return false;
    }
    entry->suspended_until_ms = 0;
    entry->reason = entry->backing_off ? "backing off" : "";
  }
  if (entry->in_flight >= 2 * entry->connections_allowed) {
    Park(id, *entry, 0);
    return false;
  }
  if (entry->rate_count != 0) {
    Refill(*entry, now);
    if (entry->credit < entry->rate_per_ms) {
      const uint64_t missing = entry->rate_per_ms - entry->credit;
      Park(id, *entry, now + (missing + entry->rate_count - 1) / entry->rate_count);
      return false;
    }
    entry->credit -= entry->rate_per_ms;
  }
  // Admitted while parked: the scheduler's queue may still be parked on this destination (an
  // attempt planned from the unknown destination asked here, not the scheduler), and the wake
  // it waits for is now stale. Woken, so that it asks again (at worst one refused Admit).
  WakeNow(id, *entry);
  ++entry->in_flight;
  return true;
}

void Destinations::Release(DestinationId id) {
  Entry* entry = Get(id);
  if (entry == nullptr) {
    return;
  }
  entry->used_ms = clock_.MonotonicMs();
  if (entry->in_flight > 0) {
    --entry->in_flight;
  }
  if (entry->parked && entry->wake_ms == 0) {
    WakeNow(id, *entry);
  }
}

void Destinations::Count(DestinationId id, Outcome outcome, std::string_view last_reply) {
  Entry* entry = Get(id);
  if (entry == nullptr) {
    return;
  }
  entry->used_ms = clock_.MonotonicMs();
  switch (outcome) {
    case Outcome::kDelivered:
      ++entry->delivered;
      break;
    case Outcome::kDeferred:
      ++entry->deferred;
      break;
    case Outcome::kFailed:
      ++entry->failed;
      break;
  }
  if (!last_reply.empty()) {
    entry->last_reply = Capped(last_reply);
  }
}

void Destinations::SetQueued(DestinationId id, uint64_t queued) {
  Entry* entry = Get(id);
  if (entry == nullptr) {
    return;
  }
  entry->queued = queued;
  entry->used_ms = clock_.MonotonicMs();
}

std::vector<DestinationId> Destinations::TakeWoken() {
  const uint64_t now = clock_.MonotonicMs();
  while (!wakes_.empty() && wakes_.front().at_ms <= now) {
    const Wake wake = wakes_.front();
    std::pop_heap(wakes_.begin(), wakes_.end(), std::greater<>());
    wakes_.pop_back();
    Entry* entry = Get(wake.id);
    // A stale wake (the destination was admitted, re-parked later, or its id reused) is
    // dropped; a spurious one would only cost the scheduler one refused Admit.
    if (entry != nullptr && entry->parked && entry->wake_ms == wake.at_ms) {
      WakeNow(wake.id, *entry);
    }
  }
  std::vector<DestinationId> woken;
  woken.swap(woken_);
  return woken;
}

int64_t Destinations::MsUntilWake() const {
  if (!woken_.empty()) {
    return 0;
  }
  if (wakes_.empty()) {
    return -1;
  }
  const uint64_t now = clock_.MonotonicMs();
  const uint64_t at = wakes_.front().at_ms;
  return at <= now ? 0 : static_cast<int64_t>(at - now);
}

bool Destinations::Suspend(std::string_view key_or_name, uint64_t duration_ms,
                           std::string_view reason) {
  const uint64_t now = clock_.MonotonicMs();
  const uint64_t until =
      duration_ms == 0 || duration_ms >= kForever - now ? kForever : now + duration_ms;
  const std::string why =
      reason.empty() ? std::string("suspended by an operator") : Capped(reason);
  Entry* entry = Lookup(key_or_name);
  if (entry == nullptr) {
    std::erase_if(standing_, [&](const Standing& s) {
      return s.until_ms <= now || EqualsIgnoreCase(s.key_or_name, key_or_name);
    });
    if (standing_.size() < kStandingMax) {
      standing_.push_back({std::string(key_or_name.substr(0, kStandingKeyMax)), until, why});
    }
    return false;
  }
  entry->suspended_until_ms = until;
  entry->reason = why;
  entry->used_ms = now;
  return true;
}

bool Destinations::Resume(std::string_view key_or_name) {
  std::erase_if(standing_,
                [&](const Standing& s) { return EqualsIgnoreCase(s.key_or_name, key_or_name); });
  Entry* entry = Lookup(key_or_name);
  if (entry == nullptr) {
    return false;
  }
  entry->used_ms = clock_.MonotonicMs();
  if (entry->suspended_until_ms != 0) {
    entry->suspended_until_ms = 0;
    entry->reason = entry->backing_off ? "backing off" : "";
    const auto it = by_key_.find(entry->key);
    WakeNow(it->second, *entry);
  }
  return true;
}

std::vector<DestinationId> Destinations::TakeBounced() {
  std::vector<DestinationId> bounced;
  bounced.swap(bounced_);
  for (const DestinationId id : bounced) {
    if (Entry* entry = Get(id)) {
      entry->bounce_pending = false;
    }
  }
  return bounced;
}

const Limits& Destinations::limits(DestinationId id) const {
  const Entry* entry = Get(id);
  return entry == nullptr ? options_.defaults : profiles_[entry->profile].limits;
}

DestinationView Destinations::MakeView(DestinationId id, const Entry& entry) const {
  const uint64_t now = clock_.MonotonicMs();
  DestinationView view;
  view.id = id;
  view.key = entry.key;
  view.name = entry.name;
  view.domain = entry.domain;
  const bool suspended = entry.suspended_until_ms != 0 && now < entry.suspended_until_ms;
  if (suspended) {
    view.state = DestinationState::kSuspended;
    view.suspended_until_ms = entry.suspended_until_ms;
    view.reason = entry.reason;
  } else if (entry.backing_off) {
    view.state = DestinationState::kBackingOff;
    view.reason = entry.suspended_until_ms != 0 ? "backing off" : entry.reason;
  }
  view.configured = profiles_[entry.profile].limits;
  view.connections_allowed = entry.connections_allowed;
  view.rate_allowed = Readable(entry.rate());
  view.in_flight = entry.in_flight;
  view.connections = entry.connections;
  view.queued = entry.queued;
  view.delivered = entry.delivered;
  view.deferred = entry.deferred;
  view.failed = entry.failed;
  view.backoffs = entry.backoffs;
  view.last_reply = entry.last_reply;
  return view;
}

std::optional<DestinationView> Destinations::View(DestinationId id) const {
  const Entry* entry = Get(id);
  if (entry == nullptr) {
    return std::nullopt;
  }
  return MakeView(id, *entry);
}

std::optional<DestinationView> Destinations::Find(std::string_view key_or_name) const {
  const Entry* entry = Lookup(key_or_name);
  if (entry == nullptr) {
    return std::nullopt;
  }
  return MakeView(by_key_.find(entry->key)->second, *entry);
}

std::vector<DestinationView> Destinations::All() const {
  std::vector<DestinationView> views;
  views.reserve(live_);
  for (size_t i = 0; i < entries_.size(); ++i) {
    if (entries_[i] != nullptr) {
      views.push_back(MakeView(static_cast<DestinationId>(i + 1), *entries_[i]));
    }
  }
  return views;
}

std::vector<DestinationView> Destinations::Top(size_t top, DestinationView* rest) const {
  // The `top` largest in a bounded heap (the smallest kept on top), sums of everything
  // alongside: memory O(top) however many destinations there are.
  using Item = std::pair<uint64_t, DestinationId>;        // (queued, id)
  const auto before = [](const Item& a, const Item& b) {  // a ranks before b.
    return a.first != b.first ? a.first > b.first : a.second < b.second;
  };
  std::vector<Item> best;
  best.reserve(std::min(top, live_));
  DestinationView sum;
  for (size_t i = 0; i < entries_.size(); ++i) {
    const Entry* entry = entries_[i].get();
    if (entry == nullptr) {
      continue;
    }
    sum.queued += entry->queued;
    sum.in_flight += entry->in_flight;
    sum.connections += entry->connections;
    sum.delivered += entry->delivered;
    sum.deferred += entry->deferred;
    sum.failed += entry->failed;
    sum.backoffs += entry->backoffs;
    const Item item{entry->queued, static_cast<DestinationId>(i + 1)};
    if (best.size() < top) {
      best.push_back(item);
      std::push_heap(best.begin(), best.end(), before);
    } else if (top != 0 && before(item, best.front())) {
      std::pop_heap(best.begin(), best.end(), before);
      best.back() = item;
      std::push_heap(best.begin(), best.end(), before);
    }
  }
  std::sort(best.begin(), best.end(), before);
  std::vector<DestinationView> views;
  views.reserve(best.size());
  for (const auto& [queued, id] : best) {
    views.push_back(MakeView(id, *Get(id)));
    sum.queued -= views.back().queued;
    sum.in_flight -= views.back().in_flight;
    sum.connections -= views.back().connections;
    sum.delivered -= views.back().delivered;
    sum.deferred -= views.back().deferred;
    sum.failed -= views.back().failed;
    sum.backoffs -= views.back().backoffs;
  }
  if (rest != nullptr) {
    *rest = std::move(sum);
    rest->key = "other";
    rest->name = "other";
  }
  return views;
}

size_t Destinations::size() const { return live_; }

bool Destinations::Idle(const Entry& entry, uint64_t now_ms) const {
  return entry.queued == 0 && entry.in_flight == 0 && entry.connections == 0 &&
         !entry.bounce_pending &&
         (entry.suspended_until_ms == 0 || entry.suspended_until_ms <= now_ms) &&
         now_ms - entry.used_ms >= options_.idle_forget_ms;
}

void Destinations::Erase(DestinationId id) {
  Entry* entry = Get(id);
  if (entry->parked) {
    // The scheduler may still hold its queue parked: woken, its mail asks again (admitted as
    // unknown, re-resolved and re-interned), rather than waiting for a wake of an entry that
    // no longer exists.
    woken_.push_back(id);
  }
  by_key_.erase(std::string_view(entry->key));
  entries_[id - 1].reset();
  free_ids_.push_back(id);
  --live_;
}

void Destinations::Sweep(std::vector<DestinationId>* forgotten) {
  if (forgotten != &forgotten_) {
    if (forgotten != nullptr) {
      forgotten->insert(forgotten->end(), forgotten_.begin(), forgotten_.end());
    }
    forgotten_.clear();
  }
  const uint64_t now = clock_.MonotonicMs();
  if (now < next_sweep_ms_) {
    return;
  }
  next_sweep_ms_ = now + std::max<uint64_t>(1, options_.idle_forget_ms / 10);
  for (size_t i = 0; i < entries_.size(); ++i) {
    if (entries_[i] != nullptr && Idle(*entries_[i], now)) {
      const auto id = static_cast<DestinationId>(i + 1);
      Erase(id);
      if (forgotten != nullptr) {
        forgotten->push_back(id);
      }
    }
  }
  if (live_ == 0) {
    // Give the memory of a past peak back (free ids stay valid: none is live).
    std::vector<std::unique_ptr<Entry>>().swap(entries_);
    std::vector<DestinationId>().swap(free_ids_);
    std::unordered_map<std::string_view, DestinationId>().swap(by_key_);
    std::vector<Wake>().swap(wakes_);
  } else {
    // Trailing free ids give their slots back.
    while (!entries_.empty() && entries_.back() == nullptr) {
      entries_.pop_back();
    }
    std::erase_if(free_ids_, [&](DestinationId id) { return id > entries_.size(); });
  }
}

uint32_t Destinations::ConnectionsAllowed(DestinationId id) const {
  const Entry* entry = Get(id);
  return entry == nullptr ? std::max<uint32_t>(1, options_.defaults.connections_max)
                          : entry->connections_allowed;
}

uint32_t Destinations::MessagesPerConnection(DestinationId id) const {
  return std::max<uint32_t>(1, limits(id).messages_per_connection_max);
}

void Destinations::ConnectionCount(DestinationId id, bool opened) {
  Entry* entry = Get(id);
  if (entry == nullptr) {
    return;
  }
  entry->used_ms = clock_.MonotonicMs();
  if (opened) {
    ++entry->connections;
  } else if (entry->connections > 0) {
    --entry->connections;
  }
}

void Destinations::SetRate(Entry& entry, Rate rate) const {
  // Keep the tokens the bucket held (in the new unit), within the new depth; a destination
  // that had no rate starts with a full bucket.
  const uint64_t depth = DepthCredit(rate);
  if (entry.rate_count == 0 || rate.count == 0) {
    entry.credit = depth;
  } else {
    const long double tokens = static_cast<long double>(entry.credit) / entry.rate_per_ms;
    entry.credit = std::min(depth, static_cast<uint64_t>(tokens * rate.per_ms));
  }
  entry.SetRateFields(rate);
}

void Destinations::Backoff(Entry& entry, std::string_view reason, uint64_t now_ms) {
  entry.streak = 0;
  if (now_ms < entry.quiet_until_ms) {
    return;  // Already halved for this episode.
  }
  const Limits& configured = profiles_[entry.profile].limits;
  Refill(entry, now_ms);
  entry.connections_allowed = std::max<uint32_t>(1, entry.connections_allowed / 2);
  const uint64_t floor = static_cast<uint64_t>(options_.rate_floor_per_minute) * 60;
  uint64_t per_hour = PerHour(entry.rate());
  if (per_hour == 0) {
    // No rate yet: start from what it took recently (deliveries in the last full window, or
    // this one so far). Nothing delivered lately: nothing to derive a rate from, the halved
    // connections are the whole backoff.
    const uint64_t recent = std::max(entry.previous_window_count, entry.window_count);
    if (recent != 0) {
      per_hour = std::max(floor, recent * (kHourMs / kDeliveryWindowMs));
      entry.rate_reference_per_hour =
          static_cast<uint32_t>(std::min<uint64_t>(per_hour, std::numeric_limits<uint32_t>::max()));
    }
  } else if (configured.rate.count != 0) {
    entry.rate_reference_per_hour = static_cast<uint32_t>(
        std::min<uint64_t>(PerHour(configured.rate), std::numeric_limits<uint32_t>::max()));
  }
  if (per_hour != 0) {
    // Halved, not below the floor, and never up (a configured rate may be below the floor).
    const uint64_t halved =
        std::min(per_hour, std::max<uint64_t>(std::max<uint64_t>(1, floor), per_hour / 2));
    SetRate(entry, Rate{static_cast<uint32_t>(
                            std::min<uint64_t>(halved, std::numeric_limits<uint32_t>::max())),
                        kAdaptivePerMs});
  }
  entry.quiet_until_ms = now_ms + options_.backoff_ms;
  entry.backing_off = true;
  ++entry.backoffs;
  if (entry.suspended_until_ms == 0) {
    entry.reason = Capped(reason);
  }
}

ReplyRule::Action Destinations::OnReply(DestinationId id, uint16_t code, std::string_view enhanced,
                                        std::string_view text) {
  Entry* entry = Get(id);
  if (entry == nullptr) {
    return ReplyRule::Action::kBackoff;
  }
  const uint64_t now = clock_.MonotonicMs();
  entry->used_ms = now;
  std::string line = std::to_string(code);
  for (const std::string_view part : {enhanced, text}) {
    if (!part.empty()) {
      line += ' ';
      line.append(part);
    }
  }
  entry->last_reply = Capped(line);
  const Profile& profile = profiles_[entry->profile];
  for (const uint16_t index : profile.replies) {
    const RE2& re = *compiled_->replies[index];
    if (!re.ok() || !RE2::PartialMatch(line, re)) {
      continue;
    }
    const ReplyRule& rule = options_.replies[index];
    switch (rule.action) {
      case ReplyRule::Action::kSuspend:
        entry->suspended_until_ms =
            std::max(entry->suspended_until_ms, now + std::max<uint64_t>(1, rule.suspend_ms));
        entry->reason = Capped(absl::StrCat("reply rule \"", rule.pattern, "\": ", line));
        return ReplyRule::Action::kSuspend;
      case ReplyRule::Action::kBounce:
        if (!entry->bounce_pending) {
          entry->bounce_pending = true;
          bounced_.push_back(id);
        }
        return ReplyRule::Action::kBounce;
      case ReplyRule::Action::kBackoff:
        Backoff(*entry, line, now);
        return ReplyRule::Action::kBackoff;
    }
  }
  if (profile.adaptive && IsThrottleReply(code, enhanced, text)) {
    Backoff(*entry, line, now);
  }
  return ReplyRule::Action::kBackoff;
}

bool IsThrottleReply(uint16_t code, std::string_view enhanced, std::string_view text) {
  if (code == 421) {
    return true;
  }
  if (code < 400 || code >= 500) {
    return false;
  }
  if (enhanced.size() >= 4 && enhanced.substr(0, 4) == "4.7.") {
    return true;
  }
  return std::any_of(kThrottleTexts.begin(), kThrottleTexts.end(),
                     [&](std::string_view needle) { return ContainsIgnoreCase(text, needle); });
}

void Destinations::OnDelivered(DestinationId id) {
  Entry* entry = Get(id);
  if (entry == nullptr) {
    return;
  }
  const uint64_t now = clock_.MonotonicMs();
  entry->used_ms = now;
  if (now - entry->window_ms >= kDeliveryWindowMs) {
    entry->previous_window_count =
        now - entry->window_ms < 2 * kDeliveryWindowMs ? entry->window_count : 0;
    entry->window_count = 0;
    entry->window_ms = now;
  }
  ++entry->window_count;
  if (!entry->backing_off || now < entry->quiet_until_ms) {
    return;
  }
  if (++entry->streak < std::max<uint32_t>(1, options_.recover_after)) {
    return;
  }
  entry->streak = 0;
  const Limits& configured = profiles_[entry->profile].limits;
  const uint32_t connections_max = std::max<uint32_t>(1, configured.connections_max);
  const bool more_connections = entry->connections_allowed < connections_max;
  if (more_connections) {
    ++entry->connections_allowed;
  }
  const uint64_t reference = entry->rate_reference_per_hour;
  const uint64_t step = std::max<uint64_t>(1, reference / 10);
  const uint64_t now_per_hour = PerHour(entry->rate());
  bool rate_done = true;
  if (now_per_hour != 0) {
    if (now_per_hour + step >= reference) {
      // Back where it was: the configured rate as written, or none when none is configured.
      SetRate(*entry, configured.rate);
    } else {
      SetRate(*entry, Rate{static_cast<uint32_t>(now_per_hour + step), kAdaptivePerMs});
      rate_done = false;
    }
  }
  if (rate_done && entry->connections_allowed >= connections_max) {
    entry->backing_off = false;
    entry->rate_reference_per_hour = 0;
    if (entry->suspended_until_ms == 0) {
      entry->reason.clear();
    }
  }
  if (more_connections && entry->parked && entry->wake_ms == 0) {
    WakeNow(id, *entry);
  }
}

}  // namespace relais::delivery
