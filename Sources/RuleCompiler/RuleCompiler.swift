import NftIR
import ServiceModel

/// What one compile produced: the rules, and what the operator should be told about them.
public struct Compilation: Sendable {
    public var ruleset: Ruleset
    /// Objects skipped or ignored (from decoding and from compiling).
    public var problems: [Problem]
    /// Services that deliberately produce no rules, and other facts worth a comment.
    public var notes: [String]
    /// eTP=Local services with a healthCheckNodePort, for the agent's health-check servers.
    public var healthChecks: [HealthCheck]
    /// Which backends each ClientIP-affinity destination may pin a client to.
    public var affinity: AffinityTargets
    /// Every UDP service port with its destinations and serving endpoints, for conntrack cleanup.
    public var udpPorts: [UDPServicePort]
    /// Services with a Local traffic policy that have endpoints, but none on this node
    /// (kube-proxy's `sync_proxy_rules_no_local_endpoints_total`), per policy.
    public var noLocalEndpoints: (internal: Int, external: Int) = (0, 0)
}

/// A UDP service port as conntrack cleanup sees it: where clients send, and which endpoint
/// addresses may answer. Conntrack entries to these destinations whose reply comes from any
/// other address are stale (a removed endpoint, or a flow recorded while there was none).
public struct UDPServicePort: Sendable, Hashable {
    public var name: ServicePortName
    public var family: IPFamily
    /// ClusterIP, externalIPs and LoadBalancer IPs, with the service port.
    public var destinations: [IPAddress]
    public var port: UInt16
    /// 0 when the port has no NodePort.
    public var nodePort: UInt16
    /// Addresses of serving endpoints (ready, or serving while terminating), whatever the policies.
    public var servingEndpoints: Set<IPAddress>
}

/// The backends a session-affinity entry may point at, per original destination. An entry whose
/// backend is not listed (gone, or the service lost affinity) is stale and gets deleted.
public struct AffinityTargets: Sendable, Hashable {
    /// `[address, proto, port]` of ClusterIPs, externalIPs and LoadBalancer IPs → backends `[address, port]`.
    var destinations: [Family: [[KeyValue]: Set<[KeyValue]>]] = [:]
    /// `[proto, nodePort]` → backends.
    var nodePorts: [Family: [[KeyValue]: Set<[KeyValue]>]] = [:]

    /// Whether an element of the `affinity` map (client . destination . proto . port → backend) is still good.
    public func keeps(_ family: Family, _ element: Element) -> Bool {
        guard element.key.count == 4 else { return false }
        let destination = Array(element.key[1...3])
        if destinations[family]?[destination]?.contains(element.data) == true { return true }
        return nodePorts[family]?[Array(element.key[2...3])]?.contains(element.data) == true
    }
}

/// What a load balancer's health check of an eTP=Local service should learn from this node.
public struct HealthCheck: Sendable, Hashable {
    public var service: ObjectRef
    public var nodePort: UInt16
    /// Distinct IPs of this node's ready endpoints (terminating ones do not count).
    public var localEndpoints: Int
}

