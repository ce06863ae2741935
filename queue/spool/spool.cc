#include "queue/spool/spool.h"

#include <cerrno>
#include <charconv>
#include <cstdio>

#include "core/base/check.h"
#include "core/base/strings.h"
#include "core/io/durable_dirs.h"

namespace relais::spool {
namespace {

constexpr std::string_view kSegmentPrefix = "seg-";
constexpr std::string_view kSegmentSuffix = ".rls";
constexpr std::string_view kShardPrefix = "shard-";

template <typename T>
bool ParseNumber(std::string_view text, T& out, int base) {
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out, base);
  return !text.empty() && ec == std::errc() && end == text.data() + text.size();
}

std::string SegmentName(uint64_t sequence) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "seg-%016llx.rls", static_cast<unsigned long long>(sequence));
  return buf;
}

bool AllFinal(const StoredMessage& m) {
  for (RecipientState s : m.states) {
    if (s == RecipientState::kPending) {
      return false;
    }
  }
  return true;
}

}  // namespace

Spool::Spool(const SpoolOptions& options, io::Io& io, const base::Clock& clock)
    : options_(options), io_(io), clock_(clock) {}

Spool::~Spool() {
  RELAIS_CHECK(!in_flight_) << "spool destroyed with a batch in flight";
  for (auto& [key, segment] : segments_) {
    io_.Close(segment.file);
  }
}

absl::StatusOr<std::unique_ptr<Spool>> Spool::Open(const SpoolOptions& options, io::Io& io,
                                                   const base::Clock& clock) {
  RELAIS_CHECK(options.shard < options.shard_count);
  std::unique_ptr<Spool> spool(new Spool(options, io, clock));
  if (!options.read_only) {
    // The shard directory, the spool directory and every directory above must be durable
    // before the first segment in them can hold an acknowledged message: found is not enough
    // (a kill between an earlier mkdir and its parent's fsync leaves a directory that a power
    // cut still takes away). Once per Open, so once per process and shard. Syncing the spool
    // directory also makes the entries of the other shard directories durable, so a directory
    // this shard adopts in Recover() is covered too.
    io::DurableDirs dirs(io);
    if (absl::Status s = dirs.Ensure(spool->ShardDir(options.shard)); !s.ok()) {
      return s;
    }
  }
  return spool;
}

std::string Spool::ShardDir(uint32_t shard) const {
  return base::StrCat(options_.path, "/", kShardPrefix, shard);
}

absl::StatusOr<RecoveryReport> Spool::Recover() {
  RELAIS_CHECK(!recovered_) << "Recover runs once";
  RecoveryReport report;
  auto dirs = io_.ListDir(options_.path);
  if (!dirs.ok()) {
    return dirs.status();
  }
  // Gather every segment of the shard directories this shard owns or adopts.
  std::map<SegmentKey, std::string> found;
  for (const std::string& dir : *dirs) {
    uint32_t dir_shard = 0;
    if (!dir.starts_with(kShardPrefix) ||
        !ParseNumber(std::string_view(dir).substr(kShardPrefix.size()), dir_shard, 10) ||
        dir_shard % options_.shard_count != options_.shard) {
      continue;
    }
    const std::string dir_path = ShardDir(dir_shard);
    auto names = io_.ListDir(dir_path);
    if (!names.ok()) {
      return names.status();
    }
    for (const std::string& name : *names) {
      std::string_view n = name;
      uint64_t sequence = 0;
      if (!n.starts_with(kSegmentPrefix) || !n.ends_with(kSegmentSuffix) ||
          !ParseNumber(n.substr(kSegmentPrefix.size(),
                                n.size() - kSegmentPrefix.size() - kSegmentSuffix.size()),
                       sequence, 16)) {
        continue;
      }
      found.emplace(SegmentKey{dir_shard, sequence}, base::StrCat(dir_path, "/", name));
      if (dir_shard == options_.shard && sequence >= next_sequence_) {
        next_sequence_ = sequence + 1;
      }
    }
  }
  for (const auto& [key, path] : found) {
    if (absl::Status s = RecoverSegment(key, path, report); !s.ok()) {
      return s;
    }
  }
  report.segments = static_cast<uint32_t>(segments_.size());
  report.messages_live = index_.size();
  // IDs must never repeat: start this epoch past every ID already in the spool.
  id_epoch_us_ = clock_.UnixMicros();
  for (const auto& [id, message] : index_) {
    if (id.hi >= id_epoch_us_) {
      id_epoch_us_ = id.hi + 1;
    }
  }
  recovered_ = true;
  if (!options_.read_only) {
    ReclaimSegments();
    if (absl::Status s = StartSegment(); !s.ok()) {
      return s;
    }
  }
  UpdateFull();
  return report;
}

