//! The incremental IDX decoder and the data-set builder on good streams in chunks of every
//! size, and on every malformed stream.

use ferrograd::data::idx::{encode, IdxDecoder, MAX_STREAM_BYTES};
use ferrograd::data::{load_mnist, DatasetBuilder};
use std::path::Path;

/// Deterministic bytes that differ from image to image.
fn pixels(images: usize) -> Vec<u8> {
    (0..images * 784).map(|i| (i * 31 % 251) as u8).collect()
}

/// Feeds `stream` in chunks of `size`, returning the decoded bytes and the count reported
/// after each chunk.
fn decode_in_chunks(stream: &[u8], size: usize) -> (IdxDecoder, Vec<u8>, Vec<usize>) {
    let mut decoder = IdxDecoder::new("test.idx");
    let mut out = Vec::new();
    let counts = stream.chunks(size).map(|chunk| decoder.feed(chunk, &mut out).unwrap()).collect();
    (decoder, out, counts)
}

fn error_of(stream: &[u8]) -> String {
    let mut decoder = IdxDecoder::new("test.idx");
    let mut out = Vec::new();
    match decoder.feed(stream, &mut out) {
        Err(e) => e.to_string(),
        Ok(_) => decoder.finish().unwrap_err().to_string(),
    }
}

#[test]
fn decodes_the_same_items_for_chunks_of_1_7_and_4096_bytes() {
    let data = pixels(5);
    let stream = encode(&[5, 28, 28], &data);
    for size in [1, 7, 4096] {
        let (decoder, out, counts) = decode_in_chunks(&stream, size);
        assert_eq!(out, data, "chunk size {size}");
        assert_eq!(counts.iter().sum::<usize>(), 5, "chunk size {size}");
        assert_eq!(decoder.dims(), Some(&[5, 28, 28][..]));
        assert!(decoder.is_complete());
        decoder.finish().unwrap();
    }
}

#[test]
fn each_item_is_handed_out_as_soon_as_its_last_byte_arrives() {
    let stream = encode(&[3, 2, 2], &pixels(1)[..12]);
    let (_, _, counts) = decode_in_chunks(&stream, 1);
    let header = 4 + 3 * 4;
    let completed_at: Vec<usize> =
        counts.iter().enumerate().filter(|(_, &n)| n == 1).map(|(i, _)| i).collect();
    // Items of 4 bytes end at stream offsets header+3, header+7 and header+11.
    assert_eq!(completed_at, vec![header + 3, header + 7, header + 11]);
}

#[test]
fn labels_decode_as_one_byte_items() {
    let (decoder, out, _) = decode_in_chunks(&encode(&[4], &[3, 1, 4, 1]), 3);
    assert_eq!(out, vec![3, 1, 4, 1]);
    assert_eq!(decoder.item_bytes(), Some(1));
}

#[test]
fn rejects_a_wrong_magic_number() {
    let err = error_of(&[0x1f, 0x8b, 0x08, 0x00, 0, 0, 0, 0]);
    assert_eq!(
        err,
        "test.idx: not an IDX stream: magic number 1f 8b 08 00 should start with 00 00 (it looks gzip-compressed)"
    );
    assert!(error_of(b"<html>not found</html>").contains("not an IDX stream"));
}

#[test]
fn rejects_unsupported_types_and_impossible_dimensions() {
    assert_eq!(
        error_of(&[0, 0, 0x0d, 1, 0, 0, 0, 1]),
        "test.idx: IDX data type 0x0d is not supported; only unsigned bytes (0x08) are"
    );
    assert_eq!(error_of(&[0, 0, 8, 0]), "test.idx: 0 dimensions is impossible; expected 1 to 4");
    assert_eq!(error_of(&[0, 0, 8, 200]), "test.idx: 200 dimensions is impossible; expected 1 to 4");
    assert_eq!(
        error_of(&encode(&[3, 0, 28], &[])),
        "test.idx: the header declares a zero dimension: [3, 0, 28]"
    );
    assert_eq!(error_of(&encode(&[0], &[])), "test.idx: the header declares a zero dimension: [0]");
    assert!(error_of(&encode(&[1, 65536, 65536], &[])).contains("more than the 16777216 supported"));
}

