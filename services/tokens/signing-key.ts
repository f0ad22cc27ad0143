import { defineEntity, p, type InferEntity } from "@mikro-orm/core";
import type { JWK } from "jose";

/**
 * One signing key of the key ring. It is published from creation, signs from
 * `activateTime` until its successor activates (`retireTime`), and stays
 * published until every token it signed has expired.
 */
export const SigningKey = defineEntity({
  name: "SigningKey",
  tableName: "signing_key",
  properties: {
    kid: p.string().primary(),
    algorithm: p.string(),
    publicJwk: p.json<JWK>(),
    sealedPrivateJwk: p.text(),
    createTime: p.datetime(),
    activateTime: p.datetime(),
    retireTime: p.datetime().nullable(),
  },
});

export type SigningKey = InferEntity<typeof SigningKey>;
