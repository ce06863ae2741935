#include "tools/relaisd/admin_service.h"

#include <utility>

#include "core/base/strings.h"
#include "core/log/log.h"

namespace relais::relaisd {

AdminService::AdminService(uint32_t shard, spool::Spool& spool, scheduler::Scheduler& scheduler,
                           const base::Clock& clock, std::function<ShardCounts()> counts,
                           delivery::Destinations* destinations)
    : shard_(shard),
      spool_(spool),
      scheduler_(scheduler),
      clock_(clock),
      counts_(std::move(counts)),
      destinations_(destinations) {}

const std::string& AdminService::DestinationName(uint32_t destination) const {
  auto [it, inserted] = names_.try_emplace(destination);
  if (inserted && destination != 0 && destinations_ != nullptr) {
    if (auto view = destinations_->View(destination)) {
      it->second = view->name.empty() ? view->key : view->name;
    }
  }
  return it->second;
}

std::optional<uint32_t> AdminService::FindDestination(std::string_view key_or_name) const {
  if (key_or_name == "unrouted") {
    return 0;
  }
  if (destinations_ == nullptr) {
    return std::nullopt;
  }
  auto view = destinations_->Find(key_or_name);
  return view ? std::optional<uint32_t>(view->id) : std::nullopt;
}

std::unordered_map<uint32_t, uint64_t> AdminService::Waiting() const {
  std::unordered_map<uint32_t, uint64_t> waiting;
  scheduler_.ForEachDestination([&](uint32_t d, uint64_t n) { waiting[d] = n; });
  return waiting;
}

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
    v.destination = DestinationName(e->destination);
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
  answer->now_ms = clock_.MonotonicMs();
  names_.clear();  // Names may have changed since the last answer.
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
    case AdminOp::kList: {
      std::optional<uint32_t> destination;
      if (!q.destination.empty()) {
        destination = FindDestination(q.destination);
        if (!destination) {
          break;  // Not a destination of this shard: none of its messages waits for it.
        }
      }
      const uint64_t now_us = clock_.UnixMicros();
      const uint64_t older_than_us = q.older_than_ms * 1000;
      spool_.ForEach([&](const spool::StoredMessage& m) {
        // The cheap filters first: a million messages may be queued.
        if (q.older_than_ms != 0 &&
            (m.received_us > now_us || now_us - m.received_us <= older_than_us)) {
          return;
        }
        if (destination) {
          const scheduler::QueueEntry* e = scheduler_.Entry(m.id);
          if (e == nullptr || e->destination != *destination) {
            return;
          }
        }
        if ((!q.sender.empty() && !base::EqualsIgnoreCase(q.sender, m.envelope.sender)) ||
            (!q.domain.empty() && !has_domain(m, q.domain))) {
          return;
        }
        MessageView v = View(m);
        if (q.state.empty() || v.state == q.state) {
          answer->messages.push_back(std::move(v));
        }
      });
      break;
    }
    case AdminOp::kSummary: {
      const scheduler::QueueSummary summary = scheduler_.Summary(SummaryBucketBoundsMs());
      answer->summary.reserve(summary.rows.size());
      for (const scheduler::QueueSummary::Row& row : summary.rows) {
        SummaryRow r;
        r.total = row.total;
        r.buckets = row.buckets;
        if (row.destination == 0) {
          r.name = "(not yet routed)";
        } else if (auto view = destinations_ != nullptr ? destinations_->View(row.destination)
                                                        : std::nullopt) {
          r.key = view->key;
          r.name = view->name.empty() ? view->key : view->name;
        } else {
          r.key = "?";  // Forgotten while mail waits for it: should not happen.
          r.name = "(unknown destination)";
        }
        answer->summary.push_back(std::move(r));
      }
      break;
    }
    case AdminOp::kDestList:
    case AdminOp::kDestShow: {
      if (destinations_ == nullptr) {
        answer->no_destinations = true;
        break;
      }
      const auto waiting = Waiting();
      auto add = [&](delivery::DestinationView view) {
        auto it = waiting.find(view.id);
        view.queued = it == waiting.end() ? 0 : it->second;
        answer->destinations.push_back(std::move(view));
      };
      if (q.op == AdminOp::kDestList) {
        for (delivery::DestinationView& view : destinations_->All()) {
          add(std::move(view));
        }
      } else if (auto view = destinations_->Find(q.destination)) {
        add(std::move(*view));
      }
      break;
    }
    case AdminOp::kDestSuspend:
    case AdminOp::kDestResume: {
      if (destinations_ == nullptr) {
        answer->no_destinations = true;
        break;
      }
      const bool done =
          q.op == AdminOp::kDestSuspend
              ? destinations_->Suspend(q.destination, q.duration_ms,  // 0: until resumed.
                                       q.reason.empty() ? std::string("relaisctl")
                                                        : base::StrCat("relaisctl: ", q.reason))
              : destinations_->Resume(q.destination);
      if (done) {
        answer->affected = 1;
        // The log escapes the client's text (JSON); the parser bounded it.
        log::Emit(log::Level::kInfo, static_cast<int>(shard_),
                  q.op == AdminOp::kDestSuspend ? "destination_suspended" : "destination_resumed",
                  {{"destination", q.destination}, {"reason", q.reason}});
      }
      break;
    }
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
