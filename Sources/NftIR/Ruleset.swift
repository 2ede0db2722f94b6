import ServiceModel

/// The rule IR: plain values that both the text renderer and the netlink lowering consume,
/// so the dry run shows exactly what the kernel gets. Only what the compiler emits is here.

/// Table family. NFPROTO_IPV4 = 2, NFPROTO_IPV6 = 10.
public enum Family: String, Sendable, Hashable, CaseIterable, Comparable {
    case ip
    case ip6

    public init(_ family: IPFamily) { self = family == .ipv4 ? .ip : .ip6 }

    public var ipFamily: IPFamily { self == .ip ? .ipv4 : .ipv6 }
    public var nfproto: UInt8 { self == .ip ? 2 : 10 }

    public static func < (lhs: Family, rhs: Family) -> Bool { lhs == .ip && rhs == .ip6 }
}

public enum ChainType: String, Sendable, Hashable {
    case filter
    case nat
}

/// NF_INET_PRE_ROUTING … NF_INET_POST_ROUTING.
public enum Hook: String, Sendable, Hashable {
    case prerouting
    case input
    case forward
    case output
    case postrouting

    public var number: UInt32 {
        switch self {
        case .prerouting: 0
        case .input: 1
        case .forward: 2
        case .output: 3
        case .postrouting: 4
        }
    }
}

/// A base-chain priority: nft's keyword plus an offset (`dstnat - 10`).
public struct Priority: Sendable, Hashable, CustomStringConvertible {
    public enum Keyword: String, Sendable, Hashable {
        case raw, mangle, dstnat, filter, security, srcnat

        /// NF_IP_PRI_* values for the ip/ip6 families.
        public var value: Int32 {
            switch self {
            case .raw: -300
            case .mangle: -150
            case .dstnat: -100
            case .filter: 0
            case .security: 50
            case .srcnat: 100
            }
        }
    }

    public var keyword: Keyword
    public var offset: Int32

    public init(_ keyword: Keyword, _ offset: Int32 = 0) {
        self.keyword = keyword
        self.offset = offset
    }

    public var value: Int32 { keyword.value + offset }

    /// The kernel keeps only the number: `filter + 50` and `security` are the same priority.
    public static func == (lhs: Priority, rhs: Priority) -> Bool { lhs.value == rhs.value }
    public func hash(into hasher: inout Hasher) { hasher.combine(value) }

    public var description: String {
        offset == 0 ? keyword.rawValue : offset > 0 ? "\(keyword.rawValue) + \(offset)" : "\(keyword.rawValue) - \(-offset)"
    }
}

public struct BaseChain: Sendable, Hashable {
    public var type: ChainType
    public var hook: Hook
    public var priority: Priority

    public init(type: ChainType, hook: Hook, priority: Priority) {
        self.type = type
        self.hook = hook
        self.priority = priority
    }
}

public enum Verdict: Sendable, Hashable {
    case accept
    case drop
    case `return`
    case jump(Name)
    case goto(Name)

    /// The chain this verdict leads to, if any.
    public var target: Name? {
        switch self {
        case .jump(let name), .goto(let name): name
        default: nil
        }
    }
}

/// A packet field a rule reads. Addresses follow the table's family (`ip` or `ip6`).
public enum Selector: Sendable, Hashable {
    case saddr
    case daddr
    /// `meta l4proto`
    case l4proto
    /// `th dport`: the transport header's destination port (TCP, UDP and SCTP alike).
    case thDport
    /// `tcp dport`, `udp dport`, `sctp dport`: needs a preceding `meta l4proto` match.
    case dport(L4Protocol)
    /// `ct original ip daddr`: the destination before DNAT.
    case ctOriginalDaddr
    /// `ct original proto-dst`: the destination port before DNAT; needs a preceding `meta l4proto` match.
    case ctOriginalProtoDst
    /// `ip daddr & 0.0.0.255`: the destination's low `lowBits` bits, the others cleared (which
    /// picks a hairpin bucket, see `RulesetAssembly`). A bit count, not a mask address: every
    /// statement holds its selectors inline, and an address here would make them all larger.
    case maskedDaddr(lowBits: UInt8)

    /// The mask `maskedDaddr(lowBits:)` applies, as an address of `family` (`0.0.0.255`, `::1ff`).
    public static func lowBitsMask(_ bits: UInt8, _ family: Family) -> IPAddress {
        let low: UInt64 = bits >= 64 ? .max : (1 << UInt64(bits)) - 1
        let high: UInt64 = bits <= 64 ? 0 : bits >= 128 ? .max : (1 << UInt64(bits - 64)) - 1
        return family == .ip ? IPAddress(ipv4: UInt32(truncatingIfNeeded: bits >= 32 ? UInt64(UInt32.max) : low)) : IPAddress(ipv6High: high, low: low)
    }
}

