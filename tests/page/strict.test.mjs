// Strict pages: the page and the embed under the Content-Security-Policy the README gives
// (no inline script or style, wasm compiled under 'wasm-unsafe-eval'); the threaded build falling
// back to one thread, and saying so, where worker-src does not allow the pool's blob: workers;
// the embed in a frame sandboxed without allow-same-origin saying what the sandbox needs.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { browserAndServers, open, screenshot, withHeaders } from './harness.mjs';

// The harness's waitForState evaluates a string, which the policy (no 'unsafe-eval') refuses.
async function waitForState(page, predicate, timeout) {
  const until = Date.now() + timeout;
  for (;;) {
    const state = await page.evaluate(() => ({ ...(window.ferrograd?.state ?? {}) }));
    if (predicate(state)) return state;
    if (Date.now() > until) throw new Error(`timed out; state: ${JSON.stringify(state).slice(0, 400)}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

// The policy the README documents; `workers` is worker-src.
const policy = (workers) => [
  "default-src 'self'", "script-src 'self' 'wasm-unsafe-eval'", `worker-src ${workers}`,
  "style-src 'self'", "img-src 'self' data: blob:", "connect-src 'self'",
].join('; ');

// The two real servers, then a proxy in front of them per policy.
const servers = browserAndServers({ isolated: {}, plain: { isolation: false } }, {
  more: async ({ isolated, plain }) => ({
    strict: await withHeaders(isolated, { 'content-security-policy': policy("'self' blob:") }),
    noBlob: await withHeaders(isolated, { 'content-security-policy': policy("'self'") }),
    strictPlain: await withHeaders(plain, { 'content-security-policy': policy("'self' blob:") }),
  }),
});

/** Opens the page, waits for the data, trains a few steps; returns the state and the masthead. */
async function trainSome(url, name, options) {
  const { page, context, problems } = await open(servers.browser, url, options);
  await waitForState(page, (s) => s.dataComplete === true && s.threads != null, 60_000);
  await page.click('#start');
  const state = await waitForState(page, (s) => (s.steps ?? 0) > 5, 60_000);
  const backend = await page.locator('#backend').textContent();
  await screenshot(page, `strict-${name}`, 'header');
  await context.close();
  return { state, backend, problems };
}

describe('strict pages', () => {
  test('the page trains on every core under the documented policy, with no violation', async () => {
    const { state, backend, problems } = await trainSome(`${servers.strict.url}?epochs=1`, 'threads');
    assert.deepEqual(problems, []);
    const cores = await (async () => {
      const { page, context } = await open(servers.browser, 'about:blank');
      const n = await page.evaluate(() => navigator.hardwareConcurrency);
      await context.close();
      return n;
    })();
    assert.equal(state.threads, cores > 1 ? cores : 1);
    assert.doesNotMatch(backend, /could not start/);
  });

  test('where worker-src lacks blob:, the threaded build falls back to one thread and says so', async () => {
    // The pool's blocked workers are the one expected complaint.
    const { state, backend, problems } = await trainSome(`${servers.noBlob.url}?epochs=1`, 'no-blob', { expectFailures: ['blob:'] });
    assert.deepEqual(problems, []);
    assert.equal(state.threads, 1);
    assert.match(backend, /one thread \(.*threads could not start/);
  });

  test('embed.html runs under the policy: no inline script or style', async () => {
    const { page, context, problems } = await open(servers.browser, `${servers.strictPlain.url}embed.html#model=mlp&epochs=1&compact`);
    const state = () => page.evaluate(() => ({ ...document.querySelector('ferrograd-playground').state }));
    await page.waitForFunction(() => document.querySelector('ferrograd-playground')?.state?.dataComplete === true, null, { timeout: 60_000 });
    await page.locator('ferrograd-playground .start').click();
    await page.waitForFunction(() => document.querySelector('ferrograd-playground').state.steps > 5, null, { timeout: 60_000 });
    assert.equal((await state()).error, null);
    assert.deepEqual(problems, []);
    await context.close();
  });

  test('the embed in a frame sandboxed without allow-same-origin says what the sandbox needs', async () => {
    const { page, context } = await open(servers.browser, 'about:blank');
    const host = `${servers.plain.url}sandbox-host.html`;
    await page.route(host, (route) => route.fulfill({
      contentType: 'text/html',
      body: `<!doctype html><iframe sandbox="allow-scripts" src="embed.html#model=mlp" width="640" height="400"></iframe>`,
    }));
    await page.goto(host);
    const frame = page.frames().find((f) => f.url().includes('embed.html'));
    await frame.waitForFunction(() => document.querySelector('ferrograd-playground')?.state?.error != null, null, { timeout: 30_000 });
    const error = await frame.evaluate(() => document.querySelector('ferrograd-playground').state.error);
    assert.match(error, /allow-same-origin/);
    assert.match(await frame.locator('ferrograd-playground').textContent(), /allow-same-origin/);
    assert.ok(await frame.locator('ferrograd-playground .fallback').isVisible(), 'the message is shown');
    await screenshot(page, 'strict-sandboxed');
    await context.close();
  });
});
