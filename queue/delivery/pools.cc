// queue/delivery/pools.cc — see pools.h.
#include "queue/delivery/pools.h"

#include <netinet/in.h>
#include <netinet/tcp.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "core/base/check.h"
#include "core/base/strings.h"
#include "core/log/log.h"
#include "core/net/stream_pump.h"
#include "queue/delivery/next_hops.h"
#include "queue/delivery/outbound.h"

namespace relais::delivery {

using base::StrCat;

namespace {
smtp::RecipientReply StoppingReply() { return ToReply(Make(Reason::kStopping)); }
}  // namespace

// ---- Pools and links ----

// A task as the pool holds it: for an mx destination, with the hosts it tried in this attempt
// and the last temporary reply it had.
struct Pools::Item {
  PoolTask task;
  TaskHops hops;
  uint64_t generation = 0;                         // The pool's endpoints the record is about.
  std::optional<smtp::RecipientReply> last;        // A connection-level failure.
  std::vector<smtp::RecipientReply> last_results;  // A temporary reply to the transaction.
  std::string last_hop;
};

struct Pools::Pool {
  const Destination* destination = nullptr;
  std::deque<Item> queue;
  std::vector<std::unique_ptr<Link>> links;
  // Which next hop new links go to, and when all have failed (next_hops.h).
  NextHops hops{0};
  // What the endpoints looked like when last seen (a re-resolution replaces them), the
  // generation the records are about, and each endpoint's host.
  uint64_t signature = 0;
  uint64_t generation = 0;
  std::vector<uint32_t> hosts;
  std::string last_error;  // Of the last link that failed before it was ready.
  // Set when that failure was TLS under "encrypt"/"verify" (4.7.5, 4.7.10): the queue is
  // deferred with it, not with 4.4.1, once every next hop failed.
  std::optional<Status> last_tls_failure;
  bool pending = false;  // On pending_pools_.
};

// One outbound connection: the client session, seen by its pump as a stream session, and the
// pump over the socket. Freed once the pump has closed (OnPumpClosed), or at once when no
// socket could be had.
struct Pools::Link final : net::StreamSession, net::StreamPumpOwner {
  Link(Pools* p, Pool* l, uint32_t index, smtp::ClientOptions options)
      : pools(p),
        pool(l),
        endpoint(l->destination->endpoints[index]),
        endpoint_index(index),
        generation(l->generation),
        session(std::move(options)) {}

  // net::StreamSession: the client session's output stays put until consumed (its pieces),
  // so the pump sends it without a copy.
  void Feed(std::string_view bytes) override { session.Feed(bytes); }
  [[nodiscard]] std::string_view PendingOutput() const override { return session.PendingOutput(); }
  void ConsumeOutput(size_t bytes) override { session.ConsumeOutput(bytes); }
  // Always read while open: a next hop that closes an idle connection is seen at once.
  [[nodiscard]] bool WantsInput() const override { return !session.closed(); }
  // QUIT (or nothing more to say): close once the output is sent.
  [[nodiscard]] bool WantsClose() const override { return quitting || session.closed(); }
  void EndOfInput() override { Pools::Lost(*this, "closed by the next hop"); }
  [[nodiscard]] bool StableOutput() const override { return true; }

  // net::StreamPumpOwner.
  void OnPumpReady(net::StreamPump& /*pump*/) override {
    connecting = false;
    pools->MarkDirty(*this);
  }
  void OnPumpClosed(net::StreamPump& /*pump*/) override { pools->Closed(*this); }
  void OnPumpTimeout(net::StreamPump& /*pump*/) override { pools->OnTimeout(*this); }

  [[nodiscard]] bool open() const { return !closing && pump.has_value() && !pump->closing(); }

  [[nodiscard]] uint32_t host() const { return endpoint.host_index; }

