// The drawing pad: the user draws a digit with a mouse, pen or finger, and the drawing is
// preprocessed the way MNIST's digits were: cropped to its ink, scaled so that the longer
// side of the box is 20 pixels, and placed in 28x28 with its centre of mass in the middle.

const SIDE = 28;
const BOX = 20;

export class DrawingPad {
  /** `onChange(pixels | null)` gets the 784 MNIST-like pixels in [0, 1], or null when blank. */
  constructor(canvas, onChange) {
    this.canvas = canvas;
    this.ctx = canvas.getContext('2d', { willReadFrequently: true });
    this.onChange = onChange;
    this.drawing = false;
    this.frame = 0;
    this.blank = true;

    canvas.addEventListener('pointerdown', (event) => this.down(event));
    canvas.addEventListener('pointermove', (event) => this.move(event));
    canvas.addEventListener('pointerup', (event) => this.up(event));
    canvas.addEventListener('pointercancel', (event) => this.up(event));
    canvas.addEventListener('keydown', (event) => {
      if (event.key === 'Delete' || event.key === 'Backspace' || event.key === 'Escape') {
        event.preventDefault();
        this.clear();
      }
    });
  }

  point(event) {
    const rect = this.canvas.getBoundingClientRect();
    return [
      ((event.clientX - rect.left) * this.canvas.width) / rect.width,
      ((event.clientY - rect.top) * this.canvas.height) / rect.height,
    ];
  }

  down(event) {
    if (event.button !== 0) return;
    event.preventDefault();
    this.canvas.setPointerCapture(event.pointerId);
    this.drawing = true;
    this.last = this.point(event);
    this.stroke(this.last, this.last);
  }

  move(event) {
    if (!this.drawing) return;
    // Coalesced events keep fast strokes smooth where the browser batches pointer moves.
    const events = event.getCoalescedEvents?.() ?? [event];
    for (const e of events.length ? events : [event]) {
      const next = this.point(e);
      this.stroke(this.last, next);
      this.last = next;
    }
  }

  up(event) {
    if (!this.drawing) return;
    this.drawing = false;
    this.canvas.releasePointerCapture?.(event.pointerId);
    this.changed();
  }

  stroke(from, to) {
    const { ctx } = this;
    // Thick round strokes: a 28x28 MNIST digit's strokes are 2 to 3 pixels wide.
    ctx.lineWidth = this.canvas.width / 13;
    ctx.lineCap = 'round';
    ctx.lineJoin = 'round';
    ctx.strokeStyle = getComputedStyle(this.canvas).color;
    ctx.beginPath();
    ctx.moveTo(...from);
    ctx.lineTo(...to);
    ctx.stroke();
    this.blank = false;
    this.changed();
  }

  clear() {
    this.ctx.clearRect(0, 0, this.canvas.width, this.canvas.height);
    this.blank = true;
    this.changed();
  }

  /** Tells `onChange` once per animation frame at most. */
  changed() {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      this.onChange(this.pixels());
    });
  }

  /** The drawing as MNIST pixels, or null when nothing is drawn. */
  pixels() {
    if (this.blank) return null;
    const { width, height } = this.canvas;
    return toMnist(this.ctx.getImageData(0, 0, width, height), this.canvas);
  }
}

/** MNIST preprocessing of a drawing (ink in the alpha channel of `image`, drawn on `source`). */
export function toMnist(image, source) {
  const { width, height, data } = image;
  let [left, top, right, bottom] = [width, height, -1, -1];
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      if (data[(y * width + x) * 4 + 3] > 0) {
        left = Math.min(left, x);
        right = Math.max(right, x);
        top = Math.min(top, y);
        bottom = Math.max(bottom, y);
      }
    }
  }
  if (right < 0) return null;

  // Scale the ink's box so that its longer side is 20 pixels, keeping the aspect ratio.
  const boxWidth = right - left + 1;
  const boxHeight = bottom - top + 1;
  const scale = BOX / Math.max(boxWidth, boxHeight);
  const w = Math.max(1, Math.round(boxWidth * scale));
  const h = Math.max(1, Math.round(boxHeight * scale));
  const small = new OffscreenCanvas(w, h).getContext('2d', { willReadFrequently: true });
  small.imageSmoothingEnabled = true;
  small.imageSmoothingQuality = 'high';
  small.drawImage(source, left, top, boxWidth, boxHeight, 0, 0, w, h);
  const ink = small.getImageData(0, 0, w, h).data;

  // Centre of mass of the scaled ink, to be moved to the middle of the 28x28 field.
  let mass = 0;
  let cx = 0;
  let cy = 0;
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const v = ink[(y * w + x) * 4 + 3] / 255;
      mass += v;
      cx += v * x;
      cy += v * y;
    }
  }
  const dx = Math.round(SIDE / 2 - (mass > 0 ? cx / mass : w / 2) - 0.5);
  const dy = Math.round(SIDE / 2 - (mass > 0 ? cy / mass : h / 2) - 0.5);

  const pixels = new Float32Array(SIDE * SIDE);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const tx = x + dx;
      const ty = y + dy;
      if (tx >= 0 && tx < SIDE && ty >= 0 && ty < SIDE) pixels[ty * SIDE + tx] = ink[(y * w + x) * 4 + 3] / 255;
    }
  }
  return pixels;
}

/** Draws 28x28 pixels in [0, 1] (or a blank field for null) on a canvas, ink dark on light. */
export function drawDigit(canvas, pixels) {
  const ctx = canvas.getContext('2d');
  const image = ctx.createImageData(SIDE, SIDE);
  const { data } = image;
  for (let i = 0, o = 0; i < SIDE * SIDE; i++, o += 4) {
    const level = pixels ? 255 - pixels[i] * 255 : 255;
    data[o] = level;
    data[o + 1] = level;
    data[o + 2] = level;
    data[o + 3] = 255;
  }
  ctx.putImageData(image, 0, 0);
}
