/* Native core of sqc's context-adaptive binary rANS coder (formats/rans.py, FORMAT.md "Context-coded
 * layout").
 *
 * Why: the numpy/Python coder costs 0.3-1.2 us per binary decision because the model is inherently
 * sequential (a round's probabilities depend on every earlier decision). Written out in C the same
 * loops cost a few nanoseconds per decision. This file computes exactly what formats/rans.py and
 * formats/rans_reference.py compute (tests compare bytes, symbols and errors); the Python module does
 * the argument checks, the stream-length and initial-state checks, the final checks and the mode
 * choice, and calls the functions here:
 *
 *   mask_decode(data, lanes, numel, cols, model, x, mask) -> words read
 *       the mask phase: every position's kept/pruned decision into the writable byte buffer `mask`
 *       (numel bytes), lane states `x` (writable uint32, little-endian host order) updated in place.
 *   values_decode(data, lanes, numel, cols, width, alphabet, mode, x, next_word, mask, out) -> words read
 *       the value phase: the kept symbols into the writable int64 buffer `out`; `mask` is the decoded
 *       mask (or None for a dense tensor), `next_word` the first word the phase reads.
 *   scatter_table(mask, symbols, table, out)
 *       a sparse tensor's float32 values: out[i] = table[symbols[k]] at the k-th set position i of mask.
 *   encode(lanes, numel, cols, width, mode, mask, symbols) -> (stream bytes, words read by the mask phase)
 *       both phases with known decisions (their probabilities recorded), then the rANS pass in reverse.
 *   encode_masked(lanes, numel, cols, width, value_mode, mask, symbols) -> (stream, mask words, mask model)
 *       encode's stream for each mask model, the shorter kept (ties: model 0), the value phase coded once.
 *   value_counts(lanes, numel, cols, width, mask, symbols, pairs0, pairs1, pairs2, pairs3)
 *       the final (n0, n1) of every value context in each mode m whose writable int64 buffer pairs<m> is
 *       given (None: skipped), in one pass, from which rans._value_costs sums a mode's cost (in Python,
 *       with math.lgamma, for the same floats).
 *
 * A corrupt stream raises StreamError (a ValueError) with the message the Python decoder raises as
 * SqcFormatError. The heavy loops run without the GIL. Memory: a decoder allocates per-lane arrays,
 * per-column statistics (cols <= numel) and the context tables of the value mode (at most
 * 9 * 2^16 slots); the caller has checked numel against the stream's length before calling.
 *
 * All arithmetic is unsigned and exact: states are below 2^32 and frequencies below 2^16 (their
 * products fit in 32 bits, see rans_step), counts in 64 bits. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__SSE2__) /* scatter_table and rdo_pick */
#include <emmintrin.h>
#endif

#define ONE 65536u
#define RUN_LUT_SIZE 64u
#define COLUMN_BUCKETS 10u
#define MASK_CONTEXTS 70u
#define DENSITY_PRIOR 16u
#define DENSITY_BUCKETS 25u
#define DENSITY_CONTEXTS 50u
#define NO_ROW UINT64_MAX

enum { OK = 0, ERR_EARLY = 1, ERR_ALPHABET = 2, ERR_NOMEM = 3, ERR_SHAPE = 4 };

static PyObject *StreamError;

/* ------------------------------------------------------------------------------------ the model */

/* run bucket * 10 for a run of r < 64 pruned positions (longer runs share the last bucket) */
static uint8_t run_ctx[RUN_LUT_SIZE];

static void init_tables(void)
{
    static const uint32_t thresholds[6] = {1u, 3u, 7u, 15u, 31u, 63u};
    uint32_t r, k;
    for (r = 0; r < RUN_LUT_SIZE; r++) {
        uint32_t rb = 0;
        for (k = 0; k < 6u; k++) {
            rb += r >= thresholds[k];
        }
        run_ctx[r] = (uint8_t)(rb * COLUMN_BUCKETS);
    }
}

/* P(1) from the counts (Krichevsky-Trofimov, 16-bit, clamped to [1, 65535]). */
static inline uint32_t kt_p1(uint64_t total, uint64_t ones)
{
    /* ((2 n1 + 1) << 16) div (2 (n0 + n1) + 2) = ((2 n1 + 1) << 15) div (n0 + n1 + 1): both even */
    uint64_t num = (2u * ones + 1u) << 15, den = total + 1u, p;
    p = (num >> 32) == 0 && (den >> 32) == 0 ? (uint32_t)num / (uint32_t)den : num / den; /* 32-bit: faster */
    return p < 1u ? 1u : (p > 65535u ? 65535u : (uint32_t)p);
}

/* The mask context bucket of a column: 0 nothing seen, 1/2 none kept (in < 4 / >= 4), else density. */
static inline uint32_t column_bucket(uint64_t kept, uint64_t seen)
{
    if (seen == 0) {
        return 0;
    }
    if (kept == 0) {
        return seen < 4u ? 1u : 2u;
    }
    /* 3 + min(6, bit_length(64 * kept div seen)) without dividing: 64 * kept div seen >= 2^i exactly
     * when 64 * kept >= seen << i (seen <= 2^40: no overflow) */
    kept <<= 6;
    return 3u + (kept >= seen) + (kept >= seen << 1) + (kept >= seen << 2) + (kept >= seen << 3) +
           (kept >= seen << 4) + (kept >= seen << 5);
}

/* Mask model 1's bucket of a predicted kept probability p (16-bit fixed point; FORMAT.md): 0 for
 * p >= 2^16, 24 for 0, else min(24, 2 (16 - L) + 1 + [p^2 < 2^(2L-1)]) with L = bit_length(p). */
static inline uint32_t density_bucket(uint64_t p)
{
    uint32_t len, b;
    if (p >= ONE) {
        return 0;
    }
    if (p == 0) {
        return DENSITY_BUCKETS - 1u;
    }
#if defined(__GNUC__) || defined(__clang__)
    len = 32u - (uint32_t)__builtin_clz((uint32_t)p); /* bit_length; 0 < p < 2^16 */
#else
    for (len = 0; (p >> len) != 0; len++) {
    }
#endif
    b = 2u * (16u - len) + 1u + (p * p < (1ull << (2u * len - 1u)));
    return b < DENSITY_BUCKETS - 1u ? b : DENSITY_BUCKETS - 1u;
}

/* The row (in the lane) and column estimates shrunk toward the tensor's g, combined: row * col / g. */
static inline uint64_t div_u64(uint64_t num, uint64_t den)
{
    return (num >> 32) == 0 && (den >> 32) == 0 ? (uint32_t)num / (uint32_t)den : num / den; /* 32-bit: faster */
}

static inline uint32_t density_context(uint64_t rk, uint64_t rs, uint64_t ck, uint64_t cs, uint64_t g, uint64_t r)
{
    uint64_t rp = div_u64((rk << 16) + DENSITY_PRIOR * g, rs + DENSITY_PRIOR);
    uint64_t cp = div_u64((ck << 16) + DENSITY_PRIOR * g, cs + DENSITY_PRIOR);
    return 2u * density_bucket(div_u64(rp * cp, g)) + (r != 0);
}

/* Exact division by multiplication (Lemire, Kaser, Kurz, "Faster remainder by direct computation", 2019,
 * theorem 1): with c = ceil(2^64 / d), floor(n * c / 2^64) = floor(n / d) for every n < 2^N when
 * N + ceil(log2 d) <= 64. Mask model 1 divides three times a position by divisors that repeat (the seen
 * counts + 16, the tensor's density g once per round); a multiply is several times cheaper than a divide.
 * recip(1) is 0 and stands for "n itself" (c would be 2^64). */
