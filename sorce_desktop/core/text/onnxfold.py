"""Fold a convolutional ONNX network's constant scales and shifts into its convolutions.

PaddleOCR's PP-LCNetV3 networks (the text detector's backbone) wrap every convolution in a "learnable
affine block": the convolution, a bias add, then ``x * a + b`` with scalar ``a``, ``b``, the activation,
and another ``x * c + d`` before the next convolution. Exported to ONNX these are separate elementwise
ops over full-size feature maps, and onnxruntime cannot run them in its blocked convolution layout:
each one is a pass over memory and a layout change there and back. On a 1920x1440 tile they were half
of the detector's time (profiled: Conv 39 %, Mul 18 %, Add 11 %, layout reorders 20 %).

Both kinds are folded into the weights, exactly:

- after a convolution: ``conv(x) * a + b`` is the same convolution with ``W * a`` and ``bias * a + b``
  (per output channel, or one scalar for all);
- before a convolution: ``x * c`` is the convolution with ``W * c`` (a scalar scale commutes with zero
  padding); ``(x * c) + d`` becomes ``(x + d / c) * c``, so the scale folds and the shift stays as an add;
  a shift folds into the bias (``bias + d * sum(W)``) only where the convolution pads nothing, because
  its zero padding would otherwise see ``d`` where it saw 0 (folding those as well changed 0.1-0.7 % of
  the probability map's pixels at the image borders: not done).

The folded network computes the same function up to float rounding (probability maps within 1e-4 on
coco-small photos, ``tests/test_ocr.py``) at about three quarters of the time.
"""

from __future__ import annotations

import numpy as np


