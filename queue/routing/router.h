// queue/routing/router.h — recipient domain → destination, from the [[routes]] of the config.
//
// The first route whose domain pattern matches wins (exact, "*.suffix", "*"). The router also
// decides at RCPT time whether a recipient can be taken at all: a domain routed nowhere, a
// reject route, or a local part that would escape a Maildir root are refused then, so that
// nothing is accepted that can only be lost later. Immutable after construction; shared
// read-only by the shards.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "core/config/config.h"

namespace relais::routing {

enum class [[nodiscard]] Verdict : uint8_t{
    kAccept,
    kNoRoute,          // No route matches the domain.
    kRejectedByRoute,  // The matching route is a reject route.
    kUnsafeLocalPart,  // Would name a path outside the Maildir root.
};

class Router {
 public:
  // `default_domain` stands in for a recipient without a domain (<Postmaster>).
  Router(std::vector<config::Route> routes, std::string default_domain);

  // The route for `domain`, or null.
  [[nodiscard]] const config::Route* Find(std::string_view domain) const;
  [[nodiscard]] Verdict Check(std::string_view local_part, std::string_view domain) const;

  // Maildir directory for a recipient of a maildir route: the route's path with {domain} and
  // {local} replaced, or <path>/<domain>/<local part> when it has neither; both lowercased.
  // `local_part` must have passed Check.
  [[nodiscard]] std::string MaildirFor(const config::Route& route, std::string_view local_part,
                                       std::string_view domain) const;
  [[nodiscard]] const std::string& default_domain() const { return default_domain_; }
  [[nodiscard]] const std::vector<config::Route>& routes() const { return routes_; }
  // Position of `route` (which Find returned) in routes().
  [[nodiscard]] size_t IndexOf(const config::Route& route) const {
    return static_cast<size_t>(&route - routes_.data());
  }

  // Splits "local@domain" at the last '@'; a bare local part gets the default domain.
  void Split(std::string_view address, std::string_view& local_part,
             std::string_view& domain) const;

 private:
  std::vector<config::Route> routes_;
  std::string default_domain_;
};

// True when `local_part` can name a directory under a Maildir root: no '/', NUL or control
// bytes, not "." or "..", not starting with '.', and without its surrounding quotes if quoted.
[[nodiscard]] bool SafeLocalPart(std::string_view local_part);

}  // namespace relais::routing
