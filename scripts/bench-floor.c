/*
 * The floor of the datapath cost, for scripts/bench.sh (built by it with
 * cc -O2 ... -lbpf -lelf -lz) and for the kernel-function backends in the
 * VM guest (tests/vm/scenarios/cost.sh, built static by scripts/bench-vm.sh).
 *
 *   bench-floor [--type TYPE] [--body BODY] [TYPE:]NAME...
 *   bench-floor --stats
 *
 * Loads one EMPTY program ("r0 = 0; exit") per NAME and attaches it to NAME
 * with the program type TYPE, the way nettrace attaches there:
 *   raw_tp        BPF_PROG_TYPE_RAW_TRACEPOINT on the tracepoint NAME (the
 *                 event name without its category: netif_receive_skb;
 *                 "net/netif_receive_skb" is accepted too), attached by name
 *                 (BPF_RAW_TRACEPOINT_OPEN);
 *   tp_btf        BPF_PROG_TYPE_TRACING, expected attach type BPF_TRACE_RAW_TP,
 *                 attach_btf_id = the typedef btf_trace_NAME in the kernel's
 *                 BTF (/sys/kernel/btf/vmlinux), attached with
 *                 BPF_RAW_TRACEPOINT_OPEN without a name;
 *   kprobe        BPF_PROG_TYPE_KPROBE on a kprobe on the kernel function NAME:
 *                 perf_event_open on the kprobe PMU, PERF_EVENT_IOC_SET_BPF;
 *   kprobe_multi  BPF_PROG_TYPE_KPROBE, expected attach type
 *                 BPF_TRACE_KPROBE_MULTI: ONE program and ONE link
 *                 (BPF_LINK_CREATE with the list of symbols, cookie i for the
 *                 i-th) for all the kprobe_multi NAMEs, as nettrace does;
 *   fentry        BPF_PROG_TYPE_TRACING, expected attach type
 *                 BPF_TRACE_FENTRY, attach_btf_id = the function NAME in the
 *                 kernel's BTF, attached with BPF_RAW_TRACEPOINT_OPEN.
 * --type sets the type of every NAME (default raw_tp); a "TYPE:" prefix sets
 * it for one NAME.
 *
 * --body adds, step by step, the work every nettrace program does before its
 * filter can reject a packet, so that the cost of each step can be measured
 * on top of the empty program (default: empty):
 *   empty   r0 = 0; exit
 *   entry   + how the program learns which hook fired: bpf_get_attach_cookie
 *           (kprobe_multi), bpf_get_func_ip (kprobe); nothing for the types
 *           bound to one hook when loaded (same as empty);
 *   lookup  + one map lookup keyed by that: an array of 64-byte slots indexed
 *           by the cookie (kprobe_multi) or 0 (the others), a hash keyed by
 *           the function address (kprobe: nettrace's nt_funcs; it is empty
 *           here, so lookups miss);
 *   read    + one bpf_probe_read_kernel of 48 bytes (from the context: any
 *           cached kernel memory costs the same);
 *   read2   + a second one, of 20 bytes (nettrace's kprobe programs copy the
 *           skb's header fields, then the IP header);
 *   cast    entry and lookup, then instead of the two copies direct loads
 *           through bpf_rdonly_cast (a kfunc, Linux 6.2+): the context cast to
 *           a struct sk_buff (head, data, len read) and to a struct iphdr
 *           (saddr, daddr read), as a tracer could read an skb without
 *           bpf_probe_read_kernel.
 * --by-ip makes kprobe_multi programs learn the function the way kprobe
 * programs do (bpf_get_func_ip, and the hash keyed by the address) instead
 * of by their attach cookie.
 *
 * What a tracer costs on top of this floor is its own; the floor itself is
 * the cost of entering a BPF program on each hook. Every program is named
 * "nt_floor" (bpftool prog list). Program fds stay open besides the links
 * (perf events for kprobe), so /proc/PID/fdinfo shows each program's prog_id
 * and, with the kernel's BPF statistics on, its run_cnt and run_time_ns.
 *
 * Prints "ready N" on stdout once all N hooks are attached, then holds them
 * until SIGINT or SIGTERM and exits 0 (closing the links detaches them). Any
 * load or attach failure is reported on stderr and exits 1, which detaches
 * whatever was attached already.
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
#include <linux/perf_event.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

enum kind { RAW_TP, TP_BTF, KPROBE, KPROBE_MULTI, FENTRY, NKINDS };
static const char *const kind_name[NKINDS] = { "raw_tp", "tp_btf", "kprobe", "kprobe_multi",
					       "fentry" };

enum body { B_EMPTY, B_ENTRY, B_LOOKUP, B_READ, B_READ2, B_CAST, NBODIES };
static const char *const body_name[NBODIES] = { "empty", "entry", "lookup", "read", "read2",
						"cast" };
static enum body body = B_EMPTY;
static int by_ip; /* --by-ip */

