#include "protocols/smtp/address.h"

#include <arpa/inet.h>

#include <cstring>

#include "core/base/strings.h"

namespace relais::smtp {
namespace {

constexpr size_t kLocalPartMax = 64;  // RFC 5321 4.5.3.1.1
constexpr size_t kDomainMax = 255;    // RFC 5321 4.5.3.1.2
constexpr size_t kPathMax = 256;      // RFC 5321 4.5.3.1.3, brackets included.

// RFC 5322 atext.
bool IsAtext(unsigned char c) {
  return base::IsAsciiAlpha(c) || base::IsAsciiDigit(c) ||
         std::strchr("!#$%&'*+-/=?^_`{|}~", c) != nullptr;
}

// Scans a Dot-string (RFC 5321 4.1.2); UTF-8 bytes count as atext (RFC 6531 3.3). Returns
// the length consumed, 0 on a syntax error.
size_t ScanDotString(std::string_view s) {
  size_t i = 0;
  bool need_atom = true;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (IsAtext(c) || c >= 0x80) {
      need_atom = false;
      ++i;
    } else if (c == '.' && !need_atom) {
      need_atom = true;
      ++i;
    } else {
      break;
    }
  }
  return (i == 0 || need_atom) ? 0 : i;
}

// Scans a Quoted-string; returns the length including both quotes, 0 on error.
size_t ScanQuotedString(std::string_view s) {
  if (s.empty() || s[0] != '"') {
    return 0;
  }
  for (size_t i = 1; i < s.size(); ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c == '"') {
      return i + 1;
    }
    if (c == '\\') {  // quoted-pairSMTP = %d92 %d32-126
      if (i + 1 >= s.size() || s[i + 1] < 32 || s[i + 1] > 126) {
        return 0;
      }
      ++i;
    } else if (!((c >= 32 && c <= 126) || c >= 0x80)) {  // qtextSMTP, UTF-8 per RFC 6531.
      return 0;
    }
  }
  return 0;
}

// Domain = sub-domain *("." sub-domain); sub-domain = Let-dig [Ldh-str], or a U-label.
size_t ScanDomain(std::string_view s) {
  size_t i = 0;
  while (true) {
    const size_t label_start = i;
    while (i < s.size()) {
      const auto c = static_cast<unsigned char>(s[i]);
      if (base::IsAsciiAlpha(c) || base::IsAsciiDigit(c) || c >= 0x80 ||
          (c == '-' && i > label_start)) {
        ++i;
      } else {
        break;
      }
    }
    if (i == label_start || s[i - 1] == '-') {
      return 0;  // Empty label, or a label ending in a hyphen.
    }
    if (i < s.size() && s[i] == '.') {
      ++i;
      continue;
    }
    return i;
  }
}

// address-literal = "[" ( IPv4-address-literal / IPv6-address-literal /
//                         General-address-literal ) "]"
size_t ScanAddressLiteral(std::string_view s) {
  const size_t close = s.find(']');
  if (s.empty() || s[0] != '[' || close == std::string_view::npos || close < 2) {
    return 0;
  }
  const std::string_view inner = s.substr(1, close - 1);
  char buf[64];
  if (inner.size() >= sizeof(buf)) {
    return 0;
  }
  // Only what an IPv4 or IPv6 address is written with: inet_pton stops at a NUL, so without
  // this "[192.0.2.1<NUL>/../x]" would pass as its first part.
  const size_t tag = base::StartsWithIgnoreCase(inner, "IPv6:") ? 5 : 0;
  for (char ch : inner.substr(tag)) {
    if (!(base::IsAsciiDigit(static_cast<unsigned char>(ch)) || (ch >= 'a' && ch <= 'f') ||
          (ch >= 'A' && ch <= 'F') || ch == '.' || ch == ':')) {
      return 0;
    }
  }
  unsigned char addr[16];
  if (tag != 0) {
    std::memcpy(buf, inner.data() + 5, inner.size() - 5);
    buf[inner.size() - 5] = '\0';
    return inet_pton(AF_INET6, buf, addr) == 1 ? close + 1 : 0;
  }
  std::memcpy(buf, inner.data(), inner.size());
  buf[inner.size()] = '\0';
  if (inet_pton(AF_INET, buf, addr) == 1) {
    return close + 1;
  }
  // General-address-literal (Standardized-tag ":" 1*dcontent) is refused: IANA registers no
  // tag but IPv6, so nothing can deliver to one, and its dcontent may hold '/', "..", '%' and
  // the like, which would reach file names and next hops as the recipient domain.
  return 0;
}

