# shellcheck shell=bash
# Run probes from a role's namespace and assert on what happened. Source after netns.sh.
#
#   flow ROLE PROTO DST PORT COUNT [probe args: --src IP --timeout S --serial]
#       runs scripts/probe.py in ROLE and sets (in the calling shell, so don't use $(flow)):
#         FLOW_RAW       probe output, one line per attempt
#         FLOW_N         attempts;   FLOW_ANSWERED FLOW_REFUSED FLOW_TIMEDOUT FLOW_ERRORS
#         FLOW_NAMES     answering names in attempt order ("ep1 ep2 ep1 ...")
#         FLOW_SET       distinct answering names, sorted, comma-separated
#         FLOW_SRCS      distinct source addresses the servers saw, sorted, comma-separated
#         FLOW_SEEN      summary, e.g. "ep1:31,ep2:29@10.0.0.2" or "REFUSED:3" or
#                        "ep1:2@10.0.0.2+TIMEOUT:1"
#   assert_flow NAME EXPECTED        judge the last flow; EXPECTED is one of
#         REFUSED | TIMEOUT | ERROR  every attempt ended so
#         N1,N2[@S1,S2]              every attempt answered, the set of answering names is
#                                    exactly {N1,N2} (N = '*': any), and if given the set
#                                    of seen sources is exactly {S1,S2}
#   check_flow NAME ROLE PROTO DST PORT COUNT EXPECTED [probe args]   flow + assert_flow;
#         an sctp flow without kernel SCTP prints "SKIP NAME: ..." instead
#   assert_eq NAME EXPECTED ACTUAL   free-form check, same output format
#   skip NAME REASON                 visible skip
#   finish_report                    prints "N passed, M failed"; non-zero if M > 0
# Each assertion prints exactly one line: "PASS|FAIL NAME: flows=N expected=E seen=S".

NP_PASSED=0
NP_FAILED=0
NP_SKIPPED=0
NP_PROBE_TIMEOUT=${NP_PROBE_TIMEOUT:-1.0}
FLOW_RAW="" FLOW_N=0 FLOW_ANSWERED=0 FLOW_REFUSED=0 FLOW_TIMEDOUT=0 FLOW_ERRORS=0
FLOW_NAMES="" FLOW_SET="" FLOW_SRCS="" FLOW_SEEN=""

np_join() { sort -u | paste -sd, -; }   # stdin lines -> "a,b,c"

flow() {
    (($# >= 5)) || np_die "usage: flow ROLE PROTO DST PORT COUNT [probe args]"
    local role=$1 proto=$2 dst=$3 port=$4 count=$5; shift 5
    FLOW_RAW=$(nsexec "$role" "$NP_PYTHON" "$NP_SCRIPTS/probe.py" "$proto" "$dst" "$port" \
        --count "$count" --timeout "$NP_PROBE_TIMEOUT" "$@") || FLOW_RAW+=$'\nERROR probe-failed'
    FLOW_N=0 FLOW_ANSWERED=0 FLOW_REFUSED=0 FLOW_TIMEDOUT=0 FLOW_ERRORS=0 FLOW_NAMES=""
    local -A names=() errs=()
    local kind a b srcs=""
    while read -r kind a b; do
        [[ -n $kind ]] || continue
        ((++FLOW_N))
        case $kind in
            ANSWER)
                ((++FLOW_ANSWERED))
                FLOW_NAMES+="${FLOW_NAMES:+ }$a"
                names[$a]=$((${names[$a]:-0} + 1))
                srcs+="$b"$'\n' ;;
            REFUSED) ((++FLOW_REFUSED)) ;;
            TIMEOUT) ((++FLOW_TIMEDOUT)) ;;
            *)
                ((++FLOW_ERRORS))
                errs[${a:-$kind}]=$((${errs[${a:-$kind}]:-0} + 1)) ;;
        esac
    done <<<"$FLOW_RAW"
    FLOW_SET=$(printf '%s\n' "${!names[@]}" | sed '/^$/d' | np_join)
    FLOW_SRCS=$(printf '%s' "$srcs" | np_join)
    local -a parts=()
    if ((FLOW_ANSWERED)); then
        parts+=("$(for a in "${!names[@]}"; do echo "$a:${names[$a]}"; done | np_join)@$FLOW_SRCS")
    fi
    ((FLOW_REFUSED)) && parts+=("REFUSED:$FLOW_REFUSED")
    ((FLOW_TIMEDOUT)) && parts+=("TIMEOUT:$FLOW_TIMEDOUT")
    for a in "${!errs[@]}"; do parts+=("$a:${errs[$a]}"); done
    FLOW_SEEN=$(IFS=+; echo "${parts[*]:-NONE}")
}

np_verdict() {   # np_verdict OK NAME EXPECTED SEEN
    if [[ $1 == 1 ]]; then
        ((++NP_PASSED)); echo "PASS $2: flows=$FLOW_N expected=$3 seen=$4"
    else
        ((++NP_FAILED)); echo "FAIL $2: flows=$FLOW_N expected=$3 seen=$4"
    fi
}

assert_flow() {
    local name=$1 exp=$2 ok=0 want_names want_srcs
    case $exp in
        REFUSED) ((FLOW_N > 0 && FLOW_REFUSED == FLOW_N)) && ok=1 ;;
        TIMEOUT) ((FLOW_N > 0 && FLOW_TIMEDOUT == FLOW_N)) && ok=1 ;;
        ERROR)   ((FLOW_N > 0 && FLOW_ERRORS == FLOW_N)) && ok=1 ;;
        *)
            want_names=${exp%%@*}
            want_srcs=""; [[ $exp == *@* ]] && want_srcs=${exp#*@}
            if ((FLOW_N > 0 && FLOW_ANSWERED == FLOW_N)) &&
                [[ $want_names == '*' || $FLOW_SET == "$(tr , '\n' <<<"$want_names" | np_join)" ]] &&
                [[ -z $want_srcs || $FLOW_SRCS == "$(tr , '\n' <<<"$want_srcs" | np_join)" ]]; then
                ok=1
            fi ;;
    esac
    np_verdict "$ok" "$name" "$exp" "$FLOW_SEEN"
}

check_flow() {
    (($# >= 7)) || np_die "usage: check_flow NAME ROLE PROTO DST PORT COUNT EXPECTED [probe args]"
    local name=$1 role=$2 proto=$3 dst=$4 port=$5 count=$6 exp=$7; shift 7
    if [[ $proto == sctp && $NP_HAVE_SCTP != 1 ]]; then
        skip "$name" "sctp not supported by this kernel"
        return 0
    fi
    flow "$role" "$proto" "$dst" "$port" "$count" "$@"
    assert_flow "$name" "$exp"
    # Optional cross-check hook (scripts/e2e: the tracer against the real packets).
    if [[ -n ${NP_AFTER_FLOW:-} ]]; then "$NP_AFTER_FLOW" "$name" "$role" "$proto" "$dst" "$port" "$@"; fi
}

assert_eq() {
    local ok=0
    [[ $2 == "$3" ]] && ok=1
    np_verdict "$ok" "$1" "$2" "$3"
}

skip() { ((++NP_SKIPPED)); echo "SKIP $1: $2"; }

finish_report() {
    ((NP_SKIPPED == 0)) || echo "$NP_SKIPPED skipped"
    echo "$NP_PASSED passed, $NP_FAILED failed"
    ((NP_FAILED == 0))
}
