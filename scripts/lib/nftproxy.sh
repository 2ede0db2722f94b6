# shellcheck shell=bash
# Program the node namespace with nftproxy's rules. Source after netns.sh.
#
#   program_state ARGS...
#       ARGS are exactly the arguments of `nftproxy render` / `nftproxy apply`:
#       [--config FILE] [flags] STATE...
#       The ONE place that decides how rules reach the node namespace:
#         NFTPROXY_PROGRAM_WITH=apply (default): `nftproxy apply ARGS` run inside the node
#             namespace (one netlink batch), then the same conntrack flush as apply_rules.
#         NFTPROXY_PROGRAM_WITH=render: `nftproxy render ARGS` on the host (no root
#             needed), optionally piped through $NFTPROXY_FILTER, then apply_rules (nft -f into
#             the node namespace + conntrack flush). The loaded script is kept in
#             $NFTPROXY_OUT (default $NP_RUN/program-state.nft), render's stderr next to it
#             in $NFTPROXY_OUT.notes.
#       Returns non-zero (with the reason on stderr) if any step fails; it never exits, so
#       callers can turn a failure into a FAIL line: `program_state ... || ...`.
#   NFTPROXY_BIN     the nftproxy binary (default: .build/debug/nftproxy of this checkout)
#   NFTPROXY_FILTER  test-only fault injection, render path only: a command (or shell
#                    function) run as a filter, rendered script on stdin, script to load on
#                    stdout; non-zero status = failure. Refused with NFTPROXY_PROGRAM_WITH=apply.

NFTPROXY_BIN=${NFTPROXY_BIN:-$(dirname "$NP_SCRIPTS")/.build/debug/nftproxy}
NFTPROXY_PROGRAM_WITH=${NFTPROXY_PROGRAM_WITH:-apply}
NFTPROXY_FILTER=${NFTPROXY_FILTER:-}

program_state() {
    (($# > 0)) || { echo "program_state: usage: program_state [--config F] [flags] STATE..." >&2; return 2; }
    local out=${NFTPROXY_OUT:-$NP_RUN/program-state.nft}
    case $NFTPROXY_PROGRAM_WITH in
        render)
            if ! "$NFTPROXY_BIN" render "$@" >"$out.raw" 2>"$out.notes"; then
                echo "program_state: nftproxy render failed:" >&2
                sed 's/^/    /' "$out.notes" >&2
                return 1
            fi
            if [[ -n $NFTPROXY_FILTER ]]; then
                if ! $NFTPROXY_FILTER <"$out.raw" >"$out"; then
                    echo "program_state: filter '$NFTPROXY_FILTER' failed" >&2
                    return 1
                fi
            else
                mv "$out.raw" "$out"
            fi
            if ! apply_rules "$out"; then
                echo "program_state: nft -f $out failed in the node namespace" >&2
                return 1
            fi
            ;;
        apply)
            if [[ -n $NFTPROXY_FILTER ]]; then
                echo "program_state: NFTPROXY_FILTER works only with NFTPROXY_PROGRAM_WITH=render" >&2
                return 1
            fi
            if ! nsexec node "$NFTPROXY_BIN" apply "$@"; then
                echo "program_state: nftproxy apply failed in the node namespace" >&2
                return 1
            fi
            [[ -n ${NP_KEEP_CONNTRACK:-} ]] || flush_conntrack
            ;;
        *)
            echo "program_state: NFTPROXY_PROGRAM_WITH must be render or apply" >&2
            return 2 ;;
    esac
}
