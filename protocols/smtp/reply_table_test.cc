#include "protocols/smtp/reply_table.h"

#include <gtest/gtest.h>

namespace relais::smtp {
namespace {

// Every row: a valid code, an enhanced code of the same class (RFC 3463 3.1) where one is
// sent, text, and "closes" exactly for 221 and 421.
TEST(ReplyTableTest, EveryRowIsWellFormed) {
  for (int i = 0; i < static_cast<int>(Reply::kCount); ++i) {
    const Reply reply = static_cast<Reply>(i);
    const ReplyRow& row = Row(reply);
    SCOPED_TRACE(i);
    EXPECT_GE(row.code, 200);
    EXPECT_LT(row.code, 600);
    EXPECT_FALSE(row.text.empty());
    if (!row.enhanced.empty()) {
      EXPECT_EQ(row.enhanced[0], static_cast<char>('0' + row.code / 100));
      EXPECT_EQ(row.enhanced[1], '.');
    } else {
      // Only the greeting, the HELO answer and 354 go without one.
      EXPECT_TRUE(reply == Reply::kGreeting || reply == Reply::kHeloOk ||
                  reply == Reply::kStartData);
    }
    EXPECT_EQ(row.closes, row.code == 221 || row.code == 421);
    EXPECT_EQ(IsError(reply), row.code >= 400);
    EXPECT_EQ(IsTransient(reply), row.code >= 400 && row.code < 500);
  }
}

TEST(ReplyTableTest, FormatsWithArgument) {
  std::string out;
  AppendReply(out, Reply::kQueued, "abc");
  AppendReply(out, Reply::kGreeting, "mx.test");
  AppendReply(out, Reply::kRelayDenied);
  EXPECT_EQ(out,
            "250 2.0.0 OK: queued as abc\r\n220 mx.test ESMTP Relais\r\n"
            "554 5.7.1 Relay access denied\r\n");
}

}  // namespace
}  // namespace relais::smtp
