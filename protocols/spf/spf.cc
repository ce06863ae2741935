// protocols/spf/spf.cc — see spf.h. Section numbers are RFC 7208's.
#include "protocols/spf/spf.h"

#include <sys/socket.h>

#include <algorithm>
#include <optional>
#include <vector>

#include "core/base/strings.h"

namespace relais::spf {

using base::AsciiLower;
using base::AsciiStrToLower;
using base::EqualsIgnoreCase;
using base::Split;
using base::StrCat;

std::string_view ResultName(Result result) {
  switch (result) {
    case Result::kNone:
      return "none";
    case Result::kNeutral:
      return "neutral";
    case Result::kPass:
      return "pass";
    case Result::kFail:
      return "fail";
    case Result::kSoftFail:
      return "softfail";
    case Result::kTempError:
      return "temperror";
    case Result::kPermError:
      return "permerror";
  }
  return "none";
}

namespace {

constexpr uint32_t kDnsTermsMax = 10;    // 4.6.4
constexpr uint32_t kVoidLookupsMax = 2;  // 4.6.4
constexpr size_t kMxNamesMax = 10;       // 4.6.4
constexpr size_t kPtrNamesMax = 10;      // 4.6.4 / 5.5
constexpr size_t kDomainBytesMax = 253;

// 4.3: a usable <domain>: labels of 1..63 bytes, at most 253 in all, at least two labels.
bool ValidDomain(std::string_view domain) {
  if (domain.ends_with('.')) {
    domain.remove_suffix(1);
  }
  if (domain.empty() || domain.size() > kDomainBytesMax) {
    return false;
  }
  const std::vector<std::string_view> labels = Split(domain, '.');
  if (labels.size() < 2) {
    return false;
  }
  for (std::string_view label : labels) {
    if (label.empty() || label.size() > 63) {
      return false;
    }
  }
  return true;
}

// 4.6.1 toplabel: alphanumerics and '-', not all digits, not starting or ending with '-'.
bool ValidTopLabel(std::string_view label) {
  if (label.empty() || label.front() == '-' || label.back() == '-') {
    return false;
  }
  bool alpha = false;
  for (char c : label) {
    if (!(base::IsAsciiAlpha(c) || base::IsAsciiDigit(c) || c == '-')) {
      return false;
    }
    alpha = alpha || base::IsAsciiAlpha(c) || c == '-';
  }
  return alpha;
}

// Parses "/N" cidr digits (no leading zeros beyond "0").
bool ParseCidr(std::string_view digits, uint8_t max, uint8_t& out) {
  if (digits.empty() || digits.size() > 3 || (digits.size() > 1 && digits[0] == '0')) {
    return false;
  }
  uint32_t n = 0;
  for (char c : digits) {
    if (!base::IsAsciiDigit(c)) {
      return false;
    }
    n = n * 10 + static_cast<uint32_t>(c - '0');
  }
  if (n > max) {
    return false;
  }
  out = static_cast<uint8_t>(n);
  return true;
}

// The digits after a trailing `separator` in `arg` ("/24" or "//64" at its very end), or
// nullopt when `arg` does not end so. For "/", a slash that is half of "//" does not count.
std::optional<std::string_view> TrailingDigits(std::string_view arg, std::string_view separator) {
  const size_t at = arg.rfind(separator);
  if (at == std::string_view::npos) {
    return std::nullopt;
  }
  const std::string_view digits = arg.substr(at + separator.size());
  if (digits.empty() || !std::all_of(digits.begin(), digits.end(), base::IsAsciiDigit)) {
    return std::nullopt;
  }
  if (separator == "/" && at > 0 && arg[at - 1] == '/') {
    return std::nullopt;
  }
  return digits;
}

// 4.3 and 4.8: a name a DNS question can carry: labels of 1..63 bytes (an empty one only at
// the end), at most 253 bytes. A macro expansion can produce anything else.
bool ValidQueryName(std::string_view name) {
  if (name.ends_with('.')) {
    name.remove_suffix(1);
  }
  if (name.empty() || name.size() > kDomainBytesMax) {
    return false;
  }
  for (std::string_view label : Split(name, '.')) {
    if (label.empty() || label.size() > 63) {
      return false;
    }
  }
  return true;
}

// True when `a` and `b` agree in their first `bits` bits (the host bits of either are
// ignored, as CIDR notation in SPF records intends).
bool SamePrefix(const mail::IpAddress& a, const mail::IpAddress& b, uint32_t bits) {
  if (a.family != b.family) {
    return false;
  }
  for (uint32_t i = 0; bits > 0; ++i) {
    const uint8_t mask = bits >= 8 ? 0xFF : static_cast<uint8_t>(0xFF << (8 - bits));
    if ((a.bytes[i] & mask) != (b.bytes[i] & mask)) {
      return false;
    }
    bits = bits >= 8 ? bits - 8 : 0;
  }
  return true;
}

enum class Qualifier : uint8_t { kPass, kFail, kSoftFail, kNeutral };
enum class Kind : uint8_t { kAll, kInclude, kA, kMx, kPtr, kIp4, kIp6, kExists };

struct Directive {
  Qualifier qualifier = Qualifier::kPass;
  Kind kind = Kind::kAll;
  std::string text;         // As written, for the outcome.
  std::string domain_spec;  // Empty: the current domain (a, mx, ptr).
  uint8_t cidr4 = 32;
  uint8_t cidr6 = 128;
  mail::IpNetwork network;  // ip4, ip6.
};

struct Record {
  std::vector<Directive> directives;
  std::optional<std::string> redirect;
  std::optional<std::string> exp;
};

Result ResultOf(Qualifier q) {
  switch (q) {
    case Qualifier::kPass:
      return Result::kPass;
    case Qualifier::kFail:
      return Result::kFail;
    case Qualifier::kSoftFail:
      return Result::kSoftFail;
    case Qualifier::kNeutral:
      return Result::kNeutral;
  }
  return Result::kNeutral;
}

// 7.1 macro-string syntax; `exp` allows c, r and t.
bool ValidMacroString(std::string_view s, bool exp) {
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (c != '%') {
      if (static_cast<unsigned char>(c) < 0x21 || static_cast<unsigned char>(c) > 0x7E) {
        if (!(exp && c == ' ')) {
          return false;
        }
      }
      continue;
    }
    if (i + 1 >= s.size()) {
      return false;
    }
    const char n = s[i + 1];
    if (n == '%' || n == '_' || n == '-') {
      ++i;
      continue;
    }
    if (n != '{') {
      return false;
    }
    const size_t close = s.find('}', i + 2);
    if (close == std::string_view::npos || close == i + 2) {
      return false;
    }
    const std::string_view body = s.substr(i + 2, close - i - 2);
    const char letter = AsciiLower(body[0]);
    if (std::string_view("slodiphv").find(letter) == std::string_view::npos &&
        !(exp && std::string_view("crt").find(letter) != std::string_view::npos)) {
      return false;
    }
    size_t j = 1;
    size_t digits = 0;
    while (j < body.size() && base::IsAsciiDigit(body[j])) {
      ++j;
      ++digits;
    }
    if (digits > 0 && body.substr(1, digits).find_first_not_of('0') == std::string_view::npos) {
      return false;  // 7.3: a DIGIT transformer must be nonzero.
    }
    if (j < body.size() && (body[j] == 'r' || body[j] == 'R')) {
      ++j;
    }
    for (; j < body.size(); ++j) {
      if (std::string_view(".-+,/_=").find(body[j]) == std::string_view::npos) {
        return false;
      }
    }
    i = close;
  }
  return true;
}

// 4.6.1 domain-spec: a macro-string ending in "." toplabel ["."] or in a macro-expand.
bool ValidDomainSpec(std::string_view s) {
  if (s.empty() || !ValidMacroString(s, false)) {
    return false;
  }
  if (s.ends_with('}')) {
    return true;
  }
  std::string_view t = s;
  if (t.ends_with('.')) {
    t.remove_suffix(1);
  }
  const size_t dot = t.rfind('.');
  if (dot == std::string_view::npos) {
    return false;
  }
  std::string_view top = t.substr(dot + 1);
  // The toplabel may itself end a macro ("%{d}.com" is fine; "%{d}" handled above).
  return ValidTopLabel(top);
}

bool ParseRecord(std::string_view text, Record& out, std::string& problem) {
  // "v=spf1" already checked by the caller; terms follow, separated by one or more spaces.
  std::string_view rest = text.substr(6);
  for (std::string_view term : Split(rest, ' ')) {
    if (term.empty()) {
      continue;
    }
    // Modifier: name "=" macro-string, the name starting with a letter and not being a
    // mechanism with a qualifier.
    const size_t eq = term.find('=');
    const size_t colon_or_slash = term.find_first_of(":/");
    if (eq != std::string_view::npos && base::IsAsciiAlpha(term[0]) &&
        (colon_or_slash == std::string_view::npos || eq < colon_or_slash)) {
      const std::string_view name = term.substr(0, eq);
      const std::string_view value = term.substr(eq + 1);
      for (char c : name) {
        if (!(base::IsAsciiAlpha(c) || base::IsAsciiDigit(c) || c == '-' || c == '_' || c == '.')) {
          problem = StrCat("bad modifier name in '", term, "'");
          return false;
        }
      }
      if (EqualsIgnoreCase(name, "redirect") || EqualsIgnoreCase(name, "exp")) {
        std::optional<std::string>& slot =
            EqualsIgnoreCase(name, "redirect") ? out.redirect : out.exp;
        if (slot) {
          problem = StrCat("'", name, "' appears twice");
          return false;
        }
        if (!ValidDomainSpec(value)) {
          problem = StrCat("bad domain in '", term, "'");
          return false;
        }
        slot = std::string(value);
      } else if (!ValidMacroString(value, false)) {
        problem = StrCat("bad macro string in '", term, "'");
        return false;
      }
      continue;
    }
    Directive d;
    d.text = std::string(term);
    std::string_view m = term;
    switch (m[0]) {
      case '+':
        d.qualifier = Qualifier::kPass;
        m.remove_prefix(1);
        break;
      case '-':
        d.qualifier = Qualifier::kFail;
        m.remove_prefix(1);
        break;
      case '~':
        d.qualifier = Qualifier::kSoftFail;
        m.remove_prefix(1);
        break;
      case '?':
        d.qualifier = Qualifier::kNeutral;
        m.remove_prefix(1);
        break;
      default:
        break;
    }
    const size_t name_end = m.find_first_of(":/");
    const std::string name = AsciiStrToLower(m.substr(0, name_end));
    std::string_view arg = name_end == std::string_view::npos ? "" : m.substr(name_end);
    auto bad = [&](std::string_view why) {
      problem = StrCat(why, " in '", term, "'");
      return false;
    };
    if (name == "all") {
      if (!arg.empty()) {
        return bad("'all' takes no argument");
      }
      d.kind = Kind::kAll;
    } else if (name == "include" || name == "exists") {
      d.kind = name == "include" ? Kind::kInclude : Kind::kExists;
      if (!arg.starts_with(':') || !ValidDomainSpec(arg.substr(1))) {
        return bad("a domain is required");
      }
      d.domain_spec = std::string(arg.substr(1));
    } else if (name == "a" || name == "mx") {
      d.kind = name == "a" ? Kind::kA : Kind::kMx;
      // dual-cidr-length at the end: [/n4][//n6]. Only a trailing "/digits" or "//digits"
      // is one: a domain-spec may contain '/' and ':' itself (5.3, 5.4, 7.1 macro-literal).
      if (const std::optional<std::string_view> digits = TrailingDigits(arg, "//")) {
        if (!ParseCidr(*digits, 128, d.cidr6)) {
          return bad("bad IPv6 prefix length");
        }
        arg.remove_suffix(digits->size() + 2);
      }
      if (const std::optional<std::string_view> digits = TrailingDigits(arg, "/")) {
        if (!ParseCidr(*digits, 32, d.cidr4)) {
          return bad("bad IPv4 prefix length");
        }
        arg.remove_suffix(digits->size() + 1);
      }
      if (!arg.empty()) {
        if (!arg.starts_with(':') || !ValidDomainSpec(arg.substr(1))) {
          return bad("bad domain");
        }
        d.domain_spec = std::string(arg.substr(1));
      }
    } else if (name == "ptr") {
      d.kind = Kind::kPtr;
      if (!arg.empty()) {
        if (!arg.starts_with(':') || !ValidDomainSpec(arg.substr(1))) {
          return bad("bad domain");
        }
        d.domain_spec = std::string(arg.substr(1));
      }
    } else if (name == "ip4" || name == "ip6") {
      d.kind = name == "ip4" ? Kind::kIp4 : Kind::kIp6;
      if (!arg.starts_with(':')) {
        return bad("an address is required");
      }
      std::string_view value = arg.substr(1);
      const size_t slash = value.find('/');
      const std::string_view address = value.substr(0, slash);
      std::optional<mail::IpAddress> ip = mail::IpAddress::Parse(address);
      const bool colon = address.find(':') != std::string_view::npos;
      // ip6 takes IPv6 text only, the mixed notation ::FFFF:1.2.3.4 included (RFC 4291 2.2),
      // which Parse unmaps; ip4 takes dotted IPv4 only.
      const bool family_ok = ip && (d.kind == Kind::kIp4 ? ip->family == AF_INET && !colon : colon);
      if (!family_ok) {
        return bad(d.kind == Kind::kIp4 ? "bad IPv4 address" : "bad IPv6 address");
      }
      uint8_t prefix = d.kind == Kind::kIp4 ? 32 : 128;
      if (slash != std::string_view::npos &&
          !ParseCidr(value.substr(slash + 1), d.kind == Kind::kIp4 ? 32 : 128, prefix)) {
        return bad("bad prefix length");
      }
      if (d.kind == Kind::kIp6 && ip->family == AF_INET) {
        // An IPv4-mapped network. Clients are compared unmapped (an IPv4 client is IPv4), so
        // a prefix that covers the mapping compares as the IPv4 network it names.
        if (prefix >= 96) {
          prefix = static_cast<uint8_t>(prefix - 96);
        } else {
          mail::IpAddress mapped;
          mapped.family = AF_INET6;
          mapped.bytes[10] = 0xFF;
          mapped.bytes[11] = 0xFF;
          std::copy_n(ip->bytes.begin(), 4, mapped.bytes.begin() + 12);
          ip = mapped;
        }
      }
      d.network.base = *ip;
      d.network.prefix_bits = prefix;
    } else {
      return bad("unknown mechanism");
    }
    out.directives.push_back(std::move(d));
  }
  return true;
}

}  // namespace

