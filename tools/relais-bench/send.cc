// tools/relais-bench/send.cc — `relais-bench send`: an SMTP/LMTP load generator on the same
// io_uring engine and client state machine as relaisd's egress.
//
// Closed loop (each connection sends its next message as soon as the last is answered) or open
// loop (--rate: messages are released on a schedule, whatever the server's pace, and the lag
// of each start behind its schedule is reported, so a slow server cannot hide its latency by
// slowing the client down). Every message carries "X-Relais-Bench: RUN SEQ RCPTS"; with
// --sink, the sink's account of the run is fetched at the end (XSTAT) and compared with what
// was acknowledged here: lost, duplicated, dropped.
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <optional>

#define JSON_NOEXCEPTION
#include <nlohmann/json.hpp>

#include "core/base/clock.h"
#include "core/base/random.h"
#include "core/base/strings.h"
#include "core/mail/ip_network.h"
#include "core/net/net_address.h"
#include "core/net/stream_pump.h"
#include "core/timer/timer_wheel.h"
#include "core/uring/engine.h"
#include "protocols/smtp/client_session.h"
#include "protocols/tls/tls.h"
#include "tools/relais-bench/commands.h"
#include "tools/relais-bench/flags.h"
#include "tools/relais-bench/latency_histogram.h"
#include "tools/relais-bench/ledger.h"

namespace relais::bench {
namespace {

using base::StrAppend;
using base::StrCat;
using json = nlohmann::ordered_json;

constexpr const char* kSendUsage =
    "usage: relais-bench send --target HOST:PORT|/PATH [--lmtp] [--connections N]\n"
    "           [--messages M] [--duration T] [--size S | --size S:W,S:W...] [--rcpts R]\n"
    "           [--rate R] [--pipelining on|off] [--bdat] [--bind CIDR|none]\n"
    "           [--messages-per-connection K] [--from ADDR] [--to-domain D] [--helo NAME]\n"
    "           [--timeout T] [--run-id ID] [--sink HOST:PORT] [--verify-timeout T]\n"
    "           [--json FILE] [--seed N] [--progress] [--quiet] [--hold T] [--message FILE]\n"
    "           [--tls | --tls-implicit] [--tls-resume] [--auth USER:PASS]\n"
    "  --hold T opens the connections, says EHLO and keeps them idle for T (no messages).\n"
    "  --message FILE sends that message (RFC 5322, LF or CRLF) every time, with the tracking\n"
    "  header on top, instead of a generated one; --size does not apply then.\n"
    "  --tls says STARTTLS on every connection (a server that does not offer it fails the\n"
    "  session); --tls-implicit speaks TLS from the first byte (port 465). Certificates are not\n"
    "  verified. --tls-resume resumes each new connection's TLS session from the last one\n"
    "  (tickets); without it every connection makes a full handshake. --auth logs in (AUTH\n"
    "  PLAIN, else LOGIN) after STARTTLS. The report has the handshake latency (tls).\n"
    "  Defaults: 10 connections, 1000 messages (or until --duration), 2k, 1 recipient, closed\n"
    "  loop, pipelining on, DATA (not BDAT), sources spread over 127.0.0.0/8 for a loopback\n"
    "  target. Exit status: 0 done, 1 the run failed, 2 bad usage, 3 messages were lost.\n";

constexpr uint64_t kReconnectDelayMs = 100;

struct SendOptions {
  std::string target;
  sockaddr_storage address{};
  socklen_t address_length = 0;
  bool lmtp = false;
  uint32_t connections = 10;
  uint64_t messages = 0;     // 0: until the duration ends.
  uint64_t duration_ms = 0;  // 0: until the messages are sent.
  uint64_t hold_ms = 0;      // Idle mode: connect, EHLO, hold this long, QUIT; no messages.
  std::string size_text = "2k";
  std::vector<std::pair<uint64_t, uint32_t>> sizes = {{2048, 1}};  // (bytes, weight)
  uint32_t rcpts = 1;
  double rate = 0;  // Messages per second; 0: closed loop.
  bool pipelining = true;
  bool bdat = false;
  std::optional<mail::IpNetwork> bind;
  uint64_t messages_per_connection = 0;  // 0: no limit.
  std::string from = "bench@relais-bench.test";
  std::string to_domain = "example.com";
  std::string helo = "relais-bench.test";
  uint64_t timeout_ms = 60'000;
  std::string run_id;
  std::string sink;
  uint64_t verify_timeout_ms = 60'000;
  std::string json_path;
  uint64_t seed = 0;
  bool progress = false;
  bool quiet = false;
  std::string message;        // --message: the file's message, CRLF; empty: generated messages.
  bool tls = false;           // STARTTLS.
  bool tls_implicit = false;  // TLS from the first byte.
  bool tls_resume = false;
  std::string tls_server_name;  // SNI: the target's host when it is a name.
  std::string auth_user;
  std::string auth_password;
};

class Sender;

// One of the run's connections, reopened as long as there is work: the SMTP client session
// of the connection in hand, seen by its pump as a StreamSession.
struct Link final : timer::Timer, net::StreamSession, net::StreamPumpOwner {
  Link(Sender* s, uint32_t i) : sender(s), index(i) {}
  void OnTimer() override;

  // net::StreamSession over the client session. Its output pieces stay put until consumed,
  // so the pump sends message bodies without copying them.
  void Feed(std::string_view bytes) override { session->Feed(bytes); }
  [[nodiscard]] std::string_view PendingOutput() const override { return session->PendingOutput(); }
  void ConsumeOutput(size_t bytes) override;
  [[nodiscard]] bool WantsInput() const override { return true; }
  // Closes are the sender's (Process): the pump is held and closes only on Abort.
  [[nodiscard]] bool WantsClose() const override { return false; }
  void EndOfInput() override;
  [[nodiscard]] bool StableOutput() const override { return true; }

  // net::StreamPumpOwner.
  void OnPumpReady(net::StreamPump&) override;
  void OnPumpClosed(net::StreamPump&) override;

  Sender* sender;
  uint32_t index;
  std::optional<smtp::ClientSession> session;
  std::unique_ptr<tls::TlsTransport> tls;  // Once TLS starts; outlives the pump's use of it.
  std::optional<net::StreamPump> pump;     // The connection in hand.
  bool connecting = false;
  bool closing = false;
  bool dirty = false;
  bool waiting = false;         // Ready, waiting for the schedule to release a message.
  bool reconnect_wait = false;  // Between connections.
  bool retired = false;         // No more work: not reopened.
  bool quitting = false;        // QUIT sent for good: retired once the connection is closed.
  bool was_ready = false;
  bool starttls_due = false;  // The server said 220 to STARTTLS: switch once nothing is sent.
  bool tls_settled = false;   // The handshake finished or failed (counted).
  std::string lost_reason;    // Set when the connection failed.
  // Timings of the connection and message in hand (monotonic microseconds; 0: not yet).
  uint64_t connect_start_us = 0;
  uint64_t connected_us = 0;
  uint64_t ehlo_sent_us = 0;
  uint64_t tls_start_us = 0;  // The ClientHello's turn (0: no handshake yet).
  uint64_t data_end_sent_us = 0;
  // The message in hand.
  bool in_message = false;
  uint64_t seq = 0;
  uint64_t messages_on_connection = 0;
  std::string content;
};

struct Latencies {
  LatencyHistogram connect, ehlo, tls, data_end, start_lag;
};

json LatencyJson(const LatencyHistogram& h) {
  return {{"count", h.count()},          {"p50", h.Percentile(0.5)},    {"p90", h.Percentile(0.9)},
          {"p99", h.Percentile(0.99)},   {"p999", h.Percentile(0.999)}, {"max", h.max()},
          {"mean", std::round(h.mean())}};
}

class Sender {
  friend struct Link;  // Its pump callbacks land here.
 public:
  explicit Sender(SendOptions options)
      : options_(std::move(options)), random_(options_.seed), timers_(clock_.MonotonicMs(), 1) {
    for (uint32_t i = 0; i < options_.rcpts; ++i) {
      recipient_text_.push_back(StrCat("rcpt", i, "@", options_.to_domain));
    }
    for (const std::string& r : recipient_text_) {
      recipients_.push_back({r, "", ""});
    }
    date_ = base::Rfc5322Date(clock_.UnixMicros());
    // 74 printable characters and CRLF per line of filler.
    std::string line;
    for (int i = 0; i < 74; ++i) {
      line.push_back(static_cast<char>('!' + (i * 7) % 90));
    }
    line.append("\r\n");
    while (filler_.size() < (1u << 20)) {
      filler_.append(line);
    }
    uint64_t total = 0;
    for (const auto& [size, weight] : options_.sizes) {
      total += weight;
    }
    size_weight_total_ = total;
  }

