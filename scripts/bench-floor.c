/*
 * The floor of the datapath cost, for scripts/bench.sh (built by it with
 * cc -O2 ... -lbpf -lelf -lz).
 *
 *   bench-floor [--type raw_tp|tp_btf] [TYPE:]NAME...
 *   bench-floor --stats
 *
 * Loads one EMPTY program ("r0 = 0; exit") per NAME and attaches it to the
 * tracepoint NAME (the event name without its category: netif_receive_skb;
 * "net/netif_receive_skb" is accepted too), with the program type nettrace
 * uses there:
 *   raw_tp  BPF_PROG_TYPE_RAW_TRACEPOINT, attached by name
 *           (BPF_RAW_TRACEPOINT_OPEN);
 *   tp_btf  BPF_PROG_TYPE_TRACING, expected attach type BPF_TRACE_RAW_TP,
 *           attach_btf_id = the typedef btf_trace_NAME in the kernel's BTF
 *           (/sys/kernel/btf/vmlinux), attached with BPF_RAW_TRACEPOINT_OPEN
 *           without a name.
 * --type sets the type of every NAME (default raw_tp); a "raw_tp:" or
 * "tp_btf:" prefix sets it for one NAME.
 *
 * What a tracer costs on top of this floor is its own; the floor itself is
 * the cost of entering a BPF program on each hook. Every program is named
 * "nt_floor" (bpftool prog list).
 *
 * Prints "ready N" on stdout once all N programs are attached, then holds
 * them until SIGINT or SIGTERM and exits 0 (closing the links detaches
 * them). Any load or attach failure is reported on stderr and exits 1,
 * which detaches whatever was attached already.
 *
 * --stats attaches nothing: it turns on the kernel's run-time statistics of
 * every BPF program (run_cnt, run_time_ns) with BPF_ENABLE_STATS, prints
 * "ready 0" and holds them on until SIGINT or SIGTERM. Unlike the sysctl
 * kernel.bpf_stats_enabled this is counted per holder: it does not switch
 * off statistics someone else turned on, and it ends with the process,
 * however that ends.
 */
#define _GNU_SOURCE
#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <linux/bpf.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum kind { RAW_TP, TP_BTF };

static int parse_kind(const char *s, enum kind *k)
{
	if (!strcmp(s, "raw_tp"))
		*k = RAW_TP;
	else if (!strcmp(s, "tp_btf"))
		*k = TP_BTF;
	else
		return -1;
	return 0;
}

static void usage(void)
{
	fprintf(stderr, "usage: bench-floor [--type raw_tp|tp_btf] [raw_tp:|tp_btf:]NAME...\n"
			"       bench-floor --stats\n");
	exit(2);
}

/* r0 = 0; exit */
static const struct bpf_insn empty_prog[] = {
	{ .code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_0, .imm = 0 },
	{ .code = BPF_JMP | BPF_EXIT },
};

static struct btf *vmlinux_btf(void)
{
	static struct btf *btf;

	if (!btf) {
		btf = btf__load_vmlinux_btf();
		if (!btf) {
			fprintf(stderr, "bench-floor: cannot load the kernel's BTF: %s\n",
				strerror(errno));
			exit(1);
		}
	}
	return btf;
}

/* Loads and attaches one empty program; returns the link fd. */
static int attach_one(enum kind kind, const char *name)
{
	LIBBPF_OPTS(bpf_prog_load_opts, opts);
	char log[4096] = "";
	enum bpf_prog_type type = BPF_PROG_TYPE_RAW_TRACEPOINT;
	int prog, link;

	opts.log_buf = log;
	opts.log_size = sizeof(log);
	opts.log_level = 0;
	if (kind == TP_BTF) {
		char typedef_name[256];
		int id;

		snprintf(typedef_name, sizeof(typedef_name), "btf_trace_%s", name);
		id = btf__find_by_name_kind(vmlinux_btf(), typedef_name, BTF_KIND_TYPEDEF);
		if (id <= 0) {
			fprintf(stderr, "bench-floor: %s: no BTF typedef %s in the kernel\n", name,
				typedef_name);
			return -1;
		}
		type = BPF_PROG_TYPE_TRACING;
		opts.expected_attach_type = BPF_TRACE_RAW_TP;
		opts.attach_btf_id = id;
	}
	prog = bpf_prog_load(type, "nt_floor", "GPL", empty_prog,
			     sizeof(empty_prog) / sizeof(empty_prog[0]), &opts);
	if (prog < 0) {
		fprintf(stderr, "bench-floor: %s: loading the %s program: %s%s%s\n", name,
			kind == TP_BTF ? "tp_btf" : "raw_tp", strerror(-prog),
			log[0] ? "\n" : "", log);
		return -1;
	}
	link = bpf_raw_tracepoint_open(kind == TP_BTF ? NULL : name, prog);
	if (link < 0) {
		fprintf(stderr, "bench-floor: %s: attaching the %s program: %s\n", name,
			kind == TP_BTF ? "tp_btf" : "raw_tp", strerror(-link));
		close(prog);
		return -1;
	}
	/* the link holds the program */
	close(prog);
	return link;
}

int main(int argc, char **argv)
{
	enum kind deflt = RAW_TP;
	int first = 1, n = 0, sig, stats = -1;
	int *links;
	sigset_t set;

	while (first < argc && !strncmp(argv[first], "--", 2)) {
		if (!strcmp(argv[first], "--type") && first + 1 < argc) {
			if (parse_kind(argv[first + 1], &deflt))
				usage();
			first += 2;
		} else if (!strncmp(argv[first], "--type=", 7)) {
			if (parse_kind(argv[first] + 7, &deflt))
				usage();
			first++;
		} else if (!strcmp(argv[first], "--stats") && argc == 2) {
			first++;
			stats = bpf_enable_stats(BPF_STATS_RUN_TIME);
			if (stats < 0) {
				fprintf(stderr, "bench-floor: BPF_ENABLE_STATS: %s\n", strerror(-stats));
				return 1;
			}
		} else if (!strcmp(argv[first], "--")) {
			first++;
			break;
		} else {
			usage();
		}
	}
	if (first >= argc && stats < 0)
		usage();

	/* a signal during the attach is taken by sigwait below */
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGHUP);
	sigprocmask(SIG_BLOCK, &set, NULL);

	links = calloc(argc, sizeof(*links));
	if (!links)
		return 1;
	for (int i = first; i < argc; i++) {
		enum kind kind = deflt;
		char *name = argv[i], *colon = strchr(name, ':'), *slash;

		if (colon) {
			*colon = 0;
			if (parse_kind(name, &kind))
				usage();
			name = colon + 1;
		}
		slash = strrchr(name, '/');
		if (slash)
			name = slash + 1;
		if (!*name)
			usage();
		links[n] = attach_one(kind, name);
		if (links[n] < 0)
			return 1; /* exiting closes (detaches) the rest */
		n++;
	}
	printf("ready %d\n", n);
	fflush(stdout);

	sigwait(&set, &sig);
	for (int i = 0; i < n; i++)
		close(links[i]);
	free(links);
	if (stats >= 0)
		close(stats);
	return 0;
}
