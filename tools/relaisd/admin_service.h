// tools/relaisd/admin_service.h — relaisctl's requests, answered.
//
// AdminService (one per shard) answers a query about its own shard's queue: it reads the spool
// and the scheduler, and acts only through them (flush, hold, release, bounce, delete), and
// about its destinations (dest ls|show|suspend|resume, and the names in queue summary and
// queue ls) through delivery::Destinations. It never sees the shard itself: what the status
// line counts beyond the queue comes from a callback. AdminServer (shard 0 only) serves the admin
// socket: it reads one request line per client (admin.h's syntax), sends the query to every shard
// it names, answers its own shard's part at once, and responds once every answer is in. The
// handoffs that carry queries and answers between shards are the shard's wiring (HandoffKind in
// shard.h). Both belong to one shard's thread; not thread-safe.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/base/clock.h"
#include "core/net/request_server.h"
#include "core/timer/timer_wheel.h"
#include "core/uring/engine.h"
#include "queue/delivery/destinations.h"
#include "queue/scheduler/scheduler.h"
#include "queue/spool/spool.h"
#include "tools/relaisd/admin.h"

namespace relais::relaisd {

// What a shard's status answer counts that its queue does not know.
struct ShardCounts {
  uint32_t connections = 0;        // SMTP sessions open now.
  uint64_t accepted = 0;           // Messages accepted since the start.
  uint64_t delivery_attempts = 0;  // Delivery attempts started since the start.
};

class AdminService final {
 public:
  // All references must outlive the service; `counts` is called while answering a status.
  // `destinations` (may be null: the dest commands then answer that there is none) must
  // outlive it too.
  AdminService(uint32_t shard, spool::Spool& spool, scheduler::Scheduler& scheduler,
               const base::Clock& clock, std::function<ShardCounts()> counts,
               delivery::Destinations* destinations = nullptr);

  // This shard's answer to `query`. A delete records the message's pending recipients as
  // failed (no bounce: the operator chose to drop it); like every outcome it becomes durable
  // with the shard's next group commit.
  [[nodiscard]] std::unique_ptr<AdminAnswer> Answer(const AdminQuery& query);
  // One message as relaisctl shows it: its recipients' states and its place in the queue.
  [[nodiscard]] MessageView View(const spool::StoredMessage& message) const;

 private:
  // The name relaisctl shows for a destination of this shard ("" for 0), cached per answer.
  const std::string& DestinationName(uint32_t destination) const;
  // The destination `key_or_name` names here: 0 for "unrouted", nullopt when unknown.
  [[nodiscard]] std::optional<uint32_t> FindDestination(std::string_view key_or_name) const;
  // Messages waiting for each destination (the scheduler's count), for the views.
  [[nodiscard]] std::unordered_map<uint32_t, uint64_t> Waiting() const;

  const uint32_t shard_;
  spool::Spool& spool_;
  scheduler::Scheduler& scheduler_;
  const base::Clock& clock_;
  const std::function<ShardCounts()> counts_;
  delivery::Destinations* const destinations_;
  mutable std::unordered_map<uint32_t, std::string> names_;
};

// relaisctl's way in: one request line per connection, answered once every shard it names has
// answered.
class AdminServer final : public net::RequestHandler {
 public:
  // Hands a query to another shard; its answer comes back through OnAnswer.
  using SendQuery = std::function<void(uint32_t shard, std::unique_ptr<AdminQuery> query)>;

  // `listen_fd` is bound and listening. `local` answers for `shard` (this one) directly.
  AdminServer(uring::Engine& engine, timer::TimerWheel& timers, const base::Clock& clock,
              int listen_fd, uint32_t shard, uint32_t shards, AdminService& local, SendQuery send);

  void Arm() { server_.Arm(); }
  // Stops accepting; requests already read are still answered.
  void Stop() { server_.Stop(); }
  // Another shard's answer; an answer to no pending request is dropped.
  void OnAnswer(std::unique_ptr<AdminAnswer> answer);

  size_t RequestEnd(std::string_view input) override;
  std::string TooLarge() override { return "ERROR request line too long\n"; }
  void OnRequest(net::RequestServer& server, uint64_t client, std::string_view line) override;

 private:
  struct Pending {
    uint64_t client;
    AdminQuery query;
    size_t expected;
    std::vector<AdminAnswer> answers;
  };

  void MaybeRespond(std::unordered_map<uint64_t, Pending>::iterator it);

  const uint32_t shard_;
  const uint32_t shards_;
  AdminService& local_;
  const SendQuery send_;
  net::RequestServer server_;
  uint64_t next_id_ = 1;
  std::unordered_map<uint64_t, Pending> pending_;
};

}  // namespace relais::relaisd
