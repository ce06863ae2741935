// protocols/dns/resolver.cc — see resolver.h.
#include "protocols/dns/resolver.h"

#include <ares.h>
#include <sys/time.h>

#include <algorithm>

#include "core/base/strings.h"
#include "protocols/dns/blocking_resolver.h"

namespace relais::dns {

using base::StrCat;

namespace {

std::string KeyOf(const Question& q) {
  std::string name = base::AsciiStrToLower(q.name);
  if (name.ends_with('.')) {
    name.pop_back();
  }
  return StrCat(name, "/", static_cast<uint16_t>(q.type));
}

void OnSocketState(void* data, int fd, int readable, int writable) {
  static_cast<SocketWatcher*>(data)->Watch(fd, readable != 0, writable != 0);
}

}  // namespace

struct Resolver::Query {
  Resolver* resolver;
  std::string key;
  RecordType type;
};

Resolver::Resolver(const ResolverOptions& options, const base::Clock& clock)
    : options_(options), clock_(clock) {}

absl::StatusOr<std::unique_ptr<Resolver>> Resolver::Create(const ResolverOptions& options,
                                                           SocketWatcher& watcher,
                                                           const base::Clock& clock) {
  absl::StatusOr<void*> channel =
      OpenAresChannel(options.servers, options.timeout_ms, options.tries, OnSocketState, &watcher);
  if (!channel.ok()) {
    return channel.status();
  }
  std::unique_ptr<Resolver> resolver(new Resolver(options, clock));
  resolver->channel_ = *channel;
  return resolver;
}

Resolver::~Resolver() {
  // Pending queries end with ARES_EDESTRUCTION; their callbacks are not called.
  ares_destroy(static_cast<ares_channel>(channel_));
}

std::optional<Answer> Resolver::Cached(const Question& question) {
  const auto it = cache_.find(KeyOf(question));
  if (it == cache_.end()) {
    return std::nullopt;
  }
  const uint64_t now = clock_.MonotonicMs();
  if (now >= it->second.expires_ms) {
    lru_.erase(it->second.lru);
    cache_.erase(it);
    return std::nullopt;
  }
  lru_.splice(lru_.begin(), lru_, it->second.lru);
  Answer a = it->second.answer;
  a.ttl_seconds = static_cast<uint32_t>((it->second.expires_ms - now + 999) / 1000);
  return a;
}

std::optional<Answer> Resolver::FromCache(const Question& question) {
  std::optional<Answer> hit = Cached(question);
  if (hit) {
    ++stats_.lookups;
    ++stats_.cache_hits;
  }
  return hit;
}

void Resolver::Resolve(const Question& question, Callback done) {
  ++stats_.lookups;
  if (std::optional<Answer> hit = Cached(question)) {
    ++stats_.cache_hits;
    done(*hit);
    return;
  }
  const std::string key = KeyOf(question);
  auto [it, fresh] = waiting_.try_emplace(key);
  it->second.push_back(std::move(done));
  if (!fresh) {
    ++stats_.joined;
    return;
  }
  ++stats_.queries_sent;
  auto* query = new Query{this, key, question.type};
  ares_query(static_cast<ares_channel>(channel_), question.name.c_str(), 1 /* C_IN */,
             static_cast<int>(question.type), OnReply, query);
}

void Resolver::OnReply(void* arg, int status, int /*timeouts*/, unsigned char* reply, int length) {
  std::unique_ptr<Query> query(static_cast<Query*>(arg));
  if (status == ARES_EDESTRUCTION) {
    return;
  }
  Answer answer;
  if (status == ARES_SUCCESS) {
    answer = ParseReply(query->type, reply, length);
  } else {
    answer.status = StatusOfAresCode(status);
  }
  uint32_t negative = 0;
  if (answer.void_lookup()) {
    negative =
        NegativeTtl(reply, length).value_or(query->resolver->options_.negative_ttl_default_seconds);
  }
  query->resolver->Finish(query->key, std::move(answer), negative);
}

void Resolver::Finish(const std::string& key, Answer answer, uint32_t negative_ttl_seconds) {
  if (answer.status == AnswerStatus::kOk) {
    Store(key, answer,
          std::clamp(answer.ttl_seconds, options_.ttl_min_seconds, options_.ttl_max_seconds));
  } else if (answer.void_lookup()) {
    Store(key, answer, std::min(negative_ttl_seconds, options_.negative_ttl_max_seconds));
  } else {
    ++stats_.temporary_failures;  // Never cached: the next lookup asks again.
  }
  const auto it = waiting_.find(key);
  if (it == waiting_.end()) {
    return;
  }
  std::vector<Callback> callbacks = std::move(it->second);
  waiting_.erase(it);
  for (Callback& callback : callbacks) {
    callback(answer);  // May start new lookups: the entry is gone already.
  }
}

void Resolver::Store(const std::string& key, const Answer& answer, uint32_t ttl_seconds) {
  if (ttl_seconds == 0 || options_.cache_entries_max == 0) {
    return;
  }
  const uint64_t expires = clock_.MonotonicMs() + uint64_t{ttl_seconds} * 1000;
  const auto it = cache_.find(key);
  if (it != cache_.end()) {
    it->second.answer = answer;
    it->second.expires_ms = expires;
    lru_.splice(lru_.begin(), lru_, it->second.lru);
    return;
  }
  if (cache_.size() >= options_.cache_entries_max) {
    cache_.erase(lru_.back());  // The least recently used.
    lru_.pop_back();
  }
  lru_.push_front(key);
  cache_.emplace(key, Entry{answer, expires, lru_.begin()});
}

void Resolver::OnReadable(int fd) {
  ares_process_fd(static_cast<ares_channel>(channel_), fd, ARES_SOCKET_BAD);
}

void Resolver::OnWritable(int fd) {
  ares_process_fd(static_cast<ares_channel>(channel_), ARES_SOCKET_BAD, fd);
}

int64_t Resolver::TimeoutMs() const {
  if (waiting_.empty()) {
    return -1;
  }
  timeval tv{};
  const timeval* next = ares_timeout(static_cast<ares_channel>(channel_), nullptr, &tv);
  if (next == nullptr) {
    return -1;
  }
  return static_cast<int64_t>(next->tv_sec) * 1000 + (next->tv_usec + 999) / 1000;
}

void Resolver::OnTimer() {
  ares_process_fd(static_cast<ares_channel>(channel_), ARES_SOCKET_BAD, ARES_SOCKET_BAD);
}

}  // namespace relais::dns
