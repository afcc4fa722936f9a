// Starting one of the wasm builds: `../pkg/` (CPU), `../pkg/threads/`, `../pkg/gpu/`.

/**
 * Imports a build's bindings and instantiates its wasm, which is fetched and compiled while
 * the bindings load rather than after. Where the server does not send wasm as
 * `application/wasm`, the early compile fails and the bindings fetch it again their own way.
 */
export async function startBuild(dir) {
  const url = new URL(`${dir}ferrograd_bg.wasm`, import.meta.url);
  const compiled = WebAssembly.compileStreaming(fetch(url)).catch(() => url);
  const module = await import(`${dir}ferrograd.js`);
  await module.default({ module_or_path: await compiled });
  return module;
}
