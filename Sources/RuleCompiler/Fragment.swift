import NftIR
import ServiceModel

/// Everything one Service contributes to the ruleset: its chains (in its shard table), its
/// elements in shared sets and maps, and what the agent needs to know about it. A fragment
/// depends only on the service, its backends and the node, so a change to one service
/// recompiles one fragment.
public struct ServiceFragment: Sendable, Hashable {
    public struct PlacedChain: Sendable, Hashable {
        public var table: TableRef
        public var chain: Chain
    }

    /// An element of a shared set or map, and whether a second claimant of its key is a problem
    /// (a map entry: one service wins) or simply shares it (a plain set: the same address twice).
    public struct PlacedElement: Sendable, Hashable {
        public var table: TableRef
        public var set: Name
        public var element: Element
        public var exclusive: Bool
    }

    public var service: ObjectRef
    public var chains: [PlacedChain] = []
    /// In the order the service's ports claim them: on a conflict the first claim wins.
    public var elements: [PlacedElement] = []
    public var problems: [Problem] = []
    /// Why the service has no rules (headless, ExternalName).
    public var note: String?
    public var healthCheck: HealthCheck?
    public var udpPorts: [UDPServicePort] = []
    /// Local policies with endpoints elsewhere and none here (internal, external).
    public var noLocalEndpoints: (internal: Bool, external: Bool) = (false, false)
    public var affinityDestinations: [Family: [[KeyValue]: Set<[KeyValue]>]] = [:]
    public var affinityNodePorts: [Family: [[KeyValue]: Set<[KeyValue]>]] = [:]

    public init(service: ObjectRef) { self.service = service }

    /// The tables this fragment puts chains or elements in.
    var tables: Set<TableRef> { Set(chains.map(\.table) + elements.map(\.table)) }

    public static func == (lhs: ServiceFragment, rhs: ServiceFragment) -> Bool {
        lhs.service == rhs.service && lhs.chains == rhs.chains && lhs.elements == rhs.elements && lhs.problems == rhs.problems
            && lhs.note == rhs.note && lhs.healthCheck == rhs.healthCheck && lhs.udpPorts == rhs.udpPorts
            && lhs.noLocalEndpoints == rhs.noLocalEndpoints && lhs.affinityDestinations == rhs.affinityDestinations
            && lhs.affinityNodePorts == rhs.affinityNodePorts
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(service)
        hasher.combine(chains)
        hasher.combine(elements)
    }
}

/// Compiles one service's chains and elements for one family.
struct FragmentBuilder {
    let family: Family
    let facts: NodeFacts
    /// The node-wide table, and the service's shard table.
    let main: TableRef
    let shard: TableRef

    init(family: IPFamily, facts: NodeFacts, shard: Name) {
        self.family = Family(family)
        self.facts = facts
        main = TableRef(Family(family), Naming.table)
        self.shard = TableRef(Family(family), shard)
    }

    private var ipFamily: IPFamily { family.ipFamily }
    private var mark: UInt32 { facts.masqueradeMark }

    private var chains: [ServiceFragment.PlacedChain] = []
    private var elements: [ServiceFragment.PlacedElement] = []
    private var problems: [Problem] = []
    private var affinityDestinations: [[KeyValue]: Set<[KeyValue]>] = [:]
    private var affinityNodePorts: [[KeyValue]: Set<[KeyValue]>] = [:]

