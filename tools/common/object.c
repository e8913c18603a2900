/* common/object.c: --object (object.h). The list form is qemu's keyval
 * syntax ("secret,id=s0,data=abc": the first element without '=' names the
 * type; ",," is a comma in a value); the JSON form is a flat object of
 * string members ({"qom-type":"secret","id":"s0","data":"abc"}). Checks
 * come in qemu's order with its messages: the type given and known, the
 * id given and an identifier, the type creatable here, then the
 * properties. Secrets live until the process exits.
 * SPDX-License-Identifier: MIT
 */
#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "object.h"

#define MAX_PROPS 16

/* The object types qemu knows (its QAPI ObjectType enumeration). */
static const char *const qom_types[] = {
    "authz-list", "authz-listfile", "authz-pam", "authz-simple", "can-bus", "can-host-socketcan",
    "colo-compare", "cryptodev-backend", "cryptodev-backend-builtin", "cryptodev-vhost-user",
    "dbus-vmstate", "filter-buffer", "filter-dump", "filter-mirror", "filter-redirector",
    "filter-replay", "filter-rewriter", "input-barrier", "input-linux", "iothread", "main-loop",
    "memory-backend-epc", "memory-backend-file", "memory-backend-memfd", "memory-backend-ram",
    "pef-guest", "pr-manager-helper", "qtest", "rng-builtin", "rng-egd", "rng-random",
    "s390-pv-guest", "secret", "secret_keyring", "sev-guest", "thread-context", "throttle-group",
    "tls-creds-anon", "tls-creds-psk", "tls-creds-x509", "tls-cipher-suites", "x-remote-object",
    "x-vfio-user-server",
};

struct secret {
    char *id;
    char *data;
    size_t len;
    struct secret *next;
};
static struct secret *secrets;

struct props {
    char *buf;
    const char *k[MAX_PROPS], *v[MAX_PROPS];
    bool str[MAX_PROPS];       /* JSON: the value was a string */
    int n;
};

const char *tool_secret(const char *id, size_t *len)
{
    for (struct secret *s = secrets; s; s = s->next)
        if (!strcmp(s->id, id)) {
            *len = s->len;
            return s->data;
        }
    return NULL;
}

static const char *prop(const struct props *p, const char *k)
{
    for (int i = 0; i < p->n; i++)
        if (!strcmp(p->k[i], k))
            return p->v[i];
    return NULL;
}

static int add_prop(struct props *p, const char *k, const char *v, bool str)
{
    if (p->n == MAX_PROPS) {
        tool_error("Too many object properties");
        return -1;
    }
    p->k[p->n] = k;
    p->str[p->n] = str;
    p->v[p->n++] = v;
    return 0;
}

/* keyval: "type,k=v,k=v" with ",," a literal comma. */
static int parse_keyval(char *s, struct props *p)
{
    for (int first = 1; *s; first = 0) {
        char *k = s, *w = s, *eq = NULL;
        for (; *s; s++) {
            if (*s == ',' && s[1] == ',' && (eq || !first)) {   /* not in the type */
                *w++ = *s++;
                continue;
            }
            if (*s == ',')
                break;
            if (*s == '=' && !eq) {
                *w++ = '\0';
                eq = w;
                continue;
            }
            *w++ = *s;
        }
        if (*s)
            s++;
        *w = '\0';
        if (!eq && first) {
            if (add_prop(p, "qom-type", k, true) < 0)
                return -1;
            continue;
        }
        if (!eq && !strcmp(k, "help")) {
            if (add_prop(p, "help", "on", true) < 0)
                return -1;
            continue;
        }
        if (!*k) {
            tool_error("Invalid parameter ''");
            return -1;
        }
        if (!eq) {
            tool_error("Expected '=' after parameter '%s'", k);
            return -1;
        }
        if (add_prop(p, k, eq, true) < 0)
            return -1;
    }
    return 0;
}

