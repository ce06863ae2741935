// Fuzzes SPF evaluation: the input's first line is example.com's SPF record, the other lines
// are the TXT records every other name gets (picked by a hash of the name); A, AAAA, MX and PTR
// answers derive from the name too. Checks that the evaluation converges (every replay asks a
// new question, and the limits bound them), and that its outcome is consistent.
#include <cstdint>
#include <functional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "core/base/check.h"
#include "protocols/spf/spf.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace relais;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  std::vector<std::string> lines;
  size_t start = 0;
  while (start <= text.size() && lines.size() < 64) {
    const size_t nl = text.find('\n', start);
    lines.emplace_back(text.substr(start, nl == std::string_view::npos ? nl : nl - start));
    if (nl == std::string_view::npos) {
      break;
    }
    start = nl + 1;
  }
  for (const char* ip : {"192.0.2.7", "2001:db8::7"}) {
    spf::Request request;
    request.ip = *mail::IpAddress::Parse(ip);
    request.sender = "user@example.com";
    request.helo = "mx.example.org";
    spf::Evaluation e(request);
    std::set<std::pair<std::string, uint16_t>> asked;
    int rounds = 0;
    while (!e.Run()) {
      const dns::Question& q = e.needed();
      RELAIS_CHECK(asked.insert({q.name, static_cast<uint16_t>(q.type)}).second);  // Never twice.
      RELAIS_CHECK(++rounds < 2000);
      const size_t h = std::hash<std::string>{}(q.name);
      dns::Answer a{dns::AnswerStatus::kOk};
      switch (h % 7) {
        case 0:
          a.status = dns::AnswerStatus::kNxDomain;
          break;
        case 1:
          a.status = dns::AnswerStatus::kNoData;
          break;
        case 2:
          a.status = h % 11 == 0 ? dns::AnswerStatus::kTemporary : dns::AnswerStatus::kOk;
          break;
        default:
          break;
      }
      if (q.type == dns::RecordType::kTxt) {
        a.texts = {q.name == "example.com" ? lines[0] : lines[h % lines.size()]};
      } else if (q.type == dns::RecordType::kMx) {
        for (size_t i = 0; i < h % 13; ++i) {
          a.mx.push_back({static_cast<uint16_t>(i), "mx" + std::to_string(i) + "." + q.name});
        }
      } else if (q.type == dns::RecordType::kPtr) {
        a.texts = {"host.example.com", lines[h % lines.size()]};
      } else {
        a.addresses = {
            *mail::IpAddress::Parse(q.type == dns::RecordType::kA ? "192.0.2.7" : "2001:db8::7")};
      }
      e.Provide(q, a);
    }
    const spf::Outcome& o = e.outcome();
    RELAIS_CHECK(o.dns_terms <= 11 && o.void_lookups <= 3);
    RELAIS_CHECK(o.explanation.empty() || o.result == spf::Result::kFail);
    RELAIS_CHECK(o.result != spf::Result::kPermError || !o.problem.empty());
    RELAIS_CHECK(!spf::ResultName(o.result).empty());
  }
  return 0;
}
