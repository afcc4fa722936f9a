// Byte streams from the network: fetch a URL and hand its bytes, gunzipped when they are
// gzip, to a callback chunk by chunk as they arrive.

const GZIP_MAGIC = [0x1f, 0x8b];

/** Seconds without a byte after which a download counts as stalled. */
export const STALL_SECONDS = 20;

/**
 * Streams the first of `urls` that the server has (the next is tried when one is missing or
 * refused) into `onChunk(bytes)`, undoing gzip (detected by its magic number, whatever the
 * file is called) with the browser's DecompressionStream. The next chunk waits for the
 * promise `onChunk` returns, if any, so that a consumer not ready yet holds the stream back.
 * `onStart(size, url)` gets the size the server announces (null when it does not) and the URL
 * that answered, `onBytes(n)` counts the bytes received from the network, before
 * decompression. Resolves with the total received. Rejects with a message naming the URL and
 * what went wrong: no answer, an error status, no byte for STALL_SECONDS, a connection that
 * broke, bytes that are not gzip.
 */
export async function streamUrl(urls, { onChunk, onStart, onBytes, signal }) {
  let url = urls[0];
  // Aborted by the caller's signal, or by the watchdog when the server goes quiet.
  const controller = new AbortController();
  const stop = () => controller.abort();
  if (signal?.aborted) stop();
  signal?.addEventListener('abort', stop);
  let received = 0;
  let stalled = false;
  // Whether the consumer holds the stream back: its own time is not the server's silence.
  let consuming = false;
  let timer;
  const watch = () => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      if (consuming) {
        watch();
      } else {
        stalled = true;
        controller.abort();
      }
    }, STALL_SECONDS * 1000);
  };
  const fail = (what, error) => {
    if (signal?.aborted) return error;
    if (stalled) {
      const after = received ? `after ${received.toLocaleString('en')} bytes` : 'before the first byte';
      return new Error(`${url}: the download stalled: no byte arrived for ${STALL_SECONDS} s, ${after}`);
    }
    return new Error(`${url}: ${what} (${error.message})`);
  };
  watch();
  try {
    // The first candidate that answers; a missing file (404, 410, or 403 as S3 answers for a
    // key it will not list) or a refused request moves on to the next, and the first failure
    // is the one reported, with the names also tried.
    let response = null;
    let failure = null;
    for (const candidate of urls) {
      try {
        const answer = await fetch(candidate, { signal: controller.signal });
        if (answer.ok || ![403, 404, 410].includes(answer.status)) {
          [url, response] = [candidate, answer];
          break;
        }
        answer.body?.cancel();
        failure ??= new Error(`${candidate}: the server answered ${answer.status} ${answer.statusText}`.trim());
      } catch (error) {
        if (controller.signal.aborted) throw fail('could not be fetched', error);
        failure ??= fail('could not be fetched', error);
      }
    }
    if (!response) {
      const others = urls.slice(1).map((u) => u.slice(u.lastIndexOf('/') + 1));
      if (others.length) failure.message += `; nor were ${others.join(', ')} there`;
      throw failure;
    }
    if (!response.ok) {
      throw new Error(`${url}: the server answered ${response.status} ${response.statusText}`.trim());
    }
    if (!response.body) throw new Error(`${url}: the response has no body`);
    // Only meaningful without Content-Encoding: otherwise it counts compressed transfer bytes.
    const size = Number(response.headers.get('content-length'));
    onStart?.(size > 0 && !response.headers.get('content-encoding') ? size : null, url);

    const reader = response.body.getReader();
    // Reads the network, counting and watching; a failure here is the connection's.
    let broken = null;
    const read = async () => {
      try {
        const chunk = await reader.read();
        if (!chunk.done) {
          watch();
          received += chunk.value.byteLength;
          onBytes?.(chunk.value.byteLength);
        }
        return chunk;
      } catch (error) {
        broken = error;
        throw error;
      }
    };
    const connection = (error) => fail(`the connection broke off after ${received.toLocaleString('en')} bytes`, error);
    let first;
    try {
      first = await read();
    } catch (error) {
      throw connection(error);
    }
    if (first.done) throw new Error(`${url}: the file is empty`);
    const isGzip = first.value[0] === GZIP_MAGIC[0] && first.value[1] === GZIP_MAGIC[1];

    // The first chunk was read to look at the magic number; put it back in front of the rest.
    const raw = new ReadableStream({
      start(c) {
        c.enqueue(first.value);
      },
      async pull(c) {
        const { done, value } = await read();
        if (done) c.close();
        else c.enqueue(value);
      },
      cancel(reason) {
        return reader.cancel(reason);
      },
    });
    const bytes = isGzip ? raw.pipeThrough(new DecompressionStream('gzip')) : raw;
    const decoded = bytes.getReader();
    try {
      for (;;) {
        const { done, value } = await decoded.read();
        if (done) break;
        consuming = true;
        await onChunk(value);
        consuming = false;
      }
    } catch (error) {
      if (broken || stalled) throw connection(broken ?? error);
      // onChunk's errors (the bytes' content) pass through; the rest is the gzip layer's.
      if (!(error instanceof TypeError)) throw error;
      throw fail(isGzip ? 'is not valid gzip' : 'could not be read', error);
    }
    return received;
  } finally {
    clearTimeout(timer);
    signal?.removeEventListener('abort', stop);
    // A failure leaves the response unread: hang up rather than let it download on.
    controller.abort();
  }
}
