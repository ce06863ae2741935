// queue/delivery/destinations.h — one shard's destinations and their traffic shaping.
//
// A destination is where a set of recipients' mail physically goes: for an mx route, the set
// of MX hosts the recipient domain resolves to (Resolution::key: every domain hosted by one
// provider shares one destination, one queue and one set of limits); for a smarthost or lmtp
// route, the route itself ("route:<index>"). Each has a small id (DestinationId; 0 is "not
// known yet", used by the scheduler for messages never planned), its limits from the shaping
// rules, its adaptive state, and its counters. Mail waits for a destination in the scheduler's
// per-destination ready queue (queue/scheduler/scheduler.h), gated by Admit() here: one slow,
// suspended or rate-limited destination holds only its own mail, never another's.
//
// Limits (ShapingOptions defaults, then every matching [[shaping.rule]] in file order, each
// overriding the keys it sets; a rule matches the recipient domain (exact, or "*.suffix": a
// name below it, not the suffix itself) and the destination's MX host names (mx_suffix, e.g.
// ".google.com": any MX host ending so; without the leading dot: that name or one below it);
// an unset one matches anything. Destinations the same rules match share one profile):
//   connections_max               concurrent connections (this shard's share);
//   messages_per_connection_max   then the connection says QUIT and a new one is opened;
//   recipients_per_transaction_max
//   rate                          messages per second, minute or hour (a token bucket whose
//                                 depth is one second's worth, at least 1), 0: none;
//   source_pool                   the pool of sources connections use (sources.h).
// An attempt is admitted when the destination is not suspended, a rate token is available
// (taken then), and fewer than 2 × connections_allowed() attempts are in flight (enough for a
// link that finishes to find the next message at once, never the whole queue in memory).
//
// Adaptive shaping (on by default): a 421 greeting or reply, or a temporary reply whose
// enhanced code is 4.7.x or whose text says the receiver is rate limiting (shipped patterns:
// "rate limit", "too many (connections|messages)", "try again later", "throttl", "deferred due
// to", ...), halves connections_allowed (at least 1) and the rate (at least
// rate_floor_per_minute when a rate is set; a destination without a configured rate gets one,
// derived from its recent delivered rate: half of its deliveries in the last minute, none
// when it delivered nothing lately), and starts a quiet period (backoff_ms) during which
// nothing more is halved; then every `recover_after` deliveries in a row (counted after the
// quiet period) without such a reply add one connection back and 10% of the configured rate
// (of the derived one's starting point when none is configured; reaching it drops the limit),
// up to the configured limits. Adaptive rates are kept per hour (views show them in the
// largest unit that divides them).
// [[shaping.reply]] rules (RE2 patterns on "code enhanced text" of one reply, the enhanced
// code left out when there is none; first matching rule wins; optionally scoped like the
// limit rules) can instead suspend the destination for a time (no attempt is admitted; its
// queue waits, counted) or bounce its queue (every message waiting for it is returned with
// kBouncedByRule). State and reason are kept for operators: kActive, kBackingOff (limits
// below the configured ones), kSuspended (until when, and why: the rule, the reply, or
// relaisctl dest suspend).
//
// Memory: a destination costs its key and a fixed record (304 bytes); one with nothing
// queued, in flight or connected, and not suspended, is forgotten after idle_forget_ms (its
// adaptive state with it), and the table never holds more than destinations_max: a new
// destination beyond it is refused (the caller defers, kDnsTemporary-like) rather than
// growing without bound (a full table sweeps once first). Measured at 100 000 destinations
// (destinations_test, OneHundredThousandDestinations...): about 460 bytes of heap each with a
// 51-byte key, all of it given back by the sweep that forgets them.
//
// Owned by one shard; not thread-safe; time from the injected Clock. Tests: fake clock.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"
#include "core/base/clock.h"
#include "queue/delivery/mx.h"
#include "queue/delivery/status.h"
#include "queue/scheduler/scheduler.h"

