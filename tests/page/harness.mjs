// Shared by the page tests: the real `ferrograd serve` on a free port, and Debian's headless
// Chromium driven by playwright-core.

import { spawn } from 'node:child_process';
import { createServer, request } from 'node:http';
import { mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before } from 'node:test';
import { chromium } from 'playwright-core';

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '../..');
export const ARTIFACTS = join(ROOT, 'test-results');

const BINARY = join(ROOT, 'target/release/ferrograd');
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const FLAGS = [
  '--headless=new', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--disable-dev-shm-usage',
];

/**
 * Starts `ferrograd serve` on a free port; resolves with {url, close}. `isolation: false`
 * leaves out the cross-origin-isolation headers, as plain static hosting does.
 */
export function serve({ throttle, isolation = true } = {}) {
  const args = ['serve', '--root', ROOT, '--port', '0'];
  if (throttle) args.push('--throttle', String(throttle));
  if (!isolation) args.push('--no-isolation');
  const child = spawn(BINARY, args, { stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    let out = '';
    child.on('error', reject);
    child.on('exit', (code) => reject(new Error(`ferrograd serve exited with ${code}: ${out}`)));
    child.stdout.on('data', (data) => {
      out += data;
      const match = out.match(/http:\/\/[\d.]+:\d+\//);
      if (match) resolve({ url: match[0], close: () => child.kill() });
    });
  });
}

/**
 * A proxy in front of `target` (a served {url}) that adds `headers` to every answer, e.g. a
 * Content-Security-Policy; resolves with {url, close}.
 */
export function withHeaders(target, headers) {
  const server = createServer((req, res) => {
    const upstream = request(new URL(req.url, target.url), { method: req.method, headers: req.headers }, (answer) => {
      res.writeHead(answer.statusCode, { ...answer.headers, ...headers });
      answer.pipe(res);
    });
    upstream.on('error', (error) => res.destroy(error));
    req.pipe(upstream);
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => resolve({
      url: `http://127.0.0.1:${server.address().port}/`,
      close: () => { server.closeAllConnections(); server.close(); },
    }));
  });
}

// WebGPU on SwiftShader, the CPU Vulkan that ships with Chromium: a real adapter for the GPU
// path where the machine has no GPU. Without these flags `requestAdapter()` gives null.
const WEBGPU_FLAGS = [
  '--headless=new', '--no-sandbox', '--disable-quic', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage',
  '--enable-unsafe-webgpu', '--enable-features=Vulkan', '--use-vulkan=swiftshader', '--use-webgpu-adapter=swiftshader',
];

/** Headless Chromium; with `webgpu`, with a WebGPU adapter on SwiftShader. */
export async function launch({ webgpu = false } = {}) {
  return chromium.launch({ executablePath: CHROMIUM, args: webgpu ? WEBGPU_FLAGS : FLAGS });
}

/**
 * Registers hooks that start Chromium (with WebGPU when `webgpu`) and one `ferrograd serve`
 * per entry of `named` (`{name: serveOptions}`) before the file's tests, then the servers that
 * `more(env)` resolves to (`{name: {url, close}}`, proxies in front of the first ones, say),
 * and stop them all after; returns `{browser, [name]: server}`, filled in once started.
 */
export function browserAndServers(named, { webgpu = false, more } = {}) {
  const env = {};
  before(async () => {
    env.browser = await launch({ webgpu });
    for (const [name, options] of Object.entries(named)) env[name] = await serve(options);
    if (more) Object.assign(env, await more(env));
  });
  after(async () => {
    await env.browser?.close();
    for (const [name, server] of Object.entries(env)) if (name !== 'browser') server.close();
  });
  return env;
}

/** As browserAndServers with one server: returns `{browser, server}`. */
export function browserAndServer(serveOptions, options) {
  return browserAndServers({ server: serveOptions }, options);
}

/** Draws a stroke through `points` (fractions of the pad) with synthesised pointer events. */
export async function draw(page, points, pad = '#pad') {
  await page.locator(pad).scrollIntoViewIfNeeded();
  const box = await page.locator(pad).boundingBox();
  const at = ([x, y]) => [box.x + x * box.width, box.y + y * box.height];
  await page.mouse.move(...at(points[0]));
  await page.mouse.down();
  for (const point of points.slice(1)) await page.mouse.move(...at(point), { steps: 8 });
  await page.mouse.up();
}

/**
 * Opens `url` in a fresh page, recording console errors, page errors and failed requests
 * (4xx/5xx answers included) in `problems`.
 */
export async function open(browser, url, { expectFailures = [], viewport, colorScheme } = {}) {
  const context = await browser.newContext({ viewport: viewport ?? { width: 1280, height: 900 }, colorScheme });
  const page = await context.newPage();
  const problems = [];
  const expected = (u) => expectFailures.some((part) => u.includes(part));
  page.on('console', (msg) => {
    if (msg.type() === 'error' && !expected(msg.text())) problems.push(`console: ${msg.text()}`);
  });
  page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
  page.on('requestfailed', (req) => {
    if (!expected(req.url()) && !req.failure()?.errorText.includes('ERR_ABORTED')) {
      problems.push(`request failed: ${req.url()} ${req.failure()?.errorText}`);
    }
  });
  page.on('response', (res) => {
    if (res.status() >= 400 && !expected(res.url())) problems.push(`HTTP ${res.status()}: ${res.url()}`);
  });
  await page.goto(url);
  return { page, context, problems };
}

/** Saves a screenshot of the whole page, or of one element when `selector` is given. */
export async function screenshot(page, name, selector) {
  mkdirSync(ARTIFACTS, { recursive: true });
  const path = join(ARTIFACTS, `${name}.png`);
  if (selector) await page.locator(selector).screenshot({ path });
  else await page.screenshot({ path, fullPage: true });
  return path;
}

/** Waits until the page's test hook reports `predicate(state)`. */
export async function waitForState(page, predicate, timeout = 60_000) {
  await page.waitForFunction(`(${predicate})(window.ferrograd?.state ?? {})`, null, { timeout, polling: 100 });
  return page.evaluate(() => window.ferrograd.state);
}
