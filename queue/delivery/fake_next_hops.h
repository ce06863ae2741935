// queue/delivery/fake_next_hops.h — scripted SMTP/LMTP next hops over io::FakeNet, for the
// pools' unit tests and the seeded delivery simulation (tests/sim). Test support only.
//
// FakeNextHops is an io::Net that passes every call to a FakeNet and watches the outbound
// connections made through it: each Connect names a port, and the port's HopScript decides how
// that next hop behaves (refuses the connect, never answers it, greets with 220 or 421, never
// greets, resets at the end of the data, never answers it, stops taking data, takes a few bytes per
// send, LMTP). Serve() plays every next hop: it reads what the client sent and answers, sans-I/O,
// so a run is a pure function of the scripts and the test's steps. What each next hop accepted is
// recorded per recipient address (the end of the data answered 250).
//
// TLS: a next hop given a tls::ServerContext offers STARTTLS (RFC 3207) and, after its 220,
// speaks through a tls::TlsTransport::Server (or refuses STARTTLS with 454, answers the
// ClientHello with garbage, closes after its 220, or stalls in the handshake); with `auth`
// ("user:password") it offers AUTH PLAIN LOGIN once TLS is up and answers 235, or 535 for other
// credentials.
//
// Recipients choose their fate by name: an address starting with "temp" gets 450 4.2.0 at
// RCPT, "perm" 550 5.1.1; with LMTP, "lmtptemp" and "lmtpperm" are refused after the data
// (452 4.2.2, 550 5.2.1) while the others of the message are accepted.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cerrno>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/base/random.h"
#include "core/io/fake_net.h"
#include "core/io/net.h"
#include "core/net/stream_pump.h"
#include "protocols/tls/tls.h"

namespace relais::delivery::testing {

struct HopScript {
  bool refuse_connect = false;       // The connect fails with ECONNREFUSED.
  bool stall_connect = false;        // The connect never completes (until our timeout).
  uint16_t greeting_code = 220;      // 421: the next hop is busy and says so.
  bool greet = true;                 // False: says nothing at all (a stall before the greeting).
  bool lmtp = false;                 // One reply per accepted recipient after the data.
  bool reset_at_data_end = false;    // The whole message arrives, then the connection resets.
  bool stall_at_data_end = false;    // The whole message arrives and is never answered.
  bool stall_data = false;           // Takes no data once DATA is answered (a full window).
  size_t send_bytes_max = SIZE_MAX;  // Takes at most this much per send (short sends).
  // STARTTLS offered with this context (outlives the next hops); null: not offered.
  tls::ServerContext* tls = nullptr;
  bool refuse_starttls = false;       // 454 4.7.0 to STARTTLS.
  bool garbage_handshake = false;     // Answers the ClientHello with bytes that are not TLS.
  bool stall_handshake = false;       // Reads the ClientHello and never answers it.
  bool close_after_starttls = false;  // Closes the connection right after its 220 to STARTTLS.
  std::string auth;                   // "user:password": AUTH offered over TLS; empty: none.
  // 4xx/5xx: MAIL, or the end of the data, answered so (with "<code> <X>.3.0 try later").
  uint16_t mail_code = 250;
  uint16_t data_end_code = 250;
};

// One next hop's behaviour for a while, drawn from `random`: one of the faults above (a
// refused or stalled connect, 421, no greeting, a reset or a stall at the end of data, a full
// window, short sends) or, 6 times in 14, a next hop that accepts everything.
[[nodiscard]] inline HopScript RandomHopScript(base::Random& random) {
  HopScript s;
  switch (random.Below(14)) {
    case 0:
      s.refuse_connect = true;
      break;
    case 1:
      s.stall_connect = true;
      break;
    case 2:
      s.greeting_code = 421;
      break;
    case 3:
      s.greet = false;
      break;
    case 4:
      s.reset_at_data_end = true;
      break;
    case 5:
      s.stall_at_data_end = true;
      break;
    case 6:
      s.stall_data = true;
      break;
    case 7:
      s.send_bytes_max = 1 + random.Below(16);
      break;
    default:
      break;  // Accepts.
  }
  return s;
}

class FakeNextHops final : public io::Net {
 public:
  explicit FakeNextHops(io::FakeNet& net) : net_(&net) {}

  // Our side crashed: its sockets die with the FakeNet it used (closing one that has operations
  // in flight is no error then), and the next run connects through `net`. The next hops keep
  // what they accepted.
  void Crashed() { crashed_ = true; }
  void Rebind(io::FakeNet& net) {
    net_ = &net;
    connections_.clear();
    crashed_ = false;
  }

