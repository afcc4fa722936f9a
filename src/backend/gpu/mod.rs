//! The WebGPU backend: the WGSL kernels in `kernels/`, run through `wgpu` (the browser's
//! WebGPU in wasm, Vulkan natively), checked against the CPU backend.
//!
//! Every kernel takes its sizes in a small storage buffer of `u32` words (`p` in the WGSL;
//! floats as their bits) at binding 0 and its operands at bindings 1 and up. A [`Dispatch`]
//! is one kernel bound to its buffers with its sizes, built once and run as often as wanted,
//! so that a training step (compiled from the tape in [`crate::gpu_step`], which sits above
//! autograd) allocates nothing. What a dispatch computes, as against how much (which
//! activation, whether it adds to its output), is a WGSL `override` constant instead, fixed
//! when its pipeline is compiled (a [`Variant`]).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use wgpu::util::DeviceExt;

use crate::backend::cpu::Activation;
use crate::{Error, Result};

/// The kernels, one per WGSL file, each with one entry point `main`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kernel {
    MatMul,
    MatMulTiled,
    Binary,
    BinaryGrad,
    Unary,
    UnaryGrad,
    Copy,
    Reduce,
    ReduceGrad,
    SoftmaxCrossEntropy,
    Im2col,
    Col2im,
    Pool,
    PoolGrad,
    Adam,
    Sgd,
    SumSquares,
    Softmax,
    EpilogueGrad,
    RecurrentCell,
    RecurrentCellGrad,
    LayerNorm,
    LayerNormGrad,
    BatchNorm,
    BatchNormGrad,
    RunningAverage,
}

impl Kernel {
    pub const ALL: [Kernel; 26] = [
        Kernel::MatMul,
        Kernel::MatMulTiled,
        Kernel::Binary,
        Kernel::BinaryGrad,
        Kernel::Unary,
        Kernel::UnaryGrad,
        Kernel::Copy,
        Kernel::Reduce,
        Kernel::ReduceGrad,
        Kernel::SoftmaxCrossEntropy,
        Kernel::Im2col,
        Kernel::Col2im,
        Kernel::Pool,
        Kernel::PoolGrad,
        Kernel::Adam,
        Kernel::Sgd,
        Kernel::SumSquares,
        Kernel::Softmax,
        Kernel::EpilogueGrad,
        Kernel::RecurrentCell,
        Kernel::RecurrentCellGrad,
        Kernel::LayerNorm,
        Kernel::LayerNormGrad,
        Kernel::BatchNorm,
        Kernel::BatchNormGrad,
        Kernel::RunningAverage,
    ];

    /// The kernel's file name in `kernels/` and its WGSL source: `common.wgsl` (the sizes'
    /// binding and the one-dimensional index every kernel shares), then the file's own.
    pub fn source(self) -> (&'static str, &'static str) {
        macro_rules! wgsl {
            ($file:literal) => {
                (
                    $file,
                    concat!(include_str!("kernels/common.wgsl"), include_str!(concat!("kernels/", $file))),
                )
            };
            // WGSL has no includes: shared functions are appended to the file's own source.
            ($file:literal $(+ $shared:literal)+) => {
                (
                    $file,
                    concat!(
                        include_str!("kernels/common.wgsl"),
                        include_str!(concat!("kernels/", $file)),
                        $(include_str!(concat!("kernels/", $shared))),+
                    ),
                )
            };
        }
        match self {
            Kernel::MatMul => wgsl!("matmul.wgsl" + "product.wgsl" + "activation.wgsl"),
            Kernel::MatMulTiled => wgsl!("matmul_tiled.wgsl" + "product.wgsl" + "activation.wgsl"),
            Kernel::Binary => wgsl!("binary.wgsl"),
            Kernel::BinaryGrad => wgsl!("binary_grad.wgsl"),
            Kernel::Unary => wgsl!("unary.wgsl" + "activation.wgsl"),
            Kernel::UnaryGrad => wgsl!("unary_grad.wgsl" + "activation.wgsl"),
            Kernel::Copy => wgsl!("copy.wgsl"),
            Kernel::Reduce => wgsl!("reduce.wgsl"),
            Kernel::ReduceGrad => wgsl!("reduce_grad.wgsl"),
            Kernel::SoftmaxCrossEntropy => wgsl!("softmax_cross_entropy.wgsl"),
            Kernel::Im2col => wgsl!("im2col.wgsl"),
            Kernel::Col2im => wgsl!("col2im.wgsl"),
            Kernel::Pool => wgsl!("pool.wgsl"),
            Kernel::PoolGrad => wgsl!("pool_grad.wgsl" + "pool_gather.wgsl"),
            Kernel::Adam => wgsl!("adam.wgsl" + "clip.wgsl"),
            Kernel::Sgd => wgsl!("sgd.wgsl" + "clip.wgsl"),
            Kernel::SumSquares => wgsl!("sum_squares.wgsl"),
            Kernel::Softmax => wgsl!("softmax.wgsl"),
            Kernel::EpilogueGrad => wgsl!("epilogue_grad.wgsl" + "activation.wgsl" + "pool_gather.wgsl"),
            Kernel::RecurrentCell => wgsl!("recurrent_cell.wgsl" + "cell.wgsl" + "activation.wgsl"),
            Kernel::RecurrentCellGrad => wgsl!("recurrent_cell_grad.wgsl" + "cell.wgsl" + "activation.wgsl"),
            Kernel::LayerNorm => wgsl!("layer_norm.wgsl"),
            Kernel::LayerNormGrad => wgsl!("layer_norm_grad.wgsl"),
            Kernel::BatchNorm => wgsl!("batch_norm.wgsl" + "channel.wgsl"),
            Kernel::BatchNormGrad => wgsl!("batch_norm_grad.wgsl" + "channel.wgsl"),
            Kernel::RunningAverage => wgsl!("running_average.wgsl"),
        }
    }
}

