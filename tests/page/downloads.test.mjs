// Downloads that fail honestly: a server that goes quiet, a connection that breaks, a file
// that is missing on a first load, and images the model cannot take. Each is named in the
// page's message, says what happened to the data, and leaves the page working.
//
// A server of our own stands in front of `ferrograd serve`: under /faulty/<fault>/ it serves
// the bundled MNIST files, with <fault> done to one of them; everything else it passes on.

import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { createServer, request } from 'node:http';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { gunzipSync } from 'node:zlib';

import { ROOT, browserAndServer, open, screenshot, waitForState } from './harness.mjs';

const env = browserAndServer();

// What each fault does to the file it touches (`unsized`: with no Content-Length); `sent`
// counts the bytes the endless ones wrote, and `hungUp` resolves, once their connection
// closes, to whether the client hung up before the end.
const sent = {};
const hungUp = {};
/** Whether the page hung up on `name`'s download, waiting up to 20 s for its connection to close. */
const hangsUp = (name) => Promise.race([
  hungUp[name].then((early) => (early ? 'hung up' : 'sent to the end')),
  new Promise((resolve) => { setTimeout(resolve, 20_000, 'still open after 20 s').unref(); }),
]);
const FAULTS = {
  // Headers and the first 64 KiB of the training images, then silence on an open connection.
  stall: { file: 'train-images-idx3-ubyte.gz', serve: (res, bytes) => { res.write(bytes.subarray(0, 65_536)); } },
  // The same 64 KiB, then the connection is cut.
  break: {
    file: 'train-images-idx3-ubyte.gz',
    serve: (res, bytes) => { res.write(bytes.subarray(0, 65_536), () => res.socket.destroy()); },
  },
  // The test images are not there.
  'missing-test': { file: 't10k-images-idx3-ubyte.gz', status: 404 },
  // A header declaring 8,000 images of 100x100 (80 MB), then zeros for as long as the client
  // reads.
  big: { file: 'train-images-idx3-ubyte.gz', unsized: true, serve: (res) => endless(res, 'big', [8000, 100, 100], 8000 * 100 * 100) },
  // 8,000 images as declared, then 80 MB more that no header declares.
  overflow: {
    file: 'train-images-idx3-ubyte.gz',
    unsized: true,
    serve: (res) => endless(res, 'overflow', [8000, 28, 28], 8000 * 784 + 80e6),
  },
};

/** An IDX images header for `dims`, then zeros up to `total` bytes while the client reads. */
function endless(res, name, dims, total) {
  const header = Buffer.alloc(4 + 4 * dims.length);
  [0x0803, ...dims].forEach((v, i) => header.writeUInt32BE(v, 4 * i));
  const zeros = Buffer.alloc(1 << 20);
  sent[name] = 0;
  hungUp[name] = new Promise((resolve) => res.once('close', () => resolve(sent[name] < total)));
  const more = () => {
    while (!res.destroyed && sent[name] < total) {
      sent[name] += zeros.length;
      if (!res.write(zeros)) return res.once('drain', more);
    }
    return res.end();
  };
  res.write(header);
  more();
}

let faulty;
before(async () => {
  const server = createServer((req, res) => {
    // The bundled files under the names 7-Zip and Kaggle give them, not gzipped.
    const kaggle = req.url.match(/^\/kaggle\/((?:train|t10k)-(?:images|labels))\.(idx[13]-ubyte)$/);
    if (kaggle) {
      res.writeHead(200).end(gunzipSync(readFileSync(join(ROOT, 'data/mnist', `${kaggle[1]}-${kaggle[2]}.gz`))));
      return;
    }
    const match = req.url.match(/^\/faulty\/([\w-]+)\/([\w.-]+)$/);
    if (!match) {
      const upstream = request(new URL(req.url, env.server.url), { method: req.method, headers: req.headers }, (answer) => {
        res.writeHead(answer.statusCode, answer.headers);
        answer.pipe(res);
      });
      upstream.on('error', (error) => res.destroy(error));
      req.pipe(upstream);
      return;
    }
    const [, name, file] = match;
    const fault = FAULTS[name];
    const path = join(ROOT, 'data/mnist', file);
    if (!existsSync(path)) {
      res.writeHead(404).end();
      return;
    }
    const bytes = readFileSync(path);
    if (fault?.file !== file) {
      res.writeHead(200, { 'content-length': bytes.length }).end(bytes);
    } else if (fault.status) {
      res.writeHead(fault.status).end();
    } else {
      res.writeHead(200, fault.unsized ? {} : { 'content-length': bytes.length });
      fault.serve(res, bytes);
    }
  });
  await new Promise((resolve) => { server.listen(0, '127.0.0.1', resolve); });
  faulty = {
    url: `http://127.0.0.1:${server.address().port}/`,
    close: () => { server.closeAllConnections(); server.close(); },
  };
});
after(() => faulty?.close());

const message = (page) => page.locator('#data-message').textContent();

async function load(page, source) {
  await page.fill('#data-url', source);
  await page.click('#load-data');
}

