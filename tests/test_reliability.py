"""Reliability and security: hostile bytes, bounded resources, safe loading, no data loss, reproducibility.

The long fuzzing campaigns live in ``benchmarks/fuzz_container.py``; this file replays their regression
corpus (``tests/fuzz/corpus``) and checks, exhaustively where that is cheap, what they sample.
"""

from __future__ import annotations

import functools
import hashlib
import os
import random
import re
import select
import signal
import subprocess
import sys
import time
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sqc
from sqc.compiler.pass_base import PassContext
from sqc.compiler.pipeline import Pipeline
from sqc.errors import SqcError, SqcFormatError
from sqc.formats import container, huffman
from sqc.formats.binio import varint
from sqc.formats.graph_codec import decode_graph, json_limit
from sqc.formats.tensor_codec import CODEBOOK, FIXED, RAW_F32, decode_tensor
from sqc.frontend.trace import trace

TESTS = Path(__file__).parent
CORPUS = TESTS / "fuzz" / "corpus"
sys.path.insert(0, str(TESTS / "fuzz"))

from crafted import (  # noqa: E402
    as_format_1_0,
    craft,
    open_files,
    raw_tensor,
    single_symbol_values,
    sparse_empty,
    zip_bomb,
)
from mutate import join, mutate, random_bytes_mutation, split  # noqa: E402


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(8, 6)
        self.fc2 = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(x)))


@functools.cache
def small_file(pipeline: str = "prune{sparsity=0.5},share{bits=2},huffman") -> bytes:
    torch.manual_seed(0)
    ir = trace(Tiny().eval(), [(1, 8)])
    Pipeline.parse(pipeline).run(ir, PassContext())
    return container.serialize(ir)


def load(data: bytes, **options) -> object:
    """What ``sqc.load`` does with bytes: the layout, then the model, which must verify."""
    model = container.model_from_layout(container.read_layout(data, **options), "test")
    model.verify()
    return model


def refused(data: bytes, match: str | None = None) -> SqcFormatError:
    with pytest.raises(SqcFormatError, match=match) as info:
        load(data)
    assert info.value.offset is not None, str(info.value)
    return info.value


# --------------------------------------------------------------------------- the regression corpus


def corpus_files() -> list[Path]:
    return sorted(p for p in CORPUS.iterdir() if p.suffix == ".sqc")


def test_corpus_is_small_and_present():
    files = corpus_files()
    assert 20 <= len(files) <= 80
    assert all(p.stat().st_size <= 8192 for p in files)
    assert any(p.name.startswith("valid-") for p in files) and any(p.name.startswith("bug-") for p in files)


@pytest.mark.parametrize("path", corpus_files(), ids=lambda p: p.name)
def test_corpus_replays(path: Path):
    """``valid-*`` files load; ``bug-*`` files (inputs that once crashed or were wrongly accepted) and
    ``cov-*`` files (coverage-guided finds) must load or be refused with an offset, nothing else."""
    data = path.read_bytes()
    if path.name.startswith("valid-"):
        load(data)
    elif path.name.startswith("bug-"):
        refused(data)
    else:
        try:
            load(data)
        except SqcFormatError as exc:
            assert exc.offset is not None, str(exc)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), rounds=st.integers(1, 3))
def test_structured_mutations_are_refused_or_valid(seed, rounds):
    """Hypothesis drives the fuzzer's mutator (CRCs fixed up, so the changes reach the decoders)."""
    rng = random.Random(seed)
    data = rng.choice(SEEDS)
    for _ in range(rounds):
        data = mutate(data, rng, lambda blob, size: random_bytes_mutation(blob, size, rng))
    try:
        load(data)
    except SqcFormatError as exc:
        assert exc.offset is not None, str(exc)


SEEDS = [
    small_file(),
    small_file("quant{bits=4 granularity=channel},huffman"),
    small_file("prune{sparsity=0.7},quant{bits=5}"),
    small_file("share{bits=2},quant{bits=6}"),
    *open_files().values(),  # format 1.3: ATen operators, typed buffers, a tie, an ordered dict output
]


