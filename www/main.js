// The playground page: wires the controls to the training worker and draws what it reports.
// The worker owns the model and the data (see the protocol at the top of worker.js); this
// thread only reads controls and draws, so the page stays responsive while training runs.

import { LiveChart, Smoothing } from './charts.js';
import { renderInspection } from './inside.js';
import { DrawingPad, drawDigit } from './pad.js';
import { RunRecorder, RunsPanel } from './runs.js';
import { MAX_PARALLEL, parallelTrials, TrialWorker } from './trials.js';
import {
  best, keepSweep, keptSweep, METRICS, score, SweepPlot, trialLabel, withTrial,
} from './sweep.js';
import {
  configureMessage, dataUrls, DEFAULTS, effectiveLr, formatSpec, readSettings, SCHEDULE_FIELDS, scheduleParts,
  scheduleText, settingsFromQuery, settingsToQuery,
} from './settings.js';
import {
  backendLabel, ConfusionView, DigitGrid, drawCurve, ModelSummaryView, PerClassView, ProbabilityBars, showDataProgress,
} from './views.js';

const $ = (id) => document.getElementById(id);
const INSPECT_EVERY_MS = 600;
// On auto, how long a sweep's first trial runs before trials start beside it (see startSweep).
const SIDE_BY_SIDE_AFTER_MS = 2_000;
// Declared before anything runs: the form is filled (and these used) as the module starts.
const latest = {}; // the id of the latest question of each kind to the worker (see ask)
let curveTimer = 0;
let summaryTimer = 0;
// The sweep under way (see sweep.js), kept across reloads; the trial the page's worker trains
// (its index, from configuring it to its end) and whether it is configured and not started
// yet; the workers training other trials beside it (see trials.js); the sweep last finished
// or cancelled, still plotted.
let sweep = keptSweep();
let pageTrial = null;
let sweepStarting = false;
let trialWorkers = [];
let lastSweep = null;

// What the page tests (and curious users in the console) read: window.ferrograd.state.
const state = {
  ready: false,
  configured: false,
  trainState: 'idle',
  steps: 0,
  testAccuracy: null,
  lossPoints: 0,
  dataComplete: false,
  firstStepBeforeDataComplete: null,
  backend: null,
  threads: null,
};
const hooks = {
  state,
  inspection: null, // the last inspection the inside views drew
  // The durations (ms) of the main thread's long tasks (over 50 ms) as the browser reports
  // them: whether the page's own work ever blocks it, whatever the machine's load does to timers.
  longTasks: [],
};
window.ferrograd = hooks;
if (PerformanceObserver.supportedEntryTypes?.includes('longtask')) {
  new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) hooks.longTasks.push(Math.round(entry.duration));
  }).observe({ type: 'longtask' });
}

const SERIES = [
  { label: 'training (smoothed)', colour: '--accent' },
  { label: 'test', colour: '--accent-2', points: true },
  { label: 'validation', colour: '--accent-3', points: true },
];
const lossChart = new LiveChart($('loss-chart'), { series: SERIES });
const accuracyChart = new LiveChart($('accuracy-chart'), { percent: true, series: SERIES });

const confusion = new ConfusionView($('confusion'));
const perClass = new PerClassView($('per-class'));
const digitGrid = new DigitGrid($('digits'));
const probabilityBars = new ProbabilityBars($('pad-probs'));
const modelSummary = new ModelSummaryView($('model-summary'));

// ---- runs ---------------------------------------------------------------------------------------

const runsPanel = new RunsPanel($('runs'), {
  onReopen: (settings) => {
    fillForm(settings);
    configure(settings);
  },
  onSelect: (selected) => {
    const overlay = selected.length >= 2;
    lossChart.setOverlays(overlay ? selected.map(({ run, colour }) => ({ label: run.name, colour, points: run.curve })) : []);
    accuracyChart.setOverlays(overlay ? selected.map(({ run, colour }) => ({
      label: `${run.name} (test)`, colour, points: run.history.filter((h) => h.testAccuracy != null).map((h) => [h.step, h.testAccuracy]),
    })) : []);
    state.overlaid = overlay ? selected.length : 0;
  },
  onNotice: (message) => handlers.notice({ message }),
});
async function runSaved() {
  await runsPanel.refresh();
  if (sweep || lastSweep) showSweep();
}
const recorder = new RunRecorder(runSaved);
runsPanel.load();
hooks.runs = () => runsPanel.runs;
$('runs-csv').addEventListener('click', () => download(runsPanel.csv(), 'ferrograd-runs.csv', 'text/csv'));
$('runs-json').addEventListener('click', () => download(runsPanel.json(), 'ferrograd-runs.json', 'application/json'));

