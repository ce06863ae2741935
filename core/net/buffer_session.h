// core/net/buffer_session.h — a StreamSession over two strings, for tests, fuzzers and benches
// that drive a transport or a pump by hand (a TLS peer, a scripted next hop).
//
// What the peer sends accumulates in `received`; what is appended to `output` goes out. With
// `echo` every byte received is sent back; `closing` asks to close once the output is out, and
// `close_on_end` sets it when the input ends. Header-only; no I/O.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "core/net/stream_pump.h"

namespace relais::net {

class BufferSession final : public StreamSession {
 public:
  void Feed(std::string_view bytes) override {
    received.append(bytes);
    if (echo) {
      output.append(bytes);
    }
  }
  [[nodiscard]] std::string_view PendingOutput() const override { return output; }
  void ConsumeOutput(size_t bytes) override { output.erase(0, bytes); }
  [[nodiscard]] bool WantsInput() const override { return !ended; }
  [[nodiscard]] bool WantsClose() const override { return closing && output.empty(); }
  void EndOfInput() override {
    ended = true;
    if (close_on_end) {
      closing = true;
    }
  }

  std::string received;
  std::string output;
  bool echo = false;
  bool closing = false;
  bool ended = false;
  bool close_on_end = false;
};

}  // namespace relais::net
