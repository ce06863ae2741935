// tools/relaisd/egress.cc — see egress.h.
#include "tools/relaisd/egress.h"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "core/base/check.h"
#include "core/base/strings.h"
#include "core/log/log.h"
#include "queue/delivery/next_hops.h"
#include "queue/delivery/outbound.h"
#include "core/net/net_address.h"

namespace relais::relaisd {
// The addresses' helpers moved to core/net; this file's own reshape qualifies its calls.
using net::SocketAddressText, net::SplitHostPort;

using base::StrCat;

namespace {
smtp::RecipientReply StoppingReply() {
  return delivery::ToReply(delivery::Make(delivery::Reason::kStopping));
}
}  // namespace

absl::StatusOr<std::vector<std::optional<Destination>>> ResolveDestinations(
    const std::vector<config::Route>& routes) {
  std::vector<std::optional<Destination>> out(routes.size());
  for (size_t i = 0; i < routes.size(); ++i) {
    const config::Route& route = routes[i];
    std::vector<std::string> hops;
    if (route.type == config::RouteType::kSmarthost) {
      hops = route.hosts;
    } else if (route.type == config::RouteType::kLmtp) {
      hops = {route.address};
    } else {
      continue;
    }
    Destination d;
    d.lmtp = route.type == config::RouteType::kLmtp;
    d.route = d.lmtp ? delivery::Route::kLmtp : delivery::Route::kSmarthost;
    for (const std::string& hop : hops) {
      const std::string where = StrCat("route for ", route.domain, ": next hop ", hop);
      if (d.lmtp && hop.starts_with('/')) {
        Endpoint e;
        auto* un = reinterpret_cast<sockaddr_un*>(&e.address);
        if (hop.size() >= sizeof(un->sun_path)) {
          return absl::InvalidArgumentError(StrCat(where, ": socket path too long"));
        }
        un->sun_family = AF_UNIX;
        std::memcpy(un->sun_path, hop.data(), hop.size());
        e.length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + hop.size() + 1);
        e.name = hop;
        d.endpoints.push_back(std::move(e));
        continue;
      }
      std::string host, port;
      if (!SplitHostPort(hop, host, port)) {
        return absl::InvalidArgumentError(
            StrCat(where, ": expected host:port, [v6]:port", d.lmtp ? " or a socket path" : ""));
      }
      addrinfo hints{};
      hints.ai_family = AF_UNSPEC;
      hints.ai_socktype = SOCK_STREAM;
      hints.ai_flags = AI_NUMERICSERV;
      addrinfo* result = nullptr;
      const int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &result);
      if (rc != 0 || result == nullptr) {
        return absl::InvalidArgumentError(StrCat(where, ": cannot resolve: ", gai_strerror(rc)));
      }
      for (addrinfo* a = result; a != nullptr; a = a->ai_next) {
        Endpoint e;
        std::memcpy(&e.address, a->ai_addr, a->ai_addrlen);
        e.length = a->ai_addrlen;
        e.name = SocketAddressText(e.address);
        d.endpoints.push_back(std::move(e));
      }
      freeaddrinfo(result);
    }
    out[i] = std::move(d);
  }
  return out;
}

// ---- Pools and links ----

struct Egress::Pool {
  const Destination* destination = nullptr;
  std::deque<EgressTask> queue;
  std::vector<std::unique_ptr<Link>> links;
  // Which next hop new connections go to, and when all have failed (queue/delivery).
  delivery::NextHops hops{0};
  bool pending = false;  // On pending_pools_.
};

// One outbound connection. Freed only once no operation names it.
struct Egress::Link final : timer::Timer {
  template <void (Egress::*Handler)(Link&, int32_t, uint32_t)>
  struct Op final : uring::Completion {
    explicit Op(Link* l) : link(l) {}
    void OnCqe(int32_t result, uint32_t flags) override {
      (link->egress->*Handler)(*link, result, flags);
    }
    Link* link;
  };

  Link(Egress* e, Pool* p, uint32_t endpoint_index, smtp::ClientOptions options)
      : egress(e),
        pool(p),
        endpoint(p->destination->endpoints[endpoint_index]),
        session(std::move(options)) {}

  void OnTimer() override { egress->OnTimer(*this); }