const smoothing = new Smoothing();

function showMessage(text) {
  $('message').textContent = text;
  $('message').hidden = !text;
}

// ---- settings -------------------------------------------------------------------------------

let applied = null; // the settings of the model the worker runs
let modelSpec = null; // its spec, parsed: the inside views name their layers from it
let pending = null; // settings sent, not yet confirmed

const initial = settingsFromQuery(location.search);
if (initial.problems.length) showMessage(`Some settings in the address were not usable: ${initial.problems.join('; ')}.`);

// The worker loads the wasm module for its backend once; another backend is another page load.
const workerUrl = new URL('./worker.js', import.meta.url);
workerUrl.searchParams.set('backend', initial.settings.backend);
workerUrl.searchParams.set('simd', initial.settings.simd);
// A panic on a thread of the threaded build's pool leaves the worker waiting for that
// thread forever; the module posts the panic here instead (a channel of this page's own).
const visit = Math.random().toString(36).slice(2); // this page load, named in kept records
workerUrl.searchParams.set('visit', visit);
const panics = self.crossOriginIsolated ? new BroadcastChannel(`ferrograd-pool-${visit}`) : null;
if (panics) workerUrl.searchParams.set('panics', panics.name);
let worker = startWorker();
const send = (message, transfer = []) => worker.postMessage(message, transfer);
let restarted = false; // the worker now running replaced a wedged one

function startWorker() {
  const started = new Worker(workerUrl, { type: 'module' });
  started.onerror = (event) => showMessage(`The training worker failed: ${event.message ?? 'it could not start'}`);
  started.onmessage = ({ data }) => handlers[data.type]?.(data);
  return started;
}

// Questions for the worker's module that do not touch training (a summary, a schedule's
// curve): each answer comes back with its question's id; only the latest of a kind counts.
function ask(type, question) {
  latest[type] = (latest[type] ?? 0) + 1;
  send({ type, id: latest[type], ...question });
}
const isLatest = (type, id) => latest[type] === id;

// A fresh worker on one thread, with the model as applied, the data loaded again, and the
// training last kept in this browser.
if (panics) {
  panics.onmessage = ({ data: panic }) => {
    if (restarted) return;
    restarted = true;
    worker.terminate();
    workerUrl.searchParams.set('threads', 'off');
    worker = startWorker();
    state.configured = false;
    showState('idle');
    handlers.notice({ message: `A thread of the training worker crashed (${panic}). A fresh worker carries on, on one thread, from the training this page last kept, if any; the data loads again.` });
    configure(applied ?? initial.settings);
  };
}

fillForm(initial.settings);
configure(initial.settings);
// For the page tests: a lost GPU, as a driver reset would make it.
hooks.loseGpu = () => send({ type: 'lose-gpu' });

// Another backend: keep the training in this browser, then reload with it in the address,
// which resumes from what was kept.
$('backend-choice').addEventListener('change', () => {
  const backend = $('backend-choice').value;
  const settings = { ...(applied ?? initial.settings), backend };
  history.replaceState(null, '', `${location.pathname}${settingsToQuery(settings)}`);
  $('backend').textContent = 'switching…';
  send({ type: 'keep-now' });
});

function fillForm(settings) {
  $('model-preset').value = settings.model;
  if (settings.model === 'custom') $('model-spec').value = settings.spec;
  $('optimizer').value = settings.optimizer;
  $('lr').value = settings.lr ?? '';
  $('weight-decay').value = settings.weightDecay;
  $('batch-size').value = settings.batch;
  $('epochs').value = settings.epochs;
  $('seed').value = settings.seed;
  $('normalize').value = settings.normalize;
  $('clean').checked = settings.clean;
  $('augment').checked = settings.augment;
  const schedule = scheduleParts(settings.schedule);
  $('schedule-kind').value = schedule.kind;
  $('schedule-first').value = schedule.first;
  $('schedule-second').value = schedule.second;
  $('val-split').value = settings.valSplit;
  $('early-stop').value = settings.earlyStop;
  $('data-url').value = settings.data;
  $('backend-choice').value = settings.backend;
  showScheduleFields();
}

function readForm() {
  return readSettings({
    model: $('model-preset').value,
    spec: $('model-spec').value,
    optimizer: $('optimizer').value,
    lr: $('lr').value,
    weightDecay: $('weight-decay').value,
    batch: $('batch-size').value,
    epochs: $('epochs').value,
    seed: $('seed').value,
    normalize: $('normalize').value,
    clean: $('clean').checked,
    augment: $('augment').checked,
    schedule: scheduleText($('schedule-kind').value, $('schedule-first').value, $('schedule-second').value),
    valSplit: $('val-split').value,
    earlyStop: $('early-stop').value,
    backend: $('backend-choice').value,
  }, applied ?? DEFAULTS);
}