  // How the next hop on `port` behaves from its next connection on (default: accepts all).
  void Script(uint16_t port, HopScript script) { scripts_[port] = script; }

  // io::Net: passed to the FakeNet; outbound connections are watched.
  void AcceptMultishot(io::Socket listener, io::SocketOp& op) override {
    net_->AcceptMultishot(listener, op);
  }
  void AcceptDirect(io::Socket listener, sockaddr* address, socklen_t* length,
                    io::SocketOp& op) override {
    net_->AcceptDirect(listener, address, length, op);
  }
  [[nodiscard]] io::Socket NewStreamSocket(int family) override {
    return net_->NewStreamSocket(family);
  }
  [[nodiscard]] int32_t Bind(io::Socket socket, const sockaddr* address,
                             socklen_t length) override {
    return net_->Bind(socket, address, length);
  }
  void Connect(io::Socket socket, const sockaddr* address, socklen_t length,
               io::SocketOp& op) override {
    uint16_t port = 0;
    if (address->sa_family == AF_INET) {
      port = ntohs(reinterpret_cast<const sockaddr_in*>(address)->sin_port);
    }
    const HopScript script = scripts_[port];
    Connection& c = connections_[socket.value()];
    c = Connection{};
    c.socket = socket;
    c.port = port;
    c.script = script;
    ++connects_[port];
    sources_[port].push_back(AddressText(net_->bound_to(socket)));
    if (script.refuse_connect) {
      net_->SetConnectResult(socket, -ECONNREFUSED);
      c.gone = true;
    } else if (script.stall_connect) {
      net_->StallConnect(socket, true);
      c.gone = true;
    } else {
      net_->SetSendBytesMax(socket, script.send_bytes_max);
      if (script.greet) {
        net_->PeerSends(socket, script.greeting_code == 220 ? "220 hop ESMTP\r\n"
                                                            : "421 4.3.2 busy, try later\r\n");
        c.gone = script.greeting_code != 220;  // It says nothing more.
      }
    }
    net_->Connect(socket, address, length, op);
  }
  void Recv(io::Socket socket, io::SocketOp& op) override { net_->Recv(socket, op); }
  void Send(io::Socket socket, std::string_view data, io::SocketOp& op) override {
    net_->Send(socket, data, op);
  }
  void Close(io::Socket socket, io::SocketOp& op) override { net_->Close(socket, op); }
  void CloseUnused(io::Socket socket) override {
    if (!crashed_) {
      net_->CloseUnused(socket);
    }
  }
  void Cancel(io::SocketOp& op) override { net_->Cancel(op); }

  // Every next hop reads what it was sent and answers. True when anything was answered.
  bool Serve() {
    bool answered = false;
    for (auto& [id, c] : connections_) {
      if (net_->closed(c.socket)) {
        continue;
      }
      std::string bytes = net_->TakeSent(c.socket);
      if (c.gone || bytes.empty()) {
        continue;
      }
      if (c.garbage_pending) {
        net_->PeerSends(c.socket, "this is not a TLS record\r\n\r\n\r\n\r\n");
        c.gone = true;
        answered = true;
        continue;
      }
      if (c.tls) {
        c.tls->OnReceived(bytes, c.plain);
        c.input += c.plain.in;
        c.plain.in.clear();
        Flush(c);  // The handshake's answers.
        answered = true;
      } else {
        c.input += bytes;
      }
      answered |= Answer(c);
      Flush(c);
    }
    return answered;
  }

  // Times the end of a message carrying `address` was answered 250 (LMTP: for that address).
  [[nodiscard]] uint32_t delivered(const std::string& address) const {
    auto it = delivered_.find(address);
    return it == delivered_.end() ? 0 : it->second;
  }
  [[nodiscard]] const std::map<std::string, uint32_t>& deliveries() const { return delivered_; }
  // The local address each connection to `port` was bound to, in order ("" when unbound).
  [[nodiscard]] const std::vector<std::string>& sources(uint16_t port) { return sources_[port]; }
  [[nodiscard]] uint32_t connects(uint16_t port) const {
    auto it = connects_.find(port);
    return it == connects_.end() ? 0 : it->second;
  }
  // Commands (not message lines) each next hop received, in order, over all its connections.
  [[nodiscard]] const std::vector<std::string>& commands(uint16_t port) { return commands_[port]; }

 private:
  // The next hop's side of a TLS connection: plaintext in (decrypted) and out (to encrypt).
  struct PlainSide final : net::StreamSession {
    void Feed(std::string_view bytes) override { in.append(bytes); }
    [[nodiscard]] std::string_view PendingOutput() const override { return out; }
    void ConsumeOutput(size_t bytes) override { out.erase(0, bytes); }
    [[nodiscard]] bool WantsInput() const override { return true; }
    [[nodiscard]] bool WantsClose() const override { return false; }
    void EndOfInput() override {}
    std::string in;
    std::string out;
  };

