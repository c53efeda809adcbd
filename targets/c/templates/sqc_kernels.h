/* sqc C reference kernels: the integer semantics of targets/INTEGER.md, in portable C99.
 * Generated projects copy this file verbatim; model.c only calls it with constants. */
#ifndef SQC_KERNELS_H
#define SQC_KERNELS_H

#include <stdint.h>
#include "model.h"

#define SQC_ACT_MIN (-(1L << (SQC_ACT_BITS - 1)))
#define SQC_ACT_MAX ((1L << (SQC_ACT_BITS - 1)) - 1)

/* A ROM stream of unsigned symbols: kind 0 = packed (width-bit fields, LSB first), 1 = canonical
 * Huffman in sqc's layout (formats/huffman.py). */
typedef struct {
    const uint8_t *data;
    uint32_t size;
    uint32_t count;
    uint8_t kind;
    uint8_t width;
} sqc_stream_t;

/* Where decoded symbols go: relative-index entries (u8), or weight values (codebook[symbol] or
 * symbol + offset) as int8 (w8) or int16 (w16), at most `cap` of them.
 *
 * Index entries of any width (filler `filler_in`) are re-gapped on the way into 8-bit runtime entries
 * in which every entry e means "skip e positions, then a weight": a gap of 255 or more becomes entries
 * of 254 that carry a zero weight, so kernels never test for fillers. The weights of an index must
 * already be decoded at mw8/mw16 + src (src = the number of zero weights to insert); the index sink
 * moves each to its entry's slot (always downwards) and writes the zeros. `written` counts entries. */
typedef struct {
    uint8_t *u8;
    uint32_t filler_in;
    uint32_t pending;
    uint32_t written;
    uint32_t cap;
    int8_t *w8;
    int16_t *w16;
    const int8_t *book8;
    const int16_t *book16;
    uint32_t book_size;
    int32_t offset;
    int8_t *mw8;
    int16_t *mw16;
    uint32_t src;
} sqc_sink_t;

/* y = clamp(rshift_round((acc + bias[c]) * mult[c], shift[c]), lo, hi) */
typedef struct {
    const int32_t *bias;
    const int16_t *mult;
    const int8_t *shift;
    int32_t lo, hi;
} sqc_requant_t;

/* A convolution's geometry, plus what legalization computed once for the kernel: `taps` holds, per
 * kernel tap (ky, kx), {input offset of its first valid output, that output's accumulator offset, valid
 * rows, valid columns}; `as` is the accumulator row stride, `span` the accumulators used; `wide` > 0
 * (a multiple of 16) is the run length of every tap when the plane has the input's row stride.
 * The SSE2/AVX2 kernel (8-bit weights and activations) reads instead an int16 copy of the input, padded
 * and split into sh * sw stride phases of qh x qw codes per channel, where every tap is one run of
 * `qwide` accumulators (row stride qw, `qspan` used) from offset qtaps[tap] (qwide 0: not built). */
typedef struct {
    int32_t cin, h, w, cout, oh, ow, kh, kw, sh, sw, ph, pw, dh, dw, groups;
    int32_t as, span, wide;
    const int32_t *taps;
    int32_t qh, qw, qspan, qwide;
    const int32_t *qtaps;
} sqc_conv_t;

int sqc_decode(const sqc_stream_t *s, sqc_sink_t *sink, uint16_t *scratch, uint32_t scratch_size);

/* A context-coded tensor (formats/FORMAT.md): the rANS stream, `numel` positions in rows of `cols`,
 * with a mask (sparse) or not, symbols of `width` bits below `alphabet`; mode = value mode (0..3) | mask
 * model (0, 1: format 1.5, sparse only) << 2. */
typedef struct {
    const uint8_t *data;
    uint32_t size;
    uint32_t numel, cols, alphabet;
    uint8_t sparse, width, mode;
} sqc_rans_t;