/// A value a statement writes: a packet field, or a constant (`10.180.0.1 . 80`).
public enum Operand: Sendable, Hashable {
    case field(Selector)
    case value(KeyValue)

    /// The packet field, when the operand is one.
    public var selector: Selector? { if case .field(let selector) = self { selector } else { nil } }
}

/// `fib` result looked up for a packet address.
public enum FibAddress: Sendable, Hashable {
    case saddr
    case daddr
}

/// One typed statement. A rule is a list of these, all of which must match (matches) before
/// the actions run, in order.
public enum Statement: Sendable, Hashable {
    /// `ip daddr 172.30.0.41`, `ip saddr != 10.0.0.0/8`.
    case address(Selector, CIDR, negated: Bool)
    /// `meta l4proto tcp`.
    case l4proto(L4Protocol)
    /// `ct state new`.
    case ctStateNew
    /// `ct status dnat`: the connection was destination-NATed.
    case ctStatusDNAT
    /// `fib daddr type local`.
    case fibLocal(FibAddress)
    /// `ip saddr . ip daddr @set`.
    case lookup([Selector], set: Name)
    /// `ip daddr . meta l4proto . th dport . ip saddr != @set`: the key is NOT in the set.
    case notInSet([Selector], set: Name)
    /// `ip daddr . meta l4proto . th dport vmap @map`.
    case vmap([Selector], map: Name)
    /// `numgen inc mod N 0`: true once in every N evaluations of this rule.
    case numgenIncZero(modulus: UInt32)
    /// `meta mark & bit == 0`.
    case markBitClear(UInt32)
    /// `meta mark set meta mark | bit`.
    case setMarkBit(UInt32)
    /// `meta mark set meta mark ^ bit`: clears a bit known to be set.
    case toggleMarkBit(UInt32)
    /// `dnat to 10.180.0.1:80`.
    case dnat(IPAddress, port: UInt16)
    /// `dnat to ip saddr . ip daddr . meta l4proto . th dport map @affinity`: DNAT to the address
    /// and port the map holds for this key; no match when the key is absent.
    case dnatMap([Selector], map: Name)
    /// `update @map { key timeout 10800s : data }` (or `timeout 600050ms`): adds an entry to a dynamic set or map, or
    /// restarts the timeout of the entry already there (whose data it leaves as it is). A set
    /// has no data.
    case update(map: Name, key: [Selector], timeoutMilliseconds: UInt32, data: [Operand])
    /// `masquerade fully-random`.
    case masquerade(fullyRandom: Bool)
    /// `reject`: ICMP (or ICMPv6) port unreachable.
    case reject
    case verdict(Verdict)
}

public struct Rule: Sendable, Hashable {
    public var statements: [Statement]
    public var comment: Comment?

    public init(_ statements: [Statement], comment: Comment? = nil) {
        self.statements = statements
        self.comment = comment
    }

    /// Chains this rule jumps or goes to.
    public var targets: [Name] {
        statements.compactMap { if case .verdict(let verdict) = $0 { verdict.target } else { nil } }
    }
}

public struct Chain: Sendable, Hashable {
    public var name: Name
    /// nil for a regular chain.
    public var base: BaseChain?
    public var rules: [Rule]

    public init(_ name: Name, base: BaseChain? = nil, rules: [Rule] = []) {
        self.name = name
        self.base = base
        self.rules = rules
    }
}

/// A set key or map key/data component type.
public enum DataType: String, Sendable, Hashable {
    case ipv4Address = "ipv4_addr"
    case ipv6Address = "ipv6_addr"
    case inetProto = "inet_proto"
    case inetService = "inet_service"

    public static func address(_ family: Family) -> DataType { family == .ip ? .ipv4Address : .ipv6Address }

    /// Bytes the value occupies (before padding to a 4-byte register in a concatenation).
    public var length: Int {
        switch self {
        case .ipv4Address: 4
        case .ipv6Address: 16
        case .inetProto: 1
        case .inetService: 2
        }
    }
}

/// One component of an element key.
public enum KeyValue: Sendable, Hashable, Comparable, CustomStringConvertible {
    case address(IPAddress)
    case proto(L4Protocol)
    case port(UInt16)
    /// An address range, in a set with the `interval` flag.
    case prefix(CIDR)

    public static func < (lhs: KeyValue, rhs: KeyValue) -> Bool {
        switch (lhs, rhs) {
        case (.address(let a), .address(let b)): a < b
        case (.proto(let a), .proto(let b)): a < b
        case (.port(let a), .port(let b)): a < b
        case (.prefix(let a), .prefix(let b)): a < b
        default: lhs.order < rhs.order
        }
    }

