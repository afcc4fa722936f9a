//! Sets `cfg(gpu)` where the WebGPU backend is compiled in: the `webgpu` feature, in native
//! builds (the browser build keeps to the CPU until the page loads a GPU module of its own).

fn main() {
    println!("cargo::rustc-check-cfg=cfg(gpu)");
    let wasm = std::env::var("CARGO_CFG_TARGET_ARCH").is_ok_and(|arch| arch == "wasm32");
    if std::env::var_os("CARGO_FEATURE_WEBGPU").is_some() && !wasm {
        println!("cargo::rustc-cfg=gpu");
    }
}
