/* sqc HLS kernels: the integer semantics of targets/INTEGER.md (in the sqc sources) for Vitis HLS.
 *
 * Generated projects copy this file verbatim; model.cpp instantiates the templates with the constants
 * of each layer. Activations cross layer boundaries as ap_fixed<W, W - frac> (the integer program's
 * per-tensor formats); inside a layer the datapath works on their codes (ap_int<W>, value = code *
 * 2^-frac): every rescaling is one shift with round-half-up and saturation, exactly as the PyTorch
 * simulator and the C target compute it. Accumulators are ap_int<32> (legalization proves no partial
 * sum can overflow), epilogue products ap_int<64>.
 *
 * Weights stay compressed on chip. A conv/linear layer is split into LANES lanes (one multiplier each);
 * lane p owns the output channels p, p + LANES, p + 2 * LANES, ... and walks their kept weights in
 * row-major order from its own ROM bank: narrow codebook indices (or fixed-point codes) and, for a
 * pruned layer, Deep Compression's relative index (an entry e < FILL skips e positions and holds the
 * next weight; e == FILL skips FILL positions and holds none). Lanes never write the same output
 * channel, so they run in parallel without arbitration; the reuse factor sets LANES. */
#ifndef SQC_HLS_H
#define SQC_HLS_H

#include <ap_fixed.h>
#include <ap_int.h>
#include <hls_stream.h>

#ifndef SQC_ACT_BITS
#error "include model.h (which defines SQC_ACT_BITS) before sqc_hls.h"
#endif

/* ROM arrays. Synthesis sees `static const ap_uint<k> name[n]`: k-bit wide ROM. In C simulation g++
 * would build a run-time initializer for every element of a class-typed array (minutes for 10^5
 * elements), so the same values are stored in a native carrier type wide enough for them and converted
 * to the ap type on every read; the arithmetic is the same, the emitter checks that every value fits. */
#ifdef __SYNTHESIS__
#define SQC_ROM(type, carrier, name, size) static const type name[size]
#else
#define SQC_ROM(type, carrier, name, size) static const carrier name[size]
#endif

