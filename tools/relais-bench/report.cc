// tools/relais-bench/report.cc — `relais-bench report`: a Markdown table and a PNG (throughput
// over time, end-of-data latency CDF, drawn by gnuplot) from the --json files of send runs.
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#define JSON_NOEXCEPTION
#include <nlohmann/json.hpp>

#include "core/base/strings.h"
#include "tools/relais-bench/commands.h"
#include "tools/relais-bench/flags.h"

namespace relais::bench {
namespace {

using base::StrAppend;
using base::StrCat;
using json = nlohmann::ordered_json;

constexpr const char* kReportUsage =
    "usage: relais-bench report [--png FILE] [--markdown FILE] [--title TEXT] RUN.json...\n"
    "  The Markdown table goes to stdout (and --markdown FILE); --png draws throughput over\n"
    "  time and the end-of-data latency CDF of every run with gnuplot (Debian gnuplot-nox).\n";

struct Run {
  std::string label;
  json doc;
};

// The number at `path` (keys, in order), or `fallback` when absent or not a number.
double Number(const json& doc, std::initializer_list<const char*> path, double fallback = NAN) {
  const json* at = &doc;
  for (const char* key : path) {
    if (!at->is_object() || !at->contains(key)) {
      return fallback;
    }
    at = &(*at)[key];
  }
  return at->is_number() ? at->get<double>() : fallback;
}

std::string Text(const json& doc, std::initializer_list<const char*> path) {
  const json* at = &doc;
  for (const char* key : path) {
    if (!at->is_object() || !at->contains(key)) {
      return "";
    }
    at = &(*at)[key];
  }
  if (at->is_string()) {
    return at->get<std::string>();
  }
  return at->is_null() ? "" : at->dump();
}

std::string Fixed(double v, int decimals) {
  if (std::isnan(v)) {
    return "–";
  }
  char text[64];
  std::snprintf(text, sizeof(text), "%.*f", decimals, v);
  return text;
}

absl::StatusOr<Run> Load(const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    return absl::NotFoundError(StrCat(path, ": cannot open"));
  }
  std::stringstream text;
  text << in.rdbuf();
  Run run;
  run.doc = json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
  if (run.doc.is_discarded() || !run.doc.is_object()) {
    return absl::InvalidArgumentError(StrCat(path, ": not a JSON object"));
  }
  if (Text(run.doc, {"tool"}) != "relais-bench send" ||
      std::isnan(Number(run.doc, {"summary", "seconds"}))) {
    return absl::InvalidArgumentError(StrCat(path, ": not the --json output of relais-bench send"));
  }
  run.label = std::filesystem::path(path).stem().string();
  return run;
}

std::string Table(const std::vector<Run>& runs) {
  std::string out =
      "| run | target | conns | size | messages | msg/s | MiB/s | p50 ms | p90 ms | p99 ms | "
      "p99.9 ms | max ms | errors | lost |\n"
      "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
  for (const Run& r : runs) {
    const json& d = r.doc;
    auto ms = [&](const char* key) {
      return Fixed(Number(d, {"summary", "latency_us", "data_end", key}) / 1000.0, 3);
    };
    const double errors = Number(d, {"summary", "refused"}, 0) +
                          Number(d, {"summary", "partial"}, 0) +
                          Number(d, {"summary", "connection_lost"}, 0);
    const double lost = Number(d, {"check", "lost"});
    StrAppend(&out, "| ", r.label, " | ", Text(d, {"target"}), " | ",
              Fixed(Number(d, {"config", "connections"}), 0), " | ", Text(d, {"config", "size"}),
              " | ", Fixed(Number(d, {"summary", "accepted"}), 0), " | ",
              Fixed(Number(d, {"summary", "messages_per_second"}), 1), " | ",
              Fixed(Number(d, {"summary", "bytes_per_second"}) / 1048576.0, 2), " | ", ms("p50"),
              " | ", ms("p90"), " | ", ms("p99"), " | ", ms("p999"), " | ", ms("max"), " | ",
              Fixed(errors, 0), " | ", Fixed(lost, 0), " |\n");
  }
  // Runs with TLS (send --tls / --tls-implicit): the handshakes, in a table of their own.
  std::string tls;
  for (const Run& r : runs) {
    const json& d = r.doc;
    const std::string mode = Text(d, {"config", "tls"});
    if (mode.empty() || mode == "off") {
      continue;
    }
    auto ms = [&](const char* key) {
      return Fixed(Number(d, {"summary", "latency_us", "tls_handshake", key}) / 1000.0, 3);
    };
    StrAppend(&tls, "| ", r.label, " | ", mode, " | ",
              Fixed(Number(d, {"summary", "tls_handshakes"}), 0), " | ",
              Fixed(Number(d, {"summary", "tls_resumed"}), 0), " | ",
              Fixed(Number(d, {"summary", "tls_failures"}), 0), " | ", ms("p50"), " | ", ms("p90"),
              " | ", ms("p99"), " | ", ms("max"), " |\n");
  }
  if (!tls.empty()) {
    StrAppend(&out,
              "\n| run | tls | handshakes | resumed | failed | handshake p50 ms | p90 ms | "
              "p99 ms | max ms |\n|---|---|---:|---:|---:|---:|---:|---:|---:|\n",
              tls);
  }
  return out;
}

std::string GnuplotQuote(std::string_view text) {
  std::string out = "'";
  for (char c : text) {
    out.append(c == '\'' ? "''" : std::string(1, c));
  }
  return out + "'";
}

absl::Status Plot(const std::vector<Run>& runs, const std::string& png, const std::string& title) {
  char dir_template[] = "/tmp/relais-bench-report.XXXXXX";
  const char* dir = mkdtemp(dir_template);
  if (dir == nullptr) {
    return absl::InternalError("cannot make a temporary directory");
  }
  std::string throughput, cdf;
  for (size_t i = 0; i < runs.size(); ++i) {
    const json& d = runs[i].doc;
    const std::string series_path = StrCat(dir, "/series", i, ".dat");
    const std::string cdf_path = StrCat(dir, "/cdf", i, ".dat");
    std::ofstream s(series_path), c(cdf_path);
    if (d.contains("series") && d["series"].is_array()) {
      for (const json& point : d["series"]) {
        const double t = Number(point, {"t"});
        const double rate = Number(point, {"messages_per_second"});
        if (!std::isnan(t) && !std::isnan(rate)) {
          s << t << " " << rate << "\n";
        }
      }
    }
    if (d.contains("cdf") && d["cdf"].contains("data_end") && d["cdf"]["data_end"].is_array()) {
      for (const json& point : d["cdf"]["data_end"]) {
        if (point.is_array() && point.size() == 2 && point[0].is_number() && point[1].is_number()) {
          c << std::max(0.001, point[0].get<double>() / 1000.0) << " " << point[1].get<double>()
            << "\n";
        }
      }
    }
    s << "\n";
    c << "\n";
    const std::string sep = i == 0 ? "" : ", ";
    StrAppend(&throughput, sep, GnuplotQuote(series_path),
              " using 1:2 with linespoints lw 2 pt 7 ps 0.5 title ", GnuplotQuote(runs[i].label));
    StrAppend(&cdf, sep, GnuplotQuote(cdf_path), " using 1:2 with steps lw 2 title ",
              GnuplotQuote(runs[i].label));
  }
  const std::string script = StrCat(
      "set terminal pngcairo size 1400,520 font ',10'\n", "set output ", GnuplotQuote(png), "\n",
      "set multiplot layout 1,2 title ", GnuplotQuote(title), "\n",
      "set grid\nset key bottom right\n",
      "set title 'Accepted messages per second'\nset xlabel 'seconds'\nset ylabel 'msg/s'\n",
      "set yrange [0:*]\nplot ", throughput, "\n",
      "set title 'End of data to reply: latency CDF'\nset xlabel 'ms'\nset ylabel 'fraction'\n",
      "set logscale x\nset yrange [0:1]\nplot ", cdf, "\nunset multiplot\n");
  const std::string script_path = StrCat(dir, "/plot.gp");
  {
    std::ofstream out(script_path);
    out << script;
  }
  const std::string command = StrCat("gnuplot ", script_path, " 2>&1");
  FILE* pipe = popen(command.c_str(), "r");
  std::string output;
  if (pipe != nullptr) {
    char buffer[4096];
    size_t n;
    while ((n = fread(buffer, 1, sizeof(buffer), pipe)) > 0) {
      output.append(buffer, n);
    }
  }
  const int status = pipe == nullptr ? -1 : pclose(pipe);
  std::error_code ignored;
  std::filesystem::remove_all(dir, ignored);
  if (status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    if (WIFEXITED(status) && WEXITSTATUS(status) == 127) {
      return absl::FailedPreconditionError("gnuplot not found: install gnuplot-nox");
    }
    return absl::InternalError(StrCat("gnuplot failed: ", output));
  }
  return absl::OkStatus();
}

}  // namespace

