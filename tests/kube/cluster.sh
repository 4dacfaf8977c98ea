#!/usr/bin/env bash
# A real two-node Kubernetes (v1.34, tests/kube/hyperkube) on this one machine, for the
# nettrace test bench. Called by `./dev cluster`; see tests/kube/README.md.
#
#   tests/kube/cluster.sh up       build what is missing, start the cluster, wait for both
#                                  nodes to be Ready, print KUBECONFIG=<admin kubeconfig>
#   tests/kube/cluster.sh down     remove everything `up` made (processes, namespaces,
#                                  mounts, cgroups, iptables rules, sysctls, files)
#   tests/kube/cluster.sh status   say whether it is up, and list the nodes
#   tests/kube/cluster.sh leftovers  list anything of a cluster still on the host (exit 1 if so)
#
# Layout (everything is named nt-* so that `down` finds it):
#   host bridge nt-br0 10.240.0.1/24 (the "bench address": API server, scheduler,
#   controller manager bind here); etcd on 127.0.0.1:23790 (plain HTTP, loopback only).
#   Nodes nt-node1 / nt-node2: network namespaces of the same names, eth0 10.240.0.11 / .12
#   (veth to nt-br0), each with its own containerd, kubelet and kube-proxy, pods in
#   10.244.1.0/24 / 10.244.2.0/24 on a bridge ntbr0, and a static VXLAN (nt-vx0, VNI 4242)
#   between them. Nothing is routed out of the machine.
#   State: $NT_KUBE_RUN (default /run/nt-kube: pids, sockets, containerd state, pod netns)
#   and target/kube/cluster (certificates, kubeconfigs, etcd, containerd roots, kubelet
#   roots, logs). Built artefacts kept across down/up: target/kube/hyperkube,
#   target/kube/images/*.tar, target/kube/podman (image build store).
#
# Progress goes to stderr, the one result line (KUBECONFIG=...) to stdout.
set -euo pipefail

ROOT="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/../.." && pwd)"
KDIR="$ROOT/target/kube"
DATA="$KDIR/cluster"
RUN="${NT_KUBE_RUN:-/run/nt-kube}"
HK="$KDIR/hyperkube"
IMAGES="$KDIR/images"
KUBECTL="$ROOT/target/kubectl/1.33/kubectl"
PKI="$DATA/pki"
LOGS="$DATA/logs"

BENCH_IP=10.240.0.1
UNDERLAY=10.240.0.0/24
BRIDGE=nt-br0
SERVICE_CIDR=10.96.0.0/16
SERVICE_IP=10.96.0.1
CLUSTER_CIDR=10.244.0.0/16
ETCD_CLIENT=127.0.0.1:23790
ETCD_PEER=127.0.0.1:23800
VNI=4242
VXLAN_MTU=1450
NODES=(1 2)

K8S_VERSION=v1.34.4
AGENT_VERSION="$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml")"
PAUSE_IMAGE=localhost/nt-kube/pause:1
BUSYBOX_IMAGE=localhost/nt-kube/busybox:1.35
AGENT_IMAGE="ghcr.io/nettrace/nettrace:$AGENT_VERSION"
STATIC_NETTRACE="$ROOT/target/vm/cargo/x86_64-unknown-linux-gnu/release/nettrace"

# What kubelet writes into the host's sysctls (unless protectKernelDefaults); saved at up
# and restored at down.
# Host directories that containerd (shim sockets), libcni (result cache) and kubelet
# (/var/log/containers links, the device-plugin socket, whose path is fixed) use whatever
# their configuration says; the ones missing at up are removed at down (deepest first).
HOST_DIRS=(/run/containerd/s /run/containerd /var/lib/cni/results /var/lib/cni
    /var/lib/kubelet/device-plugins /var/lib/kubelet /var/log/containers)

KUBELET_SYSCTLS=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
    kernel.keys.root_maxkeys kernel.keys.root_maxbytes)

T0="$(date +%s)"
say() { printf 'cluster: [%3ss] %s\n' "$(($(date +%s) - T0))" "$*" >&2; }
die() { printf 'cluster: error: %s\n' "$*" >&2; exit 1; }

node_name() { echo "nt-node$1"; }
node_ip() { echo "10.240.0.1$1"; }
node_cidr() { echo "10.244.$1.0/24"; }
node_vtep_mac() { printf '0e:6e:74:00:00:%02x' "$1"; }
node_sock() { echo "$RUN/nt-node$1/containerd.sock"; }

kc() { "$KUBECTL" --kubeconfig "$DATA/admin.kubeconfig" "$@"; }

# ---------------------------------------------------------------- prerequisites

