// core/mail/envelope.h — the vocabulary of one message in transit: who sent it, to whom,
// and how its body is encoded. Plain values; moved between modules, never shared.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace relais::mail {

// RFC 6152 / RFC 3030: what the client declared in MAIL FROM's BODY= parameter.
enum class BodyType : uint8_t { k7Bit = 0, k8BitMime = 1, kBinaryMime = 2 };

struct Recipient {
  std::string address;  // Mailbox without angle brackets, as the client wrote it.
};

struct Envelope {
  std::string sender;  // Empty for the null reverse-path <>.
  std::vector<Recipient> recipients;
  BodyType body_type = BodyType::k7Bit;
  bool smtputf8 = false;       // RFC 6531: SMTPUTF8 was given on MAIL FROM.
  std::string helo;            // What the client said in EHLO/HELO.
  std::string client_address;  // Peer IP literal ("192.0.2.1" or "2001:db8::1").
};

}  // namespace relais::mail
