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
#include "queue/delivery/endpoint.h"
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
  // Queues `task` for `destination` (which must outlive the pools).
  void Submit(const Destination& destination, PoolTask task);
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

  void Dispatch(Pool& pool);
  void Open(Pool& pool, PoolTask task);
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
  void Requeue(Pool& pool, PoolTask task);
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