check_tools() {
    [ "$(id -u)" -eq 0 ] || die "the cluster needs root (namespaces, cgroups, mounts): run \`sudo ./dev cluster up\`"
    local t missing=()
    for t in etcd podman containerd ctr runc openssl nsenter ip bridge iptables gcc findmnt setsid; do
        command -v "$t" >/dev/null 2>&1 || missing+=("$t")
    done
    [ -x /usr/lib/cni/bridge ] || missing+=("/usr/lib/cni/bridge")
    [ -x /bin/busybox ] || missing+=("/bin/busybox")
    [ "${#missing[@]}" -eq 0 ] || die "missing: ${missing[*]}: run \`./dev deps\`"
}

# ---------------------------------------------------------------- builds (kept across down)

build_hyperkube() {
    [ -x "$HK" ] && return 0
    local go=/usr/local/go/bin/go
    command -v go >/dev/null 2>&1 && go="$(command -v go)"
    [ -x "$go" ] || die "Go not found (need Go >= 1.24 at /usr/local/go/bin/go or on PATH) to build $HK"
    say "building hyperkube $K8S_VERSION (cold: about 450 s on 2 cores; see tests/kube/hyperkube/README.md)"
    local ld="" p s0
    for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        ld="$ld -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=34 -X $p.gitTreeState=clean"
    done
    s0="$(date +%s)"
    mkdir -p "$KDIR"
    (cd "$ROOT/tests/kube/hyperkube" &&
        GOMODCACHE="$ROOT/target/go-mod" GOCACHE="$ROOT/target/go-cache" GOMAXPROCS=2 \
            nice "$go" build -ldflags="$ld" -o "$HK.tmp" .) >&2 \
        || die "hyperkube build failed (see the go output above)"
    mv "$HK.tmp" "$HK"
    say "hyperkube built in $(($(date +%s) - s0)) s"
}

ensure_kubectl() {
    [ -x "$KUBECTL" ] && return 0
    say "fetching kubectl 1.33 (scripts/fetch-kubectl.sh)"
    "$ROOT/scripts/fetch-kubectl.sh" >&2 || die "could not fetch kubectl: run scripts/fetch-kubectl.sh"
    [ -x "$KUBECTL" ] || die "$KUBECTL missing after scripts/fetch-kubectl.sh"
}

podman_() {
    podman --root "$KDIR/podman/root" --runroot "$KDIR/podman/run" --tmpdir "$KDIR/podman/tmp" \
        --storage-driver vfs --cgroup-manager cgroupfs --events-backend file "$@"
}

# build_image TAG CONTEXT CONTAINERFILE OUT.tar [podman build args...]
build_image() {
    local tag="$1" ctx="$2" file="$3" out="$4"
    shift 4
    mkdir -p "$KDIR/podman/tmp" "$IMAGES"
    podman_ build -q -f "$file" -t "$tag" "$@" "$ctx" >/dev/null \
        || die "podman build of $tag failed (context $ctx)"
    rm -f "$out.tmp"
    podman_ save -q --format docker-archive -o "$out.tmp" "$tag" >&2 || die "podman save of $tag failed"
    mv "$out.tmp" "$out"
}

newer() { # newer A B: A missing or B newer than A
    [ ! -e "$1" ] || [ "$2" -nt "$1" ]
}

build_images() {
    local s0 ctx cache_existed=1
    s0="$(date +%s)"
    # podman save writes a blob-info cache to /var/lib/containers/cache whatever its --root
    [ -e /var/lib/containers ] || cache_existed=0
    # pause: our own static program in a scratch image
    if newer "$IMAGES/pause.tar" "$ROOT/tests/kube/images/pause/pause.c" \
        || newer "$IMAGES/pause.tar" "$ROOT/tests/kube/images/pause/Containerfile"; then
        say "building image $PAUSE_IMAGE"
        ctx="$KDIR/build/pause"
        rm -rf "$ctx" && mkdir -p "$ctx"
        gcc -static -Os -Wall -o "$ctx/pause" "$ROOT/tests/kube/images/pause/pause.c" \
            || die "compiling tests/kube/images/pause/pause.c failed"
        build_image "$PAUSE_IMAGE" "$ctx" "$ROOT/tests/kube/images/pause/Containerfile" "$IMAGES/pause.tar"
    fi
    # busybox: Debian's static busybox and its applet links
    if newer "$IMAGES/busybox.tar" /bin/busybox \
        || newer "$IMAGES/busybox.tar" "$ROOT/tests/kube/images/busybox/Containerfile"; then
        say "building image $BUSYBOX_IMAGE"
        ctx="$KDIR/build/busybox"
        rm -rf "$ctx" && mkdir -p "$ctx/rootfs/bin" "$ctx/rootfs/tmp"
        chmod 1777 "$ctx/rootfs/tmp"
        cp /bin/busybox "$ctx/rootfs/bin/busybox"
        local a
        for a in $(/bin/busybox --list); do
            [ "$a" = busybox ] || ln -s busybox "$ctx/rootfs/bin/$a"
        done
        build_image "$BUSYBOX_IMAGE" "$ctx" "$ROOT/tests/kube/images/busybox/Containerfile" "$IMAGES/busybox.tar"
    fi
    # the agent: manifests/Containerfile with the static nettrace
    if [ "${NT_KUBE_SKIP_AGENT_BUILD:-0}" != 1 ]; then
        say "cargo build of the static nettrace (target/vm/cargo)"
        if ! (cd "$ROOT" && RUSTFLAGS="-C target-feature=+crt-static" CARGO_TARGET_DIR="$ROOT/target/vm/cargo" \
            nice cargo build -q -p nettrace --release --target x86_64-unknown-linux-gnu) >&2; then
            [ -x "$STATIC_NETTRACE" ] || die "the static nettrace build failed (see above)"
            say "warning: the static nettrace build failed; using the existing $STATIC_NETTRACE"
        fi
    fi
    [ -x "$STATIC_NETTRACE" ] || die "$STATIC_NETTRACE missing (static build of -p nettrace)"
    if newer "$IMAGES/agent.tar" "$STATIC_NETTRACE" || newer "$IMAGES/agent.tar" "$ROOT/manifests/Containerfile"; then
        say "building image $AGENT_IMAGE from manifests/Containerfile"
        ctx="$KDIR/build/agent"
        rm -rf "$ctx" && mkdir -p "$ctx"
        cp "$STATIC_NETTRACE" "$ctx/nettrace"
        build_image "$AGENT_IMAGE" "$ctx" "$ROOT/manifests/Containerfile" "$IMAGES/agent.tar" \
            --build-arg BINARY=nettrace
    fi
    [ "$cache_existed" = 1 ] || rm -rf /var/lib/containers
    say "images ready ($(($(date +%s) - s0)) s)"
}

