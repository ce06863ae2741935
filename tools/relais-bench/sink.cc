// tools/relais-bench/sink.cc — `relais-bench sink`: a fast SMTP/LMTP sink on io_uring that
// counts what it takes by tracking header and answers as told (--reply, --delay).
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <memory>
#include <unordered_set>

#define JSON_NOEXCEPTION
#include <nlohmann/json.hpp>

#include "core/base/clock.h"
#include "core/base/random.h"
#include "core/base/strings.h"
#include "core/net/listener.h"
#include "core/net/stream_pump.h"
#include "core/timer/timer_wheel.h"
#include "core/uring/engine.h"
#include "protocols/tls/tls.h"
#include "tools/relais-bench/commands.h"
#include "tools/relais-bench/flags.h"
#include "tools/relais-bench/ledger.h"
#include "tools/relais-bench/sink_session.h"

namespace relais::bench {
namespace {

using base::StrCat;

constexpr const char* kSinkUsage =
    "usage: relais-bench sink [--listen HOST:PORT] [--lmtp] [--reply STEP:CODE|drop:P]...\n"
    "                         [--delay STEP:MS[-MS][:P]]... [--seed N] [--duration T]\n"
    "                         [--messages N] [--json FILE] [--hostname NAME]\n"
    "                         [--tls-cert FILE --tls-key FILE [--tls-implicit]]\n"
    "  --tls-cert/--tls-key offer STARTTLS (and, once TLS is on, AUTH PLAIN LOGIN taking any\n"
    "  credentials); with --tls-implicit every connection is TLS from its first byte.\n"
    "  STEP is CONNECT, HELO, MAIL, RCPT, DATA, BODY (drop only: cut the connection mid-DATA)\n"
    "  or EOD (the reply after the data). Example: --reply RCPT:451:0.05 --reply BODY:drop:0.01\n";

struct ReplyRule {
  uint16_t code = 0;
  bool drop = false;
  double probability = 1;
};
struct DelayRule {
  uint32_t min_ms = 0;
  uint32_t max_ms = 0;
  double probability = 1;
};

constexpr size_t kSteps = static_cast<size_t>(SinkStep::kCount);

absl::StatusOr<SinkStep> ParseStep(std::string_view name) {
  const std::string n = base::AsciiStrToLower(name);
  if (n == "connect") return SinkStep::kConnect;
  if (n == "helo" || n == "ehlo" || n == "lhlo") return SinkStep::kHelo;
  if (n == "mail") return SinkStep::kMail;
  if (n == "rcpt") return SinkStep::kRcpt;
  if (n == "data") return SinkStep::kData;
  if (n == "body") return SinkStep::kBody;
  if (n == "eod" || n == "data-end") return SinkStep::kDataEnd;
  return absl::InvalidArgumentError(
      StrCat("unknown step '", name, "': CONNECT, HELO, MAIL, RCPT, DATA, BODY or EOD"));
}

std::vector<std::string_view> SplitColons(std::string_view text) {
  std::vector<std::string_view> parts;
  size_t start = 0;
  while (true) {
    const size_t colon = text.find(':', start);
    parts.push_back(text.substr(start, colon == std::string_view::npos ? colon : colon - start));
    if (colon == std::string_view::npos) {
      return parts;
    }
    start = colon + 1;
  }
}

class Sink;

// One client: the sink session and the pump that drives it over the socket. Freed when its
// pump has closed.
struct Conn final : net::StreamSession, net::StreamPumpOwner {
  Conn(Sink* s, io::Net& net, io::Socket socket, timer::TimerWheel& timers,
       const SinkOptions& options, SinkHandler& handler)
      : sink(s), session(options, handler), pump(net, socket, *this, *this, &timers) {}

  // net::StreamSession. The sink reads whatever comes, always.
  void Feed(std::string_view bytes) override { session.Feed(bytes); }
  [[nodiscard]] std::string_view PendingOutput() const override { return session.PendingOutput(); }
  void ConsumeOutput(size_t bytes) override { session.ConsumeOutput(bytes); }
  // Not between STARTTLS and the switch to TLS.
  [[nodiscard]] bool WantsInput() const override { return session.WantsInput(); }
  [[nodiscard]] bool WantsClose() const override { return session.WantsClose(); }
  void EndOfInput() override {}  // The pump says input_ended(): the sink closes at once.

