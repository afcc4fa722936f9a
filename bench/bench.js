// One benchmark configuration, chosen by the query string, run by bench/index.html (in a Web
// Worker for ferrograd, on the page for TensorFlow.js and jax-js); the page leaves the result
// in `window.benchResult` for bench/run.mjs to collect.
//
// Training: samples/s at batch 64 with Adam 1e-3 on the bundled MNIST sample (median of
// `windows` windows), test accuracy after one epoch, time from navigation to the first
// finished training step (where `stop=first-step` ends it). Matmul: GFLOP/s of square
// products. Both: JavaScript and wasm bytes downloaded. `deadline` (ms since the epoch, as
// Date.now() counts) is when bench/run.mjs will stop the page: what would not finish by then
// (a further window, the epoch, the largest product) is left out with a note instead.

const query = new URLSearchParams(location.search);
const lib = query.get('lib') ?? 'ferrograd';
const backend = query.get('backend') ?? 'wasm';
const task = query.get('task') ?? 'train';
const model = query.get('model') ?? 'mlp';
const seconds = Number(query.get('seconds') ?? 5);
// `stop=first-step`: only the time to the first step, which bench/run.mjs takes over several loads.
const firstStepOnly = query.get('stop') === 'first-step';
const WINDOWS = Math.max(1, Number(query.get('windows') ?? 3));
// Test accuracy needs a whole epoch; a backend too slow to train one within this budget is
// reported without it rather than holding up the run for many minutes.
const EPOCH_BUDGET_S = Number(query.get('epochBudget') ?? 120);
const DEADLINE = Number(query.get('deadline') ?? Infinity);
/** Seconds until bench/run.mjs stops this page. */
const timeLeft = () => (DEADLINE - Date.now()) / 1000;
const BATCH = 64;
const DATA = '../data/mnist/';
// When the page was opened, so that times count from navigation as the page's own would.
const NAVIGATION = Number(query.get('origin') ?? performance.timeOrigin);
const sinceNavigation = () => performance.timeOrigin + performance.now() - NAVIGATION;