// ---- the learning-rate schedule and the model summary, beside their settings ------------------

function showScheduleFields() {
  const fields = SCHEDULE_FIELDS[$('schedule-kind').value] ?? SCHEDULE_FIELDS.constant;
  ['first', 'second'].forEach((which, i) => {
    const field = fields[i];
    $(`schedule-${which}-wrap`).hidden = !field;
    if (field) {
      $(`schedule-${which}-label`).textContent = field[1];
      $(`schedule-${which}`).placeholder = field[2];
    }
  });
  requestScheduleCurve();
}

function requestScheduleCurve() {
  clearTimeout(curveTimer);
  curveTimer = setTimeout(() => {
    if (!state.ready) return;
    const { settings } = readForm();
    ask('schedule-curve', { schedule: settings.schedule, lr: effectiveLr(settings), epochs: settings.epochs });
  }, 120);
}

function scheduleCurve({ id, values, error }) {
  if (!isLatest('schedule-curve', id)) return;
  const canvas = $('schedule-curve');
  if (error) {
    drawCurve(canvas, null);
    $('schedule-curve-text').textContent = error;
    return;
  }
  drawCurve(canvas, values);
  const format = (v) => (v === 0 ? '0' : v.toExponential(1));
  $('schedule-curve-text').textContent = `lr ${format(values[0])} → ${format(Math.max(...values))} peak → ${format(values.at(-1))} at the end`;
}

for (const id of ['schedule-kind', 'schedule-first', 'schedule-second', 'lr', 'epochs', 'optimizer']) {
  $(id).addEventListener(id === 'schedule-kind' ? 'change' : 'input', () => {
    if (id === 'schedule-kind') showScheduleFields();
    else requestScheduleCurve();
  });
}

/** The summary of the model the form describes, as the spec is edited; errors inline. */
function requestSummary() {
  clearTimeout(summaryTimer);
  summaryTimer = setTimeout(() => {
    const preset = $('model-preset').value;
    ask('summary', { model: preset === 'custom' ? $('model-spec').value : preset });
  }, 150);
}

function summaryAnswer({ id, summary, error }) {
  if (isLatest('summary', id)) modelSummary.update(summary, error);
}

function configure(settings) {
  pending = settings;
  send(configureMessage(settings));
}

$('model-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const { settings, problems } = readForm();
  if (problems.length) {
    $('spec-error').textContent = problems.join('; ');
    return;
  }
  configure(settings);
});
$('model-preset').addEventListener('change', () => {
  if ($('model-preset').value !== 'custom') $('model-form').requestSubmit();
});
$('model-spec').addEventListener('input', () => {
  $('model-preset').value = 'custom';
  requestSummary();
});

function configured(spec) {
  const first = !state.configured;
  applied = { ...pending, data: applied?.data ?? pending.data };
  state.configured = true;
  modelSpec = JSON.parse(spec);
  $('spec-error').textContent = '';
  $('model-spec').value = formatSpec(spec);
  if (applied.model === 'custom') applied.spec = JSON.stringify(JSON.parse(spec));
  updateAddress();
  recorder.end('interrupted');
  clearResults();
  requestSummary();
  if (first) {
    loadData(applied.data, { initial: true });
    // Carry on with what was trained here before, on a reload or a plain visit; a shared
    // link with settings starts what it describes.
    send({ type: 'keep', enabled: true });
    const reload = performance.getEntriesByType('navigation')[0]?.type === 'reload';
    if (sweep) {
      // A sweep under way when the page closed carries on: the trials it was in start over.
      showSweptSettings(sweep.trials);
      $('sweep-metric').value = sweep.metric;
      handlers.notice({ message: `Carrying on with the sweep: ${sweep.finished.length} of ${sweep.trials.length} trials had finished; the ones under way start over.` });
      state.sweepResumedAt = sweep.finished.length;
      startSweep();
    } else if (restarted) {
      // After a restart, only what this page load kept: not an earlier visit's training.
      send({ type: 'resume-kept', visit });
    } else if (reload || !location.search) {
      send({ type: 'resume-kept' });
    }
  } else {
    $('kept-message').hidden = true;
  }
  requestInspection();
}

function configError(message) {
  $('spec-error').textContent = message;
  if (!state.configured) {
    // The address asked for a model that cannot be built: start with the default one, keeping
    // the user's spec in the editor to fix.
    configure({ ...pending, model: DEFAULTS.model });
  }
}