  struct Connection {
    io::Socket socket;
    uint16_t port = 0;
    HopScript script;
    std::string input;
    bool in_data = false;
    bool mail_refused = false;
    bool gone = false;  // Reset, stalled for good, or closed by us: answers nothing more.
    std::vector<std::string> accepted;       // RCPTs answered 250 in this transaction.
    std::unique_ptr<tls::TlsTransport> tls;  // After STARTTLS.
    PlainSide plain;
    bool garbage_pending = false;  // garbage_handshake: STARTTLS answered, ClientHello awaited.
    int auth_login_step = 0;       // AUTH LOGIN: 1 username asked, 2 password asked.
    std::string auth_login_user;
  };

  void Reply(Connection& c, std::string_view text) {
    if (c.tls) {
      c.plain.out.append(text);
    } else {
      net_->PeerSends(c.socket, text);
    }
  }
  // What the TLS side has to send (handshake, records) goes out.
  void Flush(Connection& c) {
    if (c.tls) {
      std::string out;
      c.tls->TakeOutput(c.plain, out);
      if (!out.empty()) {
        net_->PeerSends(c.socket, out);
      }
      if (c.tls->state() == tls::TlsState::kFailed) {
        c.gone = true;
      }
    }
  }

  static std::string AddressText(const sockaddr_storage& a) {
    char text[INET6_ADDRSTRLEN] = {};
    if (a.ss_family == AF_INET) {
      inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(&a)->sin_addr, text, sizeof(text));
    } else if (a.ss_family == AF_INET6) {
      inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(&a)->sin6_addr, text,
                sizeof(text));
    }
    return text;
  }

  static std::string Base64(std::string_view in) {
    static constexpr char kAlphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    std::string out;
    for (size_t i = 0; i < in.size(); i += 3) {
      uint32_t n = static_cast<uint8_t>(in[i]) << 16;
      if (i + 1 < in.size()) n |= static_cast<uint8_t>(in[i + 1]) << 8;
      if (i + 2 < in.size()) n |= static_cast<uint8_t>(in[i + 2]);
      out += kAlphabet[(n >> 18) & 63];
      out += kAlphabet[(n >> 12) & 63];
      out += i + 1 < in.size() ? kAlphabet[(n >> 6) & 63] : '=';
      out += i + 2 < in.size() ? kAlphabet[n & 63] : '=';
    }
    return out;
  }

  // AUTH PLAIN <initial response>, or AUTH LOGIN's two lines (RFC 4954, RFC 4616).
  bool AuthLine(Connection& c, const std::string& line) {
    const size_t colon = c.script.auth.find(':');
    const std::string user = c.script.auth.substr(0, colon);
    const std::string password = c.script.auth.substr(colon + 1);
    if (c.auth_login_step == 1) {
      c.auth_login_user = line;
      c.auth_login_step = 2;
      Reply(c, "334 UGFzc3dvcmQ6\r\n");
      return true;
    }
    if (c.auth_login_step == 2) {
      c.auth_login_step = 0;
      const bool ok = c.auth_login_user == Base64(user) && line == Base64(password);
      Reply(c, ok ? "235 2.7.0 authenticated\r\n" : "535 5.7.8 bad credentials\r\n");
      return true;
    }
    if (line.starts_with("AUTH LOGIN")) {
      c.auth_login_step = 1;
      Reply(c, "334 VXNlcm5hbWU6\r\n");
      return true;
    }
    if (line.starts_with("AUTH PLAIN ")) {
      const bool ok =
          line.substr(11) == Base64(std::string("\0", 1) + user + std::string("\0", 1) + password);
      Reply(c, ok ? "235 2.7.0 authenticated\r\n" : "535 5.7.8 bad credentials\r\n");
      return true;
    }
    return false;
  }

  bool Answer(Connection& c) {
    bool answered = false;
    size_t eol;
    while (!c.gone && (eol = c.input.find("\r\n")) != std::string::npos) {
      const std::string line = c.input.substr(0, eol);
      c.input.erase(0, eol + 2);
      if (c.in_data) {
        if (line != ".") {
          continue;
        }
        c.in_data = false;
        answered = true;
        EndOfData(c);
        continue;
      }
      commands_[c.port].push_back(line);
      answered = true;
      if (c.tls && !c.script.auth.empty() && AuthLine(c, line)) {
        continue;
      }
      const std::string verb = line.substr(0, 4);
      if (verb == "EHLO" || verb == "LHLO") {
        std::string ehlo = "250-hop\r\n250-PIPELINING\r\n250-8BITMIME\r\n";
        if (c.script.tls != nullptr && !c.tls) {
          ehlo += "250-STARTTLS\r\n";
        }
        if (c.tls && !c.script.auth.empty()) {
          ehlo += "250-AUTH PLAIN LOGIN\r\n";
        }
        Reply(c, ehlo + "250 ENHANCEDSTATUSCODES\r\n");
      } else if (line == "STARTTLS" && c.script.tls != nullptr && !c.tls) {
        if (c.script.refuse_starttls) {
          Reply(c, "454 4.7.0 TLS not available now\r\n");
          continue;
        }
        Reply(c, "220 2.0.0 ready to start TLS\r\n");
        c.input.clear();  // RFC 3207: nothing pipelined in the clear is kept.
        if (c.script.garbage_handshake) {
          c.garbage_pending = true;  // The ClientHello is answered with garbage.
        } else if (c.script.close_after_starttls) {
          net_->PeerShutsWrite(c.socket);
          c.gone = true;
        } else if (c.script.stall_handshake) {
          c.gone = true;  // Reads the ClientHello and says nothing.
        } else {
          c.tls = tls::TlsTransport::Server(*c.script.tls);
        }
        return answered;
      } else if (verb == "HELO") {
        Reply(c, "250 hop\r\n");
      } else if (verb == "MAIL") {
        c.accepted.clear();
        c.mail_refused = c.script.mail_code != 250;
        Reply(c, c.mail_refused ? Refusal(c.script.mail_code) : "250 2.1.0 ok\r\n");
      } else if (verb == "RCPT") {
        const size_t lt = line.find('<');
        const size_t gt = line.find('>', lt);
        const std::string address = line.substr(lt + 1, gt - lt - 1);
        if (c.mail_refused) {
          Reply(c, "503 5.5.1 MAIL first\r\n");
        } else if (address.starts_with("temp")) {
          Reply(c, "450 4.2.0 mailbox busy\r\n");
        } else if (address.starts_with("perm")) {
          Reply(c, "550 5.1.1 no such user\r\n");
        } else {
          c.accepted.push_back(address);
          Reply(c, "250 2.1.5 ok\r\n");
        }
      } else if (verb == "DATA") {
        if (c.accepted.empty()) {
          Reply(c, "554 5.5.1 no valid recipients\r\n");
          continue;
        }
        c.in_data = true;
        Reply(c, "354 go ahead\r\n");
        if (c.script.stall_data) {
          net_->StallSends(c.socket, true);
          c.gone = true;
        }
      } else if (verb == "RSET") {
        c.accepted.clear();
        Reply(c, "250 2.0.0 reset\r\n");
      } else if (verb == "QUIT") {
        Reply(c, "221 2.0.0 bye\r\n");
        Flush(c);  // Over TLS: the record goes before the end of the stream.
        net_->PeerShutsWrite(c.socket);
        c.gone = true;
      } else {
        Reply(c, "500 5.5.2 what\r\n");
      }
    }
    return answered;
  }

  static std::string Refusal(uint16_t code) {
    return std::to_string(code) + " " + std::to_string(code / 100) + ".3.0 try later\r\n";
  }

  void EndOfData(Connection& c) {
    if (c.script.reset_at_data_end) {
      net_->PeerResets(c.socket);
      c.gone = true;
      return;
    }
    if (c.script.stall_at_data_end) {
      c.gone = true;
      return;
    }
    if (!c.script.lmtp && c.script.data_end_code != 250) {
      Reply(c, Refusal(c.script.data_end_code));
    } else if (!c.script.lmtp) {
      for (const std::string& address : c.accepted) {
        ++delivered_[address];
      }
      Reply(c, "250 2.0.0 queued\r\n");
    } else {
      for (const std::string& address : c.accepted) {
        if (address.starts_with("lmtptemp")) {
          Reply(c, "452 4.2.2 mailbox full\r\n");
        } else if (address.starts_with("lmtpperm")) {
          Reply(c, "550 5.2.1 mailbox disabled\r\n");
        } else {
          ++delivered_[address];
          Reply(c, "250 2.1.5 delivered\r\n");
        }
      }
    }
    c.accepted.clear();
  }

  io::FakeNet* net_;
  bool crashed_ = false;
  std::map<uint16_t, HopScript> scripts_;
  std::map<int32_t, Connection> connections_;
  std::map<std::string, uint32_t> delivered_;
  std::map<uint16_t, uint32_t> connects_;
  std::map<uint16_t, std::vector<std::string>> sources_;
  std::map<uint16_t, std::vector<std::string>> commands_;
};

}  // namespace relais::delivery::testing
