// tools/relaisd/connection_limiter.h — connection caps shared by all shards.
//
// Admission happens once per connection (not per message), so a few relaxed atomic
// read-modify-writes are cheap and no lock is taken. The per-client count is kept in one of
// 65 536 buckets chosen by hashing the address: two clients that share a bucket share its
// count, which can only make the cap stricter, never looser. Clients in the exempt networks
// (relay.networks by default: a load balancer, local submitters, as Postfix exempts
// mynetworks) count towards the total only.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "core/mail/ip_network.h"

namespace relais::relaisd {

class ConnectionLimiter {
 public:
  enum class Admission : uint8_t { kAdmitted, kTooMany, kTooManyFromClient };

  ConnectionLimiter(uint32_t total_max, uint32_t per_client_max,
                    std::vector<mail::IpNetwork> per_client_exempt = {})
      : total_max_(total_max),
        per_client_max_(per_client_max),
        per_client_exempt_(std::move(per_client_exempt)),
        buckets_(new std::atomic<uint32_t>[kBuckets]) {
    for (uint32_t i = 0; i < kBuckets; ++i) {
      buckets_[i].store(0, std::memory_order_relaxed);
    }
  }

  // On kAdmitted the caller must Release() the same address when the connection ends.
  [[nodiscard]] Admission Acquire(const mail::IpAddress& client) {
    if (total_.fetch_add(1, std::memory_order_relaxed) >= total_max_) {
      total_.fetch_sub(1, std::memory_order_relaxed);
      return Admission::kTooMany;
    }
    if (Exempt(client)) {
      return Admission::kAdmitted;
    }
    std::atomic<uint32_t>& bucket = buckets_[Bucket(client)];
    if (bucket.fetch_add(1, std::memory_order_relaxed) >= per_client_max_) {
      bucket.fetch_sub(1, std::memory_order_relaxed);
      total_.fetch_sub(1, std::memory_order_relaxed);
      return Admission::kTooManyFromClient;
    }
    return Admission::kAdmitted;
  }

  void Release(const mail::IpAddress& client) {
    if (!Exempt(client)) {  // The networks never change: the same answer as at Acquire.
      buckets_[Bucket(client)].fetch_sub(1, std::memory_order_relaxed);
    }
    total_.fetch_sub(1, std::memory_order_relaxed);
  }

  [[nodiscard]] uint32_t active() const { return total_.load(std::memory_order_relaxed); }

 private:
  static constexpr uint32_t kBuckets = 1 << 16;
  [[nodiscard]] bool Exempt(const mail::IpAddress& client) const {
    return std::any_of(per_client_exempt_.begin(), per_client_exempt_.end(),
                       [&](const mail::IpNetwork& n) { return n.Contains(client); });
  }
  static uint32_t Bucket(const mail::IpAddress& a) {
    uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a over the address bytes.
    for (uint8_t b : a.bytes) {
      h = (h ^ b) * 0x100000001b3ull;
    }
    return static_cast<uint32_t>(h ^ (h >> 32)) & (kBuckets - 1);
  }

  const uint32_t total_max_;
  const uint32_t per_client_max_;
  const std::vector<mail::IpNetwork> per_client_exempt_;
  std::atomic<uint32_t> total_{0};
  std::unique_ptr<std::atomic<uint32_t>[]> buckets_;
};

}  // namespace relais::relaisd
