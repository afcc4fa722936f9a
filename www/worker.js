// The training worker: owns the wasm Session (model, data, training state), streams data
// into it and trains in short slices so that messages (pause, predict) are answered at once.
//
// Protocol. Page -> worker:
//   {type: 'configure', model, settings}   model: preset name or JSON spec text; settings:
//        {optimizer, lr, batchSize, epochs, seed, normalize, clean, augment, lrSchedule,
//        valSplit, earlyStop}. A new model trains from scratch on the same data. Answers
//        'configured' or 'config-error'.
//   {type: 'summary', id, model}        the model's layers, shapes and parameter counts (any
//        model text, not the one training); answers 'summary': {id, summary} or {id, error}
//   {type: 'schedule-curve', id, schedule, lr, epochs}  answers 'schedule-curve': {id, values}
//        (60 learning rates over the run) or {id, error}
//   {type: 'sweep-trials', id, grid, ranges, trials, seed}  a sweep as the CLI's --grid,
//        --range, --trials and --sweep-seed give it; answers 'sweep-trials': {id, trials:
//        [{lr, batch_size, ...}]} or {id, error}
//   {type: 'load', urls: {trainImages, trainLabels, testImages, testLabels}}
//        each a list of URLs to try in turn (a folder's file names; see settings.js)
//        Streams a data source (gzip or raw IDX). The first trains while it arrives; a later
//        one replaces the data only when it arrived whole. Answers 'data' progress, then
//        'data-loaded' or 'data-error'.
//   {type: 'start'} | {type: 'pause'} | {type: 'reset'}
//   {type: 'predict', id, pixels: Float32Array(784)}        answers 'prediction'
//   {type: 'inspect', id, pixels: Float32Array(784)}        answers 'inspection': {probabilities,
//        predicted, saliency[784], filters: {layer, count, height, width, values} | null,
//        featureMaps: [{layer, count, height, width, values}], recurrent: [{layer, kind, steps,
//        units, hidden[steps*units], gates: [[name, values[steps*units]]]}], attention: null |
//        {layers: [{heads, tokens, weights[heads*tokens*tokens]}], grid: [rows, cols] | null,
//        rollout[tokens*tokens], pooled[tokens]}}
//   {type: 'add-example', pixels: Uint8Array(784), label}    answers 'examples'
//   {type: 'clear-examples'}                                 answers 'examples'
//   {type: 'save'}                      answers 'saved': {bytes} (a safetensors training file)
//   {type: 'restore', bytes, source}    continues from such a file; answers 'restored':
//        {spec, status, source} or 'restore-error': {message, source}
//   {type: 'export-onnx'}               answers 'onnx': {bytes}
//   {type: 'keep', enabled}             keep the training in IndexedDB (after each epoch, on
//        pause and every few seconds of training) so that a reload resumes it
//   {type: 'resume-kept', visit?}       restores what IndexedDB kept, if anything (with visit,
//        only what this page load kept): answers 'restored' (source 'kept') or nothing
//   {type: 'lose-gpu'}                  destroys the WebGPU device as a driver reset would, to
//        test the fallback to the CPU
//   {type: 'keep-now'}                  pauses and keeps the training in IndexedDB at once
//        (before a reload onto another backend); answers 'kept'
// Worker -> page:
//   {type: 'ready'}
//   {type: 'configured', spec}                 spec: the model spec as JSON text
//   {type: 'config-error', message}
//   {type: 'data', received, total, status}    bytes over the network; total null if unknown
//   {type: 'data-loaded', status} | {type: 'data-error', message, replacing, status}
//        (replacing: whole data was there before the load, and is kept)
//   {type: 'state', state, status}             state: 'idle' | 'training' | 'waiting' | 'paused' | 'done'
//   {type: 'progress', batches: [{step, loss, accuracy}], status, samplesPerSecond, etaSeconds}
//   {type: 'epoch', epoch, evaluation: {loss, accuracy, confusionMatrix, perClass, showcase},
//        validation: null | {loss, accuracy, bestEpoch, stoppedEarly}}
//   {type: 'prediction', id, probs} | {type: 'inspection', id, inspection} | {type: 'examples', count}
//   {type: 'error', message}                   anything else that went wrong
//   {type: 'saved', bytes} | {type: 'onnx', bytes} | {type: 'restored', ...} | {type: 'restore-error', ...}
//   {type: 'kept'}                             after 'keep-now'
//   {type: 'notice', message, steps?}         something the user should know; with steps, training
//        went back to that step (the GPU was lost, or the wasm instance trapped)
// `status` is the Session's status object (epoch, epochs, epochDone, epochSize, steps,
// trainAvailable, trainDeclared, testAvailable, testDeclared, dataComplete, dropped, examples,
// backend, backendNote, threads).
//
// Backend. The worker's URL says which (`?backend=auto|cpu|gpu`, auto by default; `threads=one`
// keeps the CPU path on one thread, for a sweep's trials side by side). Where the
// browser gives a WebGPU adapter and the backend is not cpu, the worker loads the wasm module
// built with the GPU backend (pkg/gpu/): gpu trains there; auto starts on its CPU path and
// measures the GPU for each model and batch size (see measureGpu); otherwise the smaller CPU module
// (pkg/), with the reason in `backendNote`; on a cross-origin-isolated page, the CPU module
// built with threads (pkg/threads/), which splits its work across a Web Worker per core; on one
// thread, where the browser has relaxed SIMD, the CPU module built with it (pkg/relaxed/;
// `simd=plain` in the worker's URL keeps the plain one). On the
// GPU, a step's statistics come back a little later (`finishedSteps`), and the weights are
// brought back (`sync`) before anything reads them. If the GPU fails or is lost, training
// carries on on the CPU from the weights last brought back, with a notice.
//
// Traps. A Rust panic aborts the wasm instance ("unreachable"), after which every call into it
// fails. The worker then starts a fresh instance, builds the last model that configured,
// restores the training last saved (in memory, else what IndexedDB kept), streams the data
// again, and says so in one notice that carries the trap's message: the first error is the one
// shown, and every later action works.

