//! Reading the four standard MNIST files from a folder, gzipped or not.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;

use super::{Dataset, DatasetBuilder};
use crate::{Error, Result};

/// The standard names of the (images, labels) files of the training and test sets, without
/// the `.gz` that the compressed copies add.
pub const FILE_NAMES: [(&str, &str); 2] = [
    ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
];

/// A training set and a test set.
#[derive(Debug)]
pub struct Mnist {
    pub train: Dataset,
    pub test: Dataset,
}

/// Reads the four standard files from `dir`: the bundled sample, the original MNIST files or
/// anything else in their format.
///
/// # Errors
/// [`Error::Io`] naming a missing or unreadable file, [`Error::Idx`] naming a file that is not
/// valid IDX, [`Error::Data`] when images and labels disagree.
pub fn load_mnist(dir: &Path) -> Result<Mnist> {
    let [train, test] = FILE_NAMES.map(|(images, labels)| load_pair(dir, images, labels));
    Ok(Mnist { train: train?, test: test? })
}

fn load_pair(dir: &Path, images: &str, labels: &str) -> Result<Dataset> {
    let images = find(dir, images)?;
    let labels = find(dir, labels)?;
    let mut builder = DatasetBuilder::new(images.display().to_string(), labels.display().to_string());
    stream(&images, |chunk| builder.feed_images(chunk).map(drop))?;
    stream(&labels, |chunk| builder.feed_labels(chunk).map(drop))?;
    builder.finish()
}

/// The first of the names the file `name` goes by that exists in `dir`: gzipped or not, and
/// with the dot that 7-Zip and Kaggle's copies put before `idx` (`train-images.idx3-ubyte`),
/// also inside a folder of its own name (as Kaggle's archive unpacks).
fn find(dir: &Path, name: &str) -> Result<PathBuf> {
    let dotted = name.replacen("-idx", ".idx", 1);
    let mut candidates = Vec::new();
    for base in [name, dotted.as_str()] {
        candidates.extend([format!("{base}.gz"), base.to_owned(), format!("{base}/{base}")]);
    }
    if let Some(found) = candidates.iter().map(|c| dir.join(c)).find(|path| path.is_file()) {
        return Ok(found);
    }
    Err(Error::Io {
        path: dir.display().to_string(),
        source: std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("no file named {} is there", candidates.join(", ")),
        ),
    })
}

/// Feeds the file at `path` to `feed` in chunks, undoing gzip when the file starts with its
/// magic number, whatever its name.
fn stream(path: &Path, mut feed: impl FnMut(&[u8]) -> Result<()>) -> Result<()> {
    let io_error = |source| Error::Io { path: path.display().to_string(), source };
    let mut file = BufReader::new(File::open(path).map_err(io_error)?);
    let mut magic = [0u8; 2];
    let peeked = read_up_to(&mut file, &mut magic).map_err(io_error)?;
    let head = &magic[..peeked];
    let mut reader: Box<dyn Read> = if head == [0x1f, 0x8b] {
        Box::new(MultiGzDecoder::new(head.chain(file)))
    } else {
        Box::new(head.chain(file))
    };
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_error(e)),
        };
        feed(&buf[..n])?;
    }
}

fn read_up_to(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_each_name_the_files_go_by_and_lists_them_when_none_is_there() {
        let dir = std::env::temp_dir().join(format!("ferrograd-find-{}", std::process::id()));
        let name = "train-images-idx3-ubyte";
        for file in [
            "train-images.idx3-ubyte",
            "train-images.idx3-ubyte.gz",
            "train-images-idx3-ubyte",
            "train-images-idx3-ubyte/train-images-idx3-ubyte",
        ] {
            std::fs::create_dir_all(dir.join(file).parent().unwrap()).unwrap();
            std::fs::write(dir.join(file), b"").unwrap();
            assert_eq!(find(&dir, name).unwrap(), dir.join(file), "{file}");
            std::fs::remove_file(dir.join(file)).unwrap();
        }
        let err = find(&dir, name).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "{}: no file named train-images-idx3-ubyte.gz, train-images-idx3-ubyte, \
                 train-images-idx3-ubyte/train-images-idx3-ubyte, train-images.idx3-ubyte.gz, \
                 train-images.idx3-ubyte, train-images.idx3-ubyte/train-images.idx3-ubyte is there",
                dir.display()
            )
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
