"""The float IR: a single-input, single-output DAG of normalized nodes with constant params."""
from __future__ import annotations

from dataclasses import dataclass, field

from mcugen.errors import MCUGenError


@dataclass
class Node:
    name: str                 # the ONNX node name (sanitized only when it becomes C)
    op: str                   # normalized op kind, a key of the op registry
    inputs: list[str]         # activation tensor names, never constants
    output: str
    attrs: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)   # constant arrays: weight, bias, ...
    onnx_op: str = ""         # the ONNX op type of the node's main ONNX node, for reports


@dataclass
class Graph:
    nodes: list[Node]
    input: str
    output: str
    shapes: dict[str, tuple]               # every activation tensor, batch dimension 1
    output_transform: str | None = None    # "Softmax"/"LogSoftmax" run on the host side
    # the input is integer token ids indexing embedding tables of up to this many rows (None:
    # a float input)
    input_rows: int | None = None

    def producer(self, tensor: str) -> Node | None:
        for node in self.nodes:
            if node.output == tensor:
                return node
        return None

    def consumers(self, tensor: str) -> list[Node]:
        return [n for n in self.nodes if tensor in n.inputs]

    def toposort(self) -> None:
        """Order nodes so each comes after the producers of its inputs."""
        ready = {self.input}
        ordered, pending = [], list(self.nodes)
        while pending:
            progress = [n for n in pending if all(i in ready for i in n.inputs)]
            if not progress:
                names = ", ".join(f"'{n.name}'" for n in pending[:3])
                raise MCUGenError(f"the graph has a cycle or an unreachable input at {names}")
            for node in progress:
                ordered.append(node)
                ready.add(node.output)
                pending.remove(node)
        self.nodes = ordered

    def remove_node(self, node: Node, replacement_tensor: str) -> None:
        """Drop `node` and feed its consumers from `replacement_tensor`."""
        self.nodes.remove(node)
        for other in self.nodes:
            other.inputs = [replacement_tensor if t == node.output else t for t in other.inputs]
        if self.output == node.output:
            self.output = replacement_tensor