import { relaxedSimd } from '../node_modules/wasm-feature-detect/dist/esm/index.js';

import { forget, keep, kept } from './store.js';
import { startBuild } from './start.js';
import { streamUrl } from './stream.js';

const SLICE_MS = 25;
const KEEP_EVERY_MS = 15_000;
// How often the weights come back from the GPU while training, so that a lost GPU costs at
// most this much training.
const SYNC_EVERY_MS = 5_000;
const SHOWCASE = 48;
// Auto measures the CPU on the run's own first steps, at least this long (or the whole run, if
// it is shorter), then the GPU on a throwaway copy: a warm-up step, then at least 3 steps and
// GPU_MEASURE_MS, or whatever finished by GPU_MEASURE_MAX_MS (a step on a software adapter can
// take seconds).
const CPU_MEASURE_MS = 300;
const GPU_MEASURE_MS = 300;
const GPU_MEASURE_MAX_MS = 4_000;
// How much faster the GPU must measure (ferrograd::measure::GPU_MARGIN).
const GPU_MARGIN = 1.1;
// How long the threaded build's pool may take to start before training runs on one thread.
const THREADS_START_MS = 10_000;
const PARTS = ['trainLabels', 'testLabels', 'trainImages', 'testImages'];

// The page load this worker serves (the page names it in the worker's address): kept records
// carry it, so that a worker restarted after a crash resumes only what this page kept.
const VISIT = new URL(self.location.href).searchParams.get('visit');

let session = null;
let Session = null;
let wasm = null; // the loaded module, for its free functions
let toolsBuild = null; // the tools build, once something asked for it
// What training leaves out (ONNX export, sweep planning) is in its own build, pkg/tools/,
// loaded the first time it is needed: in the training modules it would be a tenth of them.
const tools = () => (toolsBuild ??= startBuild('../pkg/tools/'));
let gpu = null; // the GpuDevice, where training runs on WebGPU
let autoBackend = false; // the backend is auto: whether training runs on the GPU is measured
// Auto's verdicts, per model and batch size: `${spec}|${batchSize}` → {gpu, note}; and the
// key being measured (training runs on the CPU meanwhile), or null.
const verdicts = new Map();
let measuring = null;
let backendNote = null; // why the CPU runs when the GPU was asked for, or one thread when threads were
let state = 'idle';
let load = null; // {controller, generation}
let generation = 0;
const throughput = { samples: 0, ms: 0 };
const restartThroughput = () => Object.assign(throughput, { samples: 0, ms: 0 });
let keeping = false;
let lastSync = 0;
let lastKept = 0;
// What a fresh instance needs after a trap: the last model and settings that configured, the
// last data source asked for and the training last saved.
let lastConfig = null;
let lastUrls = null;
let lastTraining = null;
let instances = 0; // fresh instances started after traps
let recovering = false;

