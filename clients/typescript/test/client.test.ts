// The client against a real `tasker serve` (started by scripts/typescript-client.sh, which sets
// TASKER_URL, TASKER_TOKEN and TASKER_WEBHOOK_SECRET), with a webhook receiver on 127.0.0.1.

import assert from "node:assert/strict";
import { once } from "node:events";
import { createServer, type IncomingMessage } from "node:http";
import type { AddressInfo } from "node:net";
import { test } from "node:test";

import { createTasker, SIGNATURE_HEADER, TaskerError, verifySignature, type Task } from "../src/index.js";

function env(name: string): string {
  const value = process.env[name];
  assert.ok(value, `${name} must be set (scripts/typescript-client.sh sets it)`);
  return value;
}

const url = env("TASKER_URL");
const token = env("TASKER_TOKEN");
const secret = env("TASKER_WEBHOOK_SECRET");
const tasker = createTasker({ url, token });
/** Unique per run, so reruns against one database do not collide. */
const run = `${process.pid}-${Date.now()}`;

async function rejection(promise: Promise<unknown>): Promise<TaskerError> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof TaskerError, `expected a TaskerError, got ${String(error)}`);
    return error;
  }
  assert.fail("the call was expected to fail");
}

test("the seed's call creates a task whose string payload is kept as is", async () => {
  const payload = JSON.stringify({ url: "http://localhost:9/unused", body: { example: "payload" } });
  const task = await tasker.create("sendWebhook", payload, { delaySeconds: 3600 });
  assert.equal(task.type, "sendWebhook");
  assert.equal(task.payload, payload);
  assert.equal(task.status, "pending");
  const read = await tasker.get(task.id);
  assert.equal(read.id, task.id);
  assert.equal(read.waiting?.reason, "scheduled");
  assert.equal(read.waiting?.until, task.scheduledAt);
  assert.equal(read.waiting?.message, `scheduled for ${task.scheduledAt}`);
});

test("options reach the API: scheduledAt as a Date, maxAttempts, idempotencyKey", async () => {
  const at = new Date(Date.UTC(2099, 0, 2, 3, 4, 5, 678));
  const first = await tasker.create("sendWebhook", { url: "http://localhost:9/x", body: 1 }, {
    scheduledAt: at,
    maxAttempts: 7,
    idempotencyKey: `key-${run}`,
  });
  assert.equal(first.scheduledAt, "2099-01-02T03:04:05.678Z");
  assert.equal(first.maxAttempts, 7);
  assert.equal(first.payload, '{"url":"http://localhost:9/x","body":1}');
  const again = await tasker.create("sendWebhook", { other: true }, { idempotencyKey: `key-${run}` });
  assert.equal(again.id, first.id);
});