# --------------------------------------------------------------------------- every bit, every offset


@pytest.mark.parametrize("pipeline", ["prune{sparsity=0.5},share{bits=2},huffman", "quant{bits=4},huffman"])
def test_every_single_bit_flip_is_detected(pipeline):
    data = small_file(pipeline)
    assert len(data) < 1500
    for bit in range(8 * len(data)):
        damaged = bytearray(data)
        damaged[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(SqcFormatError) as info:
            container.read_layout(bytes(damaged))
        assert info.value.offset is not None, (bit, str(info.value))


def test_every_single_bit_flip_of_a_rans_file_is_detected():
    from crafted import rans_files

    from sqc.app.inspection import inspect_container

    data = rans_files()["valid-rans-1.sqc"]  # quant codes and 8-bit fixed-point biases, rANS-coded
    streams = [t["streams"] for t in inspect_container(data, "x")["tensors"] if t["role"] == "weight"]
    assert all(s == {"values": "rans", "index": "rans"} for s in streams), streams
    for bit in range(8 * len(data)):
        damaged = bytearray(data)
        damaged[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(SqcFormatError) as info:
            load(bytes(damaged))
        assert info.value.offset is not None
    for cut in range(len(data)):
        with pytest.raises(SqcFormatError):
            container.read_layout(data[:cut])


def test_format_1_0_files_still_read_and_every_flip_is_detected():
    old = as_format_1_0(small_file())
    layout = container.read_layout(old)
    assert layout.version == (1, 0) and layout.seed == 0
    load(old)
    for bit in range(8 * len(old)):
        damaged = bytearray(old)
        damaged[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(SqcFormatError):
            container.read_layout(bytes(damaged))


def test_header_fields_outside_the_table_crc_are_covered():
    data = small_file()
    minor = bytearray(data)
    minor[10] ^= 1  # 1.1 -> 1.0: the header_crc32 in the graph no longer matches
    refused(bytes(minor), "header checksum mismatch")
    newer_minor = split(data)
    newer_minor.version = (1, 7)  # a later minor version, rewritten consistently, reads fine
    assert container.read_layout(join(newer_minor)).version == (1, 7)
    unchecked = split(data)
    unchecked.version = (1, 3)
    refused(join(unchecked, fix_header_crc=False), "header checksum mismatch")


def test_truncation_at_every_offset_and_padding():
    data = small_file()
    for cut in range(len(data)):
        with pytest.raises(SqcFormatError) as info:
            container.read_layout(data[:cut])
        assert info.value.offset is not None
    for extra in (b"\x00", b"\x00" * 19, data[-64:]):
        refused(data + extra, "truncated or padded")


def test_newer_major_version_says_upgrade():
    parsed = split(small_file())
    parsed.version = (2, 0)
    error = refused(join(parsed), r"written by a newer sqc \(format 2\.0\); upgrade sqc to read it")
    assert error.offset == 8
    parsed.version = (0, 9)
    refused(join(parsed), r"unsupported \.sqc version 0\.9")


def rebuilt(data: bytes, edit) -> bytes:
    parsed = split(data)
    edit(parsed.sections)
    return join(parsed)


@pytest.mark.parametrize(
    "edit",
    [
        lambda s: s.__setitem__(slice(1, 3), [s[2], s[1]]),  # two tensor sections swapped
        lambda s: s.insert(2, list(s[1])),  # a tensor section duplicated
        lambda s: s.insert(1, list(s[0])),  # the graph duplicated
        lambda s: s.insert(1, list(s[-1])),  # the report duplicated
        lambda s: s.insert(0, s.pop()),  # report first
        lambda s: s.append(s.pop(0)),  # graph last
        lambda s: s.pop(2),  # a tensor missing
        lambda s: s[1].__setitem__(2, 7),  # a tensor number out of place
        lambda s: s[0].__setitem__(1, 2),  # a codec on the graph
    ],
    ids=[
        "swap",
        "dup-tensor",
        "dup-graph",
        "dup-report",
        "report-first",
        "graph-last",
        "drop",
        "renumber",
        "codec",
    ],
)
def test_sections_reordered_duplicated_or_dropped(edit):
    refused(rebuilt(small_file(), edit))


# --------------------------------------------------------------------------- hostile content


def peak_bytes(data: bytes) -> tuple[SqcFormatError, int]:
    """The error reading ``data`` raises, and the peak of Python/numpy allocations while reading it."""
    tracemalloc.start()
    try:
        with pytest.raises(SqcFormatError) as info:
            load(data)
        return info.value, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize(
    "shape",
    [[1 << 17, 1 << 17], [1 << 34], [1 << 11, 1 << 11, 1 << 11], [3, 1 << 20]],
    ids=["2^34", "2^34-flat", "2^33", "3M"],
)
@pytest.mark.parametrize("payload", [single_symbol_values, sparse_empty], ids=["single-symbol", "empty"])
def test_huge_shapes_are_refused_before_allocating(shape, payload):
    data = craft([["t0", shape, "weight"]], [payload()])
    error, peak = peak_bytes(data)
    assert "decompression bomb" in str(error)
    assert peak < 64 * len(data) + (256 << 10), peak


def test_element_budget_follows_the_file_size():
    assert container.element_budget(300) == container.MAX_ELEMENTS_BASE + 300 * container.ELEMENTS_PER_BYTE
    n = container.MAX_ELEMENTS_BASE // 4  # within the base allowance: decoded
    data = craft([["t0", [n], "weight"]], [single_symbol_values()])
    assert container.read_layout(data).tensors["t0"][0].codes.shape == (n,)
    # a trusted file may be read past the budget
    big = craft([["t0", [4 * container.MAX_ELEMENTS_BASE], "weight"]], [sparse_empty()])
    refused(big, "decompression bomb")
    assert container.read_layout(big, max_elements=1 << 23).tensors["t0"][0].numel == 1 << 22


def test_zip_bomb_in_the_graph_and_report():
    graph = zip_bomb(64)
    data = craft([], [], graph_bytes=graph)
    error, peak = peak_bytes(data)
    assert "zip bomb" in str(error)
    assert peak < 2 * json_limit(len(graph)) + (1 << 20), peak  # nowhere near the 64 MB it claims
    parsed = split(small_file())
    assert parsed.sections[-1][1] == container.JSON_PRESET  # format 1.2: raw DEFLATE, the zlib body
    parsed.sections[-1][3] = graph[2:-4]
    error, peak = peak_bytes(join(parsed))
    assert "report section inflates" in str(error) and peak < 2 * json_limit(len(graph)) + (1 << 20)


def test_huge_varints_and_lengths():
    numel = 64
    cases = {
        "entries": bytes([1, 4]) + varint(1 << 62) + varint(0),
        "kept": bytes([1, 4]) + varint(0) + varint(1 << 40),
        "index length": bytes([1, 4]) + varint(1) + varint(1) + varint((1 << 62) - 1),
        "values length": bytes([0]) + varint((1 << 62) + 3),
        "overlong varint": bytes([0]) + b"\xff" * 12,
    }
    for label, body in cases.items():
        error, peak = peak_bytes(craft([["t0", [numel], "weight"]], [(RAW_F32, body)]))
        assert "varint" in str(error) or "exceeds the limit" in str(error), (label, str(error))
        assert peak < 1 << 20, label
    parsed = split(small_file())
    parsed.sections[1][3] += bytes(16)  # a section longer than its content: trailing bytes
    refused(join(parsed), "trailing bytes")


def test_huffman_table_claiming_a_huge_alphabet():
    # A fixed 24-bit tensor (alphabet 2^24) of 4 values whose Huffman table lists all 2^24 symbols.
    high = 1 << 24
    table = varint(high) + bytes([23]) + b"\xff" * (high // 8)  # every length 24: a complete code
    stream = table + varint(96) + bytes(12)
    body = bytes([24, 0, 0, 0b1010]) + varint(len(stream)) + stream
    data = craft([["t0", [4], "weight"]], [(FIXED, body)])
    error, peak = peak_bytes(data)
    assert "more than the 4 symbols" in str(error)
    assert peak < 32 * len(data), peak  # the uint8 table, not 16M Python objects
    with pytest.raises(SqcFormatError, match="covers 65537 symbols"):
        huffman.deserialize(varint(65537) + b"\x00", 65536, 4)


def test_node_names_cannot_make_graph_building_quadratic():
    """fx's free-name search is linear per clash; names that clash on purpose made it quadratic
    (24k crafted nodes took 10 s). A name fx would change is refused at the first clash."""
    n = 3000
    nodes = [["in", f"a_{i}"] for i in range(1, n + 1)]
    for i in range(1, n + 1):
        nodes += [["in", f"a_0{i}"], ["in", f"a_0{i}"]]
    nodes.append(["out", {"%": 0}])
    with pytest.raises(SqcFormatError, match="not a valid, unique node name") as info:
        decode_graph({"schema": 1, "nodes": nodes}, [], 0)  # no node limit: the name rule alone
    position = int(re.search(r"node #(\d+)", str(info.value)).group(1))
    assert n <= position <= n + 1  # the first crafted name, before any search could run long
    refused(craft([], [], nodes=nodes))  # in a file, the node limit refuses it even earlier


def test_node_count_is_bounded_by_the_section_size():
    # 1000 identical nodes: 11 KB of JSON that deflate to ~60 bytes, far more nodes than bytes.
    nodes = [["in", "x"]] * 1000 + [["out", {"%": 0}]]
    refused(craft([], [], nodes=nodes), "more than a section of this size can describe")


@pytest.mark.parametrize("where", ["nodes", "tensors", "schema", "pipeline"])
def test_deeply_nested_json_is_refused(where):
    deep = "[" * 5000 + "]" * 5000 if where == "nodes" else "[" * 800 + "]" * 800
    fields = {"schema": "1", "inputs": "[]", "pipeline": '""', "tensors": "[]", "nodes": "[]"}
    fields[where] = f"[{deep}]" if where == "tensors" else deep
    text = "{" + ",".join(f'"{k}":{v}' for k, v in fields.items()) + "}"
    refused(craft([], [], graph_bytes=zlib.compress(text.encode(), 9)))


@pytest.mark.parametrize(
    "tensor_name",
    [
        'a" if getattr(__import__("os"), "system")("touch MARKER") else "b',
        "a\\",
        "a\nb",
        "a..b",
        "",
        ".".join(["m"] * 100),
    ],
    ids=["quote", "backslash", "newline", "empty-part", "empty", "deep"],
)
def test_tensor_names_cannot_inject_code(tmp_path, tensor_name):
    """fx quotes a name part that is not an identifier inside getattr(self, "...") in the source it
    generates; a quote in a tensor name used to run code from the file when the model was called."""
    marker = tmp_path / "marker"
    name = tensor_name.replace("MARKER", str(marker))
    nodes = [["in", "x"], ["attr", "w", 0], ["call", "add", "add", [{"%": 0}, {"%": 1}], {}, None]]
    data = craft([[name, [1], "param"]], [raw_tensor([1.0])], nodes=[*nodes, ["out", {"%": 2}]])
    refused(data, "tensor name")
    assert not marker.exists()


def test_keyword_names_cannot_inject_code(tmp_path):
    marker = tmp_path / "marker"
    key = f"inplace=getattr(__import__('os'), 'system')('touch {marker}') and False, x"
    nodes = [["in", "x"], ["call", "relu", "relu", [{"%": 0}], {key: 0}, None], ["out", {"%": 1}]]
    refused(craft([], [], nodes=nodes), "keyword argument name")
    assert not marker.exists()


def test_node_names_are_kept_and_must_be_canonical():
    model = load(small_file())
    assert [n.name for n in model.graph_module.graph.nodes][:4] == ["x", "fc1_weight", "fc1_bias", "fc1"]
    for name in ("print", "1x", "a b", "class"):
        refused(craft([], [], nodes=[["in", name], ["out", {"%": 0}]]), "not a valid, unique node name")


def test_unused_tensor_is_refused():
    refused(craft([["t0", [1], "param"]], [raw_tensor([1.0])], nodes=[["in", "x"], ["out", {"%": 0}]]))


# --------------------------------------------------------------------------- codecs, one by one


def codebook_tensor(k: int, layout: bytes) -> bytes:
    return varint(k - 1) + bytes([0]) + np.linspace(-1, 1, k).astype("<f4").tobytes() + layout


def fixed_huffman(stream: bytes) -> bytes:
    """A dense 4-bit fixed-point tensor whose values stream is this Huffman stream."""
    return bytes([4, 0, 0, 0b1010]) + varint(len(stream)) + stream


def sparse_raw(index_bits: int, entries: int, kept: int, index: bytes, values: int) -> bytes:
    return (
        bytes([1, index_bits])
        + varint(entries)
        + varint(kept)
        + varint(len(index))
        + index
        + varint(4 * values)
        + bytes(4 * values)
    )


CODEC_CASES = {
    # Huffman streams with invalid code lengths: lengths 1,1,1 (over-subscribed), 1,2 (incomplete),
    # a shortest length of 25
    "over-subscribed": (
        FIXED,
        (4,),
        fixed_huffman(varint(3) + b"\x00\x07" + varint(4) + b"\x00"),
        "over-subscribed",
    ),
    "incomplete": (FIXED, (4,), fixed_huffman(varint(2) + b"\x20\x09" + varint(4) + b"\x00"), "incomplete"),
    "too long": (FIXED, (4,), fixed_huffman(varint(2) + bytes([24]) + b"\x03"), "header byte"),
    # code streams that end early
    "packed short": (FIXED, (4,), bytes([4, 0, 0, 0]) + varint(1) + b"\x12", "packed stream of 1 bytes"),
    "huffman short": (
        CODEBOOK,
        (5,),
        codebook_tensor(2, bytes([0b1010]) + varint(4) + huffman.serialize(huffman.encode([0, 1, 1, 0], 2))),
        "Huffman",
    ),
    "raw short": (RAW_F32, (4,), bytes([0]) + varint(8) + bytes(8), "8 bytes for 4 float32 values"),
    # indices beyond the codebook
    "index past codebook": (
        CODEBOOK,
        (4,),
        codebook_tensor(3, bytes([0]) + varint(1) + b"\xff"),
        "alphabet of 3",
    ),
    # sparse gaps past the tensor end, and other inconsistent indexes
    "gap past end": (RAW_F32, (8,), sparse_raw(4, 1, 1, bytes([9]), 1), "past the tensor end"),
    "trailing filler": (RAW_F32, (8,), sparse_raw(2, 2, 1, bytes([0b1100]), 1), "filler"),
    "kept mismatch": (RAW_F32, (8,), sparse_raw(4, 1, 2, bytes([1]), 2), "header says 2"),
    "NaN": (RAW_F32, (1,), bytes([0]) + varint(4) + np.array([np.nan], "<f4").tobytes(), "NaN"),
}


@pytest.mark.parametrize("label", CODEC_CASES)
def test_decoders_refuse_damaged_streams(label):
    codec, shape, body, match = CODEC_CASES[label]
    with pytest.raises(SqcFormatError, match=match) as info:
        decode_tensor(codec, body, "t", shape, "weight", 100)
    assert info.value.offset is not None and info.value.offset >= 100


# --------------------------------------------------------------------------- reproducibility


CHILD_COMPRESS = r"""
import hashlib, sys
sys.path.insert(0, sys.argv[1])
from conftest import FireNet, seeded
import sqc
data = sqc.compress(seeded(FireNet), [(1, 3, 16, 16)], sys.argv[2]).to_bytes()
print(hashlib.sha256(data).hexdigest(), len(data))
"""

REPRO_PIPELINE = "prune{sparsity=0.9 scope=global},share{bits=3},quant{bits=8},huffman"


def test_same_input_same_bytes_whatever_the_hash_seed(firenet):
    """Set and dict order of strings changes with PYTHONHASHSEED; the bytes must not."""
    data = sqc.compress(firenet, [(1, 3, 16, 16)], REPRO_PIPELINE).to_bytes()
    here = f"{hashlib.sha256(data).hexdigest()} {len(data)}"
    hash_seed = "4242" if os.environ.get("PYTHONHASHSEED") != "4242" else "17"
    result = subprocess.run(
        [sys.executable, "-c", CHILD_COMPRESS, str(TESTS), REPRO_PIPELINE],
        env={**os.environ, "PYTHONHASHSEED": hash_seed},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == here
    layout = container.read_layout(data)
    assert layout.seed == 0 and layout.meta["seed"] == 0 and layout.version == (1, 2)  # oldest that holds it


def test_seed_is_stored_and_decides_the_bytes(mlp):
    """The seed drives the built-in fine-tuner's batch order: same seed, same bytes; another seed,
    other bytes; the seed is in the file; the caller's global RNG is left as it was."""
    from sqc.runtime.data import Dataset

    g = torch.Generator().manual_seed(1)
    y = torch.randint(0, 10, (96,), generator=g)
    x = torch.randn(96, 64, generator=g) + y[:, None].float()
    data = Dataset(x[:32], y[:32], x[32:], y[32:])
    pipeline = "prune{sparsity=0.5},finetune{epochs=1 lr=0.05},share{bits=4},huffman"

    def run(seed: int) -> bytes:
        torch.manual_seed(123)
        before = torch.random.get_rng_state()
        blob = sqc.compress(mlp, [(1, 64)], pipeline, data=data, seed=seed).to_bytes()
        assert torch.equal(torch.random.get_rng_state(), before)
        return blob

    first, again, other = run(7), run(7), run(8)
    assert first == again and first != other
    assert container.read_layout(first).seed == 7 and container.read_layout(other).seed == 8
    assert container.model_from_layout(container.read_layout(first), "<mem>").seed == 7
    with pytest.raises(SqcError, match="seed"):
        sqc.compress(mlp, [(1, 64)], "prune", seed=-1)


# --------------------------------------------------------------------------- no data loss


needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="the save is killed in a forked child")


@functools.cache
def large_file() -> bytes:
    """A 4 MB file (a 1024 x 1024 layer stored raw)."""
    torch.manual_seed(0)
    return container.serialize(trace(nn.Sequential(nn.Linear(1024, 1024)).eval(), [(1, 1024)]))


def killed_mid_save(target: Path, stage: str) -> Path:
    """Save ``large_file()`` atomically in a child process and SIGKILL it at ``stage`` ("write": half
    the bytes are in the temporary file; "rename": all of them, fsynced, not yet renamed). The child
    is forked, so it starts at once; it only runs ``write_atomic`` (what ``save`` does after
    ``serialize``). Returns the temporary file it leaves behind."""
    data = large_file()
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.close(ready_r)

            def stop_here(*_: object) -> None:
                os.write(ready_w, b"ready")
                time.sleep(120)

            if stage == "write":
                real_fdopen = os.fdopen

                class HalfThenStop:
                    def __init__(self, handle):
                        self.handle = handle

                    def __enter__(self):
                        return self

                    def __exit__(self, *exc):
                        return self.handle.__exit__(*exc)

                    def write(self, blob):
                        self.handle.write(blob[: len(blob) // 2])
                        self.handle.flush()
                        os.fsync(self.handle.fileno())
                        stop_here()

                    def __getattr__(self, name):
                        return getattr(self.handle, name)

                os.fdopen = lambda fd, mode: HalfThenStop(real_fdopen(fd, mode))
            else:
                os.replace = stop_here
            container.write_atomic(target, data, force=True)
        finally:
            os._exit(3)
    os.close(ready_w)
    try:
        ready, _, _ = select.select([ready_r], [], [], 60)
        assert ready and os.read(ready_r, 5) == b"ready", "the child never reached the write"
        temps = [p for p in target.parent.iterdir() if p.name.startswith(f".{target.name}.")]
        assert len(temps) == 1
        expected = len(data) // 2 if stage == "write" else len(data)
        assert temps[0].stat().st_size == expected  # the kill lands while the data is in flight
    finally:
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        os.close(ready_r)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    return temps[0]


@needs_fork
def test_sigkill_mid_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "m.sqc"
    old = small_file()
    target.write_bytes(old)
    temp = killed_mid_save(target, "write")
    assert target.read_bytes() == old  # the old file, whole
    load(target.read_bytes())
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([target.name, temp.name])


@needs_fork
def test_sigkill_before_rename_leaves_nothing_at_the_target(tmp_path):
    target = tmp_path / "m.sqc"
    temp = killed_mid_save(target, "rename")
    assert not target.exists()  # never a partial file: the complete temp file was not renamed yet
    assert temp.read_bytes() == large_file()  # (the stray temp is all a crash can leave)


def test_save_through_the_api_after_a_crash(tmp_path, mlp):
    """A temp file left by a killed save does not get in the way of the next one."""
    target = tmp_path / "m.sqc"
    (tmp_path / f".{target.name}.abc123.tmp").write_bytes(b"half a file")
    size = sqc.compress(mlp, [(1, 64)], "quant").save(target)
    assert target.stat().st_size == size
    load(target.read_bytes())


# --------------------------------------------------------------------------- the CLI with bad input


ARCH = ("--arch", "sqc_test_models:Small")


def one_line_error(result, fragment: str) -> str:
    assert result.code == 1, (result.out, result.err)
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sqc: error:"), result.err
    assert fragment in lines[0], lines[0]
    return lines[0]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_input_model_is_never_modified(cli, workdir):
    before = sha256(workdir / "small.pt"), (workdir / "small.pt").stat().st_mtime_ns
    assert cli("compress", "small.pt", *ARCH, "-p", "prune,share,quant,huffman", "-o", "s.sqc").code == 0
    assert cli("compress", "small.pt", *ARCH, "-p", "prune{sparsity=2}", "-o", "t.sqc").code == 1
    assert cli("inspect", "small.pt", *ARCH).code == 0
    assert (sha256(workdir / "small.pt"), (workdir / "small.pt").stat().st_mtime_ns) == before
    sqc_before = sha256(workdir / "s.sqc")
    assert cli("decompress", "s.sqc", "-o", "r.pt").code == 0 and cli("inspect", "s.sqc").code == 0
    assert sha256(workdir / "s.sqc") == sqc_before


class Evil:
    """Unpickling this runs a shell command that creates a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_not_executed_without_trust_pickle(cli, workdir):
    import pickle

    marker = workdir / "pwned"
    torch.save(Evil(marker), workdir / "module.pt")  # what torch.save(model) of a module looks like
    torch.save({"fc1.weight": Evil(marker)}, workdir / "state.pt")  # a "state_dict" with a payload
    (workdir / "legacy.pt").write_bytes(pickle.dumps(Evil(marker), protocol=4))  # a bare pickle
    for name in ("module.pt", "state.pt", "legacy.pt"):
        one_line_error(cli("compress", name, "-o", "x.sqc"), "--trust-pickle")
        one_line_error(cli("compress", name, *ARCH, "-o", "x.sqc"), "would run code from the file")
        one_line_error(cli("inspect", name), "--trust-pickle")
        assert not marker.exists(), name
    assert not (workdir / "x.sqc").exists()
    # The payload is live: with the flag the user asked for it, and it runs.
    one_line_error(cli("compress", "module.pt", "--trust-pickle", "-o", "x.sqc"), "not an nn.Module")
    assert marker.exists()


ZERO_ARCH = """
import torch, torch.nn as nn

class ZeroWide(nn.Module):
    \"\"\"A real layer next to one with no weights at all (a 16 -> 0 projection).\"\"\"

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(16, 4)
        self.empty = nn.Linear(16, 0)

    def forward(self, x):
        return self.fc(x) + self.empty(x).sum()
"""


@pytest.fixture
def zero_model(workdir, monkeypatch) -> tuple[str, ...]:
    (workdir / "rel_zero_arch.py").write_text(ZERO_ARCH)
    monkeypatch.syspath_prepend(str(workdir))
    from rel_zero_arch import ZeroWide

    torch.save(ZeroWide().state_dict(), workdir / "zero.pt")
    return ("zero.pt", "--arch", "rel_zero_arch:ZeroWide", "--input-shape", "2,16")


ZERO_WARNING = "ignore:Initializing zero-element tensors is a no-op"


@pytest.mark.filterwarnings(ZERO_WARNING)
@pytest.mark.parametrize(
    "pipeline",
    [
        "prune{sparsity=0.5}",
        "prune,share{bits=2},huffman",
        "quant{bits=8},huffman",
        "quant{bits=8 granularity=channel}",
    ],
)
def test_zero_size_tensors(cli, workdir, zero_model, pipeline):
    result = cli("compress", *zero_model, "-p", pipeline, "-o", "z.sqc")
    assert result.code == 0, result.err
    model = sqc.load(workdir / "z.sqc")
    assert model.get_parameter("empty.weight").shape == (0, 16)
    x = torch.randn(3, 16)
    fc = model.get_parameter("fc.weight"), model.get_parameter("fc.bias")
    assert torch.allclose(model(x), F.linear(x, *fc))
    assert cli("inspect", "z.sqc").code == 0 and cli("decompress", "z.sqc", "-o", "z.pt").code == 0


def test_model_without_a_compressible_layer(cli, workdir, monkeypatch):
    """Nothing to compress is an error that says so (and writes nothing), not an empty success."""
    monkeypatch.syspath_prepend(str(workdir))
    (workdir / "rel_plain.py").write_text(
        "import torch, torch.nn as nn\n"
        "class Norm(nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n        self.bn = nn.BatchNorm1d(16)\n"
        "    def forward(self, x):\n        return torch.relu(self.bn(x))\n"
        "class Nothing(nn.Module):\n"
        "    def forward(self, x):\n        return torch.relu(x)\n"
    )
    import rel_plain

    for name in ("Norm", "Nothing"):
        torch.save(getattr(rel_plain, name)().state_dict(), workdir / f"{name}.pt")
        arch = ("--arch", f"rel_plain:{name}", "--input-shape", "2,16")
        result = cli("compress", f"{name}.pt", *arch, "-o", "x.sqc")
        one_line_error(result, "matches no weight tensor")
        assert not (workdir / "x.sqc").exists()


def test_empty_and_foreign_files(cli, workdir):
    (workdir / "empty.sqc").write_bytes(b"")
    (workdir / "empty.pt").write_bytes(b"")
    one_line_error(cli("inspect", "empty.sqc"), "empty.sqc: not an .sqc file (empty)")
    one_line_error(cli("decompress", "empty.sqc", "-o", "r.pt"), "not an .sqc file (empty)")
    one_line_error(cli("compress", "empty.pt", *ARCH, "-o", "x.sqc"), "empty.pt: is empty (0 bytes)")
    one_line_error(cli("inspect", "empty.pt"), "empty.pt: is empty (0 bytes)")
    (workdir / "model.sqc").write_bytes(small_file())
    one_line_error(cli("compress", "model.sqc", "-o", "x.sqc"), "is a .sqc file (already compressed)")
    (workdir / "notes.sqc").write_text("hello, this is not a model\n")
    one_line_error(cli("inspect", "notes.sqc"), "not an .sqc file (bad magic)")
    assert not (workdir / "r.pt").exists() and not (workdir / "x.sqc").exists()


def test_sqc_from_a_newer_version(cli, workdir):
    parsed = split(small_file())
    parsed.version = (2, 0)
    (workdir / "future.sqc").write_bytes(join(parsed))
    line = one_line_error(cli("inspect", "future.sqc"), "written by a newer sqc (format 2.0)")
    assert "upgrade sqc to read it" in line
    one_line_error(cli("decompress", "future.sqc", "-o", "r.pt"), "upgrade sqc")
    one_line_error(cli("lower", "future.sqc", "--target", "pytorch", "-o", "r.pt2"), "upgrade sqc")
    with pytest.raises(SqcError, match="at byte offset 8"):
        sqc.load(workdir / "future.sqc")
