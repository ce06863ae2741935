// queue/delivery/destinations_test.cc — tests of destinations.h (fake clock).
#include "queue/delivery/destinations.h"

#include <malloc.h>

#include <algorithm>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace relais::delivery {
namespace {

std::vector<MxHost> Hosts(std::initializer_list<std::string_view> names) {
  std::vector<MxHost> hosts;
  for (const auto name : names) {
    hosts.push_back(MxHost{std::string(name), 10, {}});
  }
  return hosts;
}

ShapingOptions Defaults() {
  ShapingOptions options;
  options.defaults.connections_max = 4;
  return options;
}

// Admits as many attempts as the gate allows now.
int AdmitAll(Destinations& destinations, DestinationId id, int tries = 1000) {
  int admitted = 0;
  while (admitted < tries && destinations.Admit(id)) {
    ++admitted;
  }
  return admitted;
}

TEST(RateTest, ParsesTheThreeUnitsAndZero) {
  EXPECT_EQ(Rate::Parse("100/s"), (Rate{100, 1000}));
  EXPECT_EQ(Rate::Parse("600/min"), (Rate{600, 60'000}));
  EXPECT_EQ(Rate::Parse("10000/h"), (Rate{10000, 3'600'000}));
  EXPECT_EQ(Rate::Parse("0"), Rate{});
  EXPECT_EQ(Rate::Parse("0")->count, 0u);
  for (const auto bad :
       {"", "100", "/s", "10/d", "-1/s", "1.5/s", "x/min", "99999999999/s", "10/s ", " 10/s"}) {
    EXPECT_FALSE(Rate::Parse(bad).has_value()) << bad;
  }
}

TEST(RateTest, ToStringRoundTrips) {
  for (const auto text : {"100/s", "600/min", "10000/h", "0"}) {
    EXPECT_EQ(Rate::Parse(text)->ToString(), text);
  }
}

TEST(DestinationRuleTest, DomainPatternsAreExactOrStarSuffix) {
  const auto none = Hosts({});
  EXPECT_TRUE(RuleMatches("example.com", "", "example.com", none));
  EXPECT_TRUE(RuleMatches("example.com", "", "EXAMPLE.com.", none));
  EXPECT_FALSE(RuleMatches("example.com", "", "a.example.com", none));
  EXPECT_TRUE(RuleMatches("*.example.com", "", "a.example.com", none));
  EXPECT_TRUE(RuleMatches("*.example.com", "", "b.A.Example.COM", none));
  EXPECT_FALSE(RuleMatches("*.example.com", "", "example.com", none));
  EXPECT_FALSE(RuleMatches("*.example.com", "", "badexample.com", none));
  EXPECT_TRUE(RuleMatches("", "", "anything.org", none));
}

TEST(DestinationRuleTest, MxSuffixMatchesAnyHostCaseInsensitively) {
  const auto google = Hosts({"mx.other.net", "ASPMX.L.Google.com"});
  EXPECT_TRUE(RuleMatches("", ".google.com", "example.org", google));
  EXPECT_TRUE(RuleMatches("", "google.com", "example.org", google));
  EXPECT_FALSE(RuleMatches("", ".google.com", "example.org", Hosts({"notgoogle.com"})));
  EXPECT_FALSE(RuleMatches("", "google.com", "example.org", Hosts({"notgoogle.com"})));
  EXPECT_FALSE(RuleMatches("", ".google.com", "example.org", Hosts({})));
  // Both set: both must match.
  EXPECT_TRUE(RuleMatches("example.org", ".google.com", "example.org", google));
  EXPECT_FALSE(RuleMatches("example.net", ".google.com", "example.org", google));
}

TEST(DestinationRuleTest, MatchingRulesApplyInOrderEachOverridingWhatItSets) {
  ShapingOptions options = Defaults();
  options.defaults.messages_per_connection_max = 50;
  ShapingRule google;
  google.mx_suffix = ".google.com";
  google.connections_max = 5;
  google.rate = Rate{300, 60'000};
  google.source_pool = "warm";
  ShapingRule example;
  example.domain = "example.org";
  example.connections_max = 2;
  example.recipients_per_transaction_max = 7;
  ShapingRule other;
  other.domain = "other.org";
  other.connections_max = 1;
  options.rules = {google, example, other};
  base::FakeClock clock;
  Destinations destinations(options, clock);

  const DestinationId both = destinations.Intern(
      "aspmx.l.google.com", "example.org", Hosts({"aspmx.l.google.com"}), "aspmx.l.google.com");
  const Limits& limits = destinations.limits(both);
  EXPECT_EQ(limits.connections_max, 2u);  // The later rule wins.
  EXPECT_EQ(limits.rate, (Rate{300, 60'000}));
  EXPECT_EQ(limits.source_pool, "warm");
  EXPECT_EQ(limits.recipients_per_transaction_max, 7u);
  EXPECT_EQ(limits.messages_per_connection_max, 50u);  // The default, untouched.
  EXPECT_EQ(destinations.ConnectionsAllowed(both), 2u);
  EXPECT_EQ(destinations.MessagesPerConnection(both), 50u);

  const DestinationId plain =
      destinations.Intern("mx.plain.net", "plain.net", Hosts({"mx.plain.net"}), "mx.plain.net");
  EXPECT_EQ(destinations.limits(plain).connections_max, 4u);
  EXPECT_EQ(destinations.limits(plain).rate.count, 0u);
  EXPECT_EQ(destinations.limits(plain).source_pool, "");
}

TEST(DestinationTest, InternGivesOneIdPerKey) {
  base::FakeClock clock;
  Destinations destinations(Defaults(), clock);
  const DestinationId a = destinations.Intern("mx1.a.net,mx2.a.net", "a.org", Hosts({}), "mx1");
  const DestinationId b = destinations.Intern("mx.b.net", "b.org", Hosts({}), "mx.b.net");
  EXPECT_NE(a, 0u);
  EXPECT_NE(b, 0u);
  EXPECT_NE(a, b);
  // Another domain hosted at the same MX set shares the destination.
  EXPECT_EQ(destinations.Intern("mx1.a.net,mx2.a.net", "c.org", Hosts({}), "mx1"), a);
  EXPECT_EQ(destinations.size(), 2u);
  EXPECT_TRUE(destinations.Known(a));
  EXPECT_FALSE(destinations.Known(0));
  EXPECT_FALSE(destinations.Known(99));
  EXPECT_EQ(destinations.View(a)->domain, "a.org");
  EXPECT_EQ(destinations.Find("mx1")->id, a);
  EXPECT_EQ(destinations.Find("mx.b.net")->id, b);
  EXPECT_FALSE(destinations.Find("nowhere").has_value());
}

TEST(DestinationTest, TokenBucketPacesAttemptsAndWakesWhenATokenRefills) {
  ShapingOptions options = Defaults();
  options.defaults.connections_max = 100;
  options.defaults.rate = Rate{120, 60'000};  // 2/s: bucket depth 2.
  base::FakeClock clock;
  Destinations destinations(options, clock);
  const DestinationId id = destinations.Intern("mx.a.net", "a.net", Hosts({}), "");
  EXPECT_EQ(AdmitAll(destinations, id), 2);  // A full bucket: one second's worth.
  EXPECT_EQ(destinations.MsUntilWake(), 500);
  EXPECT_TRUE(destinations.TakeWoken().empty());
  clock.AdvanceMs(499);
  EXPECT_TRUE(destinations.TakeWoken().empty());
  clock.AdvanceMs(1);
  EXPECT_EQ(destinations.TakeWoken(), std::vector<DestinationId>{id});
  EXPECT_EQ(destinations.MsUntilWake(), -1);
  EXPECT_EQ(AdmitAll(destinations, id), 1);
  // Over ten seconds, paced at the rate: 20 attempts, never a burst above the depth.
  int admitted = 0;
  for (int ms = 0; ms < 10'000; ms += 50) {
    clock.AdvanceMs(50);
    const int now = AdmitAll(destinations, id);
    EXPECT_LE(now, 2);
    admitted += now;
  }
  EXPECT_EQ(admitted, 20);
  // A long pause refills to the depth, not beyond.
  clock.AdvanceMs(60'000);
  EXPECT_EQ(AdmitAll(destinations, id), 2);
}

// An attempt planned from the unknown destination asks Admit itself (Delivery::Resolved), not
// the scheduler: admitted while the destination is parked, it must wake the scheduler's queue
// parked on it, or that queue waits for a wake that has gone stale (the mail stranded).
TEST(DestinationTest, AnAdmitWhileParkedWakesTheParkedQueue) {
  ShapingOptions options = Defaults();
  options.defaults.rate = Rate{1, 1'000};  // 1/s: bucket depth 1.
  base::FakeClock clock;
  Destinations destinations(options, clock);
  const DestinationId id = destinations.Intern("mx.a.net", "a.net", Hosts({}), "");
  EXPECT_TRUE(destinations.Admit(id));
  EXPECT_FALSE(destinations.Admit(id));  // The scheduler parks its queue: wake at +1 s.
  clock.AdvanceMs(1'000);
  EXPECT_TRUE(destinations.Admit(id));  // Another caller takes the refilled token first.
  EXPECT_EQ(destinations.TakeWoken(), std::vector<DestinationId>{id});
  EXPECT_TRUE(destinations.TakeWoken().empty());
  // The scheduler's queue asks again: refused, parked, and woken when the next token comes.
  EXPECT_FALSE(destinations.Admit(id));
  clock.AdvanceMs(1'000);
  EXPECT_EQ(destinations.TakeWoken(), std::vector<DestinationId>{id});
}

TEST(DestinationTest, SlowRatesStillHaveADepthOfOne) {
  ShapingOptions options = Defaults();
  options.defaults.rate = Rate{10, 3'600'000};  // One per 6 minutes.
  base::FakeClock clock;
  Destinations destinations(options, clock);
  const DestinationId id = destinations.Intern("mx.a.net", "a.net", Hosts({}), "");
  EXPECT_EQ(AdmitAll(destinations, id), 1);
  EXPECT_EQ(destinations.MsUntilWake(), 360'000);
  clock.AdvanceMs(360'000);
  EXPECT_EQ(destinations.TakeWoken().size(), 1u);
  EXPECT_EQ(AdmitAll(destinations, id), 1);
}

TEST(DestinationTest, InFlightIsCappedAtTwiceTheConnectionsAndAReleaseWakes) {
  base::FakeClock clock;
  Destinations destinations(Defaults(), clock);  // 4 connections.
  const DestinationId id = destinations.Intern("mx.a.net", "a.net", Hosts({}), "");
  EXPECT_EQ(AdmitAll(destinations, id), 8);
  EXPECT_EQ(destinations.View(id)->in_flight, 8u);
  EXPECT_EQ(destinations.MsUntilWake(), -1);  // Not waiting on time.
  EXPECT_TRUE(destinations.TakeWoken().empty());
  destinations.Release(id);
  EXPECT_EQ(destinations.MsUntilWake(), 0);
  EXPECT_EQ(destinations.TakeWoken(), std::vector<DestinationId>{id});
  EXPECT_TRUE(destinations.TakeWoken().empty());  // Once.
  EXPECT_EQ(AdmitAll(destinations, id), 1);
  // Another destination is not held by this one.
  const DestinationId other = destinations.Intern("mx.b.net", "b.net", Hosts({}), "");
  EXPECT_TRUE(destinations.Admit(other));
  // A release while not parked wakes nothing.
  destinations.Release(other);
  EXPECT_TRUE(destinations.TakeWoken().empty());
}

TEST(DestinationTest, SuspensionRefusesUntilItsEndThenWakes) {
  base::FakeClock clock;
  Destinations destinations(Defaults(), clock);
  const DestinationId id = destinations.Intern("mx.a.net", "a.net", Hosts({}), "mx.a.net");
  const DestinationId other = destinations.Intern("mx.b.net", "b.net", Hosts({}), "mx.b.net");
  EXPECT_FALSE(destinations.Suspend("nowhere", 1000, "x"));
  EXPECT_TRUE(destinations.Suspend("mx.a.net", 30'000, "maintenance"));
  EXPECT_FALSE(destinations.Admit(id));
  EXPECT_TRUE(destinations.Admit(other));  // The others flow.
  auto view = destinations.View(id);
  EXPECT_EQ(view->state, DestinationState::kSuspended);
  EXPECT_EQ(view->reason, "maintenance");
  EXPECT_EQ(view->suspended_until_ms, clock.MonotonicMs() + 30'000);
  EXPECT_EQ(destinations.MsUntilWake(), 30'000);
  clock.AdvanceMs(29'999);
  EXPECT_TRUE(destinations.TakeWoken().empty());
  EXPECT_FALSE(destinations.Admit(id));
  clock.AdvanceMs(1);
  EXPECT_EQ(destinations.TakeWoken(), std::vector<DestinationId>{id});
  EXPECT_TRUE(destinations.Admit(id));
  view = destinations.View(id);
  EXPECT_EQ(view->state, DestinationState::kActive);
  EXPECT_EQ(view->reason, "");
}

TEST(DestinationTest, ResumeByKeyEndsASuspensionAndWakes) {
  base::FakeClock clock;
  Destinations destinations(Defaults(), clock);
  const DestinationId id = destinations.Intern("mx1.a.net,mx2.a.net", "a.net", Hosts({}), "mx1");
  EXPECT_TRUE(destinations.Suspend("mx1", 0, ""));  // 0: until resumed.
  EXPECT_FALSE(destinations.Admit(id));
  EXPECT_EQ(destinations.MsUntilWake(), -1);
  clock.AdvanceMs(86'400'000);
  EXPECT_FALSE(destinations.Admit(id));
  EXPECT_EQ(destinations.View(id)->state, DestinationState::kSuspended);
  EXPECT_TRUE(destinations.Resume("mx1.a.net,mx2.a.net"));
  EXPECT_EQ(destinations.TakeWoken(), std::vector<DestinationId>{id});
  EXPECT_TRUE(destinations.Admit(id));
  EXPECT_FALSE(destinations.Resume("nowhere"));
}

// relaisctl reaches every shard; one that meets the destination only later suspends it too.
TEST(DestinationTest, ASuspensionOfAnUnknownDestinationAppliesWhenItAppears) {
  base::FakeClock clock;
  Destinations destinations(Defaults(), clock);
  EXPECT_FALSE(destinations.Suspend("MX1", 60'000, "relaisctl: maintenance"));
  const DestinationId id = destinations.Intern("mx1.a.net,mx2.a.net", "a.net", Hosts({}), "mx1");
  EXPECT_FALSE(destinations.Admit(id));
  EXPECT_EQ(destinations.View(id)->state, DestinationState::kSuspended);
  EXPECT_EQ(destinations.View(id)->reason, "relaisctl: maintenance");
  clock.AdvanceMs(60'000);
  EXPECT_TRUE(destinations.Admit(id));  // It ended on time.
  // Expired or resumed standing suspensions do not apply.
  EXPECT_FALSE(destinations.Suspend("mx.b.net", 1'000, ""));
  clock.AdvanceMs(1'000);
  const DestinationId b = destinations.Intern("mx.b.net", "b.net", Hosts({}), "");
  EXPECT_TRUE(destinations.Admit(b));
  EXPECT_FALSE(destinations.Suspend("mx.c.net", 0, ""));
  EXPECT_FALSE(destinations.Resume("mx.c.net"));
  const DestinationId c = destinations.Intern("mx.c.net", "c.net", Hosts({}), "");
  EXPECT_TRUE(destinations.Admit(c));
}

TEST(DestinationAdaptiveTest, A421HalvesThenQuietThenRecoversAdditively) {
  ShapingOptions options = Defaults();
  options.defaults.connections_max = 8;
  options.defaults.rate = Rate{600, 60'000};  // 10/s.
  options.backoff_ms = 60'000;
  options.recover_after = 5;
  base::FakeClock clock;
  Destinations destinations(options, clock);
  const DestinationId id = destinations.Intern("mx.a.net", "a.net", Hosts({}), "");

  EXPECT_EQ(destinations.OnReply(id, 421, "4.7.0", "Try again later"), ReplyRule::Action::kBackoff);
  auto view = destinations.View(id);
  EXPECT_EQ(view->state, DestinationState::kBackingOff);
  EXPECT_EQ(view->connections_allowed, 4u);
  EXPECT_EQ(view->rate_allowed, (Rate{5, 1000}));
  EXPECT_EQ(view->backoffs, 1u);
  EXPECT_EQ(view->reason, "421 4.7.0 Try again later");
  EXPECT_EQ(view->configured.connections_max, 8u);

  // Within the quiet period another 421 halves nothing, and deliveries do not recover.
  clock.AdvanceMs(1000);
  (void)destinations.OnReply(id, 421, "", "too busy");
  for (int i = 0; i < 20; ++i) {
    destinations.OnDelivered(id);
  }
  view = destinations.View(id);
  EXPECT_EQ(view->connections_allowed, 4u);
  EXPECT_EQ(view->backoffs, 1u);

  // After it: another 421 halves again.
  clock.AdvanceMs(60'000);
  (void)destinations.OnReply(id, 421, "", "too busy");
  view = destinations.View(id);
  EXPECT_EQ(view->connections_allowed, 2u);
  EXPECT_EQ(view->rate_allowed, (Rate{150, 60'000}));  // 2.5/s.
  EXPECT_EQ(view->backoffs, 2u);

  // Recovery: one connection and 10% of the configured rate per `recover_after` deliveries
  // in a row, once the quiet period is over.
  clock.AdvanceMs(60'000);
  for (int i = 0; i < 4; ++i) {
    destinations.OnDelivered(id);
  }
  EXPECT_EQ(destinations.ConnectionsAllowed(id), 2u);
  destinations.OnDelivered(id);
  EXPECT_EQ(destinations.ConnectionsAllowed(id), 3u);
  EXPECT_EQ(destinations.View(id)->rate_allowed, (Rate{210, 60'000}));  // +60/min.
  // A throttle reply in between starts the count over (and halves: quiet period is over).
  for (int i = 0; i < 4; ++i) {
    destinations.OnDelivered(id);
  }
  (void)destinations.OnReply(id, 451, "4.7.1", "slow down");
  EXPECT_EQ(destinations.ConnectionsAllowed(id), 1u);
  clock.AdvanceMs(60'000);
  for (int i = 0; i < 1000; ++i) {
    destinations.OnDelivered(id);
  }
  view = destinations.View(id);
  EXPECT_EQ(view->state, DestinationState::kActive);
  EXPECT_EQ(view->connections_allowed, 8u);
  EXPECT_EQ(view->rate_allowed, (Rate{600, 60'000}));  // As configured, not above.
  EXPECT_EQ(view->reason, "");
}

TEST(DestinationAdaptiveTest, ConnectionsNeverBelowOneAndRateNeverBelowTheFloor) {
  ShapingOptions options = Defaults();
  options.defaults.connections_max = 2;
  options.defaults.rate = Rate{60, 60'000};
  options.rate_floor_per_minute = 6;
  options.backoff_ms = 1000;
  base::FakeClock clock;
  Destinations destinations(options, clock);
  const DestinationId id = destinations.Intern("mx.a.net", "a.net", Hosts({}), "");
  for (int i = 0; i < 10; ++i) {
    (void)destinations.OnReply(id, 421, "", "busy");
    clock.AdvanceMs(1000);
  }
  EXPECT_EQ(destinations.ConnectionsAllowed(id), 1u);
  EXPECT_EQ(destinations.View(id)->rate_allowed, (Rate{6, 60'000}));
  EXPECT_EQ(destinations.View(id)->backoffs, 10u);
}

TEST(DestinationAdaptiveTest, WithoutAConfiguredRateOneIsDerivedFromRecentDeliveries) {
  ShapingOptions options = Defaults();
  options.recover_after = 1;
  options.backoff_ms = 1000;
  base::FakeClock clock;
  Destinations destinations(options, clock);
  const DestinationId id = destinations.Intern("mx.a.net", "a.net", Hosts({}), "");
  for (int i = 0; i < 120; ++i) {
    destinations.OnDelivered(id);  // 120 in the current minute.
    clock.AdvanceMs(100);
  }
  (void)destinations.OnReply(id, 421, "4.7.0", "");
  EXPECT_EQ(destinations.View(id)->rate_allowed, (Rate{1, 1000}));  // Half of 120/min.
  // The derived rate is a real limit now: a bucket of depth 1.
  EXPECT_EQ(AdmitAll(destinations, id), 1);
  // Recovery climbs back to what was observed, then drops the limit entirely.
  clock.AdvanceMs(1000);
  for (int i = 0; i < 100; ++i) {
    destinations.OnDelivered(id);
  }
  const auto view = destinations.View(id);
  EXPECT_EQ(view->state, DestinationState::kActive);
  EXPECT_EQ(view->rate_allowed.count, 0u);
  EXPECT_EQ(view->connections_allowed, 4u);
}

TEST(DestinationAdaptiveTest, RecognisesThrottleReplies) {
  EXPECT_TRUE(IsThrottleReply(421, "", "Service not available"));
  EXPECT_TRUE(IsThrottleReply(451, "4.7.1", "Please try again"));
  EXPECT_TRUE(IsThrottleReply(450, "4.2.1",
                              "The user you are trying to contact is receiving "
                              "mail at a rate that prevents additional messages"
                              ": RATE LIMIT exceeded"));
  EXPECT_TRUE(IsThrottleReply(452, "", "Too many connections from your IP"));
  EXPECT_TRUE(IsThrottleReply(451, "4.3.2", "Throttling failure"));
  EXPECT_TRUE(IsThrottleReply(450, "", "Messages deferred due to excessive volume"));
  EXPECT_FALSE(IsThrottleReply(450, "4.2.2", "Mailbox full"));
  EXPECT_FALSE(IsThrottleReply(550, "5.7.1", "rate limit"));  // Permanent: not a pace signal.
  EXPECT_FALSE(IsThrottleReply(250, "2.0.0", "ok"));
}

TEST(DestinationAdaptiveTest, OtherTemporaryRepliesAndNonAdaptiveDestinationsHalveNothing) {
  ShapingOptions options = Defaults();
  ShapingRule manual;
  manual.domain = "manual.net";
  manual.adaptive = false;
  options.rules = {manual};
  base::FakeClock clock;
  Destinations destinations(options, clock);
  const DestinationId id = destinations.Intern("mx.a.net", "a.net", Hosts({}), "");
  (void)destinations.OnReply(id, 450, "4.2.2", "mailbox full");
  EXPECT_EQ(destinations.View(id)->state, DestinationState::kActive);
  EXPECT_EQ(destinations.View(id)->last_reply, "450 4.2.2 mailbox full");
  const DestinationId fixed = destinations.Intern("mx.m.net", "manual.net", Hosts({}), "");
  (void)destinations.OnReply(fixed, 421, "4.7.0", "rate limit");
  EXPECT_EQ(destinations.View(fixed)->state, DestinationState::kActive);
  EXPECT_EQ(destinations.ConnectionsAllowed(fixed), 4u);
}

TEST(DestinationAdaptiveTest, HalvedConnectionsCapInFlightAndRecoveryWakesAParkedOne) {
  ShapingOptions options = Defaults();  // 4 connections.
  options.recover_after = 1;
  options.backoff_ms = 10;
  base::FakeClock clock;
  Destinations destinations(options, clock);
  const DestinationId id = destinations.Intern("mx.a.net", "a.net", Hosts({}), "");
  (void)destinations.OnReply(id, 421, "", "");
  EXPECT_EQ(AdmitAll(destinations, id), 4);  // 2 × 2.
  clock.AdvanceMs(10);
  destinations.OnDelivered(id);  // 3 connections: room for two more.
  EXPECT_EQ(destinations.TakeWoken(), std::vector<DestinationId>{id});
  EXPECT_EQ(AdmitAll(destinations, id), 2);
}

ShapingOptions WithReplyRule(ReplyRule rule) {
  ShapingOptions options = Defaults();
  options.replies.push_back(std::move(rule));
  return options;
}

TEST(DestinationReplyRuleTest, SuspendRuleSuspendsForItsTime) {
  ReplyRule rule;
  rule.pattern = "(?i)temporarily suspended";
  rule.action = ReplyRule::Action::kSuspend;
  rule.suspend_ms = 900'000;
  base::FakeClock clock;
  Destinations destinations(WithReplyRule(rule), clock);
  const DestinationId id = destinations.Intern("mx.a.net", "a.net", Hosts({}), "");
  EXPECT_EQ(destinations.OnReply(id, 451, "4.3.0", "Delivery TEMPORARILY suspended"),
            ReplyRule::Action::kSuspend);
  const auto view = destinations.View(id);
  EXPECT_EQ(view->state, DestinationState::kSuspended);
  EXPECT_NE(view->reason.find("Delivery TEMPORARILY suspended"), std::string::npos);
  EXPECT_NE(view->reason.find("(?i)temporarily suspended"), std::string::npos);
  EXPECT_FALSE(destinations.Admit(id));
  clock.AdvanceMs(900'000);
  EXPECT_EQ(destinations.TakeWoken(), std::vector<DestinationId>{id});
  EXPECT_TRUE(destinations.Admit(id));
}

TEST(DestinationReplyRuleTest, BounceRuleNamesTheDestinationOnce) {
  ReplyRule rule;
  rule.pattern = "^5\\d\\d 5\\.7\\.1 .*blocked";
  rule.action = ReplyRule::Action::kBounce;
  base::FakeClock clock;
  Destinations destinations(WithReplyRule(rule), clock);
  const DestinationId id = destinations.Intern("mx.a.net", "a.net", Hosts({}), "");
  EXPECT_EQ(destinations.OnReply(id, 550, "5.7.1", "you are blocked"), ReplyRule::Action::kBounce);
  EXPECT_EQ(destinations.OnReply(id, 550, "5.7.1", "you are blocked again"),
            ReplyRule::Action::kBounce);
  EXPECT_EQ(destinations.OnReply(id, 550, "5.1.1", "no such user"), ReplyRule::Action::kBackoff);
  EXPECT_EQ(destinations.TakeBounced(), std::vector<DestinationId>{id});
  EXPECT_TRUE(destinations.TakeBounced().empty());
  (void)destinations.OnReply(id, 550, "5.7.1", "blocked");
  EXPECT_EQ(destinations.TakeBounced(), std::vector<DestinationId>{id});
}

TEST(DestinationReplyRuleTest, BackoffRuleHalvesOnAReplyTheShippedSignalsMiss) {
  ReplyRule rule;
  rule.pattern = "queue is busy";
  rule.action = ReplyRule::Action::kBackoff;
  base::FakeClock clock;
  Destinations destinations(WithReplyRule(rule), clock);
  const DestinationId id = destinations.Intern("mx.a.net", "a.net", Hosts({}), "");
  EXPECT_FALSE(IsThrottleReply(452, "4.3.1", "queue is busy"));
  EXPECT_EQ(destinations.OnReply(id, 452, "4.3.1", "queue is busy"), ReplyRule::Action::kBackoff);
  EXPECT_EQ(destinations.ConnectionsAllowed(id), 2u);
  EXPECT_EQ(destinations.View(id)->state, DestinationState::kBackingOff);
}

TEST(DestinationReplyRuleTest, RulesAreScopedLikeLimitRules) {
  ReplyRule rule;
  rule.pattern = "blocked";
  rule.action = ReplyRule::Action::kSuspend;
  rule.mx_suffix = ".example.net";
  base::FakeClock clock;
  Destinations destinations(WithReplyRule(rule), clock);
  const DestinationId in =
      destinations.Intern("mx.example.net", "a.org", Hosts({"mx.example.net"}), "");
  const DestinationId out = destinations.Intern("mx.b.org", "b.org", Hosts({"mx.b.org"}), "");
  EXPECT_EQ(destinations.OnReply(out, 451, "", "blocked"), ReplyRule::Action::kBackoff);
  EXPECT_EQ(destinations.View(out)->state, DestinationState::kActive);
  EXPECT_EQ(destinations.OnReply(in, 451, "", "blocked"), ReplyRule::Action::kSuspend);
}

TEST(DestinationReplyRuleTest, ABadPatternIsRefusedByValidateAndNeverMatches) {
  ReplyRule rule;
  rule.pattern = "(unclosed";
  rule.action = ReplyRule::Action::kBounce;
  const ShapingOptions options = WithReplyRule(rule);
  const absl::Status status = Destinations::Validate(options);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("(unclosed"), std::string::npos) << status;
  EXPECT_NE(status.message().find("#1"), std::string::npos) << status;
  base::FakeClock clock;
  Destinations destinations(options, clock);  // No crash.
  const DestinationId id = destinations.Intern("mx.a.net", "a.net", Hosts({}), "");
  EXPECT_EQ(destinations.OnReply(id, 550, "", "(unclosed"), ReplyRule::Action::kBackoff);
  EXPECT_TRUE(destinations.TakeBounced().empty());

  EXPECT_TRUE(Destinations::Validate(WithReplyRule(ReplyRule{.pattern = "ok"})).ok());
  EXPECT_FALSE(Destinations::Validate(WithReplyRule(ReplyRule{.pattern = ""})).ok());
  ShapingOptions bad_domain = Defaults();
  bad_domain.rules.push_back(ShapingRule{.domain = "a*.example.com"});
  EXPECT_FALSE(Destinations::Validate(bad_domain).ok());
}

TEST(DestinationViewTest, TopOrdersByQueuedAndAggregatesTheRest) {
  base::FakeClock clock;
  Destinations destinations(Defaults(), clock);
  std::vector<DestinationId> ids;
  for (int i = 0; i < 10; ++i) {
    const std::string key = absl::StrCat("mx", i, ".net");
    ids.push_back(destinations.Intern(key, key, Hosts({}), key));
    destinations.SetQueued(ids.back(), static_cast<uint64_t>(i * 10));
    destinations.ConnectionCount(ids.back(), true);
  }
  EXPECT_TRUE(destinations.Admit(ids[0]));
  DestinationView rest;
  const auto top = destinations.Top(3, &rest);
  ASSERT_EQ(top.size(), 3u);
  EXPECT_EQ(top[0].key, "mx9.net");
  EXPECT_EQ(top[0].queued, 90u);
  EXPECT_EQ(top[1].key, "mx8.net");
  EXPECT_EQ(top[2].key, "mx7.net");
  EXPECT_EQ(rest.name, "other");
  EXPECT_EQ(rest.queued, 0u + 10 + 20 + 30 + 40 + 50 + 60);
  EXPECT_EQ(rest.connections, 7u);
  EXPECT_EQ(rest.in_flight, 1u);
  EXPECT_EQ(destinations.All().size(), 10u);
  const auto all = destinations.Top(100, &rest);
  ASSERT_EQ(all.size(), 10u);
  EXPECT_EQ(all.back().key, "mx0.net");
  EXPECT_EQ(rest.queued, 0u);
  EXPECT_EQ(rest.connections, 0u);
  EXPECT_TRUE(destinations.Top(0, &rest).empty());
  EXPECT_EQ(rest.queued, 450u);
  EXPECT_EQ(rest.connections, 10u);
  // Ties go by id, so the labels stay put between scrapes.
  destinations.SetQueued(ids[8], 90);
  const auto tied = destinations.Top(2, nullptr);
  EXPECT_EQ(tied[0].key, "mx8.net");
  EXPECT_EQ(tied[1].key, "mx9.net");
}

TEST(DestinationViewTest, CountsOutcomesAndTheLastReply) {
  base::FakeClock clock;
  Destinations destinations(Defaults(), clock);
  const DestinationId id = destinations.Intern("mx.a.net", "a.net", Hosts({}), "");
  destinations.Count(id, Outcome::kDelivered, "250 ok");
  destinations.Count(id, Outcome::kDelivered, "");
  destinations.Count(id, Outcome::kDeferred, "451 later");
  destinations.Count(id, Outcome::kFailed, std::string(1000, 'x'));
  const auto view = destinations.View(id);
  EXPECT_EQ(view->delivered, 2u);
  EXPECT_EQ(view->deferred, 1u);
  EXPECT_EQ(view->failed, 1u);
  EXPECT_LE(view->last_reply.size(), 200u);  // Bounded.
  EXPECT_EQ(view->name, "mx.a.net");         // Empty name: the key.
}

TEST(DestinationSweepTest, ForgetsIdleDestinationsOnlyAndReusesTheirIds) {
  ShapingOptions options = Defaults();
  options.idle_forget_ms = 10'000;
  base::FakeClock clock;
  Destinations destinations(options, clock);
  const DestinationId idle = destinations.Intern("idle", "a", Hosts({}), "");
  const DestinationId queued = destinations.Intern("queued", "b", Hosts({}), "");
  const DestinationId flying = destinations.Intern("flying", "c", Hosts({}), "");
  const DestinationId connected = destinations.Intern("connected", "d", Hosts({}), "");
  EXPECT_NE(destinations.Intern("suspended", "e", Hosts({}), ""), 0u);
  destinations.SetQueued(queued, 3);
  EXPECT_TRUE(destinations.Admit(flying));
  destinations.ConnectionCount(connected, true);
  EXPECT_TRUE(destinations.Suspend("suspended", 60'000, "x"));
  clock.AdvanceMs(9'999);
  destinations.Sweep();
  EXPECT_EQ(destinations.size(), 5u);
  clock.AdvanceMs(1'000);  // Past the idle time and the sweep's pace (idle_forget_ms / 10).
  std::vector<DestinationId> forgotten;
  destinations.Sweep(&forgotten);
  EXPECT_EQ(forgotten, std::vector<DestinationId>{idle});
  EXPECT_EQ(destinations.size(), 4u);
  EXPECT_FALSE(destinations.Known(idle));
  EXPECT_FALSE(destinations.Find("idle").has_value());
  // Its id goes to the next new destination; an unknown id is admitted (nothing to shape).
  EXPECT_EQ(destinations.Intern("new", "f", Hosts({}), ""), idle);
  EXPECT_TRUE(destinations.Admit(999));
  // Once nothing holds them, the others go too.
  destinations.SetQueued(queued, 0);
  destinations.Release(flying);
  destinations.ConnectionCount(connected, false);
  clock.AdvanceMs(60'000);
  destinations.Sweep();
  EXPECT_EQ(destinations.size(), 0u);
}

// A destination forgotten while parked (the sweep saw nothing queued for it) is woken: the
// scheduler's queue parked on it asks again (an unknown id is admitted; the attempt
// re-resolves), instead of waiting for a wake of an entry that no longer exists, or of one
// that reused its id.
TEST(DestinationSweepTest, ForgettingAParkedDestinationWakesIt) {
  ShapingOptions options = Defaults();
  options.idle_forget_ms = 10'000;
  options.defaults.rate = Rate{1, 3'600'000};  // 1/h: the next token in an hour.
  base::FakeClock clock;
  Destinations destinations(options, clock);
  const DestinationId id = destinations.Intern("mx.a.net", "a.net", Hosts({}), "");
  EXPECT_TRUE(destinations.Admit(id));
  destinations.Release(id);
  EXPECT_FALSE(destinations.Admit(id));  // Parked until a token, in an hour.
  clock.AdvanceMs(10'000);
  std::vector<DestinationId> forgotten;
  destinations.Sweep(&forgotten);
  EXPECT_EQ(forgotten, std::vector<DestinationId>{id});
  EXPECT_EQ(destinations.TakeWoken(), std::vector<DestinationId>{id});
  EXPECT_TRUE(destinations.Admit(id));  // Unknown now: admitted.
  // Its id reused by another destination: not parked, admitted on its own terms.
  EXPECT_EQ(destinations.Intern("mx.b.net", "b.net", Hosts({}), ""), id);
  EXPECT_TRUE(destinations.Admit(id));
}

TEST(DestinationSweepTest, TheTableIsBoundedByDestinationsMax) {
  ShapingOptions options = Defaults();
  options.destinations_max = 3;
  options.idle_forget_ms = 1000;
  base::FakeClock clock;
  Destinations destinations(options, clock);
  for (int i = 0; i < 3; ++i) {
    EXPECT_NE(destinations.Intern(absl::StrCat("k", i), "d", Hosts({}), ""), 0u);
    destinations.SetQueued(static_cast<DestinationId>(i + 1), 1);
  }
  EXPECT_EQ(destinations.Intern("k3", "d", Hosts({}), ""), 0u);  // Full.
  EXPECT_EQ(destinations.Intern("k1", "d", Hosts({}), ""), 2u);  // Known keys still are.
  destinations.SetQueued(2, 0);
  clock.AdvanceMs(1000);
  // The full table sweeps before refusing: the idle one makes room.
  EXPECT_EQ(destinations.Intern("k3", "d", Hosts({}), ""), 2u);
  EXPECT_EQ(destinations.size(), 3u);
  // The id it forgot is told by the next Sweep (so the sources forget it too), once.
  std::vector<DestinationId> forgotten;
  destinations.Sweep(&forgotten);
  EXPECT_EQ(forgotten, std::vector<DestinationId>{2});
  forgotten.clear();
  destinations.SetQueued(2, 1);
  clock.AdvanceMs(1000);
  destinations.Sweep(&forgotten);
  EXPECT_TRUE(forgotten.empty());
}

size_t HeapInUse() { return mallinfo2().uordblks; }
size_t Grown(size_t before) {
  const size_t now = HeapInUse();
  return now > before ? now - before : 0;
}

TEST(DestinationSweepTest, OneHundredThousandDestinationsStayBoundedAndSweepEmptiesThem) {
  ShapingOptions options = Defaults();
  options.idle_forget_ms = 1000;
  base::FakeClock clock;
  const size_t before = HeapInUse();
  {
    Destinations destinations(options, clock);
    constexpr int kCount = 100'000;
    for (int i = 0; i < kCount; ++i) {
      // Keys as MX sets are written: a few host names joined.
      const std::string key =
          absl::StrCat("mx1.host", i, ".example.net,mx2.host", i, ".example.net");
      const DestinationId id = destinations.Intern(key, absl::StrCat("domain", i, ".example.org"),
                                                   Hosts({}), absl::StrCat("mx1.host", i));
      ASSERT_NE(id, 0u);
      destinations.SetQueued(id, 10);
    }
    EXPECT_EQ(destinations.size(), 100'000u);
    const size_t heap = Grown(before);
    const size_t per_destination = heap / kCount;
    std::printf(
        "destinations: sizeof(Entry) = %zu bytes, heap per destination = %zu bytes "
        "(key %zu bytes)\n",
        Destinations::EntryBytes(), per_destination,
        std::string("mx1.host50000.example.net,mx2.host50000.example.net").size());
    EXPECT_LE(Destinations::EntryBytes(), 304u);
    if (heap > 0) {  // mallinfo2 is meaningless under sanitizers' allocators.
      EXPECT_LT(per_destination, 1024u);
    }
    DestinationView rest;
    EXPECT_EQ(destinations.Top(10, &rest).size(), 10u);
    EXPECT_EQ(rest.queued, 10u * (kCount - 10));
    // Nothing is forgotten while mail waits.
    clock.AdvanceMs(10'000);
    destinations.Sweep();
    EXPECT_EQ(destinations.size(), 100'000u);
    for (DestinationId id = 1; id <= kCount; ++id) {
      destinations.SetQueued(id, 0);
    }
    clock.AdvanceMs(1000);
    destinations.Sweep();
    EXPECT_EQ(destinations.size(), 0u);
    const size_t after_sweep = Grown(before);
    std::printf("destinations: heap after the sweep = %zu bytes\n", after_sweep);
    if (heap > 0) {
      EXPECT_LT(after_sweep, heap / 50);
    }
  }
}

}  // namespace
}  // namespace relais::delivery
