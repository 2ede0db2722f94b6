import NftIR
import ServiceModel

/// The kernel conntrack cleaner: lists the UDP entries of each requested family over ctnetlink
/// and deletes, one by one and by original tuple, those that `ConntrackFlush` calls stale.
///
/// Like kube-proxy's reconciler (1.32+), it is driven by the current state, not by events, so
/// running it again after a failure or on every full resync is safe: an entry already gone is
/// not an error, and an entry that matches no request (TCP, unrelated UDP, a kept endpoint) is
/// never touched. Run it only after the batch that changed the endpoints was acknowledged,
/// or a packet in between recreates the bad entry (kubernetes#119249).
///
/// Each call opens its own NETLINK_NETFILTER socket (in `netnsPath`'s network namespace when
/// given), so the value is freely shareable across threads.
public struct NetlinkConntrack: ConntrackCleaner {
    /// A network namespace file (`/run/netns/NAME`, `/proc/PID/ns/net`); nil = the current one.
    public let netnsPath: String?

    public init(netnsPath: String? = nil) {
        self.netnsPath = netnsPath
    }

    /// Deletes the stale UDP entries and returns how many the kernel deleted (entries that
    /// vanished on their own meanwhile are not counted).
    ///
    /// - Throws: `BackendError` when a family's table cannot be listed, or when a delete fails
    ///   for a reason other than ENOENT; the other deletes and the other family are still
    ///   attempted, and the first error is thrown at the end.
    public func flush(_ requests: [ConntrackFlush]) throws(BackendError) -> Int {
        let matchers = Family.allCases.map { StaleMatcher(requests, family: $0) }.filter { !$0.isEmpty }
        guard !matchers.isEmpty else { return 0 }
        let socket = try NetlinkSocket(netnsPath: netnsPath)
        var deleted = 0
        var failure: BackendError?
        for matcher in matchers {
            // One family failing does not keep the other's stale entries alive.
            do {
                var stale = Set<ConntrackEntry>()
                try socket.listConntrack(family: matcher.family, protocolNumber: ConntrackTuple.udp) { entry in
                    if matcher.isStale(entry) { stale.insert(entry) }
                }
                deleted += try socket.deleteConntrack(stale.sorted(), family: matcher.family)
            } catch {
                failure = failure ?? error
            }
        }
        if let failure { throw failure }
        return deleted
    }
}

/// One direction of a conntrack entry (CTA_TUPLE_ORIG or CTA_TUPLE_REPLY).
struct ConntrackTuple: Hashable, Comparable, CustomStringConvertible {
    static let udp: UInt8 = 17  // IPPROTO_UDP

    var source: IPAddress
    var destination: IPAddress
    /// CTA_PROTO_NUM (IPPROTO_*).
    var protocolNumber: UInt8
    var sourcePort: UInt16
    var destinationPort: UInt16

    static func < (lhs: ConntrackTuple, rhs: ConntrackTuple) -> Bool {
        (lhs.destination, lhs.destinationPort, lhs.source, lhs.sourcePort, lhs.protocolNumber)
            < (rhs.destination, rhs.destinationPort, rhs.source, rhs.sourcePort, rhs.protocolNumber)
    }

    var description: String {
        func endpoint(_ address: IPAddress, _ port: UInt16) -> String {
            address.family == .ipv6 ? "[\(address)]:\(port)" : "\(address):\(port)"
        }
        let name = protocolNumber == ConntrackTuple.udp ? "udp" : protocolNumber == 6 ? "tcp" : "proto \(protocolNumber)"
        return "\(name) \(endpoint(source, sourcePort)) -> \(endpoint(destination, destinationPort))"
    }
}

/// One conntrack entry as a dump reports it: enough to decide staleness and to delete exactly it.
struct ConntrackEntry: Hashable, Comparable {
    var original: ConntrackTuple
    var reply: ConntrackTuple
    /// CTA_ID as sent (big-endian bytes loaded as is). Sent back with the delete, so the kernel
    /// refuses (ENOENT) when the tuple now belongs to a newer entry than the one judged stale.
    var id: UInt32?
    /// CTA_ZONE as sent (big-endian), when the entry is not in the default zone.
    var zone: UInt16?

    static func < (lhs: ConntrackEntry, rhs: ConntrackEntry) -> Bool {
        (lhs.original, lhs.id ?? 0) < (rhs.original, rhs.id ?? 0)
    }
}

/// Decides which entries of one family are stale for a set of requests, by lookups keyed on
/// the original destination, so a table of a million entries costs a million hash lookups.
struct StaleMatcher {
    struct ServicePort: Hashable {
        var address: IPAddress
        var port: UInt16
    }

    let family: Family
    /// The keep sets of every request naming this destination and port.
    private(set) var services: [ServicePort: [Set<IPAddress>]] = [:]
    /// The keep sets of every request with this NodePort.
    private(set) var nodePorts: [UInt16: [Set<IPAddress>]] = [:]

    init(_ requests: [ConntrackFlush], family: Family) {
        self.family = family
        for request in requests where request.family == family {
            if request.port != 0 {
                for destination in Set(request.destinations) where destination.family == family.ipFamily {
                    services[ServicePort(address: destination, port: request.port), default: []].append(request.keepReplySources)
                }
            }
            if request.nodePort != 0 {
                nodePorts[request.nodePort, default: []].append(request.keepReplySources)
            }
        }
    }

    var isEmpty: Bool { services.isEmpty && nodePorts.isEmpty }

    /// UDP of this family, whose reply comes from outside the keep set of a request that names
    /// its original destination and port, or its original destination port as NodePort. A
    /// NodePort match needs a translated entry (reply source ≠ original destination): NodePorts
    /// are matched on any destination, and an untranslated flow to another host that merely
    /// uses the same port number is not ours to cut.
    func isStale(_ entry: ConntrackEntry) -> Bool {
        let original = entry.original
        guard original.protocolNumber == ConntrackTuple.udp, original.destination.family == family.ipFamily else { return false }
        let replySource = entry.reply.source
        if let keeps = services[ServicePort(address: original.destination, port: original.destinationPort)],
           keeps.contains(where: { !$0.contains(replySource) }) {
            return true
        }
        if replySource != original.destination, let keeps = nodePorts[original.destinationPort],
           keeps.contains(where: { !$0.contains(replySource) }) {
            return true
        }
        return false
    }
}