#if defined(__SIZEOF_INT128__)
#define HAVE_RECIP 1
static inline uint64_t recip_of(uint64_t d)
{
    return d > 1u ? UINT64_MAX / d + 1u : 0u;
}

/* n div d for c = recip_of(d), d > 1 */
static inline uint64_t mulhi(uint64_t n, uint64_t c)
{
    return (uint64_t)(((unsigned __int128)n * c) >> 64);
}

static inline uint64_t div_recip(uint64_t n, uint64_t c)
{
    return c ? (uint64_t)(((unsigned __int128)n * c) >> 64) : n;
}

/* density_context with the divisions by reciprocals: rc = recip_of(rs + 16), cc = recip_of(cs + 16),
 * gc = recip_of(g). Exact when rs + 16 and cs + 16 are below 2^24 (numerators below 2^16 times the
 * divisor: N <= 16 + 24) and g < 2^16 (the product rp * cp is below 2^33). */
static inline uint32_t density_context_recip(uint64_t rk, uint64_t rc, uint64_t ck, uint64_t cc, uint64_t g,
                                             uint64_t gc, uint64_t r)
{
    uint64_t rp = div_recip((rk << 16) + DENSITY_PRIOR * g, rc);
    uint64_t cp = div_recip((ck << 16) + DENSITY_PRIOR * g, cc);
    return 2u * density_bucket(div_recip(rp * cp, gc)) + (r != 0);
}
#define RECIP_LIMIT (1u << 24)
#endif

/* count trailing zeros of x != 0 */
static inline uint32_t ctz64(uint64_t x)
{
#if defined(__GNUC__) || defined(__clang__)
    return (uint32_t)__builtin_ctzll(x);
#else
    uint32_t n = 0;
    for (; !(x & 1u); x >>= 1) {
        n++;
    }
    return n;
#endif
}

static inline uint64_t lane_start(uint64_t numel, uint32_t lanes, uint32_t j)
{
    return (uint64_t)j * numel / lanes; /* j <= 4096 and numel <= 2^34: no overflow */
}

/* ------------------------------------------------------------------------------- the rANS coder */

/* Either side of the coder. Decoding: lane states and the word stream. Encoding: the probability of
 * every decision, in decoding order, for the reverse pass. */
typedef struct {
    int decoding;
    uint32_t *x;
    const uint8_t *words; /* u16 little-endian */
    uint64_t nwords, next;
    uint16_t *probs;
    uint64_t nprobs;
} coder_t;

/* One decision of probability p (of a 1) in lane j. Decoding returns the bit read, or -1 when the
 * stream has no word left; encoding records p and returns `bit`. */
#if defined(__GNUC__) || defined(__clang__)
#define ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define ALWAYS_INLINE inline
#endif

/* code_bit with the side known at compile time (`decoding` a constant where it is inlined) */
static ALWAYS_INLINE int code_bit_as(coder_t *c, uint32_t j, uint32_t p, int bit, const int decoding)
{
    uint32_t x, f0, s;
    if (!decoding) {
        c->probs[c->nprobs++] = (uint16_t)p;
        return bit;
    }
    x = c->x[j];
    f0 = ONE - p;
    s = x & 0xFFFFu;
    bit = s >= f0;
    {
        /* branch-free (the bit is data): f = p or f0, start = f0 or 0;
         * f * (x >> 16) + (s - start) < f * 2^16 <= 2^32 - 2^16: fits */
        uint32_t sel = 0u - (uint32_t)bit;
        uint32_t start = f0 & sel, f = (p & sel) | (f0 & ~sel);
        x = f * (x >> 16) + s - start;
    }
    if (x < ONE) {
        const uint8_t *w;
        if (c->next >= c->nwords) {
            return -1;
        }
        w = c->words + 2u * c->next++;
        x = (x << 16) | (uint32_t)w[0] | ((uint32_t)w[1] << 8);
    }
    c->x[j] = x;
    return bit;
}

static inline int code_bit(coder_t *c, uint32_t j, uint32_t p, int bit)
{
    return code_bit_as(c, j, p, bit, c->decoding);
}

/* ---------------------------------------------------------------------------------- mask phase */

/* Scratch of the mask phase: per column and per lane (each lane's context of the round in `ctx`, and
 * of mask model 1 in `ctx1` when encoding both models). */
typedef struct {
    uint64_t *col_kept, *col_seen, *run, *row_kept, *row_seen, *col, *start, *recip;
    uint8_t *ctx, *ctx1;
} mask_scratch_t;

static void mask_free(mask_scratch_t *m)
{
    free(m->col_kept);
    free(m->col_seen);
    free(m->run);
    free(m->row_kept);
    free(m->row_seen);
    free(m->col);
    free(m->start);
    free(m->ctx);
    free(m->ctx1);
    free(m->recip);
}

/* Every position's kept decision, round by round (round t = position start_j + t of each lane that has
 * one), each lane reading the probabilities and column statistics as they were at the start of the
 * round. Each round computes every lane's context first and then decides and updates (so the counts
 * and the column statistics may change at once); probabilities are a table refreshed after the round.
 * `mask` is read (encoding) or written (decoding). */
