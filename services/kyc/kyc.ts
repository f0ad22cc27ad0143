import { createHmac, randomUUID } from "node:crypto";
import { fromJson, toJson, type JsonValue, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { audit } from "../audit/store.js";
import type { CallOrigin, Principal } from "../kernel/call.js";
import { Code, ConnectError, invalidArgument } from "../kernel/errors.js";
import type { Database, Sql } from "../platform/database.js";
import type { Envelope } from "../platform/envelope.js";
import type { RevocationFeed } from "../session/feed.js";
import { userStore } from "../users/store.js";
import { KycStatus } from "../../gen/portcullis/v1/common_pb.js";
import {
  BasicIdentitySchema,
  EnhancedDueDiligenceSchema,
  IdentityDocumentSchema,
  type BasicIdentity,
  type EnhancedDueDiligence,
  type IdentityDocument,
  type KycSubmissionSchema,
} from "../../gen/portcullis/v1/kyc_service_pb.js";
import { kycStore, type SubmissionRow } from "./store.js";
import { documentKey } from "./validation.js";

export const maxLevel = 3;

/** What was submitted, by level; sealed at rest as protobuf JSON. */
type Details =
  | { case: "basic"; value: BasicIdentity }
  | { case: "document"; value: IdentityDocument }
  | { case: "enhanced"; value: EnhancedDueDiligence };

const detailSchemas = { basic: BasicIdentitySchema, document: IdentityDocumentSchema, enhanced: EnhancedDueDiligenceSchema };
const levelOf = { basic: 1, document: 2, enhanced: 3 } as const;
/**
 * KYC submissions and reviews. Personal data is sealed (AES-256-GCM under the
 * key-encryption key) and opened only for reviewers, each opening audited;
 * document numbers are also kept as a keyed blind index, so one document on
 * two accounts is flagged to reviewers without storing the number in clear.
 */
export class Kyc {
  constructor(
    private readonly db: Database,
    private readonly envelope: Envelope,
    private readonly documentIndexKey: Buffer,
    private readonly feed: RevocationFeed,
    private readonly accessTokenLifetimeMs: number,
  ) {}

  async status(userId: string) {
    const user = await userStore.find(this.db, userId);
    if (!user) throw new ConnectError("this account no longer exists", Code.Unauthenticated);
    const pending = await kycStore.pendingOf(this.db, userId);
    return { level: user.kyc_level, status: KycStatus[user.kyc_status], pending: pending && this.message(pending, false) };
  }

  async submit(principal: Principal, details: Details, origin: CallOrigin) {
    const level = levelOf[details.case];
    const id = randomUUID();
    const sealed = this.envelope.seal(JSON.stringify(toJson(detailSchemas[details.case] as never, details.value as never)), `kyc_submission:${id}`);
    const documentIndex = details.case === "document" ? createHmac("sha256", this.documentIndexKey).update(documentKey(details.value)).digest() : null;
    const row = await this.db.transaction(async (tx) => {
      const user = await userStore.lockKyc(tx, principal.subject);
      if (!user) throw new ConnectError("this account no longer exists", Code.Unauthenticated);
      if (user.kyc_level >= level) throw new ConnectError(`the account is already at KYC level ${user.kyc_level}`, Code.FailedPrecondition);
      if (user.kyc_level < level - 1) {
        throw new ConnectError(`level ${level} needs level ${level - 1} first`, Code.FailedPrecondition);
      }
      if (await kycStore.pendingOf(tx, principal.subject)) throw new ConnectError("a submission is already waiting for review", Code.FailedPrecondition);
      const reused = documentIndex !== null && (await kycStore.documentUsedByOthers(tx, documentIndex, principal.subject));
      const flags = reused ? ["DOCUMENT_NUMBER_IN_USE"] : [];
      const inserted = await kycStore.insert(tx, { id, userId: principal.subject, level, sealedDetails: sealed, documentIndex, flags });
      await userStore.markKycPending(tx, principal.subject);
      await audit(tx, origin, { event: "kyc.submit", outcome: "success", userId: principal.subject, detail: { level, submission: id, flags: flags.join(",") } });
      return inserted;
    });
    return this.message(row, false);
  }

  async list(reviewer: Principal, status: KycStatus, pageSize: number, after: [Date, string] | undefined, origin: CallOrigin) {
    const rows = await kycStore.list(this.db, KycStatus[status], after, pageSize + 1);
    const page = rows.slice(0, pageSize);
    const last = rows.length > pageSize ? page.at(-1) : undefined;
    const submissions = await this.db.transaction(async (tx) => {
      const opened = [];
      for (const row of page) opened.push(await this.reviewed(tx, reviewer, row, origin));
      return opened;
    });
    return { page: submissions, next: last && ([last.create_time, last.id] as [Date, string]) };
  }

  /**
   * Approves or rejects a pending submission. Nobody reviews their own, and an
   * approval grants a level only to a user still at the level below it.
   */
  async decide(reviewer: Principal, submissionId: string, decision: { approve: true } | { approve: false; reason: string }, origin: CallOrigin) {
    return this.db.transaction(async (tx) => {
      // The user's row first, then the submission: the order lower() takes them in. A submission's user never changes.
      const owner = await kycStore.ownerOf(tx, submissionId);
      const user = owner === undefined ? undefined : await userStore.lockKyc(tx, owner);
      const row = await kycStore.lock(tx, submissionId);
      if (!row || !user) throw new ConnectError("no such submission", Code.NotFound);
      if (row.user_id === reviewer.subject) throw new ConnectError("reviewers cannot review their own submission", Code.PermissionDenied);
      if (row.status !== "PENDING") throw new ConnectError(`the submission is already ${row.status.toLowerCase()}`, Code.FailedPrecondition);
      if (decision.approve && user.kyc_level !== row.requested_level - 1) {
        throw new ConnectError(
          `the user is at KYC level ${user.kyc_level} now; this submission asks for ${row.requested_level} and can only be rejected`,
          Code.FailedPrecondition,
        );
      }
      const updated = await kycStore.decide(tx, submissionId, {
        approved: decision.approve,
        reviewerId: reviewer.subject,
        reason: decision.approve ? null : decision.reason,
      });
      const level = await userStore.recordKycDecision(tx, row.user_id, { approved: decision.approve, level: row.requested_level });
      await audit(tx, origin, {
        event: decision.approve ? "kyc.approve" : "kyc.reject",
        outcome: "success",
        userId: row.user_id,
        detail: { submission: submissionId, reviewer: reviewer.subject, level: row.requested_level },
      });
      if (decision.approve) {
        await audit(tx, origin, { event: "kyc.level_change", outcome: "success", userId: row.user_id, detail: { level, by: reviewer.subject } });
      }
      return { submission: await this.reviewed(tx, reviewer, updated, origin), level };
    });
  }

  /**
   * Lowers a user's level at once: tokens issued before now count at the new
   * level on every instance. A submission still waiting is rejected with it,
   * so no approval can hand the level straight back.
   */
  async lower(reviewer: Principal, userId: string, level: number, reason: string, origin: CallOrigin) {
    if (userId.toLowerCase() === reviewer.subject) throw new ConnectError("reviewers cannot change their own level", Code.PermissionDenied);
    const lowered = await this.db.transaction(async (tx) => {
      const user = await userStore.lockKyc(tx, userId);
      if (!user) throw new ConnectError("no such user", Code.NotFound);
      if (level >= user.kyc_level) {
        throw invalidArgument([{ field: "lower_level.kyc_level", description: `must be below the current level ${user.kyc_level}` }]);
      }
      const loweredAt = await userStore.lowerKyc(tx, userId, level);
      const rejected = await kycStore.rejectPending(tx, userId, reviewer.subject, `level lowered: ${reason}`);
      for (const id of rejected) {
        await audit(tx, origin, { event: "kyc.reject", outcome: "success", userId, detail: { submission: id, reviewer: reviewer.subject, reason: "level_lowered" } });
      }
      await audit(tx, origin, {
        event: "kyc.level_change",
        outcome: "success",
        userId,
        detail: { from: user.kyc_level, to: level, by: reviewer.subject, reason },
      });
      return loweredAt.getTime();
    });
    await this.feed.publish({ kind: "kyc_lowered", userId, level, sinceMs: lowered, untilMs: lowered + this.accessTokenLifetimeMs });
    return level;
  }

  /** A submission as reviewers see it; reading its personal data is audited against the person it is about. */
  private async reviewed(sql: Sql, reviewer: Principal, row: SubmissionRow, origin: CallOrigin) {
    await audit(sql, origin, { event: "kyc.read", outcome: "success", userId: row.user_id, detail: { reviewer: reviewer.subject, submission: row.id } });
    return this.message(row, true);
  }

  /** Review flags, like the details, are for reviewers: a flag would tell the submitter about another account. */
  private message(row: SubmissionRow, forReviewer: boolean): MessageInitShape<typeof KycSubmissionSchema> {
    return {
      submissionId: row.id,
      userId: row.user_id,
      requestedLevel: row.requested_level,
      status: KycStatus[row.status],
      createTime: timestampFromDate(row.create_time),
      reviewTime: row.review_time ? timestampFromDate(row.review_time) : undefined,
      reviewerId: row.reviewer_id ?? "",
      rejectionReason: row.rejection_reason ?? "",
      flags: forReviewer ? row.flags : [],
      details: forReviewer ? this.open(row) : { case: undefined },
    };
  }

  private open(row: SubmissionRow): Details {
    const json = JSON.parse(this.envelope.open(row.sealed_details, `kyc_submission:${row.id}`)) as JsonValue;
    const kind = (Object.keys(levelOf) as (keyof typeof levelOf)[]).find((k) => levelOf[k] === row.requested_level)!;
    return { case: kind, value: fromJson(detailSchemas[kind] as never, json) } as Details;
  }
}

