#include "tools/relaisd/admin.h"

#include <algorithm>
#include <cstdio>

#include "core/base/strings.h"
#include "core/log/log.h"

namespace relais::relaisd {
namespace {

using base::StrAppend;
using base::StrCat;

std::string Json(std::string_view s) { return log::JsonString(s); }

std::string MessageJson(const MessageView& m) {
  std::string out =
      StrCat("{\"id\":", Json(m.id), ",\"state\":", Json(m.state), ",\"sender\":", Json(m.sender),
             ",\"size\":", m.size, ",\"received_us\":", m.received_us, ",\"attempts\":", m.attempts,
             ",\"next_attempt_in_ms\":", m.next_attempt_in_ms,
             ",\"last_reply\":", Json(m.last_reply), ",\"recipients\":[");
  for (size_t i = 0; i < m.recipients.size(); ++i) {
    StrAppend(&out, i == 0 ? "" : ",", "{\"address\":", Json(m.recipients[i].first),
              ",\"state\":", Json(m.recipients[i].second), "}");
  }
  out += "]}";
  return out;
}

std::string Padded(std::string_view s, size_t width) {
  std::string out(s);
  if (out.size() < width) {
    out.append(width - out.size(), ' ');
  }
  return out;
}

}  // namespace

absl::StatusOr<AdminQuery> ParseAdminRequest(std::string_view line) {
  std::vector<std::string_view> words;
  for (size_t pos = 0; pos < line.size();) {
    const size_t end = std::min(line.find(' ', pos), line.size());
    if (end > pos) {
      words.push_back(line.substr(pos, end - pos));
    }
    pos = end + 1;
  }
  AdminQuery q;
  if (words.empty()) {
    return absl::InvalidArgumentError("empty request");
  }
  size_t i = 0;
  if (words[0] == "status") {
    q.op = AdminOp::kStatus;
    i = 1;
  } else if (words[0] == "queue" && words.size() >= 2) {
    const std::string_view verb = words[1];
    i = 2;
    if (verb == "ls") {
      q.op = AdminOp::kList;
    } else if (verb == "show") {
      q.op = AdminOp::kShow;
    } else if (verb == "flush") {
      q.op = AdminOp::kFlush;
    } else if (verb == "delete") {
      q.op = AdminOp::kDelete;
    } else if (verb == "bounce") {
      q.op = AdminOp::kBounce;
    } else if (verb == "hold") {
      q.op = AdminOp::kHold;
    } else if (verb == "release") {
      q.op = AdminOp::kRelease;
    } else {
      return absl::InvalidArgumentError(StrCat("unknown queue command '", verb, "'"));
    }
  } else {
    return absl::InvalidArgumentError(StrCat("unknown command '", words[0], "'"));
  }
  for (; i < words.size(); ++i) {
    const std::string_view w = words[i];
    if (w == "json") {
      q.json = true;
    } else if (q.op == AdminOp::kList && w.starts_with("state=")) {
      q.state = w.substr(6);
      if (q.state != "queued" && q.state != "deferred" && q.state != "held" &&
          q.state != "active") {
        return absl::InvalidArgumentError(
            StrCat("state must be queued, deferred, held or active, not '", q.state, "'"));
      }
    } else if (q.op == AdminOp::kList && w.starts_with("domain=")) {
      q.domain = base::AsciiStrToLower(w.substr(7));
    } else if (q.op == AdminOp::kList && w.starts_with("sender=")) {
      q.sender = w.substr(7);
    } else if (q.op != AdminOp::kList && q.op != AdminOp::kStatus && !q.id && q.domain.empty()) {
      if (auto id = mail::MessageId::Parse(w)) {
        q.id = id;
      } else if (q.op == AdminOp::kFlush) {
        q.domain = base::AsciiStrToLower(w);
      } else {
        return absl::InvalidArgumentError(StrCat("'", w, "' is not a message ID"));
      }
    } else {
      return absl::InvalidArgumentError(StrCat("unexpected '", w, "'"));
    }
  }
  const bool needs_id = q.op == AdminOp::kShow || q.op == AdminOp::kDelete ||
                        q.op == AdminOp::kBounce || q.op == AdminOp::kHold ||
                        q.op == AdminOp::kRelease;
  if (needs_id && !q.id) {
    return absl::InvalidArgumentError("this command needs a message ID");
  }
  return q;
}

std::vector<uint32_t> AdminTargets(const AdminQuery& query, uint32_t shards) {
  if (query.id) {
    // Shard k also owns the spool directories of former shards k + n * shards.
    return {static_cast<uint32_t>(query.id->shard() % shards)};
  }
  std::vector<uint32_t> all(shards);
  for (uint32_t s = 0; s < shards; ++s) {
    all[s] = s;
  }
  return all;
}

std::string FormatAdminResponse(const AdminQuery& query, const std::vector<AdminAnswer>& answers) {
  for (const AdminAnswer& a : answers) {
    if (!a.error.empty()) {
      return StrCat("ERROR ", a.error, "\n");
    }
  }
  std::string out = "OK\n";
  switch (query.op) {
    case AdminOp::kList:
    case AdminOp::kShow: {
      std::vector<const MessageView*> all;
      for (const AdminAnswer& a : answers) {
        for (const MessageView& m : a.messages) {
          all.push_back(&m);
        }
      }
      std::sort(all.begin(), all.end(), [](auto* x, auto* y) { return x->id < y->id; });
      if (query.op == AdminOp::kShow && all.empty()) {
        return StrCat("ERROR no message ", query.id->ToString(), " in the queue\n");
      }
      if (query.json) {
        out += "[";
        for (size_t i = 0; i < all.size(); ++i) {
          StrAppend(&out, i == 0 ? "\n" : ",\n", MessageJson(*all[i]));
        }
        out += "\n]\n";
        return out;
      }
      if (query.op == AdminOp::kShow) {
        const MessageView& m = *all[0];
        StrAppend(&out, "id: ", m.id, "\nstate: ", m.state, "\nsender: <", m.sender,
                  ">\nsize: ", m.size, "\nattempts: ", m.attempts, "\n");
        if (m.next_attempt_in_ms > 0) {
          StrAppend(&out, "next attempt in: ", m.next_attempt_in_ms / 1000, " s\n");
        }
        if (!m.last_reply.empty()) {
          StrAppend(&out, "last reply: ", m.last_reply, "\n");
        }
        for (const auto& [address, state] : m.recipients) {
          StrAppend(&out, "recipient: <", address, "> ", state, "\n");
        }
        return out;
      }
      StrAppend(&out, Padded("ID", 32), "  ", Padded("STATE", 8), "  ", Padded("SIZE", 9), "  ",
                Padded("SENDER", 28), "  RECIPIENTS / LAST REPLY\n");
      for (const MessageView* m : all) {
        std::string rcpts;
        for (const auto& r : m->recipients) {
          if (r.second == "pending") {
            StrAppend(&rcpts, rcpts.empty() ? "" : ",", r.first);
          }
        }
        StrAppend(&out, m->id, "  ", Padded(m->state, 8), "  ", Padded(StrCat(m->size), 9), "  ",
                  Padded(m->sender.empty() ? "<>" : m->sender, 28), "  ", rcpts, "\n");
        if (!m->last_reply.empty()) {
          StrAppend(&out, Padded("", 32), "  ", m->last_reply, "\n");
        }
      }
      StrAppend(&out, all.size(), " message(s)\n");
      return out;
    }
    case AdminOp::kFlush:
    case AdminOp::kDelete:
    case AdminOp::kBounce:
    case AdminOp::kHold:
    case AdminOp::kRelease: {
      uint32_t affected = 0;
      for (const AdminAnswer& a : answers) {
        affected += a.affected;
      }
      if (query.id && affected == 0) {
        return StrCat("ERROR no message ", query.id->ToString(), " in the queue\n");
      }
      StrAppend(&out, affected, " message(s)\n");
      return out;
    }
    case AdminOp::kStatus: {
      if (query.json) {
        out += "[";
        for (size_t i = 0; i < answers.size(); ++i) {
          const ShardStatus& s = answers[i].status;
          StrAppend(&out, i == 0 ? "\n" : ",\n", "{\"shard\":", s.shard,
                    ",\"connections\":", s.connections, ",\"messages\":", s.messages,
                    ",\"deferred\":", s.deferred, ",\"held\":", s.held,
                    ",\"in_flight\":", s.in_flight, ",\"spool_bytes\":", s.spool_bytes,
                    ",\"segments\":", s.segments, ",\"accepted\":", s.accepted,
                    ",\"delivery_attempts\":", s.delivery_attempts, "}");
        }
        out += "\n]\n";
        return out;
      }
      out += "SHARD  CONNECTIONS  MESSAGES  DEFERRED  HELD  IN-FLIGHT  SPOOL-BYTES  ACCEPTED\n";
      for (const AdminAnswer& a : answers) {
        const ShardStatus& s = a.status;
        StrAppend(&out, Padded(StrCat(s.shard), 5), "  ", Padded(StrCat(s.connections), 11), "  ",
                  Padded(StrCat(s.messages), 8), "  ", Padded(StrCat(s.deferred), 8), "  ",
                  Padded(StrCat(s.held), 4), "  ", Padded(StrCat(s.in_flight), 9), "  ",
                  Padded(StrCat(s.spool_bytes), 11), "  ", s.accepted, "\n");
      }
      return out;
    }
  }
  return "ERROR unreachable\n";
}

}  // namespace relais::relaisd
