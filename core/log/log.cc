#include "core/log/log.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "core/base/clock.h"
#include "core/base/strings.h"

namespace relais::log {
namespace {

std::atomic<int> g_fd{2};

constexpr std::string_view kLevels[] = {"info", "warning", "error"};

void AppendTimestamp(std::string& out, uint64_t unix_micros) {
  const time_t seconds = static_cast<time_t>(unix_micros / 1'000'000);
  tm utc;
  gmtime_r(&seconds, &utc);
  char buf[96];
  std::snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%06uZ", utc.tm_year + 1900,
                utc.tm_mon + 1, utc.tm_mday, utc.tm_hour, utc.tm_min, utc.tm_sec,
                static_cast<unsigned>(unix_micros % 1'000'000));
  out.append(buf);
}

}  // namespace

namespace {

// Length of the well-formed UTF-8 sequence at the start of `text` (Unicode 15, table 3-7), or
// 0 when it is not one: a stray continuation byte, C0/C1 (overlong), F5..FF, a truncated
// sequence, an overlong or surrogate three-byte form, or a code point past U+10FFFF.
size_t Utf8SequenceLength(std::string_view text) {
  const auto b = [&](size_t i) { return static_cast<unsigned char>(text[i]); };
  const auto cont = [&](size_t i, unsigned char lo, unsigned char hi) {
    return i < text.size() && b(i) >= lo && b(i) <= hi;
  };
  const unsigned char c = b(0);
  if (c < 0x80) {
    return 1;
  }
  if (c >= 0xC2 && c <= 0xDF) {
    return cont(1, 0x80, 0xBF) ? 2 : 0;
  }
  if (c >= 0xE0 && c <= 0xEF) {
    const unsigned char lo = c == 0xE0 ? 0xA0 : 0x80;  // E0: no overlongs.
    const unsigned char hi = c == 0xED ? 0x9F : 0xBF;  // ED: no surrogates.
    return cont(1, lo, hi) && cont(2, 0x80, 0xBF) ? 3 : 0;
  }
  if (c >= 0xF0 && c <= 0xF4) {
    const unsigned char lo = c == 0xF0 ? 0x90 : 0x80;  // F0: no overlongs.
    const unsigned char hi = c == 0xF4 ? 0x8F : 0xBF;  // F4: nothing past U+10FFFF.
    return cont(1, lo, hi) && cont(2, 0x80, 0xBF) && cont(3, 0x80, 0xBF) ? 4 : 0;
  }
  return 0;
}

constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD

}  // namespace

bool AppendJsonEscaped(std::string& out, std::string_view text, size_t bytes_max) {
  size_t used = 0;
  char escaped[8];
  for (size_t i = 0; i < text.size();) {
    std::string_view piece;
    size_t length = Utf8SequenceLength(text.substr(i));
    if (length == 0) {
      piece = kReplacement;  // One per invalid byte.
      length = 1;
    } else if (length > 1) {
      piece = text.substr(i, length);
    } else {
      const char c = text[i];
      const auto u = static_cast<unsigned char>(c);
      switch (c) {
        case '"':
          piece = "\\\"";
          break;
        case '\\':
          piece = "\\\\";
          break;
        case '\n':
          piece = "\\n";
          break;
        case '\r':
          piece = "\\r";
          break;
        case '\t':
          piece = "\\t";
          break;
        default:
          if (u < 0x20 || u == 0x7F) {
            std::snprintf(escaped, sizeof(escaped), "\\u%04x", u);
            piece = std::string_view(escaped, 6);
          } else {
            piece = text.substr(i, 1);
          }
      }
    }
    if (used + piece.size() > bytes_max) {
      return false;
    }
    out.append(piece);
    used += piece.size();
    i += length;
  }
  return true;
}

std::string ValidUtf8(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    const size_t length = Utf8SequenceLength(text.substr(i));
    if (length == 0) {
      out.append(kReplacement);
      ++i;
    } else {
      out.append(text.substr(i, length));
      i += length;
    }
  }
  return out;
}

std::string Format(uint64_t unix_micros, Level level, int shard, std::string_view event,
                   std::initializer_list<Field> fields) {
  std::string out;
  AppendFormatted(out, unix_micros, level, shard, event, fields);
  return out;
}