const post = (message, transfer = []) => self.postMessage(message, transfer);
const errorText = (error) => String(error?.message ?? error);
const trapped = (error) => error instanceof WebAssembly.RuntimeError;

function setState(next) {
  state = next;
  post({ type: 'state', state, status: session?.status() ?? null });
  if (next === 'paused' || next === 'done') keepTraining();
}

/**
 * Saves the training in memory (for a fresh instance after a trap) and in IndexedDB when the
 * page asked for it; failures are reported.
 */
async function keepTraining() {
  if (!session) return;
  lastKept = performance.now();
  try {
    if (session.status().steps === 0) return;
    await sync();
    const status = session.status();
    const record = { bytes: session.save(), steps: status.steps, epoch: status.epoch, savedAt: Date.now(), visit: VISIT };
    lastTraining = record.bytes;
    if (keeping) await keep(record);
  } catch (error) {
    if (trapped(error)) recover(error, 'keeping the training');
    else post({ type: 'error', message: `could not keep the training in this browser: ${errorText(error)}` });
  }
}

/** Brings the weights back from the GPU (at once on the CPU); a failed GPU falls back. */
async function sync() {
  lastSync = performance.now();
  try {
    session.startSync();
    while (!session.finishSync()) await sleep(1);
  } catch (error) {
    if (!gpuFailed(error)) throw error;
  }
}

/**
 * After an error from the GPU, trains on the CPU from the weights last brought back and says
 * so; false when the error was not the GPU's.
 */
function gpuFailed(error) {
  const message = errorText(error);
  if (!gpu || !message.startsWith('gpu:')) return false;
  gpu = null;
  const steps = session.useCpu('the GPU failed; training carries on here');
  restartThroughput();
  post({
    type: 'notice',
    steps,
    message: `The GPU failed (${message.slice(4).trim()}); training carries on on the CPU from step ${steps}, the last weights brought back.`,
  });
  post({ type: 'state', state, status: session.status() });
  return true;
}

function forgetKept() {
  lastTraining = null;
  if (keeping) forget().catch(() => {});
}

function restore(bytes, source) {
  try {
    session.restore(bytes);
  } catch (error) {
    if (trapped(error)) throw error;
    post({ type: 'restore-error', message: errorText(error), source });
    return;
  }
  lastTraining = bytes;
  placeTraining();
  restartThroughput();
  post({ type: 'restored', spec: session.specJson(), status: session.status(), source });
  setState(state === 'training' || state === 'waiting' ? state : 'paused');
}

// Lets queued messages run between slices; a MessageChannel hop avoids setTimeout's clamping.
const channel = new MessageChannel();
const yielded = [];
channel.port1.onmessage = () => yielded.shift()?.();
const yieldToEvents = () => new Promise((resolve) => { yielded.push(resolve); channel.port2.postMessage(0); });
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const withTimeout = (promise, ms, message) => Promise.race([
  promise,
  sleep(ms).then(() => { throw new Error(message); }),
]);