/* A JSON string at *s (after its opening quote), unescaped in place. */
static char *json_string(char **s)
{
    char *start = *s, *w = *s;

    for (char *r = *s; *r; r++) {
        if (*r == '"') {
            *w = '\0';
            *s = r + 1;
            return start;
        }
        if (*r == '\\' && r[1])
            r++;
        *w++ = *r;
    }
    return NULL;
}

/* A flat JSON object: string members, others kept as their text. */
static int parse_json(char *s, struct props *p)
{
    s++;
    for (;;) {
        while (isspace((unsigned char)*s) || *s == ',')
            s++;
        if (*s == '}')
            return 0;
        if (*s != '"')
            break;
        s++;
        char *k = json_string(&s);
        while (k && isspace((unsigned char)*s))
            s++;
        if (!k || *s++ != ':')
            break;
        while (isspace((unsigned char)*s))
            s++;
        char *v;
        bool str = *s == '"';
        if (str) {
            s++;
            v = json_string(&s);
        } else {
            v = s;
            while (*s && *s != ',' && *s != '}' && !isspace((unsigned char)*s))
                s++;
            char end = *s;
            *s = '\0';
            if (end)
                s++;
            if (end == '}')
                return add_prop(p, k, v, false);
        }
        if (!v || add_prop(p, k, v, str) < 0)
            return -1;
    }
    tool_error("JSON parse error, invalid keyword '%.20s'", s);
    return -1;
}