function updateAddress() {
  history.replaceState(null, '', `${location.pathname}${settingsToQuery(applied)}${location.hash}`);
}

// ---- data -------------------------------------------------------------------------------------

let pendingData = null;
// From Load until the worker says the source loaded or failed, whatever the status says
// meanwhile (the session learns of the load only once each file has answered).
let loadingData = false;

function loadData(source, { initial = false } = {}) {
  let urls;
  try {
    urls = dataUrls(source, location.href);
  } catch (error) {
    $('data-message').textContent = `Data source "${source}": ${error.message}.`;
    if (initial && source !== DEFAULTS.data) loadData(DEFAULTS.data, { initial });
    return;
  }
  pendingData = source;
  loadingData = true;
  $('data-message').textContent = '';
  $('data-text').textContent = `loading ${source}…`;
  send({ type: 'load', urls });
}

$('data-form').addEventListener('submit', (event) => {
  event.preventDefault();
  loadData($('data-url').value.trim() || DEFAULTS.data);
});

const byteSize = (n) => (n < 1e6 ? `${Math.round(n / 1e3)} kB` : `${(n / 1e6).toFixed(1)} MB`);
const count = (n) => n.toLocaleString('en');

/** Where training runs, and why not on the GPU when that was asked for. */
function showBackend(status) {
  state.backend = status.backend.startsWith('gpu: ') ? 'webgpu' : 'cpu';
  state.threads = status.threads;
  state.instructions = status.instructions;
  $('backend').textContent = backendLabel(status);
}

function showData(status, received = null, total = null) {
  showBackend(status);
  state.dataComplete = status.dataComplete;
  const loading = status.loading || loadingData;
  showDataProgress($('data-bar'), status, received, total, loading);
  const images = `${count(status.trainAvailable)} of ${status.trainDeclared == null ? '?' : count(status.trainDeclared)} training and `
    + `${count(status.testAvailable)} of ${status.testDeclared == null ? '?' : count(status.testDeclared)} test images`;
  const bytes = received == null ? '' : `${byteSize(received)}${total ? ` of ${byteSize(total)}` : ''} · `;
  // A replacement source loads aside: say so, and what stays in use meanwhile.
  const replacing = loading && status.dataComplete;
  $('data-text').textContent = replacing
    ? `loading ${pendingData} · ${bytes}meanwhile ${images} in use`
    : loading ? `loading · ${bytes}${images}`
      : status.trainAvailable ? `${images} loaded` : 'no data loaded';
  const dropped = status.dropped ?? 0;
  $('dropped').textContent = count(dropped);
  $('dropped-wrap').hidden = !applied?.clean;
}

// ---- training ---------------------------------------------------------------------------------

const STATE_TEXT = {
  idle: 'ready', training: 'training', waiting: 'waiting for data', paused: 'paused', done: 'finished',
};

function showState(next) {
  // A run begins with training; one resumed from a file or from what a reload kept is recorded
  // from there on, as a continued run.
  if (next === 'training' && !recorder.run && applied) {
    const trial = sweep && pageTrial != null ? trialInfo(pageTrial) : null;
    recorder.begin(applied, runsPanel.runs.length + 1, state.steps, trial, $('backend').textContent);
  }
  if (next === 'done' && sweep && recorder.run?.sweep?.id === sweep.id) pageTrialEnded(null);
  recorder.setActive(next === 'training' || next === 'waiting');
  if (next === 'done') recorder.end('done');
  state.trainState = next;
  $('state').textContent = STATE_TEXT[next] ?? next;
  const running = next === 'training' || next === 'waiting';
  $('start').disabled = running;
  $('pause').disabled = !running;
  $('start').textContent = next === 'paused' ? 'Resume' : next === 'done' ? 'Train again' : 'Start';
}

// ---- keeping, sharing and exporting the model ---------------------------------------------------

