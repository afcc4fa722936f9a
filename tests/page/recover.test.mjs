// No dead worker: a wasm trap (a Rust panic aborts the instance: "unreachable") is met by a
// fresh instance that carries on, with a notice naming the trap, and every later action works.
//
// The trap is a real one: 5,000 3x3 filters keep each sample under the limit of values per
// sample (5,000 x 28 x 28 = 3.92 M), but a batch of 1,024 asks for a 4 G-element buffer, past
// what a 32-bit wasm can address: Rust's "capacity overflow" panic, which aborts the instance.

import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { before, describe, test } from 'node:test';
import { gzipSync } from 'node:zlib';

import { ROOT, browserAndServers, open, screenshot, waitForState } from './harness.mjs';

// `server`: the single-threaded build, where the panic happens on the training worker's own
// thread. `threaded`: the threaded build (cross-origin isolated, as `ferrograd serve` is by
// default), where a step runs on a thread of the pool and a panic aborts only that thread's
// instance, leaving the worker waiting for it forever: the module posts the panic to the
// page, which starts a fresh worker on one thread.
const env = browserAndServers({ server: { isolation: false }, threaded: {} });

const TRAPS = JSON.stringify({
  layers: [
    { type: 'conv2d', filters: 5000, kernel_size: 3, padding: 'same' },
    { type: 'max_pool2d', pool_size: 28 }, { type: 'flatten' }, { type: 'dense', units: 10 },
  ],
});

// A small data source (300 training and 300 test images of noise) so that an epoch ends soon,
// written under data/ (ignored by git), which `ferrograd serve` serves.
const TINY = 'data/test-tiny/';
before(() => {
  const dir = join(ROOT, TINY);
  mkdirSync(dir, { recursive: true });
  const idx = (type, dims, body) => {
    const header = Buffer.alloc(4 + 4 * dims.length);
    header.writeUInt32BE(0x0800 | dims.length, 0);
    dims.forEach((d, i) => header.writeUInt32BE(d, 4 + 4 * i));
    return gzipSync(Buffer.concat([header, body]));
  };
  const images = (n) => idx(8, [n, 28, 28], Buffer.from(Array.from({ length: n * 784 }, (_, i) => (i * 7919) % 256)));
  const labels = (n) => idx(8, [n], Buffer.from(Array.from({ length: n }, (_, i) => i % 10)));
  writeFileSync(join(dir, 'train-images-idx3-ubyte.gz'), images(300));
  writeFileSync(join(dir, 'train-labels-idx1-ubyte.gz'), labels(300));
  writeFileSync(join(dir, 't10k-images-idx3-ubyte.gz'), images(300));
  writeFileSync(join(dir, 't10k-labels-idx1-ubyte.gz'), labels(300));
});

// 4,000 filters train at batch 1, but the evaluation at the epoch's end takes 256 test images
// at once: 256 x 4,000 x 784 values overflow wasm32's address space.
const TRAPS_AT_EVALUATION = JSON.stringify({
  layers: [
    { type: 'conv2d', filters: 4000, kernel_size: 3, padding: 'same' },
    { type: 'max_pool2d', pool_size: 28 }, { type: 'flatten' }, { type: 'dense', units: 10 },
  ],
});

/**
 * Another model, at a batch that fits, trains after the recovery: 20 steps, then a pause, with
 * steps enough that training is still going when the pause arrives, on a quiet machine too:
 * on the 300 images of TINY, 100 epochs at batch 8 are 3,800 steps (at batch 64, 20 epochs
 * were 100, over before the pause on a fast machine).
 */