/** Waits for the data message to match `pattern`; returns the message. */
async function failure(page, pattern, timeout = 60_000) {
  await page.waitForFunction((p) => new RegExp(p).test(document.querySelector('#data-message').textContent), pattern.source, { timeout });
  return message(page);
}

/**
 * Opens the page, waits for the bundled data, runs `body(page)`, then holds that the page
 * still trains and that nothing unexpected reached the console or the network.
 */
async function onLoadedPage(body) {
  const { page, context, problems } = await open(env.browser, faulty.url, { expectFailures: ['faulty/'] });
  await waitForState(page, (s) => s.dataComplete === true, 60_000);
  await body(page);
  await trains(page);
  assert.deepEqual(problems, []);
  await context.close();
}

/** Trains a few steps: the page still works. */
async function trains(page) {
  const before = await page.evaluate(() => window.ferrograd.state.steps ?? 0);
  await page.click('#start');
  await page.waitForFunction((n) => window.ferrograd.state.steps > n + 5, before, { timeout: 60_000 });
  await page.click('#pause');
  await waitForState(page, (s) => s.trainState === 'paused', 10_000);
}

describe('downloads that fail', () => {
  test('a first load missing a file says nothing is loaded, and a folder of Kaggle-named files loads after it', async () => {
    const { page, context, problems } = await open(env.browser, `${faulty.url}?data=faulty/missing-test/`, { expectFailures: ['faulty/', 'kaggle/'] });
    assert.match(await failure(page, /404/, 30_000), /^http:.*\/faulty\/missing-test\/t10k-images-idx3-ubyte\.gz: the server answered 404 Not Found; nor were t10k-images-idx3-ubyte, t10k-images\.idx3-ubyte\.gz, t10k-images\.idx3-ubyte there\. No data is loaded; press Load to try again\.$/);
    assert.equal(await page.locator('#data-text').textContent(), 'no data loaded');
    // The files under 7-Zip's and Kaggle's names (train-images.idx3-ubyte), found in turn.
    await load(page, 'kaggle/');
    await waitForState(page, (s) => s.dataComplete === true, 60_000);
    assert.equal(await message(page), '');
    assert.equal(await page.locator('#data-text').textContent(), '8,000 of 8,000 training and 2,000 of 2,000 test images loaded');
    await trains(page);
    assert.deepEqual(problems, []);
    await context.close();
  });

  test('a broken connection is named as such, and the data loaded before is kept', () => onLoadedPage(async (page) => {
    const loaded = await page.locator('#data-text').textContent();
    await load(page, 'faulty/break/');
    const text = await failure(page, /broke off/);
    assert.match(text, /faulty\/break\/train-images-idx3-ubyte\.gz: the connection broke off after [\d,]+ bytes \(.+\)\. The data loaded before is kept; press Load to try again\.$/);
    assert.doesNotMatch(text, /gzip/);
    assert.equal(await page.locator('#data-text').textContent(), loaded);
  }));

  test('a stalled download shows as loading, then is reported by name, and the page goes on', () => onLoadedPage(async (page) => {
    await load(page, 'faulty/stall/');
    // Pending: the page says a source is loading, and what is in use meanwhile.
    await page.waitForFunction(() => /^loading faulty\/stall\/ · .*meanwhile 8,000 of 8,000 training and 2,000 of 2,000 test images in use$/
      .test(document.querySelector('#data-text').textContent), null, { timeout: 30_000 });
    await screenshot(page, 'download-pending', 'section:has(#data-heading)');
    assert.match(await failure(page, /stalled/, 90_000), /faulty\/stall\/train-images-idx3-ubyte\.gz: the download stalled: no byte arrived for 20 s, after 65,536 bytes\. The data loaded before is kept; press Load to try again\.$/);
    assert.match(await page.locator('#data-text').textContent(), /^8,000 of 8,000 training and 2,000 of 2,000 test images loaded$/);
  }));

  test('images the model cannot take are refused at their header, and the download stops', () => onLoadedPage(async (page) => {
    await load(page, 'faulty/big/');
    assert.match(await failure(page, /100x100/), /faulty\/big\/train-images-idx3-ubyte\.gz: the header declares 100x100 images, but the model takes input \[1, 28, 28\]; choose data or a model that match\. The data loaded before is kept/);
    // The page hung up before the 80 MB the header announces had been sent. How far the
    // server got before it noticed is the loopback's and Chromium's buffering, not the page's.
    assert.equal(await hangsUp('big'), 'hung up', `after ${sent.big} bytes`);
  }));

  test('bytes past the last declared image are refused, and the download stops', () => onLoadedPage(async (page) => {
    await load(page, 'faulty/overflow/');
    assert.match(await failure(page, /unexpected bytes/), /faulty\/overflow\/train-images-idx3-ubyte\.gz: unexpected bytes after the last of the 8000 items the header declares\. The data loaded before is kept/);
    assert.equal(await hangsUp('overflow'), 'hung up', `after ${sent.overflow} bytes`);
  }));
});
