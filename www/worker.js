// The training worker: owns the wasm Session (model, data, training state), streams data
// into it and trains in short slices so that messages (pause, predict) are answered at once.
//
// Protocol. Page -> worker:
//   {type: 'configure', model, settings}   model: preset name or JSON spec text; settings:
//        {optimizer, lr, batchSize, epochs, seed, normalize, clean, augment}. A new model
//        trains from scratch on the same data. Answers 'configured' or 'config-error'.
//   {type: 'load', urls: {trainImages, trainLabels, testImages, testLabels}}
//        Streams a data source (gzip or raw IDX). The first trains while it arrives; a later
//        one replaces the data only when it arrived whole. Answers 'data' progress, then
//        'data-loaded' or 'data-error'.
//   {type: 'start'} | {type: 'pause'} | {type: 'reset'}
//   {type: 'predict', id, pixels: Float32Array(784)}        answers 'prediction'
//   {type: 'inspect', id, pixels: Float32Array(784)}        answers 'inspection': {probabilities,
//        predicted, saliency[784], filters: {layer, count, height, width, values} | null,
//        featureMaps: [{layer, count, height, width, values}], recurrent: [{layer, kind, steps,
//        units, hidden[steps*units], gates: [[name, values[steps*units]]]}]}
//   {type: 'add-example', pixels: Uint8Array(784), label}    answers 'examples'
//   {type: 'clear-examples'}                                 answers 'examples'
//   {type: 'save'}                      answers 'saved': {bytes} (a safetensors training file)
//   {type: 'restore', bytes, source}    continues from such a file; answers 'restored':
//        {spec, status, source} or 'restore-error': {message, source}
//   {type: 'export-onnx'}               answers 'onnx': {bytes}
//   {type: 'keep', enabled}             keep the training in IndexedDB (after each epoch, on
//        pause and every few seconds of training) so that a reload resumes it
//   {type: 'resume-kept'}               restores what IndexedDB kept, if anything: answers
//        'restored' (source 'kept') or nothing
// Worker -> page:
//   {type: 'ready'}
//   {type: 'configured', spec}                 spec: the model spec as JSON text
//   {type: 'config-error', message}
//   {type: 'data', received, total, status}    bytes over the network; total null if unknown
//   {type: 'data-loaded', status} | {type: 'data-error', message, status}
//   {type: 'state', state, status}             state: 'idle' | 'training' | 'waiting' | 'paused' | 'done'
//   {type: 'progress', batches: [{step, loss, accuracy}], status, samplesPerSecond, etaSeconds}
//   {type: 'epoch', epoch, evaluation: {loss, accuracy, confusionMatrix, perClass, showcase}}
//   {type: 'prediction', id, probs} | {type: 'inspection', id, inspection} | {type: 'examples', count}
//   {type: 'error', message}                   anything else that went wrong
//   {type: 'saved', bytes} | {type: 'onnx', bytes} | {type: 'restored', ...} | {type: 'restore-error', ...}
// `status` is the Session's status object (epoch, epochs, epochDone, epochSize, steps,
// trainAvailable, trainDeclared, testAvailable, testDeclared, dataComplete, dropped, examples).

import init, { Session } from '../pkg/ferrograd.js';
import { forget, keep, kept } from './store.js';
import { streamUrl } from './stream.js';

const SLICE_MS = 25;
const KEEP_EVERY_MS = 15_000;
const SHOWCASE = 48;
const PARTS = ['trainLabels', 'testLabels', 'trainImages', 'testImages'];

let session = null;
let state = 'idle';
let load = null; // {controller, generation}
let generation = 0;
const throughput = { samples: 0, ms: 0 };
const restartThroughput = () => Object.assign(throughput, { samples: 0, ms: 0 });
let keeping = false;
let lastKept = 0;

const post = (message, transfer = []) => self.postMessage(message, transfer);
const errorText = (error) => String(error?.message ?? error);

function setState(next) {
  state = next;
  post({ type: 'state', state, status: session?.status() ?? null });
  if (next === 'paused' || next === 'done') keepTraining();
}

/** Stores the training in IndexedDB when the page asked for it; failures are reported. */
function keepTraining() {
  if (!keeping || !session) return;
  lastKept = performance.now();
  const status = session.status();
  if (status.steps === 0) return;
  keep({ bytes: session.save(), steps: status.steps, epoch: status.epoch, savedAt: Date.now() })
    .catch((error) => post({ type: 'error', message: `could not keep the training in this browser: ${errorText(error)}` }));
}

function forgetKept() {
  if (keeping) forget().catch(() => {});
}

