/* src/utf8.c: RFC 3629 validation. */
#include <string.h>

#include "tap.h"
#include "utf8.h"

static int valid(const char *s)
{
    return utf8_valid((const uint8_t *)s, strlen(s));
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
    return tap_done();
}