static ALWAYS_INLINE int mask_phase_as(coder_t *c, uint64_t numel, uint64_t cols, uint32_t lanes, uint32_t model,
                                       uint8_t *mask, coder_t *also, const int decoding)
{
    mask_scratch_t m = {0};
    uint64_t counts[MASK_CONTEXTS][2] = {{0}}, counts1[DENSITY_CONTEXTS][2] = {{0}};
    uint32_t ptab[MASK_CONTEXTS], ptab1[DENSITY_CONTEXTS];
    uint8_t dirty1[DENSITY_CONTEXTS] = {0}, touched1[DENSITY_CONTEXTS];
    uint64_t longest = 0, t, all_kept = 0, all_seen = 0;
    uint32_t j, i;
    int status = OK;
    if (numel == 0) {
        return OK;
    }
    m.col_kept = calloc(cols, sizeof *m.col_kept);
    m.col_seen = calloc(cols, sizeof *m.col_seen);
    m.run = calloc(lanes, sizeof *m.run);
    m.row_kept = calloc(lanes, sizeof *m.row_kept);
    m.row_seen = calloc(lanes, sizeof *m.row_seen);
    m.col = calloc(lanes, sizeof *m.col);
    m.start = calloc((size_t)lanes + 1u, sizeof *m.start);
    m.ctx = calloc(lanes, 1);
    m.ctx1 = calloc(lanes, 1);
    if (!m.col_kept || !m.col_seen || !m.run || !m.row_kept || !m.row_seen || !m.col || !m.start || !m.ctx ||
        !m.ctx1) {
        mask_free(&m);
        return ERR_NOMEM;
    }
    for (i = 0; i < MASK_CONTEXTS; i++) {
        ptab[i] = kt_p1(0, 0);
    }
    for (i = 0; i < DENSITY_CONTEXTS; i++) {
        ptab1[i] = kt_p1(0, 0);
    }
    for (j = 0; j <= lanes; j++) {
        m.start[j] = lane_start(numel, lanes, j);
    }
    for (j = 0; j < lanes; j++) {
        uint64_t len = m.start[j + 1u] - m.start[j];
        longest = len > longest ? len : longest;
        m.col[j] = m.start[j] % cols;
    }
#ifdef HAVE_RECIP
    /* model 1's divisors row_seen + 16 <= cols + 16 and col_seen + 16 <= rows + 16, as reciprocals (a
     * table of the larger; none, and hardware division, past the exactness limit or without memory) */
    if ((model || also) && cols + DENSITY_PRIOR < RECIP_LIMIT && numel / cols + DENSITY_PRIOR < RECIP_LIMIT) {
        uint64_t most = (numel / cols > cols ? numel / cols : cols) + DENSITY_PRIOR, d;
        m.recip = malloc((most + 1u) * sizeof *m.recip);
        for (d = 0; m.recip && d <= most; d++) {
            m.recip[d] = recip_of(d);
        }
    }
#endif
    {
        /* locals the compiler can keep in registers (byte stores may alias anything reachable) */
        uint64_t *restrict col_kept = m.col_kept, *restrict col_seen = m.col_seen, *restrict run = m.run;
        uint64_t *restrict row_kept = m.row_kept, *restrict row_seen = m.row_seen;
        uint64_t *restrict lane_col = m.col, *restrict start = m.start;
        const uint64_t *restrict recip = m.recip;
        uint8_t *restrict ctxs = m.ctx, *restrict dctxs = m.ctx1;
        coder_t io = *c;
        uint64_t gc = 0, gc_of = 0; /* recip_of(gc_of) */
        for (t = 0; t < longest; t++) {
            uint32_t nt1 = 0;
            uint64_t seen0 = 0, seen1 = 0, ccol = 0, cseen = 0, ckept = 0, cp = 0, cp_col = UINT64_MAX;
            uint64_t cb_col = UINT64_MAX;
            uint32_t cb = 0;
            /* model 1: the tensor's density so far (the decisions of earlier rounds), 16-bit, >= 1 */
            uint64_t g = div_u64((all_kept + 1u) << 16, all_seen + 2u);
            g = g ? g : 1u;
#ifdef HAVE_RECIP
            if (recip && g != gc_of) { /* g settles as the tensor goes on: its reciprocal mostly stays */
                gc = recip_of(g);
                gc_of = g;
            }
#endif
            /* first every lane's context (independent within a round: all read the statistics as the
             * round found them), then the decisions and the updates: one lane's long context arithmetic
             * does not wait on the previous lane's decision, and no update needs deferring */
            for (j = 0; j < lanes; j++) {
                uint64_t col = lane_col[j], live = 0u - (uint64_t)(col != 0u), r = run[j] & live;
                uint64_t rk = row_kept[j] & live, rs = row_seen[j] & live;
                uint32_t ctx = 0;
                row_kept[j] = rk; /* a row starts: its statistics start again */
                row_seen[j] = rs;
                if (model || also) {
#ifdef HAVE_RECIP
                    if (recip) { /* density_context_recip, the column's estimate shared by its lanes */
                        uint64_t rp = mulhi(((rk << 16) + DENSITY_PRIOR * g), recip[rs + DENSITY_PRIOR]);
                        if (col != cp_col) {
                            cp = mulhi((col_kept[col] << 16) + DENSITY_PRIOR * g, recip[col_seen[col] + DENSITY_PRIOR]);
                            cp_col = col;
                        }
                        ctx = 2u * density_bucket(div_recip(rp * cp, gc)) + (r != 0);
                    } else
#endif
                    {
                        ctx = density_context(rk, rs, col_kept[col], col_seen[col], g, r);
                    }
                    if (also) {
                        dctxs[j] = (uint8_t)ctx;
                    }
                }
                if (!model) { /* the column's bucket, like model 1's estimate, shared by its lanes */
                    if (col != cb_col) {
                        cb = column_bucket(col_kept[col], col_seen[col]);
                        cb_col = col;
                    }
                    ctx = run_ctx[r < RUN_LUT_SIZE - 1u ? r : RUN_LUT_SIZE - 1u] + cb;
                }
                ctxs[j] = (uint8_t)ctx;
            }
            for (j = 0; j < lanes; j++) {
                uint64_t pos = start[j] + t, col = lane_col[j], r = run[j];
                uint32_t ctx = ctxs[j];
                int bit;
                if (pos >= start[j + 1u]) {
                    continue;
                }
                if (also) { /* encoding model 1 alongside model 0: record its probability too */
                    uint32_t dctx = dctxs[j];
                    int known = mask[pos] != 0;
                    also->probs[also->nprobs++] = (uint16_t)ptab1[dctx];
                    counts1[dctx][known]++;
                    touched1[nt1] = (uint8_t)dctx;
                    nt1 += !dirty1[dctx];
                    dirty1[dctx] = 1;
                }
                r = col ? r : 0u;
                bit = code_bit_as(&io, j, ptab[ctx], decoding ? 0 : mask[pos] != 0, decoding); /* decoding: unread */
                if (bit < 0) {
                    status = ERR_EARLY;
                    goto done;
                }
                if (decoding) {
                    mask[pos] = (uint8_t)bit;
                }
                counts[ctx][bit]++;
                seen0 |= ctx < 64u ? (uint64_t)1u << (ctx & 63u) : 0u; /* the round's contexts, as bits */
                seen1 |= ctx < 64u ? 0u : (uint64_t)1u << (ctx & 63u);
                if (col != ccol) { /* the lanes in one column (often all of them) add up in registers */
                    col_seen[ccol] += cseen;
                    col_kept[ccol] += ckept;
                    ccol = col;
                    cseen = ckept = 0;
                }
                cseen++;
                ckept += (uint64_t)bit;
                run[j] = (r + 1u) & ((uint64_t)bit - 1u); /* 0 after a kept position */
                row_kept[j] += (uint64_t)bit;
                row_seen[j]++;
                all_kept += (uint64_t)bit; /* g above was read before the round: the update may be now */
                all_seen++;
                lane_col[j] = col + 1u == cols ? 0u : col + 1u;
            }
            col_seen[ccol] += cseen;
            col_kept[ccol] += ckept;
            while (seen0 | seen1) { /* the probabilities the next round reads: of the contexts touched */
                uint32_t ctx = seen0 ? (uint32_t)ctz64(seen0) : 64u + (uint32_t)ctz64(seen1);
                if (seen0) {
                    seen0 &= seen0 - 1u;
                } else {
                    seen1 &= seen1 - 1u;
                }
                ptab[ctx] = kt_p1(counts[ctx][0] + counts[ctx][1], counts[ctx][1]);
            }
            for (i = 0; i < nt1; i++) {
                uint32_t ctx = touched1[i];
                ptab1[ctx] = kt_p1(counts1[ctx][0] + counts1[ctx][1], counts1[ctx][1]);
                dirty1[ctx] = 0;
            }
        }
        c->next = io.next;
        c->nprobs = io.nprobs;
    }
done:
    mask_free(&m);
    return status;
}

/* mask_phase specialised by side and model (constants in each copy: the hot loop keeps no test of them) */
static int mask_phase(coder_t *c, uint64_t numel, uint64_t cols, uint32_t lanes, uint32_t model, uint8_t *mask,
                      coder_t *also)
{
    if (c->decoding) {
        return model ? mask_phase_as(c, numel, cols, lanes, 1, mask, NULL, 1)
                     : mask_phase_as(c, numel, cols, lanes, 0, mask, NULL, 1);
    }
    if (also) {
        return mask_phase_as(c, numel, cols, lanes, 0, mask, also, 0);
    }
    return model ? mask_phase_as(c, numel, cols, lanes, 1, mask, NULL, 0)
                 : mask_phase_as(c, numel, cols, lanes, 0, mask, NULL, 0);
}

/* --------------------------------------------------------------------------------- value phase */

