/* The TLS 1.3 record layer of an established server connection, kept by
 * wsechod itself once OpenSSL has done the handshake (as kTLS does in the
 * kernel): the SSL object can then be freed, so an idle connection costs
 * this struct instead of OpenSSL's ~13 KiB, and the whole state fits a
 * fixed-size blob that another process can take over.
 *
 * - State: per direction the traffic secret (for KeyUpdate), key, IV and
 *   64-bit sequence number, and the suite (TLS_AES_128_GCM_SHA256,
 *   TLS_AES_256_GCM_SHA384, TLS_CHACHA20_POLY1305_SHA256). No cipher
 *   context per connection: each process keeps one per suite and
 *   direction, keyed per call (and not re-keyed when the same key comes
 *   twice in a row).
 * - Keys come from traffic secrets as RFC 8446 7.1 and 7.3 derive them
 *   (HKDF-Expand-Label "key", "iv"; "traffic upd" for a KeyUpdate), with
 *   one HMAC context per hash, also per process.
 * - Seal: content into records of at most 2^14 bytes each, written straight
 *   into the caller's buffer (tlsrec_seal_size says how much it needs).
 * - Open: tlsrec_peek frames a record from its header (and refuses a bad
 *   header before the rest arrives); tlsrec_open decrypts it in place and
 *   handles it: application data is returned, close_notify is an EOF, any
 *   other alert ends the connection, a KeyUpdate changes the read key (and
 *   when it asks, ours is owed). Everything else is refused with the alert
 *   RFC 8446 names, to be sent (tlsrec_seal_alert) before closing; nothing
 *   is silently dropped. The peer is a client: it may send application
 *   data, alerts and KeyUpdates, nothing else.
 * - Nonces never repeat under a key: a sequence number advances only once
 *   a record is sealed or opened, a key changes only by KeyUpdate (which
 *   starts it at 0), and the write side sends its own KeyUpdate long
 *   before the RFC 8446 5.5 limit for AES-GCM (tlsrec.c argues it).
 * - Export/import: the whole state as TLSREC_BLOB_SIZE bytes, versioned
 *   and checked on import.
 * - Capture: tlsrec_capture_attach on an SSL_CTX watches its handshakes
 *   (keylog and message callbacks), and tlsrec_capture_take fills the
 *   state from a server SSL whose TLS 1.3 handshake is done.
 *
 * Results: TLSREC_OK, or a TLSREC_* below. Alerts and content types are
 * the RFC 8446 code points. Buffers are always the caller's: nothing here
 * keeps a pointer past the call, and nothing allocates but the capture.
 * One thread per process (a worker): the cipher contexts are shared. */
#ifndef WSECHOD_TLSREC_H
#define WSECHOD_TLSREC_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/types.h>

enum {
    TLSREC_OK = 0,
    TLSREC_ERROR = -1,       /* failed; from open: send its alert (tlsrec_seal_alert), close */
    TLSREC_AGAIN = -2,       /* not yet: more bytes (peek), or OpenSSL is mid-way (capture) */
    TLSREC_EOF = -3,         /* the peer's close_notify */
    TLSREC_ALERT = -4,       /* the peer's alert (given): close, say nothing */
    TLSREC_KEYUPDATE = 1,    /* opened; the peer asked for our KeyUpdate, now owed */
};

enum { TLSREC_CT_ALERT = 21, TLSREC_CT_HANDSHAKE = 22, TLSREC_CT_APPLICATION_DATA = 23 };

enum {
    TLSREC_CLOSE_NOTIFY = 0, TLSREC_UNEXPECTED_MESSAGE = 10, TLSREC_BAD_RECORD_MAC = 20,
    TLSREC_RECORD_OVERFLOW = 22, TLSREC_ILLEGAL_PARAMETER = 47, TLSREC_DECODE_ERROR = 50,
    TLSREC_INTERNAL_ERROR = 80, TLSREC_USER_CANCELED = 90,
};