#[test]
fn rejects_a_header_that_claims_more_than_the_stream_holds() {
    assert_eq!(
        error_of(&encode(&[5, 28, 28], &pixels(3))),
        "test.idx: the stream ended after 3 of the 5 items the header declares"
    );
}

#[test]
fn rejects_a_stream_that_stops_mid_image() {
    let stream = encode(&[4, 28, 28], &pixels(4));
    let cut = &stream[..stream.len() - 784 - 300];
    for size in [1, 7, 4096] {
        let (decoder, out, _) = decode_in_chunks(cut, size);
        // Everything complete before the cut is kept.
        assert_eq!(out, pixels(4)[..2 * 784]);
        assert_eq!(
            decoder.finish().unwrap_err().to_string(),
            "test.idx: the stream ended after 2 of the 4 items the header declares, in the middle of item 2"
        );
    }
}

#[test]
fn rejects_a_stream_that_stops_inside_the_header() {
    let stream = encode(&[4, 28, 28], &[]);
    assert_eq!(error_of(&stream[..9]), "test.idx: the stream ended inside the header, after 9 bytes");
    assert_eq!(error_of(&[]), "test.idx: the stream ended inside the header, after 0 bytes");
}

#[test]
fn rejects_bytes_after_the_last_item() {
    let mut stream = encode(&[2], &[1, 2]);
    stream.push(3);
    assert_eq!(
        error_of(&stream),
        "test.idx: unexpected bytes after the last of the 2 items the header declares"
    );
}

#[test]
fn memory_follows_what_arrived_not_what_the_header_claims() {
    // A header claiming 150,000 images (118 MB, under the budget) must not make the decoder
    // reserve for them.
    let mut decoder = IdxDecoder::new("big.idx");
    let mut out = Vec::new();
    let stream = encode(&[150_000, 28, 28], &pixels(2));
    assert_eq!(decoder.feed(&stream, &mut out).unwrap(), 2);
    assert_eq!(out.len(), 2 * 784);
    assert!(out.capacity() < 64 * 784, "reserved {} bytes for 2 images", out.capacity());
}

#[test]
fn a_header_that_declares_more_than_the_budget_is_refused_before_its_items_arrive() {
    assert_eq!(
        error_of(&encode(&[u32::MAX, 28, 28], &[])),
        "test.idx: the header declares 4,294,967,295 items of 784 bytes, 3,367,254,359,280 bytes in all; \
         the limit is 134,217,728 bytes (128 MiB)"
    );
    // Just under the budget passes the header; one more item does not.
    let most = (MAX_STREAM_BYTES / 784) as u32;
    assert!(IdxDecoder::new("x").feed(&encode(&[most, 28, 28], &[]), &mut Vec::new()).is_ok());
    assert!(error_of(&encode(&[most + 1, 28, 28], &[])).contains("the limit is 134,217,728 bytes"));
}

#[test]
fn the_builder_pairs_images_with_labels_and_rejects_labels_above_9() {
    let mut builder = DatasetBuilder::new("images", "labels");
    builder.feed_images(&encode(&[3, 28, 28], &pixels(3))).unwrap();
    assert_eq!(builder.pairs(), 0);
    let err = builder.feed_labels(&encode(&[3], &[4, 12, 5])).unwrap_err().to_string();
    assert_eq!(err, "labels: label 12 at index 1 is above 9");
    // The good label before the bad one is kept.
    assert_eq!(builder.pairs(), 1);
    assert_eq!(builder.take_from(0).labels(), &[4]);
}

