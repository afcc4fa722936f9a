// The attention view of the inside panel: where each head of each attention layer looks from
// a patch the user picks, drawn over the digit, and the attention rollout to the pooled output
// the classifier reads. Renders `inspection.attention` (see src/inspect.rs):
//   {layers: [{heads, tokens, weights}], grid: [rows, cols] | null, rollout, pooled}
// with `weights[(head * tokens + query) * tokens + key]`, each query's row summing to 1.
//
// Built once and afterwards only redrawn, as the result views are: the inspection comes again
// every 600 ms while the model trains, and rebuilding would drop the keyboard focus on the
// patch picker and flicker.

const SIDE = 28;
// The largest the maps are drawn, in CSS pixels; in a narrow column they shrink (inside.css).
const PICKER_PX = 168;
const HEAD_PX = 96;

const el = (tag, props = {}, children = []) => {
  const element = Object.assign(document.createElement(tag), props);
  element.append(...children);
  return element;
};

/** White, orange, dark red: how much weight a patch gets, relative to the most in the map. */
function tint(t) {
  const stops = [[255, 255, 255], [253, 174, 97], [189, 0, 38]];
  const x = Math.max(0, Math.min(1, t)) * 2;
  const i = Math.min(1, Math.floor(x));
  const f = x - i;
  return stops[i].map((a, c) => a + (stops[i + 1][c] - a) * f);
}

let small = null; // the 28x28 image before it is scaled up

/**
 * Paints the digit with each patch tinted by its weight (`weights[r * cols + c]`) onto `canvas`,
 * `px` CSS pixels wide at the device's pixel ratio, with the patch grid and, when given, the
 * `query` patch outlined. The tint multiplies the paper and the
 * ink alike, so the strokes stay readable under any weight.
 */
function paint(canvas, px, pixels, grid, weights, query = -1) {
  const [rows, cols] = grid;
  const scale = devicePixelRatio || 1;
  canvas.width = Math.round(px * scale);
  canvas.height = Math.round(px * scale);
  // The darkest tint is the largest weight, or three times an even share where none is that
  // large: scaled to its largest alone, a map that spreads its weight evenly would look as
  // sharp as one that does not.
  const max = weights ? Math.max(...weights, 3 / weights.length) : 0;
  small ??= new OffscreenCanvas(SIDE, SIDE);
  const image = new ImageData(SIDE, SIDE);
  for (let y = 0; y < SIDE; y++) {
    for (let x = 0; x < SIDE; x++) {
      const i = y * SIDE + x;
      const paper = 255 - 185 * (pixels ? pixels[i] : 0);
      const patch = Math.floor((y * rows) / SIDE) * cols + Math.floor((x * cols) / SIDE);
      const colour = weights ? tint(max > 0 ? weights[patch] / max : 0) : [255, 255, 255];
      image.data.set([paper * colour[0] / 255, paper * colour[1] / 255, paper * colour[2] / 255, 255], i * 4);
    }
  }
  small.getContext('2d').putImageData(image, 0, 0);
  const ctx = canvas.getContext('2d');
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(small, 0, 0, canvas.width, canvas.height);
  const [w, h] = [canvas.width / cols, canvas.height / rows];
  ctx.strokeStyle = 'rgba(0, 0, 0, 0.18)';
  ctx.lineWidth = Math.max(1, scale);
  ctx.beginPath();
  for (let c = 1; c < cols; c++) {
    ctx.moveTo(c * w, 0);
    ctx.lineTo(c * w, canvas.height);
  }
  for (let r = 1; r < rows; r++) {
    ctx.moveTo(0, r * h);
    ctx.lineTo(canvas.width, r * h);
  }
  ctx.stroke();
  if (query >= 0) {
    ctx.strokeStyle = '#1d4ed8';
    ctx.lineWidth = 2.5 * scale;
    const inset = ctx.lineWidth / 2;
    ctx.strokeRect((query % cols) * w + inset, Math.floor(query / cols) * h + inset, w - 2 * inset, h - 2 * inset);
  }
}

