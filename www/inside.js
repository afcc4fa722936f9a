// The inside views: what each layer of the model sees for the digit on the drawing pad.
// Renders an inspection from the worker (see the 'inspection' message in worker.js): the
// saliency map, the first convolution's filters, the feature maps of every convolution and
// residual block, the hidden state and gates of recurrent layers over the 28 time steps, and
// the attention of Transformer layers (attention.js).

import { AttentionView } from './attention.js';

const SCALE_FILTER = 8;
const SCALE_MAP = 3;

/** Draws `values` (row-major, `height x width`) on a new canvas, each value coloured by `colour`. */
function heatmap(values, width, height, scale, colour, label) {
  const canvas = document.createElement('canvas');
  canvas.width = width;
  canvas.height = height;
  canvas.style.width = `${width * scale}px`;
  canvas.style.height = `${height * scale}px`;
  canvas.className = 'heatmap';
  if (label) {
    canvas.title = label;
    canvas.setAttribute('role', 'img');
    canvas.setAttribute('aria-label', label);
  }
  const ctx = canvas.getContext('2d');
  const image = ctx.createImageData(width, height);
  const { data } = image;
  for (let i = 0, o = 0; i < width * height; i++, o += 4) {
    const [r, g, b] = colour(values[i]);
    data[o] = r;
    data[o + 1] = g;
    data[o + 2] = b;
    data[o + 3] = 255;
  }
  ctx.putImageData(image, 0, 0);
  return canvas;
}

/** Maps [-1, 1] to blue, white, red: negative and positive weights apart at a glance. */
const diverging = (limit) => (v) => {
  const t = Math.max(-1, Math.min(1, v / (limit || 1)));
  return t < 0 ? [255 * (1 + t), 255 * (1 + t), 255] : [255, 255 * (1 - t), 255 * (1 - t)];
};

/** Maps [0, max] to black, red, yellow, white (a "hot" scale) for magnitudes. */
const hot = (max) => (v) => {
  const t = Math.max(0, Math.min(1, v / (max || 1))) * 3;
  return [255 * Math.min(1, t), 255 * Math.min(1, Math.max(0, t - 1)), 255 * Math.max(0, t - 2)];
};

/** Maps [min, max] to grey levels. */
const grey = (min, max) => (v) => {
  const level = max > min ? (255 * (v - min)) / (max - min) : 0;
  return [level, level, level];
};

const maxAbs = (values) => values.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
const range = (values) => values.reduce(([lo, hi], v) => [Math.min(lo, v), Math.max(hi, v)], [Infinity, -Infinity]);

function section(title, note) {
  const element = document.createElement('section');
  element.className = 'inside-section';
  const heading = document.createElement('h4');
  heading.textContent = title;
  element.append(heading);
  if (note) {
    const p = document.createElement('p');
    p.className = 'note';
    p.textContent = note;
    element.append(p);
  }
  const grid = document.createElement('div');
  grid.className = 'inside-grid';
  element.append(grid);
  return [element, grid];
}

/** Splits stacked maps into one array per map. */
function each({ count, height, width, values }) {
  const size = height * width;
  return Array.from({ length: count }, (_, i) => values.slice(i * size, (i + 1) * size));
}

/** Transposes `[steps, units]` to `[units, steps]` so that time runs left to right. */
function overTime(values, steps, units) {
  const out = new Float32Array(steps * units);
  for (let t = 0; t < steps; t++) for (let j = 0; j < units; j++) out[j * steps + t] = values[t * units + j];
  return out;
}

/** A layer of the spec in a few words: `conv 3x3`, `batch norm`, `dense 64`. */
function brief(layer) {
  switch (layer.type) {
    case 'conv2d': return `conv ${layer.kernel_size}x${layer.kernel_size}`;
    case 'dense': return `dense ${layer.units}`;
    case 'residual': return 'residual block';
    default: return layer.type.replaceAll('_', ' ');
  }
}

