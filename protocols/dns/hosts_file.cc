// protocols/dns/hosts_file.cc — see hosts_file.h.
#include "protocols/dns/hosts_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <utility>

#include "protocols/dns/answer.h"

namespace relais::dns {
namespace {

bool IsBlank(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f'; }

// `name` in QuestionKey form: letters, digits, '-', '_' in dot-separated labels of 1..63
// bytes, at most 253 bytes in all.
bool ValidHostName(std::string_view name) {
  if (name.empty() || name.size() > 253) {
    return false;
  }
  size_t label = 0;
  for (const char c : name) {
    if (c == '.') {
      if (label == 0) {
        return false;
      }
      label = 0;
      continue;
    }
    const bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
    if (!ok || ++label > 63) {
      return false;
    }
  }
  return label != 0;
}

// The blank-separated fields of `line` (a comment already cut off).
std::vector<std::string_view> Fields(std::string_view line) {
  std::vector<std::string_view> fields;
  size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && IsBlank(line[i])) {
      ++i;
    }
    const size_t start = i;
    while (i < line.size() && !IsBlank(line[i])) {
      ++i;
    }
    if (i > start) {
      fields.push_back(line.substr(start, i - start));
    }
  }
  return fields;
}

}  // namespace

HostsTable::HostsTable() { AddLocalhostDefault(); }

void HostsTable::AddLocalhostDefault() {
  std::vector<mail::IpAddress>& localhost = by_name_["localhost"];
  if (localhost.empty()) {
    localhost.push_back(*mail::IpAddress::Parse("127.0.0.1"));
    localhost.push_back(*mail::IpAddress::Parse("::1"));
  }
}

HostsTable HostsTable::Parse(std::string_view text) {
  HostsTable table;
  table.by_name_.clear();
  if (text.size() > kFileBytesMax) {
    text = text.substr(0, kFileBytesMax);
  }
  while (!text.empty()) {
    const size_t end = text.find('\n');
    std::string_view line = text.substr(0, end);
    text = end == std::string_view::npos ? std::string_view() : text.substr(end + 1);
    if (const size_t hash = line.find('#'); hash != std::string_view::npos) {
      line = line.substr(0, hash);
    }
    const std::vector<std::string_view> fields = Fields(line);
    if (fields.empty()) {
      continue;  // Blank or comment only.
    }
    std::optional<mail::IpAddress> address;
    if (line.size() <= kLineBytesMax && fields.size() >= 2) {
      address = mail::IpAddress::Parse(fields[0]);
    }
    if (!address) {
      ++table.skipped_lines_;
      continue;
    }
    for (size_t f = 1; f < fields.size(); ++f) {
      std::string name = QuestionKey(fields[f]);
      if (!ValidHostName(name)) {
        continue;
      }
      auto it = table.by_name_.find(name);
      if (it == table.by_name_.end()) {
        if (table.by_name_.size() >= kNamesMax) {
          continue;
        }
        it = table.by_name_.emplace(std::move(name), std::vector<mail::IpAddress>{}).first;
      }
      std::vector<mail::IpAddress>& addresses = it->second;
      if (addresses.size() < kAddressesPerNameMax &&
          std::find(addresses.begin(), addresses.end(), *address) == addresses.end()) {
        addresses.push_back(*address);
      }
    }
  }
  table.AddLocalhostDefault();
  return table;
}

const std::vector<mail::IpAddress>* HostsTable::Find(std::string_view name) const {
  const auto it = by_name_.find(QuestionKey(name));
  return it == by_name_.end() || it->second.empty() ? nullptr : &it->second;
}

HostsTable ReadHostsFile(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return HostsTable();
  }
  std::string text;
  char buffer[16384];
  while (text.size() < HostsTable::kFileBytesMax) {
    const ssize_t n = ::read(fd, buffer, sizeof(buffer));
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      break;  // End of file; an error mid-file keeps what was read.
    }
    text.append(buffer, static_cast<size_t>(n));
  }
  ::close(fd);
  return HostsTable::Parse(text);
}

}  // namespace relais::dns