#[test]
fn the_builder_rejects_counts_that_disagree_and_wrong_ranks() {
    let mut builder = DatasetBuilder::new("images", "labels");
    builder.feed_images(&encode(&[3, 28, 28], &pixels(3))).unwrap();
    let err = builder.feed_labels(&encode(&[4], &[1, 2, 3, 4])).unwrap_err().to_string();
    assert_eq!(err, "data: images declares 3 images but labels declares 4 labels");

    let mut builder = DatasetBuilder::new("images", "labels");
    let err = builder.feed_images(&encode(&[3], &[1, 2, 3])).unwrap_err().to_string();
    assert_eq!(err, "images: images need 3 dimensions (count, rows, columns), the header declares [3]");
    let err = builder.feed_labels(&encode(&[1, 28, 28], &pixels(1))).unwrap_err().to_string();
    assert_eq!(err, "labels: labels need 1 dimension, the header declares [1, 28, 28]");
}

#[test]
fn the_builder_finishes_into_a_dataset_with_batches_in_0_1() {
    let mut builder = DatasetBuilder::new("images", "labels");
    builder.feed_images(&encode(&[2, 28, 28], &pixels(2))).unwrap();
    builder.feed_labels(&encode(&[2], &[7, 0])).unwrap();
    let data = builder.finish().unwrap();
    assert_eq!((data.len(), data.image_size()), (2, (28, 28)));
    let (images, labels) = data.batch(&[1, 0]);
    assert_eq!(images.shape(), &[2, 1, 28, 28]);
    assert_eq!(labels, vec![0, 7]);
    assert_eq!(images[[1, 0, 0, 1]], f32::from(pixels(1)[1]) / 255.0);
}

fn write_split(dir: &std::path::Path, gzip: bool, train: usize, test: usize) {
    use std::io::Write;
    for (n, (images, labels)) in [train, test].into_iter().zip(ferrograd::data::FILE_NAMES) {
        let label_bytes: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
        for (name, bytes) in
            [(images, encode(&[n as u32, 28, 28], &pixels(n))), (labels, encode(&[n as u32], &label_bytes))]
        {
            if gzip {
                let file = std::fs::File::create(dir.join(format!("{name}.gz"))).unwrap();
                let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
                gz.write_all(&bytes).unwrap();
                gz.finish().unwrap();
            } else {
                std::fs::write(dir.join(name), bytes).unwrap();
            }
        }
    }
}

#[test]
fn loads_a_folder_of_gzipped_or_plain_files() {
    for gzip in [true, false] {
        let dir = tempdir(&format!("load-{gzip}"));
        write_split(&dir, gzip, 12, 5);
        let mnist = load_mnist(&dir).unwrap();
        assert_eq!((mnist.train.len(), mnist.test.len()), (12, 5));
        assert_eq!(mnist.train.image(11), &pixels(12)[11 * 784..]);
    }
}

#[test]
fn loading_names_the_missing_or_broken_file() {
    let dir = tempdir("missing");
    let err = load_mnist(&dir).unwrap_err().to_string();
    assert!(
        err.contains("no file named train-images-idx3-ubyte.gz, train-images-idx3-ubyte, ")
            && err.contains(
                ", train-images.idx3-ubyte, train-images.idx3-ubyte/train-images.idx3-ubyte is there"
            ),
        "{err}"
    );

    write_split(&dir, false, 3, 2);
    let labels = dir.join("t10k-labels-idx1-ubyte");
    std::fs::write(&labels, b"\x1f\x8b\x08\x00garbage").unwrap();
    let err = load_mnist(&dir).unwrap_err().to_string();
    assert!(err.starts_with(&labels.display().to_string()), "{err}");
}

/// A fresh folder for this test process, removed with what it holds when dropped.
struct TempDir(std::path::PathBuf);

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempdir(name: &str) -> TempDir {
    let dir = std::env::temp_dir().join(format!("ferrograd-idx-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    TempDir(dir)
}
