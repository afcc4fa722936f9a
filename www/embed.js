// <ferrograd-playground>: a compact trainer for any documentation page. One script tag
//
//   <script type="module" src="/www/embed.js"></script>
//   <ferrograd-playground model="cnn" epochs="1" compact></ferrograd-playground>
//
// Attributes: model (a preset name or a JSON model spec), epochs, batch-size, lr, optimizer,
// seed, data (a folder URL or four file URLs, as in the playground; by default the bundled
// sample next to this script), compact (a smaller layout), inside (the playground's inside
// views of the drawn digit under the pad: saliency, feature maps, gates, attention), sweep
// (a small sweep, `lr=1e-3,1e-2` or several settings as `lr=1e-3,1e-2; batch-size=32,64`, read
// as `ferrograd sweep --grid` reads them: Train runs every trial in turn, each trial's loss
// curve stays on the chart, and a list gives each one's test accuracy with the best marked). Each element runs its own worker,
// so several train side by side; none needs cross-origin-isolation headers. Its progress is
// readable as `element.state`, like the page's `window.ferrograd.state`.

import { LiveChart, PALETTE } from './charts.js';
import { DrawingPad } from './pad.js';
import { configureMessage, dataUrls, DEFAULTS, PRESETS, readSettings } from './settings.js';
import { trialLabel, withTrial } from './sweep.js';
import { ProbabilityBars, showDataProgress } from './views.js';

const here = (path) => new URL(path, import.meta.url).href;
const DEFAULT_DATA = here('../data/mnist/');
const STYLESHEETS = [here('theme.css'), here('embed.css'), here('inside.css'), here('../node_modules/uplot/dist/uPlot.min.css')];

const PRESET_NAMES = { mlp: 'MLP', cnn: 'CNN', convnet: 'Keras convnet', lstm: 'LSTM', gru: 'GRU', resnet: 'ResNet', vit: 'ViT' };

const TEMPLATE = `
  ${STYLESHEETS.map((href) => `<link rel="stylesheet" href="${href}">`).join('')}
  <section class="card" aria-label="ferrograd playground">
    <header>
      <strong>ferrograd</strong>
      <label class="model">model
        <select part="model" aria-label="Model">
          ${PRESETS.map((p) => `<option value="${p}">${PRESET_NAMES[p] ?? p}</option>`).join('')}
          <option value="custom" hidden>custom</option>
        </select>
      </label>
      <span class="backend">CPU · WebAssembly</span>
    </header>
    <div class="controls">
      <button class="start" part="button" disabled>Train</button>
      <button class="pause" part="button" disabled>Pause</button>
      <button class="reset" part="button" disabled>Reset</button>
      <output class="state">loading</output>
    </div>
    <progress class="data-bar" value="0" max="1" aria-label="Data downloaded"></progress>
    <progress class="train-bar" value="0" max="1" aria-label="Training progress"></progress>
    <p class="figures"><span class="train-text">loading the data…</span> · test accuracy <output class="accuracy">–</output></p>
    <p class="error" role="alert"></p>
    <p class="notice" role="status"></p>
    <div class="chart" aria-label="Training loss per batch"></div>
    <ol class="sweep-results" aria-label="The sweep's trials and their test accuracy" hidden></ol>
    <div class="pad-row">
      <canvas class="pad" width="280" height="280" tabindex="0" aria-label="Drawing pad: draw a digit"></canvas>
      <div class="probs" aria-label="Probability of each digit"></div>
    </div>
    <button class="clear" part="button">Clear the pad</button>
    <div class="inside" aria-label="Inside the model" hidden></div>
  </section>`;

const SANDBOXED = 'this frame is sandboxed without an origin of its own, where the browser lets the trainer '
  + 'start no worker: add allow-same-origin to the iframe\'s sandbox (sandbox="allow-scripts allow-same-origin")';

const ATTRIBUTES = { model: 'model', epochs: 'epochs', 'batch-size': 'batch', lr: 'lr', optimizer: 'optimizer', seed: 'seed' };

