//! The GPU kernels in headless Chromium's WebGPU (SwiftShader: `webdriver.json` starts Chromium
//! with its adapter), against the CPU backend compiled to wasm: the same ops and tolerances as
//! `tests/gpu.rs` runs natively on Vulkan, on both matmul kernels. Without an adapter this
//! fails, saying so.
#![cfg(all(target_arch = "wasm32", feature = "webgpu"))]

mod common;

use common::gpu_cases::{cases, compare};
use ferrograd::backend::gpu::Gpu;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

#[wasm_bindgen_test]
async fn every_op_matches_the_cpu_in_webgpu() {
    let gpu = Gpu::new().await.unwrap_or_else(|e| {
        panic!("{e}: this test needs WebGPU; webdriver.json starts Chromium with SwiftShader's adapter")
    });
    // As the adapter chooses (SwiftShader: every product on matmul.wgsl), then with the wide
    // products on matmul_tiled.wgsl.
    let mut failures = Vec::new();
    for gpu in [gpu.clone(), gpu.with_tiled_products(true)] {
        for case in &cases() {
            if let Err(failure) = compare(&gpu, case).await {
                failures.push(failure);
            }
        }
    }
    assert!(failures.is_empty(), "{} ops differ:\n{}", failures.len(), failures.join("\n"));
}
