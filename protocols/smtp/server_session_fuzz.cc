// Fuzzes whole SMTP sessions: the input is everything a client sends, fed in pieces whose
// sizes come from the input itself; commits are answered with every outcome in turn. Checks
// that whatever comes out is well-formed replies, and that a committed body ends in CRLF.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "protocols/smtp/server_session.h"

namespace {

void Check(bool ok) {
  if (!ok) {
    std::abort();
  }
}

// Every reply line: three digits, ' ' or '-', text, CRLF; no bare CR or LF anywhere.
void CheckReplies(std::string_view out) {
  while (!out.empty()) {
    const size_t end = out.find("\r\n");
    Check(end != std::string_view::npos && end >= 4);
    const std::string_view line = out.substr(0, end);
    Check(line[0] >= '2' && line[0] <= '5' && line[1] >= '0' && line[1] <= '9' && line[2] >= '0' &&
          line[2] <= '9' && (line[3] == ' ' || line[3] == '-'));
    Check(line.find_first_of("\r\n") == std::string_view::npos);
    out.remove_prefix(end + 2);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace relais;
  static const smtp::SessionOptions options = [] {
    smtp::SessionOptions o;
    o.hostname = "fuzz.test";
    o.message_bytes_max = 4096;  // Small limits reach the limit paths.
    o.recipients_max = 4;
    o.errors_max = 50;
    o.relay_networks = {*mail::IpNetwork::Parse("192.0.2.0/25")};
    o.local_domains = {"example.com", "*.example.org"};
    return o;
  }();
  smtp::ServerSession session(options, *mail::IpAddress::Parse("192.0.2.1"));
  session.Start();
  uint32_t seed = size > 0 ? data[0] : 1;
  size_t pos = 0;
  int commits = 0;
  while (pos < size && !session.WantsClose()) {
    seed = seed * 1103515245u + 12345u;
    const size_t chunk = std::min<size_t>(1 + (seed >> 16) % 97, size - pos);
    session.Feed(std::string_view(reinterpret_cast<const char*>(data) + pos, chunk));
    pos += chunk;
    while (session.TakeCommitRequest()) {
      const std::string& body = session.transaction().body;
      Check(body.empty() || (body.size() >= 2 && body.substr(body.size() - 2) == "\r\n"));
      Check(body.size() <= options.message_bytes_max + 2);
      Check(!session.transaction().envelope.recipients.empty());
      const auto outcome = static_cast<smtp::CommitOutcome>(commits++ % 4);
      session.CompleteCommit(outcome, mail::MessageId::Make(1, 0, commits));
    }
    const std::string_view out = session.PendingOutput();
    CheckReplies(out);
    session.ConsumeOutput(out.size());
  }
  session.OnTimeout();
  CheckReplies(session.PendingOutput());
  return 0;
}