# ---------------------------------------------------------------- certificates

# cert NAME SUBJECT EXTENSIONS...: a P-256 key and a certificate signed by our CA
cert() {
    local name="$1" subj="$2"
    shift 2
    printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
        "subjectKeyIdentifier=hash" "authorityKeyIdentifier=keyid" "$@" >"$PKI/$name.ext"
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$PKI/$name.key" 2>/dev/null
    openssl req -new -key "$PKI/$name.key" -subj "$subj" -out "$PKI/$name.csr" 2>/dev/null
    openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -set_serial "0x$(openssl rand -hex 16)" \
        -days 30 -sha256 -extfile "$PKI/$name.ext" -out "$PKI/$name.crt" 2>/dev/null
    rm -f "$PKI/$name.csr" "$PKI/$name.ext"
}

make_pki() {
    say "certificates (openssl, P-256): CA, API server, kubelets, components, admin, nt-user, nt-noattach"
    mkdir -p "$PKI"
    chmod 700 "$PKI"
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$PKI/ca.key" 2>/dev/null
    openssl req -x509 -new -key "$PKI/ca.key" -subj "/CN=nt-kube-ca" -days 30 -sha256 \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -addext "subjectKeyIdentifier=hash" -out "$PKI/ca.crt" 2>/dev/null
    local sans="subjectAltName=IP:$BENCH_IP,IP:$SERVICE_IP,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
    cert apiserver "/CN=kube-apiserver" "extendedKeyUsage=serverAuth" "$sans"
    cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" "extendedKeyUsage=clientAuth"
    cert admin "/O=system:masters/CN=nt-admin" "extendedKeyUsage=clientAuth"
    cert nt-user "/CN=nt-user" "extendedKeyUsage=clientAuth"
    cert nt-noattach "/CN=nt-noattach" "extendedKeyUsage=clientAuth"
    cert controller-manager "/CN=system:kube-controller-manager" "extendedKeyUsage=clientAuth"
    cert scheduler "/CN=system:kube-scheduler" "extendedKeyUsage=clientAuth"
    cert kube-proxy "/CN=system:kube-proxy" "extendedKeyUsage=clientAuth"
    local i n
    for i in "${NODES[@]}"; do
        n="$(node_name "$i")"
        cert "$n" "/O=system:nodes/CN=system:node:$n" "extendedKeyUsage=clientAuth"
        cert "$n-serving" "/CN=$n" "extendedKeyUsage=serverAuth" "subjectAltName=IP:$(node_ip "$i"),DNS:$n"
    done
    # service-account token signing key (ES256)
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$PKI/sa.key" 2>/dev/null
    openssl pkey -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
    chmod 600 "$PKI"/*.key

    kubeconfig admin admin
    kubeconfig nt-user nt-user
    kubeconfig nt-noattach nt-noattach
    kubeconfig controller-manager controller-manager
    kubeconfig scheduler scheduler
    kubeconfig kube-proxy kube-proxy
    for i in "${NODES[@]}"; do
        kubeconfig "$(node_name "$i")" "$(node_name "$i")"
    done
}

# kubeconfig FILE-NAME CERT-NAME: $DATA/FILE-NAME.kubeconfig with the data embedded
kubeconfig() {
    local f="$DATA/$1.kubeconfig" c="$2"
    cat >"$f" <<EOF
apiVersion: v1
kind: Config
clusters:
  - name: nt-kube
    cluster:
      server: https://$BENCH_IP:6443
      certificate-authority-data: $(base64 -w0 "$PKI/ca.crt")
users:
  - name: $c
    user:
      client-certificate-data: $(base64 -w0 "$PKI/$c.crt")
      client-key-data: $(base64 -w0 "$PKI/$c.key")
contexts:
  - name: $c@nt-kube
    context:
      cluster: nt-kube
      user: $c
      namespace: default
current-context: $c@nt-kube
EOF
    chmod 600 "$f"
}

# ---------------------------------------------------------------- processes

# start NAME NETNS|- CMD...: runs CMD in the background (in the node's network namespace,
# sharing the host's mount namespace), its own session, log in $LOGS/NAME.log
start() {
    local name="$1" ns="$2"
    shift 2
    if [ "$ns" != - ]; then
        set -- nsenter --net="/run/netns/$ns" -- "$@"
    fi
    # 9>&-: the processes must not inherit (and hold) cluster.lock
    setsid "$@" </dev/null >>"$LOGS/$name.log" 2>&1 9>&- &
    echo $! >"$RUN/pids/$name"
}

alive() { [ -f "$RUN/pids/$1" ] && kill -0 "$(cat "$RUN/pids/$1")" 2>/dev/null; }

# wait_for WHAT SECONDS PROCESS CMD...: polls CMD until it succeeds, with progress, failing
# early when PROCESS (a pid name, or -) has died
wait_for() {
    local what="$1" secs="$2" proc="$3" i
    shift 3
    for ((i = 0; i < secs * 2; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        if [ "$proc" != - ] && ! alive "$proc"; then
            tail -n 20 "$LOGS/$proc.log" >&2 || true
            die "$proc exited while waiting for $what (log: $LOGS/$proc.log)"
        fi
        if ((i > 0 && i % 20 == 0)); then say "still waiting for $what ($((i / 2)) s)"; fi
        sleep 0.5
    done
    [ "$proc" != - ] && tail -n 20 "$LOGS/$proc.log" >&2
    [ "$proc" != - ] && what="$what (log: $LOGS/$proc.log)"
    die "timed out after $secs s waiting for $what"
}

# ---------------------------------------------------------------- network

make_network() {
    say "network: bridge $BRIDGE $BENCH_IP/24, namespaces ${NODES[*]/#/nt-node}, VXLAN VNI $VNI"
    ip link add "$BRIDGE" type bridge
    ip addr add "$BENCH_IP/24" dev "$BRIDGE"
    ip link set "$BRIDGE" up
    # Bridged traffic between the nodes (the VXLAN underlay) and the nodes' traffic to the
    # control plane cross the host's netfilter (br_netfilter): let it through even where
    # the host's policies drop.
    iptables -I FORWARD 1 -i "$BRIDGE" -o "$BRIDGE" -m comment --comment nt-kube -j ACCEPT
    iptables -I INPUT 1 -i "$BRIDGE" -m comment --comment nt-kube -j ACCEPT
    local i j n
    for i in "${NODES[@]}"; do
        n="$(node_name "$i")"
        ip netns add "$n"
        ip link add "$n-h" type veth peer name eth0 netns "$n"
        ip link set "$n-h" master "$BRIDGE" up
        ip -n "$n" link set lo up
        ip -n "$n" addr add "$(node_ip "$i")/24" dev eth0
        ip -n "$n" link set eth0 up
        nsenter --net="/run/netns/$n" sysctl -qw net.ipv4.ip_forward=1
        nsenter --net="/run/netns/$n" sysctl -qw net.bridge.bridge-nf-call-iptables=1 2>/dev/null || true
        # flannel-like static overlay: this node's VTEP, and for every other node a route to
        # its pod CIDR through its VTEP address, the VTEP's MAC, and where to send it (FDB)
        ip -n "$n" link add nt-vx0 type vxlan id "$VNI" local "$(node_ip "$i")" dev eth0 dstport 4789 nolearning
        ip -n "$n" link set nt-vx0 address "$(node_vtep_mac "$i")" mtu "$VXLAN_MTU" up
        ip -n "$n" addr add "10.244.$i.0/32" dev nt-vx0
    done
    for i in "${NODES[@]}"; do
        n="$(node_name "$i")"
        for j in "${NODES[@]}"; do
            [ "$i" = "$j" ] && continue
            ip -n "$n" neigh replace "10.244.$j.0" lladdr "$(node_vtep_mac "$j")" dev nt-vx0 nud permanent
            bridge -n "$n" fdb append "$(node_vtep_mac "$j")" dev nt-vx0 dst "$(node_ip "$j")"
            ip -n "$n" route replace "$(node_cidr "$j")" via "10.244.$j.0" dev nt-vx0 onlink
        done
    done
}

# ---------------------------------------------------------------- control plane

start_control_plane() {
    say "etcd ($(etcd --version | head -n1)) on $ETCD_CLIENT"
    mkdir -p "$DATA/etcd"
    chmod 700 "$DATA/etcd"
    start etcd - etcd --name nt-etcd --data-dir "$DATA/etcd" \
        --listen-client-urls "http://$ETCD_CLIENT" --advertise-client-urls "http://$ETCD_CLIENT" \
        --listen-peer-urls "http://$ETCD_PEER" --initial-advertise-peer-urls "http://$ETCD_PEER" \
        --initial-cluster "nt-etcd=http://$ETCD_PEER" --initial-cluster-state new \
        --logger zap --log-outputs stderr --log-level warn
    wait_for "etcd" 30 etcd curl -fsS "http://$ETCD_CLIENT/health"

    say "kube-apiserver on https://$BENCH_IP:6443"
    start kube-apiserver - "$HK" kube-apiserver \
        --advertise-address="$BENCH_IP" --bind-address="$BENCH_IP" --secure-port=6443 \
        --etcd-servers="http://$ETCD_CLIENT" \
        --service-cluster-ip-range="$SERVICE_CIDR" \
        --client-ca-file="$PKI/ca.crt" \
        --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
        --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" \
        --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
        --kubelet-certificate-authority="$PKI/ca.crt" \
        --kubelet-preferred-address-types=InternalIP \
        --service-account-issuer=https://kubernetes.default.svc.cluster.local \
        --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
        --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
        --allow-privileged=true --cert-dir="$PKI" --profiling=false --v=1
    wait_for "the API server" 90 kube-apiserver kc get --raw /readyz

    say "kube-controller-manager, kube-scheduler"
    start kube-controller-manager - "$HK" kube-controller-manager \
        --kubeconfig="$DATA/controller-manager.kubeconfig" \
        --authentication-kubeconfig="$DATA/controller-manager.kubeconfig" \
        --authorization-kubeconfig="$DATA/controller-manager.kubeconfig" \
        --bind-address="$BENCH_IP" --leader-elect=false \
        --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
        --use-service-account-credentials=true --cluster-name=nt-kube \
        --allocate-node-cidrs=false --cluster-cidr="$CLUSTER_CIDR" \
        --service-cluster-ip-range="$SERVICE_CIDR" --profiling=false --v=1 \
        --flex-volume-plugin-dir="$DATA/flex-volume"
    start kube-scheduler - "$HK" kube-scheduler \
        --kubeconfig="$DATA/scheduler.kubeconfig" \
        --authentication-kubeconfig="$DATA/scheduler.kubeconfig" \
        --authorization-kubeconfig="$DATA/scheduler.kubeconfig" \
        --bind-address="$BENCH_IP" --leader-elect=false --profiling=false --v=1

    apply_manifests
}

# The agent namespace, the users' roles and the bench users' bindings (also re-applied by an
# `up` on a running cluster, so that a changed manifest takes effect).
apply_manifests() {
    say "applying manifests/namespace.yaml, manifests/rbac.yaml, tests/kube/manifests/nt-{user,noattach}-rbac.yaml"
    kc apply -f "$ROOT/manifests/namespace.yaml" -f "$ROOT/manifests/rbac.yaml" \
        -f "$ROOT/tests/kube/manifests/nt-user-rbac.yaml" \
        -f "$ROOT/tests/kube/manifests/nt-noattach-rbac.yaml" >&2
}

# ---------------------------------------------------------------- nodes

make_cgroups() { # make_cgroups NODE: /NODE in every v1 hierarchy (kubelet's --cgroup-root)
    local n="$1" h
    for h in /sys/fs/cgroup/*/; do
        h="${h%/}"
        mountpoint -q "$h" || continue
        mkdir -p "$h/$n"
        if [ -f "$h/cpuset.cpus" ]; then
            cat "$h/cpuset.cpus" >"$h/$n/cpuset.cpus"
            cat "$h/cpuset.mems" >"$h/$n/cpuset.mems"
        fi
    done
}

