// The result views: the confusion matrix as a heat map, per-class scores, a grid of test
// digits with the mistakes marked, and the drawing pad's probability bars.
//
// Each view builds its elements once and afterwards only updates them: rebuilding a hundred
// table cells and fifty canvases at every epoch cost the main thread tens of milliseconds on
// a two-core machine, while training ran beside it.

const el = (tag, props = {}, children = []) => {
  const element = Object.assign(document.createElement(tag), props);
  element.append(...children);
  return element;
};

const percent = (v, digits = 1) => `${(v * 100).toFixed(digits)}%`;
const CLASSES = 10;
const digits = Array.from({ length: CLASSES }, (_, i) => i);

/**
 * Fills a data progress bar: bytes when the server announced the total, otherwise images
 * arrived out of those the IDX headers declared.
 */
export function showDataProgress(bar, status, received = null, total = null, loading = status.loading) {
  if (loading && status.dataComplete && !total) {
    // A replacement of unknown size: the counts are the old data's, so show only activity.
    bar.removeAttribute('value');
  } else if (total) {
    bar.max = total;
    bar.value = Math.min(received, total);
  } else {
    bar.max = Math.max(1, (status.trainDeclared ?? 0) + (status.testDeclared ?? 0));
    bar.value = status.dataComplete ? bar.max : status.trainAvailable + status.testAvailable;
  }
}

/**
 * Where a worker trains, from its status: `WebGPU · <adapter>` or `CPU · WebAssembly SIMD, one
 * thread`, with the reason the GPU was not used when one was asked for.
 */
export function backendLabel({ backend, backendNote, threads, instructions }) {
  const where = backend.startsWith('gpu: ')
    ? `WebGPU · ${backend.slice(5)}`
    : `CPU · ${instructions}, ${threads > 1 ? `${threads} threads` : 'one thread'}`;
  return backendNote ? `${where} (${backendNote})` : where;
}

/** The confusion matrix as a table whose cells are shaded by their share of the row. */
export class ConfusionView {
  constructor(container) {
    this.container = container;
    this.hint = container.firstElementChild;
    this.cells = digits.map(() => digits.map(() => el('td')));
    const head = el('tr', {}, [el('th', { scope: 'col', textContent: 'true \\ predicted' }),
      ...digits.map((j) => el('th', { scope: 'col', textContent: String(j) }))]);
    const rows = digits.map((i) => el('tr', {}, [el('th', { scope: 'row', textContent: String(i) }), ...this.cells[i]]));
    this.table = el('table', { className: 'confusion', hidden: true }, [el('thead', {}, [head]), el('tbody', {}, rows)]);
    container.append(this.table);
  }

  update(matrix) {
    matrix.forEach((row, i) => {
      const total = row.reduce((a, b) => a + b, 0) || 1;
      row.forEach((count, j) => {
        const cell = this.cells[i][j];
        const share = count / total;
        cell.textContent = String(count);
        cell.title = `true ${i}, predicted ${j}: ${count} (${percent(share)} of the ${i}s)`;
        cell.style.setProperty('--share', share.toFixed(3));
        cell.className = i === j ? 'hit' : count > 0 ? 'miss' : '';
      });
    });
    this.show(true);
  }

  show(shown) {
    this.table.hidden = !shown;
    if (this.hint) this.hint.hidden = shown;
  }
}

/** Precision, recall and F1 per digit, each with a bar, and the number of test images. */
export class PerClassView {
  constructor(container) {
    const head = el('tr', {}, ['digit', 'precision', 'recall', 'F1', 'test images'].map((t) => el('th', { scope: 'col', textContent: t })));
    this.rows = digits.map(() => [el('td', { className: 'bar' }), el('td', { className: 'bar' }), el('td', { className: 'bar' }), el('td')]);
    const body = digits.map((d) => el('tr', {}, [el('th', { scope: 'row', textContent: String(d) }), ...this.rows[d]]));
    this.table = el('table', { className: 'per-class', hidden: true }, [el('thead', {}, [head]), el('tbody', {}, body)]);
    container.append(this.table);
  }

  update(perClass) {
    perClass.forEach(({ precision, recall, f1, support }, d) => {
      const [p, r, f, s] = this.rows[d];
      for (const [cell, v] of [[p, precision], [r, recall], [f, f1]]) {
        cell.textContent = percent(v);
        cell.style.setProperty('--value', v.toFixed(3));
      }
      s.textContent = String(support);
    });
    this.table.hidden = false;
  }

