// Starting one of the wasm builds: `../pkg/` (CPU), `../pkg/threads/`, `../pkg/gpu/`,
// `../pkg/tools/` (ONNX export, sweep planning).

/**
 * Imports a build's bindings (a fresh copy of them for `instance` > 0) and instantiates its wasm, which is fetched and compiled while
 * the bindings load rather than after. Where the server does not send wasm as
 * `application/wasm`, the early compile fails and the bindings fetch it again their own way.
 */
export async function startBuild(dir, instance = 0) {
  const url = new URL(`${dir}ferrograd_bg.wasm`, import.meta.url);
  const compiled = WebAssembly.compileStreaming(fetch(url)).catch(() => url);
  // The bindings hold their instance: a fresh one needs a fresh copy, at another URL.
  const module = await import(`${dir}ferrograd.js${instance ? `?instance=${instance}` : ''}`);
  await module.default({ module_or_path: await compiled });
  return module;
}
