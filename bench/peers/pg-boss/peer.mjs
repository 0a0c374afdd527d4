// pg-boss on PostgreSQL ($DATABASE_URL): see ../common.mjs for the passes. Concurrency C is
// C/4 jobs per fetch on 4 local workers (pg-boss's own batching, fetching again at once while
// fetches come back full), and LISTEN/NOTIFY wakes them for new jobs.
import { readFileSync } from "node:fs";
import { PgBoss } from "pg-boss";
import { main, runPeer } from "../common.mjs";

const { version } = JSON.parse(
  readFileSync(new URL("./node_modules/pg-boss/package.json", import.meta.url)),
);
const WORKERS = 4;
const boss = new PgBoss({ connectionString: process.env.DATABASE_URL, useListenNotify: true });
boss.on("error", (err) => console.error(err));

let pass = 0;
let name;

main(async () => {
  await boss.start();
  await runPeer({
    system: "pg-boss",
    version,
    async reset(named) {
      pass += 1;
      name = named ?? `bench-${process.pid}-${pass}`;
      await boss.createQueue(name, { notify: true });
    },
    enqueue: (job, delayMs) =>
      boss.send(name, job, delayMs > 0 ? { startAfter: new Date(Date.now() + delayMs) } : {}),
    enqueueBatch: (jobs) => boss.insert(name, jobs.map((data) => ({ data }))),
    async work(concurrency, handler) {
      const options = {
        localConcurrency: Math.min(WORKERS, concurrency),
        batchSize: Math.max(1, Math.floor(concurrency / WORKERS)),
        burstWhenBatchFull: true,
        pollingIntervalSeconds: 0.5,
        notifyPollingIntervalSeconds: 0.5,
      };
      const id = await boss.work(name, options, (jobs) =>
        Promise.all(jobs.map((job) => handler(job.data))),
      );
      return { stop: () => boss.offWork(name, { id, wait: true }) };
    },
    close: () => boss.stop({ graceful: false }),
  });
});
