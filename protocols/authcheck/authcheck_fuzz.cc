// Fuzzes the message check as the daemon runs it on untrusted mail: the input is the message
// (its From fields go through FromDomains, its DKIM-Signature fields through verification), and
// every DNS question is answered with a key record for the input's own bytes. Checks that the
// check ends, that the body hashes computed on the stream agree with hashing the whole message,
// and that the Authentication-Results field written is one header field (no bare line ends,
// continuation lines only).
#include <cstdint>
#include <string>
#include <string_view>

#include "core/base/check.h"
#include "protocols/authcheck/authcheck.h"

namespace {

relais::authcheck::Judgement Run(std::string_view message, const relais::dkim::BodyHashes* hashes,
                                 std::string& header) {
  using namespace relais;
  authcheck::Policy policy;
  policy.dmarc = authcheck::Mode::kReject;
  authcheck::MessageRequest request;
  spf::Outcome spf;
  spf.result = spf::Result::kPass;
  spf.domain = "example.com";
  request.spf = spf;
  request.sender = "a@example.com";
  request.helo = "mx.example.com";
  request.now_unix_seconds = 1764000000;
  authcheck::MessageCheck check(policy, request, message);
  check.UseBodyHashes(hashes);
  int rounds = 0;
  while (!check.Run()) {
    RELAIS_CHECK(++rounds < 64);
    dns::Answer a{dns::AnswerStatus::kOk};
    a.texts = {std::string(message.substr(0, 512))};
    check.Provide(check.needed(), a);
  }
  header = check.Header();
  return check.judgement();
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace relais;
  const std::string message =
      dkim::Normalize(std::string_view(reinterpret_cast<const char*>(data), size));
  for (const std::string& d : authcheck::FromDomains(message)) {
    RELAIS_CHECK(!d.empty());
  }
  dkim::BodyHashes hashes;
  for (size_t at = 0; at < message.size(); at += 7) {
    hashes.Update(std::string_view(message).substr(at, 7));
  }
  hashes.Finish();
  std::string streamed_header, whole_header;
  const authcheck::Judgement streamed = Run(message, &hashes, streamed_header);
  const authcheck::Judgement whole = Run(message, nullptr, whole_header);
  RELAIS_CHECK(streamed.verdict == whole.verdict && streamed.text == whole.text);
  RELAIS_CHECK(streamed_header == whole_header);
  RELAIS_CHECK(whole_header.starts_with("Authentication-Results: ") &&
               whole_header.ends_with("\r\n"));
  for (size_t i = 0; i + 1 < whole_header.size(); ++i) {
    if (whole_header[i] == '\n') {
      RELAIS_CHECK(whole_header[i - 1] == '\r' &&
                   (whole_header[i + 1] == '\t' || whole_header[i + 1] == ' '));
    }
    if (whole_header[i] == '\r') {
      RELAIS_CHECK(whole_header[i + 1] == '\n');
    }
  }
  return 0;
}