// A measuring window in which no step finishes for this long has stalled.
const STALLED_MS = 10 * 60_000;

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function gunzip(url) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: ${response.status}`);
  return new Uint8Array(await new Response(response.body.pipeThrough(new DecompressionStream('gzip'))).arrayBuffer());
}

/** The bundled sample as raw IDX streams and as decoded pixels in [0, 1] and labels. */
async function loadData() {
  const names = ['train-images-idx3-ubyte', 'train-labels-idx1-ubyte', 't10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte'];
  const [trainImages, trainLabels, testImages, testLabels] = await Promise.all(names.map((n) => gunzip(`${DATA}${n}.gz`)));
  const pixels = (idx) => Float32Array.from(idx.subarray(16), (v) => v / 255);
  return {
    raw: { trainImages, trainLabels, testImages, testLabels },
    train: { x: pixels(trainImages), y: trainLabels.subarray(8) },
    test: { x: pixels(testImages), y: testLabels.subarray(8) },
  };
}

/**
 * Bytes of JavaScript and wasm the page fetched, the benchmark's own files excepted (and, for
 * ferrograd, the TensorFlow.js it loads for the product duel).
 */
function codeBytes() {
  return performance.getEntriesByType('resource')
    .filter((e) => /\.(m?js|wasm)(\?|$)/.test(e.name) && !e.name.includes('/bench/bench.js'))
    .filter((e) => lib !== 'ferrograd' || !e.name.includes('/@tensorflow/'))
    .reduce((sum, e) => sum + (e.encodedBodySize || e.transferSize || 0), 0);
}

/** Whether one epoch of `count` samples fits the budget and the time left; else a note. */
function epochFits(samplesPerSecond, count) {
  const seconds = count / samplesPerSecond;
  if (seconds > EPOCH_BUDGET_S) return `one epoch would take about ${Math.round(seconds)} s: accuracy not measured`;
  // The test set's forward pass and a slower start than the measured steps take some more.
  const left = timeLeft();
  if (1.25 * seconds + 1 > left) return `one epoch (about ${Math.round(seconds)} s) would not fit in the ${Math.max(0, Math.round(left))} s left: accuracy not measured`;
  return null;
}

/**
 * Runs `step()` (returning samples done) in windows; returns the median samples/s. A window
 * lasts until a step has finished in it (on the GPU a step reports when its results come back,
 * on SwiftShader seconds later). One that ran past twice its length holds few steps, each
 * longer than the window, and is long enough on its own: the others would only repeat it at
 * a minute a step (TensorFlow.js's cpu backend on the resnet). Nor does a window start that
 * would run past the deadline.
 */
async function throughput(step) {
  const rates = [];
  for (let w = 0; w < WINDOWS; w++) {
    const start = performance.now();
    let samples = 0;
    while (samples === 0 || performance.now() - start < seconds * 1000) {
      samples += await step();
      if (samples === 0 && performance.now() - start > STALLED_MS) throw new Error(`no training step finished in ${STALLED_MS / 60_000} minutes`);
    }
    const elapsed = performance.now() - start;
    rates.push((samples * 1000) / elapsed);
    if (elapsed > 2 * seconds * 1000 || timeLeft() < 1.5 * elapsed / 1000) break;
  }
  windows = rates.length;
  return median(rates);
}

/**
 * GFLOP/s of square products of 256, 1024 and 2048: the median of `windows` windows of half
 * the seconds each, after one product to warm up. A size whose products would run past the
 * deadline (as the last size's rate predicts) is left out with a note.
 */
async function matmulGflops(run) {
  const result = {};
  let secondsPerFlop = 0;
  for (const size of [256, 1024, 2048]) {
    const flops = 2 * size ** 3;
    const expected = (1 + WINDOWS) * Math.max(flops * secondsPerFlop, seconds / 2) + flops * secondsPerFlop;
    if (secondsPerFlop > 0 && expected > timeLeft()) {
      result.note = `matmul ${size} would take about ${Math.round(expected)} s, more than the ${Math.max(0, Math.round(timeLeft()))} s left: not measured`;
      break;
    }
    const product = await run(size);
    const warm = performance.now();
    await product();
    secondsPerFlop = (performance.now() - warm) / 1000 / flops;
    const rates = [];
    for (let w = 0; w < WINDOWS; w++) {
      const start = performance.now();
      let count = 0;
      while (count === 0 || performance.now() - start < (seconds * 1000) / 2) {
        await product();
        count++;
      }
      const elapsed = (performance.now() - start) / 1000;
      rates.push((flops * count) / elapsed / 1e9);
      secondsPerFlop = elapsed / count / flops;
    }
    result[`gflops${size}`] = median(rates);
  }
  return result;
}

const DUEL_SIZE = 1024;

/**
 * GFLOP/s of `ours` (a ferrograd MatmulBench of DUEL_SIZE) and of TensorFlow.js wasm's product
 * on one thread, loaded into this worker beside it: 7 products each in alternation, each
 * keeping its best. Both see the same moments of a busy machine, where figures measured a
 * minute apart move by a third, so their ratio holds. With `chains` (the relaxed build's
 * multiplyAddChains: fused multiply-adds on more independent chains than their latency
 * needs), the core's peak is timed in the same rounds, for as long as a product takes: what
 * no product kernel can pass.
 */
async function productDuel(ours, chains) {
  const tf = await loadTfjs('wasm', 1);
  const [a, b] = [tf.randomUniform([DUEL_SIZE, DUEL_SIZE]), tf.randomUniform([DUEL_SIZE, DUEL_SIZE])];
  const flops = 2 * DUEL_SIZE ** 3;
  const contenders = {
    ours: [() => ours.run(), flops],
    tfjs: [() => {
      const c = tf.matMul(a, b);
      c.dataSync();
      c.dispose();
    }, flops],
  };
  if (chains) {
    // As many rounds of 12 chains (96 FLOPs each) as a product has FLOPs.
    const steps = Math.round(flops / 96);
    contenders.peak = [() => chains(steps), 96 * steps];
  }
  const best = {};
  for (let round = 0; round < 8; round++) {
    for (const [name, [run, work]] of Object.entries(contenders)) {
      const start = performance.now();
      run();
      const gflops = work / (performance.now() - start) / 1e6;
      // The first round warms them up.
      if (round > 0) best[name] = Math.max(best[name] ?? 0, gflops);
    }
  }
  tf.dispose([a, b]);
  ours.free();
  return { duelOurs: best.ours, duelTfjs: best.tfjs, ...(chains ? { duelPeak: best.peak } : {}) };
}

// ---------------------------------------------------------------- ferrograd

const BUILDS = { wasm: '../pkg/', 'wasm-relaxed': '../pkg/relaxed/', 'wasm-threads': '../pkg/threads/', webgpu: '../pkg/gpu/' };

async function ferrograd() {
  const onGpu = backend === 'webgpu';
  if (!BUILDS[backend]) throw new Error(`unknown ferrograd backend ${backend}`);
  // As the playground's worker starts it: its two helper modules load together (the worker
  // imports them statically), and then the build. The data starts streaming meanwhile, as a
  // page that trains at once would have it (the playground waits for its Train button).
  const [{ startBuild }, { streamUrl }] = await Promise.all([import('../www/start.js'), import('../www/stream.js')]);
  const streams = task === 'train' ? startStreams(streamUrl) : null;
  const module = await startBuild(BUILDS[backend]);
  if (backend === 'wasm-threads') {
    if (!crossOriginIsolated) throw new Error('threads need a cross-origin-isolated page');
    await module.initThreadPool(navigator.hardwareConcurrency);
  }
  threads = onGpu ? null : module.cpuThreads();
  const { Session, MatmulBench } = module;
  const gpu = onGpu ? await module.requestGpu() : null;
  if (task === 'matmul' && onGpu) {
    return matmulGflops(async (size) => {
      const bench = new module.GpuMatmulBench(gpu, size);
      return async () => {
        bench.submit();
        while (!bench.done()) await nextTask();
      };
    });
  }
  if (task === 'matmul') {
    // The relaxed build's multiply-add chains run at the core's peak (see productDuel).
    const chains = backend === 'wasm-relaxed' ? module.multiplyAddChains : null;
    // Without TensorFlow.js (or with one that fails), the build's own figures still count.
    const duel = threads === 1
      ? await productDuel(new MatmulBench(DUEL_SIZE), chains).catch((error) => ({ note: `no duel: ${error?.message ?? error}` }))
      : {};
    const result = await matmulGflops(async (size) => {
      const bench = new MatmulBench(size);
      return () => bench.run();
    });
    const note = [duel.note, result.note].filter(Boolean).join('; ');
    return { ...duel, ...result, ...(note ? { note } : {}) };
  }
  // Time to the first step as the playground gets there: the data streamed in, the first
  // step taken as soon as one batch has arrived.
  const firstStepMs = await firstStreamedStep(Session, gpu, streams);
  if (firstStepOnly) return { firstStepMs };
  const data = await loadData();
  const session = (epochs) => {
    const s = new Session(model, { batchSize: BATCH, epochs });
    if (gpu) s.useGpu(gpu);
    s.beginLoad('train-images', 'train-labels', 'test-images', 'test-labels');
    for (const [part, bytes] of Object.entries(data.raw)) s.feed(part, bytes);
    s.endLoad();
    return s;
  };
  const timed = session(1000);
  const samplesPerSecond = await throughput(() => step(timed));
  // On the GPU: dispatches and bytes between the CPU and the GPU per step.
  const gpuStep = gpu ? timed.gpuStepCost() : null;

  const note = epochFits(samplesPerSecond, data.train.y.length);
  if (note) return { samplesPerSecond, accuracy: null, note, firstStepMs, crossOriginIsolated, gpuStep };
  const epoch = session(1);
  while ((await step(epoch)) >= 0);
  epoch.startSync();
  while (!epoch.finishSync()) await nextTask();
  const accuracy = epoch.evaluate(0).accuracy;
  return { samplesPerSecond, accuracy, firstStepMs, crossOriginIsolated, gpuStep };
}

const nextTask = () => new Promise((resolve) => setTimeout(resolve, 0));

/**
 * One step, as the playground's worker takes it; resolves with the samples whose step has
 * finished (on the GPU, steps report when their results come back), or -1 once training is done.
 */
async function step(session) {
  const progress = session.step();
  let samples = progress.stats?.samples ?? 0;
  for (const finished of session.finishedSteps()) samples += finished.samples;
  if (progress.status === 'busy') await nextTask();
  if (progress.status === 'done') return -1;
  return samples;
}

// In the playground's order: labels first, so a batch can be taken as soon as its images arrive.
const STREAMED = { trainLabels: 'train-labels-idx1-ubyte', testLabels: 't10k-labels-idx1-ubyte', trainImages: 'train-images-idx3-ubyte', testImages: 't10k-images-idx3-ubyte' };

/**
 * Starts streaming the four files before there is a Session to take them: each holds back
 * after its first chunk until `into(feed)` says where chunks go, so that decompressing the
 * rest does not take the CPU from compiling the module. `done` resolves once all arrived.
 */
function startStreams(streamUrl) {
  let into;
  const feed = new Promise((resolve) => { into = resolve; });
  const done = Promise.all(Object.entries(STREAMED).map(([part, name]) => streamUrl([`${DATA}${name}.gz`], {
    onChunk: async (chunk) => (await feed)(part, chunk),
  })));
  done.catch(() => {}); // reported where it is awaited
  return { done, into };
}

/** Feeds the streams into a Session and returns when (ms after navigation) it first trained. */
async function firstStreamedStep(Session, gpu, streams) {
  const session = new Session(model, { batchSize: BATCH, epochs: 1 });
  if (gpu) session.useGpu(gpu);
  session.beginLoad(...Object.values(STREAMED).map((name) => `${DATA}${name}.gz`));
  let at = null;
  let submitted = false;
  // A step has finished when its statistics are back: at once on the CPU, later on the GPU.
  const tryStep = () => {
    if (at != null) return;
    if (!submitted) submitted = session.step().status === 'trained';
    if (submitted && (!gpu || session.finishedSteps().length > 0)) at = sinceNavigation();
  };
  streams.into((part, chunk) => {
    session.feed(part, chunk);
    tryStep();
  });
  await streams.done;
  session.endLoad();
  while (at == null) {
    tryStep();
    if (at == null) await nextTask();
  }
  session.free();
  return at;
}

// ---------------------------------------------------------------- TensorFlow.js

/** Loads one of TensorFlow.js's UMD bundles, which put their API on `globalThis.tf`. */
const script = (src) => import(src);

const TFJS = './node_modules/@tensorflow/';

/** TensorFlow.js on `tfBackend`, ready; `wasmThreads` for its wasm backend. */
async function loadTfjs(tfBackend, wasmThreads) {
  await script(`${TFJS}tfjs/dist/tf.min.js`);
  const tf = globalThis.tf;
  if (tfBackend === 'wasm') {
    await script(`${TFJS}tfjs-backend-wasm/dist/tf-backend-wasm.min.js`);
    tf.wasm.setWasmPaths(`${TFJS}tfjs-backend-wasm/dist/`);
    tf.wasm.setThreadsCount(wasmThreads);
  }
  if (tfBackend === 'webgpu') await script(`${TFJS}tfjs-backend-webgpu/dist/tf-backend-webgpu.min.js`);
  if (!(await tf.setBackend(tfBackend))) throw new Error(`backend ${tfBackend} is not available`);
  await tf.ready();
  return tf;
}

async function tfjs() {
  // The data loads while the library starts, as ferrograd's streams while its module compiles.
  const loading = task === 'train' ? loadData() : null;
  loading?.catch(() => {}); // reported where it is awaited, or moot if the library failed first
  const tfBackend = backend === 'wasm-threads' ? 'wasm' : backend;
  if (backend === 'wasm-threads') {
    // Its threaded build starts a pool of half as many workers as the page reports cores, and
    // uses no more threads than that: on two cores, one. Reporting twice the cores gives it
    // the thread per core that ferrograd's threaded build runs on. It runs on a
    // cross-origin-isolated page.
    Object.defineProperty(navigator, 'hardwareConcurrency', { value: 2 * navigator.hardwareConcurrency });
    if (!crossOriginIsolated) throw new Error('threads need a cross-origin-isolated page');
  }
  const tf = await loadTfjs(tfBackend, backend === 'wasm' ? 1 : navigator.hardwareConcurrency / 2);
  threads = { wasm: tf.wasm?.getThreadsCount(), cpu: 1 }[tfBackend] ?? null;

  if (task === 'matmul') {
    return matmulGflops(async (size) => {
      const a = tf.randomUniform([size, size]);
      const b = tf.randomUniform([size, size]);
      return async () => {
        const c = tf.matMul(a, b);
        await c.data();
        c.dispose();
      };
    });
  }

  const data = await loading;
  const build = () => {
    const m = model === 'resnet' ? resnet(tf) : sequential(tf);
    m.compile({ optimizer: tf.train.adam(1e-3), loss: 'categoricalCrossentropy' });
    return m;
  };
  const count = data.train.y.length;
  const batch = (b) => {
    const start = (b * BATCH) % (count - BATCH);
    return tf.tidy(() => [
      tf.tensor4d(data.train.x.subarray(start * 784, (start + BATCH) * 784), [BATCH, 28, 28, 1]),
      tf.oneHot(tf.tensor1d(Array.from(data.train.y.subarray(start, start + BATCH)), 'int32'), 10),
    ]);
  };
  const trainStep = async (m, b) => {
    const [x, y] = batch(b);
    await m.trainOnBatch(x, y);
    tf.dispose([x, y]);
    return BATCH;
  };

  const timed = build();
  await trainStep(timed, 0);
  const firstStepMs = sinceNavigation();
  if (firstStepOnly) {
    timed.dispose();
    return { firstStepMs };
  }
  let b = 1;
  const samplesPerSecond = await throughput(() => trainStep(timed, b++));
  timed.dispose();

  const note = epochFits(samplesPerSecond, count);
  if (note) return { samplesPerSecond, accuracy: null, note, firstStepMs, crossOriginIsolated };
  const epoch = build();
  for (let i = 0; i < Math.floor(count / BATCH); i++) await trainStep(epoch, i);
  const predicted = tf.tidy(() => epoch.predict(tf.tensor4d(data.test.x, [data.test.y.length, 28, 28, 1])).argMax(1));
  const labels = await predicted.data();
  const accuracy = labels.reduce((hits, p, i) => hits + (p === data.test.y[i] ? 1 : 0), 0) / labels.length;
  return { samplesPerSecond, accuracy, firstStepMs, crossOriginIsolated };
}

/** The `mlp`, `cnn`, `convnet` and `lstm` presets (src/nn/spec/mod.rs) as tf.layers stacks. */
function sequential(tf) {
  const m = tf.sequential();
  if (model === 'mlp') {
    m.add(tf.layers.flatten({ inputShape: [28, 28, 1] }));
    m.add(tf.layers.dense({ units: 128, activation: 'relu' }));
  } else if (model === 'cnn') {
    m.add(tf.layers.conv2d({ inputShape: [28, 28, 1], kernelSize: 5, filters: 8, strides: 1, activation: 'relu' }));
    m.add(tf.layers.maxPooling2d({ poolSize: 2, strides: 2 }));
    m.add(tf.layers.conv2d({ kernelSize: 5, filters: 16, strides: 1, activation: 'relu' }));
    m.add(tf.layers.maxPooling2d({ poolSize: 2, strides: 2 }));
    m.add(tf.layers.flatten());
  } else if (model === 'convnet') {
    // Keras's simple MNIST convnet, as its example writes it.
    m.add(tf.layers.conv2d({ inputShape: [28, 28, 1], kernelSize: 3, filters: 32, activation: 'relu' }));
    m.add(tf.layers.maxPooling2d({ poolSize: 2, strides: 2 }));
    m.add(tf.layers.conv2d({ kernelSize: 3, filters: 64, activation: 'relu' }));
    m.add(tf.layers.maxPooling2d({ poolSize: 2, strides: 2 }));
    m.add(tf.layers.flatten());
    m.add(tf.layers.dropout({ rate: 0.5 }));
  } else if (model === 'lstm') {
    m.add(tf.layers.reshape({ inputShape: [28, 28, 1], targetShape: [28, 28] }));
    m.add(tf.layers.lstm({ units: 64 }));
  } else {
    throw new Error(`TensorFlow.js: no tf.layers model for ${model}`);
  }
  m.add(tf.layers.dense({ units: 10, activation: 'softmax' }));
  return m;
}

/**
 * The `resnet` preset with tf.layers' functional API: a 3x3 convolution of 16, two basic
 * blocks of 16 at 28x28, max pooling, one basic block of 32 at 14x14 whose shortcut is a 1x1
 * convolution, global average pooling, dense 10. Batch norm's momentum is Keras's (weight of
 * the old running average): 0.9 is ferrograd's (and PyTorch's) 0.1.
 */
function resnet(tf) {
  const convBn = (filters, kernelSize) => tf.layers.conv2d({ filters, kernelSize, padding: 'same', useBias: false, kernelInitializer: 'heUniform' });
  const batchNorm = () => tf.layers.batchNormalization({ momentum: 0.9, epsilon: 1e-5 });
  const relu = () => tf.layers.reLU();
  const block = (x, filters, shortcut) => {
    let y = convBn(filters, 3).apply(x);
    y = batchNorm().apply(y);
    y = relu().apply(y);
    y = convBn(filters, 3).apply(y);
    y = batchNorm().apply(y);
    return relu().apply(tf.layers.add().apply([y, shortcut ? shortcut.apply(x) : x]));
  };
  const input = tf.input({ shape: [28, 28, 1] });
  let x = tf.layers.conv2d({ filters: 16, kernelSize: 3, padding: 'same', activation: 'relu', kernelInitializer: 'heUniform' }).apply(input);
  x = block(x, 16);
  x = block(x, 16);
  x = tf.layers.maxPooling2d({ poolSize: 2, strides: 2 }).apply(x);
  x = block(x, 32, convBn(32, 1));
  x = tf.layers.globalAveragePooling2d({}).apply(x);
  const output = tf.layers.dense({ units: 10, activation: 'softmax' }).apply(x);
  return tf.model({ inputs: input, outputs: output });
}

// ---------------------------------------------------------------- jax-js

// Test images a forward pass takes when the accuracy is measured.
const TEST_BATCH = 250;
// Adam as optax defines it (jax-js 0.1.25 has no optimizer package on npm).
const ADAM = { lr: 1e-3, b1: 0.9, b2: 0.999, eps: 1e-8 };

/**
 * The `mlp` and `cnn` presets written with jax-js's array ops, as its MNIST demo writes its
 * models: parameter shapes with their fans (weights Glorot-uniform as ferrograd and Keras
 * draw them, biases zero) and the forward pass to logits. Convolutions are NCHW, kernels
 * [out, in, k, k], so the flattened features come in ferrograd's (channel-major) order.
 */
function jaxModel({ nn, lax, numpy: np }) {
  const dense = (x, w, b) => np.dot(x, w).add(b);
  const convRelu = (x, w, b) => nn.relu(lax.convGeneralDilated(x, w, [1, 1], 'VALID').add(b));
  const maxPool = (x) => lax.reduceWindow(x, np.max, [2, 2], [2, 2]);
  if (model === 'mlp') {
    return {
      params: { w1: [[784, 128], 784, 128], b1: [[128]], w2: [[128, 10], 128, 10], b2: [[10]] },
      forward: (p, x) => dense(nn.relu(dense(x.reshape([-1, 784]), p.w1, p.b1)), p.w2, p.b2),
    };
  }
  if (model === 'cnn') {
    return {
      params: {
        c1: [[8, 1, 5, 5], 25, 200], cb1: [[8, 1, 1]],
        c2: [[16, 8, 5, 5], 200, 400], cb2: [[16, 1, 1]],
        w: [[256, 10], 256, 10], b: [[10]],
      },
      forward: (p, x) => {
        let h = maxPool(convRelu(x.reshape([-1, 1, 28, 28]), p.c1, p.cb1)); // [n, 8, 12, 12]
        h = maxPool(convRelu(h, p.c2, p.cb2)); // [n, 16, 4, 4]
        return dense(h.reshape([-1, 256]), p.w, p.b);
      },
    };
  }
  if (model === 'convnet') {
    // Keras's simple MNIST convnet, without its dropout (a random mask inside the jitted step
    // would need a key threaded through it; the mask costs little next to the convolutions).
    return {
      params: {
        c1: [[32, 1, 3, 3], 9, 288], cb1: [[32, 1, 1]],
        c2: [[64, 32, 3, 3], 288, 576], cb2: [[64, 1, 1]],
        w: [[1600, 10], 1600, 10], b: [[10]],
      },
      forward: (p, x) => {
        let h = maxPool(convRelu(x.reshape([-1, 1, 28, 28]), p.c1, p.cb1)); // [n, 32, 13, 13]
        h = maxPool(convRelu(h, p.c2, p.cb2)); // [n, 64, 5, 5]
        return dense(h.reshape([-1, 1600]), p.w, p.b);
      },
    };
  }
  throw new Error(`jax-js: no model written for ${model}`);
}

async function jaxjs() {
  if (task !== 'train') throw new Error('jax-js: only training is measured');
  // The data loads while the library starts, as for TensorFlow.js.
  const loading = loadData();
  loading.catch(() => {}); // reported where it is awaited, or moot if the library failed first
  const jax = await import('./node_modules/@jax-js/jax/dist/index.js');
  const { numpy: np, nn, random, tree, jit, valueAndGrad } = jax;
  if (!(await jax.init(backend)).includes(backend)) throw new Error(`backend ${backend} is not available`);
  jax.defaultDevice(backend);
  // Its wasm backend runs a worker per core where the page has SharedArrayBuffer, else one thread.
  threads = backend === 'wasm' ? (typeof SharedArrayBuffer === 'undefined' ? 1 : navigator.hardwareConcurrency) : null;

  const data = await loading;
  const { params: shapes, forward } = jaxModel(jax);
  const init = () => {
    const keys = [...random.split(random.key(0), Object.keys(shapes).length)];
    const params = {};
    Object.entries(shapes).forEach(([name, [shape, fanIn, fanOut]], i) => {
      const limit = Math.sqrt(6 / (fanIn + fanOut));
      params[name] = fanIn ? random.uniform(keys[i], shape, { minval: -limit, maxval: limit }) : np.zeros(shape);
      if (!fanIn) keys[i].dispose();
    });
    const zeros = () => tree.map((w) => np.zerosLike(w), tree.ref(params));
    return { params, adam: { m: zeros(), v: zeros(), count: np.array(0) } };
  };
  // Mean cross-entropy of the logits against the labels.
  const loss = (params, x, y) => nn.logSoftmax(forward(params, x)).mul(nn.oneHot(y, 10)).sum().mul(-1 / y.shape[0]);
  // The whole step, jitted: loss and gradient, then Adam. Every argument is consumed (jax-js
  // counts references), so each array used twice is taken with `.ref` the first time.
  const trainStep = jit((params, adam, x, y) => {
    const [value, grads] = valueAndGrad(loss)(tree.ref(params), x, y);
    const count = adam.count.add(1);
    const correct1 = np.subtract(1, np.exp(count.ref.mul(Math.log(ADAM.b1))));
    const correct2 = np.subtract(1, np.exp(count.ref.mul(Math.log(ADAM.b2))));
    const next = { params: {}, adam: { m: {}, v: {}, count } };
    for (const name of Object.keys(params)) {
      const g = grads[name];
      const m = adam.m[name].mul(ADAM.b1).add(g.ref.mul(1 - ADAM.b1));
      const v = adam.v[name].mul(ADAM.b2).add(g.ref.mul(g).mul(1 - ADAM.b2));
      const step = m.ref.div(correct1.ref).mul(ADAM.lr).div(np.sqrt(v.ref.div(correct2.ref)).add(ADAM.eps));
      next.params[name] = params[name].sub(step);
      next.adam.m[name] = m;
      next.adam.v[name] = v;
    }
    correct1.dispose();
    correct2.dispose();
    return [next.params, next.adam, value];
  });
  const count = data.train.y.length;
  const batch = (b) => {
    const start = (b * BATCH) % (count - BATCH);
    return [
      np.array(data.train.x.slice(start * 784, (start + BATCH) * 784), { shape: [BATCH, 784] }),
      np.array(Int32Array.from(data.train.y.subarray(start, start + BATCH)), { dtype: np.int32 }),
    ];
  };
  // A step has finished when its loss has come back, as TensorFlow.js's trainOnBatch does.
  const trainOn = async (state, b) => {
    const [x, y] = batch(b);
    const [params, adam, value] = trainStep(state.params, state.adam, x, y);
    Object.assign(state, { params, adam });
    const [lossValue] = await value.data();
    if (!Number.isFinite(lossValue)) throw new Error(`jax-js: the loss is ${lossValue} at step ${b}`);
    return BATCH;
  };

  const timed = init();
  await trainOn(timed, 0);
  const firstStepMs = sinceNavigation();
  if (firstStepOnly) return { firstStepMs };
  let b = 1;
  const samplesPerSecond = await throughput(() => trainOn(timed, b++));
  tree.dispose([timed.params, timed.adam]);

  const note = epochFits(samplesPerSecond, count);
  if (note) return { samplesPerSecond, accuracy: null, note, firstStepMs, crossOriginIsolated };
  const epoch = init();
  for (let i = 0; i < Math.floor(count / BATCH); i++) await trainOn(epoch, i);
  // The test set in batches: a jitted forward pass over all 2,000 images at once did not
  // finish within a minute on WebGPU (SwiftShader), where batches of 250 take 60 ms each.
  const predict = jit((params, x) => np.argmax(forward(params, x), 1));
  const n = data.test.y.length;
  const labels = [];
  for (let i = 0; i < n; i += TEST_BATCH) {
    const end = Math.min(n, i + TEST_BATCH);
    const x = np.array(data.test.x.slice(i * 784, end * 784), { shape: [end - i, 784] });
    labels.push(...(await predict(tree.ref(epoch.params), x).data()));
  }
  tree.dispose([epoch.params, epoch.adam]);
  const accuracy = labels.reduce((hits, p, i) => hits + (p === data.test.y[i] ? 1 : 0), 0) / labels.length;
  return { samplesPerSecond, accuracy, firstStepMs, crossOriginIsolated };
}

const report = (result) => (globalThis.window ? window.benchDone(result) : postMessage(result));
const config = { lib, backend, task, model: task === 'train' ? model : null };
// Threads the CPU work ran on, as the library reports it.
let threads = null;
// Measuring windows the throughput took.
let windows = null;
const LIBS = { ferrograd, tfjs, jaxjs };
try {
  if (!LIBS[lib]) throw new Error(`unknown library ${lib}`);
  const result = await LIBS[lib]();
  report({ ...config, ...result, threads, windows, codeBytes: codeBytes() });
} catch (error) {
  report({ ...config, error: String(error?.message ?? error) });
}
