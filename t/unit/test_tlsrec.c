/* src/tlsrec.c: RFC 8448's keys and records byte for byte; the record
 * rules against records made here with EVP's AEADs directly (not tlsrec's
 * code); export and import; and OpenSSL as the peer: an OpenSSL client
 * and server finish a TLS 1.3 handshake over memory BIOs, tlsrec takes the
 * server's record layer, the server SSL is freed, and tlsrec talks to the
 * OpenSSL client from then on. The key and certificate are made here. */
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "config.h"
#include "tap.h"
#include "tlsrec.h"

static const uint16_t all_suites[] = {
    TLSREC_AES_128_GCM_SHA256, TLSREC_AES_256_GCM_SHA384, TLSREC_CHACHA20_POLY1305_SHA256,
};

static const char *suite_name(uint16_t s)
{
    return s == TLSREC_AES_128_GCM_SHA256   ? "TLS_AES_128_GCM_SHA256"
           : s == TLSREC_AES_256_GCM_SHA384 ? "TLS_AES_256_GCM_SHA384"
                                            : "TLS_CHACHA20_POLY1305_SHA256";
}

static size_t hash_len(uint16_t s)
{
    return s == TLSREC_AES_256_GCM_SHA384 ? 48 : 32;
}

/* Hex with any spaces, into out; the byte count. */
static size_t unhex(const char *h, uint8_t *out)
{
    size_t n = 0;
    for (; *h; h++) {
        if (*h == ' ')
            continue;
        unsigned v;
        sscanf(h, "%2x", &v);
        out[n++] = (uint8_t)v;
        h++;
    }
    return n;
}

static void fill(uint8_t *p, size_t n, uint32_t seed)
{
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13, x ^= x >> 17, x ^= x << 5;
        p[i] = (uint8_t)x;
    }
}

/* ---- RFC 8448 section 3, "Simple 1-RTT Handshake" (AES-128-GCM) -------- */

#define C_AP "9e 40 64 6c e7 9a 7f 9d c0 5a f8 88 9b ce 65 52 87 5a fa 0b 06 df 00 87 f7 92 eb" \
    " b7 c1 75 04 a5"
#define S_AP "a1 1a f9 f0 55 31 f8 56 ad 47 11 6b 45 a9 50 32 82 04 b4 f4 4b fb 6b 3a 4b 4f 1f" \
    " 3f cb 63 16 43"
#define S_KEY "9f 02 28 3b 6c 9c 07 ef c2 6b b9 f2 ac 92 e3 56"
#define S_IV "cf 78 2b 88 dd 83 54 9a ad f1 e9 84"
#define C_KEY "17 42 2d da 59 6e d5 d9 ac d8 90 e3 c6 3f 50 51"
#define C_IV "5b 78 92 3d ee 08 57 90 33 e5 23 d9"
/* {server} NewSessionTicket: the message, then the record (server key, seq 0). */
#define NST "04 00 00 c9 00 00 00 1e fa d6 aa c5 02 00 00 00 b2 2c 03 5d 82 93 59 ee 5f f7 af 4e" \
    " c9 00 00 00 00 26 2a 64 94 dc 48 6d 2c 8a 34 cb 33 fa 90 bf 1b 00 70 ad 3c 49 88 83 c9 36" \
    " 7c 09 a2 be 78 5a bc 55 cd 22 60 97 a3 a9 82 11 72 83 f8 2a 03 a1 43 ef d3 ff 5d d3 6d 64" \
    " e8 61 be 7f d6 1d 28 27 db 27 9c ce 14 50 77 d4 54 a3 66 4d 4e 6d a4 d2 9e e0 37 25 a6 a4" \
    " da fc d0 fc 67 d2 ae a7 05 29 51 3e 3d a2 67 7f a5 90 6c 5b 3f 7d 8f 92 f2 28 bd a4 0d da" \
    " 72 14 70 f9 fb f2 97 b5 ae a6 17 64 6f ac 5c 03 27 2e 97 07 27 c6 21 a7 91 41 ef 5f 7d e6" \
    " 50 5e 5b fb c3 88 e9 33 43 69 40 93 93 4a e4 d3 57 00 08 00 2a 00 04 00 00 04 00"
#define NST_REC "17 03 03 00 de 3a 6b 8f 90 41 4a 97 d6 95 9c 34 87 68 0d e5 13 4a 2b 24 0e 6c" \
    " ff ac 11 6e 95 d4 1d 6a f8 f6 b5 80 dc f3 d1 1d 63 c7 58 db 28 9a 01 59 40 25 2f 55 71 3e" \
    " 06 1d c1 3e 07 88 91 a3 8e fb cf 57 53 ad 8e f1 70 ad 3c 73 53 d1 6d 9d a7 73 b9 ca 7f 2b" \
    " 9f a1 b6 c0 d4 a3 d0 3f 75 e0 9c 30 ba 1e 62 97 2a c4 6f 75 f7 b9 81 be 63 43 9b 29 99 ce" \
    " 13 06 46 15 13 98 91 d5 e4 c5 b4 06 f1 6e 3f c1 81 a7 7c a4 75 84 00 25 db 2f 0a 77 f8 1b" \
    " 5a b0 5b 94 c0 13 46 75 5f 69 23 2c 86 51 9d 86 cb ee ac 87 aa c3 47 d1 43 f9 60 5d 64 f6" \
    " 50 db 4d 02 3e 70 e9 52 ca 49 fe 51 37 12 1c 74 bc 26 97 68 7e 24 87 46 d6 df 35 30 05 f3" \
    " bc e1 86 96 12 9c 81 53 55 6b 3b 6c 67 79 b3 7b f1 59 85 68 4f"
/* Application data 00 01 .. 31 each way: the client's (seq 0), the server's (seq 1). */
#define C_APP_REC "17 03 03 00 43 a2 3f 70 54 b6 2c 94 d0 af fa fe 82 28 ba 55 cb ef ac ea 42 f9" \
    " 14 aa 66 bc ab 3f 2b 98 19 a8 a5 b4 6b 39 5b d5 4a 9a 20 44 1e 2b 62 97 4e 1f 5a 62 92 a2" \
    " 97 70 14 bd 1e 3d ea e6 3a ee bb 21 69 49 15 e4"
#define S_APP_REC "17 03 03 00 43 2e 93 7e 11 ef 4a c7 40 e5 38 ad 36 00 5f c4 a4 69 32 fc 32 25" \
    " d0 5f 82 aa 1b 36 e3 0e fa f9 7d 90 e6 df fc 60 2d cb 50 1a 59 a8 fc c4 9c 4b f2 e5 f0 a2" \
    " 1c 00 47 c2 ab f3 32 54 0d d0 32 e1 67 c2 95 5d"
/* close_notify each way: the client's (seq 1), the server's (seq 2). */
#define C_ALERT_REC "17 03 03 00 13 c9 87 27 60 65 56 66 b7 4d 7f f1 15 3e fd 6d b6 d0 b0 e3"
#define S_ALERT_REC "17 03 03 00 13 b5 8f d6 71 66 eb f5 99 d2 47 20 cf be 7e fa 7a 88 64 a9"

/* tlsrec_open of the hex record on t; its result, in filled. */
static int open_hex(struct tlsrec *t, const char *hex, uint8_t *buf, struct tlsrec_in *in)
{
    size_t n = unhex(hex, buf);
    return tlsrec_open(t, buf, n, in);
}

/* The trace's two application traffic secrets and its 50 bytes of data. */
static void rfc8448_inputs(uint8_t c_ap[32], uint8_t s_ap[32], uint8_t app[50])
{
    unhex(C_AP, c_ap);
    unhex(S_AP, s_ap);
    for (int i = 0; i < 50; i++)
        app[i] = (uint8_t)i;
}

/* The server's side: keys from the secrets, its records byte for byte
 * (AEADs are deterministic), the client's opened. */
static void rfc8448_server(void)
{
    uint8_t c_ap[32], s_ap[32], want[256], got[256], buf[256], app[50];
    struct tlsrec s;
    struct tlsrec_in in;
    size_t n, outlen;
    rfc8448_inputs(c_ap, s_ap, app);
    ok(tlsrec_init(&s, TLSREC_AES_128_GCM_SHA256, c_ap, s_ap, 32, 0, 0) == 0, "RFC 8448: init");
    unhex(S_KEY, want);
    unhex(S_IV, want + 16);
    ok(memcmp(s.wr.key, want, 16) == 0 && memcmp(s.wr.iv, want + 16, 12) == 0,
       "RFC 8448: server application key and IV");
    unhex(C_KEY, want);
    unhex(C_IV, want + 16);
    ok(memcmp(s.rd.key, want, 16) == 0 && memcmp(s.rd.iv, want + 16, 12) == 0,
       "RFC 8448: client application key and IV");
    n = unhex(NST, buf);
    ok(tlsrec_seal_size(&s, TLSREC_CT_HANDSHAKE, n) == 227 &&
       tlsrec_seal(&s, TLSREC_CT_HANDSHAKE, buf, n, got, sizeof(got), &outlen) == TLSREC_OK &&
       outlen == unhex(NST_REC, want) && memcmp(got, want, outlen) == 0,
       "RFC 8448: the NewSessionTicket sealed is the RFC's record");
    ok(tlsrec_seal(&s, TLSREC_CT_APPLICATION_DATA, app, 50, got, sizeof(got), &outlen) ==
       TLSREC_OK && outlen == unhex(S_APP_REC, want) && memcmp(got, want, outlen) == 0,
       "RFC 8448: the server's application data record (seq 1)");
    ok(tlsrec_seal_alert(&s, TLSREC_CLOSE_NOTIFY, got) == TLSREC_OK &&
       unhex(S_ALERT_REC, want) == TLSREC_ALERT_SIZE && memcmp(got, want, 24) == 0,
       "RFC 8448: the server's close_notify (seq 2)");
    ok(open_hex(&s, C_APP_REC, buf, &in) == TLSREC_OK && in.len == 50 &&
       memcmp(in.data, app, 50) == 0 && in.data == buf + 5, "RFC 8448: the client's data opened");
    ok(open_hex(&s, C_ALERT_REC, buf, &in) == TLSREC_EOF, "RFC 8448: the client's close_notify");
    tlsrec_clear(&s);
}

