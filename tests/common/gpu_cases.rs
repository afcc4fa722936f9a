//! Every op on the GPU against the CPU, shared by `tests/gpu.rs` (natively, on Vulkan) and
//! `tests/web_gpu.rs` (in headless Chromium's WebGPU): random inputs of awkward sizes (1, 7,
//! 33, 257); the output and the gradient of `sum(w * y)` for random `w` with respect to every
//! input must agree within a relative error of 1e-4.

use ferrograd::autograd::{Params, Tape, Var};
use ferrograd::backend::cpu::recurrent::Cell;
use ferrograd::backend::cpu::Activation;
use ferrograd::backend::gpu::Gpu;
use ferrograd::gpu_step::run_on_gpu;
use ferrograd::tensor::Tensor;
use ferrograd::Result;
use rand::Rng;

use super::{away_from_zero, rng, uniform, weighted_sum};

pub const TOLERANCE: f32 = 1e-4;

/// Records an op on a tape, given the tape's variables for the inputs.
pub type Build = Box<dyn Fn(&mut Tape, &[Var]) -> Result<Var>>;

/// One op on given inputs.
pub struct Case {
    pub name: String,
    pub inputs: Vec<Tensor>,
    pub build: Build,
}

fn case(
    name: impl Into<String>,
    inputs: Vec<Tensor>,
    build: impl Fn(&mut Tape, &[Var]) -> Result<Var> + 'static,
) -> Case {
    Case { name: name.into(), inputs, build: Box::new(build) }
}

/// `max |gpu - cpu| / max |cpu|`: the error relative to the size of the values.
fn relative_error(gpu: &[f32], cpu: &Tensor) -> f32 {
    let cpu: Vec<f32> = cpu.iter().copied().collect();
    if gpu.len() != cpu.len() || gpu.iter().any(|v| !v.is_finite()) {
        return f32::INFINITY;
    }
    let scale = cpu.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    gpu.iter().zip(&cpu).fold(0f32, |m, (a, b)| m.max((a - b).abs())) / scale
}

/// Runs `case` on the CPU and on `gpu`; the first disagreement, if any.
pub async fn compare(gpu: &Gpu, case: &Case) -> std::result::Result<(), String> {
    let name = &case.name;
    let params = Params::default();
    let mut tape = Tape::new(&params);
    let vars: Vec<Var> = case.inputs.iter().map(|x| tape.variable(x.clone())).collect();
    let y = (case.build)(&mut tape, &vars).map_err(|e| format!("{name}: {e}"))?;
    let loss = if tape.value(y).len() == 1 {
        y
    } else {
        let weights = uniform(&mut rng(7), tape.value(y).shape(), -1.0, 1.0);
        weighted_sum(&mut tape, y, &weights).map_err(|e| format!("{name}: {e}"))?
    };
    let grads = tape.backward(loss).map_err(|e| format!("{name}: {e}"))?;
    let (value, gpu_grads) =
        run_on_gpu(gpu, &tape, y, loss, &vars).await.map_err(|e| format!("{name}: {e}"))?;
    let error = relative_error(&value, tape.value(y));
    if error > TOLERANCE {
        return Err(format!("{name}: the output differs by {error:e} relative"));
    }
    for (i, (&var, gpu_grad)) in vars.iter().zip(&gpu_grads).enumerate() {
        let error = relative_error(gpu_grad, grads.wrt(var).expect("every input reaches the loss"));
        if error > TOLERANCE {
            return Err(format!("{name}: the gradient of input {i} differs by {error:e} relative"));
        }
    }
    Ok(())
}