/// A kernel compiled for given values of its `override` constants (by name): the choices a
/// dispatch makes once, such as which activation it applies or whether it adds to its output.
/// Read from `p` instead, they would cost a software adapter (SwiftShader) on every element,
/// as it runs every branch of a kernel under masks. Constants left out keep their WGSL
/// defaults.
#[derive(Clone, Copy, Debug)]
pub struct Variant<'a> {
    pub kernel: Kernel,
    pub constants: &'a [(&'static str, u32)],
}

impl Kernel {
    /// This kernel compiled with `constants`.
    pub fn with<'a>(self, constants: &'a [(&'static str, u32)]) -> Variant<'a> {
        Variant { kernel: self, constants }
    }
}

impl From<Kernel> for Variant<'static> {
    fn from(kernel: Kernel) -> Self {
        Variant { kernel, constants: &[] }
    }
}

/// Invocations per workgroup of the one-dimensional kernels (their `@workgroup_size`).
const GROUP: u32 = 64;
/// The most workgroups along one dimension of a dispatch.
const MAX_GROUPS: u32 = 65_535;

/// A matrix product `c [m, n] (+)= a [m, k] · b [k, n]`, or a stack of `batch` of them, each
/// operand read through (row, column, matrix) strides, so that transposed operands need no
/// copy.
#[derive(Clone, Copy, Debug)]
pub struct Product {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub batch: usize,
    pub a: [usize; 3],
    pub b: [usize; 3],
    pub accumulate: bool,
}

impl Product {
    /// One product of `(m, n, k)`, its operands read through (row, column) strides.
    pub fn single(
        (m, n, k): (usize, usize, usize),
        a: (usize, usize),
        b: (usize, usize),
        accumulate: bool,
    ) -> Product {
        Product { m, n, k, batch: 1, a: [a.0, a.1, 0], b: [b.0, b.1, 0], accumulate }
    }
}

/// What matmul.wgsl applies to a product as it writes it: a layer's bias and activation, so
/// that the layer's forward pass is one dispatch (only for products in one piece).
#[derive(Clone, Copy, Default)]
pub struct Epilogue<'a> {
    /// The bias, one per column of the product or one per row.
    pub bias: Option<(&'a Buffer, BiasAlong)>,
    pub activation: Option<Activation>,
    /// Where to keep the product plus bias, before the activation (for the activations whose
    /// derivative needs it: see [`Epilogue::needs_pre`]).
    pub pre: Option<&'a Buffer>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BiasAlong {
    /// One per column (a dense layer's `[rows, units]`).
    Columns,
    /// One per row (a convolution's `[filters, positions]`).
    Rows,
}

impl Epilogue<'_> {
    /// Whether the derivative of `activation` needs its input, not only its output (relu,
    /// sigmoid and tanh have theirs from the output).
    pub fn needs_pre(activation: Activation) -> bool {
        matches!(activation, Activation::LeakyRelu { .. } | Activation::Gelu)
    }
}