    mutating func add(_ service: Service, backends: [ServicePortName: [Backend]], into fragment: inout ServiceFragment) {
        guard let clusterIP = service.clusterIP(ipFamily) else { return }
        let externalIPs = service.externalIPs.filter { $0.family == ipFamily }
        let loadBalancerIPs = service.loadBalancerIngress
            .filter { $0.ip.family == ipFamily && $0.ipMode != .proxy }
            .map(\.ip)
        for port in service.ports {
            let portName = ServicePortName(namespace: service.namespace, name: service.name, port: port.name, protocol: port.protocol)
            guard let (serviceChain, localChain, externalChain) = Naming.portChains(portName, number: port.port) else {
                problems.append(Problem(object: service.ref, field: "spec.ports", message: "port \(portName) makes an invalid chain name, skipped"))
                continue
            }
            let all = FragmentBuilder.sorted(backends[portName] ?? [], family: ipFamily)
            let lists = EndpointLists(all, nodeName: facts.nodeName, zone: facts.zone)
            let externallyReachable = port.nodePort != 0 || !externalIPs.isEmpty || !loadBalancerIPs.isEmpty
            let usesCluster = service.internalTrafficPolicy == .cluster || externallyReachable
            let usesLocal = service.internalTrafficPolicy == .local || (externallyReachable && service.externalTrafficPolicy == .local)
            let hasInternal = lists.hasAny && (service.internalTrafficPolicy == .cluster || !lists.local.isEmpty)
            let hasExternal = lists.hasAny && (service.externalTrafficPolicy == .cluster || !lists.local.isEmpty)
            let noEndpointVerdict: Verdict = lists.hasAny ? .drop : .goto(Naming.rejectChain)
            let comment = Comment(portName.description)
            let proto = KeyValue.proto(port.protocol)

            place(main, Naming.clusterIPs, Element([.address(clusterIP)]))
            let internalTarget = service.internalTrafficPolicy == .local ? localChain : serviceChain
            let clusterKey: [KeyValue] = [.address(clusterIP), proto, .port(port.port)]
            if hasInternal {
                claim(shard, Naming.serviceIPs, Element(clusterKey, verdict: .goto(internalTarget), comment: comment))
            } else {
                claim(main, Naming.noEndpointServices, Element(clusterKey, verdict: noEndpointVerdict, comment: comment))
            }
            for ip in externalIPs + loadBalancerIPs {
                let key: [KeyValue] = [.address(ip), proto, .port(port.port)]
                if lists.hasAny {
                    claim(shard, Naming.serviceIPs, Element(key, verdict: .goto(externalChain), comment: comment))
                }
                if !hasExternal {
                    claim(main, Naming.noEndpointServices, Element(key, verdict: noEndpointVerdict, comment: comment))
                }
            }
            if port.nodePort != 0 {
                let key: [KeyValue] = [proto, .port(port.nodePort)]
                if lists.hasAny {
                    claim(shard, Naming.serviceNodePorts, Element(key, verdict: .goto(externalChain), comment: comment))
                }
                if !hasExternal {
                    claim(main, Naming.noEndpointNodePorts, Element(key, verdict: noEndpointVerdict, comment: comment))
                }
            }

            // loadBalancerSourceRanges: new connections to the LB IPs from elsewhere are dropped
            // before DNAT. If a range holds this node's IP, the LB IPs themselves are allowed too
            // (a VIP load balancer loops node traffic back with the LB IP as source).
            let ranges = service.loadBalancerSourceRanges.filter { $0.family == ipFamily }
            if !ranges.isEmpty && !loadBalancerIPs.isEmpty {
                var allowed = ranges
                if let nodeIP = facts.primaryIPs[ipFamily], ranges.contains(where: { $0.contains(nodeIP) }) {
                    allowed += loadBalancerIPs.map(host)
                }
                let sources = FragmentBuilder.outermost(allowed).map(KeyValue.prefix)
                for ip in loadBalancerIPs {
                    let key: [KeyValue] = [.address(ip), proto, .port(port.port)]
                    claim(main, Naming.firewallIPs, Element(key, comment: comment))
                    for source in sources { place(main, Naming.firewallAllow, Element(key + [source])) }
                }
            }

            // Session affinity, recorded as the backend is chosen (see `affinityRules`).
            var affinity: UInt32?
            if case .clientIP(let timeout) = service.sessionAffinity, lists.hasAny {
                affinity = UInt32(timeout)
                let targets = Set((lists.cluster + lists.local).map { [KeyValue.address($0.address), .port($0.port)] })
                for ip in [clusterIP] + externalIPs + loadBalancerIPs {
                    affinityDestinations[[.address(ip), proto, .port(port.port)], default: []].formUnion(targets)
                }
                if port.nodePort != 0 {
                    affinityNodePorts[[proto, .port(port.nodePort)], default: []].formUnion(targets)
                }
            }

            if lists.hasAny && usesCluster {
                let masquerade = service.internalTrafficPolicy == .cluster ? internalMasquerade(clusterIP) : nil
                addChain(Chain(serviceChain, rules: balance(lists.cluster, port.protocol, affinity: affinity, after: masquerade)))
            }
            if !lists.local.isEmpty && usesLocal {
                let masquerade = service.internalTrafficPolicy == .local ? internalMasquerade(clusterIP) : nil
                addChain(Chain(localChain, rules: balance(lists.local, port.protocol, affinity: affinity, after: masquerade)))
            }
            if lists.hasAny && externallyReachable {
                addChain(Chain(externalChain, rules: externalRules(service, serviceChain: serviceChain, localChain: lists.local.isEmpty ? nil : localChain)))
            }
            placeHairpins(lists)
        }
        // Shared, not copied, into a fragment that has none yet (the first family).
        if fragment.chains.isEmpty { fragment.chains = chains } else { fragment.chains += chains }
        if fragment.elements.isEmpty { fragment.elements = elements } else { fragment.elements += elements }
        fragment.problems += problems
        if !affinityDestinations.isEmpty { fragment.affinityDestinations[family] = affinityDestinations }
        if !affinityNodePorts.isEmpty { fragment.affinityNodePorts[family] = affinityNodePorts }
    }