  show(shown) {
    this.table.hidden = !shown;
  }
}

/**
 * Test digits drawn on one canvas, a wrong prediction outlined in red with what was predicted.
 * One canvas, not one per digit: fifty small canvases took the page's thread long enough to
 * stall its timers while the worker trained.
 */
export class DigitGrid {
  static CELL = 44; // CSS pixels per digit: the 28x28 image at 32 px and its caption

  constructor(container) {
    this.container = container;
    this.canvas = el('canvas', { hidden: true });
    this.canvas.setAttribute('role', 'img');
    this.showcase = null;
    container.append(this.canvas);
    this.canvas.addEventListener('pointermove', (event) => this.describe(event));
    // The width is observed rather than read in update(), where reading it would force a
    // layout of the whole page in the middle of an epoch's redraw.
    this.width = 0;
    new ResizeObserver(([entry]) => {
      this.width = entry.contentRect.width;
      if (this.showcase && this.columnsFor(this.width) !== this.columns) this.update(this.showcase);
    }).observe(container);
  }

  columnsFor(width) {
    return Math.max(4, Math.floor(width / DigitGrid.CELL));
  }

  update(showcase) {
    this.showcase = showcase;
    const { pixels, labels, predicted } = showcase;
    const { CELL } = DigitGrid;
    const columns = this.columnsFor(this.width);
    const rows = Math.ceil(labels.length / columns);
    const scale = devicePixelRatio || 1;
    this.columns = columns;
    this.canvas.width = columns * CELL * scale;
    this.canvas.height = rows * CELL * scale;
    this.canvas.style.width = `${columns * CELL}px`;
    this.canvas.style.height = `${rows * CELL}px`;
    const ctx = this.canvas.getContext('2d');
    ctx.scale(scale, scale);
    const style = getComputedStyle(this.container);
    const [text, bad] = [style.getPropertyValue('--text-dim'), style.getPropertyValue('--bad')];
    ctx.font = '11px system-ui, sans-serif';
    ctx.textAlign = 'center';
    this.paintDigits(ctx, pixels, labels.length, scale);
    const wrong = [];
    labels.forEach((label, i) => {
      const x = (i % columns) * CELL;
      const y = Math.floor(i / columns) * CELL;
      const miss = predicted[i] !== label;
      if (miss) {
        wrong.push(`a ${label} read as ${predicted[i]}`);
        ctx.strokeStyle = bad;
        ctx.lineWidth = 2;
        ctx.strokeRect(x + 3, y + 1, CELL - 6, CELL - 2);
      }
      ctx.fillStyle = miss ? bad : text;
      ctx.fillText(miss ? `${predicted[i]} ✗` : String(predicted[i]), x + CELL / 2, y + CELL - 3);
    });
    this.canvas.setAttribute('aria-label', `${labels.length} test digits, ${labels.length - wrong.length} read right`
      + (wrong.length ? `; wrong: ${wrong.join(', ')}` : ''));
    this.canvas.hidden = false;
  }

  /** Writes every digit, ink dark on light and scaled up to 32 px, in one image. */
  paintDigits(ctx, pixels, count, scale) {
    const { CELL } = DigitGrid;
    const { width } = this.canvas;
    const image = ctx.createImageData(width, this.canvas.height);
    const side = Math.round(32 * scale);
    for (let i = 0; i < count; i++) {
      const left = Math.round(((i % this.columns) * CELL + 6) * scale);
      const top = Math.round((Math.floor(i / this.columns) * CELL + 2) * scale);
      for (let y = 0; y < side; y++) {
        const row = i * 784 + Math.floor((y * 28) / side) * 28;
        let o = ((top + y) * width + left) * 4;
        for (let x = 0; x < side; x++, o += 4) {
          const level = 255 - pixels[row + Math.floor((x * 28) / side)];
          image.data[o] = level;
          image.data[o + 1] = level;
          image.data[o + 2] = level;
          image.data[o + 3] = 255;
        }
      }
    }
    ctx.putImageData(image, 0, 0);
  }

