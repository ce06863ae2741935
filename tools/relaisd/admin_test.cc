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

}  // namespace
}  // namespace relais::relaisd
