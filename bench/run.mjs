// Runs every benchmark configuration, each in a fresh page of headless Chromium served by
// `ferrograd serve`, and writes bench/results/results.{json,md} (after every configuration, so
// that a run cut short leaves what it measured). Pages are cross-origin isolated only for the
// threaded backends, which need it; the others are served as plain static hosting serves them
// (isolation costs a page about 30 ms more to start here).
//
// The time to the first step is the median of --first-step-loads fresh loads of a training
// configuration: one load varies by ±100 ms on a busy 2-core machine. Backends that need a
// GPU (WebGL, WebGPU) run in a browser that emulates one on the CPU (SwiftShader); the others
// in a plain one, where a real GPU's work (compositing the page) does not take CPU time from
// the configuration being measured.
//
// Each configuration has --config-limit seconds, its further first-step loads included. The
// page is told when that time runs out and leaves out what would not fit (a further window,
// the epoch for the accuracy, the largest product) with a note; one still running then is
// stopped and recorded as "stopped after N s". A configuration that fails (a thrown error, a
// crashed page, a browser that died, which the next one relaunches) is recorded with its error
// and the run goes on. The defaults (three windows of 1 s, three loads, an epoch budget of
// 10 s, 15 s a configuration) keep the whole run within 12 minutes on a 2-core machine; the
// slowest configurations (TensorFlow.js's cpu backend and SwiftShader on the bigger models)
// then give no figures, and the emulated GPUs rarely have the time for an epoch: raise
// --config-limit and --epoch-budget for those. The wasm products are measured in
// --product-rounds rounds (the later ones after every other configuration), each keeping its
// best figures, so that a moment of other work on the machine does not decide their ratio.
//
// Usage: node bench/run.mjs [--quick] [--seconds 1] [--windows 3] [--first-step-loads 3]
//          [--epoch-budget 10] [--config-limit 15] [--product-rounds 2] [--only LIB[/BACKEND][,…]] [--task TASK[,…]] [--console]
// LIB: ferrograd, tfjs or jaxjs; TASK: mlp, cnn, convnet, lstm, resnet, vit or matmul. --only and --task
// pick configurations: `--only ferrograd,tfjs/wasm --task matmul`, `--task resnet,vit`.
// --quick checks everything end to end in under a minute: mlp and matmul on
// ferrograd/wasm, tfjs/wasm and jaxjs/wasm, one window of 1 s, one load, 30 s a configuration,
// one round of products (any option given as well overrides these). --console prints what the pages log.
// (scripts/bench.sh installs TensorFlow.js and jax-js and builds first.)

import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { chromium } from 'playwright-core';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const NUMBERS = ['seconds', 'windows', 'first-step-loads', 'epoch-budget', 'config-limit', 'product-rounds'];
const DEFAULTS = { seconds: 1, windows: 3, 'first-step-loads': 3, 'epoch-budget': 10, 'config-limit': 15, 'product-rounds': 2 };
const QUICK = {
  seconds: 1, windows: 1, 'first-step-loads': 1, 'epoch-budget': 20, 'config-limit': 30, 'product-rounds': 1,
  only: 'ferrograd/wasm,tfjs/wasm,jaxjs/wasm', task: 'mlp,matmul',
};
const { values: given } = parseArgs({
  options: {
    quick: { type: 'boolean' }, console: { type: 'boolean' }, only: { type: 'string' }, task: { type: 'string' },
    ...Object.fromEntries(NUMBERS.map((name) => [name, { type: 'string' }])),
  },
});
const options = { ...(given.quick ? QUICK : DEFAULTS) };
for (const [name, value] of Object.entries(given)) if (value !== undefined && name !== 'quick') options[name] = value;
options.console = Boolean(given.console);
for (const name of NUMBERS) {
  options[name] = Number(options[name]);
  if (!(options[name] > 0)) {
    console.error(`error: --${name} takes a positive number`);
    process.exit(2);
  }
}
const LOADS = Math.round(options['first-step-loads']);
const PRODUCT_ROUNDS = Math.round(options['product-rounds']);
const LIMIT_S = options['config-limit'];

