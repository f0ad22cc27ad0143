import type { Sql } from "../platform/database.js";

/** A service account as the store returns it. */
export interface ServiceAccountRow {
  name: string;
  audiences: string[];
  permissions: string[];
  create_time: Date;
  disable_time: Date | null;
}

const accountColumns = "name, audiences, permissions, create_time, disable_time";

/**
 * The service_account, service_credential and client_assertion_use tables:
 * every statement on them is here.
 */
export const serviceAccountStore = {
  async find(sql: Sql, name: string): Promise<ServiceAccountRow | undefined> {
    const [row] = await sql.query<ServiceAccountRow>(`select ${accountColumns} from service_account where name = $1`, [name]);
    return row;
  },
};