start_node() {
    local i="$1" n d r
    n="$(node_name "$i")"
    d="$DATA/$n"
    r="$RUN/$n"
    mkdir -p "$d/containerd" "$d/cni/net.d" "$d/cni/ipam" "$d/kubelet" "$d/pod-logs" \
        "$d/volume-plugins" "$d/opt" "$r"
    make_cgroups "$n"

    cat >"$d/cni/net.d/10-$n.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "$n",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "ntbr0",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "mtu": $VXLAN_MTU,
      "ipam": {
        "type": "host-local",
        "dataDir": "$d/cni/ipam",
        "ranges": [[{ "subnet": "$(node_cidr "$i")", "gateway": "10.244.$i.1" }]],
        "routes": [{ "dst": "0.0.0.0/0" }]
      }
    },
    { "type": "portmap", "capabilities": { "portMappings": true } }
  ]
}
EOF
    cat >"$d/containerd.toml" <<EOF
version = 2
root = "$d/containerd"
state = "$r/containerd"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]

[grpc]
  address = "$r/containerd.sock"

[ttrpc]
  address = "$r/containerd.ttrpc.sock"

[plugins."io.containerd.internal.v1.opt"]
  path = "$d/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  netns_mounts_under_state_dir = true
  # Bench hosts may lack CAP_SYS_RESOURCE (it is missing here): never ask for an OOM
  # score below containerd's own, which would fail every sandbox with EPERM.
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$r/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$d/cni/net.d"
    max_conf_num = 1
