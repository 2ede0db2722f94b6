import NftIR
import NftText
import RuleCompiler
import ServiceModel
import Testing

/// A family's hairpin elements stay in the one set `hairpin-endpoints` up to 4096; above that
/// the assembly spreads them over buckets by the address's low bits (set, chain and a verdict
/// map entry per bucket), so that no set read back is large. A change of one endpoint stays one
/// element of one bucket; crossing a bucket-count threshold rebuilds the hairpin part.
@Suite struct HairpinBucketTests {
    private static let config = NodeConfig(
        nodeName: "node-a", nodeIPs: [IPAddress("192.168.50.2")!, IPAddress("2001:db8::2")!],
        clusterCIDRs: [CIDR("10.244.0.0/16")!, CIDR("fd00:244::/64")!], serviceCIDRs: [CIDR("10.96.0.0/16")!, CIDR("fd00:96::/112")!],
        tableShards: 4
    )

    /// Local endpoint `index` of a family: 10.244.0.1 onwards, fd00:244::1 onwards.
    private static func address(_ index: Int, _ family: IPFamily) -> IPAddress {
        family == .ipv4 ? IPAddress(ipv4: 0x0af4_0000 + UInt32(index) + 1) : IPAddress(ipv6High: 0xfd00_0244_0000_0000, low: UInt64(index) + 1)
    }

    private static func service(_ index: Int) -> Service {
        Service(namespace: "ns", name: "s\(index)", clusterIPs: [IPAddress(ipv4: 0x0a60_0000 + UInt32(index) + 1), IPAddress(ipv6High: 0xfd00_0096_0000_0000, low: UInt64(index) + 1)],
                ipFamilies: [.ipv4, .ipv6], ports: [ServicePort(name: "http", protocol: .tcp, port: 80, targetPort: .number(8080))])
    }

    /// The slices of service `index`: local endpoints `range` in both families, plus one on another node.
    private static func slices(_ index: Int, _ range: Range<Int>) -> [EndpointSlice] {
        IPFamily.allCases.map { family in
            let remote = Endpoint(addresses: [family == .ipv4 ? IPAddress("10.245.0.\(index % 250 + 1)")! : IPAddress("fd00:245::\(index + 1)")!], nodeName: "node-b")
            return EndpointSlice(namespace: "ns", name: "s\(index)-\(family == .ipv4 ? "v4" : "v6")", serviceName: "s\(index)", addressType: family,
                                 endpoints: range.map { Endpoint(addresses: [address($0, family)], nodeName: "node-a") } + [remote],
                                 ports: [EndpointPort(name: "http", protocol: .tcp, port: 8080)])
        }
    }

    /// `endpoints` local endpoints per family, 100 to a service (the last one takes the rest).
    private static func state(endpoints: Int) -> ClusterState {
        var state = ClusterState()
        let services = max(1, endpoints / 100)
        for index in 0..<services {
            state.services.append(service(index))
            state.endpointSlices += slices(index, (index * 100)..<(index == services - 1 ? endpoints : index * 100 + 100))
        }
        return state
    }

