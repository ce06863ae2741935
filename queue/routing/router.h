// queue/routing/router.h — recipient domain → destination, from the [[routes]] of the config.
//
// The first route whose domain pattern matches wins (exact, "*.suffix", "*"). The router also
// decides at RCPT time whether a recipient can be taken at all: a domain routed nowhere, a
// reject route, or an address that would escape a Maildir root are refused then, so that
// nothing is accepted that can only be lost later. Immutable after construction; shared
// read-only by the shards.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "core/config/config.h"
#include "core/mail/envelope.h"

namespace relais::routing {

enum class [[nodiscard]] Verdict : uint8_t{
    kAccept,
    kNoRoute,          // No route matches the domain.
    kRejectedByRoute,  // The matching route is a reject route.
    kUnsafeLocalPart,  // Would name a path outside the Maildir root (or a hidden one).
    kUnsafeDomain,     // The domain would: '/', NUL, a control byte, "." or "..", empty.
};

// Where a Maildir recipient's mail goes, or why it cannot go anywhere.
struct MaildirPath {
  Verdict verdict = Verdict::kAccept;  // kAccept, kUnsafeLocalPart or kUnsafeDomain.
  std::string directory;               // Set only for kAccept.
};

class Router {
 public:
  // `default_domain` stands in for a recipient without a domain (<Postmaster>).
  Router(std::vector<config::Route> routes, std::string default_domain);

  // The route for `domain`, or null.
  [[nodiscard]] const config::Route* Find(std::string_view domain) const;
  // The RCPT-time verdict. For a Maildir route it builds the path exactly as delivery will
  // (MaildirFor), so what passes here is what delivery writes.
  [[nodiscard]] Verdict Check(std::string_view local_part, std::string_view domain) const;

  // Maildir directory for a recipient of a maildir route: the route's path with {domain} and
  // {local} replaced, or <path>/<domain>/<local part> when it has neither; both lowercased, a
  // quoted local part without its quotes. Every path component built from the address is
  // checked here, where the path is built (SafePathComponent; a local part may also not start
  // with '.'): anything else is refused with kUnsafeLocalPart or kUnsafeDomain, whatever the
  // caller checked before.
  [[nodiscard]] MaildirPath MaildirFor(const config::Route& route, std::string_view local_part,
                                       std::string_view domain) const;

  // What makes two recipients of one transaction the same delivery, so that a recipient
  // named many times is delivered once: the Maildir directory for a Maildir route (domain and
  // local part case-folded, quotes removed, as MaildirFor builds it), otherwise the local part
  // as written and the domain case-folded (RFC 5321 2.4: only the domain is case-insensitive
  // to everyone but the mailbox's own host).
  [[nodiscard]] std::string DeliveryKey(std::string_view address) const;

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

// Removes the recipients whose DeliveryKey an earlier one has (the first keeps its DSN
// parameters); returns how many were removed. Memory: one key per recipient, so bounded by
// limits.recipients_max.
size_t DropDuplicateRecipients(const Router& router, std::vector<mail::Recipient>& recipients);

// True when `component`, text from an address, can be one file-name component under a root:
// not empty, not "." or "..", no '/', '\\', NUL, control byte or DEL.
[[nodiscard]] bool SafePathComponent(std::string_view component);

// True when `local_part` can name a directory under a Maildir root: SafePathComponent without
// its surrounding quotes if quoted, and not starting with '.' (no hidden directories: Maildir++
// keeps its folders there).
[[nodiscard]] bool SafeLocalPart(std::string_view local_part);

}  // namespace relais::routing
