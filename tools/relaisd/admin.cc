#include "tools/relaisd/admin.h"

#include <algorithm>
#include <cstdio>
#include <unordered_map>

#include "core/base/strings.h"
#include "core/log/log.h"

namespace relais::relaisd {
namespace {

using base::StrAppend;
using base::StrCat;

std::string Json(std::string_view s) { return log::JsonString(s); }

std::string MessageJson(const MessageView& m) {
  std::string out = StrCat(
      "{\"id\":", Json(m.id), ",\"state\":", Json(m.state), ",\"sender\":", Json(m.sender),
      ",\"size\":", m.size, ",\"received_us\":", m.received_us, ",\"attempts\":", m.attempts,
      ",\"next_attempt_in_ms\":", m.next_attempt_in_ms, ",\"last_reply\":", Json(m.last_reply),
      ",\"destination\":", Json(m.destination), ",\"recipients\":[");
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

std::string PaddedLeft(std::string_view s, size_t width) {
  std::string out;
  if (s.size() < width) {
    out.append(width - s.size(), ' ');
  }
  out += s;
  return out;
}

// Worse states sort higher: suspended, then backing off, then active.
int Severity(delivery::DestinationState state) {
  switch (state) {
    case delivery::DestinationState::kActive:
      return 0;
    case delivery::DestinationState::kBackingOff:
      return 1;
    case delivery::DestinationState::kSuspended:
      return 2;
  }
  return 0;
}

std::string_view StateName(delivery::DestinationState state) {
  return delivery::kDestinationStateNames[static_cast<size_t>(state)];
}

// How long a suspension still runs: 0 when not suspended, -1 until resumed (no end, or one
// past ten years).
int64_t SuspendedForMs(const delivery::DestinationView& d, uint64_t now_ms) {
  constexpr uint64_t kDecadeMs = 3660ull * 86'400'000;
  if (d.state != delivery::DestinationState::kSuspended || d.suspended_until_ms <= now_ms) {
    return 0;
  }
  const uint64_t left = d.suspended_until_ms - now_ms;
  return left > kDecadeMs ? -1 : static_cast<int64_t>(left);
}

std::string RateText(const delivery::Rate& rate) { return rate.count == 0 ? "-" : rate.ToString(); }

std::string DestinationJson(const delivery::DestinationView& d, uint64_t now_ms) {
  return StrCat(
      "{\"key\":", Json(d.key), ",\"name\":", Json(d.name), ",\"domain\":", Json(d.domain),
      ",\"state\":", Json(StateName(d.state)), ",\"reason\":", Json(d.reason),
      ",\"suspended_for_ms\":", SuspendedForMs(d, now_ms), ",\"connections\":", d.connections,
      ",\"connections_allowed\":", d.connections_allowed,
      ",\"connections_max\":", d.configured.connections_max,
      ",\"rate_allowed\":", Json(d.rate_allowed.count == 0 ? "0" : d.rate_allowed.ToString()),
      ",\"rate\":", Json(d.configured.rate.count == 0 ? "0" : d.configured.rate.ToString()),
      ",\"in_flight\":", d.in_flight, ",\"queued\":", d.queued, ",\"delivered\":", d.delivered,
      ",\"deferred\":", d.deferred, ",\"failed\":", d.failed, ",\"backoffs\":", d.backoffs,
      ",\"last_reply\":", Json(d.last_reply), "}");
}

// sum += rate, in sum's unit (rounded down) unless sum is no rate yet.
void AddRate(delivery::Rate& sum, const delivery::Rate& rate) {
  if (sum.count == 0 || sum.per_ms == 0) {
    sum = rate;
  } else if (rate.per_ms != 0) {
    sum.count = static_cast<uint32_t>(sum.count +
                                      static_cast<uint64_t>(rate.count) * sum.per_ms / rate.per_ms);
  }
}

std::string FormatSummary(const AdminQuery& query, const std::vector<AdminAnswer>& answers) {
  const std::vector<uint64_t> bounds = SummaryBucketBoundsMs();
  std::vector<SummaryRow> rows;
  std::unordered_map<std::string, size_t> by_key;
  SummaryRow total;
  total.name = "TOTAL";
  total.buckets.assign(bounds.size() + 1, 0);
  for (const AdminAnswer& a : answers) {
    for (const SummaryRow& r : a.summary) {
      auto [it, inserted] = by_key.try_emplace(r.key, rows.size());
      if (inserted) {
        SummaryRow row;
        row.key = r.key;
        row.name = r.name;
        row.buckets.assign(bounds.size() + 1, 0);
        rows.push_back(std::move(row));
      }
      SummaryRow& row = rows[it->second];
      row.total += r.total;
      total.total += r.total;
      for (size_t b = 0; b < row.buckets.size() && b < r.buckets.size(); ++b) {
        row.buckets[b] += r.buckets[b];
        total.buckets[b] += r.buckets[b];
      }
    }
  }
  std::sort(rows.begin(), rows.end(), [](const SummaryRow& x, const SummaryRow& y) {
    return x.total != y.total ? x.total > y.total : x.key < y.key;
  });
  std::string out = "OK\n";
  if (query.json) {
    out += "{\"bucket_bounds_minutes\":[";
    for (size_t b = 0; b < bounds.size(); ++b) {
      StrAppend(&out, b == 0 ? "" : ",", bounds[b] / 60'000);
    }
    auto row_json = [](const SummaryRow& r) {
      std::string j = StrCat("{\"key\":", Json(r.key), ",\"name\":", Json(r.name),
                             ",\"total\":", r.total, ",\"buckets\":[");
      for (size_t b = 0; b < r.buckets.size(); ++b) {
        StrAppend(&j, b == 0 ? "" : ",", r.buckets[b]);
      }
      return j + "]}";
    };
    StrAppend(&out, "],\"total\":", row_json(total), ",\"rows\":[");
    for (size_t i = 0; i < rows.size(); ++i) {
      StrAppend(&out, i == 0 ? "\n" : ",\n", row_json(rows[i]));
    }
    out += "\n]}\n";
    return out;
  }
  // qshape's layout: a TOTAL row, then one per destination; columns T (all), then the
  // messages younger than 5, 10, 20 ... 1280 minutes, and older.
  size_t width = 16;
  for (const SummaryRow& r : rows) {
    width = std::max(width, std::min<size_t>(r.name.size(), 48));
  }
  StrAppend(&out, Padded("", width), PaddedLeft("T", 8));
  for (uint64_t bound : bounds) {
    StrAppend(&out, PaddedLeft(StrCat(bound / 60'000), 7));
  }
  StrAppend(&out, PaddedLeft(StrCat(bounds.back() / 60'000, "+"), 7), "\n");
  auto row_text = [&](const SummaryRow& r) {
    StrAppend(&out, Padded(r.name, width), PaddedLeft(StrCat(r.total), 8));
    for (uint64_t n : r.buckets) {
      StrAppend(&out, PaddedLeft(StrCat(n), 7));
    }
    out += "\n";
  };
  row_text(total);
  for (const SummaryRow& r : rows) {
    row_text(r);
  }
  return out;
}

std::string FormatDestinations(const AdminQuery& query, const std::vector<AdminAnswer>& answers) {
  if (std::all_of(answers.begin(), answers.end(),
                  [](const AdminAnswer& a) { return a.no_destinations; })) {
    return "ERROR this daemon keeps no destinations (no delivery by MX)\n";
  }
  const std::vector<delivery::DestinationView> all = MergeDestinations(answers);
  uint64_t now_ms = 0;
  for (const AdminAnswer& a : answers) {
    now_ms = std::max(now_ms, a.now_ms);
  }
  if (query.op == AdminOp::kDestShow && all.empty()) {
    return StrCat("ERROR no destination ", query.destination, "\n");
  }
  std::string out = "OK\n";
  if (query.json) {
    if (query.op == AdminOp::kDestShow) {
      return StrCat(out, DestinationJson(all[0], now_ms), "\n");
    }
    out += "[";
    for (size_t i = 0; i < all.size(); ++i) {
      StrAppend(&out, i == 0 ? "\n" : ",\n", DestinationJson(all[i], now_ms));
    }
    out += "\n]\n";
    return out;
  }
  if (query.op == AdminOp::kDestShow) {
    const delivery::DestinationView& d = all[0];
    StrAppend(&out, "key: ", d.key, "\nname: ", d.name, "\ndomain: ", d.domain,
              "\nstate: ", StateName(d.state), "\n");
    if (!d.reason.empty()) {
      StrAppend(&out, "reason: ", d.reason, "\n");
    }
    if (const int64_t ms = SuspendedForMs(d, now_ms); ms > 0) {
      StrAppend(&out, "suspended for: ", (ms + 999) / 1000, " s\n");
    } else if (ms < 0) {
      StrAppend(&out, "suspended until resumed\n");
    }
    StrAppend(&out, "connections: ", d.connections, " open, ", d.connections_allowed, " allowed, ",
              d.configured.connections_max, " configured\n", "rate: ", RateText(d.rate_allowed),
              " allowed, ", RateText(d.configured.rate), " configured\n",
              "messages per connection: ", d.configured.messages_per_connection_max,
              "\nrecipients per transaction: ", d.configured.recipients_per_transaction_max,
              "\nin flight: ", d.in_flight, "\nqueued: ", d.queued, "\ndelivered: ", d.delivered,
              "\ndeferred: ", d.deferred, "\nfailed: ", d.failed, "\nbackoffs: ", d.backoffs, "\n");
    if (!d.last_reply.empty()) {
      StrAppend(&out, "last reply: ", d.last_reply, "\n");
    }
    return out;
  }
  size_t width = 16;
  for (const delivery::DestinationView& d : all) {
    width = std::max(width, std::min<size_t>(d.name.size(), 48));
  }
  StrAppend(&out, Padded("NAME", width), "  ", Padded("STATE", 11), "  ", PaddedLeft("CONN", 7),
            "  ", PaddedLeft("RATE", 9), "  ", PaddedLeft("IN-FLIGHT", 9), "  ",
            PaddedLeft("QUEUED", 8), "  ", PaddedLeft("DELIVERED", 9), "  ",
            PaddedLeft("DEFERRED", 8), "  ", PaddedLeft("FAILED", 7), "  REASON\n");
  for (const delivery::DestinationView& d : all) {
    StrAppend(&out, Padded(d.name.empty() ? d.key : d.name, width), "  ",
              Padded(StateName(d.state), 11), "  ",
              PaddedLeft(StrCat(d.connections, "/", d.connections_allowed), 7), "  ",
              PaddedLeft(RateText(d.rate_allowed), 9), "  ", PaddedLeft(StrCat(d.in_flight), 9),
              "  ", PaddedLeft(StrCat(d.queued), 8), "  ", PaddedLeft(StrCat(d.delivered), 9), "  ",
              PaddedLeft(StrCat(d.deferred), 8), "  ", PaddedLeft(StrCat(d.failed), 7), "  ",
              d.reason, "\n");
  }
  StrAppend(&out, all.size(), " destination(s)\n");
  return out;
}

}  // namespace

std::vector<delivery::DestinationView> MergeDestinations(const std::vector<AdminAnswer>& answers) {
  std::vector<delivery::DestinationView> all;
  std::unordered_map<std::string, size_t> by_key;
  for (const AdminAnswer& a : answers) {
    for (const delivery::DestinationView& d : a.destinations) {
      auto [it, inserted] = by_key.try_emplace(d.key, all.size());
      if (inserted) {
        all.push_back(d);
        continue;
      }
      delivery::DestinationView& m = all[it->second];
      if (Severity(d.state) > Severity(m.state)) {
        m.state = d.state;
        m.reason = d.reason;
      }
      m.suspended_until_ms = std::max(m.suspended_until_ms, d.suspended_until_ms);
      // Each shard has its share of the limits: the destination's are their sums.
      m.configured.connections_max += d.configured.connections_max;
      AddRate(m.configured.rate, d.configured.rate);
      AddRate(m.rate_allowed, d.rate_allowed);
      m.connections_allowed += d.connections_allowed;
      m.in_flight += d.in_flight;
      m.connections += d.connections;
      m.queued += d.queued;
      m.delivered += d.delivered;
      m.deferred += d.deferred;
      m.failed += d.failed;
      m.backoffs += d.backoffs;
      if (m.last_reply.empty()) {
        m.last_reply = d.last_reply;
      }
    }
  }
  std::sort(all.begin(), all.end(), [](const auto& x, const auto& y) {
    return x.queued != y.queued ? x.queued > y.queued : x.key < y.key;
  });
  return all;
}

std::vector<uint64_t> SummaryBucketBoundsMs() {
  std::vector<uint64_t> bounds;
  for (uint64_t minutes = 5; minutes <= 1280; minutes *= 2) {
    bounds.push_back(minutes * 60'000);
  }
  return bounds;
}

std::optional<uint64_t> ParseAdminDuration(std::string_view text) {
  size_t digits = 0;
  uint64_t n = 0;
  while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9' && digits < 9) {
    n = n * 10 + static_cast<uint64_t>(text[digits] - '0');
    ++digits;
  }
  const std::string_view unit = text.substr(digits);
  uint64_t unit_ms = 0;
  if (unit == "s") {
    unit_ms = 1000;
  } else if (unit == "m") {
    unit_ms = 60'000;
  } else if (unit == "h") {
    unit_ms = 3'600'000;
  } else if (unit == "d") {
    unit_ms = 86'400'000;
  }
  constexpr uint64_t kYearMs = 366ull * 86'400'000;
  if (digits == 0 || unit_ms == 0 || n > kYearMs / unit_ms) {
    return std::nullopt;
  }
  return n * unit_ms;
}

absl::StatusOr<AdminQuery> ParseAdminRequest(std::string_view line) {
  // Words and where they start (reason= takes the rest of the line).
  std::vector<std::pair<std::string_view, size_t>> words;
  for (size_t pos = 0; pos < line.size();) {
    const size_t end = std::min(line.find(' ', pos), line.size());
    if (end > pos) {
      words.emplace_back(line.substr(pos, end - pos), pos);
    }
    pos = end + 1;
  }
  AdminQuery q;
  if (words.empty()) {
    return absl::InvalidArgumentError("empty request");
  }
  // Client text ends up in answers and log lines: printable ASCII only, bounded. The error
  // never echoes the offending bytes.
  for (const auto& [w, pos] : words) {
    if (w.starts_with("reason=")) {
      break;  // Checked below, with the rest of the line.
    }
    if (w.size() > kAdminWordBytesMax) {
      return absl::InvalidArgumentError(
          StrCat("a word is longer than ", kAdminWordBytesMax, " bytes"));
    }
    if (std::any_of(w.begin(), w.end(), [](char c) { return c < 0x21 || c > 0x7e; })) {
      return absl::InvalidArgumentError("only printable ASCII is understood");
    }
  }
  const std::string_view word0 = words[0].first;
  const std::string_view verb = words.size() >= 2 ? words[1].first : "";
  size_t i = 2;
  if (word0 == "status") {
    q.op = AdminOp::kStatus;
    i = 1;
  } else if (word0 == "queue" && words.size() >= 2) {
    if (verb == "ls") {
      q.op = AdminOp::kList;
    } else if (verb == "show") {
      q.op = AdminOp::kShow;
    } else if (verb == "summary") {
      q.op = AdminOp::kSummary;
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
  } else if (word0 == "dest" && words.size() >= 2) {
    if (verb == "ls") {
      q.op = AdminOp::kDestList;
    } else if (verb == "show") {
      q.op = AdminOp::kDestShow;
    } else if (verb == "suspend") {
      q.op = AdminOp::kDestSuspend;
    } else if (verb == "resume") {
      q.op = AdminOp::kDestResume;
    } else {
      return absl::InvalidArgumentError(StrCat("unknown dest command '", verb, "'"));
    }
  } else {
    return absl::InvalidArgumentError(StrCat("unknown command '", word0, "'"));
  }
  const bool dest_one =
      q.op == AdminOp::kDestShow || q.op == AdminOp::kDestSuspend || q.op == AdminOp::kDestResume;
  for (; i < words.size(); ++i) {
    const std::string_view w = words[i].first;
    if (w == "json") {
      q.json = true;
    } else if (q.op == AdminOp::kList && w.starts_with("state=")) {
      q.state = w.substr(6);
      // ready and in-flight are the words of relaisctl's MX-era help; queued and active the
      // states MessageView shows.
      if (q.state == "ready") {
        q.state = "queued";
      } else if (q.state == "in-flight") {
        q.state = "active";
      }
      if (q.state != "queued" && q.state != "deferred" && q.state != "held" &&
          q.state != "active") {
        return absl::InvalidArgumentError(
            "state must be ready, deferred, held or in-flight (or queued, active)");
      }
    } else if (q.op == AdminOp::kList && w.starts_with("domain=")) {
      q.domain = base::AsciiStrToLower(w.substr(7));
    } else if (q.op == AdminOp::kList && w.starts_with("sender=")) {
      q.sender = w.substr(7);
    } else if (q.op == AdminOp::kList && w.starts_with("destination=")) {
      q.destination = w.substr(12);
    } else if (q.op == AdminOp::kList && w.starts_with("older-than=")) {
      const auto ms = ParseAdminDuration(w.substr(11));
      if (!ms) {
        return absl::InvalidArgumentError("older-than must be a number and s, m, h or d");
      }
      q.older_than_ms = *ms;
    } else if (q.op == AdminOp::kDestSuspend && w.starts_with("for=")) {
      const auto ms = ParseAdminDuration(w.substr(4));
      if (!ms || *ms == 0) {
        return absl::InvalidArgumentError("for must be a number and s, m, h or d");
      }
      q.duration_ms = *ms;
    } else if (q.op == AdminOp::kDestSuspend && w.starts_with("reason=")) {
      const std::string_view reason = line.substr(words[i].second + 7);
      if (reason.size() > kAdminReasonBytesMax) {
        return absl::InvalidArgumentError(
            StrCat("reason is longer than ", kAdminReasonBytesMax, " bytes"));
      }
      if (std::any_of(reason.begin(), reason.end(), [](char c) { return c < 0x20 || c > 0x7e; })) {
        return absl::InvalidArgumentError("only printable ASCII is understood");
      }
      q.reason = reason;
      break;  // The rest of the line.
    } else if (dest_one && q.destination.empty()) {
      q.destination = w;
    } else if (q.op != AdminOp::kList && q.op != AdminOp::kStatus && q.op != AdminOp::kSummary &&
               q.op != AdminOp::kDestList && !dest_one && !q.id && q.domain.empty()) {
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
  if (dest_one && q.destination.empty()) {
    return absl::InvalidArgumentError("this command needs a destination key or name");
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
    case AdminOp::kSummary:
      return FormatSummary(query, answers);
    case AdminOp::kDestList:
    case AdminOp::kDestShow:
      return FormatDestinations(query, answers);
    case AdminOp::kDestSuspend:
    case AdminOp::kDestResume: {
      if (std::all_of(answers.begin(), answers.end(),
                      [](const AdminAnswer& a) { return a.no_destinations; })) {
        return "ERROR this daemon keeps no destinations (no delivery by MX)\n";
      }
      uint32_t affected = 0;
      for (const AdminAnswer& a : answers) {
        affected += a.affected;
      }
      if (affected == 0) {
        return StrCat("ERROR no destination ", query.destination, "\n");
      }
      StrAppend(&out, query.op == AdminOp::kDestSuspend ? "suspended" : "resumed", " on ", affected,
                " shard(s)\n");
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