/* Decode a context-coded tensor at start-up: weight values through `values` (a w8/w16 sink, one slot
 * per runtime entry) and, when sparse, the `count` runtime entries (see sqc_sink_t); dense: `count`
 * must be numel. 0 on success, -1 on any inconsistency (the stream must end exactly). `scratch` holds
 * sqc_rans_scratch(r) words, used during the call only. */
int sqc_rans_decode(const sqc_rans_t *r, sqc_sink_t *values, uint8_t *entries, uint32_t count, uint32_t *scratch,
                    uint32_t scratch_words);
uint32_t sqc_rans_scratch(const sqc_rans_t *r);

int32_t sqc_requant(int64_t t, int32_t shift, int32_t lo, int32_t hi);

/* Weight kernels: dense (idx == NULL, row-major weights) or sparse (nidx runtime entries, one weight
 * each, see sqc_sink_t). */
void sqc_linear_w8(const sqc_act_t *x, sqc_act_t *y, const int8_t *w, const uint8_t *idx, uint32_t nidx,
                   int32_t in, int32_t out, const sqc_requant_t *rq);
void sqc_linear_w16(const sqc_act_t *x, sqc_act_t *y, const int16_t *w, const uint8_t *idx, uint32_t nidx,
                    int32_t in, int32_t out, const sqc_requant_t *rq);
/* Sparse linear re-laid out at start-up by sqc_csc_* from a layer's runtime entries (by input column:
 * cnt, in + 1 32-bit start offsets in 16-bit halves; or by output row: cnt, one count per row; d, steps
 * along the line; cw, weights) and walked by sqc_linear_csc_* (by column, visiting only the columns of
 * nonzero inputs) or sqc_linear_csr_* (by row). */
int sqc_csc_w8(const uint8_t *idx, const int8_t *w, uint32_t nidx, int32_t in, int32_t out, int32_t by_row,
               uint16_t *cnt, uint8_t *d, int8_t *cw, uint32_t cap, uint32_t *cur, int32_t *prev);
int sqc_csc_w16(const uint8_t *idx, const int16_t *w, uint32_t nidx, int32_t in, int32_t out, int32_t by_row,
                uint16_t *cnt, uint8_t *d, int16_t *cw, uint32_t cap, uint32_t *cur, int32_t *prev);
void sqc_linear_csc_w8(const sqc_act_t *x, sqc_act_t *y, const int8_t *w, const uint8_t *d,
                       const uint16_t *start, int32_t in, int32_t out, const sqc_requant_t *rq, int32_t *acc);
void sqc_linear_csc_w16(const sqc_act_t *x, sqc_act_t *y, const int16_t *w, const uint8_t *d,
                        const uint16_t *start, int32_t in, int32_t out, const sqc_requant_t *rq, int32_t *acc);
void sqc_linear_csr_w8(const sqc_act_t *x, sqc_act_t *y, const int8_t *w, const uint8_t *d, const uint16_t *cnt,
                       int32_t in, int32_t out, const sqc_requant_t *rq);
void sqc_linear_csr_w16(const sqc_act_t *x, sqc_act_t *y, const int16_t *w, const uint8_t *d,
                        const uint16_t *cnt, int32_t in, int32_t out, const sqc_requant_t *rq);
void sqc_conv_w8(const sqc_act_t *x, sqc_act_t *y, const int8_t *w, const uint8_t *idx, uint32_t nidx,
                 const sqc_conv_t *c, const sqc_requant_t *rq, int32_t *acc);
void sqc_conv_w16(const sqc_act_t *x, sqc_act_t *y, const int16_t *w, const uint8_t *idx, uint32_t nidx,
                  const sqc_conv_t *c, const sqc_requant_t *rq, int32_t *acc);

void sqc_affine(const sqc_act_t *x, sqc_act_t *y, int32_t channels, int32_t inner, const sqc_requant_t *rq);
void sqc_clamp(const sqc_act_t *x, sqc_act_t *y, int32_t n, int32_t lo, int32_t hi);
void sqc_prelu(const sqc_act_t *x, sqc_act_t *y, int32_t channels, int32_t inner, const int16_t *mult,
               int32_t shift);