/* base64 as the secret's format=base64 decodes it. Returns the length or -1. */
static long b64_decode(const char *in, char *out)
{
    static const char al[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    unsigned acc = 0;
    int bits = 0;
    long n = 0;

    for (; *in && *in != '='; in++) {
        const char *c = strchr(al, *in);
        if (!c || !*in)
            return -1;
        acc = (acc << 6) | (unsigned)(c - al);
        if ((bits += 6) >= 8) {
            bits -= 8;
            out[n++] = (char)((acc >> bits) & 0xff);
        }
    }
    return n;
}

/* The secret's bytes from data= or file=. Returns 0 or -1 (printed). */
static int secret_bytes(const struct props *p, char **out, size_t *len)
{
    const char *data = prop(p, "data"), *file = prop(p, "file");

    if (data) {
        *out = strdup(data);
        *len = strlen(data);
        return *out ? 0 : -1;
    }
    FILE *f = fopen(file, "rb");
    if (!f) {
        tool_error("Unable to read %s: Failed to open file \xe2\x80\x9c%s\xe2\x80\x9d: %s", file, file,
                   strerror(errno));
        return -1;
    }
    size_t cap = 4096, n = 0;
    char *b = malloc(cap + 1);
    for (size_t got; b && (got = fread(b + n, 1, cap - n, f)) > 0;) {
        n += got;
        char *nb = n == cap ? realloc(b, (cap *= 2) + 1) : b;
        if (!nb)
            free(b);
        b = nb;
    }
    fclose(f);
    if (!b)
        return -1;
    b[n] = '\0';
    *out = b;
    *len = n;
    return 0;
}

/* Create a secret from its checked properties. */
static int add_secret(const struct props *p, const char *id)
{
    static const char *const allowed[] = { "qom-type", "id", "data", "file", "format", "iv", "keyid" };
    const char *fmt = prop(p, "format");

    for (int i = 0; i < p->n; i++) {
        size_t j = 0;
        while (j < sizeof(allowed) / sizeof(allowed[0]) && strcmp(p->k[i], allowed[j]))
            j++;
        if (j == sizeof(allowed) / sizeof(allowed[0])) {
            tool_error("Parameter '%s' is unexpected", p->k[i]);
            return -1;
        }
        if (!p->str[i]) {
            tool_error("Invalid parameter type for '%s', expected: string", p->k[i]);
            return -1;
        }
    }
    if (fmt && strcmp(fmt, "raw") && strcmp(fmt, "base64")) {
        tool_error("Parameter 'format' does not accept value '%s'", fmt);
        return -1;
    }
    if (!prop(p, "data") == !prop(p, "file")) {
        tool_error(prop(p, "data") ? "'file' and 'data' are mutually exclusive"
                                   : "Either 'file' or 'data' must be provided");
        return -1;
    }
    const char *kid = prop(p, "keyid");
    size_t kl;
    if (kid && !tool_secret(kid, &kl)) {
        tool_error("No secret with id '%s'", kid);
        return -1;
    }
    if (kid) {
        tool_error("Secret '%s': secrets encrypted with another secret (keyid) are not supported", id);
        return -1;
    }
    struct secret *s = calloc(1, sizeof(*s));
    if (!s || secret_bytes(p, &s->data, &s->len) < 0 || !(s->id = strdup(id))) {
        if (s)
            free(s->data);
        free(s);
        return -1;
    }
    if (fmt && !strcmp(fmt, "base64")) {
        long n = b64_decode(s->data, s->data);
        if (n < 0) {
            tool_error("Secret '%s': invalid base64 data", id);
            free(s->data);
            free(s->id);
            free(s);
            return -1;
        }
        s->len = (size_t)n;
    }
    s->next = secrets;
    secrets = s;
    return 0;
}

const char *tool_default_secret(size_t *len)
{
    static char *data;
    static size_t dlen;
    static bool done;
    const char *v = getenv("FASTQCOW_SECRET"), *f = getenv("FASTQCOW_SECRET_FILE");

    if (!done) {
        done = true;
        if (v) {
            data = strdup(v);
            dlen = strlen(v);
        } else if (f) {
            struct props p = { .n = 0 };
            add_prop(&p, "file", f, true);
            if (secret_bytes(&p, &data, &dlen) < 0)
                data = NULL;
        }
    }
    *len = dlen;
    return data;
}

const char *tool_secret_or_err(const char *id, size_t *len, char *err, size_t errlen)
{
    const char *s = tool_secret(id, len);

    if (!s)
        snprintf(err, errlen, "No secret with id '%s'", id);
    return s;
}

/* Check the properties in qemu's order and create the object. */
static int create(const struct props *p)
{
    const char *type = prop(p, "qom-type"), *id = prop(p, "id");
    size_t i = 0, kl;

    if (prop(p, "help") || (type && !strcmp(type, "help"))) {
        if (type && !strcmp(type, "secret") && prop(p, "help"))
            printf("secret options:\n  data=<string>\n  file=<string>\n"
                   "  format=<QCryptoSecretFormat>\n  iv=<string>\n  keyid=<string>\n");
        else
            printf("List of user creatable objects:\n  secret\n");
        return 1;
    }
    if (!type) {
        tool_error("Parameter 'qom-type' is missing");
        return -1;
    }
    while (i < sizeof(qom_types) / sizeof(qom_types[0]) && strcmp(type, qom_types[i]))
        i++;
    if (i == sizeof(qom_types) / sizeof(qom_types[0])) {
        tool_error("Parameter 'qom-type' does not accept value '%s'", type);
        return -1;
    }
    if (!id) {
        tool_error("Parameter 'id' is missing");
        return -1;
    }
    if (!tool_is_ident(id)) {
        tool_error("Parameter 'id' expects an identifier");
        fprintf(stderr, "Identifiers consist of letters, digits, '-', '.', '_', starting with a letter.\n");
        return -1;
    }
    if (strcmp(type, "secret")) {
        tool_error("invalid object type: %s", type);
        return -1;
    }
    if (tool_secret(id, &kl)) {
        tool_error("attempt to add duplicate property '%s' to object (type 'container')", id);
        return -1;
    }
    return add_secret(p, id);
}

int tool_object_add(const char *spec)
{
    struct props p = { .buf = strdup(spec) };
    int r;

    if (!p.buf)
        return -1;
    r = p.buf[0] == '{' ? parse_json(p.buf, &p) : parse_keyval(p.buf, &p);
    if (r == 0)
        r = create(&p);
    free(p.buf);
    return r;
}
