// protocols/smtp/review_test.cc — security review: proofs about the SMTP sessions' TLS and AUTH
// handling under hostile input (what is sound is asserted too).
#include <gtest/gtest.h>

#include <chrono>
#include <string>

#include "protocols/smtp/client_session.h"
#include "protocols/smtp/sasl.h"
#include "protocols/smtp/server_session.h"

namespace relais::smtp {
namespace {

std::string Drain(ServerSession& s) {
  std::string out(s.PendingOutput());
  s.ConsumeOutput(out.size());
  return out;
}

SessionOptions TlsAuthOptions() {
  SessionOptions o;
  o.starttls_offered = true;
  o.auth_offered = true;
  o.local_domains = {"example.com"};
  return o;
}

// The TLS transport feeds the session one record at a time (TlsTransport::Impl::Advance calls
// Feed per SSL_read), so a client that sends a command line as one-byte records makes the session
// rescan its partial line once per byte: quadratic in the line length, and an "AUTH " line may
// be 12288 bytes before TLS and on listeners without AUTH. Measured, not asserted as a bound.
TEST(SmtpReviewTest, PartialLineFedByteByByteCost) {
  SessionOptions o = TlsAuthOptions();
  const auto client = *mail::IpAddress::Parse("192.0.2.1");
  const std::string line = "AUTH PLAIN " + std::string(12270, 'A');
  double whole_ms = 0, bytewise_ms = 0;
  {
    ServerSession s(o, client);
    s.Start();
    Drain(s);
    s.Feed("EHLO c\r\n");
    Drain(s);
    const auto t0 = std::chrono::steady_clock::now();
    s.Feed(line);
    whole_ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  }
  {
    ServerSession s(o, client);
    s.Start();
    Drain(s);
    s.Feed("EHLO c\r\n");
    Drain(s);
    const auto t0 = std::chrono::steady_clock::now();
    for (char c : line) {
      s.Feed(std::string_view(&c, 1));
    }
    bytewise_ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  }
  std::printf("12281-byte AUTH line: one Feed %.3f ms, one Feed per byte %.3f ms\n", whole_ms,
              bytewise_ms);
}

}  // namespace
}  // namespace relais::smtp
