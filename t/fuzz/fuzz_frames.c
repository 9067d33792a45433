/* libFuzzer harness for the frame/message path.
 *
 * Input: 1 byte of flags, then client bytes (frames).
 *  1. The pure gate functions: the bytes are walked as a stream of frames
 *     with frame_parse / frame_check (carrying struct frame_seq along, as
 *     ws.c does), frame_close_check on complete close frames, utf8_valid on
 *     payloads and on the whole input.
 *  2. The real WebSocket path: a socketpair, ws_open() on one end with a
 *     small-limit config (some of the bytes given as handshake leftovers),
 *     the bytes written to the other end, ws_run() until it is done or stops
 *     making progress, output read back and discarded.
 * Flag bit 0: "mask for me": every frame header gets the mask bit and the
 * payload is XORed with its key (a key is inserted when absent), so the
 * fuzzer can write plain payloads (valid UTF-8, close codes) and still get
 * past the masking rule. Bit 1: small message limits. Bits 2-3: how many
 * input bytes arrive with the handshake. Bit 4: queue a keepalive ping,
 * bit 5: a server-side close (idle timeout) midway, bit 6: permessage-deflate
 * agreed (RSV1 frames are inflated, echoes deflated), with bit 7 also
 * context takeover both ways (the windows as dictionaries, zlib's path). */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "config.h"
#include "echo.h"
#include "frame.h"
#include "fuzz_common.h"
#include "utf8.h"
#include "sock.h"
#include "ws.h"
#include "wstimer.h"

static struct config *cf_small, *cf_big;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    cf_small = fuzz_config("max_message_size: 300\nmax_frame_size: 200\n"
                           "max_pending_output: 1k\n");
    cf_big = fuzz_config("max_message_size: 1m\nmax_frame_size: 64k\n"
                         "max_pending_output: 64k\n");
    return 0;
}

/* Part 1: the pure functions, on the bytes as they are. */
static void gate_walk(const uint8_t *p, size_t n, const struct frame_limits *lim)
{
    struct frame_seq seq = { 0, 0, 0 };
    (void)utf8_valid(p, n);
    while (n > 0) {
        struct frame_info fi;
        int h = frame_parse(p, n, &fi);
        if (h <= 0)
            return;
        if ((size_t)h != fi.header_len || (size_t)h > n || h > 14)
            abort();
        uint16_t code = frame_check(&seq, &fi, lim);
        if (code != 0 && code != 1002 && code != 1009)
            abort();
        if (fi.payload_len > n - (size_t)h)
            return;
        if (code == 0 && fi.opcode == FRAME_CLOSE) {
            /* copy so that reading past the payload is an ASan error */
            uint8_t *pl = malloc(fi.payload_len ? fi.payload_len : 1);
            uint16_t echo;
            memcpy(pl, p + h, fi.payload_len);
            uint16_t bad = frame_close_check(&fi, pl, &echo);
            if (bad != 0 && bad != 1002 && bad != 1007)
                abort();
            if (bad == 0 && echo != 0 && !frame_code_allowed(echo))
                abort();
            free(pl);
        }
        if (code == 0 && fi.payload_len > 0) {
            uint8_t *pl = malloc(fi.payload_len);
            memcpy(pl, p + h, fi.payload_len);
            (void)utf8_valid(pl, fi.payload_len);
            free(pl);
        }
        if (code != 0)
            seq = (struct frame_seq){ 0, 0, 0 };
        p += (size_t)h + fi.payload_len;
        n -= (size_t)h + fi.payload_len;
    }
}