absl::Status Spool::RecoverSegment(const SegmentKey& key, const std::string& path,
                                   RecoveryReport& report) {
  auto file =
      io_.Open(path, options_.read_only ? io::OpenMode::kReadOnly : io::OpenMode::kReadWrite);
  if (!file.ok()) {
    if (options_.read_only && absl::IsNotFound(file.status())) {
      // A live daemon reclaimed it after we listed the directory: all its messages were done.
      return absl::OkStatus();
    }
    return file.status();
  }
  auto size = io_.Size(*file);
  if (!size.ok()) {
    io_.Close(*file);
    return size.status();
  }
  std::string bytes(*size, '\0');
  auto read = io_.ReadAt(*file, 0, std::span<char>(bytes.data(), bytes.size()));
  if (!read.ok()) {
    io_.Close(*file);
    return read.status();
  }
  bytes.resize(*read);
  const auto header = DecodeSegmentHeader(bytes);
  if (!header) {
    // Not ours, or its header is damaged: keep the file for inspection and never delete it.
    ++report.unreadable_segments;
    report.problems.push_back(base::StrCat(path, ": bad segment header; file left untouched"));
    io_.Close(*file);
    return absl::OkStatus();
  }
  Segment& segment = segments_[key];
  segment.path = path;
  segment.file = *file;
  size_t pos = kSegmentHeaderBytes;
  DecodedRecord record;
  while (pos < bytes.size()) {
    const std::string_view rest = std::string_view(bytes).substr(pos);
    const DecodeStatus status = DecodeRecord(rest, record);
    if (status == DecodeStatus::kOk) {
      if (record.type == RecordType::kMessage) {
        auto m = std::make_unique<StoredMessage>();
        m->id = record.message.id;
        m->received_us = record.message.received_us;
        m->envelope = std::move(record.message.envelope);
        m->states.assign(m->envelope.recipients.size(), RecipientState::kPending);
        m->segment = key;
        m->record_offset = pos;
        m->record_size = record.size;
        m->body_size = record.message.body.size();
        if (index_.contains(m->id)) {
          report.problems.push_back(base::StrCat(path, ":", pos, ": duplicate message ",
                                                 m->id.ToString(), "; first copy kept"));
        } else {
          ++segment.live_messages;
          index_.emplace(m->id, std::move(m));
        }
      } else if (record.type == RecordType::kDeferral) {
        auto it = index_.find(record.deferral.id);
        if (it != index_.end()) {
          it->second->next_attempt_us = record.deferral.next_attempt_us;
          it->second->attempts = record.deferral.attempts;
          it->second->last_reply = std::move(record.deferral.last_reply);
          it->second->delay_reported = record.deferral.delay_reported;
        }
      } else {
        auto it = index_.find(record.outcome.id);
        if (it != index_.end() && record.outcome.recipient_index < it->second->states.size()) {
          it->second->states[record.outcome.recipient_index] = record.outcome.state;
          if (AllFinal(*it->second)) {
            ++report.messages_done;
            Retire(record.outcome.id);
          }
        }
      }
      pos += record.size;
      continue;
    }
    // Is anything valid after this point? If not, this is a torn tail: the end of a batch
    // that was being written when the process or machine died, never acknowledged.
    size_t resync = pos + 1;
    DecodedRecord probe;
    while (resync + kRecordHeaderBytes <= bytes.size() &&
           DecodeRecord(std::string_view(bytes).substr(resync), probe) != DecodeStatus::kOk) {
      ++resync;
    }
    if (resync + kRecordHeaderBytes > bytes.size()) {
      ++report.torn_tails;
      report.problems.push_back(
          base::StrCat(path, ":", pos, ": torn tail of ", bytes.size() - pos, " bytes dropped"));
      if (!options_.read_only) {
        // Cut the tail so that the file is clean; the fdatasync makes the cut stick.
        if (absl::Status s = io_.Truncate(*file, pos); !s.ok()) {
          return s;
        }
        if (absl::Status s = io_.WriteAndSync(*file, pos, ""); !s.ok()) {
          return s;
        }
      }
      bytes.resize(pos);
      break;
    }
    ++report.corrupt_records;
    report.problems.push_back(
        base::StrCat(path, ":", pos, ": corrupt record, ", resync - pos, " bytes skipped"));
    pos = resync;
  }
  segment.size = bytes.size();
  live_bytes_ += segment.size;
  return absl::OkStatus();
}

