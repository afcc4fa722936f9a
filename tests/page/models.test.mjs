// Each preset chosen in the page trains, and the inside views render real images for it; the
// page also works in the dark theme, at phone width and from the keyboard.

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
};
const SPEC_MARK = { mlp: '"dense"', cnn: '"conv2d"', lstm: '"lstm"', gru: '"gru"' };

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
      await screenshot(page, `inside-${preset}`, '#inside');
      assert.deepEqual(problems, []);
      await context.close();
    });
  }
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
