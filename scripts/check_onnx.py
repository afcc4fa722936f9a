"""Checks an ONNX file exported by ferrograd against ferrograd's own outputs.

Usage: python3 scripts/check_onnx.py MODEL.onnx IMAGES.f32 LOGITS.f32 COUNT

IMAGES.f32 holds COUNT images as little-endian float32 in the model's input layout, and
LOGITS.f32 ferrograd's COUNT x classes logits for them. Runs onnx.checker, then onnxruntime,
and prints one JSON line: {"agreement": share of equal predicted classes, "max_abs_diff":
largest logit difference, "opset": ..., "spec": the spec in the metadata}. Exits 1 with a
message when the checker refuses the file.
"""

import json
import sys

import numpy as np
import onnx
import onnxruntime as ort


def main(model_path, images_path, logits_path, count):
    model = onnx.load(model_path)
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as error:
        print(f"onnx.checker refused {model_path}: {error}", file=sys.stderr)
        return 1
    input_shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim[1:]]
    images = np.fromfile(images_path, dtype="<f4").reshape([count, *input_shape])
    expected = np.fromfile(logits_path, dtype="<f4").reshape(count, -1)
    session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    logits, probabilities = session.run(["logits", "probabilities"], {"pixels": images})
    print(json.dumps({
        "agreement": float(np.mean(logits.argmax(1) == expected.argmax(1))),
        "max_abs_diff": float(np.abs(logits - expected).max()),
        "probabilities_sum_error": float(np.abs(probabilities.sum(1) - 1).max()),
        "opset": model.opset_import[0].version,
        "spec": {p.key: p.value for p in model.metadata_props}.get("ferrograd.spec"),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
