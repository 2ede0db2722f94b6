import ServiceModel

/// What the compiler needs to know about this node, resolved once from the configuration and
/// the Node object of the state.
public struct NodeFacts: Sendable, Hashable {
    public var nodeName: String
    /// This node's IPs per family: the configured ones, else the Node object's addresses.
    public var nodeIPs: [IPFamily: [IPAddress]]
    /// The primary IP per family (first configured, else the Node's first InternalIP).
    public var primaryIPs: [IPFamily: IPAddress]
    /// Addresses that accept NodePort traffic, per family; nil = every local address (`fib daddr type local`).
    public var nodePortIPs: [IPFamily: [IPAddress]?]
    /// The local-traffic detector per family (the first `clusterCIDR` of that family); nil = none.
    public var clusterCIDR: [IPFamily: CIDR]
    public var serviceCIDRs: [IPFamily: [CIDR]]
    /// `topology.kubernetes.io/zone` of this node.
    public var zone: String?
    public var masqueradeAll: Bool
    public var masqueradeMark: UInt32
    /// Facts that could not be used, for the render header.
    public var notes: [String]

    public init(config: NodeConfig, state: ClusterState) {
        nodeName = config.nodeName
        masqueradeAll = config.masqueradeAll
        masqueradeMark = config.masqueradeMark
        notes = []
        let node = state.nodes.first { $0.name == config.nodeName }
        zone = node?.labels["topology.kubernetes.io/zone"]
        nodeIPs = [:]
        primaryIPs = [:]
        nodePortIPs = [:]
        clusterCIDR = [:]
        serviceCIDRs = [:]
        let stateCIDRs = state.serviceCIDRs.flatMap(\.cidrs)
        for family in IPFamily.allCases {
            let configured = config.nodeIPs.filter { $0.family == family }
            let fromNode = node?.addresses.map(\.address).filter { $0.family == family } ?? []
            let all = configured.isEmpty ? fromNode : configured
            nodeIPs[family] = all
            primaryIPs[family] = configured.first ?? node?.primaryIP(family)

            let selectors = config.nodePortAddresses.isEmpty ? [.primary] : config.nodePortAddresses
            if selectors.contains(where: { if case .cidr(let c) = $0 { c.family == family && c.prefixLength == 0 } else { false } }) {
                nodePortIPs[family] = .some(nil)
            } else {
                var chosen: [IPAddress] = []
                for selector in selectors {
                    switch selector {
                    case .primary:
                        if let primary = primaryIPs[family] { chosen.append(primary) }
                    case .cidr(let cidr):
                        chosen += (all + fromNode).filter { cidr.contains($0) }
                    }
                }
                let loopback = chosen.filter(\.isLoopback)
                if !loopback.isEmpty {
                    notes.append("nodePortAddresses: loopback \(loopback.map(\.description).joined(separator: ", ")) cannot serve NodePorts, ignored")
                }
                var seen = Set<IPAddress>()
                nodePortIPs[family] = .some(chosen.filter { !$0.isLoopback && seen.insert($0).inserted })
            }

            let cidrs = config.clusterCIDRs.filter { $0.family == family }
            clusterCIDR[family] = cidrs.first
            if cidrs.count > 1 {
                notes.append("clusterCIDR: only the first \(family) CIDR (\(cidrs[0])) detects local traffic")
            }
            var seenCIDRs = Set<CIDR>()
            serviceCIDRs[family] = (config.serviceCIDRs + stateCIDRs).filter { $0.family == family && seenCIDRs.insert($0).inserted }
        }
    }

    /// Whether the node has anything of this family to program.
    public func uses(_ family: IPFamily) -> Bool {
        !(nodeIPs[family] ?? []).isEmpty || clusterCIDR[family] != nil || !(serviceCIDRs[family] ?? []).isEmpty
    }
}
