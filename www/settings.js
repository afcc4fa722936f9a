// The playground's settings: read from and written to the URL query (so a setup can be shared
// by link) and from the page's form, validated the same way in both, and turned into the
// worker's `configure` message and a data source's four URLs.

export const PRESETS = ['mlp', 'cnn', 'convnet', 'lstm', 'gru', 'resnet', 'vit'];
const DEFAULT_DATA = 'data/mnist/';

/** Every setting with its default; `spec` is the JSON text of a custom model. */
export const DEFAULTS = Object.freeze({
  model: 'mlp',
  spec: '',
  optimizer: 'adam',
  lr: null,
  weightDecay: 0,
  batch: 64,
  epochs: 5,
  seed: 0,
  normalize: 'unit',
  clean: false,
  augment: false,
  schedule: 'constant',
  valSplit: 0,
  earlyStop: 0,
  data: DEFAULT_DATA,
  backend: 'auto',
  // The CPU module: auto takes the relaxed-SIMD build where the browser has relaxed SIMD
  // (faster, its results rounded as the processor's fused multiply-add rounds), plain the
  // SIMD128 one, whose results are the same to the bit on every machine.
  simd: 'auto',
});

const wholeNumber = (min, max) => (raw) => {
  const text = String(raw).trim();
  if (!/^\d+$/.test(text)) throw new Error(`"${raw}" is not a whole number`);
  const value = Number(text);
  if (value < min || value > max) throw new Error(`${value} is outside ${min} to ${max}`);
  return value;
};
/** A decimal number from `min` (excluded with `above`) to `max`; `empty` when left blank. */
const decimal = ({ min, max, above = false, empty, what }) => (raw) => {
  const text = String(raw ?? '').trim();
  if (text === '') return empty;
  const value = Number(text);
  if (!Number.isFinite(value) || value < min || (above && value === min) || value > max) throw new Error(`"${raw}" is not ${what}`);
  return value;
};
const oneOf = (...choices) => (raw) => {
  if (!choices.includes(raw)) throw new Error(`"${raw}" is not one of ${choices.join(', ')}`);
  return raw;
};
const flag = (raw) => {
  if (raw === true || raw === 'true' || raw === '1' || raw === 'on') return true;
  if (raw === false || raw === 'false' || raw === '0' || raw === '' || raw === 'off') return false;
  throw new Error(`"${raw}" is not true or false`);
};

/** How each setting is read from text; each throws an Error saying what is wrong. */
const READERS = {
  model: oneOf(...PRESETS, 'custom'),
  spec: String,
  optimizer: oneOf('adam', 'sgd'),
  lr: decimal({ min: 0, max: 10, above: true, empty: null, what: 'a number above 0 and at most 10' }),
  weightDecay: decimal({ min: 0, max: 1, empty: 0, what: 'a number from 0 to 1' }),
  batch: wholeNumber(1, 4096),
  epochs: wholeNumber(1, 100),
  seed: wholeNumber(0, Number.MAX_SAFE_INTEGER),
  normalize: oneOf('unit', 'standard'),
  clean: flag,
  augment: flag,
  // The schedule's own settings are checked by the core, which names the one that is wrong.
  schedule: (raw) => {
    const text = String(raw).trim().replace(/\s+/g, '');
    if (!/^(constant|step|exponential|cosine)(\([^()]*\))?$/.test(text)) {
      throw new Error(`"${raw}" is not constant, step(every=E,gamma=G), exponential(gamma=G) or cosine(warmup=W,min_lr=M)`);
    }
    return text;
  },
  valSplit: decimal({ min: 0, max: 0.5, empty: 0, what: 'a share from 0 to 0.5' }),
  earlyStop: wholeNumber(0, 100),
  data: (raw) => String(raw).trim() || DEFAULT_DATA,
  backend: oneOf('auto', 'gpu', 'cpu'),
  simd: oneOf('auto', 'plain'),
};

/** Human names of the settings, for messages. */
const LABELS = {
  model: 'model', spec: 'model spec', optimizer: 'optimizer', lr: 'learning rate', weightDecay: 'weight decay', batch: 'batch size',
  epochs: 'epochs', seed: 'seed', normalize: 'pixels', clean: 'cleaning', augment: 'augmentation', data: 'data source',
  backend: 'backend', simd: 'CPU instructions', schedule: 'learning-rate schedule', valSplit: 'validation share', earlyStop: 'early stopping',
};

/**
 * Reads settings from raw values (strings from the URL or the form). Returns `{settings,
 * problems}`: a bad value keeps the value of `base` and adds a message naming the setting.
 */
export function readSettings(raw, base = DEFAULTS, where = '') {
  const settings = { ...base };
  const problems = [];
  for (const [key, value] of Object.entries(raw)) {
    if (!(key in READERS)) {
      problems.push(`${where}unknown setting "${key}"`);
      continue;
    }
    try {
      settings[key] = READERS[key](value);
    } catch (error) {
      problems.push(`${where}${LABELS[key]} (${key}): ${error.message}; keeping ${JSON.stringify(base[key])}`);
    }
  }
  if (settings.earlyStop > 0 && settings.valSplit === 0) {
    problems.push(`${where}early stopping watches the validation loss, so it needs a validation share above 0`);
    settings.earlyStop = 0;
  }
  if (settings.model === 'custom' && !settings.spec.trim()) {
    problems.push(`${where}model=custom needs a spec; using the mlp preset`);
    settings.model = 'mlp';
  }
  return { settings, problems };
}

