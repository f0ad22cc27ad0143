import { randomBytes } from "node:crypto";
import { expect } from "chai";
import { RefreshTokens } from "../../services/tokens/refresh-token.js";

describe("Refresh-token format", () => {
  const tokens = new RefreshTokens(randomBytes(32));
  const user = "0daa7c49-a0e0-4ca4-a37c-a106943a0979";

  it("names its user, and only tokens we minted name anyone", () => {
    const token = tokens.mint(user);
    expect(tokens.userOf(token)).to.equal(user);
    expect(new RefreshTokens(randomBytes(32)).userOf(token), "another server's key").to.equal(undefined);
    const tampered = token.slice(0, 10) + (token[10] === "A" ? "B" : "A") + token.slice(11);
    expect(tokens.userOf(tampered)).to.equal(undefined);
    expect(tokens.userOf("not a token")).to.equal(undefined);
  });

  it("derives the same successor from the same token, and a different one from another", () => {
    const token = tokens.mint(user);
    expect(tokens.successorOf(token, user)).to.equal(tokens.successorOf(token, user));
    expect(tokens.successorOf(token, user)).not.to.equal(tokens.successorOf(tokens.mint(user), user));
    expect(tokens.userOf(tokens.successorOf(token, user))).to.equal(user);
  });
});