class FerrogradPlayground extends HTMLElement {
  connectedCallback() {
    if (this.shadowRoot) return;
    const root = this.attachShadow({ mode: 'open' });
    root.innerHTML = TEMPLATE;
    this.$ = (selector) => root.querySelector(selector);
    this.state = { ready: false, configured: false, trainState: 'idle', steps: 0, dataComplete: false, testAccuracy: null, error: null, notice: null };
    this.classList.toggle('compact', this.hasAttribute('compact'));
    root.querySelector('.card').classList.toggle('compact', this.hasAttribute('compact'));

    // The chart takes its colours from the stylesheets, which load after the element exists.
    this.chart = null;
    this.early = [];
    const sheets = [...root.querySelectorAll('link[rel=stylesheet]')];
    Promise.all(sheets.map((link) => new Promise((done) => { link.onload = done; link.onerror = done; }))).then(() => {
      this.chart = new LiveChart(this.$('.chart'), {
        height: this.hasAttribute('compact') ? 120 : 170,
        series: [{ label: 'training loss', colour: '--accent' }, { label: 'test loss', colour: '--accent-2', points: true }],
      });
      for (const [x, values] of this.early.splice(0)) this.chart.push(x, values);
    });
    this.bars = new ProbabilityBars(this.$('.probs'));
    this.pixels = null;
    this.asking = false;
    this.pad = new DrawingPad(this.$('.pad'), (pixels) => {
      this.pixels = pixels;
      if (pixels) this.ask();
      else {
        this.bars.update(null);
        this.$('.inside').hidden = true;
      }
    });
    // With `inside`, the pad asks for an inspection rather than a prediction, and the views
    // (loaded only then) show it.
    this.views = this.hasAttribute('inside') ? import('./inside.js') : null;

    // A frame sandboxed without allow-same-origin has an opaque origin, from which the browser
    // starts no worker: say what the sandbox needs rather than sit at "loading".
    if (self.origin === 'null') {
      this.fail(SANDBOXED);
      return;
    }
    try {
      this.worker = new Worker(here('worker.js'), { type: 'module' });
    } catch (error) {
      this.fail(`the training worker could not start: ${error.message}`);
      return;
    }
    this.worker.onmessage = ({ data }) => this.handle(data);
    this.worker.onerror = (event) => this.fail(`the training worker failed: ${event.message ?? 'it could not start'}`);
    this.$('.start').onclick = () => (this.sweep ? this.startSweep() : this.worker.postMessage({ type: 'start' }));
    this.$('.pause').onclick = () => this.worker.postMessage({ type: 'pause' });
    this.$('.reset').onclick = () => {
      this.worker.postMessage({ type: 'reset' });
      this.clearProgress();
    };
    this.$('.clear').onclick = () => this.pad.clear();
    this.$('select').onchange = () => {
      this.clearErrors();
      this.configure({ ...this.settings, model: this.$('select').value });
    };
    this.errors = [];

    const { settings, problems } = this.readAttributes();
    if (problems.length) this.fail(problems.join('; '));
    // A sweep: the grid's axes, one per `;`-separated part; Train runs its trials.
    const grid = this.getAttribute('sweep')?.split(';').map((axis) => axis.trim()).filter(Boolean);
    this.sweep = grid?.length ? { grid, trials: null, next: 0, results: [] } : null;
    if (this.sweep) this.$('.start').textContent = 'Run sweep';
    this.configure(settings);
  }

  /** Plans the sweep (the core checks it) and runs its first trial. */
  startSweep() {
    Object.assign(this.sweep, { trials: null, next: 0, results: [] });
    this.chart?.setOverlays([]);
    this.$('.sweep-results').replaceChildren();
    this.worker.postMessage({ type: 'sweep-trials', id: 1, grid: this.sweep.grid, ranges: [], trials: 0, seed: 0 });
  }