/** Settings from a URL query string such as `?model=cnn&epochs=1`. */
export function settingsFromQuery(search) {
  const raw = Object.fromEntries(new URLSearchParams(search));
  return readSettings(raw, DEFAULTS, 'in the address, ');
}

/** The query string holding what differs from the defaults. */
export function settingsToQuery(settings) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(settings)) {
    if (key === 'spec' && settings.model !== 'custom') continue;
    if (value !== DEFAULTS[key]) query.set(key, value ?? '');
  }
  const text = query.toString();
  return text ? `?${text}` : '';
}

/** The worker's `configure` message for `settings`. */
export function configureMessage(settings) {
  return {
    type: 'configure',
    model: settings.model === 'custom' ? settings.spec : settings.model,
    settings: {
      optimizer: settings.optimizer,
      lr: settings.lr ?? undefined,
      weightDecay: settings.weightDecay,
      batchSize: settings.batch,
      epochs: settings.epochs,
      seed: settings.seed,
      normalize: settings.normalize,
      clean: settings.clean,
      augment: settings.augment,
      lrSchedule: settings.schedule,
      valSplit: settings.valSplit,
      earlyStop: settings.earlyStop > 0 ? settings.earlyStop : undefined,
    },
  };
}

/**
 * Each schedule's settings, in the order the form's two fields hold them: the key in the
 * schedule's text, the field's label and its placeholder (the core's default).
 */
export const SCHEDULE_FIELDS = Object.freeze({
  constant: [],
  step: [['every', 'every (epochs)', '1'], ['gamma', 'gamma', '0.5']],
  exponential: [['gamma', 'gamma (per epoch)', '0.9']],
  cosine: [['warmup', 'warm-up (epochs)', '0'], ['min_lr', 'floor (min lr)', '0']],
});

/** The schedule text for a kind and its two settings as the form holds them. */
export function scheduleText(kind, first, second) {
  const values = [first, second].map((raw) => String(raw ?? '').trim());
  const given = (SCHEDULE_FIELDS[kind] ?? [])
    .map(([key], i) => [key, values[i]])
    .filter(([, value]) => value !== '')
    .map(([key, value]) => `${key}=${value}`);
  return given.length ? `${kind}(${given.join(',')})` : kind;
}

/** The form's view of a schedule text: its kind and its settings' values, in scheduleText's order. */
export function scheduleParts(text) {
  const [, kind = 'constant', inner = ''] = /^(\w+)(?:\((.*)\))?$/.exec(text) ?? [];
  const values = Object.fromEntries(inner.split(',').filter(Boolean).map((pair) => pair.split('=')));
  const [first, second] = (SCHEDULE_FIELDS[kind] ?? []).map(([key]) => values[key] ?? '');
  return { kind, first: first ?? '', second: second ?? '' };
}

/** The learning rate a run of `settings` trains at: the one set, or the optimizer's default. */
export const effectiveLr = (settings) => settings.lr ?? (settings.optimizer === 'sgd' ? 1e-2 : 1e-3);

const FILES = {
  trainImages: 'train-images-idx3-ubyte',
  trainLabels: 'train-labels-idx1-ubyte',
  testImages: 't10k-images-idx3-ubyte',
  testLabels: 't10k-labels-idx1-ubyte',
};

/**
 * The URLs to try for each part of a data source, in order: for one folder URL, the standard
 * file names gzipped and not, then 7-Zip's and Kaggle's (`train-images.idx3-ubyte`), gzipped
 * and not (the CLI also looks inside a folder of the file's own name, as Kaggle's archive
 * unpacks; a web folder seldom holds that); for four URLs (training images, training labels,
 * test images, test labels), each alone. `{trainImages: [url, ...], ...}`.
 */
export function dataUrls(source, base) {
  const parts = source.trim().split(/\s+/).filter(Boolean);
  const absolute = (url) => {
    try {
      return new URL(url, base).href;
    } catch {
      throw new Error(`"${url}" is not a URL`);
    }
  };
  if (parts.length === 1) {
    const folder = absolute(parts[0].endsWith('/') ? parts[0] : `${parts[0]}/`);
    const names = (file) => {
      const dotted = file.replace('-idx', '.idx');
      return [`${file}.gz`, file, `${dotted}.gz`, dotted].map((name) => new URL(name, folder).href);
    };
    return Object.fromEntries(Object.entries(FILES).map(([part, file]) => [part, names(file)]));
  }
  if (parts.length === 4) {
    return Object.fromEntries(Object.keys(FILES).map((part, i) => [part, [absolute(parts[i])]]));
  }
  throw new Error(`give one folder URL or four file URLs (training images, training labels, test images, test labels); got ${parts.length}`);
}

/** A model spec as JSON text with one layer per line: short enough to read, easy to edit. */
export function formatSpec(specText) {
  const spec = JSON.parse(specText);
  const { layers = [], ...rest } = spec;
  const head = Object.entries(rest).map(([k, v]) => `  ${JSON.stringify(k)}: ${JSON.stringify(v)},`);
  const body = layers.map((layer, i) => `    ${JSON.stringify(layer)}${i + 1 < layers.length ? ',' : ''}`);
  return ['{', ...head, '  "layers": [', ...body, '  ]', '}'].join('\n');
}