// A-d-l = At-domain *( "," At-domain ) ":" ; obsolete source routes, accepted and ignored.
size_t ScanSourceRoute(std::string_view s) {
  size_t i = 0;
  while (true) {
    if (i >= s.size() || s[i] != '@') {
      return 0;
    }
    ++i;
    const size_t d = ScanDomain(s.substr(i));
    if (d == 0) {
      return 0;
    }
    i += d;
    if (i < s.size() && s[i] == ',') {
      ++i;
      continue;
    }
    return (i < s.size() && s[i] == ':') ? i + 1 : 0;
  }
}

}  // namespace

bool HasSenderRouting(std::string_view local_part) {
  // Quoted or not: "u@evil"@example.net, user%evil@example.net, evil!u@example.net. Inside a
  // quoted string a quoted-pair (backslash, then '%') is still a '%' to the next hop.
  for (char c : local_part) {
    if (c == '@' || c == '%' || c == '!') {
      return true;
    }
  }
  return false;
}

bool IsValidUtf8(std::string_view text) {
  size_t i = 0;
  while (i < text.size()) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t n;
    uint32_t cp;
    if ((c & 0xE0) == 0xC0) {
      n = 1;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      n = 2;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      n = 3;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (i + n >= text.size()) {  // Continuation bytes i+1 .. i+n must exist.
      return false;
    }
    for (size_t k = 1; k <= n; ++k) {
      const auto cc = static_cast<unsigned char>(text[i + k]);
      if ((cc & 0xC0) != 0x80) {
        return false;
      }
      cp = (cp << 6) | (cc & 0x3F);
    }
    static constexpr uint32_t kMin[] = {0, 0x80, 0x800, 0x10000};
    if (cp < kMin[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
      return false;
    }
    i += n + 1;
  }
  return true;
}

ParsedPath ParsePath(std::string_view text, PathKind kind, bool smtputf8) {
  ParsedPath out;
  out.error = PathError::kSyntax;
  if (text.empty() || text[0] != '<') {
    return out;
  }
  size_t i = 1;
  if (kind == PathKind::kReversePath && text.size() >= 2 && text[1] == '>') {
    out.error = PathError::kNone;
    out.rest = text.substr(2);
    return out;
  }
  if (kind == PathKind::kForwardPath && text.size() >= 12 &&
      base::EqualsIgnoreCase(text.substr(1, 10), "postmaster") && text[11] == '>') {
    out.error = PathError::kNone;
    out.mailbox = out.local_part = text.substr(1, 10);
    out.rest = text.substr(12);
    return out;
  }
  if (i < text.size() && text[i] == '@') {
    const size_t route = ScanSourceRoute(text.substr(i));
    if (route == 0) {
      return out;
    }
    i += route;
  }
  const size_t mailbox_start = i;
  const std::string_view after = text.substr(i);
  const size_t local =
      (!after.empty() && after[0] == '"') ? ScanQuotedString(after) : ScanDotString(after);
  if (local == 0) {
    return out;
  }
  out.local_part = after.substr(0, local);
  i += local;
  if (i >= text.size() || text[i] != '@') {
    return out;
  }
  ++i;
  const std::string_view domain_text = text.substr(i);
  const size_t domain = (!domain_text.empty() && domain_text[0] == '[')
                            ? ScanAddressLiteral(domain_text)
                            : ScanDomain(domain_text);
  if (domain == 0) {
    return out;
  }
  out.domain = domain_text.substr(0, domain);
  i += domain;
  if (i >= text.size() || text[i] != '>') {
    return out;
  }
  out.mailbox = text.substr(mailbox_start, i - mailbox_start);
  out.rest = text.substr(i + 1);
  if (out.local_part.size() > kLocalPartMax || out.domain.size() > kDomainMax || i + 1 > kPathMax) {
    out.error = PathError::kTooLong;
    return out;
  }
  if (!base::IsAscii(out.mailbox)) {
    if (!IsValidUtf8(out.mailbox)) {
      return out;
    }
    if (!smtputf8) {
      out.error = PathError::kNeedsSmtpUtf8;
      return out;
    }
  }
  out.error = PathError::kNone;
  return out;
}

}  // namespace relais::smtp
