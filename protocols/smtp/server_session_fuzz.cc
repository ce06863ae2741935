// Fuzzes whole SMTP sessions: the input is everything a client sends, fed in pieces whose
// sizes come from the input itself; commits are answered with every outcome in turn, and a
// policy refusal. With the first byte odd the session also asks for sender checks (answered
// accept, 550 and 451 in turn) and a body observer must see exactly each committed body.
// A first byte of 0xC0 or more (the older seeds start with text, and keep the plain
// listener) chooses another with bits 1-2: STARTTLS with AUTH, TLS required with AUTH and
// require_sender_owned, or trusted (AUTH in the clear); its bit 3 starts with implicit TLS.
// STARTTLS is completed at once (its 220 must be the last reply, and input fed before the handshake
// must produce nothing); AUTH requests are answered with an outcome taken from the next input byte.
// Checks that whatever comes out is well-formed replies, and that a committed body ends in
// CRLF.
#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "core/base/check.h"
#include "protocols/smtp/server_session.h"

namespace {

// Every reply line: three digits, ' ' or '-', text, CRLF; no bare CR or LF anywhere.
void CheckReplies(std::string_view out) {
  while (!out.empty()) {
    const size_t end = out.find("\r\n");
    RELAIS_CHECK(end != std::string_view::npos && end >= 4);
    const std::string_view line = out.substr(0, end);
    RELAIS_CHECK(line[0] >= '2' && line[0] <= '5' && line[1] >= '0' && line[1] <= '9' &&
                 line[2] >= '0' && line[2] <= '9' && (line[3] == ' ' || line[3] == '-'));
    RELAIS_CHECK(line.find_first_of("\r\n") == std::string_view::npos);
    out.remove_prefix(end + 2);
  }
}

struct Observer final : relais::smtp::BodyObserver {
  void OnBodyStart() override { bytes.clear(); }
  void OnBodyBytes(std::string_view b) override { bytes.append(b); }
  std::string bytes;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace relais;
  static const std::array<smtp::SessionOptions, 4> kListeners = [] {
    smtp::SessionOptions o;
    o.hostname = "fuzz.test";
    o.message_bytes_max = 4096;  // Small limits reach the limit paths.
    o.recipients_max = 4;
    o.errors_max = 50;
    o.relay_networks = {*mail::IpNetwork::Parse("192.0.2.0/25")};
    o.local_domains = {"example.com", "*.example.org"};
    std::array<smtp::SessionOptions, 4> all{o, o, o, o};
    all[1].starttls_offered = true;
    all[1].auth_offered = true;
    all[2].tls_required = true;
    all[2].auth_offered = true;
    all[2].require_sender_owned = true;
    all[3].auth_offered = true;
    all[3].auth_in_clear = true;
    return all;
  }();
  const uint8_t first = size > 0 ? data[0] : 0;
  const bool tls_listener = first >= 0xC0;
  const smtp::SessionOptions& options = kListeners[tls_listener ? 1 + ((first >> 1) & 3) % 3 : 0];
  smtp::ServerSession session(options, *mail::IpAddress::Parse("192.0.2.1"));
  const bool checks = (first & 1) != 0;
  Observer observer;
  if (checks) {
    session.RequireSenderCheck();
    session.SetBodyObserver(&observer);
  }
  if (tls_listener && (first & 8) != 0) {
    session.TlsStarted("TLSv1.3", "TLS_AES_128_GCM_SHA256");  // Implicit TLS.
  }
  session.Start();
  uint32_t seed = size > 0 ? data[0] : 1;
  size_t pos = 0;
  int commits = 0;
  int sender_checks = 0;
  while (pos < size && !session.WantsClose()) {
    seed = seed * 1103515245u + 12345u;
    const size_t chunk = std::min<size_t>(1 + (seed >> 16) % 97, size - pos);
    session.Feed(std::string_view(reinterpret_cast<const char*>(data) + pos, chunk));
    pos += chunk;
    bool answered = true;
    while (answered) {
      answered = false;
      while (session.TakeSenderCheck()) {
        RELAIS_CHECK(checks && session.awaiting_sender_check());
        static constexpr smtp::Reply kAnswers[] = {smtp::Reply::kSenderOk, smtp::Reply::kSpfFail,
                                                   smtp::Reply::kSpfTempError};
        session.CompleteSenderCheck(kAnswers[sender_checks++ % 3], "fuzz");
        answered = true;
      }
      while (session.TakeAuthRequest()) {
        RELAIS_CHECK(session.awaiting_auth());
        const smtp::AuthRequest& request = session.auth_request();
        RELAIS_CHECK(request.mechanism == "PLAIN" || request.mechanism == "LOGIN");
        RELAIS_CHECK(!request.user.empty() && !request.password.empty());
        RELAIS_CHECK(request.user.find_first_of("\r\n") == std::string::npos);
        const uint8_t pick = data[pos % size];
        session.CompleteAuth(static_cast<smtp::AuthOutcome>(pick % 4), {"example.com"});
        // Wiped, unless input held meanwhile started the next request.
        RELAIS_CHECK(session.awaiting_auth() || session.auth_request().password.empty());
        answered = true;
      }
      if (session.TakeStartTls()) {
        RELAIS_CHECK(!session.tls_active() && !session.WantsInput());
        RELAIS_CHECK(session.PendingOutput().ends_with("220 2.0.0 Ready to start TLS\r\n"));
        const std::string_view out = session.PendingOutput();
        CheckReplies(out);
        session.ConsumeOutput(out.size());
        if (pos < size && (data[pos] & 1) != 0) {
          // Bytes that arrive in the clear before the handshake: never executed.
          const size_t more = std::min<size_t>(1 + data[pos] % 31, size - pos);
          session.Feed(std::string_view(reinterpret_cast<const char*>(data) + pos, more));
          pos += more;
          RELAIS_CHECK(session.PendingOutput().empty() && !session.TakeCommitRequest());
        }
        session.TlsStarted("TLSv1.3", "TLS_AES_128_GCM_SHA256");
        RELAIS_CHECK(session.tls_active() && session.helo().empty() && !session.in_transaction());
        answered = true;
      }
      while (session.TakeCommitRequest()) {
        const std::string& body = session.transaction().body;
        RELAIS_CHECK(body.empty() || (body.size() >= 2 && body.substr(body.size() - 2) == "\r\n"));
        RELAIS_CHECK(body.size() <= options.message_bytes_max + 2);
        RELAIS_CHECK(!session.transaction().envelope.recipients.empty());
        RELAIS_CHECK(!checks || observer.bytes == body);
        if (commits % 5 == 4) {
          ++commits;
          session.RefuseMessage(smtp::Reply::kPolicyRejected, "fuzz");
        } else {
          const auto outcome = static_cast<smtp::CommitOutcome>(commits++ % 4);
          session.CompleteCommit(outcome, mail::MessageId::Make(1, 0, commits));
        }
        answered = true;
      }
    }
    const std::string_view out = session.PendingOutput();
    CheckReplies(out);
    session.ConsumeOutput(out.size());
  }
  session.OnTimeout();
  CheckReplies(session.PendingOutput());
  return 0;
}
