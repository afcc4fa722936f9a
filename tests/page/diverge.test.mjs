// Training that cannot mislead: a learning rate that blows the loss up pauses the page at that
// step with a message that names the step and suggests a lower learning rate, instead of
// training on towards a loss of 1e28 and chance accuracy.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { browserAndServer, open, screenshot, waitForState } from './harness.mjs';

const env = browserAndServer({ isolation: false });

describe('a diverging run', () => {
  test('pauses with the step and the learning rate named, and trains again at a sane one', async () => {
    // SGD at 10 takes the MLP's loss past 1,000 within a few steps (the CLI: step 3).
    const { page, context } = await open(env.browser, `${env.server.url}?optimizer=sgd&lr=10&epochs=1&backend=cpu`);
    await waitForState(page, (s) => s.dataComplete === true && s.configured === true, 30_000);
    await page.click('#start');
    const message = page.locator('#message');
    await message.waitFor({ state: 'visible', timeout: 60_000 });
    const text = await message.textContent();
    assert.match(text, /^training diverged at step \d+: the loss is (NaN|inf|[\d.e+-]+);/i);
    assert.match(text, /lower the learning rate \(now 10\)/);
    const state = await waitForState(page, (s) => s.trainState === 'paused', 10_000);
    assert.ok(state.steps < 20, `it stopped at step ${state.steps}, not at the first bad one`);
    await screenshot(page, 'diverged');
    await context.close();
  });
});