  Egress* egress;
  Pool* pool;
  const Endpoint& endpoint;
  smtp::ClientSession session;
  int fd = -1;
  Op<&Egress::OnConnect> connect_op{this};
  Op<&Egress::OnRecv> recv_op{this};
  Op<&Egress::OnSend> send_op{this};
  Op<&Egress::OnClosed> close_op{this};
  // The message this link carries or was opened for. A link is opened only for a task no idle
  // link could take, and that task waits for it (task_begun false until the session is
  // ready), so every connection carries at least one message: a link that finishes first
  // takes the next queued task instead, never the one a new connection was opened for.
  std::optional<EgressTask> task;
  bool task_begun = false;
  bool connecting = false;
  bool recv_armed = false;
  bool send_in_flight = false;
  bool ever_ready = false;
  bool quitting = false;  // QUIT queued: close once it is sent.
  bool closing = false;
  bool close_submitted = false;
  bool dirty = false;
};

Egress::Egress(uring::Engine& engine, timer::TimerWheel& timers, const base::Clock& clock,
               EgressOptions options, EgressListener& listener)
    : engine_(engine),
      timers_(timers),
      clock_(clock),
      options_(std::move(options)),
      listener_(listener) {}

Egress::~Egress() {
  // Normally empty after a graceful stop; after a forced one the shard no longer runs its
  // engine, so no completion can name a link any more.
  for (auto& [destination, pool] : pools_) {
    for (auto& link : pool->links) {
      if (link->fd >= 0 && !link->close_submitted) {
        ::close(link->fd);
      }
    }
  }
}

void Egress::Submit(const Destination& destination, EgressTask task) {
  std::unique_ptr<Pool>& pool = pools_[&destination];
  if (pool == nullptr) {
    pool = std::make_unique<Pool>();
    pool->destination = &destination;
    pool->hops = delivery::NextHops(static_cast<uint32_t>(destination.endpoints.size()));
  }
  pool->queue.push_back(std::move(task));
  if (!pool->pending) {
    pool->pending = true;
    pending_pools_.push_back(pool.get());
  }
}

