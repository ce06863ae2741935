// queue/delivery/mx.h — where a recipient domain's mail goes on the internet (RFC 5321 5.1,
// RFC 7505), and the host names of smarthost and LMTP routes, found on the shard's own DNS
// resolver: no blocking call, no thread.
//
// MxEvaluation is sans-I/O, in the Run() / needed() / Provide() shape of spf::Evaluation: it
// asks for the domain's MX records, then each MX host's A and/or AAAA records (as the
// IpFamily says), and ends in a Resolution:
//   - MX records sorted by preference; among equal preferences a random order (the injected
//     Random), so equal-preference hosts share the load;
//   - no MX record (no data) → the implicit MX: the domain itself, preference 0;
//   - a single MX with exchange "." (RFC 7505 null MX) → kNullMx at once (556 5.1.10); a null
//     MX among other records is ignored as RFC 7505 3 allows;
//   - NXDOMAIN for the domain → kNoSuchDomain (550 5.1.2);
//   - a temporary failure for the MX question → kDnsTemporary (451 4.4.3);
//   - this relay among the MX hosts (a name in self_names, or an address in self_addresses):
//     every record with a preference equal to or greater than its own is dropped (RFC 5321
//     5.1); nothing left → kMxLoop (550 5.4.6);
//   - hosts whose addresses do not resolve are left out; none left: kDnsTemporary when any
//     lookup failed temporarily, else kNoMxAddress (550 5.4.4);
//   - at most mx_records_max MX records are looked at (the best ones), at most
//     addresses_per_host_max addresses kept per host, so a hostile zone costs a bounded number
//     of questions; CNAMEs are followed by the resolver.
// Host names are checked before use (letters, digits, '-', '.', '_'; at most 253 bytes, labels
// of 1 to 63); an MX record naming anything else is skipped (only skipped records: no valid
// host → kNoMxAddress; never the implicit MX). An address literal host ("[192.0.2.1]",
// "[IPv6:2001:db8::1]", "::1", "192.0.2.1") is used as is, without DNS: one MxHost named by the
// address's text ("192.0.2.1", "2001:db8::1"), kept for ttl_max_seconds; as a recipient domain
// it is still loop-checked and filtered by the IpFamily. A recipient domain that is not a
// valid name is kNoSuchDomain without a question (a host route's: kHostUnresolved).
//
// A route's host name (ForHost only) is looked up in the hosts file first (MxOptions::hosts,
// dns/hosts_file.h; "localhost" is always there, RFC 6761 6.3), as Postfix's smtp_host_lookup
// = dns, native does for a relayhost: a name the table names with an address of an allowed
// family answers at once, without a DNS question, its addresses ordered and bounded as a DNS
// answer's would be, kept for ttl_max_seconds. A name the table lacks (or names only with
// addresses of another family) goes to DNS as before. MX host names and recipient domains never
// look at the table (RFC 5321 5: the mail exchangers are DNS's word).
//
// Details the RFCs leave open, as decided here:
//   - null MX: a single record whose exchange is "." (or empty), whatever its preference;
//   - an exchange named twice keeps its lowest preference;
//   - the loop check by name happens before the address lookups (a dropped record costs no
//     question), by address once the addresses are in (the lowest preference of a host with one
//     of self_addresses); records dropped by either are never asked for or used;
//   - addresses: A and AAAA answers keep only addresses of their own family, in the DNS's
//     order, at most addresses_per_host_max each; kAny puts IPv4 first, kPreferIpv6 IPv6 first;
//   - ttl_seconds: the smallest TTL among the answers the evaluation got (a no-data or NXDOMAIN
//     answer with TTL 0 does not count: dns::Resolver hands a fresh negative answer without
//     its TTL and caches it itself), at most ttl_max_seconds; 0 when nothing counted, and on
//     kDnsTemporary / kHostUnresolved.
//
// NextHopResolver is one shard's driver: it runs evaluations on a Dns (the shard's
// dns::Resolver behind an adapter; a fake in tests), caches finished resolutions by domain for
// their TTL (the smallest TTL of the answers used; temporary failures are not cached, and
// every cached entry is bounded by cache_entries_max, least recently used forgotten), and
// shares one evaluation among concurrent requests for the same name. Owned by one shard; not
// thread-safe.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "core/base/clock.h"
#include "core/base/random.h"
#include "core/mail/ip_network.h"
#include "protocols/dns/answer.h"
#include "protocols/dns/hosts_file.h"
#include "protocols/dns/resolver.h"
#include "queue/delivery/status.h"

