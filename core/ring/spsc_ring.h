// core/ring/spsc_ring.h — bounded single-producer single-consumer ring between two shards.
//
// One ring per ordered pair of shards carries handoffs. Capacity is a power of two fixed at
// construction; the ring never blocks and never allocates afterwards. The producer and the
// consumer each own one index on its own cache line and keep a cached copy of the other's,
// so the steady state touches a shared line only when the cached view runs out.
//
// Threading: exactly one producer thread calls TryPush, exactly one consumer thread calls
// TryPop / Empty. Waking the consumer is the caller's job (IORING_OP_MSG_RING).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <optional>
#include <type_traits>
#include <utility>

#include "core/base/check.h"

namespace relais::ring {

inline constexpr size_t kCacheLineBytes = 64;

template <typename T>
class SpscRing {
  static_assert(std::is_nothrow_move_constructible_v<T>, "handoffs must move without throwing");

 public:
  explicit SpscRing(uint32_t capacity_log2)
      : mask_((uint64_t{1} << capacity_log2) - 1),
        slots_(static_cast<Slot*>(
            ::operator new[](sizeof(Slot) * (mask_ + 1), std::align_val_t{alignof(Slot)}))) {
    RELAIS_CHECK(capacity_log2 >= 1 && capacity_log2 <= 24) << "capacity_log2=" << capacity_log2;
  }
  SpscRing(const SpscRing&) = delete;
  SpscRing& operator=(const SpscRing&) = delete;
  ~SpscRing() {
    while (TryPop().has_value()) {
    }
    ::operator delete[](slots_, std::align_val_t{alignof(Slot)});
  }

  [[nodiscard]] uint64_t capacity() const { return mask_ + 1; }

  // Producer only. Returns false and leaves `item` untouched when the ring is full.
  [[nodiscard]] bool TryPush(T&& item) {
    const uint64_t tail = producer_.tail.load(std::memory_order_relaxed);
    if (tail - producer_.cached_head > mask_) {
      producer_.cached_head = consumer_.head.load(std::memory_order_acquire);
      if (tail - producer_.cached_head > mask_) {
        return false;
      }
    }
    new (&slots_[tail & mask_].storage) T(std::move(item));
    producer_.tail.store(tail + 1, std::memory_order_release);
    return true;
  }

  // Consumer only.
  [[nodiscard]] std::optional<T> TryPop() {
    const uint64_t head = consumer_.head.load(std::memory_order_relaxed);
    if (head == consumer_.cached_tail) {
      consumer_.cached_tail = producer_.tail.load(std::memory_order_acquire);
      if (head == consumer_.cached_tail) {
        return std::nullopt;
      }
    }
    T* slot = std::launder(reinterpret_cast<T*>(&slots_[head & mask_].storage));
    std::optional<T> out(std::move(*slot));
    slot->~T();
    consumer_.head.store(head + 1, std::memory_order_release);
    return out;
  }

 private:
  struct Slot {
    alignas(T) std::byte storage[sizeof(T)];
  };
  struct alignas(kCacheLineBytes) ProducerSide {
    std::atomic<uint64_t> tail{0};
    uint64_t cached_head = 0;
  };
  struct alignas(kCacheLineBytes) ConsumerSide {
    std::atomic<uint64_t> head{0};
    uint64_t cached_tail = 0;
  };

  const uint64_t mask_;
  Slot* const slots_;
  ProducerSide producer_;
  ConsumerSide consumer_;
};

}  // namespace relais::ring
