//! The model spec reader on any text, and the model built from every spec it accepts: errors,
//! never a panic, and no model past the parameter budget.

#![no_main]

use ferrograd::nn::{Model, ModelSpec};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(spec) = ModelSpec::from_json(text) else { return };
    let count = spec.parameter_count().expect("an accepted spec counts its parameters");
    assert!(count <= ferrograd::nn::MAX_PARAMETERS);
    // Building initialises every parameter: above a million, an input takes long enough to
    // slow the run without finding more.
    if count > 1_000_000 {
        return;
    }
    let model = Model::new(spec, 0).expect("an accepted spec builds");
    let built: usize = model.params().iter().map(|p| p.value.len()).sum();
    assert_eq!(built as u64, count);
});
