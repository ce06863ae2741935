// Fuzzes DKIM: the input is a message. Checks that verification never crashes and gives one
// result per evaluated DKIM-Signature field; that the body hash does not depend on how the body is
// cut into pieces; and that whatever the message, if it can be signed, its signature verifies.
#include <cstdint>
#include <string>
#include <string_view>

#include "core/base/check.h"
#include "core/base/strings.h"
#include "protocols/dkim/dkim.h"

namespace {

constexpr std::string_view kKey =
    "-----BEGIN PRIVATE KEY-----\n"
    "MC4CAQAwBQYDK2VwBCIEIDsXC0kgO0YIHLyJfHtCUSmbNvhdcCKA95dRaDy9OGUG\n"
    "-----END PRIVATE KEY-----\n";

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace relais;
  static const crypto::PrivateKey key = std::move(*crypto::PrivateKey::FromPem(kKey));
  static const std::string record =
      base::StrCat("v=DKIM1; k=ed25519; p=", crypto::Base64Encode(key.PublicKeyBytes()));
  const std::string message =
      dkim::Normalize(std::string_view(reinterpret_cast<const char*>(data), size));

  auto verify = [&](std::string_view m) {
    dkim::Verification v(m, 1764000000);
    int rounds = 0;
    while (!v.Run()) {
      RELAIS_CHECK(++rounds < 1000);
      dns::Answer a{dns::AnswerStatus::kOk};
      a.texts = {record, std::string(m.substr(0, 300))};
      v.Provide(v.needed(), a);
    }
    return v.results();
  };
  (void)verify(message);

  size_t body = 0;
  (void)dkim::SplitHeader(message, body);
  for (auto c : {dkim::Canonicalization::kSimple, dkim::Canonicalization::kRelaxed}) {
    dkim::BodyHasher whole(c);
    whole.Update(std::string_view(message).substr(body));
    dkim::BodyHasher cut(c);
    const std::string_view b = std::string_view(message).substr(body);
    cut.Update(b.substr(0, b.size() / 3));
    cut.Update(b.substr(b.size() / 3));
    RELAIS_CHECK(whole.Finish() == cut.Finish());
  }

  dkim::SignOptions o;
  o.domain = "example.com";
  o.selector = "s";
  absl::StatusOr<std::string> field = dkim::Sign(message, o, key);
  if (field.ok()) {
    const std::string signed_message = *field + message;
    const auto results = verify(signed_message);
    // A pass, unless the message has several From fields: never a pass (RFC 6376 8.15).
    const dkim::FieldIndex index = dkim::IndexFields(dkim::SplitHeader(message, body));
    const auto from = index.find("from");
    const bool several_from = from != index.end() && from->second.size() > 1;
    RELAIS_CHECK(!results.empty() &&
                 results[0].result == (several_from ? dkim::Result::kPolicy : dkim::Result::kPass));
  }
  return 0;
}
