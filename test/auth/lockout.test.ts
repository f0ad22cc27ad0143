import { expect } from "chai";
import * as grpc from "@grpc/grpc-js";
import { AuthService } from "../../gen/portcullis/v1/auth_service_pb.js";
import { DeviceType } from "../../gen/portcullis/v1/common_pb.js";
import { ErrorInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import { detailOf, grpcErrorDetails } from "../support/clients.js";
import { MailInbox } from "../support/mail-inbox.js";
import { registerVerified } from "../support/sign-in.js";
import { platformForSuite } from "../support/suite-platform.js";

const device = { deviceId: "device-1", deviceType: DeviceType.IOS, deviceName: "Test phone" };
const password = "a passphrase for lockouts";
const wrongPassword = "not the passphrase at all";
let accounts = 0;

/**
 * Password lockouts with 3 wrong passwords per source, 12 across all sources,
 * and locks of 30 s doubling up to 60 s; every call comes through a trusted proxy
 * that names the client in X-Forwarded-For.
 */
describe("Password lockout", () => {
  const mail = new MailInbox();
  const platform = platformForSuite({
    inboxes: [mail],
    env: {
      TRUSTED_PROXIES: "127.0.0.1",
      PASSWORD_LOCKOUT_THRESHOLD: "3",
      // Long enough that no lock runs out while a slow machine hashes the next passwords; tests end locks themselves.
      PASSWORD_LOCKOUT_BASE_SECONDS: "30",
      PASSWORD_LOCKOUT_MAX_SECONDS: "60",
      RATE_LIMITS: "login_ip=1000/900,login_email=1000/900,register_ip=1000/3600",
    },
  });
  const auth = platform.client(AuthService);

  async function register(): Promise<{ email: string; userId: string }> {
    const email = `lockout.${accounts++}@example.com`;
    const signedIn = await registerVerified(platform.running.grpcPort!, mail, email, password, { headers: { "x-forwarded-for": "192.0.2.1" } });
    return { email, userId: signedIn!.user!.userId };
  }

  const login = (email: string, from: string, pass = password) => auth.call("login", { email, password: pass, device }, { "x-forwarded-for": from });

  /** Seconds left of the longest lock on the account, for any source or all of them; 0 when none. */
  async function longestLockSeconds(userId: string): Promise<number> {
    const { rows } = await platform.db.query(
      `select coalesce(extract(epoch from max(locked_until) - now()), 0)::float as seconds from (
         select locked_until from app_user where id = $1 union all select locked_until from password_failure where user_id = $1) locks`,
      [userId],
    );
    return rows[0].seconds;
  }

  /** Ends every lock on the account now, as the passing of time would. */
  async function expireLocks(userId: string): Promise<void> {
    await platform.db.query("update app_user set locked_until = now() where id = $1", [userId]);
    await platform.db.query("update password_failure set locked_until = now() where user_id = $1", [userId]);
  }

  it("never locks for longer than the maximum, however many lockouts came before", async () => {
    const { email, userId } = await register();
    for (let round = 1; round <= 8; round++) {
      for (let i = 0; i < 3; i++) await login(email, "203.0.113.10", wrongPassword);
      const refused = await login(email, "203.0.113.10");
      expect(refused.error?.code, `round ${round}: locked`).to.equal(grpc.status.UNAUTHENTICATED);
      // Doubling without a cap would lock the 8th time for 30 × 2^7 s.
      expect(await longestLockSeconds(userId), `round ${round}`).to.be.within(25, 60);
      await expireLocks(userId);
    }
    const { rows } = await platform.db.query("select lockouts from password_failure where user_id = $1 and source = '203.0.113.10'", [userId]);
    expect(rows).to.deep.equal([{ lockouts: 8 }]);
    expect((await login(email, "203.0.113.10")).error, "the lock ended").to.equal(undefined);
  });

  it("locks out the source of the wrong passwords, not the owner signing in from elsewhere", async () => {
    const { email } = await register();
    for (let i = 0; i < 3; i++) await login(email, "203.0.113.66", wrongPassword);
    for (let i = 0; i < 3; i++) await login(email, "2001:db8:66:1::1", wrongPassword);

    const attacker = await login(email, "203.0.113.66");
    const attackerNextDoor = await login(email, "2001:db8:66:1:ffff::2");
    const unknownEmail = await login(`nobody.${accounts++}@example.com`, "203.0.113.66");
    for (const refused of [attacker, attackerNextDoor]) {
      expect(refused.error?.code, "locked, even with the right password").to.equal(grpc.status.UNAUTHENTICATED);
      expect(detailOf(grpcErrorDetails(refused.error!), ErrorInfoSchema)?.reason).to.equal("INVALID_CREDENTIALS");
      expect(refused.error?.details, "answered as an unknown email").to.equal(unknownEmail.error?.details);
    }

    expect((await login(email, "198.51.100.20")).error, "the owner's IPv4 address").to.equal(undefined);
    expect((await login(email, "2001:db8:77:1::1")).error, "the owner's IPv6 network").to.equal(undefined);
    expect((await login(email, "203.0.113.66")).error?.code, "the attacker's source stays locked").to.equal(grpc.status.UNAUTHENTICATED);
  });

  it("locks the account everywhere once wrong passwords from many sources reach the account-wide ceiling", async () => {
    const { email, userId } = await register();
    for (let i = 1; i <= 11; i++) await login(email, `198.18.0.${i}`, wrongPassword);
    expect((await login(email, "198.18.1.1")).error, "11 spread failures: not yet").to.equal(undefined);

    for (let i = 1; i <= 12; i++) await login(email, `198.18.2.${i}`, wrongPassword);
    const refused = await login(email, "198.18.3.1");
    expect(refused.error?.code, "a fresh source is refused too").to.equal(grpc.status.UNAUTHENTICATED);
    const { rows } = await platform.db.query(
      "select detail->>'scope' as scope from audit_event where user_id = $1 and event = 'account.locked'",
      [userId],
    );
    expect(rows).to.deep.equal([{ scope: "account" }]);
  });
});
