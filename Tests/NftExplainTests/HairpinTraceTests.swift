import NftExplain
import NftIR
import RuleCompiler
import ServiceModel
import Testing

/// An endpoint reaching itself through its service is masqueraded, whether the node's hairpin
/// elements are in one set or (above 4096) in buckets behind `ip daddr & mask vmap`.
@Suite struct HairpinTraceTests {
    static let nodeIP = IPAddress("192.168.50.2")!
    static let config = NodeConfig(nodeName: "node-a", nodeIPs: [nodeIP], clusterCIDRs: [CIDR("10.244.0.0/16")!])

    /// Service `web` (10.96.0.10:80) with the one endpoint 10.244.1.5 on this node, and `filler`
    /// with `filler` more local endpoints (10.245.x.y) that no traffic uses.
    static func state(filler: Int) -> ClusterState {
        let port = [ServicePort(name: "http", protocol: .tcp, port: 80, targetPort: .number(8080))]
        let endpointPort = [EndpointPort(name: "http", protocol: .tcp, port: 8080)]
        return ClusterState(
            services: [Service(namespace: "ns", name: "web", clusterIPs: [IPAddress("10.96.0.10")!], ports: port),
                       Service(namespace: "ns", name: "filler", clusterIPs: [IPAddress("10.96.0.11")!], ports: port)],
            endpointSlices: [
                EndpointSlice(namespace: "ns", name: "web-x", serviceName: "web", addressType: .ipv4,
                              endpoints: [Endpoint(addresses: [IPAddress("10.244.1.5")!], nodeName: "node-a")], ports: endpointPort),
                EndpointSlice(namespace: "ns", name: "filler-x", serviceName: "filler", addressType: .ipv4,
                              endpoints: (0..<filler).map { Endpoint(addresses: [IPAddress(ipv4: 0x0af5_0000 + UInt32($0) + 1)], nodeName: "node-a") },
                              ports: endpointPort),
            ])
    }

    @Test(arguments: [100, 5000])
    func hairpinIsMasqueradedInEitherLayout(_ filler: Int) throws {
        let ruleset = RuleCompiler.compile(Self.state(filler: filler), config: Self.config).ruleset
        let bucketed = filler + 1 > RulesetAssembly.hairpinBucketThreshold
        #expect((ruleset.table(.ip)?.set(Naming.hairpinBuckets) != nil) == bucketed)
        let tracer = Tracer(ruleset: ruleset, context: TraceContext(nodeIPs: [Self.nodeIP]))
        let clusterIP = IPAddress("10.96.0.10")!

        let itself = tracer.trace(Connection(source: IPAddress("10.244.1.5")!, destination: clusterIP, port: 80, protocol: .tcp, origin: .pod))
        guard case .dnat(_, let next) = itself.outcome else { Issue.record("not DNATed: \(itself.text)"); return }
        #expect(next.description == "10.244.1.5:8080")
        #expect(itself.masqueraded, "\(itself.text)")
        #expect(itself.masqueradeReason == "hairpin: the endpoint reached itself through the service", "\(itself.text)")
        if bucketed {
            // 10.244.1.5 & 0.0.0.3 = 1: the dispatch jumps to bucket 1, whose set holds the endpoint.
            #expect(itself.steps.contains { $0.chain == "masquerading" && $0.note == "matched 0.0.0.1 : jump hairpin-1 in @hairpin-buckets" }, "\(itself.text)")
            #expect(itself.steps.contains { $0.chain == "hairpin-1" && $0.note == "marked for masquerade" }, "\(itself.text)")
        }

        let other = tracer.trace(Connection(source: IPAddress("10.244.1.6")!, destination: clusterIP, port: 80, protocol: .tcp, origin: .pod))
        #expect(!other.masqueraded, "\(other.text)")
        #expect(!other.steps.contains { $0.note == "marked for masquerade" }, "\(other.text)")
    }
}
