"""Build ONNX Scan loops from Python functions that emit the loop body."""

from __future__ import annotations

from typing import Callable

from onnx import TensorProto, helper

from ..graph import GraphBuilder

BodyFn = Callable[[GraphBuilder, list[str], list[str]], tuple[list[str], list[str]]]


def scan(
    g: GraphBuilder,
    body_fn: BodyFn,
    states: list[str],
    sequences: list[str],
    num_scan_outputs: int,
    reverse: bool = False,
) -> tuple[list[str], list[str]]:
    """Run `body_fn(b, state_names, slice_names) -> (new_states, scan_outputs)` over axis 0.

    Returns (final states, stacked scan outputs). With `reverse` the loop runs from the last
    slice to the first and stacks outputs back in forward order. All values are float32;
    the body may read any outer-scope name (weights, constants) directly.
    """
    b = g.subgraph()
    state_in = [b.fresh("state") for _ in states]
    slice_in = [b.fresh("slice") for _ in sequences]
    for name in state_in + slice_in:
        b.inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    new_states, scan_outs = body_fn(b, state_in, slice_in)
    if len(scan_outs) != num_scan_outputs:
        raise AssertionError("scan body returned a different number of scan outputs")
    produced = {o for node in b.nodes for o in node.output}
    used: set[str] = set()
    for name in new_states + scan_outs:
        # a body output must come from a node of the body, and appear once
        if name not in produced or name in used:
            name = b.op("Identity", name)
        used.add(name)
        b.outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    n_out = len(states) + num_scan_outputs
    direction = [1 if reverse else 0]
    outputs = g.op(
        "Scan",
        *states,
        *sequences,
        outputs=n_out,
        hint="scan",
        body=b.to_graph(g.fresh("scan_body")),
        num_scan_inputs=len(sequences),
        scan_input_directions=direction * len(sequences),
        scan_output_directions=direction * num_scan_outputs,
    )
    outputs = [outputs] if isinstance(outputs, str) else outputs
    return outputs[: len(states)], outputs[len(states) :]