EOF
    start "containerd-$n" "$n" containerd --config "$d/containerd.toml"
    wait_for "containerd of $n" 30 "containerd-$n" ctr -a "$r/containerd.sock" version
    import_images "$i"

    cat >"$d/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $(node_ip "$i")
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: $PKI/ca.crt
authorization:
  mode: Webhook
tlsCertFile: $PKI/$n-serving.crt
tlsPrivateKeyFile: $PKI/$n-serving.key
rotateCertificates: false
serverTLSBootstrap: false
containerRuntimeEndpoint: unix://$r/containerd.sock
cgroupDriver: cgroupfs
# Two kubelets share the host's cgroup v1 tree: each gets its own root.
cgroupRoot: /$n
cgroupsPerQOS: true
enforceNodeAllocatable: ["pods"]
failSwapOn: false
protectKernelDefaults: false
podLogsDir: $d/pod-logs
volumePluginDir: $d/volume-plugins
clusterDomain: cluster.local
hairpinMode: hairpin-veth
maxPods: 50
serializeImagePulls: false
# Never garbage-collect the images: they cannot be pulled back.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
# The bench disk and memory are shared and may be fuller than a real node's.
evictionHard:
  memory.available: "50Mi"
  nodefs.available: "1%"
  nodefs.inodesFree: "1%"
  imagefs.available: "1%"
  imagefs.inodesFree: "1%"
