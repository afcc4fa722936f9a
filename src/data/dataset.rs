//! Labelled images and the batches a model trains on.

use ndarray::IxDyn;

use super::{preprocess, IdxDecoder};
use crate::tensor::Tensor;
use crate::{Error, Result};

/// The number of classes: the ten digits.
pub const CLASSES: usize = 10;

/// Greyscale images of one size, each with a label below [`CLASSES`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Dataset {
    images: Vec<u8>,
    labels: Vec<u8>,
    rows: usize,
    cols: usize,
}

impl Dataset {
    /// Images stored row-major, one after another, and their labels.
    ///
    /// # Errors
    /// [`Error::Data`] when the byte count is not one image per label or a label is not a digit.
    pub fn new(images: Vec<u8>, labels: Vec<u8>, rows: usize, cols: usize) -> Result<Self> {
        if rows * cols == 0 || images.len() != labels.len() * rows * cols {
            return Err(Error::Data(format!(
                "{} bytes of {rows}x{cols} images do not match {} labels",
                images.len(),
                labels.len()
            )));
        }
        if let Some(i) = labels.iter().position(|&l| usize::from(l) >= CLASSES) {
            return Err(Error::Data(format!("label {} at index {i} is not a digit 0-9", labels[i])));
        }
        Ok(Dataset { images, labels, rows, cols })
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// `(rows, cols)` of every image.
    pub fn image_size(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    /// The pixels of image `i`, row-major, 0 (background) to 255 (ink).
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.rows * self.cols;
        &self.images[i * n..(i + 1) * n]
    }

    pub fn labels(&self) -> &[u8] {
        &self.labels
    }

    /// The images at `indices` as a `[batch, 1, rows, cols]` tensor scaled to `[0, 1]`, and
    /// their labels.
    ///
    /// # Panics
    /// When an index is out of range.
    #[track_caller]
    pub fn batch(&self, indices: &[usize]) -> (Tensor, Vec<u8>) {
        let mut images = Tensor::zeros(IxDyn(&[indices.len(), 1, self.rows, self.cols]));
        let labels = self.batch_into(indices, &mut images);
        (images, labels)
    }

    /// [`Dataset::batch`] into `images`, which must be `[indices.len(), 1, rows, cols]` and
    /// contiguous (such as [`crate::train::Trainer::batch_tensor`] gives); returns the labels.
    ///
    /// # Panics
    /// When an index is out of range or `images` has another shape.
    #[track_caller]
    pub fn batch_into(&self, indices: &[usize], images: &mut Tensor) -> Vec<u8> {
        assert_eq!(
            images.shape(),
            [indices.len(), 1, self.rows, self.cols],
            "batch_into: the tensor does not fit"
        );
        let out = images.as_slice_mut().expect("batch_into: the tensor must be contiguous");
        for (&i, out) in indices.iter().zip(out.chunks_exact_mut(self.rows * self.cols)) {
            preprocess::scale(self.image(i), out);
        }
        indices.iter().map(|&i| self.labels[i]).collect()
    }

    /// This set without its unreadable images (see [`preprocess::is_readable`]), and how many
    /// were dropped.
    pub fn cleaned(&self) -> (Dataset, usize) {
        let keep: Vec<usize> = (0..self.len()).filter(|&i| preprocess::is_readable(self.image(i))).collect();
        let mut images = Vec::with_capacity(keep.len() * self.rows * self.cols);
        for &i in &keep {
            images.extend_from_slice(self.image(i));
        }
        let labels = keep.iter().map(|&i| self.labels[i]).collect();
        let dropped = self.len() - keep.len();
        (Dataset { images, labels, rows: self.rows, cols: self.cols }, dropped)
    }

    /// Appends one image and its label.
    ///
    /// # Errors
    /// [`Error::Data`] when the image is not `rows x cols` or the label is not a digit.
    pub fn push(&mut self, image: &[u8], label: u8) -> Result<()> {
        if image.len() != self.rows * self.cols {
            return Err(Error::Data(format!(
                "an image of {} pixels does not fit {}x{} images",
                image.len(),
                self.rows,
                self.cols
            )));
        }
        if usize::from(label) >= CLASSES {
            return Err(Error::Data(format!("label {label} is not a digit 0-9")));
        }
        self.images.extend_from_slice(image);
        self.labels.push(label);
        Ok(())
    }

    /// An empty set of `rows x cols` images.
    pub fn empty(rows: usize, cols: usize) -> Self {
        Dataset { images: Vec::new(), labels: Vec::new(), rows, cols }
    }
}

/// Builds a [`Dataset`] from an images stream and a labels stream fed in chunks, in any
/// interleaving; the pairs available so far are `min(images, labels)`.
#[derive(Debug)]
pub struct DatasetBuilder {
    images: IdxDecoder,
    labels: IdxDecoder,
    image_bytes: Vec<u8>,
    label_bytes: Vec<u8>,
}

impl DatasetBuilder {
    /// A builder whose errors name the two streams.
    pub fn new(images_name: impl Into<String>, labels_name: impl Into<String>) -> Self {
        DatasetBuilder {
            images: IdxDecoder::new(images_name),
            labels: IdxDecoder::new(labels_name),
            image_bytes: Vec::new(),
            label_bytes: Vec::new(),
        }
    }

