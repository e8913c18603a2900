/* json.c: the JSON of qemu's pseudo-file names (json:{...}) flattened
 * into the key=value pairs of a block option list, so that one
 * interpreter (blockopts.c) serves both spellings: nested objects become
 * dotted keys ("file": {"filename": "a"} is file.filename=a), array
 * elements numbered keys ("inject-error": [{"event": "x"}] is
 * inject-error.0.event=x), true and false "on" and "off", numbers their
 * text, null an empty value (the "no backing file" of "backing": null).
 *
 * The parser is a recursive descent over the text, bounded in depth
 * (FQ_JSON_DEPTH) and in the number of pairs (the caller's array); every
 * string is written back, unescaped, into one buffer the caller frees.
 * SPDX-License-Identifier: MIT
 */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>

#include "core/core.h"
#include "util.h"

#define FQ_JSON_DEPTH 32

struct jparse {
    const char *p;             /* the cursor in the text */
    char *out, *w;             /* the unescaped strings, end of what is written */
    char path[1024];           /* the dotted key of the value being parsed */
    const char **key, **val;   /* the pairs, `max` of them */
    char *bare;                /* per pair: a number, true, false or null */
    int n, max;
    char *err;
};

/* Fail with qemu's frame around `why`. Returns -EINVAL. */
static int jfail(struct jparse *j, const char *why)
{
    if (!*j->p)
        why = "premature EOI";
    fq_seterr(j->err, "Could not parse the JSON options: JSON parse error, %s", why);
    return -EINVAL;
}

