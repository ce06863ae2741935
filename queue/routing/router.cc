#include "queue/routing/router.h"

#include <algorithm>
#include <unordered_set>

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
  if (route->type == config::RouteType::kMaildir) {
    return MaildirFor(*route, local_part, domain).verdict;
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

namespace {

std::string_view Unquoted(std::string_view local_part) {
  if (local_part.size() >= 2 && local_part.front() == '"' && local_part.back() == '"') {
    local_part = local_part.substr(1, local_part.size() - 2);
  }
  return local_part;
}

size_t DotDotComponents(std::string_view path) {
  size_t n = 0;
  size_t start = 0;
  while (start <= path.size()) {
    const size_t slash = std::min(path.find('/', start), path.size());
    n += path.substr(start, slash - start) == "..";
    start = slash + 1;
  }
  return n;
}

}  // namespace

MaildirPath Router::MaildirFor(const config::Route& route, std::string_view local_part,
                               std::string_view domain) const {
  MaildirPath out;
  if (!SafeLocalPart(local_part)) {
    out.verdict = Verdict::kUnsafeLocalPart;
    return out;
  }
  const std::string d = base::AsciiStrToLower(domain.empty() ? default_domain_ : domain);
  // A domain never starts with '.' either (RFC 5321 4.1.2); a literal starts with '['.
  if (!SafePathComponent(d) || d.front() == '.') {
    out.verdict = Verdict::kUnsafeDomain;
    return out;
  }
  const std::string l = base::AsciiStrToLower(Unquoted(local_part));
  const std::string& path = route.path;
  if (path.find("{domain}") == std::string::npos && path.find("{local}") == std::string::npos) {
    out.directory = base::StrCat(path, "/", d, "/", l);
  } else {
    // A template such as "/srv/mail/{domain}/users/{local}".
    for (size_t i = 0; i < path.size();) {
      if (path.compare(i, 8, "{domain}") == 0) {
        out.directory += d;
        i += 8;
      } else if (path.compare(i, 7, "{local}") == 0) {
        out.directory += l;
        i += 7;
      } else {
        out.directory += path[i++];
      }
    }
  }
  // Defence in depth: the address added no ".." component (and, having no '/', no component
  // at all) to what the operator wrote.
  if (DotDotComponents(out.directory) != DotDotComponents(path)) {
    out.directory.clear();
    out.verdict = Verdict::kUnsafeLocalPart;
  }
  return out;
}

std::string Router::DeliveryKey(std::string_view address) const {
  std::string_view local, domain;
  Split(address, local, domain);
  const config::Route* route = Find(domain);
  if (route != nullptr && route->type == config::RouteType::kMaildir) {
    MaildirPath maildir = MaildirFor(*route, local, domain);
    if (maildir.verdict == Verdict::kAccept) {
      return base::StrCat("m", maildir.directory);
    }
  }
  // RFC 5321 4.1.2: a quoted local part is the same mailbox as its content with each
  // quoted-pair undone ("a", "\a" and a are one), so the key holds the decoded form; the case
  // of a local part is the receiver's business and is kept.
  std::string key = "a";
  key.reserve(local.size() + domain.size() + 2);
  const std::string_view unquoted = Unquoted(local);
  const bool quoted = unquoted.size() != local.size();
  for (size_t i = 0; i < unquoted.size(); ++i) {
    if (quoted && unquoted[i] == '\\' && i + 1 < unquoted.size()) {
      ++i;
    }
    key += unquoted[i];
  }
  return base::StrCat(key, "@", base::AsciiStrToLower(domain.empty() ? default_domain_ : domain));
}

size_t DropDuplicateRecipients(const Router& router, std::vector<mail::Recipient>& recipients) {
  if (recipients.size() < 2) {
    return 0;
  }
  const size_t before = recipients.size();
  // A transaction has few recipients as a rule: the keys kept so far in one vector, searched
  // in order, cost one allocation besides the keys themselves, where a hash set took its
  // buckets and one node per key on every commit. Past kLinearMax the set's lookups win.
  constexpr size_t kLinearMax = 16;
  if (recipients.size() <= kLinearMax) {
    std::vector<std::string> kept;
    kept.reserve(recipients.size());
    std::erase_if(recipients, [&](const mail::Recipient& r) {
      std::string key = router.DeliveryKey(r.address);
      if (std::find(kept.begin(), kept.end(), key) != kept.end()) {
        return true;
      }
      kept.push_back(std::move(key));
      return false;
    });
    return before - recipients.size();
  }
  std::unordered_set<std::string> seen;
  seen.reserve(recipients.size());
  std::erase_if(recipients, [&](const mail::Recipient& r) {
    return !seen.insert(router.DeliveryKey(r.address)).second;
  });
  return before - recipients.size();
}

bool SafePathComponent(std::string_view component) {
  if (component.empty() || component == "." || component == "..") {
    return false;
  }
  for (char c : component) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '/' || c == '\\' || u < 0x20 || u == 0x7F) {
      return false;
    }
  }
  return true;
}

bool SafeLocalPart(std::string_view local_part) {
  local_part = Unquoted(local_part);
  // A leading '.' also rules out "." and "..".
  return SafePathComponent(local_part) && local_part.front() != '.';
}

}  // namespace relais::routing
