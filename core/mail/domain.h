// core/mail/domain.h — domain patterns as written in config: "example.com" (exact,
// case-insensitive), "*.example.com" (any subdomain, not the domain itself) or "*".
#pragma once

#include <string_view>

#include "core/base/strings.h"

namespace relais::mail {

[[nodiscard]] inline bool DomainMatches(std::string_view pattern, std::string_view domain) {
  if (pattern == "*") {
    return true;
  }
  if (pattern.starts_with("*.")) {
    const std::string_view suffix = pattern.substr(1);  // ".example.com"
    return domain.size() > suffix.size() && base::EndsWithIgnoreCase(domain, suffix);
  }
  return base::EqualsIgnoreCase(pattern, domain);
}

}  // namespace relais::mail
