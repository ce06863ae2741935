// protocols/http/request.h — the little HTTP/1.x that a metrics endpoint needs: parse one
// request head, build one response. Sans-I/O; pure functions; thread-safe.
//
// Only GET and HEAD are served; a request body is never read (the connection closes after
// each response). A head over 8 KiB, a line without CRLF (bare LF is tolerated) or a
// malformed request line is kBad, answered 400 by the caller.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace relais::http {

inline constexpr size_t kHeadBytesMax = 8192;

enum class ParseStatus : unsigned char { kIncomplete, kOk, kBad };

struct Request {
  std::string_view method;  // Views into the parsed input.
  std::string_view path;    // Without the query string.
};

// Parses the head at the start of `input`; on kOk, `head_bytes` is its length.
[[nodiscard]] ParseStatus ParseRequestHead(std::string_view input, Request& out,
                                           size_t& head_bytes);

// "HTTP/1.1 <status> <reason>" with Content-Type, Content-Length and Connection: close. For a
// HEAD request pass `head_only` to send the headers without the body.
[[nodiscard]] std::string Response(int status, std::string_view reason,
                                   std::string_view content_type, std::string_view body,
                                   bool head_only = false);

}  // namespace relais::http
