/*
 * Load generator for scripts/bench.sh (built by it with cc -O2).
 *
 *   bench-load udp-send DST PORT SECONDS PAYLOAD [PPS]
 *       UDP datagrams of PAYLOAD bytes to DST:PORT for SECONDS, in batches
 *       of 64 with sendmmsg; as fast as possible, or paced to PPS packets/s.
 *       Prints "sent N pps R".
 *   bench-load udp-recv PORT SECONDS
 *       Counts datagrams received on PORT for SECONDS (from the first one).
 *       Prints "received N pps R".
 *   bench-load tcp-rr-server PORT
 *       Echoes 1-byte requests on every accepted connection (forks), forever.
 *   bench-load tcp-rr DST PORT SECONDS
 *       One connection, 1-byte request / 1-byte response, TCP_NODELAY.
 *       Prints "transactions N tps R".
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what)
{
	perror(what);
	exit(1);
}

static struct sockaddr_in addr_of(const char *ip, const char *port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(atoi(port)) };
	if (!ip)
		a.sin_addr.s_addr = htonl(INADDR_ANY);
	else if (inet_pton(AF_INET, ip, &a.sin_addr) != 1) {
		fprintf(stderr, "bad address %s\n", ip);
		exit(2);
	}
	return a;
}

static int udp_send(char **av)
{
	struct sockaddr_in dst = addr_of(av[0], av[1]);
	double secs = atof(av[2]);
	size_t len = atoi(av[3]);
	double pps = av[4] ? atof(av[4]) : 0;
	char buf[2048] = { 0 };
	struct mmsghdr msgs[BATCH];
	struct iovec iov[BATCH];
	unsigned long sent = 0;
	int fd = socket(AF_INET, SOCK_DGRAM, 0);

	if (fd < 0)
		die("socket");
	if (len > sizeof(buf))
		len = sizeof(buf);
	if (connect(fd, (struct sockaddr *)&dst, sizeof(dst)))
		die("connect");
	memset(msgs, 0, sizeof(msgs));
	for (int i = 0; i < BATCH; i++) {
		iov[i].iov_base = buf;
		iov[i].iov_len = len;
		msgs[i].msg_hdr.msg_iov = &iov[i];
		msgs[i].msg_hdr.msg_iovlen = 1;
	}
	double start = now(), end = start + secs, t;
	while ((t = now()) < end) {
		int n = BATCH;
		if (pps > 0) {
			/* packets due by now; sleep a little when ahead */
			double due = (t - start) * pps - sent;
			if (due < 1) {
				struct timespec ts = { 0, 50000 };
				nanosleep(&ts, NULL);
				continue;
			}
			if (due < n)
				n = (int)due;
		}
		int r = sendmmsg(fd, msgs, n, 0);
		if (r > 0)
			sent += r;
		else if (r < 0 && errno != ENOBUFS && errno != EAGAIN && errno != ECONNREFUSED)
			die("sendmmsg");
	}
	t = now() - start;
	printf("sent %lu pps %.0f\n", sent, sent / t);
	return 0;
}

static int udp_recv(char **av)
{
	struct sockaddr_in a = addr_of(NULL, av[0]);
	double secs = atof(av[1]);
	int fd = socket(AF_INET, SOCK_DGRAM, 0), big = 64 << 20;
	char bufs[BATCH][64];
	struct mmsghdr msgs[BATCH];
	struct iovec iov[BATCH];
	struct timeval tv = { 0, 200000 };
	unsigned long got = 0;
	double start = 0;

	if (fd < 0)
		die("socket");
	setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof(big));
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)))
		die("bind");
	memset(msgs, 0, sizeof(msgs));
	for (int i = 0; i < BATCH; i++) {
		iov[i].iov_base = bufs[i];
		iov[i].iov_len = sizeof(bufs[i]);
		msgs[i].msg_hdr.msg_iov = &iov[i];
		msgs[i].msg_hdr.msg_iovlen = 1;
	}
	/* wait up to 30 s for the first datagram */
	double give_up = now() + 30;
	for (;;) {
		int r = recvmmsg(fd, msgs, BATCH, 0, NULL);
		double t = now();
		if (r > 0) {
			if (!start)
				start = t;
			got += r;
		}
		if (start && t - start >= secs)
			break;
		if (!start && t > give_up)
			break;
	}
	double t = start ? now() - start : 1;
	printf("received %lu pps %.0f\n", got, got / t);
	return 0;
}

static int tcp_rr_server(char **av)
{
	struct sockaddr_in a = addr_of(NULL, av[0]);
	int one = 1, fd = socket(AF_INET, SOCK_STREAM, 0);

	if (fd < 0)
		die("socket");
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) || listen(fd, 16))
		die("bind/listen");
	signal(SIGCHLD, SIG_IGN);
	for (;;) {
		int c = accept(fd, NULL, NULL);
		if (c < 0)
			continue;
		if (fork() == 0) {
			char b;
			setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
			while (read(c, &b, 1) == 1)
				if (write(c, &b, 1) != 1)
					break;
			_exit(0);
		}
		close(c);
	}
}

static int tcp_rr(char **av)
{
	struct sockaddr_in dst = addr_of(av[0], av[1]);
	double secs = atof(av[2]);
	int one = 1, fd = socket(AF_INET, SOCK_STREAM, 0);
	unsigned long n = 0;
	char b = 'x';

	if (fd < 0)
		die("socket");
	for (int tries = 0; connect(fd, (struct sockaddr *)&dst, sizeof(dst)); tries++) {
		if (tries > 50)
			die("connect");
		usleep(100000);
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	double start = now(), end = start + secs;
	while (now() < end) {
		for (int i = 0; i < 64; i++) {
			if (write(fd, &b, 1) != 1 || read(fd, &b, 1) != 1)
				die("rr");
			n++;
		}
	}
	printf("transactions %lu tps %.0f\n", n, n / (now() - start));
	return 0;
}

int main(int ac, char **av)
{
	if (ac >= 6 && !strcmp(av[1], "udp-send"))
		return udp_send(av + 2);
	if (ac >= 4 && !strcmp(av[1], "udp-recv"))
		return udp_recv(av + 2);
	if (ac >= 3 && !strcmp(av[1], "tcp-rr-server"))
		return tcp_rr_server(av + 2);
	if (ac >= 5 && !strcmp(av[1], "tcp-rr"))
		return tcp_rr(av + 2);
	fprintf(stderr, "usage: see the comment at the top of bench-load.c\n");
	return 2;
}
