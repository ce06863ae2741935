#include "queue/delivery/destination_book.h"

#include <gtest/gtest.h>

#include <set>

namespace relais::delivery {
namespace {

mail::IpAddress Ip(std::string_view text) { return *mail::IpAddress::Parse(text); }

Resolution TwoHosts() {
  Resolution r;
  r.hosts = {{"mx1.example", 10, {Ip("192.0.2.1"), Ip("2001:db8::1")}},
             {"mx2.example", 20, {Ip("192.0.2.2")}}};
  r.key = "mx1.example,mx2.example";
  return r;
}

TEST(DestinationBookTest, MxEndpointsInOrderWithTheMxHostAsNameAndHop) {
  const std::vector<Endpoint> e = MxEndpoints(TwoHosts(), 2525);
  ASSERT_EQ(e.size(), 3u);
  EXPECT_EQ(e[0].name, "192.0.2.1:2525");
  EXPECT_EQ(e[0].host, "mx1.example");
  EXPECT_EQ(e[0].hop, "mx1.example:2525");
  EXPECT_EQ(e[0].host_index, 0u);
  EXPECT_EQ(e[1].name, "[2001:db8::1]:2525");
  EXPECT_EQ(e[1].host_index, 0u);
  EXPECT_EQ(e[2].name, "192.0.2.2:2525");
  EXPECT_EQ(e[2].host, "mx2.example");
  EXPECT_EQ(e[2].host_index, 1u);
}

TEST(DestinationBookTest, RouteHostsKeepTheNameAsWrittenAndSocketsNeedNoResolution) {
  Resolution r;
  r.hosts = {{"smart.example", 0, {Ip("192.0.2.9")}}};
  const std::vector<Endpoint> e = HostEndpoints({"smart.example", 587, ""}, &r, 1);
  ASSERT_EQ(e.size(), 1u);
  EXPECT_EQ(e[0].name, "192.0.2.9:587");
  EXPECT_EQ(e[0].host, "smart.example");
  EXPECT_EQ(e[0].hop, "smart.example:587");
  EXPECT_EQ(e[0].host_index, 1u);
  const std::vector<Endpoint> v6 = HostEndpoints({"2001:db8::5", 25, ""}, nullptr, 0);
  EXPECT_TRUE(v6.empty());  // Nothing resolved: no endpoint.
  const std::vector<Endpoint> sock = HostEndpoints({"", 0, "/run/lmtp.sock"}, nullptr, 0);
  ASSERT_EQ(sock.size(), 1u);
  EXPECT_EQ(sock[0].name, "/run/lmtp.sock");
  EXPECT_EQ(sock[0].address.ss_family, AF_UNIX);
}

TEST(DestinationBookTest, CopiesTheTemplateAndKeepsOneObjectPerIdAndKey) {
  DestinationBook book;
  Destination route;
  route.route = Route::kMx;
  route.tls.policy = config::RouteTls::kVerify;
  route.source_pool = 2;
  const Destination& d = book.Update(7, "k", route, MxEndpoints(TwoHosts(), 25), 5);
  EXPECT_EQ(d.id, 7u);
  EXPECT_EQ(d.route, Route::kMx);
  EXPECT_EQ(d.tls.policy, config::RouteTls::kVerify);
  EXPECT_EQ(d.source_pool, 2);
  EXPECT_EQ(d.hosts_per_attempt_max, 5u);
  EXPECT_EQ(d.endpoints.size(), 3u);
  EXPECT_EQ(&book.Update(7, "k", route, MxEndpoints(TwoHosts(), 25), 5), &d);
  // A newer resolution with another order: the same object, its endpoints replaced.
  Resolution other = TwoHosts();
  std::swap(other.hosts[0], other.hosts[1]);
  const Destination& e = book.Update(7, "k", route, MxEndpoints(other, 25), 5);
  EXPECT_EQ(&e, &d);
  EXPECT_EQ(e.endpoints[0].host, "mx2.example");
  EXPECT_EQ(book.Find(7), &d);
  EXPECT_EQ(book.retired(), 0u);
  // The id made again for another key: a new object, the old one retired.
  const Destination& f = book.Update(7, "other", route, MxEndpoints(other, 25), 5);
  EXPECT_NE(&f, &d);
  EXPECT_EQ(book.retired(), 1u);
}

TEST(DestinationBookTest, FreesWhatIsForgottenOrRetiredOnceNoTaskHoldsIt) {
  DestinationBook book;
  Destination route;
  const Destination& a = book.Update(1, "a", route, MxEndpoints(TwoHosts(), 25), 0);
  const Destination& b = book.Update(2, "b", route, MxEndpoints(TwoHosts(), 25), 0);
  book.Acquire(a);
  std::set<const Destination*> forgotten;
  auto forget = [&](const Destination& d) { forgotten.insert(&d); };
  book.Sweep([](uint32_t) { return false; }, forget);  // Both ids forgotten.
  EXPECT_EQ(forgotten, std::set<const Destination*>{&b});
  EXPECT_EQ(book.size(), 0u);
  EXPECT_EQ(book.retired(), 1u);  // `a` is still held by a task.
  book.Drop(a);
  book.Sweep([](uint32_t) { return true; }, forget);
  EXPECT_EQ(forgotten.size(), 2u);
  EXPECT_EQ(book.retired(), 0u);
  // An id reused for another key is a new object.
  const Destination& c = book.Update(3, "c", route, {}, 0);
  const Destination& c2 = book.Update(3, "other", route, {}, 0);
  EXPECT_NE(&c, &c2);
}

}  // namespace
}  // namespace relais::delivery
