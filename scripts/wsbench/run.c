#include "run.h"

struct thr thr[MAX_THREADS];
atomic_int g_phase = P_CONNECT;
_Atomic uint64_t g_win_start = 0, g_win_end = UINT64_MAX;
