// Fuzzes the outbound client with whatever a hostile server could answer: the input is the
// server's bytes, fed in pieces whose sizes come from the input. The first byte picks SMTP or
// LMTP and a second transaction may start on the same connection; its bits 3-4 choose
// STARTTLS (no, if offered, required, required with AUTH). A 220 to STARTTLS is followed by
// the handshake at once (sometimes after one more piece of input, which must produce nothing).
// Checks the promises the delivery code relies on: every result starts with a reply code
// whose class matches its status, a connection that is not closed is usable, output is whole
// command lines, credentials go out only over TLS and never into an error text.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "protocols/smtp/client_session.h"

namespace {

void Check(bool ok, std::string_view context = "", int line = __builtin_LINE()) {
  if (!ok) {
    std::fprintf(stderr, "client_session_fuzz.cc:%d: check failed: %.*s\n", line,
                 static_cast<int>(context.size()), context.data());
    std::abort();
  }
}

void CheckResults(relais::smtp::ClientSession& s) {
  using relais::smtp::RecipientStatus;
  for (const relais::smtp::RecipientReply& r : s.TakeResults()) {
    Check(r.reply.size() >= 9);
    const char cls = r.reply[0];
    switch (r.status) {
      case RecipientStatus::kDelivered:
        Check(cls == '2', r.reply);
        break;
      case RecipientStatus::kDeferred:
        Check(cls == '4', r.reply);
        break;
      case RecipientStatus::kFailed:
        Check(cls == '5', r.reply);
        break;
      case RecipientStatus::kPending:
        Check(false);
    }
    Check(r.reply.find_first_of("\r\n") == std::string::npos);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace relais;
  if (size < 1) {
    return 0;
  }
  smtp::ClientOptions options;
  options.helo_name = "fuzz.test";
  options.peer_name = "192.0.2.1:25";
  options.lmtp = (data[0] & 1) != 0;
  options.use_pipelining = (data[0] & 2) == 0;
  options.use_chunking = (data[0] & 4) == 0;
  const int tls_mode = (data[0] >> 3) & 3;
  options.starttls = tls_mode == 0   ? smtp::StartTls::kNo
                     : tls_mode == 1 ? smtp::StartTls::kIfOffered
                                     : smtp::StartTls::kRequired;
  const std::string password = "fuzz-s3cret";
  if (tls_mode == 3) {
    options.auth_user = "fuzz";
    options.auth_password = password;
  }
  std::string_view input(reinterpret_cast<const char*>(data) + 1, size - 1);

  const std::string content = "Subject: x\r\n\r\n.dot\r\nbody \xc3\xa9\r\n";
  smtp::OutgoingMessage message;
  message.sender = "a@example.org";
  message.recipients = {{"b@example.net", "SUCCESS", ""}, {"c@example.net", "", ""}};
  message.content = content;

  smtp::ClientSession s(options);
  uint32_t begun = 0;
  while (!input.empty() && !s.closed()) {
    const size_t piece = 1 + static_cast<uint8_t>(input[0]) % 64;
    input.remove_prefix(1);
    const std::string_view bytes = input.substr(0, piece);
    input.remove_prefix(bytes.size());
    s.Feed(bytes);
    while (s.HasOutput()) {
      const std::string_view out = s.PendingOutput();
      Check(s.tls_active() || out.find("AUTH") == std::string_view::npos, out);
      s.ConsumeOutput(out.size());
    }
    if (s.TakeStartTls()) {
      Check(options.starttls != smtp::StartTls::kNo && !s.tls_active() && !s.HasOutput());
      if (!input.empty() && (static_cast<uint8_t>(input[0]) & 1) != 0) {
        const std::string_view clear = input.substr(0, 1 + static_cast<uint8_t>(input[0]) % 32);
        input.remove_prefix(clear.size());
        s.Feed(clear);  // Still in the clear: ignored.
        Check(!s.HasOutput() && !s.closed() && !s.TakeStartTls());
      }
      s.TlsStarted();
      Check(s.tls_active() && s.HasOutput());
      while (s.HasOutput()) {
        s.ConsumeOutput(s.PendingOutput().size());
      }
    }
    if (s.closed()) {
      Check(tls_mode != 3 || s.error().find(password) == std::string::npos, s.error());
      Check(s.error_code() >= 400 && s.error_code() < 600 && s.error_enhanced().size() >= 5 &&
                s.error_enhanced()[0] == static_cast<char>('0' + s.error_code() / 100),
            s.error());
    }
    if (s.ready() && options.starttls == smtp::StartTls::kRequired) {
      Check(s.tls_active());
    }
    if (s.ready() && tls_mode == 3) {
      Check(s.authenticated());
    }
    if (s.transaction_done()) {
      CheckResults(s);
    }
    if (s.ready() && begun < 2) {
      ++begun;
      s.Begin(message);
      if (s.transaction_done()) {
        CheckResults(s);
      }
    }
  }
  s.OnConnectionLost("fuzz input ended");
  if (s.transaction_done()) {
    CheckResults(s);
  }
  Check(s.closed());
  return 0;
}