static int parse_kind(const char *s, enum kind *k)
{
	for (int i = 0; i < NKINDS; i++) {
		if (!strcmp(s, kind_name[i])) {
			*k = i;
			return 0;
		}
	}
	return -1;
}

static int parse_body(const char *s)
{
	for (int i = 0; i < NBODIES; i++) {
		if (!strcmp(s, body_name[i])) {
			body = i;
			return 0;
		}
	}
	return -1;
}

static void usage(void)
{
	fprintf(stderr, "usage: bench-floor [--type TYPE] [--body empty|entry|lookup|read|read2|cast] [--by-ip]\n"
			"                   [TYPE:]NAME...\n"
			"       bench-floor --stats\n"
			"TYPE: raw_tp (default), tp_btf, kprobe, kprobe_multi, fentry\n");
	exit(2);
}

/* Every fd to hold until the end: programs, links, perf events, maps. */
static int *held;
static int nheld, capheld;

static void hold(int fd)
{
	if (nheld == capheld) {
		capheld = capheld ? 2 * capheld : 64;
		held = realloc(held, capheld * sizeof(*held));
		if (!held) {
			fprintf(stderr, "bench-floor: out of memory\n");
			exit(1);
		}
	}
	held[nheld++] = fd;
}

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

#define INSN(c, d, s, o, i)                                                      \
	((struct bpf_insn){ .code = (c), .dst_reg = (d), .src_reg = (s), .off = (o), .imm = (i) })
#define MOV64_REG(d, s) INSN(BPF_ALU64 | BPF_MOV | BPF_X, d, s, 0, 0)
#define MOV64_IMM(d, i) INSN(BPF_ALU64 | BPF_MOV | BPF_K, d, 0, 0, i)
#define ADD64_IMM(d, i) INSN(BPF_ALU64 | BPF_ADD | BPF_K, d, 0, 0, i)
#define STX_MEM(sz, d, s, o) INSN(BPF_STX | BPF_MEM | (sz), d, s, o, 0)
#define ST_MEM(sz, d, o, i) INSN(BPF_ST | BPF_MEM | (sz), d, 0, o, i)
#define CALL(f) INSN(BPF_JMP | BPF_CALL, 0, 0, 0, f)
#define EXIT() INSN(BPF_JMP | BPF_EXIT, 0, 0, 0, 0)

/*
 * The byte offset of member name in the struct or union type_id (looking into
 * anonymous members), or -1.
 */
static int member_offset(const struct btf *btf, __u32 type_id, const char *name)
{
	const struct btf_type *t = btf__type_by_id(btf, type_id);
	const struct btf_member *m;
	int off;

	while (t && (btf_is_typedef(t) || btf_is_mod(t))) {
		type_id = t->type;
		t = btf__type_by_id(btf, type_id);
	}
	if (!t || !btf_is_composite(t))
		return -1;
	m = btf_members(t);
	for (int i = 0; i < btf_vlen(t); i++, m++) {
		const char *n = btf__name_by_offset(btf, m->name_off);

		if (n && !strcmp(n, name))
			return btf_member_bit_offset(t, i) / 8;
		if ((!n || !*n) && (off = member_offset(btf, m->type, name)) >= 0)
			return btf_member_bit_offset(t, i) / 8 + off;
	}
	return -1;
}

/* The BTF id of the struct or function name in the kernel's BTF; exits if none. */
static int kernel_type(const char *name, int btf_kind)
{
	int id = btf__find_by_name_kind(vmlinux_btf(), name, btf_kind);

	if (id <= 0) {
		fprintf(stderr, "bench-floor: --body cast: no %s in the kernel's BTF\n", name);
		exit(1);
	}
	return id;
}

