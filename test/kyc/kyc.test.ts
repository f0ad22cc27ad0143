import { expect } from "chai";
import * as grpc from "@grpc/grpc-js";
import type { Running } from "../../services/app/servers.js";
import { AuthService } from "../../gen/portcullis/v1/auth_service_pb.js";
import { DocumentType, KycService } from "../../gen/portcullis/v1/kyc_service_pb.js";
import { KycStatus } from "../../gen/portcullis/v1/common_pb.js";
import { BadRequestSchema, ErrorInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import { connectCall, detailOf, grpcClient, grpcErrorDetails } from "../support/clients.js";
import { runAdmin } from "../support/platform.js";
import { bearer, newPhone, signInByPhone } from "../support/sign-in.js";
import { SmsInbox } from "../support/sms-inbox.js";
import { platformForSuite } from "../support/suite-platform.js";


const basicIdentity = {
  legalName: "Ana Maria Pereira",
  birthDate: "1990-05-17",
  nationality: "PT",
  address: { addressLines: ["1 Rua Augusta"], locality: "Lisboa", postalCode: "1100-053", regionCode: "PT" },
};
const passport = (number: string) => ({
  documentType: DocumentType.PASSPORT,
  documentNumber: number,
  issuingCountry: "PT",
  expireDate: "2031-01-01",
  frontImageRef: "uploads/front.jpg",
  selfieImageRef: "uploads/selfie.jpg",
});

describe("KYC levels", () => {
  const inbox = new SmsInbox();
  const platform = platformForSuite({
    inboxes: [inbox],
    instances: 2,
    env: { RATE_LIMITS: "otp_send_ip=1000/3600,otp_verify_ip=1000/3600,refresh_ip=1000/60,kyc_submit_user=100/86400" },
  });
  let a: Running;
  let b: Running;
  let reviewerToken: string;

  /** The admin tool, run as a new user would, against the same database. */
  const admin = (...args: string[]) =>
    runAdmin(platform.stores, ...args);

  before(async () => {
    [a, b] = platform.instances as [Running, Running];
    const reviewerPhone = newPhone();
    await signInByPhone(a.grpcPort!, inbox, reviewerPhone, "Reviewer");
    const { stdout } = await admin("grant", reviewerPhone, "kyc.review");
    expect(stdout).to.match(/granted kyc\.review/);
    expect((await admin("list", reviewerPhone)).stdout).to.match(/permissions: kyc\.review/);
    reviewerToken = (await signInByPhone(a.grpcPort!, inbox, reviewerPhone, "Reviewer"))!.tokens!.accessToken;
  });

  it("takes a user from level 0 to 1 by review, lets the next level through, and a downgrade is refused at once — over gRPC", async () => {
    const kycA = grpcClient(KycService, a.grpcPort!);
    const kycB = grpcClient(KycService, b.grpcPort!);
    const authB = grpcClient(AuthService, b.grpcPort!);
    const user = (await signInByPhone(a.grpcPort!, inbox, newPhone()))!;
    const token = user.tokens!.accessToken;

    const before = await kycA.call("submitDocumentKyc", { document: passport("P1234567") }, bearer(token));
    expect(before.error?.code).to.equal(grpc.status.PERMISSION_DENIED);
    expect(detailOf(grpcErrorDetails(before.error!), ErrorInfoSchema)?.metadata).to.deep.equal({ required_level: "1", current_level: "0" });

    const submitted = await kycA.call("submitBasicKyc", { identity: basicIdentity }, bearer(token));
    expect(submitted.response?.submission?.status).to.equal(KycStatus.PENDING);
    const status = await kycA.call("getKycStatus", {}, bearer(token));
    expect(status.response).to.deep.include({ kycLevel: 0, kycStatus: KycStatus.PENDING, nextLevel: 1 });

    const list = await kycB.call("listKycSubmissions", {}, bearer(reviewerToken));
    const mine = list.response!.submissions.find((s) => s.userId === user.user!.userId)!;
    expect(mine.details.case).to.equal("basic");
    expect(mine.details.value).to.deep.include({ legalName: "Ana Maria Pereira" });
    const approved = await kycB.call("reviewKycSubmission", { decision: { case: "approveSubmissionId", value: mine.submissionId } }, bearer(reviewerToken));
    expect(approved.response?.kycLevel).to.equal(1);

    const refreshed = await authB.call("refreshToken", { refreshToken: user.tokens!.refreshToken });
    const levelOne = refreshed.response!.tokens!.accessToken;
    expect(JSON.parse(Buffer.from(levelOne.split(".")[1]!, "base64url").toString()).kyc_lvl).to.equal(1);
    const document = await kycA.call("submitDocumentKyc", { document: passport("P1234567") }, bearer(levelOne));
    expect(document.error).to.equal(undefined);

    const lowered = await kycB.call(
      "reviewKycSubmission",
      { decision: { case: "lowerLevel", value: { userId: user.user!.userId, kycLevel: 0, reason: "document withdrawn" } } },
      bearer(reviewerToken),
    );
    expect(lowered.response?.kycLevel).to.equal(0);
    await kycA.call("reviewKycSubmission", { decision: { case: "reject", value: { submissionId: document.response!.submission!.submissionId, reason: "level lowered" } } }, bearer(reviewerToken));
    const refused = await kycA.call("submitDocumentKyc", { document: passport("P7654321") }, bearer(levelOne));
    expect(refused.error?.code, "the very next call, on the other instance").to.equal(grpc.status.PERMISSION_DENIED);
    expect(detailOf(grpcErrorDetails(refused.error!), ErrorInfoSchema)?.metadata).to.deep.equal({ required_level: "1", current_level: "0" });

    const audit = await platform.db.query("select event from audit_event where user_id = $1 and event like 'kyc.%' order by id", [user.user!.userId]);
    expect(audit.rows.map((r) => r.event)).to.include.members(["kyc.submit", "kyc.approve", "kyc.level_change", "kyc.reject"]);
    [kycA, kycB, authB].forEach((c) => c.close());
  });

  it("does the same through the gateway", async () => {
    const user = (await signInByPhone(a.grpcPort!, inbox, newPhone()))!;
    const call = (port: number, method: string, body: unknown, token: string) =>
      connectCall(port, `/portcullis.v1.KycService/${method}`, body, bearer(token));
    const document = { documentType: "DOCUMENT_TYPE_PASSPORT", documentNumber: "X9988776", issuingCountry: "PT", expireDate: "2031-01-01", frontImageRef: "f", selfieImageRef: "s" };

    const before = await call(a.httpPort!, "SubmitDocumentKyc", { document }, user.tokens!.accessToken);
    expect(before.status).to.equal(403);
    expect(before.json.details[0].debug).to.deep.include({ reason: "KYC_LEVEL_REQUIRED" });
    const submitted = await call(a.httpPort!, "SubmitBasicKyc", { identity: basicIdentity }, user.tokens!.accessToken);
    expect(submitted.status).to.equal(200);
    const approve = await call(b.httpPort!, "ReviewKycSubmission", { approveSubmissionId: submitted.json.submission.submissionId }, reviewerToken);
    expect(approve.json.kycLevel).to.equal(1);
    const refreshed = await connectCall(b.httpPort!, "/portcullis.v1.AuthService/RefreshToken", { refreshToken: user.tokens!.refreshToken });
    const levelOne = refreshed.json.tokens.accessToken;
    expect((await call(a.httpPort!, "GetKycStatus", {}, levelOne)).json).to.deep.include({ kycLevel: 1, nextLevel: 2 });
    const lower = await call(b.httpPort!, "ReviewKycSubmission", { lowerLevel: { userId: user.user!.userId, kycLevel: 0, reason: "fraud check" } }, reviewerToken);
    expect(lower.status).to.equal(200);
    const refused = await call(a.httpPort!, "SubmitDocumentKyc", { document }, levelOne);
    expect(refused.status).to.equal(403);
  });

  it("keeps personal data sealed at rest", async () => {
    const rows = await platform.db.query("select sealed_details::text || coalesce(encode(document_index, 'hex'), '') as stored from kyc_submission");
    expect(rows.rows.length).to.be.greaterThan(0);
    for (const { stored } of rows.rows) {
      for (const clear of ["Ana Maria Pereira", "1990-05-17", "Rua Augusta", "P1234567", "X9988776"]) expect(stored).not.to.contain(clear);
    }
  });

  it("flags a document number already used by another account to the reviewer, never to the submitter", async () => {
    const kyc = grpcClient(KycService, a.grpcPort!);
    const submitLevelTwo = async (number: string) => {
      const user = (await signInByPhone(a.grpcPort!, inbox, newPhone()))!;
      const submitted = await kyc.call("submitBasicKyc", { identity: basicIdentity }, bearer(user.tokens!.accessToken));
      await kyc.call("reviewKycSubmission", { decision: { case: "approveSubmissionId", value: submitted.response!.submission!.submissionId } }, bearer(reviewerToken));
      const token = (await grpcClient(AuthService, a.grpcPort!).call("refreshToken", { refreshToken: user.tokens!.refreshToken })).response!.tokens!.accessToken;
      const submission = (await kyc.call("submitDocumentKyc", { document: passport(number) }, bearer(token))).response!.submission!;
      const status = (await kyc.call("getKycStatus", {}, bearer(token))).response!;
      return { submission, pending: status.pendingSubmission! };
    };
    const first = await submitLevelTwo("D-555 000");
    const second = await submitLevelTwo("d555000");
    expect(second.submission.flags, "the submitter's answer").to.deep.equal([]);
    expect(second.pending.flags, "the submitter's status").to.deep.equal([]);
    const list = (await kyc.call("listKycSubmissions", { pageSize: 100 }, bearer(reviewerToken))).response!.submissions;
    const flagsOf = (id: string) => list.find((s) => s.submissionId === id)!.flags;
    expect(flagsOf(first.submission.submissionId)).to.deep.equal([]);
    expect(flagsOf(second.submission.submissionId), "same document, other spelling").to.deep.equal(["DOCUMENT_NUMBER_IN_USE"]);
    kyc.close();
  });

  it("audits every opening of personal data against the person it is about, naming the reviewer", async () => {
    const kyc = grpcClient(KycService, a.grpcPort!);
    const user = (await signInByPhone(a.grpcPort!, inbox, newPhone()))!;
    const submitted = (await kyc.call("submitBasicKyc", { identity: basicIdentity }, bearer(user.tokens!.accessToken))).response!.submission!;
    const reviewer = JSON.parse(Buffer.from(reviewerToken.split(".")[1]!, "base64url").toString()).sub as string;
    const reads = async (submissionIds: string[]) =>
      (
        await platform.db.query(
          "select user_id, detail from audit_event where event = 'kyc.read' and outcome = 'success' and detail->>'submission' = any($1) order by id",
          [submissionIds],
        )
      ).rows;
    expect(await reads([submitted.submissionId]), "submitting opens nothing").to.deep.equal([]);

    const listed = (await kyc.call("listKycSubmissions", { pageSize: 100 }, bearer(reviewerToken))).response!.submissions;
    expect(listed.map((s) => s.submissionId)).to.include(submitted.submissionId);
    const ids = listed.map((s) => s.submissionId);
    const before = await reads(ids);
    await kyc.call("listKycSubmissions", { pageSize: 100 }, bearer(reviewerToken));
    const added = (await reads(ids)).slice(before.length);
    expect(added, "one row per submission opened").to.deep.equal(
      listed.map((s) => ({ user_id: s.userId, detail: { reviewer, submission: s.submissionId } })),
    );

    const rejected = await kyc.call("reviewKycSubmission", { decision: { case: "reject", value: { submissionId: submitted.submissionId, reason: "blurred" } } }, bearer(reviewerToken));
    expect(rejected.response?.submission?.details.case, "the answer carries the opened details").to.equal("basic");
    const afterReview = await reads([submitted.submissionId]);
    expect(afterReview).to.have.length(3);
    expect(afterReview.at(-1)).to.deep.equal({ user_id: user.user!.userId, detail: { reviewer, submission: submitted.submissionId } });
    kyc.close();
  });

  it("validates submissions field by field, and allows one pending submission", async () => {
    const kyc = grpcClient(KycService, a.grpcPort!);
    const user = (await signInByPhone(a.grpcPort!, inbox, newPhone()))!;
    const { error } = await kyc.call("submitBasicKyc", { identity: { ...basicIdentity, birthDate: "2020-02-30", nationality: "XX" } }, bearer(user.tokens!.accessToken));
    expect(error?.code).to.equal(grpc.status.INVALID_ARGUMENT);
    expect(error?.details).to.match(/identity\.birth_date/).and.match(/identity\.nationality/);
    await kyc.call("submitBasicKyc", { identity: basicIdentity }, bearer(user.tokens!.accessToken));
    const second = await kyc.call("submitBasicKyc", { identity: basicIdentity }, bearer(user.tokens!.accessToken));
    expect(second.error?.code).to.equal(grpc.status.FAILED_PRECONDITION);
    kyc.close();
  });

  it("does not let reviewers review their own submission or lower their own level", async () => {
    const kyc = grpcClient(KycService, a.grpcPort!);
    const own = await kyc.call("submitBasicKyc", { identity: basicIdentity }, bearer(reviewerToken));
    const review = await kyc.call("reviewKycSubmission", { decision: { case: "approveSubmissionId", value: own.response!.submission!.submissionId } }, bearer(reviewerToken));
    expect(review.error?.code).to.equal(grpc.status.PERMISSION_DENIED);
    kyc.close();
  });

  /** A user approved at level 1, with a level-1 access token. */
  async function levelOneUser(kyc: ReturnType<typeof grpcClient<typeof KycService>>) {
    const user = (await signInByPhone(a.grpcPort!, inbox, newPhone()))!;
    const submitted = await kyc.call("submitBasicKyc", { identity: basicIdentity }, bearer(user.tokens!.accessToken));
    const approved = await kyc.call("reviewKycSubmission", { decision: { case: "approveSubmissionId", value: submitted.response!.submission!.submissionId } }, bearer(reviewerToken));
    expect(approved.response?.kycLevel).to.equal(1);
    const auth = grpcClient(AuthService, a.grpcPort!);
    const refreshed = await auth.call("refreshToken", { refreshToken: user.tokens!.refreshToken });
    auth.close();
    return { userId: user.user!.userId, token: refreshed.response!.tokens!.accessToken };
  }

  it("rejects the pending submission when a reviewer lowers the level, so it cannot be approved afterwards", async () => {
    const kyc = grpcClient(KycService, a.grpcPort!);
    const user = await levelOneUser(kyc);
    const pending = (await kyc.call("submitDocumentKyc", { document: passport("L1000001") }, bearer(user.token))).response!.submission!;
    expect(pending.status).to.equal(KycStatus.PENDING);

    const lowered = await kyc.call(
      "reviewKycSubmission",
      { decision: { case: "lowerLevel", value: { userId: user.userId, kycLevel: 0, reason: "document withdrawn" } } },
      bearer(reviewerToken),
    );
    expect(lowered.response?.kycLevel).to.equal(0);
    const rejected = (await kyc.call("listKycSubmissions", { status: KycStatus.REJECTED, pageSize: 100 }, bearer(reviewerToken))).response!.submissions.find(
      (s) => s.submissionId === pending.submissionId,
    );
    expect(rejected?.status).to.equal(KycStatus.REJECTED);
    expect(rejected?.rejectionReason).to.match(/level lowered/).and.contain("document withdrawn");

    const approve = await kyc.call("reviewKycSubmission", { decision: { case: "approveSubmissionId", value: pending.submissionId } }, bearer(reviewerToken));
    expect(approve.error?.code).to.equal(grpc.status.FAILED_PRECONDITION);
    const stored = await platform.db.query("select kyc_level from app_user where id = $1", [user.userId]);
    expect(stored.rows[0].kyc_level, "the level stays lowered").to.equal(0);
    kyc.close();
  });

  it("refuses to approve a submission whose user is no longer at the level below it, and still lets it be rejected", async () => {
    const kyc = grpcClient(KycService, a.grpcPort!);
    const user = await levelOneUser(kyc);
    const pending = (await kyc.call("submitDocumentKyc", { document: passport("L2000002") }, bearer(user.token))).response!.submission!;
    // A lowering that raced the submission and left it pending.
    await platform.db.query("update app_user set kyc_level = 0 where id = $1", [user.userId]);

    const approve = await kyc.call("reviewKycSubmission", { decision: { case: "approveSubmissionId", value: pending.submissionId } }, bearer(reviewerToken));
    expect(approve.error?.code).to.equal(grpc.status.FAILED_PRECONDITION);
    const stored = await platform.db.query("select kyc_level from app_user where id = $1", [user.userId]);
    expect(stored.rows[0].kyc_level, "no level 2 for a level-0 user").to.equal(0);
    const reject = await kyc.call(
      "reviewKycSubmission",
      { decision: { case: "reject", value: { submissionId: pending.submissionId, reason: "level changed under review" } } },
      bearer(reviewerToken),
    );
    expect(reject.response?.submission?.status).to.equal(KycStatus.REJECTED);
    kyc.close();
  });

  it("answers a page token holding a date Postgres cannot store with INVALID_ARGUMENT naming page_token, and keeps serving", async () => {
    const kyc = grpcClient(KycService, a.grpcPort!);
    for (const time of ["-271821-04-20T00:00:00.000Z", "+275760-09-13T00:00:00.000Z"]) {
      const pageToken = Buffer.from(`${time}|00000000-0000-0000-0000-000000000000`).toString("base64url");
      const { error } = await kyc.call("listKycSubmissions", { pageToken }, bearer(reviewerToken));
      expect(error?.code, time).to.equal(grpc.status.INVALID_ARGUMENT);
      expect(detailOf(grpcErrorDetails(error!), BadRequestSchema)?.fieldViolations.map((v) => v.field), time).to.deep.equal(["page_token"]);
    }
    expect((await kyc.call("listKycSubmissions", {}, bearer(reviewerToken))).error).to.equal(undefined);
    kyc.close();
  });
});
