/* libFuzzer harness for src/tlsrec.c's read side: tlsrec_peek, tlsrec_open
 * (tlsrec_unprotect and the handling of what it decrypts) and
 * tlsrec_import, with fixed keys: a server state and its client's mirror
 * (directions swapped) per suite, made at startup from constant secrets.
 *
 * Input: byte 0 picks the mode (bits 0-1) and the suite (bits 2-3, mod 3);
 * bit 4: the server state is exported and imported between records.
 *   0: the rest is the wire: framed by tlsrec_peek and opened as the server
 *      reads a stream. The seeds hold records sealed with the client's key,
 *      so mutations start from records that authenticate.
 *   1: the rest is TLSInnerPlaintexts, each a length, a fill byte, its bytes,
 *      protected here with the client's key (EVP's AEADs directly, not
 *      tlsrec's code) and opened by the server: the fuzzer writes what comes
 *      out of decryption (content types, padding, alerts, handshake
 *      messages, lengths around 2^14). Each result is checked against a
 *      model of RFC 8446's rules; a KeyUpdate the server takes moves the
 *      client's key on as a real client's would.
 *   2: a conversation the client seals with tlsrec itself: each step a
 *      byte (what: data, KeyUpdate, alert, the client's state exported and
 *      imported) and a length (of the data: the bytes given, repeated); the
 *      server must read back exactly what was sent. Then one bit of the
 *      wire, chosen by the first two bytes, is flipped: what comes before
 *      that record must open as before, that record never.
 *   3: the rest is a blob for tlsrec_import: accepted only if tlsrec_export
 *      gives it back byte for byte; then the wire after it is opened with
 *      the state it gave.
 * A length is two bytes: the second alone unless the first's top bit is
 * set, then 15 bits (random ones would nearly all be 2^14 records).
 * Seeds: FUZZ_TLSREC_SEEDS=dir build/fuzz/fuzz_tlsrec writes the seed
 * corpus (t/fuzz/corpus_tlsrec) into dir and exits. */
#include <openssl/evp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "tlsrec.h"

#define WIRE_MAX (4 * TLSREC_MAX_RECORD)

static const uint16_t suites[3] = {
    TLSREC_AES_128_GCM_SHA256, TLSREC_AES_256_GCM_SHA384, TLSREC_CHACHA20_POLY1305_SHA256,
};
static struct tlsrec server0[3], client0[3];   /* the fixed states, copied per input */
static uint8_t wire[WIRE_MAX + 64], inner[TLSREC_MAX_RECORD], sent[WIRE_MAX];

static void die(const char *what)
{
    fprintf(stderr, "fuzz_tlsrec: %s\n", what);
    abort();
}

/* The server state through a blob and back, as a handoff would take it. */
static void hand_over(struct tlsrec *s)
{
    uint8_t blob[TLSREC_BLOB_SIZE];
    tlsrec_export(s, blob);
    if (tlsrec_import(s, blob) != 0)
        die("an exported state was refused");
}

/* inner[0..n) under d at d->seq as one record at out. Its length. The
 * harness's own AEAD contexts, fetched once (an implicit fetch per call
 * would be most of an input's time). */
static size_t protect(uint16_t suite, struct tlsrec_dir *d, const uint8_t *in, size_t n,
                      uint8_t *out)
{
    static EVP_CIPHER *ciphers[3];
    static EVP_CIPHER_CTX *ctx[3];
    static const char *const names[3] = { "AES-128-GCM", "AES-256-GCM", "ChaCha20-Poly1305" };
    int i = suite == TLSREC_AES_128_GCM_SHA256 ? 0 : suite == TLSREC_AES_256_GCM_SHA384 ? 1 : 2;
    uint8_t nonce[12];
    int l;
    EVP_CIPHER_CTX *x;
    if (ciphers[i] == NULL && ((ciphers[i] = EVP_CIPHER_fetch(NULL, names[i], NULL)) == NULL ||
                               (ctx[i] = EVP_CIPHER_CTX_new()) == NULL ||
                               !EVP_EncryptInit_ex2(ctx[i], ciphers[i], NULL, NULL, NULL)))
        die("EVP_CIPHER_fetch");
    x = ctx[i];
    memcpy(nonce, d->iv, 12);
    for (int j = 0; j < 8; j++)
        nonce[11 - j] ^= (uint8_t)(d->seq >> (8 * j));
    memcpy(out, "\x17\x03\x03", 3);
    out[3] = (uint8_t)((n + 16) >> 8);
    out[4] = (uint8_t)(n + 16);
    if (!EVP_EncryptInit_ex2(x, NULL, d->key, nonce, NULL) ||
        !EVP_EncryptUpdate(x, NULL, &l, out, 5) ||
        (n > 0 && !EVP_EncryptUpdate(x, out + 5, &l, in, (int)n)) ||
        !EVP_EncryptFinal_ex(x, out + 5 + n, &l) ||
        !EVP_CIPHER_CTX_ctrl(x, EVP_CTRL_AEAD_GET_TAG, 16, out + 5 + n))
        die("EVP");
    d->seq++;
    return 5 + n + 16;
}

