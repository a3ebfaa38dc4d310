"""An fp32 ONNX graph's weight MatMuls as int8 MatMuls whose activations are quantised one row (one piece of one
title) at a time, so that a title's vector never depends on the other titles of its batch.

For each MatMul X @ W with W a weight:
  X / s                   smoothing (SmoothQuant): per input channel s = max|X|^a / max|W|^(1-a), measured on
                          calibration titles, moves the activations' outlier channels into the weights
  q = round(X / r) + 128  r = max|row| / 127, one scale per row: QuantizeLinear with one block per row
  Y = r * (q - 128) @ Wq * w   MatMulIntegerToFloat (u8 x s8 kernels), Wq in 7 bits (WEIGHT_LEVELS), w per
                          output column
ONNX Runtime's own schemes do not fit: `quantize_dynamic` scales the whole activation matrix at once (answers
changed with the batch), and `MatMulNBits` with int8 activations ran slower than fp32 here (docs/multilingual.md).
"""

from __future__ import annotations

import numpy as np

SMOOTHING_ALPHA = 0.5
# Weights in 7 bits (-63..63): x86 CPUs without VNNI (AVX2, AVX-512 without VNNI: AMD Zen 2 and 3, older Intel)
# multiply u8 x s8 with vpmaddubsw, which adds two products in 16 bits and saturates past 32,767; 255 x 127 x 2
# does, 255 x 63 x 2 = 32,130 does not. So every CPU computes the exact integer sums the graph says (with 8-bit
# weights an AMD EPYC without VNNI saturated some, and its vectors were not those of a VNNI CPU; docs/multilingual.md).
WEIGHT_LEVELS = 63
# QuantizeLinear's block along the last axis: longer than any row, so one scale per row (opset 21 blocks).
BLOCK_OF_ROW = 1 << 30
# Titles the smoothing is measured on: written for it, in the languages titlecat meets, none from any data set.
CALIBRATION_TITLES = (
    "Senior Software Engineer",
    "Head of Marketing and Communications",
    "Werkstudent Vertrieb",
    "Geschäftsführer",
    "Leiter Einkauf und Logistik",
    "Sachbearbeiterin Personalwesen",
    "Responsable commercial grands comptes",
    "Chargée de recrutement",
    "Directeur administratif et financier",
    "Ingénieur support client",
    "Jefe de proyecto",
    "Analista de datos junior",
    "Directora de recursos humanos",
    "Técnico de sistemas informáticos",
    "Projectleider bouw",
    "Medewerker inkoop",
    "Accountmanager zakelijke markt",
    "Teamleider klantenservice",
    "Responsabile acquisti",
    "Consulente commerciale",
    "Kierownik działu sprzedaży",
    "Gerente de contas",
    "IT-Administrator (m/w/d)",
    "Chief Executive Officer & Co-Founder",
    "Praktikant Online-Marketing",
    "Customer Success Manager DACH",
    "Assistant de direction",
    "Business Development Representative",
    "Key Account Manager Automotive",
    "Prokurist / Bereichsleiter Finanzen",
    "SAP Berater FI/CO",
    "Product Owner",
    "Auszubildende Bürokauffrau",
    "Vice President Sales EMEA",
    "Office Manager",
    "Stagiaire en communication digitale",
    "DevOps Engineer - Cloud Platform",
    "Recruiter",
    "Lead Buyer Electronics",
    "Teamlead Backend Development",
)


