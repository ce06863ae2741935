#include "protocols/sasl/login_limiter.h"

#include <sys/socket.h>

#include <algorithm>

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

void LoginLimiter::Unlink(Table& table, Entry& entry) {
  (entry.older != nullptr ? entry.older->newer : table.oldest) = entry.newer;
  (entry.newer != nullptr ? entry.newer->older : table.newest) = entry.older;
  entry.older = entry.newer = nullptr;
}

void LoginLimiter::PushNewest(Table& table, Entry& entry) {
  entry.older = table.newest;
  entry.newer = nullptr;
  (table.newest != nullptr ? table.newest->newer : table.oldest) = &entry;
  table.newest = &entry;
}

void LoginLimiter::Erase(Table& table, const std::string& key) {
  auto it = table.map.find(key);
  if (it == table.map.end()) {
    return;
  }
  Unlink(table, it->second);
  table.map.erase(it);
}

LoginLimiter::Entry* LoginLimiter::Find(Table& table, const std::string& key, uint64_t now_ms) {
  auto it = table.map.find(key);
  if (it == table.map.end()) {
    return nullptr;
  }
  Entry& entry = it->second;
  const bool lock_over = entry.locked_until_ms != 0 && now_ms >= entry.locked_until_ms;
  const bool forgotten =
      entry.locked_until_ms == 0 && now_ms >= entry.last_failure_ms + options_.lockout_time_ms;
  if (lock_over || forgotten) {
    Unlink(table, entry);
    table.map.erase(it);
    return nullptr;
  }
  return &entry;
}

uint64_t LoginLimiter::DelayFor(const Entry* entry) const {
  if (entry == nullptr || options_.failures_before_delay == 0 ||
      entry->failures < options_.failures_before_delay) {
    return 0;
  }
  // Doubling per failure past the threshold, capped (at most 32 steps).
  const uint32_t doublings =
      std::min<uint32_t>(entry->failures - options_.failures_before_delay, 32);
  uint64_t delay = options_.delay_first_ms;
  for (uint32_t i = 0; i < doublings && delay < options_.delay_max_ms; ++i) {
    delay *= 2;
  }
  return std::min(delay, options_.delay_max_ms);
}

LoginDecision LoginLimiter::Check(const mail::IpAddress& client, std::string_view user,
                                  uint64_t now_ms) {
  const Entry* address = Find(addresses_, AddressKey(client), now_ms);
  const Entry* name = Find(users_, UserKey(user), now_ms);
  if ((address != nullptr && address->locked_until_ms != 0) ||
      (name != nullptr && name->locked_until_ms != 0)) {
    return {LoginVerdict::kLockedOut, 0};
  }
  return {LoginVerdict::kProceed, std::max(DelayFor(address), DelayFor(name))};
}

bool LoginLimiter::Fail(Table& table, const std::string& key, uint64_t now_ms) {
  Entry* entry = Find(table, key, now_ms);
  if (entry == nullptr) {
    if (table.size() >= options_.entries_max && table.oldest != nullptr) {
      Erase(table, *table.oldest->key);
      ++stats_.evictions;
    }
    auto [it, inserted] = table.map.try_emplace(key);
    entry = &it->second;
    entry->key = &it->first;
  } else {
    Unlink(table, *entry);
  }
  PushNewest(table, *entry);
  entry->last_failure_ms = now_ms;
  if (entry->locked_until_ms != 0) {
    return false;  // Already locked (a check that raced with the lock): the lock stands.
  }
  ++entry->failures;
  if (options_.lockout_failures != 0 && entry->failures >= options_.lockout_failures) {
    entry->locked_until_ms = now_ms + options_.lockout_time_ms;
    ++stats_.lockouts;
    return true;
  }
  return false;
}

FailureEffect LoginLimiter::RecordFailure(const mail::IpAddress& client, std::string_view user,
                                          uint64_t now_ms) {
  const bool address_locked = Fail(addresses_, AddressKey(client), now_ms);
  const bool user_locked = Fail(users_, UserKey(user), now_ms);
  return address_locked || user_locked ? FailureEffect::kLocked : FailureEffect::kCounted;
}

void LoginLimiter::RecordSuccess(const mail::IpAddress& client, std::string_view user) {
  Erase(addresses_, AddressKey(client));
  Erase(users_, UserKey(user));
}

}  // namespace relais::sasl
