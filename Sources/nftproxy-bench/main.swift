import Foundation
import NftIR

// nftproxy-bench: the in-process half of `scripts/bench` (which is the one command to run).
// It prints figures as `key=value` lines; it asserts nothing about time.

let usage = """
    usage: nftproxy-bench gen --services N --endpoints M --out FILE        state file (kind: List JSON)
           nftproxy-bench kube-proxy --services N --endpoints M --out FILE kube-proxy's layout as nft commands
           nftproxy-bench breakdown --netns PATH STATE                      one full apply, timed by phase
           nftproxy-bench readback --netns PATH [--out FILE] FAMILY/TABLE...
                                                                          read tables back through netlink (--out: as nft text)
           nftproxy-bench incremental --netns PATH --changes K [--seed-chunk S] STATE
                                                                          P2: agent loop, one endpoint per change
           nftproxy-bench render [--runs R] STATE                           decode, compile, then R renders, timed apart
           nftproxy-bench memory STATE                                      resident memory after decode, compile and diff
           nftproxy-bench sha256-selftest                                   kube-proxy's name hash on its test vectors
    """

struct Arguments {
    var options: [String: String] = [:]
    var positional: [String] = []

    init(_ arguments: ArraySlice<String>) throws {
        var rest = arguments
        while let first = rest.popFirst() {
            if first.hasPrefix("--") {
                guard let value = rest.popFirst() else { throw BenchError("\(first) needs a value") }
                options[String(first.dropFirst(2))] = value
            } else {
                positional.append(first)
            }
        }
    }

    func string(_ name: String) throws -> String {
        guard let value = options[name] else { throw BenchError("missing --\(name)") }
        return value
    }

    func int(_ name: String) throws -> Int {
        guard let value = Int(try string(name)) else { throw BenchError("--\(name) must be a number") }
        return value
    }
}

func main() async throws {
    let argv = CommandLine.arguments
    guard argv.count >= 2 else { throw BenchError(usage) }
    let args = try Arguments(argv.dropFirst(2))
    switch argv[1] {
    case "gen":
        try ScaleSpec(services: try args.int("services"), endpoints: try args.int("endpoints")).writeState(to: try args.string("out"))
    case "kube-proxy":
        try KubeProxyLayout.write(ScaleSpec(services: try args.int("services"), endpoints: try args.int("endpoints")), to: try args.string("out"))
    case "breakdown":
        guard let state = args.positional.first else { throw BenchError(usage) }
        try breakdown(statePath: state, netns: try args.string("netns"))
    case "readback":
        let tables = try args.positional.map { text -> TableRef in
            let parts = text.split(separator: "/")
            guard parts.count == 2, let family = Family(rawValue: String(parts[0])), let name = Name(String(parts[1])) else {
                throw BenchError("a table is FAMILY/NAME, e.g. ip/nftproxy")
            }
            return TableRef(family, name)
        }
        try readback(netns: try args.string("netns"), tables: tables, out: args.options["out"])
    case "incremental":
        guard let state = args.positional.first else { throw BenchError(usage) }
        let chunk = args.options["seed-chunk"] == nil ? 0 : try args.int("seed-chunk")
        try await incremental(statePath: state, netns: try args.string("netns"), changes: try args.int("changes"), seedChunk: chunk)
    case "render":
        guard let state = args.positional.first else { throw BenchError(usage) }
        try render(statePath: state, runs: args.options["runs"] == nil ? 5 : try args.int("runs"))
    case "memory":
        guard let state = args.positional.first else { throw BenchError(usage) }
        try memory(statePath: state)
    case "sha256-selftest":
        let vectors = ["ns1/svc1/tcp/p80": "ULMVA6XW", "ns1/svc1/tcp/p80__10.180.0.1/80": "5OJB2KTY", "ns4/svc4/tcp/p80__10.180.0.5/80": "5RFCDDV7"]
        for (name, expected) in vectors.sorted(by: { $0.key < $1.key }) {
            let got = KubeProxyLayout.kubeHash(name)
            print("\(name) \(got) \(got == expected ? "ok" : "WRONG, want \(expected)")")
            if got != expected { exit(1) }
        }
    default:
        throw BenchError(usage)
    }
}

do {
    try await main()
} catch {
    FileHandle.standardError.write(Data("nftproxy-bench: \(error)\n".utf8))
    exit(2)
}
