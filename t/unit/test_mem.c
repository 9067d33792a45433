/* src/mem.c: the worker's budget. */
#include "mem.h"
#include "tap.h"

int main(void)
{
    uint32_t a = 0, b = 0;
    mem_setup(1000);
    ok(mem_held() == 0 && !mem_over() && mem_limit() == 1000, "starts empty");
    mem_move(&a, 600);
    mem_move(&b, 300);
    ok(mem_held() == 900 && a == 600 && b == 300, "holders add up");
    mem_move(&b, 500);
    ok(mem_held() == 1100 && mem_over(), "over the limit");
    mem_move(&a, 100);
    ok(mem_held() == 600 && !mem_over(), "a holder shrinking gives back the difference");
    mem_add(50);
    mem_sub(50);
    mem_move(&a, 0);
    mem_move(&b, 0);
    ok(mem_held() == 0, "everything released");
    mem_sub(10);
    ok(mem_held() == 0, "never below zero");
    mem_release(); /* nothing to trim: must be harmless */
    mem_setup(0);
    mem_add(1u << 30);
    ok(!mem_over(), "limit 0 is no limit");
    return tap_done();
}