async function trainLoop() {
  while (state === 'training' || state === 'waiting') {
    const batches = [];
    let evaluation = null;
    let outcome = 'trained';
    const start = performance.now();
    let epochFinished = false;
    try {
      while (performance.now() - start < SLICE_MS) {
        const progress = session.step();
        if (progress.status === 'busy') {
          collectFinished(batches);
          await sleep(0);
          continue;
        }
        if (progress.status !== 'trained') {
          outcome = progress.status;
          break;
        }
        if (progress.stats) {
          const { loss, accuracy, samples } = progress.stats;
          throughput.samples += samples;
          batches.push({ step: session.status().steps, loss, accuracy });
        }
        if (progress.epochFinished) {
          epochFinished = true;
          break;
        }
      }
      collectFinished(batches);
    } catch (error) {
      if (trapped(error)) throw error;
      if (!gpuFailed(error)) {
        // Say where it failed, unless the message already does ("training diverged ...").
        const text = errorText(error);
        post({ type: 'error', message: /^training\b/.test(text) ? text : `training: ${text}` });
        setState('paused');
        return;
      }
    }
    if (epochFinished || (gpu && performance.now() - lastSync > SYNC_EVERY_MS)) {
      await sync();
      collectFinished(batches);
    }
    let validation = null;
    if (epochFinished) {
      validation = validate();
      evaluation = evaluate();
    }
    throughput.ms += performance.now() - start;
    // A run that ends sooner (a small model on a fast CPU trains an epoch of the bundled
    // sample in about that time) is measured on all it did, so that the verdict is there.
    const cpuMeasured = throughput.ms >= CPU_MEASURE_MS || outcome === 'done';
    if (measuring && gpu && cpuMeasured && throughput.samples > 0 && state === 'training') await measureGpu();
    const status = session.status();
    if (batches.length) post({ type: 'progress', batches, status, ...speed(status) });
    if (evaluation || performance.now() - lastKept > KEEP_EVERY_MS) keepTraining();
    if (evaluation) {
      // A typed array crosses to the page as one copy; a plain array of 37,000 numbers
      // would be cloned and rebuilt element by element on the page's thread.
      const pixels = Uint8Array.from(evaluation.showcase.pixels);
      evaluation.showcase.pixels = pixels;
      post({ type: 'epoch', epoch: status.epoch, evaluation, validation }, [pixels.buffer]);
    }
    if (outcome === 'done') {
      setState('done');
      return;
    }
    if (outcome === 'waiting' && state === 'training') setState('waiting');
    if (outcome === 'trained' && state === 'waiting') setState('training');
    await (outcome === 'waiting' ? sleep(30) : yieldToEvents());
  }
}

/** The key auto's verdicts are kept under: the model and the batch size. */
const verdictKey = () => `${session.specJson()}|${lastConfig?.settings?.batchSize}`;

/**
 * Where a new model or restored training runs. Auto with a GPU: where its verdict for this
 * model and batch size says, or on the CPU while it is measured; a forced GPU stays (the
 * session keeps it across models).
 */
function placeTraining() {
  if (!gpu || !autoBackend) return;
  const key = verdictKey();
  const verdict = verdicts.get(key);
  measuring = verdict ? null : key;
  if (verdict?.gpu) session.useGpu(gpu, verdict.note);
  else session.useCpu(verdict?.note ?? 'measuring WebGPU against the CPU for this model');
}

/**
 * Auto: times steps of the current model on the GPU (a throwaway copy, on zeros: the run is
 * untouched) against the run's own speed on the CPU so far, then trains where it was faster
 * and keeps the verdict for this model and batch size. The adapter's name and type are
 * hints, not the answer: SwiftShader trains the presets at a tenth of the CPU's speed or less.
 */
async function measureGpu() {
  const key = measuring;
  measuring = null;
  const cpu = throughput.samples / throughput.ms;
  let ratio = null;
  let failure = null;
  let timer = null;
  try {
    timer = new wasm.GpuStepTimer(lastConfig.model, lastConfig.settings, gpu);
    const batch = timer.batchSize();
    const started = performance.now();
    let warm = null;
    for (;;) {
      timer.submit();
      await sleep(0);
      const done = timer.finished();
      const now = performance.now();
      if (!warm && done >= 1) warm = { at: now, done };
      const ms = now - (warm?.at ?? started);
      const steps = warm ? done - warm.done : 0;
      if ((steps >= 3 && ms >= GPU_MEASURE_MS) || ms >= GPU_MEASURE_MAX_MS) {
        // No step finished in time: the one under way would have, at best, now.
        ratio = ((Math.max(steps, 1) * batch) / ms) / cpu;
        break;
      }
    }
  } catch (error) {
    if (trapped(error)) throw error;
    failure = errorText(error);
  } finally {
    timer?.free();
  }
  const verdict = failure
    ? { gpu: false, note: `WebGPU could not train this model: ${failure}` }
    : ratio >= GPU_MARGIN
      ? { gpu: true, note: `measured ${ratio.toFixed(1)}x the CPU for this model` }
      : { gpu: false, note: `WebGPU measured ${ratio.toFixed(2)}x the CPU for this model` };
  verdicts.set(key, verdict);
  // A model configured meanwhile is placed by its own verdict.
  if (!session || verdictKey() !== key) return;
  if (verdict.gpu) session.useGpu(gpu, verdict.note);
  else session.useCpu(verdict.note);
  restartThroughput();
  post({ type: 'state', state, status: session.status() });
}

