// protocols/authres/authres.h — the Authentication-Results header field (RFC 8601): writing
// ours, and removing fields that claim to be ours before a message is accepted (a sender could
// otherwise forge our verdicts, RFC 8601 5).
//
// Pure functions over text; the shard calls them when it stores a message.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace relais::authres {

// One method's result, e.g. {"spf", "pass", {{"smtp.mailfrom", "user@example.com"}}}.
struct MethodResult {
  std::string method;  // spf, dkim, dmarc.
  std::string result;  // pass, fail, none, ... (the method's RFC 8601 words).
  std::string reason;  // Optional free text, written as reason="...".
  std::vector<std::pair<std::string, std::string>> properties;  // ptype.property, value.
};

// "Authentication-Results: relais.example.net;\r\n\tspf=pass smtp.mailfrom=a@b.example\r\n",
// folded one method per line; "...; none" when there are no results. Values that are not
// RFC 2045 tokens are written as quoted strings.
[[nodiscard]] std::string Header(std::string_view authserv_id,
                                 const std::vector<MethodResult>& results);

// The authserv-id of an Authentication-Results field value (what follows the colon), comments
// and whitespace skipped; empty when there is none.
[[nodiscard]] std::string AuthservId(std::string_view value);

// Removes from `message` (CRLF text) the Authentication-Results fields of its header whose
// authserv-id is `authserv_id` (compared without case), in place; returns how many. A message
// without any is left untouched (not copied).
int RemoveForged(std::string& message, std::string_view authserv_id);

}  // namespace relais::authres
