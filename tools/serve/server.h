/* server.h: the NBD server's state, shared by its files:
 *
 *   serve.c     the subcommand: startup, --fork, signals, the main loop
 *   options.c   command-line parsing into struct serve_opts
 *   exports.c   the images opened, and what clients are told of them
 *   listen.c    listening sockets (TCP, Unix, socket activation), accept
 *   conn.c      a connection: input, handshake, output queue, lifetime
 *   xmit.c      the transmission phase: requests to image calls, replies
 *   meta.c      metadata contexts and block status, hole detection
 *   tls.c       TLS credentials and sessions (GnuTLS)
 *   handshake.c, request.c (proto.h): the protocol as pure functions
 *
 * One thread: the context's loop (fq_ctx_run) drives the sockets (watched
 * with fq_watch_*) and the image I/O together. A request read from a
 * client becomes an asynchronous image call; its completion queues the
 * reply, and the main loop sends every connection's queued replies after
 * each round of completions (one sendmsg for many replies). Memory is
 * bounded per connection and in total: a connection over its share stops
 * being read until its replies are sent.
 * SPDX-License-Identifier: MIT
 */
#ifndef FQ_SERVE_SERVER_H
#define FQ_SERVE_SERVER_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "fastqcow.h"
#include "proto.h"
#include "../common/bufpool.h"

enum discard_mode { DISCARD_IGNORE, DISCARD_UNMAP };
enum dz_mode { DZ_OFF, DZ_ON, DZ_UNMAP };

/* Metadata context kinds (meta.c); a dirty bitmap's context has the
 * bitmap's name as its argument. */
enum meta_kind { META_BASE_ALLOCATION, META_ALLOCATION_DEPTH, META_DIRTY_BITMAP };
#define SERVE_MAX_BITMAPS 16

#define SERVE_MAX_EXPORTS 64

/* One export as given on the command line. */
struct export_opts {
    const char *name;
    const char *image;
    const char *description;
};

struct serve_opts {
    struct export_opts exports[SERVE_MAX_EXPORTS];
    int nexports;
    const char *port;          /* NULL = 10809 */
    const char *bind;          /* NULL = 0.0.0.0 */
    const char *socket;        /* Unix socket path */
    const char *format;
    const char *pid_file;
    const char *tls_creds;     /* directory, or the id of a --object */
    const char *tls_dir;       /* resolved directory */
    int tls_verify_peer;       /* -1 = default (x509: on when ca-cert.pem exists) */
    const char *tls_psk_user;
    enum fq_cache_mode cache;
    enum fq_engine_kind engine;
    enum discard_mode discard;
    enum dz_mode detect_zeroes;
    uint64_t offset;           /* -o: start of the export in the image */
    int shared;                /* -e: connections at once, 0 = no limit */
    int handshake_ms;          /* --handshake-limit */
    bool readonly;
    bool persistent;
    bool allocation_depth;
    const char *bitmaps[SERVE_MAX_BITMAPS];   /* -B: qemu:dirty-bitmap:NAME */
    int nbitmaps;
    bool fork;
    bool snapshot;             /* -s: writes go to a temporary overlay */
    bool image_opts;
    bool verbose;
    bool activation;           /* LISTEN_FDS given */
};

/* Parse the command line (options.c). Returns 0, 1 after an error
 * message, or 2 after --help (exit 0). */
int serve_parse_args(int argc, char **argv, struct serve_opts *o);

struct export {
    char *name;
    char *description;
    struct fq_image *img;
    char *overlay;             /* -s: the temporary file to remove */
    uint64_t offset;
    uint64_t size;
    bool readonly;
    bool qcow2;
    bool fast_zero;            /* zeroing never writes zeros */
    const char *meta[NBD_META_MAX];
    enum meta_kind meta_kind[NBD_META_MAX];
    const char *meta_arg[NBD_META_MAX];   /* META_DIRTY_BITMAP: its name */
    char *meta_owned[SERVE_MAX_BITMAPS];  /* context names made for -B */
    unsigned nmeta;
};

struct conn;
struct tls_creds;

