import { expect } from "chai";
import * as grpc from "@grpc/grpc-js";
import type { UnaryHandler } from "../../services/guard/guard.js";
import { AuthService } from "../../gen/portcullis/v1/auth_service_pb.js";
import { KycService, SourceOfFunds } from "../../gen/portcullis/v1/kyc_service_pb.js";
import { TokenService } from "../../gen/portcullis/v1/token_service_pb.js";
import { BadRequestSchema, ErrorInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import { detailOf, grpcClient, grpcErrorDetails } from "../support/clients.js";
import { serveBehindGuard, type GuardedService } from "../support/guarded-service.js";
import { mintUserToken } from "../support/platform.js";
import { createServiceAccount, serviceToken } from "../support/service-accounts.js";
import { bearer, newPhone, signInByPhone } from "../support/sign-in.js";
import { SmsInbox } from "../support/sms-inbox.js";
import { platformForSuite } from "../support/suite-platform.js";

/**
 * A small downstream service protected by the exported guard: it serves
 * KycService.SubmitEnhancedKyc, whose contract requires KYC level 2, with a
 * handler of its own, and trusts nothing but Portcullis's JWKS and feed.
 * Users reach it through a checkout service, which exchanges their tokens
 * for ones bound to it.
 */
describe("The guard for other services", () => {
  const inbox = new SmsInbox();
  let downstream: GuardedService;
  let handled = 0;
  /** Which service acted for the user in each call served. */
  const actors: (string | undefined)[] = [];
  /** Checkout's service token, for calling TokenService. */
  let checkout: string;

  // Registered before the platform's own after hook, so the downstream service closes first, as Portcullis still runs.
  after(async () => {
    await downstream?.close();
  });
  const platform = platformForSuite({ inboxes: [inbox] });

  before(async function () {
    // The admin tool starts as its own process, a few seconds each time.
    this.timeout(90_000);
    const checkoutSecret = await createServiceAccount(platform.stores, "checkout", ["portcullis", "kyc-desk"]);
    checkout = await serviceToken(platform.running.grpcPort!, "checkout", checkoutSecret, "portcullis");

    const submitEnhanced: UnaryHandler = async (_request, call) => {
      handled++;
      actors.push(call.principal?.actor);
      return {};
    };
    downstream = await serveBehindGuard(platform.running, platform.stores, new Map([[KycService.method.submitEnhancedKyc, submitEnhanced]]), { name: "kyc-desk" });
  });

  /** A request that satisfies the contract's field rules, which the guard checks as Portcullis does. */
  const enhanced = { dueDiligence: { proofOfAddressRef: "uploads/proof.pdf", sourceOfFunds: SourceOfFunds.EMPLOYMENT } };

  it("checks the contract's field rules for the downstream service too", async () => {
    const client = grpcClient(KycService, downstream.port);
    const levelTwo = await mintUserToken(platform.running, { kycLevel: 2, audience: "kyc-desk" });
    const refused = await client.call("submitEnhancedKyc", {}, bearer(levelTwo.token));
    expect(refused.error?.code).to.equal(grpc.status.INVALID_ARGUMENT);
    expect(detailOf(grpcErrorDetails(refused.error!), BadRequestSchema)?.fieldViolations.map((v) => v.field)).to.deep.equal(["due_diligence"]);
    expect(handled, "the handler never ran").to.equal(0);
    client.close();
  });

  it("refuses a level-1 token with KYC_LEVEL_REQUIRED and serves a level-2 token", async () => {
    const client = grpcClient(KycService, downstream.port);
    const levelOne = await mintUserToken(platform.running, { kycLevel: 1, audience: "kyc-desk" });
    const refused = await client.call("submitEnhancedKyc", enhanced, bearer(levelOne.token));
    expect(refused.error?.code).to.equal(grpc.status.PERMISSION_DENIED);
    expect(detailOf(grpcErrorDetails(refused.error!), ErrorInfoSchema)?.metadata).to.deep.equal({ required_level: "2", current_level: "1" });

    const levelTwo = await mintUserToken(platform.running, { kycLevel: 2, audience: "kyc-desk" });
    const served = await client.call("submitEnhancedKyc", enhanced, bearer(levelTwo.token));
    expect(served.error).to.equal(undefined);
    expect(handled).to.equal(1);
    expect((await client.call("submitEnhancedKyc", enhanced)).error?.code, "no token").to.equal(grpc.status.UNAUTHENTICATED);
    client.close();
  });

  it("serves a token checkout exchanged for it, refuses the user's own, and hears of a sign-out in Portcullis", async () => {
    const signedIn = (await signInByPhone(platform.running.grpcPort!, inbox, newPhone()))!;
    await platform.db.query("update app_user set kyc_level = 2 where id = $1", [signedIn.user!.userId]);
    const auth = grpcClient(AuthService, platform.running.grpcPort!);
    const own = (await auth.call("refreshToken", { refreshToken: signedIn.tokens!.refreshToken })).response!.tokens!.accessToken;
    const tokens = grpcClient(TokenService, platform.running.grpcPort!);
    const exchanged = await tokens.call("exchangeToken", { subjectToken: own, audience: "kyc-desk" }, bearer(checkout));
    const token = exchanged.response!.accessToken;
    const client = grpcClient(KycService, downstream.port);
    expect((await client.call("submitEnhancedKyc", enhanced, bearer(token))).error).to.equal(undefined);
    expect(actors.at(-1), "the handler knows who acts for the user").to.equal("checkout");
    const ownRefused = (await client.call("submitEnhancedKyc", enhanced, bearer(own))).error;
    expect(detailOf(grpcErrorDetails(ownRefused!), ErrorInfoSchema)?.reason, "a token for Portcullis").to.equal("TOKEN_INVALID");

    await auth.call("logout", {}, bearer(own));
    const deadline = Date.now() + 1000;
    let error: grpc.ServiceError | undefined;
    while (!error && Date.now() < deadline) error = (await client.call("submitEnhancedKyc", enhanced, bearer(token))).error;
    expect(detailOf(grpcErrorDetails(error!), ErrorInfoSchema)?.reason).to.equal("SESSION_REVOKED");
    auth.close();
    tokens.close();
    client.close();
  });
});
