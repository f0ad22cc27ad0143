/**
 * Whether a host names this machine, so traffic to it never crosses a
 * network: the one place plain http or SMTP without TLS is acceptable.
 * Takes a URL's hostname too, whose IPv6 form is in brackets.
 */
export function isLoopbackHost(host: string): boolean {
  const bare = host.startsWith("[") && host.endsWith("]") ? host.slice(1, -1) : host;
  return bare === "localhost" || bare === "::1" || /^127\.\d+\.\d+\.\d+$/.test(bare);
}
