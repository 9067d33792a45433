/* The kernel's byte counts of a TCP socket (TCP_INFO): what the peer sent
 * us and what it acknowledged of ours, over the socket's whole life (so a
 * connection handed between processes keeps its count). For other
 * sockets, or kernels without the fields, 0 and 0. */
#ifndef WSECHOD_TCPINFO_H
#define WSECHOD_TCPINFO_H

#include <stdint.h>

void tcp_bytes(int fd, uint64_t *in, uint64_t *out);

#endif