    /// The backends of one family in order, sharing the given list when it is already that.
    static func sorted(_ backends: [Backend], family: IPFamily) -> [Backend] {
        let ofFamily = backends.indices.allSatisfy { backends[$0].address.family == family } ? backends : backends.filter { $0.address.family == family }
        return ofFamily.isSorted() ? ofFamily : ofFamily.sorted()
    }

    /// Hairpin elements for the endpoints of both lists that are on this node (or of unknown
    /// node): only those can send through this node to themselves. Each address once: most local
    /// endpoints are in both lists, and both are in address order.
    private mutating func placeHairpins(_ lists: EndpointLists) {
        let (cluster, local) = (lists.cluster, lists.local)
        var (inCluster, inLocal) = (0, 0)
        var last: IPAddress?
        while inCluster < cluster.count || inLocal < local.count {
            let fromCluster = inLocal == local.count || (inCluster < cluster.count && cluster[inCluster].address <= local[inLocal].address)
            let (address, nodeName) = fromCluster
                ? (cluster[inCluster].address, cluster[inCluster].nodeName) : (local[inLocal].address, local[inLocal].nodeName)
            if fromCluster { inCluster += 1 } else { inLocal += 1 }
            guard nodeName == nil || nodeName == facts.nodeName, address != last else { continue }
            last = address
            place(main, Naming.hairpin, Element([.address(address), .address(address)]))
        }
    }

    /// Claims a map key for a service port. If another service port holds it too, the first in
    /// service order keeps it and the assembly reports the other (`RulesetAssembly.compilation`).
    private mutating func claim(_ table: TableRef, _ map: Name, _ element: Element) {
        elements.append(ServiceFragment.PlacedElement(table: table, set: map, element: element, exclusive: true))
    }

    /// Adds an element to a plain set, which services may share (an address twice is one element).
    private mutating func place(_ table: TableRef, _ set: Name, _ element: Element) {
        elements.append(ServiceFragment.PlacedElement(table: table, set: set, element: element, exclusive: false))
    }

    private mutating func addChain(_ chain: Chain) {
        chains.append(ServiceFragment.PlacedChain(table: shard, chain: chain))
    }

    /// Marks off-cluster clients of a ClusterIP (or every client, with masqueradeAll) for masquerade.
    private func internalMasquerade(_ clusterIP: IPAddress) -> Rule? {
        let destination = Statement.address(.daddr, host(clusterIP), negated: false)
        if facts.masqueradeAll {
            return Rule([destination, .setMarkBit(mark)])
        }
        guard let cidr = facts.clusterCIDR[ipFamily] else { return nil }
        return Rule([destination, .address(.saddr, cidr, negated: true), .setMarkBit(mark)])
    }

    /// A chain's rules: `first` (the masquerade mark), if any, then the load balancing.
    private func balance(_ backends: [Backend], _ proto: L4Protocol, affinity timeout: UInt32?, after first: Rule?) -> [Rule] {
        guard let timeout else { return roundRobin(backends, proto, after: first) }
        return (first.map { [$0] } ?? []) + affinityRules(backends, proto, timeout: timeout)
    }

    /// Rule i of N hands out backend i once in every N - i packets that reach it; the last rule
    /// takes the rest. Each `numgen inc` keeps its own counter, so backends are served in turn.
    private func roundRobin(_ backends: [Backend], _ proto: L4Protocol, after first: Rule?) -> [Rule] {
        // Built in place: a cluster has a rule per endpoint, each worth one allocation.
        var rules: [Rule] = []
        rules.reserveCapacity(backends.count + 1)
        if let first { rules.append(first) }
        for (index, backend) in backends.enumerated() {
            let remaining = backends.count - index
            var statements: [Statement] = []
            statements.reserveCapacity(3)
            if remaining > 1 { statements.append(.numgenIncZero(modulus: UInt32(remaining))) }
            statements.append(.l4proto(proto))
            statements.append(.dnat(backend.address, port: backend.port))
            rules.append(Rule(statements))
        }
        return rules
    }