absl::Status Spool::StartSegment() {
  const std::string dir = ShardDir(options_.shard);
  const uint64_t sequence = next_sequence_++;
  const std::string path = base::StrCat(dir, "/", SegmentName(sequence));
  auto file = io_.Open(path, io::OpenMode::kCreateExclusive);
  if (!file.ok()) {
    return file.status();
  }
  std::string header;
  EncodeSegmentHeader(SegmentHeader{options_.shard, sequence, clock_.UnixMicros()}, header);
  // The header is synced before any record can be acknowledged from this segment.
  if (absl::Status s = io_.WriteAndSync(*file, 0, header); !s.ok()) {
    io_.Close(*file);
    (void)io_.Unlink(path);
    return s;
  }
  // A new file's directory entry is not covered by fdatasync of the file: without this, a
  // power cut could lose the whole segment even though its records were synced.
  if (absl::Status s = io_.SyncDir(dir); !s.ok()) {
    io_.Close(*file);
    (void)io_.Unlink(path);
    return s;
  }
  const SegmentKey key{options_.shard, sequence};
  Segment& segment = segments_[key];
  segment.path = path;
  segment.file = *file;
  segment.size = header.size();
  live_bytes_ += segment.size;
  const SegmentKey previous = current_key_;
  current_key_ = key;
  current_trusted_ = true;
  ++stats_.segments_created;
  if (previous != SegmentKey{0, 0}) {
    ReclaimSegments();  // The old current segment may be empty already.
  }
  return absl::OkStatus();
}

mail::MessageId Spool::NewMessageId() {
  RELAIS_CHECK(recovered_);
  return mail::MessageId::Make(id_epoch_us_, options_.shard, ++id_counter_);
}

AppendStatus Spool::Append(const mail::MessageId& id, mail::Envelope&& envelope,
                           std::string_view trace, std::string&& body, AppendCompletion& done) {
  RELAIS_CHECK(recovered_ && !options_.read_only);
  UpdateFull();
  const uint64_t stored_size = trace.size() + body.size();
  if (full_) {
    return AppendStatus::kOverBudget;
  }
  if (options_.spool_bytes_max != 0 &&
      live_bytes_ + staged_.size() + stored_size > options_.spool_bytes_max) {
    cap_reached_ = true;  // Until space is reclaimed, refuse at MAIL rather than after DATA.
    full_ = true;
    return AppendStatus::kOverBudget;
  }
  auto message = std::make_unique<StoredMessage>();
  message->id = id;
  message->received_us = clock_.UnixMicros();
  message->envelope = std::move(envelope);
  message->states.assign(message->envelope.recipients.size(), RecipientState::kPending);
  message->body_size = stored_size;
  const uint64_t record_offset = staged_.size();
  MessageRecord record{id, message->received_us, {}, {}};
  // Encode from the message's own envelope to avoid copying it.
  std::swap(record.envelope, message->envelope);
  EncodeMessage(record, trace, body, staged_);
  std::swap(record.envelope, message->envelope);
  if (body_memory_bytes_ + stored_size <= options_.body_memory_bytes_max) {
    // Kept as received, trace header apart: the body is moved, not copied.
    message->trace.assign(trace);
    message->body = std::move(body);
    message->body_in_memory = true;
    body_memory_bytes_ += stored_size;
  }
  staged_waiters_.push_back(
      Waiter{&done, std::move(message), record_offset, staged_.size() - record_offset});
  ++stats_.appends;
  return AppendStatus::kStaged;
}

void Spool::RecordOutcome(const mail::MessageId& id, uint32_t recipient_index,
                          RecipientState state) {
  auto it = index_.find(id);
  if (it == index_.end() || recipient_index >= it->second->states.size()) {
    return;
  }
  it->second->states[recipient_index] = state;
  EncodeOutcome(OutcomeRecord{id, recipient_index, state}, staged_);
  if (AllFinal(*it->second)) {
    Retire(id);
  }
}