void AppendFormatted(std::string& out, uint64_t unix_micros, Level level, int shard,
                     std::string_view event, std::initializer_list<Field> fields) {
  out.append("{\"ts\":\"");
  AppendTimestamp(out, unix_micros);
  base::StrAppend(&out, "\",\"level\":\"", kLevels[static_cast<int>(level)], "\"");
  if (shard >= 0) {
    base::StrAppend(&out, ",\"shard\":", shard);
  }
  out.append(",\"event\":\"");
  AppendJsonEscaped(out, event);
  out.push_back('"');
  bool truncated = false;
  for (const Field& f : fields) {
    out.append(",\"");
    AppendJsonEscaped(out, f.key);
    out.append("\":");
    if (const auto* s = std::get_if<std::string_view>(&f.value)) {
      out.push_back('"');
      truncated |= !AppendJsonEscaped(out, *s, kValueBytesMax);
      out.push_back('"');
    } else if (const auto* i = std::get_if<int64_t>(&f.value)) {
      base::StrAppend(&out, *i);
    } else if (const auto* u = std::get_if<uint64_t>(&f.value)) {
      base::StrAppend(&out, *u);
    } else {
      out.append(std::get<bool>(f.value) ? "true" : "false");
    }
  }
  if (truncated) {
    out.append(",\"truncated\":true");  // A value was cut: the reader can tell.
  }
  out.append("}\n");
}

std::string JsonString(std::string_view text) {
  std::string out = "\"";
  AppendJsonEscaped(out, text);
  out += "\"";
  return out;
}

// --- The writer -------------------------------------------------------------------------

class Channel {
 public:
  Channel(int shard, size_t bytes_max) : shard_(shard) {
    capacity_ = 4096;
    while (capacity_ < bytes_max) {
      capacity_ <<= 1;
    }
    // Untouched pages cost no memory: a channel is resident only as far as it was filled.
    data_ = std::make_unique<char[]>(capacity_);
  }

  const int shard_;
  size_t capacity_;
  std::unique_ptr<char[]> data_;
  alignas(64) std::atomic<uint64_t> head_{0};  // Written by the producer: bytes queued.
  alignas(64) std::atomic<uint64_t> tail_{0};  // Written by the writer: bytes written.
  std::atomic<bool> closed_{false};
};

namespace {

constexpr size_t kShardsTracked = 1024;

std::atomic<size_t> g_channel_bytes_max{4 << 20};
std::atomic<bool> g_writer_running{false};
std::atomic<bool> g_writer_stop{false};
std::atomic<uint32_t> g_wake{0};
// Drops per shard; the last slot: records of no shard, and records a failed write lost.
std::atomic<uint64_t> g_dropped[kShardsTracked + 1];
std::mutex g_sync_mutex;      // Serialises direct writes while no writer runs.
std::mutex g_registry_mutex;  // The channel list; producers never take it.
std::vector<Channel*>* g_channels = new std::vector<Channel*>();  // Never freed: outlives exit.
std::mutex g_emit_mutex;  // Emit's channel has many producers: they take turns.
Channel* g_emit_channel = nullptr;
std::thread* g_writer = nullptr;
std::mutex g_done_mutex;
std::condition_variable g_done_cv;
bool g_writer_done = false;

std::atomic<uint64_t>& DropCounter(int shard) {
  return g_dropped[shard >= 0 && static_cast<size_t>(shard) < kShardsTracked
                       ? static_cast<size_t>(shard)
                       : kShardsTracked];
}

uint64_t CountLines(std::string_view text) {
  return static_cast<uint64_t>(std::count(text.begin(), text.end(), '\n'));
}

// Writes all of `parts` (blocking), continuing partial writes. Returns false on an error
// that will not pass (a closed pipe, a full disk).
bool WriteAll(iovec* parts, int count) {
  while (count > 0) {
    const ssize_t n = ::writev(g_fd.load(std::memory_order_relaxed), parts, count);
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      if (errno == EAGAIN) {  // An output inherited non-blocking: wait until it drains.
        pollfd p{g_fd.load(std::memory_order_relaxed), POLLOUT, 0};
        ::poll(&p, 1, 1000);
        continue;
      }
      return false;
    }
    auto done = static_cast<size_t>(n);
    while (count > 0 && done >= parts->iov_len) {
      done -= parts->iov_len;
      ++parts;
      --count;
    }
    if (count > 0) {
      parts->iov_base = static_cast<char*>(parts->iov_base) + done;
      parts->iov_len -= done;
    }
  }
  return true;
}

