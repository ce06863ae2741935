// tools/relaisd/transfer_deadline.h — the deadline of one message transfer.

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

}  // namespace relais::relaisd