def rowwise_int8(model, activation_maxima: dict[str, np.ndarray], alpha: float = SMOOTHING_ALPHA):
    """Rewrite `model` (an onnx ModelProto, changed in place and returned): every MatMul whose second input is a
    2-D initializer becomes the row-wise int8 form above. `activation_maxima`: max |X| per input channel of each
    such MatMul's first input, by name (`activation_maxima_of`)."""
    from onnx import helper, numpy_helper

    graph = model.graph
    weights = {tensor.name: numpy_helper.to_array(tensor) for tensor in graph.initializer}
    constants = {
        "rowq_last_axis": np.array([-1], dtype=np.int64),
        "rowq_inv127": np.array(1 / 127, dtype=np.float32),
        "rowq_tiny": np.array(1e-12, dtype=np.float32),
        "rowq_zero_point": np.array(128, dtype=np.uint8),
        "rowq_one": np.array(1, dtype=np.float32),
    }
    new_initializers = [numpy_helper.from_array(value, name) for name, value in constants.items()]
    nodes, rewritten = [], 0
    for node in graph.node:
        if not is_weight_matmul(node, weights):
            nodes.append(node)
            continue
        # Each MatMul its own smoothing, so its own quantised X: sharing one among a layer's query, key and value
        # ran 15% faster but agreed with fp32 on fewer answers (docs/multilingual.md).
        x, y, prefix = node.input[0], node.output[0], f"rowq{rewritten}_"
        rewritten += 1
        weight = weights[node.input[1]]
        smoothing = smoothing_factors(activation_maxima[x], np.abs(weight).max(axis=1), alpha)
        weight = weight * smoothing[:, None]
        column_scale = (np.maximum(np.abs(weight).max(axis=0), 1e-12) / WEIGHT_LEVELS).astype(np.float32)
        new_initializers += [
            numpy_helper.from_array(1 / smoothing, prefix + "inv_smoothing"),
            numpy_helper.from_array(np.round(weight / column_scale).astype(np.int8), prefix + "w_int8"),
            numpy_helper.from_array(column_scale, prefix + "w_scale"),
        ]
        nodes += quantise_rows(helper, x, prefix, first=rewritten == 1)
        nodes += [
            helper.make_node(
                "MatMulIntegerToFloat",
                [prefix + "x_uint8", prefix + "w_int8", "rowq_one", prefix + "w_scale", "rowq_zero_point"],
                [prefix + "y_unscaled"],
                domain="com.microsoft",
            ),
            helper.make_node("Mul", [prefix + "y_unscaled", prefix + "row_scale"], [y]),
        ]
    used = {name for node in nodes for name in node.input}
    kept = [tensor for tensor in graph.initializer if tensor.name in used]
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.initializer[:]
    graph.initializer.extend(kept + new_initializers)
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx"):
            opset.version = max(opset.version, 21)  # blocked QuantizeLinear
    if not any(opset.domain == "com.microsoft" for opset in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return model


def quantise_rows(helper, x: str, prefix: str, first: bool) -> list:
    """Nodes: X smoothed and quantised to uint8 (zero point 128) with one scale per row: max |X| of the row as
    the larger of its max and -min (two reads, no |X| written)."""
    from onnx import TensorProto

    nodes = [
        helper.make_node("Mul", [x, prefix + "inv_smoothing"], [prefix + "x_smoothed"]),
        helper.make_node("ReduceMax", [prefix + "x_smoothed", "rowq_last_axis"], [prefix + "row_high"], keepdims=1),
        helper.make_node("ReduceMin", [prefix + "x_smoothed", "rowq_last_axis"], [prefix + "row_low"], keepdims=1),
        helper.make_node("Neg", [prefix + "row_low"], [prefix + "row_low_negated"]),
        helper.make_node("Max", [prefix + "row_high", prefix + "row_low_negated"], [prefix + "row_max"]),
        helper.make_node("Max", [prefix + "row_max", "rowq_tiny"], [prefix + "row_max_positive"]),
        helper.make_node("Mul", [prefix + "row_max_positive", "rowq_inv127"], [prefix + "row_scale"]),
    ]
    if first:
        # QuantizeLinear wants one zero point per row, shaped like the scales: 128 each. Every X of the graph has
        # the same rows (titles x pieces, in the encoder's layers), so the first MatMul's serve all.
        nodes += [
            helper.make_node("Shape", [prefix + "row_scale"], ["rowq_rows"]),
            helper.make_node(
                "ConstantOfShape",
                ["rowq_rows"],
                ["rowq_row_zero_point"],
                value=helper.make_tensor("", TensorProto.UINT8, [1], [128]),
            ),
        ]
    return nodes + [
        helper.make_node(
            "QuantizeLinear",
            [prefix + "x_smoothed", prefix + "row_scale", "rowq_row_zero_point"],
            [prefix + "x_uint8"],
            axis=-1,
            block_size=BLOCK_OF_ROW,
        ),
    ]


def is_weight_matmul(node, weights: dict) -> bool:
    return node.op_type == "MatMul" and node.input[1] in weights and weights[node.input[1]].ndim == 2


def smoothing_factors(activation_max: np.ndarray, weight_max: np.ndarray, alpha: float) -> np.ndarray:
    factors = np.maximum(activation_max, 1e-5) ** alpha / np.maximum(weight_max, 1e-5) ** (1 - alpha)
    return np.clip(factors, 1e-2, 1e2).astype(np.float32)


def activation_maxima_of(model, feeds: list[dict[str, np.ndarray]], masks: list[np.ndarray]) -> dict:
    """max |X| per channel of each weight MatMul's input X, over the unmasked rows of `feeds` run through the fp32
    `model` (a ModelProto; a copy is changed)."""
    import onnxruntime
    from onnx import TensorProto, helper, numpy_helper

    probe = type(model)()
    probe.CopyFrom(model)
    weights = {tensor.name: numpy_helper.to_array(tensor) for tensor in probe.graph.initializer}
    names = sorted({node.input[0] for node in probe.graph.node if is_weight_matmul(node, weights)})
    for name in names:
        probe.graph.output.append(helper.make_value_info(name, helper.make_tensor_type_proto(TensorProto.FLOAT, None)))
    session = onnxruntime.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    maxima: dict[str, np.ndarray] = {}
    for feed, mask in zip(feeds, masks, strict=True):
        for name, value in zip(names, session.run(names, feed), strict=True):
            maxima[name] = np.maximum(maxima.get(name, 0), np.abs(value[mask.astype(bool)]).max(axis=0))
    return maxima