/* One context of the value phase. `p` stores the probability XOR 0x8000 so that the zero-filled
 * (lazily mapped) initial table means p = 32768, that of a context never seen: a short stream costs only
 * the table pages it touches (one per slot, the fields together), not the whole 9 * 2^16-slot table. */
typedef struct {
    uint64_t total, ones;
    uint16_t p;
    uint8_t dirty;
} slot_t;

/* Scratch of the value phase. */
typedef struct {
    uint64_t *per_lane, *first, *cur, *start, *prev_row, *prev_sym, *row, *base, *node;
    uint32_t *active, *dirty;
    slot_t *slot;
} value_scratch_t;

static void value_free(value_scratch_t *v)
{
    free(v->per_lane);
    free(v->first);
    free(v->cur);
    free(v->start);
    free(v->prev_row);
    free(v->prev_sym);
    free(v->row);
    free(v->base);
    free(v->node);
    free(v->active);
    free(v->dirty);
    free(v->slot);
}

/* The per-lane arrays every pass over the kept positions needs. */
static int value_lanes_alloc(value_scratch_t *v, uint32_t lanes)
{
    v->per_lane = calloc(lanes, sizeof *v->per_lane);
    v->first = calloc(lanes, sizeof *v->first);
    v->cur = calloc(lanes, sizeof *v->cur);
    v->start = calloc((size_t)lanes + 1u, sizeof *v->start);
    v->prev_row = calloc(lanes, sizeof *v->prev_row);
    v->prev_sym = calloc(lanes, sizeof *v->prev_sym);
    v->active = calloc(lanes, sizeof *v->active);
    return v->per_lane && v->first && v->cur && v->start && v->prev_row && v->prev_sym && v->active;
}

/* The lanes' geometry for the value phase: kept positions per lane (from the mask, or every position),
 * where each lane's symbols begin in the symbol array, and the sum (the caller's symbol count). */
static uint64_t value_geometry(value_scratch_t *v, uint64_t numel, uint32_t lanes, const uint8_t *mask)
{
    uint64_t total = 0, pos;
    uint32_t j;
    for (j = 0; j <= lanes; j++) {
        v->start[j] = lane_start(numel, lanes, j);
    }
    for (j = 0; j < lanes; j++) {
        uint64_t n = 0;
        if (mask) {
            for (pos = v->start[j]; pos < v->start[j + 1u]; pos++) {
                n += mask[pos] != 0;
            }
        } else {
            n = v->start[j + 1u] - v->start[j];
        }
        v->per_lane[j] = n;
        v->first[j] = total;
        v->cur[j] = v->start[j];
        v->prev_row[j] = NO_ROW;
        total += n;
    }
    return total;
}

/* The next kept position of lane j (its t-th: the lane holds per_lane[j] of them) and its row. */
static inline uint64_t next_kept(value_scratch_t *v, uint32_t j, const uint8_t *mask)
{
    uint64_t pos = v->cur[j];
    if (mask) {
        while (!mask[pos]) {
            pos++;
        }
    }
    v->cur[j] = pos + 1u;
    return pos;
}

static inline uint64_t row_of(uint64_t pos, uint64_t row_len)
{
    return (pos >> 32) == 0 && (row_len >> 32) == 0 ? (uint32_t)pos / (uint32_t)row_len : pos / row_len;
}

/* Code (encoding) or decode the kept symbols: round t = the t-th kept position of each lane that has
 * one; its `width` bits MSB first down a binary tree, level by level across the round's lanes, in the
 * context set of the mode (the top bits of the lane's previous symbol in the same row, or "none").
 * Every lane reads the probabilities as they were at the start of the round (the table is refreshed
 * after it); a lane's levels touch distinct slots, so the counts may change at once. Decoding refuses a
 * symbol >= alphabet at the end of its round. */
static int value_phase(coder_t *c, uint64_t numel, uint64_t cols, uint32_t lanes, uint32_t width, uint32_t mode,
                       uint64_t alphabet, const uint8_t *mask, int64_t *symbols, uint64_t count)
{
    value_scratch_t v = {0};
    uint32_t ctx_bits = mode < width ? mode : width;
    uint64_t none = mode ? (1u << ctx_bits) : 0u, slots = (none + 1u) << width, top = 1u << width;
    uint64_t rounds = 0, t, row_len = cols ? cols : 1u;
    uint32_t j, a, level;
    int status = OK;
    if (!value_lanes_alloc(&v, lanes)) {
        value_free(&v);
        return ERR_NOMEM;
    }
    v.row = calloc(lanes, sizeof *v.row);
    v.base = calloc(lanes, sizeof *v.base);
    v.node = calloc(lanes, sizeof *v.node);
    v.dirty = calloc((size_t)lanes * width, sizeof *v.dirty);
    v.slot = calloc(slots, sizeof *v.slot);
    if (!v.row || !v.base || !v.node || !v.dirty || !v.slot) {
        value_free(&v);
        return ERR_NOMEM;
    }
    if (value_geometry(&v, numel, lanes, mask) != count) {
        value_free(&v);
        return ERR_SHAPE;
    }
    for (j = 0; j < lanes; j++) {
        rounds = v.per_lane[j] > rounds ? v.per_lane[j] : rounds;
    }
    {
        /* locals the compiler can keep in registers (byte stores may alias anything reachable) */
        const uint64_t *restrict per_lane_ = v.per_lane, *restrict first_ = v.first;
        uint64_t *restrict prev_row_ = v.prev_row, *restrict prev_sym_ = v.prev_sym, *restrict row_ = v.row;
        uint64_t *restrict base_ = v.base, *restrict node_ = v.node;
        uint32_t *restrict active_ = v.active, *restrict dirty_ = v.dirty;
        slot_t *restrict slot_ = v.slot;
        coder_t io = *c;
        for (t = 0; t < rounds; t++) {
            uint32_t n = 0, ndirty = 0;
            for (j = 0; j < lanes; j++) { /* the round's lanes, their positions and context sets */
                uint64_t row;
                if (t >= per_lane_[j]) {
                    continue;
                }
                base_[n] = 0;
                if (mode) {
                    row = row_of(next_kept(&v, j, mask), row_len);
                    row_[n] = row;
                    base_[n] = (prev_row_[j] == row ? prev_sym_[j] >> (width - ctx_bits) : none) << width;
                }
                node_[n] = 1u;
                active_[n++] = j;
            }
            for (level = 0; level < width; level++) {
                for (a = 0; a < n; a++) {
                    uint64_t slot = base_[a] + node_[a];
                    int want = 0, bit;
                    j = active_[a];
                    if (!io.decoding) {
                        want = (int)(((uint64_t)symbols[first_[j] + t] >> (width - 1u - level)) & 1u);
                    }
                    bit = code_bit(&io, j, (uint32_t)slot_[slot].p ^ 0x8000u, want);
                    if (bit < 0) {
                        status = ERR_EARLY;
                        goto done;
                    }
                    slot_[slot].total++;
                    slot_[slot].ones += (uint64_t)bit;
                    if (!slot_[slot].dirty) {
                        slot_[slot].dirty = 1;
                        dirty_[ndirty++] = (uint32_t)slot;
                    }
                    node_[a] = 2u * node_[a] + (uint64_t)bit;
                }
            }
            for (a = 0; a < ndirty; a++) { /* the probabilities the next round reads */
                slot_t *ctx = &slot_[dirty_[a]];
                ctx->p = (uint16_t)(kt_p1(ctx->total, ctx->ones) ^ 0x8000u);
                ctx->dirty = 0;
            }
            for (a = 0; a < n; a++) {
                uint64_t sym = node_[a] - top;
                if (io.decoding && sym >= alphabet) {
                    status = ERR_ALPHABET;
                    goto done;
                }
                j = active_[a];
                if (io.decoding) {
                    symbols[first_[j] + t] = (int64_t)sym;
                }
                prev_sym_[j] = sym;
                prev_row_[j] = row_[a];
            }
        }
        c->next = io.next;
        c->nprobs = io.nprobs;
    }
done:
    value_free(&v);
    return status;
}

