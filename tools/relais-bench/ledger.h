// tools/relais-bench/ledger.h — what a sink received, by run and sequence number, and the
// XSTAT text that carries it back to `relais-bench send`.
//
// send numbers its messages 0, 1, 2, ... within a run and writes "RUN SEQ RCPTS" in the
// tracking header; the sink counts recipient deliveries per sequence number. Comparing that
// with what send saw acknowledged gives lost (acknowledged, never arrived), duplicated
// (arrived more often than it had recipients) and dropped (cut mid-DATA by the sink on purpose)
// messages. Sequence numbers above kSeqMax are counted as untracked, which bounds the memory a
// run can make the sink hold (2 bytes per message).
//
// XSTAT reply lines (after "250-"): "run RUN", "messages N", "deliveries N", "duplicates N",
// "received A-B:n C:n ..." (runs of equal delivery counts, several lines when long),
// "dropped A-B C ...", then "250 end".
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace relais::bench {

inline constexpr uint64_t kSeqMax = 64'000'000;

// One run's account, on either side of XSTAT.
struct RunAccount {
  std::vector<uint16_t> deliveries;  // By sequence number.
  std::vector<uint64_t> dropped;     // Sorted, unique.
  uint64_t duplicates = 0;           // Deliveries beyond each message's recipient count.
  [[nodiscard]] uint64_t messages() const;
  [[nodiscard]] uint64_t delivered_total() const;
  [[nodiscard]] uint16_t DeliveriesOf(uint64_t seq) const {
    return seq < deliveries.size() ? deliveries[seq] : 0;
  }
};

class Ledger {
 public:
  // Deliveries to `recipients` recipients of message `seq` of `run`, which had `expected`.
  void Delivered(std::string_view run, uint64_t seq, uint32_t recipients, uint32_t expected);
  void Dropped(std::string_view run, uint64_t seq);
  void Untracked() { ++untracked_; }
  [[nodiscard]] std::string StatReply(std::string_view run) const;
  [[nodiscard]] const std::map<std::string, RunAccount, std::less<>>& runs() const { return runs_; }
  [[nodiscard]] uint64_t untracked() const { return untracked_; }

 private:
  std::map<std::string, RunAccount, std::less<>> runs_;
  uint64_t untracked_ = 0;
};

// Reads an XSTAT reply (the full text, CRLF lines) back into an account.
[[nodiscard]] absl::StatusOr<RunAccount> ParseStatReply(std::string_view reply);

}  // namespace relais::bench
