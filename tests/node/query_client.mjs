// A murmur.v1.QueryService client built from code that protoc-gen-es
// generated (through buf) from proto/murmur/v1/query.proto at test time:
// the generated module's path is the first argument. Runs the calls read as
// JSON from stdin and prints one JSON line per call, the response in the
// proto3 JSON mapping (toJson) or the error's Connect code and message.
//
//   node query_client.mjs GEN_MODULE BASE_URL PROTOCOL [TOKEN] < calls.json
//
// PROTOCOL: connect-json, connect-proto (HTTP/1.1), connect-json-h2,
// connect-proto-h2 (HTTP/2 cleartext), connect-get (HTTP GET, JSON) or grpc
// (HTTP/2 cleartext). calls.json: [{"method": "getWindow", "request": {...}}].
import { readFileSync } from "node:fs";
import { createClient, ConnectError, Code } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { fromJson, toJson } from "@bufbuild/protobuf";

const [genModule, baseUrl, protocol, token] = process.argv.slice(2);
const gen = await import(genModule);
const service = gen.QueryService;

function transportFor(p) {
  switch (p) {
  case "connect-json": return createConnectTransport({ baseUrl, httpVersion: "1.1" });
  case "connect-proto": return createConnectTransport({ baseUrl, httpVersion: "1.1", useBinaryFormat: true });
  case "connect-json-h2": return createConnectTransport({ baseUrl, httpVersion: "2" });
  case "connect-proto-h2": return createConnectTransport({ baseUrl, httpVersion: "2", useBinaryFormat: true });
  case "connect-get": return createConnectTransport({ baseUrl, httpVersion: "1.1", useHttpGet: true });
  case "grpc": return createGrpcTransport({ baseUrl, httpVersion: "2" });
  default: throw new Error("unknown protocol " + p);
  }
}

const client = createClient(service, transportFor(protocol));
const calls = JSON.parse(readFileSync(0, "utf8"));
const headers = token ? { authorization: "Bearer " + token } : {};
for (const call of calls) {
  const method = service.method[call.method];
  try {
    const req = fromJson(method.input, call.request);
    const res = await client[call.method](req, { headers, timeoutMs: 10000 });
    console.log(JSON.stringify({ ok: toJson(method.output, res) }));
  } catch (e) {
    const err = ConnectError.from(e);
    console.log(JSON.stringify({ error: { code: Code[err.code], message: err.rawMessage } }));
  }
}
