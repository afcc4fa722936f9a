// Each preset chosen in the page trains, and the inside views render real images for it; the
// attention view shows the model's own weights for the patch the user picks; the page also
// works in the dark theme, at phone width and from the keyboard.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { browserAndServer, draw, open, screenshot, waitForState } from './harness.mjs';

const env = browserAndServer();

/** A "2": a hook at the top, a diagonal down to the left, a bar along the bottom. */
const TWO = [[0.3, 0.3], [0.5, 0.18], [0.7, 0.3], [0.65, 0.5], [0.3, 0.82], [0.75, 0.82]];

/**
 * For every canvas under `selector`: how many distinct colours it shows. A view drawn from
 * real numbers has many; a blank or failed one has one.
 */
const canvasColours = (page, selector) => page.$$eval(`${selector} canvas`, (canvases) => canvases.map((canvas) => {
  const { data } = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height);
  const colours = new Set();
  for (let i = 0; i < data.length; i += 4) colours.add((data[i] << 16) | (data[i + 1] << 8) | data[i + 2]);
  return colours.size;
}));

const VIEWS = {
  mlp: ['#saliency'],
  cnn: ['#saliency', '#filters', '#feature-maps'],
  lstm: ['#saliency', '#gates'],
  gru: ['#saliency', '#gates'],
  resnet: ['#saliency', '#filters', '#feature-maps'],
  vit: ['#saliency', '#attention'],
};
const SPEC_MARK = {
  mlp: '"dense"', cnn: '"conv2d"', lstm: '"lstm"', gru: '"gru"', resnet: '"residual"', vit: '"multi_head_attention"',
};

describe('the presets in the page', () => {
  for (const preset of Object.keys(VIEWS)) {
    test(`${preset}: chosen from the list, it trains and its inside views render`, async () => {
      const { page, context, problems } = await open(env.browser, `${env.server.url}?epochs=1`);
      await waitForState(page, (s) => s.configured === true && s.dataComplete === true, 30_000);
      if (preset !== 'mlp') {
        await page.selectOption('#model-preset', preset);
        await page.waitForFunction((mark) => document.querySelector('#model-spec').value.includes(mark), SPEC_MARK[preset]);
        assert.match(page.url(), new RegExp(`model=${preset}`));
      }
      await page.click('#start');
      await waitForState(page, (s) => (s.steps ?? 0) > 10, 60_000);
      await draw(page, TWO);
      for (const view of VIEWS[preset]) {
        await page.waitForSelector(`#inside ${view} canvas`, { timeout: 20_000 });
        const colours = await canvasColours(page, `#inside ${view}`);
        assert.ok(colours.length > 0, `${view} has canvases`);
        assert.ok(colours.every((n) => n > 1), `${view}: every image shows more than one colour (${colours})`);
      }
      // The views follow the pad while it is drawn on; the screenshot shows the whole digit.
      await page.waitForTimeout(1500);
      await screenshot(page, `inside-${preset}`, '#inside');
      assert.deepEqual(problems, []);
      await context.close();
    });
  }
});