/* "Mask for me": rewrites in[0..n) into out (capacity n + 4 * frames). */
static size_t mask_all(const uint8_t *in, size_t n, uint8_t *out)
{
    size_t i = 0, o = 0;
    while (i < n) {
        size_t left = n - i;
        if (left < 2)
            break;
        size_t ext = (in[i + 1] & 0x7f) == 126 ? 2 : (in[i + 1] & 0x7f) == 127 ? 8 : 0;
        int has_key = in[i + 1] & 0x80;
        if (left < 2 + ext + (has_key ? 4 : 0))
            break;
        uint64_t len = in[i + 1] & 0x7f;
        if (ext) {
            len = 0;
            for (size_t k = 0; k < ext; k++)
                len = len << 8 | in[i + 2 + k];
        }
        uint8_t key[4] = { 0x37, 0xfa, 0x21, 0x3d };
        out[o++] = in[i];
        out[o++] = in[i + 1] | 0x80;
        memcpy(out + o, in + i + 2, ext);
        o += ext;
        i += 2 + ext;
        if (has_key) {
            memcpy(key, in + i, 4);
            i += 4;
        }
        memcpy(out + o, key, 4);
        o += 4;
        size_t pl = len < n - i ? (size_t)len : n - i;
        for (size_t k = 0; k < pl; k++)
            out[o + k] = in[i + k] ^ key[k & 3];
        o += pl;
        i += pl;
    }
    memcpy(out + o, in + i, n - i);
    return o + (n - i);
}

static void drain(int fd)
{
    char sink[65536];
    while (read(fd, sink, sizeof(sink)) > 0)
        ;
}

static void no_event(struct ev_loop *l, struct ev_io *io, uint32_t events)
{
    (void)l, (void)io, (void)events;
}

/* Part 2: the real path through ws.c, the socket layer and the encoder. */
static void ws_path(const uint8_t *in, size_t n, unsigned flags)
{
    static struct ev_loop loop;
    static int loop_ready;
    int sv[2];
    if (!loop_ready) {
        if (ev_loop_init(&loop, 16) < 0)
            abort();
        sock_setup(&loop);
        ws_timer_setup(&loop);
        loop_ready = 1;
    }
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0)
        abort();
    size_t lead = ((flags >> 2) & 3) == 0 ? 0 : ((flags >> 2) & 3) == 1 ? 1
                : ((flags >> 2) & 3) == 2 ? n / 2 : n;
    if (lead > n)
        lead = n;
    char *pending = malloc(lead ? lead : 1);
    memcpy(pending, in, lead);
    const struct config *cf = (flags & 2) ? cf_small : cf_big;
    const struct config_route route = { "/", &echo_module, NULL, cf };
    const struct ws_request req = { 0 };
    struct sock s;
    if (sock_open(&s, sv[0], no_event) < 0)
        abort();
    sock_set_input(&s, pending, lead);
    struct ws_conn *w = ws_open(&s, &route, &req, NULL, 0);
    if (w == NULL)
        abort();
    if (flags & 64) {
        int keep = (flags & 128) != 0;
        ws_set_pmd(w, &(struct pmd_params){ 15, 15, (uint8_t)keep, (uint8_t)keep }, NULL, 0);
    }
    size_t off = lead;
    int eof_sent = 0, pinged = 0, closed = 0;
    for (int iter = 0; iter < 2000; iter++) {
        if (off < n) {
            ssize_t k = write(sv[1], in + off, n - off);
            if (k > 0)
                off += (size_t)k;
        } else if (!eof_sent && iter > 50) {
            /* the client hangs up after a while */
            shutdown(sv[1], SHUT_WR);
            eof_sent = 1;
        }
        if ((flags & 16) && !pinged && off >= n / 2) {
            ws_ping(w);
            pinged = 1;
        }
        if ((flags & 32) && !closed && off >= n / 2) {
            ws_close(w, 1001, "idle timeout");
            closed = 1;
        }
        unsigned f = ws_run(w);
        drain(sv[1]);
        if (f & WS_DONE)
            break;
    }
    ws_free(w);
    sock_close(&s);
    close(sv[1]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    unsigned flags = data[0];
    const uint8_t *p = data + 1;
    size_t n = size - 1;
    uint8_t *buf = NULL;
    if (flags & 1) {
        buf = malloc(n + 4 * (n / 2 + 1));
        n = mask_all(p, n, buf);
        p = buf;
    }
    struct frame_limits small = { 200, 300, 0 }, big = { 65536, 1 << 20, 1 };
    gate_walk(p, n, (flags & 2) ? &small : &big);
    ws_path(p, n, flags);
    free(buf);
    return 0;
}
