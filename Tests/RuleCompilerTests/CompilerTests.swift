import NftIR
import NftText
@testable import RuleCompiler
import ServiceModel
import Testing

private let config = NodeConfig(
    nodeName: "node-a", nodeIPs: [IPAddress("192.168.50.2")!], clusterCIDRs: [CIDR("10.244.0.0/16")!],
    serviceCIDRs: [CIDR("10.96.0.0/16")!]
)

private func ip(_ text: String) -> IPAddress { IPAddress(text)! }

private func service(_ name: String, clusterIP: String, type: ServiceType = .clusterIP, nodePort: UInt16 = 0) -> Service {
    Service(namespace: "ns", name: name, type: type, clusterIPs: [ip(clusterIP)],
            ports: [ServicePort(name: "http", protocol: .tcp, port: 80, targetPort: .number(8080), nodePort: nodePort)])
}

private func slice(_ service: String, _ endpoints: [Endpoint]) -> EndpointSlice {
    EndpointSlice(namespace: "ns", name: "\(service)-x", serviceName: service, addressType: .ipv4,
                  endpoints: endpoints, ports: [EndpointPort(name: "http", protocol: .tcp, port: 8080)])
}

private func backend(_ address: String, node: String? = nil, ready: Bool = true, serving: Bool = true, terminating: Bool = false,
                     zones: [String]? = nil, nodes: [String]? = nil) -> Backend {
    Backend(address: ip(address), port: 8080, conditions: EndpointConditions(ready: ready, serving: serving, terminating: terminating),
            nodeName: node, hintZones: zones, hintNodes: nodes)
}

private func rules(_ compilation: Compilation, chain: String) -> [String] {
    guard let chain = compilation.ruleset.chain(.ip, Name(chain)!) else { return [] }
    return chain.rules.map { NftText.rule($0, family: .ip) }
}

@Suite struct RoundRobinTests {
    @Test func eachBackendGetsOneRuleInAddressOrder() {
        let state = ClusterState(
            services: [service("web", clusterIP: "10.96.0.10")],
            endpointSlices: [slice("web", [Endpoint(addresses: [ip("10.244.2.9")]), Endpoint(addresses: [ip("10.244.1.7")]),
                                           Endpoint(addresses: [ip("10.244.10.1")])])]
        )
        #expect(rules(RuleCompiler.compile(state, config: config), chain: "service-ns/web/tcp/http") == [
            "ip daddr 10.96.0.10 ip saddr != 10.244.0.0/16 meta mark set meta mark | 0x00004000",
            "numgen inc mod 3 0 meta l4proto tcp dnat to 10.244.1.7:8080",
            "numgen inc mod 2 0 meta l4proto tcp dnat to 10.244.2.9:8080",
            "meta l4proto tcp dnat to 10.244.10.1:8080",
        ])
    }

    /// Walks the compiled chain as the kernel does (each `numgen inc` keeps its own counter,
    /// counting the packets that reach its rule) and checks the backends come in turn.
    @Test(arguments: 1...7)
    func compiledCascadeServesBackendsInTurn(_ count: Int) {
        let endpoints = (0..<count).map { Endpoint(addresses: [ip("10.244.1.\($0 + 1)")]) }
        let state = ClusterState(services: [service("web", clusterIP: "10.96.0.10")], endpointSlices: [slice("web", endpoints)])
        let chain = RuleCompiler.compile(state, config: config).ruleset.chain(.ip, Name("service-ns/web/tcp/http")!)!
        var counters = [UInt32](repeating: 0, count: chain.rules.count)
        var served: [IPAddress] = []
        for _ in 0..<(count * 4) {
            for (index, rule) in chain.rules.enumerated() {
                var matched = true
                for statement in rule.statements {
                    if case .numgenIncZero(let modulus) = statement {
                        matched = counters[index] % modulus == 0
                        counters[index] += 1
                    }
                    if !matched { break }
                    if case .dnat(let address, _) = statement { served.append(address) }
                }
                if matched && rule.statements.contains(where: { if case .dnat = $0 { true } else { false } }) { break }
            }
        }
        let turn = endpoints.map { $0.addresses[0] }
        #expect(served == Array(repeating: turn, count: 4).flatMap { $0 })
    }
}