// One replay of check_host over the answers collected so far.
struct Evaluator {
  Evaluation& e;
  uint32_t terms = 0;
  uint32_t voids = 0;
  bool need = false;  // A question is missing: stop and ask.
  std::string problem;

  // The answer to (name, type), or nullptr after setting need.
  const dns::Answer* Lookup(std::string_view name, dns::RecordType type) {
    const std::string key = dns::QuestionKey(name);
    const auto it = e.answers_.find({key, static_cast<uint16_t>(type)});
    if (it != e.answers_.end()) {
      return &it->second;
    }
    need = true;
    e.needed_ = {key, type};
    return nullptr;
  }

  // Counts a term that costs DNS; false (with the problem set) past the limit.
  bool CountTerm() {
    if (++terms > kDnsTermsMax) {
      problem = StrCat("more than ", kDnsTermsMax, " DNS-querying terms");
      return false;
    }
    return true;
  }
  bool CountVoid(const dns::Answer& a) {
    if (a.void_lookup() && ++voids > kVoidLookupsMax) {
      problem = StrCat("more than ", kVoidLookupsMax, " void lookups");
      return false;
    }
    return true;
  }

  [[nodiscard]] bool V4() const { return e.request_.ip.family == AF_INET; }

  // %{i}: dotted IPv4, or 32 dot-separated nibbles for IPv6.
  [[nodiscard]] std::string IpMacro() const {
    const mail::IpAddress& ip = e.request_.ip;
    if (V4()) {
      return ip.ToString();
    }
    std::string out;
    static constexpr char kHex[] = "0123456789abcdef";
    for (int i = 0; i < 16; ++i) {
      if (i != 0) {
        out.push_back('.');
      }
      out.push_back(kHex[ip.bytes[i] >> 4]);
      out.push_back('.');
      out.push_back(kHex[ip.bytes[i] & 0xF]);
    }
    return out;
  }

