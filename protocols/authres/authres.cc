// protocols/authres/authres.cc — see authres.h.
#include "protocols/authres/authres.h"

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

std::string Quoted(std::string_view v) {
  std::string out = "\"";
  for (char c : v) {
    if (c == '"' || c == '\\') {
      out.push_back('\\');
    }
    if (c == '\r' || c == '\n') {
      continue;
    }
    out.push_back(c);
  }
  return out + "\"";
}

// RFC 8601 2.2: a property value is a token, or an addr-spec / domain-name written as is (the
// '@' of a mailbox is allowed there); anything else is quoted.
std::string Value(std::string_view v) {
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
      StrAppend(&out, " reason=", Quoted(r.reason));
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

int RemoveForged(std::string& message, std::string_view authserv_id) {
  // The fields to drop, found first: most messages have none, and are then not copied.
  std::vector<std::pair<size_t, size_t>> drop;  // Offset, length.
  const std::string_view m = message;
  size_t pos = 0;
  while (pos < m.size()) {
    if (m.substr(pos).starts_with("\r\n")) {
      break;  // The body.
    }
    size_t end = pos;
    while (true) {  // The field and its continuation lines.
      const size_t eol = m.find("\r\n", end);
      end = eol == std::string_view::npos ? m.size() : eol + 2;
      if (end >= m.size() || (m[end] != ' ' && m[end] != '\t')) {
        break;
      }
    }
    const std::string_view field = m.substr(pos, end - pos);
    const size_t colon = field.find(':');
    std::string_view name = colon == std::string_view::npos ? "" : field.substr(0, colon);
    while (!name.empty() && (name.back() == ' ' || name.back() == '\t')) {
      name.remove_suffix(1);
    }
    if (EqualsIgnoreCase(name, "Authentication-Results") &&
        EqualsIgnoreCase(AuthservId(field.substr(colon + 1)), authserv_id)) {
      drop.emplace_back(pos, end - pos);
    }
    pos = end;
  }
  for (auto it = drop.rbegin(); it != drop.rend(); ++it) {
    message.erase(it->first, it->second);
  }
  return static_cast<int>(drop.size());
}

}  // namespace relais::authres
