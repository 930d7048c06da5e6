// process.Process: Connect handlers over the ProcessManager.
#pragma once

#include "connect/server.h"
#include "process_manager.h"
#include "state.h"

namespace wrenn::envd {

// Registers /process.Process/* on the router.
void register_process_service(connect::Router& router, State& state, ProcessManager& processes);

// The environment of a new process, in order (later entries win): PATH, HOME, USER,
// LOGNAME, envd's default env, then the request's envs.
std::vector<std::pair<std::string, std::string>> process_environment(
    const User& user, const std::map<std::string, std::string>& defaults,
    const google::protobuf::Map<std::string, std::string>& request_envs, bool pty);

}  // namespace wrenn::envd
