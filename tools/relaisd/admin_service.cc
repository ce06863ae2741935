#include "tools/relaisd/admin_service.h"

#include <utility>

#include "core/base/strings.h"
#include "core/log/log.h"

namespace relais::relaisd {

AdminService::AdminService(uint32_t shard, spool::Spool& spool, scheduler::Scheduler& scheduler,
                           const base::Clock& clock, std::function<ShardCounts()> counts)
    : shard_(shard),
      spool_(spool),
      scheduler_(scheduler),
      clock_(clock),
      counts_(std::move(counts)) {}

MessageView AdminService::View(const spool::StoredMessage& m) const {
  MessageView v;
  v.id = m.id.ToString();
  v.sender = m.envelope.sender;
  v.size = m.body_size;
  v.received_us = m.received_us;
  for (size_t i = 0; i < m.envelope.recipients.size(); ++i) {
    v.recipients.emplace_back(m.envelope.recipients[i].address,
                              spool::RecipientStateName(m.states[i]));
  }
  v.state = "queued";
  if (const scheduler::QueueEntry* e = scheduler_.Entry(m.id)) {
    v.attempts = e->attempts;
    v.last_reply = e->last_reply;
    const uint64_t now = clock_.MonotonicMs();
    if (e->in_flight) {
      v.state = "active";
    } else if (e->held) {
      v.state = "held";
    } else if (e->next_attempt_ms != 0) {
      v.state = "deferred";
      v.next_attempt_in_ms =
          e->next_attempt_ms > now ? static_cast<int64_t>(e->next_attempt_ms - now) : 0;
    }
  }
  return v;
}

std::unique_ptr<AdminAnswer> AdminService::Answer(const AdminQuery& q) {
  auto answer = std::make_unique<AdminAnswer>();
  answer->request = q.request;
  auto has_domain = [&](const spool::StoredMessage& m, std::string_view domain) {
    for (size_t i = 0; i < m.envelope.recipients.size(); ++i) {
      const std::string& a = m.envelope.recipients[i].address;
      const size_t at = a.rfind('@');
      if (m.states[i] == spool::RecipientState::kPending && at != std::string::npos &&
          base::EqualsIgnoreCase(std::string_view(a).substr(at + 1), domain)) {
        return true;
      }
    }
    return false;
  };
  const spool::StoredMessage* one = q.id ? spool_.Find(*q.id) : nullptr;
  switch (q.op) {
    case AdminOp::kList:
      spool_.ForEach([&](const spool::StoredMessage& m) {
        MessageView v = View(m);
        if ((q.state.empty() || v.state == q.state) &&
            (q.sender.empty() || base::EqualsIgnoreCase(q.sender, v.sender)) &&
            (q.domain.empty() || has_domain(m, q.domain))) {
          answer->messages.push_back(std::move(v));
        }
      });
      break;
    case AdminOp::kShow:
      if (one != nullptr) {
        answer->messages.push_back(View(*one));
      }
      break;
    case AdminOp::kFlush:
      if (q.id) {
        answer->affected = scheduler_.Flush(*q.id) ? 1 : 0;
      } else {
        spool_.ForEach([&](const spool::StoredMessage& m) {
          if ((q.domain.empty() || has_domain(m, q.domain)) && scheduler_.Flush(m.id)) {
            ++answer->affected;
          }
        });
      }
      break;
    case AdminOp::kDelete: {
      if (one == nullptr) {
        break;
      }
      const mail::MessageId id = one->id;
      if (!scheduler_.Forget(id)) {
        answer->error = "the message is being delivered right now; try again";
        break;
      }
      std::vector<uint32_t> pending;
      for (uint32_t i = 0; i < one->states.size(); ++i) {
        if (one->states[i] == spool::RecipientState::kPending) {
          pending.push_back(i);
        }
      }
      // Recorded as failed without a bounce: the operator chose to drop it.
      for (uint32_t i : pending) {
        spool_.RecordOutcome(id, i, spool::RecipientState::kFailed);
      }
      log::Emit(log::Level::kInfo, static_cast<int>(shard_), "message_deleted",
                {{"id", id.ToString()}, {"recipients", static_cast<uint64_t>(pending.size())}});
      answer->affected = 1;
      break;
    }
    case AdminOp::kBounce:
      answer->affected = q.id && scheduler_.Return(*q.id) ? 1 : 0;
      break;
    case AdminOp::kHold:
      answer->affected = q.id && scheduler_.Hold(*q.id) ? 1 : 0;
      break;
    case AdminOp::kRelease:
      answer->affected = q.id && scheduler_.Release(*q.id) ? 1 : 0;
      break;
    case AdminOp::kStatus: {
      const ShardCounts counts = counts_();
      ShardStatus& st = answer->status;
      st.shard = shard_;
      st.connections = counts.connections;
      st.messages = spool_.message_count();
      st.deferred = scheduler_.deferred();
      scheduler_.ForEachEntry([&](const scheduler::QueueEntry& e) { st.held += e.held; });
      st.in_flight = scheduler_.in_flight();
      st.spool_bytes = spool_.live_bytes();
      st.segments = spool_.segment_count();
      st.accepted = counts.accepted;
      st.delivery_attempts = counts.delivery_attempts;
      break;
    }
  }
  return answer;
}

AdminServer::AdminServer(uring::Engine& engine, timer::TimerWheel& timers, const base::Clock& clock,
                         int listen_fd, uint32_t shard, uint32_t shards, AdminService& local,
                         SendQuery send)
    : shard_(shard),
      shards_(shards),
      local_(local),
      send_(std::move(send)),
      server_(engine.net(), timers, clock, listen_fd,
              net::RequestServerOptions{64, 4096, 30'000, /*same_user_only=*/true}, *this) {}

void AdminServer::OnAnswer(std::unique_ptr<AdminAnswer> answer) {
  auto it = pending_.find(answer->request);
  if (it == pending_.end()) {
    return;
  }
  it->second.answers.push_back(std::move(*answer));
  MaybeRespond(it);
}

size_t AdminServer::RequestEnd(std::string_view input) {
  const size_t newline = input.find('\n');
  return newline == std::string_view::npos ? kNeedMore : newline + 1;
}

void AdminServer::OnRequest(net::RequestServer& server, uint64_t client, std::string_view line) {
  line.remove_suffix(1);  // The '\n'.
  if (!line.empty() && line.back() == '\r') {
    line.remove_suffix(1);
  }
  auto query = ParseAdminRequest(line);
  if (!query.ok()) {
    server.Respond(client, base::StrCat("ERROR ", query.status().message(), "\n"));
    return;
  }
  query->request = next_id_++;
  const std::vector<uint32_t> targets = AdminTargets(*query, shards_);
  auto [it, inserted] =
      pending_.emplace(query->request, Pending{client, *query, targets.size(), {}});
  log::Emit(log::Level::kInfo, static_cast<int>(shard_), "admin_request", {{"request", line}});
  for (uint32_t target : targets) {
    if (target == shard_) {
      it->second.answers.push_back(std::move(*local_.Answer(*query)));
      continue;
    }
    send_(target, std::make_unique<AdminQuery>(*query));
  }
  MaybeRespond(it);
}

void AdminServer::MaybeRespond(std::unordered_map<uint64_t, Pending>::iterator it) {
  if (it->second.answers.size() < it->second.expected) {
    return;
  }
  server_.Respond(it->second.client, FormatAdminResponse(it->second.query, it->second.answers));
  pending_.erase(it);
}

}  // namespace relais::relaisd