  absl::Status Start() {
    absl::StatusOr<std::unique_ptr<uring::Engine>> engine = uring::Engine::Create({});
    if (!engine.ok()) {
      return engine.status();
    }
    engine_ = std::move(*engine);
    if (options_.tls || options_.tls_implicit) {
      tls::ClientOptions tls_options;
      tls_options.ca_file = "";  // A load generator does not verify.
      tls_options.session_cache_max = 1;
      absl::StatusOr<std::unique_ptr<tls::ClientContext>> context =
          tls::ClientContext::Create(tls_options);
      if (!context.ok()) {
        return context.status();
      }
      tls_context_ = std::move(*context);
    }
    acked_.reserve(options_.messages == 0 ? 1024 : options_.messages);
    start_us_ = clock_.MonotonicMicros();
    last_ready_ms_ = clock_.MonotonicMs();
    next_second_us_ = start_us_ + 1'000'000;
    for (uint32_t i = 0; i < options_.connections; ++i) {
      links_.push_back(std::make_unique<Link>(this, i));
      Open(*links_.back());
    }
    return absl::OkStatus();
  }

  // Runs the load until every connection is done. False when the target never answered.
  bool Run() {
    while (retired_ < links_.size()) {
      if (StopRequested()) {
        stop_ = true;
      }
      int64_t wait_ms = timers_.MsUntilNextTick(clock_.MonotonicMs());
      wait_ms = wait_ms < 0 ? 100 : std::min<int64_t>(wait_ms, 100);
      if (!waiting_.empty()) {
        wait_ms = std::min<int64_t>(wait_ms, 1);
      }
      engine_->Run(dirty_.empty() ? wait_ms : 0);
      timers_.Advance(clock_.MonotonicMs());
      if (!waiting_.empty()) {
        std::vector<Link*> w;
        w.swap(waiting_);
        for (Link* l : w) {
          l->waiting = false;
          MarkDirty(*l);
        }
      }
      while (!dirty_.empty()) {
        std::vector<Link*> batch;
        batch.swap(dirty_);
        for (Link* l : batch) {
          l->dirty = false;
          Process(*l);
        }
      }
      Tick(false);
      if (end_us_ == 0 && retired_ + quitting_ == links_.size()) {
        end_us_ = clock_.MonotonicMicros();  // The work is done; what is left is saying goodbye.
      }
      if (options_.hold_ms != 0 && !hold_over_ && !HasWork()) {
        hold_over_ = true;  // Idle connections hear of it only this way: wake them all.
        for (auto& l : links_) {
          MarkDirty(*l);
        }
      }
      if (connections_ok_ == 0 && connect_failures_ >= 3ull * links_.size() && !stop_) {
        fatal_ = StrCat("cannot connect to ", options_.target, ": ", last_connect_error_);
        stop_ = true;
      } else if (clock_.MonotonicMs() - last_ready_ms_ > options_.timeout_ms && !stop_ &&
                 HasWork() && (options_.hold_ms == 0 || sessions_ready_ == 0)) {
        fatal_ = StrCat("no session became ready for ", options_.timeout_ms, " ms; last: ",
                        last_unready_error_.empty() ? last_connect_error_ : last_unready_error_);
        stop_ = true;
      }
    }
    if (end_us_ == 0) {
      end_us_ = clock_.MonotonicMicros();
    }
    Tick(true);
    return fatal_.empty();
  }

  [[nodiscard]] const std::string& fatal() const { return fatal_; }

  // Fetches the sink's account until it has every acknowledged message or the time is up.
  absl::StatusOr<RunAccount> FetchSinkAccount() const;

  json Report(const std::optional<RunAccount>& account, const absl::Status& account_status,
              uint64_t& lost) const;
  void PrintSummary(const json& report) const;

  // Pump events.
  void OnPumpReady(Link& l) {
    net::StreamPump& pump = *l.pump;
    if (l.connecting) {
      l.connecting = false;
      timers_.Cancel(l);
      if (pump.end() == net::PumpEnd::kConnectFailed) {
        ConnectFailed(l, std::strerror(-pump.error()));
        l.closing = true;
      } else {
        ++connections_ok_;
        l.connected_us = clock_.MonotonicMicros();
        lat_.connect.Record(l.connected_us - l.connect_start_us);
        if (l.tls != nullptr) {
          l.tls_start_us = l.connected_us;  // Implicit TLS: the ClientHello goes first.
        }
      }
    } else if (pump.peer_gone()) {
      Lost(l, pump.end() == net::PumpEnd::kSendFailed
                  ? StrCat("send: ", std::strerror(-pump.error()))
                  : std::string(std::strerror(-pump.error())));
    }
    MarkDirty(l);
  }
  void ConnectFailed(Link& /*l*/, std::string_view why) {
    ++connect_failures_;
    last_connect_error_ = why;
    ++errors_[StrCat("connect: ", last_connect_error_)];
  }
  // What the pump sent of the session's output.
  void OnSent(Link& l) {
    if (!l.session->HasOutput() && l.session->data_end_queued() && l.data_end_sent_us == 0) {
      l.data_end_sent_us = clock_.MonotonicMicros();
    }
  }
  // The link's last QUIT is queued: the run's work ends here for it, the connection a moment
  // later (after the server's 221, its close, or the reply timeout).
  void Quitting(Link& l) {
    if (!l.quitting) {
      l.quitting = true;
      ++quitting_;
    }
  }