describe('the attention view', () => {
  /** Every head's drawn row: {layer, head, query, weights} from the canvases' data attributes. */
  const drawnRows = (page) => page.$$eval('#attention canvas[data-head]', (canvases) => canvases.map((c) => ({
    layer: Number(c.dataset.layer), head: Number(c.dataset.head), query: Number(c.dataset.query), weights: JSON.parse(c.dataset.weights),
  })));
  /** The same rows read from the inspection the page last drew (`window.ferrograd.inspection`). */
  const inspectedRows = (page, query) => page.evaluate((q) => window.ferrograd.inspection.attention.layers.flatMap(({ heads, tokens, weights }, layer) => (
    Array.from({ length: heads }, (_, head) => ({
      layer, head, query: q, weights: Array.from(weights.slice((head * tokens + q) * tokens, (head * tokens + q + 1) * tokens)),
    })))), query);
  const close = (a, b, tolerance) => a.length === b.length && a.every((v, i) => Math.abs(v - b[i]) <= tolerance);

  test('vit: each head of each layer shows its weights from the picked patch, live, and the rollout', async () => {
    const { page, context, problems } = await open(env.browser, `${env.server.url}?model=vit&epochs=20`);
    await waitForState(page, (s) => s.configured === true && s.dataComplete === true, 30_000);
    await page.click('#start');
    await waitForState(page, (s) => (s.steps ?? 0) > 10, 60_000);
    await draw(page, TWO);
    await page.waitForSelector('#attention canvas[data-head][data-weights]', { timeout: 20_000 });

    // Two layers of four heads, each a row of 16 weights (the 4x4 patches) that sums to 1.
    const first = await drawnRows(page);
    assert.equal(first.length, 8, 'two attention layers of four heads');
    for (const { layer, head, weights } of first) {
      assert.equal(weights.length, 16);
      assert.ok(weights.every((w) => w >= 0 && w <= 1), `layer ${layer} head ${head}: weights in [0, 1]`);
      const sum = weights.reduce((a, b) => a + b, 0);
      assert.ok(Math.abs(sum - 1) < 1e-3, `layer ${layer} head ${head}: the picked query's row sums to ${sum}`);
    }
    // Real weights are not uniform (1/16 each), and the heads differ.
    assert.ok(first.some(({ weights }) => weights.some((w) => Math.abs(w - 1 / 16) > 1e-3)), 'weights are not all 1/16');
    assert.ok(first.some(({ weights }) => !close(weights, first[0].weights, 1e-4)), 'the heads differ');
    const colours = await canvasColours(page, '#attention');
    assert.ok(colours.every((n) => n > 10), `every attention image is drawn from the weights (${colours} colours)`);

    // Live: while the model trains, the same head from the same patch changes, and the patch
    // picker keeps the keyboard focus through the redraws.
    await page.focus('#attention .patch[aria-pressed="true"]');
    const before = first[0].weights;
    await page.waitForFunction((old) => {
      const canvas = document.querySelector('#attention canvas[data-head]');
      return canvas.dataset.weights !== JSON.stringify(old);
    }, before, { timeout: 20_000 });
    assert.equal(await page.evaluate(() => document.activeElement.className), 'patch', 'the picked patch keeps the focus');

    // Paused, the view must draw exactly the rows of the inspection for the picked patch, and
    // another patch gives other rows.
    await page.click('#pause');
    await waitForState(page, (s) => s.trainState === 'paused', 10_000);
    await page.waitForTimeout(1500); // an inspection asked for before the pause lands
    const rowsFor = async (query) => {
      await page.click(`#attention .patch >> nth=${query}`);
      await page.waitForFunction((q) => document.querySelector('#attention canvas[data-head]').dataset.query === String(q), query);
      const [drawn, inspected] = [await drawnRows(page), await inspectedRows(page, query)];
      drawn.forEach((row, i) => assert.ok(close(row.weights, inspected[i].weights, 1e-5),
        `layer ${row.layer} head ${row.head} from patch ${query}: drawn ${row.weights}, inspected ${inspected[i].weights}`));
      return drawn;
    };
    const corner = await rowsFor(0);
    const middle = await rowsFor(5);
    assert.ok(corner.some((row, i) => !close(row.weights, middle[i].weights, 1e-4)), 'another patch, other weights');
    const pooled = await page.$eval('#attention canvas:not([data-head])[data-weights]', (c) => JSON.parse(c.dataset.weights));
    const inspectedPooled = await page.evaluate(() => window.ferrograd.inspection.attention.pooled);
    assert.ok(close(pooled, inspectedPooled, 1e-5), 'the rollout drawn is the inspection\'s');
    assert.ok(Math.abs(pooled.reduce((a, b) => a + b, 0) - 1) < 1e-3, 'the rollout to the output sums to 1');

    // From the keyboard: the arrow keys move the picked patch, and the focus goes with it.
    await page.focus('#attention .patch[aria-pressed="true"]');
    await page.keyboard.press('ArrowRight');
    await page.keyboard.press('ArrowDown');
    const picked = await page.evaluate(() => ({
      query: document.querySelector('#attention canvas[data-head]').dataset.query,
      focused: document.activeElement.getAttribute('aria-label'),
      pressed: document.querySelector('#attention .patch[aria-pressed="true"]').getAttribute('aria-label'),
    }));
    assert.equal(picked.query, '10', 'from patch 5, right then down is patch 10');
    assert.equal(picked.focused, 'patch row 3, column 3');
    assert.equal(picked.pressed, picked.focused);
    await page.locator('#attention').scrollIntoViewIfNeeded();
    await screenshot(page, 'inside-attention', '#attention');
    assert.deepEqual(problems, []);
    await context.close();
  });
});

describe('the page for every user', () => {
  test('dark theme at phone width: no sideways scrolling, and it trains', async () => {
    const { page, context, problems } = await open(env.browser, `${env.server.url}?epochs=1`, {
      viewport: { width: 390, height: 844 }, colorScheme: 'dark',
    });
    await waitForState(page, (s) => s.dataComplete === true, 30_000);
    const background = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
    assert.equal(background, 'rgb(15, 18, 22)', 'the dark theme follows the system');
    await page.click('#start');
    await waitForState(page, (s) => (s.steps ?? 0) > 10, 30_000);
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `the page is ${overflow} px wider than the phone`);
    await screenshot(page, 'playground-phone-dark');
    assert.deepEqual(problems, []);
    await context.close();
  });

  test('every control is reached and used from the keyboard', async () => {
    // Enough epochs that training is still going when Pause is pressed, however fast the machine.
    const { page, context } = await open(env.browser, `${env.server.url}?epochs=100`);
    await waitForState(page, (s) => s.configured === true && s.dataComplete === true, 30_000);
    // Tab through the page: every button, field and the pad must take the focus on the way.
    const reached = new Set();
    for (let i = 0; i < 60; i++) {
      await page.keyboard.press('Tab');
      const id = await page.evaluate(() => document.activeElement?.id);
      if (id) reached.add(id);
    }
    for (const id of ['data-url', 'load-data', 'model-preset', 'optimizer', 'lr', 'batch-size', 'epochs', 'seed',
      'normalize', 'clean', 'augment', 'model-spec', 'apply', 'start', 'reset', 'pad', 'pad-clear', 'pad-label', 'examples-clear']) {
      assert.ok(reached.has(id), `#${id} is not reachable with Tab`);
    }
    await page.focus('#start');
    await page.keyboard.press('Enter');
    await waitForState(page, (s) => (s.steps ?? 0) > 3, 30_000);
    await page.focus('#pause');
    await page.keyboard.press('Enter');
    await waitForState(page, (s) => s.trainState === 'paused', 10_000);
    await context.close();
  });
});
