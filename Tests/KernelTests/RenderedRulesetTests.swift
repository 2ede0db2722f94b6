import Foundation
import NftIR
import NftText
import RuleCompiler
import ServiceModel
import Testing

/// The kernel accepts every rendered ruleset: each golden case (the example included) is checked
/// with `nft -c -f`, loaded with `nft -f`, listed, and loaded a second time over itself.
@Suite(.enabled(if: Netns.isRoot, "needs root for network namespaces"), .serialized)
struct RenderedRulesetTests {
    @Test func everyGoldenCaseIsPresent() {
        #expect(Paths.goldenFiles.count >= 16)
    }

    @Test(arguments: Paths.goldenFiles.map(\.path))
    func kernelAcceptsGoldenRendering(_ path: String) throws {
        try Netns.with { ns in
            let check = try ns.run(["nft", "-c", "-f", path])
            #expect(check.status == 0, "nft -c rejected \(path): \(check.stderr)")
            let load = try ns.run(["nft", "-f", path])
            #expect(load.status == 0, "nft -f failed on \(path): \(load.stderr)")
            let list = try ns.run(["nft", "list", "ruleset"])
            #expect(list.status == 0)
            #expect(list.stdout.contains("table ip nftproxy") || list.stdout.contains("table ip6 nftproxy"))
            let reload = try ns.run(["nft", "-f", path])
            #expect(reload.status == 0, "loading \(path) over itself failed: \(reload.stderr)")
            #expect(try ns.run(["nft", "list", "ruleset"]).stdout == list.stdout)
        }
    }

    /// The set count must not grow with the cluster: 10k services × 10 endpoints of mixed kinds
    /// (affinity, Local policies, source ranges) spread over 4 shard tables load with exactly as
    /// many sets and maps (anonymous ones included, counted by the kernel) as 40 do, but for the
    /// hairpin buckets: above 4096 local endpoints, a set per 2048 of them and the map that picks
    /// one take the single hairpin set's place (`RulesetAssembly.hairpinBuckets`; 50k here: 32).
    @Test func setCountDoesNotGrowWithServices() throws {
        let small = try kernelSetCount(services: 40)
        let large = try kernelSetCount(services: 10_000)
        #expect(small.total > 0)
        #expect(small.hairpinBuckets == 0 && large.hairpinBuckets == 32)
        #expect(large.total - large.hairpinBuckets == small.total, "40 services: \(small), 10k services: \(large)")
        #expect(large.anonymous == 0)
    }

    /// The kernel's count of sets, and the hairpin bucket sets among them (0: the single set).
    private func kernelSetCount(services: Int) throws -> (total: Int, anonymous: Int, hairpinBuckets: Int) {
        var config = ScaleState.config
        config.tableShards = 4
        let compilation = RuleCompiler.compile(ScaleState.make(services: services, endpointsPerService: 10), config: config)
        #expect(compilation.problems.isEmpty)
        #expect(compilation.ruleset.tables.count == 5, "the node table and 4 shards")
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("nftproxy-scale-\(services)-\(getpid()).nft")
        try NftText.script(compilation.ruleset).write(to: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: file) }
        return try Netns.with { ns in
            let load = try ns.run(["nft", "-f", file.path])
            #expect(load.status == 0, "nft -f of \(services) services failed: \(load.stderr.prefix(500))")
            let rules = try ns.run(["nft", "list", "chain", "ip", "nftproxy-00", "nat-prerouting"])
            #expect(rules.status == 0)
            let counted = try ns.run(["python3", Paths.countSets])
            #expect(counted.status == 0, "\(counted.stderr)")
            // "sets=N anonymous=M"
            let numbers = counted.stdout.split(whereSeparator: { !$0.isNumber }).compactMap { Int($0) }
            guard numbers.count == 2 else { throw Netns.Failure("unexpected count output: \(counted.stdout)") }
            let buckets = compilation.ruleset.table(.ip)?.sets.filter { $0.name.rawValue.hasPrefix("hairpin-endpoints-") }.count ?? 0
            return (numbers[0], numbers[1], buckets)
        }
    }
}

/// A generated cluster: services of mixed types, each with endpoints spread over two nodes.
enum ScaleState {
    static let config = NodeConfig(
        nodeName: "node-a", nodeIPs: [IPAddress("192.168.50.2")!], clusterCIDRs: [CIDR("10.0.0.0/8")!],
        serviceCIDRs: [CIDR("172.16.0.0/12")!]
    )

    static func make(services: Int, endpointsPerService: Int) -> ClusterState {
        var state = ClusterState()
        for index in 0..<services {
            let name = "svc-\(index)"
            let clusterIP = IPAddress(bytes: [172, 16 + UInt8(index >> 16), UInt8((index >> 8) & 0xff), UInt8(index & 0xff)])!
            let type: ServiceType = [.clusterIP, .clusterIP, .nodePort, .loadBalancer][index % 4]
            let nodePort: UInt16 = type == .clusterIP ? 0 : UInt16(30000 + index % 30000)
            let ingress = type == .loadBalancer
                ? [LoadBalancerIngress(ip: IPAddress(bytes: [198, 18 + UInt8(index >> 16), UInt8((index >> 8) & 0xff), UInt8(index & 0xff)])!)]
                : []
            // Mixed kinds: every 5th has ClientIP affinity, every 7th is externalTrafficPolicy
            // Local, every 11th internalTrafficPolicy Local, LoadBalancers have source ranges.
            state.services.append(Service(
                namespace: "scale", name: name, type: type, clusterIPs: [clusterIP], ipFamilies: [.ipv4],
                ports: [ServicePort(name: "http", protocol: .tcp, port: 80, targetPort: .number(8080), nodePort: nodePort)],
                loadBalancerIngress: ingress,
                loadBalancerSourceRanges: type == .loadBalancer ? [CIDR("203.0.113.0/25")!, CIDR("10.\(index % 200).0.0/16")!] : [],
                sessionAffinity: index % 5 == 0 ? .clientIP(timeoutSeconds: 10800) : .none,
                externalTrafficPolicy: index % 7 == 0 && type != .clusterIP ? .local : .cluster,
                internalTrafficPolicy: index % 11 == 0 ? .local : .cluster
            ))
            let endpoints = (0..<endpointsPerService).map { e in
                let id = index * endpointsPerService + e
                return Endpoint(
                    addresses: [IPAddress(bytes: [10, UInt8((id >> 16) & 0xff), UInt8((id >> 8) & 0xff), UInt8(id & 0xff)])!],
                    nodeName: e % 2 == 0 ? "node-a" : "node-b"
                )
            }
            state.endpointSlices.append(EndpointSlice(
                namespace: "scale", name: "\(name)-abc", serviceName: name, addressType: .ipv4,
                endpoints: endpoints, ports: [EndpointPort(name: "http", protocol: .tcp, port: 8080)]
            ))
        }
        return state
    }
}
