// Runs a plan of calls through any Connect-ES transport and reports every event as a plain
// object: what tests/it/clients.rs asserts on. Shared by the Node.js client (connect_node.mjs)
// and the browser one (browser.mjs); it knows nothing of either runtime.
//
// A call: { id, service, method, kind?, request?, requests?, headers?, timeoutMs?, interleave?,
//           path?, pathService? }
//   kind       "unary" | "server" | "client" | "bidi"; by default the method's own kind
//   request    the request message as JSON (unary and server streams)
//   requests   the request messages as JSON (client and bidi streams)
//   interleave bidi only: send each request only after the answer to the previous one came
//   path       call this method name instead (same types), e.g. one the server does not know
//   pathService  and this service name instead
// Events: {call, headers} {call, message} {call, trailers} {call, error: {code, message,
// metadata}} and last {call, done: true} when the call ended without an error.

import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createFileRegistry, fromBinary, fromJson, toJson } from "@bufbuild/protobuf";
import { FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";

/** The registry of a serialized google.protobuf.FileDescriptorSet. */
export function registryFrom(bytes) {
  return createFileRegistry(fromBinary(FileDescriptorSetSchema, bytes));
}

/** The code's name as the Connect protocol writes it: `failed_precondition`. */
export function codeName(code) {
  const name = Code[code] ?? String(code);
  return name.replace(/[A-Z]/g, (c, i) => (i ? "_" : "") + c.toLowerCase());
}

function plainHeaders(headers) {
  const out = {};
  headers.forEach((value, key) => {
    out[key] = value;
  });
  return out;
}

const KINDS = {
  unary: "unary",
  server_streaming: "server",
  client_streaming: "client",
  bidi_streaming: "bidi",
};

/** Runs the calls one after another; `emit` gets every event as it happens. */
export async function runPlan(transport, registry, calls, emit, defaultTimeoutMs = 10000) {
  for (const call of calls) {
    await runCall(transport, registry, call, emit, defaultTimeoutMs);
  }
}

async function runCall(transport, registry, call, emit, defaultTimeoutMs) {
  const id = call.id;
  call.onStart?.();
  const service = registry.getService(call.service);
  if (!service) throw new Error(`no service ${call.service} in the descriptor set`);
  let method = service.methods.find((m) => m.name === call.method);
  if (!method) throw new Error(`no method ${call.method} in ${call.service}`);
  let target = service;
  if (call.path || call.pathService) {
    // The same types under another name: a method or service the server does not know.
    target = { ...service, typeName: call.pathService ?? service.typeName };
    method = { ...method, name: call.path ?? method.name, parent: target };
    target.methods = [method];
    target.method = { [method.localName]: method };
  }
  const client = createClient(target, transport);
  const fn = client[method.localName].bind(client);
  const kind = call.kind ?? KINDS[method.methodKind];
  const toMessage = (json) => fromJson(method.input, json ?? {}, { registry });
  const emitMessage = (message) =>
    emit({ call: id, message: toJson(method.output, message, { registry }) });
  const options = {
    timeoutMs: call.timeoutMs ?? defaultTimeoutMs,
    headers: call.headers ?? {},
    onHeader: (headers) => emit({ call: id, headers: plainHeaders(headers) }),
    onTrailer: (trailers) => emit({ call: id, trailers: plainHeaders(trailers) }),
  };
  let answered = 0;
  let wake = () => {};
  const requests = async function* () {
    const all = call.requests ?? [];
    for (let i = 0; i < all.length; i++) {
      yield toMessage(all[i]);
      if (call.interleave) {
        await new Promise((resolve) => {
          wake = () => answered > i && resolve();
          wake();
        });
      }
    }
  };
  try {
    if (kind === "unary") {
      emitMessage(await fn(toMessage(call.request), options));
    } else if (kind === "client") {
      emitMessage(await fn(requests(), options));
    } else {
      const input = kind === "server" ? toMessage(call.request) : requests();
      for await (const message of fn(input, options)) {
        emitMessage(message);
        answered++;
        wake();
      }
    }
    emit({ call: id, done: true });
  } catch (e) {
    const error = ConnectError.from(e);
    emit({
      call: id,
      error: {
        code: codeName(error.code),
        message: error.rawMessage,
        metadata: plainHeaders(error.metadata),
      },
    });
  }
}
