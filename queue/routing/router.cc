#include "queue/routing/router.h"

#include "core/base/strings.h"
#include "core/mail/domain.h"

namespace relais::routing {

Router::Router(std::vector<config::Route> routes, std::string default_domain)
    : routes_(std::move(routes)), default_domain_(base::AsciiStrToLower(default_domain)) {}

const config::Route* Router::Find(std::string_view domain) const {
  if (domain.empty()) {
    domain = default_domain_;
  }
  for (const config::Route& route : routes_) {
    if (mail::DomainMatches(route.domain, domain)) {
      return &route;
    }
  }
  return nullptr;
}

Verdict Router::Check(std::string_view local_part, std::string_view domain) const {
  const config::Route* route = Find(domain);
  if (route == nullptr) {
    return Verdict::kNoRoute;
  }
  if (route->type == config::RouteType::kReject) {
    return Verdict::kRejectedByRoute;
  }
  if (route->type == config::RouteType::kMaildir && !SafeLocalPart(local_part)) {
    return Verdict::kUnsafeLocalPart;
  }
  return Verdict::kAccept;
}

void Router::Split(std::string_view address, std::string_view& local_part,
                   std::string_view& domain) const {
  const size_t at = address.rfind('@');
  if (at == std::string_view::npos) {
    local_part = address;
    domain = default_domain_;
    return;
  }
  local_part = address.substr(0, at);
  domain = address.substr(at + 1);
}

std::string Router::MaildirFor(const config::Route& route, std::string_view local_part,
                               std::string_view domain) const {
  if (local_part.size() >= 2 && local_part.front() == '"' && local_part.back() == '"') {
    local_part = local_part.substr(1, local_part.size() - 2);
  }
  const std::string d = base::AsciiStrToLower(domain.empty() ? default_domain_ : domain);
  const std::string l = base::AsciiStrToLower(local_part);
  const std::string& path = route.path;
  if (path.find("{domain}") == std::string::npos && path.find("{local}") == std::string::npos) {
    return base::StrCat(path, "/", d, "/", l);
  }
  // A template such as "/srv/mail/{domain}/users/{local}".
  std::string out;
  for (size_t i = 0; i < path.size();) {
    if (path.compare(i, 8, "{domain}") == 0) {
      out += d;
      i += 8;
    } else if (path.compare(i, 7, "{local}") == 0) {
      out += l;
      i += 7;
    } else {
      out += path[i++];
    }
  }
  return out;
}

bool SafeLocalPart(std::string_view local_part) {
  if (local_part.size() >= 2 && local_part.front() == '"' && local_part.back() == '"') {
    local_part = local_part.substr(1, local_part.size() - 2);
  }
  if (local_part.empty() || local_part.front() == '.') {
    return false;  // Also rules out "." and "..".
  }
  for (char c : local_part) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '/' || c == '\\' || u < 0x20 || u == 0x7F) {
      return false;
    }
  }
  return true;
}

}  // namespace relais::routing