EOF
    start "kubelet-$n" "$n" "$HK" kubelet --config="$d/kubelet.yaml" --kubeconfig="$DATA/$n.kubeconfig" \
        --root-dir="$d/kubelet" --cert-dir="$PKI" --hostname-override="$n" --node-ip="$(node_ip "$i")" \
        --pod-infra-container-image="$PAUSE_IMAGE" --v=1
    start "kube-proxy-$n" "$n" "$HK" kube-proxy --kubeconfig="$DATA/kube-proxy.kubeconfig" \
        --hostname-override="$n" --proxy-mode=iptables --cluster-cidr="$CLUSTER_CIDR" \
        --conntrack-max-per-core=0 --conntrack-tcp-timeout-established=0 \
        --conntrack-tcp-timeout-close-wait=0 \
        --metrics-bind-address=127.0.0.1:10249 --healthz-bind-address=127.0.0.1:10256 --v=1
}

# import_images [NODE-INDEX...]: the image archives into the nodes' containerd (all nodes
# by default); an image already there under the same name is replaced
import_images() {
    local i t n
    [ "$#" -gt 0 ] || set -- "${NODES[@]}"
    for i in "$@"; do
        n="$(node_name "$i")"
        for t in pause busybox agent; do
            ctr -a "$(node_sock "$i")" -n k8s.io images import "$IMAGES/$t.tar" >/dev/null \
                || die "importing $IMAGES/$t.tar into $n's containerd failed"
        done
    done
}

node_ready() {
    [ "$(kc get node "$1" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ]
}

# ---------------------------------------------------------------- up / down

# up: the marker, every process we started alive, and the API server ready
is_up() {
    [ -f "$RUN/up" ] || return 1
    local f
    for f in "$RUN"/pids/*; do alive "${f##*/}" || return 1; done
    kc get --raw /readyz >/dev/null 2>&1
}

# One up/down at a time (tests may call up from several processes): the later one waits.
LOCKED=0
lock() {
    [ "$LOCKED" = 0 ] || return 0
    LOCKED=1
    mkdir -p "$KDIR"
    exec 9>"$KDIR/cluster.lock"
    if ! flock -n 9; then
        say "another cluster.sh up/down is running; waiting for it"
        flock -w 900 9 || die "still locked after 900 s: is a cluster.sh stuck? (lock: $KDIR/cluster.lock)"
    fi
}

