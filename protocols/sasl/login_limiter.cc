#include "protocols/sasl/login_limiter.h"

#include <sys/socket.h>

#include <algorithm>

#include "core/base/check.h"
#include "protocols/sasl/credentials.h"

namespace relais::sasl {

LoginLimiter::LoginLimiter(const LoginLimiterOptions& options) : options_(options) {}

std::string LoginLimiter::AddressKey(const mail::IpAddress& client) {
  mail::IpAddress address = client;
  address.Unmap();  // ::ffff:192.0.2.1 is the IPv4 client 192.0.2.1.
  const bool v6 = address.family == AF_INET6;
  const size_t bytes = v6 ? 8 : 4;  // IPv6: the /64 prefix.
  std::string key(1, v6 ? '6' : '4');
  key.append(reinterpret_cast<const char*>(address.bytes.data()), bytes);
  return key;
}

std::string LoginLimiter::UserKey(std::string_view user) {
  return NormalizeUserName(user.substr(0, std::min(user.size(), kUserBytesMax)));
}

LoginLimiter::Chain& LoginLimiter::ChainOf(Table& table, List list) {
  switch (list) {
    case List::kIdle:
      return table.idle;
    case List::kInFlight:
      return table.in_flight;
    case List::kLocked:
    case List::kNone:
      break;
  }
  return table.locked;
}

void LoginLimiter::Unlink(Table& table, Entry& entry) {
  if (entry.list == List::kNone) {
    return;
  }
  Chain& chain = ChainOf(table, entry.list);
  (entry.older != nullptr ? entry.older->newer : chain.oldest) = entry.newer;
  (entry.newer != nullptr ? entry.newer->older : chain.newest) = entry.older;
  entry.older = entry.newer = nullptr;
  entry.list = List::kNone;
}

void LoginLimiter::Link(Table& table, Entry& entry, List list) {
  Chain& chain = ChainOf(table, list);
  entry.list = list;
  entry.older = chain.newest;
  entry.newer = nullptr;
  (chain.newest != nullptr ? chain.newest->newer : chain.oldest) = &entry;
  chain.newest = &entry;
}

void LoginLimiter::Place(Table& table, Entry& entry, bool touch) {
  const List want = entry.locked_until_ms != 0 ? List::kLocked
                    : entry.in_flight > 0      ? List::kInFlight
                    : entry.failures > 0       ? List::kIdle
                                               : List::kNone;
  if (want == List::kNone) {
    Unlink(table, entry);
    table.map.erase(*entry.key);  // Nothing left to remember.
    return;
  }
  // The locked list stays in lock order: a lock is never moved to the end.
  if (want != entry.list || (touch && want != List::kLocked)) {
    Unlink(table, entry);
    Link(table, entry, want);
  }
}

void LoginLimiter::Expire(Entry& entry, uint64_t now_ms) const {
  if (entry.locked_until_ms != 0) {
    if (now_ms >= entry.locked_until_ms) {  // The lock is over; the slate is clean.
      entry.locked_until_ms = 0;
      entry.failures = 0;
    }
  } else if (entry.failures > 0 && now_ms >= entry.last_failure_ms + options_.lockout_time_ms) {
    entry.failures = 0;
  }
}

LoginLimiter::Entry* LoginLimiter::Find(Table& table, const std::string& key, uint64_t now_ms) {
  auto it = table.map.find(key);
  if (it == table.map.end()) {
    return nullptr;
  }
  Entry& entry = it->second;
  Expire(entry, now_ms);
  if (entry.failures == 0 && entry.in_flight == 0 && entry.locked_until_ms == 0) {
    Unlink(table, entry);
    table.map.erase(it);
    return nullptr;
  }
  Place(table, entry, /*touch=*/false);  // An ended lock with attempts in flight moves on.
  return &entry;
}

LoginLimiter::Entry* LoginLimiter::FindOrCreate(Table& table, const std::string& key,
                                                uint64_t now_ms, uint32_t& evictions) {
  if (Entry* entry = Find(table, key, now_ms)) {
    return entry;
  }
  if (table.size() >= options_.entries_max) {
    if (Entry* victim = table.idle.oldest) {
      // Neither locked nor in flight: forgetting it unlocks nobody.
      const bool expired = now_ms >= victim->last_failure_ms + options_.lockout_time_ms;
      Unlink(table, *victim);
      table.map.erase(*victim->key);
      if (!expired) {
        ++evictions;
        ++stats_.evictions;
      }
    } else if (Entry* first = table.locked.oldest;
               first != nullptr && now_ms >= first->locked_until_ms) {
      Expire(*first, now_ms);  // The first lock to end has ended: make room with it.
      Place(table, *first, /*touch=*/false);
    }
    if (table.size() >= options_.entries_max) {
      ++stats_.full_refusals;  // All locked or in flight: refuse rather than unlock anyone.
      return nullptr;
    }
  }
  auto [it, inserted] = table.map.try_emplace(key);
  it->second.key = &it->first;
  return &it->second;
}

uint64_t LoginLimiter::DelayFor(const Entry* entry) const {
  const uint32_t count = Count(entry);
  if (options_.failures_before_delay == 0 || count < options_.failures_before_delay) {
    return 0;
  }
  // Doubling per failure past the threshold, capped (at most 32 steps).
  const uint32_t doublings = std::min<uint32_t>(count - options_.failures_before_delay, 32);
  uint64_t delay = options_.delay_first_ms;
  for (uint32_t i = 0; i < doublings && delay < options_.delay_max_ms; ++i) {
    delay *= 2;
  }
  return std::min(delay, options_.delay_max_ms);
}

LoginDecision LoginLimiter::Decide(const Entry* address, const Entry* user) const {
  if ((address != nullptr && address->locked_until_ms != 0) ||
      (user != nullptr && user->locked_until_ms != 0)) {
    return {LoginVerdict::kLockedOut, 0, 0};
  }
  // Attempts in flight count as failures: once they could lock, nothing more starts.
  const uint32_t lock_at = options_.lockout_failures;
  if (lock_at != 0 && (Count(address) >= lock_at || Count(user) >= lock_at)) {
    return {LoginVerdict::kLockedOut, 0, 0};
  }
  if ((options_.in_flight_per_address_max != 0 && address != nullptr &&
       address->in_flight >= options_.in_flight_per_address_max) ||
      (options_.in_flight_per_user_max != 0 && user != nullptr &&
       user->in_flight >= options_.in_flight_per_user_max)) {
    return {LoginVerdict::kBusy, 0, 0};
  }
  return {LoginVerdict::kProceed, std::max(DelayFor(address), DelayFor(user)), 0};
}

LoginDecision LoginLimiter::Check(const mail::IpAddress& client, std::string_view user,
                                  uint64_t now_ms) {
  const std::string address_key = AddressKey(client);
  const std::string user_key = UserKey(user);
  std::lock_guard lock(mu_);
  return Decide(Find(addresses_, address_key, now_ms), Find(users_, user_key, now_ms));
}

LoginDecision LoginLimiter::Begin(const mail::IpAddress& client, std::string_view user,
                                  uint64_t now_ms) {
  const std::string address_key = AddressKey(client);
  const std::string user_key = UserKey(user);
  std::lock_guard lock(mu_);
  Entry* address = Find(addresses_, address_key, now_ms);
  Entry* name = Find(users_, user_key, now_ms);
  LoginDecision decision = Decide(address, name);
  if (decision.verdict != LoginVerdict::kProceed) {
    return decision;
  }
  if (address == nullptr) {
    address = FindOrCreate(addresses_, address_key, now_ms, decision.evictions);
    if (address == nullptr) {
      return {LoginVerdict::kTableFull, 0, decision.evictions};
    }
  }
  if (name == nullptr) {
    name = FindOrCreate(users_, user_key, now_ms, decision.evictions);
    if (name == nullptr) {
      Place(addresses_, *address, /*touch=*/false);  // Erases it if it was created just now.
      return {LoginVerdict::kTableFull, 0, decision.evictions};
    }
  }
  ++address->in_flight;
  ++name->in_flight;
  Place(addresses_, *address, /*touch=*/false);
  Place(users_, *name, /*touch=*/false);
  return decision;
}

bool LoginLimiter::Fail(Entry& entry, uint64_t now_ms) {
  entry.last_failure_ms = now_ms;
  if (entry.locked_until_ms != 0) {
    return false;  // Already locked (an attempt in flight when the lock came): the lock stands.
  }
  ++entry.failures;
  if (options_.lockout_failures != 0 && entry.failures >= options_.lockout_failures) {
    entry.locked_until_ms = now_ms + options_.lockout_time_ms;
    ++stats_.lockouts;
    return true;
  }
  return false;
}

uint32_t LoginLimiter::Settle(const mail::IpAddress& client, std::string_view user, bool ok,
                              uint64_t now_ms) {
  const std::string address_key = AddressKey(client);
  const std::string user_key = UserKey(user);
  std::lock_guard lock(mu_);
  // Entries in flight are never evicted nor expired away: Begin's entries are still here.
  auto a = addresses_.map.find(address_key);
  auto u = users_.map.find(user_key);
  RELAIS_CHECK(a != addresses_.map.end() && a->second.in_flight > 0 && u != users_.map.end() &&
               u->second.in_flight > 0)
      << "LoginLimiter::Settle without Begin";
  Entry& address = a->second;
  Entry& name = u->second;
  Expire(address, now_ms);
  Expire(name, now_ms);
  --address.in_flight;
  --name.in_flight;
  uint32_t locked = 0;
  if (ok) {
    // The user proved its password: its slate is clean. Not the address's (see the header).
    name.failures = 0;
    name.locked_until_ms = 0;
  } else {
    locked += Fail(address, now_ms) ? 1 : 0;
    locked += Fail(name, now_ms) ? 1 : 0;
  }
  Place(addresses_, address, /*touch=*/!ok);
  Place(users_, name, /*touch=*/!ok);
  return locked;
}

FailureEffect LoginLimiter::RecordFailure(const mail::IpAddress& client, std::string_view user,
                                          uint64_t now_ms) {
  const std::string address_key = AddressKey(client);
  const std::string user_key = UserKey(user);
  std::lock_guard lock(mu_);
  bool locked = false;
  uint32_t evictions = 0;
  for (auto [table, key] : {std::pair{&addresses_, &address_key}, std::pair{&users_, &user_key}}) {
    if (Entry* entry = FindOrCreate(*table, *key, now_ms, evictions)) {
      locked |= Fail(*entry, now_ms);
      Place(*table, *entry, /*touch=*/true);
    }
  }
  return locked ? FailureEffect::kLocked : FailureEffect::kCounted;
}

void LoginLimiter::RecordSuccess(const mail::IpAddress& /*client*/, std::string_view user) {
  const std::string user_key = UserKey(user);
  std::lock_guard lock(mu_);
  auto it = users_.map.find(user_key);
  if (it == users_.map.end()) {
    return;
  }
  it->second.failures = 0;
  it->second.locked_until_ms = 0;
  Place(users_, it->second, /*touch=*/false);
}

size_t LoginLimiter::address_entries() const {
  std::lock_guard lock(mu_);
  return addresses_.size();
}

size_t LoginLimiter::user_entries() const {
  std::lock_guard lock(mu_);
  return users_.size();
}

LoginLimiterStats LoginLimiter::stats() const {
  std::lock_guard lock(mu_);
  return stats_;
}

}  // namespace relais::sasl
