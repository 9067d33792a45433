/* Alone in its file: glibc's <netinet/tcp.h> has no tcpi_bytes_* fields,
 * and <linux/tcp.h>, which has them, cannot be included beside it. */
#include "tcpinfo.h"

#include <linux/tcp.h>
#include <netinet/in.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>

void tcp_bytes(int fd, uint64_t *in, uint64_t *out)
{
    struct tcp_info ti;
    socklen_t len = sizeof(ti);
    memset(&ti, 0, sizeof(ti));
    *in = *out = 0;
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0 ||
        len < offsetof(struct tcp_info, tcpi_bytes_received) + sizeof(ti.tcpi_bytes_received))
        return;
    *in = ti.tcpi_bytes_received;
    *out = ti.tcpi_bytes_acked;
}
