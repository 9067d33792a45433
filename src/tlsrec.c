#include "tlsrec.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <string.h>
#include <zlib.h>

/* Why a nonce never repeats under a key (RFC 8446 5.3: the nonce is the IV
 * XOR the sequence number, so a repeated (key, seq) pair is a repeated
 * nonce, which breaks AES-GCM and ChaCha20-Poly1305 alike):
 * - A key and its IV change together, only in set_dir, which starts the
 *   sequence at 0 for a new key (ratchet: KeyUpdate) or takes the number
 *   the previous owner of the key reached (init, import, capture: OpenSSL
 *   counted the records it protected, tlsrec_capture_take).
 * - seq is read only to make the nonce of the record about to be sealed
 *   or opened, and incremented only after that record succeeded: a failed
 *   seal ends the write side (TLSREC_WR_DONE), a failed open the read side
 *   (TLSREC_RD_FAILED), so no nonce is used twice for different records.
 * - The write side never passes TLSREC_SEQ_LIMIT (checked before sealing,
 *   with import and init refusing more), so it cannot wrap either; it
 *   sends its own KeyUpdate first once past TLSREC_REKEY_AFTER, well below
 *   AES-GCM's 2^24.5 records per key (RFC 8446 5.5). The read side refuses
 *   the record that would wrap 2^64 (the peer's key limits are its own).
 * - Export carries seq with its key; an exporter must not seal again after
 *   handing off (the same key and seq would then be in two processes). */

#define TAG 16

static const struct suite {
    uint16_t id;
    uint8_t hash_len, key_len;
    const char *md, *cipher;
} suites[] = {
    { TLSREC_AES_128_GCM_SHA256, 32, 16, "SHA256", "AES-128-GCM" },
    { TLSREC_AES_256_GCM_SHA384, 48, 32, "SHA384", "AES-256-GCM" },
    { TLSREC_CHACHA20_POLY1305_SHA256, 32, 32, "SHA256", "ChaCha20-Poly1305" },
};
#define NSUITES (sizeof(suites) / sizeof(suites[0]))

static const struct suite *suite_of(uint16_t id)
{
    for (size_t i = 0; i < NSUITES; i++)
        if (suites[i].id == id)
            return &suites[i];
    return NULL;
}

/* ---- The process's contexts --------------------------------------------- */

/* Cipher contexts are the process's, not the connections': one of its own
 * would be most of what an idle connection costs. Per suite and direction
 * a small table of them, each remembering the key it holds (the slot is
 * the key's first bytes, uniformly random), so the records of active
 * connections find their key schedule done: a key schedule and GCM's table
 * cost twice what setting a nonce does, per record. A slot a new key
 * lands on is simply re-keyed; a connection's keys leave the table when
 * it ends (tlsrec_clear). */
#define CTX_SLOTS 256

struct slot {
    EVP_CIPHER_CTX *c;
    uint8_t key[32];
    uint8_t keyed;
};

static struct {
    int ready;
    EVP_MAC_CTX *hmac[2];               /* HMAC-SHA256, HMAC-SHA384 */
    EVP_CIPHER *cipher[NSUITES];
    struct slot slot[NSUITES][2][CTX_SLOTS]; /* [suite][0: opens, 1: seals][key] */
} W;

static struct slot *slot_of(size_t suite, int enc, const uint8_t *key)
{
    uint32_t h;
    memcpy(&h, key, sizeof(h));
    return &W.slot[suite][enc][h % CTX_SLOTS];
}

void tlsrec_cleanup(void)
{
    for (size_t i = 0; i < NSUITES; i++) {
        for (int e = 0; e < 2; e++)
            for (size_t k = 0; k < CTX_SLOTS; k++)
                EVP_CIPHER_CTX_free(W.slot[i][e][k].c);
        EVP_CIPHER_free(W.cipher[i]);
    }
    EVP_MAC_CTX_free(W.hmac[0]);
    EVP_MAC_CTX_free(W.hmac[1]);
    OPENSSL_cleanse(&W, sizeof(W));
    memset(&W, 0, sizeof(W));
}

/* An HMAC context with its digest set, to be keyed per use. */
static EVP_MAC_CTX *hmac_new(EVP_MAC *mac, const char *md)
{
    OSSL_PARAM p[] = { OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)md, 0),
                       OSSL_PARAM_construct_end() };
    EVP_MAC_CTX *c = mac ? EVP_MAC_CTX_new(mac) : NULL; /* which holds a reference */
    if (c != NULL && EVP_MAC_CTX_set_params(c, p) != 1) {
        EVP_MAC_CTX_free(c);
        c = NULL;
    }
    return c;
}

