/* sqc C reference kernels: the integer semantics of targets/INTEGER.md, in portable C99.
 *
 * Only well-defined C: no right shift of a negative value (floor shifts go through ~), no left shift
 * of a signed value (exact multiplication by a power of two instead), products widened before they
 * can overflow. Accumulators are int32: legalization proves they cannot overflow. */
#include <string.h>

#include "sqc_kernels.h"

/* floor(t / 2^s) for s in 0..62 */
static int64_t sqc_floor_shift(int64_t t, int32_t s)
{
    return t >= 0 ? (t >> s) : ~((~t) >> s);
}

/* floor(a / b) for b > 0 (C99 division truncates toward zero) */
static int64_t sqc_floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    if ((a % b) != 0 && a < 0) {
        q -= 1;
    }
    return q;
}

int32_t sqc_requant(int64_t t, int32_t shift, int32_t lo, int32_t hi)
{
    if (shift > 0) {
        t = sqc_floor_shift(t + ((int64_t)1 << (shift - 1)), shift); /* round half up */
    } else if (shift < 0) {
        /* saturating first is exact: a value beyond the range stays beyond it when scaled up */
        if (t > SQC_ACT_MAX) {
            t = SQC_ACT_MAX;
        } else if (t < SQC_ACT_MIN) {
            t = SQC_ACT_MIN;
        }
        t *= (int64_t)1 << (-shift);
    }
    if (t < lo) {
        return lo;
    }
    if (t > hi) {
        return hi;
    }
    return (int32_t)t;
}

/* ---------------------------------------------------------------------------------------------- */
/* stream decoding (start-up only) */

static int sqc_entry(sqc_sink_t *k, uint32_t gap, int real)
{
    if (k->written >= k->cap || (real && k->src >= k->cap)) {
        return -1;
    }
    k->u8[k->written] = (uint8_t)gap;
    if (k->mw8) {
        k->mw8[k->written] = real ? k->mw8[k->src++] : 0;
    } else if (k->mw16) {
        k->mw16[k->written] = real ? k->mw16[k->src++] : 0;
    }
    k->written++;
    return 0;
}

static int sqc_put(sqc_sink_t *k, uint32_t i, uint32_t sym)
{
    int32_t v;
    if (k->u8) {
        uint32_t gap;
        if (sym > k->filler_in) {
            return -1;
        }
        if (sym == k->filler_in) {
            k->pending += sym;
            return 0;
        }
        gap = k->pending + sym;
        k->pending = 0;
        while (gap >= 255u) {
            if (sqc_entry(k, 254u, 0)) {
                return -1;
            }
            gap -= 255u;
        }
        return sqc_entry(k, gap, 1);
    }
    if (i >= k->cap) {
        return -1;
    }
    if (k->book8 || k->book16) {
        if (sym >= k->book_size) {
            return -1;
        }
        v = k->book8 ? (int32_t)k->book8[sym] : (int32_t)k->book16[sym];
    } else {
        v = (int32_t)sym + k->offset;
    }
    if (k->w8) {
        k->w8[i] = (int8_t)v;
    } else {
        k->w16[i] = (int16_t)v;
    }
    return 0;
}

/* width-bit field starting at stream bit `bit`, LSB first (formats/bitpack.py) */
static uint32_t sqc_field(const uint8_t *d, uint64_t bit, uint32_t width)
{
    uint32_t v = 0, got = 0;
    while (got < width) {
        uint32_t byte = (uint32_t)(bit >> 3), sh = (uint32_t)(bit & 7u), take = 8u - sh;
        if (take > width - got) {
            take = width - got;
        }
        v |= (((uint32_t)d[byte] >> sh) & ((1u << take) - 1u)) << got;
        got += take;
        bit += take;
    }
    return v;
}

static int sqc_varint(const uint8_t *d, uint32_t size, uint32_t *pos, uint32_t *out)
{
    uint32_t v = 0, shift = 0;
    while (*pos < size && shift < 32u) {
        uint8_t b = d[(*pos)++];
        v |= (uint32_t)(b & 0x7Fu) << shift;
        if (!(b & 0x80u)) {
            *out = v;
            return 0;
        }
        shift += 7u;
    }
    return -1;
}

/* Canonical Huffman in sqc's layout: varint H, header byte, H length fields, varint nbits, payload
 * (codewords MSB first). Codes are assigned DEFLATE-style: by (length, symbol). */
static int sqc_huffman(const sqc_stream_t *s, sqc_sink_t *sink, uint16_t *sorted, uint32_t scratch_size)
{
    uint32_t count_by_len[25];
    uint32_t next[25];
    uint32_t pos = 0, high = 0, nbits = 0, lmin, width, used = 0, sym, i, l;
    uint64_t bit;
    const uint8_t *d = s->data;
    if (sqc_varint(d, s->size, &pos, &high) || high == 0 || pos >= s->size) {
        return s->count == 0 && high == 0 ? 0 : -1;
    }
    lmin = (d[pos] & 31u) + 1u;
    width = (uint32_t)(d[pos] >> 5) + 1u;
    pos++;
    if ((uint64_t)pos + ((uint64_t)high * width + 7u) / 8u > s->size) {
        return -1;
    }
    for (l = 0; l < 25u; l++) {
        count_by_len[l] = 0;
    }
    for (sym = 0; sym < high; sym++) {
        uint32_t f = sqc_field(d + pos, (uint64_t)sym * width, width);
        if (f) {
            uint32_t len = f + lmin - 1u;
            if (len > 24u) {
                return -1;
            }
            count_by_len[len]++;
            used++;
        }
    }
    if (used > scratch_size) {
        return -1;
    }
    next[0] = 0;
    for (l = 1; l < 25u; l++) {
        next[l] = next[l - 1] + count_by_len[l - 1];
    }
    for (sym = 0; sym < high; sym++) {
        uint32_t f = sqc_field(d + pos, (uint64_t)sym * width, width);
        if (f) {
            sorted[next[f + lmin - 1u]++] = (uint16_t)sym;
        }
    }
    pos += (uint32_t)(((uint64_t)high * width + 7u) / 8u);
    if (used == 1) { /* a single symbol: no payload, every value is that symbol */
        for (i = 0; i < s->count; i++) {
            if (sqc_put(sink, i, sorted[0])) {
                return -1;
            }
        }
        return 0;
    }
    if (sqc_varint(d, s->size, &pos, &nbits) || (uint64_t)pos + (nbits + 7u) / 8u > s->size) {
        return -1;
    }
    d += pos;
    bit = 0;
    for (i = 0; i < s->count; i++) {
        uint32_t code = 0, first = 0, index = 0, len;
        int found = 0;
        for (len = 1; len <= 24u; len++) {
            if (bit >= nbits) {
                return -1;
            }
            code |= (uint32_t)(d[bit >> 3] >> (7u - (uint32_t)(bit & 7u))) & 1u;
            bit++;
            if (code - first < count_by_len[len]) {
                if (sqc_put(sink, i, sorted[index + code - first])) {
                    return -1;
                }
                found = 1;
                break;
            }
            index += count_by_len[len];
            first = (first + count_by_len[len]) << 1;
            code <<= 1;
        }
        if (!found) {
            return -1;
        }
    }
    return 0;
}

