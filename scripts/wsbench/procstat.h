/*
 * procstat — samples of resource use from /proc and getrusage(), taken by
 * the main thread around the measurement window. Linux only.
 *
 * Contract:
 *   proc_snapshot(root, s)  CPU ticks and VmRSS / RssAnon (kB) summed over
 *       root and all its descendants (a master and its workers), stamped
 *       with now_ns(). 0 on success, -1 if root is not running (s zeroed,
 *       but t_ns set). Not reentrant (static scratch tables).
 *   tcp_mem_pages()  the machine's kernel TCP buffer memory in pages
 *       (/proc/net/sockstat "TCP: ... mem N"), -1 if unreadable.
 *   cpu_snapshot(cs) per-CPU tick counters from /proc/stat, CPUs 0..63;
 *       busy = user+nice+system+irq+softirq. Not reentrant.
 *   self_cpu()       this process's user and system CPU, seconds.
 */
#ifndef WSBENCH_PROCSTAT_H
#define WSBENCH_PROCSTAT_H

#include <stdint.h>
#include <sys/types.h>

#define MAX_CPUS 64

struct procsnap {
    int nprocs;
    uint64_t utime, stime; /* clock ticks */
    uint64_t rss_kb, anon_kb;
    uint64_t t_ns;
};

struct cpustat {
    int n;
    uint64_t busy[MAX_CPUS], sirq[MAX_CPUS], steal[MAX_CPUS], all[MAX_CPUS];
};

struct cpu {
    double user, sys;
};

int proc_snapshot(pid_t root, struct procsnap *s);
long tcp_mem_pages(void);
void cpu_snapshot(struct cpustat *cs);
struct cpu self_cpu(void);

#endif