/* The other way round (secrets swapped): the server's records opened, the
 * client's sealed, and the RFC's NewSessionTicket refused as a client's. */
static void rfc8448_client(void)
{
    uint8_t c_ap[32], s_ap[32], want[256], got[256], buf[256], app[50];
    struct tlsrec c, c2;
    struct tlsrec_in in;
    size_t n, outlen;
    rfc8448_inputs(c_ap, s_ap, app);
    tlsrec_init(&c, TLSREC_AES_128_GCM_SHA256, s_ap, c_ap, 32, 0, 0);
    c2 = c;
    unhex(NST_REC, buf);
    n = unhex(NST, want);
    ok(tlsrec_unprotect(&c, buf, 227, &in) == TLSREC_OK && in.type == TLSREC_CT_HANDSHAKE &&
       in.len == n && memcmp(in.data, want, n) == 0,
       "RFC 8448: the NewSessionTicket record decrypts to the RFC's message");
    unhex(NST_REC, buf);
    ok(tlsrec_open(&c2, buf, 227, &in) == TLSREC_ERROR && in.alert == TLSREC_UNEXPECTED_MESSAGE,
       "RFC 8448: a NewSessionTicket coming to us: unexpected_message");
    ok(open_hex(&c, S_APP_REC, buf, &in) == TLSREC_OK && in.len == 50 &&
       memcmp(in.data, app, 50) == 0, "RFC 8448: the server's data opened");
    ok(open_hex(&c, S_ALERT_REC, buf, &in) == TLSREC_EOF, "RFC 8448: the server's close_notify");
    ok(tlsrec_seal(&c, TLSREC_CT_APPLICATION_DATA, app, 50, got, sizeof(got), &outlen) ==
       TLSREC_OK && outlen == unhex(C_APP_REC, want) && memcmp(got, want, outlen) == 0,
       "RFC 8448: the client's data record sealed");
    ok(tlsrec_seal_alert(&c, TLSREC_CLOSE_NOTIFY, got) == TLSREC_OK &&
       unhex(C_ALERT_REC, want) == 24 && memcmp(got, want, 24) == 0,
       "RFC 8448: the client's close_notify sealed");
}

/* ---- Records made here, by EVP's AEADs directly -------------------------- */

/* A record as a peer would send it (EVP, not tlsrec): inner[0..n) (the
 * whole TLSInnerPlaintext) under d at d->seq, with the outer type and
 * version given. Its length. */
static size_t craft(uint16_t suite, struct tlsrec_dir *d, uint8_t type, uint16_t version,
                    const uint8_t *inner, size_t n, uint8_t *out)
{
    const EVP_CIPHER *c = suite == TLSREC_AES_128_GCM_SHA256   ? EVP_aes_128_gcm()
                          : suite == TLSREC_AES_256_GCM_SHA384 ? EVP_aes_256_gcm()
                                                               : EVP_chacha20_poly1305();
    EVP_CIPHER_CTX *x = EVP_CIPHER_CTX_new();
    uint8_t nonce[12];
    int l;
    memcpy(nonce, d->iv, 12);
    for (int i = 0; i < 8; i++)
        nonce[11 - i] ^= (uint8_t)(d->seq >> (8 * i));
    out[0] = type;
    out[1] = (uint8_t)(version >> 8);
    out[2] = (uint8_t)version;
    out[3] = (uint8_t)((n + 16) >> 8);
    out[4] = (uint8_t)(n + 16);
    if (!EVP_EncryptInit_ex(x, c, NULL, d->key, nonce) ||
        !EVP_EncryptUpdate(x, NULL, &l, out, 5) ||
        !EVP_EncryptUpdate(x, out + 5, &l, inner, (int)n) ||
        !EVP_EncryptFinal_ex(x, out + 5 + n, &l) ||
        !EVP_CIPHER_CTX_ctrl(x, EVP_CTRL_AEAD_GET_TAG, 16, out + 5 + n))
        abort();
    EVP_CIPHER_CTX_free(x);
    d->seq++;
    return 5 + n + 16;
}

/* A server state and its client's mirror (directions swapped). */
static void pair(uint16_t suite, struct tlsrec *srv, struct tlsrec *cli)
{
    uint8_t a[48], b[48];
    fill(a, sizeof(a), suite);
    fill(b, sizeof(b), suite + 7u);
    if (tlsrec_init(srv, suite, a, b, hash_len(suite), 0, 0) != 0 ||
        tlsrec_init(cli, suite, b, a, hash_len(suite), 0, 0) != 0)
        abort();
}

struct inner_case {
    const char *name, *hex;     /* the TLSInnerPlaintext */
    int result;
    uint8_t alert;
};

static const struct inner_case inner_cases[] = {
    { "empty application data", "17", TLSREC_OK, 0 },
    { "padded data", "68 69 17 00 00 00", TLSREC_OK, 0 },
    { "only padding: no content type", "00 00 00", TLSREC_ERROR, TLSREC_UNEXPECTED_MESSAGE },
    { "empty plaintext", "", TLSREC_ERROR, TLSREC_UNEXPECTED_MESSAGE },
    { "protected change_cipher_spec", "01 14", TLSREC_ERROR, TLSREC_UNEXPECTED_MESSAGE },
    { "unknown inner type (heartbeat)", "01 18", TLSREC_ERROR, TLSREC_UNEXPECTED_MESSAGE },
    { "inner type 0x80", "01 80", TLSREC_ERROR, TLSREC_UNEXPECTED_MESSAGE },
    { "zero-length handshake", "16", TLSREC_ERROR, TLSREC_UNEXPECTED_MESSAGE },
    { "zero-length handshake, padded", "16 00 00", TLSREC_ERROR, TLSREC_UNEXPECTED_MESSAGE },
    { "zero-length alert", "15", TLSREC_ERROR, TLSREC_UNEXPECTED_MESSAGE },
    { "one-byte alert", "02 15", TLSREC_ERROR, TLSREC_DECODE_ERROR },
    { "three-byte alert (two coalesced?)", "02 28 00 15", TLSREC_ERROR, TLSREC_DECODE_ERROR },
    { "close_notify", "01 00 15", TLSREC_EOF, 0 },
    { "close_notify, padded", "01 00 15 00 00 00 00", TLSREC_EOF, 0 },
    { "fatal handshake_failure", "02 28 15", TLSREC_ALERT, 40 },
    { "user_canceled", "01 5a 15", TLSREC_ALERT, TLSREC_USER_CANCELED },
    { "NewSessionTicket from a client",
      "04 00 00 0d 00 00 00 1e 00 00 00 01 00 00 01 aa 00 00 16",
      TLSREC_ERROR, TLSREC_UNEXPECTED_MESSAGE },
    { "CertificateRequest", "0d 00 00 05 00 00 02 00 00 16", TLSREC_ERROR,
      TLSREC_UNEXPECTED_MESSAGE },
    { "unsolicited Certificate", "0b 00 00 04 00 00 00 00 16", TLSREC_ERROR,
      TLSREC_UNEXPECTED_MESSAGE },
    { "ClientHello after the handshake", "01 00 00 02 03 03 16", TLSREC_ERROR,
      TLSREC_UNEXPECTED_MESSAGE },
    { "KeyUpdate split: type only", "18 16", TLSREC_ERROR, TLSREC_UNEXPECTED_MESSAGE },
    { "KeyUpdate split: header only", "18 00 00 01 16", TLSREC_ERROR, TLSREC_UNEXPECTED_MESSAGE },
    { "KeyUpdate of two bytes", "18 00 00 02 00 00 16", TLSREC_ERROR, TLSREC_DECODE_ERROR },
    { "KeyUpdate of no byte", "18 00 00 00 16", TLSREC_ERROR, TLSREC_DECODE_ERROR },
    { "KeyUpdate request_update 2", "18 00 00 01 02 16", TLSREC_ERROR, TLSREC_ILLEGAL_PARAMETER },
    { "KeyUpdate request_update 2, then a byte", "18 00 00 01 02 00 16", TLSREC_ERROR,
      TLSREC_UNEXPECTED_MESSAGE },
    { "two KeyUpdates in a record", "18 00 00 01 00 18 00 00 01 00 16", TLSREC_ERROR,
      TLSREC_UNEXPECTED_MESSAGE },
    { "KeyUpdate, then a message's first byte", "18 00 00 01 00 18 16", TLSREC_ERROR,
      TLSREC_UNEXPECTED_MESSAGE },
    { "NewSessionTicket then KeyUpdate", "04 00 00 00 18 00 00 01 00 16", TLSREC_ERROR,
      TLSREC_UNEXPECTED_MESSAGE },
    { "KeyUpdate(update_not_requested)", "18 00 00 01 00 16", TLSREC_OK, 0 },
    { "KeyUpdate, padded", "18 00 00 01 00 16 00 00 00", TLSREC_OK, 0 },
    { "KeyUpdate(update_requested)", "18 00 00 01 01 16", TLSREC_KEYUPDATE, 0 },
};