namespace relais::delivery {

using DestinationId = uint32_t;  // 0: not known.

struct Rate {
  uint32_t count = 0;      // 0: no limit.
  uint64_t per_ms = 1000;  // 1000 (second), 60 000 (minute) or 3 600 000 (hour).
  // "100/s", "600/min", "10000/h", "0"; nullopt for anything else.
  [[nodiscard]] static std::optional<Rate> Parse(std::string_view text);
  [[nodiscard]] std::string ToString() const;
  bool operator==(const Rate&) const = default;
};

struct Limits {
  uint32_t connections_max = 10;
  uint32_t messages_per_connection_max = 100;
  uint32_t recipients_per_transaction_max = 100;
  Rate rate;
  std::string source_pool;  // Empty: the route's, else none.
};

// One [[shaping.rule]]: which destinations it applies to, and the limits it sets (unset keys
// are left as the defaults or earlier rules made them).
struct ShapingRule {
  std::string domain;     // "example.com", "*.example.com"; empty: any.
  std::string mx_suffix;  // ".google.com" (matched case-insensitively); empty: any.
  std::optional<uint32_t> connections_max;
  std::optional<uint32_t> messages_per_connection_max;
  std::optional<uint32_t> recipients_per_transaction_max;
  std::optional<Rate> rate;
  std::optional<std::string> source_pool;
  std::optional<bool> adaptive;
};

// One [[shaping.reply]]: what to do when a reply matches.
struct ReplyRule {
  enum class Action : uint8_t { kBackoff, kSuspend, kBounce };
  std::string pattern;  // RE2, on "<code> <enhanced> <text>" of one reply.
  Action action = Action::kSuspend;
  uint64_t suspend_ms = 600'000;  // kSuspend.
  std::string domain;             // Scope, as ShapingRule; empty: any.
  std::string mx_suffix;
};
inline constexpr std::array<std::string_view, 3> kReplyActionWords = {"backoff", "suspend",
                                                                      "bounce"};

struct ShapingOptions {
  Limits defaults;
  bool adaptive = true;
  uint64_t backoff_ms = 60'000;        // Quiet period after a halving.
  uint32_t recover_after = 20;         // Deliveries in a row before one step up.
  uint32_t rate_floor_per_minute = 6;  // The rate never backs off below this.
  std::vector<ShapingRule> rules;
  std::vector<ReplyRule> replies;
  uint64_t idle_forget_ms = 600'000;
  size_t destinations_max = 1'000'000;
};

enum class DestinationState : uint8_t { kActive, kBackingOff, kSuspended };
inline constexpr std::array<std::string_view, 3> kDestinationStateNames = {"active", "backing-off",
                                                                           "suspended"};

// What an operator (relaisctl dest ls|show) and the metrics see of one destination.
struct DestinationView {
  DestinationId id = 0;
  std::string key;     // Resolution::key, or "route:<index>".
  std::string name;    // For people: the first MX host, the domain, or the route's first host.
  std::string domain;  // The recipient domain it was first made for.
  DestinationState state = DestinationState::kActive;
  std::string reason;                // Why it is backing off or suspended; empty when active.
  uint64_t suspended_until_ms = 0;   // Monotonic; kSuspended only.
  Limits configured;                 // From the rules.
  uint32_t connections_allowed = 0;  // Now (adaptive).
  Rate rate_allowed;                 // Now (adaptive).
  uint32_t in_flight = 0;            // Attempts admitted and not yet released.
  uint32_t connections = 0;          // Open now (the pools say).
  uint64_t queued = 0;               // Messages waiting for it (the scheduler says).
  uint64_t delivered = 0, deferred = 0, failed = 0;
  uint64_t backoffs = 0;  // Times the adaptive shaping halved its limits.
  std::string last_reply;
};

// The pools' side of shaping (pools.h holds a reference): what a destination allows now, and
// what happened on its connections. A pure interface so the pools' tests can use a fake.
class DestinationControl {
 public:
  [[nodiscard]] virtual uint32_t ConnectionsAllowed(DestinationId id) const = 0;
  [[nodiscard]] virtual uint32_t MessagesPerConnection(DestinationId id) const = 0;
  // A connection of `id` opened (true) or closed (false): for the views.
  virtual void ConnectionCount(DestinationId id, bool opened) = 0;
  // A reply from a next hop of `id`: the greeting (a 421 one), EHLO, or the reply to a whole
  // transaction or one recipient. Feeds the adaptive shaping and the reply rules. Returns
  // kBounce when a rule says the destination's queue is to be bounced (the caller fails what
  // it holds for `id` with kBouncedByRule); kSuspend when the destination is now suspended
  // (the caller defers what it holds, kSuspended); kBackoff otherwise.
  virtual ReplyRule::Action OnReply(DestinationId id, uint16_t code, std::string_view enhanced,
                                    std::string_view text) = 0;
  // A message (or a recipient of it) was delivered to `id`: additive recovery.
  virtual void OnDelivered(DestinationId id) = 0;

