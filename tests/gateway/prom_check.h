/*
 * prom_check.h - a validator of the Prometheus text exposition format
 * 0.0.4, shared by test_metrics.c and test_admin.c (include it once per
 * binary; everything is static).
 *
 * prom_validate() is strict where the format is and where fanfold's
 * render promises more:
 *   - every line ends with "\n" and is not empty; a comment is
 *     "# HELP name text" or "# TYPE name counter|gauge|histogram|summary|
 *     untyped" (no other comments: the render writes none);
 *   - a sample is `name[{labels}] value [timestamp]`: a valid metric name
 *     ([a-zA-Z_:][a-zA-Z0-9_:]*), labels `name="value"` separated by ","
 *     (a trailing "," allowed), label names [a-zA-Z_][a-zA-Z0-9_]* not
 *     starting with "__", no label twice, values with only \\ \" \n as
 *     escapes; the value a float strtod reads whole, or +Inf, -Inf, NaN;
 *   - HELP and TYPE at most once per family, TYPE before the family's
 *     first sample, every sample of a family with a TYPE (fanfold types
 *     every family), a family's lines in one group;
 *   - no series twice (the same name and label set, in any label order);
 *   - counters, histogram buckets, _count and _sum are >= 0 and finite;
 *     a _bucket has an "le" label, _sum and _count have none;
 *   - per histogram series: le strictly increasing in the order written,
 *     the last +Inf, cumulative counts non-decreasing integers, _count
 *     present and equal to the +Inf bucket, _sum present.
 */
#ifndef FANFOLD_TESTS_PROM_CHECK_H
#define FANFOLD_TESTS_PROM_CHECK_H

#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Every function is static; a binary that uses some of them only must
 * not warn about the others. */
#define PROM_FN static __attribute__((unused))

enum { PROM_NONE, PROM_BUCKET, PROM_SUM, PROM_COUNT };

typedef struct prom_fam {
    char *name;
    char type[16];   /* "" before its TYPE line */
    bool help, left; /* left: another family's lines came after its own */
} prom_fam;

typedef struct prom_sample {
    size_t fam;
    int suffix;  /* PROM_* */
    char *key;   /* name{labels sorted, raw values} */
    char *group; /* family name{labels sorted, le left out} */
    double le;   /* buckets */
    double value;
    size_t line;
} prom_sample;

typedef struct prom_doc {
    prom_fam *fams;
    size_t nfams, fams_cap;
    prom_sample *samples;
    size_t nsamples, samples_cap;
    char *err;
    size_t errlen;
    bool failed;
} prom_doc;

PROM_FN bool prom_fail(prom_doc *d, size_t line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
PROM_FN bool prom_fail(prom_doc *d, size_t line, const char *fmt, ...)
{
    if (d->failed)
        return false;
    d->failed = true;
    if (d->err != NULL && d->errlen > 0) {
        int n = snprintf(d->err, d->errlen, "line %zu: ", line);
        if (n >= 0 && (size_t)n < d->errlen) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(d->err + n, d->errlen - (size_t)n, fmt, ap);
            va_end(ap);
        }
    }
    return false;
}

PROM_FN bool prom_name_start(char c, bool metric)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
           (metric && c == ':');
}

PROM_FN bool prom_name_char(char c, bool metric)
{
    return prom_name_start(c, metric) || (c >= '0' && c <= '9');
}

/* The length of the name at s (0: none). */
PROM_FN size_t prom_name_len(const char *s, const char *end, bool metric)
{
    size_t n = 0;
    if (s >= end || !prom_name_start(*s, metric))
        return 0;
    while (s + n < end && prom_name_char(s[n], metric))
        n++;
    return n;
}

