import ServiceModel

/// A table, chain or set name that the kernel and `nft` both accept.
///
/// nft's scanner reads an identifier as a letter or `_`, then letters, digits and `/ - _ .`;
/// the kernel caps names at NFT_NAME_MAXLEN (256 bytes with the NUL). A `Name` can only be
/// made through `init?(_:)`, so an invalid transaction cannot be built.
public struct Name: Sendable, Hashable, Comparable, CustomStringConvertible {
    public let rawValue: String

    /// NFT_NAME_MAXLEN - 1.
    public static let maxLength = 255

    public init?(_ text: String) {
        // Over the contiguous bytes when there are some: every chain of every service port is named.
        let valid = text.utf8.withContiguousStorageIfAvailable(Name.isValid) ?? Name.isValid(Array(text.utf8))
        guard valid else { return nil }
        rawValue = text
    }

    public var description: String { rawValue }

    public static func < (lhs: Name, rhs: Name) -> Bool { lhs.rawValue < rhs.rawValue }

    private static func isValid(_ bytes: some Collection<UInt8>) -> Bool {
        guard let first = bytes.first, bytes.count <= Name.maxLength else { return false }
        return (Name.isLetter(first) || first == UInt8(ascii: "_")) && bytes.allSatisfy(Name.mayFollow)
    }

    private static func isLetter(_ byte: UInt8) -> Bool {
        (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte) || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte)
    }

    /// A letter, digit, `/`, `-`, `_` or `.`.
    private static func mayFollow(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
             UInt8(ascii: "/"), UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."):
            true
        default:
            false
        }
    }
}

/// A comment stored as userdata; nft refuses comments over 128 bytes (NFTNL_UDATA_COMMENT_MAXLEN),
/// so longer text is cut at a character boundary rather than failing the whole batch.
public struct Comment: Sendable, Hashable, CustomStringConvertible {
    public let text: String
    public static let maxBytes = 127

    public init(_ text: String) {
        // Most comments are short ASCII with nothing to replace (a service port's name, say):
        // taken as is, without walking them Character by Character.
        if text.utf8.count <= Comment.maxBytes, text.utf8.allSatisfy({ $0 < 0x80 && $0 != UInt8(ascii: "\"") && !(0x0a...0x0d).contains($0) }) {
            self.text = text
            return
        }
        var cleaned = String(text.map { $0 == "\"" || $0.isNewline ? "'" : $0 })
        while cleaned.utf8.count > Comment.maxBytes { cleaned.removeLast() }
        self.text = cleaned
    }

    public var description: String { text }
}

/// The one place where nftproxy's object names are made.
public enum Naming {
    /// The node-wide table of each family: filter hooks, masquerade and the sets every service shares.
    public static let table = Name("nftproxy")!

    /// Shard table `index` of a family: the chains of the services hashed to it, and their dispatch maps.
    public static func shardTable(_ index: Int) -> Name {
        index >= 0 && index < shardTables.count ? shardTables[index] : makeShardTable(index)
    }

    /// Every service asks for its shard's name: the first 256 are made once.
    private static let shardTables = (0..<256).map(makeShardTable)

    private static func makeShardTable(_ index: Int) -> Name {
        Name(index < 10 ? "nftproxy-0\(index)" : "nftproxy-\(index)")!
    }

