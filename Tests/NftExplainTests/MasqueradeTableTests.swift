import Foundation
import NftExplain
import NftIR
import RuleCompiler
import ServiceModel
import Testing

/// kube-proxy's TestInternalExternalMasquerade (kube-proxy-nftables.md §3.2 item 17): three
/// LoadBalancer services — svc1 eTP=Cluster, svc2 eTP=Local, svc3 iTP=Local — each with one
/// endpoint on this node and one elsewhere; 27 flows (pod, node, external → ClusterIP,
/// NodePort, LB IP of each) under the four detector × masqueradeAll configurations. The
/// expected table below is transcribed from kube-proxy's test, not derived from our rules.
enum MasqueradeTable {
    static let nodeIP = IPAddress("192.168.50.2")!
    static let podIP = IPAddress("10.244.1.200")!
    static let externalIP = IPAddress("203.0.113.5")!

    enum Source: String, CaseIterable { case pod, node, external }
    enum Destination: String, CaseIterable { case clusterIP, nodePort, loadBalancer }

    struct Expected: Equatable, CustomStringConvertible {
        /// "both" = the local and the remote endpoint; "local" = only the one on this node.
        var endpoints: String
        var masqueraded: Bool
        var description: String { "\(endpoints), \(masqueraded ? "masq" : "no masq")" }
    }

    static func state(affinity: Bool = false) -> ClusterState {
        var state = ClusterState()
        for n in 1...3 {
            var service = Service(
                namespace: "ns\(n)", name: "svc\(n)", type: .loadBalancer, clusterIPs: [IPAddress("10.96.0.4\(n)")!],
                ports: [ServicePort(name: "p80", protocol: .tcp, port: 80, targetPort: .number(80), nodePort: UInt16(3000 + n))],
                loadBalancerIngress: [LoadBalancerIngress(ip: IPAddress("198.51.100.\(n)")!)]
            )
            if n == 2 { service.externalTrafficPolicy = .local; service.healthCheckNodePort = 30000 }
            if n == 3 { service.internalTrafficPolicy = .local }
            if affinity { service.sessionAffinity = .clientIP(timeoutSeconds: 10800) }
            state.services.append(service)
            state.endpointSlices.append(EndpointSlice(
                namespace: "ns\(n)", name: "svc\(n)-x", serviceName: "svc\(n)", addressType: .ipv4,
                endpoints: [
                    Endpoint(addresses: [IPAddress("10.244.1.\(n)")!], nodeName: "node-a"),
                    Endpoint(addresses: [IPAddress("10.244.2.\(n)")!], nodeName: "node-b"),
                ],
                ports: [EndpointPort(name: "p80", protocol: .tcp, port: 80)]
            ))
        }
        return state
    }

    static func config(detector: Bool, masqueradeAll: Bool) -> NodeConfig {
        NodeConfig(nodeName: "node-a", nodeIPs: [nodeIP], clusterCIDRs: detector ? [CIDR("10.244.0.0/16")!] : [],
                   masqueradeAll: masqueradeAll)
    }

    /// The table of §3.2 item 17 with its overrides.
    static func expected(_ source: Source, _ destination: Destination, service n: Int, detector: Bool, masqueradeAll: Bool) -> Expected {
        let both = "both", local = "local"
        switch (source, destination) {
        case (.pod, .clusterIP):
            return Expected(endpoints: n == 3 ? local : both, masqueraded: masqueradeAll)
        case (.pod, .nodePort), (.pod, .loadBalancer):
            if n == 2 { return detector ? Expected(endpoints: both, masqueraded: false) : Expected(endpoints: local, masqueraded: false) }
            return Expected(endpoints: both, masqueraded: true)
        case (.node, .clusterIP), (.external, .clusterIP):
            return Expected(endpoints: n == 3 ? local : both, masqueraded: detector || masqueradeAll)
        case (.node, _):
            return Expected(endpoints: both, masqueraded: true)
        case (.external, _):
            return n == 2 ? Expected(endpoints: local, masqueraded: false) : Expected(endpoints: both, masqueraded: true)
        }
    }

    static func connection(_ source: Source, _ destination: Destination, service n: Int) -> Connection {
        let from: IPAddress = switch source {
        case .pod: podIP
        case .node: nodeIP
        case .external: externalIP
        }
        let origin: Origin = switch source {
        case .pod: .pod
        case .node: .node
        case .external: .external
        }
        switch destination {
        case .clusterIP: return Connection(source: from, destination: IPAddress("10.96.0.4\(n)")!, port: 80, protocol: .tcp, origin: origin)
        case .nodePort: return Connection(source: from, destination: nodeIP, port: UInt16(3000 + n), protocol: .tcp, origin: origin)
        case .loadBalancer: return Connection(source: from, destination: IPAddress("198.51.100.\(n)")!, port: 80, protocol: .tcp, origin: origin)
        }
    }

