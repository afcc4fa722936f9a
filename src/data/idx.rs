//! An incremental decoder for the IDX format of MNIST, fed byte chunks of any size.
//!
//! An IDX stream is a header, `00 00 TT NN` then `NN` big-endian u32 dimensions, followed by
//! the items: `dims[0]` items of `dims[1] * dims[2] * ...` bytes each. Only unsigned bytes
//! (`TT = 08`) are supported, which is what MNIST and its relatives use.
//!
//! The decoder hands out each item as soon as its last byte arrives and buffers at most one
//! partial item, so its memory follows what has arrived, never what a header claims.

use crate::error::thousands;
use crate::{Error, Result};

/// The largest item accepted, in bytes: far beyond any image a browser model trains on, and
/// small enough that a corrupt header cannot make the decoder reserve absurd memory.
const MAX_ITEM_BYTES: usize = 1 << 24;
/// The most bytes of items one stream may declare: 128 MiB, 170,000 MNIST images. A source's
/// two image streams, and a replacement decoded beside them, then stay within half of the
/// threaded page's 1 GiB of memory. Checked at the header, so that a stream whose header
/// claims more is refused before its bytes pile up.
pub const MAX_STREAM_BYTES: u64 = 1 << 27;
const MAX_DIMS: usize = 4;
const UNSIGNED_BYTE: u8 = 0x08;

/// Decodes one IDX stream.
#[derive(Debug)]
pub struct IdxDecoder {
    name: String,
    /// Header bytes received so far, until the header is complete.
    header: Vec<u8>,
    dims: Option<Vec<usize>>,
    /// Bytes of the item being received.
    partial: Vec<u8>,
    items: usize,
}

impl IdxDecoder {
    /// A decoder whose errors name the stream `name` (a file path or URL).
    pub fn new(name: impl Into<String>) -> Self {
        IdxDecoder { name: name.into(), header: Vec::new(), dims: None, partial: Vec::new(), items: 0 }
    }

    /// The name errors give the stream.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The dimensions from the header, once it has arrived: `[count, rows, cols]` for images,
    /// `[count]` for labels.
    pub fn dims(&self) -> Option<&[usize]> {
        self.dims.as_deref()
    }

    /// The number of items the header declares, once it has arrived.
    pub fn declared(&self) -> Option<usize> {
        self.dims.as_ref().map(|d| d[0])
    }

    /// The bytes in one item, once the header has arrived.
    pub fn item_bytes(&self) -> Option<usize> {
        self.dims.as_ref().map(|d| d[1..].iter().product())
    }

    /// Items completed so far.
    pub fn items(&self) -> usize {
        self.items
    }

    /// Whether every declared item has arrived.
    pub fn is_complete(&self) -> bool {
        self.declared() == Some(self.items)
    }

    /// Decodes `chunk`, appending each item it completes to `out`, and returns how many it
    /// completed. On error, `out` holds exactly the items completed before the bad byte.
    ///
    /// # Errors
    /// [`Error::Idx`] for a wrong magic number, an unsupported data type, zero or impossible
    /// dimensions, more bytes declared than [`MAX_STREAM_BYTES`], or bytes past the last
    /// declared item.
    pub fn feed(&mut self, mut chunk: &[u8], out: &mut Vec<u8>) -> Result<usize> {
        if self.dims.is_none() {
            chunk = self.feed_header(chunk)?;
        }
        let Some(item_bytes) = self.item_bytes() else { return Ok(0) };
        let declared = self.declared().unwrap_or(0);
        let before = self.items;
        if !self.partial.is_empty() {
            let take = (item_bytes - self.partial.len()).min(chunk.len());
            self.partial.extend_from_slice(&chunk[..take]);
            chunk = &chunk[take..];
            if self.partial.len() == item_bytes {
                out.extend_from_slice(&self.partial);
                self.partial.clear();
                self.items += 1;
            }
        }
        let whole = (chunk.len() / item_bytes).min(declared - self.items);
        out.extend_from_slice(&chunk[..whole * item_bytes]);
        self.items += whole;
        chunk = &chunk[whole * item_bytes..];
        if !chunk.is_empty() {
            if self.items == declared {
                return Err(self.error(format!(
                    "unexpected bytes after the last of the {declared} items the header declares"
                )));
            }
            self.partial.extend_from_slice(chunk);
        }
        Ok(self.items - before)
    }