    /// Whether a table is nftproxy's: `nftproxy` or one of its shards `nftproxy-NN`.
    public static func isOurTable(_ name: Name) -> Bool {
        let text = name.rawValue
        if text == table.rawValue { return true }
        guard text.hasPrefix("nftproxy-") else { return false }
        let digits = text.utf8.dropFirst(9)
        return !digits.isEmpty && digits.count <= 4 && digits.allSatisfy { (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }
    }

    // Static chains and sets. None contains `/`: dynamic (per service port) chains always do.
    public static let natPrerouting = Name("nat-prerouting")!
    public static let natOutput = Name("nat-output")!
    public static let natPostrouting = Name("nat-postrouting")!
    public static let filterInput = Name("filter-input")!
    public static let filterForward = Name("filter-forward")!
    public static let filterOutput = Name("filter-output")!
    public static let serviceEndpointsCheck = Name("service-endpoints-check")!
    public static let nodePortEndpointsCheck = Name("nodeport-endpoints-check")!
    public static let clusterIPsCheck = Name("cluster-ips-check")!
    public static let rejectChain = Name("reject-chain")!
    public static let masquerading = Name("masquerading")!
    public static let filterPreroutingPreDNAT = Name("filter-prerouting-pre-dnat")!
    public static let filterOutputPreDNAT = Name("filter-output-pre-dnat")!
    public static let firewallCheck = Name("firewall-check")!

    public static let clusterIPs = Name("cluster-ips")!
    public static let nodePortIPs = Name("nodeport-ips")!
    public static let serviceIPs = Name("service-ips")!
    public static let serviceNodePorts = Name("service-nodeports")!
    public static let noEndpointServices = Name("no-endpoint-services")!
    public static let noEndpointNodePorts = Name("no-endpoint-nodeports")!
    public static let hairpin = Name("hairpin-endpoints")!
    /// A large hairpin set is split in buckets by the endpoint address's low bits (see
    /// `RulesetAssembly`); this verdict map sends `ip daddr & mask` to the bucket's chain.
    public static let hairpinBuckets = Name("hairpin-buckets")!

    /// Hairpin bucket `index` of `count`: its set `hairpin-endpoints-K` and its chain `hairpin-K`,
    /// K zero-padded to the digits of `count - 1` (so they list in bucket order).
    public static func hairpinBucket(_ index: Int, of count: Int) -> (set: Name, chain: Name) {
        let number = String(index), width = String(count - 1).count
        let padded = String(repeating: "0", count: max(0, width - number.count)) + number
        return (Name("hairpin-endpoints-" + padded)!, Name("hairpin-" + padded)!)
    }

    /// Whether a chain is a hairpin bucket's (`hairpin-K`).
    public static func isHairpinBucketChain(_ name: Name) -> Bool {
        let text = name.rawValue.utf8
        guard text.starts(with: "hairpin-".utf8) else { return false }
        let digits = text.dropFirst(8)
        return !digits.isEmpty && digits.allSatisfy { (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }
    }
    /// Session affinity: client . destination . protocol . port → the backend it got; entries
    /// outlive their `affinity-clients` twin by 100 ms.
    public static let affinity = Name("affinity")!
    /// Session affinity: the client . destination . protocol . port keys within their timeout.
    public static let affinityClients = Name("affinity-clients")!
    /// LoadBalancer destinations that have loadBalancerSourceRanges.
    public static let firewallIPs = Name("firewall-ips")!
    /// LoadBalancer destination . allowed source range.
    public static let firewallAllow = Name("firewall-allow")!

    /// Base of a service port's chains: `ns/name/proto/port`, where port is the port's name,
    /// or its number when unnamed. Kubernetes names keep this under 160 bytes.
    static func base(_ port: ServicePortName, number: UInt16) -> String {
        "\(port.namespace)/\(port.name)/\(port.protocol)/\(port.port.isEmpty ? String(number) : port.port)"
    }

    /// A service port's chains, named from one base: `service-…` load-balances over its
    /// cluster-wide endpoints, `local-…` over this node's only, and external destinations
    /// (NodePort, LoadBalancer, externalIPs) go through `external-…`. Nil when a name is invalid.
    public static func portChains(_ port: ServicePortName, number: UInt16) -> (service: Name, local: Name, external: Name)? {
        let base = base(port, number: number)
        guard let service = Name("service-" + base), let local = Name("local-" + base), let external = Name("external-" + base) else {
            return nil
        }
        return (service, local, external)
    }

    /// The Service (`ns/name`) a service-port chain belongs to (`service-ns/name/proto/port`
    /// and its `local-`, `external-` siblings); nil for a static chain.
    public static func service(ofChain name: Name) -> String? {
        guard isServicePortChain(name), let path = name.rawValue.split(separator: "-", maxSplits: 1).last else { return nil }
        return path.split(separator: "/").prefix(2).joined(separator: "/")
    }

    /// The Service (`ns/name`) an element comment names: `ns/name:port`, or `ns/name` for an unnamed port.
    public static func service(ofComment comment: Comment) -> String {
        String(comment.text.split(separator: ":", maxSplits: 1).first ?? Substring(comment.text))
    }

    /// Whether a chain of our table is made per service port (as opposed to a static one).
    public static func isServicePortChain(_ name: Name) -> Bool { name.rawValue.contains("/") }
}
