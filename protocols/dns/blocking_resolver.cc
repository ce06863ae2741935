// protocols/dns/blocking_resolver.cc — see blocking_resolver.h.
#include "protocols/dns/blocking_resolver.h"

#include <ares.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/select.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstring>

#include "core/base/strings.h"
#include "protocols/dns/resolver.h"

namespace relais::dns {

using base::StrCat;

namespace {

struct Pending {
  RecordType type;
  bool done = false;
  Answer answer;
};

}  // namespace

AnswerStatus StatusOfAresCode(int ares_status) {
  switch (ares_status) {
    case ARES_SUCCESS:
      return AnswerStatus::kOk;
    case ARES_ENODATA:
      return AnswerStatus::kNoData;
    case ARES_ENOTFOUND:
      return AnswerStatus::kNxDomain;
    case ARES_EBADNAME:
      // A name DNS cannot carry (a label over 63 octets, over 253 in all) is refused before any
      // query: nothing exists there, so it is a definite "no such name", never a temporary
      // failure (RFC 7208 4.3 for SPF; for DMARC and DKIM it keeps a check from failing open
      // into temperror on a name the sender chose to be too long).
      return AnswerStatus::kNxDomain;
    default:  // ESERVFAIL, EREFUSED, ETIMEOUT, ECONNREFUSED, EBADRESP...
      return AnswerStatus::kTemporary;
  }
}

namespace {

void OnReply(void* arg, int status, int /*timeouts*/, unsigned char* reply, int length) {
  auto* pending = static_cast<Pending*>(arg);
  pending->done = true;
  if (status != ARES_SUCCESS) {
    pending->answer.status = StatusOfAresCode(status);
    return;
  }
  pending->answer = ParseReply(pending->type, reply, length);
}

}  // namespace

namespace {

// Steps over a (possibly compressed) name at `offset`.
bool SkipName(const unsigned char* p, int length, int& offset) {
  while (offset < length) {
    const unsigned char c = p[offset];
    if (c == 0) {
      ++offset;
      return true;
    }
    if ((c & 0xC0) == 0xC0) {
      offset += 2;  // A pointer ends the name.
      return offset <= length;
    }
    if ((c & 0xC0) != 0) {
      return false;
    }
    offset += 1 + c;
  }
  return false;
}

uint16_t U16(const unsigned char* p) { return static_cast<uint16_t>(p[0] << 8 | p[1]); }
uint32_t U32(const unsigned char* p) {
  return static_cast<uint32_t>(p[0]) << 24 | static_cast<uint32_t>(p[1]) << 16 |
         static_cast<uint32_t>(p[2]) << 8 | p[3];
}

struct ResourceRecord {
  uint16_t type;
  uint32_t ttl;
  int rdata;  // Offset of the data.
  uint16_t rdlength;
};

// Calls `fn` for every record of the section after `skip` records (answer: skip 0; authority:
// skip the answer count). False when the reply cannot be read.
template <typename Fn>
bool ForEachRecord(const unsigned char* p, int length, bool authority, Fn fn) {
  if (p == nullptr || length < 12) {
    return false;
  }
  const int questions = U16(p + 4);
  const int answers = U16(p + 6);
  const int authorities = U16(p + 8);
  int offset = 12;
  for (int i = 0; i < questions; ++i) {
    if (!SkipName(p, length, offset) || (offset += 4) > length) {
      return false;
    }
  }
  const int first = authority ? answers : 0;
  const int last = authority ? answers + authorities : answers;
  for (int i = 0; i < last; ++i) {
    if (!SkipName(p, length, offset) || offset + 10 > length) {
      return false;
    }
    const ResourceRecord rr{U16(p + offset), U32(p + offset + 4), offset + 10, U16(p + offset + 8)};
    offset += 10 + rr.rdlength;
    if (offset > length) {
      return false;
    }
    if (i >= first) {
      fn(rr);
    }
  }
  return true;
}

}  // namespace

std::optional<uint32_t> AnswerTtl(const unsigned char* reply, int length) {
  std::optional<uint32_t> ttl;
  const bool ok = ForEachRecord(reply, length, false, [&](const ResourceRecord& rr) {
    ttl = std::min(ttl.value_or(UINT32_MAX), rr.ttl & 0x7FFFFFFF);
  });
  return ok ? ttl : std::nullopt;
}

std::optional<uint32_t> NegativeTtl(const unsigned char* reply, int length) {
  std::optional<uint32_t> ttl;
  ForEachRecord(reply, length, true, [&](const ResourceRecord& rr) {
    if (rr.type == 6 && rr.rdlength >= 20) {  // SOA: its MINIMUM is the last 4 bytes.
      const uint32_t minimum = U32(reply + rr.rdata + rr.rdlength - 4);
      ttl = std::min(rr.ttl & 0x7FFFFFFF, minimum & 0x7FFFFFFF);
    }
  });
  return ttl;
}

Answer ParseReply(RecordType type, const unsigned char* reply, int length) {
  Answer answer;
  answer.status = AnswerStatus::kOk;
  int rc = ARES_SUCCESS;
  switch (type) {
    case RecordType::kA: {
      ares_addrttl ttls[64];
      int count = 64;
      rc = ares_parse_a_reply(reply, length, nullptr, ttls, &count);
      for (int i = 0; rc == ARES_SUCCESS && i < count; ++i) {
        mail::IpAddress a;
        a.family = AF_INET;
        std::memcpy(a.bytes.data(), &ttls[i].ipaddr, 4);
        answer.addresses.push_back(a);
      }
      break;
    }
    case RecordType::kAaaa: {
      ares_addr6ttl ttls[64];
      int count = 64;
      rc = ares_parse_aaaa_reply(reply, length, nullptr, ttls, &count);
      for (int i = 0; rc == ARES_SUCCESS && i < count; ++i) {
        mail::IpAddress a;
        a.family = AF_INET6;
        std::memcpy(a.bytes.data(), &ttls[i].ip6addr, 16);
        answer.addresses.push_back(a);
      }
      break;
    }
    case RecordType::kMx: {
      ares_mx_reply* mx = nullptr;
      rc = ares_parse_mx_reply(reply, length, &mx);
      for (ares_mx_reply* m = mx; rc == ARES_SUCCESS && m != nullptr; m = m->next) {
        answer.mx.push_back({m->priority, m->host});
      }
      if (mx != nullptr) {
        ares_free_data(mx);
      }
      break;
    }
    case RecordType::kTxt: {
      ares_txt_ext* txt = nullptr;
      rc = ares_parse_txt_reply_ext(reply, length, &txt);
      // A record's strings arrive as consecutive entries; record_start marks each new record.
      for (ares_txt_ext* t = txt; rc == ARES_SUCCESS && t != nullptr; t = t->next) {
        if (t->record_start || answer.texts.empty()) {
          answer.texts.emplace_back();
        }
        answer.texts.back().append(reinterpret_cast<const char*>(t->txt), t->length);
      }
      if (txt != nullptr) {
        ares_free_data(txt);
      }
      break;
    }
    case RecordType::kPtr: {
      hostent* host = nullptr;
      const in_addr none{};
      rc = ares_parse_ptr_reply(reply, length, &none, sizeof(none), AF_INET, &host);
      if (rc == ARES_SUCCESS && host != nullptr) {
        answer.texts.push_back(host->h_name);
        for (char** alias = host->h_aliases; alias != nullptr && *alias != nullptr; ++alias) {
          answer.texts.push_back(*alias);
        }
      }
      if (host != nullptr) {
        ares_free_hostent(host);
      }
      break;
    }
    case RecordType::kCname:
      break;
  }
  answer.ttl_seconds = AnswerTtl(reply, length).value_or(0);
  if (rc != ARES_SUCCESS) {
    answer = Answer{};
    answer.status = rc == ARES_ENODATA ? AnswerStatus::kNoData : AnswerStatus::kTemporary;
  } else if (answer.addresses.empty() && answer.mx.empty() && answer.texts.empty()) {
    answer.status = AnswerStatus::kNoData;
  }
  return answer;
}

absl::StatusOr<void*> OpenAresChannel(const std::vector<std::string>& servers, uint32_t timeout_ms,
                                      uint32_t tries, void (*socket_state)(void*, int, int, int),
                                      void* data) {
  static const int library = ares_library_init(ARES_LIB_INIT_ALL);
  if (library != ARES_SUCCESS) {
    return absl::InternalError(StrCat("c-ares: ", ares_strerror(library)));
  }
  ares_options o{};
  o.timeout = static_cast<int>(timeout_ms);
  o.tries = static_cast<int>(tries);
  o.flags = ARES_FLAG_NOSEARCH | ARES_FLAG_NOALIASES;
  int mask = ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_FLAGS;
  if (socket_state != nullptr) {
    o.sock_state_cb = socket_state;
    o.sock_state_cb_data = data;
    mask |= ARES_OPT_SOCK_STATE_CB;
  }
  ares_channel channel = nullptr;
  const int rc = ares_init_options(&channel, &o, mask);
  if (rc != ARES_SUCCESS) {
    return absl::UnavailableError(StrCat("c-ares: ", ares_strerror(rc)));
  }
  if (!servers.empty()) {
    const std::string csv = base::StrJoin(servers, ",");
    const int s = ares_set_servers_ports_csv(channel, csv.c_str());
    if (s != ARES_SUCCESS) {
      ares_destroy(channel);
      return absl::InvalidArgumentError(
          StrCat("DNS servers '", csv, "': ", ares_strerror(s), " (expected host:port)"));
    }
  }
  return static_cast<void*>(channel);
}

absl::StatusOr<std::unique_ptr<BlockingResolver>> BlockingResolver::Create(
    const BlockingResolverOptions& options) {
  absl::StatusOr<void*> channel =
      OpenAresChannel(options.servers, options.timeout_ms, options.tries, nullptr, nullptr);
  if (!channel.ok()) {
    return channel.status();
  }
  std::unique_ptr<BlockingResolver> resolver(new BlockingResolver());
  resolver->channel_ = *channel;
  return resolver;
}

BlockingResolver::~BlockingResolver() {
  if (channel_ != nullptr) {
    ares_destroy(static_cast<ares_channel>(channel_));
  }
}

Answer BlockingResolver::Resolve(const Question& question) {
  auto channel = static_cast<ares_channel>(channel_);
  Pending pending{question.type};
  ++queries_;
  ares_query(channel, question.name.c_str(), 1 /* C_IN */, static_cast<int>(question.type), OnReply,
             &pending);
  while (!pending.done) {
    fd_set read_fds, write_fds;
    FD_ZERO(&read_fds);
    FD_ZERO(&write_fds);
    const int nfds = ares_fds(channel, &read_fds, &write_fds);
    if (nfds == 0) {
      break;
    }
    timeval tv{};
    timeval* wait = ares_timeout(channel, nullptr, &tv);
    select(nfds, &read_fds, &write_fds, nullptr, wait);
    ares_process(channel, &read_fds, &write_fds);
  }
  if (!pending.done) {
    pending.answer.status = AnswerStatus::kTemporary;
  }
  return pending.answer;
}

}  // namespace relais::dns
