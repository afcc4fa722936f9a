// Experiments in the page: a schedule, a validation split and early stopping set from the form
// and the address, the model summary beside the spec, and the Runs panel: runs kept across a
// reload, sorted, renamed, overlaid, exported and deleted.

import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { describe, test } from 'node:test';

import { browserAndServer, open, screenshot, waitForState } from './harness.mjs';

const env = browserAndServer();

const rows = (page) => page.locator('#runs tbody tr');
const cells = (page) => page.$$eval('#runs tbody tr', (trs) => trs.map((tr) => [...tr.cells].map((td) => td.textContent)));
const header = (page) => page.$$eval('#runs thead th', (ths) => ths.map((th) => th.textContent.replace(/[▲▼]/g, '').trim()));

describe('experiments in the page', () => {
  test('the model summary follows the spec, errors inline', async () => {
    const { page, context, problems } = await open(env.browser, `${env.server.url}?model=resnet`);
    await waitForState(page, (s) => s.configured === true, 30_000);
    await page.waitForFunction(() => document.querySelectorAll('#model-summary tbody tr').length > 0);
    const text = await page.locator('#model-summary').textContent();
    assert.match(text, /layers\[6\]\.shortcut\[0\] \(conv2d\)/);
    assert.match(text, /24,554 total · 24,298 trainable · 256 not trainable/);
    await screenshot(page, 'experiments-summary', '#model-form');
    // A convolution of no filters: the summary says which layer and field, as Apply would.
    const spec = await page.locator('#model-spec').inputValue();
    await page.fill('#model-spec', spec.replace('"filters":16', '"filters":0'));
    await page.waitForFunction(() => /layers\[0\] \(conv2d\)\.filters/.test(document.querySelector('#model-summary .error')?.textContent ?? ''));
    assert.deepEqual(problems, []);
    await context.close();
  });

  test('a schedule, validation and early stopping from the address train and are charted', async () => {
    const query = '?epochs=6&lr=0.01&valSplit=0.1&earlyStop=1&schedule=cosine(warmup=0.5,min_lr=0.0001)';
    const { page, context, problems } = await open(env.browser, `${env.server.url}${query}`);
    await waitForState(page, (s) => s.dataComplete === true, 30_000);
    assert.equal(await page.locator('#schedule-kind').inputValue(), 'cosine');
    assert.equal(await page.locator('#schedule-first').inputValue(), '0.5');
    await page.waitForFunction(() => /peak/.test(document.querySelector('#schedule-curve-text').textContent));
    await page.click('#start');
    const state = await waitForState(page, (s) => s.trainState === 'done', 240_000);
    assert.ok(state.validationAccuracy > 0.8, `validation accuracy ${state.validationAccuracy}`);
    assert.ok(state.bestEpoch >= 1 && state.bestEpoch <= 6, `best epoch ${state.bestEpoch}`);
    assert.match(await page.locator('#notice').textContent(), new RegExp(`weights of epoch ${state.bestEpoch}`));
    // One run recorded, with its settings and the scores of the epoch it kept.
    await page.waitForFunction(() => window.ferrograd.runs().some((r) => r.status !== 'running'));
    const [run] = await page.evaluate(() => window.ferrograd.runs());
    assert.equal(run.settings.schedule, 'cosine(warmup=0.5,min_lr=0.0001)');
    assert.equal(run.settings.valSplit, 0.1);
    assert.equal(run.bestEpoch, state.bestEpoch);
    assert.match(run.backend, /^CPU · WebAssembly/);
    assert.ok(run.history.every((h) => h.valLoss != null && h.testAccuracy != null));
    assert.ok(run.history.at(-1).lr < run.history[0].lr, 'the cosine schedule lowered the rate');
    await screenshot(page, 'experiments-early-stopping');
    assert.deepEqual(problems, []);
    await context.close();
  });

  test('runs are kept across a reload, sorted, renamed, overlaid, exported and deleted', async () => {
    const { page, context, problems } = await open(env.browser, `${env.server.url}?epochs=1`);
    await waitForState(page, (s) => s.dataComplete === true, 30_000);
    const before = (await page.evaluate(() => window.ferrograd.runs())).length;
    for (const lr of ['0.003', '0.0003']) {
      await page.fill('#lr', lr);
      await page.click('#apply');
      // Applied once the address holds it.
      await page.waitForFunction((value) => new URLSearchParams(location.search).get('lr') === value, lr);
      await waitForState(page, (s) => s.steps === 0);
      await page.click('#start');
      await waitForState(page, (s) => s.trainState === 'done', 120_000);
      await page.waitForFunction((n) => document.querySelectorAll('#runs tbody tr').length === n, before + (lr === '0.003' ? 1 : 2));
    }
    const columns = await header(page);
    for (const name of ['run', 'lr', 'test acc', 'val acc', 'samples/s']) assert.ok(columns.includes(name), `no ${name} column in ${columns}`);
    // Sorted by learning rate, ascending then descending.
    const lrColumn = columns.indexOf('lr');
    await page.locator('#runs thead th', { hasText: /^lr/ }).locator('button').click();
    const descending = (await cells(page)).map((r) => Number(r[lrColumn]));
    await page.locator('#runs thead th', { hasText: /^lr/ }).locator('button').click();
    const ascending = (await cells(page)).map((r) => Number(r[lrColumn]));
    assert.deepEqual(ascending, [...descending].reverse());
    assert.deepEqual(ascending, [...ascending].sort((a, b) => a - b));

    // Renamed, and the name outlives a reload.
    const row = rows(page).filter({ hasText: '0.0003' }).first();
    await row.getByRole('button', { name: 'Rename' }).click();
    await row.locator('input[type="text"]').fill('slow learner');
    await row.locator('input[type="text"]').press('Enter');
    await page.waitForFunction(() => window.ferrograd.runs().some((r) => r.name === 'slow learner'));
    await page.reload();
    await page.waitForFunction((n) => document.querySelectorAll('#runs tbody tr').length === n, before + 2);
    assert.ok((await cells(page)).some((r) => r.includes('slow learner')));

    // Two ticked: their curves join the charts, named in the legends.
    // A click rather than check(): the table is drawn anew as runs load, and check() reads back
    // the box it clicked, which a new drawing may have replaced by then.
    for (const text of ['slow learner', '0.003']) await rows(page).filter({ hasText: text }).first().locator('input[type="checkbox"]').click();
    await waitForState(page, (s) => s.overlaid === 2);
    const legend = await page.locator('#loss-chart .u-legend').textContent();
    assert.match(legend, /slow learner/);
    await screenshot(page, 'experiments-runs');

    // The CSV export: one row per run with the table's columns and the per-class scores.
    const [download] = await Promise.all([page.waitForEvent('download'), page.click('#runs-csv')]);
    const csv = (await readFile(await download.path(), 'utf8')).trim().split('\n');
    const head = csv[0].split(',');
    for (const name of ['id', 'name', 'lr', 'batch', 'testAccuracy', 'valAccuracy', 'precision_0', 'f1_9']) assert.ok(head.includes(name), `no ${name} in ${head}`);
    assert.equal(csv.length, 1 + before + 2);
    assert.ok(csv.some((line) => line.includes('slow learner')));
    // The JSON export: every run whole, its per-epoch history included.
    const [json] = await Promise.all([page.waitForEvent('download'), page.click('#runs-json')]);
    const exported = JSON.parse(await readFile(await json.path(), 'utf8'));
    assert.equal(exported.length, before + 2);
    const slow = exported.find((r) => r.name === 'slow learner');
    assert.equal(slow.settings.lr, 0.0003);
    assert.equal(slow.history.length, 1);
    assert.ok(slow.history[0].testAccuracy > 0.5 && slow.perClass.length === 10, JSON.stringify(slow));

    // Deleted, and gone after a reload too.
    await rows(page).filter({ hasText: 'slow learner' }).getByRole('button', { name: 'Delete' }).click();
    await page.waitForFunction((n) => document.querySelectorAll('#runs tbody tr').length === n, before + 1);
    await page.reload();
    await page.waitForFunction((n) => document.querySelectorAll('#runs tbody tr').length === n, before + 1);
    assert.ok(!(await cells(page)).some((r) => r.includes('slow learner')));
    assert.deepEqual(problems, []);
    await context.close();
  });

  test('the last 50 runs are kept: the oldest go, named in a notice', async () => {
    const { page, context, problems } = await open(env.browser, `${env.server.url}?epochs=1`);
    await waitForState(page, (s) => s.configured === true, 30_000);
    // 52 runs as a long history of experiments would leave them, a minute apart.
    await page.evaluate(async () => {
      const { putRun } = await import('./www/store.js');
      for (let i = 1; i <= 52; i += 1) {
        await putRun({
          id: `run-${String(i).padStart(2, '0')}`, name: `old run ${i}`, sweep: null, backend: 'CPU', createdAt: Date.UTC(2026, 0, 1) + i * 60_000,
          settings: { model: 'mlp', optimizer: 'adam', lr: 0.001, schedule: 'constant', batch: 64, epochs: 1, seed: i, valSplit: 0 },
          lr: 0.001, status: 'done', history: [{ epoch: 1, step: 125, lr: 0.001, trainLoss: 0.5, testLoss: 0.4, testAccuracy: 0.9 }], curve: [], perClass: [], bestEpoch: null, seconds: 1, samplesPerSecond: 8000,
        });
      }
    });
    await page.reload();
    await page.waitForFunction(() => document.querySelectorAll('#runs tbody tr').length === 50);
    await page.waitForFunction(() => /keeps the last 50 runs: "old run 1", "old run 2" were removed/.test(document.querySelector('#notice').textContent));
    const names = await page.evaluate(() => window.ferrograd.runs().map((r) => r.name));
    assert.ok(!names.includes('old run 1') && !names.includes('old run 2') && names.includes('old run 3'));
    // Gone from the store too: another reload lists the same 50, with no notice.
    await page.reload();
    await page.waitForFunction(() => document.querySelectorAll('#runs tbody tr').length === 50);
    assert.equal(await page.locator('#notice').isHidden(), true);
    assert.deepEqual(problems, []);
    await context.close();
  });

  test('bad experiment settings in the address are named and replaced by the defaults', async () => {
    const { page, context } = await open(env.browser, `${env.server.url}?valSplit=0.9&earlyStop=3&schedule=linear`);
    await waitForState(page, (s) => s.configured === true, 30_000);
    const message = await page.locator('#message').textContent();
    assert.match(message, /validation share \(valSplit\): "0.9" is not a share from 0 to 0.5/);
    assert.match(message, /learning-rate schedule \(schedule\): "linear" is not constant/);
    assert.match(message, /early stopping watches the validation loss/);
    assert.equal(await page.locator('#schedule-kind').inputValue(), 'constant');
    assert.equal(await page.locator('#early-stop').inputValue(), '0');
    await context.close();
  });
});

