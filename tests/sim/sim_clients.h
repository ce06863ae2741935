// tests/sim/sim_clients.h — scripted SMTP clients over io::FakeNet, for the seeded simulations
// (ingress_sim_test.cc, shard_sim_test.cc). Test support only.
//
// A client connects to a listener and sends its messages in one of three styles: in lock step
// (one command per reply), pipelined (MAIL, RCPT and DATA in one write) or as Exim does (MAIL,
// RCPT, `BDAT n LAST` with the body and QUIT in one write, then its sending side shut). Every
// write reaches the server in random pieces (from the seeded Random); a client may reset the
// connection at a random byte or while it waits for a reply, or stall there (stop reading and
// writing, so the server must time it out). What each message's end of data was answered is
// recorded (Message::reply), and how far the client got (Message::end_at), for the properties.
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <cstdlib>
#include <deque>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/base/random.h"
#include "core/io/fake_net.h"

namespace relais::sim {

enum class Style : uint8_t { kLockstep, kPipelined, kExim };

// What a reply answers.
enum class Expect : uint8_t { kGreeting, kEhlo, kCommand, kData, kEnd, kQuit };

struct Message {
  std::string token;
  std::string body;  // As sent after DATA (dot-stuffed) or BDAT (raw), ending in CRLF.
  std::string sender = "sender@sim.example";
  std::vector<std::string> recipients;
  // The client's bytes_sent once its end of data (the dot, or BDAT LAST's last byte) is
  // written; the server had the whole message only if the client got that far.
  uint64_t end_at = UINT64_MAX;
  int reply = 0;  // To its end of data (or to the command that refused it); 0: none.
};

struct Client {
  io::Socket socket;
  Style style = Style::kLockstep;
  std::vector<Message> messages;
  size_t next_message = 0;
  bool quit_sent = false;
  std::string out;  // Written, not yet delivered to the server (it goes in random pieces).
  uint64_t bytes_sent = 0;
  uint64_t cut_at = UINT64_MAX;  // Resets or stalls once this many bytes are sent.
  bool resets = false;
  bool stalls = false;
  bool cut = false;      // Reset or stalled: does nothing any more.
  bool shut = false;     // Shut its sending side.
  bool closed = false;   // The server closed the connection.
  bool refused = false;  // The greeting was not 220.
  bool crashed = false;  // The server died under it (its net is gone).
  size_t read = 0;       // Bytes of the server's output parsed.
  std::string line;      // A reply line not complete yet.
  // The replies awaited, in order, and the message each concerns (SIZE_MAX: none).
  std::deque<std::pair<Expect, size_t>> expect;
  std::deque<std::string> lines;  // Lock step: the group's commands not written yet.
};

// The body of a message carrying `token` in an X-Sim-Token header; dot-stuffed when `stuff`.
inline std::string MakeBody(base::Random& rng, const std::string& token, bool stuff) {
  std::string body = "Subject: sim\r\nX-Sim-Token: " + token + "\r\n\r\n";
  const uint64_t lines = rng.Below(12);
  for (uint64_t i = 0; i < lines; ++i) {
    std::string text;
    if (rng.Below(6) == 0) {
      text = ".";  // A line that needs dot-stuffing in DATA.
    }
    const uint64_t n = rng.Below(rng.Below(10) == 0 ? 990 : 80);  // Within 1000 with CRLF.
    for (uint64_t k = 0; k < n; ++k) {
      text += static_cast<char>('a' + rng.Below(26));
    }
    if (stuff && !text.empty() && text[0] == '.') {
      text.insert(0, ".");
    }
    body += text + "\r\n";
  }
  return body;
}

class SimClients {
 public:
  SimClients(io::FakeNet& net, base::Random& rng) : net_(&net), rng_(rng) {}

  // A client connects (from `from`) to `listener` and will send `c`'s messages; `c` carries its
  // style, messages and faults (resets, stalls, cut_at).
  Client& Connect(io::Socket listener, const sockaddr_storage& from, std::unique_ptr<Client> c) {
    c->socket = net_->PeerConnects(listener, from);
    c->expect.emplace_back(Expect::kGreeting, SIZE_MAX);
    clients.push_back(std::move(c));
    return *clients.back();
  }
  // The server died: every client of the old net is gone with it; new ones use `net`.
  void Crashed(io::FakeNet& net) {
    for (auto& c : clients) {
      c->crashed = true;
    }
    net_ = &net;
  }
  // The client's next step this turn; true when it did something.
  bool Act(Client& c);
  // True when the client will do nothing more: closed by the server, or reset or stalled and
  // its connection closed, or its server died.
  [[nodiscard]] bool Finished(const Client& c) const {
    return c.crashed || c.closed || (c.cut && net_->closed(c.socket));
  }

  std::vector<std::unique_ptr<Client>> clients;

 private:
  void Write(Client& c);
  void OnReply(Client& c, int code);

