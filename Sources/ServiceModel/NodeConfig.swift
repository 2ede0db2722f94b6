/// Node facts: what kube-proxy reads from flags or a `KubeProxyConfiguration`.

public enum NodePortAddress: Sendable, Hashable, CustomStringConvertible {
    /// The node's primary IP(s): the nftables-mode default.
    case primary
    case cidr(CIDR)

    public var description: String {
        switch self {
        case .primary: "primary"
        case .cidr(let cidr): cidr.description
        }
    }
}

public struct NodeConfig: Sendable, Hashable {
    /// `hostnameOverride`: decides which endpoints are local.
    public var nodeName: String
    /// This node's IPs (from `bindAddress` / `--node-ip`); empty = take them from the Node object.
    public var nodeIPs: [IPAddress]
    /// `clusterCIDR` (comma-separated in the file): the local-traffic detector. Empty = no detector.
    public var clusterCIDRs: [CIDR]
    /// `nodePortAddresses`; empty means `primary`.
    public var nodePortAddresses: [NodePortAddress]
    /// `masqueradeAll` (also read from `nftables.masqueradeAll`).
    public var masqueradeAll: Bool
    /// `nftables.masqueradeBit`, 0...31, default 14 (mark 0x4000).
    public var masqueradeBit: Int
    /// Service CIDRs from `--service-cidr`; ServiceCIDR objects in the state add to these.
    public var serviceCIDRs: [CIDR]
    /// `nftables.syncPeriod` in seconds (default 30).
    public var syncPeriod: Double
    /// `nftables.minSyncPeriod` in seconds (default 1).
    public var minSyncPeriod: Double
    /// `healthzBindAddress`, default `0.0.0.0:10256`.
    public var healthzBindAddress: String
    /// `metricsBindAddress`, default `127.0.0.1:10249`; empty disables metrics.
    public var metricsBindAddress: String
    /// How many tables services are spread over (nftproxy's own setting, `--table-shards`);
    /// nil = chosen from the number of services.
    public var tableShards: Int?

    public init(
        nodeName: String = "", nodeIPs: [IPAddress] = [], clusterCIDRs: [CIDR] = [],
        nodePortAddresses: [NodePortAddress] = [], masqueradeAll: Bool = false, masqueradeBit: Int = 14,
        serviceCIDRs: [CIDR] = [], syncPeriod: Double = 30, minSyncPeriod: Double = 1,
        healthzBindAddress: String = "0.0.0.0:10256", metricsBindAddress: String = "127.0.0.1:10249",
        tableShards: Int? = nil
    ) {
        self.nodeName = nodeName
        self.nodeIPs = nodeIPs
        self.clusterCIDRs = clusterCIDRs
        self.nodePortAddresses = nodePortAddresses
        self.masqueradeAll = masqueradeAll
        self.masqueradeBit = masqueradeBit
        self.serviceCIDRs = serviceCIDRs
        self.syncPeriod = syncPeriod
        self.minSyncPeriod = minSyncPeriod
        self.healthzBindAddress = healthzBindAddress
        self.metricsBindAddress = metricsBindAddress
        self.tableShards = tableShards
    }

    /// The packet-mark bit used to ask for masquerade.
    public var masqueradeMark: UInt32 { 1 << UInt32(masqueradeBit) }
}

/// An invalid configuration value: the CLI prints it and exits 2.
public struct ConfigError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The field as the user spelled it: a config-file path (`nftables.masqueradeBit`) or a flag (`--cluster-cidr`).
    public var field: String
    public var message: String

    public init(field: String, message: String) {
        self.field = field
        self.message = message
    }

    public var description: String { "invalid configuration: \(field): \(message)" }
}

/// One backend of one service port: an endpoint address and the port traffic is sent to.
public struct Backend: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var address: IPAddress
    public var port: UInt16
    public var conditions: EndpointConditions
    public var nodeName: String?
    public var zone: String?
    public var hintZones: [String]?
    public var hintNodes: [String]?

    public init(
        address: IPAddress, port: UInt16, conditions: EndpointConditions = EndpointConditions(),
        nodeName: String? = nil, zone: String? = nil, hintZones: [String]? = nil, hintNodes: [String]? = nil
    ) {
        self.address = address
        self.port = port
        self.conditions = conditions
        self.nodeName = nodeName
        self.zone = zone
        self.hintZones = hintZones
        self.hintNodes = hintNodes
    }

    public var description: String {
        address.family == .ipv4 ? "\(address):\(port)" : "[\(address)]:\(port)"
    }

    /// Backends are ordered by address, then port: the round-robin order is stable across runs.
    public static func < (lhs: Backend, rhs: Backend) -> Bool {
        lhs.address != rhs.address ? lhs.address < rhs.address : lhs.port < rhs.port
    }
}

extension Array where Element == Backend {
    /// Whether the backends are in order, and with `strictly` also each a different address and
    /// port. Reads only addresses and ports, by index: a copy of a backend costs reference counts.
    public func isSorted(strictly: Bool = false) -> Bool {
        indices.dropFirst().allSatisfy {
            let (before, after) = ((self[$0 - 1].address, self[$0 - 1].port), (self[$0].address, self[$0].port))
            return strictly ? before < after : before <= after
        }
    }
}

/// Identifies one port of one Service (`ns/name`, port name, protocol).
public struct ServicePortName: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var namespace: String
    public var name: String
    public var port: String
    public var `protocol`: L4Protocol

    public init(namespace: String, name: String, port: String, protocol: L4Protocol) {
        self.namespace = namespace
        self.name = name
        self.port = port
        self.protocol = `protocol`
    }

    /// `ns/name:port` (or `ns/name` for an unnamed port), as kube-proxy prints it.
    public var description: String { port.isEmpty ? "\(namespace)/\(name)" : "\(namespace)/\(name):\(port)" }

    public static func < (lhs: ServicePortName, rhs: ServicePortName) -> Bool {
        (lhs.namespace, lhs.name, lhs.port, lhs.protocol.rawValue) < (rhs.namespace, rhs.name, rhs.port, rhs.protocol.rawValue)
    }
}
