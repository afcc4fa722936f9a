// The playground on both backends: with a WebGPU adapter (SwiftShader, a CPU Vulkan, so the
// speed says nothing) auto measures it against the CPU and stays on the CPU, saying why, and a
// forced WebGPU trains there, to the same accuracy as the CPU; without an adapter the page
// reports the CPU fallback and why, and trains. A GPU lost mid-run hands training to the CPU
// with a notice.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { browserAndServer, draw, open, screenshot, waitForState } from './harness.mjs';

const withGpu = browserAndServer(undefined, { webgpu: true });
const withoutGpu = browserAndServer();

const backendText = (page) => page.locator('#backend').textContent();

describe('with a WebGPU adapter', () => {
  test('auto measures WebGPU against the CPU, stays on the faster CPU and says why', async () => {
    const { page, context, problems } = await open(withGpu.browser, `${withGpu.server.url}?epochs=1`);
    await waitForState(page, (s) => s.dataComplete === true && s.backend != null, 30_000);
    // Until training measures them, the CPU runs.
    assert.equal(await page.evaluate(() => window.ferrograd.state.backend), 'cpu');
    assert.match(await backendText(page), /measuring WebGPU against the CPU for this model/);
    await page.click('#start');
    await page.waitForFunction(() => /WebGPU measured \d+\.\d\dx the CPU for this model/.test(document.querySelector('#backend').textContent), null, { timeout: 60_000 });
    const ratio = Number((await backendText(page)).match(/measured (\d+\.\d+)x/)[1]);
    // SwiftShader trains the MLP at a tenth of the CPU's speed or less.
    assert.ok(ratio < 1, `WebGPU measured ${ratio}x`);
    assert.equal(await page.evaluate(() => window.ferrograd.state.backend), 'cpu');
    await screenshot(page, 'webgpu-auto', 'header');
    const state = await waitForState(page, (s) => s.trainState === 'done' && s.testAccuracy != null, 180_000);
    assert.ok(state.testAccuracy > 0.89, `test accuracy ${state.testAccuracy}`);
    // The verdict holds for this model: training it again does not measure again.
    await page.click('#start');
    await waitForState(page, (s) => s.trainState === 'training' || s.trainState === 'done', 30_000);
    assert.match(await backendText(page), /WebGPU measured/);
    assert.deepEqual(problems, []);
    await context.close();
  });

  test('a forced WebGPU reports WebGPU and trains an epoch there to the CPU\'s accuracy', async () => {
    const { page, context, problems } = await open(withGpu.browser, `${withGpu.server.url}?epochs=1&backend=gpu`);
    await waitForState(page, (s) => s.dataComplete === true && s.backend != null, 30_000);
    assert.equal(await page.evaluate(() => window.ferrograd.state.backend), 'webgpu');
    assert.match(await backendText(page), /^WebGPU/);
    await page.click('#start');
    await waitForState(page, (s) => (s.steps ?? 0) > 20, 60_000);
    await screenshot(page, 'webgpu-training');
    const state = await waitForState(page, (s) => s.trainState === 'done' && s.testAccuracy != null, 180_000);
    // The CPU reaches 90.05% with these settings (tests/page/playground.test.mjs); the GPU
    // follows the same loss curve.
    assert.ok(state.testAccuracy > 0.89, `test accuracy ${state.testAccuracy}`);
    assert.ok(state.lossPoints >= 100, `the loss chart has ${state.lossPoints} points`);
    assert.equal(state.backend, 'webgpu', 'training stayed on the GPU');
    // Predictions read the weights back from the GPU.
    await draw(page, [[0.25, 0.2], [0.75, 0.2], [0.45, 0.85]]);
    await page.waitForFunction(() => [...document.querySelectorAll('#pad-probs .prob')].some((el) => Number(el.dataset.prob) > 0), null, { timeout: 20_000 });
    const probs = await page.$$eval('#pad-probs .prob', (els) => els.map((el) => Number(el.dataset.prob)));
    assert.ok(Math.abs(probs.reduce((a, b) => a + b, 0) - 1) < 1e-4, `probabilities ${probs}`);
    await screenshot(page, 'webgpu-trained');
    assert.deepEqual(problems, []);
    await context.close();
  });

  test('a convolutional network trains on the GPU, predicting a drawn digit while it trains', async () => {
    const { page, context, problems } = await open(withGpu.browser, `${withGpu.server.url}?model=cnn&epochs=1&backend=gpu`);
    await waitForState(page, (s) => s.dataComplete === true && s.backend === 'webgpu', 30_000);
    await page.click('#start');
    await waitForState(page, (s) => (s.steps ?? 0) >= 3, 90_000);
    // Predictions need the weights back from the GPU while steps keep being submitted.
    await draw(page, [[0.5, 0.15], [0.5, 0.85]]);
    await page.waitForFunction(() => [...document.querySelectorAll('#pad-probs .prob')].some((el) => Number(el.dataset.prob) > 0), null, { timeout: 30_000 });
    await waitForState(page, (s) => (s.steps ?? 0) >= 8, 90_000);
    await page.click('#pause');
    const loss = await page.evaluate(() => document.querySelector('#train-text').textContent);
    assert.match(loss, /samples\/s/);
    assert.equal(await page.evaluate(() => window.ferrograd.state.backend), 'webgpu');
    assert.deepEqual(problems, []);
    await context.close();
  });

  test('a lost GPU hands training to the CPU, which finishes it', async () => {
    const { page, context } = await open(withGpu.browser, `${withGpu.server.url}?epochs=2&backend=gpu`);
    await waitForState(page, (s) => s.dataComplete === true && s.backend === 'webgpu', 30_000);
    await page.click('#start');
    await waitForState(page, (s) => (s.steps ?? 0) >= 40, 60_000);
    await page.evaluate(() => window.ferrograd.loseGpu());
    await waitForState(page, (s) => s.backend === 'cpu', 30_000);
    const notice = await page.locator('#notice').textContent();
    assert.match(notice, /The GPU failed .*training carries on on the CPU from step \d+/);
    assert.doesNotMatch(notice, /\n/, 'the notice is one line, with no JavaScript stack in it');
    assert.match(await backendText(page), /^CPU .*the GPU failed/);
    const state = await waitForState(page, (s) => s.trainState === 'done', 120_000);
    assert.ok(state.testAccuracy > 0.88, `test accuracy ${state.testAccuracy}`);
    await screenshot(page, 'webgpu-lost');
    await context.close();
  });

  test('backend=cpu in the address keeps training on the CPU', async () => {
    const { page, context } = await open(withGpu.browser, `${withGpu.server.url}?backend=cpu`);
    await waitForState(page, (s) => s.configured === true && s.backend != null, 30_000);
    assert.equal(await page.evaluate(() => window.ferrograd.state.backend), 'cpu');
    assert.equal(await page.locator('#backend-choice').inputValue(), 'cpu');
    await context.close();
  });
});

describe('without a WebGPU adapter', () => {
  test('the page reports the CPU fallback and why, and trains', async () => {
    const { page, context, problems } = await open(withoutGpu.browser, `${withoutGpu.server.url}?backend=gpu&epochs=1`);
    await waitForState(page, (s) => s.dataComplete === true && s.backend != null, 30_000);
    assert.equal(await page.evaluate(() => window.ferrograd.state.backend), 'cpu');
    assert.match(await backendText(page), /^CPU .*\((WebGPU gave no adapter|this browser has no WebGPU)\)/);
    await page.click('#start');
    await waitForState(page, (s) => (s.steps ?? 0) > 20, 60_000);
    assert.deepEqual(problems, []);
    await context.close();
  });
});
