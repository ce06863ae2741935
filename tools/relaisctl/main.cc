// relaisctl — operators' control tool.
//
// Talking to the running daemon over its admin socket (server.admin_socket, mode 0600; only
// a peer running as our user or root is trusted, SO_PEERCRED):
//   relaisctl [--socket PATH] queue ls [--state S] [--domain D] [--sender A]
//                                      [--destination X] [--older-than DURATION] [--json]
//   relaisctl [--socket PATH] queue summary [--json]
//   relaisctl [--socket PATH] queue show|delete|bounce|hold|release ID [--json]
//   relaisctl [--socket PATH] queue flush [ID|DOMAIN]
//   relaisctl [--socket PATH] dest ls [--json] | dest show KEY|NAME [--json]
//   relaisctl [--socket PATH] dest suspend KEY|NAME [--for DURATION] [--reason TEXT]
//   relaisctl [--socket PATH] dest resume KEY|NAME
//   relaisctl [--socket PATH] status [--json]
// The request line's syntax is tools/relaisd/admin.h's; the answers' shapes are documented
// in docs/mx-delivery.md (relaisctl).
// Offline, on a spool directory (read-only recovery: nothing is truncated or deleted, so it is
// safe next to a live daemon; it shows what is durable on disk right now):
//   relaisctl spool ls   --spool DIR [--json [--body]]
//   relaisctl spool show --spool DIR ID
// Offline, on files (tools/relaisctl/passwd.h, tools/relaisctl/make_cert.h):
//   relaisctl passwd [--file F] [--domains a,b] [--delete | --check] USER
//   relaisctl make-cert --names a,b [--key-type ecdsa|rsa] [--days N] --chain F --key F
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "core/base/clock.h"
#include "core/base/strings.h"
#include "core/io/posix_io.h"
#include "core/log/log.h"
#include "queue/spool/spool.h"
#include "tools/cli/args.h"
#include "tools/relaisctl/make_cert.h"
#include "tools/relaisctl/passwd.h"

ABSL_FLAG(std::string, socket, "./var/run/relaisd.sock",
          "the daemon's admin socket (server.admin_socket)");
ABSL_FLAG(bool, json, false, "answer in JSON");
ABSL_FLAG(std::string, state, "",
          "queue ls: only messages in this state (ready, deferred, held, in-flight)");
ABSL_FLAG(std::string, destination, "",
          "queue ls: only messages waiting for this destination (key or name; unrouted)");
ABSL_FLAG(std::string, older_than, "",
          "queue ls: only messages received longer ago than this (30m, 2h, 1d)");
ABSL_FLAG(std::string, for, "", "dest suspend: for how long (30m, 2h, 1d; default: until resumed)");
ABSL_FLAG(std::string, reason, "", "dest suspend: why, for the views and the log");
ABSL_FLAG(std::string, domain, "", "queue ls: only messages with a recipient in this domain");
ABSL_FLAG(std::string, sender, "", "queue ls: only messages from this sender");
ABSL_FLAG(std::string, spool, "", "spool ls|show: the spool directory, read without a daemon");
ABSL_FLAG(bool, body, false, "spool ls --json: include each message's content");

