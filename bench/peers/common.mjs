// The passes every peer runs, in the same shape as Tasker's (bench/src/peers.rs): a peer's
// program gives an adapter over its queue and this runs the passes and prints one JSON line.
//
// An adapter: { system, version, reset(), enqueue(job, delayMs), enqueueBatch(jobs),
//   work(concurrency, handler) -> { stop() }, close() }. A job is a plain object; the
//   handler gets it back and its promise ends the job.
//
// Arguments (all numbers): --jobs N --batch B --concurrency C --delay-jobs D --rate R
// (jobs per second of the start-delay passes) --depth-workers W,W,... --depth-seconds S
// --depth-target T (the depth-target passes: jobs waiting the producer keeps).
//
// The crash pass (bench/src/peers/crash.rs) runs a peer in one role instead: `--crash-role
// enqueue --queue Q --jobs N` puts N jobs on queue Q and exits; `--crash-role work --queue Q
// --concurrency C --job-ms M --log FILE` works Q until it is killed, each job appending
// `S <n>` to FILE as it starts and `D <n>` as it ends. `reset(name)` then opens queue `name`
// as it is, for another process to find, instead of a new one.
import { openSync, writeSync } from "node:fs";
import { parseArgs } from "node:util";

const { values } = parseArgs({
  options: {
    jobs: { type: "string", default: "10000" },
    batch: { type: "string", default: "100" },
    concurrency: { type: "string", default: "16" },
    "delay-jobs": { type: "string", default: "200" },
    rate: { type: "string", default: "50" },
    "depth-workers": { type: "string", default: "4,16,64" },
    "depth-seconds": { type: "string", default: "10" },
    "depth-target": { type: "string", default: "2000" },
    "crash-role": { type: "string" },
    queue: { type: "string" },
    "job-ms": { type: "string", default: "20" },
    log: { type: "string" },
  },
});
const jobs = Number(values.jobs);
const batch = Number(values.batch);
const concurrency = Number(values.concurrency);
const delayJobs = Number(values["delay-jobs"]);
const rate = Number(values.rate);
const depthWorkers = values["depth-workers"].split(",").filter(Boolean).map(Number);
const depthSeconds = Number(values["depth-seconds"]);
const depthTarget = Number(values["depth-target"]);

const seconds = (start) => Number(process.hrtime.bigint() - start) / 1e9;
const now = () => process.hrtime.bigint();
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Resolves once `count` calls of the returned `done` were made.
function counter(count) {
  let left = count;
  let finish;
  const all = new Promise((resolve) => {
    finish = resolve;
  });
  if (left === 0) finish();
  return {
    all,
    done() {
      left -= 1;
      if (left === 0) finish();
    },
  };
}

// Drains what is queued with `concurrency` no-op jobs at once: seconds from the worker's
// start to the last job's end.
async function drain(adapter, count) {
  const seen = counter(count);
  const start = now();
  const worker = await adapter.work(concurrency, async () => seen.done());
  await seen.all;
  const took = seconds(start);
  await worker.stop();
  return took;
}

// Jobs created at `rate` per second while a worker runs, each due `delayMs` after it is
// created: how long after its due instant each one started (ms).
async function startDelays(adapter, delayMs) {
  const delays = [];
  const seen = counter(delayJobs);
  const worker = await adapter.work(concurrency, async (job) => {
    delays.push(Date.now() - job.due);
    seen.done();
  });
  // A worker that just started may still be connecting: the first job is not its start-up.
  await sleep(500);
  const gap = 1000 / rate;
  const start = Date.now();
  for (let i = 0; i < delayJobs; i += 1) {
    const wait = start + i * gap - Date.now();
    if (wait > 0) await sleep(wait);
    await adapter.enqueue({ n: i, due: Date.now() + delayMs }, delayMs);
  }
  await seen.all;
  await worker.stop();
  delays.sort((a, b) => a - b);
  const at = (q) => delays[Math.min(delays.length - 1, Math.ceil(q * delays.length) - 1)];
  return { p50: at(0.5), p99: at(0.99), max: delays[delays.length - 1] };
}