/* ---- Mode 0 and 3: the wire ---------------------------------------------- */

static void open_wire(struct tlsrec *s, uint8_t *p, size_t n, int relay)
{
    struct tlsrec_in in;
    size_t len;
    uint8_t alert;
    for (;;) {
        int r = tlsrec_peek(p, n, &len, &alert);
        if (r != TLSREC_OK)
            return;
        if (len < TLSREC_HEADER_SIZE || len > TLSREC_MAX_RECORD || len > n)
            die("peek framed a record it should not have");
        r = tlsrec_open(s, p, len, &in);
        if (r == TLSREC_OK && (in.data != p + 5 || in.len > TLSREC_MAX_PLAIN))
            die("data outside the record");
        if (r != TLSREC_OK && r != TLSREC_KEYUPDATE)
            return;
        p += len;
        n -= len;
        if (relay)
            hand_over(s);
    }
}

static void blob(const struct tlsrec *s0, const uint8_t *p, size_t n, int relay)
{
    uint8_t back[TLSREC_BLOB_SIZE];
    struct tlsrec s = *s0;
    if (n < TLSREC_BLOB_SIZE || tlsrec_import(&s, p) != 0)
        return;
    tlsrec_export(&s, back);
    if (memcmp(back, p, TLSREC_BLOB_SIZE) != 0)
        die("an imported blob does not export back the same");
    n -= TLSREC_BLOB_SIZE;
    memcpy(wire, p + TLSREC_BLOB_SIZE, n);
    open_wire(&s, wire, n, relay);
}

/* A length from two bytes: small unless the top bit asks for up to 2^15
 * (random lengths would otherwise nearly all be records of 2^14). */
static size_t length(const uint8_t *p)
{
    return p[0] & 0x80 ? (size_t)(p[0] & 0x7f) << 8 | p[1] : p[1];
}

/* ---- Mode 1: inner plaintexts against a model ---------------------------- */

/* What RFC 8446 says of inner[0..n) (and *alert), from the rules alone. */
static int model(const uint8_t *p, size_t n, uint8_t *alert)
{
    size_t end = n;
    *alert = 0;
    while (end > 0 && p[end - 1] == 0)
        end--;
    if (n > TLSREC_MAX_PLAIN + 1)
        return *alert = TLSREC_RECORD_OVERFLOW, TLSREC_ERROR;
    if (end == 0)
        return *alert = TLSREC_UNEXPECTED_MESSAGE, TLSREC_ERROR;
    size_t len = end - 1;
    switch (p[len]) {
    case TLSREC_CT_APPLICATION_DATA:
        return TLSREC_OK;
    case TLSREC_CT_ALERT:
        if (len != 2)
            return *alert = len ? TLSREC_DECODE_ERROR : TLSREC_UNEXPECTED_MESSAGE, TLSREC_ERROR;
        return p[1] == 0 ? TLSREC_EOF : (*alert = p[1], TLSREC_ALERT);
    case TLSREC_CT_HANDSHAKE:
        if (len < 4 || p[0] != 24)
            return *alert = TLSREC_UNEXPECTED_MESSAGE, TLSREC_ERROR;
        if (p[1] || p[2] || p[3] != 1)
            return *alert = TLSREC_DECODE_ERROR, TLSREC_ERROR;
        if (len != 5)
            return *alert = TLSREC_UNEXPECTED_MESSAGE, TLSREC_ERROR;
        if (p[4] > 1)
            return *alert = TLSREC_ILLEGAL_PARAMETER, TLSREC_ERROR;
        return p[4] ? TLSREC_KEYUPDATE : TLSREC_OK;
    default:
        return *alert = TLSREC_UNEXPECTED_MESSAGE, TLSREC_ERROR;
    }
}

