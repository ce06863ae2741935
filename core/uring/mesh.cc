#include "core/uring/mesh.h"

#include "core/base/check.h"

namespace relais::uring {

Mesh::Mesh(uint32_t shards, uint32_t capacity_log2) : shards_(shards), ports_(shards, nullptr) {
  rings_.reserve(size_t{shards} * shards);
  for (uint32_t i = 0; i < shards * shards; ++i) {
    rings_.push_back(std::make_unique<ring::SpscRing<Handoff>>(capacity_log2));
  }
}

MeshPort::MeshPort(Mesh& mesh, uint32_t shard, Engine& engine, Handler handler)
    : mesh_(mesh), shard_(shard), engine_(engine), handler_(std::move(handler)) {
  RELAIS_CHECK(shard < mesh.shards_ && mesh.ports_[shard] == nullptr);
  mesh.ports_[shard] = this;
}

bool MeshPort::Send(uint32_t to, Handoff&& handoff) {
  RELAIS_CHECK(to < mesh_.shards_);
  if (!mesh_.Ring(shard_, to).TryPush(std::move(handoff))) {
    return false;
  }
  MeshPort* target = mesh_.ports_[to];
  RELAIS_CHECK(target != nullptr) << "shard " << to << " has no port";
  // acq_rel pairs with the consumer's exchange in OnCqe: if the flag was already set, the
  // consumer's later exchange(false) sees this push before it drains.
  if (!target->wake_pending_.exchange(true, std::memory_order_acq_rel)) {
    engine_.Wake(target->engine_.ring_fd(), *target, 0);
  }
  return true;
}

uint32_t MeshPort::Drain() {
  uint32_t drained = 0;
  for (uint32_t from = 0; from < mesh_.shards_; ++from) {
    auto& ring = mesh_.Ring(from, shard_);
    while (auto handoff = ring.TryPop()) {
      handler_(from, std::move(*handoff));
      ++drained;
    }
  }
  return drained;
}

void MeshPort::OnCqe(int32_t /*result*/, uint32_t /*flags*/) {
  wake_pending_.exchange(false, std::memory_order_acq_rel);
  Drain();
}

}  // namespace relais::uring