int sqc_decode(const sqc_stream_t *s, sqc_sink_t *sink, uint16_t *scratch, uint32_t scratch_size)
{
    uint32_t i;
    if (s->kind == 1) {
        return sqc_huffman(s, sink, scratch, scratch_size);
    }
    if (s->width == 0 || s->width > 16u || ((uint64_t)s->count * s->width + 7u) / 8u > s->size) {
        return -1;
    }
    for (i = 0; i < s->count; i++) {
        if (sqc_put(sink, i, sqc_field(s->data, (uint64_t)i * s->width, s->width))) {
            return -1;
        }
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------------- */
/* context-adaptive binary rANS (formats/FORMAT.md, "Context-coded layout"; formats/rans.py) */

static uint32_t sqc_rans_p1(const uint32_t *n) /* n[0] = n0, n[1] = n1 */
{
    uint64_t p = ((2u * (uint64_t)n[1] + 1u) << 16) / (2u * ((uint64_t)n[0] + n[1]) + 2u);
    return p < 1u ? 1u : (p > 65535u ? 65535u : (uint32_t)p);
}

typedef struct {
    uint32_t *x;         /* one state per lane */
    const uint8_t *word; /* u16 words, little-endian */
    uint32_t words, next;
} sqc_rans_io_t;

/* One decision of probability p (of a 1) in lane j: 0 or 1, or -1 when the words run out. */
static int sqc_rans_bit(sqc_rans_io_t *io, uint32_t j, uint32_t p)
{
    uint32_t x = io->x[j], f0 = 65536u - p, s = x & 0xFFFFu;
    int bit = s >= f0;
    uint32_t nx = (bit ? p : f0) * (x >> 16) + s - (bit ? f0 : 0u); /* < 2^32: f < 2^16, x >> 16 < 2^16 */
    if (nx < 65536u) {
        if (io->next >= io->words) {
            return -1;
        }
        nx = (nx << 16) | (uint32_t)io->word[2u * io->next] | ((uint32_t)io->word[2u * io->next + 1u] << 8);
        io->next++;
    }
    io->x[j] = nx;
    return bit;
}

static void sqc_rans_start(const sqc_rans_t *r, uint32_t lanes, sqc_rans_io_t *io)
{
    uint32_t j;
    for (j = 0; j < lanes; j++) {
        const uint8_t *b = r->data + 4u * j;
        io->x[j] = (uint32_t)b[0] | ((uint32_t)b[1] << 8) | ((uint32_t)b[2] << 16) | ((uint32_t)b[3] << 24);
    }
    io->word = r->data + 4u * lanes;
    io->words = (r->size - 4u * lanes) / 2u;
    io->next = 0;
}

static uint32_t sqc_lane_start(const sqc_rans_t *r, uint32_t lanes, uint32_t j)
{
    return (uint32_t)((uint64_t)j * r->numel / lanes);
}

/* The mask phase: every position's kept/pruned decision, lanes in lockstep. With `entries` NULL it
 * counts, per lane, the kept positions (kept), the first and last (first, last) and the runtime entries
 * after the first (inner); otherwise it writes each lane's entries from cur[j] (fillers as 255 for now),
 * never past end[j], continuing from the kept position lpos[j] (all-ones: none). */
static int sqc_rans_mask(const sqc_rans_t *r, uint32_t lanes, sqc_rans_io_t *io, uint32_t *w, uint8_t *entries,
                         uint32_t *kept, uint32_t *first, uint32_t *last, uint32_t *inner, uint32_t *cur,
                         const uint32_t *end, uint32_t *lpos)
{
    uint32_t *run = w, *col = w + lanes, *bctx = w + 2u * lanes, *bbit = w + 3u * lanes;
    uint32_t *rkept = w + 4u * lanes, *rseen = w + 5u * lanes;
    uint32_t *counts = w + 6u * lanes, *seen = counts + 140u, *kcol = seen + r->cols;
    uint32_t j, t, rounds = r->numel / lanes + 1u, model = r->mode >> 2, akept = 0, aseen = 0;
    static const uint32_t runs[6] = {1u, 3u, 7u, 15u, 31u, 63u};
    for (j = 0; j < 140u + 2u * r->cols; j++) {
        counts[j] = 0;
    }
    for (j = 0; j < lanes; j++) {
        run[j] = rkept[j] = rseen[j] = 0;
        col[j] = sqc_lane_start(r, lanes, j) % r->cols;
        if (!entries) {
            kept[j] = inner[j] = 0;
        }
    }
    for (t = 0; t < rounds; t++) {
        uint32_t active = 0;
        /* mask model 1: the tensor's density before this round, 16-bit fixed point, at least 1 */
        uint64_t g = (((uint64_t)akept + 1u) << 16) / ((uint64_t)aseen + 2u);
        g = g ? g : 1u;
        for (j = 0; j < lanes; j++) {
            uint32_t pos = sqc_lane_start(r, lanes, j) + t, rb = 0, cb, k, ctx;
            int bit;
            if (pos >= sqc_lane_start(r, lanes, j + 1u)) {
                bctx[j] = 0xFFFFFFFFu;
                continue;
            }
            active++;
            if (col[j] == 0) {
                run[j] = rkept[j] = rseen[j] = 0;
            }
            if (model) {
                /* row (in the lane) and column densities shrunk toward g by 16 positions: row * col / g,
                 * bucketed by half octaves of -log2 (FORMAT.md, mask model 1) */
                uint64_t rp = (((uint64_t)rkept[j] << 16) + 16u * g) / ((uint64_t)rseen[j] + 16u);
                uint64_t cp = (((uint64_t)kcol[col[j]] << 16) + 16u * g) / ((uint64_t)seen[col[j]] + 16u);
                uint64_t p = rp * cp / g;
                uint32_t len = 0, b = 24u;
                if (p >= 65536u) {
                    b = 0;
                } else if (p) {
                    while ((p >> len) != 0) {
                        len++;
                    }
                    b = 2u * (16u - len) + 1u + (p * p < (1ull << (2u * len - 1u)));
                    b = b < 24u ? b : 24u;
                }
                ctx = 2u * b + (run[j] != 0);
            } else {
                for (k = 0; k < 6u; k++) {
                    rb += run[j] >= runs[k];
                }
                if (seen[col[j]] == 0) {
                    cb = 0;
                } else if (kcol[col[j]] == 0) {
                    cb = seen[col[j]] < 4u ? 1u : 2u;
                } else {
                    uint32_t ratio = (uint32_t)(((uint64_t)kcol[col[j]] * 64u) / seen[col[j]]), len = 0;
                    while (len < 7u && ratio >= (1u << len)) {
                        len++;
                    }
                    cb = 3u + (len < 6u ? len : 6u);
                }
                ctx = rb * 10u + cb;
            }
            bit = sqc_rans_bit(io, j, sqc_rans_p1(counts + 2u * ctx));
            if (bit < 0) {
                return -1;
            }
            bctx[j] = ctx;
            bbit[j] = (uint32_t)bit;
            run[j] = bit ? 0u : run[j] + 1u;
            rkept[j] += (uint32_t)bit;
            rseen[j]++;
            if (bit && !entries) {
                if (kept[j] == 0) {
                    first[j] = pos;
                } else {
                    inner[j] += 1u + (pos - last[j] - 1u) / 255u;
                }
                last[j] = pos;
                kept[j]++;
            } else if (bit) {
                uint32_t gap = pos - lpos[j] - 1u; /* lpos all-ones: gap = pos */
                for (; gap >= 255u; gap -= 255u) {
                    if (cur[j] >= end[j]) {
                        return -1;
                    }
                    entries[cur[j]++] = 255u;
                }
                if (cur[j] >= end[j]) {
                    return -1;
                }
                entries[cur[j]++] = (uint8_t)gap;
                lpos[j] = pos;
            }
        }
        if (active == 0) {
            break;
        }
        for (j = 0; j < lanes; j++) { /* the round's updates, after all its decisions */
            if (bctx[j] != 0xFFFFFFFFu) {
                akept += bbit[j];
                aseen++;
                counts[2u * bctx[j] + bbit[j]]++;
                seen[col[j]]++;
                kcol[col[j]] += bbit[j];
                col[j] = col[j] + 1u == r->cols ? 0u : col[j] + 1u;
            }
        }
    }
    return 0;
}

uint32_t sqc_rans_scratch(const sqc_rans_t *r)
{
    uint32_t lanes = r->numel / 16384u + (r->numel % 16384u != 0);
    uint32_t vmode = r->mode & 3u, m = vmode < r->width ? vmode : r->width, none = vmode ? (1u << m) : 0u, mask;
    uint32_t values;
    lanes = lanes < 1u ? 1u : (lanes > 4096u ? 4096u : lanes);
    mask = r->sparse ? 6u * lanes + 140u + 2u * r->cols : 0u;
    values = 4u * lanes + 2u * lanes * r->width + ((none + 1u) << r->width) * 2u;
    return 10u * lanes + (mask > values ? mask : values);
}

int sqc_rans_decode(const sqc_rans_t *r, sqc_sink_t *values, uint8_t *entries, uint32_t count, uint32_t *scratch,
                    uint32_t scratch_words)
{
    uint32_t lanes = r->numel / 16384u + (r->numel % 16384u != 0);
    uint32_t *x, *kept, *first, *last, *inner, *cur, *end, *lpos, *vcur, *vpos, *w;
    uint32_t vmode = r->mode & 3u, m = vmode < r->width ? vmode : r->width, none = vmode ? (1u << m) : 0u;
    uint32_t *counts, *prev_sym, *prev_row, *node, *ctx, *bslot, *bbit;
    uint32_t j, t, level, total = 0, most = 0;
    uint32_t prev = 0xFFFFFFFFu; /* the last kept position before a lane: all-ones = none */
    sqc_rans_io_t io;
    lanes = lanes < 1u ? 1u : (lanes > 4096u ? 4096u : lanes);
    if (r->width < 1u || r->width > 16u || r->mode > 7u || (r->mode > 3u && !r->sparse) || r->cols == 0 ||
        r->numel % r->cols != 0 ||
        r->size < 4u * lanes || (r->size - 4u * lanes) % 2u != 0 ||
        (uint64_t)r->numel > 16384u + 512u * (uint64_t)r->size || sqc_rans_scratch(r) > scratch_words) {
        return -1;
    }
    x = scratch;
    kept = x + lanes;
    first = kept + lanes;
    last = first + lanes;
    inner = last + lanes;
    cur = inner + lanes;
    end = cur + lanes;
    lpos = end + lanes;
    vcur = lpos + lanes;
    vpos = vcur + lanes;
    w = vpos + lanes;
    io.x = x;
    sqc_rans_start(r, lanes, &io);
    for (j = 0; j < lanes; j++) {
        if (io.x[j] < 65536u) {
            return -1;
        }
    }
    if (r->sparse) {
        /* twice through the mask phase: count each lane's runtime entries, then write them in place */
        if (sqc_rans_mask(r, lanes, &io, w, 0, kept, first, last, inner, 0, 0, 0)) {
            return -1;
        }
        for (j = 0; j < lanes; j++) {
            uint32_t n = kept[j] ? 1u + (first[j] - (prev + 1u)) / 255u + inner[j] : 0u;
            if (n > count - total) {
                return -1;
            }
            cur[j] = vcur[j] = total;
            lpos[j] = vpos[j] = prev;
            total += n;
            end[j] = total;
            prev = kept[j] ? last[j] : prev;
        }
        if (total != count) {
            return -1;
        }
        sqc_rans_start(r, lanes, &io);
        if (sqc_rans_mask(r, lanes, &io, w, entries, 0, 0, 0, 0, cur, end, lpos)) {
            return -1;
        }
    } else {
        for (j = 0; j < lanes; j++) {
            kept[j] = sqc_lane_start(r, lanes, j + 1u) - sqc_lane_start(r, lanes, j);
            vpos[j] = sqc_lane_start(r, lanes, j) - 1u; /* wraps to all-ones for lane 0: +1 below */
        }
        if (r->numel != count) {
            return -1;
        }
    }
    /* the value phase: each lane's t-th kept symbol, bits MSB first down a tree, in lockstep */
    counts = w;
    prev_sym = counts + ((none + 1u) << r->width) * 2u;
    prev_row = prev_sym + lanes;
    node = prev_row + lanes;
    ctx = node + lanes;
    bslot = ctx + lanes;
    bbit = bslot + lanes * r->width;
    for (j = 0; j < ((none + 1u) << r->width) * 2u; j++) {
        counts[j] = 0;
    }
    for (j = 0; j < lanes; j++) {
        prev_row[j] = 0xFFFFFFFFu;
        most = kept[j] > most ? kept[j] : most;
    }
    for (t = 0; t < most; t++) {
        for (j = 0; j < lanes; j++) {
            uint32_t row;
            if (t >= kept[j]) {
                continue;
            }
            if (r->sparse) { /* the lane's next real entry; fillers cover 255 positions */
                while (vcur[j] < count && entries[vcur[j]] == 255u) {
                    vpos[j] += 255u;
                    vcur[j]++;
                }
                if (vcur[j] >= count) {
                    return -1;
                }
                vpos[j] += (uint32_t)entries[vcur[j]] + 1u;
            } else {
                vpos[j] += 1u;
            }
            row = vpos[j] / r->cols;
            ctx[j] = vmode == 0 ? 0u : (prev_row[j] == row ? prev_sym[j] >> (r->width - m) : none);
            prev_row[j] = row;
            node[j] = 1u;
        }
        for (level = 0; level < r->width; level++) {
            for (j = 0; j < lanes; j++) {
                uint32_t slot;
                int bit;
                if (t >= kept[j]) {
                    continue;
                }
                slot = (ctx[j] << r->width) + node[j];
                bit = sqc_rans_bit(&io, j, sqc_rans_p1(counts + 2u * slot));
                if (bit < 0) {
                    return -1;
                }
                bslot[level * lanes + j] = slot;
                bbit[level * lanes + j] = (uint32_t)bit;
                node[j] = 2u * node[j] + (uint32_t)bit;
            }
        }
        for (j = 0; j < lanes; j++) {
            uint32_t sym;
            if (t >= kept[j]) {
                continue;
            }
            for (level = 0; level < r->width; level++) {
                counts[2u * bslot[level * lanes + j] + bbit[level * lanes + j]]++;
            }
            sym = node[j] - (1u << r->width);
            if (sym >= r->alphabet || sqc_put(values, r->sparse ? vcur[j] : vpos[j], sym)) {
                return -1;
            }
            prev_sym[j] = sym;
            if (r->sparse) {
                vcur[j]++;
            }
        }
    }
    if (io.next != io.words) {
        return -1;
    }
    for (j = 0; j < lanes; j++) {
        if (io.x[j] != 65536u) {
            return -1;
        }
    }
    if (r->sparse) { /* fillers become entries of 254 carrying a zero weight (see sqc_sink_t) */
        for (j = 0; j < count; j++) {
            if (entries[j] == 255u) {
                entries[j] = 254u;
                if (values->w8) {
                    values->w8[j] = 0;
                } else {
                    values->w16[j] = 0;
                }
            }
        }
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------------- */
/* layers with weights */

#if SQC_ACT_BITS == 8 && defined(__SSE2__)
#include <emmintrin.h>

/* Requantization for a multiplier of 1 and a shift s >= 2, four values at a time in int32: t = acc +
 * bias fits int32 (legalization's accumulator bound covers the bias), and floor((t + 2^(s-1)) / 2^s) =
 * floor((floor(t / 2^(s-1)) + 1) / 2), where no step can overflow; the arithmetic shifts are SSE2's.
 * Returns the four clamped codes as bytes. */
static int32_t sqc_requant_x4(__m128i t, __m128i count, __m128i lo, __m128i hi)
{
    __m128i q = _mm_sra_epi32(_mm_add_epi32(_mm_sra_epi32(t, count), _mm_set1_epi32(1)), _mm_cvtsi32_si128(1));
    __m128i below = _mm_cmplt_epi32(q, lo), above = _mm_cmpgt_epi32(q, hi);
    q = _mm_or_si128(_mm_and_si128(below, lo), _mm_andnot_si128(below, q));
    q = _mm_or_si128(_mm_and_si128(above, hi), _mm_andnot_si128(above, q));
    q = _mm_packs_epi32(q, q);
    return _mm_cvtsi128_si32(_mm_packs_epi16(q, q));
}

/* floor((t + 2^(s-1)) / 2^s) of four int32 lanes t = acc + bias (sqc_requant_x4, unclamped) */
static __m128i sqc_round_x4(const int32_t *a, __m128i b, __m128i count)
{
    __m128i t = _mm_add_epi32(_mm_loadu_si128((const __m128i *)(const void *)a), b);
    return _mm_sra_epi32(_mm_add_epi32(_mm_sra_epi32(t, count), _mm_set1_epi32(1)), _mm_cvtsi32_si128(1));
}

/* eight rounded lanes to int16 (saturating, which cannot change the result: lo and hi are 8-bit codes),
 * then clamped to [lo, hi] */
static __m128i sqc_clamp_x8(__m128i q0, __m128i q1, __m128i lo, __m128i hi)
{
    return _mm_min_epi16(_mm_max_epi16(_mm_packs_epi32(q0, q1), lo), hi);
}

/* sqc_conv_flush with a multiplier of 1 and a shift >= 2 (sqc_requant_x4): 16, 8 or 4 outputs a step */
static void sqc_flush_x4(const int32_t *acc, sqc_act_t *out, int32_t oh, int32_t ow, int32_t as, int32_t bias,
                         int32_t shift, int32_t lo, int32_t hi)
{
    const __m128i b = _mm_set1_epi32(bias), vlo = _mm_set1_epi32(lo), vhi = _mm_set1_epi32(hi);
    const __m128i lo16 = _mm_set1_epi16((short)lo), hi16 = _mm_set1_epi16((short)hi);
    const __m128i count = _mm_cvtsi32_si128(shift - 1);
    int32_t oy, ox;
    for (oy = 0; oy < oh; oy++) {
        const int32_t *a = acc + (int64_t)oy * as;
        for (ox = 0; ox + 16 <= ow; ox += 16) {
            __m128i l = sqc_clamp_x8(sqc_round_x4(a + ox, b, count), sqc_round_x4(a + ox + 4, b, count), lo16, hi16);
            __m128i h = sqc_clamp_x8(sqc_round_x4(a + ox + 8, b, count), sqc_round_x4(a + ox + 12, b, count), lo16,
                                     hi16);
            _mm_storeu_si128((__m128i *)(void *)(out + ox), _mm_packs_epi16(l, h));
        }
        if (ox + 8 <= ow) {
            __m128i l = sqc_clamp_x8(sqc_round_x4(a + ox, b, count), sqc_round_x4(a + ox + 4, b, count), lo16, hi16);
            _mm_storel_epi64((__m128i *)(void *)(out + ox), _mm_packs_epi16(l, l));
            ox += 8;
        }
        for (; ox + 4 <= ow; ox += 4) {
            __m128i t = _mm_add_epi32(_mm_loadu_si128((const __m128i *)(const void *)(a + ox)), b);
            int32_t packed = sqc_requant_x4(t, count, vlo, vhi);
            memcpy(out + ox, &packed, 4);
        }
        for (; ox < ow; ox++) {
            out[ox] = (sqc_act_t)sqc_requant((int64_t)a[ox] + bias, shift, lo, hi);
        }
        out += ow;
    }
}
#endif

/* The epilogue of a linear layer: y[o] = requant((acc[o] + bias[o]) * mult[o]), four at a time where
 * four neighbours share a multiplier of 1 and a shift >= 2 (SSE2). */
static void sqc_linear_out(const int32_t *acc, sqc_act_t *y, int32_t n, const sqc_requant_t *rq)
{
    int32_t o = 0;
#if SQC_ACT_BITS == 8 && defined(__SSE2__)
    const __m128i vlo = _mm_set1_epi32(rq->lo), vhi = _mm_set1_epi32(rq->hi);
    for (; o + 4 <= n; o += 4) {
        const int16_t *m = rq->mult + o;
        const int8_t *s = rq->shift + o;
        if (m[0] == 1 && m[1] == 1 && m[2] == 1 && m[3] == 1 && s[0] >= 2 && s[1] == s[0] && s[2] == s[0] &&
            s[3] == s[0]) {
            __m128i t = _mm_add_epi32(_mm_loadu_si128((const __m128i *)(const void *)(acc + o)),
                                      _mm_loadu_si128((const __m128i *)(const void *)(rq->bias + o)));
            int32_t packed = sqc_requant_x4(t, _mm_cvtsi32_si128(s[0] - 1), vlo, vhi);
            memcpy(y + o, &packed, 4);
        } else {
            int32_t k;
            for (k = o; k < o + 4; k++) {
                y[k] = (sqc_act_t)sqc_requant(((int64_t)acc[k] + rq->bias[k]) * rq->mult[k], rq->shift[k], rq->lo,
                                              rq->hi);
            }
        }
    }
#endif
    for (; o < n; o++) {
        y[o] = (sqc_act_t)sqc_requant(((int64_t)acc[o] + rq->bias[o]) * rq->mult[o], rq->shift[o], rq->lo, rq->hi);
    }
}

/* Requantize one output channel's accumulator plane (row stride as) and clear its span for the next. The
 * usual case (a right shift) folds the bias and the rounding half into one constant and floors by
 * shifting t + 2^62 as unsigned: |t| < 2^47 + 2^61 (int32 accumulator and bias, 15-bit multiplier,
 * half <= 2^61), so the sum stays in [0, 2^63) and 2^62 is a multiple of 2^shift (shift <= 62). */
static void sqc_conv_flush(sqc_act_t *y, int32_t oc, const sqc_conv_t *c, const sqc_requant_t *rq, int32_t *acc,
                           int32_t as, int32_t span)
{
    const int32_t oh = c->oh, ow = c->ow; /* locals: stores may alias */
    sqc_act_t *out = y + (int64_t)oc * oh * ow;
    int64_t bias = rq->bias[oc];
    int32_t mult = rq->mult[oc], shift = rq->shift[oc], lo = rq->lo, hi = rq->hi;
    int32_t oy, ox;
#if SQC_ACT_BITS == 8 && defined(__SSE2__)
    if (mult == 1 && shift >= 2) {
        sqc_flush_x4(acc, out, oh, ow, as, (int32_t)bias, shift, lo, hi);
        memset(acc, 0, (size_t)span * sizeof(int32_t));
        return;
    }
#endif
    if (shift > 0) {
        const uint64_t k = (uint64_t)1 << 62;
        int64_t add = bias * mult + ((int64_t)1 << (shift - 1));
        int64_t base = (int64_t)(k >> shift);
        for (oy = 0; oy < oh; oy++) {
            const int32_t *a = acc + (int64_t)oy * as;
            for (ox = 0; ox < ow; ox++) {
                int64_t t = (int64_t)a[ox] * mult + add;
                int64_t q = (int64_t)(((uint64_t)t + k) >> shift) - base;
                out[ox] = (sqc_act_t)(q < lo ? lo : (q > hi ? hi : q));
            }
            out += ow;
        }
    } else {
        for (oy = 0; oy < oh; oy++) {
            const int32_t *a = acc + (int64_t)oy * as;
            for (ox = 0; ox < ow; ox++) {
                out[ox] = (sqc_act_t)sqc_requant(((int64_t)a[ox] + bias) * mult, shift, lo, hi);
            }
            out += ow;
        }
    }
    memset(acc, 0, (size_t)span * sizeof(int32_t));
}

/* The by-column sparse linear layout (sqc_csc_*) keeps per input column the 32-bit offset of its first
 * entry, in the arena's 16-bit region (two halves each; the arena only guarantees 2-byte alignment, so
 * they go through memcpy, one unaligned load on x86). */
static uint32_t sqc_start_at(const uint16_t *start, size_t j)
{
    uint32_t v;
    memcpy(&v, start + 2 * j, sizeof v);
    return v;
}

static void sqc_start_put(uint16_t *start, size_t j, uint32_t v)
{
    memcpy(start + 2 * j, &v, sizeof v);
}

/* Bit i set when x[i] != 0, for the first min(n, 16) inputs (n > 0): sixteen at a time with SSE2, so
 * that the by-column kernel visits only the columns of nonzero inputs instead of testing each. */
#if defined(__SSE2__)
#include <emmintrin.h>
#endif
static uint32_t sqc_nonzero16(const sqc_act_t *x, int32_t n)
{
    uint32_t z = 0;
    int32_t i;
#if defined(__SSE2__)
    if (n >= 16) {
        const __m128i zero = _mm_setzero_si128();
#if SQC_ACT_BITS == 8
        __m128i e = _mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)(const void *)x), zero);
#else
        __m128i e = _mm_packs_epi16(_mm_cmpeq_epi16(_mm_loadu_si128((const __m128i *)(const void *)x), zero),
                                    _mm_cmpeq_epi16(_mm_loadu_si128((const __m128i *)(const void *)(x + 8)), zero));
#endif
        return 0xffffu ^ (uint32_t)_mm_movemask_epi8(e);
    }
#endif
    for (i = 0; i < n && i < 16; i++) {
        z |= (uint32_t)(x[i] != 0) << i;
    }
    return z;
}

/* the index of the lowest set bit of z != 0 */
static uint32_t sqc_lowest_bit(uint32_t z)
{
#if defined(__GNUC__)
    return (uint32_t)__builtin_ctz(z);
#else
    uint32_t i = 0;
    while ((z & 1u) == 0) {
        z >>= 1;
        i++;
    }
    return i;
#endif
}

/* SQC_P: the type a single product w * x fits in. 8-bit weights times 8-bit activations fit int16
 * (|w * x| <= 2^14), which lets the vectorizer multiply eight at a time; the sum is still int32. */
#if SQC_ACT_BITS == 8
#define SQC_P int16_t
#else
#define SQC_P int32_t
#endif
#if SQC_ACT_BITS == 8 && defined(__SSE2__) && defined(SQC_CONV_X16)
/* SSE2 (every x86-64): a wide convolution with 8-bit weights reads an int16 copy of its input, made once
 * per call, so that _mm_madd_epi16 takes two weights per multiply (each product fits int16, a pair's sum
 * int32: exact, the same integers as the portable loop). */
#include <emmintrin.h>

static int16_t sqc_x16[SQC_CONV_X16];

static void sqc_widen(const sqc_act_t *x, int16_t *d, int64_t n)
{
    int64_t i, m = n & ~(int64_t)15;
    const __m128i zero = _mm_setzero_si128();
    for (i = 0; i < m; i += 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(x + i));
        __m128i sign = _mm_cmpgt_epi8(zero, v);
        _mm_storeu_si128((__m128i *)(void *)(d + i), _mm_unpacklo_epi8(v, sign));
        _mm_storeu_si128((__m128i *)(void *)(d + i + 8), _mm_unpackhi_epi8(v, sign));
    }
    for (; i < n; i++) {
        d[i] = x[i];
    }
}