/** Offers `bytes` to the user as a download called `name`. */
function download(bytes, name, type = 'application/octet-stream') {
  const url = URL.createObjectURL(new Blob([bytes], { type }));
  const link = Object.assign(document.createElement('a'), { href: url, download: name });
  link.click();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

const fileStem = () => `ferrograd-${applied?.model === 'custom' ? 'model' : applied?.model ?? 'model'}-step${state.steps}`;

$('save-model').addEventListener('click', () => send({ type: 'save' }));
$('export-onnx').addEventListener('click', () => send({ type: 'export-onnx' }));
$('load-model').addEventListener('click', () => $('load-file').click());
$('load-file').addEventListener('change', async () => {
  const [file] = $('load-file').files;
  $('load-file').value = '';
  if (!file) return;
  const bytes = new Uint8Array(await file.arrayBuffer());
  send({ type: 'restore', bytes, source: file.name }, [bytes.buffer]);
});
$('forget-kept').addEventListener('click', () => {
  $('kept-message').hidden = true;
  fillForm({ ...initial.settings, data: applied?.data ?? initial.settings.data });
  configure({ ...initial.settings, data: applied?.data ?? initial.settings.data });
});

function restored({ spec, status, source }) {
  const text = JSON.stringify(JSON.parse(spec));
  applied = { ...applied, model: 'custom', spec: text };
  modelSpec = JSON.parse(spec);
  $('model-preset').value = 'custom';
  $('model-spec').value = formatSpec(spec);
  $('spec-error').textContent = '';
  $('file-message').textContent = '';
  updateAddress();
  clearResults();
  state.steps = status.steps;
  $('steps').textContent = count(status.steps);
  const where = source === 'kept' ? 'the training kept in this browser' : source;
  $('kept-text').textContent = `Continuing from ${where}: ${count(status.steps)} steps, epoch ${Math.min(status.epoch + 1, status.epochs)} of ${status.epochs}.`;
  $('kept-message').hidden = false;
  $('forget-kept').hidden = source !== 'kept';
  requestInspection();
}

$('start').addEventListener('click', () => send({ type: 'start' }));
$('pause').addEventListener('click', () => send({ type: 'pause' }));
$('reset').addEventListener('click', () => {
  recorder.end('interrupted');
  send({ type: 'reset' });
  clearResults();
});

function clearResults() {
  lossChart.clear();
  accuracyChart.clear();
  for (const view of [confusion, perClass, digitGrid]) view.show(false);
  smoothing.reset();
  Object.assign(state, { steps: 0, testAccuracy: null, validationAccuracy: null, bestEpoch: null, lossPoints: 0 });
  $('steps').textContent = '0';
  $('test-accuracy').textContent = '–';
  $('train-bar').value = 0;
  $('train-text').textContent = 'not started';
}

function duration(seconds) {
  if (seconds == null || !Number.isFinite(seconds)) return '';
  const s = Math.round(seconds);
  return s >= 60 ? `${Math.floor(s / 60)} min ${s % 60} s left` : `${s} s left`;
}

function progress({ batches, status, samplesPerSecond, etaSeconds }) {
  for (const { step, loss, accuracy } of batches) {
    const [smoothLoss, smoothAccuracy] = smoothing.push(loss, accuracy);
    lossChart.push(step, [smoothLoss, null, null]);
    accuracyChart.push(step, [smoothAccuracy, null, null]);
    recorder.batch(step, loss, accuracy, smoothLoss, samplesPerSecond);
  }
  state.lr = status.lr;
  if (state.firstStepBeforeDataComplete == null && status.steps >= 1) {
    state.firstStepBeforeDataComplete = !status.dataComplete;
  }
  state.steps = status.steps;
  state.lossPoints = lossChart.count(0);
  $('steps').textContent = count(status.steps);
  const done = status.epoch * status.epochSize + status.epochDone;
  $('train-bar').max = Math.max(1, status.epochs * status.epochSize);
  $('train-bar').value = done;
  const epoch = Math.min(status.epoch + 1, status.epochs);
  $('train-text').textContent = [`epoch ${epoch} of ${status.epochs}`, `${count(Math.round(samplesPerSecond))} samples/s`,
    done >= status.epochs * status.epochSize ? 'done' : status.dataComplete ? duration(etaSeconds) : 'data still arriving'].filter(Boolean).join(' · ');
  showData(status);
  if (currentPixels && performance.now() - lastInspection > INSPECT_EVERY_MS) requestInspection();
}

function epochFinished({ evaluation, validation }) {
  recorder.epoch(state.steps, state.lr, evaluation, validation);
  if (validation) {
    state.validationAccuracy = validation.accuracy;
    lossChart.mark(state.steps, 2, validation.loss);
    accuracyChart.mark(state.steps, 2, validation.accuracy);
    if (validation.bestEpoch != null) {
      state.bestEpoch = validation.bestEpoch;
      const how = validation.stoppedEarly
        ? 'Early stopping ended the run: the validation loss had not improved'
        : 'The run is over';
      handlers.notice({ message: `${how}; the model keeps the weights of epoch ${validation.bestEpoch}, its lowest validation loss, and the test scores below are theirs.` });
    }
  }
  if (!evaluation) return;
  state.testAccuracy = evaluation.accuracy;
  $('test-accuracy').textContent = `${(evaluation.accuracy * 100).toFixed(1)}%`;
  lossChart.mark(state.steps, 1, evaluation.loss);
  accuracyChart.mark(state.steps, 1, evaluation.accuracy);
  confusion.update(evaluation.confusionMatrix);
  perClass.update(evaluation.perClass);
  digitGrid.update(evaluation.showcase);
}

// ---- sweeps ---------------------------------------------------------------------------------------

const sweepPlot = new SweepPlot($('sweep-chart'));
const lines = (id) => $(id).value.split('\n').map((line) => line.trim()).filter(Boolean);

$('sweep-form').addEventListener('submit', (event) => {
  event.preventDefault();
  if (sweep) return;
  $('sweep-error').textContent = '';
  const trials = Number($('sweep-trials').value || 0);
  ask('sweep-trials', { grid: lines('sweep-grid'), ranges: lines('sweep-ranges'), trials, seed: applied?.seed ?? 0 });
});
$('sweep-cancel').addEventListener('click', () => cancelSweep());
$('sweep-axis').addEventListener('change', () => showSweep());
$('sweep-metric').addEventListener('change', () => {
  if (sweep) {
    sweep.metric = $('sweep-metric').value;
    keepSweep(sweep);
  }
  showSweep();
});

function sweepPlanned({ id, trials, error }) {
  if (!isLatest('sweep-trials', id)) return;
  if (error) {
    $('sweep-error').textContent = `Sweep: ${error}. Nothing ran; the runs recorded so far are kept.`;
    return;
  }
  const base = { ...(applied ?? DEFAULTS) };
  const choice = $('sweep-parallel').value;
  const parallel = parallelTrials(choice, { backend: state.backend, cores: navigator.hardwareConcurrency || 1, trials: trials.length });
  sweep = {
    id: `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 6)}`,
    base, trials, parallel, auto: choice === 'auto', finished: [], metric: $('sweep-metric').value, runIds: [], failed: [], seconds: 0, started: Date.now(),
  };
  keepSweep(sweep);
  showSweptSettings(trials);
  startSweep();
}

/** The settings a sweep varies, as the choices of the plot's horizontal axis. */
function showSweptSettings(trials) {
  $('sweep-axis').replaceChildren(...Object.keys(trials[0]).map((param) => Object.assign(document.createElement('option'), { value: param, textContent: param.replaceAll('_', '-') })));
}

// The choices of how many trials at a time: auto, or up to one per core.
$('sweep-parallel').append(...Array.from({ length: Math.min(MAX_PARALLEL, navigator.hardwareConcurrency || 1) }, (_, i) => Object.assign(document.createElement('option'), { value: String(i + 1), textContent: String(i + 1) })));

/**
 * The page's worker takes the first trial; for a sweep of more at a time, workers beside it
 * take the next: at once when the number was chosen, and on auto only once the first trial
 * has run for SIDE_BY_SIDE_AFTER_MS. A worker costs about a second to start (its module and
 * its copy of the data), so trials shorter than that finish sooner one after another.
 */
function startSweep() {
  runTrial();
  if (!sweep.auto) addTrialWorkers(sweep);
  else if (sweep.parallel > 1) setTimeout(() => addTrialWorkers(sweep), SIDE_BY_SIDE_AFTER_MS);
}

/** Starts the workers beside the page's that trials left for them need, up to the sweep's count. */
function addTrialWorkers(forSweep) {
  if (sweep !== forSweep || trialWorkers.length) return;
  const untaken = sweep.trials.length - sweep.finished.length - (pageTrial == null ? 0 : 1);
  const urls = dataUrls(sweep.base.data, location.href);
  // The page's worker's CPU instructions, so that a trial gives the same run on either.
  const url = new URL(workerUrl);
  url.searchParams.set('simd', state.instructions === 'WebAssembly relaxed SIMD' ? 'auto' : 'plain');
  trialWorkers = Array.from({ length: Math.min(sweep.parallel - 1, untaken) }, () => {
    const trialWorker = new TrialWorker(url, urls, {
      onSaved: runSaved,
      onEnd: (index, runId, failure) => {
        if (trialEnded(index, runId, failure)) giveTrial(trialWorker);
      },
    });
    return trialWorker;
  });
  trialWorkers.forEach(giveTrial);
}

/** The trials under way, on the page's worker and beside it, in order. */
const runningTrials = () => [pageTrial, ...trialWorkers.map((w) => w.trial?.index)].filter((i) => i != null).sort((a, b) => a - b);

/** The lowest trial neither finished nor under way, or null. */
function nextTrial() {
  const busy = new Set(runningTrials());
  const index = sweep.trials.findIndex((_, i) => !sweep.finished.includes(i) && !busy.has(i));
  return index < 0 ? null : index;
}

const trialInfo = (index) => ({
  id: sweep.id, index, of: sweep.trials.length, label: trialLabel(sweep.trials[index]), trial: sweep.trials[index],
});

/** The page's worker trains the next trial, with its settings in the form; its run starts once configured. */
function runTrial() {
  const index = nextTrial();
  pageTrial = index;
  showSweep();
  if (index == null) {
    finishWhenDone();
    return;
  }
  const settings = withTrial(sweep.base, sweep.trials[index]);
  sweepStarting = true;
  fillForm(settings);
  configure(settings);
}

function giveTrial(trialWorker) {
  if (!sweep || !trialWorker.idle) return;
  const index = nextTrial();
  if (index == null) {
    finishWhenDone();
    return;
  }
  trialWorker.run(index, withTrial(sweep.base, sweep.trials[index]), trialInfo(index), runsPanel.runs.length + 1);
  showSweep();
}

/**
 * Records that trial `index` ended (`failure`: null, or what went wrong); false when the
 * sweep is no longer under way.
 */
function trialEnded(index, runId, failure) {
  if (!sweep) return false;
  if (!sweep.finished.includes(index)) sweep.finished.push(index);
  if (runId) sweep.runIds.push(runId);
  if (failure) sweep.failed.push({ trial: index, message: failure });
  sweep.seconds = (Date.now() - sweep.started) / 1000;
  keepSweep(sweep);
  return true;
}

/** The page's worker's trial ended: record it and take the next. */
function pageTrialEnded(failure) {
  sweepStarting = false;
  const index = pageTrial;
  const id = recorder.run?.id ?? null;
  recorder.end(failure ? `failed: ${failure}` : 'done').then(() => {
    if (trialEnded(index, id, failure)) runTrial();
  });
}

function finishWhenDone() {
  if (sweep && sweep.finished.length === sweep.trials.length) finishSweep();
}

function stopTrialWorkers() {
  trialWorkers.forEach((w) => w.terminate());
  trialWorkers = [];
  pageTrial = null;
  sweepStarting = false;
}

function finishSweep() {
  const done = sweep;
  sweep = null;
  keepSweep(null);
  stopTrialWorkers();
  const winner = best(runsOf(done), done.metric);
  handlers.notice({ message: `The sweep ran ${done.trials.length} trials${done.failed.length ? ` (${done.failed.length} failed)` : ''}${winner ? `; the best by ${METRICS[done.metric].label} is "${winner.name}"` : ''}.` });
  lastSweep = done;
  showSweep();
}

/** Stops the sweep: the trials under way stop, the finished runs stay. */
function cancelSweep() {
  if (!sweep) return;
  const done = sweep;
  sweep = null;
  keepSweep(null);
  stopTrialWorkers();
  send({ type: 'pause' });
  recorder.end('cancelled');
  lastSweep = done;
  handlers.notice({ message: `Sweep cancelled after ${done.finished.length} of ${done.trials.length} trials; their runs are kept.` });
  showSweep();
}

const runsOf = (s) => runsPanel.runs.filter((run) => run.sweep?.id === s.id);

/** The sweep's progress, time left, best run so far and plot. */
function showSweep() {
  const shown = sweep ?? lastSweep;
  $('sweep-start').disabled = Boolean(sweep);
  $('sweep-cancel').disabled = !sweep;
  const running = sweep ? runningTrials() : [];
  state.sweep = sweep ? { finished: sweep.finished.length, running, parallel: sweep.parallel, workers: 1 + trialWorkers.length, of: sweep.trials.length } : null;
  if (!shown) return;
  const runs = runsOf(shown);
  const metric = $('sweep-metric').value;
  const winner = best(runs, metric);
  runsPanel.best = winner?.id ?? null;
  runsPanel.render();
  $('sweep-metric-name').textContent = METRICS[metric].label;
  $('sweep-bar').max = shown.trials.length;
  const finished = shown.finished.length;
  $('sweep-bar').value = finished;
  // The time per finished trial so far already counts the trials that ran side by side.
  const perTrial = finished ? shown.seconds / finished : null;
  const left = sweep && perTrial ? ` · about ${Math.round(perTrial * (shown.trials.length - finished))} s left` : '';
  const bestText = winner
    ? ` · best so far: ${winner.name} (${METRICS[metric].percent ? `${(score(winner, metric) * 100).toFixed(2)}%` : score(winner, metric).toFixed(4)})`
    : '';
  const under = running.length ? `, ${running.length > 1 ? 'trials' : 'trial'} ${running.map((i) => i + 1).join(' and ')} running` : '';
  const together = sweep && trialWorkers.length ? ` · ${1 + trialWorkers.length} at a time` : '';
  $('sweep-text').textContent = `${sweep ? `${finished} of ${shown.trials.length} trials done${under}${together}` : `${finished} of ${shown.trials.length} trials ran`}${left}${bestText}`;
  sweepPlot.update(runs.filter((run) => run.sweep?.trial), $('sweep-axis').value, metric);
}

// ---- the drawing pad and the inside views -----------------------------------------------------

let currentPixels = null;
let inspectedPixels = null; // the digit of the inspection asked for
let inspecting = false;
let stale = false;
let lastInspection = 0;
let nextId = 0;

const pad = new DrawingPad($('pad'), (pixels) => {
  currentPixels = pixels;
  drawDigit($('pad-preview'), pixels);
  $('pad-add').disabled = !pixels;
  if (pixels) {
    requestInspection();
  } else {
    probabilityBars.update(null);
    $('inside').replaceChildren(Object.assign(document.createElement('p'), { className: 'hint', textContent: 'Draw a digit to see what each layer makes of it.' }));
  }
});
drawDigit($('pad-preview'), null);

/** Asks the worker about the pad's digit; one request at a time, the latest drawing wins. */
function requestInspection() {
  if (!currentPixels || !state.configured) return;
  if (inspecting) {
    stale = true;
    return;
  }
  inspecting = true;
  stale = false;
  lastInspection = performance.now();
  inspectedPixels = currentPixels.slice();
  send({ type: 'inspect', id: ++nextId, pixels: inspectedPixels.slice() });
}

function inspected({ inspection }) {
  inspecting = false;
  if (!currentPixels) return;
  probabilityBars.update(inspection.probabilities);
  hooks.inspection = inspection;
  renderInspection($('inside'), inspection, { pixels: inspectedPixels, spec: modelSpec });
  if (stale) requestInspection();
}

$('pad-clear').addEventListener('click', () => pad.clear());
$('pad-add').addEventListener('click', () => {
  if (!currentPixels) return;
  const bytes = Uint8Array.from(currentPixels, (v) => Math.round(v * 255));
  send({ type: 'add-example', pixels: bytes, label: Number($('pad-label').value) }, [bytes.buffer]);
});
$('examples-clear').addEventListener('click', () => send({ type: 'clear-examples' }));

// ---- messages from the worker -----------------------------------------------------------------

const handlers = {
  ready: () => {
    state.ready = true;
    requestScheduleCurve();
  },
  summary: summaryAnswer,
  'schedule-curve': scheduleCurve,
  kept: () => location.reload(),
  notice: ({ message, steps }) => {
    $('notice').textContent = message;
    $('notice').hidden = false;
    if (steps != null) {
      lossChart.truncate(steps);
      accuracyChart.truncate(steps);
    }
  },
  configured: ({ spec }) => {
    configured(spec);
    if (sweep && sweepStarting) {
      sweepStarting = false;
      send({ type: 'start' });
    }
  },
  'config-error': ({ message }) => {
    configError(message);
    if (sweep && sweepStarting) pageTrialEnded(message);
  },
  'sweep-trials': sweepPlanned,
  state: ({ state: next, status }) => {
    showState(next);
    if (status) showData(status);
  },
  data: ({ received, total, status }) => showData(status, received, total),
  'data-loaded': ({ status }) => {
    loadingData = false;
    showData(status);
    if (pendingData != null && applied) {
      applied.data = pendingData;
      updateAddress();
    }
  },
  'data-error': ({ message, replacing, status }) => {
    loadingData = false;
    showData(status);
    const kept = replacing
      ? 'The data loaded before is kept'
      : status.trainAvailable > 0
        ? `Training goes on with the ${count(status.trainAvailable)} training and ${count(status.testAvailable)} test images that arrived`
        : 'No data is loaded';
    $('data-message').textContent = `${message}. ${kept}; press Load to try again.`;
  },
  progress,
  epoch: epochFinished,
  inspection: inspected,
  prediction: () => {},
  saved: ({ bytes }) => download(bytes, `${fileStem()}.safetensors`),
  onnx: ({ bytes }) => download(bytes, `${fileStem()}.onnx`, 'application/onnx'),
  restored,
  'restore-error': ({ message, source }) => {
    $('file-message').textContent = `${source}: ${message}. The current model is unchanged.`;
  },
  examples: ({ count: n }) => {
    $('examples-count').textContent = count(n);
  },
  error: ({ message }) => {
    inspecting = false;
    showMessage(message);
    // A trial that fails (a diverged loss) is recorded as such, and the sweep goes on.
    if (sweep && recorder.run?.sweep?.id === sweep.id) pageTrialEnded(message);
  },
};


