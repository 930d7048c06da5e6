// ApiError: the control plane's REST error vocabulary (reference wrenn-control-plane.md
// §1.2) and the one place that decides which HTTP status and wire code a failure gets.
//
// Contract:
//  - Handlers throw ApiError for failures they classify themselves (bad input, wrong
//    state, not found in this team) and let wrenn::Error from lower layers (pg, host
//    client, crypto) propagate; to_api_error() maps those by their typed Code, never by
//    message text.
//  - error_body() renders {"error":{"code":"…","message":"…"}} (+ "\n", as upstream).
//    Extra members set with ApiError::with() go inside "error" next to code and message
//    (the host-delete conflict's "sandbox_ids", reference §3.10).
//  - Messages are for humans and must never contain secrets (keys, tokens, passwords).
#pragma once

#include <boost/json/object.hpp>
#include <boost/json/value.hpp>
#include <exception>
#include <stdexcept>
#include <string>
#include <string_view>

namespace wrenn::cp {

enum class ApiCode {
  kInvalidRequest,          // 400
  kUnauthorized,            // 401
  kForbidden,               // 403
  kAccountDeactivated,      // 403 (a user whose status is not active)
  kNotFound,                // 404
  kConflict,                // 409
  kInvalidState,            // 409
  kTemplateNameTaken,       // 409
  kNameReserved,            // 409: a platform template's name
  kRevisionConflict,        // 409: a fleet apply planned at a revision no longer current
  kInvalidSpec,             // 400: fleet specs with problems ("diagnostics" lists them)
  kHasActiveSandboxes,      // 409
  kConcurrentSandboxLimit,  // 402
  kVcpuLimit,               // 402
  kMemoryLimit,             // 402
  kTooLarge,                // 413
  kInternalError,           // 500
  kDbError,                 // 500
  kAgentError,              // 502 (501 when the agent says unimplemented: kAgentUnimplemented)
  kAgentUnimplemented,      // 501, wire code "agent_error"
  kAgentTimeout,            // 504, wire code "agent_error"
  kNoHostsAvailable,        // 503
  kHostUnavailable,         // 503
  kMethodNotAllowed,        // 405, wire code "method_not_allowed"
  kDeliveryFailed,          // 502: a notification channel's endpoint refused a test event
};

// Wire code ("not_found") and HTTP status of a code.
std::string_view api_code_name(ApiCode code);
unsigned api_code_status(ApiCode code);

class ApiError : public std::runtime_error {
 public:
  ApiError(ApiCode code, std::string message)
      : std::runtime_error(std::move(message)), code_(code) {}
  ApiCode code() const { return code_; }
  unsigned status() const { return api_code_status(code_); }
  // Adds a member to the error object ({"error":{"code","message",<key>:<value>}}).
  ApiError& with(std::string_view key, boost::json::value value) {
    extra_[key] = std::move(value);
    return *this;
  }
  const boost::json::object& extra() const { return extra_; }

 private:
  ApiCode code_;
  boost::json::object extra_;
};

// Maps any exception to what the client sees. ApiError passes through; wrenn::Error maps
// by Code: invalid_argument -> invalid_request, not_found -> not_found, already_exists ->
// conflict, failed_precondition -> invalid_state, permission_denied -> forbidden,
// unauthenticated -> unauthorized, resource_exhausted -> too_large, unavailable ->
// host_unavailable, deadline_exceeded -> agent_timeout, unimplemented ->
// agent_unimplemented, everything else -> internal_error with a generic message (the
// original is logged by the caller, not sent). The message of a mapped wrenn::Error is
// passed on (lower layers never put secrets in messages).
// Database errors (pg::SqlError) are the exception: their text is technical, so a
// unique/exclusion violation becomes conflict "conflicts with an existing resource", a
// lost or unreachable database db_error "database unavailable, try again", anything else
// internal_error.
ApiError to_api_error(const std::exception& e);
ApiError to_api_error(std::exception_ptr e);
// True when to_api_error(e) hides the original (internal_error / db_error from something
// that was not an ApiError): the caller logs e.what() then.
bool is_internal(const std::exception& e);

// {"error":{"code":"…","message":"…"}}\n
std::string error_body(const ApiError& e);

}  // namespace wrenn::cp
