// The playground page in headless Chromium, as a user meets it.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { browserAndServer, draw, open, screenshot, serve, waitForState } from './harness.mjs';

const env = browserAndServer();

const steps = (page) => page.evaluate(() => window.ferrograd.state.steps ?? 0);

describe('the playground page', () => {
  test('loads with no console errors or failed requests', async () => {
    const { page, context, problems } = await open(env.browser, env.server.url);
    await waitForState(page, (s) => s.dataComplete === true, 30_000);
    await page.waitForTimeout(300);
    assert.deepEqual(problems, []);
    assert.match(await page.locator('#backend').textContent(), /CPU/);
    await context.close();
  });

  test('trains to over 85% test accuracy with a loss curve, and the main thread stays responsive', async () => {
    const { page, context, problems } = await open(env.browser, `${env.server.url}?epochs=1`);
    await waitForState(page, (s) => s.dataComplete === true, 30_000);
    await page.click('#start');
    await waitForState(page, (s) => (s.steps ?? 0) > 20);
    // What the browser reports of the page's own work, not a timer's lateness (which a busy
    // machine makes late whatever the page does): training in the worker leaves the main
    // thread no task anywhere near a training step's or an epoch's length, and almost none
    // over 50 ms.
    assert.ok(await page.evaluate(() => PerformanceObserver.supportedEntryTypes.includes('longtask')), 'the browser reports long tasks');
    const before = await page.evaluate(() => window.ferrograd.longTasks.length);
    await waitForState(page, (s) => (s.steps ?? 0) > 60);
    const longTasks = await page.evaluate((n) => window.ferrograd.longTasks.slice(n), before);
    assert.ok(longTasks.every((ms) => ms < 500), `the main thread ran long tasks of ${longTasks} ms while training`);
    assert.ok(longTasks.length <= 3, `${longTasks.length} long tasks (${longTasks} ms) on the main thread over 40 steps`);
    await screenshot(page, 'playground-training');

    const state = await waitForState(page, (s) => s.testAccuracy != null, 120_000);
    assert.ok(state.testAccuracy > 0.85, `test accuracy ${state.testAccuracy}`);
    const shown = await page.locator('#test-accuracy').textContent();
    assert.match(shown, /^\s*(8[5-9]|9\d)(\.\d)?%\s*$/);
    const lossPoints = await page.evaluate(() => window.ferrograd.state.lossPoints);
    assert.ok(lossPoints > 10, `the loss chart has ${lossPoints} points`);
    assert.ok(await page.locator('#digits canvas:not([hidden])').count() > 0, 'the digit grid is drawn');
    await screenshot(page, 'playground-trained');
    assert.deepEqual(problems, []);
    await context.close();
  });

  test('drawing a digit shows probabilities that sum to 1', async () => {
    const { page, context } = await open(env.browser, env.server.url);
    await waitForState(page, (s) => s.ready === true && s.configured === true, 30_000);
    // A "7": a bar across the top, then a stroke down to the lower left.
    await draw(page, [[0.25, 0.2], [0.75, 0.2], [0.45, 0.85]]);
    await page.waitForFunction(() => {
      const probs = [...document.querySelectorAll('#pad-probs .prob')].map((el) => Number(el.dataset.prob));
      return probs.length === 10 && probs.some((p) => p > 0);
    }, null, { timeout: 10_000 });
    const probs = await page.$$eval('#pad-probs .prob', (els) => els.map((el) => Number(el.dataset.prob)));
    const sum = probs.reduce((a, b) => a + b, 0);
    assert.ok(Math.abs(sum - 1) < 1e-4, `probabilities sum to ${sum}`);
    await context.close();
  });

  test('a bad data URL and bytes that are not IDX show a clear message and keep the data', async () => {
    const { page, context } = await open(env.browser, env.server.url, { expectFailures: ['data/missing/'] });
    await waitForState(page, (s) => s.dataComplete === true, 30_000);
    await page.fill('#data-url', 'data/missing/');
    await page.click('#load-data');
    await page.waitForFunction(() => /404/.test(document.querySelector('#data-message').textContent));
    assert.match(await page.locator('#data-message').textContent(), /data\/missing\/.*404/);

    const notIdx = ['index.html', 'index.html', 'index.html', 'index.html'].map((f) => env.server.url + f).join(' ');
    await page.fill('#data-url', notIdx);
    await page.click('#load-data');
    await page.waitForFunction(() => /not an IDX stream/.test(document.querySelector('#data-message').textContent));

    const before = await steps(page);
    await page.click('#start');
    await page.waitForFunction((n) => window.ferrograd.state.steps > n + 5, before, { timeout: 30_000 });
    await context.close();
  });

  test('a malformed JSON spec shows an inline error, and training starts once it is fixed', async () => {
    const { page, context } = await open(env.browser, env.server.url);
    await waitForState(page, (s) => s.configured === true, 30_000);
    await page.fill('#model-spec', '{"layers": [{"type": "flatten"}, {"type": "dense", "units": 10,}]}');
    await page.click('#apply');
    await page.waitForFunction(() => document.querySelector('#spec-error').textContent.trim().length > 0);
    assert.match(await page.locator('#spec-error').textContent(), /line 1|column|JSON/i);

    await page.fill('#model-spec', '{"layers": [{"type": "flatten"}, {"type": "dense", "units": 0}]}');
    await page.click('#apply');
    await page.waitForFunction(() => /layers\[1\] \(dense\)\.units/.test(document.querySelector('#spec-error').textContent));

    await page.fill('#model-spec', '{"layers": [{"type": "flatten"}, {"type": "dense", "units": 10}]}');
    await page.click('#apply');
    await page.waitForFunction(() => document.querySelector('#spec-error').textContent.trim() === '');
    await page.click('#start');
    await waitForState(page, (s) => (s.steps ?? 0) > 5, 30_000);
    await context.close();
  });
});

