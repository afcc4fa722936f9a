//! The WebGPU backend: the WGSL kernels in `kernels/`, run through `wgpu` (the browser's
//! WebGPU in wasm, Vulkan natively), checked against the CPU backend.
//!
//! Every kernel takes its sizes in a small storage buffer of `u32` words (`p` in the WGSL;
//! floats as their bits) at binding 0 and its operands at bindings 1 and up. A [`Dispatch`]
//! is one kernel bound to its buffers with its sizes, built once and run as often as wanted,
//! so that a training step ([`plan`]) allocates nothing.

mod engine;
mod plan;

pub use engine::Engine;
pub use plan::run_on_gpu;

use std::borrow::Cow;
use std::sync::{Arc, Mutex};

use wgpu::util::DeviceExt;

use crate::{Error, Result};

/// The kernels, one per WGSL file, each with one entry point `main`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    MatMul,
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
}

impl Kernel {
    pub const ALL: [Kernel; 16] = [
        Kernel::MatMul,
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
    ];

    /// The kernel's file name in `kernels/` and its WGSL source.
    pub fn source(self) -> (&'static str, &'static str) {
        macro_rules! wgsl {
            ($file:literal) => {
                ($file, include_str!(concat!("kernels/", $file)))
            };
            // WGSL has no includes: a shared function is appended to the file's own source.
            ($file:literal + $shared:literal) => {
                (
                    $file,
                    concat!(
                        include_str!(concat!("kernels/", $file)),
                        include_str!(concat!("kernels/", $shared))
                    ),
                )
            };
        }
        match self {
            Kernel::MatMul => wgsl!("matmul.wgsl"),
            Kernel::Binary => wgsl!("binary.wgsl"),
            Kernel::BinaryGrad => wgsl!("binary_grad.wgsl"),
            Kernel::Unary => wgsl!("unary.wgsl"),
            Kernel::UnaryGrad => wgsl!("unary_grad.wgsl"),
            Kernel::Copy => wgsl!("copy.wgsl"),
            Kernel::Reduce => wgsl!("reduce.wgsl"),
            Kernel::ReduceGrad => wgsl!("reduce_grad.wgsl"),
            Kernel::SoftmaxCrossEntropy => wgsl!("softmax_cross_entropy.wgsl"),
            Kernel::Im2col => wgsl!("im2col.wgsl"),
            Kernel::Col2im => wgsl!("col2im.wgsl"),
            Kernel::Pool => wgsl!("pool.wgsl"),
            Kernel::PoolGrad => wgsl!("pool_grad.wgsl"),
            Kernel::Adam => wgsl!("adam.wgsl" + "clip.wgsl"),
            Kernel::Sgd => wgsl!("sgd.wgsl" + "clip.wgsl"),
            Kernel::SumSquares => wgsl!("sum_squares.wgsl"),
        }
    }
}

/// Invocations per workgroup of the one-dimensional kernels (their `@workgroup_size`).
const GROUP: u32 = 64;
/// The most workgroups along one dimension of a dispatch.
const MAX_GROUPS: u32 = 65_535;

/// A device, its queue and every kernel compiled for it.
pub struct Gpu {
    device: wgpu::Device,
    queue: wgpu::Queue,
    pipelines: Vec<wgpu::ComputePipeline>,
    adapter: String,
    software: bool,
    /// The first error the device reported on its own (out of memory, validation, loss),
    /// turned into an [`Error`] by [`Gpu::check`] instead of wgpu's default panic.
    failure: Arc<Mutex<Option<String>>>,
}

/// One kernel bound to its buffers and sizes, ready to run any number of times.
pub struct Dispatch {
    kernel: Kernel,
    bind_group: wgpu::BindGroup,
    groups: (u32, u32),
}

/// A buffer of `f32` (or `u32`) elements on the GPU, with its element count.
pub struct Buffer {
    raw: wgpu::Buffer,
    len: usize,
}

