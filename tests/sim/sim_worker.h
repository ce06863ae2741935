// tests/sim/sim_worker.h — the delivery worker thread of a shard, run in line: the simulations'
// delivery::BlockingWork. Jobs wait until the simulation runs them (as the real worker runs
// them when it gets to them) through the real blocking code (queue/delivery/blocking.h) over
// the simulated disk, and each result goes back the way the shard hands it over
// (Delivery::OnWorkerDone). Test support only; one thread.
#pragma once

#include <cstddef>
#include <deque>
#include <memory>
#include <string>
#include <utility>

#include "core/base/clock.h"
#include "core/io/io.h"
#include "queue/delivery/blocking.h"
#include "queue/delivery/delivery.h"
#include "queue/maildir/maildir.h"

namespace relais::sim {

class SimWorker final : public delivery::BlockingWork {
 public:
  SimWorker(io::Io& io, const base::Clock& clock) : io_(io), clock_(clock), deliverer_(io) {}

  void Submit(std::unique_ptr<delivery::Job> job) override { jobs_.push_back(std::move(job)); }

  // Runs every job waiting, in order, and hands each result to `done`. Returns how many ran.
  template <typename Done>
  size_t Run(Done&& done) {
    size_t ran = 0;
    while (!jobs_.empty()) {
      std::unique_ptr<delivery::Job> job = std::move(jobs_.front());
      jobs_.pop_front();
      std::string lines;
      done(delivery::RunBlocking(
          std::move(job), deliverer_, io_, clock_, 0, [] { return std::string("seed"); }, lines));
      ++ran;
    }
    return ran;
  }
  // The program died: the jobs in hand die with it.
  void Crashed() { jobs_.clear(); }
  [[nodiscard]] size_t waiting() const { return jobs_.size(); }

 private:
  io::Io& io_;
  const base::Clock& clock_;
  maildir::Deliverer deliverer_;
  std::deque<std::unique_ptr<delivery::Job>> jobs_;
};

}  // namespace relais::sim