/* The value phase's final counts (n0, n1 of every slot) in each value mode m whose table pairs[m] is given,
 * without coding: what the encoder's mode choice (rans._value_costs) sums its cost from. The same lanes and
 * contexts as value_phase; one pass over the symbols for every mode asked for. */
static int value_counts(uint64_t numel, uint64_t cols, uint32_t lanes, uint32_t width, const uint8_t *mask,
                        const int64_t *symbols, uint64_t count, int64_t *const pairs[4])
{
    value_scratch_t v = {0};
    uint64_t row_len = cols ? cols : 1u, k;
    uint32_t j, level, m;
    int rows = pairs[1] || pairs[2] || pairs[3];
    if (!value_lanes_alloc(&v, lanes)) {
        value_free(&v);
        return ERR_NOMEM;
    }
    if (value_geometry(&v, numel, lanes, mask) != count) {
        value_free(&v);
        return ERR_SHAPE;
    }
    for (j = 0; j < lanes; j++) {
        for (k = v.first[j]; k < v.first[j] + v.per_lane[j]; k++) {
            uint64_t sym = (uint64_t)symbols[k], row = 0;
            int same = 0;
            if (rows) {
                row = row_of(next_kept(&v, j, mask), row_len);
                same = v.prev_row[j] == row;
            }
            for (m = 0; m < 4u; m++) {
                uint32_t ctx_bits = m < width ? m : width;
                uint64_t base = 0, node = 1u;
                if (!pairs[m]) {
                    continue;
                }
                if (m) {
                    base = (same ? v.prev_sym[j] >> (width - ctx_bits) : (uint64_t)1u << ctx_bits) << width;
                }
                for (level = 0; level < width; level++) {
                    uint64_t bit = (sym >> (width - 1u - level)) & 1u;
                    pairs[m][2u * (base + node) + bit]++;
                    node = 2u * node + bit;
                }
            }
            v.prev_row[j] = row;
            v.prev_sym[j] = sym;
        }
    }
    value_free(&v);
    return OK;
}

/* ------------------------------------------------------------------------- the reverse rANS pass */

/* One decision in reverse (encoding), state x of its lane: emit a word when x would overflow, then
 * push the decision. The words go from the end of `out` downwards, so they end in stream order. */
static inline void rans_push(uint32_t *x, uint32_t p, int bit, uint16_t *out, uint64_t *emitted, uint64_t end)
{
    uint32_t f = bit ? p : ONE - p, start = bit ? ONE - p : 0u, v = *x;
    if (v >= (f << 16)) {
        out[end - 1u - (*emitted)++] = (uint16_t)(v & 0xFFFFu);
        v >>= 16;
    }
    *x = ((v / f) << 16) + v % f + start;
}

/* The value phase in reverse (encoding): its decisions, whose probabilities `probs[0..count * width)` the
 * forward pass recorded, pushed rounds, levels and lanes backwards from states ONE. Each decision emits at
 * most one word and is read before its word is written, so the words overwrite `probs` from the end: they
 * are probs[count * width - emitted ..), in stream order. */
static int reverse_values(uint16_t *probs, uint32_t *x, uint64_t numel, uint32_t lanes, uint32_t width,
                          const uint8_t *mask, const int64_t *symbols, uint64_t count, uint64_t *emitted)
{
    value_scratch_t v = {0};
    uint64_t n = count * width, i = n, rounds = 0, t;
    uint32_t j, level;
    int a;
    *emitted = 0;
    if (!value_lanes_alloc(&v, lanes)) {
        value_free(&v);
        return ERR_NOMEM;
    }
    if (value_geometry(&v, numel, lanes, mask) != count) {
        value_free(&v);
        return ERR_SHAPE;
    }
    for (j = 0; j < lanes; j++) {
        x[j] = ONE;
        rounds = v.per_lane[j] > rounds ? v.per_lane[j] : rounds;
    }
    for (t = rounds; t-- > 0;) {
        int active = 0;
        for (j = 0; j < lanes; j++) {
            if (t < v.per_lane[j]) {
                v.active[active++] = j;
            }
        }
        for (level = width; level-- > 0;) {
            for (a = active - 1; a >= 0; a--) {
                uint64_t sym;
                j = v.active[a];
                sym = (uint64_t)symbols[v.first[j] + t];
                rans_push(&x[j], probs[--i], (int)((sym >> (width - 1u - level)) & 1u), probs, emitted, n);
            }
        }
    }
    value_free(&v);
    return i == 0 ? OK : ERR_SHAPE;
}

/* The mask phase in reverse, from the states `x` the value phase left (`start`: the lanes' bounds):
 * `probs[0..numel)` as recorded, the words overwriting them from the end as in reverse_values. */
static void reverse_mask(uint16_t *probs, uint32_t *x, uint64_t numel, uint32_t lanes, const uint64_t *start,
                         const uint8_t *mask, uint64_t *emitted)
{
    uint64_t i = numel, t, longest = 0;
    uint32_t j;
    *emitted = 0;
    for (j = 0; j < lanes; j++) {
        uint64_t len = start[j + 1u] - start[j];
        longest = len > longest ? len : longest;
    }
    for (t = longest; t-- > 0;) {
        for (j = lanes; j-- > 0;) {
            uint64_t pos = start[j] + t;
            if (pos < start[j + 1u]) {
                rans_push(&x[j], probs[--i], mask[pos] != 0, probs, emitted, numel);
            }
        }
    }
}

/* ------------------------------------------------------------------------------ Python bindings */

static int raise_status(int status, uint64_t alphabet)
{
    switch (status) {
    case ERR_EARLY:
        PyErr_SetString(StreamError, "rANS stream ends early (truncated or corrupt)");
        break;
    case ERR_ALPHABET:
        PyErr_Format(StreamError, "context-coded symbol outside the alphabet of %llu",
                     (unsigned long long)alphabet);
        break;
    case ERR_NOMEM:
        PyErr_NoMemory();
        break;
    default:
        PyErr_SetString(PyExc_ValueError, "mask, symbols and shape disagree");
    }
    return -1;
}

/* The geometry arguments every function takes, checked: lanes in 1..4096, cols dividing numel. */
static int check_geometry(uint64_t lanes, uint64_t numel, uint64_t cols)
{
    if (lanes < 1u || lanes > 4096u || numel > (1ull << 40) || (numel && (cols == 0 || numel % cols))) {
        PyErr_SetString(PyExc_ValueError, "bad lanes, numel or cols");
        return -1;
    }
    return 0;
}

/* scatter_table(mask, symbols, table, out): out[i] = table[symbols[k]] at the k-th position i where mask[i]
 * is set (out's other positions are left as they are: zeros from the caller). Why: the decoded values of
 * a sparse tensor straight from the symbols, without a kept-values array and a boolean-mask assignment
 * (numpy's costs 0.70 ms on 400K positions at 10 % density, this 0.08). The table holds each symbol's float32 value. */
