// Sweeps in the page: the trials a sweep description gives (planned by the core, as the CLI
// plans them) run one after another or side by side (see trials.js), each a run in the Runs
// panel; the sweep's state is kept in localStorage so that a reload carries on with the
// trials it interrupted; a plot shows the chosen score of each finished run against one swept
// setting.

import uPlot from '../node_modules/uplot/dist/uPlot.esm.js';

const KEY = 'ferrograd-sweep';

/** Where each swept setting goes in the page's settings. */
const SETTING = {
  lr: 'lr', batch_size: 'batch', optimizer: 'optimizer', epochs: 'epochs', weight_decay: 'weightDecay',
  model: 'model', lr_schedule: 'schedule',
};
/** The scores a sweep can rank by, and whether lower is better. */
export const METRICS = {
  testAccuracy: { label: 'test accuracy', lower: false, percent: true },
  valAccuracy: { label: 'validation accuracy', lower: false, percent: true },
  testLoss: { label: 'test loss', lower: true, percent: false },
};

/** `base` settings with a trial's values (`{lr: 0.01, batch_size: 32}`) in their place. */
export function withTrial(base, trial) {
  const settings = { ...base };
  for (const [param, value] of Object.entries(trial)) settings[SETTING[param]] = value;
  return settings;
}

/** `lr=0.01 batch-size=32`, as the CLI writes a trial. */
export const trialLabel = (trial) => Object.entries(trial).map(([k, v]) => `${k.replaceAll('_', '-')}=${v}`).join(' ');

/**
 * The sweep under way, as kept: `{id, base, trials, parallel, finished: [trial index],
 * metric, runIds, failed, seconds, started}`.
 */
export function keptSweep() {
  try {
    const sweep = JSON.parse(localStorage.getItem(KEY) ?? 'null');
    // Kept before trials ran side by side: the first `next` trials had finished.
    if (sweep && !sweep.finished) Object.assign(sweep, { finished: [...Array(sweep.next ?? 0).keys()], parallel: 1 });
    return sweep;
  } catch {
    return null;
  }
}

export function keepSweep(sweep) {
  if (sweep) localStorage.setItem(KEY, JSON.stringify(sweep));
  else localStorage.removeItem(KEY);
}

/**
 * A run's `key` score (`testAccuracy`, `valLoss`, ...) for the weights it ended with: the best
 * epoch's under early stopping, else the last epoch's that has one; null if none has.
 */
export function score(run, key) {
  if (run.bestEpoch != null) return run.history[run.bestEpoch - 1]?.[key] ?? null;
  for (let i = run.history.length - 1; i >= 0; i -= 1) if (run.history[i][key] != null) return run.history[i][key];
  return null;
}

/** The best of `runs` by `metric`, or null. */
export function best(runs, metric) {
  const lower = METRICS[metric].lower;
  let found = null;
  for (const run of runs) {
    const s = score(run, metric);
    if (s != null && (found == null || (lower ? s < found.s : s > found.s))) found = { run, s };
  }
  return found?.run ?? null;
}

/** The sweep's runs as points: a score against one setting, categories at their index. */
export class SweepPlot {
  constructor(container) {
    this.container = container;
    this.plot = null;
  }

  update(runs, param, metric) {
    this.plot?.destroy();
    this.plot = null;
    if (!runs.length || !param) return;
    const values = runs.map((run) => run.sweep.trial[param]);
    const numeric = values.every((v) => typeof v === 'number');
    const categories = numeric ? [] : [...new Set(values.map(String))];
    const points = runs
      .map((run, i) => [numeric ? values[i] : categories.indexOf(String(values[i])), score(run, metric)])
      .filter(([, y]) => y != null)
      .sort((a, b) => a[0] - b[0]);
    const style = getComputedStyle(this.container);
    const css = (name) => style.getPropertyValue(name).trim();
    const axis = { stroke: css('--text-dim'), grid: { stroke: css('--grid'), width: 1 }, ticks: { stroke: css('--grid'), width: 1 } };
    const positive = numeric && values.every((v) => v > 0);
    // Learning rates and weight decays span decades: a log axis spreads them evenly.
    const log = positive && Math.max(...values) / Math.min(...values) >= 10;
    const percent = METRICS[metric].percent;
    this.plot = new uPlot({
      width: Math.max(240, this.container.clientWidth),
      height: 180,
      legend: { show: false },
      cursor: { drag: { x: false, y: false } },
      scales: { x: { time: false, distr: log ? 3 : 1, range: numeric ? undefined : [-0.5, categories.length - 0.5] }, y: { auto: true } },
      axes: [
        { ...axis, label: param.replaceAll('_', '-'), labelSize: 20, values: numeric ? undefined : (u, ticks) => ticks.map((t) => categories[t] ?? '') },
        { ...axis, size: 52, values: percent ? (u, ticks) => ticks.map((t) => `${(t * 100).toFixed(1)}%`) : undefined },
      ],
      series: [{}, { label: METRICS[metric].label, stroke: css('--accent'), paths: () => null, points: { show: true, size: 9, fill: css('--accent') } }],
    }, [points.map(([x]) => x), points.map(([, y]) => y)], this.container);
  }
}
