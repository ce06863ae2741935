#include "protocols/http/request.h"

#include "core/base/strings.h"

namespace relais::http {

ParseStatus ParseRequestHead(std::string_view input, Request& out, size_t& head_bytes) {
  // The head ends at the first empty line.
  size_t end = std::string_view::npos;
  size_t skip = 0;
  for (size_t i = input.find('\n'); i != std::string_view::npos; i = input.find('\n', i + 1)) {
    if (i + 1 < input.size() && input[i + 1] == '\n') {
      end = i + 1, skip = 1;
      break;
    }
    if (i + 2 < input.size() && input[i + 1] == '\r' && input[i + 2] == '\n') {
      end = i + 1, skip = 2;
      break;
    }
  }
  if (end == std::string_view::npos) {
    return input.size() > kHeadBytesMax ? ParseStatus::kBad : ParseStatus::kIncomplete;
  }
  if (end + skip > kHeadBytesMax) {
    return ParseStatus::kBad;
  }
  head_bytes = end + skip;
  std::string_view line = input.substr(0, input.find('\n'));
  if (line.ends_with('\r')) {
    line.remove_suffix(1);
  }
  // METHOD SP request-target SP HTTP/1.x
  const size_t sp1 = line.find(' ');
  const size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp1 == 0 || sp2 == std::string_view::npos || sp2 == sp1 + 1 ||
      line.find(' ', sp2 + 1) != std::string_view::npos) {
    return ParseStatus::kBad;
  }
  const std::string_view version = line.substr(sp2 + 1);
  if (version != "HTTP/1.1" && version != "HTTP/1.0") {
    return ParseStatus::kBad;
  }
  out.method = line.substr(0, sp1);
  std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  if (!target.starts_with('/')) {
    return ParseStatus::kBad;
  }
  out.path = target.substr(0, target.find('?'));
  for (char c : line) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      return ParseStatus::kBad;
    }
  }
  return ParseStatus::kOk;
}

std::string Response(int status, std::string_view reason, std::string_view content_type,
                     std::string_view body, bool head_only) {
  std::string out =
      base::StrCat("HTTP/1.1 ", status, " ", reason, "\r\nContent-Type: ", content_type,
                   "\r\nContent-Length: ", body.size(), "\r\nConnection: close\r\n\r\n");
  if (!head_only) {
    out.append(body);
  }
  return out;
}

}  // namespace relais::http