  /** The tooltip names the digit under the pointer and its prediction. */
  describe(event) {
    if (!this.showcase) return;
    const rect = this.canvas.getBoundingClientRect();
    const { CELL } = DigitGrid;
    const i = Math.floor((event.clientY - rect.top) / CELL) * this.columns + Math.floor((event.clientX - rect.left) / CELL);
    const { labels, predicted } = this.showcase;
    this.canvas.title = i < labels.length
      ? (predicted[i] === labels[i] ? `a ${labels[i]}, read right` : `a ${labels[i]}, read as ${predicted[i]}`) : '';
  }

  show(shown) {
    this.canvas.hidden = !shown;
  }
}

/** Ten probability bars; each `.prob` carries its digit and probability as data attributes. */
export class ProbabilityBars {
  constructor(container) {
    this.rows = digits.map((digit) => {
      const value = el('span', { className: 'value' });
      const row = el('div', { className: 'prob' }, [
        el('span', { className: 'digit', textContent: String(digit) }),
        el('span', { className: 'track' }, [el('span', { className: 'fill' })]),
        value,
      ]);
      row.dataset.digit = String(digit);
      return { row, value };
    });
    container.replaceChildren(...this.rows.map(({ row }) => row));
    this.update(null);
  }

  /** `probs`: ten probabilities, or null for none. */
  update(probs) {
    const best = probs ? probs.indexOf(Math.max(...probs)) : -1;
    this.rows.forEach(({ row, value }, digit) => {
      const p = probs ? probs[digit] : 0;
      row.className = digit === best ? 'prob best' : 'prob';
      row.dataset.prob = String(p);
      row.style.setProperty('--value', p.toFixed(4));
      value.textContent = probs ? percent(p, 0) : '–';
    });
  }
}

/**
 * A model's summary as Keras prints it: each layer (a block's layers indented under it), its
 * output shape and parameter count, then the totals; or the spec's error in place of it.
 */
export class ModelSummaryView {
  constructor(container) {
    this.container = container;
  }

  update(summary, error) {
    if (error) {
      this.container.replaceChildren(el('p', { className: 'error', textContent: error }));
      return;
    }
    const shape = (s) => `[${s.join(', ')}]`;
    const count = (n) => n.toLocaleString('en');
    const head = el('tr', {}, ['layer (type)', 'output shape', 'parameters'].map((t) => el('th', { scope: 'col', textContent: t })));
    const rows = summary.rows.map(({ path, kind, depth, output, parameters }) => el('tr', { className: depth ? 'nested' : '' }, [
      el('td', { textContent: `${path} (${kind})`, style: `padding-left: ${0.3 + depth * 1.2}rem` }),
      el('td', { textContent: shape(output) }),
      el('td', { className: 'number', textContent: count(parameters) }),
    ]));
    const totals = [
      ['total', summary.total], ['trainable', summary.trainable], ['not trainable (running averages)', summary.total - summary.trainable],
    ].map(([what, n]) => `${count(n)} ${what}`).join(' · ')
      + ` · ${(summary.flops / 1e6).toFixed(summary.flops < 1e7 ? 2 : 1)} MFLOP per sample forward`;
    this.container.replaceChildren(
      el('table', { className: 'model-summary' }, [
        el('caption', { textContent: `input ${shape(summary.input)}` }),
        el('thead', {}, [head]),
        el('tbody', {}, rows),
      ]),
      el('p', { className: 'figures', textContent: `Parameters: ${totals}` }),
    );
  }
}

/** A small line of `values` over the canvas's width, scaled from 0 to their largest; blank for null. */
export function drawCurve(canvas, values) {
  const context = canvas.getContext('2d');
  context.clearRect(0, 0, canvas.width, canvas.height);
  if (!values?.length) return;
  const style = getComputedStyle(canvas);
  const top = Math.max(...values) || 1;
  const pad = 3;
  const x = (i) => pad + (i / Math.max(1, values.length - 1)) * (canvas.width - 2 * pad);
  const y = (v) => canvas.height - pad - (v / top) * (canvas.height - 2 * pad);
  context.strokeStyle = style.getPropertyValue('--grid').trim();
  context.beginPath();
  context.moveTo(pad, canvas.height - pad);
  context.lineTo(canvas.width - pad, canvas.height - pad);
  context.stroke();
  context.strokeStyle = style.getPropertyValue('--accent').trim();
  context.lineWidth = 1.5;
  context.beginPath();
  values.forEach((v, i) => (i ? context.lineTo(x(i), y(v)) : context.moveTo(x(i), y(v))));
  context.stroke();
}
