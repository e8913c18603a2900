/* tls.c: TLS for NBD's STARTTLS, through GnuTLS, on nonblocking sockets.
 *
 * Credentials come from one directory, laid out as qemu lays out its
 * tls-creds objects: x509 (server-cert.pem, server-key.pem, and
 * ca-cert.pem to check client certificates, which is on by default when
 * it exists) or PSK (keys.psk: one "username:hexkey" line per client, as
 * psktool writes it). A client that cannot prove itself never gets past
 * the TLS handshake; before it, the handshake (handshake.c) answers
 * nothing but STARTTLS.
 *
 * Sending copies the queued pieces into records of up to 16 KiB (one send
 * per record instead of one per reply header); a record that could not
 * leave is sent again, unchanged, when the socket is writable.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <gnutls/gnutls.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../common/cli.h"
#include "server.h"

#define STAGE 16384

struct tls_creds {
    bool psk;
    bool verify_peer;
    gnutls_certificate_credentials_t x509;
    gnutls_psk_server_credentials_t pskc;
    gnutls_priority_t prio;
};

struct tls_sess {
    gnutls_session_t s;
    uint8_t stage[STAGE];
    size_t staged;
    size_t sending;            /* a send of stage[0..sending) to finish first */
};

/* Whether dir/name exists; the full path goes to buf. */
static bool file_in(const char *dir, const char *name, char *buf, size_t len)
{
    struct stat st;

    snprintf(buf, len, "%s/%s", dir, name);
    return stat(buf, &st) == 0;
}

struct tls_creds *tls_creds_load(const struct serve_opts *o)
{
    struct tls_creds *t = calloc(1, sizeof(*t));
    char path[4096], key[4096], ca[4096];
    const char *dir = o->tls_dir;
    int r;

    if (!t)
        return NULL;
    gnutls_global_init();
    if (file_in(dir, "keys.psk", path, sizeof(path))) {
        t->psk = true;
        if ((r = gnutls_psk_allocate_server_credentials(&t->pskc)) < 0 ||
            (r = gnutls_psk_set_server_credentials_file(t->pskc, path)) < 0) {
            tool_error("TLS: cannot load PSK keys from %s: %s", path, gnutls_strerror(r));
            goto fail;
        }
        r = gnutls_priority_init(&t->prio, "NORMAL:+ECDHE-PSK:+DHE-PSK:+PSK", NULL);
    } else {
        if (!file_in(dir, "server-cert.pem", path, sizeof(path)) ||
            !file_in(dir, "server-key.pem", key, sizeof(key))) {
            tool_error("TLS: %s has neither keys.psk nor server-cert.pem and server-key.pem", dir);
            goto fail;
        }
        bool have_ca = file_in(dir, "ca-cert.pem", ca, sizeof(ca));
        t->verify_peer = o->tls_verify_peer < 0 ? have_ca : o->tls_verify_peer;
        if (t->verify_peer && !have_ca) {
            tool_error("TLS: verifying clients needs %s/ca-cert.pem", dir);
            goto fail;
        }
        if ((r = gnutls_certificate_allocate_credentials(&t->x509)) < 0 ||
            (r = gnutls_certificate_set_x509_key_file(t->x509, path, key, GNUTLS_X509_FMT_PEM)) < 0) {
            tool_error("TLS: cannot load %s and %s: %s", path, key, gnutls_strerror(r));
            goto fail;
        }
        if (have_ca && (r = gnutls_certificate_set_x509_trust_file(t->x509, ca, GNUTLS_X509_FMT_PEM)) < 0) {
            tool_error("TLS: cannot load %s: %s", ca, gnutls_strerror(r));
            goto fail;
        }
        if (file_in(dir, "ca-crl.pem", path, sizeof(path)) &&
            (r = gnutls_certificate_set_x509_crl_file(t->x509, path, GNUTLS_X509_FMT_PEM)) < 0) {
            tool_error("TLS: cannot load %s: %s", path, gnutls_strerror(r));
            goto fail;
        }
        r = gnutls_priority_init(&t->prio, "NORMAL", NULL);
    }
    if (r < 0) {
        tool_error("TLS: priority: %s", gnutls_strerror(r));
        goto fail;
    }
    return t;
fail:
    tls_creds_free(t);
    return NULL;
}