const MODELS = ['mlp', 'cnn', 'convnet', 'lstm', 'resnet', 'vit'];
// Each model's forward FLOPs per sample in its matrix products, as `ferrograd summary` counts them.
const FLOPS = Object.fromEntries(MODELS.map((m) => [m, JSON.parse(execFileSync(join(ROOT, 'target/release/ferrograd'), ['summary', '--model', m, '--json'])).flops]));
// Models a peer is not measured on, and why: these get one row saying so instead of figures.
const NOT_MEASURED = {
  tfjs: {
    vit: 'TensorFlow.js 4.22 cannot build it with tf.layers: it has layerNormalization but no multi-head attention layer '
      + '(tfjs-layers holds a MultiHeadAttention class in its source, but neither exports it nor bundles it in tf.min.js), '
      + 'and no layer adds a learnt position embedding',
  },
  // jax-js has array ops, autodiff and jit but no layers: each model is written by hand from
  // its ops, as bench.js does for the mlp and the cnn.
  jaxjs: {
    lstm: 'jax-js 0.1.25 is not measured on it: it has no recurrent layer and no lax.scan, so the step would be 28 LSTM cells unrolled by hand',
    resnet: 'jax-js 0.1.25 is not measured on it: it has no layers, so batch norm (with its running averages carried through the jitted step) and the blocks would be written by hand',
    vit: 'jax-js 0.1.25 is not measured on it: it has no layers, so the patch and position embeddings, layer norm and the attention blocks would be written by hand',
  },
};
// wasm: one thread; wasm-relaxed: one thread, the relaxed-SIMD build (fused multiply-adds in
// the product kernel); wasm-threads: a thread per core (the page is cross-origin isolated).
const BACKENDS = {
  ferrograd: ['wasm', 'wasm-relaxed', 'wasm-threads', 'webgpu'],
  tfjs: ['cpu', 'wasm', 'wasm-threads', 'webgl', 'webgpu'],
  // One thread (the page is not isolated, so its wasm backend starts no workers) and WebGPU.
  jaxjs: ['wasm', 'webgpu'],
};
// The tasks each library is measured on: jax-js only trains (it gets no matmul row).
const TASKS = { ferrograd: [...MODELS, 'matmul'], tfjs: [...MODELS, 'matmul'], jaxjs: MODELS };
const configs = [];
for (const task of [...MODELS, 'matmul']) {
  const model = task === 'matmul' ? undefined : task;
  for (const lib of Object.keys(BACKENDS)) {
    if (!TASKS[lib].includes(task)) continue;
    const reason = NOT_MEASURED[lib]?.[model];
    if (reason) configs.push({ lib, backend: 'any', task: 'train', model, reason });
    else for (const backend of BACKENDS[lib]) configs.push({ lib, backend, task: model ? 'train' : task, model });
  }
}

// A row saying why a library is not measured on a model answers for any of its backends.
const picked = configs.filter((c) => (!options.only || options.only.split(',').some((o) => o === c.lib || o === `${c.lib}/${c.backend}`
    || (c.reason && o.startsWith(`${c.lib}/`))))
  && (!options.task || options.task.split(',').includes(c.model ?? c.task)));
if (picked.length === 0) {
  const names = [...new Set(configs.filter((c) => !c.reason).map((c) => `${c.lib}/${c.backend}`))].join(', ');
  console.error(`error: no configuration matches --only ${options.only ?? '(all)'} --task ${options.task ?? '(all)'}; libraries and backends: ${names}; tasks: ${[...MODELS, 'matmul'].join(', ')}`);
  process.exit(2);
}