/* Inner plaintext i: [length L (2 bytes)][fill byte f][bytes]: the bytes given
 * (at most L), then f up to L: f = 0 pads, f = 23 makes content and type of
 * it, so a few input bytes stand for a record of 2^14. */
static const uint8_t *next_inner(const uint8_t *p, size_t *n, size_t *k)
{
    size_t len = length(p), given;
    uint8_t f = p[2];
    if (len > TLSREC_MAX_RECORD - 21)
        len = TLSREC_MAX_RECORD - 21;
    given = len < *n - 3 ? len : *n - 3;
    memcpy(inner, p + 3, given);
    memset(inner + given, f, len - given);
    *k = len;
    *n -= 3 + given;
    return p + 3 + given;
}

static void inners(int si, const uint8_t *p, size_t n, int relay)
{
    struct tlsrec s = server0[si], c = client0[si];
    struct tlsrec_in in;
    uint8_t alert, junk[TLSREC_KEYUPDATE_SIZE];
    size_t k, len;
    while (n >= 3) {
        p = next_inner(p, &n, &k);
        len = protect(suites[si], &c.wr, inner, k, wire);
        int want = model(inner, k, &alert), r = tlsrec_open(&s, wire, len, &in);
        if (r != want || ((r == TLSREC_ERROR || r == TLSREC_ALERT) && in.alert != alert))
            die("tlsrec_open disagrees with the model");
        if (r == TLSREC_OK && in.type == TLSREC_CT_APPLICATION_DATA &&
            (in.data != wire + 5 || memcmp(in.data, inner, in.len) != 0))
            die("application data changed");
        if (r != TLSREC_OK && r != TLSREC_KEYUPDATE)
            return;
        if (in.type == TLSREC_CT_HANDSHAKE) { /* a KeyUpdate: the client moves on too */
            tlsrec_seal_keyupdate(&c, junk);
            if (memcmp(s.rd.key, c.wr.key, 32) != 0 || s.rd.seq != 0)
                die("the read key did not follow the KeyUpdate");
        }
        if (relay)
            hand_over(&s);
    }
}

/* ---- Mode 2: a conversation sealed by tlsrec, then one bit flipped ------- */

/* Data of a step: the bytes given (at most k), repeated up to k. */
static size_t step_data(const uint8_t *p, size_t n, size_t k, uint8_t *out)
{
    size_t given = k < n ? k : n, have = given;
    if (given == 0) {
        memset(out, 0, k);
        return 0;
    }
    memcpy(out, p, given);
    for (; have < k; have *= 2)
        memcpy(out + have, out, have < k - have ? have : k - have);
    return given;
}

/* The client's side of it into wire; record starts in starts[]. The bytes. */
static size_t converse(struct tlsrec *c, const uint8_t *p, size_t n, size_t *sentlen,
                       size_t *starts, size_t *nrec)
{
    static uint8_t data[1 << 16];
    size_t w = 0, outlen, used;
    *sentlen = *nrec = 0;
    while (n >= 3 && *nrec < 64) {
        uint8_t what = p[0] % 4, b[TLSREC_BLOB_SIZE];
        size_t k = length(p + 1), before = w;
        used = what == 0 ? step_data(p + 3, n - 3, k, data) : 0;
        if (what == 0 && tlsrec_seal_size(c, 23, k) <= WIRE_MAX - w &&
            tlsrec_seal(c, 23, data, k, wire + w, WIRE_MAX - w, &outlen) == TLSREC_OK) {
            memcpy(sent + *sentlen, data, k);
            *sentlen += k;
            w += outlen;
        } else if (what == 1 && w + TLSREC_KEYUPDATE_SIZE <= WIRE_MAX &&
                   tlsrec_seal_keyupdate(c, wire + w) == TLSREC_OK) {
            w += TLSREC_KEYUPDATE_SIZE;
        } else if (what == 2 && w + TLSREC_ALERT_SIZE <= WIRE_MAX &&
                   tlsrec_seal_alert(c, k & 1 ? TLSREC_CLOSE_NOTIFY : (uint8_t)k, wire + w) ==
                       TLSREC_OK) {
            w += TLSREC_ALERT_SIZE;
        } else if (what == 3) {
            tlsrec_export(c, b);
            if (tlsrec_import(c, b) != 0)
                die("the client's state was refused");
        }
        for (size_t at = before, len; at < w; at += len) { /* the records just made */
            len = TLSREC_HEADER_SIZE + ((size_t)wire[at + 3] << 8 | wire[at + 4]);
            starts[(*nrec)++ % 64] = at;
        }
        p += 3 + used;
        n -= 3 + used;
    }
    return w;
}