/* The int16 copy of a convolution's input (sqc_conv_t: padded, split by stride phase): phase (py, px)
 * of channel ch holds, at (i, j), the input at (i sh + py - ph, j sw + px - pw), 0 outside it. Stride 1
 * copies whole rows (whole planes without column padding); other strides gather. */
static void sqc_widen_conv(const sqc_act_t *x, const sqc_conv_t *c)
{
    const int32_t sh = c->sh, sw = c->sw, qh = c->qh, qw = c->qw, h = c->h, w = c->w;
    int32_t ch, py, px, i, j;
    int16_t *d = sqc_x16;
    for (ch = 0; ch < c->cin; ch++) {
        const sqc_act_t *plane = x + (int64_t)ch * h * w;
        for (py = 0; py < sh; py++) {
            for (px = 0; px < sw; px++) {
                for (i = 0; i < qh; i++) {
                    const int32_t iy = i * sh + py - c->ph;
                    const sqc_act_t *src = plane + (int64_t)iy * w;
                    if (iy < 0 || iy >= h) {
                        memset(d, 0, (size_t)qw * sizeof(int16_t));
                    } else if (sw == 1 && c->pw == 0 && qw == w) {
                        /* unpadded rows: the remaining rows of the input in one run */
                        int32_t last = (h - 1 + c->ph - py) / sh; /* the last phase row inside the input */
                        int32_t rows = (last < qh - 1 ? last : qh - 1) - i + 1;
                        if (sh == 1) {
                            sqc_widen(src, d, (int64_t)rows * w);
                            d += (int64_t)(rows - 1) * qw;
                            i += rows - 1;
                        } else {
                            sqc_widen(src, d, w);
                        }
                    } else if (sw == 1) {
                        memset(d, 0, (size_t)qw * sizeof(int16_t));
                        sqc_widen(src, d + c->pw, w);
                    } else {
                        for (j = 0; j < qw; j++) {
                            const int32_t ix = j * sw + px - c->pw;
                            d[j] = (int16_t)(ix >= 0 && ix < w ? src[ix] : 0);
                        }
                    }
                    d += qw;
                }
            }
        }
    }
}