/// activation.wgsl's code for "no activation".
pub const NO_ACTIVATION: u32 = 255;

/// activation.wgsl's code for x^k (an op of its own, not a layer's activation).
pub const POW: u32 = 4;

/// activation.wgsl's function code and parameter for an activation.
pub fn activation_code(act: Activation) -> (u32, f32) {
    match act {
        Activation::Relu => (0, 0.0),
        Activation::LeakyRelu { alpha } => (1, alpha),
        Activation::Sigmoid => (2, 0.0),
        Activation::Tanh => (3, 0.0),
        Activation::Gelu => (5, 0.0),
    }
}

/// Products with at least this many rows and columns run on matmul_tiled.wgsl where the
/// adapter takes it (see [`Gpu::with_tiled_products`]), its workgroups covering 64 x 64 of the
/// output through workgroup memory; smaller ones on matmul.wgsl, whose invocations past a thin
/// product's edge stop at once.
const TILED_FROM: usize = 64;

/// One dispatch of matmul.wgsl over k in `splits` chunks of `chunk` (one chunk: the whole
/// product, into `c`, through `epilogue`; more: each chunk's partial product into its own
/// [m, n] slice of `c`).
pub fn product_dispatch(
    gpu: &Gpu,
    Product { m, n, k, batch, a: sa, b: sb, accumulate }: Product,
    (splits, chunk): (usize, usize),
    [a, b, c]: [&Buffer; 3],
    epilogue: &Epilogue,
) -> Dispatch {
    debug_assert!(splits == 1 || (epilogue.bias.is_none() && epilogue.activation.is_none()));
    let bias_along = match epilogue.bias {
        None => 0,
        Some((_, BiasAlong::Columns)) => 1,
        Some((_, BiasAlong::Rows)) => 2,
    };
    let (code, param) = epilogue.activation.map_or((NO_ACTIVATION, 0.0), activation_code);
    let sizes = [m, n, k, sa[0], sa[1], sb[0], sb[1], chunk, splits, sa[2], sb[2]];
    let params: Vec<u32> = sizes.map(|v| v as u32).into_iter().chain([param.to_bits()]).collect();
    let constants = [
        ("BIAS", bias_along),
        ("ACTIVATION", code),
        ("KEEP_PRE", u32::from(epilogue.pre.is_some())),
        ("ACCUMULATE", u32::from(accumulate)),
    ];
    // Bindings cannot be left out: what the epilogue does not use is bound to a spare element.
    let (spare_bias, spare_pre) = (gpu.zeros(1), gpu.zeros(1));
    let bias = epilogue.bias.map_or(&spare_bias, |(bias, _)| bias);
    let pre = epilogue.pre.unwrap_or(&spare_pre);
    let tiled = gpu.tiled_products && m.min(n) >= TILED_FROM;
    let kernel = if tiled { Kernel::MatMulTiled } else { Kernel::MatMul };
    // Either kernel's workgroup covers 64 x 64 of the output.
    let groups = (n.div_ceil(64) as u32, m.div_ceil(64) as u32, (batch * splits) as u32);
    gpu.dispatch_groups(kernel.with(&constants), &params, &[a, b, c, bias, pre], groups)
}

/// A device, its queue, every kernel's WGSL and the pipelines compiled from it so far. Clones
/// share them.
#[derive(Clone)]
pub struct Gpu {
    device: wgpu::Device,
    queue: wgpu::Queue,
    /// Every kernel's compiled WGSL, in [`Kernel::ALL`]'s order.
    modules: Arc<Vec<wgpu::ShaderModule>>,
    /// The pipelines compiled so far: each on its first use, as a model needs only a few of
    /// them, and a software adapter takes about 45 ms to compile one (SwiftShader: 1.1 s for
    /// every kernel's defaults, which the first step would wait for).
    pipelines: Arc<Mutex<HashMap<PipelineKey, wgpu::ComputePipeline>>>,
    adapter: String,
    software: bool,
    /// Whether wide products run on matmul_tiled.wgsl (see [`Gpu::with_tiled_products`]).
    tiled_products: bool,
    /// Buffers created so far, to show that training allocates nothing per step.
    created: Arc<AtomicUsize>,
    /// The first error the device reported on its own (out of memory, validation, loss),
    /// turned into an [`Error`] by [`Gpu::check`] instead of wgpu's default panic.
    failure: Arc<Mutex<Option<String>>>,
}