def fold_affine(model_bytes: bytes) -> tuple[bytes, dict[str, int]]:
    """The model with its constant scales and shifts folded into its convolutions, serialised, and how
    many of each kind were folded. Raises ImportError without the ``onnx`` package."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load_from_string(model_bytes)
    graph = model.graph
    g = _Graph(graph, numpy_helper)
    counts = {"after": 0, "scale_before": 0, "shift_before": 0}
    changed = True
    while changed:
        changed = False
        for node in list(g.nodes):
            if node not in g.nodes or node.op_type not in ("Conv", "ConvTranspose") or node.input[1] not in g.consts:
                continue
            kind = g.fold_after(node) or (g.fold_before(node) if node.op_type == "Conv" else None)
            if kind:
                counts[kind] += 1
                changed = True
    g.write_back(graph, numpy_helper)
    onnx.checker.check_model(model)
    return model.SerializeToString(), counts


def _attr(node, name: str, default):
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


class _Graph:
    """The graph's nodes with its constants (initializers, Constant nodes and constant reshapes of
    them) as numpy arrays."""

    def __init__(self, graph, numpy_helper):
        self.consts: dict[str, np.ndarray] = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
        self.nodes = []
        for n in graph.node:
            if n.op_type == "Constant" and len(n.attribute) == 1 and n.attribute[0].name == "value":
                self.consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
            elif n.op_type == "Reshape" and all(i in self.consts for i in n.input[:2]):
                self.consts[n.output[0]] = self.consts[n.input[0]].reshape(self.consts[n.input[1]])
            else:
                self.nodes.append(n)
        self.outputs = {o.name for o in graph.output}
        for k, n in enumerate(self.nodes):
            n.name = n.name or f"node{k}"

    def users(self, name: str) -> list:
        return [n for n in self.nodes if name in n.input]

    def producer(self, name: str):
        return next((n for n in self.nodes if name in n.output), None)

    def split(self, node) -> tuple[str | None, np.ndarray | None]:
        """(variable input, constant input) of a binary op with exactly one constant input."""
        a, b = node.input
        if b in self.consts and a not in self.consts:
            return a, np.asarray(self.consts[b], np.float64)
        if a in self.consts and b not in self.consts:
            return b, np.asarray(self.consts[a], np.float64)
        return None, None

    def weights(self, conv) -> tuple[np.ndarray, np.ndarray, int]:
        w = np.asarray(self.consts[conv.input[1]], np.float64)
        groups = _attr(conv, "group", 1)
        channels = w.shape[0] if conv.op_type == "Conv" else w.shape[1] * groups
        has_bias = len(conv.input) > 2 and conv.input[2]
        bias = np.asarray(self.consts[conv.input[2]], np.float64) if has_bias else np.zeros(channels)
        return w, bias, channels

    def set_weights(self, conv, w: np.ndarray, bias: np.ndarray, source: str | None = None) -> None:
        wn, bn = f"{conv.name}__folded_w", f"{conv.name}__folded_b"
        self.consts[wn], self.consts[bn] = w.astype(np.float32), bias.astype(np.float32)
        inputs = [source or conv.input[0], wn, bn]
        del conv.input[:]
        conv.input.extend(inputs)

    def fold_after(self, conv) -> str | None:
        """``conv(x) * a`` or ``conv(x) + b`` (scalar or per output channel) into the convolution."""
        users = self.users(conv.output[0])
        if len(users) != 1 or conv.output[0] in self.outputs or users[0].op_type not in ("Add", "Mul"):
            return None
        op = users[0]
        x, c = self.split(op)
        w, bias, channels = self.weights(conv)
        if x != conv.output[0]:
            return None
        if c.size == 1:
            v = np.full(channels, float(c.ravel()[0]))
        elif c.size == channels and c.shape in [(channels,), (1, channels, 1, 1), (channels, 1, 1)]:
            v = c.ravel()
        else:
            return None
        if op.op_type == "Mul":
            if conv.op_type == "ConvTranspose" and _attr(conv, "group", 1) != 1:
                return None
            w = w * (v.reshape(-1, 1, 1, 1) if conv.op_type == "Conv" else v.reshape(1, -1, 1, 1))
            bias = bias * v
        else:
            bias = bias + v
        self.set_weights(conv, w, bias)
        conv.output[0] = op.output[0]
        self.nodes.remove(op)
        return "after"

    def fold_before(self, conv) -> str | None:
        """A scalar scale right before ``conv`` into its weights; a scalar shift into its bias where it
        pads nothing (see the module docstring)."""
        op = self.producer(conv.input[0])
        if op is None or op.op_type not in ("Add", "Mul") or len(self.users(op.output[0])) != 1:
            return None
        x, c = self.split(op)
        if x is None or c.size != 1 or float(c.ravel()[0]) == 0.0:
            return None
        s = float(c.ravel()[0])
        w, bias, _ = self.weights(conv)
        if op.op_type == "Mul":
            self.set_weights(conv, w * s, bias, source=x)
            self.nodes.remove(op)
            return "scale_before"
        scale = self.producer(x)
        if scale is not None and scale.op_type == "Mul" and len(self.users(scale.output[0])) == 1:
            y, k = self.split(scale)
            if y is not None and k.size == 1 and float(k.ravel()[0]) != 0.0:
                # (y * k) + s  ->  (y + s / k) * k, and the scale folds into the weights
                k = float(k.ravel()[0])
                shift = f"{op.name}__folded_shift"
                self.consts[shift] = np.asarray([s / k], np.float32)
                del op.input[:]
                op.input.extend([y, shift])
                self.set_weights(conv, w * k, bias)
                self.nodes.remove(scale)
                return "scale_before"
        if any(_attr(conv, "pads", [0])) or _attr(conv, "auto_pad", b"NOTSET") not in (b"NOTSET", b"VALID"):
            return None
        self.set_weights(conv, w, bias + s * w.sum(axis=(1, 2, 3)), source=x)
        self.nodes.remove(op)
        return "shift_before"

    def write_back(self, graph, numpy_helper) -> None:
        used = {i for n in self.nodes for i in n.input}
        del graph.node[:]
        graph.node.extend(self.nodes)
        del graph.initializer[:]
        graph.initializer.extend(
            numpy_helper.from_array(np.asarray(v), name) for name, v in self.consts.items() if name in used
        )