  // The reverse-lookup name of the client IP.
  [[nodiscard]] std::string ReverseName() const {
    std::string name = IpMacro();
    std::vector<std::string_view> parts = Split(name, '.');
    std::reverse(parts.begin(), parts.end());
    std::string out;
    for (std::string_view p : parts) {
      out.append(p).push_back('.');
    }
    return out + (V4() ? "in-addr.arpa" : "ip6.arpa");
  }

  // Validated names of the client IP (5.5): PTR names whose A/AAAA include the IP. Returns
  // nullopt when an answer is missing.
  std::optional<std::vector<std::string>> ValidatedNames() {
    const dns::Answer* ptr = Lookup(ReverseName(), dns::RecordType::kPtr);
    if (ptr == nullptr) {
      return std::nullopt;
    }
    std::vector<std::string> out;
    if (ptr->status != dns::AnswerStatus::kOk) {
      return out;  // An error in the PTR lookup: no names (the mechanism does not match).
    }
    for (size_t i = 0; i < ptr->texts.size() && i < kPtrNamesMax; ++i) {
      const dns::Answer* a =
          Lookup(ptr->texts[i], V4() ? dns::RecordType::kA : dns::RecordType::kAaaa);
      if (a == nullptr) {
        return std::nullopt;
      }
      if (a->status == dns::AnswerStatus::kOk && std::find(a->addresses.begin(), a->addresses.end(),
                                                           e.request_.ip) != a->addresses.end()) {
        std::string n = ptr->texts[i];
        if (n.ends_with('.')) {
          n.pop_back();
        }
        out.push_back(std::move(n));
      }
    }
    return out;
  }