namespace relais::relaisctl {
namespace {

constexpr char kUsage[] =
    "usage: relaisctl [--socket PATH] queue ls [--state ready|deferred|held|in-flight]\n"
    "                 [--domain D] [--sender A] [--destination KEY|NAME|unrouted]\n"
    "                 [--older-than 30m|2h|1d] [--json]\n"
    "       relaisctl [--socket PATH] queue summary [--json]\n"
    "       relaisctl [--socket PATH] queue show|delete|bounce|hold|release ID [--json]\n"
    "       relaisctl [--socket PATH] queue flush [ID|DOMAIN]\n"
    "       relaisctl [--socket PATH] dest ls [--json]\n"
    "       relaisctl [--socket PATH] dest show KEY|NAME [--json]\n"
    "       relaisctl [--socket PATH] dest suspend KEY|NAME [--for 30m] [--reason TEXT]\n"
    "       relaisctl [--socket PATH] dest resume KEY|NAME\n"
    "       relaisctl [--socket PATH] status [--json]\n"
    "       relaisctl spool ls   --spool DIR [--json [--body]]\n"
    "       relaisctl spool show --spool DIR MESSAGE_ID\n"
    "       relaisctl passwd [--file F] [--domains a,b] USER   (password from stdin)\n"
    "       relaisctl passwd [--file F] --delete|--check USER\n"
    "       relaisctl make-cert --names a.example,b.example [--key-type ecdsa|rsa] [--days 365]\n"
    "                           --chain FILE --key FILE [--force]\n";

// Sends one request line to the daemon and prints its answer. Exit 0 on "OK", 1 on "ERROR"
// or when the daemon cannot be reached.
int AskDaemon(const std::string& socket_path, const std::string& request) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket_path.size() >= sizeof(addr.sun_path)) {
    std::fprintf(stderr, "relaisctl: socket path too long: %s\n", socket_path.c_str());
    return 2;
  }
  std::memcpy(addr.sun_path, socket_path.c_str(), socket_path.size() + 1);
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0 || connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    std::fprintf(stderr, "relaisctl: cannot reach relaisd at %s: %s (is it running? --socket)\n",
                 socket_path.c_str(), std::strerror(errno));
    return 1;
  }
  // The socket's directory keeps others out; this makes sure: the peer must run as our
  // user or as root, or it is an impostor that would read our requests and lie to us.
  ucred peer{};
  socklen_t peer_len = sizeof(peer);
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &peer, &peer_len) != 0 ||
      (peer.uid != geteuid() && peer.uid != 0)) {
    std::fprintf(stderr,
                 "relaisctl: %s is served by a process of uid %u, neither ours (%u) nor root: "
                 "not talking to it\n",
                 socket_path.c_str(), static_cast<unsigned>(peer.uid),
                 static_cast<unsigned>(geteuid()));
    close(fd);
    return 1;
  }
  const std::string line = request + "\n";
  size_t sent = 0;
  while (sent < line.size()) {
    const ssize_t n = write(fd, line.data() + sent, line.size() - sent);
    if (n <= 0) {
      std::fprintf(stderr, "relaisctl: write: %s\n", std::strerror(errno));
      close(fd);
      return 1;
    }
    sent += static_cast<size_t>(n);
  }
  std::string answer;
  char buf[65536];
  ssize_t n;
  while ((n = read(fd, buf, sizeof(buf))) > 0) {
    answer.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  if (answer.starts_with("OK\n")) {
    std::fwrite(answer.data() + 3, 1, answer.size() - 3, stdout);
    return 0;
  }
  if (answer.starts_with("ERROR ")) {
    std::fprintf(stderr, "relaisctl: %s", answer.c_str() + 6);
  } else {
    std::fprintf(stderr, "relaisctl: no answer from relaisd\n");
  }
  return 1;
}

// Builds the admin request line from command-line words: the words, then the flags.
int DaemonCommand(std::span<char* const> words) {
  constexpr std::string_view kFlags[] = {"socket",      "json",       "state", "domain", "sender",
                                         "destination", "older-than", "for",   "reason"};
  absl::StatusOr<cli::Args> args = cli::Parse(words, kFlags);
  if (!args.ok() || args->help) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  std::string request = base::StrJoin(args->positional, " ");
  for (auto [name, flag] :
       {std::pair{"state", &FLAGS_state}, std::pair{"domain", &FLAGS_domain},
        std::pair{"sender", &FLAGS_sender}, std::pair{"destination", &FLAGS_destination},
        std::pair{"older-than", &FLAGS_older_than}, std::pair{"for", &FLAGS_for}}) {
    if (args->given.contains(name)) {
      base::StrAppend(&request, request.empty() ? "" : " ", name, "=", absl::GetFlag(*flag));
    }
  }
  if (absl::GetFlag(FLAGS_json)) {
    base::StrAppend(&request, request.empty() ? "" : " ", "json");
  }
  if (args->given.contains("reason")) {
    // Last: the daemon takes the rest of the line as the reason, spaces and all.
    base::StrAppend(&request, request.empty() ? "" : " ", "reason=", absl::GetFlag(FLAGS_reason));
  }
  // One request is one line: a value with a line break (or another control byte) would be
  // read as something else.
  if (std::any_of(request.begin(), request.end(),
                  [](char c) { return static_cast<unsigned char>(c) < 0x20; })) {
    std::fputs("relaisctl: control characters are not allowed in arguments\n", stderr);
    return 2;
  }
  return AskDaemon(absl::GetFlag(FLAGS_socket), request);
}