cmd_up() {
    check_tools
    lock
    if is_up; then
        say "already up (./dev cluster down to stop it); refreshing the images"
        build_images
        import_images
        # a cluster started before nt-noattach existed: give it that user
        if [ ! -e "$DATA/nt-noattach.kubeconfig" ]; then
            cert nt-noattach "/CN=nt-noattach" "extendedKeyUsage=clientAuth"
            chmod 600 "$PKI/nt-noattach.key"
            kubeconfig nt-noattach nt-noattach
        fi
        apply_manifests
        echo "KUBECONFIG=$DATA/admin.kubeconfig"
        return 0
    fi
    if [ -e "$RUN" ] || [ -e "$DATA" ] || ip link show "$BRIDGE" >/dev/null 2>&1; then
        say "leftovers of an earlier cluster: cleaning up first"
        cmd_down
        T0="$(date +%s)"
    fi
    ensure_kubectl
    build_hyperkube
    build_images
    local t_start
    t_start="$(date +%s)"

    trap up_failed EXIT
    mkdir -p "$RUN/pids" "$LOGS"
    local s
    for s in "${KUBELET_SYSCTLS[@]}"; do echo "$s=$(sysctl -n "$s")"; done >"$RUN/sysctls.saved"
    for s in "${HOST_DIRS[@]}"; do [ -e "$s" ] || echo "$s"; done >"$RUN/host-dirs.created"
    make_pki
    make_network
    start_control_plane
    local i
    for i in "${NODES[@]}"; do
        say "node $(node_name "$i"): containerd (images imported), kubelet, kube-proxy"
        start_node "$i"
    done
    for i in "${NODES[@]}"; do
        wait_for "node $(node_name "$i") Ready" 180 "kubelet-$(node_name "$i")" node_ready "$(node_name "$i")"
        # pod CIDRs are static (the CNI configuration); record them on the Node objects
        kc patch node "$(node_name "$i")" --type merge \
            -p "{\"spec\":{\"podCIDR\":\"$(node_cidr "$i")\",\"podCIDRs\":[\"$(node_cidr "$i")\"]}}" >/dev/null \
            || die "could not set the pod CIDR of $(node_name "$i")"
    done
    # pods cannot be created before the service account controller made "default"
    wait_for "service account default/default" 60 kube-controller-manager kc -n default get serviceaccount default
    wait_for "service account nettrace/default" 60 kube-controller-manager kc -n nettrace get serviceaccount default
    touch "$RUN/up"
    trap - EXIT
    say "up: two nodes Ready in $(($(date +%s) - t_start)) s (after builds); total $(($(date +%s) - T0)) s"
    say "restricted user (manifests/rbac.yaml only): KUBECONFIG=$DATA/nt-user.kubeconfig"
    echo "KUBECONFIG=$DATA/admin.kubeconfig"
}

up_failed() {
    local rc=$?
    trap - EXIT
    local keep="$KDIR/last-failure"
    if [ -d "$LOGS" ]; then
        rm -rf "$keep"
        cp -r "$LOGS" "$keep" 2>/dev/null || true
        say "up failed; logs copied to $keep"
    fi
    say "cleaning up"
    cmd_down || true
    exit "$rc"
}

# pids of processes whose command line mentions our state directories (the shims say
# -address $RUN/...; every component names a file under $DATA)
our_pids() {
    local p cmd
    for p in /proc/[0-9]*; do
        p="${p#/proc/}"
        [ "$p" = "$$" ] && continue
        cmd="$(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null)" || continue
        case "$cmd" in
            *"$RUN/"* | *"$DATA/"*) echo "$p" ;;
        esac
    done
}