    private static func node(_ ruleset: Ruleset, _ family: Family) throws -> Table { try #require(ruleset.table(family)) }

    private static func rules(_ table: Table, _ chain: Name) -> [String] {
        table.chain(chain)?.rules.map { NftText.rule($0, family: table.family) } ?? []
    }

    @Test func bucketCount() {
        #expect([0, 1, 4096].map(RulesetAssembly.hairpinBuckets) == [1, 1, 1])
        #expect([4097, 8192, 8193, 16384, 16385].map(RulesetAssembly.hairpinBuckets) == [4, 4, 8, 8, 16])
        #expect([500_000, 524_288, 524_289].map(RulesetAssembly.hairpinBuckets) == [256, 256, 512])
    }

    @Test func bucketNames() {
        #expect(Naming.hairpinBucket(3, of: 4) == (Name("hairpin-endpoints-3")!, Name("hairpin-3")!))
        #expect(Naming.hairpinBucket(7, of: 16) == (Name("hairpin-endpoints-07")!, Name("hairpin-07")!))
        #expect(Naming.hairpinBucket(42, of: 256) == (Name("hairpin-endpoints-042")!, Name("hairpin-042")!))
        #expect(Naming.isHairpinBucketChain(Name("hairpin-042")!))
        #expect(!Naming.isHairpinBucketChain(Name("hairpin-endpoints")!) && !Naming.isHairpinBucketChain(Name("hairpin-buckets")!))
    }

    /// Up to the threshold the layout is the single set, whatever the count.
    @Test func atTheThresholdTheSetIsOne() throws {
        let ruleset = RuleCompiler.compile(Self.state(endpoints: 4096), config: Self.config).ruleset
        for family in Family.allCases {
            let table = try Self.node(ruleset, family)
            #expect(table.set(Naming.hairpin)?.elements.count == 4096)
            #expect(table.set(Naming.hairpinBuckets) == nil)
            #expect(!table.chains.contains { Naming.isHairpinBucketChain($0.name) })
            let a = family == .ip ? "ip" : "ip6"
            #expect(Self.rules(table, Naming.masquerading).first == "ct status dnat \(a) saddr . \(a) daddr @hairpin-endpoints meta mark set meta mark | 0x00004000")
        }
    }

    @Test func aboveTheThresholdTheElementsGoToBuckets() throws {
        let flat = RuleCompiler.compile(Self.state(endpoints: 4096), config: Self.config).ruleset
        let ruleset = RuleCompiler.compile(Self.state(endpoints: 4097), config: Self.config).ruleset
        for family in Family.allCases {
            let table = try Self.node(ruleset, family)
            let a = family == .ip ? "ip" : "ip6"
            #expect(table.set(Naming.hairpin) == nil)
            let map = try #require(table.set(Naming.hairpinBuckets))
            #expect(map.isMap && map.key == [.address(family)])
            #expect(map.elements.map { NftText.element($0, family: family) }
                == (0..<4).map { "\(family == .ip ? "0.0.0.\($0)" : $0 == 0 ? "::" : "::\($0)") : jump hairpin-\($0)" })
            var seen: [IPAddress] = []
            for bucket in 0..<4 {
                let (setName, chainName) = Naming.hairpinBucket(bucket, of: 4)
                let set = try #require(table.set(setName))
                #expect(set.key == [.address(family), .address(family)])
                // Each endpoint in the bucket of its address's low two bits, consecutive addresses evenly spread.
                #expect(set.elements.count == 1024 || set.elements.count == 1025)
                for element in set.elements {
                    guard case .address(let ip) = element.key[0] else { Issue.record("not an address: \(element)"); continue }
                    #expect(element.key == [.address(ip), .address(ip)] && Int(ip.low & 3) == bucket)
                    seen.append(ip)
                }
                #expect(Self.rules(table, chainName) == ["\(a) saddr . \(a) daddr @\(setName) meta mark set meta mark | 0x00004000"])
            }
            #expect(seen.sorted() == (0..<4097).map { Self.address($0, family.ipFamily) })
            let masquerading = Self.rules(table, Naming.masquerading)
            #expect(masquerading.first == "ct status dnat \(a) daddr & \(family == .ip ? "0.0.0.3" : "::3") vmap @hairpin-buckets")
            #expect(Array(masquerading.dropFirst()) == Array(Self.rules(try Self.node(flat, family), Naming.masquerading).dropFirst()))
        }
    }

