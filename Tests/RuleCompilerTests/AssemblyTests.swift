import NftIR
import NftText
import RuleCompiler
import ServiceModel
import Testing

/// The agent's partial sync: replacing a few services' fragments must leave the kernel exactly
/// as a full compile of the new state would, across shard tables appearing and going, map keys
/// changing hands, services losing their endpoints, and deletions.
@Suite struct AssemblyTests {
    private static let config = NodeConfig(nodeName: "node-a", nodeIPs: [IPAddress("192.168.50.2")!],
                                           clusterCIDRs: [CIDR("10.244.0.0/16")!], tableShards: 4)

    /// A deterministic pseudo-random generator, so a failure can be replayed.
    private struct Generator: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return state
        }
    }

    private static func service(_ index: Int, variant: Int) -> Service {
        let kinds: [ServiceType] = [.clusterIP, .nodePort, .loadBalancer]
        var service = Service(
            namespace: "ns", name: "s\(index)", type: kinds[variant % 3], clusterIPs: [IPAddress("10.96.0.\(index + 1)")!],
            ports: [ServicePort(name: "http", protocol: variant % 4 == 3 ? .udp : .tcp, port: 80, targetPort: .number(8080),
                                nodePort: variant % 3 == 0 ? 0 : UInt16(30000 + index))])
        // Two services sharing one external IP: the earlier one in order holds it.
        if variant % 5 == 1 { service.externalIPs = [IPAddress("192.168.50.100")!] }
        if variant % 7 == 2 { service.sessionAffinity = .clientIP(timeoutSeconds: 60) }
        if variant % 3 == 2 { service.loadBalancerIngress = [LoadBalancerIngress(ip: IPAddress("198.51.100.\(index + 1)")!)] }
        return service
    }

    private static func slice(_ index: Int, endpoints: Int) -> EndpointSlice {
        EndpointSlice(namespace: "ns", name: "s\(index)-x", serviceName: "s\(index)", addressType: .ipv4,
                      endpoints: (0..<endpoints).map {
                          Endpoint(addresses: [IPAddress("10.244.\($0 % 2 + 1).\(index * 4 + $0 + 1)")!], nodeName: $0 % 2 == 0 ? "node-a" : "node-b")
                      },
                      ports: [EndpointPort(name: "http", protocol: .tcp, port: 8080)])
    }

    @Test(arguments: [1, 2, 3])
    func replacingFragmentsMatchesAFullCompile(seed: UInt64) throws {
        var random = Generator(state: seed)
        var services: [Int: Service] = [:]
        var slices: [Int: EndpointSlice] = [:]
        func state() -> ClusterState {
            ClusterState(services: services.keys.sorted().map { services[$0]! }, endpointSlices: slices.keys.sorted().map { slices[$0]! })
        }
        let first = RuleCompiler.compile(state(), config: Self.config)
        var assembly = try #require(first.assembly)
        let backend = InMemoryBackend()
        try backend.apply(Transaction.diff(from: nil, to: first.ruleset))
        var tablesSeen = Set<String>()
        for step in 0..<150 {
            let index = Int.random(in: 0..<12, using: &random)
            switch Int.random(in: 0..<4, using: &random) {
            case 0: services[index] = nil
            case 1: slices[index] = Self.slice(index, endpoints: Int.random(in: 0...3, using: &random))
            default: services[index] = Self.service(index, variant: Int.random(in: 0..<100, using: &random))
            }
            let current = state()
            let ref = ObjectRef(kind: "Service", namespace: "ns", name: "s\(index)")
            var fragment: ServiceFragment?
            if let service = services[index] {
                fragment = RuleCompiler.fragment(service, backends: current.backends(for: service), facts: assembly.facts, sharding: assembly.sharding)
            }
            let replaced = assembly.replace([ref: fragment])
            let operations = try #require(replaced, "step \(step): the node tables stay")
            try backend.apply(Transaction(operations))
            let expected = RuleCompiler.compile(current, config: Self.config).ruleset
            // The kernel lists chains in the order they were made: compare what a diff sees.
            let kernel = try backend.readOurs()
            #expect(Transaction.diff(from: kernel, to: expected).isEmpty && kernel.tables.map(\.name) == expected.tables.map(\.name),
                    "step \(step): service s\(index)\n\(Self.difference(kernel, expected))")
            #expect(assembly.ruleset() == expected, "step \(step): the assembly lists the same ruleset")
            if !Transaction.diff(from: kernel, to: expected).isEmpty { break }
            for table in expected.tables { tablesSeen.insert(table.name.rawValue) }
        }
        #expect(tablesSeen.count > 2, "shard tables came into play")
    }

    /// The first lines where two rulesets' renders differ, to read a failure.
    private static func difference(_ a: Ruleset, _ b: Ruleset) -> String {
        let left = NftText.script(a).split(separator: "\n"), right = NftText.script(b).split(separator: "\n")
        guard let index = zip(left, right).enumerated().first(where: { $0.element.0 != $0.element.1 })?.offset ?? (left.count == right.count ? nil : min(left.count, right.count)) else {
            return "renders alike"
        }
        return "got:      \(left[index..<min(index + 4, left.count)].joined(separator: " | "))\nexpected: \(right[index..<min(index + 4, right.count)].joined(separator: " | "))"
    }

    @Test func aServiceInAnotherShardCannotTakeAHeldDestination() throws {
        // s0 and s1 claim the same external IP; find a pair that hashes to different shards.
        let sharding = Sharding(count: 64)
        let other = try #require((1..<50).map { "s\($0)" }.first {
            sharding.shard(namespace: "ns", name: $0) != sharding.shard(namespace: "ns", name: "s0")
        })
        let pair = ("s0", other)
        var config = Self.config
        config.tableShards = 64
        var state = ClusterState()
        for name in [pair.0, pair.1] {
            state.services.append(Service(namespace: "ns", name: name, type: .clusterIP, clusterIPs: [IPAddress("10.96.0.\(name == pair.0 ? 1 : 2)")!],
                                          ports: [ServicePort(name: "http", protocol: .tcp, port: 80, targetPort: .number(8080))],
                                          externalIPs: [IPAddress("192.168.50.100")!]))
            state.endpointSlices.append(EndpointSlice(namespace: "ns", name: "\(name)-x", serviceName: name, addressType: .ipv4,
                                                      endpoints: [Endpoint(addresses: [IPAddress("10.244.1.\(name == pair.0 ? 1 : 2)")!])],
                                                      ports: [EndpointPort(name: "http", protocol: .tcp, port: 8080)]))
        }
        let compilation = RuleCompiler.compile(state, config: config)
        let holders = compilation.ruleset.tables.filter { table in
            table.set(Naming.serviceIPs)?.elements.contains { $0.key.first == .address(IPAddress("192.168.50.100")!) } == true
        }
        #expect(holders.map(\.name) == [sharding.table(namespace: "ns", name: pair.0)])
        #expect(compilation.problems.contains { $0.object?.name == pair.1 && $0.message.contains("already used by ns/\(pair.0):http") })
    }

    @Test func servicesStayInTheirShard() {
        let sharding = Sharding(count: 16)
        #expect(sharding.shard(namespace: "default", name: "kubernetes") == Sharding(count: 16).shard(namespace: "default", name: "kubernetes"))
        let spread = Set((0..<200).map { sharding.shard(namespace: "bench", name: "svc-\($0)") })
        #expect(spread.count == 16, "200 services fill all 16 shards")
        #expect(Sharding.automatic(services: 10).count == 1)
        #expect(Sharding.automatic(services: 10_000).count == 16)
        #expect(Sharding.automatic(services: 1_000_000).count == Sharding.maximum)
    }
}