describe('sweeps in the page', () => {
  test('a four-run sweep runs, marks the best, plots it, survives a reload, and bad sweeps are named', async () => {
    // The CNN, whose epoch takes seconds: the reload lands inside the sweep.
    const { page, context, problems } = await open(env.browser, `${env.server.url}?model=cnn&epochs=1`);
    await waitForState(page, (s) => s.dataComplete === true, 30_000);
    // Bad input first: nothing runs and the message names the setting.
    await page.fill('#sweep-grid', 'lr=-0.01');
    await page.click('#sweep-start');
    await page.waitForFunction(() => /lr: -0.01 is not a positive learning rate/.test(document.querySelector('#sweep-error').textContent));
    await page.fill('#sweep-grid', '');
    await page.fill('#sweep-ranges', 'lr=1e-2:1e-4');
    await page.fill('#sweep-trials', '3');
    await page.click('#sweep-start');
    await page.waitForFunction(() => /min 0.01 is above max 0.0001/.test(document.querySelector('#sweep-error').textContent));
    await page.fill('#sweep-trials', '10000');
    await page.fill('#sweep-ranges', 'lr=1e-4:1e-2');
    await page.click('#sweep-start');
    await page.waitForFunction(() => /10000 trials are more than the 100/.test(document.querySelector('#sweep-error').textContent));
    assert.equal((await page.evaluate(() => window.ferrograd.runs())).length, 0);

    // Four runs: a grid of two rates and two batch sizes.
    await page.fill('#sweep-ranges', '');
    await page.fill('#sweep-trials', '0');
    await page.fill('#sweep-grid', 'lr=1e-3,1e-2\nbatch-size=64,128');
    await page.click('#sweep-start');
    // Auto: on the CPU, a trial per core at a time, once the first has run a while (a CNN
    // trial takes longer than a worker costs to start).
    await waitForState(page, (s) => s.sweep?.workers === Math.min(navigator.hardwareConcurrency, 4), 60_000);
    await waitForState(page, (s) => s.sweep?.finished >= 2, 180_000);
    // A reload in the middle: the sweep carries on with the trials it was in.
    await page.reload();
    const resumed = await waitForState(page, (s) => s.sweepResumedAt != null, 30_000);
    assert.ok([2, 3].includes(resumed.sweepResumedAt), `carried on after ${resumed.sweepResumedAt} trials`);
    await page.waitForFunction(() => window.ferrograd.state.sweep === null && /4 of 4 trials ran/.test(document.querySelector('#sweep-text').textContent), null, { timeout: 240_000 });
    const runs = await page.evaluate(() => window.ferrograd.runs().filter((r) => r.sweep));
    // The trial the reload cut short ran again from the start; the interrupted part, if it
    // finished an epoch, is kept as such.
    const done = runs.filter((r) => r.status === 'done');
    assert.deepEqual(done.map((r) => `${r.settings.lr}/${r.settings.batch}`).sort(), ['0.001/128', '0.001/64', '0.01/128', '0.01/64']);
    assert.ok(done.every((r) => r.history.length === 1), JSON.stringify(runs.map((r) => [r.status, r.history.length])));
    // The best by test accuracy is marked in the table and named under the bar.
    const bestRun = done.reduce((a, b) => (b.history.at(-1).testAccuracy > a.history.at(-1).testAccuracy ? b : a));
    assert.match(await page.locator('#runs tr.best').textContent(), /best of the sweep/);
    assert.match(await page.locator('#runs tr.best').textContent(), new RegExp(bestRun.name.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')));
    assert.match(await page.locator('#sweep-text').textContent(), /best so far/);
    // The plot of the score against the rate.
    assert.equal(await page.locator('#sweep-chart canvas').count(), 1);
    // The four runs overlaid on the charts, each named in the legend.
    for (const run of done) await page.locator(`#runs tr[data-run="${run.id}"] input[type="checkbox"]`).click();
    await waitForState(page, (s) => s.overlaid === 4);
    const legend = await page.locator('#loss-chart .u-legend').textContent();
    for (const run of done) assert.ok(legend.includes(run.name), `${run.name} is not in the legend ${legend}`);
    await screenshot(page, 'experiments-sweep');
    assert.deepEqual(problems, []);
    await context.close();
  });

  test('cancelling a sweep keeps the runs that finished', async () => {
    const { page, context } = await open(env.browser, `${env.server.url}?model=cnn&epochs=1`);
    await waitForState(page, (s) => s.dataComplete === true, 30_000);
    await page.fill('#sweep-grid', 'lr=1e-3,2e-3,3e-3,4e-3');
    await page.click('#sweep-start');
    await waitForState(page, (s) => s.sweep?.finished >= 1, 120_000);
    await page.click('#sweep-cancel');
    await page.waitForFunction(() => /Sweep cancelled after [1-3] of 4 trials/.test(document.querySelector('#notice').textContent));
    const runs = await page.evaluate(() => window.ferrograd.runs().filter((r) => r.sweep));
    assert.ok(runs.some((r) => r.status === 'done' && r.settings.lr === 0.001), JSON.stringify(runs.map((r) => [r.status, r.settings.lr])));
    assert.equal(await page.evaluate(() => window.ferrograd.state.sweep), null);
    await page.reload();
    await waitForState(page, (s) => s.configured === true, 30_000);
    assert.equal(await page.evaluate(() => window.ferrograd.state.sweep ?? null), null, 'a cancelled sweep does not come back');
    await context.close();
  });
});

describe('trials side by side', () => {
  test('give the same runs as one after another, a trial per worker at a time', async () => {
    const { page, context, problems } = await open(env.browser, `${env.server.url}?model=mlp&epochs=1`);
    await waitForState(page, (s) => s.dataComplete === true, 30_000);
    const sweep = async (parallel) => {
      // Two at a time where the machine has a single core too: the choice lists one per core.
      await page.evaluate((n) => {
        const select = document.querySelector('#sweep-parallel');
        if (![...select.options].some((o) => o.value === n)) select.append(new Option(n, n));
        select.value = n;
      }, String(parallel));
      await page.fill('#sweep-grid', 'lr=1e-3,3e-3,1e-2');
      await page.click('#sweep-start');
      const seen = new Set();
      // Every state until the sweep ends: how many trials ran at once.
      for (;;) {
        const s = await waitForState(page, (st) => st.sweep !== undefined, 10_000);
        if (s.sweep === null && seen.size) break;
        if (s.sweep) seen.add(s.sweep.running.length);
        await page.waitForTimeout(50);
      }
      const runs = await page.evaluate(() => window.ferrograd.runs());
      return { most: Math.max(...seen), runs: runs.filter((r) => r.status === 'done' && r.sweep) };
    };
    const one = await sweep(1);
    assert.equal(one.most, 1);
    assert.equal(one.runs.length, 3);
    const two = await sweep(2);
    assert.equal(two.most, 2, 'two trials ran at once');
    const sideBySide = two.runs.filter((r) => !one.runs.some((o) => o.id === r.id));
    assert.equal(sideBySide.length, 3);
    // A trial beside the page's ran on one thread of its own worker.
    assert.ok(sideBySide.some((r) => /one thread/.test(r.backend)), JSON.stringify(sideBySide.map((r) => r.backend)));
    // The same seed gives the same run whichever worker trained it.
    const scores = (runs) => Object.fromEntries(runs.map((r) => [r.settings.lr, [r.history[0].testLoss, r.history[0].testAccuracy, r.history[0].trainLoss]]));
    assert.deepEqual(scores(sideBySide), scores(one.runs));
    assert.deepEqual(problems, []);
    await context.close();
  });
});

describe('a sweep in the embed', () => {
  test('sweep="lr=1e-3,1e-2" runs both trials, keeps both curves and lists their scores', async () => {
    const hash = `sweep=${encodeURIComponent('lr=1e-3,1e-2')}&epochs=1&compact`;
    const { page, context, problems } = await open(env.browser, `${env.server.url}embed.html#${hash}`);
    const element = page.locator('ferrograd-playground');
    await page.waitForFunction(() => document.querySelector('ferrograd-playground')?.state?.dataComplete, null, { timeout: 30_000 });
    assert.equal(await element.locator('button.start').textContent(), 'Run sweep');
    await element.locator('button.start').click();
    await page.waitForFunction(() => document.querySelector('ferrograd-playground').state.sweep?.done === 2, null, { timeout: 120_000 });
    const results = await element.locator('.sweep-results li').allTextContents();
    assert.equal(results.length, 2);
    assert.match(results[0], /^lr=0.001: test accuracy \d+\.\d%/);
    assert.match(results[1], /^lr=0.01: test accuracy \d+\.\d%/);
    assert.equal(results.filter((r) => r.endsWith('(best)')).length, 1);
    const legend = await element.locator('.u-legend').textContent();
    assert.ok(legend.includes('lr=0.001') && legend.includes('lr=0.01'), legend);
    await screenshot(page, 'embed-sweep');
    assert.deepEqual(problems, []);
    await context.close();
  });

  test('a bad sweep attribute is named in the element', async () => {
    const { page, context } = await open(env.browser, `${env.server.url}embed.html#sweep=${encodeURIComponent('lr=-1')}&epochs=1`);
    const element = page.locator('ferrograd-playground');
    await page.waitForFunction(() => document.querySelector('ferrograd-playground')?.state?.dataComplete, null, { timeout: 30_000 });
    await element.locator('button.start').click();
    await page.waitForFunction(() => /sweep="lr=-1": .*positive learning rate/.test(document.querySelector('ferrograd-playground').state.error ?? ''), null, { timeout: 30_000 });
    await context.close();
  });
});