  // net::StreamPumpOwner.
  void OnPumpReady(net::StreamPump&) override;
  void OnPumpClosed(net::StreamPump&) override;
  void OnPumpTimeout(net::StreamPump&) override;  // A delayed reply is due.

  Sink* sink;
  SinkSession session;
  std::unique_ptr<tls::TlsTransport> tls;  // Once TLS starts; outlives the pump's use of it.
  net::StreamPump pump;
  bool delay_armed = false;
  bool dirty = false;
  bool starttls_due = false;  // The 220 to STARTTLS is queued: switch once it is sent.
  bool tls_counted = false;
  bool auth_counted = false;
};

class Sink final : public SinkHandler, public io::SocketOp {
 public:
  Sink(SinkOptions options, std::array<std::vector<ReplyRule>, kSteps> replies,
       std::array<std::vector<DelayRule>, kSteps> delays, uint64_t seed,
       std::unique_ptr<tls::ServerContext> tls_context, bool tls_implicit)
      : tls_context_(std::move(tls_context)),
        tls_implicit_(tls_implicit),
        options_(std::move(options)),
        replies_(std::move(replies)),
        delays_(std::move(delays)),
        random_(seed),
        timers_(clock_.MonotonicMs(), 1) {}

  // Stopped with connections still open: the engine goes first (no completion can name a
  // connection after it), then the connections.
  ~Sink() {
    engine_.reset();
    for (Conn* c : conns_) {
      if (!c->pump.close_submitted()) {
        ::close(c->pump.socket().value());
      }
      delete c;
    }
  }

  absl::Status Open(const std::string& listen, std::string& bound) {
    absl::StatusOr<std::unique_ptr<uring::Engine>> engine = uring::Engine::Create({});
    if (!engine.ok()) {
      return engine.status();
    }
    engine_ = std::move(*engine);
    absl::StatusOr<net::Listeners> listeners = net::OpenListeners({listen}, 1);
    if (!listeners.ok()) {
      return listeners.status();
    }
    listen_fd_ = listeners->fds_by_shard[0][0];
    bound = listeners->bound[0];
    engine_->net().AcceptMultishot(io::Socket::Descriptor(listen_fd_), *this);
    return absl::OkStatus();
  }

  // Runs until stopped, `duration_ms` (0: no limit) or `messages_max` (0: no limit).
  void Run(uint64_t duration_ms, uint64_t messages_max) {
    const uint64_t start = clock_.MonotonicMs();
    start_ms_ = start;
    while (!StopRequested()) {
      const uint64_t now = clock_.MonotonicMs();
      if ((duration_ms != 0 && now - start >= duration_ms) ||
          (messages_max != 0 && messages_ >= messages_max)) {
        break;
      }
      const int64_t next_timer = timers_.MsUntilNextTick(now);
      engine_->Run(next_timer < 0 ? 100 : std::min<int64_t>(next_timer, 100));
      timers_.Advance(clock_.MonotonicMs());
      while (!dirty_.empty()) {
        std::vector<Conn*> batch;
        batch.swap(dirty_);
        for (Conn* c : batch) {
          c->dirty = false;
          Process(*c);
        }
      }
    }
    seconds_ = static_cast<double>(clock_.MonotonicMs() - start) / 1000.0;
  }

  nlohmann::ordered_json Summary() const {
    nlohmann::ordered_json j;
    j["tool"] = "relais-bench sink";
    j["seconds"] = seconds_;
    j["connections"] = connections_;
    j["messages"] = messages_;
    j["bytes"] = bytes_;
    j["refused"] = refused_;
    j["dropped"] = dropped_;
    j["untracked"] = ledger_.untracked();
    if (tls_context_ != nullptr) {
      j["tls"] = {{"handshakes", tls_handshakes_},
                  {"resumed", tls_resumed_},
                  {"failed", tls_failed_},
                  {"authenticated", authenticated_}};
    }
    nlohmann::ordered_json runs = nlohmann::ordered_json::object();
    for (const auto& [run, account] : ledger_.runs()) {
      runs[run] = {{"messages", account.messages()},
                   {"deliveries", account.delivered_total()},
                   {"duplicates", account.duplicates},
                   {"dropped", account.dropped.size()}};
    }
    j["runs"] = std::move(runs);
    return j;
  }