void sqc_max_pool(const sqc_act_t *x, sqc_act_t *y, int32_t channels, int32_t h, int32_t w, int32_t oh,
                  int32_t ow, int32_t kh, int32_t kw, int32_t sh, int32_t sw);
void sqc_pool(const sqc_act_t *x, sqc_act_t *y, int32_t channels, int32_t h, int32_t w, int32_t oh, int32_t ow,
              const int16_t *ys, const int16_t *ye, const int16_t *xs, const int16_t *xe,
              const int32_t *divisor);
void sqc_add(const sqc_act_t *a, const sqc_act_t *b, sqc_act_t *y, int32_t n, int32_t scale_a,
             int32_t scale_b, int32_t shift, int32_t subtract);
void sqc_mul(const sqc_act_t *a, const sqc_act_t *b, sqc_act_t *y, int32_t n, int32_t shift);
void sqc_cat_part(const sqc_act_t *x, sqc_act_t *y, int32_t outer, int32_t inner, int32_t total,
                  int32_t offset, int32_t shift);
void sqc_lut(const sqc_act_t *x, sqc_act_t *y, int32_t n, const sqc_act_t *table);
void sqc_softmax(const sqc_act_t *x, sqc_act_t *y, int32_t rows, int32_t cols, const int32_t *exp_table,
                 int32_t out_frac);
void sqc_pad(const sqc_act_t *x, sqc_act_t *y, int32_t channels, int32_t h, int32_t w, int32_t top,
             int32_t bottom, int32_t left, int32_t right, int32_t fill);
/* Softmax with I-BERT's integer exp (targets/INTEGER.md): d = max - x, z = d / ln2, p = d - z ln2,
 * e = ((qb - p)^2 + qc) >> min(62, z + base), y = min(qmax, floor((e 2^(fy+1) + s) / (2 s))). */
void sqc_softmax_iexp(const sqc_act_t *x, sqc_act_t *y, int32_t rows, int32_t cols, int32_t ln2, int32_t qb,
                      int64_t qc, int32_t base, int32_t out_frac);

/* LayerNorm over rows of cols codes, integer-only (targets/INTEGER.md): s = sum x, d = cols x - s,
 * r = max(1, isqrt(floor(sum d^2 / cols) + eps)), z = floor(d 2^frac / r),
 * y = sat(rshift_round(z mult[i] + bias[i], shift[i])). */
void sqc_layer_norm(const sqc_act_t *x, sqc_act_t *y, int32_t rows, int32_t cols, int64_t eps, int32_t frac,
                    const int16_t *mult, const int64_t *bias, const int8_t *shift);

/* Product of activations: a (batch, m, k) x b (batch, k, n), int64 sums, y = sat(rshift_round(acc mult,
 * shift)). */
void sqc_matmul(const sqc_act_t *a, const sqc_act_t *b, sqc_act_t *y, int32_t batch, int32_t m, int32_t k,
                int32_t n, int32_t mult, int32_t shift);

/* Interpolated table (activations over 8 bits): u = x - qmin, j = u >> shift, r = u mod 2^shift,
 * y = sat(rshift_round(knots[j] * 2^shift + (knots[j+1] - knots[j]) * r, shift)). */
void sqc_lut_interp(const sqc_act_t *x, sqc_act_t *y, int32_t n, const int32_t *knots, int32_t shift);

/* Data movement: y[i] = x[offset + sum_k i_k * strides[k]] over the index space dims[0..rank) in
 * row-major order (permute, transpose, slicing, indexing, broadcasting with stride 0); rank <= 8. */
void sqc_strided(const sqc_act_t *x, sqc_act_t *y, int32_t rank, const int32_t *dims, const int32_t *strides,
                 int32_t offset);

#endif
