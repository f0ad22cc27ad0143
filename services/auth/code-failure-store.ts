import type { Database } from "../platform/database.js";

/** How long a wrong code counts against its user's budget (the setting ACCOUNT_CODE_FAILURE_BUDGET). */
const codeFailureWindowSeconds = 24 * 60 * 60;

const window = `make_interval(secs => ${codeFailureWindowSeconds})`;

/**
 * The code_failure table: wrong email-verification, phone-verification and
 * password-reset codes, per user, across codes. A new code does not reset
 * them, as a new sign-in code does not reset otp_failure: otherwise anyone
 * could ask for reset after reset and guess a few times at each. Statements
 * that check codes take these fragments, so the budget is read and spent in
 * the statement that counts the attempt.
 */
export const codeFailureSql = {
  /** The wrong codes of the user `userId` (an SQL expression) within the window: a range of the (user_id, fail_time) index. */
  recent: (userId: string) => `(select count(*)::int from code_failure where user_id = ${userId} and fail_time > now() - ${window})`,

  /**
   * The tries a new code of the user `userId` allows: `maxAttempts`, or fewer
   * if the user's budget of wrong codes (`failureBudget`) has fewer left (all SQL expressions).
   */
  allowedAttempts: (maxAttempts: string, failureBudget: string, userId: string) =>
    `greatest(0, least(${maxAttempts}, ${failureBudget} - ${codeFailureSql.recent(userId)}))`,

  /** Records a wrong code for each user id `select` yields. */
  record: (select: string) => `insert into code_failure (user_id) ${select}`,
};

export const codeFailureStore = {
  purgeOld(db: Database): Promise<number> {
    return db.deleteInPages("code_failure", "ctid", `fail_time <= now() - ${window}`);
  },
};
