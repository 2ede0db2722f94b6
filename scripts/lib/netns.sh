# shellcheck shell=bash
# Network-namespace topology for nftproxy e2e tests. Source it, then call np_setup.
#
#   ext (203.0.113.2, .130, 2600:5200::1)         client pods, local endpoint pods
#        |  vext: node IPs 192.168.0.2/24, 2001:db8::1/64, 192.168.99.11, 192.168.1.2
#      node  (router; nftproxy's ruleset lives here; sentinel listener)
#        |  vrnode
#      rnode (192.168.1.3, 2001:db8:1::3; router)  -- remote endpoint pods
#
# Every role is a namespace "$NP_PREFIX-ROLE" joined to its parent by a veth pair:
# "v<ROLE>" in the parent, "eth0" in the child. Children get /32 and /128 addresses and
# default routes via the parent (IPv4: the parent's main address, onlink; IPv6: fe80::1 on
# the parent's side of the veth). The node routes every leaf address to its veth (or via
# the remote node), with "src NODE_IP4/NODE_IP6".
#
# Functions (all safe under set -euo pipefail):
#   np_setup                        root check, traps, node + ext + rnode
#   add_pod ROLE PARENT IP...       new namespace ROLE behind PARENT (node|rnode|...)
#   ns_of ROLE                      namespace name;   nsexec ROLE CMD...   run CMD there
#   role_ip ROLE 4|6                first IPv4/IPv6 address of ROLE
#   apply_rules FILE|-              nft -f into the node, then flush its conntrack table
#   clear_rules                     nft flush ruleset in the node + conntrack flush
#   flush_conntrack                 conntrack -F in the node (and rnode)
#   start_echo ROLE NAME PORTSPEC... [--addr IP]   echo server (scripts/echo-server.py)
#   stop_echo ROLE NAME             stop it
#   start_sentinel PORTSPEC...      echo server named "sentinel" in the node namespace
#   np_cleanup                      kill our processes, delete our namespaces (trap)
# Variables: NP_HAVE_SCTP (1|0), NP_RUN (scratch dir), NP_PREFIX, and the addresses below.

NP_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
NP_SCRIPTS=$(dirname "$NP_LIB_DIR")
NP_PYTHON=${NP_PYTHON:-python3}
NP_PREFIX=${NP_PREFIX:-np$$}

NODE_IP4=${NODE_IP4:-192.168.0.2}
NODE_IP6=${NODE_IP6:-2001:db8::1}
NODE_EXTRA_IPS=${NODE_EXTRA_IPS:-192.168.1.2 192.168.99.11 2001:db8:1::2}
NODE_GW4=${NODE_GW4:-192.168.0.1}           # node's default gateway (lives in ext)
RNODE_IP4=${RNODE_IP4:-192.168.1.3}
RNODE_IP6=${RNODE_IP6:-2001:db8:1::3}
EXT_IPS=${EXT_IPS:-203.0.113.2 2600:5200::1 203.0.113.130}
NODE_IPS="$NODE_IP4 $NODE_IP6 $NODE_EXTRA_IPS"

declare -gA NP_PARENT=() NP_IPS=()
declare -ga NP_NAMESPACES=()
NP_RUN=${NP_RUN:-}
NP_HAVE_SCTP=${NP_HAVE_SCTP:-}

np_die() { echo "netns.sh: $*" >&2; exit 1; }

ns_of() { echo "$NP_PREFIX-$1"; }

nsexec() {
    local role=$1; shift
    [[ -n ${NP_PARENT[$role]+x} ]] || np_die "nsexec: unknown role '$role'"
    ip netns exec "$NP_PREFIX-$role" "$@"
}

# role_ip ROLE 4|6: the role's first address of that family (node: NODE_IP4/NODE_IP6)
role_ip() {
    local ip
    for ip in ${NP_IPS[$1]:-}; do
        if [[ $2 == 6 && $ip == *:* ]] || [[ $2 == 4 && $ip != *:* ]]; then
            echo "$ip"; return 0
        fi
    done
    np_die "role_ip: $1 has no IPv$2 address"
}

np_detect_sctp() {   # inside the node namespace: the host's networking is never touched
    if nsexec node "$NP_PYTHON" -c 'import socket; socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_SCTP)' 2>/dev/null; then
        NP_HAVE_SCTP=1
    else
        NP_HAVE_SCTP=0
    fi
}

