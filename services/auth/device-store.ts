import type { Sql } from "../platform/database.js";

/** The user_device table: the devices each user has signed in from. Every statement on it is here. */
export const deviceStore = {
  /**
   * Records a sign-in's device: whether it is new to the user, and whether the
   * user had signed in from another one before. Two first sign-ins from two
   * devices at once may each see the other, or neither: a notice too many or
   * too few, never a sign-in refused.
   */
  record(sql: Sql, signIns: { userId: string; deviceId: string }[]): Promise<{ added: boolean; others: boolean }[]> {
    return sql.query<{ added: boolean; others: boolean }>(
      `with input as (
         select * from unnest($1::uuid[], $2::text[]) with ordinality as i(user_id, device_id, position)),
       added as (
         insert into user_device (user_id, device_id) select user_id, device_id from input order by user_id, device_id
         on conflict do nothing returning user_id, device_id)
       select exists (select 1 from added a where a.user_id = i.user_id and a.device_id = i.device_id) as added,
              exists (select 1 from user_device d where d.user_id = i.user_id and d.device_id <> i.device_id) as others
       from input i order by i.position`,
      [signIns.map((signIn) => signIn.userId), signIns.map((signIn) => signIn.deviceId)],
    );
  },
};
