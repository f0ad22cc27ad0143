import type { Sql } from "../platform/database.js";

export interface SubmissionRow {
  id: string;
  user_id: string;
  requested_level: number;
  status: "PENDING" | "APPROVED" | "REJECTED";
  sealed_details: string;
  flags: string[];
  create_time: Date;
  review_time: Date | null;
  reviewer_id: string | null;
  rejection_reason: string | null;
}

const submissionColumns = "id, user_id, requested_level, status, sealed_details, flags, create_time, review_time, reviewer_id, rejection_reason";

/** The kyc_submission table: what users submitted (sealed), its blind document index, and reviewers' decisions. */
export const kycStore = {
  async pendingOf(sql: Sql, userId: string): Promise<SubmissionRow | undefined> {
    const [row] = await sql.query<SubmissionRow>(`select ${submissionColumns} from kyc_submission where user_id = $1 and status = 'PENDING'`, [userId]);
    return row;
  },

  /** Whether another user submitted a document with this blind index. */
  async documentUsedByOthers(sql: Sql, documentIndex: Buffer, userId: string): Promise<boolean> {
    const rows = await sql.query("select 1 from kyc_submission where document_index = $1 and user_id <> $2 limit 1", [documentIndex, userId]);
    return rows.length > 0;
  },

  async insert(
    tx: Sql,
    submission: { id: string; userId: string; level: number; sealedDetails: string; documentIndex: Buffer | null; flags: string[] },
  ): Promise<SubmissionRow> {
    const [row] = await tx.query<SubmissionRow>(
      `insert into kyc_submission (id, user_id, requested_level, status, sealed_details, document_index, flags)
       values ($1, $2, $3, 'PENDING', $4, $5, $6) returning ${submissionColumns}`,
      [submission.id, submission.userId, submission.level, submission.sealedDetails, submission.documentIndex, submission.flags],
    );
    return row!;
  },

  /** Submissions in a status, oldest first, from after (time, id) on. */
  list(sql: Sql, status: string, after: [Date, string] | undefined, limit: number): Promise<SubmissionRow[]> {
    return sql.query<SubmissionRow>(
      `select ${submissionColumns} from kyc_submission
       where status = $1 and ($2::timestamptz is null or (create_time, id) > ($2, $3::uuid))
       order by create_time, id limit $4`,
      [status, after?.[0] ?? null, after?.[1] ?? null, limit],
    );
  },

  async ownerOf(sql: Sql, id: string): Promise<string | undefined> {
    const [row] = await sql.query<{ user_id: string }>("select user_id from kyc_submission where id = $1", [id]);
    return row?.user_id;
  },

  async lock(tx: Sql, id: string): Promise<SubmissionRow | undefined> {
    const [row] = await tx.query<SubmissionRow>(`select ${submissionColumns} from kyc_submission where id = $1 for update`, [id]);
    return row;
  },

  async decide(tx: Sql, id: string, decision: { approved: boolean; reviewerId: string; reason: string | null }): Promise<SubmissionRow> {
    const [row] = await tx.query<SubmissionRow>(
      `update kyc_submission set status = $1, review_time = now(), reviewer_id = $2, rejection_reason = $3 where id = $4 returning ${submissionColumns}`,
      [decision.approved ? "APPROVED" : "REJECTED", decision.reviewerId, decision.reason, id],
    );
    return row!;
  },

  /** Rejects the user's waiting submission, if any; returns the ids rejected. */
  async rejectPending(tx: Sql, userId: string, reviewerId: string, reason: string): Promise<string[]> {
    const rows = await tx.query<{ id: string }>(
      `update kyc_submission set status = 'REJECTED', review_time = now(), reviewer_id = $1, rejection_reason = $2
       where user_id = $3 and status = 'PENDING' returning id`,
      [reviewerId, reason, userId],
    );
    return rows.map((row) => row.id);
  },
};
