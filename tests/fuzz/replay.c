/*
 * replay.c - main() for a fuzz target outside libFuzzer: runs every file
 * of the target's corpus (FFZ_CORPUS, a folder of the repository: the
 * seeds, and each input that ever made the target fail, kept as a
 * regression test) through LLVMFuzzerTestOneInput once. Built with the
 * ordinary compiler as tests/fuzz/test_fuzz_<name> and run by make test
 * (and the sanitizer runs), from the repository's root; arguments, when
 * given, are files or folders to run instead.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#ifndef FFZ_CORPUS
#error "build with -DFFZ_CORPUS=\"tests/fuzz/corpus/<name>\""
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
/* harness.c's, for the targets that run a whole gateway: stop it before
 * exiting, so LeakSanitizer sees a clean heap. */
void ffz_stop(void) __attribute__((weak));

static int run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        perror(path);
        return -1;
    }
    size_t cap = 1 << 16, len = 0;
    uint8_t *buf = malloc(cap);
    size_t n;
    while (buf != NULL && (n = fread(buf + len, 1, cap - len, f)) > 0) {
        len += n;
        if (len == cap) {
            uint8_t *nb = realloc(buf, cap *= 2);
            if (nb == NULL)
                free(buf);
            buf = nb;
        }
    }
    fclose(f);
    if (buf == NULL) {
        fprintf(stderr, "%s: out of memory\n", path);
        return -1;
    }
    LLVMFuzzerTestOneInput(buf, len);
    free(buf);
    return 0;
}

static int cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Runs path (a file, or every file of a folder in name order); adds the
 * count of inputs run to *count. Returns -1 when something could not be
 * read. */
static int run_path(const char *path, int *count)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        perror(path);
        return -1;
    }
    if (!S_ISDIR(st.st_mode)) {
        (*count)++;
        return run_file(path);
    }
    DIR *d = opendir(path);
    if (d == NULL) {
        perror(path);
        return -1;
    }
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 64;
            char **nn = realloc(names, cap * sizeof *names);
            if (nn == NULL)
                break;
            names = nn;
        }
        names[n++] = strdup(e->d_name);
    }
    closedir(d);
    qsort(names, n, sizeof *names, cmp);
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        char full[4096];
        snprintf(full, sizeof full, "%s/%s", path, names[i]);
        (*count)++;
        if (run_file(full) != 0)
            rc = -1;
        free(names[i]);
    }
    free(names);
    return rc;
}

int main(int argc, char **argv)
{
    /* Targets that run the whole gateway keep its access log quiet. */
    setenv("FANFOLD_FUZZ_QUIET", "1", 1);
    int count = 0, rc = 0;
    if (argc > 1) {
        for (int i = 1; i < argc; i++)
            if (run_path(argv[i], &count) != 0)
                rc = 1;
    } else if (run_path(FFZ_CORPUS, &count) != 0) {
        rc = 1;
    }
    if (ffz_stop != NULL)
        ffz_stop();
    printf("%s: %d inputs replayed%s\n", argv[0], count,
           rc ? ", some could not be read" : "");
    return rc != 0 || count == 0;
}