static void skip_ws(struct jparse *j)
{
    while (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r')
        j->p++;
}

/* Put code point `c` in UTF-8 at the write cursor. */
static void put_utf8(struct jparse *j, unsigned c)
{
    if (c < 0x80) {
        *j->w++ = (char)c;
    } else if (c < 0x800) {
        *j->w++ = (char)(0xc0 | c >> 6);
        *j->w++ = (char)(0x80 | (c & 0x3f));
    } else if (c < 0x10000) {
        *j->w++ = (char)(0xe0 | c >> 12);
        *j->w++ = (char)(0x80 | (c >> 6 & 0x3f));
        *j->w++ = (char)(0x80 | (c & 0x3f));
    } else {
        *j->w++ = (char)(0xf0 | c >> 18);
        *j->w++ = (char)(0x80 | (c >> 12 & 0x3f));
        *j->w++ = (char)(0x80 | (c >> 6 & 0x3f));
        *j->w++ = (char)(0x80 | (c & 0x3f));
    }
}

/* Four hex digits at the cursor. Returns the value or -1. */
static int hex4(struct jparse *j)
{
    int v = 0;

    for (int i = 0; i < 4; i++) {
        int c = (unsigned char)*j->p++;
        if (!isxdigit(c))
            return -1;
        v = v * 16 + (isdigit(c) ? c - '0' : tolower(c) - 'a' + 10);
    }
    return v;
}

/* A string at the cursor ('"' or qemu's '\''), unescaped into the output
 * buffer. Returns it, or NULL with the error set. An unescaped string is
 * never longer than its text, so the buffer (as long as the text) holds
 * them all. */
static const char *jstring(struct jparse *j)
{
    char q = *j->p++;
    char *s = j->w;

    for (;;) {
        char c = *j->p++;
        if (c == q)
            break;
        if (!c || (unsigned char)c < 0x20) {
            jfail(j, "missing terminating quote");
            return NULL;
        }
        if (c != '\\') {
            *j->w++ = c;
            continue;
        }
        c = *j->p++;
        switch (c) {
        case '"': case '\\': case '/': case '\'': *j->w++ = c; break;
        case 'b': *j->w++ = '\b'; break;
        case 'f': *j->w++ = '\f'; break;
        case 'n': *j->w++ = '\n'; break;
        case 'r': *j->w++ = '\r'; break;
        case 't': *j->w++ = '\t'; break;
        case 'u': {
            int u = hex4(j);
            if (u <= 0) {   /* a NUL would cut the string */
                jfail(j, "invalid hex escape sequence in string");
                return NULL;
            }
            unsigned cp = (unsigned)u;
            if (u >= 0xd800 && u < 0xdc00 && j->p[0] == '\\' && j->p[1] == 'u') {
                j->p += 2;
                int lo = hex4(j);
                if (lo < 0xdc00 || lo > 0xdfff) {
                    jfail(j, "invalid escape sequence in string");
                    return NULL;
                }
                cp = 0x10000 + (((unsigned)u - 0xd800) << 10) + ((unsigned)lo - 0xdc00);
            }
            put_utf8(j, cp);
            break;
        }
        default:
            jfail(j, "invalid escape sequence in string");
            return NULL;
        }
    }
    *j->w++ = '\0';
    return s;
}

/* Add the pair (current path, v). Returns 0 or -EINVAL. */
static int jpair(struct jparse *j, const char *v, bool bare)
{
    if (j->n == j->max) {
        fq_seterr(j->err, "Could not parse the JSON options: too many options");
        return -EINVAL;
    }
    size_t l = strlen(j->path) + 1;
    char *k = j->w;
    memcpy(k, j->path, l);
    j->w += l;
    j->key[j->n] = k;
    j->bare[j->n] = bare;
    j->val[j->n++] = v;
    return 0;
}

static int jvalue(struct jparse *j, int depth);

/* Parse the members of an object (cursor on '{') or the elements of an
 * array (on '['), each under the current path plus its name or index. */
static int jcompound(struct jparse *j, int depth)
{
    bool object = *j->p == '{';
    char end = object ? '}' : ']';
    size_t base = strlen(j->path);
    int r;

    if (depth > FQ_JSON_DEPTH)
        return jfail(j, "nesting too deep");
    j->p++;
    skip_ws(j);
    if (*j->p == end) {
        j->p++;
        return 0;
    }
    for (unsigned idx = 0;; idx++) {
        char name[256];
        skip_ws(j);
        if (object) {
            if (*j->p != '"' && *j->p != '\'')
                return jvalue(j, depth) < 0 ? -EINVAL : jfail(j, "expecting a member name");
            char *mark = j->w;
            const char *s = jstring(j);
            if (!s)
                return -EINVAL;
            snprintf(name, sizeof(name), "%s", s);
            j->w = mark;   /* the name lives on in the path only */
            skip_ws(j);
            if (*j->p++ != ':')
                return jfail(j, "missing ':' after member name");
        } else {
            snprintf(name, sizeof(name), "%u", idx);
        }
        if (base + 1 + strlen(name) + 1 > sizeof(j->path))
            return jfail(j, "key too long");
        snprintf(j->path + base, sizeof(j->path) - base, "%s%s", base ? "." : "", name);
        if ((r = jvalue(j, depth + 1)) < 0)
            return r;
        j->path[base] = '\0';
        skip_ws(j);
        if (*j->p == ',') {
            j->p++;
            continue;
        }
        if (*j->p == end) {
            j->p++;
            return 0;
        }
        return jfail(j, object ? "expecting ',' or '}'" : "expecting ',' or ']'");
    }
}

/* Parse one value under the current path. */
static int jvalue(struct jparse *j, int depth)
{
    static const struct { const char *word, *val; } words[] = {
        { "true", "on" }, { "false", "off" }, { "null", "" },
    };
    const char *s;

    skip_ws(j);
    if (*j->p == '{' || *j->p == '[')
        return jcompound(j, depth);
    if (*j->p == '"' || *j->p == '\'')
        return (s = jstring(j)) ? jpair(j, s, false) : -EINVAL;
    if (*j->p == '-' || isdigit((unsigned char)*j->p)) {
        const char *start = j->p;
        j->p++;
        while (isdigit((unsigned char)*j->p) || strchr(".eE+-", *j->p))
            j->p++;
        char *v = j->w;
        memcpy(v, start, (size_t)(j->p - start));
        j->w += j->p - start;
        *j->w++ = '\0';
        return jpair(j, v, true);
    }
    for (size_t i = 0; i < FQ_ARRAY_SIZE(words); i++) {
        size_t l = strlen(words[i].word);
        if (!strncmp(j->p, words[i].word, l) && !isalnum((unsigned char)j->p[l])) {
            j->p += l;
            return jpair(j, words[i].val, true);
        }
    }
    char why[64];
    int l = 0;
    while (isalnum((unsigned char)j->p[l]) && l < 32)
        l++;
    if (l)
        snprintf(why, sizeof(why), "invalid keyword '%.*s'", l, j->p);
    else
        snprintf(why, sizeof(why), "%s", "unexpected character");
    return jfail(j, why);
}

int fq_json_flatten(const char *text, char **buf, const char **key, const char **val, char *bare,
                    int max, int *n, char *err)
{
    /* the strings and the keys: each at most the text's length (a key is
     * at most the path buffer), one NUL each */
    size_t cap = strlen(text) * 2 + (size_t)max * (sizeof(((struct jparse *)0)->path) + 2) + 16;
    struct jparse j = { .p = text, .key = key, .val = val, .bare = bare, .max = max, .err = err };
    int r;

    *buf = NULL;
    *n = 0;
    if (!(j.out = j.w = malloc(cap))) {
        fq_seterr(err, "%s", strerror(ENOMEM));
        return -ENOMEM;
    }
    skip_ws(&j);
    if (!*j.p) {
        fq_seterr(err, "Could not parse the JSON options: Expecting a JSON value");
        free(j.out);
        return -EINVAL;
    }
    if (*j.p != '{') {
        /* a syntax error is said as such; any other value is no object */
        if (jvalue(&j, 0) == 0)
            fq_seterr(err, "Invalid JSON object given");
        free(j.out);
        return -EINVAL;
    }
    r = jcompound(&j, 0);
    if (r == 0) {
        skip_ws(&j);
        if (*j.p) {
            fq_seterr(err, "Could not parse the JSON options: Expecting at most one JSON value");
            r = -EINVAL;
        }
    }
    if (r < 0) {
        free(j.out);
        return r;
    }
    *buf = j.out;
    *n = j.n;
    return 0;
}

/* ---- writing options back as qemu names an image: json:{...} ---- */

struct jwriter {
    char *buf;
    size_t len, used;
};

static void jput(struct jwriter *w, const char *fmt, ...) FQ_PRINTF(2, 3);
static void jput(struct jwriter *w, const char *fmt, ...)
{
    va_list ap;
    int k;

    if (w->used >= w->len)
        return;
    va_start(ap, fmt);
    k = vsnprintf(w->buf + w->used, w->len - w->used, fmt, ap);
    va_end(ap);
    w->used += k > 0 ? (size_t)k : 0;
}

/* A string value, escaped. */
static void jput_str(struct jwriter *w, const char *s)
{
    jput(w, "\"");
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            jput(w, "\\%c", *s);
        else if ((unsigned char)*s < 0x20)
            jput(w, "\\u%04x", (unsigned char)*s);
        else
            jput(w, "%c", *s);
    }
    jput(w, "\"");
}

