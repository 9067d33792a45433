/* src/jsonstr.c: the inside of a JSON string from any bytes. */
#include <string.h>

#include "jsonstr.h"
#include "tap.h"

static char out[256];

/* Escapes s (n bytes) with room for cap; the result NUL-terminated in out. */
static const char *esc(const char *s, size_t n, size_t cap)
{
    size_t k = json_escape(out, cap, s, n);
    out[k] = '\0';
    return out;
}

#define ESC(lit) esc(lit, sizeof(lit) - 1, sizeof(out) - 1)

static void cuts(void)
{
    ok(strcmp(esc("abc", 3, 2), "ab") == 0, "plain text is cut at the room");
    ok(strcmp(esc("a\"b", 3, 2), "a") == 0, "an escape that does not fit is left out whole");
    ok(strcmp(esc("a\x01", 2, 6), "a") == 0, "a \\u00XX that does not fit is left out whole");
    ok(strcmp(esc("a\xc3\xa9", 3, 2), "a") == 0, "a UTF-8 sequence is never split");
    ok(strcmp(esc("a\xff", 2, 6), "a") == 0, "nor a replacement");
    ok(json_escape(out, 0, "x", 1) == 0, "no room: nothing written");
}

int main(void)
{
    ok(strcmp(ESC("plain text"), "plain text") == 0, "ASCII passes through");
    ok(strcmp(ESC("say \"hi\""), "say \\\"hi\\\"") == 0, "quotes are escaped");
    ok(strcmp(ESC("C:\\dir"), "C:\\\\dir") == 0, "backslashes are escaped");
    ok(strcmp(ESC("a/b"), "a/b") == 0, "a slash needs no escape");
    ok(strcmp(ESC("a\nb\tc\r"), "a\\u000ab\\u0009c\\u000d") == 0, "newline, tab, CR: \\u00XX");
    ok(strcmp(esc("\0\x1f\x7f", 3, 64), "\\u0000\\u001f\\u007f") == 0, "NUL, 0x1f and DEL");
    ok(strcmp(ESC("\xc3\xa9t\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"),
              "\xc3\xa9t\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80") == 0,
       "valid 2, 3 and 4-byte UTF-8 passes through");
    ok(strcmp(ESC("a\xffz"), "a\\ufffdz") == 0, "a byte that starts nothing: \\ufffd");
    ok(strcmp(ESC("\xc0\xaf"), "\\ufffd\\ufffd") == 0, "overlong: each byte replaced");
    ok(strcmp(ESC("\xed\xa0\x80"), "\\ufffd\\ufffd\\ufffd") == 0, "surrogate: replaced");
    ok(strcmp(ESC("\xf4\x90\x80\x80"), "\\ufffd\\ufffd\\ufffd\\ufffd") == 0,
       "above U+10FFFF: replaced");
    ok(strcmp(ESC("x\xe2\x82"), "x\\ufffd\\ufffd") == 0, "a sequence cut by the end: replaced");
    ok(strcmp(ESC("\xe2\x82z"), "\\ufffd\\ufffdz") == 0, "a sequence cut by ASCII: replaced");
    ok(strcmp(ESC("\x80"), "\\ufffd") == 0, "a lone continuation byte: replaced");
    cuts();
    return tap_done();
}