# np_new_ns ROLE: create the namespace with deterministic sysctls.
np_new_ns() {
    local ns=$NP_PREFIX-$1
    [[ $1 =~ ^[a-z0-9]{1,13}$ ]] || np_die "role name '$1' must match [a-z0-9]{1,13}"
    [[ -z ${NP_PARENT[$1]+x} ]] || np_die "role '$1' exists already"
    ip netns add "$ns"
    NP_NAMESPACES+=("$ns")
    NP_PARENT[$1]=""
    NP_IPS[$1]=""
    # rp_filter off, no ICMP rate limiting (else REFUSED turns into TIMEOUT after a burst),
    # no IPv6 DAD (addresses usable at once, no sleeps)
    ip netns exec "$ns" sysctl -qw \
        net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 \
        net.ipv4.icmp_ratelimit=0 net.ipv4.icmp_msgs_per_sec=1000000 \
        net.ipv4.icmp_msgs_burst=1000000 \
        net.ipv6.icmp.ratelimit=0 \
        net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0 >/dev/null
    ip -n "$ns" link set lo up
}

# np_addr NS IP[/PLEN] DEV [OPTS...]: add an address (default /32 or /128, IPv6 without DAD)
np_addr() {
    local ns=$1 ip=$2 dev=$3; shift 3
    if [[ $ip == *:* ]]; then
        [[ $ip == */* ]] || ip+=/128
        ip -n "$ns" addr add "$ip" dev "$dev" nodad "$@"
    else
        [[ $ip == */* ]] || ip+=/32
        ip -n "$ns" addr add "$ip" dev "$dev" "$@"
    fi
}

np_router() {   # np_router ROLE: enable forwarding
    ip netns exec "$NP_PREFIX-$1" sysctl -qw net.ipv4.ip_forward=1 \
        net.ipv6.conf.all.forwarding=1 >/dev/null
}

