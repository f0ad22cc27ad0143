import { expect } from "chai";
import * as grpc from "@grpc/grpc-js";
import { AuthService } from "../../gen/portcullis/v1/auth_service_pb.js";
import { ErrorInfoSchema, RetryInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import { detailOf, grpcErrorDetails } from "../support/clients.js";
import { SmsInbox } from "../support/sms-inbox.js";
import { platformForSuite } from "../support/suite-platform.js";

/**
 * The budgets against SMS pumping, set small: 2 codes an hour per number
 * prefix (+44 and 6 national digits), 5 per country.
 */
describe("SMS pumping budgets", () => {
  const inbox = new SmsInbox();
  const platform = platformForSuite({
    inboxes: [inbox],
    env: {
      OTP_ALLOWED_COUNTRIES: "GB",
      OTP_PREFIX_HOURLY_BUDGET: "2",
      OTP_COUNTRY_HOURLY_BUDGET: "5",
      RATE_LIMITS: "otp_send_ip=1000/3600",
    },
  });
  const auth = platform.client(AuthService);

  /** The send refused by `rule`, with RetryInfo, and no SMS sent. */
  async function expectRefused(phoneNumber: string, rule: string) {
    const { error } = await auth.call("sendOtp", { phoneNumber });
    expect(error?.code, phoneNumber).to.equal(grpc.status.RESOURCE_EXHAUSTED);
    const details = grpcErrorDetails(error!);
    expect(detailOf(details, ErrorInfoSchema)?.metadata.rule).to.equal(rule);
    expect(Number(detailOf(details, RetryInfoSchema)?.retryDelay?.seconds)).to.be.greaterThan(0);
    expect(inbox.countFor(phoneNumber), "no SMS").to.equal(0);
  }

  it("refuses a third code to numbers sharing a prefix, while another prefix still gets codes", async () => {
    for (const phoneNumber of ["+447912100001", "+447912100002"]) {
      expect((await auth.call("sendOtp", { phoneNumber })).error, phoneNumber).to.equal(undefined);
      expect(inbox.countFor(phoneNumber)).to.equal(1);
    }
    await expectRefused("+447912100003", "otp_send_prefix");
    expect((await auth.call("sendOtp", { phoneNumber: "+447913100001" })).error, "another prefix").to.equal(undefined);
    expect(inbox.countFor("+447913100001")).to.equal(1);
  });

  it("refuses codes past the country's budget, which the refused prefix did not spend", async () => {
    // 3 of the country's 5 were sent above; the refused one is not counted.
    for (const phoneNumber of ["+447914100001", "+447915100001"]) {
      expect((await auth.call("sendOtp", { phoneNumber })).error, phoneNumber).to.equal(undefined);
    }
    await expectRefused("+447916100001", "otp_send_country");
  });
});