# pids of the processes in the nodes' cgroups (the containers)
cgroup_pids() {
    local h
    for h in /sys/fs/cgroup/*/nt-node[0-9]*; do
        [ -d "$h" ] || continue
        find "$h" -name cgroup.procs -exec cat {} + 2>/dev/null
    done | sort -u
}

stop_pid() { # stop_pid SIGNAL-WAIT-SECONDS PIDS...: TERM, wait, KILL
    local secs="$1" p i
    shift
    [ "$#" -gt 0 ] || return 0
    kill -TERM "$@" 2>/dev/null || true
    for ((i = 0; i < secs * 10; i++)); do
        local left=0
        for p in "$@"; do kill -0 "$p" 2>/dev/null && left=1; done
        [ "$left" = 0 ] && return 0
        sleep 0.1
    done
    kill -KILL "$@" 2>/dev/null || true
}

pidfile_pids() {
    local f
    for f in "$@"; do
        [ -f "$RUN/pids/$f" ] && cat "$RUN/pids/$f"
    done
    return 0
}

cmd_down() {
    [ "$(id -u)" -eq 0 ] || die "needs root: run \`sudo ./dev cluster down\`"
    lock
    local s0 i n p
    s0="$(date +%s)"
    say "down: stopping kubelets and kube-proxies"
    local node_procs=()
    for i in "${NODES[@]}"; do node_procs+=("kubelet-$(node_name "$i")" "kube-proxy-$(node_name "$i")"); done
    # shellcheck disable=SC2046
    stop_pid 2 $(pidfile_pids "${node_procs[@]}")
    say "down: killing the containers (cgroups /nt-node*)"
    for i in 1 2 3 4 5 6 7 8 9 10; do
        p="$(cgroup_pids)"
        [ -z "$p" ] && break
        # shellcheck disable=SC2086
        kill -KILL $p 2>/dev/null || true
        sleep 0.3
    done
    say "down: stopping containerd, the control plane and anything else using $RUN or $DATA"
    # Nothing needs a clean shutdown any more (the data is thrown away): all at once.
    # shellcheck disable=SC2046
    stop_pid 2 $(pidfile_pids containerd-nt-node1 containerd-nt-node2 kube-scheduler \
        kube-controller-manager kube-apiserver etcd) $(our_pids)
    # shellcheck disable=SC2046
    stop_pid 1 $(our_pids)

    say "down: mounts, network namespaces, links, iptables rules"
    local m
    for m in $(findmnt -rn -o TARGET | awk -v a="$RUN" -v b="$DATA" \
        'index($0, a"/") == 1 || $0 == a || index($0, b"/") == 1 || $0 == b' | sort -r); do
        umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || say "warning: could not unmount $m"
    done
    for i in "${NODES[@]}"; do
        n="$(node_name "$i")"
        ip netns del "$n" 2>/dev/null || true
        ip link del "$n-h" 2>/dev/null || true
    done
    ip link del "$BRIDGE" 2>/dev/null || true
    local rule
    while rule="$(iptables -S 2>/dev/null | grep -m1 -- '--comment nt-kube')" && [ -n "$rule" ]; do
        # shellcheck disable=SC2086
        iptables ${rule/-A /-D } || break
    done

    say "down: cgroups, sysctls, files"
    local h
    for h in /sys/fs/cgroup/*/nt-node[0-9]*; do
        [ -d "$h" ] || continue
        find "$h" -depth -type d -exec rmdir {} + 2>/dev/null || true
        [ -d "$h" ] && say "warning: cgroup $h is still there (processes left in it?)"
    done
    if [ -f "$RUN/sysctls.saved" ]; then
        while IFS='=' read -r s v; do sysctl -qw "$s=$v" 2>/dev/null || true; done <"$RUN/sysctls.saved"
    fi
    find /var/log/containers -maxdepth 1 -lname "$DATA/*" -delete 2>/dev/null || true
    # libcni's result cache (ours name $RUN's pod namespaces; "cni-loopback-*" too)
    local f
    for f in /var/lib/cni/results/*; do
        [ -f "$f" ] && grep -qF "$RUN/" "$f" && rm -f "$f"
    done
    if [ -f "$RUN/host-dirs.created" ]; then
        local d
        while read -r d; do
            [ -e "$d" ] || continue
            case "$d" in
                /var/lib/kubelet*) rm -rf "$d" ;; # only our kubelets ran on this host
                *) rmdir "$d" 2>/dev/null || say "warning: $d is not empty (another containerd?); left in place" ;;
            esac
        done <"$RUN/host-dirs.created"
    fi
    rm -rf "$RUN" "$DATA"
    say "down in $(($(date +%s) - s0)) s"
}

# Lists whatever of a cluster is left on the host; exits 1 when anything is.
cmd_leftovers() {
    local out=() n l h d
    for n in $(ip netns list | awk '{print $1}'); do
        case "$n" in nt-node*) out+=("network namespace $n") ;; esac
    done
    for l in $(ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1); do
        case "$l" in nt-*) out+=("link $l") ;; esac
    done
    while read -r l; do out+=("mount $l"); done < <(findmnt -rn -o TARGET | grep -E "^($RUN|$DATA)(/|$)" || true)
    for h in /sys/fs/cgroup/*/nt-node*; do [ -d "$h" ] && out+=("cgroup $h"); done
    while read -r l; do out+=("iptables: $l"); done < <(iptables -S 2>/dev/null | grep -- '--comment nt-kube' || true)
    for l in $(our_pids); do out+=("process $l: $(tr '\0' ' ' <"/proc/$l/cmdline" 2>/dev/null | cut -c1-100)"); done
    for d in "$RUN" "$DATA"; do [ -e "$d" ] && out+=("directory $d"); done
    if [ "${#out[@]}" -eq 0 ]; then
        say "nothing of the cluster is left"
        return 0
    fi
    printf 'left: %s\n' "${out[@]}" >&2
    return 1
}

cmd_status() {
    if is_up; then
        say "up: KUBECONFIG=$DATA/admin.kubeconfig (restricted user: $DATA/nt-user.kubeconfig)"
        kc get nodes -o wide >&2
    else
        say "not up"
        return 1
    fi
}

case "${1:-}" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    leftovers) cmd_leftovers ;;
    *) die "usage: $0 up|down|status|leftovers" ;;
esac