@Suite struct EndpointSelectionTests {
    @Test func readyEndpointsWinOverTerminatingOnes() {
        let lists = EndpointLists([backend("10.0.0.1", ready: false, terminating: true), backend("10.0.0.2")], nodeName: "node-a", zone: nil)
        #expect(lists.cluster.map(\.address) == [ip("10.0.0.2")])
    }

    @Test func servingTerminatingEndpointsAreTheFallback() {
        let lists = EndpointLists([backend("10.0.0.1", ready: false, terminating: true),
                                   backend("10.0.0.2", ready: false, serving: false, terminating: true)], nodeName: "node-a", zone: nil)
        #expect(lists.cluster.map(\.address) == [ip("10.0.0.1")])
        #expect(lists.hasAny)
    }

    @Test func localListFallsBackSeparately() {
        let lists = EndpointLists([backend("10.0.0.1", node: "node-a", ready: false, terminating: true),
                                   backend("10.0.0.2", node: "node-b")], nodeName: "node-a", zone: nil)
        #expect(lists.cluster.map(\.address) == [ip("10.0.0.2")])
        #expect(lists.local.map(\.address) == [ip("10.0.0.1")])
    }

    @Test func zoneHintsApplyOnlyWhenEveryReadyEndpointHasOne() {
        let hinted = [backend("10.0.0.1", zones: ["a"]), backend("10.0.0.2", zones: ["b"])]
        #expect(EndpointLists(hinted, nodeName: "n", zone: "a").cluster.map(\.address) == [ip("10.0.0.1")])
        let partly = [backend("10.0.0.1", zones: ["a"]), backend("10.0.0.2")]
        #expect(EndpointLists(partly, nodeName: "n", zone: "a").cluster.count == 2)
        #expect(EndpointLists(hinted, nodeName: "n", zone: "c").cluster.count == 2, "no hint for this zone: all endpoints")
    }

    @Test func nodeHintsComeBeforeZoneHints() {
        let hinted = [backend("10.0.0.1", zones: ["a"], nodes: ["n1"]), backend("10.0.0.2", zones: ["a"], nodes: ["n2"])]
        #expect(EndpointLists(hinted, nodeName: "n2", zone: "a").cluster.map(\.address) == [ip("10.0.0.2")])
    }
}

@Suite struct LayoutTests {
    /// The number of sets and maps is fixed by the layout and the shard count, never by the
    /// cluster's size.
    @Test func setCountIsIndependentOfServiceCount() {
        var config = config
        config.tableShards = 4
        func setCount(_ services: Int) -> Int {
            var state = ClusterState()
            for index in 0..<services {
                let name = "s\(index)"
                state.services.append(service(name, clusterIP: "10.96.\(index / 250).\(index % 250 + 1)", type: .nodePort, nodePort: UInt16(30000 + index)))
                state.endpointSlices.append(slice(name, (0..<3).map { Endpoint(addresses: [ip("10.244.\(index / 80).\(index % 80 * 3 + $0)")]) }))
            }
            let ruleset = RuleCompiler.compile(state, config: config).ruleset
            #expect(ruleset.tables.reduce(0) { $0 + $1.chains.count } > services, "each service port has its own chains")
            return ruleset.tables.reduce(0) { $0 + $1.sets.count }
        }
        #expect(setCount(50) == setCount(1_000))
    }

    @Test func aDestinationClaimedTwiceGoesToTheFirstServiceAndIsReported() {
        var first = service("a", clusterIP: "10.96.0.1")
        first.externalIPs = [ip("192.168.50.100")]
        var second = service("b", clusterIP: "10.96.0.2")
        second.externalIPs = [ip("192.168.50.100")]
        let state = ClusterState(services: [first, second],
                                 endpointSlices: [slice("a", [Endpoint(addresses: [ip("10.244.1.1")])]), slice("b", [Endpoint(addresses: [ip("10.244.1.2")])])])
        let compilation = RuleCompiler.compile(state, config: config)
        let external = compilation.ruleset.elements(.ip, Naming.serviceIPs).filter { $0.key.first == .address(ip("192.168.50.100")) }
        #expect(external.map(\.verdict) == [.goto(Name("external-ns/a/tcp/http")!)])
        #expect(compilation.problems.contains { $0.object?.name == "b" && $0.message.contains("already used by ns/a:http") })
    }

