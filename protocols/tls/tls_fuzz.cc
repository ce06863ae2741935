// Fuzzes the server transport: the input is everything a client sends (a ClientHello, records,
// alerts, garbage), fed in pieces whose sizes come from the input itself. The session echoes
// what it gets. Checks that the transport never feeds the session before the handshake is done,
// that a failure always says why and wants the connection closed, and that nothing it does
// crashes or leaks (under the fuzzer's sanitizers).
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>

#include "core/base/check.h"
#include "protocols/tls/tls.h"

namespace {

class Echo final : public relais::net::StreamSession {
 public:
  void Feed(std::string_view bytes) override {
    fed += bytes.size();
    output.append(bytes.substr(0, 4096));
  }
  [[nodiscard]] std::string_view PendingOutput() const override { return output; }
  void ConsumeOutput(size_t bytes) override { output.erase(0, bytes); }
  [[nodiscard]] bool WantsInput() const override { return !ended; }
  [[nodiscard]] bool WantsClose() const override { return ended && output.empty(); }
  void EndOfInput() override { ended = true; }
  std::string output;
  size_t fed = 0;
  bool ended = false;
};

relais::tls::ServerContext& Context() {
  static relais::tls::ServerContext* context = [] {
    char dir[] = "/tmp/relais_tls_fuzz.XXXXXX";
    RELAIS_CHECK(mkdtemp(dir) != nullptr);
    const std::string chain = std::string(dir) + "/chain.pem";
    const std::string key = std::string(dir) + "/key.pem";
    RELAIS_CHECK(
        relais::tls::MakeSelfSignedCertificate("ecdsa", {"fuzz.example"}, 2, chain, key).ok());
    relais::tls::ServerOptions options;
    options.certificates = {{chain, key}};
    options.tickets.secret = std::string(32, 'f');
    auto created = relais::tls::ServerContext::Create(options);
    RELAIS_CHECK(created.ok());
    unlink(chain.c_str());
    unlink(key.c_str());
    rmdir(dir);
    return created->release();
  }();
  return *context;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using relais::tls::TlsState;
  std::string_view input(reinterpret_cast<const char*>(data), size);
  auto transport = relais::tls::TlsTransport::Server(Context());
  Echo session;
  std::string out;
  while (!input.empty()) {
    const size_t piece = std::min<size_t>(input.size(), 1 + static_cast<uint8_t>(input[0]) * 4);
    transport->OnReceived(input.substr(0, piece), session);
    input.remove_prefix(piece);
    if (transport->state() == TlsState::kHandshaking) {
      RELAIS_CHECK(session.fed == 0);
    }
    if (transport->state() == TlsState::kFailed) {
      RELAIS_CHECK(!transport->failure().empty());
      RELAIS_CHECK(!transport->WantsInput(session));
    }
    out.clear();
    transport->TakeOutput(session, out);
    if (transport->WantsClose(session)) {
      break;
    }
  }
  transport->OnEndOfInput(session);
  out.clear();
  transport->TakeOutput(session, out);
  return 0;
}