static PyObject *py_scatter_table(PyObject *self, PyObject *args)
{
    Py_buffer mask, symbols, table, out;
    int status = 0;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*y*y*w*", &mask, &symbols, &table, &out)) {
        return NULL;
    }
    if ((uint64_t)out.len != 4u * (uint64_t)mask.len || symbols.len % 8 || table.len % 4) {
        PyErr_SetString(PyExc_ValueError, "scatter_table: bad buffer sizes");
        status = -1;
    } else {
        const uint8_t *m = mask.buf;
        const int64_t *sym = symbols.buf;
        const float *tab = table.buf;
        float *o = out.buf;
        uint64_t i, k = 0, n = (uint64_t)mask.len, nsym = (uint64_t)symbols.len / 8u, ntab = (uint64_t)table.len / 4u;
        Py_BEGIN_ALLOW_THREADS
        for (i = 0; i < nsym; i++) { /* every symbol indexes the table: then the loop below need not check */
            if ((uint64_t)sym[i] >= ntab) {
                status = -1;
                break;
            }
        }
        if (!status) {
            i = 0;
#if defined(__SSE2__)
            /* sixteen positions at a time: the set ones as bits, visited lowest first (a pruned mask's
             * pattern is what a branch predictor cannot learn, so no branch per position); k is checked
             * before each use, and the count after */
            {
                const __m128i zero = _mm_setzero_si128();
                for (; i + 16u <= n; i += 16u) {
                    __m128i e = _mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)(const void *)(m + i)), zero);
                    uint32_t z = 0xffffu ^ (uint32_t)_mm_movemask_epi8(e);
                    for (; z && k < nsym; z &= z - 1u) {
                        o[i + ctz64(z)] = tab[sym[k++]];
                    }
                    if (z) { /* more kept positions than symbols */
                        status = -1;
                        break;
                    }
                }
            }
#endif
            /* the rest (all of it without SSE2) a position at a time (measured: a branch-free select
             * here is twice as slow as the branch, the chain of dependent loads costing more than the
             * mispredictions) */
            for (; !status && i < n; i++) {
                if (m[i]) {
                    if (k >= nsym) {
                        status = -1;
                        break;
                    }
                    o[i] = tab[sym[k++]];
                }
            }
        }
        if (k != nsym) {
            status = -1;
        }
        Py_END_ALLOW_THREADS
        if (status) {
            PyErr_SetString(PyExc_ValueError, "scatter_table: symbols do not match the mask or the table");
        }
    }
    PyBuffer_Release(&mask);
    PyBuffer_Release(&symbols);
    PyBuffer_Release(&table);
    PyBuffer_Release(&out);
    if (status) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *py_mask_decode(PyObject *self, PyObject *args)
{
    Py_buffer data, x, mask;
    unsigned long long lanes, numel, cols;
    coder_t c = {0};
    int status;
    (void)self;
    unsigned long long model;
    if (!PyArg_ParseTuple(args, "y*KKKKw*w*", &data, &lanes, &numel, &cols, &model, &x, &mask)) {
        return NULL;
    }
    status = check_geometry(lanes, numel, cols);
    if (!status && model > 1u) {
        PyErr_SetString(PyExc_ValueError, "unknown mask model");
        status = -1;
    }
    if (!status && ((uint64_t)x.len != 4u * lanes || (uint64_t)mask.len != numel ||
                    (uint64_t)data.len < 4u * lanes)) {
        PyErr_SetString(PyExc_ValueError, "buffer sizes disagree with the geometry");
        status = -1;
    }
    if (!status) {
        c.decoding = 1;
        c.x = x.buf;
        c.words = (const uint8_t *)data.buf + 4u * lanes;
        c.nwords = ((uint64_t)data.len - 4u * lanes) / 2u;
        Py_BEGIN_ALLOW_THREADS
        status = mask_phase(&c, numel, cols, (uint32_t)lanes, (uint32_t)model, mask.buf, NULL);
        Py_END_ALLOW_THREADS
        if (status) {
            status = raise_status(status, 0);
        }
    }
    PyBuffer_Release(&data);
    PyBuffer_Release(&x);
    PyBuffer_Release(&mask);
    return status ? NULL : PyLong_FromUnsignedLongLong(c.next);
}

static PyObject *py_values_decode(PyObject *self, PyObject *args)
{
    Py_buffer data, x, out, mask = {0};
    PyObject *mask_obj;
    unsigned long long lanes, numel, cols, width, alphabet, mode, next;
    coder_t c = {0};
    int status;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*KKKKKKw*KOw*", &data, &lanes, &numel, &cols, &width, &alphabet, &mode, &x,
                          &next, &mask_obj, &out)) {
        return NULL;
    }
    status = check_geometry(lanes, numel, cols);
    if (!status && mask_obj != Py_None && PyObject_GetBuffer(mask_obj, &mask, PyBUF_SIMPLE)) {
        status = -1;
    }
    if (!status && (width < 1u || width > 16u || mode > 3u || (uint64_t)x.len != 4u * lanes ||
                    (uint64_t)out.len % 8u || (uint64_t)data.len < 4u * lanes ||
                    next > ((uint64_t)data.len - 4u * lanes) / 2u ||
                    (mask.buf && (uint64_t)mask.len != numel))) {
        PyErr_SetString(PyExc_ValueError, "bad width, mode or buffer sizes");
        status = -1;
    }
    if (!status) {
        c.decoding = 1;
        c.x = x.buf;
        c.words = (const uint8_t *)data.buf + 4u * lanes;
        c.nwords = ((uint64_t)data.len - 4u * lanes) / 2u;
        c.next = next;
        Py_BEGIN_ALLOW_THREADS
        status = value_phase(&c, numel, cols, (uint32_t)lanes, (uint32_t)width, (uint32_t)mode, alphabet,
                             mask.buf, out.buf, (uint64_t)out.len / 8u);
        Py_END_ALLOW_THREADS
        if (status) {
            status = raise_status(status, alphabet);
        }
    }
    PyBuffer_Release(&data);
    PyBuffer_Release(&x);
    PyBuffer_Release(&out);
    if (mask.buf) {
        PyBuffer_Release(&mask);
    }
    return status ? NULL : PyLong_FromUnsignedLongLong(c.next);
}

/* The stream: the lane states (u32), then the mask phase's words and the value phase's (u16), little-endian. */
static PyObject *stream_bytes(const uint32_t *x, uint32_t lanes, const uint16_t *mask_words, uint64_t nm,
                              const uint16_t *value_words, uint64_t nv)
{
    PyObject *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(4u * (uint64_t)lanes + 2u * (nm + nv)));
    uint8_t *b;
    uint64_t i;
    if (!out) {
        return NULL;
    }
    b = (uint8_t *)PyBytes_AS_STRING(out);
    for (i = 0; i < lanes; i++) {
        *b++ = (uint8_t)x[i];
        *b++ = (uint8_t)(x[i] >> 8);
        *b++ = (uint8_t)(x[i] >> 16);
        *b++ = (uint8_t)(x[i] >> 24);
    }
    for (i = 0; i < nm; i++) {
        *b++ = (uint8_t)mask_words[i];
        *b++ = (uint8_t)(mask_words[i] >> 8);
    }
    for (i = 0; i < nv; i++) {
        *b++ = (uint8_t)value_words[i];
        *b++ = (uint8_t)(value_words[i] >> 8);
    }
    return out;
}

/* One encoding: the value phase's probabilities and states, and those of each mask model asked for (the
 * mask phase codes first, so it is pushed last, from the states the value phase left: the value phase is
 * coded once whatever the mask models tried). */
typedef struct {
    uint16_t *probs_v, *probs_m[2];
    uint32_t *xv, *x[2];
    uint64_t *start, ev, em[2];
} encoding_t;