int tlsrec_setup(void)
{
    EVP_MAC *mac;
    if (W.ready)
        return 0;
    mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    W.hmac[0] = hmac_new(mac, "SHA256");
    W.hmac[1] = hmac_new(mac, "SHA384");
    EVP_MAC_free(mac);
    W.ready = W.hmac[0] && W.hmac[1];
    for (size_t i = 0; i < NSUITES; i++) {
        W.cipher[i] = EVP_CIPHER_fetch(NULL, suites[i].cipher, NULL);
        W.ready &= W.cipher[i] != NULL;
    }
    if (W.ready)
        return 0;
    tlsrec_cleanup();
    ERR_clear_error();
    return -1;
}

/* The context for suite s and direction enc, set for key and nonce. */
static EVP_CIPHER_CTX *keyed(const struct suite *s, int enc, const uint8_t *key,
                             const uint8_t nonce[12])
{
    size_t i = (size_t)(s - suites);
    struct slot *sl = slot_of(i, enc, key);
    if (sl->keyed && CRYPTO_memcmp(sl->key, key, s->key_len) == 0)
        return EVP_CipherInit_ex2(sl->c, NULL, NULL, nonce, enc, NULL) == 1 ? sl->c : NULL;
    sl->keyed = 0;
    if (sl->c == NULL && (sl->c = EVP_CIPHER_CTX_new()) == NULL)
        return NULL;
    /* Naming the cipher again would make OpenSSL free and allocate the
     * provider's context: a new key only needs its key schedule. */
    if (EVP_CipherInit_ex2(sl->c, EVP_CIPHER_CTX_get0_cipher(sl->c) ? NULL : W.cipher[i], key,
                           nonce, enc, NULL) != 1)
        return NULL;
    memcpy(sl->key, key, s->key_len);
    sl->keyed = 1;
    return sl->c;
}

/* A key that is done with leaves the table: its slot is keyed anew with
 * zeros, so that its schedule does not outlive the connection. */
static void forget_key(const struct suite *s, int enc, const uint8_t *key)
{
    static const uint8_t zero[32];
    size_t i = (size_t)(s - suites);
    struct slot *sl = slot_of(i, enc, key);
    if (!sl->keyed || CRYPTO_memcmp(sl->key, key, s->key_len) != 0)
        return;
    sl->keyed = 0;
    OPENSSL_cleanse(sl->key, sizeof(sl->key));
    if (EVP_CipherInit_ex2(sl->c, NULL, zero, NULL, enc, NULL) != 1)
        ERR_clear_error();
}

static void make_nonce(const struct tlsrec_dir *d, uint8_t nonce[12])
{
    memcpy(nonce, d->iv, 12);
    for (int i = 0; i < 8; i++)
        nonce[11 - i] ^= (uint8_t)(d->seq >> (8 * i));
}

/* ---- Keys (RFC 8446 7.1, 7.3) ------------------------------------------- */

/* HKDF-Expand-Label(secret, label, "", n). Every length asked here is at
 * most the hash's, so HKDF-Expand is its first block alone (RFC 5869 2.3):
 * HMAC(secret, HkdfLabel || 0x01). 0, or -1. */
static int expand_label(const struct suite *s, const uint8_t *secret, const char *label,
                        uint8_t *out, size_t n)
{
    EVP_MAC_CTX *m = W.hmac[s->hash_len == 48];
    uint8_t info[2 + 1 + 6 + 16 + 1 + 1], t[48];
    size_t ll = strlen(label), tl = 0;
    int r = -1;
    info[0] = (uint8_t)(n >> 8);
    info[1] = (uint8_t)n;
    info[2] = (uint8_t)(6 + ll);
    memcpy(info + 3, "tls13 ", 6);
    memcpy(info + 9, label, ll);
    info[9 + ll] = 0;  /* no context */
    info[10 + ll] = 1; /* the block's counter */
    if (n <= s->hash_len && EVP_MAC_init(m, secret, s->hash_len, NULL) == 1 &&
        EVP_MAC_update(m, info, 11 + ll) == 1 && EVP_MAC_final(m, t, &tl, sizeof(t)) == 1 &&
        tl == s->hash_len) {
        memcpy(out, t, n);
        r = 0;
    }
    OPENSSL_cleanse(t, sizeof(t));
    if (r < 0)
        ERR_clear_error();
    return r;
}

/* d from secret, at seq; d is left as it was on failure. */
static int set_dir(const struct suite *s, struct tlsrec_dir *d, const uint8_t *secret,
                   uint64_t seq)
{
    struct tlsrec_dir n;
    int r;
    memset(&n, 0, sizeof(n));
    memcpy(n.secret, secret, s->hash_len);
    n.seq = seq;
    r = expand_label(s, secret, "key", n.key, s->key_len) == 0 &&
        expand_label(s, secret, "iv", n.iv, 12) == 0 ? 0 : -1;
    if (r == 0)
        *d = n;
    OPENSSL_cleanse(&n, sizeof(n));
    return r;
}

