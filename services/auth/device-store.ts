import type { Sql } from "../platform/database.js";

/** The user_device table: the devices each user has signed in from. Every statement on it is here. */
export const deviceStore = {
  /**
   * Records a sign-in's device: whether it is new to the user, and whether the
   * user had signed in from another one before. Two first sign-ins from two
   * devices at once may each see the other, or neither: a notice too many or
   * too few, never a sign-in refused.
   */
  async record(sql: Sql, userId: string, deviceId: string): Promise<{ added: boolean; others: boolean }> {
    const [row] = await sql.query<{ added: boolean; others: boolean }>(
      `with added as (
         insert into user_device (user_id, device_id) values ($1, $2) on conflict do nothing returning 1)
       select exists (select 1 from added) as added,
              exists (select 1 from user_device where user_id = $1 and device_id <> $2) as others`,
      [userId, deviceId],
    );
    return row!;
  },
};
