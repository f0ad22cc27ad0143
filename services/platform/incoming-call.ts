import { randomUUID } from "node:crypto";
import { isIP } from "node:net";
import type { DescMethod, Message } from "@bufbuild/protobuf";

/** A call as either door (grpc-js or the Connect gateway) hands it on: no transport types leak past here. */
export interface IncomingCall {
  method: DescMethod;
  /** The door the call came in by; a gateway forwarding to a gRPC instance makes it a grpc call there. */
  door: "grpc" | "gateway";
  /** Request header or gRPC metadata value, by lower-case name. */
  header(name: string): string | undefined;
  /** The transport peer, for example "127.0.0.1:50312". */
  peer: string;
  /** Aborted when the caller goes away, so work done on its behalf (a forwarded call) stops too. */
  signal?: AbortSignal;
}

/** Runs one call through the chain and its handler, or forwards it to the instance that does. */
export type Dispatch = (incoming: IncomingCall, request: Message) => Promise<unknown>;

/** "ipv4:1.2.3.4:5", "[::1]:5", "::ffff:1.2.3.4" → the bare address. */
export function peerAddress(address: string): string {
  let ip = address.startsWith("ipv4:") || address.startsWith("ipv6:") ? address.slice(5) : address;
  const bracketed = /^\[([^\]]+)\](?::\d+)?$/.exec(ip);
  if (bracketed) ip = bracketed[1]!;
  else if (!isIP(ip) && /^[\d.]+:\d+$/.test(ip)) ip = ip.slice(0, ip.lastIndexOf(":"));
  if (ip.startsWith("::ffff:") && isIP(ip.slice(7)) === 4) ip = ip.slice(7);
  return ip;
}

const requestIdPattern = /^[\w.:-]{1,128}$/;

/** The caller's X-Request-Id when it is a plain token of at most 128 characters (it goes into logs), else a new one. */
export function requestIdOf(header: string | undefined): string {
  return header && requestIdPattern.test(header) ? header : randomUUID();
}