enum {
    TLSREC_AES_128_GCM_SHA256 = 0x1301,
    TLSREC_AES_256_GCM_SHA384 = 0x1302,
    TLSREC_CHACHA20_POLY1305_SHA256 = 0x1303,
};

#define TLSREC_HEADER_SIZE    5
#define TLSREC_MAX_PLAIN      16384                  /* content per record */
#define TLSREC_MAX_RECORD     (5 + 16384 + 256)      /* header included */
#define TLSREC_OVERHEAD       22                     /* header, inner type, tag */
#define TLSREC_ALERT_SIZE     24
#define TLSREC_KEYUPDATE_SIZE 27
#define TLSREC_BLOB_SIZE      212
/* The write side sends its own KeyUpdate before the first record sealed
 * past TLSREC_REKEY_AFTER, and never seals more than TLSREC_SEQ_LIMIT
 * records under one key: both far below AES-GCM's 2^24.5 (RFC 8446 5.5). */
#define TLSREC_REKEY_AFTER    (UINT64_C(1) << 23)
#define TLSREC_SEQ_LIMIT      (UINT64_C(1) << 24)

struct tlsrec_dir {
    uint64_t seq;            /* of the next record */
    uint8_t secret[48];      /* the traffic secret (32 bytes for SHA-256 suites) */
    uint8_t key[32];         /* 16 bytes for AES-128-GCM */
    uint8_t iv[12];
};

/* flags */
#define TLSREC_KU_OWED   1u  /* the peer asked for a KeyUpdate: ours goes before our next data */
#define TLSREC_RD_EOF    2u  /* close_notify came */
#define TLSREC_RD_FAILED 4u  /* an error or the peer's alert: nothing more is read */
#define TLSREC_WR_DONE   8u  /* an alert went, or a seal failed: nothing more is sealed */

struct tlsrec {
    struct tlsrec_dir rd, wr;
    uint16_t suite;          /* TLSREC_AES_128_GCM_SHA256 ... */
    uint8_t flags;
};

/* What tlsrec_unprotect / tlsrec_open found. data points into the record
 * (decrypted in place), valid while the caller's buffer is; NULL only with
 * TLSREC_ERROR, TLSREC_ALERT and TLSREC_EOF. */
struct tlsrec_in {
    uint8_t *data;           /* application data (len may be 0) */
    size_t len;
    uint8_t type;            /* the inner content type */
    uint8_t alert;           /* TLSREC_ERROR: ours to send; TLSREC_ALERT: the peer's */
};

/* Once per process, before the first record (else the first call does it):
 * the ciphers and HMAC are fetched. 0, or -1. tlsrec_cleanup frees them. */
int  tlsrec_setup(void);
void tlsrec_cleanup(void);

/* t from the two traffic secrets (len: the suite's hash length) and the
 * sequence numbers their keys are at. 0, or -1 (unknown suite, a length
 * not the suite's, wseq past TLSREC_SEQ_LIMIT, a library failure). */
int  tlsrec_init(struct tlsrec *t, uint16_t suite, const uint8_t *rsecret,
                 const uint8_t *wsecret, size_t len, uint64_t rseq, uint64_t wseq);
/* Wipes the keys (before t's memory is freed or reused). */
void tlsrec_clear(struct tlsrec *t);

/* Exactly the bytes tlsrec_seal writes for n bytes of type now: n + 22
 * per record, and for application data a KeyUpdate owed or due first. */
size_t tlsrec_seal_size(const struct tlsrec *t, uint8_t type, size_t n);
/* in[0..n) (application data, or handshake messages: never a KeyUpdate,
 * see below) as records into out[0..cap), not overlapping in. TLSREC_OK
 * with *outlen; n = 0 writes nothing. TLSREC_ERROR: cap is short or the
 * key's records would run out (nothing written, t unchanged), or the
 * write side is done or a library call failed (the connection is lost). */
