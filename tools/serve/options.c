/* options.c: fastqcow serve's command line, named as qemu-nbd's options
 * where they mean the same (GNU order: options anywhere), plus
 * --export NAME=IMAGE for more exports and --handshake-limit. TLS
 * credentials are named either by directory (--tls-creds DIR) or, as
 * qemu-nbd does, through --object tls-creds-x509|tls-creds-psk,id=ID,dir=DIR
 * and --tls-creds ID.
 * SPDX-License-Identifier: MIT
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../common/cli.h"
#include "server.h"

#define MAX_OBJECTS 8

struct tls_object {
    char *id, *dir;
    int verify_peer;           /* -1 = default */
    bool psk;
};

static void usage(void)
{
    printf("usage: fastqcow serve [OPTIONS] IMAGE\n"
           "Serve IMAGE over NBD (qemu-nbd's options where they mean the same).\n\n"
           "Connection:\n"
           "  -p, --port=PORT          TCP port to listen on (default 10809)\n"
           "  -b, --bind=ADDR          address to bind to (default 0.0.0.0)\n"
           "  -k, --socket=PATH        listen on a Unix socket instead\n"
           "  -e, --shared=NUM         clients at once (default 1, 0 = no limit)\n"
           "  -t, --persistent         keep serving after the last client leaves\n"
           "  -x, --export-name=NAME   name of the export (default \"\")\n"
           "  -D, --description=TEXT   description of the export\n"
           "      --export=NAME=IMAGE  serve one more image under NAME (repeatable)\n"
           "      --handshake-limit=N  drop clients that have not finished the handshake\n"
           "                           after N seconds (default 10, 0 = never)\n"
           "      --tls-creds=DIR|ID   require TLS: x509 files (server-cert.pem,\n"
           "                           server-key.pem, ca-cert.pem) or keys.psk in DIR,\n"
           "                           or the --object of that id\n"
           "      --object tls-creds-x509|tls-creds-psk,id=ID,dir=DIR[,verify-peer=on|off]\n"
           "      --fork               fork off the server once it listens\n"
           "      --pid-file=PATH      write the process id once listening\n"
           "  -v, --verbose            log connections and errors to stderr\n\n"
           "Image:\n"
           "  -f, --format=FMT         image format (qcow2, raw; default: probe)\n"
           "  -r, --read-only          export read-only\n"
           "  -s, --snapshot           write to a temporary overlay, dropped at exit\n"
           "  -o, --offset=OFFSET      export the image from OFFSET on\n"
           "  -A, --allocation-depth   offer the qemu:allocation-depth context\n"
           "  -B, --bitmap=NAME        offer qemu:dirty-bitmap:NAME (repeatable)\n"
           "  -n, --nocache            same as --cache=none\n"
           "      --cache=MODE         none, writeback (default), writethrough,\n"
           "                           directsync, unsafe\n"
           "      --aio=MODE, -i MODE  I/O engine: io_uring (native), threads, sync\n"
           "      --discard=MODE       ignore (default) or unmap\n"
           "      --detect-zeroes=MODE off (default), on, unmap\n"
           "      --image-opts         IMAGE is driver=FMT,file.filename=PATH,...\n\n"
           "  -h, --help               this help\n");
}

enum {
    OPT_CACHE = 256, OPT_AIO, OPT_DISCARD, OPT_DZ, OPT_FORK, OPT_PIDFILE, OPT_TLS,
    OPT_OBJECT, OPT_IMAGE_OPTS, OPT_EXPORT, OPT_HS_LIMIT, OPT_TLS_AUTHZ,
};

static const struct option longopts[] = {
    { "help", no_argument, NULL, 'h' },
    { "port", required_argument, NULL, 'p' },
    { "bind", required_argument, NULL, 'b' },
    { "socket", required_argument, NULL, 'k' },
    { "shared", required_argument, NULL, 'e' },
    { "persistent", no_argument, NULL, 't' },
    { "export-name", required_argument, NULL, 'x' },
    { "description", required_argument, NULL, 'D' },
    { "format", required_argument, NULL, 'f' },
    { "read-only", no_argument, NULL, 'r' },
    { "snapshot", no_argument, NULL, 's' },
    { "load-snapshot", required_argument, NULL, 'l' },
    { "offset", required_argument, NULL, 'o' },
    { "allocation-depth", no_argument, NULL, 'A' },
    { "bitmap", required_argument, NULL, 'B' },
    { "nocache", no_argument, NULL, 'n' },
    { "verbose", no_argument, NULL, 'v' },
    { "connect", required_argument, NULL, 'c' },
    { "disconnect", no_argument, NULL, 'd' },
    { "list", no_argument, NULL, 'L' },
    { "cache", required_argument, NULL, OPT_CACHE },
    { "aio", required_argument, NULL, OPT_AIO },
    { "discard", required_argument, NULL, OPT_DISCARD },
    { "detect-zeroes", required_argument, NULL, OPT_DZ },
    { "fork", no_argument, NULL, OPT_FORK },
    { "pid-file", required_argument, NULL, OPT_PIDFILE },
    { "tls-creds", required_argument, NULL, OPT_TLS },
    { "tls-authz", required_argument, NULL, OPT_TLS_AUTHZ },
    { "object", required_argument, NULL, OPT_OBJECT },
    { "image-opts", no_argument, NULL, OPT_IMAGE_OPTS },
    { "export", required_argument, NULL, OPT_EXPORT },
    { "handshake-limit", required_argument, NULL, OPT_HS_LIMIT },
    { NULL, 0, NULL, 0 },
};