void tls_creds_free(struct tls_creds *t)
{
    if (!t)
        return;
    if (t->x509)
        gnutls_certificate_free_credentials(t->x509);
    if (t->pskc)
        gnutls_psk_free_server_credentials(t->pskc);
    if (t->prio)
        gnutls_priority_deinit(t->prio);
    free(t);
    gnutls_global_deinit();
}

void *tls_session_new(struct tls_creds *t, int fd)
{
    struct tls_sess *ts = calloc(1, sizeof(*ts));

    if (!ts)
        return NULL;
    if (gnutls_init(&ts->s, GNUTLS_SERVER | GNUTLS_NONBLOCK) < 0) {
        free(ts);
        return NULL;
    }
    int r = gnutls_priority_set(ts->s, t->prio);
    if (r >= 0 && t->psk)
        r = gnutls_credentials_set(ts->s, GNUTLS_CRD_PSK, t->pskc);
    else if (r >= 0)
        r = gnutls_credentials_set(ts->s, GNUTLS_CRD_CERTIFICATE, t->x509);
    if (r >= 0 && !t->psk && t->verify_peer) {
        gnutls_certificate_server_set_request(ts->s, GNUTLS_CERT_REQUIRE);
        gnutls_session_set_verify_cert(ts->s, NULL, 0);
    }
    if (r < 0) {
        gnutls_deinit(ts->s);
        free(ts);
        return NULL;
    }
    gnutls_transport_set_int(ts->s, fd);
    return ts;
}

void tls_session_free(void *sess)
{
    struct tls_sess *ts = sess;

    if (!ts)
        return;
    gnutls_deinit(ts->s);
    free(ts);
}

int tls_handshake(void *sess)
{
    struct tls_sess *ts = sess;

    for (;;) {
        int r = gnutls_handshake(ts->s);
        if (r == GNUTLS_E_SUCCESS)
            return 0;
        if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED)
            return -EAGAIN;
        if (gnutls_error_is_fatal(r))
            return -EPROTO;
    }
}

bool tls_want_write(void *sess)
{
    struct tls_sess *ts = sess;

    return ts->staged || gnutls_record_get_direction(ts->s) == 1;
}

ssize_t tls_recv(void *sess, void *buf, size_t len)
{
    struct tls_sess *ts = sess;

    for (;;) {
        ssize_t r = gnutls_record_recv(ts->s, buf, len);
        if (r >= 0)
            return r;
        if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED)
            return -EAGAIN;
        if (r == GNUTLS_E_PREMATURE_TERMINATION)
            return 0;
        if (!gnutls_error_is_fatal((int)r))
            continue;          /* a warning alert, a rehandshake request */
        return -EIO;
    }
}

size_t tls_pending(void *sess)
{
    return gnutls_record_check_pending(((struct tls_sess *)sess)->s);
}

int tls_flush(void *sess)
{
    struct tls_sess *ts = sess;

    while (ts->staged) {
        /* an interrupted send is resumed with exactly the same bytes */
        size_t len = ts->sending ? ts->sending : ts->staged;
        ssize_t r = gnutls_record_send(ts->s, ts->stage, len);
        if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED) {
            ts->sending = len;
            return -EAGAIN;
        }
        ts->sending = 0;
        if (r < 0)
            return -EIO;
        if ((size_t)r < ts->staged)
            memmove(ts->stage, ts->stage + r, ts->staged - (size_t)r);
        ts->staged -= (size_t)r;
    }
    return 0;
}

ssize_t tls_send(void *sess, const struct iovec *iov, int n)
{
    struct tls_sess *ts = sess;
    size_t taken = 0;

    if (ts->sending) {
        int r = tls_flush(ts);
        if (r < 0)
            return r;
    }
    for (int i = 0; i < n; i++) {
        size_t done = 0;
        while (done < iov[i].iov_len) {
            if (ts->staged == STAGE) {
                int r = tls_flush(ts);
                if (r == -EAGAIN)
                    return taken ? (ssize_t)taken : -EAGAIN;
                if (r < 0)
                    return r;
            }
            size_t k = iov[i].iov_len - done;
            if (k > STAGE - ts->staged)
                k = STAGE - ts->staged;
            memcpy(ts->stage + ts->staged, (const uint8_t *)iov[i].iov_base + done, k);
            ts->staged += k;
            done += k;
            taken += k;
        }
    }
    return (ssize_t)taken;
}

void tls_bye(void *sess)
{
    struct tls_sess *ts = sess;

    tls_flush(ts);
    gnutls_bye(ts->s, GNUTLS_SHUT_WR);
}
