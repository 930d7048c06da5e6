// Snapshots (reference §3.9): a capsule's filesystem as a new template.
#include "api/capsule_routes.h"

namespace wrenn::cp {

void register_snapshot_routes(ServerContext& ctx) {
  (void)ctx;
}

}  // namespace wrenn::cp
