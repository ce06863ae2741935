#include "core/mail/envelope.h"

#include <utility>

namespace relais::mail {
namespace {

int HexValue(char c) {
  if (c >= '0' && c <= '9') {
    return c - '0';
  }
  if (c >= 'A' && c <= 'F') {
    return c - 'A' + 10;
  }
  return -1;  // RFC 3461 4: upper-case hex only.
}

}  // namespace

std::string NotifyText(uint8_t notify) {
  if ((notify & kNotifyNever) != 0) {
    return "NEVER";
  }
  std::string out;
  for (auto [bit, word] : {std::pair<uint8_t, std::string_view>{kNotifySuccess, "SUCCESS"},
                           {kNotifyFailure, "FAILURE"},
                           {kNotifyDelay, "DELAY"}}) {
    if ((notify & bit) != 0) {
      if (!out.empty()) {
        out.push_back(',');
      }
      out.append(word);
    }
  }
  return out;
}

bool XtextValid(std::string_view xtext) {
  for (size_t i = 0; i < xtext.size(); ++i) {
    const auto c = static_cast<unsigned char>(xtext[i]);
    if (c == '+') {
      if (i + 2 >= xtext.size() || HexValue(xtext[i + 1]) < 0 || HexValue(xtext[i + 2]) < 0) {
        return false;
      }
      i += 2;
    } else if (c < 33 || c > 126 || c == '=') {
      return false;
    }
  }
  return true;
}

std::string XtextDecode(std::string_view xtext) {
  std::string out;
  out.reserve(xtext.size());
  for (size_t i = 0; i < xtext.size(); ++i) {
    if (xtext[i] == '+' && i + 2 < xtext.size() && HexValue(xtext[i + 1]) >= 0 &&
        HexValue(xtext[i + 2]) >= 0) {
      out.push_back(static_cast<char>(HexValue(xtext[i + 1]) * 16 + HexValue(xtext[i + 2])));
      i += 2;
    } else {
      out.push_back(xtext[i]);
    }
  }
  return out;
}

}  // namespace relais::mail