/* The offset of member of the kernel's struct sname; exits if none. */
static int kernel_member(const char *sname, const char *member)
{
	int off = member_offset(vmlinux_btf(), kernel_type(sname, BTF_KIND_STRUCT), member);

	if (off < 0) {
		fprintf(stderr, "bench-floor: --body cast: no member %s in struct %s\n", member,
			sname);
		exit(1);
	}
	return off;
}

/* Whether the program learns its function by address (bpf_get_func_ip). */
static int keyed_by_ip(enum kind kind)
{
	return kind == KPROBE || (kind == KPROBE_MULTI && by_ip);
}

/* The maps of --body lookup, one per kind of key, created on first use. */
static int slot_map(enum kind kind)
{
	static int array = -1, hash = -1;
	int *fd = keyed_by_ip(kind) ? &hash : &array;

	if (*fd < 0) {
		if (keyed_by_ip(kind))
			*fd = bpf_map_create(BPF_MAP_TYPE_HASH, "nt_floor_funcs", 8, 64, 1024, NULL);
		else
			*fd = bpf_map_create(BPF_MAP_TYPE_ARRAY, "nt_floor_slots", 4, 64, 1024, NULL);
		if (*fd < 0) {
			fprintf(stderr, "bench-floor: creating the map of --body lookup: %s\n",
				strerror(-*fd));
			exit(1);
		}
		hold(*fd);
	}
	return *fd;
}

/*
 * The program of kind and --body into p (room for 32 instructions); returns
 * the instruction count. The empty body is "r0 = 0; exit".
 */
static int build_prog(struct bpf_insn *p, enum kind kind)
{
	int n = 0;

	if (body >= B_ENTRY) {
		p[n++] = MOV64_REG(BPF_REG_6, BPF_REG_1); /* ctx, kept across calls */
		if (keyed_by_ip(kind)) {
			p[n++] = CALL(BPF_FUNC_get_func_ip);
			p[n++] = STX_MEM(BPF_DW, BPF_REG_10, BPF_REG_0, -8);
		} else if (kind == KPROBE_MULTI) {
			p[n++] = CALL(BPF_FUNC_get_attach_cookie);
			p[n++] = STX_MEM(BPF_W, BPF_REG_10, BPF_REG_0, -4);
		} else {
			p[n++] = ST_MEM(BPF_W, BPF_REG_10, -4, 0);
		}
	}
	if (body >= B_LOOKUP) {
		/* r1 = map (ld_imm64 with a map fd), r2 = &key */
		p[n++] = INSN(BPF_LD | BPF_DW | BPF_IMM, BPF_REG_1, BPF_PSEUDO_MAP_FD, 0,
			      slot_map(kind));
		p[n++] = INSN(0, 0, 0, 0, 0);
		p[n++] = MOV64_REG(BPF_REG_2, BPF_REG_10);
		p[n++] = ADD64_IMM(BPF_REG_2, keyed_by_ip(kind) ? -8 : -4);
		p[n++] = CALL(BPF_FUNC_map_lookup_elem);
	}
	if (body == B_CAST) {
		/* r0 = bpf_rdonly_cast(ctx, struct); loads through r0 (PROBE_MEM) */
		static const struct {
			const char *type, *member;
			int size;
		} loads[] = {
			{ "sk_buff", "head", BPF_DW },	{ "sk_buff", "data", BPF_DW },
			{ "sk_buff", "len", BPF_W },	{ "iphdr", "saddr", BPF_W },
			{ "iphdr", "daddr", BPF_W },
		};
		const char *cast = NULL;

		for (unsigned i = 0; i < sizeof(loads) / sizeof(loads[0]); i++) {
			if (!cast || strcmp(cast, loads[i].type)) {
				cast = loads[i].type;
				p[n++] = MOV64_REG(BPF_REG_1, BPF_REG_6);
				p[n++] = MOV64_IMM(BPF_REG_2, kernel_type(cast, BTF_KIND_STRUCT));
				p[n++] = INSN(BPF_JMP | BPF_CALL, 0, BPF_PSEUDO_KFUNC_CALL, 0,
					      kernel_type("bpf_rdonly_cast", BTF_KIND_FUNC));
				p[n++] = MOV64_REG(BPF_REG_7, BPF_REG_0);
			}
			p[n++] = INSN(BPF_LDX | BPF_MEM | loads[i].size, BPF_REG_1, BPF_REG_7,
				      kernel_member(cast, loads[i].member), 0);
		}
	} else if (body >= B_READ) {
		p[n++] = MOV64_REG(BPF_REG_1, BPF_REG_10);
		p[n++] = ADD64_IMM(BPF_REG_1, -64);
		p[n++] = MOV64_IMM(BPF_REG_2, 48);
		p[n++] = MOV64_REG(BPF_REG_3, BPF_REG_6);
		p[n++] = CALL(BPF_FUNC_probe_read_kernel);
	}
	if (body >= B_READ2 && body != B_CAST) {
		p[n++] = MOV64_REG(BPF_REG_1, BPF_REG_10);
		p[n++] = ADD64_IMM(BPF_REG_1, -96);
		p[n++] = MOV64_IMM(BPF_REG_2, 20);
		p[n++] = MOV64_REG(BPF_REG_3, BPF_REG_6);
		p[n++] = CALL(BPF_FUNC_probe_read_kernel);
	}
	p[n++] = MOV64_IMM(BPF_REG_0, 0);
	p[n++] = EXIT();
	return n;
}

