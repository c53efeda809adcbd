/* Test driver: `model IN OUT` reads inputs (SQC_INPUT_SIZE codes each, native byte order) from IN and
 * writes the output codes to OUT; `model --bench IN RUNS` runs every input RUNS times and prints the
 * median latency of one inference in nanoseconds. */
#define _POSIX_C_SOURCE 199309L
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "model.h"

static sqc_act_t input[SQC_INPUT_SIZE];
static sqc_act_t output[SQC_OUTPUT_SIZE];

/* the decoded-weight arena: the built-in one, or (SQC_ARENA_STATIC 0) memory the application owns */
static int init(void)
{
#if SQC_ARENA_STATIC
    return sqc_init();
#else
    static void *arena = 0;
    if (arena == 0) {
        arena = malloc(SQC_ARENA_BYTES + 1u);
    }
    return sqc_init() == 0 ? 0 : sqc_init_arena(arena, SQC_ARENA_BYTES + 1u);
#endif
}

static int compare(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static long count_inputs(FILE *f)
{
    long size;
    if (fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) {
        return -1;
    }
    if (size % (long)sizeof(input) != 0) {
        return -1;
    }
    return size / (long)sizeof(input);
}

static int run_files(const char *in_path, const char *out_path)
{
    FILE *in = fopen(in_path, "rb");
    FILE *out = fopen(out_path, "wb");
    long n, i;
    if (!in || !out) {
        fprintf(stderr, "cannot open %s or %s\n", in_path, out_path);
        return 1;
    }
    n = count_inputs(in);
    if (init() != 0) {
        fprintf(stderr, "cannot decode the weights\n");
        return 1;
    }
    if (n < 0) {
        fprintf(stderr, "%s: size is not a multiple of %u bytes\n", in_path, (unsigned)sizeof(input));
        return 1;
    }
    for (i = 0; i < n; i++) {
        if (fread(input, sizeof(input), 1, in) != 1 || sqc_run(input, output) != 0 ||
            fwrite(output, sizeof(output), 1, out) != 1) {
            fprintf(stderr, "inference %ld failed\n", i);
            return 1;
        }
    }
    fclose(in);
    return fclose(out) != 0;
}

static int bench(const char *in_path, long runs)
{
    FILE *in = fopen(in_path, "rb");
    long n, i, r, k = 0;
    sqc_act_t *all;
    double *times;
    if (!in || (n = count_inputs(in)) <= 0 || runs <= 0) {
        fprintf(stderr, "cannot read inputs from %s\n", in_path);
        return 1;
    }
    all = (sqc_act_t *)malloc((size_t)n * sizeof(input));
    times = (double *)malloc((size_t)(n * runs) * sizeof(double));
    if (!all || !times || fread(all, sizeof(input), (size_t)n, in) != (size_t)n || init() != 0) {
        fprintf(stderr, "cannot prepare the benchmark\n");
        return 1;
    }
    fclose(in);
    for (r = 0; r < runs; r++) {
        for (i = 0; i < n; i++) {
            struct timespec t0, t1;
            clock_gettime(CLOCK_MONOTONIC, &t0);
            sqc_run(all + i * SQC_INPUT_SIZE, output);
            clock_gettime(CLOCK_MONOTONIC, &t1);
            times[k++] = (double)(t1.tv_sec - t0.tv_sec) * 1e9 + (double)(t1.tv_nsec - t0.tv_nsec);
        }
    }
    qsort(times, (size_t)k, sizeof(double), compare);
    printf("%.0f\n", times[k / 2]);
    free(all);
    free(times);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 4 && argv[1][0] == '-' && argv[1][1] == '-') {
        return bench(argv[2], atol(argv[3]));
    }
    if (argc != 3) {
        fprintf(stderr, "usage: %s IN OUT | %s --bench IN RUNS\n", argv[0], argv[0]);
        return 2;
    }
    return run_files(argv[1], argv[2]);
}