PROM_FN char *prom_strndup(const char *s, size_t n)
{
    char *p = malloc(n + 1);
    if (p == NULL)
        abort(); /* panic path: a test without memory */
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

PROM_FN bool prom_parse_float(const char *s, size_t n, double *out)
{
    char buf[64];
    if (n == 0 || n >= sizeof buf)
        return false;
    memcpy(buf, s, n);
    buf[n] = '\0';
    if (strcmp(buf, "+Inf") == 0 || strcmp(buf, "Inf") == 0) {
        *out = INFINITY;
        return true;
    }
    if (strcmp(buf, "-Inf") == 0) {
        *out = -INFINITY;
        return true;
    }
    if (strcmp(buf, "NaN") == 0) {
        *out = NAN;
        return true;
    }
    /* strtod also reads "inf", "nan(...)", "infinity": not the format's. */
    for (size_t i = 0; i < n; i++)
        if (strchr("0123456789+-.eE", buf[i]) == NULL)
            return false;
    char *e;
    *out = strtod(buf, &e);
    return e == buf + n;
}

PROM_FN size_t prom_fam_find(prom_doc *d, const char *name, size_t n)
{
    for (size_t i = 0; i < d->nfams; i++)
        if (strlen(d->fams[i].name) == n &&
            memcmp(d->fams[i].name, name, n) == 0)
            return i;
    return (size_t)-1;
}

PROM_FN size_t prom_fam_add(prom_doc *d, const char *name, size_t n)
{
    if (d->nfams == d->fams_cap) {
        d->fams_cap = d->fams_cap ? 2 * d->fams_cap : 16;
        d->fams = realloc(d->fams, d->fams_cap * sizeof *d->fams);
        if (d->fams == NULL)
            abort(); /* panic path */
    }
    prom_fam *f = &d->fams[d->nfams];
    memset(f, 0, sizeof *f);
    f->name = prom_strndup(name, n);
    return d->nfams++;
}

/* Lines of family fam come now: it must not have been left before; the
 * family of the previous line is left when it is another. */
PROM_FN bool prom_enter(prom_doc *d, size_t *cur, size_t fam, size_t line)
{
    if (*cur != fam) {
        if (d->fams[fam].left)
            return prom_fail(d, line, "lines of family %s are not in one group",
                             d->fams[fam].name);
        if (*cur != (size_t)-1)
            d->fams[*cur].left = true;
        *cur = fam;
    }
    return true;
}

typedef struct prom_label {
    const char *name, *value; /* value raw (escaped), without quotes */
    size_t name_len, value_len;
} prom_label;

PROM_FN int prom_label_cmp(const void *a, const void *b)
{
    const prom_label *x = a, *y = b;
    size_t n = x->name_len < y->name_len ? x->name_len : y->name_len;
    int c = memcmp(x->name, y->name, n);
    if (c != 0)
        return c;
    return x->name_len < y->name_len ? -1 : x->name_len > y->name_len;
}

/* name{l1="v1",l2="v2"} with labels sorted, skipping the one named skip. */
PROM_FN char *prom_key(const char *name, size_t name_len, prom_label *ls,
                       size_t nl, const char *skip)
{
    size_t cap = name_len + 3;
    for (size_t i = 0; i < nl; i++)
        cap += ls[i].name_len + ls[i].value_len + 4;
    char *k = malloc(cap);
    if (k == NULL)
        abort(); /* panic path */
    size_t n = 0;
    memcpy(k, name, name_len);
    n = name_len;
    k[n++] = '{';
    bool first = true;
    for (size_t i = 0; i < nl; i++) {
        if (skip != NULL && ls[i].name_len == strlen(skip) &&
            memcmp(ls[i].name, skip, ls[i].name_len) == 0)
            continue;
        if (!first)
            k[n++] = ',';
        first = false;
        memcpy(k + n, ls[i].name, ls[i].name_len);
        n += ls[i].name_len;
        k[n++] = '=';
        k[n++] = '"';
        memcpy(k + n, ls[i].value, ls[i].value_len);
        n += ls[i].value_len;
        k[n++] = '"';
    }
    k[n++] = '}';
    k[n] = '\0';
    return k;
}

#define PROM_MAX_LABELS 16

PROM_FN bool prom_sample_line(prom_doc *d, const char *s, const char *end,
                              size_t line, size_t *cur)
{
    size_t nn = prom_name_len(s, end, true);
    if (nn == 0)
        return prom_fail(d, line, "no valid metric name");
    const char *name = s;
    const char *p = s + nn;
    prom_label ls[PROM_MAX_LABELS];
    size_t nl = 0;
    if (p < end && *p == '{') {
        p++;
        while (p < end && *p != '}') {
            size_t ln = prom_name_len(p, end, false);
            if (ln == 0)
                return prom_fail(d, line, "bad label name");
            if (ln >= 2 && p[0] == '_' && p[1] == '_')
                return prom_fail(d, line, "reserved label name");
            if (nl == PROM_MAX_LABELS)
                return prom_fail(d, line, "too many labels");
            ls[nl].name = p;
            ls[nl].name_len = ln;
            p += ln;
            if (p + 1 >= end || p[0] != '=' || p[1] != '"')
                return prom_fail(d, line, "label without =\"");
            p += 2;
            ls[nl].value = p;
            while (p < end && *p != '"') {
                if (*p == '\\') {
                    if (p + 1 >= end || strchr("\\\"n", p[1]) == NULL)
                        return prom_fail(d, line, "bad escape in label value");
                    p += 2;
                } else {
                    p++;
                }
            }
            if (p >= end)
                return prom_fail(d, line, "unterminated label value");
            ls[nl].value_len = (size_t)(p - ls[nl].value);
            p++; /* the closing quote */
            for (size_t i = 0; i < nl; i++)
                if (prom_label_cmp(&ls[i], &ls[nl]) == 0)
                    return prom_fail(d, line, "label %.*s twice",
                                     (int)ls[nl].name_len, ls[nl].name);
            nl++;
            if (p < end && *p == ',')
                p++;
            else if (p < end && *p != '}')
                return prom_fail(d, line, "expected , or } after a label");
        }
        if (p >= end)
            return prom_fail(d, line, "unterminated label set");
        p++; /* } */
    }
    if (p >= end || *p != ' ')
        return prom_fail(d, line, "no space before the value");
    while (p < end && *p == ' ')
        p++;
    const char *v = p;
    while (p < end && *p != ' ')
        p++;
    double value;
    if (!prom_parse_float(v, (size_t)(p - v), &value))
        return prom_fail(d, line, "bad value \"%.*s\"", (int)(p - v), v);
    if (p < end) { /* a timestamp: an integer */
        while (p < end && *p == ' ')
            p++;
        const char *t = p;
        if (p < end && *p == '-')
            p++;
        while (p < end && *p >= '0' && *p <= '9')
            p++;
        if (p == t || p != end)
            return prom_fail(d, line, "junk after the value");
    }

    /* Its family: the name itself, or a histogram's or summary's
     * _bucket, _sum or _count. */
    int suffix = PROM_NONE;
    size_t fam = prom_fam_find(d, name, nn);
    if (fam == (size_t)-1 || d->fams[fam].type[0] == '\0' ||
        strcmp(d->fams[fam].type, "histogram") == 0 ||
        strcmp(d->fams[fam].type, "summary") == 0) {
        static const struct {
            const char *s;
            int id;
        } sfx[] = {{"_bucket", PROM_BUCKET},
                   {"_sum", PROM_SUM},
                   {"_count", PROM_COUNT}};
        for (size_t i = 0; i < 3; i++) {
            size_t sl = strlen(sfx[i].s);
            if (nn > sl && memcmp(name + nn - sl, sfx[i].s, sl) == 0) {
                size_t f = prom_fam_find(d, name, nn - sl);
                if (f != (size_t)-1 &&
                    (strcmp(d->fams[f].type, "histogram") == 0 ||
                     (strcmp(d->fams[f].type, "summary") == 0 &&
                      sfx[i].id != PROM_BUCKET))) {
                    fam = f;
                    suffix = sfx[i].id;
                }
                break;
            }
        }
    }
    if (fam == (size_t)-1 || d->fams[fam].type[0] == '\0')
        return prom_fail(d, line, "sample %.*s before (or without) its TYPE",
                         (int)nn, name);
    const char *type = d->fams[fam].type;
    if (suffix == PROM_NONE && strcmp(type, "histogram") == 0)
        return prom_fail(d, line, "histogram sample without a suffix");
    if (!prom_enter(d, cur, fam, line))
        return false;

    qsort(ls, nl, sizeof ls[0], prom_label_cmp);
    const prom_label *le = NULL;
    for (size_t i = 0; i < nl; i++)
        if (ls[i].name_len == 2 && memcmp(ls[i].name, "le", 2) == 0)
            le = &ls[i];
    double lev = 0;
    if (suffix == PROM_BUCKET) {
        if (le == NULL)
            return prom_fail(d, line, "bucket without le");
        if (!prom_parse_float(le->value, le->value_len, &lev) || isnan(lev))
            return prom_fail(d, line, "bad le \"%.*s\"", (int)le->value_len,
                             le->value);
    } else if (le != NULL && strcmp(type, "histogram") == 0) {
        return prom_fail(d, line, "le on a histogram's _sum or _count");
    }
    bool nonneg = strcmp(type, "counter") == 0 || suffix != PROM_NONE;
    if (nonneg && (!(value >= 0) || isinf(value)))
        return prom_fail(d, line, "negative or non-finite counter value");
    if ((suffix == PROM_BUCKET || suffix == PROM_COUNT) &&
        value != floor(value))
        return prom_fail(d, line, "a count that is not an integer");

    if (d->nsamples == d->samples_cap) {
        d->samples_cap = d->samples_cap ? 2 * d->samples_cap : 256;
        d->samples = realloc(d->samples, d->samples_cap * sizeof *d->samples);
        if (d->samples == NULL)
            abort(); /* panic path */
    }
    prom_sample *sm = &d->samples[d->nsamples++];
    sm->fam = fam;
    sm->suffix = suffix;
    sm->key = prom_key(name, nn, ls, nl, NULL);
    sm->group =
        prom_key(d->fams[fam].name, strlen(d->fams[fam].name), ls, nl, "le");
    sm->le = lev;
    sm->value = value;
    sm->line = line;
    return true;
}

PROM_FN bool prom_comment_line(prom_doc *d, const char *s, const char *end,
                               size_t line, size_t *cur)
{
    bool help = end - s >= 7 && memcmp(s, "# HELP ", 7) == 0;
    bool type = end - s >= 7 && memcmp(s, "# TYPE ", 7) == 0;
    if (!help && !type)
        return prom_fail(d, line, "a comment other than HELP or TYPE");
    const char *p = s + 7;
    size_t nn = prom_name_len(p, end, true);
    if (nn == 0)
        return prom_fail(d, line, "no valid metric name");
    size_t fam = prom_fam_find(d, p, nn);
    if (fam == (size_t)-1)
        fam = prom_fam_add(d, p, nn);
    if (!prom_enter(d, cur, fam, line))
        return false;
    prom_fam *f = &d->fams[fam];
    p += nn;
    if (help) {
        if (f->help)
            return prom_fail(d, line, "second HELP for %s", f->name);
        f->help = true;
        if (p < end && *p != ' ')
            return prom_fail(d, line, "no space after the HELP name");
        for (; p < end; p++)
            if (*p == '\\' && (p + 1 >= end || (p[1] != '\\' && p[1] != 'n')))
                return prom_fail(d, line, "bad escape in HELP text");
            else if (*p == '\\')
                p++;
        return true;
    }
    if (f->type[0] != '\0')
        return prom_fail(d, line, "second TYPE for %s", f->name);
    for (size_t i = 0; i < d->nsamples; i++)
        if (d->samples[i].fam == fam)
            return prom_fail(d, line, "TYPE of %s after its samples", f->name);
    if (p >= end || *p != ' ')
        return prom_fail(d, line, "no type");
    p++;
    static const char *const types[] = {"counter", "gauge", "histogram",
                                        "summary", "untyped"};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        if ((size_t)(end - p) == strlen(types[i]) &&
            memcmp(p, types[i], strlen(types[i])) == 0) {
            snprintf(f->type, sizeof f->type, "%s", types[i]);
            return true;
        }
    return prom_fail(d, line, "unknown type \"%.*s\"", (int)(end - p), p);
}

PROM_FN int prom_sample_key_cmp(const void *a, const void *b)
{
    const prom_sample *x = *(prom_sample *const *)a;
    const prom_sample *y = *(prom_sample *const *)b;
    return strcmp(x->key, y->key);
}

PROM_FN bool prom_check_histograms(prom_doc *d)
{
    for (size_t i = 0; i < d->nsamples; i++) {
        prom_sample *s = &d->samples[i];
        if (strcmp(d->fams[s->fam].type, "histogram") != 0)
            continue;
        /* The first sample of each group checks the whole group. */
        bool first = true;
        for (size_t j = 0; j < i && first; j++)
            first = d->samples[j].fam != s->fam ||
                    strcmp(d->samples[j].group, s->group) != 0;
        if (!first)
            continue;
        double prev_le = -INFINITY, prev = 0, inf = -1, count = -1;
        bool sum = false;
        size_t nb = 0;
        for (size_t j = i; j < d->nsamples; j++) {
            prom_sample *t = &d->samples[j];
            if (t->fam != s->fam || strcmp(t->group, s->group) != 0)
                continue;
            if (t->suffix == PROM_BUCKET) {
                if (!(t->le > prev_le))
                    return prom_fail(d, t->line, "le not increasing");
                if (t->value < prev)
                    return prom_fail(d, t->line, "bucket counts decrease");
                prev_le = t->le;
                prev = t->value;
                nb++;
                if (isinf(t->le))
                    inf = t->value;
            } else if (t->suffix == PROM_COUNT) {
                count = t->value;
            } else if (t->suffix == PROM_SUM) {
                sum = true;
            }
        }
        if (nb == 0 || inf < 0)
            return prom_fail(d, s->line, "%s: no +Inf bucket", s->group);
        if (!isinf(prev_le))
            return prom_fail(d, s->line, "%s: +Inf is not the last bucket",
                             s->group);
        if (count < 0 || !sum)
            return prom_fail(d, s->line, "%s: no _count or no _sum", s->group);
        if (count != inf)
            return prom_fail(d, s->line, "%s: _count %.0f but +Inf bucket %.0f",
                             s->group, count, inf);
    }
    return true;
}

PROM_FN void prom_doc_free(prom_doc *d)
{
    for (size_t i = 0; i < d->nfams; i++)
        free(d->fams[i].name);
    for (size_t i = 0; i < d->nsamples; i++) {
        free(d->samples[i].key);
        free(d->samples[i].group);
    }
    free(d->fams);
    free(d->samples);
}

/* Is text[0, len) a valid exposition (see the top of this file)? On
 * failure err says why (line numbers from 1). */
PROM_FN bool prom_validate(const char *text, size_t len, char *err,
                           size_t errlen)
{
    prom_doc d = {.err = err, .errlen = errlen};
    if (errlen > 0)
        err[0] = '\0';
    size_t cur = (size_t)-1, line = 0;
    const char *p = text, *end = text + len;
    if (len == 0)
        prom_fail(&d, 0, "empty exposition");
    while (p < end && !d.failed) {
        line++;
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (nl == NULL) {
            prom_fail(&d, line, "no newline at the end");
            break;
        }
        if (memchr(p, '\0', (size_t)(nl - p)) != NULL)
            prom_fail(&d, line, "a NUL byte");
        else if (nl == p)
            prom_fail(&d, line, "an empty line");
        else if (*p == '#')
            prom_comment_line(&d, p, nl, line, &cur);
        else
            prom_sample_line(&d, p, nl, line, &cur);
        p = nl + 1;
    }
    if (!d.failed) {
        prom_sample **by_key = malloc((d.nsamples + 1) * sizeof *by_key);
        if (by_key == NULL)
            abort(); /* panic path */
        for (size_t i = 0; i < d.nsamples; i++)
            by_key[i] = &d.samples[i];
        qsort(by_key, d.nsamples, sizeof *by_key, prom_sample_key_cmp);
        for (size_t i = 1; i < d.nsamples && !d.failed; i++)
            if (strcmp(by_key[i - 1]->key, by_key[i]->key) == 0)
                prom_fail(&d, by_key[i]->line, "series %s twice",
                          by_key[i]->key);
        free(by_key);
    }
    if (!d.failed)
        prom_check_histograms(&d);
    prom_doc_free(&d);
    return !d.failed;
}

/*
 * The value of the sample line that starts with series (exactly:
 * `name{labels}` as the render writes it) followed by a space. Returns
 * how many such lines there are (*v is the first one's value).
 */
PROM_FN int prom_value(const char *text, const char *series, double *v)
{
    size_t sl = strlen(series);
    int found = 0;
    for (const char *p = text; *p != '\0';) {
        const char *nl = strchr(p, '\n');
        size_t ll = nl ? (size_t)(nl - p) : strlen(p);
        if (ll > sl && memcmp(p, series, sl) == 0 && p[sl] == ' ') {
            double x;
            if (prom_parse_float(p + sl + 1, ll - sl - 1, &x)) {
                if (found == 0)
                    *v = x;
                found++;
            }
        }
        if (nl == NULL)
            break;
        p = nl + 1;
    }
    return found;
}

/* Is line (without its newline) one of text's lines? */
PROM_FN bool prom_has_line(const char *text, const char *line)
{
    size_t ll = strlen(line);
    for (const char *p = text; *p != '\0';) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        if (n == ll && memcmp(p, line, ll) == 0)
            return true;
        if (nl == NULL)
            break;
        p = nl + 1;
    }
    return false;
}

#endif /* FANFOLD_TESTS_PROM_CHECK_H */
