// A Connect-ES client in the browser (@connectrpc/connect-web), bundled by esbuild at test
// time. The page calls `window.runPlan(plan)`, which resolves to the list of events (see
// plan.mjs). Plan: { baseUrl, protocol: "connect" | "grpcweb", codec: "json" | "binary",
// descriptorSet: URL of a FileDescriptorSet, timeoutMs?, calls: [...] }

import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-web";
import { registryFrom, runPlan } from "./plan.mjs";

window.runPlan = async (plan) => {
  const response = await fetch(plan.descriptorSet);
  const registry = registryFrom(new Uint8Array(await response.arrayBuffer()));
  const options = {
    baseUrl: plan.baseUrl,
    useBinaryFormat: (plan.codec ?? "binary") === "binary",
  };
  const transport =
    plan.protocol === "connect" ? createConnectTransport(options) : createGrpcWebTransport(options);
  const events = [];
  await runPlan(transport, registry, plan.calls, (event) => events.push(event), plan.timeoutMs);
  return events;
};
document.documentElement.dataset.ready = "true";
