// core/base/strings.h — small string helpers over std::string_view.
//
// Debian 12's Abseil is built with its own absl::string_view (ABSL_OPTION_USE_STD_STRING_VIEW
// is 0), so absl::StrCat and friends do not accept std::string_view. These few helpers cover
// what we need without conversions at every call. Pure functions, thread-safe.
#pragma once

#include <charconv>
#include <concepts>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/string_view.h"

namespace relais::base {

namespace internal {
inline void AppendOne(std::string& out, std::string_view s) { out.append(s); }
inline void AppendOne(std::string& out, const char* s) { out.append(s); }
inline void AppendOne(std::string& out, const std::string& s) { out.append(s); }
inline void AppendOne(std::string& out, char c) { out.push_back(c); }
#if !ABSL_USES_STD_STRING_VIEW
// Status messages arrive as absl::string_view.
inline void AppendOne(std::string& out, absl::string_view s) { out.append(s.data(), s.size()); }
#endif
template <std::integral T>
requires(!std::same_as<T, char> && !std::same_as<T, bool>) void AppendOne(std::string& out,
                                                                          T value) {
  char buf[24];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), value);
  out.append(buf, static_cast<size_t>(end - buf));
}
}  // namespace internal

template <typename... Args>
void StrAppend(std::string* out, const Args&... args) {
  (internal::AppendOne(*out, args), ...);
}

template <typename... Args>
[[nodiscard]] std::string StrCat(const Args&... args) {
  std::string out;
  StrAppend(&out, args...);
  return out;
}

// ASCII character classes (RFC 5234 B.1), the same in every locale.
[[nodiscard]] constexpr bool IsAsciiAlpha(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}
[[nodiscard]] constexpr bool IsAsciiDigit(char c) { return c >= '0' && c <= '9'; }
// WSP: space or horizontal tab.
[[nodiscard]] constexpr bool IsWsp(char c) { return c == ' ' || c == '\t'; }
// The characters folding white space is made of (RFC 5322 3.2.2): WSP, CR and LF.
[[nodiscard]] constexpr bool IsFwsChar(char c) { return IsWsp(c) || c == '\r' || c == '\n'; }
// A byte outside US-ASCII (8BITMIME content, UTF-8 in SMTPUTF8 addresses).
[[nodiscard]] constexpr bool IsEightBit(char c) { return static_cast<unsigned char>(c) >= 0x80; }
[[nodiscard]] constexpr bool IsAscii(std::string_view text) {
  for (char c : text) {
    if (IsEightBit(c)) {
      return false;
    }
  }
  return true;
}

// `text` without the leading and trailing characters `is_space` accepts (IsWsp, IsFwsChar).
[[nodiscard]] constexpr std::string_view Trim(std::string_view text,
                                              bool (*is_space)(char) = IsWsp) {
  while (!text.empty() && is_space(text.front())) {
    text.remove_prefix(1);
  }
  while (!text.empty() && is_space(text.back())) {
    text.remove_suffix(1);
  }
  return text;
}

// The pieces of `text` between `delimiter`s, empty ones included: "a;;b;" gives a, "", b, "";
// "" gives one empty piece. Views into `text`.
[[nodiscard]] inline std::vector<std::string_view> Split(std::string_view text, char delimiter) {
  std::vector<std::string_view> parts;
  size_t start = 0;
  while (true) {
    const size_t at = text.find(delimiter, start);
    parts.push_back(text.substr(start, at == std::string_view::npos ? at : at - start));
    if (at == std::string_view::npos) {
      return parts;
    }
    start = at + 1;
  }
}

[[nodiscard]] inline char AsciiLower(char c) {
  return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

[[nodiscard]] inline bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) {
    return false;
  }
  for (size_t i = 0; i < a.size(); ++i) {
    if (AsciiLower(a[i]) != AsciiLower(b[i])) {
      return false;
    }
  }
  return true;
}

[[nodiscard]] inline bool StartsWithIgnoreCase(std::string_view text, std::string_view prefix) {
  return text.size() >= prefix.size() && EqualsIgnoreCase(text.substr(0, prefix.size()), prefix);
}

[[nodiscard]] inline bool EndsWithIgnoreCase(std::string_view text, std::string_view suffix) {
  return text.size() >= suffix.size() &&
         EqualsIgnoreCase(text.substr(text.size() - suffix.size()), suffix);
}

[[nodiscard]] inline std::string AsciiStrToLower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    c = AsciiLower(c);
  }
  return out;
}

[[nodiscard]] inline std::string StrJoin(const std::vector<std::string>& parts,
                                         std::string_view separator) {
  std::string out;
  for (size_t i = 0; i < parts.size(); ++i) {
    if (i > 0) {
      out.append(separator);
    }
    out.append(parts[i]);
  }
  return out;
}

}  // namespace relais::base