// A producer keeps `depthTarget` jobs waiting while `workers` run 1 ms jobs: jobs completed
// per second over `depthSeconds`, after a warm-up of a fifth of that.
async function depth(adapter, workers) {
  await adapter.reset();
  let created = 0;
  let started = 0;
  let done = 0;
  const worker = await adapter.work(workers, async () => {
    started += 1;
    await sleep(1);
    done += 1;
  });
  const warmUntil = Date.now() + (depthSeconds * 1000) / 5;
  let from = null;
  while (from === null || seconds(from.at) < depthSeconds) {
    if (from === null && Date.now() >= warmUntil) from = { at: now(), done };
    const waiting = created - started;
    if (waiting < depthTarget) {
      const size = Math.min(batch, depthTarget - waiting);
      await adapter.enqueueBatch(Array.from({ length: size }, (_, k) => ({ n: created + k })));
      created += size;
    } else {
      await sleep(5);
    }
  }
  const perSecond = (done - from.done) / seconds(from.at);
  await worker.stop();
  return { workers, jobs_per_s: perSecond };
}

// One role of the crash pass (see the top of this file).
async function crashRole(adapter) {
  await adapter.reset(values.queue);
  if (values["crash-role"] === "enqueue") {
    for (let i = 0; i < jobs; i += batch) {
      const size = Math.min(batch, jobs - i);
      await adapter.enqueueBatch(Array.from({ length: size }, (_, k) => ({ n: i + k })));
    }
    await adapter.close();
    process.stdout.write(`${JSON.stringify({ enqueued: jobs })}\n`);
    return;
  }
  if (values["crash-role"] !== "work") throw new Error(`no crash role ${values["crash-role"]}`);
  // Each line one write(2) on an O_APPEND file: in the kernel's page cache once written, so
  // a SIGKILL loses none of them.
  const log = openSync(values.log, "a");
  const jobMs = Number(values["job-ms"]);
  await adapter.work(concurrency, async (job) => {
    writeSync(log, `S ${job.n}\n`);
    await sleep(jobMs);
    writeSync(log, `D ${job.n}\n`);
  });
  // Until killed: a timer keeps node's loop alive whatever the client holds open.
  await new Promise(() => setInterval(() => {}, 1 << 30));
}

export async function runPeer(adapter) {
  if (values["crash-role"] !== undefined) return crashRole(adapter);
  const result = { system: adapter.system, version: adapter.version, jobs, concurrency };
  await adapter.reset();
  let start = now();
  for (let i = 0; i < jobs; i += 1) await adapter.enqueue({ n: i }, 0);
  result.enqueue_one_s = seconds(start);
  result.drain_s = await drain(adapter, jobs);

  await adapter.reset();
  start = now();
  for (let i = 0; i < jobs; i += batch) {
    const size = Math.min(batch, jobs - i);
    await adapter.enqueueBatch(Array.from({ length: size }, (_, k) => ({ n: i + k })));
  }
  result.enqueue_batch_s = seconds(start);
  result.drain_batch_s = await drain(adapter, jobs);

  await adapter.reset();
  result.due_now_ms = await startDelays(adapter, 0);
  result.delayed_1s_ms = await startDelays(adapter, 1000);
  // Last: the jobs a pass leaves waiting stay in their queue.
  result.depth = [];
  for (const workers of depthWorkers) result.depth.push(await depth(adapter, workers));
  await adapter.close();
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

// Runs `main` and exits: 0 when it printed its line, 1 with the error on stderr otherwise
// (a peer's client may keep timers or sockets that would hold the process open).
export function main(run) {
  run().then(
    () => process.exit(0),
    (err) => {
      console.error(err);
      process.exit(1);
    },
  );
}
