"""``rans``: context-adaptive binary rANS coding of the pruning pattern and the weight codes."""

from __future__ import annotations

from dataclasses import dataclass

from sqc.compiler.pass_base import Pass, PassContext, PassResult
from sqc.formats.rans import IMPLEMENTATION, estimated_seconds
from sqc.ir.records import CompressedModel
from sqc.passes._common import byte_totals, selected, set_coder

SLOW_SECONDS = 60.0
"""A tensor estimated to take longer than this to code gets a warning naming the estimate."""


@dataclass(frozen=True)
class Rans(Pass):
    """Entropy-code each selected tensor's pruning mask and integer codes with context models.

    Goes below the zero-order entropy that bounds ``huffman``: each position's kept/pruned decision is
    coded with a context made of the run of pruned positions before it and its column's density so
    far (dead input columns cost almost nothing), and each code bit by bit with a context made of the
    previous code in the row; probabilities adapt as the tensor is coded, so no tables are stored
    (``formats/rans.py``, ``FORMAT.md``). Values are unchanged. Where Huffman or plain packing is
    smaller (tiny tensors), the container keeps that layout; symbols wider than 16 bits always do.
    """

    name = "rans"
    summary = "context-adaptive binary rANS coding of the sparse mask and weight codes, per tensor"
    requires = {"codes": "rans codes integers: put share or quant before it"}
    conflicts = {"entropy-coded": "the tensors are already entropy coded (huffman or rans ran before)"}
    establishes = frozenset({"entropy-coded"})
    preserves = frozenset({"sensitivity"})

    layers: str = "*"

    def run(self, model: CompressedModel, ctx: PassContext) -> PassResult:
        layers = {}
        diagnostics = []
        for state in selected(model, self.layers, self.name):
            if state.codes is None:
                continue
            width = state.bits_per_weight()
            seconds = estimated_seconds(state.numel, state.kept, int(width), state.mask is not None)
            ctx.note(
                f"rans: {state.name} ({state.numel:,} weights, ~{seconds:.0f} s, {IMPLEMENTATION} coder)"
            )
            if seconds > SLOW_SECONDS:
                diagnostics.append(
                    f"{state.name}: rANS coding of {state.numel:,} weights takes about {seconds:.0f} s here "
                    f"({IMPLEMENTATION} coder; decoding about half): use huffman for this layer (layers=) if "
                    "that is too slow"
                )
            layers[state.name] = set_coder(state, "rans")
        stats = byte_totals(layers)
        return PassResult(bool(layers), stats, layers, diagnostics)