/** Resolves with `promise`'s value, or rejects once `ms` have passed. */
function within(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`${what} took over ${ms / 1000} s`)), ms); });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function serve({ isolation }) {
  const args = ['serve', '--root', ROOT, '--port', '0', ...(isolation ? [] : ['--no-isolation'])];
  const child = spawn(join(ROOT, 'target/release/ferrograd'), args, { stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('exit', (code, signal) => reject(new Error(`ferrograd serve exited (${signal ?? code}) before it served`)));
    child.stdout.on('data', (data) => {
      const match = String(data).match(/http:\/\/[\d.]+:\d+\//);
      if (match) resolve({ url: match[0], child });
    });
  });
}

// The two servers, started when first needed and again should one have exited.
const servers = {};
async function serverFor(config) {
  const isolation = config.backend === 'wasm-threads';
  const running = await servers[isolation]?.catch(() => null);
  if (running && running.child.exitCode == null && running.child.signalCode == null) return running;
  servers[isolation] = serve({ isolation });
  return servers[isolation];
}

const GPU_BACKENDS = new Set(['webgl', 'webgpu']);
/**
 * A browser server (whose process can be killed, however busy or hung) and Playwright's
 * connection to it.
 */
async function launch(gpu) {
  const server = await chromium.launchServer({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: [
      '--headless=new', '--no-sandbox', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage',
      // WebGL and WebGPU on the CPU (SwiftShader): numbers that say nothing about a real GPU.
      ...(gpu ? ['--use-angle=swiftshader', '--enable-unsafe-swiftshader', '--enable-unsafe-webgpu', '--enable-features=Vulkan',
        '--use-vulkan=swiftshader', '--use-webgpu-adapter=swiftshader'] : []),
    ],
  });
  try {
    return { server, browser: await chromium.connect(server.wsEndpoint()) };
  } catch (error) {
    await server.kill();
    throw error;
  }
}
// The plain browser and the emulated GPU's, each launched when first needed and again once
// it has died.
const browsers = {};
async function browserFor(gpu) {
  const current = await browsers[gpu]?.catch(() => null);
  if (browsers[gpu] && !current?.browser.isConnected()) await closeBrowser(gpu);
  browsers[gpu] ??= launch(gpu);
  return (await browsers[gpu]).browser;
}
/**
 * Kills a browser. The emulated GPU's is killed after each configuration: a closed page's
 * work already queued on SwiftShader (a step of a minute, on the resnet) runs on in its GPU
 * process, taking the CPU from the next configuration and holding up its pages, and closing
 * that browser politely can take as long.
 */
async function closeBrowser(gpu) {
  const launching = browsers[gpu];
  delete browsers[gpu];
  const launched = launching && await within(launching, 30_000, 'launching the browser').catch(() => null);
  await launched?.server.kill().catch(() => {});
}

const firstLine = (error) => String(error?.message ?? error).split('\n')[0];

/**
 * One load of the benchmark page (a fresh browser context) for `config`; its result. The
 * page is told to be done by `pageDeadline`, and stopped at `deadline` (ms, as Date.now()).
 */
async function load(config, extra, deadline, pageDeadline = deadline) {
  const gpu = GPU_BACKENDS.has(config.backend);
  const { lib, backend, task, model } = config;
  const query = new URLSearchParams({
    lib, backend, task, ...(model ? { model } : {}), seconds: options.seconds, windows: options.windows,
    epochBudget: options['epoch-budget'], deadline: Math.round(pageDeadline), ...extra,
  });
  let page;
  const work = (async () => {
    const { url } = await serverFor(config);
    page = await (await browserFor(gpu)).newPage();
    if (options.console) page.on('console', (message) => process.stderr.write(`\n  [page] ${message.text()}`));
    const crashed = new Promise((_, reject) => page.on('crash', () => reject(new Error('the page crashed'))));
    const finished = (async () => {
      await page.goto(`${url}bench/index.html?${query}`);
      await page.waitForFunction(() => window.benchResult, null, { timeout: 0, polling: 100 });
      return page.evaluate(() => window.benchResult);
    })();
    return Promise.race([finished, crashed]);
  })();
  work.catch(() => {}); // what it throws is reported below, or moot once the time is up
  let timer;
  const timeUp = new Promise((resolve) => { timer = setTimeout(resolve, Math.max(0, deadline - Date.now()), 'stopped'); });
  const bare = { lib, backend, task, model: model ?? null };
  let failed = false;
  try {
    const outcome = await Promise.race([work, timeUp]);
    return outcome === 'stopped' ? { ...bare, error: `stopped after ${LIMIT_S} s`, stopped: true } : outcome;
  } catch (error) {
    failed = true;
    return { ...bare, error: firstLine(error) };
  } finally {
    clearTimeout(timer);
    // After a failure of the page or the browser (a crash, a browser that died), or with a
    // page that will not close, the browser goes too: the next load launches another.
    const closed = !failed && page && await within(page.close(), 10_000, 'closing the page').then(() => true, () => false);
    if (!closed && browsers[gpu]) await closeBrowser(gpu);
  }
}

// The more loads that time the first step take a few seconds each: the first load is told to
// be done this much before the limit, to leave them their time.
const LOAD_RESERVE_MS = { cpu: 3_000, gpu: 6_000 };
const ONE_LOAD_ENOUGH_MS = 10_000;

/** Measures one configuration within its time limit; never throws. */
async function measure(config) {
  const started = Date.now();
  const deadline = started + LIMIT_S * 1000;
  const gpu = GPU_BACKENDS.has(config.backend);
  // Only training takes further loads, for the time to its first step.
  const reserve = config.task === 'train' ? (LOADS - 1) * LOAD_RESERVE_MS[gpu ? 'gpu' : 'cpu'] : 0;
  const result = await load(config, {}, deadline, deadline - Math.min(reserve, (LIMIT_S * 1000) / 2));
  // A load varies by ±100 ms: against a first step of many seconds that is noise, and more
  // loads would take minutes.
  if (!result.error && result.firstStepMs != null && result.firstStepMs < ONE_LOAD_ENOUGH_MS) {
    const times = [result.firstStepMs];
    let shortBy = null;
    while (times.length < LOADS) {
      const again = Date.now() < deadline - 1000 ? await load(config, { stop: 'first-step' }, deadline) : { stopped: true };
      if (again.stopped) {
        shortBy = `the time limit left time for ${times.length} of ${LOADS} loads for the time to the first step`;
        break;
      }
      if (again.error) {
        shortBy = `a load for the time to the first step failed: ${again.error}`;
        break;
      }
      times.push(again.firstStepMs);
    }
    if (shortBy) result.note = [result.note, shortBy].filter(Boolean).join('; ');
    times.sort((a, b) => a - b);
    Object.assign(result, { firstStepMs: times[Math.floor(times.length / 2)], firstStepRangeMs: [times[0], times.at(-1)], firstStepLoads: times.length });
  } else if (result.firstStepMs != null) {
    result.firstStepLoads = 1;
  }
  if (gpu) await closeBrowser(true);
  result.wallS = Math.round((Date.now() - started) / 100) / 10;
  return result;
}

const fmt = (n, digits = 0) => (n == null ? '' : n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits }));