    /// As nft writes it: `10.96.0.1`, `tcp`, `80`, `10.0.0.0/8`.
    public var description: String {
        switch self {
        case .address(let ip): ip.description
        case .proto(let proto): proto.description
        case .port(let port): String(port)
        case .prefix(let cidr): cidr.description
        }
    }

    private var order: Int {
        switch self {
        case .address: 0
        case .proto: 1
        case .port: 2
        case .prefix: 3
        }
    }
}

public struct Element: Sendable, Hashable {
    public var key: [KeyValue]
    /// The verdict for a verdict map; nil in a plain set.
    public var verdict: Verdict?
    /// The value in a data map (e.g. an address and port); empty otherwise.
    public var data: [KeyValue]
    public var comment: Comment?

    public init(_ key: [KeyValue], verdict: Verdict? = nil, data: [KeyValue] = [], comment: Comment? = nil) {
        // A one-address range is that address: nft and the kernel store and list both alike,
        // so a read-back cannot tell them apart.
        // Rewritten only when there is such a range: most keys have none, and share the array given.
        var key = key
        for index in key.indices {
            if case .prefix(let cidr) = key[index], cidr.isHost { key[index] = .address(cidr.address) }
        }
        self.key = key
        self.verdict = verdict
        self.data = data
        self.comment = comment
    }
}

/// Set flags nftproxy uses (NFT_SET_INTERVAL, NFT_SET_TIMEOUT, NFT_SET_EVAL).
public struct SetFlags: OptionSet, Sendable, Hashable {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    /// Keys may be ranges (`203.0.113.0/25`).
    public static let interval = SetFlags(rawValue: 1)
    /// Elements expire.
    public static let timeout = SetFlags(rawValue: 2)
    /// The data path adds elements (`update @set`); nftproxy never adds or removes them by diff.
    public static let dynamic = SetFlags(rawValue: 4)
}

/// A named set, or a verdict map when `isMap`.
public struct NamedSet: Sendable, Hashable {
    public var name: Name
    public var key: [DataType]
    /// A verdict map (`: verdict`).
    public var isMap: Bool
    /// A data map's value type (`: ipv4_addr . inet_service`); empty for a set or a verdict map.
    public var data: [DataType]
    public var flags: SetFlags
    /// Maximum number of elements, for a dynamic set; nil = the kernel's default.
    public var size: UInt32?
    public var comment: Comment?
    /// Keyed by `key`: one element per key.
    public var elements: [Element]

    public init(
        _ name: Name, key: [DataType], isMap: Bool = false, data: [DataType] = [], flags: SetFlags = [],
        size: UInt32? = nil, comment: Comment? = nil, elements: [Element] = []
    ) {
        self.name = name
        self.key = key
        self.isMap = isMap
        self.data = data
        self.flags = flags
        self.size = size
        self.comment = comment
        self.elements = elements
    }

    /// Whether the data path owns the elements (they are never diffed).
    public var isDynamic: Bool { flags.contains(.dynamic) }
}

public struct Table: Sendable, Hashable {
    public var family: Family
    public var name: Name
    public var comment: Comment?
    /// In the order they are created (and listed by the kernel).
    public var sets: [NamedSet]
    public var chains: [Chain]

    public init(family: Family, name: Name, comment: Comment? = nil, sets: [NamedSet] = [], chains: [Chain] = []) {
        self.family = family
        self.name = name
        self.comment = comment
        self.sets = sets
        self.chains = chains
    }

    public func chain(_ name: Name) -> Chain? { chains.first { $0.name == name } }
    public func set(_ name: Name) -> NamedSet? { sets.first { $0.name == name } }
}

/// What nftproxy wants in the kernel: its tables, plus notes for the rendered header.
public struct Ruleset: Sendable, Hashable {
    public var tables: [Table]

    public init(tables: [Table] = []) { self.tables = tables }

    /// The node-wide `nftproxy` table of a family.
    public func table(_ family: Family) -> Table? { tables.first { $0.family == family && $0.name == Naming.table } }

    /// A chain of a family, whichever of nftproxy's tables holds it.
    public func chain(_ family: Family, _ name: Name) -> Chain? {
        for table in tables where table.family == family {
            if let chain = table.chain(name) { return chain }
        }
        return nil
    }

    /// The elements of a set or map of a family, from every table that has it (each shard
    /// has its own `service-ips`, for instance), in table order.
    public func elements(_ family: Family, _ set: Name) -> [Element] {
        tables.filter { $0.family == family }.flatMap { $0.set(set)?.elements ?? [] }
    }
}