  // SinkHandler.
  SinkAction Decide(SinkStep step) override {
    SinkAction action;
    const size_t i = static_cast<size_t>(step);
    if (!replies_[i].empty()) {
      double r = Uniform();
      for (const ReplyRule& rule : replies_[i]) {
        if (r < rule.probability) {
          action.code = rule.code;
          action.drop = rule.drop;
          break;
        }
        r -= rule.probability;
      }
    }
    for (const DelayRule& rule : delays_[i]) {
      if (Uniform() < rule.probability) {
        action.delay_ms =
            rule.min_ms + static_cast<uint32_t>(random_.Below(rule.max_ms - rule.min_ms + 1));
        break;
      }
    }
    return action;
  }
  void OnMessage(const TrackingId& id, uint32_t recipients, uint64_t bytes) override {
    ++messages_;
    bytes_ += bytes;
    if (id.run.empty()) {
      ledger_.Untracked();
    } else {
      ledger_.Delivered(id.run, id.seq, recipients, id.recipients);
    }
  }
  void OnDropped(const TrackingId& id) override {
    ++dropped_;
    if (!id.run.empty()) {
      ledger_.Dropped(id.run, id.seq);
    }
  }
  void OnRefused(const TrackingId& /*id*/) override { ++refused_; }
  std::string StatReply(std::string_view run) override { return ledger_.StatReply(run); }

