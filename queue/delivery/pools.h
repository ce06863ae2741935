// queue/delivery/pools.h — one shard's outbound connections: SMTP to smarthosts and LMTP to
// mail stores, each an smtp::ClientSession on the stream pump (core/net) over the socket seam
// (io::Net: the shard's io_uring in production, io::FakeNet in tests).
//
// Each destination (a smarthost or lmtp route) has a pool: a queue of tasks (one message and
// some of its recipients) and up to connections_max connections (links). A link that finishes
// a message takes the next task of its pool (RSET, then the next envelope), up to
// messages_per_connection_max, and waits idle_timeout_ms for one before it says QUIT. A task
// goes to an idle link first; a new link is opened only for a task no idle link can take (up to
// connections_max), and that task is reserved for it, so every connection opened carries at
// least one message (a link that finishes first takes the next queued task, never a reserved
// one). Next hops are tried in the route's order (next_hops.h): a link that fails before the
// greeting and EHLO are done moves the pool to the next one; when every next hop failed in a
// row, the queued tasks are deferred with the last error (the scheduler retries them later).
//
// An mx destination (Route::kMx) fails over per task instead (next_hops.h, TaskHops): its
// endpoints are the MX hosts by preference, each host's addresses in order. A task whose
// connect failed goes to the host's next address; one whose host greeted with anything but
// 220 (421), failed before it was ready, or answered the whole transaction with a temporary
// reply (4xx to MAIL or to the end of the data, every RCPT 4xx) goes to the next host, up to
// Destination::hosts_per_attempt_max distinct hosts (0: all); then its results are the last
// temporary reply (the scheduler retries it). An idle link takes a queued task only if that
// task may go to the link's host. A Destination's endpoints may be replaced between Submits
// (re-resolution): the pool sees the change (count, names, hosts) and starts its records over.
//
// Shaping (UseControl; destinations.h): per destination id, the links are capped by
// DestinationControl::ConnectionsAllowed (read at each dispatch: adaptive shaping lowers it,
// and a link over the cap says QUIT instead of taking the next task), messages per connection
// by MessagesPerConnection; links opening and closing are counted to it; every reply of 400
// or more a next hop gives (greeting, EHLO, the transaction's, each recipient's) goes to
// OnReply, once per distinct reply per link, never the session's own verdicts on a lost
// connection; a message accepted calls OnDelivered. OnReply saying kSuspend defers the
// destination's queued tasks (kSuspended), kBounce fails them (kBouncedByRule); tasks on links
// finish. Without a control, or for a destination of id 0, PoolOptions' limits apply.
//
// Sources (UseSources; sources.h): a new link of a destination with a source_pool picks a
// source of the endpoint's family, binds its address before the connect (io::Net::Bind) and
// says its EHLO name (empty: helo_name). No source under its connection limit: the task waits
// in the queue for a link of the destination to close; every source at its warm-up cap: the
// queue is deferred (kWarmupCap); none of the family: the next endpoint is tried.
//
// A task's results arrive through PoolListener::OnPoolDone once per task, never from inside
// Submit; when its link fails while part of the message is being sent, only once that send
// has ended (large content is sent from the caller's memory, which the results free). Timeouts per
// RFC 5321 4.5.3.2 (the options), one pump deadline per link for whatever it waits on: the connect,
// a send (data_block_timeout_ms), a reply, or the idle time. What a task carries and how its
// replies become typed statuses is decided in outbound.h; the deferrals made here (stopping, no
// usable next hop) come from the status table (status.h).
//
// Outbound TLS (RFC 3207) per destination, as its route says (config::RouteTls): the session
// asks for STARTTLS as the policy says; once the next hop answered 220, the link puts a
// tls::TlsTransport (client side, the shard's ClientContext for the route's CA file and client
// certificate) under the session on its pump, with SNI and verification against the host name
// the route writes (never the address), and the session resumed per "host:port" as written. The
// handshake has its own deadline (tls_handshake_timeout_ms, fixed when it starts: a next hop that
// hangs in it never holds the queue). When it fails (or times out): under "may" the "host:port"
// is remembered for tls_fallback_ttl_ms (a bounded map) and the task, untouched (no transaction
// starts before TLS is up), goes at once to a fresh plaintext connection; under "encrypt" and
// "verify" the next hop counts as failed (failover) and, once every next hop failed, the queue is
// deferred 451 4.7.5 (4.7.10 when the next hop did not offer STARTTLS or refused it), never sent
// in the clear. AUTH (RFC 4954) with the route's credentials is the session's, after TLS only.
//
// Owned by one shard; not thread-safe. Time comes from the injected Clock; the net, timer
// wheel and listener outlive the pools.
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "core/base/clock.h"
#include "core/config/route.h"
#include "core/io/net.h"
#include "core/timer/timer_wheel.h"
#include "protocols/smtp/client_session.h"
#include "protocols/tls/tls.h"
#include "queue/delivery/delivery.h"
#include "queue/delivery/destinations.h"
#include "queue/delivery/endpoint.h"
#include "queue/delivery/sources.h"
#include "queue/delivery/status.h"

