import {
  create,
  fromBinary,
  toBinary,
  type DescFile,
  type DescMethod,
  type DescService,
  type Message,
} from "@bufbuild/protobuf";
import { anyPack, AnySchema, FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { ConnectError } from "@connectrpc/connect";
import * as grpc from "@grpc/grpc-js";
import { ReflectionService } from "@grpc/reflection";
import { HealthImplementation } from "grpc-health-check";
import { StatusSchema } from "../../gen/google/rpc/status_pb.js";
import { file_google_rpc_error_details } from "../../gen/google/rpc/error_details_pb.js";
import { file_grpc_health_v1_health } from "../../gen/grpc/health/v1/health_pb.js";
import { file_grpc_reflection_v1_reflection } from "../../gen/grpc/reflection/v1/reflection_pb.js";
import { file_grpc_reflection_v1alpha_reflection } from "../../gen/grpc/reflection/v1alpha/reflection_pb.js";
import type { Dispatch, IncomingCall } from "./incoming-call.js";

/** What grpc-js hands the deserializer-less path when the bytes are not a valid request. */
const malformed = Symbol("malformed request");

/** How grpc-js 1.14 words the calls it cannot read: a grpc-timeout it cannot parse, a payload its grpc-encoding cannot inflate. */
const unreadableCall = /^(?:Invalid grpc-timeout value |Failed to decompress message$)/;

/**
 * grpc-js answers INTERNAL to a call it cannot read, though the bytes are the caller's. It reads the timeout and
 * inflates the payload in its base call, below every interceptor and before any deserializer or handler, and sends
 * the status from there, so the one place to recode it is the base call's sendStatus. It is recoded once, on the
 * base call's class, when the first call arrives: wrapping each call (a ServerInterceptingCall, or a sendStatus of
 * its own) measured 25–60 µs a call.
 */
const recodedCalls = new WeakSet<object>();
const unreadableAsInvalidArgument: grpc.ServerInterceptor = (_method, call) => {
  const baseCall = Object.getPrototypeOf(call) as Pick<grpc.ServerInterceptingCallInterface, "sendStatus">;
  if (!recodedCalls.has(baseCall)) {
    recodedCalls.add(baseCall);
    const sendStatus = baseCall.sendStatus;
    baseCall.sendStatus = function (this: unknown, status) {
      const unreadable = status.code === grpc.status.INTERNAL && unreadableCall.test(status.details ?? "");
      sendStatus.call(this, unreadable ? { ...status, code: grpc.status.INVALID_ARGUMENT } : status);
    };
  }
  return call as grpc.ServerInterceptingCall;
};

export interface GrpcServerOptions {
  services: readonly DescService[];
  dispatch: Dispatch;
  maxRequestBytes: number;
}

/**
 * Serves the services over gRPC with grpc-js, with handlers built from the
 * protobuf-es descriptors, plus health checking and server reflection so stock
 * clients (grpcurl, buf curl, grpcio) need nothing from us.
 */
export function createGrpcServer(options: GrpcServerOptions): { server: grpc.Server; health: HealthImplementation } {
  const server = new grpc.Server({
    "grpc.max_receive_message_length": options.maxRequestBytes,
    "grpc.keepalive_permit_without_calls": 1,
    interceptors: [unreadableAsInvalidArgument],
  });
  for (const service of options.services) {
    const [definition, implementation] = bindService(service, options.dispatch);
    server.addService(definition, implementation);
  }
  const health = new HealthImplementation({ "": "NOT_SERVING" });
  health.addToServer(server);
  new ReflectionService(reflectionPackage(options.services)).addToServer(server);
  return { server, health };
}

function bindService(service: DescService, dispatch: Dispatch): [grpc.ServiceDefinition, grpc.UntypedServiceImplementation] {
  const definition: Record<string, grpc.MethodDefinition<any, any>> = {};
  const implementation: grpc.UntypedServiceImplementation = {};
  for (const method of service.methods) {
    if (method.methodKind !== "unary") throw new Error(`${method.name}: only unary methods are served`);
    definition[method.localName] = {
      path: `/${service.typeName}/${method.name}`,
      requestStream: false,
      responseStream: false,
      originalName: method.localName,
      requestSerialize: (message: Message) => Buffer.from(toBinary(method.input, message)),
      // grpc-js answers INTERNAL when this throws; a bad request is the client's fault.
      requestDeserialize: (bytes: Buffer) => {
        try {
          return fromBinary(method.input, bytes);
        } catch {
          return malformed;
        }
      },
      responseSerialize: (message: Message) => Buffer.from(toBinary(method.output, create(method.output, message))),
      responseDeserialize: (bytes: Buffer) => fromBinary(method.output, bytes),
    };
    implementation[method.localName] = unaryHandler(method, dispatch);
  }
  return [definition as grpc.ServiceDefinition, implementation];
}

function unaryHandler(method: DescMethod, dispatch: Dispatch): grpc.handleUnaryCall<Message | typeof malformed, unknown> {
  return (call, callback) => {
    if (call.request === malformed) {
      callback({ code: grpc.status.INVALID_ARGUMENT, details: `the request is not a valid ${method.input.typeName}` });
      return;
    }
    const metadata = call.metadata;
    const incoming: IncomingCall = {
      method,
      door: "grpc",
      peer: call.getPeer(),
      header(name) {
        const value = metadata.get(name)[0];
        return typeof value === "string" ? value : undefined;
      },
    };
    dispatch(incoming, call.request).then(
      (response) => callback(null, response),
      (error: unknown) => {
        // An error that cannot be encoded must still answer the call, or the client waits for ever.
        let status: Partial<grpc.StatusObject>;
        try {
          status = toServiceError(error);
        } catch {
          status = { code: grpc.status.INTERNAL, details: "internal error" };
        }
        callback(status);
      },
    );
  };
}

/** A ConnectError as gRPC status, message, and google.rpc.Status details. */
function toServiceError(error: unknown): Partial<grpc.StatusObject> {
  const connectError = ConnectError.from(error);
  const metadata = new grpc.Metadata();
  for (const [name, value] of connectError.metadata) metadata.set(name, value);
  if (connectError.details.length > 0) {
    const status = create(StatusSchema, {
      code: connectError.code,
      message: connectError.rawMessage,
      details: connectError.details.map((detail) =>
        "desc" in detail
          ? anyPack(detail.desc, create(detail.desc, detail.value))
          : create(AnySchema, { typeUrl: `type.googleapis.com/${detail.type}`, value: detail.value }),
      ),
    });
    metadata.set("grpc-status-details-bin", Buffer.from(toBinary(StatusSchema, status)));
  }
  return { code: connectError.code as number as grpc.status, details: connectError.rawMessage, metadata };
}

/** The shape @grpc/reflection reads: serialized FileDescriptorProtos of every file it should know. */
function reflectionPackage(services: readonly DescService[]) {
  const files = new Map<string, DescFile>();
  const add = (file: DescFile) => {
    if (files.has(file.proto.name)) return;
    files.set(file.proto.name, file);
    file.dependencies.forEach(add);
  };
  services.forEach((service) => add(service.file));
  // Error details too, so reflective clients can decode google.rpc details.
  [
    file_google_rpc_error_details,
    file_grpc_health_v1_health,
    file_grpc_reflection_v1_reflection,
    file_grpc_reflection_v1alpha_reflection,
  ].forEach(add);
  const fileDescriptorProtos = [...files.values()].map((file) => Buffer.from(toBinary(FileDescriptorProtoSchema, file.proto)));
  return { all: { format: "Protocol Buffer 3 DescriptorProto", fileDescriptorProtos } } as never;
}