    /// Decodes a chunk of the images stream; returns the images it completed.
    ///
    /// # Errors
    /// As [`IdxDecoder::feed`], and when the stream is not three-dimensional (count, rows,
    /// columns) or declares a count the labels contradict.
    pub fn feed_images(&mut self, chunk: &[u8]) -> Result<usize> {
        let n = self.images.feed(chunk, &mut self.image_bytes)?;
        if let Some(dims) = self.images.dims() {
            if dims.len() != 3 {
                return Err(self.stream_error(
                    true,
                    format!("images need 3 dimensions (count, rows, columns), the header declares {dims:?}"),
                ));
            }
        }
        self.check_counts()?;
        Ok(n)
    }

    /// Decodes a chunk of the labels stream; returns the labels it completed.
    ///
    /// # Errors
    /// As [`IdxDecoder::feed`], and when the stream is not one-dimensional, holds a label above
    /// 9, or declares a count the images contradict.
    pub fn feed_labels(&mut self, chunk: &[u8]) -> Result<usize> {
        let start = self.label_bytes.len();
        let n = self.labels.feed(chunk, &mut self.label_bytes)?;
        if let Some(dims) = self.labels.dims() {
            if dims.len() != 1 {
                return Err(self
                    .stream_error(false, format!("labels need 1 dimension, the header declares {dims:?}")));
            }
        }
        if let Some(offset) = self.label_bytes[start..].iter().position(|&l| usize::from(l) >= CLASSES) {
            let index = start + offset;
            let label = self.label_bytes[index];
            self.label_bytes.truncate(index);
            return Err(self.stream_error(false, format!("label {label} at index {index} is above 9")));
        }
        self.check_counts()?;
        Ok(n)
    }

    fn check_counts(&self) -> Result<()> {
        match (self.images.declared(), self.labels.declared()) {
            (Some(i), Some(l)) if i != l => Err(Error::Data(format!(
                "{} declares {i} images but {} declares {l} labels",
                self.name(true),
                self.name(false)
            ))),
            _ => Ok(()),
        }
    }

    /// Complete (image, label) pairs so far.
    pub fn pairs(&self) -> usize {
        self.images.items().min(self.label_bytes.len())
    }

    /// Bytes of one image and its shape, once the images header has arrived.
    pub fn image_size(&self) -> Option<(usize, usize)> {
        self.images.dims().filter(|d| d.len() == 3).map(|d| (d[1], d[2]))
    }

    /// The name errors give the images stream.
    pub fn images_name(&self) -> &str {
        self.images.name()
    }

    /// The pairs declared by the headers, once either has arrived.
    pub fn declared(&self) -> Option<usize> {
        self.images.declared().or(self.labels.declared())
    }

    /// The pixels of image `i`, which must be below [`DatasetBuilder::pairs`].
    pub fn image(&self, i: usize) -> &[u8] {
        let (rows, cols) = self.image_size().expect("pairs exist only after the images header");
        let n = rows * cols;
        &self.image_bytes[i * n..(i + 1) * n]
    }

    /// The label of pair `i`.
    pub fn label(&self, i: usize) -> u8 {
        self.label_bytes[i]
    }

    /// Whether both streams have delivered every item their headers declare.
    pub fn is_complete(&self) -> bool {
        self.images.is_complete() && self.labels.is_complete()
    }

    /// The pairs from index `from` on, as a data set, leaving the builder as it was. Lets a
    /// trainer take what has arrived while the rest streams in.
    pub fn take_from(&self, from: usize) -> Dataset {
        let Some((rows, cols)) = self.image_size() else { return Dataset::default() };
        let to = self.pairs().max(from);
        let n = rows * cols;
        Dataset {
            images: self.image_bytes[from * n..to * n].to_vec(),
            labels: self.label_bytes[from..to].to_vec(),
            rows,
            cols,
        }
    }

    /// The whole data set, once both streams have ended.
    ///
    /// # Errors
    /// When either stream stopped short of what its header declared.
    pub fn finish(self) -> Result<Dataset> {
        self.check_complete()?;
        let (rows, cols) = self.image_size().expect("finished images have a 3-d header");
        Dataset::new(self.image_bytes, self.label_bytes, rows, cols)
    }

    /// Checks that both streams ended where their headers said.
    ///
    /// # Errors
    /// When either stream stopped short of what its header declared.
    pub fn check_complete(&self) -> Result<()> {
        self.images.finish()?;
        self.labels.finish()?;
        self.check_counts()
    }

    fn name(&self, images: bool) -> &str {
        let decoder = if images { &self.images } else { &self.labels };
        decoder.name()
    }

    fn stream_error(&self, images: bool, reason: String) -> Error {
        Error::Idx { stream: self.name(images).to_owned(), reason }
    }
}