static void inner_rules(uint16_t suite)
{
    uint8_t inner[64], rec[128];
    struct tlsrec s, c;
    struct tlsrec_in in;
    int bad = 0;
    for (size_t i = 0; i < sizeof(inner_cases) / sizeof(inner_cases[0]); i++) {
        const struct inner_case *k = &inner_cases[i];
        pair(suite, &s, &c);
        size_t n = craft(suite, &c.wr, TLSREC_CT_APPLICATION_DATA, 0x0303, inner,
                         unhex(k->hex, inner), rec);
        int r = tlsrec_open(&s, rec, n, &in);
        int good = r == k->result && (r == TLSREC_OK || r == TLSREC_KEYUPDATE ||
                                       r == TLSREC_EOF || in.alert == k->alert);
        if (r == TLSREC_ERROR || r == TLSREC_ALERT)
            good &= in.len == 0 && in.data == NULL && (s.flags & TLSREC_RD_FAILED) &&
                    tlsrec_open(&s, rec, n, &in) == TLSREC_ERROR; /* nothing after it */
        if (!good)
            printf("# %s: result %d alert %u\n", k->name, r, in.alert);
        bad += !good;
    }
    ok(bad == 0, "%s: %zu inner plaintexts judged (data, padding, alerts, handshake messages)",
       suite_name(suite), sizeof(inner_cases) / sizeof(inner_cases[0]));
}

/* Content at and around 2^14, padding counted in the limit (RFC 8446 5.4). */
static void size_rules(uint16_t suite)
{
    static uint8_t inner[TLSREC_MAX_PLAIN + 300], rec[TLSREC_MAX_PLAIN + 400];
    static const struct { size_t content, pad; int result; } k[] = {
        { 16384, 0, TLSREC_OK }, { 16000, 384, TLSREC_OK }, { 16384, 1, TLSREC_ERROR },
        { 16385, 0, TLSREC_ERROR }, { 0, 16384, TLSREC_OK }, { 100, 16285, TLSREC_ERROR },
    };
    struct tlsrec s, c;
    struct tlsrec_in in;
    for (size_t i = 0; i < sizeof(k) / sizeof(k[0]); i++) {
        pair(suite, &s, &c);
        fill(inner, k[i].content, (uint32_t)i);
        inner[k[i].content] = TLSREC_CT_APPLICATION_DATA;
        memset(inner + k[i].content + 1, 0, k[i].pad);
        size_t n = craft(suite, &c.wr, 23, 0x0303, inner, k[i].content + 1 + k[i].pad, rec);
        int r = tlsrec_open(&s, rec, n, &in);
        ok(r == k[i].result && (r == TLSREC_OK ? in.len == k[i].content :
                                in.alert == TLSREC_RECORD_OVERFLOW),
           "%s: %zu bytes and %zu of padding: %s", suite_name(suite), k[i].content, k[i].pad,
           k[i].result == TLSREC_OK ? "opened" : "record_overflow");
    }
}

/* The header alone says what is refused, as soon as its bytes are in. */
static void header_rules(void)
{
    static const struct { const char *name, *hex; int result; uint8_t alert; size_t len; } k[] = {
        { "nothing yet", "", TLSREC_AGAIN, 0, 0 },
        { "a type, more to come", "17", TLSREC_AGAIN, 0, 0 },
        { "a whole header, the body to come", "17 03 03 00 20", TLSREC_AGAIN, 0, 0 },
        { "the largest record's header", "17 03 03 41 00", TLSREC_AGAIN, 0, 0 },
        { "a length past 2^14 + 256", "17 03 03 41 01", TLSREC_ERROR, TLSREC_RECORD_OVERFLOW, 0 },
        { "a length of 65535", "17 03 03 ff ff", TLSREC_ERROR, TLSREC_RECORD_OVERFLOW, 0 },
        { "change_cipher_spec, unprotected", "14 03 03 00 01 01", TLSREC_ERROR,
          TLSREC_UNEXPECTED_MESSAGE, 0 },
        { "an alert, unprotected", "15", TLSREC_ERROR, TLSREC_UNEXPECTED_MESSAGE, 0 },
        { "a handshake record, unprotected", "16 03 01", TLSREC_ERROR,
          TLSREC_UNEXPECTED_MESSAGE, 0 },
        { "heartbeat", "18 03 03 00 03", TLSREC_ERROR, TLSREC_UNEXPECTED_MESSAGE, 0 },
        { "type 0", "00", TLSREC_ERROR, TLSREC_UNEXPECTED_MESSAGE, 0 },
        { "an HTTP request", "47 45 54 20 2f", TLSREC_ERROR, TLSREC_UNEXPECTED_MESSAGE, 0 },
        { "version 0x0301", "17 03 01", TLSREC_ERROR, TLSREC_DECODE_ERROR, 0 },
        { "version 0x0304", "17 03 04 00 20", TLSREC_ERROR, TLSREC_DECODE_ERROR, 0 },
        { "version 0x0203", "17 02", TLSREC_ERROR, TLSREC_DECODE_ERROR, 0 },
        { "a record whole", "17 03 03 00 02 aa bb", TLSREC_OK, 0, 7 },
        { "a record and the next's start", "17 03 03 00 01 aa 17 03", TLSREC_OK, 0, 6 },
        { "an empty record (no tag: open refuses it)", "17 03 03 00 00", TLSREC_OK, 0, 5 },
    };
    uint8_t buf[16];
    int bad = 0;
    for (size_t i = 0; i < sizeof(k) / sizeof(k[0]); i++) {
        size_t len = 0, n = unhex(k[i].hex, buf);
        uint8_t alert = 0xff;
        int r = tlsrec_peek(buf, n, &len, &alert);
        int good = r == k[i].result && (r != TLSREC_ERROR || alert == k[i].alert) &&
                   (r != TLSREC_OK || len == k[i].len);
        if (!good)
            printf("# peek, %s: %d alert %u len %zu\n", k[i].name, r, alert, len);
        bad += !good;
    }
    ok(bad == 0, "peek: %zu headers framed or refused (type, version, length)",
       sizeof(k) / sizeof(k[0]));
}