  // 7: expands a macro-string. nullopt: an answer is missing (need) or the syntax is bad
  // (problem set).
  std::optional<std::string> Expand(std::string_view s, std::string_view domain, bool exp) {
    std::string out;
    const std::string& sender = e.sender_;
    const size_t at = sender.rfind('@');
    const std::string local = at == std::string::npos ? "postmaster" : sender.substr(0, at);
    const std::string sender_domain = at == std::string::npos ? sender : sender.substr(at + 1);
    for (size_t i = 0; i < s.size(); ++i) {
      if (s[i] != '%') {
        out.push_back(s[i]);
        continue;
      }
      if (i + 1 >= s.size()) {
        problem = "a '%' ends a macro string";
        return std::nullopt;
      }
      const char n = s[++i];
      if (n == '%') {
        out.push_back('%');
        continue;
      }
      if (n == '_') {
        out.push_back(' ');
        continue;
      }
      if (n == '-') {
        out.append("%20");
        continue;
      }
      const size_t close = s.find('}', i);
      if (n != '{' || close == std::string_view::npos || close == i + 1) {
        problem = StrCat("bad macro in '", s, "'");
        return std::nullopt;
      }
      const std::string_view body = s.substr(i + 1, close - i - 1);
      i = close;
      const char letter = body[0];
      std::string value;
      switch (AsciiLower(letter)) {
        case 's':
          value =
              sender.find('@') == std::string::npos ? StrCat(local, "@", sender_domain) : sender;
          break;
        case 'l':
          value = local;
          break;
        case 'o':
          value = sender_domain;
          break;
        case 'd':
          value = std::string(domain);
          break;
        case 'i':
          value = IpMacro();
          break;
        case 'p': {
          const std::optional<std::vector<std::string>> names = ValidatedNames();
          if (!names) {
            return std::nullopt;
          }
          value = "unknown";
          // Prefer the domain itself, then a subdomain of it, then any validated name (7.3).
          for (const std::string& name : *names) {
            if (EqualsIgnoreCase(name, domain)) {
              value = name;
              break;
            }
          }
          if (value == "unknown") {
            for (const std::string& name : *names) {
              if (base::EndsWithIgnoreCase(name, StrCat(".", domain))) {
                value = name;
                break;
              }
            }
          }
          if (value == "unknown" && !names->empty()) {
            value = names->front();
          }
          break;
        }
        case 'v':
          value = V4() ? "in-addr" : "ip6";
          break;
        case 'h':
          value = e.request_.helo;
          break;
        case 'c':
        case 'r':
        case 't':
          if (!exp) {
            problem = StrCat("macro '", letter, "' outside exp");
            return std::nullopt;
          }
          if (AsciiLower(letter) == 'c') {
            value = e.request_.ip.ToString();
          } else if (AsciiLower(letter) == 'r') {
            value = e.request_.receiver;
          } else {
            value = StrCat(e.request_.now_unix_seconds);
          }
          break;
        default:
          problem = StrCat("unknown macro letter '", letter, "'");
          return std::nullopt;
      }
      // Transformers and delimiters.
      size_t j = 1;
      uint64_t keep = 0;
      bool has_digits = false;
      while (j < body.size() && base::IsAsciiDigit(body[j])) {
        keep = std::min<uint64_t>(keep * 10 + static_cast<uint64_t>(body[j] - '0'), 1000);
        has_digits = true;
        ++j;
      }
      if (has_digits && keep == 0) {
        problem = "a macro keeps zero parts";
        return std::nullopt;
      }
      bool reverse = false;
      if (j < body.size() && (body[j] == 'r' || body[j] == 'R')) {
        reverse = true;
        ++j;
      }
      std::string delimiters(body.substr(j));
      for (char c : delimiters) {
        if (std::string_view(".-+,/_=").find(c) == std::string_view::npos) {
          problem = StrCat("bad macro delimiter '", c, "'");
          return std::nullopt;
        }
      }
      if (has_digits || reverse || !delimiters.empty()) {
        if (delimiters.empty()) {
          delimiters = ".";
        }
        std::vector<std::string> parts;
        std::string part;
        for (char c : value) {
          if (delimiters.find(c) != std::string::npos) {
            parts.push_back(std::move(part));
            part.clear();
          } else {
            part.push_back(c);
          }
        }
        parts.push_back(std::move(part));
        if (reverse) {
          std::reverse(parts.begin(), parts.end());
        }
        if (has_digits && keep < parts.size()) {
          parts.erase(parts.begin(), parts.end() - static_cast<ptrdiff_t>(keep));
        }
        value.clear();
        for (size_t k = 0; k < parts.size(); ++k) {
          if (k != 0) {
            value.push_back('.');
          }
          value.append(parts[k]);
        }
      }
      if (letter >= 'A' && letter <= 'Z') {
        // URL-escape what is not unreserved (RFC 3986).
        std::string escaped;
        static constexpr char kHex[] = "0123456789ABCDEF";
        for (char c : value) {
          if (base::IsAsciiAlpha(c) || base::IsAsciiDigit(c) || c == '-' || c == '.' || c == '_' ||
              c == '~') {
            escaped.push_back(c);
          } else {
            escaped.push_back('%');
            escaped.push_back(kHex[static_cast<unsigned char>(c) >> 4]);
            escaped.push_back(kHex[static_cast<unsigned char>(c) & 0xF]);
          }
        }
        value = std::move(escaped);
      }
      out.append(value);
    }
    return out;
  }