int  tlsrec_seal(struct tlsrec *t, uint8_t type, const uint8_t *in, size_t n, uint8_t *out,
                 size_t cap, size_t *outlen);
/* A KeyUpdate(update_not_requested) under the write key, which then moves
 * on: the answer owed after TLSREC_KEYUPDATE (tlsrec_seal sends it by
 * itself before data; this is for a connection with nothing to say), or
 * our own. TLSREC_OK or TLSREC_ERROR. */
int  tlsrec_seal_keyupdate(struct tlsrec *t, uint8_t out[TLSREC_KEYUPDATE_SIZE]);
/* The alert record (close_notify when we close, or the alert an error
 * gave); nothing is sealed after it. TLSREC_OK or TLSREC_ERROR. */
int  tlsrec_seal_alert(struct tlsrec *t, uint8_t alert, uint8_t out[TLSREC_ALERT_SIZE]);

/* Whether buf[0..n) starts with a whole record, from its header alone:
 * TLSREC_OK with *len (header included), TLSREC_AGAIN, or TLSREC_ERROR
 * with *alert (a type other than application_data, a legacy version not
 * 0x0303, a length over 2^14 + 256). */
int  tlsrec_peek(const uint8_t *buf, size_t n, size_t *len, uint8_t *alert);
/* rec[0..len), one whole record as tlsrec_peek framed it: decrypted in
 * place, handled. TLSREC_OK (in->data, in->len: application data, maybe
 * none), TLSREC_KEYUPDATE, TLSREC_EOF, TLSREC_ALERT or TLSREC_ERROR (both
 * with in->alert). The record's bytes are changed whatever happens. */
int  tlsrec_open(struct tlsrec *t, uint8_t *rec, size_t len, struct tlsrec_in *in);
/* tlsrec_open's first half, for tests and fuzzing: decrypts and strips
 * the padding (in->type, in->data, in->len), handles nothing. TLSREC_OK or
 * TLSREC_ERROR with in->alert. */
int  tlsrec_unprotect(struct tlsrec *t, uint8_t *rec, size_t len, struct tlsrec_in *in);

/* The whole state, for another process (the blob holds the keys: the
 * caller wipes it once sent). */
void tlsrec_export(const struct tlsrec *t, uint8_t blob[TLSREC_BLOB_SIZE]);
/* t from a blob tlsrec_export made: 0, or -1 (t untouched) for anything
 * else: another version, an unknown suite or flag, lengths or padding not
 * the suite's, a sequence number out of range, a failed checksum. */
int  tlsrec_import(struct tlsrec *t, const uint8_t blob[TLSREC_BLOB_SIZE]);

/* Makes ctx's TLS 1.3 server handshakes capturable: a keylog callback
 * (one already set is called first, with every line) and ctx's message
 * callback (OpenSSL cannot say whether one was set: it is replaced). An
 * SSL that SNI moves to another context needs that one attached too.
 * Secrets are kept per SSL until taken or the SSL is freed. 0, or -1. */
int  tlsrec_capture_attach(SSL_CTX *ctx);
/* The record layer of server ssl, whose TLS 1.3 handshake is done, into t;
 * ssl must then neither read nor write again (free it). TLSREC_OK (the
 * secrets kept for ssl are wiped and freed); TLSREC_AGAIN: not yet (the
 * handshake is not done, OpenSSL holds input, even a record's header
 * alone, or must send a KeyUpdate asking for one); TLSREC_ERROR: it never
 * will be (not TLS 1.3, not a server, no capture, shut down). A KeyUpdate
 * OpenSSL owes the client becomes ours (TLSREC_KU_OWED). The caller must
 * not take while its last SSL_write is unfinished: OpenSSL would hold part
 * of a record that SSL_want_write no longer shows once SSL_read ran. */
int  tlsrec_capture_take(SSL *ssl, struct tlsrec *t);

#endif
