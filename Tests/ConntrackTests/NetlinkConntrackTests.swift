import Foundation
import NftIR
@testable import NftNetlink
import ServiceModel
import Testing

private let vip = "10.96.0.10"
private let gone = "10.244.1.5"  // the endpoint that was removed
private let kept = "10.244.1.6"  // an endpoint that is still serving

private func request(_ destinations: [String], port: UInt16, nodePort: UInt16 = 0, keep: [String],
                     family: Family = .ip) -> ConntrackFlush {
    ConntrackFlush(family: family, destinations: destinations.map { IPAddress($0)! }, port: port, nodePort: nodePort,
                   keepReplySources: Set(keep.map { IPAddress($0)! }))
}

/// Real conntrack entries (`conntrack -I`) in a fresh namespace, flushed through ctnetlink and
/// checked with `conntrack -L`: exactly the stale UDP entries are gone, and the count says so.
/// Cases follow reliability.md §6 UDP-CT-* and CT-NO-COLLATERAL.
@Suite(.enabled(if: TestNamespace.isRoot, "needs root for network namespaces and conntrack"))
struct NetlinkConntrackTests {
    /// Inserts `flows`, flushes `requests`, and expects exactly `stale` to be deleted. (Tuples
    /// must be unique in both directions, so flows answered by one backend use distinct client ports.)
    private func expectFlush(_ flows: [Flow], _ requests: [ConntrackFlush], deletes stale: [Flow],
                             sourceLocation: SourceLocation = #_sourceLocation) throws {
        try TestNamespace.with { ns in
            try ns.insert(flows)
            let before = try ns.conntrackTable()
            try #require(before == Set(flows), "conntrack -I did not create the entries", sourceLocation: sourceLocation)
            let deleted = try NetlinkConntrack(netnsPath: ns.path).flush(requests)
            let after = try ns.conntrackTable()
            let expected = Set(flows).subtracting(stale)
            #expect(after == expected, "left \(after.subtracting(expected)) too many; deleted \(expected.subtracting(after)) wrongly",
                    sourceLocation: sourceLocation)
            #expect(deleted == stale.count, sourceLocation: sourceLocation)
        }
    }

    /// UDP-CT-ENDPOINT-SWAP: the flow answered by the removed endpoint is cut, the one answered
    /// by a serving endpoint stays.
    @Test func removedEndpoint() throws {
        let stale = Flow.udp("10.0.0.2", 12345, to: vip, 53, via: gone, 5353)
        let live = Flow.udp("10.0.0.3", 12345, to: vip, 53, via: kept, 5353)
        try expectFlush([stale, live], [request([vip], port: 53, keep: [kept])], deletes: [stale])
    }

    /// UDP-CT-FIRST-ENDPOINT (#48370): the entry made while the service had no endpoints is
    /// untranslated (its reply comes from the service IP itself), and must go.
    @Test func firstEndpoint() throws {
        let untranslated = Flow.udp("10.0.0.2", 12345, to: vip, 53, via: vip, 53)
        try expectFlush([untranslated], [request([vip], port: 53, keep: [kept])], deletes: [untranslated])
    }

    /// UDP-CT-SCALE-TO-ZERO (#139628): no endpoints left, so every translated entry goes.
    @Test func scaleToZero() throws {
        let a = Flow.udp("10.0.0.2", 12345, to: vip, 53, via: gone, 5353)
        let b = Flow.udp("10.0.0.3", 23456, to: vip, 53, via: kept, 5353)
        try expectFlush([a, b], [request([vip], port: 53, keep: [])], deletes: [a, b])
    }

    /// TCP is never deleted (it breaks graceful shutdown), even when it matches a request.
    @Test func tcpIsNeverTouched() throws {
        let tcp = Flow.tcp("10.0.0.2", 12345, to: vip, 53, via: gone, 5353)
        let udp = Flow.udp("10.0.0.2", 12345, to: vip, 53, via: gone, 5353)
        try expectFlush([tcp, udp], [request([vip], port: 53, nodePort: 53, keep: [])], deletes: [udp])
    }

    /// CT-NO-COLLATERAL: UDP to other services, other ports, untranslated traffic to elsewhere,
    /// and an untranslated flow that only shares the NodePort number all stay.
    @Test func unrelatedUDPIsUntouched() throws {
        let stale = Flow.udp("10.0.0.2", 12345, to: vip, 53, via: gone, 5353)
        let unrelated = [
            Flow.udp("10.0.0.2", 12346, to: "10.96.0.11", 53, via: gone, 5353),  // another service
            Flow.udp("10.0.0.2", 12347, to: vip, 54, via: gone, 5353),  // another port of the service
            Flow.udp("10.0.0.2", 40000, to: "8.8.8.8", 53, via: "8.8.8.8", 53),  // not via a service
            Flow.udp("10.0.0.2", 40001, to: "192.0.2.1", 30053, via: "192.0.2.1", 30053),  // same port number, untranslated
        ]
        try expectFlush([stale] + unrelated, [request([vip], port: 53, nodePort: 30053, keep: [kept])], deletes: [stale])
    }

    /// CT-NO-COLLATERAL, restart without changes: every reply source is a serving endpoint,
    /// so nothing is deleted.
    @Test func nothingChangedDeletesNothing() throws {
        let flows = [Flow.udp("10.0.0.2", 12345, to: vip, 53, via: gone, 5353),
                     Flow.udp("10.0.0.3", 12345, to: vip, 53, via: kept, 5353),
                     Flow.udp("192.168.100.2", 40000, to: "192.168.100.1", 30053, via: kept, 5353)]
        try expectFlush(flows, [request([vip], port: 53, nodePort: 30053, keep: [gone, kept])], deletes: [])
    }

    /// UDP-CT-NODEPORT: entries to the NodePort on any node address, answered by the removed
    /// endpoint, go; those answered by a serving endpoint stay. External and load-balancer
    /// IPs are destinations like the ClusterIP (#59368, #104149).
    @Test func nodePortAndExternalAddresses() throws {
        let viaNodeIP = Flow.udp("192.168.100.2", 40000, to: "192.168.100.1", 30053, via: gone, 5353)
        let viaOtherNodeIP = Flow.udp("192.168.100.3", 40000, to: "10.0.0.1", 30053, via: gone, 5353)
        let viaLoadBalancer = Flow.udp("192.168.100.2", 40001, to: "203.0.113.10", 53, via: gone, 5353)
        let live = Flow.udp("192.168.100.4", 40000, to: "192.168.100.1", 30053, via: kept, 5353)
        try expectFlush([viaNodeIP, viaOtherNodeIP, viaLoadBalancer, live],
                        [request([vip, "203.0.113.10"], port: 53, nodePort: 30053, keep: [kept])],
                        deletes: [viaNodeIP, viaOtherNodeIP, viaLoadBalancer])
    }

    /// IPv6 entries, and an IPv4 entry that an IPv6 request must not touch.
    @Test func ipv6() throws {
        let stale = Flow.udp("fd00:10::2", 12345, to: "fd00:96::10", 53, via: "fd00:244::5", 5353)
        let untranslated = Flow.udp("fd00:10::3", 12345, to: "fd00:96::10", 53, via: "fd00:96::10", 53)
        let live = Flow.udp("fd00:10::4", 12345, to: "fd00:96::10", 53, via: "fd00:244::6", 5353)
        let otherFamily = Flow.udp("10.0.0.2", 12345, to: vip, 53, via: gone, 5353)
        try expectFlush([stale, untranslated, live, otherFamily],
                        [request(["fd00:96::10"], port: 53, keep: ["fd00:244::6"], family: .ip6)],
                        deletes: [stale, untranslated])
    }

    /// A dual-stack service: one request per family, one call.
    @Test func bothFamiliesInOneCall() throws {
        let v4 = Flow.udp("10.0.0.2", 12345, to: vip, 53, via: gone, 5353)
        let v6 = Flow.udp("fd00:10::2", 12345, to: "fd00:96::10", 53, via: "fd00:244::5", 5353)
        try expectFlush([v4, v6], [request([vip], port: 53, keep: [kept]),
                                   request(["fd00:96::10"], port: 53, keep: ["fd00:244::6"], family: .ip6)], deletes: [v4, v6])
    }

    /// Entries in a non-default conntrack zone are found and deleted (CTA_ZONE on the delete).
    @Test func zonedEntry() throws {
        let zoned = Flow.udp("10.0.0.2", 12345, to: vip, 53, via: gone, 5353, zone: 7)
        let plain = Flow.udp("10.0.0.2", 12345, to: vip, 53, via: gone, 5353)
        try expectFlush([zoned, plain], [request([vip], port: 53, keep: [])], deletes: [zoned, plain])
    }

    /// More stale entries than one datagram of deletes carries; a second run finds nothing.
    @Test func manyEntriesAndIdempotence() throws {
        try TestNamespace.with { ns in
            let stale = (0..<300).map { Flow.udp("10.0.\($0 / 200).\($0 % 200 + 2)", 10000 + UInt16($0), to: vip, 53, via: gone, 5353) }
            let live = (0..<20).map { Flow.udp("10.1.0.\($0 + 2)", 20000, to: vip, 53, via: kept, 5353) }
            try ns.insert(stale + live)
            try #require(try ns.conntrackTable().count == 320)
            let cleaner = NetlinkConntrack(netnsPath: ns.path)
            let requests = [request([vip], port: 53, keep: [kept])]
            #expect(try cleaner.flush(requests) == 300)
            #expect(try ns.conntrackTable() == Set(live))
            #expect(try cleaner.flush(requests) == 0)
        }
    }

    /// The dump asks the kernel for UDP only (CTA_FILTER) and parses every field the
    /// decision and the delete use.
    @Test func dumpIsFilteredAndParsed() throws {
        try TestNamespace.with { ns in
            let udp = [Flow.udp("10.0.0.2", 12345, to: vip, 53, via: gone, 5353),
                       Flow.udp("10.0.0.2", 12345, to: vip, 53, via: gone, 5353, zone: 7)]
            let tcp = Flow.tcp("10.0.0.2", 12345, to: vip, 80, via: gone, 8080)
            let v6 = Flow.udp("fd00:10::2", 12345, to: "fd00:96::10", 53, via: "fd00:244::5", 5353)
            try ns.insert(udp + [tcp, v6])
            let socket = try NetlinkSocket(netnsPath: ns.path)
            var listed: [ConntrackEntry] = []
            try socket.listConntrack(family: .ip, protocolNumber: ConntrackTuple.udp) { listed.append($0) }
            #expect(Set(listed.map(Self.flow)) == Set(udp))
            #expect(listed.allSatisfy { $0.id != nil })
            var listed6: [ConntrackEntry] = []
            try socket.listConntrack(family: .ip6, protocolNumber: ConntrackTuple.udp) { listed6.append($0) }
            #expect(listed6.map(Self.flow) == [v6])
        }
    }

    /// A delete names one entry exactly: a tuple that is gone, or whose CTA_ID belongs to an
    /// older entry, is ENOENT, which counts as nothing and is not an error.
    @Test func deleteIsExactAndToleratesENOENT() throws {
        try TestNamespace.with { ns in
            let flow = Flow.udp("10.0.0.2", 12345, to: vip, 53, via: gone, 5353)
            try ns.insert([flow])
            let socket = try NetlinkSocket(netnsPath: ns.path)
            var listed: [ConntrackEntry] = []
            try socket.listConntrack(family: .ip, protocolNumber: ConntrackTuple.udp) { listed.append($0) }
            let entry = try #require(listed.first)
            var older = entry
            older.id = entry.id.map { $0 ^ 0xffff_ffff }
            #expect(try socket.deleteConntrack([older], family: .ip) == 0)
            #expect(try ns.conntrackTable() == [flow])
            #expect(try socket.deleteConntrack([entry], family: .ip) == 1)
            #expect(try ns.conntrackTable().isEmpty)
            #expect(try socket.deleteConntrack([entry], family: .ip) == 0)
        }
    }

    private static func flow(_ entry: ConntrackEntry) -> Flow {
        let (o, r) = (entry.original, entry.reply)
        return Flow(proto: o.protocolNumber == 17 ? "udp" : "other", src: "\(o.source)", dst: "\(o.destination)", sport: o.sourcePort,
                    dport: o.destinationPort, replySrc: "\(r.source)", replyDst: "\(r.destination)", replySport: r.sourcePort,
                    replyDport: r.destinationPort, zone: entry.zone.map { UInt16(bigEndian: $0) } ?? 0)
    }

    @Test func missingNamespaceIsAnError() throws {
        #expect(throws: BackendError.self) {
            try NetlinkConntrack(netnsPath: "/run/netns/nftproxy-ct-no-such-namespace").flush([request([vip], port: 53, keep: [])])
        }
    }
}

/// Requests that name nothing never reach the kernel: a bad namespace path is not even opened.
@Test func emptyRequestsDoNothing() throws {
    let cleaner = NetlinkConntrack(netnsPath: "/run/netns/nftproxy-ct-no-such-namespace")
    #expect(try cleaner.flush([]) == 0)
    #expect(try cleaner.flush([request([], port: 0, keep: [])]) == 0)
}
