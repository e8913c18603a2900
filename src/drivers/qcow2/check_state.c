/* check_state.c: what a check pass (check.c) keeps per cluster, and its
 * messages.
 *
 * The count covers every cluster of the image file, so its state is kept
 * small: a byte of counted references per cluster (a count that outgrows
 * it continues in a map), a bit saying the cluster holds metadata (whose
 * kind is in a map: metadata is a small part of any image), and two bits
 * recording the COPIED flags the active L2 entries give it. About 1.4
 * bytes per cluster in all; everything else follows the metadata.
 *
 * Messages go to the caller's function as they are found, except while
 * the L2 tables are walked: that walk runs in host order, and its
 * messages are held and printed afterwards in the order of the tables in
 * the L1 tables, as a walk in that order would have printed them.
 * SPDX-License-Identifier: MIT
 */
#include <stdarg.h>
#include <stdio.h>

#include "check.h"

int ck_state_init(struct ck *k)
{
    size_t words = (size_t)FQ_DIV_UP(k->nb, 64);

    k->refs = calloc(k->nb, 1);
    k->is_meta = calloc(words, 8);
    k->cp_set = calloc(words, 8);
    k->cp_clear = calloc(words, 8);
    if (!k->refs || !k->is_meta || !k->cp_set || !k->cp_clear)
        return -ENOMEM;
    return 0;
}

static void map_free(struct ck_map *m)
{
    free(m->key);
    free(m->val);
    memset(m, 0, sizeof(*m));
}

void ck_state_free(struct ck *k)
{
    qrt_bad_vec_reset(&k->saved_bad);
    free(k->refs);
    free(k->is_meta);
    free(k->cp_set);
    free(k->cp_clear);
    map_free(&k->big);
    map_free(&k->kinds);
    for (size_t i = 0; i < k->msgs.len; i++)
        free(k->msgs.ptr[i].line);
    ck_msg_vec_reset(&k->msgs);
}

/* ---- the map ---- */

static size_t slot_of(const struct ck_map *m, uint64_t c)
{
    return (size_t)((c + 1) * 0x9e3779b97f4a7c15ull >> 17) & (m->cap - 1);
}

/* Slot of cluster c, or of the empty slot where it would go. */
static size_t find(const struct ck_map *m, uint64_t c)
{
    size_t i = slot_of(m, c);

    while (m->key[i] && m->key[i] != c + 1)
        i = (i + 1) & (m->cap - 1);
    return i;
}

uint64_t ck_map_get(const struct ck_map *m, uint64_t c)
{
    if (!m->cap)
        return 0;
    size_t i = find(m, c);
    return m->key[i] ? m->val[i] : 0;
}

/* Double the table (at most half full). Returns false without memory. */
static bool grow(struct ck_map *m)
{
    struct ck_map n = { .cap = m->cap ? m->cap * 2 : 256 };

    n.key = calloc(n.cap, 8);
    n.val = malloc(n.cap * 8);
    if (!n.key || !n.val) {
        map_free(&n);
        return false;
    }
    for (size_t i = 0; i < m->cap; i++)
        if (m->key[i]) {
            size_t j = find(&n, m->key[i] - 1);
            n.key[j] = m->key[i];
            n.val[j] = m->val[i];
        }
    n.n = m->n;
    map_free(m);
    *m = n;
    return true;
}

void ck_map_set(struct ck *k, struct ck_map *m, uint64_t c, uint64_t v)
{
    if ((m->n + 1) * 2 > m->cap && !grow(m)) {
        k->oom = true;
        return;
    }
    size_t i = find(m, c);
    if (!m->key[i]) {
        m->key[i] = c + 1;
        m->n++;
    }
    m->val[i] = v;
}

/* ---- counts and kinds ---- */

uint64_t ck_ref(const struct ck *k, uint64_t c)
{
    return k->refs[c] < CK_REF_BIG ? k->refs[c] : ck_map_get(&k->big, c);
}

void ck_ref_inc_big(struct ck *k, uint64_t c)
{
    if (k->refs[c] < CK_REF_BIG) {
        k->refs[c] = CK_REF_BIG;
        ck_map_set(k, &k->big, c, CK_REF_BIG);
    } else {
        uint64_t v = ck_map_get(&k->big, c);
        ck_map_set(k, &k->big, c, v + (v < UINT64_MAX));
    }
}

void ck_kind_set(struct ck *k, uint64_t c, uint8_t kind)
{
    uint64_t v = ck_bit(k->is_meta, c) ? ck_map_get(&k->kinds, c) : 0;

    ck_bit_set(k->is_meta, c);
    ck_map_set(k, &k->kinds, c, (v & ~0xffull) | kind);
}

/* ---- messages ---- */

void ck_say(struct ck *k, const char *fmt, ...)
{
    char line[512];
    va_list ap;

    if (!k->msg || (k->only_repairs && strncmp(fmt, "Repairing", 9) && strncmp(fmt, "%s", 2)))
        return;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (!k->hold) {
        k->msg(k->opaque, line);
        return;
    }
    struct ck_msg m = { .key = k->hold_key, .seq = k->msgs.len, .line = strdup(line) };
    if (!m.line || ck_msg_vec_push(&k->msgs, m) < 0) {
        free(m.line);
        k->oom = true;
    }
}

static int msg_cmp(const void *a, const void *b)
{
    const struct ck_msg *x = a, *y = b;

    if (x->key != y->key)
        return x->key < y->key ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

void ck_release_msgs(struct ck *k)
{
    k->hold = false;
    if (k->msgs.len > 1)
        qsort(k->msgs.ptr, k->msgs.len, sizeof(*k->msgs.ptr), msg_cmp);
    for (size_t i = 0; i < k->msgs.len; i++) {
        k->msg(k->opaque, k->msgs.ptr[i].line);
        free(k->msgs.ptr[i].line);
    }
    ck_msg_vec_reset(&k->msgs);
}
