import { BlockList, isIP } from "node:net";
import { peerAddress } from "../platform/incoming-call.js";

/**
 * The client's address: the peer, unless the peer is a trusted proxy, in which
 * case the right-most X-Forwarded-For entry that is not itself a trusted proxy.
 * Entries left of that could be written by anyone, so they are never used.
 */
export class ClientIpResolver {
  private readonly trusted = new BlockList();
  private readonly any: boolean;

  constructor(trustedProxies: readonly string[]) {
    for (const entry of trustedProxies) {
      const [address, bits] = entry.split("/") as [string, string | undefined];
      const family = isIP(address) === 6 ? "ipv6" : "ipv4";
      if (bits === undefined) this.trusted.addAddress(address, family);
      else this.trusted.addSubnet(address, Number(bits), family);
    }
    this.any = trustedProxies.length > 0;
  }

  /** Peers repeat for the life of a connection; parsing each once is enough. */
  private readonly peers = new Map<string, string>();

  resolve(peer: string, forwardedFor: string | undefined): string {
    let peerIp = this.peers.get(peer);
    if (peerIp === undefined) {
      if (this.peers.size >= 10_000) this.peers.clear();
      peerIp = peerAddress(peer);
      this.peers.set(peer, peerIp);
    }
    if (!this.any || !forwardedFor || !this.isTrusted(peerIp)) return peerIp;
    const hops = forwardedFor.split(",").map((hop) => peerAddress(hop.trim()));
    for (let i = hops.length - 1; i >= 0; i--) {
      const hop = hops[i]!;
      if (!isIP(hop)) return peerIp;
      if (!this.isTrusted(hop)) return hop;
    }
    return hops[0] ?? peerIp;
  }

  private isTrusted(ip: string): boolean {
    const family = isIP(ip);
    return family !== 0 && this.trusted.check(ip, family === 6 ? "ipv6" : "ipv4");
  }
}