/** A token's weights as a heat map when the tokens are not patches (a custom sequence model). */
function paintMatrix(canvas, values, tokens) {
  canvas.width = tokens;
  canvas.height = tokens;
  const max = Math.max(...values);
  const image = new ImageData(tokens, tokens);
  values.forEach((v, i) => image.data.set([...tint(max > 0 ? v / max : 0), 255], i * 4));
  canvas.getContext('2d').putImageData(image, 0, 0);
}

const patchName = (token, cols) => `row ${Math.floor(token / cols) + 1}, column ${(token % cols) + 1}`;
const fixed = (values) => values.map((v) => Number(v.toFixed(5)));

export class AttentionView {
  constructor() {
    this.query = null;
    this.shape = '';
    this.element = el('section', { id: 'attention', className: 'inside-section attention' });
  }

  /** Draws `attention` for the digit `pixels` (784 values in [0, 1]). */
  update(attention, pixels) {
    this.attention = attention;
    this.pixels = pixels;
    const { layers, grid } = attention;
    const tokens = layers[0].tokens;
    const patches = grid && grid[0] * grid[1] === tokens ? grid : null;
    const shape = JSON.stringify([patches, layers.map((l) => [l.heads, l.tokens])]);
    if (shape !== this.shape) this.build(patches, layers);
    this.shape = shape;
    if (this.query == null || this.query >= tokens) this.query = patches ? this.centre(patches) : 0;
    this.draw();
  }

  /** The patch nearest the digit's centre of mass: a first pick that lands on the ink. */
  centre([rows, cols]) {
    let [mass, sy, sx] = [0, 0, 0];
    this.pixels?.forEach((v, i) => {
      mass += v;
      sy += v * Math.floor(i / SIDE);
      sx += v * (i % SIDE);
    });
    if (!mass) return 0;
    return Math.floor(((sy / mass + 0.5) * rows) / SIDE) * cols + Math.floor(((sx / mass + 0.5) * cols) / SIDE);
  }

  build(patches, layers) {
    const heading = el('h4', { textContent: 'Attention' });
    this.heads = [];
    const sections = layers.map((layer, l) => {
      const figures = Array.from({ length: layer.heads }, (_, h) => {
        const canvas = el('canvas', { className: patches ? 'attention-map' : 'heatmap' });
        canvas.setAttribute('role', 'img');
        canvas.dataset.layer = String(l);
        canvas.dataset.head = String(h);
        const caption = el('figcaption');
        this.heads.push({ canvas, caption, layer: l, head: h });
        return el('figure', {}, [canvas, caption]);
      });
      const heads = el('div', { className: 'attention-heads' }, figures);
      heads.style.setProperty('--heads', String(layer.heads));
      return el('div', { className: 'attention-layer' }, [
        el('p', { className: 'note', textContent: `Attention layer ${l + 1} of ${layers.length}: ${layer.heads} heads` }),
        heads,
      ]);
    });
    if (!patches) {
      const note = el('p', { className: 'note', textContent: 'Each head\'s weights, rows: queries, columns: keys (the tokens are not image patches, so they are not drawn over the digit)' });
      this.picker = null;
      this.rollout = null;
      this.element.replaceChildren(heading, note, ...sections);
      return;
    }
    const [rows, cols] = patches;
    const note = el('p', {
      className: 'note',
      textContent: `The digit cut into ${rows}x${cols} patches, one token each. Pick a patch (click it, or use the arrow keys) to see `
        + 'how much weight each head gives every patch when it updates the picked one: the darker the red, the more '
        + '(a head that spreads its weight evenly stays pale); under each head, its largest weight.',
    });
    // The picker: the digit with a button over each patch, one tab stop that the arrow keys move.
    const canvas = el('canvas', { className: 'attention-map' });
    canvas.setAttribute('aria-hidden', 'true');
    this.buttons = Array.from({ length: rows * cols }, (_, token) => {
      const button = el('button', { type: 'button', className: 'patch', tabIndex: -1 });
      button.setAttribute('aria-label', `patch ${patchName(token, cols)}`);
      button.addEventListener('click', () => this.pick(token));
      return button;
    });
    const buttons = el('div', { className: 'patches' }, this.buttons);
    buttons.setAttribute('role', 'group');
    buttons.setAttribute('aria-label', 'Patch to look from');
    buttons.style.gridTemplate = `repeat(${rows}, 1fr) / repeat(${cols}, 1fr)`;
    buttons.addEventListener('keydown', (event) => this.key(event, rows, cols));
    this.picker = canvas;
    this.pickerCaption = el('figcaption');
    const picker = el('figure', {}, [el('div', { className: 'picker' }, [canvas, buttons]), this.pickerCaption]);

    this.rollout = el('canvas', { className: 'attention-map' });
    this.rollout.setAttribute('role', 'img');
    this.rolloutCaption = el('figcaption');
    const rollout = el('figure', {}, [this.rollout, this.rolloutCaption]);
    this.element.replaceChildren(heading, note, el('div', { className: 'attention-top' }, [picker, rollout]), ...sections);
  }

