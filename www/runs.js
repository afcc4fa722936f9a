// The Runs panel: every training run recorded (its settings, per-epoch training, validation
// and test scores, the final per-class scores, time and speed) and kept in IndexedDB across
// reloads, at most MAX_RUNS of them (the oldest go first, with a notice). The table sorts by
// any column; a run can be renamed, deleted or reopened (its settings back in the form and
// the address); the list exports as CSV and JSON; two or more selected runs overlay their
// curves on the page's charts.

import { PALETTE } from './charts.js';
import { effectiveLr } from './settings.js';
import { allRuns, deleteRun, putRun } from './store.js';
import { score } from './sweep.js';

export const MAX_RUNS = 50;
// Training-loss points kept per run for the overlay: enough for a smooth curve.
const CURVE_POINTS = 400;

const el = (tag, props = {}, children = []) => {
  const element = Object.assign(document.createElement(tag), props);
  element.append(...children);
  return element;
};

const percent = (v) => (v == null ? '' : `${(v * 100).toFixed(2)}%`);
const fixed = (digits) => (v) => (v == null ? '' : Number(v).toFixed(digits));

/** The table's columns: what each shows, and the value it sorts and exports by. */
const COLUMNS = [
  { key: 'name', label: 'run', value: (r) => r.name },
  { key: 'model', label: 'model', value: (r) => r.settings.model },
  { key: 'optimizer', label: 'optimizer', value: (r) => r.settings.optimizer },
  { key: 'lr', label: 'lr', value: (r) => r.lr },
  { key: 'schedule', label: 'schedule', value: (r) => r.settings.schedule },
  { key: 'batch', label: 'batch', value: (r) => r.settings.batch },
  { key: 'epochs', label: 'epochs', value: (r) => r.history.length, show: (r) => `${r.history.length}/${r.settings.epochs}` },
  { key: 'seed', label: 'seed', value: (r) => r.settings.seed },
  { key: 'backend', label: 'ran on', value: (r) => r.backend ?? '' },
  { key: 'valSplit', label: 'val share', value: (r) => r.settings.valSplit },
  { key: 'bestEpoch', label: 'best epoch', value: (r) => r.bestEpoch ?? null },
  { key: 'trainLoss', label: 'train loss', value: (r) => score(r, 'trainLoss'), show: (r) => fixed(4)(score(r, 'trainLoss')) },
  { key: 'valAccuracy', label: 'val acc', value: (r) => score(r, 'valAccuracy'), show: (r) => percent(score(r, 'valAccuracy')) },
  { key: 'testLoss', label: 'test loss', value: (r) => score(r, 'testLoss'), show: (r) => fixed(4)(score(r, 'testLoss')) },
  { key: 'testAccuracy', label: 'test acc', value: (r) => score(r, 'testAccuracy'), show: (r) => percent(score(r, 'testAccuracy')) },
  { key: 'seconds', label: 'time (s)', value: (r) => r.seconds, show: (r) => fixed(1)(r.seconds) },
  { key: 'samplesPerSecond', label: 'samples/s', value: (r) => r.samplesPerSecond, show: (r) => (r.samplesPerSecond ? Math.round(r.samplesPerSecond).toLocaleString('en') : '') },
  { key: 'status', label: 'status', value: (r) => r.status },
];

/**
 * Records the run under way as the worker reports it, and keeps it in IndexedDB after each
 * epoch and when it ends.
 */
export class RunRecorder {
  constructor(onSaved) {
    this.run = null;
    this.onSaved = onSaved;
    this.epochBatches = { loss: 0, accuracy: 0, n: 0 };
    this.activeSince = null;
  }

  /**
   * A new run with `settings` (the page's, as the address holds them), the `number`-th; one
   * that carries on a trained model from step `from` says so in its name.
   */
  begin(settings, number, from = 0, sweep = null, backend = null) {
    const lr = effectiveLr(settings);
    const schedule = settings.schedule === 'constant' ? '' : `, ${settings.schedule}`;
    const continued = from > 0 ? ` (continued from step ${from})` : '';
    const name = sweep
      ? `sweep trial ${sweep.index + 1}/${sweep.of}: ${sweep.label}`
      : `run ${number}: ${settings.model}, ${settings.optimizer} ${lr}${schedule}, batch ${settings.batch}${continued}`;
    this.run = {
      id: `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`,
      name,
      // {id, index, of, label, trial} for a sweep's trial
      sweep,
      // Where it trained, as the masthead says (the settings hold what was asked for: auto).
      backend,
      createdAt: Date.now(),
      settings: { ...settings },
      lr,
      status: 'running',
      history: [],
      curve: [],
      perClass: [],
      bestEpoch: null,
      seconds: 0,
      samplesPerSecond: null,
    };
    this.epochBatches = { loss: 0, accuracy: 0, n: 0 };
    this.activeSince = performance.now();
    return this.run;
  }

