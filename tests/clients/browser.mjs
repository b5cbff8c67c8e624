// A Connect-ES client in the browser (@connectrpc/connect-web), bundled by esbuild at test
// time. The page calls `window.runPlan(plan)`, which resolves to the list of events (see
// plan.mjs), with a {call, fetch: {method, url}} event for each request the transport made.
// Plan: { baseUrl, protocol: "connect" | "grpcweb", codec: "json" | "binary",
// descriptorSet: URL of a FileDescriptorSet, useHttpGet?, timeoutMs?, calls: [...] }

import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-web";
import { registryFrom, runPlan } from "./plan.mjs";

window.runPlan = async (plan) => {
  const response = await fetch(plan.descriptorSet);
  const registry = registryFrom(new Uint8Array(await response.arrayBuffer()));
  const events = [];
  // The calls run one at a time: each request belongs to the last call that started.
  let current = null;
  const options = {
    baseUrl: plan.baseUrl,
    useBinaryFormat: (plan.codec ?? "binary") === "binary",
    fetch: (input, init) => {
      events.push({ call: current, fetch: { method: init?.method ?? "GET", url: String(input) } });
      return fetch(input, init);
    },
  };
  const transport =
    plan.protocol === "connect"
      ? createConnectTransport({ ...options, useHttpGet: plan.useHttpGet ?? false })
      : createGrpcWebTransport(options);
  const calls = plan.calls.map((call) => ({ ...call, onStart: () => (current = call.id) }));
  await runPlan(transport, registry, calls, (event) => events.push(event), plan.timeoutMs);
  return events;
};
document.documentElement.dataset.ready = "true";
