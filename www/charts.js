// Live line charts with uPlot: training figures per batch, test figures per epoch, against
// the training step. Redraws a few times a second however fast points arrive: each redraw
// rasterises the canvas again, and on a two-core laptop that competes with the worker.

import uPlot from '../node_modules/uplot/dist/uPlot.esm.js';

const REDRAW_MS = 200;
/** Colours for several runs on one chart: Okabe and Ito's, told apart with every kind of colour blindness. */
export const PALETTE = ['#0072b2', '#e69f00', '#009e73', '#cc79a7', '#56b4e9', '#d55e00', '#f0e442', '#000000'];


/**
 * Exponential moving averages of the noisy per-batch loss and accuracy (factor 0.9),
 * bias-corrected from the first batch as Adam corrects its moments.
 */
export class Smoothing {
  constructor() {
    this.reset();
  }

  reset() {
    Object.assign(this, { loss: 0, accuracy: 0, n: 0 });
  }

  /** Takes one batch's figures; returns the smoothed `[loss, accuracy]`. */
  push(loss, accuracy) {
    const a = 0.9;
    this.n += 1;
    this.loss = a * this.loss + (1 - a) * loss;
    this.accuracy = a * this.accuracy + (1 - a) * accuracy;
    const correction = 1 - a ** this.n;
    return [this.loss / correction, this.accuracy / correction];
  }
}

export class LiveChart {
  /**
   * `container`: the element to draw in; `series`: [{label, colour (a CSS variable name),
   * points (true for sparse series drawn as dots)}]; `percent`: format the y axis as %.
   */
  constructor(container, { series, percent = false, height = 200 }) {
    this.container = container;
    this.series = series;
    this.percent = percent;
    this.height = height;
    this.data = [[], ...series.map(() => [])];
    // Other runs' curves drawn beside the live ones: [{label, colour, points: [[x, y], ...]}].
    this.overlays = [];
    this.timer = 0;
    this.build();
    new ResizeObserver(() => this.plot.setSize(this.size())).observe(container);
    // Colours come from the theme: follow the system when it switches light and dark.
    matchMedia('(prefers-color-scheme: dark)').addEventListener('change', () => this.build());
  }

  size() {
    return { width: Math.max(200, this.container.clientWidth), height: this.height };
  }

  build() {
    this.plot?.destroy();
    // Colours from the theme's custom properties, as they reach the container (which may sit
    // in an embedded element's shadow root).
    const style = getComputedStyle(this.container);
    const css = (name) => style.getPropertyValue(name).trim();
    const text = css('--text-dim');
    const grid = css('--grid');
    const axis = { stroke: text, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1 } };
    const format = this.percent ? (u, values) => values.map((v) => `${Math.round(v * 100)}%`) : undefined;
    this.plot = new uPlot({
      ...this.size(),
      cursor: { drag: { x: false, y: false } },
      legend: { live: false },
      scales: { x: { time: false }, y: this.percent ? { range: [0, 1] } : { auto: true } },
      axes: [{ ...axis, label: 'step', labelSize: 20 }, { ...axis, values: format, size: 48 }],
      series: [
        { label: 'step' },
        ...this.series.map(({ label, colour, points }) => ({
          label,
          stroke: css(colour),
          width: points ? 2 : 1.5,
          spanGaps: true,
          points: { show: Boolean(points), size: 7, fill: css(colour) },
        })),
        ...this.overlays.map(({ label, colour }) => ({
          label, stroke: colour, width: 1.5, dash: [5, 3], spanGaps: true, points: { show: true, size: 4, fill: colour },
        })),
      ],
    }, this.composed(), this.container);
  }

  /** Shows other runs' curves beside the live ones, with their labels in the legend; [] hides them. */
  setOverlays(overlays) {
    this.overlays = overlays;
    this.build();
  }

  /**
   * The live data with the overlays' points on one x axis (uPlot's data shares its x values):
   * the union of every x, each series null where it has no point.
   */
  composed() {
    if (!this.overlays.length) return this.data;
    const xs = [...new Set([...this.data[0], ...this.overlays.flatMap((o) => o.points.map(([x]) => x))])].sort((a, b) => a - b);
    const at = new Map(xs.map((x, i) => [x, i]));
    const column = (pairs) => {
      const values = new Array(xs.length).fill(null);
      for (const [x, y] of pairs) values[at.get(x)] = y;
      return values;
    };
    const live = this.data.slice(1).map((values) => column(this.data[0].map((x, i) => [x, values[i]])));
    return [xs, ...live, ...this.overlays.map((o) => column(o.points))];
  }

  /** Adds one x with a value (or null) per series. */
  push(x, values) {
    this.data[0].push(x);
    values.forEach((v, i) => this.data[i + 1].push(v ?? null));
    this.schedule();
  }

  /** Sets the last value of series `index` at x, adding the point when x is new. */
  mark(x, index, value) {
    const last = this.data[0].length - 1;
    if (last >= 0 && this.data[0][last] === x) {
      this.data[index + 1][last] = value;
      this.schedule();
    } else {
      this.push(x, this.series.map((_, i) => (i === index ? value : null)));
    }
  }

  /** How many values series `index` holds. */
  count(index = 0) {
    return this.data[index + 1].filter((v) => v != null).length;
  }

  clear() {
    this.data = [[], ...this.series.map(() => [])];
    this.schedule();
  }

  /** Drops the points after x (training went back to an earlier step). */
  truncate(x) {
    const keep = this.data[0].findIndex((v) => v > x);
    if (keep < 0) return;
    this.data = this.data.map((values) => values.slice(0, keep));
    this.schedule();
  }

  schedule() {
    if (this.timer) return;
    this.timer = setTimeout(() => requestAnimationFrame(() => {
      this.timer = 0;
      this.plot.setData(this.composed());
    }), REDRAW_MS);
  }
}