/** The heading and note of the feature maps after top-level layer `maps.layer` of `spec`. */
function describeMaps(maps, spec) {
  const size = `${maps.count} channels of ${maps.height}x${maps.width}`;
  const layer = spec?.layers?.[maps.layer];
  if (layer?.type === 'conv2d') {
    const activation = layer.activation && layer.activation !== 'linear' ? `, after ${layer.activation.replaceAll('_', ' ')}` : '';
    return [`Feature maps of layer ${maps.layer}: convolution ${layer.kernel_size}x${layer.kernel_size}`, `${size}${activation}`];
  }
  if (layer?.type === 'residual') {
    const body = `f = ${layer.layers.map(brief).join(' → ')}`;
    const sum = layer.shortcut ? `s(x) + f(x), where s = ${layer.shortcut.map(brief).join(' → ')} and ${body}` : `x + f(x), where ${body}`;
    return [`Feature maps of layer ${maps.layer}: residual block`, `${size}: the block's output ${sum}`];
  }
  return [`Feature maps of layer ${maps.layer}`, size];
}

/** The attention view of each container, kept from one inspection to the next. */
const attentionViews = new WeakMap();

/**
 * Makes `parts` the children of `container`, in order, leaving in place those already there:
 * moving an element would take the keyboard focus from it.
 */
function place(container, parts) {
  const wanted = new Set(parts);
  for (const child of [...container.children]) if (!wanted.has(child)) child.remove();
  parts.forEach((part, i) => {
    if (container.children[i] !== part) container.insertBefore(part, container.children[i] ?? null);
  });
}

/**
 * Shows the views of `inspection` in `container`; `pixels` is the digit it was made for and
 * `spec` the model's spec (parsed), which name what each view shows.
 */
export function renderInspection(container, inspection, { pixels = null, spec = null } = {}) {
  const side = Math.round(Math.sqrt(inspection.saliency.length));
  const parts = [];

  const [saliency, saliencyGrid] = section('Saliency', 'How strongly each pixel sways the predicted digit');
  saliencyGrid.append(heatmap(inspection.saliency, side, side, 4, hot(Math.max(...inspection.saliency)), `saliency for ${inspection.predicted}`));
  saliency.id = 'saliency';
  parts.push(saliency);

  if (inspection.filters) {
    const { filters } = inspection;
    const [element, grid] = section(`Filters of layer ${filters.layer}`, 'First convolution kernels: red positive, blue negative');
    element.id = 'filters';
    const limit = maxAbs(filters.values);
    each(filters).forEach((kernel, i) => grid.append(heatmap(kernel, filters.width, filters.height, SCALE_FILTER, diverging(limit), `filter ${i}`)));
    parts.push(element);
  }

  if (inspection.featureMaps.length) {
    const element = document.createElement('section');
    element.id = 'feature-maps';
    for (const maps of inspection.featureMaps) {
      const [layer, grid] = section(...describeMaps(maps, spec));
      each(maps).forEach((map, i) => {
        const [lo, hi] = range(map);
        grid.append(heatmap(map, maps.width, maps.height, SCALE_MAP * (28 / maps.width > 2 ? 2 : 1), grey(lo, hi), `channel ${i}`));
      });
      element.append(layer);
    }
    parts.push(element);
  }

  for (const rnn of inspection.recurrent) {
    const [element, grid] = section(`${rnn.kind.toUpperCase()} layer ${rnn.layer} over ${rnn.steps} time steps`, `Rows: ${rnn.units} units; columns: time (image rows, top to bottom)`);
    element.id = 'gates';
    const series = [['hidden state', rnn.hidden, diverging(1)], ...rnn.gates.map(([name, values]) => [`${name} gate`, values, name === 'cell' || name === 'new' ? diverging(1) : grey(0, 1)])];
    for (const [name, values, colour] of series) {
      const figure = document.createElement('figure');
      const caption = document.createElement('figcaption');
      caption.textContent = name;
      figure.append(heatmap(overTime(values, rnn.steps, rnn.units), rnn.steps, rnn.units, 3, colour, name), caption);
      grid.append(figure);
    }
    parts.push(element);
  }

  if (inspection.attention) {
    let view = attentionViews.get(container);
    if (!view) {
      view = new AttentionView();
      attentionViews.set(container, view);
    }
    view.update(inspection.attention, pixels);
    parts.push(view.element);
  }

  place(container, parts);
}