/* secret (hash_len bytes) becomes the next one (RFC 8446 7.2). */
static int next_secret(const struct suite *s, uint8_t *secret)
{
    uint8_t next[48];
    int r = expand_label(s, secret, "traffic upd", next, s->hash_len);
    if (r == 0)
        memcpy(secret, next, s->hash_len);
    OPENSSL_cleanse(next, sizeof(next));
    return r;
}

/* A KeyUpdate: the next secret, its key and IV, seq 0. */
static int ratchet(const struct suite *s, struct tlsrec_dir *d)
{
    uint8_t secret[48];
    int r;
    memcpy(secret, d->secret, sizeof(secret));
    r = next_secret(s, secret) == 0 ? set_dir(s, d, secret, 0) : -1;
    OPENSSL_cleanse(secret, sizeof(secret));
    return r;
}

int tlsrec_init(struct tlsrec *t, uint16_t suite, const uint8_t *rsecret, const uint8_t *wsecret,
                size_t len, uint64_t rseq, uint64_t wseq)
{
    const struct suite *s = suite_of(suite);
    struct tlsrec n;
    int r = -1;
    if (s == NULL || len != s->hash_len || wseq > TLSREC_SEQ_LIMIT || rseq == UINT64_MAX ||
        tlsrec_setup() < 0)
        return -1;
    memset(&n, 0, sizeof(n));
    n.suite = suite;
    if (set_dir(s, &n.rd, rsecret, rseq) == 0 && set_dir(s, &n.wr, wsecret, wseq) == 0) {
        *t = n;
        r = 0;
    }
    OPENSSL_cleanse(&n, sizeof(n));
    return r;
}

void tlsrec_clear(struct tlsrec *t)
{
    const struct suite *s = suite_of(t->suite);
    if (s != NULL && W.ready) {
        forget_key(s, 0, t->rd.key);
        forget_key(s, 1, t->wr.key);
    }
    OPENSSL_cleanse(t, sizeof(*t));
}

/* ---- Seal ---------------------------------------------------------------- */

static size_t records(size_t n)
{
    return n / TLSREC_MAX_PLAIN + (n % TLSREC_MAX_PLAIN != 0);
}

/* in[0..n) (n <= 2^14) of type as one record at out, under d's key. */
static int seal_record(const struct suite *s, struct tlsrec_dir *d, uint8_t type,
                       const uint8_t *in, size_t n, uint8_t *out)
{
    size_t body = n + 1 + TAG;
    uint8_t nonce[12];
    EVP_CIPHER_CTX *c;
    int l;
    out[0] = TLSREC_CT_APPLICATION_DATA;
    out[1] = 3;
    out[2] = 3;
    out[3] = (uint8_t)(body >> 8);
    out[4] = (uint8_t)body;
    make_nonce(d, nonce);
    if ((c = keyed(s, 1, d->key, nonce)) == NULL ||
        EVP_CipherUpdate(c, NULL, &l, out, TLSREC_HEADER_SIZE) != 1 ||
        (n > 0 && EVP_CipherUpdate(c, out + 5, &l, in, (int)n) != 1) ||
        EVP_CipherUpdate(c, out + 5 + n, &l, &type, 1) != 1 ||
        EVP_CipherFinal_ex(c, out + 6 + n, &l) != 1 ||
        EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_GET_TAG, TAG, out + 6 + n) != 1)
        return -1;
    d->seq++;
    return 0;
}

/* The write side is lost: part of a record may be out, or a key is gone. */
static int seal_failed(struct tlsrec *t)
{
    t->flags |= TLSREC_WR_DONE;
    ERR_clear_error();
    return TLSREC_ERROR;
}

static int keyupdate_first(const struct tlsrec *t, uint8_t type)
{
    return type == TLSREC_CT_APPLICATION_DATA &&
           ((t->flags & TLSREC_KU_OWED) || t->wr.seq >= TLSREC_REKEY_AFTER);
}

size_t tlsrec_seal_size(const struct tlsrec *t, uint8_t type, size_t n)
{
    if (n == 0)
        return 0;
    if (n > SIZE_MAX / 2)
        return SIZE_MAX;
    return n + records(n) * TLSREC_OVERHEAD +
           (keyupdate_first(t, type) ? TLSREC_KEYUPDATE_SIZE : 0);
}

static int keyupdate(const struct suite *s, struct tlsrec *t, uint8_t *out)
{
    static const uint8_t msg[5] = { 24, 0, 0, 1, 0 }; /* KeyUpdate(update_not_requested) */
    if (seal_record(s, &t->wr, TLSREC_CT_HANDSHAKE, msg, sizeof(msg), out) < 0 ||
        ratchet(s, &t->wr) < 0)
        return -1;
    t->flags &= (uint8_t)~TLSREC_KU_OWED;
    return 0;
}

