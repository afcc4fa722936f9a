//! The checkpoint reader on any bytes: a model, a trainer, or an error; never a panic, and
//! nothing allocated for what a file claims but does not hold.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ferrograd::checkpoint::load(data);
    let _ = ferrograd::checkpoint::load_trainer(data);
});
