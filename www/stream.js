// Byte streams from the network: fetch a URL and hand its bytes, gunzipped when they are
// gzip, to a callback chunk by chunk as they arrive.

const GZIP_MAGIC = [0x1f, 0x8b];

/**
 * Streams `url` into `onChunk(bytes)`, undoing gzip (detected by its magic number, whatever
 * the file is called) with the browser's DecompressionStream. The next chunk waits for the
 * promise `onChunk` returns, if any, so that a consumer not ready yet holds the stream back.
 * `onStart(size)` gets the size the server announces (null when it does not), `onBytes(n)`
 * counts the bytes received from the network, before decompression. Resolves with the total
 * received.
 */
export async function streamUrl(url, { onChunk, onStart, onBytes, signal }) {
  let response;
  try {
    response = await fetch(url, { signal });
  } catch (error) {
    if (signal?.aborted) throw error;
    throw new Error(`${url}: could not be fetched (${error.message})`);
  }
  if (!response.ok) {
    throw new Error(`${url}: the server answered ${response.status} ${response.statusText}`.trim());
  }
  if (!response.body) throw new Error(`${url}: the response has no body`);
  // Only meaningful without Content-Encoding: otherwise it counts compressed transfer bytes.
  const size = Number(response.headers.get('content-length'));
  onStart?.(size > 0 && !response.headers.get('content-encoding') ? size : null);

  const reader = response.body.getReader();
  const first = await reader.read();
  if (first.done) throw new Error(`${url}: the file is empty`);
  onBytes?.(first.value.byteLength);
  const isGzip = first.value[0] === GZIP_MAGIC[0] && first.value[1] === GZIP_MAGIC[1];

  // The first chunk was read to look at the magic number; put it back in front of the rest.
  let received = first.value.byteLength;
  const raw = new ReadableStream({
    start(controller) {
      controller.enqueue(first.value);
    },
    async pull(controller) {
      const { done, value } = await reader.read();
      if (done) {
        controller.close();
      } else {
        received += value.byteLength;
        onBytes?.(value.byteLength);
        controller.enqueue(value);
      }
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
      await onChunk(value);
    }
  } catch (error) {
    if (signal?.aborted) throw error;
    const what = isGzip && error instanceof TypeError ? 'is not valid gzip' : 'broke off';
    throw new Error(`${url}: the download ${what} (${error.message})`);
  }
  return received;
}