#if defined(__GNUC__) && defined(__x86_64__) && !defined(SQC_NO_AVX2)
/* The same eight-weight pass with AVX2, chosen at run time on processors that have it (as ONNX Runtime
 * and BLAS libraries do), whatever flags the project is built with: 16 accumulators per step. The
 * in-lane unpacks give outputs {0-3, 8-11} and {4-7, 12-15}; permutes put them back in order. */
#include <immintrin.h>

__attribute__((target("avx2"))) static void sqc_conv_axpy8_avx2(int32_t *a, const int16_t *const *xs,
                                                                 const int32_t *v, int32_t n)
{
    __m256i w[4];
    int32_t i, k;
    for (k = 0; k < 4; k++) {
        w[k] = _mm256_set1_epi32(v[2 * k + 1] * 65536 + (v[2 * k] & 0xFFFF)); /* (v0, v1) as int16 lanes */
    }
    for (i = 0; i < n; i += 16) {
        __m256i lo = _mm256_setzero_si256(), hi = _mm256_setzero_si256();
        __m256i *out = (__m256i *)(void *)(a + i);
        for (k = 0; k < 4; k++) {
            __m256i l0 = _mm256_loadu_si256((const __m256i *)(const void *)(xs[2 * k] + i));
            __m256i l1 = _mm256_loadu_si256((const __m256i *)(const void *)(xs[2 * k + 1] + i));
            lo = _mm256_add_epi32(lo, _mm256_madd_epi16(_mm256_unpacklo_epi16(l0, l1), w[k]));
            hi = _mm256_add_epi32(hi, _mm256_madd_epi16(_mm256_unpackhi_epi16(l0, l1), w[k]));
        }
        _mm256_storeu_si256(out, _mm256_add_epi32(_mm256_loadu_si256(out), _mm256_permute2x128_si256(lo, hi, 0x20)));
        _mm256_storeu_si256(out + 1,
                            _mm256_add_epi32(_mm256_loadu_si256(out + 1), _mm256_permute2x128_si256(lo, hi, 0x31)));
    }
}

