/* src/utf8.c: RFC 3629 validation. */
#include <string.h>

#include "tap.h"
#include "utf8.h"

static int valid(const char *s)
{
    return utf8_valid((const uint8_t *)s, strlen(s));
}

static int scan(const char *s, size_t *done)
{
    return utf8_scan((const uint8_t *)s, strlen(s), done);
}

/* Text in pieces: what is whole is counted, a valid start cut short waits
 * for the next piece, and anything that cannot become valid fails now. */
static void scanning(void)
{
    size_t done = 99;
    ok(scan("ab\xe2\x82", &done) && done == 2, "a cut 3-byte sequence waits");
    ok(scan("\xf0\x9f", &done) && done == 0, "a cut 4-byte sequence waits");
    ok(!scan("x\xf4\x90", &done), "a start above U+10FFFF fails before its end");
    ok(!scan("\xed\xa0", &done), "a surrogate's start fails before its end");
    ok(!scan("\xe2\x28", &done), "a bad continuation fails at once");
    ok(scan("\xe2\x82\xac!", &done) && done == 4, "a whole text is all complete");
}

int main(void)
{
    ok(valid(""), "empty");
    ok(valid("plain ASCII, longer than eight bytes"), "ASCII");
    ok(valid("\xc3\xa9t\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"), "2, 3 and 4-byte sequences");
    ok(valid("\xf4\x8f\xbf\xbf"), "U+10FFFF");
    ok(!valid("\xf4\x90\x80\x80"), "above U+10FFFF");
    ok(!valid("\xc0\xaf"), "overlong 2-byte");
    ok(!valid("\xe0\x80\xaf"), "overlong 3-byte");
    ok(!valid("\xf0\x80\x80\xaf"), "overlong 4-byte");
    ok(!valid("\xed\xa0\x80"), "surrogate");
    ok(!valid("abcdefgh\xe2\x82"), "truncated after an ASCII run");
    ok(!valid("\x80"), "lone continuation byte");
    ok(!valid("\xff"), "0xff");
    scanning();
    return tap_done();
}
