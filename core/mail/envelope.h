// core/mail/envelope.h — the vocabulary of one message in transit: who sent it, to whom,
// and how its body is encoded. Plain values; moved between modules, never shared.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace relais::mail {

// RFC 6152 / RFC 3030: what the client declared in MAIL FROM's BODY= parameter.
enum class BodyType : uint8_t { k7Bit = 0, k8BitMime = 1, kBinaryMime = 2 };

// RFC 3461 RET: what a failure report returns of the message.
enum class DsnReturn : uint8_t { kUnspecified = 0, kFull = 1, kHeaders = 2 };

// RFC 3461 NOTIFY, as bits; none set: NOTIFY was not given (then failures are reported).
inline constexpr uint8_t kNotifySuccess = 1;
inline constexpr uint8_t kNotifyFailure = 2;
inline constexpr uint8_t kNotifyDelay = 4;
inline constexpr uint8_t kNotifyNever = 8;

struct Recipient {
  std::string address;  // Mailbox without angle brackets, as the client wrote it.
  uint8_t notify = 0;   // kNotify* bits.
  std::string orcpt;    // RFC 3461 ORCPT as given: "rfc822;" then xtext. Empty: none.
};

struct Envelope {
  std::string sender;  // Empty for the null reverse-path <>.
  std::vector<Recipient> recipients;
  BodyType body_type = BodyType::k7Bit;
  bool smtputf8 = false;       // RFC 6531: SMTPUTF8 was given on MAIL FROM.
  std::string helo;            // What the client said in EHLO/HELO.
  std::string client_address;  // Peer IP literal ("192.0.2.1" or "2001:db8::1").
  DsnReturn dsn_return = DsnReturn::kUnspecified;  // RFC 3461 RET.
  std::string envid;                               // RFC 3461 ENVID as given (xtext).
};

// "SUCCESS,FAILURE,DELAY" or "NEVER" from kNotify* bits; empty for none.
[[nodiscard]] std::string NotifyText(uint8_t notify);
// RFC 3461 4: xtext ("+" and two upper-case hex digits for what is not printable ASCII, "+"
// or "="). Decode returns false on a malformed xtext.
[[nodiscard]] bool XtextValid(std::string_view xtext);
[[nodiscard]] std::string XtextDecode(std::string_view xtext);

}  // namespace relais::mail
