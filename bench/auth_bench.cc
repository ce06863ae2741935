// bench/auth_bench.cc — the CPU cost of sender authentication per message, one core: DKIM
// verification (rsa-sha256 with a 2048-bit key, ed25519-sha256) of a 10 KiB message, DKIM
// signing, body hashing on the stream, and SPF evaluation with every DNS answer already at hand
// (what a warm cache gives). Google Benchmark; not a test: timings never gate CI.
//
//   build-rel/bench/relais_auth_bench --benchmark_repetitions=5 --benchmark_report_aggregates_only
#include <benchmark/benchmark.h>

#include <fstream>
#include <map>
#include <sstream>
#include <string>

#include "core/mail/ip_network.h"
#include "protocols/authcheck/authcheck.h"
#include "protocols/dkim/dkim.h"
#include "protocols/spf/spf.h"
#include "protocols/tls/crypto.h"

namespace relais {
namespace {

std::string Message(size_t bytes) {
  std::string m =
      "From: Joe <joe@example.com>\r\nTo: sue@example.net\r\nSubject: benchmark\r\n"
      "Date: Thu, 26 Nov 2026 10:00:00 +0000\r\nMessage-ID: <1@example.com>\r\n\r\n";
  const std::string line = std::string(76, 'x') + "\r\n";
  while (m.size() < bytes) {
    m += line;
  }
  return m;
}

tls::PrivateKey LoadKey(const char* name) {
  std::ifstream in(std::string(RELAIS_TESTDATA) + "/dkim/" + name);
  std::stringstream pem;
  pem << in.rdbuf();
  return std::move(*tls::PrivateKey::FromPem(pem.str()));
}

dns::Answer KeyRecord(const tls::PrivateKey& key) {
  dns::Answer a{dns::AnswerStatus::kOk};
  a.texts = {std::string("v=DKIM1; k=") + (key.type() == tls::KeyType::kRsa ? "rsa" : "ed25519") +
             "; p=" + tls::Base64Encode(key.PublicKeyBytes())};
  return a;
}

// Verifying one signature of a 10 KiB message, the key record at hand: header and body
// canonicalization, the body hash, and the public-key operation.
void BM_DkimVerify(benchmark::State& state, const char* key_file, bool cached) {
  const tls::PrivateKey key = LoadKey(key_file);
  dkim::SignOptions o;
  o.domain = "example.com";
  o.selector = "s";
  const std::string plain = Message(10 << 10);
  const std::string message = *dkim::Sign(plain, o, key) + plain;
  const dns::Answer record = KeyRecord(key);
  dkim::KeyCache keys;
  for (auto _ : state) {
    dkim::Verification v(message, 1764000000);
    v.UseKeyCache(cached ? &keys : nullptr);
    while (!v.Run()) {
      v.Provide(v.needed(), record);
    }
    if (v.results()[0].result != dkim::Result::kPass) {
      state.SkipWithError("did not verify");
      break;
    }
  }
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(message.size()));
}
// Parsing the key record each time, and with the shard's cache of parsed keys.
BENCHMARK_CAPTURE(BM_DkimVerify, rsa2048, "rsa2048.pem", false);
BENCHMARK_CAPTURE(BM_DkimVerify, ed25519, "ed25519.pem", false);
BENCHMARK_CAPTURE(BM_DkimVerify, rsa2048_cached_key, "rsa2048.pem", true);
BENCHMARK_CAPTURE(BM_DkimVerify, ed25519_cached_key, "ed25519.pem", true);

void BM_DkimSign(benchmark::State& state, const char* key_file) {
  const tls::PrivateKey key = LoadKey(key_file);
  dkim::SignOptions o;
  o.domain = "example.com";
  o.selector = "s";
  const std::string message = Message(10 << 10);
  for (auto _ : state) {
    benchmark::DoNotOptimize(dkim::Sign(message, o, key));
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK_CAPTURE(BM_DkimSign, rsa2048, "rsa2048.pem");
BENCHMARK_CAPTURE(BM_DkimSign, ed25519, "ed25519.pem");

// The relaxed body hash as the SMTP session feeds it: 10 KiB in reads of 4 KiB.
void BM_BodyHashesStreamed(benchmark::State& state) {
  const tls::PrivateKey key = LoadKey("ed25519.pem");
  dkim::SignOptions o;
  o.domain = "example.com";
  o.selector = "s";
  const std::string plain = Message(10 << 10);
  const std::string message = *dkim::Sign(plain, o, key) + plain;
  for (auto _ : state) {
    dkim::BodyHashes hashes;
    for (size_t at = 0; at < message.size(); at += 4096) {
      hashes.Update(std::string_view(message).substr(at, 4096));
    }
    hashes.Finish();
    benchmark::DoNotOptimize(hashes.Find(dkim::Canonicalization::kRelaxed, std::nullopt));
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(message.size()));
}
BENCHMARK(BM_BodyHashesStreamed);

// SPF with every answer at hand: a record with an include, an a and an ip4 term, as many
// senders' records look; the client matches the included ip4 range.
void BM_SpfWarm(benchmark::State& state) {
  std::map<std::string, dns::Answer> zone;
  auto txt = [&](const std::string& name, const std::string& text) {
    dns::Answer a{dns::AnswerStatus::kOk};
    a.texts = {text};
    zone[name] = a;
  };
  txt("example.com", "v=spf1 a:mail.example.com include:_spf.provider.net ~all");
  txt("_spf.provider.net", "v=spf1 ip4:198.51.100.0/24 ip4:203.0.113.0/24 -all");
  dns::Answer a{dns::AnswerStatus::kOk};
  a.addresses = {*mail::IpAddress::Parse("192.0.2.10")};
  zone["mail.example.com"] = a;
  spf::Request request;
  request.ip = *mail::IpAddress::Parse("203.0.113.7");
  request.sender = "joe@example.com";
  request.helo = "mx.provider.net";
  for (auto _ : state) {
    spf::Evaluation e(request);
    while (!e.Run()) {
      e.Provide(e.needed(), zone[e.needed().name]);
    }
    if (e.outcome().result != spf::Result::kPass) {
      state.SkipWithError("not pass");
      break;
    }
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_SpfWarm);

}  // namespace
}  // namespace relais

BENCHMARK_MAIN();
