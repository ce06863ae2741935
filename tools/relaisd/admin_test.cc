#include "tools/relaisd/admin.h"

#include <gtest/gtest.h>

#include "core/base/strings.h"

namespace relais::relaisd {
namespace {

TEST(AdminTest, ParsesRequests) {
  auto q = ParseAdminRequest("queue ls state=deferred domain=Example.COM sender=a@b json");
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_EQ(q->op, AdminOp::kList);
  EXPECT_EQ(q->state, "deferred");
  EXPECT_EQ(q->domain, "example.com");
  EXPECT_EQ(q->sender, "a@b");
  EXPECT_TRUE(q->json);
  const auto id = mail::MessageId::Make(1, 3, 7);
  q = ParseAdminRequest(base::StrCat("queue show ", id.ToString()));
  ASSERT_TRUE(q.ok());
  EXPECT_EQ(q->id, id);
  q = ParseAdminRequest("queue flush example.org");
  ASSERT_TRUE(q.ok());
  EXPECT_EQ(q->domain, "example.org");
  EXPECT_FALSE(q->id.has_value());
  EXPECT_TRUE(ParseAdminRequest("status").ok());
  q = ParseAdminRequest(base::StrCat("queue bounce ", id.ToString()));
  ASSERT_TRUE(q.ok());
  EXPECT_EQ(q->op, AdminOp::kBounce);
}

TEST(AdminTest, RefusesMalformedRequestsWithAReason) {
  for (const char* bad :
       {"", "queue", "queue frobnicate", "queue show", "queue show nope", "queue ls state=gone",
        "queue delete", "launch missiles", "queue ls extra"}) {
    auto q = ParseAdminRequest(bad);
    EXPECT_FALSE(q.ok()) << bad;
    EXPECT_FALSE(q.status().message().empty()) << bad;
  }
}

TEST(AdminTest, SingleMessageRequestsGoToTheOwningShard) {
  AdminQuery q;
  q.id = mail::MessageId::Make(1, 5, 1);
  EXPECT_EQ(AdminTargets(q, 4), std::vector<uint32_t>{1});  // Adopted: 5 mod 4.
  q.id.reset();
  EXPECT_EQ(AdminTargets(q, 3), (std::vector<uint32_t>{0, 1, 2}));
}

TEST(AdminTest, FormatsMergedAnswers) {
  AdminQuery q;
  q.op = AdminOp::kList;
  std::vector<AdminAnswer> answers(2);
  MessageView m;
  m.id = "b";
  m.state = "deferred";
  m.sender = "x@y";
  m.last_reply = "451 4.3.0 later";
  m.recipients = {{"r@example.com", "pending"}, {"done@example.com", "delivered"}};
  answers[1].messages.push_back(m);
  m.id = "a";
  m.last_reply.clear();
  answers[0].messages.push_back(m);
  const std::string text = FormatAdminResponse(q, answers);
  EXPECT_TRUE(text.starts_with("OK\n"));
  EXPECT_LT(text.find("\na "), text.find("\nb "));  // Sorted by ID across shards.
  EXPECT_NE(text.find("451 4.3.0 later"), std::string::npos);
  EXPECT_EQ(text.find("done@example.com"), std::string::npos);  // Only pending ones listed.
  EXPECT_NE(text.find("2 message(s)"), std::string::npos);
  q.json = true;
  EXPECT_NE(FormatAdminResponse(q, answers).find("\"last_reply\":\"451 4.3.0 later\""),
            std::string::npos);
  answers[1].error = "busy";
  EXPECT_EQ(FormatAdminResponse(q, answers), "ERROR busy\n");
}

TEST(AdminTest, ParsesTheQueueViewsAndTheDestinationCommands) {
  auto q = ParseAdminRequest("queue summary json");
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_EQ(q->op, AdminOp::kSummary);
  EXPECT_TRUE(q->json);
  q = ParseAdminRequest(
      "queue ls state=ready destination=mx1.Example.net older-than=2h sender=a@b domain=c.d");
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_EQ(q->state, "queued");  // ready is queued, in-flight is active.
  EXPECT_EQ(q->destination, "mx1.Example.net");
  EXPECT_EQ(q->older_than_ms, 2 * 3'600'000u);
  q = ParseAdminRequest("queue ls state=in-flight");
  ASSERT_TRUE(q.ok());
  EXPECT_EQ(q->state, "active");
  q = ParseAdminRequest("dest ls json");
  ASSERT_TRUE(q.ok());
  EXPECT_EQ(q->op, AdminOp::kDestList);
  q = ParseAdminRequest("dest show mx:a.example,b.example json");
  ASSERT_TRUE(q.ok());
  EXPECT_EQ(q->op, AdminOp::kDestShow);
  EXPECT_EQ(q->destination, "mx:a.example,b.example");
  q = ParseAdminRequest("dest suspend gmail-smtp-in.l.google.com for=30m reason=421 too  many");
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_EQ(q->op, AdminOp::kDestSuspend);
  EXPECT_EQ(q->destination, "gmail-smtp-in.l.google.com");
  EXPECT_EQ(q->duration_ms, 30 * 60'000u);
  EXPECT_EQ(q->reason, "421 too  many");  // The rest of the line, spaces kept.
  q = ParseAdminRequest("dest resume x.example");
  ASSERT_TRUE(q.ok());
  EXPECT_EQ(q->op, AdminOp::kDestResume);
  EXPECT_EQ(AdminTargets(*q, 3), (std::vector<uint32_t>{0, 1, 2}));
}

TEST(AdminTest, RefusesClientTextThatIsUnboundedOrNotPrintable) {
  const std::string long_word(kAdminWordBytesMax + 1, 'a');
  const std::string long_reason(kAdminReasonBytesMax + 1, 'r');
  for (const std::string& bad :
       {std::string("dest suspend"), std::string("dest show"), std::string("dest frob x"),
        std::string("queue ls older-than=5x"), std::string("queue ls older-than=m"),
        std::string("dest suspend x for=0m"), std::string("dest suspend x for=99999999d"),
        std::string("dest show x\x01y"), std::string("dest show ") + long_word,
        std::string("dest suspend x reason=") + long_reason,
        std::string("dest suspend x reason=a\tb"), std::string("queue ls destination=\xc3\xa9"),
        std::string("queue summary extra"), std::string("dest ls x"),
        std::string("queue ls for=1h")}) {
    auto q = ParseAdminRequest(bad);
    EXPECT_FALSE(q.ok()) << bad;
    // The error never echoes raw bytes the parser refused.
    EXPECT_EQ(q.status().message().find('\x01'), std::string_view::npos);
  }
}

TEST(AdminTest, ParsesDurations) {
  EXPECT_EQ(ParseAdminDuration("45s"), 45'000u);
  EXPECT_EQ(ParseAdminDuration("30m"), 1'800'000u);
  EXPECT_EQ(ParseAdminDuration("2h"), 7'200'000u);
  EXPECT_EQ(ParseAdminDuration("1d"), 86'400'000u);
  EXPECT_EQ(ParseAdminDuration("0m"), 0u);
  for (const char* bad : {"", "m", "5", "5x", "-5m", "5 m", "1.5h", "367d", "1234567890s"}) {
    EXPECT_FALSE(ParseAdminDuration(bad).has_value()) << bad;
  }
}

TEST(AdminTest, SummaryMergesShardsByDestinationKey) {
  EXPECT_EQ(SummaryBucketBoundsMs().size(), 9u);  // 5 ... 1280 minutes.
  AdminQuery q;
  q.op = AdminOp::kSummary;
  std::vector<AdminAnswer> answers(2);
  auto row = [](std::string key, std::string name, std::vector<uint64_t> buckets) {
    SummaryRow r;
    r.key = std::move(key);
    r.name = std::move(name);
    r.buckets = std::move(buckets);
    for (uint64_t n : r.buckets) {
      r.total += n;
    }
    return r;
  };
  answers[0].summary = {row("mx:a", "mx.a.example", {1, 0, 0, 0, 0, 0, 0, 0, 0, 2}),
                        row("", "(not yet routed)", {1, 0, 0, 0, 0, 0, 0, 0, 0, 0})};
  answers[1].summary = {row("mx:a", "mx.a.example", {0, 3, 0, 0, 0, 0, 0, 0, 0, 0}),
                        row("mx:b", "mx.b.example", {0, 0, 0, 0, 1, 0, 0, 0, 0, 0})};
  const std::string text = FormatAdminResponse(q, answers);
  ASSERT_TRUE(text.starts_with("OK\n")) << text;
  EXPECT_NE(text.find("1280+"), std::string::npos);
  // TOTAL first, then the largest destination: 6 for mx.a (1 + 2 + 3).
  const size_t total = text.find("TOTAL");
  const size_t a = text.find("mx.a.example");
  const size_t b = text.find("mx.b.example");
  const size_t unrouted = text.find("(not yet routed)");
  ASSERT_NE(total, std::string::npos);
  EXPECT_LT(total, a);
  EXPECT_LT(a, b);
  EXPECT_LT(a, unrouted);
  const std::string columns = "mx.a.example" + std::string(11, ' ') + "6" + std::string(6, ' ') +
                              "1" + std::string(6, ' ') + "3";
  EXPECT_NE(text.find(columns), std::string::npos) << text;
  q.json = true;
  const std::string json = FormatAdminResponse(q, answers);
  EXPECT_NE(json.find("\"bucket_bounds_minutes\":[5,10,20,40,80,160,320,640,1280]"),
            std::string::npos)
      << json;
  EXPECT_NE(json.find("\"total\":{\"key\":\"\",\"name\":\"TOTAL\",\"total\":8,"
                      "\"buckets\":[2,3,0,0,1,0,0,0,0,2]}"),
            std::string::npos)
      << json;
  EXPECT_NE(json.find("{\"key\":\"mx:a\",\"name\":\"mx.a.example\",\"total\":6,"
                      "\"buckets\":[1,3,0,0,0,0,0,0,0,2]}"),
            std::string::npos)
      << json;
}

TEST(AdminTest, DestinationsMergeByKeyWithTheWorstState) {
  std::vector<AdminAnswer> answers(2);
  delivery::DestinationView d;
  d.key = "mx:a";
  d.name = "mx.a.example";
  d.connections_allowed = 10;
  d.configured.connections_max = 10;
  d.queued = 5;
  d.delivered = 7;
  answers[0].destinations.push_back(d);
  d.state = delivery::DestinationState::kSuspended;
  d.reason = "relaisctl: maintenance";
  d.suspended_until_ms = 2'000'000;
  d.queued = 1;
  d.connections_allowed = 5;
  answers[1].destinations.push_back(d);
  d = {};
  d.key = "mx:b";
  d.name = "mx.b.example";
  d.queued = 100;
  answers[1].destinations.push_back(d);
  answers[0].now_ms = answers[1].now_ms = 1'000'000;
  const auto merged = MergeDestinations(answers);
  ASSERT_EQ(merged.size(), 2u);
  EXPECT_EQ(merged[0].key, "mx:b");  // Most queued first.
  EXPECT_EQ(merged[1].state, delivery::DestinationState::kSuspended);
  EXPECT_EQ(merged[1].reason, "relaisctl: maintenance");
  EXPECT_EQ(merged[1].queued, 6u);
  EXPECT_EQ(merged[1].delivered, 14u);
  EXPECT_EQ(merged[1].connections_allowed, 15u);
  AdminQuery q;
  q.op = AdminOp::kDestList;
  const std::string text = FormatAdminResponse(q, answers);
  EXPECT_NE(text.find("suspended"), std::string::npos) << text;
  EXPECT_NE(text.find("2 destination(s)"), std::string::npos) << text;
  q.json = true;
  EXPECT_NE(FormatAdminResponse(q, answers)
                .find("\"key\":\"mx:a\",\"name\":\"mx.a.example\",\"domain\":\"\",\"state\":"
                      "\"suspended\",\"reason\":\"relaisctl: maintenance\","
                      "\"suspended_for_ms\":1000000"),
            std::string::npos);
  q.op = AdminOp::kDestShow;
  q.destination = "nowhere";
  answers[0].destinations.clear();
  answers[1].destinations.clear();
  EXPECT_EQ(FormatAdminResponse(q, answers), "ERROR no destination nowhere\n");
  q.op = AdminOp::kDestSuspend;
  EXPECT_EQ(FormatAdminResponse(q, answers), "ERROR no destination nowhere\n");
  answers[1].affected = 1;
  EXPECT_EQ(FormatAdminResponse(q, answers), "OK\nsuspended on 1 shard(s)\n");
  answers[0].no_destinations = answers[1].no_destinations = true;
  EXPECT_TRUE(FormatAdminResponse(q, answers).starts_with("ERROR this daemon keeps no"));
}

}  // namespace
}  // namespace relais::relaisd