 protected:
  ~DestinationControl() = default;
};

class Destinations final : public scheduler::Gate, public DestinationControl {
 public:
  // A reply rule whose pattern does not compile never matches (Validate reports it first).
  Destinations(ShapingOptions options, const base::Clock& clock);
  ~Destinations();

  // What the config schema checks: every [[shaping.reply]] pattern compiles as RE2 (the
  // error names the rule's index and its pattern), no rule scope is malformed.
  [[nodiscard]] static absl::Status Validate(const ShapingOptions& options);
  Destinations(const Destinations&) = delete;
  Destinations& operator=(const Destinations&) = delete;

  // The destination of `key` (made, with limits from the rules for `domain` and the MX host
  // names of `resolution` (route destinations: none), if it does not exist yet); 0 when the
  // table is full. The same key always gives the same id while it lives.
  [[nodiscard]] DestinationId Intern(std::string_view key, std::string_view domain,
                                     const std::vector<MxHost>& hosts, std::string_view name);
  [[nodiscard]] bool Known(DestinationId id) const;

  // scheduler::Gate: may an attempt for `id` start now? Takes a rate token and counts the
  // attempt in flight when it says yes. When it says no, the scheduler parks the destination
  // until Wake names it (TakeWoken).
  [[nodiscard]] bool Admit(uint32_t id) override;
  // The attempt admitted for `id` ended (whatever its outcome).
  void Release(DestinationId id);
  // Outcomes per recipient, for the counters (the delivery side calls it from its results).
  void Count(DestinationId id, Outcome outcome, std::string_view last_reply);
  // The scheduler's count of messages waiting for `id` (for views and metrics).
  void SetQueued(DestinationId id, uint64_t queued);

  // Destinations parked by a refused Admit that may take an attempt again now (a suspension
  // ended, a token refilled, an attempt was released, an Admit from elsewhere succeeded so the
  // wake the scheduler waited for went stale, or the destination was forgotten: its id is
  // unknown, so admitted): the caller wakes them in the scheduler. And how long until the next one
  // may, -1: none waiting on time.
  [[nodiscard]] std::vector<DestinationId> TakeWoken();
  [[nodiscard]] int64_t MsUntilWake() const;

  // relaisctl dest suspend|resume (by key, or name case-insensitively; false: not known
  // here). A duration of 0 suspends until resumed; an empty reason says "suspended by an
  // operator".
  bool Suspend(std::string_view key_or_name, uint64_t duration_ms, std::string_view reason);
  bool Resume(std::string_view key_or_name);
  // The destinations whose queue a reply rule bounced since the last call: the caller returns
  // their queued messages (Scheduler::ReturnDestination).
  [[nodiscard]] std::vector<DestinationId> TakeBounced();

  [[nodiscard]] const Limits& limits(DestinationId id) const;
  [[nodiscard]] std::optional<DestinationView> View(DestinationId id) const;
  [[nodiscard]] std::optional<DestinationView> Find(std::string_view key_or_name) const;
  // Every destination, or the `top` with the most queued (for the metrics' bounded labels;
  // `rest` gets the sums of the others' queued, in_flight and connections).
  [[nodiscard]] std::vector<DestinationView> All() const;
  [[nodiscard]] std::vector<DestinationView> Top(size_t top, DestinationView* rest) const;
  [[nodiscard]] size_t size() const;
  // sizeof the fixed record of one destination (the memory test and the bench report it).
  [[nodiscard]] static size_t EntryBytes();
  // Forgets idle destinations (see the header comment); once per loop turn is cheap (a full
  // pass runs at most every idle_forget_ms / 10). The ids forgotten are appended to
  // `forgotten` when given (Sources::Forget them: ids are reused).
  void Sweep(std::vector<DestinationId>* forgotten = nullptr);