/* Any change to a record, its reuse, or its reordering is bad_record_mac. */
static void integrity(uint16_t suite)
{
    uint8_t rec[3][64], copy[64], inner[] = { 'a', 'b', 'c', 23 };
    struct tlsrec s, c, s2;
    struct tlsrec_in in;
    size_t n = 0;
    int bad = 0;
    pair(suite, &s, &c);
    for (int i = 0; i < 3; i++)
        n = craft(suite, &c.wr, 23, 0x0303, inner, sizeof(inner), rec[i]);
    for (size_t bit = 5 * 8; bit < n * 8; bit++) { /* the header's own bytes are peek's */
        s2 = s;
        memcpy(copy, rec[0], n);
        copy[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        bad += tlsrec_open(&s2, copy, n, &in) != TLSREC_ERROR || in.alert != TLSREC_BAD_RECORD_MAC;
    }
    ok(bad == 0, "%s: every bit flipped in ciphertext or tag: bad_record_mac", suite_name(suite));
    s2 = s;
    memcpy(copy, rec[1], n);
    ok(tlsrec_open(&s2, copy, n, &in) == TLSREC_ERROR && in.alert == TLSREC_BAD_RECORD_MAC,
       "%s: a record out of order: bad_record_mac", suite_name(suite));
    memcpy(copy, rec[0], n);
    ok(tlsrec_open(&s, copy, n, &in) == TLSREC_OK && in.len == 3 && s.rd.seq == 1,
       "%s: the record in order opens", suite_name(suite));
    s2 = s;
    memcpy(copy, rec[0], n);
    ok(tlsrec_open(&s2, copy, n, &in) == TLSREC_ERROR && in.alert == TLSREC_BAD_RECORD_MAC &&
       s2.rd.seq == 1, "%s: replayed: bad_record_mac, seq unmoved", suite_name(suite));
    memcpy(copy, "\x17\x03\x03\x00\x0f", 5);
    s2 = s;
    ok(tlsrec_open(&s2, copy, 20, &in) == TLSREC_ERROR && in.alert == TLSREC_BAD_RECORD_MAC,
       "%s: a record shorter than a tag: bad_record_mac", suite_name(suite));
    s2 = s;
    ok(tlsrec_open(&s2, rec[1], n - 1, &in) == TLSREC_ERROR && in.alert == TLSREC_INTERNAL_ERROR &&
       tlsrec_open(&s2, rec[1], n, &in) == TLSREC_ERROR,
       "%s: not one whole record: refused, and the read side is over", suite_name(suite));
}

/* The read side's last words: an EOF stays one, nothing is read past it. */
static void after_close(uint16_t suite)
{
    uint8_t rec[64], data[] = { 'x', 23 }, close[] = { 1, 0, 21 };
    struct tlsrec s, c;
    struct tlsrec_in in;
    size_t n;
    pair(suite, &s, &c);
    n = craft(suite, &c.wr, 23, 0x0303, close, sizeof(close), rec);
    ok(tlsrec_open(&s, rec, n, &in) == TLSREC_EOF && (s.flags & TLSREC_RD_EOF), "%s: close_notify",
       suite_name(suite));
    n = craft(suite, &c.wr, 23, 0x0303, data, sizeof(data), rec);
    ok(tlsrec_open(&s, rec, n, &in) == TLSREC_EOF && in.len == 0,
       "%s: data after close_notify is not read (RFC 8446 6.1)", suite_name(suite));
}

/* ---- Seal, KeyUpdate, limits -------------------------------------------- */

/* Everything of cli's side in buf[0..n) opened by cli: data appended to got,
 * the number of records; -1 if any was refused. */
static long open_all(struct tlsrec *cli, uint8_t *buf, size_t n, uint8_t *got, size_t *gotlen)
{
    size_t off = 0, len;
    long recs = 0;
    struct tlsrec_in in;
    uint8_t alert;
    while (off < n) {
        if (tlsrec_peek(buf + off, n - off, &len, &alert) != TLSREC_OK || len > TLSREC_MAX_RECORD)
            return -1;
        int r = tlsrec_open(cli, buf + off, len, &in);
        if (r != TLSREC_OK && r != TLSREC_KEYUPDATE)
            return -1;
        memcpy(got + *gotlen, in.data, in.len);
        *gotlen += in.len;
        off += len;
        recs++;
    }
    return recs;
}

static void seal_sizes(uint16_t suite)
{
    static const size_t sizes[] = { 1, 2, 100, 16383, 16384, 16385, 32768, 50000, 200000 };
    struct tlsrec s, c;
    size_t outlen, gotlen;
    int bad = 0;
    pair(suite, &s, &c);
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        size_t n = sizes[i], need = tlsrec_seal_size(&s, TLSREC_CT_APPLICATION_DATA, n);
        uint8_t *in = malloc(n), *out = malloc(need), *got = malloc(n);
        long recs;
        fill(in, n, (uint32_t)n);
        gotlen = 0;
        bad += tlsrec_seal(&s, 23, in, n, out, need, &outlen) != TLSREC_OK ||
               outlen != need || (recs = open_all(&c, out, outlen, got, &gotlen)) < 0 ||
               (size_t)recs != (n + 16383) / 16384 || gotlen != n || memcmp(got, in, n) != 0;
        free(in), free(out), free(got);
    }
    ok(bad == 0, "%s: 1 B to 200 KB sealed in exactly tlsrec_seal_size bytes, opened back",
       suite_name(suite));
}

static void seal_refusals(uint16_t suite)
{
    uint8_t in[100] = { 0 }, out[200], a[TLSREC_ALERT_SIZE], k[TLSREC_KEYUPDATE_SIZE];
    struct tlsrec s, c;
    size_t outlen = 1;
    pair(suite, &s, &c);
    ok(tlsrec_seal(&s, 23, in, 0, out, 0, &outlen) == TLSREC_OK && outlen == 0,
       "%s: nothing to seal: no record", suite_name(suite));
    ok(tlsrec_seal(&s, 23, in, 100, out, 121, &outlen) == TLSREC_ERROR && s.wr.seq == 0 &&
       s.flags == 0 && outlen == 0, "%s: no room for the record: refused, nothing changed",
       suite_name(suite));
    ok(tlsrec_seal(&s, TLSREC_CT_ALERT, in, 2, out, 200, &outlen) == TLSREC_ERROR &&
       tlsrec_seal(&s, 20, in, 1, out, 200, &outlen) == TLSREC_ERROR && s.wr.seq == 0,
       "%s: alerts and change_cipher_spec are not tlsrec_seal's", suite_name(suite));
    ok(tlsrec_seal_alert(&s, TLSREC_CLOSE_NOTIFY, a) == TLSREC_OK &&
       tlsrec_seal(&s, 23, in, 1, out, 200, &outlen) == TLSREC_ERROR &&
       tlsrec_seal_alert(&s, TLSREC_INTERNAL_ERROR, a) == TLSREC_ERROR &&
       tlsrec_seal_keyupdate(&s, k) == TLSREC_ERROR, "%s: nothing is sealed after an alert",
       suite_name(suite));
}

/* The client's KeyUpdate(update_requested) crafted, its write key moved on
 * (tlsrec_seal_keyupdate's record is not sent: only the ratchet counts). */
static size_t client_asks(uint16_t suite, struct tlsrec *c, uint8_t *rec)
{
    static const uint8_t ku[] = { 24, 0, 0, 1, 1, 22 };
    uint8_t junk[TLSREC_KEYUPDATE_SIZE];
    size_t n = craft(suite, &c->wr, 23, 0x0303, ku, sizeof(ku), rec);
    tlsrec_seal_keyupdate(c, junk);
    return n;
}

static void keyupdates(uint16_t suite)
{
    uint8_t rec[64], out[128], got[16], k[TLSREC_KEYUPDATE_SIZE];
    struct tlsrec s, c;
    struct tlsrec_in in;
    size_t n, outlen, gotlen = 0;
    pair(suite, &s, &c);
    n = client_asks(suite, &c, rec);
    ok(tlsrec_open(&s, rec, n, &in) == TLSREC_KEYUPDATE && (s.flags & TLSREC_KU_OWED) &&
       s.rd.seq == 0 && memcmp(s.rd.key, c.wr.key, 32) == 0 && memcmp(s.rd.iv, c.wr.iv, 12) == 0,
       "%s: KeyUpdate(update_requested): read key moved on, ours owed", suite_name(suite));
    n = client_asks(suite, &c, rec);
    ok(tlsrec_open(&s, rec, n, &in) == TLSREC_KEYUPDATE, "%s: asked twice before our answer",
       suite_name(suite));
    ok(tlsrec_seal_size(&s, 23, 5) == 5 + 22 + 27 && tlsrec_seal_size(&s, 22, 5) == 5 + 22,
       "%s: the owed KeyUpdate goes before data (counted in its size), once", suite_name(suite));
    ok(tlsrec_seal(&s, 23, (const uint8_t *)"hello", 5, out, sizeof(out), &outlen) == TLSREC_OK &&
       outlen == 54 && open_all(&c, out, outlen, got, &gotlen) == 2 && gotlen == 5 &&
       memcmp(got, "hello", 5) == 0 && !(s.flags & TLSREC_KU_OWED) && s.wr.seq == 1 &&
       c.rd.seq == 1, "%s: ... and the client reads it under the new key", suite_name(suite));
    n = client_asks(suite, &c, rec);
    tlsrec_open(&s, rec, n, &in);
    ok(tlsrec_seal_keyupdate(&s, k) == TLSREC_OK && !(s.flags & TLSREC_KU_OWED) &&
       tlsrec_seal_size(&s, 23, 5) == 27 &&
       (gotlen = 0, open_all(&c, k, sizeof(k), got, &gotlen)) == 1 &&
       memcmp(c.rd.key, s.wr.key, 32) == 0, "%s: answered at once with tlsrec_seal_keyupdate",
       suite_name(suite));
}

static void init_at(uint16_t suite, struct tlsrec *s, struct tlsrec *c, uint64_t seq)
{
    uint8_t a[48], b[48];
    fill(a, sizeof(a), 1);
    fill(b, sizeof(b), 2);
    if (tlsrec_init(s, suite, a, b, hash_len(suite), 0, seq) != 0 ||
        tlsrec_init(c, suite, b, a, hash_len(suite), seq, 0) != 0)
        abort();
}

/* Our own KeyUpdate once past TLSREC_REKEY_AFTER, and no record past
 * TLSREC_SEQ_LIMIT under a key. */