/* Parse "tls-creds-x509,id=ID,dir=DIR,..." into obj. Returns 0 or -1. */
static int parse_object(const char *arg, struct tls_object *obj)
{
    char *s = strdup(arg), *save = NULL, *tok;
    int first = 1, r = 0;

    if (!s)
        return -1;
    memset(obj, 0, sizeof(*obj));
    obj->verify_peer = -1;
    for (tok = strtok_r(s, ",", &save); tok; tok = strtok_r(NULL, ",", &save), first = 0) {
        char *eq = strchr(tok, '=');
        if (first && !eq) {
            if (!strcmp(tok, "tls-creds-x509"))
                obj->psk = false;
            else if (!strcmp(tok, "tls-creds-psk"))
                obj->psk = true;
            else {
                tool_error("--object %s is not supported (tls-creds-x509 and tls-creds-psk are)", tok);
                r = -1;
                break;
            }
            continue;
        }
        if (!eq) {
            tool_error("--object: '%s' is not key=value", tok);
            r = -1;
            break;
        }
        *eq++ = '\0';
        if (!strcmp(tok, "qom-type"))
            obj->psk = !strcmp(eq, "tls-creds-psk");
        else if (!strcmp(tok, "id"))
            obj->id = strdup(eq);
        else if (!strcmp(tok, "dir"))
            obj->dir = strdup(eq);
        else if (!strcmp(tok, "verify-peer"))
            obj->verify_peer = !strcmp(eq, "on") || !strcmp(eq, "yes") || !strcmp(eq, "true");
        else if (!strcmp(tok, "endpoint")) {
            if (strcmp(eq, "server")) {
                tool_error("--object: endpoint must be server");
                r = -1;
                break;
            }
        } else if (!strcmp(tok, "username") || !strcmp(tok, "priority")) {
            /* a server takes every user of keys.psk; the default priority */
        } else {
            tool_error("--object: unknown property '%s'", tok);
            r = -1;
            break;
        }
    }
    free(s);
    if (!r && (!obj->id || !obj->dir)) {
        tool_error("--object needs id= and dir=");
        r = -1;
    }
    return r;
}

/* Parse an "on/off/..." mode word among `names`; -1 if none. */
static int parse_word(const char *v, const char *const *names, int n)
{
    for (int i = 0; i < n; i++)
        if (!strcmp(v, names[i]))
            return i;
    return -1;
}

