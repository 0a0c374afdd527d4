// BullMQ on Redis ($REDIS_URL): see ../common.mjs for the passes.
import { readFileSync } from "node:fs";
import { Queue, Worker } from "bullmq";
import { Redis } from "ioredis";
import { main, runPeer } from "../common.mjs";

// BullMQ's client is optional (an ES module passes one it made); workers need no retry limit.
const url = process.env.REDIS_URL ?? "redis://127.0.0.1:6379";
const connect = () => new Redis(url, { maxRetriesPerRequest: null });
const { version } = JSON.parse(
  readFileSync(new URL("./node_modules/bullmq/package.json", import.meta.url)),
);

// A queue of its own per pass, so one pass never sees another's jobs.
let pass = 0;
let queue;
let name;

main(() =>
  runPeer({
    system: "BullMQ",
    version,
    async reset(named) {
      await queue?.close();
      pass += 1;
      name = named ?? `bench-${process.pid}-${pass}`;
      queue = new Queue(name, { connection: connect() });
    },
    enqueue: (job, delayMs) => queue.add("job", job, delayMs > 0 ? { delay: delayMs } : {}),
    enqueueBatch: (jobs) => queue.addBulk(jobs.map((data) => ({ name: "job", data }))),
    async work(concurrency, handler) {
      const worker = new Worker(name, (job) => handler(job.data), { connection: connect(), concurrency });
      await worker.waitUntilReady();
      return { stop: () => worker.close() };
    },
    close: () => queue.close(),
  }),
);
