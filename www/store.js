// The training kept in this browser (IndexedDB), so that a reload carries on where training
// stopped: one record, the file `Session.save()` makes, with when and how far it was.

const DB = 'ferrograd';
const STORE = 'kept';
const KEY = 'training';

function open() {
  return new Promise((resolve, reject) => {
    const request = indexedDB.open(DB, 1);
    request.onupgradeneeded = () => request.result.createObjectStore(STORE);
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

async function transact(mode, action) {
  const db = await open();
  try {
    return await new Promise((resolve, reject) => {
      const tx = db.transaction(STORE, mode);
      const request = action(tx.objectStore(STORE));
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
