// A Connect-ES client in Node.js (@connectrpc/connect-node): runs the plan given as JSON in
// the first argument and prints one JSON line per event (see plan.mjs), then exits 0. Errors of
// the calls are events; anything else (a bad plan, a missing package) exits non-zero.
//
// Plan: { baseUrl, protocol: "connect" | "grpc" | "grpcweb", codec: "json" | "binary",
//         httpVersion: "1.1" | "2", descriptorSet: path of a FileDescriptorSet file,
//         useHttpGet?: Connect calls methods without side effects with GET,
//         gzip?: send every message gzip-compressed, and accept gzip,
//         timeoutMs?: per call, deadlineMs?: the whole run, calls: [...] }

import { readFileSync } from "node:fs";
import {
  compressionGzip,
  createConnectTransport,
  createGrpcTransport,
  createGrpcWebTransport,
} from "@connectrpc/connect-node";
import { registryFrom, runPlan } from "./plan.mjs";

const plan = JSON.parse(process.argv[2] ?? "null");
if (!plan) {
  console.error("usage: node connect_node.mjs '<plan as JSON>'");
  process.exit(2);
}
// Whatever happens, the process ends.
setTimeout(() => {
  console.error(`connect_node: the plan did not finish within ${plan.deadlineMs ?? 30000} ms`);
  process.exit(3);
}, plan.deadlineMs ?? 30000).unref();

const options = {
  baseUrl: plan.baseUrl,
  httpVersion: plan.httpVersion ?? "2",
  useBinaryFormat: (plan.codec ?? "binary") === "binary",
  ...(plan.gzip
    ? { sendCompression: compressionGzip, acceptCompression: [compressionGzip], compressMinBytes: 0 }
    : {}),
};
const transport =
  plan.protocol === "connect"
    ? createConnectTransport({ ...options, useHttpGet: plan.useHttpGet ?? false })
    : plan.protocol === "grpcweb"
      ? createGrpcWebTransport(options)
      : plan.protocol === "grpc"
        ? createGrpcTransport(options)
        : null;
if (!transport) {
  console.error(`unknown protocol ${plan.protocol}`);
  process.exit(2);
}
const registry = registryFrom(readFileSync(plan.descriptorSet));
await runPlan(
  transport,
  registry,
  plan.calls,
  (event) => process.stdout.write(JSON.stringify(event) + "\n"),
  plan.timeoutMs,
);
// Open HTTP/2 sessions would keep the process alive for their idle timeout.
process.exit(0);
