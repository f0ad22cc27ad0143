/** What is texted, as mail-templates.ts holds what is mailed. */

const minutes = (seconds: number) => Math.round(seconds / 60);

export const smsTexts = {
  signInCode: (code: string, ttlSeconds: number) => `Your Portcullis code is ${code}. It expires in ${minutes(ttlSeconds)} minutes.`,

  /** ChangePhoneNumber: the code that makes the number the account's. */
  addNumberCode: (productName: string, code: string, ttlSeconds: number) =>
    `Your ${productName} code is ${code}. It adds this number to your account and expires in ${minutes(ttlSeconds)} minutes.`,
};