namespace relais::delivery {

// Which addresses of a host are used ([mx] ip_family).
enum class IpFamily : uint8_t {
  kAny,         // A and AAAA, IPv4 first.
  kIpv4,        // A only.
  kIpv6,        // AAAA only.
  kPreferIpv6,  // A and AAAA, IPv6 first.
};
inline constexpr std::array<std::string_view, 4> kIpFamilyWords = {"any", "ipv4", "ipv6",
                                                                   "prefer-ipv6"};

struct MxOptions {
  IpFamily family = IpFamily::kAny;
  uint16_t port = 25;                   // The port of every MX host ([mx] port; tests: a sink's).
  uint32_t mx_records_max = 10;         // MX records used per domain, the best first (0: 1).
  uint32_t addresses_per_host_max = 4;  // Addresses kept per host (per family) (0: 1).
  // This relay, for the loop check: its names (besides [server] hostname, which the wiring
  // adds) and its addresses (besides the listen addresses, which the wiring adds).
  std::vector<std::string> self_names;
  std::vector<mail::IpAddress> self_addresses;
  size_t cache_entries_max = 100'000;  // NextHopResolver's finished resolutions.
  uint32_t ttl_max_seconds = 3600;     // A resolution is kept at most this long.
  // The hosts file, read once at start and shared read-only by every shard; route host names
  // only. Null: no file, only the localhost default.
  std::shared_ptr<const dns::HostsTable> hosts;
};

// One host to try, with its addresses in the order to try them.
struct MxHost {
  std::string name;  // The exchange as the record names it (lower case, no trailing dot).
  uint16_t preference = 0;
  std::vector<mail::IpAddress> addresses;
};

struct Resolution {
  // Empty hosts: the recipients of the domain get `failure` (one of the MX reasons of
  // status.h, with the domain in its text).
  std::vector<MxHost> hosts;  // In the order to try them.
  Status failure;
  bool implicit = false;     // No MX: the domain itself.
  uint32_t ttl_seconds = 0;  // How long it may be used (cache).
  // What makes two domains one destination (destinations.h): the MX host names, sorted and
  // deduplicated, joined by ','; the domain itself for an implicit MX; "" on failure.
  std::string key;

  [[nodiscard]] bool ok() const { return !hosts.empty(); }
};

class MxEvaluation {
 public:
  enum class State : uint8_t { kNeedDns, kDone };

  // `domain` as the recipient wrote it (any case, no trailing dot needed). `random` orders
  // equal preferences; it must outlive the evaluation.
  MxEvaluation(std::string_view domain, const MxOptions& options, base::Random& random);
  // The A/AAAA lookup of one host name for a smarthost or LMTP next hop: no MX step, never a
  // loop check (a route is the operator's word); failures are kHostUnresolved.
  static MxEvaluation ForHost(std::string_view host, const MxOptions& options,
                              base::Random& random);

  // Goes as far as the answers provided allow.
  State Run();
  // The questions Run() needs answered before it can go on (when kNeedDns).
  [[nodiscard]] const std::vector<dns::Question>& needed() const { return needed_; }
  void Provide(const dns::Question& question, const dns::Answer& answer);
  // Valid once Run() returned kDone.
  [[nodiscard]] const Resolution& result() const { return result_; }
  // Questions asked so far (bounded: 1 + 2 * mx_records_max).
  [[nodiscard]] uint32_t questions() const { return questions_; }
  // Once kDone: the reason of result().failure, nullopt when the result is ok.
  [[nodiscard]] std::optional<Reason> failure_reason() const { return reason_; }

 private:
  enum class Stage : uint8_t { kStart, kMx, kHosts, kDone };

  MxEvaluation(std::string_view name, const MxOptions& options, base::Random& random,
               bool host_only);
  // Asks `questions` (those not yet answered); counts the ones never asked before.
  State Need(std::vector<dns::Question> questions);
  [[nodiscard]] const dns::Answer* Find(const dns::Question& question) const;
  State OnMxAnswer(const dns::Answer& answer);
  State RunHosts();
  State Fail(Reason reason);
  State Succeed(std::vector<MxHost> hosts);
  void SetLiteral(const mail::IpAddress& address);
  // A route host the hosts file names with an allowed address: done; else false.
  bool FromHostsTable();
  [[nodiscard]] bool IsSelfName(const std::string& name) const;
  [[nodiscard]] bool IsSelfAddress(const mail::IpAddress& address) const;
  [[nodiscard]] uint32_t TtlOfAnswers() const;

