//! The IDX decoder and the data-set builder fed in chunks of every size, as the page feeds
//! what the network delivers: the first byte picks the chunk size, the second which stream.
//! Any bytes must give items or an error, never a panic or an allocation past the budget.

#![no_main]

use ferrograd::data::DatasetBuilder;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [size, which, stream @ ..] = data else { return };
    let size = usize::from(*size).max(1);
    let mut builder = DatasetBuilder::new("images", "labels");
    for chunk in stream.chunks(size) {
        let fed = if which & 1 == 0 { builder.feed_images(chunk) } else { builder.feed_labels(chunk) };
        if fed.is_err() {
            return;
        }
    }
    let _ = builder.check_complete();
});