async function trainsAnotherModel(page) {
  await page.selectOption('#model-preset', 'mlp');
  await page.fill('#batch-size', '8');
  await page.fill('#epochs', '100');
  await page.click('#apply');
  await waitForState(page, (s) => s.configured === true && s.steps === 0, 30_000);
  await page.click('#start');
  await waitForState(page, (s) => (s.steps ?? 0) > 20, 60_000);
  await page.click('#pause');
  await waitForState(page, (s) => s.trainState === 'paused', 10_000);
}

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

    await trainsAnotherModel(page);
    await screenshot(page, 'recovered');
    assert.equal(await page.locator('#message').isVisible(), false, await page.locator('#message').textContent());
    // The panic's message on the console is the expected complaint; nothing else.
    assert.deepEqual(problems.filter((p) => !/capacity overflow|unreachable/.test(p)), []);
    await context.close();
  });

  test('the fresh instance carries on from the training last saved', async () => {
    const query = `?model=custom&spec=${encodeURIComponent(TRAPS_AT_EVALUATION)}&batch=1&epochs=2&data=${TINY}`;
    const { page, context, problems } = await open(env.browser, `${env.server.url}${query}`);
    await waitForState(page, (s) => s.configured === true && s.dataComplete === true, 60_000);
    await page.click('#start');
    await waitForState(page, (s) => (s.steps ?? 0) >= 10, 60_000);
    await page.click('#pause');
    const paused = (await waitForState(page, (s) => s.trainState === 'paused', 10_000)).steps;
    assert.ok(paused < 300, `paused at step ${paused}, before the epoch's end`);
    // Pausing saved the training; resuming runs into the evaluation's trap.
    await page.click('#start');
    const notice = page.locator('#notice');
    await notice.waitFor({ state: 'visible', timeout: 120_000 });
    // The training was saved on pausing, and again every 15 s of training after.
    const text = await notice.textContent();
    const match = text.match(/crashed while training \(unreachable\)\. A fresh one carries on from step (\d+), the training last saved; the data loads again\./);
    assert.ok(match, text);
    const from = Number(match[1]);
    assert.ok(from >= paused && from < 300, `carried on from step ${from}; paused at ${paused}`);
    assert.equal(await page.locator('#message').isVisible(), false, await page.locator('#message').textContent());
    await waitForState(page, (s) => s.dataComplete === true && s.trainState === 'paused', 60_000);
    await trainsAnotherModel(page);
    assert.equal(await page.locator('#message').isVisible(), false, await page.locator('#message').textContent());
    assert.deepEqual(problems.filter((p) => !/capacity overflow|unreachable/.test(p)), []);
    await context.close();
  });

  test('the embed says what happened, and trains another model after', async () => {
    const { page, context, problems } = await open(env.browser, `${env.server.url}embed.html#model=${encodeURIComponent(TRAPS)}&batch-size=1024&epochs=1`);
    const state = () => page.evaluate(() => ({ ...document.querySelector('ferrograd-playground').state }));
    const waitFor = (predicate, timeout) => page.waitForFunction(`(${predicate})(document.querySelector('ferrograd-playground')?.state ?? {})`, null, { timeout, polling: 100 });
    await waitFor((s) => s.configured === true && s.dataComplete === true, 60_000);
    await page.locator('ferrograd-playground .start').click();
    await waitFor((s) => s.notice != null, 60_000);
    assert.match((await state()).notice, /crashed while training \(unreachable\)\. A fresh one carries on with the model untrained/);
    assert.match(await page.locator('ferrograd-playground .notice').textContent(), /crashed/);
    assert.equal((await state()).error, null);
    await waitFor((s) => s.dataComplete === true && s.trainState === 'idle', 60_000);
    await page.locator('ferrograd-playground select').selectOption('mlp');
    await waitFor((s) => s.configured === true && s.steps === 0, 30_000);
    await page.locator('ferrograd-playground .start').click();
    await waitFor((s) => s.steps > 5, 60_000);
    assert.equal((await state()).error, null);
    assert.deepEqual(problems.filter((p) => !/capacity overflow|unreachable/.test(p)), []);
    await context.close();
  });
});

describe('a panic on a thread of the pool', () => {
  test('starts a fresh worker on one thread that says what happened, and every later action works', async () => {
    // An earlier visit kept a training in this browser (pausing keeps it); the shared link
    // below starts afresh, and its restart must not bring that other training back.
    const { page, context, problems } = await open(env.browser, `${env.threaded.url}?epochs=20`);
    await waitForState(page, (s) => s.configured === true && s.dataComplete === true, 60_000);
    await page.click('#start');
    await waitForState(page, (s) => (s.steps ?? 0) >= 10, 60_000);
    await page.click('#pause');
    await waitForState(page, (s) => s.trainState === 'paused', 10_000);
    await page.waitForTimeout(500); // the write to IndexedDB

    const query = `?model=custom&spec=${encodeURIComponent(TRAPS)}&batch=1024&epochs=1`;
    await page.goto(`${env.threaded.url}${query}`);
    const before = await waitForState(page, (s) => s.configured === true && s.dataComplete === true && s.steps === 0, 60_000);
    assert.ok(before.threads > 1, `the threaded build runs (${before.threads} threads)`);
    await page.click('#start');
    const notice = page.locator('#notice');
    await notice.waitFor({ state: 'visible', timeout: 60_000 });
    assert.match(await notice.textContent(), /^A thread of the training worker crashed \(capacity overflow\)\. A fresh worker carries on, on one thread/);
    const after = await waitForState(page, (s) => s.configured === true && s.dataComplete === true && s.threads === 1, 60_000);
    assert.equal(after.trainState, 'idle');
    await page.waitForTimeout(1000); // a resumed training would have arrived by now
    assert.equal(await page.evaluate(() => window.ferrograd.state.steps), 0, 'the earlier visit\'s training stays kept, not resumed');
    assert.equal(await page.locator('#kept-message').isVisible(), false);
    assert.match(await page.locator('#backend').textContent(), /one thread \((.*; )?threads off after a thread of the pool crashed\)/);
    assert.equal(await page.locator('#message').isVisible(), false, await page.locator('#message').textContent());

    await trainsAnotherModel(page);
    await screenshot(page, 'recovered-threads');
    assert.equal(await page.locator('#message').isVisible(), false, await page.locator('#message').textContent());
    assert.deepEqual(problems.filter((p) => !/capacity overflow|unreachable/.test(p)), []);
    await context.close();
  });
});