int tlsrec_seal(struct tlsrec *t, uint8_t type, const uint8_t *in, size_t n, uint8_t *out,
                size_t cap, size_t *outlen)
{
    const struct suite *s = suite_of(t->suite);
    int ku = keyupdate_first(t, type);
    size_t o = 0;
    *outlen = 0;
    if (s == NULL || (type != TLSREC_CT_APPLICATION_DATA && type != TLSREC_CT_HANDSHAKE) ||
        (t->flags & TLSREC_WR_DONE) || tlsrec_seal_size(t, type, n) > cap || tlsrec_setup() < 0)
        return TLSREC_ERROR;
    if (n == 0)
        return TLSREC_OK;
    /* After a KeyUpdate the records start a new key: only it must fit this one. */
    if (ku ? t->wr.seq >= TLSREC_SEQ_LIMIT || records(n) > TLSREC_SEQ_LIMIT
           : records(n) > TLSREC_SEQ_LIMIT - t->wr.seq)
        return TLSREC_ERROR;
    if (ku) {
        if (keyupdate(s, t, out) < 0)
            return seal_failed(t);
        o = TLSREC_KEYUPDATE_SIZE;
    }
    for (size_t done = 0, k; done < n; done += k) {
        k = n - done < TLSREC_MAX_PLAIN ? n - done : TLSREC_MAX_PLAIN;
        if (seal_record(s, &t->wr, type, in + done, k, out + o) < 0)
            return seal_failed(t);
        o += k + TLSREC_OVERHEAD;
    }
    *outlen = o;
    return TLSREC_OK;
}

int tlsrec_seal_keyupdate(struct tlsrec *t, uint8_t out[TLSREC_KEYUPDATE_SIZE])
{
    const struct suite *s = suite_of(t->suite);
    if (s == NULL || (t->flags & TLSREC_WR_DONE) || t->wr.seq >= TLSREC_SEQ_LIMIT ||
        tlsrec_setup() < 0)
        return TLSREC_ERROR;
    return keyupdate(s, t, out) == 0 ? TLSREC_OK : seal_failed(t);
}

int tlsrec_seal_alert(struct tlsrec *t, uint8_t alert, uint8_t out[TLSREC_ALERT_SIZE])
{
    const struct suite *s = suite_of(t->suite);
    /* TLS 1.3 reads the level from the description (RFC 8446 6); the two
     * closures are warnings, as every implementation sends them. */
    uint8_t msg[2] = { alert == TLSREC_CLOSE_NOTIFY || alert == TLSREC_USER_CANCELED ? 1 : 2,
                       alert };
    if (s == NULL || (t->flags & TLSREC_WR_DONE) || t->wr.seq >= TLSREC_SEQ_LIMIT ||
        tlsrec_setup() < 0)
        return TLSREC_ERROR;
    t->flags |= TLSREC_WR_DONE; /* sent or not, this is the last word */
    if (seal_record(s, &t->wr, TLSREC_CT_ALERT, msg, sizeof(msg), out) == 0)
        return TLSREC_OK;
    ERR_clear_error();
    return TLSREC_ERROR;
}

/* ---- Open ---------------------------------------------------------------- */

int tlsrec_peek(const uint8_t *buf, size_t n, size_t *len, uint8_t *alert)
{
    size_t body;
    /* Each byte is judged as it comes: garbage is refused without waiting
     * for the length it claims. After the handshake every record is
     * protected, so only application_data is a valid outer type
     * (RFC 8446 5: an unprotected change_cipher_spec or alert now is an
     * unexpected record). The legacy version is always 0x0303 (5.2):
     * another is refused as OpenSSL refuses it. */
    if (n >= 1 && buf[0] != TLSREC_CT_APPLICATION_DATA) {
        *alert = TLSREC_UNEXPECTED_MESSAGE;
        return TLSREC_ERROR;
    }
    if ((n >= 2 && buf[1] != 3) || (n >= 3 && buf[2] != 3)) {
        *alert = TLSREC_DECODE_ERROR;
        return TLSREC_ERROR;
    }
    if (n < TLSREC_HEADER_SIZE)
        return TLSREC_AGAIN;
    body = (size_t)buf[3] << 8 | buf[4];
    if (body > TLSREC_MAX_RECORD - TLSREC_HEADER_SIZE) {
        *alert = TLSREC_RECORD_OVERFLOW; /* RFC 8446 5.2 */
        return TLSREC_ERROR;
    }
    *len = TLSREC_HEADER_SIZE + body;
    return n >= *len ? TLSREC_OK : TLSREC_AGAIN;
}

/* The read side is over: what comes after an error is not read. */
static int refuse(struct tlsrec *t, struct tlsrec_in *in, uint8_t alert)
{
    t->flags |= TLSREC_RD_FAILED;
    in->data = NULL;
    in->len = 0;
    in->alert = alert;
    ERR_clear_error();
    return TLSREC_ERROR;
}

