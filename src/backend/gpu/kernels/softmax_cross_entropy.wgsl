// The mean over the batch of -log softmax(logits)[label], fused with its gradient
// (softmax - onehot(label)) / batch, which is added into grad_logits, and with the batch
// accuracy (the first largest logit as the prediction, as on the CPU). One workgroup; stats
// receives [loss, accuracy].
//
// p: batch, classes.

@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> labels: array<u32>;
@group(0) @binding(3) var<storage, read_write> grad_logits: array<f32>;
@group(0) @binding(4) var<storage, read_write> stats: array<f32>;

const THREADS: u32 = 256u;
var<workgroup> losses: array<f32, 256>;
var<workgroup> hits: array<f32, 256>;

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) local: u32) {
    let batch = p[0];
    let classes = p[1];
    var loss = 0.0;
    var correct = 0.0;
    for (var row = local; row < batch; row += THREADS) {
        let base = row * classes;
        var best = logits[base];
        var predicted = 0u;
        for (var j = 1u; j < classes; j++) {
            if (logits[base + j] > best) {
                best = logits[base + j];
                predicted = j;
            }
        }
        var total = 0.0;
        for (var j = 0u; j < classes; j++) {
            total += exp(logits[base + j] - best);
        }
        let log_total = log(total);
        let label = labels[row];
        loss += log_total - (logits[base + label] - best);
        correct += select(0.0, 1.0, predicted == label);
        for (var j = 0u; j < classes; j++) {
            let prob = exp(logits[base + j] - best - log_total);
            let onehot = select(0.0, 1.0, j == label);
            grad_logits[base + j] += (prob - onehot) / f32(batch);
        }
    }
    losses[local] = loss;
    hits[local] = correct;
    for (var half = THREADS / 2u; half > 0u; half /= 2u) {
        workgroupBarrier();
        if (local < half) {
            losses[local] += losses[local + half];
            hits[local] += hits[local + half];
        }
    }
    if (local == 0u) {
        stats[0] = losses[0] / f32(batch);
        stats[1] = hits[0] / f32(batch);
    }
}