  // DestinationControl.
  [[nodiscard]] uint32_t ConnectionsAllowed(DestinationId id) const override;
  [[nodiscard]] uint32_t MessagesPerConnection(DestinationId id) const override;
  void ConnectionCount(DestinationId id, bool opened) override;
  ReplyRule::Action OnReply(DestinationId id, uint16_t code, std::string_view enhanced,
                            std::string_view text) override;
  void OnDelivered(DestinationId id) override;

 private:
  struct Entry;
  struct Compiled;  // The reply rules' RE2s.
  // What the matching rules make of a destination, shared by every destination the same
  // rules match (few: bounded by the rule combinations in use).
  struct Profile {
    Limits limits;
    bool adaptive = true;
    std::vector<uint16_t> replies;  // The reply rules whose scope covers it, in order.
  };
  struct Wake {
    uint64_t at_ms;
    DestinationId id;
    bool operator>(const Wake& other) const { return at_ms > other.at_ms; }
  };

  Entry* Get(DestinationId id) const;
  Entry* Lookup(std::string_view key_or_name) const;
  uint32_t ProfileFor(std::string_view domain, const std::vector<MxHost>& hosts);
  void Refill(Entry& entry, uint64_t now_ms) const;
  void Park(DestinationId id, Entry& entry, uint64_t at_ms);
  void WakeNow(DestinationId id, Entry& entry);
  void Backoff(Entry& entry, std::string_view reason, uint64_t now_ms);
  void SetRate(Entry& entry, Rate rate) const;
  DestinationView MakeView(DestinationId id, const Entry& entry) const;
  bool Idle(const Entry& entry, uint64_t now_ms) const;
  void Erase(DestinationId id);

  const ShapingOptions options_;
  const base::Clock& clock_;
  std::unique_ptr<Compiled> compiled_;
  std::vector<Profile> profiles_;
  std::unordered_map<std::string, uint32_t> profile_by_rules_;  // Matched rule indices.
  std::vector<std::unique_ptr<Entry>> entries_;                 // By id - 1; null: free.
  std::unordered_map<std::string_view, DestinationId> by_key_;  // Views of Entry::key.
  std::vector<DestinationId> free_ids_;
  size_t live_ = 0;
  std::vector<DestinationId> woken_;
  std::vector<Wake> wakes_;  // A min-heap by time; stale ones are skipped.
  std::vector<DestinationId> bounced_;
  std::vector<DestinationId> forgotten_;  // By a sweep Intern ran, until the next Sweep.
  // Operator suspensions of destinations this shard did not know when they were asked for
  // (relaisctl reaches every shard; SO_REUSEPORT and the resolver's timing decide which shard
  // meets a destination first): applied when one is interned under that key or name.
  struct Standing {
    std::string key_or_name;
    uint64_t until_ms = 0;
    std::string reason;
  };
  std::vector<Standing> standing_;  // At most kStandingMax; expired ones dropped.
  uint64_t next_sweep_ms_ = 0;
};

// Whether `rule`'s scope (domain pattern and mx_suffix) covers a destination made for
// `domain` with MX hosts `hosts`. Exposed for tests and relaisctl.
[[nodiscard]] bool RuleMatches(std::string_view rule_domain, std::string_view rule_mx_suffix,
                               std::string_view domain, const std::vector<MxHost>& hosts);

// Whether a reply says the receiver wants us to slow down (the adaptive shaping's signal): a
// 421, or a 4xx reply whose enhanced code is 4.7.x or whose text is one of the shipped
// rate-limit phrases (case-insensitive). Exposed for tests and the bounce classes.
[[nodiscard]] bool IsThrottleReply(uint16_t code, std::string_view enhanced, std::string_view text);

}  // namespace relais::delivery
