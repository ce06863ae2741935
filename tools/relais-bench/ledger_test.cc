// tools/relais-bench/ledger_test.cc — accounting and the XSTAT round trip.
#include "tools/relais-bench/ledger.h"

#include <gtest/gtest.h>

namespace relais::bench {
namespace {

TEST(Ledger, CountsDuplicatesAboveTheRecipientCount) {
  Ledger ledger;
  ledger.Delivered("r", 0, 1, 1);
  ledger.Delivered("r", 1, 2, 2);
  ledger.Delivered("r", 1, 1, 2);  // One recipient again: a duplicate.
  ledger.Delivered("r", 5, 1, 2);  // Split over two transactions: not a duplicate.
  ledger.Delivered("r", 5, 1, 2);
  ledger.Delivered("other", 0, 1, 1);
  ledger.Dropped("r", 3);
  ledger.Dropped("r", 2);
  ledger.Dropped("r", 3);
  ledger.Delivered("r", kSeqMax, 1, 1);
  const RunAccount& r = ledger.runs().at("r");
  EXPECT_EQ(r.duplicates, 1u);
  EXPECT_EQ(r.messages(), 3u);
  EXPECT_EQ(r.delivered_total(), 6u);
  EXPECT_EQ(r.dropped, (std::vector<uint64_t>{2, 3}));
  EXPECT_EQ(ledger.untracked(), 1u);
}

TEST(Ledger, StatReplyRoundTrips) {
  Ledger ledger;
  for (uint64_t s = 0; s < 1000; ++s) {
    if (s % 7 != 3) {
      ledger.Delivered("run1", s, s % 11 == 0 ? 2 : 1, 1);
    } else {
      ledger.Dropped("run1", s);
    }
  }
  const std::string reply = ledger.StatReply("run1");
  EXPECT_TRUE(reply.starts_with("250-run run1\r\n"));
  EXPECT_TRUE(reply.ends_with("250 end\r\n"));
  const absl::StatusOr<RunAccount> parsed = ParseStatReply(reply);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  const RunAccount& original = ledger.runs().at("run1");
  EXPECT_EQ(parsed->duplicates, original.duplicates);
  EXPECT_EQ(parsed->dropped, original.dropped);
  for (uint64_t s = 0; s < 1000; ++s) {
    EXPECT_EQ(parsed->DeliveriesOf(s), original.DeliveriesOf(s)) << s;
  }
  // An unknown run has an empty account.
  const absl::StatusOr<RunAccount> none = ParseStatReply(ledger.StatReply("nope"));
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none->messages(), 0u);
}

TEST(Ledger, BadStatRepliesAreErrors) {
  for (std::string_view bad :
       {"", "250-run x\r\n", "451 4.0.0 no\r\n", "250-received 5-2:1\r\n250 end\r\n",
        "250-received 1\r\n250 end\r\n", "250-dropped x\r\n250 end\r\n",
        "250-received 0-99999999999:1\r\n250 end\r\n"}) {
    EXPECT_FALSE(ParseStatReply(bad).ok()) << bad;
  }
}

}  // namespace
}  // namespace relais::bench
