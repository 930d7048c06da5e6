#include "fleet/reconciler.h"

namespace wrenn::cp::fleet {

struct Reconciler::Impl {};

Reconciler::Reconciler(ServerContext& ctx) : ctx_(ctx), impl_(std::make_unique<Impl>()) {}
Reconciler::~Reconciler() = default;

void Reconciler::run(std::stop_token stop) {
  (void)stop;
  (void)ctx_;
}

}  // namespace wrenn::cp::fleet