/** Adds the GPU steps whose statistics have come back to `batches`. */
function collectFinished(batches) {
  for (const { step, loss, accuracy, samples } of session.finishedSteps()) {
    throughput.samples += samples;
    batches.push({ step, loss, accuracy });
  }
}

function speed(status) {
  const samplesPerSecond = throughput.ms > 0 ? (throughput.samples * 1000) / throughput.ms : 0;
  const left = (status.epochs - status.epoch) * status.epochSize - status.epochDone;
  return { samplesPerSecond, etaSeconds: samplesPerSecond > 0 ? left / samplesPerSecond : null };
}

/** Validation scores after an epoch, and early stopping's verdict; null without a split. */
function validate() {
  try {
    return session.validate();
  } catch (error) {
    if (trapped(error)) throw error;
    post({ type: 'error', message: `validation: ${errorText(error)}` });
    return null;
  }
}

function evaluate() {
  try {
    return session.evaluate(SHOWCASE);
  } catch (error) {
    if (trapped(error)) throw error;
    post({ type: 'error', message: `evaluation: ${errorText(error)}` });
    return null;
  }
}

async function loadData(urls) {
  if (load) {
    load.controller.abort();
    session.abortLoad();
  }
  const mine = { controller: new AbortController(), generation: ++generation };
  load = mine;
  lastUrls = urls;
  const current = () => load === mine;
  const sizes = {};
  let received = 0;
  let lastPost = 0;
  const report = (force) => {
    const now = performance.now();
    if (!force && now - lastPost < 100) return;
    lastPost = now;
    const known = PARTS.every((p) => sizes[p] != null);
    const total = known ? PARTS.reduce((sum, p) => sum + sizes[p], 0) : null;
    post({ type: 'data', received, total, status: session.status() });
  };
  // Whether whole data is there to fall back on if this source fails.
  const replacing = session.status().dataComplete;
  // The session learns the four URLs (its errors name them) once each part has found its
  // file among the candidates; until then the parts that started wait.
  const found = {};
  let begin;
  const begun = new Promise((resolve) => { begin = resolve; });
  try {
    await Promise.all(PARTS.map((part) => streamUrl(urls[part], {
      signal: mine.controller.signal,
      onStart: (size, url) => {
        sizes[part] = size;
        found[part] = url;
        if (PARTS.every((p) => found[p]) && current()) {
          session.beginLoad(found.trainImages, found.trainLabels, found.testImages, found.testLabels);
          report(true);
          begin();
        }
      },
      onBytes: (n) => { received += n; report(false); },
      onChunk: async (chunk) => {
        await begun;
        if (current()) session.feed(part, chunk);
      },
    })));
    if (!current()) return;
    session.endLoad();
    report(true);
    post({ type: 'data-loaded', status: session.status() });
  } catch (error) {
    begin(); // parts that were waiting for the others see the load is over, and stop
    if (!current()) return;
    mine.controller.abort();
    if (trapped(error)) {
      recover(error, 'loading the data');
      return;
    }
    session.abortLoad();
    post({ type: 'data-error', message: errorText(error), replacing, status: session.status() });
  } finally {
    if (current()) load = null;
  }
}

function configure(model, settings) {
  try {
    if (session) {
      session.configure(model, settings);
    } else {
      session = new Session(model, settings);
      if (gpu && !autoBackend) session.useGpu(gpu, null);
      else if (backendNote) session.useCpu(backendNote);
    }
  } catch (error) {
    if (trapped(error)) throw error;
    post({ type: 'config-error', message: errorText(error) });
    return;
  }
  lastConfig = { model, settings };
  placeTraining();
  restartThroughput();
  forgetKept();
  post({ type: 'configured', spec: session.specJson() });
  if (state === 'done') setState('idle');
  else post({ type: 'state', state, status: session.status() });
}

/** Answers a question for the module's free functions: `answer()` or the error's text. */
function reply(type, id, answer) {
  try {
    post({ type, id, ...answer() });
  } catch (error) {
    if (trapped(error)) throw error;
    post({ type, id, error: errorText(error) });
  }
}