/// Turns cluster state and node facts into nftproxy's ruleset. Pure: no I/O, no clock.
///
/// Layout (see DESIGN.md, "What the kernel charges"): a fixed handful of sets and maps per
/// family, each possibly huge, bound from a fixed number of rules. Every service port owns a
/// few chains; a change to one service rewrites only its chains and elements.
public enum RuleCompiler {
    public static func compile(_ state: ClusterState, config: NodeConfig) -> Compilation {
        let facts = NodeFacts(config: config, state: state)
        var problems = state.problems
        var notes = facts.notes
        var serviceKinds: [(Service, [ServicePortName: [Backend]])] = []
        var healthChecks: [HealthCheck] = []
        var udpPorts: [UDPServicePort] = []
        var noLocal = (internal: 0, external: 0)
        let index = EndpointIndex(state)
        for service in state.services.sorted(by: { ($0.namespace, $0.name) < ($1.namespace, $1.name) }) {
            if service.type == .externalName {
                notes.append("\(service.ref): type ExternalName, no rules (DNS only)")
                continue
            }
            if service.isHeadless || service.clusterIPs.isEmpty {
                notes.append("\(service.ref): headless (clusterIP None), no rules")
                continue
            }
            let resolved = index.backends(for: service)
            problems += resolved.problems
            serviceKinds.append((service, resolved.ports))
            for port in service.ports where port.protocol == .udp {
                let name = ServicePortName(namespace: service.namespace, name: service.name, port: port.name, protocol: .udp)
                for family in IPFamily.allCases {
                    guard let clusterIP = service.clusterIP(family) else { continue }
                    let serving = (resolved.ports[name] ?? []).filter { $0.address.family == family && $0.conditions.serving }
                    let others = (service.externalIPs + service.loadBalancerIngress.map(\.ip)).filter { $0.family == family }
                    udpPorts.append(UDPServicePort(name: name, family: family, destinations: [clusterIP] + others, port: port.port,
                                                   nodePort: port.nodePort, servingEndpoints: Set(serving.map(\.address))))
                }
            }
            let lists = resolved.ports.values.map { EndpointLists($0, nodeName: config.nodeName, zone: nil) }
            if lists.contains(where: \.hasAny) && !lists.contains(where: { !$0.local.isEmpty }) {
                let external = service.type == .nodePort || service.type == .loadBalancer || !service.externalIPs.isEmpty
                if service.internalTrafficPolicy == .local { noLocal.internal += 1 }
                if service.externalTrafficPolicy == .local && external { noLocal.external += 1 }
            }
            if service.externalTrafficPolicy == .local && service.healthCheckNodePort != 0 {
                let local = resolved.ports.values.joined().filter {
                    $0.conditions.ready && !$0.conditions.terminating && !config.nodeName.isEmpty && $0.nodeName == config.nodeName
                }
                healthChecks.append(HealthCheck(service: service.ref, nodePort: service.healthCheckNodePort,
                                                localEndpoints: Set(local.map(\.address)).count))
            }
        }

        var tables: [Table] = []
        var affinity = AffinityTargets()
        for family in IPFamily.allCases {
            let hasServices = serviceKinds.contains { $0.0.clusterIP(family) != nil }
            guard hasServices || facts.uses(family) else { continue }
            var builder = TableBuilder(family: family, facts: facts)
            for (service, ports) in serviceKinds {
                builder.add(service, backends: ports)
            }
            problems += builder.problems
            affinity.destinations[builder.family] = builder.affinityDestinations
            affinity.nodePorts[builder.family] = builder.affinityNodePorts
            tables.append(builder.table())
        }
        return Compilation(ruleset: Ruleset(tables: tables), problems: problems, notes: notes, healthChecks: healthChecks,
                           affinity: affinity, udpPorts: udpPorts, noLocalEndpoints: noLocal)
    }
}

/// Which endpoints serve a service port, after conditions, topology and policies
/// (kube-proxy's `CategorizeEndpoints`).
struct EndpointLists {
    /// Endpoints for cluster-wide traffic: ready ones (narrowed by topology hints), else
    /// serving-and-terminating ones.
    var cluster: [Backend]
    /// This node's endpoints: local ready ones, else local serving-and-terminating ones.
    var local: [Backend]
    /// Some endpoint anywhere is ready, or serving while terminating.
    var hasAny: Bool

    init(_ backends: [Backend], nodeName: String, zone: String?) {
        let ready = backends.filter(\.conditions.ready)
        let fallback = backends.filter { $0.conditions.serving && $0.conditions.terminating }
        cluster = ready.isEmpty ? fallback : EndpointLists.topologyFiltered(ready, nodeName: nodeName, zone: zone)
        let mine = backends.filter { !nodeName.isEmpty && $0.nodeName == nodeName }
        let localReady = mine.filter(\.conditions.ready)
        local = localReady.isEmpty ? mine.filter { $0.conditions.serving && $0.conditions.terminating } : localReady
        hasAny = !cluster.isEmpty
    }

    /// Hints count only when every ready endpoint has them and at least one names this node
    /// (forNodes) or this node's zone (forZones); otherwise all ready endpoints are used.
    static func topologyFiltered(_ ready: [Backend], nodeName: String, zone: String?) -> [Backend] {
        if !nodeName.isEmpty, ready.allSatisfy({ $0.hintNodes != nil }) {
            let forNode = ready.filter { $0.hintNodes?.contains(nodeName) == true }
            if !forNode.isEmpty { return forNode }
        }
        if let zone, ready.allSatisfy({ $0.hintZones != nil }) {
            let forZone = ready.filter { $0.hintZones?.contains(zone) == true }
            if !forZone.isEmpty { return forZone }
        }
        return ready
    }
}

