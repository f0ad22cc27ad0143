import { BlockList, isIP } from "node:net";

/**
 * Addresses and CIDR blocks from configuration (trusted proxies, addresses
 * that skip the captcha), parsed by this one reader so that what start-up
 * accepts is exactly what is matched later.
 */
export class IpRanges {
  private readonly list = new BlockList();

  /** Throws IpRangeError naming the first entry that is not an address or a CIDR block. */
  constructor(entries: readonly string[]) {
    for (const entry of entries) {
      const [address = "", bits, extra] = entry.split("/");
      const family = isIP(address);
      const maxBits = family === 6 ? 128 : 32;
      if (!family || extra !== undefined || (bits !== undefined && !(/^\d+$/.test(bits) && Number(bits) <= maxBits))) {
        throw new IpRangeError(entry);
      }
      const type = family === 6 ? "ipv6" : "ipv4";
      if (bits === undefined) this.list.addAddress(address, type);
      else this.list.addSubnet(address, Number(bits), type);
    }
  }

  /** Whether `ip` falls in one of the ranges; something that is not an address never does. */
  includes(ip: string): boolean {
    const family = isIP(ip);
    return family !== 0 && this.list.check(ip, family === 6 ? "ipv6" : "ipv4");
  }
}

export class IpRangeError extends Error {
  constructor(readonly entry: string) {
    super(`"${entry}" is not an IP address or CIDR`);
    this.name = "IpRangeError";
  }
}