    /// ClientIP session affinity, recorded at DNAT time in two dynamic sets of the shard, keyed by
    /// client . destination . protocol . port (before DNAT: the address and port the client used):
    /// `affinity-clients` (timeout T) says the client's entry is current, `affinity` (T + 100 ms)
    /// holds its backend. Every new connection restarts both timeouts, as kube-proxy's does.
    ///
    /// - A known client: refresh both, DNAT to the recorded backend. nft 1.0.6 cannot write a
    ///   map's own lookup as the data of an `update`, and an `update` never replaces the data of
    ///   an entry that is there, so the refresh writes a placeholder: since `affinity` outlives
    ///   `affinity-clients` by 100 ms (several jiffies, where a rule runs in microseconds; and a
    ///   whole number of them at HZ 100, 250, 300 and 1000, so the kernel's timeout reads back
    ///   as written), the entry is there and the placeholder never lands.
    /// - A new client: the round-robin cascade, each arm recording its backend, then DNAT to
    ///   what `affinity` holds: the arm's backend, or the previous one within its last 100 ms (so
    ///   in effect the timeout is T + 100 ms, where kube-proxy's is T).
    /// - If a set is full the update fails and the cascade falls through to a plain DNAT to the
    ///   last backend, so connections still go somewhere.
    private func affinityRules(_ backends: [Backend], _ proto: L4Protocol, timeout: UInt32) -> [Rule] {
        let key: [Selector] = [.saddr, .daddr, .l4proto, .thDport]
        func record(_ data: [Operand]) -> [Statement] {
            [.update(map: Naming.affinityClients, key: key, timeoutMilliseconds: timeout * 1000, data: []),
             .update(map: Naming.affinity, key: key, timeoutMilliseconds: timeout * 1000 + 100, data: data),
             .dnatMap(key, map: Naming.affinity)]
        }
        var rules = [Rule([.lookup(key, set: Naming.affinityClients)] + record([.field(.daddr), .field(.thDport)]))]
        for (index, backend) in backends.enumerated() {
            let remaining = backends.count - index
            let pick: [Statement] = remaining > 1 ? [.numgenIncZero(modulus: UInt32(remaining))] : []
            rules.append(Rule(pick + record([.value(.address(backend.address)), .value(.port(backend.port))])))
        }
        if let last = backends.last {
            rules.append(Rule([.l4proto(proto), .dnat(last.address, port: last.port)], comment: Comment("session affinity sets full")))
        }
        return rules
    }

    private func externalRules(_ service: Service, serviceChain: Name, localChain: Name?) -> [Rule] {
        guard service.externalTrafficPolicy == .local else {
            return [Rule([.setMarkBit(mark)]), Rule([.verdict(.goto(serviceChain))])]
        }
        var rules: [Rule] = []
        if let cidr = facts.clusterCIDR[ipFamily] {
            rules.append(Rule([.address(.saddr, cidr, negated: false), .verdict(.goto(serviceChain))], comment: Comment("short-circuit pod traffic")))
        }
        rules.append(Rule([.fibLocal(.saddr), .setMarkBit(mark)], comment: Comment("masquerade local traffic")))
        rules.append(Rule([.fibLocal(.saddr), .verdict(.goto(serviceChain))], comment: Comment("short-circuit local traffic")))
        if let localChain { rules.append(Rule([.verdict(.goto(localChain))])) }
        return rules
    }

    /// The ranges that no other range contains: an interval set refuses overlapping elements
    /// (EEXIST), and a contained range allows nothing more.
    static func outermost(_ ranges: [CIDR]) -> [CIDR] {
        var kept: [CIDR] = []
        for range in Set(ranges).sorted(by: { ($0.prefixLength, $0) < ($1.prefixLength, $1) }) where
            !kept.contains(where: { $0.prefixLength <= range.prefixLength && $0.contains(range.address) }) {
            kept.append(range)
        }
        return kept
    }

    private func host(_ ip: IPAddress) -> CIDR { CIDR(address: ip, prefixLength: ip.family.maxPrefixLength)! }
}