/* Loads one program of kind; returns its fd (held), or -1. */
static int load_prog(enum kind kind, const char *name, __u32 btf_id)
{
	static const enum bpf_prog_type type[NKINDS] = {
		[RAW_TP] = BPF_PROG_TYPE_RAW_TRACEPOINT,
		[TP_BTF] = BPF_PROG_TYPE_TRACING,
		[KPROBE] = BPF_PROG_TYPE_KPROBE,
		[KPROBE_MULTI] = BPF_PROG_TYPE_KPROBE,
		[FENTRY] = BPF_PROG_TYPE_TRACING,
	};
	static const enum bpf_attach_type expected[NKINDS] = {
		[TP_BTF] = BPF_TRACE_RAW_TP,
		[KPROBE_MULTI] = BPF_TRACE_KPROBE_MULTI,
		[FENTRY] = BPF_TRACE_FENTRY,
	};
	LIBBPF_OPTS(bpf_prog_load_opts, opts);
	struct bpf_insn insns[32];
	char log[4096] = "";
	int prog, n = build_prog(insns, kind);

	opts.log_buf = log;
	opts.log_size = sizeof(log);
	opts.log_level = 0;
	opts.expected_attach_type = expected[kind];
	opts.attach_btf_id = btf_id;
	prog = bpf_prog_load(type[kind], "nt_floor", "GPL", insns, n, &opts);
	if (prog < 0 && log[0] == 0 && body != B_EMPTY) {
		/* ask the verifier why */
		opts.log_level = 1;
		prog = bpf_prog_load(type[kind], "nt_floor", "GPL", insns, n, &opts);
	}
	if (prog < 0) {
		fprintf(stderr, "bench-floor: %s: loading the %s program: %s%s%s\n", name,
			kind_name[kind], strerror(-prog), log[0] ? "\n" : "", log);
		return -1;
	}
	hold(prog);
	return prog;
}

/* The BTF id of name of the given kind in the kernel's BTF, or -1. */
static int btf_id_of(const char *what, const char *name, int btf_kind)
{
	int id = btf__find_by_name_kind(vmlinux_btf(), name, btf_kind);

	if (id <= 0) {
		fprintf(stderr, "bench-floor: %s: no BTF %s %s in the kernel\n", what,
			btf_kind == BTF_KIND_FUNC ? "function" : "typedef", name);
		return -1;
	}
	return id;
}

/* The kprobe PMU's perf event type, or -1. */
static int kprobe_pmu(void)
{
	static int type = -2;
	FILE *f;

	if (type == -2) {
		type = -1;
		f = fopen("/sys/bus/event_source/devices/kprobe/type", "r");
		if (f) {
			if (fscanf(f, "%d", &type) != 1)
				type = -1;
			fclose(f);
		}
		if (type < 0)
			fprintf(stderr, "bench-floor: no kprobe PMU (/sys/bus/event_source/devices/kprobe/type): no kprobes on this kernel\n");
	}
	return type;
}