namespace sqc {

typedef ap_int<SQC_ACT_BITS> code_t;
typedef ap_int<32> acc_t;
typedef ap_int<64> wide_t;
static const int QMIN = -(1 << (SQC_ACT_BITS - 1));
static const int QMAX = (1 << (SQC_ACT_BITS - 1)) - 1;

/* ---- formats: ap_fixed values <-> codes (a reinterpretation of the same bits, no rounding) ---- */

template <int N, class T>
void to_codes(const T v[N], code_t c[N])
{
    for (int i = 0; i < N; i++) {
#pragma HLS UNROLL factor = 16
        c[i].range(SQC_ACT_BITS - 1, 0) = v[i].range(SQC_ACT_BITS - 1, 0);
    }
}

template <int N, class T>
void to_values(const code_t c[N], T v[N])
{
    for (int i = 0; i < N; i++) {
#pragma HLS UNROLL factor = 16
        v[i].range(SQC_ACT_BITS - 1, 0) = c[i].range(SQC_ACT_BITS - 1, 0);
    }
}

/* y = clamp(rshift_round(t, shift), lo, hi): round half up (floor((t + 2^(s-1)) / 2^s)), then saturate.
 * A non-positive shift multiplies exactly; saturating before it is exact (a value beyond the range
 * stays beyond it when scaled up) and keeps the product inside 64 bits. */
inline code_t requant(wide_t t, int shift, int lo, int hi)
{
#pragma HLS INLINE
    /* compound assignments keep 64 bits (ap_int's binary operators widen to full precision) */
    if (shift > 0) {
        t += wide_t(1) << (shift - 1);
        t >>= shift; /* >> of a signed ap_int is arithmetic: floor */
    } else if (shift < 0) {
        if (t > QMAX) {
            t = QMAX;
        } else if (t < QMIN) {
            t = QMIN;
        }
        t <<= -shift;
    }
    if (t < lo) {
        t = lo;
    } else if (t > hi) {
        t = hi;
    }
    return code_t(t);
}

/* Per-channel epilogue of a conv/linear/affine: (acc + bias[c]) * mult[c], shifted by shift[c]. */
template <class B, class M, class S>
inline code_t epilogue(acc_t acc, int c, const B bias[], const M mult[], const S shift[], int lo, int hi)
{
#pragma HLS INLINE
    ap_int<33> sum = acc + ap_int<32>(bias[c]);
    ap_int<49> t = sum * ap_int<16>(mult[c]);
    return requant(wide_t(t), int(shift[c]), lo, hi);
}

/* ---- layers with weights: lanes over output channels ----
 *
 * L (generated per layer) provides: LANES, LEN (entries per lane bank), SLEN (weights per lane bank),
 * ROWS (most output channels a lane owns; rows[] holds them, OUT where a lane owns fewer), PER (weights per output channel), OUT, FILL, WRAPS (most
 * channel boundaries one entry can cross), SPARSE, LO, HI, sym_t, idx_t, w_t and
 * `static w_t weight(sym_t)` (codebook lookup, or the fixed-point code itself). count[p] is the number
 * of entries of lane p (its bank is padded to LEN). */

/* Linear: acc[p] += w * x[col] along lane p's rows; a row is finished when the walk crosses into the next. */
template <class L, int IN, class SR, class IR, class CR, class RR, class B, class M, class S>
void linear(const code_t x[IN], code_t y[L::OUT], const SR sym[], const IR idx[], const CR count[],
            const RR rows[], const B bias[], const M mult[], const S shift[])
{
    acc_t acc[L::LANES];
    int col[L::LANES], row[L::LANES], next[L::LANES];
#pragma HLS ARRAY_PARTITION variable = acc complete
#pragma HLS ARRAY_PARTITION variable = col complete
#pragma HLS ARRAY_PARTITION variable = row complete
#pragma HLS ARRAY_PARTITION variable = next complete
    for (int p = 0; p < L::LANES; p++) {
#pragma HLS UNROLL
        acc[p] = 0;
        col[p] = 0;
        row[p] = 0;
        next[p] = 0;
    }
bias_only: /* channels no lane owns (every weight pruned) hold their bias; the lanes overwrite the rest */
    for (int o = 0; o < L::OUT; o++) {
#pragma HLS PIPELINE II = 1
        y[o] = epilogue(acc_t(0), o, bias, mult, shift, L::LO, L::HI);
    }
entries:
    for (int e = 0; e < L::LEN; e++) {
#pragma HLS PIPELINE II = 1
    lanes:
        for (int p = 0; p < L::LANES; p++) {
#pragma HLS UNROLL
            if (e < int(count[p])) {
                int g = L::SPARSE ? int(typename L::idx_t(idx[p * L::LEN + e])) : 0;
                bool mac = !(L::SPARSE && g == L::FILL);
                col[p] += g;
                for (int k = 0; k < L::WRAPS; k++) {
#pragma HLS UNROLL
                    if (col[p] >= IN) {
                        int o = int(rows[p * L::ROWS + row[p]]);
                        y[o] = epilogue(acc[p], o, bias, mult, shift, L::LO, L::HI);
                        acc[p] = 0;
                        col[p] -= IN;
                        row[p]++;
                    }
                }
                if (mac) {
                    typename L::w_t w = L::weight(typename L::sym_t(sym[p * L::SLEN + next[p]]));
                    acc[p] += w * x[col[p]];
                    next[p]++;
                    col[p]++;
                }
            }
        }
    }
flush:
    for (int j = 0; j < L::ROWS; j++) {
        for (int p = 0; p < L::LANES; p++) {
#pragma HLS UNROLL
            int o = int(rows[p * L::ROWS + j]);
            if (j >= row[p] && o < L::OUT) {
                y[o] = epilogue(j == row[p] ? acc[p] : acc_t(0), o, bias, mult, shift, L::LO, L::HI);
            }
        }
    }
}

/* Convolution, weight-stationary: each kept weight of lane p adds w * x over the output plane of its
 * channel (the lane's plane of accumulators); the plane is requantized when the walk leaves the channel.
 * C provides CIN, H, W, COUT, OH, OW, KH, KW, SH, SW, PH, PW, DH, DW, GROUPS. */
template <class L, class C, class B, class M, class S>
void conv_flush(acc_t acc[C::OH * C::OW], code_t y[], int oc, const B bias[], const M mult[], const S shift[])
{
#pragma HLS INLINE
    for (int i = 0; i < C::OH * C::OW; i++) {
#pragma HLS PIPELINE II = 1
        y[oc * C::OH * C::OW + i] = epilogue(acc[i], oc, bias, mult, shift, L::LO, L::HI);
        acc[i] = 0;
    }
}

template <class L, class C, class SR, class IR, class CR, class RR, class B, class M, class S>
void conv(const code_t x[C::CIN * C::H * C::W], code_t y[C::COUT * C::OH * C::OW], const SR sym[],
          const IR idx[], const CR count[], const RR rows[], const B bias[], const M mult[], const S shift[])
{
    static const int PLANE = C::OH * C::OW;
    static const int TAPS = C::KH * C::KW;
    static const int CIN_G = C::CIN / C::GROUPS;
    static const int COUT_G = C::COUT / C::GROUPS;
    acc_t acc[L::LANES][PLANE];
    int col[L::LANES], row[L::LANES], next[L::LANES];
#pragma HLS ARRAY_PARTITION variable = acc dim = 1 complete
#pragma HLS ARRAY_PARTITION variable = col complete
#pragma HLS ARRAY_PARTITION variable = row complete
#pragma HLS ARRAY_PARTITION variable = next complete
    for (int p = 0; p < L::LANES; p++) {
#pragma HLS UNROLL
        col[p] = 0;
        row[p] = 0;
        next[p] = 0;
        for (int i = 0; i < PLANE; i++) {
            acc[p][i] = 0;
        }
    }
bias_only: /* channels no lane owns (every weight pruned) hold their bias; the lanes overwrite the rest */
    for (int oc = 0; oc < C::COUT; oc++) {
        for (int i = 0; i < PLANE; i++) {
#pragma HLS PIPELINE II = 1
            y[oc * PLANE + i] = epilogue(acc_t(0), oc, bias, mult, shift, L::LO, L::HI);
        }
    }
entries:
    for (int e = 0; e < L::LEN; e++) {
    lanes:
        for (int p = 0; p < L::LANES; p++) {
#pragma HLS UNROLL
            if (e < int(count[p])) {
                int g = L::SPARSE ? int(typename L::idx_t(idx[p * L::LEN + e])) : 0;
                bool mac = !(L::SPARSE && g == L::FILL);
                col[p] += g;
                for (int k = 0; k < L::WRAPS; k++) {
#pragma HLS UNROLL
                    if (col[p] >= L::PER) {
                        conv_flush<L, C, B, M, S>(acc[p], y, int(rows[p * L::ROWS + row[p]]), bias, mult, shift);
                        col[p] -= L::PER;
                        row[p]++;
                    }
                }
                if (mac) {
                    typename L::w_t w = L::weight(typename L::sym_t(sym[p * L::SLEN + next[p]]));
                    int oc = int(rows[p * L::ROWS + row[p]]);
                    int r = col[p];
                    int ic = (oc / COUT_G) * CIN_G + r / TAPS;
                    int ky = (r % TAPS) / C::KW, kx = (r % TAPS) % C::KW;
                    int offy = ky * C::DH - C::PH, offx = kx * C::DW - C::PW;
                    const code_t *plane = x + ic * C::H * C::W;
                plane_rows:
                    for (int oy = 0; oy < C::OH; oy++) {
                        int iy = oy * C::SH + offy;
                        if (iy < 0 || iy >= C::H) {
                            continue;
                        }
                    plane_cols:
                        for (int ox = 0; ox < C::OW; ox++) {
#pragma HLS PIPELINE II = 1
                            int ix = ox * C::SW + offx;
                            if (ix >= 0 && ix < C::W) {
                                acc[p][oy * C::OW + ox] += w * plane[iy * C::W + ix];
                            }
                        }
                    }
                    next[p]++;
                    col[p]++;
                }
            }
        }
    }
flush:
    for (int j = 0; j < L::ROWS; j++) {
        for (int p = 0; p < L::LANES; p++) {
            int oc = int(rows[p * L::ROWS + j]);
            if (j >= row[p] && oc < C::COUT) {
                conv_flush<L, C, B, M, S>(acc[p], y, oc, bias, mult, shift); /* rows past row[p] flush zeros */
            }
        }
    }
}

/* ---- element-wise, pooling, data movement (targets/INTEGER.md, one function each) ---- */

template <int CH, int INNER, class B, class M, class S>
void affine(const code_t x[CH * INNER], code_t y[CH * INNER], const B bias[], const M mult[], const S shift[],
            int lo, int hi)
{
    for (int c = 0; c < CH; c++) {
        for (int i = 0; i < INNER; i++) {
#pragma HLS PIPELINE II = 1
            y[c * INNER + i] = epilogue(acc_t(x[c * INNER + i]), c, bias, mult, shift, lo, hi);
        }
    }
}

template <int N>
void clamp(const code_t x[N], code_t y[N], int lo, int hi)
{
    for (int i = 0; i < N; i++) {
#pragma HLS PIPELINE II = 1
        code_t v = x[i];
        y[i] = v < lo ? code_t(lo) : (v > hi ? code_t(hi) : v);
    }
}

template <int CH, int INNER, class M>
void prelu(const code_t x[CH * INNER], code_t y[CH * INNER], const M mult[], int shift)
{
    for (int c = 0; c < CH; c++) {
        for (int i = 0; i < INNER; i++) {
#pragma HLS PIPELINE II = 1
            code_t v = x[c * INNER + i];
            y[c * INNER + i] = v >= 0 ? v : requant(wide_t(v * ap_int<16>(mult[c])), shift, QMIN, QMAX);
        }
    }
}

/* floor(a / b) for b > 0 (C++ division truncates toward zero) */
inline long long floor_div(long long a, long long b)
{
    long long q = a / b;
    return (a % b != 0 && a < 0) ? q - 1 : q;
}

/* Max or average over windows [ys[oy], ye[oy]) x [xs[ox], xe[ox]) of each channel; average rounds half up. */
template <int CH, int H, int W, int OH, int OW, bool AVG, class T, class D>
void pool(const code_t x[CH * H * W], code_t y[CH * OH * OW], const T ys[], const T ye[], const T xs[],
          const T xe[], const D divisor[])
{
    for (int c = 0; c < CH; c++) {
        for (int oy = 0; oy < OH; oy++) {
            for (int ox = 0; ox < OW; ox++) {
                long long sum = 0;
                code_t m = code_t(QMIN);
                for (int iy = int(ys[oy]); iy < int(ye[oy]); iy++) {
                    for (int ix = int(xs[ox]); ix < int(xe[ox]); ix++) {
#pragma HLS PIPELINE II = 1
                        code_t v = x[(c * H + iy) * W + ix];
                        sum += v.to_int();
                        m = v > m ? v : m;
                    }
                }
                if (AVG) {
                    long long n = (long long)divisor[oy * OW + ox];
                    y[(c * OH + oy) * OW + ox] = code_t(floor_div(2 * sum + n, 2 * n));
                } else {
                    y[(c * OH + oy) * OW + ox] = m;
                }
            }
        }
    }
}

template <int N>
void add(const code_t a[N], const code_t b[N], code_t y[N], int scale_a, int scale_b, int shift, bool subtract)
{
    for (int i = 0; i < N; i++) {
#pragma HLS PIPELINE II = 1
        wide_t t = a[i];
        wide_t vb = b[i];
        t *= scale_a;
        vb *= scale_b;
        if (subtract) {
            t -= vb;
        } else {
            t += vb;
        }
        y[i] = requant(t, shift, QMIN, QMAX);
    }
}

template <int N>
void mul(const code_t a[N], const code_t b[N], code_t y[N], int shift)
{
    for (int i = 0; i < N; i++) {
#pragma HLS PIPELINE II = 1
        y[i] = requant(wide_t(a[i] * b[i]), shift, QMIN, QMAX);
    }
}

/* One input of a concatenation: OUTER blocks of INNER elements into blocks of TOTAL at OFFSET. */
template <int OUTER, int INNER, int TOTAL, int OFFSET>
void cat_part(const code_t x[OUTER * INNER], code_t y[OUTER * TOTAL], int shift)
{
    for (int o = 0; o < OUTER; o++) {
        for (int i = 0; i < INNER; i++) {
#pragma HLS PIPELINE II = 1
            y[o * TOTAL + OFFSET + i] = requant(wide_t(x[o * INNER + i]), shift, QMIN, QMAX);
        }
    }
}

template <int N, class T>
void lut(const code_t x[N], code_t y[N], const T table[])
{
    for (int i = 0; i < N; i++) {
#pragma HLS PIPELINE II = 1
        y[i] = code_t(table[x[i].to_int() - QMIN]);
    }
}

/* Softmax over rows of COLS: e = table[max - x], y = min(qmax, floor((e * 2^(fy+1) + s) / (2 s))). */
inline int row_max(const code_t v[], int cols)
{
    int m = v[0].to_int();
    for (int i = 1; i < cols; i++) {
        m = v[i].to_int() > m ? v[i].to_int() : m;
    }
    return m;
}

template <int ROWS, int COLS, class T>
void softmax(const code_t x[ROWS * COLS], code_t y[ROWS * COLS], const T table[], int out_frac)
{
    for (int r = 0; r < ROWS; r++) {
        int m = row_max(x + r * COLS, COLS);
        long long s = 0;
        for (int i = 0; i < COLS; i++) {
            s += (long long)table[m - x[r * COLS + i].to_int()];
        }
        for (int i = 0; i < COLS; i++) {
            long long e = (long long)table[m - x[r * COLS + i].to_int()];
            long long q = (e * (1LL << (out_frac + 1)) + s) / (2 * s);
            y[r * COLS + i] = code_t(q > QMAX ? QMAX : q);
        }
    }
}

/* Constant padding of (C, H, W) by (top, bottom, left, right). */
template <int CH, int H, int W, int TOP, int BOTTOM, int LEFT, int RIGHT>
void pad(const code_t x[CH * H * W], code_t y[CH * (H + TOP + BOTTOM) * (W + LEFT + RIGHT)], int fill)
{
    static const int OH = H + TOP + BOTTOM, OW = W + LEFT + RIGHT;
    for (int c = 0; c < CH; c++) {
        for (int oy = 0; oy < OH; oy++) {
            for (int ox = 0; ox < OW; ox++) {
#pragma HLS PIPELINE II = 1
                int iy = oy - TOP, ix = ox - LEFT;
                bool in = iy >= 0 && iy < H && ix >= 0 && ix < W;
                y[(c * OH + oy) * OW + ox] = in ? x[(c * H + iy) * W + ix] : code_t(fill);
            }
        }
    }
}

/* ---- the top function's ports ---- */

/* I-BERT's integer exp of -d codes, up to softmax's common factor (targets/INTEGER.md) */
inline long long iexp(int d, int ln2, int qb, long long qc, int base)
{
#pragma HLS INLINE
    int z = d / ln2;
    long long t = (long long)qb - (d - (long long)z * ln2);
    int s = z + base > 62 ? 62 : z + base;
    return (t * t + qc) >> s;
}

/* Softmax over rows of COLS with the integer exp (activations over 8 bits). */
template <int ROWS, int COLS>
void softmax_iexp(const code_t x[ROWS * COLS], code_t y[ROWS * COLS], int ln2, int qb, long long qc, int base,
                  int out_frac)
{
    for (int r = 0; r < ROWS; r++) {
        int m = row_max(x + r * COLS, COLS);
        long long s = 0;
        for (int i = 0; i < COLS; i++) {
            s += iexp(m - x[r * COLS + i].to_int(), ln2, qb, qc, base);
        }
        for (int i = 0; i < COLS; i++) {
            long long e = iexp(m - x[r * COLS + i].to_int(), ln2, qb, qc, base);
            long long q = (e * (1LL << (out_frac + 1)) + s) / (2 * s);
            y[r * COLS + i] = code_t(q > QMAX ? QMAX : q);
        }
    }
}

/* floor(sqrt(n)) by Newton's iteration from n (exact; the C target's loop) */
inline long long isqrt(long long n)
{
    if (n < 2) {
        return n;
    }
    long long x = n, y = (n + 1) >> 1;
    while (y < x) {
        x = y;
        y = (x + n / x) >> 1;
    }
    return x;
}

/* LayerNorm over ROWS of COLS codes, integer-only (targets/INTEGER.md). */
template <int ROWS, int COLS, int FRAC, class M, class B, class S>
void layer_norm(const code_t x[ROWS * COLS], code_t y[ROWS * COLS], long long eps, const M mult[], const B bias[],
                const S shift[])
{
    for (int r = 0; r < ROWS; r++) {
        long long s = 0, q = 0;
        for (int i = 0; i < COLS; i++) {
            s += x[r * COLS + i].to_int();
        }
        for (int i = 0; i < COLS; i++) {
            long long d = (long long)COLS * x[r * COLS + i].to_int() - s;
            q += d * d;
        }
        long long root = isqrt(q / COLS + eps);
        root = root < 1 ? 1 : root;
        for (int i = 0; i < COLS; i++) {
#pragma HLS PIPELINE II = 1
            long long d = (long long)COLS * x[r * COLS + i].to_int() - s;
            long long z = floor_div(d * (1LL << FRAC), root);
            y[r * COLS + i] = requant(wide_t(z * (long long)mult[i] + (long long)bias[i]), int(shift[i]), QMIN, QMAX);
        }
    }
}

/* Product of activations: a (BATCH, M, K) x b (BATCH, K, N), 64-bit sums. */
template <int BATCH, int M, int K, int N>
void matmul(const code_t a[BATCH * M * K], const code_t b[BATCH * K * N], code_t y[BATCH * M * N], int mult, int shift)
{
    for (int t = 0; t < BATCH; t++) {
        for (int i = 0; i < M; i++) {
            for (int j = 0; j < N; j++) {
                long long acc = 0;
                for (int e = 0; e < K; e++) {
#pragma HLS PIPELINE II = 1
                    acc += (long long)a[(t * M + i) * K + e].to_int() * b[(t * K + e) * N + j].to_int();
                }
                y[(t * M + i) * N + j] = requant(wide_t(acc * mult), shift, QMIN, QMAX);
            }
        }
    }
}

/* Interpolated table (activations over 8 bits): u = x - qmin, j = u >> SHIFT, r = u mod 2^SHIFT,
 * y = sat(rshift_round(knots[j] * 2^SHIFT + (knots[j+1] - knots[j]) * r, SHIFT)). */
template <int N, int SHIFT, class T>
void lut_interp(const code_t x[N], code_t y[N], const T knots[])
{
    for (int i = 0; i < N; i++) {
#pragma HLS PIPELINE II = 1
        int u = x[i].to_int() - QMIN;
        int j = u >> SHIFT, r = u & ((1 << SHIFT) - 1);
        wide_t lo = knots[j], hi = knots[j + 1];
        wide_t t = lo;
        t <<= SHIFT;
        hi -= lo;
        hi *= r;
        t += hi;
        y[i] = requant(t, SHIFT, QMIN, QMAX);
    }
}

/* Data movement: y[i] = x[offset + sum_k i_k * strides[k]] over the index space dims (row-major):
 * permute, transpose, slicing, indexing, broadcasting (stride 0). */
template <int N, int IN, int RANK, class D, class T>
void strided(const code_t x[IN], code_t y[N], const D dims[RANK], const T strides[RANK], int offset)
{
    int idx[RANK];
    for (int d = 0; d < RANK; d++) {
        idx[d] = 0;
    }
    int at = offset;
    for (int i = 0; i < N; i++) {
#pragma HLS PIPELINE II = 1
        y[i] = x[at];
        for (int d = RANK - 1; d >= 0; d--) {
            at += int(strides[d]);
            if (++idx[d] < int(dims[d])) {
                break;
            }
            at -= int(strides[d]) * int(dims[d]);
            idx[d] = 0;
        }
    }
}

template <int N, class T>
void read_stream(hls::stream<T> &s, T v[N])
{
    for (int i = 0; i < N; i++) {
#pragma HLS PIPELINE II = 1
        v[i] = s.read();
    }
}

template <int N, class T>
void write_stream(const T v[N], hls::stream<T> &s)
{
    for (int i = 0; i < N; i++) {
#pragma HLS PIPELINE II = 1
        s.write(v[i]);
    }
}

template <int N, class T>
void copy(const T a[N], T b[N])
{
    for (int i = 0; i < N; i++) {
#pragma HLS PIPELINE II = 1
        b[i] = a[i];
    }
}

} /* namespace sqc */

#endif