# add_pod ROLE PARENT [--parent-addr CIDR]... IP...
#   New namespace ROLE, veth to PARENT, addresses IP... (/32, /128), default routes via
#   PARENT. If PARENT is not the node, the node routes IP... via PARENT.
#   --parent-addr puts CIDR on the parent's side of the veth (used for the external link).
add_pod() {
    local role=$1 parent=$2; shift 2
    local pns=$NP_PREFIX-$parent cns=$NP_PREFIX-$role dev=v$role ip
    local -a paddrs=()
    while [[ ${1:-} == --parent-addr ]]; do paddrs+=("$2"); shift 2; done
    [[ -n ${NP_PARENT[$parent]+x} ]] || np_die "add_pod: unknown parent '$parent'"
    np_new_ns "$role"
    NP_PARENT[$role]=$parent
    NP_IPS[$role]="$*"
    np_router "$parent"
    ip -n "$pns" link add "$dev" type veth peer name eth0 netns "$cns"
    for ip in "${paddrs[@]}"; do np_addr "$pns" "$ip" "$dev"; done
    ip -n "$pns" addr add fe80::1/64 dev "$dev" nodad
    ip -n "$pns" link set "$dev" up
    ip -n "$cns" link set eth0 up
    for ip in "$@"; do np_addr "$cns" "$ip" eth0; done
    # default routes with an explicit source: the role's first address of each family
    local -a src4=() src6=()
    for ip in "$@"; do
        if [[ $ip == *:* ]]; then ((${#src6[@]})) || src6=(src "$ip")
        else ((${#src4[@]})) || src4=(src "$ip"); fi
    done
    ip -n "$cns" route add default via "$(role_ip "$parent" 4)" dev eth0 onlink "${src4[@]}"
    ip -n "$cns" -6 route add default via fe80::1 dev eth0 "${src6[@]}"
    local fam
    for ip in "$@"; do
        fam=4; [[ $ip == *:* ]] && fam=6
        ip -n "$pns" route add "$ip" dev "$dev" src "$(role_ip "$parent" $fam)"
        if [[ $parent != node ]]; then   # node -> remote pod via the remote node
            ip -n "$NP_PREFIX-node" route add "$ip" via "$(role_ip "$parent" $fam)" \
                src "$(role_ip node $fam)"
        fi
    done
}

np_setup() {
    [[ $(id -u) == 0 ]] || np_die "must run as root (creates network namespaces)"
    local t
    for t in ip nft conntrack "$NP_PYTHON"; do
        command -v "$t" >/dev/null || np_die "missing tool: $t"
    done
    NP_RUN=$(mktemp -d "${TMPDIR:-/tmp}/nftproxy-e2e.XXXXXX")
    trap np_cleanup EXIT
    trap 'np_cleanup; exit 130' INT
    trap 'np_cleanup; exit 143' TERM
    np_new_ns node
    np_detect_sctp
    NP_IPS[node]="$NODE_IP4 $NODE_IP6 $NODE_EXTRA_IPS"
    # the external link is the node's first device: masquerade picks NODE_IP4/NODE_IP6
    # shellcheck disable=SC2086
    add_pod ext node --parent-addr "$NODE_IP4/24" --parent-addr "$NODE_IP6/64" $EXT_IPS
    local ip
    # extra IPv6 node addresses are deprecated (preferred_lft 0): reachable, but never
    # chosen as a source address, so masquerade/host traffic always shows NODE_IP6
    for ip in $NODE_EXTRA_IPS; do
        if [[ $ip == *:* ]]; then
            np_addr "$NP_PREFIX-node" "$ip" vext preferred_lft 0
        else
            np_addr "$NP_PREFIX-node" "$ip" vext
        fi
    done
    # ext is also the node's upstream router (default routes), so host-originated traffic
    # to a service IP is routable before the nat output hook rewrites it; ext does not
    # forward, so anything left unmatched is silently dropped there (TIMEOUT)
    np_addr "$NP_PREFIX-ext" "$NODE_GW4" eth0
    np_addr "$NP_PREFIX-ext" fe80::2/64 eth0
    ip -n "$NP_PREFIX-node" route add default via "$NODE_GW4" dev vext
    ip -n "$NP_PREFIX-node" -6 route add default via fe80::2 dev vext
    add_pod rnode node "$RNODE_IP4" "$RNODE_IP6"
}

np_cleanup() {
    set +e
    trap - EXIT INT TERM
    local ns i
    local -a pids
    # our processes are exactly those inside our namespaces (echo servers, probes, ...):
    # TERM them, KILL after ~1 s
    for i in $(seq 60); do
        pids=()
        for ns in "${NP_NAMESPACES[@]}"; do pids+=($(ip netns pids "$ns" 2>/dev/null)); done
        ((${#pids[@]})) || break
        if ((i == 1)); then kill "${pids[@]}"; elif ((i == 50)); then kill -9 "${pids[@]}"; fi
        sleep 0.02
    done 2>/dev/null
    for ((i = ${#NP_NAMESPACES[@]} - 1; i >= 0; i--)); do
        ip netns del "${NP_NAMESPACES[i]}" 2>/dev/null
    done
    NP_NAMESPACES=()
    # belt and braces: anything else with this run's prefix
    for ns in $(ip netns list 2>/dev/null | awk -v p="$NP_PREFIX-" 'index($1, p) == 1 {print $1}'); do
        ip netns del "$ns" 2>/dev/null
    done
    if [[ -n $NP_RUN && -d $NP_RUN && -z ${NP_KEEP_RUN:-} ]]; then rm -rf "$NP_RUN"; fi
    set -e
}

flush_conntrack() {
    local r
    for r in node rnode; do
        [[ -n ${NP_PARENT[$r]+x} ]] && nsexec "$r" conntrack -F >/dev/null 2>&1 || true
    done
}

# apply_rules FILE|-: load an nft script into the node namespace. Conntrack is flushed
# afterwards (stale UDP entries would bypass the new rules) unless NP_KEEP_CONNTRACK=1.
# Returns nft's status even where errexit is off (e.g. `apply_rules F || ...`).
apply_rules() {
    nsexec node nft -f "$1" || return
    [[ -n ${NP_KEEP_CONNTRACK:-} ]] || flush_conntrack
}

clear_rules() {
    nsexec node nft flush ruleset
    flush_conntrack
}

# start_echo ROLE NAME PORTSPEC... [--addr IP]...: background echo server; returns once
# it listens (pid file written after bind), fails after ~5 s.
start_echo() {
    local role=$1 name=$2; shift 2
    local pidfile=$NP_RUN/$role.$name.pid i
    [[ ! -e $pidfile ]] || np_die "start_echo: $name already runs in $role"
    nsexec "$role" "$NP_PYTHON" "$NP_SCRIPTS/echo-server.py" "$name" "$@" \
        --pidfile "$pidfile" >>"$NP_RUN/$role.$name.log" 2>&1 </dev/null &
    local bgpid=$!
    for i in $(seq 250); do
        [[ -e $pidfile ]] && return 0
        kill -0 "$bgpid" 2>/dev/null || break
        sleep 0.02
    done
    cat "$NP_RUN/$role.$name.log" >&2
    np_die "start_echo: $name in $role did not start"
}

stop_echo() {
    local pidfile=$NP_RUN/$1.$2.pid pid
    [[ -e $pidfile ]] || return 0
    pid=$(<"$pidfile")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null && sleep 0.01 || break; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$pidfile"
}

start_sentinel() { start_echo node sentinel "$@"; }
