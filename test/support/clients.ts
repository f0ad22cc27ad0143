import { create, createRegistry, fromBinary, toBinary, type DescMessage, type DescService, type Message, type MessageInitShape, type MessageShape } from "@bufbuild/protobuf";
import { anyUnpack } from "@bufbuild/protobuf/wkt";
import * as grpc from "@grpc/grpc-js";
import { StatusSchema } from "../../gen/google/rpc/status_pb.js";
import { BadRequestSchema, ErrorInfoSchema, file_google_rpc_error_details } from "../../gen/google/rpc/error_details_pb.js";

export type GrpcClient<S extends DescService> = ReturnType<typeof grpcClient<S>>;

export type GrpcResult<T> = { response: T; error?: undefined } | { response?: undefined; error: grpc.ServiceError };

/**
 * A stock grpc-js client, built from the descriptors the way any Node service
 * would (generic client + protobuf-es serialisation): none of our server code.
 */
export function grpcClient<S extends DescService>(service: S, port: number) {
  const definition: grpc.ServiceDefinition = Object.fromEntries(
    service.methods.map((method) => [
      method.localName,
      {
        path: `/${service.typeName}/${method.name}`,
        requestStream: false,
        responseStream: false,
        requestSerialize: (message: Message) => Buffer.from(toBinary(method.input, message)),
        requestDeserialize: (bytes: Buffer) => fromBinary(method.input, bytes),
        responseSerialize: (message: Message) => Buffer.from(toBinary(method.output, message)),
        responseDeserialize: (bytes: Buffer) => fromBinary(method.output, bytes),
      },
    ]),
  );
  const Client = grpc.makeGenericClientConstructor(definition, service.typeName);
  const client = new Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());

  return {
    raw: client,
    call<K extends keyof S["method"] & string>(
      name: K,
      request: MessageInitShape<S["method"][K]["input"]>,
      /** A list sends the key once per value, as a proxy that appends its own entry does. */
      headers: Record<string, string | string[]> = {},
    ): Promise<GrpcResult<MessageShape<S["method"][K]["output"]>>> {
      const method = service.methods.find((m) => m.localName === name)!;
      const metadata = new grpc.Metadata();
      for (const [key, value] of Object.entries(headers)) for (const one of [value].flat()) metadata.add(key, one);
      return new Promise((resolve) => {
        (client as unknown as Record<string, Function>)[name]!(
          create(method.input, request as never),
          metadata,
          (error: grpc.ServiceError | null, response: never) => resolve(error ? { error } : { response }),
        );
      });
    },
    /** Sends arbitrary bytes as the request message. */
    callRaw(path: string, body: Buffer): Promise<grpc.ServiceError | null> {
      return new Promise((resolve) => {
        client.makeUnaryRequest(path, (b: Buffer) => b, (b: Buffer) => b, body, (error) => resolve(error));
      });
    },
    close: () => client.close(),
  };
}

const detailRegistry = createRegistry(file_google_rpc_error_details);

/** The google.rpc details of a gRPC error, unpacked. */
export function grpcErrorDetails(error: grpc.ServiceError): Message[] {
  const bin = error.metadata.get("grpc-status-details-bin")[0];
  if (!(bin instanceof Buffer)) return [];
  return fromBinary(StatusSchema, bin).details.map((any) => anyUnpack(any, detailRegistry)!);
}

export function detailOf<D extends DescMessage>(details: Message[], schema: D): MessageShape<D> | undefined {
  return details.find((d) => d.$typeName === schema.typeName) as MessageShape<D> | undefined;
}

/** The ErrorInfo reason of a gRPC error. */
export const reasonOf = (error: grpc.ServiceError) => detailOf(grpcErrorDetails(error), ErrorInfoSchema)?.reason;

/** The fields a gRPC error's BadRequest names. */
export const fieldsOf = (error: grpc.ServiceError) => detailOf(grpcErrorDetails(error), BadRequestSchema)?.fieldViolations.map((v) => v.field);

/** A Connect JSON call with fetch, as a browser would make it. */
export async function connectCall(port: number, path: string, body: unknown, headers: Record<string, string> = {}) {
  const response = await fetch(`http://127.0.0.1:${port}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
  const text = await response.text();
  let json: any;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: response.status, headers: response.headers, json, text };
}
