// The load-time open-relay check of relaisd's config: relay rules that let any client have mail
// for any domain taken and sent on are refused unless relay.open_relay_acknowledged is set.
#include <libpsl.h>
#include <sys/socket.h>

#include <algorithm>
#include <string>
#include <vector>

#include "core/base/strings.h"
#include "tools/relaisd/config_schema.h"

namespace relais::relaisd {
namespace {

using base::StrCat;

// Interval [first, first + size) of a CIDR block; two blocks are nested or disjoint.
struct Block {
  uint64_t first;
  uint64_t size;
};

// How much of the space the blocks cover together, in the blocks' unit.
uint64_t Covered(std::vector<Block> blocks) {
  std::sort(blocks.begin(), blocks.end(), [](const Block& a, const Block& b) {
    return a.first != b.first ? a.first < b.first : a.size > b.size;
  });
  uint64_t covered = 0;
  uint64_t end = 0;  // Exclusive end of the covered run so far; 0: none.
  bool any = false;
  for (const Block& b : blocks) {
    if (any && b.first < end) {
      continue;  // Nested in the previous block.
    }
    covered += b.size;
    end = b.first + b.size;
    any = true;
  }
  return covered;
}

// Address space that no client on the Internet connects from: "this network", loopback,
// private (RFC 1918), shared (RFC 6598), link-local, multicast and reserved. Trusting a site's
// own 10.0.0.0/8 plus 127.0.0.0/8 (Postfix's mynetworks style) is common and opens nothing to
// outsiders, so these do not count towards the bound below.
constexpr struct {
  uint32_t first;
  int prefix_bits;
} kNonPublicV4[] = {{0x00000000, 8},  {0x0A000000, 8},  {0x64400000, 10}, {0x7F000000, 8},
                    {0xA9FE0000, 16}, {0xAC100000, 12}, {0xC0A80000, 16}, {0xE0000000, 3}};

// Addresses of `blocks` (merged first) that also lie in `other`'s blocks.
uint64_t Overlap(std::vector<Block> blocks, const std::vector<Block>& other) {
  std::sort(blocks.begin(), blocks.end(), [](const Block& a, const Block& b) {
    return a.first != b.first ? a.first < b.first : a.size > b.size;
  });
  uint64_t overlap = 0;
  uint64_t end = 0;
  bool any = false;
  for (const Block& b : blocks) {
    if (any && b.first < end) {
      continue;  // Nested in the previous block (CIDR blocks are nested or disjoint).
    }
    end = b.first + b.size;
    any = true;
    for (const Block& o : other) {
      const uint64_t lo = std::max(b.first, o.first);
      const uint64_t hi = std::min(end, o.first + o.size);
      overlap += hi > lo ? hi - lo : 0;
    }
  }
  return overlap;
}

// Networks that put "anyone" in relay.networks: together they cover more public IPv4 addresses
// than one /8 (2^24; the largest single allocations are /8s, and no site trusts more than that),
// or more of the IPv6 global unicast space 2000::/3 than one /32 (2^32 /64s; a /32 is a whole
// ISP's allocation). 0.0.0.0/0, 0.0.0.0/2 + 64.0.0.0/3, ::/0 and 2000::/3 all are.
std::vector<std::string> InternetWideNetworks(const std::vector<mail::IpNetwork>& networks) {
  std::vector<Block> v4, v6;
  std::vector<std::string> named;
  for (const mail::IpNetwork& n : networks) {
    if (n.base.family == AF_INET) {
      const uint64_t first = (uint64_t{n.base.bytes[0]} << 24) | (uint64_t{n.base.bytes[1]} << 16) |
                             (uint64_t{n.base.bytes[2]} << 8) | n.base.bytes[3];
      v4.push_back({first, uint64_t{1} << (32 - n.prefix_bits)});
    } else if (n.prefix_bits <= 64) {
      uint64_t high = 0;  // The network's first /64.
      for (int i = 0; i < 8; ++i) {
        high = (high << 8) | n.base.bytes[i];
      }
      if (n.prefix_bits < 3) {
        // Holds 2000::/3 whole if it holds 2000::.
        if (n.Contains(*mail::IpAddress::Parse("2000::"))) {
          v6.push_back({0, uint64_t{1} << 61});
        }
      } else if ((high >> 61) == 1) {
        v6.push_back({high - (uint64_t{1} << 61), uint64_t{1} << (64 - n.prefix_bits)});
      }
    }
  }
  std::vector<Block> non_public;
  for (const auto& b : kNonPublicV4) {
    non_public.push_back({b.first, uint64_t{1} << (32 - b.prefix_bits)});
  }
  const bool v4_open = Covered(v4) - Overlap(v4, non_public) > (uint64_t{1} << 24);
  const bool v6_open = Covered(v6) > (uint64_t{1} << 32);
  for (const mail::IpNetwork& n : networks) {
    if ((n.base.family == AF_INET && v4_open) || (n.base.family != AF_INET && v6_open)) {
      named.push_back(n.ToString());
    }
  }
  return named;
}

// A domain pattern that takes a whole top-level domain or public suffix, or more: "*",
// "*.<one label>" (any TLD, known or not) and "*.<public suffix>" ("*.co.uk", "*.github.io").
// Domains under it belong to anyone, so making them local or relayed is relaying for anyone.
bool Anywhere(std::string_view pattern) {
  if (pattern == "*") {
    return true;
  }
  if (!pattern.starts_with("*.")) {
    return false;  // One domain.
  }
  const std::string suffix(pattern.substr(2));
  if (suffix.find('.') == std::string::npos) {
    return true;
  }
  static const psl_ctx_t* const list = [] {
    const psl_ctx_t* latest = psl_latest(nullptr);
    return latest != nullptr ? latest : psl_builtin();
  }();
  return list != nullptr && psl_is_public_suffix(list, suffix.c_str()) != 0;
}

// For two "anywhere" patterns: does `outer` match every domain `inner` matches?
bool Covers(std::string_view outer, std::string_view inner) {
  if (outer == "*") {
    return true;
  }
  if (inner == "*") {
    return false;
  }
  // "*.uk" covers "*.co.uk": inner's suffix is outer's suffix or ends with ".<outer suffix>".
  return inner == outer || inner.ends_with(outer.substr(1));
}

// Open: a client anywhere may have mail for any domain taken and sent on to another host.
}  // namespace

bool AnywherePattern(std::string_view pattern) { return Anywhere(pattern); }

std::string OpenRelayProblem(const Config& config) {
  const smtp::SessionOptions& c = config.shard.session;
  std::vector<std::string> reasons;
  for (const std::string& pattern : c.relay_domains) {
    if (Anywhere(pattern)) {
      reasons.push_back(StrCat("relay.relay_domains holds \"", pattern,
                               "\" (domains anyone may register, from any client)"));
    }
  }
  if (const std::vector<std::string> wide = InternetWideNetworks(c.relay_networks); !wide.empty()) {
    reasons.push_back(StrCat("relay.networks (", base::StrJoin(wide, ", "),
                             ") lets clients from anywhere relay to any domain"));
  }
  // A local pattern that takes anyone's domains, and a route that sends some of them on. The
  // router takes the first route whose pattern matches; routes for one domain ("example.com",
  // "*.example.com") never catch an arbitrary domain, so only "anywhere" routes matter, and of
  // those the ones overlapping the local pattern and not shadowed by an earlier one that keeps
  // (maildir) or refuses (reject) the mail.
  for (const std::string& local : c.local_domains) {
    if (!Anywhere(local)) {
      continue;
    }
    std::vector<std::string_view> kept;  // Earlier "anywhere" routes that keep or refuse.
    for (size_t i = 0; i < config.routes.size(); ++i) {
      const config::Route& r = config.routes[i];
      if (!Anywhere(r.domain) || !(Covers(r.domain, local) || Covers(local, r.domain))) {
        continue;
      }
      // The domains of `local` that this route sees: the narrower of the two patterns.
      const std::string_view seen = Covers(r.domain, local) ? std::string_view(local) : r.domain;
      if (std::any_of(kept.begin(), kept.end(),
                      [&](std::string_view k) { return Covers(k, seen); })) {
        continue;  // An earlier route takes all of them.
      }
      if (r.type == config::RouteType::kSmarthost || r.type == config::RouteType::kLmtp ||
          r.type == config::RouteType::kMx) {
        // The implicit mx route (the file has no "*" route) counts like one written.
        reasons.push_back(StrCat("relay.local_domains holds \"", local, "\" and routes[", i,
                                 "] (domain \"", r.domain, "\") sends domains under \"", seen,
                                 "\" to ",
                                 r.type == config::RouteType::kSmarthost ? "a smarthost"
                                 : r.type == config::RouteType::kLmtp    ? "LMTP"
                                                                         : "their MX hosts"));
        break;
      }
      kept.push_back(seen);
      if (seen == local) {
        break;  // Every domain of `local` is taken by now.
      }
    }
  }
  if (reasons.empty()) {
    return {};
  }
  return StrCat("open relay: ", base::StrJoin(reasons, "; "),
                ". Narrow these keys, or set relay.open_relay_acknowledged = true");
}

}  // namespace relais::relaisd
