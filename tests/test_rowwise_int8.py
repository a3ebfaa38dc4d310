"""The encoder runtime's int8 MatMuls: activations quantised one row at a time, after smoothing."""

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")


def one_linear_layer(weight: np.ndarray, bias: np.ndarray):
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "weight"], ["xw"]), helper.make_node("Add", ["xw", "bias"], ["y"])],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["titles", "pieces", weight.shape[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["titles", "pieces", weight.shape[1]])],
        [numpy_helper.from_array(weight, "weight"), numpy_helper.from_array(bias, "bias")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def run(model, x: np.ndarray) -> np.ndarray:
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def test_rows_are_quantised_one_at_a_time_after_smoothing():
    from titlecat.rowwise_int8 import (
        WEIGHT_LEVELS,
        activation_maxima_of,
        is_weight_matmul,
        rowwise_int8,
        smoothing_factors,
    )

    rng = np.random.default_rng(0)
    weight = rng.normal(size=(48, 24)).astype("float32")
    bias = rng.normal(size=24).astype("float32")
    x = rng.normal(size=(3, 5, 48)).astype("float32")
    x[..., 7] *= 30  # an outlier channel, as layer norms' outputs have
    fp32 = one_linear_layer(weight, bias)
    maxima = activation_maxima_of(fp32, [{"x": x}], [np.ones((3, 5), dtype="int64")])
    assert np.allclose(maxima["x"], np.abs(x).max(axis=(0, 1)))
    int8 = rowwise_int8(one_linear_layer(weight, bias), maxima)
    initializers = {tensor.name: onnx.numpy_helper.to_array(tensor) for tensor in int8.graph.initializer}
    assert not any(is_weight_matmul(node, initializers) for node in int8.graph.node)
    # No two neighbouring u8 x s8 products pass 32,767, which CPUs without VNNI add in 16 bits, saturating: so
    # every CPU computes the sums below, not only those with VNNI.
    (quantised,) = [value for name, value in initializers.items() if name.endswith("w_int8")]
    assert quantised.dtype == np.int8 and np.abs(quantised).max() == WEIGHT_LEVELS
    assert 255 * WEIGHT_LEVELS * 2 <= 32767
    found = run(int8, x)

    # The same arithmetic in numpy: smoothing moved into the weight, one scale per row and per output column.
    smoothing = smoothing_factors(maxima["x"], np.abs(weight).max(axis=1), 0.5)
    smoothed_x, smoothed_weight = x / smoothing, weight * smoothing[:, None]
    row_scale = np.abs(smoothed_x).max(axis=-1, keepdims=True) / 127
    column_scale = np.abs(smoothed_weight).max(axis=0) / WEIGHT_LEVELS
    x_int = np.round(smoothed_x / row_scale)
    w_int = np.round(smoothed_weight / column_scale)
    expected = (x_int @ w_int) * row_scale * column_scale + bias
    assert np.allclose(found, expected, atol=1e-4, rtol=1e-5)
    # Close to fp32, and not trivially: the weights are int8.
    exact = run(fp32, x)
    relative = np.abs(found - exact).max() / np.abs(exact).max()
    assert 0 < relative < 0.02, relative

    # A row's answer does not depend on the other rows: one title with huge activations beside it changes nothing
    # (one scale for the whole matrix would round every other row to a few steps).
    loud = x.copy()
    loud[0] *= 1000
    assert np.array_equal(run(int8, loud)[1:], found[1:])
    assert np.array_equal(run(int8, x[1:2, :3]), found[1:2, :3])