namespace relais::delivery {

// One shard's TLS client contexts, by DestinationTls::context (a context caches sessions and
// is not shared between shards).
using ClientContexts = std::vector<std::unique_ptr<tls::ClientContext>>;

// Numbers each distinct (CA file, client certificate) among the TLS destinations: sets their
// DestinationTls::context. Once, at start, before the shards copy nothing (they share them).
void NumberClientContexts(std::vector<std::optional<Destination>>& destinations);
// A shard's contexts made from those options (CA bundle and certificates are read here: at
// start, on the startup thread); an error names the file.
[[nodiscard]] absl::StatusOr<ClientContexts> MakeClientContexts(
    const std::vector<std::optional<Destination>>& destinations);

struct PoolOptions {
  uint32_t shard = 0;
  std::string helo_name;
  uint32_t connect_timeout_ms = 30'000;
  uint32_t reply_timeout_ms = 300'000;
  uint32_t data_init_timeout_ms = 120'000;
  uint32_t data_block_timeout_ms = 180'000;
  uint32_t data_end_timeout_ms = 600'000;
  uint32_t idle_timeout_ms = 5'000;
  uint32_t connections_max = 10;  // Per destination, this shard's share.
  uint32_t messages_per_connection_max = 100;
  uint32_t mime_nesting_max = 100;  // For 8-bit mail converted to 7 bits (protocols/mime).
  // Outbound TLS ([tls] handshake_timeout and fallback_ttl): the whole handshake must end in
  // this time; a "may" next hop whose handshake failed gets plaintext this long. The map of
  // such next hops holds at most tls_fallback_max (then the one whose entry ends first goes).
  uint32_t tls_handshake_timeout_ms = 10'000;
  uint64_t tls_fallback_ttl_ms = 3'600'000;
  uint32_t tls_fallback_max = 1024;
  // TCP_NODELAY on TCP connections (commands and replies are small and latency-bound): a
  // control-plane call on the descriptor, off for a Net whose sockets are not the kernel's.
  bool tcp_no_delay = true;
};

struct PoolTask {
  uint64_t id = 0;                // The caller's handle, given back with the results.
  smtp::OutgoingMessage message;  // Views into memory the caller keeps until the results.
};

class PoolListener {
 public:
  // One result per recipient of the task's message; `next_hop` names the endpoint that
  // answered last (empty when none was reached).
  virtual void OnPoolDone(uint64_t id, std::vector<smtp::RecipientReply>&& results,
                          std::string_view next_hop) = 0;

