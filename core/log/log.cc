#include "core/log/log.h"

#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>

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

void AppendJsonEscaped(std::string& out, std::string_view text) {
  for (char c : text) {
    const auto u = static_cast<unsigned char>(c);
    switch (c) {
      case '"':
        out.append("\\\"");
        break;
      case '\\':
        out.append("\\\\");
        break;
      case '\n':
        out.append("\\n");
        break;
      case '\r':
        out.append("\\r");
        break;
      case '\t':
        out.append("\\t");
        break;
      default:
        if (u < 0x20 || u == 0x7F) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x", u);
          out.append(buf);
        } else {
          out.push_back(c);  // UTF-8 passes through; invalid bytes are the producer's bug.
        }
    }
  }
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
  for (const Field& f : fields) {
    out.append(",\"");
    AppendJsonEscaped(out, f.key);
    out.append("\":");
    if (const auto* s = std::get_if<std::string_view>(&f.value)) {
      out.push_back('"');
      AppendJsonEscaped(out, *s);
      out.push_back('"');
    } else if (const auto* i = std::get_if<int64_t>(&f.value)) {
      base::StrAppend(&out, *i);
    } else if (const auto* u = std::get_if<uint64_t>(&f.value)) {
      base::StrAppend(&out, *u);
    } else {
      out.append(std::get<bool>(f.value) ? "true" : "false");
    }
  }
  out.append("}\n");
}

std::string JsonString(std::string_view text) {
  std::string out = "\"";
  AppendJsonEscaped(out, text);
  out += "\"";
  return out;
}

void EmitLines(std::string_view lines) {
  // One write per batch: lines from different threads never interleave.
  const ssize_t ignored = ::write(g_fd.load(std::memory_order_relaxed), lines.data(), lines.size());
  (void)ignored;
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
