// core/uring/mesh.h — the shards' only way to talk: one SPSC ring per ordered pair of shards,
// with the consumer woken by IORING_OP_MSG_RING on its own io_uring.
//
// A Handoff is a small move-only value; ownership of its payload moves with it. A producer
// wakes a consumer only when the consumer has not been woken since it last drained (one
// MSG_RING per burst, not per handoff).
//
// Threading: Mesh is built before the shard threads start and is immutable afterwards except
// for the rings and wake flags. A MeshPort belongs to one shard thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "core/ring/spsc_ring.h"
#include "core/uring/engine.h"

namespace relais::uring {

class HandoffPayload {
 public:
  virtual ~HandoffPayload() = default;
};

struct Handoff {
  uint16_t kind = 0;
  uint64_t value = 0;
  std::unique_ptr<HandoffPayload> payload;
};

class MeshPort;

class Mesh {
 public:
  Mesh(uint32_t shards, uint32_t capacity_log2);
  [[nodiscard]] uint32_t shards() const { return shards_; }
  [[nodiscard]] ring::SpscRing<Handoff>& Ring(uint32_t from, uint32_t to) {
    return *rings_[from * shards_ + to];
  }

 private:
  friend class MeshPort;
  const uint32_t shards_;
  std::vector<std::unique_ptr<ring::SpscRing<Handoff>>> rings_;
  std::vector<MeshPort*> ports_;  // Registered before the shards run.
};

class MeshPort final : public Completion {
 public:
  using Handler = std::function<void(uint32_t from, Handoff&& handoff)>;

  // Registers this shard's endpoint. Every port must be constructed before any Send.
  MeshPort(Mesh& mesh, uint32_t shard, Engine& engine, Handler handler);

  // Producer side, on this port's shard. False when the ring to `to` is full (the handoff is
  // left untouched); the caller retries on a later turn.
  [[nodiscard]] bool Send(uint32_t to, Handoff&& handoff);
  // Drains every incoming ring; also what a MSG_RING wake-up runs.
  uint32_t Drain();
  void OnCqe(int32_t result, uint32_t flags) override;

 private:
  Mesh& mesh_;
  const uint32_t shard_;
  Engine& engine_;
  Handler handler_;
  alignas(ring::kCacheLineBytes) std::atomic<bool> wake_pending_{false};
};

}  // namespace relais::uring
