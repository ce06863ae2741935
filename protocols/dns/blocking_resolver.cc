// protocols/dns/blocking_resolver.cc — see blocking_resolver.h.
#include "protocols/dns/blocking_resolver.h"

#include <ares.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/select.h>
#include <sys/socket.h>

#include <cstring>

#include "core/base/strings.h"

namespace relais::dns {

using base::StrCat;

namespace {

struct Pending {
  RecordType type;
  bool done = false;
  Answer answer;
};

AnswerStatus StatusOf(int ares_status) {
  switch (ares_status) {
    case ARES_SUCCESS:
      return AnswerStatus::kOk;
    case ARES_ENODATA:
      return AnswerStatus::kNoData;
    case ARES_ENOTFOUND:
      return AnswerStatus::kNxDomain;
    default:  // ESERVFAIL, EREFUSED, ETIMEOUT, ECONNREFUSED, EBADRESP...
      return AnswerStatus::kTemporary;
  }
}

void OnReply(void* arg, int status, int /*timeouts*/, unsigned char* reply, int length) {
  auto* pending = static_cast<Pending*>(arg);
  pending->done = true;
  if (status != ARES_SUCCESS) {
    pending->answer.status = StatusOf(status);
    return;
  }
  pending->answer = ParseReply(pending->type, reply, length);
}

}  // namespace

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
        answer.ttl_seconds = static_cast<uint32_t>(ttls[i].ttl);
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
        answer.ttl_seconds = static_cast<uint32_t>(ttls[i].ttl);
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
  if (rc != ARES_SUCCESS) {
    answer = Answer{};
    answer.status = rc == ARES_ENODATA ? AnswerStatus::kNoData : AnswerStatus::kTemporary;
  } else if (answer.addresses.empty() && answer.mx.empty() && answer.texts.empty()) {
    answer.status = AnswerStatus::kNoData;
  }
  return answer;
}

absl::StatusOr<std::unique_ptr<BlockingResolver>> BlockingResolver::Create(
    const BlockingResolverOptions& options) {
  static const int library = ares_library_init(ARES_LIB_INIT_ALL);
  if (library != ARES_SUCCESS) {
    return absl::InternalError(StrCat("c-ares: ", ares_strerror(library)));
  }
  ares_options o{};
  o.timeout = static_cast<int>(options.timeout_ms);
  o.tries = static_cast<int>(options.tries);
  o.flags = ARES_FLAG_NOSEARCH | ARES_FLAG_NOALIASES;
  ares_channel channel = nullptr;
  const int rc =
      ares_init_options(&channel, &o, ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_FLAGS);
  if (rc != ARES_SUCCESS) {
    return absl::UnavailableError(StrCat("c-ares: ", ares_strerror(rc)));
  }
  std::unique_ptr<BlockingResolver> resolver(new BlockingResolver());
  resolver->channel_ = channel;
  if (!options.servers.empty()) {
    const std::string csv = base::StrJoin(options.servers, ",");
    const int s = ares_set_servers_ports_csv(channel, csv.c_str());
    if (s != ARES_SUCCESS) {
      return absl::InvalidArgumentError(
          StrCat("DNS servers '", csv, "': ", ares_strerror(s), " (expected host:port)"));
    }
  }
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