  const MxOptions* options_;
  base::Random* random_;
  std::string domain_;  // QuestionKey form.
  bool host_only_ = false;
  Stage stage_ = Stage::kStart;
  std::vector<dns::Question> needed_;
  std::unordered_map<std::string, dns::Answer> answers_;  // By "type name".
  std::unordered_set<std::string> asked_;                 // Keys ever put in needed_.
  Resolution result_;
  std::optional<Reason> reason_;
  uint32_t questions_ = 0;
  std::vector<MxHost> candidates_;  // After the MX step: the hosts to look up, in order.
};

// The DNS the resolver drives (the shard's dns::Resolver through ResolverDns; fakes in tests).
// FromCache answers at once or says it cannot; Resolve answers later, exactly once. Resolve
// should not answer from inside the call, but NextHopResolver tolerates it (it takes the answer
// and goes on; its own callers are still never called back from inside ResolveMx/ResolveHost).
// A Dns destroyed with lookups in flight may drop their callbacks (dns::Resolver does).
class Dns {
 public:
  [[nodiscard]] virtual std::optional<dns::Answer> FromCache(const dns::Question& question) = 0;
  virtual void Resolve(const dns::Question& question,
                       std::function<void(const dns::Answer&)> done) = 0;

 protected:
  ~Dns() = default;
};

// The Dns of a shard: its dns::Resolver, which must outlive the adapter. NextHopResolver asks
// FromCache first, so Resolve goes to the network; should dns::Resolver::Resolve still answer
// from inside the call (a name c-ares refuses locally, or its cache filled in between), the
// answer is passed on at once, which NextHopResolver accepts (see Dns), rather than deferred:
// the adapter has no loop of its own to defer to.
class ResolverDns final : public Dns {
 public:
  explicit ResolverDns(dns::Resolver& resolver) : resolver_(resolver) {}
  [[nodiscard]] std::optional<dns::Answer> FromCache(const dns::Question& question) override;
  void Resolve(const dns::Question& question,
               std::function<void(const dns::Answer&)> done) override;

 private:
  dns::Resolver& resolver_;
};

// lookups counts every ResolveMx/ResolveHost call; the results below count finished
// evaluations (a cache hit or a joined request is not counted again).
struct NextHopResolverStats {
  uint64_t lookups = 0;
  uint64_t cache_hits = 0;
  uint64_t evaluations = 0;  // Evaluations started (joined requests are not counted again).
  uint64_t null_mx = 0;
  uint64_t nxdomain = 0;
  uint64_t temporary = 0;  // kDnsTemporary and kHostUnresolved.
  uint64_t loops = 0;
  uint64_t ok = 0;
  uint64_t no_address = 0;
};

// Lifetime: the resolver may be destroyed with lookups in flight, before or after its Dns.
// The requests in flight then end without their callbacks; a Dns answer arriving later is
// ignored (each one holds the resolver's alive flag). A callback may call ResolveMx /
// ResolveHost again (the finished entry is cached, or gone, by then) or destroy the resolver
// (the remaining callbacks of that evaluation are then not called).
class NextHopResolver {
 public:
  using Callback = std::function<void(const Resolution&)>;

  NextHopResolver(const MxOptions& options, Dns& dns, const base::Clock& clock,
                  base::Random& random);
  ~NextHopResolver();
  NextHopResolver(const NextHopResolver&) = delete;
  NextHopResolver& operator=(const NextHopResolver&) = delete;

  // The mail exchangers of `domain`: the answer at once when it is cached (or the DNS cache
  // answers every question), else nullopt and `done` runs later, exactly once, from the Dns's
  // answer path (never from inside this call).
  [[nodiscard]] std::optional<Resolution> ResolveMx(std::string_view domain, Callback done);
  // A smarthost or LMTP host as the route writes it (a name, or an address literal, which
  // answers at once): its addresses as one MxHost, same rules for the callback.
  [[nodiscard]] std::optional<Resolution> ResolveHost(std::string_view host, Callback done);

  [[nodiscard]] const NextHopResolverStats& stats() const { return stats_; }
  [[nodiscard]] size_t cached() const { return cache_.size(); }
  [[nodiscard]] size_t in_flight() const { return running_.size(); }

 private:
  struct Running;
  struct Cached {
    Resolution resolution;
    uint64_t expires_ms = 0;
    std::list<std::string>::iterator lru;
  };

  std::optional<Resolution> Lookup(std::string key, bool host, std::string_view name,
                                   Callback done);
  // Runs `running`'s evaluation as far as the answers at hand allow; true once it is done.
  bool Drive(Running& running);
  void OnAnswer(const std::string& key, uint64_t id, const dns::Question& question,
                const dns::Answer& answer);
  // Counts and caches a finished evaluation.
  void Record(const std::string& key, const MxEvaluation& evaluation);

  const MxOptions options_;
  Dns& dns_;
  const base::Clock& clock_;
  base::Random& random_;
  std::unordered_map<std::string, Cached> cache_;  // By "mx:domain" or "host:name".
  std::list<std::string> lru_;                     // Most recent first.
  std::unordered_map<std::string, std::unique_ptr<Running>> running_;
  uint64_t next_id_ = 1;
  // False once the resolver is gone. shared_ptr because the Dns's pending callbacks hold it and
  // may run after the destructor (a Dns that outlives the resolver); one shard only.
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  NextHopResolverStats stats_;
};

}  // namespace relais::delivery