 protected:
  ~PoolListener() = default;
};

struct PoolCounters {
  uint64_t connections_opened = 0;
  uint64_t connect_failures = 0;
  uint64_t transactions = 0;
  uint64_t tasks_retried = 0;        // Moved off a cached connection that had gone stale.
  uint64_t tasks_failed_over = 0;    // mx: moved to another address or host of the destination.
  uint64_t source_waits = 0;         // A task waited: every source at its connection limit.
  uint64_t connections_unused = 0;   // Greeted, then closed without carrying a message.
  uint64_t converted_7bit = 0;       // Messages converted for a next hop without 8BITMIME.
  uint64_t not_convertible = 0;      // ...and those that could not be (failed, 5.6.3).
  uint64_t smtputf8_not_needed = 0;  // Sent without SMTPUTF8 to a next hop without it.
  // Outbound STARTTLS handshakes, by result.
  uint64_t tls_handshakes_ok = 0;
  uint64_t tls_resumed = 0;               // ...of which resumed a session of the same "host:port".
  uint64_t tls_handshakes_failed = 0;     // Alert, verification, reset during the handshake.
  uint64_t tls_handshakes_timed_out = 0;  // Still handshaking at tls_handshake_timeout_ms.
  uint64_t tls_not_offered = 0;           // tls = "encrypt"/"verify" and no STARTTLS (or refused).
  // Connections opened in plaintext to a "may" next hop remembered for a failed handshake.
  uint64_t tls_plaintext_fallbacks = 0;
  uint64_t tls_fallbacks_forgotten = 0;  // Entries pushed out of the full fallback map.
};

// The pools' side of the source pools (sources.h), as an interface so that the pools' tests
// use a fake: SourcesLinks (sources_links.h) passes it to a shard's Sources.
class LinkSources {
 public:
  [[nodiscard]] virtual std::optional<Sources::Choice> Pick(int32_t pool, uint32_t destination,
                                                            int family, Sources::Refusal* why) = 0;
  virtual void Opened(uint32_t source, uint32_t destination) = 0;
  virtual void Closed(uint32_t source, uint32_t destination) = 0;
  virtual void Sent(uint32_t source, uint32_t destination) = 0;

 protected:
  ~LinkSources() = default;
};

class Pools {
 public:
  Pools(io::Net& net, timer::TimerWheel& timers, const base::Clock& clock, PoolOptions options,
        PoolListener& listener);
  ~Pools();
  Pools(const Pools&) = delete;
  Pools& operator=(const Pools&) = delete;

  // The shard's TLS client contexts (MakeClientContexts), before the first Submit to a
  // destination with TLS.
  void UseTls(ClientContexts contexts) { contexts_ = std::move(contexts); }
  // The shard's shaping (Destinations), before the first Submit; null: PoolOptions' limits.
  void UseControl(DestinationControl* control) { control_ = control; }
  // The shard's source pools and what they are made of (the addresses and EHLO names),
  // before the first Submit; both outlive the pools. Null: no source binding.
  void UseSources(LinkSources* sources, const SourceOptions* options) {
    sources_ = sources;
    source_options_ = options;
  }
  // Queues `task` for `destination` (which must outlive the pools).
  void Submit(const Destination& destination, PoolTask task);
  // The destination is about to be freed: its pool record goes. It must be idle (no link, no
  // task); a destination the pools never saw is fine.
  void Forget(const Destination& destination);
  // Opens, sends, and hands out results for everything the turn's completions changed. Once
  // per loop turn, after the completions ran.
  void Pump();
  // True when Pump has work that should not wait for the next completion.
  [[nodiscard]] bool busy() const { return !dirty_.empty() || !pending_pools_.empty(); }
  // Graceful stop: queued tasks are deferred, idle links say QUIT, messages being sent
  // finish. Nothing new is opened.
  void Stop();
  // No connection open and no task queued.
  [[nodiscard]] bool idle() const;
  [[nodiscard]] uint32_t connections() const { return connections_; }
  [[nodiscard]] const PoolCounters& counters() const { return counters_; }
  // "may" next hops sent plaintext for now, after a failed handshake.
  [[nodiscard]] size_t tls_fallbacks() const { return plaintext_until_.size(); }