  // A domain-spec expanded into a name to look up: over 253 bytes, left labels go (7.3).
  std::optional<std::string> Target(std::string_view spec, std::string_view domain) {
    if (spec.empty()) {
      return std::string(domain);
    }
    std::optional<std::string> name = Expand(spec, domain, false);
    if (!name) {
      return std::nullopt;
    }
    if (name->ends_with('.')) {
      name->pop_back();
    }
    while (name->size() > kDomainBytesMax) {
      const size_t dot = name->find('.');
      if (dot == std::string::npos) {
        break;
      }
      name->erase(0, dot + 1);
    }
    return name;
  }

  // Which of these outcomes a term produced.
  enum class Match : uint8_t { kYes, kNo, kError, kNeed };

  // A target name no DNS question can carry (an empty label, one over 63 bytes, usually from
  // a macro expansion) is not a DNS failure, so never temperror: nothing exists under it,
  // as for NXDOMAIN (4.3: a malformed name is treated as not found), so the mechanism does
  // not match and the lookup counts as void (4.6.4).
  Match MalformedTarget(std::string_view target, Result& error) {
    dns::Answer none;
    none.status = dns::AnswerStatus::kNxDomain;
    if (!CountVoid(none)) {
      error = Result::kPermError;
      return Match::kError;
    }
    if (problem.empty()) {
      problem = StrCat("'", target, "' is not a usable domain name");
    }
    return Match::kNo;
  }

