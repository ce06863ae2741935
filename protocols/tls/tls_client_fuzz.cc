// Fuzzes the client transport (what egress and relais-bench run against any next hop): the
// input is everything a server sends, fed in pieces whose sizes come from the input itself,
// to a client that verifies (a hostile next hop must never get it to open) and one that does
// not. Checks that no plaintext reaches the session before the handshake is done, that a
// verifying client never opens (no certificate here chains to its CA), and that a failure says
// why and wants the connection closed.
#include <unistd.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "core/base/check.h"
#include "protocols/tls/tls.h"

namespace {

class Session final : public relais::net::StreamSession {
 public:
  void Feed(std::string_view bytes) override { fed += bytes.size(); }
  [[nodiscard]] std::string_view PendingOutput() const override { return output; }
  void ConsumeOutput(size_t bytes) override { output.erase(0, bytes); }
  [[nodiscard]] bool WantsInput() const override { return true; }
  [[nodiscard]] bool WantsClose() const override { return false; }
  void EndOfInput() override {}
  std::string output = "EHLO fuzz.example\r\n";
  size_t fed = 0;
};

relais::tls::ClientContext& Context() {
  static relais::tls::ClientContext* context = [] {
    char dir[] = "/tmp/relais_tls_client_fuzz.XXXXXX";
    RELAIS_CHECK(mkdtemp(dir) != nullptr);
    const std::string chain = std::string(dir) + "/ca.pem";
    const std::string key = std::string(dir) + "/ca.key";
    RELAIS_CHECK(
        relais::tls::MakeSelfSignedCertificate("ecdsa", {"ca.example"}, 2, chain, key).ok());
    relais::tls::ClientOptions options;
    options.ca_file = chain;
    auto created = relais::tls::ClientContext::Create(options);
    RELAIS_CHECK(created.ok());
    unlink(chain.c_str());
    unlink(key.c_str());
    rmdir(dir);
    return created->release();
  }();
  return *context;
}

void Run(std::string_view input, relais::tls::VerifyMode verify) {
  using relais::tls::TlsState;
  auto transport = relais::tls::TlsTransport::Client(Context(), "mx.example", verify, "mx:25");
  Session session;
  std::string out;
  transport->TakeOutput(session, out);  // The ClientHello.
  RELAIS_CHECK(!out.empty());
  while (!input.empty()) {
    const size_t piece = std::min<size_t>(input.size(), 1 + static_cast<uint8_t>(input[0]) * 4);
    transport->OnReceived(input.substr(0, piece), session);
    input.remove_prefix(piece);
    if (transport->state() == TlsState::kHandshaking) {
      RELAIS_CHECK(session.fed == 0);
    }
    if (verify == relais::tls::VerifyMode::kVerify) {
      RELAIS_CHECK(transport->state() != TlsState::kOpen);
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
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  Run(input, relais::tls::VerifyMode::kNone);
  Run(input, relais::tls::VerifyMode::kVerify);
  return 0;
}
