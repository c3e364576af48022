"""A small builder for ONNX graphs: unique names, deduplicated constants, subgraphs.

Every lowering in `ops/` emits nodes through a `GraphBuilder`; it owns naming so that
names stay unique across nested subgraphs (ONNX forbids shadowing outer-scope names).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 18

ELEM_TYPES = {
    np.dtype("float32"): TensorProto.FLOAT,
    np.dtype("float64"): TensorProto.DOUBLE,
    np.dtype("int64"): TensorProto.INT64,
    np.dtype("int32"): TensorProto.INT32,
    np.dtype("bool"): TensorProto.BOOL,
}


def elem_type(dtype) -> int:
    return ELEM_TYPES[np.dtype(dtype)]


@dataclass
class _Names:
    counter: itertools.count = field(default_factory=itertools.count)

    def fresh(self, hint: str) -> str:
        return f"{hint}_{next(self.counter)}"


class GraphBuilder:
    """Collects nodes, inputs, outputs and constants for one ONNX graph.

    Constants are deduplicated by value and always stored on the root graph, so a
    subgraph (a Scan body) refers to them through the outer scope.
    """

    def __init__(self, names: _Names | None = None, root: GraphBuilder | None = None):
        self._names = names or _Names()
        self._root = root or self
        self.nodes: list[onnx.NodeProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._constants: dict[tuple, str] = {}
        self._shared: dict[tuple, object] = {}
        self._exported: set[str] = set()
        self._aliases: dict[str, str] = {}  # renamed by identity(): old name -> public name
        self._hints: dict[str, tuple] = {}  # value name -> (dtype, shape), see hint_shape

    def fresh(self, hint: str) -> str:
        return self._names.fresh(hint)

    def subgraph(self) -> GraphBuilder:
        return GraphBuilder(self._names, self._root)

    # -- nodes ---------------------------------------------------------------------
    def op(
        self,
        op_type: str,
        *inputs: str | None,
        outputs: int | list[str] = 1,
        hint: str | None = None,
        **attrs,
    ) -> str | list[str]:
        """Emit one node; returns its output name (or list of names if several)."""
        if isinstance(outputs, int):
            out_names = [self.fresh(hint or op_type.lower()) for _ in range(outputs)]
        else:
            out_names = list(outputs)
        aliases = self._root._aliases
        ins = ["" if i is None else aliases.get(i, i) for i in inputs]
        self.nodes.append(
            helper.make_node(op_type, ins, out_names, name=self.fresh("n_" + op_type), **attrs)
        )
        return out_names[0] if len(out_names) == 1 and isinstance(outputs, int) else out_names

    def const(self, value, dtype="float32") -> str:
        """A constant tensor (deduplicated), stored as a root-graph initializer."""
        array = np.asarray(value, dtype=dtype)
        key = (array.dtype.str, array.shape, array.tobytes())
        root = self._root
        if key not in root._constants:
            name = root.fresh("const")
            root.initializers.append(numpy_helper.from_array(array, name))
            root._constants[key] = name
        return root._constants[key]

    def shared(self, key: tuple, build):
        """`build()` the first time `key` is asked for, its cached result afterwards: values
        every parameter's update needs (Adam's bias corrections) are emitted once."""
        if key not in self._shared:
            self._shared[key] = build()
        return self._shared[key]

    def ints(self, *values: int) -> str:
        return self.const(list(values), "int64")

    # -- graph I/O -------------------------------------------------------------------
    def add_input(self, name: str, dtype, shape) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, elem_type(dtype), shape))
        return name

    def add_output(self, name: str, dtype, shape=None) -> str:
        self.outputs.append(helper.make_tensor_value_info(name, elem_type(dtype), shape))
        return name

    def identity(self, source: str, name: str) -> str:
        """Give `source` a fixed public name (graph outputs need stable names).

        A value computed by a node of this graph is renamed where it is produced and used
        (in subgraphs too); graph inputs, constants and values already given a public name
        get an Identity node. Small graphs run a node in about a microsecond, so the
        outputs' Identity nodes were a tenth of the MLP's step.
        """
        producer = next((n for n in self.nodes if source in n.output), None)
        if producer is None or source in self._exported:
            self._exported.add(name)
            return self.op("Identity", source, outputs=[name])[0]
        _rename(self.nodes, source, name)
        self._aliases[source] = name
        self._exported.add(name)
        return name

    def hint_shape(self, name: str, dtype, shape: list[int | str]) -> str:
        """Declare the shape of value `name` (ints and symbolic dimension names) in the
        graph's value_info; returns `name`.

        ONNX Runtime writes an op's output into an input's buffer (ScatterElements in
        place instead of a copy of its data) only when it can prove the two have the
        same shape. A Reshape to -1 leaves a dimension unknown, and an unknown dimension
        equals no other, so [B, T, C] logits flattened to [-1, C] lost that; a symbol
        naming the dimension restores it. A symbol claims equal sizes wherever it
        appears: give each independent dimension its own (`fresh`)."""
        self._hints[name] = (dtype, shape)
        return name

    def to_graph(self, name: str) -> onnx.GraphProto:
        aliases = self._root._aliases
        hints = [
            helper.make_tensor_value_info(aliases.get(n, n), elem_type(dtype), shape)
            for n, (dtype, shape) in self._hints.items()
        ]
        return helper.make_graph(
            self.nodes,
            name,
            self.inputs,
            self.outputs,
            initializer=self.initializers,
            value_info=hints,
        )

    def to_model(self, name: str) -> onnx.ModelProto:
        model = helper.make_model(
            self.to_graph(name),
            opset_imports=[helper.make_opsetid("", OPSET)],
            producer_name="edge-fl model_zoo",
        )
        model.ir_version = 8
        return model


def _rename(nodes, old: str, new: str) -> None:
    for node in nodes:
        for k, v in enumerate(node.input):
            if v == old:
                node.input[k] = new
        for k, v in enumerate(node.output):
            if v == old:
                node.output[k] = new
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                _rename(attr.g.node, old, new)
