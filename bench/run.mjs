// Runs every benchmark configuration, each in a fresh page of headless Chromium served by
// `ferrograd serve` (cross-origin isolated), and writes bench/results/results.{json,md}.
//
// Usage: node bench/run.mjs [--seconds 5] [--epoch-budget 120] [--only ferrograd|tfjs]
// (scripts/bench.sh installs TensorFlow.js and builds first.)

import { spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { chromium } from 'playwright-core';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const { values: options } = parseArgs({ options: { seconds: { type: 'string', default: '5' }, 'epoch-budget': { type: 'string', default: '120' }, only: { type: 'string' } } });

const MODELS = ['mlp', 'cnn', 'lstm'];
const TFJS_BACKENDS = ['cpu', 'wasm', 'webgl', 'webgpu'];
const configs = [];
for (const model of MODELS) {
  configs.push({ lib: 'ferrograd', backend: 'wasm', task: 'train', model });
  configs.push({ lib: 'ferrograd', backend: 'webgpu', task: 'train', model });
  for (const backend of TFJS_BACKENDS) configs.push({ lib: 'tfjs', backend, task: 'train', model });
}
configs.push({ lib: 'ferrograd', backend: 'wasm', task: 'matmul' });
configs.push({ lib: 'ferrograd', backend: 'webgpu', task: 'matmul' });
for (const backend of TFJS_BACKENDS) configs.push({ lib: 'tfjs', backend, task: 'matmul' });

function serve() {
  const child = spawn(join(ROOT, 'target/release/ferrograd'), ['serve', '--root', ROOT, '--port', '0'], { stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.stdout.on('data', (data) => {
      const match = String(data).match(/http:\/\/[\d.]+:\d+\//);
      if (match) resolve({ url: match[0], close: () => child.kill() });
    });
  });
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  args: [
    '--headless=new', '--no-sandbox', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage',
    // WebGL and WebGPU on the CPU (SwiftShader): numbers that say nothing about a real GPU.
    '--use-angle=swiftshader', '--enable-unsafe-swiftshader',
    '--enable-unsafe-webgpu', '--enable-features=Vulkan', '--use-vulkan=swiftshader', '--use-webgpu-adapter=swiftshader',
  ],
});
const server = await serve();
const results = [];
try {
  for (const config of configs.filter((c) => !options.only || c.lib === options.only)) {
    const page = await browser.newPage();
    const query = new URLSearchParams({ ...config, seconds: options.seconds, epochBudget: options['epoch-budget'] });
    const label = `${config.lib}/${config.backend} ${config.task}${config.model ? ` ${config.model}` : ''}`;
    process.stderr.write(`${label} … `);
    let result;
    try {
      await page.goto(`${server.url}bench/index.html?${query}`);
      await page.waitForFunction(() => window.benchResult, null, { timeout: 15 * 60_000, polling: 500 });
      result = await page.evaluate(() => window.benchResult);
    } catch (error) {
      result = { ...config, error: String(error.message).split('\n')[0] };
    }
    process.stderr.write(`${result.error ? `failed: ${result.error}` : 'done'}\n`);
    results.push(result);
    await page.close();
  }
} finally {
  server.close();
  await browser.close();
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
const matmul = results.filter((r) => r.task === 'matmul');
const lines = [
  '| library/backend | model | samples/s | ratio to best tfjs | test acc. after 1 epoch | first step (ms) | JS+wasm bytes | error or note |',
  '| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |',
  ...train.map((r) => `| ${r.lib}/${r.backend} | ${r.model} | ${fmt(r.samplesPerSecond)} | ${r.ratio ? `${fmt(r.ratio, 2)}x vs ${r.versus}` : ''} | ${r.accuracy == null ? '' : `${fmt(r.accuracy * 100, 1)}%`} | ${fmt(r.firstStepMs)} | ${fmt(r.codeBytes)} | ${r.error ?? r.note ?? ''} |`),
  '',
  '| library/backend | matmul 256 GFLOP/s | matmul 1024 GFLOP/s | matmul 2048 GFLOP/s | JS+wasm bytes | error |',
  '| --- | ---: | ---: | ---: | ---: | --- |',
  ...matmul.map((r) => `| ${r.lib}/${r.backend} | ${fmt(r.gflops256, 1)} | ${fmt(r.gflops1024, 1)} | ${fmt(r.gflops2048, 1)} | ${fmt(r.codeBytes)} | ${r.error ?? ''} |`),
];
const dir = join(ROOT, 'bench/results');
mkdirSync(dir, { recursive: true });
writeFileSync(join(dir, 'results.json'), JSON.stringify(results, null, 2));
writeFileSync(join(dir, 'results.md'), `${lines.join('\n')}\n`);
console.log(lines.join('\n'));