  // The pump has closed the connection (or there was none); called from its last callback.
  void OnClosed(Link& l) {
    if (l.quitting) {
      l.quitting = false;
      --quitting_;
    }
    l.closing = false;
    l.pump.reset();  // The pump touches nothing after OnPumpClosed.
    l.tls.reset();
    l.session.reset();
    if (!l.retired && HasWork()) {
      // Straight back after a connection that worked (message cap, or cut by the server);
      // after one that never became ready, a short pause so a refusing server is not hammered.
      const bool clean = l.was_ready;
      l.reconnect_wait = true;
      timers_.Arm(l, clock_.MonotonicMs() + (clean ? 0 : kReconnectDelayMs));
    } else if (!l.retired) {
      l.retired = true;
      ++retired_;
    }
  }
  void OnTimer(Link& l) {
    if (l.reconnect_wait) {
      l.reconnect_wait = false;
      if (HasWork()) {
        Open(l);
      } else {
        l.retired = true;
        ++retired_;
      }
      return;
    }
    if (l.connecting) {
      l.connecting = false;
      ConnectFailed(l, StrCat("timed out after ", options_.timeout_ms, " ms"));
      l.closing = true;
      MarkDirty(l);
      return;
    }
    if (l.tls != nullptr && l.tls->state() == tls::TlsState::kHandshaking) {
      // A server that stalls in the handshake (the session waits with no deadline of its own).
      ++tls_failures_;
      l.tls_settled = true;
      Lost(l, StrCat("TLS handshake: no answer within ", options_.timeout_ms, " ms"));
      MarkDirty(l);
      return;
    }
    if (l.session && l.session->TimeoutMs() != 0) {
      Lost(l, StrCat("no reply within ", l.session->TimeoutMs(), " ms"));
      MarkDirty(l);
    }
  }

 private:
  [[nodiscard]] bool HasWork() const {
    if (stop_) {
      return false;
    }
    if (options_.messages != 0 && next_seq_ >= options_.messages) {
      return false;
    }
    if (options_.duration_ms != 0 &&
        clock_.MonotonicMicros() - start_us_ >= options_.duration_ms * 1000) {
      return false;
    }
    return true;
  }

  void MarkDirty(Link& l) {
    if (!l.dirty) {
      l.dirty = true;
      dirty_.push_back(&l);
    }
  }

  void OnEndOfInput(Link& l) { Lost(l, "closed by the server"); }

  void Lost(Link& l, std::string_view why) {
    if (l.session && !l.session->closed()) {
      if (l.lost_reason.empty()) {
        l.lost_reason.assign(why);
      }
      l.session->OnConnectionLost(why);
    }
  }

