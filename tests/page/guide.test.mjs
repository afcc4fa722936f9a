// The guide and the embeddable playground, served as plain static hosting would (no
// cross-origin-isolation headers): its pages open, two embedded playgrounds on one page train
// at the same time, each with its own progress, the attention chapter's ViT shows its
// attention for a drawn digit, and the iframe form follows its hash.

import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { before, describe, test } from 'node:test';

import { browserAndServer, draw, open, ROOT, screenshot } from './harness.mjs';

before(() => {
  assert.ok(existsSync(join(ROOT, 'book/index.html')), 'the guide is built (scripts/test.sh builds it into book/)');
});

const env = browserAndServer({ isolation: false });

const embedState = (page) => page.$$eval('ferrograd-playground', (elements) => elements.map((e) => ({ ...e.state })));

describe('the guide', () => {
  test('opens without isolation headers, with the API reference beside it', async () => {
    const { page, context, problems } = await open(env.browser, `${env.server.url}book/`);
    const response = await page.request.get(`${env.server.url}book/index.html`);
    assert.equal(response.headers()['cross-origin-embedder-policy'], undefined);
    assert.match(await page.title(), /Introduction/);
    await page.click('a[href="tensors.html"]');
    await page.waitForURL(/tensors\.html/);
    assert.match(await page.locator('main h1').first().textContent(), /Tensors/);
    const api = await page.request.get(`${env.server.url}book/api/ferrograd/index.html`);
    assert.equal(api.status(), 200);
    assert.deepEqual(problems, []);
    await context.close();
  });

  test('two embedded playgrounds on one page train at the same time, each with its own progress', async () => {
    const { page, context, problems } = await open(env.browser, `${env.server.url}book/models.html`);
    assert.equal(await page.evaluate(() => crossOriginIsolated), false);
    await page.waitForFunction(() => {
      const all = [...document.querySelectorAll('ferrograd-playground')];
      return all.length === 2 && all.every((e) => e.state?.configured && e.state?.dataComplete);
    }, null, { timeout: 30_000 });
    const playgrounds = page.locator('ferrograd-playground');
    assert.equal(await playgrounds.nth(0).locator('select').inputValue(), 'mlp');
    assert.equal(await playgrounds.nth(1).locator('select').inputValue(), 'cnn');
    // Both at work at once. The MLP runs its epoch of the sample in well under a second, so
    // catching both mid-epoch would be a race: the slow CNN starts first instead, and the MLP,
    // started after it, must have stepped while the CNN is still training.
    await playgrounds.nth(1).locator('button.start').click();
    await playgrounds.nth(0).locator('button.start').click();
    await page.waitForFunction(() => {
      const [mlp, cnn] = [...document.querySelectorAll('ferrograd-playground')].map((e) => e.state);
      return mlp.steps > 5 && cnn.steps > 5 && cnn.trainState === 'training';
    }, null, { timeout: 60_000, polling: 50 }).catch(async (error) => {
      throw new Error(`${error.message}; states: ${JSON.stringify(await embedState(page))}`);
    });
    const [mlp, cnn] = await embedState(page);
    assert.notEqual(mlp.steps, cnn.steps, 'each element reports its own progress');
    const texts = await Promise.all([0, 1].map((i) => playgrounds.nth(i).locator('.train-text').textContent()));
    assert.ok(texts.every((t) => /steps/.test(t)), `progress shown: ${texts}`);
    await screenshot(page, 'guide-two-playgrounds');
    assert.deepEqual(problems, []);
    await context.close();
  });

  test('the attention chapter\'s ViT trains and draws its heads\' weights over the drawn digit', async () => {
    const { page, context, problems } = await open(env.browser, `${env.server.url}book/attention.html`);
    const element = page.locator('ferrograd-playground');
    await page.waitForFunction(() => {
      const state = document.querySelector('ferrograd-playground')?.state;
      return state?.configured && state?.dataComplete;
    }, null, { timeout: 30_000 });
    assert.equal(await element.locator('select').inputValue(), 'vit');
    await element.locator('button.start').click();
    await page.waitForFunction(() => document.querySelector('ferrograd-playground').state.steps > 5, null, { timeout: 60_000 });
    await draw(page, [[0.3, 0.3], [0.5, 0.18], [0.7, 0.3], [0.65, 0.5], [0.3, 0.82], [0.75, 0.82]], 'ferrograd-playground .pad');
    const heads = element.locator('#attention canvas[data-head]');
    await heads.first().waitFor({ timeout: 20_000 });
    const rows = await heads.evaluateAll((canvases) => canvases.map((c) => JSON.parse(c.dataset.weights)));
    assert.equal(rows.length, 8, 'two attention layers of four heads');
    for (const row of rows) assert.ok(Math.abs(row.reduce((a, b) => a + b, 0) - 1) < 1e-3, `a row of weights sums to 1: ${row}`);
    await element.locator('#attention').scrollIntoViewIfNeeded();
    await screenshot(page, 'guide-attention', 'ferrograd-playground');
    assert.deepEqual(problems, []);
    await context.close();
  });

  test('the iframe form takes its setup from the hash', async () => {
    const { page, context, problems } = await open(env.browser, `${env.server.url}embed.html#model=gru&epochs=1&compact`);
    const element = page.locator('ferrograd-playground');
    await page.waitForFunction(() => document.querySelector('ferrograd-playground')?.state?.dataComplete, null, { timeout: 30_000 });
    assert.equal(await element.locator('select').inputValue(), 'gru');
    await element.locator('button.start').click();
    await page.waitForFunction(() => document.querySelector('ferrograd-playground').state.steps > 3, null, { timeout: 30_000 });
    assert.deepEqual(problems, []);
    await context.close();
  });

  test('a bad attribute is shown in the element, which still trains with the default', async () => {
    const { page, context } = await open(env.browser, `${env.server.url}embed.html#model=${encodeURIComponent('{"layers": [}')}&epochs=zero`);
    const element = page.locator('ferrograd-playground');
    await page.waitForFunction(() => document.querySelector('ferrograd-playground')?.state?.dataComplete, null, { timeout: 30_000 });
    const error = await element.locator('.error').textContent();
    assert.match(error, /epochs/);
    assert.match(error, /model: .*(line|column)/);
    await element.locator('button.start').click();
    await page.waitForFunction(() => document.querySelector('ferrograd-playground').state.steps > 3, null, { timeout: 30_000 });
    await context.close();
  });
});