static int sqc_has_avx2(void)
{
    static int known = -1;
    if (known < 0) {
        __builtin_cpu_init();
        known = __builtin_cpu_supports("avx2") ? 1 : 0;
    }
    return known;
}
#define SQC_AVX2 1
#endif

/* a[i] += v0 x0[i] + ... + v7 x7[i] for i < n (a multiple of 16), reading the int16 copy at the
 * offsets p[k]: eight weights per pass over the accumulators */
static void sqc_conv_axpy8_x16(int32_t *a, const int32_t *p, const int32_t *v, int32_t n)
{
    const int16_t *x0 = sqc_x16 + p[0], *x1 = sqc_x16 + p[1];
    const int16_t *x2 = sqc_x16 + p[2], *x3 = sqc_x16 + p[3];
    const int16_t *x4 = sqc_x16 + p[4], *x5 = sqc_x16 + p[5];
    const int16_t *x6 = sqc_x16 + p[6], *x7 = sqc_x16 + p[7];
    __m128i w[4];
    int32_t i;
#ifdef SQC_AVX2
    if (sqc_has_avx2()) {
        const int16_t *xs[8];
        xs[0] = x0, xs[1] = x1, xs[2] = x2, xs[3] = x3, xs[4] = x4, xs[5] = x5, xs[6] = x6, xs[7] = x7;
        sqc_conv_axpy8_avx2(a, xs, v, n);
        return;
    }
#endif
    for (i = 0; i < 4; i++) { /* (v[2i], v[2i+1]) in every pair of int16 lanes */
        short lo = (short)v[2 * i], hi = (short)v[2 * i + 1];
        w[i] = _mm_set_epi16(hi, lo, hi, lo, hi, lo, hi, lo);
    }
    for (i = 0; i < n; i += 8) {
#define SQC_LD(p) _mm_loadu_si128((const __m128i *)(const void *)((p) + i))
        __m128i l0 = SQC_LD(x0), l1 = SQC_LD(x1), l2 = SQC_LD(x2), l3 = SQC_LD(x3);
        __m128i l4 = SQC_LD(x4), l5 = SQC_LD(x5), l6 = SQC_LD(x6), l7 = SQC_LD(x7);
#undef SQC_LD
        __m128i lo = _mm_add_epi32(_mm_add_epi32(_mm_madd_epi16(_mm_unpacklo_epi16(l0, l1), w[0]),
                                                 _mm_madd_epi16(_mm_unpacklo_epi16(l2, l3), w[1])),
                                   _mm_add_epi32(_mm_madd_epi16(_mm_unpacklo_epi16(l4, l5), w[2]),
                                                 _mm_madd_epi16(_mm_unpacklo_epi16(l6, l7), w[3])));
        __m128i hi = _mm_add_epi32(_mm_add_epi32(_mm_madd_epi16(_mm_unpackhi_epi16(l0, l1), w[0]),
                                                 _mm_madd_epi16(_mm_unpackhi_epi16(l2, l3), w[1])),
                                   _mm_add_epi32(_mm_madd_epi16(_mm_unpackhi_epi16(l4, l5), w[2]),
                                                 _mm_madd_epi16(_mm_unpackhi_epi16(l6, l7), w[3])));
        __m128i *out = (__m128i *)(void *)(a + i);
        _mm_storeu_si128(out, _mm_add_epi32(_mm_loadu_si128(out), lo));
        _mm_storeu_si128(out + 1, _mm_add_epi32(_mm_loadu_si128(out + 1), hi));
    }
}
/* the last k < 8 weights of an output channel: a pass per pair (a zero weight completes an odd count) */
static void sqc_conv_rest_x16(int32_t *a, const int32_t *p, const int32_t *v, int32_t k, int32_t n)
{
    int32_t j, i;
#ifdef SQC_AVX2
    if (k > 2 && sqc_has_avx2()) { /* one eight-weight pass, zero weights added */
        const int16_t *xs[8];
        int32_t vs[8];
        for (j = 0; j < 8; j++) {
            xs[j] = sqc_x16 + p[j < k ? j : 0];
            vs[j] = j < k ? v[j] : 0;
        }
        sqc_conv_axpy8_avx2(a, xs, vs, n);
        return;
    }
#endif
    for (j = 0; j < k; j += 2) {
        const int16_t *x0 = sqc_x16 + p[j], *x1 = j + 1 < k ? sqc_x16 + p[j + 1] : x0;
        short lo = (short)v[j], hi = j + 1 < k ? (short)v[j + 1] : 0;
        const __m128i w = _mm_set_epi16(hi, lo, hi, lo, hi, lo, hi, lo);
        for (i = 0; i < n; i += 8) {
            __m128i l0 = _mm_loadu_si128((const __m128i *)(const void *)(x0 + i));
            __m128i l1 = _mm_loadu_si128((const __m128i *)(const void *)(x1 + i));
            __m128i *out = (__m128i *)(void *)(a + i);
            _mm_storeu_si128(out, _mm_add_epi32(_mm_loadu_si128(out), _mm_madd_epi16(_mm_unpacklo_epi16(l0, l1), w)));
            _mm_storeu_si128(out + 1,
                             _mm_add_epi32(_mm_loadu_si128(out + 1), _mm_madd_epi16(_mm_unpackhi_epi16(l0, l1), w)));
        }
    }
}
#define SQC_FN_X16 sqc_conv_axpy8_x16
#define SQC_CONV_BATCH 8
#else
#define SQC_CONV_BATCH 4
#endif

