"""``huffman``: canonical Huffman coding of weight codes and sparse-index gaps (Deep Compression, step 3)."""

from __future__ import annotations

from dataclasses import dataclass

from sqc.compiler.pass_base import Pass, PassContext, PassResult
from sqc.ir.records import CompressedModel
from sqc.passes._common import byte_totals, selected, set_coder


@dataclass(frozen=True)
class Huffman(Pass):
    """Entropy-code each selected tensor's integer codes and its relative sparse index.

    One canonical code per stream and per tensor; the container stores only the code lengths, and
    the decoder rebuilds the code from them (bitarray's C coder on both sides). Values are unchanged,
    so this pass only changes how many bytes the tensors take; a tensor for which the Huffman layout
    would be larger keeps the plain packed layout (the container chooses per stream).
    """

    name = "huffman"
    summary = "canonical Huffman coding of weight codes and sparse-index gaps, per tensor"
    requires = {"codes": "huffman codes integers: put share or quant before it"}
    establishes = frozenset({"entropy-coded"})
    preserves = frozenset({"sensitivity"})

    layers: str = "*"

    def run(self, model: CompressedModel, ctx: PassContext) -> PassResult:
        layers = {}
        for state in selected(model, self.layers, self.name):
            if state.codes is None:
                continue
            ctx.note(f"huffman: {state.name} ({state.numel:,} weights)")
            layers[state.name] = set_coder(state, "huffman")
        stats = byte_totals(layers)
        return PassResult(bool(layers), stats, layers)
