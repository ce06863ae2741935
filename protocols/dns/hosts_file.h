// protocols/dns/hosts_file.h — the hosts file (/etc/hosts, hosts(5)) as a small immutable
// table: the names an operator pins on this machine, for the host names of smarthost and LMTP
// routes (as Postfix's smtp_host_lookup = dns, native does for a relayhost). Never for MX
// hosts or recipient domains: those are DNS only (RFC 5321 5).
//
// Read once at start, on the startup thread (ReadHostsFile), then shared read-only by every
// shard (a const table: no lock, no mutation after Parse).
//
// Parsing (hosts(5), and what glibc's files backend accepts):
//   - '#' starts a comment to the end of the line; blank lines are skipped;
//   - a line is an address, then one or more names (the canonical name, then aliases),
//     separated by spaces or tabs;
//   - the address is IPv4 dotted quad or IPv6 (mail::IpAddress::Parse; an IPv4-mapped IPv6
//     address is taken as the IPv4 address); a line whose address does not parse (a zone id
//     "fe80::1%eth0", garbage) or that names nothing is skipped whole;
//   - names are compared case-insensitively, without a trailing dot (dns::QuestionKey form); a
//     name that is not a host name (letters, digits, '-', '_', '.'; labels of 1..63, at most
//     253 bytes) is skipped;
//   - a name on several lines collects their addresses in file order, each address once;
//   - bounded: at most kNamesMax names, kAddressesPerNameMax addresses per name, lines of at
//     most kLineBytesMax bytes (longer ones skipped) and a file of at most kFileBytesMax bytes
//     (the rest is not read); what is past a bound is dropped, never an error.
// "localhost" always resolves (RFC 6761 6.3): when the file names no address for it, the table
// answers 127.0.0.1 and ::1.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/mail/ip_network.h"

namespace relais::dns {

class HostsTable {
 public:
  static constexpr size_t kNamesMax = 100'000;
  static constexpr size_t kAddressesPerNameMax = 16;
  static constexpr size_t kLineBytesMax = 4096;
  static constexpr size_t kFileBytesMax = 16u << 20;

  // A table with only the "localhost" default.
  HostsTable();
  [[nodiscard]] static HostsTable Parse(std::string_view text);

  // The addresses of `name` (any case, trailing dot or not) in file order, both families;
  // nullptr when the table does not name it.
  [[nodiscard]] const std::vector<mail::IpAddress>* Find(std::string_view name) const;
  [[nodiscard]] size_t size() const { return by_name_.size(); }
  // Lines skipped as malformed (not counting comments and blank lines), for the start log.
  [[nodiscard]] size_t skipped_lines() const { return skipped_lines_; }

 private:
  void AddLocalhostDefault();

  std::unordered_map<std::string, std::vector<mail::IpAddress>> by_name_;
  size_t skipped_lines_ = 0;
};

// The hosts file at `path`, read at most HostsTable::kFileBytesMax bytes. A file that does not
// exist or cannot be read is an empty table (with the localhost default): the lookup then goes
// to DNS, as it would without the file. Blocking: the startup thread only.
[[nodiscard]] HostsTable ReadHostsFile(const std::string& path);

}  // namespace relais::dns