/* rec[0..len) decrypted in place: 0, or the alert. */
static uint8_t decrypt(const struct suite *s, struct tlsrec_dir *d, uint8_t *rec, size_t len)
{
    size_t n = len - TLSREC_HEADER_SIZE - TAG;
    uint8_t nonce[12];
    EVP_CIPHER_CTX *c;
    int l;
    make_nonce(d, nonce);
    if ((c = keyed(s, 0, d->key, nonce)) == NULL ||
        EVP_CipherUpdate(c, NULL, &l, rec, TLSREC_HEADER_SIZE) != 1 ||
        (n > 0 && EVP_CipherUpdate(c, rec + 5, &l, rec + 5, (int)n) != 1) ||
        EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_SET_TAG, TAG, rec + 5 + n) != 1)
        return TLSREC_INTERNAL_ERROR;
    /* RFC 8446 5.2: whatever does not authenticate is bad_record_mac. */
    return EVP_CipherFinal_ex(c, rec + 5 + n, &l) == 1 ? 0 : TLSREC_BAD_RECORD_MAC;
}

int tlsrec_unprotect(struct tlsrec *t, uint8_t *rec, size_t len, struct tlsrec_in *in)
{
    const struct suite *s = suite_of(t->suite);
    size_t whole, end;
    uint8_t alert = TLSREC_INTERNAL_ERROR;
    memset(in, 0, sizeof(*in));
    if (s == NULL || (t->flags & TLSREC_RD_FAILED) || t->rd.seq == UINT64_MAX ||
        tlsrec_setup() < 0)
        return refuse(t, in, TLSREC_INTERNAL_ERROR);
    if (tlsrec_peek(rec, len, &whole, &alert) != TLSREC_OK || whole != len)
        return refuse(t, in, alert); /* a header refused, or not one record */
    if (len < TLSREC_HEADER_SIZE + TAG)
        return refuse(t, in, TLSREC_BAD_RECORD_MAC); /* no room for a tag */
    if ((alert = decrypt(s, &t->rd, rec, len)) != 0)
        return refuse(t, in, alert);
    t->rd.seq++;
    whole = len - TLSREC_HEADER_SIZE - TAG; /* TLSInnerPlaintext */
    /* RFC 8446 5.4: the padding counts in the 2^14 + 1 limit. */
    if (whole > TLSREC_MAX_PLAIN + 1)
        return refuse(t, in, TLSREC_RECORD_OVERFLOW);
    for (end = whole; end > 0 && rec[TLSREC_HEADER_SIZE + end - 1] == 0; end--)
        ;
    if (end == 0)
        return refuse(t, in, TLSREC_UNEXPECTED_MESSAGE); /* no content type (5.4) */
    in->type = rec[TLSREC_HEADER_SIZE + end - 1];
    in->data = rec + TLSREC_HEADER_SIZE;
    in->len = end - 1;
    return TLSREC_OK;
}

static int on_alert(struct tlsrec *t, struct tlsrec_in *in)
{
    uint8_t desc;
    /* One alert per record, two bytes (RFC 8446 6); an empty alert record
     * is an empty non-data record (below), anything else cannot be decoded. */
    if (in->len != 2)
        return refuse(t, in, in->len == 0 ? TLSREC_UNEXPECTED_MESSAGE : TLSREC_DECODE_ERROR);
    desc = in->data[1];
    in->data = NULL;
    in->len = 0;
    if (desc == TLSREC_CLOSE_NOTIFY) {
        t->flags |= TLSREC_RD_EOF;
        return TLSREC_EOF;
    }
    /* Every other alert ends the connection in TLS 1.3, user_canceled too
     * (it is followed by a close_notify we do not need to wait for). */
    t->flags |= TLSREC_RD_FAILED;
    in->alert = desc;
    return TLSREC_ALERT;
}

/* A client sends only one handshake message after its Finished to a server
 * that requests no certificate: KeyUpdate (RFC 8446 4.6). A KeyUpdate
 * changes the key, so it must end its record (5.1): a record holds one
 * message, whole. A second message behind it, a message split across
 * records, another type (a NewSessionTicket, a CertificateRequest, a
 * Certificate no one asked for) and an empty record are unexpected. */
