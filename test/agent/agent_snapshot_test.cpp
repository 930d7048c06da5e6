// Snapshots on the agent end to end: CreateSnapshot copies a sandbox's root tree into
// images/<tmpl-id>/ (a running sandbox keeps running), a new sandbox created from that
// template sees the files, DeleteSnapshot removes it, refuses while it is in use, and bad
// template ids are refused.
#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <filesystem>

#include "agent_fixture.h"

using namespace wrenn;
using namespace wrenn::test;
namespace pb = wrenn::agent::v1;
namespace fs = std::filesystem;

namespace {

const std::string kSvc = "/wrenn.agent.v1.AgentService/";

std::uint64_t create_snapshot(connect::Client& c, const std::string& sandbox,
                              const std::string& tmpl) {
  pb::CreateSnapshotRequest req;
  req.set_sandbox_id(sandbox);
  req.set_template_id(tmpl);
  pb::CreateSnapshotResponse resp;
  c.unary(kSvc + "CreateSnapshot", req, resp);
  return resp.size_bytes();
}

void delete_snapshot(connect::Client& c, const std::string& tmpl) {
  pb::DeleteSnapshotRequest req;
  req.set_template_id(tmpl);
  pb::DeleteSnapshotResponse resp;
  c.unary(kSvc + "DeleteSnapshot", req, resp);
}

pb::SandboxInfo get_sandbox(connect::Client& c, const std::string& id) {
  pb::GetSandboxRequest req;
  req.set_sandbox_id(id);
  pb::GetSandboxResponse resp;
  c.unary(kSvc + "GetSandbox", req, resp);
  return resp.sandbox();
}

std::vector<std::string> host_templates(connect::Client& c) {
  pb::HostInfoResponse host;
  c.unary(kSvc + "HostInfo", pb::HostInfoRequest{}, host);
  return {host.templates().begin(), host.templates().end()};
}

bool contains(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

}  // namespace

TEST_CASE("snapshot of a running sandbox becomes a template and the source keeps running") {
  enter_private_netns();
  TempDir dir;
  AgentProcess agent(dir.path(), {"--warm-slots", "0", "--ready-disks", "0"});
  auto c = agent.client();
  create_sandbox(*c, "sb-src");
  auto w = run_in_sandbox(agent, "sb-src",
                          "mkdir -p /root/d && echo hello snapshot > /root/hello.txt && "
                          "chmod 640 /root/hello.txt && chown 1000:1000 /root/hello.txt && "
                          "ln -s hello.txt /root/link && ln /root/hello.txt /root/d/hard && "
                          "rm /bin/vi 2>/dev/null; echo ok");
  REQUIRE(w.output == "ok\n");

  const std::string tmpl = "tmpl-0000000000000000000snap1";
  const std::uint64_t size = create_snapshot(*c, "sb-src", tmpl);
  CHECK(size > 0);
  const std::string root = dir.path() + "/images/" + tmpl;
  REQUIRE(fs::is_directory(root));
  CHECK(fs::is_directory(root + "/root/d"));
  // Modes, owners, symlinks and hard links survive the copy.
  struct stat st {};
  REQUIRE(::stat((root + "/root/hello.txt").c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0640);
  CHECK(st.st_uid == 1000);
  CHECK(st.st_nlink == 2);
  CHECK(fs::read_symlink(root + "/root/link") == "hello.txt");
  // A deletion in the sandbox (an overlay whiteout) is a plain absence in the template.
  CHECK(!fs::exists(root + "/bin/vi"));
  // No temporary copy left, and the host lists the template.
  for (const auto& e : fs::directory_iterator(dir.path() + "/images"))
    CHECK(e.path().filename().string().find(".tmp-") == std::string::npos);
  CHECK(contains(host_templates(*c), tmpl));

  // The source was frozen only for the copy.
  CHECK(get_sandbox(*c, "sb-src").state() == pb::SANDBOX_STATE_RUNNING);
  CHECK(run_in_sandbox(agent, "sb-src", "echo still running").output == "still running\n");

  // Idempotent: the same id again returns the existing template's size.
  CHECK(create_snapshot(*c, "sb-src", tmpl) == size);

  // A new sandbox from the template sees the file.
  auto info = create_sandbox(*c, "sb-copy", tmpl);
  CHECK(info.template_() == tmpl);
  CHECK(run_in_sandbox(agent, "sb-copy", "cat /root/hello.txt").output == "hello snapshot\n");
  // Its writes go to its own layer, not into the template.
  run_in_sandbox(agent, "sb-copy", "echo changed > /root/hello.txt");
  CHECK(read_file(root + "/root/hello.txt") == "hello snapshot\n");

  // In use as a lower layer: refused.
  CHECK(error_code_of([&] { delete_snapshot(*c, tmpl); }) == Code::kFailedPrecondition);
  CHECK(fs::is_directory(root));
  destroy_sandbox(*c, "sb-copy");
  delete_snapshot(*c, tmpl);
  CHECK(!fs::exists(root));
  CHECK(!contains(host_templates(*c), tmpl));
  CHECK(error_code_of([&] { delete_snapshot(*c, tmpl); }) == Code::kNotFound);
  destroy_sandbox(*c, "sb-src");
}

TEST_CASE("snapshot of a paused sandbox keeps it paused and bad ids are refused") {
  enter_private_netns();
  TempDir dir;
  AgentProcess agent(dir.path(), {"--warm-slots", "0", "--ready-disks", "0"});
  auto c = agent.client();
  create_sandbox(*c, "sb-p");
  run_in_sandbox(agent, "sb-p", "echo frozen > /frozen.txt");
  pb::PauseSandboxRequest preq;
  preq.set_sandbox_id("sb-p");
  pb::PauseSandboxResponse presp;
  c->unary(kSvc + "PauseSandbox", preq, presp);

  const std::string tmpl = "tmpl-0000000000000000000snap2";
  create_snapshot(*c, "sb-p", tmpl);
  CHECK(read_file(dir.path() + "/images/" + tmpl + "/frozen.txt") == "frozen\n");
  CHECK(get_sandbox(*c, "sb-p").state() == pb::SANDBOX_STATE_PAUSED);

  for (const std::string bad :
       {"", "minimal", "busybox", "tmpl-../x", "tmpl-a/b", "../tmpl-a", "tmpl-ABC", "tmpl-"}) {
    INFO(bad);
    CHECK(error_code_of([&] { create_snapshot(*c, "sb-p", bad); }) == Code::kInvalidArgument);
    CHECK(error_code_of([&] { delete_snapshot(*c, bad); }) == Code::kInvalidArgument);
  }
  CHECK(fs::is_directory(dir.path() + "/images/busybox"));
  // Unknown sandbox.
  CHECK(error_code_of([&] { create_snapshot(*c, "no-such", "tmpl-x1"); }) == Code::kNotFound);
  CHECK(!fs::exists(dir.path() + "/images/tmpl-x1"));
  destroy_sandbox(*c, "sb-p");
  delete_snapshot(*c, tmpl);
}
