// The result views: the confusion matrix as a heat map, per-class scores, a grid of test
// digits with the mistakes marked, and the drawing pad's probability bars.

import { drawDigit } from './pad.js';

const el = (tag, props = {}, children = []) => {
  const element = Object.assign(document.createElement(tag), props);
  element.append(...children);
  return element;
};

const percent = (v, digits = 1) => `${(v * 100).toFixed(digits)}%`;

/** The confusion matrix as a table whose cells are shaded by their share of the row. */
export function renderConfusion(container, matrix) {
  const head = el('tr', {}, [el('th', { scope: 'col', textContent: 'true \\ predicted' }),
    ...matrix.map((_, j) => el('th', { scope: 'col', textContent: String(j) }))]);
  const rows = matrix.map((row, i) => {
    const total = row.reduce((a, b) => a + b, 0) || 1;
    return el('tr', {}, [
      el('th', { scope: 'row', textContent: String(i) }),
      ...row.map((count, j) => {
        const share = count / total;
        const cell = el('td', { textContent: String(count), title: `true ${i}, predicted ${j}: ${count} (${percent(share)} of the ${i}s)` });
        cell.style.setProperty('--share', share.toFixed(3));
        cell.className = i === j ? 'hit' : count > 0 ? 'miss' : '';
        return cell;
      }),
    ]);
  });
  container.replaceChildren(el('table', { className: 'confusion' }, [el('thead', {}, [head]), el('tbody', {}, rows)]));
}

/** Precision, recall and F1 per digit, each with a bar. */
export function renderPerClass(container, perClass) {
  const bar = (v) => {
    const cell = el('td', { className: 'bar', textContent: percent(v) });
    cell.style.setProperty('--value', v.toFixed(3));
    return cell;
  };
  const head = el('tr', {}, ['digit', 'precision', 'recall', 'F1', 'test images'].map((t) => el('th', { scope: 'col', textContent: t })));
  const rows = perClass.map((scores, digit) => el('tr', {}, [
    el('th', { scope: 'row', textContent: String(digit) }),
    bar(scores.precision), bar(scores.recall), bar(scores.f1),
    el('td', { textContent: String(scores.support) }),
  ]));
  container.replaceChildren(el('table', { className: 'per-class' }, [el('thead', {}, [head]), el('tbody', {}, rows)]));
}

/** Test digits as small canvases; a wrong prediction is outlined and shows what was predicted. */
export function renderDigits(container, { pixels, labels, predicted }) {
  const size = 28 * 28;
  const cells = labels.map((label, i) => {
    const canvas = el('canvas', { width: 28, height: 28 });
    drawDigit(canvas, pixels.subarray ? pixels.subarray(i * size, (i + 1) * size) : pixels.slice(i * size, (i + 1) * size), { bytes: true });
    const wrong = predicted[i] !== label;
    const caption = el('figcaption', { textContent: wrong ? `${predicted[i]} ✗` : String(predicted[i]) });
    const figure = el('figure', { className: wrong ? 'digit wrong' : 'digit' }, [canvas, caption]);
    figure.title = wrong ? `a ${label}, predicted ${predicted[i]}` : `a ${label}, predicted correctly`;
    return figure;
  });
  container.replaceChildren(...cells);
}

/** Ten probability bars; each `.prob` carries its digit and probability as data attributes. */
export function renderProbabilities(container, probs) {
  const best = probs ? probs.indexOf(Math.max(...probs)) : -1;
  const bars = Array.from({ length: 10 }, (_, digit) => {
    const p = probs ? probs[digit] : 0;
    const row = el('div', { className: digit === best ? 'prob best' : 'prob' }, [
      el('span', { className: 'digit', textContent: String(digit) }),
      el('span', { className: 'track' }, [el('span', { className: 'fill' })]),
      el('span', { className: 'value', textContent: probs ? percent(p, 0) : '–' }),
    ]);
    row.dataset.digit = String(digit);
    row.dataset.prob = String(p);
    row.style.setProperty('--value', p.toFixed(4));
    return row;
  });
  container.replaceChildren(...bars);
}
