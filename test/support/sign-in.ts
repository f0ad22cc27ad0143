import { AuthService } from "../../gen/portcullis/v1/auth_service_pb.js";
import { DeviceType } from "../../gen/portcullis/v1/common_pb.js";
import { grpcClient } from "./clients.js";
import type { MailInbox } from "./mail-inbox.js";
import type { SmsInbox } from "./sms-inbox.js";

let counter = 0;
/** A fresh valid mobile number, so one test's limits never touch another's. */
export const newPhone = () => `+4479111${String(50000 + counter++).padStart(5, "0")}`;

export const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

/** Signs a phone in through one instance's gRPC door, reading the code from the SMS inbox. */
export async function signInByPhone(grpcPort: number, inbox: SmsInbox, phone: string, deviceName = "Phone") {
  const auth = grpcClient(AuthService, grpcPort);
  try {
    const sent = await auth.call("sendOtp", { phoneNumber: phone });
    if (sent.error) throw sent.error;
    const verified = await auth.call("verifyOtp", {
      phoneNumber: phone,
      code: inbox.codeFor(phone),
      device: { deviceId: `${deviceName}-${counter++}`, deviceType: DeviceType.ANDROID, deviceName },
    });
    if (verified.error) throw verified.error;
    return verified.response;
  } finally {
    auth.close();
  }
}

/**
 * An email account as its owner makes one through one instance's gRPC door:
 * Register, the code from the mail, VerifyEmail, then Login; returns Login's answer.
 */
export async function registerVerified(
  grpcPort: number,
  inbox: MailInbox,
  email: string,
  password: string,
  options: { displayName?: string; headers?: Record<string, string> } = {},
) {
  const auth = grpcClient(AuthService, grpcPort);
  const device = { deviceId: `Browser-${counter++}`, deviceType: DeviceType.WEB, deviceName: "Browser" };
  const headers = options.headers ?? {};
  try {
    const registered = await auth.call("register", { email, password, displayName: options.displayName ?? "", device }, headers);
    if (registered.error) throw registered.error;
    const address = email.trim().toLowerCase();
    const verified = await auth.call("verifyEmail", { email: address, code: inbox.codeFor(address) }, headers);
    if (verified.error) throw verified.error;
    const login = await auth.call("login", { email, password, device }, headers);
    if (login.error) throw login.error;
    return login.response;
  } finally {
    auth.close();
  }
}
