// envd-exec: runs one command through an envd over Connect and relays its output and exit
// code. A small client for scripts, demos and benchmarks.
#include <openssl/evp.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <iostream>
#include <map>
#include <string>

#include "connect/client.h"
#include "envd/process.pb.h"
#include "error.h"

int main(int argc, char** argv) {
  std::string host = "127.0.0.1";
  unsigned short port = 49983;
  std::string user, cwd, prefix;
  std::map<std::string, std::string> headers;
  int i = 1;
  for (; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--") {
      ++i;
      break;
    }
    if (a == "-h" || a == "--help") {
      std::puts(
          "envd-exec - run a command through envd\n\n"
          "Usage: envd-exec [--host H] [--port N] [--user U] [--cwd DIR] [--prefix P]\n"
          "                 [--header 'Name: value']... -- CMD [ARGS...]\n\n"
          "  --prefix P   path before /process.Process/Start, to reach envd through a proxy,\n"
          "               e.g. /proxy/<sandbox_id>/49983 on wrenn-agent\n"
          "  --header H   extra request header (repeatable), e.g. 'X-Wrenn-Agent-Token: ...'\n\n"
          "Prints the command's stdout and stderr as they arrive and exits with its exit code\n"
          "(128+signal when it was killed).");
      return 0;
    }
    if (i + 1 >= argc) {
      std::fprintf(stderr, "envd-exec: %s needs a value\n", a.c_str());
      return 2;
    }
    if (a == "--host")
      host = argv[++i];
    else if (a == "--port") {
      std::string v = argv[++i];
      char* endp = nullptr;
      long p = std::strtol(v.c_str(), &endp, 10);
      if (v.empty() || *endp || p < 1 || p > 65535) {
        std::fprintf(stderr, "envd-exec: --port must be 1..65535, got \"%s\"\n", v.c_str());
        return 2;
      }
      port = static_cast<unsigned short>(p);
    } else if (a == "--user")
      user = argv[++i];
    else if (a == "--cwd")
      cwd = argv[++i];
    else if (a == "--prefix") {
      prefix = argv[++i];
      if (prefix.empty() || prefix[0] != '/' || prefix.back() == '/') {
        std::fprintf(stderr,
                     "envd-exec: --prefix must start with / and not end with /, got \"%s\"\n",
                     prefix.c_str());
        return 2;
      }
    } else if (a == "--header") {
      std::string h = argv[++i];
      auto colon = h.find(':');
      if (colon == std::string::npos || colon == 0) {
        std::fprintf(stderr, "envd-exec: --header wants 'Name: value', got \"%s\"\n", h.c_str());
        return 2;
      }
      std::string value = h.substr(colon + 1);
      value.erase(0, value.find_first_not_of(' '));
      headers[h.substr(0, colon)] = value;
    } else {
      std::fprintf(stderr, "envd-exec: unknown argument \"%s\" (see --help)\n", a.c_str());
      return 2;
    }
  }
  if (i >= argc) {
    std::fprintf(stderr, "envd-exec: no command given (see --help)\n");
    return 2;
  }
  process::StartRequest req;
  req.mutable_process()->set_cmd(argv[i]);
  for (int j = i + 1; j < argc; ++j) req.mutable_process()->add_args(argv[j]);
  if (!cwd.empty()) req.mutable_process()->set_cwd(cwd);
  req.set_stdin(false);
  try {
    wrenn::connect::Client client(host, port);
    for (const auto& [k, v] : headers) client.default_headers()[k] = v;
    if (!user.empty()) {
      std::string cred = user + ":";
      std::string enc(4 * ((cred.size() + 2) / 3) + 1, '\0');
      int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(enc.data()),
                              reinterpret_cast<const unsigned char*>(cred.data()),
                              static_cast<int>(cred.size()));
      enc.resize(static_cast<std::size_t>(n));
      client.default_headers()["Authorization"] = "Basic " + enc;
    }
    auto stream = client.server_stream(prefix + "/process.Process/Start", req);
    process::StartResponse resp;
    int code = 0;
    while (stream->next(resp)) {
      const auto& ev = resp.event();
      if (ev.has_data()) {
        const auto& d = ev.data();
        if (d.has_stderr()) {
          ssize_t ig = ::write(2, d.stderr().data(), d.stderr().size());
          (void)ig;
        } else {
          const std::string& s = d.has_stdout() ? d.stdout() : d.pty();
          ssize_t ig = ::write(1, s.data(), s.size());
          (void)ig;
        }
      } else if (ev.has_end()) {
        code = ev.end().exit_code();
        if (!ev.end().exited()) {
          // "signal: 15 (SIGTERM)" -> 128 + 15, as shells report it.
          int sig = 0;
          std::sscanf(ev.end().status().c_str(), "signal: %d", &sig);
          code = 128 + sig;
        }
      }
    }
    return code;
  } catch (const wrenn::Error& e) {
    std::fprintf(stderr, "envd-exec: %s: %s\n", std::string(wrenn::code_name(e.code())).c_str(),
                 e.what());
    return 1;
  }
}
