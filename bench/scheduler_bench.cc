// bench/scheduler_bench.cc — the scheduler at scale (issue #16, queue views): its memory per
// queued message and the time of Summary (relaisctl queue summary) with 1 000 000 messages
// queued over 100 000 destinations. Not a test: run by hand, figures in bench/RESULTS.md.
//   build/bench/relais_scheduler_bench --benchmark_repetitions=3
// RELAIS_BENCH_MESSAGES and RELAIS_BENCH_DESTINATIONS change the sizes. The spool (in a
// temporary directory, bodies not kept in memory) is filled once, before the first benchmark;
// received times are spread over about two days (a fake clock) so that every age bucket fills.
// Memory is what the C library's allocator says is in use (mallinfo2) before and after the
// scheduler is filled: this binary does not link mimalloc.
#include <benchmark/benchmark.h>
#include <malloc.h>
#include <stdlib.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "core/base/clock.h"
#include "core/base/random.h"
#include "core/io/posix_io.h"
#include "queue/scheduler/scheduler.h"
#include "queue/spool/spool.h"

namespace relais {
namespace {

uint64_t FromEnv(const char* name, uint64_t fallback) {
  const char* value = getenv(name);
  return value != nullptr ? std::strtoull(value, nullptr, 10) : fallback;
}

size_t HeapInUse() { return mallinfo2().uordblks; }

// One spool holding every message, filled once.
struct World {
  World() {
    char tmpl[] = "/tmp/relais-scheduler-bench-XXXXXX";
    if (mkdtemp(tmpl) == nullptr) {
      abort();
    }
    dir = tmpl;
    spool::SpoolOptions options;
    options.path = dir;
    options.body_memory_bytes_max = 0;
    auto opened = spool::Spool::Open(options, io, clock);
    if (!opened.ok() || !(*opened)->Recover().ok()) {
      abort();
    }
    spool = std::move(*opened);
    struct Done final : spool::AppendCompletion {
      void OnAppendDone(spool::AppendOutcome, const mail::MessageId&) override {}
    } done;
    ids.reserve(messages);
    for (uint64_t i = 0; i < messages; ++i) {
      mail::Envelope e;
      e.sender = "a@sender.example";
      e.recipients.push_back({"r@example.com"});
      const mail::MessageId id = spool->NewMessageId();
      if (spool->Append(id, std::move(e), "", "Subject: x\r\n\r\nbody\r\n", done) !=
          spool::AppendStatus::kStaged) {
        abort();
      }
      ids.push_back(id);
      clock.AdvanceMs(170);  // 1 000 000 messages over about 47 hours.
      if (i % 4096 == 4095) {
        Sync();
      }
    }
    Sync();
  }
  ~World() {
    spool.reset();
    std::filesystem::remove_all(dir);
  }
  void Sync() {
    spool->Flush();
    while (io.RunCompletions() > 0) {
    }
  }
  // A scheduler with every message queued, message i for destination i % destinations + 1.
  std::unique_ptr<scheduler::Scheduler> Fill() {
    auto s = std::make_unique<scheduler::Scheduler>(scheduler::SchedulerOptions{}, *spool, clock,
                                                    random);
    for (uint64_t i = 0; i < ids.size(); ++i) {
      s->Enqueue(ids[i]);
      s->SetDestination(ids[i], static_cast<uint32_t>(i % destinations + 1));
    }
    return s;
  }

  const uint64_t messages = FromEnv("RELAIS_BENCH_MESSAGES", 1'000'000);
  const uint64_t destinations = FromEnv("RELAIS_BENCH_DESTINATIONS", 100'000);
  std::string dir;
  io::PosixIo io;
  base::FakeClock clock;
  base::Random random{7};
  std::unique_ptr<spool::Spool> spool;
  std::vector<mail::MessageId> ids;
};

World& TheWorld() {
  static World* world = new World();  // Lives until exit: the spool is shared by benchmarks.
  return *world;
}

std::vector<uint64_t> QshapeBounds() {
  std::vector<uint64_t> bounds;
  for (uint64_t minutes = 5; minutes <= 1280; minutes *= 2) {
    bounds.push_back(minutes * 60'000);
  }
  return bounds;
}

// Heap bytes per ready message (its entry, its queue links, its share of the destinations'
// queues), and the time to fill.
void BM_SchedulerMemoryReady(benchmark::State& state) {
  World& world = TheWorld();
  for (auto _ : state) {
    const size_t before = HeapInUse();
    auto s = world.Fill();
    const size_t after = HeapInUse();
    state.counters["bytes_per_message"] =
        static_cast<double>(after - before) / static_cast<double>(world.messages);
    state.counters["ready"] = static_cast<double>(s->ready());
  }
}
BENCHMARK(BM_SchedulerMemoryReady)->Iterations(1)->Unit(benchmark::kMillisecond);

// The same with every message deferred (each attempted once and deferred: the retry set).
void BM_SchedulerMemoryDeferred(benchmark::State& state) {
  World& world = TheWorld();
  for (auto _ : state) {
    const size_t before = HeapInUse();
    auto s = world.Fill();
    std::vector<scheduler::RecipientResult> deferred(
        1, {delivery::Outcome::kDeferred, 451, "4.4.1", "no answer"});
    uint64_t n = 0;
    while (auto attempt = s->Next()) {
      s->Finish(*attempt, deferred);
      if (++n % 4096 == 0) {
        world.Sync();  // The deferral records, group-committed as a shard would.
      }
    }
    world.Sync();
    const size_t after = HeapInUse();
    state.counters["bytes_per_message"] =
        static_cast<double>(after - before) / static_cast<double>(world.messages);
    state.counters["deferred"] = static_cast<double>(s->deferred());
  }
}
BENCHMARK(BM_SchedulerMemoryDeferred)->Iterations(1)->Unit(benchmark::kMillisecond);

// relaisctl queue summary on one shard: destinations × the qshape age buckets.
void BM_SchedulerSummary(benchmark::State& state) {
  World& world = TheWorld();
  auto s = world.Fill();
  size_t rows = 0;
  for (auto _ : state) {
    const scheduler::QueueSummary summary = s->Summary(QshapeBounds());
    rows = summary.rows.size();
    benchmark::DoNotOptimize(rows);
  }
  state.counters["rows"] = static_cast<double>(rows);
  state.counters["messages"] = static_cast<double>(world.messages);
}
BENCHMARK(BM_SchedulerSummary)->Unit(benchmark::kMillisecond);

// Next then Requeue, round robin over the destinations, gate-less: the cost of taking an
// attempt from a full queue (Requeue puts it back, so the queue stays full).
void BM_SchedulerNextRequeue(benchmark::State& state) {
  World& world = TheWorld();
  auto s = world.Fill();
  uint64_t n = 0;
  for (auto _ : state) {
    auto attempt = s->Next();
    if (!attempt) {
      state.SkipWithError("queue drained");
      break;
    }
    s->Requeue(*attempt, attempt->destination);
    ++n;
  }
  state.SetItemsProcessed(static_cast<int64_t>(n));
}
BENCHMARK(BM_SchedulerNextRequeue);

}  // namespace
}  // namespace relais

BENCHMARK_MAIN();
