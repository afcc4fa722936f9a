// A sweep's trials beside the page's own: each TrialWorker is a worker of its own (worker.js on
// the CPU path, one thread) that loads the page's data and trains the trials it is given one
// after another, recording each as a run, as the page records the trial it trains itself.
//
// Why whole trials side by side: the presets' products are small, so a trial split across
// threads spends much of each step waiting on the others, while trials on a core each share
// nothing until they end. A worker holds its own copy of the data (one byte a pixel: 47 MB
// for the whole of MNIST), which bounds how many run at once (see MAX_PARALLEL).

import { Smoothing } from './charts.js';
import { RunRecorder } from './runs.js';
import { configureMessage } from './settings.js';
import { backendLabel } from './views.js';

/** The most trials at a time, whatever the core count: each worker holds the data. */
export const MAX_PARALLEL = 8;

/**
 * How many trials run at once. `choice`: the form's 'auto' or a number. Auto gives one worker
 * per core where training runs on the CPU, and one (the page's) on WebGPU: a GPU is one device,
 * and a trial beside it on the CPU would run at a fraction of its speed.
 */
export function parallelTrials(choice, { backend, cores, trials }) {
  const wanted = choice === 'auto' ? (backend === 'webgpu' ? 1 : cores) : Number(choice);
  return Math.max(1, Math.min(wanted, MAX_PARALLEL, trials));
}

export class TrialWorker {
  /**
   * `url`: worker.js's address (its backend and threads settings are set here); `dataUrls`:
   * the page's data source (see settings.js's dataUrls); `onSaved()`: a run was saved;
   * `onEnd(index, runId, failure)`: the trial given last ended, `failure` null or what went
   * wrong (the run is saved by then, if it finished an epoch).
   */
  constructor(url, dataUrls, { onSaved, onEnd }) {
    const address = new URL(url);
    address.searchParams.set('backend', 'cpu');
    address.searchParams.set('threads', 'one');
    this.worker = new Worker(address, { type: 'module' });
    this.worker.onmessage = ({ data }) => this.message(data);
    this.worker.onerror = (event) => {
      this.broken = true;
      this.fail(`its worker failed: ${event.message ?? 'it could not start'}`);
    };
    this.dataUrls = dataUrls; // loaded once the first model is configured, as the worker needs
    this.recorder = new RunRecorder(onSaved);
    this.onEnd = onEnd;
    this.smoothing = new Smoothing();
    this.trial = null; // {index, settings, info, number} of the trial given last, until it ends
    this.dataComplete = false;
    this.configured = false;
    this.broken = false;
    this.steps = 0;
    this.lr = null;
  }

  /** Whether it can take a trial now. */
  get idle() {
    return !this.trial && !this.broken;
  }

  /**
   * Trains `settings` (the page's settings with the trial's values), recorded as the run
   * `number` with the sweep's `info` ({id, index, of, label, trial}).
   */
  run(index, settings, info, number) {
    this.trial = { index, settings, info, number };
    this.configured = false;
    this.worker.postMessage(configureMessage(settings));
    if (this.dataUrls) this.worker.postMessage({ type: 'load', urls: this.dataUrls });
    this.dataUrls = null;
  }

  /** Stops for good: the trial under way is recorded as cancelled. */
  terminate() {
    this.worker.terminate();
    this.broken = true;
    this.trial = null;
    return this.recorder.end('cancelled');
  }

  message(data) {
    switch (data.type) {
      case 'configured':
        this.configured = true;
        this.startWhenReady();
        break;
      case 'data-loaded':
        this.dataComplete = true;
        this.startWhenReady();
        break;
      case 'data-error':
        // The page's worker loaded this source; if this one cannot, it takes no trials.
        this.broken = true;
        this.fail(`the data did not load: ${data.message}`);
        break;
      case 'config-error':
      case 'error':
        this.fail(data.message);
        break;
      case 'state':
        this.state(data.state, data.status);
        break;
      case 'progress':
        for (const { step, loss, accuracy } of data.batches) {
          const [smoothLoss] = this.smoothing.push(loss, accuracy);
          this.recorder.batch(step, loss, accuracy, smoothLoss, data.samplesPerSecond);
        }
        this.steps = data.status.steps;
        this.lr = data.status.lr;
        break;
      case 'epoch':
        this.recorder.epoch(this.steps, this.lr, data.evaluation, data.validation);
        break;
      default:
    }
  }

  /**
   * A trial starts once its model is built and the data has arrived whole: the first epoch
   * then takes the seed's order, as the page's own trial does, so a trial gives the same run
   * whichever worker trains it.
   */
  startWhenReady() {
    if (this.trial && this.configured && this.dataComplete) {
      this.configured = false;
      this.smoothing.reset();
      this.worker.postMessage({ type: 'start' });
    }
  }

  state(next, status) {
    if (!this.trial) return;
    if (next === 'training' && !this.recorder.run) {
      const { settings, info, number } = this.trial;
      this.recorder.begin(settings, number, 0, info, backendLabel(status));
    }
    this.recorder.setActive(next === 'training' || next === 'waiting');
    if (next === 'done') this.end(null);
  }

  fail(message) {
    if (this.trial) this.end(message);
  }

  async end(failure) {
    const { index } = this.trial;
    this.trial = null;
    const runId = this.recorder.run?.id ?? null;
    await this.recorder.end(failure ? `failed: ${failure}` : 'done');
    this.onEnd(index, runId, failure);
  }
}
