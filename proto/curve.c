#include "curve.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

int curve_read_key(const char *arg, char out[41], sl_err *err)
{
    FILE *f = fopen(arg, "r");
    if (!f) {
        if (strlen(arg) != 40)
            return sl_err_set(err, "\"%.60s\" is neither a key file nor a 40-character Z85 key",
                              arg);
        memcpy(out, arg, 41);
        return 0;
    }
    char line[256];
    int rc = sl_err_set(err, "no 40-character Z85 key in %s", arg);
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = '\0';
        if (line[0] == '#' || !line[0])
            continue;
        char *k = strrchr(line, ' '); /* "secret: KEY" or just "KEY" */
        k = k ? k + 1 : line;
        if (strlen(k) == 40) {
            memcpy(out, k, 41);
            rc = 0;
        }
        break;
    }
    fclose(f);
    return rc;
}

int curve_server(void *sock, const char *secret, sl_err *err)
{
    int one = 1;
    if (zmq_setsockopt(sock, ZMQ_CURVE_SERVER, &one, sizeof one) ||
        zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, secret, 40))
        return sl_err_set(err, "cannot set the CURVE server key: %s", zmq_strerror(zmq_errno()));
    return 0;
}

int curve_client(void *sock, const char *server_public, const char *secret, sl_err *err)
{
    char pub[41], sec[41];
    if (secret) {
        memcpy(sec, secret, 41);
        if (zmq_curve_public(pub, sec))
            return sl_err_set(err, "the CURVE secret key is not a valid Z85 key");
    } else if (zmq_curve_keypair(pub, sec)) {
        return sl_err_set(err, "cannot make a CURVE key pair: %s", zmq_strerror(zmq_errno()));
    }
    if (zmq_setsockopt(sock, ZMQ_CURVE_SERVERKEY, server_public, 40) ||
        zmq_setsockopt(sock, ZMQ_CURVE_PUBLICKEY, pub, 40) ||
        zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, sec, 40))
        return sl_err_set(err,
                          "cannot set CURVE keys (is the server key a 40-character Z85 "
                          "key?): %s",
                          zmq_strerror(zmq_errno()));
    return 0;
}

struct curve_zap {
    pthread_t t;
    void *sock;
    uint8_t (*keys)[32];
    size_t n;
};

static void *zap_main(void *arg)
{
    curve_zap *z = arg;
    for (;;) {
        zmq_msg_t part[7];
        int n = 0, more = 1;
        while (more && n < 7) {
            zmq_msg_init(&part[n]);
            if (zmq_msg_recv(&part[n], z->sock, 0) < 0) {
                zmq_msg_close(&part[n]);
                for (int i = 0; i < n; i++)
                    zmq_msg_close(&part[i]);
                if (zmq_errno() == EINTR)
                    goto next;
                return NULL; /* context terminated */
            }
            more = zmq_msg_more(&part[n]);
            n++;
        }
        while (more) { /* more frames than a ZAP request has: drop them */
            zmq_msg_t x;
            zmq_msg_init(&x);
            zmq_msg_recv(&x, z->sock, 0);
            more = zmq_msg_more(&x);
            zmq_msg_close(&x);
        }
        {
            int ok = 0;
            if (n >= 7 && zmq_msg_size(&part[5]) == 5 &&
                memcmp(zmq_msg_data(&part[5]), "CURVE", 5) == 0 && zmq_msg_size(&part[6]) == 32)
                for (size_t k = 0; k < z->n && !ok; k++)
                    ok = memcmp(zmq_msg_data(&part[6]), z->keys[k], 32) == 0;
            const char *code = ok ? "200" : "400", *text = ok ? "OK" : "key not allowed";
            zmq_send(z->sock, "1.0", 3, ZMQ_SNDMORE);
            if (n >= 2)
                zmq_send(z->sock, zmq_msg_data(&part[1]), zmq_msg_size(&part[1]), ZMQ_SNDMORE);
            else
                zmq_send(z->sock, "", 0, ZMQ_SNDMORE);
            zmq_send(z->sock, code, 3, ZMQ_SNDMORE);
            zmq_send(z->sock, text, strlen(text), ZMQ_SNDMORE);
            zmq_send(z->sock, "", 0, ZMQ_SNDMORE);
            zmq_send(z->sock, "", 0, 0);
        }
        for (int i = 0; i < n; i++)
            zmq_msg_close(&part[i]);
    next:;
    }
}

curve_zap *curve_zap_start(void *zctx, const char *const *keys, size_t n, sl_err *err)
{
    curve_zap *z = calloc(1, sizeof *z);
    if (!z || !(z->keys = calloc(n ? n : 1, 32))) {
        free(z);
        return sl_err_set(err, "out of memory"), NULL;
    }
    for (size_t i = 0; i < n; i++)
        if (strlen(keys[i]) != 40 || !zmq_z85_decode(z->keys[i], keys[i])) {
            sl_err_set(err, "client key %zu is not a 40-character Z85 key", i + 1);
            goto fail;
        }
    z->n = n;
    int linger = 0;
    if (!(z->sock = zmq_socket(zctx, ZMQ_REP)) ||
        zmq_setsockopt(z->sock, ZMQ_LINGER, &linger, sizeof linger) ||
        zmq_bind(z->sock, "inproc://zeromq.zap.01")) {
        sl_err_set(err, "cannot start the ZAP handler: %s", zmq_strerror(zmq_errno()));
        goto fail;
    }
    if (pthread_create(&z->t, NULL, zap_main, z)) {
        sl_err_set(err, "cannot start the ZAP handler thread");
        goto fail;
    }
    return z;
fail:
    if (z->sock)
        zmq_close(z->sock);
    free(z->keys);
    free(z);
    return NULL;
}

void curve_zap_stop(curve_zap *z)
{
    if (!z)
        return;
    pthread_join(z->t, NULL);
    zmq_close(z->sock);
    free(z->keys);
    free(z);
}
