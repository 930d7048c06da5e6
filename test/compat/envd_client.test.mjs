// Third-party client compatibility: the Connect client of connect-es (@connectrpc/connect +
// @connectrpc/connect-node, protobuf-es v2) speaking the JSON codec over HTTP/1.1 against a
// running envd. No generated code: the services come from a descriptor set built by protoc.
//
// Environment:
//   ENVD_URL             envd's base URL, e.g. http://127.0.0.1:49983
//   ENVD_DESCRIPTOR_SET  FileDescriptorSet of envd/process.proto and envd/filesystem.proto
//                        (protoc --include_imports --descriptor_set_out=...)
// run.sh sets both; see it for how envd is started.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { before, describe, test } from "node:test";

import { createFileRegistry, fromBinary } from "@bufbuild/protobuf";
import { FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";

function requireEnv(name) {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set (run this through test/compat/run.sh)`);
  return v;
}

const baseUrl = requireEnv("ENVD_URL");
const registry = createFileRegistry(
  fromBinary(FileDescriptorSetSchema, readFileSync(requireEnv("ENVD_DESCRIPTOR_SET"))),
);
const processService = registry.getService("process.Process");
const filesystemService = registry.getService("filesystem.Filesystem");
assert.ok(processService, "descriptor set lacks service process.Process");
assert.ok(filesystemService, "descriptor set lacks service filesystem.Filesystem");

// Content types seen on the wire, to prove the JSON codec is what was exercised.
const wire = [];
const recordContentTypes = (next) => async (req) => {
  const res = await next(req);
  wire.push({
    method: req.method.name,
    request: req.header.get("content-type"),
    response: res.header.get("content-type"),
  });
  return res;
};

const transport = createConnectTransport({
  baseUrl,
  httpVersion: "1.1",
  useBinaryFormat: false,
  interceptors: [recordContentTypes],
});
const proc = createClient(processService, transport);
const fs = createClient(filesystemService, transport);

const text = (bytes) => new TextDecoder().decode(bytes);
const bytes = (s) => new TextEncoder().encode(s);

// Collects a Process.Start / Process.Connect stream into its events.
async function collect(stream) {
  const out = { pids: [], stdout: "", stderr: "", ends: [], keepalives: 0, order: [] };
  for await (const res of stream) {
    const ev = res.event?.event;
    assert.ok(ev && ev.case, `response without an event: ${JSON.stringify(res)}`);
    out.order.push(ev.case);
    switch (ev.case) {
      case "start":
        out.pids.push(ev.value.pid);
        break;
      case "data":
        if (ev.value.output.case === "stdout") out.stdout += text(ev.value.output.value);
        else if (ev.value.output.case === "stderr") out.stderr += text(ev.value.output.value);
        else assert.fail(`unexpected output ${ev.value.output.case}`);
        break;
      case "end":
        out.ends.push(ev.value);
        break;
      case "keepalive":
        out.keepalives++;
        break;
      default:
        assert.fail(`unexpected event ${ev.case}`);
    }
  }
  return out;
}

// Resolves with the value of the first event of `case` from an async iterator.
async function nextEvent(iterator, kind) {
  for (;;) {
    const { value, done } = await iterator.next();
    assert.ok(!done, `stream ended before a ${kind} event`);
    const ev = value.event?.event;
    if (ev?.case === kind) return ev.value;
    if (kind !== "end") assert.notEqual(ev?.case, "end", `process ended before a ${kind} event`);
  }
}

describe("connect-es client, JSON codec, HTTP/1.1", () => {
  before(async () => {
    // Fail early with a clear message when envd is not there.
    const res = await fetch(new URL("/health", baseUrl));
    assert.ok(res.status < 500, `envd health check answered ${res.status}`);
  });

  test("server stream: Process.Start collects start, stdout, stderr and end", async () => {
    const r = await collect(
      proc.start({
        process: { cmd: "sh", args: ["-c", "echo out; echo err >&2; exit 3"] },
        stdin: false,
      }),
    );
    assert.equal(r.pids.length, 1, "exactly one start event");
    assert.ok(r.pids[0] > 0, `start event pid ${r.pids[0]}`);
    assert.equal(r.order[0], "start", "start is the first event");
    assert.equal(r.stdout, "out\n");
    assert.equal(r.stderr, "err\n");
    assert.equal(r.ends.length, 1, "exactly one end event");
    assert.equal(r.order.at(-1), "end", "end is the last event");
    assert.equal(r.ends[0].exitCode, 3);
    assert.equal(r.ends[0].exited, true);
  });

  test("unary: Process.List lists a running process with its tag and config", async () => {
    const tag = `compat-list-${process.pid}`;
    const abort = new AbortController();
    const it = proc
      .start(
        { process: { cmd: "sleep", args: ["30"] }, tag, stdin: false },
        { signal: abort.signal },
      )
      [Symbol.asyncIterator]();
    try {
      const { pid } = await nextEvent(it, "start");
      const res = await proc.list({});
      const mine = res.processes.find((p) => p.pid === pid);
      const pids = res.processes.map((p) => p.pid);
      assert.ok(mine, `pid ${pid} missing from List: ${JSON.stringify(pids)}`);
      assert.equal(mine.tag, tag);
      assert.equal(mine.config.cmd, "sleep");
      assert.deepEqual(mine.config.args, ["30"]);
      await proc.sendSignal({ process: { selector: { case: "pid", value: pid } }, signal: 9 });
      const end = await nextEvent(it, "end");
      assert.equal(end.exited, false, "killed by a signal, so not exited");
    } finally {
      abort.abort();
    }
  });

  test("unary: Filesystem.Stat of /tmp", async () => {
    const res = await fs.stat({ path: "/tmp" });
    assert.equal(res.entry.name, "tmp");
    assert.equal(res.entry.path, "/tmp");
    assert.equal(res.entry.type, 2, "FILE_TYPE_DIRECTORY");
    assert.equal(typeof res.entry.size, "bigint", "int64 size decodes from its JSON string");
    assert.ok(res.entry.modifiedTime, "modified_time is set");
  });

  test("error: Process.SendSignal to a nonexistent pid is NotFound", async () => {
    await assert.rejects(
      proc.sendSignal({ process: { selector: { case: "pid", value: 999999999 } }, signal: 15 }),
      (err) => {
        assert.ok(err instanceof ConnectError, `not a ConnectError: ${err}`);
        assert.equal(err.code, Code.NotFound, `code ${Code[err.code]}: ${err.rawMessage}`);
        assert.ok(err.rawMessage.length > 0, "the error carries a message");
        return true;
      },
    );
  });

  test("client stream: Process.StreamInput feeds stdin of a running process", async () => {
    const abort = new AbortController();
    const it = proc
      .start(
        { process: { cmd: "sh", args: ["-c", "read a; read b; echo \"got:$a,$b\""] }, stdin: true },
        { signal: abort.signal },
      )
      [Symbol.asyncIterator]();
    try {
      const { pid } = await nextEvent(it, "start");
      const selector = { selector: { case: "pid", value: pid } };
      const stdin = (s) => ({
        event: { case: "data", value: { input: { input: { case: "stdin", value: bytes(s) } } } },
      });
      async function* input() {
        yield { event: { case: "start", value: { process: selector } } };
        yield stdin("one\n");
        yield { event: { case: "keepalive", value: {} } };
        yield stdin("two\n");
      }
      const res = await proc.streamInput(input());
      assert.ok(res, "StreamInput answered");
      let stdout = "";
      for (;;) {
        const { value, done } = await it.next();
        assert.ok(!done, "stream ended before the end event");
        const ev = value.event.event;
        if (ev.case === "data" && ev.value.output.case === "stdout") {
          stdout += text(ev.value.output.value);
        }
        if (ev.case === "end") {
          assert.equal(ev.value.exitCode, 0);
          break;
        }
      }
      assert.equal(stdout, "got:one,two\n");
    } finally {
      abort.abort();
    }
  });

  test("every call above used the JSON codec", () => {
    // application/json for unary calls, application/connect+json for streams.
    assert.ok(wire.length >= 5, `only ${wire.length} calls recorded`);
    for (const w of wire) {
      const json = /^application\/(connect\+)?json\b/;
      assert.match(w.request ?? "", json, `${w.method} request content-type ${w.request}`);
      assert.match(w.response ?? "", json, `${w.method} response content-type ${w.response}`);
    }
  });
});
