// graphile-worker on PostgreSQL ($DATABASE_URL): see ../common.mjs for the passes. Its
// defaults but concurrency and the poll interval; LISTEN/NOTIFY wakes it for new jobs.
import { readFileSync } from "node:fs";
import { Logger, makeWorkerUtils, run } from "graphile-worker";
import { main, runPeer } from "../common.mjs";

const connectionString = process.env.DATABASE_URL;
const { version } = JSON.parse(
  readFileSync(new URL("./node_modules/graphile-worker/package.json", import.meta.url)),
);
const logger = new Logger(() => () => {});

let pass = 0;
let task;

main(async () => {
  const utils = await makeWorkerUtils({ connectionString, logger });
  await utils.migrate();
  await runPeer({
    system: "graphile-worker",
    version,
    async reset(named) {
      pass += 1;
      task = named ?? `bench_${pass}`;
    },
    enqueue: (job, delayMs) =>
      utils.addJob(task, job, delayMs > 0 ? { runAt: new Date(Date.now() + delayMs) } : {}),
    enqueueBatch: (jobs) => utils.addJobs(jobs.map((payload) => ({ identifier: task, payload }))),
    async work(concurrency, handler) {
      const runner = await run({
        connectionString,
        concurrency,
        maxPoolSize: Math.max(10, concurrency + 2),
        pollInterval: 500,
        noHandleSignals: true,
        logger,
        taskList: { [task]: (payload) => handler(payload) },
      });
      return { stop: () => runner.stop() };
    },
    close: () => utils.release(),
  });
});