impl Buffer {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Gpu {
    /// The first adapter wgpu finds (a hardware GPU before a software one) with every kernel
    /// compiled.
    ///
    /// # Errors
    /// [`Error::Gpu`] when there is no adapter or device, saying which.
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
            .map_err(|e| Error::Gpu(format!("no WebGPU/Vulkan adapter: {e}")))?;
        let info = adapter.get_info();
        let adapter_name = format!("{} ({:?}, {:?})", info.name, info.device_type, info.backend);
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
            .map_err(|e| Error::Gpu(format!("{adapter_name}: no device: {e}")))?;
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
        let pipelines = Kernel::ALL
            .iter()
            .map(|kernel| {
                let (file, source) = kernel.source();
                let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
                    label: Some(file),
                    source: wgpu::ShaderSource::Wgsl(Cow::Borrowed(source)),
                });
                device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(file),
                    layout: None,
                    module: &module,
                    entry_point: Some("main"),
                    compilation_options: Default::default(),
                    cache: None,
                })
            })
            .collect();
        let software = info.device_type == wgpu::DeviceType::Cpu;
        let gpu = Gpu { device, queue, pipelines, adapter: adapter_name, software, failure };
        gpu.check()?;
        Ok(gpu)
    }

    /// [`Gpu::new`], waiting for it.
    ///
    /// # Errors
    /// As [`Gpu::new`].
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

    /// Whether the adapter is a CPU implementation (lavapipe, SwiftShader): correct, but slower
    /// than the CPU backend.
    pub fn is_software(&self) -> bool {
        self.software
    }

    /// The adapter's name, type and API, for the user to see which GPU runs.
    pub fn adapter(&self) -> &str {
        &self.adapter
    }

    /// A zeroed buffer of `len` elements.
    pub fn zeros(&self, len: usize) -> Buffer {
        let raw = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            // Bindings cannot be empty: a zero-length buffer still gets one element.
            size: 4 * len.max(1) as u64,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Buffer { raw, len }
    }

    /// A buffer holding `data`.
    pub fn upload<T: bytemuck::Pod>(&self, data: &[T]) -> Buffer {
        let buffer = self.zeros(data.len());
        self.write(&buffer, data);
        buffer
    }

    /// Replaces the start of `buffer` with `data`, in queue order with the dispatches.
    pub fn write<T: bytemuck::Pod>(&self, buffer: &Buffer, data: &[T]) {
        if !data.is_empty() {
            self.queue.write_buffer(&buffer.raw, 0, bytemuck::cast_slice(data));
        }
    }

    /// `kernel` over `invocations` one-dimensional invocations, as many workgroups as needed.
    pub fn dispatch(
        &self,
        kernel: Kernel,
        params: &[u32],
        buffers: &[&Buffer],
        invocations: usize,
    ) -> Dispatch {
        let groups = u32::try_from(invocations.div_ceil(GROUP as usize)).unwrap_or(u32::MAX).max(1);
        let x = groups.min(MAX_GROUPS);
        self.dispatch_groups(kernel, params, buffers, (x, groups.div_ceil(x)))
    }

    /// `kernel` over a grid of workgroups.
    pub fn dispatch_groups(
        &self,
        kernel: Kernel,
        params: &[u32],
        buffers: &[&Buffer],
        groups: (u32, u32),
    ) -> Dispatch {
        let params = self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(kernel.source().0),
            contents: bytemuck::cast_slice(if params.is_empty() { &[0u32] } else { params }),
            usage: wgpu::BufferUsages::STORAGE,
        });
        let pipeline = &self.pipelines[kernel as usize];
        let mut entries = vec![wgpu::BindGroupEntry { binding: 0, resource: params.as_entire_binding() }];
        entries.extend(buffers.iter().enumerate().map(|(i, b)| wgpu::BindGroupEntry {
            binding: i as u32 + 1,
            resource: b.raw.as_entire_binding(),
        }));
        let bind_group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(kernel.source().0),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        Dispatch { kernel, bind_group, groups }
    }

    /// Zeroes `buffers` and then runs `dispatches` in order, in one submission.
    pub fn run(&self, zero: &[&Buffer], dispatches: &[&Dispatch]) {
        let mut encoder = self.device.create_command_encoder(&Default::default());
        for buffer in zero {
            encoder.clear_buffer(&buffer.raw, 0, None);
        }
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            for d in dispatches {
                pass.set_pipeline(&self.pipelines[d.kernel as usize]);
                pass.set_bind_group(0, &d.bind_group, &[]);
                pass.dispatch_workgroups(d.groups.0, d.groups.1, 1);
            }
        }
        self.queue.submit([encoder.finish()]);
    }

    /// Waits for everything submitted so far.
    ///
    /// # Errors
    /// [`Error::Gpu`] when the device reported an error or was lost.
    pub fn wait(&self) -> Result<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Gpu(format!("waiting for the GPU: {e}")))?;
        self.check()
    }

    /// A buffer to read results back through, reused from step to step.
    pub fn readback(&self, len: usize) -> Readback {
        let raw = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("read back"),
            size: 4 * len.max(1) as u64,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Readback { raw, len }
    }

    /// The contents of `buffer`, waiting for the GPU to finish what it was given.
    ///
    /// # Errors
    /// [`Error::Gpu`] when the device is lost or the buffer cannot be read.
    pub fn read<T: bytemuck::Pod>(&self, buffer: &Buffer) -> Result<Vec<T>> {
        self.read_through(buffer, &self.readback(buffer.len))
    }

    /// [`Gpu::read`] through a [`Readback`] of the buffer's length.
    ///
    /// # Errors
    /// As [`Gpu::read`].
    pub fn read_through<T: bytemuck::Pod>(&self, buffer: &Buffer, readback: &Readback) -> Result<Vec<T>> {
        debug_assert_eq!(buffer.len, readback.len, "a readback for another size");
        if buffer.len == 0 {
            return Ok(Vec::new());
        }
        let size = 4 * buffer.len as u64;
        let mut encoder = self.device.create_command_encoder(&Default::default());
        encoder.copy_buffer_to_buffer(&buffer.raw, 0, &readback.raw, 0, size);
        self.queue.submit([encoder.finish()]);
        let (sender, receiver) = std::sync::mpsc::channel();
        let slice = readback.raw.slice(..size);
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = sender.send(r);
        });
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Gpu(format!("waiting for the GPU: {e}")))?;
        receiver
            .recv()
            .map_err(|_| Error::Gpu("the read back was dropped".into()))?
            .map_err(|e| Error::Gpu(format!("reading a buffer back: {e}")))?;
        self.check()?;
        let view = slice.get_mapped_range().map_err(|e| Error::Gpu(format!("reading a buffer back: {e}")))?;
        let data = bytemuck::cast_slice(&view).to_vec();
        drop(view);
        readback.raw.unmap();
        Ok(data)
    }
}

/// A mappable buffer that results are copied into to be read on the CPU.
pub struct Readback {
    raw: wgpu::Buffer,
    len: usize,
}