    @Test func healthCheckCountsLocalReadyEndpointIPs() {
        var svc = service("lb", clusterIP: "10.96.0.5", type: .loadBalancer, nodePort: 30005)
        svc.externalTrafficPolicy = .local
        svc.healthCheckNodePort = 32000
        let state = ClusterState(services: [svc], endpointSlices: [slice("lb", [
            Endpoint(addresses: [ip("10.244.1.1")], nodeName: "node-a"),
            Endpoint(addresses: [ip("10.244.1.2")], conditions: EndpointConditions(ready: false, serving: true, terminating: true), nodeName: "node-a"),
            Endpoint(addresses: [ip("10.244.2.1")], nodeName: "node-b"),
        ])])
        let checks = RuleCompiler.compile(state, config: config).healthChecks
        #expect(checks == [HealthCheck(service: svc.ref, nodePort: 32000, localEndpoints: 1)])
    }
}

@Suite struct SourceRangeTests {
    /// Overlapping ranges would make the kernel refuse the whole batch (EEXIST in an interval set).
    @Test func containedRangesAreDropped() {
        let ranges = ["10.0.0.0/8", "10.1.0.0/16", "10.1.2.3/32", "192.168.0.0/24", "10.0.0.0/8"].map { CIDR($0)! }
        #expect(FragmentBuilder.outermost(ranges).map(\.description) == ["10.0.0.0/8", "192.168.0.0/24"])
    }

    @Test func anLBIPInsideAnAllowedRangeIsNotAddedTwice() {
        var svc = service("lb", clusterIP: "10.96.0.7", type: .loadBalancer, nodePort: 30007)
        svc.loadBalancerIngress = [LoadBalancerIngress(ip: ip("192.168.50.200"))]
        svc.loadBalancerSourceRanges = [CIDR("192.168.50.0/24")!, CIDR("192.168.50.128/25")!]
        let state = ClusterState(services: [svc], endpointSlices: [slice("lb", [Endpoint(addresses: [ip("10.244.1.1")])])])
        let allow = RuleCompiler.compile(state, config: config).ruleset.elements(.ip, Naming.firewallAllow)
        #expect(allow.map { $0.key.last } == [.prefix(CIDR("192.168.50.0/24")!)])
    }
}

@Suite struct NoLocalEndpointsTests {
    /// kube-proxy's sync_proxy_rules_no_local_endpoints_total: Local policy, endpoints elsewhere, none here.
    @Test func countsLocalPoliciesWithoutLocalEndpoints() {
        var internalOnly = service("i", clusterIP: "10.96.0.11")
        internalOnly.internalTrafficPolicy = .local
        var external = service("e", clusterIP: "10.96.0.12", type: .nodePort, nodePort: 30012)
        external.externalTrafficPolicy = .local
        var served = service("s", clusterIP: "10.96.0.13", type: .nodePort, nodePort: 30013)
        served.externalTrafficPolicy = .local
        var empty = service("z", clusterIP: "10.96.0.14")
        empty.internalTrafficPolicy = .local
        let state = ClusterState(services: [internalOnly, external, served, empty], endpointSlices: [
            slice("i", [Endpoint(addresses: [ip("10.244.2.1")], nodeName: "node-b")]),
            slice("e", [Endpoint(addresses: [ip("10.244.2.2")], nodeName: "node-b")]),
            slice("s", [Endpoint(addresses: [ip("10.244.1.3")], nodeName: "node-a")]),
        ])
        let counts = RuleCompiler.compile(state, config: config).noLocalEndpoints
        #expect(counts.internal == 1)
        #expect(counts.external == 1)
    }
}