std::string_view StateName(const spool::StoredMessage& m) {
  size_t done = 0;
  for (spool::RecipientState s : m.states) {
    done += s != spool::RecipientState::kPending;
  }
  return done == 0 ? "queued" : "partial";
}

using spool::RecipientStateName;

std::string Json(std::string_view s) { return log::JsonString(s); }

int Main(int argc, char** argv) {
  const std::span<char* const> words(argv + 1, argv + argc);
  const std::string_view word0 = words.empty() ? "" : words[0];
  if (words.empty() || word0 == "--help" || word0 == "-h") {
    std::fputs(kUsage, words.empty() ? stderr : stdout);
    return words.empty() ? 2 : 0;
  }
  if (word0 == "make-cert") {
    return MakeCertCommand(words.subspan(1));
  }
  if (word0 == "passwd") {
    return PasswdCommand(words.subspan(1));
  }
  if (word0 != "spool") {
    return DaemonCommand(words);
  }
  const std::string_view command = words.size() < 2 ? "" : words[1];
  constexpr std::string_view kFlags[] = {"spool", "json", "body"};
  absl::StatusOr<cli::Args> args =
      cli::Parse(words.subspan(std::min<size_t>(2, words.size())), kFlags);
  // ls takes no word; show takes one message ID.
  const size_t ids = command == "show" ? 1 : 0;
  if ((command != "ls" && command != "show") || !args.ok() || args->help ||
      args->positional.size() != ids || absl::GetFlag(FLAGS_spool).empty()) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  const std::string dir = absl::GetFlag(FLAGS_spool);
  const std::string id_text = ids == 1 ? args->positional[0] : "";
  const bool json = absl::GetFlag(FLAGS_json);
  const bool body = absl::GetFlag(FLAGS_body);
  io::PosixIo io;
  base::SystemClock clock;
  spool::SpoolOptions options;
  options.path = dir;
  options.read_only = true;
  options.body_memory_bytes_max = 0;
  auto opened = spool::Spool::Open(options, io, clock);
  if (!opened.ok()) {
    std::fprintf(stderr, "relaisctl: %s\n", base::StrCat(opened.status().message()).c_str());
    return 1;
  }
  spool::Spool& spool = **opened;
  auto report = spool.Recover();
  if (!report.ok()) {
    std::fprintf(stderr, "relaisctl: %s\n", base::StrCat(report.status().message()).c_str());
    return 1;
  }
  for (const std::string& problem : report->problems) {
    std::fprintf(stderr, "relaisctl: warning: %s\n", problem.c_str());
  }
  std::vector<const spool::StoredMessage*> messages;
  spool.ForEach([&](const spool::StoredMessage& m) { messages.push_back(&m); });
  std::sort(messages.begin(), messages.end(),
            [](const auto* a, const auto* b) { return a->id < b->id; });

  if (command == "show") {
    const auto id = mail::MessageId::Parse(id_text);
    const spool::StoredMessage* m = id ? spool.Find(*id) : nullptr;
    if (m == nullptr) {
      std::fprintf(stderr, "relaisctl: no message %s in %s\n", id_text.c_str(), dir.c_str());
      return 1;
    }
    auto content = spool.ReadBody(*m);
    if (!content.ok()) {
      std::fprintf(stderr, "relaisctl: %s\n", base::StrCat(content.status().message()).c_str());
      return 1;
    }
    std::printf("id: %s\nsender: <%s>\nclient: %s (helo %s)\n", m->id.ToString().c_str(),
                m->envelope.sender.c_str(), m->envelope.client_address.c_str(),
                m->envelope.helo.c_str());
    if (!m->envelope.envid.empty() || m->envelope.dsn_return != mail::DsnReturn::kUnspecified) {
      std::printf("dsn: ret %s envid %s\n",
                  m->envelope.dsn_return == mail::DsnReturn::kFull      ? "FULL"
                  : m->envelope.dsn_return == mail::DsnReturn::kHeaders ? "HDRS"
                                                                        : "-",
                  m->envelope.envid.empty() ? "-" : m->envelope.envid.c_str());
    }
    for (size_t i = 0; i < m->envelope.recipients.size(); ++i) {
      const mail::Recipient& r = m->envelope.recipients[i];
      std::printf("recipient: <%s> %s", r.address.c_str(),
                  std::string(RecipientStateName(m->states[i])).c_str());
      if (r.notify != 0) {
        std::printf(" notify=%s", mail::NotifyText(r.notify).c_str());
      }
      if (!r.orcpt.empty()) {
        std::printf(" orcpt=%s", r.orcpt.c_str());
      }
      std::printf("\n");
    }
    std::printf("size: %llu\n\n", static_cast<unsigned long long>(m->body_size));
    std::fwrite(content->data(), 1, content->size(), stdout);
    return 0;
  }

  if (!json) {
    std::printf("%-32s  %-7s  %9s  %-30s  %s\n", "ID", "STATE", "SIZE", "SENDER", "RECIPIENTS");
  } else {
    std::fputs("[", stdout);
  }
  bool first = true;
  for (const spool::StoredMessage* m : messages) {
    const mail::Envelope& env = m->envelope;
    if (!json) {
      std::string rcpts;
      for (const auto& r : env.recipients) {
        base::StrAppend(&rcpts, rcpts.empty() ? "" : ",", r.address);
      }
      std::printf("%-32s  %-7s  %9llu  %-30s  %s\n", m->id.ToString().c_str(),
                  std::string(StateName(*m)).c_str(), static_cast<unsigned long long>(m->body_size),
                  env.sender.empty() ? "<>" : env.sender.c_str(), rcpts.c_str());
      continue;
    }
    std::string line = base::StrCat(first ? "\n" : ",\n", "{\"id\":", Json(m->id.ToString()),
                                    ",\"state\":", Json(StateName(*m)), ",\"size\":", m->body_size,
                                    ",\"sender\":", Json(env.sender),
                                    ",\"received_us\":", m->received_us, ",\"recipients\":[");
    for (size_t i = 0; i < env.recipients.size(); ++i) {
      const mail::Recipient& r = env.recipients[i];
      base::StrAppend(&line, i == 0 ? "" : ",", "{\"address\":", Json(r.address),
                      ",\"state\":", Json(RecipientStateName(m->states[i])));
      if (r.notify != 0) {
        base::StrAppend(&line, ",\"notify\":", Json(mail::NotifyText(r.notify)));
      }
      if (!r.orcpt.empty()) {
        base::StrAppend(&line, ",\"orcpt\":", Json(r.orcpt));
      }
      line += "}";
    }
    line += "]";
    if (body) {
      auto content = spool.ReadBody(*m);
      if (!content.ok()) {
        std::fprintf(stderr, "relaisctl: %s\n", base::StrCat(content.status().message()).c_str());
        return 1;
      }
      base::StrAppend(&line, ",\"body\":", Json(*content));
    }
    line += "}";
    std::fputs(line.c_str(), stdout);
    first = false;
  }
  if (json) {
    std::fputs("\n]\n", stdout);
  } else {
    std::printf("%zu message(s)\n", messages.size());
  }
  return 0;
}

}  // namespace
}  // namespace relais::relaisctl

int main(int argc, char** argv) { return relais::relaisctl::Main(argc, argv); }