  // Compares the client with a list of addresses under a prefix length.
  [[nodiscard]] bool Matches(const std::vector<mail::IpAddress>& addresses,
                             const Directive& d) const {
    for (const mail::IpAddress& a : addresses) {
      if (SamePrefix(a, e.request_.ip, V4() ? d.cidr4 : d.cidr6)) {
        return true;
      }
    }
    return false;
  }

  // Evaluates one mechanism; on kError, `error` says which result to return.
  Match Mechanism(const Directive& d, std::string_view domain, Result& error) {
    auto fail = [&](Result r) {
      error = r;
      return Match::kError;
    };
    const dns::RecordType address_type = V4() ? dns::RecordType::kA : dns::RecordType::kAaaa;
    // include, a, exists, mx and ptr: each costs a DNS term (4.6.4), then its domain-spec is
    // expanded (7) into `target`. Returns the match to give at once: permerror past the term
    // limit or for a bad expansion, kNeed while a macro's question is unanswered.
    std::optional<std::string> target;
    auto expand = [&]() -> std::optional<Match> {
      if (!CountTerm()) {
        return fail(Result::kPermError);
      }
      target = Target(d.domain_spec, domain);
      if (!target) {
        return need ? Match::kNeed : fail(Result::kPermError);
      }
      return std::nullopt;
    };
    switch (d.kind) {
      case Kind::kAll:
        return Match::kYes;
      case Kind::kIp4:
      case Kind::kIp6:
        return SamePrefix(d.network.base, e.request_.ip, d.network.prefix_bits) ? Match::kYes
                                                                                : Match::kNo;
      case Kind::kInclude: {
        if (const std::optional<Match> m = expand()) {
          return *m;
        }
        const std::optional<Result> r = CheckHost(*target, /*top=*/false);
        if (!r) {
          return Match::kNeed;
        }
        switch (*r) {
          case Result::kPass:
            return Match::kYes;
          case Result::kFail:
          case Result::kSoftFail:
          case Result::kNeutral:
            return Match::kNo;
          case Result::kTempError:
            return fail(Result::kTempError);
          case Result::kNone:
            if (problem.empty()) {
              problem = StrCat("include:", *target, " has no SPF record");
            }
            return fail(Result::kPermError);
          case Result::kPermError:
            return fail(Result::kPermError);
        }
        return Match::kNo;
      }
      case Kind::kA:
      case Kind::kExists: {
        if (const std::optional<Match> m = expand()) {
          return *m;
        }
        if (!ValidQueryName(*target)) {
          return MalformedTarget(*target, error);
        }
        // exists always asks for A records, whatever the client's family (5.7).
        const dns::Answer* a =
            Lookup(*target, d.kind == Kind::kExists ? dns::RecordType::kA : address_type);
        if (a == nullptr) {
          return Match::kNeed;
        }
        if (a->status == dns::AnswerStatus::kTemporary) {
          problem = StrCat("DNS failure looking up ", *target);
          return fail(Result::kTempError);
        }
        if (!CountVoid(*a)) {
          return fail(Result::kPermError);
        }
        if (d.kind == Kind::kExists) {
          return a->status == dns::AnswerStatus::kOk && !a->addresses.empty() ? Match::kYes
                                                                              : Match::kNo;
        }
        return a->status == dns::AnswerStatus::kOk && Matches(a->addresses, d) ? Match::kYes
                                                                               : Match::kNo;
      }
      case Kind::kMx: {
        if (const std::optional<Match> m = expand()) {
          return *m;
        }
        if (!ValidQueryName(*target)) {
          return MalformedTarget(*target, error);
        }
        const dns::Answer* mx = Lookup(*target, dns::RecordType::kMx);
        if (mx == nullptr) {
          return Match::kNeed;
        }
        if (mx->status == dns::AnswerStatus::kTemporary) {
          problem = StrCat("DNS failure looking up MX of ", *target);
          return fail(Result::kTempError);
        }
        if (!CountVoid(*mx)) {
          return fail(Result::kPermError);
        }
        if (mx->mx.size() > kMxNamesMax) {
          problem = StrCat(*target, " has more than ", kMxNamesMax, " MX records");
          return fail(Result::kPermError);
        }
        bool matched = false;
        for (const dns::MxRecord& r : mx->mx) {
          if (r.exchange.empty() || r.exchange == ".") {
            continue;  // Null MX (RFC 7505).
          }
          const dns::Answer* a = Lookup(r.exchange, address_type);
          if (a == nullptr) {
            return Match::kNeed;
          }
          if (a->status == dns::AnswerStatus::kTemporary) {
            problem = StrCat("DNS failure looking up ", r.exchange);
            return fail(Result::kTempError);
          }
          matched = matched || (a->status == dns::AnswerStatus::kOk && Matches(a->addresses, d));
        }
        return matched ? Match::kYes : Match::kNo;
      }
      case Kind::kPtr: {
        if (const std::optional<Match> m = expand()) {
          return *m;
        }
        const std::optional<std::vector<std::string>> names = ValidatedNames();
        if (!names) {
          return Match::kNeed;
        }
        for (const std::string& name : *names) {
          if (EqualsIgnoreCase(name, *target) ||
              base::EndsWithIgnoreCase(name, StrCat(".", *target))) {
            return Match::kYes;
          }
        }
        return Match::kNo;
      }
    }
    return Match::kNo;
  }

