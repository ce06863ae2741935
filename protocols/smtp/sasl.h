// protocols/smtp/sasl.h — the pieces of SASL (RFC 4422) that SMTP AUTH (RFC 4954) needs:
// base64 as RFC 4954 4 uses it and the PLAIN message (RFC 4616). Pure: no I/O, no state.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace relais::smtp {

// RFC 4648 4 base64 with padding, as one line (RFC 4954: no line breaks).
[[nodiscard]] std::string Base64Encode(std::string_view data);
// Strict: the alphabet, '=' padding only at the end, a length that is a multiple of 4, no
// white space. nullopt for anything else. "" decodes to "".
[[nodiscard]] std::optional<std::string> Base64Decode(std::string_view text);

// RFC 4616 2: message = [authzid] NUL authcid NUL passwd, authcid and passwd not empty.
struct PlainCredentials {
  std::string_view authzid;  // Empty: act as authcid.
  std::string_view authcid;
  std::string_view password;
};
// nullopt when `message` (decoded) is not of that form. Views point into `message`.
[[nodiscard]] std::optional<PlainCredentials> ParsePlain(std::string_view message);
// The PLAIN message for `user` and `password` (no authzid), base64-encoded.
[[nodiscard]] std::string EncodePlain(std::string_view user, std::string_view password);

// Overwrites `secret` with zeros and empties it (a password must not linger in freed memory).
void Wipe(std::string& secret);

}  // namespace relais::smtp