    static func observed(_ trace: Trace, service n: Int) -> Expected {
        guard case .dnat(let backends, _) = trace.outcome else { return Expected(endpoints: "\(trace.outcome)", masqueraded: trace.masqueraded) }
        let addresses = Set(backends.map(\.address.description))
        let endpoints = addresses == ["10.244.1.\(n)", "10.244.2.\(n)"] ? "both" : addresses == ["10.244.1.\(n)"] ? "local" : addresses.sorted().joined(separator: ",")
        return Expected(endpoints: endpoints, masqueraded: trace.masqueraded)
    }
}

@Suite struct MasqueradeTableTests {
    static let configurations = [(true, false), (false, false), (true, true), (false, true)]

    /// With one table of services, and with the three services spread over shard tables (each
    /// with its own DNAT hooks, and the node table masquerading after them); and with ClientIP
    /// session affinity, whose chains record the client as they DNAT, for a client not yet seen.
    @Test(arguments: configurations, [(1, false), (8, false), (1, true), (8, true)])
    func tracerFollowsKubeProxysMasqueradeTable(configuration: (Bool, Bool), layout: (shards: Int, affinity: Bool)) {
        let (detector, masqueradeAll) = configuration
        let shards = layout.shards
        var config = MasqueradeTable.config(detector: detector, masqueradeAll: masqueradeAll)
        config.tableShards = shards
        let compilation = RuleCompiler.compile(MasqueradeTable.state(affinity: layout.affinity), config: config)
        if shards > 1 { #expect(compilation.ruleset.tables.count > 2, "the services sit in more than one shard") }
        let tracer = Tracer(ruleset: compilation.ruleset, context: TraceContext(nodeIPs: [MasqueradeTable.nodeIP]))
        var flows = 0
        for n in 1...3 {
            for source in MasqueradeTable.Source.allCases {
                for destination in MasqueradeTable.Destination.allCases {
                    let trace = tracer.trace(MasqueradeTable.connection(source, destination, service: n))
                    let want = MasqueradeTable.expected(source, destination, service: n, detector: detector, masqueradeAll: masqueradeAll)
                    #expect(MasqueradeTable.observed(trace, service: n) == want,
                            "svc\(n) \(source) → \(destination) (detector \(detector), masqueradeAll \(masqueradeAll))")
                    flows += 1
                }
            }
        }
        #expect(flows == 27)
    }

    /// Each step names the table its chain is in: with shards, the service's DNAT happens in a
    /// shard table and the masquerade in the node table.
    @Test func stepsNameTheirTables() throws {
        var config = MasqueradeTable.config(detector: true, masqueradeAll: false)
        config.tableShards = 8
        let compilation = RuleCompiler.compile(MasqueradeTable.state(), config: config)
        let tracer = Tracer(ruleset: compilation.ruleset, context: TraceContext(nodeIPs: [MasqueradeTable.nodeIP]))
        let trace = tracer.trace(MasqueradeTable.connection(.pod, .clusterIP, service: 2))
        let service = try #require(trace.steps.first { $0.chain.hasPrefix("service-") })
        let shard = try #require(compilation.ruleset.tables.first { $0.chain(Name(service.chain)!) != nil })
        #expect(service.table == shard.name.rawValue)
        #expect(service.table.hasPrefix("nftproxy-"))
        #expect(trace.steps.first { $0.chain == "masquerading" }?.table == "nftproxy")
        #expect(!trace.steps.contains { $0.chain == "-" && !$0.table.isEmpty })
        #expect(trace.text.contains("  prerouting  \(shard.name.rawValue) \(service.chain)\n"))
    }

    /// Golden explain text for the 27 flows of the base configuration: regenerate with
    /// `NFTPROXY_UPDATE_GOLDEN=1 swift test --filter MasqueradeTableTests` and review.
    @Test func explainTextIsStable() throws {
        let compilation = RuleCompiler.compile(MasqueradeTable.state(), config: MasqueradeTable.config(detector: true, masqueradeAll: false))
        let tracer = Tracer(ruleset: compilation.ruleset, context: TraceContext(nodeIPs: [MasqueradeTable.nodeIP]))
        var text = ""
        for n in 1...3 {
            for source in MasqueradeTable.Source.allCases {
                for destination in MasqueradeTable.Destination.allCases {
                    text += tracer.trace(MasqueradeTable.connection(source, destination, service: n)).text + "\n"
                }
            }
        }
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/masquerade-table.txt")
        if ProcessInfo.processInfo.environment["NFTPROXY_UPDATE_GOLDEN"] == "1" {
            try text.write(to: url, atomically: true, encoding: .utf8)
            return
        }
        let expected = try String(contentsOf: url, encoding: .utf8)
        #expect(text == expected)
    }
}
