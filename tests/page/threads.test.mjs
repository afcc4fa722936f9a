// Threads: a cross-origin-isolated page trains with the threaded module (a Web Worker per
// core sharing the wasm memory), a page served without the isolation headers with the
// single-threaded one, with no error; both reach the same model. On one thread, where the
// browser has relaxed SIMD, the page takes the build that fuses the product's multiply-adds:
// a model within rounding of the plain one.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { browserAndServers, open, screenshot, waitForState } from './harness.mjs';

const env = browserAndServers({ isolated: {}, plain: { isolation: false } });

/** Trains one seeded epoch of the MLP; returns the test accuracy, the thread count and the backend line. */
async function trainEpoch(server, name, more = '') {
  const { page, context, problems } = await open(env.browser, `${server.url}?epochs=1&seed=7${more}`);
  await waitForState(page, (s) => s.dataComplete === true && s.threads != null, 30_000);
  const cores = await page.evaluate(() => navigator.hardwareConcurrency);
  await page.click('#start');
  const state = await waitForState(page, (s) => s.testAccuracy != null, 120_000);
  const backend = await page.locator('#backend').textContent();
  await screenshot(page, `threads-${name}`, 'header');
  assert.deepEqual(problems, []);
  await context.close();
  return { accuracy: state.testAccuracy, threads: state.threads, cores, backend };
}

describe('threads', () => {
  test('an isolated page trains on every core, and to the same accuracy as one thread', async () => {
    const threaded = await trainEpoch(env.isolated, 'isolated');
    const single = await trainEpoch(env.plain, 'plain', '&simd=plain');
    // The threaded module loads where there is more than one core to use.
    assert.equal(threaded.threads, threaded.cores > 1 ? threaded.cores : 1);
    assert.match(threaded.backend, threaded.cores > 1 ? new RegExp(`CPU · WebAssembly SIMD, ${threaded.cores} threads`) : /one thread/);
    assert.equal(single.threads, 1);
    assert.match(single.backend, /CPU · WebAssembly SIMD, one thread/);
    // Relaxed SIMD, which this Chromium has: fused multiply-adds round once, so the model
    // differs from the plain one only by rounding.
    const relaxed = await trainEpoch(env.plain, 'relaxed');
    assert.match(relaxed.backend, /CPU · WebAssembly relaxed SIMD, one thread/);
    assert.ok(Math.abs(relaxed.accuracy - single.accuracy) <= 0.01, `relaxed ${relaxed.accuracy}, plain ${single.accuracy}`);
    // Products are cut into pieces that each sum over the whole inner dimension, so the
    // arithmetic, and the model, are the same to the bit.
    assert.equal(threaded.accuracy, single.accuracy);
    assert.ok(single.accuracy > 0.85, `test accuracy ${single.accuracy}`);
  });
});
