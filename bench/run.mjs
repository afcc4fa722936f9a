// Runs every benchmark configuration, each in a fresh page of headless Chromium served by
// `ferrograd serve`, and writes bench/results/results.{json,md}. Pages are cross-origin
// isolated only for the threaded backends, which need it; the others are served as plain
// static hosting serves them (isolation costs a page about 30 ms more to start here).
//
// The time to the first step is the median of FIRST_STEP_LOADS fresh loads of a training
// configuration: one load varies by ±100 ms on a busy 2-core machine. Backends that need a
// GPU (WebGL, WebGPU) run in a browser that emulates one on the CPU (SwiftShader); the others
// in a plain one, where a real GPU's work (compositing the page) does not take CPU time from
// the configuration being measured.
//
// Usage: node bench/run.mjs [--seconds 5] [--epoch-budget 120] [--only LIB[/BACKEND][,…]] [--task TASK[,…]]
// (TASK: mlp, cnn, lstm, resnet, vit or matmul; --only and --task pick configurations:
// `--only ferrograd,tfjs/wasm --task matmul`, `--task resnet,vit`)
// (scripts/bench.sh installs TensorFlow.js and builds first.)

import { spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { chromium } from 'playwright-core';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const { values: options } = parseArgs({ options: { seconds: { type: 'string', default: '5' }, 'epoch-budget': { type: 'string', default: '120' }, only: { type: 'string' }, task: { type: 'string' } } });

const MODELS = ['mlp', 'cnn', 'lstm', 'resnet', 'vit'];
// Models tf.layers cannot build, and why: these get one row saying so instead of figures.
const TFJS_CANNOT = {
  vit: 'TensorFlow.js 4.22 cannot build it with tf.layers: it has layerNormalization but no multi-head attention layer '
    + '(tfjs-layers holds a MultiHeadAttention class in its source, but neither exports it nor bundles it in tf.min.js), '
    + 'and no layer adds a learnt position embedding',
};
// wasm: one thread; wasm-threads: a thread per core (the page is cross-origin isolated).
const FERROGRAD_BACKENDS = ['wasm', 'wasm-threads', 'webgpu'];
const TFJS_BACKENDS = ['cpu', 'wasm', 'wasm-threads', 'webgl', 'webgpu'];
const configs = [];
for (const task of [...MODELS, 'matmul']) {
  const model = task === 'matmul' ? undefined : task;
  for (const backend of FERROGRAD_BACKENDS) configs.push({ lib: 'ferrograd', backend, task: model ? 'train' : task, model });
  if (TFJS_CANNOT[model]) configs.push({ lib: 'tfjs', backend: 'any', task: 'train', model, cannot: TFJS_CANNOT[model] });
  else for (const backend of TFJS_BACKENDS) configs.push({ lib: 'tfjs', backend, task: model ? 'train' : task, model });
}

function serve({ isolation }) {
  const args = ['serve', '--root', ROOT, '--port', '0', ...(isolation ? [] : ['--no-isolation'])];
  const child = spawn(join(ROOT, 'target/release/ferrograd'), args, { stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.stdout.on('data', (data) => {
      const match = String(data).match(/http:\/\/[\d.]+:\d+\//);
      if (match) resolve({ url: match[0], close: () => child.kill() });
    });
  });
}

// A row saying why a library cannot run a model answers for any of its backends.
const picked = configs.filter((c) => (!options.only || options.only.split(',').some((o) => o === c.lib || o === `${c.lib}/${c.backend}`
    || (c.cannot && o.startsWith(`${c.lib}/`))))
  && (!options.task || options.task.split(',').includes(c.model ?? c.task)));
if (picked.length === 0) {
  const names = [...new Set(configs.filter((c) => !c.cannot).map((c) => `${c.lib}/${c.backend}`))].join(', ');
  console.error(`error: no configuration matches --only ${options.only ?? '(all)'} --task ${options.task ?? '(all)'}; libraries and backends: ${names}; tasks: ${[...MODELS, 'matmul'].join(', ')}`);
  process.exit(2);
}

const servers = { isolated: await serve({ isolation: true }), plain: await serve({ isolation: false }) };
const serverFor = (config) => (config.backend === 'wasm-threads' ? servers.isolated : servers.plain);
const FIRST_STEP_LOADS = 5;
const ONE_LOAD_ENOUGH_MS = 10_000;
const GPU_BACKENDS = new Set(['webgl', 'webgpu']);
const launch = (gpu) => chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  args: [
    '--headless=new', '--no-sandbox', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage',
    // WebGL and WebGPU on the CPU (SwiftShader): numbers that say nothing about a real GPU.
    ...(gpu ? ['--use-angle=swiftshader', '--enable-unsafe-swiftshader', '--enable-unsafe-webgpu', '--enable-features=Vulkan',
      '--use-vulkan=swiftshader', '--use-webgpu-adapter=swiftshader'] : []),
  ],
});
const browsers = {};
const browserFor = (config) => {
  const gpu = GPU_BACKENDS.has(config.backend);
  browsers[gpu] ??= launch(gpu);
  return browsers[gpu];
};
/**
 * Closes the emulated GPU's browser after each configuration: a closed page's work already
 * queued on SwiftShader (a step of a minute, on the resnet) runs on in its GPU process,
 * taking the CPU from the next configuration and holding up its pages.
 */
async function closeGpuBrowser() {
  const browser = browsers[true];
  delete browsers[true];
  await browser?.then((b) => b.close(), () => {});
}