test("keys reach the API, and a task held for its rate key says so in waiting", async () => {
  // scripts/typescript-client.sh limits keys starting with ts-rate- to one start an hour.
  const rateKey = `ts-rate-${run}`;
  const options = { rateKey, concurrencyKey: `ts-c-${run}` };
  const first = await tasker.create("sendWebhook", { url: "http://localhost:9/k", body: 1 }, options);
  assert.equal(first.rateKey, rateKey);
  assert.equal(first.concurrencyKey, `ts-c-${run}`);
  const second = await tasker.create("sendWebhook", { url: "http://localhost:9/k", body: 2 }, options);
  for (let tries = 0; ; tries++) {
    const read = await tasker.get(second.id);
    if (read.waiting?.reason === "keyRate") {
      assert.equal(read.waiting.key, rateKey);
      assert.ok(read.waiting.message.startsWith(`rate key "${rateKey}" is at its rate`), read.waiting.message);
      break;
    }
    assert.ok(tries < 100, `still ${JSON.stringify(read.waiting)} after 10 s`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
});

test("a reference holds one active task; cancelWithReference frees it and retry brings it back", async () => {
  const referenceUid = `booking-${run}`;
  const first = await tasker.create("sendWebhook", "{}", { delaySeconds: 600, referenceUid });
  const duplicate = await rejection(tasker.create("sendWebhook", "{}", { referenceUid }));
  assert.equal(duplicate.code, "duplicate");
  assert.equal(duplicate.status, 409);
  assert.equal(duplicate.existingId, first.id);

  const cancelled = await tasker.cancelWithReference(referenceUid, "sendWebhook");
  assert.deepEqual(cancelled, { cancelled: 1, ids: [first.id] });
  assert.equal((await tasker.get(first.id)).status, "cancelled");
  const conflict = await rejection(tasker.cancel(first.id));
  assert.equal(conflict.code, "conflict");

  const retried = await tasker.retry(first.id);
  assert.equal(retried.status, "pending");
});

test("list walks every page, newest first", async () => {
  const referenceUid = `page-${run}`;
  const created: Task[] = [];
  for (let i = 0; i < 5; i++) {
    const task = await tasker.create("sendWebhook", "{}", {
      scheduledAt: `2098-01-01T00:00:0${i}Z`,
      referenceUid,
    });
    await tasker.cancel(task.id); // frees the reference for the next one
    created.push(task);
  }
  const seen: string[] = [];
  let pages = 0;
  for await (const page of tasker.list({ referenceUid, limit: 2 })) {
    assert.ok(page.tasks.length <= 2);
    assert.ok(page.tasks.every((task) => task.waiting === null), "cancelled tasks wait for nothing");
    pages += 1;
    seen.push(...page.tasks.map((task) => task.id));
  }
  assert.ok(pages >= 3, `5 tasks in pages of 2 take at least 3 pages, got ${pages}`);
  // Cancelled tasks come by their finish, newest first, then by id (docs/api.md).
  const stored = await Promise.all(created.map((task) => tasker.get(task.id)));
  const expected = stored
    .map((task) => ({ id: task.id, at: task.finishedAt ?? "" }))
    .sort((a, b) => {
      const [x, y] = a.at === b.at ? [a.id, b.id] : [a.at, b.at];
      return x < y ? 1 : x > y ? -1 : 0;
    })
    .map((task) => task.id);
  assert.deepEqual(seen, expected);
});

test("createBatch results narrow on status", async () => {
  const results = await tasker.createBatch([
    { type: "sendWebhook", payload: "{}", delaySeconds: 3600 },
    { type: "sendWebhook", payload: "{}", maxAttempts: 0 },
  ]);
  assert.equal(results.length, 2);
  const [stored, refused] = results;
  assert.ok(stored?.status === "created", JSON.stringify(stored));
  assert.match(stored.id, /^[0-9A-HJKMNP-TV-Z]{26}$/);
  assert.ok(refused?.status === "error", JSON.stringify(refused));
  assert.equal(refused.error.error.code, "invalid_field");
});

test("options may be undefined, as environment variables and optional fields are", async () => {
  // The seed's set-up line: process.env values are `string | undefined`.
  const fromEnv = createTasker({ url, token: process.env.TASKER_TOKEN });
  const maybe: number | undefined = undefined;
  const task = await fromEnv.create("sendWebhook", "{}", { delaySeconds: 60, maxAttempts: maybe });
  assert.equal(task.maxAttempts, 3);
  const invalid = await rejection(fromEnv.create("sendWebhook", "{}", { scheduledAt: new Date(Number.NaN) }));
  assert.equal(invalid.code, "invalid_argument");
});

test("errors carry the API's code, status and message", async () => {
  const invalid = await rejection(
    tasker.create("sendWebhook", "{}", { delaySeconds: 60, scheduledAt: "2099-01-01T00:00:00Z" }),
  );
  assert.equal(invalid.code, "invalid_field");
  assert.equal(invalid.status, 400);
  assert.match(invalid.message, /delaySeconds/);

  const missing = await rejection(tasker.get("01JD0000000000000000000000"));
  assert.equal(missing.code, "not_found");
  assert.equal(missing.status, 404);

  const wrongToken = await rejection(createTasker({ url, token: "wrong" }).stats());
  assert.equal(wrongToken.code, "unauthorized");
  assert.equal(wrongToken.status, 401);

  // A port nothing listens on: bind one, note it, close it.
  const closed = createServer();
  closed.listen(0, "127.0.0.1");
  await once(closed, "listening");
  const { port } = closed.address() as AddressInfo;
  closed.close();
  const unreachable = await rejection(createTasker({ url: `http://127.0.0.1:${port}` }).stats());
  assert.equal(unreachable.code, "network_error");
  assert.equal(unreachable.status, 0);
});

test("stats counts every status", async () => {
  const stats = await tasker.stats();
  for (const status of ["pending", "running", "succeeded", "failed", "cancelled"] as const) {
    assert.equal(typeof stats.counts[status], "number");
  }
  assert.ok(stats.counts.pending >= 1);
  // tasker serve on SQLite: every number exact, none a lower bound.
  assert.equal(stats.exact, true);
  assert.deepEqual(stats.lowerBounds, []);
  assert.equal(stats.activeSeenAt, null);
  // Earlier tests left tasks scheduled for later and one held for its rate key.
  assert.ok(stats.waiting, "counted on SQLite");
  assert.ok(stats.waiting.scheduled >= 1, JSON.stringify(stats.waiting));
  assert.ok(stats.waiting.keyRate >= 1, JSON.stringify(stats.waiting));
  assert.equal(stats.waiting.exact, true);
});

test("verifySignature matches the RFC 4231 vector and refuses anything else", async () => {
  const body = "what do ya want for nothing?";
  const good = "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
  assert.equal(await verifySignature("Jefe", body, good), true);
  assert.equal(await verifySignature("Jefe", new TextEncoder().encode(body), good), true);
  assert.equal(await verifySignature("Jefe", `${body}!`, good), false);
  assert.equal(await verifySignature("jefe", body, good), false);
  assert.equal(await verifySignature("Jefe", body, good.replace("sha256=", "")), false);
  assert.equal(await verifySignature("Jefe", body, null), false);
  assert.equal(await verifySignature("Jefe", body, "sha256=zz"), false);
  assert.equal(await verifySignature("", body, good), false);
});

test("a webhook Tasker sends verifies with verifySignature", async () => {
  const received: { body: Buffer; signature: string | undefined }[] = [];
  const receiver = createServer((request: IncomingMessage, response) => {
    const chunks: Buffer[] = [];
    request.on("data", (chunk: Buffer) => chunks.push(chunk));
    request.on("end", () => {
      const header = request.headers[SIGNATURE_HEADER];
      received.push({ body: Buffer.concat(chunks), signature: Array.isArray(header) ? header[0] : header });
      response.writeHead(204).end();
    });
  });
  receiver.listen(0, "127.0.0.1");
  await once(receiver, "listening");
  const { port } = receiver.address() as AddressInfo;
  try {
    const body = { bookingId: 42, note: "über ✓" };
    const task = await tasker.create("sendWebhook", { url: `http://127.0.0.1:${port}/hook`, body });
    const deadline = Date.now() + 30_000;
    while ((await tasker.get(task.id)).status !== "succeeded") {
      assert.ok(Date.now() < deadline, "the webhook was not delivered within 30 s");
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    const [delivery] = received;
    assert.ok(delivery, "the receiver got the webhook");
    assert.deepEqual(JSON.parse(delivery.body.toString("utf8")), body);
    assert.equal(await verifySignature(secret, delivery.body, delivery.signature), true);
    assert.equal(await verifySignature("another secret", delivery.body, delivery.signature), false);
  } finally {
    receiver.close();
  }
});

test("a schedule fires on the server, and can be paused, triggered and removed", async () => {
  const name = `ts-every-second-${run}`;
  const created = await tasker.schedules.create({
    name,
    cron: "* * * * * *",
    type: "sendWebhook",
    payload: { url: "http://127.0.0.1:9/unused", body: {} },
    missed: "skip",
  });
  assert.equal(created.nextRuns.length, 5);
  const taken = await rejection(tasker.schedules.create({ name, cron: "0 * * * *", type: "sendWebhook" }));
  assert.equal(taken.code, "schedule_exists");
  const bad = await rejection(tasker.schedules.create({ name: `${name}-bad`, cron: "61 * * * *", type: "sendWebhook" }));
  assert.equal(bad.code, "invalid_field");
  assert.match(bad.message, /minute field/);
  // `tasker serve` fires due schedules every second: a tick's task shows up.
  const deadline = Date.now() + 15_000;
  for (;;) {
    const { value: page } = await tasker.list({ schedule: name, limit: 5 }).next();
    if (page && page.tasks.length > 0) {
      assert.equal(page.tasks[0]?.scheduleName, name);
      break;
    }
    assert.ok(Date.now() < deadline, "no tick fired within 15 s");
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  const paused = await tasker.schedules.pause(name);
  assert.equal(paused.paused, true);
  const triggered = await tasker.schedules.trigger(name);
  assert.equal(triggered.scheduleName, name);
  assert.ok((await tasker.schedules.list()).some((s) => s.name === name));
  await tasker.schedules.remove(name);
  const gone = await rejection(tasker.schedules.get(name));
  assert.equal(gone.code, "not_found");
  assert.equal(gone.status, 404);
});

test("types: a paused type shows as paused until resumed; an unknown one is a 404", async () => {
  const paused = await tasker.types.pause("sendWebhook");
  try {
    assert.equal(paused.paused, true);
    assert.ok(paused.pausedAt);
    const { types, exact } = await tasker.types.list();
    assert.equal(exact, true);
    const webhook = types.find((t) => t.name === "sendWebhook");
    assert.equal(webhook?.paused, true);
    assert.ok((webhook?.timeoutMs ?? 0) > 0);
  } finally {
    const resumed = await tasker.types.resume("sendWebhook");
    assert.equal(resumed.paused, false);
  }
  const unknown = await rejection(tasker.types.pause("noSuchType"));
  assert.equal(unknown.code, "not_found");
  assert.equal(unknown.status, 404);
});