void Spool::RecordDeferral(const mail::MessageId& id, uint64_t next_attempt_us, uint32_t attempts,
                           std::string_view last_reply, bool delay_reported) {
  auto it = index_.find(id);
  if (it == index_.end()) {
    return;
  }
  StoredMessage& m = *it->second;
  m.next_attempt_us = next_attempt_us;
  m.attempts = attempts;
  m.last_reply.assign(last_reply.substr(0, 1000));
  m.delay_reported = delay_reported;
  EncodeDeferral(DeferralRecord{id, next_attempt_us, attempts, m.last_reply, delay_reported},
                 staged_);
}

void Spool::Flush() {
  if (in_flight_ || staged_.empty() || options_.read_only) {
    return;
  }
  auto current = segments_.find(current_key_);
  const bool rotate = !current_trusted_ || current == segments_.end() ||
                      (current->second.size > kSegmentHeaderBytes &&
                       current->second.size + staged_.size() > options_.segment_bytes_max);
  if (rotate) {
    if (absl::Status s = StartSegment(); !s.ok()) {
      // No segment to write to: fail this batch (nothing was acknowledged) and try again with
      // the next one.
      flight_.swap(staged_);
      flight_waiters_.swap(staged_waiters_);
      flight_retirements_.swap(staged_retirements_);
      in_flight_ = true;
      if (s.code() == absl::StatusCode::kResourceExhausted) {
        no_space_until_ms_ = clock_.MonotonicMs() + options_.no_space_backoff_ms;
      }
      ++stats_.batch_failures;
      FinishBatch(s.code() == absl::StatusCode::kResourceExhausted ? AppendOutcome::kNoSpace
                                                                   : AppendOutcome::kFailed);
      return;
    }
    current = segments_.find(current_key_);
  }
  flight_.swap(staged_);
  flight_waiters_.swap(staged_waiters_);
  flight_retirements_.swap(staged_retirements_);
  flight_offset_ = current->second.size;
  flight_written_ = 0;
  in_flight_ = true;
  syncing_ = false;
  flight_started_us_ = clock_.MonotonicMicros();
  io_.Write(current->second.file, flight_offset_, flight_, batch_op_);
}

void Spool::OnBatchIo(int32_t result) {
  RELAIS_CHECK(in_flight_);
  Segment& segment = segments_.at(current_key_);
  if (result >= 0 && !syncing_) {
    if (result == 0) {
      result = -EIO;  // A write that makes no progress will never finish.
    } else {
      flight_written_ += static_cast<uint64_t>(result);
      if (flight_written_ < flight_.size()) {
        io_.Write(segment.file, flight_offset_ + flight_written_,
                  std::string_view(flight_).substr(flight_written_), batch_op_);
        return;
      }
      // Every byte of the batch is written; one fdatasync makes all of it durable.
      syncing_ = true;
      io_.Fdatasync(segment.file, batch_op_);
      return;
    }
  }
  if (result < 0) {
    // The segment is no longer trusted: after a failed fdatasync the kernel may have dropped
    // the dirty pages, and a retry could report success for data that is gone.
    current_trusted_ = false;
    segment.size = flight_offset_ + flight_written_;
    live_bytes_ += flight_written_;
    ++stats_.batch_failures;
    const bool no_space = result == -ENOSPC || result == -EDQUOT;
    if (no_space) {
      no_space_until_ms_ = clock_.MonotonicMs() + options_.no_space_backoff_ms;
    }
    FinishBatch(no_space ? AppendOutcome::kNoSpace : AppendOutcome::kFailed);
    return;
  }
  segment.size = flight_offset_ + flight_.size();
  live_bytes_ += flight_.size();
  ++stats_.batches;
  stats_.bytes_written += flight_.size();
  if (options_.batch_seconds != nullptr) {
    options_.batch_seconds->ObserveMicros(clock_.MonotonicMicros() - flight_started_us_);
  }
  for (Waiter& w : flight_waiters_) {
    w.message->segment = current_key_;
    w.message->record_offset = flight_offset_ + w.record_offset;
    w.message->record_size = w.record_size;
    ++segment.live_messages;
  }
  FinishBatch(AppendOutcome::kDurable);
}

void Spool::FinishBatch(AppendOutcome outcome) {
  std::vector<Waiter> waiters;
  waiters.swap(flight_waiters_);
  flight_.clear();
  in_flight_ = false;
  if (outcome == AppendOutcome::kDurable && !flight_retirements_.empty()) {
    // The outcomes that finished these messages are durable now: their segments may go. (A
    // failed batch keeps them: after a restart those messages are tried again.)
    for (const SegmentKey& key : flight_retirements_) {
      auto segment = segments_.find(key);
      if (segment != segments_.end() && segment->second.live_messages > 0) {
        --segment->second.live_messages;
      }
    }
    ReclaimSegments();
  }
  flight_retirements_.clear();
  for (Waiter& w : waiters) {
    const mail::MessageId id = w.message->id;
    if (outcome == AppendOutcome::kDurable) {
      index_.emplace(id, std::move(w.message));
    } else if (w.message->body_in_memory) {
      body_memory_bytes_ -= w.message->body_size;
    }
    w.done->OnAppendDone(outcome, id);
  }
  UpdateFull();
  // Whatever was staged meanwhile goes now rather than at the end of the next turn.
  Flush();
}

