// tools/relaisd/transfer_deadline.h — the deadline of one message transfer, and the timers of
// one SMTP session that combine it with the session's own timeout. Pure value types: the clock
// and the load are passed in.

#pragma once

#include <algorithm>
#include <cstdint>

namespace relais::relaisd {

// The deadline of one message transfer (DATA, or all BDAT chunks of one message) with a
// minimum data rate, as Postfix's smtpd_per_request_deadline with smtpd_min_data_rate: the
// transfer starts with `base` ms; every read of n bytes adds n / rate_min s; but the deadline
// never runs more than `base` ms ahead of the read that earned it ("the deadline will never be
// incremented beyond the time limit specified with smtpd_timeout"). The cap is what makes the
// rate hold over a recent window rather than on average since the start: without it, 25 MB
// sent at once earned ~14.5 h at 500 bytes/s, spent a byte at a time just under data_timeout_ms
// while holding the shard's receive budget. With it, credit earned early is lost, and a client
// must keep bringing rate_min bytes a second (a leaky bucket `base` ms deep) to stay.
//
// Two deadlines are kept, one per base (normal and stress), so that the stricter one applies as
// soon as the shard comes under stress, and keeps applying to that transfer (OnStress).
// O(1) per read, no allocation. A pure value type: the clock is passed in.
struct TransferDeadline {
  uint64_t normal_ms = 0;    // Deadline with the normal base.
  uint64_t stress_ms = 0;    // Deadline with the stress base.
  uint64_t credit_rest = 0;  // bytes * 1000 not yet turned into whole ms (below rate_min).

  static TransferDeadline Start(uint64_t now_ms, uint32_t base_ms, uint32_t stress_base_ms) {
    return TransferDeadline{now_ms + base_ms, now_ms + stress_base_ms, 0};
  }

  // `bytes` were read at `now_ms`.
  void OnRead(uint64_t now_ms, uint64_t bytes, uint32_t rate_min, uint32_t base_ms,
              uint32_t stress_base_ms) {
    const uint64_t rate = std::max<uint32_t>(1, rate_min);
    const uint64_t units = credit_rest + bytes * 1000;  // 2^64 / 1000 bytes: no overflow.
    const uint64_t credit_ms = units / rate;
    credit_rest = units % rate;
    // Never lowers a deadline: each was capped at an earlier now + base <= now + base.
    normal_ms = std::min(normal_ms + credit_ms, std::max(normal_ms, now_ms + base_ms));
    stress_ms = std::min(stress_ms + credit_ms, std::max(stress_ms, now_ms + stress_base_ms));
  }

  // The shard was seen under stress during this transfer: the stress deadline holds from now
  // on, even once the load falls. Otherwise cutting the slowest transfers ends the stress and
  // the rest, as slow, keep their slots under the long deadline.
  void OnStress() { normal_ms = std::min(normal_ms, stress_ms); }

  [[nodiscard]] uint64_t At(bool stressed) const { return stressed ? stress_ms : normal_ms; }
};

// The limits of a transfer (ShardOptions' data_deadline_ms, data_deadline_stress_ms and
// data_rate_min).
struct TransferLimits {
  uint32_t base_ms = 300'000;
  uint32_t stress_base_ms = 10'000;
  uint32_t rate_min = 500;  // Bytes per second; at least 1.
};

// When one session's connection must be looked at again: the session's own timeout (command or
// data, RFC 5321 4.5.3.2), and, while a message transfer is under way, its TransferDeadline,
// credited at every read with the bytes read since the last one. The owner arms one timer at
// Update()'s answer and asks Expired() when it fires.
class SessionDeadlines {
 public:
  enum class Expiry : uint8_t { kNone, kTimeout, kTooSlow };

  // After the session moved (bytes read, an answer given, or at the start): `transfer` whether
  // it is in a message transfer now, `bytes_read` its message bytes read so far, `timeout_ms`
  // its own timeout from now, `stressed` whether the shard is under stress. A transfer starts
  // its deadline here and ends it when `transfer` is false. Returns when the timer must fire.
  uint64_t Update(uint64_t now_ms, bool transfer, uint64_t bytes_read, uint64_t timeout_ms,
                  bool stressed, const TransferLimits& limits) {
    if (transfer && !in_transfer_) {
      deadline_ = TransferDeadline::Start(now_ms, limits.base_ms, limits.stress_base_ms);
    } else if (transfer) {
      deadline_.OnRead(now_ms, bytes_read - bytes_seen_, limits.rate_min, limits.base_ms,
                       limits.stress_base_ms);
    }
    if (transfer && stressed) {
      deadline_.OnStress();
    }
    bytes_seen_ = bytes_read;
    in_transfer_ = transfer;
    timeout_at_ms_ = now_ms + timeout_ms;
    return NextAt(stressed);
  }

  // What has expired at `now_ms`: the session's timeout first, else the transfer's deadline
  // (below the minimum data rate, or past the message's deadline).
  [[nodiscard]] Expiry Expired(uint64_t now_ms, bool stressed) const {
    if (now_ms >= timeout_at_ms_) {
      return Expiry::kTimeout;
    }
    if (in_transfer_ && deadline_.At(stressed) <= now_ms) {
      return Expiry::kTooSlow;
    }
    return Expiry::kNone;
  }

  // The earlier of the two; the deadline is stricter under stress.
  [[nodiscard]] uint64_t NextAt(bool stressed) const {
    return in_transfer_ ? std::min(timeout_at_ms_, deadline_.At(stressed)) : timeout_at_ms_;
  }
  [[nodiscard]] bool in_transfer() const { return in_transfer_; }

 private:
  bool in_transfer_ = false;
  uint64_t timeout_at_ms_ = 0;  // When the session's own timeout expires.
  TransferDeadline deadline_;
  uint64_t bytes_seen_ = 0;  // Message bytes already credited to deadline_.
};

}  // namespace relais::relaisd
