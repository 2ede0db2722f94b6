import ArgumentParser
import Foundation
import NftExplain
import NftIR
import NftNetlink
import RuleCompiler
import ServiceModel

struct Explain: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show where one new connection goes, rule by rule (no root needed).",
        discussion: """
            Walks the rules STATE produces for one new connection: each hook and chain it meets, the \
            map element that dispatched it and its service port, the backends it can go to and the one \
            the next connection gets, whether it is masqueraded and why, or the rule that drops or \
            rejects it. The origin is guessed from --src (a node IP: the node; inside the cluster CIDR: \
            a pod; otherwise outside) unless given.
            Example: nftproxy explain --src 10.244.1.9 --dst 10.96.0.10:53/udp --config examples/config.yaml examples/cluster.yaml
            """
    )

    @OptionGroup var node: NodeOptions

    @Option(help: ArgumentHelp("The client's address.", valueName: "ip"))
    var src: String

    @Option(help: ArgumentHelp("Destination as IP:PORT, [IPv6]:PORT, optionally /tcp, /udp or /sctp (default tcp).", valueName: "ip:port[/proto]"))
    var dst: String

    @Flag(help: "Where the connection starts (default: guessed from --src).")
    var origin: OriginFlag?

    @Option(help: ArgumentHelp("text or json.", valueName: "format"))
    var output: OutputFormat = .text

    @Flag(help: "Trace through the rules in this network namespace's kernel instead of STATE's (root). Node IPs come from --node-ip or STATE.")
    var kernel = false

    @Argument(help: ArgumentHelp("State files or folders (optional with --kernel).", valueName: "state"))
    var state: [String] = []

    enum OriginFlag: String, EnumerableFlag {
        case fromPod, fromNode, external
    }

    enum OutputFormat: String, ExpressibleByArgument {
        case text, json
    }

    func validate() throws {
        if state.isEmpty && !kernel { throw ValidationError("give at least one STATE file or folder, or --kernel") }
        guard IPAddress(src) != nil else { throw ValidationError("--src: \"\(src)\" is not an IP address") }
        _ = try Explain.parseDestination(dst)
    }

    func run() throws {
        let config = try node.nodeConfig()
        let facts = NodeFacts(config: config, state: state.isEmpty ? ClusterState() : try StateLoader.load(state))
        let ruleset = kernel
            ? try withKernel("explain --kernel") { () throws(BackendError) in try NetlinkBackend().readOurs() }
            : try compileState(state, options: node).ruleset
        let nodeIPs = facts.nodeIPs.values.flatMap { $0 }
        let source = IPAddress(src)!
        let (destination, port, proto) = try Explain.parseDestination(dst)
        let start: Origin
        switch origin {
        case .fromPod?: start = .pod
        case .fromNode?: start = .node
        case .external?: start = .external
        case nil:
            if nodeIPs.contains(source) { start = .node }
            else if facts.clusterCIDR.values.contains(where: { $0.contains(source) }) { start = .pod }
            else { start = .external }
        }
        let tracer = Tracer(ruleset: ruleset, context: TraceContext(nodeIPs: nodeIPs))
        let trace = tracer.trace(Connection(source: source, destination: destination, port: port, protocol: proto, origin: start))
        switch output {
        case .text: print(trace.text, terminator: "")
        case .json: print(try trace.jsonText())
        }
    }

    static func parseDestination(_ text: String) throws -> (IPAddress, UInt16, L4Protocol) {
        var rest = Substring(text)
        var proto = L4Protocol.tcp
        if let slash = rest.lastIndex(of: "/") {
            guard let parsed = L4Protocol(rawValue: rest[rest.index(after: slash)...].uppercased()) else {
                throw ValidationError("--dst: protocol must be tcp, udp or sctp in \"\(text)\"")
            }
            proto = parsed
            rest = rest[..<slash]
        }
        guard let colon = rest.lastIndex(of: ":"), let port = UInt16(rest[rest.index(after: colon)...]), port != 0 else {
            throw ValidationError("--dst: expected IP:PORT (e.g. 10.96.0.10:80 or [fd00::1]:80), got \"\(text)\"")
        }
        var host = rest[..<colon]
        if host.hasPrefix("[") && host.hasSuffix("]") { host = host.dropFirst().dropLast() }
        guard let address = IPAddress(String(host)) else {
            throw ValidationError("--dst: \"\(host)\" is not an IP address")
        }
        return (address, port, proto)
    }
}

extension Trace {
    /// The trace as JSON, for scripts.
    func jsonText() throws -> String {
        var result: [String: Any] = [
            "source": connection.source.description,
            "destination": connection.destination.description,
            "port": Int(connection.port),
            "protocol": connection.protocol.description,
            "origin": connection.origin.rawValue,
            "masqueraded": masqueraded,
            "masqueradeReason": masqueradeReason,
            "steps": steps.map { step -> [String: Any] in
                var entry: [String: Any] = ["hook": step.hook, "table": step.table, "chain": step.chain, "note": step.note]
                if let rule = step.rule { entry["rule"] = rule }
                return entry
            },
        ]
        if let servicePort { result["servicePort"] = servicePort }
        switch outcome {
        case .dnat(let backends, let next):
            result["verdict"] = "dnat"
            result["next"] = next.description
            result["backends"] = backends.map(\.description)
        case .reject: result["verdict"] = "reject"
        case .drop: result["verdict"] = "drop"
        case .untouched: result["verdict"] = "untouched"
        }
        let data = try JSONSerialization.data(withJSONObject: result, options: [.prettyPrinted, .sortedKeys])
        return String(decoding: data, as: UTF8.self)
    }
}
