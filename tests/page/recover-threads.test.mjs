// No dead worker in the threaded build: there a training step runs on a thread of the pool,
// and a panic aborts only that thread's instance, leaving the worker waiting for it forever.
// The module posts the panic to the page, which starts a fresh worker on one thread.
//
// The panic is a real one, as in recover.test.mjs: 5,000 3x3 filters at a batch of 1,024 ask
// for a buffer past what a 32-bit wasm can address.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { browserAndServer, open, screenshot, waitForState } from './harness.mjs';

// Cross-origin isolated, as `ferrograd serve` is by default: the threaded build runs.
const env = browserAndServer();

const TRAPS = JSON.stringify({
  layers: [
    { type: 'conv2d', filters: 5000, kernel_size: 3, padding: 'same' },
    { type: 'max_pool2d', pool_size: 28 }, { type: 'flatten' }, { type: 'dense', units: 10 },
  ],
});

describe('a panic on a thread of the pool', () => {
  test('starts a fresh worker on one thread that says what happened, and every later action works', async () => {
    const query = `?model=custom&spec=${encodeURIComponent(TRAPS)}&batch=1024&epochs=1`;
    const { page, context, problems } = await open(env.browser, `${env.server.url}${query}`);
    const before = await waitForState(page, (s) => s.configured === true && s.dataComplete === true, 60_000);
    assert.ok(before.threads > 1, `the threaded build runs (${before.threads} threads)`);
    await page.click('#start');
    const notice = page.locator('#notice');
    await notice.waitFor({ state: 'visible', timeout: 60_000 });
    assert.match(await notice.textContent(), /^A thread of the training worker crashed \(capacity overflow\)\. A fresh worker carries on, on one thread/);
    const after = await waitForState(page, (s) => s.configured === true && s.dataComplete === true && s.threads === 1, 60_000);
    assert.equal(after.trainState, 'idle');
    assert.match(await page.locator('#backend').textContent(), /one thread \(threads off after a thread of the pool crashed\)/);
    assert.equal(await page.locator('#message').isVisible(), false, await page.locator('#message').textContent());

    // Another model, at a batch that fits, trains on the fresh worker.
    await page.selectOption('#model-preset', 'mlp');
    await page.fill('#batch-size', '64');
    await page.click('#apply');
    await waitForState(page, (s) => s.configured === true && s.steps === 0, 30_000);
    await page.click('#start');
    await waitForState(page, (s) => (s.steps ?? 0) > 20, 60_000);
    await page.click('#pause');
    await screenshot(page, 'recovered-threads');
    assert.equal(await page.locator('#message').isVisible(), false, await page.locator('#message').textContent());
    assert.deepEqual(problems.filter((p) => !/capacity overflow|unreachable/.test(p)), []);
    await context.close();
  });
});