  // 6.2: the explanation for a fail; empty when there is none or it cannot be had.
  std::optional<std::string> Explanation(const Record& record, std::string_view domain) {
    if (!record.exp) {
      return std::string();
    }
    const std::string saved_problem = problem;
    const std::optional<std::string> target = Target(*record.exp, domain);
    if (!target) {
      if (need) {
        return std::nullopt;
      }
      problem = saved_problem;
      return std::string();
    }
    if (!ValidQueryName(*target)) {
      return std::string();  // 6.2: no explanation when its name is not one.
    }
    const dns::Answer* txt = Lookup(*target, dns::RecordType::kTxt);
    if (txt == nullptr) {
      return std::nullopt;
    }
    if (txt->status != dns::AnswerStatus::kOk || txt->texts.size() != 1) {
      return std::string();
    }
    std::optional<std::string> text = Expand(txt->texts[0], domain, true);
    if (!text) {
      if (need) {
        return std::nullopt;
      }
      problem = saved_problem;
      return std::string();
    }
    // Only printable ASCII makes it into an SMTP reply.
    std::erase_if(*text, [](char c) { return c < 0x20 || c > 0x7E; });
    return text;
  }

  // 4: check_host(). nullopt: an answer is missing. `top` is false inside include (whose
  // explanation and matched term are not the outcome's).
  std::optional<Result> CheckHost(const std::string& domain, bool top) {
    if (!ValidDomain(domain)) {
      problem = StrCat("'", domain, "' is not a usable domain name");
      return Result::kNone;
    }
    const dns::Answer* txt = Lookup(domain, dns::RecordType::kTxt);
    if (txt == nullptr) {
      return std::nullopt;
    }
    if (txt->status == dns::AnswerStatus::kTemporary) {
      problem = StrCat("DNS failure looking up TXT of ", domain);
      return Result::kTempError;
    }
    const std::string* found = nullptr;
    for (const std::string& t : txt->texts) {
      if (t.size() >= 6 && EqualsIgnoreCase(std::string_view(t).substr(0, 6), "v=spf1") &&
          (t.size() == 6 || t[6] == ' ')) {
        if (found != nullptr) {
          problem = StrCat(domain, " has more than one SPF record");
          return Result::kPermError;
        }
        found = &t;
      }
    }
    if (found == nullptr) {
      problem = StrCat(domain, " has no SPF record");
      return Result::kNone;
    }
    Record record;
    std::string syntax;
    if (!ParseRecord(*found, record, syntax)) {
      problem = StrCat("SPF record of ", domain, ": ", syntax);
      return Result::kPermError;
    }
    for (const Directive& d : record.directives) {
      Result error = Result::kNeutral;
      const Match m = Mechanism(d, domain, error);
      if (m == Match::kNeed) {
        return std::nullopt;
      }
      if (m == Match::kError) {
        return error;
      }
      if (m == Match::kYes) {
        const Result r = ResultOf(d.qualifier);
        if (top) {
          e.outcome_.mechanism = d.text;
        }
        if (r == Result::kFail && top) {
          const std::optional<std::string> text = Explanation(record, domain);
          if (!text) {
            return std::nullopt;
          }
          e.outcome_.explanation = *text;
        }
        return r;
      }
    }
    if (record.redirect) {
      if (!CountTerm()) {
        return Result::kPermError;
      }
      const std::optional<std::string> target = Target(*record.redirect, domain);
      if (!target) {
        return need ? std::nullopt : std::optional<Result>(Result::kPermError);
      }
      const std::optional<Result> r = CheckHost(*target, top);
      if (r && *r == Result::kNone) {
        problem = StrCat("redirect=", *target, ": no SPF record there");
        return Result::kPermError;
      }
      return r;
    }
    if (top) {
      e.outcome_.mechanism = "default";
    }
    return Result::kNeutral;
  }
};