void WriteDirect(std::string_view lines) {
  iovec part{const_cast<char*>(lines.data()), lines.size()};
  std::lock_guard lock(g_sync_mutex);
  if (!WriteAll(&part, 1)) {
    DropCounter(-1).fetch_add(CountLines(lines), std::memory_order_relaxed);
  }
}

void Wake() {
  g_wake.fetch_add(1, std::memory_order_release);
  g_wake.notify_one();
}

// Writer thread: everything queued in `c` so far, whole, before any other channel's bytes.
void DrainChannel(Channel& c) {
  const size_t mask = c.capacity_ - 1;
  const uint64_t head = c.head_.load(std::memory_order_acquire);
  const uint64_t tail = c.tail_.load(std::memory_order_relaxed);
  if (tail == head) {
    return;
  }
  const size_t offset = tail & mask;
  const size_t bytes = head - tail;
  const size_t first = std::min(bytes, c.capacity_ - offset);
  iovec parts[2] = {{c.data_.get() + offset, first}, {c.data_.get(), bytes - first}};
  if (!WriteAll(parts, bytes > first ? 2 : 1)) {
    // Lost: count whole records (a partly written one counts too).
    const uint64_t lost = CountLines(std::string_view(c.data_.get() + offset, first)) +
                          CountLines(std::string_view(c.data_.get(), bytes - first));
    DropCounter(-1).fetch_add(lost, std::memory_order_relaxed);
  }
  c.tail_.store(head, std::memory_order_release);
}

uint64_t DroppedTotal() {
  uint64_t total = 0;
  for (const auto& d : g_dropped) {
    total += d.load(std::memory_order_relaxed);
  }
  return total;
}

void WriterLoop() {
  pthread_setname_np(pthread_self(), "relais-log");
  std::vector<Channel*> channels;
  uint64_t reported = DroppedTotal();
  while (true) {
    const uint32_t seen = g_wake.load(std::memory_order_acquire);
    const bool stop = g_writer_stop.load(std::memory_order_acquire);
    {
      std::lock_guard lock(g_registry_mutex);
      channels = *g_channels;
    }
    for (Channel* c : channels) {
      DrainChannel(*c);
    }
    {
      // A closed channel goes once it is empty: its producer appends nothing after Close.
      std::lock_guard lock(g_registry_mutex);
      std::erase_if(*g_channels, [](Channel* c) {
        if (c->closed_.load(std::memory_order_acquire) &&
            c->head_.load(std::memory_order_acquire) == c->tail_.load(std::memory_order_relaxed)) {
          delete c;
          return true;
        }
        return false;
      });
    }
    if (const uint64_t total = DroppedTotal(); total != reported) {
      // Said once the writer has caught up, in the output itself.
      const std::string line =
          Format(base::SystemClock().UnixMicros(), Level::kWarning, -1, "log_records_dropped",
                 {{"records", total - reported}, {"total", total}});
      iovec part{const_cast<char*>(line.data()), line.size()};
      (void)WriteAll(&part, 1);
      reported = total;
    }
    if (stop) {
      break;  // Drained once more after the stop was seen.
    }
    g_wake.wait(seen, std::memory_order_acquire);
  }
  std::lock_guard lock(g_done_mutex);
  g_writer_done = true;
  g_done_cv.notify_all();
}

}  // namespace

void SetChannelBytesMax(size_t bytes_max) {
  g_channel_bytes_max.store(bytes_max, std::memory_order_relaxed);
}

Channel* OpenChannel(int shard, size_t bytes_max) {
  auto* c = new Channel(
      shard, bytes_max != 0 ? bytes_max : g_channel_bytes_max.load(std::memory_order_relaxed));
  std::lock_guard lock(g_registry_mutex);
  g_channels->push_back(c);
  return c;
}

