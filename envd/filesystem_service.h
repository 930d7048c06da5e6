// filesystem.Filesystem: Connect handlers for stat, mkdir, move, list, remove and watches.
#pragma once

#include <boost/asio/io_context.hpp>

#include "connect/server.h"
#include "state.h"

namespace wrenn::envd {

// Registers /filesystem.Filesystem/* on the router. Watchers created through
// CreateWatcher live as long as the io_context.
void register_filesystem_service(connect::Router& router, State& state, boost::asio::io_context& io);

}  // namespace wrenn::envd
