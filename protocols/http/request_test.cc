// protocols/http/request_test.cc — request heads, good and bad, and responses.
#include "protocols/http/request.h"

#include <gtest/gtest.h>

#include <string>

namespace relais::http {
namespace {

TEST(Http, ParsesAGet) {
  const std::string in = "GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n\r\nrest";
  Request r;
  size_t n = 0;
  ASSERT_EQ(ParseRequestHead(in, r, n), ParseStatus::kOk);
  EXPECT_EQ(r.method, "GET");
  EXPECT_EQ(r.path, "/metrics");
  EXPECT_EQ(in.substr(n), "rest");
}

TEST(Http, WaitsForTheWholeHeadInAnyPieces) {
  const std::string in = "GET /healthz HTTP/1.0\r\nHost: a\r\n\r\n";
  for (size_t cut = 0; cut < in.size(); ++cut) {
    Request r;
    size_t n = 0;
    EXPECT_EQ(ParseRequestHead(in.substr(0, cut), r, n), ParseStatus::kIncomplete) << cut;
  }
  Request r;
  size_t n = 0;
  EXPECT_EQ(ParseRequestHead("GET / HTTP/1.1\n\n", r, n), ParseStatus::kOk);  // Bare LFs.
  EXPECT_EQ(n, 16u);
}

TEST(Http, RefusesMalformedHeads) {
  for (std::string_view bad :
       {"GET\r\n\r\n", "GET /x\r\n\r\n", "GET  /x HTTP/1.1\r\n\r\n", "GET x HTTP/1.1\r\n\r\n",
        "GET /x HTTP/2\r\n\r\n", "GET /x HTTP/1.1 more\r\n\r\n", " /x HTTP/1.1\r\n\r\n",
        "GET /\x01 HTTP/1.1\r\n\r\n"}) {
    Request r;
    size_t n = 0;
    EXPECT_EQ(ParseRequestHead(bad, r, n), ParseStatus::kBad) << bad;
  }
  Request r;
  size_t n = 0;
  EXPECT_EQ(ParseRequestHead(std::string(kHeadBytesMax + 1, 'a'), r, n), ParseStatus::kBad);
}

TEST(Http, Responses) {
  EXPECT_EQ(Response(200, "OK", "text/plain", "ok\n"),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n"
            "Connection: close\r\n\r\nok\n");
  EXPECT_EQ(Response(200, "OK", "text/plain", "ok\n", /*head_only=*/true),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n"
            "Connection: close\r\n\r\n");
}

}  // namespace
}  // namespace relais::http