/* Loads and attaches one empty program; returns 0, or -1. */
static int attach_one(enum kind kind, const char *name)
{
	int prog, link, id = 0;

	if (kind == TP_BTF) {
		char typedef_name[256];

		snprintf(typedef_name, sizeof(typedef_name), "btf_trace_%s", name);
		id = btf_id_of(name, typedef_name, BTF_KIND_TYPEDEF);
	} else if (kind == FENTRY) {
		id = btf_id_of(name, name, BTF_KIND_FUNC);
	}
	if (id < 0)
		return -1;
	prog = load_prog(kind, name, id);
	if (prog < 0)
		return -1;
	if (kind == KPROBE) {
		struct perf_event_attr attr;
		int type = kprobe_pmu();

		if (type < 0)
			return -1;
		memset(&attr, 0, sizeof(attr));
		attr.size = sizeof(attr);
		attr.type = type;
		attr.config1 = (__u64)(uintptr_t)name; /* kprobe_func */
		attr.config2 = 0;			/* probe_offset */
		attr.sample_period = 1;
		attr.wakeup_events = 1;
		/* system-wide: any pid, one cpu (the program runs on every CPU) */
		link = syscall(__NR_perf_event_open, &attr, -1, 0, -1, PERF_FLAG_FD_CLOEXEC);
		if (link < 0) {
			fprintf(stderr, "bench-floor: %s: perf_event_open on the kprobe PMU: %s\n",
				name, strerror(errno));
			return -1;
		}
		hold(link);
		if (ioctl(link, PERF_EVENT_IOC_SET_BPF, prog) || ioctl(link, PERF_EVENT_IOC_ENABLE, 0)) {
			fprintf(stderr, "bench-floor: %s: attaching the kprobe program: %s\n", name,
				strerror(errno));
			return -1;
		}
		return 0;
	}
	link = bpf_raw_tracepoint_open(kind == RAW_TP ? name : NULL, prog);
	if (link < 0) {
		fprintf(stderr, "bench-floor: %s: attaching the %s program: %s\n", name,
			kind_name[kind], strerror(-link));
		return -1;
	}
	hold(link);
	return 0;
}

/* One program and one kprobe-multi link for all syms; cookie i for syms[i]. */
static int attach_multi(const char **syms, int n)
{
	LIBBPF_OPTS(bpf_link_create_opts, lo);
	__u64 *cookies = calloc(n, sizeof(*cookies));
	int prog, link;

	if (!cookies)
		return -1;
	for (int i = 0; i < n; i++)
		cookies[i] = i;
	prog = load_prog(KPROBE_MULTI, syms[0], 0);
	if (prog < 0)
		return -1;
	lo.kprobe_multi.syms = syms;
	lo.kprobe_multi.cnt = n;
	lo.kprobe_multi.cookies = cookies;
	link = bpf_link_create(prog, 0, BPF_TRACE_KPROBE_MULTI, &lo);
	free(cookies);
	if (link < 0) {
		fprintf(stderr, "bench-floor: attaching the kprobe_multi program to %d functions (%s ...): %s\n",
			n, syms[0], strerror(-link));
		return -1;
	}
	hold(link);
	return 0;
}

int main(int argc, char **argv)
{
	enum kind deflt = RAW_TP;
	int first = 1, n = 0, nmulti = 0, sig, stats = -1;
	const char **multi;
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
		} else if (!strcmp(argv[first], "--body") && first + 1 < argc) {
			if (parse_body(argv[first + 1]))
				usage();
			first += 2;
		} else if (!strncmp(argv[first], "--body=", 7)) {
			if (parse_body(argv[first] + 7))
				usage();
			first++;
		} else if (!strcmp(argv[first], "--by-ip")) {
			by_ip = 1;
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

	multi = calloc(argc, sizeof(*multi));
	if (!multi)
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
		if (kind == KPROBE_MULTI) {
			multi[nmulti++] = name; /* one link for all, below */
			continue;
		}
		if (attach_one(kind, name))
			return 1; /* exiting closes (detaches) the rest */
		n++;
	}
	if (nmulti) {
		if (attach_multi(multi, nmulti))
			return 1;
		n += nmulti;
	}
	printf("ready %d\n", n);
	fflush(stdout);

	sigwait(&set, &sig);
	for (int i = 0; i < nheld; i++)
		close(held[i]);
	free(held);
	free(multi);
	if (stats >= 0)
		close(stats);
	return 0;
}
