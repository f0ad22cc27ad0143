import { Migration } from "@mikro-orm/migrations";

export class Migration0001SigningKeys extends Migration {
  override up(): void {
    this.addSql(`
      create table signing_key (
        kid text primary key,
        algorithm text not null,
        public_jwk jsonb not null,
        sealed_private_jwk text not null,
        create_time timestamptz not null default now(),
        activate_time timestamptz not null,
        retire_time timestamptz null
      )`);
    this.addSql(`create index signing_key_activate_time_idx on signing_key (activate_time)`);
  }
}