    /// One endpoint more or less is one element of one bucket set (and the service's own chain).
    @Test func anEndpointChangeTouchesOneBucket() throws {
        let before = Self.state(endpoints: 5000)
        let compilation = RuleCompiler.compile(before, config: Self.config)
        var assembly = try #require(compilation.assembly)
        let backend = InMemoryBackend(compilation.ruleset)
        let extra = 7000
        for (change, wanted) in [("add", 5001), ("remove", 5000)] {
            var after = before
            if change == "add" {
                after.endpointSlices = after.endpointSlices.map { slice in
                    guard slice.serviceName == "s3" else { return slice }
                    var slice = slice
                    slice.endpoints.append(Endpoint(addresses: [Self.address(extra, slice.addressType)], nodeName: "node-a"))
                    return slice
                }
            }
            let service = Self.service(3)
            let fragment = RuleCompiler.fragment(service, backends: after.backends(for: service), facts: assembly.facts, sharding: assembly.sharding)
            let replaced = assembly.replace([service.ref: fragment])
            let operations = try #require(replaced)
            for family in Family.allCases {
                let node = operations.filter { $0.table == TableRef(family, Naming.table) }
                let ip = Self.address(extra, family.ipFamily)
                let bucket = Naming.hairpinBucket(Int(ip.low & 3), of: 4).set
                let element = Element([.address(ip), .address(ip)])
                #expect(node == [change == "add" ? .addElements(TableRef(family, Naming.table), set: bucket, [element])
                                                : .deleteElements(TableRef(family, Naming.table), set: bucket, [element])], "\(change) \(family)")
            }
            try backend.apply(Transaction(operations))
            let expected = RuleCompiler.compile(after, config: Self.config).ruleset
            #expect(Transaction.diff(from: backend.ruleset, to: expected).isEmpty, "\(change)")
            #expect(expected.table(.ip)?.sets.filter { $0.name.rawValue.hasPrefix("hairpin-endpoints-") }.reduce(0) { $0 + $1.elements.count } == wanted)
        }
    }

    /// Growing past a threshold and shrinking back rebuild the hairpin part in one transaction
    /// the kernel accepts (the in-memory backend checks as it does: no chain deleted while a
    /// map element still jumps to it), and the result is what a full compile gives.
    @Test(arguments: [4096, 8192])
    func crossingAThresholdRebuildsTheHairpinPart(_ threshold: Int) throws {
        let small = Self.state(endpoints: threshold)
        let compilation = RuleCompiler.compile(small, config: Self.config)
        var assembly = try #require(compilation.assembly)
        let backend = InMemoryBackend(compilation.ruleset)
        let last = Self.service(threshold / 100 - 1)
        var large = small
        large.endpointSlices = small.endpointSlices.map { slice in
            guard slice.serviceName == last.name else { return slice }
            var slice = slice
            slice.endpoints.append(Endpoint(addresses: [Self.address(threshold, slice.addressType)], nodeName: "node-a"))
            return slice
        }
        for (state, buckets) in [(large, RulesetAssembly.hairpinBuckets(threshold + 1)), (small, RulesetAssembly.hairpinBuckets(threshold))] {
            let fragment = RuleCompiler.fragment(last, backends: state.backends(for: last), facts: assembly.facts, sharding: assembly.sharding)
            let replaced = assembly.replace([last.ref: fragment])
            let operations = try #require(replaced)
            try backend.apply(Transaction(operations))
            let expected = RuleCompiler.compile(state, config: Self.config).ruleset
            let applied = backend.ruleset
            #expect(Transaction.diff(from: applied, to: expected).isEmpty, "to \(buckets) buckets:\n\(NftText.commands(Transaction.diff(from: applied, to: expected)).prefix(2000))")
            #expect(try Self.node(expected, .ip).sets.filter { $0.name.rawValue.hasPrefix("hairpin-endpoints") }.count == buckets)
            #expect(assembly.ruleset() == expected)
        }
    }

    /// A full diff between the two layouts applies too (in both directions).
    @Test func aFullDiffBetweenLayoutsApplies() throws {
        let flat = RuleCompiler.compile(Self.state(endpoints: 4096), config: Self.config).ruleset
        let buckets = RuleCompiler.compile(Self.state(endpoints: 4097), config: Self.config).ruleset
        for (from, to) in [(flat, buckets), (buckets, flat)] {
            let backend = InMemoryBackend(from)
            try backend.apply(Transaction.diff(from: from, to: to))
            #expect(Transaction.diff(from: backend.ruleset, to: to).isEmpty)
        }
    }
}