describe('the playground page: your own digits and preprocessing', () => {
  test('a drawn digit, labelled, joins the training data; the examples can be cleared', async () => {
    const { page, context, problems } = await open(env.browser, env.server.url);
    await waitForState(page, (s) => s.configured === true && s.dataComplete === true, 30_000);
    assert.equal(await page.locator('#pad-add').isDisabled(), true, 'nothing drawn, nothing to add');
    await draw(page, [[0.5, 0.15], [0.5, 0.85]]);
    await page.selectOption('#pad-label', '1');
    await page.click('#pad-add');
    await page.waitForFunction(() => document.querySelector('#examples-count').textContent === '1');
    await page.click('#pad-add');
    await page.waitForFunction(() => document.querySelector('#examples-count').textContent === '2');
    await page.click('#examples-clear');
    await page.waitForFunction(() => document.querySelector('#examples-count').textContent === '0');
    await page.click('#pad-clear');
    await page.waitForFunction(() => [...document.querySelectorAll('#pad-probs .prob')].every((el) => el.dataset.prob === '0'));
    assert.deepEqual(problems, []);
    await context.close();
  });

  test('standardised pixels, cleaning and augmentation from the address train, and the dropped count shows', async () => {
    const { page, context, problems } = await open(env.browser, `${env.server.url}?normalize=standard&clean=true&augment=true&epochs=1`);
    await waitForState(page, (s) => s.configured === true && s.dataComplete === true, 30_000);
    assert.equal(await page.locator('#normalize').inputValue(), 'standard');
    assert.equal(await page.locator('#clean').isChecked(), true);
    assert.equal(await page.locator('#augment').isChecked(), true);
    assert.equal(await page.locator('#dropped-wrap').isHidden(), false, 'cleaning shows how many samples it dropped');
    assert.match(await page.locator('#dropped').textContent(), /^\d[\d,]*$/);
    await page.click('#start');
    await waitForState(page, (s) => (s.steps ?? 0) > 10, 30_000);
    assert.deepEqual(problems, []);
    await context.close();
  });

  test('a bad setting in the address is reported and the default used', async () => {
    const { page, context } = await open(env.browser, `${env.server.url}?epochs=many&optimizer=rmsprop`);
    await waitForState(page, (s) => s.configured === true, 30_000);
    const message = await page.locator('#message').textContent();
    assert.match(message, /epochs \(epochs\): "many" is not a whole number/);
    assert.match(message, /optimizer \(optimizer\): "rmsprop" is not one of adam, sgd/);
    assert.equal(await page.locator('#epochs').inputValue(), '5');
    await context.close();
  });
});

describe('the playground page on a slow connection', () => {
  let slow;
  before(async () => {
    // About 250 kB/s: the 1.6 MB of gzip data take several seconds.
    slow = await serve({ throttle: 250_000 });
  });
  after(() => slow?.close());

  test('the first training step completes before the download does', async () => {
    const { page, context, problems } = await open(env.browser, slow.url);
    await waitForState(page, (s) => s.configured === true, 30_000);
    await page.click('#start');
    const state = await waitForState(page, (s) => (s.steps ?? 0) >= 1, 30_000);
    assert.equal(state.firstStepBeforeDataComplete, true, 'training should start while the data streams');
    const bar = await page.$eval('#data-bar', (el) => [el.value, el.max]);
    assert.ok(bar[0] < bar[1], `the data bar should still be filling: ${bar}`);
    await screenshot(page, 'playground-streaming');
    await waitForState(page, (s) => s.dataComplete === true, 60_000);
    assert.deepEqual(problems, []);
    await context.close();
  });
});