/** The tables of `results`; adds each row's ratios. */
function tables(results) {
  // Ratios against the fastest peer (TensorFlow.js or jax-js, any backend) that trains the model.
  const train = results.filter((r) => r.task === 'train');
  for (const r of train.filter((r) => r.lib === 'ferrograd')) {
    const peers = train.filter((p) => p.lib !== 'ferrograd' && p.model === r.model && !p.error && p.samplesPerSecond > 0);
    const best = peers.sort((a, b) => b.samplesPerSecond - a.samplesPerSecond)[0];
    if (best && r.samplesPerSecond) {
      r.ratio = r.samplesPerSecond / best.samplesPerSecond;
      r.versus = `${best.lib}/${best.backend}`;
    }
  }
  // Achieved arithmetic: three times the forward pass's FLOPs in matrix products per sample
  // (forward, and backward's two products per product), times samples/s.
  for (const r of train) if (r.samplesPerSecond && FLOPS[r.model]) r.gflops = (3 * FLOPS[r.model] * r.samplesPerSecond) / 1e9;
  // Matmul against TensorFlow.js's wasm backend on as many threads.
  const matmul = results.filter((r) => r.task === 'matmul');
  // On one thread, from the duel: both products timed in alternation in one worker.
  for (const r of matmul.filter((r) => r.lib === 'ferrograd' && r.backend.startsWith('wasm'))) {
    const peer = matmul.find((p) => p.lib === 'tfjs' && p.backend === r.backend.replace('-relaxed', '') && p.gflops1024);
    if (r.duelOurs && r.duelTfjs) r.ratio1024 = r.duelOurs / r.duelTfjs;
    else if (peer && r.gflops1024) r.ratio1024 = r.gflops1024 / peer.gflops1024;
  }
  const ratio1024 = (r) => {
    if (!r.ratio1024) return '';
    const duel = r.duelOurs ? ` (${fmt(r.duelOurs, 1)} against ${fmt(r.duelTfjs, 1)}, in alternation)` : '';
    return `${fmt(r.ratio1024, 2)}x${duel}`;
  };
  // The core's fused multiply-add peak, timed in the duel's rounds: the 1024 product's share
  // of it, and the most any product could be against TensorFlow.js wasm's in those rounds.
  const peak = (r) => (r.duelPeak ? `${fmt(r.duelPeak, 1)} (${fmt((100 * r.duelOurs) / r.duelPeak)}%; ${fmt(r.duelPeak / r.duelTfjs, 2)}x)` : '');
  const firstStep = (r) => {
    if (r.firstStepMs == null) return '';
    if (!r.firstStepRangeMs || r.firstStepLoads === 1) return `${fmt(r.firstStepMs)} (one load)`;
    const range = r.firstStepRangeMs.map((t) => fmt(t)).join('–');
    return `${fmt(r.firstStepMs)} (${range}${r.firstStepLoads < LOADS ? `, ${r.firstStepLoads} loads` : ''})`;
  };
  return [
    `| library/backend | threads | model | samples/s | training GFLOP/s | ratio to fastest peer | test acc. after 1 epoch | first step (ms), ${LOADS === 1 ? 'one load' : `median of ${LOADS} loads (range)`} | JS+wasm bytes | GPU dispatches/step (bytes up/down) | error or note |`,
    '| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |',
    ...train.map((r) => `| ${r.lib}/${r.backend} | ${r.threads ?? ''} | ${r.model} | ${fmt(r.samplesPerSecond, r.samplesPerSecond < 10 ? 1 : 0)} | ${fmt(r.gflops, 2)} | ${r.ratio ? `${fmt(r.ratio, 2)}x vs ${r.versus}` : ''} | ${r.accuracy == null ? '' : `${fmt(r.accuracy * 100, 1)}%`} | ${firstStep(r)} | ${fmt(r.codeBytes)} | ${r.gpuStep ? `${r.gpuStep.dispatches} (${fmt(r.gpuStep.uploaded)} / ${r.gpuStep.downloaded})` : ''} | ${r.error ?? r.note ?? ''} |`),
    '',
    '| library/backend | threads | matmul 256 GFLOP/s | matmul 1024 GFLOP/s | 1024 ratio to tfjs wasm, same threads (one thread: both in one worker) | matmul 2048 GFLOP/s | one core\'s fused multiply-add peak GFLOP/s (the duel\'s 1024 product\'s share of it; its ratio to tfjs wasm\'s) | JS+wasm bytes | error or note |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |',
    ...matmul.map((r) => `| ${r.lib}/${r.backend} | ${r.threads ?? ''} | ${fmt(r.gflops256, 1)} | ${fmt(r.gflops1024, 1)} | ${ratio1024(r)} | ${fmt(r.gflops2048, 1)} | ${peak(r)} | ${fmt(r.codeBytes)} | ${r.error ?? r.note ?? ''} |`),
  ];
}

