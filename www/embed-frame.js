// embed.html: gives the frame's <ferrograd-playground> the attributes in the URL hash, then
// loads the element. A classic script rather than a module, so that it still runs in a frame
// sandboxed without allow-same-origin, where module scripts (fetched with CORS from an opaque
// origin) do not load: there it says what the sandbox needs rather than leaving the frame blank.

(() => {
  const element = document.querySelector('ferrograd-playground');
  for (const [name, value] of new URLSearchParams(location.hash.slice(1))) element.setAttribute(name, value);

  /** Shows `message` in place of the element that could not start, and in its `state.error`. */
  const fail = (message) => {
    element.state = { ready: false, configured: false, trainState: 'idle', steps: 0, dataComplete: false, testAccuracy: null, error: message };
    element.querySelector('.fallback').textContent = message;
    element.classList.add('failed');
  };

  // An opaque origin: the sandbox attribute lacks allow-same-origin. The element's worker could
  // not load from here even if its modules did.
  if (self.origin === 'null') {
    fail('The ferrograd trainer cannot run in this frame: it is sandboxed without an origin of its own, '
      + 'where the browser lets it start no worker. Add allow-same-origin to the iframe\'s sandbox '
      + '(sandbox="allow-scripts allow-same-origin").');
    return;
  }
  import(new URL('embed.js', document.currentScript.src).href).catch((error) => {
    fail(`The ferrograd trainer could not load: ${error.message}`);
  });
})();