#define SQC_W int8_t
#define SQC_FN(name) name##_w8
#include "sqc_weights.inc"
#undef SQC_W
#undef SQC_FN
#undef SQC_P
#undef SQC_FN_X16
#undef SQC_CONV_BATCH
#define SQC_CONV_BATCH 4

#define SQC_P int32_t
#define SQC_W int16_t
#define SQC_FN(name) name##_w16
#include "sqc_weights.inc"
#undef SQC_W
#undef SQC_FN

/* ---------------------------------------------------------------------------------------------- */
/* element-wise, pooling, data movement */

void sqc_affine(const sqc_act_t *x, sqc_act_t *y, int32_t channels, int32_t inner, const sqc_requant_t *rq)
{
    int32_t c, i;
    for (c = 0; c < channels; c++) {
        for (i = 0; i < inner; i++) {
            int64_t v = (int64_t)x[(int64_t)c * inner + i];
            y[(int64_t)c * inner + i] = (sqc_act_t)sqc_requant((v + rq->bias[c]) * rq->mult[c], rq->shift[c], rq->lo,
                                                               rq->hi);
        }
    }
}

void sqc_clamp(const sqc_act_t *x, sqc_act_t *y, int32_t n, int32_t lo, int32_t hi)
{
    int32_t i;
    for (i = 0; i < n; i++) {
        int32_t v = x[i];
        y[i] = (sqc_act_t)(v < lo ? lo : (v > hi ? hi : v));
    }
}