const handlers = {
  configure: ({ model, settings }) => configure(model, settings),
  summary: ({ id, model }) => reply('summary', id, () => ({ summary: wasm.modelSummary(model) })),
  'schedule-curve': ({ id, schedule, lr, epochs }) => reply('schedule-curve', id, () => ({
    values: Array.from(wasm.scheduleCurve(schedule, lr, epochs, 60)),
  })),
  'sweep-trials': async ({ id, grid, ranges, trials, seed }) => {
    const planner = await tools();
    reply('sweep-trials', id, () => ({ trials: planner.sweepTrials(grid, ranges, trials, seed) }));
  },
  load: ({ urls }) => loadData(urls),
  start: () => {
    if (state === 'training' || state === 'waiting') return;
    if (state === 'done') session.reset();
    setState('training');
    trainLoop().catch((error) => failed(error, 'training'));
  },
  pause: () => {
    if (state === 'training' || state === 'waiting') setState('paused');
  },
  reset: () => {
    session.reset();
    forgetKept();
    restartThroughput();
    setState('idle');
  },
  predict: async ({ id, pixels }) => {
    await sync();
    post({ type: 'prediction', id, probs: session.predict(pixels) });
  },
  inspect: async ({ id, pixels }) => {
    await sync();
    post({ type: 'inspection', id, inspection: session.inspect(pixels) });
  },
  'add-example': ({ pixels, label }) => post({ type: 'examples', count: session.addExample(pixels, label) }),
  save: async () => {
    await sync();
    const bytes = session.save();
    post({ type: 'saved', bytes }, [bytes.buffer]);
  },
  restore: ({ bytes, source }) => restore(bytes, source),
  'export-onnx': async () => {
    await sync();
    // It reads the model from the training file, as a download would.
    const bytes = (await tools()).exportOnnx(session.save());
    post({ type: 'onnx', bytes }, [bytes.buffer]);
  },
  keep: ({ enabled }) => {
    keeping = Boolean(enabled);
  },
  'lose-gpu': () => gpu?.destroyForTesting(),
  'keep-now': async () => {
    if (state === 'training' || state === 'waiting') setState('paused');
    keeping = true;
    await keepTraining();
    post({ type: 'kept' });
  },
  'resume-kept': async ({ visit }) => {
    const record = await kept();
    if (record?.bytes && (visit == null || record.visit === visit)) restore(record.bytes, 'kept');
  },
  'clear-examples': () => {
    session.clearExamples();
    post({ type: 'examples', count: 0 });
  },
};

// Messages that arrive while the module loads wait for it.
const pending = [];
self.onmessage = ({ data }) => pending.push(data);

function handle(message) {
  const handler = handlers[message?.type];
  if (!handler) {
    post({ type: 'error', message: `worker: unknown message type ${JSON.stringify(message?.type)}` });
    return;
  }
  if (!session && !['configure', 'summary', 'schedule-curve', 'sweep-trials'].includes(message.type)) {
    post({ type: 'error', message: `worker: '${message.type}' before any model was configured` });
    return;
  }
  try {
    const result = handler(message);
    result?.catch?.((error) => failed(error, `handling '${message.type}'`));
  } catch (error) {
    failed(error, `handling '${message.type}'`);
  }
}

/**
 * Reports an error, or recovers from a trap (naming what was being done). While a fresh
 * instance starts, what the dead one still throws is not news.
 */
function failed(error, during) {
  if (trapped(error)) recover(error, during);
  else if (!recovering) post({ type: 'error', message: errorText(error) });
}

/**
 * After a trap: a fresh instance of the same build with the last model that configured, the
 * training last saved, and the data streamed again; messages wait meanwhile. Later errors of
 * the dead instance are not reported: the trap is the first error and the one shown.
 */
