// Replays protocols/smtp/testdata/*.smtp through ServerSession (format: testdata/README.md).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "protocols/smtp/server_session.h"

namespace relais::smtp {
namespace {

std::string Unescape(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 1 < s.size()) {
      const char c = s[++i];
      out.push_back(c == 'r' ? '\r' : c == 'n' ? '\n' : c == 't' ? '\t' : c);
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

bool LineMatches(const std::string& expected, const std::string& actual) {
  if (!expected.empty() && expected.back() == '*') {
    return actual.starts_with(expected.substr(0, expected.size() - 1));
  }
  return expected == actual;
}

// "O: starttls_offered auth_offered ..." sets those SessionOptions flags.
void ApplyOptions(const std::string& text, SessionOptions& options) {
  std::istringstream words(text);
  std::string word;
  while (words >> word) {
    if (word == "starttls_offered") {
      options.starttls_offered = true;
    } else if (word == "tls_required") {
      options.tls_required = true;
    } else if (word == "auth_offered") {
      options.auth_offered = true;
    } else if (word == "auth_in_clear") {
      options.auth_in_clear = true;
    } else if (word == "require_sender_owned") {
      options.require_sender_owned = true;
    } else {
      ADD_FAILURE() << "unknown option " << word;
    }
  }
}

void Replay(const std::filesystem::path& path) {
  std::ifstream in(path);
  ASSERT_TRUE(in) << path;
  SessionOptions options;
  options.hostname = "relais.test";
  options.local_domains = {"example.com"};
  for (std::string line; std::getline(in, line);) {
    if (line.starts_with("O: ")) {
      ApplyOptions(line.substr(3), options);
    }
  }
  in.clear();
  in.seekg(0);
  ServerSession session(options, *mail::IpAddress::Parse("192.0.2.1"));
  session.Start();
  AuthOutcome auth_outcome = AuthOutcome::kOk;
  std::vector<std::string> owned_domains;
  std::string pending_input;
  std::vector<std::string> output_lines;
  uint64_t committed = 0;
  auto collect = [&] {
    if (!pending_input.empty()) {
      session.Feed(pending_input);
      pending_input.clear();
    }
    bool answered = true;
    while (answered) {
      answered = false;
      while (session.TakeCommitRequest()) {
        session.CompleteCommit(CommitOutcome::kDurable, mail::MessageId::Make(1, 0, ++committed));
        answered = true;
      }
      while (session.TakeAuthRequest()) {
        session.CompleteAuth(auth_outcome, owned_domains);
        answered = true;
      }
    }
    std::string out(session.PendingOutput());
    session.ConsumeOutput(out.size());
    for (size_t pos = 0; pos < out.size();) {
      const size_t end = out.find("\r\n", pos);
      ASSERT_NE(end, std::string::npos) << "reply without CRLF";
      output_lines.push_back(out.substr(pos, end - pos));
      pos = end + 2;
    }
  };
  std::string line;
  int lineno = 0;
  size_t next_output = 0;
  while (std::getline(in, line)) {
    ++lineno;
    if (line.empty() || line[0] == '#') {
      continue;
    }
    ASSERT_GE(line.size(), 2u) << path << ":" << lineno;
    const std::string kind = line.substr(0, 2);
    const std::string text = line.size() > 3 ? line.substr(3) : "";
    if (kind == "C:") {
      pending_input += text + "\r\n";
    } else if (kind == "R:") {
      pending_input += Unescape(text);
    } else if (kind == "O:") {
      continue;  // Read before the session started.
    } else if (kind == "T:") {
      collect();
      ASSERT_TRUE(session.TakeStartTls()) << path.filename() << ":" << lineno << ": no STARTTLS";
      std::istringstream words(text);
      std::string version;
      std::string cipher;
      words >> version >> cipher;
      session.TlsStarted(version, cipher);
    } else if (kind == "D:") {
      collect();
      EXPECT_EQ(std::to_string(session.discarded_after_starttls()), text)
          << path.filename() << ":" << lineno;
    } else if (kind == "A:") {
      std::istringstream words(text);
      std::string outcome;
      words >> outcome;
      auth_outcome = outcome == "failed"      ? AuthOutcome::kFailed
                     : outcome == "temporary" ? AuthOutcome::kTemporary
                     : outcome == "lockedout" ? AuthOutcome::kLockedOut
                                              : AuthOutcome::kOk;
      owned_domains.clear();
      for (std::string domain; words >> domain;) {
        owned_domains.push_back(domain);
      }
    } else if (kind == "S:") {
      collect();
      ASSERT_LT(next_output, output_lines.size())
          << path.filename() << ":" << lineno << ": expected '" << text << "', got nothing";
      EXPECT_TRUE(LineMatches(text, output_lines[next_output]))
          << path.filename() << ":" << lineno << ": expected '" << text << "', got '"
          << output_lines[next_output] << "'";
      ++next_output;
    } else {
      FAIL() << path << ":" << lineno << ": unknown line kind";
    }
  }
  collect();
  EXPECT_EQ(next_output, output_lines.size())
      << path.filename() << ": unexpected extra reply '"
      << (next_output < output_lines.size() ? output_lines[next_output] : "") << "'";
}

TEST(TranscriptTest, AllTranscriptsReplay) {
  size_t files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(RELAIS_SMTP_TESTDATA)) {
    if (entry.path().extension() == ".smtp") {
      SCOPED_TRACE(entry.path().filename().string());
      Replay(entry.path());
      ++files;
    }
  }
  EXPECT_GE(files, 5u);
}

}  // namespace
}  // namespace relais::smtp
