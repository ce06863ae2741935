// protocols/tls/tls_bench.cc — the CPU of one handshake (client and server in this thread, in
// memory: no socket) with an ECDSA P-256 or an RSA-2048 certificate, full and resumed, and the
// heap an idle established server connection holds, at 10 000 of them.
//
//   relais_tls_bench --benchmark_filter=Handshake
//   relais_tls_bench --benchmark_filter=IdleMemory
#include <benchmark/benchmark.h>
#include <malloc.h>
#include <stdlib.h>

#include <memory>
#include <string>
#include <vector>

#include "core/base/check.h"
#include "protocols/tls/tls.h"
#include "protocols/tls/tls_pair.h"

namespace relais::tls {
namespace {

void Handshake(Side& client, Side& server) {
  RELAIS_CHECK(RunUntilQuiet(client, server));
  RELAIS_CHECK(client.tls->state() == TlsState::kOpen && server.tls->state() == TlsState::kOpen);
}

struct Fixture {
  std::string dir;
  std::unique_ptr<ServerContext> ecdsa;
  std::unique_ptr<ServerContext> rsa;
  std::unique_ptr<ClientContext> client;

  Fixture() {
    char dir_template[] = "/tmp/relais_tls_bench.XXXXXX";
    RELAIS_CHECK(mkdtemp(dir_template) != nullptr);
    dir = dir_template;
    ecdsa = Server("ecdsa");
    rsa = Server("rsa");
    ClientOptions options;
    options.ca_file = "";
    client = *ClientContext::Create(options);
  }
  std::unique_ptr<ServerContext> Server(const std::string& type) {
    const std::string chain = dir + "/" + type + ".pem";
    const std::string key = dir + "/" + type + ".key";
    RELAIS_CHECK(MakeSelfSignedCertificate(type, {"bench.example"}, 2, chain, key).ok());
    ServerOptions options;
    options.certificates = {{chain, key}};
    options.tickets.secret = std::string(32, 'b');
    return *ServerContext::Create(options);
  }
};

Fixture& TheFixture() {
  static Fixture* fixture = new Fixture();
  return *fixture;
}

// state.range(0): 0 ECDSA, 1 RSA; state.range(1): 1 resumed.
void BM_Handshake(benchmark::State& state) {
  Fixture& f = TheFixture();
  ServerContext& server_context = state.range(0) == 0 ? *f.ecdsa : *f.rsa;
  const bool resume = state.range(1) == 1;
  const std::string key = resume ? "bench:" + std::to_string(state.range(0)) : "";
  if (resume) {  // A session to resume from.
    Side client{TlsTransport::Client(*f.client, "bench.example", VerifyMode::kNone, key), {}};
    Side server{TlsTransport::Server(server_context), {}};
    server.session.output = "x";
    Handshake(client, server);
    Handshake(client, server);
  }
  uint64_t resumed = 0;
  for (auto _ : state) {
    Side client{TlsTransport::Client(*f.client, "bench.example", VerifyMode::kNone, key), {}};
    Side server{TlsTransport::Server(server_context), {}};
    server.session.output = "x";  // So the client reads its new ticket.
    Handshake(client, server);
    Handshake(client, server);
    resumed += server.tls->info().resumed ? 1 : 0;
  }
  state.counters["resumed"] =
      benchmark::Counter(static_cast<double>(resumed), benchmark::Counter::kAvgIterations);
  state.SetLabel(std::string(state.range(0) == 0 ? "ECDSA P-256" : "RSA-2048") +
                 (resume ? ", resumed" : ", full"));
}
BENCHMARK(BM_Handshake)->Args({0, 0})->Args({1, 0})->Args({0, 1})->Args({1, 1});

// The heap 10 000 idle established connections hold, per connection (glibc's count).
void BM_IdleMemory(benchmark::State& state) {
  Fixture& f = TheFixture();
  const int count = static_cast<int>(state.range(0));
  for (auto _ : state) {
    std::vector<std::unique_ptr<Side>> servers;
    servers.reserve(static_cast<size_t>(count));
    double server_bytes = 0;
    double client_bytes = 0;
    {
      std::vector<std::unique_ptr<Side>> clients;
      clients.reserve(static_cast<size_t>(count));
      for (int i = 0; i < count; ++i) {
        clients.push_back(std::make_unique<Side>());
        servers.push_back(std::make_unique<Side>());
      }
      const size_t before = mallinfo2().uordblks;
      for (int i = 0; i < count; ++i) {
        clients[i]->tls = TlsTransport::Client(*f.client, "bench.example", VerifyMode::kNone, "");
        servers[i]->tls = TlsTransport::Server(*f.ecdsa);
        servers[i]->session.output = "220 ready\r\n";
        clients[i]->session.output = "EHLO x\r\n";
        Handshake(*clients[i], *servers[i]);
        Handshake(*clients[i], *servers[i]);
        std::string().swap(servers[i]->session.received);
        std::string().swap(clients[i]->session.received);
      }
      const size_t established = mallinfo2().uordblks;
      for (auto& c : clients) {
        c->tls.reset();
      }
      const size_t servers_only = mallinfo2().uordblks;
      client_bytes = static_cast<double>(established - servers_only) / count;
      server_bytes = static_cast<double>(servers_only - before) / count;
    }
    state.counters["server_bytes"] = server_bytes;
    state.counters["client_bytes"] = client_bytes;
  }
}
BENCHMARK(BM_IdleMemory)->Arg(10000)->Iterations(1)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace relais::tls

BENCHMARK_MAIN();