async function recover(error, during) {
  if (recovering) return;
  recovering = true;
  session = null;
  state = 'paused';
  if (load) load.controller.abort();
  load = null;
  self.onmessage = ({ data }) => pending.push(data);
  const crashed = `The WebAssembly instance crashed while ${during} (${errorText(error)})`;
  try {
    gpu = null;
    backendNote = null;
    const module = await loadModule(++instances);
    Session = module.Session;
    wasm = module;
    // A model that trapped while it was built is not built again: the one before it is.
    if (during === "handling 'configure'") post({ type: 'config-error', message: crashed });
    if (!lastConfig) {
      post({ type: 'notice', message: `${crashed}. A fresh one is ready.` });
      return;
    }
    session = new Session(lastConfig.model, lastConfig.settings);
    if (gpu && !autoBackend) session.useGpu(gpu, null);
    else if (backendNote) session.useCpu(backendNote);
    placeTraining();
    const saved = lastTraining ?? (keeping ? (await kept().catch(() => null))?.bytes : null);
    let from = 'with the model untrained';
    if (saved) {
      try {
        session.restore(saved);
        from = `from step ${session.status().steps}, the training last saved`;
      } catch {
        // A saved file this build refuses: the model starts untrained, as the notice says.
      }
    }
    restartThroughput();
    const steps = session.status().steps;
    post({ type: 'notice', steps, message: `${crashed}. A fresh one carries on ${from}${lastUrls ? '; the data loads again' : ''}.` });
    setState(steps > 0 ? 'paused' : 'idle');
    if (lastUrls) loadData(lastUrls);
  } catch (again) {
    post({ type: 'error', message: `${crashed}, and a fresh one could not start: ${errorText(again)}` });
  } finally {
    recovering = false;
    self.onmessage = ({ data }) => handle(data);
    pending.splice(0).forEach(handle);
  }
}

/**
 * Loads the wasm module for the backend the worker's URL asks for: the GPU one where WebGPU
 * gives an adapter (checked before downloading it), the CPU one otherwise.
 */
async function loadModule(instance = 0) {
  const wanted = new URL(self.location.href).searchParams.get('backend') ?? 'auto';
  if (!['auto', 'cpu', 'gpu'].includes(wanted)) throw new Error(`unknown backend ${JSON.stringify(wanted)}`);
  autoBackend = wanted === 'auto';
  if (wanted !== 'cpu') {
    const adapter = await navigator.gpu?.requestAdapter().catch(() => null);
    if (adapter) {
      const module = await startBuild('../pkg/gpu/', instance);
      try {
        gpu = await module.requestGpu();
        return module;
      } catch (error) {
        backendNote = `WebGPU could not start: ${errorText(error)}`;
      }
    } else {
      backendNote = navigator.gpu ? 'WebGPU gave no adapter' : 'this browser has no WebGPU';
    }
  }
  // Wasm threads share memory between workers, which the browser allows only on a
  // cross-origin-isolated page; elsewhere (a docs page embedding the playground, say) the
  // single-threaded module runs, with no error.
  const params = new URL(self.location.href).searchParams;
  if (params.get('threads') === 'off') {
    backendNote = backendNote ? `${backendNote}; threads off after a thread of the pool crashed` : 'threads off after a thread of the pool crashed';
  } else if (params.get('threads') !== 'one' && self.crossOriginIsolated && navigator.hardwareConcurrency > 1) {
    // The pool's workers are started from blob: URLs; where a Content-Security-Policy's
    // worker-src does not allow those, they never answer, so the pool gets a time limit.
    try {
      const module = await startBuild('../pkg/threads/', instance);
      await withTimeout(module.initThreadPool(navigator.hardwareConcurrency), THREADS_START_MS,
        `the thread pool did not start within ${THREADS_START_MS / 1000} s; a Content-Security-Policy whose worker-src lacks blob: stops it`);
      if (params.get('panics')) module.reportPoolPanics(params.get('panics'));
      return module;
    } catch (error) {
      const note = `threads could not start: ${errorText(error)}`;
      backendNote = backendNote ? `${backendNote}; ${note}` : note;
    }
  }
  // One thread: the build with relaxed SIMD where the browser validates it (its product
  // kernel fuses multiply-adds), unless the address asks for the plain one (`simd=plain`).
  const relaxed = params.get('simd') !== 'plain' && await relaxedSimd();
  return startBuild(relaxed ? '../pkg/relaxed/' : '../pkg/', instance);
}

try {
  const module = await loadModule();
  Session = module.Session;
  wasm = module;
  self.onmessage = ({ data }) => handle(data);
  post({ type: 'ready' });
  pending.splice(0).forEach(handle);
} catch (error) {
  post({ type: 'error', message: `could not start WebAssembly: ${errorText(error)}` });
}
