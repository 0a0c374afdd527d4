// Checks the `X-Tasker-Signature` header of a webhook Tasker sent: `sha256=<hex HMAC-SHA256 of
// the raw body>` with the service's TASKER_WEBHOOK_SECRET. WebCrypto (global in Node 20,
// browsers, Deno, Bun and edge runtimes) compares in constant time.

/** The header's name, as Node lower-cases it. */
export const SIGNATURE_HEADER = "x-tasker-signature";

/**
 * True when `signature` (the header's value) is the HMAC-SHA256 of `body` under `secret`.
 * Pass the body exactly as received (the raw bytes or text, not re-serialized JSON).
 */
export async function verifySignature(
  secret: string,
  body: string | Uint8Array,
  signature: string | null | undefined,
): Promise<boolean> {
  const hex = signature?.trim().match(/^sha256=([0-9a-fA-F]{64})$/)?.[1];
  // WebCrypto refuses an empty HMAC key; an empty secret verifies nothing.
  if (hex === undefined || secret === "") return false;
  const expected = new Uint8Array(32);
  for (let i = 0; i < 32; i++) expected[i] = Number.parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  const encoder = new TextEncoder();
  const key = await crypto.subtle.importKey(
    "raw",
    encoder.encode(secret),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["verify"],
  );
  // A copy, so a Node Buffer (possibly over shared memory) is a plain ArrayBuffer view.
  const data = typeof body === "string" ? encoder.encode(body) : new Uint8Array(body);
  return crypto.subtle.verify("HMAC", key, expected, data);
}