/** One load of the benchmark page (a fresh browser context) for `config`; its result. */
async function load(config, extra = {}) {
  const query = new URLSearchParams({ ...config, seconds: options.seconds, epochBudget: options['epoch-budget'], ...extra });
  let page;
  try {
    page = await (await browserFor(config)).newPage();
    await page.goto(`${serverFor(config).url}bench/index.html?${query}`);
    await page.waitForFunction(() => window.benchResult, null, { timeout: 15 * 60_000, polling: 500 });
    return await page.evaluate(() => window.benchResult);
  } catch (error) {
    return { ...config, error: String(error.message).split('\n')[0] };
  } finally {
    await page?.close();
  }
}

const results = [];
try {
  for (const config of picked) {
    const label = `${config.lib}/${config.backend} ${config.task}${config.model ? ` ${config.model}` : ''}`;
    process.stderr.write(`${label} … `);
    if (config.cannot) {
      const { cannot, ...rest } = config;
      results.push({ ...rest, error: cannot });
      process.stderr.write('cannot build it\n');
      continue;
    }
    const result = await load(config);
    // A load varies by ±100 ms: against a first step of many seconds that is noise, and
    // more loads would take minutes.
    if (!result.error && result.firstStepMs != null && result.firstStepMs < ONE_LOAD_ENOUGH_MS) {
      const times = [result.firstStepMs];
      for (let i = 1; i < FIRST_STEP_LOADS; i++) {
        const again = await load(config, { stop: 'first-step' });
        if (again.error) {
          result.note = [result.note, `a load for the time to the first step failed: ${again.error}`].filter(Boolean).join('; ');
          break;
        }
        times.push(again.firstStepMs);
      }
      times.sort((a, b) => a - b);
      Object.assign(result, { firstStepMs: times[Math.floor(times.length / 2)], firstStepRangeMs: [times[0], times.at(-1)], firstStepLoads: times.length });
    } else if (result.firstStepMs != null) {
      result.firstStepLoads = 1;
    }
    if (GPU_BACKENDS.has(config.backend)) await closeGpuBrowser();
    process.stderr.write(`${result.error ? `failed: ${result.error}` : 'done'}\n`);
    results.push(result);
  }
} finally {
  for (const server of Object.values(servers)) server.close();
  for (const browser of Object.values(browsers)) await browser.then((b) => b.close(), () => {});
}

// Ratios against TensorFlow.js's fastest backend that trains the model.
const fmt = (n, digits = 0) => (n == null ? '' : n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits }));
const train = results.filter((r) => r.task === 'train');
for (const r of train.filter((r) => r.lib === 'ferrograd')) {
  const peers = train.filter((p) => p.lib === 'tfjs' && p.model === r.model && !p.error && p.samplesPerSecond > 0);
  const best = peers.sort((a, b) => b.samplesPerSecond - a.samplesPerSecond)[0];
  if (best && r.samplesPerSecond) {
    r.ratio = r.samplesPerSecond / best.samplesPerSecond;
    r.versus = `tfjs/${best.backend}`;
  }
}
// Matmul against TensorFlow.js's wasm backend on as many threads.
const matmul = results.filter((r) => r.task === 'matmul');
for (const r of matmul.filter((r) => r.lib === 'ferrograd' && r.backend.startsWith('wasm'))) {
  const peer = matmul.find((p) => p.lib === 'tfjs' && p.backend === r.backend && p.gflops1024);
  if (peer && r.gflops1024) r.ratio1024 = r.gflops1024 / peer.gflops1024;
}
const lines = [
  `| library/backend | threads | model | samples/s | ratio to best tfjs | test acc. after 1 epoch | first step (ms), median of ${FIRST_STEP_LOADS} loads (range) | JS+wasm bytes | error or note |`,
  '| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | --- |',
  ...train.map((r) => `| ${r.lib}/${r.backend} | ${r.threads ?? ''} | ${r.model} | ${fmt(r.samplesPerSecond, r.samplesPerSecond < 10 ? 1 : 0)} | ${r.ratio ? `${fmt(r.ratio, 2)}x vs ${r.versus}` : ''} | ${r.accuracy == null ? '' : `${fmt(r.accuracy * 100, 1)}%`} | ${fmt(r.firstStepMs)}${r.firstStepRangeMs ? ` (${r.firstStepRangeMs.map((t) => fmt(t)).join('–')})` : r.firstStepMs == null ? '' : ' (one load)'} | ${fmt(r.codeBytes)} | ${r.error ?? r.note ?? ''} |`),
  '',
  '| library/backend | threads | matmul 256 GFLOP/s | matmul 1024 GFLOP/s | 1024 ratio to tfjs wasm, same threads | matmul 2048 GFLOP/s | JS+wasm bytes | error |',
  '| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |',
  ...matmul.map((r) => `| ${r.lib}/${r.backend} | ${r.threads ?? ''} | ${fmt(r.gflops256, 1)} | ${fmt(r.gflops1024, 1)} | ${r.ratio1024 ? `${fmt(r.ratio1024, 2)}x` : ''} | ${fmt(r.gflops2048, 1)} | ${fmt(r.codeBytes)} | ${r.error ?? ''} |`),
];
const dir = join(ROOT, 'bench/results');
mkdirSync(dir, { recursive: true });
writeFileSync(join(dir, 'results.json'), JSON.stringify(results, null, 2));
writeFileSync(join(dir, 'results.md'), `${lines.join('\n')}\n`);
console.log(lines.join('\n'));
