// Keeping a model: save and load a training file, refuse bad files without losing the
// model, export ONNX with one click, and resume after a reload from IndexedDB.

import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { describe, test } from 'node:test';

import { browserAndServer, open, waitForState } from './harness.mjs';

const env = browserAndServer();

async function downloadOf(page, button) {
  const [download] = await Promise.all([page.waitForEvent('download'), page.click(button)]);
  return { name: download.suggestedFilename(), bytes: await readFile(await download.path()) };
}

// Trains to at least `steps` and pauses. The runs have 20 epochs so that training cannot
// finish (the MLP runs an epoch in about a second) before the pause arrives on a busy machine.
async function trainSome(page, steps) {
  await page.click('#start');
  await page.waitForFunction((n) => window.ferrograd.state.steps >= n, steps, { timeout: 30_000 });
  await page.click('#pause');
  await waitForState(page, (s) => s.trainState === 'paused', 10_000);
  return page.evaluate(() => window.ferrograd.state.steps);
}

const loadFile = (page, name, buffer) => page.setInputFiles('#load-file', { name, mimeType: 'application/octet-stream', buffer });

describe('keeping a model', () => {
  test('save, refuse truncated and foreign files with the model intact, load back, export ONNX', async () => {
    const { page, context, problems } = await open(env.browser, `${env.server.url}?model=cnn&epochs=20`);
    await waitForState(page, (s) => s.configured === true && s.dataComplete === true, 30_000);
    const steps = await trainSome(page, 8);

    const saved = await downloadOf(page, '#save-model');
    assert.match(saved.name, new RegExp(`^ferrograd-cnn-step${steps}\\.safetensors$`));
    assert.ok(saved.bytes.length > 10_000, `saved ${saved.bytes.length} bytes`);

    await loadFile(page, 'cut.safetensors', saved.bytes.subarray(0, saved.bytes.length - 100));
    await page.waitForFunction(() => /cut\.safetensors: .*unchanged/.test(document.querySelector('#file-message').textContent));
    await loadFile(page, 'page.html', Buffer.from('<!doctype html><title>not a model</title>'));
    await page.waitForFunction(() => /page\.html: .*not a safetensors file/.test(document.querySelector('#file-message').textContent));
    assert.equal(await page.evaluate(() => window.ferrograd.state.steps), steps, 'the model is still the one trained');

    // Train on, then go back to the saved file: the step count returns to the saved one.
    await trainSome(page, steps + 5);
    await loadFile(page, saved.name, saved.bytes);
    await page.waitForFunction((n) => window.ferrograd.state.steps === n && document.querySelector('#file-message').textContent === '', steps);
    assert.match(await page.locator('#kept-text').textContent(), new RegExp(`${saved.name.replace('.', '\\.')}: ${steps} steps`));
    assert.match(await page.locator('#model-spec').inputValue(), /"conv2d"/);
    await page.click('#start');
    await page.waitForFunction((n) => window.ferrograd.state.steps > n, steps, { timeout: 30_000 });

    const onnx = await downloadOf(page, '#export-onnx');
    assert.match(onnx.name, /\.onnx$/);
    // An ONNX ModelProto starts with field 1 (ir_version) as a varint: the byte 0x08.
    assert.equal(onnx.bytes[0], 0x08);
    assert.ok(onnx.bytes.includes(Buffer.from('Conv')), 'the graph holds Conv nodes');
    assert.deepEqual(problems, []);
    await context.close();
  });

  test('a reload carries on from the training kept in the browser', async () => {
    const { page, context, problems } = await open(env.browser, `${env.server.url}?epochs=20`);
    await waitForState(page, (s) => s.configured === true && s.dataComplete === true, 30_000);
    const steps = await trainSome(page, 10);
    // Pausing keeps the training in IndexedDB; give the write a moment.
    await page.waitForTimeout(500);
    await page.reload();
    await page.waitForFunction((n) => window.ferrograd?.state?.steps === n, steps, { timeout: 30_000 });
    assert.match(await page.locator('#kept-text').textContent(), /kept in this browser/);
    assert.equal(await page.locator('#start').textContent(), 'Resume');

    // "Start over instead" goes back to the address's setup, from scratch.
    await page.click('#forget-kept');
    await page.waitForFunction(() => window.ferrograd.state.steps === 0);
    assert.deepEqual(problems, []);
    await context.close();
  });
});