static void limits(uint16_t suite)
{
    static uint8_t in[16385], out[16385 + 100], got[16385];
    struct tlsrec s, c;
    size_t outlen, gotlen = 0;
    uint8_t a[48] = { 0 }, k[TLSREC_KEYUPDATE_SIZE];
    init_at(suite, &s, &c, TLSREC_REKEY_AFTER - 1);
    ok(tlsrec_seal(&s, 23, in, 16385, out, sizeof(out), &outlen) == TLSREC_OK &&
       outlen == 16385 + 44 && open_all(&c, out, outlen, got, &gotlen) == 2 &&
       s.wr.seq == TLSREC_REKEY_AFTER + 1, "%s: records up to the rekey mark, no KeyUpdate",
       suite_name(suite));
    gotlen = 0;
    ok(tlsrec_seal_size(&s, 23, 1) == 50 &&
       tlsrec_seal(&s, 23, in, 1, out, sizeof(out), &outlen) == TLSREC_OK && outlen == 50 &&
       open_all(&c, out, outlen, got, &gotlen) == 2 && s.wr.seq == 1 && c.rd.seq == 1,
       "%s: past it, our own KeyUpdate first; the peer follows", suite_name(suite));
    init_at(suite, &s, &c, TLSREC_SEQ_LIMIT);
    ok(tlsrec_seal(&s, 23, in, 1, out, sizeof(out), &outlen) == TLSREC_ERROR &&
       tlsrec_seal_keyupdate(&s, k) == TLSREC_ERROR &&
       tlsrec_seal_alert(&s, 0, out) == TLSREC_ERROR &&
       s.wr.seq == TLSREC_SEQ_LIMIT && s.flags == 0, "%s: a key at its limit seals nothing more",
       suite_name(suite));
    init_at(suite, &s, &c, TLSREC_SEQ_LIMIT - 1);
    gotlen = 0;
    ok(tlsrec_seal(&s, 22, in, 16385, out, sizeof(out), &outlen) == TLSREC_ERROR &&
       tlsrec_seal(&s, 23, in, 16385, out, sizeof(out), &outlen) == TLSREC_OK &&
       open_all(&c, out, outlen, got, &gotlen) == 3 && s.wr.seq == 2,
       "%s: one record left: two refused, unless a KeyUpdate goes first", suite_name(suite));
    ok(tlsrec_init(&s, suite, a, a, hash_len(suite), 0, TLSREC_SEQ_LIMIT + 1) < 0 &&
       tlsrec_init(&s, suite, a, a, hash_len(suite), UINT64_MAX, 0) < 0 &&
       tlsrec_init(&s, suite, a, a, hash_len(suite) + 1, 0, 0) < 0 &&
       tlsrec_init(&s, 0x1304, a, a, 32, 0, 0) < 0, "%s: init refuses what cannot be",
       suite_name(suite));
}

/* The read side refuses the record that would wrap its sequence number. */
static void read_wrap(uint16_t suite)
{
    uint8_t rec[64], data[] = { 'x', 23 };
    struct tlsrec s, c;
    struct tlsrec_in in;
    size_t n;
    uint8_t a[48], b[48];
    fill(a, 48, 3);
    fill(b, 48, 4);
    tlsrec_init(&s, suite, a, b, hash_len(suite), UINT64_MAX - 1, 0);
    tlsrec_init(&c, suite, b, a, hash_len(suite), 0, 0);
    c.wr.seq = UINT64_MAX - 1;
    n = craft(suite, &c.wr, 23, 0x0303, data, sizeof(data), rec);
    ok(tlsrec_open(&s, rec, n, &in) == TLSREC_OK && in.len == 1, "%s: record 2^64 - 2 opens",
       suite_name(suite));
    n = craft(suite, &c.wr, 23, 0x0303, data, sizeof(data), rec);
    ok(tlsrec_open(&s, rec, n, &in) == TLSREC_ERROR && in.alert == TLSREC_INTERNAL_ERROR,
       "%s: the one after would wrap: refused", suite_name(suite));
}

/* ---- Export, import ------------------------------------------------------ */

static int same_dir(const struct tlsrec_dir *a, const struct tlsrec_dir *b)
{
    return a->seq == b->seq && memcmp(a->secret, b->secret, 48) == 0 &&
           memcmp(a->key, b->key, 32) == 0 && memcmp(a->iv, b->iv, 12) == 0;
}

static int same_state(const struct tlsrec *a, const struct tlsrec *b)
{
    return same_dir(&a->rd, &b->rd) && same_dir(&a->wr, &b->wr) && a->suite == b->suite &&
           a->flags == b->flags;
}

/* The blob's CRC made right again after a change (the layout is tlsrec.c's). */
static void recrc(uint8_t *b)
{
    uint32_t c = (uint32_t)crc32(0, b, TLSREC_BLOB_SIZE - 4);
    for (int i = 0; i < 4; i++)
        b[TLSREC_BLOB_SIZE - 4 + i] = (uint8_t)(c >> (24 - 8 * i));
}

/* A change with the CRC made right: refused all the same. */
static int refused_with_crc(const uint8_t *blob, size_t at, uint8_t value)
{
    uint8_t b[TLSREC_BLOB_SIZE];
    struct tlsrec t;
    memcpy(b, blob, sizeof(b));
    b[at] = value;
    recrc(b);
    memset(&t, 0x5a, sizeof(t));
    return tlsrec_import(&t, b) < 0 && t.flags == 0x5a;
}

static void blobs(uint16_t suite)
{
    uint8_t blob[TLSREC_BLOB_SIZE], b[TLSREC_BLOB_SIZE], rec[64], data[] = { 'x', 23 };
    struct tlsrec s, c, t;
    struct tlsrec_in in;
    size_t n;
    int bad = 0;
    pair(suite, &s, &c);
    n = craft(suite, &c.wr, 23, 0x0303, data, sizeof(data), rec);
    tlsrec_open(&s, rec, n, &in);
    s.flags |= TLSREC_KU_OWED;
    tlsrec_export(&s, blob);
    ok(tlsrec_import(&t, blob) == 0 && same_state(&s, &t), "%s: export, import: the same state",
       suite_name(suite));
    for (size_t bit = 0; bit < 8 * sizeof(blob); bit++) {
        memcpy(b, blob, sizeof(b));
        b[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        bad += tlsrec_import(&t, b) == 0;
    }
    ok(bad == 0, "%s: each of the %zu bits flipped: refused", suite_name(suite), 8 * sizeof(blob));
    /* rd is at 8: seq, secret at 16, key at 64; wr at 108 */
    ok(refused_with_crc(blob, 4, 2) && refused_with_crc(blob, 7, 0x04) &&
       refused_with_crc(blob, 5, 0x10) && refused_with_crc(blob, 0, 'W'),
       "%s: another version, suite, flag or magic: refused", suite_name(suite));
    ok((suite != TLSREC_AES_128_GCM_SHA256 || refused_with_crc(blob, 64 + 16, 1)) &&
       (suite == TLSREC_AES_256_GCM_SHA384 || refused_with_crc(blob, 16 + 40, 1)),
       "%s: bytes past the suite's key or secret length: refused", suite_name(suite));
    ok(refused_with_crc(blob, 108 + 3, 1), "%s: a write sequence past the limit (2^32): refused",
       suite_name(suite));
    memcpy(b, blob, sizeof(b));
    memset(b + 8, 0xff, 8);
    recrc(b);
    ok(tlsrec_import(&t, b) < 0, "%s: a read sequence that cannot advance: refused",
       suite_name(suite));
    memset(b, 0, sizeof(b));
    ok(tlsrec_import(&t, b) < 0, "%s: zeros: refused", suite_name(suite));
    n = craft(suite, &c.wr, 23, 0x0303, data, sizeof(data), rec);
    ok(tlsrec_import(&t, blob) == 0 && tlsrec_open(&t, rec, n, &in) == TLSREC_OK && in.len == 1,
       "%s: the imported state reads on", suite_name(suite));
}

/* ---- OpenSSL as the peer ------------------------------------------------- */

static EVP_PKEY *pkey;
static X509 *cert;
static int sessions;            /* tickets the client took */
static int keylog_lines;        /* seen by a keylog callback set before ours */

static void die(const char *what)
{
    fprintf(stderr, "test_tlsrec: %s\n", what);
    ERR_print_errors_fp(stderr);
    abort();
}

static void make_cert(void)
{
    X509_NAME *name;
    if ((pkey = EVP_EC_gen("P-256")) == NULL || (cert = X509_new()) == NULL ||
        !ASN1_INTEGER_set(X509_get_serialNumber(cert), 1) ||
        !X509_gmtime_adj(X509_getm_notBefore(cert), -60) ||
        !X509_gmtime_adj(X509_getm_notAfter(cert), 3600) || !X509_set_pubkey(cert, pkey))
        die("certificate");
    name = X509_get_subject_name(cert);
    if (!X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"tlsrec.test",
                                    -1, -1, 0) ||
        !X509_set_issuer_name(cert, name) || !X509_sign(cert, pkey, EVP_sha256()))
        die("signing");
}

static int on_session(SSL *ssl, SSL_SESSION *sess)
{
    (void)ssl, (void)sess;
    sessions++;
    return 0; /* not kept */
}

static void count_line(const SSL *ssl, const char *line)
{
    (void)ssl, (void)line;
    keylog_lines++;
}

