// No dead worker: a wasm trap (a Rust panic aborts the instance: "unreachable") is met by a
// fresh instance that carries on, with a notice naming the trap, and every later action works.
//
// The trap is a real one: 5,000 3x3 filters keep each sample under the limit of values per
// sample (5,000 x 28 x 28 = 3.92 M), but a batch of 1,024 asks for a 4 G-element buffer, past
// what a 32-bit wasm can address: Rust's "capacity overflow" panic, which aborts the instance.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { browserAndServer, open, screenshot, waitForState } from './harness.mjs';

// The single-threaded build, where the panic happens on the training worker's own thread.
const env = browserAndServer({ isolation: false });

const TRAPS = JSON.stringify({
  layers: [
    { type: 'conv2d', filters: 5000, kernel_size: 3, padding: 'same' },
    { type: 'max_pool2d', pool_size: 28 }, { type: 'flatten' }, { type: 'dense', units: 10 },
  ],
});

describe('a trap in the wasm instance', () => {
  test('starts a fresh instance that says what happened, and every later action works', async () => {
    const query = `?model=custom&spec=${encodeURIComponent(TRAPS)}&batch=1024&epochs=1`;
    const { page, context, problems } = await open(env.browser, `${env.server.url}${query}`);
    await waitForState(page, (s) => s.configured === true && s.dataComplete === true, 60_000);
    await page.click('#start');
    const notice = page.locator('#notice');
    await notice.waitFor({ state: 'visible', timeout: 60_000 });
    assert.match(await notice.textContent(), /crashed while training \(unreachable\)\. A fresh one carries on with the model untrained; the data loads again\./);
    // The trap is the one error shown: no "recursive use of an object" after it.
    assert.equal(await page.locator('#message').isVisible(), false, await page.locator('#message').textContent());
    await waitForState(page, (s) => s.dataComplete === true && s.trainState === 'idle', 60_000);

    // Another model, at a batch that fits, trains on the fresh instance.
    await page.selectOption('#model-preset', 'mlp');
    await page.fill('#batch-size', '64');
    await page.click('#apply');
    await waitForState(page, (s) => s.configured === true && s.steps === 0, 30_000);
    await page.click('#start');
    await waitForState(page, (s) => (s.steps ?? 0) > 20, 60_000);
    await page.click('#pause');
    await waitForState(page, (s) => s.trainState === 'paused', 10_000);
    await screenshot(page, 'recovered');
    assert.equal(await page.locator('#message').isVisible(), false, await page.locator('#message').textContent());
    // The panic's message on the console is the expected complaint; nothing else.
    assert.deepEqual(problems.filter((p) => !/capacity overflow|unreachable/.test(p)), []);
    await context.close();
  });
});
