import { isIP } from "node:net";
import { sharedDefaults } from "../platform/config.js";
import { peerAddress } from "../platform/incoming-call.js";
import { IpRanges } from "../platform/ip-ranges.js";

/**
 * The client's address: the peer, unless the peer is a trusted proxy, in which
 * case the right-most X-Forwarded-For entry that is not itself a trusted proxy.
 * Entries left of that could be written by anyone, so they are never used.
 */
export class ClientIpResolver {
  private readonly trusted: IpRanges;
  private readonly any: boolean;

  constructor(
    trustedProxies: readonly string[],
    private readonly ipv6Prefixes: Ipv6LimitPrefixes = sharedDefaults.ipv6LimitPrefixes,
  ) {
    this.trusted = new IpRanges(trustedProxies);
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
    if (!this.any || !forwardedFor || !this.trusted.includes(peerIp)) return peerIp;
    const hops = forwardedFor.split(",").map((hop) => peerAddress(hop.trim()));
    for (let i = hops.length - 1; i >= 0; i--) {
      const hop = hops[i]!;
      if (!isIP(hop)) return peerIp;
      if (!this.trusted.includes(hop)) return hop;
    }
    return hops[0] ?? peerIp;
  }

  /** What IP-keyed rate limits count (see ipLimitKey), an IPv6 client by its `client` prefix. */
  limitKey(ip: string): string {
    return ipLimitKey(ip, this.ipv6Prefixes.client);
  }

  /** For an IPv6 client, the wider prefix (/48 by default) that a looser limit counts; none for IPv4. */
  wideLimitKey(ip: string): string | undefined {
    return ip.includes(":") ? ipv6Prefix(ip, this.ipv6Prefixes.wide) : undefined;
  }
}

/** Prefix lengths by which IPv6 clients are counted: `client` for each rule, `wide` for its looser companion. */
export interface Ipv6LimitPrefixes {
  client: number;
  wide: number;
}

/**
 * What counts tries from one client (rate limits, password lockouts): an IPv4
 * address as it is, an IPv6 address by its prefix, since one customer's
 * network hands out addresses across a whole /64 and each would otherwise
 * start afresh.
 */
export function ipLimitKey(ip: string, ipv6PrefixBits: number): string {
  return ip.includes(":") ? ipv6Prefix(ip, ipv6PrefixBits) : ip;
}

/** "2001:db8:1:2:3:4:5:6", 64 → "2001:db8:1:2:0:0:0:0/64": the address with every bit past the prefix cleared. */
export function ipv6Prefix(ip: string, bits: number): string {
  const groups = ipv6Groups(ip);
  const kept = groups.map((group, i) => {
    const keep = Math.min(16, Math.max(0, bits - i * 16));
    return keep === 0 ? 0 : group & ((0xffff << (16 - keep)) & 0xffff);
  });
  return `${kept.map((group) => group.toString(16)).join(":")}/${bits}`;
}

/** The eight 16-bit groups of an IPv6 address, "::" expanded and a dotted IPv4 tail read as two groups. */
function ipv6Groups(ip: string): number[] {
  let address = ip.split("%")[0]!;
  const ipv4Tail = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(address);
  if (ipv4Tail) {
    const [a, b, c, d] = ipv4Tail.slice(1).map(Number) as [number, number, number, number];
    address = `${address.slice(0, ipv4Tail.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head = "", tail] = address.split("::");
  const headGroups = head ? head.split(":") : [];
  const tailGroups = tail ? tail.split(":") : [];
  const zeros = tail === undefined ? [] : new Array<string>(8 - headGroups.length - tailGroups.length).fill("0");
  return [...headGroups, ...zeros, ...tailGroups].map((group) => parseInt(group, 16));
}