/// Builds one family's table, service port by service port.
struct TableBuilder {
    let family: Family
    let facts: NodeFacts
    private(set) var problems: [Problem] = []

    private var clusterIPs: Set<IPAddress> = []
    /// Elements of the verdict maps, by map name and key.
    private var maps: [Name: [[KeyValue]: Element]] = [:]
    private var hairpin: Set<IPAddress> = []
    private var firewallAllow: Set<[KeyValue]> = []
    private var chains: [Chain] = []
    private(set) var affinityDestinations: [[KeyValue]: Set<[KeyValue]>] = [:]
    private(set) var affinityNodePorts: [[KeyValue]: Set<[KeyValue]>] = [:]

    init(family: IPFamily, facts: NodeFacts) {
        self.family = Family(family)
        self.facts = facts
    }

    private var ipFamily: IPFamily { family.ipFamily }
    private var mark: UInt32 { facts.masqueradeMark }

    mutating func add(_ service: Service, backends: [ServicePortName: [Backend]]) {
        guard let clusterIP = service.clusterIP(ipFamily) else { return }
        let externalIPs = service.externalIPs.filter { $0.family == ipFamily }
        let loadBalancerIPs = service.loadBalancerIngress
            .filter { $0.ip.family == ipFamily && $0.ipMode != .proxy }
            .map(\.ip)
        for port in service.ports {
            let portName = ServicePortName(namespace: service.namespace, name: service.name, port: port.name, protocol: port.protocol)
            guard let serviceChain = Naming.serviceChain(portName, number: port.port),
                  let localChain = Naming.localChain(portName, number: port.port),
                  let externalChain = Naming.externalChain(portName, number: port.port) else {
                problems.append(Problem(object: service.ref, field: "spec.ports", message: "port \(portName) makes an invalid chain name, skipped"))
                continue
            }
            let all = (backends[portName] ?? []).filter { $0.address.family == ipFamily }.sorted()
            let lists = EndpointLists(all, nodeName: facts.nodeName, zone: facts.zone)
            let externallyReachable = port.nodePort != 0 || !externalIPs.isEmpty || !loadBalancerIPs.isEmpty
            let usesCluster = service.internalTrafficPolicy == .cluster || externallyReachable
            let usesLocal = service.internalTrafficPolicy == .local || (externallyReachable && service.externalTrafficPolicy == .local)
            let hasInternal = lists.hasAny && (service.internalTrafficPolicy == .cluster || !lists.local.isEmpty)
            let hasExternal = lists.hasAny && (service.externalTrafficPolicy == .cluster || !lists.local.isEmpty)
            let noEndpointVerdict: Verdict = lists.hasAny ? .drop : .goto(Naming.rejectChain)
            let comment = Comment(portName.description)
            let proto = KeyValue.proto(port.protocol)
            let owner = portName.description

            clusterIPs.insert(clusterIP)
            let internalTarget = service.internalTrafficPolicy == .local ? localChain : serviceChain
            let clusterKey: [KeyValue] = [.address(clusterIP), proto, .port(port.port)]
            if hasInternal {
                claim(Naming.serviceIPs, Element(clusterKey, verdict: .goto(internalTarget), comment: comment), by: owner, service: service)
            } else {
                claim(Naming.noEndpointServices, Element(clusterKey, verdict: noEndpointVerdict, comment: comment), by: owner, service: service)
            }
            for ip in externalIPs + loadBalancerIPs {
                let key: [KeyValue] = [.address(ip), proto, .port(port.port)]
                if lists.hasAny {
                    claim(Naming.serviceIPs, Element(key, verdict: .goto(externalChain), comment: comment), by: owner, service: service)
                }
                if !hasExternal {
                    claim(Naming.noEndpointServices, Element(key, verdict: noEndpointVerdict, comment: comment), by: owner, service: service)
                }
            }
            if port.nodePort != 0 {
                let key: [KeyValue] = [proto, .port(port.nodePort)]
                if lists.hasAny {
                    claim(Naming.serviceNodePorts, Element(key, verdict: .goto(externalChain), comment: comment), by: owner, service: service)
                }
                if !hasExternal {
                    claim(Naming.noEndpointNodePorts, Element(key, verdict: noEndpointVerdict, comment: comment), by: owner, service: service)
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
                let sources = TableBuilder.outermost(allowed).map(KeyValue.prefix)
                for ip in loadBalancerIPs {
                    let key: [KeyValue] = [.address(ip), proto, .port(port.port)]
                    claim(Naming.firewallIPs, Element(key, comment: comment), by: owner, service: service)
                    for source in sources { firewallAllow.insert(key + [source]) }
                }
            }

            // Session affinity: a known client goes back to the backend it got (the `affinity`
            // map), which the recording chain refreshes after DNAT on each new connection.
            var affinityLookup: [Rule] = []
            if case .clientIP(let timeout) = service.sessionAffinity, lists.hasAny,
               let affinityChain = Naming.affinityChain(portName, number: port.port) {
                affinityLookup = [Rule([.dnatMap([.saddr, .daddr, .l4proto, .thDport], map: Naming.affinity)])]
                chains.append(Chain(affinityChain, rules: [Rule([
                    .l4proto(port.protocol),
                    .update(map: Naming.affinity, key: [.saddr, .ctOriginalDaddr, .l4proto, .ctOriginalProtoDst],
                            timeoutSeconds: UInt32(timeout), data: [.daddr, .dport(port.protocol)]),
                ])]))
                let targets = Set((lists.cluster + lists.local).map { [KeyValue.address($0.address), .port($0.port)] })
                for ip in [clusterIP] + externalIPs + loadBalancerIPs {
                    let key: [KeyValue] = [.address(ip), proto, .port(port.port)]
                    claim(Naming.affinityServices, Element(key, verdict: .jump(affinityChain), comment: comment), by: owner, service: service)
                    affinityDestinations[key, default: []].formUnion(targets)
                }
                if port.nodePort != 0 {
                    let key: [KeyValue] = [proto, .port(port.nodePort)]
                    claim(Naming.affinityNodePorts, Element(key, verdict: .jump(affinityChain), comment: comment), by: owner, service: service)
                    affinityNodePorts[key, default: []].formUnion(targets)
                }
            }

            if lists.hasAny && usesCluster {
                let masquerade = service.internalTrafficPolicy == .cluster ? internalMasquerade(clusterIP) : nil
                chains.append(Chain(serviceChain, rules: (masquerade.map { [$0] } ?? []) + affinityLookup + roundRobin(lists.cluster, port.protocol)))
            }
            if !lists.local.isEmpty && usesLocal {
                let masquerade = service.internalTrafficPolicy == .local ? internalMasquerade(clusterIP) : nil
                chains.append(Chain(localChain, rules: (masquerade.map { [$0] } ?? []) + affinityLookup + roundRobin(lists.local, port.protocol)))
            }
            if lists.hasAny && externallyReachable {
                chains.append(Chain(externalChain, rules: externalRules(service, serviceChain: serviceChain, localChain: lists.local.isEmpty ? nil : localChain)))
            }
            // Only an endpoint on this node (or of unknown node) can send through this node to itself.
            for backend in lists.cluster + lists.local where backend.nodeName == nil || backend.nodeName == facts.nodeName {
                hairpin.insert(backend.address)
            }
        }
    }

    /// Puts an element into a map unless another service port already owns its key.
    /// The owner is the element's comment (`ns/name:port`), so the second claimant can be told who has it.
    private mutating func claim(_ map: Name, _ element: Element, by owner: String, service: Service) {
        if let existing = maps[map]?[element.key] {
            if existing.comment?.text != owner {
                problems.append(Problem(object: service.ref, message: "\(describe(element.key)) is already used by \(existing.comment?.text ?? "another service"); this service port (\(owner)) does not get it", skipped: false))
            }
            return
        }
        maps[map, default: [:]][element.key] = element
    }

    private func describe(_ key: [KeyValue]) -> String {
        key.map {
            switch $0 {
            case .address(let ip): ip.description
            case .proto(let proto): proto.rawValue
            case .port(let port): String(port)
            case .prefix(let cidr): cidr.description
            }
        }.joined(separator: " ")
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

    /// Rule i of N hands out backend i once in every N - i packets that reach it; the last rule
    /// takes the rest. Each `numgen inc` keeps its own counter, so backends are served in turn.
    private func roundRobin(_ backends: [Backend], _ proto: L4Protocol) -> [Rule] {
        backends.enumerated().map { index, backend in
            let remaining = backends.count - index
            let pick: [Statement] = remaining > 1 ? [.numgenIncZero(modulus: UInt32(remaining))] : []
            return Rule(pick + [.l4proto(proto), .dnat(backend.address, port: backend.port)])
        }
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

    /// The finished table: static sets and chains first, then the service port chains by name.
    func table() -> Table {
        let address = DataType.address(family)
        let dispatchKey: [DataType] = [address, .inetProto, .inetService]
        let nodePortKey: [DataType] = [.inetProto, .inetService]
        let nodePortIPs: [IPAddress]? = facts.nodePortIPs[ipFamily] ?? []
        let loopback = CIDR(ipFamily == .ipv4 ? "127.0.0.0/8" : "::1/128")!

        var sets: [NamedSet] = [
            NamedSet(Naming.clusterIPs, key: [address], comment: Comment("Active ClusterIPs"),
                     elements: clusterIPs.sorted().map { Element([.address($0)]) }),
        ]
        if let nodePortIPs {
            sets.append(NamedSet(Naming.nodePortIPs, key: [address], comment: Comment("IPs that accept NodePort traffic"),
                                 elements: nodePortIPs.sorted().map { Element([.address($0)]) }))
        }
        sets += [
            NamedSet(Naming.serviceIPs, key: dispatchKey, isMap: true, comment: Comment("ClusterIP, ExternalIP and LoadBalancer IP traffic"),
                     elements: elements(of: Naming.serviceIPs)),
            NamedSet(Naming.serviceNodePorts, key: nodePortKey, isMap: true, comment: Comment("NodePort traffic"),
                     elements: elements(of: Naming.serviceNodePorts)),
            NamedSet(Naming.noEndpointServices, key: dispatchKey, isMap: true, comment: Comment("drop or reject packets to services with no endpoints"),
                     elements: elements(of: Naming.noEndpointServices)),
            NamedSet(Naming.noEndpointNodePorts, key: nodePortKey, isMap: true, comment: Comment("drop or reject packets to NodePorts with no endpoints"),
                     elements: elements(of: Naming.noEndpointNodePorts)),
            NamedSet(Naming.hairpin, key: [address, address], comment: Comment("endpoints that reach themselves through a service get masqueraded"),
                     elements: hairpin.sorted().map { Element([.address($0), .address($0)]) }),
            NamedSet(Naming.affinity, key: [address, address, .inetProto, .inetService], data: [address, .inetService],
                     flags: [.dynamic, .timeout], size: 1 << 20, comment: Comment("ClientIP session affinity: client . destination . port : backend")),
            NamedSet(Naming.affinityServices, key: dispatchKey, isMap: true, comment: Comment("destinations with ClientIP session affinity"),
                     elements: elements(of: Naming.affinityServices)),
            NamedSet(Naming.affinityNodePorts, key: nodePortKey, isMap: true, comment: Comment("NodePorts with ClientIP session affinity"),
                     elements: elements(of: Naming.affinityNodePorts)),
            NamedSet(Naming.firewallIPs, key: dispatchKey, comment: Comment("LoadBalancer destinations with loadBalancerSourceRanges"),
                     elements: elements(of: Naming.firewallIPs)),
            NamedSet(Naming.firewallAllow, key: dispatchKey + [address], flags: [.interval], comment: Comment("allowed sources of LoadBalancer destinations"),
                     elements: firewallAllow.sorted { $0.lexicographicallyPrecedes($1) }.map { Element($0) }),
        ]

        let newConnection = Statement.ctStateNew
        let nodePortMatch: [Statement] = nodePortIPs == nil
            ? [.fibLocal(.daddr), .address(.daddr, loopback, negated: true)]
            : [.lookup([.daddr], set: Naming.nodePortIPs)]
        let nodePortCheckMatch: [Statement] = nodePortIPs == nil
            ? [.address(.daddr, loopback, negated: true)]
            : [.lookup([.daddr], set: Naming.nodePortIPs)]
        let dispatch: [Selector] = [.daddr, .l4proto, .thDport]
        let portDispatch: [Selector] = [.l4proto, .thDport]

        var clusterIPCheck = [Rule([.lookup([.daddr], set: Naming.clusterIPs), .reject], comment: Comment("reject traffic to undefined ports of ClusterIPs"))]
        for cidr in facts.serviceCIDRs[ipFamily] ?? [] {
            clusterIPCheck.append(Rule([.address(.daddr, cidr, negated: false), .verdict(.drop)], comment: Comment("drop traffic to unallocated ClusterIPs")))
        }

        let recordAffinity: [Rule] = L4Protocol.allCases.flatMap { proto -> [Rule] in
            let original: [Selector] = [.ctOriginalDaddr, .l4proto, .ctOriginalProtoDst]
            return [
                Rule([.ctStatusDNAT, .l4proto(proto), .vmap(original, map: Naming.affinityServices)]),
                Rule([.ctStatusDNAT, .l4proto(proto), .vmap([.l4proto, .ctOriginalProtoDst], map: Naming.affinityNodePorts)]),
            ]
        }

        let staticChains: [Chain] = [
            Chain(Naming.filterPreroutingPreDNAT, base: BaseChain(type: .filter, hook: .prerouting, priority: Priority(.dstnat, -10)),
                  rules: [Rule([newConnection, .verdict(.jump(Naming.firewallCheck))])]),
            Chain(Naming.filterOutputPreDNAT, base: BaseChain(type: .filter, hook: .output, priority: Priority(.dstnat, -10)),
                  rules: [Rule([newConnection, .verdict(.jump(Naming.firewallCheck))])]),
            Chain(Naming.natPrerouting, base: BaseChain(type: .nat, hook: .prerouting, priority: Priority(.dstnat)),
                  rules: [Rule([.verdict(.jump(Naming.services))])]),
            Chain(Naming.natOutput, base: BaseChain(type: .nat, hook: .output, priority: Priority(.dstnat)),
                  rules: [Rule([.verdict(.jump(Naming.services))])]),
            Chain(Naming.natPostrouting, base: BaseChain(type: .nat, hook: .postrouting, priority: Priority(.srcnat)),
                  rules: recordAffinity + [Rule([.verdict(.jump(Naming.masquerading))])]),
            Chain(Naming.filterInput, base: BaseChain(type: .filter, hook: .input, priority: Priority(.filter)),
                  rules: [Rule([newConnection, .verdict(.jump(Naming.nodePortEndpointsCheck))]),
                          Rule([newConnection, .verdict(.jump(Naming.serviceEndpointsCheck))])]),
            Chain(Naming.filterForward, base: BaseChain(type: .filter, hook: .forward, priority: Priority(.filter)),
                  rules: [Rule([newConnection, .verdict(.jump(Naming.serviceEndpointsCheck))]),
                          Rule([newConnection, .verdict(.jump(Naming.clusterIPsCheck))])]),
            Chain(Naming.filterOutput, base: BaseChain(type: .filter, hook: .output, priority: Priority(.filter)),
                  rules: [Rule([newConnection, .verdict(.jump(Naming.serviceEndpointsCheck))]),
                          Rule([newConnection, .verdict(.jump(Naming.clusterIPsCheck))])]),
            Chain(Naming.services, rules: [
                Rule([.vmap(dispatch, map: Naming.serviceIPs)]),
                Rule(nodePortMatch + [.vmap(portDispatch, map: Naming.serviceNodePorts)]),
            ]),
            Chain(Naming.firewallCheck, rules: [Rule([
                .lookup(dispatch, set: Naming.firewallIPs),
                .notInSet(dispatch + [.saddr], set: Naming.firewallAllow),
                .verdict(.drop),
            ], comment: Comment("drop sources outside loadBalancerSourceRanges"))]),
            Chain(Naming.serviceEndpointsCheck, rules: [Rule([.vmap(dispatch, map: Naming.noEndpointServices)])]),
            Chain(Naming.nodePortEndpointsCheck, rules: [Rule(nodePortCheckMatch + [.vmap(portDispatch, map: Naming.noEndpointNodePorts)])]),
            Chain(Naming.clusterIPsCheck, rules: clusterIPCheck),
            Chain(Naming.rejectChain, rules: [Rule([.reject])]),
            Chain(Naming.masquerading, rules: [
                Rule([.ctStatusDNAT, .lookup([.saddr, .daddr], set: Naming.hairpin), .setMarkBit(mark)]),
                Rule([.markBitClear(mark), .verdict(.return)]),
                Rule([.toggleMarkBit(mark)]),
                Rule([.masquerade(fullyRandom: true)]),
            ]),
        ]
        return Table(
            family: family, name: Naming.table,
            comment: Comment("rules for nftproxy: do not edit, nftproxy rewrites this table"),
            sets: sets, chains: staticChains + chains.sorted { $0.name < $1.name }
        )
    }

    private func elements(of map: Name) -> [Element] {
        (maps[map] ?? [:]).values.sorted { $0.key.lexicographicallyPrecedes($1.key) }
    }
}