void sqc_prelu(const sqc_act_t *x, sqc_act_t *y, int32_t channels, int32_t inner, const int16_t *mult,
               int32_t shift)
{
    int32_t c, i;
    for (c = 0; c < channels; c++) {
        for (i = 0; i < inner; i++) {
            int64_t k = (int64_t)c * inner + i;
            int32_t v = x[k];
            y[k] = (sqc_act_t)(v >= 0 ? v : sqc_requant((int64_t)v * mult[c], shift, SQC_ACT_MIN, SQC_ACT_MAX));
        }
    }
}

/* Max pooling over equal windows [o*s, o*s + k) that all lie inside the input (no table reads; the
 * common 2x2 window unrolled). */
void sqc_max_pool(const sqc_act_t *x, sqc_act_t *y, int32_t channels, int32_t h, int32_t w, int32_t oh,
                  int32_t ow, int32_t kh, int32_t kw, int32_t sh, int32_t sw)
{
    int32_t c, oy, ox, iy, ix;
    for (c = 0; c < channels; c++) {
        const sqc_act_t *plane = x + (int64_t)c * h * w;
        for (oy = 0; oy < oh; oy++) {
            const sqc_act_t *r0 = plane + (int64_t)oy * sh * w;
            sqc_act_t *out = y + ((int64_t)c * oh + oy) * ow;
            if (kh == 2 && kw == 2) {
                const sqc_act_t *r1 = r0 + w;
                ox = 0;
#if SQC_ACT_BITS == 8 && defined(__SSE2__)
                if (sw == 2) { /* eight outputs from 16 columns: bytes in offset binary, unsigned maxima */
                    const __m128i flip = _mm_set1_epi8((char)0x80), even = _mm_set1_epi16(0x00FF);
                    for (; ox + 8 <= ow; ox += 8) {
                        __m128i a = _mm_loadu_si128((const __m128i *)(const void *)(r0 + 2 * ox));
                        __m128i b = _mm_loadu_si128((const __m128i *)(const void *)(r1 + 2 * ox));
                        __m128i m = _mm_max_epu8(_mm_xor_si128(a, flip), _mm_xor_si128(b, flip));
                        __m128i h = _mm_max_epi16(_mm_and_si128(m, even), _mm_srli_epi16(m, 8));
                        _mm_storel_epi64((__m128i *)(void *)(out + ox), _mm_xor_si128(_mm_packus_epi16(h, h), flip));
                    }
                }
#endif
                for (; ox < ow; ox++) {
                    sqc_act_t a = r0[ox * sw] > r0[ox * sw + 1] ? r0[ox * sw] : r0[ox * sw + 1];
                    sqc_act_t b = r1[ox * sw] > r1[ox * sw + 1] ? r1[ox * sw] : r1[ox * sw + 1];
                    out[ox] = a > b ? a : b;
                }
                continue;
            }
            for (ox = 0; ox < ow; ox++) {
                sqc_act_t m = r0[ox * sw];
                for (iy = 0; iy < kh; iy++) {
                    const sqc_act_t *row = r0 + (int64_t)iy * w + (int64_t)ox * sw;
                    for (ix = 0; ix < kw; ix++) {
                        m = row[ix] > m ? row[ix] : m;
                    }
                }
                out[ox] = m;
            }
        }
    }
}

void sqc_pool(const sqc_act_t *x, sqc_act_t *y, int32_t channels, int32_t h, int32_t w, int32_t oh, int32_t ow,
              const int16_t *ys, const int16_t *ye, const int16_t *xs, const int16_t *xe,
              const int32_t *divisor)
{
    int32_t c, oy, ox, iy, ix;
    for (c = 0; c < channels; c++) {
        const sqc_act_t *plane = x + (int64_t)c * h * w;
        for (oy = 0; oy < oh; oy++) {
            for (ox = 0; ox < ow; ox++) {
                sqc_act_t *out = y + ((int64_t)c * oh + oy) * ow + ox;
                if (divisor == 0) {
                    int32_t m = SQC_ACT_MIN;
                    for (iy = ys[oy]; iy < ye[oy]; iy++) {
                        for (ix = xs[ox]; ix < xe[ox]; ix++) {
                            if (plane[iy * w + ix] > m) {
                                m = plane[iy * w + ix];
                            }
                        }
                    }
                    *out = (sqc_act_t)m;
                } else {
                    int64_t sum = 0;
                    int64_t n = divisor[oy * ow + ox];
                    for (iy = ys[oy]; iy < ye[oy]; iy++) {
                        for (ix = xs[ox]; ix < xe[ox]; ix++) {
                            sum += plane[iy * w + ix];
                        }
                    }
                    *out = (sqc_act_t)sqc_floor_div(2 * sum + n, 2 * n);
                }
            }
        }
    }
}

void sqc_add(const sqc_act_t *a, const sqc_act_t *b, sqc_act_t *y, int32_t n, int32_t scale_a,
             int32_t scale_b, int32_t shift, int32_t subtract)
{
    int32_t i;
    for (i = 0; i < n; i++) {
        int64_t va = (int64_t)a[i] * scale_a, vb = (int64_t)b[i] * scale_b;
        y[i] = (sqc_act_t)sqc_requant(subtract ? va - vb : va + vb, shift, SQC_ACT_MIN, SQC_ACT_MAX);
    }
}

void sqc_mul(const sqc_act_t *a, const sqc_act_t *b, sqc_act_t *y, int32_t n, int32_t shift)
{
    int32_t i;
    for (i = 0; i < n; i++) {
        y[i] = (sqc_act_t)sqc_requant((int64_t)a[i] * b[i], shift, SQC_ACT_MIN, SQC_ACT_MAX);
    }
}

void sqc_cat_part(const sqc_act_t *x, sqc_act_t *y, int32_t outer, int32_t inner, int32_t total,
                  int32_t offset, int32_t shift)
{
    int32_t o, i;
    for (o = 0; o < outer; o++) {
        for (i = 0; i < inner; i++) {
            y[(int64_t)o * total + offset + i] =
                (sqc_act_t)sqc_requant(x[(int64_t)o * inner + i], shift, SQC_ACT_MIN, SQC_ACT_MAX);
        }
    }
}