/// Every op the GPU backend compiles, forward and backward.
pub fn cases() -> Vec<Case> {
    let mut all = Vec::new();
    let mut r = rng(1);
    // The next two split k (see matmul.wgsl): the first in its forward product, the second in
    // the gradient of its right operand, which accumulates. The last three are wide enough for
    // matmul_tiled.wgsl in the forward product and both gradients (edges short of a tile, k
    // short of a step), the last split along k as well.
    for (m, k, n) in [
        (7, 33, 257),
        (1, 257, 1),
        (33, 1, 7),
        (257, 7, 33),
        (1, 1, 1),
        (6, 2100, 3),
        (2100, 7, 5),
        (64, 16, 64),
        (96, 70, 130),
        (64, 2100, 65),
    ] {
        let inputs = vec![uniform(&mut r, &[m, k], -1.0, 1.0), uniform(&mut r, &[k, n], -1.0, 1.0)];
        all.push(case(format!("matmul {m}x{k} · {k}x{n}"), inputs, |t, v| t.matmul(v[0], v[1])));
    }

    // Batched products, one per leading index (attention's heads); the last splits k too.
    for (b, m, k, n) in [(7, 33, 5, 33), (33, 1, 7, 1), (3, 6, 2100, 3), (1, 7, 33, 257), (3, 65, 17, 66)] {
        let inputs = vec![uniform(&mut r, &[b, m, k], -1.0, 1.0), uniform(&mut r, &[b, k, n], -1.0, 1.0)];
        all.push(case(format!("matmul {b}x{m}x{k} · {b}x{k}x{n}"), inputs, |t, v| t.matmul(v[0], v[1])));
    }

    type Binary = fn(&mut Tape, Var, Var) -> Result<Var>;
    let ops: [(&str, Binary); 4] = [
        ("add", |t, a, b| t.add(a, b)),
        ("sub", |t, a, b| t.sub(a, b)),
        ("mul", |t, a, b| t.mul(a, b)),
        ("div", |t, a, b| t.div(a, b)),
    ];
    let shapes: [(&[usize], &[usize]); 7] = [
        (&[7, 33], &[33]),
        (&[33, 1], &[1, 7]),
        (&[257], &[1]),
        (&[1, 7, 33], &[7, 1]),
        (&[257, 7], &[257, 7]),
        (&[], &[7, 33]),
        (&[2, 7, 3, 33], &[7, 1, 1]),
    ];
    for (name, op) in ops {
        for (a, b) in shapes {
            let inputs = vec![uniform(&mut r, a, -2.0, 2.0), away_from_zero(&mut r, b, 0.5, 2.0)];
            all.push(case(format!("{name} {a:?} {b:?}"), inputs, move |t, v| op(t, v[0], v[1])));
        }
    }

    let x = uniform(&mut r, &[33, 257], -4.0, 4.0);
    all.push(case("relu", vec![x.clone()], |t, v| Ok(t.relu(v[0]))));
    all.push(case("leaky_relu", vec![x.clone()], |t, v| Ok(t.leaky_relu(v[0], 0.1))));
    all.push(case("sigmoid", vec![x.clone()], |t, v| Ok(t.sigmoid(v[0]))));
    all.push(case("tanh", vec![x.clone()], |t, v| Ok(t.tanh(v[0]))));
    all.push(case("gelu", vec![x], |t, v| Ok(t.gelu(v[0]))));
    // Far tails, where a tanh computed from exp would overflow.
    let tails = uniform(&mut r, &[7, 33], -40.0, 40.0);
    all.push(case("gelu tails", vec![tails], |t, v| Ok(t.gelu(v[0]))));
    for shape in [&[33, 257][..], &[7, 33, 1], &[2, 7, 33], &[257]] {
        let x = uniform(&mut r, shape, -5.0, 5.0);
        all.push(case(format!("softmax {shape:?}"), vec![x], |t, v| t.softmax(v[0])));
    }
    let positive = uniform(&mut r, &[7, 33], 0.5, 3.0);
    all.push(case("pow -0.5", vec![positive.clone()], |t, v| Ok(t.pow(v[0], -0.5))));
    all.push(case("pow 2", vec![positive], |t, v| Ok(t.pow(v[0], 2.0))));

    let cube = uniform(&mut r, &[7, 33, 257], -1.0, 1.0);
    for axis in 0..3 {
        all.push(case(format!("sum axis {axis}"), vec![cube.clone()], move |t, v| t.sum(v[0], axis)));
        all.push(case(format!("mean axis {axis}"), vec![cube.clone()], move |t, v| t.mean(v[0], axis)));
    }
    // Batch norm's statistics: 64 * 28 * 28 values per channel, where a sum of tenths in order
    // is off by 5e-4, so the two sides agree only if they add in the same order (the CPU's
    // unit test checks that this order is the precise one).
    let channels = ndarray::ArrayD::from_elem(vec![2, 50_176], 0.1f32);
    all.push(case("mean over 50,176 values", vec![channels], |t, v| t.mean(v[0], 1)));
    all.push(case("mean of [1]", vec![uniform(&mut r, &[1], -1.0, 1.0)], |t, v| t.mean(v[0], 0)));

    for (batch, classes) in [(33, 7), (1, 10), (257, 10), (7, 1)] {
        let logits = uniform(&mut r, &[batch, classes], -5.0, 5.0);
        let labels: Vec<u8> = (0..batch).map(|_| r.random_range(0..classes as u8)).collect();
        all.push(case(format!("softmax_cross_entropy {batch}x{classes}"), vec![logits], move |t, v| {
            t.softmax_cross_entropy(v[0], &labels)
        }));
    }

    let wide = uniform(&mut r, &[7, 257], -1.0, 1.0);
    all.push(case("slice axis 1", vec![wide.clone()], |t, v| t.slice(v[0], 1, 33, 7)));
    all.push(case("slice axis 0", vec![wide], |t, v| t.slice(v[0], 0, 6, 1)));
    all.push(case("slice of a cube", vec![uniform(&mut r, &[33, 7, 9], -1.0, 1.0)], |t, v| {
        t.slice(v[0], 1, 1, 5)
    }));
    let parts = vec![
        uniform(&mut r, &[7, 1, 33], -1.0, 1.0),
        uniform(&mut r, &[7, 7, 33], -1.0, 1.0),
        uniform(&mut r, &[7, 33, 33], -1.0, 1.0),
    ];
    all.push(case("concat axis 1", parts, |t, v| t.concat(v, 1)));
    all.push(case("permute", vec![uniform(&mut r, &[7, 1, 33, 3], -1.0, 1.0)], |t, v| {
        t.permute(v[0], &[2, 0, 3, 1])
    }));
    all.push(case("transpose", vec![uniform(&mut r, &[33, 257], -1.0, 1.0)], |t, v| t.transpose(v[0])));
    all.push(case("reshape then mul", vec![uniform(&mut r, &[7, 33], -1.0, 1.0)], |t, v| {
        let flat = t.reshape(v[0], &[231])?;
        t.mul(flat, flat)
    }));

    // Dense layers, whose bias and activation the GPU runs in the product's epilogue and
    // differentiates in one pass: every activation (leaky relu and GELU need the value before
    // it kept), a bias alone, an activation alone, and a product split along k, whose bias and
    // activation run as their own dispatches.
    let activations = [
        Some(Activation::Relu),
        Some(Activation::LeakyRelu { alpha: 0.1 }),
        Some(Activation::Sigmoid),
        Some(Activation::Tanh),
        Some(Activation::Gelu),
        None,
    ];
    for (act, (m, k, n)) in activations.into_iter().zip([
        (33, 7, 257),
        (7, 33, 5),
        (1, 257, 7),
        (6, 2100, 3),
        (257, 7, 33),
        (33, 1, 7),
    ]) {
        let inputs = vec![
            uniform(&mut r, &[m, k], -1.0, 1.0),
            uniform(&mut r, &[k, n], -1.0, 1.0),
            uniform(&mut r, &[n], -1.0, 1.0),
        ];
        all.push(case(format!("dense {m}x{k} · {k}x{n} + bias, {act:?}"), inputs, move |t, v| {
            let y = t.matmul(v[0], v[1])?;
            let y = t.add(y, v[2])?;
            Ok(act.map_or(y, |act| t.activation(y, act)))
        }));
    }
    let inputs = vec![uniform(&mut r, &[7, 33], -1.0, 1.0), uniform(&mut r, &[33, 5], -1.0, 1.0)];
    all.push(case("dense 7x33 · 33x5, gelu, no bias", inputs, |t, v| {
        let y = t.matmul(v[0], v[1])?;
        Ok(t.activation(y, Activation::Gelu))
    }));
    // A dense layer on matmul_tiled.wgsl, whose epilogue keeps GELU's input too.
    let inputs = vec![
        uniform(&mut r, &[80, 33], -1.0, 1.0),
        uniform(&mut r, &[33, 70], -1.0, 1.0),
        uniform(&mut r, &[70], -1.0, 1.0),
    ];
    all.push(case("dense 80x33 · 33x70 + bias, gelu", inputs, |t, v| {
        let y = t.matmul(v[0], v[1])?;
        let y = t.add(y, v[2])?;
        Ok(t.activation(y, Activation::Gelu))
    }));
    // Convolutions likewise, their bias one per filter.
    for (x, w, act) in [
        (&[7, 3, 33, 33][..], &[8, 3, 5, 5][..], Activation::Relu),
        (&[2, 7, 9, 9][..], &[33, 7, 3, 3][..], Activation::LeakyRelu { alpha: 0.2 }),
    ] {
        let inputs = vec![
            uniform(&mut r, x, -1.0, 1.0),
            uniform(&mut r, w, -1.0, 1.0),
            uniform(&mut r, &[w[0]], -1.0, 1.0),
        ];
        all.push(case(format!("conv2d {x:?} * {w:?} + bias, {act:?}"), inputs, move |t, v| {
            let y = t.conv2d(v[0], v[1], (1, 1), (1, 1, 1, 1))?;
            let b = t.reshape(v[2], &[w[0], 1, 1])?;
            let y = t.add(y, b)?;
            Ok(t.activation(y, act))
        }));
    }

    // A convolution whose output only a pooling reads: the pooling's gradient is gathered in
    // the layer's backward dispatch, with and without a bias and activation.
    let inputs = vec![
        uniform(&mut r, &[3, 2, 9, 8], -1.0, 1.0),
        uniform(&mut r, &[5, 2, 3, 3], -1.0, 1.0),
        uniform(&mut r, &[5], -1.0, 1.0),
    ];
    all.push(case("conv2d [3, 2, 9, 8] * [5, 2, 3, 3] + bias, Tanh, max_pool2d 2/2", inputs, |t, v| {
        let y = t.conv2d(v[0], v[1], (1, 1), (1, 1, 1, 1))?;
        let b = t.reshape(v[2], &[5, 1, 1])?;
        let y = t.add(y, b)?;
        let y = t.activation(y, Activation::Tanh);
        t.max_pool2d(y, (2, 2), (2, 2))
    }));
    let inputs = vec![uniform(&mut r, &[2, 3, 7, 7], -1.0, 1.0), uniform(&mut r, &[4, 3, 2, 2], -1.0, 1.0)];
    all.push(case("conv2d [2, 3, 7, 7] * [4, 3, 2, 2], avg_pool2d 3/2", inputs, |t, v| {
        let y = t.conv2d(v[0], v[1], (1, 1), (0, 0, 0, 0))?;
        t.avg_pool2d(y, (3, 3), (2, 2))
    }));

    // (input, weights, stride, padding)
    let convolutions: [(&[usize], &[usize], usize, usize); 4] = [
        (&[7, 3, 33, 33], &[8, 3, 5, 5], 1, 0),
        (&[1, 1, 7, 7], &[1, 1, 3, 3], 2, 1),
        (&[2, 7, 9, 9], &[33, 7, 3, 3], 1, 1),
        (&[3, 2, 8, 7], &[4, 2, 2, 3], 2, 0),
    ];
    for (x, w, stride, pad) in convolutions {
        let inputs = vec![uniform(&mut r, x, -1.0, 1.0), uniform(&mut r, w, -1.0, 1.0)];
        all.push(case(format!("conv2d {x:?} * {w:?} stride {stride} pad {pad}"), inputs, move |t, v| {
            t.conv2d(v[0], v[1], (stride, stride), (pad, pad, pad, pad))
        }));
    }

    for (shape, size, stride) in
        [(&[7, 3, 33, 33][..], 2, 2), (&[1, 1, 7, 7][..], 3, 2), (&[2, 5, 9, 9][..], 3, 3)]
    {
        let x = uniform(&mut r, shape, -1.0, 1.0);
        all.push(case(format!("max_pool2d {shape:?} {size}/{stride}"), vec![x.clone()], move |t, v| {
            t.max_pool2d(v[0], (size, size), (stride, stride))
        }));
        all.push(case(format!("avg_pool2d {shape:?} {size}/{stride}"), vec![x], move |t, v| {
            t.avg_pool2d(v[0], (size, size), (stride, stride))
        }));
    }

    let x = uniform(&mut r, &[33, 257], -1.0, 1.0);
    let keep: Vec<bool> = (0..x.len()).map(|_| r.random::<f32>() >= 0.3).collect();
    all.push(case("dropout 0.3", vec![x], move |t, v| {
        let mut k = keep.iter();
        t.dropout(v[0], 0.3, || *k.next().expect("one draw per element"))
    }));

    // Rows of 1, of 33 and of 257 features, the last as a stack of tokens.
    for shape in [&[7, 1][..], &[257, 33], &[3, 7, 257]] {
        let d = *shape.last().unwrap();
        let inputs = vec![
            uniform(&mut r, shape, -2.0, 2.0),
            uniform(&mut r, &[d], 0.5, 1.5),
            uniform(&mut r, &[d], -1.0, 1.0),
        ];
        all.push(case(format!("layer_norm {shape:?}"), inputs, |t, v| t.layer_norm(v[0], v[1], v[2], 1e-5)));
    }

    // A dense layer's features, and channels of images (more positions than a workgroup's
    // lanes, and fewer).
    for shape in [&[7, 33][..], &[3, 7, 9, 9], &[2, 3, 5, 1]] {
        let c = shape[1];
        let inputs = vec![
            uniform(&mut r, shape, -2.0, 2.0),
            uniform(&mut r, &[c], 0.5, 1.5),
            uniform(&mut r, &[c], -1.0, 1.0),
        ];
        all.push(case(format!("batch_norm {shape:?}"), inputs, |t, v| {
            t.batch_norm(v[0], (v[1], v[2]), 1e-5, None)
        }));
    }

    // Each recurrent cell: one step with every input a variable, and three steps chained as a
    // layer chains them (the state's product with the weights, the LSTM's h sliced off), so
    // that x's gradient gathers every step's and the state's flows back through time.
    for (cell, blocks) in [(Cell::Simple, 1), (Cell::Lstm, 2), (Cell::Gru, 1)] {
        let (batch, units) = (7, 33);
        let width = cell.gates() * units;
        let inputs = vec![
            uniform(&mut r, &[batch, 3, width], -2.0, 2.0),
            uniform(&mut r, &[batch, width], -2.0, 2.0),
            uniform(&mut r, &[batch, blocks * units], -1.0, 1.0),
        ];
        all.push(case(format!("{} step", cell.name()), inputs, move |t, v| {
            Ok(t.recurrent_cell(cell, (v[0], 2), v[1], v[2], false)?.0)
        }));
        let inputs =
            vec![uniform(&mut r, &[batch, 3, width], -1.0, 1.0), uniform(&mut r, &[units, width], -0.3, 0.3)];
        all.push(case(format!("{} over 3 steps", cell.name()), inputs, move |t, v| {
            let mut state = t.zeros(&[batch, blocks * units]);
            let mut h = if blocks == 2 { t.zeros(&[batch, units]) } else { state };
            for step in 0..3 {
                let hu = t.matmul(h, v[1])?;
                state = t.recurrent_cell(cell, (v[0], step), hu, state, false)?.0;
                h = if blocks == 2 { t.slice(state, 1, 0, units)? } else { state };
            }
            Ok(state)
        }));
    }
    all
}