void Spool::Retire(const mail::MessageId& id) {
  auto it = index_.find(id);
  if (it == index_.end()) {
    return;
  }
  if (recovered_) {
    // The outcome that finishes it is only staged: its segment must outlive that record's
    // batch, or a crash (or a failed batch) before it is durable would lose the message and
    // the bounce staged with its failure. The batch's success releases it (FinishBatch).
    staged_retirements_.push_back(it->second->segment);
  } else if (auto segment = segments_.find(it->second->segment);
             segment != segments_.end() && segment->second.live_messages > 0) {
    --segment->second.live_messages;  // Recovery: the outcome was read from disk.
  }
  if (it->second->body_in_memory) {
    body_memory_bytes_ -= it->second->body_size;
  }
  index_.erase(it);
}

void Spool::ReclaimSegments() {
  if (options_.read_only) {
    return;
  }
  // Within one directory, delete from the oldest segment forward while segments are empty:
  // an outcome record only ever refers to messages in its own or older segments, so no
  // deleted segment can take away an outcome that a surviving message still needs.
  uint32_t blocked_group = UINT32_MAX;
  for (auto it = segments_.begin(); it != segments_.end();) {
    const SegmentKey key = it->first;
    if (key.first == blocked_group) {
      ++it;
      continue;
    }
    if (key == current_key_ || it->second.live_messages > 0) {
      blocked_group = key.first;
      ++it;
      continue;
    }
    io_.Close(it->second.file);
    // No directory sync: a segment that reappears after a crash only holds finished messages,
    // which are delivered again at worst (at-least-once).
    (void)io_.Unlink(it->second.path);
    live_bytes_ -= it->second.size;
    cap_reached_ = false;
    ++stats_.segments_deleted;
    it = segments_.erase(it);
  }
}

void Spool::UpdateFull() {
  const bool over_cap =
      options_.spool_bytes_max != 0 && live_bytes_ + staged_.size() >= options_.spool_bytes_max;
  full_ = over_cap || cap_reached_ || clock_.MonotonicMs() < no_space_until_ms_;
}

const StoredMessage* Spool::Find(const mail::MessageId& id) const {
  auto it = index_.find(id);
  return it == index_.end() ? nullptr : it->second.get();
}

absl::StatusOr<std::string> ReadBodyAt(io::Io& io, const BodyLocation& location) {
  // Read the whole record back and check its CRC again before trusting the body.
  std::string bytes(location.record_size, '\0');
  auto read =
      io.ReadAt(location.file, location.record_offset, std::span<char>(bytes.data(), bytes.size()));
  if (!read.ok()) {
    return read.status();
  }
  DecodedRecord record;
  if (*read != bytes.size() || DecodeRecord(bytes, record) != DecodeStatus::kOk ||
      record.type != RecordType::kMessage || record.message.id != location.id) {
    return absl::DataLossError(base::StrCat("record of message ", location.id.ToString(), " at ",
                                            location.record_offset, " fails its checksum"));
  }
  return std::string(record.message.body);
}

std::optional<BodyLocation> Spool::Locate(const StoredMessage& message) const {
  auto segment = segments_.find(message.segment);
  if (segment == segments_.end()) {
    return std::nullopt;
  }
  return BodyLocation{segment->second.file, message.record_offset, message.record_size, message.id};
}

absl::StatusOr<std::string> Spool::ReadBody(const StoredMessage& message) {
  if (message.body_in_memory) {
    return base::StrCat(message.trace, message.body);
  }
  const auto location = Locate(message);
  if (!location) {
    return absl::NotFoundError(base::StrCat("message ", message.id.ToString(), ": no segment"));
  }
  return ReadBodyAt(io_, *location);
}

void Spool::ForEach(const std::function<void(const StoredMessage&)>& fn) const {
  for (const auto& [id, message] : index_) {
    fn(*message);
  }
}

}  // namespace relais::spool
