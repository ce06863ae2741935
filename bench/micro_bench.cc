// bench/micro_bench.cc — Google Benchmark programs for the hot paths of one message, each
// named for what a regression would mean. Run from a Release build:
//   build-rel/bench/relais_micro_bench --benchmark_repetitions=5 --benchmark_report_aggregates_only
// These are for comparing commits on one machine, never for asserting timings in tests.
#include <benchmark/benchmark.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "core/io/posix_io.h"
#include "core/mail/ip_network.h"
#include "core/ring/spsc_ring.h"
#include "protocols/smtp/client_session.h"
#include "protocols/smtp/server_session.h"
#include "queue/routing/router.h"
#include "queue/spool/spool.h"

namespace relais {
namespace {

std::string Body(size_t bytes) {
  std::string body = "Subject: benchmark\r\nFrom: a@b.example\r\n\r\n";
  const std::string line = std::string(76, 'x') + "\r\n";
  while (body.size() < bytes) {
    body += line;
  }
  return body;
}

// SMTP server parsing and DATA scanning, a whole pipelined transaction per iteration. A drop
// in bytes/s means every accepted message costs more CPU on the shard.
void BM_SmtpServerTransaction(benchmark::State& state) {
  smtp::SessionOptions options;
  options.hostname = "bench.example";
  const mail::IpAddress client = *mail::IpAddress::Parse("192.0.2.1");
  const std::string input =
      "EHLO client.example\r\nMAIL FROM:<a@b.example> SIZE=100000\r\n"
      "RCPT TO:<c@d.example>\r\nDATA\r\n" +
      Body(static_cast<size_t>(state.range(0))) + ".\r\nQUIT\r\n";
  for (auto _ : state) {
    smtp::ServerSession session(options, client);
    session.Start();
    session.Feed(input);
    while (session.TakeCommitRequest()) {
      session.CompleteCommit(smtp::CommitOutcome::kDurable, mail::MessageId::Make(1, 0, 1));
    }
    benchmark::DoNotOptimize(session.PendingOutput().size());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * input.size()));
}
BENCHMARK(BM_SmtpServerTransaction)->Arg(2 << 10)->Arg(64 << 10)->Arg(1 << 20);

// The outbound client: a pipelined BDAT transaction and its replies. A drop means relaying
// costs more CPU per message.
void BM_SmtpClientTransaction(benchmark::State& state) {
  const std::string content = Body(2 << 10);
  smtp::OutgoingMessage message;
  message.sender = "a@b.example";
  message.recipients = {{"c@d.example", "", ""}};
  message.content = content;
  for (auto _ : state) {
    smtp::ClientSession s(smtp::ClientOptions{});
    s.Feed("220 sink\r\n");
    s.ConsumeOutput(s.PendingOutput().size());
    s.Feed("250-sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 CHUNKING\r\n");
    s.Begin(message);
    while (s.HasOutput()) {
      s.ConsumeOutput(s.PendingOutput().size());
    }
    s.Feed("250 2.1.0 ok\r\n250 2.1.5 ok\r\n250 2.0.0 queued\r\n");
    benchmark::DoNotOptimize(s.TakeResults());
  }
}
BENCHMARK(BM_SmtpClientTransaction);

// One push and one pop on the SPSC ring (same thread: the cost of the operations, not of the
// cache-line transfer). A rise means every cross-core handoff got dearer.
void BM_SpscRingPushPop(benchmark::State& state) {
  ring::SpscRing<uint64_t> ring(10);
  uint64_t v = 0;
  for (auto _ : state) {
    uint64_t item = ++v;
    benchmark::DoNotOptimize(ring.TryPush(std::move(item)));
    benchmark::DoNotOptimize(ring.TryPop());
  }
}
BENCHMARK(BM_SpscRingPushPop);

// Routing a recipient domain through 100 routes (the match is at the end, the worst case).
// A rise means RCPT and every delivery attempt pay more for their route.
void BM_RouterFind(benchmark::State& state) {
  std::vector<config::Route> routes;
  for (int i = 0; i < 100; ++i) {
    routes.push_back(
        {"*.d" + std::to_string(i) + ".example", config::RouteType::kMaildir, "/var/mail", {}, ""});
  }
  routes.push_back({"*", config::RouteType::kReject, "", {}, ""});
  const routing::Router router(routes, "bench.example");
  for (auto _ : state) {
    benchmark::DoNotOptimize(router.Find("mx.d99.example"));
  }
}
BENCHMARK(BM_RouterFind);

// Spool appends on a real disk with `range(0)` messages per group commit (one write and one
// fdatasync per batch). Items/s is messages made durable per second; the ratio between the
// batch sizes is what group commit buys on this disk. A drop at batch 1 means the sync path
// got slower; a drop at 128 means encoding or the write path did.
void BM_SpoolAppend(benchmark::State& state) {
  char dir[] = "/tmp/relais-bench-spool-XXXXXX";
  if (mkdtemp(dir) == nullptr) {
    state.SkipWithError("mkdtemp failed");
    return;
  }
  io::PosixIo io;
  base::SystemClock clock;
  spool::SpoolOptions options;
  options.path = dir;
  options.body_memory_bytes_max = 0;  // Do not keep bodies in memory: measure the disk path.
  auto opened = spool::Spool::Open(options, io, clock);
  if (!opened.ok() || !(*opened)->Recover().ok()) {
    state.SkipWithError("spool open failed");
    return;
  }
  spool::Spool& spool = **opened;
  struct Done final : spool::AppendCompletion {
    void OnAppendDone(spool::AppendOutcome outcome, const mail::MessageId&) override {
      ok += outcome == spool::AppendOutcome::kDurable;
    }
    int64_t ok = 0;
  } done;
  const std::string body = Body(2 << 10);
  const auto batch = static_cast<int>(state.range(0));
  for (auto _ : state) {
    for (int i = 0; i < batch; ++i) {
      mail::Envelope env;
      env.sender = "a@b.example";
      env.recipients.push_back({"c@d.example"});
      std::string copy = body;
      benchmark::DoNotOptimize(spool.Append(spool.NewMessageId(), std::move(env), "Received: x\r\n",
                                            std::move(copy), done));
    }
    spool.Flush();
    while (io.RunCompletions() != 0) {
    }
  }
  state.SetItemsProcessed(done.ok);
  opened->reset();
  std::filesystem::remove_all(dir);
}
BENCHMARK(BM_SpoolAppend)->Arg(1)->Arg(16)->Arg(128)->UseRealTime();

}  // namespace
}  // namespace relais

BENCHMARK_MAIN();