  Pools* pools;
  Pool* pool;
  const Endpoint endpoint;  // A copy: the destination's endpoints may be replaced meanwhile.
  const uint32_t endpoint_index;
  const uint64_t generation;  // Of the pool's endpoints when opened.
  smtp::ClientSession session;
  // After STARTTLS: declared before the pump, which uses it, so that it goes after the pump.
  std::unique_ptr<tls::TlsTransport> tls;
  std::optional<net::StreamPump> pump;  // None when no socket could be had.
  // The message this link carries or was opened for. A link is opened only for a task no idle
  // link could take, and that task waits for it (task_begun false until the session is
  // ready), so every connection carries at least one message: a link that finishes first
  // takes the next queued task instead, never the one a new connection was opened for.
  std::optional<Item> task;
  bool task_begun = false;
  std::optional<uint32_t> source;  // The source it is bound to (sources.h).
  bool connect_failed = false;     // No socket, no bind, or the connect timed out.
  bool lost = false;               // Our side ended the session (Lost).
  bool close_fed = false;          // The session's closing reply went to the control.
  // The last reply fed to the control in this transaction (a refusal that closes the session
  // is every recipient's result and the session's error: fed once).
  std::string last_fed;
  bool connecting = false;
  bool ever_ready = false;
  bool quitting = false;  // QUIT queued: the pump closes once it is sent.
  bool closing = false;
  bool dirty = false;
  // TLS: STARTTLS answered 220 and the transport waits for the send in flight to end; the
  // handshake runs (until handshake_deadline_ms); it failed (why in the session's error).
  bool tls_pending = false;
  bool handshaking = false;
  bool tls_failed = false;
  std::string tls_error;  // Why it failed (the library's reason, or the timeout).
  uint64_t handshake_deadline_ms = 0;
};

namespace {

// Why the pump found the next hop gone, in the words of the session's deferral.
std::string LostReason(const net::StreamPump& pump) {
  const int32_t error = pump.error();
  switch (pump.end()) {
    case net::PumpEnd::kConnectFailed:
      return StrCat("connect: ", std::strerror(-error));
    case net::PumpEnd::kSendFailed:
      return StrCat("send: ", std::strerror(-error));
    case net::PumpEnd::kPeerReset:
      return std::strerror(-error);
    default:
      return "closed by the next hop";
  }
}

}  // namespace

// ---- TLS contexts ----

void NumberClientContexts(std::vector<std::optional<Destination>>& destinations) {
  std::vector<const tls::ClientOptions*> distinct;
  for (std::optional<Destination>& d : destinations) {
    if (!d || d->tls.policy == config::RouteTls::kNone) {
      continue;
    }
    const tls::ClientOptions& o = d->tls.client;
    auto same = [&](const tls::ClientOptions* x) {
      return x->ca_file == o.ca_file &&
             x->client_certificate.chain_path == o.client_certificate.chain_path &&
             x->client_certificate.key_path == o.client_certificate.key_path;
    };
    auto it = std::find_if(distinct.begin(), distinct.end(), same);
    d->tls.context = static_cast<uint32_t>(it - distinct.begin());
    if (it == distinct.end()) {
      distinct.push_back(&o);
    }
  }
}

absl::StatusOr<ClientContexts> MakeClientContexts(
    const std::vector<std::optional<Destination>>& destinations) {
  ClientContexts contexts;
  for (const std::optional<Destination>& d : destinations) {
    if (!d || d->tls.policy == config::RouteTls::kNone) {
      continue;
    }
    if (d->tls.context >= contexts.size()) {
      contexts.resize(d->tls.context + 1);
    }
    if (contexts[d->tls.context] == nullptr) {
      auto context = tls::ClientContext::Create(d->tls.client);
      if (!context.ok()) {
        return context.status();
      }
      contexts[d->tls.context] = std::move(*context);
    }
  }
  return contexts;
}

Pools::Pools(io::Net& net, timer::TimerWheel& timers, const base::Clock& clock, PoolOptions options,
             PoolListener& listener)
    : net_(net),
      timers_(timers),
      clock_(clock),
      options_(std::move(options)),
      listener_(listener) {}

Pools::~Pools() {
  // Normally empty after a graceful stop; after a forced one the shard no longer runs its
  // engine, so no completion can name a link any more: the sockets are closed here.
  for (auto& [destination, pool] : pools_) {
    for (auto& link : pool->links) {
      if (link->pump && !link->pump->close_submitted()) {
        net_.CloseUnused(link->pump->socket());
      }
    }
  }
}

void Pools::Submit(const Destination& destination, PoolTask task) {
  std::unique_ptr<Pool>& pool = pools_[&destination];
  if (pool == nullptr) {
    pool = std::make_unique<Pool>();
    pool->destination = &destination;
  }
  Refresh(*pool);
  Item item;
  item.task = std::move(task);
  item.generation = pool->generation;
  pool->queue.push_back(std::move(item));
  MarkPending(*pool);
}

void Pools::Forget(const Destination& destination) {
  auto it = pools_.find(&destination);
  if (it == pools_.end()) {
    return;
  }
  Pool& pool = *it->second;
  RELAIS_CHECK(pool.links.empty() && pool.queue.empty())
      << "Forget of a destination with links or tasks";
  std::erase(pending_pools_, &pool);
  pools_.erase(it);
}

namespace {

// What identifies a destination's endpoints, to see a re-resolution replace them.
uint64_t Signature(const Destination& d) {
  uint64_t h = 1469598103934665603ull ^ d.endpoints.size();
  auto mix = [&h](std::string_view bytes) {
    for (char c : bytes) {
      h = (h ^ static_cast<uint8_t>(c)) * 1099511628211ull;
    }
    h = (h ^ 0xff) * 1099511628211ull;
  };
  for (const Endpoint& e : d.endpoints) {
    mix(e.name);
    mix(std::string_view(reinterpret_cast<const char*>(&e.host_index), sizeof(e.host_index)));
  }
  return h;
}

// The reply's text after its codes ("451 4.3.0 try later (...)" -> "try later (...)").
std::string_view ReplyText(std::string_view reply, uint16_t code, std::string_view enhanced) {
  const std::string prefix = StrCat(code, ' ', enhanced);
  if (reply.starts_with(prefix)) {
    reply.remove_prefix(prefix.size());
    if (reply.starts_with(' ')) {
      reply.remove_prefix(1);
    }
  }
  return reply;
}

}  // namespace

void Pools::Refresh(Pool& pool) {
  const uint64_t signature = Signature(*pool.destination);
  if (pool.generation != 0 && signature == pool.signature) {
    return;
  }
  pool.signature = signature;
  ++pool.generation;
  const std::vector<Endpoint>& endpoints = pool.destination->endpoints;
  pool.hops = NextHops(static_cast<uint32_t>(endpoints.size()));
  pool.hosts.clear();
  for (const Endpoint& e : endpoints) {
    pool.hosts.push_back(e.host_index);
  }
}

void Pools::Fresh(const Pool& pool, Item& item) const {
  if (item.generation != pool.generation) {
    item.hops.Reset();  // Other endpoints now: the attempt starts over on them.
    item.generation = pool.generation;
  }
}

uint32_t Pools::ConnectionsAllowed(const Pool& pool) const {
  const DestinationId id = pool.destination->id;
  if (control_ == nullptr || id == 0) {
    return options_.connections_max;
  }
  return std::max<uint32_t>(1, control_->ConnectionsAllowed(id));
}

uint32_t Pools::MessagesPerConnection(const Pool& pool) const {
  const DestinationId id = pool.destination->id;
  if (control_ == nullptr || id == 0) {
    return options_.messages_per_connection_max;
  }
  return std::max<uint32_t>(1, control_->MessagesPerConnection(id));
}

void Pools::Pump() {
  // Dispatching and processing can hand out results, and results can queue more work: loop
  // until both lists are empty, each pass on what the previous one left.
  while (!pending_pools_.empty() || !dirty_.empty()) {
    std::vector<Pool*> pools;
    pools.swap(pending_pools_);
    for (Pool* pool : pools) {
      pool->pending = false;
      Dispatch(*pool);
    }
    std::vector<Link*> dirty;
    dirty.swap(dirty_);
    for (Link* link : dirty) {
      link->dirty = false;
      Process(*link);
    }
  }
}

void Pools::MarkDirty(Link& link) {
  if (!link.dirty) {
    link.dirty = true;
    dirty_.push_back(&link);
  }
}

void Pools::MarkPending(Pool& pool) {
  if (!pool.pending) {
    pool.pending = true;
    pending_pools_.push_back(&pool);
  }
}

void Pools::Requeue(Pool& pool, Item item) {
  pool.queue.push_front(std::move(item));
  MarkPending(pool);
}

void Pools::Finish(Item& item, std::vector<smtp::RecipientReply>&& results, std::string_view hop) {
  listener_.OnPoolDone(item.task.id, std::move(results), hop);
}

void Pools::DeferQueue(Pool& pool, const smtp::RecipientReply& reason) {
  while (!pool.queue.empty()) {
    Item item = std::move(pool.queue.front());
    pool.queue.pop_front();
    std::vector<smtp::RecipientReply> results(item.task.message.recipients.size(), reason);
    Finish(item, std::move(results), "");
  }
}

void Pools::Exhausted(Pool& pool, Item item) {
  std::vector<smtp::RecipientReply> results = std::move(item.last_results);
  if (results.empty()) {
    results.assign(item.task.message.recipients.size(), item.last ? *item.last : NoNextHop(pool));
  }
  const std::string hop = std::move(item.last_hop);
  Finish(item, std::move(results), hop);
}

smtp::RecipientReply Pools::NoNextHop(const Pool& pool) {
  if (pool.last_tls_failure) {
    return ToReply(*pool.last_tls_failure);
  }
  return ToReply(Make(Reason::kNoNextHop, StrCat(RouteName(pool.destination->route),
                                                 " route is usable; last: ", pool.last_error)));
}

ReplyRule::Action Pools::Feed(Link& link, uint16_t code, std::string_view enhanced,
                              std::string_view reply) {
  const DestinationId id = link.pool->destination->id;
  if (control_ == nullptr || id == 0 || code < 400 || reply == link.last_fed) {
    return ReplyRule::Action::kBackoff;
  }
  link.last_fed = reply;
  return control_->OnReply(id, code, enhanced, ReplyText(reply, code, enhanced));
}

void Pools::Act(Pool& pool, ReplyRule::Action action, std::string_view reply) {
  if (action == ReplyRule::Action::kSuspend) {
    DeferQueue(pool, ToReply(Make(Reason::kSuspended, reply)));
  } else if (action == ReplyRule::Action::kBounce) {
    DeferQueue(pool, ToReply(Make(Reason::kBouncedByRule, reply)));
  }
}

void Pools::Lost(Link& link, std::string_view why) {
  if (!link.session.closed()) {
    link.lost = true;
  }
  link.session.OnConnectionLost(why);
}

std::optional<Pools::Item> Pools::TakeFor(Pool& pool, const Link& link) {
  const Destination& d = *pool.destination;
  for (auto it = pool.queue.begin(); it != pool.queue.end(); ++it) {
    if (d.route == Route::kMx) {
      Fresh(pool, *it);
      if (link.generation != pool.generation ||
          !it->hops.Allows(link.endpoint_index, link.host(), d.hosts_per_attempt_max)) {
        continue;  // Its host failed for this task, or one host too many.
      }
    }
    Item item = std::move(*it);
    pool.queue.erase(it);
    return item;
  }
  return std::nullopt;
}

void Pools::Dispatch(Pool& pool) {
  if (stopping_) {
    DeferQueue(pool, StoppingReply());
    return;
  }
  Refresh(pool);
  const Destination& d = *pool.destination;
  if (d.endpoints.empty()) {
    DeferQueue(pool, NoNextHop(pool));  // Nothing resolved to connect to (yet).
    return;
  }
  const uint32_t per_connection = MessagesPerConnection(pool);
  // Links over the destination's connections now (adaptive shaping lowered it) take nothing:
  // Process has the idle ones say QUIT.
  auto active =
      static_cast<uint32_t>(std::count_if(pool.links.begin(), pool.links.end(), [](const auto& l) {
        return !l->closing && !l->quitting;
      }));
  const uint32_t allowed = ConnectionsAllowed(pool);
  // Idle links first: each takes one task now.
  for (auto& link : pool.links) {
    if (pool.queue.empty()) {
      return;
    }
    const bool idle = link->open() && !link->quitting && !link->task && link->session.ready();
    if (idle && active > allowed) {
      --active;
      MarkDirty(*link);
      continue;
    }
    if (idle && link->session.transactions() < per_connection) {
      if (std::optional<Item> item = TakeFor(pool, *link)) {
        link->task = std::move(item);
        link->task_begun = false;
        MarkDirty(*link);  // Process begins it.
      }
    }
  }
  if (d.route != Route::kMx && pool.hops.all_down()) {
    // Every next hop failed while a ready link remained: no new link to a next hop known
    // down (a refused connect would be retried in a loop); the ready links take the queue,
    // and once none is left it waits for the retry schedule.
    const bool ready = std::any_of(pool.links.begin(), pool.links.end(),
                                   [](const auto& l) { return l->ever_ready; });
    if (!ready) {
      pool.hops.Reset();
      DeferQueue(pool, NoNextHop(pool));
    }
    return;
  }
  // A new link only for a task no idle link could take; the task is reserved for it. What is
  // left waits for the first link that finishes its message.
  while (!pool.queue.empty() && pool.links.size() < ConnectionsAllowed(pool)) {
    Item item = std::move(pool.queue.front());
    pool.queue.pop_front();
    if (Open(pool, std::move(item)) == Opened::kWait) {
      return;
    }
  }
}

Pools::Opened Pools::Open(Pool& pool, Item item) {
  const Destination& d = *pool.destination;
  const bool mx = d.route == Route::kMx;
  uint32_t index = 0;
  std::optional<uint32_t> source;
  for (;;) {
    if (mx) {
      Fresh(pool, item);
      const std::optional<uint32_t> pick =
          item.hops.Pick(pool.hosts, pool.hops, d.hosts_per_attempt_max);
      if (!pick) {
        Exhausted(pool, std::move(item));
        return Opened::kOpened;
      }
      index = *pick;
    } else {
      index = pool.hops.Pick();
    }
    if (sources_ == nullptr || source_options_ == nullptr || d.source_pool < 0 ||
        d.endpoints[index].address.ss_family == AF_UNIX) {
      break;  // No source binding (an lmtp socket has no source address).
    }
    Sources::Refusal why = Sources::Refusal::kConnections;
    const std::optional<Sources::Choice> choice =
        sources_->Pick(d.source_pool, d.id, d.endpoints[index].address.ss_family, &why);
    if (choice) {
      source = choice->source;
      break;
    }
    if (why == Sources::Refusal::kConnections) {
      // Every source is at its connection limit for the destination: a link of it closing
      // dispatches the queue again (Free).
      ++counters_.source_waits;
      Requeue(pool, std::move(item));
      pool.pending = false;
      std::erase(pending_pools_, &pool);
      return Opened::kWait;
    }
    if (why == Sources::Refusal::kWarmup) {
      Requeue(pool, std::move(item));
      DeferQueue(pool, ToReply(Make(Reason::kWarmupCap, d.endpoints.front().host)));
      return Opened::kWait;
    }
    // kFamily: no source of this endpoint's family; the next endpoint.
    const std::string why_text =
        StrCat("no source address of the family of ", d.endpoints[index].name);
    if (mx) {
      item.hops.AddressFailed(index, pool.hosts[index]);
      item.last.reset();
      pool.last_error = why_text;
      continue;
    }
    pool.last_error = why_text;
    const bool ready = std::any_of(pool.links.begin(), pool.links.end(),
                                   [](const auto& l) { return l->ever_ready; });
    if (pool.hops.Failed(index, ready) || pool.hops.all_down()) {
      Requeue(pool, std::move(item));
      if (!ready) {
        DeferQueue(pool, NoNextHop(pool));
      }
      return Opened::kWait;
    }
  }
  if (mx) {
    item.hops.Tried(pool.hosts[index]);
  }
  smtp::ClientOptions o;
  o.helo_name = options_.helo_name;
  if (source && !source_options_->sources[*source].ehlo.empty()) {
    o.helo_name = source_options_->sources[*source].ehlo;
  }
  o.peer_name = d.endpoints[index].name;
  o.lmtp = d.lmtp;
  o.reply_timeout_ms = options_.reply_timeout_ms;
  o.data_init_timeout_ms = options_.data_init_timeout_ms;
  o.data_end_timeout_ms = options_.data_end_timeout_ms;
  o.seven_bit.nesting_max = options_.mime_nesting_max;
  const DestinationTls& t = d.tls;
  const std::string& hop = d.endpoints[index].hop;
  switch (t.policy) {
    case config::RouteTls::kNone:
      o.starttls = smtp::StartTls::kNo;
      break;
    case config::RouteTls::kMay:
      if (PlaintextFor(hop)) {
        o.starttls = smtp::StartTls::kNo;  // Its handshake failed a short while ago.
        ++counters_.tls_plaintext_fallbacks;
      } else {
        o.starttls = smtp::StartTls::kIfOffered;
      }
      break;
    case config::RouteTls::kEncrypt:
    case config::RouteTls::kVerify:
      o.starttls = smtp::StartTls::kRequired;
      // RFC 4954 14: credentials only over TLS (the config allows AUTH with these only).
      o.auth_user = t.auth_user;
      o.auth_password = t.auth_password;
      break;
  }
  pool.links.push_back(std::make_unique<Link>(this, &pool, index, std::move(o)));
  Link& link = *pool.links.back();
  link.task = std::move(item);
  link.task_begun = false;
  link.source = source;
  ++connections_;
  ++counters_.connections_opened;
  if (control_ != nullptr && d.id != 0) {
    control_->ConnectionCount(d.id, true);
  }
  if (source) {
    sources_->Opened(*source, d.id);
  }
  const int family = link.endpoint.address.ss_family;
  const io::Socket socket = net_.NewStreamSocket(family);
  if (!socket.valid()) {
    link.connect_failed = true;
    Lost(link, StrCat("socket: ", std::strerror(-socket.value())));
    MarkDirty(link);
    return Opened::kOpened;
  }
  if (source && (source_options_->sources[*source].address.family == AF_INET ||
                 source_options_->sources[*source].address.family == AF_INET6)) {
    // (A source without an address gives only its EHLO name.)
    const mail::IpAddress& a = source_options_->sources[*source].address;
    sockaddr_storage local{};
    socklen_t length = 0;
    if (a.family == AF_INET) {
      auto* in = reinterpret_cast<sockaddr_in*>(&local);
      in->sin_family = AF_INET;
      std::memcpy(&in->sin_addr, a.bytes.data(), 4);
      length = sizeof(sockaddr_in);
    } else {
      auto* in6 = reinterpret_cast<sockaddr_in6*>(&local);
      in6->sin6_family = AF_INET6;
      std::memcpy(&in6->sin6_addr, a.bytes.data(), 16);
      length = sizeof(sockaddr_in6);
    }
    const int32_t bound = net_.Bind(socket, reinterpret_cast<const sockaddr*>(&local), length);
    if (bound != 0) {
      net_.CloseUnused(socket);
      link.connect_failed = true;
      Lost(link, StrCat("bind ", a.ToString(), ": ", std::strerror(-bound)));
      MarkDirty(link);
      return Opened::kOpened;
    }
  }
  if (options_.tcp_no_delay && family != AF_UNIX && !socket.registered()) {
    const int one = 1;  // Commands and replies are small and latency-bound.
    setsockopt(socket.value(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  }
  link.pump.emplace(net_, socket, link, link, &timers_);
  link.connecting = true;
  link.pump->Connect(reinterpret_cast<const sockaddr*>(&link.endpoint.address),
                     link.endpoint.length);
  link.pump->SetDeadline(clock_.MonotonicMs() + options_.connect_timeout_ms);
  return Opened::kOpened;
}

// ---- Timeouts ----

void Pools::OnTimeout(Link& link) {
  if (link.handshaking || link.tls_pending) {
    // The handshake's own deadline: a next hop that hangs in it must not hold the queue.
    ++counters_.tls_handshakes_timed_out;
    TlsFailed(link,
              StrCat("TLS handshake timed out after ", options_.tls_handshake_timeout_ms, " ms"));
  } else if (link.connecting) {
    link.connect_failed = true;
    Lost(link, "connect timed out");  // The close cancels the connect.
  } else if (link.pump->sending()) {
    Lost(link, StrCat("next hop took no data for ", options_.data_block_timeout_ms, " ms"));
  } else if (link.session.TimeoutMs() != 0) {
    Lost(link, StrCat("no reply within ", link.session.TimeoutMs(), " ms"));
  } else {
    link.session.Quit();  // Idle for idle_timeout_ms.
    link.quitting = true;
  }
  MarkDirty(link);
}

// ---- The state of one link ----

void Pools::Process(Link& link) {
  Pool& pool = *link.pool;
  if (link.closing || (link.pump && link.pump->closing())) {
    return;  // The pump finishes the close; OnPumpClosed frees the link.
  }
  if (stopping_ && link.task && !link.task_begun) {
    // Reserved for this link, never started: deferred like the queue.
    Item item = std::move(*link.task);
    link.task.reset();
    std::vector<smtp::RecipientReply> results(item.task.message.recipients.size(), StoppingReply());
    Finish(item, std::move(results), "");
  }
  if (link.connecting && !link.session.closed()) {
    return;
  }
  if (link.pump) {
    StepTls(link);
  }
  if (link.pump && link.pump->peer_gone()) {
    Lost(link, LostReason(*link.pump));  // Nothing if already closed.
  }
  if (link.task && link.task_begun && link.session.transaction_done()) {
    if (link.pump && link.pump->sending()) {
      // A send in flight may still read the message (large content goes out from the
      // caller's memory), and the caller frees it with the results: they wait for the send
      // to complete (a reply can overtake its completion), or for the pump's close (Closed)
      // when the close cancels it.
    } else if (!link.session.closed() && link.session.HasOutput()) {
      // Answered while output is still queued that may point into the message: the results
      // go (they free it) and the link ends at once, so that nothing more is sent from it.
      HandOut(link);
      BeginClose(link);
      return;
    } else {
      HandOut(link);
    }
  }
  if (link.session.closed()) {
    const Destination& d = *pool.destination;
    const bool mx = d.route == Route::kMx;
    const bool current = link.generation == pool.generation;  // Its endpoint still means it.
    ReplyRule::Action action = ReplyRule::Action::kBackoff;
    if (!link.close_fed) {
      link.close_fed = true;
      if (!link.lost) {
        // The next hop's own reply closed it (a 421 greeting or reply, a refused EHLO...).
        action = Feed(link, link.session.error_code(), link.session.error_enhanced(),
                      link.session.error());
      }
    }
    std::optional<Item> unstarted;
    if (link.task && !link.task_begun) {
      // The link opened for this task failed before it could start it: the task goes back to
      // the front of the queue (below: deferred if every next hop failed; mx: failed over).
      unstarted = std::move(*link.task);
      link.task.reset();
    }
    const config::RouteTls policy = pool.destination->tls.policy;
    const bool required =
        policy == config::RouteTls::kEncrypt || policy == config::RouteTls::kVerify;
    if (!link.ever_ready && required && !link.tls && link.session.error_enhanced() == "4.7.10") {
      // The session's typed verdict: EHLO answered without STARTTLS, or STARTTLS refused.
      // Never in the clear.
      ++counters_.tls_not_offered;
      pool.last_tls_failure =
          Make(Reason::kTlsNotOffered,
               StrCat(link.endpoint.hop,
                      link.session.extensions().starttls ? " refused" : " offers no", " STARTTLS"));
    } else if (!link.ever_ready && link.tls_failed && required) {
      pool.last_tls_failure =
          Make(Reason::kTlsFailed, StrCat("with ", link.endpoint.hop, ": ", link.tls_error));
    } else if (!link.ever_ready) {
      pool.last_tls_failure.reset();
    }
    const bool may_fallback =
        !link.ever_ready && link.tls_failed && policy == config::RouteTls::kMay;
    if (unstarted && mx && action == ReplyRule::Action::kBackoff && !may_fallback) {
      // mx: this task goes to the host's next address (the connect failed) or the next host.
      Fresh(pool, *unstarted);
      if (current) {
        const bool at_connect =
            link.connect_failed || (link.pump && link.pump->end() == net::PumpEnd::kConnectFailed);
        if (at_connect) {
          unstarted->hops.AddressFailed(link.endpoint_index, link.host());
        } else {
          unstarted->hops.HostFailed(link.host());
        }
      }
      const uint16_t code = link.session.error_code();
      if (pool.last_tls_failure && !link.ever_ready) {
        unstarted->last = ToReply(*pool.last_tls_failure);
      } else if (!link.lost && code >= 400 && code < 500) {
        smtp::RecipientReply r;
        r.status = smtp::RecipientStatus::kDeferred;
        r.reply = link.session.error();
        r.code = code;
        r.enhanced = link.session.error_enhanced();
        unstarted->last = std::move(r);
      } else {
        pool.last_error = link.session.error();
        unstarted->last = NoNextHop(pool);
      }
      unstarted->last_results.clear();
      unstarted->last_hop = link.endpoint.name;
      ++counters_.tasks_failed_over;
      Requeue(pool, std::move(*unstarted));  // Open fails it over, or gives its results.
      unstarted.reset();
    } else if (unstarted) {
      Requeue(pool, std::move(*unstarted));
    }
    // A rule's verdict on the reply goes first: the queue (this task with it) is deferred or
    // bounced as the rule says, not as a failed next hop.
    Act(pool, action, link.session.error());
    if (may_fallback) {
      // Remembered (TlsFailed): the task goes at once to a fresh plaintext connection to the
      // same next hop, which is not counted as down.
    } else if (!link.ever_ready) {
      ++counters_.connect_failures;
      log::Emit(log::Level::kWarning, static_cast<int>(options_.shard), "next_hop_failed",
                {{"route", RouteName(pool.destination->route)},
                 {"next_hop", link.endpoint.name},
                 {"error", link.session.error()}});
      pool.last_error = link.session.error();
      const bool others_ready = std::any_of(pool.links.begin(), pool.links.end(),
                                            [](const auto& l) { return l->ever_ready; });
      if (current && pool.hops.Failed(link.endpoint_index, others_ready) && !mx) {
        // Every next hop failed: the queue waits for the retry schedule. (mx: each task
        // fails over on its own; the down marks only steer new links.)
        DeferQueue(pool, NoNextHop(pool));
      }
    }
    BeginClose(link);
    if (!pool.queue.empty()) {
      MarkPending(pool);
    }
    return;
  }
  if (link.session.ready()) {
    if (!link.ever_ready) {
      link.ever_ready = true;
      // New links go where this one went: the first next hop that works.
      if (link.generation == pool.generation) {
        pool.hops.Worked(link.endpoint_index);
      }
    }
    const uint32_t per_connection = MessagesPerConnection(pool);
    // Over the destination's connections now (adaptive shaping lowered it): QUIT rather than
    // take the next task.
    const auto active = static_cast<uint32_t>(
        std::count_if(pool.links.begin(), pool.links.end(),
                      [](const auto& l) { return !l->closing && !l->quitting; }));
    const bool over = active > ConnectionsAllowed(pool);
    if (!link.task && !link.quitting && !stopping_ && !over &&
        link.session.transactions() < per_connection) {
      if (std::optional<Item> item = TakeFor(pool, link)) {
        link.task = std::move(item);
        link.task_begun = false;
      }
    }
    if (link.task && !link.task_begun) {
      link.task_begun = true;
      link.last_fed.clear();  // Each transaction's replies are fed.
      link.session.Begin(link.task->task.message);
      counters_.converted_7bit += link.session.converted_7bit() ? 1 : 0;
      counters_.not_convertible += link.session.not_convertible() ? 1 : 0;
      counters_.smtputf8_not_needed += link.session.smtputf8_dropped() ? 1 : 0;
      if (link.session.transaction_done()) {
        MarkDirty(link);  // Refused before sending (size, 8BITMIME...): results next pass.
      }
    } else if (!link.task && !link.quitting &&
               (stopping_ || options_.idle_timeout_ms == 0 || over ||
                link.session.transactions() >= per_connection ||
                (!pool.queue.empty() && pool.links.size() >= ConnectionsAllowed(pool)))) {
      // (The last: at the cap, and what is queued may not go to this link's host; its
      // place goes to a link for them.)
      link.session.Quit();
      link.quitting = true;
    }
  }
  // Sends what the session has, keeps a receive armed, and closes once QUIT is out.
  link.pump->Drive();
  if (link.pump->closing()) {
    return;
  }
  // One deadline per link, for whatever it waits on now.
  const uint64_t now = clock_.MonotonicMs();
  if (link.handshaking || link.tls_pending) {
    link.pump->SetDeadline(link.handshake_deadline_ms);  // Fixed: progress does not move it.
  } else if (link.pump->sending()) {
    link.pump->SetDeadline(now + options_.data_block_timeout_ms);
  } else if (link.session.TimeoutMs() != 0) {
    link.pump->SetDeadline(now + link.session.TimeoutMs());
  } else {
    link.pump->SetDeadline(now + options_.idle_timeout_ms);
  }
}

// ---- TLS ----

void Pools::StepTls(Link& link) {
  if (link.session.TakeStartTls()) {
    // RFC 3207 4: the 220 to STARTTLS came; the next bytes either way are the handshake's.
    link.tls_pending = true;
    link.handshake_deadline_ms = clock_.MonotonicMs() + options_.tls_handshake_timeout_ms;
  }
  if (link.session.closed()) {
    if (link.tls_pending || link.handshaking) {
      // The next hop went away after its 220 (or mid-handshake): a TLS failure, as a reset in
      // the handshake is (Postfix counts it so too); "may" falls back.
      ++counters_.tls_handshakes_failed;
      TlsFailed(link, "the connection ended during the TLS handshake");
    }
    return;
  }
  if (link.tls_pending && !link.pump->sending()) {
    link.tls_pending = false;
    const DestinationTls& t = link.pool->destination->tls;
    RELAIS_CHECK(t.context < contexts_.size() && contexts_[t.context] != nullptr)
        << "a TLS destination without its client context (Pools::UseTls)";
    const tls::VerifyMode mode =
        t.policy == config::RouteTls::kVerify ? tls::VerifyMode::kVerify : tls::VerifyMode::kNone;
    // The name as the route writes it, never the address: SNI, and what verify checks.
    link.tls = tls::TlsTransport::Client(*contexts_[t.context], link.endpoint.host, mode,
                                         link.endpoint.hop);
    link.pump->SetTransport(*link.tls);
    link.handshaking = true;
  }
  if (!link.handshaking) {
    if (link.tls && link.tls->state() == tls::TlsState::kFailed) {
      // A record failed after the handshake (a bad tag, a fatal alert): the transport closes
      // the connection. A lost connection, not a failed handshake: "may" does not fall back,
      // and what was not final is deferred.
      Lost(link, StrCat("TLS failed: ", link.tls->failure()));
    }
    return;
  }
  if (link.tls->TakeHandshakeDone()) {
    link.handshaking = false;
    ++counters_.tls_handshakes_ok;
    counters_.tls_resumed += link.tls->info().resumed ? 1 : 0;
    link.session.TlsStarted();  // A fresh EHLO follows (RFC 3207 4.2).
    return;
  }
  if (link.tls->state() == tls::TlsState::kFailed) {
    ++counters_.tls_handshakes_failed;
    TlsFailed(link, link.tls->failure());
  } else if (link.pump->peer_gone() || link.pump->input_ended()) {
    ++counters_.tls_handshakes_failed;
    TlsFailed(link, "the next hop closed the connection");
  }
}

void Pools::TlsFailed(Link& link, std::string_view why) {
  link.handshaking = false;
  link.tls_pending = false;
  link.tls_failed = true;
  link.tls_error = why;
  const DestinationTls& t = link.pool->destination->tls;
  if (t.policy == config::RouteTls::kMay) {
    RememberPlaintext(link.endpoint.hop);
  }
  log::Emit(log::Level::kWarning, static_cast<int>(options_.shard), "tls_handshake_failed",
            {{"route", RouteName(link.pool->destination->route)},
             {"next_hop", link.endpoint.hop},
             {"address", link.endpoint.name},
             {"error", why},
             {"then", t.policy == config::RouteTls::kMay ? "plaintext" : "next hop or defer"}});
  Lost(link, StrCat("TLS handshake failed: ", why));
}

bool Pools::PlaintextFor(const std::string& hop) {
  auto it = plaintext_until_.find(hop);
  if (it == plaintext_until_.end()) {
    return false;
  }
  if (it->second <= clock_.MonotonicMs()) {
    plaintext_until_.erase(it);  // Its time is over: TLS is tried again.
    return false;
  }
  return true;
}

void Pools::RememberPlaintext(const std::string& hop) {
  if (options_.tls_fallback_max == 0) {
    return;
  }
  const uint64_t now = clock_.MonotonicMs();
  if (!plaintext_until_.contains(hop) && plaintext_until_.size() >= options_.tls_fallback_max) {
    // Full: expired entries go, else the one that ends first (bounded, counted).
    std::erase_if(plaintext_until_, [now](const auto& e) { return e.second <= now; });
    if (plaintext_until_.size() >= options_.tls_fallback_max) {
      auto first =
          std::min_element(plaintext_until_.begin(), plaintext_until_.end(),
                           [](const auto& a, const auto& b) { return a.second < b.second; });
      plaintext_until_.erase(first);
      ++counters_.tls_fallbacks_forgotten;
    }
  }
  plaintext_until_[hop] = now + options_.tls_fallback_ttl_ms;
}

void Pools::HandOut(Link& link) {
  Pool& pool = *link.pool;
  std::vector<smtp::RecipientReply> results = link.session.TakeResults();
  Item item = std::move(*link.task);
  link.task.reset();
  link.task_begun = false;
  if (link.session.transaction_untouched()) {
    // The connection was stale before anything of this message was answered: another link
    // sends it, at no risk of a duplicate.
    ++counters_.tasks_retried;
    Requeue(pool, std::move(item));
    return;
  }
  ++counters_.transactions;
  // The next hop's replies to the shaping: each distinct one (a refused MAIL is every
  // recipient's), never the session's verdict on a connection our side saw lost.
  ReplyRule::Action action = ReplyRule::Action::kBackoff;
  std::string acted_on;
  bool delivered = false;
  bool all_deferred = !results.empty();
  for (const smtp::RecipientReply& r : results) {
    delivered |= r.status == smtp::RecipientStatus::kDelivered;
    all_deferred &= r.status == smtp::RecipientStatus::kDeferred;
    if (r.code >= 400 && !(link.lost && r.enhanced == "4.4.2")) {
      const ReplyRule::Action a = Feed(link, r.code, r.enhanced, r.reply);
      if (a != ReplyRule::Action::kBackoff && action == ReplyRule::Action::kBackoff) {
        action = a;
        acted_on = r.reply;
      }
    }
  }
  const DestinationId id = pool.destination->id;
  if (delivered) {
    if (control_ != nullptr && id != 0) {
      control_->OnDelivered(id);
    }
    if (link.source) {
      sources_->Sent(*link.source, id);
    }
  }
  const Destination& d = *pool.destination;
  if (d.route == Route::kMx && all_deferred && action == ReplyRule::Action::kBackoff &&
      link.generation == pool.generation && !stopping_) {
    // A temporary reply to the whole transaction (MAIL, the end of the data, every RCPT):
    // the next host may take it, within hosts_per_attempt_max.
    Fresh(pool, item);
    item.hops.HostFailed(link.host());
    if (item.hops.Pick(pool.hosts, pool.hops, d.hosts_per_attempt_max)) {
      item.last_results = std::move(results);
      item.last.reset();
      item.last_hop = link.endpoint.name;
      ++counters_.tasks_failed_over;
      Requeue(pool, std::move(item));
      return;
    }
  }
  Finish(item, std::move(results), link.endpoint.name);
  Act(pool, action, acted_on);
}

void Pools::Closed(Link& link) {
  if (link.task && !link.session.closed()) {
    // Closed under the session (the transport gave up): the session hears it, so that what
    // was not final is deferred. A peer's bytes never make a task vanish or abort the shard.
    Lost(link, link.tls && link.tls->state() == tls::TlsState::kFailed
                   ? StrCat("TLS failed: ", link.tls->failure())
                   : std::string("the connection closed"));
  }
  if (link.task && link.task_begun && link.session.transaction_done()) {
    HandOut(link);  // Held back while a send was in flight (Process).
  } else if (link.task) {
    // Never started on this link: back to the front of the queue.
    Item item = std::move(*link.task);
    link.task.reset();
    Requeue(*link.pool, std::move(item));
  }
  Free(link);
}

void Pools::BeginClose(Link& link) {
  link.closing = true;
  if (!link.pump) {
    Free(link);  // No socket was had: nothing is in flight.
    return;
  }
  // Cancels what is in flight (a send to a next hop that stalls included); OnPumpClosed
  // frees the link once every completion has run.
  link.pump->Abort();
}

void Pools::Free(Link& link) {
  Pool& pool = *link.pool;
  RELAIS_CHECK(!link.task) << "a link with a task was freed";
  if (link.dirty) {
    dirty_.erase(std::find(dirty_.begin(), dirty_.end(), &link));
  }
  auto it = std::find_if(pool.links.begin(), pool.links.end(),
                         [&](const auto& l) { return l.get() == &link; });
  RELAIS_CHECK(it != pool.links.end());
  if (link.ever_ready && link.session.transactions() == 0) {
    ++counters_.connections_unused;
  }
  const DestinationId id = pool.destination->id;
  if (control_ != nullptr && id != 0) {
    control_->ConnectionCount(id, false);
  }
  if (link.source) {
    sources_->Closed(*link.source, id);
  }
  pool.links.erase(it);
  --connections_;
  if (!pool.queue.empty()) {
    MarkPending(pool);
  }
}

void Pools::Stop() {
  stopping_ = true;
  for (auto& [destination, pool] : pools_) {
    DeferQueue(*pool, StoppingReply());
    for (auto& link : pool->links) {
      MarkDirty(*link);  // Idle ones say QUIT; busy ones finish their message first.
    }
  }
}

bool Pools::idle() const {
  if (connections_ != 0) {
    return false;
  }
  return std::all_of(pools_.begin(), pools_.end(),
                     [](const auto& p) { return p.second->queue.empty(); });
}

void PoolsOutbound::Submit(const Destination& destination, uint64_t task_id,
                           smtp::OutgoingMessage message) {
  pools_.Submit(destination, PoolTask{task_id, std::move(message)});
}

}  // namespace relais::delivery
