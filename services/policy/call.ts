import type { DescMessage, DescMethod, Message, MessageInitShape, MessageShape } from "@bufbuild/protobuf";
import type { Principal } from "../tokens/access-token.js";

/** A call as either door hands it to the chain: no transport types leak past here. */
export interface IncomingCall {
  method: DescMethod;
  /** Request header or gRPC metadata value, by lower-case name. */
  header(name: string): string | undefined;
  /** The transport peer, for example "127.0.0.1:50312". */
  peer: string;
}

/** What a handler knows about the call it serves, filled in by the chain. */
export interface CallContext {
  readonly path: string;
  readonly requestId: string;
  readonly clientIp: string;
  /** At most 512 characters: what sessions and the audit log keep of it. */
  readonly userAgent: string;
  /** Set for user and service methods once the token has been verified. */
  readonly principal?: Principal;
}

export type UnaryHandler<I extends DescMessage = DescMessage, O extends DescMessage = DescMessage> = (
  request: MessageShape<I>,
  call: CallContext,
) => Promise<MessageInitShape<O>>;

/** A service implementation written against the generated types, transport-free. */
export type ServiceHandlers<S extends { method: Record<string, DescMethod> }> = {
  [K in keyof S["method"]]: UnaryHandler<S["method"][K]["input"], S["method"][K]["output"]>;
};

/** Runs one call through the chain and its handler, or forwards it to the instance that does. */
export type Dispatch = (incoming: IncomingCall, request: Message) => Promise<unknown>;
