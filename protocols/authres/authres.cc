// protocols/authres/authres.cc — see authres.h.
#include "protocols/authres/authres.h"

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "core/base/strings.h"

namespace relais::authres {

using base::EqualsIgnoreCase;
using base::StrAppend;
using base::StrCat;

namespace {

// RFC 2045 token: printable ASCII without SP, controls or tspecials.
bool IsToken(std::string_view v) {
  if (v.empty()) {
    return false;
  }
  for (char c : v) {
    if (c <= 0x20 || c >= 0x7F ||
        std::string_view("()<>@,;:\\\"/[]?=").find(c) != std::string_view::npos) {
      return false;
    }
  }
  return true;
}

// The length of the valid UTF-8 sequence (RFC 3629: no overlong forms, no surrogates, at most
// U+10FFFF) at the start of `v`, whose first byte is >= 0x80; 0 when there is none.
size_t Utf8Sequence(std::string_view v) {
  const auto b = [&](size_t i) { return static_cast<unsigned char>(v[i]); };
  const unsigned char c = b(0);
  size_t n = 0;
  unsigned char low = 0x80, high = 0xBF;  // Bounds of the second byte.
  if (c >= 0xC2 && c <= 0xDF) {
    n = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    low = c == 0xE0 ? 0xA0 : 0x80;
    high = c == 0xED ? 0x9F : 0xBF;
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    low = c == 0xF0 ? 0x90 : 0x80;
    high = c == 0xF4 ? 0x8F : 0xBF;
  } else {
    return 0;
  }
  if (v.size() < n || b(1) < low || b(1) > high) {
    return 0;
  }
  for (size_t i = 2; i < n; ++i) {
    if (b(i) < 0x80 || b(i) > 0xBF) {
      return 0;
    }
  }
  return n;
}

// What we write of text that came from outside (a From domain, a HELO name, a reason quoting
// either): valid UTF-8 is kept, every other byte >= 0x80 and every control character (CR and
// LF included: they would end the field) becomes '?', and at most `max` bytes are kept, so
// the field stays well-formed and within RFC 5322's line length whatever a client sent.
std::string Clean(std::string_view v, size_t max = 512) {
  std::string out;
  out.reserve(std::min(v.size(), max));
  for (size_t i = 0; i < v.size() && out.size() < max;) {
    const auto c = static_cast<unsigned char>(v[i]);
    if (c < 0x80) {
      out.push_back(c < 0x20 || c == 0x7F ? '?' : static_cast<char>(c));
      ++i;
      continue;
    }
    const size_t n = Utf8Sequence(v.substr(i));
    if (n == 0 || out.size() + n > max) {
      out.push_back('?');
      ++i;
      continue;
    }
    out.append(v.substr(i, n));
    i += n;
  }
  return out;
}

std::string Quoted(std::string_view v) {
  std::string out = "\"";
  for (char c : v) {
    if (c == '"' || c == '\\') {
      out.push_back('\\');
    }
    out.push_back(c);
  }
  return out + "\"";
}

// RFC 8601 2.2: a property value is a token, or an addr-spec / domain-name written as is (the
// '@' of a mailbox is allowed there); anything else is quoted.
std::string Value(std::string_view raw) {
  const std::string clean = Clean(raw);
  const std::string_view v = clean;
  const size_t at = v.rfind('@');
  if (IsToken(v) || (at != std::string_view::npos && at > 0 && IsToken(v.substr(at + 1)) &&
                     IsToken(v.substr(0, at)))) {
    return std::string(v);
  }
  return Quoted(v);
}

bool IsWsp(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

}  // namespace

std::string Header(std::string_view authserv_id, const std::vector<MethodResult>& results) {
  std::string out = StrCat("Authentication-Results: ", authserv_id, ";");
  if (results.empty()) {
    return out + " none\r\n";
  }
  for (size_t i = 0; i < results.size(); ++i) {
    const MethodResult& r = results[i];
    StrAppend(&out, "\r\n\t", r.method, "=", r.result);
    if (!r.reason.empty()) {
      StrAppend(&out, " reason=", Quoted(Clean(r.reason, 256)));
    }
    for (const auto& [property, value] : r.properties) {
      StrAppend(&out, " ", property, "=", Value(value));
    }
    if (i + 1 < results.size()) {
      out.push_back(';');
    }
  }
  return out + "\r\n";
}

std::string AuthservId(std::string_view value) {
  size_t i = 0;
  int depth = 0;
  // Skip CFWS: whitespace and (nested) comments.
  while (i < value.size()) {
    const char c = value[i];
    if (depth > 0) {
      if (c == '\\') {
        ++i;
      } else if (c == '(') {
        ++depth;
      } else if (c == ')') {
        --depth;
      }
      ++i;
      continue;
    }
    if (c == '(') {
      ++depth;
      ++i;
    } else if (IsWsp(c)) {
      ++i;
    } else {
      break;
    }
  }
  size_t end = i;
  while (end < value.size() && !IsWsp(value[end]) && value[end] != ';' && value[end] != '(') {
    ++end;
  }
  std::string id(value.substr(i, end - i));
  if (id.size() >= 2 && id.front() == '"' && id.back() == '"') {
    id = id.substr(1, id.size() - 2);
  }
  return id;
}

bool SameAuthservId(std::string_view a, std::string_view b) {
  // A trailing dot names the same host; a forger may add one.
  if (a.ends_with('.')) {
    a.remove_suffix(1);
  }
  if (b.ends_with('.')) {
    b.remove_suffix(1);
  }
  return !a.empty() && EqualsIgnoreCase(a, b);
}

int RemoveForged(std::string& message, std::string_view authserv_id) {
  // One pass over the header: fields are kept by moving them down over the removed ones, so
  // the cost is linear in the message whatever the number of forged fields (removing each in
  // turn moved the rest of the message every time: 100 000 fields held a core 110 s).
  // A message without any is not written to at all.
  size_t write = 0;
  int removed = 0;
  size_t pos = 0;
  const size_t size = message.size();
  while (pos < size) {
    const std::string_view m = message;
    if (m.substr(pos).starts_with("\r\n")) {
      break;  // The body.
    }
    size_t end = pos;
    while (true) {  // The field and its continuation lines.
      const size_t eol = m.find("\r\n", end);
      end = eol == std::string_view::npos ? size : eol + 2;
      if (end >= size || (m[end] != ' ' && m[end] != '\t')) {
        break;
      }
    }
    const std::string_view field = m.substr(pos, end - pos);
    const size_t colon = field.find(':');
    std::string_view name = colon == std::string_view::npos ? "" : field.substr(0, colon);
    while (!name.empty() && (name.back() == ' ' || name.back() == '\t')) {
      name.remove_suffix(1);
    }
    const bool forged = EqualsIgnoreCase(name, "Authentication-Results") &&
                        SameAuthservId(AuthservId(field.substr(colon + 1)), authserv_id);
    if (forged) {
      ++removed;
    } else {
      if (write != pos) {
        // Down over removed fields (write < pos): an overlapping forward move, in place.
        std::char_traits<char>::move(message.data() + write, message.data() + pos, end - pos);
      }
      write += end - pos;
    }
    pos = end;
  }
  if (removed > 0) {
    // The rest (the empty line and the body) moves down once.
    message.erase(write, pos - write);
  }
  return removed;
}

}  // namespace relais::authres
