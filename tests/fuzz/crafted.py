"""Hand-made ``.sqc`` inputs: valid seeds for the fuzzer, and one reproducer per bug the fuzzing work
found or prevented. ``python tests/fuzz/crafted.py`` (re)writes the ``valid-*`` and ``bug-*`` files of
``tests/fuzz/corpus``; the ``cov-*`` files come from fuzzing campaigns
(``benchmarks/fuzz_container.py --select-corpus``).
"""

from __future__ import annotations

import sys
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from sqc.formats import container, huffman
from sqc.formats.binio import varint
from sqc.formats.tensor_codec import FIXED, RAW_F32

sys.path.insert(0, str(Path(__file__).parent))
from mutate import deflate, inflate, join, split

CORPUS = Path(__file__).parent / "corpus"

PIPELINES = [
    "",  # raw float32 everywhere
    "prune{sparsity=0.5}",
    "quant{bits=4}",
    "quant{bits=3 granularity=channel},huffman",
    "prune{sparsity=0.7},quant{bits=5},huffman",
    "share{bits=2}",
    "prune{sparsity=0.6},share{bits=3},huffman",
    "share{bits=2},quant{bits=6}",
    "prune{sparsity=0.9},share{bits=4},quant{bits=8},huffman",
]


def seed_files() -> dict[str, bytes]:
    """Small valid files covering every codec, layout and stream coder sqc writes."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    from sqc.compiler.pass_base import PassContext
    from sqc.compiler.pipeline import Pipeline
    from sqc.frontend.trace import trace

    class Tiny(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3)
            self.bn = nn.BatchNorm2d(4)
            self.fc = nn.Linear(16, 5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = F.max_pool2d(F.relu(self.bn(self.conv(x))), 2)
            return F.softmax(self.fc(torch.flatten(x, 1)), dim=-1)

    class Mlp(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1 = nn.Linear(24, 16)
            self.fc2 = nn.Linear(16, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc2(torch.tanh(self.fc1(x)))

    out = {}
    for label, factory, shape in (("tiny", Tiny, (1, 1, 6, 6)), ("mlp", Mlp, (1, 24))):
        for number, text in enumerate(PIPELINES):
            torch.manual_seed(number)
            ir = trace(factory().eval(), [shape])
            if text:
                Pipeline.parse(text).run(ir, PassContext())
            out[f"seed-{label}-{number}.sqc"] = container.serialize(ir)
    return out


def open_files() -> dict[str, bytes]:
    """Valid format 1.3 files: ATen operators outside the vocabulary, a device argument, int64 and bool
    buffers (raw-typed), a tied weight (an alias) and a dict output in unsorted key order."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    import sqc

    class Open(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.wte = nn.Embedding(12, 6)
            self.norm = nn.LayerNorm(6)
            self.head = nn.Linear(6, 12, bias=False)
            self.head.weight = self.wte.weight
            self.register_buffer("steps", torch.arange(6, dtype=torch.int64))
            self.register_buffer("keep", torch.tensor([True, False] * 3))

        def forward(self, ids: torch.Tensor) -> dict[str, torch.Tensor]:
            h = F.hardswish(self.norm(self.wte(ids))) * self.keep
            h = torch.cumsum(h, -1) / (self.steps + 1) + torch.ones(6, device=ids.device)
            return {"logits": self.head(h), "hidden": h}

    out = {}
    for number, text in enumerate(("quant{bits=6},huffman", "prune{sparsity=0.5},share{bits=3},rans")):
        torch.manual_seed(number)
        out[f"seed-open-{number}.sqc"] = sqc.compress(Open().eval(), ["1,4:int64"], text).to_bytes()
    return out


RANS_PIPELINES = [
    "prune{sparsity=0.8},share{bits=3},rans",
    "prune{sparsity=0.6},quant{bits=5 params=8},rans",
]


def rans_files() -> dict[str, bytes]:
    """Valid format-1.2 files whose kernels really use the context-coded rANS layout (a model big
    enough that it beats Huffman; on the tiny models the container falls back to Huffman)."""
    import torch
    import torch.nn as nn

    from sqc.compiler.pass_base import PassContext
    from sqc.compiler.pipeline import Pipeline
    from sqc.frontend.trace import trace

    class Wide(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1 = nn.Linear(64, 48)
            self.fc2 = nn.Linear(48, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc2(torch.relu(self.fc1(x)))

    out = {}
    for number, text in enumerate(RANS_PIPELINES):
        torch.manual_seed(number)
        ir = trace(Wide().eval(), [(1, 64)])
        Pipeline.parse(text).run(ir, PassContext())
        out[f"valid-rans-{number}.sqc"] = container.serialize(ir)
    return out


def as_format_1_0(data: bytes) -> bytes:
    """The same file as sqc 1.0 wrote it: no seed, no header_crc32, version 1.0."""
    parsed = split(data)
    assert parsed is not None
    doc = inflate(parsed.sections[0][3])
    del doc["seed"], doc["header_crc32"]
    parsed.sections[0][1:4:2] = [container.JSON_ZLIB, deflate(doc)]  # 1.0 sections are plain zlib
    parsed.sections[-1][1:4:2] = [container.JSON_ZLIB, deflate(inflate(parsed.sections[-1][3]))]
    parsed.version = (1, 0)
    return join(parsed, fix_header_crc=False)


def craft(
    tensors: list[list[Any]],
    payloads: list[tuple[int, bytes]],
    nodes: list[Any] | None = None,
    version: tuple[int, int] = container.VERSION,
    graph_bytes: bytes | None = None,
    **extra: Any,
) -> bytes:
    """A well-framed file (every CRC right) around any graph metadata and tensor payloads."""
    if nodes is None:
        nodes = [["in", "x"]] + [["attr", f"t{i}", i] for i in range(len(tensors))] + [["out", {"%": 0}]]
    doc = {
        "schema": 1,
        "inputs": [["x", [1], "float32"]],
        "tensors": tensors,
        "pipeline": "",
        "producer": "test",
        "seed": 0,
        "nodes": nodes,
        "header_crc32": container.header_crc(len(payloads) + 2, version),
        **extra,
    }
    graph = graph_bytes if graph_bytes is not None else deflate(doc)
    bodies = [(container.KIND_GRAPH, 0, container.NO_TENSOR, graph)]
    bodies += [(container.KIND_TENSOR, codec, i, body) for i, (codec, body) in enumerate(payloads)]
    bodies.append((container.KIND_REPORT, 0, container.NO_TENSOR, deflate([])))
    return container.assemble(bodies, version)


def raw_tensor(values: list[float]) -> tuple[int, bytes]:
    data = np.asarray(values, dtype="<f4").tobytes()
    return RAW_F32, bytes([0]) + varint(len(data)) + data


def single_symbol_values(bits: int = 4) -> tuple[int, bytes]:
    """A dense fixed-point tensor whose Huffman stream says "every value is code 3": a few bytes that
    stand for any number of elements."""
    stream = huffman.serialize(huffman.encode(np.full(1, 3), 1 << bits))
    return FIXED, bytes([bits, 0, 0, 0b1010]) + varint(len(stream)) + stream


def sparse_empty() -> tuple[int, bytes]:
    """A sparse raw tensor with no kept value: all zeros, whatever its size."""
    return RAW_F32, bytes([1, 4]) + varint(0) + varint(0) + varint(0) + varint(0)


def rans_busy(tensors: int = 1) -> bytes:
    """A valid file of ``tensors`` dense 16-bit fixed-point tensors of 16,384 codes, all 0 but one, each
    context-coded in a 20-byte rANS stream (what ``rans.encode`` writes for them): 262,144 binary
    decisions per tensor from ~60 bytes of file. Format 1.2 as first written allowed it (a reader had to
    decode it, ~40 ms of numpy per byte); the decision cap (FORMAT.md: at most 256 + 640 per stream
    byte) now refuses it before decoding (``benchmarks/fuzz_container.py --bounds``)."""
    from sqc.formats.tensor_codec import CONTEXT_CODED, WANTS_RANS

    stream = bytes.fromhex("00041000700c373d28bf213dbd05d6e5582ddc2d")  # rans.encode, value mode 0
    body = bytes([16, 0, 0, CONTEXT_CODED | WANTS_RANS, 0]) + varint(len(stream)) + stream
    nodes: list[Any] = [["in", "x"]] + [["attr", f"t{i}", i] for i in range(tensors)]
    for i in range(tensors):
        nodes.append(["call", f"add_{i}", "add", [{"%": len(nodes) - 1 if i else 0}, {"%": 1 + i}], {}, None])
    names = [[f"t{i}", [16384], "param"] for i in range(tensors)]
    return craft(names, [(FIXED, body)] * tensors, nodes=[*nodes, ["out", {"%": len(nodes) - 1}]])


def zip_bomb(megabytes: int) -> bytes:
    """zlib of a JSON object padded with ``megabytes`` MB of spaces (~1000:1), built in pieces."""
    packer = zlib.compressobj(9)
    parts = [packer.compress(b'{"schema":1,"pad":"')]
    parts += [packer.compress(b" " * (1 << 20)) for _ in range(megabytes)]
    return b"".join([*parts, packer.compress(b'"}'), packer.flush()])


def huffman_huge_table(bits: int = 15) -> bytes:
    """A 4-value fixed-point tensor whose Huffman table lists all ``2^bits`` symbols (every length
    ``bits``: a complete code), with a payload of 4 codewords."""
    high = 1 << bits
    payload = bytes((4 * bits + 7) // 8)
    stream = varint(high) + bytes([bits - 1]) + b"\xff" * (high // 8) + varint(4 * bits) + payload
    body = bytes([bits, 0, 0, 0b1010]) + varint(len(stream)) + stream
    return craft([["t0", [4], "weight"]], [(FIXED, body)])


def quadratic_names(n: int = 40) -> bytes:
    nodes = [["in", f"a_{i}"] for i in range(1, n + 1)]
    for i in range(1, n + 1):
        nodes += [["in", f"a_0{i}"], ["in", f"a_0{i}"]]
    return craft([], [], nodes=[*nodes, ["out", {"%": 0}]])


def injected_tensor_name() -> bytes:
    name = 'a" if getattr(__import__("os"), "system")("touch /tmp/sqc-pwned") else "b'
    nodes = [["in", "x"], ["attr", "w", 0], ["call", "add", "add", [{"%": 0}, {"%": 1}], {}, None]]
    return craft([[name, [1], "param"]], [raw_tensor([1.0])], nodes=[*nodes, ["out", {"%": 2}]])


def injected_keyword() -> bytes:
    key = "inplace=getattr(__import__('os'), 'system')('touch /tmp/sqc-pwned') and False, x"
    nodes = [["in", "x"], ["call", "relu", "relu", [{"%": 0}], {key: 0}, None], ["out", {"%": 1}]]
    return craft([], [], nodes=nodes)


def aliased_names(names: list[str]) -> bytes:
    """One scalar per name, all added up: a model that reads every tensor, so that two names meeting
    as one attribute (or one C identifier) would silently change what it computes."""
    nodes: list[Any] = [["in", "x"]] + [["attr", f"t{i}", i] for i in range(len(names))]
    last = 0
    for i in range(len(names)):
        nodes.append(["call", f"add_{i}", "add", [{"%": last}, {"%": 1 + i}], {}, None])
        last = len(nodes) - 1
    payloads = [raw_tensor([float(i + 1)]) for i in range(len(names))]
    return craft([[name, [1], "param"] for name in names], payloads, nodes=[*nodes, ["out", {"%": last}]])


def minor_version_flip(data: bytes) -> bytes:
    damaged = bytearray(data)
    damaged[10] ^= 0x04  # a minor-version bit: was the only undetected single-bit flip
    return bytes(damaged)


def deep_json() -> bytes:
    text = '{"schema":1,"inputs":[],"pipeline":"","tensors":[],"nodes":' + "[" * 5000 + "]" * 5000 + "}"
    return craft([], [], graph_bytes=zlib.compress(text.encode(), 9))


def unused_tensor() -> bytes:
    return craft([["t0", [1], "param"]], [raw_tensor([1.0])], nodes=[["in", "x"], ["out", {"%": 0}]])


def bug_files(valid: bytes) -> dict[str, Callable[[], bytes]]:
    """Inputs that crashed, hung, blew up or were wrongly accepted before the fixes (all refused now)."""
    return {
        "bug-unused-tensor.sqc": unused_tensor,  # VerifyError escaped the reader (found by fuzzing)
        "bug-code-injection-tensor-name.sqc": injected_tensor_name,  # ran a shell command on forward()
        "bug-code-injection-keyword.sqc": injected_keyword,  # ran a shell command on forward()
        "bug-quadratic-node-names.sqc": quadratic_names,  # fx name search: 24k nodes took 10 s
        "bug-node-name-not-identifier.sqc": lambda: craft([], [], nodes=[["in", "print"], ["out", {"%": 0}]]),
        "bug-single-symbol-bomb.sqc": lambda: craft(
            [["t0", [1 << 17, 1 << 17], "weight"]], [single_symbol_values()]
        ),
        "bug-sparse-empty-bomb.sqc": lambda: craft([["t0", [1 << 34], "weight"]], [sparse_empty()]),
        "bug-huffman-huge-alphabet.sqc": huffman_huge_table,  # 2^24 symbols: 200x the file in memory
        "bug-zip-bomb-graph.sqc": lambda: craft([], [], graph_bytes=zip_bomb(4)),
        "bug-node-count.sqc": lambda: craft([], [], nodes=[["in", "x"]] * 1000 + [["out", {"%": 0}]]),
        "bug-deep-json.sqc": deep_json,
        "bug-minor-version-flip.sqc": lambda: minor_version_flip(valid),
        "bug-minor-version-flip-1.0.sqc": lambda: minor_version_flip(as_format_1_0(valid)),
        "bug-newer-major.sqc": lambda: newer_major(valid),
        "bug-name-nfkc-alias.sqc": lambda: aliased_names(["\ufb01.weight", "fi.weight"]),  # ran as fi.weight
        "bug-name-c-identifier-clash.sqc": lambda: aliased_names(["a.b_weight", "a_b.weight"]),  # one C name
        "bug-name-dunder.sqc": lambda: aliased_names(["__class__.weight"]),
    }


def newer_major(data: bytes) -> bytes:
    parsed = split(data)
    assert parsed is not None
    parsed.version = (2, 0)
    return join(parsed)


def main() -> int:
    CORPUS.mkdir(parents=True, exist_ok=True)
    seeds = seed_files()
    valid = {f"valid-{name.removeprefix('seed-')}": data for name, data in seeds.items() if "tiny" in name}
    valid["valid-format-1.0.sqc"] = as_format_1_0(seeds["seed-mlp-6.sqc"])
    valid.update(rans_files())
    files = {**valid, **{name: make() for name, make in bug_files(seeds["seed-mlp-6.sqc"]).items()}}
    for name, data in files.items():
        (CORPUS / name).write_bytes(data)
        print(f"{name}: {len(data)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