  /** Training paused or resumed: the run's time counts only while it trains. */
  setActive(active) {
    if (!this.run) return;
    if (active && this.activeSince == null) this.activeSince = performance.now();
    if (!active && this.activeSince != null) {
      this.run.seconds += (performance.now() - this.activeSince) / 1000;
      this.activeSince = null;
    }
  }

  batch(step, loss, accuracy, smoothLoss, samplesPerSecond) {
    if (!this.run) return;
    Object.assign(this.epochBatches, {
      loss: this.epochBatches.loss + loss, accuracy: this.epochBatches.accuracy + accuracy, n: this.epochBatches.n + 1,
    });
    this.run.curve.push([step, smoothLoss]);
    // Every other point goes once the curve is full: the whole run stays, at half the detail.
    if (this.run.curve.length > CURVE_POINTS) this.run.curve = this.run.curve.filter((_, i) => i % 2 === 0);
    if (samplesPerSecond) this.run.samplesPerSecond = samplesPerSecond;
  }

  /** An epoch's end: its mean training figures, and the validation and test scores. */
  async epoch(step, lr, evaluation, validation) {
    if (!this.run) return;
    const { loss, accuracy, n } = this.epochBatches;
    this.run.history.push({
      epoch: this.run.history.length + 1,
      step,
      lr,
      trainLoss: n ? loss / n : null,
      trainAccuracy: n ? accuracy / n : null,
      valLoss: validation?.loss ?? null,
      valAccuracy: validation?.accuracy ?? null,
      testLoss: evaluation?.loss ?? null,
      testAccuracy: evaluation?.accuracy ?? null,
    });
    this.epochBatches = { loss: 0, accuracy: 0, n: 0 };
    if (evaluation) this.run.perClass = evaluation.perClass;
    if (validation?.bestEpoch != null) {
      this.run.bestEpoch = validation.bestEpoch;
      if (validation.stoppedEarly) this.run.status = 'stopped early';
    }
    await this.save();
  }

  /** The run is over: `status` is 'done', or 'interrupted' when another run replaced it. */
  async end(status) {
    const run = this.run;
    if (!run) return;
    this.setActive(false);
    this.run = null;
    // A run stopped before its first epoch tells nothing: it is not kept.
    if (!run.history.length) return;
    if (run.status === 'running') run.status = status;
    await this.save(run);
  }

  async save(run = this.run) {
    if (!run) return;
    const seconds = run.seconds + (this.activeSince != null && run === this.run ? (performance.now() - this.activeSince) / 1000 : 0);
    await putRun({ ...run, seconds });
    await this.onSaved?.();
  }
}

/** The Runs panel: the table, its sorting, selection, renaming, deleting, reopening and exports. */
export class RunsPanel {
  /**
   * `container`: where the table goes; `onReopen(settings)`: put a run's settings back;
   * `onSelect(runs)`: the selected runs changed (overlay them); `onNotice(text)`.
   */
  constructor(container, { onReopen, onSelect, onNotice }) {
    this.container = container;
    Object.assign(this, { onReopen, onSelect, onNotice });
    this.runs = [];
    this.selected = new Set();
    this.sort = { key: 'createdAt', descending: true };
    this.best = null; // the id of the sweep's best run so far, marked in the table
    this.table = el('table', { className: 'runs' });
    this.empty = el('p', { className: 'hint', textContent: 'Each training run appears here once it has finished an epoch.' });
    container.append(this.empty, this.table);
  }

  async load() {
    try {
      this.runs = await allRuns();
    } catch (error) {
      this.onNotice?.(`The runs kept in this browser could not be read: ${error.message ?? error}`);
      this.runs = [];
    }
    await this.trim();
    this.render();
  }

  /** At most MAX_RUNS: the oldest go, and the notice says which. */
  async trim() {
    if (this.runs.length <= MAX_RUNS) return;
    const oldest = [...this.runs].sort((a, b) => a.createdAt - b.createdAt).slice(0, this.runs.length - MAX_RUNS);
    for (const run of oldest) await deleteRun(run.id);
    const gone = new Set(oldest.map((r) => r.id));
    this.runs = this.runs.filter((r) => !gone.has(r.id));
    this.onNotice?.(`This browser keeps the last ${MAX_RUNS} runs: ${oldest.map((r) => `"${r.name}"`).join(', ')} ${oldest.length > 1 ? 'were' : 'was'} removed.`);
  }

  colour(id) {
    const order = this.runs.map((r) => r.id).sort();
    return PALETTE[order.indexOf(id) % PALETTE.length];
  }