static int on_handshake(const struct suite *s, struct tlsrec *t, struct tlsrec_in *in)
{
    const uint8_t *p = in->data;
    size_t n = in->len;
    in->len = 0; /* nothing for the caller; data still points into the record */
    if (n == 0 || p[0] != 24 || n < 4)
        return refuse(t, in, TLSREC_UNEXPECTED_MESSAGE);
    if (p[1] != 0 || p[2] != 0 || p[3] != 1)
        return refuse(t, in, TLSREC_DECODE_ERROR); /* a KeyUpdate is one byte */
    if (n != 5) /* split, or not at the record's end (as OpenSSL, before its value) */
        return refuse(t, in, TLSREC_UNEXPECTED_MESSAGE);
    if (p[4] > 1)
        return refuse(t, in, TLSREC_ILLEGAL_PARAMETER); /* 4.6.3 */
    if (ratchet(s, &t->rd) < 0)
        return refuse(t, in, TLSREC_INTERNAL_ERROR);
    if (p[4] == 0)
        return TLSREC_OK;
    /* RFC 4.6.3: ours goes before our next application data (tlsrec_seal
     * sees to it); several requests before it need one answer. */
    t->flags |= TLSREC_KU_OWED;
    return TLSREC_KEYUPDATE;
}

int tlsrec_open(struct tlsrec *t, uint8_t *rec, size_t len, struct tlsrec_in *in)
{
    int r;
    if (t->flags & TLSREC_RD_EOF) {
        /* RFC 8446 6.1: what follows a close_notify is ignored. */
        memset(in, 0, sizeof(*in));
        return TLSREC_EOF;
    }
    if ((r = tlsrec_unprotect(t, rec, len, in)) != TLSREC_OK)
        return r;
    switch (in->type) {
    case TLSREC_CT_APPLICATION_DATA:
        return TLSREC_OK; /* even empty: RFC 8446 5.1 allows it */
    case TLSREC_CT_ALERT:
        return on_alert(t, in);
    case TLSREC_CT_HANDSHAKE:
        return on_handshake(suite_of(t->suite), t, in);
    default:
        /* change_cipher_spec too: protected, it is never valid (RFC 8446 5). */
        return refuse(t, in, TLSREC_UNEXPECTED_MESSAGE);
    }
}

/* ---- Export, import ------------------------------------------------------ */

/* Layout (big-endian): "wsTR", version 1, flags, suite, then read and
 * write as seq (8), secret (48), key (32), IV (12), with the bytes past the
 * suite's lengths zero, and a CRC-32 of all that. The CRC catches a blob
 * damaged or cut on its way; it authenticates nothing (the channel between
 * the processes is ours). */
#define BLOB_VERSION 1
#define DIR_SIZE     100
#define ALL_FLAGS    (TLSREC_KU_OWED | TLSREC_RD_EOF | TLSREC_RD_FAILED | TLSREC_WR_DONE)

static void put_dir(uint8_t *p, const struct tlsrec_dir *d)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(d->seq >> (56 - 8 * i));
    memcpy(p + 8, d->secret, 48);
    memcpy(p + 56, d->key, 32);
    memcpy(p + 88, d->iv, 12);
}

static int zeros(const uint8_t *p, size_t n)
{
    uint8_t any = 0;
    while (n-- > 0)
        any |= *p++;
    return any == 0;
}

static int get_dir(const struct suite *s, struct tlsrec_dir *d, const uint8_t *p)
{
    d->seq = 0;
    for (int i = 0; i < 8; i++)
        d->seq = d->seq << 8 | p[i];
    memcpy(d->secret, p + 8, 48);
    memcpy(d->key, p + 56, 32);
    memcpy(d->iv, p + 88, 12);
    return zeros(d->secret + s->hash_len, 48 - s->hash_len) &&
           zeros(d->key + s->key_len, 32 - s->key_len) ? 0 : -1;
}

static uint32_t blob_crc(const uint8_t *blob)
{
    return (uint32_t)crc32(0, blob, TLSREC_BLOB_SIZE - 4);
}

void tlsrec_export(const struct tlsrec *t, uint8_t blob[TLSREC_BLOB_SIZE])
{
    uint32_t crc;
    memcpy(blob, "wsTR", 4);
    blob[4] = BLOB_VERSION;
    blob[5] = t->flags;
    blob[6] = (uint8_t)(t->suite >> 8);
    blob[7] = (uint8_t)t->suite;
    put_dir(blob + 8, &t->rd);
    put_dir(blob + 8 + DIR_SIZE, &t->wr);
    crc = blob_crc(blob);
    for (int i = 0; i < 4; i++)
        blob[TLSREC_BLOB_SIZE - 4 + i] = (uint8_t)(crc >> (24 - 8 * i));
}

int tlsrec_import(struct tlsrec *t, const uint8_t blob[TLSREC_BLOB_SIZE])
{
    const uint8_t *c = blob + TLSREC_BLOB_SIZE - 4;
    const struct suite *s;
    struct tlsrec n;
    int r = -1;
    if (memcmp(blob, "wsTR", 4) != 0 || blob[4] != BLOB_VERSION ||
        ((uint32_t)c[0] << 24 | (uint32_t)c[1] << 16 | (uint32_t)c[2] << 8 | c[3]) !=
            blob_crc(blob))
        return -1;
    memset(&n, 0, sizeof(n));
    n.flags = blob[5];
    n.suite = (uint16_t)(blob[6] << 8 | blob[7]);
    if ((s = suite_of(n.suite)) != NULL && (n.flags & ~ALL_FLAGS) == 0 &&
        get_dir(s, &n.rd, blob + 8) == 0 && get_dir(s, &n.wr, blob + 8 + DIR_SIZE) == 0 &&
        n.rd.seq != UINT64_MAX && n.wr.seq <= TLSREC_SEQ_LIMIT) {
        *t = n;
        r = 0;
    }
    OPENSSL_cleanse(&n, sizeof(n));
    return r;
}