int RunReport(const std::vector<std::string>& args) {
  absl::StatusOr<Flags> flags = Flags::Parse(args, {"help"}, {"png", "markdown", "title"});
  if (!flags.ok() || flags->Has("help") || flags->positional().empty()) {
    if (!flags.ok()) {
      std::fprintf(stderr, "relais-bench report: %s\n",
                   std::string(flags.status().message()).c_str());
    }
    std::fputs(kReportUsage, flags.ok() && flags->Has("help") ? stdout : stderr);
    return flags.ok() && flags->Has("help") ? 0 : 2;
  }
  std::vector<Run> runs;
  for (const std::string& path : flags->positional()) {
    absl::StatusOr<Run> run = Load(path);
    if (!run.ok()) {
      std::fprintf(stderr, "relais-bench report: %s\n",
                   std::string(run.status().message()).c_str());
      return 1;
    }
    runs.push_back(std::move(*run));
  }
  const std::string table = Table(runs);
  std::fputs(table.c_str(), stdout);
  if (auto path = flags->Get("markdown")) {
    std::ofstream out(*path);
    out << table;
    if (!out) {
      std::fprintf(stderr, "relais-bench report: cannot write %s\n", path->c_str());
      return 1;
    }
  }
  if (auto png = flags->Get("png")) {
    if (absl::Status s = Plot(runs, *png, flags->Get("title").value_or("relais-bench")); !s.ok()) {
      std::fprintf(stderr, "relais-bench report: %s\n", std::string(s.message()).c_str());
      return 1;
    }
  }
  return 0;
}

}  // namespace relais::bench