  sorted() {
    const column = COLUMNS.find((c) => c.key === this.sort.key);
    const value = column ? column.value : (r) => r[this.sort.key];
    const direction = this.sort.descending ? -1 : 1;
    return [...this.runs].sort((a, b) => {
      const [x, y] = [value(a), value(b)];
      if (x == null || y == null) return (x == null) - (y == null);
      return (typeof x === 'string' ? x.localeCompare(y) : x - y) * direction;
    });
  }

  render() {
    this.empty.hidden = this.runs.length > 0;
    this.table.hidden = !this.runs.length;
    const header = el('tr', {}, [
      el('th', { scope: 'col', textContent: 'compare' }),
      el('th', { scope: 'col', textContent: '' }),
      ...COLUMNS.map((c) => {
        const sorted = this.sort.key === c.key;
        const button = el('button', { type: 'button', className: 'link', textContent: c.label, title: `Sort by ${c.label}` });
        button.addEventListener('click', () => {
          this.sort = { key: c.key, descending: sorted ? !this.sort.descending : c.key !== 'name' };
          this.render();
        });
        return el('th', { scope: 'col', ariaSort: sorted ? (this.sort.descending ? 'descending' : 'ascending') : 'none' }, [button]);
      }),
    ]);
    const rows = this.sorted().map((run) => this.row(run));
    this.table.replaceChildren(el('thead', {}, [header]), el('tbody', {}, rows));
  }

  row(run) {
    const check = el('input', { type: 'checkbox', checked: this.selected.has(run.id), title: 'Overlay this run\'s curves on the charts' });
    check.addEventListener('change', () => {
      if (check.checked) this.selected.add(run.id);
      else this.selected.delete(run.id);
      this.changed();
    });
    const swatch = el('span', { className: 'swatch' });
    swatch.style.background = this.colour(run.id);
    const cells = COLUMNS.map((c) => el('td', { textContent: String((c.show ?? c.value)(run) ?? '') }));
    const actions = [
      ['Rename', () => this.rename(run, cells[0])],
      ['Reopen', () => this.onReopen(run.settings)],
      ['Delete', () => this.remove(run)],
    ].map(([label, action]) => {
      const button = el('button', { type: 'button', className: 'link', textContent: label });
      button.addEventListener('click', action);
      return button;
    });
    const tr = el('tr', { className: run.id === this.best ? 'best' : '' }, [el('td', {}, [check, swatch]), el('td', { className: 'actions' }, actions), ...cells]);
    if (run.id === this.best) cells.at(-1).textContent += ' ★ best of the sweep';
    tr.dataset.run = run.id;
    return tr;
  }

  changed() {
    this.onSelect(this.runs.filter((r) => this.selected.has(r.id)).map((run) => ({ run, colour: this.colour(run.id) })));
  }

  rename(run, cell) {
    const input = el('input', { type: 'text', value: run.name, ariaLabel: 'New name for the run', maxLength: 120 });
    cell.replaceChildren(input);
    input.focus();
    input.select();
    const finish = async (keep) => {
      const name = input.value.trim();
      if (keep && name && name !== run.name) {
        run.name = name;
        await putRun(run);
      }
      this.render();
      this.changed();
    };
    input.addEventListener('keydown', (event) => {
      if (event.key === 'Enter') finish(true);
      if (event.key === 'Escape') finish(false);
    });
    input.addEventListener('blur', () => finish(true), { once: true });
  }

  async remove(run) {
    await deleteRun(run.id);
    this.runs = this.runs.filter((r) => r.id !== run.id);
    this.selected.delete(run.id);
    this.render();
    this.changed();
  }

  /** A run was saved: reads the list again (the recorder writes, the panel shows). */
  async refresh() {
    await this.load();
    this.changed();
  }

  /** The runs as CSV: one row each, the columns of the table then per-class precision, recall and F1. */
  csv() {
    const quote = (v) => {
      const text = v == null ? '' : String(v);
      return /[",\n]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
    };
    const classes = Array.from({ length: 10 }, (_, c) => c);
    const header = ['id', ...COLUMNS.map((c) => c.key), 'createdAt',
      ...['precision', 'recall', 'f1'].flatMap((s) => classes.map((c) => `${s}_${c}`))];
    const lines = this.sorted().map((run) => [
      run.id, ...COLUMNS.map((c) => c.value(run)), new Date(run.createdAt).toISOString(),
      ...['precision', 'recall', 'f1'].flatMap((s) => classes.map((c) => run.perClass[c]?.[s] ?? null)),
    ].map(quote).join(','));
    return [header.join(','), ...lines].join('\n');
  }

  json() {
    return JSON.stringify(this.sorted(), null, 1);
  }
}