const dir = join(ROOT, 'bench/results');
function write(results) {
  const lines = tables(results);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'results.json'), JSON.stringify(results, null, 2));
  writeFileSync(join(dir, 'results.md'), `${lines.join('\n')}\n`);
  return lines;
}

const pick = (object, keys) => Object.fromEntries(keys.filter((k) => k in object).map((k) => [k, object[k]]));

/** Folds a further round's product figures into `first`'s: the higher of each. */
function keepBetter(first, again) {
  if (again.error) return;
  if (first.error) {
    delete first.error;
    delete first.note;
  }
  for (const key of ['gflops256', 'gflops1024', 'gflops2048']) {
    if (again[key] != null) first[key] = Math.max(first[key] ?? 0, again[key]);
  }
  // The duel's figures go together: the round where TensorFlow.js ran fastest, the quietest.
  if (again.duelTfjs > (first.duelTfjs ?? 0)) Object.assign(first, pick(again, ['duelOurs', 'duelTfjs', 'duelPeak']));
  // A size the first round left out, measured now.
  if (first.gflops2048 != null && first.note) {
    const notes = first.note.split('; ').filter((note) => !note.startsWith('matmul '));
    if (notes.length) first.note = notes.join('; ');
    else delete first.note;
  }
  first.rounds = (first.rounds ?? 1) + 1;
}