 private:
  struct Pool;
  struct Link;
  struct Item;
  enum class Opened : uint8_t { kOpened, kWait };

  void Dispatch(Pool& pool);
  // A new link for `item` (or its results, when no endpoint is left for it); kWait: the item
  // went back to the queue, and nothing more opens this turn.
  Opened Open(Pool& pool, Item item);
  // The endpoints of the pool's destination changed (or were never seen): records restart.
  void Refresh(Pool& pool);
  // The item's host record is about the pool's current endpoints.
  void Fresh(const Pool& pool, Item& item) const;
  // The first queued item `link` may carry.
  [[nodiscard]] std::optional<Item> TakeFor(Pool& pool, const Link& link);
  // The item has no endpoint left in this attempt: its results are the last temporary reply.
  void Exhausted(Pool& pool, Item item);
  // Shaping and source limits of the pool's destination, now.
  [[nodiscard]] uint32_t ConnectionsAllowed(const Pool& pool) const;
  [[nodiscard]] uint32_t MessagesPerConnection(const Pool& pool) const;
  // A reply of a next hop to the control (once per distinct reply per link); what it says.
  ReplyRule::Action Feed(Link& link, uint16_t code, std::string_view enhanced,
                         std::string_view reply);
  // The control said kSuspend or kBounce after `reply`: the queue is deferred or failed.
  void Act(Pool& pool, ReplyRule::Action action, std::string_view reply);
  // The pool's session lost its connection (our side decided it): the session's verdicts on
  // it are not the next hop's replies.
  static void Lost(Link& link, std::string_view why);
  void Process(Link& link);
  // Hands the link's finished task to the listener (or back to the queue when the link was
  // stale before anything of it was answered).
  void HandOut(Link& link);
  void BeginClose(Link& link);
  // The pump closed: results held back for it go out, then the link is freed.
  void Closed(Link& link);
  void Free(Link& link);
  void MarkDirty(Link& link);
  void MarkPending(Pool& pool);
  void Requeue(Pool& pool, Item item);
  void Finish(Item& item, std::vector<smtp::RecipientReply>&& results, std::string_view hop);
  void DeferQueue(Pool& pool, const smtp::RecipientReply& reason);
  void OnTimeout(Link& link);
  [[nodiscard]] static smtp::RecipientReply NoNextHop(const Pool& pool);
  // STARTTLS answered: the TLS transport goes under the session; the handshake's progress.
  void StepTls(Link& link);
  // The handshake failed or timed out (`why`): under "may" the next hop gets plaintext for a
  // while; the session is closed either way.
  void TlsFailed(Link& link, std::string_view why);
  [[nodiscard]] bool PlaintextFor(const std::string& hop);
  void RememberPlaintext(const std::string& hop);

  io::Net& net_;
  timer::TimerWheel& timers_;
  const base::Clock& clock_;
  const PoolOptions options_;
  PoolListener& listener_;
  std::unordered_map<const Destination*, std::unique_ptr<Pool>> pools_;
  std::vector<Pool*> pending_pools_;  // Pools with tasks to dispatch this turn.
  std::vector<Link*> dirty_;
  uint32_t connections_ = 0;
  bool stopping_ = false;
  PoolCounters counters_;
  ClientContexts contexts_;
  DestinationControl* control_ = nullptr;
  LinkSources* sources_ = nullptr;
  const SourceOptions* source_options_ = nullptr;
  // "host:port" of "may" next hops whose handshake failed -> when they get TLS again (ms).
  std::unordered_map<std::string, uint64_t> plaintext_until_;
};

// The delivery side's way out (Outbound): the Destination Delivery hands over (its book's, or
// a route template) names the pool on this shard that sends the task. The pools outlive it.
class PoolsOutbound final : public Outbound {
 public:
  explicit PoolsOutbound(Pools& pools) : pools_(pools) {}
  void Submit(const Destination& destination, uint64_t task_id,
              smtp::OutgoingMessage message) override;

 private:
  Pools& pools_;
};

}  // namespace relais::delivery
