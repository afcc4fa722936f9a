// What this browser keeps (IndexedDB): the training under way, so that a reload carries on
// where it stopped (one record, the file `Session.save()` makes, with when and how far it
// was), and the record of every training run, for the Runs panel.

const DB = 'ferrograd';
const STORE = 'kept';
const KEY = 'training';
const RUNS = 'runs';

function open() {
  return new Promise((resolve, reject) => {
    // Version 2 added the runs; a version-1 database keeps its kept training.
    const request = indexedDB.open(DB, 2);
    request.onupgradeneeded = () => {
      const db = request.result;
      if (!db.objectStoreNames.contains(STORE)) db.createObjectStore(STORE);
      if (!db.objectStoreNames.contains(RUNS)) db.createObjectStore(RUNS, { keyPath: 'id' });
    };
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

async function transact(mode, action, store = STORE) {
  const db = await open();
  try {
    return await new Promise((resolve, reject) => {
      const tx = db.transaction(store, mode);
      const request = action(tx.objectStore(store));
      tx.oncomplete = () => resolve(request.result);
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error ?? new Error('the browser refused to store the training'));
    });
  } finally {
    db.close();
  }
}

/** Keeps `{bytes, steps, epoch, savedAt}`, replacing what was kept. */
export const keep = (record) => transact('readwrite', (store) => store.put(record, KEY));

/** What was kept, or undefined. */
export const kept = () => transact('readonly', (store) => store.get(KEY));

/** Forgets what was kept. */
export const forget = () => transact('readwrite', (store) => store.delete(KEY));

/** Every run recorded, in no particular order. */
export const allRuns = () => transact('readonly', (store) => store.getAll(), RUNS);

/** Records `run` (an object with an `id`), replacing the record of the same id. */
export const putRun = (run) => transact('readwrite', (store) => store.put(run), RUNS);

export const deleteRun = (id) => transact('readwrite', (store) => store.delete(id), RUNS);
