// tools/relais-bench/ledger.cc — see ledger.h.
#include "tools/relais-bench/ledger.h"

#include <algorithm>
#include <charconv>

#include "core/base/strings.h"

namespace relais::bench {

using base::StrAppend;
using base::StrCat;

namespace {

constexpr size_t kTokensPerLine = 40;

bool Number(std::string_view text, uint64_t& out) {
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
  return !text.empty() && ec == std::errc() && end == text.data() + text.size();
}

void AppendTokens(std::string& out, std::string_view label,
                  const std::vector<std::string>& tokens) {
  for (size_t i = 0; i < tokens.size(); i += kTokensPerLine) {
    StrAppend(&out, "250-", label);
    for (size_t j = i; j < std::min(tokens.size(), i + kTokensPerLine); ++j) {
      StrAppend(&out, " ", tokens[j]);
    }
    out.append("\r\n");
  }
}

std::string Range(uint64_t first, uint64_t last) {
  return first == last ? StrCat(first) : StrCat(first, "-", last);
}

}  // namespace

uint64_t RunAccount::messages() const {
  return static_cast<uint64_t>(
      std::count_if(deliveries.begin(), deliveries.end(), [](uint16_t n) { return n != 0; }));
}

uint64_t RunAccount::delivered_total() const {
  uint64_t total = 0;
  for (uint16_t n : deliveries) {
    total += n;
  }
  return total;
}

void Ledger::Delivered(std::string_view run, uint64_t seq, uint32_t recipients, uint32_t expected) {
  if (seq >= kSeqMax) {
    ++untracked_;
    return;
  }
  auto it = runs_.find(run);
  if (it == runs_.end()) {
    it = runs_.emplace(std::string(run), RunAccount{}).first;
  }
  RunAccount& account = it->second;
  if (seq >= account.deliveries.size()) {
    account.deliveries.resize(std::max<uint64_t>(seq + 1, account.deliveries.size() * 2), 0);
  }
  uint16_t& n = account.deliveries[seq];
  const uint32_t before = n;
  const uint32_t after = std::min<uint32_t>(before + recipients, UINT16_MAX);
  n = static_cast<uint16_t>(after);
  // Only the part above the message's recipient count is a duplicate.
  account.duplicates += std::max(after, expected) - std::max(before, expected);
}

void Ledger::Dropped(std::string_view run, uint64_t seq) {
  auto it = runs_.find(run);
  if (it == runs_.end()) {
    it = runs_.emplace(std::string(run), RunAccount{}).first;
  }
  std::vector<uint64_t>& dropped = it->second.dropped;
  const auto at = std::lower_bound(dropped.begin(), dropped.end(), seq);
  if (at == dropped.end() || *at != seq) {
    dropped.insert(at, seq);
  }
}

std::string Ledger::StatReply(std::string_view run) const {
  static const RunAccount kEmpty;
  const auto it = runs_.find(run);
  const RunAccount& account = it == runs_.end() ? kEmpty : it->second;
  std::string out =
      StrCat("250-run ", run, "\r\n250-messages ", account.messages(), "\r\n250-deliveries ",
             account.delivered_total(), "\r\n250-duplicates ", account.duplicates, "\r\n");
  std::vector<std::string> tokens;
  const std::vector<uint16_t>& d = account.deliveries;
  for (uint64_t i = 0; i < d.size();) {
    uint64_t j = i;
    while (j + 1 < d.size() && d[j + 1] == d[i]) {
      ++j;
    }
    if (d[i] != 0) {
      tokens.push_back(StrCat(Range(i, j), ":", d[i]));
    }
    i = j + 1;
  }
  AppendTokens(out, "received", tokens);
  tokens.clear();
  const std::vector<uint64_t>& dropped = account.dropped;
  for (size_t i = 0; i < dropped.size();) {
    size_t j = i;
    while (j + 1 < dropped.size() && dropped[j + 1] == dropped[j] + 1) {
      ++j;
    }
    tokens.push_back(Range(dropped[i], dropped[j]));
    i = j + 1;
  }
  AppendTokens(out, "dropped", tokens);
  out.append("250 end\r\n");
  return out;
}

absl::StatusOr<RunAccount> ParseStatReply(std::string_view reply) {
  RunAccount account;
  bool ended = false;
  while (!reply.empty() && !ended) {
    size_t eol = reply.find("\r\n");
    if (eol == std::string_view::npos) {
      eol = reply.size();
    }
    const std::string_view line = reply.substr(0, eol);
    reply.remove_prefix(std::min(reply.size(), eol + 2));
    if (line.size() < 4 || !line.starts_with("250")) {
      return absl::InvalidArgumentError(StrCat("XSTAT: unexpected reply line '", line, "'"));
    }
    ended = line[3] == ' ';
    std::string_view rest = line.substr(4);
    const size_t space = rest.find(' ');
    const std::string_view key = rest.substr(0, space);
    rest = space == std::string_view::npos ? "" : rest.substr(space + 1);
    auto bad = [&] {
      return absl::InvalidArgumentError(StrCat("XSTAT: cannot read '", line, "'"));
    };
    if (key == "duplicates") {
      if (!Number(rest, account.duplicates)) {
        return bad();
      }
      continue;
    }
    if (key != "received" && key != "dropped") {
      continue;  // run, messages, deliveries, end: derived or informational.
    }
    while (!rest.empty()) {
      const size_t end = rest.find(' ');
      std::string_view token = rest.substr(0, end);
      rest = end == std::string_view::npos ? "" : rest.substr(end + 1);
      uint64_t count = 1;
      if (key == "received") {
        const size_t colon = token.find(':');
        if (colon == std::string_view::npos || !Number(token.substr(colon + 1), count) ||
            count == 0 || count > UINT16_MAX) {
          return bad();
        }
        token = token.substr(0, colon);
      }
      const size_t dash = token.find('-');
      uint64_t first = 0;
      uint64_t last = 0;
      if (!Number(token.substr(0, dash), first) ||
          !Number(dash == std::string_view::npos ? token : token.substr(dash + 1), last) ||
          last < first || last >= kSeqMax) {
        return bad();
      }
      if (key == "received") {
        if (account.deliveries.size() <= last) {
          account.deliveries.resize(last + 1, 0);
        }
        std::fill(account.deliveries.begin() + static_cast<ptrdiff_t>(first),
                  account.deliveries.begin() + static_cast<ptrdiff_t>(last) + 1,
                  static_cast<uint16_t>(count));
      } else {
        for (uint64_t s = first; s <= last; ++s) {
          account.dropped.push_back(s);
        }
      }
    }
  }
  if (!ended) {
    return absl::InvalidArgumentError("XSTAT: reply ended early");
  }
  return account;
}

}  // namespace relais::bench
