// Sends one outbound request of a notification channel over HTTP(S), as a careful client
// of untrusted endpoints must.
//
// Contract:
//  - send(req, opts) resolves the URL's host with resolve_checked (targets.h: every address
//    checked against the SSRF policy), connects to one of those addresses, sends the
//    request (Host header = the URL's host, Content-Length, User-Agent wrenn-cp), and reads
//    the status and up to 16 KiB of the answer's body.
//  - Never throws for delivery failures: SendResult.ok is true only for a 2xx answer. A 3xx
//    is a failure ("redirect to <Location> not followed"); a refused target, DNS failure,
//    connect error, TLS failure (certificate chain or host name does not verify), or the
//    deadline passing (opts.timeout over the whole exchange, default 10 s) gives status 0
//    and an error text without secrets (the URL appears only as scheme://host[:port]).
//  - HTTPS verifies the certificate against the system trust store plus opts.ca_file when
//    set (WRENN_CHANNEL_CA_FILE), with SNI and host name verification.
//  - One connection per request (Connection: close).
// Thread-safety: send() may be called from any number of threads at once.
#pragma once

#include <chrono>
#include <string>

#include "events/providers.h"
#include "events/targets.h"

namespace wrenn::cp::events {

struct SendOptions {
  TargetPolicy policy;
  std::string ca_file;
  std::chrono::milliseconds timeout{10000};
};

struct SendResult {
  bool ok = false;
  unsigned status = 0;    // 0: no HTTP answer
  std::string error;      // empty when ok; else why ("HTTP 500: <first 200 bytes>", ...)
  std::string body;       // the answer (up to 16 KiB)
  std::chrono::milliseconds duration{0};
};

SendResult send(const OutboundRequest& req, const SendOptions& opts);

}  // namespace wrenn::cp::events