bool Append(Channel* c, std::string_view lines) {
  if (lines.empty()) {
    return true;
  }
  if (!g_writer_running.load(std::memory_order_acquire)) {
    WriteDirect(lines);
    return true;
  }
  const uint64_t head = c->head_.load(std::memory_order_relaxed);
  const uint64_t tail = c->tail_.load(std::memory_order_acquire);
  const size_t room = c->capacity_ - static_cast<size_t>(head - tail);
  size_t take = lines.size();
  if (take > room) {
    // Whole lines only: the longest prefix that fits, the rest dropped and counted.
    const size_t last = room == 0 ? std::string_view::npos : lines.rfind('\n', room - 1);
    take = last == std::string_view::npos ? 0 : last + 1;
    DropCounter(c->shard_).fetch_add(CountLines(lines.substr(take)), std::memory_order_relaxed);
  }
  if (take > 0) {
    const size_t mask = c->capacity_ - 1;
    const size_t offset = head & mask;
    const size_t first = std::min(take, c->capacity_ - offset);
    std::memcpy(c->data_.get() + offset, lines.data(), first);
    std::memcpy(c->data_.get(), lines.data() + first, take - first);
    c->head_.store(head + take, std::memory_order_release);
    Wake();
  }
  return take == lines.size();
}

bool Drained(const Channel* c) {
  return !g_writer_running.load(std::memory_order_acquire) ||
         c->head_.load(std::memory_order_relaxed) == c->tail_.load(std::memory_order_acquire);
}

void Close(Channel* c) {
  c->closed_.store(true, std::memory_order_release);
  if (!g_writer_running.load(std::memory_order_acquire)) {
    std::lock_guard lock(g_registry_mutex);
    if (c->head_.load() == c->tail_.load()) {
      std::erase(*g_channels, c);
      delete c;
    }
    return;
  }
  Wake();
}

uint64_t DroppedRecords(int shard) {
  uint64_t n = DropCounter(shard).load(std::memory_order_relaxed);
  if (shard == 0) {
    n += DropCounter(-1).load(std::memory_order_relaxed);
  }
  return n;
}

void StartWriter() {
  if (g_writer != nullptr) {
    return;
  }
  if (g_emit_channel == nullptr) {
    g_emit_channel = OpenChannel(-1);
  }
  g_writer_stop.store(false);
  g_writer_done = false;
  g_writer_running.store(true, std::memory_order_release);
  g_writer = new std::thread(WriterLoop);
  static const bool registered = [] {
    std::atexit([] { StopWriter(); });
    return true;
  }();
  (void)registered;
}

void StopWriter(uint32_t wait_ms) {
  if (g_writer == nullptr) {
    return;
  }
  g_writer_stop.store(true, std::memory_order_release);
  Wake();
  std::unique_lock lock(g_done_mutex);
  const bool done =
      g_done_cv.wait_for(lock, std::chrono::milliseconds(wait_ms), [] { return g_writer_done; });
  lock.unlock();
  g_writer_running.store(false, std::memory_order_release);
  if (done) {
    g_writer->join();
    delete g_writer;
  } else {
    g_writer->detach();  // Stuck on a reader that does not read: the process leaves anyway.
  }
  g_writer = nullptr;
}

void EmitLines(std::string_view lines) {
  if (!g_writer_running.load(std::memory_order_acquire)) {
    WriteDirect(lines);
    return;
  }
  std::lock_guard lock(g_emit_mutex);
  Append(g_emit_channel, lines);
}

void Emit(Level level, int shard, std::string_view event, std::initializer_list<Field> fields) {
  EmitLines(Format(base::SystemClock().UnixMicros(), level, shard, event, fields));
}

void SetFd(int fd) { g_fd.store(fd, std::memory_order_relaxed); }

int Fd() { return g_fd.load(std::memory_order_relaxed); }

std::string OpenFile(const std::string& path) {
  static int file_fd = -1;  // Startup thread first, then shard 0's signal handling only.
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  if (fd < 0) {
    return base::StrCat("log file ", path, ": ", std::strerror(errno));
  }
  if (file_fd < 0) {
    file_fd = fd;
    SetFd(fd);
    return "";
  }
  // Onto the same number: a writer that read Fd() a moment ago writes to the new file.
  const int rc = ::dup2(fd, file_fd);
  const int error = errno;
  ::close(fd);
  return rc < 0 ? base::StrCat("log file ", path, ": dup2: ", std::strerror(error)) : "";
}

}  // namespace relais::log