/// What a pipeline is compiled for: a kernel and the values of its override constants.
type PipelineKey = (Kernel, Vec<(&'static str, u32)>);

/// One kernel bound to its buffers and sizes, ready to run any number of times.
pub struct Dispatch {
    pipeline: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    groups: (u32, u32, u32),
}

/// A buffer of `f32` (or `u32`) elements on the GPU, with its element count: an allocation of
/// its own, or one part of a packed allocation ([`Gpu::zeros_packed`]).
pub struct Buffer {
    /// The allocation (wgpu's handles share it).
    raw: wgpu::Buffer,
    /// Where this buffer starts in it, in bytes: a multiple of the device's storage binding
    /// alignment.
    offset: u64,
    len: usize,
}

impl Buffer {
    pub fn len(&self) -> usize {
        self.len
    }

    /// The buffer's bytes (a zero-length buffer still takes one element, as bindings cannot
    /// be empty).
    fn size(&self) -> u64 {
        4 * self.len.max(1) as u64
    }

    fn binding(&self) -> wgpu::BindingResource<'_> {
        wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: &self.raw,
            offset: self.offset,
            size: std::num::NonZeroU64::new(self.size()),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Gpu {
    /// The first adapter wgpu finds (a hardware GPU before a software one), with every kernel's
    /// WGSL checked and compiled into a shader module; each pipeline is compiled on its first
    /// use.
    ///
    /// # Errors
    /// [`Error::Gpu`] when there is no adapter or device, saying which, or when the device
    /// rejects a kernel.
    pub async fn new() -> Result<Gpu> {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
            backends: wgpu::Backends::VULKAN | wgpu::Backends::BROWSER_WEBGPU,
            ..wgpu::InstanceDescriptor::new_without_display_handle()
        });
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                ..Default::default()
            })
            .await
            .map_err(|e| gpu_error("no WebGPU/Vulkan adapter", e))?;
        let info = adapter.get_info();
        // Browsers keep the adapter's name to themselves.
        let name = if info.name.is_empty() { "unnamed adapter" } else { info.name.as_str() };
        let adapter_name = format!("{name} ({:?}, {:?})", info.device_type, info.backend);
        // The adapter's own storage limits: convolution's im2col matrices outgrow the defaults.
        let limits = adapter.limits();
        let required_limits = wgpu::Limits {
            max_storage_buffer_binding_size: limits.max_storage_buffer_binding_size,
            max_buffer_size: limits.max_buffer_size,
            max_storage_buffers_per_shader_stage: 8,
            ..wgpu::Limits::downlevel_defaults()
        };
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("ferrograd"),
                required_limits,
                ..Default::default()
            })
            .await
            .map_err(|e| gpu_error(&format!("{adapter_name}: no device"), e))?;
        let failure = Arc::new(Mutex::new(None));
        let record = |failure: &Arc<Mutex<Option<String>>>, message: String| {
            if let Ok(mut slot) = failure.lock() {
                slot.get_or_insert(message);
            }
        };
        let on_error = failure.clone();
        device.on_uncaptured_error(Arc::new(move |e| record(&on_error, e.to_string())));
        let on_loss = failure.clone();
        device.set_device_lost_callback(move |reason, message| {
            record(&on_loss, format!("the device was lost ({reason:?}): {message}"));
        });
        let modules = Kernel::ALL
            .iter()
            .map(|kernel| {
                let (file, source) = kernel.source();
                device.create_shader_module(wgpu::ShaderModuleDescriptor {
                    label: Some(file),
                    source: wgpu::ShaderSource::Wgsl(Cow::Borrowed(source)),
                })
            })
            .collect();
        let software = info.device_type == wgpu::DeviceType::Cpu;
        let created = Arc::new(AtomicUsize::new(0));
        let tiled_products = !software;
        let gpu = Gpu {
            device,
            queue,
            modules: Arc::new(modules),
            pipelines: Arc::default(),
            adapter: adapter_name,
            software,
            tiled_products,
            created,
            failure,
        };
        gpu.check()?;
        Ok(gpu)
    }

    /// [`Gpu::new`], waiting for it.
    ///
    /// # Errors
    /// As [`Gpu::new`].
    #[cfg(not(target_arch = "wasm32"))]
    pub fn blocking() -> Result<Gpu> {
        pollster::block_on(Self::new())
    }

    /// The first error the device has reported, if any: after one, nothing it computed can be
    /// trusted.
    ///
    /// # Errors
    /// [`Error::Gpu`] with the device's message.
    pub fn check(&self) -> Result<()> {
        match self.failure.lock().ok().and_then(|slot| slot.clone()) {
            Some(message) => Err(Error::Gpu(format!("{}: {message}", self.adapter))),
            None => Ok(()),
        }
    }

    /// Destroys the device: every later use fails as after a lost GPU. For testing the
    /// fallback to the CPU.
    pub fn destroy(&self) {
        self.device.destroy();
    }

    /// Whether the adapter is a CPU implementation (lavapipe, SwiftShader): correct, but slower
    /// than the CPU backend.
    pub fn is_software(&self) -> bool {
        self.software
    }

    /// This GPU with products of at least 64 rows and columns on matmul_tiled.wgsl (`true`)
    /// or all on matmul.wgsl. The default is the tiled kernel on a hardware adapter, whose
    /// workgroup memory saves it most of its reads, and the plain one on a software adapter,
    /// where the tiled kernel's barriers made training half as fast (SwiftShader in Chromium:
    /// the MLP at 896 samples/s against 1,148, a 256 product at 0.4 GFLOP/s against 0.8).
    /// Either kernel runs on any adapter, so that the tests check both.
    pub fn with_tiled_products(mut self, on: bool) -> Gpu {
        self.tiled_products = on;
        self
    }

    /// The adapter's name, type and API, for the user to see which GPU runs.
    pub fn adapter(&self) -> &str {
        &self.adapter
    }

    /// How many buffers (data, parameters and readbacks) this device has created: flat while
    /// training runs, since every step reuses the buffers of its plan.
    pub fn buffers_created(&self) -> usize {
        self.created.load(Ordering::Relaxed)
    }

    /// A zeroed buffer of `len` elements.
    pub fn zeros(&self, len: usize) -> Buffer {
        self.created.fetch_add(1, Ordering::Relaxed);
        let raw = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            // Bindings cannot be empty: a zero-length buffer still gets one element.
            size: 4 * len.max(1) as u64,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Buffer { raw, offset: 0, len }
    }

    /// Zeroed buffers of `lens` elements in one allocation, each where the device can bind it,
    /// and the whole of that allocation as one more buffer, for the dispatch or the clear that
    /// covers them all (the optimizer's update, the clearing of the gradients). The elements
    /// between the parts are zeros that nothing else writes.
    pub fn zeros_packed(&self, lens: &[usize]) -> (Buffer, Vec<Buffer>) {
        let align = (self.device.limits().min_storage_buffer_offset_alignment as usize / 4).max(1);
        let mut offsets = Vec::with_capacity(lens.len());
        let mut end = 0;
        for &len in lens {
            offsets.push(end);
            end = (end + len.max(1)).next_multiple_of(align);
        }
        let whole = self.zeros(end);
        let parts = offsets
            .iter()
            .zip(lens)
            .map(|(&at, &len)| Buffer { raw: whole.raw.clone(), offset: 4 * at as u64, len })
            .collect();
        (whole, parts)
    }

    /// A buffer holding `data`.
    pub fn upload<T: bytemuck::Pod>(&self, data: &[T]) -> Buffer {
        let buffer = self.zeros(data.len());
        self.write(&buffer, data);
        buffer
    }

    /// A buffer holding a tensor's elements in row-major order, whatever its layout.
    pub fn upload_tensor(&self, tensor: &crate::tensor::Tensor) -> Buffer {
        match tensor.as_slice() {
            Some(data) => self.upload(data),
            None => self.upload(&tensor.iter().copied().collect::<Vec<f32>>()),
        }
    }

    /// Replaces the start of `buffer` with `data`, in queue order with the dispatches.
    pub fn write<T: bytemuck::Pod>(&self, buffer: &Buffer, data: &[T]) {
        if !data.is_empty() {
            self.queue.write_buffer(&buffer.raw, buffer.offset, bytemuck::cast_slice(data));
        }
    }

    /// `kernel` over `invocations` one-dimensional invocations, as many workgroups as needed.
    pub fn dispatch<'a>(
        &self,
        kernel: impl Into<Variant<'a>>,
        params: &[u32],
        buffers: &[&Buffer],
        invocations: usize,
    ) -> Dispatch {
        let groups = u32::try_from(invocations.div_ceil(GROUP as usize)).unwrap_or(u32::MAX).max(1);
        let x = groups.min(MAX_GROUPS);
        self.dispatch_groups(kernel, params, buffers, (x, groups.div_ceil(x), 1))
    }

    /// `c = a · b` for `n x n` row-major matrices, in one dispatch: the product the benchmarks
    /// time.
    pub fn square_product(&self, n: usize, a: &Buffer, b: &Buffer, c: &Buffer) -> Dispatch {
        let product = Product::single((n, n, n), (n, 1), (n, 1), false);
        product_dispatch(self, product, (1, n), [a, b, c], &Epilogue::default())
    }

    /// `variant`'s pipeline, compiled on its first use.
    fn pipeline(&self, Variant { kernel, constants }: Variant) -> wgpu::ComputePipeline {
        let mut pipelines = self.pipelines.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let compile = || {
            let constants: Vec<(&str, f64)> =
                constants.iter().map(|&(name, v)| (name, f64::from(v))).collect();
            self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(kernel.source().0),
                layout: None,
                module: &self.modules[kernel as usize],
                entry_point: Some("main"),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants: &constants,
                    ..Default::default()
                },
                cache: None,
            })
        };
        pipelines.entry((kernel, constants.to_vec())).or_insert_with(compile).clone()
    }

    /// `kernel` (or a [`Variant`] of it) over a grid of workgroups.
    pub fn dispatch_groups<'a>(
        &self,
        kernel: impl Into<Variant<'a>>,
        params: &[u32],
        buffers: &[&Buffer],
        groups: (u32, u32, u32),
    ) -> Dispatch {
        let variant = kernel.into();
        let kernel = variant.kernel;
        self.created.fetch_add(1, Ordering::Relaxed);
        let params = self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(kernel.source().0),
            contents: bytemuck::cast_slice(if params.is_empty() { &[0u32] } else { params }),
            usage: wgpu::BufferUsages::STORAGE,
        });
        let pipeline = self.pipeline(variant);
        let mut entries = vec![wgpu::BindGroupEntry { binding: 0, resource: params.as_entire_binding() }];
        entries.extend(
            buffers
                .iter()
                .enumerate()
                .map(|(i, b)| wgpu::BindGroupEntry { binding: i as u32 + 1, resource: b.binding() }),
        );
        let bind_group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(kernel.source().0),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        Dispatch { pipeline, bind_group, groups }
    }

    /// Zeroes `buffers` and then runs `dispatches` in order, in one submission.
    pub fn run(&self, zero: &[&Buffer], dispatches: &[&Dispatch]) {
        let mut encoder = self.device.create_command_encoder(&Default::default());
        for buffer in zero {
            encoder.clear_buffer(&buffer.raw, buffer.offset, Some(buffer.size()));
        }
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            for d in dispatches {
                pass.set_pipeline(&d.pipeline);
                pass.set_bind_group(0, &d.bind_group, &[]);
                pass.dispatch_workgroups(d.groups.0, d.groups.1, d.groups.2);
            }
        }
        self.queue.submit([encoder.finish()]);
    }

    /// Runs the callbacks of finished reads: natively by asking the device (waiting for all
    /// submitted work when `wait`); in the browser they run from the event loop by themselves
    /// and this only reports errors.
    ///
    /// # Errors
    /// [`Error::Gpu`] when the device reported an error or was lost.
    pub fn poll(&self, wait: bool) -> Result<()> {
        let poll = if wait { wgpu::PollType::wait_indefinitely() } else { wgpu::PollType::Poll };
        self.device.poll(poll).map_err(|e| gpu_error("waiting for the GPU", e))?;
        self.check()
    }

    /// A buffer to read `len` elements back through, reused from read to read.
    pub fn readback(&self, len: usize) -> Readback {
        self.created.fetch_add(1, Ordering::Relaxed);
        let raw = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("read back"),
            size: 4 * len.max(1) as u64,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Readback { raw, len, state: Arc::new(AtomicU8::new(IDLE)) }
    }

    /// Copies `buffer` into `readback` after the work submitted so far, and asks for it to be
    /// mapped; [`Gpu::finish_read`] takes the data once it is.
    pub fn start_read(&self, buffer: &Buffer, readback: &Readback) {
        debug_assert_eq!(buffer.len, readback.len, "a readback for another size");
        let mut encoder = self.device.create_command_encoder(&Default::default());
        encoder.copy_buffer_to_buffer(&buffer.raw, buffer.offset, &readback.raw, 0, buffer.size());
        self.queue.submit([encoder.finish()]);
        readback.state.store(PENDING, Ordering::Release);
        let state = readback.state.clone();
        readback.raw.slice(..).map_async(wgpu::MapMode::Read, move |result| {
            state.store(if result.is_ok() { READY } else { FAILED }, Ordering::Release);
        });
    }

    /// The data of a read started with [`Gpu::start_read`], or None while it is on its way.
    ///
    /// # Errors
    /// [`Error::Gpu`] when the mapping failed or the device reported an error.
    pub fn finish_read<T: bytemuck::Pod>(&self, readback: &Readback) -> Result<Option<Vec<T>>> {
        self.check()?;
        match readback.state.load(Ordering::Acquire) {
            READY => {
                let data = {
                    let view = readback
                        .raw
                        .slice(..)
                        .get_mapped_range()
                        .map_err(|e| gpu_error("reading a buffer back", e))?;
                    let mut data: Vec<T> = bytemuck::cast_slice(&view).to_vec();
                    data.truncate(readback.len);
                    data
                };
                readback.raw.unmap();
                readback.state.store(IDLE, Ordering::Release);
                Ok(Some(data))
            }
            FAILED => {
                readback.state.store(IDLE, Ordering::Release);
                Err(Error::Gpu(format!("{}: a buffer could not be read back", self.adapter)))
            }
            _ => Ok(None),
        }
    }

    /// The contents of `buffer`, waiting for the GPU (natively only: a browser cannot wait).
    ///
    /// # Errors
    /// [`Error::Gpu`] when the device is lost or the buffer cannot be read.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn read<T: bytemuck::Pod>(&self, buffer: &Buffer) -> Result<Vec<T>> {
        let readback = self.readback(buffer.len);
        self.start_read(buffer, &readback);
        self.poll(true)?;
        self.finish_read(&readback)?.ok_or_else(|| Error::Gpu("the GPU finished without the data".into()))
    }

    /// Waits for everything submitted so far (natively).
    ///
    /// # Errors
    /// As [`Gpu::poll`].
    pub fn wait(&self) -> Result<()> {
        self.poll(true)
    }
}