  // Accept completions.
  void OnSocketDone(const io::SocketResult& done) override {
    const int32_t result = done.result;
    if (result >= 0) {
      const int one = 1;
      setsockopt(result, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
      ++connections_;
      auto conn = std::make_unique<Conn>(this, engine_->net(), io::Socket::Descriptor(result),
                                         timers_, options_, *this);
      Conn& c = *conn;
      conns_.insert(conn.release());
      if (tls_implicit_) {
        c.tls = tls::TlsTransport::Server(*tls_context_);
        c.pump.SetTransport(*c.tls);
        c.session.TlsStarted();
      }
      c.session.Start();
      MarkDirty(c);
    } else if (result != -ECANCELED) {
      std::fprintf(stderr, "relais-bench sink: accept: %s\n", std::strerror(-result));
    }
    if (!done.more && !StopRequested()) {
      // The kernel ended the multishot: re-arm.
      engine_->net().AcceptMultishot(io::Socket::Descriptor(listen_fd_), *this);
    }
  }

  void MarkDirty(Conn& c) {
    if (!c.dirty) {
      c.dirty = true;
      dirty_.push_back(&c);
    }
  }
  void OnClosed(Conn& c) {
    std::erase(dirty_, &c);
    conns_.erase(&c);
    delete &c;
  }
  void OnDelay(Conn& c) {
    c.delay_armed = false;
    c.session.ReleaseDelayed();
    MarkDirty(c);
  }

 private:
  double Uniform() { return static_cast<double>(random_.Next() >> 11) * 0x1.0p-53; }

  void Process(Conn& c) {
    net::StreamPump& pump = c.pump;
    if (pump.closing()) {
      return;
    }
    // A drop cuts the connection at once, and so does the end of the client's input (or a
    // reset): nothing more is sent.
    if (c.session.WantsAbort() || pump.input_ended() || pump.peer_gone()) {
      pump.Abort();
      return;
    }
    if (c.session.TakeStartTls()) {
      c.starttls_due = true;
    }
    if (c.starttls_due && c.session.PendingOutput().empty() && !pump.sending()) {
      // The 220 is out: what comes next is the ClientHello.
      c.starttls_due = false;
      c.tls = tls::TlsTransport::Server(*tls_context_);
      pump.SetTransport(*c.tls);
      c.session.TlsStarted();
    }
    if (c.tls != nullptr && !c.tls_counted) {
      if (c.tls->TakeHandshakeDone()) {
        c.tls_counted = true;
        ++tls_handshakes_;
        tls_resumed_ += c.tls->info().resumed ? 1 : 0;
      } else if (c.tls->state() == tls::TlsState::kFailed) {
        c.tls_counted = true;
        ++tls_failed_;
      }
    }
    if (c.session.authenticated() && !c.auth_counted) {
      c.auth_counted = true;
      ++authenticated_;
    }
    if (c.session.delay_ms() != 0 && !c.delay_armed) {
      c.delay_armed = true;
      pump.SetDeadline(clock_.MonotonicMs() + c.session.delay_ms());
    }
    pump.Drive();  // Sends what is pending; closes once QUIT's reply is out; reads.
  }

  // Before the connections (declared first, destroyed last): their transports use it.
  std::unique_ptr<tls::ServerContext> tls_context_;
  const bool tls_implicit_;
  const SinkOptions options_;
  const std::array<std::vector<ReplyRule>, kSteps> replies_;
  const std::array<std::vector<DelayRule>, kSteps> delays_;
  base::Random random_;
  base::SystemClock clock_;
  timer::TimerWheel timers_;
  std::unique_ptr<uring::Engine> engine_;
  int listen_fd_ = -1;
  std::unordered_set<Conn*> conns_;
  std::vector<Conn*> dirty_;
  Ledger ledger_;
  uint64_t start_ms_ = 0;
  double seconds_ = 0;
  uint64_t connections_ = 0;
  uint64_t messages_ = 0;
  uint64_t bytes_ = 0;
  uint64_t refused_ = 0;
  uint64_t dropped_ = 0;
  uint64_t tls_handshakes_ = 0;
  uint64_t tls_resumed_ = 0;
  uint64_t tls_failed_ = 0;
  uint64_t authenticated_ = 0;
};

void Conn::OnPumpReady(net::StreamPump&) { sink->MarkDirty(*this); }
void Conn::OnPumpClosed(net::StreamPump&) { sink->OnClosed(*this); }
void Conn::OnPumpTimeout(net::StreamPump&) { sink->OnDelay(*this); }

int Usage(const absl::Status& status) {
  std::fprintf(stderr, "relais-bench sink: %s\n%s", std::string(status.message()).c_str(),
               kSinkUsage);
  return 2;
}

}  // namespace

int RunSink(const std::vector<std::string>& args) {
  absl::StatusOr<Flags> flags = Flags::Parse(
      args, {"lmtp", "help", "tls-implicit"},
      {"listen", "seed", "duration", "messages", "json", "hostname", "tls-cert", "tls-key"},
      {"reply", "delay"});
  if (!flags.ok()) {
    return Usage(flags.status());
  }
  if (flags->Has("help")) {
    std::fputs(kSinkUsage, stdout);
    return 0;
  }
  if (!flags->positional().empty()) {
    return Usage(
        absl::InvalidArgumentError(StrCat("unexpected argument ", flags->positional()[0])));
  }
  SinkOptions options;
  options.lmtp = flags->Has("lmtp");
  options.hostname = flags->Get("hostname").value_or("relais-bench-sink");
  std::array<std::vector<ReplyRule>, kSteps> replies;
  std::array<std::vector<DelayRule>, kSteps> delays;
  for (const std::string& text : flags->GetAll("reply")) {
    const std::vector<std::string_view> p = SplitColons(text);
    if (p.size() != 3) {
      return Usage(absl::InvalidArgumentError(StrCat("--reply ", text, ": expected STEP:CODE:P")));
    }
    absl::StatusOr<SinkStep> step = ParseStep(p[0]);
    absl::StatusOr<double> probability = ParseFraction("probability", p[2]);
    if (!step.ok() || !probability.ok()) {
      return Usage(!step.ok() ? step.status() : probability.status());
    }
    ReplyRule rule;
    rule.probability = *probability;
    if (p[1] == "drop") {
      rule.drop = true;
    } else {
      absl::StatusOr<uint64_t> code = ParseCount("reply code", p[1]);
      if (!code.ok() || *code < 200 || *code > 599) {
        return Usage(absl::InvalidArgumentError(
            StrCat("--reply ", text, ": the code must be 200..599 or 'drop'")));
      }
      rule.code = static_cast<uint16_t>(*code);
    }
    if (*step == SinkStep::kBody && !rule.drop) {
      return Usage(absl::InvalidArgumentError("--reply BODY only takes 'drop'"));
    }
    auto& list = replies[static_cast<size_t>(*step)];
    list.push_back(rule);
    double total = 0;
    for (const ReplyRule& r : list) {
      total += r.probability;
    }
    if (total > 1.0 + 1e-9) {
      return Usage(
          absl::InvalidArgumentError(StrCat("--reply rules for ", p[0], " add up to more than 1")));
    }
  }
  for (const std::string& text : flags->GetAll("delay")) {
    const std::vector<std::string_view> p = SplitColons(text);
    if (p.size() < 2 || p.size() > 3) {
      return Usage(
          absl::InvalidArgumentError(StrCat("--delay ", text, ": expected STEP:MS[-MS][:P]")));
    }
    absl::StatusOr<SinkStep> step = ParseStep(p[0]);
    if (!step.ok()) {
      return Usage(step.status());
    }
    const size_t dash = p[1].find('-');
    absl::StatusOr<uint64_t> low = ParseCount("delay", p[1].substr(0, dash));
    absl::StatusOr<uint64_t> high =
        ParseCount("delay", dash == std::string_view::npos ? p[1] : p[1].substr(dash + 1));
    absl::StatusOr<double> probability =
        p.size() == 3 ? ParseFraction("probability", p[2]) : absl::StatusOr<double>(1.0);
    if (!low.ok() || !high.ok() || !probability.ok() || *high < *low || *high > 3'600'000) {
      return Usage(absl::InvalidArgumentError(
          StrCat("--delay ", text, ": expected milliseconds MS or MIN-MAX (at most an hour)")));
    }
    delays[static_cast<size_t>(*step)].push_back(
        {static_cast<uint32_t>(*low), static_cast<uint32_t>(*high), *probability});
  }
  uint64_t seed = 1;
  uint64_t duration_ms = 0;
  uint64_t messages_max = 0;
  if (auto v = flags->Get("seed")) {
    absl::StatusOr<uint64_t> n = ParseCount("seed", *v);
    if (!n.ok()) return Usage(n.status());
    seed = *n;
  }
  if (auto v = flags->Get("duration")) {
    absl::StatusOr<uint64_t> n = ParseDurationMs(*v);
    if (!n.ok()) return Usage(n.status());
    duration_ms = *n;
  }
  if (auto v = flags->Get("messages")) {
    absl::StatusOr<uint64_t> n = ParseCount("message count", *v);
    if (!n.ok()) return Usage(n.status());
    messages_max = *n;
  }
  std::unique_ptr<tls::ServerContext> tls_context;
  const bool tls_implicit = flags->Has("tls-implicit");
  if (flags->Has("tls-cert") != flags->Has("tls-key")) {
    return Usage(absl::InvalidArgumentError("--tls-cert and --tls-key go together"));
  }
  if (tls_implicit && !flags->Has("tls-cert")) {
    return Usage(absl::InvalidArgumentError("--tls-implicit needs --tls-cert and --tls-key"));
  }
  if (flags->Has("tls-cert")) {
    tls::ServerOptions tls_options;
    tls_options.certificates = {{*flags->Get("tls-cert"), *flags->Get("tls-key")}};
    tls_options.tickets.secret.resize(32);
    if (getrandom(tls_options.tickets.secret.data(), 32, 0) != 32) {
      std::fprintf(stderr, "relais-bench sink: getrandom: %s\n", std::strerror(errno));
      return 1;
    }
    absl::StatusOr<std::unique_ptr<tls::ServerContext>> created =
        tls::ServerContext::Create(tls_options);
    if (!created.ok()) {
      std::fprintf(stderr, "relais-bench sink: %s\n",
                   std::string(created.status().message()).c_str());
      return 1;
    }
    tls_context = std::move(*created);
    options.starttls = !tls_implicit;
  }
  Sink sink(options, std::move(replies), std::move(delays), seed, std::move(tls_context),
            tls_implicit);
  std::string bound;
  if (absl::Status s = sink.Open(flags->Get("listen").value_or("127.0.0.1:2526"), bound); !s.ok()) {
    std::fprintf(stderr, "relais-bench sink: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  InstallStopHandlers();
  std::printf("relais-bench sink: listening on %s%s%s\n", bound.c_str(),
              options.lmtp ? " (LMTP)" : "",
              tls_implicit ? " (implicit TLS)" : (options.starttls ? " (STARTTLS)" : ""));
  std::fflush(stdout);
  sink.Run(duration_ms, messages_max);
  const nlohmann::ordered_json summary = sink.Summary();
  std::printf("relais-bench sink: %s\n", summary.dump().c_str());
  if (auto path = flags->Get("json")) {
    std::ofstream out(*path);
    out << summary.dump(2) << "\n";
    if (!out) {
      std::fprintf(stderr, "relais-bench sink: cannot write %s\n", path->c_str());
      return 1;
    }
  }
  return 0;
}

}  // namespace relais::bench