  io::FakeNet* net_;
  base::Random& rng_;
};

inline void SimClients::Write(Client& c) {
  if (c.quit_sent) {
    return;
  }
  if (c.refused || c.next_message >= c.messages.size()) {
    c.out += "QUIT\r\n";
    c.expect.emplace_back(Expect::kQuit, SIZE_MAX);
    c.quit_sent = true;
    return;
  }
  const size_t i = c.next_message;
  Message& m = c.messages[i];
  std::string group = "MAIL FROM:<" + m.sender + ">\r\n";
  for (const std::string& r : m.recipients) {
    group += "RCPT TO:<" + r + ">\r\n";
  }
  switch (c.style) {
    case Style::kLockstep:
    case Style::kPipelined:
      group += "DATA\r\n";
      if (c.style == Style::kPipelined) {
        c.out += group;
      } else {
        for (size_t at = 0; at < group.size();) {
          const size_t eol = group.find("\r\n", at) + 2;
          c.lines.push_back(group.substr(at, eol - at));
          at = eol;
        }
      }
      c.expect.emplace_back(Expect::kCommand, i);
      for (size_t r = 0; r < m.recipients.size(); ++r) {
        c.expect.emplace_back(Expect::kCommand, i);
      }
      c.expect.emplace_back(Expect::kData, i);
      break;
    case Style::kExim:
      c.out += group + "BDAT " + std::to_string(m.body.size()) + " LAST\r\n" + m.body;
      m.end_at = c.bytes_sent + c.out.size();
      c.expect.emplace_back(Expect::kCommand, i);
      for (size_t r = 0; r < m.recipients.size(); ++r) {
        c.expect.emplace_back(Expect::kCommand, i);
      }
      c.expect.emplace_back(Expect::kEnd, i);
      ++c.next_message;
      if (c.next_message == c.messages.size()) {
        c.out += "QUIT\r\n";  // In the same write, then the sending side shut (Exim).
        c.expect.emplace_back(Expect::kQuit, SIZE_MAX);
        c.quit_sent = true;
      }
      break;
  }
}

inline void SimClients::OnReply(Client& c, int code) {
  if (c.expect.empty()) {
    return;  // Unsolicited (a 421 after the last reply): the server closes next.
  }
  const auto [what, index] = c.expect.front();
  c.expect.pop_front();
  Message* m = index == SIZE_MAX ? nullptr : &c.messages[index];
  switch (what) {
    case Expect::kGreeting:
      c.refused = code != 220;
      if (c.refused) {
        for (Message& msg : c.messages) {
          msg.reply = code;
        }
        return;
      }
      c.out += "EHLO client.sim.example\r\n";
      c.expect.emplace_back(Expect::kEhlo, SIZE_MAX);
      return;
    case Expect::kEhlo:
    case Expect::kQuit:
      return;
    case Expect::kCommand:
      if (code >= 400 && m->reply == 0) {
        m->reply = code;  // Refused before its data (its DATA is refused too).
      }
      return;
    case Expect::kData:
      if (code != 354) {
        if (m->reply == 0) {
          m->reply = code;
        }
        ++c.next_message;  // No body: the next message, or QUIT.
        return;
      }
      c.out += m->body + ".\r\n";
      m->end_at = c.bytes_sent + c.out.size();
      c.expect.emplace_back(Expect::kEnd, index);
      ++c.next_message;
      return;
    case Expect::kEnd:
      m->reply = code;
      return;
  }
}

inline bool SimClients::Act(Client& c) {
  if (c.cut || c.closed || c.crashed) {
    return false;
  }
  bool acted = false;
  // Read the server's replies.
  const std::string& sent = net_->sent(c.socket);
  while (c.read < sent.size()) {
    const size_t eol = sent.find("\r\n", c.read);
    if (eol == std::string::npos) {
      break;
    }
    const std::string line = sent.substr(c.read, eol - c.read);
    c.read = eol + 2;
    acted = true;
    if (line.size() >= 4 && line[3] == ' ') {
      OnReply(c, std::atoi(line.substr(0, 3).c_str()));
    }
  }
  if (net_->closed(c.socket)) {
    c.closed = true;
    return true;
  }
  // Write the next group once every reply awaited is in; in lock step, one command of it at a
  // time, each once the one before is answered.
  if (c.out.empty() && !c.shut) {
    if (c.expect.empty() && c.lines.empty()) {
      Write(c);
    }
    if (c.out.empty() && !c.lines.empty() && c.expect.size() == c.lines.size()) {
      c.out = c.lines.front();
      c.lines.pop_front();
    }
  }
  // A client that resets may do so while it waits for a reply (a commit may be in flight).
  if (c.resets && c.out.empty() && !c.expect.empty() && rng_.Below(8) == 0) {
    c.cut = true;
    net_->PeerResets(c.socket);
    return true;
  }
  // Deliver the written bytes in random pieces.
  if (!c.out.empty()) {
    size_t n = rng_.Below(3) == 0 ? c.out.size() : 1 + rng_.Below(c.out.size());
    if (c.bytes_sent + n >= c.cut_at) {
      n = c.cut_at > c.bytes_sent ? static_cast<size_t>(c.cut_at - c.bytes_sent) : 0;
      if (n > 0) {
        net_->PeerSends(c.socket, std::string_view(c.out).substr(0, n));
      }
      c.cut = true;
      if (c.resets) {
        net_->PeerResets(c.socket);
      } else {
        net_->StallSends(c.socket, true);  // Reads nothing more: the server's sends wait.
      }
      return true;
    }
    net_->PeerSends(c.socket, std::string_view(c.out).substr(0, n));
    c.out.erase(0, n);
    c.bytes_sent += n;
    acted = true;
    if (c.out.empty() && c.style == Style::kExim && c.quit_sent && !c.shut) {
      net_->PeerShutsWrite(c.socket);
      c.shut = true;
    }
  }
  return acted;
}

}  // namespace relais::sim