static void encoding_free(encoding_t *e)
{
    free(e->probs_v);
    free(e->probs_m[0]);
    free(e->probs_m[1]);
    free(e->xv);
    free(e->x[0]);
    free(e->x[1]);
    free(e->start);
}

/* Encode the values (value mode `mode`) and, for each mask model in `models` (bit m: model m), the mask. */
static int encode_core(encoding_t *e, uint64_t numel, uint64_t cols, uint32_t lanes, uint32_t width, uint32_t mode,
                       const uint8_t *mask, int64_t *symbols, uint64_t count, uint32_t models)
{
    coder_t c = {0};
    uint32_t m, j;
    int status;
    e->probs_v = malloc((count * width > 0u ? count * width : 1u) * sizeof *e->probs_v);
    e->xv = malloc(lanes * sizeof *e->xv);
    e->start = malloc(((size_t)lanes + 1u) * sizeof *e->start);
    if (!e->probs_v || !e->xv || !e->start) {
        return ERR_NOMEM;
    }
    for (j = 0; j <= lanes; j++) {
        e->start[j] = lane_start(numel, lanes, j);
    }
    c.probs = e->probs_v;
    status = value_phase(&c, numel, cols, lanes, width, mode, UINT64_MAX, mask, symbols, count);
    if (!status && c.nprobs != count * width) {
        status = ERR_SHAPE;
    }
    if (!status) {
        status = reverse_values(e->probs_v, e->xv, numel, lanes, width, mask, symbols, count, &e->ev);
    }
    for (m = 0; m < 2u; m++) {
        if (models >> m & 1u) {
            e->probs_m[m] = malloc((numel ? numel : 1u) * sizeof *e->probs_m[m]);
            e->x[m] = malloc(lanes * sizeof *e->x[m]);
            if (!e->probs_m[m] || !e->x[m]) {
                return ERR_NOMEM;
            }
        }
    }
    if (!status && models) { /* both models: one pass over the mask records both (encoding: read only) */
        coder_t c1 = {0};
        memset(&c, 0, sizeof c);
        c.probs = e->probs_m[models & 1u ? 0 : 1];
        c1.probs = e->probs_m[1];
        status = mask_phase(&c, numel, cols, lanes, models == 2u, (uint8_t *)mask, models == 3u ? &c1 : NULL);
        if (!status && (c.nprobs != numel || (models == 3u && c1.nprobs != numel))) {
            status = ERR_SHAPE;
        }
    }
    for (m = 0; m < 2u && !status; m++) {
        if (models >> m & 1u) {
            memcpy(e->x[m], e->xv, lanes * sizeof *e->xv);
            reverse_mask(e->probs_m[m], e->x[m], numel, lanes, e->start, mask, &e->em[m]);
        }
    }
    return status;
}

/* encode(...) and encode_masked(...): parse, check, encode (models: the mask models to try, 0 when
 * dense), and return (stream, words of the mask phase[, mask model]) of the shortest, ties to model 0. */
static PyObject *encode_call(PyObject *args, int both)
{
    Py_buffer symbols, mask = {0};
    PyObject *mask_obj, *result = NULL, *stream;
    unsigned long long lanes, numel, cols, width, mode;
    uint64_t count;
    encoding_t e = {0};
    uint32_t models, m = 0;
    int status;
    if (!PyArg_ParseTuple(args, "KKKKKOy*", &lanes, &numel, &cols, &width, &mode, &mask_obj, &symbols)) {
        return NULL;
    }
    status = check_geometry(lanes, numel, cols);
    if (!status && mask_obj != Py_None && PyObject_GetBuffer(mask_obj, &mask, PyBUF_SIMPLE)) {
        status = -1;
    }
    count = (uint64_t)symbols.len / 8u;
    if (!status && (width < 1u || width > 16u || mode > (both ? 3u : 7u) || (mode > 3u && !mask.buf) ||
                    (both && !mask.buf) || (uint64_t)symbols.len % 8u || (mask.buf && (uint64_t)mask.len != numel))) {
        PyErr_SetString(PyExc_ValueError, "bad width, mode or buffer sizes");
        status = -1;
    }
    if (!status) {
        models = both ? 3u : (mask.buf ? 1u << (mode >> 2) : 0u);
        Py_BEGIN_ALLOW_THREADS
        status = encode_core(&e, numel, cols, (uint32_t)lanes, (uint32_t)width, (uint32_t)(mode & 3u), mask.buf,
                             symbols.buf, count, models);
        Py_END_ALLOW_THREADS
        if (status) {
            status = raise_status(status, 0);
        }
    }
    if (!status) {
        const uint32_t *x = e.xv;
        const uint16_t *mask_words = NULL;
        uint64_t nm = 0;
        if (mask.buf) {
            m = both ? (e.em[1] < e.em[0]) : (uint32_t)(mode >> 2);
            x = e.x[m];
            nm = e.em[m];
            mask_words = e.probs_m[m] + (numel - nm);
        }
        stream = stream_bytes(x, (uint32_t)lanes, mask_words, nm, e.probs_v + (count * width - e.ev), e.ev);
        if (stream) {
            result = both ? Py_BuildValue("(NKI)", stream, (unsigned long long)nm, (unsigned int)m)
                          : Py_BuildValue("(NK)", stream, (unsigned long long)nm);
        }
    }
    encoding_free(&e);
    PyBuffer_Release(&symbols);
    if (mask.buf) {
        PyBuffer_Release(&mask);
    }
    return result;
}

static PyObject *py_encode(PyObject *self, PyObject *args)
{
    (void)self;
    return encode_call(args, 0);
}