    /// Reads header bytes from `chunk` and returns the rest of it.
    fn feed_header<'c>(&mut self, mut chunk: &'c [u8]) -> Result<&'c [u8]> {
        loop {
            let needed = if self.header.len() < 4 { 4 } else { 4 + 4 * usize::from(self.header[3]) };
            let take = (needed - self.header.len()).min(chunk.len());
            self.header.extend_from_slice(&chunk[..take]);
            chunk = &chunk[take..];
            if self.header.len() < needed {
                return Ok(chunk);
            }
            if needed > 4 {
                break;
            }
            // The magic number is complete; once it checks out, the dimensions follow.
            self.check_magic()?;
        }
        let dims: Vec<usize> = self.header[4..]
            .chunks_exact(4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .collect();
        if dims.contains(&0) {
            return Err(self.error(format!("the header declares a zero dimension: {dims:?}")));
        }
        let item_bytes = dims[1..].iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
        if item_bytes.is_none_or(|n| n > MAX_ITEM_BYTES) {
            return Err(self.error(format!(
                "the header declares items of {:?} bytes each, more than the {MAX_ITEM_BYTES} supported",
                &dims[1..]
            )));
        }
        let total = (dims[0] as u64).checked_mul(item_bytes.unwrap_or_default() as u64);
        if total.is_none_or(|n| n > MAX_STREAM_BYTES) {
            return Err(self.error(format!(
                "the header declares {} items of {} bytes, {} bytes in all; the limit is {} bytes ({} MiB)",
                thousands(dims[0] as u64),
                thousands(item_bytes.unwrap_or_default() as u64),
                total.map_or_else(|| "more than 2^64".to_owned(), thousands),
                thousands(MAX_STREAM_BYTES),
                MAX_STREAM_BYTES >> 20,
            )));
        }
        self.dims = Some(dims);
        Ok(chunk)
    }

    fn check_magic(&self) -> Result<()> {
        let h = &self.header;
        if h[0] != 0 || h[1] != 0 {
            let hint = if h[0] == 0x1f && h[1] == 0x8b { " (it looks gzip-compressed)" } else { "" };
            return Err(self.error(format!(
                "not an IDX stream: magic number {:02x} {:02x} {:02x} {:02x} should start with 00 00{hint}",
                h[0], h[1], h[2], h[3]
            )));
        }
        if h[2] != UNSIGNED_BYTE {
            return Err(self.error(format!(
                "IDX data type 0x{:02x} is not supported; only unsigned bytes (0x08) are",
                h[2]
            )));
        }
        if h[3] == 0 || usize::from(h[3]) > MAX_DIMS {
            return Err(self.error(format!("{} dimensions is impossible; expected 1 to {MAX_DIMS}", h[3])));
        }
        Ok(())
    }

    /// Checks the stream ended where the header said it would.
    ///
    /// # Errors
    /// [`Error::Idx`] when the stream stopped inside the header, inside an item, or before the
    /// declared item count.
    pub fn finish(&self) -> Result<()> {
        let Some(declared) = self.declared() else {
            return Err(
                self.error(format!("the stream ended inside the header, after {} bytes", self.header.len()))
            );
        };
        if self.items < declared {
            let mid = if self.partial.is_empty() {
                String::new()
            } else {
                format!(", in the middle of item {}", self.items)
            };
            return Err(self.error(format!(
                "the stream ended after {} of the {declared} items the header declares{mid}",
                self.items
            )));
        }
        Ok(())
    }

    fn error(&self, reason: String) -> Error {
        Error::Idx { stream: self.name.clone(), reason }
    }
}

/// An IDX stream as bytes: the header for `dims` followed by `data`. Used to write data sets
/// and test files.
pub fn encode(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, UNSIGNED_BYTE, dims.len() as u8];
    for d in dims {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}
