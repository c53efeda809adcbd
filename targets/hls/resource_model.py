"""What an HLS project costs on chip, estimated from its layout (nothing is synthesized here).

A layer's lanes each read their own ROM banks: the estimate counts their bits, the 18-Kbit block RAMs
each bank takes in its best aspect ratio (banks of at most :data:`LUTRAM_BITS` bits are distributed
memory instead), the multipliers, and beside them what hls4ml's default dense ``ap_fixed<16,6>``
layout needs at the same reuse factor. :func:`report` sums a project; :func:`summary` is the text
``sqc lower --target hls`` prints.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from sqc.targets.simulate import accuracy_lines

if TYPE_CHECKING:
    from sqc.targets.hls import HlsOptions, Lanes

DENSE_BITS = 16  # hls4ml's default precision ap_fixed<16,6>
LUTRAM_BITS = 1024  # banks this small are distributed memory / registers, not block RAM
BRAM18_SHAPES = ((1, 16384), (2, 8192), (4, 4096), (9, 2048), (18, 1024), (36, 512))


def bram18(depth: int, width: int) -> int:
    """18-Kbit blocks for one ROM bank in its best aspect ratio; small banks are LUTRAM (0 blocks)."""
    if depth * width <= LUTRAM_BITS:
        return 0
    return min(math.ceil(width / w) * math.ceil(depth / d) for w, d in BRAM18_SHAPES)


def layer_estimate(
    lanes: Lanes, bits: dict[str, int], epilogue_bits: int, macs_dense: int, reuse: int
) -> dict[str, Any]:
    """One conv/linear layer's ROM bits (``bits`` by part), block RAMs and LUTRAM bits, and the dense
    ``ap_fixed<16,6>`` layout's figures at the same ``reuse``."""
    shapes = [(lanes.len_s, lanes.sym_bits)] + ([(lanes.len_e, lanes.index_bits)] if lanes.sparse else [])
    banks = sum(bram18(d, b) for d, b in shapes)
    dense_banks = math.ceil(macs_dense / reuse)
    return {
        "rom_bits": sum(bits.values()),
        "rom": bits,
        "epilogue_bits": epilogue_bits,
        "bram18": lanes.lanes * banks,
        "lutram_bits": lanes.lanes * sum(d * b for d, b in shapes if bram18(d, b) == 0),
        "dense": {
            "rom_bits": macs_dense * DENSE_BITS,
            "multipliers": dense_banks,
            "bram18": dense_banks * bram18(reuse, DENSE_BITS),
            "lutram_bits": macs_dense * DENSE_BITS if bram18(reuse, DENSE_BITS) == 0 else 0,
            "bias_bits": lanes.out * DENSE_BITS,
        },
    }


def report(layers: list[dict], other_bits: int, opts: HlsOptions, samples: int) -> dict:
    """The project's report: the options, every layer's estimate, the totals and the dense comparison."""
    total = {
        "rom_bits": sum(layer["rom_bits"] for layer in layers),
        "multipliers": sum(layer["multipliers"] for layer in layers),
        "bram18": sum(layer["bram18"] for layer in layers),
        "lutram_bits": sum(layer["lutram_bits"] for layer in layers),
        "epilogue_bits": sum(layer["epilogue_bits"] for layer in layers),
        "other_bits": other_bits,
    }
    dense = {
        key: sum(layer["dense"][key] for layer in layers)
        for key in ("rom_bits", "multipliers", "bram18", "lutram_bits", "bias_bits")
    }
    return {
        "target": "hls",
        "top": "sqc_top",
        "interface": opts.interface,
        "part": opts.part,
        "clock_ns": opts.clock,
        "reuse": opts.reuse,
        "tb_samples": samples,
        "layers": layers,
        "total": total,
        "dense_ap_fixed_16_6": dense,
        "weight_storage_ratio": dense["rom_bits"] / max(1, total["rom_bits"]),
    }


def summary(result: dict) -> list[str]:
    """The report as text lines for ``sqc lower`` (``--json`` prints the dict itself)."""
    lines = [
        f"wrote {result['output_dir']}/ (target hls, top sqc_top, interface {result['interface']}, "
        f"part {result['part']}, clock {result['clock_ns']:g} ns)",
        f"{'layer':<14}{'weights':>9}{'kept':>8}{'reuse':>6}{'mults':>7}{'ROM bits':>11}{'BRAM18':>7}"
        f"  | dense ap_fixed<16,6>:{'mults':>8}{'ROM bits':>11}{'BRAM18':>7}",
    ]
    for layer in result["layers"]:
        d = layer["dense"]
        lines.append(
            f"{layer['layer']:<14}{layer['weights']:>9,}{layer['kept']:>8,}{layer['reuse']:>6}"
            f"{layer['multipliers']:>7,}{layer['rom_bits']:>11,}{layer['bram18']:>7}"
            f"  | {'':<21}{d['multipliers']:>8,}{d['rom_bits']:>11,}{d['bram18']:>7}"
        )
    t, d = result["total"], result["dense_ap_fixed_16_6"]
    lines.append(
        f"{'total':<14}{'':>9}{'':>8}{'':>6}{t['multipliers']:>7,}{t['rom_bits']:>11,}{t['bram18']:>7}"
        f"  | {'':<21}{d['multipliers']:>8,}{d['rom_bits']:>11,}{d['bram18']:>7}"
    )
    lines.append(
        f"BRAM18 counts banks above {LUTRAM_BITS} bits in their best aspect ratio; smaller banks are LUTRAM: "
        f"{t['lutram_bits']:,} bits (dense {d['lutram_bits']:,})"
    )
    lines.append(
        f"weight ROM {result['weight_storage_ratio']:.1f}x smaller than dense ap_fixed<16,6>; epilogue "
        f"constants {t['epilogue_bits']:,} bits (dense biases {d['bias_bits']:,}), other tables "
        f"{t['other_bits']:,} bits"
    )
    lines.extend(f"note: {line}" for line in result.get("notes", []))
    headers = result.get("ap_types")
    lines.append(
        f"make csim: AP_TYPES={headers} recorded in the Makefile"
        if headers
        else "make csim: no ap_types headers found (--option ap_types=DIR, $SQC_AP_TYPES or hls4ml): "
        "pass AP_TYPES=DIR to make"
    )
    lines.extend(accuracy_lines(result.get("accuracy")))
    return lines
