#define _GNU_SOURCE
#include "procstat.h"

#include <ctype.h>
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <unistd.h>

#include "util.h"

#define MAX_SCAN 65536

/* One read(): /proc files are generated per read, and what we need is in
 * the first page. */
static int read_file(const char *path, char *buf, size_t cap)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, cap - 1);
    close(fd);
    if (n < 0)
        return -1;
    buf[n] = 0;
    return (int)n;
}

/* Static: 65536 entries are too much for the stack of a snapshot. */
static pid_t pids[MAX_SCAN], ppids[MAX_SCAN];
static uint64_t ut[MAX_SCAN], st[MAX_SCAN];
static char in[MAX_SCAN];

/* Reads pid, ppid and CPU ticks of every process; returns how many. */
static int scan_procs(pid_t root)
{
    int np = 0;
    DIR *d = opendir("/proc");
    if (!d)
        return -1;
    struct dirent *e;
    char path[300], buf[2048];
    while ((e = readdir(d)) && np < MAX_SCAN) {
        if (!isdigit((unsigned char)e->d_name[0]))
            continue;
        snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
        if (read_file(path, buf, sizeof buf) <= 0)
            continue;
        /* comm may contain spaces and ')': the last ')' ends it. */
        char *rp = strrchr(buf, ')');
        if (!rp)
            continue;
        char state;
        int ppid;
        unsigned long long u, sy;
        /* fields after comm: 3 state, 4 ppid, ..., 14 utime, 15 stime */
        if (sscanf(rp + 2, "%c %d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &state, &ppid, &u, &sy) != 4)
            continue;
        pids[np] = (pid_t)atoi(e->d_name);
        ppids[np] = ppid;
        ut[np] = u;
        st[np] = sy;
        in[np] = pids[np] == root;
        np++;
    }
    closedir(d);
    return np;
}

/* Fixed point over the parent links; 64 passes bound a pathological tree. */
static void mark_descendants(int np)
{
    for (int pass = 0, changed = 1; changed && pass < 64; pass++) {
        changed = 0;
        for (int i = 0; i < np; i++) {
            if (in[i])
                continue;
            for (int j = 0; j < np; j++)
                if (in[j] && pids[j] == ppids[i]) {
                    in[i] = 1;
                    changed = 1;
                    break;
                }
        }
    }
}

static void add_memory(pid_t pid, struct procsnap *s)
{
    char path[300], buf[2048];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    if (read_file(path, buf, sizeof buf) <= 0)
        return;
    char *p = strstr(buf, "VmRSS:");
    if (p)
        s->rss_kb += strtoull(p + 6, NULL, 10);
    p = strstr(buf, "RssAnon:");
    if (p)
        s->anon_kb += strtoull(p + 8, NULL, 10);
}

int proc_snapshot(pid_t root, struct procsnap *s)
{
    memset(s, 0, sizeof *s);
    s->t_ns = now_ns();
    if (root <= 0)
        return -1;
    int np = scan_procs(root);
    if (np < 0)
        return -1;
    mark_descendants(np);
    for (int i = 0; i < np; i++) {
        if (!in[i])
            continue;
        s->nprocs++;
        s->utime += ut[i];
        s->stime += st[i];
        add_memory(pids[i], s);
    }
    return s->nprocs > 0 ? 0 : -1;
}

long tcp_mem_pages(void)
{
    char buf[1024];
    if (read_file("/proc/net/sockstat", buf, sizeof buf) <= 0)
        return -1;
    char *p = strstr(buf, "TCP:");
    if (!p)
        return -1;
    p = strstr(p, " mem ");
    return p ? strtol(p + 5, NULL, 10) : -1;
}

void cpu_snapshot(struct cpustat *cs)
{
    static char buf[65536];
    memset(cs, 0, sizeof *cs);
    if (read_file("/proc/stat", buf, sizeof buf) <= 0)
        return;
    char *save = NULL;
    for (char *l = strtok_r(buf, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        int id;
        unsigned long long v[10] = {0};
        /* Needs the digit after "cpu", so the aggregate "cpu " line is
         * skipped. */
        if (sscanf(l, "cpu%d %llu %llu %llu %llu %llu %llu %llu %llu", &id, &v[0], &v[1], &v[2], &v[3],
                   &v[4], &v[5], &v[6], &v[7]) < 9 || id < 0 || id >= MAX_CPUS)
            continue;
        cs->busy[id] = v[0] + v[1] + v[2] + v[5] + v[6];
        cs->sirq[id] = v[6];
        cs->steal[id] = v[7];
        cs->all[id] = v[0] + v[1] + v[2] + v[3] + v[4] + v[5] + v[6] + v[7];
        if (id + 1 > cs->n)
            cs->n = id + 1;
    }
}

struct cpu self_cpu(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (struct cpu){ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6,
                        ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6};
}
