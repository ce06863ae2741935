// queue/delivery/job.h — one delivery attempt as it travels between the shard and its worker
// thread: the recipients with what was decided for each, the message's content (or where to
// read it), and what the attempt came to.
//
// A Job is a move-only value owned by whoever holds its unique_ptr: the shard's Delivery, then
// (through an SPSC ring) the worker, then the shard again. Nothing in it points into shard
// memory, so the worker may read it freely while it holds it.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/mail/envelope.h"
#include "queue/delivery/bounce_class.h"
#include "queue/delivery/status.h"
#include "queue/maildir/maildir.h"
#include "queue/spool/spool.h"

namespace relais::delivery {

struct Item {
  // Decided: `result` is final for this attempt (by the planner, the worker or a next hop).
  // Not decided: a Maildir delivery (destination < 0) or a network one (destination >= 0).
  bool decided = false;
  std::string address;  // The recipient.
  Route route = Route::kMaildir;
  int32_t destination = -1;  // Route index of a smarthost/lmtp/mx recipient.
  // Its DestinationId (destinations.h) once its next hops are resolved (Delivery, before any
  // body is read); 0 before, for Maildir recipients, and for one decided by the resolution.
  uint32_t dest = 0;
  // The class of a result that is not a delivery (bounce_class.h), set where the job ends.
  BounceClass bounce_class = BounceClass::kNone;
  maildir::Delivery maildir;
  Status result;
  std::string next_hop;      // For the log: the endpoint that answered, if any.
  uint64_t duration_us = 0;  // For the log: how long its transport took (0: none).
  // RFC 3461: what the sender asked to be told (mail::kNotify* bits; 0: failures only),
  // ORCPT as received, and whether a next hop took over reporting (it offered DSN).
  uint8_t notify = 0;
  std::string orcpt;
  std::string notify_text;  // NOTIFY as passed on to a next hop; empty: none.
  bool dsn_passed_on = false;

  [[nodiscard]] bool pending_maildir() const { return !decided && destination < 0; }
  [[nodiscard]] bool pending_network() const { return !decided && destination >= 0; }
};

struct Job {
  uint64_t token = 0;  // The shard's handle on the attempt.
  std::string message_id;
  std::string content;  // As stored: trace header, then the message. Empty when...
  std::optional<spool::BodyLocation> location;  // ...the worker must read it from here.
  std::vector<Item> items;                      // One per recipient of the attempt, in order.
  // For the report when a recipient fails for good; empty sender: never (RFC 5321 6.1).
  std::string sender;
  std::string reporting_mta;
  uint64_t received_us = 0;
  mail::BodyType body_type = mail::BodyType::k7Bit;
  bool smtputf8 = false;
  mail::DsnReturn dsn_return = mail::DsnReturn::kUnspecified;
  std::string envid;
  // The message has waited past delay_warning_ms and no delay report went out yet: deferred
  // recipients that asked for NOTIFY=DELAY are reported.
  bool report_delay = false;
  // The body could not be read (location set, read failed): why. Pending items are deferred,
  // and no report goes out (it would have to return the message).
  std::optional<std::string> read_error;

  [[nodiscard]] bool any_pending_maildir() const;
  [[nodiscard]] bool any_pending_network() const;
};

struct JobDone {
  uint64_t token = 0;
  std::vector<Status> results;  // One per item.
  std::vector<Route> routes;    // One per item: its route type.
  std::vector<BounceClass> classes;  // One per item: its bounce class (kNone: delivered).
  // An RFC 3464 report to the sender: failures (unless NOTIFY said otherwise), and the
  // successes and delays that NOTIFY asked for.
  std::string bounce;
  bool delay_reported = false;  // The report covers a delay (report_delay was acted on).
  // A job the worker hands back unfinished: its body read and its Maildir recipients
  // delivered, its network recipients next (on the shard).
  std::unique_ptr<Job> unfinished;
  // For the shard's counters: since the previous JobDone.
  uint64_t mailboxes_recreated = 0;    // Known mailboxes found gone and made again.
  uint64_t directories_forgotten = 0;  // Times the known-directories set was full.
};

}  // namespace relais::delivery