  /** The next trial of the sweep: its settings on the element's, trained from scratch. */
  nextTrial() {
    const { trials, next } = this.sweep;
    this.state.sweep = { done: next, of: trials.length, results: this.sweep.results };
    if (next >= trials.length) {
      this.$('.start').textContent = 'Run sweep';
      return;
    }
    this.sweep.starting = true;
    this.worker.postMessage(configureMessage(withTrial(this.settings, trials[next])));
  }

  /** A trial finished: its curve stays on the chart, its score joins the list. */
  trialDone() {
    const trial = this.sweep.trials[this.sweep.next];
    const label = trialLabel(trial);
    const accuracy = this.state.testAccuracy;
    this.sweep.results.push({ label, testAccuracy: accuracy });
    this.chart?.setOverlays(this.sweep.results.map((r, i) => ({ label: r.label, colour: PALETTE[i % PALETTE.length], points: this.sweep.curves[i] })));
    const list = this.$('.sweep-results');
    list.hidden = false;
    const best = Math.max(...this.sweep.results.map((r) => r.testAccuracy ?? -1));
    list.replaceChildren(...this.sweep.results.map((r) => Object.assign(document.createElement('li'), {
      textContent: `${r.label}: test accuracy ${r.testAccuracy == null ? '–' : `${(r.testAccuracy * 100).toFixed(1)}%`}${r.testAccuracy === best ? ' (best)' : ''}`,
    })));
    this.sweep.next += 1;
    this.nextTrial();
  }

  disconnectedCallback() {
    // Removed from the page: stop its worker, which frees the model and the data with it.
    this.worker?.terminate();
  }

  /** Settings from the attributes; a bad one keeps its default and is reported. */
  readAttributes() {
    const raw = {};
    for (const [attribute, key] of Object.entries(ATTRIBUTES)) {
      if (this.hasAttribute(attribute)) raw[key] = this.getAttribute(attribute);
    }
    // A model attribute that is not a preset name is a JSON spec.
    if (raw.model != null && !PRESETS.includes(raw.model.trim())) {
      raw.spec = raw.model;
      raw.model = 'custom';
    }
    return readSettings(raw, DEFAULTS, '<ferrograd-playground> ');
  }

  configure(settings) {
    this.settings = settings;
    this.worker.postMessage(configureMessage(settings));
  }

  ask() {
    if (!this.pixels || !this.state.configured) return;
    if (this.asking) {
      this.askAgain = true;
      return;
    }
    this.asking = true;
    this.askAgain = false;
    this.lastAsked = performance.now();
    this.asked = this.pixels.slice();
    this.worker.postMessage({ type: this.views ? 'inspect' : 'predict', id: 0, pixels: this.asked.slice() });
  }

  async inspected(inspection) {
    const { renderInspection } = await this.views;
    this.asking = false;
    if (this.pixels) {
      this.bars.update(inspection.probabilities);
      renderInspection(this.$('.inside'), inspection, { pixels: this.asked, spec: this.spec });
      this.$('.inside').hidden = false;
    }
    if (this.askAgain) this.ask();
  }

  /** Shows a problem in the element (and in `state.error`), beside any shown before. */
  fail(message) {
    this.errors.push(message);
    this.state.error = this.errors.join('\n');
    this.$('.error').textContent = this.state.error;
  }

  clearErrors() {
    this.errors = [];
    this.state.error = null;
    this.$('.error').textContent = '';
  }

  clearProgress() {
    this.chart?.clear();
    this.early = [];
    Object.assign(this.state, { steps: 0, testAccuracy: null });
    this.$('.accuracy').textContent = '–';
    this.$('.train-bar').value = 0;
  }

