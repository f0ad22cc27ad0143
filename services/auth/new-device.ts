import { audit } from "../audit/store.js";
import type { CallOrigin } from "../kernel/call.js";
import type { Background } from "../platform/background.js";
import { Batcher } from "../platform/batcher.js";
import type { Database } from "../platform/database.js";
import type { CommittedSignIn, SignInNotices } from "../session/sign-in-answers.js";
import type { DeviceInput } from "../session/sessions.js";
import { deviceStore } from "./device-store.js";
import { sendNotice, type Mailer } from "./mail.js";
import { mailTemplates, type MailSender } from "./mail-templates.js";

/**
 * Tells an account's owner of a sign-in from a device the account had not
 * seen, when it has seen others (a first sign-in is no news): by mail if it
 * has a confirmed address, and in its security history either way. Runs
 * after the sign-in has committed and off its path: the sign-in neither waits
 * for it nor fails with it.
 */
export class NewDeviceNotices implements SignInNotices {
  /** Every sign-in records its device: under load, one statement for all of a turn's sign-ins. */
  private readonly devices: Batcher<{ userId: string; deviceId: string }, { added: boolean; others: boolean }>;

  constructor(
    private readonly db: Database,
    private readonly mailer: Mailer,
    private readonly sender: MailSender,
    private readonly background: Background,
  ) {
    this.devices = new Batcher((signIns) => deviceStore.record(db, signIns), { name: "device_record", key: (signIn) => signIn.userId, maxBatch: 64 });
  }

  /** Starts the check for `signIn` and returns at once; a failure is logged, never thrown. */
  signedIn(signIn: CommittedSignIn, origin: CallOrigin): void {
    const when = new Date();
    // The call's context outlives the answer only as these three values.
    const { clientIp, userAgent, requestId } = origin;
    this.background.run("new-device check", () => this.check(signIn, when, { clientIp, userAgent, requestId }));
  }

  private async check({ user, sessionId, device, method }: CommittedSignIn, when: Date, origin: CallOrigin): Promise<void> {
    const seen = await this.devices.add({ userId: user.id, deviceId: device.deviceId });
    if (!seen.added || !seen.others) return;
    const notice = user.email && user.email_verify_time ? await this.mail(user.email, device, when, origin) : "none";
    await audit(this.db, origin, { event: "sign_in.new_device", outcome: "success", userId: user.id, sessionId, detail: { method, notice } });
  }

  /** Mails the notice; whether it went (undelivered, the sign-in from a new device is still worth its audit row). */
  private mail(to: string, device: DeviceInput, when: Date, origin: CallOrigin): Promise<"mailed" | "undelivered"> {
    const signIn = { when, deviceName: device.deviceName, ipAddress: origin.clientIp, userAgent: origin.userAgent };
    return sendNotice(this.mailer, mailTemplates.newDevice(this.sender, to, signIn));
  }
}