const IDLE: u8 = 0;
const PENDING: u8 = 1;
const READY: u8 = 2;
const FAILED: u8 = 3;

/// A mappable buffer that results are copied into to be read on the CPU.
pub struct Readback {
    raw: wgpu::Buffer,
    len: usize,
    /// Idle, pending, ready or failed; set by the mapping's callback.
    state: Arc<AtomicU8>,
}

impl Readback {
    /// Whether a read through it is under way or waiting to be taken.
    pub fn is_busy(&self) -> bool {
        self.state.load(Ordering::Acquire) != IDLE
    }

    /// Whether a read through it has come back (or failed) and waits to be taken.
    pub fn is_settled(&self) -> bool {
        matches!(self.state.load(Ordering::Acquire), READY | FAILED)
    }
}

/// An error from wgpu, after `context`. In the browser wgpu's message can carry the whole
/// JavaScript stack of the failed call, line after line; only its first line is kept, which
/// says what failed, so that the message reads as one line where the page shows it.
fn gpu_error(context: &str, error: impl std::fmt::Display) -> Error {
    let message = error.to_string();
    let first = message.lines().next().unwrap_or_default().trim_end();
    Error::Gpu(format!("{context}: {first}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wgpu_error_keeps_only_its_first_line() {
        let from_browser =
            "Buffer view error: OperationError: getMappedRange failed\n    at w (ferrograd.js:2:1026)\n";
        let Error::Gpu(message) = gpu_error("reading a buffer back", from_browser) else { unreachable!() };
        assert_eq!(
            message,
            "reading a buffer back: Buffer view error: OperationError: getMappedRange failed"
        );
    }
}