  void Open(Link& l) {
    l.lost_reason.clear();
    l.was_ready = false;
    l.ehlo_sent_us = 0;
    l.tls_start_us = 0;
    l.starttls_due = false;
    l.tls_settled = false;
    l.messages_on_connection = 0;
    const int family = options_.address.ss_family;
    const io::Socket socket = engine_->net().NewStreamSocket(family);
    if (!socket.valid()) {
      ++connect_failures_;
      last_connect_error_ = StrCat("socket: ", std::strerror(-socket.value()));
      ++errors_[last_connect_error_];
      l.reconnect_wait = true;
      timers_.Arm(l, clock_.MonotonicMs() + kReconnectDelayMs);
      return;
    }
    if (family != AF_UNIX) {
      const int one = 1;
      setsockopt(socket.value(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    if (options_.bind && family == AF_INET) {
      // One source address per connection, so a run can hold more connections than one
      // address has ports, and per-address limits of the server see many clients.
      const int one = 1;
      setsockopt(socket.value(), IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
      const mail::IpNetwork& n = *options_.bind;
      uint32_t base_address = 0;
      std::memcpy(&base_address, n.base.bytes.data(), 4);
      base_address = ntohl(base_address);
      const uint64_t hosts = n.prefix_bits >= 31 ? 1 : (1ull << (32 - n.prefix_bits)) - 2;
      const uint32_t host = n.prefix_bits >= 31 ? 0 : static_cast<uint32_t>(1 + l.index % hosts);
      sockaddr_in source{};
      source.sin_family = AF_INET;
      source.sin_addr.s_addr = htonl(base_address + host);
      if (bind(socket.value(), reinterpret_cast<sockaddr*>(&source), sizeof(source)) != 0) {
        ++errors_[StrCat("bind: ", std::strerror(errno))];
      }
    }
    smtp::ClientOptions o;
    o.helo_name = options_.helo;
    o.peer_name = options_.target;
    o.lmtp = options_.lmtp;
    o.use_pipelining = options_.pipelining;
    o.use_chunking = options_.bdat;
    o.reset_before_reuse = false;
    const uint32_t timeout =
        static_cast<uint32_t>(std::min<uint64_t>(options_.timeout_ms, UINT32_MAX));
    o.reply_timeout_ms = timeout;
    o.data_init_timeout_ms = timeout;
    o.data_end_timeout_ms = timeout;
    if (options_.tls) {
      o.starttls = smtp::StartTls::kRequired;
    }
    o.implicit_tls = options_.tls_implicit;
    o.auth_user = options_.auth_user;
    o.auth_password = options_.auth_password;
    l.session.emplace(std::move(o));
    l.connecting = true;
    l.connect_start_us = clock_.MonotonicMicros();
    timers_.Arm(l, clock_.MonotonicMs() + options_.timeout_ms);
    l.pump.emplace(engine_->net(), socket, l, l, &timers_);
    if (options_.tls_implicit) {
      l.tls = NewTls();
      l.pump->SetTransport(*l.tls);
    }
    l.pump->Hold();  // Closed only by BeginClose.
    l.pump->Connect(reinterpret_cast<const sockaddr*>(&options_.address), options_.address_length);
  }

  std::unique_ptr<tls::TlsTransport> NewTls() {
    return tls::TlsTransport::Client(*tls_context_, options_.tls_server_name,
                                     tls::VerifyMode::kNone,
                                     options_.tls_resume ? options_.target : std::string());
  }

  // STARTTLS's switch, and the handshake's outcome. False when the link failed.
  bool AdvanceTls(Link& l) {
    smtp::ClientSession& s = *l.session;
    if (s.TakeStartTls()) {
      l.starttls_due = true;
    }
    if (l.starttls_due && !l.pump->sending()) {
      l.starttls_due = false;
      l.tls = NewTls();
      l.pump->SetTransport(*l.tls);
      l.tls_start_us = clock_.MonotonicMicros();
    }
    if (l.tls == nullptr || l.tls_settled) {
      return true;
    }
    if (l.tls->TakeHandshakeDone()) {
      l.tls_settled = true;
      ++tls_handshakes_;
      if (l.tls->info().resumed) {
        ++tls_resumed_;
      }
      if (l.tls_start_us != 0) {
        lat_.tls.Record(clock_.MonotonicMicros() - l.tls_start_us);
      }
      if (options_.tls && !s.closed()) {  // (A session that timed out meanwhile is done.)
        s.TlsStarted();                   // The session says EHLO again, encrypted.
      }
    } else if (l.tls->state() == tls::TlsState::kFailed) {
      l.tls_settled = true;
      ++tls_failures_;
      Lost(l, StrCat("TLS handshake: ", l.tls->failure()));
      return false;
    }
    return true;
  }

  // Starts the next message on a ready connection; false when there is none to send (now).
  bool NextMessage(Link& l) {
    if (!HasWork()) {
      return false;
    }
    uint64_t now_us = clock_.MonotonicMicros();
    if (options_.rate > 0) {
      const double due_us = static_cast<double>(next_seq_) * 1e6 / options_.rate;
      if (static_cast<double>(now_us - start_us_) < due_us) {
        l.waiting = true;
        waiting_.push_back(&l);
        return true;
      }
      lat_.start_lag.Record(now_us - start_us_ - static_cast<uint64_t>(due_us));
    }
    l.seq = next_seq_++;
    l.in_message = true;
    l.data_end_sent_us = 0;
    uint64_t size = options_.sizes[0].first;
    if (options_.sizes.size() > 1) {
      uint64_t pick = random_.Below(size_weight_total_);
      for (const auto& [bytes, weight] : options_.sizes) {
        if (pick < weight) {
          size = bytes;
          break;
        }
        pick -= weight;
      }
    }
    std::string& c = l.content;
    c.clear();
    if (!options_.message.empty()) {
      // The given message under the tracking header (which no DKIM signature covers).
      StrAppend(&c, "X-Relais-Bench: ", options_.run_id, " ", l.seq, " ", options_.rcpts, "\r\n",
                options_.message);
      size = 0;
    } else {
      StrAppend(&c, "X-Relais-Bench: ", options_.run_id, " ", l.seq, " ", options_.rcpts,
                "\r\nFrom: <", options_.from, ">\r\nTo: <", recipient_text_[0],
                ">\r\nSubject: relais-bench ", options_.run_id, " message ", l.seq,
                "\r\nMessage-ID: <", l.seq, ".", options_.run_id, "@relais-bench>\r\nDate: ", date_,
                "\r\nMIME-Version: 1.0\r\n\r\n");
    }
    uint64_t body = size > c.size() ? size - c.size() : 0;
    while (body > 0) {
      const uint64_t take = std::min<uint64_t>(body, filler_.size());
      const uint64_t whole = take - take % 76;  // Whole lines, or a short last line.
      if (whole > 0) {
        c.append(filler_, 0, whole);
        body -= whole;
      } else {
        if (body >= 3) {
          c.append(filler_, 0, body - 2);
        }
        c.append("\r\n");
        body = 0;
      }
    }
    if (!c.ends_with("\r\n")) {
      c.append("\r\n");
    }
    smtp::OutgoingMessage m;
    m.sender = options_.from;
    m.recipients = recipients_;
    m.content = c;
    l.session->Begin(m);
    ++in_flight_;
    return true;
  }

  void Complete(Link& l) {
    const std::vector<smtp::RecipientReply> results = l.session->TakeResults();
    const uint64_t now_us = clock_.MonotonicMicros();
    --in_flight_;
    last_ready_ms_ = now_us / 1000;  // Progress: the server is answering.
    l.in_message = false;
    ++l.messages_on_connection;
    ++completed_;
    ++second_completed_;
    uint32_t accepted = 0;
    if (!l.lost_reason.empty()) {
      ++connection_lost_;
      ++errors_[StrCat("connection lost: ", l.lost_reason)];
      ++second_errors_;
      lost_connection_seqs_.push_back(l.seq);
    } else {
      for (const smtp::RecipientReply& r : results) {
        ++replies_[StrCat(r.code)];  // The code the session parsed, never read back from text.
        if (r.status == smtp::RecipientStatus::kDelivered) {
          ++accepted;
        }
      }
      if (l.data_end_sent_us != 0) {
        const uint64_t us = now_us - l.data_end_sent_us;
        lat_.data_end.Record(us);
        second_data_end_.Record(us);
      }
    }
    if (accepted == options_.rcpts) {
      ++accepted_;
      ++second_accepted_;
      bytes_accepted_ += l.content.size();
    } else if (accepted > 0) {
      ++partial_;
    } else if (l.lost_reason.empty()) {
      ++refused_;
      ++second_errors_;
    }
    if (l.seq >= acked_.size()) {
      acked_.resize(l.seq + 1, 0);
    }
    acked_[l.seq] = static_cast<uint16_t>(accepted);
  }

  void Process(Link& l) {
    if (l.reconnect_wait || l.retired) {
      return;
    }
    if (l.closing || !l.pump) {
      BeginClose(l);
      return;
    }
    if (l.connecting) {
      return;
    }
    smtp::ClientSession& s = *l.session;
    (void)AdvanceTls(l);  // A failure closes the session (s.closed() below).
    if (l.in_message && s.transaction_done()) {
      Complete(l);
    }
    if (s.ready() && !l.was_ready) {
      l.was_ready = true;
      ++sessions_ready_;
      last_ready_ms_ = clock_.MonotonicMs();
      if (l.ehlo_sent_us != 0) {
        lat_.ehlo.Record(clock_.MonotonicMicros() - l.ehlo_sent_us);
      }
    }
    if (s.closed()) {
      if (!l.was_ready) {
        ++errors_[l.lost_reason.empty() ? StrCat("refused: ", s.error())
                                        : StrCat("connection lost before ready: ", l.lost_reason)];
        last_unready_error_ = l.lost_reason.empty() ? s.error() : l.lost_reason;
      }
      l.closing = true;
      BeginClose(l);
      return;
    }
    if (s.ready() && !l.in_message && !l.waiting && options_.hold_ms != 0) {
      if (!HasWork()) {
        s.Quit();  // The hold is over.
        Quitting(l);
      }
    } else if (s.ready() && !l.in_message && !l.waiting) {
      const bool capped = options_.messages_per_connection != 0 &&
                          l.messages_on_connection >= options_.messages_per_connection;
      if (capped || !NextMessage(l)) {
        s.Quit();
        if (!HasWork()) {
          Quitting(l);
        }
      }
    }
    if (!l.pump->sending() && s.HasOutput() && l.ehlo_sent_us == 0 && !l.was_ready) {
      l.ehlo_sent_us = clock_.MonotonicMicros();
    }
    l.pump->Drive();  // Sends the session's pending output (one send at a time), reads.
    const uint32_t timeout = s.TimeoutMs();
    if (l.tls != nullptr && l.tls->state() == tls::TlsState::kHandshaking && !s.closed()) {
      const uint64_t start_ms = l.tls_start_us != 0 ? l.tls_start_us / 1000 : clock_.MonotonicMs();
      timers_.Arm(l, start_ms + options_.timeout_ms);  // The handshake's deadline.
    } else if (timeout != 0) {
      timers_.Arm(l, clock_.MonotonicMs() + timeout);
    } else {
      timers_.Cancel(l);
    }
  }

  void BeginClose(Link& l) {
    if (!l.closing) {
      l.closing = true;
    }
    if (!l.reconnect_wait) {
      timers_.Cancel(l);
    }
    if (l.pump && l.pump->closing()) {
      return;  // OnPumpClosed follows once every operation has completed.
    }
    if (l.in_message && l.session) {
      // The transaction was cut (a local timeout or cancel): settle it as lost.
      Lost(l, "connection closed");
      if (l.session->transaction_done()) {
        Complete(l);
      }
    }
    if (!l.pump) {
      OnClosed(l);
      return;
    }
    l.connecting = false;
    l.pump->Release();
    l.pump->Abort();  // Cancels what is in flight, waits for it, closes, then OnPumpClosed.
  }

  void Tick(bool final) {
    const uint64_t now_us = final ? end_us_ : clock_.MonotonicMicros();
    if (!final && now_us < next_second_us_) {
      return;
    }
    const double t = static_cast<double>(now_us - start_us_) / 1e6;
    const double span = final ? t - static_cast<double>(series_.size()) : 1.0;
    if (final && (span <= 0.001 || (second_completed_ == 0 && second_errors_ == 0))) {
      return;
    }
    series_.push_back({{"t", std::round(t * 1000) / 1000},
                       {"completed", second_completed_},
                       {"accepted", second_accepted_},
                       {"errors", second_errors_},
                       {"in_flight", in_flight_},
                       {"messages_per_second", static_cast<double>(second_accepted_) / span},
                       {"data_end_p50_us", second_data_end_.Percentile(0.5)},
                       {"data_end_p99_us", second_data_end_.Percentile(0.99)}});
    if (options_.progress && !final) {
      std::fprintf(
          stderr, "[%5.0fs] %9llu done  %8.0f msg/s  errors %llu  in flight %llu  p99 %.3f ms\n", t,
          static_cast<unsigned long long>(completed_), static_cast<double>(second_accepted_),
          static_cast<unsigned long long>(connection_lost_ + refused_ + partial_),
          static_cast<unsigned long long>(in_flight_),
          static_cast<double>(second_data_end_.Percentile(0.99)) / 1000.0);
    }
    second_completed_ = second_accepted_ = second_errors_ = 0;
    second_data_end_ = LatencyHistogram();
    next_second_us_ += 1'000'000;
    if (next_second_us_ <= now_us) {
      next_second_us_ = now_us + 1'000'000;
    }
  }

  const SendOptions options_;
  base::Random random_;
  base::SystemClock clock_;
  timer::TimerWheel timers_;
  std::unique_ptr<tls::ClientContext> tls_context_;  // Outlives the links' transports.
  std::unique_ptr<uring::Engine> engine_;
  std::vector<std::unique_ptr<Link>> links_;
  std::vector<Link*> dirty_;
  std::vector<Link*> waiting_;
  std::vector<std::string> recipient_text_;
  std::vector<smtp::OutgoingRecipient> recipients_;
  std::string date_;
  std::string filler_;
  uint64_t size_weight_total_ = 1;
  bool stop_ = false;
  bool hold_over_ = false;
  std::string fatal_;
  size_t retired_ = 0;
  uint64_t start_us_ = 0;
  uint64_t end_us_ = 0;
  size_t quitting_ = 0;  // Links whose last QUIT is queued and whose connection is still open.
  uint64_t next_second_us_ = 0;
  uint64_t next_seq_ = 0;
  uint64_t in_flight_ = 0;
  uint64_t completed_ = 0;
  uint64_t accepted_ = 0;
  uint64_t partial_ = 0;
  uint64_t refused_ = 0;
  uint64_t connection_lost_ = 0;
  uint64_t bytes_accepted_ = 0;
  uint64_t connections_ok_ = 0;
  uint64_t connect_failures_ = 0;
  uint64_t sessions_ready_ = 0;
  uint64_t tls_handshakes_ = 0;
  uint64_t tls_resumed_ = 0;
  uint64_t tls_failures_ = 0;
  // When a session last became ready or a transaction ended: a server that refuses or fails
  // every session for --timeout ends the run (it would otherwise go on for ever), while one
  // that restarts (the crash loop) is waited for.
  uint64_t last_ready_ms_ = 0;
  std::string last_unready_error_;
  std::string last_connect_error_;
  std::map<std::string, uint64_t> replies_;
  std::map<std::string, uint64_t> errors_;
  std::vector<uint16_t> acked_;  // Recipients accepted, by sequence number.
  std::vector<uint64_t> lost_connection_seqs_;
  Latencies lat_;
  uint64_t second_completed_ = 0;
  uint64_t second_accepted_ = 0;
  uint64_t second_errors_ = 0;
  LatencyHistogram second_data_end_;
  json series_ = json::array();
};

void Link::OnTimer() { sender->OnTimer(*this); }
void Link::ConsumeOutput(size_t bytes) {
  session->ConsumeOutput(bytes);
  sender->OnSent(*this);
}
void Link::EndOfInput() { sender->OnEndOfInput(*this); }
void Link::OnPumpReady(net::StreamPump&) { sender->OnPumpReady(*this); }
void Link::OnPumpClosed(net::StreamPump&) { sender->OnClosed(*this); }

// The sink's side of AskSink's TLS (implicit TLS): plaintext in and out.
struct PlainBuffer final : net::StreamSession {
  void Feed(std::string_view bytes) override { in.append(bytes); }
  [[nodiscard]] std::string_view PendingOutput() const override { return out; }
  void ConsumeOutput(size_t bytes) override { out.erase(0, bytes); }
  [[nodiscard]] bool WantsInput() const override { return true; }
  [[nodiscard]] bool WantsClose() const override { return false; }
  void EndOfInput() override { ended = true; }
  std::string in;
  std::string out;
  bool ended = false;
};

// A blocking conversation with the sink for XSTAT (run once, at the end); over TLS when
// `tls` (a sink with --tls-implicit).
absl::StatusOr<std::string> AskSink(const std::string& address, const std::string& run,
                                    tls::ClientContext* tls_context) {
  std::string host, port;
  if (!net::SplitHostPort(address, host, port)) {
    return absl::InvalidArgumentError(StrCat("--sink ", address, ": expected host:port"));
  }
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* result = nullptr;
  if (getaddrinfo(host.c_str(), port.c_str(), &hints, &result) != 0 || result == nullptr) {
    return absl::InvalidArgumentError(StrCat("--sink ", address, ": cannot resolve"));
  }
  const int fd = socket(result->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  timeval tv{10, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  const bool connected = fd >= 0 && connect(fd, result->ai_addr, result->ai_addrlen) == 0;
  freeaddrinfo(result);
  if (!connected) {
    const std::string error = std::strerror(errno);
    if (fd >= 0) {
      close(fd);
    }
    return absl::UnavailableError(StrCat("sink ", address, ": ", error));
  }
  std::string in;
  size_t consumed = 0;
  std::unique_ptr<tls::TlsTransport> tls;
  PlainBuffer plain;
  if (tls_context != nullptr) {
    tls = tls::TlsTransport::Client(*tls_context, "", tls::VerifyMode::kNone, "");
  }
  // Sends `text` (encrypted when over TLS, with whatever the handshake has to say).
  auto send_text = [&](std::string_view text) {
    std::string bytes(text);
    if (tls != nullptr) {
      plain.out.append(text);
      bytes.clear();
      tls->TakeOutput(plain, bytes);
    }
    return bytes.empty() ||
           write(fd, bytes.data(), bytes.size()) == static_cast<ssize_t>(bytes.size());
  };
  // Reads one reply; returns its text (all lines).
  auto read_reply = [&]() -> absl::StatusOr<std::string> {
    size_t start = consumed;
    while (true) {
      size_t eol;
      while ((eol = in.find("\r\n", consumed)) != std::string::npos) {
        const std::string_view line(in.data() + consumed, eol - consumed);
        consumed = eol + 2;
        if (line.size() < 4 || line[3] == ' ') {
          return in.substr(start, consumed - start);
        }
      }
      char buffer[65536];
      const ssize_t n = read(fd, buffer, sizeof(buffer));
      // The run's engine is still there, and a completion of one of its connections (a server
      // closing) interrupts a read that has a timeout with EINTR. A stop asked for by the user
      // also comes as EINTR.
      if (n < 0 && errno == EINTR && !StopRequested()) {
        continue;
      }
      if (n == 0) {
        return absl::UnavailableError(StrCat("sink ", address, ": connection ended"));
      }
      if (n < 0) {
        return absl::UnavailableError(
            StrCat("sink ", address, ": ",
                   errno == EAGAIN ? "no reply within 10 s" : std::strerror(errno)));
      }
      if (tls == nullptr) {
        in.append(buffer, static_cast<size_t>(n));
        continue;
      }
      tls->OnReceived(std::string_view(buffer, static_cast<size_t>(n)), plain);
      in.append(plain.in);
      plain.in.clear();
      if (tls->state() == tls::TlsState::kFailed) {
        return absl::UnavailableError(StrCat("sink ", address, ": TLS: ", tls->failure()));
      }
      if (!send_text("")) {  // Handshake messages.
        return absl::UnavailableError(StrCat("sink ", address, ": ", std::strerror(errno)));
      }
    }
  };
  absl::StatusOr<std::string> reply = send_text("") ? read_reply()  // ClientHello, greeting.
                                                    : absl::UnavailableError(std::strerror(errno));
  if (reply.ok() && send_text(StrCat("XSTAT ", run, "\r\n"))) {
    reply = read_reply();
  }
  (void)send_text("QUIT\r\n");
  close(fd);
  return reply;
}

absl::StatusOr<RunAccount> Sender::FetchSinkAccount() const {
  const uint64_t deadline = clock_.MonotonicMs() + options_.verify_timeout_ms;
  while (true) {
    absl::StatusOr<std::string> reply = AskSink(
        options_.sink, options_.run_id, options_.tls_implicit ? tls_context_.get() : nullptr);
    if (!reply.ok()) {
      return reply.status();
    }
    absl::StatusOr<RunAccount> account = ParseStatReply(*reply);
    if (!account.ok()) {
      return account.status();
    }
    bool complete = true;
    for (uint64_t seq = 0; seq < acked_.size() && complete; ++seq) {
      complete = account->DeliveriesOf(seq) >= acked_[seq];
    }
    if (complete || clock_.MonotonicMs() >= deadline || StopRequested()) {
      return account;
    }
    usleep(200'000);  // A relay in between may still be delivering.
  }
}

json Sender::Report(const std::optional<RunAccount>& account, const absl::Status& account_status,
                    uint64_t& lost) const {
  const double seconds = static_cast<double>(end_us_ - start_us_) / 1e6;
  json j;
  j["tool"] = "relais-bench send";
  j["run_id"] = options_.run_id;
  j["target"] = options_.target;
  j["config"] = {{"connections", options_.connections},
                 {"messages", options_.messages},
                 {"duration_ms", options_.duration_ms},
                 {"size", options_.size_text},
                 {"rcpts", options_.rcpts},
                 {"rate", options_.rate},
                 {"pipelining", options_.pipelining},
                 {"bdat", options_.bdat},
                 {"lmtp", options_.lmtp},
                 {"bind", options_.bind ? options_.bind->ToString() : "none"},
                 {"tls", options_.tls ? "starttls" : (options_.tls_implicit ? "implicit" : "off")},
                 {"tls_resume", options_.tls_resume},
                 {"auth", !options_.auth_user.empty()}};
  json replies = json::object();
  for (const auto& [code, n] : replies_) {
    replies[code] = n;
  }
  json errors = json::object();
  for (const auto& [what, n] : errors_) {
    errors[what] = n;
  }
  json latency = {{"connect", LatencyJson(lat_.connect)},
                  {"ehlo", LatencyJson(lat_.ehlo)},
                  {"data_end", LatencyJson(lat_.data_end)}};
  if (options_.tls || options_.tls_implicit) {
    latency["tls_handshake"] = LatencyJson(lat_.tls);
  }
  if (options_.rate > 0) {
    latency["start_lag"] = LatencyJson(lat_.start_lag);
  }
  j["summary"] = {
      {"seconds", seconds},
      {"attempted", completed_},
      {"accepted", accepted_},
      {"partial", partial_},
      {"refused", refused_},
      {"connection_lost", connection_lost_},
      {"bytes", bytes_accepted_},
      {"messages_per_second", seconds > 0 ? static_cast<double>(accepted_) / seconds : 0.0},
      {"bytes_per_second", seconds > 0 ? static_cast<double>(bytes_accepted_) / seconds : 0.0},
      {"connections_opened", connections_ok_},
      {"sessions_ready", sessions_ready_},
      {"tls_handshakes", tls_handshakes_},
      {"tls_resumed", tls_resumed_},
      {"tls_failures", tls_failures_},
      {"replies", replies},
      {"errors", errors},
      {"latency_us", latency}};
  json cdf = json::array();
  for (const auto& [us, fraction] : lat_.data_end.Cdf()) {
    cdf.push_back({us, fraction});
  }
  j["cdf"] = {{"data_end", cdf}};
  j["series"] = series_;
  lost = 0;
  if (!options_.sink.empty()) {
    json check;
    if (!account) {
      check["error"] = std::string(account_status.message());
    } else {
      uint64_t acknowledged = 0, delivered = 0, unacknowledged = 0;
      json lost_seqs = json::array();
      for (uint64_t seq = 0; seq < std::max<uint64_t>(acked_.size(), account->deliveries.size());
           ++seq) {
        const uint16_t want = seq < acked_.size() ? acked_[seq] : 0;
        const uint16_t got = account->DeliveriesOf(seq);
        if (want != 0) {
          ++acknowledged;
          if (got >= want) {
            ++delivered;
          } else {
            ++lost;
            if (lost_seqs.size() < 100) {
              lost_seqs.push_back(seq);
            }
          }
        } else if (got != 0) {
          ++unacknowledged;
        }
      }
      std::vector<uint64_t> ours = lost_connection_seqs_;
      std::sort(ours.begin(), ours.end());
      check = {{"acknowledged", acknowledged},
               {"delivered", delivered},
               {"lost", lost},
               {"lost_seqs", lost_seqs},
               {"duplicates", account->duplicates},
               {"received_unacknowledged", unacknowledged},
               {"dropped_by_sink", account->dropped.size()},
               {"connection_lost_here", ours.size()},
               {"drops_match", ours == account->dropped}};
      json dropped = json::array();
      for (size_t i = 0; i < std::min<size_t>(account->dropped.size(), 1000); ++i) {
        dropped.push_back(account->dropped[i]);
      }
      json cut = json::array();
      for (size_t i = 0; i < std::min<size_t>(ours.size(), 1000); ++i) {
        cut.push_back(ours[i]);
      }
      check["dropped_seqs"] = dropped;
      check["connection_lost_seqs"] = cut;
    }
    j["check"] = check;
  }
  return j;
}

void Sender::PrintSummary(const json& j) const {
  const json& s = j["summary"];
  std::printf("relais-bench send: %llu messages to %s over %u connections in %.2f s (run %s)\n",
              static_cast<unsigned long long>(completed_), options_.target.c_str(),
              options_.connections, s["seconds"].get<double>(), options_.run_id.c_str());
  std::printf("  accepted %llu  partial %llu  refused %llu  connection lost %llu\n",
              static_cast<unsigned long long>(accepted_), static_cast<unsigned long long>(partial_),
              static_cast<unsigned long long>(refused_),
              static_cast<unsigned long long>(connection_lost_));
  std::printf("  throughput %.1f msg/s  %.2f MiB/s\n", s["messages_per_second"].get<double>(),
              s["bytes_per_second"].get<double>() / 1048576.0);
  if (options_.tls || options_.tls_implicit) {
    std::printf("  tls handshakes %llu  resumed %llu  failed %llu\n",
                static_cast<unsigned long long>(tls_handshakes_),
                static_cast<unsigned long long>(tls_resumed_),
                static_cast<unsigned long long>(tls_failures_));
  }
  std::string replies;
  for (const auto& [code, n] : replies_) {
    StrAppend(&replies, " ", code, ":", n);
  }
  std::printf("  replies%s\n", replies.empty() ? " none" : replies.c_str());
  for (const auto& [what, n] : errors_) {
    std::printf("  error %llu x %s\n", static_cast<unsigned long long>(n), what.c_str());
  }
  std::printf("  latency (ms)        p50       p90       p99     p99.9       max\n");
  auto row = [](const char* name, const LatencyHistogram& h) {
    if (h.count() == 0) {
      return;
    }
    std::printf("    %-12s %9.3f %9.3f %9.3f %9.3f %9.3f\n", name, h.Percentile(0.5) / 1000.0,
                h.Percentile(0.9) / 1000.0, h.Percentile(0.99) / 1000.0,
                h.Percentile(0.999) / 1000.0, static_cast<double>(h.max()) / 1000.0);
  };
  row("connect", lat_.connect);
  row("ehlo", lat_.ehlo);
  row("tls", lat_.tls);
  row("data-end", lat_.data_end);
  row("start-lag", lat_.start_lag);
  if (j.contains("check")) {
    const json& c = j["check"];
    if (c.contains("error")) {
      std::printf("  sink check failed: %s\n", c["error"].get<std::string>().c_str());
    } else {
      std::printf(
          "  sink check: acknowledged %llu  delivered %llu  lost %llu  duplicated %llu  "
          "dropped by sink %llu (cut here %llu, %s)\n",
          c["acknowledged"].get<unsigned long long>(), c["delivered"].get<unsigned long long>(),
          c["lost"].get<unsigned long long>(), c["duplicates"].get<unsigned long long>(),
          c["dropped_by_sink"].get<unsigned long long>(),
          c["connection_lost_here"].get<unsigned long long>(),
          c["drops_match"].get<bool>() ? "the same messages" : "NOT the same messages");
    }
  }
}

int Usage(const absl::Status& status) {
  std::fprintf(stderr, "relais-bench send: %s\n%s", std::string(status.message()).c_str(),
               kSendUsage);
  return 2;
}

absl::Status ResolveTarget(SendOptions& o) {
  if (o.target.starts_with('/')) {
    auto* un = reinterpret_cast<sockaddr_un*>(&o.address);
    if (o.target.size() >= sizeof(un->sun_path)) {
      return absl::InvalidArgumentError(StrCat("--target ", o.target, ": socket path too long"));
    }
    un->sun_family = AF_UNIX;
    std::memcpy(un->sun_path, o.target.c_str(), o.target.size() + 1);
    o.address_length = static_cast<socklen_t>(sizeof(sockaddr_un));
    return absl::OkStatus();
  }
  std::string host, port;
  if (!net::SplitHostPort(o.target, host, port)) {
    return absl::InvalidArgumentError(
        StrCat("--target ", o.target, ": expected host:port, [v6]:port or a socket path"));
  }
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* result = nullptr;
  const int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &result);
  if (rc != 0 || result == nullptr) {
    return absl::InvalidArgumentError(
        StrCat("--target ", o.target, ": cannot resolve: ", gai_strerror(rc)));
  }
  std::memcpy(&o.address, result->ai_addr, result->ai_addrlen);
  o.address_length = result->ai_addrlen;
  freeaddrinfo(result);
  return absl::OkStatus();
}

absl::Status ParseSendOptions(const Flags& f, SendOptions& o) {
  if (!f.positional().empty()) {
    return absl::InvalidArgumentError(StrCat("unexpected argument ", f.positional()[0]));
  }
  const std::optional<std::string> target = f.Get("target");
  if (!target) {
    return absl::InvalidArgumentError("--target is required");
  }
  o.target = *target;
  if (absl::Status s = ResolveTarget(o); !s.ok()) {
    return s;
  }
  o.lmtp = f.Has("lmtp");
  o.bdat = f.Has("bdat");
  o.quiet = f.Has("quiet");
  o.progress = f.Has("progress") || (!o.quiet && isatty(STDERR_FILENO) != 0);
  auto count = [&](const char* name, uint64_t& out, uint64_t min, uint64_t max) -> absl::Status {
    if (auto v = f.Get(name)) {
      absl::StatusOr<uint64_t> n = ParseCount(StrCat("--", name), *v);
      if (!n.ok()) {
        return n.status();
      }
      if (*n < min || *n > max) {
        return absl::InvalidArgumentError(StrCat("--", name, " must be ", min, "..", max));
      }
      out = *n;
    }
    return absl::OkStatus();
  };
  auto duration = [&](const char* name, uint64_t& out) -> absl::Status {
    if (auto v = f.Get(name)) {
      absl::StatusOr<uint64_t> n = ParseDurationMs(*v);
      if (!n.ok()) {
        return n.status();
      }
      out = *n;
    }
    return absl::OkStatus();
  };
  uint64_t connections = o.connections, rcpts = o.rcpts;
  for (absl::Status s : {count("connections", connections, 1, 1'000'000),
                         count("messages", o.messages, 1, kSeqMax), count("rcpts", rcpts, 1, 1000),
                         count("messages-per-connection", o.messages_per_connection, 0, UINT64_MAX),
                         count("seed", o.seed, 0, UINT64_MAX), duration("duration", o.duration_ms),
                         duration("hold", o.hold_ms), duration("timeout", o.timeout_ms),
                         duration("verify-timeout", o.verify_timeout_ms)}) {
    if (!s.ok()) {
      return s;
    }
  }
  o.connections = static_cast<uint32_t>(connections);
  o.rcpts = static_cast<uint32_t>(rcpts);
  if (o.hold_ms != 0) {
    if (f.Has("messages") || f.Has("duration") || f.Has("rate")) {
      return absl::InvalidArgumentError(
          "--hold sends no message: drop --messages, --duration and --rate");
    }
    o.duration_ms = o.hold_ms;
  } else if (o.messages == 0 && o.duration_ms == 0) {
    o.messages = 1000;
  }
  if (o.timeout_ms == 0) {
    return absl::InvalidArgumentError("--timeout must be above 0");
  }
  if (auto v = f.Get("rate")) {
    double rate = 0;
    const std::string_view text = *v;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), rate);
    if (ec != std::errc() || end != text.data() + text.size() || !(rate > 0) || rate > 1e7) {
      return absl::InvalidArgumentError(StrCat("--rate ", text, ": expected messages per second"));
    }
    o.rate = rate;
  }
  if (auto v = f.Get("pipelining")) {
    if (*v != "on" && *v != "off") {
      return absl::InvalidArgumentError("--pipelining takes on or off");
    }
    o.pipelining = *v == "on";
  }
  if (auto v = f.Get("size")) {
    o.size_text = *v;
    o.sizes.clear();
    std::string_view rest = *v;
    while (!rest.empty()) {
      const size_t comma = rest.find(',');
      const std::string_view item = rest.substr(0, comma);
      rest = comma == std::string_view::npos ? "" : rest.substr(comma + 1);
      const size_t colon = item.find(':');
      absl::StatusOr<uint64_t> bytes = ParseBytes(item.substr(0, colon));
      if (!bytes.ok()) {
        return bytes.status();
      }
      uint64_t weight = 1;
      if (colon != std::string_view::npos) {
        absl::StatusOr<uint64_t> w = ParseCount("size weight", item.substr(colon + 1));
        if (!w.ok() || *w == 0 || *w > 1'000'000) {
          return absl::InvalidArgumentError(StrCat("--size ", *v, ": weights are 1..1000000"));
        }
        weight = *w;
      }
      if (*bytes > 1'073'741'824) {
        return absl::InvalidArgumentError(StrCat("--size ", *v, ": at most 1 GiB a message"));
      }
      o.sizes.emplace_back(*bytes, static_cast<uint32_t>(weight));
    }
    if (o.sizes.empty()) {
      return absl::InvalidArgumentError("--size is empty");
    }
  }
  if (auto v = f.Get("bind")) {
    if (*v != "none") {
      o.bind = mail::IpNetwork::Parse(*v);
      if (!o.bind || o.bind->base.family != AF_INET) {
        return absl::InvalidArgumentError(StrCat("--bind ", *v, ": expected an IPv4 CIDR or none"));
      }
    }
  } else if (o.address.ss_family == AF_INET &&
             reinterpret_cast<const uint8_t*>(
                 &reinterpret_cast<const sockaddr_in*>(&o.address)->sin_addr)[0] == 127) {
    o.bind = mail::IpNetwork::Parse("127.0.0.0/8");
  }
  if (o.bind && o.address.ss_family != AF_INET) {
    return absl::InvalidArgumentError("--bind needs an IPv4 target");
  }
  if (auto v = f.Get("message")) {
    std::ifstream in(*v, std::ios::binary);
    if (!in) {
      return absl::InvalidArgumentError(StrCat("--message ", *v, ": ", std::strerror(errno)));
    }
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    for (size_t i = 0; i < text.size(); ++i) {  // Bare LF and lone CR line ends become CRLF.
      if (text[i] == '\n' && (i == 0 || text[i - 1] != '\r')) {
        o.message.push_back('\r');
      }
      o.message.push_back(text[i]);
      if (text[i] == '\r' && (i + 1 == text.size() || text[i + 1] != '\n')) {
        o.message.push_back('\n');
      }
    }
    if (o.message.find("\r\n\r\n") == std::string::npos) {
      return absl::InvalidArgumentError(
          StrCat("--message ", *v, ": not a message (no empty line after a header)"));
    }
    if (!o.message.ends_with("\r\n")) {
      o.message.append("\r\n");
    }
  }
  o.tls = f.Has("tls");
  o.tls_implicit = f.Has("tls-implicit");
  o.tls_resume = f.Has("tls-resume");
  if (o.tls && o.tls_implicit) {
    return absl::InvalidArgumentError("--tls (STARTTLS) and --tls-implicit exclude each other");
  }
  if (o.tls_resume && !o.tls && !o.tls_implicit) {
    return absl::InvalidArgumentError("--tls-resume needs --tls or --tls-implicit");
  }
  if (o.tls || o.tls_implicit) {
    std::string host, port;
    if (!o.target.starts_with('/') && net::SplitHostPort(o.target, host, port)) {
      o.tls_server_name = host;  // The transport sends no SNI for an address.
    }
  }
  if (auto v = f.Get("auth")) {
    const size_t colon = v->find(':');
    if (colon == std::string::npos || colon == 0) {
      return absl::InvalidArgumentError("--auth takes USER:PASS");
    }
    if (!o.tls && !o.tls_implicit) {
      return absl::InvalidArgumentError(
          "--auth needs --tls or --tls-implicit: credentials go out only over TLS");
    }
    o.auth_user = v->substr(0, colon);
    o.auth_password = v->substr(colon + 1);
  }
  o.from = f.Get("from").value_or(o.from);
  o.to_domain = f.Get("to-domain").value_or(o.to_domain);
  o.helo = f.Get("helo").value_or(o.helo);
  o.sink = f.Get("sink").value_or("");
  o.json_path = f.Get("json").value_or("");
  if (auto v = f.Get("run-id")) {
    const bool ok = !v->empty() && v->size() <= 64 && std::all_of(v->begin(), v->end(), [](char c) {
      return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
             c == '-' || c == '_' || c == '.';
    });
    if (!ok) {
      return absl::InvalidArgumentError("--run-id: 1..64 of [A-Za-z0-9._-]");
    }
    o.run_id = *v;
  } else {
    base::SystemClock clock;
    base::Random r(clock.UnixMicros() ^ (static_cast<uint64_t>(getpid()) << 32));
    char text[17];
    std::snprintf(text, sizeof(text), "%016llx", static_cast<unsigned long long>(r.Next()));
    o.run_id = text;
  }
  if (!f.Has("seed")) {
    base::SystemClock clock;
    o.seed = clock.UnixMicros();
  }
  return absl::OkStatus();
}

}  // namespace

int RunSend(const std::vector<std::string>& args) {
  absl::StatusOr<Flags> flags = Flags::Parse(
      args, {"lmtp", "bdat", "progress", "quiet", "help", "tls", "tls-implicit", "tls-resume"},
      {"target",         "connections",
       "messages",       "duration",
       "size",           "rcpts",
       "rate",           "pipelining",
       "bind",           "messages-per-connection",
       "from",           "to-domain",
       "helo",           "timeout",
       "run-id",         "sink",
       "verify-timeout", "json",
       "seed",           "hold",
       "message",        "auth"});
  if (!flags.ok()) {
    return Usage(flags.status());
  }
  if (flags->Has("help")) {
    std::fputs(kSendUsage, stdout);
    return 0;
  }
  SendOptions options;
  if (absl::Status s = ParseSendOptions(*flags, options); !s.ok()) {
    return Usage(s);
  }
  // Every connection is a file descriptor: take what the hard limit allows.
  rlimit limit{};
  const rlim_t wanted = static_cast<rlim_t>(options.connections) + 1024;
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < wanted) {
    if (limit.rlim_max < wanted) {
      rlimit raised{wanted, wanted};  // Allowed with CAP_SYS_RESOURCE, up to fs.nr_open.
      if (setrlimit(RLIMIT_NOFILE, &raised) == 0) {
        limit = raised;
      }
    }
    limit.rlim_cur = std::min(wanted, limit.rlim_max);
    setrlimit(RLIMIT_NOFILE, &limit);
  }
  InstallStopHandlers();
  Sender sender(options);
  if (absl::Status s = sender.Start(); !s.ok()) {
    std::fprintf(stderr, "relais-bench send: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  const bool ran = sender.Run();
  std::optional<RunAccount> account;
  absl::Status account_status;
  if (!options.sink.empty()) {
    absl::StatusOr<RunAccount> fetched = sender.FetchSinkAccount();
    if (fetched.ok()) {
      account = std::move(*fetched);
    } else {
      account_status = fetched.status();
    }
  }
  uint64_t lost = 0;
  const json report = sender.Report(account, account_status, lost);
  if (!options.quiet) {
    sender.PrintSummary(report);
  }
  if (!options.json_path.empty()) {
    std::ofstream out(options.json_path);
    out << report.dump(2) << "\n";
    if (!out) {
      std::fprintf(stderr, "relais-bench send: cannot write %s\n", options.json_path.c_str());
      return 1;
    }
  }
  if (!ran) {
    std::fprintf(stderr, "relais-bench send: %s\n", sender.fatal().c_str());
    return 1;
  }
  if (!options.sink.empty() && !account) {
    std::fprintf(stderr, "relais-bench send: sink check failed: %s\n",
                 std::string(account_status.message()).c_str());
    return 1;
  }
  return lost == 0 ? 0 : 3;
}

}  // namespace relais::bench
