#include "queue/spool/record.h"

#include <gtest/gtest.h>

namespace relais::spool {
namespace {

MessageRecord Sample() {
  MessageRecord r;
  r.id = mail::MessageId::Make(123, 1, 7);
  r.received_us = 456;
  r.envelope.sender = "a@example.org";
  r.envelope.recipients = {{"b@example.com"}, {"c@example.com"}};
  r.envelope.helo = "client.example";
  r.envelope.client_address = "192.0.2.1";
  r.envelope.body_type = mail::BodyType::k8BitMime;
  r.envelope.smtputf8 = true;
  return r;
}

TEST(RecordTest, MessageRoundTrips) {
  std::string out;
  const size_t body_offset = EncodeMessage(Sample(), "Received: x\r\n", "Body\r\n", out);
  DecodedRecord d;
  ASSERT_EQ(DecodeRecord(out, d), DecodeStatus::kOk);
  EXPECT_EQ(d.type, RecordType::kMessage);
  EXPECT_EQ(d.size, out.size());
  EXPECT_EQ(d.body_offset, body_offset);
  EXPECT_EQ(d.message.id, Sample().id);
  EXPECT_EQ(d.message.body, "Received: x\r\nBody\r\n");
  EXPECT_EQ(d.message.envelope.recipients.size(), 2u);
  EXPECT_EQ(d.message.envelope.recipients[1].address, "c@example.com");
  EXPECT_EQ(d.message.envelope.helo, "client.example");
  EXPECT_TRUE(d.message.envelope.smtputf8);
  EXPECT_EQ(d.message.envelope.body_type, mail::BodyType::k8BitMime);
}

TEST(RecordTest, DsnFieldsRoundTripAndStayOptional) {
  MessageRecord r = Sample();
  std::string plain;
  EncodeMessage(r, "", "x\r\n", plain);
  r.envelope.dsn_return = mail::DsnReturn::kHeaders;
  r.envelope.envid = "ENV+2B1";
  r.envelope.recipients[1].notify = mail::kNotifySuccess | mail::kNotifyFailure;
  r.envelope.recipients[1].orcpt = "rfc822;c@example.com";
  std::string out;
  EncodeMessage(r, "", "x\r\n", out);
  EXPECT_GT(out.size(), plain.size());  // Without DSN fields a record is as short as before.
  DecodedRecord d;
  ASSERT_EQ(DecodeRecord(out, d), DecodeStatus::kOk);
  const mail::Envelope& env = d.message.envelope;
  EXPECT_EQ(env.dsn_return, mail::DsnReturn::kHeaders);
  EXPECT_EQ(env.envid, "ENV+2B1");
  EXPECT_EQ(env.recipients[0].notify, 0);
  EXPECT_EQ(env.recipients[1].notify, mail::kNotifySuccess | mail::kNotifyFailure);
  EXPECT_EQ(env.recipients[1].orcpt, "rfc822;c@example.com");
  EXPECT_EQ(d.message.body, "x\r\n");
  DecodedRecord p;
  ASSERT_EQ(DecodeRecord(plain, p), DecodeStatus::kOk);
  EXPECT_EQ(p.message.envelope.dsn_return, mail::DsnReturn::kUnspecified);
  EXPECT_EQ(p.message.envelope.recipients[1].notify, 0);
}

TEST(RecordTest, OutcomeRoundTrips) {
  std::string out;
  EncodeOutcome(OutcomeRecord{mail::MessageId::Make(1, 2, 3), 5, RecipientState::kFailed}, out);
  DecodedRecord d;
  ASSERT_EQ(DecodeRecord(out, d), DecodeStatus::kOk);
  EXPECT_EQ(d.type, RecordType::kOutcome);
  EXPECT_EQ(d.outcome.recipient_index, 5u);
  EXPECT_EQ(d.outcome.state, RecipientState::kFailed);
}

TEST(RecordTest, DeferralRoundTripsAndCapsTheReply) {
  std::string out;
  EncodeDeferral(DeferralRecord{mail::MessageId::Make(1, 2, 3), 1764000000000000, 4,
                                "451 4.3.0 " + std::string(2000, 'x')},
                 out);
  DecodedRecord d;
  ASSERT_EQ(DecodeRecord(out, d), DecodeStatus::kOk);
  EXPECT_EQ(d.type, RecordType::kDeferral);
  EXPECT_EQ(d.deferral.next_attempt_us, 1764000000000000u);
  EXPECT_EQ(d.deferral.attempts, 4u);
  EXPECT_EQ(d.deferral.last_reply.size(), 1000u);
  EXPECT_TRUE(d.deferral.last_reply.starts_with("451 4.3.0 x"));
  EXPECT_FALSE(d.deferral.delay_reported);

  std::string flagged;
  EncodeDeferral(DeferralRecord{mail::MessageId::Make(1, 2, 3), 5, 1, "451", true}, flagged);
  ASSERT_EQ(DecodeRecord(flagged, d), DecodeStatus::kOk);
  EXPECT_TRUE(d.deferral.delay_reported);
  std::string plain;
  EncodeDeferral(DeferralRecord{mail::MessageId::Make(1, 2, 3), 5, 1, "451", false}, plain);
  EXPECT_EQ(flagged.size(), plain.size() + 1);  // Unflagged records keep the old length.
}

TEST(RecordTest, EveryTruncationIsIncomplete) {
  std::string out;
  EncodeMessage(Sample(), "", "Body\r\n", out);
  for (size_t n = 0; n < out.size(); ++n) {
    DecodedRecord d;
    EXPECT_EQ(DecodeRecord(std::string_view(out).substr(0, n), d), DecodeStatus::kIncomplete) << n;
  }
}

TEST(RecordTest, EveryFlippedBitIsCaught) {
  std::string clean;
  EncodeMessage(Sample(), "", "Body\r\n", clean);
  for (size_t byte = 0; byte < clean.size(); ++byte) {
    for (int bit = 0; bit < 8; ++bit) {
      std::string bad = clean;
      bad[byte] = static_cast<char>(bad[byte] ^ (1 << bit));
      DecodedRecord d;
      EXPECT_NE(DecodeRecord(bad, d), DecodeStatus::kOk) << byte << ":" << bit;
    }
  }
}

TEST(RecordTest, SegmentHeaderRoundTripsAndRejectsDamage) {
  std::string out;
  EncodeSegmentHeader(SegmentHeader{3, 42, 99}, out);
  ASSERT_EQ(out.size(), kSegmentHeaderBytes);
  auto h = DecodeSegmentHeader(out);
  ASSERT_TRUE(h.has_value());
  EXPECT_EQ(h->shard, 3);
  EXPECT_EQ(h->sequence, 42u);
  out[20] ^= 1;
  EXPECT_FALSE(DecodeSegmentHeader(out).has_value());
}

}  // namespace
}  // namespace relais::spool
