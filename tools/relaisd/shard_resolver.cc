#include "tools/relaisd/shard_resolver.h"

#include <poll.h>

#include <cerrno>

namespace relais::relaisd {

struct ShardResolver::Poll final : uring::Completion {
  Poll(ShardResolver* o, int socket) : owner(o), fd(socket) {}
  void OnCqe(int32_t result, uint32_t /*flags*/) override {
    armed = false;
    if (!retired) {
      owner->OnPoll(*this, result);
    }
  }
  ShardResolver* owner;
  const int fd;
  uint32_t events = 0;
  bool armed = false;
  bool retired = false;
};

ShardResolver::ShardResolver(uring::Engine& engine) : engine_(engine) {}

absl::StatusOr<std::unique_ptr<ShardResolver>> ShardResolver::Create(
    uring::Engine& engine, const dns::ResolverOptions& options, const base::Clock& clock) {
  std::unique_ptr<ShardResolver> r(new ShardResolver(engine));
  auto resolver = dns::Resolver::Create(options, *r, clock);
  if (!resolver.ok()) {
    return resolver.status();
  }
  r->resolver_ = std::move(*resolver);
  return r;
}

ShardResolver::~ShardResolver() {
  // c-ares closes its sockets (and tells Watch) first; polls still queued die with the ring,
  // which the shard destroys after this, and no loop turn runs in between.
  resolver_.reset();
}

void ShardResolver::Watch(int fd, bool readable, bool writable) {
  const uint32_t events = (readable ? POLLIN : 0) | (writable ? POLLOUT : 0);
  if (events == 0) {
    Retire(fd);
    return;
  }
  auto it = polls_.find(fd);
  if (it != polls_.end() && it->second->events != events && it->second->armed) {
    Retire(fd);  // Its poll waits for the wrong events: a new one replaces it.
    it = polls_.end();
  }
  if (it == polls_.end()) {
    it = polls_.emplace(fd, std::make_unique<Poll>(this, fd)).first;
  }
  it->second->events = events;
  if (!it->second->armed) {
    Arm(*it->second);
  }
}

void ShardResolver::Retire(int fd) {
  const auto it = polls_.find(fd);
  if (it == polls_.end()) {
    return;
  }
  Poll& p = *it->second;
  p.retired = true;
  if (p.armed) {
    engine_.Cancel(p);
  }
  // Kept until Tick(), even when not armed: it may be the one whose completion is running.
  retired_.push_back(std::move(it->second));
  polls_.erase(it);
}

void ShardResolver::Arm(Poll& poll) {
  poll.armed = true;
  engine_.PollOnce(poll.fd, poll.events, poll);
}

void ShardResolver::OnPoll(Poll& poll, int32_t result) {
  const int fd = poll.fd;
  if (result == -ECANCELED) {
    return;
  }
  // An error (a socket c-ares has trouble with) goes to c-ares as readable: its read fails
  // and it handles the failure (next server, or temporary failure).
  if (result < 0 || (static_cast<uint32_t>(result) & (POLLIN | POLLERR | POLLHUP)) != 0) {
    resolver_->OnReadable(fd);
  }
  if (result > 0 && (static_cast<uint32_t>(result) & POLLOUT) != 0) {
    resolver_->OnWritable(fd);
  }
  // c-ares may have stopped watching the socket meanwhile (then `poll` is retired).
  const auto it = polls_.find(fd);
  if (it != polls_.end() && it->second.get() == &poll && !poll.armed) {
    Arm(poll);
  }
}

int64_t ShardResolver::Tick() {
  if (resolver_->in_flight() > 0 && resolver_->TimeoutMs() == 0) {
    resolver_->OnTimer();
  }
  std::erase_if(retired_, [](const std::unique_ptr<Poll>& p) { return !p->armed; });
  return resolver_->in_flight() > 0 ? resolver_->TimeoutMs() : -1;
}

}  // namespace relais::relaisd