struct server {
    struct fq_ctx *ctx;
    const struct serve_opts *o;
    struct export *exports;
    struct nbd_export_info *infos;
    size_t nexports;
    struct nbd_hs_config hs_cfg;
    int *lfd;                  /* listening sockets */
    struct fq_watch **lwatch;
    size_t nlisten;
    bool listen_paused;
    struct conn *conns;        /* every connection not yet freed */
    unsigned nconns;           /* those counted against -e */
    unsigned max_conns;
    struct conn *flush_head;   /* connections with replies to send */
    struct tls_creds *tls;
    struct bufpool *pool;
    uint64_t mem_used, mem_cap, conn_mem_cap;
    int sigfd;                 /* signalfd of the stop signals */
    bool stopping;
    bool served;               /* a client connected once */
    int exit_code;
};

/* ---- exports.c ---- */
/* Open every export's image on s->ctx and describe it for the handshake;
 * messages on failure. Returns 0 or -1. */
int exports_open(struct server *s);
/* Flush and close them; -1 if a flush failed. */
int exports_close(struct server *s);

/* ---- listen.c ---- */
/* Open the listening sockets (or take the activated ones); messages on
 * failure. Returns 0 or -1. */
int listen_open(struct server *s);
/* Watch them from the loop; accept connections while below the limit. */
int listen_start(struct server *s);
/* Stop or resume accepting (the connection limit). */
void listen_pause(struct server *s, bool pause);
void listen_close(struct server *s);

/* ---- conn.c ---- */
/* A new connection on socket fd (takes it). */
void conn_new(struct server *s, int fd);
/* Send what every connection has queued. */
void conn_flush_all(struct server *s);
/* Expire handshakes and stalled clients; returns ms to the next check. */
int conn_timers(struct server *s, uint64_t now_ns);
/* Shutdown: no new requests; connections close once drained. */
void conn_stop_all(struct server *s);
/* Drop every connection at once (after the drain deadline). */
void conn_kill_all(struct server *s);

/* ---- tls.c ---- */
/* Load credentials from the directory in o->tls_dir (x509 files as qemu
 * lays them out, or keys.psk); message on failure. NULL = error. */
struct tls_creds *tls_creds_load(const struct serve_opts *o);
void tls_creds_free(struct tls_creds *t);
/* A server session over socket fd (nonblocking); NULL on failure. */
void *tls_session_new(struct tls_creds *t, int fd);
void tls_session_free(void *sess);
/* Drive the handshake: 0 when done, -EAGAIN to be called again when the
 * socket is ready (tls_want_write says for what), -EPROTO on failure. */
int tls_handshake(void *sess);
bool tls_want_write(void *sess);
/* Decrypted bytes: > 0, 0 at the end of the stream, -EAGAIN, -errno. */
ssize_t tls_recv(void *sess, void *buf, size_t len);
/* Bytes decrypted and waiting (the socket need not be readable). */
size_t tls_pending(void *sess);
/* Take bytes of the pieces into records (copied); returns the bytes
 * taken, -EAGAIN when records already made cannot leave yet, -errno. */
ssize_t tls_send(void *sess, const struct iovec *iov, int n);
/* Send the records made: 0 when all left, -EAGAIN, -errno. */
int tls_flush(void *sess);
/* Tell the peer the session ends (best effort, never waits). */
void tls_bye(void *sess);

/* ---- meta.c ---- */
/* The contexts an export offers (base:allocation, qemu:allocation-depth
 * with -A, qemu:dirty-bitmap:NAME for each -B, checked usable: a message
 * and -1 if not). */
int meta_export_init(struct export *e, const struct serve_opts *o);
/* Free what meta_export_init made. */
void meta_export_free(struct export *e);
/* Encode one NBD_REPLY_TYPE_BLOCK_STATUS chunk per selected context for
 * [off, off+len) into `out` (the last with flag DONE). Returns 0 or a
 * negative errno. */
int meta_block_status(struct export *e, uint64_t sel, uint64_t handle, uint64_t off,
                      uint32_t len, bool req_one, struct nbd_buf *out);

/* A run of a read: data, or zeros (sent as a hole). */
struct read_run {
    uint32_t off;              /* from the start of the request */
    uint32_t len;
    bool zero;
};
/* Split [off, off+len) into data and zero runs, at most `max` of them
 * (the rest is one data run). Returns the number of runs, or negative
 * errno. */
int meta_read_runs(struct export *e, uint64_t off, uint32_t len, struct read_run *runs, int max);

#endif