void sqc_lut(const sqc_act_t *x, sqc_act_t *y, int32_t n, const sqc_act_t *table)
{
    int32_t i;
    for (i = 0; i < n; i++) {
        y[i] = table[(int32_t)x[i] - SQC_ACT_MIN];
    }
}

static int32_t sqc_row_max(const sqc_act_t *v, int32_t cols)
{
    int32_t i, m = v[0];
    for (i = 1; i < cols; i++) {
        if (v[i] > m) {
            m = v[i];
        }
    }
    return m;
}

/* The exp code of a difference d: the table's entry, or I-BERT's integer exp (poly = {ln2, qb, qc, base}) */
static int64_t sqc_exp_code(int32_t d, const int32_t *table, const int64_t *poly)
{
    int32_t z, shift;
    int64_t t;
    if (table) {
        return table[d];
    }
    z = d / (int32_t)poly[0]; /* d >= 0: the quotient is the floor */
    t = poly[1] - (d - (int64_t)z * poly[0]);
    shift = z + poly[3] > 62 ? 62 : z + (int32_t)poly[3];
    return (t * t + poly[2]) >> shift; /* t * t + qc > 0 */
}

static void sqc_softmax_rows(const sqc_act_t *x, sqc_act_t *y, int32_t rows, int32_t cols, const int32_t *table,
                             const int64_t *poly, int32_t out_frac)
{
    int32_t r, i;
    for (r = 0; r < rows; r++) {
        const sqc_act_t *v = x + (int64_t)r * cols;
        const int32_t m = sqc_row_max(v, cols);
        int64_t s = 0;
        for (i = 0; i < cols; i++) {
            s += sqc_exp_code(m - v[i], table, poly);
        }
        for (i = 0; i < cols; i++) {
            int64_t q = (sqc_exp_code(m - v[i], table, poly) * ((int64_t)1 << (out_frac + 1)) + s) / (2 * s);
            y[(int64_t)r * cols + i] = (sqc_act_t)(q > SQC_ACT_MAX ? SQC_ACT_MAX : q);
        }
    }
}

void sqc_softmax(const sqc_act_t *x, sqc_act_t *y, int32_t rows, int32_t cols, const int32_t *exp_table,
                 int32_t out_frac)
{
    sqc_softmax_rows(x, y, rows, cols, exp_table, 0, out_frac);
}

void sqc_pad(const sqc_act_t *x, sqc_act_t *y, int32_t channels, int32_t h, int32_t w, int32_t top,
             int32_t bottom, int32_t left, int32_t right, int32_t fill)
{
    int32_t oh = h + top + bottom, ow = w + left + right;
    int32_t c, iy, ix;
    for (c = 0; c < channels; c++) {
        sqc_act_t *out = y + (int64_t)c * oh * ow;
        const sqc_act_t *in = x + (int64_t)c * h * w;
        for (iy = 0; iy < oh * ow; iy++) {
            out[iy] = (sqc_act_t)fill;
        }
        for (iy = 0; iy < h; iy++) {
            for (ix = 0; ix < w; ix++) {
                out[(iy + top) * ow + ix + left] = in[iy * w + ix];
            }
        }
    }
}

void sqc_strided(const sqc_act_t *x, sqc_act_t *y, int32_t rank, const int32_t *dims, const int32_t *strides,
                 int32_t offset)
{
    int32_t idx[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    const int32_t inner = dims[rank - 1], step = strides[rank - 1];
    int64_t n = 1, k, at = offset;
    int32_t d, j;
    for (d = 0; d < rank - 1; d++) {
        n *= dims[d];
    }
    for (k = 0; k < n; k++) {
        const sqc_act_t *src = x + at;
        for (j = 0; j < inner; j++) {
            y[j] = src[(int64_t)j * step];
        }
        y += inner;
        /* odometer over the outer dimensions */
        for (d = rank - 2; d >= 0; d--) {
            at += strides[d];
            if (++idx[d] < dims[d]) {
                break;
            }
            at -= (int64_t)strides[d] * dims[d];
            idx[d] = 0;
        }
    }
}

void sqc_lut_interp(const sqc_act_t *x, sqc_act_t *y, int32_t n, const int32_t *knots, int32_t shift)
{
    int32_t i;
    for (i = 0; i < n; i++) {
        const int32_t u = (int32_t)x[i] - (int32_t)SQC_ACT_MIN;
        const int32_t j = u >> shift, r = u & ((1 << shift) - 1);
        const int64_t t = (int64_t)knots[j] * ((int64_t)1 << shift) + (int64_t)(knots[j + 1] - knots[j]) * r;
        y[i] = (sqc_act_t)sqc_requant(t, shift, SQC_ACT_MIN, SQC_ACT_MAX);
    }
}

/* floor(sqrt(n)) by Newton's iteration from n (exact for every n; the simulator's math.isqrt) */
static int64_t sqc_isqrt(int64_t n)
{
    int64_t x, y;
    if (n < 2) {
        return n;
    }
    x = n;
    y = (x + 1) >> 1;
    while (y < x) {
        x = y;
        y = (x + n / x) >> 1;
    }
    return x;
}

void sqc_layer_norm(const sqc_act_t *x, sqc_act_t *y, int32_t rows, int32_t cols, int64_t eps, int32_t frac,
                    const int16_t *mult, const int64_t *bias, const int8_t *shift)
{
    int32_t r, i;
    for (r = 0; r < rows; r++) {
        const sqc_act_t *v = x + (int64_t)r * cols;
        sqc_act_t *out = y + (int64_t)r * cols;
        int64_t s = 0, q = 0, root;
        for (i = 0; i < cols; i++) {
            s += v[i];
        }
        for (i = 0; i < cols; i++) {
            const int64_t d = (int64_t)cols * v[i] - s;
            q += d * d;
        }
        root = sqc_isqrt(q / cols + eps);
        root = root < 1 ? 1 : root;
        for (i = 0; i < cols; i++) {
            const int64_t d = (int64_t)cols * v[i] - s;
            const int64_t z = sqc_floor_div(d * ((int64_t)1 << frac), root);
            out[i] = (sqc_act_t)sqc_requant(z * mult[i] + bias[i], shift[i], SQC_ACT_MIN, SQC_ACT_MAX);
        }
    }
}

void sqc_matmul(const sqc_act_t *a, const sqc_act_t *b, sqc_act_t *y, int32_t batch, int32_t m, int32_t k,
                int32_t n, int32_t mult, int32_t shift)
{
    int32_t t, i, j, e;
    for (t = 0; t < batch; t++) {
        const sqc_act_t *pa = a + (int64_t)t * m * k, *pb = b + (int64_t)t * k * n;
        sqc_act_t *py = y + (int64_t)t * m * n;
        for (i = 0; i < m; i++) {
            for (j = 0; j < n; j++) {
                int64_t acc = 0;
                for (e = 0; e < k; e++) {
                    acc += (int64_t)pa[(int64_t)i * k + e] * pb[(int64_t)e * n + j];
                }
                py[(int64_t)i * n + j] = (sqc_act_t)sqc_requant(acc * mult, shift, SQC_ACT_MIN, SQC_ACT_MAX);
            }
        }
    }
}

void sqc_softmax_iexp(const sqc_act_t *x, sqc_act_t *y, int32_t rows, int32_t cols, int32_t ln2, int32_t qb,
                      int64_t qc, int32_t base, int32_t out_frac)
{
    const int64_t poly[4] = {ln2, qb, qc, base};
    sqc_softmax_rows(x, y, rows, cols, 0, poly, out_frac);
}