static PyObject *py_encode_masked(PyObject *self, PyObject *args)
{
    (void)self;
    return encode_call(args, 1);
}
static PyObject *py_value_counts(PyObject *self, PyObject *args)
{
    Py_buffer symbols, mask = {0}, pairs[4] = {{0}};
    PyObject *mask_obj, *pairs_obj[4];
    int64_t *tables[4] = {NULL, NULL, NULL, NULL};
    unsigned long long lanes, numel, cols, width;
    uint32_t m;
    int status;
    (void)self;
    if (!PyArg_ParseTuple(args, "KKKKOy*OOOO", &lanes, &numel, &cols, &width, &mask_obj, &symbols, &pairs_obj[0],
                          &pairs_obj[1], &pairs_obj[2], &pairs_obj[3])) {
        return NULL;
    }
    status = check_geometry(lanes, numel, cols);
    if (!status && mask_obj != Py_None && PyObject_GetBuffer(mask_obj, &mask, PyBUF_SIMPLE)) {
        status = -1;
    }
    if (!status && (width < 1u || width > 16u || (uint64_t)symbols.len % 8u ||
                    (mask.buf && (uint64_t)mask.len != numel))) {
        PyErr_SetString(PyExc_ValueError, "bad width or buffer sizes");
        status = -1;
    }
    for (m = 0; m < 4u && !status; m++) {
        uint32_t bits = m < width ? m : (uint32_t)width;
        uint64_t slots = ((m ? (1u << bits) : 0u) + 1u) << width;
        if (pairs_obj[m] == Py_None) {
            continue;
        }
        if (PyObject_GetBuffer(pairs_obj[m], &pairs[m], PyBUF_WRITABLE)) {
            status = -1;
        } else if ((uint64_t)pairs[m].len != 16u * slots) {
            PyErr_SetString(PyExc_ValueError, "bad pairs buffer size");
            status = -1;
        } else {
            tables[m] = pairs[m].buf;
        }
    }
    if (!status) {
        Py_BEGIN_ALLOW_THREADS
        status = value_counts(numel, cols, (uint32_t)lanes, (uint32_t)width, mask.buf, symbols.buf,
                              (uint64_t)symbols.len / 8u, tables);
        Py_END_ALLOW_THREADS
        if (status) {
            status = raise_status(status, 0);
        }
    }
    PyBuffer_Release(&symbols);
    for (m = 0; m < 4u; m++) {
        if (pairs[m].buf) {
            PyBuffer_Release(&pairs[m]);
        }
    }
    if (mask.buf) {
        PyBuffer_Release(&mask);
    }
    if (status) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* Rate-distortion level choice (sqc.passes._rate.rdo_levels): for each scaled weight x, the cheapest of
 * floor(x), floor(x) + 1 (both saturated to qmin..qmax) and 0 under J(q) = (x - q)^2 + weighted[q - qmin],
 * ties to the lower level, then to the non-zero one; the histogram of the choices is added to hist. The
 * same operations, in the same order, as the numpy path (built with -ffp-contract=off: no fused
 * multiply-add), so both choose the same levels.
 *
 * Every comparison here is data: as branches they mispredict about every other weight (13-20 ns a
 * weight), so on x86-64 the choices are SSE2 masks (compilers turn ternaries back into branches). Both
 * versions compute the same values: clamping x to [qmin, qmax] first and flooring the clamped value gives
 * floor(x) for x in [qmin, qmax), qmin below and qmax above (the truncation stays in range of int64_t). */
#if defined(__SSE2__) && (defined(__x86_64__) || defined(_M_X64)) /* _mm_cvt*si64: 64-bit only */

static void rdo_pick(const double *x, uint64_t n, const double *weighted, int64_t qmin, int64_t qmax,
                     double *levels, int64_t *hist)
{
    const __m128d lo = _mm_set_sd((double)qmin), hi = _mm_set_sd((double)qmax), one = _mm_set_sd(1.0);
    const __m128d zero_rate = _mm_set_sd(weighted[-qmin]);
    for (uint64_t i = 0; i < n; i++) {
        __m128d v = _mm_load_sd(x + i);
        __m128d c = _mm_min_sd(_mm_max_sd(v, lo), hi);
        __m128d t = _mm_cvtsi64_sd(c, _mm_cvttsd_si64(c)); /* truncation, then floor for negatives */
        __m128d low = _mm_sub_sd(t, _mm_and_pd(_mm_cmpgt_sd(t, c), one));
        __m128d high = _mm_min_sd(_mm_add_sd(low, one), hi);
        __m128d dl = _mm_sub_sd(v, low), dh = _mm_sub_sd(v, high);
        __m128d jl = _mm_add_sd(_mm_mul_sd(dl, dl), _mm_load_sd(weighted + (_mm_cvttsd_si64(low) - qmin)));
        __m128d jh = _mm_add_sd(_mm_mul_sd(dh, dh), _mm_load_sd(weighted + (_mm_cvttsd_si64(high) - qmin)));
        __m128d up = _mm_cmplt_sd(jh, jl);
        __m128d best = _mm_or_pd(_mm_and_pd(up, high), _mm_andnot_pd(up, low));
        __m128d bj = _mm_or_pd(_mm_and_pd(up, jh), _mm_andnot_pd(up, jl));
        __m128d zero = _mm_cmplt_sd(_mm_add_sd(_mm_mul_sd(v, v), zero_rate), bj);
        best = _mm_andnot_pd(zero, best); /* +0.0 where zero wins */
        _mm_store_sd(levels + i, best);
        hist[_mm_cvttsd_si64(best) - qmin]++;
    }
}
#else
static void rdo_pick(const double *x, uint64_t n, const double *weighted, int64_t qmin, int64_t qmax,
                     double *levels, int64_t *hist)
{
    const double zero_rate = weighted[-qmin], lo = (double)qmin, hi = (double)qmax;
    for (uint64_t i = 0; i < n; i++) {
        double v = x[i];
        double c = v < lo ? lo : (v > hi ? hi : v);
        double t = (double)(int64_t)c; /* truncation, then floor for negatives: floor() is a call */
        double low = t > c ? t - 1.0 : t;
        double high = low + 1.0 > hi ? hi : low + 1.0;
        double dl = v - low, dh = v - high;
        double jl = dl * dl + weighted[(int64_t)low - qmin];
        double jh = dh * dh + weighted[(int64_t)high - qmin];
        double best = jh < jl ? high : low, bj = jh < jl ? jh : jl;
        best = v * v + zero_rate < bj ? 0.0 : best;
        levels[i] = best;
        hist[(int64_t)best - qmin]++;
    }
}
#endif

static PyObject *py_rdo_pick(PyObject *self, PyObject *args)
{
    Py_buffer x, weighted, levels, hist;
    long long qmin, qmax;
    int status = 0;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*y*LLw*w*", &x, &weighted, &qmin, &qmax, &levels, &hist)) {
        return NULL;
    }
    uint64_t alphabet = (uint64_t)(qmax - qmin) + 1u;
    if (qmin > 0 || qmax < 0 || x.len % 8 || levels.len != x.len || (uint64_t)weighted.len < 8u * alphabet ||
        (uint64_t)hist.len < 8u * alphabet) {
        PyErr_SetString(PyExc_ValueError, "bad level range or buffer sizes");
        status = -1;
    }
    if (!status) {
        Py_BEGIN_ALLOW_THREADS
        rdo_pick(x.buf, (uint64_t)x.len / 8u, weighted.buf, qmin, qmax, levels.buf, hist.buf);
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&x);
    PyBuffer_Release(&weighted);
    PyBuffer_Release(&levels);
    PyBuffer_Release(&hist);
    if (status) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"value_counts", py_value_counts, METH_VARARGS,
     "value_counts(lanes, numel, cols, width, mask, symbols, pairs0, pairs1, pairs2, pairs3): the value "
     "phase's final counts in each value mode whose table is given (None: skipped)."},
    {"mask_decode", py_mask_decode, METH_VARARGS,
     "mask_decode(data, lanes, numel, cols, model, x, mask) -> words read: the mask phase (model 0 or 1)."},
    {"scatter_table", py_scatter_table, METH_VARARGS,
     "scatter_table(mask, symbols, table, out): out[i] = table[symbols[k]] at the k-th set position i of mask."},
    {"values_decode", py_values_decode, METH_VARARGS,
     "values_decode(data, lanes, numel, cols, width, alphabet, mode, x, next_word, mask, out) -> words read."},
    {"rdo_pick", py_rdo_pick, METH_VARARGS,
     "rdo_pick(x, weighted, qmin, qmax, levels, hist): rate-distortion levels of float64 x; hist += counts."},
    {"encode", py_encode, METH_VARARGS,
     "encode(lanes, numel, cols, width, mode, mask, symbols) -> (stream, words read by the mask phase); "
     "mode = value mode | mask model << 2."},
    {"encode_masked", py_encode_masked, METH_VARARGS,
     "encode_masked(lanes, numel, cols, width, value_mode, mask, symbols) -> (stream, words read by the mask "
     "phase, mask model): both mask models, the shorter stream (ties: model 0)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_rans_native",
    .m_doc = "Native core of sqc's context-adaptive binary rANS coder (formats/rans.py).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__rans_native(void)
{
    PyObject *m = PyModule_Create(&module);
    if (!m) {
        return NULL;
    }
    init_tables();
    StreamError = PyErr_NewException("sqc.formats._rans_native.StreamError", PyExc_ValueError, NULL);
    if (!StreamError || PyModule_AddObjectRef(m, "StreamError", StreamError) < 0) {
        Py_XDECREF(StreamError);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