  key(event, rows, cols) {
    const moves = { ArrowLeft: [0, -1], ArrowRight: [0, 1], ArrowUp: [-1, 0], ArrowDown: [1, 0] };
    const move = moves[event.key];
    if (!move && event.key !== 'Home' && event.key !== 'End') return;
    event.preventDefault();
    let next;
    if (event.key === 'Home') next = 0;
    else if (event.key === 'End') next = rows * cols - 1;
    else {
      const r = Math.max(0, Math.min(rows - 1, Math.floor(this.query / cols) + move[0]));
      const c = Math.max(0, Math.min(cols - 1, (this.query % cols) + move[1]));
      next = r * cols + c;
    }
    this.pick(next);
    this.buttons[next].focus();
  }

  pick(token) {
    this.query = token;
    this.draw();
  }

  draw() {
    const { layers, grid, pooled } = this.attention;
    const { query } = this;
    const tokens = layers[0].tokens;
    for (const { canvas, caption, layer, head } of this.heads) {
      const { weights } = layers[layer];
      if (!this.picker) {
        paintMatrix(canvas, weights.slice(head * tokens * tokens, (head + 1) * tokens * tokens), tokens);
        caption.textContent = `head ${head + 1}`;
        canvas.setAttribute('aria-label', `attention layer ${layer + 1}, head ${head + 1}: weights of every query over every key`);
        continue;
      }
      const start = (head * tokens + query) * tokens;
      const row = weights.slice(start, start + tokens);
      const top = row.indexOf(Math.max(...row));
      paint(canvas, HEAD_PX, this.pixels, grid, row, query);
      canvas.dataset.query = String(query);
      canvas.dataset.weights = JSON.stringify(fixed(row));
      caption.textContent = `head ${head + 1} · ${row[top].toFixed(2)}`;
      canvas.setAttribute('aria-label', `attention layer ${layer + 1}, head ${head + 1}, from patch ${patchName(query, grid[1])}: `
        + `most weight (${row[top].toFixed(2)}) on patch ${patchName(top, grid[1])}`);
    }
    if (!this.picker) return;
    paint(this.picker, PICKER_PX, this.pixels, grid, null, query);
    this.pickerCaption.textContent = `looking from patch ${patchName(query, grid[1])}`;
    this.buttons.forEach((button, token) => {
      button.tabIndex = token === query ? 0 : -1;
      button.setAttribute('aria-pressed', String(token === query));
    });
    paint(this.rollout, PICKER_PX, this.pixels, grid, pooled);
    this.rollout.dataset.weights = JSON.stringify(fixed(pooled));
    const top = pooled.indexOf(Math.max(...pooled));
    this.rolloutCaption.textContent = 'attention rollout to the output';
    this.rollout.setAttribute('aria-label', `attention rollout: how much each patch flows into the mean the classifier reads; most from patch ${patchName(top, grid[1])}`);
  }
}