/* The server reads wire[0..w): the data it gets, and how it ended. */
static int read_back(struct tlsrec *s, size_t w, uint8_t *got, size_t *gotlen, size_t *stop,
                     int relay)
{
    struct tlsrec_in in;
    size_t off = 0, len;
    uint8_t alert;
    int r = TLSREC_OK;
    *gotlen = 0;
    while (off < w && (r = tlsrec_peek(wire + off, w - off, &len, &alert)) == TLSREC_OK) {
        r = tlsrec_open(s, wire + off, len, &in);
        if (r == TLSREC_ERROR)
            break;
        off += len; /* read: data, a KeyUpdate, or the last word (an alert) */
        if (r == TLSREC_EOF || r == TLSREC_ALERT)
            break;
        memcpy(got + *gotlen, in.data, in.len);
        *gotlen += in.len;
        if (relay)
            hand_over(s);
    }
    *stop = off;
    return r;
}

static void conversation(int si, const uint8_t *p, size_t n, int relay)
{
    static uint8_t got[WIRE_MAX], sealed[WIRE_MAX]; /* opening decrypts the wire in place */
    static size_t starts[64];
    struct tlsrec s = server0[si], c = client0[si];
    size_t sentlen, nrec, gotlen, stop, w, bit;
    if (n < 2)
        return;
    bit = (size_t)p[0] << 8 | p[1];
    w = converse(&c, p + 2, n - 2, &sentlen, starts, &nrec);
    memcpy(sealed, wire, w);
    int r = read_back(&s, w, got, &gotlen, &stop, relay);
    if (stop != w || gotlen != sentlen || memcmp(got, sent, sentlen) != 0 ||
        (r != TLSREC_OK && r != TLSREC_KEYUPDATE && r != TLSREC_EOF && r != TLSREC_ALERT))
        die("the server did not read back what tlsrec sealed");
    if (w == 0 || nrec > 64)
        return;
    bit %= 8 * w;
    memcpy(wire, sealed, w);
    wire[bit / 8] ^= (uint8_t)(1u << (bit % 8));
    size_t k = nrec;
    while (k > 0 && starts[k - 1] > bit / 8)
        k--; /* the flipped record starts at starts[k - 1] */
    s = server0[si];
    r = read_back(&s, w, got, &gotlen, &stop, relay);
    if (stop != starts[k - 1] || memcmp(got, sent, gotlen) != 0 ||
        (r != TLSREC_ERROR && r != TLSREC_AGAIN))
        die("a record with a bit flipped was taken, or one before it was not");
}

/* ---- Seeds ----------------------------------------------------------------- */

static void seed(const char *dir, const char *name, const uint8_t *p, size_t n)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (f == NULL || fwrite(p, 1, n, f) != n || fclose(f) != 0)
        die(path);
}

/* Mode 0 seed: a short stream of valid records. */
static void seeds_wire(const char *dir, int si)
{
    static const uint8_t ku_req[] = { 24, 0, 0, 1, 1, 22 };
    uint8_t buf[512], tmp[TLSREC_KEYUPDATE_SIZE];
    struct tlsrec c = client0[si];
    char name[64];
    size_t n = 1, outlen;
    buf[0] = (uint8_t)(si << 2);
    tlsrec_seal(&c, 23, (const uint8_t *)"GET / HTTP/1.1\r\n", 16, buf + n, 200, &outlen);
    n += outlen;
    n += protect(suites[si], &c.wr, ku_req, sizeof(ku_req), buf + n);
    tlsrec_seal_keyupdate(&c, tmp); /* the client's key moves on; the record is not sent */
    tlsrec_seal(&c, 23, (const uint8_t *)"\x81\x85hello", 7, buf + n, 200, &outlen);
    n += outlen;
    tlsrec_seal_alert(&c, TLSREC_CLOSE_NOTIFY, buf + n);
    n += TLSREC_ALERT_SIZE;
    snprintf(name, sizeof(name), "wire_%d_data_keyupdate_close", si);
    seed(dir, name, buf, n);
}