async function shutDown() {
  for (const server of Object.values(servers)) await server.then(({ child }) => child.kill(), () => {});
  for (const gpu of Object.keys(browsers)) await closeBrowser(gpu === 'true');
}
process.on('SIGINT', () => shutDown().finally(() => process.exit(130)));

const results = [];
const runStarted = Date.now();
try {
  for (const config of picked) {
    const label = `${config.lib}/${config.backend} ${config.task}${config.model ? ` ${config.model}` : ''}`;
    process.stderr.write(`${label} … `);
    if (config.reason) {
      const { reason, ...rest } = config;
      results.push({ ...rest, error: reason, notMeasured: true });
      process.stderr.write('not measured\n');
      continue;
    }
    let result;
    try {
      result = await measure(config);
    } catch (error) {
      result = { lib: config.lib, backend: config.backend, task: config.task, model: config.model ?? null, error: firstLine(error) };
    }
    process.stderr.write(`${result.error ? `failed: ${result.error}` : 'done'}${result.wallS == null ? '' : ` (${result.wallS} s)`}\n`);
    results.push(result);
    write(results);
  }
  // The wasm products again, in alternation, each keeping its better figures: other work on
  // the machine only ever slows a product, and one slowed round would otherwise move the
  // ratio between libraries measured a minute apart by a third.
  for (let round = 2; round <= PRODUCT_ROUNDS; round++) {
    for (const first of results.filter((r) => r.task === 'matmul' && r.backend.startsWith('wasm'))) {
      process.stderr.write(`${first.lib}/${first.backend} matmul, round ${round} … `);
      const again = await measure(first);
      process.stderr.write(`${again.error ? `failed: ${again.error}` : 'done'} (${again.wallS} s)\n`);
      keepBetter(first, again);
      write(results);
    }
  }
} finally {
  await shutDown();
}

const failed = results.filter((r) => r.error && !r.notMeasured);
process.stderr.write(`${results.length} configurations in ${Math.round((Date.now() - runStarted) / 1000)} s, ${failed.length} failed or stopped\n`);
console.log(write(results).join('\n'));