  handle(message) {
    const { state } = this;
    switch (message.type) {
      case 'ready':
        state.ready = true;
        break;
      case 'sweep-trials':
        if (message.error) {
          this.fail(`sweep="${this.getAttribute('sweep')}": ${message.error}`);
          break;
        }
        this.sweep.trials = message.trials;
        this.sweep.curves = [];
        this.nextTrial();
        break;
      case 'configured': {
        if (this.sweep?.starting) {
          this.sweep.starting = false;
          this.spec = JSON.parse(message.spec);
          this.sweep.curve = [];
          this.clearProgress();
          this.worker.postMessage({ type: 'start' });
          break;
        }
        const first = !state.configured;
        state.configured = true;
        this.spec = JSON.parse(message.spec);
        this.$('select').value = this.settings.model;
        for (const button of ['.start', '.reset']) this.$(button).disabled = false;
        this.clearProgress();
        if (first) this.load();
        this.ask();
        break;
      }
      case 'config-error':
        this.fail(`model: ${message.message}`);
        if (!state.configured) this.configure({ ...this.settings, model: DEFAULTS.model });
        break;
      case 'data':
      case 'data-loaded':
        this.showData(message);
        break;
      case 'data-error':
        this.fail(message.message);
        break;
      case 'state': {
        state.trainState = message.state;
        const running = message.state === 'training' || message.state === 'waiting';
        this.$('.start').disabled = running;
        this.$('.pause').disabled = !running;
        this.$('.start').textContent = message.state === 'paused' ? 'Resume' : this.sweep ? 'Run sweep' : message.state === 'done' ? 'Again' : 'Train';
        if (message.state === 'done' && this.sweep?.trials && this.sweep.next < this.sweep.trials.length) {
          this.sweep.curves.push(this.sweep.curve);
          this.trialDone();
        }
        this.$('.state').textContent = message.state === 'waiting' ? 'waiting for data' : message.state;
        break;
      }
      case 'progress':
        this.progress(message);
        break;
      case 'epoch':
        if (!message.evaluation) break;
        state.testAccuracy = message.evaluation.accuracy;
        this.$('.accuracy').textContent = `${(message.evaluation.accuracy * 100).toFixed(1)}%`;
        this.chart?.mark(state.steps, 1, message.evaluation.loss);
        break;
      case 'prediction':
        this.asking = false;
        if (this.pixels) this.bars.update(message.probs);
        if (this.askAgain) this.ask();
        break;
      case 'inspection':
        this.inspected(message.inspection);
        break;
      case 'error':
        this.asking = false;
        this.fail(message.message);
        break;
      case 'notice':
        // Something the user should know, such as a fresh wasm instance after a trap; with
        // steps, training went back to that step.
        this.asking = false;
        state.notice = message.message;
        this.$('.notice').textContent = message.message;
        if (message.steps != null) {
          this.chart?.truncate(message.steps);
          state.steps = message.steps;
        }
        break;
      default:
        break;
    }
  }

  load() {
    const source = this.getAttribute('data');
    try {
      const urls = dataUrls(source?.trim() ? source : DEFAULT_DATA, document.baseURI);
      this.worker.postMessage({ type: 'load', urls });
    } catch (error) {
      this.fail(`data="${source}": ${error.message}`);
    }
  }

  showData({ status, received, total }) {
    this.state.dataComplete = status.dataComplete;
    const bar = this.$('.data-bar');
    showDataProgress(bar, status, received, total);
    bar.hidden = status.dataComplete;
    if (!this.state.steps) this.$('.train-text').textContent = `${status.trainAvailable.toLocaleString('en')} training images ready`;
  }

  progress({ batches, status, samplesPerSecond }) {
    for (const { step, loss } of batches) {
      if (this.chart) this.chart.push(step, [loss, null]);
      else this.early.push([step, [loss, null]]);
      this.sweep?.curve?.push([step, loss]);
    }
    this.state.steps = status.steps;
    this.$('.train-bar').max = Math.max(1, status.epochs * status.epochSize);
    this.$('.train-bar').value = status.epoch * status.epochSize + status.epochDone;
    this.$('.train-text').textContent = `epoch ${Math.min(status.epoch + 1, status.epochs)}/${status.epochs} · `
      + `${status.steps} steps · ${Math.round(samplesPerSecond).toLocaleString('en')} samples/s`;
    this.showData({ status });
    if (this.pixels && performance.now() - (this.lastAsked ?? 0) > 500) this.ask();
  }
}

customElements.define('ferrograd-playground', FerrogradPlayground);