/* tickets < 0: OpenSSL's default (two). */
static SSL_CTX *server_ctx(uint16_t suite, int tickets, int tls12)
{
    SSL_CTX *x = SSL_CTX_new(TLS_server_method());
    if (x == NULL || !SSL_CTX_use_certificate(x, cert) || !SSL_CTX_use_PrivateKey(x, pkey) ||
        !SSL_CTX_set_min_proto_version(x, tls12 ? TLS1_2_VERSION : TLS1_3_VERSION) ||
        !SSL_CTX_set_ciphersuites(x, suite_name(suite)))
        die("server context");
    if (tickets >= 0)
        SSL_CTX_set_num_tickets(x, (size_t)tickets);
    return x;
}

static SSL_CTX *client_ctx(uint16_t suite, int tls12)
{
    SSL_CTX *x = SSL_CTX_new(TLS_client_method());
    if (x == NULL || !SSL_CTX_set_ciphersuites(x, suite_name(suite)) ||
        !SSL_CTX_set_max_proto_version(x, tls12 ? TLS1_2_VERSION : TLS1_3_VERSION))
        die("client context");
    SSL_CTX_set_session_cache_mode(x, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(x, on_session);
    return x;
}

/* The client reads cr and writes cw, the server sr and sw; bytes move
 * between them only when the test says (move). Once the record layer is
 * taken, tlsrec writes into cr and reads from cw itself. */
struct peer {
    SSL *client, *server;
    BIO *cr, *cw, *sr, *sw;
    struct tlsrec rec;
    uint8_t *in;                /* what the client sent, not yet opened */
    size_t inlen;
    int asked;                  /* KeyUpdates requested by the client */
};

static void move(BIO *from, BIO *to, size_t max)
{
    uint8_t buf[4096];
    int n;
    while (max > 0 && (n = BIO_read(from, buf, (int)(max < sizeof(buf) ? max : sizeof(buf)))) > 0) {
        BIO_write(to, buf, n);
        max -= (size_t)n;
    }
}

static void peer_start(struct peer *p, SSL_CTX *sctx, SSL_CTX *cctx)
{
    memset(p, 0, sizeof(*p));
    p->cr = BIO_new(BIO_s_mem());
    p->cw = BIO_new(BIO_s_mem());
    p->sr = BIO_new(BIO_s_mem());
    p->sw = BIO_new(BIO_s_mem());
    p->client = SSL_new(cctx);
    p->server = SSL_new(sctx);
    if (!p->cr || !p->cw || !p->sr || !p->sw || !p->client || !p->server)
        die("peer");
    SSL_set_bio(p->client, p->cr, p->cw);
    SSL_set_bio(p->server, p->sr, p->sw);
    SSL_set_connect_state(p->client);
    SSL_set_accept_state(p->server);
}

static void peer_end(struct peer *p)
{
    SSL_free(p->client);
    SSL_free(p->server);
    free(p->in);
    tlsrec_clear(&p->rec);
    ERR_clear_error();
}

/* Both to the end of their handshake (the server's tickets sent). */
static int handshake(struct peer *p)
{
    int c = 0, s = 0;
    for (int i = 0; i < 20 && (c != 1 || s != 1); i++) {
        if (c != 1)
            c = SSL_do_handshake(p->client);
        move(p->cw, p->sr, SIZE_MAX);
        if (s != 1)
            s = SSL_do_handshake(p->server);
        move(p->sw, p->cr, SIZE_MAX);
    }
    ERR_clear_error();
    return c == 1 && s == 1;
}

/* tlsrec takes over; the server SSL goes (what it wrote reaches the client). */
static int take(struct peer *p)
{
    int r = tlsrec_capture_take(p->server, &p->rec);
    if (r == TLSREC_OK) {
        move(p->sw, p->cr, SIZE_MAX);
        SSL_free(p->server);
        p->server = NULL;
    }
    return r;
}

/* What the client sent, opened: data appended to got[0..cap), a KeyUpdate
 * asked answered if answer. TLSREC_OK once all is read, else the first
 * other result, with *alert. */
static int srv_read(struct peer *p, uint8_t *got, size_t cap, size_t *gotlen, int answer,
                    uint8_t *alert)
{
    uint8_t buf[16384], k[TLSREC_KEYUPDATE_SIZE];
    struct tlsrec_in in;
    size_t off = 0, len;
    int n, r = TLSREC_OK;
    while ((n = BIO_read(p->cw, buf, sizeof(buf))) > 0) {
        if ((p->in = realloc(p->in, p->inlen + (size_t)n)) == NULL)
            die("memory");
        memcpy(p->in + p->inlen, buf, (size_t)n);
        p->inlen += (size_t)n;
    }
    while (r == TLSREC_OK && tlsrec_peek(p->in + off, p->inlen - off, &len, alert) == TLSREC_OK) {
        r = tlsrec_open(&p->rec, p->in + off, len, &in);
        off += len;
        if (r == TLSREC_KEYUPDATE) {
            p->asked++;
            if (answer && tlsrec_seal_keyupdate(&p->rec, k) == TLSREC_OK)
                BIO_write(p->cr, k, sizeof(k));
            r = TLSREC_OK;
        }
        if (r != TLSREC_OK)
            *alert = in.alert;
        else if (*gotlen + in.len <= cap)
            memcpy(got + *gotlen, in.data, in.len);
        *gotlen += r == TLSREC_OK ? in.len : 0;
    }
    memmove(p->in, p->in + off, p->inlen - off);
    p->inlen -= off;
    return *gotlen > cap ? TLSREC_ERROR : r;
}

static void srv_write(struct peer *p, const void *data, size_t n)
{
    size_t need = tlsrec_seal_size(&p->rec, TLSREC_CT_APPLICATION_DATA, n), outlen;
    uint8_t *buf = malloc(need + 1);
    if (buf == NULL ||
        tlsrec_seal(&p->rec, 23, data, n, buf, need, &outlen) != TLSREC_OK ||
        outlen != need)
        die("seal");
    BIO_write(p->cr, buf, (int)outlen);
    free(buf);
}

/* What the client reads, up to want bytes; *err: why it stopped short. */
static size_t cli_read(struct peer *p, uint8_t *buf, size_t want, int *err)
{
    size_t got = 0;
    *err = SSL_ERROR_NONE;
    while (got < want) {
        int n = SSL_read(p->client, buf + got, (int)(want - got > 65536 ? 65536 : want - got));
        if (n <= 0) {
            *err = SSL_get_error(p->client, n);
            break;
        }
        got += (size_t)n;
    }
    return got;
}

/* n bytes each way through tlsrec, checked. */
static int exchange(struct peer *p, size_t n, uint32_t seed)
{
    uint8_t *a = malloc(n), *b = malloc(n), alert;
    size_t got = 0;
    int err, good;
    fill(a, n, seed);
    srv_write(p, a, n);
    good = cli_read(p, b, n, &err) == n && memcmp(a, b, n) == 0;
    fill(a, n, seed + 1);
    good &= SSL_write(p->client, a, (int)n) == (int)n;
    good &= srv_read(p, b, n, &got, 1, &alert) == TLSREC_OK && got == n && memcmp(a, b, n) == 0;
    free(a);
    free(b);
    return good;
}

/* KeyUpdates from the client, both kinds, and our own. */
static void client_keyupdates(struct peer *p, uint16_t suite)
{
    const char *sn = suite_name(suite);
    uint8_t buf[64], k[TLSREC_KEYUPDATE_SIZE], key[32], alert;
    size_t got = 0;
    int err, asked = p->asked;
    SSL_key_update(p->client, SSL_KEY_UPDATE_REQUESTED);
    SSL_write(p->client, "after", 5);
    ok(srv_read(p, buf, sizeof(buf), &got, 1, &alert) == TLSREC_OK && got == 5 &&
       memcmp(buf, "after", 5) == 0 && p->asked == asked + 1 && p->rec.wr.seq == 0,
       "%s: the client's KeyUpdate(update_requested): answered, its data read", sn);
    srv_write(p, "ours", 4);
    ok(cli_read(p, buf, 4, &err) == 4 && memcmp(buf, "ours", 4) == 0,
       "%s: ... and the client reads us under our new key", sn);
    memcpy(key, p->rec.wr.key, 32);
    got = 0;
    SSL_key_update(p->client, SSL_KEY_UPDATE_NOT_REQUESTED);
    SSL_write(p->client, "more", 4);
    ok(srv_read(p, buf, sizeof(buf), &got, 1, &alert) == TLSREC_OK && got == 4 &&
       p->asked == asked + 1 && memcmp(key, p->rec.wr.key, 32) == 0 && exchange(p, 3000, 5),
       "%s: the client's KeyUpdate(update_not_requested): read on, our key kept", sn);
    ok(tlsrec_seal_keyupdate(&p->rec, k) == TLSREC_OK && BIO_write(p->cr, k, sizeof(k)) > 0 &&
       exchange(p, 20000, 6), "%s: our own KeyUpdate: the client follows", sn);
    got = 0;
    SSL_key_update(p->client, SSL_KEY_UPDATE_REQUESTED);
    SSL_do_handshake(p->client); /* the KeyUpdate alone */
    ok(srv_read(p, buf, sizeof(buf), &got, 0, &alert) == TLSREC_OK && got == 0 &&
       (p->rec.flags & TLSREC_KU_OWED) && tlsrec_seal_size(&p->rec, 23, 10) == 10 + 22 + 27,
       "%s: asked, not answered yet: owed", sn);
    ok(exchange(p, 10, 7) && !(p->rec.flags & TLSREC_KU_OWED),
       "%s: the next data takes the answer along; the client reads both", sn);
}

static void sizes_both_ways(struct peer *p, uint16_t suite)
{
    static const size_t sizes[] = { 1, 2, 1000, 16383, 16384, 16385, 65543, 1 << 20 };
    int bad = 0;
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
        bad += !exchange(p, sizes[i], (uint32_t)i);
    ok(bad == 0, "%s: 1 B to 1 MiB messages both ways, across records", suite_name(suite));
}

/* Tickets and a record of OpenSSL's in the flight before the switch (not
 * read by the client yet), a record the server read, a keylog callback
 * set before ours; then everything through tlsrec, to both close_notifys. */
static void conversation(uint16_t suite)
{
    const char *sn = suite_name(suite);
    SSL_CTX *sctx = server_ctx(suite, -1, 0), *cctx = client_ctx(suite, 0);
    uint8_t buf[64], blob[TLSREC_BLOB_SIZE], a[TLSREC_ALERT_SIZE], alert;
    struct peer p;
    size_t got = 0;
    int err;
    SSL_CTX_set_keylog_callback(sctx, count_line);
    keylog_lines = sessions = 0;
    ok(tlsrec_capture_attach(sctx) == 0, "%s: attached", sn);
    peer_start(&p, sctx, cctx);
    ok(handshake(&p), "%s: OpenSSL's handshake", sn);
    SSL_write(p.server, "OpenSSL's record", 16);
    SSL_write(p.client, "ping", 4);
    move(p.cw, p.sr, SIZE_MAX);
    ok(SSL_read(p.server, buf, sizeof(buf)) == 4, "%s: the server read a record", sn);
    ok(take(&p) == TLSREC_OK && p.rec.suite == suite && p.rec.rd.seq == 1 && p.rec.wr.seq == 3 &&
       keylog_lines >= 5, "%s: taken: read seq 1, write seq 3 (two tickets, a record); the "
       "keylog callback before ours saw %d lines", sn, keylog_lines);
    ok(cli_read(&p, buf, 16, &err) == 16 && memcmp(buf, "OpenSSL's record", 16) == 0 &&
       sessions == 2, "%s: the client reads OpenSSL's record behind the two tickets", sn);
    srv_write(&p, "tlsrec's", 8);
    ok(cli_read(&p, buf, 8, &err) == 8 && memcmp(buf, "tlsrec's", 8) == 0,
       "%s: ... then ours, the server SSL freed", sn);
    sizes_both_ways(&p, suite);
    client_keyupdates(&p, suite);
    tlsrec_export(&p.rec, blob);
    tlsrec_clear(&p.rec);
    ok(tlsrec_import(&p.rec, blob) == 0 && exchange(&p, 40000, 9),
       "%s: exported and imported mid-conversation: both ways go on", sn);
    SSL_shutdown(p.client);
    ok(srv_read(&p, buf, sizeof(buf), &got, 1, &alert) == TLSREC_EOF && got == 0,
       "%s: the client's close_notify: EOF", sn);
    ok(tlsrec_seal_alert(&p.rec, TLSREC_CLOSE_NOTIFY, a) == TLSREC_OK &&
       BIO_write(p.cr, a, sizeof(a)) > 0 && cli_read(&p, buf, 1, &err) == 0 &&
       err == SSL_ERROR_ZERO_RETURN, "%s: our close_notify: the client sees the end", sn);
    peer_end(&p);
    SSL_CTX_free(sctx);
    SSL_CTX_free(cctx);
}

/* A ticket sent after data, the client's KeyUpdate(update_requested)
 * before the switch, read-ahead on as in tls.c, and a record half read
 * when the capture is tried. OpenSSL answers that KeyUpdate at its next
 * SSL_write: with flush, it writes one (its answer, then data, under its
 * next key); without, the answer is still owed when tlsrec takes over. */
static void after_the_handshake(uint16_t suite, int flush)
{
    const char *sn = suite_name(suite), *how = flush ? "answered by OpenSSL" : "answer owed";
    SSL_CTX *sctx = server_ctx(suite, -1, 0), *cctx = client_ctx(suite, 0);
    uint8_t buf[64];
    struct peer p;
    int err;
    SSL_CTX_set_read_ahead(sctx, 1);
    tlsrec_capture_attach(sctx);
    sessions = 0;
    peer_start(&p, sctx, cctx);
    handshake(&p);
    SSL_write(p.server, "a", 1);
    SSL_new_session_ticket(p.server);
    SSL_do_handshake(p.server);
    SSL_write(p.server, "b", 1);
    SSL_key_update(p.client, SSL_KEY_UPDATE_REQUESTED);
    SSL_write(p.client, "x", 1);
    move(p.cw, p.sr, SIZE_MAX);
    ok(SSL_read(p.server, buf, sizeof(buf)) == 1 &&
       SSL_get_key_update_type(p.server) == SSL_KEY_UPDATE_NOT_REQUESTED,
       "%s, %s: OpenSSL read the client's KeyUpdate, its answer waits", sn, how);
    if (flush)
        SSL_write(p.server, "B", 1);
    SSL_write(p.client, "partial", 7);
    move(p.cw, p.sr, 3);
    SSL_read(p.server, buf, sizeof(buf));
    ok(take(&p) == TLSREC_AGAIN, "%s, %s: three bytes of a record read ahead: not yet", sn, how);
    move(p.cw, p.sr, 2);
    SSL_read(p.server, buf, sizeof(buf));
    ok(take(&p) == TLSREC_AGAIN, "%s, %s: its header parsed, its body not there: not yet", sn, how);
    move(p.cw, p.sr, SIZE_MAX);
    ok(SSL_read(p.server, buf, sizeof(buf)) == 7 && take(&p) == TLSREC_OK && p.rec.rd.seq == 2 &&
       p.rec.wr.seq == (flush ? 1u : 5u) && ((p.rec.flags & TLSREC_KU_OWED) == 0) == flush,
       "%s, %s: taken: read seq 2 under the client's next key; write seq %d%s", sn, how,
       flush ? 1 : 5, flush ? " under OpenSSL's next key" : ", a KeyUpdate owed");
    srv_write(&p, "c", 1);
    ok(cli_read(&p, buf, flush ? 4 : 3, &err) == (flush ? 4u : 3u) &&
       memcmp(buf, flush ? "abBc" : "abc", flush ? 4 : 3) == 0 && sessions == 3,
       "%s, %s: the client reads OpenSSL's records and three tickets, then ours", sn, how);
    ok(exchange(&p, 20000, 11), "%s, %s: both ways after that", sn, how);
    peer_end(&p);
    SSL_CTX_free(sctx);
    SSL_CTX_free(cctx);
}

static int accept_any(int ok, X509_STORE_CTX *x)
{
    (void)ok, (void)x;
    return 1; /* self-signed: nothing to check */
}

/* A handshake of another shape, taken and used both ways. */
static int taken_and_used(SSL_CTX *sctx, SSL_CTX *cctx, SSL_SESSION *sess, uint32_t seed,
                          int *reused)
{
    struct peer p;
    int good;
    peer_start(&p, sctx, cctx);
    if (sess != NULL)
        SSL_set_session(p.client, sess);
    good = handshake(&p);
    *reused = SSL_session_reused(p.server) == 1;
    good = good && take(&p) == TLSREC_OK && exchange(&p, 5000, seed);
    peer_end(&p);
    return good;
}

/* Resumed with the ticket of a first handshake; after a HelloRetryRequest
 * (the server wants P-384, the client's first key share is X25519); with
 * the client's certificate (Certificate, CertificateVerify before its
 * Finished). The counts start at the Finished whatever came before it. */
static void handshake_shapes(uint16_t suite)
{
    const char *sn = suite_name(suite);
    SSL_CTX *sctx = server_ctx(suite, 1, 0), *cctx = client_ctx(suite, 0);
    SSL_SESSION *sess;
    struct peer p;
    uint8_t b;
    int err, reused;
    tlsrec_capture_attach(sctx);
    peer_start(&p, sctx, cctx);
    handshake(&p);
    take(&p);
    cli_read(&p, &b, 1, &err); /* the ticket */
    sess = SSL_SESSION_dup(SSL_get0_session(p.client)); /* the client is freed unclosed */
    peer_end(&p);
    ok(sess != NULL && taken_and_used(sctx, cctx, sess, 21, &reused) && reused,
       "%s: a resumed handshake: taken, both ways", sn);
    SSL_SESSION_free(sess);
    SSL_CTX_set1_groups_list(sctx, "P-384");
    ok(taken_and_used(sctx, cctx, NULL, 22, &reused), "%s: after a HelloRetryRequest", sn);
    SSL_CTX_set1_groups_list(sctx, "X25519:P-256:P-384");
    SSL_CTX_set_verify(sctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, accept_any);
    if (!SSL_CTX_use_certificate(cctx, cert) || !SSL_CTX_use_PrivateKey(cctx, pkey))
        die("client certificate");
    ok(taken_and_used(sctx, cctx, NULL, 23, &reused), "%s: with the client's certificate", sn);
    SSL_CTX_free(sctx);
    SSL_CTX_free(cctx);
}

/* A handshake without tickets, taken at once. */
static void fresh(struct peer *p, uint16_t suite, SSL_CTX **sctx, SSL_CTX **cctx)
{
    *sctx = server_ctx(suite, 0, 0);
    *cctx = client_ctx(suite, 0);
    tlsrec_capture_attach(*sctx);
    peer_start(p, *sctx, *cctx);
    if (!handshake(p) || take(p) != TLSREC_OK)
        die("fresh handshake");
}

/* A bit flipped each way: refused, and the alert reaches the other side. */
static void tampering(uint16_t suite)
{
    const char *sn = suite_name(suite);
    uint8_t buf[256], a[TLSREC_ALERT_SIZE], alert = 0;
    SSL_CTX *sctx, *cctx;
    struct tlsrec_in in;
    struct peer p;
    size_t got = 0;
    int n, err;
    fresh(&p, suite, &sctx, &cctx);
    ok(p.rec.rd.seq == 0 && p.rec.wr.seq == 0, "%s: no tickets: both sequences at 0", sn);
    SSL_write(p.client, "secret", 6);
    n = BIO_read(p.cw, buf, sizeof(buf));
    buf[n / 2] ^= 0x10;
    ok(tlsrec_open(&p.rec, buf, (size_t)n, &in) == TLSREC_ERROR &&
       in.alert == TLSREC_BAD_RECORD_MAC, "%s: the client's record tampered: bad_record_mac", sn);
    tlsrec_seal_alert(&p.rec, in.alert, a);
    BIO_write(p.cr, a, sizeof(a));
    ok(cli_read(&p, buf, 1, &err) == 0 && err == SSL_ERROR_SSL &&
       ERR_GET_REASON(ERR_peek_last_error()) == SSL_R_SSLV3_ALERT_BAD_RECORD_MAC,
       "%s: ... and the client gets our bad_record_mac alert", sn);
    peer_end(&p);
    SSL_CTX_free(sctx);
    SSL_CTX_free(cctx);
    fresh(&p, suite, &sctx, &cctx);
    size_t outlen, need = tlsrec_seal_size(&p.rec, 23, 6);
    tlsrec_seal(&p.rec, 23, (const uint8_t *)"secret", 6, buf, need, &outlen);
    buf[outlen - 3] ^= 0x01;
    BIO_write(p.cr, buf, (int)outlen);
    ok(cli_read(&p, buf, 1, &err) == 0 && err == SSL_ERROR_SSL &&
       ERR_GET_REASON(ERR_peek_last_error()) == SSL_R_DECRYPTION_FAILED_OR_BAD_RECORD_MAC,
       "%s: our record tampered: the client refuses it", sn);
    ERR_clear_error();
    ok(srv_read(&p, buf, sizeof(buf), &got, 1, &alert) == TLSREC_ALERT &&
       alert == TLSREC_BAD_RECORD_MAC, "%s: ... and its alert is the peer's alert to us", sn);
    peer_end(&p);
    SSL_CTX_free(sctx);
    SSL_CTX_free(cctx);
}

/* What cannot be taken: TLS 1.2, a context never attached, a client. */
static void refusals(void)
{
    uint16_t suite = TLSREC_AES_128_GCM_SHA256;
    SSL_CTX *sctx = server_ctx(suite, -1, 1), *cctx = client_ctx(suite, 1);
    struct peer p;
    tlsrec_capture_attach(sctx);
    peer_start(&p, sctx, cctx);
    ok(handshake(&p) && SSL_version(p.server) == TLS1_2_VERSION && take(&p) == TLSREC_ERROR,
       "TLS 1.2: not taken");
    peer_end(&p);
    SSL_CTX_free(sctx);
    SSL_CTX_free(cctx);
    sctx = server_ctx(suite, -1, 0);
    cctx = client_ctx(suite, 0);
    peer_start(&p, sctx, cctx);
    ok(handshake(&p) && take(&p) == TLSREC_ERROR, "a context not attached: not taken");
    peer_end(&p);
    tlsrec_capture_attach(sctx);
    tlsrec_capture_attach(sctx); /* twice: the same as once */
    tlsrec_capture_attach(cctx);
    peer_start(&p, sctx, cctx);
    ok(handshake(&p) && tlsrec_capture_take(p.client, &p.rec) == TLSREC_ERROR,
       "a client: not taken");
    peer_end(&p); /* the server's capture freed with it (ASan would say) */
    peer_start(&p, sctx, cctx);
    SSL_do_handshake(p.client);
    move(p.cw, p.sr, SIZE_MAX);
    SSL_do_handshake(p.server);
    ok(take(&p) == TLSREC_AGAIN, "mid-handshake (the client's Finished not read): not yet");
    ok(handshake(&p) && take(&p) == TLSREC_OK, "... and once it is done: taken");
    peer_end(&p);
    peer_start(&p, sctx, cctx);
    handshake(&p);
    SSL_key_update(p.server, SSL_KEY_UPDATE_REQUESTED);
    ok(take(&p) == TLSREC_AGAIN, "OpenSSL about to ask for a KeyUpdate: not yet");
    SSL_do_handshake(p.server); /* sends it */
    ok(take(&p) == TLSREC_OK && exchange(&p, 1000, 31) && p.asked == 0,
       "... once it has asked: taken; the client's answer reaches us");
    peer_end(&p);
    SSL_CTX_free(sctx);
    SSL_CTX_free(cctx);
}

/* The context tls.c makes from a configuration (read-ahead, released
 * buffers, one ticket of its own keys), as the server will capture it. */
static void server_context(void)
{
    char key[] = "/tmp/wsechod-unit-key-XXXXXX", crt[] = "/tmp/wsechod-unit-crt-XXXXXX";
    char yaml[] = "/tmp/wsechod-unit-yaml-XXXXXX", text[512], err[CONFIG_ERR_MAX];
    int fk = mkstemp(key), fc = mkstemp(crt), fy = mkstemp(yaml);
    FILE *f;
    struct peer p;
    if (fk < 0 || fc < 0 || fy < 0 || (f = fdopen(fk, "w")) == NULL ||
        !PEM_write_PrivateKey(f, pkey, NULL, NULL, 0, NULL, NULL) || fclose(f) != 0 ||
        (f = fdopen(fc, "w")) == NULL || !PEM_write_X509(f, cert) || fclose(f) != 0)
        die("PEM files");
    snprintf(text, sizeof(text), "listen:\n  - address: 127.0.0.1:1\n    tls:\n"
             "      certificate: %s\n      key: %s\n", crt, key);
    if (write(fy, text, strlen(text)) != (ssize_t)strlen(text) || close(fy) != 0)
        die("config file");
    struct config *cf = config_load(yaml, err);
    unlink(key), unlink(crt), unlink(yaml);
    if (cf == NULL || cf->listen[0].tls == NULL)
        die(err);
    SSL_CTX *cctx = client_ctx(TLSREC_AES_256_GCM_SHA384, 0);
    sessions = 0;
    tlsrec_capture_attach(cf->listen[0].tls->ctx);
    peer_start(&p, cf->listen[0].tls->ctx, cctx);
    ok(handshake(&p) && take(&p) == TLSREC_OK && p.rec.wr.seq == 1 && exchange(&p, 70000, 12) &&
       sessions == 1, "tls.c's own context: taken after its one ticket, both ways go on");
    peer_end(&p);
    SSL_CTX_free(cctx);
    config_free(cf);
}

int main(void)
{
    rfc8448_server();
    rfc8448_client();
    header_rules();
    for (size_t i = 0; i < 3; i++) {
        inner_rules(all_suites[i]);
        size_rules(all_suites[i]);
        integrity(all_suites[i]);
        after_close(all_suites[i]);
        seal_sizes(all_suites[i]);
        seal_refusals(all_suites[i]);
        keyupdates(all_suites[i]);
        limits(all_suites[i]);
        read_wrap(all_suites[i]);
        blobs(all_suites[i]);
    }
    make_cert();
    for (size_t i = 0; i < 3; i++) {
        conversation(all_suites[i]);
        after_the_handshake(all_suites[i], 0);
        after_the_handshake(all_suites[i], 1);
        tampering(all_suites[i]);
        handshake_shapes(all_suites[i]);
    }
    refusals();
    server_context();
    printf("# sizeof(struct tlsrec) = %zu\n", sizeof(struct tlsrec));
    ok(sizeof(struct tlsrec) <= 256, "the state is small (%zu bytes)", sizeof(struct tlsrec));
    EVP_PKEY_free(pkey);
    X509_free(cert);
    tlsrec_cleanup();
    return tap_done();
}