Evaluation::Evaluation(Request request) : request_(std::move(request)) {
  if (request_.helo_identity || request_.sender.empty()) {
    sender_ = StrCat("postmaster@", request_.helo);  // 2.3 and 2.4.
  } else {
    sender_ = request_.sender;
    if (sender_.starts_with('@') || sender_.find('@') == std::string::npos) {
      sender_ = StrCat("postmaster@",
                       sender_.find('@') == std::string::npos ? sender_ : sender_.substr(1));
    }
  }
  outcome_.domain = sender_.substr(sender_.rfind('@') + 1);
}

void Evaluation::Provide(const dns::Question& question, dns::Answer answer) {
  answers_[{dns::QuestionKey(question.name), static_cast<uint16_t>(question.type)}] =
      std::move(answer);
}

bool Evaluation::Run() {
  Evaluator ev{*this};
  const std::string domain = outcome_.domain;
  outcome_.mechanism.clear();
  outcome_.explanation.clear();
  const std::optional<Result> r = ev.CheckHost(domain, /*top=*/true);
  if (!r) {
    return false;
  }
  outcome_.result = *r;
  outcome_.dns_terms = ev.terms;
  outcome_.void_lookups = ev.voids;
  outcome_.problem = (*r == Result::kPermError || *r == Result::kTempError || *r == Result::kNone)
                         ? ev.problem
                         : "";
  return true;
}

}  // namespace relais::spf