/* ---- Capture from OpenSSL ------------------------------------------------ */

/* What one server SSL's handshake left, kept from its keylog lines and
 * message callbacks. Direction [0] is what the server reads (the client's
 * secret), [1] what it writes. OpenSSL switches a direction to its
 * application key right after the Finished going that way (the server's
 * written, the client's read), and to the next key right after a
 * KeyUpdate, so a direction's count restarts there. Written records are
 * counted at their header, made once the record is sealed; read ones when
 * OpenSSL reports their inner content type, once decrypted: a record whose
 * header came without its body yet (reading) would be lost. */
struct capture {
    uint64_t count[2];          /* records under the direction's current key */
    uint32_t updates[2];        /* KeyUpdates since the first application key */
    uint8_t app[2];             /* an application key is in use */
    uint8_t reading;            /* a record's header came, not yet its body */
    uint8_t len[2];             /* of the secrets below; 0: none */
    uint8_t secret[2][48];      /* CLIENT_ and SERVER_TRAFFIC_SECRET_0 */
};

/* What the context had before ours, called first. */
struct chain {
    SSL_CTX_keylog_cb_func keylog;
};

static int ssl_index = -1, ctx_index = -1;

static void capture_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
                         void *argp)
{
    (void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
    OPENSSL_clear_free(ptr, sizeof(struct capture));
}

/* SSL_dup's copy starts without one: two owners would free it twice. */
static int capture_dup(CRYPTO_EX_DATA *to, const CRYPTO_EX_DATA *from, void **from_d, int idx,
                       long argl, void *argp)
{
    (void)to, (void)from, (void)idx, (void)argl, (void)argp;
    *from_d = NULL;
    return 1;
}

static void chain_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
                       void *argp)
{
    (void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
    OPENSSL_free(ptr);
}

static struct capture *capture_of(const SSL *ssl)
{
    return ssl_index >= 0 ? SSL_get_ex_data(ssl, ssl_index) : NULL;
}

static int hex_to(const char *h, size_t n, uint8_t *out)
{
    for (size_t i = 0; i < 2 * n; i++) {
        int c = h[i], v = c >= '0' && c <= '9' ? c - '0'
                        : c >= 'a' && c <= 'f' ? c - 'a' + 10
                        : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (v < 0)
            return -1;
        out[i / 2] = (uint8_t)(i % 2 ? out[i / 2] << 4 | v : v);
    }
    return 0;
}

/* "<client random> <secret>", both hex, for direction i, if the random
 * is this connection's. */
static void keep_secret(const SSL *ssl, struct capture *c, int i, const char *p)
{
    uint8_t mine[32], theirs[32];
    size_t n = strlen(p);
    size_t len = n > 65 ? (n - 65) / 2 : 0;
    if ((len != 32 && len != 48) || n != 65 + 2 * len || p[64] != ' ' ||
        hex_to(p, 32, theirs) < 0 || SSL_get_client_random(ssl, mine, 32) != 32 ||
        CRYPTO_memcmp(mine, theirs, 32) != 0 || hex_to(p + 65, len, c->secret[i]) < 0)
        return; /* then there is no secret to take */
    c->len[i] = (uint8_t)len;
}

static int starts(const char *line, const char *label)
{
    return strncmp(line, label, strlen(label)) == 0;
}

static void on_keylog(const SSL *ssl, const char *line)
{
    struct chain *ch = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), ctx_index);
    struct capture *c = capture_of(ssl);
    if (ch != NULL && ch->keylog != NULL)
        ch->keylog(ssl, line);
    /* The handshake keys come before the server's Finished, which the
     * counts start from: the capture begins with them. OpenSSL calls this
     * on its own (non-const) SSL. */
    if (c == NULL && (starts(line, "SERVER_HANDSHAKE_TRAFFIC_SECRET ") ||
                      starts(line, "CLIENT_HANDSHAKE_TRAFFIC_SECRET "))) {
        if ((c = OPENSSL_zalloc(sizeof(*c))) != NULL && !SSL_set_ex_data((SSL *)ssl, ssl_index, c))
            OPENSSL_free(c);
        ERR_clear_error();
        return;
    }
    if (c != NULL && starts(line, "CLIENT_TRAFFIC_SECRET_0 "))
        keep_secret(ssl, c, 0, line + strlen("CLIENT_TRAFFIC_SECRET_0 "));
    else if (c != NULL && starts(line, "SERVER_TRAFFIC_SECRET_0 "))
        keep_secret(ssl, c, 1, line + strlen("SERVER_TRAFFIC_SECRET_0 "));
}