/* The object of the keys under `prefix` ("" or "file."), its members in
 * the order their first key was given. */
static void jobject(struct jwriter *w, const struct fq_blockopts *o, const char *prefix, int depth)
{
    size_t pl = strlen(prefix);
    bool first = true;

    jput(w, "{");
    for (int i = 0; i < o->n && depth < FQ_JSON_DEPTH; i++) {
        const char *k = o->key[i];
        if (strncmp(k, prefix, pl))
            continue;
        const char *c = k + pl, *dot = strchr(c, '.');
        size_t cl = dot ? (size_t)(dot - c) : strlen(c);
        bool seen = false;
        for (int e = 0; e < i && !seen; e++)   /* said already */
            seen = !strncmp(o->key[e], prefix, pl) && !strncmp(o->key[e] + pl, c, cl) &&
                   (o->key[e][pl + cl] == '.' || !o->key[e][pl + cl]);
        if (seen)
            continue;
        jput(w, "%s\"%.*s\": ", first ? "" : ", ", (int)cl, c);
        first = false;
        if (dot) {
            char sub[1024];
            snprintf(sub, sizeof(sub), "%s%.*s.", prefix, (int)cl, c);
            jobject(w, o, sub, depth + 1);
        } else if (o->bare[i]) {
            jput(w, "%s", !strcmp(o->val[i], "on") ? "true" : !strcmp(o->val[i], "off") ? "false"
                          : !*o->val[i] ? "null" : o->val[i]);
        } else {
            jput_str(w, o->val[i]);
        }
    }
    jput(w, "}");
}

int fq_json_write(const struct fq_blockopts *o, char *buf, size_t len)
{
    struct jwriter w = { buf, len, 0 };

    jput(&w, "json:");
    jobject(&w, o, "", 0);
    return w.used < len ? 0 : -ENAMETOOLONG;
}