int serve_parse_args(int argc, char **argv, struct serve_opts *o)
{
    static struct tls_object objs[MAX_OBJECTS];
    int nobjs = 0, c;
    const char *name = "", *desc = NULL;
    uint64_t v;

    memset(o, 0, sizeof(*o));
    o->shared = 1;
    o->handshake_ms = 10000;
    o->tls_verify_peer = -1;
    o->engine = FQ_ENGINE_DEFAULT;
    o->cache = FQ_CACHE_WRITEBACK;
    optind = 1;
    while ((c = getopt_long(argc, argv, "hp:b:k:e:tx:D:f:rsl:o:AB:nvc:dLi:", longopts, NULL)) != -1) {
        switch (c) {
        case 'h':
            usage();
            return 2;
        case 'p':
            o->port = optarg;
            break;
        case 'b':
            o->bind = optarg;
            break;
        case 'k':
            o->socket = optarg;
            break;
        case 'e': {
            char *end;
            long n = strtol(optarg, &end, 10);
            if (*end || n < 0 || n > 65536) {
                tool_error("Invalid shared device number '%s'", optarg);
                return 1;
            }
            o->shared = (int)n;
            break;
        }
        case 't':
            o->persistent = true;
            break;
        case 'x':
            name = optarg;
            break;
        case 'D':
            desc = optarg;
            break;
        case 'f':
            o->format = optarg;
            break;
        case 'r':
            o->readonly = true;
            break;
        case 's':
            o->snapshot = true;
            break;
        case 'o':
            if (tool_parse_size(optarg, &v, "offset") < 0)
                return 1;
            o->offset = v;
            break;
        case 'A':
            o->allocation_depth = true;
            break;
        case 'n':
            o->cache = FQ_CACHE_NONE;
            break;
        case 'v':
            o->verbose = true;
            break;
        case 'i':
        case OPT_AIO:
            if (tool_parse_engine(optarg, &o->engine) < 0)
                return 1;
            break;
        case OPT_CACHE:
            if (tool_parse_cache(optarg, &o->cache, "cache") < 0)
                return 1;
            break;
        case OPT_DISCARD: {
            static const char *const w[] = { "ignore", "unmap", "off", "on" };
            int k = parse_word(optarg, w, 4);
            if (k < 0) {
                tool_error("Invalid discard mode `%s'", optarg);
                return 1;
            }
            o->discard = k == 1 || k == 3 ? DISCARD_UNMAP : DISCARD_IGNORE;
            break;
        }
        case OPT_DZ: {
            static const char *const w[] = { "off", "on", "unmap" };
            int k = parse_word(optarg, w, 3);
            if (k < 0) {
                tool_error("Invalid detect-zeroes mode '%s'", optarg);
                return 1;
            }
            o->detect_zeroes = (enum dz_mode)k;
            break;
        }
        case OPT_FORK:
            o->fork = true;
            break;
        case OPT_PIDFILE:
            o->pid_file = optarg;
            break;
        case OPT_TLS:
            o->tls_creds = optarg;
            break;
        case OPT_OBJECT:
            if (nobjs == MAX_OBJECTS || parse_object(optarg, &objs[nobjs]) < 0)
                return 1;
            nobjs++;
            break;
        case OPT_IMAGE_OPTS:
            o->image_opts = true;
            break;
        case OPT_HS_LIMIT: {
            char *end;
            long n = strtol(optarg, &end, 10);
            if (*end || n < 0 || n > 86400) {
                tool_error("Invalid handshake limit '%s'", optarg);
                return 1;
            }
            o->handshake_ms = (int)n * 1000;
            break;
        }
        case OPT_EXPORT: {
            char *eq = strchr(optarg, '=');
            if (!eq || eq == optarg || !eq[1]) {
                tool_error("--export needs NAME=IMAGE");
                return 1;
            }
            if (o->nexports == SERVE_MAX_EXPORTS - 1) {
                tool_error("too many exports");
                return 1;
            }
            *eq = '\0';
            o->exports[o->nexports].name = optarg;
            o->exports[o->nexports++].image = eq + 1;
            break;
        }
        case 'l':
            tool_error("--load-snapshot is not supported: export a copy made with "
                       "'fastqcow convert -l' instead");
            return 1;
        case 'B':
            if (o->nbitmaps == SERVE_MAX_BITMAPS) {
                tool_error("At most %d bitmaps can be exported", SERVE_MAX_BITMAPS);
                return 1;
            }
            o->bitmaps[o->nbitmaps++] = optarg;
            break;
        case 'c':
        case 'd':
            tool_error("the kernel NBD client (-c/-d) is not supported: connect with nbd-client");
            return 1;
        case 'L':
            tool_error("--list is not supported: use nbdinfo --list");
            return 1;
        case OPT_TLS_AUTHZ:
            tool_error("--tls-authz is not supported: x509 client certificates are checked "
                       "against ca-cert.pem");
            return 1;
        default:
            tool_error("Try 'fastqcow serve --help' for more information.");
            return 1;
        }
    }
    if (optind < argc) {
        memmove(&o->exports[1], &o->exports[0], (size_t)o->nexports * sizeof(o->exports[0]));
        o->exports[0] = (struct export_opts){ name, argv[optind++], desc };
        o->nexports++;
    } else if (o->nexports == 0) {
        tool_error("Expected one argument (filename)");
        return 1;
    } else if (desc) {
        o->exports[0].description = desc;
    }
    if (optind < argc) {
        tool_error("Unexpected argument '%s'", argv[optind]);
        return 1;
    }
    for (int i = 0; i < o->nexports; i++) {
        if (strlen(o->exports[i].name) > NBD_MAX_STRING ||
            (o->exports[i].description && strlen(o->exports[i].description) > NBD_MAX_STRING)) {
            tool_error("export names and descriptions are at most %d bytes", NBD_MAX_STRING);
            return 1;
        }
        for (int j = 0; j < i; j++)
            if (!strcmp(o->exports[i].name, o->exports[j].name)) {
                tool_error("two exports named '%s'", o->exports[i].name);
                return 1;
            }
    }
    const char *act = getenv("LISTEN_FDS");
    o->activation = act && getenv("LISTEN_PID") && atol(getenv("LISTEN_PID")) == (long)getpid();
    if (o->activation && (o->socket || o->port || o->bind)) {
        tool_error("-k, -p and -b cannot be used with socket activation");
        return 1;
    }
    if (o->socket && (o->port || o->bind)) {
        tool_error("-k cannot be used with -p or -b");
        return 1;
    }
    if (o->tls_creds) {
        o->tls_dir = o->tls_creds;
        for (int i = 0; i < nobjs; i++)
            if (!strcmp(objs[i].id, o->tls_creds)) {
                o->tls_dir = objs[i].dir;
                o->tls_verify_peer = objs[i].verify_peer;
            }
        struct stat st;
        if (stat(o->tls_dir, &st) < 0 || !S_ISDIR(st.st_mode)) {
            tool_error("--tls-creds %s: no --object of that id and no such directory", o->tls_creds);
            return 1;
        }
    }
    return 0;
}