void Egress::Pump() {
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

void Egress::MarkDirty(Link& link) {
  if (!link.dirty) {
    link.dirty = true;
    dirty_.push_back(&link);
  }
}

void Egress::Requeue(Pool& pool, EgressTask task) {
  pool.queue.push_front(std::move(task));
  if (!pool.pending) {
    pool.pending = true;
    pending_pools_.push_back(&pool);
  }
}

void Egress::DeferQueue(Pool& pool, const smtp::RecipientReply& reason) {
  while (!pool.queue.empty()) {
    EgressTask task = std::move(pool.queue.front());
    pool.queue.pop_front();
    std::vector<smtp::RecipientReply> results(task.message.recipients.size(), reason);
    listener_.OnEgressDone(task.id, std::move(results), "");
  }
}

void Egress::Dispatch(Pool& pool) {
  if (stopping_) {
    DeferQueue(pool, StoppingReply());
    return;
  }
  // Idle connections first: each takes one task now.
  for (auto& link : pool.links) {
    if (pool.queue.empty()) {
      return;
    }
    if (!link->closing && !link->quitting && !link->task && link->session.ready() &&
        link->session.transactions() < options_.messages_per_connection_max) {
      link->task = std::move(pool.queue.front());
      link->task_begun = false;
      pool.queue.pop_front();
      MarkDirty(*link);  // Process begins it.
    }
  }
  // A new connection only for a task no idle connection could take; the task is reserved for
  // it. What is left waits for the first connection that finishes its message.
  while (!pool.queue.empty() && pool.links.size() < options_.connections_max) {
    EgressTask task = std::move(pool.queue.front());
    pool.queue.pop_front();
    Open(pool, std::move(task));
  }
}

void Egress::Open(Pool& pool, EgressTask task) {
  const Destination& d = *pool.destination;
  const uint32_t index = pool.hops.Pick();
  smtp::ClientOptions o;
  o.helo_name = options_.helo_name;
  o.peer_name = d.endpoints[index].name;
  o.lmtp = d.lmtp;
  o.reply_timeout_ms = options_.reply_timeout_ms;
  o.data_init_timeout_ms = options_.data_init_timeout_ms;
  o.data_end_timeout_ms = options_.data_end_timeout_ms;
  o.seven_bit.nesting_max = options_.mime_nesting_max;
  pool.links.push_back(std::make_unique<Link>(this, &pool, index, std::move(o)));
  Link& link = *pool.links.back();
  link.task = std::move(task);
  link.task_begun = false;
  ++connections_;
  ++counters_.connections_opened;
  const int family = link.endpoint.address.ss_family;
  link.fd = ::socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (link.fd < 0) {
    link.session.OnConnectionLost(StrCat("socket: ", std::strerror(errno)));
    MarkDirty(link);
    return;
  }
  if (family != AF_UNIX) {
    const int one = 1;  // Commands and replies are small and latency-bound.
    setsockopt(link.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  }
  link.connecting = true;
  engine_.Connect(link.fd, reinterpret_cast<const sockaddr*>(&link.endpoint.address),
                  link.endpoint.length, link.connect_op);
  timers_.Arm(link, clock_.MonotonicMs() + options_.connect_timeout_ms);
}

// ---- Completions ----

void Egress::OnConnect(Link& link, int32_t result, uint32_t /*flags*/) {
  link.connecting = false;
  if (result < 0 && !link.closing) {
    link.session.OnConnectionLost(
        result == -ECANCELED ? "connect timed out" : StrCat("connect: ", std::strerror(-result)));
  }
  MarkDirty(link);
}

void Egress::OnRecv(Link& link, int32_t result, uint32_t flags) {
  link.recv_armed = false;
  if (result > 0 && uring::Engine::HasBuffer(flags)) {
    const uint16_t buffer = uring::Engine::BufferId(flags);
    link.session.Feed(engine_.Buffer(buffer, static_cast<uint32_t>(result)));
    engine_.ReturnBuffer(buffer);
  } else if (result == 0) {
    link.session.OnConnectionLost("closed by the next hop");
  } else if (result != -ENOBUFS && result != -ECANCELED) {
    link.session.OnConnectionLost(std::strerror(-result));
  }
  MarkDirty(link);
}

void Egress::OnSend(Link& link, int32_t result, uint32_t /*flags*/) {
  link.send_in_flight = false;
  if (result < 0) {
    if (result != -ECANCELED) {
      link.session.OnConnectionLost(StrCat("send: ", std::strerror(-result)));
    }
  } else {
    link.session.ConsumeOutput(static_cast<size_t>(result));
  }
  MarkDirty(link);
}

void Egress::OnClosed(Link& link, int32_t /*result*/, uint32_t /*flags*/) {
  link.fd = -1;
  Free(link);
}

void Egress::OnTimer(Link& link) {
  if (link.connecting) {
    engine_.Cancel(link.connect_op);  // Completes with -ECANCELED: "connect timed out".
    return;
  }
  if (link.send_in_flight) {
    link.session.OnConnectionLost(
        StrCat("next hop took no data for ", options_.data_block_timeout_ms, " ms"));
  } else if (link.session.TimeoutMs() != 0) {
    link.session.OnConnectionLost(StrCat("no reply within ", link.session.TimeoutMs(), " ms"));
  } else {
    link.session.Quit();  // Idle for idle_timeout_ms.
    link.quitting = true;
  }
  MarkDirty(link);
}

// ---- The state of one link ----

void Egress::Process(Link& link) {
  Pool& pool = *link.pool;
  if (link.closing) {
    BeginClose(link);  // Continues a close that waited for operations to end.
    return;
  }
  if (stopping_ && link.task && !link.task_begun) {
    // Reserved for this link, never started: deferred like the queue.
    EgressTask task = std::move(*link.task);
    link.task.reset();
    std::vector<smtp::RecipientReply> results(task.message.recipients.size(), StoppingReply());
    listener_.OnEgressDone(task.id, std::move(results), "");
  }
  if (link.connecting) {
    return;
  }
  if (link.task && link.task_begun && link.session.transaction_done()) {
    std::vector<smtp::RecipientReply> results = link.session.TakeResults();
    EgressTask task = std::move(*link.task);
    link.task.reset();
    link.task_begun = false;
    if (link.session.transaction_untouched()) {
      // The connection was stale before anything of this message was answered: another
      // connection sends it, at no risk of a duplicate.
      ++counters_.tasks_retried;
      Requeue(pool, std::move(task));
    } else {
      ++counters_.transactions;
      listener_.OnEgressDone(task.id, std::move(results), link.endpoint.name);
    }
  }
  if (link.session.closed()) {
    if (link.task && !link.task_begun) {
      // The connection opened for this task failed before it could start it: the task goes
      // back to the front of the queue (and is deferred below if every next hop failed).
      EgressTask task = std::move(*link.task);
      link.task.reset();
      Requeue(pool, std::move(task));
    }
    if (!link.ever_ready) {
      ++counters_.connect_failures;
      const auto index = static_cast<uint32_t>(&link.endpoint - pool.destination->endpoints.data());
      log::Emit(log::Level::kWarning, static_cast<int>(options_.shard), "next_hop_failed",
                {{"route", delivery::RouteName(pool.destination->route)},
                 {"next_hop", link.endpoint.name},
                 {"error", link.session.error()}});
      const bool others_ready = std::any_of(pool.links.begin(), pool.links.end(),
                                            [](const auto& l) { return l->ever_ready; });
      if (pool.hops.Failed(index, others_ready)) {
        // Every next hop failed: the queue waits for the retry schedule.
        DeferQueue(pool, delivery::ToReply(delivery::Make(
                             delivery::Reason::kNoNextHop,
                             StrCat(delivery::RouteName(pool.destination->route),
                                    " route is usable; last: ", link.session.error()))));
      }
    }
    BeginClose(link);
    if (!pool.queue.empty() && !pool.pending) {
      pool.pending = true;
      pending_pools_.push_back(&pool);
    }
    return;
  }
  if (link.session.ready()) {
    if (!link.ever_ready) {
      link.ever_ready = true;
      // New connections go where this one went: the first next hop that works.
      pool.hops.Worked(static_cast<uint32_t>(&link.endpoint - pool.destination->endpoints.data()));
    }
    if (!link.task && !link.quitting && !stopping_ && !pool.queue.empty() &&
        link.session.transactions() < options_.messages_per_connection_max) {
      link.task = std::move(pool.queue.front());
      link.task_begun = false;
      pool.queue.pop_front();
    }
    if (link.task && !link.task_begun) {
      link.task_begun = true;
      link.session.Begin(link.task->message);
      counters_.converted_7bit += link.session.converted_7bit() ? 1 : 0;
      counters_.not_convertible += link.session.not_convertible() ? 1 : 0;
      counters_.smtputf8_not_needed += link.session.smtputf8_dropped() ? 1 : 0;
      if (link.session.transaction_done()) {
        MarkDirty(link);  // Refused before sending (size, 8BITMIME...): results next pass.
      }
    } else if (!link.task && !link.quitting &&
               (stopping_ || options_.idle_timeout_ms == 0 ||
                link.session.transactions() >= options_.messages_per_connection_max)) {
      link.session.Quit();
      link.quitting = true;
    }
  }
  Flush(link);
  if (link.quitting && !link.session.HasOutput() && !link.send_in_flight) {
    BeginClose(link);
    return;
  }
  if (!link.recv_armed) {
    link.recv_armed = true;
    engine_.Recv(link.fd, link.recv_op);
  }
  // One timer per link, for whatever it waits on now.
  const uint64_t now = clock_.MonotonicMs();
  if (link.send_in_flight) {
    timers_.Arm(link, now + options_.data_block_timeout_ms);
  } else if (link.session.TimeoutMs() != 0) {
    timers_.Arm(link, now + link.session.TimeoutMs());
  } else {
    timers_.Arm(link, now + options_.idle_timeout_ms);
  }
}

void Egress::Flush(Link& link) {
  if (link.send_in_flight || !link.session.HasOutput()) {
    return;
  }
  link.send_in_flight = true;
  engine_.Send(link.fd, link.session.PendingOutput(), link.send_op);
}

void Egress::BeginClose(Link& link) {
  if (!link.closing) {
    link.closing = true;
    timers_.Cancel(link);
    if (link.connecting) {
      engine_.Cancel(link.connect_op);
    }
    if (link.recv_armed) {
      engine_.Cancel(link.recv_op);
    }
    if (link.send_in_flight) {
      engine_.Cancel(link.send_op);
    }
  }
  if (link.connecting || link.recv_armed || link.send_in_flight || link.close_submitted) {
    return;  // Each completion marks the link dirty; Process comes back here.
  }
  if (link.fd < 0) {
    Free(link);
    return;
  }
  link.close_submitted = true;
  engine_.Close(link.fd, link.close_op);
}

void Egress::Free(Link& link) {
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
  pool.links.erase(it);
  --connections_;
  if (!pool.queue.empty() && !pool.pending) {
    pool.pending = true;
    pending_pools_.push_back(&pool);
  }
}

void Egress::Stop() {
  stopping_ = true;
  for (auto& [destination, pool] : pools_) {
    DeferQueue(*pool, StoppingReply());
    for (auto& link : pool->links) {
      MarkDirty(*link);  // Idle ones say QUIT; busy ones finish their message first.
    }
  }
}

bool Egress::idle() const {
  if (connections_ != 0) {
    return false;
  }
  return std::all_of(pools_.begin(), pools_.end(),
                     [](const auto& p) { return p.second->queue.empty(); });
}

void EgressOutbound::Submit(int32_t destination, uint64_t task_id, smtp::OutgoingMessage message) {
  RELAIS_CHECK(destination >= 0 && static_cast<size_t>(destination) < destinations_.size());
  const std::optional<Destination>& d = destinations_[static_cast<size_t>(destination)];
  RELAIS_CHECK(d.has_value()) << "a network route without a destination";
  egress_.Submit(*d, EgressTask{task_id, std::move(message)});
}

}  // namespace relais::relaisd