#define SEED(name, bytes) { name, (const uint8_t *)bytes, sizeof(bytes) - 1 }

static void seeds(const char *dir)
{
    /* Modes 1 and 2: no keys in them, the harness protects or seals. */
    static const struct { const char *name; const uint8_t *p; size_t n; } fixed[] = {
        SEED("inner_data_padding", "\x01\x00\x08\x00hi\x17\x00\x00\x00\x00\x00"
                                   "\x00\x01\x17\x17"),
        SEED("inner_keyupdates", "\x01\x00\x06\x00\x18\x00\x00\x01\x01\x16"
                                 "\x00\x06\x00\x18\x00\x00\x01\x00\x16" "\x00\x02\x00x\x17"),
        SEED("inner_alerts", "\x01\x00\x03\x00\x02\x28\x15"),
        SEED("inner_close", "\x01\x00\x04\x00\x01\x00\x15\x00"),
        SEED("inner_nst", "\x01\x00\x0a\x00\x04\x00\x00\x05\x00\x00\x00\x1e\x00\x16"),
        SEED("inner_full_record", "\x05\xc0\x01\x17"),
        SEED("inner_full_padding", "\x09\xc0\x01\x00" "ab\x17"),
        SEED("conversation", "\x02\x01\x23" "\x00\x00\x05" "hello" "\x01\x00\x00"
                             "\x00\x00\x03" "abc" "\x03\x00\x00" "\x00\xc0\x00" "ok"),
        SEED("conversation_close", "\x12\x00\x40" "\x00\x00\x02" "hi" "\x01\x00\x00"
                                   "\x02\x00\x01"),
        SEED("conversation_alert", "\x16\x00\x10" "\x00\x00\x01" "z" "\x02\x00\x28"),
    };
    uint8_t b[1 + TLSREC_BLOB_SIZE + 64];
    size_t outlen;
    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
        seed(dir, fixed[i].name, fixed[i].p, fixed[i].n);
    for (int si = 0; si < 3; si++)
        seeds_wire(dir, si);
    struct tlsrec c = client0[1];
    b[0] = 3 | 1 << 2;
    tlsrec_export(&server0[1], b + 1);
    tlsrec_seal(&c, 23, (const uint8_t *)"after the handoff", 17, b + 1 + TLSREC_BLOB_SIZE, 64,
                &outlen);
    seed(dir, "blob_then_record", b, 1 + TLSREC_BLOB_SIZE + outlen);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    uint8_t a[48], b[48];
    (void)argc;
    (void)argv;
    for (int i = 0; i < 48; i++)
        a[i] = (uint8_t)(0x11 * (i % 15 + 1)), b[i] = (uint8_t)(0xa5 ^ i);
    for (int si = 0; si < 3; si++) {
        size_t len = suites[si] == TLSREC_AES_256_GCM_SHA384 ? 48 : 32;
        if (tlsrec_init(&server0[si], suites[si], a, b, len, 0, 0) != 0 ||
            tlsrec_init(&client0[si], suites[si], b, a, len, 0, 0) != 0)
            die("init");
    }
    if (getenv("FUZZ_TLSREC_SEEDS") != NULL) {
        seeds(getenv("FUZZ_TLSREC_SEEDS"));
        exit(0);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int mode = data[0] & 3, si = ((data[0] >> 2) & 3) % 3, relay = (data[0] >> 4) & 1;
    const uint8_t *p = data + 1;
    size_t n = size - 1 > WIRE_MAX ? WIRE_MAX : size - 1;
    struct tlsrec s = server0[si];
    switch (mode) {
    case 0:
        memcpy(wire, p, n);
        open_wire(&s, wire, n, relay);
        break;
    case 1:
        inners(si, p, n, relay);
        break;
    case 2:
        conversation(si, p, n, relay);
        break;
    default:
        blob(&s, p, n, relay);
    }
    return 0;
}