function restore(bytes, source) {
  try {
    session.restore(bytes);
  } catch (error) {
    post({ type: 'restore-error', message: errorText(error), source });
    return;
  }
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

async function trainLoop() {
  while (state === 'training' || state === 'waiting') {
    const batches = [];
    let evaluation = null;
    let outcome = 'trained';
    const start = performance.now();
    while (performance.now() - start < SLICE_MS) {
      const progress = session.step();
      if (progress.status !== 'trained') {
        outcome = progress.status;
        break;
      }
      const { loss, accuracy, samples } = progress.stats;
      throughput.samples += samples;
      batches.push({ step: session.status().steps, loss, accuracy });
      if (progress.epochFinished) {
        evaluation = evaluate();
        break;
      }
    }
    throughput.ms += performance.now() - start;
    const status = session.status();
    if (batches.length) post({ type: 'progress', batches, status, ...speed(status) });
    if (evaluation || performance.now() - lastKept > KEEP_EVERY_MS) keepTraining();
    if (evaluation) {
      // A typed array crosses to the page as one copy; a plain array of 37,000 numbers
      // would be cloned and rebuilt element by element on the page's thread.
      const pixels = Uint8Array.from(evaluation.showcase.pixels);
      evaluation.showcase.pixels = pixels;
      post({ type: 'epoch', epoch: status.epoch, evaluation }, [pixels.buffer]);
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

function speed(status) {
  const samplesPerSecond = throughput.ms > 0 ? (throughput.samples * 1000) / throughput.ms : 0;
  const left = (status.epochs - status.epoch) * status.epochSize - status.epochDone;
  return { samplesPerSecond, etaSeconds: samplesPerSecond > 0 ? left / samplesPerSecond : null };
}

function evaluate() {
  try {
    return session.evaluate(SHOWCASE);
  } catch (error) {
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
  session.beginLoad(urls.trainImages, urls.trainLabels, urls.testImages, urls.testLabels);
  try {
    await Promise.all(PARTS.map((part) => streamUrl(urls[part], {
      signal: mine.controller.signal,
      onStart: (size) => { sizes[part] = size; },
      onBytes: (n) => { received += n; report(false); },
      onChunk: (chunk) => { if (current()) session.feed(part, chunk); },
    })));
    if (!current()) return;
    session.endLoad();
    report(true);
    post({ type: 'data-loaded', status: session.status() });
  } catch (error) {
    if (!current()) return;
    mine.controller.abort();
    session.abortLoad();
    post({ type: 'data-error', message: errorText(error), status: session.status() });
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
    }
  } catch (error) {
    post({ type: 'config-error', message: errorText(error) });
    return;
  }
  restartThroughput();
  forgetKept();
  post({ type: 'configured', spec: session.specJson() });
  if (state === 'done') setState('idle');
  else post({ type: 'state', state, status: session.status() });
}

const handlers = {
  configure: ({ model, settings }) => configure(model, settings),
  load: ({ urls }) => loadData(urls),
  start: () => {
    if (state === 'training' || state === 'waiting') return;
    if (state === 'done') session.reset();
    setState('training');
    trainLoop();
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
  predict: ({ id, pixels }) => post({ type: 'prediction', id, probs: session.predict(pixels) }),
  inspect: ({ id, pixels }) => post({ type: 'inspection', id, inspection: session.inspect(pixels) }),
  'add-example': ({ pixels, label }) => post({ type: 'examples', count: session.addExample(pixels, label) }),
  save: () => {
    const bytes = session.save();
    post({ type: 'saved', bytes }, [bytes.buffer]);
  },
  restore: ({ bytes, source }) => restore(bytes, source),
  'export-onnx': () => {
    const bytes = session.exportOnnx();
    post({ type: 'onnx', bytes }, [bytes.buffer]);
  },
  keep: ({ enabled }) => {
    keeping = Boolean(enabled);
  },
  'resume-kept': async () => {
    const record = await kept();
    if (record?.bytes) restore(record.bytes, 'kept');
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
  if (!session && message.type !== 'configure') {
    post({ type: 'error', message: `worker: '${message.type}' before any model was configured` });
    return;
  }
  try {
    const result = handler(message);
    result?.catch?.((error) => post({ type: 'error', message: errorText(error) }));
  } catch (error) {
    post({ type: 'error', message: errorText(error) });
  }
}

try {
  await init();
  self.onmessage = ({ data }) => handle(data);
  post({ type: 'ready' });
  pending.splice(0).forEach(handle);
} catch (error) {
  post({ type: 'error', message: `could not start WebAssembly: ${errorText(error)}` });
}
