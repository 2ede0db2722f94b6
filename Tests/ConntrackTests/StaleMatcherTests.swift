import NftIR
@testable import NftNetlink
import ServiceModel
import Testing

/// The staleness rule on its own, without a kernel.
struct StaleMatcherTests {
    private func entry(_ dst: String, _ dport: UInt16, reply: String, proto: UInt8 = 17) -> ConntrackEntry {
        let client = IPAddress(dst.contains(":") ? "fd00::2" : "10.0.0.2")!
        return ConntrackEntry(
            original: ConntrackTuple(source: client, destination: IPAddress(dst)!, protocolNumber: proto, sourcePort: 40000, destinationPort: dport),
            reply: ConntrackTuple(source: IPAddress(reply)!, destination: client, protocolNumber: proto, sourcePort: 5353, destinationPort: 40000),
            id: 1, zone: nil)
    }

    private let requests = [
        ConntrackFlush(family: .ip, destinations: [IPAddress("10.96.0.10")!, IPAddress("fd00::10")!], port: 53, nodePort: 30053,
                       keepReplySources: [IPAddress("10.244.1.6")!]),
    ]

    @Test func staleness() {
        let matcher = StaleMatcher(requests, family: .ip)
        #expect(matcher.isStale(entry("10.96.0.10", 53, reply: "10.244.1.5")))
        #expect(matcher.isStale(entry("10.96.0.10", 53, reply: "10.96.0.10")))  // untranslated
        #expect(!matcher.isStale(entry("10.96.0.10", 53, reply: "10.244.1.6")))  // kept
        #expect(!matcher.isStale(entry("10.96.0.10", 53, reply: "10.244.1.5", proto: 6)))  // TCP
        #expect(!matcher.isStale(entry("10.96.0.10", 53, reply: "10.244.1.5", proto: 132)))  // SCTP
        #expect(!matcher.isStale(entry("10.96.0.11", 53, reply: "10.244.1.5")))
        #expect(!matcher.isStale(entry("10.96.0.10", 54, reply: "10.244.1.5")))
        #expect(matcher.isStale(entry("192.168.1.1", 30053, reply: "10.244.1.5")))  // NodePort, any address
        #expect(!matcher.isStale(entry("192.168.1.1", 30053, reply: "192.168.1.1")))  // NodePort number, untranslated
        #expect(!matcher.isStale(entry("192.168.1.1", 30053, reply: "10.244.1.6")))
    }

    /// A request's addresses of the other family, and requests of the other family, are ignored.
    @Test func familiesStayApart() {
        #expect(StaleMatcher(requests, family: .ip6).isEmpty)
        let v4 = StaleMatcher(requests, family: .ip)
        #expect(v4.services.count == 1)
        #expect(!v4.isStale(entry("fd00::10", 53, reply: "fd00::5")))
    }

    /// Two requests for one address and port (should not happen, but must not widen the keep
    /// set): an entry stale for either is stale.
    @Test func overlappingRequests() {
        let vip = IPAddress("10.96.0.10")!
        let matcher = StaleMatcher([
            ConntrackFlush(family: .ip, destinations: [vip], port: 53, nodePort: 0, keepReplySources: [IPAddress("10.244.1.5")!]),
            ConntrackFlush(family: .ip, destinations: [vip], port: 53, nodePort: 0, keepReplySources: [IPAddress("10.244.1.6")!]),
        ], family: .ip)
        #expect(matcher.isStale(entry("10.96.0.10", 53, reply: "10.244.1.5")))
        #expect(matcher.isStale(entry("10.96.0.10", 53, reply: "10.244.1.7")))
    }

    @Test func portZeroNamesNoServicePort() {
        let matcher = StaleMatcher([ConntrackFlush(family: .ip, destinations: [IPAddress("10.96.0.10")!], port: 0, nodePort: 0, keepReplySources: [])], family: .ip)
        #expect(matcher.isEmpty)
    }
}