static void on_msg(int write_p, int version, int type, const void *buf, size_t len, SSL *ssl,
                   void *arg)
{
    struct capture *c = capture_of(ssl);
    const uint8_t *p = buf;
    int w = write_p != 0;
    (void)version, (void)arg;
    if (c == NULL)
        return;
    if (type == SSL3_RT_HEADER) {
        if (w && c->app[1])
            c->count[1]++;
        else if (!w && c->app[0])
            c->reading = 1;
    } else if (type == SSL3_RT_INNER_CONTENT_TYPE && !w && c->app[0]) {
        c->count[0]++;
        c->reading = 0;
    } else if (type == SSL3_RT_HANDSHAKE && len > 0 && p[0] == SSL3_MT_FINISHED && !c->app[w]) {
        c->app[w] = 1;
        c->count[w] = 0;
    } else if (type == SSL3_RT_HANDSHAKE && len > 0 && p[0] == SSL3_MT_KEY_UPDATE && c->app[w]) {
        c->updates[w]++;
        c->count[w] = 0;
    }
}

int tlsrec_capture_attach(SSL_CTX *ctx)
{
    SSL_CTX_keylog_cb_func prev = SSL_CTX_get_keylog_callback(ctx);
    struct chain *ch;
    if (ssl_index < 0)
        ssl_index = SSL_get_ex_new_index(0, NULL, NULL, capture_dup, capture_free);
    if (ctx_index < 0)
        ctx_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, chain_free);
    if (ssl_index < 0 || ctx_index < 0) {
        ERR_clear_error();
        return -1;
    }
    if (prev != on_keylog) { /* not attached yet */
        if ((ch = OPENSSL_zalloc(sizeof(*ch))) == NULL) {
            ERR_clear_error();
            return -1;
        }
        ch->keylog = prev;
        OPENSSL_free(SSL_CTX_get_ex_data(ctx, ctx_index));
        if (!SSL_CTX_set_ex_data(ctx, ctx_index, ch)) {
            OPENSSL_free(ch);
            ERR_clear_error();
            return -1;
        }
        SSL_CTX_set_keylog_callback(ctx, on_keylog);
    }
    SSL_CTX_set_msg_callback(ctx, on_msg);
    return 0;
}

/* t from what c saw: each secret moved on by the KeyUpdates OpenSSL made. */
static int from_capture(const struct capture *c, uint16_t suite, struct tlsrec *t)
{
    const struct suite *s = suite_of(suite);
    uint8_t secret[2][48];
    int r = -1;
    if (s == NULL || c->len[0] != s->hash_len || c->len[1] != s->hash_len ||
        tlsrec_setup() < 0)
        return -1;
    memcpy(secret, c->secret, sizeof(secret));
    for (int i = 0; i < 2; i++)
        for (uint32_t u = 0; u < c->updates[i]; u++)
            if (next_secret(s, secret[i]) < 0)
                goto out;
    r = tlsrec_init(t, suite, secret[0], secret[1], s->hash_len, c->count[0], c->count[1]);
out:
    OPENSSL_cleanse(secret, sizeof(secret));
    return r;
}

int tlsrec_capture_take(SSL *ssl, struct tlsrec *t)
{
    struct capture *c = capture_of(ssl);
    const SSL_CIPHER *cipher = SSL_get_current_cipher(ssl);
    int ku = SSL_get_key_update_type(ssl);
    if (c == NULL || cipher == NULL || SSL_version(ssl) != TLS1_3_VERSION || !SSL_is_server(ssl) ||
        SSL_get_shutdown(ssl) != 0)
        return TLSREC_ERROR;
    /* OpenSSL sends a KeyUpdate asked with SSL_key_update at its next call:
     * one not requested is ours to send (owed), one requesting an answer
     * must go from OpenSSL first. */
    if (!SSL_is_init_finished(ssl) || SSL_has_pending(ssl) || SSL_want_write(ssl) ||
        c->reading || ku == SSL_KEY_UPDATE_REQUESTED)
        return TLSREC_AGAIN;
    if (!c->app[0] || !c->app[1] ||
        from_capture(c, (uint16_t)SSL_CIPHER_get_protocol_id(cipher), t) < 0)
        return TLSREC_ERROR;
    if (ku == SSL_KEY_UPDATE_NOT_REQUESTED)
        t->flags |= TLSREC_KU_OWED;
    SSL_set_ex_data(ssl, ssl_index, NULL);
    OPENSSL_clear_free(c, sizeof(*c));
    return TLSREC_OK;
}
